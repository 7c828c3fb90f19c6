#!/bin/bash
# cli_latent.sh MPIVAE SOURCE_DIR [MPIEXEC]: the latent-space tools (issue 6) on a
# model trained here on a synthetic set (8x8, 4 shape classes; MLP 64, latent 6).
#
# sample: --n 10 gives /samples [10,1,8,8] and an 82x22 PNG (52x22 with --cols 5);
#   the same --seed gives identical samples, another seed different ones;
#   --temperature 0 gives N identical images (1e-6: BLAS rounding by row position)
#   equal to decode(0) (traverse's z = 0 base with --range 0:0, 1e-6, and
#   sigmoid(decode(0)) in PyTorch, 1e-5).
# interpolate --from I --to J --steps K (linear and --spherical): /z [K,Z],
#   /images [K,1,8,8], /inputs [2,1,8,8] = rows I and J / 255; /images[0] and
#   /images[K-1] equal the reconstructions of rows I and J by `mpivae reconstruct`
#   (1e-6); linear z_k = (1-t) a + t b; spherical keeps both ends exactly, differs
#   from linear in the middle, has |z_k| = (1-t)|a| + t|b| and angle(z_k, a) =
#   t * angle(a, b); the strip PNG is K+2 images wide, input I first and input J
#   last (pixel-exact) and the decoded points between.
# traverse: --dims 0,2 --range 0:0 --index I: every image equals the reconstruction
#   of row I, /base = mu of row I, /values has K entries; --range -3:3 gives
#   /values = linspace; image (r, k) = decode(base + values[k] e_dims[r]) in
#   PyTorch, with base 0 and base mu of row I (the range is an offset); --dims auto prints per-dimension KL in decreasing order,
#   equal to the KL computed from encode's mu/logvar, and picks the top N
#   dimensions; /dims follows the printout.
# encode: /mu, /logvar [N,6] float32, chunked, equal to PyTorch's encoder row by
#   row (1e-4); /mu[I] equals interpolate's /z[0] for --from I; the files of
#   mpirun -n 1, 2 and 3 are identical (h5diff exit 0) on 700 rows (a partial
#   last chunk) and on 256 rows (rank 1 of 2 has no rows).
# anomaly: /score, /recon, /kl [N] with score = recon + beta * kl, recon and kl
#   equal to PyTorch's (z = mu) for a few rows (1e-3 relative); histogram PNG
#   400x200 and top-K PNG valid, the top tiles are the K highest-scored rows
#   (pixel-exact); mpirun -n 1, 2 and 3 give identical files; a model trained on
#   classes 0-2 only (beta 0.5) scores the test split of all 4 classes with
#   --normal-classes 0,1,2 (labels found beside the images under mpirun -n 2,
#   and given by --labels): the line 'roc_auc=A (score) recon_auc=R kl_auc=K'
#   printed; A, R, K equal the attribute 'roc_auc' of /score, /recon, /kl, and
#   each the Mann-Whitney AUC (ties half) of that dataset computed here; the
#   same with or without --labels; A > 0.9. The same three checks for the
#   model of all classes with --normal-classes 0,1 (AUCs between 0 and 1).
# bad arguments: --from / --to / --index out of range, --dims >= latent size, a
#   12x12 model on 8x8 data (also under mpirun -n 2), --labels with the wrong
#   number of rows, --labels without --normal-classes, missing --ckpt: non-zero
#   exit, exactly one 'error:' line naming the fault, no output file.
# --capacity: with --beta 30 over 320 steps, --capacity 5:300 ends with held-out
#   KL (eval --mean) in [3.5, 6.5] nats, the same run without it below 1 nat.
#   Seen when written: 4.93 nats with --capacity 5:300, 0.0003 nats without.
source "$(dirname "$0")/lib.sh"
cli_init "$@"
MPIEXEC=${3:-mpirun}
need_python_modules h5py numpy torch
[ -n "$SRC" ] || fail "expected the source folder as the second argument, found none"
command -v "$MPIEXEC" >/dev/null || fail "expected an MPI launcher '$MPIEXEC', found none"
command -v h5diff >/dev/null || fail "expected h5diff (apt install hdf5-tools), found none"
PYT=$SRC/tests/pytorch
CLI=$SRC/tests/cli

M=$MPIVAE
D=s.h5:/test/images
run_ok "$M" data synth --out s.h5 --n-train 1024 --n-test 256 --height 8 --width 8 --classes 4
run_ok "$M" train --data s.h5 --hidden 64 --latent 6 --batch 64 --lr 3e-3 --epochs 10 --log-every 1000 --out run
CK=run/checkpoints/step-160.h5
expect_file "$CK"
I=3 J=200 K=7

