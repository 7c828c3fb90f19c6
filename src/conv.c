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
 * Output columns [*lo, *hi) whose input column ow*s - p + kj lies in
 * [0, W): the rest read the zero padding.
 */
static void valid_cols(int W, int Wo, int s, int p, int kj, int *lo, int *hi)
{
    int a = p - kj, top = W - 1 + p - kj;
    int l = a > 0 ? (a + s - 1) / s : 0;
    int h = top >= 0 ? top / s + 1 : 0;
    if (h > Wo) h = Wo;
    if (h < l) h = l;
    *lo = l;
    *hi = h;
}

/*
 * col[(c*k + u)*k + v][i*Wo + j] = x[c, i*s - p + u, j*s - p + v] (0 in the
 * padding), for x[C,H,W] and an Ho x Wo output grid; col's rows are ldc
 * floats apart.
 */
static void im2col(const float *x, int C, int H, int W, int k, int s, int p, int Ho, int Wo,
                   float *col, size_t ldc)
{
    for (int c = 0; c < C; c++)
        for (int u = 0; u < k; u++)
            for (int v = 0; v < k; v++) {
                float *row = col + ((size_t)(c * k + u) * k + v) * ldc;
                int lo, hi, off = v - p;
                valid_cols(W, Wo, s, p, v, &lo, &hi);
                for (int i = 0; i < Ho; i++) {
                    float *r = row + (size_t)i * Wo;
                    int ih = i * s - p + u;
                    if (ih < 0 || ih >= H) {
                        memset(r, 0, sizeof(float) * (size_t)Wo);
                        continue;
                    }
                    const float *xr = x + ((size_t)c * H + ih) * W;
                    for (int j = 0; j < lo; j++) r[j] = 0.0f;
                    if (s == 1)
                        for (int j = lo; j < hi; j++) r[j] = xr[j + off];
                    else if (s == 2)
                        for (int j = lo; j < hi; j++) r[j] = xr[2 * j + off];
                    else
                        for (int j = lo; j < hi; j++) r[j] = xr[j * s + off];
                    for (int j = hi; j < Wo; j++) r[j] = 0.0f;
                }
            }
}

/* The adjoint of im2col: x[c, i*s - p + u, j*s - p + v] += col[...] (x[C,H,W] is not cleared). */
static void col2im(const float *col, size_t ldc, int C, int H, int W, int k, int s, int p, int Ho,
                   int Wo, float *x)
{
    for (int c = 0; c < C; c++)
        for (int u = 0; u < k; u++)
            for (int v = 0; v < k; v++) {
                const float *row = col + ((size_t)(c * k + u) * k + v) * ldc;
                int lo, hi, off = v - p;
                valid_cols(W, Wo, s, p, v, &lo, &hi);
                for (int i = 0; i < Ho; i++) {
                    int ih = i * s - p + u;
                    if (ih < 0 || ih >= H) continue;
                    const float *r = row + (size_t)i * Wo;
                    float *xr = x + ((size_t)c * H + ih) * W;
                    if (s == 1)
                        for (int j = lo; j < hi; j++) xr[j + off] += r[j];
                    else if (s == 2)
                        for (int j = lo; j < hi; j++) xr[2 * j + off] += r[j];
                    else
                        for (int j = lo; j < hi; j++) xr[j * s + off] += r[j];
                }
            }
}

/* ---------------------------------------------------------------------- Conv2d */

size_t vae_conv2d_scratch(int B, int Cin, int H, int W, int Cout, int k, int s, int p)
{
    if (B < 0 || Cin < 1 || H < 1 || W < 1 || Cout < 1 || k < 1 || s < 1 || p < 0) return 0;
    if (H + 2 * p < k || W + 2 * p < k) return 0;
    int Ho = (H + 2 * p - k) / s + 1, Wo = (W + 2 * p - k) / s + 1;
    return (size_t)Cin * k * k * Ho * Wo;
}

void vae_conv2d_forward(const float *x, const float *w, const float *b, float *y, int B, int Cin,
                        int H, int W, int Cout, int k, int s, int p, float *scratch)
{
    int Ho = (H + 2 * p - k) / s + 1, Wo = (W + 2 * p - k) / s + 1;
    int HWo = Ho * Wo, K = Cin * k * k;
    size_t nx = (size_t)Cin * H * W, ny = (size_t)Cout * HWo;
    float *col = scratch; /* [K, HWo] */
    for (int n = 0; n < B; n++) {
        im2col(x + n * nx, Cin, H, W, k, s, p, Ho, Wo, col, (size_t)HWo);
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
    float *col = scratch; /* [K, HWo]: im2col(x_n), then dcol */
    for (int n = 0; n < B; n++) {
        const float *dyn = dy + n * ny; /* [Cout, HWo] */
        for (int o = 0; o < Cout; o++) db[o] += sum_floats(dyn + (size_t)o * HWo, (size_t)HWo);
        im2col(x + n * nx, Cin, H, W, k, s, p, Ho, Wo, col, (size_t)HWo);
        /* dw[Cout,K] += dyn[Cout,HWo] col[K,HWo]^T. */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Cout, K, HWo, 1.0f, dyn, HWo, col,
                    HWo, 1.0f, dw, K);
        if (dx) {
            /* dcol[K,HWo] = w[Cout,K]^T dyn[Cout,HWo], then folded back onto the image. */
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, K, HWo, Cout, 1.0f, w, K, dyn,
                        HWo, 0.0f, col, HWo);
            float *dxn = dx + n * nx; /* [Cin, H, W] */
            memset(dxn, 0, sizeof(float) * nx);
            col2im(col, (size_t)HWo, Cin, H, W, k, s, p, Ho, Wo, dxn);
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
    return (size_t)Cout * k * k * H * W;
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
    float *col = scratch; /* [K, HW] */
    for (int n = 0; n < B; n++) {
        /* col[K,HW] = w[Cin,K]^T x_n[Cin,HW]. */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, K, HW, Cin, 1.0f, w, K, x + n * nx,
                    HW, 0.0f, col, HW);
        float *yn = y + n * ny; /* [Cout, Hout, Wout] */
        for (int o = 0; o < Cout; o++) {
            float *r = yn + o * HWo;
            for (size_t i = 0; i < HWo; i++) r[i] = b[o];
        }
        col2im(col, (size_t)HW, Cout, Ho, Wo, k, s, p, H, W, yn);
    }
}

void vae_convt2d_backward(const float *x, const float *w, const float *dy, float *dx, float *dw,
                          float *db, int B, int Cin, int H, int W, int Cout, int k, int s, int p,
                          int op, float *scratch)
{
    int Ho = (H - 1) * s - 2 * p + k + op, Wo = (W - 1) * s - 2 * p + k + op;
    int HW = H * W, K = Cout * k * k;
    size_t HWo = (size_t)Ho * Wo, nx = (size_t)Cin * HW, ny = (size_t)Cout * HWo;
    float *col = scratch; /* [K, HW] = im2col(dy_n) */
    for (int n = 0; n < B; n++) {
        const float *dyn = dy + n * ny; /* [Cout, Hout, Wout] */
        for (int o = 0; o < Cout; o++) db[o] += sum_floats(dyn + o * HWo, HWo);
        im2col(dyn, Cout, Ho, Wo, k, s, p, H, W, col, (size_t)HW);
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
