#!/bin/bash
# cli_train_loss_falls.sh MPIVAE SOURCE_DIR: a short training run learns, and
# leaves the run directory DESIGN.md section 3 promises.
#
# 1. Held-out loss falls: 3 epochs on a 512-image 8x8 synthetic set must bring
#    the test loss (mpivae eval --mean, z = mu, nats per sample) below 0.8 times
#    that of the model after its first step (--steps 0 means "all epochs", so
#    the first-step checkpoint of the same configuration stands for the initial
#    model). Measured: about 44.8 after step 1 (an untrained model gives
#    64 ln 2 = 44.4 by predicting 0.5 everywhere) against about 32.3 after 48
#    steps, a ratio of 0.72; a model that does not learn, or learns at a
#    fraction of the rate, stays above 0.8.
# 2. The run directory holds checkpoints/step-48.h5, metrics.h5 with one
#    /train row per step (steps 1..48, finite losses) and /eval rows ending at
#    step 48, samples.h5 with /prior/step-48 [64,1,8,8] (and /recon/step-48)
#    in [0, 1], and samples/prior-step-*.png and samples/recon-step-*.png as
#    valid PNGs of the grid size (8 columns, 2 pixels of padding).
# 3. OpenBLAS's kernels: the banner names them; on a CPU with AVX2 they are
#    not a generic fallback (Debian's OpenBLAS 0.3.21 takes newer Intel CPUs
#    for a Prescott: mpivae then sets OPENBLAS_CORETYPE and starts again), and
#    a kernel set the user chose with OPENBLAS_CORETYPE is kept.
# 4. Learning rates: without --lr-decay metrics.h5's /train/lr is --lr at every
#    step; with --lr-decay 8 --lr-floor 0.1 it is PyTorch's CosineAnnealingLR
#    (T_max 8, eta_min 0.1 lr) for steps 1..8 and the floor after, the log line
#    shows it, and --lr-floor alone or out of [0, 1] is refused (on a resume
#    too). The rate reaches Adam in each --allreduce mode: --lr-floor 1 trains
#    the bits of a constant rate, --lr-floor 0.1 other ones.
source "$(dirname "$0")/lib.sh"
cli_init "$@"
need_python_modules h5py numpy torch

M=$MPIVAE
MARGIN=0.8
CFG=(--data s.h5 --hidden 64 --latent 4 --batch 32 --lr 3e-3 --epochs 3 --seed 1)
STEPS=48 # 512 rows / 32 per batch * 3 epochs

run_ok "$M" data synth --out s.h5 --n-train 512 --n-test 128 --height 8 --width 8 --classes 4

run_ok "$M" train "${CFG[@]}" --steps 1 --out first
expect_file first/checkpoints/step-1.h5
run_ok "$M" eval --mean --ckpt first/checkpoints/step-1.h5 --data s.h5:/test/images
initial=$(loss_of "$WORK/last.out")

run_ok "$M" train "${CFG[@]}" --out run
grep -q "^finished: $STEPS steps" "$WORK/last.out" ||
    fail "expected 'finished: $STEPS steps' on stdout, found: $(tail -n 3 "$WORK/last.out")"
# The step's phases: none negative, and they add up to the step (each printed to 0.001 ms).
phases=$(grep '^step on rank 0: ' "$WORK/last.out")
[ -n "$phases" ] || fail "expected a 'step on rank 0: ...' summary line, found: $(tail -n 3 "$WORK/last.out")"
read -r total fb red upd rest < <(sed -n 's/^step on rank 0: \([0-9.]*\) ms = forward and backward \([0-9.]*\) + gradient reduction \([0-9.]*\) + update \([0-9.]*\) + the rest \([-0-9.]*\) (data, noise)$/\1 \2 \3 \4 \5/p' <<<"$phases")
[ -n "$rest" ] || fail "expected the five figures of the step summary, found: $phases"
awk -v t="$total" -v a="$fb" -v b="$red" -v c="$upd" -v d="$rest" 'BEGIN {
    s = a + b + c + d; diff = s - t; if (diff < 0) diff = -diff
    exit !(t > 0 && a > 0 && b >= 0 && c > 0 && d >= 0 && diff <= 0.003) }' ||
    fail "expected positive phases adding up to the step, found: $phases"
note "$phases"
expect_file run/checkpoints/step-$STEPS.h5
run_ok "$M" eval --mean --ckpt run/checkpoints/step-$STEPS.h5 --data s.h5:/test/images
final=$(loss_of "$WORK/last.out")
grep -q "rows=128 " "$WORK/last.out" || fail "expected the eval over all 128 test rows, found: $(cat "$WORK/last.out")"

bound=$(awk -v a="$initial" -v m="$MARGIN" 'BEGIN { printf "%.6f", a * m }')
note "held-out loss (z = mu): after step 1 $initial, after step $STEPS $final (must be < $bound = $MARGIN x initial)"
expect_lt "held-out loss after $STEPS steps vs $MARGIN x that after step 1" "$final" "$bound"

