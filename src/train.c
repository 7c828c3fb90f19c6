/*
 * train.c: the data-parallel training loop (see train.h and DESIGN.md).
 *
 * Step t of an epoch uses positions [t*B, (t+1)*B) of the epoch's global
 * permutation; rank r of P takes the contiguous slice [Bt*r/P, Bt*(r+1)/P)
 * of that range (Bt is B, or what is left in the last batch). The noise of
 * a row is keyed by (seed, step, position in the global batch), so the
 * update does not depend on P. Each rank adds grad/Bt of its rows into the
 * gradient block; one MPI_Allreduce sums the block together with the step's
 * loss sums, stop requests and non-finite flags, so every rank takes the
 * same decision after the same single collective.
 */
#define _GNU_SOURCE
#include "mpivae/train.h"

#include "mpivae/blas.h"
#include "mpivae/checkpoint.h"
#include "mpivae/comm.h"
#include "mpivae/metrics.h"
#include "mpivae/optim.h"
#include "mpivae/rng.h"
#include "mpivae/status.h"
#include "mpivae/tools.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* The stop request lives in status.c, where the data scan of the start-up sees it too. */
#define g_stop vae_stop_requested()

static void on_signal(int sig)
{
    /* A second SIGINT stops at once. */
    if (sig == SIGINT && g_stop) _exit(130);
    vae_set_stop_requested(sig);
}

void vae_train_request_stop(void) { vae_set_stop_requested(1); }

static const char *stop_name(int sig)
{
    return sig == SIGUSR1 ? "SIGUSR1" : sig == SIGTERM ? "SIGTERM" : sig == SIGINT ? "SIGINT" : "a stop request";
}

/*
 * A stop request during start-up (agreed over comm): every rank returns
 * VAE_ESTOP before the first step; nothing was trained, so nothing is lost,
 * and the same command starts (or resumes) the run again.
 */
static int startup_stopped(MPI_Comm comm, int rank)
{
    int s = g_stop;
    MPI_Allreduce(MPI_IN_PLACE, &s, 1, MPI_INT, MPI_MAX, comm);
    if (!s) return VAE_OK;
    if (rank == 0) {
        printf("stopped by %s during start-up, before the first step: nothing to save; run the same command (with "
               "--resume auto) to continue (exit status %d)\n", stop_name(s), VAE_EXIT_REQUEUE);
        fflush(stdout);
    }
    return VAE_ESTOP;
}

static void install_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESTART; /* file and socket calls of HDF5 and MPI resume after the signal */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

void vae_config_defaults(vae_config *c)
{
    memset(c, 0, sizeof *c);
    c->arch.kind = VAE_MODEL_MLP;
    c->arch.n_hidden = 1;
    c->arch.hidden[0] = 400;
    c->arch.latent = 20;
    c->arch.loss = VAE_LOSS_BCE;
    snprintf(c->out, sizeof c->out, "runs/default");
    c->beta = 1.0;
    c->capacity_max = -1.0;
    c->epochs = 10;
    c->batch = 128;
    c->lr = 1e-3;
    c->beta1 = 0.9;
    c->beta2 = 0.999;
    c->adam_eps = 1e-8;
    c->seed = 1;
    c->log_every = 100;
    c->eval_every = 0;
    c->sample_every = 0;
    c->ckpt_every = 0;
    c->keep = 3;
    c->max_skips = 10;
    c->in_memory = -1;
}

int vae_config_check(const vae_config *c, char *why, size_t len)
{
    const vae_arch *a = &c->arch;
    const double big = 9.2e18;
    const struct { const char *name; double v, lo, hi; } f[] = {
        { "latent", a->latent, 1, 4096 },
        { "beta", c->beta, 0, 1e6 },
        { "cfg.warmup", (double)c->warmup, 0, big },
        { "cfg.capacity_steps", (double)c->capacity_steps, 0, big },
        { "cfg.epochs", c->epochs, 1, 1e6 },
        { "cfg.batch", c->batch, 1, 1 << 24 },
        { "cfg.lr", c->lr, 0, 10 },
        { "cfg.beta1", c->beta1, 0, 0.999999 },
        { "cfg.beta2", c->beta2, 0, 0.999999999 },
        { "cfg.adam_eps", c->adam_eps, 0, 1 },
        { "cfg.log_every", (double)c->log_every, 0, big },
        { "cfg.eval_every", (double)c->eval_every, 0, big },
        { "cfg.sample_every", (double)c->sample_every, 0, big },
        { "cfg.ckpt_every", (double)c->ckpt_every, 0, big },
        { "cfg.keep", c->keep, 1, 1e6 },
        { "cfg.max_skips", c->max_skips, 0, 1e6 },
        { "cfg.in_memory", c->in_memory, -1, 1 },
        { "cfg.max_steps", (double)c->max_steps, 0, big },
        { "hidden (count)", a->n_hidden, 1, VAE_MAX_HIDDEN },
        { "input_shape[0]", a->C, 1, 1e8 },
        { "input_shape[1]", a->Hh, 1, 1e8 },
        { "input_shape[2]", a->W, 1, 1e8 },
    };
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++)
        if (!(f[i].v >= f[i].lo && f[i].v <= f[i].hi)) { /* NaN fails too */
            snprintf(why, len, "attribute '%s' is %g, outside %g..%g", f[i].name, f[i].v, f[i].lo, f[i].hi);
            return VAE_EINVAL;
        }
    for (int i = 0; i < a->n_hidden; i++)
        if (a->hidden[i] < 1 || a->hidden[i] > 65536) {
            snprintf(why, len, "attribute 'hidden' has the size %d, outside 1..65536", a->hidden[i]);
            return VAE_EINVAL;
        }
    if (!(c->capacity_max == -1.0 || (c->capacity_max >= 0 && c->capacity_max <= 1e6))) {
        snprintf(why, len, "attribute 'cfg.capacity_max' is %g, neither -1 (off) nor in 0..1e6", c->capacity_max);
        return VAE_EINVAL;
    }
    if ((double)a->C * a->Hh * a->W > 1e8) {
        snprintf(why, len, "attribute 'input_shape' is %dx%dx%d, more than 1e8 values a row", a->C, a->Hh, a->W);
        return VAE_EINVAL;
    }
    if (a->kind == VAE_MODEL_CONV && (a->Hh % (1 << a->n_hidden) || a->W % (1 << a->n_hidden))) {
        snprintf(why, len, "attribute 'input_shape' is %dx%dx%d, but %d conv layers need H and W divisible by %d", a->C,
                 a->Hh, a->W, a->n_hidden, 1 << a->n_hidden);
        return VAE_EINVAL;
    }
    return VAE_OK;
}

