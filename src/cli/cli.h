/*
 * cli.h: internal header of the command line (src/cli/). main.c holds the
 * one main() and dispatches to the subcommands, which live by theme in
 * data.c, train.c (train, classify), eval.c, images.c (sample, reconstruct), latent.c
 * (interpolate, traverse, encode), anomaly.c, fid.c and report.c (report, metrics). What they share: the
 * option parsing and usage errors (opts.c), the loading of a checkpoint and
 * its data for a tool (tool.c), and the all-or-nothing publishing of a
 * tool's output files (outputs.c).
 *
 * Exit status: 0 success, 1 failure (after one message), 2 usage error,
 * 75 (VAE_EXIT_REQUEUE) training stopped by a signal after a checkpoint.
 */
#ifndef MPIVAE_CLI_H
#define MPIVAE_CLI_H

#include "mpivae/dataset.h"
#include "mpivae/model.h"
#include "mpivae/train.h"

#include <stddef.h>
#include <stdint.h>

#define EXIT_USAGE 2

/* This process's rank in MPI_COMM_WORLD (0 until MPI is up); usage errors and help print on rank 0 only. */
extern int cli_rank;

/* The exit status of a command's final status: 0, 1, or VAE_EXIT_REQUEUE for VAE_ESTOP (main.c). */
int cli_finish(int rc);

/* ---- subcommands: each takes its own name as argv[0] ---- */

int cli_cmd_data(int argc, char **argv);
int cli_cmd_train(int argc, char **argv);
int cli_cmd_classify(int argc, char **argv);
int cli_cmd_eval(int argc, char **argv);
int cli_cmd_sample(int argc, char **argv);
int cli_cmd_reconstruct(int argc, char **argv);
int cli_cmd_interpolate(int argc, char **argv);
int cli_cmd_traverse(int argc, char **argv);
int cli_cmd_anomaly(int argc, char **argv);
int cli_cmd_encode(int argc, char **argv);
int cli_cmd_fid(int argc, char **argv);
int cli_cmd_report(int argc, char **argv);
int cli_cmd_metrics(int argc, char **argv);

/* ---- option parsing and usage errors (opts.c) ---- */

/*
 * A subcommand declares its options in a table of cli_opt, ended by an entry
 * whose name is NULL, and cli_parse reads its command line from it: getopt_long
 * with the table's long options (no short ones) and --help, the values checked
 * as they come, the first problem a usage error. The text of --help stays the
 * command's own (cli_cmd.help): its usage lines group and nest options and its
 * prose explains them together, which a line per option would not say.
 */

/* What an option's value is, and what the parser stores through its target. */
typedef enum cli_kind {
    CLI_STRING, /* const char **target: the value as given (it points into argv) */
    CLI_INT,    /* int *target: a decimal integer in lo..hi */
    CLI_LONG,   /* long *target: a decimal integer in lo..hi */
    CLI_DOUBLE, /* double *target: a finite number in [dlo, dhi] */
    CLI_ENUM,   /* int *target: values[i] (or i without values) for the value names[i] */
    CLI_FLAG,   /* int *target: 1; the option takes no value */
    CLI_CUSTOM  /* parse(cmd, value, target) checks and stores the value */
} cli_kind;

typedef struct cli_opt {
    const char *name;  /* without "--" */
    cli_kind kind;
    void *target;
    long lo, hi;                /* CLI_INT, CLI_LONG: the accepted range */
    double dlo, dhi;            /* CLI_DOUBLE: the accepted range */
    const char *const *names;   /* CLI_ENUM: the accepted values, NULL-terminated */
    const int *values;          /* CLI_ENUM: what each of names stores (NULL: its index) */
    int (*parse)(const char *cmd, const char *value, void *target); /* CLI_CUSTOM: 0 or EXIT_USAGE after the message */
    const char *metavar;        /* the value as --help names it ("FILE", "OUT.png"), for the message below */
    int required;               /* a usage error when missing: "--ckpt FILE and --out OUT.png are required" */
    int set;                    /* written by cli_parse: given, with a value that was accepted */
} cli_opt;

