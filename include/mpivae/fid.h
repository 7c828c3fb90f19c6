/*
 * fid.h: the Frechet distance between the feature statistics of two sets of
 * images (Heusel et al. 2017, "FID"), with the features of a classifier's
 * layer before its output (family.h's `features`).
 *
 * For sets with feature means mu1, mu2 and covariances S1, S2 (d x d):
 *
 *   FID = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^{1/2})
 *
 * The covariances are unbiased (divided by N - 1, as numpy.cov and the
 * reference FID code). tr((S1 S2)^{1/2}) is computed for symmetric positive
 * semi-definite S1, S2 without a non-symmetric square root: with
 * S1 = V diag(w) V^T (LAPACK dsyevd), s = sqrt(max(w, 0)) and
 * A = S1^{1/2} = V diag(s) V^T, the matrix S1 S2 is similar to the
 * symmetric A S2 A, whose eigenvalues are those of
 * M = diag(s) (V^T S2 V) diag(s) (dsyevd again); tr((S1 S2)^{1/2}) is the
 * sum of sqrt(lambda_i(M)). Eigenvalues of S1 or M below d eps max|lambda|
 * (eps = DBL_EPSILON), negative ones included, are 0 up to the solver's
 * rounding and count as 0: a singular covariance (N <= d rows, a dead
 * feature) would otherwise add sqrt(eps) of its scale per null direction.
 *
 * Statistics are accumulated in double over fixed chunks of VAE_FID_CHUNK
 * rows (shard.h splits the chunks over ranks): each chunk gives its count,
 * mean and centered sum of outer products (one dsyrk over the chunk's rows),
 * and chunks are merged pairwise (Chan et al.'s update of mean and M2) along
 * ONE binary tree over the chunk indices, whatever the rank count: each rank
 * merges the whole subtrees inside its chunks, rank 0 receives the rest in
 * chunk order and completes the tree. So the statistics, and the distance,
 * are the same bit for bit on any number of ranks; memory is O(log(chunks))
 * d x d matrices per rank, never the set itself.
 */
#ifndef MPIVAE_FID_H
#define MPIVAE_FID_H

#include "mpivae/dataset.h"
#include "mpivae/model.h"

#include <mpi.h>
#include <stdint.h>

/* Rows per chunk: the unit of work of a rank and the leaves of the merge tree. */
#define VAE_FID_CHUNK 256

/* Feature statistics of a set: n rows, their mean and centered sum of outer products. */
typedef struct vae_fid_stats {
    int F;        /* features per row (d) */
    int64_t n;    /* rows */
    double *mean; /* [F] */
    double *m2;   /* [F, F] sum over rows of (x - mean)(x - mean)^T, symmetric (both triangles) */
} vae_fid_stats;

/* Allocates zeroed statistics of F features; 0 or VAE_ENOMEM (reported). */
int vae_fid_stats_init(vae_fid_stats *s, int F);

/* Frees; safe on a zeroed struct. */
void vae_fid_stats_free(vae_fid_stats *s);

/* cov[F, F] = m2 / (n - 1), the unbiased covariance (n >= 2). */
void vae_fid_stats_cov(const vae_fid_stats *s, double *cov);

/* One node of the merge tree: chunks [index * 2^level, (index + 1) * 2^level). */
typedef struct vae_fid_node {
    int level;
    int64_t index;
    double *buf; /* [3 + F + F*F]: n, level, index (as doubles, for sending), mean[F], m2[F, F] (lower triangle) */
} vae_fid_node;

/*
 * The accumulator of one set on one rank: chunks are added in increasing
 * order of index (a rank's contiguous range of shard.h), each merged into a
 * stack of tree nodes as soon as its sibling is there.
 */
typedef struct vae_fid_acc {
    int F;
    int64_t nchunks;   /* chunks of the whole set (over every rank) */
    int depth, cap;
    vae_fid_node *stack; /* [cap] */
    double *x;         /* [VAE_FID_CHUNK, F] a chunk's centered rows */
} vae_fid_acc;

/* Prepares an accumulator for a set of nchunks chunks of F features; 0 or VAE_ENOMEM. */
int vae_fid_acc_init(vae_fid_acc *a, int F, int64_t nchunks);

/* Frees; safe on a zeroed struct. */
void vae_fid_acc_free(vae_fid_acc *a);

/*
 * Adds chunk `chunk` (its B >= 1 rows of features, feat[B, F]); chunks come in
 * increasing order. Returns 0, or VAE_EDATA for a non-finite feature
 * (*bad_row: its row within the chunk; not reported: the caller names the set).
 */
int vae_fid_acc_add(vae_fid_acc *a, int64_t chunk, const float *feat, int B, int *bad_row);

/*
 * Collective over comm: combines every rank's nodes along the tree (rank 0)
 * into out (vae_fid_stats_init'ed with the same F) on every rank. Call only
 * after the ranks agreed that every chunk was added. 0 or a negative status.
 */
int vae_fid_acc_finish(vae_fid_acc *a, MPI_Comm comm, vae_fid_stats *out);

/* The distance and its parts. */
typedef struct vae_fid_result {
    double fid;      /* the distance; a negative result within rounding (see fid_raw) is 0 */
    double fid_raw;  /* the formula's value as computed */
    double dmu2;     /* |mu1 - mu2|^2 */
    double tr1, tr2; /* tr(S1), tr(S2) */
    double trsqrt;   /* tr((S1 S2)^{1/2}) */
} vae_fid_result;

/*
 * The Frechet distance between N(mu1, S1) and N(mu2, S2), S1 and S2 [F, F]
 * symmetric PSD (row- or column-major alike), as above. Returns 0, or
 * VAE_EINVAL/VAE_ENOMEM when LAPACK fails or memory is short (reported).
 */
int vae_fid_distance(int F, const double *mu1, const double *S1, const double *mu2, const double *S2, vae_fid_result *r);

/* What a set of images is. */
enum vae_fid_kind {
    VAE_FID_ROWS = 0,    /* rows of a data set */
    VAE_FID_SAMPLES = 1, /* a VAE's prior samples */
    VAE_FID_RECON = 2    /* a VAE's reconstructions (z = mu) of the rows of a data set */
};

/* A set of images whose features the classifier computes. */
typedef struct vae_fid_set {
    int kind;        /* enum vae_fid_kind */
    vae_data *d;     /* ROWS, RECON: the rows (the first n of them), opened with max_rows >= VAE_FID_CHUNK */
    vae_model *gen;  /* SAMPLES, RECON: the VAE, max_batch >= VAE_FID_CHUNK, output of the classifier's shape */
    uint64_t seed;   /* SAMPLES: sample j's noise keyed by (seed, VAE_RNG_PRIOR, 0, j), as `mpivae sample` */
    float temperature; /* SAMPLES: z ~ N(0, T^2 I) */
    int64_t n;       /* rows or samples */
    const char *name; /* for messages */
} vae_fid_set;

/*
 * Collective over comm: the classifier clf's feature statistics of set s
 * (clf->max_batch >= VAE_FID_CHUNK; out vae_fid_stats_init'ed with
 * clf->n_features). The chunks are split over the ranks (shard.h); every
 * rank agrees on the status. 0 or a negative status (reported once).
 */
int vae_fid_set_stats(vae_model *clf, const vae_fid_set *s, MPI_Comm comm, vae_fid_stats *out);

#endif
