#!/bin/bash
# cli_hostile.sh MPIVAE SOURCE_DIR: hostile files and arguments (issue 16).
# Every case ends with one clear message naming the file, dataset, attribute
# or flag and a non-zero status (never a crash, a hang or a huge allocation),
# and leaves no partial output and no input overwritten.
#  data:        rows of 2^32+256 values (D1), a 4-D variant; 2^31 declared rows
#               of which one chunk was written (D8; also `data info`); float16;
#               float64 1e300; a virtual dataset with a missing source; --data :/x;
#               the conv model's hint for 6x6 data (sizes that work, never 0);
#               a signal during the start-up's data scan ends the run with 75;
#  checkpoints: NaN in parameters and in Adam's v (D7); model and loss names,
#               latent 2^32+20 and 1e300, world_size 0, beta -1, lr NaN, beta1 1,
#               epochs -5, input_shape 1x65536x65536 (D10, D11); input_shape
#               1x512x512 refused before any large allocation (D9); compound and
#               string tensors; a conv input_shape of 15x16;
#  outputs:     an output that is, or derives to, an input (D6); an output too
#               large for the file-size limit (a full disk: D4, D12), which ends
#               with status 1, no crash, no partial file, earlier checkpoints intact;
#  arguments:   stray positional arguments, --hidden 400,,400 and 400,,
#               --first near LONG_MAX, an --out of 1100 characters (D13).
source "$(dirname "$0")/lib.sh"
cli_init "$@"
need_python_modules h5py numpy
M=$(readlink -f "$MPIVAE")
TINY=(--hidden 16 --latent 2 --batch 32)

run_ok "$M" data synth --out s.h5 --n-train 256 --n-test 64 --height 8 --width 8
run_ok "$M" train --data s.h5 "${TINY[@]}" --steps 4 --out run
CK=run/checkpoints/step-4.h5
expect_file "$CK"

# ---------------------------------------------------------------- data
"$PY" - <<'EOF'
import h5py, numpy as np
h5py.File("d1.h5", "w").create_dataset("train/images", shape=(300, 2**32 + 256), dtype="u1", chunks=(1, 65536))
h5py.File("d1x4.h5", "w").create_dataset("train/images", shape=(300, 2**16, 2**16, 2), dtype="u1", chunks=(1, 1, 256, 2))
with h5py.File("sparse.h5", "w") as f:
    d = f.create_dataset("train/images", shape=(2**31, 1, 8, 8), dtype="u1", chunks=(64, 1, 8, 8))
    d[:64] = 1
with h5py.File("f16.h5", "w") as f:
    f["train/images"] = np.zeros((64, 8, 8), np.float16)
with h5py.File("huge.h5", "w") as f:
    x = np.zeros((64, 8, 8))
    x[3, 1, 1] = 1e300
    f["train/images"] = x
lay = h5py.VirtualLayout(shape=(64, 8, 8), dtype="u1")
lay[:] = h5py.VirtualSource("gone.h5", "x", shape=(64, 8, 8))
with h5py.File("vds.h5", "w") as f:
    f.create_virtual_dataset("train/images", lay, fillvalue=None)
EOF
expect_fail_with 1 "'d1.h5:/train/images' has rows of 4294967552 values" -- "$M" eval --ckpt "$CK" --data d1.h5
expect_fail_with 1 "'d1.h5:/train/images' has rows of 4294967552 values" -- "$M" train --data d1.h5 --out x1
expect_fail_with 1 "'d1x4.h5:/train/images' has rows of 65536x65536x2 values" -- "$M" train --data d1x4.h5 --out x2
expect_fail_with 1 "declares 2147483648 rows, but only 1 of its 33554432 chunks were ever written" -- \
    "$M" train --data sparse.h5 --out x3
expect_fail_with 1 "only 1 of its 33554432 chunks" -- "$M" eval --ckpt "$CK" --data sparse.h5
run_ok "$M" data info sparse.h5
grep -q "only 1 of 33554432 chunks were ever written: values not scanned" last.out ||
    fail "data info sparse.h5: expected the unwritten chunks named, found: $(cat last.out)"
