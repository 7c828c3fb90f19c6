/*
 * train.h: the training configuration, the training state stored in
 * checkpoints, and the data-parallel training loop.
 */
#ifndef MPIVAE_TRAIN_H
#define MPIVAE_TRAIN_H

#include "mpivae/dataset.h"
#include "mpivae/model.h"

#include <mpi.h>
#include <stdint.h>

/* Exit status of `mpivae train` after a signal made it checkpoint and stop: requeue and resume. */
#define VAE_EXIT_REQUEUE 75

/* How the gradient block is summed across ranks each step. */
enum vae_allreduce_mode {
    VAE_AR_SHM = 0,      /* node shared memory, then MPI_Allreduce among node leaders */
    VAE_AR_BLOCKING = 1, /* one MPI_Allreduce after backward */
    VAE_AR_OVERLAP = 2   /* MPI_Iallreduce buckets started during backward */
};

/* Everything `mpivae train` was asked for (stored in every checkpoint). */
typedef struct vae_config {
    vae_arch arch;           /* C, Hh, W come from the data */
    char data[VAE_PATH_LEN]; /* FILE:/dataset, as given (relative to the working directory) */
    char test_data[VAE_PATH_LEN]; /* "" when there is none */
    char data_abs[VAE_PATH_LEN], test_data_abs[VAE_PATH_LEN]; /* the same with the file's absolute path ("" unknown) */
    char out[VAE_PATH_LEN];
    double beta;             /* KL weight */
    long warmup;             /* steps of linear KL warm-up from 0 to beta (0: none) */
    double capacity_max;     /* KL capacity target C_max (< 0: off) */
    long capacity_steps;     /* steps over which C rises linearly from 0 to C_max */
    int epochs;
    int batch;               /* global batch */
    double lr, beta1, beta2, adam_eps;
    uint64_t seed;
    long log_every, eval_every, sample_every, ckpt_every;
    int keep;                /* checkpoints kept */
    int max_skips;           /* consecutive non-finite steps before stopping */
    int in_memory;           /* 1, 0, -1 auto */
    long max_steps;          /* stop after this global step (0: run all epochs) */
    int allreduce;           /* enum vae_allreduce_mode */
} vae_config;

/* Where training stands (stored in every checkpoint). */
typedef struct vae_train_state {
    long step;       /* optimizer steps taken (global step count) */
    long epoch;      /* current epoch, 0-based */
    long epoch_step; /* steps done in the current epoch */
    long adam_t;     /* Adam's update count (skipped steps do not count) */
    long skips;      /* consecutive skipped steps */
    int world_size;  /* ranks when saved */
    long data_rows;  /* rows of the training data when saved (0: not recorded) */
} vae_train_state;

/* Fills the defaults (those of the PyTorch VAE example). */
void vae_config_defaults(vae_config *c);

/*
 * The checks every configuration passes, from the command line or from a
 * checkpoint: each number within the range the command line takes, the input
 * shape usable by the model. Returns 0, or VAE_EINVAL with why[] naming the
 * checkpoint attribute, its value and the range (no message printed).
 */
int vae_config_check(const vae_config *c, char *why, size_t len);

/* Steps per epoch for N rows and global batch B (the last short batch counts). */
static inline long vae_steps_per_epoch(int64_t N, int B) { return (long)((N + B - 1) / B); }

/*
 * Runs training on comm. resume_path: NULL for a fresh run, a checkpoint file,
 * or "auto" (newest checkpoint in cfg->out that verifies; fresh when none).
 * explicit_mask marks which config fields the user set (for resume checks).
 * Returns 0 when finished, VAE_ESTOP after a signal-requested checkpoint, or
 * a negative status.
 */
int vae_train_run(vae_config *cfg, const char *resume_path, unsigned explicit_mask, MPI_Comm comm);

/* Bits of explicit_mask: flags that must agree with a checkpoint on resume. */
enum {
    VAE_SET_MODEL = 1u << 0, VAE_SET_HIDDEN = 1u << 1, VAE_SET_LATENT = 1u << 2,
    VAE_SET_LOSS = 1u << 3, VAE_SET_BATCH = 1u << 4, VAE_SET_SEED = 1u << 5,
    VAE_SET_DATA = 1u << 6, VAE_SET_LR = 1u << 7, VAE_SET_BETA = 1u << 8,
    VAE_SET_EPOCHS = 1u << 9, VAE_SET_INTERVALS = 1u << 10, VAE_SET_CAPACITY = 1u << 11,
    VAE_SET_TEST = 1u << 12, VAE_SET_EVAL = 1u << 13, VAE_SET_STEPS = 1u << 14
};

/* Evaluation of every row of data, shared across comm: sums per sample over all rows. */
typedef struct vae_eval_result {
    double loss, recon, kl; /* per sample */
    int64_t rows;
} vae_eval_result;

int vae_evaluate(vae_model *m, vae_data *d, MPI_Comm comm, uint64_t seed, double beta,
                 int use_mean, int64_t limit, vae_eval_result *res);

/* Asks training to stop at the end of the current step (from a signal handler or a test). */
void vae_train_request_stop(void);

#endif
