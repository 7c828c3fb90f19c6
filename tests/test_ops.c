/*
 * test_ops.c: finite-difference tests of every forward/backward pair in ops.h.
 *
 * For each op the test has its own double-precision reference of the forward
 * pass. Inputs are drawn as floats (so float and double see the same values)
 * from a local generator, independent of the library's RNG. A scalar
 * objective L = sum(G .* output) with fixed random weights G turns each op
 * into a scalar function whose gradient the op's backward computes when given
 * dY = G; the analytic (float) gradient is compared entry by entry with
 * central differences of the double reference, (L(p + h) - L(p - h)) / 2h,
 * h = 1e-4. The float forward is compared with the double reference too.
 *
 * Ops: linear (dX, dW, db; no activation, and ReLU through
 * vae_relu_backward; dX == NULL), LeakyReLU, reparameterisation (mu and logvar, with
 * eps and eps == NULL), KL, BCE from logits (including |logits| up to 1000,
 * where a naive sigmoid or log(1 + exp(a)) overflows), MSE, the sigmoid, and
 * the softmax cross-entropy (with logits up to 1000, where a naive exp
 * overflows, its argmax error flags and a NaN logit); and the library's
 * float exp, tanh and log1p (src/vmath.h) against libm in double.
 * Backward functions that add into their outputs are called twice to check
 * that they accumulate. Shapes are small and odd (B=3, in=5, out=7, ...).
 *
 * Tolerances: each check is |analytic - reference| <= rtol * |reference| +
 * atol, stated per op next to the check. The double central difference has
 * a truncation error ~h^2 |f'''| / 6 ~ 1e-9 and a rounding error ~1e-16 / h
 * ~ 1e-12, both far below the tolerances, so what the tolerances bound is
 * the float arithmetic of the op: each float operation has relative error
 * 6e-8, and a sum of n products of O(1) values carries about n * 6e-8.
 * The exit code is the verdict.
 */
#include "mpivae/ops.h"

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TEST_SEED 0x9E3779B97F4A7C15ull
#include "check.h"

#include "../src/vmath.h"

/* ---------------------------------------------------------------------- helpers */

static void fill(float *p, size_t n, float lo, float hi)
{
    for (size_t i = 0; i < n; i++) p[i] = uniform(lo, hi);
}

static void to_double(const float *p, double *q, size_t n)
{
    for (size_t i = 0; i < n; i++) q[i] = p[i];
}

static float *fmalloc(size_t n) { return calloc(n ? n : 1, sizeof(float)); }
static double *dmalloc(size_t n) { return calloc(n ? n : 1, sizeof(double)); }

static double dot(const double *g, const double *y, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++) s += g[i] * y[i];
    return s;
}

static const double FD_H = 1e-4;

/* ---------------------------------------------------------------------- linear */

/* Double reference: Y[B,out] = act(X W^T + b). */
static void linear_ref(const double *X, const double *W, const double *b, double *Y, int B, int in,
                       int out, int act)
{
    for (int r = 0; r < B; r++)
        for (int o = 0; o < out; o++) {
            double s = b[o];
            for (int i = 0; i < in; i++) s += X[(size_t)r * in + i] * W[(size_t)o * in + i];
            Y[(size_t)r * out + o] = act == VAE_ACT_RELU ? (s > 0 ? s : 0) : s;
        }
}

/* Objective sum(G .* linear(X, W, b)) in double. */
static double linear_obj(const double *X, const double *W, const double *b, const double *G,
                         double *Y, int B, int in, int out, int act)
{
    linear_ref(X, W, b, Y, B, in, out, act);
    return dot(G, Y, (size_t)B * out);
}

/* Smallest |pre-activation| of X W^T + b: how far the data is from a ReLU kink. */
static double min_abs_pre(const double *X, const double *W, const double *b, double *Y, int B,
                          int in, int out)
{
    linear_ref(X, W, b, Y, B, in, out, VAE_ACT_NONE);
    double m = INFINITY;
    for (size_t i = 0; i < (size_t)B * out; i++)
        if (fabs(Y[i]) < m) m = fabs(Y[i]);
    return m;
}

/* Central difference of the linear objective with respect to p[k] (p is X, W or b). */
static double linear_fd(double *p, size_t k, const double *X, const double *W, const double *b,
                        const double *G, double *Y, int B, int in, int out, int act)
{
    double keep = p[k];
    p[k] = keep + FD_H;
    double lp = linear_obj(X, W, b, G, Y, B, in, out, act);
    p[k] = keep - FD_H;
    double lm = linear_obj(X, W, b, G, Y, B, in, out, act);
    p[k] = keep;
    return (lp - lm) / (2 * FD_H);
}

