/*
 * comm.h: the few MPI helpers every collective phase uses.
 */
#ifndef MPIVAE_COMM_H
#define MPIVAE_COMM_H

#include <mpi.h>

/*
 * Ends a collective phase begun with vae_defer_begin(): all ranks agree on
 * the worst (lowest) status, and the failure is reported once: by rank 0 when
 * it failed, otherwise by each rank that failed. Returns the agreed status.
 */
int vae_agree(int status, MPI_Comm comm);

/* Reports an MPI error code with the call's name; returns VAE_EMPI. */
int vae_mpi_error(int mpi_rc, const char *call);

#endif
