/*
 * train.c: the data-parallel training loop (see train.h and DESIGN.md):
 * set-up (resume, data, model, run directory), the loop of steps with what
 * happens between them (metrics, log, evaluation, samples, checkpoints),
 * and the summary.
 *
 * Step t of an epoch uses positions [t*B, (t+1)*B) of the epoch's global
 * permutation; rank r of P takes its shard of that range (shard.h; Bt is B,
 * or what is left in the last batch). The noise of a row is keyed by (seed,
 * step, position in the global batch), so the update does not depend on P.
 * Each rank adds grad/Bt of its rows into the gradient block; one reduction
 * (reduce.h) sums the block together with the step's loss terms, stop
 * requests and non-finite flags, so every rank takes the same decision after
 * the same single collective.
 */
#define _GNU_SOURCE
#include "mpivae/train.h"

#include "internal.h"
#include "mpivae/blas.h"
#include "mpivae/checkpoint.h"
#include "mpivae/comm.h"
#include "mpivae/metrics.h"
#include "mpivae/optim.h"
#include "mpivae/report.h"
#include "mpivae/rng.h"
#include "mpivae/rundir.h"
#include "mpivae/shard.h"
#include "mpivae/status.h"
#include "mpivae/tools.h"

#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
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

/*
 * The banner (every rank takes part; rank 0 gets the text, malloc'd, in *text,
 * and the session's facts for metrics.h5 in *ses, whose hosts it owns too).
 */
static int compose_banner(const vae_config *c, const vae_model *m, const vae_data *d, const vae_data *td, MPI_Comm comm,
                          const char *resumed_from, const vae_train_state *st, char **text, vae_metrics_session *ses)
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
    int per_node, lo_node, hi_node;
    MPI_Comm_size(node, &per_node);
    MPI_Allreduce(&per_node, &lo_node, 1, MPI_INT, MPI_MIN, comm); /* nodes of different sizes: the range */
    MPI_Allreduce(&per_node, &hi_node, 1, MPI_INT, MPI_MAX, comm);
    MPI_Comm_free(&node);
    *text = NULL;
    memset(ses, 0, sizeof *ses);
    char *buf = NULL, *hosts = NULL;
    size_t blen = 0, hlen = 0;
    FILE *out = rank == 0 ? open_memstream(&buf, &blen) : NULL;
    FILE *hout = rank == 0 ? open_memstream(&hosts, &hlen) : NULL;
    int rc = rank == 0 && (!all || !out || !hout) ? vae_error(VAE_ENOMEM, "cannot hold the banner") : VAE_OK;
    if (rank == 0 && !rc) {
        const char *omp = getenv("OMP_NUM_THREADS"), *ob = getenv("OPENBLAS_NUM_THREADS");
        const char *job = getenv("SLURM_JOB_ID"), *rs = getenv("SLURM_RESTART_COUNT");
        if (lo_node == hi_node)
            fprintf(out, "mpivae %s: world size %d, %d rank%s per node, hosts:", MPIVAE_VERSION, P, hi_node, hi_node == 1 ? "" : "s");
        else fprintf(out, "mpivae %s: world size %d, %d to %d ranks per node, hosts:", MPIVAE_VERSION, P, lo_node, hi_node);
        for (int i = 0; i < P; i++) {
            int dup = 0;
            for (int j = 0; j < i; j++) dup |= !strcmp(all + (size_t)i * MPI_MAX_PROCESSOR_NAME, all + (size_t)j * MPI_MAX_PROCESSOR_NAME);
            if (dup) continue;
            fprintf(out, " %s", all + (size_t)i * MPI_MAX_PROCESSOR_NAME);
            fprintf(hout, "%s%s", ses->nodes ? " " : "", all + (size_t)i * MPI_MAX_PROCESSOR_NAME);
            ses->nodes++;
        }
        char core[128];
        fprintf(out, "\nthreads: OMP_NUM_THREADS=%s OPENBLAS_NUM_THREADS=%s, OpenBLAS core %s\n", omp ? omp : "unset",
               ob ? ob : "unset", vae_blas_describe(core, sizeof core));
        if (job) fprintf(out, "slurm: job %s, restart count %s\n", job, rs ? rs : "0");
        ses->slurm_job = job ? atol(job) : 0;
        ses->slurm_restart = rs ? atol(rs) : 0;
        char where[96];
        if (d->in_memory) snprintf(where, sizeof where, "in shared memory, %d cop%s: one per node", d->copies, d->copies == 1 ? "y" : "ies");
        else snprintf(where, sizeof where, "streamed from the file%s", d->copies ? " on this node; other nodes hold it in shared memory" : "");
        fprintf(out, "data: %s:%s, %lld rows of %dx%dx%d (%s, %s)%s\n", d->file, d->dset, (long long)d->N, d->C, d->Hh, d->W,
               d->dtype == VAE_DT_U8 ? "uint8" : "float", where,
               c->binarize ? ", binarized (dynamic: a Bernoulli draw per pixel keyed by seed, epoch and row)" : "");
        if (td) fprintf(out, "held-out data: %s:%s, %lld rows%s\n", td->file, td->dset, (long long)td->N,
                       td->binarize ? ", binarized (" VAE_BINARIZE_FIXED_TEXT ")" : "");
        else fprintf(out, "held-out data: none (no evaluation; the tools need --data)\n");
        if (d->labels)
            fprintf(out, "labels: %s%s%s, %d classes\n", d->label_spec, td && td->labels ? ", held-out " : "",
                   td && td->labels ? td->label_spec : "", c->arch.classes);
        char arch[256];
        m->fam->describe(&c->arch, arch, sizeof arch);
        fprintf(out, "model: %s%s", m->fam->name, arch);
        if (c->capacity_max >= 0)
            fprintf(out, " capacity %g over %ld steps,", c->capacity_max, c->capacity_steps);
        if (m->n_latents > 0) /* a VAE; a classifier has none of these */
            fprintf(out, " latent %d, loss %s, beta %g,", m->Z, c->arch.loss == VAE_LOSS_MSE ? "mse" : "bce", c->beta);
        fprintf(out, " %zu parameters, %.3f MFLOP per sample per step\n", m->n_params, vae_model_flops_per_sample(m) / 1e6);
        fprintf(out, "training: %d epochs, global batch %d (%d..%d per rank), lr %g, seed %llu, run directory %s\n",
               c->epochs, c->batch, c->batch / P, (c->batch + P - 1) / P, c->lr, (unsigned long long)c->seed, c->out);
        char opts[2048];
        vae_config_describe(c, opts, sizeof opts);
        fprintf(out, "options: %s\n", opts);
        if (resumed_from) {
            fprintf(out, "resumed from %s at step %ld (epoch %ld, step %ld of the epoch)", resumed_from, st->step,
                   st->epoch + 1, st->epoch_step);
            if (st->world_size != P)
                fprintf(out, "; saved with %d ranks, now %d: the global data order continues unchanged, the summation order differs",
                       st->world_size, P);
            fprintf(out, "\n");
        }
    }
    if (out && fclose(out) != 0 && !rc) rc = vae_error(VAE_ENOMEM, "cannot hold the banner");
    if (hout && fclose(hout) != 0 && !rc) rc = vae_error(VAE_ENOMEM, "cannot hold the banner");
    free(all);
    if (rank == 0 && !rc) {
        *text = buf;
        ses->hosts = hosts;
        ses->banner = buf;
        ses->step = st->step;
        ses->start = (double)time(NULL);
        ses->ranks = P;
    } else {
        free(buf);
        free(hosts);
    }
    return rc;
}

