#!/bin/bash
# bitwise.sh MPIVAE OUTDIR: short runs on the synthetic set whose results a
# refactoring must leave unchanged bit for bit (on the same machine).
#
#   bash tests/bench/bitwise.sh OLD/mpivae /tmp/old
#   bash tests/bench/bitwise.sh build/mpivae /tmp/new
#   bash tests/bench/bitwise.sh --compare /tmp/old /tmp/new
#
# Runs: mlp (bce, warm-up) and conv (mse, capacity), at 1 and 2 ranks, in
# each --allreduce mode; a stop at step 12 resumed to the end; eval, sample
# and reconstruct on each final checkpoint. --compare checks /params and
# /optimizer of every final checkpoint with h5diff (exact), the metrics
# columns that do not measure time, and the tools' outputs.
set -u
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
PY=/usr/bin/python3

if [ "${1:-}" = --compare ]; then
    A=$2 B=$3 bad=0 n=0
    for f in "$A"/*/final.h5; do
        r=$(basename "$(dirname "$f")")
        for g in /params /optimizer; do
            n=$((n + 1))
            if ! h5diff -q "$f" "$B/$r/final.h5" "$g" "$g" >/dev/null 2>&1; then
                # The newer layout may keep the optimizer state per group.
                if [ "$g" = /optimizer ] && "$PY" - "$f" "$B/$r/final.h5" <<'PYEOF'
import sys, h5py, numpy as np
a, b = h5py.File(sys.argv[1], "r"), h5py.File(sys.argv[2], "r")
def leaves(g, p=""):
    out = {}
    for k, v in g.items():
        if isinstance(v, h5py.Dataset):
            out[k] = v[()]
        else:
            out.update(leaves(v, p + k + "/"))
    return out
ok = True
for mom in ("m", "v"):
    x = {k: v for k, v in leaves(a["optimizer"][mom]).items()}
    y = {}
    for k in b["optimizer"]:
        grp = b["optimizer"][k]
        if isinstance(grp, h5py.Group) and mom in grp:
            y.update(leaves(grp[mom]))
        elif k == mom:
            y.update(leaves(grp))
    ok &= sorted(x) == sorted(y) and all(np.array_equal(x[k], y[k]) for k in x)
sys.exit(0 if ok else 1)
PYEOF
                then continue; fi
                echo "DIFFER: $r $g"; bad=$((bad + 1))
            fi
        done
        n=$((n + 1))
        if ! "$PY" - "$A/$r/metrics.h5" "$B/$r/metrics.h5" <<'PYEOF'
import sys, h5py, numpy as np
a, b = h5py.File(sys.argv[1], "r"), h5py.File(sys.argv[2], "r")
ok = True
for grp in ("train", "eval"):
    for k in a[grp]:
        if k in ("time", "samples_per_s"):
            continue
        if k not in b[grp] or not np.array_equal(a[grp][k][()], b[grp][k][()]):
            print(f"metrics /{grp}/{k} differs"); ok = False
sys.exit(0 if ok else 1)
PYEOF
        then echo "DIFFER: $r metrics"; bad=$((bad + 1)); fi
        for t in sample.h5 recon.h5 eval.txt; do
            n=$((n + 1))
            if [ "$t" = eval.txt ]; then cmp -s "$A/$r/$t" "$B/$r/$t" || { echo "DIFFER: $r $t"; diff "$A/$r/$t" "$B/$r/$t"; bad=$((bad + 1)); }
            else h5diff -q "$A/$r/$t" "$B/$r/$t" >/dev/null 2>&1 || { echo "DIFFER: $r $t"; bad=$((bad + 1)); }; fi
        done
    done
    echo "bitwise: $n comparisons, $bad differ"
    [ "$bad" = 0 ]; exit
fi

M=$(readlink -f "$1"); OUT=$2
mkdir -p "$OUT"; cd "$OUT" || exit 1
"$M" data synth --out s.h5 --n-train 300 --n-test 100 --height 8 --width 8 --classes 4 >/dev/null || exit 1
MLP=(--model mlp --hidden 24,16 --latent 3 --loss bce --warmup 10)
CONV=(--model conv --hidden 4,8 --latent 3 --loss mse --capacity 5:20)
one() { # name ranks args...
    local name=$1 p=$2; shift 2
    rm -rf "$name"
    mpirun -n "$p" --oversubscribe "$M" train --data s.h5 --test-data s.h5:/test/images --batch 30 \
        --epochs 3 --seed 5 --log-every 5 --eval-every 10 "$@" --out "$name" >"$name.log" 2>&1 || { echo "run $name failed"; cat "$name.log"; exit 1; }
    local last; last=$(ls -v "$name"/checkpoints/step-*.h5 | tail -1)
    cp "$last" "$name/final.h5"
    "$M" eval --ckpt "$name/final.h5" --data s.h5:/test/images > "$name/eval.txt" 2>&1
    "$M" sample --ckpt "$name/final.h5" --n 16 --out "$name/sample.png" >/dev/null 2>&1
    "$M" reconstruct --ckpt "$name/final.h5" --data s.h5:/test/images --n 8 --out "$name/recon.png" >/dev/null 2>&1
}
for fam in mlp conv; do
    if [ $fam = mlp ]; then A=("${MLP[@]}"); else A=("${CONV[@]}"); fi
    for p in 1 2; do
        for mode in shm blocking overlap; do
            one "$fam-p$p-$mode" "$p" "${A[@]}" --allreduce "$mode"
        done
    done
    # A stop at step 12, then a resume to the end.
    rm -rf "$fam-resume"
    mpirun -n 2 --oversubscribe "$M" train --data s.h5 --test-data s.h5:/test/images --batch 30 --epochs 3 --seed 5 \
        --log-every 5 --eval-every 10 "${A[@]}" --steps 12 --out "$fam-resume" >"$fam-resume.log" 2>&1 || exit 1
    mpirun -n 2 --oversubscribe "$M" train --data s.h5 --test-data s.h5:/test/images --batch 30 --epochs 3 --seed 5 \
        --log-every 5 --eval-every 10 "${A[@]}" --steps 0 --resume auto --out "$fam-resume" >>"$fam-resume.log" 2>&1 || { cat "$fam-resume.log"; exit 1; }
    cp "$(ls -v "$fam-resume"/checkpoints/step-*.h5 | tail -1)" "$fam-resume/final.h5"
    "$M" eval --ckpt "$fam-resume/final.h5" --data s.h5:/test/images > "$fam-resume/eval.txt" 2>&1
    "$M" sample --ckpt "$fam-resume/final.h5" --n 16 --out "$fam-resume/sample.png" >/dev/null 2>&1
    "$M" reconstruct --ckpt "$fam-resume/final.h5" --data s.h5:/test/images --n 8 --out "$fam-resume/recon.png" >/dev/null 2>&1
done
echo "bitwise: runs recorded in $OUT"
