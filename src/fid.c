/*
 * fid.c: the Frechet distance between feature statistics (see fid.h): the
 * chunked statistics and their merge tree over ranks, the distance through
 * LAPACK's dsyevd (from Debian's OpenBLAS, which includes LAPACK), and the
 * features of a set of images.
 */
#define _POSIX_C_SOURCE 200809L
#include "mpivae/fid.h"

#include "mpivae/comm.h"
#include "mpivae/shard.h"
#include "mpivae/status.h"
#include "mpivae/tools.h"

#include <cblas.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/*
 * LAPACK's symmetric eigensolver (divide and conquer), Fortran interface:
 * libopenblas exports it. The two trailing lengths are gfortran's hidden
 * lengths of the character arguments.
 */
void dsyevd_(const char *jobz, const char *uplo, const int *n, double *a, const int *lda, double *w, double *work,
             const int *lwork, int *iwork, const int *liwork, int *info, size_t jobz_len, size_t uplo_len);

/* ---- statistics ---- */

int vae_fid_stats_init(vae_fid_stats *s, int F)
{
    memset(s, 0, sizeof *s);
    s->F = F;
    s->mean = calloc((size_t)F, sizeof(double));
    s->m2 = calloc((size_t)F * F, sizeof(double));
    if (s->mean && s->m2) return VAE_OK;
    vae_fid_stats_free(s);
    return vae_error(VAE_ENOMEM, "cannot allocate the statistics of %d features", F);
}

void vae_fid_stats_free(vae_fid_stats *s)
{
    free(s->mean);
    free(s->m2);
    s->mean = s->m2 = NULL;
}

void vae_fid_stats_cov(const vae_fid_stats *s, double *cov)
{
    const size_t FF = (size_t)s->F * s->F;
    const double k = 1.0 / (double)(s->n - 1);
    for (size_t i = 0; i < FF; i++) cov[i] = s->m2[i] * k;
}

/* ---- the accumulator and its merge tree ---- */

#define NODE_HDR 3

static size_t node_len(int F) { return NODE_HDR + (size_t)F + (size_t)F * F; }

int vae_fid_acc_init(vae_fid_acc *a, int F, int64_t nchunks)
{
    memset(a, 0, sizeof *a);
    a->F = F;
    a->nchunks = nchunks;
    int levels = 0;
    while (((int64_t)1 << levels) < nchunks) levels++;
    /* A rank's range leaves at most two nodes per level; rank 0 holds one per level and one received. */
    a->cap = 2 * levels + 4;
    a->stack = calloc((size_t)a->cap, sizeof *a->stack);
    a->x = malloc((size_t)VAE_FID_CHUNK * F * sizeof(double));
    int ok = a->stack && a->x;
    for (int i = 0; ok && i < a->cap; i++) ok = (a->stack[i].buf = malloc(node_len(F) * sizeof(double))) != NULL;
    if (ok) return VAE_OK;
    vae_fid_acc_free(a);
    return vae_error(VAE_ENOMEM, "cannot allocate the accumulator of %d features (%d nodes of %zu doubles)", F,
                     2 * levels + 4, node_len(F));
}

void vae_fid_acc_free(vae_fid_acc *a)
{
    if (a->stack)
        for (int i = 0; i < a->cap; i++) free(a->stack[i].buf);
    free(a->stack);
    free(a->x);
    memset(a, 0, sizeof *a);
}

/*
 * Merges node r (the right sibling) into node l (Chan, Golub and LeVeque):
 * n = nl + nr, delta = mean_r - mean_l, mean = mean_l + delta nr / n,
 * m2 = m2_l + m2_r + delta delta^T nl nr / n (lower triangle). l becomes
 * their parent.
 */
