#!/bin/bash
# mpi_hvae.sh MPIVAE SOURCE_DIR MPIEXEC [NUMPROC_FLAG [PREFLAGS...]]
#
# The data-parallel promises of DESIGN.md for --model hvae, on a synthetic
# 1x8x8 set of 256 training rows (scales 8x8x4, 4x4x8, one latent group of 2
# channels at each), with --clip, --skip-threshold and --free-bits set:
#  (a) P = 1, 2, 4 with global batch 30 for 2 epochs: /params within 1e-4 of
#      P=1's and every per-step loss within 1e-4 relative; the KL per group is
#      a named term (kl1, kl2 in the log line and metrics.h5);
#  (b) exact resume: P=2 stopped at step 13 by the test hook and resumed ends
#      bit-identical to the uninterrupted P=2 run;
#  (c) the checkpoint loads strictly into the PyTorch twin (tests/pytorch/
#      hvae_model.py), and `eval --mean` reports the loss the twin computes
#      with every z at its mean; 2 ranks report the same;
#  (d) --skip-threshold below every gradient norm: every update skipped on
#      every rank (/params equal to a 0-step run's, metrics 'skipped' = 2 on
#      every row, the count in the summary), and with --max-skips 2 the third
#      skipped update in a row stops the run (status 1, no final checkpoint);
#      --free-bits above every KL makes
#      the KL gradient vanish: bit-identical to --beta 0;
#      a NaN on one rank at step 3 skips that step on both (adam_t 5 of 6);
#  (e) eval --iw 1, 16 on 1 and 2 ranks: the same line, K = 16 above K = 1;
#      sample, reconstruct and encode work.
source "$(dirname "$0")/mpilib.sh"
mpi_init "$@"
need_python_modules torch

run_ok "$M" data synth --out s.h5 --n-train 256 --n-test 64 --height 8 --width 8 --classes 4
MODEL=(--data s.h5 --model hvae --hidden 4,8 --groups 1,1 --latent 2 --seed 5 --lr 3e-3)
CFG=(train "${MODEL[@]}" --batch 30 --epochs 2 --log-every 3 --clip 50 --skip-threshold 1e6)
STEPS=18
K=13

# --- (a) P = 1, 2, 4
for P in 1 2 4; do
    mpi_cmd "$P"
    run_ok "${MPI[@]}" "$M" "${CFG[@]}" --out "p$P"
    expect_grep "P=$P banner" "^model: hvae scales 8x8x4:1,4x4x8:1" last.out
    expect_grep "P=$P log line with a KL per group" "kl1 [0-9.]* kl2 [0-9.]* kl [0-9.]*" last.out
    expect_eq "P=$P: model saved in the checkpoint" hvae "$(ckpt_attr "p$P/checkpoints/step-$STEPS.h5" model)"
done
for P in 2 4; do
    h5cmp params "p1/checkpoints/step-$STEPS.h5" "p$P/checkpoints/step-$STEPS.h5" 1e-4
    h5cmp loss p1/metrics.h5 "p$P/metrics.h5" 1e-4 "$STEPS"
done
py_check "metrics.h5 columns of hvae" <<'PYEOF'
import sys, h5py
with h5py.File("p1/metrics.h5", "r") as f:
    for c in ("recon", "kl1", "kl2", "kl", "skipped"):
        if f"/train/{c}" not in f or f"/train/{c}".replace("train", "eval") not in f and c != "skipped":
            sys.exit(f"p1/metrics.h5: expected /train/{c} (and /eval/{c}), found {list(f['/train'].keys())}")
    kl, k1, k2 = f["/train/kl"][()], f["/train/kl1"][()], f["/train/kl2"][()]
    if abs(kl - k1 - k2).max() > 1e-6 * max(1.0, abs(kl).max()):
        sys.exit(f"expected /train/kl = kl1 + kl2, found differences up to {abs(kl - k1 - k2).max()}")
    if f["/train/skipped"][()].any():
        sys.exit("expected no skipped step under --skip-threshold 1e6")
print(f"hvae metrics: kl = kl1 + kl2 on {len(kl)} rows, no skips")
PYEOF

# --- (b) exact resume
mpi_cmd 2
run_status env MPIVAE_TEST_STOP_AT_STEP=$K "${MPI[@]}" "$M" "${CFG[@]}" --out hook
expect_status "P=2, MPIVAE_TEST_STOP_AT_STEP=$K" 75 "$RC" last.out
run_ok "${MPI[@]}" "$M" train --resume auto --out hook
expect_identical "P=2 hvae: stopped at $K and resumed, against uninterrupted" \
    "hook/checkpoints/step-$STEPS.h5" "p2/checkpoints/step-$STEPS.h5"

