#!/bin/bash
# cli_pytorch_load.sh MPIVAE SOURCE_DIR: checkpoints load into PyTorch as they
# are (DESIGN.md section 3), and PyTorch computes the loss mpivae reports.
#
# 1. A tiny mlp (1x28x28, hidden 64, latent 8, 30 steps): mpivae eval --mean
#    over the first 64 test rows, then tests/pytorch/check_checkpoint.py loads
#    the checkpoint with load_state_dict(strict=True) and must reproduce that
#    loss with z = mu (relative 1e-4, float64).
# 2. The default architecture (hidden 400, latent 20, 1x28x28, 5 steps): the
#    /params of the checkpoint load with strict=True into the official PyTorch
#    VAE example's module, defined here verbatim (fc1 784->400, fc21/fc22
#    400->20, fc3 20->400, fc4 400->784), and that module's own loss (BCE on
#    sigmoid outputs, summed, plus KLD) with z = mu matches mpivae eval.
# Missing torch or h5py is a failure, never a skip.
source "$(dirname "$0")/lib.sh"
cli_init "$@"
need_python_modules torch h5py numpy
[ -n "$SRC" ] || fail "expected the source folder as the second argument, found none"
CHECK="$SRC/tests/pytorch/check_checkpoint.py"
expect_file "$CHECK"

M=$MPIVAE
run_ok "$M" data synth --out s28.h5 --n-train 256 --n-test 64 --height 28 --width 28 --classes 4

# 1. tiny mlp against the project's reference script.
run_ok "$M" train --data s28.h5 --model mlp --hidden 64 --latent 8 --batch 32 --lr 1e-3 --steps 30 --out tiny
CK=tiny/checkpoints/step-30.h5
expect_file "$CK"
run_ok "$M" eval --mean --ckpt "$CK" --data s28.h5:/test/images --limit 64
loss=$(loss_of "$WORK/last.out")
grep -q "rows=64 " "$WORK/last.out" || fail "expected 'rows=64' from eval --limit 64, found: $(cat "$WORK/last.out")"
note "mpivae eval (tiny mlp, 64 rows, z = mu): loss=$loss"
rc=0
"$PY" "$CHECK" "$CK" s28.h5 /test/images 64 "$loss" >check.out 2>&1 || rc=$?
cat check.out
[ "$rc" -eq 0 ] || fail "check_checkpoint.py $CK: expected exit 0 (strict load, loss $loss matched), found status $rc"

# 2. default architecture into the official example's module.
run_ok "$M" train --data s28.h5 --hidden 400 --latent 20 --batch 32 --steps 5 --out dflt
CK=dflt/checkpoints/step-5.h5
expect_file "$CK"
run_ok "$M" eval --mean --ckpt "$CK" --data s28.h5:/test/images --limit 64
loss=$(loss_of "$WORK/last.out")
note "mpivae eval (400/20 mlp, 64 rows, z = mu): loss=$loss"
py_check "official PyTorch VAE example loading $CK" "$CK" s28.h5 "$loss" <<'EOF'
import sys
import h5py, numpy as np, torch
from torch import nn
from torch.nn import functional as F

# pytorch/examples, vae/main.py
class VAE(nn.Module):
    def __init__(self):
        super(VAE, self).__init__()

        self.fc1 = nn.Linear(784, 400)
        self.fc21 = nn.Linear(400, 20)
        self.fc22 = nn.Linear(400, 20)
        self.fc3 = nn.Linear(20, 400)
        self.fc4 = nn.Linear(400, 784)

    def encode(self, x):
        h1 = F.relu(self.fc1(x))
        return self.fc21(h1), self.fc22(h1)

    def reparameterize(self, mu, logvar):
        std = torch.exp(0.5*logvar)
        eps = torch.randn_like(std)
        return mu + eps*std

    def decode(self, z):
        h3 = F.relu(self.fc3(z))
        return torch.sigmoid(self.fc4(h3))

    def forward(self, x):
        mu, logvar = self.encode(x.view(-1, 784))
        z = self.reparameterize(mu, logvar)
        return self.decode(z), mu, logvar

def loss_function(recon_x, x, mu, logvar):
    BCE = F.binary_cross_entropy(recon_x, x.view(-1, 784), reduction='sum')
    KLD = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return BCE + KLD

ckpt, data, expected = sys.argv[1], sys.argv[2], float(sys.argv[3])
with h5py.File(ckpt, "r") as f:
    g = f["params"]
    sd = {}
    for k in g:
        if not isinstance(g[k], h5py.Dataset):
            sys.exit(f"{ckpt}: expected only datasets under /params, found group {k}")
        if g[k].dtype != np.float32:
            sys.exit(f"{ckpt}: expected /params/{k} float32, found {g[k].dtype}")
        sd[k] = torch.from_numpy(g[k][()])
model = VAE()
want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
got = {k: tuple(v.shape) for k, v in sd.items()}
if want != got:
    sys.exit(f"{ckpt}: expected /params {want}, found {got}")
model.load_state_dict(sd, strict=True)  # raises on a missing, extra or misshapen tensor
model = model.double().eval()
with h5py.File(data, "r") as f:
    x = torch.from_numpy(f["/test/images"][:64].astype(np.float64) / 255.0).reshape(64, 784)
with torch.no_grad():
    mu, logvar = model.encode(x)
    total = loss_function(model.decode(mu), x, mu, logvar).item() / 64
diff = abs(total - expected)
tol = 1e-4 * max(1.0, abs(expected))
print(f"official VAE, strict load OK; loss with z = mu over 64 rows: {total:.6f}, mpivae {expected:.6f}, |diff| {diff:.2g} (tol {tol:.2g})")
if not diff <= tol:
    sys.exit(f"expected the official module's loss {total} to match mpivae's {expected} within {tol}, found |diff| {diff}")
EOF

cli_done
