/*
 * check.h: the check macros of the test programs. Each check counts into
 * g_checks; a failed one counts into g_failures and prints the expression,
 * both values and the line (CHECK_CLOSE prints at most 40 failures). A test's
 * main() ends with `return g_failures != 0;`: the exit code is the verdict.
 * Included by one source file per test program (static counters).
 */
#ifndef MPIVAE_TESTS_CHECK_H
#define MPIVAE_TESTS_CHECK_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>

static int g_checks, g_failures;
static int g_printed __attribute__((unused));

/*
 * Test inputs: splitmix64, local to the tests so that they do not depend on
 * rng.c. A program may define TEST_SEED before including this header.
 */
#ifndef TEST_SEED
#define TEST_SEED 0x243F6A8885A308D3ull
#endif
static uint64_t g_rng = TEST_SEED;

static inline uint64_t next_u64(void)
{
    uint64_t z = (g_rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Uniform float in [lo, hi). */
static inline float uniform(float lo, float hi)
{
    double u = (double)(next_u64() >> 11) * (1.0 / 9007199254740992.0);
    return (float)(lo + (hi - lo) * u);
}

#define CHECK(cond)                                                                          \
    do {                                                                                     \
        g_checks++;                                                                          \
        if (!(cond)) {                                                                       \
            g_failures++;                                                                    \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);         \
        }                                                                                    \
    } while (0)

#define CHECK_CMP_INT(a, op, b)                                                              \
    do {                                                                                     \
        long long a_ = (long long)(a), b_ = (long long)(b);                                  \
        g_checks++;                                                                          \
        if (!(a_ op b_)) {                                                                   \
            g_failures++;                                                                    \
            fprintf(stderr, "%s:%d: check failed: %s %s %s (%lld vs %lld)\n", __FILE__,     \
                    __LINE__, #a, #op, #b, a_, b_);                                          \
        }                                                                                    \
    } while (0)

#define CHECK_EQ(a, b) CHECK_CMP_INT(a, ==, b)
#define CHECK_NE(a, b) CHECK_CMP_INT(a, !=, b)

#define CHECK_CMP_DBL(a, op, b)                                                              \
    do {                                                                                     \
        double a_ = (double)(a), b_ = (double)(b);                                           \
        g_checks++;                                                                          \
        if (!(a_ op b_)) {                                                                   \
            g_failures++;                                                                    \
            fprintf(stderr, "%s:%d: check failed: %s %s %s (%.12g vs %.12g)\n", __FILE__,   \
                    __LINE__, #a, #op, #b, a_, b_);                                          \
        }                                                                                    \
    } while (0)

/* |a - b| <= rtol |b| + atol, with a context label. */
#define CHECK_CLOSE(label, a, b, rtol, atol)                                                 \
    do {                                                                                     \
        double a_ = (double)(a), b_ = (double)(b);                                           \
        double t_ = (double)(rtol) * fabs(b_) + (double)(atol);                              \
        g_checks++;                                                                          \
        if (!(fabs(a_ - b_) <= t_)) {                                                        \
            g_failures++;                                                                    \
            if (g_printed++ < 40)                                                            \
                fprintf(stderr,                                                              \
                        "%s:%d: check failed [%s]: |%s - %s| <= %s*|%s| + %s "              \
                        "(%.10g vs %.10g, diff %.3g, tol %.3g)\n",                           \
                        __FILE__, __LINE__, label, #a, #b, #rtol, #b, #atol, a_, b_,        \
                        fabs(a_ - b_), t_);                                                  \
        }                                                                                    \
    } while (0)

#endif
