#!/bin/bash
# cli_old_checkpoint.sh MPIVAE SOURCE_DIR: checkpoints written by mpivae 0.1.0
# (commit 4613a40, before model families and parameter groups) still load.
#
# tests/fixtures/ckpt-0.1.0-{mlp,conv}.h5 were written at step 12 of 30 of
#   mpivae train --data s.h5 --test-data s.h5:/test/images --batch 30 --epochs 3 --seed 5 --latent 3 --steps 12
#   (mlp: --hidden 16 --warmup 10; conv: --model conv --hidden 4,8 --loss mse)
# on `mpivae data synth --out s.h5 --n-train 300 --n-test 100 --height 8 --width 8 --classes 4`.
# For each: eval prints the held-out loss (finite, with both terms); the
# checkpoint resumes (--steps 0: to the end of the 3 epochs) and ends at
# step 30 with finite parameters; and the resumed run ends where an
# uninterrupted 30-step run of this build ends: /params within 1e-4 of each
# tensor's largest magnitude (bit for bit on the machine that wrote the
# fixtures; the tolerance covers another machine's BLAS kernels), and the
# same within 1e-4 for /optimizer/m.
source "$(dirname "$0")/lib.sh"
cli_init "$@"
need_python_modules h5py numpy
M=$MPIVAE
FIX=$SRC/tests/fixtures
run_ok "$M" data synth --out s.h5 --n-train 300 --n-test 100 --height 8 --width 8 --classes 4
COMMON=(--data s.h5 --test-data s.h5:/test/images --batch 30 --epochs 3 --seed 5 --latent 3)
for fam in mlp conv; do
    if [ $fam = mlp ]; then A=(--hidden 16 --warmup 10); else A=(--model conv --hidden 4,8 --loss mse); fi
    cp "$FIX/ckpt-0.1.0-$fam.h5" "old-$fam.h5"
    run_ok "$M" eval --ckpt "old-$fam.h5" --data s.h5:/test/images
    grep -Eq "^eval: loss=[0-9.]+ recon=[0-9.]+ kl=[0-9.]+ rows=100 " last.out ||
        fail "$fam: expected 'eval: loss=L recon=R kl=K rows=100', found: $(cat last.out)"
    run_ok "$M" train --resume "old-$fam.h5" --steps 0 --out "resumed-$fam"
    grep -q "resumed from old-$fam.h5 at step 12" last.out || fail "$fam: expected 'resumed from old-$fam.h5 at step 12', found: $(grep resumed last.out)"
    expect_file "resumed-$fam/checkpoints/step-30.h5"
    run_ok "$M" train "${COMMON[@]}" "${A[@]}" --out "fresh-$fam"
    expect_file "fresh-$fam/checkpoints/step-30.h5"
    py_check "$fam: the resumed 0.1.0 checkpoint against an uninterrupted run" "resumed-$fam/checkpoints/step-30.h5" \
        "fresh-$fam/checkpoints/step-30.h5" <<'PY'
import sys, h5py, numpy as np
a, b = h5py.File(sys.argv[1], "r"), h5py.File(sys.argv[2], "r")
worst = 0.0
for grp in ("params", "optimizer/m"):
    if sorted(a[grp]) != sorted(b[grp]):
        sys.exit(f"/{grp}: names differ: {sorted(a[grp])} vs {sorted(b[grp])}")
    for k in a[grp]:
        x, y = a[grp][k][()].astype(np.float64), b[grp][k][()].astype(np.float64)
        if not np.all(np.isfinite(x)):
            sys.exit(f"/{grp}/{k}: non-finite values after the resume")
        scale = max(np.abs(y).max(), 1e-30)
        d = np.abs(x - y).max() / scale
        worst = max(worst, d)
        if d > 1e-4:
            sys.exit(f"/{grp}/{k}: differs by {d:.3g} of its largest magnitude (limit 1e-4)")
if int(a.attrs["step"]) != 30 or int(a["optimizer"].attrs["t.all"]) != 30:
    sys.exit(f"expected step 30 and t.all 30, found {int(a.attrs['step'])}, {a['optimizer'].attrs.get('t.all')}")
print(f"largest difference {worst:.3g} of a tensor's largest magnitude")
PY
done
cli_done
