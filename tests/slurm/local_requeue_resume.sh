#!/usr/bin/env bash
# local_requeue_resume.sh MPIVAE SOURCE_DIR [MPIEXEC]: jobs/local.sh (mpirun
# on a workstation, no Slurm) stopped by signals and run again ends with the
# same model as a run that never stopped.
#
# Run 1 (2 ranks) gets SIGUSR1 once it has logged a step; run 2 gets Ctrl-C
# (SIGINT to its process group, as a terminal sends it); run 3 finishes.
# Runs 1 and 2 sleep DELAY ms after each step (MPIVAE_TEST_STEP_DELAY_MS) so
# that they are still training when the signal comes, however fast the
# machine; the steps and their results do not change.
# Asserts:
#   - runs 1 and 2 exit with 75 after "stopped by SIGUSR1 at step N" and a
#     checkpoint of step N (Ctrl-C reaches only the script, which forwards
#     SIGUSR1 to mpirun), each before the last step;
#   - runs 2 and 3 say "resumed from" the previous run's checkpoint;
#   - run 3 exits 0 and its final checkpoint's /params and /optimizer are
#     identical bit for bit (h5diff) to an uninterrupted `mpirun -np 2` run.
source "$(dirname "$0")/lib.sh"
slurm_test_init "$@"

EPOCHS=${MPIVAE_TEST_EPOCHS:-120} # 32 steps per epoch
TRAIN=(--data "$WORK/s.h5" --epochs "$EPOCHS" --batch 16 --log-every 100)
TOTAL=$((EPOCHS * 32))
DELAY=${MPIVAE_TEST_DELAY_MS:-2} # 3840 steps: at least 7.7 s per interrupted run
synth "$WORK/s.h5"
export RANKS=2 RUN_DIR=$WORK/run MPIVAE

# interrupted RUN SIGNAL: runs jobs/local.sh in the background in its own
# process group (set -m), signals it once it logged a step, expects status 75.
interrupted() {
    local out=$WORK/local-$1.log pid rc=0
    set -m
    MPIVAE_TEST_STEP_DELAY_MS=$DELAY bash "$SRC/jobs/local.sh" "${TRAIN[@]}" >"$out" 2>&1 &
    pid=$!
    set +m
    wait_until "a step line from run $1" 60 has_line "$out" '^step [0-9]+/'
    if [ "$2" = INT ]; then kill -INT -- "-$pid"; else kill -"$2" "$pid"; fi
    wait "$pid" || rc=$?
    expect_eq "exit status of run $1 (jobs/local.sh after SIG$2)" 75 "$rc"
    expect_line "$out" '^stopped by SIGUSR1 at step [0-9]+ after writing a checkpoint'
    STOP=$(sed -n 's/^stopped by SIGUSR1 at step \([0-9]*\) .*/\1/p' "$out" | head -n 1)
    [ "$STOP" -lt "$TOTAL" ] || fail "expected run $1 to stop before the last step $TOTAL, found it stopped at $STOP"
    expect_file "$RUN_DIR/checkpoints/step-$STOP.h5"
    note "run $1: SIG$2 -> checkpoint of step $STOP, exit status 75"
}

interrupted 1 USR1
S1=$STOP
interrupted 2 INT
expect_line "$WORK/local-2.log" "^resumed from $RUN_DIR/checkpoints/step-$S1.h5 at step $S1 "
S2=$STOP
[ "$S2" -gt "$S1" ] || fail "expected run 2 to get past step $S1, found it stopped at $S2"

rc=0
timeout -k 5 120 bash "$SRC/jobs/local.sh" "${TRAIN[@]}" >"$WORK/local-3.log" 2>&1 || rc=$?
expect_eq "exit status of run 3 (jobs/local.sh to the end)" 0 "$rc"
expect_line "$WORK/local-3.log" "^resumed from $RUN_DIR/checkpoints/step-$S2.h5 at step $S2 "
expect_line "$WORK/local-3.log" "^finished: $TOTAL steps"
expect_file "$RUN_DIR/checkpoints/step-$TOTAL.h5"

rc=0
timeout -k 5 120 "$MPIEXEC" -np 2 "$MPIVAE" train --out "$WORK/ref" "${TRAIN[@]}" >"$WORK/ref.log" 2>&1 || rc=$?
expect_eq "exit status of the uninterrupted mpirun -np 2 run" 0 "$rc"
same_checkpoint "$RUN_DIR/checkpoints/step-$TOTAL.h5" "$WORK/ref/checkpoints/step-$TOTAL.h5"
note "stopped at steps $S1 and $S2, finished at $TOTAL: identical bit for bit (/params, /optimizer) to the uninterrupted run"
test_done
