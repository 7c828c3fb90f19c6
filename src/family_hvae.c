/*
 * family_hvae.c: --model hvae, a hierarchical VAE with latent groups at
 * several scales (after NVAE, Vahdat and Kautz 2020, and VDVAE, Child 2021).
 *
 * Scales s = 0..S-1 (S = the count of --hidden): scale 0 is the input's
 * H x W, each next one ceil(H/2) x ceil(W/2); --hidden gives the channels C_s
 * of each, --groups the latent groups G_s at each, --latent the channels Zc
 * of every group (a group at scale s holds Zc x H_s x W_s values).
 *
 *   bottom-up (deterministic)            top-down (generative, shared by q and p)
 *   x -> stem 3x3 -> res ---------> bu_0   h0 (learned, top scale) -> groups at S-1
 *          down 3x3/2 -> res -----> bu_1      -> up 3x3/2 -> groups at S-2 ... -> groups at 0
 *          ...                                -> relu -> out 3x3 -> logits (or the mean)
 *   a group k at scale s, given the stream h and bu_s:
 *     prior      p(z_k | z_>k)     = N(mu_p, sigma_p):  [mu_p, r_p] = conv3x3(h)
 *     posterior  q(z_k | x, z_>k)  = N(mu_q, sigma_q):  [a, r_q] = conv3x3(h + bu_s)
 *       residual (NVAE):  mu_q = mu_p + a, log sigma_q = log sigma_p + sc(r_q)
 *       merge (LVAE):     [a, r_q] = conv3x3(bu_s) is a bottom-up estimate N(a, e^sc(r_q)),
 *                         merged with the prior by precision weighting
 *     log sigma_p = sc(r_p), with sc(r) = 5 tanh(r / 5): every log sigma is
 *     bounded (|log sigma_p| < 5, |log sigma_q| < 10), a floor on the variance
 *     z = mu_q + sigma_q eps (training), mu_p + T sigma_p eps (sampling)
 *     h <- res(h + conv1x1(z))
 *   res(h) = h + conv3x3(relu(conv3x3(relu(h))))
 * Loss per row: recon + beta * sum_k max(KL_k, free_bits), KL_k analytic.
 *
 * Every activation inside is channels last ([B, H, W, C]); the input and
 * the logits are NCHW (the same for one channel). A latent group's values
 * are in [H, W, Zc] order within a row of all latents (top group first).
 * The tensors keep PyTorch's shapes (conv weights [cout, cin, k, k]); only
 * td.h0 is stored channels last, [H, W, C].
 */
#define _POSIX_C_SOURCE 200809L
#include "mpivae/conv.h"
#include "mpivae/model.h"
#include "mpivae/ops.h"
#include "mpivae/status.h"
#include "vmath.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HV_MAX_GROUPS 14 /* recon, kl1..klK and kl within VAE_MAX_TERMS */
#define HV_CLAMP 5.0f
#define HV_BLOCK 16 /* latent channels per block of the KL's float terms */

typedef struct hv_conv {
    size_t w, b;
    int cin, cout, hin, win, hout, wout, k, s, p, op, transposed, layout;
} hv_conv;

typedef struct hv_res {
    hv_conv c1, c2;
    float *xr, *a1; /* relu(h_in) and relu(c1(.)), kept for backward */
} hv_res;

typedef struct hv_scale {
    int C, H, W, hw;
    hv_conv in; /* stem (s = 0) or down from s - 1 */
    hv_res res;
    hv_conv up; /* s > 0: to scale s - 1 */
    float *e, *bu, *dbu;
    float *tin;  /* top-down stream entering the scale (h0 broadcast at the top, else the up from s + 1) */
    float *tout; /* leaving it: the last group's output, or tin */
    int g0, ng;  /* its groups */
} hv_scale;

typedef struct hv_group {
    int s, hw, n; /* scale, positions, values (hw * Zc) */
    hv_conv prior, post;
    size_t wz, bz; /* the 1x1 conv from z to the stream */
    hv_res res;
    float *ha, *u, *pr, *qr, *q, *z, *hb, *hc; /* q: [mu_q, log sigma_q] per position */
} hv_group;

typedef struct hv {
    int S, K, Zc;
    hv_scale sc[VAE_MAX_HIDDEN];
    hv_group g[HV_MAX_GROUPS];
    size_t h0;
    hv_conv out;
    float *fr, *logits;
    float *G1, *G2, *T1, *T2; /* backward buffers of the largest stream */
    float *dlogits, *wrow;    /* wrow[B]: a group's KL weight per row */
    float *scratch;
    double *kl_rows; /* [K, B] */
} hv;

static inline float softclamp(float r) { return HV_CLAMP * vm_tanh(r / HV_CLAMP); }
static inline float softclamp_d(float r)
{
    float t = vm_tanh(r / HV_CLAMP);
    return 1.0f - t * t;
}

static const vae_term hv_default_terms[3] = { { "recon", VAE_TERM_ONE }, { "kl1", VAE_TERM_BETA }, { "kl", VAE_TERM_STAT } };

static void defaults(vae_arch *a, int hidden_set, int latent_set)
{
    if (!hidden_set) {
        a->n_hidden = 3;
        a->hidden[0] = 16;
        a->hidden[1] = 32;
        a->hidden[2] = 64;
    }
    if (!latent_set) a->latent = 8;
    if (a->n_groups == 0) {
        a->n_groups = a->n_hidden;
        for (int s = 0; s < a->n_hidden; s++) a->groups[s] = s == 0 && a->n_hidden > 1 ? 0 : 2;
    }
}