static void merge(int F, vae_fid_node *l, const vae_fid_node *r)
{
    double *L = l->buf, *mL = L + NODE_HDR, *ML = mL + F;
    const double *R = r->buf, *mR = R + NODE_HDR, *MR = mR + F;
    const double nl = L[0], nr = R[0], n = nl + nr, f = nr / n, c = nl * nr / n;
    for (int i = 0; i < F; i++) {
        const double di = mR[i] - mL[i], cdi = c * di;
        double *row = ML + (size_t)i * F;
        const double *rrow = MR + (size_t)i * F;
        for (int j = 0; j <= i; j++) row[j] += rrow[j] + cdi * (mR[j] - mL[j]);
    }
    for (int i = 0; i < F; i++) mL[i] += (mR[i] - mL[i]) * f;
    L[0] = n;
    l->level++;
    l->index /= 2;
    L[1] = l->level;
    L[2] = (double)l->index;
}

/* Merges the top of the stack into the node below while the two are siblings. */
static void merge_top(vae_fid_acc *a)
{
    while (a->depth >= 2) {
        vae_fid_node *l = &a->stack[a->depth - 2], *r = &a->stack[a->depth - 1];
        if (l->level != r->level || (l->index & 1) || r->index != l->index + 1) break;
        merge(a->F, l, r);
        a->depth--;
    }
}

int vae_fid_acc_add(vae_fid_acc *a, int64_t chunk, const float *feat, int B, int *bad_row)
{
    const int F = a->F;
    vae_fid_node *nd = &a->stack[a->depth];
    double *buf = nd->buf, *mean = buf + NODE_HDR, *m2 = mean + F;
    /* feat [B, F] -> mean [F], x [B, F] centered, m2 = x^T x (lower triangle). */
    memset(mean, 0, (size_t)F * sizeof(double));
    for (int r = 0; r < B; r++)
        for (int j = 0; j < F; j++) {
            float v = feat[(size_t)r * F + j];
            if (!isfinite(v)) {
                *bad_row = r;
                return VAE_EDATA;
            }
            mean[j] += v;
        }
    for (int j = 0; j < F; j++) mean[j] /= B;
    for (int r = 0; r < B; r++)
        for (int j = 0; j < F; j++) a->x[(size_t)r * F + j] = (double)feat[(size_t)r * F + j] - mean[j];
    cblas_dsyrk(CblasRowMajor, CblasLower, CblasTrans, F, B, 1.0, a->x, F, 0.0, m2, F);
    nd->level = 0;
    nd->index = chunk;
    buf[0] = B;
    buf[1] = 0;
    buf[2] = (double)chunk;
    a->depth++;
    merge_top(a);
    return VAE_OK;
}

/*
 * Rank 0, every node in: completes the tree. The stack spells the chunk
 * count in binary (levels falling); a node without a right sibling (past
 * the last chunk) is its own parent, one with a left sibling merges into it.
 */
static int fold(vae_fid_acc *a)
{
    int L = 0;
    while (((int64_t)1 << L) < a->nchunks) L++;
    while (a->depth > 1 || (a->depth == 1 && a->stack[0].level < L)) {
        vae_fid_node *t = &a->stack[a->depth - 1];
        if (!(t->index & 1)) {
            t->level++;
            t->index /= 2;
            t->buf[1] = t->level;
            t->buf[2] = (double)t->index;
        } else if (a->depth >= 2 && a->stack[a->depth - 2].level == t->level &&
                   a->stack[a->depth - 2].index == t->index - 1) {
            merge(a->F, &a->stack[a->depth - 2], t);
            a->depth--;
        } else {
            return vae_error(VAE_EINVAL, "FID statistics: node (%d, %lld) has no left sibling on the stack", t->level,
                             (long long)t->index);
        }
    }
    if (a->depth != 1) return vae_error(VAE_EINVAL, "FID statistics: no chunks");
    return VAE_OK;
}

