#!/bin/bash
# multihost.sh [BUILD]: what the hop between two hosts costs, on two pretend
# hosts of this machine (tests/multihost/: a UTS namespace and host name
# each, TCP on the loopback interface) against one host. Prints:
#  1. MPI_Allreduce times (build/tests/bench_allreduce) and the ring model's
#     alpha and beta for: shared memory (1 host x 2), TCP on one host name
#     (1 host x 2, btl self,tcp), TCP between hosts (2 hosts x 1);
#  2. mpivae's step and gradient-reduction time (the run's summary lines) for
#     the default MLP and the conv model on Fashion-MNIST, batch 128, in each
#     --allreduce mode: 2 hosts x 2 ranks against 1 host x 4, and 2 x 1
#     against 1 x 2;
#  3. the same 2 x 1 run with Open MPI's defaults for pretend hosts (each
#     host's daemon binds its rank to core 0, ranks busy-poll): what an
#     untuned one-machine test of "two hosts" measures.
# One thread per rank. Needs root (unshare --uts) and data/fashion-mnist.h5.
set -euo pipefail
cd "$(dirname "$0")/../.."
B=${1:-build}
M=$(readlink -f "$B/mpivae")
AR=$(readlink -f "$B/tests/bench_allreduce")
DATA=$(readlink -f data/fashion-mnist.h5)
STEPS=${STEPS:-300}
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
W=$(mktemp -d /tmp/mpivae-multihost.XXXXXX)
trap 'rm -rf "$W"' EXIT
export MH_DIR=$W
HOSTS=(--oversubscribe --bind-to none --mca plm_rsh_agent "$PWD/tests/multihost/agent.sh" --mca oob_tcp_if_include lo
       --mca btl_tcp_if_include lo --mca mpi_yield_when_idle 1)
ONE=(--oversubscribe --bind-to none --mca mpi_yield_when_idle 1)

echo "== 1. MPI_Allreduce"
echo "-- shared memory: 1 host x 2"
mpirun -np 2 "${ONE[@]}" "$AR"
echo "-- TCP on one host name: 1 host x 2, btl self,tcp"
mpirun -np 2 "${ONE[@]}" --mca btl self,tcp --mca btl_tcp_if_include lo "$AR"
echo "-- TCP between hosts: 2 hosts x 1"
mpirun --host hA:1,hB:1 -np 2 "${HOSTS[@]}" "$AR"

# run NAME LAUNCH... -- TRAIN ARGS: one training run; prints its step and reduction times.
run() {
    local name=$1 out
    shift
    local launch=()
    while [ "$1" != -- ]; do launch+=("$1"); shift; done
    shift
    out=$("${launch[@]}" "$M" train --data "$DATA" --test-data none --steps "$STEPS" --log-every 100 --sample-every 0 \
          --out "$W/r" "$@" 2>&1) || { echo "$out" | tail -n 5; return 1; }
    rm -rf "$W/r"
    printf '%-34s %s\n' "$name" "$(echo "$out" | sed -n 's/^step on rank 0: \([0-9.]*\) ms = .* gradient reduction \([0-9.]*\) .*/step \1 ms, reduction \2 ms/p')"
}

echo
echo "== 2. mpivae train, $STEPS steps, batch 128 (step and reduction per step on rank 0)"
for model in mlp conv; do
    for mode in shm blocking overlap; do
        run "$model $mode: 1 host x 4" mpirun -np 4 "${ONE[@]}" -- --model $model --allreduce $mode
        run "$model $mode: 2 hosts x 2" mpirun --host hA:2,hB:2 -np 4 "${HOSTS[@]}" -- --model $model --allreduce $mode
    done
    run "$model shm: 1 host x 2" mpirun -np 2 "${ONE[@]}" -- --model $model
    run "$model shm: 2 hosts x 1" mpirun --host hA:1,hB:1 -np 2 "${HOSTS[@]}" -- --model $model
done

echo
echo "== 3. 2 hosts x 1 with Open MPI's defaults for pretend hosts (binding to core 0 on each, busy polling)"
run "mlp shm: 2 hosts x 1, defaults" mpirun --host hA:1,hB:1 -np 2 --oversubscribe --mca plm_rsh_agent "$PWD/tests/multihost/agent.sh" \
    --mca oob_tcp_if_include lo --mca btl_tcp_if_include lo -- --model mlp
mpirun --host hA:1,hB:1 -np 2 --oversubscribe --mca plm_rsh_agent "$PWD/tests/multihost/agent.sh" --mca oob_tcp_if_include lo \
    --mca btl_tcp_if_include lo "$AR" 20 | tail -n 4
