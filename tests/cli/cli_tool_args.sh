#!/bin/bash
# cli_tool_args.sh MPIVAE SOURCE_DIR [MPIEXEC]: the arguments of the tools on a
# checkpoint that are refused before any work (issue 15, points 13 and 14), on a
# 2-step model of an 8x8 synthetic set of 4 classes (test labels 0..3, 64 each).
# Every refusal: the exit status given, exactly one 'error:' line naming the flag
# and the values, and no output file left behind.
#
# --out: sample, reconstruct, interpolate, traverse write OUT.png and OUT.h5, so
#   --out x.jpg, x.h5, .png and '' are usage errors (2) saying so, and x.jpg,
#   x.h5, x.jpg.h5, .h5, .png.h5 stay absent; anomaly and encode write HDF5, so
#   --out x.txt, x.png and '' are usage errors, and no x.txt, x.txt-hist.png,
#   x-hist.png... appears.
# --normal-classes of anomaly: parsed with the options, before the checkpoint is
#   read (so a missing --ckpt is not reached): x, -1, 1024, '', 0,,1, 1, ,1
#   and ' 1' are usage errors naming the flag; 1023 passes the parser and is
#   then refused because the labels do not hold it. Classes that do not occur
#   in the labels (0,11; 10,11,0; 3 of a set holding 0,2,5,6,7), also under
#   mpirun -n 2, are usage errors naming the flag, the missing classes, the
#   labels as FILE:/dataset and the classes they hold (0..3; 0,2,5..7).
#   --normal-classes 0,1,2,3 (every row normal) is a usage error saying the
#   ROC AUC needs both normal rows and anomalies. A valid split (0,1) succeeds.
source "$(dirname "$0")/lib.sh"
cli_init "$@"
MPIEXEC=${3:-mpirun}
need_python_modules h5py numpy
command -v "$MPIEXEC" >/dev/null || fail "expected an MPI launcher '$MPIEXEC', found none"

M=$MPIVAE
D=s.h5:/test/images
run_ok "$M" data synth --out s.h5 --n-train 256 --n-test 256 --height 8 --width 8 --classes 4
run_ok "$M" train --data s.h5 --hidden 16 --latent 2 --batch 32 --steps 2 --out run
CK=run/checkpoints/step-2.h5
expect_file "$CK"

# ---------------------------------------------------------------- --out of the image tools
for sub in sample reconstruct interpolate traverse; do
    case $sub in
        sample) extra=(--n 4) ;;
        reconstruct) extra=(--data "$D" --n 4) ;;
        interpolate) extra=(--data "$D" --from 0 --to 1) ;;
        traverse) extra=(--dims 0) ;;
    esac
    for out in x.jpg x.h5; do
        expect_fail_with 2 "--out '$out'" "does not end in .png" "$sub writes a PNG (OUT.png) and OUT.h5 beside it" -- \
            "$M" $sub --ckpt "$CK" "${extra[@]}" --out "$out"
    done
    expect_fail_with 2 "--out '.png'" "no name before .png" -- "$M" $sub --ckpt "$CK" "${extra[@]}" --out .png
    expect_fail_with 2 "--out is empty" "$sub writes a PNG (OUT.png) and OUT.h5 beside it" -- \
        "$M" $sub --ckpt "$CK" "${extra[@]}" --out ''
    for f in x.jpg x.h5 x.jpg.h5 x.png .h5 .png.h5 .png; do expect_absent "$f"; done
done
run_ok "$M" sample --ckpt "$CK" --n 4 --out ok.png
expect_png ok.png $((4 * 8 + 5 * 2)) $((8 + 2 * 2))
expect_file ok.h5

# ---------------------------------------------------------------- --out of anomaly and encode
for sub in anomaly encode; do
    case $sub in
        anomaly) writes="anomaly writes HDF5 (SCORES.h5)" ;;
        encode) writes="encode writes HDF5 (Z.h5)" ;;
    esac
    for out in x.txt x.png; do
        expect_fail_with 2 "--out '$out'" "does not end in .h5" "$writes" -- "$M" $sub --ckpt "$CK" --data "$D" --out "$out"
    done
    expect_fail_with 2 "--out is empty" "$writes" -- "$M" $sub --ckpt "$CK" --data "$D" --out ''
    for f in x.txt x.png x.txt-hist.png x.txt-top.png x-hist.png x-top.png -hist.png -top.png; do expect_absent "$f"; done