static void fmt_duration(double s, char *buf, size_t len)
{
    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(buf, len, "%ldh%02ldm", t / 3600, (t / 60) % 60);
    else if (t >= 60) snprintf(buf, len, "%ldm%02lds", t / 60, t % 60);
    else snprintf(buf, len, "%lds", t);
}
int vae_evaluate(vae_model *m, vae_data *d, MPI_Comm comm, uint64_t seed, double beta,
                 int use_mean, int64_t limit, vae_eval_result *res)
{
    int rank, P;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &P);
    int64_t n = limit > 0 && limit < d->N ? limit : d->N;
    int64_t lo, hi;
    vae_shard(n, P, rank, 1, &lo, &hi);
    int64_t idx[4096];
    const int nt = m->n_terms;
    double sums[VAE_MAX_TERMS + 1] = { 0 }, terms[VAE_MAX_TERMS];
    int rc = VAE_OK;
    int chunk = m->max_batch < 4096 ? m->max_batch : 4096;
    vae_defer_begin();
    for (int64_t r = lo; r < hi && !rc; r += chunk) {
        int b = (int)(hi - r < chunk ? hi - r : chunk);
        for (int i = 0; i < b; i++) idx[i] = r + i;
        rc = vae_data_rows(d, idx, b, vae_model_input(m));
        if (rc) break;
        if (m->labels && !d->labels) {
            rc = vae_error(VAE_EINVAL, "model family '%s' needs the labels of '%s:%s', and none were opened", m->fam->name,
                           d->file, d->dset);
            break;
        }
        if (m->labels) vae_data_labels(d, idx, b, m->labels);
        if (!use_mean)
            for (int i = 0; i < b; i++)
                vae_rng_normal(seed, VAE_RNG_EVAL, 0, (uint64_t)(r + i), m->eps + (size_t)i * m->noise_dim, m->noise_dim);
        vae_pass p = { use_mean ? NULL : m->eps, b, (float)beta, -1.0f, 1.0f, 0, terms, NULL, 0.0f };
        vae_model_pass(m, &p);
        for (int t = 0; t < nt; t++) sums[t] += terms[t];
        sums[nt] += b;
    }
    rc = vae_agree(rc, comm);
    if (rc) return rc;
    MPI_Allreduce(MPI_IN_PLACE, sums, nt + 1, MPI_DOUBLE, MPI_SUM, comm);
    res->rows = (int64_t)sums[nt];
    for (int t = 0; t < nt; t++) res->terms[t] = sums[t] / sums[nt];
    res->loss = vae_model_loss(m, res->terms, beta);
    return VAE_OK;
}


/* Everything one run holds; the phases below fill and use it. */
typedef struct run {
    vae_config *cfg;
    MPI_Comm comm;
    int rank, P;
    uint64_t set;                 /* the fields given on the command line (config.h) */
    const char *resume;
    char ckpt[VAE_PATH_LEN + 64]; /* the checkpoint resumed from */
    int found;                    /* 1 when resuming from ckpt */
    vae_train_state st;
    vae_model m;
    vae_data d, td;
    int have_test, local_max;
    vae_metrics *mt;
    vae_reducer red;
    int64_t *perm, *idx;
    long S, total;                /* steps per epoch, steps of the whole run */
    float lr0[VAE_MAX_GROUPS];    /* each parameter group's learning rate before --lr-decay */
    double terms[VAE_MAX_TERMS];  /* this rank's term sums of the step */
    /* Test hooks (see hooks_init). */
    long stop_at, nan_a, nan_b, delay_ms;
    int tty;
    /* Timing. */
    double t_start, t_int, busy, comm_int, comm_all, busy_all, fb_all, upd_all;
    double report_after; /* now_s() before which an evaluation writes no page (report_step) */
    long rows_int, steps_int, steps_run;
    long over, clipped;           /* updates skipped over --skip-threshold, and clipped, in this process */
    int pending;                  /* a failure on rank 0 alone, sent with the next step */
} run;

/* What one step gave, as every rank read it from the summed block. */
typedef struct step_result {
    int Bt;
    double terms[VAE_MAX_TERMS]; /* per sample */
    double gnorm;
    float beta;
    double lr_factor; /* --lr-decay's factor of this step's learning rates */
    int stop_now, skipped; /* skipped: a non-finite value somewhere (the step is skipped) */
    int over;              /* the gradient norm was above --skip-threshold (the update is skipped) */
    double t_end;
} step_result;

