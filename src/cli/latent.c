/*
 * latent.c: the latent-space tools `mpivae interpolate` (a path between the
 * codes of two rows), `mpivae traverse` (single latent dimensions varied,
 * the most active ones by default) and `mpivae encode` (mu and logvar of
 * every row).
 */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"

#include "mpivae/comm.h"
#include "mpivae/image.h"
#include "mpivae/latent.h"
#include "mpivae/status.h"
#include "mpivae/tools.h"

#include <limits.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *interp_help =
    "usage: mpivae interpolate --ckpt FILE --from I --to J --out OUT.png [--data FILE[:/ds]]\n"
    "                          [--steps K] [--spherical]\n"
    "\n"
    "Encodes rows I and J of --data (FILE alone is FILE:/train/images; default: the checkpoint's\n"
    "held-out data) to their means,\n"
    "walks K (default 10) points from one to the other, linearly or along the great circle\n"
    "(--spherical), and decodes them. OUT.png is one strip: row I, the K decoded points, row J.\n"
    "OUT.h5 holds /z [K, Z], /images [K, C, H, W] and /inputs [2, C, H, W]. --out must end in .png.\n";

int cli_cmd_interpolate(int argc, char **argv)
{
    const char *ckpt = NULL, *out = NULL, *data = NULL;
    long from = -1, to = -1;
    int K = 10, spherical = 0;
    /* In the order of the message when one of the required ones is missing. */
    cli_opt opts[] = {
        { "ckpt", CLI_STRING, .target = &ckpt, .metavar = "FILE", .required = 1 },
        { "from", CLI_LONG, .target = &from, .lo = 0, .hi = LONG_MAX, .metavar = "I", .required = 1 },
        { "to", CLI_LONG, .target = &to, .lo = 0, .hi = LONG_MAX, .metavar = "J", .required = 1 },
        { "out", CLI_STRING, .target = &out, .metavar = "OUT.png", .required = 1 },
        { "data", CLI_STRING, .target = &data },
        { "steps", CLI_INT, .target = &K, .lo = 2, .hi = 1000 },
        { "spherical", CLI_FLAG, .target = &spherical },
        { 0 }
    };
    const cli_cmd cmd = { .name = "interpolate", .help = interp_help, .opts = opts };
    int rc = cli_parse(&cmd, argc, argv);
    if (rc) return cli_stop(rc);
    rc = cli_check_out("interpolate", out, ".png", WRITES_PNG("interpolate"));
    if (rc) return rc;
    if (cli_parse_only()) return 0;
    vae_config cfg;
    vae_model m;
    vae_data d;
    memset(&m, 0, sizeof m);
    memset(&d, 0, sizeof d);
    rc = cli_load_model(&ckpt, &cfg, &m, K + 2, VAE_TOOL_INTERPOLATE, "interpolate");
    if (!rc) rc = cli_open_tool_data(&d, data, &cfg, ckpt, 1);
    if (!rc) rc = cli_check_index("interpolate", "--from", from, &d);
    if (!rc) rc = cli_check_index("interpolate", "--to", to, &d);
    float *buf = NULL;
    if (!rc && cli_rank == 0) {
        const int Z = m.Z, D = m.D;
        buf = malloc(((size_t)2 * Z + (size_t)K * Z + (size_t)(K + 4) * D) * sizeof(float));
        if (!buf) rc = vae_error(VAE_ENOMEM, "cannot allocate %d images", K + 2);
        /* strip[K+2, D]: input I, the K decoded points, input J; inputs[2, D]: I and J. */
        float *a = buf, *b = a + Z, *z = b + Z, *strip = z + (size_t)K * Z, *inputs = strip + (size_t)(K + 2) * D;
        int64_t ri = from, rj = to;
        if (!rc) rc = cli_encode_one(&m, &d, from, a);
        if (!rc) rc = cli_encode_one(&m, &d, to, b);
        if (!rc) rc = vae_data_rows(&d, &ri, 1, inputs);
        if (!rc) rc = vae_data_rows(&d, &rj, 1, inputs + D);
        if (!rc) {
            vae_latent_path(a, b, Z, K, spherical, z);
            vae_model_decode(&m, z, K, strip + D);
            memcpy(strip, inputs, (size_t)D * sizeof(float));
            memcpy(strip + (size_t)(K + 1) * D, inputs + D, (size_t)D * sizeof(float));
        }
        cli_outputs o = { 0 };
        char h5[VAE_PATH_LEN + 8];
        cli_h5_beside(out, h5, sizeof h5);
        const char *png_t = cli_out_add(&o, out), *h5_t = cli_out_add(&o, h5);
        if (!rc) rc = cli_out_refuse("interpolate", &o, ckpt, d.file, NULL);
        if (!rc) rc = vae_image_write_grid(png_t, strip, K + 2, cfg.arch.C, cfg.arch.Hh, cfg.arch.W, K + 2, 2);
        if (!rc) rc = vae_h5_write_matrix(h5_t, "/z", z, K, Z);
        if (!rc) rc = vae_h5_write_images(h5_t, "/images", strip + D, K, cfg.arch.C, cfg.arch.Hh, cfg.arch.W);
        if (!rc) rc = vae_h5_write_images(h5_t, "/inputs", inputs, 2, cfg.arch.C, cfg.arch.Hh, cfg.arch.W);
        rc = cli_out_finish(&o, rc);
        if (!rc) printf("wrote %s and %s: rows %ld and %ld, %d %s steps\n", out, h5, from, to, K, spherical ? "spherical" : "linear");
    }
    free(buf);
    vae_data_close(&d);
    vae_model_free(&m);
    rc = vae_agree(rc, MPI_COMM_WORLD);
    return cli_finish(rc);
}