int vae_fid_acc_finish(vae_fid_acc *a, MPI_Comm comm, vae_fid_stats *out)
{
    int rank, P, rc = VAE_OK, mrc;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &P);
    const int F = a->F, len = (int)node_len(F);
    const int tag = 0x46d;
    if (rank != 0) {
        int n = a->depth;
        if ((mrc = MPI_Send(&n, 1, MPI_INT, 0, tag, comm)) != MPI_SUCCESS) rc = vae_mpi_error(mrc, "MPI_Send");
        for (int i = 0; i < n && !rc; i++)
            if ((mrc = MPI_Send(a->stack[i].buf, len, MPI_DOUBLE, 0, tag, comm)) != MPI_SUCCESS)
                rc = vae_mpi_error(mrc, "MPI_Send");
    } else {
        /* The other ranks' nodes in rank order, which is chunk order. */
        for (int src = 1; src < P && !rc; src++) {
            int n = 0;
            if ((mrc = MPI_Recv(&n, 1, MPI_INT, src, tag, comm, MPI_STATUS_IGNORE)) != MPI_SUCCESS) {
                rc = vae_mpi_error(mrc, "MPI_Recv");
                break;
            }
            for (int i = 0; i < n && !rc; i++) {
                if (a->depth == a->cap) {
                    rc = vae_error(VAE_EINVAL, "FID statistics: merge stack full (%d nodes)", a->cap);
                    break;
                }
                vae_fid_node *nd = &a->stack[a->depth];
                if ((mrc = MPI_Recv(nd->buf, len, MPI_DOUBLE, src, tag, comm, MPI_STATUS_IGNORE)) != MPI_SUCCESS) {
                    rc = vae_mpi_error(mrc, "MPI_Recv");
                    break;
                }
                nd->level = (int)nd->buf[1];
                nd->index = (int64_t)nd->buf[2];
                a->depth++;
                merge_top(a);
            }
        }
        if (!rc) rc = fold(a);
        if (!rc) {
            const double *b = a->stack[0].buf;
            out->n = (int64_t)b[0];
            memcpy(out->mean, b + NODE_HDR, (size_t)F * sizeof(double));
            const double *m2 = b + NODE_HDR + F;
            for (int i = 0; i < F; i++)
                for (int j = 0; j <= i; j++) out->m2[(size_t)i * F + j] = out->m2[(size_t)j * F + i] = m2[(size_t)i * F + j];
        }
    }
    /* Rank 0's status (a failure there was reported there), then its statistics. */
    if ((mrc = MPI_Bcast(&rc, 1, MPI_INT, 0, comm)) != MPI_SUCCESS) return vae_mpi_error(mrc, "MPI_Bcast");
    if (rc) return rc;
    long long n = out->n;
    if ((mrc = MPI_Bcast(&n, 1, MPI_LONG_LONG, 0, comm)) != MPI_SUCCESS ||
        (mrc = MPI_Bcast(out->mean, F, MPI_DOUBLE, 0, comm)) != MPI_SUCCESS ||
        (mrc = MPI_Bcast(out->m2, F * F, MPI_DOUBLE, 0, comm)) != MPI_SUCCESS)
        return vae_mpi_error(mrc, "MPI_Bcast");
    out->n = n;
    return VAE_OK;
}

/* ---- the distance ---- */

/*
 * Eigenvalues w[F] (and with vectors, the eigenvectors in the columns of a,
 * column-major) of the symmetric a[F, F] (lower triangle read). 0 or
 * VAE_EINVAL / VAE_ENOMEM (reported).
 */
