/*
 * metrics.h: DIR/metrics.h5, extendible 1-D datasets appended while training.
 *
 * /train/{step, epoch} int64 and /train/{loss, <terms>, beta, lr, grad_norm,
 * samples_per_s, time} float64, one row per optimizer step; /eval/{step,
 * epoch} int64 and /eval/{loss, <terms>, time} float64, one row per
 * evaluation. <terms> are the model family's named loss terms (family.h),
 * in its order: recon, kl for mlp and conv. lr is --lr's rate at the step
 * (after --lr-decay).
 *
 * Readers never stop training. The file is held open for the whole run in
 * HDF5's single-writer/multiple-reader mode (SWMR) without HDF5's file locks,
 * and every vae_metrics_flush() appends and flushes, so a reader that opens
 * it with SWMR (h5py: File(path, 'r', swmr=True), then refresh()) follows the
 * run; a plain open during the run is refused by HDF5 ("already open for
 * write"), harmlessly for the run; between runs any reader can open it.
 *
 * Every row of the run is kept in memory too (80 bytes a step): the file is
 * a mirror of that table. An append that fails is a warning, and the next
 * flush writes the whole table again to a temporary file and renames it over
 * metrics.h5, so a failed write never costs a step, a checkpoint or a row.
 * A failed append can leave the file unreadable until a flush succeeds; a run
 * that finds it so keeps it aside (metrics.h5.damaged-TIME) and starts a new one.
 */
#ifndef MPIVAE_METRICS_H
#define MPIVAE_METRICS_H

#include "mpivae/model.h"

#include <stdint.h>

/* Rows a group may hold (2^28 steps); a file claiming more, or more than 8 bytes a row allow, is refused as damaged. */
#define VAE_METRICS_MAX_ROWS (1L << 28)

/* Columns at most: 8 around the terms, and the terms. */
#define VAE_METRICS_MAX_FIELDS (10 + VAE_MAX_TERMS)

/* One group of metrics.h5: its columns and every row of the run. */
typedef struct vae_metrics_table {
    const char *group;        /* "/train" or "/eval" */
    const char *names[VAE_METRICS_MAX_FIELDS]; /* column names; "step", "epoch" and "skipped" are int64, the rest float64 */
    char own[VAE_METRICS_MAX_FIELDS][32]; /* the names, when read from a file (vae_metrics_read) */
    int nf;                   /* columns */
    double *rows;             /* [n, nf], row-major */
    long n, cap;              /* rows held, rows allocated */
    long on_disk;             /* rows known to be in the open file */
} vae_metrics_table;

/*
 * One process that trained the run (a new run, or a resume), in /sessions:
 * step, ranks, nodes, slurm_job, slurm_restart int64, start float64 (Unix
 * time), hosts and banner variable-length strings. Written once, when the
 * process opens the file; files of earlier versions have none.
 */
typedef struct vae_metrics_session {
    long step;                /* the step it started from: 0, or the checkpoint's a resume continued */
    double start;             /* Unix time of its start */
    long ranks, nodes;
    long slurm_job, slurm_restart; /* 0 outside Slurm */
    char *hosts;              /* host names, space-separated (owned) */
    char *banner;             /* the lines the run printed at its start (owned) */
} vae_metrics_session;

typedef struct vae_metrics {
    char path[1100];
    int64_t fid;              /* the open file (hid_t), or < 0 when the next flush must rewrite it */
    vae_metrics_table t[2];   /* train, eval */
    long failures;            /* consecutive failed flushes (one warning each) */
    vae_metrics_session *sessions; /* every process of the run, the current one last */
    int n_sessions;
} vae_metrics;

/*
 * Opens DIR/metrics.h5 for the run: rows of an existing file with step <=
 * keep_upto are kept (those of the checkpoint a resumed run continues from;
 * 0 for a new run), later ones dropped, and so are sessions that started
 * after keep_upto; `now` (may be NULL) is added as the newest session (its
 * strings are copied). The file is written anew through a temporary name
 * and rename, then held open in SWMR mode.
 */
int vae_metrics_open(vae_metrics *mt, const char *dir, long keep_upto, const vae_model *f,
                     const vae_metrics_session *now);

/*
 * Reads DIR/metrics.h5 (also while a run writes it) into mt, with the
 * columns the file has: the family's terms between loss and beta, in the
 * order of the /train attribute "columns" (files of earlier versions: by
 * name). No file: VAE_EIO with a message naming it. mt is closed with
 * vae_metrics_close and holds no open file.
 */
int vae_metrics_read(const char *dir, vae_metrics *mt);

/* The column index of name in a table, or -1. */
int vae_metrics_col(const vae_metrics_table *t, const char *name);

/* Adds a row: step, epoch, loss, the terms, beta, lr, grad_norm, samples_per_s, time. */
int vae_metrics_add_train(vae_metrics *mt, const double *row);

/* Adds a row: step, epoch, loss, the terms, time. */
int vae_metrics_add_eval(vae_metrics *mt, const double *row);

/*
 * Appends the rows not yet in the file and flushes it. A failure is reported
 * as a warning and retried at the next call; returns 0 either way unless
 * memory ran out.
 */
int vae_metrics_flush(vae_metrics *mt);

/* Flushes and closes the file, and frees the table. Safe on a zeroed struct. */
void vae_metrics_close(vae_metrics *mt);

/* Rows of a group ("/train", "/eval") in DIR/metrics.h5 (0 when there is no such file). */
long vae_metrics_count(const char *dir, const char *group);

#endif
