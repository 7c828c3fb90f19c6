/*
 * outputs.c: a tool's output files (cli_outputs in cli.h): written under
 * temporary names, refused when they would overwrite an input, published
 * by fsync and rename only when all are complete; and the checks of --out.
 */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"

#include "mpivae/comm.h"
#include "mpivae/status.h"

#include <errno.h>
#include <fcntl.h>
#include <mpi.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Adds an output; returns the temporary name to write it under. */
const char *cli_out_add(cli_outputs *o, const char *final)
{
    int i = o->n++;
    snprintf(o->fin[i], sizeof o->fin[i], "%s", final);
    const char *slash = strrchr(final, '/');
    int dl = slash ? (int)(slash - final + 1) : 0;
    snprintf(o->tmp[i], sizeof o->tmp[i], "%.*s.%s.tmp-%ld", dl, final, final + dl, (long)getpid());
    return o->tmp[i];
}

/* True when a and b name the same existing file (or the same path). */
static int same_file(const char *a, const char *b)
{
    struct stat sa, sb;
    if (!a || !b) return 0;
    if (!strcmp(a, b)) return 1;
    return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

/* Refuses an output that is, or derives to, one of the command's input files (NULL or "": none). */
int cli_out_refuse(const char *cmd, const cli_outputs *o, const char *ckpt, const char *data_file, const char *labels_file)
{
    const char *in[3] = { ckpt, data_file, labels_file };
    for (int i = 0; i < o->n; i++)
        for (int k = 0; k < 3; k++)
            if (in[k] && in[k][0] && same_file(o->fin[i], in[k]))
                return vae_error(VAE_EINVAL, "mpivae %s would write '%s', which is its input '%s': choose another --out",
                                 cmd, o->fin[i], in[k]);
    return 0;
}

/* cli_out_refuse on rank 0, agreed by every rank. */
int cli_out_check(const char *cmd, const cli_outputs *o, const char *ckpt, const char *data_file, const char *labels_file)
{
    vae_defer_begin();
    int rc = cli_rank == 0 ? cli_out_refuse(cmd, o, ckpt, data_file, labels_file) : 0;
    return vae_agree(rc, MPI_COMM_WORLD);
}

/* Publishes every output (fsync, rename) when rc is 0, else removes them; returns rc or the publishing failure. */
int cli_out_finish(cli_outputs *o, int rc)
{
    for (int i = 0; i < o->n; i++) {
        if (!rc) {
            int fd = open(o->tmp[i], O_RDONLY);
            if (fd < 0 || fsync(fd) != 0 || rename(o->tmp[i], o->fin[i]) != 0)
                rc = vae_error(VAE_EIO, "cannot publish '%s': %s", o->fin[i], strerror(errno));
            if (fd >= 0) close(fd);
            if (!rc) continue;
        }
        unlink(o->tmp[i]);
    }
    o->n = 0;
    return rc;
}

/* OUT.png -> OUT.h5 beside it. */
void cli_h5_beside(const char *png, char *h5, size_t len)
{
    snprintf(h5, len, "%s", png);
    size_t n = strlen(h5);
    if (n > 4 && !strcmp(h5 + n - 4, ".png")) h5[n - 4] = '\0';
    strncat(h5, ".h5", len - strlen(h5) - 1);
}

/*
 * Refuses an --out that is empty or does not end in ext (".png" for the image tools, ".h5" for
 * anomaly and encode); writes says what the tool writes. Returns 0 or the usage exit status.
 */
int cli_check_out(const char *cmd, const char *out, const char *ext, const char *writes)
{
    size_t n = strlen(out), e = strlen(ext);
    if (n == 0) return cli_usage_error(cmd, "--out is empty: %s", writes);
    if (n < e || strcmp(out + n - e, ext)) return cli_usage_error(cmd, "--out '%s' does not end in %s: %s", out, ext, writes);
    if (n == e || out[n - e - 1] == '/') return cli_usage_error(cmd, "--out '%s' has no name before %s: %s", out, ext, writes);
    if (n >= VAE_PATH_LEN) return cli_usage_error(cmd, "--out is %zu characters long; at most %d are taken", n, VAE_PATH_LEN - 1);
    return 0;
}
