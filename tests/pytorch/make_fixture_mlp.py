#!/usr/bin/python3
"""Write tests/fixtures/mlp_fixture.h5: reference forward values and float64 gradients of the
MLP VAE (tests/pytorch/vae_model.py) for the C implementation's tests.

Run with Debian's /usr/bin/python3 (python3-torch, python3-h5py):
    /usr/bin/python3 tests/pytorch/make_fixture_mlp.py [OUT.h5]

Layout, one group per case (/bce, /mse, /deep):
  attrs   D (int64), hidden (int64 [k]), Z (int64), B (int64), loss (fixed-length ASCII string),
          beta (float64), seed (int64)
  params/<name>   float32, PyTorch layout (Linear weight [out,in], bias [out])
  x               float32 [B,D]   (in [0,1] for bce, standard normal for mse)
  eps             float32 [B,Z]   reparameterisation noise, z = mu + exp(0.5*logvar)*eps
  mu, logvar      float64 [B,Z]
  recon_logits    float64 [B,D]   decoder output (fc4) before any sigmoid
  expected_loss, expected_recon, expected_kl   float64 scalars, batch means
  grads/<name>    float64, same shapes as params, gradient of expected_loss
All float64 values are computed in float64 from the float32 params, x and eps cast to float64.
The file is deterministic (fixed seeds, no HDF5 timestamps).
"""

import contextlib
import ctypes
import os
import sys

import h5py
import numpy as np
import torch

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from vae_model import MLPVAE, per_sample_terms  # noqa: E402

CASES = [
    # name,  D,  hidden, Z, B, loss,  beta, seed
    ("bce", 12, [7], 3, 5, "bce", 1.0, 1001),
    ("mse", 12, [7], 3, 5, "mse", 0.5, 1002),
    ("deep", 10, [8, 6], 4, 3, "bce", 2.0, 1003),
]


def _hdf5_lib():
    """The libhdf5 h5py already loaded (same handle), for H5Pset_dset_no_attrs_hint, which h5py
    does not wrap. Optional: without it the file is just larger (HDF5 reserves 256 header bytes
    per dataset for attributes)."""
    try:
        with open("/proc/self/maps") as m:
            paths = sorted({ln.split()[-1] for ln in m if "libhdf5" in ln and "_hl" not in ln
                            and ln.split()[-1].startswith("/")})
        lib = ctypes.CDLL(paths[0])
        lib.H5Pset_dset_no_attrs_hint.argtypes = [ctypes.c_int64, ctypes.c_uint]
        return lib
    except (OSError, IndexError, AttributeError):
        return None


_LIB = _hdf5_lib()


def dset(g, name, data):
    # compact layout (data inside the object header), minimal object header, no timestamps:
    # keeps the file small and byte-reproducible; readers see an ordinary dataset
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_layout(h5py.h5d.COMPACT)
    if _LIB is not None:
        _LIB.H5Pset_dset_no_attrs_hint(dcpl.id, 1)
    return g.create_dataset(name, data=data, track_times=False, dcpl=dcpl)


def group(parent, name):
    # no timestamps in the group's object header (byte-reproducible file)
    gcpl = h5py.h5p.create(h5py.h5p.GROUP_CREATE)
    gcpl.set_obj_track_times(False)
    h5py.h5g.create(parent.id, name.encode(), gcpl=gcpl)
    return parent[name]


@contextlib.contextmanager
def fixture_file(name, description):
    """The fixture file sys.argv[1], or tests/fixtures/NAME: written as NAME.tmp, renamed when the
    block ends. v1.8 file format (compact groups, small object headers; readable by HDF5 >= 1.8),
    the root group without timestamps, so that the file is byte-reproducible."""
    here = os.path.dirname(os.path.abspath(__file__))
    out = os.path.normpath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "..", "fixtures", name))
    os.makedirs(os.path.dirname(out), exist_ok=True)
    tmp = out + ".tmp"
    fcpl = h5py.h5p.create(h5py.h5p.FILE_CREATE)
    fcpl.set_obj_track_times(False)
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    fapl.set_libver_bounds(h5py.h5f.LIBVER_V18, h5py.h5f.LIBVER_V18)
    fid = h5py.h5f.create(tmp.encode(), h5py.h5f.ACC_TRUNC, fcpl=fcpl, fapl=fapl)
    with h5py.File(fid) as f:
        f.attrs["description"] = np.bytes_(description)
        yield f
    os.replace(tmp, out)
    print(f"wrote {out} ({os.path.getsize(out)} bytes)")


def make_case(f, name, D, hidden, Z, B, loss, beta, seed):
    torch.manual_seed(seed)
    model32 = MLPVAE(D, hidden, Z, loss)  # default nn.Linear init, float32
    if loss == "bce":
        x = torch.rand(B, D, dtype=torch.float32)
    else:
        x = torch.randn(B, D, dtype=torch.float32)
    eps = torch.randn(B, Z, dtype=torch.float32)

    model = MLPVAE(D, hidden, Z, loss).double()
    model.load_state_dict({k: v.double() for k, v in model32.state_dict().items()}, strict=True)
    model.zero_grad()
    recon, kl, logits, mu, logvar = per_sample_terms(model, x.double(), eps=eps.double())
    recon_m, kl_m = recon.mean(), kl.mean()
    loss_m = recon_m + beta * kl_m
    loss_m.backward()

    g = group(f, name)
    g.attrs["D"] = np.int64(D)
    g.attrs["hidden"] = np.asarray(hidden, dtype=np.int64)
    g.attrs["Z"] = np.int64(Z)
    g.attrs["B"] = np.int64(B)
    g.attrs["loss"] = np.bytes_(loss)
    g.attrs["beta"] = np.float64(beta)
    g.attrs["seed"] = np.int64(seed)
    gp = group(g, "params")
    gg = group(g, "grads")
    for pname, p in model32.state_dict().items():
        dset(gp, pname, p.numpy().astype(np.float32))
    for pname, p in model.named_parameters():
        dset(gg, pname, p.grad.detach().numpy().astype(np.float64))
    dset(g, "x", x.numpy())
    dset(g, "eps", eps.numpy())
    dset(g, "mu", mu.detach().numpy())
    dset(g, "logvar", logvar.detach().numpy())
    dset(g, "recon_logits", logits.detach().numpy())
    dset(g, "expected_loss", np.float64(loss_m.item()))
    dset(g, "expected_recon", np.float64(recon_m.item()))
    dset(g, "expected_kl", np.float64(kl_m.item()))
    return loss_m.item(), recon_m.item(), kl_m.item()


def main():
    with fixture_file("mlp_fixture.h5", "mpivae MLP VAE reference values from tests/pytorch/make_fixture_mlp.py") as f:
        for case in CASES:
            l, r, k = make_case(f, *case)
            print(f"{case[0]}: loss={l:.12g} recon={r:.12g} kl={k:.12g}")


if __name__ == "__main__":
    main()
