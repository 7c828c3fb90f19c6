/*
 * optim.h: Adam over the flat parameter block (one loop, PyTorch's formula).
 */
#ifndef MPIVAE_OPTIM_H
#define MPIVAE_OPTIM_H

#include <stddef.h>

typedef struct vae_adam {
    float lr, beta1, beta2, eps;
} vae_adam;

/*
 * Step t (1-based): m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
 * p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps).
 */
void vae_adam_update(float *p, const float *g, float *m, float *v, size_t n, const vae_adam *h,
                     long t);

/* Sum of squares of g[n], in double. */
double vae_sumsq(const float *g, size_t n);

#endif
