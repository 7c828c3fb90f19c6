/*
 * main.c: the `mpivae` command line: subcommands data, train, eval, sample,
 * reconstruct, each with --help. The program's one fatal path lives here.
 *
 * Exit status: 0 success, 1 failure (after one message), 2 usage error,
 * 75 (VAE_EXIT_REQUEUE) training stopped by a signal after a checkpoint.
 */
#define _POSIX_C_SOURCE 200809L
#include "mpivae/blas.h"
#include "mpivae/checkpoint.h"
#include "mpivae/comm.h"
#include "mpivae/dataset.h"
#include "mpivae/image.h"
#include "mpivae/importer.h"
#include "mpivae/latent.h"
#include "mpivae/model.h"
#include "mpivae/status.h"
#include "mpivae/tools.h"
#include "mpivae/train.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <hdf5.h>
#include <limits.h>
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#define EXIT_USAGE 2

static int g_rank = 0;

/* Prints a usage error once (rank 0) and returns the usage exit status. */
static int usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int usage_error(const char *cmd, const char *fmt, ...)
{
    if (g_rank == 0) {
        va_list ap;
        va_start(ap, fmt);
        fprintf(stderr, "[rank 0] error: ");
        vfprintf(stderr, fmt, ap);
        fprintf(stderr, " (see 'mpivae %s --help')\n", cmd);
        va_end(ap);
    }
    return EXIT_USAGE;
}

/* ---- strict number parsing ---- */

static int parse_long(const char *cmd, const char *flag, const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end)
        return usage_error(cmd, "%s '%s' is not an integer", flag, s);
    if (v < lo || v > hi) return usage_error(cmd, "%s %ld is out of range %ld..%ld", flag, v, lo, hi);
    *out = v;
    return 0;
}

static int parse_int(const char *cmd, const char *flag, const char *s, long lo, long hi, int *out)
{
    long v = 0;
    int rc = parse_long(cmd, flag, s, lo, hi, &v);
    if (!rc) *out = (int)v;
    return rc;
}

static int parse_double(const char *cmd, const char *flag, const char *s, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v)) return usage_error(cmd, "%s '%s' is not a number", flag, s);
    if (v < lo || v > hi) return usage_error(cmd, "%s %g is out of range [%g, %g]", flag, v, lo, hi);
    *out = v;
    return 0;
}

/*
 * Test hook of the command-line fuzzer (tests/fuzz): with MPIVAE_TEST_PARSE_ONLY=1
 * every command returns after checking its arguments, before it reads or writes a file.
 */
static int parse_only(void)
{
    const char *e = getenv("MPIVAE_TEST_PARSE_ONLY");
    return e && e[0] == '1';
}

/* Every argument is an option: a stray one (a second checkpoint, a file name) is an error, not ignored. */
static int no_stray(const char *cmd, int argc, char **argv)
{
    if (optind < argc) return usage_error(cmd, "unexpected argument '%s'", argv[optind]);
    return 0;
}

/* Handles getopt's '?' and ':' results with one clear message. */
static int bad_option(const char *cmd, int c, char **argv)
{
    const char *arg = argv[optind - 1];
    if (c == ':') return usage_error(cmd, "option '%s' needs a value", arg);
    return usage_error(cmd, "unknown option '%s' for 'mpivae %s'", arg, cmd);
}

static int finish(int rc)
{
    if (rc == VAE_ESTOP) return VAE_EXIT_REQUEUE;
    return rc == 0 ? 0 : 1;
}

/* ---- data ---- */

static const char *data_help =
    "usage: mpivae data fashion-mnist --out FILE [--src DIR]\n"
    "       mpivae data synth --out FILE [--n-train N] [--n-test N] [--channels C] [--height H]\n"
    "                         [--width W] [--classes K] [--seed S]\n"
    "       mpivae data info FILE\n"
    "\n"
    "fashion-mnist  import the IDX files of Debian's dataset-fashion-mnist (default --src\n"
    "               " VAE_FASHION_MNIST_DIR ") into /train/images, /train/labels,\n"
    "               /test/images, /test/labels (uint8, chunked)\n"
    "synth          write a small synthetic image set of K shape classes (defaults: 2000 train,\n"
    "               500 test, 1x16x16, 4 classes, seed 1)\n"
    "info           list every dataset of an HDF5 file with shape, type and value range\n";

static int cmd_data(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        if (g_rank == 0) fputs(data_help, stdout);
        return argc < 2 ? EXIT_USAGE : 0;
    }
    const char *sub = argv[1];
    const char *out = NULL, *src = VAE_FASHION_MNIST_DIR;
    int ntr = 2000, nte = 500, C = 1, Hh = 16, W = 16, K = 4;
    long seed = 1;
    static struct option opts[] = {
        { "out", required_argument, 0, 'o' }, { "src", required_argument, 0, 's' },
        { "n-train", required_argument, 0, 'n' }, { "n-test", required_argument, 0, 't' },
        { "channels", required_argument, 0, 'c' }, { "height", required_argument, 0, 'H' },
        { "width", required_argument, 0, 'W' }, { "classes", required_argument, 0, 'k' },
        { "seed", required_argument, 0, 'S' }, { "help", no_argument, 0, 'h' }, { 0, 0, 0, 0 }
    };
    optind = 1;
    opterr = 0;
    int c, rc = 0;
    while ((c = getopt_long(argc - 1, argv + 1, ":", opts, NULL)) != -1 && !rc) {
        switch (c) {
        case 'o': out = optarg; break;
        case 's': src = optarg; break;
        case 'n': rc = parse_int("data", "--n-train", optarg, 1, 100000000, &ntr); break;
        case 't': rc = parse_int("data", "--n-test", optarg, 1, 100000000, &nte); break;
        case 'c': rc = parse_int("data", "--channels", optarg, 1, 64, &C); break;
        case 'H': rc = parse_int("data", "--height", optarg, 4, 4096, &Hh); break;
        case 'W': rc = parse_int("data", "--width", optarg, 4, 4096, &W); break;
        case 'k': rc = parse_int("data", "--classes", optarg, 1, 10, &K); break;
        case 'S': rc = parse_long("data", "--seed", optarg, 0, LONG_MAX, &seed); break;
        case 'h': if (g_rank == 0) fputs(data_help, stdout); return 0;
        default: return bad_option("data", c, argv + 1);
        }
    }
    if (rc) return rc;
    if (parse_only()) return 0;
    if (g_rank != 0) return 0; /* the data tools are serial */
    if (!strcmp(sub, "info")) {
        if (optind + 1 >= argc) return usage_error("data", "'data info' needs a FILE");
        return finish(vae_data_info(argv[optind + 1], stdout));
    }
    if (strcmp(sub, "fashion-mnist") && strcmp(sub, "synth"))
        return usage_error("data", "unknown data tool '%s' (fashion-mnist, synth or info)", sub);
    if (!out) return usage_error("data", "'data %s' needs --out FILE", sub);
    if (!strcmp(sub, "fashion-mnist")) {
        rc = vae_import_fashion_mnist(src, out);
        if (!rc) printf("wrote %s from %s\n", out, src);
    } else {
        rc = vae_import_synth(out, ntr, nte, C, Hh, W, K, (uint64_t)seed);
        if (!rc) printf("wrote %s: %d train and %d test images of %dx%dx%d, %d classes\n", out, ntr, nte, C, Hh, W, K);
    }
    return finish(rc);
}

/* ---- train ---- */

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

/* getopt_long's table: one entry per configuration field (val = index), then --resume and --help. */
static struct option *train_options(void)
{
    static struct option opts[64 + 3];
    int n = 0;
    for (int f = 0; f < vae_config_nfields; f++) opts[n++] = (struct option){ vae_config_fields[f].flag, required_argument, 0, f };
    opts[n++] = (struct option){ "resume", required_argument, 0, 'r' + 1000 };
    opts[n++] = (struct option){ "help", no_argument, 0, 'h' + 1000 };
    opts[n] = (struct option){ 0, 0, 0, 0 };
    return opts;
}

