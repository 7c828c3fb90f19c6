#!/usr/bin/python3
"""Step-time model for mpivae at P = 8 ... 1024 ranks (docs/scaling.md).

Measures, on this machine with one rank and one thread, the training step at
local batches b = 1, 2, 4, ..., 256 (mpivae train, steps after a warm-up) and
its phases from the run's summary line: forward and backward F(b), the rest
(data, noise) R(b), the pass over the gradient block for its norm G and the
Adam update U (neither depends on b). Then models a global batch B on P
ranks, b = ceil(B / P), two ways:

  flat (--allreduce blocking): every rank sums the whole block with one ring
  allreduce over all P ranks and updates all parameters:
    T(P) = F(b) + R(b) + G + U + T_ar(P)

  shm (the default), nodes of k ranks (--ranks-per-node): the node's ranks
  sum their blocks through shared memory (each rank one slice of every
  block: about one pass over the block, G, unless the node's memory
  bandwidth M (--node-gbs) is the limit: k blocks read in all), the
  N = ceil(P / k) node leaders allreduce the node sums, and each rank squares
  and updates its slice:
    T(P) = F(b) + R(b) + max(G, 4 n k / M) + T_ar(N) + (G + U) / k
    (T_ar(1) = 0, and the second G / k only with several nodes)

  T_ar(P) = 2 (P - 1) alpha + 2 (P - 1) / P * n * 4 / beta   (ring allreduce)

with n the number of parameters, alpha the per-message latency and beta the
link bandwidth. Defaults describe a typical 100 Gb/s InfiniBand (EDR/HDR100)
cluster: alpha = 3 us (MPI small-message latency plus a reduction step),
beta = 11 GB/s (about 90% of 12.5 GB/s); M = 150 GB/s. Barriers inside a
node (about a microsecond) and waiting for the slowest rank are left out.

    tests/bench/scaling_model.py [--build build] [--data data/fashion-mnist.h5]
                                 [--alpha-us 3] [--beta-gbs 11] [--batches 128,1024,8192]
                                 [--ranks-per-node 32] [--node-gbs 150] [--ranks 8,16,...,1024]
                                 [--node-ranks K] [--wait-us W]

--node-ranks K measures the compute with K ranks running at once on this
machine (the two-host measurement of docs/scaling.md showed one rank alone
underestimates a full node's); --wait-us adds the wait for the slowest rank
to every step of several ranks.
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


PHASES = re.compile(r"^step on rank 0: ([0-9.]+) ms = forward and backward ([0-9.]+) \+ gradient reduction "
                    r"([0-9.]+) \+ update ([0-9.]+) \+ the rest ([-0-9.]+) ", re.M)


def measure(args, b):
    """Local batch b on each of --node-ranks ranks of this machine (1: one rank alone): rank 0's
    (F + R, G, U) in ms per step, and the parameter count."""
    out = tempfile.mkdtemp(prefix="mpivae-scaling-")
    steps, warm = max(100, 20000 // b), 20
    k = args.node_ranks
    launch = [] if k == 1 else ["mpirun", "-np", str(k), "--oversubscribe"]
    # blocking: each rank passes over the whole block for the norm and Adam, as one rank alone does.
    cmd = launch + [os.path.join(args.build, "mpivae"), "train", "--data", args.data, "--batch", str(b * k),
           "--steps", str(warm + steps), "--log-every", str(warm), "--test-data", "none",
           "--sample-every", "0", "--allreduce", "blocking", "--out", out]
    p = subprocess.run(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    subprocess.run(["rm", "-rf", out])
    if p.returncode:
        sys.exit(p.stdout)
    m = PHASES.search(p.stdout)
    if not m:
        sys.exit("scaling_model: no 'step on rank 0' summary in mpivae's output:\n" + p.stdout)
    _, fb, red, upd, rest = (float(x) for x in m.groups())
    n = int(re.search(r"(\d+) parameters", p.stdout).group(1))
    if k > 1:  # the blocking reduction is the allreduce and the norm pass: G alone is measured at 1 rank
        red = float("nan")
    return fb + rest, red, upd, n


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--data", default=os.path.join(ROOT, "data", "fashion-mnist.h5"))
    ap.add_argument("--alpha-us", type=float, default=3.0)
    ap.add_argument("--beta-gbs", type=float, default=11.0)
    ap.add_argument("--batches", default="128,1024,8192")
    ap.add_argument("--ranks-per-node", type=int, default=32)
    ap.add_argument("--node-gbs", type=float, default=150.0)
    ap.add_argument("--node-ranks", type=int, default=1,
                    help="measure the compute with this many ranks running at once on this machine (a full node "
                         "runs each rank's products slower than one rank alone; 1: one rank alone)")
    ap.add_argument("--g-ms", type=float, default=0.05,
                    help="the norm pass G when --node-ranks > 1 cannot measure it (default 0.05 ms)")
    ap.add_argument("--wait-us", type=float, default=0.0,
                    help="added to every step of several ranks: the wait for the slowest rank (measured here: "
                         "0.05-0.09 ms in shared memory, 0.25 ms across TCP)")
    ap.add_argument("--ranks", default="8,16,32,64,128,256,512,1024",
                    help="rank counts P to model (2,4 with --ranks-per-node 1 or 2: the two-host runs of tests/bench/multihost.sh)")
    args = ap.parse_args()

    fr, G, U, n = {}, [], [], 0
    print(f"measured per step, {args.node_ranks} rank(s) at once, one thread each (mlp 784-400-20): forward, "
          "backward and the rest F+R;")
    print("the norm pass G and Adam U (the whole block, whatever the batch)")
    for e in range(0, 9):
        b = 1 << e
        fr[b], g, u, n = measure(args, b)
        G.append(g)
        U.append(u)
        gg = g if g == g else args.g_ms  # not measured with --node-ranks > 1: --g-ms
        print(f"  local batch {b:4d}: F+R {fr[b]:7.3f} ms  G {gg:.3f}{'' if g == g else ' (--g-ms)'}  U {u:.3f}  "
              f"step {fr[b] + gg + u:7.3f} ms  ({1e3 * b / (fr[b] + gg + u):8.0f} samples/s)")
    G = [g for g in G if g == g] or [args.g_ms]
    G = sorted(G)[len(G) // 2]
    U = sorted(U)[len(U) // 2]
    print(f"  medians: G {G:.3f} ms, U {U:.3f} ms")

    def compute(b):
        # Interpolate linearly between measured powers of two; beyond 256 scale linearly.
        if b >= 256:
            return fr[256] * b / 256
        lo = 1 << int(math.floor(math.log2(b)))
        hi = lo * 2
        return fr[lo] + (fr[hi] - fr[lo]) * (b - lo) / (hi - lo) if lo != b else fr[b]

    alpha, beta, k = args.alpha_us * 1e-6, args.beta_gbs * 1e9, args.ranks_per_node

    def ring(p):
        return 0.0 if p <= 1 else 1e3 * (2 * (p - 1) * alpha + 2 * (p - 1) / p * 4 * n / beta)

    print(f"\nring allreduce of {n} floats ({4 * n / 1e6:.2f} MB), alpha {args.alpha_us} us, beta {args.beta_gbs} GB/s; "
          f"shm: {k} ranks per node, node memory {args.node_gbs} GB/s")
    for B in [int(x) for x in args.batches.split(",")]:
        print(f"\nglobal batch {B}:")
        print(f"  {'P':>5} {'local b':>8} {'F+R ms':>7} | {'flat: ring':>10} {'step ms':>8} {'comm':>5} {'samples/s':>10} | "
              f"{'shm: nodes':>10} {'node sum':>8} {'ring':>6} {'step ms':>8} {'comm':>5} {'samples/s':>10}")
        cross_flat = cross_shm = None
        for P in [int(x) for x in args.ranks.split(",")]:
            b = math.ceil(B / P)
            c = compute(b)
            ar = ring(P)
            wait = args.wait_us * 1e-3 if P > 1 else 0.0
            t = c + G + U + ar + wait
            nodes = math.ceil(P / k)
            kk = min(k, P)
            ar2 = ring(nodes)
            upd2 = (U + (G if nodes > 1 else 0.0)) / kk
            gnode = max(G, 1e3 * 4 * n * kk / (args.node_gbs * 1e9))
            t2 = c + gnode + ar2 + upd2 + wait
            if cross_flat is None and ar > t - ar:
                cross_flat = P
            comm2 = gnode + ar2  # the summation, inside the node and across nodes
            if cross_shm is None and comm2 > t2 - comm2:
                cross_shm = P
            print(f"  {P:5d} {b:8d} {c:7.3f} | {ar:10.3f} {t:8.3f} {100 * ar / t:4.0f}% {B / t * 1e3:10.0f} | "
                  f"{nodes:10d} {gnode:8.3f} {ar2:6.3f} {t2:8.3f} {100 * comm2 / t2:4.0f}% {B / t2 * 1e3:10.0f}")
        for name, cross in (("flat", cross_flat), ("shm", cross_shm)):
            print(f"  {name}: the gradient summation dominates from P = {cross}" if cross else
                  f"  {name}: compute dominates up to P = {args.ranks.split(',')[-1]}")


if __name__ == "__main__":
    main()
