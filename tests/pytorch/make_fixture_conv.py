#!/usr/bin/python3
"""Write tests/fixtures/conv_fixture.h5: reference forward values and float64 gradients of the
convolutional VAE (tests/pytorch/vae_model.py, ConvVAE) for the C implementation's tests
(tests/test_conv_model.c).

Run with Debian's /usr/bin/python3 (python3-torch, python3-h5py):
    /usr/bin/python3 tests/pytorch/make_fixture_conv.py [OUT.h5]

Layout, one group per case (/bce, /mse, /one, /wide):
  attrs   C, H, W (int64), channels (int64 [n], the conv layers' channels = --hidden), Z (int64),
          B (int64), loss (fixed-length ASCII string), beta (float64), seed (int64)
  params/<name>   float32, PyTorch layout (Conv2d weight [out,in,k,k], ConvTranspose2d weight
                  [in,out,k,k], Linear weight [out,in], bias [out]); names enc.0, enc.2, ...,
                  fc_mu, fc_logvar, fc_dec, dec.0, dec.2, ...
  x               float32 [B, C*H*W]   (PyTorch's flattening of [B,C,H,W]; in [0,1] for bce,
                                        standard normal for mse)
  eps             float32 [B,Z]        reparameterisation noise, z = mu + exp(0.5*logvar)*eps
  mu, logvar      float64 [B,Z]
  recon_logits    float64 [B, C*H*W]   decoder output (last ConvTranspose2d), before any sigmoid
  expected_loss, expected_recon, expected_kl   float64 scalars, batch means
  grads/<name>    float64, same shapes as params, gradient of expected_loss
All float64 values are computed in float64 from the float32 params, x and eps cast to float64.
The file is deterministic (fixed seeds, no HDF5 timestamps).
"""

import os
import sys

import numpy as np
import torch

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_fixture_mlp import dset, fixture_file, group  # noqa: E402
from vae_model import ConvVAE, per_sample_terms  # noqa: E402

CASES = [
    # name, (C, H, W),  channels, Z, B, loss,  beta, seed
    ("bce", (1, 8, 8), [4, 6], 3, 3, "bce", 1.0, 2001),
    ("mse", (2, 8, 12), [3, 5], 2, 2, "mse", 0.5, 2002),
    ("one", (1, 4, 4), [3], 2, 2, "bce", 2.0, 2003),
    # 8 and 9 channels: the C side's patch-major lowering and channels-last activations
    ("wide", (1, 8, 8), [8, 9], 3, 2, "bce", 1.0, 2004),
]


def make_case(f, name, shape, channels, Z, B, loss, beta, seed):
    torch.manual_seed(seed)
    C, H, W = shape
    D = C * H * W
    model32 = ConvVAE(shape, Z, loss, channels)  # default PyTorch init, float32
    if loss == "bce":
        x = torch.rand(B, D, dtype=torch.float32)
    else:
        x = torch.randn(B, D, dtype=torch.float32)
    eps = torch.randn(B, Z, dtype=torch.float32)

    model = ConvVAE(shape, Z, loss, channels).double()
    model.load_state_dict({k: v.double() for k, v in model32.state_dict().items()}, strict=True)
    model.zero_grad()
    recon, kl, logits, mu, logvar = per_sample_terms(model, x.double(), eps=eps.double())
    recon_m, kl_m = recon.mean(), kl.mean()
    loss_m = recon_m + beta * kl_m
    loss_m.backward()

    g = group(f, name)
    g.attrs["C"] = np.int64(C)
    g.attrs["H"] = np.int64(H)
    g.attrs["W"] = np.int64(W)
    g.attrs["channels"] = np.asarray(channels, dtype=np.int64)
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
    with fixture_file("conv_fixture.h5", "mpivae convolutional VAE reference values from tests/pytorch/make_fixture_conv.py") as f:
        for case in CASES:
            l, r, k = make_case(f, *case)
            print(f"{case[0]}: loss={l:.12g} recon={r:.12g} kl={k:.12g}")


if __name__ == "__main__":
    main()
