/*
 * test_importer.c: tests of importer.h and image.h.
 *
 * Everything is written under a fresh mkdtemp directory in /tmp, removed at
 * the end. (a) fake IDX files (gzip, and one plain) imported and read back;
 * (b) truncated, wrong-magic and count-mismatch IDX files rejected; (c) the
 * synthetic set: shapes, labels, determinism per seed, distinct classes;
 * (d) a PNG grid read back with libpng; (e) vae_data_info. The exit code is
 * the verdict: 0 only when every check passed. Messages printed by the
 * library for the failures that (b) and (e) provoke on purpose are expected.
 */
#define _XOPEN_SOURCE 700

#include "mpivae/image.h"
#include "mpivae/importer.h"
#include "mpivae/status.h"

#include <ftw.h>
#include <hdf5.h>
#include <math.h>
#include <png.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "check.h"

static char g_dir[64];

/* Returns "<g_dir>/<name>" in a static rotating buffer. */
static const char *tpath(const char *name)
{
    static char buf[8][256];
    static int k;
    char *p = buf[k++ % 8];
    snprintf(p, 256, "%s/%s", g_dir, name);
    return p;
}

static int file_exists(const char *path) { return access(path, F_OK) == 0; }

static int make_dir(const char *path) { return mkdir(path, 0700); }

/* ---------------------------------------------------------------------- */
/* IDX fixtures                                                            */
/* ---------------------------------------------------------------------- */

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* Known pixel value of image i at (r, c). */
static uint8_t fake_pixel(int split, int i, int r, int c)
{
    return (uint8_t)(split * 101 + i * 31 + r * 7 + c * 3);
}

/*
 * Writes an IDX file: header (magic, dims), then data_len bytes of data
 * (which may be fewer than the dims imply, for a truncated file). gzip when
 * gz, plain otherwise. Returns 0 on success.
 */
static int write_idx(const char *path, int gz, uint32_t magic, int ndims, const uint32_t *dims,
                     const uint8_t *data, size_t data_len)
{
    uint8_t hdr[16];
    put_be32(hdr, magic);
    for (int d = 0; d < ndims; d++) put_be32(hdr + 4 + 4 * d, dims[d]);
    size_t hlen = 4 + 4 * (size_t)ndims;
    if (gz) {
        gzFile f = gzopen(path, "wb");
        if (!f) return -1;
        int ok = gzwrite(f, hdr, (unsigned)hlen) == (int)hlen &&
                 (data_len == 0 || gzwrite(f, data, (unsigned)data_len) == (int)data_len);
        return (gzclose(f) == Z_OK && ok) ? 0 : -1;
    }
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    int ok = fwrite(hdr, 1, hlen, f) == hlen && fwrite(data, 1, data_len, f) == data_len;
    return (fclose(f) == 0 && ok) ? 0 : -1;
}

/* Writes a full set of fake Fashion-MNIST files into folder dir (created). */
static int write_fake_set(const char *dir, int n_train, int n_test, const uint8_t *train_lab,
                          const uint8_t *test_lab)
{
    char p[512];
    uint8_t *img = malloc((size_t)(n_train > n_test ? n_train : n_test) * 28 * 28);
    int rc = 0;
    if (!img) return -1;
    for (int split = 0; split < 2; split++) {
        int n = split == 0 ? n_train : n_test;
        const char *pre = split == 0 ? "train" : "t10k";
        for (int i = 0; i < n; i++)
            for (int r = 0; r < 28; r++)
                for (int c = 0; c < 28; c++)
                    img[(i * 28 + r) * 28 + c] = fake_pixel(split, i, r, c);
        uint32_t idims[3] = { (uint32_t)n, 28, 28 }, ldims[1] = { (uint32_t)n };
        snprintf(p, sizeof p, "%s/%s-images-idx3-ubyte.gz", dir, pre);
        rc |= write_idx(p, 1, 0x803, 3, idims, img, (size_t)n * 28 * 28);
        /* The test labels are a plain file, to exercise the fallback. */
        snprintf(p, sizeof p, "%s/%s-labels-idx1-ubyte%s", dir, pre, split == 0 ? ".gz" : "");
        rc |= write_idx(p, split == 0, 0x801, 1, ldims, split == 0 ? train_lab : test_lab,
                        (size_t)n);
    }
    free(img);
    return rc;
}

