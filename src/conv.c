/*
 * conv.c: Conv2d and ConvTranspose2d forward/backward pairs (see conv.h),
 * lowered to cblas_sgemm through im2col / col2im. Two lowerings, chosen by
 * the channel count C of the image that im2col reads (the conv's input,
 * the transposed conv's output), and two paths for the 3x3 stride-1
 * convolutions that replace them there (the last item):
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
 * - Conv2d with k = 3, s = 1, p = 1 and 8 or more input channels: with 8
 *   or more output channels too (the hvae's residual blocks, priors and
 *   posteriors) Winograd's F(2x2, 3x3), below, on chunks of channels-last
 *   samples; with fewer (the hvae's output layer), tap by tap, below.
 *
 * Why two lowerings: with many channels the channel-major rows are short runs, slow
 * to gather between the products, and the patch-major lowering (with its
 * chunk size, the bands, channels-last activations and the ReLU applied as
 * chunks are written) made the default conv model faster; with one channel
 * it was slower. The measurements, and the variants tried, are in
 * docs/performance-notes.md.
 *
 * Scratch: the column matrix of one sample (channel-major) or one chunk
 * (patch-major), plus the phase planes and one sample's NCHW copies, or
 * the chunk's NHWC copies and the permuted weights; for Winograd the
 * chunk's tiles in the transform domain and the transformed weights, for
 * the taps the chunk's products per tap. Backward redoes im2col (and the
 * input transform) rather than keeping forward's, so one scratch serves
 * every layer.
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

/* ---------------------------------------------------------------------- Winograd F(2x2, 3x3) */

/*
 * A 3x3 stride-1 pad-1 conv with Cin >= 8 (patch-major inputs) is computed
 * by Winograd's minimal filtering F(2x2, 3x3) (Lavin and Gray 2016): the
 * output is cut into 2x2 tiles; tile t reads the 4x4 patch d_t of the
 * padded input around it, and
 *   Y_t = A^T [ sum_c (G g_oc G^T) .* (B^T d_tc B) ] A,
 * 16 multiplications per tile, input and output channel instead of 36. At
 * each of the 16 positions xi of the 4x4 transform domain the sum over c is
 * a product of matrices, M_xi[tile, o] = V_xi[tile, c] U_xi[o, c]^T, so a
 * chunk of tiles is 16 sgemms with K = Cin. The backward pass is the exact
 * gradient of these steps, in the same domain: with dM_t = A dY_t A^T,
 *   dU_xi += dM_xi^T V_xi   (the weight gradient, dg = G^T dU G),
 *   dV_xi  = dM_xi U_xi     (the input gradient, dd_t = B dV_t B^T, the
 *                            overlapping patches added up).
 * Tiles that reach past the image read zeros and write only their outputs
 * inside it. The matrices (rows of B^T, G, A^T):
 *   B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]
 *   G   = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1]
 *   A^T = [1 1 1 0; 0 1 -1 -1]
 * The measurements that chose it are in docs/performance-notes.md.
 */
#define WG_TILES 512 /* tiles per chunk (whole samples, at least one) */

/*
 * Floats between the 16 matrices [nt][C] of a transform-domain buffer: a
 * cache line more than they hold, so that the 16 rows a tile reads or
 * writes do not fall into the same cache sets (nt * C is often a power of
 * two).
 */
#define WG_PAD 16
static size_t wg_mat(size_t nt, int C)
{
    return nt * (size_t)C + WG_PAD;
}

static int wg_applies(int Cin, int Cout, int k, int s, int p)
{
    return k == 3 && s == 1 && p == 1 && Cin >= PM_MIN_CHANNELS && Cout >= PM_MIN_CHANNELS;
}

typedef struct {
    int H, W, th, tw, nb; /* image (= output), tiles per column and row, samples per chunk */
    int ts;               /* tiles per sample */
} wgeom;

static wgeom wgeom_of(int B, int H, int W)
{
    wgeom q = { H, W, (H + 1) / 2, (W + 1) / 2, 1, 0 };
    q.ts = q.th * q.tw;
    q.nb = WG_TILES / q.ts;
    if (q.nb < 1) q.nb = 1;
    if (q.nb > B) q.nb = B > 0 ? B : 1;
    return q;
}

/* Floats of a band of tiles' columns in the input transforms: 4 * (2*tw + 2) * C. */
static size_t wg_band(const wgeom *q, int C)
{
    return (size_t)4 * (2 * q->tw + 2) * C;
}

