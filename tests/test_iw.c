/*
 * test_iw.c: the importance weights of the layer-stack families and the
 * log-mean-exp of the IW bound (iw.h), in process, on a model small enough
 * to integrate exactly: input 1x1x2 (binary pixels), latent 1, hidden 4.
 *
 * (a) log_weights against a double-precision computation of
 *     log p(x|z) + log N(z; 0, 1) - log N(z; mu, sigma^2) from the model's
 *     own encoder and decoder, for bce and for mse (a Gaussian decoder of
 *     variance 1/2): within 1e-4 nats.
 * (b) For each of the four binary rows, log p(x) by quadrature over z
 *     (trapezoid on [-12, 12], step 1e-3, in log space): the IW bound with
 *     K = 20000 agrees with it within 4 of its standard errors (estimated
 *     from the weights; each below 0.05 nats) plus 1e-3, the mean
 *     single-sample bound (the ELBO) lies below it, and L_1 averages below
 *     L_20000.
 * (c) vae_iw_log_mean_exp is exact and stable: log-weights of -1000 and 1000
 *     give -1000 and 1000, and {0, log 3} gives log 2.
 */
#define _GNU_SOURCE
#include "mpivae/iw.h"
#include "mpivae/model.h"
#include "mpivae/rng.h"
#include "mpivae/status.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

static void make(vae_model *m, int loss, int max_batch)
{
    vae_arch a;
    memset(&a, 0, sizeof a);
    a.kind = VAE_MODEL_MLP;
    a.C = 1;
    a.Hh = 1;
    a.W = 2;
    a.n_hidden = 1;
    a.hidden[0] = 4;
    a.latent = 1;
    a.loss = loss;
    CHECK_EQ(vae_model_init(m, &a, max_batch), 0);
    vae_model_init_params(m, 11);
    /* Larger weights than the default init, so that z matters and the posterior is not the prior. */
    for (size_t i = 0; i < m->n_params; i++) m->params[i] *= 3.0f;
}

/* log p(x|z) of the decoder at z, in double from the decoder's float output (logits under bce). */
static double log_lik(vae_model *m, const float *x, float z, int loss)
{
    float img[2];
    vae_model_decode(m, &z, 1, img);
    const float *logits = m->act[m->n_enc + m->n_dec]; /* the decoder's last output, before the sigmoid */
    double l = 0.0;
    for (int i = 0; i < 2; i++) {
        if (loss == VAE_LOSS_BCE) {
            double a = logits[i], softplus = a > 0 ? a + log1p(exp(-a)) : log1p(exp(a));
            l += x[i] * a - softplus; /* x log sigmoid(a) + (1 - x) log(1 - sigmoid(a)) */
        } else {
            l += -((double)x[i] - img[i]) * ((double)x[i] - img[i]);
        }
    }
    return loss == VAE_LOSS_MSE ? l - log(M_PI) : l; /* (D/2) ln(pi), D = 2 */
}

static void check_weights(int loss)
{
    vae_model m;
    make(&m, loss, 8);
    const float rows[4][2] = { { 1, 0 }, { 0, 1 }, { 1, 1 }, { 0, 0 } };
    float eps[8];
    vae_rng_normal(3, VAE_RNG_IW, 0, 0, eps, 8);
    double logw[8];
    for (int r = 0; r < 4; r++) {
        float *x = vae_model_input(&m);
        for (int i = 0; i < 8; i++) memcpy(x + 2 * i, rows[r], sizeof rows[r]);
        /* With the encoder run once (one_row), first after the previous row's: the same weights. */
        double logw1[8];
        m.fam->log_weights(&m, eps, 8, 1, logw1);
        m.fam->log_weights(&m, eps, 8, 0, logw);
        for (int i = 0; i < 8; i++) CHECK_CLOSE("log_weights one_row", logw1[i], logw[i], 1e-6, 1e-6);
        float mu, lv;
        vae_model_encode(&m, 1, &mu, &lv);
        for (int i = 0; i < 8; i++) {
            double sd = exp(0.5 * lv), z = mu + sd * eps[i];
            double want = log_lik(&m, rows[r], (float)z, loss) + (-0.5 * z * z) - (-0.5 * eps[i] * eps[i] - 0.5 * lv);
            CHECK_CLOSE("log_weights", logw[i], want, 0, 1e-4);
        }
    }
    vae_model_free(&m);
}

