/*
 * optim.c: Adam and the gradient norm (see optim.h).
 */
#include "mpivae/optim.h"

#include <math.h>
#if VAE_ADAM_FTZ
#include <xmmintrin.h>
#endif

/*
 * Subnormal moments and steps are flushed to zero inside the update (the
 * CPU's flush-to-zero and denormals-are-zero modes, set around the loop and
 * then put back). Without it, the moments of weights whose gradient is always
 * zero (those of dead ReLU units, or of pixels that are 0 in every image)
 * decay into the subnormal range and stay there (0.9 times a few units in the
 * last place rounds back to itself), and every step then pays the CPU's slow
 * path for each of them: on the default model about half of the first
 * layer's moments, a slowdown of the update measured in
 * docs/performance-notes.md. The values lost are below 1.2e-38: the step a
 * subnormal moment gives is below a normal parameter's last place, and only a
 * parameter that is itself subnormal is read as 0 (and so moves by its own
 * size, below 1.2e-38, at most).
 */
#if VAE_ADAM_FTZ
#define FTZ_BEGIN()                                                                                                    \
    unsigned csr_saved = _mm_getcsr();                                                                                 \
    _mm_setcsr(csr_saved | 0x8040u) /* FTZ (bit 15) and DAZ (bit 6) */
#define FTZ_END() _mm_setcsr(csr_saved)
#else
#define FTZ_BEGIN() ((void)0)
#define FTZ_END() ((void)0)
#endif

/*
 * The parameters are read by every rank of a node in each step (the node
 * shares one copy, train.c), so the lines a rank updates are usually held by
 * the other cores too, and each store has to take its line from them first.
 * The loop asks for those lines for writing (prefetchw where the target has
 * it, as with the default -march=native on x86; a read prefetch elsewhere)
 * 4 KiB ahead, in blocks of 256 floats (16 lines), so that the transfers
 * overlap instead of stalling the stores one line at a time (the gain at 2
 * ranks, measured with prefetchw only: docs/performance-notes.md).
 */
enum { ADAM_BLOCK = 256, ADAM_AHEAD = 1024 };

static inline void adam_loop(float *p, float *g, float *m, float *v, size_t n, const vae_adam *h, long t,
                             int clear)
{
    const float b1 = h->beta1, b2 = h->beta2, eps = h->eps, gs = h->gscale;
    const float bc1 = 1.0f - powf(b1, (float)t);
    const float bc2 = 1.0f - powf(b2, (float)t);
    const float step = h->lr / bc1;
    const float inv_sqrt_bc2 = 1.0f / sqrtf(bc2);
    FTZ_BEGIN();
    for (size_t i0 = 0; i0 < n; i0 += ADAM_BLOCK) {
        size_t i1 = i0 + ADAM_BLOCK < n ? i0 + ADAM_BLOCK : n;
        for (size_t j = i0 + ADAM_AHEAD; j < i1 + ADAM_AHEAD && j < n; j += 16) __builtin_prefetch(p + j, 1, 3);
        for (size_t i = i0; i < i1; i++) {
            float gi = g[i] * gs; /* exact when gs is 1 */
            float mi = b1 * m[i] + (1.0f - b1) * gi;
            float vi = b2 * v[i] + (1.0f - b2) * gi * gi;
            m[i] = mi;
            v[i] = vi;
            p[i] -= step * mi / (sqrtf(vi) * inv_sqrt_bc2 + eps);
            if (clear) g[i] = 0.0f;
        }
    }
    FTZ_END();
}

void vae_adam_update(float *p, const float *g, float *m, float *v, size_t n, const vae_adam *h, long t)
{
    adam_loop(p, (float *)g, m, v, n, h, t, 0);
}

void vae_adam_update_clear(float *p, float *g, float *m, float *v, size_t n, const vae_adam *h, long t)
{
    adam_loop(p, g, m, v, n, h, t, 1);
}

/*
 * The sum of squares of dst[0..m) in 32 independent lanes (vectorisable,
 * fixed order), then one sum; with add, first dst[i] += src[i] and
 * src[i] = 0 for i < n, squaring the sums as they are stored. Both public
 * functions below are this loop, so their sums agree bit for bit. (With 8
 * lanes the loop waited on the latency of each vector's add.)
 */
static inline double sumsq_loop(float *dst, float *src, size_t n, size_t m, int add)
{
    double acc[32] = { 0 };
    size_t i = 0;
    for (; i + 32 <= m; i += 32)
        for (int k = 0; k < 32; k++) {
            float s = add ? dst[i + k] + src[i + k] : dst[i + k];
            if (add) {
                dst[i + k] = s;
                src[i + k] = 0.0f;
            }
            acc[k] += (double)s * s;
        }
    for (; i < m; i++) {
        float s = add ? dst[i] + src[i] : dst[i];
        if (add) {
            dst[i] = s;
            src[i] = 0.0f;
        }
        acc[0] += (double)s * s;
    }
    for (; add && i < n; i++) {
        dst[i] += src[i];
        src[i] = 0.0f;
    }
    double s = 0.0;
    for (int k = 0; k < 32; k++) s += acc[k];
    return s;
}

double vae_lr_factor(long t, long n, double floor)
{
    if (n <= 0) return 1.0;
    if (t >= n) return floor;
    if (t < 0) t = 0;
    return floor + (1.0 - floor) * 0.5 * (1.0 + cos(3.14159265358979323846 * (double)t / (double)n));
}

double vae_ema_decay(double d, long t)
{
    if (t <= 1 || d <= 0.0) return 0.0;
    return d * (1.0 - pow(d, (double)(t - 1))) / (1.0 - pow(d, (double)t));
}

void vae_ema_update(float *avg, const float *p, size_t n, double d, long t)
{
    const float b = (float)vae_ema_decay(d, t), a = 1.0f - b;
    for (size_t i = 0; i < n; i++) avg[i] = b * avg[i] + a * p[i];
}

double vae_sumsq(const float *g, size_t n) { return sumsq_loop((float *)g, NULL, n, n, 0); }

double vae_add_clear_sumsq(float *dst, float *src, size_t n, size_t m) { return sumsq_loop(dst, src, n, m, 1); }

void vae_sumsq_blocks(const float *g, size_t n, size_t b0, size_t b1, double *part)
{
    for (size_t b = b0; b < b1; b++) {
        size_t lo = b * VAE_NORM_BLOCK, hi = lo + VAE_NORM_BLOCK < n ? lo + VAE_NORM_BLOCK : n;
        part[b] = lo < hi ? vae_sumsq(g + lo, hi - lo) : 0.0;
    }
}

double vae_sum_parts(const double *part, size_t nb)
{
    double s = 0.0;
    for (size_t b = 0; b < nb; b++) s += part[b];
    return s;
}
