/*
 * fuzz_cli.c: fuzz target of the command line (src/cli/, compiled into this
 * program, main.c with -Dmain=mpivae_cli_main).
 *
 * The input is an argument list: split at every NUL or newline (a final
 * separator ends the last argument), argv[0] = "mpivae", at most 64
 * arguments. MPI is started once here, so main neither starts nor finalizes
 * it, and MPIVAE_TEST_PARSE_ONLY=1 makes every subcommand return right after
 * checking its arguments. The work folder is the current directory, so
 * relative names resolve there. Between calls getopt's hidden state is reset
 * (optind = 0), as a new process would have it.
 *
 * Oracles (DESIGN.md: bad input gets one clear message and a non-zero exit),
 * each an abort when broken:
 *   - the status is 0 or 2 (usage): nothing but parsing runs;
 *   - a usage error prints exactly one "error:" line, or the usage text;
 *   - an accepted command (status 0, no help printed) of train, eval, sample,
 *     reconstruct, interpolate, traverse, anomaly, encode or fid has no argument
 *     left over (a stray FILE or a second --ckpt's value after "--");
 *   - an accepted --hidden has no empty size ("400,,400", "400,");
 *   - an accepted --out is shorter than VAE_PATH_LEN (no silent truncation).
 */
#define _GNU_SOURCE
#include "mpivae/dataset.h"

#include <getopt.h>
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzz_common.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int mpivae_cli_main(int argc, char **argv);

#define MAX_ARGS 64

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fz_mpi_init(argc, argv);
    setenv("MPIVAE_TEST_PARSE_ONLY", "1", 1);
    fz_setup("cli");
    if (chdir(fz_dir) != 0) {
        perror("chdir");
        abort();
    }
    return 0;
}

/* The long options of a subcommand, as src/cli/ declares them (all but help take a value). */
static const char *const *options_of(const char *cmd)
{
    static const char *const train[] = { "data", "test-data", "data-in-memory", "model", "hidden", "latent", "loss",
                                         "beta", "warmup", "epochs", "batch", "lr", "adam-beta1", "adam-beta2",
                                         "adam-eps", "seed", "steps", "max-skips", "out", "log-every", "eval-every",
                                         "sample-every", "ckpt-every", "keep", "resume", "allreduce", "capacity",
                                         "help", NULL };
    static const char *const eval[] = { "ckpt", "data", "mean", "limit", "batch", "seed", "help", NULL };
    static const char *const sample[] = { "ckpt", "out", "n", "temperature", "seed", "cols", "help", NULL };
    static const char *const recon[] = { "ckpt", "out", "data", "n", "first", "cols", "help", NULL };
    static const char *const interp[] = { "ckpt", "out", "data", "from", "to", "steps", "spherical", "help", NULL };
    static const char *const trav[] = { "ckpt", "out", "data", "index", "dims", "top", "range", "steps", "help", NULL };
    static const char *const anomaly[] = { "ckpt", "out", "data", "labels", "normal-classes", "top", "help", NULL };
    static const char *const encode[] = { "ckpt", "out", "data", "help", NULL };
    static const char *const fid[] = { "classifier", "a", "b", "n", "seed", "data", "limit", "no-floor", "help", NULL };
    if (!strcmp(cmd, "train")) return train;
    if (!strcmp(cmd, "eval")) return eval;
    if (!strcmp(cmd, "sample")) return sample;
    if (!strcmp(cmd, "reconstruct")) return recon;
    if (!strcmp(cmd, "interpolate")) return interp;
    if (!strcmp(cmd, "traverse")) return trav;
    if (!strcmp(cmd, "anomaly")) return anomaly;
    if (!strcmp(cmd, "encode")) return encode;
    if (!strcmp(cmd, "fid")) return fid;
    return NULL;
}

static int is_flag(const char *name)
{
    return !strcmp(name, "help") || !strcmp(name, "mean") || !strcmp(name, "spherical") || !strcmp(name, "no-floor");
}

/* getopt_long's choice for "--name": an exact match, else the one option name starts; NULL if none or several. */
static const char *match_option(const char *const *opts, const char *name, size_t len)
{
    const char *found = NULL;
    for (int i = 0; opts[i]; i++) {
        if (strncmp(opts[i], name, len)) continue;
        if (strlen(opts[i]) == len) return opts[i];
        if (found) return NULL;
        found = opts[i];
    }
    return found;
}

