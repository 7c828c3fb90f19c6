/*
 * latent.c: encoding, anomaly scores, per-dimension KL, latent paths and ROC
 * AUC (see latent.h).
 */
#define _POSIX_C_SOURCE 200809L
#include "mpivae/latent.h"

#include "mpivae/comm.h"
#include "mpivae/shard.h"
#include "mpivae/status.h"

#include <hdf5.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

void vae_latent_share(int64_t n, int P, int r, int64_t *lo, int64_t *hi) { vae_shard(n, P, r, VAE_LATENT_CHUNK, lo, hi); }

/* Loads the chunk of rows starting at r (at most VAE_LATENT_CHUNK, not past hi) into the model input. */
static int load_chunk(vae_model *m, vae_data *d, int64_t r, int64_t hi, int *b)
{
    int64_t idx[VAE_LATENT_CHUNK];
    *b = (int)(hi - r < VAE_LATENT_CHUNK ? hi - r : VAE_LATENT_CHUNK);
    for (int i = 0; i < *b; i++) idx[i] = r + i;
    return vae_data_rows(d, idx, *b, vae_model_input(m));
}

int vae_latent_encode(vae_model *m, vae_data *d, int64_t lo, int64_t hi, float *mu, float *logvar)
{
    const int Z = m->Z;
    for (int64_t r = lo; r < hi; r += VAE_LATENT_CHUNK) {
        int b, rc = load_chunk(m, d, r, hi, &b);
        if (rc) return rc;
        vae_model_encode(m, b, mu + (size_t)(r - lo) * Z, logvar + (size_t)(r - lo) * Z);
    }
    return VAE_OK;
}

int vae_latent_score(vae_model *m, vae_data *d, int64_t lo, int64_t hi, double *terms)
{
    const int nt = m->n_terms;
    double rows[VAE_MAX_TERMS * VAE_LATENT_CHUNK];
    for (int64_t r = lo; r < hi; r += VAE_LATENT_CHUNK) {
        int b, rc = load_chunk(m, d, r, hi, &b);
        if (rc) return rc;
        vae_pass p = { NULL, b, 1.0f, -1.0f, 1.0f, 0, NULL, rows, 0.0f };
        vae_model_pass(m, &p);
        for (int t = 0; t < nt; t++) memcpy(terms + (size_t)t * (hi - lo) + (r - lo), rows + (size_t)t * b, (size_t)b * sizeof(double));
    }
    return VAE_OK;
}

int vae_latent_kl_per_dim(vae_model *m, vae_data *d, int64_t lo, int64_t hi, double *kl_dim)
{
    const int Z = m->Z;
    float *mus = malloc((size_t)VAE_LATENT_CHUNK * 2 * Z * sizeof(float));
    if (!mus) return vae_error(VAE_ENOMEM, "cannot allocate the means of %d rows", VAE_LATENT_CHUNK);
    for (int64_t r = lo; r < hi; r += VAE_LATENT_CHUNK) {
        int b, rc = load_chunk(m, d, r, hi, &b);
        if (rc) {
            free(mus);
            return rc;
        }
        vae_model_encode(m, b, mus, mus + (size_t)VAE_LATENT_CHUNK * Z);
        for (int i = 0; i < b; i++) {
            const float *mu = mus + (size_t)i * Z, *lv = mus + (size_t)VAE_LATENT_CHUNK * Z + (size_t)i * Z;
            for (int j = 0; j < Z; j++)
                kl_dim[j] += -0.5 * (1.0 + lv[j] - (double)mu[j] * mu[j] - exp((double)lv[j]));
        }
    }
    free(mus);
    return VAE_OK;
}

int vae_active_count(const double *sum, const double *sumsq, int n, double rows, double threshold)
{
    int c = 0;
    for (int j = 0; j < n && rows > 0.0; j++) {
        double mean = sum[j] / rows;
        c += sumsq[j] / rows - mean * mean > threshold;
    }
    return c;
}

