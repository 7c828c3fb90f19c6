/*
 * rundir.h: the run directory of `mpivae train --out DIR` (DESIGN.md):
 *
 *   DIR/lock                       held (flock) by the run using DIR; its
 *                                  text names the holder ("pid N on host")
 *   DIR/checkpoints/step-<N>.h5    checkpoints, written as
 *   DIR/checkpoints/.step-<N>.h5.tmp  and renamed into place
 *   DIR/metrics.h5                 metrics.h
 *   DIR/samples.h5, DIR/samples/   tools.h
 *   DIR/report.html                report.h (at every evaluation and the end)
 */
#ifndef MPIVAE_RUNDIR_H
#define MPIVAE_RUNDIR_H

#include <stddef.h>

/* DIR/checkpoints/step-<step>.h5 and its temporary name. */
void vae_rundir_ckpt_path(const char *dir, long step, char *path, size_t len);
void vae_rundir_ckpt_tmp(const char *dir, long step, char *path, size_t len);

/* The steps of DIR/checkpoints/step-<N>.h5, newest first (at most max). Returns how many. */
int vae_rundir_list_checkpoints(const char *dir, long *steps, int max);

/*
 * Holds an exclusive lock on DIR/lock until vae_rundir_unlock (or the
 * process's end); refuses, naming the holder, when another run holds it.
 */
int vae_rundir_lock(const char *dir);

/* Clears the holder's line (a finished run leaves no stale "pid N on host") and releases the lock. */
void vae_rundir_unlock(void);

/*
 * A new run (no --resume) never starts over a run directory that holds
 * checkpoints or metrics rows: it would mix two runs' files. Returns 0, or
 * an error (reported) naming what DIR holds.
 */
int vae_rundir_refuse_existing(const char *dir);

/* Removes the temporary checkpoint and report files that a crash during a write left behind, saying so. */
void vae_rundir_remove_stale_tmp(const char *dir);

#endif
