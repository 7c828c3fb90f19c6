/*
 * family_vaegan.c: --model vaegan, the VAE-GAN of Larsen et al. 2016
 * ("Autoencoding beyond pixels using a learned similarity metric"): the conv
 * VAE's encoder and decoder (family_conv.c's layers) and a discriminator
 * whose features replace the pixels as the reconstruction metric.
 *
 * Networks (three parameter groups, each with its own Adam and step count):
 *   enc:  the conv VAE's encoder and heads (enc.*, fc_mu, fc_logvar)
 *   dec:  its decoder (fc_dec, dec.*): logits[D]; the image is sigmoid(logits)
 *         under --loss bce, the logits themselves under mse
 *   disc: dis.0, dis.2, ...: Conv2d(k4, s2, p1) with LeakyReLU(0.2) after each
 *         (--disc-hidden channels), then dis_fc: Linear(flat, 1), the logit of
 *         D(x) = sigmoid(logit)
 *
 * One pass, per row, with z = mu + sigma eps and z_p ~ N(0, I) (the noise of a
 * row is [eps | z_p], 2Z values), x~ = Dec(z), x_p = Dec(z_p), and f the
 * output of discriminator layer L (--feature-layer):
 *   kl       KL(q(z|x) || N(0, I))                            (L_prior)
 *   llike    1/2 sum_j (f_j(x~) - f_j(x))^2                   (L_llike: the
 *            negative log-likelihood of f(x) under N(f(x~), I), less the
 *            constant (F/2) ln(2 pi), F the number of features)
 *   dis_real -log D(x)
 *   dis_fake -log(1 - D(x~)) - log(1 - D(x_p))   (dis_real + dis_fake = -L_GAN)
 *   gen      the decoder's adversarial loss: -log D(x~) - log D(x_p)
 *            (--gen-loss ns, the default) or log(1 - D(x~)) + log(1 - D(x_p))
 *            (minimax: the terms of L_GAN that the decoder changes, -dis_fake)
 *   recon    the pixel reconstruction term of the conv VAE (reported: with kl
 *            it makes the ELBO that eval prints, not what is trained)
 *   d_x, d_rec, d_prior: D(x), D(x~), D(x_p), whose means the log shows
 * The gradients, all at the same parameters, into one block (one reduction):
 *   enc  <- d(beta kl + llike)
 *   dec  <- d(gamma llike + gen)
 *   disc <- d(dis_real + dis_fake)
 * so no gradient of the GAN terms reaches the encoder and none of llike the
 * discriminator. Larsen's equilibrium rule (--equilibrium E, --eq-margin M)
 * leaves the discriminator or the decoder out of a step from the step's summed
 * dis_real and dis_fake (select_groups), the same on every rank.
 */
#define _POSIX_C_SOURCE 200809L
#include "stack.h"

#include "mpivae/blas.h"
#include "mpivae/conv.h"
#include "mpivae/ops.h"
#include "mpivae/status.h"

#include <cblas.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SLOPE 0.2f /* LeakyReLU's negative slope */

enum { T_RECON, T_KL, T_LLIKE, T_DREAL, T_DFAKE, T_GEN, T_DX, T_DREC, T_DPRIOR, N_TERMS };

static const vae_term vg_terms[N_TERMS] = {
    { "recon", VAE_TERM_ONE },     { "kl", VAE_TERM_BETA },      { "llike", VAE_TERM_STAT },
    { "dis_real", VAE_TERM_STAT }, { "dis_fake", VAE_TERM_STAT }, { "gen", VAE_TERM_STAT },
    { "d_x", VAE_TERM_STAT },      { "d_rec", VAE_TERM_STAT },   { "d_prior", VAE_TERM_STAT },
};

enum { G_ENC, G_DEC, G_DISC };

typedef struct dconv {
    int cin, cout, hin, win, hout, wout, layout;
    size_t w, b, out; /* offsets in the block; floats per row of the output */
} dconv;