# --- (c) the PyTorch twin
CK=p2/checkpoints/step-$STEPS.h5
run_ok "$M" eval --mean --ckpt "$CK" --data s.h5:/test/images --limit 32
loss=$(loss_of last.out)
py_check "hvae twin strict load and loss of $CK" "$SRC/tests/pytorch" "$CK" "$loss" <<'PYEOF'
import sys
sys.dont_write_bytecode = True
sys.path.insert(0, sys.argv[1])
import h5py, numpy as np, torch
from hvae_model import HVAE
ck, want = sys.argv[2], float(sys.argv[3])
with h5py.File(ck, "r") as f:
    a = f.attrs
    m = HVAE(tuple(int(v) for v in a["input_shape"]), [int(v) for v in a["hidden"]], [int(v) for v in a["groups"]],
             int(a["latent"]), a["loss"].decode() if isinstance(a["loss"], bytes) else str(a["loss"]),
             a["posterior"].decode() if isinstance(a["posterior"], bytes) else str(a["posterior"]))
    sd = {}
    def take(name, obj):
        if isinstance(obj, h5py.Dataset):
            sd[name] = torch.from_numpy(obj[()].astype(np.float64))
    f["/params"].visititems(take)
m = m.double()
m.load_state_dict(sd, strict=True)
with h5py.File("s.h5", "r") as f:
    x = torch.from_numpy(f["/test/images"][:32].astype(np.float64).reshape(32, -1) / 255.0)
with torch.no_grad():
    r, kl, _ = m.terms(x)
got = float((r + kl.sum(0)).mean())
if not abs(got - want) <= 1e-4 * max(1.0, abs(want)):
    sys.exit(f"expected the twin's loss with z at the means ({got}) to equal mpivae eval --mean's ({want})")
print(f"twin: strict load of {len(sd)} tensors; loss {got:.6f}, mpivae {want:.6f}")
PYEOF
run_ok "${MPI[@]}" "$M" eval --mean --ckpt "$CK" --data s.h5:/test/images --limit 32
expect_eq "eval --mean at 2 ranks against 1" "$loss" "$(loss_of last.out)"

# --- (d) --skip-threshold, --free-bits
run_ok "${MPI[@]}" "$M" train "${MODEL[@]}" --batch 30 --steps 6 --log-every 3 --skip-threshold 1e-9 --out skip
expect_grep "skip warning" "above --skip-threshold 1e-09; update skipped" last.err
expect_grep "skip summary" "gradient norm: 6 updates skipped over --skip-threshold, 0 clipped" last.out
run_ok "${MPI[@]}" "$M" train "${MODEL[@]}" --batch 30 --steps 1 --log-every 3 --skip-threshold 1e-9 --out skip1
expect_same "6 skipped updates against 1: the initial parameters" skip/checkpoints/step-6.h5 skip1/checkpoints/step-1.h5 /params
py_check "every update skipped" <<'PYEOF'
import sys, h5py, numpy as np
with h5py.File("skip/metrics.h5", "r") as f:
    s = f["/train/skipped"][()]
if len(s) != 6 or not (s == 2).all():
    sys.exit(f"expected 'skipped' = 2 on all 6 rows, found {s.tolist()}")
with h5py.File("skip/checkpoints/step-6.h5", "r") as f:
    t = int(f.attrs["adam_t"])
    g = {k: int(v) for k, v in f["/optimizer"].attrs.items() if k.startswith("t.")}
if t != 0 or any(g.values()):
    sys.exit(f"expected no update taken (adam_t 0, every group's t 0), found adam_t {t}, {g}")
print(f"skip: 6 of 6 updates skipped (adam_t 0, {g})")
PYEOF
# updates skipped over the threshold count toward --max-skips: a run that skips every one stops
expect_fail_with 1 \
    "stopping at step 3: 3 consecutive updates skipped (gradient norm over --skip-threshold 1e-09), more than --max-skips 2 allows" -- \
    "${MPI[@]}" "$M" train "${MODEL[@]}" --batch 30 --steps 6 --log-every 3 --skip-threshold 1e-9 --max-skips 2 --out skipstop
