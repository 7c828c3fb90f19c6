/*
 * eval.c: `mpivae eval`: the held-out loss of a checkpoint per sample, rows
 * shared across ranks.
 */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"

#include "mpivae/iw.h"
#include "mpivae/latent.h"
#include "mpivae/status.h"
#include "mpivae/tools.h"

#include <limits.h>
#include <mpi.h>
#include <stdio.h>
#include <string.h>

static const char *eval_help =
    "usage: mpirun -np P mpivae eval --ckpt FILE [--data FILE[:/dataset]] [--mean] [--limit N]\n"
    "                                 [--batch B] [--seed S] [--iw K] [--binarize none|fixed]\n"
    "                                 [--labels FILE[:/dataset]]\n"
    "\n"
    "Prints the held-out loss per sample (reconstruction + beta * KL, and each term) over the\n"
    "rows of --data (FILE alone is FILE:/train/images; default: the checkpoint's held-out data).\n"
    "Units: nats under --loss bce; under --loss mse the reconstruction is the squared error\n"
    "summed over pixels (KL in nats). z is sampled from q(z|x)\n"
    "with noise keyed by --seed and the row index; --mean uses z = mu (deterministic).\n"
    "--limit N evaluates the first N rows. Rows are shared across ranks.\n"
    "--iw K also prints the importance-weighted bound log p(x) >= log (1/K) sum_k p(x,z_k)/q(z_k|x)\n"
    "(Burda et al. 2015) in nats per image and bits per dimension, with K samples per row keyed by\n"
    "--seed, the row and k, and the single-sample ELBO of the first (K = 1 gives the same number\n"
    "twice). Under --loss bce it is a normalised likelihood for binary pixels only; under mse that\n"
    "of a Gaussian decoder with variance 1/2. Rows go to ranks in fixed chunks, so the bound does\n"
    "not depend on the rank count; memory does not grow with K.\n"
    "--binarize fixed scores the fixed binarization of the rows (pixel j of row r is 1 when\n"
    "u < its value, u uniform from the keyed RNG at seed 0x6d70697661650001, purpose 8, a = 2^64-1,\n"
    "b = r: the same binary test set for every run and model); none the values as stored. Default:\n"
    "fixed for a checkpoint trained with --binarize dynamic, none otherwise. The line 'data: ...' says\n"
    "which. 'active units: z 12/20' counts, per latent group, the dimensions whose posterior mean\n"
    "varies over the rows with variance above 0.01 (Burda et al. 2015).\n"
    "A classifier's checkpoint (mpivae classify) reports xent (nats per sample) and error, then\n"
    "'accuracy: 91.23% (10000 rows)'; its labels are --labels FILE[:/dataset] (FILE alone is\n"
    "FILE:/train/labels), else the dataset 'labels' beside the rows (FILE:/test/labels for\n"
    "FILE:/test/images), integers below the checkpoint's classes. --iw, --mean and --binarize do\n"
    "not apply to it (--iw is refused).\n"
    CLI_WEIGHTS_HELP;

/* "active units: z 12/20" (several groups: "z1 3/392, z2 0/392, ..."), over the evaluated rows. */
static int print_active_units(vae_model *m, vae_data *d, long limit)
{
    int active[VAE_MAX_LATENTS];
    int rc = vae_latent_active_units(m, d, MPI_COMM_WORLD, limit, VAE_ACTIVE_THRESHOLD, active);
    if (rc || cli_rank != 0) return rc;
    printf("active units:");
    for (int g = 0; g < m->n_latents; g++)
        printf("%s %s %d/%d", g ? "," : "", m->latents[g].name, active[g], m->latents[g].dim);
    printf(" (variance of the posterior mean over the rows > %g)\n", VAE_ACTIVE_THRESHOLD);
    return VAE_OK;
}

/* The labels of the evaluated rows: --labels, else 'labels' beside them; below the checkpoint's classes. */
static int open_labels(vae_data *d, const char *given, const vae_config *cfg, const char *ckpt)
{
    char spec[VAE_PATH_LEN + 300], what[VAE_PATH_LEN + 96];
    if (given) snprintf(spec, sizeof spec, "%s", given);
    else vae_data_labels_beside(d->file, d->dset, spec, sizeof spec);
    int rc = vae_data_open_labels(d, spec, MPI_COMM_WORLD);
    snprintf(what, sizeof what, "checkpoint '%s' has %d classes", ckpt, cfg->arch.classes);
    if (!rc) rc = vae_data_check_classes(d, cfg->arch.classes, what, MPI_COMM_WORLD);
    return rc;
}

