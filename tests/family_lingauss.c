/*
 * family_lingauss.c: a model family defined outside the library, registered
 * from this test program, which is otherwise the mpivae command line
 * (mpivae_cli_main). It shows that a family plugs in through family.h
 * alone: no file of the library or the command line knows it.
 *
 * --model lingauss: a linear Gaussian VAE (probabilistic PCA with an
 * amortised posterior).
 *   mu[B,Z]   = x[B,D] enc.weight[Z,D]^T + enc.bias[Z]
 *   logvar[Z] = enc.logvar (one per latent dimension, shared by the rows)
 *   z         = mu + exp(logvar/2) * eps
 *   out[B,D]  = z dec.weight[D,Z]^T + dec.bias[D] (logits under bce, the mean under mse)
 * Terms: recon (weight 1), kl (weight beta), and zvar, the posterior's mean
 * variance (reported only: a STAT term). Two parameter groups, "enc" (the
 * encoder's three tensors) and "dec", each with its own Adam step count.
 * The encoder's group sits out the steps whose reconstruction term per sample is above 45
 * (select_groups: a rule on the summed terms, the same on every rank), so
 * the two groups' step counts differ.
 * Tools: eval, sample, reconstruct and encode; interpolate, traverse and
 * anomaly are left out, so that their refusal can be tested.
 * Features (family.h's optional entry, for `mpivae fid`): the posterior
 * means, feat[B,Z] = mu, a linear map of the pixels that a test recomputes
 * from the checkpoint's tensors.
 */
#define _POSIX_C_SOURCE 200809L
#include "mpivae/family.h"
#include "mpivae/model.h"
#include "mpivae/ops.h"
#include "mpivae/status.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int mpivae_cli_main(int argc, char **argv);

static const vae_term terms[3] = { { "recon", VAE_TERM_ONE }, { "kl", VAE_TERM_BETA }, { "zvar", VAE_TERM_STAT } };

/* The tensors' offsets and the arena's buffers. */
typedef struct lg {
    size_t we, be, lv, wd, bd;
    float *mu, *z, *out, *dout, *dz, *dmu; /* [B,Z], [B,Z], [B,D], [B,D], [B,Z], [B,Z] */
} lg;

static void defaults(vae_arch *a, int hidden_set, int latent_set)
{
    if (!hidden_set) { /* unused by this family, but checked like every family's */
        a->n_hidden = 1;
        a->hidden[0] = 1;
    }
    if (!latent_set) a->latent = 4;
}

static int check(const vae_arch *a, int cli, char *why, size_t len)
{
    if (a->n_hidden == 1 && a->hidden[0] == 1) return VAE_OK;
    snprintf(why, len, "%s", cli ? "--model lingauss has no hidden layers: leave --hidden out"
                                 : "attribute 'hidden' must be [1] for model lingauss");
    return VAE_EINVAL;
}

static void plan(vae_model *m)
{
    const int D = m->D, Z = m->arch.latent;
    const float bd = 1.0f / sqrtf((float)D), bz = 1.0f / sqrtf((float)Z);
    vae_model_add_tensor(m, "enc.weight", 2, (int[]){ Z, D }, bd);
    vae_model_add_tensor(m, "enc.bias", 1, (int[]){ Z }, bd);
    vae_model_add_tensor(m, "enc.logvar", 1, (int[]){ Z }, 0.1f);
    size_t enc_end = m->n_params;
    vae_model_add_tensor(m, "dec.weight", 2, (int[]){ D, Z }, bz);
    vae_model_add_tensor(m, "dec.bias", 1, (int[]){ D }, bz);
    vae_model_add_group(m, "enc", 0, enc_end);
    vae_model_add_group(m, "dec", enc_end, m->n_params);
    vae_model_add_latent(m, "z", Z, 1, 1);
    m->noise_dim = m->prior_dim = Z;
    m->n_features = Z;
}

static int init(vae_model *m, int max_batch)
{
    const size_t B = (size_t)max_batch, D = (size_t)m->D, Z = (size_t)m->Z;
    lg *s = calloc(1, sizeof *s);
    m->arena = vae_model_alloc(B * (D * 3 + Z * 5) + 64);
    if (!s || !m->arena) {
        free(s);
        return vae_error(VAE_ENOMEM, "cannot allocate the lingauss model's buffers");
    }
    m->priv = s;
    s->we = m->tensors[0].offset;
    s->be = m->tensors[1].offset;
    s->lv = m->tensors[2].offset;
    s->wd = m->tensors[3].offset;
    s->bd = m->tensors[4].offset;
    float *p = m->arena;
    m->input = p, p += B * D;
    m->eps = p, p += B * Z;
    s->mu = p, p += B * Z;
    s->z = p, p += B * Z;
    s->dz = p, p += B * Z;
    s->dmu = p, p += B * Z;
    s->out = p, p += B * D;
    s->dout = p;
    return VAE_OK;
}

