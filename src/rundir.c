/*
 * rundir.c: the run directory (see rundir.h): its lock, its checkpoint
 * names and list, and the folder and sync helpers of the files in it.
 */
#define _GNU_SOURCE
#include "mpivae/rundir.h"

#include "internal.h"
#include "mpivae/dataset.h"
#include "mpivae/metrics.h"
#include "mpivae/status.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

void vae_rundir_ckpt_path(const char *dir, long step, char *path, size_t len)
{
    snprintf(path, len, "%s/checkpoints/step-%ld.h5", dir, step);
}

void vae_rundir_ckpt_tmp(const char *dir, long step, char *path, size_t len)
{
    snprintf(path, len, "%s/checkpoints/.step-%ld.h5.tmp", dir, step);
}

int vae__fsync_path(const char *path, int is_dir)
{
    int fd = open(path, is_dir ? O_RDONLY | O_DIRECTORY : O_RDONLY);
    if (fd < 0) return vae_error(VAE_EIO, "cannot open '%s' to sync it: %s", path, strerror(errno));
    int rc = fsync(fd) == 0 ? VAE_OK : vae_error(VAE_EIO, "cannot fsync '%s': %s", path, strerror(errno));
    close(fd);
    return rc;
}

int vae__mkdir_p(const char *path)
{
    char buf[VAE_PATH_LEN + 32];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(buf, 0777) != 0 && errno != EEXIST)
            return vae_error(VAE_EIO, "cannot create folder '%s': %s", buf, strerror(errno));
        *p = '/';
    }
    if (mkdir(buf, 0777) != 0 && errno != EEXIST)
        return vae_error(VAE_EIO, "cannot create folder '%s': %s", buf, strerror(errno));
    return VAE_OK;
}


int vae_rundir_list_checkpoints(const char *dir, long *steps, int max)
{
    char ckdir[VAE_PATH_LEN + 32];
    snprintf(ckdir, sizeof ckdir, "%s/checkpoints", dir);
    DIR *dp = opendir(ckdir);
    if (!dp) return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(dp)) && n < max) {
        long s;
        char tail[8];
        if (sscanf(e->d_name, "step-%ld.h%2s", &s, tail) == 2 && strcmp(tail, "5") == 0) steps[n++] = s;
    }
    closedir(dp);
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && steps[j] > steps[j - 1]; j--) {
            long t = steps[j];
            steps[j] = steps[j - 1];
            steps[j - 1] = t;
        }
    return n;
}

/* Removes temporary checkpoint files that a crash during a save left behind. */
void vae_rundir_remove_stale_tmp(const char *dir)
{
    char ckdir[VAE_PATH_LEN + 32], p[VAE_PATH_LEN + 320];
    snprintf(ckdir, sizeof ckdir, "%s/checkpoints", dir);
    DIR *dp = opendir(ckdir);
    if (!dp) return;
    struct dirent *e;
    while ((e = readdir(dp))) {
        size_t n = strlen(e->d_name);
        if (strncmp(e->d_name, ".step-", 6) == 0 && n > 4 && strcmp(e->d_name + n - 4, ".tmp") == 0) {
            snprintf(p, sizeof p, "%s/%s", ckdir, e->d_name);
            if (unlink(p) == 0) printf("removed %s, left by an interrupted checkpoint write\n", p);
        }
    }
    closedir(dp);
    /* .report.html.tmp-PID: a page whose writer was killed (the run holds the lock: no writer is alive). */
    if (!(dp = opendir(dir))) return;
    while ((e = readdir(dp)))
        if (strncmp(e->d_name, ".report.html.tmp-", 17) == 0) {
            snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
            if (unlink(p) == 0) printf("removed %s, left by an interrupted report write\n", p);
        }
    closedir(dp);
}

static int g_lock_fd = -1;

int vae_rundir_lock(const char *dir)
{
    char path[VAE_PATH_LEN + 16], info[512] = "";
    snprintf(path, sizeof path, "%s/lock", dir);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return vae_error(VAE_EIO, "cannot open lock file '%s': %s", path, strerror(errno));
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        ssize_t n = read(fd, info, sizeof info - 1);
        info[n > 0 ? n : 0] = '\0';
        char *nl = strchr(info, '\n');
        if (nl) *nl = '\0';
        close(fd);
        return vae_error(VAE_EIO, "run directory '%s' is in use by another training run (%s); "
                         "wait for it to finish or use another --out", dir, info[0] ? info : "unknown holder");
    }
    char host[256] = "";
    gethostname(host, sizeof host - 1);
    const char *job = getenv("SLURM_JOB_ID");
    int n = snprintf(info, sizeof info, "pid %ld on %s%s%s\n", (long)getpid(), host, job ? ", Slurm job " : "", job ? job : "");
    if (ftruncate(fd, 0) != 0 || write(fd, info, (size_t)n) != n) { /* informational only */ }
    g_lock_fd = fd; /* stays open, and locked, until vae_rundir_unlock */
    return VAE_OK;
}

/* Clears the holder's line (a finished run leaves no stale "pid N on host") and releases the lock. */
void vae_rundir_unlock(void)
{
    if (g_lock_fd < 0) return;
    if (ftruncate(g_lock_fd, 0) != 0) { /* informational only */ }
    close(g_lock_fd);
    g_lock_fd = -1;
}

/*
 * A new run (no --resume) never starts over a run directory that holds
 * checkpoints or metrics rows: it would mix two runs' files.
 */
int vae_rundir_refuse_existing(const char *dir)
{
    char lk[VAE_PATH_LEN + 16];
    struct stat sb;
    snprintf(lk, sizeof lk, "%s/lock", dir);
    if (stat(lk, &sb) == 0) { /* a run holding it now is named as such */
        int rc = vae_rundir_lock(dir);
        if (rc) return rc;
        vae_rundir_unlock();
    }
    long steps[4096];
    int n = vae_rundir_list_checkpoints(dir, steps, 4096);
    long rows = vae_metrics_count(dir, "/train");
    if (n == 0 && rows == 0) return VAE_OK;
    char what[256] = "";
    if (n > 0) snprintf(what, sizeof what, "checkpoints up to step-%ld.h5", steps[0]);
    if (rows > 0) snprintf(what + strlen(what), sizeof what - strlen(what), "%smetrics.h5 with %ld rows", n > 0 ? " and " : "", rows);
    if (rows < 0) snprintf(what + strlen(what), sizeof what - strlen(what), "%sa metrics.h5 that cannot be read", n > 0 ? " and " : "");
    return vae_error(VAE_EINVAL, "run directory '%s' already holds a run (%s); continue it with --resume auto, "
                     "or give another --out (nothing was changed)", dir, what);
}

