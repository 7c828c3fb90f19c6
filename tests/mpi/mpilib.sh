# shellcheck disable=SC2034  # variables set here are read by the sourcing tests
# mpilib.sh: helpers of the MPI tests (tests/mpi/*.sh), on top of tests/cli/lib.sh.
#
# Source it, then call mpi_init "$@" with the script's arguments:
#   MPIVAE SOURCE_DIR MPIEXEC [NUMPROC_FLAG [PREFLAGS...]]
# (CMake passes ${MPIEXEC_EXECUTABLE} ${MPIEXEC_NUMPROC_FLAG} ${MPIEXEC_PREFLAGS}).
# Everything of cli/lib.sh is available (fail, note, run_ok, expect_fail_with,
# expect_file, py_check, ...); $WORK is the test's own mktemp -d folder.
#
# Runs in the background (bg_start) are waited for with a limit (bg_wait);
# whatever of them is still alive when the test exits is killed by process id
# (its ranks first, then mpirun), so a failing test leaves no process behind.

source "$(dirname "${BASH_SOURCE[0]}")/../cli/lib.sh"

MPI_LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BG_PIDS=()

# mpi_init MPIVAE SOURCE_DIR MPIEXEC [NUMPROC_FLAG [PREFLAGS...]]
mpi_init() {
    [ $# -ge 3 ] || { echo "usage: $0 MPIVAE SOURCE_DIR MPIEXEC [NUMPROC_FLAG [PREFLAGS...]]" >&2; exit 1; }
    local exe=$1
    [ -e "$exe" ] && exe=$(readlink -f "$exe")   # absolute: the tests cd into $WORK
    cli_init "$exe" "$2"
    MPIEXEC=$3
    NPFLAG=${4:--n}
    PREFLAGS=("${@:5}")
    trap 'mpi_cleanup' EXIT
    command -v "$MPIEXEC" >/dev/null || fail "expected an MPI launcher '$MPIEXEC', found none"
    command -v h5diff >/dev/null || fail "expected h5diff (apt install hdf5-tools), found none"
    need_python_modules h5py numpy
    M=$MPIVAE
    H5CMP=("$PY" "$MPI_LIB_DIR/h5cmp.py")
}

# Kills what is left of the background runs (by process id), then cli_cleanup.
mpi_cleanup() {
    local rc=$? p c
    for p in "${BG_PIDS[@]}"; do
        if is_alive "$p"; then
            for c in $(pgrep -P "$p" 2>/dev/null || true); do kill -KILL "$c" 2>/dev/null || true; done
            kill -KILL "$p" 2>/dev/null || true
        fi
    done
    (exit $rc)
    cli_cleanup
}

# mpi_cmd N: the launcher command for N ranks, in the array MPI (oversubscribed:
# the test machine may have fewer cores than ranks).
mpi_cmd() {
    MPI=("$MPIEXEC" "$NPFLAG" "$1" --oversubscribe "${PREFLAGS[@]}")
}

# now: seconds since the epoch, with nanoseconds.
now() { date +%s.%N; }

# elapsed T0: seconds since T0, one decimal.
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }

# is_alive PID: the process exists and is not a zombie.
is_alive() {
    [ -r "/proc/$1/stat" ] || return 1
    local st
    st=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
    [ -n "$st" ] && [ "$st" != Z ]
}

# bg_start LOG CMD...: starts CMD in the background, stdout and stderr to LOG;
# sets BG_PID.
bg_start() {
    local log=$1
    shift
    "$@" >"$log" 2>&1 &
    BG_PID=$!
    BG_PIDS+=("$BG_PID")
}

# wait_for_line PID LOG REGEX SECONDS: waits until LOG has a line matching
# REGEX (grep -E) while PID still runs; fails when PID ends first or on timeout.
wait_for_line() {
    local pid=$1 log=$2 re=$3 lim=$4 t0
    t0=$(now)
    while ! grep -qE -- "$re" "$log" 2>/dev/null; do
        if ! is_alive "$pid"; then
            echo "--- $log (last 20 lines) ---" >&2
            tail -n 20 "$log" >&2 || true
            fail "expected the run (pid $pid) to log a line matching '$re' while running, found it ended first"
        fi
        if awk -v a="$t0" -v b="$(now)" -v l="$lim" 'BEGIN { exit !(b - a > l) }'; then
            echo "--- $log (last 20 lines) ---" >&2
            tail -n 20 "$log" >&2 || true
            fail "expected a line matching '$re' in $log within $lim s, found none"
        fi
        sleep 0.05
    done
}