static void test_linear_shape(int B, int in, int out, int act)
{
    char label[96];
    size_t nx = (size_t)B * in, nw = (size_t)out * in, ny = (size_t)B * out;
    float *X = fmalloc(nx), *W = fmalloc(nw), *b = fmalloc(out), *Y = fmalloc(ny);
    float *dY = fmalloc(ny), *dX = fmalloc(nx), *dW = fmalloc(nw), *db = fmalloc(out);
    float *dW2 = fmalloc(nw), *db2 = fmalloc(out);
    double *Xd = dmalloc(nx), *Wd = dmalloc(nw), *bd = dmalloc(out), *Yd = dmalloc(ny);
    double *Gd = dmalloc(ny), *tmp = dmalloc(ny);
    float *G = fmalloc(ny);

    /*
     * Draw data; for ReLU redraw until every pre-activation is at least 0.05
     * from the kink (a perturbation of h = 1e-4 moves it by at most
     * h * max|input| = 1e-4), and both branches occur.
     */
    for (int tries = 0; tries < 1000; tries++) {
        fill(X, nx, -1, 1);
        fill(W, nw, -1, 1);
        fill(b, out, -0.5f, 0.5f);
        to_double(X, Xd, nx);
        to_double(W, Wd, nw);
        to_double(b, bd, out);
        if (act != VAE_ACT_RELU) break;
        if (min_abs_pre(Xd, Wd, bd, tmp, B, in, out) < 0.05) continue;
        int pos = 0;
        for (size_t i = 0; i < ny; i++) pos += tmp[i] > 0;
        if (ny < 2 || (pos > 0 && (size_t)pos < ny)) break;
    }
    if (act == VAE_ACT_RELU) CHECK_CMP_DBL(min_abs_pre(Xd, Wd, bd, tmp, B, in, out), >=, 0.05);
    fill(G, ny, -1, 1);
    to_double(G, Gd, ny);

    /* Forward: a sum of `in` products of values in [-1, 1] plus a bias, so |terms| <= in + 1. */
    vae_linear_forward(X, W, b, Y, B, in, out, act);
    linear_ref(Xd, Wd, bd, Yd, B, in, out, act);
    snprintf(label, sizeof label, "linear forward B=%d in=%d out=%d act=%d", B, in, out, act);
    for (size_t i = 0; i < ny; i++)
        CHECK_CLOSE(label, Y[i], Yd[i], 0, 4 * FLT_EPSILON * (in + 1)); /* n eps sum|terms| */

    /* Backward with dY = G (times the ReLU mask via vae_relu_backward). */
    memcpy(dY, G, ny * sizeof(float));
    if (act == VAE_ACT_RELU) vae_relu_backward(Y, dY, ny);
    for (size_t i = 0; i < nx; i++) dX[i] = 12345.0f; /* overwritten, not added to */
    vae_linear_backward(X, W, dY, dX, dW, db, B, in, out);

    /*
     * Gradients against central differences. dX is a sum of `out` products,
     * dW of B products, db of B values, all of magnitude <= 1: rtol 1e-5 and
     * atol 1e-6 allow 15x the n eps sum|terms| bound of the float sums.
     */
    snprintf(label, sizeof label, "linear dX B=%d in=%d out=%d act=%d", B, in, out, act);
    for (size_t k = 0; k < nx; k++)
        CHECK_CLOSE(label, dX[k], linear_fd(Xd, k, Xd, Wd, bd, Gd, tmp, B, in, out, act), 1e-5, 1e-6);
    snprintf(label, sizeof label, "linear dW B=%d in=%d out=%d act=%d", B, in, out, act);
    for (size_t k = 0; k < nw; k++)
        CHECK_CLOSE(label, dW[k], linear_fd(Wd, k, Xd, Wd, bd, Gd, tmp, B, in, out, act), 1e-5, 1e-6);
    snprintf(label, sizeof label, "linear db B=%d in=%d out=%d act=%d", B, in, out, act);
    for (int k = 0; k < out; k++)
        CHECK_CLOSE(label, db[k], linear_fd(bd, (size_t)k, Xd, Wd, bd, Gd, tmp, B, in, out, act), 1e-5,
                    1e-6);

    /* Accumulation: a second call adds the same again (exactly: x + x is exact in float). */
    memcpy(dW2, dW, nw * sizeof(float));
    memcpy(db2, db, out * sizeof(float));
    vae_linear_backward(X, W, dY, NULL, dW, db, B, in, out); /* dX == NULL: no input gradient */
    snprintf(label, sizeof label, "linear accumulate B=%d in=%d out=%d", B, in, out);
    for (size_t k = 0; k < nw; k++) CHECK_CLOSE(label, dW[k], 2.0 * dW2[k], 1e-6, 1e-7);
    for (int k = 0; k < out; k++) CHECK_CLOSE(label, db[k], 2.0 * db2[k], 1e-6, 1e-7);

    /* dX is overwritten on every call, not accumulated. */
    float *dXb = fmalloc(nx);
    memcpy(dXb, dX, nx * sizeof(float));
    vae_linear_backward(X, W, dY, dX, dW, db, B, in, out);
    snprintf(label, sizeof label, "linear dX overwritten B=%d in=%d out=%d", B, in, out);
    for (size_t k = 0; k < nx; k++) CHECK_CLOSE(label, dX[k], dXb[k], 1e-6, 1e-7);
    free(dXb);

    free(X), free(W), free(b), free(Y), free(dY), free(dX), free(dW), free(db), free(dW2);
    free(db2), free(Xd), free(Wd), free(bd), free(Yd), free(Gd), free(tmp), free(G);
}

static void test_relu_backward(void)
{
    /* The mask is Y > 0: zero, negative zero and NaN outputs block the gradient. */
    float Y[6] = { 1.0f, 0.0f, -0.0f, 2e-30f, -3.0f, NAN };
    float dY[6] = { 1, 2, 3, 4, 5, 6 };
    vae_relu_backward(Y, dY, 6);
    CHECK(dY[0] == 1.0f && dY[1] == 0.0f && dY[2] == 0.0f && dY[3] == 4.0f && dY[4] == 0.0f &&
          dY[5] == 0.0f);
}

/*
 * LeakyReLU: the forward against max(x, 0) + slope min(x, 0) in double, and
 * the backward against central differences of L = sum G .* y(x), away from
 * the kink (|x| > 1e-3 > h); the backward through the output, in place.
 */
