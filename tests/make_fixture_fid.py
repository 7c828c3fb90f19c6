#!/usr/bin/python3
"""Writes tests/fixtures/fid_fixture.h5, the reference values of tests/test_fid.c.

The Frechet distance of the standard FID code (Heusel et al. 2017, pytorch-fid's
calculate_frechet_distance):

    FID = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr(scipy.linalg.sqrtm(S1 @ S2))

for fixed random inputs (numpy's default_rng(19)). Groups:
  /noncommuting5, /noncommuting32: S = A A^T / F + 0.01 I with A standard normal
      [F, F]: non-commuting covariances of full rank;
  /singular8: S1 = B B^T of rank 3 (B [8, 3]), S2 of full rank: a covariance
      of fewer rows than features; the attribute exact is the same distance
      through tr((S1 S2)^1/2) = sum sqrt(eig(B^T S2 B)), a well-conditioned
      3 x 3 problem (sqrtm of the singular product is accurate to ~1e-9 only);
  /gauss: F = 4, S = L L^T with L lower triangular, and 'sd', the standard
      deviation of the FID of the statistics of n = 50000 Gaussian samples per
      set, from 400 simulated draws (the test's tolerance is 5 sd).
Each group holds mu1, S1, mu2, S2 (float64) and the attribute fid; /gauss also
L1, L2, n, sd and bias (the simulated mean minus fid).

Run from the repository root: /usr/bin/python3 tests/make_fixture_fid.py
(needs python3-numpy, python3-scipy, python3-h5py).
"""
import os
import sys

import h5py
import numpy as np
import scipy.linalg


def fid(mu1, s1, mu2, s2):
    covmean, _ = scipy.linalg.sqrtm(s1 @ s2, disp=False)
    covmean = covmean.real
    d = mu1 - mu2
    return float(d @ d + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean))


def stats_fid(x1, x2):
    return fid(x1.mean(0), np.cov(x1, rowvar=False), x2.mean(0), np.cov(x2, rowvar=False))


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "fixtures", "fid_fixture.h5")
    rng = np.random.default_rng(19)
    cases = {}
    for F in (5, 32):
        a, b = rng.standard_normal((F, F)), rng.standard_normal((F, F))
        s1, s2 = a @ a.T / F + 0.01 * np.eye(F), b @ b.T / F + 0.01 * np.eye(F)
        cases[f"noncommuting{F}"] = (rng.standard_normal(F), s1, rng.standard_normal(F) * 0.5, s2)
    b = rng.standard_normal((8, 3))
    a = rng.standard_normal((8, 8))
    cases["singular8"] = (rng.standard_normal(8), b @ b.T, rng.standard_normal(8), a @ a.T / 8)
    with h5py.File(out, "w") as f:
        for name, (mu1, s1, mu2, s2) in cases.items():
            g = f.create_group(name)
            for k, v in (("mu1", mu1), ("S1", s1), ("mu2", mu2), ("S2", s2)):
                g[k] = np.asarray(v, dtype=np.float64)
            g.attrs["fid"] = fid(mu1, s1, mu2, s2)
            print(f"{name}: fid {g.attrs['fid']:.12g}")
        g = f["singular8"]
        mu1, s1, mu2, s2 = cases["singular8"]
        d = mu1 - mu2
        tr = np.sqrt(np.linalg.eigvalsh(b.T @ s2 @ b)).sum()
        g.attrs["exact"] = float(d @ d + np.trace(s1) + np.trace(s2) - 2.0 * tr)
        print(f"singular8: exact {g.attrs['exact']:.12g}")
        F, n = 4, 50000
        l1 = np.tril(rng.uniform(-1, 1, (F, F))) + np.diag([1.0, 0.8, 0.6, 0.4])
        l2 = np.tril(rng.uniform(-1, 1, (F, F))) + np.diag([0.5, 0.9, 0.7, 1.1])
        mu1, mu2 = np.array([0.5, -0.2, 0.1, 0.0]), np.array([0.3, 0.1, -0.2, 0.4])
        s1, s2 = l1 @ l1.T, l2 @ l2.T
        exact = fid(mu1, s1, mu2, s2)
        sims = []
        for _ in range(400):
            x1 = mu1 + rng.standard_normal((n, F)) @ l1.T
            x2 = mu2 + rng.standard_normal((n, F)) @ l2.T
            sims.append(stats_fid(x1, x2))
        g = f.create_group("gauss")
        for k, v in (("mu1", mu1), ("S1", s1), ("mu2", mu2), ("S2", s2), ("L1", l1), ("L2", l2)):
            g[k] = np.asarray(v, dtype=np.float64)
        g.attrs["fid"] = exact
        g.attrs["n"] = n
        g.attrs["sd"] = float(np.std(sims))
        g.attrs["bias"] = float(np.mean(sims) - exact)
        print(f"gauss: fid {exact:.12g}, n {n}: sd {np.std(sims):.3g}, bias {np.mean(sims) - exact:.3g}")


if __name__ == "__main__":
    main()
