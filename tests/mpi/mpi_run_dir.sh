#!/bin/bash
# mpi_run_dir.sh MPIVAE SOURCE_DIR MPIEXEC [NUMPROC_FLAG [PREFLAGS...]]
#
# The run directory as a user meets it (2 ranks, issue 15 points 1, 2, 3, 13):
#  (a) readers never stop training: a plain reader that holds metrics.h5 open
#      from before the run to its end, an SWMR reader that follows the run
#      (h5py swmr=True, refresh) and a plain open tried during the run; the
#      run finishes with status 0, the SWMR reader saw the rows grow, and
#      /train/step is 1..N, /eval/step every evaluation, once each;
#  (b) rows at a stop: stopped at step 35 (test hook, as if signalled) with
#      --log-every 20, then resumed to 60: /train/step is 1..60 with no gap
#      and no duplicate, /eval/step 15, 30, 45, 60;
#  (c) the same command again without --resume: refused (status 1, one error
#      naming the directory, what it holds and --resume auto), metrics.h5 and
#      the checkpoints unchanged byte for byte; a directory holding only
#      metrics rows is refused too; --resume auto continues the run;
#  (d) the lock file of a finished run names no holder.
source "$(dirname "$0")/mpilib.sh"
mpi_init "$@"

run_ok "$M" data synth --out s.h5 --n-train 512 --n-test 128 --height 8 --width 8 --classes 4
A=(--data s.h5 --hidden 32 --latent 4 --batch 16)
mpi_cmd 2

# expect_rows FILE N EVAL...: /train/step is 1..N and /eval/step is EVAL (space-separated).
expect_rows() {
    py_check "rows of $1" "$@" <<'EOF'
import sys, h5py, numpy as np
path, n, ev = sys.argv[1], int(sys.argv[2]), [int(v) for v in sys.argv[3:]]
with h5py.File(path, "r") as f:
    s = f["/train/step"][()]
    cols = {k: f["/train"][k].shape[0] for k in f["/train"]}
    e = list(f["/eval/step"][()])
if not np.array_equal(s, np.arange(1, n + 1)):
    gaps = [int(b) for a, b in zip(s[:-1], s[1:]) if b != a + 1]
    sys.exit(f"{path}: expected /train/step = 1..{n}, found {len(s)} rows, breaks before steps {gaps[:10]}")
if set(cols.values()) != {n}:
    sys.exit(f"{path}: expected every /train column to hold {n} rows, found {cols}")
if e != ev:
    sys.exit(f"{path}: expected /eval/step = {ev}, found {e}")
print(f"{path}: /train/step = 1..{n}, /eval/step = {e}")
EOF
}

# ---------------------------------------------------------------- (a) readers
run_ok "${MPI[@]}" "$M" train "${A[@]}" --steps 20 --log-every 10 --out r
# A plain reader opens the file before the run and holds it until the run has ended.
"$PY" - r/metrics.h5 >plain.log 2>&1 <<'EOF' &
import sys, time, os, h5py
f = h5py.File(sys.argv[1], "r")
print("opened", f["/train/step"].shape[0], flush=True)
t0 = time.time()
while not os.path.exists("stop-readers") and time.time() - t0 < 120:
    time.sleep(0.05)
print("held to the end, still reading", f["/train/step"].shape[0], "rows", flush=True)
EOF
PLAIN=$!
BG_PIDS+=("$PLAIN")
for _ in $(seq 100); do grep -q opened plain.log && break; sleep 0.1; done
grep -q opened plain.log || fail "(a) expected the plain reader to open r/metrics.h5, found: $(cat plain.log)"
bg_start run.log env MPIVAE_TEST_STEP_DELAY_MS=25 "${MPI[@]}" "$M" train --resume auto --out r --steps 160 \
    --log-every 10 --eval-every 40
RUN=$BG_PID
wait_for_line "$RUN" run.log '^step [0-9]+/160' 60
# An SWMR reader follows the run; a plain open during the run may be refused, and must not matter.
"$PY" - r/metrics.h5 >swmr.log 2>&1 <<'EOF' &
import sys, time, os, h5py
f = h5py.File(sys.argv[1], "r", swmr=True)
d = f["/train/step"]
seen = []
t0 = time.time()
while not os.path.exists("stop-readers") and time.time() - t0 < 120:
    d.refresh()
    n = d.shape[0]
    if not seen or n != seen[-1]:
        seen.append(n)
    time.sleep(0.02)