static void test_leaky_relu(void)
{
    enum { N = 37 };
    const float slope = 0.2f;
    float x[N], y[N], dY[N], G[N];
    fill(x, N, -2.0f, 2.0f);
    fill(G, N, -1.0f, 1.0f);
    for (int i = 0; i < N; i++)
        if (fabsf(x[i]) < 1e-3f) x[i] = 0.5f;
    vae_leaky_relu(x, y, N, slope);
    memcpy(dY, G, sizeof dY);
    vae_leaky_relu_backward(y, dY, N, slope);
    const double h = 1e-4;
    for (int i = 0; i < N; i++) {
        double xd = x[i], ref = xd > 0 ? xd : (double)slope * xd;
        CHECK_CLOSE("leaky forward", y[i], ref, 1e-7, 0);
        double lp = xd + h > 0 ? xd + h : (double)slope * (xd + h), lm = xd - h > 0 ? xd - h : (double)slope * (xd - h);
        CHECK_CLOSE("leaky backward", dY[i], G[i] * (lp - lm) / (2 * h), 1e-6, 1e-9);
    }
    float z[N];
    memcpy(z, x, sizeof z);
    vae_leaky_relu(z, z, N, slope); /* in place */
    for (int i = 0; i < N; i++) CHECK_CMP_DBL(z[i], ==, y[i]);
}

/* ---------------------------------------------------------------------- reparameterisation */

static void reparam_ref(const double *mulv, const double *eps, double *z, int B, int Z)
{
    for (int r = 0; r < B; r++)
        for (int j = 0; j < Z; j++) {
            double mu = mulv[(size_t)r * 2 * Z + j], lv = mulv[(size_t)r * 2 * Z + Z + j];
            z[(size_t)r * Z + j] = eps ? mu + exp(0.5 * lv) * eps[(size_t)r * Z + j] : mu;
        }
}

static double reparam_fd(double *mulv, size_t k, const double *eps, const double *G, double *z,
                         int B, int Z)
{
    double keep = mulv[k];
    mulv[k] = keep + FD_H;
    reparam_ref(mulv, eps, z, B, Z);
    double lp = dot(G, z, (size_t)B * Z);
    mulv[k] = keep - FD_H;
    reparam_ref(mulv, eps, z, B, Z);
    double lm = dot(G, z, (size_t)B * Z);
    mulv[k] = keep;
    return (lp - lm) / (2 * FD_H);
}

static void test_reparam_shape(int B, int Z, int with_eps)
{
    char label[96];
    size_t nm = (size_t)B * 2 * Z, nz = (size_t)B * Z;
    float *mulv = fmalloc(nm), *eps = fmalloc(nz), *z = fmalloc(nz), *G = fmalloc(nz);
    float *dmulv = fmalloc(nm), *first = fmalloc(nm);
    double *mulvd = dmalloc(nm), *epsd = dmalloc(nz), *zd = dmalloc(nz), *Gd = dmalloc(nz);
    fill(mulv, nm, -2, 2); /* logvar in [-2, 2]: exp(lv / 2) in [0.37, 2.7] */
    fill(eps, nz, -2, 2);
    fill(G, nz, -1, 1);
    to_double(mulv, mulvd, nm);
    to_double(eps, epsd, nz);
    to_double(G, Gd, nz);
    const float *e = with_eps ? eps : NULL;
    const double *ed = with_eps ? epsd : NULL;

    /* Forward: mu + expf(lv/2) eps, a few roundings of values up to ~7: rtol 1e-6, atol 1e-6. */
    vae_reparam_forward(mulv, e, z, B, Z);
    reparam_ref(mulvd, ed, zd, B, Z);
    snprintf(label, sizeof label, "reparam forward B=%d Z=%d eps=%d", B, Z, with_eps);
    for (size_t i = 0; i < nz; i++) CHECK_CLOSE(label, z[i], zd[i], 1e-6, 1e-6);
    if (!with_eps)
        for (size_t i = 0; i < nz; i++) CHECK(z[i] == mulv[(i / Z) * 2 * Z + i % Z]);

    /*
     * Backward from zero: dmu = G, dlv = G eps exp(lv/2) / 2 (0 without eps).
     * Three float roundings and expf: rtol 1e-5, atol 1e-7.
     */
    vae_reparam_backward(mulv, e, G, dmulv, B, Z);
    snprintf(label, sizeof label, "reparam dmulv B=%d Z=%d eps=%d", B, Z, with_eps);
    for (size_t k = 0; k < nm; k++)
        CHECK_CLOSE(label, dmulv[k], reparam_fd(mulvd, k, ed, Gd, zd, B, Z), 1e-5, 1e-7);

    /* It adds: a second call doubles every entry. */
    memcpy(first, dmulv, nm * sizeof(float));
    vae_reparam_backward(mulv, e, G, dmulv, B, Z);
    snprintf(label, sizeof label, "reparam accumulate B=%d Z=%d eps=%d", B, Z, with_eps);
    for (size_t k = 0; k < nm; k++) CHECK_CLOSE(label, dmulv[k], 2.0 * first[k], 1e-6, 1e-7);

    free(mulv), free(eps), free(z), free(G), free(dmulv), free(first);
    free(mulvd), free(epsd), free(zd), free(Gd);
}

/* ---------------------------------------------------------------------- KL */

static double kl_ref(const double *mulv, int B, int Z, double *row)
{
    double t = 0;
    for (int r = 0; r < B; r++) {
        double s = 0;
        for (int j = 0; j < Z; j++) {
            double mu = mulv[(size_t)r * 2 * Z + j], lv = mulv[(size_t)r * 2 * Z + Z + j];
            s += 1 + lv - mu * mu - exp(lv);
        }
        if (row) row[r] = -0.5 * s;
        t += -0.5 * s;
    }
    return t;
}