# ---------------------------------------------------------------- sample
run_ok "$M" sample --ckpt "$CK" --n 10 --seed 7 --out S1.png
expect_png S1.png $((8 * 8 + 9 * 2)) $((2 * 8 + 3 * 2))
run_ok "$M" sample --ckpt "$CK" --n 10 --seed 7 --cols 5 --out S2.png
expect_png S2.png $((5 * 8 + 6 * 2)) $((2 * 8 + 3 * 2))
run_ok "$M" sample --ckpt "$CK" --n 10 --seed 8 --out S3.png
run_ok "$M" sample --ckpt "$CK" --n 5 --temperature 0 --seed 9 --out T0.png
expect_png T0.png $((5 * 8 + 6 * 2)) $((8 + 2 * 2))
# decode(0) by the C code: traverse with no data, base z = 0, one value 0.
run_ok "$M" traverse --ckpt "$CK" --dims 0 --range 0:0 --steps 1 --out Z0.png
py_check "sample outputs" "$PYT" "$CK" <<'EOF'
import sys
sys.dont_write_bytecode = True
sys.path.insert(0, sys.argv[1])
import h5py, numpy as np, torch
from vae_model import load_checkpoint
def load(p, ds="/samples"):
    with h5py.File(p, "r") as f:
        if ds not in f:
            sys.exit(f"{p}: expected {ds}, found {list(f.keys())}")
        return f[ds][()]
s1, s2, s3, t0, z0 = load("S1.h5"), load("S2.h5"), load("S3.h5"), load("T0.h5"), load("Z0.h5", "/images")
for name, a, shape in (("S1.h5", s1, (10, 1, 8, 8)), ("T0.h5", t0, (5, 1, 8, 8))):
    if a.shape != shape or a.dtype != np.float32:
        sys.exit(f"{name}: expected /samples float32 {shape}, found {a.dtype} {a.shape}")
if not np.array_equal(s1, s2):
    sys.exit(f"expected identical samples for --seed 7 twice, found max |diff| {np.abs(s1 - s2).max()}")
if np.abs(s1 - s3).max() < 1e-3:
    sys.exit(f"expected different samples for seeds 7 and 8, found max |diff| {np.abs(s1 - s3).max()}")
# z is exactly 0 for every row, but OpenBLAS's sgemm rounds a row differently by its
# position in the batch (blocks of 4 rows vs the tail: seen 7.5e-8), so "identical" is 1e-6.
spread = np.abs(t0 - t0[:1]).max()
if spread > 1e-6:
    sys.exit(f"--temperature 0: expected 5 identical images (1e-6), found max |diff| {spread} between them")
if z0.shape != (1, 1, 8, 8):
    sys.exit(f"Z0.h5: expected /images (1, 1, 8, 8), found {z0.shape}")
e = np.abs(t0 - z0).max()
if e > 1e-6:
    sys.exit(f"--temperature 0: expected decode(0) (traverse's z = 0 image), found max |diff| {e}")
model = load_checkpoint(sys.argv[2]).double()
with torch.no_grad():
    want = torch.sigmoid(model.decode(torch.zeros(1, model.Z, dtype=torch.float64))).numpy().reshape(1, 1, 8, 8)
e2 = np.abs(t0 - want).max()
if e2 > 1e-5:
    sys.exit(f"--temperature 0: expected sigmoid(decode(0)) as PyTorch computes it, found max |diff| {e2}")
print(f"sample: seed 7 twice identical, seed 8 differs by {np.abs(s1 - s3).max():.3f}; "
      f"T=0: 5 identical images = decode(0) (C: {e:.1g}, PyTorch: {e2:.1g})")
EOF

# ---------------------------------------------------------------- interpolate
run_ok "$M" interpolate --ckpt "$CK" --data "$D" --from $I --to $J --steps $K --out IL.png
expect_png IL.png $(((K + 2) * 8 + (K + 3) * 2)) $((8 + 2 * 2))
run_ok "$M" interpolate --ckpt "$CK" --data "$D" --from $I --to $J --steps $K --spherical --out IS.png
expect_png IS.png $(((K + 2) * 8 + (K + 3) * 2)) $((8 + 2 * 2))
run_ok "$M" reconstruct --ckpt "$CK" --data "$D" --first $I --n 1 --cols 1 --out RI.png
run_ok "$M" reconstruct --ckpt "$CK" --data "$D" --first $J --n 1 --cols 1 --out RJ.png
py_check "interpolate outputs" "$CLI" $I $J $K <<'EOF'
import sys
sys.dont_write_bytecode = True
sys.path.insert(0, sys.argv[1])
import h5py, numpy as np
from png_read import read_png, grid_tile
I, J, K = (int(v) for v in sys.argv[2:5])
def load(p):
    with h5py.File(p, "r") as f:
        want = {"/z": (K, 6), "/images": (K, 1, 8, 8), "/inputs": (2, 1, 8, 8)}
        out = {}
        for k, shape in want.items():
            if k not in f:
                sys.exit(f"{p}: expected {k}, found {list(f.keys())}")
            if f[k].shape != shape:
                sys.exit(f"{p}: expected {k} of shape {shape}, found {f[k].shape}")
            out[k] = f[k][()].astype(np.float64)
        return out
