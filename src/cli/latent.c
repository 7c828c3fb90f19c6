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
    "                          [--steps K] [--spherical] [--groups all|top]\n"
    "\n"
    "Encodes rows I and J of --data (FILE alone is FILE:/train/images; default: the checkpoint's\n"
    "held-out data) to their means,\n"
    "walks K (default 10) points from one to the other, linearly or along the great circle\n"
    "(--spherical), and decodes them. OUT.png is one strip: row I, the K decoded points, row J.\n"
    "OUT.h5 holds /z [K, Z], /images [K, C, H, W] and /inputs [2, C, H, W]. --out must end in .png.\n"
    "--groups top (a model with several latent groups): only the top group follows the path;\n"
    "each lower group is decoded at its prior mean given the groups above it. all (default):\n"
    "every group follows it.\n"
    CLI_WEIGHTS_HELP;

int cli_cmd_interpolate(int argc, char **argv)
{
    const char *ckpt = NULL, *out = NULL, *data = NULL;
    long from = -1, to = -1;
    int K = 10, spherical = 0;
    const char *groups = "all";
    /* In the order of the message when one of the required ones is missing. */
    cli_opt opts[] = {
        { "ckpt", CLI_STRING, .target = &ckpt, .metavar = "FILE", .required = 1 },
        CLI_WEIGHTS_OPT,
        { "from", CLI_LONG, .target = &from, .lo = 0, .hi = LONG_MAX, .metavar = "I", .required = 1 },
        { "to", CLI_LONG, .target = &to, .lo = 0, .hi = LONG_MAX, .metavar = "J", .required = 1 },
        { "out", CLI_STRING, .target = &out, .metavar = "OUT.png", .required = 1 },
        { "data", CLI_STRING, .target = &data },
        { "steps", CLI_INT, .target = &K, .lo = 2, .hi = 1000 },
        { "spherical", CLI_FLAG, .target = &spherical },
        { "groups", CLI_STRING, .target = &groups, .metavar = "all|top" },
        { 0 }
    };
    const cli_cmd cmd = { .name = "interpolate", .help = interp_help, .opts = opts };
    int rc = cli_parse(&cmd, argc, argv);
    if (rc) return cli_stop(rc);
    rc = cli_check_out("interpolate", out, ".png", WRITES_PNG("interpolate"));
    if (!rc && strcmp(groups, "all") && strcmp(groups, "top"))
        rc = cli_usage_error("interpolate", "--groups '%s' is neither all nor top", groups);
    if (rc) return rc;
    const int top = !strcmp(groups, "top");
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
            vae_model_decode_given(&m, z, top ? 1 : m.n_latents, K, strip + D);
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
        if (!rc)
            printf("wrote %s and %s: rows %ld and %ld, %d %s steps, %s\n", out, h5, from, to, K,
                   spherical ? "spherical" : "linear", top && m.n_latents > 1 ? "top group (the others at their prior means)"
                                                                          : "every latent group");
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
    "usage: mpivae traverse --ckpt FILE --out OUT.png [--dims D1,D2,...|auto] [--top N] [--group G]\n"
    "                       [--data FILE[:/ds] [--index I]] [--range LO:HI] [--steps K]\n"
    "\n"
    "For each chosen latent dimension, adds K (default 9) values over LO:HI (default -3:3) to it,\n"
    "starting from the encoded mean of row I of --data (when --index is given) or from z = 0, the\n"
    "other dimensions fixed, and decodes: one grid row per dimension (--range 0:0 reproduces the\n"
    "reconstruction of row I). --dims auto (the default) picks the N (default 8) dimensions with\n"
    "the largest average KL over --data (the active ones) and prints their KL. OUT.h5 holds\n"
    "/images [dims*K, C, H, W], /values [K] (the offsets), /dims, /base [Z]. --out must end in .png.\n"
    "--data: FILE alone is FILE:/train/images; default: the checkpoint's held-out data.\n"
    "--group G (1 = the top latent group of a hierarchical model): --dims count within that group,\n"
    "and auto picks among its dimensions; /dims holds indices into the whole code [Z].\n"
    CLI_WEIGHTS_HELP;

/* One traverse run: the options, then the checkpoint, its data and the chosen dimensions. */
typedef struct traverse_job {
    const char *ckpt, *out, *data, *dims_s;
    long index;      /* -1: start from z = 0 */
    int K, top;
    int group;       /* 1-based latent group, or 0: every latent dimension */
    int lo, hi;      /* the dimensions it may choose, [lo, hi) of Z */
    double range[2]; /* LO, HI */
    vae_config cfg;
    vae_model m;
    vae_data d;      /* opened when needed: --dims auto, --index or --data */
    int *dims, nd;   /* dims[nd] of Z */
    double *kl;      /* [Z] average KL per dimension (--dims auto) */
    float *base;     /* [Z] the code the values are added to */
} traverse_job;

/* --dims D1,D2,... into j->dims (empty entries skipped). Returns 0 or the usage exit status (after the message). */
static int traverse_given_dims(traverse_job *j)
{
    const int Z = j->hi - j->lo;
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", j->dims_s);
    int rc = 0;
    for (char *tok = strtok(buf, ","); tok && !rc; tok = strtok(NULL, ",")) {
        long v = 0;
        rc = cli_parse_long("traverse", "--dims", tok, 0, LONG_MAX, &v);
        if (!rc && v >= Z)
            rc = cli_usage_error("traverse", "--dims %ld is out of range: the model in '%s' has %d latent dimensions%s (0..%d)",
                                 v, j->ckpt, Z, j->group ? " in that --group" : "", Z - 1);
        if (!rc && j->nd < Z) j->dims[j->nd++] = j->lo + (int)v;
    }
    if (!rc && j->nd == 0) rc = cli_usage_error("traverse", "--dims needs at least one dimension");
    return rc;
}

/*
 * --dims auto: the average KL of each dimension over the data, rows shared across ranks,
 * and the top N dimensions by it, largest first (printed by rank 0). Collective.
 */
static int traverse_active_dims(traverse_job *j)
{
    const int Z = j->m.Z;
    int64_t a, b;
    int P;
    MPI_Comm_size(MPI_COMM_WORLD, &P);
    vae_latent_share(j->d.N, P, cli_rank, &a, &b);
    vae_defer_begin();
    int rc = vae_latent_kl_per_dim(&j->m, &j->d, a, b, j->kl);
    rc = vae_agree(rc, MPI_COMM_WORLD);
    if (!rc) MPI_Allreduce(MPI_IN_PLACE, j->kl, Z, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    for (int k = 0; k < Z; k++) j->kl[k] /= (double)j->d.N;
    /* The top N by KL, largest first, among the dimensions of --group. */
    j->nd = j->top < j->hi - j->lo ? j->top : j->hi - j->lo;
    for (int k = 0; k < j->nd; k++) {
        int best = -1;
        for (int q = j->lo; q < j->hi; q++) {
            int used = 0;
            for (int r = 0; r < k; r++) used |= j->dims[r] == q;
            if (!used && (best < 0 || j->kl[q] > j->kl[best])) best = q;
        }
        j->dims[k] = best;
    }
    if (!rc && cli_rank == 0) {
        printf("most active latent dimensions (average KL over %lld rows of %s:%s, nats):\n", (long long)j->d.N, j->d.file,
               j->d.dset);
        for (int k = 0; k < j->nd; k++) printf("  dimension %d: %.4f\n", j->dims[k], j->kl[j->dims[k]]);
    }
    return rc;
}

/*
 * Rank 0: vals[K], the offsets over LO:HI, and img[nd*K, D], one row of K decoded codes per
 * chosen dimension: the base with that dimension moved by each offset. z[K, Z] is scratch.
 */
static void traverse_decode(traverse_job *j, float *vals, float *z, float *img)
{
    const int Z = j->m.Z, D = j->m.D, K = j->K;
    const double lo = j->range[0], hi = j->range[1];
    for (int k = 0; k < K; k++) vals[k] = (float)(K > 1 ? lo + (hi - lo) * k / (K - 1) : lo);
    for (int r = 0; r < j->nd; r++) {
        const int dim = j->dims[r];
        for (int k = 0; k < K; k++) {
            memcpy(z + (size_t)k * Z, j->base, (size_t)Z * sizeof(float));
            z[(size_t)k * Z + dim] = j->base[dim] + vals[k]; /* offsets from the base */
        }
        vae_model_decode(&j->m, z, K, img + (size_t)r * K * D);
    }
}

/* Rank 0: OUT.png (the grid img[nd*K, D]) and OUT.h5 (/dims, /values, /base, /images), all or nothing. */
static int traverse_write(traverse_job *j, const float *vals, const float *img, int rc)
{
    const vae_arch *a = &j->cfg.arch;
    const int nd = j->nd, K = j->K;
    cli_outputs o = { 0 };
    char h5[VAE_PATH_LEN + 8];
    cli_h5_beside(j->out, h5, sizeof h5);
    const char *png_t = cli_out_add(&o, j->out), *h5_t = cli_out_add(&o, h5);
    if (!rc) rc = cli_out_refuse("traverse", &o, j->ckpt, j->d.file, NULL);
    if (!rc) rc = vae_image_write_grid(png_t, img, nd * K, a->C, a->Hh, a->W, K, 2);
    float *fd = malloc((size_t)nd * sizeof(float));
    if (!rc && !fd) rc = vae_error(VAE_ENOMEM, "cannot allocate %d dimensions", nd);
    if (!rc) {
        for (int r = 0; r < nd; r++) fd[r] = (float)j->dims[r];
        rc = vae_h5_write_matrix(h5_t, "/dims", fd, nd, 0);
    }
    free(fd);
    if (!rc) rc = vae_h5_write_matrix(h5_t, "/values", vals, K, 0);
    if (!rc) rc = vae_h5_write_matrix(h5_t, "/base", j->base, j->m.Z, 0);
    if (!rc) rc = vae_h5_write_images(h5_t, "/images", img, nd * K, a->C, a->Hh, a->W);
    rc = cli_out_finish(&o, rc);
    if (!rc)
        printf("wrote %s and %s: %d dimensions x %d values in [%g, %g], base %s\n", j->out, h5, nd, K, j->range[0],
               j->range[1], j->index >= 0 ? "the encoded mean of --index" : "z = 0");
    return rc;
}

/* Rank 0: the base code (row --index's mean, else 0), the decoded grid, the outputs. */
static int traverse_grid(traverse_job *j)
{
    const int Z = j->m.Z, D = j->m.D, K = j->K, nd = j->nd;
    int rc = 0;
    if (j->index >= 0) rc = cli_encode_one(&j->m, &j->d, j->index, j->base);
    float *img = malloc((size_t)nd * K * D * sizeof(float)); /* [nd*K, D] */
    float *vals = malloc((size_t)K * sizeof(float));         /* [K] */
    float *z = malloc((size_t)K * Z * sizeof(float));        /* [K, Z] */
    if (!img || !vals || !z) rc = vae_error(VAE_ENOMEM, "cannot allocate %d images", nd * K);
    if (!rc) traverse_decode(j, vals, z, img);
    rc = traverse_write(j, vals, img, rc);
    free(img);
    free(vals);
    free(z);
    return rc;
}

/* The traverse after its options: every rank. Returns the exit status. */
static int traverse_run(traverse_job *j)
{
    int rc = cli_load_model(&j->ckpt, &j->cfg, &j->m, VAE_LATENT_CHUNK, VAE_TOOL_TRAVERSE, "traverse");
    if (rc) return cli_finish(rc);
    const int Z = j->m.Z, auto_dims = !strcmp(j->dims_s, "auto");
    j->lo = 0;
    j->hi = Z;
    if (j->group > j->m.n_latents) {
        rc = cli_usage_error("traverse", "--group %d is out of range: the model in '%s' has %d latent group%s (1..%d)", j->group,
                             j->ckpt, j->m.n_latents, j->m.n_latents == 1 ? "" : "s", j->m.n_latents);
        vae_model_free(&j->m);
        return rc;
    }
    if (j->group > 0) {
        j->lo = j->m.latents[j->group - 1].offset;
        j->hi = j->lo + j->m.latents[j->group - 1].dim;
    }
    j->dims = calloc((size_t)Z, sizeof(int));
    j->kl = calloc((size_t)Z, sizeof(double));
    j->base = calloc((size_t)Z, sizeof(float));
    if (!j->dims || !j->kl || !j->base) rc = vae_error(VAE_ENOMEM, "cannot allocate %d latent dimensions", Z);
    if (!rc && !auto_dims) rc = traverse_given_dims(j);
    if (rc > 0) goto out; /* --dims refused (a usage error): every rank refused it, there is nothing to agree on */
    if (!rc && (auto_dims || j->index >= 0 || j->data))
        rc = cli_open_tool_data(&j->d, j->data, &j->cfg, j->ckpt, VAE_LATENT_CHUNK);
    if (!rc && j->index >= 0) rc = cli_check_index("traverse", "--index", j->index, &j->d);
    if (!rc && auto_dims) rc = traverse_active_dims(j);
    if (!rc && cli_rank == 0) rc = traverse_grid(j);
    rc = vae_agree(rc, MPI_COMM_WORLD);
out:
    free(j->dims);
    free(j->kl);
    free(j->base);
    vae_data_close(&j->d);
    vae_model_free(&j->m);
    return rc > 0 ? rc : cli_finish(rc);
}

int cli_cmd_traverse(int argc, char **argv)
{
    traverse_job j = { .dims_s = "auto", .index = -1, .K = 9, .top = 8, .range = { -3, 3 } };
    cli_opt opts[] = {
        { "ckpt", CLI_STRING, .target = &j.ckpt, .metavar = "FILE", .required = 1 },
        CLI_WEIGHTS_OPT,
        { "out", CLI_STRING, .target = &j.out, .metavar = "OUT.png", .required = 1 },
        { "data", CLI_STRING, .target = &j.data },
        { "index", CLI_LONG, .target = &j.index, .lo = 0, .hi = LONG_MAX },
        { "dims", CLI_STRING, .target = &j.dims_s },
        { "top", CLI_INT, .target = &j.top, .lo = 1, .hi = 4096 },
        { "range", CLI_CUSTOM, .target = j.range, .parse = parse_range },
        { "steps", CLI_INT, .target = &j.K, .lo = 1, .hi = 1000 },
        { "group", CLI_INT, .target = &j.group, .lo = 1, .hi = VAE_MAX_LATENTS },
        { 0 }
    };
    const cli_cmd cmd = { .name = "traverse", .help = traverse_help, .opts = opts };
    int rc = cli_parse(&cmd, argc, argv);
    if (rc) return cli_stop(rc);
    rc = cli_check_out("traverse", j.out, ".png", WRITES_PNG("traverse"));
    if (rc) return rc;
    if (cli_parse_only()) return 0;
    return traverse_run(&j);
}

static const char *encode_help =
    "usage: mpirun -np P mpivae encode --ckpt FILE --out Z.h5 [--data FILE[:/ds]]\n"
    "\n"
    "Writes /mu and /logvar [N, Z] (float32, chunked, row-aligned with the input) of every row\n"
    "and /groups [G, 4], each latent group's offset in a row and its shape C, H, W (a hierarchy's\n"
    "groups top first, each in [H, W, C] order)\n"
    "of --data (FILE alone is FILE:/train/images; default: the checkpoint's held-out data). Rows\n"
    "are shared across ranks in fixed chunks, so the output does not depend on the rank count;\n"
    "rank 0 writes the file. --out must end in .h5.\n"
    CLI_WEIGHTS_HELP;

int cli_cmd_encode(int argc, char **argv)
{
    const char *ckpt = NULL, *out = NULL, *data = NULL;
    cli_opt opts[] = {
        { "ckpt", CLI_STRING, .target = &ckpt, .metavar = "FILE", .required = 1 },
        CLI_WEIGHTS_OPT,
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
        float gl[VAE_MAX_LATENTS * 4]; /* per latent group: offset, C, H, W */
        for (int g = 0; g < m.n_latents; g++) {
            gl[4 * g] = (float)m.latents[g].offset;
            gl[4 * g + 1] = (float)m.latents[g].C;
            gl[4 * g + 2] = (float)m.latents[g].H;
            gl[4 * g + 3] = (float)m.latents[g].W;
        }
        if (!rc) rc = vae_h5_write_matrix(h5_t, "/groups", gl, m.n_latents, 4);
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