/* A subcommand as cli_parse sees it. */
typedef struct cli_cmd {
    const char *name; /* "sample": messages say "(see 'mpivae sample --help')" */
    const char *help; /* printed by --help */
    cli_opt *opts;
    int operands;     /* arguments after the options are the command's (data info FILE), not stray ones */
} cli_cmd;

/* cli_parse's result after printing the help. */
#define CLI_HELP (-1)

/* The most options a table may hold. */
#define CLI_MAX_OPTS 64

/*
 * Parses the command line argv[0..argc) of command c (argv[0] is the command's name)
 * against its table, in order, and stops at the first of these:
 *   --help                   prints c->help (rank 0), returns CLI_HELP;
 *   an unknown option, one without its value, a value its option refuses (range,
 *   syntax), then a stray argument (unless c->operands), then a missing required
 *   option: one usage error, returns EXIT_USAGE.
 * Returns 0 when the command goes on; optind is then the index of the first operand.
 * Every option's set is written. The order of a table only orders the list of
 * required options in that message: getopt_long takes an option by its full name
 * or by a prefix that no other option shares.
 */
int cli_parse(const cli_cmd *c, int argc, char **argv);

/* The exit status of a command that stops at cli_parse's result rc (0 after --help). */
static inline int cli_stop(int rc) { return rc == CLI_HELP ? 0 : rc; }

/*
 * Prints "[rank 0] error: <fmt...> (see 'mpivae CMD --help')" once (rank 0) and
 * returns EXIT_USAGE.
 */
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/*
 * The value checks of the table's kinds, for custom values (lists, ranges) and
 * commands that parse by hand (train): all of s is the value, within range, else a usage error naming flag:
 *   "--batch 'x' is not an integer", "--batch 0 is out of range 1..4096",
 *   "--lr 'x' is not a number", "--lr 20 is out of range [0, 10]",
 *   "--loss 'x' is not bce or mse".
 * Return 0 or EXIT_USAGE; *out is written only on success.
 */
int cli_parse_long(const char *cmd, const char *flag, const char *s, long lo, long hi, long *out);
int cli_parse_int(const char *cmd, const char *flag, const char *s, long lo, long hi, int *out);
int cli_parse_double(const char *cmd, const char *flag, const char *s, double lo, double hi, double *out);
int cli_parse_enum(const char *cmd, const char *flag, const char *s, const char *const *names, const int *values, int *out);

/*
 * Test hook of the command-line fuzzer (tests/fuzz): with MPIVAE_TEST_PARSE_ONLY=1
 * every command returns after checking its arguments, before it reads or writes a file.
 */
int cli_parse_only(void);

/* Handles getopt's '?' and ':' results with one clear message (commands that parse by hand). */
int cli_bad_option(const char *cmd, int c, char **argv);

/* ---- a checkpoint and its data, for the tools (tool.c) ---- */

/*
 * Loads the configuration and parameters of a checkpoint into a model for
 * batches of max_batch. *ckpt may name a run directory: rank 0 picks its
 * newest good checkpoint, and *ckpt then points to that file's path. A
 * checkpoint whose model family does not serve tool (a VAE_TOOL_* bit) is
 * refused, naming the command cmd and the family; tool 0 takes any family
 * (the caller checks what it needs, as fid checks for features). *ckpt
 * points to a buffer that the next call overwrites.
 */
int cli_load_model(const char **ckpt, vae_config *cfg, vae_model *m, int max_batch, unsigned tool, const char *cmd);

/*
 * --weights averaged|raw, an option of every tool that loads a checkpoint:
 * cli_load_model reads the parameters' moving average (/ema) of a checkpoint
 * trained with --ema (averaged, the default), or the training parameters
 * (/params) whatever the checkpoint holds (raw).
 */