/*
 * Scratch: x/dx and y/dy of a chunk channels last, V and M, U and dU, a
 * row of zeros, a band of the input transforms, and 4 rows of Cout: a
 * tile's discard rows (forward) or its output gradient's sums (backward).
 */
static size_t wg_scratch(int B, int Cin, int H, int W, int Cout)
{
    wgeom q = wgeom_of(B, H, W);
    size_t nt = (size_t)q.nb * q.ts, img = (size_t)q.nb * H * W;
    size_t cm = (size_t)(Cin > Cout ? Cin : Cout);
    return img * Cin + img * Cout + 16 * wg_mat(nt, Cin) + 16 * wg_mat(nt, Cout) + 2 * 16 * (size_t)Cout * Cin +
           cm + wg_band(&q, Cin) + 4 * (size_t)Cout;
}

/* U[xi][o][c] = (G w[o][c] G^T)[xi]. */
static void wg_weights(const float *w, int Cout, int Cin, float *U)
{
    size_t oc = (size_t)Cout * Cin;
    for (size_t i = 0; i < oc; i++) {
        const float *g = w + 9 * i;
        float h[4][3];
        for (int v = 0; v < 3; v++) {
            h[0][v] = g[v];
            h[1][v] = 0.5f * (g[v] + g[3 + v] + g[6 + v]);
            h[2][v] = 0.5f * (g[v] - g[3 + v] + g[6 + v]);
            h[3][v] = g[6 + v];
        }
        for (int r = 0; r < 4; r++) {
            U[(size_t)(4 * r + 0) * oc + i] = h[r][0];
            U[(size_t)(4 * r + 1) * oc + i] = 0.5f * (h[r][0] + h[r][1] + h[r][2]);
            U[(size_t)(4 * r + 2) * oc + i] = 0.5f * (h[r][0] - h[r][1] + h[r][2]);
            U[(size_t)(4 * r + 3) * oc + i] = h[r][2];
        }
    }
}

/* w[o][c] += G^T dU[.][o][c] G: the weight gradient back from the transform domain. */
static void wg_weights_grad(const float *dU, int Cout, int Cin, float *dw)
{
    size_t oc = (size_t)Cout * Cin;
    for (size_t i = 0; i < oc; i++) {
        float d[16], k[3][4];
        for (int x = 0; x < 16; x++) d[x] = dU[(size_t)x * oc + i];
        for (int s = 0; s < 4; s++) {
            k[0][s] = d[s] + 0.5f * (d[4 + s] + d[8 + s]);
            k[1][s] = 0.5f * (d[4 + s] - d[8 + s]);
            k[2][s] = 0.5f * (d[4 + s] + d[8 + s]) + d[12 + s];
        }
        float *g = dw + 9 * i;
        for (int u = 0; u < 3; u++) {
            g[3 * u + 0] += k[u][0] + 0.5f * (k[u][1] + k[u][2]);
            g[3 * u + 1] += 0.5f * (k[u][1] - k[u][2]);
            g[3 * u + 2] += 0.5f * (k[u][1] + k[u][2]) + k[u][3];
        }
    }
}

/*
 * The tile transforms vectorise across channels: each loops over c with
 * its rows as separate restrict pointers (or one base and the stride
 * between the 16 transform-domain matrices). An input row past the image
 * points at zeros; an output row past it at a discard row of its own (the
 * forward pass) or is skipped (the input gradient).
 */

/* y_ab[c] = (A^T m A)[a][b] + bias[c] (bias NULL: none), m[xi][c] = mt[xi * mat + c]. */
static void wg_out_tile(const float *restrict mt, size_t mat, float *restrict y0, float *restrict y1,
                        float *restrict y2, float *restrict y3, const float *restrict bias, int C)
{
    for (int c = 0; c < C; c++) {
        float a[16], u[8];
        for (int x = 0; x < 16; x++) a[x] = mt[x * mat + c];
        for (int s = 0; s < 4; s++) {
            u[s] = a[s] + a[4 + s] + a[8 + s];
            u[4 + s] = a[4 + s] - a[8 + s] - a[12 + s];
        }
        const float b0 = bias ? bias[c] : 0.0f;
        y0[c] = b0 + u[0] + u[1] + u[2];
        y1[c] = b0 + u[1] - u[2] - u[3];
        y2[c] = b0 + u[4] + u[5] + u[6];
        y3[c] = b0 + u[5] - u[6] - u[7];
    }
}

