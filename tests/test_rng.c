/*
 * test_rng.c: tests of rng.h.
 *
 * (a) vae_philox4x32 against the three published known-answer vectors of
 * Philox4x32-10 in the Random123 distribution (kat_vectors); (b) every keyed
 * draw is a pure function of (seed, purpose, a, b): the same key gives the
 * same numbers, a prefix of a longer request equals the shorter request;
 * (c) different seeds, purposes and positions (a, b), including positions
 * that differ only in their high 32 bits, give different, uncorrelated
 * streams; (d) 100000 uniforms lie in [0, 1) with mean 1/2 and variance
 * 1/12, and 100000 normals have mean 0 and variance 1 within 0.02 (the
 * standard errors are 0.003 and 0.0045, so 0.02 is more than 4 of them);
 * (e) vae_rng_u64 is deterministic and keyed. The exit code is the verdict.
 */
#include "mpivae/rng.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

#define CHECK_HEX(a, b)                                                                      \
    do {                                                                                     \
        unsigned long long a_ = (unsigned long long)(a), b_ = (unsigned long long)(b);       \
        g_checks++;                                                                          \
        if (a_ != b_) {                                                                      \
            g_failures++;                                                                    \
            fprintf(stderr, "%s:%d: check failed: %s == %s (0x%llx vs 0x%llx)\n", __FILE__, \
                    __LINE__, #a, #b, a_, b_);                                               \
        }                                                                                    \
    } while (0)

#define CHECK_NEAR(a, b, tol)                                                                \
    do {                                                                                     \
        double a_ = (double)(a), b_ = (double)(b), t_ = (double)(tol);                       \
        g_checks++;                                                                          \
        if (!(fabs(a_ - b_) <= t_)) {                                                        \
            g_failures++;                                                                    \
            fprintf(stderr, "%s:%d: check failed: |%s - %s| <= %s (%.9g vs %.9g, tol %.3g)\n",\
                    __FILE__, __LINE__, #a, #b, #tol, a_, b_, t_);                           \
        }                                                                                    \
    } while (0)

/* ---------------------------------------------------------------------- */

/* Random123 kat_vectors, lines "philox4x32 10 <ctr x4> <key x2> <expected x4>". */
static void test_philox_kat(void)
{
    static const struct {
        uint32_t ctr[4], key[2], out[4];
    } kat[] = {
        { { 0x00000000u, 0x00000000u, 0x00000000u, 0x00000000u },
          { 0x00000000u, 0x00000000u },
          { 0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u } },
        { { 0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu },
          { 0xffffffffu, 0xffffffffu },
          { 0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu } },
        { { 0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u },
          { 0xa4093822u, 0x299f31d0u },
          { 0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u } },
    };
    for (size_t i = 0; i < sizeof kat / sizeof kat[0]; i++) {
        uint32_t out[4] = { 0, 0, 0, 0 };
        vae_philox4x32(kat[i].ctr, kat[i].key, out);
        for (int k = 0; k < 4; k++) CHECK_HEX(out[k], kat[i].out[k]);
    }
    /* The inputs are const: calling again gives the same block. */
    uint32_t a[4], b[4];
    vae_philox4x32(kat[2].ctr, kat[2].key, a);
    vae_philox4x32(kat[2].ctr, kat[2].key, b);
    CHECK(memcmp(a, b, sizeof a) == 0);
}

/* ---------------------------------------------------------------------- */

static int floats_equal(const float *x, const float *y, size_t n)
{
    return memcmp(x, y, n * sizeof(float)) == 0;
}

/* Pearson correlation of x and y. */
static double correlation(const float *x, const float *y, size_t n)
{
    double mx = 0, my = 0;
    for (size_t i = 0; i < n; i++) {
        mx += x[i];
        my += y[i];
    }
    mx /= (double)n;
    my /= (double)n;
    double sxy = 0, sxx = 0, syy = 0;
    for (size_t i = 0; i < n; i++) {
        double dx = x[i] - mx, dy = y[i] - my;
        sxy += dx * dy;
        sxx += dx * dx;
        syy += dy * dy;
    }
    return sxy / sqrt(sxx * syy);
}

static void test_determinism(void)
{
    enum { N = 1003 }; /* not a multiple of 4: the last block is partial */
    float *x = malloc(N * sizeof(float)), *y = malloc(N * sizeof(float));
    CHECK(x && y);
    if (!x || !y) goto done;

    /* Same key, same numbers. */
    vae_rng_normal(7, VAE_RNG_EPS, 3, 11, x, N);
    vae_rng_normal(7, VAE_RNG_EPS, 3, 11, y, N);
    CHECK(floats_equal(x, y, N));
    vae_rng_uniform(7, VAE_RNG_INIT, 3, 11, x, N);
    vae_rng_uniform(7, VAE_RNG_INIT, 3, 11, y, N);
    CHECK(floats_equal(x, y, N));

    /* A shorter request is a prefix of a longer one (no hidden state, no per-call offset). */
    for (int n = 1; n <= 9; n++) {
        float s[9];
        vae_rng_normal(7, VAE_RNG_EPS, 3, 11, x, N);
        vae_rng_normal(7, VAE_RNG_EPS, 3, 11, s, n);
        CHECK(floats_equal(x, s, (size_t)n));
        vae_rng_uniform(7, VAE_RNG_EPS, 3, 11, x, N);
        vae_rng_uniform(7, VAE_RNG_EPS, 3, 11, s, n);
        CHECK(floats_equal(x, s, (size_t)n));
    }

    /* A request of n writes n floats and not one more. */
    {
        float s[8];
        for (int k = 0; k < 8; k++) s[k] = -123.0f;
        vae_rng_normal(7, VAE_RNG_EPS, 3, 11, s, 5);
        CHECK(s[5] == -123.0f && s[6] == -123.0f && s[7] == -123.0f);
        for (int k = 0; k < 8; k++) s[k] = -123.0f;
        vae_rng_uniform(7, VAE_RNG_EPS, 3, 11, s, 3);
        CHECK(s[3] == -123.0f && s[4] == -123.0f);
    }

    /* vae_rng_block is a pure function too, and vae_rng_uniform is built on it. */
    uint32_t b1[4], b2[4];
    vae_rng_block(99, VAE_RNG_PERM, 5, 6, 2, b1);
    vae_rng_block(99, VAE_RNG_PERM, 5, 6, 2, b2);
    CHECK(memcmp(b1, b2, sizeof b1) == 0);
    vae_rng_block(99, VAE_RNG_PERM, 5, 6, 3, b2);
    CHECK(memcmp(b1, b2, sizeof b1) != 0);

    /* vae_rng_u64: deterministic, keyed by every argument. */
    uint64_t u = vae_rng_u64(5, VAE_RNG_PERM, 1, 2);
    CHECK_HEX(vae_rng_u64(5, VAE_RNG_PERM, 1, 2), u);
    CHECK(vae_rng_u64(6, VAE_RNG_PERM, 1, 2) != u);
    CHECK(vae_rng_u64(5, VAE_RNG_EPS, 1, 2) != u);
    CHECK(vae_rng_u64(5, VAE_RNG_PERM, 2, 2) != u);
    CHECK(vae_rng_u64(5, VAE_RNG_PERM, 1, 3) != u);

done:
    free(x);
    free(y);
}

/*
 * Different keys give different, uncorrelated streams. With n = 100000 the
 * sample correlation of independent streams has standard deviation
 * 1/sqrt(n) = 0.0032; |r| < 0.02 is a 6-sigma bound.
 */
static void test_independence(void)
{
    enum { N = 100000 };
    const uint64_t big = (uint64_t)1 << 32;
    static const struct {
        uint64_t seed;
        uint32_t purpose;
        uint64_t a, b;
    } keys[] = {
        { 1, VAE_RNG_EPS, 0, 0 },
        { 1, VAE_RNG_EPS, 0, 1 },        /* next sample */
        { 1, VAE_RNG_EPS, 1, 0 },        /* next step */
        { 1, VAE_RNG_EPS, 1, 1 },
        { 1, VAE_RNG_PRIOR, 0, 0 },      /* another purpose */
        { 2, VAE_RNG_EPS, 0, 0 },        /* another seed */
        { big << 1, VAE_RNG_EPS, 0, 0 }, /* seeds differing in the high half */
        { 1, VAE_RNG_EPS, big, 0 },      /* a differing only in its high half */
        { 1, VAE_RNG_EPS, 0, big },      /* b differing only in its high half */
        { 1, VAE_RNG_EPS, big, big },
    };
    enum { K = sizeof keys / sizeof keys[0] };
    float *s[K];
    int ok = 1;
    for (int i = 0; i < K; i++) {
        s[i] = malloc(N * sizeof(float));
        if (!s[i]) ok = 0;
        else vae_rng_normal(keys[i].seed, keys[i].purpose, keys[i].a, keys[i].b, s[i], N);
    }
    CHECK(ok);
    if (ok) {
        for (int i = 0; i < K; i++)
            for (int j = i + 1; j < K; j++) {
                CHECK(!floats_equal(s[i], s[j], N));
                /* Not even a shifted copy: the first 8 values of one do not start the other's. */
                CHECK(memcmp(s[i], s[j], 8 * sizeof(float)) != 0);
                double r = correlation(s[i], s[j], N);
                if (!(fabs(r) < 0.02))
                    fprintf(stderr, "streams %d and %d are correlated: r = %.5f\n", i, j, r);
                CHECK_CMP_DBL(fabs(r), <, 0.02);
            }
        /* Within one stream, neighbours are uncorrelated too (lag 1 and lag 4, a block apart). */
        CHECK_CMP_DBL(fabs(correlation(s[0], s[0] + 1, N - 1)), <, 0.02);
        CHECK_CMP_DBL(fabs(correlation(s[0], s[0] + 4, N - 4)), <, 0.02);
    }
    for (int i = 0; i < K; i++) free(s[i]);
}

/* ---------------------------------------------------------------------- */

static void test_distributions(void)
{
    enum { N = 100000 };
    float *u = malloc(N * sizeof(float)), *z = malloc(N * sizeof(float));
    CHECK(u && z);
    if (!u || !z) goto done;

    /* Uniforms: in [0, 1), mean 1/2 (sd 0.0009), variance 1/12 (sd 0.0003). */
    vae_rng_uniform(42, VAE_RNG_SYNTH, 0, 0, u, N);
    double mn = 1, mx = 0, s = 0, ss = 0;
    int outside = 0;
    for (int i = 0; i < N; i++) {
        if (!(u[i] >= 0.0f && u[i] < 1.0f)) outside++;
        if (u[i] < mn) mn = u[i];
        if (u[i] > mx) mx = u[i];
        s += u[i];
    }
    double mean = s / N;
    for (int i = 0; i < N; i++) ss += (u[i] - mean) * (u[i] - mean);
    double var = ss / (N - 1);
    CHECK_CMP_DBL(outside, ==, 0);
    CHECK_CMP_DBL(mn, >=, 0.0);
    CHECK_CMP_DBL(mx, <, 1.0);
    CHECK_NEAR(mean, 0.5, 0.01);
    CHECK_NEAR(var, 1.0 / 12.0, 0.005);
    /* The whole range is used: something below 0.001 and above 0.999. */
    CHECK_CMP_DBL(mn, <, 0.001);
    CHECK_CMP_DBL(mx, >, 0.999);
    /* Ten equal bins each hold 10% within 1% (sd of a bin's share is 0.001). */
    int bins[10] = { 0 };
    for (int i = 0; i < N; i++) {
        int k = (int)(u[i] * 10.0f);
        if (k >= 0 && k < 10) bins[k]++;
    }
    for (int k = 0; k < 10; k++) CHECK_NEAR(bins[k] / (double)N, 0.1, 0.01);

    /* Normals: mean 0 (sd 0.0032), variance 1 (sd 0.0045), within 0.02. */
    vae_rng_normal(42, VAE_RNG_EPS, 0, 0, z, N);
    s = 0;
    ss = 0;
    int nonfinite = 0;
    for (int i = 0; i < N; i++) {
        if (!isfinite(z[i])) nonfinite++;
        s += z[i];
    }
    mean = s / N;
    double m3 = 0, m4 = 0, within1 = 0;
    for (int i = 0; i < N; i++) {
        double d = z[i] - mean;
        ss += d * d;
        m3 += d * d * d;
        m4 += d * d * d * d;
        if (fabs(z[i]) < 1.0) within1++;
    }
    var = ss / (N - 1);
    CHECK_CMP_DBL(nonfinite, ==, 0);
    CHECK_NEAR(mean, 0.0, 0.02);
    CHECK_NEAR(var, 1.0, 0.02);
    /* Shape: skewness 0 (sd 0.008), kurtosis 3 (sd 0.015), P(|z| < 1) = 0.6827 (sd 0.0015). */
    CHECK_NEAR(m3 / N, 0.0, 0.05);
    CHECK_NEAR(m4 / N / (var * var), 3.0, 0.1);
    CHECK_NEAR(within1 / N, 0.682689, 0.01);

    /* Both Box-Muller outputs (even and odd positions) are standard normal on their own. */
    for (int par = 0; par < 2; par++) {
        double se = 0, sse = 0;
        for (int i = par; i < N; i += 2) se += z[i];
        double me = se / (N / 2);
        for (int i = par; i < N; i += 2) sse += (z[i] - me) * (z[i] - me);
        CHECK_NEAR(me, 0.0, 0.02);
        CHECK_NEAR(sse / (N / 2 - 1), 1.0, 0.03);
    }

done:
    free(u);
    free(z);
}

int main(void)
{
    test_philox_kat();
    test_determinism();
    test_independence();
    test_distributions();
    printf("test_rng: %d checks, %d failed\n", g_checks, g_failures);
    return g_failures ? 1 : 0;
}
