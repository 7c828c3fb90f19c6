/*
 * train.c: `mpivae train`: the training configuration from the command line,
 * the conv model's defaults, --resume and the held-out data, then the run.
 */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"

#include "mpivae/dataset.h"
#include "mpivae/train.h"

#include <getopt.h>
#include <limits.h>
#include <mpi.h>
#include <stdio.h>
#include <string.h>

static int parse_hidden(const char *cmd, const char *s, vae_arch *a)
{
    char buf[256];
    if (strlen(s) >= sizeof buf) return cli_usage_error(cmd, "--hidden '%.40s...' is too long", s);
    snprintf(buf, sizeof buf, "%s", s);
    a->n_hidden = 0;
    /* Split at every comma, so that an empty size ("400,,400", "400,") is an error, not skipped. */
    for (char *tok = buf, *comma;; tok = comma + 1) {
        comma = strchr(tok, ',');
        if (comma) *comma = '\0';
        if (a->n_hidden == VAE_MAX_HIDDEN) return cli_usage_error(cmd, "--hidden takes at most %d sizes", VAE_MAX_HIDDEN);
        if (!*tok) return cli_usage_error(cmd, "--hidden '%s' has an empty size", s);
        int rc = cli_parse_int(cmd, "--hidden", tok, 1, 65536, &a->hidden[a->n_hidden]);
        if (rc) return rc;
        a->n_hidden++;
        if (!comma) break;
    }
    return 0;
}

static const char *train_help =
    "usage: mpirun -np P mpivae train [options]\n"
    "\n"
    "data\n"
    "  --data FILE[:/dataset]   training data (default data/fashion-mnist.h5:/train/images);\n"
    "                           FILE alone is FILE:/train/images, in every command and flag\n"
    "  --test-data FILE[:/dataset]|none\n"
    "                           held-out data for --eval-every and the tools' default (default:\n"
    "                           FILE:/test/images of the training file when it has one); none:\n"
    "                           no evaluation (--eval-every is then refused)\n"
    "  --data-in-memory MODE    yes (one copy per node in shared memory), no (stream rows\n"
    "                           from the file per batch), auto (default: yes when it fits)\n"
    "model\n"
    "  --model mlp|conv         model family (default mlp)\n"
    "  --hidden H[,H2,...]      mlp: hidden layer sizes (default 400); conv: channels of the\n"
    "                           stride-2 Conv2d layers (default 32,64), mirrored by\n"
    "                           ConvTranspose2d layers in the decoder\n"
    "  --latent Z               latent dimensions (default 20 for mlp, 16 for conv)\n"
    "  --loss bce|mse           Bernoulli (data in [0,1]) or Gaussian/squared error (default bce)\n"
    "  --beta B                 KL weight (default 1)\n"
    "  --warmup STEPS           raise the KL weight linearly from 0 to beta over STEPS (default 0)\n"
    "  --capacity C:STEPS       capacity-controlled beta-VAE (Burgess et al. 2018): the KL term\n"
    "                           becomes beta * |KL - C| per sample, C rising linearly from 0 to\n"
    "                           C nats over STEPS steps (beta plays gamma)\n"
    "optimisation\n"
    "  --epochs E               (default 10)    --batch B   GLOBAL batch (default 128)\n"
    "  --lr LR                  Adam learning rate (default 1e-3)\n"
    "  --adam-beta1 B1 --adam-beta2 B2 --adam-eps EPS   (defaults 0.9, 0.999, 1e-8)\n"
    "  --seed S                 seed of every random draw (default 1)\n"
    "  --steps N                stop after global step N (default: all epochs)\n"
    "  --max-skips K            skip at most K consecutive non-finite steps; the next one in a\n"
    "                           row stops the run with status 1 (default 10; 0: stop at the first)\n"
    "  --allreduce MODE         shm (default): ranks of a node sum their gradients in shared\n"
    "                           memory, node leaders with one MPI_Allreduce; blocking: one\n"
    "                           MPI_Allreduce after backward; overlap: buckets reduced with\n"
    "                           MPI_Iallreduce while backward goes on\n"
    "output\n"
    "  --out DIR                run directory (default runs/default)\n"
    "  --log-every N            log line every N steps (default 100)\n"
    "  --eval-every N           test-set evaluation every N steps (default: at the end)\n"
    "  --sample-every N         sample grids every N steps (default: at the end)\n"
    "  --ckpt-every N           checkpoint every N steps (default: at the end and on signals)\n"
    "  --keep K                 checkpoints kept (default 3)\n"
    "resume\n"
    "  --resume auto|FILE       continue from the newest good checkpoint in DIR/checkpoints\n"
    "                           (auto: start fresh when there is none) or from FILE; the\n"
    "                           configuration comes from the checkpoint\n"
    "\n"
    "SIGUSR1, SIGTERM or SIGINT: finish the step, write a checkpoint, exit with status 75.\n"
    "Environment: OMP_NUM_THREADS, OPENBLAS_NUM_THREADS (threads per rank); OPENBLAS_CORETYPE\n"
    "(OpenBLAS's kernels: when unset and OpenBLAS falls back to generic ones on a CPU with\n"
    "AVX, AVX2 or AVX-512, mpivae sets it and starts again; the banner names the kernels).\n";

