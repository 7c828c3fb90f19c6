#!/usr/bin/python3
"""PyTorch reference models for mpivae (test fixtures, checkpoint checks, benchmarks).

Run with Debian's interpreter, /usr/bin/python3 (packages python3-torch and python3-h5py);
a python3 found earlier on PATH (pyenv, venv) usually has no torch.

Conventions shared with the C implementation (see docs / DESIGN.md):

MLP (`--model mlp`, hidden sizes [H1..Hk], latent Z, input size D = C*H*W):
  encoder  fc1 = Linear(D, H1), fc1_i = Linear(H(i-1), Hi) for i = 2..k, ReLU after each
  heads    fc21 = Linear(Hk, Z) -> mu, fc22 = Linear(Hk, Z) -> logvar
  decoder  fc3 = Linear(Z, Hk), fc3_i = Linear(H(k-i+2), H(k-i+1)) for i = 2..k, ReLU after each,
           fc4 = Linear(H1, D) -> logits
  With k = 1 this is the official PyTorch VAE example (fc1, fc21, fc22, fc3, fc4).

Conv (`--model conv`, input [C,H,W] with H and W divisible by 4, latent Z, default 16):
  enc  = Sequential(Conv2d(C,32,4,2,1), ReLU, Conv2d(32,64,4,2,1), ReLU)   -> enc.0, enc.2
  fc_mu, fc_logvar = Linear(64*(H/4)*(W/4), Z)
  fc_dec = Linear(Z, 64*(H/4)*(W/4)), ReLU, reshape to [64, H/4, W/4]
  dec  = Sequential(ConvTranspose2d(64,32,4,2,1), ReLU, ConvTranspose2d(32,C,4,2,1)) -> dec.0, dec.2
  output: logits [C,H,W]

Both models take x as [B, D] (flattened in PyTorch order) or [B, C, H, W] and return
(logits [B, D], mu [B, Z], logvar [B, Z]).

z = mu + exp(0.5*logvar) * eps.
Per-sample loss = recon + beta * kl,
  kl    = -0.5 * sum(1 + logvar - mu^2 - exp(logvar))
  recon = sum over pixels of BCE-with-logits(logits, x)   for loss 'bce' (image = sigmoid(logits))
        = sum over pixels of (x - logits)^2               for loss 'mse' (output used directly)
The training objective is the batch mean of the per-sample loss.
"""

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

LOSSES = ("bce", "mse")


class MLPVAE(nn.Module):
    def __init__(self, D, hidden, Z, loss="bce"):
        super().__init__()
        hidden = [int(h) for h in hidden]
        if len(hidden) < 1:
            raise ValueError("MLPVAE needs at least one hidden layer")
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r} (expected one of {LOSSES})")
        self.D, self.hidden, self.Z, self.loss = int(D), hidden, int(Z), loss
        k = len(hidden)
        # Registration order = state_dict order: fc1, fc1_2.., fc21, fc22, fc3, fc3_2.., fc4.
        self.fc1 = nn.Linear(self.D, hidden[0])
        self.enc_names = ["fc1"]
        for i in range(2, k + 1):
            name = f"fc1_{i}"
            setattr(self, name, nn.Linear(hidden[i - 2], hidden[i - 1]))
            self.enc_names.append(name)
        self.fc21 = nn.Linear(hidden[-1], self.Z)
        self.fc22 = nn.Linear(hidden[-1], self.Z)
        self.fc3 = nn.Linear(self.Z, hidden[-1])
        self.dec_names = ["fc3"]
        for i in range(2, k + 1):
            # 1-based: Linear(H_{k-i+2}, H_{k-i+1})
            name = f"fc3_{i}"
            setattr(self, name, nn.Linear(hidden[k - i + 1], hidden[k - i]))
            self.dec_names.append(name)
        self.fc4 = nn.Linear(hidden[0], self.D)

    def flat(self, x):
        return x.reshape(x.shape[0], -1)

    def encode(self, x):
        h = self.flat(x)
        for name in self.enc_names:
            h = F.relu(getattr(self, name)(h))
        return self.fc21(h), self.fc22(h)

    def decode(self, z):
        h = z
        for name in self.dec_names:
            h = F.relu(getattr(self, name)(h))
        return self.fc4(h)

    def forward(self, x, eps=None, use_mean=False):
        mu, logvar = self.encode(x)
        z = reparameterize(mu, logvar, eps, use_mean)
        return self.decode(z), mu, logvar


