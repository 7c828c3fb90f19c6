/*
 * synth.c: `mpivae data synth` (importer.h): a small synthetic image set of
 * up to ten shape classes, drawn from the keyed RNG so that the same seed
 * gives the same file, byte for byte (helpers in h5util.h).
 */
#include "mpivae/importer.h"
#include "mpivae/rng.h"
#include "mpivae/status.h"
#include "h5util.h"

#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

/*
 * Per-class colour for C == 3. The components of every colour add up to 1.6,
 * so the colour alone does not change an image's mean brightness.
 */
static const float synth_colour[10][3] = {
    { 1.0f, 0.3f, 0.3f }, { 0.3f, 1.0f, 0.3f }, { 0.3f, 0.3f, 1.0f }, { 1.0f, 0.6f, 0.0f },
    { 1.0f, 0.0f, 0.6f }, { 0.0f, 1.0f, 0.6f }, { 0.6f, 1.0f, 0.0f }, { 0.6f, 0.0f, 1.0f },
    { 0.0f, 0.6f, 1.0f }, { 0.8f, 0.8f, 0.0f },
};

/*
 * Whether pixel offset (dx, dy) from the shape's centre is inside shape k.
 * R is the shape's half-size and t the half-thickness of strokes, both in
 * pixels and scaled with the image so 8x8 and 28x28 both work.
 */
static int synth_inside(int k, float dx, float dy, float R, float t)
{
    float ax = fabsf(dx), ay = fabsf(dy);
    float r = sqrtf(dx * dx + dy * dy);
    switch (k) {
    case 0: return ax <= R && ay <= 0.6f * R;                           /* filled rectangle */
    case 1: return fabsf(r - R) <= t;                                   /* ring */
    case 2: return ay <= t && ax <= R;                                  /* horizontal bar */
    case 3: return ax <= t && ay <= R;                                  /* vertical bar */
    case 4: return fabsf(dx - dy) <= 2.0f * t && ax <= R && ay <= R;    /* diagonal */
    case 5: return (ax <= t && ay <= R) || (ay <= t && ax <= R);        /* cross */
    case 6: return (fabsf(dx - dy) <= 1.5f * t || fabsf(dx + dy) <= 1.5f * t) && ax <= R &&
                   ay <= R;                                             /* X */
    case 7: return r <= 0.6f * R;                                       /* small disc */
    case 8: return dy >= -R && dy <= R && ax <= 0.5f * (dy + R) + 0.5f; /* triangle */
    default: return ax <= R && ay <= R && ((dx < 0) != (dy < 0));       /* checker */
    }
}

/*
 * Draws image i of split (0 train, 1 test) with label k into img (C, Hh, W).
 * rnd holds 4 + C*Hh*W uniforms keyed by (seed, VAE_RNG_SYNTH, split, i):
 * rnd[0..1] the jitter, rnd[2] the brightness, the rest the pixel noise.
 */
static void synth_draw(uint8_t *img, int k, int C, int Hh, int W, const float *rnd)
{
    int s = Hh < W ? Hh : W;
    int jmax = s / 8 < 2 ? s / 8 : 2; /* +-2 pixels, less on images under 16 pixels */
    if (jmax < 1) jmax = 1;
    int jx = (int)(rnd[0] * (2 * jmax + 1)) - jmax;
    int jy = (int)(rnd[1] * (2 * jmax + 1)) - jmax;
    float bright = 0.8f + 0.2f * rnd[2];
    float R = 0.35f * (float)s, t = 0.08f * (float)s;
    if (t < 0.6f) t = 0.6f;
    float cx = 0.5f * (float)(W - 1) + (float)jx, cy = 0.5f * (float)(Hh - 1) + (float)jy;
    const float *noise = rnd + 4;
    size_t plane = (size_t)Hh * (size_t)W;

    for (int y = 0; y < Hh; y++)
        for (int x = 0; x < W; x++) {
            int in = synth_inside(k, (float)x - cx, (float)y - cy, R, t);
            for (int c = 0; c < C; c++) {
                float col = C == 3 ? synth_colour[k][c] : 1.0f;
                size_t j = (size_t)c * plane + (size_t)y * (size_t)W + (size_t)x;
                /* Foreground 204..255 times the class colour, uniform noise of +-16
                 * levels; clamping makes both ends of 0..255 occur. */
                float v = (in ? 255.0f * bright * col : 0.0f) + 32.0f * (noise[j] - 0.5f);
                img[j] = (uint8_t)(v <= 0.0f ? 0 : v >= 255.0f ? 255 : lrintf(v));
            }
        }
}

