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
# Run 4 (its own run directory) has rank 1 killed with SIGKILL.
# Asserts:
#   - runs 1 and 2 exit with 75 after "stopped by SIGUSR1 at step N" and a
#     checkpoint of step N (Ctrl-C reaches only the script, which forwards
#     SIGUSR1 to mpirun), each before the last step;
#   - their output has none of Open MPI's notes on that stop: no "Primary
#     job", "aborted" or "non-zero exit code" (jobs/mpirun-stderr-filter.sh);
#   - runs 2 and 3 say "resumed from" the previous run's checkpoint;
#   - run 3 exits 0 and its final checkpoint's /params and /optimizer are
#     identical bit for bit (h5diff) to an uninterrupted `mpirun -np 2` run;
#   - run 4 exits with a non-zero status other than 75, and its output keeps
#     both of Open MPI's notes on the failure ("Primary job ... terminated
#     normally", "mpirun noticed that process rank 1 ... exited on signal 9").
# The outputs are read once no process has them open: the filter, a child of
# mpirun, may pass on its last lines a moment after jobs/local.sh has ended.
source "$(dirname "$0")/lib.sh"
slurm_test_init "$@"

EPOCHS=${MPIVAE_TEST_EPOCHS:-120} # 32 steps per epoch
TRAIN=(--data "$WORK/s.h5" --epochs "$EPOCHS" --batch 16 --log-every 100)
TOTAL=$((EPOCHS * 32))
DELAY=${MPIVAE_TEST_DELAY_MS:-2} # 3840 steps: at least 7.7 s per interrupted run
synth "$WORK/s.h5"
export RANKS=2 RUN_DIR=$WORK/run MPIVAE

# start_local RUN: runs jobs/local.sh in the background in its own process
# group (set -m), as a shell runs a command, output in $OUT (local-RUN.log);
# returns once it logged a step, with its pid in PID.
start_local() {
    OUT=$WORK/local-$1.log
    set -m
    MPIVAE_TEST_STEP_DELAY_MS=$DELAY bash "$SRC/jobs/local.sh" "${TRAIN[@]}" >"$OUT" 2>&1 &
    PID=$!
    set +m
    wait_until "a step line from run $1" 60 has_line "$OUT" '^step [0-9]+/'
}

# closed FILE: no process has FILE open any more.
closed() { [ -z "$(find /proc/[0-9]*/fd -maxdepth 1 -lname "$1" -print -quit 2>/dev/null)" ]; }

# interrupted RUN SIGNAL: start_local, then SIGNAL (INT to the process group,
# as Ctrl-C in a terminal; others to the script); expects status 75.
interrupted() {
    local out rc=0
    start_local "$1"
    out=$OUT
    if [ "$2" = INT ]; then kill -INT -- "-$PID"; else kill -"$2" "$PID"; fi
    wait "$PID" || rc=$?
    expect_eq "exit status of run $1 (jobs/local.sh after SIG$2)" 75 "$rc"
    wait_until "every writer of $(basename "$out") to close it" 10 closed "$out"
    expect_line "$out" '^stopped by SIGUSR1 at step [0-9]+ after writing a checkpoint'
    expect_no_line "$out" 'Primary job'
    expect_no_line "$out" 'aborted'
    expect_no_line "$out" 'non-zero exit code'
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

# Run 4: a rank dies; Open MPI's notes on it must stay.
RUN_DIR=$WORK/run-kill
start_local 4
mp=$(pgrep -P "$PID" -x mpirun || true)
[ -n "$mp" ] || fail "expected mpirun as a child of jobs/local.sh (pid $PID), found none"
victim=""
for c in $(pgrep -P "$mp" || true); do
    if { tr '\0' '\n' <"/proc/$c/environ"; } 2>/dev/null | grep -x OMPI_COMM_WORLD_RANK=1 >/dev/null; then victim=$c; fi
done
[ -n "$victim" ] || fail "expected rank 1 among the children of mpirun (pid $mp), found none"
kill -KILL "$victim"
rc=0
wait "$PID" || rc=$?
case $rc in 0 | 75) fail "exit status of run 4 (rank 1 killed): expected non-zero and not 75, found $rc" ;; esac
wait_until "every writer of local-4.log to close it" 10 closed "$OUT"
expect_line "$OUT" '^Primary job .*terminated normally'
expect_line "$OUT" '^mpirun noticed that process rank 1 .* exited on signal 9'
note "run 4: rank 1 killed -> exit status $rc, Open MPI's notes on it kept"
test_done