/* Row r of dM = A dY A^T from row r of A dY, (p, q) times sg: o_s = sg * (p, p + q, p - q, -q)[s]. */
static void wg_og_row(const float *restrict p, const float *restrict q, float sg, float *restrict o0,
                      float *restrict o1, float *restrict o2, float *restrict o3, int C)
{
    for (int c = 0; c < C; c++) {
        o0[c] = sg * p[c];
        o1[c] = sg * (p[c] + q[c]);
        o2[c] = sg * (p[c] - q[c]);
        o3[c] = -sg * q[c];
    }
}

/* The rows of A dY that are sums: e_0..3 = (d0 + d2, d1 + d3, d0 - d2, d1 - d3). */
static void wg_og_sums(const float *restrict d0, const float *restrict d1, const float *restrict d2,
                       const float *restrict d3, float *restrict e0, float *restrict e1, float *restrict e2,
                       float *restrict e3, int C)
{
    for (int c = 0; c < C; c++) {
        e0[c] = d0[c] + d2[c];
        e1[c] = d1[c] + d3[c];
        e2[c] = d0[c] - d2[c];
        e3[c] = d1[c] - d3[c];
    }
}

/*
 * dm[xi][c] = (A dY A^T)[xi] (at dm[xi * mat + c]), dY[a][b] = dy_ab[c]:
 * the rows of A dY are (d0, d1), (d0 + d2, d1 + d3), (d0 - d2, d1 - d3)
 * and -(d2, d3). e: 4 * C floats.
 */
static void wg_og_tile(const float *d0, const float *d1, const float *d2, const float *d3, float *dm, size_t mat,
                       float *e, int C)
{
    wg_og_sums(d0, d1, d2, d3, e, e + C, e + 2 * C, e + 3 * C, C);
    const float *p[4] = { d0, e, e + 2 * C, d2 }, *q[4] = { d1, e + C, e + 3 * C, d3 };
    for (int r = 0; r < 4; r++)
        wg_og_row(p[r], q[r], r == 3 ? -1.0f : 1.0f, dm + 4 * r * mat, dm + (4 * r + 1) * mat,
                  dm + (4 * r + 2) * mat, dm + (4 * r + 3) * mat, C);
}

/*
 * The rows of tile (ty, tx)'s 2x2 outputs in an image t[.][H][W][C]; those
 * past the image point at pad + k * ps for output k (ps: 0 for a row of
 * zeros to read, C for 4 discard rows to write, one each, as restrict
 * requires).
 */
static void wg_outs(const wgeom *q, float *t, int n, int ty, int tx, int C, float *pad, size_t ps, float **rows)
{
    for (int a = 0; a < 2; a++)
        for (int b = 0; b < 2; b++) {
            int i = 2 * ty + a, j = 2 * tx + b;
            rows[2 * a + b] = i >= q->H || j >= q->W ? pad + (2 * a + b) * ps
                                                     : t + (((size_t)n * q->H + i) * q->W + j) * C;
        }
}

/*
 * The input transform, a band of tiles at a time: the band of tile row ty
 * reads image rows 2ty-1 .. 2ty+2. Its vertical pass E = B^T d runs once
 * per column of the band (neighbouring tiles share two columns), into
 * E[4][2*tw + 2][C] (column j is image column j - 1); the horizontal pass
 * V = E B then runs per tile on its 4 columns.
 */
static void wg_vertical(const float *restrict a0, const float *restrict a1, const float *restrict a2,
                        const float *restrict a3, float *restrict e0, float *restrict e1, float *restrict e2,
                        float *restrict e3, int C)
{
    for (int c = 0; c < C; c++) {
        e0[c] = a0[c] - a2[c];
        e1[c] = a1[c] + a2[c];
        e2[c] = a2[c] - a1[c];
        e3[c] = a1[c] - a3[c];
    }
}

static void wg_horizontal(const float *restrict e, float *restrict v0, float *restrict v1, float *restrict v2,
                          float *restrict v3, int C)
{
    const float *e0 = e, *e1 = e + C, *e2 = e + 2 * C, *e3 = e + 3 * C;
    for (int c = 0; c < C; c++) {
        v0[c] = e0[c] - e2[c];
        v1[c] = e1[c] + e2[c];
        v2[c] = e2[c] - e1[c];
        v3[c] = e1[c] - e3[c];
    }
}