static void check_bound(void)
{
    const int K = 20000, NB = 500;
    vae_model m;
    make(&m, VAE_LOSS_BCE, NB);
    const float rows[4][2] = { { 1, 0 }, { 0, 1 }, { 1, 1 }, { 0, 0 } };
    double *logw = malloc((size_t)K * sizeof(double));
    float *eps = malloc((size_t)NB * sizeof(float));
    for (int r = 0; r < 4; r++) {
        /* Exact log p(x): trapezoid over z in log space. */
        double mx = -INFINITY;
        const int NZ = 24001;
        double *lj = malloc((size_t)NZ * sizeof(double));
        for (int i = 0; i < NZ; i++) {
            double z = -12.0 + 1e-3 * i;
            lj[i] = log_lik(&m, rows[r], (float)z, VAE_LOSS_BCE) - 0.5 * z * z - 0.5 * log(2 * M_PI);
            if (lj[i] > mx) mx = lj[i];
        }
        double s = 0.0;
        for (int i = 0; i < NZ; i++) s += (i == 0 || i == NZ - 1 ? 0.5 : 1.0) * exp(lj[i] - mx);
        double exact = mx + log(s * 1e-3);
        free(lj);
        /* K importance samples, in batches of NB copies of the row. */
        float *x = vae_model_input(&m);
        for (int i = 0; i < NB; i++) memcpy(x + 2 * i, rows[r], sizeof rows[r]);
        for (int k0 = 0; k0 < K; k0 += NB) {
            for (int i = 0; i < NB; i++) vae_rng_normal(5, VAE_RNG_IW, (uint64_t)r, (uint64_t)(k0 + i), eps + i, 1);
            m.fam->log_weights(&m, eps, NB, 1, logw + k0);
        }
        double lk = vae_iw_log_mean_exp(logw, K), elbo = 0.0, l1 = 0.0, m1 = 0.0, m2 = 0.0;
        for (int k = 0; k < K; k++) elbo += logw[k] / K;
        /* The standard error of L_K: that of the mean of w, relative to it (w scaled by exp(-L_K)). */
        for (int k = 0; k < K; k++) {
            double w = exp(logw[k] - lk);
            m1 += w / K;
            m2 += w * w / K;
        }
        double se = sqrt((m2 - m1 * m1) / K) / m1;
        /* L_1 on average = the ELBO; L_K for K = 20000 near log p(x). */
        for (int k = 0; k < K; k++) l1 += vae_iw_log_mean_exp(logw + k, 1) / K;
        printf("row (%g, %g): log p(x) %.5f (quadrature), L_20000 %.5f (standard error %.5f), ELBO %.5f\n", rows[r][0],
               rows[r][1], exact, lk, se, elbo);
        CHECK(fabs(lk - exact) <= 4.0 * se + 1e-3);
        CHECK(se < 0.05); /* a window of at most 0.2 nats: narrow beside the ELBO gaps of these rows (0.08 to 20 nats) */
        CHECK(elbo < exact);
        CHECK(l1 < lk);
        CHECK_CLOSE("L_1 mean = ELBO", l1, elbo, 1e-12, 1e-12);
    }
    free(logw);
    free(eps);
    vae_model_free(&m);
}

int main(void)
{
    check_weights(VAE_LOSS_BCE);
    check_weights(VAE_LOSS_MSE);
    check_bound();
    const double big[2] = { -1000, -1000 }, huge[2] = { 1000, 1000 }, two[2] = { 0, log(3.0) };
    CHECK_CLOSE("lme -1000", vae_iw_log_mean_exp(big, 2), -1000.0, 0, 1e-12);
    CHECK_CLOSE("lme 1000", vae_iw_log_mean_exp(huge, 2), 1000.0, 0, 1e-12);
    CHECK_CLOSE("lme {0, log 3}", vae_iw_log_mean_exp(two, 2), log(2.0), 0, 1e-12);
    printf("test_iw: %d checks, %d failures\n", g_checks, g_failures);
    return g_failures != 0;
}
