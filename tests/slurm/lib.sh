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

test_done() { note "PASS in $(since "$T_START") s"; }