typedef struct vg {
    int nd, L;            /* conv layers; the feature layer (1..nd) */
    dconv d[VAE_MAX_HIDDEN];
    size_t fw, fb;        /* dis_fc's weight [1, F] and bias [1] */
    int F, fc_c, fc_hw, fc_nhwc; /* its inputs; the last conv's output is channels last when fc_nhwc */
    size_t rs[VAE_MAX_HIDDEN + 1]; /* floats per row of the discriminator's activations: rs[0] = D */
    size_t maxrs;
    /* Arena (for 3 * max_batch rows of the discriminator). */
    float *act[VAE_MAX_HIDDEN + 1]; /* act[0]: the discriminator's input [x; x~; x_p]; act[i]: layer i's output */
    float *logit, *dl;    /* [3B] */
    float *wp, *dwp;      /* [F] dis_fc's weight in the order of its input, and its gradient */
    float *g0, *g1;       /* [3B, maxrs] */
    float *dxa, *dxg;     /* [B, D], [2B, D]: gradients at the discriminator's input */
    float *e1;            /* [B, Z]: the reparameterisation's noise */
    float *keep_dec;      /* the decoder's gradient as the pass found it (it adds into it) */
    float *scratch;
    size_t scratch_len;
} vg;

/*
 * Training options, chosen by FID (README, "Figures of the VAE-GAN and FID"):
 * the parameters' moving average, a discriminator slower than the rest, and
 * a KL weight that lets the encoder carry more than llike's scale allows at 1.
 */
static const char *const vg_option_defaults[] = { "ema=0.999", "disc-lr=3e-4", "beta=0.5", NULL };

/* The conv VAE's 32,64 and 16; a discriminator of 32,64,128 (--feature-layer 0: the last layer gives the features). */
static void defaults(vae_arch *a, int hidden_set, int latent_set)
{
    if (!hidden_set) {
        a->n_hidden = 2;
        a->hidden[0] = 32;
        a->hidden[1] = 64;
    }
    if (!latent_set) a->latent = 16;
    if (a->n_disc == 0) {
        a->n_disc = 3;
        a->disc[0] = 32;
        a->disc[1] = 64;
        a->disc[2] = 128;
    }
    if (a->feature_layer == 0) a->feature_layer = a->n_disc;
}

static int check(const vae_arch *a, int cli, char *why, size_t len)
{
    int f = 1 << a->n_hidden;
    if (a->Hh % f || a->W % f) {
        if (cli)
            snprintf(why, len, "--model vaegan with %d conv layers needs H and W divisible by %d, but the data is %dx%d "
                     "(fewer layers with --hidden)", a->n_hidden, f, a->Hh, a->W);
        else
            snprintf(why, len, "attribute 'input_shape' is %dx%dx%d, but %d conv layers need H and W divisible by %d",
                     a->C, a->Hh, a->W, a->n_hidden, f);
        return VAE_EINVAL;
    }
    if (a->n_disc < 1) {
        snprintf(why, len, cli ? "--model vaegan needs --disc-hidden with 1..%d channel counts"
                               : "attribute 'disc_hidden' is missing: a vaegan checkpoint needs 1..%d channel counts",
                 VAE_MAX_HIDDEN);
        return VAE_EINVAL;
    }
    int h = a->Hh, w = a->W;
    for (int i = 0; i < a->n_disc; i++) {
        if (h < 2 || w < 2) {
            snprintf(why, len, "%s: %d discriminator layers halve %dx%d to below 1x1 at layer %d (fewer layers)",
                     cli ? "--disc-hidden" : "attribute 'disc_hidden'", a->n_disc, a->Hh, a->W, i + 1);
            return VAE_EINVAL;
        }
        h /= 2;
        w /= 2;
    }
    if (a->feature_layer < 1 || a->feature_layer > a->n_disc) {
        snprintf(why, len, "%s %d is not a discriminator layer (1..%d)", cli ? "--feature-layer" : "attribute 'feature_layer'",
                 a->feature_layer, a->n_disc);
        return VAE_EINVAL;
    }
    return VAE_OK;
}

