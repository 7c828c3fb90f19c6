# lib.sh: shared helpers of the command-line tests (tests/cli/*.sh).
#
# Source it, then call cli_init "$@" with the script's arguments
# (MPIVAE [SOURCE_DIR] ...). Every assertion prints what was expected and what
# was found, then exits 1, so a test's exit code is its verdict. Each test runs
# in its own mktemp -d folder ($WORK, the working directory), removed on exit
# (kept when MPIVAE_TEST_KEEP is set, for debugging).
#
# Every command under test runs with a 60 s limit: exit status 124 means it
# hung, and a status >= 128 means it died by a signal; both always fail.

set -euo pipefail

PY=/usr/bin/python3           # Debian's interpreter: has torch and h5py (a pyenv one does not)
CMD_TIMEOUT=60
LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# Defaults for a run by hand; ctest sets these through the test's ENVIRONMENT.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}

fail() {
    printf 'FAIL [%s]: %s\n' "${TEST_NAME:-cli}" "$*" >&2
    exit 1
}

note() { printf '[%s] %s\n' "${TEST_NAME:-cli}" "$*"; }

# cli_init MPIVAE [SOURCE_DIR]: checks the executable, makes and enters $WORK.
cli_init() {
    TEST_NAME=$(basename "$0" .sh)
    [ $# -ge 1 ] || fail "usage: $0 MPIVAE [SOURCE_DIR]"
    MPIVAE=$1
    SRC=${2:-}
    [ -x "$MPIVAE" ] || fail "expected an executable mpivae, found nothing executable at '$MPIVAE'"
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/mpivae-$TEST_NAME.XXXXXX")
    trap 'cli_cleanup' EXIT
    cd "$WORK"
    T_START=$(date +%s.%N)
}

cli_cleanup() {
    local rc=$?
    cd /
    if [ -n "${MPIVAE_TEST_KEEP:-}" ]; then
        echo "[${TEST_NAME:-cli}] kept $WORK" >&2
    else
        rm -rf "$WORK"
    fi
    exit $rc
}

# cli_done: prints the verdict and the time taken.
cli_done() {
    local t
    t=$(awk -v a="$T_START" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
    note "PASS in ${t} s"
}

# show_cmd ARGS...: the command line, quoted, for messages.
show_cmd() { printf '%q ' "$@"; }

# _run OUT ERR CMD...: runs CMD with the time limit; sets RC.
_run() {
    local out=$1 err=$2
    shift 2
    RC=0
    timeout -k 5 "$CMD_TIMEOUT" "$@" >"$out" 2>"$err" || RC=$?
}

_dump() {
    echo "--- stdout (last 20 lines) ---" >&2
    tail -n 20 "$1" >&2 || true
    echo "--- stderr (last 20 lines) ---" >&2
    tail -n 20 "$2" >&2 || true
}

# run_ok CMD...: asserts CMD exits 0 within the limit. Its output is left in
# $WORK/last.out and $WORK/last.err.
run_ok() {
    local out="$WORK/last.out" err="$WORK/last.err"
    _run "$out" "$err" "$@"
    if [ "$RC" -ne 0 ]; then
        local what="exit status $RC"
        [ "$RC" -eq 124 ] && what="a hang (killed after ${CMD_TIMEOUT} s, status 124)"
        [ "$RC" -ge 128 ] && what="death by signal $((RC - 128)) (status $RC)"
        _dump "$out" "$err"
        fail "$(show_cmd "$@"): expected exit status 0, found $what"
    fi
}

# expect_fail_with CODE|nonzero 'substring' ['substring'...] -- CMD...
# Asserts CMD exits with CODE (or any non-zero status when 'nonzero'), not by
# a hang (124) or a signal (>= 128); that stderr contains every substring;
# that stderr has exactly one line containing 'error:' and stdout none.
expect_fail_with() {
    local want=$1
    shift
    local subs=()
    while [ $# -gt 0 ] && [ "$1" != "--" ]; do
        subs+=("$1")
        shift
    done
    [ $# -gt 0 ] || fail "expect_fail_with: missing '--' before the command"
    shift
    local out="$WORK/last.out" err="$WORK/last.err" cmd
    cmd=$(show_cmd "$@")
    _run "$out" "$err" "$@"
    if [ "$RC" -eq 0 ]; then
        _dump "$out" "$err"
        fail "$cmd: expected a non-zero exit status, found 0 (success)"
    fi
    if [ "$RC" -eq 124 ]; then
        _dump "$out" "$err"
        fail "$cmd: expected a clean failure, found a hang (killed after ${CMD_TIMEOUT} s, status 124)"
    fi
    if [ "$RC" -ge 128 ]; then
        _dump "$out" "$err"
        fail "$cmd: expected a clean failure, found death by signal $((RC - 128)) (status $RC)"
    fi
    if [ "$want" != nonzero ] && [ "$RC" -ne "$want" ]; then
        _dump "$out" "$err"
        fail "$cmd: expected exit status $want, found $RC"
    fi
    local s
    for s in "${subs[@]}"; do
        if ! grep -qF -- "$s" "$err"; then
            _dump "$out" "$err"
            fail "$cmd: expected stderr to contain '$s', found it does not"
        fi
    done
    local n_err n_out
    n_err=$(grep -c 'error:' "$err" || true)
    n_out=$(grep -c 'error:' "$out" || true)
    if [ "$n_err" -ne 1 ]; then
        _dump "$out" "$err"
        fail "$cmd: expected exactly one line containing 'error:' on stderr, found $n_err"
    fi
    if [ "$n_out" -ne 0 ]; then
        _dump "$out" "$err"
        fail "$cmd: expected no line containing 'error:' on stdout, found $n_out"
    fi
    note "ok (status $RC): $(grep 'error:' "$err")"
}

# expect_eq WHAT EXPECTED FOUND
expect_eq() {
    [ "$2" = "$3" ] || fail "$1: expected '$2', found '$3'"
}

# expect_file PATH: a non-empty regular file.
expect_file() {
    [ -f "$1" ] || fail "expected the file '$1', found nothing there ($(ls -A "$(dirname "$1")" 2>/dev/null | tr '\n' ' '))"
    [ -s "$1" ] || fail "expected '$1' to be non-empty, found an empty file"
}

# expect_absent PATH
expect_absent() {
    [ ! -e "$1" ] || fail "expected no '$1' (no partial output after a failure), found $(ls -ld "$1")"
}

# expect_png PATH WIDTH HEIGHT: a complete, valid PNG (signature, chunk CRCs,
# IHDR first, IEND last, IDAT inflating to the size IHDR gives) of that size.
expect_png() {
    expect_file "$1"
    local msg rc=0
    msg=$("$PY" "$LIB_DIR/png_check.py" "$1" "$2" "$3" 2>&1) || rc=$?
    [ "$rc" -eq 0 ] || fail "PNG '$1': $msg"
}

# loss_of FILE: the number after 'loss=' in an 'eval:' line of FILE.
loss_of() {
    local v
    v=$(sed -n 's/^eval: .*\bloss=\([-+0-9.eEnaif]*\).*/\1/p' "$1" | head -n 1)
    [ -n "$v" ] || fail "expected an 'eval: loss=...' line in the output, found: $(head -c 400 "$1")"
    printf '%s' "$v"
}

# py_check WHAT ARGS... <<'EOF' ... EOF: runs a Python snippet (stdin) with
# /usr/bin/python3 and ARGS as sys.argv[1:]; asserts it exits 0.
py_check() {
    local what=$1 rc=0 msg
    shift
    msg=$("$PY" - "$@" 2>&1) || rc=$?
    if [ "$rc" -ne 0 ]; then
        printf '%s\n' "$msg" >&2
        fail "$what: the Python check exited with status $rc"
    fi
    [ -z "$msg" ] || printf '%s\n' "$msg"
}

# need_python_modules MOD...: fails (never skips) when /usr/bin/python3 lacks one.
need_python_modules() {
    [ -x "$PY" ] || fail "expected $PY (Debian's python3 with torch and h5py), found none"
    local m
    for m in "$@"; do
        "$PY" -c "import $m" >/dev/null 2>&1 ||
            fail "expected $PY to import '$m' (apt install python3-torch python3-h5py), found it cannot"
    done
}

# is_number S: a finite decimal number (no nan, no inf).
is_number() {
    [[ "$1" =~ ^[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?$ ]]
}

# expect_lt WHAT A B: asserts the number A < the number B.
expect_lt() {
    is_number "$2" || fail "$1: expected a finite number on the left, found '$2'"
    is_number "$3" || fail "$1: expected a finite number on the right, found '$3'"
    awk -v a="$2" -v b="$3" 'BEGIN { exit !(a + 0 < b + 0) }' || fail "$1: expected $2 < $3, found it is not"
}