done

# ---------------------------------------------------------------- --normal-classes, parsed with the options
for nc in x -1 1024 '' 0,,1 1, ,1 ' 1'; do
    expect_fail_with 2 "--normal-classes" -- "$M" anomaly --ckpt missing.h5 --data "$D" --normal-classes "$nc" --out bad.h5
done
expect_fail_with 2 "--normal-classes 'x' is not an integer" -- "$M" anomaly --ckpt missing.h5 --normal-classes x --out bad.h5
expect_fail_with 2 "--normal-classes -1 is out of range 0..1023" -- "$M" anomaly --ckpt "$CK" --normal-classes -1 --out bad.h5
expect_fail_with 2 "--normal-classes 1024 is out of range 0..1023" -- "$M" anomaly --ckpt "$CK" --normal-classes 1024 --out bad.h5
expect_fail_with 2 "--normal-classes '0,,1'" "empty class" -- "$M" anomaly --ckpt "$CK" --normal-classes 0,,1 --out bad.h5
expect_fail_with 2 "--normal-classes '1,'" "empty class" -- "$M" anomaly --ckpt "$CK" --normal-classes 1, --out bad.h5
expect_fail_with 2 "--normal-classes is empty" -- "$M" anomaly --ckpt "$CK" --normal-classes '' --out bad.h5

# ---------------------------------------------------------------- --normal-classes against the labels
expect_fail_with 2 "--normal-classes 1023" "class 1023 does not occur in 's.h5:/test/labels'" "holds 0..3" -- \
    "$M" anomaly --ckpt "$CK" --data "$D" --normal-classes 1023 --out bad.h5
expect_fail_with 2 "--normal-classes 0,11" "class 11 does not occur in 's.h5:/test/labels'" "holds 0..3" -- \
    "$M" anomaly --ckpt "$CK" --data "$D" --normal-classes 0,11 --out bad.h5
expect_fail_with 2 "--normal-classes 10,11,0" "classes 10,11 do not occur in 's.h5:/test/labels'" "holds 0..3" -- \
    "$MPIEXEC" -n 2 "$M" anomaly --ckpt "$CK" --data "$D" --labels s.h5:/test/labels --normal-classes 10,11,0 --out bad.h5
py_check "making labels of classes 0, 2, 5, 6, 7" <<'EOF'
import h5py, numpy as np
with h5py.File("gaps.h5", "w") as f:
    f["/y"] = np.array([0, 2, 5, 6, 7] * 51 + [7], np.int32)
EOF
expect_fail_with 2 "--normal-classes 3" "class 3 does not occur in 'gaps.h5:/y'" "holds 0,2,5..7" -- \
    "$M" anomaly --ckpt "$CK" --data "$D" --labels gaps.h5:/y --normal-classes 3 --out bad.h5
expect_fail_with 2 "--normal-classes 0,1,2,3 leaves no anomalies" "s.h5:/test/labels" \
    "the ROC AUC needs both normal rows and anomalies" -- \
    "$M" anomaly --ckpt "$CK" --data "$D" --normal-classes 0,1,2,3 --out bad.h5
expect_fail_with 2 "--normal-classes 3,2,1,0 leaves no anomalies" "the ROC AUC needs both normal rows and anomalies" -- \
    "$MPIEXEC" -n 2 "$M" anomaly --ckpt "$CK" --data "$D" --normal-classes 3,2,1,0 --out bad.h5
for f in bad.h5 bad-hist.png bad-top.png; do expect_absent "$f"; done
run_ok "$M" anomaly --ckpt "$CK" --data "$D" --normal-classes 0,1 --out ok.h5
grep -q '^roc_auc=[0-9.]* (score) recon_auc=[0-9.]* kl_auc=[0-9.]* \[128 anomalies (classes not in 0,1), 128 normal rows; labels s.h5:/test/labels\]$' "$WORK/last.out" ||
    fail "anomaly --normal-classes 0,1: expected 'roc_auc=A (score) recon_auc=R kl_auc=K [128 anomalies (classes not in 0,1), 128 normal rows; labels s.h5:/test/labels]', found: $(cat "$WORK/last.out")"
expect_file ok.h5
expect_png ok-hist.png 400 200
note "--out and --normal-classes: every refusal exit 2, one message, no output; 0,1 scores 128 anomalies"

cli_done
