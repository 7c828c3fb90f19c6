#!/bin/bash
# mpi_rank_independence.sh MPIVAE SOURCE_DIR MPIEXEC [NUMPROC_FLAG [PREFLAGS...]]
#
# Promise 2 of DESIGN.md: same global batch and seed give the same training on
# any number of ranks. Global batch 30 over 512 rows: 17 full batches and a
# last one of 2 rows per epoch, so with 4 ranks the shards are uneven (7..8)
# and in the last step of each epoch two ranks have no rows at all.
#
# Asserts, for P = 2 and 4 against P = 1 (3 epochs, 54 steps):
#  - final /params within 1e-4 of each tensor's largest magnitude in the P=1 run;
#  - metrics.h5 /train/loss: one row per step (54) in every run, and every row
#    within 1e-4 relative of P=1's;
# and that P=2 streaming rows from the file (--data-in-memory no) ends with
# /params bit-identical (h5diff status 0) to P=2 with the node-shared copy;
# and that the other gradient reductions (--allreduce blocking, overlap) stay
# within the tolerance at P=2 and P=4; and the default with 4 ranks split into
# 2 nodes (MPIVAE_TEST_RANKS_PER_NODE=2).
# Then a model of 5 blocks of the gradient norm (--hidden 512: 72,776
# parameters; each rank of the shm mode updates its own slice), for one epoch:
#  - P=2 and P=4 (and 4 ranks as 2 nodes) within the tolerance of P=1;
#  - at P=2 the shm mode's slice sums, blocking and overlap all add the same
#    two blocks: /params, /optimizer and the logged gradient norm
#    bit-identical.
# The largest differences are printed for the report.
source "$(dirname "$0")/mpilib.sh"
mpi_init "$@"

run_ok "$M" data synth --out s.h5 --n-train 512 --n-test 128 --height 8 --width 8 --classes 4
CFG=(train --data s.h5 --batch 30 --epochs 3 --hidden 32 --latent 4 --seed 7 --log-every 6)
STEPS=54   # 3 epochs of ceil(512 / 30) = 18 steps

for P in 1 2 4; do
    mpi_cmd "$P"
    run_ok "${MPI[@]}" "$M" "${CFG[@]}" --out "p$P"
    grep -q "global batch 30" last.out || fail "P=$P: expected the banner to say 'global batch 30', found: $(grep '^training' last.out)"
    expect_file "p$P/checkpoints/step-$STEPS.h5"
    expect_eq "P=$P: world_size saved in the checkpoint" "$P" "$(ckpt_attr "p$P/checkpoints/step-$STEPS.h5" world_size)"
    expect_eq "P=$P: step saved in the checkpoint" "$STEPS" "$(ckpt_attr "p$P/checkpoints/step-$STEPS.h5" step)"
done

for P in 2 4; do
    h5cmp params "p1/checkpoints/step-$STEPS.h5" "p$P/checkpoints/step-$STEPS.h5" 1e-4
    h5cmp loss p1/metrics.h5 "p$P/metrics.h5" 1e-4 "$STEPS"
done

# Streamed reads against the node-shared copy: the same rows, so the same bits.
mpi_cmd 2
run_ok "${MPI[@]}" "$M" "${CFG[@]}" --data-in-memory no --out p2s
grep '^data:' last.out | grep -q "streamed" ||
    fail "--data-in-memory no: expected the banner's data line to say 'streamed', found: $(grep '^data' last.out)"
expect_same "P=2 streamed vs in memory" "p2/checkpoints/step-$STEPS.h5" "p2s/checkpoints/step-$STEPS.h5" /params

# The other gradient reductions against P=1 (at P=2 they also equal shm bit
# for bit: checked on the larger model below).
for mode in blocking overlap; do
    for P in 2 4; do
        mpi_cmd "$P"
        run_ok "${MPI[@]}" "$M" "${CFG[@]}" --allreduce "$mode" --out "p$P$mode"
        grep -q "allreduce ($mode" last.out || fail "--allreduce $mode: expected the summary to name the mode, found: $(grep '^allreduce' last.out)"
        h5cmp params "p1/checkpoints/step-$STEPS.h5" "p$P$mode/checkpoints/step-$STEPS.h5" 1e-4
    done
done
# Several nodes (the test hook splits the machine into 2 "nodes" of 2 ranks):
# the node sums, then the node leaders' MPI_Allreduce.
mpi_cmd 4
MPIVAE_TEST_RANKS_PER_NODE=2 run_ok "${MPI[@]}" "$M" "${CFG[@]}" --out p4nodes
grep -q "allreduce (shm: node shared memory, 2 nodes, MPI_Allreduce across nodes)" last.out ||
    fail "4 ranks as 2 nodes: expected the summary to say 2 nodes, found: $(grep '^allreduce' last.out)"
h5cmp params "p1/checkpoints/step-$STEPS.h5" "p4nodes/checkpoints/step-$STEPS.h5" 1e-4
h5cmp loss p1/metrics.h5 p4nodes/metrics.h5 1e-4 "$STEPS"

# Several blocks of the gradient norm, so that every rank owns a slice. At
# --lr 1e-4: Adam's first steps move a weight by lr * g / (|g| + 1e-8), so for
# the weights of pixels that are almost always 0 here (|g| near 1e-8) a
# last-bit difference of g moves the weight by a sizeable part of lr, in any
# reduction mode; at the default lr that alone is 1e-4 of fc1's largest weight
# at P=4. A slice left out or updated twice moves weights by lr per step.
BIG=(train --data s.h5 --batch 30 --epochs 1 --hidden 512 --latent 4 --seed 7 --log-every 6 --lr 1e-4)
BSTEPS=18
run_ok "$M" "${BIG[@]}" --out b1
for P in 2 4; do
    mpi_cmd "$P"
    run_ok "${MPI[@]}" "$M" "${BIG[@]}" --out "b$P"
    h5cmp params "b1/checkpoints/step-$BSTEPS.h5" "b$P/checkpoints/step-$BSTEPS.h5" 1e-4
done
mpi_cmd 4
MPIVAE_TEST_RANKS_PER_NODE=2 run_ok "${MPI[@]}" "$M" "${BIG[@]}" --out b4nodes
h5cmp params "b1/checkpoints/step-$BSTEPS.h5" "b4nodes/checkpoints/step-$BSTEPS.h5" 1e-4
mpi_cmd 2
for mode in blocking overlap; do
    run_ok "${MPI[@]}" "$M" "${BIG[@]}" --allreduce "$mode" --out "b2$mode"
    expect_identical "P=2 --allreduce $mode against shm" "b2/checkpoints/step-$BSTEPS.h5" "b2$mode/checkpoints/step-$BSTEPS.h5"
    expect_same "P=2 --allreduce $mode against shm" b2/metrics.h5 "b2$mode/metrics.h5" /train/grad_norm
done

cli_done
