/*
 * status.c: the error and warning reporters declared in status.h.
 */
#include "mpivae/status.h"

#include <signal.h>
#include <stdio.h>

static int g_rank = 0;
static int g_defer = 0;
static char g_msg[2048];

void vae_set_rank(int rank) { g_rank = rank; }

static volatile sig_atomic_t g_stop_sig = 0;

int vae_stop_requested(void) { return g_stop_sig; }

void vae_set_stop_requested(int sig) { g_stop_sig = sig; }

int vae_error(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (g_defer) {
        if (g_defer == 1) {
            vsnprintf(g_msg, sizeof g_msg, fmt, ap);
            g_defer = 2;
        }
        va_end(ap);
        return code;
    }
    fprintf(stderr, "[rank %d] error: ", g_rank);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    fflush(stderr);
    va_end(ap);
    return code;
}

void vae_defer_begin(void)
{
    g_defer = 1;
    g_msg[0] = '\0';
}

void vae_defer_end(int print)
{
    if (g_defer == 2 && print) {
        fprintf(stderr, "[rank %d] error: %s\n", g_rank, g_msg);
        fflush(stderr);
    }
    g_defer = 0;
    g_msg[0] = '\0';
}

int vae_defer_active(void) { return g_defer != 0; }

int vae_defer_take(char *buf, size_t len)
{
    if (g_defer != 2) return 0;
    snprintf(buf, len, "%s", g_msg);
    return 1;
}

void vae_warn(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "[rank %d] warning: ", g_rank);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    fflush(stderr);
    va_end(ap);
}

const char *vae_strerror(int code)
{
    switch (code) {
    case VAE_OK: return "ok";
    case VAE_EINVAL: return "invalid argument";
    case VAE_EIO: return "input/output error";
    case VAE_EDATA: return "bad data";
    case VAE_ENOMEM: return "out of memory";
    case VAE_EMPI: return "MPI failure";
    case VAE_ENONFINITE: return "non-finite value";
    case VAE_ESTOP: return "stopped by signal";
    default: return "unknown error";
    }
}