/* 1. The checkpoint to resume from (rank 0 reads, everyone receives), merged into the configuration. */
static int resolve_resume(run *R)
{
    vae_config ck, *cfg = R->cfg;
    int rc = VAE_OK;
    /* Only rank 0 looks, so its messages (skipped checkpoints, a refusal) print once, directly. */
    if (R->rank == 0 && R->resume) {
        if (strcmp(R->resume, "auto") == 0) {
            R->found = vae_ckpt_find_latest(cfg->out, R->ckpt, sizeof R->ckpt);
            if (R->found < 0) rc = R->found;
        } else {
            rc = vae_ckpt_resolve(R->resume, R->ckpt, sizeof R->ckpt);
            R->found = rc ? 0 : 1;
        }
        if (R->found > 0) {
            rc = vae_ckpt_read_meta(R->ckpt, &ck, &R->st);
            if (!rc) rc = vae_config_check_resume(cfg, &ck, R->set, R->ckpt);
        }
    }
    if (R->rank == 0 && !R->resume) rc = vae_rundir_refuse_existing(cfg->out);
    char why[256]; /* a new run's options (a resume refuses any that differ from the checkpoint's) */
    if (R->rank == 0 && !rc && R->found <= 0 && vae_config_check_options(cfg, R->set, why, sizeof why))
        rc = vae_error(VAE_EINVAL, "%s", why);
    if (R->rank == 0 && !rc && R->found > 0) { /* a resume: what it changes must still combine */
        vae_config merged = *cfg;
        vae_config_merge_resume(&merged, &ck, R->set, R->resume);
        if (vae_config_check_options(&merged, 0, why, sizeof why))
            rc = vae_error(VAE_EINVAL, "resuming from %s: %s", R->ckpt, why);
    }
    vae_defer_begin();
    rc = vae_agree(rc, R->comm);
    if (rc) return rc;
    MPI_Bcast(&R->found, 1, MPI_INT, 0, R->comm);
    if (R->found > 0) {
        MPI_Bcast(R->ckpt, sizeof R->ckpt, MPI_CHAR, 0, R->comm);
        MPI_Bcast(&ck, sizeof ck, MPI_BYTE, 0, R->comm);
        MPI_Bcast(&R->st, sizeof R->st, MPI_BYTE, 0, R->comm);
        vae_config_merge_resume(cfg, &ck, R->set, R->resume);
    } else if (R->resume && strcmp(R->resume, "auto") == 0 && R->rank == 0) {
        printf("no checkpoint in %s/checkpoints: starting a new run\n", cfg->out);
    }
    return VAE_OK;
}

/* Where a data set named by the configuration is: the absolute path a checkpoint stored first. */
static int locate(run *R, const char *spec, const char *abs, const char *attr, const char *flag, const char *extra,
                  char *where, size_t len)
{
    if (vae_data_locate(spec, abs, where, len)) return VAE_OK;
    if (R->found > 0) {
        if (R->rank == 0)
            vae_error(VAE_EIO, "cannot find the %s '%s' named by checkpoint '%s' (attribute %s%s%s%s): give %s "
                      "FILE[:/dataset] where it is now%s", flag[2] == 't' ? "held-out data" : "training data", spec,
                      R->ckpt, attr, abs[0] ? "; nor '" : "", abs, abs[0] ? "'" : "", flag, extra);
        return VAE_EIO;
    }
    snprintf(where, len, "%s", spec); /* opening it says what is wrong */
    return VAE_OK;
}

/* 2a. The held-out data, when the run has some. */
static int open_test_data(run *R, const char *tspec)
{
    vae_config *cfg = R->cfg;
    int rc = vae_data_open(&R->td, tspec, R->comm, cfg->in_memory, R->local_max);
    if (vae_data_abs_spec(tspec, cfg->test_data_abs, sizeof cfg->test_data_abs)) cfg->test_data_abs[0] = '\0';
    if (!rc) rc = vae_data_check(&R->td, vae_config_data_range(cfg), R->comm);
    /* --binarize dynamic evaluates (and draws its reconstruction grids) on the fixed binarization of the rows. */
    if (!rc) vae_data_binarize_fixed(&R->td, cfg->binarize != VAE_BINARIZE_NONE);
    if (rc == VAE_ESTOP) rc = startup_stopped(R->comm, R->rank);
    if (!rc && R->td.D != R->d.D) {
        if (R->rank == 0)
            vae_error(VAE_EDATA, "test data '%s:%s' has rows of %dx%dx%d, training data %dx%dx%d", R->td.file, R->td.dset,
                      R->td.C, R->td.Hh, R->td.W, R->d.C, R->d.Hh, R->d.W);
        rc = VAE_EDATA;
    }
    if (!rc) R->have_test = 1;
    return rc;
}

/* 2. The data: opened, checked against the checkpoint, and the input shape taken from it. */
static int open_data(run *R)
{
    vae_config *cfg = R->cfg;
    vae_data *d = &R->d;
    int rank = R->rank;
    if (cfg->batch < R->P) {
        if (rank == 0)
            vae_error(VAE_EINVAL, "--batch %d is smaller than the %d ranks: every rank needs at least one sample per step", cfg->batch, R->P);
        return VAE_EINVAL;
    }
    if ((R->set & vae_config_bit(vae_config_field("eval-every"))) && cfg->eval_every > 0 && !cfg->test_data[0]) {
        if (rank == 0)
            vae_error(VAE_EINVAL, "--eval-every %ld needs held-out data, and this run has none (--test-data none, or "
                      "'%s' has no /test/images): give --test-data FILE:/dataset", cfg->eval_every, cfg->data);
        return VAE_EINVAL;
    }
    char dspec[VAE_PATH_LEN], tspec[VAE_PATH_LEN];
    int rc = locate(R, cfg->data, cfg->data_abs, "cfg.data", "--data", "", dspec, sizeof dspec);
    if (!rc && cfg->test_data[0])
        rc = locate(R, cfg->test_data, cfg->test_data_abs, "cfg.test_data", "--test-data", ", or --test-data none", tspec,
                    sizeof tspec);
    if (rc) return rc;
    R->local_max = (cfg->batch + R->P - 1) / R->P;
    rc = vae_data_open(d, dspec, R->comm, cfg->in_memory, R->local_max);
    if (rc) return rc;
    if (vae_data_abs_spec(dspec, cfg->data_abs, sizeof cfg->data_abs)) cfg->data_abs[0] = '\0';
    rc = vae_data_check(d, vae_config_data_range(cfg), R->comm);
    if (rc == VAE_ESTOP) rc = startup_stopped(R->comm, rank);
    if (rc) return rc;
    if (R->found > 0) {
        if (d->C != cfg->arch.C || d->Hh != cfg->arch.Hh || d->W != cfg->arch.W) {
            if (rank == 0)
                vae_error(VAE_EDATA, "'%s:%s' has rows of %dx%dx%d but the checkpoint '%s' was trained on %dx%dx%d",
                          d->file, d->dset, d->C, d->Hh, d->W, R->ckpt, cfg->arch.C, cfg->arch.Hh, cfg->arch.W);
            return VAE_EDATA;
        }
    } else {
        cfg->arch.C = d->C;
        cfg->arch.Hh = d->Hh;
        cfg->arch.W = d->W;
    }
    /* The data order continues only over the same rows: a resume refuses data that grew or shrank. */
    vae_train_state *st = &R->st;
    if (R->found > 0 && ((st->data_rows > 0 && st->data_rows != d->N) || st->epoch_step * (int64_t)cfg->batch >= d->N)) {
        if (rank == 0)
            vae_error(VAE_EDATA, "'%s:%s' has %lld rows, but the checkpoint '%s' was saved %s%ld%s at row %lld of epoch %ld: "
                      "the data changed since; resume with the data it was trained on", d->file, d->dset, (long long)d->N,
                      R->ckpt, st->data_rows > 0 ? "on " : "(rows not recorded", st->data_rows, st->data_rows > 0 ? " rows," : ")",
                      (long long)st->epoch_step * cfg->batch, st->epoch + 1);
        return VAE_EDATA;
    }
    st->data_rows = (long)d->N;
    if (cfg->batch > d->N) {
        if (rank == 0)
            vae_error(VAE_EINVAL, "--batch %d is larger than the %lld rows of '%s:%s'", cfg->batch, (long long)d->N, d->file, d->dset);
        return VAE_EINVAL;
    }
    if (cfg->test_data[0]) rc = open_test_data(R, tspec);
    if (!rc) rc = startup_stopped(R->comm, rank);
    return rc;
}

