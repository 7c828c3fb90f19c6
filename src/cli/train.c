/*
 * train.c: `mpivae train`: the options of the configuration table
 * (src/config.c) and --resume, the family's defaults, the held-out data,
 * then the run.
 */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"

#include "mpivae/config.h"
#include "mpivae/dataset.h"
#include "mpivae/train.h"

#include <getopt.h>
#include <mpi.h>
#include <stdio.h>
#include <string.h>

static void train_help(void)
{
    printf("usage: mpirun -np P mpivae train [options]\n\n");
    vae_config_help(stdout);
    printf("resume\n"
           "  --resume auto|FILE       continue from the newest good checkpoint in DIR/checkpoints\n"
           "                           (auto: start fresh when there is none) or from FILE; the\n"
           "                           configuration is the checkpoint's: --epochs, --steps,\n"
           "                           --max-skips, the --*-every intervals, --keep, --test-data,\n"
           "                           --data-in-memory, --allreduce and --out may be given anew,\n"
           "                           --data may name the same data elsewhere (or other data of\n"
           "                           the same rows when the checkpoint's file is gone);\n"
           "                           any other option that differs is refused\n");
}

enum { OPT_RESUME = 1000, OPT_HELP };

/* getopt_long's table: one entry per configuration field (val = its index), then --resume and --help. */
static const struct option *train_options(void)
{
    static struct option opts[64 + 3];
    int n = 0;
    for (int f = 0; f < vae_config_nfields; f++)
        opts[n++] = (struct option){ vae_config_fields[f].flag, required_argument, 0, f };
    opts[n++] = (struct option){ "resume", required_argument, 0, OPT_RESUME };
    opts[n++] = (struct option){ "help", no_argument, 0, OPT_HELP };
    opts[n] = (struct option){ 0, 0, 0, 0 };
    return opts;
}

/* Held-out data not given: /test/images of the training file when it has one. */
static void default_test_data(vae_config *cfg)
{
    char file[VAE_PATH_LEN], dset[256];
    if (!vae_data_parse_spec(cfg->data, VAE_DATA_DEFAULT_DSET, file, sizeof file, dset, sizeof dset) &&
        strcmp(dset, "/test/images") && vae_data_exists(file, "/test/images"))
        snprintf(cfg->test_data, sizeof cfg->test_data, "%.1000s:/test/images", file);
}

int cli_cmd_train(int argc, char **argv)
{
    vae_config cfg;
    vae_config_defaults(&cfg);
    uint64_t set = 0;
    const char *resume = NULL;
    const struct option *opts = train_options();
    char why[512];
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
        if (c == OPT_RESUME) resume = optarg;
        else if (c == OPT_HELP) {
            if (cli_rank == 0) train_help();
            return 0;
        } else if (c >= 0 && c < vae_config_nfields) {
            if (vae_config_set(&cfg, c, optarg, why, sizeof why)) return cli_usage_error("train", "%s", why);
            set |= vae_config_bit(c);
        } else return cli_bad_option("train", c, argv);
    }
    if (optind < argc) return cli_usage_error("train", "unexpected argument '%s'", argv[optind]);
    vae_config_family_defaults(&cfg, set); /* the family's own --hidden and --latent unless given */
    int out_set = (set & vae_config_bit(vae_config_field("out"))) != 0;
    if (resume && strcmp(resume, "auto") && !out_set) cfg.out[0] = '\0'; /* the checkpoint's */
    if (resume && !strcmp(resume, "auto") && !out_set)
        return cli_usage_error("train", "--resume auto needs --out DIR (where to look for checkpoints)");
    if (!(set & vae_config_bit(vae_config_field("test-data")))) default_test_data(&cfg);
    if (cli_parse_only()) return 0;
    return cli_finish(vae_train_run(&cfg, resume, set, MPI_COMM_WORLD));
}