L, S = load("IL.h5"), load("IS.h5")
with h5py.File("s.h5", "r") as f:
    x = f["/test/images"][()]
with h5py.File("RI.h5", "r") as f:
    ri = f["/images"][()]
with h5py.File("RJ.h5", "r") as f:
    rj = f["/images"][()]
want_in = np.stack([x[I], x[J]]).astype(np.float64) / 255.0
for name, o in (("IL.h5", L), ("IS.h5", S)):
    e = np.abs(o["/inputs"] - want_in).max()
    if e > 1e-7:
        sys.exit(f"{name}: expected /inputs = test rows {I} and {J} / 255, found max |diff| {e}")
    if np.abs(ri[0] - want_in[0]).max() > 1e-7 or np.abs(rj[0] - want_in[1]).max() > 1e-7:
        sys.exit("reconstruct --first: expected its first image to be the input row")
    e0 = np.abs(o["/images"][0] - ri[1]).max()
    e1 = np.abs(o["/images"][K - 1] - rj[1]).max()
    if e0 > 1e-6 or e1 > 1e-6:
        sys.exit(f"{name}: expected /images[0] and /images[K-1] = the reconstructions of rows {I} and {J} "
                 f"(mpivae reconstruct), found max |diff| {e0:.3g} and {e1:.3g}")
a, b = L["/z"][0], L["/z"][K - 1]
t = np.linspace(0, 1, K)[:, None]
e = np.abs(L["/z"] - ((1 - t) * a + t * b)).max()
if e > 1e-5:
    sys.exit(f"IL.h5: expected linear /z_k = (1-t) a + t b, found max |diff| {e}")
if not (np.array_equal(S["/z"][0], a) and np.array_equal(S["/z"][K - 1], b)):
    sys.exit(f"IS.h5: expected --spherical to keep both ends exactly, found |diff| "
             f"{np.abs(S['/z'][0] - a).max()} and {np.abs(S['/z'][K - 1] - b).max()}")
if np.abs(S["/images"][[0, K - 1]] - L["/images"][[0, K - 1]]).max() > 1e-6:
    sys.exit("IS.h5: expected the end images to equal the linear path's")
mid = np.abs(S["/z"][1:K - 1] - L["/z"][1:K - 1]).max()
if mid < 1e-3:
    sys.exit(f"IS.h5: expected the spherical path to differ from the linear one in the middle, found max |diff| {mid}")
na, nb = np.linalg.norm(a), np.linalg.norm(b)
w = np.arccos(np.clip(a @ b / (na * nb), -1, 1))
for k in range(K):
    tk = k / (K - 1)
    zk = S["/z"][k]
    n = np.linalg.norm(zk)
    ang = np.arccos(np.clip(zk @ a / (n * na), -1, 1))
    if abs(n - ((1 - tk) * na + tk * nb)) > 1e-4 or abs(ang - tk * w) > 1e-3:
        sys.exit(f"IS.h5 step {k}: expected |z| = {(1 - tk) * na + tk * nb:.5f} at angle {tk * w:.5f} from a, "
                 f"found |z| = {n:.5f} at angle {ang:.5f}")
# The strip: input I, the K decoded points, input J.
for png, o in (("IL.png", L), ("IS.png", S)):
    pix = read_png(png)[:, :, 0].astype(int)
    if not np.array_equal(grid_tile(pix, 0, K + 2, 8, 8), x[I, 0]):
        sys.exit(f"{png}: expected the first image to be test row {I}, found other pixels")
    if not np.array_equal(grid_tile(pix, K + 1, K + 2, 8, 8), x[J, 0]):
        sys.exit(f"{png}: expected the last image to be test row {J}, found other pixels")
    for k in range(K):
        want = np.rint(np.clip(o["/images"][k, 0], 0, 1) * 255)
        e = np.abs(grid_tile(pix, k + 1, K + 2, 8, 8) - want).max()
        if e > 1:
            sys.exit(f"{png}: expected image {k + 1} to show /images[{k}], found pixels off by {e}")
print(f"interpolate: ends = reconstructions of rows {I}, {J}; spherical ends exact, middle differs by {mid:.3f}; "
      f"strips {K + 2} images wide")
EOF