/* 2b. A family that learns from labels: the labels of the training and held-out rows, and the number of classes. */
static int open_labels(run *R)
{
    vae_config *cfg = R->cfg;
    const vae_family *fam = vae_family_get(cfg->arch.kind);
    if (!fam || !fam->labeled) return VAE_OK;
    char spec[VAE_PATH_LEN + 300], what[VAE_PATH_LEN + 96];
    if (cfg->labels[0]) snprintf(spec, sizeof spec, "%s", cfg->labels);
    else vae_data_labels_beside(R->d.file, R->d.dset, spec, sizeof spec);
    int rc = vae_data_open_labels(&R->d, spec, R->comm);
    if (rc) return rc;
    if (R->found > 0) snprintf(what, sizeof what, "checkpoint '%s' has %d classes", R->ckpt, cfg->arch.classes);
    else if (cfg->arch.classes > 0) snprintf(what, sizeof what, "--classes %d", cfg->arch.classes);
    else if (R->d.label_max < 1) {
        if (R->rank == 0)
            vae_error(VAE_EDATA, "labels '%s' hold only the class 0: a classifier needs 2 classes or more (or --classes K)",
                      R->d.label_spec);
        return VAE_EDATA;
    } else {
        cfg->arch.classes = R->d.label_max + 1;
        snprintf(what, sizeof what, "the training labels '%.900s' have %d classes (their largest value + 1)", R->d.label_spec,
                 cfg->arch.classes);
    }
    rc = vae_data_check_classes(&R->d, cfg->arch.classes, what, R->comm);
    if (rc || !R->have_test) return rc;
    if (cfg->test_labels[0]) snprintf(spec, sizeof spec, "%s", cfg->test_labels);
    else vae_data_labels_beside(R->td.file, R->td.dset, spec, sizeof spec);
    rc = vae_data_open_labels(&R->td, spec, R->comm);
    if (!rc) rc = vae_data_check_classes(&R->td, cfg->arch.classes, what, R->comm);
    return rc;
}

/* 3. The model: keyed init (or the checkpoint's values), then a check that all replicas agree. */
static int build_model(run *R)
{
    vae_model *m = &R->m;
    vae_config *cfg = R->cfg;
    int rc = VAE_OK;
    vae_defer_begin();
    if (R->found > 0 && R->rank == 0) { /* the checkpoint's tensors match its attributes before the model is allocated */
        rc = vae_model_plan(m, &cfg->arch);
        if (!rc) rc = vae_ckpt_check_tensors(R->ckpt, m, VAE_CKPT_ALL);
        vae_model_free(m);
    }
    if (!rc) rc = vae_model_init(m, &cfg->arch, R->local_max);
    rc = vae_agree(rc, R->comm);
    if (rc) return rc;
    vae_model_init_params(m, cfg->seed);
    if (R->found > 0) {
        vae_defer_begin();
        rc = R->rank == 0 ? vae_ckpt_read_tensors(R->ckpt, m, VAE_CKPT_ALL) : VAE_OK;
        rc = vae_agree(rc, R->comm);
        if (rc) return rc;
        MPI_Bcast(m->params, (int)m->n_params, MPI_FLOAT, 0, R->comm);
        MPI_Bcast(m->m, (int)m->n_params, MPI_FLOAT, 0, R->comm);
        MPI_Bcast(m->v, (int)m->n_params, MPI_FLOAT, 0, R->comm);
        for (int g = 0; g < m->n_groups; g++) MPI_Bcast(&m->groups[g].t, 1, MPI_LONG, 0, R->comm);
    }
    /* --ema: the moving average starts at the initial parameters, or continues the checkpoint's (/ema). */
    int had_ema = m->ema != NULL;
    MPI_Bcast(&had_ema, 1, MPI_INT, 0, R->comm);
    if (cfg->ema > 0.0) {
        vae_defer_begin();
        rc = R->found > 0 && !had_ema
                 ? vae_error(VAE_EDATA, "checkpoint '%s' has no group '/ema', though its run averages the parameters "
                             "(cfg.ema %g)", R->ckpt, cfg->ema)
                 : VAE_OK;
        if (!rc && !m->ema && !(m->ema = vae_model_alloc(m->n_params)))
            rc = vae_error(VAE_ENOMEM, "cannot allocate the moving average of %zu parameters", m->n_params);
        rc = vae_agree(rc, R->comm);
        if (rc) return rc;
        if (R->found > 0) MPI_Bcast(m->ema, (int)m->n_params, MPI_FLOAT, 0, R->comm);
        else memcpy(m->ema, m->params, m->n_params * sizeof(float));
    } else {
        free(m->ema);
        m->ema = NULL;
    }
    vae_adam adam = { (float)cfg->lr, (float)cfg->beta1, (float)cfg->beta2, (float)cfg->adam_eps, 1.0f };
    vae_model_set_adam(m, &adam);
    /* --dec-lr and --disc-lr: the groups of those names (a VAE-GAN's decoder and discriminator). */
    for (int g = 0; g < m->n_groups; g++) {
        if (!strcmp(m->groups[g].name, "dec") && cfg->dec_lr > 0) m->groups[g].adam.lr = (float)cfg->dec_lr;
        if (!strcmp(m->groups[g].name, "disc") && cfg->disc_lr > 0) m->groups[g].adam.lr = (float)cfg->disc_lr;
        R->lr0[g] = m->groups[g].adam.lr;
    }
    uint64_t h = params_hash(m->params, m->n_params), hmin = h, hmax = h;
    MPI_Allreduce(MPI_IN_PLACE, &hmin, 1, MPI_UINT64_T, MPI_MIN, R->comm);
    MPI_Allreduce(MPI_IN_PLACE, &hmax, 1, MPI_UINT64_T, MPI_MAX, R->comm);
    if (hmin != hmax) return vae_error(VAE_EMPI, "ranks hold different initial parameters (checksum mismatch)");
    return startup_stopped(R->comm, R->rank);
}

