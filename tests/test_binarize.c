/*
 * test_binarize.c: tests of --binarize's draw (dataset.h,
 * vae_data_binarize_rows) and of the active-units count (latent.h,
 * vae_active_count).
 *
 * Binarization: (a) every value becomes exactly 0 or 1, 0 stays 0 and 1
 * stays 1; (b) pixel j of row r is 1 exactly when u < v with u =
 * vae_rng_uniform(seed, VAE_RNG_BINARIZE, a, r)[j] (the documented key); (c)
 * over 20000 rows of 64 pixels (8 pixels at each of 8 intensities v) the
 * frequency of ones at intensity v is v within 0.006 (160000 draws each: a
 * standard error of at most 0.00125, so 0.006 is nearly 5 of them); (d) the same key gives the
 * same bits whatever the batch (one call of n rows equals n calls of one row,
 * in any order), another epoch (a), seed or row gives other bits; (e) the
 * fixed key (seed 0x6d70697661650001, a = 2^64 - 1) is spelled as documented.
 *
 * Active units: vae_active_count on known sums (variances 0, 0.005, 0.0101,
 * 0.02, 4 around large means) and rows = 0. The exit code is the verdict.
 */
#include "mpivae/dataset.h"
#include "mpivae/latent.h"
#include "mpivae/rng.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

#define D 64

/* Row of intensities: pixel j has value levels[j % 8]. */
static const float levels[8] = { 0.0f, 1.0f, 0.5f, 0.1f, 0.9f, 0.25f, 0.75f, 1.0f / 255.0f };

static void fill_rows(float *x, int n)
{
    for (int i = 0; i < n; i++)
        for (int j = 0; j < D; j++) x[(size_t)i * D + j] = levels[j % 8];
}

static void test_values_and_key(void)
{
    enum { N = 16 };
    float x[N * D], u[D];
    int64_t idx[N];
    for (int i = 0; i < N; i++) idx[i] = 1000 + 7 * i;
    fill_rows(x, N);
    vae_data_binarize_rows(x, idx, N, D, 42, 3);
    int exact = 1, ends = 1, key = 1;
    for (int i = 0; i < N; i++) {
        vae_rng_uniform(42, VAE_RNG_BINARIZE, 3, (uint64_t)idx[i], u, D);
        for (int j = 0; j < D; j++) {
            float v = x[(size_t)i * D + j], p = levels[j % 8];
            exact &= v == 0.0f || v == 1.0f;
            if (p == 0.0f) ends &= v == 0.0f;
            if (p == 1.0f) ends &= v == 1.0f;
            key &= v == (u[j] < p ? 1.0f : 0.0f);
        }
    }
    CHECK(exact);
    CHECK(ends);
    CHECK(key);
}

static void test_frequency(void)
{
    enum { N = 20000 };
    float *x = malloc((size_t)N * D * sizeof(float));
    int64_t *idx = malloc((size_t)N * sizeof(int64_t));
    if (!x || !idx) {
        CHECK(!"allocation");
        free(x);
        free(idx);
        return;
    }
    fill_rows(x, N);
    for (int i = 0; i < N; i++) idx[i] = i;
    vae_data_binarize_rows(x, idx, N, D, 7, 0);
    double ones[8] = { 0 };
    for (int i = 0; i < N; i++)
        for (int j = 0; j < D; j++) ones[j % 8] += x[(size_t)i * D + j];
    for (int k = 0; k < 8; k++) CHECK_CLOSE("frequency of ones at one intensity", ones[k] / (N * D / 8), levels[k], 0.0, 0.006);
    free(x);
    free(idx);
}

/* The bits of n rows in one call against one call a row, in reverse order. */
static void test_batch_independence(void)
{
    enum { N = 9 };
    float a[N * D], b[N * D];
    int64_t idx[N];
    for (int i = 0; i < N; i++) idx[i] = 5 * i + 2;
    fill_rows(a, N);
    fill_rows(b, N);
    vae_data_binarize_rows(a, idx, N, D, 11, 4);
    for (int i = N - 1; i >= 0; i--) vae_data_binarize_rows(b + (size_t)i * D, &idx[i], 1, D, 11, 4);
    CHECK(memcmp(a, b, sizeof a) == 0);
}

/* The number of the D pixels of row `row` whose bit differs between two keys. */
static int differing(uint64_t s1, uint64_t a1, int64_t r1, uint64_t s2, uint64_t a2, int64_t r2)
{
    float x[D], y[D];
    for (int j = 0; j < D; j++) x[j] = y[j] = 0.5f;
    vae_data_binarize_rows(x, &r1, 1, D, s1, a1);
    vae_data_binarize_rows(y, &r2, 1, D, s2, a2);
    int n = 0;
    for (int j = 0; j < D; j++) n += x[j] != y[j];
    return n;
}

static void test_keys(void)
{
    CHECK_EQ(differing(1, 0, 5, 1, 0, 5), 0);                /* the same key: the same bits */
    CHECK_CMP_INT(differing(1, 0, 5, 1, 1, 5), >, 10);       /* another epoch: about half of 64 differ */
    CHECK_CMP_INT(differing(1, 0, 5, 2, 0, 5), >, 10);       /* another seed */
    CHECK_CMP_INT(differing(1, 0, 5, 1, 0, 6), >, 10);       /* another row */
    CHECK_CMP_INT(differing(1, 0, 5, 1, (uint64_t)1 << 32, 5), >, 10); /* an epoch in the high bits */
    CHECK(VAE_BINARIZE_FIXED_SEED == 0x6d70697661650001ull);
    CHECK(VAE_BINARIZE_FIXED_A == UINT64_MAX);
    CHECK(VAE_RNG_BINARIZE == 8);
    CHECK_CMP_INT(differing(VAE_BINARIZE_FIXED_SEED, VAE_BINARIZE_FIXED_A, 3, 1, 0, 3), >, 10);
}

static void test_active_count(void)
{
    /* Five dimensions over 4 rows: values m +- s, so the population variance is s^2. */
    const double m[5] = { 3.0, -1.0, 100.0, 0.5, 0.0 }, s[5] = { 0.0, 0.0707106781, 0.1004987562, 0.1414213562, 2.0 };
    double sum[5], sumsq[5];
    for (int j = 0; j < 5; j++) {
        sum[j] = sumsq[j] = 0.0;
        for (int i = 0; i < 4; i++) {
            double v = m[j] + (i % 2 ? s[j] : -s[j]);
            sum[j] += v;
            sumsq[j] += v * v;
        }
    }
    /* Variances 0, 0.005, 0.0101, 0.02, 4: three above 0.01. */
    CHECK_EQ(vae_active_count(sum, sumsq, 5, 4.0, VAE_ACTIVE_THRESHOLD), 3);
    CHECK_EQ(vae_active_count(sum, sumsq, 5, 4.0, 0.015), 2);
    CHECK_EQ(vae_active_count(sum, sumsq, 5, 4.0, 5.0), 0);
    CHECK_EQ(vae_active_count(sum, sumsq, 2, 4.0, VAE_ACTIVE_THRESHOLD), 0);
    CHECK_EQ(vae_active_count(sum, sumsq, 5, 0.0, VAE_ACTIVE_THRESHOLD), 0);
}

int main(void)
{
    test_values_and_key();
    test_frequency();
    test_batch_independence();
    test_keys();
    test_active_count();
    printf("test_binarize: %d checks, %d failed\n", g_checks, g_failures);
    return g_failures ? 1 : 0;
}
