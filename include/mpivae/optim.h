/*
 * optim.h: Adam over the flat parameter block (one loop, PyTorch's formula).
 */
#ifndef MPIVAE_OPTIM_H
#define MPIVAE_OPTIM_H

#include <stddef.h>

typedef struct vae_adam {
    float lr, beta1, beta2, eps;
    float gscale; /* the gradient is multiplied by it first (1; --clip sets it per step) */
} vae_adam;

/*
 * 1 where the updates below flush subnormal moments and steps to zero (x86
 * with SSE: the CPU's flush-to-zero and denormals-are-zero modes, set around
 * the loop and then restored; optim.c), 0 where they are kept.
 */
#if defined(__SSE__)
#define VAE_ADAM_FTZ 1
#else
#define VAE_ADAM_FTZ 0
#endif

/*
 * Step t (1-based): m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
 * p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps).
 */
void vae_adam_update(float *p, const float *g, float *m, float *v, size_t n, const vae_adam *h,
                     long t);

/* The same update, setting g to zero as it goes (the gradient block is ready for the next step). */
void vae_adam_update_clear(float *p, float *g, float *m, float *v, size_t n, const vae_adam *h, long t);

/*
 * --lr-decay N, --lr-floor F: the factor of every learning rate at step t
 * (0-based, the step being computed): F + (1 - F) (1 + cos(pi t / N)) / 2 for
 * t < N, F from step N on; 1 when N is 0. PyTorch's CosineAnnealingLR with
 * T_max = N and eta_min = F lr, held at its end.
 */
double vae_lr_factor(long t, long n, double floor);

/*
 * Weight averaging (--ema D): after the t-th update (t >= 1), avg becomes the
 * exponentially weighted mean of the parameters after updates 1..t, weights
 * proportional to D^(t-i), normalised (the bias correction of an average
 * started at zero): avg = b avg + (1 - b) p with b = D (1 - D^(t-1)) / (1 - D^t),
 * so the first update copies p. Returns b.
 */
double vae_ema_decay(double d, long t);
void vae_ema_update(float *avg, const float *p, size_t n, double d, long t);

/* Sum of squares of g[n], in double. */
double vae_sumsq(const float *g, size_t n);

/*
 * The gradient norm in fixed blocks, so that ranks can each square a part of
 * the block and the total is the same whatever the split: block b covers
 * [b * VAE_NORM_BLOCK, (b + 1) * VAE_NORM_BLOCK) of the n floats.
 */
enum { VAE_NORM_BLOCK = 16384 };
static inline size_t vae_norm_nblocks(size_t n) { return (n + VAE_NORM_BLOCK - 1) / VAE_NORM_BLOCK; }

/* part[b] = vae_sumsq of block b of g[n], for blocks b0 <= b < b1. */
void vae_sumsq_blocks(const float *g, size_t n, size_t b0, size_t b1, double *part);

/*
 * dst[i] += src[i] and src[i] = 0 for i < n; returns the sum of squares of
 * the new dst[0..m) (m <= n), equal to vae_sumsq(dst, m) afterwards, bit for
 * bit: one pass instead of two.
 */
double vae_add_clear_sumsq(float *dst, float *src, size_t n, size_t m);

/* Sum of part[0..nb) in order. */
double vae_sum_parts(const double *part, size_t nb);

#endif
