/*
 * blas.h: which OpenBLAS kernel set the process runs, and a remedy for
 * OpenBLAS's detection falling back to a generic one.
 *
 * Debian's OpenBLAS (built with DYNAMIC_ARCH) picks its kernels once, when the
 * library loads, from the CPU model. A CPU newer than the library's table
 * gets the generic SSE3 kernels ("Prescott"): 0.3.21 does so on an Intel
 * Xeon of family 6, model 207, where they run sgemm 5x slower than the
 * AVX-512 ones. OpenBLAS takes the kernel set from OPENBLAS_CORETYPE instead
 * when it is set at load time, so the fix is to set it and start again.
 */
#ifndef MPIVAE_BLAS_H
#define MPIVAE_BLAS_H

#include <stddef.h>

/* OpenBLAS's name of the kernel set in use ("SkylakeX", "Haswell", ...). */
const char *vae_blas_core(void);

/*
 * The kernel set this CPU should get when OpenBLAS fell back to a generic
 * one ("SkylakeX" with AVX-512, "Haswell" with AVX2 and FMA, "Sandybridge"
 * with AVX alone), or NULL when the kernels in use are fine, when the user
 * set OPENBLAS_CORETYPE, and on other architectures than x86-64.
 */
const char *vae_blas_better_core(void);

/*
 * Where vae_blas_better_core() names a kernel set: sets OPENBLAS_CORETYPE to
 * it (and MPIVAE_BLAS_FALLBACK to the core OpenBLAS had picked) and
 * re-executes the program with the same arguments (the process keeps its pid,
 * so it is still the rank its launcher started). Call it first in main(),
 * before MPI_Init. Returns only when nothing needs doing or exec failed.
 */
void vae_blas_tune(char **argv);

/*
 * One line for the run's banner: the kernel set, and when this program chose
 * it, the one OpenBLAS had picked ("SkylakeX (set by mpivae: OpenBLAS
 * detected Prescott)"). Writes at most n bytes to buf; returns buf.
 */
const char *vae_blas_describe(char *buf, size_t n);

#endif
