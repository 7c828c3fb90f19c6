/*
 * replay_main.c: the replay driver of a fuzz harness, for builds without
 * libFuzzer (the default gcc build and CI). Linked with one harness
 * (fuzz_data.c, fuzz_ckpt.c or fuzz_cli.c), it runs LLVMFuzzerTestOneInput
 * on every case of a corpus, as libFuzzer would replay it.
 *
 *   fuzz_X_replay [--timeout SECONDS] PATH...   files, or folders whose files (not
 *                                               dot files) run in name order
 *   fuzz_X_replay --one FILE                    one case in this process (for a debugger)
 *
 * The cases run one after another in a child process, which says on a pipe
 * when each begins and ends. When the child dies during a case (a crash, a
 * sanitizer report, an oracle's abort) or a case runs longer than the
 * timeout (default 20 s), the driver names that case with what happened and
 * starts a new child at the next one. It never starts MPI itself, so forking
 * is safe; each child starts MPI once (LLVMFuzzerInitialize). Exit status 0
 * when every case passed, 1 otherwise: the list of failed cases is the last
 * thing printed.
 */
#define _XOPEN_SOURCE 700
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <mpi.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        dprintf(2, "replay: cannot open '%s': %s\n", path, strerror(errno));
        return -1;
    }
    size_t cap = 4096, n = 0;
    uint8_t *buf = malloc(cap);
    size_t got;
    while (buf && (got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) {
            uint8_t *nb = realloc(buf, cap *= 2);
            if (!nb) {
                free(buf);
                buf = NULL;
            }
            buf = nb;
        }
    }
    fclose(f);
    if (!buf) return -1;
    LLVMFuzzerTestOneInput(buf, n);
    free(buf);
    return 0;
}

