/*
 * conv.c: Conv2d and ConvTranspose2d forward/backward pairs (see conv.h),
 * lowered to cblas_sgemm through im2col / col2im. Two lowerings, chosen by
 * the channel count C of the image that im2col reads (the conv's input,
 * the transposed conv's output):
 *
 * - C < 8, channel-major, one sample at a time: col[C*k*k, grid], one row
 *   per (channel, tap), so the rows are short runs (Wout floats) gathered
 *   through the padded image's stride phases (below). With one channel the
 *   rows are few and the other lowering's runs would be single floats.
 * - C >= 8, patch-major, chunks of samples with the channels last:
 *   col[pixel, (tap, channel)], one row per pixel of the grid, so im2col
 *   and col2im move runs of C contiguous floats, and a few sgemms of about
 *   588 rows in all cover the chunk: one per band of grid rows, each
 *   leaving out the kernel rows that lie in the padding (below). NCHW
 *   tensors are transposed on the way in and back on the way out (one pass
 *   each); an image-side tensor that the caller keeps channels last (the
 *   layout flags) is used in place, a grid-side one copied row block by
 *   row block. The weights are permuted to (tap, channel) order once per
 *   call (and their gradient back).
 *
 * Why two: with many channels the channel-major rows are short runs, slow
 * to gather between the products, and the patch-major lowering (with its
 * chunk size, the bands, channels-last activations and the ReLU applied as
 * chunks are written) made the default conv model faster; with one channel
 * it was slower. The measurements, and the variants tried, are in
 * docs/performance-notes.md.
 *
 * Scratch: the column matrix of one sample (channel-major) or one chunk
 * (patch-major), plus the phase planes and one sample's NCHW copies, or
 * the chunk's NHWC copies and the permuted weights. Backward redoes im2col rather than keeping forward's,
 * so one scratch serves every layer.
 */
#include "mpivae/conv.h"

#include "mpivae/ops.h"

#include <cblas.h>
#include <string.h>

/* Lanes of the channel sums: a fixed order, so results are reproducible. */
#define LANES 16

static float sum_floats(const float *p, size_t n)
{
    float acc[LANES] = { 0 };
    size_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int l = 0; l < LANES; l++) acc[l] += p[i + l];
    for (; i < n; i++) acc[0] += p[i];
    float t = 0.0f;
    for (int l = 0; l < LANES; l++) t += acc[l];
    return t;
}

/*
 * The padded image, split into its s x s stride phases. A conv with stride
 * s reads, for kernel tap (u, v), the padded pixels (i*s + u, j*s + v) over
 * its output grid (i, j); those all lie in phase (u % s, v % s) of the
 * padded image, as the window starting at (u / s, v / s) of that phase's
 * plane. So once the image is split (one pass over it), every row of the
 * column matrix is Ho contiguous runs of Wo floats, and col2im the same
 * runs added back: no per-pixel index arithmetic, no padding tests.
 *
 * Phase (a, b) of channel c's padded image is a plane of Hq x Wq floats,
 * Hq = ceil((H + 2p) / s), Wq = ceil((W + 2p) / s):
 *   plane[a*s + b][r][t] = x[c, r*s + a - p, t*s + b - p] (0 outside x).
 * The planes of one channel take s*s*Hq*Wq floats of scratch.
 */
static size_t phase_floats(int H, int W, int s, int p)
{
    size_t hq = (size_t)(H + 2 * p + s - 1) / s, wq = (size_t)(W + 2 * p + s - 1) / s;
    return (size_t)s * s * hq * wq;
}

typedef struct {
    int H, W, k, s, p, Ho, Wo; /* the conv's image, kernel and output grid */
    int Hq, Wq;                /* one phase plane */
    size_t plane;              /* Hq * Wq */
} lowering;

static lowering lowering_of(int H, int W, int k, int s, int p, int Ho, int Wo)
{
    lowering g = { H, W, k, s, p, Ho, Wo, (H + 2 * p + s - 1) / s, (W + 2 * p + s - 1) / s, 0 };
    g.plane = (size_t)g.Hq * g.Wq;
    return g;
}

/*
 * Column phase b of a padded row: the first image column w0 >= 0 with
 * (w0 + p) % s == b, and its index t0 in the phase's row. Lets the
 * per-pixel loops step by s without a division.
 */
static void phase_start(int s, int p, int b, int *w0, int *t0)
{
    int w = b - p;
    if (w < 0) w += (-w + s - 1) / s * s;
    *w0 = w;
    *t0 = (w + p) / s;
}

/* Splits one channel xc[H,W] into its phase planes ph (padding cleared). */
static void split_phases(const lowering *g, const float *xc, float *ph)
{
    int s = g->s;
    memset(ph, 0, sizeof(float) * g->plane * s * s);
    for (int h = 0; h < g->H; h++) {
        int hp = h + g->p;
        float *dst = ph + (size_t)(hp % s) * s * g->plane + (size_t)(hp / s) * g->Wq;
        const float *xr = xc + (size_t)h * g->W;
        for (int b = 0; b < s; b++) {
            int w0, t0;
            phase_start(s, g->p, b, &w0, &t0);
            float *d = dst + (size_t)b * g->plane + t0;
            for (int w = w0, t = 0; w < g->W; w += s, t++) d[t] = xr[w];
        }
    }
}

/*
 * col[(c*k + u)*k + v][i*Wo + j] = x[c, i*s - p + u, j*s - p + v] (0 in the
 * padding), for x[C,H,W]; col's rows are ldc floats apart. ph: one
 * channel's phase planes of scratch.
 */
