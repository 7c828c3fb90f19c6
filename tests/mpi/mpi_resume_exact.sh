#!/bin/bash
# mpi_resume_exact.sh MPIVAE SOURCE_DIR MPIEXEC [NUMPROC_FLAG [PREFLAGS...]]
#
# Promise 3 of DESIGN.md: a run stopped at any step and resumed with the same
# rank count ends bit-identical to a run that never stopped; resumed with
# another rank count it continues the same data order.
#
# For P = 1 and P = 2 (global batch 16 over 512 rows: 32 steps per epoch):
#  (a) MPIVAE_TEST_STOP_AT_STEP=45 (epoch 2, step 13 of it): exit status 75,
#      checkpoints/step-45.h5 saying epoch_step 13; then `--resume auto --out
#      DIR` to the end of 3 epochs: step-96.h5 equals, bit for bit (h5diff of
#      /params and of /optimizer), step-96.h5 of an uninterrupted run (both
#      with --lr-decay 70: the resume continues the learning rate's decay);
#  (b) a real SIGUSR1 sent to mpirun while it trains (an open-ended run, whose
#      log has shown step lines): exit status 75 and a checkpoint at the step
#      K it stopped at; resumed with `--steps K+37`, the final checkpoint
#      equals bit for bit that of an uninterrupted run of K+37 steps.
# Then P = 4 stopped at step 25 (global batch 30: uneven shards) and resumed
# with P = 2: the log says the rank count changed, and the final /params are
# within 1e-4 (of each tensor's largest magnitude) of an uninterrupted P = 4 run.
source "$(dirname "$0")/mpilib.sh"
mpi_init "$@"

run_ok "$M" data synth --out s.h5 --n-train 512 --n-test 128 --height 8 --width 8 --classes 4
MODEL=(--data s.h5 --hidden 32 --latent 4 --seed 3)
CFG=(train "${MODEL[@]}" --batch 16 --epochs 3 --log-every 8 --lr-decay 70 --lr-floor 0.05) # the cut inside the decay
K=45        # 45 = 32 + 13: in the middle of the second epoch
END=96      # 3 epochs of 512 / 16 = 32 steps

for P in 1 2; do
    mpi_cmd "$P"

    # --- uninterrupted
    run_ok "${MPI[@]}" "$M" "${CFG[@]}" --out "full$P"
    expect_file "full$P/checkpoints/step-$END.h5"

    # --- (a) stopped by the test hook at step K, as if signalled
    run_status env MPIVAE_TEST_STOP_AT_STEP=$K "${MPI[@]}" "$M" "${CFG[@]}" --out "hook$P"
    expect_status "P=$P, MPIVAE_TEST_STOP_AT_STEP=$K" 75 "$RC" last.out
    expect_file "hook$P/checkpoints/step-$K.h5"
    [ ! -e "hook$P/checkpoints/step-$END.h5" ] || fail "P=$P: stopped at step $K, yet step-$END.h5 exists"
    expect_eq "P=$P: epoch_step of step-$K.h5 (mid-epoch)" 13 "$(ckpt_attr "hook$P/checkpoints/step-$K.h5" epoch_step)"
    run_ok "${MPI[@]}" "$M" train --resume auto --out "hook$P"
    expect_grep "P=$P resume after the hook" "resumed from hook$P/checkpoints/step-$K.h5 at step $K" last.out
    expect_identical "P=$P: stopped at $K by the hook and resumed, against uninterrupted" \
        "hook$P/checkpoints/step-$END.h5" "full$P/checkpoints/step-$END.h5"

    # --- (b) a real SIGUSR1 to mpirun during an open-ended run
    bg_start "sig$P.log" "${MPI[@]}" "$M" train "${MODEL[@]}" --batch 16 --epochs 1000000 --log-every 5 --out "sig$P"
    pid=$BG_PID
    wait_for_line "$pid" "sig$P.log" '^step [0-9]+/' 60
    is_alive "$pid" || fail "P=$P: the open-ended run ended before the signal"
    kill -USR1 "$pid"
    bg_wait "$pid" 60
    expect_status "P=$P, SIGUSR1 to mpirun (pid $pid)" 75 "$BG_RC" "sig$P.log"
    expect_grep "P=$P SIGUSR1" "stopped by SIGUSR1 at step [0-9]+" "sig$P.log"
    ck=$(newest_ckpt "sig$P")
    k=$(ckpt_attr "$ck" step)
    es=$(ckpt_attr "$ck" epoch_step)
    expect_eq "P=$P: the checkpoint after SIGUSR1 is the step of the 'stopped' line" \
        "$(sed -n 's/^stopped by SIGUSR1 at step \([0-9]*\).*/\1/p' "sig$P.log")" "$k"
    n=$((k + 37))
    note "P=$P: SIGUSR1 stopped the run at step $k (step $es of its epoch; stop took $BG_WAITED s); resuming to step $n"
    run_ok "${MPI[@]}" "$M" train --resume auto --out "sig$P" --steps "$n"
    expect_grep "P=$P resume after SIGUSR1" "resumed from sig$P/checkpoints/step-$k.h5 at step $k" last.out
    run_ok "${MPI[@]}" "$M" train "${MODEL[@]}" --batch 16 --epochs 1000000 --log-every 1000 --steps "$n" --out "sigfull$P"
    expect_identical "P=$P: stopped at $k by SIGUSR1 and resumed, against uninterrupted" \
        "sig$P/checkpoints/step-$n.h5" "sigfull$P/checkpoints/step-$n.h5"
done

# --- another rank count: stopped with 4 ranks, resumed with 2
CFG4=(train "${MODEL[@]}" --batch 30 --epochs 3 --log-every 6)
K4=25        # 25 = 18 + 7: in the middle of the second epoch
END4=54      # 3 epochs of ceil(512 / 30) = 18 steps
mpi_cmd 4
run_ok "${MPI[@]}" "$M" "${CFG4[@]}" --out full4
run_status env MPIVAE_TEST_STOP_AT_STEP=$K4 "${MPI[@]}" "$M" "${CFG4[@]}" --out move
expect_status "P=4, MPIVAE_TEST_STOP_AT_STEP=$K4" 75 "$RC" last.out
expect_file "move/checkpoints/step-$K4.h5"
expect_eq "P=4: world_size of step-$K4.h5" 4 "$(ckpt_attr "move/checkpoints/step-$K4.h5" world_size)"
mpi_cmd 2
run_ok "${MPI[@]}" "$M" train --resume auto --out move
expect_grep "resume of a 4-rank checkpoint with 2 ranks" "resumed from move/checkpoints/step-$K4.h5" last.out
expect_grep "resume of a 4-rank checkpoint with 2 ranks: the log says the rank count changed" \
    "saved with 4 ranks, now 2" last.out
expect_eq "resumed with 2 ranks: world_size of step-$END4.h5" 2 "$(ckpt_attr "move/checkpoints/step-$END4.h5" world_size)"
h5cmp params "full4/checkpoints/step-$END4.h5" "move/checkpoints/step-$END4.h5" 1e-4

cli_done