/* 4. The run directory (rank 0): lock, metrics with this process's session; then the banner. */
static int open_run_dir(run *R)
{
    vae_config *cfg = R->cfg;
    char *banner = NULL;
    vae_metrics_session ses;
    vae_defer_begin();
    int rc = compose_banner(cfg, &R->m, &R->d, R->have_test ? &R->td : NULL, R->comm, R->found > 0 ? R->ckpt : NULL, &R->st,
                            &banner, &ses);
    if (R->rank == 0 && !rc) {
        rc = vae__mkdir_p(cfg->out);
        if (!rc) rc = vae_rundir_lock(cfg->out);
        if (!rc) vae_rundir_remove_stale_tmp(cfg->out);
        if (!rc) {
            R->mt = malloc(sizeof *R->mt);
            rc = R->mt ? vae_metrics_open(R->mt, cfg->out, R->st.step, &R->m, &ses)
                       : vae_error(VAE_ENOMEM, "cannot allocate metrics buffers");
        }
    }
    rc = vae_agree(rc, R->comm);
    if (!rc && banner) {
        fputs(banner, stdout);
        fflush(stdout);
    }
    free(banner);
    free(ses.hosts);
    return rc;
}

/*
 * Test hooks: MPIVAE_TEST_STOP_AT_STEP=N acts as a stop signal during
 * global step N on every rank; MPIVAE_TEST_NAN_STEPS=A:B makes the last
 * rank's loss and gradients NaN during global steps A..B;
 * MPIVAE_TEST_STEP_DELAY_MS=D makes every rank sleep D ms after each step,
 * so that the job-script tests' runs last long enough on any machine.
 */
static void hooks_init(run *R)
{
    const char *stop_env = getenv("MPIVAE_TEST_STOP_AT_STEP");
    R->stop_at = stop_env ? atol(stop_env) : -1;
    R->nan_a = R->nan_b = -1;
    const char *nan_env = getenv("MPIVAE_TEST_NAN_STEPS");
    if (nan_env && sscanf(nan_env, "%ld:%ld", &R->nan_a, &R->nan_b) != 2) R->nan_a = R->nan_b = -1;
    const char *delay_env = getenv("MPIVAE_TEST_STEP_DELAY_MS");
    R->delay_ms = delay_env ? atol(delay_env) : 0;
    /* A progress bar on a terminal; not under mpirun, whose ranks write to a pseudo-terminal
     * even when mpirun's own output goes to a file. */
    R->tty = R->rank == 0 && isatty(STDOUT_FILENO) && !getenv("OMPI_COMM_WORLD_SIZE");
}

/* 5. What the loop needs: the permutation, the reduction, the hooks. */
static int loop_init(run *R)
{
    vae_config *cfg = R->cfg;
    const int64_t N = R->d.N;
    R->S = vae_steps_per_epoch(N, cfg->batch);
    R->total = cfg->max_steps > 0 && cfg->max_steps < R->S * cfg->epochs ? cfg->max_steps : R->S * cfg->epochs;
    R->perm = malloc((size_t)N * sizeof(int64_t));
    R->idx = malloc((size_t)R->local_max * sizeof(int64_t));
    if (!R->perm || !R->idx) return vae_error(VAE_ENOMEM, "cannot allocate the permutation of %lld rows", (long long)N);
    make_permutation(R->perm, N, cfg->seed, R->st.epoch);
    hooks_init(R);
    R->t_start = R->t_int = now_s();
    R->steps_run = R->st.step;
    int rc = vae_reducer_init(&R->red, cfg->allreduce, &R->m, R->comm);
    if (rc) return rc;
    if (R->rank == 0 && R->st.step >= R->total) printf("training already finished at step %ld\n", R->st.step);
    return VAE_OK;
}

/* The KL weight of step `step` (0-based): beta after a linear warm-up. */
static float beta_at(const vae_config *cfg, long step)
{
    float beta_t = (float)cfg->beta;
    if (cfg->warmup > 0 && step < cfg->warmup) beta_t = (float)(cfg->beta * (double)(step + 1) / cfg->warmup);
    return beta_t;
}

/* The KL capacity of step `step` (< 0: off): rising linearly to C_max. */
static float capacity_at(const vae_config *cfg, long step)
{
    if (cfg->capacity_max < 0.0) return -1.0f;
    return (float)(cfg->capacity_steps > 0 && step < cfg->capacity_steps
                       ? cfg->capacity_max * (double)step / cfg->capacity_steps
                       : cfg->capacity_max);
}

/*
 * Says why a step's update is skipped (non-finite values, or the gradient norm
 * over --skip-threshold), and stops the run when more than --max-skips were in
 * a row, of either kind: a run whose every update is skipped would go on forever.
 */
static int skip_step(run *R, const step_result *s)
{
    vae_train_state *st = &R->st;
    const vae_model *f = &R->m;
    const vae_config *cfg = R->cfg;
    st->skips++;
    if (s->over) R->over++;
    if (R->rank == 0 && s->over)
        vae_warn("step %ld: gradient norm %g is above --skip-threshold %g; update skipped (%ld so far in this process, "
                 "%ld in a row, limit %d)", st->step + 1, s->gnorm, cfg->skip_threshold, R->over, st->skips,
                 cfg->max_skips);
    else if (R->rank == 0) {
        const char *what = "gradient";
        char vals[512] = "";
        for (int i = 0; i < f->n_terms; i++) {
            if (!strcmp(what, "gradient") && !isfinite(s->terms[i]))
                what = !strcmp(f->terms[i].name, "recon") ? "reconstruction loss"
                       : f->terms[i].kind == VAE_TERM_BETA  ? "KL term"
                                                            : f->terms[i].name;
            size_t l = strlen(vals);
            snprintf(vals + l, sizeof vals - l, "%s %g, ", f->terms[i].name, s->terms[i]);
        }
        vae_warn("step %ld: non-finite %s (%sgradient norm %g); step skipped (%ld in a row, limit %d)", st->step + 1, what,
                 vals, s->gnorm, st->skips, R->cfg->max_skips);
    }
    if (st->skips <= cfg->max_skips) return VAE_OK;
    if (R->rank == 0 && s->over)
        vae_error(VAE_EINVAL, "stopping at step %ld: %ld consecutive updates skipped (gradient norm over --skip-threshold "
                  "%g), more than --max-skips %d allows (raise --skip-threshold above the norms of training, or resume "
                  "from an earlier checkpoint with a lower learning rate)", st->step + 1, st->skips, cfg->skip_threshold,
                  cfg->max_skips);
    else if (R->rank == 0)
        vae_error(VAE_ENONFINITE, "stopping at step %ld: %ld consecutive steps skipped, this one for non-finite values, "
                  "more than --max-skips %d allows (lower --lr, check the data)", st->step + 1, st->skips, cfg->max_skips);
    return s->over ? VAE_EINVAL : VAE_ENONFINITE;
}

