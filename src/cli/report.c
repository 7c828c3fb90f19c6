/*
 * report.c: `mpivae report` (the HTML page of one run, or of several runs
 * overlaid) and `mpivae metrics` (a run's metrics as CSV or as a table).
 * Both are serial: rank 0 reads and writes, the other ranks wait.
 */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"

#include "mpivae/report.h"
#include "mpivae/status.h"

#include <getopt.h> /* optind */
#include <mpi.h>
#include <stdio.h>
#include <string.h>

static const char *report_help =
    "usage: mpivae report RUN_DIR [--out FILE]\n"
    "       mpivae report --out FILE RUN_A RUN_B ...\n"
    "\n"
    "Writes one self-contained HTML page (inline SVG charts, the images embedded: it makes no\n"
    "network request and opens from a copy on another machine) of a run directory: the facts of\n"
    "the run (model, options, ranks and hosts, OpenBLAS kernels, Slurm job and restarts), a chart\n"
    "of every loss term, the loss, beta, learning rate, gradient norm and samples/s with resume\n"
    "and skipped-step markers, the sample grids over time, the checkpoints, and the tool outputs\n"
    "(PNG files) found in RUN_DIR. Default --out: RUN_DIR/report.html, which `mpivae train`\n"
    "also writes at every evaluation and at the end. It works on finished runs, on runs of\n"
    "earlier versions, and on a run that is still writing its metrics.h5.\n"
    "\n"
    "With several run directories (at most 8) the page overlays their curves on the same axes,\n"
    "one colour per run, for comparing model families or settings; --out is then required.\n";

int cli_cmd_report(int argc, char **argv)
{
    const char *out = NULL;
    cli_opt opts[] = { { "out", CLI_STRING, .target = &out, .metavar = "FILE" }, { 0 } };
    const cli_cmd cmd = { .name = "report", .help = report_help, .opts = opts, .operands = 1 };
    int rc = cli_parse(&cmd, argc, argv);
    if (rc) return cli_stop(rc);
    int n = argc - optind;
    if (n < 1) return cli_usage_error("report", "give a run directory (RUN_DIR), or several with --out FILE");
    if (n > VAE_REPORT_MAX_RUNS) return cli_usage_error("report", "%d run directories given; a page overlays at most %d", n, VAE_REPORT_MAX_RUNS);
    if (n > 1 && !out) return cli_usage_error("report", "%d run directories need --out FILE (the page of several runs has no home directory)", n);
    if (out && !out[0]) return cli_usage_error("report", "--out is empty");
    if (out && strlen(out) >= VAE_PATH_LEN) return cli_usage_error("report", "--out is %zu characters long; at most %d are taken", strlen(out), VAE_PATH_LEN - 1);
    for (int i = optind; i < argc; i++)
        if (!argv[i][0] || strlen(argv[i]) >= VAE_PATH_LEN) return cli_usage_error("report", "run directory '%s' is empty or too long", argv[i]);
    if (cli_parse_only()) return 0;
    char def[VAE_PATH_LEN + 16];
    if (!out) {
        snprintf(def, sizeof def, "%s/report.html", argv[optind]);
        out = def;
    }
    vae_defer_begin();
    rc = cli_rank == 0 ? vae_report_write(out, (const char *const *)argv + optind, n, NULL, 0) : 0;
    vae_defer_end(1);
    MPI_Bcast(&rc, 1, MPI_INT, 0, MPI_COMM_WORLD);
    if (!rc && cli_rank == 0) printf("wrote %s\n", out);
    return cli_finish(rc);
}

static const char *metrics_help =
    "usage: mpivae metrics RUN_DIR [--csv] [--eval]\n"
    "\n"
    "Prints RUN_DIR/metrics.h5: one row per training step (--eval: per held-out evaluation),\n"
    "the columns step, epoch, loss, the model family's loss terms, then (training) beta, lr,\n"
    "grad_norm, skipped (0, 1: a non-finite step, 2: an update over --skip-threshold),\n"
    "samples_per_s and time (seconds since the process started). --csv: comma-separated with\n"
    "a header line, full precision (for pandas, gnuplot, a spreadsheet); otherwise aligned\n"
    "columns. Works while the run writes the file.\n";

int cli_cmd_metrics(int argc, char **argv)
{
    int csv = 0, eval = 0;
    cli_opt opts[] = { { "csv", CLI_FLAG, .target = &csv }, { "eval", CLI_FLAG, .target = &eval }, { 0 } };
    const cli_cmd cmd = { .name = "metrics", .help = metrics_help, .opts = opts, .operands = 1 };
    int rc = cli_parse(&cmd, argc, argv);
    if (rc) return cli_stop(rc);
    if (argc - optind != 1) return cli_usage_error("metrics", "give one run directory (RUN_DIR)");
    if (cli_parse_only()) return 0;
    const char *dir = argv[optind], *group = eval ? "/eval" : "/train";
    if (cli_rank == 0) {
        if (csv) rc = vae_report_csv(dir, group, stdout);
        else rc = vae_report_table(dir, group, stdout);
    }
    MPI_Bcast(&rc, 1, MPI_INT, 0, MPI_COMM_WORLD);
    return cli_finish(rc);
}
