#!/bin/bash
# ab.sh OLD_MPIVAE NEW_MPIVAE [ROUNDS] [MODEL...]: training samples/s of two
# builds in interleaved rounds (old, new, old, new, ...), so that a slow spell
# of a shared machine hits both alike. One rank, one thread, batch 128 on
# data/fashion-mnist.h5; 100 warm-up steps, then 500 timed steps (the log
# lines after the first; WARMUP and STEPS change those counts). Prints each
# run and the median of each build.
#
#   bash tests/bench/ab.sh /work/baseline/mpivae build/mpivae 5 mlp conv
set -eu
OLD=$1 NEW=$2 ROUNDS=${3:-5}
shift $(($# < 3 ? $# : 3))
MODELS=("${@:-mlp}")
[ ${#MODELS[@]} -gt 0 ] || MODELS=(mlp)
DATA=${DATA:-data/fashion-mnist.h5}
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
rate() { # exe model: samples/s over the timed steps
    local out; out=$(mktemp -d)
    "$1" train --data "$DATA" --model "$2" --batch 128 --steps $((${WARMUP:-100} + ${STEPS:-500})) \
        --log-every "${WARMUP:-100}" --test-data none \
        --sample-every 0 --out "$out/run" | awk '/^step [0-9]+\// { n++; if (n > 1) { for (i = 1; i <= NF; i++) if ($(i+1) == "samples/s") { s += $i; k++ } } }
        END { printf "%.0f", s / k }'
    rm -rf "$out"
}
for m in "${MODELS[@]}"; do
    o=(); n=()
    for r in $(seq "$ROUNDS"); do
        a=$(rate "$OLD" "$m"); b=$(rate "$NEW" "$m")
        o+=("$a"); n+=("$b")
        echo "$m round $r: old $a samples/s, new $b samples/s"
    done
    mo=$(printf '%s\n' "${o[@]}" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')
    mn=$(printf '%s\n' "${n[@]}" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')
    echo "$m: median old $mo, new $mn samples/s (new/old $(awk -v a="$mn" -v b="$mo" 'BEGIN { printf "%.3f", a / b }'))"
done
