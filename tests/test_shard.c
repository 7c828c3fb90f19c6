/*
 * test_shard.c: the one rule for which rows a rank takes (shard.h), in
 * process, for every rank count from 1 to 8.
 *
 * For n items (0, fewer than the ranks, uneven, exact multiples, large) in
 * units of 1 (a training step's global batch, an evaluation) and of
 * VAE_LATENT_CHUNK (the latent tools), and P = 1..8 ranks:
 *  - the shards are contiguous and in rank order: rank 0 starts at 0, each
 *    rank starts where the one before ended, the last ends at n, so every
 *    item goes to exactly one rank;
 *  - every shard starts on a unit boundary (or at n);
 *  - the shards' unit counts differ by at most one (balanced), and the ranks
 *    with no items are exactly those the unit count leaves out (U < P);
 *  - for unit 1 the shard is [n*r/P, n*(r+1)/P), the formula DESIGN.md gives,
 *    and vae_latent_share gives the unit-VAE_LATENT_CHUNK shard.
 * And the training step's use: the global batches of an epoch of N rows at
 * batch B, split over P ranks, hand every row of the epoch to exactly one
 * rank once.
 */
#include "mpivae/latent.h"
#include "mpivae/shard.h"

#include <stdlib.h>
#include <string.h>

#include "check.h"

static void check_split(int64_t n, int P, int64_t unit)
{
    int64_t prev_hi = 0, units_min = INT64_MAX, units_max = -1;
    int64_t U = (n + unit - 1) / unit;
    int empty = 0;
    for (int r = 0; r < P; r++) {
        int64_t lo, hi;
        vae_shard(n, P, r, unit, &lo, &hi);
        CHECK_EQ(lo, prev_hi);
        CHECK(lo <= hi);
        CHECK(lo % unit == 0 || lo == n);
        int64_t units = (hi - lo + unit - 1) / unit;
        if (units < units_min) units_min = units;
        if (units > units_max) units_max = units;
        empty += hi == lo;
        if (unit == 1) {
            CHECK_EQ(lo, n * r / P);
            CHECK_EQ(hi, n * (r + 1) / P);
        }
        if (unit == VAE_LATENT_CHUNK) {
            int64_t a, b;
            vae_latent_share(n, P, r, &a, &b);
            CHECK_EQ(a, lo);
            CHECK_EQ(b, hi);
        }
        prev_hi = hi;
    }
    CHECK_EQ(prev_hi, n);
    CHECK(units_max - units_min <= 1);
    CHECK_EQ(empty, U < P ? P - (int)U : 0);
}

/* An epoch of N rows in global batches of B over P ranks: every position taken once. */
static void check_epoch(int64_t N, int B, int P)
{
    unsigned char *seen = calloc((size_t)N, 1);
    for (int64_t pos = 0; pos < N; pos += B) {
        int64_t Bt = N - pos < B ? N - pos : B;
        for (int r = 0; r < P; r++) {
            int64_t lo, hi;
            vae_shard(Bt, P, r, 1, &lo, &hi);
            for (int64_t i = lo; i < hi; i++) seen[pos + i]++;
        }
    }
    int64_t once = 0;
    for (int64_t i = 0; i < N; i++) once += seen[i] == 1;
    CHECK_EQ(once, N);
    free(seen);
}

int main(void)
{
    static const int64_t ns[] = { 0, 1, 2, 3, 5, 7, 8, 9, 17, 30, 64, 255, 256, 257, 511, 513, 1000, 2049, 60000 };
    static const int64_t units[] = { 1, 3, VAE_LATENT_CHUNK };
    for (int P = 1; P <= 8; P++)
        for (size_t i = 0; i < sizeof ns / sizeof ns[0]; i++)
            for (size_t u = 0; u < sizeof units / sizeof units[0]; u++) check_split(ns[i], P, units[u]);
    /* 512 rows at batch 30 (the MPI tests' set: a last batch of 2 rows), and uneven others. */
    for (int P = 1; P <= 8; P++) {
        check_epoch(512, 30, P);
        check_epoch(1000, 128, P);
        check_epoch(7, 7, P);
    }
    /* Large counts do not overflow: 2^40 items over 7 ranks. */
    int64_t lo, hi;
    vae_shard((int64_t)1 << 40, 7, 6, 1, &lo, &hi);
    CHECK_EQ(hi, (int64_t)1 << 40);
    CHECK_EQ(lo, ((int64_t)1 << 40) * 6 / 7);
    printf("test_shard: %d checks, %d failures\n", g_checks, g_failures);
    return g_failures != 0;
}