/*
 * One step on every rank: the rank's rows and noise, forward and backward,
 * the reduction, and the update (or a skip, agreed through the summed flags).
 */
static int train_step(run *R, step_result *s)
{
    vae_config *cfg = R->cfg;
    vae_model *m = &R->m;
    vae_train_state *st = &R->st;
    const int B = cfg->batch, nt = m->n_terms;
    const size_t NP = m->n_params;
    double t0 = now_s();
    long pos = st->epoch_step * (long)B;
    int Bt = (int)(R->d.N - pos < B ? R->d.N - pos : B);
    int64_t lo, hi;
    vae_shard(Bt, R->P, R->rank, 1, &lo, &hi);
    int nloc = (int)(hi - lo);
    for (int i = 0; i < nloc; i++) R->idx[i] = R->perm[pos + lo + i];
    int lrc = vae_data_rows(&R->d, R->idx, nloc, vae_model_input(m));
    if (m->labels) vae_data_labels(&R->d, R->idx, nloc, m->labels);
    /* --binarize dynamic: a new draw of each row every epoch, keyed by (seed, epoch, row): the same on any P. */
    if (!lrc && cfg->binarize != VAE_BINARIZE_NONE)
        vae_data_binarize_rows(vae_model_input(m), R->idx, nloc, m->D, cfg->seed, (uint64_t)st->epoch);
    for (int i = 0; i < nloc; i++)
        vae_rng_normal(cfg->seed, VAE_RNG_EPS, (uint64_t)st->step, (uint64_t)(lo + i), m->eps + (size_t)i * m->noise_dim,
                       m->noise_dim);
    float beta_t = beta_at(cfg, st->step);
    float *gx = vae_reducer_begin(&R->red);
    if (R->stop_at >= 0 && st->step + 1 == R->stop_at) vae_set_stop_requested(1);
    int inject_nan = R->rank == R->P - 1 && st->step + 1 >= R->nan_a && st->step + 1 <= R->nan_b;
    gx[VAE_GX_COUNT] = (float)nloc;
    gx[VAE_GX_STOP] = g_stop ? 1.0f : 0.0f;
    gx[VAE_GX_FAIL] = lrc || R->pending ? 1.0f : 0.0f;
    memset(R->terms, 0, sizeof R->terms);
    vae_reducer_set_terms(&R->red, R->terms);
    if (inject_nan) m->grads[0] = NAN; /* with overlap, bucket 0 is reduced last */
    double f0 = now_s();
    if (nloc > 0 && !lrc) {
        vae_pass p = { m->eps, nloc, beta_t, capacity_at(cfg, st->step), 1.0f / Bt, 1, R->terms, NULL, (float)cfg->free_bits };
        vae_model_pass(m, &p);
    } else {
        vae_reducer_no_rows(&R->red);
    }
    if (inject_nan) R->terms[0] = NAN; /* too late for overlap's first bucket: the gradient norm catches it */
    double c0 = now_s();
    R->fb_all += c0 - f0;
    const float *gsum;
    double sumsq = 0.0;
    int mrc = vae_reducer_sum(&R->red, &gsum, &sumsq);
    double u0 = now_s(); /* the update: Adam, or a skip */
    R->comm_int += u0 - c0;
    R->comm_all += u0 - c0;
    if (mrc != MPI_SUCCESS) return vae_mpi_error(mrc, "the allreduce of the gradients");
    gx = (float *)gsum + NP;
    if (gx[VAE_GX_FAIL] > 0.0f) return VAE_EIO; /* a rank failed to read or write; it said why */
    /* Everything read from the summed block is read before the barrier that frees it. */
    s->Bt = Bt;
    s->beta = beta_t;
    s->gnorm = sqrt(sumsq);
    s->stop_now = gx[VAE_GX_STOP] > 0.0f;
    for (int i = 0; i < nt; i++) s->terms[i] = gx[VAE_GX_TERMS + i] / Bt;
    s->skipped = gx[VAE_GX_BAD] > 0.0f || !isfinite(s->gnorm);
    /* The norm is of the summed gradient, the same on every rank: so are these decisions. */
    s->over = !s->skipped && cfg->skip_threshold > 0.0 && s->gnorm > cfg->skip_threshold;
    float gs = !s->skipped && cfg->clip > 0.0 && s->gnorm > cfg->clip ? (float)(cfg->clip / s->gnorm) : 1.0f;
    R->clipped += gs < 1.0f && !s->over;
    unsigned char apply[VAE_MAX_GROUPS];
    for (int g = 0; g < m->n_groups; g++) {
        apply[g] = !s->skipped && !s->over;
        m->groups[g].adam.gscale = gs;
    }
    if (apply[0] && m->fam->select_groups) m->fam->select_groups(m, s->terms, apply);
    for (int g = 0; g < m->n_groups; g++) m->groups[g].t += apply[g];
    /* --lr-decay: the factor of this step, from the global step alone (so a resume continues it exactly). */
    s->lr_factor = vae_lr_factor(st->step, cfg->lr_decay, cfg->lr_floor);
    for (int g = 0; g < m->n_groups; g++) m->groups[g].adam.lr = (float)(R->lr0[g] * s->lr_factor);
    int rc = VAE_OK;
    if (s->skipped || s->over) rc = skip_step(R, s);
    else {
        st->skips = 0;
        st->adam_t++;
    }
    if (!rc) vae_reducer_update(&R->red, apply);
    vae_reducer_end(&R->red);
    if (rc) return rc;
    if (m->ema && !s->skipped && !s->over) vae_ema_update(m->ema, m->params, NP, cfg->ema, st->adam_t);
    R->upd_all += now_s() - u0;
    st->step++;
    st->epoch_step++;
    if (st->epoch_step == R->S) {
        st->epoch++;
        st->epoch_step = 0;
        if (st->step < R->total) make_permutation(R->perm, R->d.N, cfg->seed, st->epoch);
    }
    s->t_end = now_s();
    R->busy += s->t_end - t0;
    R->busy_all += s->t_end - t0;
    return VAE_OK;
}