enum { CLI_WEIGHTS_AVERAGED, CLI_WEIGHTS_RAW };
extern int cli_weights;
extern const char *const cli_weights_names[];
#define CLI_WEIGHTS_OPT { "weights", CLI_ENUM, .target = &cli_weights, .names = cli_weights_names }
#define CLI_WEIGHTS_HELP                                                                                   \
    "--weights averaged|raw: of a checkpoint trained with --ema, the parameters' moving average (/ema,\n" \
    "the default) or the training parameters (/params). Other checkpoints have /params only.\n"

/*
 * Opens the tool's data on every rank: --data as given (given; FILE alone is
 * FILE:/train/images), else the checkpoint's held-out data. A checkpoint
 * trained with --binarize dynamic gets the fixed binarization of the rows
 * (cli_data_binarize), as its run evaluated them.
 */
int cli_open_data(vae_data *d, const char *given, const vae_config *cfg, const char *ckpt, int in_memory, int max_rows);

/*
 * on: every row read from d from now on is the fixed binarization of
 * dataset.h (key VAE_BINARIZE_FIXED_SEED, VAE_RNG_BINARIZE, a = 2^64 - 1,
 * b = row), after a collective scan that refuses values outside [0, 1]
 * (naming the file and dataset); off: the rows as stored. Every rank.
 */
int cli_data_binarize(vae_data *d, int on);

/* Refuses data whose rows are not the model's input shape. */
int cli_check_shape(const vae_data *d, const vae_config *cfg, const char *ckpt);

/* cli_open_data (in memory when it fits) and cli_check_shape. */
int cli_open_tool_data(vae_data *d, const char *given, const vae_config *cfg, const char *ckpt, int max_rows);

/* Refuses a row index flag (--from, --index) past the rows of d. */
int cli_check_index(const char *cmd, const char *flag, long i, const vae_data *d);

/* Rank 0 encodes one row to its mean: mu[Z]. */
int cli_encode_one(vae_model *m, vae_data *d, int64_t row, float *mu);

/* ---- a tool's output files (outputs.c) ---- */

/*
 * A tool's output files. Rank 0 writes each under a temporary name beside its
 * final one (".NAME.tmp-PID") and renames them into place, after fsync, only
 * when all are complete: a failure (a full disk, a bad value found late)
 * leaves no partial output, and an earlier file of the same name is replaced
 * only by a complete one.
 */
typedef struct cli_outputs {
    int n;
    char fin[4][VAE_PATH_LEN + 40];
    char tmp[4][VAE_PATH_LEN + 80];
} cli_outputs;

/* Adds an output; returns the temporary name to write it under. */
const char *cli_out_add(cli_outputs *o, const char *final);

/* Refuses an output that is, or derives to, one of the command's input files (NULL or "": none). */
int cli_out_refuse(const char *cmd, const cli_outputs *o, const char *ckpt, const char *data_file, const char *labels_file);

/* cli_out_refuse on rank 0, agreed by every rank. */
int cli_out_check(const char *cmd, const cli_outputs *o, const char *ckpt, const char *data_file, const char *labels_file);

/* Publishes every output (fsync, rename) when rc is 0, else removes them; returns rc or the publishing failure. */
int cli_out_finish(cli_outputs *o, int rc);

/* OUT.png -> OUT.h5 beside it. */
void cli_h5_beside(const char *png, char *h5, size_t len);

/*
 * Refuses an --out that is empty or does not end in ext (".png" for the image tools, ".h5" for
 * anomaly and encode); writes says what the tool writes. Returns 0 or the usage exit status.
 */
int cli_check_out(const char *cmd, const char *out, const char *ext, const char *writes);

/* What the image tools write, for cli_check_out's messages. */
#define WRITES_PNG(cmd) cmd " writes a PNG (OUT.png) and OUT.h5 beside it"

#endif