# ---------------------------------------------------------------- traverse
run_ok "$M" traverse --ckpt "$CK" --data "$D" --index $I --dims 0,2 --range 0:0 --steps 5 --out TR0.png
expect_png TR0.png $((5 * 8 + 6 * 2)) $((2 * 8 + 3 * 2))
run_ok "$M" traverse --ckpt "$CK" --data "$D" --index $I --dims 1,4 --range -2:1 --steps 4 --out TRo.png
run_ok "$M" traverse --ckpt "$CK" --dims 1,4,5 --range -3:3 --steps 7 --out TR3.png
expect_png TR3.png $((7 * 8 + 8 * 2)) $((3 * 8 + 4 * 2))
run_ok "$M" traverse --ckpt "$CK" --data "$D" --dims auto --top 6 --out TAall.png
cp "$WORK/last.out" auto6.txt
expect_png TAall.png $((9 * 8 + 10 * 2)) $((6 * 8 + 7 * 2))
run_ok "$M" traverse --ckpt "$CK" --data "$D" --dims auto --top 3 --steps 5 --out TA3.png
cp "$WORK/last.out" auto3.txt
expect_png TA3.png $((5 * 8 + 6 * 2)) $((3 * 8 + 4 * 2))
run_ok "$M" encode --ckpt "$CK" --data "$D" --out E.h5
py_check "traverse outputs" $I "$PYT" "$CK" <<'EOF'
import sys, re
sys.dont_write_bytecode = True
sys.path.insert(0, sys.argv[2])
import h5py, numpy as np, torch
from vae_model import load_checkpoint
I = int(sys.argv[1])
model = load_checkpoint(sys.argv[3]).double()
def decode(z):
    with torch.no_grad():
        return torch.sigmoid(model.decode(torch.from_numpy(np.asarray(z, np.float64)))).numpy()
with h5py.File("TR0.h5", "r") as f:
    img, vals, dims, base = f["/images"][()], f["/values"][()], f["/dims"][()], f["/base"][()]
with h5py.File("RI.h5", "r") as f:
    rec = f["/images"][1]
with h5py.File("E.h5", "r") as f:
    mu, lv = f["/mu"][()].astype(np.float64), f["/logvar"][()].astype(np.float64)
if img.shape != (10, 1, 8, 8) or vals.shape != (5,) or list(dims) != [0, 2] or base.shape != (6,):
    sys.exit(f"TR0.h5: expected /images (10,1,8,8), /values (5,), /dims [0, 2], /base (6,), found "
             f"{img.shape}, {vals.shape}, {list(dims)}, {base.shape}")
if np.any(vals != 0):
    sys.exit(f"TR0.h5: expected /values all 0 for --range 0:0, found {vals}")
e = np.abs(img - rec[None]).max()
if e > 1e-6:
    sys.exit(f"TR0.h5: expected every image (--range 0:0) to equal the reconstruction of row {I}, found max |diff| {e}")
e = np.abs(base - mu[I]).max()
if e > 1e-5:
    sys.exit(f"TR0.h5: expected /base = mu of row {I} (encode), found max |diff| {e}")
with h5py.File("TR3.h5", "r") as f:
    img3, vals3, dims3, base3 = f["/images"][()], f["/values"][()], f["/dims"][()], f["/base"][()]
if img3.shape != (21, 1, 8, 8) or list(dims3) != [1, 4, 5] or np.any(base3 != 0):
    sys.exit(f"TR3.h5: expected /images (21,1,8,8), /dims [1,4,5], /base 0, found {img3.shape}, {list(dims3)}, {base3}")
if np.abs(vals3 - np.linspace(-3, 3, 7)).max() > 1e-6:
    sys.exit(f"TR3.h5: expected /values = linspace(-3, 3, 7), found {vals3}")
# The values are offsets from the base: image (r, k) = decode(base + values[k] * e_dims[r]).
for name, want_dims, want_base in (("TR3.h5", [1, 4, 5], np.zeros(6)), ("TRo.h5", [1, 4], mu[I])):
    with h5py.File(name, "r") as f:
        im, v, dd, b = f["/images"][()], f["/values"][()].astype(np.float64), f["/dims"][()], f["/base"][()]
    if [int(x) for x in dd] != want_dims or np.abs(b - want_base).max() > 1e-5:
        sys.exit(f"{name}: expected /dims {want_dims} and /base {want_base}, found {list(dd)} and {b}")
    z = np.repeat(b.astype(np.float64)[None], len(want_dims) * len(v), 0)
    for r, d in enumerate(want_dims):
        z[r * len(v):(r + 1) * len(v), d] += v
    e = np.abs(im.reshape(len(z), -1) - decode(z)).max()
    if e > 1e-5:
        sys.exit(f"{name}: expected image (r, k) = sigmoid(decode(base + values[k] e_dims[r])) (PyTorch), found max |diff| {e}")
# --dims auto: the printout against the KL of encode's mu/logvar.
kl = (-0.5 * (1 + lv - mu ** 2 - np.exp(lv))).mean(0)
def parse(p):
    got = [(int(d), float(v)) for d, v in re.findall(r"dimension (\d+): ([-+0-9.eE]+)", open(p).read())]
    if not got:
        sys.exit(f"{p}: expected lines 'dimension D: KL', found: {open(p).read()[:400]}")
    return got