/* The image row ih of sample n in t[.][H][W][C], NULL past the image. */
static float *wg_row(const wgeom *q, const float *t, int n, int ih, int C)
{
    return ih < 0 || ih >= q->H ? NULL : (float *)t + ((size_t)n * q->H + ih) * q->W * C;
}

/* V = B^T d B for every tile of m samples xt[m][H][W][C]. zero: C zeros; E: 4 * (2*tw + 2) * C floats. */
static void wg_input(const wgeom *q, const float *xt, int m, int C, float *V, const float *zero, float *E)
{
    const size_t nt = (size_t)m * q->ts, mat = wg_mat(nt, C), es = (size_t)(2 * q->tw + 2) * C;
    size_t t = 0;
    for (int n = 0; n < m; n++)
        for (int ty = 0; ty < q->th; ty++) {
            const float *r[4];
            for (int k = 0; k < 4; k++) r[k] = wg_row(q, xt, n, 2 * ty - 1 + k, C);
            for (int j = 0; j < 2 * q->tw + 2; j++) {
                const int iw = j - 1, in = iw >= 0 && iw < q->W;
                const float *a[4];
                for (int k = 0; k < 4; k++) a[k] = in && r[k] ? r[k] + (size_t)iw * C : zero;
                float *e = E + (size_t)j * C;
                wg_vertical(a[0], a[1], a[2], a[3], e, e + es, e + 2 * es, e + 3 * es, C);
            }
            for (int tx = 0; tx < q->tw; tx++, t++)
                for (int k = 0; k < 4; k++) {
                    float *v = V + (size_t)4 * k * mat + t * C;
                    wg_horizontal(E + k * es + (size_t)2 * tx * C, v, v + mat, v + 2 * mat, v + 3 * mat, C);
                }
        }
}

/* yt[m][H][W][C] = A^T M A + b at the outputs inside the image. trash: 4 * C floats. */
static void wg_output(const wgeom *q, const float *M, int m, int C, const float *b, float *yt, float *trash)
{
    const size_t nt = (size_t)m * q->ts, mat = wg_mat(nt, C);
    size_t t = 0;
    float *y[4];
    for (int n = 0; n < m; n++)
        for (int ty = 0; ty < q->th; ty++)
            for (int tx = 0; tx < q->tw; tx++, t++) {
                wg_outs(q, yt, n, ty, tx, C, trash, (size_t)C, y);
                wg_out_tile(M + t * C, mat, y[0], y[1], y[2], y[3], b, C);
            }
}

/* dM = A dY A^T for every tile, dY read from dyt[m][H][W][C] (zeros past the image). e: 4 * C floats. */
static void wg_output_grad(const wgeom *q, const float *dyt, int m, int C, float *dM, const float *zero, float *e)
{
    const size_t nt = (size_t)m * q->ts, mat = wg_mat(nt, C);
    size_t t = 0;
    float *dy[4];
    for (int n = 0; n < m; n++)
        for (int ty = 0; ty < q->th; ty++)
            for (int tx = 0; tx < q->tw; tx++, t++) {
                wg_outs(q, (float *)dyt, n, ty, tx, C, (float *)zero, 0, dy);
                wg_og_tile(dy[0], dy[1], dy[2], dy[3], dM + t * C, mat, e, C);
            }
}

/*
 * dxt[m][H][W][C] = the sum over tiles of B dV B^T on the patch each read
 * (overwritten): the transpose of wg_input, a band at a time. Each tile's
 * horizontal pass dE = dV B^T is added into F[4][2*tw + 2][C] (two
 * columns are shared with each neighbour), then the vertical pass B dE
 * once per column of the band, added into the image (two rows are shared
 * with the neighbouring bands). F: 4 * (2*tw + 2) * C floats.
 */
static void wg_horizontal_grad(const float *restrict d0, const float *restrict d1, const float *restrict d2,
                               const float *restrict d3, float *restrict f, int C)
{
    float *f0 = f, *f1 = f + C, *f2 = f + 2 * C, *f3 = f + 3 * C;
    for (int c = 0; c < C; c++) {
        f0[c] += d0[c];
        f1[c] += d1[c] - d2[c] + d3[c];
        f2[c] += d2[c] + d1[c] - d0[c];
        f3[c] -= d3[c];
    }
}

