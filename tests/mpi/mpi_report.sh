#!/bin/bash
# mpi_report.sh MPIVAE SOURCE_DIR MPIEXEC [NUMPROC_FLAG [PREFLAGS...]]
#
# The run report (issue 20), rendered in headless Chromium (tests/report/):
#  (a) a run on 2 ranks with a non-finite step (7), stopped at step 25 and
#      resumed on 1 rank under a Slurm job id: train wrote report.html; the
#      page of `mpivae report` passes the generic checks (no console error,
#      no request, images decode, series match their points) and shows a
#      chart per column with the expected points, the resume marker at 25,
#      the skip marker at 7, 2 sessions, the Slurm job, the grids, the
#      checkpoints and the tool outputs (traverse, interpolate, anomaly);
#  (b) `mpivae metrics --csv` equals metrics.h5 row for row, /train and /eval;
#  (c) a run directory as earlier versions left it (no /sessions, no column
#      order, no skipped column): the page renders, the resume is found from
#      the clock;
#  (d) the page of a run still writing its metrics.h5 renders, and the run
#      goes on to finish; the pages the training writes while it goes on
#      reload themselves every 60 s, its last page does not;
#  (e) four families' runs (mlp, conv, vaegan, hvae) overlaid: one smoothed series
#      per run per chart of each column a run has (and its eval series);
#  (f) a 100-epoch-sized run (46,900 rows, 40 grids of each kind): every
#      series at most 600 points, the page under 4 MB; its write time printed;
#  (g) bad input: one message, non-zero status, no page left behind; hostile
#      files (a column order as a list, a row count the file cannot hold, a
#      column name with markup, NaN anomaly scores, a FIFO named *.png): refused
#      with a message, or a page that passes every check.
source "$(dirname "$0")/mpilib.sh"
mpi_init "$@"
need_python_modules h5py numpy
command -v chromium >/dev/null || fail "expected chromium (apt install chromium; tests/deps.sh installs it), found none"
CHECK=("$PY" "$SRC/tests/report/check_run.py")

run_ok "$M" data synth --out s.h5 --n-train 512 --n-test 128 --height 8 --width 8 --classes 4
A=(--data s.h5 --hidden 32 --latent 4 --batch 16 --eval-every 10 --sample-every 5 --log-every 5 --ckpt-every 10)

# ------------------------------------------------- (a) a resumed run with a skipped step
mpi_cmd 2
RC=0
MPIVAE_TEST_NAN_STEPS=7:7 MPIVAE_TEST_STOP_AT_STEP=25 "${MPI[@]}" "$M" train "${A[@]}" --steps 40 --out r >a1.log 2>&1 || RC=$?
expect_status "(a) the run stopped at step 25" 75 "$RC" a1.log
expect_grep "(a) the skipped step" "step 7: non-finite" a1.log
expect_grep "(a) train wrote the report at an evaluation" "^report r/report.html \(" a1.log
expect_file r/report.html
mpi_cmd 1
SLURM_JOB_ID=4242 SLURM_RESTART_COUNT=1 run_ok "${MPI[@]}" "$M" train --resume auto --out r
grep -q "^report r/report.html (" "$WORK/last.out" || fail "(a) expected the resumed run to write r/report.html, found no 'report' line"
run_ok "$M" traverse --ckpt r --out r/traverse.png
run_ok "$M" interpolate --ckpt r --from 0 --to 1 --out r/path.png
run_ok "$M" anomaly --ckpt r --data s.h5:/test/images --out r/scores.h5
run_ok "$M" report r
expect_eq "(a) report's line" "wrote r/report.html" "$(cat "$WORK/last.out")"
run_ok "${CHECK[@]}" r/report.html --run r --resumed 25 --skipped 7:nonfinite --sessions 2 \
    --facts "job 4242, restart count 1" --facts "1 rank on 1 node" --facts "mlp hidden 32 latent 4" \
    --tools traverse,interpolate,anomaly-top --anomaly --screenshot a.png
cat "$WORK/last.out"
py_check "(a) the screenshot" "$SRC/tests/cli" <<'EOF'
import sys, struct
sys.path.insert(0, sys.argv[1])
from png_check import png_problem
data = open("a.png", "rb").read()
w, h = struct.unpack(">II", data[16:24])
p, _ = png_problem(data)
if p or w != 1280 or h < 2000:
    sys.exit(f"a.png: expected a valid full-page PNG 1280 wide and over 2000 high, found {w}x{h} {p or ''}")
print(f"a.png: the full page, {w}x{h}")
EOF

# ------------------------------------------------- (b) the CSV is metrics.h5
for g in train eval; do
    flag=()
    [ "$g" = eval ] && flag=(--eval)
    run_ok "$M" metrics r --csv "${flag[@]}"
    cp "$WORK/last.out" "$g.csv"
    py_check "(b) $g.csv against r/metrics.h5" "$g" "$g.csv" <<'EOF'