class ConvVAE(nn.Module):
    """mpivae's --model conv: stride-2 Conv2d(k4, p1) layers with ReLU down, Linear heads,
    Linear + ReLU back up, stride-2 ConvTranspose2d layers with ReLU between (logits last).
    channels = --hidden for conv (default [32, 64]); names enc.0, enc.2, ..., fc_mu,
    fc_logvar, fc_dec, dec.0, dec.2, ..."""

    def __init__(self, input_shape, Z=16, loss="bce", channels=(32, 64)):
        super().__init__()
        C, H, W = (int(v) for v in input_shape)
        ch = [int(c) for c in channels]
        f = 1 << len(ch)
        if H % f or W % f:
            raise ValueError(f"ConvVAE with {len(ch)} layers needs H and W divisible by {f}, got {H}x{W}")
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r} (expected one of {LOSSES})")
        self.input_shape, self.Z, self.loss, self.channels = (C, H, W), int(Z), loss, ch
        self.D = C * H * W
        self.hw = (H // f, W // f)
        self.flat_dim = ch[-1] * self.hw[0] * self.hw[1]
        enc, cin = [], C
        for c in ch:
            enc += [nn.Conv2d(cin, c, 4, 2, 1), nn.ReLU()]
            cin = c
        self.enc = nn.Sequential(*enc)
        self.fc_mu = nn.Linear(self.flat_dim, self.Z)
        self.fc_logvar = nn.Linear(self.flat_dim, self.Z)
        self.fc_dec = nn.Linear(self.Z, self.flat_dim)
        dec, outs = [], list(reversed(ch[:-1])) + [C]
        cin = ch[-1]
        for i, c in enumerate(outs):
            dec += [nn.ConvTranspose2d(cin, c, 4, 2, 1)]
            if i < len(outs) - 1:
                dec += [nn.ReLU()]
            cin = c
        self.dec = nn.Sequential(*dec)

    def flat(self, x):
        return x.reshape(x.shape[0], -1)

    def encode(self, x):
        h = self.enc(x.reshape(x.shape[0], *self.input_shape)).flatten(1)
        return self.fc_mu(h), self.fc_logvar(h)

    def decode(self, z):
        C, H, W = self.input_shape
        h = F.relu(self.fc_dec(z)).reshape(z.shape[0], self.channels[-1], *self.hw)
        return self.dec(h).flatten(1)

    def forward(self, x, eps=None, use_mean=False):
        mu, logvar = self.encode(x)
        z = reparameterize(mu, logvar, eps, use_mean)
        return self.decode(z), mu, logvar


def reparameterize(mu, logvar, eps=None, use_mean=False):
    if use_mean:
        return mu
    if eps is None:
        eps = torch.randn_like(mu)
    return mu + torch.exp(0.5 * logvar) * eps.to(mu.dtype)


def per_sample_terms(model, x, eps=None, use_mean=False):
    """Per-sample (recon [B], kl [B]) plus (logits, mu, logvar)."""
    logits, mu, logvar = model(x, eps=eps, use_mean=use_mean)
    xf = x.reshape(x.shape[0], -1).to(logits.dtype)
    if model.loss == "bce":
        recon = F.binary_cross_entropy_with_logits(logits, xf, reduction="none").sum(1)
    else:
        recon = ((xf - logits) ** 2).sum(1)
    kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1)
    return recon, kl, logits, mu, logvar


