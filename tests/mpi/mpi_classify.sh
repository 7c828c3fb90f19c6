#!/bin/bash
# mpi_classify.sh MPIVAE SOURCE_DIR MPIEXEC [NUMPROC_FLAG [PREFLAGS...]]
#
# mpivae classify (--model classifier, issue 19) on a synthetic 1x8x8 set of
# 256 training rows of 4 classes, channels 4,8, 16 features:
#  (a) rank-count independence: P = 1, 2, 3 with global batch 30 for 2 epochs
#      (18 steps; with 3 ranks 10 rows each, then 6, 5, 5 in the last batch):
#      final /params within 1e-4 of each tensor's largest magnitude in the P=1
#      run, every per-step loss of metrics.h5 within 1e-4 relative of P=1's;
#      the banner names the labels and 4 classes (their largest value + 1),
#      the run ends with 'test accuracy: ...', metrics.h5 has /train/xent,
#      /train/error and /eval/error (in [0, 1]), the checkpoint stores
#      model classifier and classes 4;
#  (b) exact resume: P=2 stopped by MPIVAE_TEST_STOP_AT_STEP=13 exits 75;
#      `mpivae classify --resume auto` to the end is bit-identical (h5diff of
#      /params and /optimizer) to the uninterrupted P=2 run;
#  (c) eval on the checkpoint reports xent, error and 'accuracy: A%' equal to
#      what the PyTorch twin (tests/pytorch/classifier_model.py, strict load of
#      /params) computes on the same rows (relative 1e-5), the same under 2
#      ranks; eval --iw, the VAE tools (sample, encode) and eval --labels of the
#      wrong length are refused with one message;
#  (d) bad labels under 2 ranks: a missing labels dataset, the wrong row count,
#      float labels, 2-D labels, a negative label, a label beyond --classes, a
#      held-out label beyond the training classes, a single class, --classes 1:
#      each exits 1 with exactly one message naming the file, the dataset and
#      the problem (or the option), and leaves no checkpoint;
#  (e) classify refuses another --model (a usage error, status 2), train
#      refuses --classes for a VAE (status 1); train --model classifier trains too;
#  (f) mpivae fid with the classifier's features: the test set against itself
#      is 0, the floor (train against test) is above 0 and the same at 2 ranks,
#      a conv VAE's samples after 6 steps are above the floor, the same at 1
#      and 2 ranks.
source "$(dirname "$0")/mpilib.sh"
mpi_init "$@"
need_python_modules torch

run_ok "$M" data synth --out s.h5 --n-train 256 --n-test 64 --height 8 --width 8 --classes 4
MODEL=(--data s.h5 --hidden 4,8 --latent 16 --seed 5 --lr 3e-3)
CFG=(classify "${MODEL[@]}" --batch 30 --epochs 2 --log-every 3)
STEPS=18   # 2 epochs of ceil(256 / 30) = 9 steps
K=13       # in the middle of the second epoch

# --- (a) P = 1, 2, 3
for P in 1 2 3; do
    mpi_cmd "$P"
    run_ok "${MPI[@]}" "$M" "${CFG[@]}" --out "p$P"
    expect_grep "P=$P banner" "^model: classifier channels 4,8 features 16 classes 4 " last.out
    expect_grep "P=$P labels line" "^labels: s.h5:/train/labels, held-out s.h5:/test/labels, 4 classes" last.out
    expect_grep "P=$P accuracy at the end" "^test accuracy: [0-9.]+% \(64 rows\)" last.out
    CK="p$P/checkpoints/step-$STEPS.h5"
    expect_file "$CK"
    expect_eq "P=$P: model saved in the checkpoint" classifier "$(ckpt_attr "$CK" model)"
    expect_eq "P=$P: classes saved in the checkpoint" 4 "$(ckpt_attr "$CK" classes)"
done
for P in 2 3; do
    h5cmp params "p1/checkpoints/step-$STEPS.h5" "p$P/checkpoints/step-$STEPS.h5" 1e-4
    h5cmp loss p1/metrics.h5 "p$P/metrics.h5" 1e-4 "$STEPS"
done
py_check "metrics.h5 columns of a classifier" <<'PYEOF'
import h5py, numpy as np, sys
with h5py.File("p1/metrics.h5", "r") as f:
    for c in ("/train/xent", "/train/error", "/eval/xent", "/eval/error"):
        if c not in f:
            sys.exit(f"p1/metrics.h5: expected {c}, found {list(f['train'])} / {list(f['eval'])}")
    e, x, l = f["/train/error"][()], f["/train/xent"][()], f["/train/loss"][()]
    if len(e) != 18 or not (np.all(e >= 0) and np.all(e <= 1)):
        sys.exit(f"p1/metrics.h5: expected 18 rows of /train/error in [0, 1], found {e}")
    if not np.allclose(x, l, rtol=1e-6, atol=0):
        sys.exit("p1/metrics.h5: expected /train/loss = /train/xent (error is reported only)")
    if not x[-3:].mean() < x[:3].mean():
        sys.exit(f"p1/metrics.h5: expected the cross-entropy to fall, found {x[:3]} then {x[-3:]}")