import sys, h5py, numpy as np
g, path = sys.argv[1], sys.argv[2]
lines = open(path).read().splitlines()
with h5py.File("r/metrics.h5", "r") as f:
    cols = f["/" + g].attrs["columns"]
    cols = (cols.decode() if isinstance(cols, bytes) else cols).split(",")
    data = {c: f["/" + g][c][()] for c in cols}
if lines[0].split(",") != cols:
    sys.exit(f"expected the header {cols}, found {lines[0]}")
n = len(data["step"])
if len(lines) - 1 != n:
    sys.exit(f"expected {n} rows, found {len(lines) - 1}")
for i, line in enumerate(lines[1:]):
    vals = line.split(",")
    for c, v in zip(cols, vals):
        want = data[c][i]
        got = float(v)
        if not (got == want or (np.isnan(got) and np.isnan(want))):
            sys.exit(f"row {i} column {c}: expected {want!r} (metrics.h5), found {v}")
print(f"{path}: {n} rows x {len(cols)} columns equal to r/metrics.h5 /{g}")
EOF
done
run_ok "$M" metrics r
head -n 1 "$WORK/last.out" | grep -qE "^ *step +epoch +loss +recon +kl +beta" ||
    fail "(b) expected 'mpivae metrics r' to print aligned columns step epoch loss recon kl beta ..., found: $(head -n 1 "$WORK/last.out")"

# ------------------------------------------------- (c) a run directory of an earlier version
cp -r r old
rm -f old/report.html
py_check "(c) strip old/metrics.h5 to the earlier layout" <<'EOF'
import h5py, numpy as np
with h5py.File("old/metrics.h5", "r") as f:
    groups = {g: {k: f[g][k][()] for k in f[g]} for g in ("/train", "/eval")}
with h5py.File("old/metrics.h5", "w") as f:
    for g, cols in groups.items():
        for k, v in cols.items():
            if k != "skipped":
                f.create_dataset(g + "/" + k, data=v, maxshape=(None,), chunks=(256,))
EOF
run_ok "$M" report old
run_ok "${CHECK[@]}" old/report.html --run old --resumed 25 --sessions 0 --facts "not recorded"
cat "$WORK/last.out"

# ------------------------------------------------- (d) the page of a running run
mpi_cmd 2
bg_start live.log env MPIVAE_TEST_STEP_DELAY_MS=40 "${MPI[@]}" "$M" train "${A[@]}" --steps 200 --out live
LIVE=$BG_PID
wait_for_line "$LIVE" live.log "^step 60/200" 60
run_ok "$M" report live --out live.html
is_alive "$LIVE" || fail "(d) expected the run to be still running after the report, found it ended"
grep -q '<meta http-equiv="refresh" content="60">' live/report.html ||
    fail "(d) expected the page the running training wrote (live/report.html) to reload itself, found no refresh"
grep -q 'http-equiv="refresh"' live.html && fail "(d) expected the page of mpivae report not to reload itself, found a refresh"
run_ok "${CHECK[@]}" live.html --run live --live --no-resume --sessions 1
cat "$WORK/last.out"
bg_wait "$LIVE" 120
expect_status "(d) the run that was reported on" 0 "$BG_RC" live.log
grep -q 'http-equiv="refresh"' live/report.html && fail "(d) expected the finished run's last page not to reload itself, found a refresh"

# ------------------------------------------------- (e) four families overlaid
run_ok "${MPI[@]}" "$M" train --data s.h5 --model conv --hidden 8,16 --latent 4 --batch 16 --steps 20 --eval-every 10 \
    --log-every 10 --out c
run_ok "${MPI[@]}" "$M" train --data s.h5 --model vaegan --hidden 8,16 --latent 4 --disc-hidden 8,16 --batch 16 --steps 20 \
    --eval-every 10 --log-every 10 --out g
run_ok "${MPI[@]}" "$M" train --data s.h5 --model hvae --hidden 8,16 --groups 1,1 --latent 2 --batch 16 --steps 20 \
    --eval-every 10 --log-every 10 --out h
run_ok "$M" report --out cmp.html r c g h
run_ok "${CHECK[@]}" cmp.html --run r --run c --run g --run h --resumed 25:0 --facts "mlp hidden 32" --facts "conv channels 8,16" \
    --facts "vaegan" --facts "hvae"
cat "$WORK/last.out"