/* Reads a whole uint8 dataset; fills dims and rank. Returns malloc'd data or NULL. */
static uint8_t *read_u8(const char *file, const char *name, int *rank, hsize_t *dims)
{
    uint8_t *buf = NULL;
    hid_t f = H5Fopen(file, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) return NULL;
    hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
    if (d >= 0) {
        hid_t s = H5Dget_space(d), t = H5Dget_type(d);
        *rank = H5Sget_simple_extent_dims(s, dims, NULL);
        /* The stored type must be 8-bit unsigned little-endian. */
        if (H5Tequal(t, H5T_STD_U8LE) > 0 && *rank > 0) {
            hsize_t total = 1;
            for (int k = 0; k < *rank; k++) total *= dims[k];
            buf = malloc((size_t)total + 1);
            if (buf && H5Dread(d, H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0) {
                free(buf);
                buf = NULL;
            }
        }
        H5Tclose(t);
        H5Sclose(s);
        H5Dclose(d);
    }
    H5Fclose(f);
    return buf;
}

/* (a) A tiny fake set imports and reads back exactly. */
static void test_import_fake(void)
{
    const uint8_t train_lab[5] = { 3, 1, 4, 1, 5 }, test_lab[3] = { 9, 0, 2 };
    const char *src = tpath("fake");
    const char *out = tpath("fake.h5");
    CHECK_EQ(make_dir(src), 0);
    CHECK_EQ(write_fake_set(src, 5, 3, train_lab, test_lab), 0);
    CHECK_EQ(vae_import_fashion_mnist(src, out), 0);
    CHECK(file_exists(out));
    CHECK(!file_exists(tpath("fake.h5.tmp")));

    int rank = 0;
    hsize_t dims[8] = { 0 };
    uint8_t *img = read_u8(out, "/train/images", &rank, dims);
    CHECK(img != NULL);
    CHECK_EQ(rank, 3);
    CHECK_EQ(dims[0], 5);
    CHECK_EQ(dims[1], 28);
    CHECK_EQ(dims[2], 28);
    if (img && rank == 3 && dims[0] == 5) {
        CHECK_EQ(img[0], fake_pixel(0, 0, 0, 0));
        CHECK_EQ(img[(2 * 28 + 13) * 28 + 17], fake_pixel(0, 2, 13, 17));
        CHECK_EQ(img[(4 * 28 + 27) * 28 + 27], fake_pixel(0, 4, 27, 27));
        CHECK_EQ(img[(2 * 28 + 13) * 28 + 17], (uint8_t)(2 * 31 + 13 * 7 + 17 * 3));
        int bad = 0;
        for (int i = 0; i < 5; i++)
            for (int r = 0; r < 28; r++)
                for (int c = 0; c < 28; c++)
                    bad += img[(i * 28 + r) * 28 + c] != fake_pixel(0, i, r, c);
        CHECK_EQ(bad, 0);
    }
    free(img);

    uint8_t *lab = read_u8(out, "/train/labels", &rank, dims);
    CHECK(lab != NULL);
    CHECK_EQ(rank, 1);
    CHECK_EQ(dims[0], 5);
    if (lab && dims[0] == 5)
        for (int i = 0; i < 5; i++) CHECK_EQ(lab[i], train_lab[i]);
    free(lab);

    img = read_u8(out, "/test/images", &rank, dims);
    CHECK(img != NULL);
    CHECK_EQ(rank, 3);
    CHECK_EQ(dims[0], 3);
    if (img && dims[0] == 3) CHECK_EQ(img[(1 * 28 + 5) * 28 + 6], fake_pixel(1, 1, 5, 6));
    free(img);

    lab = read_u8(out, "/test/labels", &rank, dims);
    CHECK(lab != NULL);
    CHECK_EQ(dims[0], 3);
    if (lab && dims[0] == 3)
        for (int i = 0; i < 3; i++) CHECK_EQ(lab[i], test_lab[i]);
    free(lab);

    /* Chunking and deflate as documented. */
    hid_t f = H5Fopen(out, H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t d = H5Dopen2(f, "/train/images", H5P_DEFAULT);
    hid_t dcpl = H5Dget_create_plist(d);
    hsize_t chunk[3] = { 0 };
    CHECK_EQ(H5Pget_layout(dcpl), H5D_CHUNKED);
    CHECK_EQ(H5Pget_chunk(dcpl, 3, chunk), 3);
    CHECK_EQ(chunk[0], 5); /* 1024 rows, clamped to the 5 rows there are */
    CHECK_EQ(chunk[1], 28);
    unsigned flags, cd[4];
    size_t ncd = 4;
    char fname[32];
    CHECK_EQ(H5Pget_filter2(dcpl, 0, &flags, &ncd, cd, sizeof fname, fname, NULL),
             H5Z_FILTER_DEFLATE);
    CHECK_EQ(cd[0], 1);
    H5Pclose(dcpl);
    H5Dclose(d);
    H5Fclose(f);
}

/* (b) Bad IDX files give a non-zero status and leave no output behind. */
static void test_import_bad(void)
{
    const uint8_t lab[5] = { 0, 1, 2, 3, 4 };
    uint8_t img[5 * 28 * 28];
    memset(img, 7, sizeof img);
    uint32_t idims[3] = { 5, 28, 28 }, ldims[1] = { 5 }, ldims4[1] = { 4 };
    char p[512];

    fprintf(stderr, "(expected errors follow: truncated, wrong magic, count mismatch, missing)\n");

    /* Truncated: the header promises 5 images, the data holds 4.5. */
    const char *dir = tpath("trunc");
    CHECK_EQ(make_dir(dir), 0);
    CHECK_EQ(write_fake_set(dir, 5, 3, lab, lab), 0);
    snprintf(p, sizeof p, "%s/train-images-idx3-ubyte.gz", dir);
    CHECK_EQ(write_idx(p, 1, 0x803, 3, idims, img, sizeof img - 28 * 14), 0);
    CHECK_NE(vae_import_fashion_mnist(dir, tpath("trunc.h5")), 0);
    CHECK(!file_exists(tpath("trunc.h5")));
    CHECK(!file_exists(tpath("trunc.h5.tmp")));

    /* Wrong magic: a label magic on the image file. */
    dir = tpath("magic");
    CHECK_EQ(make_dir(dir), 0);
    CHECK_EQ(write_fake_set(dir, 5, 3, lab, lab), 0);
    snprintf(p, sizeof p, "%s/train-images-idx3-ubyte.gz", dir);
    CHECK_EQ(write_idx(p, 1, 0x801, 3, idims, img, sizeof img), 0);
    CHECK_NE(vae_import_fashion_mnist(dir, tpath("magic.h5")), 0);
    CHECK(!file_exists(tpath("magic.h5")));

    /* Wrong magic on a label file. */
    dir = tpath("magic2");
    CHECK_EQ(make_dir(dir), 0);
    CHECK_EQ(write_fake_set(dir, 5, 3, lab, lab), 0);
    snprintf(p, sizeof p, "%s/train-labels-idx1-ubyte.gz", dir);
    CHECK_EQ(write_idx(p, 1, 0x803, 1, ldims, lab, 5), 0);
    CHECK_NE(vae_import_fashion_mnist(dir, tpath("magic2.h5")), 0);

    /* 5 images but 4 labels. */
    dir = tpath("count");
    CHECK_EQ(make_dir(dir), 0);
    CHECK_EQ(write_fake_set(dir, 5, 3, lab, lab), 0);
    snprintf(p, sizeof p, "%s/train-labels-idx1-ubyte.gz", dir);
    CHECK_EQ(write_idx(p, 1, 0x801, 1, ldims4, lab, 4), 0);
    CHECK_NE(vae_import_fashion_mnist(dir, tpath("count.h5")), 0);

    /* A folder without the files. */
    CHECK_NE(vae_import_fashion_mnist(tpath("does-not-exist"), tpath("none.h5")), 0);
    CHECK(!file_exists(tpath("none.h5")));
}

/* ---------------------------------------------------------------------- */
/* Synthetic set                                                           */
/* ---------------------------------------------------------------------- */

static int read_file_bytes(const char *path, uint8_t **data, long *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    fseek(f, 0, SEEK_END);
    *len = ftell(f);
    fseek(f, 0, SEEK_SET);
    *data = malloc((size_t)*len + 1);
    int ok = *data && fread(*data, 1, (size_t)*len, f) == (size_t)*len;
    fclose(f);
    return ok ? 0 : -1;
}

/* Checks one synthetic configuration. */
static void test_synth_one(int C, int Hh, int W)
{
    char a[64], b[64], c[64];
    snprintf(a, sizeof a, "synth_%dx%dx%d_a.h5", C, Hh, W);
    snprintf(b, sizeof b, "synth_%dx%dx%d_b.h5", C, Hh, W);
    snprintf(c, sizeof c, "synth_%dx%dx%d_c.h5", C, Hh, W);
    const char *pa = tpath(a), *pb = tpath(b), *pc = tpath(c);
    const int classes = 10;
    size_t D = (size_t)C * Hh * W;

    CHECK_EQ(vae_import_synth(pa, 200, 50, C, Hh, W, classes, 42), 0);
    CHECK_EQ(vae_import_synth(pb, 200, 50, C, Hh, W, classes, 42), 0);
    CHECK_EQ(vae_import_synth(pc, 200, 50, C, Hh, W, classes, 43), 0);

    int rank = 0;
    hsize_t dims[8] = { 0 };
    for (int split = 0; split < 2; split++) {
        const char *iname = split ? "/test/images" : "/train/images";
        const char *lname = split ? "/test/labels" : "/train/labels";
        hsize_t n = split ? 50 : 200;
        uint8_t *ia = read_u8(pa, iname, &rank, dims);
        CHECK(ia != NULL);
        CHECK_EQ(rank, 4);
        CHECK_EQ(dims[0], n);
        CHECK_EQ(dims[1], C);
        CHECK_EQ(dims[2], Hh);
        CHECK_EQ(dims[3], W);
        uint8_t *la = read_u8(pa, lname, &rank, dims);
        CHECK(la != NULL);
        CHECK_EQ(rank, 1);
        CHECK_EQ(dims[0], n);
        uint8_t *ib = read_u8(pb, iname, &rank, dims);
        uint8_t *lb = read_u8(pb, lname, &rank, dims);
        uint8_t *ic = read_u8(pc, iname, &rank, dims);
        CHECK(ib && lb && ic);
        if (!ia || !la || !ib || !lb || !ic) {
            free(ia), free(la), free(ib), free(lb), free(ic);
            continue;
        }

        int out_of_range = 0;
        for (hsize_t i = 0; i < n; i++) out_of_range += la[i] >= classes;
        CHECK_EQ(out_of_range, 0);

        /* Same seed: same data; other seed: other data. */
        CHECK_EQ(memcmp(ia, ib, (size_t)n * D), 0);
        CHECK_EQ(memcmp(la, lb, (size_t)n), 0);
        CHECK_NE(memcmp(ia, ic, (size_t)n * D), 0);

        /* Both ends of 0..255 occur. */
        int lo = 255, hi = 0;
        for (size_t j = 0; j < (size_t)n * D; j++) {
            if (ia[j] < lo) lo = ia[j];
            if (ia[j] > hi) hi = ia[j];
        }
        CHECK_EQ(lo, 0);
        CHECK_EQ(hi, 255);

        /* Per-class mean images; every pair of classes differs clearly. */
        double *mean = calloc((size_t)classes * D, sizeof *mean);
        int count[10] = { 0 };
        for (hsize_t i = 0; i < n; i++) {
            count[la[i]]++;
            for (size_t j = 0; j < D; j++) mean[la[i] * D + j] += ia[i * D + j];
        }
        double cmean[10] = { 0 };
        for (int k = 0; k < classes; k++) {
            CHECK_CMP_INT(count[k], >, 0);
            for (size_t j = 0; j < D; j++) {
                mean[k * D + j] /= count[k] > 0 ? count[k] : 1;
                cmean[k] += mean[k * D + j] / (double)D;
            }
        }
        double min_dist = INFINITY;
        for (int k = 0; k < classes; k++)
            for (int l = k + 1; l < classes; l++) {
                double dist = 0.0;
                for (size_t j = 0; j < D; j++) dist += fabs(mean[k * D + j] - mean[l * D + j]);
                dist /= (double)D;
                if (dist < min_dist) min_dist = dist;
            }
        CHECK_CMP_DBL(min_dist, >, 10.0);
        /* A filled rectangle (class 0) is brighter on average than a diagonal (class 4). */
        CHECK_CMP_DBL(cmean[0], >, cmean[4] + 10.0);
        if (split == 0)
            printf("synth %dx%dx%d: smallest mean abs difference between class means %.1f, "
                   "class 0 mean %.1f, class 4 mean %.1f\n",
                   C, Hh, W, min_dist, cmean[0], cmean[4]);
        free(mean);
        free(ia), free(la), free(ib), free(lb), free(ic);
    }

    /* Object timestamps are off, so the same seed gives the same bytes. */
    uint8_t *fa = NULL, *fb = NULL;
    long na = 0, nb = 0;
    CHECK_EQ(read_file_bytes(pa, &fa, &na), 0);
    CHECK_EQ(read_file_bytes(pb, &fb, &nb), 0);
    CHECK_EQ(na, nb);
    if (fa && fb && na == nb) CHECK_EQ(memcmp(fa, fb, (size_t)na), 0);
    free(fa);
    free(fb);
}

/* (c) */
static void test_synth(void)
{
    test_synth_one(1, 12, 12);
    test_synth_one(3, 8, 8);
    test_synth_one(1, 28, 28);
    fprintf(stderr, "(an expected error follows: bad synthetic arguments)\n");
    CHECK_NE(vae_import_synth(tpath("bad.h5"), 10, 10, 1, 8, 8, 11, 1), 0);
}

/* ---------------------------------------------------------------------- */
/* PNG                                                                     */
/* ---------------------------------------------------------------------- */

/* Reads a PNG with libpng's simplified API; returns malloc'd pixels or NULL. */
static uint8_t *read_png(const char *path, png_uint_32 format, png_uint_32 *file_format,
                         int *w, int *h)
{
    png_image im;
    memset(&im, 0, sizeof im);
    im.version = PNG_IMAGE_VERSION;
    if (!png_image_begin_read_from_file(&im, path)) return NULL;
    *file_format = im.format;
    im.format = format;
    *w = (int)im.width;
    *h = (int)im.height;
    uint8_t *buf = malloc(PNG_IMAGE_SIZE(im));
    if (!buf || !png_image_finish_read(&im, NULL, buf, 0, NULL)) {
        png_image_free(&im);
        free(buf);
        return NULL;
    }
    return buf;
}

/* (d) */
static void test_png(void)
{
    const int n = 10, Hh = 28, W = 28, cols = 4, pad = 2;
    float *imgs = malloc((size_t)n * Hh * W * sizeof *imgs); /* (n, 1, Hh, W) */
    for (int k = 0; k < n; k++)
        for (int j = 0; j < Hh * W; j++) imgs[k * Hh * W + j] = (float)k / 9.0f;
    imgs[3 * Hh * W + 0] = NAN;    /* image 3, pixel (0, 0) */
    imgs[3 * Hh * W + 1] = 7.0f;   /* image 3, pixel (0, 1): clamped to 1 */
    imgs[3 * Hh * W + 2] = -2.0f;  /* image 3, pixel (0, 2): clamped to 0 */
    const char *path = tpath("grid.png");
    CHECK_EQ(vae_image_write_grid(path, imgs, n, 1, Hh, W, cols, pad), 0);
    CHECK(!file_exists(tpath("grid.png.tmp")));

    png_uint_32 ff = 0;
    int w = 0, h = 0;
    uint8_t *pix = read_png(path, PNG_FORMAT_GRAY, &ff, &w, &h);
    CHECK(pix != NULL);
    CHECK_EQ(w, 4 * 28 + 5 * 2);
    CHECK_EQ(h, 3 * 28 + 4 * 2);
    CHECK_EQ(ff, PNG_FORMAT_GRAY);
    if (pix && w == 122 && h == 92) {
        CHECK_EQ(pix[0], 128);                                 /* border */
        CHECK_EQ(pix[2 * w + 2], 0);                           /* image 0, top left */
        CHECK_EQ(pix[(2 + 30 + 5) * w + (2 + 30 + 7)], 142);   /* image 5: 5/9 * 255 */
        CHECK_EQ(pix[(2 + 60 + 27) * w + (2 + 30)], 255); /* image 9 (row 2, col 1), bottom left */
        CHECK_EQ(pix[(2 + 60) * w + (2 + 27)], 227);      /* image 8: 8/9 * 255 */
        CHECK_EQ(pix[(2 + 60 + 10) * w + (2 + 60 + 10)], 128); /* empty slot 10 */
        CHECK_EQ(pix[(2 + 28) * w + (2 + 10)], 128);           /* gap between rows */
        CHECK_EQ(pix[2 * w + 2 + 90], 0);                      /* image 3: NaN drawn as 0 */
        CHECK_EQ(pix[2 * w + 2 + 91], 255);                    /* image 3: 7 clamped */
        CHECK_EQ(pix[2 * w + 2 + 92], 0);                      /* image 3: -2 clamped */
        CHECK_EQ(pix[2 * w + 2 + 93], 85);                     /* image 3: 3/9 * 255 */
    }
    free(pix);
    free(imgs);

    /* RGB: one 2x3 image, channel planes (3, 2, 3), pad 1. */
    float rgb[3 * 2 * 3];
    for (int c = 0; c < 3; c++)
        for (int j = 0; j < 6; j++) rgb[c * 6 + j] = c == 0 ? 1.0f : c == 1 ? 0.0f : j / 5.0f;
    path = tpath("rgb.png");
    CHECK_EQ(vae_image_write_grid(path, rgb, 1, 3, 2, 3, 8, 1), 0);
    pix = read_png(path, PNG_FORMAT_RGB, &ff, &w, &h);
    CHECK(pix != NULL);
    CHECK_EQ(w, 3 + 2); /* cols is reduced to n */
    CHECK_EQ(h, 2 + 2);
    CHECK_EQ(ff, PNG_FORMAT_RGB);
    if (pix && w == 5 && h == 4) {
        const uint8_t *px = pix + (size_t)(2 * w + 3) * 3; /* image pixel (1, 2) */
        CHECK_EQ(px[0], 255);
        CHECK_EQ(px[1], 0);
        CHECK_EQ(px[2], 255);
        CHECK_EQ(pix[0], 128);
    }
    free(pix);

    /*
     * Histogram: the right size, white background, dark bars inside black
     * axes. Layout (image.c): labels "10" (the tallest bar) and "0" on the
     * left, 16 pixels; 12 below, 4 above; the last x label "9" takes 4 on the
     * right: the plot area is x 16..195, y 4..37, the axes column 15 and row
     * 38, each of the 10 bins 18 pixels with a white gap column.
     */
    float vals[100];
    for (int j = 0; j < 100; j++) vals[j] = (float)(j % 10);
    vals[7] = NAN;
    path = tpath("hist.png");
    CHECK_EQ(vae_image_write_histogram(path, vals, 100, 10, 200, 50), 0);
    pix = read_png(path, PNG_FORMAT_GRAY, &ff, &w, &h);
    CHECK(pix != NULL);
    CHECK_EQ(w, 200);
    CHECK_EQ(h, 50);
    if (pix && w == 200 && h == 50) {
        CHECK_EQ(pix[20 * w + 33], 255);  /* the first bar's gap column */
        CHECK_EQ(pix[37 * w + 16], 64);   /* bottom of the first bar */
        CHECK_EQ(pix[6 * w + 25], 64);    /* the full bars reach near the top */
        CHECK_EQ(pix[4 * w + 25], 255);   /* ... one pixel short of it */
        CHECK_EQ(pix[20 * w + 15], 0);    /* the y axis */
        CHECK_EQ(pix[38 * w + 100], 0);   /* the x axis */
        int label = 0;                    /* glyph pixels below the x axis and left of the y axis */
        for (int y = 40; y < 50; y++)
            for (int x = 0; x < 200; x++) label += pix[y * w + x] == 0;
        CHECK(label > 20);
        label = 0;
        for (int y = 0; y < 38; y++)
            for (int x = 0; x < 14; x++) label += pix[y * w + x] == 0;
        CHECK(label > 10);
        for (int y = 0; y < 50; y++)      /* no bar outside the axes */
            for (int x = 0; x < 16; x++) CHECK(pix[y * w + x] != 64);
    }
    /* Without room for axes (a small image): the bars fill it, as before. */
    CHECK_EQ(vae_image_write_histogram(path, vals, 100, 10, 40, 20), 0);
    free(pix);
    pix = read_png(path, PNG_FORMAT_GRAY, &ff, &w, &h);
    CHECK(pix != NULL && w == 40 && h == 20);
    if (pix && w == 40 && h == 20) {
        CHECK_EQ(pix[19 * w + 0], 64);    /* bottom of the first bar, at the corner */
        CHECK_EQ(pix[0 * w + 3], 255);    /* its gap column */
    }
    free(pix);

    fprintf(stderr, "(expected errors follow: bad grid arguments, unwritable folder)\n");
    float one = 0.5f;
    CHECK_NE(vae_image_write_grid(tpath("bad.png"), &one, 0, 1, 1, 1, 1, 0), 0);
    CHECK_NE(vae_image_write_grid(tpath("no/such/dir.png"), &one, 1, 1, 1, 1, 1, 0), 0);
}

/* ---------------------------------------------------------------------- */
/* Data info                                                               */
/* ---------------------------------------------------------------------- */

/* (e) */
static void test_info(void)
{
    char *text = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&text, &len);
    CHECK(mem != NULL);
    if (!mem) return;
    CHECK_EQ(vae_data_info(tpath("synth_1x12x12_a.h5"), mem), 0);
    fclose(mem);
    CHECK(text && strstr(text, "/train/images  shape [200, 1, 12, 12]  uint8"));
    CHECK(text && strstr(text, "/test/labels  shape [50]  uint8"));
    CHECK(text && strstr(text, "deflate(1)"));
    CHECK(text && strstr(text, "min 0  max 255"));
    if (text) fputs(text, stdout);
    free(text);

    /* A float dataset with a NaN and an Inf is counted. */
    const char *fpath = tpath("float.h5");
    hid_t f = H5Fcreate(fpath, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    hsize_t dims[2] = { 3, 2 };
    hid_t s = H5Screate_simple(2, dims, NULL);
    hid_t d = H5Dcreate2(f, "x", H5T_IEEE_F32LE, s, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    float v[6] = { 1.0f, -2.0f, NAN, 4.0f, INFINITY, 0.5f };
    CHECK(H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, v) >= 0);
    H5Dclose(d);
    H5Sclose(s);
    H5Fclose(f);
    mem = open_memstream(&text, &len);
    CHECK_EQ(vae_data_info(fpath, mem), 0);
    fclose(mem);
    CHECK(text && strstr(text, "/x  shape [3, 2]  float32  contiguous  filters none"));
    CHECK(text && strstr(text, "min -2  max 4  mean 0.875  non-finite 2 (NaN 1, Inf 1)"));
    if (text) fputs(text, stdout);
    free(text);

    fprintf(stderr, "(expected errors follow: missing file, not an HDF5 file)\n");
    CHECK_NE(vae_data_info(tpath("missing.h5"), stdout), 0);
    CHECK_NE(vae_data_info(tpath("grid.png"), stdout), 0);
}

/* ---------------------------------------------------------------------- */

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

int main(void)
{
    snprintf(g_dir, sizeof g_dir, "/tmp/test_importer.XXXXXX");
    if (!mkdtemp(g_dir)) {
        perror("mkdtemp");
        return 1;
    }
    test_import_fake();
    test_import_bad();
    test_synth();
    test_png();
    test_info();
    if (nftw(g_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS) != 0) {
        fprintf(stderr, "cannot remove '%s'\n", g_dir);
        g_failures++;
    }
    printf("test_importer: %d checks, %d failed\n", g_checks, g_failures);
    return g_failures ? 1 : 0;
}
