#!/usr/bin/env bash
# Launches mpivae training on a workstation with mpirun (the Slurm
# counterparts are jobs/train.sbatch and jobs/train-multinode.sbatch).
#
#   jobs/local.sh [mpivae train options...]
#   RANKS=4 RUN_DIR=runs/fm jobs/local.sh --data data/fashion-mnist.h5 --epochs 20
#
# Settings (environment variables, with defaults):
#   RANKS=<cores>        MPI ranks, one per core; each rank runs one BLAS thread
#                        (OMP_NUM_THREADS, OPENBLAS_NUM_THREADS, default 1)
#   MPIVAE=build/mpivae  the executable
#   RUN_DIR=runs/local   the run directory (--out); training resumes from it
#                        automatically (--resume auto), so running the same
#                        command again continues where the last run stopped
#   TRAIN_ARGS=          more mpivae train options, split on spaces (as in the
#                        sbatch scripts), before the command line's
#
# Ctrl-C (SIGINT), SIGUSR1 or SIGTERM to this script: the ranks finish their
# step, rank 0 writes a checkpoint, and the script exits with status 75; run
# it again to continue (bit for bit as if it had never stopped). A second
# Ctrl-C stops mpirun at once.
#
# Exit status: 0 training finished; 75 stopped after a checkpoint (run again
# to continue); 1 or 2 mpivae failed (an error or a usage error, explained in
# its message); anything else mpirun failed.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
# shellcheck source=jobs/common.sh
. jobs/common.sh local.sh || exit 2
# (nproc obeys OMP_NUM_THREADS, which is often 1 here: ask without it)
RANKS=${RANKS:-$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)}
MPIVAE=${MPIVAE:-build/mpivae}
RUN_DIR=${RUN_DIR:-runs/local}
TRAIN_ARGS=${TRAIN_ARGS:-}
LAUNCHER=mpirun # (for the log lines)
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}
extra=()
if [ "$RANKS" -gt "$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)" ]; then extra+=(--oversubscribe); fi

# mpirun runs in the background, in its own process group (set -m), so that
# Ctrl-C reaches only this shell, which forwards SIGUSR1 to mpirun; mpirun
# passes it on to every rank. (SIGINT straight to mpirun would make it end
# the ranks itself and exit with 1 instead of 75.) Its stderr goes through
# jobs/mpirun-stderr-filter.sh, which removes Open MPI's two notes on a
# status-75 stop (they read like a crash) and nothing else; `$!` is still
# mpirun's pid.
catch_signals INT USR1 TERM

rc=75
if [ -z "$got" ]; then
    set -m
    # shellcheck disable=SC2086  # TRAIN_ARGS is a list of options
    mpirun -np "$RANKS" "${extra[@]}" "$MPIVAE" train --out "$RUN_DIR" --resume auto $TRAIN_ARGS "$@" </dev/null \
        2> >(bash jobs/mpirun-stderr-filter.sh >&2) &
    child=$!
    set +m
    wait_launcher
fi
case $rc in
0) log "training finished; run directory $RUN_DIR" ;;
75) log "stopped after a checkpoint (exit status 75); run the same command again to continue" ;;
*) log "mpirun exited with status $rc" ;;
esac
exit "$rc"