static int check(const vae_arch *a, int cli, char *why, size_t len)
{
    int K = 0;
    for (int s = 0; s < a->n_groups; s++) K += a->groups[s];
    if (a->n_groups != a->n_hidden) {
        snprintf(why, len, cli ? "--groups has %d counts, but --hidden has %d scales: give one count per scale"
                               : "attribute 'groups' has %d counts, but 'hidden' has %d scales",
                 a->n_groups, a->n_hidden);
        return VAE_EINVAL;
    }
    if (K < 1 || K > HV_MAX_GROUPS) {
        snprintf(why, len, cli ? "--groups gives %d latent groups in all; --model hvae takes 1..%d"
                               : "attribute 'groups' gives %d latent groups; 1..%d are possible",
                 K, HV_MAX_GROUPS);
        return VAE_EINVAL;
    }
    if (a->latent > 1024) {
        snprintf(why, len, cli ? "--latent %d: --model hvae takes 1..1024 latent channels per group"
                               : "attribute 'latent' is %d, outside 1..1024 for hvae", a->latent);
        return VAE_EINVAL;
    }
    /* Sizes that fit in an int (and a float's exact integers, for encode's /groups): latent values and streams. */
    double z = 0.0, hs = a->Hh, ws = a->W, stream = 0.0;
    for (int s = 0; s < a->n_hidden; s++) {
        z += (double)a->groups[s] * a->latent * hs * ws;
        stream = fmax(stream, fmax((double)a->hidden[s], 2.0 * a->latent) * hs * ws);
        hs = ceil(hs / 2);
        ws = ceil(ws / 2);
    }
    if (z > 16777216.0 || stream > 16777216.0) {
        snprintf(why, len, "--model hvae with %s %dx%d: %.0f latent values a row and %.0f values in the widest "
                 "activation a row; at most 2^24 (16777216) each are taken (fewer --groups, --latent or --hidden channels)",
                 cli ? "data" : "input_shape", a->Hh, a->W, z, stream);
        return VAE_EINVAL;
    }
    int H = a->Hh, W = a->W;
    for (int s = 1; s < a->n_hidden; s++) { /* the up convolution pads H and W alike */
        int h = (H + 1) / 2, w = (W + 1) / 2;
        if (H - 2 * h != W - 2 * w) {
            snprintf(why, len, "%s is %dx%d: halving it gives %dx%d, and the top-down path cannot grow that back "
                     "to both sizes (H and W must be both even or both odd at every scale but the last)",
                     cli ? "the data" : "attribute 'input_shape'", a->Hh, a->W, h, w);
            return VAE_EINVAL;
        }
        H = h;
        W = w;
    }
    for (int s = 0; s < a->n_hidden; s++)
        if (a->hidden[s] > 4096) {
            snprintf(why, len, cli ? "--hidden %d: --model hvae takes 1..4096 channels per scale"
                                   : "attribute 'hidden' has %d channels, outside 1..4096 for hvae", a->hidden[s]);
            return VAE_EINVAL;
        }
    return VAE_OK;
}

/* A convolution's tensors, named NAME.weight and NAME.bias, PyTorch's init bound times gain. */
static void add_conv(vae_model *m, hv_conv *c, const char *name, int transposed, int cin, int cout, int h, int w,
                     int k, int s, int hout, int wout, float gain)
{
    char buf[VAE_NAME_LEN];
    memset(c, 0, sizeof *c);
    c->transposed = transposed;
    c->cin = cin;
    c->cout = cout;
    c->hin = h;
    c->win = w;
    c->k = k;
    c->s = s;
    c->p = k / 2;
    c->hout = hout;
    c->wout = wout;
    c->op = transposed ? hout - ((h - 1) * s - 2 * c->p + k) : 0;
    c->layout = VAE_CONV_X_NHWC | VAE_CONV_Y_NHWC;
    float bound = gain / sqrtf((float)((transposed ? cout : cin) * k * k));
    snprintf(buf, sizeof buf, "%.48s.weight", name);
    c->w = vae_model_add_tensor(m, buf, 4, transposed ? (int[]){ cin, cout, k, k } : (int[]){ cout, cin, k, k }, bound);
    snprintf(buf, sizeof buf, "%.48s.bias", name);
    c->b = vae_model_add_tensor(m, buf, 1, (int[]){ cout }, bound);
}

static void add_res(vae_model *m, hv_res *r, const char *name, int C, int H, int W)
{
    char buf[VAE_NAME_LEN];
    snprintf(buf, sizeof buf, "%.40s.c1", name);
    add_conv(m, &r->c1, buf, 0, C, C, H, W, 3, 1, H, W, 1.0f);
    snprintf(buf, sizeof buf, "%.40s.c2", name);
    add_conv(m, &r->c2, buf, 0, C, C, H, W, 3, 1, H, W, 0.1f); /* a block starts near the identity */
}

