#!/usr/bin/python3
"""h5cmp.py: numeric comparisons of mpivae outputs for the MPI tests.

  h5cmp.py params REF.h5 OTHER.h5 TOL
      Every /params/<name> of OTHER is within TOL * max|REF tensor| of REF's,
      element by element (same names, same shapes). Prints the largest
      difference seen, absolute and relative to the tensor's largest magnitude.
  h5cmp.py ema REF.h5 OTHER.h5 TOL
      The same for /ema/<name>, the parameters' moving average (--ema).
  h5cmp.py loss REF_METRICS.h5 OTHER_METRICS.h5 TOL [ROWS]
      /train/loss of both have the same length (one row per step; ROWS when
      given), the same
      /train/step column, and agree within TOL relative, row by row. Prints
      the largest relative difference and the step where it is.

Exit status 0 when the check holds, 1 (with the reason) when it does not.
"""
import sys

import h5py
import numpy as np


def fail(msg):
    print("FAIL: " + msg)
    sys.exit(1)


def params(ref, other, tol, g="params"):
    with h5py.File(ref, "r") as a, h5py.File(other, "r") as b:
        if g not in a or g not in b:
            fail(f"expected /{g} in both '{ref}' and '{other}'")
        na, nb = sorted(a[g].keys()), sorted(b[g].keys())
        if na != nb:
            fail(f"/{g} names differ: {na} in '{ref}', {nb} in '{other}'")
        if not na:
            fail(f"'{ref}' has an empty /{g}")
        worst_rel, worst_abs, worst_name = -1.0, 0.0, ""
        bad = []
        for n in na:
            x = a[g][n][()].astype(np.float64)
            y = b[g][n][()].astype(np.float64)
            if x.shape != y.shape:
                fail(f"/{g}/{n}: shape {x.shape} in '{ref}', {y.shape} in '{other}'")
            if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
                fail(f"/{g}/{n}: non-finite values")
            scale = float(np.max(np.abs(x))) if x.size else 0.0
            d = float(np.max(np.abs(x - y))) if x.size else 0.0
            rel = d / scale if scale > 0 else (0.0 if d == 0 else float("inf"))
            if rel > worst_rel:
                worst_rel, worst_abs, worst_name = rel, d, n
            if rel > tol:
                bad.append(f"{n}: max |diff| {d:.3e} = {rel:.3e} of max |ref| {scale:.3e}")
        print(f"{g} {other} vs {ref}: largest difference {worst_abs:.3e} "
              f"({worst_rel:.3e} of the tensor's max magnitude) in /{g}/{worst_name}; tolerance {tol:g}")
        if bad:
            fail("tensors beyond the tolerance: " + "; ".join(bad))


def loss(ref, other, tol, rows=None):
    with h5py.File(ref, "r") as a, h5py.File(other, "r") as b:
        for f, name in ((a, ref), (b, other)):
            for k in ("train/loss", "train/step"):
                if k not in f:
                    fail(f"expected /{k} in '{name}'")
        la, lb = a["train/loss"][()], b["train/loss"][()]
        sa, sb = a["train/step"][()], b["train/step"][()]
    if len(la) != len(lb):
        fail(f"/train/loss has {len(la)} rows in '{ref}', {len(lb)} in '{other}' (expected one per step in both)")
    if rows is not None and len(la) != rows:
        fail(f"/train/loss has {len(la)} rows in both files, expected {rows} (one per step)")
    if len(la) == 0:
        fail(f"/train/loss of '{ref}' is empty")
    if not np.array_equal(sa, sb):
        fail(f"/train/step differs between '{ref}' and '{other}'")
    if not np.array_equal(sa, np.arange(1, len(sa) + 1)):
        fail(f"/train/step of '{ref}' is not 1..{len(sa)}: {sa[:10]}...")
    if not (np.all(np.isfinite(la)) and np.all(np.isfinite(lb))):
        fail("non-finite losses")
    rel = np.abs(la - lb) / np.maximum(np.abs(la), 1e-30)
    i = int(np.argmax(rel))
    print(f"loss {other} vs {ref}: {len(la)} steps, largest relative difference {rel[i]:.3e} "
          f"at step {int(sa[i])} ({la[i]:.6f} vs {lb[i]:.6f}); tolerance {tol:g}")
    if rel[i] > tol:
        fail(f"{int(np.sum(rel > tol))} steps differ by more than {tol:g} relative")


def main():
    if len(sys.argv) not in (5, 6) or sys.argv[1] not in ("params", "ema", "loss") or \
            (len(sys.argv) == 6 and sys.argv[1] != "loss"):
        print(__doc__)
        sys.exit(2)
    what, ref, other, tol = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    if what in ("params", "ema"):
        params(ref, other, tol, what)
    else:
        loss(ref, other, tol, int(sys.argv[5]) if len(sys.argv) == 6 else None)


if __name__ == "__main__":
    main()
