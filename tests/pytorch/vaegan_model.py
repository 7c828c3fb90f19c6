"""PyTorch twin of mpivae's --model vaegan (src/family_vaegan.c), a test reference only.

The conv VAE of vae_model.ConvVAE (the same names: enc.*, fc_mu, fc_logvar, fc_dec, dec.*) and a
discriminator: dis.0, dis.2, ... Conv2d(k4, s2, p1) each followed by LeakyReLU(0.2), then dis_fc,
Linear(flat, 1), the logit of D(x). For rows x, noise eps (reparameterisation) and zp (prior):
    x_rec = image(Dec(mu + exp(logvar / 2) eps)), x_p = image(Dec(zp)), image = sigmoid under bce
    llike    = 1/2 sum (f_L(x_rec) - f_L(x))^2   (f_L: the output of discriminator layer L)
    dis_real = -log D(x), dis_fake = -log(1 - D(x_rec)) - log(1 - D(x_p))
    gen      = -log D(x_rec) - log D(x_p) (ns) or log(1 - D(x_rec)) + log(1 - D(x_p)) (minimax)
and the groups' objectives (batch means): enc: beta kl + llike; dec: gamma llike + gen;
disc: dis_real + dis_fake.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from vae_model import ConvVAE

TERMS = ["recon", "kl", "llike", "dis_real", "dis_fake", "gen", "d_x", "d_rec", "d_prior"]


class VAEGAN(ConvVAE):
    def __init__(self, input_shape, Z=16, loss="bce", channels=(32, 64), disc=(32, 64, 128), feature_layer=0,
                 gen_loss="ns", gamma=1.0):
        super().__init__(input_shape, Z, loss, channels)
        C, H, W = self.input_shape
        layers, cin, h, w = [], C, H, W
        for c in disc:
            layers += [nn.Conv2d(cin, int(c), 4, 2, 1), nn.LeakyReLU(0.2)]
            cin, h, w = int(c), h // 2, w // 2
        self.dis = nn.Sequential(*layers)
        self.dis_fc = nn.Linear(cin * h * w, 1)
        self.disc_channels = [int(c) for c in disc]
        self.feature_layer = int(feature_layer) or len(disc)
        self.gen_loss, self.gamma = gen_loss, float(gamma)

    def image(self, logits):
        return torch.sigmoid(logits) if self.loss == "bce" else logits

    def discriminate(self, x):
        """(logit [N], features [N, F_L]) of images x [N, D]."""
        h = x.reshape(x.shape[0], *self.input_shape)
        feat = None
        for i in range(len(self.disc_channels)):
            h = self.dis[2 * i + 1](self.dis[2 * i](h))
            if i + 1 == self.feature_layer:
                feat = h.flatten(1)
        return self.dis_fc(h.flatten(1)).squeeze(1), feat

    def terms(self, x, eps, zp):
        """Per-row terms [9, B] (TERMS order), differentiable."""
        logits, mu, logvar = ConvVAE.forward(self, x, eps=eps)
        xf = x.reshape(x.shape[0], -1).to(logits.dtype)
        if self.loss == "bce":
            recon = F.binary_cross_entropy_with_logits(logits, xf, reduction="none").sum(1)
        else:
            recon = ((xf - logits) ** 2).sum(1)
        kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1)
        x_rec = self.image(logits)
        x_p = self.image(self.decode(zp))
        B = x.shape[0]
        lg, feat = self.discriminate(torch.cat([xf, x_rec, x_p], 0))
        lx, lr, lp = lg[:B], lg[B:2 * B], lg[2 * B:]
        fx, fr = feat[:B], feat[B:2 * B]
        llike = 0.5 * ((fr - fx) ** 2).sum(1)
        dis_real = F.softplus(-lx)
        dis_fake = F.softplus(lr) + F.softplus(lp)
        if self.gen_loss == "ns":
            gen = F.softplus(-lr) + F.softplus(-lp)
        else:
            gen = -F.softplus(lr) - F.softplus(lp)
        return torch.stack([recon, kl, llike, dis_real, dis_fake, gen, torch.sigmoid(lx), torch.sigmoid(lr),
                            torch.sigmoid(lp)])

    def group_params(self):
        """{enc, dec, disc}: lists of (name, parameter), in the checkpoint's order."""
        out = {"enc": [], "dec": [], "disc": []}
        for n, p in self.named_parameters():
            g = "disc" if n.startswith("dis") else "dec" if n.startswith(("fc_dec", "dec.")) else "enc"
            out[g].append((n, p))
        return out

    def objectives(self, t, beta):
        """The batch-mean objective of each group from terms t [9, B]."""
        m = t.mean(1)
        return {"enc": beta * m[1] + m[2], "dec": self.gamma * m[2] + m[5], "disc": m[3] + m[4]}