static void im2col(const lowering *g, const float *x, int C, float *col, size_t ldc, float *ph)
{
    int k = g->k, s = g->s, Ho = g->Ho, Wo = g->Wo;
    for (int c = 0; c < C; c++) {
        split_phases(g, x + (size_t)c * g->H * g->W, ph);
        for (int u = 0; u < k; u++)
            for (int v = 0; v < k; v++) {
                float *row = col + ((size_t)(c * k + u) * k + v) * ldc;
                const float *src = ph + (size_t)((u % s) * s + v % s) * g->plane +
                                   (size_t)(u / s) * g->Wq + v / s;
                for (int i = 0; i < Ho; i++) {
                    const float *a = src + (size_t)i * g->Wq;
                    float *r = row + (size_t)i * Wo;
                    for (int j = 0; j < Wo; j++) r[j] = a[j];
                }
            }
    }
}

/*
 * The adjoint of im2col, plus a bias: x[c] = bias[c] (0 when bias is NULL)
 * + the sum of the col entries that im2col reads from each pixel
 * (overwritten). ph: one channel's phase planes of scratch.
 */
static void col2im(const lowering *g, const float *col, size_t ldc, int C, const float *bias,
                   float *x, float *ph)
{
    int k = g->k, s = g->s, Ho = g->Ho, Wo = g->Wo;
    for (int c = 0; c < C; c++) {
        memset(ph, 0, sizeof(float) * g->plane * s * s);
        for (int u = 0; u < k; u++)
            for (int v = 0; v < k; v++) {
                const float *row = col + ((size_t)(c * k + u) * k + v) * ldc;
                float *dst = ph + (size_t)((u % s) * s + v % s) * g->plane +
                             (size_t)(u / s) * g->Wq + v / s;
                for (int i = 0; i < Ho; i++) {
                    float *a = dst + (size_t)i * g->Wq;
                    const float *r = row + (size_t)i * Wo;
                    for (int j = 0; j < Wo; j++) a[j] += r[j];
                }
            }
        float b0 = bias ? bias[c] : 0.0f;
        float *xc = x + (size_t)c * g->H * g->W;
        for (int h = 0; h < g->H; h++) {
            int hp = h + g->p;
            const float *src = ph + (size_t)(hp % s) * s * g->plane + (size_t)(hp / s) * g->Wq;
            float *xr = xc + (size_t)h * g->W;
            for (int b = 0; b < s; b++) {
                int w0, t0;
                phase_start(s, g->p, b, &w0, &t0);
                const float *a = src + (size_t)b * g->plane + t0;
                for (int w = w0, t = 0; w < g->W; w += s, t++) xr[w] = b0 + a[t];
            }
        }
    }
}

/* ---------------------------------------------------------------------- patch-major lowering */

/*
 * With many channels, the lowering works on chunks of m samples with the
 * channels last (NHWC): the column matrix has one row per pixel of the
 * grid, col[(i*m + n)*Wo + j][(u*k + v)*C + c], so im2col and col2im move
 * runs of C contiguous floats, one per kernel tap. The weights are permuted
 * to the same (u, v, c) order.
 *
 * The rows are ordered grid row first, then sample (i, n, j), so that the
 * rows of a band of grid rows are contiguous for the whole chunk. A grid
 * row near the top or bottom edge has whole kernel rows u in the padding;
 * for the rows of one band those are the same taps, a contiguous range of
 * the column matrix's K, and the products leave them out: a few sgemms per
 * chunk (one per band) instead of one, and no multiplications by padding.
 * For the default 4x4, stride 2, padding 1 layers that is 2 of 28 kernel
 * rows, 7% of their work. Grid-side tensors (the conv's output, the
 * transposed conv's input) are copied to and from this row order.
 */

/*
 * Rows of the column matrix per chunk: the chunk is ceil(PM_ROWS / grid)
 * samples. 588 (12 samples of a 7x7 grid) was the fastest size tried in
 * training runs (docs/performance-notes.md).
 */
#define PM_ROWS 588

static int pm_chunk(int B, int grid)
{
    int nb = (PM_ROWS + grid - 1) / grid;
    return nb < B ? nb : (B > 0 ? B : 1);
}

/* t[n][i][c] = x[n][c][i]: m samples, x[m][C][HW] to t[m][HW][C]. */
static void to_nhwc(const float *x, int m, int C, int HW, float *t)
{
    for (int n = 0; n < m; n++, x += (size_t)C * HW, t += (size_t)C * HW)
        for (int c = 0; c < C; c++) {
            const float *xc = x + (size_t)c * HW;
            for (int i = 0; i < HW; i++) t[(size_t)i * C + c] = xc[i];
        }
}

/* y[n][c][i] = b[c] (0 when b is NULL) + t[n][i][c]: m samples back to NCHW. */
static void to_nchw(const float *t, int m, int C, int HW, const float *b, float *y)
{
    for (int n = 0; n < m; n++, t += (size_t)C * HW, y += (size_t)C * HW)
        for (int c = 0; c < C; c++) {
            float *yc = y + (size_t)c * HW, b0 = b ? b[c] : 0.0f;
            for (int i = 0; i < HW; i++) yc[i] = b0 + t[(size_t)i * C + c];
        }
}

/*
 * m samples of a[m][C][HW] channels last: a itself when the caller keeps
 * them so (last), else their copy in buf.
 */
static const float *nhwc_of(const float *a, int last, int m, int C, int HW, float *buf)
{
    if (last) return a;
    to_nhwc(a, m, C, HW, buf);
    return buf;
}

