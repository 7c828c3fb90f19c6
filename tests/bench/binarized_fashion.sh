#!/bin/bash
# binarized_fashion.sh [OUT_DIR]: the binarized-likelihood figure of the hierarchical VAE
# issue (a benchmark, not a test).
#
# 1. train: trains each of FAMILIES (default: mlp conv hvae) with --binarize dynamic for
#    the same wall-clock time, SECONDS_PER_RUN seconds (default 1800) under mpirun -np 2,
#    seed SEED (default 1): the run is stopped by SIGUSR1, which checkpoints it (as a
#    Slurm time limit would). Extra options per family come from ARGS_<family> (default
#    for hvae: --warmup 1407, a KL warm-up over its first 3 epochs).
# 2. eval: for each run, `mpivae eval` on the fixed binarization of the test set (the
#    checkpoint's default): the ELBO and the IW bound with K = K_ALL (default 1000) over
#    ROWS_ALL rows (default: all 10,000), then with K = K_FEW (default 5000) over the
#    first ROWS_FEW rows (default 1000); the single-sample ELBO, KL per group and active
#    units come from the first.
# 3. Prints a table: per family the steps and epochs reached, the ELBO, both IW bounds
#    and the KL and active units per group.
#
#   tests/bench/binarized_fashion.sh [OUT_DIR]
#
# PHASES (default "train eval") selects the phases; a phase whose result exists is not
# run again (delete OUT_DIR/<family>/done or OUT_DIR/<family>/iw-*.txt to redo it).
# Environment: MPIVAE (default build/mpivae of the repository), DATA (default
# data/fashion-mnist.h5, imported when missing), MPIEXEC (default mpirun). Needs
# /usr/bin/python3 with h5py.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${1:-/tmp/mpivae-binarized-fashion}
SECS=${SECONDS_PER_RUN:-1800}
FAMILIES=${FAMILIES:-mlp conv hvae}
SEED=${SEED:-1}
PHASES=${PHASES:-train eval}
K_ALL=${K_ALL:-1000}
ROWS_ALL=${ROWS_ALL:-0}
K_FEW=${K_FEW:-5000}
ROWS_FEW=${ROWS_FEW:-1000}
ARGS_hvae=${ARGS_hvae---warmup 1407}
. "$ROOT/tests/bench/lib.sh"
bench_setup binarized_fashion

for fam in $FAMILIES; do
    run=$OUT/$fam
    extra_var="ARGS_$fam"
    extra=${!extra_var:-}
    if [[ " $PHASES " == *" train "* ]] && [ ! -f "$run/done" ]; then
        rm -rf "$run"
        echo "== $fam: $SECS s under mpirun -np 2, --binarize dynamic ($extra), $(date -u +%H:%M:%S)"
        rc=0
        # shellcheck disable=SC2086
        timeout --signal=USR1 --kill-after=300 "$SECS" "$MPIEXEC" -np 2 "$M" train --data "$DATA" --model "$fam" \
            --binarize dynamic --seed "$SEED" --epochs 100000 --log-every 500 --out "$run" $extra > "$run.log" 2>&1 || rc=$?
        [ "$rc" = 0 ] || [ "$rc" = 75 ] || [ "$rc" = 124 ] || die "$fam: status $rc (see $run.log)"
        "$M" sample --ckpt "$run" --n 64 --out "$run/prior-grid.png" > /dev/null
        touch "$run/done"
    fi
    if [[ " $PHASES " == *" eval "* ]]; then
        [ -f "$run/done" ] || die "$fam: no trained run in $run (run the train phase)"
        limit_all=()
        [ "$ROWS_ALL" = 0 ] || limit_all=(--limit "$ROWS_ALL")
        for spec in "$K_ALL:all" "$K_FEW:few"; do
            K=${spec%%:*}
            which=${spec##*:}
            f=$run/iw-$which.txt
            [ -s "$f" ] && grep -q "^iw:" "$f" && continue
            if [ "$which" = all ]; then lim=("${limit_all[@]}"); else lim=(--limit "$ROWS_FEW"); fi
            echo "== $fam: eval --iw $K ${lim[*]}, $(date -u +%H:%M:%S)"
            start=$(date +%s)
            "$MPIEXEC" -np 2 "$M" eval --ckpt "$run" --data "$DATA:/test/images" --iw "$K" "${lim[@]}" --seed 1 \
                > "$f.tmp" 2>&1 || die "eval of $run failed: see $f.tmp"
            grep -q "^iw: .*data=.*:/test/images" "$f.tmp" || die "eval of $run did not score the test set: see $f.tmp"
            echo "seconds: $(($(date +%s) - start))" >> "$f.tmp"
            mv "$f.tmp" "$f"
        done
    fi
done

[[ " $PHASES " == *" eval "* ]] || exit 0
/usr/bin/python3 - "$OUT" "$FAMILIES" <<'PYEOF'
import os, re, sys, h5py
out, fams = sys.argv[1], sys.argv[2].split()
for fam in fams:
    run = os.path.join(out, fam)
    ck = sorted(os.listdir(os.path.join(run, "checkpoints")))[-1]
    with h5py.File(os.path.join(run, "checkpoints", ck), "r") as f:
        steps = f"{int(f.attrs['step'])} steps ({int(f.attrs['epoch'])} epochs)"
    print(f"== {fam}: {steps}")
    for which in ("all", "few"):
        txt = open(os.path.join(run, f"iw-{which}.txt")).read()
        for line in txt.splitlines():
            if re.match(r"(eval:|iw:|active|seconds|data)", line.strip()):
                print(f"  [{which}] {line.strip()}")
PYEOF
echo "sample grids: $OUT/<family>/prior-grid.png"
