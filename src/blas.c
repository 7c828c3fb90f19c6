/*
 * blas.c: OpenBLAS's kernel set and the re-execution with OPENBLAS_CORETYPE
 * (see blas.h).
 */
#define _GNU_SOURCE
#include "mpivae/blas.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

char *openblas_get_corename(void);

const char *vae_blas_core(void)
{
    const char *c = openblas_get_corename();
    return c ? c : "unknown";
}

#if defined(__x86_64__) && defined(__GNUC__)
/* The kernel sets OpenBLAS falls back to for an x86-64 CPU it does not know. */
static int is_generic(const char *core)
{
    static const char *const generic[] = { "Prescott", "Core2", "Penryn", "Dunnington", "Nehalem", "Atom",
                                           "Katmai", "Coppermine", "Northwood", "Banias", "Opteron",
                                           "Opteron_SSE3", "Barcelona", "Bobcat" };
    for (size_t i = 0; i < sizeof generic / sizeof generic[0]; i++)
        if (!strcasecmp(core, generic[i])) return 1;
    return 0;
}
#endif

const char *vae_blas_better_core(void)
{
#if defined(__x86_64__) && defined(__GNUC__)
    if (getenv("OPENBLAS_CORETYPE")) return NULL; /* the user's choice stands */
    if (!is_generic(vae_blas_core())) return NULL;
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512cd"))
        return "SkylakeX";
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "Haswell";
    if (__builtin_cpu_supports("avx")) return "Sandybridge";
#endif
    return NULL;
}

void vae_blas_tune(char **argv)
{
    const char *core = vae_blas_better_core();
    if (!core) return;
    if (!setenv("MPIVAE_BLAS_FALLBACK", vae_blas_core(), 1) && !setenv("OPENBLAS_CORETYPE", core, 1))
        execv("/proc/self/exe", argv);
    /* setenv or exec failed: go on with the kernels loaded, and claim nothing in the banner. */
    unsetenv("OPENBLAS_CORETYPE");
    unsetenv("MPIVAE_BLAS_FALLBACK");
}

const char *vae_blas_describe(char *buf, size_t n)
{
    const char *fallback = getenv("MPIVAE_BLAS_FALLBACK"), *set = getenv("OPENBLAS_CORETYPE");
    const char *better = vae_blas_better_core();
    /* The claim needs the restart's traces and their effect: the kernels it asked for, not the fallback. */
    if (fallback && set && !strcasecmp(set, vae_blas_core()) && strcasecmp(fallback, vae_blas_core()))
        snprintf(buf, n, "%s (set by mpivae: OpenBLAS detected %s)", vae_blas_core(), fallback);
    else if (better)
        snprintf(buf, n, "%s (generic: set OPENBLAS_CORETYPE=%s for this CPU)", vae_blas_core(), better);
    else
        snprintf(buf, n, "%s", vae_blas_core());
    return buf;
}
