/*
 * fid.c: `mpivae fid`: the Frechet distance between a classifier's features
 * of two sets of images (rows of a data set, a VAE's prior samples or its
 * reconstructions), and the floor: the distance between the classifier's
 * training data and its held-out data. The math is fid.h's.
 */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"

#include "mpivae/comm.h"
#include "mpivae/fid.h"
#include "mpivae/status.h"

#include <limits.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *fid_help =
    "usage: mpirun -np P mpivae fid --classifier CKPT --a SET --b SET [--n N] [--seed S]\n"
    "                               [--data FILE[:/dataset]] [--limit N] [--no-floor]\n"
    "\n"
    "Prints the Frechet distance (FID) between the features of two sets of images, the values of\n"
    "the classifier's layer before its output,\n"
    "  FID = |mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr((S_a S_b)^(1/2)),\n"
    "with mu and S each set's feature mean and unbiased covariance (divided by N - 1), and the\n"
    "same distance between the classifier's training rows and its held-out rows: the floor.\n"
    "\n"
    "--classifier CKPT   a checkpoint (or run directory) of a family with features (a classifier)\n"
    "--a SET, --b SET    each one of:\n"
    "    FILE[:/dataset]   the rows of an HDF5 data set (FILE alone is FILE:/train/images), of the\n"
    "                      classifier's input shape, values as stored\n"
    "    samples:CKPT      N prior samples of a VAE checkpoint, z ~ N(0, I): the images of\n"
    "                      'mpivae sample --ckpt CKPT --seed S --n N'\n"
    "    recon:CKPT        the VAE's reconstructions (z = mu) of the rows of --data, or of the\n"
    "                      checkpoint's held-out data (binarized as its run evaluated them)\n"
    "                    (a file named like a prefix: write ./samples:/dataset)\n"
    "--n N               prior samples per samples: set (default 10000, 2..10000000)\n"
    "--seed S            the samples' seed (default 1)\n"
    "--data FILE[:/dataset]  the rows that recon: sets reconstruct\n"
    "--limit N           the first N rows of every data set read, the floor's too (0: all, default)\n"
    "--no-floor          leave the floor out. It is what two sets of real images of one source\n"
    "                    score (the classifier's cfg.data against its cfg.test_data); it costs a\n"
    "                    pass over both (70000 images for Fashion-MNIST) and needs those files.\n"
    "\n"
    "Images go to ranks in fixed chunks of 256 and the statistics (in double) are merged along one\n"
    "tree over the chunks, so the result is the same, bit for bit, on any number of ranks; no rank\n"
    "holds more than a chunk of images. tr((S_a S_b)^(1/2)) comes from two symmetric\n"
    "eigendecompositions (LAPACK dsyevd from OpenBLAS): the eigenvalues of S_a^(1/2) S_b S_a^(1/2).\n"
    CLI_WEIGHTS_HELP;

/* A set as given on the command line. */
typedef struct fid_spec {
    const char *flag; /* "--a" */
    int kind;         /* enum vae_fid_kind */
    const char *arg;  /* FILE[:/dataset] or CKPT */
    const char *text; /* the whole value */
} fid_spec;

static int parse_set(const char *flag, const char *v, fid_spec *s)
{
    static const struct { const char *prefix; int kind; } kinds[] = { { "samples:", VAE_FID_SAMPLES },
                                                                      { "recon:", VAE_FID_RECON } };
    s->flag = flag;
    s->text = v;
    s->kind = VAE_FID_ROWS;
    s->arg = v;
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
        if (!strncmp(v, kinds[i].prefix, strlen(kinds[i].prefix))) {
            s->kind = kinds[i].kind;
            s->arg = v + strlen(kinds[i].prefix);
        }
    if (!s->arg[0])
        return cli_usage_error("fid", "%s '%s' names no %s", flag, v, s->kind == VAE_FID_ROWS ? "file" : "checkpoint");
    return 0;
}

/* The options of a run, shared by the sets. */
typedef struct fid_run {
    vae_model clf;
    vae_config ccfg;
    char clf_ckpt[VAE_PATH_LEN + 64];
    const char *data;
    long n, seed, limit;
} fid_run;

/* Refuses images of another shape than the classifier's input (rank 0 says it). */
static int check_shape(const fid_run *r, const char *what, int C, int Hh, int W)
{
    const vae_arch *a = &r->ccfg.arch;
    if (C == a->C && Hh == a->Hh && W == a->W) return VAE_OK;
    if (cli_rank == 0)
        vae_error(VAE_EDATA, "%s has images of %dx%dx%d but the classifier in '%s' takes %dx%dx%d", what, C, Hh, W,
                  r->clf_ckpt, a->C, a->Hh, a->W);
    return VAE_EDATA;
}

/* Rows of an open data set, after the shape and value checks: the first --limit of them. */
static int rows_set(const fid_run *r, vae_data *d, const char *what, vae_fid_set *s)
{
    int rc = check_shape(r, what, d->C, d->Hh, d->W);
    if (!rc) rc = vae_data_check(d, VAE_RANGE_ANY, MPI_COMM_WORLD);
    s->d = d;
    s->n = r->limit > 0 && r->limit < d->N ? r->limit : d->N;
    return rc;
}

