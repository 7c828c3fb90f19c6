/*
 * ops.c: forward/backward pairs for the dense VAE ops (see ops.h).
 */
#include "mpivae/ops.h"

#include "vmath.h"

#include <cblas.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

/* Lanes of the vectorised row sums: a fixed order, so results are reproducible. */
#define LANES 16

void vae_linear_forward(const float *X, const float *W, const float *b, float *Y, int B, int in,
                        int out, int act)
{
    /* Y = X W^T: X is [B,in] row-major, W is [out,in] row-major. */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, out, in, 1.0f, X, in, W, in, 0.0f, Y,
                out);
    /* One pass adds the bias and applies the activation. */
    for (int r = 0; r < B; r++) {
        float *y = Y + (size_t)r * out;
        if (act == VAE_ACT_RELU) {
            for (int j = 0; j < out; j++) {
                float t = y[j] + b[j];
                y[j] = t > 0.0f ? t : 0.0f;
            }
        } else {
            for (int j = 0; j < out; j++) y[j] += b[j];
        }
    }
}

void vae_linear_backward(const float *X, const float *W, const float *dY, float *dX, float *dW,
                         float *db, int B, int in, int out)
{
    /* dW[out,in] += dY^T[out,B] X[B,in]. */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, out, in, B, 1.0f, dY, out, X, in, 1.0f,
                dW, in);
    for (int r = 0; r < B; r++) {
        const float *d = dY + (size_t)r * out;
        for (int j = 0; j < out; j++) db[j] += d[j];
    }
    /* dX[B,in] = dY[B,out] W[out,in]. */
    if (dX)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, in, out, 1.0f, dY, out, W, in,
                    0.0f, dX, in);
}

void vae_relu_backward(const float *Y, float *dY, size_t n)
{
    /* A select, not a conditional store: the compiler's masked stores are slow on some x86 cores. */
    for (size_t i = 0; i < n; i++) dY[i] = Y[i] > 0.0f ? dY[i] : 0.0f;
}

void vae_leaky_relu(const float *x, float *y, size_t n, float slope)
{
    for (size_t i = 0; i < n; i++) y[i] = x[i] > 0.0f ? x[i] : slope * x[i];
}

void vae_leaky_relu_backward(const float *Y, float *dY, size_t n, float slope)
{
    for (size_t i = 0; i < n; i++) dY[i] = Y[i] > 0.0f ? dY[i] : slope * dY[i];
}

void vae_reparam_forward(const float *mulv, const float *eps, float *z, int B, int Z)
{
    for (int r = 0; r < B; r++) {
        const float *mu = mulv + (size_t)r * 2 * Z, *lv = mu + Z;
        float *zr = z + (size_t)r * Z;
        if (eps) {
            const float *e = eps + (size_t)r * Z;
            for (int j = 0; j < Z; j++) zr[j] = mu[j] + expf(0.5f * lv[j]) * e[j];
        } else {
            for (int j = 0; j < Z; j++) zr[j] = mu[j];
        }
    }
}

void vae_reparam_backward(const float *mulv, const float *eps, const float *dz, float *dmulv,
                          int B, int Z)
{
    for (int r = 0; r < B; r++) {
        const float *lv = mulv + (size_t)r * 2 * Z + Z;
        const float *d = dz + (size_t)r * Z;
        float *dmu = dmulv + (size_t)r * 2 * Z, *dlv = dmu + Z;
        for (int j = 0; j < Z; j++) dmu[j] += d[j];
        if (eps) {
            const float *e = eps + (size_t)r * Z;
            for (int j = 0; j < Z; j++) dlv[j] += d[j] * e[j] * 0.5f * expf(0.5f * lv[j]);
        }
    }
}

double vae_kl_loss(const float *mulv, float *dmulv, int B, int Z, float scale, double *row_kl)
{
    double total = 0.0;
    for (int r = 0; r < B; r++) {
        const float *mu = mulv + (size_t)r * 2 * Z, *lv = mu + Z;
        double s = 0.0;
        for (int j = 0; j < Z; j++) {
            float e = expf(lv[j]);
            s += (double)(1.0f + lv[j] - mu[j] * mu[j] - e);
            if (dmulv) {
                float *dmu = dmulv + (size_t)r * 2 * Z, *dlv = dmu + Z;
                dmu[j] += scale * mu[j];
                dlv[j] += scale * 0.5f * (e - 1.0f);
            }
        }
        s *= -0.5;
        if (row_kl) row_kl[r] = s;
        total += s;
    }
    return total;
}

/*
 * Each row's KL, with a gradient weight that depends on it: g(KL_r) times
 * dKL_r/dmulv is added into dmulv. capacity: g = scale * sign(KL_r - C);
 * free bits: g = scale where KL_r > C, else 0.
 */
static double kl_shaped_loss(const float *mulv, float *dmulv, int B, int Z, float scale, float C, int free_bits,
                             double *row_kl)
{
    double total = 0.0;
    for (int r = 0; r < B; r++) {
        const float *mu = mulv + (size_t)r * 2 * Z, *lv = mu + Z;
        double s = 0.0;
        for (int j = 0; j < Z; j++) s += (double)(1.0f + lv[j] - mu[j] * mu[j] - expf(lv[j]));
        s *= -0.5;
        if (row_kl) row_kl[r] = s;
        total += s;
        float g = free_bits ? (s > C ? scale : 0.0f) : (s > C ? scale : s < C ? -scale : 0.0f);
        if (dmulv && g != 0.0f) {
            float *dmu = dmulv + (size_t)r * 2 * Z, *dlv = dmu + Z;
            for (int j = 0; j < Z; j++) {
                dmu[j] += g * mu[j];
                dlv[j] += g * 0.5f * (expf(lv[j]) - 1.0f);
            }
        }
    }
    return total;
}

