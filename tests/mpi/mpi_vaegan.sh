#!/bin/bash
# mpi_vaegan.sh MPIVAE SOURCE_DIR MPIEXEC [NUMPROC_FLAG [PREFLAGS...]]
#
# The data-parallel promises of DESIGN.md for --model vaegan, on a synthetic
# 1x8x8 set of 256 training rows (encoder 4,8, latent 2, discriminator 4,9),
# with Larsen's equilibrium rule on:
#  (a) P = 1, 2, 3 with global batch 30 for 2 epochs: /params within 1e-4 of
#      P=1's and every per-step loss within 1e-4 relative; the log line and
#      metrics.h5 carry every term; the three groups' step counts are the
#      same at every P and are what the rule gives from the logged dis_real
#      and dis_fake of each step (the encoder every step);
#  (b) exact resume: P=2 stopped at step 13 by the test hook and resumed ends
#      bit-identical to the uninterrupted P=2 run (all three optimizers'
#      moments and step counts in the checkpoint);
#  (c) the checkpoint loads strictly into the PyTorch twin (tests/pytorch/
#      vaegan_model.py), whose nine terms with every noise at zero match
#      `eval --mean`'s line;
#  (d) a NaN on one rank at step 3 skips that step on both; --disc-lr 1e-30
#      leaves the discriminator where it started while the rest moves;
#      vaegan's options are refused for other families;
#  (e) sample, reconstruct, interpolate, traverse, encode and eval --iw work;
#      anomaly is refused naming the family;
#  (f) weight averaging (--ema, on by default for vaegan): /ema within 1e-4
#      at P = 1, 2, 3 and bit-identical after the resume of (b); in (c) the
#      tools use /ema (the twin loaded from /ema matches eval --mean) and
#      --weights raw uses /params; with --ema 0.9 and a checkpoint every step
#      of (d), /ema is the bias-corrected average recomputed from each step's
#      /params (the first update copies them, the skipped step leaves it);
#      --ema 0 writes no /ema; a resume whose checkpoint lost /ema is refused.
source "$(dirname "$0")/mpilib.sh"
mpi_init "$@"
need_python_modules torch

run_ok "$M" data synth --out s.h5 --n-train 256 --n-test 64 --height 8 --width 8 --classes 4
MODEL=(--data s.h5 --model vaegan --hidden 4,8 --latent 2 --disc-hidden 4,9 --seed 5 --lr 3e-3)
CFG=(train "${MODEL[@]}" --batch 30 --epochs 2 --log-every 3 --equilibrium 0.68 --eq-margin 0.1)
STEPS=18
K=13

# --- (a) P = 1, 2, 3
for P in 1 2 3; do
    mpi_cmd "$P"
    run_ok "${MPI[@]}" "$M" "${CFG[@]}" --out "p$P"
    expect_grep "P=$P banner" "^model: vaegan channels 4,8 disc 4,9 features layer 1 gamma 1 non-saturating equilibrium" last.out
    expect_grep "P=$P: vaegan's own defaults" "^options: .* --beta 0.5 .* --disc-lr 0.0003 .* --ema 0.999 " last.out
    expect_grep "P=$P log line with every term" "llike [0-9.]* dis_real [0-9.]* dis_fake [0-9.]* gen [0-9.]* d_x [0-9.]* d_rec [0-9.]* d_prior [0-9.]*" last.out
done
for P in 2 3; do
    h5cmp params "p1/checkpoints/step-$STEPS.h5" "p$P/checkpoints/step-$STEPS.h5" 1e-4
    h5cmp ema "p1/checkpoints/step-$STEPS.h5" "p$P/checkpoints/step-$STEPS.h5" 1e-4
    h5cmp loss p1/metrics.h5 "p$P/metrics.h5" 1e-4 "$STEPS"
done
py_check "the equilibrium rule's step counts at every P" "$STEPS" <<'PYEOF'
import sys, h5py, numpy as np
steps = int(sys.argv[1])
with h5py.File("p1/metrics.h5", "r") as f:
    for c in ("recon", "kl", "llike", "dis_real", "dis_fake", "gen", "d_x", "d_rec", "d_prior"):
        if f"/train/{c}" not in f or f"/eval/{c}" not in f:
            sys.exit(f"p1/metrics.h5: expected /train/{c} and /eval/{c}")
    real, fake = f["/train/dis_real"][()], f["/train/dis_fake"][()] / 2
