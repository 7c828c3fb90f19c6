/*
 * train.h: the training configuration, the training state stored in
 * checkpoints, and the data-parallel training loop.
 */
#ifndef MPIVAE_TRAIN_H
#define MPIVAE_TRAIN_H

#include "mpivae/config.h"
#include "mpivae/dataset.h"
#include "mpivae/model.h"
#include "mpivae/reduce.h"

#include <mpi.h>
#include <stdint.h>
#include <string.h>

/* Exit status of `mpivae train` after a signal made it checkpoint and stop: requeue and resume. */
#define VAE_EXIT_REQUEUE 75

/* Steps per epoch for N rows and global batch B (the last short batch counts). */
static inline long vae_steps_per_epoch(int64_t N, int B) { return (long)((N + B - 1) / B); }

/*
 * Runs training on comm. resume_path: NULL for a fresh run, a checkpoint file,
 * or "auto" (newest checkpoint in cfg->out that verifies; fresh when none).
 * set holds the bits (vae_config_bit) of the fields given on the command line,
 * for what a resume may change.
 * Returns 0 when finished, VAE_ESTOP after a signal-requested checkpoint, or
 * a negative status.
 */
int vae_train_run(vae_config *cfg, const char *resume_path, uint64_t set, MPI_Comm comm);

/* Evaluation of every row of data, shared across comm: sums per sample over all rows. */
typedef struct vae_eval_result {
    double loss;                     /* per sample */
    double terms[VAE_MAX_TERMS];     /* each of the family's terms, per sample */
    int64_t rows;
} vae_eval_result;

int vae_evaluate(vae_model *m, vae_data *d, MPI_Comm comm, uint64_t seed, double beta,
                 int use_mean, int64_t limit, vae_eval_result *res);

/*
 * The accuracy of an evaluation, 1 - the mean of the model's reported-only
 * term "error" (a classifier's: 1 for a wrong class), or -1 when it has none.
 */
static inline double vae_eval_accuracy(const vae_model *m, const vae_eval_result *r)
{
    for (int i = 0; i < m->n_terms; i++)
        if (m->terms[i].kind == VAE_TERM_STAT && !strcmp(m->terms[i].name, "error")) return 1.0 - r->terms[i];
    return -1.0;
}

/* Asks training to stop at the end of the current step (from a signal handler or a test). */
void vae_train_request_stop(void);

#endif
