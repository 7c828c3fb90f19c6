/*
 * anomaly.c: `mpivae anomaly`: every row scored by its negative ELBO with
 * z = mu, rows shared across ranks; a histogram, the most anomalous rows,
 * and with labels the ROC AUC of each score.
 */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"

#include "mpivae/comm.h"
#include "mpivae/image.h"
#include "mpivae/iw.h"
#include "mpivae/latent.h"
#include "mpivae/status.h"
#include "mpivae/tools.h"

#include <ctype.h>
#include <limits.h>
#include <math.h>
#include <mpi.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The largest class --normal-classes takes. */
#define MAX_CLASS 1023

/* --normal-classes as given, and the classes it names. */
typedef struct normal_classes {
    const char *given;                       /* NULL: not given */
    unsigned char is_normal[MAX_CLASS + 1];
} normal_classes;

/*
 * Parses --normal-classes "0,1,2" into a normal_classes: integers 0..MAX_CLASS separated by
 * single commas, at least one. Returns 0 or the usage exit status (after the message).
 */
static int parse_classes(const char *cmd, const char *s, void *target)
{
    normal_classes *nc = target;
    unsigned char *is_normal = nc->is_normal;
    nc->given = s;
    memset(is_normal, 0, MAX_CLASS + 1);
    if (!*s) return cli_usage_error(cmd, "--normal-classes is empty: it takes classes C1,C2,... (integers 0..%d)", MAX_CLASS);
    for (const char *p = s;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        char tok[32];
        long v = 0;
        if (len == 0) return cli_usage_error(cmd, "--normal-classes '%s' has an empty class (a stray comma)", s);
        if (len >= sizeof tok || isspace((unsigned char)*p))
            return cli_usage_error(cmd, "--normal-classes '%.*s' is not an integer", (int)len, p);
        memcpy(tok, p, len);
        tok[len] = '\0';
        int rc = cli_parse_long(cmd, "--normal-classes", tok, 0, MAX_CLASS, &v);
        if (rc) return rc;
        is_normal[v] = 1;
        if (!comma) return 0;
        p = comma + 1;
    }
}

static int cmp_int64(const void *x, const void *y)
{
    int64_t a = *(const int64_t *)x, b = *(const int64_t *)y;
    return (a > b) - (a < b);
}

/* Appends to buf[len] (a string) what fits of fmt; the rest is dropped. */
static void append(char *buf, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void append(char *buf, size_t len, const char *fmt, ...)
{
    size_t n = strlen(buf);
    if (n + 1 >= len) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf + n, len - n, fmt, ap);
    va_end(ap);
}

/*
 * The distinct values of sorted[n] (sorted in place here) as "0..9" or "0,1,5..9"; a run of three
 * or more is written as a range, and a list too long for buf ends in ",...".
 */
static void describe_classes(int64_t *sorted, int64_t n, char *buf, size_t len)
{
    qsort(sorted, (size_t)n, sizeof *sorted, cmp_int64);
    buf[0] = '\0';
    for (int64_t i = 0; i < n;) {
        int64_t j = i; /* the run of consecutive values starting at sorted[i] ends at sorted[j] */
        for (int64_t k = i + 1; k < n && sorted[k] <= sorted[j] + 1; k++)
            if (sorted[k] == sorted[j] + 1) j = k;
        if (strlen(buf) + 48 >= len) {
            append(buf, len, ",...");
            return;
        }
        const char *sep = buf[0] ? "," : "";
        long long lo = sorted[i], hi = sorted[j];
        if (hi >= lo + 2) append(buf, len, "%s%lld..%lld", sep, lo, hi);
        else if (hi == lo + 1) append(buf, len, "%s%lld,%lld", sep, lo, hi);
        else append(buf, len, "%s%lld", sep, lo);
        for (i = j + 1; i < n && sorted[i] == hi;) i++;
    }
}

/*
 * Rank 0, before any scoring: reads the n labels of spec (FILE[:/ds]; FILE alone is FILE:/train/labels) and
 * marks anomalous[i] for the rows whose class is not normal. Refuses, as usage errors, normal
 * classes that do not occur in the labels and a split with no normal rows or no anomalies (the ROC
 * AUC needs both). Returns 0, EXIT_USAGE, or a negative status; *n_anom counts the anomalies and
 * where[where_len] gets the labels as FILE:/dataset.
 */
