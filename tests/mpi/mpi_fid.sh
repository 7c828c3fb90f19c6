#!/bin/bash
# mpi_fid.sh MPIVAE_LINGAUSS SOURCE_DIR MPIEXEC [NUMPROC_FLAG [PREFLAGS...]]
#
# `mpivae fid` on the test family lingauss (tests/family_lingauss.c), whose
# features are its posterior means x W^T + b: a linear map of the pixels that
# numpy recomputes from the checkpoint. One lingauss checkpoint serves as the
# classifier and as the VAE. Synthetic 8x8 data, 1300 training rows (6 chunks
# of 256) and 700 held-out rows (3 chunks).
#  - a set against itself gives 0: rows, and prior samples with one seed;
#  - 1, 2 and 3 ranks print the same lines, digit for digit (the statistics
#    are merged along one tree over the chunks: the same sums in the same
#    order at any rank count, so the tolerance is 0);
#  - train vs test rows and reconstructions vs test rows agree with numpy and
#    SciPy (np.cov, scipy.linalg.sqrtm) on the features recomputed in float64:
#    each term of the FID within 1e-6 relative (the C features are float32),
#    the FID and the floor (train vs test) within 6e-7 (printed to 6 decimals);
#  - bad input, each refused with one message and status 1 (2 for usage) at
#    2 ranks: a missing file, rows of another shape, a checkpoint without
#    features, --n out of range, a NaN in the data, an empty samples:, and
#    the floor's data gone (with --no-floor the command then works).
source "$(dirname "$0")/mpilib.sh"
mpi_init "$@"
need_python_modules scipy

run_ok "$M" fid --help
expect_grep "fid --help: the set syntax" "samples:CKPT" last.out
run_ok "$M" data synth --out s.h5 --n-train 1300 --n-test 700 --height 8 --width 8 --classes 4
cp s.h5 c.h5 # the classifier's own data: removed at the end to test the floor's message
run_ok "$M" train --data c.h5 --model lingauss --latent 6 --batch 100 --epochs 1 --lr 1e-2 --seed 4 --out lg
CK=lg/checkpoints/step-13.h5
expect_file "$CK"

# Itself: 0.
mpi_cmd 2
run_ok "${MPI[@]}" "$M" fid --classifier "$CK" --a s.h5:/test/images --b s.h5:/test/images --no-floor
expect_grep "rows against themselves" "^FID a vs b: 0\.000000 \(N_a 700, N_b 700, features 6\)$" last.out
run_ok "${MPI[@]}" "$M" fid --classifier "$CK" --a "samples:$CK" --b "samples:$CK" --n 600 --seed 3 --no-floor
expect_grep "samples against themselves" "^FID a vs b: 0\.000000 \(N_a 600, N_b 600, features 6\)$" last.out

# 1, 2, 3 ranks: the same output.
for p in 1 2 3; do
    mpi_cmd "$p"
    run_ok "${MPI[@]}" "$M" fid --classifier "$CK" --a "samples:$CK" --b "recon:$CK" --data s.h5:/test/images --n 1500
    grep -E "^FID|terms" last.out >"ranks$p.txt"
    [ "$(grep -c . "ranks$p.txt")" -eq 3 ] || fail "expected the FID, terms and floor lines at $p ranks, found: $(cat last.out)"
done
cat ranks1.txt
cmp -s ranks1.txt ranks2.txt || fail "2 ranks printed another FID than 1: $(diff ranks1.txt ranks2.txt)"
cmp -s ranks1.txt ranks3.txt || fail "3 ranks printed another FID than 1: $(diff ranks1.txt ranks3.txt)"
note "1, 2 and 3 ranks print the same FID, terms and floor"

# Against numpy and SciPy.
mpi_cmd 2
run_ok "${MPI[@]}" "$M" fid --classifier "$CK" --a s.h5 --b s.h5:/test/images
cp last.out rows.out
run_ok "${MPI[@]}" "$M" fid --classifier "$CK" --a "recon:$CK" --b s.h5:/test/images --data s.h5:/test/images --no-floor
cp last.out recon.out
py_check "FID against numpy and SciPy" "$CK" s.h5 rows.out recon.out <<'PY'
import re, sys, h5py, numpy as np, scipy.linalg
ck, data, rows_out, recon_out = sys.argv[1:]
p = h5py.File(ck, "r")["params"]
We, be = p["enc.weight"][()].astype(np.float64), p["enc.bias"][()].astype(np.float64)
Wd, bd = p["dec.weight"][()].astype(np.float64), p["dec.bias"][()].astype(np.float64)
f = h5py.File(data, "r")
def pixels(name):
    x = f[name][()]
    return x.reshape(len(x), -1).astype(np.float64) / 255.0