for p, top, h5 in (("auto6.txt", 6, "TAall.h5"), ("auto3.txt", 3, "TA3.h5")):
    got = parse(p)
    if len(got) != top:
        sys.exit(f"{p}: expected {top} dimensions printed, found {len(got)}: {got}")
    ks = [v for _, v in got]
    if any(ks[i] < ks[i + 1] for i in range(len(ks) - 1)):
        sys.exit(f"{p}: expected the dimensions in decreasing KL order, found {got}")
    for d, v in got:
        if abs(v - kl[d]) > 1e-3:
            sys.exit(f"{p}: dimension {d}: expected KL {kl[d]:.4f} (from encode's mu/logvar), found {v}")
    rest = [kl[d] for d in range(6) if d not in [g[0] for g in got]]
    if rest and max(rest) > min(ks) + 1e-3:
        sys.exit(f"{p}: expected the top {top} dimensions by KL, found {got} while others have {rest}")
    with h5py.File(h5, "r") as f:
        hd = [int(v) for v in f["/dims"][()]]
    if hd != [d for d, _ in got]:
        sys.exit(f"{h5}: expected /dims {[d for d, _ in got]} as printed, found {hd}")
print("traverse: range 0:0 = reconstruction; auto order " +
      ", ".join(f"{d}:{v:.3f}" for d, v in parse("auto6.txt")) + " matches encode's KL")
EOF

# ---------------------------------------------------------------- encode
py_check "making a 700-row set" <<'EOF'
import h5py
with h5py.File("s.h5", "r") as f:
    x = f["/train/images"][:700]
with h5py.File("mix.h5", "w") as g:
    g["/test/images"] = x
EOF
py_check "encode outputs" "$PYT" "$CK" $I $J <<'EOF'
import sys
sys.dont_write_bytecode = True
sys.path.insert(0, sys.argv[1])
import h5py, numpy as np, torch
from vae_model import load_checkpoint
I, J = int(sys.argv[3]), int(sys.argv[4])
with h5py.File("E.h5", "r") as f:
    for k in ("/mu", "/logvar"):
        if k not in f or f[k].shape != (256, 6) or f[k].dtype != np.float32:
            sys.exit(f"E.h5: expected {k} float32 (256, 6), found {f[k].dtype if k in f else None} "
                     f"{f[k].shape if k in f else list(f.keys())}")
        if f[k].chunks is None:
            sys.exit(f"E.h5: expected {k} chunked, found contiguous")
    mu, lv = f["/mu"][()].astype(np.float64), f["/logvar"][()].astype(np.float64)
with h5py.File("IL.h5", "r") as f:
    z = f["/z"][()]
e = max(np.abs(mu[I] - z[0]).max(), np.abs(mu[J] - z[-1]).max())
if e > 1e-5:
    sys.exit(f"E.h5: expected /mu[{I}] and /mu[{J}] = interpolate's /z[0] and /z[K-1], found max |diff| {e}")
with h5py.File("s.h5", "r") as f:
    x = torch.from_numpy(f["/test/images"][()].astype(np.float64).reshape(256, 64) / 255.0)
model = load_checkpoint(sys.argv[2]).double()
with torch.no_grad():
    m, l = (t.numpy() for t in model.encode(x))
em, el = np.abs(mu - m).max(), np.abs(lv - l).max()
if em > 1e-4 or el > 1e-4:
    sys.exit(f"E.h5: expected /mu and /logvar = PyTorch's encoder row by row, found max |diff| {em:.3g} and {el:.3g}")
print(f"encode: /mu, /logvar (256, 6) chunked, = PyTorch row by row ({em:.1g}, {el:.1g}), = interpolate's ends ({e:.1g})")
EOF
for np_ in 1 2 3; do
    run_ok "$MPIEXEC" -n $np_ "$M" encode --ckpt "$CK" --data mix.h5:/test/images --out "Em$np_.h5"
done
for np_ in 1 2; do
    run_ok "$MPIEXEC" -n $np_ "$M" encode --ckpt "$CK" --data "$D" --out "Et$np_.h5"
done
for f in Em2 Em3; do
    rc=0; h5diff Em1.h5 $f.h5 >h5diff.out 2>&1 || rc=$?
    [ $rc -eq 0 ] || fail "encode of 700 rows: expected identical files under mpirun -n 1 and ${f#Em} (h5diff exit 0), found exit $rc: $(head -c 400 h5diff.out)"
done
rc=0; h5diff Et1.h5 Et2.h5 >h5diff.out 2>&1 || rc=$?
[ $rc -eq 0 ] || fail "encode of 256 rows: expected identical files under mpirun -n 1 and 2 (h5diff exit 0), found exit $rc: $(head -c 400 h5diff.out)"
py_check "encode shapes under mpirun" <<'EOF'
import sys, h5py
with h5py.File("Em2.h5", "r") as f:
    if f["/mu"].shape != (700, 6) or f["/logvar"].shape != (700, 6):
        sys.exit(f"Em2.h5: expected /mu and /logvar (700, 6), found {f['/mu'].shape}, {f['/logvar'].shape}")
EOF
note "encode: mpirun -n 1, 2, 3 identical on 700 rows; -n 1, 2 identical on 256 rows"