static int anomaly_labels(const char *spec, const char *normal_s, const unsigned char *is_normal, int64_t n,
                          unsigned char *anomalous, int64_t *n_anom, char *where, size_t where_len)
{
    char file[VAE_PATH_LEN], dset[256];
    int rc = vae_data_parse_spec(spec, "/train/labels", file, sizeof file, dset, sizeof dset);
    if (rc) return rc;
    int64_t *lab = malloc((size_t)n * sizeof *lab);
    if (!lab) return vae_error(VAE_ENOMEM, "cannot allocate %lld labels", (long long)n);
    rc = vae_read_labels(spec, "/train/labels" /* FILE alone: the training set, as for --data */, n, lab);
    unsigned char present[MAX_CLASS + 1] = { 0 };
    *n_anom = 0;
    for (int64_t i = 0; !rc && i < n; i++) {
        int normal = lab[i] >= 0 && lab[i] <= MAX_CLASS && is_normal[lab[i]];
        if (lab[i] >= 0 && lab[i] <= MAX_CLASS) present[lab[i]] = 1;
        anomalous[i] = !normal;
        *n_anom += !normal;
    }
    char missing[256] = "";
    int n_missing = 0;
    for (int c = 0; !rc && c <= MAX_CLASS; c++)
        if (is_normal[c] && !present[c]) {
            append(missing, sizeof missing, "%s%d", n_missing ? "," : "", c);
            n_missing++;
        }
    if (!rc && (n_missing || *n_anom == 0 || *n_anom == n)) {
        char held[256];
        describe_classes(lab, n, held, sizeof held); /* sorts lab: the labels are not needed after this */
        if (n_missing)
            rc = cli_usage_error("anomaly", "--normal-classes %s: %s %s %s not occur in '%s:%s', which holds %s", normal_s,
                             n_missing > 1 ? "classes" : "class", missing, n_missing > 1 ? "do" : "does", file, dset, held);
        else if (*n_anom == 0)
            rc = cli_usage_error("anomaly", "--normal-classes %s leaves no anomalies: all %lld rows of '%s:%s' (classes %s) "
                             "are normal, and the ROC AUC needs both normal rows and anomalies", normal_s, (long long)n,
                             file, dset, held);
        else
            rc = cli_usage_error("anomaly", "--normal-classes %s leaves no normal rows: none of the %lld rows of '%s:%s' "
                             "(classes %s) is of a normal class, and the ROC AUC needs both normal rows and anomalies",
                             normal_s, (long long)n, file, dset, held);
    }
    snprintf(where, where_len, "%s:%s", file, dset);
    free(lab);
    return rc;
}

/*
 * Writes /score and /<term> [n] for each of the family's terms to out (a new
 * file) from cols[n, W] (W = 1 + terms, row-major) and, with labels, each
 * column's ROC AUC as its attribute 'roc_auc'.
 */
static int anomaly_write(const char *out, const vae_model *f, const float *cols, int64_t n, const double *auc)
{
    const int W = 1 + f->n_terms;
    float *v = malloc((size_t)n * sizeof(float));
    int rc = v ? 0 : vae_error(VAE_ENOMEM, "cannot allocate %lld scores", (long long)n);
    for (int q = 0; !rc && q < W; q++) {
        char name[64];
        snprintf(name, sizeof name, "/%s", q ? f->terms[q - 1].name : "score");
        for (int64_t i = 0; i < n; i++) v[i] = cols[i * W + q];
        rc = vae_h5_write_matrix(out, name, v, n, 0);
        if (!rc && auc) rc = vae_h5_write_attr(out, name, "roc_auc", auc[q]);
    }
    free(v);
    return rc;
}

/*
 * This rank's rows [a, b): mine[(b - a), W] = the score (the loss with the
 * run's beta) and each term, with every latent at its mean. Non-finite
 * values are refused, naming the row.
 */