/*
 * The statistics of one set: opens or loads what it needs, computes, closes.
 * desc[] gets the set's line of the output.
 */
static int spec_stats(fid_run *r, const fid_spec *sp, vae_fid_stats *st, char *desc, size_t len)
{
    char what[VAE_PATH_LEN + 400];
    vae_data d;
    vae_model gen;
    vae_config gcfg;
    memset(&d, 0, sizeof d);
    memset(&gen, 0, sizeof gen);
    vae_fid_set s = { .kind = sp->kind, .seed = (uint64_t)r->seed, .temperature = 1.0f, .name = what };
    int rc = VAE_OK;
    if (sp->kind == VAE_FID_ROWS) {
        rc = vae_data_open(&d, sp->arg, MPI_COMM_WORLD, -1, VAE_FID_CHUNK);
        snprintf(what, sizeof what, "%s '%s:%s'", sp->flag, d.file, d.dset);
        if (!rc) rc = rows_set(r, &d, what, &s);
        snprintf(desc, len, "rows of %s:%s", d.file, d.dset);
    } else {
        const char *ck = sp->arg;
        const int samples = sp->kind == VAE_FID_SAMPLES;
        rc = cli_load_model(&ck, &gcfg, &gen, VAE_FID_CHUNK, samples ? VAE_TOOL_SAMPLE : VAE_TOOL_RECONSTRUCT, "fid");
        snprintf(what, sizeof what, "%s '%s%s'", sp->flag, samples ? "samples:" : "recon:", ck);
        if (!rc) rc = check_shape(r, what, gcfg.arch.C, gcfg.arch.Hh, gcfg.arch.W);
        s.gen = &gen;
        if (!rc && samples) {
            s.n = r->n;
            snprintf(desc, len, "%ld prior samples of %s (seed %ld)", r->n, ck, r->seed);
        }
        if (!rc && !samples) {
            char ckpath[VAE_PATH_LEN + 64];
            snprintf(ckpath, sizeof ckpath, "%s", ck);
            rc = cli_open_data(&d, r->data, &gcfg, ckpath, -1, VAE_FID_CHUNK);
            if (!rc) rc = cli_check_shape(&d, &gcfg, ckpath);
            if (!rc) {
                snprintf(what, sizeof what, "%s '%s' (reconstructions of '%s:%s')", sp->flag, sp->text, d.file, d.dset);
                rc = rows_set(r, &d, what, &s);
            }
            snprintf(desc, len, "reconstructions by %s of %s:%s%s", ckpath, d.file, d.dset,
                     d.binarize ? " (binarized, " VAE_BINARIZE_FIXED_TEXT ")" : "");
        }
    }
    if (!rc) rc = vae_fid_set_stats(&r->clf, &s, MPI_COMM_WORLD, st);
    vae_data_close(&d);
    vae_model_free(&gen);
    return rc;
}

/* The distance between two sets' statistics (every rank alike). */
static int distance(const vae_fid_stats *a, const vae_fid_stats *b, vae_fid_result *res)
{
    const int F = a->F;
    const size_t FF = (size_t)F * F;
    double *Sa = malloc(FF * sizeof(double)), *Sb = malloc(FF * sizeof(double));
    vae_defer_begin();
    int rc = Sa && Sb ? VAE_OK : vae_error(VAE_ENOMEM, "cannot allocate two %d x %d covariances", F, F);
    if (!rc) {
        vae_fid_stats_cov(a, Sa);
        vae_fid_stats_cov(b, Sb);
        rc = vae_fid_distance(F, a->mean, Sa, b->mean, Sb, res);
    }
    free(Sa);
    free(Sb);
    return vae_agree(rc, MPI_COMM_WORLD);
}

/* The classifier's training and held-out data, as specs to open: found, or a message saying --no-floor. */
static int floor_specs(const fid_run *r, char *train, char *test, size_t len)
{
    const vae_config *c = &r->ccfg;
    vae_defer_begin();
    int rc = VAE_OK;
    if (!c->data[0] || !c->test_data[0])
        rc = vae_error(VAE_EINVAL, "classifier checkpoint '%s' names no %s data (attribute cfg.%s), so there is no floor: "
                       "leave it out with --no-floor", r->clf_ckpt, c->data[0] ? "held-out" : "training",
                       c->data[0] ? "test_data" : "data");
    else if (!vae_data_locate(c->data, c->data_abs, train, len))
        rc = vae_error(VAE_EIO, "cannot find the training data '%s' of classifier checkpoint '%s' (attribute cfg.data) for "
                       "the floor: leave it out with --no-floor", c->data, r->clf_ckpt);
    else if (!vae_data_locate(c->test_data, c->test_data_abs, test, len))
        rc = vae_error(VAE_EIO, "cannot find the held-out data '%s' of classifier checkpoint '%s' (attribute cfg.test_data) "
                       "for the floor: leave it out with --no-floor", c->test_data, r->clf_ckpt);
    return vae_agree(rc, MPI_COMM_WORLD);
}

