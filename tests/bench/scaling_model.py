#!/usr/bin/python3
"""Step-time model for mpivae at P = 8 ... 1024 ranks (docs/scaling.md).

Measures, on this machine with one rank and one thread, the training step's
compute time T_c(b) for local batches b = 1, 2, 4, ..., 256 (mpivae train,
steps after a warm-up), then models a global batch B on P ranks as

    T(P) = T_c(ceil(B / P)) + T_ar(P)
    T_ar(P) = 2 (P - 1) alpha + 2 (P - 1) / P * n * 4 / beta     (ring allreduce)

with n the number of parameters (the gradient block), alpha the per-message
latency and beta the link bandwidth. Defaults describe a typical 100 Gb/s
InfiniBand (EDR/HDR100) cluster: alpha = 3 us (MPI small-message latency
plus a reduction step), beta = 11 GB/s (about 90% of 12.5 GB/s).

    tests/bench/scaling_model.py [--build build] [--data data/fashion-mnist.h5]
                                 [--alpha-us 3] [--beta-gbs 11] [--batches 128,1024,8192]
"""

import argparse
import math
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")


def step_ms(args, b):
    out = tempfile.mkdtemp(prefix="mpivae-scaling-")
    steps, warm = max(100, 20000 // b), 20
    cmd = [os.path.join(args.build, "mpivae"), "train", "--data", args.data, "--batch", str(b),
           "--steps", str(warm + steps), "--log-every", str(warm), "--test-data", "none",
           "--sample-every", "0", "--out", out]
    p = subprocess.run(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    subprocess.run(["rm", "-rf", out])
    if p.returncode:
        sys.exit(p.stdout)
    sps = float(re.findall(r"\| (\d+) samples/s", p.stdout)[-1])
    n = int(re.search(r"(\d+) parameters", p.stdout).group(1))
    return 1e3 * b / sps, n


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--data", default=os.path.join(ROOT, "data", "fashion-mnist.h5"))
    ap.add_argument("--alpha-us", type=float, default=3.0)
    ap.add_argument("--beta-gbs", type=float, default=11.0)
    ap.add_argument("--batches", default="128,1024,8192")
    args = ap.parse_args()

    tc, n = {}, 0
    print("measured compute time per step, one rank, one thread (mlp 784-400-20):")
    for e in range(0, 9):
        b = 1 << e
        tc[b], n = step_ms(args, b)
        print(f"  local batch {b:4d}: {tc[b]:8.3f} ms  ({1e3 * b / tc[b]:8.0f} samples/s)")

    def compute(b):
        # Interpolate log-linearly between measured powers of two; beyond 256 scale linearly.
        if b >= 256:
            return tc[256] * b / 256
        lo = 1 << int(math.floor(math.log2(b)))
        hi = lo * 2
        return tc[lo] + (tc[hi] - tc[lo]) * (b - lo) / (hi - lo) if lo != b else tc[b]

    alpha, beta = args.alpha_us * 1e-6, args.beta_gbs * 1e9
    print(f"\nring allreduce of {n} floats ({4 * n / 1e6:.2f} MB), alpha {args.alpha_us} us, beta {args.beta_gbs} GB/s")
    for B in [int(x) for x in args.batches.split(",")]:
        print(f"\nglobal batch {B}:")
        print(f"  {'P':>5} {'local b':>8} {'compute ms':>11} {'allreduce ms':>13} {'step ms':>8} {'comm share':>10} {'samples/s':>11}")
        cross = None
        for e in range(3, 11):
            P = 1 << e
            b = math.ceil(B / P)
            c = compute(b)
            ar = 1e3 * (2 * (P - 1) * alpha + 2 * (P - 1) / P * 4 * n / beta)
            t = c + ar
            if cross is None and ar > c:
                cross = P
            print(f"  {P:5d} {b:8d} {c:11.3f} {ar:13.3f} {t:8.3f} {100 * ar / t:9.1f}% {B / t * 1e3:11.0f}")
        print(f"  the allreduce dominates from P = {cross}" if cross else "  compute dominates up to P = 1024")


if __name__ == "__main__":
    main()