static void plan(vae_model *m)
{
    const vae_arch *a = &m->arch;
    hv *h = calloc(1, sizeof *h);
    m->priv = h;
    if (!h) return; /* init reports it */
    h->S = a->n_hidden;
    h->Zc = a->latent;
    char name[VAE_NAME_LEN];
    for (int s = 0; s < h->S; s++) {
        hv_scale *c = &h->sc[s];
        c->C = a->hidden[s];
        c->H = s ? (h->sc[s - 1].H + 1) / 2 : a->Hh;
        c->W = s ? (h->sc[s - 1].W + 1) / 2 : a->W;
        c->hw = c->H * c->W;
        if (s == 0) {
            add_conv(m, &c->in, "bu.stem", 0, a->C, c->C, c->H, c->W, 3, 1, c->H, c->W, 1.0f);
            c->in.layout = VAE_CONV_Y_NHWC; /* reads the image, NCHW */
        } else {
            snprintf(name, sizeof name, "bu.down%d", s);
            add_conv(m, &c->in, name, 0, h->sc[s - 1].C, c->C, h->sc[s - 1].H, h->sc[s - 1].W, 3, 2, c->H, c->W, 1.0f);
        }
        snprintf(name, sizeof name, "bu.res%d", s);
        add_res(m, &c->res, name, c->C, c->H, c->W);
    }
    hv_scale *top = &h->sc[h->S - 1];
    h->h0 = vae_model_add_tensor(m, "td.h0", 3, (int[]){ top->H, top->W, top->C }, 0.5f);
    int k = 0;
    m->n_terms = 0;
    m->terms[m->n_terms++] = hv_default_terms[0];
    for (int s = h->S - 1; s >= 0; s--) {
        hv_scale *c = &h->sc[s];
        c->g0 = k;
        c->ng = a->groups[s];
        for (int j = 0; j < c->ng; j++, k++) {
            hv_group *g = &h->g[k];
            g->s = s;
            g->hw = c->hw;
            g->n = c->hw * h->Zc;
            snprintf(name, sizeof name, "td.g%d.prior", k + 1);
            add_conv(m, &g->prior, name, 0, c->C, 2 * h->Zc, c->H, c->W, 3, 1, c->H, c->W, 1.0f);
            snprintf(name, sizeof name, "td.g%d.post", k + 1);
            add_conv(m, &g->post, name, 0, c->C, 2 * h->Zc, c->H, c->W, 3, 1, c->H, c->W, 0.1f);
            snprintf(name, sizeof name, "td.g%d.zproj.weight", k + 1);
            g->wz = vae_model_add_tensor(m, name, 4, (int[]){ c->C, h->Zc, 1, 1 }, 1.0f / sqrtf((float)h->Zc));
            snprintf(name, sizeof name, "td.g%d.zproj.bias", k + 1);
            g->bz = vae_model_add_tensor(m, name, 1, (int[]){ c->C }, 1.0f / sqrtf((float)h->Zc));
            snprintf(name, sizeof name, "td.g%d.res", k + 1);
            add_res(m, &g->res, name, c->C, c->H, c->W);
            snprintf(name, sizeof name, "z%d", k + 1);
            vae_model_add_latent(m, name, h->Zc, c->H, c->W);
            vae_term t = { "", VAE_TERM_BETA };
            snprintf(t.name, sizeof t.name, "kl%d", k + 1);
            m->terms[m->n_terms++] = t;
        }
        if (s > 0) {
            hv_scale *d = &h->sc[s - 1];
            snprintf(name, sizeof name, "td.up%d", s);
            add_conv(m, &c->up, name, 1, c->C, d->C, c->H, c->W, 3, 2, d->H, d->W, 1.0f);
        }
    }
    h->K = k;
    m->terms[m->n_terms++] = hv_default_terms[2];
    add_conv(m, &h->out, "out", 0, h->sc[0].C, a->C, h->sc[0].H, h->sc[0].W, 3, 1, a->Hh, a->W, 1.0f);
    h->out.layout = VAE_CONV_X_NHWC; /* writes the logits NCHW */
    m->noise_dim = m->prior_dim = m->Z;
}

static size_t conv_scratch(const hv_conv *c, int B)
{
    return c->transposed ? vae_convt2d_scratch(B, c->cin, c->hin, c->win, c->cout, c->k, c->s, c->p, c->op)
                         : vae_conv2d_scratch(B, c->cin, c->hin, c->win, c->cout, c->k, c->s, c->p);
}

static size_t max_z(size_t a, size_t b) { return a > b ? a : b; }

/* Visits every conv of the model: the scratch they need. */
static size_t all_scratch(const hv *h, int B)
{
    size_t n = max_z(conv_scratch(&h->out, B), 1);
    for (int s = 0; s < h->S; s++) {
        const hv_scale *c = &h->sc[s];
        n = max_z(n, conv_scratch(&c->in, B));
        n = max_z(n, conv_scratch(&c->res.c1, B));
        n = max_z(n, conv_scratch(&c->res.c2, B));
        if (s > 0) n = max_z(n, conv_scratch(&c->up, B));
    }
    for (int k = 0; k < h->K; k++) {
        n = max_z(n, conv_scratch(&h->g[k].prior, B));
        n = max_z(n, conv_scratch(&h->g[k].post, B));
        n = max_z(n, conv_scratch(&h->g[k].res.c1, B));
        n = max_z(n, conv_scratch(&h->g[k].res.c2, B));
    }
    return n;
}

/* Lays the arena out (take == NULL: counts the floats). */
static size_t layout(vae_model *m, hv *h, int Bi, float *base)
{
    size_t B = (size_t)Bi, used = 0, big = (size_t)m->D;
    float *p = base;
#define TAKE(ptr, n)                                                                                                   \
    do {                                                                                                               \
        size_t n_ = ((n) + 15) & ~(size_t)15;                                                                          \
        if (base) (ptr) = p + used;                                                                                    \
        used += n_;                                                                                                    \
    } while (0)
    TAKE(m->input, B * m->D);
    TAKE(m->eps, B * m->noise_dim);
    for (int s = 0; s < h->S; s++) {
        hv_scale *c = &h->sc[s];
        size_t n = B * c->C * c->hw;
        big = max_z(big, n);
        TAKE(c->e, n);
        TAKE(c->res.xr, n);
        TAKE(c->res.a1, n);
        TAKE(c->bu, n);
        TAKE(c->dbu, n);
        TAKE(c->tin, n);
    }
    for (int k = 0; k < h->K; k++) {
        hv_group *g = &h->g[k];
        size_t n = B * h->sc[g->s].C * g->hw, nz = B * g->n;
        TAKE(g->u, n);
        TAKE(g->pr, 2 * nz);
        TAKE(g->qr, 2 * nz);
        TAKE(g->q, 2 * nz);
        TAKE(g->z, nz);
        TAKE(g->hb, n);
        TAKE(g->res.xr, n);
        TAKE(g->res.a1, n);
        TAKE(g->hc, n);
        big = max_z(big, 2 * nz);
    }
    TAKE(h->fr, B * h->sc[0].C * h->sc[0].hw);
    TAKE(h->logits, B * m->D);
    TAKE(h->dlogits, B * m->D);
    TAKE(h->G1, big);
    TAKE(h->G2, big);
    TAKE(h->T1, big);
    TAKE(h->T2, big);
    TAKE(h->scratch, all_scratch(h, Bi));
    TAKE(h->wrow, B);
    float *klp = NULL; /* doubles: the arena is 64-byte aligned, and so is every part */
    TAKE(klp, (size_t)h->K * B * 2);
    if (base) h->kl_rows = (double *)(void *)klp;
#undef TAKE
    return used;
}

