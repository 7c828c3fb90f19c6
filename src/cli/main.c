/*
 * main.c: the program's one main(): MPI start-up, the table of subcommands
 * (data, train, classify, eval, sample, reconstruct, interpolate, traverse,
 * anomaly, encode, fid, report, metrics, each with --help) and the fatal path, cli_finish, that turns a
 * command's status into the exit status.
 *
 * Exit status: 0 success, 1 failure (after one message), 2 usage error,
 * 75 (VAE_EXIT_REQUEUE) training stopped by a signal after a checkpoint.
 *
 * The command-line fuzzer (tests/fuzz/fuzz_cli.c) compiles this file with
 * -Dmain=mpivae_cli_main and calls it with MPI already started.
 */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"

#include "mpivae/blas.h"
#include "mpivae/status.h"

#include <hdf5.h>
#include <mpi.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

int cli_rank = 0;

/* The fatal path: a command's final status becomes the exit status, after the one message already printed. */
int cli_finish(int rc)
{
    if (rc == VAE_ESTOP) return VAE_EXIT_REQUEUE;
    return rc == 0 ? 0 : 1;
}

/* The subcommands, in the order of the help. */
static const struct command {
    const char *name;
    int (*run)(int argc, char **argv); /* argv[0] is the command's name */
    const char *summary;               /* its line in the help */
} commands[] = {
    { "data", cli_cmd_data, "import Fashion-MNIST, write a synthetic set, describe an HDF5 file" },
    { "train", cli_cmd_train, "train a VAE data-parallel over MPI ranks (mpirun -np P mpivae train ...)" },
    { "classify", cli_cmd_classify, "train a conv classifier of labeled data (train --model classifier)" },
    { "eval", cli_cmd_eval, "held-out loss of a checkpoint in nats per sample (a classifier's: and accuracy)" },
    { "sample", cli_cmd_sample, "decode prior samples of a checkpoint into a PNG grid and HDF5" },
    { "reconstruct", cli_cmd_reconstruct, "inputs over their reconstructions, PNG grid and HDF5" },
    { "interpolate", cli_cmd_interpolate, "decode a path between the codes of two inputs" },
    { "traverse", cli_cmd_traverse, "vary single latent dimensions (the most active ones by default)" },
    { "anomaly", cli_cmd_anomaly, "score rows by negative ELBO, histogram, most anomalous rows, ROC AUC" },
    { "encode", cli_cmd_encode, "mu and logvar of every row into HDF5" },
    { "fid", cli_cmd_fid, "Frechet distance of a classifier's features: samples, reconstructions, data" },
    { "report", cli_cmd_report, "one self-contained HTML page of a run (or of several runs overlaid)" },
    { "metrics", cli_cmd_metrics, "a run's metrics.h5 as CSV (--csv) or aligned columns" },
};
#define N_COMMANDS (sizeof commands / sizeof commands[0])

static void print_help(void)
{
    printf("usage: mpivae <command> [options]    (mpivae <command> --help for each)\n\n");
    for (size_t i = 0; i < N_COMMANDS; i++) printf("  %-12s %s\n", commands[i].name, commands[i].summary);
    printf("  %-12s %s\n", "--version", "print the version");
}

int main(int argc, char **argv)
{
    /*
     * HDF5's own clean-up at exit crashes on a file whose close failed (a full
     * disk): mpivae closes what it opened on every path and ends HDF5 itself,
     * only when no file is left half-closed.
     */
    H5dont_atexit();
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        print_help();
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
    MPI_Comm_rank(MPI_COMM_WORLD, &cli_rank);
    vae_set_rank(cli_rank);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    const char *cmd = argv[1];
    const struct command *c = NULL;
    for (size_t i = 0; i < N_COMMANDS && !c; i++)
        if (!strcmp(cmd, commands[i].name)) c = &commands[i];
    int rc = EXIT_USAGE;
    if (c) rc = c->run(argc - 1, argv + 1);
    else if (cli_rank == 0) fprintf(stderr, "[rank 0] error: unknown command '%s' (see 'mpivae --help')\n", cmd);
    fflush(stdout);
    if (H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL) == 0) H5close();
    if (!mpi_up) MPI_Finalize();
    return rc;
}