# ---------------------------------------------------------------- anomaly
run_ok "$M" anomaly --ckpt "$CK" --data "$D" --top 10 --out A.h5
expect_png A-hist.png 400 200
py_check "the histogram's axes" "$LIB_DIR" <<'EOF'
import sys
sys.path.insert(0, sys.argv[1])
import numpy as np
from png_read import read_png
p = read_png("A-hist.png")[:, :, 0]
h, w = p.shape
black = p == 0
cols = [c for c in range(100) if black[:, c].mean() >= 0.7]   # the y axis: a black column
rows = [r for r in range(h - 30, h) if black[r, :].mean() >= 0.7]  # the x axis: a black row
if not cols or not rows:
    sys.exit(f"A-hist.png: expected a black axis column in the left 100 and a black axis row in the bottom 30 pixels, found columns {cols}, rows {rows}")
c, r = cols[0], rows[0]
if not black[:, :c].any() or not black[r + 4:, :].any():
    sys.exit(f"A-hist.png: expected labels left of the y axis (column {c}) and below the x axis (row {r}), found none")
bars = p == 64
if not bars[:r, c + 1:].any() or bars[:, :c].any() or bars[r:, :].any():
    sys.exit(f"A-hist.png: expected the bars inside the axes (right of column {c}, above row {r})")
print(f"A-hist.png: axes at column {c} and row {r}, labels outside them, bars inside")
EOF
expect_png A-top.png $((8 * 8 + 9 * 2)) $((2 * 8 + 3 * 2))
py_check "anomaly outputs" "$PYT" "$CK" "$CLI" <<'EOF'
import sys
sys.dont_write_bytecode = True
sys.path.insert(0, sys.argv[1])
sys.path.insert(0, sys.argv[3])
import h5py, numpy as np, torch
from vae_model import load_checkpoint, per_sample_terms
from png_read import read_png, grid_tile
with h5py.File("A.h5", "r") as f:
    for k in ("/score", "/recon", "/kl"):
        if k not in f or f[k].shape != (256,):
            sys.exit(f"A.h5: expected {k} of shape (256,), found {f[k].shape if k in f else list(f.keys())}")
    s, r, k = (f[n][()].astype(np.float64) for n in ("/score", "/recon", "/kl"))
model = load_checkpoint(sys.argv[2]).double()
beta = model.beta
e = np.abs(s - (r + beta * k)).max() / np.abs(s).max()
if e > 1e-6:
    sys.exit(f"A.h5: expected /score = /recon + beta ({beta}) * /kl, found max relative |diff| {e}")
with h5py.File("s.h5", "r") as f:
    x = f["/test/images"][()]
rows = [0, 1, 100, 255]
with torch.no_grad():
    rt, kt, _, _, _ = per_sample_terms(model, torch.from_numpy(x[rows].astype(np.float64).reshape(4, 64) / 255.0), use_mean=True)
er = np.abs(r[rows] - rt.numpy()) / np.abs(rt.numpy())
ek = np.abs(k[rows] - kt.numpy()) / np.maximum(np.abs(kt.numpy()), 1e-3)
if er.max() > 1e-3 or ek.max() > 1e-3:
    sys.exit(f"A.h5 rows {rows}: expected /recon and /kl = PyTorch's with z = mu, found recon {r[rows]} vs "
             f"{rt.numpy()}, kl {k[rows]} vs {kt.numpy()}")
# The top PNG: the 10 highest scores, highest first (pixel-exact inputs).
order = np.argsort(-s, kind="stable")
pix = read_png("A-top.png")[:, :, 0].astype(int)
for q in range(10):
    tile = grid_tile(pix, q, 8, 8, 8)
    cands = [i for i in range(256) if s[i] == s[order[q]]]
    if not any(np.array_equal(tile, x[i, 0]) for i in cands):
        sys.exit(f"A-top.png: expected image {q} to be row {order[q]} (score {s[order[q]]:.4f}), found other pixels")
print(f"anomaly: score = recon + {beta} * kl, recon/kl = PyTorch (max rel {er.max():.1g}/{ek.max():.1g}); "
      f"top PNG = rows {list(order[:10])}")
EOF
for np_ in 1 2 3; do
    run_ok "$MPIEXEC" -n $np_ "$M" anomaly --ckpt "$CK" --data mix.h5:/test/images --out "Am$np_.h5"
    expect_png "Am$np_-hist.png" 400 200
    expect_png "Am$np_-top.png" $((8 * 8 + 9 * 2)) $((4 * 8 + 5 * 2))
done
for f in Am2 Am3; do
    rc=0; h5diff Am1.h5 $f.h5 >h5diff.out 2>&1 || rc=$?
    [ $rc -eq 0 ] || fail "anomaly of 700 rows: expected identical files under mpirun -n 1 and ${f#Am} (h5diff exit 0), found exit $rc: $(head -c 400 h5diff.out)"
    cmp -s Am1-top.png $f-top.png || fail "anomaly of 700 rows: expected identical top PNGs under mpirun -n 1 and ${f#Am}, found they differ"
done
note "anomaly: mpirun -n 1, 2, 3 give identical scores and top PNGs on 700 rows"