static void test_kl_shape(int B, int Z)
{
    char label[96];
    size_t nm = (size_t)B * 2 * Z;
    float *mulv = fmalloc(nm), *dmulv = fmalloc(nm), *first = fmalloc(nm);
    double *mulvd = dmalloc(nm), *row = dmalloc(B), *rowd = dmalloc(B);
    fill(mulv, nm, -2, 2);
    to_double(mulv, mulvd, nm);
    const float scale = 0.37f;

    /*
     * Forward: each term 1 + lv - mu^2 - exp(lv) is formed in float from
     * values up to e^2 = 7.4, so it carries an absolute error of a few
     * 6e-8 * 7.4; the test allows 8 eps * 10 per term, summed over the row.
     */
    double tot = vae_kl_loss(mulv, NULL, B, Z, scale, row);
    double totd = kl_ref(mulvd, B, Z, rowd);
    double atol_row = 8 * FLT_EPSILON * 10 * Z;
    snprintf(label, sizeof label, "kl forward B=%d Z=%d", B, Z);
    CHECK_CLOSE(label, tot, totd, 0, atol_row * B);
    for (int r = 0; r < B; r++) CHECK_CLOSE(label, row[r], rowd[r], 0, atol_row);
    /* row_kl may be NULL, and the total does not depend on whether dmulv is given. */
    CHECK_CMP_DBL(vae_kl_loss(mulv, NULL, B, Z, scale, NULL), ==, tot);
    CHECK_CMP_DBL(vae_kl_loss(mulv, dmulv, B, Z, scale, NULL), ==, tot);

    /*
     * Backward (from the call just made, dmulv was zero): scale * dKL/dmulv,
     * dmu = mu, dlv = (exp(lv) - 1) / 2. expf and two roundings: rtol 1e-5, atol 1e-6.
     */
    snprintf(label, sizeof label, "kl dmulv B=%d Z=%d", B, Z);
    for (size_t k = 0; k < nm; k++) {
        double keep = mulvd[k];
        mulvd[k] = keep + FD_H;
        double lp = kl_ref(mulvd, B, Z, NULL);
        mulvd[k] = keep - FD_H;
        double lm = kl_ref(mulvd, B, Z, NULL);
        mulvd[k] = keep;
        CHECK_CLOSE(label, dmulv[k], scale * (lp - lm) / (2 * FD_H), 1e-5, 1e-6);
    }

    /* It adds. */
    memcpy(first, dmulv, nm * sizeof(float));
    vae_kl_loss(mulv, dmulv, B, Z, scale, NULL);
    snprintf(label, sizeof label, "kl accumulate B=%d Z=%d", B, Z);
    for (size_t k = 0; k < nm; k++) CHECK_CLOSE(label, dmulv[k], 2.0 * first[k], 1e-6, 1e-7);

    /* At the prior (mu = 0, logvar = 0) the KL and its gradient are exactly 0. */
    memset(mulv, 0, nm * sizeof(float));
    memset(dmulv, 0, nm * sizeof(float));
    CHECK_CMP_DBL(vae_kl_loss(mulv, dmulv, B, Z, 1.0f, row), ==, 0.0);
    for (size_t k = 0; k < nm; k++) CHECK(dmulv[k] == 0.0f);

    free(mulv), free(dmulv), free(first), free(mulvd), free(row), free(rowd);
}

/* ---------------------------------------------------------------------- BCE from logits */

/* softplus(a) - x a in double via the stable log-sum-exp form. */
static double bce_elem(double a, double x)
{
    return (a > 0 ? a : 0) - x * a + log1p(exp(-fabs(a)));
}

static double bce_ref(const double *a, const double *x, int B, int D, double *row, double *absum)
{
    double t = 0, s_abs = 0;
    for (int r = 0; r < B; r++) {
        double s = 0;
        for (int j = 0; j < D; j++) {
            size_t i = (size_t)r * D + j;
            double v = bce_elem(a[i], x[i]);
            s += v;
            /* Magnitude of the float terms: max(a,0), x a and the log1p. */
            s_abs += fabs(a[i]) + fabs(x[i] * a[i]) + 1;
        }
        if (row) row[r] = s;
        t += s;
    }
    if (absum) *absum = s_abs;
    return t;
}

static void test_bce_shape(int B, int D, float amp)
{
    char label[96];
    size_t n = (size_t)B * D;
    float *a = fmalloc(n), *x = fmalloc(n), *da = fmalloc(n), *da2 = fmalloc(n);
    double *ad = dmalloc(n), *xd = dmalloc(n), *row = dmalloc(B), *rowd = dmalloc(B);
    fill(a, n, -amp, amp);
    fill(x, n, 0, 1);
    /* Targets at both ends of [0, 1] too. */
    x[0] = 0.0f;
    if (n > 1) x[n - 1] = 1.0f;
    to_double(a, ad, n);
    to_double(x, xd, n);
    const float scale = 0.61f;

    /*
     * Forward: the library sums a row in float, so the error is bounded by
     * D * eps * sum|terms|; the test allows 2 eps * (sum|terms|) * D per row.
     */
    double absum = 0;
    double totd = bce_ref(ad, xd, B, D, rowd, &absum);
    for (int r = 0; r < B; r++) row[r] = 1.0; /* row_loss is added to */
    for (size_t i = 0; i < n; i++) da[i] = 777.0f; /* da is overwritten */
    double tot = vae_bce_logits_loss(a, x, da, B, D, scale, row);
    double atol = 2 * FLT_EPSILON * absum * D;
    snprintf(label, sizeof label, "bce forward B=%d D=%d amp=%g", B, D, amp);
    CHECK(isfinite(tot));
    CHECK_CLOSE(label, tot, totd, 0, atol);
    for (int r = 0; r < B; r++) CHECK_CLOSE(label, row[r] - 1.0, rowd[r], 0, atol);
    /* The same loss without the gradient, and row_loss may be NULL. */
    double tot2 = vae_bce_logits_loss(a, x, NULL, B, D, scale, NULL);
    CHECK_CLOSE(label, tot2, totd, 0, atol);

    /*
     * Backward: da = scale (sigmoid(a) - x), one expf, one division and two
     * roundings of values <= 1: rtol 1e-5 and atol 1e-7 (an absolute floor:
     * for |a| = 30, sigmoid(a) - x is 1 - x up to 1e-13, which float rounds).
     */
    snprintf(label, sizeof label, "bce da B=%d D=%d amp=%g", B, D, amp);
    for (size_t k = 0; k < n; k++) {
        double keep = ad[k];
        ad[k] = keep + FD_H;
        double lp = bce_ref(ad, xd, B, D, NULL, NULL);
        ad[k] = keep - FD_H;
        double lm = bce_ref(ad, xd, B, D, NULL, NULL);
        ad[k] = keep;
        CHECK(isfinite(da[k]));
        CHECK_CLOSE(label, da[k], scale * (lp - lm) / (2 * FD_H), 1e-5, 1e-7);
    }
    /* da is overwritten: a second call gives the same values. */
    memcpy(da2, da, n * sizeof(float));
    vae_bce_logits_loss(a, x, da, B, D, scale, NULL);
    CHECK(memcmp(da, da2, n * sizeof(float)) == 0);

    free(a), free(x), free(da), free(da2), free(ad), free(xd), free(row), free(rowd);
}

