/*
 * latent.h: the latent-space tools (encode, anomaly scores, per-dimension
 * KL, interpolation paths, ROC AUC) as library functions; the CLI wraps them.
 *
 * Work over a data set is split across ranks in whole chunks of
 * VAE_LATENT_CHUNK rows aligned to the start of the data, so every row is
 * computed in the same batch composition whatever the rank count, and the
 * results do not depend on P.
 */
#ifndef MPIVAE_LATENT_H
#define MPIVAE_LATENT_H

#include "mpivae/dataset.h"
#include "mpivae/model.h"

#include <mpi.h>
#include <stdint.h>

#define VAE_LATENT_CHUNK 256

/* Rows [lo, hi) of n that rank r of P handles: whole chunks (shard.h). */
void vae_latent_share(int64_t n, int P, int r, int64_t *lo, int64_t *hi);

/* mu[hi-lo, Z] and logvar[hi-lo, Z] of rows [lo, hi) (lo chunk-aligned). m->max_batch >= VAE_LATENT_CHUNK. */
int vae_latent_encode(vae_model *m, vae_data *d, int64_t lo, int64_t hi, float *mu, float *logvar);

/* Per-row terms of the model's family with every latent at its mean, rows [lo, hi): terms[n_terms][hi - lo]. */
int vae_latent_score(vae_model *m, vae_data *d, int64_t lo, int64_t hi, double *terms);

/* kl_dim[Z] += the KL of each latent dimension summed over rows [lo, hi). */
int vae_latent_kl_per_dim(vae_model *m, vae_data *d, int64_t lo, int64_t hi, double *kl_dim);

/* The threshold of active units (Burda et al. 2015): Cov_x(E_q[z_j | x]) > 0.01. */
#define VAE_ACTIVE_THRESHOLD 0.01

/*
 * Active units (Burda et al. 2015). For each latent group g of m
 * (m->latents[g]), active[g] = the number of its dimensions j with
 *   Var_x(mu_j(x)) = mean_x(mu_j^2) - mean_x(mu_j)^2 > threshold
 * over the first `limit` rows of d (0: all), mu = vae_model_encode's
 * posterior means. Rows are shared across comm (vae_latent_share, in batches
 * of at most m->max_batch); each rank sums mu and mu^2 in double, and one
 * MPI_Allreduce adds them, so the count does not depend on the rank count
 * (up to summation order within a variance at the threshold). Collective;
 * returns 0 or a negative status (reported once).
 */
int vae_latent_active_units(vae_model *m, vae_data *d, MPI_Comm comm, int64_t limit, double threshold, int *active);

/*
 * How many of n dimensions have a variance above threshold, from their sums
 * over `rows` values: sum[j] of x, sumsq[j] of x^2 (population variance
 * sumsq/rows - (sum/rows)^2). 0 when rows <= 0.
 */
int vae_active_count(const double *sum, const double *sumsq, int n, double rows, double threshold);

/*
 * K points from a to b (K >= 2, both ends included) into z[K, Z]: linear, or
 * spherical (slerp on the great circle through a and b, with norms
 * interpolated linearly; linear when a and b are parallel).
 */
void vae_latent_path(const float *a, const float *b, int Z, int K, int spherical, float *z);

/* ROC AUC of scores for "positive means anomalous" (ties count half). Returns NaN without both classes or with a NaN score. */
double vae_roc_auc(const float *score, const unsigned char *positive, int64_t n);

/* Gathers each rank's rows [lo, hi) of width w floats into all[n, w] on rank 0 (MPI_Gatherv). */
int vae_gather_rows(const float *mine, int64_t lo, int64_t hi, int w, float *all, int64_t n, MPI_Comm comm);

/* Writes a float32 dataset [d0, d1] (d1 = 0 for 1-D), chunked, to an open-or-new HDF5 file. */
int vae_h5_write_matrix(const char *path, const char *dset, const float *v, int64_t d0, int64_t d1);

/* Sets the float64 scalar attribute name of dataset dset in the HDF5 file at path (replacing one). */
int vae_h5_write_attr(const char *path, const char *dset, const char *name, double v);

#endif