/*
 * t[(i*m + n)*Wo + j][c] = a[n] at (c, i, j): m samples of a grid-side
 * tensor, NCHW or channels last (last), in the chunk's row order.
 */
static void grid_in(const float *a, int last, int m, int C, int Ho, int Wo, float *t)
{
    size_t run = (size_t)Wo * C, img = (size_t)Ho * Wo * C;
    for (int n = 0; n < m; n++, a += img) {
        if (last) {
            for (int i = 0; i < Ho; i++)
                memcpy(t + ((size_t)i * m + n) * run, a + (size_t)i * run, run * sizeof(float));
            continue;
        }
        for (int c = 0; c < C; c++)
            for (int i = 0; i < Ho; i++) {
                const float *src = a + ((size_t)c * Ho + i) * Wo;
                float *dst = t + ((size_t)i * m + n) * run + c;
                for (int j = 0; j < Wo; j++) dst[(size_t)j * C] = src[j];
            }
    }
}

/* The inverse of grid_in, plus b[c] (none when b is NULL). */
static void grid_out(const float *t, int last, int m, int C, int Ho, int Wo, const float *b, float *a)
{
    size_t run = (size_t)Wo * C, img = (size_t)Ho * Wo * C;
    for (int n = 0; n < m; n++, a += img) {
        if (last) {
            for (int i = 0; i < Ho; i++) {
                const float *src = t + ((size_t)i * m + n) * run;
                float *dst = a + (size_t)i * run;
                if (!b) {
                    memcpy(dst, src, run * sizeof(float));
                    continue;
                }
                for (int j = 0; j < Wo; j++)
                    for (int c = 0; c < C; c++) dst[(size_t)j * C + c] = b[c] + src[(size_t)j * C + c];
            }
            continue;
        }
        for (int c = 0; c < C; c++) {
            float b0 = b ? b[c] : 0.0f;
            for (int i = 0; i < Ho; i++) {
                const float *src = t + ((size_t)i * m + n) * run + c;
                float *dst = a + ((size_t)c * Ho + i) * Wo;
                for (int j = 0; j < Wo; j++) dst[j] = b0 + src[(size_t)j * C];
            }
        }
    }
}

/*
 * Grid rows [i0, i1) whose kernel windows are inside the image for kernel
 * rows u in [u0, u1) only (the rest is padding).
 */
typedef struct {
    int i0, i1, u0, u1;
} band;

#define MAX_BANDS 8

/*
 * The bands of the grid: consecutive rows with the same range merged. A
 * wider range than needed is still right (the column matrix holds zeros for
 * the padding, and col2im skips it), so a window wholly in the padding, or
 * any row past MAX_BANDS bands, takes the full kernel.
 */
static int bands_of(const lowering *g, band *b)
{
    int nb = 0;
    for (int i = 0; i < g->Ho; i++) {
        int u0 = g->p - i * g->s, u1 = g->H + g->p - i * g->s;
        if (u0 < 0) u0 = 0;
        if (u1 > g->k) u1 = g->k;
        if (u1 <= u0) u0 = 0, u1 = g->k;
        if (nb > 0 && b[nb - 1].u0 == u0 && b[nb - 1].u1 == u1) {
            b[nb - 1].i1 = i + 1;
        } else if (nb == MAX_BANDS) {
            b[nb - 1].i1 = i + 1;
            b[nb - 1].u0 = 0;
            b[nb - 1].u1 = g->k;
        } else {
            b[nb++] = (band){ i, i + 1, u0, u1 };
        }
    }
    return nb;
}

/* One band's part of a chunk of m samples: first row, rows, first K column, K columns (kc per kernel row). */
typedef struct {
    size_t r0, k0;
    int rows, kb;
} span;

static span span_of(const band *b, int m, int Wo, size_t kc)
{
    span sp = { (size_t)b->i0 * m * Wo, (size_t)b->u0 * kc, (b->i1 - b->i0) * m * Wo,
                (int)((size_t)(b->u1 - b->u0) * kc) };
    return sp;
}

/* wp[r][(u*k + v)*C + c] = w[r][(c*k + u)*k + v] for rows r < R: the weights in tap-major order. */
static void permute_taps(const float *w, int R, int C, int kk, float *wp)
{
    size_t K = (size_t)C * kk;
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++)
            for (int t = 0; t < kk; t++)
                wp[r * K + (size_t)t * C + c] = w[r * K + (size_t)c * kk + t];
}

/* The inverse of permute_taps, added: w[r][(c*k + u)*k + v] += wp[r][(u*k + v)*C + c]. */
static void unpermute_taps_add(const float *wp, int R, int C, int kk, float *w)
{
    size_t K = (size_t)C * kk;
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++)
            for (int t = 0; t < kk; t++)
                w[r * K + (size_t)c * kk + t] += wp[r * K + (size_t)t * C + c];
}

/*
 * col[(i*m + n)*Wo + j][(u*k + v)*C + c] = xt[n][i*s - p + u][j*s - p + v][c]
 * (0 in the padding), for m samples xt[m][H][W][C].
 */
static void im2col_pm(const lowering *g, const float *xt, int m, int C, float *col)
{
    int k = g->k, s = g->s, p = g->p, H = g->H, W = g->W;
    size_t K = (size_t)k * k * C, run = sizeof(float) * (size_t)C;
    for (int i = 0; i < g->Ho; i++)
        for (int n = 0; n < m; n++)
            for (int j = 0; j < g->Wo; j++) {
                float *r = col + (((size_t)i * m + n) * g->Wo + j) * K;
                for (int u = 0; u < k; u++) {
                    int ih = i * s - p + u;
                    float *ru = r + (size_t)u * k * C;
                    if (ih < 0 || ih >= H) {
                        memset(ru, 0, run * k);
                        continue;
                    }
                    const float *xr = xt + ((size_t)n * H + ih) * W * C;
                    for (int v = 0; v < k; v++) {
                        int iw = j * s - p + v;
                        if (iw < 0 || iw >= W) memset(ru + (size_t)v * C, 0, run);
                        else memcpy(ru + (size_t)v * C, xr + (size_t)iw * C, run);
                    }
                }
            }
}

