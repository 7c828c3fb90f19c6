/*
 * checkpoint.h: HDF5 checkpoints, written atomically by rank 0.
 *
 * Layout: /params/<name> float32 in PyTorch's layout, /optimizer/m/<name> and
 * /optimizer/v/<name> (Adam's moments), /ema/<name> (the parameters' moving
 * average, with --ema only), each dataset chunked with HDF5's
 * Fletcher32 checksum; root attributes: format, format_version, version,
 * step, epoch, epoch_step, adam_t, skips, world_size, seed, and the whole
 * configuration (cfg.*). Written to ".step-<N>.h5.tmp" in the same folder,
 * flushed, fsync'ed, renamed to "step-<N>.h5", and the folder fsync'ed.
 */
#ifndef MPIVAE_CHECKPOINT_H
#define MPIVAE_CHECKPOINT_H

#include "mpivae/model.h"
#include "mpivae/config.h"

#define VAE_CKPT_FORMAT "mpivae-checkpoint"
#define VAE_CKPT_VERSION 1

/* Writes DIR/checkpoints/step-<step>.h5 atomically, then keeps the newest `keep`. path_out gets the path. */
int vae_ckpt_save(const char *dir, const vae_model *m, const vae_config *cfg,
                  const vae_train_state *st, int keep, char *path_out, size_t path_len);

/* Reads and verifies the attributes (configuration and state) of a checkpoint. */
int vae_ckpt_read_meta(const char *path, vae_config *cfg, vae_train_state *st);

/* What vae_ckpt_read_tensors reads. */
enum {
    VAE_CKPT_PARAMS = 0, /* /params */
    VAE_CKPT_ALL = 1,    /* /params, Adam's moments and step counts, and /ema when the file has it (into m->ema,
                          * allocated here when NULL): what a resume needs */
    VAE_CKPT_USE = 2     /* the weights a tool uses: /ema when the file has it (trained with --ema), else /params */
};

/*
 * Reads tensors of m from path (what: the enum above), checking shapes
 * against m and the Fletcher32 checksums.
 */
int vae_ckpt_read_tensors(const char *path, vae_model *m, int what);

/* 1 when the checkpoint at path holds the parameters' moving average (/ema), else 0. */
int vae_ckpt_has_ema(const char *path);

/*
 * Finds the newest checkpoint in DIR/checkpoints that verifies completely
 * (attributes, shapes, checksums), saying which ones it skipped and why.
 * Returns 1 and fills path when found, 0 when there is none, negative on error.
 */
int vae_ckpt_find_latest(const char *dir, char *path, size_t path_len);

/*
 * Checks that every tensor of a planned model (vae_model_plan) is in path
 * with its shape and a floating-point type, reading no values: done before a
 * model of the size the attributes give is allocated.
 */
int vae_ckpt_check_tensors(const char *path, const vae_model *plan, int what);

/*
 * The checkpoint a tool or a resume names: a file as it is, or for a run
 * directory the newest checkpoint in DIR/checkpoints that verifies (as
 * vae_ckpt_find_latest). Fills path; returns 0, or an error naming the
 * directory when it holds no good checkpoint.
 */
int vae_ckpt_resolve(const char *given, char *path, size_t path_len);

/* Test hook: when the environment variable MPIVAE_TEST_CRASH_BEFORE_RENAME is set, the
 * process aborts after writing the temporary file and before publishing it. */

#endif