static int score_rows(vae_model *m, vae_data *d, const vae_config *cfg, const char *ckpt, int64_t a, int64_t b, float *mine,
                      int iw, uint64_t seed)
{
    const vae_model *f = m;
    const int nt = f->n_terms, W = 1 + nt;
    const int64_t n = b - a;
    double *terms = calloc((size_t)(n + 1) * nt, sizeof(double)), row[VAE_MAX_TERMS];
    double *logw = malloc((size_t)(iw > 0 ? iw : 1) * sizeof(double));
    int rc = terms && logw ? vae_latent_score(m, d, a, b, terms)
                           : vae_error(VAE_ENOMEM, "cannot allocate scores for %lld rows", (long long)n);
    for (int64_t i = 0; !rc && i < n; i++) {
        int bad = 0;
        char vals[512] = "";
        for (int t = 0; t < nt; t++) {
            row[t] = terms[(size_t)t * n + i];
            mine[i * W + 1 + t] = (float)row[t];
            size_t l = strlen(vals);
            snprintf(vals + l, sizeof vals - l, "%s %g, ", f->terms[t].name, row[t]);
        }
        mine[i * W] = (float)vae_model_loss(f, row, cfg->beta);
        double lk = 0.0;
        if (iw > 0 && !(rc = vae_iw_row(m, d, seed, iw, a + i, logw, &lk))) mine[i * W] = (float)-lk;
        if (rc) break;
        for (int q = 0; q < W; q++) bad |= !isfinite(mine[i * W + q]);
        if (bad)
            rc = vae_error(VAE_EDATA, "the model in '%s' gives a non-finite score for row %lld of '%s:%s' (%sbeta %g): its "
                           "parameters or configuration are not usable", ckpt, (long long)(a + i), d->file, d->dset, vals,
                           cfg->beta);
    }
    free(terms);
    free(logw);
    return rc;
}

static const char *anomaly_help =
    "usage: mpirun -np P mpivae anomaly --ckpt FILE --out SCORES.h5 [--data FILE[:/ds]]\n"
    "                                   [--labels FILE[:/ds] --normal-classes C1,C2,...] [--top K]\n"
    "                                   [--iw K [--seed S]]\n"
    "\n"
    "Scores every row of --data (FILE alone is FILE:/train/images; default: the checkpoint's\n"
    "held-out data) by its negative ELBO with\n"
    "every latent at its mean (the model family's loss: reconstruction + beta * KL, nats, for\n"
    "mlp and conv), and keeps each of its terms. Rows are shared across ranks; rank 0 writes\n"
    "SCORES.h5 (/score and /<term> [N]: /recon, /kl for mlp and conv; row-aligned with the input; --out\n"
    "must end in .h5), SCORES-hist.png (histogram of scores) and SCORES-top.png (the K, default\n"
    "32, most anomalous rows, highest score first).\n"
    "\n"
    "With --normal-classes (integers 0..1023, each occurring in the labels), rows of other\n"
    "classes count as anomalies, and there must be both. The labels are --labels FILE[:/ds]\n"
    "(FILE alone is FILE:/train/labels), else the 'labels' dataset beside the images; they are read\n"
    "and checked before any scoring. The ROC AUC of each score is printed on one line,\n"
    "  roc_auc=A (score) recon_auc=R kl_auc=K [anomaly and normal counts; labels]\n"
    "(a <term>_auc per term of the family) and stored as the attribute 'roc_auc' of each dataset.\n"
    "\n"
    "--iw K: the score is instead minus the importance-weighted bound L_K of each row (as eval --iw,\n"
    "with noise keyed by --seed, default 1, the row and k); the terms stay those of z = mu.\n"
    CLI_WEIGHTS_HELP;

/* The anomaly context rank 0 writes from: the scores of every row, the labels, the timing. */
typedef struct anomaly_out {
    const char *out, *ckpt, *normal_s, *lab_where;
    const unsigned char *anomalous; /* [N], with --normal-classes */
    int64_t n_anom;
    int top, P;
    double t_score;
} anomaly_out;

/*
 * Rank 0: the ROC AUCs, SCORES.h5, the histogram and the top rows (published
 * together or not at all), and the summary lines. all[N, W] holds each row's
 * score and terms.
 */
