/*
 * ops.h: the numerical ops of the VAE, as forward/backward pairs.
 *
 * Layouts are row-major with the batch first, PyTorch's conventions for
 * weights. Backward functions ADD (+=) into parameter gradients; activation
 * gradients (dX) are overwritten. Every dense product goes through
 * cblas_sgemm with transposes expressed as flags, never as copies.
 */
#ifndef MPIVAE_OPS_H
#define MPIVAE_OPS_H

#include <stddef.h>

enum vae_act { VAE_ACT_NONE = 0, VAE_ACT_RELU = 1 };

/* Y[B,out] = act(X[B,in] W[out,in]^T + b[out]). */
void vae_linear_forward(const float *X, const float *W, const float *b, float *Y, int B, int in,
                        int out, int act);

/*
 * Given dY[B,out] (already multiplied by act'), dW[out,in] += dY^T X,
 * db[out] += sum_B dY, and dX[B,in] = dY W when dX is not NULL.
 */
void vae_linear_backward(const float *X, const float *W, const float *dY, float *dX, float *dW,
                         float *db, int B, int in, int out);

/* dY[n] *= (Y[n] > 0): ReLU backward through the ReLU's output Y. */
void vae_relu_backward(const float *Y, float *dY, size_t n);

/* y[n] = x[n] > 0 ? x[n] : slope * x[n] (in place when y == x); 0 < slope < 1. */
void vae_leaky_relu(const float *x, float *y, size_t n, float slope);

/* dY[n] *= (Y[n] > 0 ? 1 : slope): LeakyReLU backward through its output Y (same sign as its input). */
void vae_leaky_relu_backward(const float *Y, float *dY, size_t n, float slope);

/*
 * mulv[B,2Z] holds mu (first Z) and logvar (last Z) per row.
 * z[B,Z] = mu + exp(logvar / 2) * eps; eps == NULL means z = mu.
 */
void vae_reparam_forward(const float *mulv, const float *eps, float *z, int B, int Z);

/* dmulv[B,2Z] += dz through the reparameterisation (eps == NULL: z = mu). */
void vae_reparam_backward(const float *mulv, const float *eps, const float *dz, float *dmulv,
                          int B, int Z);

/*
 * KL(q(z|x) || N(0, I)) = -1/2 sum_j (1 + lv_j - mu_j^2 - exp(lv_j)) per row.
 * Returns the sum over rows; row_kl[B] gets each row's value when not NULL.
 * When dmulv is not NULL, dmulv += scale * dKL/dmulv (dmu = mu,
 * dlv = (exp(lv) - 1) / 2).
 */
double vae_kl_loss(const float *mulv, float *dmulv, int B, int Z, float scale, double *row_kl);

/*
 * Capacity-controlled KL (Burgess et al. 2018), per row: the objective term
 * is |KL_r - C| and its gradient scale * sign(KL_r - C) * dKL_r/dmulv is
 * added into dmulv (when not NULL). Returns the sum of the rows' KL (not of
 * the penalty); row_kl as in vae_kl_loss.
 */
double vae_kl_capacity_loss(const float *mulv, float *dmulv, int B, int Z, float scale, float C,
                            double *row_kl);

/*
 * Free bits per sample (Kingma et al. 2016, taken per row so that it does not
 * depend on how a batch is split): the objective term is max(KL_r, F), whose
 * gradient is scale * dKL_r/dmulv where KL_r > F and 0 elsewhere. Returns the
 * sum of the rows' KL; row_kl as in vae_kl_loss.
 */
double vae_kl_free_bits_loss(const float *mulv, float *dmulv, int B, int Z, float scale, float F, double *row_kl);

/*
 * Bernoulli reconstruction from logits a[B,D] against targets x[B,D] in
 * [0, 1]: per element softplus(a) - x a = max(a, 0) - x a + log1p(exp(-|a|)),
 * summed per row. Returns the sum over all rows; row_loss[B] += each row's
 * value when not NULL. When da is not NULL, da = scale * (sigmoid(a) - x).
 */
double vae_bce_logits_loss(const float *a, const float *x, float *da, int B, int D, float scale,
                           double *row_loss);

/*
 * Gaussian reconstruction: per row sum (x - a)^2 over D. Returns the total;
 * row_loss += per row; da = scale * 2 (a - x) when da is not NULL.
 */
double vae_mse_loss(const float *a, const float *x, float *da, int B, int D, float scale,
                    double *row_loss);

/*
 * Softmax cross-entropy of logits a[B,K] against classes y[B] (each in
 * 0..K-1): per row log sum_k exp(a_k) - a_y, taken as m + log sum_k
 * exp(a_k - m) with m = max_k a_k (log-sum-exp: no overflow for any finite
 * logits). Returns the sum over rows; row_loss[B] += each row's value when
 * not NULL; wrong[B] (when not NULL) gets 1 where the first largest logit
 * is not at y, else 0. When da is not NULL, da = scale * (softmax(a) -
 * onehot(y)) (overwritten).
 */
double vae_softmax_xent_loss(const float *a, const int *y, float *da, int B, int K, float scale, double *row_loss,
                             double *wrong);

/* y[n] = sigmoid(a[n]), numerically safe for large |a|. */
void vae_sigmoid(const float *a, float *y, size_t n);

#endif