/* The values of the enumerated options. */
static const char *const in_memory_names[] = { "yes", "no", "auto", NULL };
static const int in_memory_values[] = { 1, 0, -1 };
static const char *const loss_names[] = { "bce", "mse", NULL };
static const int loss_values[] = { VAE_LOSS_BCE, VAE_LOSS_MSE };
static const char *const allreduce_names[] = { "shm", "blocking", "overlap", NULL };
static const int allreduce_values[] = { VAE_AR_SHM, VAE_AR_BLOCKING, VAE_AR_OVERLAP };

int cli_cmd_train(int argc, char **argv)
{
    vae_config cfg;
    vae_config_defaults(&cfg);
    snprintf(cfg.data, sizeof cfg.data, "data/fashion-mnist.h5:" VAE_DATA_DEFAULT_DSET);
    unsigned mask = 0;
    const char *resume = NULL, *test = NULL;
    int out_set = 0;
    static struct option opts[] = {
        { "data", required_argument, 0, 'd' }, { "test-data", required_argument, 0, 'T' },
        { "data-in-memory", required_argument, 0, 'M' }, { "model", required_argument, 0, 'm' },
        { "hidden", required_argument, 0, 'H' }, { "latent", required_argument, 0, 'z' },
        { "loss", required_argument, 0, 'L' }, { "beta", required_argument, 0, 'b' },
        { "warmup", required_argument, 0, 'w' }, { "epochs", required_argument, 0, 'e' },
        { "batch", required_argument, 0, 'B' }, { "lr", required_argument, 0, 'l' },
        { "adam-beta1", required_argument, 0, '1' }, { "adam-beta2", required_argument, 0, '2' },
        { "adam-eps", required_argument, 0, 'E' }, { "seed", required_argument, 0, 's' },
        { "steps", required_argument, 0, 'n' }, { "max-skips", required_argument, 0, 'K' },
        { "out", required_argument, 0, 'o' }, { "log-every", required_argument, 0, 'g' },
        { "eval-every", required_argument, 0, 'v' }, { "sample-every", required_argument, 0, 'p' },
        { "ckpt-every", required_argument, 0, 'c' }, { "keep", required_argument, 0, 'k' },
        { "resume", required_argument, 0, 'r' }, { "allreduce", required_argument, 0, 'A' },
        { "capacity", required_argument, 0, 'C' },
        { "help", no_argument, 0, 'h' }, { 0, 0, 0, 0 }
    };
    optind = 1;
    opterr = 0;
    int c, rc = 0;
    long seed = 0;
    while (!rc && (c = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
        switch (c) {
        case 'd':
            if (vae_data_full_spec(optarg, cfg.data, sizeof cfg.data)) rc = cli_usage_error("train", "--data '%s' is not FILE[:/dataset]", optarg);
            mask |= VAE_SET_DATA;
            break;
        case 'T': test = optarg; mask |= VAE_SET_TEST; break;
        case 'M': rc = cli_parse_enum("train", "--data-in-memory", optarg, in_memory_names, in_memory_values, &cfg.in_memory); break;
        case 'm':
            if (!strcmp(optarg, "mlp")) cfg.arch.kind = VAE_MODEL_MLP;
            else if (!strcmp(optarg, "conv")) cfg.arch.kind = VAE_MODEL_CONV;
            else rc = cli_usage_error("train", "--model '%s' is not a known model (mlp or conv)", optarg);
            mask |= VAE_SET_MODEL;
            break;
        case 'H': rc = parse_hidden("train", optarg, &cfg.arch); mask |= VAE_SET_HIDDEN; break;
        case 'z': rc = cli_parse_int("train", "--latent", optarg, 1, 4096, &cfg.arch.latent); mask |= VAE_SET_LATENT; break;
        case 'L': rc = cli_parse_enum("train", "--loss", optarg, loss_names, loss_values, &cfg.arch.loss); mask |= VAE_SET_LOSS; break;
        case 'b': rc = cli_parse_double("train", "--beta", optarg, 0, 1e6, &cfg.beta); mask |= VAE_SET_BETA; break;
        case 'w': rc = cli_parse_long("train", "--warmup", optarg, 0, LONG_MAX, &cfg.warmup); break;
        case 'C': {
            char buf[64], *colon;
            snprintf(buf, sizeof buf, "%s", optarg);
            colon = strchr(buf, ':');
            if (!colon) {
                rc = cli_usage_error("train", "--capacity '%s' is not C_MAX:STEPS", optarg);
                break;
            }
            *colon = '\0';
            rc = cli_parse_double("train", "--capacity", buf, 0, 1e6, &cfg.capacity_max);
            if (!rc) rc = cli_parse_long("train", "--capacity", colon + 1, 0, LONG_MAX, &cfg.capacity_steps);
            mask |= VAE_SET_CAPACITY;
            break;
        }
        case 'e': rc = cli_parse_int("train", "--epochs", optarg, 1, 1000000, &cfg.epochs); mask |= VAE_SET_EPOCHS; break;
        case 'B': rc = cli_parse_int("train", "--batch", optarg, 1, 1 << 24, &cfg.batch); mask |= VAE_SET_BATCH; break;
        case 'l': rc = cli_parse_double("train", "--lr", optarg, 0, 10, &cfg.lr); mask |= VAE_SET_LR; break;
        case '1': rc = cli_parse_double("train", "--adam-beta1", optarg, 0, 0.999999, &cfg.beta1); break;
        case '2': rc = cli_parse_double("train", "--adam-beta2", optarg, 0, 0.999999999, &cfg.beta2); break;
        case 'E': rc = cli_parse_double("train", "--adam-eps", optarg, 0, 1, &cfg.adam_eps); break;
        case 's':
            rc = cli_parse_long("train", "--seed", optarg, 0, LONG_MAX, &seed);
            if (!rc) cfg.seed = (uint64_t)seed;
            mask |= VAE_SET_SEED;
            break;
        case 'n': rc = cli_parse_long("train", "--steps", optarg, 0, LONG_MAX, &cfg.max_steps); mask |= VAE_SET_STEPS; break;
        case 'K': rc = cli_parse_int("train", "--max-skips", optarg, 0, 1000000, &cfg.max_skips); break;
        case 'o':
            if (strlen(optarg) >= sizeof cfg.out) rc = cli_usage_error("train", "--out is %zu characters long; at most %zu are taken", strlen(optarg), sizeof cfg.out - 1);
            else if (!optarg[0]) rc = cli_usage_error("train", "--out is empty");
            snprintf(cfg.out, sizeof cfg.out, "%s", optarg);
            out_set = 1;
            break;
        case 'g': rc = cli_parse_long("train", "--log-every", optarg, 0, LONG_MAX, &cfg.log_every); mask |= VAE_SET_INTERVALS; break;
        case 'v': rc = cli_parse_long("train", "--eval-every", optarg, 0, LONG_MAX, &cfg.eval_every); mask |= VAE_SET_INTERVALS | VAE_SET_EVAL; break;
        case 'p': rc = cli_parse_long("train", "--sample-every", optarg, 0, LONG_MAX, &cfg.sample_every); mask |= VAE_SET_INTERVALS; break;
        case 'c': rc = cli_parse_long("train", "--ckpt-every", optarg, 0, LONG_MAX, &cfg.ckpt_every); mask |= VAE_SET_INTERVALS; break;
        case 'k': rc = cli_parse_int("train", "--keep", optarg, 1, 1000000, &cfg.keep); mask |= VAE_SET_INTERVALS; break;
        case 'r': resume = optarg; break;
        case 'A': rc = cli_parse_enum("train", "--allreduce", optarg, allreduce_names, allreduce_values, &cfg.allreduce); break;
        case 'h': if (cli_rank == 0) fputs(train_help, stdout); return 0;
        default: return cli_bad_option("train", c, argv);
        }
    }
    if (rc) return rc;
    if (optind < argc) return cli_usage_error("train", "unexpected argument '%s'", argv[optind]);
    /* The conv model's own defaults: channels 32,64 and 16 latent dimensions. */
    if (cfg.arch.kind == VAE_MODEL_CONV && !(mask & VAE_SET_HIDDEN)) {
        cfg.arch.n_hidden = 2;
        cfg.arch.hidden[0] = 32;
        cfg.arch.hidden[1] = 64;
    }
    if (cfg.arch.kind == VAE_MODEL_CONV && !(mask & VAE_SET_LATENT)) cfg.arch.latent = 16;
    if (resume && strcmp(resume, "auto") && !out_set) cfg.out[0] = '\0'; /* the checkpoint's */
    if (resume && !strcmp(resume, "auto") && !out_set)
        return cli_usage_error("train", "--resume auto needs --out DIR (where to look for checkpoints)");
    /* Held-out data: explicit (FILE alone is FILE:/train/images, as everywhere), none, or /test/images of the training file. */
    if (test && strcmp(test, "none") && vae_data_full_spec(test, cfg.test_data, sizeof cfg.test_data))
        return cli_usage_error("train", "--test-data '%s' is not FILE[:/dataset] or none", test);
    if (!test) {
        char file[VAE_PATH_LEN], dset[256];
        if (!vae_data_parse_spec(cfg.data, VAE_DATA_DEFAULT_DSET, file, sizeof file, dset, sizeof dset) &&
            strcmp(dset, "/test/images") && vae_data_exists(file, "/test/images"))
            snprintf(cfg.test_data, sizeof cfg.test_data, "%.1000s:/test/images", file);
    }
    if (cli_parse_only()) return 0;
    return cli_finish(vae_train_run(&cfg, resume, mask, MPI_COMM_WORLD));
}
