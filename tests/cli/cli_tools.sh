#!/bin/bash
# cli_tools.sh MPIVAE SOURCE_DIR: the tools on a checkpoint, and --help.
#
# sample: --n 10 writes X.png, a valid PNG grid of 8 columns with 2 pixels of
#   padding (8*8+9*2 = 82 wide, 2*8+3*2 = 22 high for 8x8 images), and X.h5
#   with /samples [10,1,8,8] float32 in [0, 1]; the same seed gives identical
#   samples, another seed different ones.
# reconstruct: --n 8 writes R.png (82x22) and R.h5 with /images [16,1,8,8]:
#   the first 8 equal the first 8 test images scaled by 1/255, the next 8 are
#   their reconstructions, sigmoid(decode(mu)), as PyTorch computes them from
#   the same checkpoint (tests/pytorch/vae_model.py).
# A model with more latent values than an old fixed buffer held (4096: an
#   hvae with 5760): its run ends with the checkpoint and both grids, and
#   reconstruct works on it.
# A run whose sample grids cannot be written (OUT/samples is a file) fails
#   with one message naming the file, after writing its last checkpoint.
# --help of mpivae and of every subcommand exits 0 and prints 'usage'.
source "$(dirname "$0")/lib.sh"
cli_init "$@"
need_python_modules h5py numpy torch
[ -n "$SRC" ] || fail "expected the source folder as the second argument, found none"

M=$MPIVAE
run_ok "$M" data synth --out s.h5 --n-train 512 --n-test 128 --height 8 --width 8 --classes 4
run_ok "$M" train --data s.h5 --hidden 32 --latent 4 --batch 32 --lr 3e-3 --steps 20 --out run
CK=run/checkpoints/step-20.h5
expect_file "$CK"

# --- sample
run_ok "$M" sample --ckpt "$CK" --n 10 --out X.png
expect_png X.png $((8 * 8 + 9 * 2)) $((2 * 8 + 3 * 2))
expect_file X.h5
run_ok "$M" sample --ckpt "$CK" --n 10 --out Y.png            # same seed (default 1)
run_ok "$M" sample --ckpt "$CK" --n 10 --seed 2 --out Z.png   # another seed
expect_png Z.png 82 22
py_check "sample outputs" <<'EOF'
import sys, h5py, numpy as np
def load(p):
    with h5py.File(p, "r") as f:
        if "/samples" not in f:
            sys.exit(f"{p}: expected /samples, found {list(f.keys())}")
        d = f["/samples"]
        if d.shape != (10, 1, 8, 8) or d.dtype != np.float32:
            sys.exit(f"{p}: expected /samples float32 (10, 1, 8, 8), found {d.dtype} {d.shape}")
        return d[()]
x, y, z = load("X.h5"), load("Y.h5"), load("Z.h5")
if not (np.all(np.isfinite(x)) and x.min() >= 0 and x.max() <= 1):
    sys.exit(f"X.h5: expected /samples in [0, 1], found [{x.min()}, {x.max()}]")
if not np.array_equal(x, y):
    sys.exit(f"expected identical samples for the same seed, found max |diff| {np.abs(x - y).max()}")
if np.abs(x - z).max() < 1e-3:
    sys.exit(f"expected different samples for seeds 1 and 2, found max |diff| {np.abs(x - z).max()}")
print(f"sample: /samples (10,1,8,8) float32 in [{x.min():.3f}, {x.max():.3f}]; seed 1 twice identical; seed 2 differs by up to {np.abs(x - z).max():.3f}")
EOF

# --- reconstruct
run_ok "$M" reconstruct --ckpt "$CK" --n 8 --out R.png --data s.h5:/test/images
expect_png R.png 82 22
expect_file R.h5
py_check "reconstruct outputs" "$SRC/tests/pytorch" "$CK" <<'EOF'
import sys
sys.dont_write_bytecode = True
sys.path.insert(0, sys.argv[1])
import h5py, numpy as np, torch
from vae_model import load_checkpoint
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
    x = torch.from_numpy(t.reshape(8, 64))
    mu, _ = model.encode(x)
    want = torch.sigmoid(model.decode(mu)).numpy().reshape(8, 1, 8, 8)
err_out = np.abs(r[8:] - want).max()
if err_out > 1e-4:
    sys.exit(f"R.h5: expected /images[8:16] = sigmoid(decode(mu)) of the inputs, found max |diff| {err_out}")
print(f"reconstruct: inputs match the test images (max |diff| {err_in:.2g}), reconstructions match PyTorch (max |diff| {err_out:.2g})")
EOF

# --- many latent values: an hvae with 8 channels per group at 24x24 and 12x12 (5760)
run_ok "$M" data synth --out big.h5 --n-train 64 --n-test 16 --height 24 --width 24 --classes 2
run_ok "$M" train --data big.h5 --model hvae --hidden 2,2 --groups 1,1 --latent 8 --batch 16 --steps 2 --out hv
grep -q "latent 5760" "$WORK/last.out" || fail "expected the banner to say 'latent 5760', found: $(grep '^model' "$WORK/last.out")"
expect_file hv/checkpoints/step-2.h5
expect_file hv/samples/recon-step-000002.png
expect_file hv/samples/prior-step-000002.png
run_ok "$M" reconstruct --ckpt hv --n 4 --out HR.png
expect_png HR.png $((8 * 24 + 9 * 2)) $((2 * 24 + 3 * 2))
note "5760 latent values (hvae): the run's checkpoint and grids, and reconstruct"

# --- the grids fail: the checkpoint is already written
mkdir hv2 && : > hv2/samples
expect_fail_with 1 "hv2/samples/prior-step-000003.png" "Not a directory" -- \
    "$M" train --data s.h5 --hidden 32 --latent 4 --batch 32 --steps 3 --out hv2
expect_file hv2/checkpoints/step-3.h5

# --- help
run_ok "$M" --help
grep -qi usage "$WORK/last.out" || fail "mpivae --help: expected 'usage' on stdout, found: $(head -c 300 "$WORK/last.out")"
for sub in data train eval sample reconstruct; do
    run_ok "$M" "$sub" --help
    grep -qi usage "$WORK/last.out" ||
        fail "mpivae $sub --help: expected 'usage' on stdout, found: $(head -c 300 "$WORK/last.out")"
done
note "--help: mpivae, data, train, eval, sample, reconstruct exit 0 and print usage"

cli_done