static int write_results(const anomaly_out *ao, vae_model *mm, vae_data *dd, const vae_config *cc, const float *all,
                         int64_t N)
{
    const int W = 1 + mm->n_terms, P = ao->P, top = ao->top;
    const char *out = ao->out, *ckpt = ao->ckpt, *normal_s = ao->normal_s, *lab_where = ao->lab_where;
    const unsigned char *anomalous = ao->anomalous;
    const int64_t n_anom = ao->n_anom;
    const double t_score = ao->t_score;
    int rc = 0;
    float *score = malloc((size_t)N * sizeof(float));
    int64_t *order = malloc((size_t)N * sizeof(int64_t));
    double auc[1 + VAE_MAX_TERMS]; /* of /score, then each term */
    if (!score || !order) rc = vae_error(VAE_ENOMEM, "cannot allocate %lld scores", (long long)N);
    for (int64_t i = 0; !rc && i < N; i++) score[i] = all[i * W];
    for (int q = 0; !rc && normal_s && q < W; q++) {
        for (int64_t i = 0; i < N; i++) score[i] = all[i * W + q];
        auc[q] = vae_roc_auc(score, anomalous, N);
    }
    for (int64_t i = 0; !rc && i < N; i++) score[i] = all[i * W];
    cli_outputs o = { 0 };
    char base[VAE_PATH_LEN + 8], png[VAE_PATH_LEN + 32];
    snprintf(base, sizeof base, "%s", out);
    size_t bl = strlen(base);
    if (bl > 3 && !strcmp(base + bl - 3, ".h5")) base[bl - 3] = '\0';
    const char *h5_t = cli_out_add(&o, out);
    snprintf(png, sizeof png, "%s-hist.png", base);
    const char *hist_t = cli_out_add(&o, png);
    snprintf(png, sizeof png, "%s-top.png", base);
    const char *top_t = cli_out_add(&o, png);
    char lab_file[sizeof lab_where];
    snprintf(lab_file, sizeof lab_file, "%s", lab_where);
    if (strstr(lab_file, ":/")) *strstr(lab_file, ":/") = '\0';
    if (!rc) rc = cli_out_refuse("anomaly", &o, ckpt, dd->file, lab_file);
    if (!rc) rc = anomaly_write(h5_t, mm, all, N, normal_s ? auc : NULL);
    if (!rc) rc = vae_image_write_histogram(hist_t, score, N, 50, 400, 200);
    /* The top K rows by score, highest first. */
    int k = top < N ? top : (int)N;
    float *img = !rc ? malloc((size_t)k * mm->D * sizeof(float)) : NULL;
    if (!rc && !img) rc = vae_error(VAE_ENOMEM, "cannot allocate %d images", k);
    for (int64_t i = 0; !rc && i < N; i++) order[i] = i;
    for (int q = 0; !rc && q < k; q++) {
        int64_t best = q;
        for (int64_t i = q + 1; i < N; i++)
            if (score[order[i]] > score[order[best]]) best = i;
        int64_t t = order[q];
        order[q] = order[best];
        order[best] = t;
        rc = vae_data_rows(dd, &order[q], 1, img + (size_t)q * mm->D);
    }
    if (!rc) rc = vae_image_write_grid(top_t, img, k, cc->arch.C, cc->arch.Hh, cc->arch.W, 8, 2);
    rc = cli_out_finish(&o, rc);
    if (!rc) {
        double mean = 0;
        for (int64_t i = 0; i < N; i++) mean += score[i];
        printf("scored %lld rows of %s:%s on %d rank%s in %.2f s: mean score %.4f nats; most anomalous row %lld (%.4f)\n",
               (long long)N, dd->file, dd->dset, P, P > 1 ? "s" : "", t_score, mean / N, (long long)order[0], score[order[0]]);
        if (normal_s) {
            printf("roc_auc=%.6f (score)", auc[0]);
            for (int t = 0; t < mm->n_terms; t++) printf(" %s_auc=%.6f", mm->terms[t].name, auc[1 + t]);
            printf(" [%lld anomalies (classes not in %s), %lld normal rows; labels %s]\n", (long long)n_anom, normal_s,
                   (long long)(N - n_anom), lab_where);
        }
        printf("wrote %s, %s-hist.png and %s-top.png\n", out, base, base);
    }
    free(img);
    free(score);
    free(order);

    return rc;
}