expect_fail_with 1 "'f16.h5:/train/images' holds floats of 2 bytes (float16)" -- "$M" train --data f16.h5 --loss mse --out x4
expect_fail_with 1 "'huge.h5:/train/images' holds 1 values that are NaN, infinite or beyond float32's range" "row 3" -- \
    "$M" train --data huge.h5 --loss mse --out x5
expect_fail_with 1 "virtual dataset whose source file 'gone.h5' is missing" -- "$M" train --data vds.h5 --out x6
expect_fail_with 2 "--data ':/x' is not FILE[:/dataset]" -- "$M" train --data :/x --out x7
"$PY" -c 'import h5py, numpy as np; h5py.File("six.h5", "w")["train/images"] = np.zeros((64, 6, 6), np.uint8)'
expect_fail_with 1 "needs H and W divisible by 8, but the data is 6x6; sizes that work: H in {8, 16, ...}" -- \
    "$M" train --data six.h5 --model conv --hidden 4,8,16 --batch 16 --out x9
for x in x1 x2 x3 x4 x5 x6 x7 x9; do expect_absent "$x"; done
# A signal during the start-up (the data scan) ends the run promptly with 75.
MPIVAE_TEST_SCAN_DELAY_MS=3000 "$M" train --data s.h5 "${TINY[@]}" --steps 4 --out x8 >sig.log 2>&1 &
pid=$!
# The signal comes while the scan sleeps (3 s), once the hook says it has begun.
for _ in $(seq 1200); do grep -q "test hook: the data scan sleeps" sig.log && break; [ -d "/proc/$pid" ] || break; sleep 0.05; done
grep -q "test hook: the data scan sleeps" sig.log || fail "SIGTERM during start-up: expected the scan to begin, found: $(cat sig.log)"
kill -TERM "$pid"
rc=0
wait "$pid" || rc=$?
expect_eq "SIGTERM during start-up: exit status" 75 "$rc"
grep -q "stopped by SIGTERM during start-up, before the first step: nothing to save" sig.log ||
    fail "SIGTERM during start-up: expected the stop named, found: $(cat sig.log)"
expect_absent x8/checkpoints

