/*
 * dataset.h: reading training and test data from HDF5.
 *
 * A data set is `FILE` (FILE:/train/images) or `FILE:/path/to/dataset`, shaped [N,C,H,W], [N,H,W]
 * or [N,D], uint8 (scaled by 1/255) or float32/float64. Opening is
 * collective over a communicator and agrees on a status, so all ranks fail
 * together with one message. Two modes:
 *   in memory: one copy per node in MPI-3 shared memory, each node rank
 *              reading a contiguous part of the rows (the fast path);
 *   streaming: each rank reads only the rows it needs, per batch, through
 *              a hyperslab selection and HDF5's chunk cache.
 */
#ifndef MPIVAE_DATASET_H
#define MPIVAE_DATASET_H

#include <hdf5.h>
#include <mpi.h>
#include <stdint.h>

#define VAE_PATH_LEN 1024

enum vae_dtype { VAE_DT_U8 = 0, VAE_DT_F32 = 1 };

typedef struct vae_data {
    char file[VAE_PATH_LEN];
    char dset[256];
    int64_t N;         /* rows */
    int C, Hh, W, D;   /* per-row shape; D = C*Hh*W */
    int dtype;         /* enum vae_dtype: element type held in memory */
    int in_memory;
    int copies;        /* in memory: the node-shared copies of the whole communicator (one per node) */
    unsigned char *mem; /* [N, D] elements of dtype (node-shared) */
    MPI_Win win;
    int has_win;
    hid_t fid, did;    /* open while streaming */
    int max_rows;
    float *stage;      /* [max_rows, D] streaming staging buffer */
    int64_t *order;    /* [max_rows] streaming sort scratch */
    float min, max;    /* value range found by vae_data_check */
    int binarize;      /* vae_data_rows binarizes with key (bin_seed, bin_a, row): vae_data_set_binarize */
    uint64_t bin_seed, bin_a;
    int *labels;       /* [N] each row's class (vae_data_open_labels), or NULL */
    int label_max;     /* the largest label */
    char label_spec[VAE_PATH_LEN + 256]; /* the labels as FILE:/dataset, for messages */
} vae_data;

/*
 * FILE alone names this dataset, in every subcommand and flag that takes data
 * (--data, --test-data): the same spelling always means the same rows.
 */
#define VAE_DATA_DEFAULT_DSET "/train/images"

/* Splits "FILE[:/dataset]" into file and dataset (default_dset when absent). */
int vae_data_parse_spec(const char *spec, const char *default_dset, char *file, size_t file_len,
                        char *dset, size_t dset_len);

/* The spec with its dataset spelled out: "FILE:/dataset" (FILE alone gets VAE_DATA_DEFAULT_DSET). */
int vae_data_full_spec(const char *spec, char *out, size_t len);

/*
 * The spec with its file made absolute ("/abs/FILE:/dataset"), so that a
 * checkpoint finds its data from any working directory. Fails (no message)
 * when the file does not exist.
 */
int vae_data_abs_spec(const char *spec, char *out, size_t len);

/*
 * Chooses how to open data that a checkpoint names: its absolute spec when
 * that file exists, else the spec as given (relative to the working
 * directory). Returns 1 and fills out when one exists, 0 when neither does.
 */
int vae_data_locate(const char *spec, const char *abs_spec, char *out, size_t len);

/*
 * True when a chunked dataset has chunks that were never written and no fill
 * value set on purpose (they would read as zeros); *have and *want get the
 * chunks written and declared. Shared by the reader and `data info`.
 */
int vae_data_unwritten_chunks(hid_t did, unsigned long long *have, double *want);

/* True when FILE exists, is HDF5 and holds the dataset (no messages). */
int vae_data_exists(const char *file, const char *dset);

/*
 * Opens spec on every rank of comm. in_memory: 1 yes, 0 stream, -1 auto (in
 * memory when the data takes less than a quarter of the node's memory).
 * max_rows: the most rows one vae_data_rows call will ask for.
 */
int vae_data_open(vae_data *d, const char *spec, MPI_Comm comm, int in_memory, int max_rows);

/* Why values must lie in [0, 1] (bits of vae_data_check's unit_range, for its message). */
enum vae_data_range {
    VAE_RANGE_ANY = 0,      /* any finite value */
    VAE_RANGE_BCE = 1,      /* the Bernoulli loss (--loss bce) */
    VAE_RANGE_BINARIZE = 2  /* binarization: each value is the probability of a 1 */
};

