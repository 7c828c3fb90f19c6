/*
 * conv.c: Conv2d and ConvTranspose2d forward/backward pairs (see conv.h),
 * lowered to cblas_sgemm through im2col / col2im, one sgemm per sample.
 *
 * Why per sample. The alternative puts the whole local batch in one
 * column matrix col[Cin*k*k, B*Hout*Wout] (sample n in columns
 * n*Hout*Wout ...), so that one sgemm covers the batch; but the sgemm's
 * other operand and its result are then [C, B*HW], not NCHW, so the conv
 * needs a transpose of y after forward and of dy before backward, and the
 * transposed conv a transpose of x (forward and backward) and of dx.
 * Measured at batch 128 with one thread (OPENBLAS_NUM_THREADS=1), OpenBLAS
 * 0.3.21 (pthread build), gcc -O3 -march=native, on a 2-vCPU AMD EPYC
 * (Zen 1, KVM; bench_sgemm 37 GFLOP/s at n = 1024); ms per forward +
 * backward, median of 41 runs with the variants interleaved:
 *
 *   layer of the default model            per sample  whole batch  chunks of 16
 *   Conv2d(1,32,4,2,1) 28->14, dx NULL        3.54        5.31         4.27
 *   Conv2d(1,32,4,2,1) 28->14, with dx        5.02        6.24         5.32
 *   Conv2d(32,64,4,2,1) 14->7                56.1        61.5         54.8
 *   ConvTranspose2d(64,32,4,2,1) 7->14       50.7        55.8         49.7
 *   ConvTranspose2d(32,1,4,2,1) 14->28        4.90        6.29         5.39
 *   the four as the model calls them       115.3       128.9        114.2
 *
 * The transposes themselves are cheap (0.10 to 0.15 ms each), and so is
 * the sgemm per sample: OpenBLAS keeps about 30 GFLOP/s on M=64, N=49,
 * K=512 (13 ms for the 128 products, against 17 ms for the one batched
 * product). What the batch costs is memory: its column matrix is 12.8 MB
 * for the middle layers (past the 8 MB L3), where one sample's is 100 KB
 * and stays in L2. Chunks of 16 samples come within 1% of per sample in
 * total, so the simpler lowering with B times less scratch was kept.
 * (Timing a lone N=49 sgemm in a fresh process can mislead: OpenBLAS ran
 * it at 11 GFLOP/s until some larger sgemm had run; the ops' own mix of
 * products does not show this, 55.2 ms cold against 55.7 ms warm.)
 *
 * The scratch is one sample's column matrix. Backward redoes im2col of x
 * (or dy) rather than keeping forward's, so one scratch serves every layer.
 */
#include "mpivae/conv.h"

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

/* ---------------------------------------------------------------------- Conv2d */

size_t vae_conv2d_scratch(int B, int Cin, int H, int W, int Cout, int k, int s, int p)
{
    if (B < 0 || Cin < 1 || H < 1 || W < 1 || Cout < 1 || k < 1 || s < 1 || p < 0) return 0;
    if (H + 2 * p < k || W + 2 * p < k) return 0;
    int Ho = (H + 2 * p - k) / s + 1, Wo = (W + 2 * p - k) / s + 1;
    return (size_t)Cin * k * k * Ho * Wo + phase_floats(H, W, s, p);
}

void vae_conv2d_forward(const float *x, const float *w, const float *b, float *y, int B, int Cin,
                        int H, int W, int Cout, int k, int s, int p, float *scratch)
{
    int Ho = (H + 2 * p - k) / s + 1, Wo = (W + 2 * p - k) / s + 1;
    int HWo = Ho * Wo, K = Cin * k * k;
    size_t nx = (size_t)Cin * H * W, ny = (size_t)Cout * HWo;
    lowering g = lowering_of(H, W, k, s, p, Ho, Wo);
    float *col = scratch, *ph = scratch + (size_t)K * HWo; /* [K, HWo], phase planes */
    for (int n = 0; n < B; n++) {
        im2col(&g, x + n * nx, Cin, col, (size_t)HWo, ph);
        float *yn = y + n * ny; /* [Cout, HWo] */
        /* yn[Cout,HWo] = w[Cout,K] col[K,HWo]. */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Cout, HWo, K, 1.0f, w, K, col, HWo,
                    0.0f, yn, HWo);
        for (int o = 0; o < Cout; o++) {
            float *r = yn + (size_t)o * HWo;
            for (int i = 0; i < HWo; i++) r[i] += b[o];
        }
    }
}