int cli_cmd_anomaly(int argc, char **argv)
{
    const char *ckpt = NULL, *out = NULL, *data = NULL, *labels_s = NULL;
    normal_classes nc = { 0 };
    int top = 32, iw = 0;
    long seed = 1;
    cli_opt opts[] = {
        { "ckpt", CLI_STRING, .target = &ckpt, .metavar = "FILE", .required = 1 },
        CLI_WEIGHTS_OPT,
        { "out", CLI_STRING, .target = &out, .metavar = "SCORES.h5", .required = 1 },
        { "data", CLI_STRING, .target = &data },
        { "labels", CLI_STRING, .target = &labels_s },
        { "normal-classes", CLI_CUSTOM, .target = &nc, .parse = parse_classes },
        { "top", CLI_INT, .target = &top, .lo = 1, .hi = 10000 },
        { "iw", CLI_INT, .target = &iw, .lo = 1, .hi = 1000000, .metavar = "K" },
        { "seed", CLI_LONG, .target = &seed, .lo = 0, .hi = LONG_MAX },
        { 0 }
    };
    const cli_cmd cmd = { .name = "anomaly", .help = anomaly_help, .opts = opts };
    int rc = cli_parse(&cmd, argc, argv);
    if (rc) return cli_stop(rc);
    const char *normal_s = nc.given;
    const unsigned char *normal = nc.is_normal;
    rc = cli_check_out("anomaly", out, ".h5", "anomaly writes HDF5 (SCORES.h5) with SCORES-hist.png and SCORES-top.png beside it");
    if (rc) return rc;
    if (labels_s && !normal_s) return cli_usage_error("anomaly", "--labels needs --normal-classes");
    if (seed != 1 && iw == 0) return cli_usage_error("anomaly", "--seed keys the importance samples of --iw; give --iw K");
    if (cli_parse_only()) return 0;
    vae_config cfg;
    vae_model m;
    vae_data d;
    memset(&m, 0, sizeof m);
    memset(&d, 0, sizeof d);
    double t0 = MPI_Wtime();
    rc = cli_load_model(&ckpt, &cfg, &m, VAE_LATENT_CHUNK, VAE_TOOL_ANOMALY, "anomaly");
    if (!rc && iw > 0 && !m.fam->log_weights)
        rc = vae_error(VAE_EINVAL, "anomaly --iw: model family '%s' (checkpoint '%s') has no importance weights", m.fam->name, ckpt);
    if (!rc) rc = cli_open_tool_data(&d, data, &cfg, ckpt, VAE_LATENT_CHUNK);
    if (!rc) rc = vae_data_check(&d, cfg.arch.loss == VAE_LOSS_BCE, MPI_COMM_WORLD);
    if (rc) {
        vae_model_free(&m);
        vae_data_close(&d);
        return cli_finish(rc);
    }
    int P;
    MPI_Comm_size(MPI_COMM_WORLD, &P);
    int64_t a, b, N = d.N, n_anom = 0;
    /* Labels: explicit, or 'labels' beside the images; read and checked before any scoring. */
    char lab_spec[VAE_PATH_LEN + 300] = "";
    if (labels_s) snprintf(lab_spec, sizeof lab_spec, "%s", labels_s);
    else if (normal_s) vae_data_labels_beside(d.file, d.dset, lab_spec, sizeof lab_spec);
    unsigned char *anomalous = NULL; /* [N] on rank 0 */
    char lab_where[VAE_PATH_LEN + 300] = "";
    if (normal_s && cli_rank == 0) {
        anomalous = malloc((size_t)N);
        rc = anomalous ? anomaly_labels(lab_spec, normal_s, normal, N, anomalous, &n_anom, lab_where, sizeof lab_where)
                       : vae_error(VAE_ENOMEM, "cannot allocate %lld labels", (long long)N);
    }
    if (normal_s) {
        /* Rank 0's verdict (0, EXIT_USAGE or a negative status, reported) for every rank. */
        int mrc = MPI_Bcast(&rc, 1, MPI_INT, 0, MPI_COMM_WORLD);
        if (mrc != MPI_SUCCESS) rc = vae_mpi_error(mrc, "MPI_Bcast");
    }
    if (rc) {
        free(anomalous);
        vae_model_free(&m);
        vae_data_close(&d);
        return rc > 0 ? rc : cli_finish(rc);
    }
    vae_latent_share(N, P, cli_rank, &a, &b);
    const int W = 1 + m.n_terms;
    float *mine = malloc((size_t)(b - a + 1) * W * sizeof(float));
    float *all = cli_rank == 0 ? malloc((size_t)N * W * sizeof(float)) : NULL;
    vae_defer_begin();
    if (!mine || (cli_rank == 0 && !all)) rc = vae_error(VAE_ENOMEM, "cannot allocate scores for %lld rows", (long long)N);
    if (!rc) rc = score_rows(&m, &d, &cfg, ckpt, a, b, mine, iw, (uint64_t)seed);
    rc = vae_agree(rc, MPI_COMM_WORLD);
    if (!rc) rc = vae_gather_rows(mine, a, b, W, all, N, MPI_COMM_WORLD);
    double t_score = MPI_Wtime() - t0;
    vae_defer_begin();
    if (!rc && cli_rank == 0) {
        anomaly_out ao = { out, ckpt, normal_s, lab_where, anomalous, n_anom, top, P, t_score };
        rc = write_results(&ao, &m, &d, &cfg, all, N);
    }
    rc = vae_agree(rc, MPI_COMM_WORLD);
    free(anomalous);
    free(mine);
    free(all);
    vae_data_close(&d);
    vae_model_free(&m);
    return cli_finish(rc);
}