static void plan(vae_model *m)
{
    const vae_arch *a = &m->arch;
    vg *g = calloc(1, sizeof *g);
    m->priv = g;
    vae__conv_plan_layers(m);
    vae__stack_finish_plan(m);
    m->n_ready = 0; /* one range for the whole block, after the pass: the groups' gradients end in no layer order */
    m->noise_dim = 2 * m->Z;
    size_t dec_lo = m->layers[m->n_enc].w, dis_lo = m->n_params;
    if (!g) return; /* init reports it */
    g->nd = a->n_disc;
    g->L = a->feature_layer;
    int cin = a->C, h = a->Hh, w = a->W;
    g->rs[0] = (size_t)m->D;
    g->maxrs = g->rs[0];
    char name[VAE_NAME_LEN];
    for (int i = 0; i < g->nd; i++) {
        dconv *c = &g->d[i];
        c->cin = cin;
        c->cout = a->disc[i];
        c->hin = h;
        c->win = w;
        c->hout = h / 2; /* (h + 2 - 4) / 2 + 1 */
        c->wout = w / 2;
        c->out = (size_t)c->cout * c->hout * c->wout;
        float bound = 1.0f / sqrtf((float)(cin * 16));
        snprintf(name, sizeof name, "dis.%d.weight", 2 * i);
        c->w = vae_model_add_tensor(m, name, 4, (int[]){ c->cout, cin, 4, 4 }, bound);
        snprintf(name, sizeof name, "dis.%d.bias", 2 * i);
        c->b = vae_model_add_tensor(m, name, 1, (int[]){ c->cout }, bound);
        /* Channels last between two layers where it pays (conv.h); the image itself is NCHW. */
        if (i > 0 && (g->d[i - 1].layout & VAE_CONV_Y_NHWC)) c->layout |= VAE_CONV_X_NHWC;
        if (vae_conv_channels_last(c->cout)) c->layout |= VAE_CONV_Y_NHWC;
        g->rs[i + 1] = c->out;
        if (c->out > g->maxrs) g->maxrs = c->out;
        cin = c->cout;
        h = c->hout;
        w = c->wout;
    }
    g->F = (int)g->d[g->nd - 1].out;
    g->fc_c = cin;
    g->fc_hw = h * w;
    g->fc_nhwc = (g->d[g->nd - 1].layout & VAE_CONV_Y_NHWC) != 0;
    float bound = 1.0f / sqrtf((float)g->F);
    g->fw = vae_model_add_tensor(m, "dis_fc.weight", 2, (int[]){ 1, g->F }, bound);
    g->fb = vae_model_add_tensor(m, "dis_fc.bias", 1, (int[]){ 1 }, bound);
    vae_model_add_group(m, "enc", 0, dec_lo);
    vae_model_add_group(m, "dec", dec_lo, dis_lo);
    vae_model_add_group(m, "disc", dis_lo, m->n_params);
}