/* Logits far out in both tails, where exp(a) overflows a float for a > 88. */
static void test_bce_large(void)
{
    static const float av[] = { 30, -30, 50, -50, 88.5f, -88.5f, 100, -100, 1000, -1000, 0 };
    static const float xv[] = { 0.0f, 0.3f, 1.0f };
    enum { NA = sizeof av / sizeof av[0], NX = sizeof xv / sizeof xv[0] };
    char label[96];
    for (int i = 0; i < NA; i++)
        for (int k = 0; k < NX; k++) {
            float a = av[i], x = xv[k], da = 0.0f;
            double row = 0.0;
            double l = vae_bce_logits_loss(&a, &x, &da, 1, 1, 1.0f, &row);
            double ld = bce_elem(a, x);
            double sig = a >= 0 ? 1 / (1 + exp(-(double)a)) : exp((double)a) / (1 + exp((double)a));
            snprintf(label, sizeof label, "bce a=%g x=%g", a, x);
            CHECK(isfinite(l));
            CHECK(isfinite(da));
            /* One term of magnitude |a| (and x|a|) formed in float: 2 eps (|a| + 1) absolute. */
            CHECK_CLOSE(label, l, ld, 0, 2 * FLT_EPSILON * (fabs(a) + 1));
            CHECK_CLOSE(label, row, ld, 0, 2 * FLT_EPSILON * (fabs(a) + 1));
            /* The gradient sigmoid(a) - x is within [-1, 1]: absolute 1e-7. */
            CHECK_CLOSE(label, da, sig - x, 0, 1e-7);
            /* And the loss is never negative (softplus(a) >= x a for x in [0, 1]). */
            CHECK_CMP_DBL(l, >=, 0.0);
        }
    /* A whole row of extreme logits with targets that match: loss ~ 0, not NaN. */
    float a[4] = { 1000, -1000, 60, -60 }, x[4] = { 1, 0, 1, 0 }, da[4];
    double l = vae_bce_logits_loss(a, x, da, 1, 4, 1.0f, NULL);
    CHECK(isfinite(l));
    CHECK_CLOSE("bce matched extremes", l, 0.0, 0, 1e-20);
    for (int k = 0; k < 4; k++) CHECK_CLOSE("bce matched extremes da", da[k], 0.0, 0, 1e-20);
}

/*
 * A NaN or infinite logit must make the loss non-finite (training detects a
 * bad step from the loss), whether it falls in a vector block or the tail.
 */
static void test_nonfinite(void)
{
    enum { D = 37 };
    const float bad[3] = { NAN, INFINITY, -INFINITY };
    float a[D], x[D], da[D];
    for (int b = 0; b < 3; b++)
        for (int pos = 0; pos < D; pos += 12) {
            for (int j = 0; j < D; j++) {
                a[j] = 0.1f * (float)(j % 7) - 0.3f;
                x[j] = 0.5f;
            }
            a[pos] = bad[b];
            double row = 0.0;
            double l = vae_bce_logits_loss(a, x, da, 1, D, 1.0f, &row);
            if (isfinite(l)) fprintf(stderr, "bce with logit %g at %d: loss %g\n", a[pos], pos, l);
            CHECK(!isfinite(l));
            CHECK(!isfinite(row));
            l = vae_mse_loss(a, x, da, 1, D, 1.0f, NULL);
            CHECK(!isfinite(l));
        }
}

/* ---------------------------------------------------------------------- MSE */

static double mse_ref(const double *a, const double *x, int B, int D, double *row)
{
    double t = 0;
    for (int r = 0; r < B; r++) {
        double s = 0;
        for (int j = 0; j < D; j++) {
            double d = x[(size_t)r * D + j] - a[(size_t)r * D + j];
            s += d * d;
        }
        if (row) row[r] = s;
        t += s;
    }
    return t;
}