/* The epoch's permutation of [0, N): Fisher-Yates with draws keyed by (seed, epoch, i). */
static void make_permutation(int64_t *perm, int64_t N, uint64_t seed, long epoch)
{
    for (int64_t i = 0; i < N; i++) perm[i] = i;
    for (int64_t i = N - 1; i > 0; i--) {
        uint64_t r = vae_rng_u64(seed, VAE_RNG_PERM, (uint64_t)epoch, (uint64_t)i);
        int64_t j = (int64_t)(((unsigned __int128)r * (uint64_t)(i + 1)) >> 64);
        int64_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}

int vae_evaluate(vae_model *m, vae_data *d, MPI_Comm comm, uint64_t seed, double beta,
                 int use_mean, int64_t limit, vae_eval_result *res)
{
    int rank, P;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &P);
    int64_t n = limit > 0 && limit < d->N ? limit : d->N;
    int64_t lo = n * rank / P, hi = n * (rank + 1) / P;
    int64_t idx[4096];
    double sums[3] = { 0, 0, 0 };
    int rc = VAE_OK;
    int chunk = m->max_batch < 4096 ? m->max_batch : 4096;
    vae_defer_begin();
    for (int64_t r = lo; r < hi && !rc; r += chunk) {
        int b = (int)(hi - r < chunk ? hi - r : chunk);
        for (int i = 0; i < b; i++) idx[i] = r + i;
        rc = vae_data_rows(d, idx, b, vae_model_input(m));
        if (rc) break;
        if (!use_mean)
            for (int i = 0; i < b; i++)
                vae_rng_normal(seed, VAE_RNG_EVAL, 0, (uint64_t)(r + i), m->eps + (size_t)i * m->Z, m->Z);
        vae_loss_stats st;
        vae_model_forward_backward(m, use_mean ? NULL : m->eps, b, (float)beta, 1.0f, 0, &st, NULL, NULL);
        sums[0] += st.recon;
        sums[1] += st.kl;
        sums[2] += b;
    }
    rc = vae_agree(rc, comm);
    if (rc) return rc;
    MPI_Allreduce(MPI_IN_PLACE, sums, 3, MPI_DOUBLE, MPI_SUM, comm);
    res->rows = (int64_t)sums[2];
    res->recon = sums[0] / sums[2];
    res->kl = sums[1] / sums[2];
    res->loss = res->recon + beta * res->kl;
    return VAE_OK;
}

/* A hash of the parameter bits, so ranks can check that they hold identical replicas. */
static uint64_t params_hash(const float *p, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        uint32_t b;
        memcpy(&b, &p[i], 4);
        h = (h ^ b) * 1099511628211ull;
    }
    return h;
}

/* True when spec names the file and dataset that a checkpoint's spec (or its absolute form) names. */
static int same_data(const char *spec, const char *ck_spec, const char *ck_abs)
{
    char a[VAE_PATH_LEN], b[VAE_PATH_LEN];
    if (!strcmp(spec, ck_spec)) return 1;
    if (vae_data_abs_spec(spec, a, sizeof a)) return 0;
    if (ck_abs[0] && !strcmp(a, ck_abs)) return 1;
    return !vae_data_abs_spec(ck_spec, b, sizeof b) && !strcmp(a, b);
}

/* Checks flags given on a resume against the checkpoint's configuration. */
static int check_resume(const vae_config *given, const vae_config *ck, unsigned mask, const char *path)
{
    const vae_arch *a = &given->arch, *b = &ck->arch;
    if ((mask & VAE_SET_MODEL) && a->kind != b->kind)
        return vae_error(VAE_EINVAL, "--model differs from the checkpoint '%s' being resumed", path);
    if ((mask & VAE_SET_HIDDEN) &&
        (a->n_hidden != b->n_hidden || memcmp(a->hidden, b->hidden, sizeof(int) * a->n_hidden)))
    {
        char g[128] = "", c[128] = "";
        for (int i = 0; i < a->n_hidden; i++) snprintf(g + strlen(g), sizeof g - strlen(g), "%s%d", i ? "," : "", a->hidden[i]);
        for (int i = 0; i < b->n_hidden; i++) snprintf(c + strlen(c), sizeof c - strlen(c), "%s%d", i ? "," : "", b->hidden[i]);
        return vae_error(VAE_EINVAL, "--hidden %s differs from the checkpoint '%s' being resumed (%s)", g, path, c);
    }
    if ((mask & VAE_SET_LATENT) && a->latent != b->latent)
        return vae_error(VAE_EINVAL, "--latent %d differs from the checkpoint '%s' being resumed (%d)", a->latent, path, b->latent);
    if ((mask & VAE_SET_LOSS) && a->loss != b->loss)
        return vae_error(VAE_EINVAL, "--loss differs from the checkpoint '%s' being resumed", path);
    if ((mask & VAE_SET_BATCH) && given->batch != ck->batch)
        return vae_error(VAE_EINVAL, "--batch %d differs from the checkpoint '%s' being resumed (%d)", given->batch, path, ck->batch);
    if ((mask & VAE_SET_SEED) && given->seed != ck->seed)
        return vae_error(VAE_EINVAL, "--seed %llu differs from the checkpoint '%s' being resumed (%llu)",
                         (unsigned long long)given->seed, path, (unsigned long long)ck->seed);
    if ((mask & VAE_SET_LR) && given->lr != ck->lr)
        return vae_error(VAE_EINVAL, "--lr %g differs from the checkpoint '%s' being resumed (%g)", given->lr, path, ck->lr);
    if ((mask & VAE_SET_CAPACITY) && (given->capacity_max != ck->capacity_max || given->capacity_steps != ck->capacity_steps))
        return vae_error(VAE_EINVAL, "--capacity differs from the checkpoint '%s' being resumed", path);
    if ((mask & VAE_SET_BETA) && given->beta != ck->beta)
        return vae_error(VAE_EINVAL, "--beta %g differs from the checkpoint '%s' being resumed (%g)", given->beta, path, ck->beta);
    char where[VAE_PATH_LEN];
    /* Another spelling of the same file is the same data; other data is refused unless the checkpoint's is gone. */
    if ((mask & VAE_SET_DATA) && !same_data(given->data, ck->data, ck->data_abs) &&
        vae_data_locate(ck->data, ck->data_abs, where, sizeof where))
        return vae_error(VAE_EINVAL, "--data '%s' differs from the checkpoint '%s' being resumed ('%s')", given->data, path, ck->data);
    return VAE_OK;
}

/* Removes temporary checkpoint files that a crash during a save left behind. */
static void remove_stale_tmp(const char *dir)
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
}

static int g_lock_fd = -1;

/* Holds an exclusive lock on DIR/lock until unlock_run_dir (or the process's end). */
static int lock_run_dir(const char *dir)
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
    g_lock_fd = fd; /* stays open, and locked, until unlock_run_dir */
    return VAE_OK;
}

/* Clears the holder's line (a finished run leaves no stale "pid N on host") and releases the lock. */
static void unlock_run_dir(void)
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
static int refuse_existing_run(const char *dir)
{
    char lk[VAE_PATH_LEN + 16];
    struct stat sb;
    snprintf(lk, sizeof lk, "%s/lock", dir);
    if (stat(lk, &sb) == 0) { /* a run holding it now is named as such */
        int rc = lock_run_dir(dir);
        if (rc) return rc;
        unlock_run_dir();
    }
    long steps[4096];
    int n = vae_ckpt_list(dir, steps, 4096);
    long rows = vae_metrics_count(dir, "/train");
    if (n == 0 && rows == 0) return VAE_OK;
    char what[256] = "";
    if (n > 0) snprintf(what, sizeof what, "checkpoints up to step-%ld.h5", steps[0]);
    if (rows > 0) snprintf(what + strlen(what), sizeof what - strlen(what), "%smetrics.h5 with %ld rows", n > 0 ? " and " : "", rows);
    if (rows < 0) snprintf(what + strlen(what), sizeof what - strlen(what), "%sa metrics.h5 that cannot be read", n > 0 ? " and " : "");
    return vae_error(VAE_EINVAL, "run directory '%s' already holds a run (%s); continue it with --resume auto, "
                     "or give another --out (nothing was changed)", dir, what);
}