/* Rank 0: the step's metrics row, and the log line every log_every steps. */
static int log_step(run *R, const step_result *s, int last)
{
    vae_config *cfg = R->cfg;
    const vae_model *f = &R->m;
    vae_train_state *st = &R->st;
    int rc = VAE_OK;
    R->rows_int += s->Bt;
    R->steps_int++;
    double loss = vae_model_loss(f, s->terms, s->beta);
    if (R->rank == 0) {
        double sps = R->rows_int / (R->busy > 0 ? R->busy : 1e-9);
        double row[VAE_METRICS_MAX_FIELDS];
        int k = 0;
        row[k++] = (double)st->step;
        row[k++] = (double)st->epoch;
        row[k++] = loss;
        for (int i = 0; i < f->n_terms; i++) row[k++] = s->terms[i];
        row[k++] = s->beta;
        row[k++] = cfg->lr * s->lr_factor;
        row[k++] = s->gnorm;
        row[k++] = s->skipped ? 1.0 : s->over ? 2.0 : 0.0;
        row[k++] = sps;
        row[k++] = s->t_end - R->t_start;
        rc = vae_metrics_add_train(R->mt, row); /* fails only when memory runs out */
    }
    if (cfg->log_every > 0 && (st->step % cfg->log_every == 0 || last)) {
        if (R->rank == 0) {
            double sps = R->rows_int / (R->busy > 0 ? R->busy : 1e-9);
            char eta[32], terms[512] = "";
            fmt_duration((R->total - st->step) * (s->t_end - R->t_int) / (R->rows_int > 0 ? (double)R->rows_int / cfg->batch : 1),
                         eta, sizeof eta);
            for (int i = 0; i < f->n_terms; i++) {
                size_t l = strlen(terms);
                snprintf(terms + l, sizeof terms - l, " %s %.4f", f->terms[i].name, s->terms[i]);
            }
            if (R->tty) printf("\r\033[K");
            char lr[48] = ""; /* with --lr-decay: the learning rate of the step */
            if (cfg->lr_decay > 0) snprintf(lr, sizeof lr, " lr %.3g", cfg->lr * s->lr_factor);
            printf("step %ld/%ld epoch %ld loss %.4f%s beta %.3g%s | %.0f samples/s | allreduce %.2f ms/step | ETA %s\n",
                   st->step, R->total, st->epoch_step == 0 ? st->epoch : st->epoch + 1, loss, terms, s->beta, lr, sps,
                   1e3 * R->comm_int / (R->steps_int ? R->steps_int : 1), eta);
            fflush(stdout);
            if (!rc) rc = vae_metrics_flush(R->mt);
        }
        R->rows_int = 0;
        R->steps_int = 0;
        R->comm_int = 0.0;
        R->busy = 0.0;
        R->t_int = now_s();
    } else if (R->tty && st->step % 10 == 0) {
        int w = 30, fl = (int)((double)st->step / R->total * w);
        printf("\r[%.*s%*s] %5.1f%% step %ld/%ld", fl, "==============================", w - fl, "",
               100.0 * st->step / R->total, st->step, R->total);
        fflush(stdout);
    }
    return rc;
}

/* Every rank: the held-out evaluation; rank 0 logs it. */
/*
 * With --ema the evaluations and the sample grids see the averaged
 * parameters, as the tools do: points the model at them and returns the
 * training parameters, which the caller puts back.
 */
static float *use_average(vae_model *m)
{
    float *raw = m->params;
    if (m->ema) m->params = m->ema;
    return raw;
}

static int eval_step(run *R)
{
    vae_config *cfg = R->cfg;
    const vae_model *f = &R->m;
    vae_eval_result er;
    float *raw = use_average(&R->m);
    int rc = vae_evaluate(&R->m, &R->td, R->comm, cfg->seed, cfg->beta, 0, 0, &er);
    R->m.params = raw;
    if (rc || R->rank != 0) return rc; /* a failed evaluation fails on every rank */
    char terms[512] = "";
    double row[VAE_METRICS_MAX_FIELDS];
    int k = 0;
    row[k++] = (double)R->st.step;
    row[k++] = (double)R->st.epoch;
    row[k++] = er.loss;
    for (int i = 0; i < f->n_terms; i++) {
        size_t l = strlen(terms);
        snprintf(terms + l, sizeof terms - l, " %s %.4f", f->terms[i].name, er.terms[i]);
        row[k++] = er.terms[i];
    }
    row[k++] = now_s() - R->t_start;
    printf("eval step %ld: test loss %.4f%s %s (%lld rows)\n", R->st.step, er.loss, terms, vae_loss_unit(cfg->arch.loss),
           (long long)er.rows);
    double acc = vae_eval_accuracy(f, &er);
    if (acc >= 0) printf("test accuracy: %.2f%% (%lld rows)\n", 100.0 * acc, (long long)er.rows);
    fflush(stdout);
    rc = vae_metrics_add_eval(R->mt, row);
    if (!rc) rc = vae_metrics_flush(R->mt);
    if (rc) R->pending = rc; /* rank 0 alone: sent with the next step's reduction */
    return VAE_OK;
}

/* Every rank: a checkpoint (rank 0 writes it, after the metrics rows up to its step). */
static int checkpoint_step(run *R, int rc0)
{
    char path[VAE_PATH_LEN + 64] = "";
    double c0 = now_s();
    int rc = rc0;
    R->st.world_size = R->P;
    vae_defer_begin();
    /* Every row up to the checkpoint's step is in metrics.h5 before the checkpoint is: a resume continues it with no gap. */
    if (R->rank == 0 && !rc) rc = vae_metrics_flush(R->mt);
    if (R->rank == 0 && !rc) rc = vae_ckpt_save(R->cfg->out, &R->m, R->cfg, &R->st, R->cfg->keep, path, sizeof path);
    rc = vae_agree(rc, R->comm);
    if (rc) return rc;
    if (R->rank == 0) {
        if (R->tty) printf("\r\033[K");
        printf("checkpoint %s (%.2f s)\n", path, now_s() - c0);
        fflush(stdout);
    }
    return VAE_OK;
}

