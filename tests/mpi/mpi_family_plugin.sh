#!/bin/bash
# mpi_family_plugin.sh MPIVAE_LINGAUSS SOURCE_DIR MPIEXEC [NUMPROC_FLAG [PREFLAGS...]]
#
# A model family defined in tests/ (family_lingauss.c: a linear Gaussian VAE
# with the terms recon, kl and zvar, a STAT term, and two parameter groups,
# enc and dec) plugs in with no change to any file outside its own. The
# program is the command line with that family registered.
#  - train --help lists it; on synthetic 8x8 data, 3 epochs at batch 30:
#    the loss falls; the log and eval lines show the three terms; metrics.h5
#    has /train and /eval columns recon, kl, zvar, and loss = recon + kl
#    (beta 1: the STAT term is not in the loss) on every row;
#  - the checkpoint holds both groups' step counts: t.dec = 30, and t.enc
#    fewer (the family's select_groups leaves the encoder out of the steps
#    whose reconstruction term per sample is above 45), equal to the steps
#    whose logged recon is at most 45;
#  - 2 ranks agree with 1 within 1e-4 of each tensor's largest magnitude;
#  - a run stopped at step 13 (test hook) and resumed ends bit-identical to
#    an uninterrupted one, at 2 ranks; a resume with --model mlp is refused;
#  - eval, sample, reconstruct and encode work on its checkpoint (eval --iw
#    is refused: the family has no importance weights); interpolate,
#    traverse and anomaly, which it does not serve, are refused with a
#    message naming the tool and the family.
source "$(dirname "$0")/mpilib.sh"
mpi_init "$@"

run_ok "$M" train --help
grep -q "lingauss" last.out || fail "expected 'train --help' to list the family lingauss, found: $(grep -A3 -- --model last.out)"
run_ok "$M" data synth --out s.h5 --n-train 300 --n-test 100 --height 8 --width 8 --classes 4
CFG=(train --data s.h5 --model lingauss --latent 3 --batch 30 --epochs 3 --lr 1e-2 --seed 4 --log-every 5 --eval-every 10)

mpi_cmd 1
run_ok "${MPI[@]}" "$M" "${CFG[@]}" --out p1
CK=p1/checkpoints/step-30.h5
expect_file "$CK"
expect_grep "the banner" "^model: lingauss \(linear Gaussian\) latent 3," last.out
expect_grep "the log line" "^step 30/30 epoch 3 loss [0-9.]+ recon [0-9.]+ kl [0-9.]+ zvar [0-9.]+ beta 1 " last.out
expect_grep "the eval line" "^eval step 30: test loss [0-9.]+ recon [0-9.]+ kl [0-9.]+ zvar [0-9.]+ " last.out
py_check "metrics and checkpoint of the test family" p1/metrics.h5 "$CK" <<'PY'
import sys, h5py, numpy as np
m, c = h5py.File(sys.argv[1], "r"), h5py.File(sys.argv[2], "r")
for g in ("train", "eval"):
    for k in ("loss", "recon", "kl", "zvar", "step"):
        if k not in m[g]:
            sys.exit(f"metrics.h5: expected /{g}/{k}, found {sorted(m[g])}")
t = m["train"]
loss, recon, kl, zvar = (t[k][()] for k in ("loss", "recon", "kl", "zvar"))
if len(loss) != 30:
    sys.exit(f"expected 30 train rows, found {len(loss)}")
if not np.allclose(loss, recon + kl, rtol=1e-12, atol=0):
    sys.exit(f"loss != recon + kl: largest difference {np.abs(loss - recon - kl).max()}")
if np.allclose(loss, recon + kl + zvar):
    sys.exit("zvar looks included in the loss")
if not loss[-5:].mean() < 0.9 * loss[:5].mean():
    sys.exit(f"the loss did not fall: first 5 steps {loss[:5].mean():.3f}, last 5 {loss[-5:].mean():.3f}")
o = c["optimizer"].attrs
groups = o["groups"].decode() if isinstance(o["groups"], bytes) else o["groups"]
want_enc = int((recon <= 45.0).sum())
if groups != "enc,dec" or int(o["t.enc"]) != want_enc or int(o["t.dec"]) != 30 or not 0 < want_enc < 30:
    sys.exit(f"expected groups enc,dec with t.enc {want_enc} (0 < t.enc < 30) and t.dec 30, found {groups}, "
             f"{o.get('t.enc')}, {o.get('t.dec')}")
print(f"loss {loss[:5].mean():.2f} -> {loss[-5:].mean():.2f}; zvar {zvar[0]:.3f} -> {zvar[-1]:.3f}; groups {groups}, "
      f"t.enc {want_enc}, t.dec 30")
PY

mpi_cmd 2
run_ok "${MPI[@]}" "$M" "${CFG[@]}" --out p2
h5cmp params "$CK" p2/checkpoints/step-30.h5 1e-4
run_status env MPIVAE_TEST_STOP_AT_STEP=13 "${MPI[@]}" "$M" "${CFG[@]}" --out stop2
expect_status "stopped at step 13" 75 "$RC" last.out
run_ok "${MPI[@]}" "$M" train --resume auto --out stop2
expect_grep "the resume" "resumed from stop2/checkpoints/step-13.h5 at step 13" last.out
expect_identical "stopped at 13 and resumed, against uninterrupted (2 ranks)" stop2/checkpoints/step-30.h5 p2/checkpoints/step-30.h5
expect_fail_with 1 "--model mlp differs from the checkpoint" -- "${MPI[@]}" "$M" train --resume auto --model mlp --out stop2

run_ok "${MPI[@]}" "$M" eval --ckpt "$CK" --data s.h5:/test/images
expect_grep "eval" "^eval: loss=[0-9.]+ recon=[0-9.]+ kl=[0-9.]+ zvar=[0-9.]+ rows=100 " last.out
run_ok "$M" sample --ckpt "$CK" --n 8 --out smp.png
expect_png smp.png 82 12
run_ok "$M" reconstruct --ckpt "$CK" --data s.h5:/test/images --n 8 --out rec.png
expect_file rec.h5
run_ok "${MPI[@]}" "$M" encode --ckpt "$CK" --data s.h5:/test/images --out z.h5
py_check "encode" z.h5 <<'PY'
import sys, h5py
f = h5py.File(sys.argv[1], "r")
if f["mu"].shape != (100, 3) or f["logvar"].shape != (100, 3):
    sys.exit(f"expected /mu and /logvar (100, 3), found {f['mu'].shape}, {f['logvar'].shape}")
PY
expect_fail_with 1 "model family 'lingauss' has no importance weights" -- "$M" eval --ckpt "$CK" --data s.h5:/test/images --iw 4
expect_fail_with 1 "mpivae interpolate does not work on model family 'lingauss'" -- \
    "$M" interpolate --ckpt "$CK" --data s.h5:/test/images --from 0 --to 1 --out i.png
expect_fail_with 1 "mpivae traverse does not work on model family 'lingauss'" -- \
    "$M" traverse --ckpt "$CK" --data s.h5:/test/images --out t.png
expect_fail_with 1 "mpivae anomaly does not work on model family 'lingauss'" -- \
    "$M" anomaly --ckpt "$CK" --data s.h5:/test/images --out a.h5
[ ! -e i.png ] && [ ! -e t.png ] && [ ! -e a.h5 ] || fail "a refused tool wrote an output"
cli_done
