#!/usr/bin/python3
"""Write tests/fixtures/vaegan_fixture.h5: the VAE-GAN twin's (tests/pytorch/vaegan_model.py) terms
and the gradient of each parameter group's own objective, in float64, for tests/test_vaegan.c,
after checking each group's gradient against float64 finite differences (torch.autograd.gradcheck).

    /usr/bin/python3 tests/pytorch/make_fixture_vaegan.py [OUT.h5]

One group per case: attrs C, H, W, B, latent, feature_layer (int64), hidden, disc (int64 [n]),
loss, gen_loss (strings), beta, gamma (float64); params/<name> float32, x float32 [B, D],
eps float32 [B, 2Z] (each row: the reparameterisation's Z values, then z_p's Z), terms float64
[9] (batch means, vaegan_model.TERMS order), grads/<name> float64: enc's of beta kl + llike,
dec's of gamma llike + gen, disc's of dis_real + dis_fake; leak/<name> float64: for the encoder's
tensors d dis_fake, for the discriminator's d llike (what must not reach them).
"""

import os
import sys

import numpy as np
import torch
from torch.nn.utils.stateless import functional_call

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_fixture_mlp import dset, fixture_file, group  # noqa: E402
from vaegan_model import VAEGAN  # noqa: E402

CASES = [
    # name, (C, H, W), hidden, disc, feature_layer, latent, B, loss, gen_loss, beta, gamma, seed
    ("bce_ns", (1, 8, 8), [3, 4], [4, 9], 2, 3, 3, "bce", "ns", 0.8, 0.7, 4001),
    ("mse_minimax", (2, 8, 8), [3, 4], [5, 6, 8], 1, 2, 2, "mse", "minimax", 1.0, 2.0, 4002),
]


def make_case(f, name, shape, hidden, disc, fl, latent, B, loss, gen_loss, beta, gamma, seed):
    torch.manual_seed(seed)
    m32 = VAEGAN(shape, latent, loss, hidden, disc, fl, gen_loss, gamma)
    with torch.no_grad():
        for p in m32.parameters():
            p.mul_(2.0)  # as test_vaegan.c's finite differences: every term well above rounding
    D = shape[0] * shape[1] * shape[2]
    x = torch.rand(B, D) if loss == "bce" else torch.randn(B, D)
    eps = torch.randn(B, 2 * latent)
    m = VAEGAN(shape, latent, loss, hidden, disc, fl, gen_loss, gamma).double()
    m.load_state_dict({k: v.double() for k, v in m32.state_dict().items()}, strict=True)
    xd, e1, zp = x.double(), eps[:, :latent].double(), eps[:, latent:].double()
    groups = m.group_params()
    grads = {}
    for gname, plist in groups.items():
        names = [n for n, _ in plist]
        fixed = {n: p.detach() for n, p in m.named_parameters() if n not in names}

        def objective(*params, names=names, fixed=fixed, gname=gname):
            t = functional_call(m, {**fixed, **dict(zip(names, params))}, (xd, e1, zp))
            return m.objectives(t, beta)[gname]

        m.forward = m.terms  # functional_call calls forward
        params = tuple(p.detach().clone().requires_grad_(True) for _, p in plist)
        assert torch.autograd.gradcheck(objective, params, eps=1e-6, atol=1e-6, rtol=1e-5), (name, gname)
        out = objective(*params)
        gs = torch.autograd.grad(out, params)
        for n, gr in zip(names, gs):
            grads[n] = gr.detach().numpy().astype(np.float64)
    # What must not reach a network: d dis_fake / d enc and d llike / d disc, stored as leak/<name>.
    leaks = {}
    for gname, tname in (("enc", 4), ("disc", 2)):
        plist = groups[gname]
        t = m.terms(xd, e1, zp).mean(1)
        gs = torch.autograd.grad(t[tname], [p for _, p in plist])
        for (n, _), gr in zip(plist, gs):
            leaks[n] = gr.detach().numpy().astype(np.float64)
    with torch.no_grad():
        t = m.terms(xd, e1, zp).mean(1)
    g = group(f, name)
    for k, v in (("C", shape[0]), ("H", shape[1]), ("W", shape[2]), ("B", B), ("latent", latent), ("feature_layer", fl)):
        g.attrs[k] = np.int64(v)
    g.attrs["hidden"] = np.asarray(hidden, dtype=np.int64)
    g.attrs["disc"] = np.asarray(disc, dtype=np.int64)
    g.attrs["loss"] = np.bytes_(loss)
    g.attrs["gen_loss"] = np.bytes_(gen_loss)
    g.attrs["beta"] = np.float64(beta)
    g.attrs["gamma"] = np.float64(gamma)
    gp, gg = group(g, "params"), group(g, "grads")
    for n, p in m32.state_dict().items():
        dset(gp, n, p.numpy().astype(np.float32))
    for n, _ in m.named_parameters():
        dset(gg, n, grads[n])
    gl = group(g, "leak")
    for n, v in leaks.items():
        dset(gl, n, v)
    dset(g, "x", x.numpy().astype(np.float32))
    dset(g, "eps", eps.numpy().astype(np.float32))
    dset(g, "terms", t.numpy())
    return t.tolist()


def main():
    with fixture_file("vaegan_fixture.h5", "mpivae vaegan reference values from tests/pytorch/make_fixture_vaegan.py") as f:
        for case in CASES:
            t = make_case(f, *case)
            print(f"{case[0]}: terms {['%.6g' % v for v in t]} (gradcheck of each group in float64 passed)")


if __name__ == "__main__":
    main()