/*
 * Rank 0: DIR/report.html from the metrics in memory. final: the run's last
 * page (its end, or a stop): written whatever the rate limit, and it does not
 * reload itself as the pages written during the run do. A failure is a
 * warning: the page can be written again with `mpivae report DIR`.
 */
static void report_step(run *R, int final)
{
    if (R->rank != 0) return;
    /* At most one page per 20 times the last one's cost: the page never takes more than 5% of the run. */
    if (!final && now_s() < R->report_after) return;
    char out[VAE_PATH_LEN + 16], msg[512] = "";
    snprintf(out, sizeof out, "%s/report.html", R->cfg->out);
    const char *dirs[1] = { R->cfg->out };
    double t0 = now_s();
    vae_defer_begin();
    int rc = vae_report_write(out, dirs, 1, R->mt, final ? 0 : 60);
    if (rc) vae_defer_take(msg, sizeof msg);
    vae_defer_end(0);
    if (R->tty) printf("\r\033[K");
    double t1 = now_s();
    R->report_after = t1 + 20.0 * (t1 - t0);
    if (rc) vae_warn("the run report was not written (%s); training goes on", msg);
    else printf("report %s (%.3f s)\n", out, t1 - t0);
    fflush(stdout);
}

/*
 * Between steps: metrics, log, evaluation, samples, checkpoints, and the
 * report after an evaluation and at the end. Returns 0,
 * VAE_ESTOP when a stop request ended the run after its checkpoint, or an
 * error.
 */
static int between_steps(run *R, const step_result *s)
{
    vae_config *cfg = R->cfg;
    const long step = R->st.step;
    const int last = step == R->total;
    if (R->delay_ms > 0) {
        struct timespec ts = { R->delay_ms / 1000, (R->delay_ms % 1000) * 1000000L };
        nanosleep(&ts, NULL);
    }
    int rc = log_step(R, s, last);
    /* A failure on rank 0 alone travels in the next step's reduction. */
    if (rc) {
        R->pending = rc;
        rc = VAE_OK;
    }
    int evaluated = R->have_test && ((cfg->eval_every > 0 && step % cfg->eval_every == 0) || last);
    if (evaluated) {
        rc = eval_step(R);
        if (rc) return rc;
    }
    /* The checkpoint first: a failure to write the sample grids must not cost the run its work. */
    if ((cfg->ckpt_every > 0 && step % cfg->ckpt_every == 0) || last || s->stop_now) {
        rc = checkpoint_step(R, rc);
        if (rc) return rc;
    }
    if ((cfg->sample_every > 0 && step % cfg->sample_every == 0) || last) {
        vae_defer_begin();
        float *raw = use_average(&R->m);
        if (R->rank == 0 && !rc) rc = vae_write_run_samples(&R->m, R->have_test ? &R->td : &R->d, cfg->out, step, cfg->seed);
        R->m.params = raw;
        rc = vae_agree(rc, R->comm);
        if (rc) return rc;
    }
    if (evaluated || last || s->stop_now) report_step(R, last || s->stop_now);
    if (s->stop_now && !last) {
        if (R->rank == 0) {
            if (R->tty) printf("\r\033[K");
            printf("stopped by %s at step %ld after writing a checkpoint; resume with --resume auto (exit status %d)\n",
                   stop_name(g_stop), step, VAE_EXIT_REQUEUE);
            fflush(stdout);
        }
        return VAE_ESTOP;
    }
    return rc;
}

/* 6. The summary: peak memory, and where rank 0's step time went. */
static void summary(run *R, int stopped)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    long rss = ru.ru_maxrss;
    MPI_Allreduce(MPI_IN_PLACE, &rss, 1, MPI_LONG, MPI_MAX, R->comm);
    if (R->rank != 0 || stopped) return;
    long n = R->st.step - R->steps_run;
    printf("finished: %ld steps, %.1f s, peak RSS %.1f MiB per rank, run directory %s\n", R->st.step, now_s() - R->t_start,
           rss / 1024.0, R->cfg->out);
    if (n > 0) {
        char how[160];
        vae_reducer_describe(&R->red, how, sizeof how);
        printf("allreduce (%s): %.3f ms per step waited on rank 0, %.1f%% of the step time\n", how, 1e3 * R->comm_all / n,
               100.0 * R->comm_all / (R->busy_all > 0 ? R->busy_all : 1));
        printf("step on rank 0: %.3f ms = forward and backward %.3f + gradient reduction %.3f + update %.3f + "
               "the rest %.3f (data, noise)\n",
               1e3 * R->busy_all / n, 1e3 * R->fb_all / n, 1e3 * R->comm_all / n, 1e3 * R->upd_all / n,
               1e3 * (R->busy_all - R->fb_all - R->comm_all - R->upd_all) / n);
    }
    if (R->cfg->skip_threshold > 0.0 || R->cfg->clip > 0.0)
        printf("gradient norm: %ld updates skipped over --skip-threshold, %ld clipped to --clip, of %ld steps\n", R->over,
               R->clipped, n);
    fflush(stdout);
}

static void run_free(run *R)
{
    vae_reducer_free(&R->red);
    if (R->mt) {
        vae_metrics_close(R->mt);
        free(R->mt);
    }
    vae_rundir_unlock();
    free(R->perm);
    free(R->idx);
    vae_model_free(&R->m);
    vae_data_close(&R->td);
    vae_data_close(&R->d);
}

int vae_train_run(vae_config *cfg, const char *resume, uint64_t set, MPI_Comm comm)
{
    run R;
    memset(&R, 0, sizeof R);
    R.cfg = cfg;
    R.comm = comm;
    R.set = set;
    R.resume = resume;
    MPI_Comm_rank(comm, &R.rank);
    MPI_Comm_size(comm, &R.P);
    /* From here on a stop request is kept and honoured after the first step. */
    install_signals();
    int rc = resolve_resume(&R);
    if (rc) return rc;
    rc = open_data(&R);
    if (!rc) rc = open_labels(&R);
    if (!rc) rc = build_model(&R);
    if (!rc) rc = open_run_dir(&R);
    if (!rc) rc = loop_init(&R);
    while (!rc && R.st.step < R.total) {
        step_result s;
        rc = train_step(&R, &s);
        if (!rc) rc = between_steps(&R, &s);
    }
    if (!rc || rc == VAE_ESTOP) { /* a failure on rank 0 alone after the last step */
        vae_defer_begin();
        int prc = vae_agree(R.pending, comm);
        if (prc) rc = prc;
    }
    if (!rc || rc == VAE_ESTOP) summary(&R, rc == VAE_ESTOP);
    run_free(&R);
    return rc;
}