E, M = 0.68, 0.1
dec = dis = 0
for r, fk in zip(real, fake):
    d, g = not (r < E - M or fk < E - M), not (r > E + M or fk > E + M)
    if not d and not g:
        d = g = True
    dis += d
    dec += g
want = {"t.enc": steps, "t.dec": dec, "t.disc": dis}
if dec == steps and dis == steps:
    sys.exit("expected the rule to leave a network out of some step (change --eq-margin)")
for P in (1, 2, 3):
    with h5py.File(f"p{P}/checkpoints/step-{steps}.h5", "r") as f:
        got = {k: int(v) for k, v in f["/optimizer"].attrs.items() if k.startswith("t.")}
    if got != want:
        sys.exit(f"P={P}: expected the groups' step counts {want} (the rule on the logged terms), found {got}")
print(f"equilibrium: {want} at P = 1, 2, 3")
PYEOF

# --- (b) exact resume
mpi_cmd 2
run_status env MPIVAE_TEST_STOP_AT_STEP=$K "${MPI[@]}" "$M" "${CFG[@]}" --out hook
expect_status "P=2, MPIVAE_TEST_STOP_AT_STEP=$K" 75 "$RC" last.out
run_ok "${MPI[@]}" "$M" train --resume auto --out hook
expect_identical "P=2 vaegan: stopped at $K and resumed, against uninterrupted" \
    "hook/checkpoints/step-$STEPS.h5" "p2/checkpoints/step-$STEPS.h5"
expect_same "P=2 vaegan: the moving average after the resume" "hook/checkpoints/step-$STEPS.h5" \
    "p2/checkpoints/step-$STEPS.h5" /ema

# --- (c) the PyTorch twin
CK=p2/checkpoints/step-$STEPS.h5
run_ok "$M" eval --mean --ckpt "$CK" --data s.h5:/test/images --limit 32
expect_grep "eval of a checkpoint with /ema" "^weights: the moving average of the parameters \\(/ema, --ema 0.999\\)" last.out
grep '^eval' last.out > evalmean.txt
run_ok "$M" eval --mean --ckpt "$CK" --data s.h5:/test/images --limit 32 --weights raw
expect_no_grep "eval --weights raw" "^weights:" last.out
grep '^eval' last.out > evalraw.txt
py_check "vaegan twin strict load and the terms of $CK" "$SRC/tests/pytorch" "$CK" <<'PYEOF'
import re, sys
sys.dont_write_bytecode = True
sys.path.insert(0, sys.argv[1])
import h5py, numpy as np, torch
from vaegan_model import VAEGAN, TERMS
ck = sys.argv[2]
def s(v):
    return v.decode() if isinstance(v, bytes) else str(v)
with h5py.File("s.h5", "r") as f:
    x = torch.from_numpy(f["/test/images"][:32].astype(np.float64).reshape(32, -1) / 255.0)
for group, evalfile in (("/ema", "evalmean.txt"), ("/params", "evalraw.txt")):
    with h5py.File(ck, "r") as f:
        a = f.attrs
        m = VAEGAN(tuple(int(v) for v in a["input_shape"]), int(a["latent"]), s(a["loss"]), [int(v) for v in a["hidden"]],
                   [int(v) for v in a["disc_hidden"]], int(a["feature_layer"]), s(a["gen_loss"]), float(a["gamma"]))
        sd = {}
        def take(name, obj):
            if isinstance(obj, h5py.Dataset):
                sd[name] = torch.from_numpy(obj[()].astype(np.float64))
        f[group].visititems(take)
    m = m.double()
    m.load_state_dict(sd, strict=True)
    with torch.no_grad():
        t = m.terms(x, torch.zeros(32, m.Z, dtype=torch.float64), torch.zeros(32, m.Z, dtype=torch.float64)).mean(1)
    line = open(evalfile).read()
    for name, v in zip(TERMS, t.tolist()):
        got = float(re.search(rf" {name}=(-?[0-9.e+-]+)", line).group(1))
        if not abs(got - v) <= 1e-4 * max(1.0, abs(v)):
            sys.exit(f"term {name}: mpivae eval --mean ({evalfile}) {got}, the twin loaded from {group} {v}")
    print(f"twin: strict load of {len(sd)} tensors of {group}; the nine terms agree with {evalfile}")
