#!/bin/bash
# cli_binarize.sh MPIVAE SOURCE_DIR [MPIEXEC]: `train --binarize dynamic`, the
# fixed binarization of the held-out rows, and eval's active units. (The draw
# itself, its key and its statistics are checked in process by
# tests/test_binarize.c.)
#  - training with --binarize dynamic (40 steps of 18 a epoch: three epochs,
#    so three draws of each row) at 1 and 2 ranks: the same parameters within
#    1e-4 of each tensor's largest magnitude (as mpi_rank_independence), and
#    different parameters from the same run without --binarize;
#  - stopped at step 25 (the test hook, as SIGUSR1) and resumed with
#    --resume auto, at 1 and at 2 ranks: bit-identical /params and /optimizer
#    to the uninterrupted run;
#  - `eval` of the binarized checkpoint says 'data: binarized (fixed, seed
#    0x6d70697661650001)', and its loss is the in-training evaluation's (the
#    same fixed binary test set), the same at 1 and 2 ranks (the --iw line
#    bit for bit); `--binarize none` says so and changes the loss; a gray-value
#    model evaluates on the stored values by default and `--binarize fixed`
#    changes its loss;
#  - `reconstruct` of two binarized runs of different seeds shows the same
#    originals, every one 0 or 1, 1 where the stored value is 255 and 0 where
#    it is 0; that of a gray model shows the stored values / 255;
#  - float data outside [0, 1] is refused by train --binarize dynamic and by
#    eval --binarize fixed, naming file and dataset;
#  - active units: an mlp trained 100 steps (latent 20) has between 1 and 20,
#    the same count at 1 and 2 ranks; an hvae prints one count per latent
#    group ('z1 a/128, z2 b/128, z3 c/512, z4 d/512'), the same at 2 ranks.
source "$(dirname "$0")/../mpi/mpilib.sh"
[ $# -ge 3 ] || set -- "$1" "${2:-.}" mpirun
mpi_init "$@"
need_python_modules h5py numpy

run_ok "$M" data synth --out s.h5 --n-train 512 --n-test 128 --height 8 --width 8 --classes 4
CFG=(train --data s.h5 --hidden 32 --latent 4 --batch 30 --steps 40 --seed 7 --log-every 10 --eval-every 20)
END=40
for P in 1 2; do
    mpi_cmd "$P"
    run_ok "${MPI[@]}" "$M" "${CFG[@]}" --binarize dynamic --out "b$P"
    grep -q '^data: .*binarized (dynamic' last.out || fail "P=$P: expected the banner's data line to say 'binarized (dynamic', found: $(grep '^data' last.out)"
    grep -q '^held-out data: .*binarized (fixed, seed 0x6d70697661650001)' last.out ||
        fail "P=$P: expected the held-out line to name the fixed binarization, found: $(grep '^held-out' last.out)"
    grep "^eval step $END:" last.out >"train_eval$P" || fail "P=$P: expected an 'eval step $END:' line, found none"
    # Stopped in the second epoch by the test hook, then resumed: the same bits.
    run_status env MPIVAE_TEST_STOP_AT_STEP=25 "${MPI[@]}" "$M" "${CFG[@]}" --binarize dynamic --out "s$P"
    expect_eq "P=$P: exit status of a run stopped at step 25" 75 "$RC"
    expect_file "s$P/checkpoints/step-25.h5"
    run_ok "${MPI[@]}" "$M" "${CFG[@]}" --binarize dynamic --resume auto --out "s$P"
    expect_identical "P=$P stopped at 25 and resumed, against uninterrupted" "b$P/checkpoints/step-$END.h5" "s$P/checkpoints/step-$END.h5"
done
h5cmp params "b1/checkpoints/step-$END.h5" "b2/checkpoints/step-$END.h5" 1e-4
run_ok "$M" "${CFG[@]}" --out g1
rc=0
h5diff -q g1/checkpoints/step-$END.h5 b1/checkpoints/step-$END.h5 /params >/dev/null 2>&1 || rc=$?
expect_eq "h5diff status of /params trained with and without --binarize dynamic (1: they differ)" 1 "$rc"

# --- eval: the fixed binary test set by default, the same on 1 and 2 ranks.
run_ok "$M" eval --ckpt b1 --seed 7 --iw 8
grep -qx 'data: binarized (fixed, seed 0x6d70697661650001), the checkpoint'"'"'s default' last.out ||
    fail "eval of a binarized checkpoint: expected 'data: binarized (fixed, seed 0x6d70697661650001), ...', found: $(grep '^data' last.out)"
lb1=$(loss_of last.out) iw1=$(grep '^iw:' last.out)
tl=$(sed -n 's/^eval step [0-9]*: test loss \([-0-9.]*\) .*/\1/p' train_eval1)
expect_eq "eval's loss (4 decimals) against the in-training evaluation's at step $END" "$tl" "$(printf '%.4f' "$lb1")"
mpi_cmd 2
run_ok "${MPI[@]}" "$M" eval --ckpt b1 --seed 7 --iw 8
lb2=$(loss_of last.out) iw2=$(grep '^iw:' last.out)
py_check "eval loss at 1 and 2 ranks" "$lb1" "$lb2" <<'PY'
import sys
a, b = float(sys.argv[1]), float(sys.argv[2])
if abs(a - b) > 1e-6 * abs(a):
    sys.exit(f"expected the same loss at 1 and 2 ranks (within 1e-6 relative), found {a} and {b}")
PY
expect_eq "the --iw 8 line at 2 ranks against 1 rank" "$iw1" "$iw2"
run_ok "$M" eval --ckpt b1 --seed 7 --binarize none
grep -qx 'data: not binarized (values as stored)' last.out ||
    fail "--binarize none: expected 'data: not binarized (values as stored)', found: $(grep '^data' last.out)"
ln=$(loss_of last.out)
[ "$(printf '%.3f' "$ln")" != "$(printf '%.3f' "$lb1")" ] || fail "--binarize none: expected another loss than the fixed binarization's $lb1, found $ln"
run_ok "$M" eval --ckpt g1 --seed 7
grep -q '^data: not binarized' last.out || fail "gray model: expected 'data: not binarized ...' by default, found: $(grep '^data' last.out)"
lg=$(loss_of last.out)
run_ok "$M" eval --ckpt g1 --seed 7 --binarize fixed
grep -qx 'data: binarized (fixed, seed 0x6d70697661650001)' last.out ||
    fail "gray model --binarize fixed: expected 'data: binarized (fixed, seed 0x6d70697661650001)', found: $(grep '^data' last.out)"
lgf=$(loss_of last.out)
[ "$(printf '%.3f' "$lg")" != "$(printf '%.3f' "$lgf")" ] || fail "gray model: expected --binarize fixed to change the loss $lg, found $lgf"

# --- reconstruct: the same fixed binary originals for every binarized run.
run_ok "$M" train --data s.h5 --hidden 32 --latent 4 --batch 30 --steps 5 --seed 9 --binarize dynamic --out b9
for r in b1 b9 g1; do run_ok "$M" reconstruct --ckpt "$r" --out "rec-$r.png" --n 16 --cols 8; done
py_check "reconstruct originals" <<'PY'
import h5py, numpy as np, sys
x = h5py.File("s.h5", "r")["/test/images"][:16].reshape(16, -1).astype(np.float64)
def originals(run):
    im = h5py.File(f"rec-{run}.h5", "r")["/images"][()].reshape(4, 8, -1)  # groups of 8: originals, reconstructions
    return im[[0, 2]].reshape(16, -1).astype(np.float64)
a, b, g = originals("b1"), originals("b9"), originals("g1")
if not np.array_equal(a, b):
    sys.exit(f"expected two binarized runs to show the same originals, found {int((a != b).sum())} pixels differ")
if not np.all((a == 0) | (a == 1)):
    sys.exit(f"expected binarized originals in {{0, 1}}, found values {np.unique(a)[:10]}")
if not (np.all(a[x == 255] == 1) and np.all(a[x == 0] == 0)):
    sys.exit("expected 1 where the stored value is 255 and 0 where it is 0")
gray = (x > 0) & (x < 255)
frac = a[gray].mean()
if gray.sum() < 50 or abs(frac - (x[gray] / 255).mean()) > 0.1:
    sys.exit(f"expected the ones among {gray.sum()} gray pixels near their mean intensity {(x[gray] / 255).mean():.3f}, found {frac:.3f}")
if np.abs(g - x / 255).max() > 1e-6:
    sys.exit(f"expected a gray model's originals to be the stored values / 255, found a difference of {np.abs(g - x / 255).max()}")
print(f"binary originals: {gray.sum()} gray pixels, {frac:.3f} ones against mean intensity {(x[gray] / 255).mean():.3f}")
PY

# --- float data outside [0, 1]: refused, naming file and dataset.
"$PY" - <<'PY' || fail "cannot write f.h5"
import h5py, numpy as np
with h5py.File("f.h5", "w") as f:
    f["/train/images"] = np.linspace(-0.5, 2.0, 64 * 64, dtype=np.float32).reshape(64, 64)
    f["/test/images"] = np.linspace(-0.5, 2.0, 16 * 64, dtype=np.float32).reshape(16, 64)
PY
expect_fail_with 1 "'f.h5:/train/images' has values in [-0.5, 2]" "--binarize needs data in [0, 1]" -- \
    "$M" train --data f.h5 --loss mse --hidden 16 --latent 2 --batch 8 --steps 2 --binarize dynamic --out fb
run_ok "$M" train --data f.h5 --loss mse --hidden 16 --latent 2 --batch 8 --steps 2 --out fm
expect_fail_with 1 "f.h5:/test/images' has values in [-0.5, 2]" "--binarize needs data in [0, 1]" -- \
    "$M" eval --ckpt fm --binarize fixed

# --- active units: per latent group, the same at 1 and 2 ranks.
run_ok "$M" train --data s.h5 --hidden 64 --latent 20 --batch 32 --steps 100 --log-every 100 --out a20
run_ok "$M" eval --ckpt a20
au1=$(grep '^active units:' last.out) || fail "expected an 'active units:' line, found: $(cat last.out)"
n=$(sed -n 's/^active units: z \([0-9]*\)\/20 .*/\1/p' last.out)
[ -n "$n" ] && [ "$n" -ge 1 ] && [ "$n" -le 20 ] || fail "expected 'active units: z N/20' with 1 <= N <= 20, found '$au1'"
run_ok "${MPI[@]}" "$M" eval --ckpt a20
expect_eq "the active units at 2 ranks" "$au1" "$(grep '^active units:' last.out)"
run_ok "$M" data synth --out s16.h5 --n-train 128 --n-test 64 --height 16 --width 16 --classes 4
run_ok "$M" train --model hvae --data s16.h5 --batch 32 --steps 4 --log-every 4 --out h
run_ok "$M" eval --ckpt h --limit 32
auh=$(grep '^active units:' last.out) || fail "hvae: expected an 'active units:' line, found: $(cat last.out)"
[[ "$auh" =~ ^active\ units:\ z1\ [0-9]+/128,\ z2\ [0-9]+/128,\ z3\ [0-9]+/512,\ z4\ [0-9]+/512\ \( ]] ||
    fail "hvae: expected 'active units: z1 a/128, z2 b/128, z3 c/512, z4 d/512 (...', found '$auh'"
run_ok "${MPI[@]}" "$M" eval --ckpt h --limit 32
expect_eq "hvae: the active units at 2 ranks" "$auh" "$(grep '^active units:' last.out)"
note "active units: mlp '$au1'; hvae '$auh'"
cli_done