feat = lambda x: x @ We.T + be
def parts(a, b):
    m1, m2, s1, s2 = a.mean(0), b.mean(0), np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    c, _ = scipy.linalg.sqrtm(s1 @ s2, disp=False)
    t = [float(((m1 - m2) ** 2).sum()), float(np.trace(s1)), float(np.trace(s2)), float(np.trace(c.real))]
    return [t[0] + t[1] + t[2] - 2 * t[3]] + t
train, test = pixels("train/images"), pixels("test/images")
recon = 1 / (1 + np.exp(-(feat(test) @ Wd.T + bd)))  # bce: the decoder's mean, z = mu
num = r"([-0-9.e+]+)"
def found(path, pattern):
    m = re.search(pattern, open(path).read(), re.M)
    if not m:
        sys.exit(f"expected a line matching {pattern!r} in {path}, found:\n{open(path).read()}")
    return [float(g) for g in m.groups()]
names = ("FID", "|mu_a - mu_b|^2", "tr S_a", "tr S_b", "tr (S_a S_b)^1/2")
for what, path, n_a, n_b, want in (("train vs test rows", rows_out, 1300, 700, parts(feat(train), feat(test))),
                                   ("reconstructions vs test rows", recon_out, 700, 700, parts(feat(recon), feat(test)))):
    got = found(path, rf"^FID a vs b: {num} \(N_a {n_a}, N_b {n_b}, features 6\)$")
    got += found(path, rf"^  terms: \|mu_a - mu_b\|\^2 {num}, tr S_a {num}, tr S_b {num}, tr \(S_a S_b\)\^1/2 {num} ")
    for name, g, w in zip(names, got, want):
        # The FID is printed to 6 decimals; each term to 12 digits, from float32 features.
        tol = 6e-7 if name == "FID" else 1e-6 * abs(w)
        if not abs(g - w) <= tol:
            sys.exit(f"{what}: expected {name} {w:.12g} (numpy, SciPy), found {g} (tolerance {tol:.2g})")
    print(f"{what}: FID {got[0]}, tr (S_a S_b)^1/2 {got[4]} (numpy and SciPy: {want[0]:.8f}, {want[4]:.12g})")
floor = found(rows_out, rf"^FID train vs test \(floor\): {num} \(N_train 1300, N_test 700")[0]
if not abs(floor - parts(feat(train), feat(test))[0]) <= 6e-7:
    sys.exit(f"the floor: expected {parts(feat(train), feat(test))[0]:.8f}, found {floor}")
PY

# Bad input.
run_ok "$M" data synth --out six.h5 --n-train 100 --n-test 50 --height 6 --width 6 --classes 2
run_ok "$M" train --data s.h5 --model mlp --hidden 8 --latent 2 --batch 100 --epochs 1 --seed 1 --out mlp
"$PY" -c 'import h5py, numpy as np
x = np.random.default_rng(1).random((300, 1, 8, 8), dtype=np.float32)
x[123, 0, 4, 5] = np.nan
h5py.File("nan.h5", "w")["x"] = x'
expect_fail_with 1 "nothere.h5" -- "${MPI[@]}" "$M" fid --classifier "$CK" --a nothere.h5 --b s.h5 --no-floor
expect_fail_with 1 "--b 'six.h5:/train/images' has images of 1x6x6 but the classifier in '$CK' takes 1x8x8" -- \
    "${MPI[@]}" "$M" fid --classifier "$CK" --a s.h5 --b six.h5 --no-floor
expect_fail_with 1 "is a checkpoint of model family 'mlp', which has no features" -- \
    "${MPI[@]}" "$M" fid --classifier mlp --a s.h5 --b s.h5 --no-floor
expect_fail_with 2 "--n 1 is out of range 2..10000000" -- "${MPI[@]}" "$M" fid --classifier "$CK" --a "samples:$CK" --b s.h5 --n 1
expect_fail_with 2 "--a 'samples:' names no checkpoint" -- "${MPI[@]}" "$M" fid --classifier "$CK" --a samples: --b s.h5
expect_fail_with 1 "nan.h5" "NaN" -- "${MPI[@]}" "$M" fid --classifier "$CK" --a nan.h5:/x --b s.h5 --no-floor
rm c.h5
expect_fail_with 1 "cannot find the training data 'c.h5:/train/images' of classifier checkpoint '$CK'" "--no-floor" -- \
    "${MPI[@]}" "$M" fid --classifier "$CK" --a s.h5 --b s.h5:/test/images
run_ok "${MPI[@]}" "$M" fid --classifier "$CK" --a s.h5 --b s.h5:/test/images --no-floor
grep -q "floor" last.out && fail "expected no floor line under --no-floor, found: $(cat last.out)"
cli_done
