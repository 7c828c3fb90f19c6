/*
 * status.h: status codes and the one error-reporting function.
 *
 * Library code never exits: a fallible function returns 0 on success or a
 * negative VAE_E* code after reporting the problem once through vae_error(),
 * which prints "[rank N] error: <message>" to stderr. The program's single
 * fatal path (vae_fatal in the CLI) turns a status into an exit or MPI_Abort.
 */
#ifndef MPIVAE_STATUS_H
#define MPIVAE_STATUS_H

#include <stdarg.h>
#include <stddef.h>

enum vae_status {
    VAE_OK = 0,
    VAE_EINVAL = -1,  /* bad argument or configuration */
    VAE_EIO = -2,     /* file system or HDF5 failure */
    VAE_EDATA = -3,   /* malformed or out-of-range data */
    VAE_ENOMEM = -4,  /* allocation failed */
    VAE_EMPI = -5,    /* MPI call failed */
    VAE_ENONFINITE = -6, /* NaN or Inf in a loss or gradient */
    VAE_ESTOP = -7    /* stopped by a signal after a checkpoint */
};

/* Sets the rank shown in messages (0 before MPI is up). */
void vae_set_rank(int rank);

/* Prints "[rank N] error: <fmt...>" to stderr and returns code. */
int vae_error(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prints "[rank N] warning: <fmt...>" to stderr. */
void vae_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/*
 * Deferred reporting for collective phases: between vae_defer_begin() and
 * vae_defer_end(), vae_error() keeps the first message instead of printing.
 * vae_defer_end(print) prints it when print is set and forgets it. Used so a
 * failure every rank sees (a missing file) is reported once, by rank 0.
 */
void vae_defer_begin(void);
void vae_defer_end(int print);

/* 1 between vae_defer_begin() and vae_defer_end(). */
int vae_defer_active(void);

/* Copies the message kept since vae_defer_begin() into buf; returns 1 if there is one. */
int vae_defer_take(char *buf, size_t len);

/*
 * The stop request of a signal (SIGUSR1, SIGTERM, SIGINT), set by the
 * training's handler: long loops outside the training step (the data scan at
 * start-up) poll it and return VAE_ESTOP, so a signal during start-up ends
 * the run promptly. 0 when none, else the signal number (or 1).
 */
int vae_stop_requested(void);
void vae_set_stop_requested(int sig);

/* Short name of a status code ("invalid argument", ...). */
const char *vae_strerror(int code);

#endif