# ---------------------------------------------------------------- checkpoints
run_ok "$M" data synth --out s16.h5 --n-train 64 --n-test 16 --height 16 --width 16
run_ok "$M" train --data s16.h5 --model conv --hidden 4,8 --latent 2 --batch 16 --steps 1 --out conv
# edit NAME PYTHON: a copy of $CK (or $CONV with a conv_ prefix) as bad-NAME.h5, changed by the snippet (f is the file).
edit() {
    local src=$CK
    [[ $1 == conv_* ]] && src=conv/checkpoints/step-1.h5
    cp "$src" "bad-$1.h5"
    "$PY" -c "import h5py, numpy as np
f = h5py.File('bad-$1.h5', 'r+')
$2" || fail "cannot make bad-$1.h5"
}
edit nanp 'd = f["params/fc1.weight"]; x = d[()]; x[1, 2] = np.nan; d[...] = x'
edit nanv 'd = f["optimizer/v/fc1.weight"]; x = d[()]; x[0, 0] = np.nan; d[...] = x'
edit model 'f.attrs["model"] = np.bytes_("nonsense")'
edit loss 'f.attrs["loss"] = np.bytes_("nonsense")'
edit latent32 'f.attrs["latent"] = np.int64(2**32 + 20)'
edit latent300 'f.attrs["latent"] = 1e300'
edit world 'f.attrs["world_size"] = np.int64(0)'
edit beta 'f.attrs["beta"] = -1.0'
edit lr 'f.attrs["cfg.lr"] = float("nan")'
edit beta1 'f.attrs["cfg.beta1"] = 1.0'
edit epochs 'f.attrs["cfg.epochs"] = np.int64(-5)'
edit shape 'f.attrs["input_shape"] = np.array([1, 65536, 65536], np.int32)'
edit big 'f.attrs["input_shape"] = np.array([1, 512, 512], np.int32)'
edit compound 'x = f["params/fc1.bias"][()]; del f["params/fc1.bias"]; f["params/fc1.bias"] = np.array([(v, 0) for v in x], dtype=[("a", "f4"), ("b", "i4")])'
edit string 'n = f["params/fc1.bias"].shape[0]; del f["params/fc1.bias"]; f["params/fc1.bias"] = np.array([b"x"] * n)'
edit conv_shape 'f.attrs["input_shape"] = np.array([1, 15, 16], np.int32)'
expect_fail_with 1 "bad-nanp.h5': dataset '/params/fc1.weight' holds nan at index" -- "$M" eval --ckpt bad-nanp.h5
cp -r run resume-nan && cp bad-nanv.h5 resume-nan/checkpoints/step-8.h5 && "$PY" -c "
import h5py; f = h5py.File('resume-nan/checkpoints/step-8.h5', 'r+'); f.attrs['step'] = 8"
expect_fail_with 1 "'/optimizer/v/fc1.weight' holds nan at index 0" -- "$M" train --resume resume-nan/checkpoints/step-8.h5 --out resume-nan
expect_fail_with 1 "attribute 'model' is 'nonsense'" -- "$M" eval --ckpt bad-model.h5
expect_fail_with 1 "attribute 'loss' is 'nonsense'" -- "$M" eval --ckpt bad-loss.h5
expect_fail_with 1 "attribute 'latent' is 4.29497e+09, not a whole number" -- "$M" eval --ckpt bad-latent32.h5
expect_fail_with 1 "attribute 'latent' is 1e+300, not a whole number" -- "$M" sample --ckpt bad-latent300.h5 --out S.png
expect_fail_with 1 "attribute 'world_size' is out of range" -- "$M" eval --ckpt bad-world.h5
expect_fail_with 1 "attribute 'beta' is -1, outside 0..1e+06" -- "$M" eval --ckpt bad-beta.h5
expect_fail_with 1 "attribute 'cfg.lr' is nan" -- "$M" train --resume bad-lr.h5 --out resume-lr
expect_fail_with 1 "attribute 'cfg.beta1' is 1, outside 0..0.999999" -- "$M" eval --ckpt bad-beta1.h5
expect_fail_with 1 "attribute 'cfg.epochs' is -5" -- "$M" eval --ckpt bad-epochs.h5
expect_fail_with 1 "attribute 'input_shape' is 1x65536x65536, more than 1e8 values a row" -- "$M" eval --ckpt bad-shape.h5
expect_fail_with 1 "'/params/fc1.bias' holds compound records" -- "$M" eval --ckpt bad-compound.h5
expect_fail_with 1 "'/params/fc1.bias' holds strings" -- "$M" eval --ckpt bad-string.h5
expect_fail_with 1 "attribute 'input_shape' is 1x15x16, but 2 conv layers need H and W divisible by 4" -- \
    "$M" sample --ckpt bad-conv_shape.h5 --out S.png
expect_absent S.png
# input_shape 1x512x512 with the real tensors: refused by their shapes, before a model of that size exists.
py_check "input_shape 1x512x512: refused without a large allocation" "$M" <<'EOF'
import resource, subprocess, sys
r = subprocess.run([sys.argv[1], "eval", "--ckpt", "bad-big.h5"], capture_output=True, text=True, timeout=60)
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
if r.returncode != 1 or "'/params/fc1.weight' does not have the shape" not in r.stderr:
    sys.exit(f"expected status 1 and the shape of /params/fc1.weight named, found {r.returncode}: {r.stderr}")
if rss > 400:
    sys.exit(f"expected no large allocation (peak RSS under 400 MiB), found {rss:.0f} MiB")
print(f"input_shape 1x512x512: refused, peak RSS {rss:.0f} MiB")
EOF