print(f"metrics.h5: xent {x[0]:.4f} -> {x[-1]:.4f}, error {e[0]:.3f} -> {e[-1]:.3f}")
PYEOF

# --- (b) P = 2 stopped mid-epoch by the test hook, resumed with classify: bit-identical to p2
mpi_cmd 2
run_status env MPIVAE_TEST_STOP_AT_STEP=$K "${MPI[@]}" "$M" "${CFG[@]}" --out hook
expect_status "P=2, MPIVAE_TEST_STOP_AT_STEP=$K" 75 "$RC" last.out
expect_file "hook/checkpoints/step-$K.h5"
run_ok "${MPI[@]}" "$M" classify --resume auto --out hook
expect_grep "P=2 resume after the hook" "resumed from hook/checkpoints/step-$K.h5 at step $K" last.out
expect_identical "P=2 classifier: stopped at $K and resumed, against uninterrupted" \
    "hook/checkpoints/step-$STEPS.h5" "p2/checkpoints/step-$STEPS.h5"

# --- (c) eval against the PyTorch twin; refusals of the VAE tools
CK=p2/checkpoints/step-$STEPS.h5
run_ok "$M" eval --ckpt "$CK" --data s.h5:/test/images
expect_grep "eval line" "^eval: loss=[0-9.]+ xent=[0-9.]+ error=[0-9.]+ rows=64 data=" last.out
expect_grep "eval accuracy" "^accuracy: [0-9.]+% \(64 rows, labels s.h5:/test/labels\)" last.out
xent=$(sed -n 's/^eval: .* xent=\([0-9.]*\) .*/\1/p' last.out)
err=$(sed -n 's/^eval: .* error=\([0-9.]*\) .*/\1/p' last.out)
acc=$(sed -n 's/^accuracy: \([0-9.]*\)%.*/\1/p' last.out)
py_check "eval against the PyTorch twin" "$SRC/tests/pytorch" "$CK" "$xent" "$err" "$acc" <<'PYEOF'
import sys
sys.dont_write_bytecode = True
sys.path.insert(0, sys.argv[1])
import h5py, numpy as np, torch
from classifier_model import load_classifier, terms
model = load_classifier(sys.argv[2]).double()
with h5py.File("s.h5", "r") as f:
    x = torch.from_numpy(f["/test/images"][()].reshape(64, -1).astype(np.float64) / 255.0)
    y = torch.from_numpy(f["/test/labels"][()].astype(np.int64))
with torch.no_grad():
    xe, er, _ = terms(model, x, y)
want_x, want_e = xe.mean().item(), er.mean().item()
got_x, got_e, got_a = (float(v) for v in sys.argv[3:6])
if abs(got_x - want_x) > 1e-5 * max(1.0, want_x):
    sys.exit(f"expected eval's xent to be PyTorch's {want_x:.6f}, found {got_x}")
if abs(got_e - want_e) > 1e-6 or abs(got_a - 100 * (1 - want_e)) > 0.006:
    sys.exit(f"expected error {want_e:.6f} and accuracy {100 * (1 - want_e):.2f}%, found {got_e} and {got_a}%")
print(f"eval: xent {got_x} (PyTorch {want_x:.6f}), accuracy {got_a}% (PyTorch {100 * (1 - want_e):.2f}%)")
PYEOF
run_ok "${MPI[@]}" "$M" eval --ckpt "$CK" --data s.h5:/test/images
expect_grep "eval with 2 ranks" "^eval: loss=[0-9.]+ xent=$xent error=$err rows=64" last.out
expect_fail_with 1 "no importance weights" -- "$M" eval --ckpt "$CK" --iw 4
expect_fail_with 1 "mpivae sample does not work on model family 'classifier'" "the tools that do: eval" -- \
    "$M" sample --ckpt "$CK" --out X.png
expect_fail_with 1 "mpivae encode does not work on model family 'classifier'" -- "$M" encode --ckpt "$CK" --out E.h5
expect_absent X.png
expect_fail_with 1 "labels 's.h5:/train/labels' must be 1-D with 64 values" -- \
    "$M" eval --ckpt "$CK" --data s.h5:/test/images --labels s.h5

# --- (d) bad labels, each under 2 ranks: one message naming the file and dataset, status 1
py_check "write the bad-label file" <<'PYEOF'
import h5py, numpy as np
with h5py.File("s.h5", "r") as s:
    x, y = s["/train/images"][()], s["/train/labels"][()].astype(np.int64)
    tx = s["/test/images"][()]
with h5py.File("b.h5", "w") as f:
    for g in ("nolab", "short", "float", "flat", "neg", "one", "test"):
        f[f"/{g}/images"] = x
    f["/short/labels"] = y[:255]
    f["/float/labels"] = y.astype(np.float32)
    f["/flat/labels"] = y.reshape(256, 1)
    neg = y.copy(); neg[7] = -1
    f["/neg/labels"] = neg
    f["/one/labels"] = np.zeros(256, np.uint8)
    f["/test/labels"] = y.astype(np.uint8)
    f["/held/images"] = tx
    hl = np.arange(64) % 4; hl[5] = 9
    f["/held/labels"] = hl.astype(np.uint8)
