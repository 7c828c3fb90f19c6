/*
 * iw.c: the importance-weighted bound over a data set (see iw.h).
 */
#define _POSIX_C_SOURCE 200809L
#include "mpivae/iw.h"

#include "mpivae/comm.h"
#include "mpivae/rng.h"
#include "mpivae/shard.h"
#include "mpivae/status.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

double vae_iw_log_mean_exp(const double *logw, int K)
{
    double mx = -INFINITY, s = 0.0;
    for (int k = 0; k < K; k++)
        if (logw[k] > mx) mx = logw[k];
    if (!isfinite(mx)) return mx;
    for (int k = 0; k < K; k++) s += exp(logw[k] - mx);
    return mx + log(s / K);
}

/* One row's K log weights into logw[K], in batches of the model's max_batch copies of the row. */
static int row_log_weights(vae_model *m, vae_data *d, int64_t row, uint64_t seed, int K, double *logw)
{
    const int nb = m->max_batch, D = m->D, E = m->noise_dim;
    float *x = vae_model_input(m);
    int rc = vae_data_rows(d, &row, 1, x);
    if (rc) return rc;
    for (int i = 1; i < nb; i++) memcpy(x + (size_t)i * D, x, (size_t)D * sizeof(float));
    for (int k0 = 0; k0 < K; k0 += nb) {
        int b = K - k0 < nb ? K - k0 : nb;
        for (int i = 0; i < b; i++)
            vae_rng_normal(seed, VAE_RNG_IW, (uint64_t)row, (uint64_t)(k0 + i), m->eps + (size_t)i * E, E);
        m->fam->log_weights(m, m->eps, b, 1, logw + k0);
    }
    return VAE_OK;
}

int vae_iw_row(vae_model *m, vae_data *d, uint64_t seed, int K, int64_t row, double *logw, double *lk)
{
    int rc = row_log_weights(m, d, row, seed, K, logw);
    if (rc) return rc;
    *lk = vae_iw_log_mean_exp(logw, K);
    return VAE_OK;
}

int vae_evaluate_iw(vae_model *m, vae_data *d, MPI_Comm comm, uint64_t seed, int K, int64_t limit, vae_iw_result *res)
{
    int rank, P;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &P);
    if (!m->fam->log_weights)
        return vae_error(VAE_EINVAL, "model family '%s' has no importance weights (no IW bound)", m->fam->name);
    const int64_t n = limit > 0 && limit < d->N ? limit : d->N;
    const int64_t nchunks = (n + VAE_IW_CHUNK - 1) / VAE_IW_CHUNK;
    int64_t lo, hi;
    vae_shard(n, P, rank, VAE_IW_CHUNK, &lo, &hi);
    /* Per chunk: the sum of L_K and of L_1 over its rows (0 for the chunks of other ranks). */
    double *sums = calloc((size_t)(2 * nchunks + 1), sizeof(double)), *logw = malloc((size_t)K * sizeof(double));
    vae_defer_begin();
    int rc = sums && logw ? VAE_OK : vae_error(VAE_ENOMEM, "cannot allocate the IW sums (%d samples a row)", K);
    for (int64_t r = lo; r < hi && !rc; r++) {
        rc = row_log_weights(m, d, r, seed, K, logw);
        if (rc) break;
        double lk = vae_iw_log_mean_exp(logw, K);
        if (!isfinite(lk) || !isfinite(logw[0])) {
            rc = vae_error(VAE_EDATA, "row %lld of '%s:%s' has a non-finite importance weight (log w = %g)", (long long)r,
                           d->file, d->dset, !isfinite(lk) ? lk : logw[0]);
            break;
        }
        sums[2 * (r / VAE_IW_CHUNK)] += lk;
        sums[2 * (r / VAE_IW_CHUNK) + 1] += logw[0];
    }
    free(logw);
    rc = vae_agree(rc, comm);
    if (rc) {
        free(sums);
        return rc;
    }
    /* Each chunk on one rank only: the sum over ranks adds zeros to it, exactly. */
    MPI_Allreduce(MPI_IN_PLACE, sums, (int)(2 * nchunks), MPI_DOUBLE, MPI_SUM, comm);
    double iw = 0.0, e1 = 0.0;
    for (int64_t c = 0; c < nchunks; c++) {
        iw += sums[2 * c];
        e1 += sums[2 * c + 1];
    }
    free(sums);
    res->rows = n;
    res->K = K;
    res->iw = iw / (double)n;
    res->elbo1 = e1 / (double)n;
    res->bpd = -res->iw / ((double)m->D * log(2.0));
    return VAE_OK;
}
