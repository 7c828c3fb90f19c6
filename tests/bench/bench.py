#!/usr/bin/python3
"""Benchmark mpivae beside PyTorch on the same machine, in one go.

Run with Debian's /usr/bin/python3 (python3-torch, python3-h5py), from the
repository root after building:

    tests/bench/bench.py [--build build] [--data data/fashion-mnist.h5] [--model mlp]
                         [--batches 128,256] [--ranks 1,2] [--steps 600] [--warmup 100]
    tests/bench/bench.py --epochs 10          # test loss after 10 epochs, both programs

Throughput mode prints, per batch size: samples/s of mpivae (per rank count)
and of PyTorch (one process, one thread), their ratio, the model's FLOPs per
step, the fraction of OpenBLAS's single-core sgemm rate (measured here on a
2048^3 product) that the training step reaches, and peak RSS of both. Only
steps after the warm-up are timed (mpivae logs every --warmup steps; the
lines after the first cover the timed steps; PyTorch's script times its own
steps). OpenBLAS's kernel set is the one mpivae picks (bench_sgemm reports
it; where OpenBLAS's own detection falls back to generic kernels, mpivae sets
OPENBLAS_CORETYPE), and PyTorch, whose linear layers call the same OpenBLAS,
runs with that OPENBLAS_CORETYPE too. The runs go in
--repeat rounds, each PyTorch then every rank count, so that a slow spell of
a shared virtual machine hits all of them alike; each figure is the median
of its runs, and the ratios are also printed per round with their median
(the runs are printed too). Every process runs
with one thread (OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1).
"""

import argparse
import os
import re
from statistics import median
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

ENV = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
           OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")


