#!/bin/bash
# fid_fashion.sh [OUT_DIR]: the FID figure of the VAE-GAN issue (a benchmark, not a test).
#
# 1. Trains the classifier (`mpivae classify`, its defaults) on Fashion-MNIST under
#    mpirun -np 2 and prints its test accuracy.
# 2. Trains each of FAMILIES (default: mlp conv vaegan) with each of SEEDS (default:
#    1 2 3) for the same wall-clock time, SECONDS seconds (default 300) under mpirun
#    -np 2: the run is stopped by SIGUSR1, which checkpoints it (as a Slurm time
#    limit would), so every run ends on a checkpoint. Extra options per family come
#    from ARGS_<family> (e.g. ARGS_vaegan="--equilibrium 0 --feature-layer 2").
# 3. For each run, `mpivae fid`: 10,000 prior samples against the 10,000 test images,
#    with the classifier's features; the train-versus-test floor once.
# 4. Prints a table: per family the FID of each seed, mean and spread (sample standard
#    deviation), steps and epochs reached, and the prior-sample grid of each run
#    (OUT_DIR/<family>-<seed>/samples/) to look at.
#
#   tests/bench/fid_fashion.sh [OUT_DIR]
#
# Environment: MPIVAE (default build/mpivae of the repository), DATA (default
# data/fashion-mnist.h5, imported when missing), SECONDS_PER_RUN (default 300), FAMILIES,
# SEEDS, MPIEXEC (default mpirun). Needs /usr/bin/python3 with h5py and numpy.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${1:-/tmp/mpivae-fid-fashion}
SECS=${SECONDS_PER_RUN:-300}
FAMILIES=${FAMILIES:-mlp conv vaegan}
SEEDS=${SEEDS:-1 2 3}
. "$ROOT/tests/bench/lib.sh"
bench_setup fid_fashion

CLF=$OUT/classifier
if [ ! -d "$CLF/checkpoints" ]; then
    echo "== classifier: mpivae classify --data $DATA --out $CLF"
    "$MPIEXEC" -np 2 "$M" classify --data "$DATA" --out "$CLF" > "$OUT/classifier.log" 2>&1 || die "classify failed: see $OUT/classifier.log"
fi
grep -i "accuracy" "$OUT/classifier.log" | tail -1

"$MPIEXEC" -np 2 "$M" fid --classifier "$CLF" --a "$DATA:/test/images" --b "$DATA:/test/images" > "$OUT/floor.txt" 2>&1 ||
    die "fid failed: see $OUT/floor.txt"
grep "floor" "$OUT/floor.txt"

for fam in $FAMILIES; do
    extra_var="ARGS_$fam"
    extra=${!extra_var:-}
    for seed in $SEEDS; do
        run=$OUT/$fam-$seed
        if [ ! -f "$run/done" ]; then
            rm -rf "$run"
            echo "== $fam seed $seed: $SECS s under mpirun -np 2 ($extra)"
            rc=0
            # shellcheck disable=SC2086
            timeout --signal=USR1 --kill-after=120 "$SECS" "$MPIEXEC" -np 2 "$M" train --data "$DATA" --model "$fam" \
                --seed "$seed" --epochs 1000 --log-every 500 --out "$run" $extra > "$run.log" 2>&1 || rc=$?
            [ "$rc" = 0 ] || [ "$rc" = 75 ] || [ "$rc" = 124 ] || die "$fam seed $seed: status $rc (see $run.log)"
            "$M" sample --ckpt "$run" --n 64 --out "$run/prior-grid.png" > /dev/null
            touch "$run/done"
        fi
        "$MPIEXEC" -np 2 "$M" fid --classifier "$CLF" --a "samples:$run" --b "$DATA:/test/images" --seed 1 --no-floor \
            > "$run/fid.txt" 2>&1 || die "fid of $run failed: see $run/fid.txt"
    done
done

/usr/bin/python3 - "$OUT" "$FAMILIES" "$SEEDS" <<'PYEOF'
import os, re, statistics, sys, h5py
out, fams, seeds = sys.argv[1], sys.argv[2].split(), sys.argv[3].split()
print(f"{'family':8s} {'FID per seed':34s} {'mean':>8s} {'sd':>7s}  steps (epochs)")
for fam in fams:
    vals, steps = [], []
    for s in seeds:
        run = os.path.join(out, f"{fam}-{s}")
        txt = open(os.path.join(run, "fid.txt")).read()
        vals.append(float(re.search(r"FID a vs b: ([0-9.]+)", txt).group(1)))
        ck = sorted(os.listdir(os.path.join(run, "checkpoints")))[-1]
        with h5py.File(os.path.join(run, "checkpoints", ck), "r") as f:
            steps.append(f"{int(f.attrs['step'])} ({int(f.attrs['epoch'])})")
    sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
    print(f"{fam:8s} {' '.join(f'{v:10.3f}' for v in vals):34s} {statistics.mean(vals):8.3f} {sd:7.3f}  {', '.join(steps)}")
PYEOF
echo "sample grids: $OUT/<family>-<seed>/prior-grid.png"
