"""The PyTorch twin of mpivae's hierarchical VAE (--model hvae, src/family_hvae.c).

Same tensors, names and shapes as the C model's checkpoint (/params): load_state_dict(strict=True)
takes a checkpoint's parameters. Reference only: the product never needs PyTorch.

  HVAE(shape=(C, H, W), hidden=[C_0, ...], groups=[G_0, ...], latent=Zc, loss, posterior)
  model.terms(x, eps)        -> recon [B], kl [K, B] (KL per group, top group first), logits
  model.log_weights(x, eps)  -> log p(x, z) - log q(z | x) per row, z drawn with eps
  model.generate(noise, t)   -> logits of ancestral samples

x is [B, C*H*W] (NCHW flattened); eps and noise are [B, Z]: the groups top first, each in
[H, W, Zc] order (channels last), as the C model lays out a row of latents.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

CLAMP = 5.0


def softclamp(r):
    return CLAMP * torch.tanh(r / CLAMP)


class Res(nn.Module):
    """h + c2(relu(c1(relu(h)))), 3x3 convs."""

    def __init__(self, C):
        super().__init__()
        self.c1 = nn.Conv2d(C, C, 3, 1, 1)
        self.c2 = nn.Conv2d(C, C, 3, 1, 1)

    def forward(self, h):
        return h + self.c2(F.relu(self.c1(F.relu(h))))


class Group(nn.Module):
    def __init__(self, C, Zc):
        super().__init__()
        self.prior = nn.Conv2d(C, 2 * Zc, 3, 1, 1)
        self.post = nn.Conv2d(C, 2 * Zc, 3, 1, 1)
        self.zproj = nn.Conv2d(Zc, C, 1)
        self.res = Res(C)


class HVAE(nn.Module):
    def __init__(self, shape, hidden, groups, latent, loss="bce", posterior="residual"):
        super().__init__()
        C, H, W = shape
        self.shape, self.hidden, self.groups, self.Zc = shape, list(hidden), list(groups), latent
        self.loss, self.posterior = loss, posterior
        S = len(hidden)
        self.sizes = [(H, W)]
        for s in range(1, S):
            h, w = self.sizes[-1]
            self.sizes.append(((h + 1) // 2, (w + 1) // 2))
        self.bu = nn.Module()
        self.bu.stem = nn.Conv2d(C, hidden[0], 3, 1, 1)
        for s in range(S):
            if s > 0:
                setattr(self.bu, f"down{s}", nn.Conv2d(hidden[s - 1], hidden[s], 3, 2, 1))
            setattr(self.bu, f"res{s}", Res(hidden[s]))
        self.td = nn.Module()
        th, tw = self.sizes[-1]
        self.td.h0 = nn.Parameter(torch.zeros(th, tw, hidden[-1]))  # channels last, as in the C model
        self.plan = []  # (scale, group index k) top first
        k = 0
        for s in range(S - 1, -1, -1):
            for _ in range(groups[s]):
                k += 1
                setattr(self.td, f"g{k}", Group(hidden[s], latent))
                self.plan.append((s, k))
            if s > 0:
                h, w = self.sizes[s]
                th, tw = self.sizes[s - 1]
                op = th - ((h - 1) * 2 - 2 + 3)
                setattr(self.td, f"up{s}", nn.ConvTranspose2d(hidden[s], hidden[s - 1], 3, 2, 1, output_padding=op))
        self.K = k
        self.out = nn.Conv2d(hidden[0], C, 3, 1, 1)

    def latent_dims(self):
        return [self.Zc * self.sizes[s][0] * self.sizes[s][1] for s, _ in self.plan]

    def split(self, v):
        """[B, Z] -> one [B, Zc, H, W] per group (from [H, W, Zc] order)."""
        out, o = [], 0
        for (s, _), n in zip(self.plan, self.latent_dims()):
            h, w = self.sizes[s]
            out.append(v[:, o:o + n].reshape(-1, h, w, self.Zc).permute(0, 3, 1, 2))
            o += n
        return out

    def bottom_up(self, x):
        B = x.shape[0]
        C, H, W = self.shape
        h = self.bu.stem(x.reshape(B, C, H, W))
        bu = []
        for s in range(len(self.hidden)):
            if s > 0:
                h = getattr(self.bu, f"down{s}")(h)
            h = getattr(self.bu, f"res{s}")(h)
            bu.append(h)
        return bu

    def posterior_of(self, g, h, bu_s, pr):
        Zc = self.Zc
        mp, lp = pr[:, :Zc], softclamp(pr[:, Zc:])
        if self.posterior == "residual":
            qr = g.post(h + bu_s)
            return mp + qr[:, :Zc], lp + softclamp(qr[:, Zc:])
        qr = g.post(bu_s)
        me, le = qr[:, :Zc], softclamp(qr[:, Zc:])
        Pe, Pp = torch.exp(-2 * le), torch.exp(-2 * lp)
        S = Pe + Pp
        return (me * Pe + mp * Pp) / S, -0.5 * torch.log(S)

    def top_down(self, B, step):
        """step(s, g, h, pr) -> z; returns the logits."""
        h = self.td.h0.permute(2, 0, 1).unsqueeze(0).expand(B, -1, -1, -1)
        S = len(self.hidden)
        it = iter(self.plan)
        for s in range(S - 1, -1, -1):
            for _ in range(self.groups[s]):
                _, k = next(it)
                g = getattr(self.td, f"g{k}")
                pr = g.prior(h)
                z = step(k - 1, s, g, h, pr)
                h = g.res(h + g.zproj(z))
            if s > 0:
                h = getattr(self.td, f"up{s}")(h)
        return self.out(F.relu(h)).reshape(B, -1)

    def recon(self, logits, x):
        if self.loss == "bce":
            return F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(1)
        return ((logits - x) ** 2).sum(1)

    def terms(self, x, eps=None):
        B = x.shape[0]
        bu = self.bottom_up(x)
        E = self.split(eps) if eps is not None else None
        kls = []

        def step(k, s, g, h, pr):
            mq, lq = self.posterior_of(g, h, bu[s], pr)
            mp, lp = pr[:, :self.Zc], softclamp(pr[:, self.Zc:])
            kl = lp - lq + 0.5 * (torch.exp(2 * (lq - lp)) + (mq - mp) ** 2 * torch.exp(-2 * lp)) - 0.5
            kls.append(kl.reshape(B, -1).sum(1))
            return mq + torch.exp(lq) * E[k] if E is not None else mq

        logits = self.top_down(B, step)
        return self.recon(logits, x), torch.stack(kls), logits

    def log_weights(self, x, eps):
        B = x.shape[0]
        bu = self.bottom_up(x)
        E = self.split(eps)
        acc = [torch.zeros(B, dtype=x.dtype)]

        def step(k, s, g, h, pr):
            mq, lq = self.posterior_of(g, h, bu[s], pr)
            mp, lp = pr[:, :self.Zc], softclamp(pr[:, self.Zc:])
            z = mq + torch.exp(lq) * E[k]
            u = (z - mp) * torch.exp(-lp)
            acc[0] = acc[0] + (-0.5 * u * u - lp + 0.5 * E[k] ** 2 + lq).reshape(B, -1).sum(1)
            return z

        logits = self.top_down(B, step)
        c = 0.5 * x.shape[1] * math.log(math.pi) if self.loss == "mse" else 0.0
        return -self.recon(logits, x) - c + acc[0]

    def generate(self, noise, temperature=1.0):
        N = self.split(noise)

        def step(k, s, g, h, pr):
            return pr[:, :self.Zc] + temperature * torch.exp(softclamp(pr[:, self.Zc:])) * N[k]

        return self.top_down(noise.shape[0], step)