def loss_terms(model, x, eps=None, use_mean=False, beta=1.0):
    """Batch means (loss, recon, kl) with loss = recon + beta*kl; differentiable."""
    recon, kl, _, _, _ = per_sample_terms(model, x, eps, use_mean)
    recon_m, kl_m = recon.mean(), kl.mean()
    return recon_m + beta * kl_m, recon_m, kl_m


# ---------------------------------------------------------------------------- checkpoints

def _attr_str(v):
    if isinstance(v, (bytes, np.bytes_)):
        return v.decode("utf-8").rstrip("\0")
    if isinstance(v, np.ndarray):
        if v.size != 1:
            raise ValueError(f"expected a scalar string, got array of shape {v.shape}")
        return _attr_str(v.reshape(-1)[0])
    return str(v)


def _attr_ints(v):
    return [int(i) for i in np.atleast_1d(np.asarray(v)).reshape(-1)]


def _attr_scalar(v):
    return np.asarray(v).reshape(-1)[0].item()


def read_params(path):
    """{name: float32 tensor} from /params of an HDF5 checkpoint (names may be nested groups)."""
    import h5py
    out = {}
    with h5py.File(path, "r") as f:
        if "params" not in f:
            raise ValueError(f"{path}: no /params group")

        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                out[name.replace("/", ".")] = torch.from_numpy(np.asarray(obj[()], dtype=np.float32))
        f["params"].visititems(visit)
    return out


def read_config(path):
    import h5py
    with h5py.File(path, "r") as f:
        a = f.attrs
        cfg = {}
        cfg["model"] = _attr_str(a["model"]) if "model" in a else "mlp"
        if "hidden" in a:
            cfg["hidden"] = _attr_ints(a["hidden"])
        if "latent" in a:
            cfg["latent"] = int(_attr_scalar(a["latent"]))
        cfg["loss"] = _attr_str(a["loss"]) if "loss" in a else "bce"
        cfg["beta"] = float(_attr_scalar(a["beta"])) if "beta" in a else 1.0
        if "input_shape" in a:
            cfg["input_shape"] = _attr_ints(a["input_shape"])
    return cfg


def build_model(cfg, params=None):
    """Model for a config dict (model, hidden, latent, loss, input_shape); missing sizes are
    inferred from the parameter shapes where params is given."""
    kind = cfg.get("model", "mlp")
    loss = cfg.get("loss", "bce")
    shape = cfg.get("input_shape")
    if kind == "mlp":
        hidden = cfg.get("hidden")
        if hidden is None and params is not None:
            hidden = [params["fc1.weight"].shape[0]]
            i = 2
            while f"fc1_{i}.weight" in params:
                hidden.append(params[f"fc1_{i}.weight"].shape[0])
                i += 1
        Z = cfg.get("latent")
        if Z is None and params is not None:
            Z = params["fc21.weight"].shape[0]
        if shape is not None:
            D = int(math.prod(shape))
        elif params is not None:
            D = params["fc1.weight"].shape[1]
        else:
            raise ValueError("mlp config needs input_shape")
        if hidden is None or Z is None:
            raise ValueError("mlp config needs hidden and latent")
        return MLPVAE(D, hidden, Z, loss)
    if kind == "conv":
        if shape is None:
            raise ValueError("conv config needs input_shape [C,H,W]")
        if len(shape) == 2:
            shape = [1] + list(shape)
        Z = cfg.get("latent")
        if Z is None:
            Z = params["fc_mu.weight"].shape[0] if params is not None else 16
        channels = cfg.get("hidden") or (32, 64)
        return ConvVAE(shape, Z, loss, channels)
    raise ValueError(f"unknown model {kind!r}")


def load_checkpoint(path):
    """Read an mpivae checkpoint: root attrs (model, hidden, latent, loss, beta, input_shape) and
    /params/<name> float32. Returns the float32 model (strict load_state_dict); the config dict is
    model.cfg and beta is model.beta."""
    cfg = read_config(path)
    params = read_params(path)
    model = build_model(cfg, params)
    model.load_state_dict(params, strict=True)
    model.cfg = cfg
    model.beta = cfg["beta"]
    return model