/* Parses --range "lo:hi" into range[2]. */
static int parse_range(const char *cmd, const char *s, void *range)
{
    double *lo = range, *hi = lo + 1;
    char buf[64];
    snprintf(buf, sizeof buf, "%s", s);
    char *colon = strchr(buf + (buf[0] == '-' ? 1 : 0), ':');
    if (!colon) return cli_usage_error(cmd, "--range '%s' is not LO:HI", s);
    *colon = '\0';
    int rc = cli_parse_double(cmd, "--range", buf, -1e6, 1e6, lo);
    if (!rc) rc = cli_parse_double(cmd, "--range", colon + 1, -1e6, 1e6, hi);
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

int cli_cmd_traverse(int argc, char **argv)
{
    const char *ckpt = NULL, *out = NULL, *data = NULL, *dims_s = "auto";
    long index = -1;
    int K = 9, top = 8;
    double range[2] = { -3, 3 };
    cli_opt opts[] = {
        { "ckpt", CLI_STRING, .target = &ckpt, .metavar = "FILE", .required = 1 },
        { "out", CLI_STRING, .target = &out, .metavar = "OUT.png", .required = 1 },
        { "data", CLI_STRING, .target = &data },
        { "index", CLI_LONG, .target = &index, .lo = 0, .hi = LONG_MAX },
        { "dims", CLI_STRING, .target = &dims_s },
        { "top", CLI_INT, .target = &top, .lo = 1, .hi = 4096 },
        { "range", CLI_CUSTOM, .target = range, .parse = parse_range },
        { "steps", CLI_INT, .target = &K, .lo = 1, .hi = 1000 },
        { 0 }
    };
    const cli_cmd cmd = { .name = "traverse", .help = traverse_help, .opts = opts };
    int rc = cli_parse(&cmd, argc, argv);
    if (rc) return cli_stop(rc);
    const double lo = range[0], hi = range[1];
    rc = cli_check_out("traverse", out, ".png", WRITES_PNG("traverse"));
    if (rc) return rc;
    if (cli_parse_only()) return 0;
    vae_config cfg;
    vae_model m;
    vae_data d;
    memset(&m, 0, sizeof m);
    memset(&d, 0, sizeof d);
    rc = cli_load_model(&ckpt, &cfg, &m, VAE_LATENT_CHUNK, VAE_TOOL_TRAVERSE, "traverse");
    if (rc) return cli_finish(rc);
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
            rc = cli_parse_long("traverse", "--dims", tok, 0, LONG_MAX, &v);
            if (!rc && v >= Z) rc = cli_usage_error("traverse", "--dims %ld is out of range: the model in '%s' has %d latent dimensions (0..%d)", v, ckpt, Z, Z - 1);
            if (!rc && nd < Z) dims[nd++] = (int)v;
        }
        if (!rc && nd == 0) rc = cli_usage_error("traverse", "--dims needs at least one dimension");
        if (rc) goto out;
    }
    if (!rc && (auto_dims || index >= 0 || data)) rc = cli_open_tool_data(&d, data, &cfg, ckpt, VAE_LATENT_CHUNK);
    if (!rc && index >= 0) rc = cli_check_index("traverse", "--index", index, &d);
    if (!rc && auto_dims) {
        /* Average KL per dimension over the data, shared across ranks. */
        int64_t a, b;
        int P;
        MPI_Comm_size(MPI_COMM_WORLD, &P);
        vae_latent_share(d.N, P, cli_rank, &a, &b);
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
        if (!rc && cli_rank == 0) {
            printf("most active latent dimensions (average KL over %lld rows of %s:%s, nats):\n", (long long)d.N, d.file, d.dset);
            for (int k = 0; k < nd; k++) printf("  dimension %d: %.4f\n", dims[k], kl[dims[k]]);
        }
    }
    float *img = NULL, *vals = NULL, *z = NULL;
    if (!rc && cli_rank == 0) {
        if (index >= 0) rc = cli_encode_one(&m, &d, index, base);
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
        cli_outputs o = { 0 };
        char h5[VAE_PATH_LEN + 8];
        cli_h5_beside(out, h5, sizeof h5);
        const char *png_t = cli_out_add(&o, out), *h5_t = cli_out_add(&o, h5);
        if (!rc) rc = cli_out_refuse("traverse", &o, ckpt, d.file, NULL);
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
        rc = cli_out_finish(&o, rc);
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
    return rc > 0 ? rc : cli_finish(rc);
}

