#!/usr/bin/python3
"""Write tests/fixtures/hvae_fixture.h5: reference values and float64 gradients of the hierarchical
VAE's PyTorch twin (tests/pytorch/hvae_model.py) for tests/test_hvae.c, after checking the twin's
own gradients against finite differences in float64 (torch.autograd.gradcheck).

    /usr/bin/python3 tests/pytorch/make_fixture_hvae.py [OUT.h5]

One group per case: attrs C, H, W, B (int64), hidden, groups (int64 [n]), latent (int64),
loss, posterior (strings), beta (float64); params/<name> float32 (the model's names and shapes),
x float32 [B, D], eps float32 [B, Z] (groups top first, [H, W, Zc] order), logits float64 [B, D],
expected_recon float64, expected_kl float64 [K] (batch means), logw float64 [B] (log importance
weights with eps), grads/<name> float64 (of expected_recon + beta * sum(expected_kl)).
"""

import os
import sys

import numpy as np
import torch
from torch.nn.utils.stateless import functional_call

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hvae_model import HVAE  # noqa: E402
from make_fixture_mlp import dset, fixture_file, group  # noqa: E402

CASES = [
    # name, (C, H, W), hidden, groups, latent, B, loss, posterior, beta, seed
    ("residual", (1, 8, 8), [3, 4], [1, 1], 2, 2, "bce", "residual", 1.0, 3001),
    ("merge", (2, 7, 7), [3, 4, 5], [1, 0, 2], 2, 2, "mse", "merge", 0.5, 3002),
    ("wide", (1, 6, 6), [8, 9], [1, 2], 3, 2, "bce", "residual", 1.0, 3003),
]


def randomize(model, seed):
    """Default init leaves h0 at zero; give every tensor values so every gradient is exercised."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.15 * torch.randn(p.shape, generator=g, dtype=p.dtype))


def make_case(f, name, shape, hidden, groups, latent, B, loss, posterior, beta, seed):
    torch.manual_seed(seed)
    m32 = HVAE(shape, hidden, groups, latent, loss, posterior)
    randomize(m32, seed)
    D = shape[0] * shape[1] * shape[2]
    Z = sum(m32.latent_dims())
    x = torch.rand(B, D) if loss == "bce" else torch.randn(B, D)
    eps = torch.randn(B, Z)
    m = HVAE(shape, hidden, groups, latent, loss, posterior).double()
    m.load_state_dict({k: v.double() for k, v in m32.state_dict().items()}, strict=True)

    # The loss as a function of every parameter, for gradcheck's float64 finite differences.
    names = [n for n, _ in m.named_parameters()]

    def objective(*params):
        r, kl, _ = functional_call(m, dict(zip(names, params)), (x.double(), eps.double()))
        return r.mean() + beta * kl.sum(0).mean()

    m.forward = m.terms  # functional_call calls forward
    params = tuple(p.detach().clone().requires_grad_(True) for _, p in m.named_parameters())
    ok = torch.autograd.gradcheck(objective, params, eps=1e-6, atol=1e-6, rtol=1e-5)
    assert ok, name
    m.zero_grad()
    r, kl, logits = m.terms(x.double(), eps.double())
    rm, klm = r.mean(), kl.mean(1)
    loss_m = rm + beta * klm.sum()
    loss_m.backward()
    with torch.no_grad():
        logw = m.log_weights(x.double(), eps.double())
    g = group(f, name)
    for k, v in (("C", shape[0]), ("H", shape[1]), ("W", shape[2]), ("B", B), ("latent", latent)):
        g.attrs[k] = np.int64(v)
    g.attrs["hidden"] = np.asarray(hidden, dtype=np.int64)
    g.attrs["groups"] = np.asarray(groups, dtype=np.int64)
    g.attrs["loss"] = np.bytes_(loss)
    g.attrs["posterior"] = np.bytes_(posterior)
    g.attrs["beta"] = np.float64(beta)
    gp, gg = group(g, "params"), group(g, "grads")
    for n, p in m32.state_dict().items():
        dset(gp, n, p.numpy().astype(np.float32))
    for n, p in m.named_parameters():
        dset(gg, n, p.grad.detach().numpy().astype(np.float64))
    dset(g, "x", x.numpy().astype(np.float32))
    dset(g, "eps", eps.numpy().astype(np.float32))
    dset(g, "logits", logits.detach().numpy())
    dset(g, "expected_recon", np.float64(rm.item()))
    dset(g, "expected_kl", klm.detach().numpy())
    dset(g, "logw", logw.numpy())
    return loss_m.item(), rm.item(), klm.tolist()


def main():
    with fixture_file("hvae_fixture.h5", "mpivae hvae reference values from tests/pytorch/make_fixture_hvae.py") as f:
        for case in CASES:
            l, r, k = make_case(f, *case)
            print(f"{case[0]}: loss={l:.12g} recon={r:.12g} kl={k} (gradcheck in float64 passed)")


if __name__ == "__main__":
    main()