expect_eq "--max-skips 2 under --skip-threshold: updates skipped before the stop" 3 "$(grep -c "update skipped" last.err)"
expect_absent skipstop/checkpoints/step-6.h5
run_ok "${MPI[@]}" "$M" train "${MODEL[@]}" --batch 30 --steps 6 --log-every 3 --clip 1e-3 --out clip
expect_grep "--clip 1e-3 clips every step" "gradient norm: 0 updates skipped over --skip-threshold, 6 clipped to --clip, of 6 steps" last.out
run_ok "${MPI[@]}" "$M" train "${MODEL[@]}" --batch 30 --steps 6 --log-every 3 --out noclip
rc=0
h5diff clip/checkpoints/step-6.h5 noclip/checkpoints/step-6.h5 /optimizer/m >/dev/null 2>&1 || rc=$?
expect_eq "--clip 1e-3 changes Adam's moments (h5diff status 1)" 1 "$rc"
MPIVAE_TEST_NAN_STEPS=3:3 run_ok "${MPI[@]}" "$M" train "${MODEL[@]}" --batch 30 --steps 6 --out nan
expect_grep "a non-finite step on one rank" "step 3: non-finite reconstruction loss" last.err
py_check "the non-finite step skipped on every rank" <<'PYEOF'
import sys, h5py, numpy as np
with h5py.File("nan/checkpoints/step-6.h5", "r") as f:
    t = int(f.attrs["adam_t"])
    bad = [n for n in f["params"] if not np.all(np.isfinite(f["params"][n][()]))]
with h5py.File("nan/metrics.h5", "r") as f:
    s = f["/train/skipped"][()].tolist()
if t != 5 or bad or s != [0, 0, 1, 0, 0, 0]:
    sys.exit(f"expected adam_t 5, finite parameters and skipped [0, 0, 1, 0, 0, 0], found {t}, {bad}, {s}")
print("hvae: step 3 skipped on both ranks (adam_t 5 of 6 steps, skipped column 1 on step 3)")
PYEOF
run_ok "${MPI[@]}" "$M" train "${MODEL[@]}" --batch 30 --steps 6 --free-bits 1e5 --out fb
run_ok "${MPI[@]}" "$M" train "${MODEL[@]}" --batch 30 --steps 6 --beta 0 --out b0
expect_identical "--free-bits 1e5 against --beta 0" fb/checkpoints/step-6.h5 b0/checkpoints/step-6.h5
run_status "$M" train --data s.h5 --model mlp --steps 6 --out plain2 --capacity 5:10 --free-bits 1
expect_status "--free-bits with --capacity" 1 "$RC" last.err
expect_grep "--free-bits with --capacity" "error: --free-bits and --capacity do not combine" last.err
run_status "$M" train "${MODEL[@]}" --capacity 5:10 --steps 2 --out hcap
expect_status "--capacity with --model hvae" 1 "$RC" last.err
expect_grep "--capacity with --model hvae" "error: --capacity is an option of --model mlp,conv, not of --model hvae" last.err
run_status "$M" train --data s.h5 --model mlp --groups 1 --steps 2 --out mlpg
expect_status "--groups with --model mlp" 1 "$RC" last.err
expect_grep "--groups with --model mlp" "error: --groups is an option of --model hvae, not of --model mlp" last.err

# --- (e) IW bound and the tools
run_ok "$M" eval --iw 1 --ckpt "$CK" --data s.h5:/test/images
IW1=$(grep '^iw:' last.out)
run_ok "$M" eval --iw 16 --ckpt "$CK" --data s.h5:/test/images
IW16=$(grep '^iw:' last.out)
run_ok "${MPI[@]}" "$M" eval --iw 16 --ckpt "$CK" --data s.h5:/test/images
expect_eq "eval --iw 16 at 2 ranks against 1" "$IW16" "$(grep '^iw:' last.out)"
py_check "IW bounds" "$IW1" "$IW16" <<'PYEOF'
import re, sys
def bound(s):
    return float(re.search(r">= (-?[0-9.]+) nats", s).group(1))
b1, b16 = bound(sys.argv[1]), bound(sys.argv[2])
if not b16 > b1:
    sys.exit(f"expected the K = 16 bound above K = 1's, found {b16} and {b1}")