static int init(vae_model *m, int max_batch)
{
    vg *g = m->priv;
    if (!g) return vae_error(VAE_ENOMEM, "cannot allocate the vaegan's plan");
    /* The stack's layers and buffers for the decoder's 2B rows (z and z_p); the encoder uses the first B. */
    int rc = vae__stack_init(m, 2 * max_batch);
    if (rc) return rc;
    size_t B3 = 3 * (size_t)max_batch, need = 0;
    for (int i = 0; i < g->nd; i++) {
        const dconv *c = &g->d[i];
        size_t s = vae_conv2d_scratch((int)B3, c->cin, c->hin, c->win, c->cout, 4, 2, 1);
        if (s > need) need = s;
    }
    g->scratch_len = need;
    size_t total = 0, n[64];
    int k = 0;
    for (int i = 0; i <= g->nd; i++) n[k++] = B3 * g->rs[i];
    n[k++] = B3;                                 /* logit */
    n[k++] = B3;                                 /* dl */
    n[k++] = (size_t)g->F;                       /* wp */
    n[k++] = (size_t)g->F;                       /* dwp */
    n[k++] = B3 * g->maxrs;                      /* g0 */
    n[k++] = B3 * g->maxrs;                      /* g1 */
    n[k++] = (size_t)max_batch * m->D;           /* dxa */
    n[k++] = 2 * (size_t)max_batch * m->D;       /* dxg */
    n[k++] = (size_t)max_batch * m->Z;           /* e1 */
    size_t ndec = m->groups[G_DEC].hi - m->groups[G_DEC].lo;
    n[k++] = ndec;                               /* keep_dec */
    n[k++] = need;                               /* scratch */
    for (int i = 0; i < k; i++) total += (n[i] + 15) & ~(size_t)15;
    /* The family's buffers live behind its plan in m->priv (freed with it), 64-byte aligned. */
    vg *ng = realloc(g, sizeof *g + 64 + total * sizeof(float));
    if (!ng)
        return vae_error(VAE_ENOMEM, "cannot allocate the discriminator's activations (%.1f GB for batch %d)",
                         total * sizeof(float) / 1e9, max_batch);
    g = ng;
    m->priv = g;
    float *p = (float *)(((uintptr_t)(g + 1) + 63) & ~(uintptr_t)63);
    memset(p, 0, total * sizeof(float));
    k = 0;
#define TAKE(ptr) do { (ptr) = p; p += (n[k++] + 15) & ~(size_t)15; } while (0)
    for (int i = 0; i <= g->nd; i++) TAKE(g->act[i]);
    TAKE(g->logit);
    TAKE(g->dl);
    TAKE(g->wp);
    TAKE(g->dwp);
    TAKE(g->g0);
    TAKE(g->g1);
    TAKE(g->dxa);
    TAKE(g->dxg);
    TAKE(g->e1);
    TAKE(g->keep_dec);
    TAKE(g->scratch);
#undef TAKE
    /* The kinks, for the finite-difference tests: the decoder's ReLUs over both halves, every LeakyReLU. */
    m->n_relu = 0;
    for (int i = m->n_enc; i < m->n_enc + m->n_dec; i++)
        if (m->layers[i].act == VAE_ACT_RELU) {
            m->relu_at[m->n_relu] = m->act[i + 1];
            m->relu_row[m->n_relu++] = 2 * (size_t)m->layers[i].out;
        }
    for (int i = 0; i < g->nd; i++) {
        m->relu_at[m->n_relu] = g->act[i + 1];
        m->relu_row[m->n_relu++] = 3 * g->rs[i + 1];
    }
    return VAE_OK;
}

/* ---- the discriminator ---- */

/* dis_fc's weight in the order of its input (channels last when the last conv keeps it so). */
static void fc_permute(vae_model *m, vg *g)
{
    const float *w = m->params + g->fw;
    if (!g->fc_nhwc) {
        memcpy(g->wp, w, (size_t)g->F * sizeof(float));
        return;
    }
    for (int c = 0; c < g->fc_c; c++)
        for (int t = 0; t < g->fc_hw; t++) g->wp[(size_t)t * g->fc_c + c] = w[(size_t)c * g->fc_hw + t];
}

/* Rows [0, R) of act[0]: every layer's output and the logits. */
static void disc_forward(vae_model *m, vg *g, int R)
{
    for (int i = 0; i < g->nd; i++) {
        const dconv *c = &g->d[i];
        vae_conv2d_forward(g->act[i], m->params + c->w, m->params + c->b, g->act[i + 1], R, c->cin, c->hin, c->win,
                           c->cout, 4, 2, 1, c->layout, g->scratch);
        vae_leaky_relu(g->act[i + 1], g->act[i + 1], (size_t)R * c->out, SLOPE);
    }
    fc_permute(m, g);
    const float *y = g->act[g->nd];
    cblas_sgemv(CblasRowMajor, CblasNoTrans, R, g->F, 1.0f, y, g->F, g->wp, 1, 0.0f, g->logit, 1);
    const float b = m->params[g->fb];
    for (int r = 0; r < R; r++) g->logit[r] += b;
}

