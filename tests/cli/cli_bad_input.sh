#!/bin/bash
# cli_bad_input.sh MPIVAE SOURCE_DIR [MPIEXEC]: promise 5 of DESIGN.md. Each
# malformed input makes mpivae exit non-zero (1 for bad data, 2 for usage
# errors, as src/cli/main.c documents), never by a hang or a signal, with exactly one
# 'error:' line on stderr that names the file / dataset / flag at fault, and
# a failed training run leaves no checkpoint behind.
source "$(dirname "$0")/lib.sh"
cli_init "$@"
MPIEXEC=${3:-mpirun}
need_python_modules h5py numpy

M=$MPIVAE
TINY=(--hidden 16 --latent 2 --batch 32)

run_ok "$M" data synth --out s.h5 --n-train 512 --n-test 128 --height 8 --width 8 --classes 4

# Bad files made with h5py: ranks 1 and 5, an empty set, a NaN, a value of 2.
py_check "making malformed data files" <<'EOF'
import h5py, numpy as np
with h5py.File("rank1.h5", "w") as f:
    f["/train/images"] = np.zeros(10, np.float32)
with h5py.File("rank5.h5", "w") as f:
    f["/train/images"] = np.zeros((4, 1, 2, 2, 2), np.float32)
with h5py.File("empty.h5", "w") as f:
    f["/train/images"] = np.zeros((0, 8, 8), np.uint8)
x = np.random.RandomState(0).rand(64, 8, 8).astype(np.float32)
y = x.copy(); y[3, 2, 2] = np.nan
with h5py.File("nan.h5", "w") as f:
    f["/train/images"] = y
y = x.copy(); y[5, 1, 1] = 2.0
with h5py.File("two.h5", "w") as f:
    f["/train/images"] = y
EOF
echo "this is not an HDF5 file" > text.h5

# train_fails CODE 'substring'... -- ARGS: mpivae train ARGS --out DIR fails so,
# and DIR holds no checkpoint afterwards. ARGS come after the tiny model
# flags, so they override them.
n_run=0
train_fails() {
    n_run=$((n_run + 1))
    local code=$1
    shift
    local subs=()
    while [ "$1" != "--" ]; do subs+=("$1"); shift; done
    shift
    expect_fail_with "$code" "${subs[@]}" -- "$M" train "${TINY[@]}" "$@" --out "out$n_run"
    expect_absent "out$n_run/checkpoints"
}

# --- data files
train_fails 1 "missing.h5" "No such file" -- --data missing.h5
train_fails 1 "text.h5" "not an HDF5 file" -- --data text.h5
train_fails 1 "s.h5" "'/nope'" -- --data s.h5:/nope
train_fails 1 "rank1.h5" "/train/images" "rank 1" -- --data rank1.h5
train_fails 1 "rank5.h5" "/train/images" "rank 5" -- --data rank5.h5
train_fails 1 "empty.h5" "/train/images" "empty" -- --data empty.h5
train_fails 1 "nan.h5" "/train/images" "NaN" -- --data nan.h5
train_fails 1 "two.h5" "/train/images" "[0, 1]" "bce" -- --data two.h5 --loss bce
# The same data is fine for the Gaussian loss (a tiny run).
run_ok "$M" train --data two.h5 --loss mse --steps 2 --hidden 16 --latent 2 --batch 8 --out mse
expect_file mse/checkpoints/step-2.h5
train_fails 1 "--batch 1000" "512" "s.h5" -- --data s.h5 --batch 1000

# --- flags (usage errors: status 2)
train_fails 2 "'--bogus'" -- --data s.h5 --bogus
expect_fail_with 2 "'--batch'" "needs a value" -- "$M" train --data s.h5 --out flag --batch
expect_absent flag
train_fails 2 "--batch" "'abc'" "not an integer" -- --data s.h5 --batch abc
expect_fail_with 2 "'--bogus'" -- "$M" eval --bogus
expect_fail_with 2 "'--ckpt'" "needs a value" -- "$M" eval --ckpt

# --- checkpoints: a good one, then damaged copies of it
run_ok "$M" train --data s.h5 "${TINY[@]}" --steps 2 --out good
CK=good/checkpoints/step-2.h5
expect_file "$CK"
run_ok "$M" eval --mean --ckpt "$CK" --data s.h5:/test/images   # the control: the intact file works

cp "$CK" trunc.h5
size=$(stat -c %s trunc.h5)
truncate -s $((size / 2)) trunc.h5
expect_fail_with 1 "trunc.h5" -- "$M" eval --mean --ckpt trunc.h5 --data s.h5:/test/images

# One byte flipped in the middle of the raw chunk of /params/fc1.weight: the
# Fletcher32 checksum (or HDF5 itself) must refuse it.
cp "$CK" flip.h5
py_check "flipping a byte of /params/fc1.weight" <<'EOF'
import h5py
with h5py.File("flip.h5", "r") as f:
    info = f["/params/fc1.weight"].id.get_chunk_info(0)
off = info.byte_offset + info.size // 2
with open("flip.h5", "r+b") as fh:
    fh.seek(off)
    b = fh.read(1)[0]
    fh.seek(off)
    fh.write(bytes([b ^ 0xFF]))
with open("flip.h5", "rb") as a, open("good/checkpoints/step-2.h5", "rb") as g:
    x, y = a.read(), g.read()
assert len(x) == len(y) and sum(p != q for p, q in zip(x, y)) == 1, "expected exactly one byte changed"
EOF
expect_fail_with 1 "flip.h5" -- "$M" eval --mean --ckpt flip.h5 --data s.h5:/test/images

# Data of another shape than the model's: both shapes named.
run_ok "$M" data synth --out s12.h5 --n-train 64 --n-test 32 --height 12 --width 12
expect_fail_with 1 "s12.h5" "1x12x12" "1x8x8" -- "$M" eval --mean --ckpt "$CK" --data s12.h5:/test/images

# --- data info
expect_fail_with 1 "missing.h5" -- "$M" data info missing.h5
expect_fail_with 1 "text.h5" -- "$M" data info text.h5

# --- under mpirun -np 2: still one message in all, and a non-zero exit from mpirun
command -v "$MPIEXEC" >/dev/null || fail "expected an MPI launcher '$MPIEXEC', found none"
expect_fail_with nonzero "missing.h5" -- "$MPIEXEC" -n 2 "$M" train --data missing.h5 "${TINY[@]}" --out mpi1
expect_absent mpi1/checkpoints
expect_fail_with nonzero "nan.h5" "NaN" -- "$MPIEXEC" -n 2 "$M" train --data nan.h5 "${TINY[@]}" --out mpi2
expect_absent mpi2/checkpoints

cli_done