print(f"iw: K=1 {b1}, K=16 {b16}")
PYEOF
run_ok "$M" anomaly --ckpt "$CK" --data s.h5:/test/images --iw 1 --out A1.h5
run_ok "${MPI[@]}" "$M" anomaly --ckpt "$CK" --data s.h5:/test/images --iw 16 --out A16.h5
run_ok "$M" anomaly --ckpt "$CK" --data s.h5:/test/images --iw 16 --out A16b.h5
expect_same "anomaly --iw 16 at 2 ranks against 1" A16.h5 A16b.h5 /score
py_check "anomaly --iw: the mean score is minus eval --iw's bound" "$IW1" "$IW16" <<'PYEOF'
import re, sys, h5py, numpy as np
def bound(s):
    return float(re.search(r">= (-?[0-9.]+) nats", s).group(1))
for f, line in (("A1.h5", sys.argv[1]), ("A16.h5", sys.argv[2])):
    with h5py.File(f, "r") as h:
        s = h["/score"][()].astype(np.float64)
    if not abs(-s.mean() - bound(line)) <= 1e-5 * abs(bound(line)) + 1e-4:
        sys.exit(f"{f}: expected the mean score {s.mean()} to be minus the bound of '{line}'")
print("anomaly --iw 1 and 16: mean score = -L_K of eval --iw")
PYEOF
run_ok "$M" sample --ckpt "$CK" --n 10 --out X.png
run_ok "$M" sample --ckpt "$CK" --n 10 --out T0.png --temperature 0
run_ok "$M" sample --ckpt "$CK" --n 10 --out T00.png --temperature 0,0
run_ok "$M" sample --ckpt "$CK" --n 10 --out T01.png --temperature 0,1
run_status "$M" sample --ckpt "$CK" --n 10 --out T3.png --temperature 1,1,1
expect_status "three temperatures for two groups" 2 "$RC" last.err
expect_grep "three temperatures for two groups" "has 3 values; the model in its checkpoint has 2 latent groups" last.err
run_ok "$M" reconstruct --ckpt "$CK" --n 8 --out R.png --data s.h5:/test/images
run_ok "$M" encode --ckpt "$CK" --data s.h5:/test/images --out E.h5
run_ok "$M" interpolate --ckpt "$CK" --from 0 --to 1 --out IA.png --data s.h5:/test/images
run_ok "$M" interpolate --ckpt "$CK" --from 0 --to 1 --out IT.png --data s.h5:/test/images --groups top
run_ok "$M" traverse --ckpt "$CK" --out TR.png --group 2 --dims 0,5 --steps 3
run_status "$M" traverse --ckpt "$CK" --out TR3.png --group 3
expect_status "traverse --group 3 of 2" 2 "$RC" last.err
py_check "hvae tools: temperatures, groups, interpolation in the top group, traverse --group" <<'PYEOF'
import sys, h5py, numpy as np
def rd(f, d):
    with h5py.File(f, "r") as h:
        return h[d][()]
t0, t00, t01, x = rd("T0.h5", "/samples"), rd("T00.h5", "/samples"), rd("T01.h5", "/samples"), rd("X.h5", "/samples")
if not np.array_equal(t0, t00):
    sys.exit("expected --temperature 0,0 to give --temperature 0's samples, bit for bit")
if np.array_equal(t01, t00) or np.array_equal(t01, x):
    sys.exit("expected --temperature 0,1 to differ from both 0 and 1")
if not np.allclose(t00, t00[0:1], rtol=0, atol=1e-5):
    sys.exit("expected every sample at temperature 0 to be the same image (every group at its prior mean)")
g = rd("E.h5", "/groups")
if g.shape != (2, 4) or g[0].tolist() != [0, 2, 4, 4] or g[1].tolist() != [32, 2, 8, 8]:
    sys.exit(f"expected E.h5 /groups [[0, 2, 4, 4], [32, 2, 8, 8]] (offset, C, H, W), found {g.tolist()}")
mu = rd("E.h5", "/mu")
if mu.shape != (64, 32 + 128):
    sys.exit(f"expected /mu of shape (64, 160), found {mu.shape}")
ia, it = rd("IA.h5", "/images"), rd("IT.h5", "/images")
if np.array_equal(ia, it) or not np.all(np.isfinite(it)):
    sys.exit("expected the top-group interpolation to give other (finite) images than the all-group one")
d = rd("TR.h5", "/dims")
if d.tolist() != [32, 37]:
    sys.exit(f"expected traverse --group 2 --dims 0,5 to move dimensions 32 and 37, found {d.tolist()}")
print("temperatures per group, /groups, interpolate --groups top, traverse --group: as expected")
PYEOF
cli_done