void vae_conv2d_backward(const float *x, const float *w, const float *dy, float *dx, float *dw,
                         float *db, int B, int Cin, int H, int W, int Cout, int k, int s, int p,
                         float *scratch)
{
    int Ho = (H + 2 * p - k) / s + 1, Wo = (W + 2 * p - k) / s + 1;
    int HWo = Ho * Wo, K = Cin * k * k;
    size_t nx = (size_t)Cin * H * W, ny = (size_t)Cout * HWo;
    lowering g = lowering_of(H, W, k, s, p, Ho, Wo);
    float *col = scratch, *ph = scratch + (size_t)K * HWo; /* [K, HWo]: im2col(x_n), then dcol */
    for (int n = 0; n < B; n++) {
        const float *dyn = dy + n * ny; /* [Cout, HWo] */
        for (int o = 0; o < Cout; o++) db[o] += sum_floats(dyn + (size_t)o * HWo, (size_t)HWo);
        im2col(&g, x + n * nx, Cin, col, (size_t)HWo, ph);
        /* dw[Cout,K] += dyn[Cout,HWo] col[K,HWo]^T. */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Cout, K, HWo, 1.0f, dyn, HWo, col,
                    HWo, 1.0f, dw, K);
        if (dx) {
            /* dcol[K,HWo] = w[Cout,K]^T dyn[Cout,HWo], then folded back onto the image. */
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, K, HWo, Cout, 1.0f, w, K, dyn,
                        HWo, 0.0f, col, HWo);
            col2im(&g, col, (size_t)HWo, Cin, NULL, dx + n * nx, ph); /* dx_n[Cin, H, W] */
        }
    }
}

/* ---------------------------------------------------------------------- ConvTranspose2d */

size_t vae_convt2d_scratch(int B, int Cin, int H, int W, int Cout, int k, int s, int p, int op)
{
    if (B < 0 || Cin < 1 || H < 1 || W < 1 || Cout < 1 || k < 1 || s < 1 || p < 0) return 0;
    if (op < 0 || op >= s) return 0;
    long Ho = (long)(H - 1) * s - 2L * p + k + op, Wo = (long)(W - 1) * s - 2L * p + k + op;
    if (Ho < 1 || Wo < 1) return 0;
    return (size_t)Cout * k * k * H * W + phase_floats((int)Ho, (int)Wo, s, p);
}

/*
 * In the transposed conv, the col2im / im2col geometry is that of the
 * Conv2d(Cout -> Cin) it transposes: image Hout x Wout, grid H x W. With
 * op < s, (Hout + 2p - k) / s + 1 == H, so the grid matches x exactly.
 */
void vae_convt2d_forward(const float *x, const float *w, const float *b, float *y, int B, int Cin,
                         int H, int W, int Cout, int k, int s, int p, int op, float *scratch)
{
    int Ho = (H - 1) * s - 2 * p + k + op, Wo = (W - 1) * s - 2 * p + k + op;
    int HW = H * W, K = Cout * k * k;
    size_t HWo = (size_t)Ho * Wo, nx = (size_t)Cin * HW, ny = (size_t)Cout * HWo;
    lowering g = lowering_of(Ho, Wo, k, s, p, H, W);
    float *col = scratch, *ph = scratch + (size_t)K * HW; /* [K, HW], phase planes */
    for (int n = 0; n < B; n++) {
        /* col[K,HW] = w[Cin,K]^T x_n[Cin,HW]. */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, K, HW, Cin, 1.0f, w, K, x + n * nx,
                    HW, 0.0f, col, HW);
        col2im(&g, col, (size_t)HW, Cout, b, y + n * ny, ph); /* y_n[Cout, Hout, Wout] */
    }
}

void vae_convt2d_backward(const float *x, const float *w, const float *dy, float *dx, float *dw,
                          float *db, int B, int Cin, int H, int W, int Cout, int k, int s, int p,
                          int op, float *scratch)
{
    int Ho = (H - 1) * s - 2 * p + k + op, Wo = (W - 1) * s - 2 * p + k + op;
    int HW = H * W, K = Cout * k * k;
    size_t HWo = (size_t)Ho * Wo, nx = (size_t)Cin * HW, ny = (size_t)Cout * HWo;
    lowering g = lowering_of(Ho, Wo, k, s, p, H, W);
    float *col = scratch, *ph = scratch + (size_t)K * HW; /* [K, HW] = im2col(dy_n), phase planes */
    for (int n = 0; n < B; n++) {
        const float *dyn = dy + n * ny; /* [Cout, Hout, Wout] */
        for (int o = 0; o < Cout; o++) db[o] += sum_floats(dyn + o * HWo, HWo);
        im2col(&g, dyn, Cout, col, (size_t)HW, ph);
        const float *xn = x + n * nx; /* [Cin, HW] */
        /* dw[Cin,K] += x_n[Cin,HW] col[K,HW]^T. */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Cin, K, HW, 1.0f, xn, HW, col, HW,
                    1.0f, dw, K);
        /* dx_n[Cin,HW] = w[Cin,K] col[K,HW]. */
        if (dx)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Cin, HW, K, 1.0f, w, K, col,
                        HW, 0.0f, dx + n * nx, HW);
    }
}
