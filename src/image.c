/*
 * image.c: PNG output (image.h): grids of images and histograms.
 *
 * Both functions first build an 8-bit pixel buffer in memory and then hand it
 * to write_png(), which is the only code that talks to libpng. libpng reports
 * errors by longjmp; the error callback keeps libpng's message so that it is
 * reported once, through vae_error, naming the file. The PNG goes to
 * "<path>.tmp", which is flushed, synced, closed and renamed over path, so a
 * reader never sees a partial image.
 */
#define _POSIX_C_SOURCE 200809L

#include "mpivae/image.h"
#include "mpivae/status.h"

#include <errno.h>
#include <math.h>
#include <png.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* libpng refuses larger images by default (PNG_USER_WIDTH_MAX). */
#define MAX_SIDE 1000000L

/* Grey level between and around images in a grid. */
#define GRID_BACKGROUND 128

/* The error callback stores libpng's message here before jumping back. */
struct png_errctx {
    char msg[256];
};

static void png_error_cb(png_structp png, png_const_charp msg)
{
    struct png_errctx *ctx = png_get_error_ptr(png);
    snprintf(ctx->msg, sizeof ctx->msg, "%s", msg ? msg : "unknown libpng error");
    png_longjmp(png, 1);
}

static void png_warning_cb(png_structp png, png_const_charp msg)
{
    (void)png;
    vae_warn("libpng: %s", msg ? msg : "");
}

/*
 * Encodes the rows of a width x height 8-bit image (channels 1 = grey,
 * 3 = RGB) to the open file fp (named tmp in messages). This is the only
 * function with a setjmp, and nothing it reads after a longjmp is modified
 * after the setjmp, so no local needs to be volatile; the libpng structs are
 * destroyed on both returns.
 */
static int png_encode(FILE *fp, const char *tmp, png_bytep *rows, long width, long height,
                      int channels)
{
    struct png_errctx ctx = { "" };
    png_structp png =
        png_create_write_struct(PNG_LIBPNG_VER_STRING, &ctx, png_error_cb, png_warning_cb);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!png || !info) {
        png_destroy_write_struct(&png, &info);
        return vae_error(VAE_ENOMEM, "cannot write PNG '%s': cannot create libpng structs", tmp);
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        return vae_error(VAE_EIO, "cannot write PNG '%s': %s", tmp, ctx.msg);
    }
    png_init_io(png, fp);
    png_set_IHDR(png, info, (png_uint_32)width, (png_uint_32)height, 8,
                 channels == 3 ? PNG_COLOR_TYPE_RGB : PNG_COLOR_TYPE_GRAY, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    png_write_image(png, rows);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    return 0;
}

/*
 * Writes a width x height 8-bit image from pix (rows top to bottom, channels
 * interleaved) to "<path>.tmp", syncs and closes it and renames it to path.
 * On failure the .tmp file is removed.
 */
static int write_png(const char *path, const uint8_t *pix, long width, long height,
                     int channels)
{
    size_t len = strlen(path);
    char *tmp = malloc(len + 5);
    png_bytep *rows = malloc((size_t)height * sizeof *rows);
    FILE *fp = NULL;
    int rc = 0;

    if (!tmp || !rows) {
        rc = vae_error(VAE_ENOMEM, "cannot write '%s': out of memory", path);
        goto out;
    }
    memcpy(tmp, path, len);
    memcpy(tmp + len, ".tmp", 5);
    for (long y = 0; y < height; y++)
        rows[y] = (png_bytep)(pix + (size_t)y * (size_t)width * (size_t)channels);

    fp = fopen(tmp, "wb");
    if (!fp) {
        rc = vae_error(VAE_EIO, "cannot open '%s' for writing: %s", tmp, strerror(errno));
        goto out;
    }
    if ((rc = png_encode(fp, tmp, rows, width, height, channels)) != 0) goto out;
    if (fflush(fp) != 0 || ferror(fp) || fsync(fileno(fp)) != 0) {
        rc = vae_error(VAE_EIO, "cannot write '%s': %s", tmp, strerror(errno));
        goto out;
    }
    {
        FILE *f = fp;
        fp = NULL;
        if (fclose(f) != 0) {
            rc = vae_error(VAE_EIO, "cannot close '%s': %s", tmp, strerror(errno));
            goto out;
        }
    }
    if (rename(tmp, path) != 0) {
        rc = vae_error(VAE_EIO, "cannot rename '%s' to '%s': %s", tmp, path, strerror(errno));
        goto out;
    }

out:
    if (fp) fclose(fp);
    if (rc != 0 && tmp) remove(tmp);
    free(rows);
    free(tmp);
    return rc;
}