# The run directory.
expect_file run/metrics.h5
expect_file run/samples.h5
py_check "metrics.h5 and samples.h5" "$STEPS" <<'EOF'
import sys, h5py, numpy as np
steps = int(sys.argv[1])
errors = []
with h5py.File("run/metrics.h5", "r") as f:
    for k in ("step", "epoch", "loss", "recon", "kl", "beta", "lr", "grad_norm", "samples_per_s", "time"):
        if f"/train/{k}" not in f:
            errors.append(f"metrics.h5: expected /train/{k}, found none")
        elif f[f"/train/{k}"].shape != (steps,):
            errors.append(f"metrics.h5: expected /train/{k} of shape ({steps},), found {f[f'/train/{k}'].shape}")
    if not errors:
        s = f["/train/step"][()]
        if not np.array_equal(s, np.arange(1, steps + 1)):
            errors.append(f"metrics.h5: expected /train/step = 1..{steps}, found {s[:5]}...{s[-3:]}")
        loss = f["/train/loss"][()]
        if not np.all(np.isfinite(loss)):
            errors.append(f"metrics.h5: expected finite /train/loss, found {loss}")
    for k in ("step", "loss", "recon", "kl"):
        if f"/eval/{k}" not in f:
            errors.append(f"metrics.h5: expected /eval/{k}, found none")
    if not errors:
        es = f["/eval/step"][()]
        el = f["/eval/loss"][()]
        if es.shape[0] < 1 or es[-1] != steps:
            errors.append(f"metrics.h5: expected /eval rows ending at step {steps}, found steps {es}")
        if el.shape != es.shape or not np.all(np.isfinite(el)):
            errors.append(f"metrics.h5: expected finite /eval/loss, one per /eval/step row, found {el}")
    if not errors:
        print(f"metrics.h5: {steps} train rows, loss {loss[0]:.3f} -> {loss[-1]:.3f}; eval rows {list(es)}")
with h5py.File("run/samples.h5", "r") as f:
    for grp in ("prior", "recon"):
        name = f"/{grp}/step-{steps}"
        if name not in f:
            errors.append(f"samples.h5: expected {name}, found {list(f.get(grp, {}).keys()) if grp in f else 'no /' + grp}")
            continue
        d = f[name]
        if grp == "prior" and d.shape != (64, 1, 8, 8):
            errors.append(f"samples.h5: expected {name} of shape (64, 1, 8, 8), found {d.shape}")
        if d.ndim != 4 or d.shape[1:] != (1, 8, 8):
            errors.append(f"samples.h5: expected {name} of shape (N, 1, 8, 8), found {d.shape}")
            continue
        x = d[()]
        if not (np.all(np.isfinite(x)) and x.min() >= 0.0 and x.max() <= 1.0):
            errors.append(f"samples.h5: expected {name} values in [0, 1], found [{x.min()}, {x.max()}]")
        print(f"samples.h5: {name} {d.shape} {d.dtype}")
with open("grid_sizes", "w") as g:
    with h5py.File("run/samples.h5", "r") as f:
        for grp in ("prior", "recon"):
            if f"/{grp}/step-{steps}" in f:
                g.write(f"{grp} {f[f'/{grp}/step-{steps}'].shape[0]}\n")
for e in errors:
    print("FAIL:", e, file=sys.stderr)
sys.exit(1 if errors else 0)
EOF

# Learning rates: constant, then --lr-decay against PyTorch's scheduler.
run_ok "$M" train "${CFG[@]}" --steps 12 --lr-decay 8 --lr-floor 0.1 --log-every 4 --out decay
grep -Eq "^step 4/12 .* lr 0.00217 " "$WORK/last.out" ||
    fail "expected the log line of step 4 to show lr 0.00217, found: $(grep "^step 4/" "$WORK/last.out")"
py_check "metrics.h5's /train/lr" <<'EOF'
import sys, h5py, numpy as np, torch
with h5py.File("run/metrics.h5", "r") as f:
    lr = f["/train/lr"][()]
if not np.all(lr == 3e-3):
    sys.exit(f"FAIL: expected /train/lr = 3e-3 at every step without --lr-decay, found {lr}")
with h5py.File("decay/metrics.h5", "r") as f:
    lr = f["/train/lr"][()]
opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=3e-3)
sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=8, eta_min=3e-4)
want = []
for t in range(12):
    want.append(opt.param_groups[0]["lr"] if t < 8 else 3e-4)
    opt.step()
    sched.step()
want = np.array(want)
if lr.shape != (12,) or not np.allclose(lr, want, rtol=1e-6, atol=0):
    sys.exit(f"FAIL: expected /train/lr {want}, found {lr}")
print(f"/train/lr with --lr-decay 8 --lr-floor 0.1: {lr[0]:.6g} ... {lr[7]:.6g}, then {lr[8]:.6g}; PyTorch's the same")
EOF
expect_fail_with 1 "--lr-floor 0.1 is the end of --lr-decay: give --lr-decay STEPS too" -- \
    "$M" train "${CFG[@]}" --lr-floor 0.1 --out bad1