/* The adjoint of im2col_pm: xt[m][H][W][C] = the sum of the col entries read from each pixel. */
static void col2im_pm(const lowering *g, const float *col, int m, int C, float *xt)
{
    int k = g->k, s = g->s, p = g->p, H = g->H, W = g->W;
    size_t K = (size_t)k * k * C;
    memset(xt, 0, sizeof(float) * (size_t)m * H * W * C);
    for (int n = 0; n < m; n++)
        for (int i = 0; i < g->Ho; i++)
            for (int j = 0; j < g->Wo; j++) {
                const float *r = col + (((size_t)i * m + n) * g->Wo + j) * K;
                for (int u = 0; u < k; u++) {
                    int ih = i * s - p + u;
                    if (ih < 0 || ih >= H) continue;
                    float *xr = xt + ((size_t)n * H + ih) * W * C;
                    for (int v = 0; v < k; v++) {
                        int iw = j * s - p + v;
                        if (iw < 0 || iw >= W) continue;
                        const float *src = r + ((size_t)u * k + v) * C;
                        float *d = xr + (size_t)iw * C;
                        for (int c = 0; c < C; c++) d[c] += src[c];
                    }
                }
            }
}

/*
 * Scratch of the patch-major lowering for a chunk of nb samples: the column
 * matrix [nb*grid, kk*Ck], the image side in NHWC [nb*img*Ck], the grid
 * side in NHWC [nb*grid*Cg], and the permuted weights and their gradient,
 * 2 * [Cg, kk*Ck]. Ck is the channel count of the image that im2col reads
 * (the conv's input, the transposed conv's output), Cg the other one.
 */
static size_t pm_scratch(int nb, int grid, int img, int Ck, int Cg, int kk)
{
    size_t K = (size_t)kk * Ck;
    return (size_t)nb * grid * K + (size_t)nb * img * Ck + (size_t)nb * grid * Cg + 2 * K * Cg;
}

/* The patch-major path is taken when the image that im2col reads has this many channels or more. */
#define PM_MIN_CHANNELS 8

/* t[i][c] += b[c] over rows i < rows: the bias of a channels-last tensor. */
static void add_bias_rows(float *t, size_t rows, int C, const float *b)
{
    for (size_t i = 0; i < rows; i++)
        for (int c = 0; c < C; c++) t[i * C + c] += b[c];
}

/* y = max(y, 0) over n floats: VAE_CONV_RELU, on a sample or chunk just written (still in cache). */
static void relu_inplace(float *y, size_t n)
{
    for (size_t i = 0; i < n; i++) y[i] = y[i] > 0.0f ? y[i] : 0.0f;
}

/* VAE_CONV_DX_RELU: dx = 0 where x <= 0 (x the ReLU output the op read), on a sample or chunk just written. */
static void gate_dx(const float *x, float *dx, size_t n, int flags)
{
    if (flags & VAE_CONV_DX_RELU) vae_relu_backward(x, dx, n);
}

/*
 * db[c] += sum over rows i < rows of t[i][c]: the bias gradient of a
 * channels-last tensor, added block by block of LANES rows (a fixed order).
 */
static void sum_rows(const float *t, size_t rows, int C, float *db)
{
    for (size_t i = 0; i < rows; i += LANES) {
        size_t end = i + LANES < rows ? i + LANES : rows;
        for (int c = 0; c < C; c++) {
            float part = 0.0f;
            for (size_t r = i; r < end; r++) part += t[r * C + c];
            db[c] += part;
        }
    }
}

/* ---------------------------------------------------------------------- Conv2d */

int vae_conv_channels_last(int C)
{
    return C >= PM_MIN_CHANNELS;
}

/*
 * Channel-major scratch: one sample's column matrix, the phase planes, and
 * one sample of the im2col side in NCHW (for a channels-last input).
 */
static size_t cm_scratch(size_t K, size_t grid, int Hi, int Wi, int Ck, int s, int p)
{
    return K * grid + phase_floats(Hi, Wi, s, p) + (size_t)Ck * Hi * Wi;
}

size_t vae_conv2d_scratch(int B, int Cin, int H, int W, int Cout, int k, int s, int p)
{
    if (B < 0 || Cin < 1 || H < 1 || W < 1 || Cout < 1 || k < 1 || s < 1 || p < 0) return 0;
    if (H + 2 * p < k || W + 2 * p < k) return 0;
    int Ho = (H + 2 * p - k) / s + 1, Wo = (W + 2 * p - k) / s + 1;
    if (Cin >= PM_MIN_CHANNELS)
        return pm_scratch(pm_chunk(B, Ho * Wo), Ho * Wo, H * W, Cin, Cout, k * k);
    return cm_scratch((size_t)Cin * k * k, (size_t)Ho * Wo, H, W, Cin, s, p);
}

/*
 * Channel-major, one sample at a time: col[K, HWo] = im2col(x_n), then
 * y_n[Cout, HWo] = w col, or, channels last, y_n[HWo, Cout] = col^T w^T.
 */
