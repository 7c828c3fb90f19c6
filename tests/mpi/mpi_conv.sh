#!/bin/bash
# mpi_conv.sh MPIVAE SOURCE_DIR MPIEXEC [NUMPROC_FLAG [PREFLAGS...]]
#
# The data-parallel promises of DESIGN.md, repeated for --model conv (issue 5)
# on a synthetic 1x8x8 set of 256 training rows, channels 4,8, latent 3:
#  (a) rank-count independence: P = 1, 2, 4 with global batch 30 for 2 epochs
#      (18 steps: 8 full batches and one of 16 rows per epoch, so with 4 ranks
#      the shards are uneven, 7..8 and then 4): final /params within 1e-4 of
#      each tensor's largest magnitude in the P=1 run, and every per-step loss
#      of metrics.h5 within 1e-4 relative of P=1's (largest differences
#      printed);
#  (b) exact resume: P=2 stopped by MPIVAE_TEST_STOP_AT_STEP=13 (epoch 2, step
#      4 of it) exits 75 with checkpoints/step-13.h5; `--resume auto` to the
#      end ends bit-identical (h5diff of /params and /optimizer, status 0) to
#      the uninterrupted P=2 run;
#  (c) the P=2 checkpoint loads into tests/pytorch/vae_model.py's ConvVAE with
#      load_state_dict(strict=True) (load_checkpoint), with the architecture of
#      the run, and `mpivae eval --mean --limit 32` reports the loss PyTorch
#      computes with z = mu on the same rows (tests/pytorch/check_checkpoint.py,
#      relative 1e-4); eval --mean under 2 ranks reports the same loss;
#  (d) sample, reconstruct and eval (sampled z) work on the conv checkpoint:
#      valid PNG grids of the right size, /samples [10,1,8,8] in [0,1],
#      /images [16,1,8,8] = 8 test images / 255 then sigmoid(decode(mu)) as
#      PyTorch's ConvVAE computes it (1e-4), a finite eval loss.
source "$(dirname "$0")/mpilib.sh"
mpi_init "$@"
need_python_modules torch
CHECK="$SRC/tests/pytorch/check_checkpoint.py"
expect_file "$CHECK"

run_ok "$M" data synth --out s.h5 --n-train 256 --n-test 64 --height 8 --width 8 --classes 4
MODEL=(--data s.h5 --model conv --hidden 4,8 --latent 3 --seed 5 --lr 3e-3)
CFG=(train "${MODEL[@]}" --batch 30 --epochs 2 --log-every 3)
STEPS=18   # 2 epochs of ceil(256 / 30) = 9 steps
K=13       # 13 = 9 + 4: in the middle of the second epoch

# --- (a) P = 1, 2, 4
for P in 1 2 4; do
    mpi_cmd "$P"
    run_ok "${MPI[@]}" "$M" "${CFG[@]}" --out "p$P"
    grep -q "^model: conv channels 4,8 latent 3" last.out ||
        fail "P=$P: expected the banner to say 'model: conv channels 4,8 latent 3', found: $(grep '^model' last.out)"
    grep -q "global batch 30" last.out || fail "P=$P: expected the banner to say 'global batch 30', found: $(grep '^training' last.out)"
    expect_file "p$P/checkpoints/step-$STEPS.h5"
    expect_eq "P=$P: world_size saved in the checkpoint" "$P" "$(ckpt_attr "p$P/checkpoints/step-$STEPS.h5" world_size)"
    expect_eq "P=$P: step saved in the checkpoint" "$STEPS" "$(ckpt_attr "p$P/checkpoints/step-$STEPS.h5" step)"
    expect_eq "P=$P: model saved in the checkpoint" conv "$(ckpt_attr "p$P/checkpoints/step-$STEPS.h5" model)"
done
for P in 2 4; do
    h5cmp params "p1/checkpoints/step-$STEPS.h5" "p$P/checkpoints/step-$STEPS.h5" 1e-4
    h5cmp loss p1/metrics.h5 "p$P/metrics.h5" 1e-4 "$STEPS"
done

# --- (b) P = 2 stopped mid-epoch by the test hook, resumed: bit-identical to p2
mpi_cmd 2
run_status env MPIVAE_TEST_STOP_AT_STEP=$K "${MPI[@]}" "$M" "${CFG[@]}" --out hook
expect_status "P=2, MPIVAE_TEST_STOP_AT_STEP=$K" 75 "$RC" last.out
expect_file "hook/checkpoints/step-$K.h5"
[ ! -e "hook/checkpoints/step-$STEPS.h5" ] || fail "P=2: stopped at step $K, yet step-$STEPS.h5 exists"
expect_eq "P=2: epoch_step of step-$K.h5 (mid-epoch)" 4 "$(ckpt_attr "hook/checkpoints/step-$K.h5" epoch_step)"
run_ok "${MPI[@]}" "$M" train --resume auto --out hook
expect_grep "P=2 resume after the hook" "resumed from hook/checkpoints/step-$K.h5 at step $K" last.out
expect_identical "P=2 conv: stopped at $K by the hook and resumed, against uninterrupted" \
    "hook/checkpoints/step-$STEPS.h5" "p2/checkpoints/step-$STEPS.h5"

