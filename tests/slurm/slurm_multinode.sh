#!/usr/bin/env bash
# slurm_multinode.sh MPIVAE SOURCE_DIR [MPIEXEC]: jobs/train-multinode.sbatch
# on a real two-node Slurm (two slurmd on this machine, nodes n1 and n2, each
# in its own UTS namespace: start-cluster.sh with MPIVAE_SLURM_NODES=2)
# checkpoints on the time-limit warning, requeues itself, resumes, and ends
# with the same model as a run that never stopped.
#
# A job of 2 nodes x 2 tasks (launcher mpirun, or MPIVAE_TEST_LAUNCHER=srun)
# trains on a small synthetic set; once it is RUNNING and has logged a step,
# the test delivers the time-limit warning by hand (`scancel --batch
# --signal=USR1`, what `--signal=B:USR1@N` does; `-t 5` keeps the timed one
# away). Asserts:
#   - the ranks ran on two hosts: the banner says "world size 4, 2 ranks per
#     node, hosts: n1 n2" and the allreduce summary "2 nodes";
#   - the job checkpointed: mpivae stopped by SIGUSR1 at a step before the
#     end, the script saw exit status 75 and requeued the job, and Open MPI's
#     notes on that stop were filtered out;
#   - it was requeued (Restarts=1), resumed ("restart count 1", "resumed from"
#     the checkpoint of that step) and finished: COMPLETED, ExitCode 0:0;
#   - the final checkpoint's /params and /optimizer are identical bit for bit
#     (h5diff) to those of an uninterrupted job of the same configuration on
#     the same 2 x 2 layout. Bit for bit needs the same layout: mpivae's
#     allreduce sums within each node, then across nodes, so 1 host x 4 ranks
#     adds in another order (it agrees only to rounding).
# Prints the time from the signal to the job leaving RUNNING, and from the
# requeue (the job PENDING again) to the first step line of the resumed run;
# `scontrol update StartTime=now+2` skips most of the cred_expire hold.
#
# The two pretend hosts share the loopback interface and the cores, which a
# real cluster does not: the test tells Open MPI to talk over lo and not to
# bind ranks (each host would bind its ranks to the same cores), and to yield
# when it polls. These settings are the test's environment, passed to the
# job by sbatch; jobs/ knows nothing of them.
source "$(dirname "$0")/lib.sh"
slurm_test_init "$@"

EPOCHS=${MPIVAE_TEST_EPOCHS:-20} # 512 rows / 16 = 32 steps per epoch
TRAIN=(--epochs "$EPOCHS" --batch 16 --log-every 32)
TOTAL=$((EPOCHS * 32))
DELAY=${MPIVAE_TEST_DELAY_MS:-10} # 640 steps: at least 6.4 s per run
synth "$WORK/s.h5"

export OMPI_MCA_oob_tcp_if_include=lo OMPI_MCA_btl_tcp_if_include=lo
export OMPI_MCA_hwloc_base_binding_policy=none OMPI_MCA_mpi_yield_when_idle=1
export MPIVAE_SLURM_NODES=2
start_slurm

OUT=$WORK/job.out
export MPIVAE DATA=$WORK/s.h5 RUN_DIR=$WORK/run-slurm TRAIN_ARGS="${TRAIN[*]}" LAUNCHER=${MPIVAE_TEST_LAUNCHER:-mpirun} MAX_RESTARTS=2
SB=(sbatch --parsable --nodes=2 --ntasks-per-node=2 -t 5 --chdir="$WORK")
J=$(MPIVAE_TEST_STEP_DELAY_MS=$DELAY "${SB[@]}" -J multinode-test -o "$OUT" "$SRC/jobs/train-multinode.sbatch") ||
    fail "expected sbatch to accept jobs/train-multinode.sbatch on 2 nodes x 2 tasks, found it refused"
note "submitted job $J (launcher $LAUNCHER)"

wait_until "job $J RUNNING" 60 state_is "$J" RUNNING
expect_eq "job $J NodeList" 'n[1-2]' "$(field "$J" NodeList)"
signal_and_follow "$J" "$OUT"

# --- two hosts
expect_eq "runs of job $J on 2 hosts (banners)" 2 "$(grep -c '^mpivae .*: world size 4, 2 ranks per node, hosts: n1 n2$' "$OUT")"
expect_line "$OUT" '^allreduce \(.*, 2 nodes, '
expect_line "$OUT" "job $J on n\\[1-2\\]: restart 0 .* 4 ranks x 1 threads, launcher $LAUNCHER"

# --- the job
expect_requeued_run "$J" "$OUT" "$TOTAL"

# --- the same configuration, uninterrupted, on the same 2 x 2 layout
REF=$WORK/run-ref
t_ref=$(now)
R=$(RUN_DIR=$REF "${SB[@]}" -J multinode-ref -o "$WORK/ref.out" "$SRC/jobs/train-multinode.sbatch") ||
    fail "expected sbatch to accept the reference job, found it refused"
wait_until "reference job $R to end" 120 ended "$R"
expect_eq "reference job $R state" COMPLETED "$(field "$R" JobState)"
expect_eq "reference job $R Restarts" 0 "$(field "$R" Restarts)"
expect_eq "reference job on 2 hosts (banners)" 1 "$(grep -c '^mpivae .*: world size 4, 2 ranks per node, hosts: n1 n2$' "$WORK/ref.out")"
expect_final_equals "$REF/checkpoints/step-$TOTAL.h5" "the uninterrupted job $R on the same 2 x 2 layout"

note_requeue_times
note "first resumed step line -> job ended: $(diff_s "$t_step2" "$t_end") s; reference job: $(diff_s "$t_ref" "$(now)") s"
note "resumed run: $(sed -n 's/^finished: \([0-9]* steps, [0-9.]* s\).*/\1/p' "$OUT"); uninterrupted run: $(sed -n 's/^finished: \([0-9]* steps, [0-9.]* s\).*/\1/p' "$WORK/ref.out")"
test_done
