/*
 * comm.c: agreeing on a status across ranks, and MPI error reporting.
 */
#include "mpivae/comm.h"

#include "mpivae/status.h"

int vae_agree(int status, MPI_Comm comm)
{
    int rank = 0;
    MPI_Comm_rank(comm, &rank);
    /* Slot 0: worst status anywhere; slot 1: rank 0's status (others give 0, statuses are <= 0). */
    int both[2] = { status, rank == 0 ? status : 0 };
    int rc = MPI_Allreduce(MPI_IN_PLACE, both, 2, MPI_INT, MPI_MIN, comm);
    vae_defer_end(status != 0 && (rank == 0 || both[1] == 0));
    if (rc != MPI_SUCCESS) return vae_mpi_error(rc, "MPI_Allreduce");
    return both[0];
}

int vae_mpi_error(int mpi_rc, const char *call)
{
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(mpi_rc, msg, &len) != MPI_SUCCESS) msg[0] = '\0';
    return vae_error(VAE_EMPI, "%s failed: %s", call, msg);
}