int vae_latent_active_units(vae_model *m, vae_data *d, MPI_Comm comm, int64_t limit, double threshold, int *active)
{
    int rank, P;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &P);
    const int Z = m->Z, chunk = m->max_batch < VAE_LATENT_CHUNK ? m->max_batch : VAE_LATENT_CHUNK;
    const int64_t n = limit > 0 && limit < d->N ? limit : d->N;
    int64_t lo, hi, idx[VAE_LATENT_CHUNK];
    vae_latent_share(n, P, rank, &lo, &hi);
    double *s = calloc((size_t)2 * Z + 1, sizeof(double)); /* [sum mu (Z) | sum mu^2 (Z) | rows] */
    float *mu = malloc((size_t)chunk * Z * sizeof(float)); /* [chunk, Z] */
    vae_defer_begin();
    int rc = s && mu ? VAE_OK : vae_error(VAE_ENOMEM, "cannot allocate the posterior means of %d rows", chunk);
    for (int64_t r = lo; r < hi && !rc; r += chunk) {
        int b = (int)(hi - r < chunk ? hi - r : chunk);
        for (int i = 0; i < b; i++) idx[i] = r + i;
        rc = vae_data_rows(d, idx, b, vae_model_input(m));
        if (rc) break;
        vae_model_encode(m, b, mu, NULL);
        for (int i = 0; i < b; i++)
            for (int j = 0; j < Z; j++) {
                double v = mu[(size_t)i * Z + j];
                s[j] += v;
                s[Z + j] += v * v;
            }
        s[2 * Z] += b;
    }
    free(mu);
    rc = vae_agree(rc, comm);
    if (!rc) {
        MPI_Allreduce(MPI_IN_PLACE, s, 2 * Z + 1, MPI_DOUBLE, MPI_SUM, comm);
        for (int g = 0; g < m->n_latents; g++) {
            const vae_latent_group *lg = &m->latents[g];
            active[g] = vae_active_count(s + lg->offset, s + Z + lg->offset, lg->dim, s[2 * Z], threshold);
        }
    }
    free(s);
    return rc;
}

void vae_latent_path(const float *a, const float *b, int Z, int K, int spherical, float *z)
{
    double na = 0, nb = 0, dot = 0;
    for (int j = 0; j < Z; j++) {
        na += (double)a[j] * a[j];
        nb += (double)b[j] * b[j];
        dot += (double)a[j] * b[j];
    }
    na = sqrt(na);
    nb = sqrt(nb);
    double cosw = na > 0 && nb > 0 ? dot / (na * nb) : 1.0;
    if (cosw > 1) cosw = 1;
    if (cosw < -1) cosw = -1;
    double w = acos(cosw), sw = sin(w);
    for (int k = 0; k < K; k++) {
        double t = K > 1 ? (double)k / (K - 1) : 0.0;
        float *zk = z + (size_t)k * Z;
        if (!spherical || sw < 1e-6) {
            for (int j = 0; j < Z; j++) zk[j] = (float)((1 - t) * a[j] + t * b[j]);
        } else {
            /* Direction by slerp of the unit vectors, length interpolated linearly. */
            double ca = sin((1 - t) * w) / sw, cb = sin(t * w) / sw, len = (1 - t) * na + t * nb;
            for (int j = 0; j < Z; j++) zk[j] = (float)(len * (ca * a[j] / na + cb * b[j] / nb));
        }
        /* The ends are the inputs exactly. */
        if (k == 0) memcpy(zk, a, (size_t)Z * sizeof(float));
        if (k == K - 1 && K > 1) memcpy(zk, b, (size_t)Z * sizeof(float));
    }
}

typedef struct { float s; unsigned char pos; } scored;

static int cmp_scored(const void *x, const void *y)
{
    float a = ((const scored *)x)->s, b = ((const scored *)y)->s;
    return (a > b) - (a < b);
}

double vae_roc_auc(const float *score, const unsigned char *positive, int64_t n)
{
    scored *v = malloc((size_t)n * sizeof *v);
    if (!v) return NAN;
    int64_t npos = 0;
    for (int64_t i = 0; i < n; i++) {
        if (isnan(score[i])) { /* no order: the ties below would never end */
            free(v);
            return NAN;
        }
        v[i].s = score[i];
        v[i].pos = positive[i] ? 1 : 0;
        npos += v[i].pos;
    }
    int64_t nneg = n - npos;
    if (npos == 0 || nneg == 0) {
        free(v);
        return NAN;
    }
    qsort(v, (size_t)n, sizeof *v, cmp_scored);
    /* Mann-Whitney: sum of the positives' ranks, ties given their average rank. */
    double rank_sum = 0.0;
    for (int64_t i = 0; i < n;) {
        int64_t j = i;
        while (j < n && v[j].s == v[i].s) j++;
        double avg = (i + 1 + j) / 2.0;
        for (int64_t k = i; k < j; k++)
            if (v[k].pos) rank_sum += avg;
        i = j;
    }
    free(v);
    return (rank_sum - (double)npos * (npos + 1) / 2.0) / ((double)npos * nneg);
}