static void test_mse_shape(int B, int D)
{
    char label[96];
    size_t n = (size_t)B * D;
    float *a = fmalloc(n), *x = fmalloc(n), *da = fmalloc(n);
    double *ad = dmalloc(n), *xd = dmalloc(n), *row = dmalloc(B), *rowd = dmalloc(B);
    fill(a, n, -2, 2);
    fill(x, n, -2, 2);
    to_double(a, ad, n);
    to_double(x, xd, n);
    const float scale = 0.43f;

    /* Forward: row sums of D squares <= 16 in float: 2 eps * 16 * D * D absolute per row. */
    for (int r = 0; r < B; r++) row[r] = -2.0;
    for (size_t i = 0; i < n; i++) da[i] = 777.0f;
    double tot = vae_mse_loss(a, x, da, B, D, scale, row);
    double totd = mse_ref(ad, xd, B, D, rowd);
    double atol = 2 * FLT_EPSILON * 16.0 * D * D;
    snprintf(label, sizeof label, "mse forward B=%d D=%d", B, D);
    CHECK_CLOSE(label, tot, totd, 0, atol * B);
    for (int r = 0; r < B; r++) CHECK_CLOSE(label, row[r] + 2.0, rowd[r], 0, atol);
    CHECK_CLOSE(label, vae_mse_loss(a, x, NULL, B, D, scale, NULL), totd, 0, atol * B);

    /* Backward: da = scale * 2 (a - x), three roundings: rtol 1e-6, atol 1e-7. */
    snprintf(label, sizeof label, "mse da B=%d D=%d", B, D);
    for (size_t k = 0; k < n; k++) {
        double keep = ad[k];
        ad[k] = keep + FD_H;
        double lp = mse_ref(ad, xd, B, D, NULL);
        ad[k] = keep - FD_H;
        double lm = mse_ref(ad, xd, B, D, NULL);
        ad[k] = keep;
        CHECK_CLOSE(label, da[k], scale * (lp - lm) / (2 * FD_H), 1e-6, 1e-7);
    }

    free(a), free(x), free(da), free(ad), free(xd), free(row), free(rowd);
}

/* ---------------------------------------------------------------------- sigmoid */

static void test_sigmoid(void)
{
    static const float av[] = { 0, 1e-8f, -1e-8f, 0.5f, -0.5f, 3, -3, 17, -17, 30, -30,
                                88, -88, 89, -89, 104, -104, 1000, -1000, INFINITY, -INFINITY };
    enum { N = sizeof av / sizeof av[0] };
    float y[N];
    vae_sigmoid(av, y, N);
    for (int i = 0; i < N; i++) {
        double a = av[i];
        double ref = a >= 0 ? 1 / (1 + exp(-a)) : exp(a) / (1 + exp(a));
        char label[64];
        snprintf(label, sizeof label, "sigmoid(%g)", a);
        CHECK(isfinite(y[i]));
        CHECK(y[i] >= 0.0f && y[i] <= 1.0f);
        /*
         * A few roundings of values in (0, 1]: relative 1e-6, with an absolute
         * floor of 2 FLT_MIN: below the normal float range (|a| > 87) a result
         * of 0 or of the smallest normal floats are equally good answers.
         */
        CHECK_CLOSE(label, y[i], ref, 1e-6, 2 * FLT_MIN);
    }
}

/* ---------------------------------------------------------------------- main */

/*
 * The losses' values do not depend on whether their gradient is asked for:
 * bit for bit, over many rows and widths (the loop that writes the gradient
 * once rounded a multiply-add differently, FMA-contracted, from the one that
 * does not; a pass with backward then reported another loss than one without).
 */
static void test_loss_without_gradient(void)
{
    static const int widths[] = { 1, 7, 31, 40, 98, 784 };
    for (size_t w = 0; w < sizeof widths / sizeof widths[0]; w++) {
        const int B = 9, D = widths[w];
        float *a = fmalloc((size_t)B * D), *x = fmalloc((size_t)B * D), *da = fmalloc((size_t)B * D);
        double r1[9] = { 0 }, r2[9] = { 0 };
        for (int rep = 0; rep < 20; rep++) {
            fill(a, (size_t)B * D, -4.0f, 4.0f);
            fill(x, (size_t)B * D, 0.0f, 1.0f);
            double with = vae_bce_logits_loss(a, x, da, B, D, 0.5f, NULL), without = vae_bce_logits_loss(a, x, NULL, B, D, 0.5f, NULL);
            CHECK_CMP_DBL(with, ==, without);
            fill(x, (size_t)B * D, -1.5f, 1.5f);
            memset(r1, 0, sizeof r1);
            memset(r2, 0, sizeof r2);
            with = vae_mse_loss(a, x, da, B, D, 0.5f, r1);
            without = vae_mse_loss(a, x, NULL, B, D, 0.5f, r2);
            CHECK_CMP_DBL(with, ==, without);
            for (int r = 0; r < B; r++) CHECK_CMP_DBL(r1[r], ==, r2[r]);
        }
        free(a);
        free(x);
        free(da);
    }
}

/* Free bits: the rows whose KL is above F get vae_kl_loss's gradient, the others none; the KL itself is reported. */
static void test_kl_free_bits(void)
{
    enum { B = 6, Z = 5 };
    float mulv[B * 2 * Z], d1[B * 2 * Z] = { 0 }, d2[B * 2 * Z] = { 0 };
    double k1[B], k2[B];
    fill(mulv, B * 2 * Z, -1.5f, 1.5f);
    double t1 = vae_kl_loss(mulv, d1, B, Z, 0.5f, k1);
    double sorted[B];
    memcpy(sorted, k1, sizeof sorted);
    for (int i = 0; i < B; i++)
        for (int j = i + 1; j < B; j++)
            if (sorted[j] < sorted[i]) {
                double t = sorted[i];
                sorted[i] = sorted[j];
                sorted[j] = t;
            }
    const float F = (float)(0.5 * (sorted[B / 2 - 1] + sorted[B / 2])); /* half the rows under it */
    double t2 = vae_kl_free_bits_loss(mulv, d2, B, Z, 0.5f, F, k2);
    CHECK_CMP_DBL(t2, ==, t1);
    int under = 0;
    for (int r = 0; r < B; r++) {
        CHECK_CMP_DBL(k2[r], ==, k1[r]);
        under += k1[r] <= F;
        for (int j = 0; j < 2 * Z; j++) {
            float want = k1[r] > F ? d1[r * 2 * Z + j] : 0.0f;
            CHECK_CMP_DBL(d2[r * 2 * Z + j], ==, want);
        }
    }
    CHECK_EQ(under, B / 2);
}

