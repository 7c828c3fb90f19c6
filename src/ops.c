/*
 * ops.c: forward/backward pairs for the dense VAE ops (see ops.h).
 */
#include "mpivae/ops.h"

#include <cblas.h>
#include <math.h>

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
    for (size_t i = 0; i < n; i++)
        if (!(Y[i] > 0.0f)) dY[i] = 0.0f;
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

double vae_bce_logits_loss(const float *a, const float *x, float *da, int B, int D, float scale,
                           double *row_loss)
{
    double total = 0.0;
    for (int r = 0; r < B; r++) {
        const float *ar = a + (size_t)r * D, *xr = x + (size_t)r * D;
        float s = 0.0f;
        if (da) {
            float *dr = da + (size_t)r * D;
            for (int j = 0; j < D; j++) {
                float v = ar[j];
                float e = expf(-fabsf(v));
                s += fmaxf(v, 0.0f) - xr[j] * v + log1pf(e);
                /* sigmoid(v) from the same exp: 1/(1+e) for v >= 0, e/(1+e) otherwise. */
                float inv = 1.0f / (1.0f + e);
                float sig = v >= 0.0f ? inv : e * inv;
                dr[j] = scale * (sig - xr[j]);
            }
        } else {
            for (int j = 0; j < D; j++) {
                float v = ar[j];
                s += fmaxf(v, 0.0f) - xr[j] * v + log1pf(expf(-fabsf(v)));
            }
        }
        if (row_loss) row_loss[r] += s;
        total += s;
    }
    return total;
}

double vae_mse_loss(const float *a, const float *x, float *da, int B, int D, float scale,
                    double *row_loss)
{
    double total = 0.0;
    for (int r = 0; r < B; r++) {
        const float *ar = a + (size_t)r * D, *xr = x + (size_t)r * D;
        float s = 0.0f;
        for (int j = 0; j < D; j++) {
            float d = ar[j] - xr[j];
            s += d * d;
            if (da) da[(size_t)r * D + j] = scale * 2.0f * d;
        }
        if (row_loss) row_loss[r] += s;
        total += s;
    }
    return total;
}

void vae_sigmoid(const float *a, float *y, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        float e = expf(-fabsf(a[i]));
        float inv = 1.0f / (1.0f + e);
        y[i] = a[i] >= 0.0f ? inv : e * inv;
    }
}