/* The vertical pass's transpose at one column: row k of the patch gets (B F)_k added (rows NULL: past the image). */
static void wg_vertical_grad(const float *restrict f0, const float *restrict f1, const float *restrict f2,
                             const float *restrict f3, float *const *rows, int C)
{
    if (rows[0])
        for (int c = 0; c < C; c++) rows[0][c] += f0[c];
    if (rows[1])
        for (int c = 0; c < C; c++) rows[1][c] += f1[c] - f2[c] + f3[c];
    if (rows[2])
        for (int c = 0; c < C; c++) rows[2][c] += f2[c] + f1[c] - f0[c];
    if (rows[3])
        for (int c = 0; c < C; c++) rows[3][c] -= f3[c];
}

static void wg_input_grad(const wgeom *q, const float *dV, int m, int C, float *dxt, float *F)
{
    const size_t nt = (size_t)m * q->ts, mat = wg_mat(nt, C), es = (size_t)(2 * q->tw + 2) * C;
    size_t t = 0;
    memset(dxt, 0, sizeof(float) * (size_t)m * q->H * q->W * C);
    for (int n = 0; n < m; n++)
        for (int ty = 0; ty < q->th; ty++) {
            memset(F, 0, sizeof(float) * 4 * es);
            for (int tx = 0; tx < q->tw; tx++, t++)
                for (int k = 0; k < 4; k++) {
                    const float *d = dV + (size_t)4 * k * mat + t * C;
                    wg_horizontal_grad(d, d + mat, d + 2 * mat, d + 3 * mat, F + k * es + (size_t)2 * tx * C, C);
                }
            float *r[4];
            for (int k = 0; k < 4; k++) r[k] = wg_row(q, dxt, n, 2 * ty - 1 + k, C);
            for (int iw = 0; iw < q->W; iw++) {
                float *rows[4];
                for (int k = 0; k < 4; k++) rows[k] = r[k] ? r[k] + (size_t)iw * C : NULL;
                const float *f = F + (size_t)(iw + 1) * C;
                wg_vertical_grad(f, f + es, f + 2 * es, f + 3 * es, rows, C);
            }
        }
}

static void conv2d_forward_wg(const float *x, const float *w, const float *b, float *y, int B,
                              int Cin, int Cout, int H, int W, int layout, float *scratch)
{
    wgeom q = wgeom_of(B, H, W);
    int HW = H * W;
    size_t ntm = (size_t)q.nb * q.ts;
    float *xs = scratch;                        /* [nb, H, W, Cin] */
    float *ys = xs + (size_t)q.nb * HW * Cin;   /* [nb, H, W, Cout] */
    float *V = ys + (size_t)q.nb * HW * Cout;   /* [16][nt][Cin] */
    float *M = V + 16 * wg_mat(ntm, Cin);             /* [16][nt][Cout] */
    float *U = M + 16 * wg_mat(ntm, Cout);            /* [16][Cout][Cin] */
    float *zero = U + 2 * 16 * (size_t)Cout * Cin, *cols = zero + (Cin > Cout ? Cin : Cout);
    float *trash = cols + wg_band(&q, Cin);
    memset(zero, 0, sizeof(float) * (size_t)Cin);
    size_t oc = (size_t)Cout * Cin;
    wg_weights(w, Cout, Cin, U);
    for (int n0 = 0; n0 < B; n0 += q.nb) {
        int m = B - n0 < q.nb ? B - n0 : q.nb;
        size_t nt = (size_t)m * q.ts;
        const float *xt = nhwc_of(x + (size_t)n0 * Cin * HW, layout & VAE_CONV_X_NHWC, m, Cin, HW, xs);
        wg_input(&q, xt, m, Cin, V, zero, cols);
        for (int xi = 0; xi < 16; xi++)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)nt, Cout, Cin, 1.0f,
                        V + xi * wg_mat(nt, Cin), Cin, U + xi * oc, Cin, 0.0f, M + xi * wg_mat(nt, Cout), Cout);
        float *yc = y + (size_t)n0 * Cout * HW;
        if (layout & VAE_CONV_Y_NHWC) {
            wg_output(&q, M, m, Cout, b, yc, trash);
        } else {
            wg_output(&q, M, m, Cout, NULL, ys, trash);
            to_nchw(ys, m, Cout, HW, b, yc);
        }
        if (layout & VAE_CONV_RELU) relu_inplace(yc, (size_t)m * Cout * HW);
    }
}