/*
 * Backward from dy, the gradient at the output of conv layer `top` (0-based)
 * for rows [r0, r0 + nr) (overwritten), down to the input: dx[nr, D] (NULL:
 * not wanted). With params, the parameter gradients are added into the
 * block; without, only the input gradients are computed.
 */
static void disc_back(vae_model *m, vg *g, int r0, int nr, int top, float *dy, float *dx, int params)
{
    float *other = dy == g->g0 ? g->g1 : g->g0;
    for (int i = top; i >= 0; i--) {
        const dconv *c = &g->d[i];
        vae_leaky_relu_backward(g->act[i + 1] + (size_t)r0 * g->rs[i + 1], dy, (size_t)nr * c->out, SLOPE);
        float *dX = i == 0 ? dx : other;
        vae_conv2d_backward(g->act[i] + (size_t)r0 * g->rs[i], m->params + c->w, dy, dX, params ? m->grads + c->w : NULL,
                            params ? m->grads + c->b : NULL, nr, c->cin, c->hin, c->win, c->cout, 4, 2, 1, c->layout,
                            g->scratch);
        other = dy;
        dy = dX;
    }
}

/* dis_fc backward for rows [r0, r0 + nr) with dl[nr]: dy[nr, F] = dl wp^T; with params, its gradient too. */
static void fc_back(vae_model *m, vg *g, int r0, int nr, const float *dl, float *dy, int params)
{
    const float *y = g->act[g->nd] + (size_t)r0 * g->F;
    memset(dy, 0, (size_t)nr * g->F * sizeof(float));
    cblas_sger(CblasRowMajor, nr, g->F, 1.0f, dl, 1, g->wp, 1, dy, g->F);
    if (!params) return;
    cblas_sgemv(CblasRowMajor, CblasTrans, nr, g->F, 1.0f, y, g->F, dl, 1, 0.0f, g->dwp, 1);
    float *gw = m->grads + g->fw;
    double db = 0.0;
    for (int r = 0; r < nr; r++) db += dl[r];
    m->grads[g->fb] += (float)db;
    if (!g->fc_nhwc) {
        for (int j = 0; j < g->F; j++) gw[j] += g->dwp[j];
        return;
    }
    for (int c = 0; c < g->fc_c; c++)
        for (int t = 0; t < g->fc_hw; t++) gw[(size_t)c * g->fc_hw + t] += g->dwp[(size_t)t * g->fc_c + c];
}

static double softplus(double a) { return (a > 0 ? a : 0) + log1p(exp(-fabs(a))); }
static double sigm(double a) { return 1.0 / (1.0 + exp(-a)); }

/* The decoder's image from its logits: sigmoid under bce, the logits under mse. */
static void to_image(const vae_model *m, const float *logits, float *img, size_t n)
{
    if (m->arch.loss == VAE_LOSS_BCE) vae_sigmoid(logits, img, n);
    else memcpy(img, logits, n * sizeof(float));
}

/* dlogits = dimg * d image / d logits, rows of D (img as to_image made it). */
static void image_back(const vae_model *m, const float *img, const float *dimg, float *dlogits, size_t n)
{
    if (m->arch.loss != VAE_LOSS_BCE) {
        memcpy(dlogits, dimg, n * sizeof(float));
        return;
    }
    for (size_t i = 0; i < n; i++) dlogits[i] = dimg[i] * img[i] * (1.0f - img[i]);
}

/* The decoder's backward over nr rows from dlogits in m->g0 (dz: the first layer's input gradient, or NULL). */
static void decoder_back(vae_model *m, int nr, float *dz)
{
    const int nl = m->n_enc + m->n_dec;
    float *dY = m->g0, *other = m->g1;
    for (int i = nl - 1; i >= m->n_enc; i--) {
        float *dX = i == m->n_enc ? dz : other;
        vae__stack_layer_backward(m, i, dY, dX, nr);
        other = dY;
        dY = dX;
    }
}