# With labels: a model of classes 0-2 only; class 3 (a thin vertical bar) is the anomaly.
py_check "making the normal-classes training file" <<'EOF'
import h5py, numpy as np
with h5py.File("s.h5", "r") as f:
    xi, yi = f["/train/images"][()], f["/train/labels"][()]
    xt, yt = f["/test/images"][()], f["/test/labels"][()]
keep = yi <= 2
with h5py.File("normal.h5", "w") as g:
    g["/train/images"], g["/train/labels"] = xi[keep], yi[keep]
    g["/test/images"], g["/test/labels"] = xt, yt
EOF
run_ok "$M" train --data normal.h5 --hidden 64 --latent 6 --batch 64 --lr 3e-3 --epochs 20 --beta 0.5 --log-every 1000 --out nrun
NCK=nrun/checkpoints/step-240.h5
expect_file "$NCK"
run_ok "$MPIEXEC" -n 2 "$M" anomaly --ckpt "$NCK" --data normal.h5:/test/images --normal-classes 0,1,2 --out N.h5
cp "$WORK/last.out" n_auc.txt
run_ok "$M" anomaly --ckpt "$NCK" --data normal.h5:/test/images --labels normal.h5:/test/labels --normal-classes 0,1,2 --out NL.h5
cp "$WORK/last.out" nl_auc.txt
# AUCs strictly between 0 and 1: the model of all 4 classes, classes 2 and 3 as the anomalies.
run_ok "$M" anomaly --ckpt "$CK" --data "$D" --normal-classes 0,1 --out NM.h5
cp "$WORK/last.out" nm_auc.txt
expect_png N-hist.png 400 200
expect_png N-top.png $((8 * 8 + 9 * 2)) $((4 * 8 + 5 * 2))
py_check "anomaly ROC AUCs" "$PYT" "$NCK" "$CK" <<'EOF'
import sys, re
sys.dont_write_bytecode = True
sys.path.insert(0, sys.argv[1])
import h5py, numpy as np
from vae_model import read_config
def labels(p):
    with h5py.File(p, "r") as f:
        return f["/test/labels"][()]
names = ("/score", "/recon", "/kl")
def mann_whitney(v, anomalous):
    pos, neg = v[anomalous], v[~anomalous]
    return ((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()) / (len(pos) * len(neg))
got = {}
for p, txt, ck, y, normal in (("N.h5", "n_auc.txt", sys.argv[2], labels("normal.h5"), [0, 1, 2]),
                              ("NL.h5", "nl_auc.txt", sys.argv[2], labels("normal.h5"), [0, 1, 2]),
                              ("NM.h5", "nm_auc.txt", sys.argv[3], labels("s.h5"), [0, 1])):
    beta = read_config(ck)["beta"]
    anomalous = ~np.isin(y, normal)
    out = open(txt).read()
    m = re.search(r"^roc_auc=(\S+) \(score\) recon_auc=(\S+) kl_auc=(\S+) ", out, re.M)
    if not m:
        sys.exit(f"{txt}: expected a line 'roc_auc=A (score) recon_auc=R kl_auc=K ...', found: {out[:400]}")
    printed = [float(v) for v in m.groups()]
    with h5py.File(p, "r") as f:
        for n in names:
            if "roc_auc" not in f[n].attrs:
                sys.exit(f"{p}: expected the attribute 'roc_auc' on {n}, found {list(f[n].attrs)}")
        v = {n: f[n][()].astype(np.float64) for n in names}
        stored = [float(f[n].attrs["roc_auc"]) for n in names]
    e = np.abs(v["/score"] - (v["/recon"] + beta * v["/kl"])).max() / np.abs(v["/score"]).max()
    if e > 1e-6:
        sys.exit(f"{p}: expected /score = /recon + {beta} * /kl, found max relative |diff| {e}")
    for n, pr, st in zip(names, printed, stored):
        if abs(pr - st) > 1e-6:
            sys.exit(f"{p}: expected {n}'s stored roc_auc to equal the printed {pr}, found {st}")
        mw = mann_whitney(v[n], anomalous)
        if abs(mw - st) > 1e-9:
            sys.exit(f"{p}: expected {n}'s roc_auc = the Mann-Whitney AUC of {n} ({mw:.9f}), found {st:.9f}")
    got[p] = stored
if np.abs(np.subtract(got["N.h5"], got["NL.h5"])).max() > 1e-6:
    sys.exit(f"expected the same AUCs with --labels given ({got['NL.h5']}) and found beside the images ({got['N.h5']})")
a, r, k = got["N.h5"]
if not a > 0.9:
    sys.exit(f"expected ROC AUC > 0.9 for class 3 as the anomaly, found {a}")
print(f"anomaly: ROC AUC (score, recon, kl) of class 3 {a:.4f}, {r:.4f}, {k:.4f}; of classes 2, 3 "
      + ", ".join(f"{v:.4f}" for v in got["NM.h5"]) + "; printed = stored = Mann-Whitney")
EOF

# ---------------------------------------------------------------- bad arguments
run_ok "$M" data synth --out s12.h5 --n-train 256 --n-test 64 --height 12 --width 12 --classes 4
run_ok "$M" train --data s12.h5 --hidden 16 --latent 2 --batch 32 --steps 2 --out run12
CK12=run12/checkpoints/step-2.h5
expect_file "$CK12"

expect_fail_with nonzero "--from 256" "256 rows" -- "$M" interpolate --ckpt "$CK" --data "$D" --from 256 --to 0 --out bad1.png
expect_absent bad1.png; expect_absent bad1.h5
expect_fail_with nonzero "--to 1000" "256 rows" -- "$M" interpolate --ckpt "$CK" --data "$D" --from 0 --to 1000 --out bad2.png
expect_absent bad2.png
expect_fail_with nonzero "--index 256" "256 rows" -- "$M" traverse --ckpt "$CK" --data "$D" --index 256 --dims 0 --out bad3.png
expect_absent bad3.png
expect_fail_with 2 "--dims 99" "6 latent dimensions" -- "$M" traverse --ckpt "$CK" --dims 99 --out bad4.png
expect_absent bad4.png
expect_fail_with 2 "--dims 6" "6 latent dimensions" -- "$M" traverse --ckpt "$CK" --data "$D" --index 0 --dims 0,6 --out bad5.png
expect_absent bad5.png
for sub in interpolate anomaly encode traverse; do
    case $sub in
        interpolate) extra=(--from 0 --to 1 --out bad-$sub.png) ;;
        anomaly | encode) extra=(--out bad-$sub.h5) ;;
        traverse) extra=(--index 0 --dims 0 --out bad-$sub.png) ;;
    esac
    expect_fail_with nonzero "1x8x8" "1x12x12" "$CK12" -- "$M" $sub --ckpt "$CK12" --data "$D" "${extra[@]}"
    expect_absent bad-$sub.png; expect_absent bad-$sub.h5