static int init(vae_model *m, int max_batch)
{
    hv *h = m->priv;
    if (!h) return vae_error(VAE_ENOMEM, "cannot allocate the hvae's plan");
    size_t n = layout(m, h, max_batch, NULL);
    m->arena = vae_model_alloc(n);
    if (!m->arena)
        return vae_error(VAE_ENOMEM, "cannot allocate the model's activations (%.1f GB for batch %d)",
                         n * sizeof(float) / 1e9, max_batch);
    layout(m, h, max_batch, m->arena);
    /* The ReLU outputs, for the tests' kink detection (model.h). */
    m->n_relu = 0;
    for (int s = 0; s < h->S; s++) {
        size_t row = (size_t)h->sc[s].C * h->sc[s].hw;
        m->relu_at[m->n_relu] = h->sc[s].res.xr;
        m->relu_row[m->n_relu++] = row;
        m->relu_at[m->n_relu] = h->sc[s].res.a1;
        m->relu_row[m->n_relu++] = row;
    }
    for (int k = 0; k < h->K; k++) {
        size_t row = (size_t)h->sc[h->g[k].s].C * h->g[k].hw;
        m->relu_at[m->n_relu] = h->g[k].res.xr;
        m->relu_row[m->n_relu++] = row;
        m->relu_at[m->n_relu] = h->g[k].res.a1;
        m->relu_row[m->n_relu++] = row;
    }
    m->relu_at[m->n_relu] = h->fr;
    m->relu_row[m->n_relu++] = (size_t)h->sc[0].C * h->sc[0].hw;
    /* The streams: each scale's output is its last group's, or what entered it. */
    for (int s = 0; s < h->S; s++) {
        hv_scale *c = &h->sc[s];
        c->tout = c->ng ? h->g[c->g0 + c->ng - 1].hc : c->tin;
        for (int j = 0; j < c->ng; j++) h->g[c->g0 + j].ha = j ? h->g[c->g0 + j - 1].hc : c->tin;
    }
    return VAE_OK;
}

/* ---- ops on the model's convs ---- */

static void conv_fwd(vae_model *m, const hv_conv *c, const float *x, float *y, int B, int relu)
{
    hv *h = m->priv;
    const float *w = m->params + c->w, *b = m->params + c->b;
    int lay = c->layout | (relu ? VAE_CONV_RELU : 0);
    if (c->transposed)
        vae_convt2d_forward(x, w, b, y, B, c->cin, c->hin, c->win, c->cout, c->k, c->s, c->p, c->op, lay, h->scratch);
    else vae_conv2d_forward(x, w, b, y, B, c->cin, c->hin, c->win, c->cout, c->k, c->s, c->p, lay, h->scratch);
}

/* dx (may be NULL) is overwritten; x_relu: x is a ReLU's output, so dx is masked by x > 0. */
static void conv_bwd(vae_model *m, const hv_conv *c, const float *x, const float *dy, float *dx, int B, int x_relu)
{
    hv *h = m->priv;
    const float *w = m->params + c->w;
    float *dw = m->grads + c->w, *db = m->grads + c->b;
    int lay = c->layout | (x_relu ? VAE_CONV_DX_RELU : 0);
    if (c->transposed)
        vae_convt2d_backward(x, w, dy, dx, dw, db, B, c->cin, c->hin, c->win, c->cout, c->k, c->s, c->p, c->op, lay,
                             h->scratch);
    else vae_conv2d_backward(x, w, dy, dx, dw, db, B, c->cin, c->hin, c->win, c->cout, c->k, c->s, c->p, lay, h->scratch);
}

