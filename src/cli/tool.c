/*
 * tool.c: what the tools on a checkpoint share: loading its model on every
 * rank, finding and opening the data they read (--data or the checkpoint's
 * held-out data), checking rows and shapes against the model.
 */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"

#include "mpivae/checkpoint.h"
#include "mpivae/comm.h"
#include "mpivae/status.h"

#include <mpi.h>
#include <stdio.h>
#include <string.h>

/*
 * Loads the configuration and parameters of a checkpoint into a model for
 * batches of max_batch. *ckpt may name a run directory: rank 0 picks its
 * newest good checkpoint, and *ckpt then points to that file's path.
 */
int cli_weights = CLI_WEIGHTS_AVERAGED;
const char *const cli_weights_names[] = { "averaged", "raw", NULL };

int cli_load_model(const char **ckpt, vae_config *cfg, vae_model *m, int max_batch, unsigned tool, const char *cmd)
{
    static char path[VAE_PATH_LEN + 64];
    vae_train_state st;
    vae_defer_begin();
    int rc = cli_rank == 0 ? vae_ckpt_resolve(*ckpt, path, sizeof path) : VAE_OK;
    rc = vae_agree(rc, MPI_COMM_WORLD);
    if (rc) return rc;
    MPI_Bcast(path, sizeof path, MPI_CHAR, 0, MPI_COMM_WORLD);
    *ckpt = path;
    vae_defer_begin();
    rc = vae_ckpt_read_meta(path, cfg, &st);
    /* The file's tensors must match the attributes before a model of their size is allocated. */
    if (!rc && tool) rc = vae_family_serves(vae_family_get(cfg->arch.kind), tool, cmd, path);
    if (!rc) rc = vae_model_plan(m, &cfg->arch);
    if (!rc) rc = vae_ckpt_check_tensors(path, m, 0);
    if (!rc) vae_model_free(m); /* the plan's own state (a family's), before init plans again */
    if (!rc) rc = vae_model_init(m, &cfg->arch, max_batch);
    if (!rc) rc = vae_ckpt_read_tensors(path, m, cli_weights == CLI_WEIGHTS_RAW ? VAE_CKPT_PARAMS : VAE_CKPT_USE);
    if (!rc && cli_rank == 0 && cli_weights != CLI_WEIGHTS_RAW && vae_ckpt_has_ema(path)) {
        printf("weights: the moving average of the parameters (/ema, --ema %g); --weights raw for /params\n", cfg->ema);
        fflush(stdout);
    }
    return vae_agree(rc, MPI_COMM_WORLD);
}

/*
 * The data a tool reads: --data as given (FILE alone is FILE:/train/images,
 * as everywhere), else the checkpoint's held-out data, found through its
 * absolute path first. A checkpoint without held-out data needs --data.
 */
static int tool_data(const char *given, const vae_config *cfg, const char *ckpt, char *spec, size_t len)
{
    if (given) {
        snprintf(spec, len, "%s", given);
        return VAE_OK;
    }
    if (!cfg->test_data[0])
        return vae_error(VAE_EINVAL, "checkpoint '%s' has no held-out data (trained with --test-data none, or its "
                         "data file had no /test/images): name the rows with --data FILE[:/dataset]", ckpt);
    if (vae_data_locate(cfg->test_data, cfg->test_data_abs, spec, len)) return VAE_OK;
    return vae_error(VAE_EIO, "cannot find the held-out data '%s' named by checkpoint '%s' (attribute cfg.test_data%s%s%s): "
                     "name the rows with --data FILE[:/dataset]", cfg->test_data, ckpt,
                     cfg->test_data_abs[0] ? "; nor '" : "", cfg->test_data_abs, cfg->test_data_abs[0] ? "'" : "");
}

/* Opens the tool's data (tool_data) on every rank, binarized as the checkpoint's run evaluated. */
int cli_open_data(vae_data *d, const char *given, const vae_config *cfg, const char *ckpt, int in_memory, int max_rows)
{
    char spec[VAE_PATH_LEN + 300];
    vae_defer_begin();
    int rc = vae_agree(tool_data(given, cfg, ckpt, spec, sizeof spec), MPI_COMM_WORLD);
    if (!rc) rc = vae_data_open(d, spec, MPI_COMM_WORLD, in_memory, max_rows);
    if (!rc && cfg->binarize != VAE_BINARIZE_NONE) rc = cli_data_binarize(d, 1);
    return rc;
}

int cli_data_binarize(vae_data *d, int on)
{
    vae_data_binarize_fixed(d, 0);
    if (!on) return VAE_OK;
    int rc = vae_data_check(d, VAE_RANGE_BINARIZE, MPI_COMM_WORLD);
    if (!rc) vae_data_binarize_fixed(d, 1);
    return rc;
}

int cli_check_shape(const vae_data *d, const vae_config *cfg, const char *ckpt)
{
    if (d->C == cfg->arch.C && d->Hh == cfg->arch.Hh && d->W == cfg->arch.W) return 0;
    if (cli_rank == 0)
        vae_error(VAE_EDATA, "'%s:%s' has rows of %dx%dx%d but the model in '%s' takes %dx%dx%d", d->file, d->dset,
                  d->C, d->Hh, d->W, ckpt, cfg->arch.C, cfg->arch.Hh, cfg->arch.W);
    return VAE_EDATA;
}

/* Opens the tool's data on every rank and checks it against the checkpoint's model. */
int cli_open_tool_data(vae_data *d, const char *given, const vae_config *cfg, const char *ckpt, int max_rows)
{
    int rc = cli_open_data(d, given, cfg, ckpt, -1, max_rows);
    if (!rc) rc = cli_check_shape(d, cfg, ckpt);
    return rc;
}

int cli_check_index(const char *cmd, const char *flag, long i, const vae_data *d)
{
    if (i >= 0 && i < d->N) return 0;
    if (cli_rank == 0)
        vae_error(VAE_EINVAL, "%s %ld is out of range: '%s:%s' has %lld rows (0..%lld) (mpivae %s)", flag, i, d->file,
                  d->dset, (long long)d->N, (long long)d->N - 1, cmd);
    return VAE_EINVAL;
}

/* Rank 0 encodes one row to its mean. */
int cli_encode_one(vae_model *m, vae_data *d, int64_t row, float *mu)
{
    int rc = vae_data_rows(d, &row, 1, vae_model_input(m));
    if (rc) return rc;
    vae_model_encode(m, 1, mu, NULL);
    return VAE_OK;
}