static void conv2d_forward_cm(const float *x, const float *w, const float *b, float *y, int B,
                              int Cin, int Cout, const lowering *g, int layout, float *scratch)
{
    int HW = g->H * g->W, HWo = g->Ho * g->Wo, K = Cin * g->k * g->k;
    size_t nx = (size_t)Cin * HW, ny = (size_t)Cout * HWo;
    float *col = scratch;                         /* [K, HWo] */
    float *ph = col + (size_t)K * HWo;            /* phase planes */
    float *xc = ph + phase_floats(g->H, g->W, g->s, g->p); /* x_n in NCHW */
    for (int n = 0; n < B; n++) {
        const float *xn = x + n * nx;
        if (layout & VAE_CONV_X_NHWC) {
            to_nchw(xn, 1, Cin, HW, NULL, xc);
            xn = xc;
        }
        im2col(g, xn, Cin, col, (size_t)HWo, ph);
        float *yn = y + n * ny;
        if (layout & VAE_CONV_Y_NHWC) {
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasTrans, HWo, Cout, K, 1.0f, col, HWo, w, K,
                        0.0f, yn, Cout);
            add_bias_rows(yn, (size_t)HWo, Cout, b);
        } else {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Cout, HWo, K, 1.0f, w, K, col,
                        HWo, 0.0f, yn, HWo);
            for (int o = 0; o < Cout; o++) {
                float *r = yn + (size_t)o * HWo;
                for (int i = 0; i < HWo; i++) r[i] += b[o];
            }
        }
        if (layout & VAE_CONV_RELU) relu_inplace(yn, ny);
    }
}

/*
 * dw[Cout,K] += dy_n col^T, dcol[K,HWo] = w^T dy_n folded back by col2im
 * (dy_n read as [HWo, Cout] through the product's transpose flags when
 * channels last).
 */
static void conv2d_backward_cm(const float *x, const float *w, const float *dy, float *dx,
                               float *dw, float *db, int B, int Cin, int Cout, const lowering *g,
                               int layout, float *scratch)
{
    int HW = g->H * g->W, HWo = g->Ho * g->Wo, K = Cin * g->k * g->k;
    size_t nx = (size_t)Cin * HW, ny = (size_t)Cout * HWo;
    int ylast = (layout & VAE_CONV_Y_NHWC) != 0, xlast = (layout & VAE_CONV_X_NHWC) != 0;
    float *col = scratch;                         /* [K, HWo]: im2col(x_n), then dcol */
    float *ph = col + (size_t)K * HWo;            /* phase planes */
    float *xc = ph + phase_floats(g->H, g->W, g->s, g->p); /* x_n or dx_n in NCHW */
    for (int n = 0; n < B; n++) {
        const float *dyn = dy + n * ny; /* [Cout, HWo], or [HWo, Cout] channels last */
        if (dw) {
            if (ylast) sum_rows(dyn, (size_t)HWo, Cout, db);
            else
                for (int o = 0; o < Cout; o++) db[o] += sum_floats(dyn + (size_t)o * HWo, (size_t)HWo);
            const float *xn = x + n * nx;
            if (xlast) {
                to_nchw(xn, 1, Cin, HW, NULL, xc);
                xn = xc;
            }
            im2col(g, xn, Cin, col, (size_t)HWo, ph);
            cblas_sgemm(CblasRowMajor, ylast ? CblasTrans : CblasNoTrans, CblasTrans, Cout, K, HWo,
                        1.0f, dyn, ylast ? Cout : HWo, col, HWo, 1.0f, dw, K);
        }
        if (!dx) continue;
        cblas_sgemm(CblasRowMajor, CblasTrans, ylast ? CblasTrans : CblasNoTrans, K, HWo, Cout,
                    1.0f, w, K, dyn, ylast ? Cout : HWo, 0.0f, col, HWo);
        if (xlast) {
            col2im(g, col, (size_t)HWo, Cin, NULL, xc, ph);
            to_nhwc(xc, 1, Cin, HW, dx + n * nx);
        } else {
            col2im(g, col, (size_t)HWo, Cin, NULL, dx + n * nx, ph); /* dx_n[Cin, H, W] */
        }
        gate_dx(x + n * nx, dx + n * nx, nx, layout);
    }
}

/*
 * Patch-major, chunks of nb samples, band by band: yt[rows, Cout] =
 * im2col_pm(xt)[rows, K range] wp[:, K range]^T. A channels-last x is read
 * in place.
 */
static void conv2d_forward_pm(const float *x, const float *w, const float *b, float *y, int B,
                              int Cin, int Cout, const lowering *g, int layout, float *scratch)
{
    int kk = g->k * g->k, HW = g->H * g->W, grid = g->Ho * g->Wo, nb = pm_chunk(B, grid);
    size_t K = (size_t)kk * Cin;
    float *col = scratch;                      /* [nb*grid, K] */
    float *xs = col + (size_t)nb * grid * K;   /* [nb, H, W, Cin] */
    float *ys = xs + (size_t)nb * HW * Cin;    /* [nb*grid, Cout], rows (i, n, j) */
    float *wp = ys + (size_t)nb * grid * Cout; /* [Cout, K], taps major */
    band bd[MAX_BANDS];
    int nbd = bands_of(g, bd);
    permute_taps(w, Cout, Cin, kk, wp);
    for (int n0 = 0; n0 < B; n0 += nb) {
        int m = B - n0 < nb ? B - n0 : nb;
        const float *xt =
            nhwc_of(x + (size_t)n0 * Cin * HW, layout & VAE_CONV_X_NHWC, m, Cin, HW, xs);
        im2col_pm(g, xt, m, Cin, col);
        for (int q = 0; q < nbd; q++) {
            span sp = span_of(&bd[q], m, g->Wo, (size_t)g->k * Cin);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, sp.rows, Cout, sp.kb, 1.0f,
                        col + sp.r0 * K + sp.k0, (int)K, wp + sp.k0, (int)K, 0.0f,
                        ys + sp.r0 * Cout, Cout);
        }
        float *yc = y + (size_t)n0 * Cout * grid;
        grid_out(ys, layout & VAE_CONV_Y_NHWC, m, Cout, g->Ho, g->Wo, b, yc);
        if (layout & VAE_CONV_RELU) relu_inplace(yc, (size_t)m * Cout * grid);
    }
}

