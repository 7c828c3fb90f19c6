/*
 * images.c: the image tools `mpivae sample` (decoded prior samples) and
 * `mpivae reconstruct` (inputs over their reconstructions), each a PNG grid
 * with an HDF5 file beside it.
 */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"

#include "mpivae/image.h"
#include "mpivae/status.h"
#include "mpivae/tools.h"

#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *sample_help =
    "usage: mpivae sample --ckpt FILE --out OUT.png [--n N] [--temperature T] [--seed S] [--cols K]\n"
    "\n"
    "Decodes N (default 64) samples z ~ N(0, T^2 I) of the prior into a grid PNG (OUT.png) and\n"
    "an HDF5 file beside it (OUT.h5, dataset /samples [N, C, H, W]). Deterministic for a seed.\n"
    "--out must end in .png.\n";

int cli_cmd_sample(int argc, char **argv)
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
        case 'n': rc = cli_parse_int("sample", "--n", optarg, 1, 100000, &n); break;
        case 't': rc = cli_parse_double("sample", "--temperature", optarg, 0, 100, &temp); break;
        case 's': rc = cli_parse_long("sample", "--seed", optarg, 0, LONG_MAX, &seed); break;
        case 'k': rc = cli_parse_int("sample", "--cols", optarg, 1, 1000, &cols); break;
        case 'h': if (cli_rank == 0) fputs(sample_help, stdout); return 0;
        default: return cli_bad_option("sample", c, argv);
        }
    }
    if (rc) return rc;
    if (cli_no_stray("sample", argc, argv)) return EXIT_USAGE;
    if (!ckpt || !out) return cli_usage_error("sample", "--ckpt FILE and --out OUT.png are required");
    rc = cli_check_out("sample", out, ".png", WRITES_PNG("sample"));
    if (rc) return rc;
    if (cli_parse_only()) return 0;
    vae_config cfg;
    vae_model m;
    memset(&m, 0, sizeof m);
    rc = cli_load_model(&ckpt, &cfg, &m, 256, VAE_TOOL_SAMPLE, "sample");
    float *img = NULL;
    cli_outputs o = { 0 };
    char h5[VAE_PATH_LEN + 8];
    cli_h5_beside(out, h5, sizeof h5);
    const char *png_t = cli_out_add(&o, out), *h5_t = cli_out_add(&o, h5);
    if (!rc) rc = cli_out_check("sample", &o, ckpt, NULL, NULL);
    if (!rc && cli_rank == 0) {
        img = malloc((size_t)n * m.D * sizeof(float));
        if (!img) rc = vae_error(VAE_ENOMEM, "cannot allocate %d images", n);
        if (!rc) {
            vae_sample_prior(&m, (uint64_t)seed, 0, (float)temp, n, img);
            rc = vae_image_write_grid(png_t, img, n, cfg.arch.C, cfg.arch.Hh, cfg.arch.W, cols, 2);
        }
        if (!rc) rc = vae_h5_write_images(h5_t, "/samples", img, n, cfg.arch.C, cfg.arch.Hh, cfg.arch.W);
        rc = cli_out_finish(&o, rc);
        if (!rc) printf("wrote %s and %s (%d samples, temperature %g, seed %ld)\n", out, h5, n, temp, seed);
    }
    free(img);
    vae_model_free(&m);
    return cli_finish(rc);
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

int cli_cmd_reconstruct(int argc, char **argv)
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
        case 'n': rc = cli_parse_int("reconstruct", "--n", optarg, 1, 100000, &n); break;
        case 'f': rc = cli_parse_long("reconstruct", "--first", optarg, 0, LONG_MAX, &first); break;
        case 'k': rc = cli_parse_int("reconstruct", "--cols", optarg, 1, 1000, &cols); break;
        case 'h': if (cli_rank == 0) fputs(recon_help, stdout); return 0;
        default: return cli_bad_option("reconstruct", c, argv);
        }
    }
    if (rc) return rc;
    if (cli_no_stray("reconstruct", argc, argv)) return EXIT_USAGE;
    if (!ckpt || !out) return cli_usage_error("reconstruct", "--ckpt FILE and --out OUT.png are required");
    rc = cli_check_out("reconstruct", out, ".png", WRITES_PNG("reconstruct"));
    if (rc) return rc;
    if (cli_parse_only()) return 0;
    vae_config cfg;
    vae_model m;
    vae_data d;
    memset(&m, 0, sizeof m);
    memset(&d, 0, sizeof d);
    rc = cli_load_model(&ckpt, &cfg, &m, 1, VAE_TOOL_RECONSTRUCT, "reconstruct");
    if (!rc) rc = cli_open_data(&d, data, &cfg, ckpt, 0, 1);
    if (!rc) rc = cli_check_shape(&d, &cfg, ckpt);
    if (!rc && first > d.N - n) { /* not first + n: --first may be near LONG_MAX */
        if (cli_rank == 0)
            vae_error(VAE_EINVAL, "--first %ld --n %d asks for rows past the end: '%s:%s' has %lld rows", first, n, d.file,
                      d.dset, (long long)d.N);
        rc = VAE_EINVAL;
    }
    float *img = NULL;
    cli_outputs o = { 0 };
    char h5[VAE_PATH_LEN + 8];
    cli_h5_beside(out, h5, sizeof h5);
    const char *png_t = cli_out_add(&o, out), *h5_t = cli_out_add(&o, h5);
    if (!rc) rc = cli_out_check("reconstruct", &o, ckpt, d.file, NULL);
    if (!rc && cli_rank == 0) {
        int groups = (n + cols - 1) / cols;
        img = calloc((size_t)groups * 2 * cols * m.D, sizeof(float));
        if (!img) rc = vae_error(VAE_ENOMEM, "cannot allocate %d images", 2 * n);
        if (!rc) rc = vae_reconstruct_grid(&m, &d, first, n, cols, img);
        if (!rc) rc = vae_image_write_grid(png_t, img, groups * 2 * cols, cfg.arch.C, cfg.arch.Hh, cfg.arch.W, cols, 2);
        if (!rc) rc = vae_h5_write_images(h5_t, "/images", img, groups * 2 * cols, cfg.arch.C, cfg.arch.Hh, cfg.arch.W);
        rc = cli_out_finish(&o, rc);
        if (!rc) printf("wrote %s and %s (%d inputs over their reconstructions)\n", out, h5, n);
    }
    free(img);
    vae_data_close(&d);
    vae_model_free(&m);
    return cli_finish(rc);
}