static void pass(vae_model *m, const vae_pass *p)
{
    vg *g = m->priv;
    const int B = p->B, Z = m->Z, D = m->D, nl = m->n_enc + m->n_dec;
    const size_t fL = g->rs[g->L];
    const float gs = p->grad_scale;
    const float *x = m->input;
    /* Encoder, then the decoder on [z; z_p]: 2B rows. */
    const float *mulv = vae__stack_encode_mulv(m, B);
    const float *e1 = NULL;
    if (p->eps) {
        for (int r = 0; r < B; r++) {
            memcpy(g->e1 + (size_t)r * Z, p->eps + (size_t)r * 2 * Z, (size_t)Z * sizeof(float));
            memcpy(m->z + (size_t)(B + r) * Z, p->eps + (size_t)r * 2 * Z + Z, (size_t)Z * sizeof(float));
        }
        e1 = g->e1;
    } else {
        memset(m->z + (size_t)B * Z, 0, (size_t)B * Z * sizeof(float)); /* z_p at the prior's mean */
    }
    vae_reparam_forward(mulv, e1, m->z, B, Z);
    for (int i = m->n_enc; i < nl; i++) vae__stack_layer_forward(m, i, 2 * B);
    const float *logits = m->act[nl];
    /* The discriminator on [x; x~; x_p]: 3B rows. */
    memcpy(g->act[0], x, (size_t)B * D * sizeof(float));
    to_image(m, logits, g->act[0] + (size_t)B * D, 2 * (size_t)B * D);
    disc_forward(m, g, 3 * B);

    /* The terms, per row. */
    double *rt = p->row_terms;
    double *row_recon = rt ? rt + (size_t)T_RECON * B : NULL, *row_kl = rt ? rt + (size_t)T_KL * B : NULL;
    if (row_recon) memset(row_recon, 0, (size_t)B * sizeof(double));
    double recon = m->arch.loss == VAE_LOSS_BCE ? vae_bce_logits_loss(logits, x, NULL, B, D, 1.0f, row_recon)
                                                : vae_mse_loss(logits, x, NULL, B, D, 1.0f, row_recon);
    float *dmulv = p->backward ? m->dmulv : NULL;
    if (dmulv) memset(dmulv, 0, (size_t)B * 2 * Z * sizeof(float));
    double kl = p->free_bits > 0.0f ? vae_kl_free_bits_loss(mulv, dmulv, B, Z, gs * p->beta, p->free_bits, row_kl)
                                    : vae_kl_loss(mulv, dmulv, B, Z, gs * p->beta, row_kl);
    double sum[N_TERMS] = { 0 };
    sum[T_RECON] = recon;
    sum[T_KL] = kl;
    const float *fx = g->act[g->L], *frec = g->act[g->L] + (size_t)B * fL;
    const int ns = m->arch.gen_loss == VAE_GEN_NS;
    for (int r = 0; r < B; r++) {
        double ll = 0.0;
        const float *a = frec + (size_t)r * fL, *b = fx + (size_t)r * fL;
        for (size_t j = 0; j < fL; j++) {
            double d = (double)a[j] - b[j];
            ll += d * d;
        }
        double lx = g->logit[r], lr = g->logit[B + r], lp = g->logit[2 * B + r];
        double v[N_TERMS];
        v[T_LLIKE] = 0.5 * ll;
        v[T_DREAL] = softplus(-lx);
        v[T_DFAKE] = softplus(lr) + softplus(lp);
        v[T_GEN] = ns ? softplus(-lr) + softplus(-lp) : -softplus(lr) - softplus(lp);
        v[T_DX] = sigm(lx);
        v[T_DREC] = sigm(lr);
        v[T_DPRIOR] = sigm(lp);
        for (int t = T_LLIKE; t < N_TERMS; t++) {
            sum[t] += v[t];
            if (rt) rt[(size_t)t * B + r] = v[t];
        }
    }
    if (p->terms)
        for (int t = 0; t < N_TERMS; t++) p->terms[t] = sum[t];
    if (!p->backward) return;

    /*
     * (1) d llike / d x~ through the discriminator (input gradients only),
     * for the encoder as it is and for the decoder times gamma.
     */
    float *dy = g->g0;
    for (int r = 0; r < B; r++) {
        const float *a = frec + (size_t)r * fL, *b = fx + (size_t)r * fL;
        float *d = dy + (size_t)r * fL;
        for (size_t j = 0; j < fL; j++) d[j] = gs * (a[j] - b[j]);
    }
    disc_back(m, g, B, B, g->L - 1, dy, g->dxa, 0);
    /* (2) d gen / d [x~; x_p] through the discriminator (input gradients only). */
    for (int r = 0; r < 2 * B; r++) {
        double s = sigm(g->logit[B + r]);
        g->dl[r] = (float)(ns ? gs * (s - 1.0) : -gs * s);
    }
    fc_back(m, g, B, 2 * B, g->dl, g->g0, 0);
    disc_back(m, g, B, 2 * B, g->nd - 1, g->g0, g->dxg, 0);
    /*
     * (3) The decoder: llike's gradient over the B rows of x~ gives dz (for
     * the encoder) and the decoder's llike gradient, scaled to gamma times
     * it; then gen's over all 2B rows is added.
     */
    const float *img = g->act[0] + (size_t)B * D;
    const vae_param_group *dec = &m->groups[G_DEC];
    const size_t ndec = dec->hi - dec->lo;
    memcpy(g->keep_dec, m->grads + dec->lo, ndec * sizeof(float));
    memset(m->grads + dec->lo, 0, ndec * sizeof(float));
    image_back(m, img, g->dxa, m->g0, (size_t)B * D);
    decoder_back(m, B, m->dz);
    const float gamma = (float)m->arch.gamma;
    for (size_t j = 0; j < ndec; j++) m->grads[dec->lo + j] = gamma * m->grads[dec->lo + j] + g->keep_dec[j];
    image_back(m, img, g->dxg, m->g0, 2 * (size_t)B * D);
    decoder_back(m, 2 * B, NULL);
    /* The encoder: beta kl's gradient (already in dmulv) and llike's through z. */
    vae_reparam_backward(mulv, e1, m->dz, m->dmulv, B, Z);
    float *dY = m->dmulv, *other = m->g0;
    for (int i = m->n_enc - 1; i >= 0; i--) {
        float *dX = i == 0 ? NULL : other;
        vae__stack_layer_backward(m, i, dY, dX, B);
        other = dY == m->dmulv ? m->g1 : dY;
        dY = dX;
    }
    /* (4) The discriminator's own gradient: -L_GAN over [x; x~; x_p], targets 1, 0, 0. */
    for (int r = 0; r < 3 * B; r++) g->dl[r] = (float)(gs * (sigm(g->logit[r]) - (r < B ? 1.0 : 0.0)));
    fc_back(m, g, 0, 3 * B, g->dl, g->g0, 1);
    disc_back(m, g, 0, 3 * B, g->nd - 1, g->g0, NULL, 1);
}