/*
 * Band by band: dwp[Cout, K range] += dyt^T col, dcol = dyt wp folded back
 * by col2im_pm; the permuted gradient is added into dw once, after the
 * last chunk.
 */
static void conv2d_backward_pm(const float *x, const float *w, const float *dy, float *dx,
                               float *dw, float *db, int B, int Cin, int Cout, const lowering *g,
                               int layout, float *scratch)
{
    int kk = g->k * g->k, HW = g->H * g->W, grid = g->Ho * g->Wo, nb = pm_chunk(B, grid);
    int xlast = (layout & VAE_CONV_X_NHWC) != 0, ylast = (layout & VAE_CONV_Y_NHWC) != 0;
    size_t K = (size_t)kk * Cin, kc = (size_t)g->k * Cin;
    float *col = scratch;                       /* [nb*grid, K]: im2col_pm(xt), then dcol */
    float *xs = col + (size_t)nb * grid * K;    /* [nb, H, W, Cin]: x, then dx */
    float *dys = xs + (size_t)nb * HW * Cin;    /* [nb*grid, Cout], rows (i, n, j) */
    float *wp = dys + (size_t)nb * grid * Cout; /* [Cout, K], taps major */
    float *dwp = wp + K * Cout;                 /* [Cout, K], taps major */
    band bd[MAX_BANDS];
    int nbd = bands_of(g, bd);
    permute_taps(w, Cout, Cin, kk, wp);
    if (dw) memset(dwp, 0, sizeof(float) * K * Cout);
    for (int n0 = 0; n0 < B; n0 += nb) {
        int m = B - n0 < nb ? B - n0 : nb;
        grid_in(dy + (size_t)n0 * Cout * grid, ylast, m, Cout, g->Ho, g->Wo, dys);
        if (dw) {
            const float *xt = nhwc_of(x + (size_t)n0 * Cin * HW, xlast, m, Cin, HW, xs);
            sum_rows(dys, (size_t)m * grid, Cout, db);
            im2col_pm(g, xt, m, Cin, col);
            for (int q = 0; q < nbd; q++) {
                span sp = span_of(&bd[q], m, g->Wo, kc);
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Cout, sp.kb, sp.rows, 1.0f,
                            dys + sp.r0 * Cout, Cout, col + sp.r0 * K + sp.k0, (int)K, 1.0f,
                            dwp + sp.k0, (int)K);
            }
        }
        if (!dx) continue;
        for (int q = 0; q < nbd; q++) {
            span sp = span_of(&bd[q], m, g->Wo, kc);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, sp.rows, sp.kb, Cout, 1.0f,
                        dys + sp.r0 * Cout, Cout, wp + sp.k0, (int)K, 0.0f, col + sp.r0 * K + sp.k0,
                        (int)K);
        }
        float *dxc = dx + (size_t)n0 * Cin * HW;
        if (xlast) {
            col2im_pm(g, col, m, Cin, dxc);
        } else {
            col2im_pm(g, col, m, Cin, xs);
            to_nchw(xs, m, Cin, HW, NULL, dxc);
        }
        gate_dx(x + (size_t)n0 * Cin * HW, dxc, (size_t)m * Cin * HW, layout);
    }
    if (dw) unpermute_taps_add(dwp, Cout, Cin, kk, dw);
}

void vae_conv2d_forward(const float *x, const float *w, const float *b, float *y, int B, int Cin,
                        int H, int W, int Cout, int k, int s, int p, int layout, float *scratch)
{
    int Ho = (H + 2 * p - k) / s + 1, Wo = (W + 2 * p - k) / s + 1;
    lowering g = lowering_of(H, W, k, s, p, Ho, Wo);
    if (Cin < PM_MIN_CHANNELS) conv2d_forward_cm(x, w, b, y, B, Cin, Cout, &g, layout, scratch);
    else conv2d_forward_pm(x, w, b, y, B, Cin, Cout, &g, layout, scratch);
}

void vae_conv2d_backward(const float *x, const float *w, const float *dy, float *dx, float *dw,
                         float *db, int B, int Cin, int H, int W, int Cout, int k, int s, int p,
                         int layout, float *scratch)
{
    int Ho = (H + 2 * p - k) / s + 1, Wo = (W + 2 * p - k) / s + 1;
    lowering g = lowering_of(H, W, k, s, p, Ho, Wo);
    if (Cin < PM_MIN_CHANNELS)
        conv2d_backward_cm(x, w, dy, dx, dw, db, B, Cin, Cout, &g, layout, scratch);
    else
        conv2d_backward_pm(x, w, dy, dx, dw, db, B, Cin, Cout, &g, layout, scratch);
}

/* ---------------------------------------------------------------------- ConvTranspose2d */

/*
 * In the transposed conv, the lowering's geometry is that of the
 * Conv2d(Cout -> Cin) it transposes: image Hout x Wout (im2col's side, the
 * output y), grid H x W (x). With op < s, (Hout + 2p - k) / s + 1 == H, so
 * the grid matches x exactly.
 */
