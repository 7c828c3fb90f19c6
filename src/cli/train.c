/*
 * train.c: `mpivae train` and `mpivae classify`: the options of the
 * configuration table (src/config.c) and --resume, the family's defaults,
 * the held-out data, then the run. classify is train with other defaults
 * (--model classifier, its run directory and epochs) and that family only.
 */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"

#include "mpivae/config.h"
#include "mpivae/dataset.h"
#include "mpivae/status.h"
#include "mpivae/train.h"

#include <stdlib.h>
#include <mpi.h>
#include <stdio.h>
#include <string.h>

/* A training command: its name, the text before the options in --help, and its defaults (flag, value pairs). */
typedef struct train_command {
    const char *name;
    const char *intro;
    const char *const *defaults; /* NULL-terminated pairs; "model" fixes the family */
} train_command;

static const train_command train_cmd = { "train", "", NULL };

static const char *const classify_defaults[] = { "model", "classifier", "out", "runs/classifier", "epochs", "8", NULL };
static const train_command classify_cmd = {
    "classify",
    "Trains --model classifier: stride-2 Conv2d layers with ReLU (--hidden channels,\n"
    "default 32,64), a Linear layer of --latent features with ReLU (default 128) and a\n"
    "Linear output of --classes logits, with the softmax cross-entropy of the labels\n"
    "(--labels, default the dataset 'labels' beside --data's). It runs as mpivae train\n"
    "does (data-parallel, checkpoints, resume, signals) and prints the test accuracy at\n"
    "the end. Defaults that differ from train's: --model classifier, --out\n"
    "runs/classifier, --epochs 8. The log and metrics.h5 report xent (nats per sample)\n"
    "and error (the fraction of rows whose largest logit is not their class).\n\n",
    classify_defaults
};

/* The --help text: the table's options, then --resume. Returns a malloc'ed string (NULL: out of memory). */
static char *train_help(const train_command *tc)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) return NULL;
    fprintf(f, "usage: mpirun -np P mpivae %s [options]\n\n%s", tc->name, tc->intro);
    vae_config_help(f);
    fprintf(f, "resume\n"
               "  --resume auto|FILE       continue from the newest good checkpoint in DIR/checkpoints\n"
               "                           (auto: start fresh when there is none) or from FILE; the\n"
               "                           configuration is the checkpoint's: --epochs, --steps,\n"
               "                           --max-skips, the --*-every intervals, --keep, --test-data,\n"
               "                           --data-in-memory, --allreduce and --out may be given anew,\n"
               "                           --data may name the same data elsewhere (or other data of\n"
               "                           the same rows when the checkpoint's file is gone);\n"
               "                           any other option that differs is refused\n");
    fclose(f);
    return buf;
}

/* A configuration field as the target of a cli_opt: the configuration and the field's index. */
typedef struct field_target {
    vae_config *cfg;
    int f;
} field_target;

static int set_field(const char *cmd, const char *value, void *target)
{
    field_target *t = target;
    char why[512];
    return vae_config_set(t->cfg, t->f, value, why, sizeof why) ? cli_usage_error(cmd, "%s", why) : 0;
}

/* Held-out data not given: /test/images of the training file when it has one. */
static void default_test_data(vae_config *cfg)
{
    char file[VAE_PATH_LEN], dset[256];
    if (!vae_data_parse_spec(cfg->data, VAE_DATA_DEFAULT_DSET, file, sizeof file, dset, sizeof dset) &&
        strcmp(dset, "/test/images") && vae_data_exists(file, "/test/images"))
        snprintf(cfg->test_data, sizeof cfg->test_data, "%.1000s:/test/images", file);
}

static int run_train(const train_command *tc, int argc, char **argv)
{
    vae_config cfg;
    vae_config_defaults(&cfg);
    const char *family = NULL;
    for (int i = 0; tc->defaults && tc->defaults[i]; i += 2) {
        char why[512];
        if (vae_config_set(&cfg, vae_config_field(tc->defaults[i]), tc->defaults[i + 1], why, sizeof why))
            return cli_finish(vae_error(VAE_EINVAL, "the default of mpivae %s: %s", tc->name, why)); /* a bug here */
        if (!strcmp(tc->defaults[i], "model")) family = tc->defaults[i + 1];
    }
    const char *resume = NULL;
    /* The shared parser over the configuration table, one option per field, then --resume. */
    cli_opt opts[CLI_MAX_OPTS + 1];
    field_target targets[CLI_MAX_OPTS];
    int n = 0;
    if (vae_config_nfields > CLI_MAX_OPTS - 1) /* a table grown past the parser: every field must be an option */
        return cli_finish(vae_error(VAE_EINVAL, "the configuration has %d fields, the parser takes %d", vae_config_nfields,
                                    CLI_MAX_OPTS - 1));
    for (int f = 0; f < vae_config_nfields; f++, n++) {
        targets[n] = (field_target){ &cfg, f };
        opts[n] = (cli_opt){ vae_config_fields[f].flag, CLI_CUSTOM, .target = &targets[n], .parse = set_field };
    }
    opts[n++] = (cli_opt){ "resume", CLI_STRING, .target = &resume };
    opts[n] = (cli_opt){ 0 };
    char *help = train_help(tc);
    const cli_cmd cmd = { .name = tc->name, .help = help ? help : "usage: mpirun -np P mpivae train [options]\n", .opts = opts };
    int rc = cli_parse(&cmd, argc, argv);
    free(help);
    if (rc) return cli_stop(rc);
    uint64_t set = 0;
    for (int f = 0; f < n - 1; f++)
        if (opts[f].set) set |= vae_config_bit(f);
    if (family && strcmp(vae_family_get(cfg.arch.kind)->name, family))
        return cli_usage_error(tc->name, "mpivae %s trains --model %s only, not --model %s (mpivae train trains the "
                               "others)", tc->name, family, vae_family_get(cfg.arch.kind)->name);
    vae_config_family_defaults(&cfg, set); /* the family's own --hidden and --latent unless given */
    int out_set = (set & vae_config_bit(vae_config_field("out"))) != 0;
    if (resume && strcmp(resume, "auto") && !out_set) cfg.out[0] = '\0'; /* the checkpoint's */
    if (resume && !strcmp(resume, "auto") && !out_set)
        return cli_usage_error(tc->name, "--resume auto needs --out DIR (where to look for checkpoints)");
    if (!(set & vae_config_bit(vae_config_field("test-data")))) default_test_data(&cfg);
    if (cli_parse_only()) return 0;
    return cli_finish(vae_train_run(&cfg, resume, set, MPI_COMM_WORLD));
}

int cli_cmd_train(int argc, char **argv) { return run_train(&train_cmd, argc, argv); }

int cli_cmd_classify(int argc, char **argv) { return run_train(&classify_cmd, argc, argv); }