static void pass(vae_model *m, const vae_pass *p)
{
    lg *s = m->priv;
    const int B = p->B, D = m->D, Z = m->Z;
    const float *lv = m->params + s->lv;
    vae_linear_forward(m->input, m->params + s->we, m->params + s->be, s->mu, B, D, Z, VAE_ACT_NONE);
    for (int r = 0; r < B; r++)
        for (int j = 0; j < Z; j++)
            s->z[r * Z + j] = s->mu[r * Z + j] + (p->eps ? expf(0.5f * lv[j]) * p->eps[r * Z + j] : 0.0f);
    vae_linear_forward(s->z, m->params + s->wd, m->params + s->bd, s->out, B, Z, D, VAE_ACT_NONE);
    double *row_recon = p->row_terms, *row_kl = p->row_terms ? p->row_terms + B : NULL;
    double *row_zvar = p->row_terms ? p->row_terms + 2 * B : NULL;
    if (row_recon) memset(row_recon, 0, (size_t)B * sizeof(double));
    float *dout = p->backward ? s->dout : NULL;
    double recon = m->arch.loss == VAE_LOSS_BCE ? vae_bce_logits_loss(s->out, m->input, dout, B, D, p->grad_scale, row_recon)
                                                : vae_mse_loss(s->out, m->input, dout, B, D, p->grad_scale, row_recon);
    double kl = 0.0, zvar = 0.0;
    for (int j = 0; j < Z; j++) zvar += exp((double)lv[j]) / Z;
    for (int r = 0; r < B; r++) {
        double k = 0.0;
        for (int j = 0; j < Z; j++) {
            double mu = s->mu[r * Z + j];
            k += -0.5 * (1.0 + lv[j] - mu * mu - exp((double)lv[j]));
        }
        if (row_kl) row_kl[r] = k;
        if (row_zvar) row_zvar[r] = zvar;
        kl += k;
    }
    if (p->terms) {
        p->terms[0] = recon;
        p->terms[1] = kl;
        p->terms[2] = zvar * B;
    }
    if (!p->backward) return;
    float *g = m->grads;
    /* Decoder: dW_d += dout^T z, db_d += sum dout, dz = dout W_d. */
    vae_linear_backward(s->z, m->params + s->wd, s->dout, s->dz, g + s->wd, g + s->bd, B, Z, D);
    const float kscale = p->grad_scale * p->beta;
    for (int r = 0; r < B; r++)
        for (int j = 0; j < Z; j++) {
            float e = p->eps ? p->eps[r * Z + j] : 0.0f, sd = expf(0.5f * lv[j]), dz = s->dz[r * Z + j];
            s->dmu[r * Z + j] = dz + kscale * s->mu[r * Z + j];
            g[s->lv + j] += dz * e * 0.5f * sd + kscale * 0.5f * (expf(lv[j]) - 1.0f);
        }
    vae_linear_backward(m->input, m->params + s->we, s->dmu, NULL, g + s->we, g + s->be, B, D, Z);
}

static void encode(vae_model *m, int B, float *mu, float *logvar)
{
    lg *s = m->priv;
    const int Z = m->Z;
    vae_linear_forward(m->input, m->params + s->we, m->params + s->be, s->mu, B, m->D, Z, VAE_ACT_NONE);
    for (int r = 0; r < B; r++) {
        if (mu) memcpy(mu + (size_t)r * Z, s->mu + (size_t)r * Z, (size_t)Z * sizeof(float));
        if (logvar) memcpy(logvar + (size_t)r * Z, m->params + s->lv, (size_t)Z * sizeof(float));
    }
}

/* feat[B, Z] = x enc.weight^T + enc.bias: the posterior means. */
static void features(vae_model *m, int B, float *feat)
{
    lg *s = m->priv;
    vae_linear_forward(m->input, m->params + s->we, m->params + s->be, feat, B, m->D, m->Z, VAE_ACT_NONE);
}

static void decode(vae_model *m, const float *z, int B, float *images)
{
    lg *s = m->priv;
    vae_linear_forward(z, m->params + s->wd, m->params + s->bd, images, B, m->Z, m->D, VAE_ACT_NONE);
    if (m->arch.loss == VAE_LOSS_BCE) vae_sigmoid(images, images, (size_t)B * m->D);
}

static void generate(vae_model *m, float *noise, float temperature, int B, float *images)
{
    for (size_t i = 0; i < (size_t)B * m->Z; i++) noise[i] *= temperature;
    decode(m, noise, B, images);
}

static void select_groups(const vae_model *m, const double *t, unsigned char *apply)
{
    (void)m;
    if (t[0] > 45.0) apply[0] = 0; /* "enc" */
}

static double flops(const vae_model *m) { return 2.0 * 2.0 * m->D * m->Z * 2.0; }

static void describe(const vae_arch *a, char *buf, size_t len)
{
    (void)a;
    snprintf(buf, len, " (linear Gaussian)");
}

static const vae_family lingauss = {
    .name = "lingauss",
    .help = "a linear Gaussian VAE (a test's family)",
    .n_terms = 3,
    .terms = terms,
    .tools = VAE_TOOL_EVAL | VAE_TOOL_SAMPLE | VAE_TOOL_RECONSTRUCT | VAE_TOOL_ENCODE,
    .defaults = defaults,
    .check = check,
    .plan = plan,
    .init = init,
    .pass = pass,
    .encode = encode,
    .decode = decode,
    .generate = generate,
    .flops = flops,
    .select_groups = select_groups,
    .describe = describe,
    .features = features,
};

int main(int argc, char **argv)
{
    if (vae_family_register(&lingauss) < 0) {
        fprintf(stderr, "cannot register the family lingauss\n");
        return 2;
    }
    return mpivae_cli_main(argc, argv);
}
