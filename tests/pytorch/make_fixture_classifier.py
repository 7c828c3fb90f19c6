#!/usr/bin/python3
"""Write tests/fixtures/classifier_fixture.h5: reference values and float64 gradients of one step
of the conv classifier (tests/pytorch/classifier_model.py, ConvClassifier) for the C
implementation's tests (tests/test_classifier.c).

Run with Debian's /usr/bin/python3 (python3-torch, python3-h5py):
    /usr/bin/python3 tests/pytorch/make_fixture_classifier.py [OUT.h5]

Layout, one group per case (/small, /wide, /one):
  attrs   C, H, W, channels (int64 [n], = --hidden), F (features, = --latent), K (classes), B, seed
  params/<name>   float32, PyTorch layout (Conv2d [out,in,k,k], Linear [out,in], bias [out]);
                  names conv.0, conv.2, ..., fc, out
  x               float32 [B, C*H*W] in [0, 1]
  labels          int64 [B] in 0..K-1
  logits          float64 [B, K]
  features        float64 [B, F]   relu(fc(flatten(conv(x)))), the penultimate layer
  expected_xent, expected_error    float64 scalars, batch means
  grads/<name>    float64, gradient of expected_xent (the batch mean)
All float64 values are computed in float64 from the float32 params and x. Deterministic file.
"""

import os
import sys

import numpy as np
import torch

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from classifier_model import ConvClassifier, terms  # noqa: E402
from make_fixture_mlp import dset, fixture_file, group  # noqa: E402

CASES = [
    # name, (C, H, W), channels, F, K, B, seed
    ("small", (1, 8, 8), [4, 6], 5, 3, 4, 3001),
    # 8 and 9 channels: channels last between the conv layers and into fc on the C side
    ("wide", (1, 8, 8), [8, 9], 6, 4, 3, 3004),
    ("one", (2, 4, 8), [3], 4, 2, 2, 3003),
]


def make_case(f, name, shape, channels, Fdim, K, B, seed):
    torch.manual_seed(seed)
    C, H, W = shape
    model32 = ConvClassifier(shape, K, channels, Fdim)
    x = torch.rand(B, C * H * W, dtype=torch.float32)
    labels = torch.randint(0, K, (B,), dtype=torch.int64)
    model = ConvClassifier(shape, K, channels, Fdim).double()
    model.load_state_dict({k: v.double() for k, v in model32.state_dict().items()}, strict=True)
    model.zero_grad()
    xent, error, logits = terms(model, x.double(), labels)
    xent.mean().backward()
    feats = model.features(x.double())
    for pname, p in model.named_parameters():  # a dead layer would make the comparison vacuous
        if not p.grad.abs().max() > 0:
            raise SystemExit(f"/{name}: the gradient of {pname} is all zero; choose another seed")

    g = group(f, name)
    for k, v in (("C", C), ("H", H), ("W", W), ("F", Fdim), ("K", K), ("B", B), ("seed", seed)):
        g.attrs[k] = np.int64(v)
    g.attrs["channels"] = np.asarray(channels, dtype=np.int64)
    gp, gg = group(g, "params"), group(g, "grads")
    for pname, p in model32.state_dict().items():
        dset(gp, pname, p.numpy().astype(np.float32))
    for pname, p in model.named_parameters():
        dset(gg, pname, p.grad.detach().numpy().astype(np.float64))
    dset(g, "x", x.numpy())
    dset(g, "labels", labels.numpy())
    dset(g, "logits", logits.detach().numpy())
    dset(g, "features", feats.detach().numpy())
    dset(g, "expected_xent", np.float64(xent.mean().item()))
    dset(g, "expected_error", np.float64(error.mean().item()))
    return xent.mean().item(), error.mean().item()


def main():
    with fixture_file("classifier_fixture.h5", "mpivae conv classifier reference values from tests/pytorch/make_fixture_classifier.py") as f:
        for case in CASES:
            xe, er = make_case(f, *case)
            print(f"{case[0]}: xent={xe:.12g} error={er:.12g}")


if __name__ == "__main__":
    main()