int vae_gather_rows(const float *mine, int64_t lo, int64_t hi, int w, float *all, int64_t n, MPI_Comm comm)
{
    int rank, P;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &P);
    int *counts = malloc((size_t)P * sizeof(int)), *displs = malloc((size_t)P * sizeof(int));
    if (!counts || !displs) {
        free(counts);
        free(displs);
        return vae_error(VAE_ENOMEM, "cannot allocate gather counts");
    }
    for (int r = 0; r < P; r++) {
        int64_t a, b;
        vae_latent_share(n, P, r, &a, &b);
        counts[r] = (int)((b - a) * w);
        displs[r] = (int)(a * w);
    }
    (void)lo;
    int rc = MPI_Gatherv(mine, (int)((hi - lo) * w), MPI_FLOAT, all, counts, displs, MPI_FLOAT, 0, comm);
    free(counts);
    free(displs);
    return rc == MPI_SUCCESS ? VAE_OK : vae_error(VAE_EMPI, "MPI_Gatherv of %d-wide rows failed", w);
}

int vae_h5_write_matrix(const char *path, const char *dset, const float *v, int64_t d0, int64_t d1)
{
    struct stat sb;
    hid_t fcpl = H5Pcreate(H5P_FILE_CREATE);
    hid_t fid = stat(path, &sb) == 0 ? H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT)
                                     : H5Fcreate(path, H5F_ACC_EXCL, fcpl, H5P_DEFAULT);
    H5Pclose(fcpl);
    if (fid < 0) return vae_error(VAE_EIO, "cannot open or create '%s'", path);
    int rc = VAE_OK;
    if (H5Lexists(fid, dset, H5P_DEFAULT) > 0) H5Ldelete(fid, dset, H5P_DEFAULT);
    int nd = d1 > 0 ? 2 : 1;
    hsize_t dims[2] = { (hsize_t)d0, (hsize_t)d1 };
    hsize_t chunk[2] = { (hsize_t)(d0 < 4096 ? (d0 > 0 ? d0 : 1) : 4096), (hsize_t)d1 };
    hid_t sp = H5Screate_simple(nd, dims, NULL);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_obj_track_times(dcpl, 0);
    if (d0 > 0) H5Pset_chunk(dcpl, nd, chunk);
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    H5Pset_create_intermediate_group(lcpl, 1);
    hid_t ds = H5Dcreate2(fid, dset, H5T_IEEE_F32LE, sp, lcpl, dcpl, H5P_DEFAULT);
    if (ds < 0 || (d0 > 0 && H5Dwrite(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, v) < 0))
        rc = vae_error(VAE_EIO, "cannot write dataset '%s' of '%s'", dset, path);
    if (ds >= 0) H5Dclose(ds);
    H5Pclose(lcpl);
    H5Pclose(dcpl);
    H5Sclose(sp);
    if (H5Fclose(fid) < 0 && !rc) rc = vae_error(VAE_EIO, "cannot close '%s'", path);
    return rc;
}

int vae_h5_write_attr(const char *path, const char *dset, const char *name, double v)
{
    hid_t fid = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    if (fid < 0) return vae_error(VAE_EIO, "cannot open '%s' to store the attribute '%s' of '%s'", path, name, dset);
    int rc = VAE_OK;
    hid_t ds = H5Dopen2(fid, dset, H5P_DEFAULT), sp = H5Screate(H5S_SCALAR), at = -1;
    if (ds >= 0 && H5Aexists(ds, name) > 0) H5Adelete(ds, name);
    if (ds >= 0) at = H5Acreate2(ds, name, H5T_IEEE_F64LE, sp, H5P_DEFAULT, H5P_DEFAULT);
    if (at < 0 || H5Awrite(at, H5T_NATIVE_DOUBLE, &v) < 0)
        rc = vae_error(VAE_EIO, "cannot store the attribute '%s' of '%s' in '%s'", name, dset, path);
    if (at >= 0) H5Aclose(at);
    H5Sclose(sp);
    if (ds >= 0) H5Dclose(ds);
    if (H5Fclose(fid) < 0 && !rc) rc = vae_error(VAE_EIO, "cannot close '%s'", path);
    return rc;
}