/* ---------------------------------------------------------------------- softmax cross-entropy */

/* Double reference: sum over rows of log sum_k exp(a_k) - a_y (log-sum-exp); row[B] gets each row's value. */
static double xent_ref(const double *a, const int *y, int B, int K, double *row)
{
    double t = 0;
    for (int r = 0; r < B; r++) {
        const double *ar = a + (size_t)r * K;
        double m = ar[0], s = 0;
        for (int k = 1; k < K; k++) m = fmax(m, ar[k]);
        for (int k = 0; k < K; k++) s += exp(ar[k] - m);
        double l = m + log(s) - ar[y[r]];
        if (row) row[r] = l;
        t += l;
    }
    return t;
}

static void test_xent_shape(int B, int K, float amp)
{
    char label[96];
    size_t n = (size_t)B * K;
    float *a = fmalloc(n), *da = fmalloc(n), *da2 = fmalloc(n);
    double *ad = dmalloc(n), *row = dmalloc(B), *rowd = dmalloc(B), *wrong = dmalloc(B);
    int *y = calloc((size_t)B, sizeof(int));
    fill(a, n, -amp, amp);
    for (int r = 0; r < B; r++) y[r] = (int)(next_u64() % (uint64_t)K);
    to_double(a, ad, n);
    const float scale = 0.37f;

    /*
     * Forward: the row's sum of exponentials and its logarithm in double
     * from float logits: the result is the reference up to double rounding
     * (1e-12 relative of m + |a_y| is ample).
     */
    double totd = xent_ref(ad, y, B, K, rowd);
    for (int r = 0; r < B; r++) row[r] = 1.0; /* row_loss is added to */
    for (size_t i = 0; i < n; i++) da[i] = 777.0f; /* da is overwritten */
    double tot = vae_softmax_xent_loss(a, y, da, B, K, scale, row, wrong);
    snprintf(label, sizeof label, "xent forward B=%d K=%d amp=%g", B, K, amp);
    CHECK(isfinite(tot));
    CHECK_CLOSE(label, tot, totd, 1e-12, 1e-12);
    for (int r = 0; r < B; r++) {
        CHECK_CLOSE(label, row[r] - 1.0, rowd[r], 1e-12, 1e-12);
        CHECK_CMP_DBL(rowd[r], >=, 0.0);
        /* wrong: the first largest logit is not at y. */
        int best = 0;
        for (int k = 1; k < K; k++)
            if (a[(size_t)r * K + k] > a[(size_t)r * K + best]) best = k;
        CHECK_CMP_DBL(wrong[r], ==, best != y[r] ? 1.0 : 0.0);
    }
    CHECK_CLOSE(label, vae_softmax_xent_loss(a, y, NULL, B, K, scale, NULL, NULL), totd, 1e-12, 1e-12);

    /*
     * Backward: da = scale (softmax(a) - onehot(y)), computed in double and
     * rounded to float: rtol 1e-6 and atol 1e-8 against the central
     * difference of the double reference.
     */
    snprintf(label, sizeof label, "xent da B=%d K=%d amp=%g", B, K, amp);
    double dsum = 0;
    for (size_t k = 0; k < n; k++) {
        double keep = ad[k];
        ad[k] = keep + FD_H;
        double lp = xent_ref(ad, y, B, K, NULL);
        ad[k] = keep - FD_H;
        double lm = xent_ref(ad, y, B, K, NULL);
        ad[k] = keep;
        CHECK(isfinite(da[k]));
        CHECK_CLOSE(label, da[k], scale * (lp - lm) / (2 * FD_H), 1e-6, 1e-8);
        dsum += da[k];
    }
    /* Each row's gradient sums to 0 (softmax sums to 1). */
    CHECK_CLOSE(label, dsum, 0.0, 0, 1e-6 * B);
    memcpy(da2, da, n * sizeof(float));
    vae_softmax_xent_loss(a, y, da, B, K, scale, NULL, NULL);
    CHECK(memcmp(da, da2, n * sizeof(float)) == 0);
    free(a), free(da), free(da2), free(ad), free(row), free(rowd), free(wrong), free(y);
}

/* Logits where exp overflows a float (and a double beyond 709), ties, and a NaN logit. */
static void test_xent_extremes(void)
{
    /* Row 0: the class far ahead: loss ~ 0. Row 1: the class far behind: loss = the gap. Row 2: a tie. */
    float a[3 * 3] = { 1000, -1000, 0, 1000, 0, -1000, 5, 5, 5 };
    int y[3] = { 0, 2, 1 };
    float da[9];
    double row[3] = { 0, 0, 0 }, wrong[3];
    double l = vae_softmax_xent_loss(a, y, da, 3, 3, 1.0f, row, wrong);
    CHECK(isfinite(l));
    CHECK_CLOSE("xent far ahead", row[0], 0.0, 0, 1e-12);
    CHECK_CLOSE("xent far behind", row[1], 2000.0, 1e-12, 0);
    CHECK_CLOSE("xent tie", row[2], log(3.0), 1e-12, 0);
    for (int k = 0; k < 9; k++) CHECK(isfinite(da[k]));
    CHECK_CLOSE("xent far behind da", da[3], 1.0, 0, 1e-7);
    CHECK_CLOSE("xent far behind da", da[5], -1.0, 0, 1e-7);
    CHECK_CMP_DBL(wrong[0], ==, 0.0);
    CHECK_CMP_DBL(wrong[1], ==, 1.0);
    CHECK_CMP_DBL(wrong[2], ==, 1.0); /* a tie goes to the first: class 0, not 1 */
    /* A NaN logit makes the loss non-finite (training skips the step) and the row wrong. */
    for (int pos = 0; pos < 3; pos++) {
        float b[3] = { 1, 2, 3 };
        int c = 2;
        double w = 0;
        b[pos] = NAN;
        CHECK(!isfinite(vae_softmax_xent_loss(b, &c, NULL, 1, 3, 1.0f, NULL, &w)));
        if (pos == 0) CHECK_CMP_DBL(w, ==, 1.0);
    }
}

