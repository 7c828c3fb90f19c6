#!/bin/bash
# cli_iw.sh MPIVAE SOURCE_DIR [MPIEXEC]: `mpivae eval --iw K`, the
# importance-weighted bound (the bound's math is checked in process by
# test_iw against log p(x) by quadrature).
#  - K = 1: the bound equals the single-sample ELBO printed beside it;
#  - K = 64 gives a higher bound than K = 1 on the same rows;
#  - 2 ranks print the same line as 1 (rows go to ranks in fixed chunks);
#  - K = 5000 with --batch 64 (each row's samples in 79 batches) runs and
#    gives a finite bound no lower than K = 64's minus 0.5 nats, and bits per
#    dimension = -bound / (64 ln 2);
#  - --iw 0 is a usage error naming the flag.
source "$(dirname "$0")/lib.sh"
cli_init "$@"
MPIEXEC=${3:-mpirun}
command -v "$MPIEXEC" >/dev/null || fail "expected an MPI launcher '$MPIEXEC', found none"
M=$MPIVAE
run_ok "$M" data synth --out s.h5 --n-train 512 --n-test 128 --height 8 --width 8 --classes 4
run_ok "$M" train --data s.h5 --hidden 32 --latent 4 --batch 32 --epochs 2 --out r
iw_of() { sed -n 's/^iw: K=[0-9]* log p(x) >= \([-0-9.]*\) nats.*/\1/p' last.out; }
elbo_of() { sed -n 's/.*single-sample ELBO \([-0-9.]*\);.*/\1/p' last.out; }
run_ok "$M" eval --ckpt r --iw 1 --limit 50
b1=$(iw_of) e1=$(elbo_of)
[ -n "$b1" ] && [ "$b1" = "$e1" ] || fail "--iw 1: expected the bound to equal the single-sample ELBO, found '$b1' and '$e1': $(cat last.out)"
run_ok "$M" eval --ckpt r --iw 64 --limit 50
b64=$(iw_of)
line1=$(grep '^iw:' last.out)
expect_lt "--iw 1 bound below --iw 64's" "$b1" "$b64"
run_ok "$MPIEXEC" -n 2 --oversubscribe "$M" eval --ckpt r --iw 64 --limit 50
line2=$(grep '^iw:' last.out)
[ "$line1" = "$line2" ] || fail "2 ranks: expected the same line as 1 rank, found '$line2' against '$line1'"
run_ok "$M" eval --ckpt r --iw 5000 --limit 8 --batch 64
py_check "--iw 5000" "$(grep '^iw:' last.out)" "$b64" <<'PY'
import math, re, sys
m = re.match(r"iw: K=5000 log p\(x\) >= (\S+) nats per image \((\S+) bits per dim\)", sys.argv[1])
if not m:
    sys.exit(f"expected 'iw: K=5000 log p(x) >= B nats per image (D bits per dim)', found: {sys.argv[1]}")
b, bpd = float(m.group(1)), float(m.group(2))
if not math.isfinite(b) or b < float(sys.argv[2]) - 0.5:
    sys.exit(f"K=5000: bound {b}, expected finite and at least K=64's {sys.argv[2]} - 0.5")
if abs(bpd - (-b / (64 * math.log(2)))) > 1e-5:
    sys.exit(f"bits per dim {bpd}, expected {-b / (64 * math.log(2))}")
print(f"L_64 {sys.argv[2]}, L_5000 {b} nats ({bpd} bits per dim)")
PY
expect_fail_with 2 "--iw 0 is out of range 1..1000000" -- "$M" eval --ckpt r --iw 0
cli_done