/*
 * Larsen's equilibrium rule, from the step's means over every rank: the
 * discriminator's loss on real images (dis_real) and on fake ones (dis_fake
 * / 2, the mean of its two parts). Either below E - M: the discriminator
 * wins too easily and sits the step out; either above E + M: the decoder
 * does; both would: both train.
 */
static void select_groups(const vae_model *m, const double *terms, unsigned char *apply)
{
    const double E = m->arch.equilibrium, M = m->arch.eq_margin;
    if (!(E > 0.0)) return;
    double real = terms[T_DREAL], fake = terms[T_DFAKE] / 2;
    int dis = !(real < E - M || fake < E - M), dec = !(real > E + M || fake > E + M);
    if (!dis && !dec) dis = dec = 1;
    if (!dis) apply[G_DISC] = 0;
    if (!dec) apply[G_DEC] = 0;
}

/* The importance weights of the VAE inside (its pixel likelihood): the reparameterisation's half of the noise. */
static void log_weights(vae_model *m, const float *eps, int B, int one_row, double *logw)
{
    vg *g = m->priv;
    const int Z = m->Z;
    for (int r = 0; r < B; r++) memcpy(g->e1 + (size_t)r * Z, eps + (size_t)r * 2 * Z, (size_t)Z * sizeof(float));
    vae__stack_log_weights(m, g->e1, B, one_row, logw);
}