static const char *encode_help =
    "usage: mpirun -np P mpivae encode --ckpt FILE --out Z.h5 [--data FILE[:/ds]]\n"
    "\n"
    "Writes /mu and /logvar [N, Z] (float32, chunked, row-aligned with the input) of every row\n"
    "of --data (FILE alone is FILE:/train/images; default: the checkpoint's held-out data). Rows\n"
    "are shared across ranks in fixed chunks, so the output does not depend on the rank count;\n"
    "rank 0 writes the file. --out must end in .h5.\n";

int cli_cmd_encode(int argc, char **argv)
{
    const char *ckpt = NULL, *out = NULL, *data = NULL;
    cli_opt opts[] = {
        { "ckpt", CLI_STRING, .target = &ckpt, .metavar = "FILE", .required = 1 },
        { "out", CLI_STRING, .target = &out, .metavar = "Z.h5", .required = 1 },
        { "data", CLI_STRING, .target = &data },
        { 0 }
    };
    const cli_cmd cmd = { .name = "encode", .help = encode_help, .opts = opts };
    int rc = cli_parse(&cmd, argc, argv);
    if (rc) return cli_stop(rc);
    rc = cli_check_out("encode", out, ".h5", "encode writes HDF5 (Z.h5)");
    if (rc) return rc;
    if (cli_parse_only()) return 0;
    vae_config cfg;
    vae_model m;
    vae_data d;
    memset(&m, 0, sizeof m);
    memset(&d, 0, sizeof d);
    rc = cli_load_model(&ckpt, &cfg, &m, VAE_LATENT_CHUNK, VAE_TOOL_ENCODE, "encode");
    if (!rc) rc = cli_open_tool_data(&d, data, &cfg, ckpt, VAE_LATENT_CHUNK);
    if (rc) {
        vae_model_free(&m);
        vae_data_close(&d);
        return cli_finish(rc);
    }
    int P;
    MPI_Comm_size(MPI_COMM_WORLD, &P);
    const int Z = m.Z;
    int64_t a, b, N = d.N;
    vae_latent_share(N, P, cli_rank, &a, &b);
    float *mu = malloc((size_t)(b - a + 1) * Z * sizeof(float)), *lv = malloc((size_t)(b - a + 1) * Z * sizeof(float));
    float *all_mu = cli_rank == 0 ? malloc((size_t)N * Z * sizeof(float)) : NULL;
    float *all_lv = cli_rank == 0 ? malloc((size_t)N * Z * sizeof(float)) : NULL;
    vae_defer_begin();
    if (!mu || !lv || (cli_rank == 0 && (!all_mu || !all_lv))) rc = vae_error(VAE_ENOMEM, "cannot allocate codes for %lld rows", (long long)N);
    if (!rc) rc = vae_latent_encode(&m, &d, a, b, mu, lv);
    rc = vae_agree(rc, MPI_COMM_WORLD);
    if (!rc) rc = vae_gather_rows(mu, a, b, Z, all_mu, N, MPI_COMM_WORLD);
    if (!rc) rc = vae_gather_rows(lv, a, b, Z, all_lv, N, MPI_COMM_WORLD);
    vae_defer_begin();
    if (!rc && cli_rank == 0) {
        cli_outputs o = { 0 };
        const char *h5_t = cli_out_add(&o, out);
        rc = cli_out_refuse("encode", &o, ckpt, d.file, NULL);
        if (!rc) rc = vae_h5_write_matrix(h5_t, "/mu", all_mu, N, Z);
        if (!rc) rc = vae_h5_write_matrix(h5_t, "/logvar", all_lv, N, Z);
        rc = cli_out_finish(&o, rc);
        if (!rc) printf("wrote %s: /mu and /logvar [%lld, %d] of %s:%s\n", out, (long long)N, Z, d.file, d.dset);
    }
    rc = vae_agree(rc, MPI_COMM_WORLD);
    free(mu);
    free(lv);
    free(all_mu);
    free(all_lv);
    vae_data_close(&d);
    vae_model_free(&m);
    return cli_finish(rc);
}
