#!/usr/bin/env bash
# slurm_requeue_resume.sh MPIVAE SOURCE_DIR [MPIEXEC]: jobs/train.sbatch on a
# real (local, one-node) Slurm checkpoints on the time-limit warning, requeues
# itself, resumes, and ends with the same model as a run that never stopped.
#
# A 2-task job (launcher mpirun, or MPIVAE_TEST_LAUNCHER=srun) trains on a small synthetic set; once it is
# RUNNING and has logged a step, the test delivers the time-limit warning by
# hand (`scancel --batch --signal=USR1`, what `--signal=B:USR1@N` does; the
# job gets `-t 5` so the timed one cannot come first). Asserts:
#   - the job checkpointed: mpivae stopped by SIGUSR1 at a step before the
#     end, and the script saw exit status 75 and requeued the job;
#   - the output has none of Open MPI's notes on that stop ("Primary job ...
#     terminated normally, but 1 process returned a non-zero exit code"):
#     jobs/mpirun-stderr-filter.sh removed them;
#   - it was requeued: Restarts=1 in `scontrol show job`;
#   - it resumed: the output shows "restart count 1" and "resumed from" the
#     checkpoint of that step;
#   - it finished: COMPLETED, ExitCode 0:0, "training finished";
#   - metrics.h5 /sessions holds both processes (steps 0 and N, the job id,
#     restart counts 0 and 1), and report.html names the job and its restart
#     and marks the resume at step N;
#   - the final checkpoint's /params and /optimizer are identical bit for
#     bit (h5diff) to those of an uninterrupted `mpirun -np 2` run of the
#     same configuration (and differ from the interrupted checkpoint's, so
#     the comparison can see a difference).
# Prints the time from the signal to the job leaving RUNNING, and from the
# requeue (the job PENDING again) to the first step line of the resumed run;
# `scontrol update StartTime=now+2` skips most of the cred_expire hold.
# The job sleeps DELAY ms after each step (MPIVAE_TEST_STEP_DELAY_MS) so that
# it is still training when the signal comes, however fast the machine; the
# steps and their results do not change.
source "$(dirname "$0")/lib.sh"
slurm_test_init "$@"

EPOCHS=${MPIVAE_TEST_EPOCHS:-120} # 512 rows / 16 = 32 steps per epoch
# MPIVAE_TEST_MODEL_ARGS: the model's options (default: train's, the mlp); slurm_requeue_resume_hvae gives hvae's.
read -r -a MODEL_ARGS <<<"${MPIVAE_TEST_MODEL_ARGS:-}"
TRAIN=(--epochs "$EPOCHS" --batch 16 --log-every 100 "${MODEL_ARGS[@]}")
TOTAL=$((EPOCHS * 32))
DELAY=${MPIVAE_TEST_DELAY_MS:-2} # 3840 steps: at least 7.7 s per run
synth "$WORK/s.h5"
start_slurm

OUT=$WORK/job.out
export MPIVAE DATA=$WORK/s.h5 RUN_DIR=$WORK/run-slurm TRAIN_ARGS="${TRAIN[*]}" LAUNCHER=${MPIVAE_TEST_LAUNCHER:-mpirun} MAX_RESTARTS=2
J=$(MPIVAE_TEST_STEP_DELAY_MS=$DELAY sbatch --parsable -n 2 -t 5 -J requeue-test -o "$OUT" --chdir="$WORK" "$SRC/jobs/train.sbatch") ||
    fail "expected sbatch to accept jobs/train.sbatch, found it refused"
note "submitted job $J"

signal_and_follow "$J" "$OUT"

# --- the job
expect_requeued_run "$J" "$OUT" "$TOTAL"
expect_eq "runs of job $J (banners)" 2 "$(grep -c '^mpivae .*: world size 2' "$OUT")"
if [[ " ${MODEL_ARGS[*]} " =~ " --model "([a-z]+)" " ]]; then
    grep -q "^model: ${BASH_REMATCH[1]} " "$OUT" ||
        fail "expected the job's banner to say 'model: ${BASH_REMATCH[1]}', found: $(grep '^model' "$OUT" | head -1)"
    note "the job trained --model ${BASH_REMATCH[1]}"
fi

# --- what the run recorded of its processes, and its report
rc=0
msg=$(/usr/bin/python3 - "$RUN_DIR/metrics.h5" "$J" "$N" 2>&1 <<'EOF'
import sys, h5py
path, job, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with h5py.File(path, "r") as f:
    s = {k: list(f["/sessions"][k][()]) for k in ("step", "ranks", "slurm_job", "slurm_restart")}
want = {"step": [0, n], "ranks": [2, 2], "slurm_job": [job, job], "slurm_restart": [0, 1]}
if s != want:
    sys.exit(f"{path}: expected /sessions {want}, found {s}")
print(f"/sessions: {s}")
EOF
) || rc=$?
[ $rc = 0 ] || fail "$msg"
note "$msg"
expect_file "$RUN_DIR/report.html"
grep -q "job $J, restart count 1" "$RUN_DIR/report.html" ||
    fail "expected $RUN_DIR/report.html to name 'job $J, restart count 1', found it does not"
grep -q "class=\"marker resume\" data-step=\"$N\"" "$RUN_DIR/report.html" ||
    fail "expected $RUN_DIR/report.html to mark the resume at step $N, found no such marker"
note "report.html names the job and its restart, and marks the resume at step $N"

# --- the same configuration, uninterrupted, same rank count
REF=$WORK/run-ref
rc=0
timeout -k 5 120 "$MPIEXEC" -np 2 "$MPIVAE" train --data "$DATA" --out "$REF" --resume auto "${TRAIN[@]}" >"$WORK/ref.log" 2>&1 || rc=$?
[ $rc = 0 ] || fail "expected the uninterrupted mpirun -np 2 run to exit 0, found $rc"
expect_final_equals "$REF/checkpoints/step-$TOTAL.h5" "the uninterrupted run"

note_requeue_times
note "resumed run: $(sed -n 's/^finished: \([0-9]* steps, [0-9.]* s\).*/\1/p' "$OUT"); uninterrupted run: $(sed -n 's/^finished: \([0-9]* steps, [0-9.]* s\).*/\1/p' "$WORK/ref.log")"
test_done