/*
 * Per data row: the encoder once; the decoder forward on 2 rows, backward
 * on 3; the discriminator forward on 3, its weight gradient on 3 and input
 * gradients on 6 (the first layer's on 3).
 */
static double flops(const vae_model *m)
{
    const vg *g = m->priv;
    double f = 0.0;
    for (int i = 0; i < m->n_enc + m->n_dec; i++) {
        const vae_layer *l = &m->layers[i];
        double mac = l->kind == VAE_LAYER_LINEAR ? (double)l->in * l->out
                     : l->kind == VAE_LAYER_CONV ? (double)l->cout * l->hout * l->wout * l->cin * 16
                                                 : (double)l->cin * l->hin * l->win * l->cout * 16;
        f += 2.0 * mac * (i < m->n_enc ? (i == 0 ? 2.0 : 3.0) : 2.0 + 3.0 * 2.0);
    }
    for (int i = 0; g && i < g->nd; i++) {
        const dconv *c = &g->d[i];
        double mac = (double)c->out * c->cin * 16;
        f += 2.0 * mac * (3.0 + 3.0 + (i == 0 ? 3.0 : 6.0));
    }
    if (g) f += 2.0 * g->F * (3.0 + 3.0 + 6.0);
    return f;
}

static void describe(const vae_arch *a, char *buf, size_t len)
{
    vae__stack_describe(a, "channels", buf, len);
    size_t n = strlen(buf);
    n += (size_t)snprintf(buf + n, n < len ? len - n : 0, " disc");
    for (int i = 0; i < a->n_disc && n < len; i++) n += (size_t)snprintf(buf + n, len - n, "%s%d", i ? "," : " ", a->disc[i]);
    if (n < len)
        snprintf(buf + n, len - n, " features layer %d gamma %g %s%s", a->feature_layer, a->gamma,
                 a->gen_loss == VAE_GEN_NS ? "non-saturating" : "minimax",
                 a->equilibrium > 0 ? " equilibrium" : "");
}

const vae_family vae_family_vaegan = {
    .name = "vaegan",
    .help = "VAE-GAN: the conv VAE with a discriminator's features as the reconstruction metric",
    .n_terms = N_TERMS,
    .terms = vg_terms,
    .tools = VAE_TOOL_EVAL | VAE_TOOL_SAMPLE | VAE_TOOL_RECONSTRUCT | VAE_TOOL_INTERPOLATE | VAE_TOOL_TRAVERSE |
             VAE_TOOL_ENCODE,
    .defaults = defaults,
    .option_defaults = vg_option_defaults,
    .check = check,
    .plan = plan,
    .init = init,
    .pass = pass,
    .encode = vae__stack_encode,
    .decode = vae__stack_decode,
    .generate = vae__stack_generate,
    .log_weights = log_weights,
    .flops = flops,
    .select_groups = select_groups,
    .describe = describe,
    .eval_note = "loss = recon + beta * kl (with beta 1, the negative ELBO of the decoder's pixels under a Bernoulli "
                 "or Gaussian likelihood; vaegan's default beta is 0.5), "
                 "which a VAE-GAN does not train: its decoder learns from llike (the discriminator's features) and "
                 "gen; compare VAE-GANs by FID (mpivae fid)",
};
