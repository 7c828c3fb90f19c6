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

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *sample_help =
    "usage: mpivae sample --ckpt FILE --out OUT.png [--n N] [--temperature T|T1,T2,...] [--seed S] [--cols K]\n"
    "\n"
    "Decodes N (default 64) samples z ~ N(0, T^2 I) of the prior into a grid PNG (OUT.png) and\n"
    "an HDF5 file beside it (OUT.h5, dataset /samples [N, C, H, W]). Deterministic for a seed.\n"
    "A hierarchical model samples ancestrally, z_k = mu_p + T sigma_p eps in each group k (top\n"
    "first); T1,T2,... gives each latent group its own temperature (one per group).\n"
    "--out must end in .png.\n"
    CLI_WEIGHTS_HELP;

/*
 * --temperature T or T1,...,TK into temps[] and *count; with a model (m not
 * NULL), K must be its count of latent groups. 0 or the usage exit status.
 */
static int parse_temps(const char *s, const vae_model *m, float *temps, int *count)
{
    char buf[512];
    snprintf(buf, sizeof buf, "%s", s);
    int n = 0, rc = 0;
    for (char *tok = buf, *c;; tok = c + 1) {
        c = strchr(tok, ',');
        if (c) *c = '\0';
        double v;
        if (n == VAE_MAX_LATENTS) return cli_usage_error("sample", "--temperature '%s' has more than %d values", s, VAE_MAX_LATENTS);
        rc = cli_parse_double("sample", "--temperature", tok, 0, 100, &v);
        if (rc) return rc;
        temps[n++] = (float)v;
        if (!c) break;
    }
    if (m && n > 1 && n != m->n_latents)
        return cli_usage_error("sample", "--temperature '%s' has %d values; the model in its checkpoint has %d latent groups "
                               "(give one temperature, or one per group)", s, n, m->n_latents);
    *count = n;
    return 0;
}

int cli_cmd_sample(int argc, char **argv)
{
    const char *ckpt = NULL, *out = NULL;
    int n = 64, cols = 8;
    long seed = 1;
    const char *temp_s = "1";
    float temps[VAE_MAX_LATENTS];
    int nt = 1;
    cli_opt opts[] = {
        { "ckpt", CLI_STRING, .target = &ckpt, .metavar = "FILE", .required = 1 },
        CLI_WEIGHTS_OPT,
        { "out", CLI_STRING, .target = &out, .metavar = "OUT.png", .required = 1 },
        { "n", CLI_INT, .target = &n, .lo = 1, .hi = 100000 },
        { "temperature", CLI_STRING, .target = &temp_s, .metavar = "T|T1,T2,..." },
        { "seed", CLI_LONG, .target = &seed, .lo = 0, .hi = LONG_MAX },
        { "cols", CLI_INT, .target = &cols, .lo = 1, .hi = 1000 },
        { 0 }
    };
    const cli_cmd cmd = { .name = "sample", .help = sample_help, .opts = opts };
    int rc = cli_parse(&cmd, argc, argv);
    if (rc) return cli_stop(rc);
    rc = cli_check_out("sample", out, ".png", WRITES_PNG("sample"));
    if (!rc) rc = parse_temps(temp_s, NULL, temps, &nt);
    if (rc) return rc;
    if (cli_parse_only()) return 0;
    vae_config cfg;
    vae_model m;
    memset(&m, 0, sizeof m);
    rc = cli_load_model(&ckpt, &cfg, &m, 256, VAE_TOOL_SAMPLE, "sample");
    if (!rc) rc = parse_temps(temp_s, &m, temps, &nt); /* the same on every rank */
    if (rc > 0) { /* a usage error, said once: every rank refused it alike */
        vae_model_free(&m);
        return rc;
    }
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
            if (nt == 1) vae_sample_prior(&m, (uint64_t)seed, 0, temps[0], n, img);
            else vae_sample_prior_groups(&m, (uint64_t)seed, 0, temps, n, img);
            rc = vae_image_write_grid(png_t, img, n, cfg.arch.C, cfg.arch.Hh, cfg.arch.W, cols, 2);
        }
        if (!rc) rc = vae_h5_write_images(h5_t, "/samples", img, n, cfg.arch.C, cfg.arch.Hh, cfg.arch.W);
        rc = cli_out_finish(&o, rc);
        if (!rc) printf("wrote %s and %s (%d samples, temperature %s, seed %ld)\n", out, h5, n, temp_s, seed);
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
    "--out must end in .png.\n"
    CLI_WEIGHTS_HELP;

int cli_cmd_reconstruct(int argc, char **argv)
{
    const char *ckpt = NULL, *out = NULL, *data = NULL;
    int n = 32, cols = 8;
    long first = 0;
    cli_opt opts[] = {
        { "ckpt", CLI_STRING, .target = &ckpt, .metavar = "FILE", .required = 1 },
        CLI_WEIGHTS_OPT,
        { "out", CLI_STRING, .target = &out, .metavar = "OUT.png", .required = 1 },
        { "data", CLI_STRING, .target = &data },
        { "n", CLI_INT, .target = &n, .lo = 1, .hi = 100000 },
        { "first", CLI_LONG, .target = &first, .lo = 0, .hi = LONG_MAX },
        { "cols", CLI_INT, .target = &cols, .lo = 1, .hi = 1000 },
        { 0 }
    };
    const cli_cmd cmd = { .name = "reconstruct", .help = recon_help, .opts = opts };
    int rc = cli_parse(&cmd, argc, argv);
    if (rc) return cli_stop(rc);
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