/* The child: runs files[0..n), telling the parent on fd when each case begins ("B i") and ends ("E i"). */
static int child_main(int argc, char **argv, int fd, char **files, int n)
{
    LLVMFuzzerInitialize(&argc, &argv);
    for (int i = 0; i < n; i++) {
        dprintf(fd, "B %d\n", i);
        if (run_file(files[i])) return 3;
        dprintf(fd, "E %d\n", i);
    }
    int up = 0, down = 0;
    MPI_Initialized(&up);
    MPI_Finalized(&down);
    if (up && !down) MPI_Finalize();
    return 0;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Appends path, or the files of the folder path in name order, to the list. */
static int add_path(const char *path, char ***list, int *n, int *cap)
{
    struct stat sb;
    if (stat(path, &sb) != 0) {
        fprintf(stderr, "replay: cannot open '%s': %s\n", path, strerror(errno));
        return -1;
    }
    int first = *n;
    DIR *dp = S_ISDIR(sb.st_mode) ? opendir(path) : NULL;
    if (S_ISDIR(sb.st_mode) && !dp) {
        fprintf(stderr, "replay: cannot list '%s': %s\n", path, strerror(errno));
        return -1;
    }
    for (;;) {
        char full[PATH_MAX];
        if (dp) {
            struct dirent *e = readdir(dp);
            if (!e) break;
            if (e->d_name[0] == '.') continue;
            snprintf(full, sizeof full, "%s/%s", path, e->d_name);
            struct stat fs;
            if (stat(full, &fs) != 0 || !S_ISREG(fs.st_mode)) continue;
        } else {
            snprintf(full, sizeof full, "%s", path);
        }
        if (*n == *cap) {
            *cap = *cap ? 2 * *cap : 64;
            *list = realloc(*list, (size_t)*cap * sizeof **list);
            if (!*list) return -1;
        }
        (*list)[(*n)++] = strdup(full);
        if (!dp) break;
    }
    if (dp) closedir(dp);
    qsort(*list + first, (size_t)(*n - first), sizeof **list, cmp_str);
    return 0;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void describe_status(int status, char *buf, size_t len)
{
    if (WIFSIGNALED(status)) snprintf(buf, len, "killed by signal %d (%s)", WTERMSIG(status), strsignal(WTERMSIG(status)));
    else snprintf(buf, len, "exit status %d", WEXITSTATUS(status));
}

int main(int argc, char **argv)
{
    if (argc == 3 && !strcmp(argv[1], "--one")) {
        LLVMFuzzerInitialize(&argc, &argv);
        return run_file(argv[2]) ? 1 : 0;
    }
    if (argc >= 3 && !strcmp(argv[1], "--child")) return child_main(argc, argv, atoi(argv[2]), argv + 3, argc - 3);

    double timeout = 20.0;
    char **files = NULL;
    int n = 0, cap = 0, argi = 1;
    if (argc > 2 && !strcmp(argv[1], "--timeout")) {
        timeout = atof(argv[2]);
        argi = 3;
    }
    if (argi >= argc) {
        fprintf(stderr, "usage: %s [--timeout SECONDS] FILE_OR_FOLDER...\n       %s --one FILE\n", argv[0], argv[0]);
        return 2;
    }
    for (; argi < argc; argi++)
        if (add_path(argv[argi], &files, &n, &cap)) return 2;
    char self[PATH_MAX];
    ssize_t sl = readlink("/proc/self/exe", self, sizeof self - 1);
    if (sl <= 0) {
        perror("readlink /proc/self/exe");
        return 2;
    }
    self[sl] = '\0';

    char **failed = calloc((size_t)n + 1, sizeof *failed);
    int n_failed = 0, start = 0;
    double t0 = now();
    while (start < n) {
        int pfd[2];
        if (pipe(pfd) != 0) {
            perror("pipe");
            return 2;
        }
        fflush(stdout);
        fflush(stderr);
        pid_t pid = fork();
        if (pid < 0) {
            perror("fork");
            return 2;
        }
        if (pid == 0) {
            close(pfd[0]);
            char fdstr[16];
            snprintf(fdstr, sizeof fdstr, "%d", pfd[1]);
            char **cargv = calloc((size_t)(n - start) + 4, sizeof *cargv);
            cargv[0] = self;
            cargv[1] = "--child";
            cargv[2] = fdstr;
            for (int i = start; i < n; i++) cargv[3 + i - start] = files[i];
            execv(self, cargv);
            perror("execv");
            _exit(127);
        }
        close(pfd[1]);
        /* Follow the child's progress: the case open (begun, not ended) and since when. */
        int open_case = -1, last_ended = start - 1, timed_out = 0;
        double since = now();
        char line[64];
        size_t ll = 0;
        for (;;) {
            int left_ms = (int)((since + timeout - now()) * 1000.0);
            if (open_case >= 0 && left_ms <= 0) {
                kill(pid, SIGKILL);
                timed_out = 1;
                break;
            }
            struct pollfd p = { pfd[0], POLLIN, 0 };
            int pr = poll(&p, 1, open_case >= 0 ? left_ms : 1000);
            if (pr < 0 && errno == EINTR) continue;
            if (pr == 0) continue;
            char c;
            ssize_t r = read(pfd[0], &c, 1);
            if (r <= 0) break; /* the child is gone */
            if (c != '\n') {
                if (ll < sizeof line - 1) line[ll++] = c;
                continue;
            }
            line[ll] = '\0';
            ll = 0;
            int idx = atoi(line + 2);
            if (line[0] == 'B') {
                open_case = start + idx;
                since = now();
            } else if (line[0] == 'E') {
                open_case = -1;
                last_ended = start + idx;
            }
        }
        close(pfd[0]);
        int status = 0;
        waitpid(pid, &status, 0);
        char what[128];
        if (timed_out) {
            snprintf(what, sizeof what, "timed out after %.0f s", timeout);
        } else {
            describe_status(status, what, sizeof what);
        }
        if (open_case >= 0) {
            fprintf(stderr, "replay: FAILED %s: %s\n", files[open_case], what);
            failed[n_failed++] = files[open_case];
            start = open_case + 1;
        } else if (last_ended == n - 1) {
            if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
                fprintf(stderr, "replay: FAILED after the last case (%s), at exit: %s\n", files[n - 1], what);
                failed[n_failed++] = "(at exit)";
            }
            break;
        } else {
            fprintf(stderr, "replay: FAILED: the child stopped between cases (%s), after %s\n", what,
                    last_ended >= start ? files[last_ended] : "none of its cases");
            failed[n_failed++] = "(between cases)";
            if (last_ended < start) break; /* no progress: it fails before any case */
            start = last_ended + 1;
        }
    }
    printf("replay: %d cases in %.1f s, %d failed\n", n, now() - t0, n_failed);
    for (int i = 0; i < n_failed; i++) printf("replay: failed: %s\n", failed[i]);
    for (int i = 0; i < n; i++) free(files[i]);
    free(files);
    free(failed);
    return n_failed ? 1 : 0;
}
