/*
 * bench_sgemm.c: OpenBLAS's single-process sgemm rate on a large square
 * product, the yardstick for the training step's efficiency.
 * Usage: bench_sgemm [N] (default 2048). Prints "sgemm: n=N gflops=G core=C":
 * C is OpenBLAS's kernel set, chosen as mpivae chooses it (blas.h).
 */
#define _POSIX_C_SOURCE 200809L
#include "mpivae/blas.h"

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
    vae_blas_tune(argv);
    int n = argc > 1 ? atoi(argv[1]) : 2048;
    if (n < 64) n = 64;
    size_t nn = (size_t)n * n;
    float *a = malloc(nn * sizeof(float)), *b = malloc(nn * sizeof(float)), *c = malloc(nn * sizeof(float));
    if (!a || !b || !c) return 1;
    for (size_t i = 0; i < nn; i++) {
        a[i] = (float)(i % 13) * 1e-3f;
        b[i] = (float)(i % 7) * 1e-3f;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
    double best = 0.0;
    for (int rep = 0; rep < 5; rep++) {
        double t0 = now_s();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
        double g = 2.0 * n * (double)n * n / (now_s() - t0) / 1e9;
        if (g > best) best = g;
    }
    printf("sgemm: n=%d gflops=%.2f core=%s\n", n, best, vae_blas_core());
    free(a);
    free(b);
    free(c);
    return 0;
}