/* Calls fn(option, value) for every long option with a value of an accepted command line. */
static void for_each_value(int argc, char **argv, const char *const *opts, const char *cmd,
                           void (*fn)(const char *cmd, const char *opt, const char *val))
{
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--")) return;
        if (strncmp(a, "--", 2)) continue; /* a positional argument, permuted to the end */
        const char *eq = strchr(a + 2, '=');
        size_t len = eq ? (size_t)(eq - a - 2) : strlen(a + 2);
        const char *opt = match_option(opts, a + 2, len);
        if (!opt || is_flag(opt)) continue;
        const char *val = eq ? eq + 1 : i + 1 < argc ? argv[++i] : NULL;
        if (val) fn(cmd, opt, val);
    }
}

static void check_value(const char *cmd, const char *opt, const char *val)
{
    size_t n = strlen(val);
    if (!strcmp(opt, "hidden") && (n == 0 || val[0] == ',' || val[n - 1] == ',' || strstr(val, ",,")))
        fz_fail("'mpivae %s' accepted --hidden '%s', which has an empty size", cmd, val);
    if (!strcmp(opt, "out") && n >= VAE_PATH_LEN)
        fz_fail("'mpivae %s' accepted an --out of %zu characters (at most %d are kept)", cmd, n, VAE_PATH_LEN - 1);
}

/* Lines of text[len] that contain word. */
static size_t count_lines_with(const char *text, size_t len, const char *word)
{
    size_t n = 0;
    const char *p = text, *end = text + len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p)), *le = nl ? nl : end;
        if (memmem(p, (size_t)(le - p), word, strlen(word))) n++;
        p = le + 1;
    }
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *buf = malloc(size + 1);
    if (!buf) return 0;
    memcpy(buf, data, size);
    buf[size] = '\0';
    char *argv[MAX_ARGS + 2];
    int argc = 0;
    argv[argc++] = "mpivae";
    for (size_t i = 0, start = 0; i <= size && argc < MAX_ARGS + 1; i++) {
        if (i < size && buf[i] != '\0' && buf[i] != '\n') continue;
        if (i == size && start == size) break; /* a final separator ends the last argument */
        buf[i] = '\0';
        argv[argc++] = buf + start;
        start = i + 1;
    }
    argv[argc] = NULL;
    char *copy[MAX_ARGS + 2]; /* getopt permutes argv; the oracles read the list as given */
    memcpy(copy, argv, sizeof copy);

    /* A fresh getopt: optind 0 makes glibc forget where it stood in the last call's arguments. */
    static char *reset_argv[] = { "mpivae", NULL };
    static const struct option no_opts[] = { { 0, 0, 0, 0 } };
    optind = 0;
    opterr = 0;
    getopt_long(1, reset_argv, ":", no_opts, NULL);

    char *out_text = NULL, *err_text = NULL;
    size_t out_len = 0, err_len = 0;
    FILE *out = open_memstream(&out_text, &out_len), *err = open_memstream(&err_text, &err_len);
    if (!out || !err) abort();
    FILE *saved_out = stdout, *saved_err = stderr;
    stdout = out;
    stderr = err;
    int rc = mpivae_cli_main(argc, argv);
    stdout = saved_out;
    stderr = saved_err;
    fclose(out);
    fclose(err);
    int sub_optind = optind;
    if (fz_verbose) {
        dprintf(2, "case: status %d; stdout %zu bytes; stderr:\n%.*s", rc, out_len, (int)err_len, err_text);
        for (int i = 0; i < argc; i++) dprintf(2, "  argv[%d] = '%.80s'%s\n", i, copy[i], strlen(copy[i]) > 80 ? "..." : "");
    }

    if (rc != 0 && rc != 2) fz_fail("status %d under MPIVAE_TEST_PARSE_ONLY (0 or 2 expected)", rc);
    if (rc == 2 && out_len == 0 && count_lines_with(err_text, err_len, "error:") != 1)
        fz_fail("usage error (status 2) with %zu 'error:' lines on stderr, not one: '%.300s'",
                count_lines_with(err_text, err_len, "error:"), err_text);
    const char *const *opts = argc > 1 ? options_of(copy[1]) : NULL;
    if (rc == 0 && out_len == 0 && opts) {
        /* The subcommand sees argv + 1: its optind counts from the command's name. */
        if (sub_optind < argc - 1)
            fz_fail("'mpivae %s' accepted a stray argument '%.80s'", copy[1], argv[1 + sub_optind]);
        for_each_value(argc, copy, opts, copy[1], check_value);
    }
    free(out_text);
    free(err_text);
    free(buf);
    return 0;
}
