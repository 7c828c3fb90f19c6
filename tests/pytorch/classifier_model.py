#!/usr/bin/python3
"""PyTorch twin of mpivae's --model classifier (src/family_classifier.c), a test reference only.

conv: stride-2 Conv2d(k4, p1) layers with ReLU (channels = --hidden), flattened; fc: Linear(flat,
F) with ReLU (F = --latent, the features); out: Linear(F, K) (K = --classes). Names conv.0,
conv.2, ..., fc, out: an mpivae classifier checkpoint's /params load with strict=True.
"""

import h5py
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


class ConvClassifier(nn.Module):
    def __init__(self, input_shape, classes, channels=(32, 64), features=128):
        super().__init__()
        C, H, W = (int(v) for v in input_shape)
        ch = [int(c) for c in channels]
        f = 1 << len(ch)
        if H % f or W % f:
            raise ValueError(f"ConvClassifier with {len(ch)} layers needs H and W divisible by {f}, got {H}x{W}")
        self.input_shape, self.channels, self.F, self.K = (C, H, W), ch, int(features), int(classes)
        layers, cin = [], C
        for c in ch:
            layers += [nn.Conv2d(cin, c, 4, 2, 1), nn.ReLU()]
            cin = c
        self.conv = nn.Sequential(*layers)
        self.fc = nn.Linear(ch[-1] * (H // f) * (W // f), self.F)
        self.out = nn.Linear(self.F, self.K)

    def features(self, x):
        """The penultimate layer, [B, F], of rows x [B, C*H*W] (mpivae's features entry)."""
        h = self.conv(x.reshape(x.shape[0], *self.input_shape)).flatten(1)
        return F.relu(self.fc(h))

    def forward(self, x):
        return self.out(self.features(x))


def terms(model, x, labels):
    """Per-row softmax cross-entropy (nats) and error (1 for a wrong argmax), and the logits."""
    logits = model(x)
    xent = F.cross_entropy(logits, labels, reduction="none")
    error = (logits.argmax(1) != labels).to(logits.dtype)
    return xent, error, logits


def load_classifier(path):
    """The float32 ConvClassifier of an mpivae classifier checkpoint (strict load of /params)."""
    with h5py.File(path, "r") as f:
        a = f.attrs

        def s(v):
            return v.decode() if isinstance(v, bytes) else str(v)

        if s(a["model"]) != "classifier":
            raise ValueError(f"{path}: model {s(a['model'])!r} is not a classifier")
        shape = [int(v) for v in np.ravel(a["input_shape"])]
        hidden = [int(v) for v in np.ravel(a["hidden"])]
        model = ConvClassifier(shape, int(np.ravel(a["classes"])[0]), hidden, int(np.ravel(a["latent"])[0]))
        params = {}
        f["params"].visititems(lambda n, o: params.__setitem__(n.replace("/", "."), torch.from_numpy(
            np.asarray(o[()], dtype=np.float32))) if isinstance(o, h5py.Dataset) else None)
    model.load_state_dict(params, strict=True)
    return model
