/*
 * rng.h: counter-based random numbers (Philox4x32-10, Salmon et al. 2011).
 *
 * Every draw is a pure function of (seed, purpose, a, b): no state, so the
 * numbers a sample or a parameter gets do not depend on how work is split
 * across ranks. `purpose` separates streams (init, noise, permutation, ...);
 * `a` and `b` are positions, e.g. (step, global sample index).
 */
#ifndef MPIVAE_RNG_H
#define MPIVAE_RNG_H

#include <stdint.h>

enum vae_rng_purpose {
    VAE_RNG_INIT = 1,     /* parameter initialisation: a = tensor index */
    VAE_RNG_EPS = 2,      /* reparameterisation noise: a = step, b = sample */
    VAE_RNG_PERM = 3,     /* epoch permutation: a = epoch */
    VAE_RNG_PRIOR = 4,    /* prior samples: a = call id, b = sample */
    VAE_RNG_EVAL = 5,     /* evaluation noise: b = sample index */
    VAE_RNG_SYNTH = 6,    /* synthetic data sets */
    VAE_RNG_IW = 7,       /* importance samples of the IW bound: a = row, b = sample k */
    VAE_RNG_BINARIZE = 8  /* --binarize: a = epoch (UINT64_MAX: the fixed test binarization), b = row */
};

/* One Philox4x32-10 block: 4 x 32 random bits for counter (c0..c3), key (k0, k1). */
void vae_philox4x32(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]);

/* Four 32-bit words for (seed, purpose, a, b, i): i counts blocks within (a, b). */
void vae_rng_block(uint64_t seed, uint32_t purpose, uint64_t a, uint64_t b, uint32_t i,
                   uint32_t out[4]);

/* Fills n uniform floats in [0, 1) (24-bit resolution). */
void vae_rng_uniform(uint64_t seed, uint32_t purpose, uint64_t a, uint64_t b, float *out,
                     int64_t n);

/* Fills n standard normal floats (Box-Muller on pairs of uniforms). */
void vae_rng_normal(uint64_t seed, uint32_t purpose, uint64_t a, uint64_t b, float *out,
                    int64_t n);

/* One uniform 64-bit value for (seed, purpose, a, b). */
uint64_t vae_rng_u64(uint64_t seed, uint32_t purpose, uint64_t a, uint64_t b);

#endif