size_t vae_convt2d_scratch(int B, int Cin, int H, int W, int Cout, int k, int s, int p, int op)
{
    if (B < 0 || Cin < 1 || H < 1 || W < 1 || Cout < 1 || k < 1 || s < 1 || p < 0) return 0;
    if (op < 0 || op >= s) return 0;
    long Ho = (long)(H - 1) * s - 2L * p + k + op, Wo = (long)(W - 1) * s - 2L * p + k + op;
    if (Ho < 1 || Wo < 1) return 0;
    if (Cout >= PM_MIN_CHANNELS)
        return pm_scratch(pm_chunk(B, H * W), H * W, (int)(Ho * Wo), Cout, Cin, k * k);
    return cm_scratch((size_t)Cout * k * k, (size_t)H * W, (int)Ho, (int)Wo, Cout, s, p);
}

/*
 * Channel-major, one sample at a time: col[K, HW] = w^T x_n (x_n read as
 * [HW, Cin] through the transpose flag when channels last), then
 * y_n = b + col2im(col).
 */
static void convt2d_forward_cm(const float *x, const float *w, const float *b, float *y, int B,
                               int Cin, int Cout, const lowering *g, int layout, float *scratch)
{
    int HW = g->Ho * g->Wo, img = g->H * g->W, K = Cout * g->k * g->k;
    int xlast = (layout & VAE_CONV_X_NHWC) != 0;
    size_t nx = (size_t)Cin * HW, ny = (size_t)Cout * img;
    float *col = scratch;                         /* [K, HW] */
    float *ph = col + (size_t)K * HW;             /* phase planes */
    float *yc = ph + phase_floats(g->H, g->W, g->s, g->p); /* y_n in NCHW */
    for (int n = 0; n < B; n++) {
        cblas_sgemm(CblasRowMajor, CblasTrans, xlast ? CblasTrans : CblasNoTrans, K, HW, Cin,
                    1.0f, w, K, x + n * nx, xlast ? Cin : HW, 0.0f, col, HW);
        if (layout & VAE_CONV_Y_NHWC) {
            col2im(g, col, (size_t)HW, Cout, b, yc, ph);
            to_nhwc(yc, 1, Cout, img, y + n * ny);
        } else {
            col2im(g, col, (size_t)HW, Cout, b, y + n * ny, ph); /* y_n[Cout, Hout, Wout] */
        }
        if (layout & VAE_CONV_RELU) relu_inplace(y + n * ny, ny);
    }
}

/* col = im2col(dy_n) [K, HW]: dw[Cin, K] += x_n col^T, dx_n = w col. */
static void convt2d_backward_cm(const float *x, const float *w, const float *dy, float *dx,
                                float *dw, float *db, int B, int Cin, int Cout, const lowering *g,
                                int layout, float *scratch)
{
    int HW = g->Ho * g->Wo, img = g->H * g->W, K = Cout * g->k * g->k;
    int xlast = (layout & VAE_CONV_X_NHWC) != 0;
    size_t nx = (size_t)Cin * HW, ny = (size_t)Cout * img;
    float *col = scratch;                         /* [K, HW] = im2col(dy_n) */
    float *ph = col + (size_t)K * HW;             /* phase planes */
    float *dyc = ph + phase_floats(g->H, g->W, g->s, g->p); /* dy_n in NCHW */
    for (int n = 0; n < B; n++) {
        const float *dyn = dy + n * ny; /* [Cout, Hout, Wout] */
        if (layout & VAE_CONV_Y_NHWC) {
            to_nchw(dyn, 1, Cout, img, NULL, dyc);
            dyn = dyc;
        }
        for (int o = 0; o < Cout; o++) db[o] += sum_floats(dyn + (size_t)o * img, (size_t)img);
        im2col(g, dyn, Cout, col, (size_t)HW, ph);
        const float *xn = x + n * nx; /* [Cin, HW], or [HW, Cin] channels last */
        cblas_sgemm(CblasRowMajor, xlast ? CblasTrans : CblasNoTrans, CblasTrans, Cin, K, HW, 1.0f,
                    xn, xlast ? Cin : HW, col, HW, 1.0f, dw, K);
        if (!dx) continue;
        if (xlast)
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasTrans, HW, Cin, K, 1.0f, col, HW, w, K,
                        0.0f, dx + n * nx, Cin);
        else
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Cin, HW, K, 1.0f, w, K, col,
                        HW, 0.0f, dx + n * nx, HW);
        gate_dx(x + n * nx, dx + n * nx, nx, layout);
    }
}

/*
 * Patch-major, chunks of nb samples, band by band: col[rows, K range] =
 * xt[rows, Cin] wp[Cin, K range], then y = col2im_pm(col) + b. A
 * channels-last y is written in place.
 */
