#!/bin/bash
# cli_data_spec.sh MPIVAE SOURCE_DIR: what the data and checkpoint arguments
# mean, and the units and snippets the README promises (issue 15, points 6-9,
# 11, 12). A synthetic set with 600 training and 200 test rows tells the two
# datasets apart by their row counts.
#  (6) FILE alone is FILE:/train/images in train (--data, --test-data) and in
#      eval, encode, anomaly, reconstruct, interpolate and traverse; without
#      --data the tools read the checkpoint's held-out data; every --help says so;
#  (7) --test-data none: --eval-every is refused, the banner says there is no
#      held-out data, and the tools ask for --data instead of guessing; a data
#      file without /test/images is the same;
#  (8) a checkpoint trained on a relative path works from another directory
#      (absolute path stored beside it), for the tools and for --resume; when
#      the data moved, the message names the attribute and the flag, and the
#      flag overrides it;
#  (9) --ckpt takes a run directory (its newest good checkpoint); a directory
#      without one gets a message saying so;
#  (11) --loss mse reports its unit (squared error), not nats;
#  (12) the README's PyTorch snippet runs as written against a 784-400-20
#      checkpoint and loads it strictly;
#  and a resume on data that shrank since the checkpoint is refused with both
#  row counts (streamed and in memory), not a crash.
source "$(dirname "$0")/lib.sh"
cli_init "$@"
need_python_modules h5py numpy torch
[ -n "$SRC" ] || fail "expected the source folder as the second argument, found none"
M=$(readlink -f "$MPIVAE")
TINY=(--hidden 32 --latent 4 --batch 32)

mkdir w
cd w
run_ok "$M" data synth --out s.h5 --n-train 600 --n-test 200 --height 8 --width 8 --classes 4
run_ok "$M" train --data s.h5 "${TINY[@]}" --steps 10 --out run
expect_grep() { grep -qE -- "$2" "$3" || { tail -n 20 "$3" >&2; fail "$1: expected a line matching '$2' in $3, found none"; }; }
expect_grep "(6) banner" "^held-out data: s.h5:/test/images, 200 rows" "$WORK/last.out"

# ---------------------------------------------------------------- (6) FILE alone
run_ok "$M" eval --ckpt run/checkpoints/step-10.h5 --data s.h5
expect_grep "(6) eval --data s.h5" "rows=600 .*data=s.h5:/train/images" "$WORK/last.out"
run_ok "$M" eval --ckpt run/checkpoints/step-10.h5
expect_grep "(6) eval without --data: the held-out set" "rows=200 .*data=.*s.h5:/test/images" "$WORK/last.out"
run_ok "$M" encode --ckpt run/checkpoints/step-10.h5 --data s.h5 --out E.h5
run_ok "$M" anomaly --ckpt run/checkpoints/step-10.h5 --data s.h5 --out A.h5
py_check "(6) encode and anomaly read FILE:/train/images" <<'EOF'
import sys, h5py
n = {p: h5py.File(p, "r")[d].shape[0] for p, d in (("E.h5", "/mu"), ("A.h5", "/score"))}
if n != {"E.h5": 600, "A.h5": 600}:
    sys.exit(f"expected 600 rows (the training set) in E.h5:/mu and A.h5:/score, found {n}")
EOF
run_ok "$M" reconstruct --ckpt run/checkpoints/step-10.h5 --data s.h5 --first 590 --n 8 --out R.png
run_ok "$M" interpolate --ckpt run/checkpoints/step-10.h5 --data s.h5 --from 599 --to 0 --out I.png
run_ok "$M" traverse --ckpt run/checkpoints/step-10.h5 --data s.h5 --index 599 --out T.png
for c in train eval encode anomaly reconstruct interpolate traverse; do
    run_ok "$M" "$c" --help
    tr '\n' ' ' <"$WORK/last.out" | grep 'FILE alone is FILE:/train/images' >/dev/null ||
        fail "(6) expected 'mpivae $c --help' to say 'FILE alone is FILE:/train/images', found it does not"
done
run_ok "$M" train --data s.h5 --test-data s.h5 "${TINY[@]}" --steps 2 --out tt
expect_grep "(6) --test-data s.h5" "^held-out data: s.h5:/train/images, 600 rows" "$WORK/last.out"

# ---------------------------------------------------------------- (7) no held-out data
expect_fail_with 1 "--eval-every 5 needs held-out data" "--test-data" -- \
    "$M" train --data s.h5 --test-data none --eval-every 5 "${TINY[@]}" --steps 10 --out none0
expect_absent none0
run_ok "$M" train --data s.h5 --test-data none "${TINY[@]}" --steps 4 --out none1
expect_grep "(7) banner" "^held-out data: none" "$WORK/last.out"
grep -q "^eval step" "$WORK/last.out" && fail "(7) expected no evaluation with --test-data none, found: $(grep '^eval step' "$WORK/last.out")"
expect_fail_with 1 "has no held-out data" "--data FILE" -- "$M" eval --ckpt none1
expect_fail_with 1 "has no held-out data" -- "$M" encode --ckpt none1 --out Enone.h5
expect_absent Enone.h5
run_ok "$M" eval --ckpt none1 --data s.h5:/test/images
expect_grep "(7) eval with --data" "rows=200" "$WORK/last.out"
"$PY" -c 'import h5py; f = h5py.File("s.h5", "r"); g = h5py.File("only.h5", "w"); g["/train/images"] = f["/train/images"][()]'
expect_fail_with 1 "--eval-every 5 needs held-out data" "only.h5" -- \
    "$M" train --data only.h5 --eval-every 5 "${TINY[@]}" --steps 10 --out only