/* Writes /<split>/images [n, C, Hh, W] and /<split>/labels [n], in blocks of rows. */
static int synth_split(hid_t file, const char *fname, int split, int n, int C, int Hh, int W,
                       int classes, uint64_t seed)
{
    const char *sname = split == 0 ? "train" : "test";
    char iname[32], lname[32];
    snprintf(iname, sizeof iname, "/%s/images", sname);
    snprintf(lname, sizeof lname, "/%s/labels", sname);
    hsize_t idims[4] = { (hsize_t)n, (hsize_t)C, (hsize_t)Hh, (hsize_t)W };
    hsize_t ldims[1] = { (hsize_t)n };
    size_t D = (size_t)C * (size_t)Hh * (size_t)W;
    const int block = VAE__IMAGE_CHUNK_ROWS;
    uint8_t *imgs = malloc((size_t)block * D); /* (block, C, Hh, W) */
    uint8_t *labels = malloc((size_t)n);       /* (n) */
    float *rnd = malloc((4 + D) * sizeof *rnd);
    hid_t di = -1, dl = -1;
    int rc = 0;

    if (!imgs || !labels || !rnd) {
        rc = vae_error(VAE_ENOMEM, "cannot write '%s': out of memory", fname);
        goto out;
    }
    di = vae__create_u8_dataset(file, fname, iname, 4, idims, VAE__IMAGE_CHUNK_ROWS);
    if (di < 0) {
        rc = (int)di;
        goto out;
    }
    /* Labels cycle through the classes, so every class is equally common. */
    for (int i = 0; i < n; i++) labels[i] = (uint8_t)(i % classes);
    for (int i0 = 0; i0 < n; i0 += block) {
        int nb = n - i0 < block ? n - i0 : block;
        for (int b = 0; b < nb; b++) {
            vae_rng_uniform(seed, VAE_RNG_SYNTH, (uint64_t)split, (uint64_t)(i0 + b), rnd,
                            (int64_t)(4 + D));
            synth_draw(imgs + (size_t)b * D, labels[i0 + b], C, Hh, W, rnd);
        }
        rc = vae__write_u8_rows(di, fname, iname, 4, idims, (hsize_t)i0, (hsize_t)nb, imgs);
        if (rc != 0) goto out;
    }
    dl = vae__create_u8_dataset(file, fname, lname, 1, ldims, VAE__LABEL_CHUNK_ROWS);
    if (dl < 0) {
        rc = (int)dl;
        goto out;
    }
    rc = vae__write_u8_rows(dl, fname, lname, 1, ldims, 0, (hsize_t)n, labels);

out:
    if (di >= 0 && H5Dclose(di) < 0 && rc == 0)
        rc = vae_error(VAE_EIO, "cannot close dataset '%s' in '%s'", iname, fname);
    if (dl >= 0 && H5Dclose(dl) < 0 && rc == 0)
        rc = vae_error(VAE_EIO, "cannot close dataset '%s' in '%s'", lname, fname);
    free(imgs);
    free(labels);
    free(rnd);
    return rc;
}

int vae_import_synth(const char *out_path, int n_train, int n_test, int C, int Hh, int W,
                     int classes, uint64_t seed)
{
    if (!out_path || n_train < 1 || n_test < 1 || C < 1 || C > 64 || Hh < 4 || W < 4 ||
        Hh > 4096 || W > 4096 || classes < 1 || classes > 10)
        return vae_error(VAE_EINVAL,
                         "cannot write synthetic set '%s': bad arguments (n_train %d, n_test "
                         "%d, C %d, Hh %d, W %d, classes %d; need n >= 1, 4 <= Hh, W <= "
                         "4096, C <= 64, 1 <= classes <= 10)",
                         out_path ? out_path : "(null)", n_train, n_test, C, Hh, W, classes);

    struct vae__h5_quiet q;
    struct vae__h5_out o;
    int rc = 0;
    vae__h5_out_init(&o, out_path);
    vae__h5_quiet_begin(&q);
    if ((rc = vae__h5_out_create(&o)) != 0) goto out;
    if ((rc = synth_split(o.file, o.tmp, 0, n_train, C, Hh, W, classes, seed)) != 0) goto out;
    rc = synth_split(o.file, o.tmp, 1, n_test, C, Hh, W, classes, seed);

out:
    rc = vae__h5_out_finish(&o, rc);
    vae__h5_quiet_end(&q);
    return rc;
}
