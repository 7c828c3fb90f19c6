/*
 * vmath.h: float exp, tanh and log1p without libm calls, so that the loops
 * that use them vectorise (the library's files share them; not part of its
 * interface). Each is within a few ulp of libm's over the ranges the
 * callers use (tests/test_ops.c checks them against libm in double).
 */
#ifndef MPIVAE_VMATH_H
#define MPIVAE_VMATH_H

#include <math.h>
#include <stdint.h>

/*
 * exp(x): x = n ln2 + r with |r| <= ln2/2, exp(r) by Cephes' degree-6
 * polynomial (about 1 ulp), times 2^n built in the exponent bits. x is
 * clamped to [-87, 88]: exp(-87) ~ 1.6e-38 stands for every smaller value
 * (zero for every use here), exp(88) ~ 1.7e38 for every larger one. NaN
 * gives NaN.
 */
static inline float vm_exp(float x)
{
    x = x < -87.0f ? -87.0f : x;
    x = x > 88.0f ? 88.0f : x;
    float n = floorf(x * 1.44269504088896341f + 0.5f);
    float r = x - n * 0.693359375f - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    union {
        int32_t i;
        float f;
    } scale;
    scale.i = (n == n ? (int32_t)n + 127 : 0) << 23; /* NaN: no int conversion; p is NaN */
    return p * scale.f;
}

/*
 * tanh(x): below |x| = 0.625 Cephes' odd polynomial (relative error about
 * 1e-7), above it (1 - e) / (1 + e) with e = exp(-2|x|) <= 0.29, so nothing
 * cancels; the sign copied from x.
 */
static inline float vm_tanh(float x)
{
    float a = fabsf(x), z = x * x;
    float e = vm_exp(-2.0f * a);
    float big = (1.0f - e) / (1.0f + e);
    float small = -5.70498872745e-3f;
    small = small * z + 2.06390887954e-2f;
    small = small * z - 5.37397155531e-2f;
    small = small * z + 1.33314422036e-1f;
    small = small * z - 3.33332819422e-1f;
    small = small * z * a + a;
    return copysignf(a < 0.625f ? small : big, x);
}

/*
 * log(1 + e) for e in [0, 1]: 2 atanh(s) with s = e / (2 + e) in [0, 1/3],
 * by its odd series to s^15 (truncation error below 1e-9).
 */
static inline float vm_log1p_unit(float e)
{
    float s = e / (2.0f + e), s2 = s * s;
    float p = 1.0f / 15.0f;
    p = p * s2 + 1.0f / 13.0f;
    p = p * s2 + 1.0f / 11.0f;
    p = p * s2 + 1.0f / 9.0f;
    p = p * s2 + 1.0f / 7.0f;
    p = p * s2 + 1.0f / 5.0f;
    p = p * s2 + 1.0f / 3.0f;
    p = p * s2 + 1.0f;
    return 2.0f * s * p;
}

#endif