static void conv2d_backward_wg(const float *x, const float *w, const float *dy, float *dx,
                               float *dw, float *db, int B, int Cin, int Cout, int H, int W,
                               int layout, float *scratch)
{
    wgeom q = wgeom_of(B, H, W);
    int HW = H * W, xlast = (layout & VAE_CONV_X_NHWC) != 0;
    size_t ntm = (size_t)q.nb * q.ts, oc = (size_t)Cout * Cin;
    float *xs = scratch;                      /* [nb, H, W, Cin]: x, then dx */
    float *dys = xs + (size_t)q.nb * HW * Cin; /* [nb, H, W, Cout] */
    float *V = dys + (size_t)q.nb * HW * Cout; /* [16][nt][Cin]: V, then dV */
    float *dM = V + 16 * wg_mat(ntm, Cin);           /* [16][nt][Cout] */
    float *U = dM + 16 * wg_mat(ntm, Cout);          /* [16][Cout][Cin] */
    float *dU = U + 16 * oc;                   /* [16][Cout][Cin] */
    float *zero = dU + 16 * oc, *cols = zero + (Cin > Cout ? Cin : Cout);
    memset(zero, 0, sizeof(float) * (size_t)(Cin > Cout ? Cin : Cout));
    if (dx) wg_weights(w, Cout, Cin, U);
    if (dw) memset(dU, 0, sizeof(float) * 16 * oc);
    for (int n0 = 0; n0 < B; n0 += q.nb) {
        int m = B - n0 < q.nb ? B - n0 : q.nb;
        size_t nt = (size_t)m * q.ts;
        const float *dyt = nhwc_of(dy + (size_t)n0 * Cout * HW, layout & VAE_CONV_Y_NHWC, m, Cout, HW, dys);
        wg_output_grad(&q, dyt, m, Cout, dM, zero, cols + wg_band(&q, Cin));
        if (dw) {
            sum_rows(dyt, (size_t)m * HW, Cout, db);
            const float *xt = nhwc_of(x + (size_t)n0 * Cin * HW, xlast, m, Cin, HW, xs);
            wg_input(&q, xt, m, Cin, V, zero, cols);
            for (int xi = 0; xi < 16; xi++)
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Cout, Cin, (int)nt, 1.0f,
                            dM + xi * wg_mat(nt, Cout), Cout, V + xi * wg_mat(nt, Cin), Cin, 1.0f, dU + xi * oc, Cin);
        }
        if (!dx) continue;
        for (int xi = 0; xi < 16; xi++)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)nt, Cin, Cout, 1.0f,
                        dM + xi * wg_mat(nt, Cout), Cout, U + xi * oc, Cin, 0.0f, V + xi * wg_mat(nt, Cin), Cin);
        float *dxc = dx + (size_t)n0 * Cin * HW;
        if (xlast) {
            wg_input_grad(&q, V, m, Cin, dxc, cols);
        } else {
            wg_input_grad(&q, V, m, Cin, xs, cols);
            to_nchw(xs, m, Cin, HW, NULL, dxc);
        }
        gate_dx(x + (size_t)n0 * Cin * HW, dxc, (size_t)m * Cin * HW, layout);
    }
    if (dw) wg_weights_grad(dU, Cout, Cin, dw);
}

/* ---------------------------------------------------------------------- taps: few output channels */

/*
 * A 3x3 stride-1 pad-1 conv from 8 or more channels to fewer than 8 (the
 * hvae's output layer, 16 -> 1) is computed tap by tap: one product gives
 * every input pixel's contribution to each tap and output channel,
 *   P[pixel][t*Cout + o] = sum_c x[pixel][c] w[o][c][t],
 * and each output adds the 9 entries of its neighbours,
 *   y[i][j][o] = b[o] + sum_{t = (u, v)} P[i + u - 1][j + v - 1][t*Cout + o].
 * Backward gathers the output gradient the same way, Q[pixel][t*Cout + o] =
 * dy[i - u + 1][j - v + 1][o] (0 past the image), so that dx = Q Wt and
 * dWt += Q^T x, Wt[t*Cout + o][c] = w[o][c][t]. The im2col lowering would
 * write 9 * Cin floats per pixel to multiply them by a column or two; this
 * writes 9 * Cout. Chunks of whole samples of about TAP_ROWS pixels.
 */