/* Maps [0, 1] to 0..255; clamps, and draws NaN as 0. */
static uint8_t to_u8(float v)
{
    if (!(v > 0.0f)) return 0; /* also NaN */
    if (v >= 1.0f) return 255;
    return (uint8_t)lrintf(v * 255.0f);
}

int vae_image_write_grid(const char *path, const float *imgs, int n, int C, int Hh, int W,
                         int cols, int pad)
{
    if (!path || !imgs || n < 1 || C < 1 || Hh < 1 || W < 1 || cols < 1 || pad < 0)
        return vae_error(VAE_EINVAL,
                         "cannot write image grid '%s': bad arguments (n %d, C %d, Hh %d, "
                         "W %d, cols %d, pad %d)",
                         path ? path : "(null)", n, C, Hh, W, cols, pad);
    if (cols > n) cols = n;
    long rows = (n + cols - 1) / cols;
    long width = (long)cols * W + (long)(cols + 1) * pad;
    long height = rows * Hh + (rows + 1) * (long)pad;
    if (width > MAX_SIDE || height > MAX_SIDE)
        return vae_error(VAE_EINVAL, "cannot write image grid '%s': %ld x %ld pixels is too large",
                         path, width, height);
    int ch = C == 3 ? 3 : 1;
    size_t nbytes = (size_t)width * (size_t)height * (size_t)ch;
    uint8_t *pix = malloc(nbytes); /* (height, width, ch) */
    if (!pix) return vae_error(VAE_ENOMEM, "cannot write image grid '%s': out of memory", path);
    memset(pix, GRID_BACKGROUND, nbytes);

    size_t plane = (size_t)Hh * (size_t)W;
    for (int k = 0; k < n; k++) {
        const float *img = imgs + (size_t)k * (size_t)C * plane; /* (C, Hh, W) */
        long x0 = pad + (long)(k % cols) * (W + pad);
        long y0 = pad + (long)(k / cols) * (Hh + pad);
        for (int y = 0; y < Hh; y++) {
            uint8_t *dst = pix + ((size_t)(y0 + y) * (size_t)width + (size_t)x0) * (size_t)ch;
            for (int x = 0; x < W; x++)
                for (int c = 0; c < ch; c++)
                    dst[(size_t)x * (size_t)ch + (size_t)c] =
                        to_u8(img[(size_t)c * plane + (size_t)y * (size_t)W + (size_t)x]);
        }
    }
    int rc = write_png(path, pix, width, height, ch);
    free(pix);
    return rc;
}

/* A 5x7 pixel font for the histogram's labels: digits and . - + e (a row a byte, the top bit of 5 on the left). */
static const uint8_t *glyph(char c)
{
    static const char chars[] = "0123456789.-+e";
    static const uint8_t font[][7] = {
        { 0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E }, { 0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E },
        { 0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F }, { 0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E },
        { 0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02 }, { 0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E },
        { 0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E }, { 0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08 },
        { 0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E }, { 0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C },
        { 0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x0C }, { 0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00 },
        { 0x00, 0x04, 0x04, 0x1F, 0x04, 0x04, 0x00 }, { 0x00, 0x00, 0x0E, 0x11, 0x1F, 0x10, 0x0E },
    };
    const char *p = c ? strchr(chars, c) : NULL;
    return p ? font[p - chars] : NULL;
}

#define GLYPH_W 6 /* 5 pixels and a space */
#define GLYPH_H 7

/* Draws text in black with its top left corner at (x, y), clipped to the image. */
static void draw_text(uint8_t *pix, int width, int height, int x, int y, const char *text)
{
    for (; *text; text++, x += GLYPH_W) {
        const uint8_t *g = glyph(*text);
        for (int r = 0; g && r < GLYPH_H; r++)
            for (int c = 0; c < 5; c++)
                if (g[r] >> (4 - c) & 1 && x + c >= 0 && x + c < width && y + r >= 0 && y + r < height)
                    pix[(size_t)(y + r) * (size_t)width + (size_t)(x + c)] = 0;
    }
}