# --- (c) PyTorch loads the checkpoint and computes the loss mpivae reports
CK=p2/checkpoints/step-$STEPS.h5
py_check "ConvVAE strict load of $CK" "$SRC/tests/pytorch" "$CK" <<'PYEOF'
import sys
sys.dont_write_bytecode = True
sys.path.insert(0, sys.argv[1])
from vae_model import ConvVAE, load_checkpoint, read_params
ck = sys.argv[2]
model = load_checkpoint(ck)  # load_state_dict(strict=True) inside
if not isinstance(model, ConvVAE):
    sys.exit(f"{ck}: expected load_checkpoint to build a ConvVAE, found {type(model).__name__}")
got = (tuple(model.input_shape), list(model.channels), model.Z, model.loss)
want = ((1, 8, 8), [4, 8], 3, "bce")
if got != want:
    sys.exit(f"{ck}: expected (input_shape, channels, Z, loss) = {want}, found {got}")
names = sorted(read_params(ck))
ref = sorted(model.state_dict())
if names != ref:
    sys.exit(f"{ck}: expected /params {ref}, found {names}")
print(f"ConvVAE{want}: strict load of {len(names)} tensors OK")
PYEOF
run_ok "$M" eval --mean --ckpt "$CK" --data s.h5:/test/images --limit 32
grep -q "rows=32 " last.out || fail "expected 'rows=32' from eval --limit 32, found: $(cat last.out)"
loss=$(loss_of last.out)
note "mpivae eval --mean (conv, 32 test rows, z = mu): loss=$loss"
rc=0
"$PY" "$CHECK" "$CK" s.h5 /test/images 32 "$loss" >check.out 2>&1 || rc=$?
sed "s/^/[$TEST_NAME] /" check.out
[ "$rc" -eq 0 ] || fail "check_checkpoint.py $CK: expected exit 0 (strict load, loss $loss matched), found status $rc"
run_ok "${MPI[@]}" "$M" eval --mean --ckpt "$CK" --data s.h5:/test/images --limit 32
loss2=$(loss_of last.out)
py_check "eval --mean with 2 ranks against 1" "$loss" "$loss2" <<'PYEOF'
import sys
a, b = float(sys.argv[1]), float(sys.argv[2])
if not abs(a - b) <= 1e-5 * max(1.0, abs(a)):
    sys.exit(f"expected eval --mean with 2 ranks to report the loss of 1 rank ({a}), found {b}")
print(f"eval --mean: 1 rank {a}, 2 ranks {b}")
PYEOF

# --- (d) sample, reconstruct and eval on the conv checkpoint
run_ok "$M" sample --ckpt "$CK" --n 10 --out X.png
expect_png X.png $((8 * 8 + 9 * 2)) $((2 * 8 + 3 * 2))
expect_file X.h5
run_ok "$M" reconstruct --ckpt "$CK" --n 8 --out R.png --data s.h5:/test/images
expect_png R.png 82 22
expect_file R.h5
py_check "conv sample and reconstruct outputs" "$SRC/tests/pytorch" "$CK" <<'PYEOF'
import sys
sys.dont_write_bytecode = True
sys.path.insert(0, sys.argv[1])
import h5py, numpy as np, torch
from vae_model import load_checkpoint
with h5py.File("X.h5", "r") as f:
    if "/samples" not in f:
        sys.exit(f"X.h5: expected /samples, found {list(f.keys())}")
    d = f["/samples"]
    if d.shape != (10, 1, 8, 8) or d.dtype != np.float32:
        sys.exit(f"X.h5: expected /samples float32 (10, 1, 8, 8), found {d.dtype} {d.shape}")
    s = d[()]
if not (np.all(np.isfinite(s)) and s.min() >= 0 and s.max() <= 1):
    sys.exit(f"X.h5: expected /samples in [0, 1], found [{s.min()}, {s.max()}]")
with h5py.File("R.h5", "r") as f:
    if "/images" not in f:
        sys.exit(f"R.h5: expected /images, found {list(f.keys())}")
    d = f["/images"]
    if d.shape != (16, 1, 8, 8):
        sys.exit(f"R.h5: expected /images of shape (16, 1, 8, 8), found {d.shape}")
    r = d[()].astype(np.float64)
with h5py.File("s.h5", "r") as f:
    t = f["/test/images"][:8].astype(np.float64).reshape(8, 1, 8, 8) / 255.0
err_in = np.abs(r[:8] - t).max()
if err_in > 1e-6:
    sys.exit(f"R.h5: expected /images[0:8] = the first 8 test images / 255, found max |diff| {err_in}")
model = load_checkpoint(sys.argv[2]).double()
with torch.no_grad():
    mu, _ = model.encode(torch.from_numpy(t.reshape(8, 64)))
    want = torch.sigmoid(model.decode(mu)).numpy().reshape(8, 1, 8, 8)
err_out = np.abs(r[8:] - want).max()
if err_out > 1e-4:
    sys.exit(f"R.h5: expected /images[8:16] = sigmoid(decode(mu)) of ConvVAE, found max |diff| {err_out}")
print(f"sample: /samples (10,1,8,8) in [{s.min():.3f}, {s.max():.3f}]; reconstruct: inputs exact "
      f"(max |diff| {err_in:.2g}), reconstructions match PyTorch's ConvVAE (max |diff| {err_out:.2g})")
PYEOF
run_ok "$M" eval --ckpt "$CK" --data s.h5:/test/images
grep -q "rows=64 " last.out || fail "expected 'rows=64' from eval over the test set, found: $(cat last.out)"
ev=$(loss_of last.out)
is_number "$ev" || fail "expected a finite eval loss (sampled z), found '$ev'"
note "mpivae eval (conv, 64 test rows, sampled z): loss=$ev"

cli_done