def run(cmd):
    """Runs cmd; returns its output (both programs report their own peak RSS)."""
    p = subprocess.run(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if p.returncode != 0:
        sys.exit(f"bench: command failed ({p.returncode}): {' '.join(cmd)}\n{p.stdout}")
    return p.stdout, None


def mpivae_train(args, batch, ranks, steps, extra=()):
    exe = os.path.join(args.build, "mpivae")
    out = tempfile.mkdtemp(prefix="mpivae-bench-")
    cmd = [exe, "train", "--data", args.data, "--model", args.model, "--batch", str(batch),
           "--out", out, "--sample-every", "0", *extra]
    if steps:
        cmd += ["--steps", str(args.warmup + steps), "--log-every", str(args.warmup),
                "--test-data", "none"]
    if ranks > 1:
        cmd = ["mpirun", "-np", str(ranks), "--bind-to", "core"] + cmd
    text, _ = run(cmd)
    subprocess.run(["rm", "-rf", out])
    return text


def timed_rate(text):
    """samples/s over all timed steps: the log lines after the warm-up's cover
    equal numbers of steps (--log-every is the warm-up, --steps a multiple of
    it), so the rate over all of them is the harmonic mean of theirs."""
    rates = [float(v) for v in re.findall(r"\| (\d+) samples/s", text)][1:]
    if not rates:
        sys.exit("bench: no timed log line in mpivae's output:\n" + text)
    return len(rates) / sum(1.0 / r for r in rates)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--data", default=os.path.join(ROOT, "data", "fashion-mnist.h5"))
    ap.add_argument("--model", default="mlp")
    ap.add_argument("--batches", default="128,256")
    ap.add_argument("--ranks", default="1,2")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--epochs", type=int, default=0, help="quality mode: train E epochs with both")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3, help="runs per figure; the median is printed")
    args = ap.parse_args()
    if not args.epochs and (args.warmup < 1 or args.steps < 1 or args.steps % args.warmup):
        sys.exit("bench: --steps and --warmup must be positive, --steps a multiple of --warmup (the log interval)")
    torch_script = os.path.join(ROOT, "tests", "pytorch", "bench_torch.py")

    if args.epochs:
        text = mpivae_train(args, 128, 1, 0, ["--epochs", str(args.epochs), "--seed", str(args.seed),
                                                 "--log-every", "1000000"])
        m = re.findall(r"eval step \d+: test loss ([\d.]+) recon ([\d.]+) kl ([\d.]+)", text)
        if not m:
            sys.exit("bench: no evaluation line in mpivae's output:\n" + text)
        ours = float(m[-1][0])
        ttext, _ = run(["/usr/bin/python3", torch_script, "--data", args.data, "--model", args.model,
                        "--epochs", str(args.epochs), "--seed", str(args.seed), "--threads", "1"])
        t = re.search(r"torch: test_loss=([\d.]+) recon=([\d.]+) kl=([\d.]+)", ttext)
        theirs = float(t.group(1))
        print(f"after {args.epochs} epochs, batch 128, seed {args.seed}: test loss (nats per image, z sampled)")
        print(f"  mpivae  {ours:.4f}  (recon {m[-1][1]}, kl {m[-1][2]})")
        print(f"  pytorch {theirs:.4f}  (recon {t.group(2)}, kl {t.group(3)})")
        print(f"  mpivae - pytorch = {ours - theirs:+.4f} ({100.0 * (ours - theirs) / theirs:+.2f}%)")
        return

    sg, _ = run([os.path.join(args.build, "tests", "bench_sgemm"), "2048"])
    gflops = float(re.search(r"gflops=([\d.]+)", sg).group(1))
    core = re.search(r"core=(\S+)", sg).group(1)
    ENV["OPENBLAS_CORETYPE"] = core  # the same kernels for both programs
    print(f"machine: OpenBLAS single-core sgemm on 2048^3: {gflops:.2f} GFLOP/s (OpenBLAS core {core}, "
          f"OPENBLAS_CORETYPE={core} for every run)")
    ranks_list = [int(r) for r in args.ranks.split(",")]
    for batch in [int(b) for b in args.batches.split(",")]:
        # Rounds of PyTorch then each rank count, so that a slow spell of the
        # machine hits all of them alike; the ratios are also taken per round.
        tsps_all, sps_all, text_of = [], {r: [] for r in ranks_list}, {}
        for _ in range(args.repeat):
            ttext, _ = run(["/usr/bin/python3", torch_script, "--data", args.data, "--model", args.model,
                               "--batch", str(batch), "--steps", str(args.steps), "--warmup", str(args.warmup),
                               "--threads", "1"])
            tm = re.search(r"samples_per_s=([\d.]+).*peak_rss_mb=([\d.]+)", ttext)
            tsps_all.append(float(tm.group(1)))
            trss = float(tm.group(2))
            for ranks in ranks_list:
                text_of[ranks] = mpivae_train(args, batch, ranks, args.steps)
                sps_all[ranks].append(timed_rate(text_of[ranks]))
        tsps = median(tsps_all)
        print(f"\nmodel {args.model}, global batch {batch}, {args.steps} timed steps after {args.warmup}, "
              f"{args.repeat} interleaved rounds")
        print(f"  pytorch 1 process : {tsps:10.0f} samples/s   peak RSS {trss:7.1f} MiB"
              f"   (runs: {', '.join(f'{v:.0f}' for v in tsps_all)})")
        base_all = sps_all[ranks_list[0]]
        for ranks in ranks_list:
            text = text_of[ranks]
            sps = median(sps_all[ranks])
            base = median(base_all)
            rss = float(re.search(r"peak RSS ([\d.]+) MiB per rank", text).group(1))
            mflop = float(re.search(r"([\d.]+) MFLOP per sample per step", text).group(1))
            frac = sps * mflop * 1e6 / (gflops * 1e9 * ranks)
            vs_torch = [a / b for a, b in zip(sps_all[ranks], tsps_all)]
            vs_base = [a / b for a, b in zip(sps_all[ranks], base_all)]
            print(f"  mpivae  {ranks} rank{'s' if ranks > 1 else ' '}   : {sps:10.0f} samples/s   peak RSS {rss:7.1f} MiB"
                  f"   {sps / tsps:5.2f}x pytorch   {sps / base:5.2f}x {ranks_list[0]} rank"
                  f"   {mflop * batch:.0f} MFLOP/step, {100 * frac:5.1f}% of sgemm rate per core"
                  f"   (runs: {', '.join(f'{v:.0f}' for v in sps_all[ranks])})")
            print(f"    per round: x pytorch {', '.join(f'{v:.2f}' for v in vs_torch)} (median {median(vs_torch):.2f})"
                  + (f"; x {ranks_list[0]} rank {', '.join(f'{v:.2f}' for v in vs_base)} (median {median(vs_base):.2f})"
                     if ranks != ranks_list[0] else ""))

if __name__ == "__main__":
    main()