static void print_banner(const vae_config *c, const vae_model *m, const vae_data *d, const vae_data *td, MPI_Comm comm,
                         const char *resumed_from, const vae_train_state *st)
{
    int rank, P;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &P);
    char name[MPI_MAX_PROCESSOR_NAME] = "";
    int len = 0;
    MPI_Get_processor_name(name, &len);
    char *all = rank == 0 ? calloc((size_t)P, MPI_MAX_PROCESSOR_NAME) : NULL;
    MPI_Gather(name, MPI_MAX_PROCESSOR_NAME, MPI_CHAR, all, MPI_MAX_PROCESSOR_NAME, MPI_CHAR, 0, comm);
    MPI_Comm node;
    MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node);
    int per_node;
    MPI_Comm_size(node, &per_node);
    MPI_Comm_free(&node);
    if (rank == 0) {
        const char *omp = getenv("OMP_NUM_THREADS"), *ob = getenv("OPENBLAS_NUM_THREADS");
        const char *job = getenv("SLURM_JOB_ID"), *rs = getenv("SLURM_RESTART_COUNT");
        printf("mpivae %s: world size %d, %d ranks per node, hosts:", MPIVAE_VERSION, P, per_node);
        for (int i = 0; i < P; i++) {
            int dup = 0;
            for (int j = 0; j < i; j++) dup |= !strcmp(all + (size_t)i * MPI_MAX_PROCESSOR_NAME, all + (size_t)j * MPI_MAX_PROCESSOR_NAME);
            if (!dup) printf(" %s", all + (size_t)i * MPI_MAX_PROCESSOR_NAME);
        }
        char core[128];
        printf("\nthreads: OMP_NUM_THREADS=%s OPENBLAS_NUM_THREADS=%s, OpenBLAS core %s\n", omp ? omp : "unset",
               ob ? ob : "unset", vae_blas_describe(core, sizeof core));
        if (job) printf("slurm: job %s, restart count %s\n", job, rs ? rs : "0");
        printf("data: %s:%s, %lld rows of %dx%dx%d (%s, %s)\n", d->file, d->dset, (long long)d->N, d->C, d->Hh, d->W,
               d->dtype == VAE_DT_U8 ? "uint8" : "float", d->in_memory ? "in shared memory" : "streamed");
        if (td) printf("held-out data: %s:%s, %lld rows\n", td->file, td->dset, (long long)td->N);
        else printf("held-out data: none (no evaluation; the tools need --data)\n");
        printf("model: %s", c->arch.kind == VAE_MODEL_CONV ? "conv" : "mlp");
        printf(c->arch.kind == VAE_MODEL_CONV ? " channels" : " hidden");
        for (int i = 0; i < c->arch.n_hidden; i++) printf("%s%d", i ? "," : " ", c->arch.hidden[i]);
        if (c->capacity_max >= 0)
            printf(" capacity %g over %ld steps,", c->capacity_max, c->capacity_steps);
        printf(" latent %d, loss %s, beta %g, %zu parameters, %.3f MFLOP per sample per step\n", c->arch.latent,
               c->arch.loss == VAE_LOSS_MSE ? "mse" : "bce", c->beta, m->n_params, vae_model_flops_per_sample(m) / 1e6);
        printf("training: %d epochs, global batch %d (%d..%d per rank), lr %g, seed %llu, run directory %s\n",
               c->epochs, c->batch, c->batch / P, (c->batch + P - 1) / P, c->lr, (unsigned long long)c->seed, c->out);
        if (resumed_from) {
            printf("resumed from %s at step %ld (epoch %ld, step %ld of the epoch)", resumed_from, st->step,
                   st->epoch + 1, st->epoch_step);
            if (st->world_size != P)
                printf("; saved with %d ranks, now %d: the global data order continues unchanged, the summation order differs",
                       st->world_size, P);
            printf("\n");
        }
        fflush(stdout);
        free(all);
    }
}

static void fmt_duration(double s, char *buf, size_t len)
{
    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(buf, len, "%ldh%02ldm", t / 3600, (t / 60) % 60);
    else if (t >= 60) snprintf(buf, len, "%ldm%02lds", t / 60, t % 60);
    else snprintf(buf, len, "%lds", t);
}

/* The step's loss sums and non-finite flag into the tail of the gradient block. */
static void fill_stats(float *gx, const vae_loss_stats *ls)
{
    gx[VAE_GX_RECON] = (float)ls->recon;
    gx[VAE_GX_KL] = (float)ls->kl;
    gx[VAE_GX_BAD] = !isfinite(ls->recon) || !isfinite(ls->kl) ? 1.0f : 0.0f;
}

/*
 * Overlapped gradient reduction: as backward finishes each layer, its range
 * joins a pending bucket; a bucket of at least min_bucket floats (or the last
 * one) is started with MPI_Iallreduce, and the outstanding ones are tested so
 * that MPI makes progress while backward goes on. The first bucket also
 * carries the step statistics at the end of the block.
 */
typedef struct overlap {
    int enabled;
    MPI_Comm comm;
    float *grads;
    size_t pend_hi, min_bucket;
    MPI_Request req[VAE_MAX_LAYERS + 1];
    int nreq, rc, stats_done;
    const vae_loss_stats *stats;
} overlap;

static void on_grad_ready(void *ctx, size_t lo, size_t hi)
{
    overlap *o = ctx;
    (void)hi;
    if (!o->stats_done) {
        fill_stats(o->grads + (o->pend_hi - VAE_GRAD_EXTRA), o->stats);
        o->stats_done = 1;
    }
    if (o->pend_hi - lo >= o->min_bucket || lo == 0) {
        int rc = MPI_Iallreduce(MPI_IN_PLACE, o->grads + lo, (int)(o->pend_hi - lo), MPI_FLOAT, MPI_SUM, o->comm,
                                &o->req[o->nreq++]);
        if (rc != MPI_SUCCESS) o->rc = rc;
        o->pend_hi = lo;
    }
    int flag;
    if (o->nreq) MPI_Testall(o->nreq, o->req, &flag, MPI_STATUSES_IGNORE);
}

/*
 * Node-shared reduction and update (--allreduce shm). Every rank's gradient
 * block lives in one MPI-3 shared-memory window per node, and so do one copy
 * per node of the parameters and the Adam moments, which all the node's ranks
 * train with. A step:
 *   1. backward into the rank's own block; barrier;
 *   2. rank r of the node's n ranks sums its slice of all n blocks into the
 *      node leader's block (a reduce-scatter by direct loads and stores, in a
 *      fixed order) and squares each norm block for the gradient norm as
 *      soon as it is summed (while it is in cache); barrier;
 *      with several nodes, the leaders then sum their blocks with one
 *      MPI_Allreduce (barrier) and the slices are squared after it (barrier);
 *   3. every rank reads the norm and the step statistics, and applies Adam to
 *      its own slice of the shared parameters; barrier.
 * The slices are whole blocks of the gradient norm (optim.h), so the norm is
 * the same sum in the same order as in the other reduction modes, and Adam is
 * elementwise, so the result is bit for bit that of one rank updating all.
 * The blocks are cleared where they are read (the other ranks' slices in 2,
 * the leader's in 3), so no pass zeroes them before the next backward; each
 * rank only writes its own statistics slots at the start of a step.
 */
