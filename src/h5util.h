/*
 * h5util.h: internal helpers shared by the `mpivae data` tools (import_idx.c,
 * synth.c, data_info.c); not part of the public API.
 *
 * The tools switch off HDF5's automatic error printing for their own
 * duration (restoring the caller's handler on return) and report each
 * failure once through vae_error, naming the file and the dataset. Output
 * files are written to "<out>.tmp", closed, synced and renamed, so a reader
 * never sees a half-written file; on failure the .tmp file is removed.
 */
#ifndef MPIVAE_H5UTIL_H
#define MPIVAE_H5UTIL_H

#include <hdf5.h>
#include <stdint.h>

/* Rows per chunk of an image dataset, and of a label dataset (clamped to the row count). */
#define VAE__IMAGE_CHUNK_ROWS 1024
#define VAE__LABEL_CHUNK_ROWS 4096

/* The caller's HDF5 error handler, saved while automatic printing is off. */
struct vae__h5_quiet {
    H5E_auto2_t func;
    void *data;
};

/* Saves the caller's HDF5 error handler in q and switches automatic printing off. */
void vae__h5_quiet_begin(struct vae__h5_quiet *q);

/* Restores the handler saved by vae__h5_quiet_begin. */
void vae__h5_quiet_end(const struct vae__h5_quiet *q);

/* Returns a malloc'd "<path><suffix>" (the caller frees it), or NULL. */
char *vae__str_concat(const char *path, const char *suffix);

/*
 * An output data set while it is written: the HDF5 file "<path>.tmp" with
 * the groups /train and /test, renamed to path only once complete.
 */
struct vae__h5_out {
    const char *path; /* final name (borrowed) */
    char *tmp;        /* "<path>.tmp" (owned), NULL before vae__h5_out_create */
    hid_t file;       /* open on tmp, or -1 */
};

/* Fills o for path without touching the disk, so that vae__h5_out_finish is always safe. */
void vae__h5_out_init(struct vae__h5_out *o, const char *path);

/*
 * Creates "<path>.tmp" (truncating it) with the groups /train and /test, no
 * object timestamps. Returns 0 or a negative status after reporting; call
 * vae__h5_out_finish in both cases.
 */
int vae__h5_out_create(struct vae__h5_out *o);

/*
 * Ends the output. When rc is 0: closes the file, fsyncs it and renames it to
 * path. Otherwise, or when one of those fails: closes it and removes the
 * .tmp file. Frees tmp. Returns rc, or the status of the step that failed.
 */
int vae__h5_out_finish(struct vae__h5_out *o, int rc);

/*
 * Creates the uint8 dataset `name` (e.g. "/train/images") of the given rank
 * (at most 8) and dims in file, chunked by chunk_rows rows (clamped to
 * dims[0]) with deflate level 1, and without object timestamps so that the
 * same data gives the same bytes. fname names the file in messages. Returns
 * the dataset id (the caller closes it) or a negative status after reporting.
 */
hid_t vae__create_u8_dataset(hid_t file, const char *fname, const char *name, int rank,
                             const hsize_t *dims, hsize_t chunk_rows);

/* Writes rows [row0, row0 + nrows) of a dataset of the given rank and dims from buf. */
int vae__write_u8_rows(hid_t dset, const char *fname, const char *name, int rank,
                       const hsize_t *dims, hsize_t row0, hsize_t nrows, const uint8_t *buf);

#endif