# ---------------------------------------------------------------- outputs
cp "$CK" ck.h5
md5=$(md5sum ck.h5 s.h5)
expect_fail_with 1 "would write 'ck.h5', which is its input 'ck.h5'" -- "$M" sample --ckpt ck.h5 --out ck.png
expect_absent ck.png
expect_fail_with 1 "which is its input" -- "$M" encode --ckpt ck.h5 --data s.h5:/test/images --out s.h5
expect_fail_with 1 "which is its input" -- "$M" anomaly --ckpt ck.h5 --data s.h5:/test/images --out s.h5
expect_eq "the inputs after the refused runs" "$md5" "$(md5sum ck.h5 s.h5)"
expect_absent s-hist.png
# A full disk, as a file-size limit (MPIVAE_TEST_FILE_LIMIT_KB: writes fail with EFBIG, as with ENOSPC): status 1, no crash, no partial file.
mkdir full
expect_fail_with 1 "cannot" -- env MPIVAE_TEST_FILE_LIMIT_KB=8 "$M" sample --ckpt ck.h5 --n 3000 --out full/S.png
expect_fail_with 1 "cannot" -- env MPIVAE_TEST_FILE_LIMIT_KB=8 "$M" encode --ckpt ck.h5 --data s.h5 --out full/E.h5
[ -z "$(ls -A full)" ] || fail "expected no partial output in full/ after the failed writes, found: $(ls -A full)"
run_ok "$M" train --data s.h5 --hidden 64 --latent 4 --batch 32 --steps 2 --ckpt-every 2 --out fullrun
expect_fail_with 1 "cannot write checkpoint" -- env MPIVAE_TEST_FILE_LIMIT_KB=100 "$M" train --resume auto --out fullrun --steps 4
[ -z "$(ls -A fullrun/checkpoints | grep -v '^step-2.h5$')" ] ||
    fail "expected only step-2.h5 in fullrun/checkpoints after the failed save, found: $(ls -A fullrun/checkpoints)"
run_ok "$M" eval --ckpt fullrun --data s.h5:/test/images
# metrics.h5 outgrows the limit while the checkpoints fit: warnings, status 0; the resume keeps the damaged file aside.
# The file whose close failed is left to the operating system at exit (HDF5's clean-up would crash on it, see
# src/cli/main.c), so under LeakSanitizer this one run would report HDF5's memory for it: leak detection is off for it.
run_ok env MPIVAE_TEST_FILE_LIMIT_KB=110 ASAN_OPTIONS=detect_leaks=0 "$M" train --data s.h5 --hidden 8 --latent 2 --batch 32 --epochs 1000 \
    --steps 2000 --log-every 500 --out mfull
grep -q "warning: cannot write metrics to 'mfull/metrics.h5'" last.err || fail "expected a warning about metrics.h5, found: $(cat last.err)"
expect_file mfull/checkpoints/step-2000.h5
run_ok "$M" train --resume auto --out mfull --steps 2010
grep -q "is damaged (a write cut short?): kept as 'mfull/metrics.h5.damaged-" last.err ||
    fail "expected the damaged metrics.h5 kept aside and named, found: $(cat last.err)"
py_check "metrics.h5 after the damaged one was kept aside" <<'EOF'
import h5py, numpy as np, sys
s = h5py.File("mfull/metrics.h5", "r")["/train/step"][()]
if not np.array_equal(s, np.arange(2001, 2011)):
    sys.exit(f"expected /train/step 2001..2010 in the new metrics.h5, found {s}")
EOF

# ---------------------------------------------------------------- arguments
expect_fail_with 2 "unexpected argument 'other.h5'" -- "$M" eval --ckpt ck.h5 other.h5
expect_fail_with 2 "--hidden '400,,400' has an empty size" -- "$M" train --data s.h5 --hidden 400,,400 --out y1
expect_fail_with 2 "--hidden '400,' has an empty size" -- "$M" train --data s.h5 --hidden 400, --out y2
expect_fail_with 1 "--first 9223372036854775800 --n 32 asks for rows past the end" -- \
    "$M" reconstruct --ckpt ck.h5 --first 9223372036854775800 --out R.png
long=$(printf 'a%.0s' $(seq 1100)).png
expect_fail_with 2 "--out is 1104 characters long; at most 1023 are taken" -- "$M" sample --ckpt ck.h5 --out "$long"
expect_fail_with 2 "--out is 1100 characters long" -- "$M" train --data s.h5 --out "${long%.png}"
for x in y1 y2 R.png; do expect_absent "$x"; done

cli_done