done
expect_fail_with nonzero "1x8x8" "1x12x12" -- "$MPIEXEC" -n 2 "$M" anomaly --ckpt "$CK12" --data "$D" --out bad-mpi.h5
expect_absent bad-mpi.h5
expect_fail_with nonzero "1x8x8" "1x12x12" -- "$MPIEXEC" -n 2 "$M" encode --ckpt "$CK12" --data "$D" --out bad-mpi2.h5
expect_absent bad-mpi2.h5
expect_fail_with nonzero "/train/labels" "256" "1024" -- "$M" anomaly --ckpt "$CK" --data "$D" \
    --labels s.h5:/train/labels --normal-classes 0,1,2 --out bad6.h5
expect_absent bad6.h5; expect_absent bad6-hist.png; expect_absent bad6-top.png
expect_fail_with 2 "--labels" "--normal-classes" -- "$M" anomaly --ckpt "$CK" --data "$D" --labels s.h5:/test/labels --out bad7.h5
expect_absent bad7.h5
for sub in sample interpolate traverse anomaly encode; do
    case $sub in
        sample) extra=(--n 4 --out nock.png) ;;
        interpolate) extra=(--data "$D" --from 0 --to 1 --out nock.png) ;;
        traverse) extra=(--dims 0 --out nock.png) ;;
        anomaly | encode) extra=(--data "$D" --out nock.h5) ;;
    esac
    expect_fail_with 2 "--ckpt" -- "$M" $sub "${extra[@]}"
    expect_absent nock.png; expect_absent nock.h5
done

# ---------------------------------------------------------------- --capacity
# 1024 rows / 64 = 16 steps per epoch; 20 epochs = 320 steps, C reaches 5 nats at step 300.
CAP=(--data s.h5 --hidden 64 --latent 6 --batch 64 --lr 3e-3 --epochs 20 --beta 30 --log-every 1000)
run_ok "$M" train "${CAP[@]}" --capacity 5:300 --out cap
run_ok "$M" eval --mean --ckpt cap/checkpoints/step-320.h5
KL_CAP=$(sed -n 's/^eval: .*\bkl=\([-+0-9.eE]*\).*/\1/p' "$WORK/last.out")
run_ok "$M" train "${CAP[@]}" --out nocap
run_ok "$M" eval --mean --ckpt nocap/checkpoints/step-320.h5
KL_NOCAP=$(sed -n 's/^eval: .*\bkl=\([-+0-9.eE]*\).*/\1/p' "$WORK/last.out")
expect_lt "held-out KL with --beta 30 --capacity 5:300 (lower bound)" 3.5 "$KL_CAP"
expect_lt "held-out KL with --beta 30 --capacity 5:300 (upper bound)" "$KL_CAP" 6.5
expect_lt "held-out KL with --beta 30 and no --capacity" "$KL_NOCAP" 1
note "--capacity: held-out KL $KL_CAP nats with --capacity 5:300, $KL_NOCAP nats without (beta 30)"

cli_done