static int syevd(int F, int vectors, double *a, double *w)
{
    const char jobz = vectors ? 'V' : 'N', uplo = 'L';
    int lwork = -1, liwork = -1, info = 0, iw = 0;
    double wq = 0;
    dsyevd_(&jobz, &uplo, &F, a, &F, w, &wq, &lwork, &iw, &liwork, &info, 1, 1);
    if (info) return vae_error(VAE_EINVAL, "LAPACK dsyevd (workspace query, n = %d) failed: info %d", F, info);
    lwork = (int)wq;
    liwork = iw;
    double *work = malloc((size_t)lwork * sizeof(double));
    int *iwork = malloc((size_t)liwork * sizeof(int));
    int rc = VAE_OK;
    if (!work || !iwork) rc = vae_error(VAE_ENOMEM, "cannot allocate LAPACK dsyevd's workspace (n = %d)", F);
    if (!rc) dsyevd_(&jobz, &uplo, &F, a, &F, w, work, &lwork, iwork, &liwork, &info, 1, 1);
    if (!rc && info)
        rc = vae_error(VAE_EINVAL, "LAPACK dsyevd (n = %d) failed: info %d (%s)", F, info,
                       info < 0 ? "a bad argument" : "the eigenvalues did not converge");
    free(work);
    free(iwork);
    return rc;
}

/*
 * The eigenvalues of a PSD matrix that are 0 up to rounding: below
 * F eps max|w|, the error of a symmetric eigensolver. Counted as 0, they add
 * nothing to a trace of square roots, where each would add its own square
 * root, sqrt(eps) of the scale (1e-8 relative), to the sum.
 */
static double rounding_floor(int F, const double *w)
{
    double mx = 0;
    for (int i = 0; i < F; i++) mx = fmax(mx, fabs(w[i]));
    return F * DBL_EPSILON * mx;
}

int vae_fid_distance(int F, const double *mu1, const double *S1, const double *mu2, const double *S2, vae_fid_result *r)
{
    const size_t FF = (size_t)F * F;
    double *V = malloc(FF * sizeof(double)), *T = malloc(FF * sizeof(double)), *M = malloc(FF * sizeof(double));
    double *w = malloc((size_t)F * sizeof(double)), *s = malloc((size_t)F * sizeof(double));
    int rc = V && T && M && w && s ? VAE_OK : vae_error(VAE_ENOMEM, "cannot allocate the FID's %d x %d matrices", F, F);
    memset(r, 0, sizeof *r);
    for (int i = 0; i < F; i++) {
        const double d = mu1[i] - mu2[i];
        r->dmu2 += d * d;
        r->tr1 += S1[(size_t)i * F + i];
        r->tr2 += S2[(size_t)i * F + i];
    }
    /* S1 = V diag(w) V^T; s = sqrt(max(w, 0)). */
    if (!rc) {
        memcpy(V, S1, FF * sizeof(double));
        rc = syevd(F, 1, V, w);
    }
    if (!rc) {
        const double t1 = rounding_floor(F, w);
        for (int i = 0; i < F; i++) s[i] = w[i] > t1 ? sqrt(w[i]) : 0.0;
        /* M = V^T S2 V (column-major; S2 is symmetric, so either layout), then diag(s) M diag(s), symmetrised. */
        cblas_dgemm(CblasColMajor, CblasNoTrans, CblasNoTrans, F, F, F, 1.0, S2, F, V, F, 0.0, T, F);
        cblas_dgemm(CblasColMajor, CblasTrans, CblasNoTrans, F, F, F, 1.0, V, F, T, F, 0.0, M, F);
        for (int j = 0; j < F; j++)
            for (int i = j; i < F; i++) {
                double v = 0.5 * (M[(size_t)j * F + i] + M[(size_t)i * F + j]) * s[i] * s[j];
                M[(size_t)j * F + i] = M[(size_t)i * F + j] = v;
            }
        rc = syevd(F, 0, M, w);
    }
    if (!rc) {
        const double t2 = rounding_floor(F, w);
        for (int i = 0; i < F; i++) r->trsqrt += w[i] > t2 ? sqrt(w[i]) : 0.0;
        r->fid_raw = r->dmu2 + r->tr1 + r->tr2 - 2.0 * r->trsqrt;
        /* Below 0 only by rounding of the traces' difference: a relative 1e-9 of what was subtracted. */
        r->fid = r->fid_raw < 0 && r->fid_raw >= -1e-9 * (r->dmu2 + r->tr1 + r->tr2) ? 0.0 : r->fid_raw;
    }
    free(V);
    free(T);
    free(M);
    free(w);
    free(s);
    return rc;
}

