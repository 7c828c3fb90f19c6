/*
 * rng.c: Philox4x32-10 and the keyed draws built on it (see rng.h).
 */
#include "mpivae/rng.h"

#include <math.h>

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

void vae_philox4x32(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4])
{
    uint32_t c0 = ctr[0], c1 = ctr[1], c2 = ctr[2], c3 = ctr[3];
    uint32_t k0 = key[0], k1 = key[1];
    for (int r = 0; r < 10; r++) {
        uint64_t p0 = (uint64_t)PHILOX_M0 * c0;
        uint64_t p1 = (uint64_t)PHILOX_M1 * c2;
        uint32_t hi0 = (uint32_t)(p0 >> 32), lo0 = (uint32_t)p0;
        uint32_t hi1 = (uint32_t)(p1 >> 32), lo1 = (uint32_t)p1;
        c0 = hi1 ^ c1 ^ k0;
        c1 = lo1;
        c2 = hi0 ^ c3 ^ k1;
        c3 = lo0;
        k0 += PHILOX_W0;
        k1 += PHILOX_W1;
    }
    out[0] = c0; out[1] = c1; out[2] = c2; out[3] = c3;
}

/*
 * The counter is (block index i, purpose, low halves of a and b); the key is
 * the seed with the high halves of a and b folded in, so that large positions
 * stay distinct.
 */
void vae_rng_block(uint64_t seed, uint32_t purpose, uint64_t a, uint64_t b, uint32_t i,
                   uint32_t out[4])
{
    uint32_t key[2] = { (uint32_t)seed ^ (uint32_t)(a >> 32) * 0x85EBCA6Bu,
                        (uint32_t)(seed >> 32) ^ (uint32_t)(b >> 32) * 0xC2B2AE35u };
    uint32_t ctr[4] = { i, purpose, (uint32_t)a, (uint32_t)b };
    vae_philox4x32(ctr, key, out);
}

static float u32_to_unit(uint32_t x) { return (float)(x >> 8) * (1.0f / 16777216.0f); }

void vae_rng_uniform(uint64_t seed, uint32_t purpose, uint64_t a, uint64_t b, float *out,
                     int64_t n)
{
    uint32_t r[4];
    for (int64_t j = 0; j < n; j += 4) {
        vae_rng_block(seed, purpose, a, b, (uint32_t)(j / 4), r);
        for (int k = 0; k < 4 && j + k < n; k++) out[j + k] = u32_to_unit(r[k]);
    }
}

void vae_rng_normal(uint64_t seed, uint32_t purpose, uint64_t a, uint64_t b, float *out,
                    int64_t n)
{
    uint32_t r[4];
    for (int64_t j = 0; j < n; j += 4) {
        vae_rng_block(seed, purpose, a, b, (uint32_t)(j / 4), r);
        for (int k = 0; k < 4; k += 2) {
            /* u1 in (0, 1] so that log(u1) is finite. */
            double u1 = ((double)(r[k] >> 8) + 1.0) * (1.0 / 16777216.0);
            double u2 = (double)(r[k + 1] >> 8) * (1.0 / 16777216.0);
            double rad = sqrt(-2.0 * log(u1));
            double th = 6.283185307179586 * u2;
            if (j + k < n) out[j + k] = (float)(rad * cos(th));
            if (j + k + 1 < n) out[j + k + 1] = (float)(rad * sin(th));
        }
    }
}

uint64_t vae_rng_u64(uint64_t seed, uint32_t purpose, uint64_t a, uint64_t b)
{
    uint32_t r[4];
    vae_rng_block(seed, purpose, a, b, 0, r);
    return ((uint64_t)r[0] << 32) | r[1];
}