# ------------------------------------------------- (f) the size of a long run's page
mkdir -p long/samples
py_check "(f) a 100-epoch metrics.h5" <<'EOF'
import h5py, numpy as np, shutil, glob
n = 46900
rng = np.random.default_rng(1)
step = np.arange(1, n + 1)
with h5py.File("long/metrics.h5", "w") as f:
    cols = {"step": step, "epoch": (step - 1) // 469, "loss": 300 + 200 * np.exp(-step / 3000) + rng.normal(0, 3, n),
            "recon": 280 + 200 * np.exp(-step / 3000) + rng.normal(0, 3, n), "kl": 20 + rng.normal(0, 1, n),
            "beta": np.ones(n), "lr": np.full(n, 1e-3), "grad_norm": np.exp(rng.normal(3, 0.5, n)),
            "skipped": np.zeros(n, dtype=np.int64), "samples_per_s": 20000 + rng.normal(0, 500, n), "time": step * 0.01}
    for k, v in cols.items():
        f.create_dataset("/train/" + k, data=v, maxshape=(None,), chunks=(256,))
    f["/train"].attrs["columns"] = ",".join(cols)
    ev = step[468::469]
    e = {"step": ev, "epoch": (ev - 1) // 469 + 1, "loss": 300 + 200 * np.exp(-ev / 3000), "recon": 280 + 200 * np.exp(-ev / 3000),
         "kl": 20 + 0 * ev, "time": ev * 0.01}
    for k, v in e.items():
        f.create_dataset("/eval/" + k, data=v, maxshape=(None,), chunks=(256,))
    f["/eval"].attrs["columns"] = ",".join(e)
prior = sorted(glob.glob("r/samples/prior-step-*.png"))[-1]
recon = sorted(glob.glob("r/samples/recon-step-*.png"))[-1]
for i in range(1, 41):
    shutil.copy(prior, f"long/samples/prior-step-{i * 1172:06d}.png")
    shutil.copy(recon, f"long/samples/recon-step-{i * 1172:06d}.png")
EOF
T0=$(now)
run_ok "$M" report long
note "(f) the page of 46,900 rows and 80 grids written in $(elapsed "$T0") s (the process, start-up included)"
run_ok "${CHECK[@]}" long/report.html --run long --max-bytes 4000000
cat "$WORK/last.out"

# ------------------------------------------------- (g) bad input
expect_fail_with 1 "cannot read the run directory 'nope'" -- "$M" report nope
expect_absent nope/report.html
mkdir -p empty
expect_fail_with 1 "'empty' is not a run directory: it has no metrics.h5" -- "$M" report empty
expect_absent empty/report.html
mkdir -p bad
head -c 3000 /dev/urandom >bad/metrics.h5
expect_fail_with 1 "bad/metrics.h5" -- "$M" report bad
expect_absent bad/report.html
expect_fail_with 1 "bad/metrics.h5" -- "$M" metrics bad --csv
expect_fail_with 2 "need --out FILE" -- "$M" report r c
expect_fail_with 2 "at most 8" -- "$M" report --out x.html r r r r r r r r r
expect_absent x.html
expect_fail_with 1 "cannot write" -- "$M" report r --out no/such/dir/x.html
expect_fail_with 2 "give one run directory" -- "$M" metrics r c
expect_fail_with 1 "nope/metrics.h5" -- "$M" metrics nope

# Hostile files: a column order given as a list, a row count the file cannot hold, a column name
# made to break out of an attribute, scores that are all NaN, a FIFO named like a PNG.
mkdir -p h1 h2
py_check "(g) hostile metrics files" <<'EOF'
import h5py, numpy as np
with h5py.File("h1/metrics.h5", "w") as f:
    for g in ("train", "eval"):
        f.create_dataset(g + "/step", data=np.arange(1, 4))
        f.create_dataset(g + "/loss", data=np.ones(3))
    f["train"].attrs["columns"] = ["step", "loss"]
with h5py.File("h2/metrics.h5", "w") as f:
    for g in ("train", "eval"):
        d = f.create_dataset(g + "/step", shape=(0,), maxshape=(None,), chunks=(256,), dtype="i8")
        d.resize((1 << 40,))
EOF
expect_fail_with 1 "h1/metrics.h5" "/train cannot be read as metrics" -- "$M" report h1
expect_absent h1/report.html
expect_fail_with 1 "h2/metrics.h5" "/train cannot be read as metrics" -- "$M" metrics h2 --csv
cp -r r inj
rm -f inj/report.html
py_check "(g) a column name with markup, NaN scores" <<'EOF'
import h5py, numpy as np
bad = '"><img src=x onerror=alert(1)>'
with h5py.File("inj/metrics.h5", "a") as f:
    cols = f["/train"].attrs["columns"]
    cols = (cols.decode() if isinstance(cols, bytes) else cols).split(",")
    f["/train/" + bad] = f["/train/loss"][()]
    f["/train"].attrs["columns"] = ",".join(cols[:3] + [bad] + cols[3:])
with h5py.File("inj/scores.h5", "a") as f:
    f["/score"][...] = np.nan
EOF
mkfifo inj/fifo.png
run_ok "$M" report inj
run_ok "${CHECK[@]}" inj/report.html --run inj --resumed 25 --skipped 7:nonfinite
cat "$WORK/last.out"
grep -qF '<img src=x' inj/report.html && fail "(g) expected the column name's markup escaped in inj/report.html, found it raw"

cli_done