/*
 * vmath.h's functions against libm in double, on a dense grid and at the
 * edges: within 3 float ulp (relative 3.6e-7) where the result is normal;
 * exp clamps its argument to [-87, 88]; NaN stays NaN.
 */
static void test_vmath(void)
{
    const double ulp3 = 3.0 * FLT_EPSILON;
    double worst_exp = 0, worst_tanh = 0, worst_log1p = 0;
    for (int i = 0; i <= 1750000; i++) {
        float x = (float)(-87.0 + 1e-4 * i); /* [-87, 88] */
        double want = exp((double)x), got = vm_exp(x);
        worst_exp = fmax(worst_exp, fabs(got - want) / want);
    }
    CHECK_CMP_DBL(worst_exp, <=, ulp3);
    /* tanh: both sides of the switch at 0.625, tiny values (exact: tanh x = x there in float) and saturation */
    for (int i = -400000; i <= 400000; i++) {
        float x = (float)(5e-5 * i); /* [-20, 20] */
        if (x == 0.0f) continue;
        double want = tanh((double)x), got = vm_tanh(x);
        worst_tanh = fmax(worst_tanh, fabs(got - want) / fabs(want));
    }
    static const float tiny[] = { 1e-30f, 1e-12f, 1e-7f, 3e-4f, 0.6249999f, 0.625f, 0.6250001f, 9.0f, 50.0f, 1e30f };
    for (size_t i = 0; i < sizeof tiny / sizeof tiny[0]; i++)
        for (int sgn = -1; sgn <= 1; sgn += 2) {
            float x = (float)sgn * tiny[i];
            double want = tanh((double)x), got = vm_tanh(x);
            worst_tanh = fmax(worst_tanh, fabs(got - want) / fabs(want));
        }
    CHECK_CMP_DBL(worst_tanh, <=, ulp3);
    CHECK(vm_tanh(0.0f) == 0.0f && vm_tanh(INFINITY) == 1.0f && vm_tanh(-INFINITY) == -1.0f);
    for (int i = 0; i <= 1000000; i++) {
        float e = (float)(1e-6 * i); /* [0, 1] */
        double want = log1p((double)e), got = vm_log1p_unit(e);
        if (e > 0.0f) worst_log1p = fmax(worst_log1p, fabs(got - want) / want);
        else CHECK(got == 0.0);
    }
    CHECK_CMP_DBL(worst_log1p, <=, ulp3);
    /* the clamp, and NaN */
    CHECK(vm_exp(-1000.0f) == vm_exp(-87.0f) && vm_exp(-87.0f) > 0.0f && vm_exp(-87.0f) < 2e-38f);
    CHECK(vm_exp(1000.0f) == vm_exp(88.0f) && isfinite(vm_exp(88.0f)) && vm_exp(88.0f) > 1.6e38f);
    CHECK(isnan(vm_exp(NAN)) && isnan(vm_tanh(NAN)));
    printf("vmath: largest relative error exp %.3g, tanh %.3g, log1p %.3g (float ulp %.3g)\n", worst_exp, worst_tanh,
           worst_log1p, (double)FLT_EPSILON);
}

int main(void)
{
    static const int lin[][3] = { { 3, 5, 7 }, { 1, 1, 1 }, { 4, 13, 2 }, { 2, 9, 17 }, { 5, 3, 11 } };
    for (size_t i = 0; i < sizeof lin / sizeof lin[0]; i++) {
        test_linear_shape(lin[i][0], lin[i][1], lin[i][2], VAE_ACT_NONE);
        test_linear_shape(lin[i][0], lin[i][1], lin[i][2], VAE_ACT_RELU);
    }
    test_relu_backward();
    test_leaky_relu();

    static const int bz[][2] = { { 3, 5 }, { 1, 1 }, { 4, 7 }, { 2, 3 } };
    for (size_t i = 0; i < sizeof bz / sizeof bz[0]; i++) {
        test_reparam_shape(bz[i][0], bz[i][1], 1);
        test_reparam_shape(bz[i][0], bz[i][1], 0);
        test_kl_shape(bz[i][0], bz[i][1]);
    }

    /* D = 31 and 40 also cover row sums over vector-width blocks plus a tail. */
    static const int bd[][2] = { { 3, 7 }, { 1, 1 }, { 5, 13 }, { 2, 31 }, { 3, 40 } };
    for (size_t i = 0; i < sizeof bd / sizeof bd[0]; i++) {
        test_bce_shape(bd[i][0], bd[i][1], 4.0f);
        test_bce_shape(bd[i][0], bd[i][1], 30.0f); /* mostly saturated logits */
        test_mse_shape(bd[i][0], bd[i][1]);
    }
    test_bce_large();
    test_loss_without_gradient();
    test_kl_free_bits();
    test_nonfinite();
    test_sigmoid();
    static const int bk[][2] = { { 3, 10 }, { 1, 2 }, { 5, 7 }, { 2, 1 } };
    for (size_t i = 0; i < sizeof bk / sizeof bk[0]; i++) {
        test_xent_shape(bk[i][0], bk[i][1], 3.0f);
        test_xent_shape(bk[i][0], bk[i][1], 40.0f); /* one class dominates */
    }
    test_xent_extremes();
    test_vmath();

    printf("test_ops: %d checks, %d failed\n", g_checks, g_failures);
    return g_failures ? 1 : 0;
}