int cli_cmd_eval(int argc, char **argv)
{
    const char *ckpt = NULL, *data = NULL, *labels = NULL;
    int use_mean = 0, batch = 256;
    long limit = 0, seed = 1;
    int iw = 0, binarize = -1;
    static const char *const bin_names[] = { "none", "fixed", NULL };
    cli_opt opts[] = {
        { "ckpt", CLI_STRING, .target = &ckpt, .metavar = "FILE", .required = 1 },
        CLI_WEIGHTS_OPT,
        { "data", CLI_STRING, .target = &data },
        { "mean", CLI_FLAG, .target = &use_mean },
        { "limit", CLI_LONG, .target = &limit, .lo = 0, .hi = LONG_MAX },
        { "batch", CLI_INT, .target = &batch, .lo = 1, .hi = 4096 },
        { "seed", CLI_LONG, .target = &seed, .lo = 0, .hi = LONG_MAX },
        { "iw", CLI_INT, .target = &iw, .lo = 1, .hi = 1000000 },
        { "binarize", CLI_ENUM, .target = &binarize, .names = bin_names },
        { "labels", CLI_STRING, .target = &labels },
        { 0 }
    };
    const cli_cmd cmd = { .name = "eval", .help = eval_help, .opts = opts };
    int rc = cli_parse(&cmd, argc, argv);
    if (rc) return cli_stop(rc);
    if (cli_parse_only()) return 0;
    vae_config cfg;
    vae_model m;
    vae_data d;
    memset(&m, 0, sizeof m);
    memset(&d, 0, sizeof d);
    rc = cli_load_model(&ckpt, &cfg, &m, batch, VAE_TOOL_EVAL, "eval");
    /* Refusals every rank reaches alike: rank 0 says why. */
    if (!rc && iw > 0 && !m.fam->log_weights)
        rc = cli_rank ? VAE_EINVAL
                      : vae_error(VAE_EINVAL, "eval --iw: model family '%s' has no importance weights (no IW bound; "
                                  "checkpoint '%s')", m.fam->name, ckpt);
    if (!rc && labels && !m.labels)
        rc = cli_rank ? VAE_EINVAL
                      : vae_error(VAE_EINVAL, "eval --labels: model family '%s' (checkpoint '%s') takes no labels",
                                  m.fam->name, ckpt);
    if (!rc) rc = cli_open_data(&d, data, &cfg, ckpt, -1, batch); /* binarized as the checkpoint's run evaluated */
    if (!rc && binarize >= 0 && binarize != d.binarize) rc = cli_data_binarize(&d, binarize);
    if (!rc) rc = cli_check_shape(&d, &cfg, ckpt);
    if (!rc) rc = vae_data_check(&d, cfg.arch.loss == VAE_LOSS_BCE, MPI_COMM_WORLD);
    if (!rc && m.labels) rc = open_labels(&d, labels, &cfg, ckpt);
    if (!rc && cli_rank == 0)
        printf("data: %s%s\n", d.binarize ? "binarized (" VAE_BINARIZE_FIXED_TEXT ")" : "not binarized (values as stored)",
               binarize < 0 ? ", the checkpoint's default" : "");
    vae_eval_result r;
    if (!rc) rc = vae_evaluate(&m, &d, MPI_COMM_WORLD, (uint64_t)seed, cfg.beta, use_mean, limit, &r);
    if (!rc && cli_rank == 0) {
        printf("eval: loss=%.6f", r.loss);
        for (int t = 0; t < m.n_terms; t++) printf(" %s=%.6f", m.terms[t].name, r.terms[t]);
        printf(" rows=%lld", (long long)r.rows);
        if (m.n_latents > 0) printf(" z=%s", use_mean ? "mean" : "sampled");
        printf(" data=%s:%s unit: %s\n", d.file, d.dset, vae_loss_unit(cfg.arch.loss));
        double acc = vae_eval_accuracy(&m, &r);
        if (acc >= 0) printf("accuracy: %.2f%% (%lld rows, labels %s)\n", 100.0 * acc, (long long)r.rows, d.label_spec);
        if (m.fam->eval_note) printf("note: %s\n", m.fam->eval_note);
    }
    if (!rc && m.fam->encode) rc = print_active_units(&m, &d, limit);
    vae_iw_result ir;
    if (!rc && iw > 0) rc = vae_evaluate_iw(&m, &d, MPI_COMM_WORLD, (uint64_t)seed, iw, limit, &ir);
    if (!rc && iw > 0 && cli_rank == 0)
        printf("iw: K=%d log p(x) >= %.6f nats per image (%.6f bits per dim); single-sample ELBO %.6f; rows=%lld "
               "data=%s:%s\n", ir.K, ir.iw, ir.bpd, ir.elbo1, (long long)ir.rows, d.file, d.dset);
    vae_data_close(&d);
    vae_model_free(&m);
    return cli_finish(rc);
}