d.refresh()
print("seen", " ".join(map(str, seen)), "last", int(d[-1]), flush=True)
EOF
SWMR=$!
BG_PIDS+=("$SWMR")
sleep 0.5
"$PY" -c 'import h5py, sys
try:
    h5py.File(sys.argv[1], "r"); print("plain open during the run: opened")
except OSError as e:
    print("plain open during the run: refused:", e)' r/metrics.h5 >during.log 2>&1 || true
bg_wait "$RUN" 120
expect_status "(a) the run with readers holding metrics.h5" 0 "$BG_RC" run.log
touch stop-readers
wait "$PLAIN" || fail "(a) the plain reader failed: $(cat plain.log)"
wait "$SWMR" || fail "(a) the SWMR reader failed: $(cat swmr.log)"
note "(a) $(cat during.log)"
note "(a) plain reader: $(tr '\n' ' ' <plain.log)"
note "(a) SWMR reader: $(cat swmr.log)"
grep -q "already open for write\|opened" during.log || fail "(a) expected the plain open during the run to open or to be refused as 'already open for write', found: $(cat during.log)"
counts=$(sed -n 's/^seen \(.*\) last.*/\1/p' swmr.log)
"$PY" - "$counts" <<'EOF' || fail "(a) expected the SWMR reader to see the rows grow during the run, found '$counts'"
import sys
c = [int(v) for v in sys.argv[1].split()]
sys.exit(not (len(c) >= 3 and c == sorted(c) and c[-1] == 160 and any(20 < v < 160 for v in c)))
EOF
expect_rows r/metrics.h5 160 20 40 80 120 160

# ---------------------------------------------------------------- (b) rows at a stop
run_status env MPIVAE_TEST_STOP_AT_STEP=35 "${MPI[@]}" "$M" train "${A[@]}" --steps 60 --log-every 20 --eval-every 15 --out g
expect_status "(b) stopped at step 35" 75 "$RC" last.out
expect_file g/checkpoints/step-35.h5
run_ok "${MPI[@]}" "$M" train --resume auto --out g
expect_rows g/metrics.h5 60 15 30 45 60

# ---------------------------------------------------------------- (c) the same command again
cp g/metrics.h5 before-metrics.h5
(cd g/checkpoints && md5sum step-*.h5) >before-ckpts.md5
expect_fail_with 1 "run directory 'g' already holds a run" "checkpoints up to step-60.h5" "metrics.h5 with 60 rows" \
    "--resume auto" -- "${MPI[@]}" "$M" train "${A[@]}" --steps 60 --log-every 20 --eval-every 15 --out g
cmp -s before-metrics.h5 g/metrics.h5 || fail "(c) expected g/metrics.h5 unchanged after the refused run, found it changed"
(cd g/checkpoints && md5sum -c --quiet ../../before-ckpts.md5) || fail "(c) expected the checkpoints unchanged"
[ "$(ls g/checkpoints | grep -c '^step-')" = "$(wc -l <before-ckpts.md5)" ] || fail "(c) expected no new checkpoint, found $(ls g/checkpoints)"
mkdir m
cp g/metrics.h5 m/
expect_fail_with 1 "run directory 'm' already holds a run (metrics.h5 with 60 rows)" -- \
    "${MPI[@]}" "$M" train "${A[@]}" --steps 10 --out m
cmp -s before-metrics.h5 m/metrics.h5 || fail "(c) expected m/metrics.h5 unchanged after the refused run"
expect_absent m/checkpoints
run_ok "${MPI[@]}" "$M" train --resume auto --out g --steps 70
expect_grep "(c) --resume auto continues" "resumed from g/checkpoints/step-60.h5 at step 60" last.out
expect_rows g/metrics.h5 70 15 30 45 60 70

# ---------------------------------------------------------------- (d) the lock of a finished run
[ -e g/lock ] || fail "(d) expected g/lock to exist"
[ ! -s g/lock ] || fail "(d) expected the lock file of a finished run to name no holder, found '$(cat g/lock)'"

cli_done