static int cmd_train(int argc, char **argv)
{
    vae_config cfg;
    vae_config_defaults(&cfg);
    uint64_t set = 0;
    const char *resume = NULL;
    struct option *opts = train_options();
    optind = 1;
    opterr = 0;
    int c;
    char why[512];
    while ((c = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
        if (c == 'r' + 1000) resume = optarg;
        else if (c == 'h' + 1000) {
            if (g_rank == 0) train_help();
            return 0;
        } else if (c >= 0 && c < vae_config_nfields) {
            if (vae_config_set(&cfg, c, optarg, why, sizeof why)) return usage_error("train", "%s", why);
            set |= vae_config_bit(c);
        } else return bad_option("train", c, argv);
    }
    if (optind < argc) return usage_error("train", "unexpected argument '%s'", argv[optind]);
    /* The family's own --hidden and --latent unless given. */
    vae_config_family_defaults(&cfg, set);
    int out_set = (set & vae_config_bit(vae_config_field("out"))) != 0;
    if (resume && strcmp(resume, "auto") && !out_set) cfg.out[0] = '\0'; /* the checkpoint's */
    if (resume && !strcmp(resume, "auto") && !out_set)
        return usage_error("train", "--resume auto needs --out DIR (where to look for checkpoints)");
    /* Held-out data not given: /test/images of the training file when it has one. */
    if (!(set & vae_config_bit(vae_config_field("test-data")))) {
        char file[VAE_PATH_LEN], dset[256];
        if (!vae_data_parse_spec(cfg.data, VAE_DATA_DEFAULT_DSET, file, sizeof file, dset, sizeof dset) &&
            strcmp(dset, "/test/images") && vae_data_exists(file, "/test/images"))
            snprintf(cfg.test_data, sizeof cfg.test_data, "%.1000s:/test/images", file);
    }
    if (parse_only()) return 0;
    return finish(vae_train_run(&cfg, resume, set, MPI_COMM_WORLD));
}

/* ---- tools on a checkpoint ---- */

/*
 * Loads the configuration and parameters of a checkpoint into a model for
 * batches of max_batch. *ckpt may name a run directory: rank 0 picks its
 * newest good checkpoint, and *ckpt then points to that file's path.
 */
static int load_model(const char **ckpt, vae_config *cfg, vae_model *m, int max_batch, unsigned tool, const char *cmd)
{
    static char path[VAE_PATH_LEN + 64];
    vae_train_state st;
    vae_defer_begin();
    int rc = g_rank == 0 ? vae_ckpt_resolve(*ckpt, path, sizeof path) : VAE_OK;
    rc = vae_agree(rc, MPI_COMM_WORLD);
    if (rc) return rc;
    MPI_Bcast(path, sizeof path, MPI_CHAR, 0, MPI_COMM_WORLD);
    *ckpt = path;
    vae_defer_begin();
    rc = vae_ckpt_read_meta(path, cfg, &st);
    /* The file's tensors must match the attributes before a model of their size is allocated. */
    if (!rc) rc = vae_family_serves(vae_family_get(cfg->arch.kind), tool, cmd, path);
    if (!rc) rc = vae_model_plan(m, &cfg->arch);
    if (!rc) rc = vae_ckpt_check_tensors(path, m, 0);
    if (!rc) rc = vae_model_init(m, &cfg->arch, max_batch);
    if (!rc) rc = vae_ckpt_read_tensors(path, m, 0);
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

/* Opens the tool's data (tool_data) on every rank. */
static int open_data(vae_data *d, const char *given, const vae_config *cfg, const char *ckpt, int in_memory, int max_rows)
{
    char spec[VAE_PATH_LEN + 300];
    vae_defer_begin();
    int rc = vae_agree(tool_data(given, cfg, ckpt, spec, sizeof spec), MPI_COMM_WORLD);
    if (!rc) rc = vae_data_open(d, spec, MPI_COMM_WORLD, in_memory, max_rows);
    return rc;
}

static int check_shape(const vae_data *d, const vae_config *cfg, const char *ckpt)
{
    if (d->C == cfg->arch.C && d->Hh == cfg->arch.Hh && d->W == cfg->arch.W) return 0;
    if (g_rank == 0)
        vae_error(VAE_EDATA, "'%s:%s' has rows of %dx%dx%d but the model in '%s' takes %dx%dx%d", d->file, d->dset,
                  d->C, d->Hh, d->W, ckpt, cfg->arch.C, cfg->arch.Hh, cfg->arch.W);
    return VAE_EDATA;
}

static const char *eval_help =
    "usage: mpirun -np P mpivae eval --ckpt FILE [--data FILE[:/dataset]] [--mean] [--limit N]\n"
    "                                 [--batch B] [--seed S]\n"
    "\n"
    "Prints the held-out loss per sample (reconstruction + beta * KL, and each term) over the\n"
    "rows of --data (FILE alone is FILE:/train/images; default: the checkpoint's held-out data).\n"
    "Units: nats under --loss bce; under --loss mse the reconstruction is the squared error\n"
    "summed over pixels (KL in nats). z is sampled from q(z|x)\n"
    "with noise keyed by --seed and the row index; --mean uses z = mu (deterministic).\n"
    "--limit N evaluates the first N rows. Rows are shared across ranks.\n";

static int cmd_eval(int argc, char **argv)
{
    const char *ckpt = NULL, *data = NULL;
    int use_mean = 0, batch = 256;
    long limit = 0, seed = 1;
    static struct option opts[] = {
        { "ckpt", required_argument, 0, 'c' }, { "data", required_argument, 0, 'd' },
        { "mean", no_argument, 0, 'm' }, { "limit", required_argument, 0, 'n' },
        { "batch", required_argument, 0, 'B' }, { "seed", required_argument, 0, 's' },
        { "help", no_argument, 0, 'h' }, { 0, 0, 0, 0 }
    };
    optind = 1;
    opterr = 0;
    int c, rc = 0;
    while (!rc && (c = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
        switch (c) {
        case 'c': ckpt = optarg; break;
        case 'd': data = optarg; break;
        case 'm': use_mean = 1; break;
        case 'n': rc = parse_long("eval", "--limit", optarg, 0, LONG_MAX, &limit); break;
        case 'B': rc = parse_int("eval", "--batch", optarg, 1, 4096, &batch); break;
        case 's': rc = parse_long("eval", "--seed", optarg, 0, LONG_MAX, &seed); break;
        case 'h': if (g_rank == 0) fputs(eval_help, stdout); return 0;
        default: return bad_option("eval", c, argv);
        }
    }
    if (rc) return rc;
    if (no_stray("eval", argc, argv)) return EXIT_USAGE;
    if (!ckpt) return usage_error("eval", "--ckpt FILE is required");
    if (parse_only()) return 0;
    vae_config cfg;
    vae_model m;
    vae_data d;
    memset(&m, 0, sizeof m);
    memset(&d, 0, sizeof d);
    rc = load_model(&ckpt, &cfg, &m, batch, VAE_TOOL_EVAL, "eval");
    if (!rc) rc = open_data(&d, data, &cfg, ckpt, -1, batch);
    if (!rc) rc = check_shape(&d, &cfg, ckpt);
    if (!rc) rc = vae_data_check(&d, cfg.arch.loss == VAE_LOSS_BCE, MPI_COMM_WORLD);
    vae_eval_result r;
    if (!rc) rc = vae_evaluate(&m, &d, MPI_COMM_WORLD, (uint64_t)seed, cfg.beta, use_mean, limit, &r);
    if (!rc && g_rank == 0) {
        printf("eval: loss=%.6f", r.loss);
        for (int t = 0; t < m.fam->n_terms; t++) printf(" %s=%.6f", m.fam->terms[t].name, r.terms[t]);
        printf(" rows=%lld z=%s data=%s:%s unit: %s\n", (long long)r.rows, use_mean ? "mean" : "sampled", d.file, d.dset,
               vae_loss_unit(cfg.arch.loss));
    }
    vae_data_close(&d);
    vae_model_free(&m);
    return finish(rc);
}

/*
 * A tool's output files. Rank 0 writes each under a temporary name beside its
 * final one (".NAME.tmp-PID") and renames them into place, after fsync, only
 * when all are complete: a failure (a full disk, a bad value found late)
 * leaves no partial output, and an earlier file of the same name is replaced
 * only by a complete one.
 */
typedef struct outputs {
    int n;
    char fin[4][VAE_PATH_LEN + 40];
    char tmp[4][VAE_PATH_LEN + 80];
} outputs;

/* Adds an output; returns the temporary name to write it under. */
static const char *out_add(outputs *o, const char *final)
{
    int i = o->n++;
    snprintf(o->fin[i], sizeof o->fin[i], "%s", final);
    const char *slash = strrchr(final, '/');
    int dl = slash ? (int)(slash - final + 1) : 0;
    snprintf(o->tmp[i], sizeof o->tmp[i], "%.*s.%s.tmp-%ld", dl, final, final + dl, (long)getpid());
    return o->tmp[i];
}

/* True when a and b name the same existing file (or the same path). */
static int same_file(const char *a, const char *b)
{
    struct stat sa, sb;
    if (!a || !b) return 0;
    if (!strcmp(a, b)) return 1;
    return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

/* Refuses an output that is, or derives to, one of the command's input files (NULL or "": none). */
static int out_refuse(const char *cmd, const outputs *o, const char *ckpt, const char *data_file, const char *labels_file)
{
    const char *in[3] = { ckpt, data_file, labels_file };
    for (int i = 0; i < o->n; i++)
        for (int k = 0; k < 3; k++)
            if (in[k] && in[k][0] && same_file(o->fin[i], in[k]))
                return vae_error(VAE_EINVAL, "mpivae %s would write '%s', which is its input '%s': choose another --out",
                                 cmd, o->fin[i], in[k]);
    return 0;
}

/* out_refuse on rank 0, agreed by every rank. */
static int out_check(const char *cmd, const outputs *o, const char *ckpt, const char *data_file, const char *labels_file)
{
    vae_defer_begin();
    int rc = g_rank == 0 ? out_refuse(cmd, o, ckpt, data_file, labels_file) : 0;
    return vae_agree(rc, MPI_COMM_WORLD);
}

/* Publishes every output (fsync, rename) when rc is 0, else removes them; returns rc or the publishing failure. */
static int out_finish(outputs *o, int rc)
{
    for (int i = 0; i < o->n; i++) {
        if (!rc) {
            int fd = open(o->tmp[i], O_RDONLY);
            if (fd < 0 || fsync(fd) != 0 || rename(o->tmp[i], o->fin[i]) != 0)
                rc = vae_error(VAE_EIO, "cannot publish '%s': %s", o->fin[i], strerror(errno));
            if (fd >= 0) close(fd);
            if (!rc) continue;
        }
        unlink(o->tmp[i]);
    }
    o->n = 0;
    return rc;
}

/* OUT.png -> OUT.h5 beside it. */
static void h5_beside(const char *png, char *h5, size_t len)
{
    snprintf(h5, len, "%s", png);
    size_t n = strlen(h5);
    if (n > 4 && !strcmp(h5 + n - 4, ".png")) h5[n - 4] = '\0';
    strncat(h5, ".h5", len - strlen(h5) - 1);
}

/*
 * Refuses an --out that is empty or does not end in ext (".png" for the image tools, ".h5" for
 * anomaly and encode); writes says what the tool writes. Returns 0 or the usage exit status.
 */
static int check_out(const char *cmd, const char *out, const char *ext, const char *writes)
{
    size_t n = strlen(out), e = strlen(ext);
    if (n == 0) return usage_error(cmd, "--out is empty: %s", writes);
    if (n < e || strcmp(out + n - e, ext)) return usage_error(cmd, "--out '%s' does not end in %s: %s", out, ext, writes);
    if (n == e || out[n - e - 1] == '/') return usage_error(cmd, "--out '%s' has no name before %s: %s", out, ext, writes);
    if (n >= VAE_PATH_LEN) return usage_error(cmd, "--out is %zu characters long; at most %d are taken", n, VAE_PATH_LEN - 1);
    return 0;
}

/* What the image tools write, for check_out's messages. */
#define WRITES_PNG(cmd) cmd " writes a PNG (OUT.png) and OUT.h5 beside it"

static const char *sample_help =
    "usage: mpivae sample --ckpt FILE --out OUT.png [--n N] [--temperature T] [--seed S] [--cols K]\n"
    "\n"
    "Decodes N (default 64) samples z ~ N(0, T^2 I) of the prior into a grid PNG (OUT.png) and\n"
    "an HDF5 file beside it (OUT.h5, dataset /samples [N, C, H, W]). Deterministic for a seed.\n"
    "--out must end in .png.\n";

static int cmd_sample(int argc, char **argv)
{
    const char *ckpt = NULL, *out = NULL;
    int n = 64, cols = 8;
    long seed = 1;
    double temp = 1.0;
    static struct option opts[] = {
        { "ckpt", required_argument, 0, 'c' }, { "out", required_argument, 0, 'o' },
        { "n", required_argument, 0, 'n' }, { "temperature", required_argument, 0, 't' },
        { "seed", required_argument, 0, 's' }, { "cols", required_argument, 0, 'k' },
        { "help", no_argument, 0, 'h' }, { 0, 0, 0, 0 }
    };
    optind = 1;
    opterr = 0;
    int c, rc = 0;
    while (!rc && (c = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
        switch (c) {
        case 'c': ckpt = optarg; break;
        case 'o': out = optarg; break;
        case 'n': rc = parse_int("sample", "--n", optarg, 1, 100000, &n); break;
        case 't': rc = parse_double("sample", "--temperature", optarg, 0, 100, &temp); break;
        case 's': rc = parse_long("sample", "--seed", optarg, 0, LONG_MAX, &seed); break;
        case 'k': rc = parse_int("sample", "--cols", optarg, 1, 1000, &cols); break;
        case 'h': if (g_rank == 0) fputs(sample_help, stdout); return 0;
        default: return bad_option("sample", c, argv);
        }
    }
    if (rc) return rc;
    if (no_stray("sample", argc, argv)) return EXIT_USAGE;
    if (!ckpt || !out) return usage_error("sample", "--ckpt FILE and --out OUT.png are required");
    rc = check_out("sample", out, ".png", WRITES_PNG("sample"));
    if (rc) return rc;
    if (parse_only()) return 0;
    vae_config cfg;
    vae_model m;
    memset(&m, 0, sizeof m);
    rc = load_model(&ckpt, &cfg, &m, 256, VAE_TOOL_SAMPLE, "sample");
    float *img = NULL;
    outputs o = { 0 };
    char h5[VAE_PATH_LEN + 8];
    h5_beside(out, h5, sizeof h5);
    const char *png_t = out_add(&o, out), *h5_t = out_add(&o, h5);
    if (!rc) rc = out_check("sample", &o, ckpt, NULL, NULL);
    if (!rc && g_rank == 0) {
        img = malloc((size_t)n * m.D * sizeof(float));
        if (!img) rc = vae_error(VAE_ENOMEM, "cannot allocate %d images", n);
        if (!rc) {
            vae_sample_prior(&m, (uint64_t)seed, 0, (float)temp, n, img);
            rc = vae_image_write_grid(png_t, img, n, cfg.arch.C, cfg.arch.Hh, cfg.arch.W, cols, 2);
        }
        if (!rc) rc = vae_h5_write_images(h5_t, "/samples", img, n, cfg.arch.C, cfg.arch.Hh, cfg.arch.W);
        rc = out_finish(&o, rc);
        if (!rc) printf("wrote %s and %s (%d samples, temperature %g, seed %ld)\n", out, h5, n, temp, seed);
    }
    free(img);
    vae_model_free(&m);
    return finish(rc);
}

static const char *recon_help =
    "usage: mpivae reconstruct --ckpt FILE --out OUT.png [--data FILE[:/dataset]] [--n N] [--first I]\n"
    "                          [--cols K]\n"
    "\n"
    "Writes N (default 32) rows of --data (FILE alone is FILE:/train/images; default: the\n"
    "checkpoint's held-out data) starting at row I\n"
    "over their reconstructions (z = mu): per group of K (default 8) images, a row of inputs then\n"
    "a row of reconstructions. Also OUT.h5 with /images [2N, C, H, W] in the same order.\n"
    "--out must end in .png.\n";

static int cmd_reconstruct(int argc, char **argv)
{
    const char *ckpt = NULL, *out = NULL, *data = NULL;
    int n = 32, cols = 8;
    long first = 0;
    static struct option opts[] = {
        { "ckpt", required_argument, 0, 'c' }, { "out", required_argument, 0, 'o' },
        { "data", required_argument, 0, 'd' }, { "n", required_argument, 0, 'n' },
        { "first", required_argument, 0, 'f' }, { "cols", required_argument, 0, 'k' },
        { "help", no_argument, 0, 'h' }, { 0, 0, 0, 0 }
    };
    optind = 1;
    opterr = 0;
    int c, rc = 0;
    while (!rc && (c = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
        switch (c) {
        case 'c': ckpt = optarg; break;
        case 'o': out = optarg; break;
        case 'd': data = optarg; break;
        case 'n': rc = parse_int("reconstruct", "--n", optarg, 1, 100000, &n); break;
        case 'f': rc = parse_long("reconstruct", "--first", optarg, 0, LONG_MAX, &first); break;
        case 'k': rc = parse_int("reconstruct", "--cols", optarg, 1, 1000, &cols); break;
        case 'h': if (g_rank == 0) fputs(recon_help, stdout); return 0;
        default: return bad_option("reconstruct", c, argv);
        }
    }
    if (rc) return rc;
    if (no_stray("reconstruct", argc, argv)) return EXIT_USAGE;
    if (!ckpt || !out) return usage_error("reconstruct", "--ckpt FILE and --out OUT.png are required");
    rc = check_out("reconstruct", out, ".png", WRITES_PNG("reconstruct"));
    if (rc) return rc;
    if (parse_only()) return 0;
    vae_config cfg;
    vae_model m;
    vae_data d;
    memset(&m, 0, sizeof m);
    memset(&d, 0, sizeof d);
    rc = load_model(&ckpt, &cfg, &m, 1, VAE_TOOL_RECONSTRUCT, "reconstruct");
    if (!rc) rc = open_data(&d, data, &cfg, ckpt, 0, 1);
    if (!rc) rc = check_shape(&d, &cfg, ckpt);
    if (!rc && first > d.N - n) { /* not first + n: --first may be near LONG_MAX */
        if (g_rank == 0)
            vae_error(VAE_EINVAL, "--first %ld --n %d asks for rows past the end: '%s:%s' has %lld rows", first, n, d.file,
                      d.dset, (long long)d.N);
        rc = VAE_EINVAL;
    }
    float *img = NULL;
    outputs o = { 0 };
    char h5[VAE_PATH_LEN + 8];
    h5_beside(out, h5, sizeof h5);
    const char *png_t = out_add(&o, out), *h5_t = out_add(&o, h5);
    if (!rc) rc = out_check("reconstruct", &o, ckpt, d.file, NULL);
    if (!rc && g_rank == 0) {
        int groups = (n + cols - 1) / cols;
        img = calloc((size_t)groups * 2 * cols * m.D, sizeof(float));
        if (!img) rc = vae_error(VAE_ENOMEM, "cannot allocate %d images", 2 * n);
        if (!rc) rc = vae_reconstruct_grid(&m, &d, first, n, cols, img);
        if (!rc) rc = vae_image_write_grid(png_t, img, groups * 2 * cols, cfg.arch.C, cfg.arch.Hh, cfg.arch.W, cols, 2);
        if (!rc) rc = vae_h5_write_images(h5_t, "/images", img, groups * 2 * cols, cfg.arch.C, cfg.arch.Hh, cfg.arch.W);
        rc = out_finish(&o, rc);
        if (!rc) printf("wrote %s and %s (%d inputs over their reconstructions)\n", out, h5, n);
    }
    free(img);
    vae_data_close(&d);
    vae_model_free(&m);
    return finish(rc);
}


/* ---- latent-space tools ---- */

/* Opens the tool's data on every rank and checks it against the checkpoint's model. */
static int open_tool_data(vae_data *d, const char *given, const vae_config *cfg, const char *ckpt, int max_rows)
{
    int rc = open_data(d, given, cfg, ckpt, -1, max_rows);
    if (!rc) rc = check_shape(d, cfg, ckpt);
    return rc;
}

static int check_index(const char *cmd, const char *flag, long i, const vae_data *d)
{
    if (i >= 0 && i < d->N) return 0;
    if (g_rank == 0)
        vae_error(VAE_EINVAL, "%s %ld is out of range: '%s:%s' has %lld rows (0..%lld) (mpivae %s)", flag, i, d->file,
                  d->dset, (long long)d->N, (long long)d->N - 1, cmd);
    return VAE_EINVAL;
}

/* Rank 0 encodes one row to its mean. */
static int encode_one(vae_model *m, vae_data *d, int64_t row, float *mu)
{
    int rc = vae_data_rows(d, &row, 1, vae_model_input(m));
    if (rc) return rc;
    vae_model_encode(m, 1, mu, NULL);
    return VAE_OK;
}

static const char *interp_help =
    "usage: mpivae interpolate --ckpt FILE --from I --to J --out OUT.png [--data FILE[:/ds]]\n"
    "                          [--steps K] [--spherical]\n"
    "\n"
    "Encodes rows I and J of --data (FILE alone is FILE:/train/images; default: the checkpoint's\n"
    "held-out data) to their means,\n"
    "walks K (default 10) points from one to the other, linearly or along the great circle\n"
    "(--spherical), and decodes them. OUT.png is one strip: row I, the K decoded points, row J.\n"
    "OUT.h5 holds /z [K, Z], /images [K, C, H, W] and /inputs [2, C, H, W]. --out must end in .png.\n";

static int cmd_interpolate(int argc, char **argv)
{
    const char *ckpt = NULL, *out = NULL, *data = NULL;
    long from = -1, to = -1;
    int K = 10, spherical = 0;
    static struct option opts[] = {
        { "ckpt", required_argument, 0, 'c' }, { "out", required_argument, 0, 'o' },
        { "data", required_argument, 0, 'd' }, { "from", required_argument, 0, 'f' },
        { "to", required_argument, 0, 't' }, { "steps", required_argument, 0, 'k' },
        { "spherical", no_argument, 0, 's' }, { "help", no_argument, 0, 'h' }, { 0, 0, 0, 0 }
    };
    optind = 1;
    opterr = 0;
    int c, rc = 0;
    while (!rc && (c = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
        switch (c) {
        case 'c': ckpt = optarg; break;
        case 'o': out = optarg; break;
        case 'd': data = optarg; break;
        case 'f': rc = parse_long("interpolate", "--from", optarg, 0, LONG_MAX, &from); break;
        case 't': rc = parse_long("interpolate", "--to", optarg, 0, LONG_MAX, &to); break;
        case 'k': rc = parse_int("interpolate", "--steps", optarg, 2, 1000, &K); break;
        case 's': spherical = 1; break;
        case 'h': if (g_rank == 0) fputs(interp_help, stdout); return 0;
        default: return bad_option("interpolate", c, argv);
        }
    }
    if (rc) return rc;
    if (no_stray("interpolate", argc, argv)) return EXIT_USAGE;
    if (!ckpt || !out || from < 0 || to < 0)
        return usage_error("interpolate", "--ckpt FILE, --from I, --to J and --out OUT.png are required");
    rc = check_out("interpolate", out, ".png", WRITES_PNG("interpolate"));
    if (rc) return rc;
    if (parse_only()) return 0;
    vae_config cfg;
    vae_model m;
    vae_data d;
    memset(&m, 0, sizeof m);
    memset(&d, 0, sizeof d);
    rc = load_model(&ckpt, &cfg, &m, K + 2, VAE_TOOL_INTERPOLATE, "interpolate");
    if (!rc) rc = open_tool_data(&d, data, &cfg, ckpt, 1);
    if (!rc) rc = check_index("interpolate", "--from", from, &d);
    if (!rc) rc = check_index("interpolate", "--to", to, &d);
    float *buf = NULL;
    if (!rc && g_rank == 0) {
        const int Z = m.Z, D = m.D;
        buf = malloc(((size_t)2 * Z + (size_t)K * Z + (size_t)(K + 4) * D) * sizeof(float));
        if (!buf) rc = vae_error(VAE_ENOMEM, "cannot allocate %d images", K + 2);
        /* strip[K+2, D]: input I, the K decoded points, input J; inputs[2, D]: I and J. */
        float *a = buf, *b = a + Z, *z = b + Z, *strip = z + (size_t)K * Z, *inputs = strip + (size_t)(K + 2) * D;
        int64_t ri = from, rj = to;
        if (!rc) rc = encode_one(&m, &d, from, a);
        if (!rc) rc = encode_one(&m, &d, to, b);
        if (!rc) rc = vae_data_rows(&d, &ri, 1, inputs);
        if (!rc) rc = vae_data_rows(&d, &rj, 1, inputs + D);
        if (!rc) {
            vae_latent_path(a, b, Z, K, spherical, z);
            vae_model_decode(&m, z, K, strip + D);
            memcpy(strip, inputs, (size_t)D * sizeof(float));
            memcpy(strip + (size_t)(K + 1) * D, inputs + D, (size_t)D * sizeof(float));
        }
        outputs o = { 0 };
        char h5[VAE_PATH_LEN + 8];
        h5_beside(out, h5, sizeof h5);
        const char *png_t = out_add(&o, out), *h5_t = out_add(&o, h5);
        if (!rc) rc = out_refuse("interpolate", &o, ckpt, d.file, NULL);
        if (!rc) rc = vae_image_write_grid(png_t, strip, K + 2, cfg.arch.C, cfg.arch.Hh, cfg.arch.W, K + 2, 2);
        if (!rc) rc = vae_h5_write_matrix(h5_t, "/z", z, K, Z);
        if (!rc) rc = vae_h5_write_images(h5_t, "/images", strip + D, K, cfg.arch.C, cfg.arch.Hh, cfg.arch.W);
        if (!rc) rc = vae_h5_write_images(h5_t, "/inputs", inputs, 2, cfg.arch.C, cfg.arch.Hh, cfg.arch.W);
        rc = out_finish(&o, rc);
        if (!rc) printf("wrote %s and %s: rows %ld and %ld, %d %s steps\n", out, h5, from, to, K, spherical ? "spherical" : "linear");
    }
    free(buf);
    vae_data_close(&d);
    vae_model_free(&m);
    rc = vae_agree(rc, MPI_COMM_WORLD);
    return finish(rc);
}

/* Parses "lo:hi" into two numbers. */
static int parse_range(const char *cmd, const char *s, double *lo, double *hi)
{
    char buf[64];
    snprintf(buf, sizeof buf, "%s", s);
    char *colon = strchr(buf + (buf[0] == '-' ? 1 : 0), ':');
    if (!colon) return usage_error(cmd, "--range '%s' is not LO:HI", s);
    *colon = '\0';
    int rc = parse_double(cmd, "--range", buf, -1e6, 1e6, lo);
    if (!rc) rc = parse_double(cmd, "--range", colon + 1, -1e6, 1e6, hi);
    return rc;
}

static const char *traverse_help =
    "usage: mpivae traverse --ckpt FILE --out OUT.png [--dims D1,D2,...|auto] [--top N]\n"
    "                       [--data FILE[:/ds] [--index I]] [--range LO:HI] [--steps K]\n"
    "\n"
    "For each chosen latent dimension, adds K (default 9) values over LO:HI (default -3:3) to it,\n"
    "starting from the encoded mean of row I of --data (when --index is given) or from z = 0, the\n"
    "other dimensions fixed, and decodes: one grid row per dimension (--range 0:0 reproduces the\n"
    "reconstruction of row I). --dims auto (the default) picks the N (default 8) dimensions with\n"
    "the largest average KL over --data (the active ones) and prints their KL. OUT.h5 holds\n"
    "/images [dims*K, C, H, W], /values [K] (the offsets), /dims, /base [Z]. --out must end in .png.\n"
    "--data: FILE alone is FILE:/train/images; default: the checkpoint's held-out data.\n";

static int cmd_traverse(int argc, char **argv)
{
    const char *ckpt = NULL, *out = NULL, *data = NULL, *dims_s = "auto";
    long index = -1;
    int K = 9, top = 8;
    double lo = -3, hi = 3;
    static struct option opts[] = {
        { "ckpt", required_argument, 0, 'c' }, { "out", required_argument, 0, 'o' },
        { "data", required_argument, 0, 'd' }, { "index", required_argument, 0, 'i' },
        { "dims", required_argument, 0, 'D' }, { "top", required_argument, 0, 'n' },
        { "range", required_argument, 0, 'r' }, { "steps", required_argument, 0, 'k' },
        { "help", no_argument, 0, 'h' }, { 0, 0, 0, 0 }
    };
    optind = 1;
    opterr = 0;
    int c, rc = 0;
    while (!rc && (c = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
        switch (c) {
        case 'c': ckpt = optarg; break;
        case 'o': out = optarg; break;
        case 'd': data = optarg; break;
        case 'i': rc = parse_long("traverse", "--index", optarg, 0, LONG_MAX, &index); break;
        case 'D': dims_s = optarg; break;
        case 'n': rc = parse_int("traverse", "--top", optarg, 1, 4096, &top); break;
        case 'r': rc = parse_range("traverse", optarg, &lo, &hi); break;
        case 'k': rc = parse_int("traverse", "--steps", optarg, 1, 1000, &K); break;
        case 'h': if (g_rank == 0) fputs(traverse_help, stdout); return 0;
        default: return bad_option("traverse", c, argv);
        }
    }
    if (rc) return rc;
    if (no_stray("traverse", argc, argv)) return EXIT_USAGE;
    if (!ckpt || !out) return usage_error("traverse", "--ckpt FILE and --out OUT.png are required");
    rc = check_out("traverse", out, ".png", WRITES_PNG("traverse"));
    if (rc) return rc;
    if (parse_only()) return 0;
    vae_config cfg;
    vae_model m;
    vae_data d;
    memset(&m, 0, sizeof m);
    memset(&d, 0, sizeof d);
    rc = load_model(&ckpt, &cfg, &m, VAE_LATENT_CHUNK, VAE_TOOL_TRAVERSE, "traverse");
    if (rc) return finish(rc);
    const int Z = m.Z, D = m.D;
    int auto_dims = !strcmp(dims_s, "auto");
    int *dims = calloc((size_t)Z, sizeof(int)), nd = 0;
    double *kl = calloc((size_t)Z, sizeof(double));
    float *base = calloc((size_t)Z, sizeof(float));
    if (!dims || !kl || !base) rc = vae_error(VAE_ENOMEM, "cannot allocate %d latent dimensions", Z);
    if (!rc && !auto_dims) {
        char buf[1024];
        snprintf(buf, sizeof buf, "%s", dims_s);
        for (char *tok = strtok(buf, ","); tok && !rc; tok = strtok(NULL, ",")) {
            long v = 0;
            rc = parse_long("traverse", "--dims", tok, 0, LONG_MAX, &v);
            if (!rc && v >= Z) rc = usage_error("traverse", "--dims %ld is out of range: the model in '%s' has %d latent dimensions (0..%d)", v, ckpt, Z, Z - 1);
            if (!rc && nd < Z) dims[nd++] = (int)v;
        }
        if (!rc && nd == 0) rc = usage_error("traverse", "--dims needs at least one dimension");
        if (rc) goto out;
    }
    if (!rc && (auto_dims || index >= 0 || data)) rc = open_tool_data(&d, data, &cfg, ckpt, VAE_LATENT_CHUNK);
    if (!rc && index >= 0) rc = check_index("traverse", "--index", index, &d);
    if (!rc && auto_dims) {
        /* Average KL per dimension over the data, shared across ranks. */
        int64_t a, b;
        int P;
        MPI_Comm_size(MPI_COMM_WORLD, &P);
        vae_latent_share(d.N, P, g_rank, &a, &b);
        vae_defer_begin();
        rc = vae_latent_kl_per_dim(&m, &d, a, b, kl);
        rc = vae_agree(rc, MPI_COMM_WORLD);
        if (!rc) MPI_Allreduce(MPI_IN_PLACE, kl, Z, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
        for (int j = 0; j < Z; j++) kl[j] /= (double)d.N;
        /* The top N by KL, largest first. */
        nd = top < Z ? top : Z;
        for (int k = 0; k < nd; k++) {
            int best = -1;
            for (int j = 0; j < Z; j++) {
                int used = 0;
                for (int q = 0; q < k; q++) used |= dims[q] == j;
                if (!used && (best < 0 || kl[j] > kl[best])) best = j;
            }
            dims[k] = best;
        }
        if (!rc && g_rank == 0) {
            printf("most active latent dimensions (average KL over %lld rows of %s:%s, nats):\n", (long long)d.N, d.file, d.dset);
            for (int k = 0; k < nd; k++) printf("  dimension %d: %.4f\n", dims[k], kl[dims[k]]);
        }
    }
    float *img = NULL, *vals = NULL, *z = NULL;
    if (!rc && g_rank == 0) {
        if (index >= 0) rc = encode_one(&m, &d, index, base);
        img = malloc((size_t)nd * K * D * sizeof(float));
        vals = malloc((size_t)K * sizeof(float));
        z = malloc((size_t)K * Z * sizeof(float));
        if (!img || !vals || !z) rc = vae_error(VAE_ENOMEM, "cannot allocate %d images", nd * K);
        for (int k = 0; !rc && k < K; k++) vals[k] = (float)(K > 1 ? lo + (hi - lo) * k / (K - 1) : lo);
        for (int r = 0; !rc && r < nd; r++) {
            for (int k = 0; k < K; k++) {
                memcpy(z + (size_t)k * Z, base, (size_t)Z * sizeof(float));
                z[(size_t)k * Z + dims[r]] = base[dims[r]] + vals[k]; /* offsets from the base */
            }
            vae_model_decode(&m, z, K, img + (size_t)r * K * D);
        }
        outputs o = { 0 };
        char h5[VAE_PATH_LEN + 8];
        h5_beside(out, h5, sizeof h5);
        const char *png_t = out_add(&o, out), *h5_t = out_add(&o, h5);
        if (!rc) rc = out_refuse("traverse", &o, ckpt, d.file, NULL);
        if (!rc) rc = vae_image_write_grid(png_t, img, nd * K, cfg.arch.C, cfg.arch.Hh, cfg.arch.W, K, 2);
        float *fd = malloc((size_t)nd * sizeof(float));
        if (!rc && !fd) rc = vae_error(VAE_ENOMEM, "cannot allocate %d dimensions", nd);
        if (!rc) {
            for (int r = 0; r < nd; r++) fd[r] = (float)dims[r];
            rc = vae_h5_write_matrix(h5_t, "/dims", fd, nd, 0);
        }
        free(fd);
        if (!rc) rc = vae_h5_write_matrix(h5_t, "/values", vals, K, 0);
        if (!rc) rc = vae_h5_write_matrix(h5_t, "/base", base, Z, 0);
        if (!rc) rc = vae_h5_write_images(h5_t, "/images", img, nd * K, cfg.arch.C, cfg.arch.Hh, cfg.arch.W);
        rc = out_finish(&o, rc);
        if (!rc) printf("wrote %s and %s: %d dimensions x %d values in [%g, %g], base %s\n", out, h5, nd, K, lo, hi,
                        index >= 0 ? "the encoded mean of --index" : "z = 0");
    }
    free(img);
    free(vals);
    free(z);
    rc = vae_agree(rc, MPI_COMM_WORLD);
out:
    free(dims);
    free(kl);
    free(base);
    vae_data_close(&d);
    vae_model_free(&m);
    return rc > 0 ? rc : finish(rc);
}

/* The largest class --normal-classes takes. */
#define MAX_CLASS 1023

/*
 * Parses --normal-classes "0,1,2" into is_normal[MAX_CLASS + 1]: integers 0..MAX_CLASS separated by
 * single commas, at least one. Returns 0 or the usage exit status (after the message).
 */
static int parse_classes(const char *cmd, const char *s, unsigned char *is_normal)
{
    memset(is_normal, 0, MAX_CLASS + 1);
    if (!*s) return usage_error(cmd, "--normal-classes is empty: it takes classes C1,C2,... (integers 0..%d)", MAX_CLASS);
    for (const char *p = s;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        char tok[32];
        long v = 0;
        if (len == 0) return usage_error(cmd, "--normal-classes '%s' has an empty class (a stray comma)", s);
        if (len >= sizeof tok || isspace((unsigned char)*p))
            return usage_error(cmd, "--normal-classes '%.*s' is not an integer", (int)len, p);
        memcpy(tok, p, len);
        tok[len] = '\0';
        int rc = parse_long(cmd, "--normal-classes", tok, 0, MAX_CLASS, &v);
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
            rc = usage_error("anomaly", "--normal-classes %s: %s %s %s not occur in '%s:%s', which holds %s", normal_s,
                             n_missing > 1 ? "classes" : "class", missing, n_missing > 1 ? "do" : "does", file, dset, held);
        else if (*n_anom == 0)
            rc = usage_error("anomaly", "--normal-classes %s leaves no anomalies: all %lld rows of '%s:%s' (classes %s) "
                             "are normal, and the ROC AUC needs both normal rows and anomalies", normal_s, (long long)n,
                             file, dset, held);
        else
            rc = usage_error("anomaly", "--normal-classes %s leaves no normal rows: none of the %lld rows of '%s:%s' "
                             "(classes %s) is of a normal class, and the ROC AUC needs both normal rows and anomalies",
                             normal_s, (long long)n, file, dset, held);
    }
    snprintf(where, where_len, "%s:%s", file, dset);
    free(lab);
    return rc;
}

/* Writes /score, /recon and /kl [n] to out (a new file) and, with labels, each one's ROC AUC. */
static int anomaly_write(const char *out, const float *score, const float *rec, const float *klv, int64_t n,
                         const double *auc)
{
    const char *names[3] = { "/score", "/recon", "/kl" };
    const float *v[3] = { score, rec, klv };
    int rc = 0;
    for (int q = 0; !rc && q < 3; q++) rc = vae_h5_write_matrix(out, names[q], v[q], n, 0);
    for (int q = 0; !rc && auc && q < 3; q++) rc = vae_h5_write_attr(out, names[q], "roc_auc", auc[q]);
    return rc;
}

static const char *anomaly_help =
    "usage: mpirun -np P mpivae anomaly --ckpt FILE --out SCORES.h5 [--data FILE[:/ds]]\n"
    "                                   [--labels FILE[:/ds] --normal-classes C1,C2,...] [--top K]\n"
    "\n"
    "Scores every row of --data (FILE alone is FILE:/train/images; default: the checkpoint's\n"
    "held-out data) by its negative ELBO with\n"
    "z = mu (reconstruction + beta * KL, nats), and keeps the two terms. Rows are shared across\n"
    "ranks; rank 0 writes SCORES.h5 (/score, /recon, /kl [N], row-aligned with the input; --out\n"
    "must end in .h5), SCORES-hist.png (histogram of scores) and SCORES-top.png (the K, default\n"
    "32, most anomalous rows, highest score first).\n"
    "\n"
    "With --normal-classes (integers 0..1023, each occurring in the labels), rows of other\n"
    "classes count as anomalies, and there must be both. The labels are --labels FILE[:/ds]\n"
    "(FILE alone is FILE:/train/labels), else the 'labels' dataset beside the images; they are read\n"
    "and checked before any scoring. The ROC AUC of each score is printed on one line,\n"
    "  roc_auc=A (score) recon_auc=R kl_auc=K [anomaly and normal counts; labels]\n"
    "and stored as the attribute 'roc_auc' of /score, /recon and /kl.\n";

static int cmd_anomaly(int argc, char **argv)
{
    const char *ckpt = NULL, *out = NULL, *data = NULL, *labels_s = NULL, *normal_s = NULL;
    unsigned char normal[MAX_CLASS + 1] = { 0 };
    int top = 32;
    static struct option opts[] = {
        { "ckpt", required_argument, 0, 'c' }, { "out", required_argument, 0, 'o' },
        { "data", required_argument, 0, 'd' }, { "labels", required_argument, 0, 'l' },
        { "normal-classes", required_argument, 0, 'n' }, { "top", required_argument, 0, 'k' },
        { "help", no_argument, 0, 'h' }, { 0, 0, 0, 0 }
    };
    optind = 1;
    opterr = 0;
    int c, rc = 0;
    while (!rc && (c = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
        switch (c) {
        case 'c': ckpt = optarg; break;
        case 'o': out = optarg; break;
        case 'd': data = optarg; break;
        case 'l': labels_s = optarg; break;
        case 'n': normal_s = optarg; rc = parse_classes("anomaly", optarg, normal); break;
        case 'k': rc = parse_int("anomaly", "--top", optarg, 1, 10000, &top); break;
        case 'h': if (g_rank == 0) fputs(anomaly_help, stdout); return 0;
        default: return bad_option("anomaly", c, argv);
        }
    }
    if (rc) return rc;
    if (no_stray("anomaly", argc, argv)) return EXIT_USAGE;
    if (!ckpt || !out) return usage_error("anomaly", "--ckpt FILE and --out SCORES.h5 are required");
    rc = check_out("anomaly", out, ".h5", "anomaly writes HDF5 (SCORES.h5) with SCORES-hist.png and SCORES-top.png beside it");
    if (rc) return rc;
    if (labels_s && !normal_s) return usage_error("anomaly", "--labels needs --normal-classes");
    if (parse_only()) return 0;
    vae_config cfg;
    vae_model m;
    vae_data d;
    memset(&m, 0, sizeof m);
    memset(&d, 0, sizeof d);
    double t0 = MPI_Wtime();
    rc = load_model(&ckpt, &cfg, &m, VAE_LATENT_CHUNK, VAE_TOOL_ANOMALY, "anomaly");
    if (!rc) rc = open_tool_data(&d, data, &cfg, ckpt, VAE_LATENT_CHUNK);
    if (!rc) rc = vae_data_check(&d, cfg.arch.loss == VAE_LOSS_BCE, MPI_COMM_WORLD);
    if (rc) {
        vae_model_free(&m);
        vae_data_close(&d);
        return finish(rc);
    }
    int P;
    MPI_Comm_size(MPI_COMM_WORLD, &P);
    int64_t a, b, N = d.N, n_anom = 0;
    /* Labels: explicit, or 'labels' beside the images; read and checked before any scoring. */
    char lab_spec[VAE_PATH_LEN + 300] = "";
    if (labels_s) snprintf(lab_spec, sizeof lab_spec, "%s", labels_s);
    else if (normal_s) {
        char dir[256];
        snprintf(dir, sizeof dir, "%s", d.dset);
        char *slash = strrchr(dir, '/');
        if (slash) *slash = '\0';
        snprintf(lab_spec, sizeof lab_spec, "%s:%s/labels", d.file, dir);
    }
    unsigned char *anomalous = NULL; /* [N] on rank 0 */
    char lab_where[VAE_PATH_LEN + 300] = "";
    if (normal_s && g_rank == 0) {
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
        return rc > 0 ? rc : finish(rc);
    }
    vae_latent_share(N, P, g_rank, &a, &b);
    double *recon = calloc((size_t)(b - a + 1) * 2, sizeof(double)), *kl = recon ? recon + (b - a) : NULL;
    float *mine = malloc((size_t)(b - a + 1) * 3 * sizeof(float));
    float *all = g_rank == 0 ? malloc((size_t)N * 3 * sizeof(float)) : NULL;
    vae_defer_begin();
    if (!recon || !kl || !mine || (g_rank == 0 && !all)) rc = vae_error(VAE_ENOMEM, "cannot allocate scores for %lld rows", (long long)N);
    if (!rc) rc = vae_latent_score(&m, &d, a, b, recon);
    for (int64_t i = 0; !rc && i < b - a; i++) {
        mine[i * 3 + 0] = (float)(recon[i] + cfg.beta * kl[i]);
        mine[i * 3 + 1] = (float)recon[i];
        mine[i * 3 + 2] = (float)kl[i];
        if (!isfinite(mine[i * 3]) || !isfinite(mine[i * 3 + 1]) || !isfinite(mine[i * 3 + 2]))
            rc = vae_error(VAE_EDATA, "the model in '%s' gives a non-finite score for row %lld of '%s:%s' (recon %g, kl %g, "
                           "beta %g): its parameters or configuration are not usable", ckpt, (long long)(a + i), d.file,
                           d.dset, recon[i], kl[i], cfg.beta);
    }
    rc = vae_agree(rc, MPI_COMM_WORLD);
    if (!rc) rc = vae_gather_rows(mine, a, b, 3, all, N, MPI_COMM_WORLD);
    double t_score = MPI_Wtime() - t0;
    vae_defer_begin();
    if (!rc && g_rank == 0) {
        float *score = malloc((size_t)N * sizeof(float)), *rec = malloc((size_t)N * sizeof(float)), *klv = malloc((size_t)N * sizeof(float));
        int64_t *order = malloc((size_t)N * sizeof(int64_t));
        double auc[3] = { NAN, NAN, NAN }; /* of /score, /recon, /kl */
        if (!score || !rec || !klv || !order) rc = vae_error(VAE_ENOMEM, "cannot allocate %lld scores", (long long)N);
        for (int64_t i = 0; !rc && i < N; i++) {
            score[i] = all[i * 3];
            rec[i] = all[i * 3 + 1];
            klv[i] = all[i * 3 + 2];
        }
        if (!rc && normal_s) {
            auc[0] = vae_roc_auc(score, anomalous, N);
            auc[1] = vae_roc_auc(rec, anomalous, N);
            auc[2] = vae_roc_auc(klv, anomalous, N);
        }
        outputs o = { 0 };
        char base[VAE_PATH_LEN + 8], png[VAE_PATH_LEN + 32];
        snprintf(base, sizeof base, "%s", out);
        size_t bl = strlen(base);
        if (bl > 3 && !strcmp(base + bl - 3, ".h5")) base[bl - 3] = '\0';
        const char *h5_t = out_add(&o, out);
        snprintf(png, sizeof png, "%s-hist.png", base);
        const char *hist_t = out_add(&o, png);
        snprintf(png, sizeof png, "%s-top.png", base);
        const char *top_t = out_add(&o, png);
        char lab_file[sizeof lab_where];
        snprintf(lab_file, sizeof lab_file, "%s", lab_where);
        if (strstr(lab_file, ":/")) *strstr(lab_file, ":/") = '\0';
        if (!rc) rc = out_refuse("anomaly", &o, ckpt, d.file, lab_file);
        if (!rc) rc = anomaly_write(h5_t, score, rec, klv, N, normal_s ? auc : NULL);
        if (!rc) rc = vae_image_write_histogram(hist_t, score, N, 50, 400, 200);
        /* The top K rows by score, highest first. */
        int k = top < N ? top : (int)N;
        float *img = !rc ? malloc((size_t)k * m.D * sizeof(float)) : NULL;
        if (!rc && !img) rc = vae_error(VAE_ENOMEM, "cannot allocate %d images", k);
        for (int64_t i = 0; !rc && i < N; i++) order[i] = i;
        for (int q = 0; !rc && q < k; q++) {
            int64_t best = q;
            for (int64_t i = q + 1; i < N; i++)
                if (score[order[i]] > score[order[best]]) best = i;
            int64_t t = order[q];
            order[q] = order[best];
            order[best] = t;
            rc = vae_data_rows(&d, &order[q], 1, img + (size_t)q * m.D);
        }
        if (!rc) rc = vae_image_write_grid(top_t, img, k, cfg.arch.C, cfg.arch.Hh, cfg.arch.W, 8, 2);
        rc = out_finish(&o, rc);
        if (!rc) {
            double mean = 0;
            for (int64_t i = 0; i < N; i++) mean += score[i];
            printf("scored %lld rows of %s:%s on %d rank%s in %.2f s: mean score %.4f nats; most anomalous row %lld (%.4f)\n",
                   (long long)N, d.file, d.dset, P, P > 1 ? "s" : "", t_score, mean / N, (long long)order[0], score[order[0]]);
            if (normal_s)
                printf("roc_auc=%.6f (score) recon_auc=%.6f kl_auc=%.6f [%lld anomalies (classes not in %s), "
                       "%lld normal rows; labels %s]\n", auc[0], auc[1], auc[2], (long long)n_anom, normal_s,
                       (long long)(N - n_anom), lab_where);
            printf("wrote %s, %s-hist.png and %s-top.png\n", out, base, base);
        }
        free(img);
        free(score);
        free(rec);
        free(klv);
        free(order);
    }
    rc = vae_agree(rc, MPI_COMM_WORLD);
    free(anomalous);
    free(recon);
    free(mine);
    free(all);
    vae_data_close(&d);
    vae_model_free(&m);
    return finish(rc);
}

static const char *encode_help =
    "usage: mpirun -np P mpivae encode --ckpt FILE --out Z.h5 [--data FILE[:/ds]]\n"
    "\n"
    "Writes /mu and /logvar [N, Z] (float32, chunked, row-aligned with the input) of every row\n"
    "of --data (FILE alone is FILE:/train/images; default: the checkpoint's held-out data). Rows\n"
    "are shared across ranks in fixed chunks, so the output does not depend on the rank count;\n"
    "rank 0 writes the file. --out must end in .h5.\n";

static int cmd_encode(int argc, char **argv)
{
    const char *ckpt = NULL, *out = NULL, *data = NULL;
    static struct option opts[] = {
        { "ckpt", required_argument, 0, 'c' }, { "out", required_argument, 0, 'o' },
        { "data", required_argument, 0, 'd' }, { "help", no_argument, 0, 'h' }, { 0, 0, 0, 0 }
    };
    optind = 1;
    opterr = 0;
    int c, rc = 0;
    while (!rc && (c = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
        switch (c) {
        case 'c': ckpt = optarg; break;
        case 'o': out = optarg; break;
        case 'd': data = optarg; break;
        case 'h': if (g_rank == 0) fputs(encode_help, stdout); return 0;
        default: return bad_option("encode", c, argv);
        }
    }
    if (rc) return rc;
    if (no_stray("encode", argc, argv)) return EXIT_USAGE;
    if (!ckpt || !out) return usage_error("encode", "--ckpt FILE and --out Z.h5 are required");
    rc = check_out("encode", out, ".h5", "encode writes HDF5 (Z.h5)");
    if (rc) return rc;
    if (parse_only()) return 0;
    vae_config cfg;
    vae_model m;
    vae_data d;
    memset(&m, 0, sizeof m);
    memset(&d, 0, sizeof d);
    rc = load_model(&ckpt, &cfg, &m, VAE_LATENT_CHUNK, VAE_TOOL_ENCODE, "encode");
    if (!rc) rc = open_tool_data(&d, data, &cfg, ckpt, VAE_LATENT_CHUNK);
    if (rc) {
        vae_model_free(&m);
        vae_data_close(&d);
        return finish(rc);
    }
    int P;
    MPI_Comm_size(MPI_COMM_WORLD, &P);
    const int Z = m.Z;
    int64_t a, b, N = d.N;
    vae_latent_share(N, P, g_rank, &a, &b);
    float *mu = malloc((size_t)(b - a + 1) * Z * sizeof(float)), *lv = malloc((size_t)(b - a + 1) * Z * sizeof(float));
    float *all_mu = g_rank == 0 ? malloc((size_t)N * Z * sizeof(float)) : NULL;
    float *all_lv = g_rank == 0 ? malloc((size_t)N * Z * sizeof(float)) : NULL;
    vae_defer_begin();
    if (!mu || !lv || (g_rank == 0 && (!all_mu || !all_lv))) rc = vae_error(VAE_ENOMEM, "cannot allocate codes for %lld rows", (long long)N);
    if (!rc) rc = vae_latent_encode(&m, &d, a, b, mu, lv);
    rc = vae_agree(rc, MPI_COMM_WORLD);
    if (!rc) rc = vae_gather_rows(mu, a, b, Z, all_mu, N, MPI_COMM_WORLD);
    if (!rc) rc = vae_gather_rows(lv, a, b, Z, all_lv, N, MPI_COMM_WORLD);
    vae_defer_begin();
    if (!rc && g_rank == 0) {
        outputs o = { 0 };
        const char *h5_t = out_add(&o, out);
        rc = out_refuse("encode", &o, ckpt, d.file, NULL);
        if (!rc) rc = vae_h5_write_matrix(h5_t, "/mu", all_mu, N, Z);
        if (!rc) rc = vae_h5_write_matrix(h5_t, "/logvar", all_lv, N, Z);
        rc = out_finish(&o, rc);
        if (!rc) printf("wrote %s: /mu and /logvar [%lld, %d] of %s:%s\n", out, (long long)N, Z, d.file, d.dset);
    }
    rc = vae_agree(rc, MPI_COMM_WORLD);
    free(mu);
    free(lv);
    free(all_mu);
    free(all_lv);
    vae_data_close(&d);
    vae_model_free(&m);
    return finish(rc);
}

static const char *main_help =
    "usage: mpivae <command> [options]    (mpivae <command> --help for each)\n"
    "\n"
    "  data         import Fashion-MNIST, write a synthetic set, describe an HDF5 file\n"
    "  train        train a VAE data-parallel over MPI ranks (mpirun -np P mpivae train ...)\n"
    "  eval         held-out loss of a checkpoint in nats per sample\n"
    "  sample       decode prior samples of a checkpoint into a PNG grid and HDF5\n"
    "  reconstruct  inputs over their reconstructions, PNG grid and HDF5\n"
    "  interpolate  decode a path between the codes of two inputs\n"
    "  traverse     vary single latent dimensions (the most active ones by default)\n"
    "  anomaly      score rows by negative ELBO, histogram, most anomalous rows, ROC AUC\n"
    "  encode       mu and logvar of every row into HDF5\n"
    "  --version    print the version\n";

int main(int argc, char **argv)
{
    /*
     * HDF5's own clean-up at exit crashes on a file whose close failed (a full
     * disk): mpivae closes what it opened on every path and ends HDF5 itself,
     * only when no file is left half-closed.
     */
    H5dont_atexit();
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        fputs(main_help, stdout);
        return argc < 2 ? EXIT_USAGE : 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("mpivae %s\n", MPIVAE_VERSION);
        return 0;
    }
    /* A caller that started MPI itself (the command-line fuzzer, tests/fuzz) keeps it running. */
    int mpi_up = 0;
    MPI_Initialized(&mpi_up);
    if (!mpi_up) {
        vae_blas_tune(argv); /* may start the program again, with OpenBLAS's kernels for this CPU */
        MPI_Init(&argc, &argv);
    }
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    /*
     * Test hook: MPIVAE_TEST_FILE_LIMIT_KB=K limits the size of every file written
     * from here on (writes past it fail with EFBIG, as on a full disk), set after
     * MPI_Init so that Open MPI's own shared-memory files are not limited.
     */
    const char *fl = getenv("MPIVAE_TEST_FILE_LIMIT_KB");
    if (fl && atol(fl) > 0) {
        struct rlimit rl = { (rlim_t)atol(fl) * 1024, (rlim_t)atol(fl) * 1024 };
        signal(SIGXFSZ, SIG_IGN);
        setrlimit(RLIMIT_FSIZE, &rl);
    }
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    vae_set_rank(g_rank);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    const char *cmd = argv[1];
    int rc;
    if (!strcmp(cmd, "data")) rc = cmd_data(argc - 1, argv + 1);
    else if (!strcmp(cmd, "train")) rc = cmd_train(argc - 1, argv + 1);
    else if (!strcmp(cmd, "eval")) rc = cmd_eval(argc - 1, argv + 1);
    else if (!strcmp(cmd, "sample")) rc = cmd_sample(argc - 1, argv + 1);
    else if (!strcmp(cmd, "reconstruct")) rc = cmd_reconstruct(argc - 1, argv + 1);
    else if (!strcmp(cmd, "interpolate")) rc = cmd_interpolate(argc - 1, argv + 1);
    else if (!strcmp(cmd, "traverse")) rc = cmd_traverse(argc - 1, argv + 1);
    else if (!strcmp(cmd, "anomaly")) rc = cmd_anomaly(argc - 1, argv + 1);
    else if (!strcmp(cmd, "encode")) rc = cmd_encode(argc - 1, argv + 1);
    else {
        if (g_rank == 0) fprintf(stderr, "[rank 0] error: unknown command '%s' (see 'mpivae --help')\n", cmd);
        rc = EXIT_USAGE;
    }
    fflush(stdout);
    if (H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL) == 0) H5close();
    if (!mpi_up) MPI_Finalize();
    return rc;
}