expect_fail_with 2 "--lr-floor 1.5 is out of range [0, 1]" -- "$M" train "${CFG[@]}" --lr-decay 8 --lr-floor 1.5 --out bad2
[ ! -e bad1 ] && [ ! -e bad2 ] || fail "expected no run directory from a refused configuration, found bad1 or bad2"
expect_fail_with 1 "resuming from run/checkpoints/step-$STEPS.h5: --lr-floor 0.1 is the end of --lr-decay" -- \
    "$M" train --resume auto --out run --lr-floor 0.1
# The rate reaches Adam in every reduction mode: a decay to a floor of 1 trains the
# same bits as no decay, a decay to 0.1 other ones.
for mode in shm blocking overlap; do
    run_ok "$M" train "${CFG[@]}" --steps 12 --allreduce "$mode" --out "const-$mode"
    run_ok "$M" train "${CFG[@]}" --steps 12 --allreduce "$mode" --lr-decay 8 --lr-floor 1 --out "floor1-$mode"
done
py_check "the parameters after 12 steps with and without --lr-decay" <<'EOF'
import sys, h5py, numpy as np
def params(run):
    with h5py.File(f"{run}/checkpoints/step-12.h5", "r") as f:
        return {k: f["params"][k][()] for k in f["params"]}
base = params("const-shm")
for mode in ("shm", "blocking", "overlap"):
    for run in (f"const-{mode}", f"floor1-{mode}"):
        p = params(run)
        if p.keys() != base.keys() or any(not np.array_equal(p[k], base[k]) for k in p):
            sys.exit(f"FAIL: expected {run} to hold the parameters of const-shm bit for bit, found them different")
d = params("decay")
diff = max(float(np.abs(d[k] - base[k]).max()) for k in d)
if diff == 0.0:
    sys.exit("FAIL: expected --lr-decay 8 --lr-floor 0.1 to change the parameters, found them equal to a constant rate's")
print(f"12 steps: constant rate = --lr-floor 1 in shm, blocking, overlap; --lr-floor 0.1 differs by up to {diff:.3g}")
EOF

# PNG grids: n images in 8 columns of 8x8 with 2 pixels of padding.
shopt -s nullglob
for kind in prior recon; do
    pngs=(run/samples/$kind-step-*.png)
    [ ${#pngs[@]} -ge 1 ] || fail "expected run/samples/$kind-step-*.png, found: $(ls run/samples 2>/dev/null | tr '\n' ' ')"
    n=$(awk -v k="$kind" '$1 == k { print $2 }' grid_sizes)
    cols=$((n < 8 ? n : 8))
    rows=$(((n + 7) / 8))
    for p in "${pngs[@]}"; do
        expect_png "$p" $((cols * 8 + (cols + 1) * 2)) $((rows * 8 + (rows + 1) * 2))
    done
    note "${pngs[*]}: valid PNG grids of $n images"
done

# OpenBLAS's kernels.
core_of() { sed -n 's/^threads: .*OpenBLAS core \([A-Za-z0-9_]*\).*/\1/p' "$WORK/last.out" | head -n 1; }
run_ok env -u OPENBLAS_CORETYPE -u MPIVAE_BLAS_FALLBACK "$M" train "${CFG[@]}" --steps 1 --out blas-auto
core=$(core_of)
[ -n "$core" ] || fail "expected 'OpenBLAS core NAME' in the banner, found: $(grep '^threads:' "$WORK/last.out")"
note "banner: $(grep '^threads:' "$WORK/last.out")"
if grep -m 1 '^flags' /proc/cpuinfo | grep -qw avx2; then
    case $core in
    Prescott | Core2 | Penryn | Dunnington | Nehalem | Atom | Katmai | Coppermine | Northwood | Banias | Opteron | Opteron_SSE3 | Barcelona | Bobcat)
        fail "expected AVX2 or AVX-512 kernels on this CPU (it has avx2), found OpenBLAS core $core" ;;
    esac
fi
if [ "$(uname -m)" = x86_64 ]; then
    OPENBLAS_CORETYPE=Prescott run_ok env -u MPIVAE_BLAS_FALLBACK "$M" train "${CFG[@]}" --steps 1 --out blas-user
    expect_eq "OpenBLAS core with OPENBLAS_CORETYPE=Prescott" Prescott "$(core_of)"
    grep -q '^threads: .*set by mpivae' "$WORK/last.out" &&
        fail "expected the user's OPENBLAS_CORETYPE to stand, found: $(grep '^threads:' "$WORK/last.out")"
    # The banner's claim rests on the kernels in use, not on an inherited MPIVAE_BLAS_FALLBACK alone.
    OPENBLAS_CORETYPE=Prescott MPIVAE_BLAS_FALLBACK=Prescott run_ok "$M" train "${CFG[@]}" --steps 1 --out blas-inherited
    grep -q '^threads: .*set by mpivae' "$WORK/last.out" &&
        fail "expected no 'set by mpivae' with the user's OPENBLAS_CORETYPE and an inherited MPIVAE_BLAS_FALLBACK, found: $(grep '^threads:' "$WORK/last.out")"
    note "a user's OPENBLAS_CORETYPE stands, and the banner claims nothing for it"
fi

cli_done
