#!/usr/bin/python3
"""Check an mpivae checkpoint against PyTorch.

    /usr/bin/python3 tests/pytorch/check_checkpoint.py CKPT DATA_H5 DATASET N EXPECTED_LOSS

Loads CKPT with vae_model.load_checkpoint (strict load_state_dict), reads the first N rows of
DATASET in DATA_H5 (uint8 scaled by 1/255, float as is; flattened to [N, D]), and computes the
mean per-sample loss recon + beta*kl with z = mu (no sampling) in float64 and float32.
Exit 0 iff |loss64 - EXPECTED_LOSS| <= 1e-4 * max(1, |EXPECTED_LOSS|); 1 on mismatch;
2 when the checkpoint or data cannot be loaded (with a message naming the file).

Run with Debian's /usr/bin/python3 (python3-torch, python3-h5py).
"""

import os
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def fail(msg, code=2):
    print(f"check_checkpoint: {msg}", file=sys.stderr)
    sys.exit(code)


def main(argv):
    if len(argv) != 6:
        fail("usage: check_checkpoint.py CKPT DATA_H5 DATASET N EXPECTED_LOSS")
    ckpt, data, dset, n, expected = argv[1:]
    try:
        n = int(n)
        expected = float(expected)
    except ValueError as e:
        fail(f"bad N or EXPECTED_LOSS: {e}")
    if n <= 0:
        fail(f"N must be positive, got {n}")

    try:
        import h5py
        import numpy as np
        import torch
        from vae_model import load_checkpoint, loss_terms
    except ImportError as e:
        fail(f"cannot import torch/h5py ({e}); run with /usr/bin/python3")

    try:
        model = load_checkpoint(ckpt)
    except Exception as e:  # noqa: BLE001 - any failure is reported the same way
        fail(f"cannot load checkpoint {ckpt}: {type(e).__name__}: {e}")

    try:
        with h5py.File(data, "r") as f:
            if dset not in f:
                raise KeyError(f"no dataset {dset}")
            ds = f[dset]
            if not isinstance(ds, h5py.Dataset):
                raise TypeError(f"{dset} is not a dataset")
            if ds.shape[0] < n:
                raise ValueError(f"{dset} has {ds.shape[0]} rows, {n} requested")
            raw = ds[:n]
    except Exception as e:  # noqa: BLE001
        fail(f"cannot read {data}:{dset}: {type(e).__name__}: {e}")

    if raw.dtype == np.uint8:
        x = raw.astype(np.float64) / 255.0
    elif raw.dtype.kind == "f":
        x = raw.astype(np.float64)
    else:
        fail(f"{data}:{dset}: unsupported dtype {raw.dtype}")
    x = x.reshape(n, -1)
    if x.shape[1] != model.D:
        fail(f"{data}:{dset}: {x.shape[1]} values per sample, checkpoint model expects {model.D}")

    beta = model.beta
    with torch.no_grad():
        l32, r32, k32 = loss_terms(model.float(), torch.from_numpy(x.astype(np.float32)),
                                   use_mean=True, beta=beta)
        m64 = model.double()
        l64, r64, k64 = loss_terms(m64, torch.from_numpy(x), use_mean=True, beta=beta)
    l64, l32 = l64.item(), l32.item()
    tol = 1e-4 * max(1.0, abs(expected))
    diff = abs(l64 - expected)
    print(f"model={model.cfg.get('model')} loss={model.cfg.get('loss')} beta={beta} n={n}")
    print(f"float64: loss={l64:.10g} recon={r64.item():.10g} kl={k64.item():.10g}")
    print(f"float32: loss={l32:.10g} recon={r32.item():.10g} kl={k32.item():.10g}")
    print(f"expected: loss={expected:.10g}  |diff|={diff:.3g} tol={tol:.3g}")
    if diff <= tol:
        print("OK")
        return 0
    print("MISMATCH", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
