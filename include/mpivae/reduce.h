/*
 * reduce.h: the step's gradient reduction and update, in one of three modes
 * behind one interface (the training loop does not know which).
 *
 * Every rank adds its rows' gradients into the model's gradient block and
 * writes the step's statistics into the block's tail (model.h's VAE_GX_*:
 * flags, then one slot per loss term); one reduction sums the whole block,
 * so every rank reads the same sums and takes the same decisions. Then each
 * parameter group is updated by its own Adam (or left out of the step).
 *
 *   VAE_AR_SHM       the ranks of a node sum their blocks in MPI-3 shared
 *                    memory (a reduce-scatter by loads and stores), the node
 *                    leaders then MPI_Allreduce; the node holds ONE copy of
 *                    the parameters and moments, and each rank updates its
 *                    slice of it.
 *   VAE_AR_BLOCKING  one MPI_Allreduce after backward.
 *   VAE_AR_OVERLAP   MPI_Iallreduce buckets started as backward finishes
 *                    each range of the block (vae_model.grad_ready).
 * The gradient norm is summed in the fixed blocks of optim.h in every mode,
 * and Adam is elementwise, so the three give the same bits at a given rank
 * count.
 *
 * A step:
 *   float *tail = vae_reducer_begin(r);  (cleared; write COUNT, STOP, FAIL)
 *   vae_reducer_set_terms(r, terms): the array the pass writes its term
 *       sums into before its backward starts; they go into the tail (with
 *       the non-finite flag) with the first bucket (overlap) or at the sum;
 *   backward (vae_model_pass), or vae_reducer_no_rows(r) on a rank without rows;
 *   vae_reducer_sum(r, &sum, &sumsq): sum[n_params + tail] and the norm;
 *   vae_reducer_update(r, apply): Adam on the groups with apply[g] != 0;
 *   vae_reducer_end(r): the node's parameters are updated and its blocks free.
 */
#ifndef MPIVAE_REDUCE_H
#define MPIVAE_REDUCE_H

#include "mpivae/model.h"

#include <mpi.h>

/* How the gradient block is summed across ranks each step. */
enum vae_allreduce_mode {
    VAE_AR_SHM = 0,      /* node shared memory, then MPI_Allreduce among node leaders */
    VAE_AR_BLOCKING = 1, /* one MPI_Allreduce after backward */
    VAE_AR_OVERLAP = 2   /* MPI_Iallreduce buckets started during backward */
};

typedef struct vae_shm_reduce vae_shm_reduce;
typedef struct vae_overlap vae_overlap;

typedef struct vae_reducer {
    int mode;
    MPI_Comm comm;
    vae_model *m;
    size_t np, n;        /* parameters; floats in the block (with the tail) */
    float *own_grads;    /* the model's own gradient block (shm swaps in the shared one) */
    vae_shm_reduce *shm;
    vae_overlap *ov;
    double *part;        /* [norm blocks] */
    const float *sum;    /* the summed block of the last vae_reducer_sum */
    float *tail;         /* this step's tail on this rank */
    const double *terms; /* this step's term sums on this rank (vae_reducer_set_terms) */
    int terms_done;
} vae_reducer;

/*
 * Sets up mode over comm for model m (every rank, collectively); shm moves
 * the model onto the node's shared parameters and moments. Returns 0 or a
 * negative status (reported).
 */
int vae_reducer_init(vae_reducer *r, int mode, vae_model *m, MPI_Comm comm);

/* Starts a step: returns the rank's tail [grad_extra] (cleared), gradients cleared as the mode needs. */
float *vae_reducer_begin(vae_reducer *r);

/* The array of the rank's term sums (n_terms) for this step (NULL or unset: zeros). */
void vae_reducer_set_terms(vae_reducer *r, const double *terms);

/* A rank without rows this step takes part in the reduction with zeros. */
void vae_reducer_no_rows(vae_reducer *r);

/* Completes the sum: *sum is the summed block (with the tail), *sumsq the squared gradient norm. MPI status. */
int vae_reducer_sum(vae_reducer *r, const float **sum, double *sumsq);

/* Adam on the groups with apply[g] != 0 (step counts already advanced by the caller); apply NULL: none. */
void vae_reducer_update(vae_reducer *r, const unsigned char *apply);

/* Ends the step (shm: a node barrier, after which the summed block is no longer valid). */
void vae_reducer_end(vae_reducer *r);

/* One line for the run's summary, e.g. "shm: node shared memory, 2 nodes, MPI_Allreduce across nodes". */
void vae_reducer_describe(const vae_reducer *r, char *buf, size_t len);

/* Gives the model its own blocks back and frees the reduction's; safe on a zeroed one. */
void vae_reducer_free(vae_reducer *r);

#endif