typedef struct shm_reduce {
    MPI_Win win, swin;
    MPI_Comm node, leaders;
    int nr, ns, nleaders, active;
    size_t n, np, nb;   /* floats in a gradient block, parameters, norm blocks of the block */
    size_t blo, bhi;    /* this rank's norm blocks */
    size_t lo, hi;      /* this rank's floats */
    float **seg;        /* seg[q]: node rank q's gradient block */
    float *state;       /* the node's parameters, Adam m and v [3 np] */
    double *part;       /* [nb] squared norms of the blocks */
    float *own[3];      /* the model's private parameters, m and v, put back at the end */
} shm_reduce;

static void shm_sync(shm_reduce *s)
{
    MPI_Win_sync(s->win);
    MPI_Win_sync(s->swin);
    MPI_Barrier(s->node);
    MPI_Win_sync(s->win);
    MPI_Win_sync(s->swin);
}

static int shm_init(shm_reduce *s, MPI_Comm comm, size_t np)
{
    int rank;
    memset(s, 0, sizeof *s);
    s->node = s->leaders = MPI_COMM_NULL;
    s->win = s->swin = MPI_WIN_NULL;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &s->node);
    MPI_Comm_rank(s->node, &s->nr);
    /* Test hook: MPIVAE_TEST_RANKS_PER_NODE=k splits a node into groups of k ranks, as if they were nodes. */
    const char *k_env = getenv("MPIVAE_TEST_RANKS_PER_NODE");
    int k = k_env ? atoi(k_env) : 0;
    if (k > 0) {
        MPI_Comm sub;
        MPI_Comm_split(s->node, s->nr / k, s->nr, &sub);
        MPI_Comm_free(&s->node);
        s->node = sub;
        MPI_Comm_rank(s->node, &s->nr);
    }
    MPI_Comm_size(s->node, &s->ns);
    MPI_Comm_split(comm, s->nr == 0 ? 0 : MPI_UNDEFINED, rank, &s->leaders);
    s->nleaders = 0;
    if (s->leaders != MPI_COMM_NULL) MPI_Comm_size(s->leaders, &s->nleaders);
    MPI_Bcast(&s->nleaders, 1, MPI_INT, 0, s->node);
    s->np = np;
    s->n = np + VAE_GRAD_EXTRA;
    s->nb = vae_norm_nblocks(s->n);
    s->blo = s->nb * (size_t)s->nr / (size_t)s->ns;
    s->bhi = s->nb * (size_t)(s->nr + 1) / (size_t)s->ns;
    s->lo = s->blo * VAE_NORM_BLOCK < s->n ? s->blo * VAE_NORM_BLOCK : s->n;
    s->hi = s->bhi * VAE_NORM_BLOCK < s->n ? s->bhi * VAE_NORM_BLOCK : s->n;
    float *base = NULL;
    s->seg = calloc((size_t)s->ns, sizeof(float *));
    int rc = s->seg ? MPI_Win_allocate_shared((MPI_Aint)(s->n * sizeof(float)), sizeof(float), MPI_INFO_NULL, s->node,
                                              &base, &s->win)
                    : MPI_ERR_NO_MEM;
    /* The leader's part of the second window: parameters, m, v, then the norm partials (8-byte aligned). */
    size_t pbytes = (3 * np * sizeof(float) + 7) / 8 * 8;
    if (rc == MPI_SUCCESS) {
        rc = MPI_Win_allocate_shared((MPI_Aint)(s->nr == 0 ? pbytes + s->nb * sizeof(double) : 0), 1, MPI_INFO_NULL,
                                     s->node, &base, &s->swin);
        if (rc != MPI_SUCCESS) MPI_Win_free(&s->win);
    }
    if (rc != MPI_SUCCESS)
        return vae_error(VAE_ENOMEM, "cannot allocate the node's shared gradient and parameter blocks (%zu floats)",
                         s->n * (size_t)(s->ns + 3));
    for (int q = 0; q < s->ns; q++) {
        MPI_Aint size;
        int disp;
        MPI_Win_shared_query(s->win, q, &size, &disp, &s->seg[q]);
    }
    {
        MPI_Aint size;
        int disp;
        char *sbase;
        MPI_Win_shared_query(s->swin, 0, &size, &disp, &sbase);
        s->state = (float *)sbase;
        s->part = (double *)(sbase + pbytes);
    }
    MPI_Win_lock_all(MPI_MODE_NOCHECK, s->win);
    MPI_Win_lock_all(MPI_MODE_NOCHECK, s->swin);
    s->active = 1;
    return VAE_OK;
}

/* Moves the model onto the node's shared parameters and moments (every rank holds the same values). */
static void shm_bind(shm_reduce *s, vae_model *m)
{
    float **blk[3] = { &m->params, &m->m, &m->v };
    for (int i = 0; i < 3; i++) {
        if (s->nr == 0) memcpy(s->state + (size_t)i * s->np, *blk[i], s->np * sizeof(float));
        s->own[i] = *blk[i];
    }
    shm_sync(s);
    for (int i = 0; i < 3; i++) *blk[i] = s->state + (size_t)i * s->np;
}

/* Gives the model its own blocks back (their contents are stale: only freeing follows). */
static void shm_unbind(shm_reduce *s, vae_model *m)
{
    if (!s->own[0]) return;
    m->params = s->own[0];
    m->m = s->own[1];
    m->v = s->own[2];
    s->own[0] = NULL;
}

static void shm_free(shm_reduce *s)
{
    if (s->active) {
        MPI_Win_unlock_all(s->swin);
        MPI_Win_unlock_all(s->win);
        MPI_Win_free(&s->swin);
        MPI_Win_free(&s->win);
    }
    if (s->leaders != MPI_COMM_NULL) MPI_Comm_free(&s->leaders);
    if (s->node != MPI_COMM_NULL) MPI_Comm_free(&s->node);
    free(s->seg);
    memset(s, 0, sizeof *s);
}

/* Squares this rank's slice of the summed block into the norm partials. */
static void shm_square(shm_reduce *s)
{
    size_t b1 = s->bhi < vae_norm_nblocks(s->np) ? s->bhi : vae_norm_nblocks(s->np);
    for (size_t b = s->blo; b < s->bhi; b++) s->part[b] = 0.0;
    if (s->blo < b1) vae_sumsq_blocks(s->seg[0], s->np, s->blo, b1, s->part);
}

/*
 * Steps 1 and 2: sums every rank's block; afterwards seg[0] of each node holds
 * the global sum and *sumsq its squared norm (over the parameters).
 */
static int shm_allreduce(shm_reduce *s, size_t fail_slot, double *sumsq)
{
    shm_sync(s);
    float *dst = s->seg[0];
    int fused = s->nleaders <= 1;
    for (size_t b = s->blo; b < s->bhi; b++) {
        size_t lo = b * VAE_NORM_BLOCK, hi = lo + VAE_NORM_BLOCK < s->n ? lo + VAE_NORM_BLOCK : s->n;
        /* One node: the block is final after the last rank's add, squared as it is stored (0 past the parameters). */
        size_t sq = s->np > lo ? (hi < s->np ? hi : s->np) - lo : 0;
        for (int q = 1; q < s->ns; q++) {
            float *src = s->seg[q];
            if (fused && q == s->ns - 1) {
                s->part[b] = vae_add_clear_sumsq(dst + lo, src + lo, hi - lo, sq);
                continue;
            }
            vae_add_clear_sumsq(dst + lo, src + lo, hi - lo, 0); /* sums nothing: add and clear only */
        }
        if (fused && s->ns == 1) vae_sumsq_blocks(dst, s->np, b, b + 1, s->part);
    }
    shm_sync(s);
    int rc = MPI_SUCCESS;
    if (!fused) {
        if (s->nr == 0) {
            rc = MPI_Allreduce(MPI_IN_PLACE, dst, (int)s->n, MPI_FLOAT, MPI_SUM, s->leaders);
            if (rc != MPI_SUCCESS) dst[fail_slot] = 1.0f; /* the node's other ranks stop too */
        }
        shm_sync(s);
        shm_square(s);
        shm_sync(s);
    }
    *sumsq = vae_sum_parts(s->part, s->nb);
    return rc;
}

