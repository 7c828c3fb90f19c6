# shellcheck shell=bash
# lib.sh: shared helpers of the job-script tests (tests/slurm/*.sh).
#
# Source it, then call slurm_test_init "$@" with the script's arguments
# (MPIVAE SOURCE_DIR [MPIEXEC]). Each test works in its own mktemp -d folder
# ($WORK, the working directory), removed on exit (kept when MPIVAE_TEST_KEEP
# is set). Every failed assertion prints what was expected and what was
# found, then the job outputs and the ends of the Slurm logs, and exits 1, so
# the exit code is the verdict.
#
# start_slurm starts a private one-node Slurm in $WORK/slurm with
# tests/slurm/start-cluster.sh (two nodes n1, n2 when the test sets
# MPIVAE_SLURM_NODES=2); an EXIT trap stops it with stop-cluster.sh
# whatever the result. When Slurm cannot start, the test says so and FAILS:
# it never passes or skips without having run. MPIVAE_TEST_XTRACE=1 traces
# start-cluster.sh into $WORK/start-cluster.log.

set -uo pipefail

export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}
if [ "$(id -u)" = 0 ]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi

note() { printf '[%s] %s\n' "${TEST_NAME:-slurm}" "$*"; }

# show_context: the job outputs and the ends of the daemons' logs.
show_context() {
    local f
    for f in "$WORK"/*.out "$WORK"/*.log; do
        [ -f "$f" ] || continue
        printf -- '--- %s (last 40 lines)\n' "$f" >&2
        tail -n 40 "$f" >&2
    done
    if [ -n "${SLURM_OK:-}" ]; then
        printf -- '--- squeue\n' >&2
        squeue 2>&1 | head -n 20 >&2
        for f in "$MPIVAE_SLURM_DIR/log/slurmctld.log" "$MPIVAE_SLURM_DIR"/log/slurmd*.log "$MPIVAE_SLURM_DIR/log/jobcomp.log"; do
            [ -f "$f" ] || continue
            printf -- '--- %s (last 15 lines)\n' "$f" >&2
            tail -n 15 "$f" >&2
        done
    fi
}

fail() {
    printf 'FAIL [%s]: %s\n' "${TEST_NAME:-slurm}" "$*" >&2
    show_context
    exit 1
}

# slurm_test_init MPIVAE SOURCE_DIR [MPIEXEC]
slurm_test_init() {
    TEST_NAME=$(basename "$0" .sh)
    [ $# -ge 2 ] || fail "usage: $0 MPIVAE SOURCE_DIR [MPIEXEC]"
    MPIVAE=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
    SRC=$(cd "$2" && pwd)
    MPIEXEC=${3:-mpirun}
    [ -x "$MPIVAE" ] || fail "expected an executable mpivae, found nothing executable at '$1'"
    [ -f "$SRC/jobs/train.sbatch" ] || fail "expected the source folder, found no jobs/train.sbatch in '$SRC'"
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/mpivae-$TEST_NAME.XXXXXX")
    chmod 755 "$WORK" # munged wants every folder above its socket open to all
    SLURM_UP=""
    SLURM_OK=""
    trap 'slurm_test_cleanup' EXIT
    cd "$WORK" || exit 1
    T_START=$(now)
}

slurm_test_cleanup() {
    local rc=$?
    cd /
    if [ -n "$SLURM_UP" ]; then
        MPIVAE_SLURM_DIR=$MPIVAE_SLURM_DIR bash "$SRC/tests/slurm/stop-cluster.sh" 2>&1 | sed "s/^/[$TEST_NAME] /" >&2
        SLURM_UP=""
    fi
    if [ -n "${MPIVAE_TEST_KEEP:-}" ]; then
        echo "[$TEST_NAME] kept $WORK" >&2
    else
        rm -rf "$WORK"
    fi
    exit $rc
}

# start_slurm: a private one-node cluster in $WORK/slurm; exports SLURM_CONF.
start_slurm() {
    # A test run inside a Slurm job (CI on a cluster) must not talk to that
    # cluster, nor hand its job's variables to ours.
    local v
    for v in $(compgen -e | grep '^SLURM_' || true); do unset "$v"; done
    export MPIVAE_SLURM_DIR=$WORK/slurm
    # two one-task jobs side by side need two CPUs, wherever the test runs
    local cpus
    cpus=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)
    [ "$cpus" -ge 2 ] || export MPIVAE_SLURM_CPUS=2
    export SLURM_CONF=$MPIVAE_SLURM_DIR/etc/slurm.conf
    SLURM_UP=1
    local t0 rc=0
    t0=$(now)
    bash ${MPIVAE_TEST_XTRACE:+-x} "$SRC/tests/slurm/start-cluster.sh" >"$WORK/start-cluster.log" 2>&1 || rc=$?
    if [ $rc != 0 ]; then
        fail "the local Slurm could not start (start-cluster.sh exit status $rc; its messages are below); this test needs a working Slurm and fails without one"
    fi
    SLURM_OK=1
    note "local Slurm up in $(since "$t0") s: $(grep -oE 'nodes? .* idle: .*' "$WORK/start-cluster.log")"
}

# Times in seconds (bash's clock: no process per reading, the tests poll a lot).
now() { printf '%s' "$EPOCHREALTIME"; }
diff_s() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
since() { diff_s "$1" "$(now)"; }
usec() { local t=${EPOCHREALTIME/./}; echo $((10#$t)); }

# field JOB NAME: a field of `scontrol show job` (JobState, Restarts, ExitCode, ...)
field() {
    local info
    info=" $(scontrol show job -o "$1" 2>/dev/null) "
    [[ "$info" =~ [[:space:]]$2=([^[:space:]]*) ]] && printf '%s' "${BASH_REMATCH[1]}"
    return 0
}

# wait_until WHAT TIMEOUT CMD...: runs CMD every POLL seconds (0.05) until it
# succeeds; fails the test after TIMEOUT seconds.
POLL=0.05
wait_until() {
    local what=$1 t=$2 end=$(($(usec) + $2 * 1000000))
    shift 2
    until "$@"; do
        [ "$(usec)" -lt "$end" ] || fail "expected $what within $t s, found it did not happen"
        sleep "$POLL"
    done
}

# state_is JOB STATE...: the job is in one of these states.
state_is() {
    local s j=$1
    shift
    s=$(field "$j" JobState)
    for want in "$@"; do [ "$s" = "$want" ] && return 0; done
    return 1
}
state_is_not() { ! state_is "$@" && [ -n "$(field "$1" JobState)" ]; }
ended() { state_is "$1" COMPLETED FAILED CANCELLED TIMEOUT OUT_OF_MEMORY NODE_FAIL BOOT_FAIL DEADLINE PREEMPTED; }

# has_line FILE REGEX [AFTER_LINE]: a line matching REGEX (grep -E) after line AFTER_LINE.
# (Not grep -q: it would stop reading at the first match, and tail, killed by
# SIGPIPE, would fail the pipeline under pipefail.)
has_line() { [ -f "$1" ] && tail -n +"$((${3:-0} + 1))" "$1" | grep -E -- "$2" >/dev/null; }
# line_no FILE REGEX: the number of the first line matching REGEX (0 when none).
line_no() {
    local n
    n=$(grep -nE -- "$2" "$1" 2>/dev/null | head -n 1 | cut -d: -f1)
    echo "${n:-0}"
}

expect_eq() { [ "$2" = "$3" ] || fail "$1: expected '$2', found '$3'"; }
expect_line() { has_line "$1" "$2" || fail "expected a line matching '$2' in $(basename "$1"), found none"; }
expect_no_line() {
    if has_line "$1" "$2"; then fail "expected no line matching '$2' in $(basename "$1"), found: $(grep -E -- "$2" "$1" | head -n 1)"; fi
}
expect_file() { [ -s "$1" ] || fail "expected the file '$1', found nothing there ($(ls -A "$(dirname "$1")" 2>/dev/null | tr '\n' ' '))"; }


# same_checkpoint A B: /params and /optimizer identical bit for bit (h5diff
# without a tolerance compares exact values).
same_checkpoint() {
    local g rc
    for g in /params /optimizer; do
        rc=0
        h5diff "$1" "$2" "$g" >"$WORK/h5diff.log" 2>&1 || rc=$?
        [ $rc = 0 ] || fail "expected $g of $1 and $2 to be identical bit for bit, found h5diff exit status $rc: $(head -n 6 "$WORK/h5diff.log" | tr '\n' ' ')"
    done
}

# synth FILE: the small synthetic data set of these tests.
synth() {
    "$MPIVAE" data synth --out "$1" --n-train 512 --n-test 128 --height 8 --width 8 >/dev/null ||
        fail "expected 'mpivae data synth' to write $1, found exit status $?"
}

# signal_and_follow J OUT: once job J (output OUT) is RUNNING and has logged a
# step, delivers the time-limit warning (`scancel --batch --signal=USR1`, what
# `--signal=B:USR1@N` does), then follows the job through its requeue
# (PENDING with Restarts=1; `StartTime=now+2` skips most of the cred_expire
# hold), its second start and the resumed run's first step line, to its end.
# Sets t_sig, t_left, t_req, t_run2, t_step2 and t_end (seconds, now).
signal_and_follow() {
    local J=$1 OUT=$2 first2
    wait_until "job $J RUNNING" 60 state_is "$J" RUNNING
    wait_until "a step line in the output of job $J" 60 has_line "$OUT" '^step [0-9]+/'
    t_sig=$(now)
    scancel --batch --signal=USR1 "$J" || fail "expected scancel --batch --signal=USR1 $J to succeed"
    wait_until "job $J to leave RUNNING after the signal" 60 state_is_not "$J" RUNNING
    t_left=$(now)
    wait_until "job $J PENDING with Restarts=1 (requeued)" 60 eval '[ "$(field "$J" JobState)" = PENDING ] && [ "$(field "$J" Restarts)" = 1 ]'
    t_req=$(now)
    scontrol update jobid="$J" StartTime=now+2 || fail "expected scontrol update StartTime=now+2 to succeed"
    wait_until "job $J RUNNING again" 60 state_is "$J" RUNNING
    t_run2=$(now)
    wait_until "the restarted run's banner" 60 has_line "$OUT" 'restart count 1'
    first2=$(line_no "$OUT" 'restart count 1')
    wait_until "a step line of the resumed run" 60 has_line "$OUT" '^step [0-9]+/' "$first2"
    t_step2=$(now)
    POLL=0.5 # (the ranks share the CPUs with this loop)
    wait_until "job $J to end" 120 ended "$J"
    t_end=$(now)
}

# expect_final_equals REF WHAT: the requeued run's final checkpoint FINAL equals
# the uninterrupted run's REF bit for bit (/params, /optimizer), and differs from
# the checkpoint it stopped at (step N), so that the comparison can see a difference.
expect_final_equals() {
    local rc=0
    expect_file "$1"
    same_checkpoint "$FINAL" "$1"
    h5diff "$RUN_DIR/checkpoints/step-$N.h5" "$FINAL" /params >/dev/null 2>&1 || rc=$?
    expect_eq "h5diff of the interrupted and the final checkpoint (1: they differ)" 1 "$rc"
    note "final checkpoint step-$TOTAL.h5 identical bit for bit (/params, /optimizer) to $2"
}

# note_requeue_times: the times signal_and_follow measured (and N, TOTAL).
note_requeue_times() {
    note "signal -> job left RUNNING: $(diff_s "$t_sig" "$t_left") s (stopped at step $N of $TOTAL)"
    note "left RUNNING -> PENDING requeued (Restarts=1): $(diff_s "$t_left" "$t_req") s"
    note "requeue (PENDING) -> RUNNING again: $(diff_s "$t_req" "$t_run2") s (StartTime=now+2)"
    note "requeue (PENDING) -> first resumed step line: $(diff_s "$t_req" "$t_step2") s"
    note "signal -> first resumed step line: $(diff_s "$t_sig" "$t_step2") s"
}

# expect_requeued_run J OUT TOTAL: job J completed after one requeue: it
# stopped by SIGUSR1 at a step N < TOTAL with a checkpoint and status 75 (and
# none of Open MPI's notes on that stop), was requeued (restart 1 of at most
# 2), resumed from step N's checkpoint and finished all TOTAL steps. Sets N
# and FINAL (the last checkpoint).
expect_requeued_run() {
    local J=$1 OUT=$2 TOTAL=$3
    expect_eq "job $J state" COMPLETED "$(field "$J" JobState)"
    expect_eq "job $J exit code" 0:0 "$(field "$J" ExitCode)"
    expect_eq "job $J Restarts" 1 "$(field "$J" Restarts)"
    expect_line "$OUT" "^slurm: job $J, restart count 0$"
    expect_line "$OUT" '^stopped by SIGUSR1 at step [0-9]+ after writing a checkpoint'
    N=$(sed -n 's/^stopped by SIGUSR1 at step \([0-9]*\) .*/\1/p' "$OUT" | head -n 1)
    [ "$N" -lt "$TOTAL" ] || fail "expected the signal to stop the run before its last step $TOTAL, found it stopped at $N"
    expect_line "$OUT" 'mpivae checkpointed and stopped \(exit status 75\)'
    expect_no_line "$OUT" 'Primary job'
    expect_no_line "$OUT" 'non-zero exit code'
    expect_line "$OUT" "requeueing job $J \\(restart 1 of at most 2\\)"
    expect_line "$OUT" "^slurm: job $J, restart count 1$"
    expect_line "$OUT" "^resumed from $RUN_DIR/checkpoints/step-$N.h5 at step $N "
    expect_line "$OUT" "^finished: $TOTAL steps"
    expect_line "$OUT" 'training finished \(exit status 0\)'
    expect_file "$RUN_DIR/checkpoints/step-$N.h5"
    FINAL=$RUN_DIR/checkpoints/step-$TOTAL.h5
    expect_file "$FINAL"
}

test_done() { note "PASS in $(since "$T_START") s"; }