double vae_kl_capacity_loss(const float *mulv, float *dmulv, int B, int Z, float scale, float C,
                            double *row_kl)
{
    return kl_shaped_loss(mulv, dmulv, B, Z, scale, C, 0, row_kl);
}

double vae_kl_free_bits_loss(const float *mulv, float *dmulv, int B, int Z, float scale, float F, double *row_kl)
{
    return kl_shaped_loss(mulv, dmulv, B, Z, scale, F, 1, row_kl);
}

/*
 * The two losses below sum the same terms in a loop that also writes the
 * gradient and in one that does not; without FMA contraction both loops
 * round every term alike, so the loss does not depend on whether the
 * gradient is asked for (with -ffp-contract=fast the compiler may fuse a
 * multiply-add in one loop and not in the other).
 */
#if defined(__clang__)
#define NO_CONTRACT_FN
#define NO_CONTRACT_BODY _Pragma("clang fp contract(off)")
#else
#define NO_CONTRACT_FN __attribute__((optimize("fp-contract=off")))
#define NO_CONTRACT_BODY
#endif

NO_CONTRACT_FN double vae_bce_logits_loss(const float *a, const float *x, float *da, int B, int D, float scale,
                                          double *row_loss)
{
    NO_CONTRACT_BODY
    double total = 0.0;
    for (int r = 0; r < B; r++) {
        const float *ar = a + (size_t)r * D, *xr = x + (size_t)r * D;
        float *dr = da ? da + (size_t)r * D : NULL;
        float acc[LANES] = { 0 };
        int j = 0;
        /* softplus(v) - x v = max(v, 0) - x v + log1p(exp(-|v|)); sigmoid from the same exp. */
        if (dr) {
            for (; j + LANES <= D; j += LANES)
                for (int k = 0; k < LANES; k++) {
                    float v = ar[j + k], xv = xr[j + k];
                    float e = vm_exp(-fabsf(v));
                    acc[k] += 0.5f * (v + fabsf(v)) - xv * v + vm_log1p_unit(e);
                    float inv = 1.0f / (1.0f + e);
                    float sig = v >= 0.0f ? inv : e * inv;
                    dr[j + k] = scale * (sig - xv);
                }
        } else {
            for (; j + LANES <= D; j += LANES)
                for (int k = 0; k < LANES; k++) {
                    float v = ar[j + k];
                    acc[k] += 0.5f * (v + fabsf(v)) - xr[j + k] * v + vm_log1p_unit(vm_exp(-fabsf(v)));
                }
        }
        for (; j < D; j++) {
            float v = ar[j], xv = xr[j];
            float e = vm_exp(-fabsf(v));
            acc[0] += fmaxf(v, 0.0f) - xv * v + vm_log1p_unit(e);
            if (dr) {
                float inv = 1.0f / (1.0f + e);
                dr[j] = scale * ((v >= 0.0f ? inv : e * inv) - xv);
            }
        }
        /* A NaN logit still reaches the sum through the x * v term. */
        double s = 0.0;
        for (int k = 0; k < LANES; k++) s += acc[k];
        if (row_loss) row_loss[r] += s;
        total += s;
    }
    return total;
}

NO_CONTRACT_FN double vae_mse_loss(const float *a, const float *x, float *da, int B, int D, float scale,
                                   double *row_loss)
{
    NO_CONTRACT_BODY
    double total = 0.0;
    for (int r = 0; r < B; r++) {
        const float *ar = a + (size_t)r * D, *xr = x + (size_t)r * D;
        float *dr = da ? da + (size_t)r * D : NULL;
        float acc[LANES] = { 0 };
        int j = 0;
        for (; j + LANES <= D; j += LANES)
            for (int k = 0; k < LANES; k++) {
                float d = ar[j + k] - xr[j + k];
                acc[k] += d * d;
                if (dr) dr[j + k] = scale * 2.0f * d;
            }
        for (; j < D; j++) {
            float d = ar[j] - xr[j];
            acc[0] += d * d;
            if (dr) dr[j] = scale * 2.0f * d;
        }
        double s = 0.0;
        for (int k = 0; k < LANES; k++) s += acc[k];
        if (row_loss) row_loss[r] += s;
        total += s;
    }
    return total;
}

double vae_softmax_xent_loss(const float *a, const int *y, float *da, int B, int K, float scale, double *row_loss,
                             double *wrong)
{
    double total = 0.0;
    for (int r = 0; r < B; r++) {
        const float *ar = a + (size_t)r * K; /* [K] */
        float *dr = da ? da + (size_t)r * K : NULL;
        int best = 0;
        for (int k = 1; k < K; k++)
            if (ar[k] > ar[best]) best = k;
        const float m = ar[best];
        double s = 0.0;
        for (int k = 0; k < K; k++) s += exp((double)ar[k] - m);
        const double lse = (double)m + log(s), l = lse - (double)ar[y[r]];
        if (dr)
            for (int k = 0; k < K; k++) dr[k] = scale * (float)(exp((double)ar[k] - m) / s - (k == y[r] ? 1.0 : 0.0));
        if (row_loss) row_loss[r] += l;
        if (wrong) wrong[r] = best != y[r] || isnan(m) ? 1.0 : 0.0; /* a NaN row counts as wrong */
        total += l;
    }
    return total;
}

void vae_sigmoid(const float *a, float *y, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        float e = vm_exp(-fabsf(a[i]));
        float inv = 1.0f / (1.0f + e);
        y[i] = a[i] >= 0.0f ? inv : e * inv;
    }
}