/*
 * Step 3: Adam on this rank's slice of the node's parameters (h NULL: a
 * skipped step, the slice is only cleared); the caller then synchronises.
 */
static void shm_adam(shm_reduce *s, const vae_adam *h, long t)
{
    size_t hi = s->hi < s->np ? s->hi : s->np;
    if (s->lo >= hi) return;
    if (h)
        vae_adam_update_clear(s->state + s->lo, s->seg[0] + s->lo, s->state + s->np + s->lo,
                              s->state + 2 * s->np + s->lo, hi - s->lo, h, t);
    else
        memset(s->seg[0] + s->lo, 0, (hi - s->lo) * sizeof(float));
}

int vae_train_run(vae_config *cfg, const char *resume, unsigned mask, MPI_Comm comm)
{
    int rank, P;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &P);
    /* From here on a stop request is kept and honoured after the first step. */
    install_signals();
    vae_train_state st;
    memset(&st, 0, sizeof st);
    char ckpt[VAE_PATH_LEN + 64] = "";
    int found = 0, rc;
    vae_model m;
    vae_data d, td;
    memset(&m, 0, sizeof m);
    memset(&d, 0, sizeof d);
    memset(&td, 0, sizeof td);
    vae_metrics *mt = NULL;
    int64_t *perm = NULL, *idx = NULL;
    double *part = NULL;
    int have_test = 0;
    shm_reduce shm;
    memset(&shm, 0, sizeof shm);
    shm.node = shm.leaders = MPI_COMM_NULL;
    float *own_grads = NULL;

    /* 1. Resolve the checkpoint to resume from (rank 0 reads, everyone receives). */
    vae_config ck;
    rc = VAE_OK;
    /* Only rank 0 looks, so its messages (skipped checkpoints, a refusal) print once, directly. */
    if (rank == 0 && resume) {
        if (strcmp(resume, "auto") == 0) {
            found = vae_ckpt_find_latest(cfg->out, ckpt, sizeof ckpt);
            if (found < 0) rc = found;
        } else {
            rc = vae_ckpt_resolve(resume, ckpt, sizeof ckpt);
            found = rc ? 0 : 1;
        }
        if (found > 0) {
            rc = vae_ckpt_read_meta(ckpt, &ck, &st);
            if (!rc) rc = check_resume(cfg, &ck, mask, ckpt);
        }
    }
    if (rank == 0 && !resume) rc = refuse_existing_run(cfg->out);
    vae_defer_begin();
    rc = vae_agree(rc, comm);
    if (rc) return rc;
    MPI_Bcast(&found, 1, MPI_INT, 0, comm);
    if (found > 0) {
        MPI_Bcast(ckpt, sizeof ckpt, MPI_CHAR, 0, comm);
        MPI_Bcast(&ck, sizeof ck, MPI_BYTE, 0, comm);
        MPI_Bcast(&st, sizeof st, MPI_BYTE, 0, comm);
        /* The checkpoint's configuration, with what may change on a resume. */
        vae_config merged = ck;
        if (mask & VAE_SET_EPOCHS) merged.epochs = cfg->epochs;
        if (mask & VAE_SET_INTERVALS) {
            merged.log_every = cfg->log_every;
            merged.eval_every = cfg->eval_every;
            merged.sample_every = cfg->sample_every;
            merged.ckpt_every = cfg->ckpt_every;
            merged.keep = cfg->keep;
        }
        if (strcmp(resume, "auto") == 0 || cfg->out[0]) snprintf(merged.out, sizeof merged.out, "%s", cfg->out);
        if (mask & VAE_SET_DATA) { /* check_resume let it through: the same file, or the checkpoint's is gone */
            snprintf(merged.data, sizeof merged.data, "%s", cfg->data);
            merged.data_abs[0] = '\0';
        }
        if (mask & VAE_SET_TEST) {
            snprintf(merged.test_data, sizeof merged.test_data, "%s", cfg->test_data);
            merged.test_data_abs[0] = '\0';
        }
        if (mask & VAE_SET_EVAL) merged.eval_every = cfg->eval_every;
        if (mask & VAE_SET_STEPS) merged.max_steps = cfg->max_steps; /* else the run's own --steps */
        merged.in_memory = cfg->in_memory;
        merged.allreduce = cfg->allreduce;
        *cfg = merged;
    } else if (resume && strcmp(resume, "auto") == 0 && rank == 0) {
        printf("no checkpoint in %s/checkpoints: starting a new run\n", cfg->out);
    }

    /* 2. Data. */
    if (cfg->batch < P) {
        if (rank == 0)
            vae_error(VAE_EINVAL, "--batch %d is smaller than the %d ranks: every rank needs at least one sample per step", cfg->batch, P);
        return VAE_EINVAL;
    }
    if ((mask & VAE_SET_EVAL) && cfg->eval_every > 0 && !cfg->test_data[0]) {
        if (rank == 0)
            vae_error(VAE_EINVAL, "--eval-every %ld needs held-out data, and this run has none (--test-data none, or "
                      "'%s' has no /test/images): give --test-data FILE:/dataset", cfg->eval_every, cfg->data);
        return VAE_EINVAL;
    }
    /* A resumed run finds its data through the absolute paths stored in the checkpoint first. */
    char dspec[VAE_PATH_LEN], tspec[VAE_PATH_LEN];
    if (!vae_data_locate(cfg->data, cfg->data_abs, dspec, sizeof dspec)) {
        if (found > 0) {
            if (rank == 0)
                vae_error(VAE_EIO, "cannot find the training data '%s' named by checkpoint '%s' (attribute cfg.data%s%s%s): "
                          "give --data FILE[:/dataset] where it is now", cfg->data, ckpt, cfg->data_abs[0] ? "; nor '" : "",
                          cfg->data_abs, cfg->data_abs[0] ? "'" : "");
            return VAE_EIO;
        }
        snprintf(dspec, sizeof dspec, "%s", cfg->data); /* opening it says what is wrong */
    }
    if (cfg->test_data[0] && !vae_data_locate(cfg->test_data, cfg->test_data_abs, tspec, sizeof tspec)) {
        if (found > 0) {
            if (rank == 0)
                vae_error(VAE_EIO, "cannot find the held-out data '%s' named by checkpoint '%s' (attribute cfg.test_data%s%s%s): "
                          "give --test-data FILE[:/dataset] where it is now, or --test-data none", cfg->test_data, ckpt,
                          cfg->test_data_abs[0] ? "; nor '" : "", cfg->test_data_abs, cfg->test_data_abs[0] ? "'" : "");
            return VAE_EIO;
        }
        snprintf(tspec, sizeof tspec, "%s", cfg->test_data);
    }
    int local_max = (cfg->batch + P - 1) / P;
    rc = vae_data_open(&d, dspec, comm, cfg->in_memory, local_max);
    if (rc) return rc;
    if (vae_data_abs_spec(dspec, cfg->data_abs, sizeof cfg->data_abs)) cfg->data_abs[0] = '\0';
    rc = vae_data_check(&d, cfg->arch.loss == VAE_LOSS_BCE, comm);
    if (rc == VAE_ESTOP) rc = startup_stopped(comm, rank);
    if (rc) goto done;
    if (found > 0) {
        if (d.C != cfg->arch.C || d.Hh != cfg->arch.Hh || d.W != cfg->arch.W) {
            if (rank == 0)
                vae_error(VAE_EDATA, "'%s:%s' has rows of %dx%dx%d but the checkpoint '%s' was trained on %dx%dx%d",
                          d.file, d.dset, d.C, d.Hh, d.W, ckpt, cfg->arch.C, cfg->arch.Hh, cfg->arch.W);
            rc = VAE_EDATA;
            goto done;
        }
    } else {
        cfg->arch.C = d.C;
        cfg->arch.Hh = d.Hh;
        cfg->arch.W = d.W;
    }
    /* The data order continues only over the same rows: a resume refuses data that grew or shrank. */
    if (found > 0 && ((st.data_rows > 0 && st.data_rows != d.N) || st.epoch_step * (int64_t)cfg->batch >= d.N)) {
        if (rank == 0)
            vae_error(VAE_EDATA, "'%s:%s' has %lld rows, but the checkpoint '%s' was saved %s%ld%s at row %lld of epoch %ld: "
                      "the data changed since; resume with the data it was trained on", d.file, d.dset, (long long)d.N,
                      ckpt, st.data_rows > 0 ? "on " : "(rows not recorded", st.data_rows, st.data_rows > 0 ? " rows," : ")",
                      (long long)st.epoch_step * cfg->batch, st.epoch + 1);
        rc = VAE_EDATA;
        goto done;
    }
    st.data_rows = (long)d.N;
    if (cfg->batch > d.N) {
        if (rank == 0)
            vae_error(VAE_EINVAL, "--batch %d is larger than the %lld rows of '%s:%s'", cfg->batch, (long long)d.N, d.file, d.dset);
        rc = VAE_EINVAL;
        goto done;
    }
    if (cfg->test_data[0]) {
        rc = vae_data_open(&td, tspec, comm, cfg->in_memory, local_max);
        if (vae_data_abs_spec(tspec, cfg->test_data_abs, sizeof cfg->test_data_abs)) cfg->test_data_abs[0] = '\0';
        if (!rc) rc = vae_data_check(&td, cfg->arch.loss == VAE_LOSS_BCE, comm);
        if (rc == VAE_ESTOP) rc = startup_stopped(comm, rank);
        if (!rc && td.D != d.D) {
            if (rank == 0)
                vae_error(VAE_EDATA, "test data '%s:%s' has rows of %dx%dx%d, training data %dx%dx%d", td.file, td.dset,
                          td.C, td.Hh, td.W, d.C, d.Hh, d.W);
            rc = VAE_EDATA;
        }
        if (rc) goto done;
        have_test = 1;
    }

    rc = startup_stopped(comm, rank);
    if (rc) goto done;

    /* 3. Model: keyed init (or the checkpoint), then a check that all replicas agree. */
    vae_defer_begin();
    if (found > 0 && rank == 0) { /* the checkpoint's tensors match its attributes before the model is allocated */
        rc = vae_model_plan(&m, &cfg->arch);
        if (!rc) rc = vae_ckpt_check_tensors(ckpt, &m, 1);
        vae_model_free(&m);
    }
    if (!rc) rc = vae_model_init(&m, &cfg->arch, local_max);
    rc = vae_agree(rc, comm);
    if (rc) goto done;
    vae_model_init_params(&m, cfg->seed);
    if (found > 0) {
        vae_defer_begin();
        rc = rank == 0 ? vae_ckpt_read_tensors(ckpt, &m, 1) : VAE_OK;
        rc = vae_agree(rc, comm);
        if (rc) goto done;
        MPI_Bcast(m.params, (int)m.n_params, MPI_FLOAT, 0, comm);
        MPI_Bcast(m.m, (int)m.n_params, MPI_FLOAT, 0, comm);
        MPI_Bcast(m.v, (int)m.n_params, MPI_FLOAT, 0, comm);
    }
    {
        uint64_t h = params_hash(m.params, m.n_params), hmin = h, hmax = h;
        MPI_Allreduce(MPI_IN_PLACE, &hmin, 1, MPI_UINT64_T, MPI_MIN, comm);
        MPI_Allreduce(MPI_IN_PLACE, &hmax, 1, MPI_UINT64_T, MPI_MAX, comm);
        if (hmin != hmax) {
            rc = vae_error(VAE_EMPI, "ranks hold different initial parameters (checksum mismatch)");
            goto done;
        }
    }

    rc = startup_stopped(comm, rank);
    if (rc) goto done;

    /* 4. Run directory (rank 0): lock, metrics. */
    vae_defer_begin();
    rc = VAE_OK;
    if (rank == 0) {
        rc = vae__mkdir_p(cfg->out);
        if (!rc) rc = lock_run_dir(cfg->out);
        if (!rc) remove_stale_tmp(cfg->out);
        if (!rc) {
            mt = malloc(sizeof *mt);
            rc = mt ? vae_metrics_open(mt, cfg->out, st.step) : vae_error(VAE_ENOMEM, "cannot allocate metrics buffers");
        }
    }
    rc = vae_agree(rc, comm);
    if (rc) goto done;
    print_banner(cfg, &m, &d, have_test ? &td : NULL, comm, found > 0 ? ckpt : NULL, &st);

    /* 5. The loop. */
    const int64_t N = d.N;
    const int B = cfg->batch, Z = m.Z;
    const long S = vae_steps_per_epoch(N, B);
    const long total = cfg->max_steps > 0 && cfg->max_steps < S * cfg->epochs ? cfg->max_steps : S * cfg->epochs;
    const size_t NP = m.n_params;
    vae_adam adam = { (float)cfg->lr, (float)cfg->beta1, (float)cfg->beta2, (float)cfg->adam_eps };
    const size_t nbn = vae_norm_nblocks(NP);
    perm = malloc((size_t)N * sizeof(int64_t));
    idx = malloc((size_t)local_max * sizeof(int64_t));
    part = malloc(nbn * sizeof(double));
    if (!perm || !idx || !part) {
        rc = vae_error(VAE_ENOMEM, "cannot allocate the permutation of %lld rows", (long long)N);
        goto done;
    }
    make_permutation(perm, N, cfg->seed, st.epoch);
    /*
     * Test hooks: MPIVAE_TEST_STOP_AT_STEP=N acts as a stop signal during
     * global step N on every rank; MPIVAE_TEST_NAN_STEPS=A:B makes the last
     * rank's loss and gradients NaN during global steps A..B;
     * MPIVAE_TEST_STEP_DELAY_MS=D makes every rank sleep D ms after each step,
     * so that the job-script tests' runs last long enough on any machine.
     */
    const char *stop_env = getenv("MPIVAE_TEST_STOP_AT_STEP");
    long stop_at = stop_env ? atol(stop_env) : -1;
    long nan_a = -1, nan_b = -1;
    const char *nan_env = getenv("MPIVAE_TEST_NAN_STEPS");
    if (nan_env && sscanf(nan_env, "%ld:%ld", &nan_a, &nan_b) != 2) nan_a = nan_b = -1;
    const char *delay_env = getenv("MPIVAE_TEST_STEP_DELAY_MS");
    long delay_ms = delay_env ? atol(delay_env) : 0;
    /* A progress bar on a terminal; not under mpirun, whose ranks write to a pseudo-terminal
     * even when mpirun's own output goes to a file. */
    int tty = rank == 0 && isatty(STDOUT_FILENO) && !getenv("OMPI_COMM_WORLD_SIZE");
    double t_start = now_s(), t_int = t_start, busy = 0.0;
    long rows_int = 0;
    int stopped = 0, pending = VAE_OK;
    double comm_s = 0.0, comm_int = 0.0, comm_all = 0.0, busy_all = 0.0, fb_all = 0.0, upd_all = 0.0;
    long steps_int = 0, steps_run = st.step;
    overlap ov;
    memset(&ov, 0, sizeof ov);
    ov.enabled = cfg->allreduce == VAE_AR_OVERLAP;
    ov.comm = comm;
    ov.grads = m.grads;
    ov.min_bucket = 1 << 16;
    if (ov.enabled) {
        m.grad_ready = on_grad_ready;
        m.grad_ctx = &ov;
    }
    own_grads = m.grads;
    if (cfg->allreduce == VAE_AR_SHM) {
        vae_defer_begin();
        rc = vae_agree(shm_init(&shm, comm, NP), comm);
        if (rc) goto done;
        m.grads = shm.seg[shm.nr];
        memset(m.grads, 0, (NP + VAE_GRAD_EXTRA) * sizeof(float)); /* then cleared as it is read */
        shm_bind(&shm, &m);
    }
    if (rank == 0 && st.step >= total) printf("training already finished at step %ld\n", st.step);

    while (st.step < total) {
        double t0 = now_s();
        long pos = st.epoch_step * (long)B;
        int Bt = (int)(N - pos < B ? N - pos : B);
        int lo = (int)((long)Bt * rank / P), hi = (int)((long)Bt * (rank + 1) / P), nloc = hi - lo;
        for (int i = 0; i < nloc; i++) idx[i] = perm[pos + lo + i];
        int lrc = vae_data_rows(&d, idx, nloc, vae_model_input(&m));
        for (int i = 0; i < nloc; i++)
            vae_rng_normal(cfg->seed, VAE_RNG_EPS, (uint64_t)st.step, (uint64_t)(lo + i), m.eps + (size_t)i * Z, Z);
        float beta_t = (float)cfg->beta;
        if (cfg->warmup > 0 && st.step < cfg->warmup) beta_t = (float)(cfg->beta * (double)(st.step + 1) / cfg->warmup);
        if (cfg->capacity_max >= 0.0)
            m.capacity = (float)(cfg->capacity_steps > 0 && st.step < cfg->capacity_steps
                                     ? cfg->capacity_max * (double)st.step / cfg->capacity_steps
                                     : cfg->capacity_max);
        if (shm.active) memset(m.grads + NP, 0, VAE_GRAD_EXTRA * sizeof(float));
        else memset(m.grads, 0, (NP + VAE_GRAD_EXTRA) * sizeof(float));
        vae_loss_stats ls = { 0, 0, 0 };
        if (stop_at >= 0 && st.step + 1 == stop_at) vae_set_stop_requested(1);
        int inject_nan = rank == P - 1 && st.step + 1 >= nan_a && st.step + 1 <= nan_b;
        float *gx = m.grads + NP;
        gx[VAE_GX_COUNT] = (float)nloc;
        gx[VAE_GX_STOP] = g_stop ? 1.0f : 0.0f;
        gx[VAE_GX_FAIL] = lrc || pending ? 1.0f : 0.0f;
        int mrc = MPI_SUCCESS;
        double sumsq = 0.0;
        if (ov.enabled) {
            /* Buckets start during backward; a rank without rows issues the same sequence. */
            ov.stats = &ls;
            ov.stats_done = 0;
            ov.pend_hi = NP + VAE_GRAD_EXTRA;
            ov.nreq = 0;
            ov.rc = MPI_SUCCESS;
            if (inject_nan) m.grads[0] = NAN; /* bucket 0 is reduced last */
            double f0 = now_s();
            if (nloc > 0 && !lrc)
                vae_model_forward_backward(&m, m.eps, nloc, beta_t, 1.0f / Bt, 1, &ls, NULL, NULL);
            else
                for (int i = m.n_enc + m.n_dec - 1; i >= 0; i--)
                    on_grad_ready(&ov, m.layers[i].w, m.layers[i].b + m.layers[i].out);
            double c0 = now_s();
            fb_all += c0 - f0;
            mrc = MPI_Waitall(ov.nreq, ov.req, MPI_STATUSES_IGNORE);
            if (ov.rc != MPI_SUCCESS) mrc = ov.rc;
            comm_s += now_s() - c0;
        } else {
            double f0 = now_s();
            if (nloc > 0 && !lrc)
                vae_model_forward_backward(&m, m.eps, nloc, beta_t, 1.0f / Bt, 1, &ls, NULL, NULL);
            fb_all += now_s() - f0;
            if (inject_nan) {
                ls.recon = NAN;
                m.grads[0] = NAN;
            }
            fill_stats(gx, &ls);
            double c0 = now_s();
            if (shm.active) mrc = shm_allreduce(&shm, NP + VAE_GX_FAIL, &sumsq);
            else mrc = MPI_Allreduce(MPI_IN_PLACE, m.grads, (int)(NP + VAE_GRAD_EXTRA), MPI_FLOAT, MPI_SUM, comm);
            comm_s += now_s() - c0;
        }
        double u0 = now_s(); /* the update: the gradient norm (unless summed with the gradients), Adam */
        /* The summed gradients: in place, or the node leader's shared block. */
        const float *gsum = shm.active ? shm.seg[0] : m.grads;
        gx = (float *)gsum + NP;
        if (mrc != MPI_SUCCESS) {
            rc = vae_mpi_error(mrc, "the allreduce of the gradients");
            goto done;
        }
        if (gx[VAE_GX_FAIL] > 0.0f) {
            rc = VAE_EIO; /* a rank failed to read or write; it said why */
            goto done;
        }
        if (!shm.active) {
            vae_sumsq_blocks(gsum, NP, 0, nbn, part);
            sumsq = vae_sum_parts(part, nbn);
        }
        double gnorm = sqrt(sumsq);
        /* Everything read from the summed block is read before the barrier that frees it. */
        int stop_now = gx[VAE_GX_STOP] > 0.0f;
        double recon = gx[VAE_GX_RECON] / Bt, kl = gx[VAE_GX_KL] / Bt;
        int bad = gx[VAE_GX_BAD] > 0.0f || !isfinite(gnorm);
        if (bad) {
            st.skips++;
            if (shm.active) shm_adam(&shm, NULL, 0);
            if (rank == 0)
                vae_warn("step %ld: non-finite %s (recon %g, kl %g, gradient norm %g); step skipped (%ld in a row, limit %d)",
                         st.step + 1, !isfinite(recon) ? "reconstruction loss" : !isfinite(kl) ? "KL term" : "gradient",
                         recon, kl, gnorm, st.skips, cfg->max_skips);
            if (st.skips > cfg->max_skips) {
                if (rank == 0)
                    vae_error(VAE_ENONFINITE, "stopping at step %ld: %ld consecutive steps had non-finite values, more than "
                              "--max-skips %d allows (lower --lr, check the data)", st.step + 1, st.skips, cfg->max_skips);
                rc = VAE_ENONFINITE;
                goto done;
            }
        } else {
            st.skips = 0;
            st.adam_t++;
            if (shm.active) shm_adam(&shm, &adam, st.adam_t);
            else vae_adam_update(m.params, gsum, m.m, m.v, NP, &adam, st.adam_t);
        }
        if (shm.active) shm_sync(&shm); /* the node's parameters are updated, and its blocks free again */
        upd_all += now_s() - u0;
        st.step++;
        st.epoch_step++;
        if (st.epoch_step == S) {
            st.epoch++;
            st.epoch_step = 0;
            if (st.step < total) make_permutation(perm, N, cfg->seed, st.epoch);
        }
        int last = st.step == total;
        double t1 = now_s();
        busy += t1 - t0;
        busy_all += t1 - t0;
        if (delay_ms > 0) {
            struct timespec ts = { delay_ms / 1000, (delay_ms % 1000) * 1000000L };
            nanosleep(&ts, NULL);
        }
        rows_int += Bt;
        steps_int++;
        comm_int += comm_s;
        comm_all += comm_s;
        comm_s = 0.0;

        /* Between steps: metrics, log, evaluation, samples, checkpoints. */
        if (rank == 0) {
            double sps = rows_int / (busy > 0 ? busy : 1e-9);
            double row[VAE_METRICS_TRAIN_FIELDS] = { (double)st.step, (double)st.epoch, recon + beta_t * kl, recon, kl,
                                                     beta_t, cfg->lr, gnorm, sps, t1 - t_start };
            rc = vae_metrics_add_train(mt, row); /* fails only when memory runs out */
        }
        if (cfg->log_every > 0 && (st.step % cfg->log_every == 0 || last)) {
            if (rank == 0) {
                double sps = rows_int / (busy > 0 ? busy : 1e-9);
                char eta[32];
                fmt_duration((total - st.step) * (t1 - t_int) / (rows_int > 0 ? (double)rows_int / B : 1), eta, sizeof eta);
                if (tty) printf("\r\033[K");
                printf("step %ld/%ld epoch %ld loss %.4f recon %.4f kl %.4f beta %.3g | %.0f samples/s | "
                       "allreduce %.2f ms/step | ETA %s\n",
                       st.step, total, st.epoch_step == 0 ? st.epoch : st.epoch + 1, recon + beta_t * kl, recon, kl,
                       beta_t, sps, 1e3 * comm_int / (steps_int ? steps_int : 1), eta);
                fflush(stdout);
                if (!rc) rc = vae_metrics_flush(mt);
            }
            rows_int = 0;
            steps_int = 0;
            comm_int = 0.0;
            busy = 0.0;
            t_int = now_s();
        } else if (tty && st.step % 10 == 0) {
            int w = 30, f = (int)((double)st.step / total * w);
            printf("\r[%.*s%*s] %5.1f%% step %ld/%ld", f, "==============================", w - f, "", 100.0 * st.step / total, st.step, total);
            fflush(stdout);
        }
        /* A failure on rank 0 alone travels in the next step's allreduce. */
        if (rc) {
            pending = rc;
            rc = VAE_OK;
        }
        if (have_test && ((cfg->eval_every > 0 && st.step % cfg->eval_every == 0) || last)) {
            vae_eval_result er;
            rc = vae_evaluate(&m, &td, comm, cfg->seed, cfg->beta, 0, 0, &er);
            if (rc) goto done;
            if (rank == 0) {
                printf("eval step %ld: test loss %.4f recon %.4f kl %.4f %s (%lld rows)\n", st.step, er.loss,
                       er.recon, er.kl, vae_loss_unit(cfg->arch.loss), (long long)er.rows);
                fflush(stdout);
                double row[VAE_METRICS_EVAL_FIELDS] = { (double)st.step, (double)st.epoch, er.loss, er.recon, er.kl, now_s() - t_start };
                rc = vae_metrics_add_eval(mt, row);
                if (!rc) rc = vae_metrics_flush(mt);
            }
        }
        if ((cfg->sample_every > 0 && st.step % cfg->sample_every == 0) || last) {
            vae_defer_begin();
            if (rank == 0 && !rc) rc = vae_write_run_samples(&m, have_test ? &td : &d, cfg->out, st.step, cfg->seed);
            rc = vae_agree(rc, comm);
            if (rc) goto done;
        }
        if ((cfg->ckpt_every > 0 && st.step % cfg->ckpt_every == 0) || last || stop_now) {
            char path[VAE_PATH_LEN + 64] = "";
            double c0 = now_s();
            st.world_size = P;
            vae_defer_begin();
            /* Every row up to the checkpoint's step is in metrics.h5 before the checkpoint is: a resume continues it with no gap. */
            if (rank == 0 && !rc) rc = vae_metrics_flush(mt);
            if (rank == 0 && !rc) rc = vae_ckpt_save(cfg->out, &m, cfg, &st, cfg->keep, path, sizeof path);
            rc = vae_agree(rc, comm);
            if (rc) goto done;
            if (rank == 0) {
                if (tty) printf("\r\033[K");
                printf("checkpoint %s (%.2f s)\n", path, now_s() - c0);
                fflush(stdout);
            }
        }
        if (stop_now && !last) {
            if (rank == 0) {
                if (tty) printf("\r\033[K");
                printf("stopped by %s at step %ld after writing a checkpoint; resume with --resume auto (exit status %d)\n",
                       stop_name(g_stop),
                       st.step, VAE_EXIT_REQUEUE);
                fflush(stdout);
            }
            stopped = 1;
            break;
        }
    }
    vae_defer_begin();
    rc = vae_agree(pending, comm);
    if (rc) goto done;
    {
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        long rss = ru.ru_maxrss;
        MPI_Allreduce(MPI_IN_PLACE, &rss, 1, MPI_LONG, MPI_MAX, comm);
        if (rank == 0 && !stopped) {
            long n = st.step - steps_run;
            printf("finished: %ld steps, %.1f s, peak RSS %.1f MiB per rank, run directory %s\n", st.step,
                   now_s() - t_start, rss / 1024.0, cfg->out);
            if (n > 0) {
                printf("allreduce (%s", cfg->allreduce == VAE_AR_OVERLAP ? "overlap: MPI_Iallreduce buckets during backward"
                                         : cfg->allreduce == VAE_AR_SHM   ? "shm: node shared memory"
                                                                          : "blocking: one MPI_Allreduce");
                if (cfg->allreduce == VAE_AR_SHM)
                    printf(", %d node%s%s", shm.nleaders, shm.nleaders == 1 ? "" : "s",
                           shm.nleaders > 1 ? ", MPI_Allreduce across nodes" : "");
                printf("): %.3f ms per step waited on rank 0, %.1f%% of the step time\n", 1e3 * comm_all / n,
                       100.0 * comm_all / (busy_all > 0 ? busy_all : 1));
                printf("step on rank 0: %.3f ms = forward and backward %.3f + gradient reduction %.3f + update %.3f + "
                       "the rest %.3f (data, noise)\n",
                       1e3 * busy_all / n, 1e3 * fb_all / n, 1e3 * comm_all / n, 1e3 * upd_all / n,
                       1e3 * (busy_all - fb_all - comm_all - upd_all) / n);
            }
            fflush(stdout);
        }
    }
    rc = stopped ? VAE_ESTOP : VAE_OK;
done:
    if (own_grads) m.grads = own_grads; /* the model frees its own blocks */
    shm_unbind(&shm, &m);
    shm_free(&shm);
    if (mt) {
        vae_metrics_close(mt);
        free(mt);
    }
    unlock_run_dir();
    free(perm);
    free(idx);
    free(part);
    vae_model_free(&m);
    vae_data_close(&td);
    vae_data_close(&d);
    return rc;
}