#define TAP_ROWS 2048

static int tap_applies(int Cin, int Cout, int k, int s, int p)
{
    return k == 3 && s == 1 && p == 1 && Cin >= PM_MIN_CHANNELS && Cout < PM_MIN_CHANNELS;
}

static int tap_chunk(int B, int HW)
{
    int nb = (TAP_ROWS + HW - 1) / HW;
    return nb < B ? nb : (B > 0 ? B : 1);
}

/* Scratch: x/dx and y/dy of a chunk channels last, P (or Q), Wt and dWt. */
static size_t tap_scratch(int B, int Cin, int H, int W, int Cout)
{
    size_t px = (size_t)tap_chunk(B, H * W) * H * W;
    return px * Cin + px * Cout + px * 9 * Cout + 2 * (size_t)9 * Cout * Cin;
}

/* Wt[t*Cout + o][c] = w[o][c][t]. */
static void tap_weights(const float *w, int Cout, int Cin, float *wt)
{
    for (int o = 0; o < Cout; o++)
        for (int c = 0; c < Cin; c++)
            for (int t = 0; t < 9; t++) wt[((size_t)t * Cout + o) * Cin + c] = w[((size_t)o * Cin + c) * 9 + t];
}

/*
 * to[n][i][j][t*C + o] (gather) or to[n][i][j][o] (!gather) from
 * from[n][i'][j'][.]: gather: Q[i][j][t, o] = from[i - u + 1][j - v + 1][o];
 * else y[i][j][o] = b[o] + sum_t from[i + u - 1][j + v - 1][t*C + o].
 */
static void tap_shift(const float *from, float *to, int m, int H, int W, int C, const float *b, int gather)
{
    size_t cc = (size_t)9 * C;
    for (int n = 0; n < m; n++)
        for (int i = 0; i < H; i++)
            for (int j = 0; j < W; j++) {
                size_t pix = ((size_t)n * H + i) * W + j;
                float acc[PM_MIN_CHANNELS];
                if (!gather)
                    for (int o = 0; o < C; o++) acc[o] = b ? b[o] : 0.0f;
                for (int u = 0; u < 3; u++) {
                    int ii = gather ? i - u + 1 : i + u - 1;
                    for (int v = 0; v < 3; v++) {
                        int jj = gather ? j - v + 1 : j + v - 1, t = 3 * u + v;
                        int in = ii >= 0 && ii < H && jj >= 0 && jj < W;
                        size_t q = ((size_t)n * H + ii) * W + jj;
                        if (gather) {
                            for (int o = 0; o < C; o++) to[pix * cc + (size_t)t * C + o] = in ? from[q * C + o] : 0.0f;
                        } else if (in) {
                            for (int o = 0; o < C; o++) acc[o] += from[q * cc + (size_t)t * C + o];
                        }
                    }
                }
                if (!gather)
                    for (int o = 0; o < C; o++) to[pix * C + o] = acc[o];
            }
}

static void conv2d_forward_tap(const float *x, const float *w, const float *b, float *y, int B,
                               int Cin, int Cout, int H, int W, int layout, float *scratch)
{
    int HW = H * W, nb = tap_chunk(B, HW), N = 9 * Cout;
    float *xs = scratch;                      /* [nb, H, W, Cin] */
    float *ys = xs + (size_t)nb * HW * Cin;   /* [nb, H, W, Cout] */
    float *P = ys + (size_t)nb * HW * Cout;   /* [nb*HW, 9*Cout] */
    float *wt = P + (size_t)nb * HW * N;      /* [9*Cout, Cin] */
    tap_weights(w, Cout, Cin, wt);
    for (int n0 = 0; n0 < B; n0 += nb) {
        int m = B - n0 < nb ? B - n0 : nb;
        const float *xt = nhwc_of(x + (size_t)n0 * Cin * HW, layout & VAE_CONV_X_NHWC, m, Cin, HW, xs);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m * HW, N, Cin, 1.0f, xt, Cin, wt, Cin, 0.0f,
                    P, N);
        float *yc = y + (size_t)n0 * Cout * HW;
        if (layout & VAE_CONV_Y_NHWC) {
            tap_shift(P, yc, m, H, W, Cout, b, 0);
        } else {
            tap_shift(P, ys, m, H, W, Cout, b, 0);
            to_nchw(ys, m, Cout, HW, NULL, yc);
        }
        if (layout & VAE_CONV_RELU) relu_inplace(yc, (size_t)m * Cout * HW);
    }
}