/*
 * Collective scan of all values (as stored, never binarized): fails on
 * NaN/Inf, and when unit_range (enum vae_data_range bits) is not 0, on values
 * outside [0, 1], naming the file, the dataset, the range found and why.
 */
int vae_data_check(vae_data *d, int unit_range, MPI_Comm comm);

/*
 * Rows idx[0..n) (any order, any repeats) as floats into out[n, D];
 * binarized when vae_data_set_binarize asked for it.
 */
int vae_data_rows(vae_data *d, const int64_t *idx, int n, float *out);

/*
 * Binarization (--binarize): value v of row r becomes 1 when u < v, else 0,
 * with u = vae_rng_uniform(seed, VAE_RNG_BINARIZE, a, r)[j] for pixel j (24
 * bits, in [0, 1)): a Bernoulli(v) draw for v in [0, 1] that depends only on
 * (seed, a, r, j), never on the rank count, the batch or the read order.
 * Training keys a by the epoch (a new draw each time a row is used); the
 * test set's fixed binarization is the key below, the same for every run
 * and model: seed 0x6d70697661650001 ("mpivae" then 0001), a = 2^64 - 1.
 */
#define VAE_BINARIZE_FIXED_SEED 0x6d70697661650001ull
#define VAE_BINARIZE_FIXED_A UINT64_MAX
#define VAE_BINARIZE_FIXED_TEXT "fixed, seed 0x6d70697661650001" /* for messages */

/* Binarizes x[n, D] in place: row i of x is row idx[i] of its data set, keyed by (seed, a, idx[i]). */
void vae_data_binarize_rows(float *x, const int64_t *idx, int n, int D, uint64_t seed, uint64_t a);

/* From now on vae_data_rows binarizes every row with key (seed, a, row) (on = 0: no longer). */
void vae_data_set_binarize(vae_data *d, int on, uint64_t seed, uint64_t a);

/* The fixed binarization of held-out rows (on = 1) or none (0): vae_data_set_binarize with the fixed key. */
static inline void vae_data_binarize_fixed(vae_data *d, int on)
{
    vae_data_set_binarize(d, on, VAE_BINARIZE_FIXED_SEED, VAE_BINARIZE_FIXED_A);
}

/*
 * Labels: a 1-D integer dataset of one class per row beside the rows, named
 * FILE[:/dataset] where FILE alone is FILE:/train/labels (as in every
 * command that takes labels).
 */
#define VAE_LABELS_DEFAULT_DSET "/train/labels"

/* Reads the integer dataset spec of exactly n values (labels) as int64; reports what is wrong. */
int vae_read_labels(const char *spec, const char *default_dset, int64_t n, int64_t *labels);

/*
 * The labels of the rows of file:dset when none are named: the dataset
 * 'labels' beside them (FILE:/train/images -> FILE:/train/labels), as
 * FILE:/dataset into out.
 */
void vae_data_labels_beside(const char *file, const char *dset, char *out, size_t len);

/*
 * Reads the labels spec for the rows of d on every rank of comm (each rank
 * holds all N, 4 bytes a row) into d->labels: a 1-D integer dataset of d->N
 * values in 0..65535. Collective: every rank fails together, with one
 * message naming the file, the dataset and what is wrong.
 */
int vae_data_open_labels(vae_data *d, const char *spec, MPI_Comm comm);

/*
 * Refuses labels of d that are not below classes: a message (rank 0 of comm)
 * naming the labels, the value, its row and what fixed the classes (`what`,
 * a phrase: "checkpoint 'X' has 10 classes"), and VAE_EDATA on every rank.
 * Labels must have been opened.
 */
int vae_data_check_classes(const vae_data *d, int classes, const char *what, MPI_Comm comm);

/* The classes of rows idx[0..n) of d into out[n]. */
static inline void vae_data_labels(const vae_data *d, const int64_t *idx, int n, int *out)
{
    for (int i = 0; i < n; i++) out[i] = d->labels[idx[i]];
}

/* Closes files, frees the shared window and the labels; safe on a zeroed struct. Collective when in memory. */
void vae_data_close(vae_data *d);

#endif
