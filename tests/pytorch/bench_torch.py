#!/usr/bin/python3
"""PyTorch baseline for mpivae: training throughput, and held-out ELBO after full epochs.

Run with Debian's /usr/bin/python3 (python3-torch, python3-h5py).

Throughput (default mode):
    bench_torch.py --data FILE [--dataset /train/images] [--model mlp|conv|hvae|vaegan] [--batch 128]
                   [--steps 300] [--warmup 30] [--threads 1]
  prints one line
    torch: model=mlp batch=128 samples_per_s=... step_ms=... peak_rss_mb=...
  Only the --steps timed steps after --warmup untimed ones count.

Quality (--epochs E):
    bench_torch.py --data FILE --epochs E [--test-dataset /test/images] [--seed S] ...
  trains E full epochs (one random permutation per epoch, last short batch used), then prints
    torch: test_loss=... recon=... kl=...
  per test sample in nats, z sampled (mu + sigma*eps), over the whole test set.

Both modes: Adam(lr 1e-3), objective = batch mean of recon + beta*kl (see vae_model.py);
vaegan (throughput only): mpivae's defaults, one Adam per network (enc 1e-3, dec 1e-3, disc
3e-4), each network's gradient of its own objective (vaegan_model.objectives) by
torch.autograd.grad over the one forward graph, so each backward pass only visits what
reaches its network, and all three networks updated every step;
the data set is read into memory once as float32 (uint8 scaled by 1/255); a batch is gathered
by indices from a random permutation. FILE may also be given as FILE:/path/to/dataset.
"""

import argparse
import os
import resource
import sys
import time

import h5py
import numpy as np
import torch

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hvae_model import HVAE  # noqa: E402
from vaegan_model import VAEGAN  # noqa: E402
from vae_model import ConvVAE, MLPVAE, loss_terms, per_sample_terms  # noqa: E402


def load(path, dataset):
    """[N, C, H, W]/[N, H, W]/[N, D] dataset -> (float32 tensor [N, D], shape [C, H, W] or None)."""
    try:
        with h5py.File(path, "r") as f:
            if dataset not in f or not isinstance(f[dataset], h5py.Dataset):
                raise KeyError(f"no dataset {dataset}")
            raw = f[dataset][()]
    except Exception as e:  # noqa: BLE001
        sys.exit(f"bench_torch: cannot read {path}:{dataset}: {type(e).__name__}: {e}")
    if raw.dtype == np.uint8:
        x = raw.astype(np.float32) * np.float32(1.0 / 255.0)
    elif raw.dtype.kind == "f":
        x = raw.astype(np.float32)
    else:
        sys.exit(f"bench_torch: {path}:{dataset}: unsupported dtype {raw.dtype}")
    if x.ndim == 4:
        shape = list(x.shape[1:])
    elif x.ndim == 3:
        shape = [1] + list(x.shape[1:])
    elif x.ndim == 2:
        shape = None
    else:
        sys.exit(f"bench_torch: {path}:{dataset}: expected rank 2, 3 or 4, got shape {x.shape}")
    x = np.ascontiguousarray(x.reshape(x.shape[0], -1))
    return torch.from_numpy(x), shape


def split_spec(data, dataset):
    if ":" in data and not os.path.exists(data):
        f, d = data.rsplit(":", 1)
        return f, d
    return data, dataset


def build(args, D, shape):
    if args.model == "mlp":
        hidden = [int(h) for h in args.hidden.split(",")]
        return MLPVAE(D, hidden, args.latent if args.latent else 20, args.loss)
    if shape is None:
        sys.exit(f"bench_torch: --model {args.model} needs image data [N,H,W] or [N,C,H,W]")
    if args.model == "vaegan":  # mpivae's defaults (src/family_vaegan.c)
        return VAEGAN(shape, args.latent if args.latent else 16, args.loss, (32, 64), (32, 64, 128), 1, "ns", 1.0)
    if args.model == "hvae":  # mpivae's defaults (src/family_hvae.c)
        return HVAE(shape, [16, 32, 64], [0, 2, 2], args.latent if args.latent else 8, args.loss)
    return ConvVAE(shape, args.latent if args.latent else 16, args.loss)


def batches(N, B, gen):
    """Endless batch index tensors: a new permutation each pass, last short batch kept."""
    while True:
        perm = torch.randperm(N, generator=gen)
        for s in range(0, N, B):
            yield perm[s:s + B]


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class GroupAdam:
    """vaegan: an Adam per network; step() takes each network's gradient of its own objective."""

    def __init__(self, model):
        self.groups = {g: [p for _, p in pl] for g, pl in model.group_params().items()}
        lrs = {"enc": 1e-3, "dec": 1e-3, "disc": 3e-4}
        self.opts = {g: torch.optim.Adam(ps, lr=lrs[g]) for g, ps in self.groups.items()}

    def step(self, model, xb, beta):
        B = xb.shape[0]
        t = model.terms(xb, torch.randn(B, model.Z), torch.randn(B, model.Z))
        obj = model.objectives(t, beta)
        for g, ps in self.groups.items():
            for p, gr in zip(ps, torch.autograd.grad(obj[g], ps, retain_graph=g != "disc")):
                p.grad = gr
        for o in self.opts.values():
            o.step()
        return t[0].mean() + beta * t[1].mean()