int vae_image_write_histogram(const char *path, const float *values, long n, int nbins,
                              int width, int height)
{
    if (!path || (!values && n > 0) || n < 0 || nbins < 1 || width < nbins || height < 2 ||
        width > MAX_SIDE || height > MAX_SIDE)
        return vae_error(VAE_EINVAL,
                         "cannot write histogram '%s': bad arguments (n %ld, nbins %d, "
                         "%d x %d pixels; need width >= nbins and height >= 2)",
                         path ? path : "(null)", n, nbins, width, height);

    /* Range of the finite values; non-finite values are left out. */
    double lo = INFINITY, hi = -INFINITY;
    for (long i = 0; i < n; i++) {
        double v = values[i];
        if (!isfinite(v)) continue;
        if (v < lo) lo = v;
        if (v > hi) hi = v;
    }
    if (!(lo <= hi)) lo = 0.0, hi = 1.0; /* no finite values: an empty plot */
    if (hi - lo <= 0.0) lo -= 0.5, hi += 0.5;

    long *count = calloc((size_t)nbins, sizeof *count);
    uint8_t *pix = malloc((size_t)width * (size_t)height); /* (height, width) grey */
    int rc = 0;
    if (!count || !pix) {
        rc = vae_error(VAE_ENOMEM, "cannot write histogram '%s': out of memory", path);
        goto out;
    }
    long maxc = 0;
    for (long i = 0; i < n; i++) {
        double v = values[i];
        if (!isfinite(v)) continue;
        long b = (long)((v - lo) / (hi - lo) * nbins);
        if (b >= nbins) b = nbins - 1;
        if (b < 0) b = 0;
        if (++count[b] > maxc) maxc = count[b];
    }

    /*
     * Axes where there is room: the rows per bin on the left (0 and the
     * tallest bar's count), the values below (the range's ends and middle),
     * the axis lines in black; the bars fill the plot area inside them.
     */
    char ylab[32], xlab[3][32];
    snprintf(ylab, sizeof ylab, "%ld", maxc);
    for (int k = 0; k < 3; k++) snprintf(xlab[k], sizeof xlab[k], "%.4g", lo + (hi - lo) * k / 2.0);
    int L = 0, B = 0, T = 0, R = 0;
    int lw = (int)strlen(ylab) * GLYPH_W + 4;
    if (width >= nbins + lw + 40 && height >= 4 * GLYPH_H + 20) {
        L = lw;
        B = GLYPH_H + 5;
        T = GLYPH_H / 2 + 1;
        R = (int)strlen(xlab[2]) * GLYPH_W / 2 + 1;
        if (width - L - R < nbins) L = B = T = R = 0;
    }
    const int pw = width - L - R, ph = height - T - B; /* the plot area */

    /* White background; each bin a dark grey bar of columns, with a one
     * pixel white gap on the right when bars are at least 3 pixels wide. */
    memset(pix, 255, (size_t)width * (size_t)height);
    int gap = pw / nbins >= 3;
    for (int b = 0; b < nbins; b++) {
        long xa = L + (long)b * pw / nbins, xb = L + (long)(b + 1) * pw / nbins - gap;
        long bar = maxc ? (long)llround((double)count[b] / (double)maxc * (ph - 1)) : 0;
        if (count[b] > 0 && bar == 0) bar = 1; /* a non-empty bin is always visible */
        for (long y = T + ph - bar; y < T + ph; y++)
            for (long x = xa; x < xb; x++) pix[(size_t)y * (size_t)width + (size_t)x] = 64;
    }
    if (L > 0) {
        for (int y = T; y <= T + ph && y < height; y++) pix[(size_t)y * (size_t)width + (size_t)(L - 1)] = 0;
        for (int x = L - 1; x < L + pw; x++) pix[(size_t)(T + ph) * (size_t)width + (size_t)x] = 0;
        draw_text(pix, width, height, L - 3 - (int)strlen(ylab) * GLYPH_W, T - GLYPH_H / 2, ylab);
        draw_text(pix, width, height, L - 3 - GLYPH_W, T + ph - GLYPH_H / 2 - 1, "0");
        for (int k = 0; k < 3; k++) {
            int tx = L + (pw - 1) * k / 2, len = (int)strlen(xlab[k]) * GLYPH_W;
            for (int y = T + ph; y < T + ph + 3 && y < height; y++) pix[(size_t)y * (size_t)width + (size_t)tx] = 0;
            int x0 = tx - len / 2;
            if (x0 < 0) x0 = 0;
            if (x0 + len > width) x0 = width - len;
            draw_text(pix, width, height, x0, T + ph + 4, xlab[k]);
        }
    }
    rc = write_png(path, pix, width, height, 1);

out:
    free(count);
    free(pix);
    return rc;
}