static void convt2d_forward_pm(const float *x, const float *w, const float *b, float *y, int B,
                               int Cin, int Cout, const lowering *g, int layout, float *scratch)
{
    int kk = g->k * g->k, img = g->H * g->W, grid = g->Ho * g->Wo, nb = pm_chunk(B, grid);
    size_t K = (size_t)kk * Cout;
    float *col = scratch;                     /* [nb*grid, K] */
    float *ys = col + (size_t)nb * grid * K;  /* [nb, Hout, Wout, Cout] */
    float *xs = ys + (size_t)nb * img * Cout; /* [nb*grid, Cin], rows (i, n, j) */
    float *wp = xs + (size_t)nb * grid * Cin; /* [Cin, K], taps major */
    band bd[MAX_BANDS];
    int nbd = bands_of(g, bd);
    permute_taps(w, Cin, Cout, kk, wp);
    for (int n0 = 0; n0 < B; n0 += nb) {
        int m = B - n0 < nb ? B - n0 : nb;
        grid_in(x + (size_t)n0 * Cin * grid, layout & VAE_CONV_X_NHWC, m, Cin, g->Ho, g->Wo, xs);
        for (int q = 0; q < nbd; q++) {
            span sp = span_of(&bd[q], m, g->Wo, (size_t)g->k * Cout);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, sp.rows, sp.kb, Cin, 1.0f,
                        xs + sp.r0 * Cin, Cin, wp + sp.k0, (int)K, 0.0f, col + sp.r0 * K + sp.k0,
                        (int)K);
        }
        float *yc = y + (size_t)n0 * Cout * img;
        if (layout & VAE_CONV_Y_NHWC) {
            col2im_pm(g, col, m, Cout, yc);
            add_bias_rows(yc, (size_t)m * img, Cout, b);
        } else {
            col2im_pm(g, col, m, Cout, ys);
            to_nchw(ys, m, Cout, img, b, yc);
        }
        if (layout & VAE_CONV_RELU) relu_inplace(yc, (size_t)m * Cout * img);
    }
}

/* col = im2col_pm(dyt), band by band: dwp[Cin, K range] += xt^T col, dxt = col wp^T. */
static void convt2d_backward_pm(const float *x, const float *w, const float *dy, float *dx,
                                float *dw, float *db, int B, int Cin, int Cout, const lowering *g,
                                int layout, float *scratch)
{
    int kk = g->k * g->k, img = g->H * g->W, grid = g->Ho * g->Wo, nb = pm_chunk(B, grid);
    int xlast = (layout & VAE_CONV_X_NHWC) != 0, ylast = (layout & VAE_CONV_Y_NHWC) != 0;
    size_t K = (size_t)kk * Cout, kc = (size_t)g->k * Cout;
    float *col = scratch;                      /* [nb*grid, K] */
    float *dys = col + (size_t)nb * grid * K;  /* [nb, Hout, Wout, Cout] */
    float *xs = dys + (size_t)nb * img * Cout; /* [nb*grid, Cin], rows (i, n, j): x, then dx */
    float *wp = xs + (size_t)nb * grid * Cin;  /* [Cin, K], taps major */
    float *dwp = wp + K * Cin;                 /* [Cin, K], taps major */
    band bd[MAX_BANDS];
    int nbd = bands_of(g, bd);
    permute_taps(w, Cin, Cout, kk, wp);
    memset(dwp, 0, sizeof(float) * K * Cin);
    for (int n0 = 0; n0 < B; n0 += nb) {
        int m = B - n0 < nb ? B - n0 : nb;
        const float *dyt = nhwc_of(dy + (size_t)n0 * Cout * img, ylast, m, Cout, img, dys);
        grid_in(x + (size_t)n0 * Cin * grid, xlast, m, Cin, g->Ho, g->Wo, xs);
        sum_rows(dyt, (size_t)m * img, Cout, db);
        im2col_pm(g, dyt, m, Cout, col);
        for (int q = 0; q < nbd; q++) {
            span sp = span_of(&bd[q], m, g->Wo, kc);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Cin, sp.kb, sp.rows, 1.0f,
                        xs + sp.r0 * Cin, Cin, col + sp.r0 * K + sp.k0, (int)K, 1.0f, dwp + sp.k0,
                        (int)K);
        }
        if (!dx) continue;
        for (int q = 0; q < nbd; q++) {
            span sp = span_of(&bd[q], m, g->Wo, kc);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, sp.rows, Cin, sp.kb, 1.0f,
                        col + sp.r0 * K + sp.k0, (int)K, wp + sp.k0, (int)K, 0.0f, xs + sp.r0 * Cin,
                        Cin);
        }
        float *dxc = dx + (size_t)n0 * Cin * grid;
        grid_out(xs, xlast, m, Cin, g->Ho, g->Wo, NULL, dxc);
        gate_dx(x + (size_t)n0 * Cin * grid, dxc, (size_t)m * Cin * grid, layout);
    }
    unpermute_taps_add(dwp, Cin, Cout, kk, dw);
}

void vae_convt2d_forward(const float *x, const float *w, const float *b, float *y, int B, int Cin,
                         int H, int W, int Cout, int k, int s, int p, int op, int layout,
                         float *scratch)
{
    int Ho = (H - 1) * s - 2 * p + k + op, Wo = (W - 1) * s - 2 * p + k + op;
    lowering g = lowering_of(Ho, Wo, k, s, p, H, W);
    if (Cout < PM_MIN_CHANNELS) convt2d_forward_cm(x, w, b, y, B, Cin, Cout, &g, layout, scratch);
    else convt2d_forward_pm(x, w, b, y, B, Cin, Cout, &g, layout, scratch);
}

void vae_convt2d_backward(const float *x, const float *w, const float *dy, float *dx, float *dw,
                          float *db, int B, int Cin, int H, int W, int Cout, int k, int s, int p,
                          int op, int layout, float *scratch)
{
    int Ho = (H - 1) * s - 2 * p + k + op, Wo = (W - 1) * s - 2 * p + k + op;
    lowering g = lowering_of(Ho, Wo, k, s, p, H, W);
    if (Cout < PM_MIN_CHANNELS)
        convt2d_backward_cm(x, w, dy, dx, dw, db, B, Cin, Cout, &g, layout, scratch);
    else
        convt2d_backward_pm(x, w, dy, dx, dw, db, B, Cin, Cout, &g, layout, scratch);
}