def step(model, opt, xb, beta):
    if isinstance(opt, GroupAdam):
        return opt.step(model, xb, beta)
    opt.zero_grad(set_to_none=True)
    if isinstance(model, HVAE):
        r, kl, _ = model.terms(xb, torch.randn(xb.shape[0], sum(model.latent_dims())))
        loss = (r + beta * kl.sum(0)).mean()
        loss.backward()
        opt.step()
        return loss
    loss, recon, kl = loss_terms(model, xb, beta=beta)
    loss.backward()
    opt.step()
    return loss


def bench(args, X, model):
    opt = GroupAdam(model) if isinstance(model, VAEGAN) else torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(args.seed)
    it = batches(X.shape[0], args.batch, gen)
    # keep every timed batch full-size: skip a short tail batch
    def next_full():
        while True:
            idx = next(it)
            if idx.numel() == args.batch:
                return X[idx]
    for _ in range(args.warmup):
        step(model, opt, next_full(), args.beta)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        loss = step(model, opt, next_full(), args.beta)
    dt = time.perf_counter() - t0
    sps = args.steps * args.batch / dt
    print(f"torch: model={args.model} batch={args.batch} samples_per_s={sps:.1f} "
          f"step_ms={1000.0 * dt / args.steps:.3f} peak_rss_mb={peak_rss_mb():.1f}", flush=True)
    if args.verbose:
        print(f"# threads={torch.get_num_threads()} steps={args.steps} warmup={args.warmup} "
              f"last_loss={loss.item():.4f} params={sum(p.numel() for p in model.parameters())}",
              file=sys.stderr)


@torch.no_grad()
def evaluate(model, X, beta, bs=1000):
    tot_r = tot_k = 0.0
    for s in range(0, X.shape[0], bs):
        if isinstance(model, HVAE):
            xb = X[s:s + bs]
            with torch.no_grad():
                recon, kl, _ = model.terms(xb, torch.randn(xb.shape[0], sum(model.latent_dims())))
            kl = kl.sum(0)
        else:
            recon, kl, _, _, _ = per_sample_terms(model, X[s:s + bs])
        tot_r += recon.double().sum().item()
        tot_k += kl.double().sum().item()
    n = X.shape[0]
    r, k = tot_r / n, tot_k / n
    return r + beta * k, r, k


def train_epochs(args, X, model, Xtest):
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(args.seed)
    N, B = X.shape[0], args.batch
    t_start = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        perm = torch.randperm(N, generator=gen)
        tot = 0.0
        t0 = time.perf_counter()
        for s in range(0, N, B):
            idx = perm[s:s + B]
            loss = step(model, opt, X[idx], args.beta)
            tot += loss.item() * idx.numel()
        print(f"torch: epoch={epoch} train_loss={tot / N:.4f} "
              f"epoch_s={time.perf_counter() - t0:.2f}", flush=True)
    train_s = time.perf_counter() - t_start
    loss, r, k = evaluate(model, Xtest, args.beta)
    print(f"torch: test_loss={loss:.4f} recon={r:.4f} kl={k:.4f}", flush=True)
    if args.verbose:
        print(f"# epochs={args.epochs} train_s={train_s:.1f} peak_rss_mb={peak_rss_mb():.1f}",
              file=sys.stderr)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="HDF5 file (or FILE:/dataset)")
    p.add_argument("--dataset", default="/train/images")
    p.add_argument("--test-dataset", default="/test/images")
    p.add_argument("--model", choices=["mlp", "conv", "hvae", "vaegan"], default="mlp")
    p.add_argument("--hidden", default="400", help="mlp hidden sizes, comma separated (default 400)")
    p.add_argument("--latent", type=int, default=0, help="latent size (default mlp 20, conv 16)")
    p.add_argument("--loss", choices=["bce", "mse"], default="bce")
    p.add_argument("--beta", type=float, default=1.0)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--warmup", type=int, default=30)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--epochs", type=int, default=0, help="quality mode: train E full epochs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args()
    if args.batch <= 0 or args.steps <= 0 or args.warmup < 0 or args.threads <= 0:
        p.error("--batch, --steps, --threads must be positive and --warmup non-negative")

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    path, dset = split_spec(args.data, args.dataset)
    X, shape = load(path, dset)
    model = build(args, X.shape[1], shape)
    if args.epochs > 0 and args.model == "vaegan":
        p.error("--epochs (quality mode) is for the VAE families; a VAE-GAN is measured by FID (mpivae fid)")
    if args.epochs > 0:
        Xtest, tshape = load(path, args.test_dataset)
        if Xtest.shape[1] != X.shape[1]:
            sys.exit(f"bench_torch: {path}:{args.test_dataset} has {Xtest.shape[1]} values per "
                     f"sample, {dset} has {X.shape[1]}")
        train_epochs(args, X, model, Xtest)
    else:
        if X.shape[0] < args.batch:
            sys.exit(f"bench_torch: {path}:{dset} has {X.shape[0]} samples, fewer than --batch")
        bench(args, X, model)


if __name__ == "__main__":
    main()