static void relu_to(const float *x, float *y, size_t n)
{
    for (size_t i = 0; i < n; i++) y[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

static void add_to(float *y, const float *x, size_t n)
{
    for (size_t i = 0; i < n; i++) y[i] += x[i];
}

/* out = in + c2(relu(c1(relu(in)))); out must not alias in. */
static void res_fwd(vae_model *m, hv_res *r, const float *in, float *out, int B)
{
    size_t n = (size_t)B * r->c1.cin * r->c1.hin * r->c1.win;
    relu_to(in, r->xr, n);
    conv_fwd(m, &r->c1, r->xr, r->a1, B, 1);
    conv_fwd(m, &r->c2, r->a1, out, B, 0);
    add_to(out, in, n);
}

/* din = dout + the gradient through the branch (din must not alias dout); tmp: one stream's floats. */
static void res_bwd(vae_model *m, hv_res *r, const float *dout, float *din, float *tmp, int B)
{
    size_t n = (size_t)B * r->c1.cin * r->c1.hin * r->c1.win;
    conv_bwd(m, &r->c2, r->a1, dout, tmp, B, 1);
    conv_bwd(m, &r->c1, r->xr, tmp, din, B, 1);
    add_to(din, dout, n);
}

/* ---- the latent groups ---- */

/*
 * n channels of one position (Zc apart: means, then log-sigmas): q from pr
 * and qr, and each channel's KL term. Inlined with merge a constant, so that
 * each posterior's loop vectorises.
 */
static inline __attribute__((always_inline)) void posterior_at(const int merge, int Zc, int n, const float *pr,
                                                              const float *qr, float *restrict q, float *restrict term)
{
    for (int j = 0; j < n; j++) {
        float mp = pr[j], lp = softclamp(pr[Zc + j]), mq, lq;
        if (!merge) {
            mq = mp + qr[j];
            lq = lp + softclamp(qr[Zc + j]);
        } else {
            float le = softclamp(qr[Zc + j]), Pe = vm_exp(-2.0f * le), Pp = vm_exp(-2.0f * lp), S = Pe + Pp;
            mq = (qr[j] * Pe + mp * Pp) / S;
            lq = -0.5f * logf(S);
        }
        q[j] = mq;
        q[Zc + j] = lq;
        float d = mq - mp, vr = vm_exp(2.0f * (lq - lp));
        term[j] = (lp - lq) + 0.5f * (vr + d * d * vm_exp(-2.0f * lp)) - 0.5f;
    }
}

/*
 * q = [mu_q, log sigma_q] per position from pr and qr; z from eps (NULL:
 * the mean); returns each row's KL (kl_rows[B]) and the sum.
 */
static double latent_fwd(const vae_model *m, hv_group *g, const float *eps, int B, double *kl_rows)
{
    const int Zc = m->arch.latent, merge = m->arch.posterior == VAE_POSTERIOR_MERGE;
    const int off = m->latents[g - ((hv *)m->priv)->g].offset;
    double total = 0.0;
    for (int r = 0; r < B; r++) {
        double kl = 0.0;
        for (int t = 0; t < g->hw; t++) {
            size_t o2 = ((size_t)r * g->hw + t) * 2 * Zc;
            const float *pr = g->pr + o2, *qr = g->qr + o2;
            float *q = g->q + o2;
            /* Blocks of HV_BLOCK channels: the float terms vectorise, their sum runs in double. */
            for (int j0 = 0; j0 < Zc; j0 += HV_BLOCK) {
                const int nj = Zc - j0 < HV_BLOCK ? Zc - j0 : HV_BLOCK;
                float term[HV_BLOCK];
                if (merge) posterior_at(1, Zc, nj, pr + j0, qr + j0, q + j0, term);
                else posterior_at(0, Zc, nj, pr + j0, qr + j0, q + j0, term);
                for (int i = 0; i < nj; i++) kl += (double)term[i];
            }
            /* z = mu_q + sigma_q eps, eps of this group's slice of the row's noise */
            float *z = g->z + (size_t)r * g->n + (size_t)t * Zc;
            if (eps) {
                const float *ev = eps + (size_t)r * m->noise_dim + off + (size_t)t * Zc;
                for (int j = 0; j < Zc; j++) z[j] = q[j] + vm_exp(q[Zc + j]) * ev[j];
            } else {
                for (int j = 0; j < Zc; j++) z[j] = q[j];
            }
        }
        kl_rows[r] = kl;
        total += kl;
    }
    return total;
}

/* Zeros for the noise of the mean (eps NULL): as many as a group's latent channels can be. */
static const float hv_zeros[1024];

/*
 * latent_bwd at one position: Zc channels. Inlined with merge a constant, so
 * that each posterior's loop vectorises.
 */
static inline __attribute__((always_inline)) void latent_bwd_at(const int merge, int Zc, const float *pr,
                                                               const float *qr, const float *q, const float *ev,
                                                               const float *dz, float w, float *restrict gp,
                                                               float *restrict gq)
{
    for (int j = 0; j < Zc; j++) {
        float mp = pr[j], lp = softclamp(pr[Zc + j]), mq = q[j], lq = q[Zc + j];
        float ip = vm_exp(-2.0f * lp), sq = vm_exp(lq), d = mq - mp, vr = sq * sq * ip;
        float dzv = dz[j];
        float dmq = dzv + w * d * ip;
        float dlq = dzv * sq * ev[j] + w * (vr - 1.0f);
        float dmp = -w * d * ip;
        float dlp = w * (1.0f - vr - d * d * ip);
        if (!merge) {
            dmp += dmq;
            gq[j] = dmq;
            dlp += dlq;
            gq[Zc + j] = dlq * softclamp_d(qr[Zc + j]);
        } else {
            float le = softclamp(qr[Zc + j]), Pe = vm_exp(-2.0f * le), Pp = ip, S = Pe + Pp;
            float me = qr[j];
            gq[j] = dmq * Pe / S;
            dmp += dmq * Pp / S;
            float dPe = (dmq * (me - mq) - 0.5f * dlq) / S, dPp = (dmq * (mp - mq) - 0.5f * dlq) / S;
            gq[Zc + j] = dPe * (-2.0f * Pe) * softclamp_d(qr[Zc + j]);
            dlp += dPp * (-2.0f * Pp);
        }
        gp[j] = dmp;
        gp[Zc + j] = dlp * softclamp_d(pr[Zc + j]);
    }
}

/*
 * dpr and dqr ([B, hw, 2Zc] each, overwritten) from dz (z's gradient through
 * the stream) and the KL's, weighted w[r] per row (0 where free bits hold).
 */
static void latent_bwd(const vae_model *m, const hv_group *g, const float *eps, const float *dz, const float *w,
                       float *dpr, float *dqr, int B)
{
    const int Zc = m->arch.latent, merge = m->arch.posterior == VAE_POSTERIOR_MERGE;
    const int off = m->latents[g - ((const hv *)m->priv)->g].offset;
    for (int r = 0; r < B; r++)
        for (int t = 0; t < g->hw; t++) {
            size_t o2 = ((size_t)r * g->hw + t) * 2 * Zc, o1 = ((size_t)r * g->hw + t) * Zc;
            const float *ev = eps ? eps + (size_t)r * m->noise_dim + off + (size_t)t * Zc : hv_zeros;
            if (merge) latent_bwd_at(1, Zc, g->pr + o2, g->qr + o2, g->q + o2, ev, dz + o1, w[r], dpr + o2, dqr + o2);
            else latent_bwd_at(0, Zc, g->pr + o2, g->qr + o2, g->q + o2, ev, dz + o1, w[r], dpr + o2, dqr + o2);
        }
}

/* hb = ha + conv1x1(z) over B * hw positions. */
static void zproj_fwd(vae_model *m, const hv_group *g, int B)
{
    const int C = m->arch.hidden[g->s];
    vae_linear_forward(g->z, m->params + g->wz, m->params + g->bz, g->hb, B * g->hw, m->arch.latent, C, VAE_ACT_NONE);
    add_to(g->hb, g->ha, (size_t)B * g->hw * C);
}

/* ---- passes ---- */

static void bottom_up(vae_model *m, int B)
{
    hv *h = m->priv;
    for (int s = 0; s < h->S; s++) {
        hv_scale *c = &h->sc[s];
        conv_fwd(m, &c->in, s ? h->sc[s - 1].bu : m->input, c->e, B, 0);
        res_fwd(m, &c->res, c->e, c->bu, B);
    }
}

static void broadcast_h0(vae_model *m, int B)
{
    hv *h = m->priv;
    hv_scale *top = &h->sc[h->S - 1];
    size_t n = (size_t)top->C * top->hw;
    for (int r = 0; r < B; r++) memcpy(top->tin + (size_t)r * n, m->params + h->h0, n * sizeof(float));
}

enum { TD_POSTERIOR, TD_PRIOR, TD_GIVEN }; /* where z comes from */

/*
 * The top-down path. TD_POSTERIOR: z from q with noise (NULL: the mean), the
 * KL per group into kl[K] (sums) and h->kl_rows; TD_PRIOR: z = mu_p + T
 * sigma_p noise; TD_GIVEN: z read from zin[B, Z] for the first ngiven
 * groups, the prior mean mu_p for the others.
 */
static void top_down(vae_model *m, int B, int mode, const float *noise, float temperature, const float *zin, double *kl,
                     int ngiven)
{
    hv *h = m->priv;
    broadcast_h0(m, B);
    const int Zc = h->Zc;
    for (int s = h->S - 1; s >= 0; s--) {
        hv_scale *c = &h->sc[s];
        for (int j = 0; j < c->ng; j++) {
            int k = c->g0 + j;
            hv_group *g = &h->g[k];
            const int off = m->latents[k].offset;
            if (mode == TD_POSTERIOR) {
                conv_fwd(m, &g->prior, g->ha, g->pr, B, 0);
                if (m->arch.posterior == VAE_POSTERIOR_MERGE) conv_fwd(m, &g->post, c->bu, g->qr, B, 0);
                else {
                    size_t n = (size_t)B * c->C * c->hw;
                    for (size_t i = 0; i < n; i++) g->u[i] = g->ha[i] + c->bu[i];
                    conv_fwd(m, &g->post, g->u, g->qr, B, 0);
                }
                double t = latent_fwd(m, g, noise, B, h->kl_rows + (size_t)k * B);
                if (kl) kl[k] = t;
            } else if (mode == TD_PRIOR) {
                conv_fwd(m, &g->prior, g->ha, g->pr, B, 0);
                for (int r = 0; r < B; r++)
                    for (int t = 0; t < g->hw; t++) {
                        const float *pr = g->pr + ((size_t)r * g->hw + t) * 2 * Zc;
                        const float *nv = noise + (size_t)r * m->prior_dim + off + (size_t)t * Zc;
                        float *z = g->z + (size_t)r * g->n + (size_t)t * Zc;
                        for (int i = 0; i < Zc; i++) z[i] = pr[i] + temperature * vm_exp(softclamp(pr[Zc + i])) * nv[i];
                    }
            } else if (k < ngiven) {
                for (int r = 0; r < B; r++)
                    memcpy(g->z + (size_t)r * g->n, zin + (size_t)r * m->Z + off, (size_t)g->n * sizeof(float));
            } else {
                conv_fwd(m, &g->prior, g->ha, g->pr, B, 0);
                for (int r = 0; r < B; r++)
                    for (int i = 0; i < g->n; i++) g->z[(size_t)r * g->n + i] = g->pr[((size_t)r * g->hw + i / Zc) * 2 * Zc + i % Zc];
            }
            zproj_fwd(m, g, B);
            res_fwd(m, &g->res, g->hb, g->hc, B);
        }
        if (s > 0) conv_fwd(m, &c->up, c->tout, h->sc[s - 1].tin, B, 0);
    }
    relu_to(h->sc[0].tout, h->fr, (size_t)B * h->sc[0].C * h->sc[0].hw);
    conv_fwd(m, &h->out, h->fr, h->logits, B, 0);
}

static void backward(vae_model *m, const vae_pass *p)
{
    hv *h = m->priv;
    const int B = p->B;
    float *w = h->wrow;
    for (int s = 0; s < h->S; s++) memset(h->sc[s].dbu, 0, (size_t)B * h->sc[s].C * h->sc[s].hw * sizeof(float));
    /* The logits, through relu into the stream's gradient. */
    float *cur = h->G1, *other = h->G2;
    conv_bwd(m, &h->out, h->fr, h->dlogits, cur, B, 1);
    for (int s = 0; s < h->S; s++) {
        hv_scale *c = &h->sc[s];
        size_t n = (size_t)B * c->C * c->hw;
        for (int j = c->ng - 1; j >= 0; j--) {
            int k = c->g0 + j;
            hv_group *g = &h->g[k];
            res_bwd(m, &g->res, cur, other, h->T1, B); /* other = d hb = d ha (so far) */
            /* z: dz = dhb Wz; T2 holds dz, then dpr | dqr go to T1 and cur */
            vae_linear_backward(g->z, m->params + g->wz, other, h->T2, m->grads + g->wz, m->grads + g->bz, B * g->hw,
                                h->Zc, c->C);
            const double *klr = h->kl_rows + (size_t)k * B;
            for (int r = 0; r < B; r++)
                w[r] = p->grad_scale * p->beta * (p->free_bits > 0.0f && klr[r] <= p->free_bits ? 0.0f : 1.0f);
            float *dpr = h->T1, *dqr = cur; /* cur (d hc) is spent */
            latent_bwd(m, g, p->eps, h->T2, w, dpr, dqr, B);
            /* posterior conv: into T2 (du or d bu) */
            if (m->arch.posterior == VAE_POSTERIOR_MERGE) {
                conv_bwd(m, &g->post, c->bu, dqr, h->T2, B, 0);
                add_to(c->dbu, h->T2, n);
            } else {
                conv_bwd(m, &g->post, g->u, dqr, h->T2, B, 0);
                add_to(c->dbu, h->T2, n);
                add_to(other, h->T2, n);
            }
            conv_bwd(m, &g->prior, g->ha, dpr, h->T2, B, 0);
            add_to(other, h->T2, n);
            float *t = cur;
            cur = other;
            other = t;
        }
        /* cur: the gradient of tin[s] */
        if (s == h->S - 1) {
            float *dh0 = m->grads + h->h0;
            size_t nr = (size_t)c->C * c->hw;
            for (int r = 0; r < B; r++) add_to(dh0, cur + (size_t)r * nr, nr);
        } else {
            hv_scale *u = &h->sc[s + 1];
            conv_bwd(m, &u->up, u->tout, cur, other, B, 0);
            float *t = cur;
            cur = other;
            other = t;
        }
    }
    /* Bottom-up, top scale first. */
    for (int s = h->S - 1; s >= 0; s--) {
        hv_scale *c = &h->sc[s];
        res_bwd(m, &c->res, c->dbu, h->G1, h->T1, B); /* G1 = d e */
        if (s > 0) {
            conv_bwd(m, &c->in, h->sc[s - 1].bu, h->G1, h->T2, B, 0);
            add_to(h->sc[s - 1].dbu, h->T2, (size_t)B * h->sc[s - 1].C * h->sc[s - 1].hw);
        } else {
            conv_bwd(m, &c->in, m->input, h->G1, NULL, B, 0);
        }
    }
}

static double recon_loss(vae_model *m, int B, float *dlogits, float scale, double *rows)
{
    hv *h = m->priv;
    if (rows) memset(rows, 0, (size_t)B * sizeof(double));
    return m->arch.loss == VAE_LOSS_BCE ? vae_bce_logits_loss(h->logits, m->input, dlogits, B, m->D, scale, rows)
                                        : vae_mse_loss(h->logits, m->input, dlogits, B, m->D, scale, rows);
}

static void pass(vae_model *m, const vae_pass *p)
{
    hv *h = m->priv;
    const int B = p->B, K = h->K;
    double kl[HV_MAX_GROUPS];
    bottom_up(m, B);
    top_down(m, B, TD_POSTERIOR, p->eps, 1.0f, NULL, kl, 0);
    double recon = recon_loss(m, B, p->backward ? h->dlogits : NULL, p->grad_scale, p->row_terms);
    if (p->terms) {
        double all = 0.0;
        p->terms[0] = recon;
        for (int k = 0; k < K; k++) {
            p->terms[1 + k] = kl[k];
            all += kl[k];
        }
        p->terms[1 + K] = all;
    }
    if (p->row_terms)
        for (int r = 0; r < B; r++) {
            double all = 0.0;
            for (int k = 0; k < K; k++) {
                double v = h->kl_rows[(size_t)k * B + r];
                p->row_terms[(size_t)(1 + k) * B + r] = v;
                all += v;
            }
            p->row_terms[(size_t)(1 + K) * B + r] = all;
        }
    if (p->backward) backward(m, p);
}

static void encode(vae_model *m, int B, float *mu, float *logvar)
{
    hv *h = m->priv;
    bottom_up(m, B);
    top_down(m, B, TD_POSTERIOR, NULL, 1.0f, NULL, NULL, 0);
    const int Zc = h->Zc;
    for (int k = 0; k < h->K; k++) {
        const hv_group *g = &h->g[k];
        const int off = m->latents[k].offset;
        for (int r = 0; r < B; r++)
            for (int i = 0; i < g->n; i++) {
                const float *q = g->q + ((size_t)r * g->hw + i / Zc) * 2 * Zc;
                if (mu) mu[(size_t)r * m->Z + off + i] = q[i % Zc];
                if (logvar) logvar[(size_t)r * m->Z + off + i] = 2.0f * q[Zc + i % Zc];
            }
    }
}

static void to_images(vae_model *m, int B, float *images)
{
    hv *h = m->priv;
    size_t n = (size_t)B * m->D;
    if (m->arch.loss == VAE_LOSS_BCE) vae_sigmoid(h->logits, images, n);
    else memcpy(images, h->logits, n * sizeof(float));
}

static void decode(vae_model *m, const float *z, int B, float *images)
{
    top_down(m, B, TD_GIVEN, NULL, 1.0f, z, NULL, m->n_latents);
    to_images(m, B, images);
}

static void decode_given(vae_model *m, const float *z, int ngiven, int B, float *images)
{
    top_down(m, B, TD_GIVEN, NULL, 1.0f, z, NULL, ngiven);
    to_images(m, B, images);
}

static void generate(vae_model *m, float *noise, float temperature, int B, float *images)
{
    top_down(m, B, TD_PRIOR, noise, temperature, NULL, NULL, 0);
    to_images(m, B, images);
}

/*
 * log w = log p(x | z) + sum_k [log p(z_k | z_>k) - log q(z_k | x, z_>k)], z
 * drawn from q with eps: per value, -((z - mu_p) / sigma_p)^2 / 2 - log
 * sigma_p + eps^2 / 2 + log sigma_q (the log 2 pi cancel). log p(x | z) as
 * for the other families (stack.c): minus the reconstruction term, less
 * (D/2) ln(pi) under mse.
 */
static void log_weights(vae_model *m, const float *eps, int B, int one_row, double *logw)
{
    hv *h = m->priv;
    const int Zc = h->Zc;
    bottom_up(m, one_row ? 1 : B);
    if (one_row) /* the bottom-up path ran on the first row: its features for every copy */
        for (int s = 0; s < h->S; s++) {
            hv_scale *c = &h->sc[s];
            size_t n = (size_t)c->C * c->hw;
            for (int r = 1; r < B; r++) memcpy(c->bu + (size_t)r * n, c->bu, n * sizeof(float));
        }
    top_down(m, B, TD_POSTERIOR, eps, 1.0f, NULL, NULL, 0);
    recon_loss(m, B, NULL, 1.0f, logw);
    const double c = m->arch.loss == VAE_LOSS_MSE ? 0.5 * m->D * 1.1447298858494002 : 0.0;
    for (int r = 0; r < B; r++) {
        double lw = -logw[r] - c;
        for (int k = 0; k < h->K; k++) {
            const hv_group *g = &h->g[k];
            const int off = m->latents[k].offset;
            for (int t = 0; t < g->hw; t++) {
                size_t o2 = ((size_t)r * g->hw + t) * 2 * Zc, o1 = (size_t)t * Zc;
                const float *pr = g->pr + o2, *lq = g->q + o2 + Zc, *z = g->z + (size_t)r * g->n + o1;
                const float *e = eps + (size_t)r * m->noise_dim + off + o1;
                /* Blocks of HV_BLOCK channels: the float terms vectorise, their sum runs in double. */
                for (int j0 = 0; j0 < Zc; j0 += HV_BLOCK) {
                    const int nj = Zc - j0 < HV_BLOCK ? Zc - j0 : HV_BLOCK;
                    float term[HV_BLOCK];
                    for (int i = 0; i < nj; i++) {
                        const int j = j0 + i;
                        float lp = softclamp(pr[Zc + j]), u = (z[j] - pr[j]) * vm_exp(-lp);
                        term[i] = -0.5f * u * u - lp + 0.5f * e[j] * e[j] + lq[j];
                    }
                    for (int i = 0; i < nj; i++) lw += (double)term[i];
                }
            }
        }
        logw[r] = lw;
    }
}

static double conv_macs(const hv_conv *c)
{
    return c->transposed ? (double)c->cin * c->hin * c->win * c->cout * c->k * c->k
                         : (double)c->cout * c->hout * c->wout * c->cin * c->k * c->k;
}

static double flops(const vae_model *m)
{
    const hv *h = m->priv;
    double mac = conv_macs(&h->out);
    for (int s = 0; s < h->S; s++) {
        const hv_scale *c = &h->sc[s];
        mac += conv_macs(&c->in) + conv_macs(&c->res.c1) + conv_macs(&c->res.c2) + (s ? conv_macs(&c->up) : 0.0);
    }
    for (int k = 0; k < h->K; k++) {
        const hv_group *g = &h->g[k];
        mac += conv_macs(&g->prior) + conv_macs(&g->post) + conv_macs(&g->res.c1) + conv_macs(&g->res.c2) +
               (double)g->n * m->arch.hidden[g->s];
    }
    return 2.0 * 3.0 * mac; /* forward, weight and input gradients */
}

static void describe(const vae_arch *a, char *buf, size_t len)
{
    size_t n = (size_t)snprintf(buf, len, " scales");
    int H = a->Hh, W = a->W;
    for (int s = 0; s < a->n_hidden && n < len; s++) {
        n += (size_t)snprintf(buf + n, len - n, "%s%dx%dx%d:%d", s ? "," : " ", H, W, a->hidden[s], a->groups[s]);
        H = (H + 1) / 2;
        W = (W + 1) / 2;
    }
    if (n < len)
        snprintf(buf + n, len - n, " (HxWxchannels:groups), %d latent channels per group, %s posterior,", a->latent,
                 a->posterior == VAE_POSTERIOR_MERGE ? "merge" : "residual");
}

const vae_family vae_family_hvae = {
    .name = "hvae",
    .help = "hierarchical: latent groups at several scales (--hidden channels, --groups per scale)",
    .n_terms = 3,
    .terms = hv_default_terms,
    .tools = VAE_TOOL_EVAL | VAE_TOOL_SAMPLE | VAE_TOOL_RECONSTRUCT | VAE_TOOL_INTERPOLATE | VAE_TOOL_TRAVERSE |
             VAE_TOOL_ANOMALY | VAE_TOOL_ENCODE,
    .defaults = defaults,
    .check = check,
    .plan = plan,
    .init = init,
    .pass = pass,
    .encode = encode,
    .decode = decode,
    .decode_given = decode_given,
    .generate = generate,
    .log_weights = log_weights,
    .flops = flops,
    .describe = describe,
};