# ---------------------------------------------------------------- (9) --ckpt DIR
run_ok "$M" eval --ckpt run --data s.h5:/test/images
expect_grep "(9) --ckpt on a run directory" "^checkpoint: run/checkpoints/step-10.h5 \(the newest good one in run\)" "$WORK/last.out"
expect_grep "(9) --ckpt on a run directory evaluates" "^eval: loss=" "$WORK/last.out"
mkdir empty
expect_fail_with 1 "'empty' is a directory with no good checkpoint in 'empty/checkpoints'" -- "$M" sample --ckpt empty --out X.png
expect_absent X.png

# ---------------------------------------------------------------- (8) relative paths
cd "$WORK"
run_ok "$M" eval --ckpt w/run
expect_grep "(8) eval from another directory" "rows=200 .*data=$WORK/w/s.h5:/test/images" "$WORK/last.out"
run_ok "$M" train --resume auto --out w/run --steps 14
expect_grep "(8) resume from another directory" "resumed from w/run/checkpoints/step-10.h5 at step 10" "$WORK/last.out"
expect_grep "(8) resume from another directory finds the data" "^data: $WORK/w/s.h5:/train/images" "$WORK/last.out"
mv w/s.h5 w/s-moved.h5
expect_fail_with 1 "cannot find the held-out data 's.h5:/test/images'" "attribute cfg.test_data" "$WORK/w/s.h5" "--data" -- \
    "$M" eval --ckpt w/run
run_ok "$M" eval --ckpt w/run --data w/s-moved.h5:/test/images
expect_grep "(8) --data overrides moved data" "rows=200" "$WORK/last.out"
expect_fail_with 1 "cannot find the training data 's.h5:/train/images'" "attribute cfg.data" "--data" -- \
    "$M" train --resume auto --out w/run --steps 16
run_ok "$M" train --resume auto --out w/run --steps 16 --data w/s-moved.h5 --test-data none
expect_grep "(8) --data on a resume when the checkpoint's data is gone" "resumed from w/run/checkpoints/step-14.h5" "$WORK/last.out"
mv w/s-moved.h5 w/s.h5

# ---------------------------------------------------------------- (11) the unit of --loss mse
cd w
run_ok "$M" train --data s.h5 --loss mse "${TINY[@]}" --steps 6 --out mse
expect_grep "(11) train's eval line under mse" "^eval step 6: .*squared error summed over pixels" "$WORK/last.out"
grep -q "nats per sample" "$WORK/last.out" && fail "(11) expected no 'nats per sample' under --loss mse, found: $(grep 'nats per sample' "$WORK/last.out")"
run_ok "$M" eval --ckpt mse
expect_grep "(11) eval under mse" "unit: per sample \(recon: squared error summed over pixels; kl: nats\)" "$WORK/last.out"
run_ok "$M" eval --ckpt run --data s.h5:/test/images
expect_grep "(11) eval under bce" "unit: nats per sample" "$WORK/last.out"

# ---------------------------------------------------------------- (12) the README's PyTorch snippet
run_ok "$M" data synth --out f28.h5 --n-train 64 --n-test 16 --height 28 --width 28
run_ok "$M" train --data f28.h5 --batch 16 --steps 3 --out fm
CK=$(readlink -f fm/checkpoints/step-3.h5)
sed -n '/^<!-- pytorch-snippet -->$/,/^<!-- \/pytorch-snippet -->$/p' "$SRC/README.md" | sed '1d;$d' | sed 's/^    //' >snippet.py
[ "$(wc -l <snippet.py)" -gt 10 ] || fail "(12) expected the README's PyTorch snippet between <!-- pytorch-snippet --> markers, found $(wc -l <snippet.py) lines"
grep -q 'runs/fm/checkpoints/step-4690.h5' snippet.py || fail "(12) expected the snippet to name runs/fm/checkpoints/step-4690.h5"
sed -i "s|runs/fm/checkpoints/step-4690.h5|$CK|" snippet.py
cat >>snippet.py <<EOF
import numpy as np
with h5py.File("$CK", "r") as f:
    for k, v in model.state_dict().items():
        assert np.array_equal(v.numpy(), f["params"][k][()]), k
print("README snippet: loaded", len(state), "tensors strictly")
EOF
py_check "(12) the README's PyTorch snippet" <snippet.py

# ---------------------------------------------------------------- data that shrank since the checkpoint
run_ok "$M" data synth --out d.h5
run_ok "$M" train --data d.h5 "${TINY[@]}" --out shrink --steps 10 --ckpt-every 10
run_ok "$M" data synth --out d.h5 --n-train 300
for mode in no yes; do
    expect_fail_with 1 "'d.h5:/train/images' has 300 rows, but the checkpoint 'shrink/checkpoints/step-10.h5' was saved on 2000 rows" \
        "the data changed since" -- "$M" train --data d.h5 --out shrink --resume auto --data-in-memory $mode
done

cli_done