/* Loads the classifier; refuses a family without features. */
static int load_classifier(fid_run *r, const char *given)
{
    const char *ck = given;
    int rc = cli_load_model(&ck, &r->ccfg, &r->clf, VAE_FID_CHUNK, 0, "fid");
    snprintf(r->clf_ckpt, sizeof r->clf_ckpt, "%s", ck);
    if (rc) return rc;
    if (r->clf.fam->features && r->clf.n_features > 0) return VAE_OK;
    if (cli_rank == 0)
        vae_error(VAE_EINVAL, "--classifier '%s' is a checkpoint of model family '%s', which has no features (the layer "
                  "before a classifier's output): mpivae fid needs a classifier's checkpoint", r->clf_ckpt,
                  r->clf.fam->name);
    return VAE_EINVAL;
}

int cli_cmd_fid(int argc, char **argv)
{
    const char *clf_ckpt = NULL, *a_s = NULL, *b_s = NULL;
    fid_run r;
    memset(&r, 0, sizeof r);
    r.n = 10000;
    r.seed = 1;
    int no_floor = 0;
    cli_opt opts[] = {
        { "classifier", CLI_STRING, .target = &clf_ckpt, .metavar = "CKPT", .required = 1 },
        { "a", CLI_STRING, .target = &a_s, .metavar = "SET", .required = 1 },
        { "b", CLI_STRING, .target = &b_s, .metavar = "SET", .required = 1 },
        { "n", CLI_LONG, .target = &r.n, .lo = 2, .hi = 10000000 },
        { "seed", CLI_LONG, .target = &r.seed, .lo = 0, .hi = LONG_MAX },
        { "data", CLI_STRING, .target = &r.data },
        { "limit", CLI_LONG, .target = &r.limit, .lo = 0, .hi = LONG_MAX },
        { "no-floor", CLI_FLAG, .target = &no_floor },
        CLI_WEIGHTS_OPT,
        { 0 }
    };
    const cli_cmd cmd = { .name = "fid", .help = fid_help, .opts = opts };
    int rc = cli_parse(&cmd, argc, argv);
    if (rc) return cli_stop(rc);
    fid_spec sa, sb;
    rc = parse_set("--a", a_s, &sa);
    if (!rc) rc = parse_set("--b", b_s, &sb);
    if (!rc && r.data && sa.kind != VAE_FID_RECON && sb.kind != VAE_FID_RECON)
        rc = cli_usage_error("fid", "--data names the rows of a recon: set, and neither --a nor --b is one");
    if (rc) return rc;
    if (cli_parse_only()) return 0;

    vae_fid_stats st[4];
    memset(st, 0, sizeof st);
    char train[VAE_PATH_LEN + 300] = "", test[VAE_PATH_LEN + 300] = "", desc[2][3 * VAE_PATH_LEN];
    rc = load_classifier(&r, clf_ckpt);
    if (!rc && !no_floor) rc = floor_specs(&r, train, test, sizeof train);
    for (int i = 0; i < 4 && !rc; i++) rc = vae_fid_stats_init(&st[i], r.clf.n_features);
    if (!rc) rc = vae_agree(rc, MPI_COMM_WORLD);
    if (!rc) rc = spec_stats(&r, &sa, &st[0], desc[0], sizeof desc[0]);
    if (!rc) rc = spec_stats(&r, &sb, &st[1], desc[1], sizeof desc[1]);
    vae_fid_result ab, fl;
    if (!rc) rc = distance(&st[0], &st[1], &ab);
    if (!rc && cli_rank == 0) {
        printf("FID a vs b: %.6f (N_a %lld, N_b %lld, features %d)\n", ab.fid, (long long)st[0].n, (long long)st[1].n,
               r.clf.n_features);
        printf("  a: %s\n  b: %s\n", desc[0], desc[1]);
        printf("  terms: |mu_a - mu_b|^2 %.12g, tr S_a %.12g, tr S_b %.12g, tr (S_a S_b)^1/2 %.12g (classifier %s)\n",
               ab.dmu2, ab.tr1, ab.tr2, ab.trsqrt, r.clf_ckpt);
        fflush(stdout);
    }
    if (!rc && !no_floor) {
        fid_spec ftr = { .flag = "the floor's training data", .kind = VAE_FID_ROWS, .arg = train, .text = train };
        fid_spec fte = { .flag = "the floor's held-out data", .kind = VAE_FID_ROWS, .arg = test, .text = test };
        char dtr[3 * VAE_PATH_LEN], dte[3 * VAE_PATH_LEN];
        rc = spec_stats(&r, &ftr, &st[2], dtr, sizeof dtr);
        if (!rc) rc = spec_stats(&r, &fte, &st[3], dte, sizeof dte);
        if (!rc) rc = distance(&st[2], &st[3], &fl);
        if (!rc && cli_rank == 0)
            printf("FID train vs test (floor): %.6f (N_train %lld, N_test %lld: %s, %s)\n", fl.fid, (long long)st[2].n,
                   (long long)st[3].n, dtr, dte);
    }
    for (int i = 0; i < 4; i++) vae_fid_stats_free(&st[i]);
    vae_model_free(&r.clf);
    return cli_finish(rc);
}