# bg_wait PID SECONDS: waits up to SECONDS for PID to end; sets BG_RC (its exit
# status) and BG_WAITED (seconds waited). A run still alive after the limit is
# a hang: its ranks and mpirun are killed and the test fails.
bg_wait() {
    local pid=$1 lim=$2 t0 c
    t0=$(now)
    while is_alive "$pid"; do
        if awk -v a="$t0" -v b="$(now)" -v l="$lim" 'BEGIN { exit !(b - a > l) }'; then
            for c in $(pgrep -P "$pid" 2>/dev/null || true); do kill -KILL "$c" 2>/dev/null || true; done
            kill -KILL "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
            fail "expected the run (pid $pid) to end within $lim s, found it still running (a hang); killed it"
        fi
        sleep 0.02
    done
    BG_WAITED=$(elapsed "$t0")
    BG_RC=0
    wait "$pid" || BG_RC=$?
}

# expect_status WHAT WANT FOUND LOG: asserts an exit status, dumping LOG if not.
expect_status() {
    if [ "$2" != "$3" ]; then
        echo "--- $4 (last 30 lines) ---" >&2
        tail -n 30 "$4" >&2 || true
        fail "$1: expected exit status $2, found $3"
    fi
}

# expect_grep WHAT REGEX FILE: FILE has a line matching REGEX (grep -E).
expect_grep() {
    if ! grep -qE -- "$2" "$3"; then
        echo "--- $3 (last 30 lines) ---" >&2
        tail -n 30 "$3" >&2 || true
        fail "$1: expected a line matching '$2' in $3, found none"
    fi
}

# expect_no_grep WHAT REGEX FILE: no line of FILE matches REGEX (grep -E).
expect_no_grep() {
    if grep -qE -- "$2" "$3"; then
        fail "$1: expected no line matching '$2' in $3, found: $(grep -E -- "$2" "$3" | head -n 3)"
    fi
}

# expect_no_h5_object WHAT FILE OBJECT: the HDF5 file has no object at that path.
expect_no_h5_object() {
    expect_file "$2"
    if "$PY" -c 'import h5py, sys; sys.exit(0 if sys.argv[2] in h5py.File(sys.argv[1], "r") else 1)' "$2" "$3"; then
        fail "$1: expected no $3 in $2, found one"
    fi
}

# expect_identical WHAT A B: h5diff finds /params and /optimizer of the two
# checkpoints equal bit for bit (exit status 0 for both).
expect_identical() {
    expect_same "$1" "$2" "$3" /params /optimizer
}

# expect_same WHAT A B OBJECT...: each HDF5 object (group or dataset) is
# bit-identical in files A and B (h5diff status 0).
expect_same() {
    local what=$1 a=$2 b=$3 g rc
    shift 3
    expect_file "$a"
    expect_file "$b"
    for g in "$@"; do
        rc=0
        h5diff "$a" "$b" "$g" >"$WORK/h5diff.out" 2>&1 || rc=$?
        if [ "$rc" -ne 0 ]; then
            head -n 20 "$WORK/h5diff.out" >&2
            fail "$what: expected 'h5diff $a $b $g' to find no difference (status 0), found status $rc"
        fi
    done
    note "bit-identical $*: $a = $b"
}

# ckpt_attr FILE NAME: prints a root attribute of a checkpoint.
ckpt_attr() {
    "$PY" -c 'import h5py, sys
v = h5py.File(sys.argv[1], "r").attrs[sys.argv[2]]
print(v.decode() if isinstance(v, bytes) else v)' "$1" "$2" || fail "cannot read attribute '$2' of '$1'"
}

# newest_ckpt DIR: path of the highest-numbered DIR/checkpoints/step-N.h5.
newest_ckpt() {
    local f
    f=$(ls "$1/checkpoints" 2>/dev/null | sed -n 's/^step-\([0-9]*\)\.h5$/\1/p' | sort -n | tail -n 1)
    [ -n "$f" ] || fail "expected a checkpoint in $1/checkpoints, found none ($(ls -A "$1/checkpoints" 2>/dev/null | tr '\n' ' '))"
    printf '%s/checkpoints/step-%s.h5' "$1" "$f"
}

# run_status CMD...: runs CMD (60 s limit) with its output in $WORK/last.out
# and $WORK/last.err; sets RC without asserting anything.
run_status() { _run "$WORK/last.out" "$WORK/last.err" "$@"; }

# h5cmp params|loss REF OTHER TOL [ROWS]: runs h5cmp.py, prints its report, fails
# when the comparison does not hold.
h5cmp() {
    local out rc=0
    out=$("${H5CMP[@]}" "$@" 2>&1) || rc=$?
    printf '%s\n' "$out" | sed "s/^/[${TEST_NAME}] /"
    [ "$rc" -eq 0 ] || fail "h5cmp $*: the comparison does not hold (status $rc)"
}
