#!/usr/bin/env bash
# Launches mpivae training on a workstation with mpirun.
#
#   jobs/local.sh [mpivae train options...]
#
# Settings (environment variables, with defaults):
#   RANKS=$(nproc)       MPI ranks, one per core; each rank runs one BLAS thread
#   MPIVAE=build/mpivae  the executable
#   RUN_DIR=runs/local   the run directory (--out); training resumes from it
#                        automatically (--resume auto), so running the same
#                        command again continues where the last run stopped
#
# SIGINT (Ctrl-C) or SIGUSR1 to this script: the ranks finish their step,
# rank 0 writes a checkpoint, and the script exits with status 75; run it
# again to continue.
set -uo pipefail
cd "$(dirname "$0")/.."
RANKS=${RANKS:-$(nproc)}
MPIVAE=${MPIVAE:-build/mpivae}
RUN_DIR=${RUN_DIR:-runs/local}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}
if [ "$(id -u)" = 0 ]; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
extra=()
if [ "$RANKS" -gt "$(nproc)" ]; then extra+=(--oversubscribe); fi
# mpirun in the background so that this shell can forward signals to it
# (mpirun passes SIGUSR1 on to every rank).
mpirun -np "$RANKS" "${extra[@]}" "$MPIVAE" train --out "$RUN_DIR" --resume auto "$@" &
child=$!
trap 'kill -USR1 $child 2>/dev/null' USR1 INT TERM
while :; do
  wait $child
  rc=$?
  kill -0 $child 2>/dev/null || break
done
exit $rc