PYEOF

# --- (d) a non-finite step, --disc-lr, options of other families
MPIVAE_TEST_NAN_STEPS=3:3 run_ok "${MPI[@]}" "$M" train "${MODEL[@]}" --batch 30 --steps 6 --out nan --ema 0.9 \
    --ckpt-every 1 --keep 10
expect_grep "a non-finite step on one rank" "step 3: non-finite reconstruction loss" last.err
py_check "the non-finite step skipped on every rank, in every group" <<'PYEOF'
import sys, h5py, numpy as np
with h5py.File("nan/checkpoints/step-6.h5", "r") as f:
    t = int(f.attrs["adam_t"])
    g = {k: int(v) for k, v in f["/optimizer"].attrs.items() if k.startswith("t.")}
    bad = [n for n in f["params"] if not np.all(np.isfinite(f["params"][n][()]))]
with h5py.File("nan/metrics.h5", "r") as f:
    s = f["/train/skipped"][()].tolist()
if t != 5 or g != {"t.enc": 5, "t.dec": 5, "t.disc": 5} or bad or s != [0, 0, 1, 0, 0, 0]:
    sys.exit(f"expected adam_t 5, every group's t 5, finite parameters, skipped [0, 0, 1, 0, 0, 0]; found {t}, {g}, {bad}, {s}")
print("vaegan: step 3 skipped on both ranks and in all three groups")
PYEOF
py_check "--ema 0.9: /ema is the bias-corrected moving average of each step's /params" <<'PYEOF'
import sys, h5py, numpy as np
d, avg, worst = 0.9, None, 0.0
for step in range(1, 7):
    with h5py.File(f"nan/checkpoints/step-{step}.h5", "r") as f:
        t = int(f.attrs["adam_t"])
        p = {n: f["params"][n][()] for n in f["params"]}
        e = {n: f["ema"][n][()] for n in f["ema"]}
    if step == 1 and any(not np.array_equal(e[n], p[n]) for n in p):
        sys.exit("step 1: expected /ema equal to /params (the first update copies them)")
    if avg is not None and t == prev_t:
        if any(not np.array_equal(e[n], avg[n]) for n in p):
            sys.exit(f"step {step} (skipped, adam_t {t}): expected /ema unchanged")
    elif avg is not None:
        b = np.float32(d * (1 - d ** (t - 1)) / (1 - d ** t))
        avg = {n: b * avg[n] + (np.float32(1) - b) * p[n] for n in p}
    else:
        avg = {n: p[n].copy() for n in p}
    for n in p:
        err = float(np.max(np.abs(e[n] - avg[n]))) / max(float(np.max(np.abs(avg[n]))), 1e-30)
        worst = max(worst, err)
        if err > 1e-6:
            sys.exit(f"step {step}: /ema/{n} differs from the recomputed average by {err:.3e} of its largest value")
    if step > 1 and t > prev_t and all(np.array_equal(e[n], p[n]) for n in p):
        sys.exit(f"step {step}: /ema equals /params: nothing is averaged")
    prev_t, avg = t, e
print(f"--ema 0.9: /ema of steps 1-6 agree with the recomputed average (largest difference {worst:.2e} relative)")
PYEOF
run_ok "${MPI[@]}" "$M" train "${MODEL[@]}" --batch 30 --steps 6 --disc-lr 1e-30 --out dlr
run_ok "${MPI[@]}" "$M" train "${MODEL[@]}" --batch 30 --steps 1 --skip-threshold 1e-9 --out init --ema 0 --beta 1 \
    --disc-lr 0
