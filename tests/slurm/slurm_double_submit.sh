#!/usr/bin/env bash
# slurm_double_submit.sh MPIVAE SOURCE_DIR [MPIEXEC]: the training script
# submitted twice against one run directory on a real (local, one-node) Slurm.
#
# Uses jobs/train-multinode.sbatch on one node with one task per job and its
# default launcher, srun --mpi=pmix, so that the two jobs run side by side.
# Asserts:
#   - the second job, started while the first one trains, refuses: FAILED
#     with ExitCode 1:0, its output has mpivae's message that the run
#     directory "is in use by another training run" naming the first job,
#     and the script says it is not requeued; Restarts=0;
#   - the first job finishes normally (COMPLETED, ExitCode 0:0, Restarts=0,
#     "training finished", the final checkpoint written), and its run
#     directory is sound: jobs/eval.sbatch (2 tasks, srun) evaluates the
#     newest checkpoint and writes the sample and reconstruction grids.
# The first job sleeps DELAY ms after each step (MPIVAE_TEST_STEP_DELAY_MS) so
# that it is still training when the second ends, however fast the machine.
source "$(dirname "$0")/lib.sh"
slurm_test_init "$@"

EPOCHS=${MPIVAE_TEST_EPOCHS:-200} # 32 steps per epoch, one rank
TOTAL=$((EPOCHS * 32))
DELAY=${MPIVAE_TEST_DELAY_MS:-2} # 6400 steps: at least 12.8 s
synth "$WORK/s.h5"
start_slurm

export MPIVAE DATA=$WORK/s.h5 RUN_DIR=$WORK/run TRAIN_ARGS="--epochs $EPOCHS --batch 16 --log-every 100" LAUNCHER=srun
submit() {
    sbatch --parsable -N 1 --ntasks-per-node=1 -t 5 -J "$1" -o "$WORK/$1.out" --chdir="$WORK" \
        "$SRC/jobs/train-multinode.sbatch" || fail "expected sbatch to accept jobs/train-multinode.sbatch, found it refused"
}
J1=$(MPIVAE_TEST_STEP_DELAY_MS=$DELAY submit first)
wait_until "job $J1 RUNNING" 60 state_is "$J1" RUNNING
wait_until "a step line in the output of job $J1" 60 has_line "$WORK/first.out" '^step [0-9]+/'
J2=$(submit second)
note "submitted jobs $J1 and $J2 on one run directory"
wait_until "job $J2 to end" 60 ended "$J2"
s1=$(field "$J1" JobState)

# --- the second job
expect_eq "job $J2 state" FAILED "$(field "$J2" JobState)"
expect_eq "job $J2 exit code" 1:0 "$(field "$J2" ExitCode)"
expect_eq "job $J2 Restarts" 0 "$(field "$J2" Restarts)"
expect_line "$WORK/second.out" "error: run directory '$RUN_DIR' is in use by another training run \\(pid [0-9]+ on [^,]+, Slurm job $J1\\)"
expect_line "$WORK/second.out" 'mpivae failed \(exit status 1\); not requeued'
expect_no_line "$WORK/second.out" 'requeueing'
expect_eq "job $J1 state when job $J2 ended" RUNNING "$s1"
note "job $J2 refused: $(grep -o 'run directory .* is in use by another training run.*' "$WORK/second.out" | head -n 1)"

# --- the first job
POLL=0.5
wait_until "job $J1 to end" 120 ended "$J1"
expect_eq "job $J1 state" COMPLETED "$(field "$J1" JobState)"
expect_eq "job $J1 exit code" 0:0 "$(field "$J1" ExitCode)"
expect_eq "job $J1 Restarts" 0 "$(field "$J1" Restarts)"
expect_line "$WORK/first.out" "^finished: $TOTAL steps"
expect_line "$WORK/first.out" 'training finished \(exit status 0\)'
expect_no_line "$WORK/first.out" 'error:'
expect_file "$RUN_DIR/checkpoints/step-$TOTAL.h5"

# --- the run directory serves jobs/eval.sbatch
JE=$(RUN_DIR=$RUN_DIR LAUNCHER=srun N_SAMPLES=16 N_RECON=8 sbatch --parsable -n 2 -t 5 -o "$WORK/eval.out" --chdir="$WORK" "$SRC/jobs/eval.sbatch") ||
    fail "expected sbatch to accept jobs/eval.sbatch, found it refused"
wait_until "eval job $JE to end" 60 ended "$JE"
expect_eq "eval job $JE state" COMPLETED "$(field "$JE" JobState)"
expect_line "$WORK/eval.out" "checkpoint $RUN_DIR/checkpoints/step-$TOTAL.h5"
expect_line "$WORK/eval.out" '^eval: loss=[0-9.]+ .*rows=128 '
for f in sample-step-$TOTAL.png sample-step-$TOTAL.h5 recon-step-$TOTAL.png recon-step-$TOTAL.h5; do
    expect_file "$RUN_DIR/eval/$f"
done
note "job $J1 finished undisturbed; eval job $JE: $(grep '^eval: ' "$WORK/eval.out")"
test_done
