#!/bin/bash
# cli_tool_args.sh MPIVAE SOURCE_DIR [MPIEXEC]: the arguments of the tools on a
# checkpoint that are refused before any work (issue 15), on a 2-step model of
# an 8x8 synthetic set of 4 classes.
# Every refusal: the exit status given, exactly one 'error:' line naming the flag
# and the values, and no output file left behind.
#
# --out: sample, reconstruct, interpolate, traverse write OUT.png and OUT.h5, so
#   --out x.jpg, x.h5, .png and '' are usage errors (2) saying so, and x.jpg,
#   x.h5, x.jpg.h5, .h5, .png.h5 stay absent; anomaly and encode write HDF5, so
#   --out x.txt, x.png and '' are usage errors, and no x.txt, x.txt-hist.png,
#   x-hist.png... appears.
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

note "--out: every refusal exit 2, one message, no output"

cli_done
