/*
 * iw.h: the importance-weighted bound on log p(x) (Burda et al. 2015):
 *
 *   log p(x) >= L_K = E[ log (1/K) sum_k w_k ],  w_k = p(x, z_k) / q(z_k | x),
 *
 * with z_k drawn from q(z | x) with noise keyed by (seed, row, k), so the
 * estimate of each row is fixed by the seed. L_1 is the single-sample ELBO
 * (with a sampled KL); L_K rises towards log p(x) as K grows.
 *
 * The rows are split over ranks in fixed chunks of VAE_IW_CHUNK rows
 * (shard.h); each chunk's sums are taken in the same order on whatever rank
 * holds it and added up chunk by chunk, so the result is the same, bit for
 * bit, on any number of ranks. Each row's K samples go through the model in
 * batches of at most max_batch, and the log-sum-exp runs in double, so
 * memory does not grow with K.
 */
#ifndef MPIVAE_IW_H
#define MPIVAE_IW_H

#include "mpivae/dataset.h"
#include "mpivae/model.h"

#include <mpi.h>
#include <stdint.h>

#define VAE_IW_CHUNK 64

typedef struct vae_iw_result {
    double iw;      /* L_K, nats per row (mean over rows) */
    double elbo1;   /* L_1 with the first sample of each row (k = 0), nats per row */
    double bpd;     /* -L_K / (D ln 2): bits per dimension */
    int64_t rows;
    int K;
} vae_iw_result;

/*
 * L_K over the first `limit` rows of d (0: all), shared across comm. The
 * model's family must have log_weights (family.h). Returns 0 or a negative
 * status (reported once).
 */
int vae_evaluate_iw(vae_model *m, vae_data *d, MPI_Comm comm, uint64_t seed, int K, int64_t limit, vae_iw_result *res);

/*
 * L_K of one row of d (its noise keyed by seed, row and k, as above) into
 * *lk; logw[K] is scratch. The family must have log_weights. 0 or a negative
 * status (reported).
 */
int vae_iw_row(vae_model *m, vae_data *d, uint64_t seed, int K, int64_t row, double *logw, double *lk);

/* The log-mean-exp of one row's log weights: log (1/K) sum_k exp(logw_k). */
double vae_iw_log_mean_exp(const double *logw, int K);

#endif