expect_grep "vaegan's defaults given other values" "^options: .* --beta 1 .* --disc-lr 0 .* --ema 0 " last.out
expect_no_h5_object "--ema 0" init/checkpoints/step-1.h5 /ema
run_ok "$M" sample --ckpt init --n 4 --out init.png
expect_no_grep "sample of a checkpoint without /ema" "^weights:" last.out
cp -r nan noema
"$PY" -c 'import h5py; del h5py.File("noema/checkpoints/step-6.h5", "r+")["/ema"]'
run_status "${MPI[@]}" "$M" train --resume auto --out noema --steps 8
expect_status "a resume whose checkpoint lost /ema" 1 "$RC" last.err
expect_grep "a resume whose checkpoint lost /ema" "checkpoint '.*step-6.h5' has no group '/ema', though its run averages the parameters \\(cfg.ema 0.9\\)" last.err
py_check "--disc-lr 1e-30: the discriminator stays, the rest moves" <<'PYEOF'
import sys, h5py, numpy as np
with h5py.File("dlr/checkpoints/step-6.h5", "r") as a, h5py.File("init/checkpoints/step-1.h5", "r") as b:
    td = int(a["/optimizer"].attrs["t.disc"])
    if td < 1:
        sys.exit(f"expected the discriminator updated in some of the 6 steps (t.disc {td}), or the check says nothing")
    for n in a["params"]:
        same = np.array_equal(a["params"][n][()], b["params"][n][()])
        if n.startswith("dis") and not same:
            sys.exit(f"expected {n} unchanged by 6 updates at --disc-lr 1e-30")
        if not n.startswith("dis") and same:
            sys.exit(f"expected {n} changed by 6 updates at --lr 3e-3")
print("--disc-lr: the discriminator's own learning rate")
PYEOF
for opt in "--gamma 2" "--disc-hidden 4" "--feature-layer 1" "--gen-loss minimax" "--equilibrium 0.6" "--disc-lr 1e-3"; do
    read -r flag val <<<"$opt"
    run_status "$M" train --data s.h5 --model conv --hidden 4,8 --steps 2 --out other "$flag" "$val"
    expect_status "$flag with --model conv" 1 "$RC" last.err
    expect_grep "$flag with --model conv" "error: $flag is an option of --model vaegan, not of --model conv" last.err
done
run_status "$M" train "${MODEL[@]}" --feature-layer 3 --steps 2 --out fl3
expect_status "--feature-layer 3 of 2" 1 "$RC" last.err
expect_grep "--feature-layer 3 of 2" "error: --feature-layer 3 is not a discriminator layer \\(1\\.\\.2\\)" last.err

# --- (e) the tools
run_ok "$M" sample --ckpt "$CK" --n 10 --out X.png
run_ok "$M" reconstruct --ckpt "$CK" --n 8 --out R.png --data s.h5:/test/images
run_ok "$M" encode --ckpt "$CK" --data s.h5:/test/images --out E.h5
run_ok "$M" interpolate --ckpt "$CK" --from 0 --to 1 --out I.png --data s.h5:/test/images
run_ok "$M" traverse --ckpt "$CK" --out TR.png --dims 0,1 --steps 3
run_ok "$M" eval --iw 4 --ckpt "$CK" --data s.h5:/test/images
expect_grep "eval --iw 4" "^iw: " last.out
run_status "$M" anomaly --ckpt "$CK" --data s.h5:/test/images --out A.h5
expect_status "anomaly on a vaegan" 1 "$RC" last.err
expect_grep "anomaly on a vaegan" "does not work on model family 'vaegan'" last.err
py_check "vaegan tools' outputs" <<'PYEOF'
import sys, h5py, numpy as np
for f, d, shape in (("X.h5", "/samples", (10, 1, 8, 8)), ("E.h5", "/mu", (64, 2))):
    with h5py.File(f, "r") as h:
        v = h[d][()]
    if v.shape != shape or not np.all(np.isfinite(v)):
        sys.exit(f"{f}:{d}: expected finite values of shape {shape}, found {v.shape}")
print("vaegan: sample, reconstruct, encode, interpolate, traverse, eval --iw")
PYEOF
cli_done