PYEOF
mpi_cmd 2
BAD=(classify --hidden 4,8 --latent 16 --batch 30 --epochs 1 --test-data none)
expect_fail_with 1 "'b.h5' has no labels dataset '/nolab/labels'" -- "${MPI[@]}" "$M" "${BAD[@]}" --data b.h5:/nolab/images --out x1
expect_fail_with 1 "labels 'b.h5:/short/labels' must be 1-D with 256 values" -- \
    "${MPI[@]}" "$M" "${BAD[@]}" --data b.h5:/short/images --out x2
expect_fail_with 1 "labels 'b.h5:/float/labels' are not integers" -- "${MPI[@]}" "$M" "${BAD[@]}" --data b.h5:/float/images --out x3
expect_fail_with 1 "labels 'b.h5:/flat/labels' must be 1-D" "found rank 2" -- \
    "${MPI[@]}" "$M" "${BAD[@]}" --data b.h5:/flat/images --out x4
expect_fail_with 1 "labels 'b.h5:/neg/labels' hold -1 in row 7" -- "${MPI[@]}" "$M" "${BAD[@]}" --data b.h5:/neg/images --out x5
expect_fail_with 1 "labels 'b.h5:/test/labels' hold the class 3" "outside 0..2: --classes 3" -- \
    "${MPI[@]}" "$M" "${BAD[@]}" --data b.h5:/test/images --classes 3 --out x6
expect_fail_with 1 "labels 'b.h5:/held/labels' hold the class 9 (row 5), outside 0..3" "the training labels 'b.h5:/test/labels' have 4 classes" -- \
    "${MPI[@]}" "$M" classify --hidden 4,8 --latent 16 --batch 30 --epochs 1 --data b.h5:/test/images \
    --test-data b.h5:/held/images --out x7
expect_fail_with 1 "labels 'b.h5:/one/labels' hold only the class 0" -- "${MPI[@]}" "$M" "${BAD[@]}" --data b.h5:/one/images --out x8
expect_fail_with 1 "--model classifier needs 2..65536 classes, got 1" -- \
    "${MPI[@]}" "$M" "${BAD[@]}" --data b.h5:/one/images --classes 1 --out x9
for d in x1 x2 x3 x4 x5 x6 x7 x8 x9; do
    [ ! -e "$d/checkpoints" ] || fail "$d: expected no checkpoint after refused labels, found $(ls "$d/checkpoints")"
done

# --- (e) options
expect_fail_with 2 "mpivae classify trains --model classifier only, not --model conv" -- "$M" classify --model conv --out y1
expect_fail_with 1 "--classes is an option of --model classifier, not of --model mlp" -- \
    "$M" train --data s.h5 --classes 3 --out y2
run_ok "$M" train --model classifier "${MODEL[@]}" --batch 64 --epochs 1 --out t1
expect_grep "train --model classifier" "^test accuracy: " last.out

# --- (f) mpivae fid with this classifier's features (16 of them)
run_ok "$M" fid --classifier "$CK" --a s.h5:/test/images --b s.h5:/test/images
expect_grep "fid: a set against itself" "^FID a vs b: 0(\\.0+)? \\(N_a 64, N_b 64, features 16\\)" last.out
expect_grep "fid: the floor" "^FID train vs test \\(floor\\): [0-9.]+ \\(N_train 256, N_test 64" last.out
FLOOR=$(grep "floor" last.out)
mpi_cmd 2
run_ok "${MPI[@]}" "$M" fid --classifier "$CK" --a s.h5:/test/images --b s.h5:/test/images
expect_eq "fid's floor at 2 ranks against 1" "$FLOOR" "$(grep "floor" last.out)"
run_ok "${MPI[@]}" "$M" train --data s.h5 --model conv --hidden 4,8 --latent 2 --batch 30 --steps 6 --out vae
run_ok "${MPI[@]}" "$M" fid --classifier "$CK" --a samples:vae --b s.h5:/test/images --n 64 --no-floor
expect_grep "fid of a VAE's samples" "^FID a vs b: [0-9.]+ \\(N_a 64, N_b 64, features 16\\)" last.out
FS=$(grep "^FID a vs b" last.out)
run_ok "$M" fid --classifier "$CK" --a samples:vae --b s.h5:/test/images --n 64 --no-floor
expect_eq "fid of samples at 1 rank against 2" "$FS" "$(grep "^FID a vs b" last.out)"
py_check "the samples' FID is above the floor" "$FS" "$FLOOR" <<'PYEOF'
import re, sys
fs = float(re.search(r"FID a vs b: ([0-9.]+)", sys.argv[1]).group(1))
fl = float(re.search(r"\(floor\): ([0-9.]+)", sys.argv[2]).group(1))
if not fs > fl > 0:
    sys.exit(f"expected the FID of 6-step samples ({fs}) above the train-versus-test floor ({fl}) above 0")
print(f"fid: samples {fs}, floor {fl}")
PYEOF

cli_done