/* ---- the features of a set ---- */

/* The images of rows [r0, r0 + b) of set s into the classifier's input buffer. */
static int set_images(vae_model *clf, const vae_fid_set *s, int64_t r0, int b, int64_t *idx, float *z)
{
    for (int i = 0; i < b; i++) idx[i] = r0 + i;
    switch (s->kind) {
    case VAE_FID_ROWS: return vae_data_rows(s->d, idx, b, vae_model_input(clf));
    case VAE_FID_SAMPLES:
        vae_sample_prior_from(s->gen, s->seed, 0, r0, s->temperature, b, vae_model_input(clf));
        return VAE_OK;
    case VAE_FID_RECON: {
        int rc = vae_data_rows(s->d, idx, b, vae_model_input(s->gen));
        if (rc) return rc;
        vae_model_encode(s->gen, b, z, NULL);
        vae_model_decode(s->gen, z, b, vae_model_input(clf));
        return VAE_OK;
    }
    }
    return vae_error(VAE_EINVAL, "unknown kind %d of FID set %s", s->kind, s->name);
}

int vae_fid_set_stats(vae_model *clf, const vae_fid_set *s, MPI_Comm comm, vae_fid_stats *out)
{
    int rank, P;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &P);
    const int F = clf->n_features;
    const int64_t nchunks = (s->n + VAE_FID_CHUNK - 1) / VAE_FID_CHUNK;
    int64_t lo, hi;
    vae_shard(s->n, P, rank, VAE_FID_CHUNK, &lo, &hi);
    vae_fid_acc acc;
    memset(&acc, 0, sizeof acc);
    float *feat = malloc((size_t)VAE_FID_CHUNK * F * sizeof(float)); /* [chunk, F] */
    int64_t *idx = malloc(VAE_FID_CHUNK * sizeof(int64_t));
    float *z = s->kind == VAE_FID_RECON ? malloc((size_t)VAE_FID_CHUNK * s->gen->Z * sizeof(float)) : NULL; /* [chunk, Z] */
    vae_defer_begin();
    int rc = feat && idx && (z || s->kind != VAE_FID_RECON)
                 ? VAE_OK
                 : vae_error(VAE_ENOMEM, "cannot allocate the features of %d rows of %s", VAE_FID_CHUNK, s->name);
    if (!rc && clf->max_batch < VAE_FID_CHUNK)
        rc = vae_error(VAE_EINVAL, "the classifier's batch %d is below the FID chunk %d", clf->max_batch, VAE_FID_CHUNK);
    if (!rc && s->n < 2) rc = vae_error(VAE_EINVAL, "%s has %lld images: a covariance needs at least 2", s->name, (long long)s->n);
    if (!rc) rc = vae_fid_acc_init(&acc, F, nchunks);
    for (int64_t r0 = lo; r0 < hi && !rc; r0 += VAE_FID_CHUNK) {
        const int b = (int)(hi - r0 < VAE_FID_CHUNK ? hi - r0 : VAE_FID_CHUNK);
        rc = set_images(clf, s, r0, b, idx, z);
        if (rc) break;
        vae_model_features(clf, b, feat);
        int bad = 0;
        if (vae_fid_acc_add(&acc, r0 / VAE_FID_CHUNK, feat, b, &bad))
            rc = vae_error(VAE_EDATA, "the classifier's features of image %lld of %s are not finite (NaN or Inf)",
                           (long long)(r0 + bad), s->name);
        if (!rc && vae_stop_requested()) rc = vae_error(VAE_ESTOP, "stopped by a signal");
    }
    free(feat);
    free(idx);
    free(z);
    rc = vae_agree(rc, comm);
    if (!rc) rc = vae_fid_acc_finish(&acc, comm, out);
    vae_fid_acc_free(&acc);
    return rc;
}