static void conv2d_backward_tap(const float *x, const float *w, const float *dy, float *dx,
                                float *dw, float *db, int B, int Cin, int Cout, int H, int W,
                                int layout, float *scratch)
{
    int HW = H * W, nb = tap_chunk(B, HW), N = 9 * Cout, xlast = (layout & VAE_CONV_X_NHWC) != 0;
    float *xs = scratch;                      /* [nb, H, W, Cin]: x, then dx */
    float *dys = xs + (size_t)nb * HW * Cin;  /* [nb, H, W, Cout] */
    float *Q = dys + (size_t)nb * HW * Cout;  /* [nb*HW, 9*Cout] */
    float *wt = Q + (size_t)nb * HW * N;      /* [9*Cout, Cin] */
    float *dwt = wt + (size_t)N * Cin;        /* [9*Cout, Cin] */
    tap_weights(w, Cout, Cin, wt);
    if (dw) memset(dwt, 0, sizeof(float) * (size_t)N * Cin);
    for (int n0 = 0; n0 < B; n0 += nb) {
        int m = B - n0 < nb ? B - n0 : nb;
        const float *dyt = nhwc_of(dy + (size_t)n0 * Cout * HW, layout & VAE_CONV_Y_NHWC, m, Cout, HW, dys);
        tap_shift(dyt, Q, m, H, W, Cout, NULL, 1);
        if (dw) {
            sum_rows(dyt, (size_t)m * HW, Cout, db);
            const float *xt = nhwc_of(x + (size_t)n0 * Cin * HW, xlast, m, Cin, HW, xs);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, N, Cin, m * HW, 1.0f, Q, N, xt, Cin, 1.0f,
                        dwt, Cin);
        }
        if (!dx) continue;
        float *dxc = dx + (size_t)n0 * Cin * HW;
        float *dxt = xlast ? dxc : xs;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m * HW, Cin, N, 1.0f, Q, N, wt, Cin, 0.0f,
                    dxt, Cin);
        if (!xlast) to_nchw(xs, m, Cin, HW, NULL, dxc);
        gate_dx(x + (size_t)n0 * Cin * HW, dxc, (size_t)m * Cin * HW, layout);
    }
    if (dw)
        for (int o = 0; o < Cout; o++)
            for (int c = 0; c < Cin; c++)
                for (int t = 0; t < 9; t++) dw[((size_t)o * Cin + c) * 9 + t] += dwt[((size_t)t * Cout + o) * Cin + c];
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
    if (wg_applies(Cin, Cout, k, s, p)) return wg_scratch(B, Cin, H, W, Cout);
    if (tap_applies(Cin, Cout, k, s, p)) return tap_scratch(B, Cin, H, W, Cout);
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
    if (wg_applies(Cin, Cout, k, s, p)) {
        conv2d_forward_wg(x, w, b, y, B, Cin, Cout, H, W, layout, scratch);
        return;
    }
    if (tap_applies(Cin, Cout, k, s, p)) {
        conv2d_forward_tap(x, w, b, y, B, Cin, Cout, H, W, layout, scratch);
        return;
    }
    lowering g = lowering_of(H, W, k, s, p, Ho, Wo);
    if (Cin < PM_MIN_CHANNELS) conv2d_forward_cm(x, w, b, y, B, Cin, Cout, &g, layout, scratch);
    else conv2d_forward_pm(x, w, b, y, B, Cin, Cout, &g, layout, scratch);
}

void vae_conv2d_backward(const float *x, const float *w, const float *dy, float *dx, float *dw,
                         float *db, int B, int Cin, int H, int W, int Cout, int k, int s, int p,
                         int layout, float *scratch)
{
    int Ho = (H + 2 * p - k) / s + 1, Wo = (W + 2 * p - k) / s + 1;
    if (wg_applies(Cin, Cout, k, s, p)) {
        conv2d_backward_wg(x, w, dy, dx, dw, db, B, Cin, Cout, H, W, layout, scratch);
        return;
    }
    if (tap_applies(Cin, Cout, k, s, p)) {
        conv2d_backward_tap(x, w, dy, dx, dw, db, B, Cin, Cout, H, W, layout, scratch);
        return;
    }
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
