/*
 * data.c: `mpivae data`: import Fashion-MNIST, write a synthetic set,
 * describe an HDF5 file. The data tools are serial (rank 0).
 */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"

#include "mpivae/importer.h"
#include "mpivae/tools.h"

#include <getopt.h>
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
        case 'n': rc = cli_parse_int("data", "--n-train", optarg, 1, 100000000, &ntr); break;
        case 't': rc = cli_parse_int("data", "--n-test", optarg, 1, 100000000, &nte); break;
        case 'c': rc = cli_parse_int("data", "--channels", optarg, 1, 64, &C); break;
        case 'H': rc = cli_parse_int("data", "--height", optarg, 4, 4096, &Hh); break;
        case 'W': rc = cli_parse_int("data", "--width", optarg, 4, 4096, &W); break;
        case 'k': rc = cli_parse_int("data", "--classes", optarg, 1, 10, &K); break;
        case 'S': rc = cli_parse_long("data", "--seed", optarg, 0, LONG_MAX, &seed); break;
        case 'h': if (cli_rank == 0) fputs(data_help, stdout); return 0;
        default: return cli_bad_option("data", c, argv + 1);
        }
    }
    if (rc) return rc;
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
