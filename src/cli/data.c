/*
 * data.c: `mpivae data`: import Fashion-MNIST, write a synthetic set,
 * describe an HDF5 file. The data tools are serial (rank 0).
 */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"

#include "mpivae/importer.h"
#include "mpivae/tools.h"

#include <getopt.h> /* optind */
#include <limits.h>
#include <stdio.h>
#include <string.h>

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

int cli_cmd_data(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        if (cli_rank == 0) fputs(data_help, stdout);
        return argc < 2 ? EXIT_USAGE : 0;
    }
    const char *sub = argv[1];
    const char *out = NULL, *src = VAE_FASHION_MNIST_DIR;
    int ntr = 2000, nte = 500, C = 1, Hh = 16, W = 16, K = 4;
    long seed = 1;
    cli_opt opts[] = {
        { "out", CLI_STRING, .target = &out },
        { "src", CLI_STRING, .target = &src },
        { "n-train", CLI_INT, .target = &ntr, .lo = 1, .hi = 100000000 },
        { "n-test", CLI_INT, .target = &nte, .lo = 1, .hi = 100000000 },
        { "channels", CLI_INT, .target = &C, .lo = 1, .hi = 64 },
        { "height", CLI_INT, .target = &Hh, .lo = 4, .hi = 4096 },
        { "width", CLI_INT, .target = &W, .lo = 4, .hi = 4096 },
        { "classes", CLI_INT, .target = &K, .lo = 1, .hi = 10 },
        { "seed", CLI_LONG, .target = &seed, .lo = 0, .hi = LONG_MAX },
        { 0 }
    };
    /* argv[1] is the data tool: the options follow it, and FILE of 'data info' after them. */
    const cli_cmd cmd = { .name = "data", .help = data_help, .opts = opts, .operands = 1 };
    int rc = cli_parse(&cmd, argc - 1, argv + 1);
    if (rc) return cli_stop(rc);
    if (cli_parse_only()) return 0;
    if (cli_rank != 0) return 0; /* the data tools are serial */
    if (!strcmp(sub, "info")) {
        if (optind + 1 >= argc) return cli_usage_error("data", "'data info' needs a FILE");
        return cli_finish(vae_data_info(argv[optind + 1], stdout));
    }
    if (strcmp(sub, "fashion-mnist") && strcmp(sub, "synth"))
        return cli_usage_error("data", "unknown data tool '%s' (fashion-mnist, synth or info)", sub);
    if (!out) return cli_usage_error("data", "'data %s' needs --out FILE", sub);
    if (!strcmp(sub, "fashion-mnist")) {
        rc = vae_import_fashion_mnist(src, out);
        if (!rc) printf("wrote %s from %s\n", out, src);
    } else {
        rc = vae_import_synth(out, ntr, nte, C, Hh, W, K, (uint64_t)seed);
        if (!rc) printf("wrote %s: %d train and %d test images of %dx%dx%d, %d classes\n", out, ntr, nte, C, Hh, W, K);
    }
    return cli_finish(rc);
}
