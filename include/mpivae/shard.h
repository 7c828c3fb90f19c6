/*
 * shard.h: which rows a rank takes. The one rule for every split of work
 * across ranks (a training step's global batch, an evaluation, the latent
 * tools): rank r of P takes the contiguous items [lo, hi) of n, in whole
 * units of `unit` items counted from the first (the last unit may be
 * short): units [U*r/P, U*(r+1)/P) of the U = ceil(n/unit) units. Every
 * item goes to exactly one rank, in order; a rank may get none.
 */
#ifndef MPIVAE_SHARD_H
#define MPIVAE_SHARD_H

#include <stdint.h>

static inline void vae_shard(int64_t n, int P, int r, int64_t unit, int64_t *lo, int64_t *hi)
{
    int64_t U = (n + unit - 1) / unit;
    int64_t u0 = U * r / P, u1 = U * (r + 1) / P;
    *lo = u0 * unit < n ? u0 * unit : n;
    *hi = u1 * unit < n ? u1 * unit : n;
}

#endif
