/*
 * stack.c: the layer stack of the mlp and conv families (see stack.h): its
 * layers, its arena, and the forward and backward passes of a VAE with one
 * Gaussian latent over it.
 */
#define _POSIX_C_SOURCE 200809L
#include "stack.h"

#include "mpivae/conv.h"
#include "mpivae/ops.h"
#include "mpivae/status.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const vae_term vae__stack_terms[2] = { { "recon", VAE_TERM_ONE }, { "kl", VAE_TERM_BETA } };

/* A Linear layer named `name` (weight [out,in], bias [out]). */
vae_layer *vae__stack_add_linear(vae_model *m, const char *name, int in, int out, int act)
{
    char buf[VAE_NAME_LEN + 8];
    float bound = 1.0f / sqrtf((float)in);
    vae_layer *l = &m->layers[m->n_enc + m->n_dec];
    memset(l, 0, sizeof *l);
    l->kind = VAE_LAYER_LINEAR;
    l->act = act;
    l->in = in;
    l->out = out;
    snprintf(buf, sizeof buf, "%.40s.weight", name);
    l->w = vae_model_add_tensor(m, buf, 2, (int[]){ out, in }, bound);
    snprintf(buf, sizeof buf, "%.40s.bias", name);
    l->b = vae_model_add_tensor(m, buf, 1, (int[]){ out }, bound);
    return l;
}

/*
 * The mu and logvar heads as one Linear(in, 2Z): fc21.weight and fc22.weight
 * are adjacent in the block (one [2Z,in] matrix), then fc21.bias and
 * fc22.bias (one [2Z] vector), so one sgemm computes both heads.
 */
void vae__stack_add_heads(vae_model *m, const char *mu_name, const char *lv_name, int in, int Z)
{
    char buf[VAE_NAME_LEN + 8];
    float bound = 1.0f / sqrtf((float)in);
    vae_layer *l = &m->layers[m->n_enc];
    memset(l, 0, sizeof *l);
    l->kind = VAE_LAYER_LINEAR;
    l->act = VAE_ACT_NONE;
    l->in = in;
    l->out = 2 * Z;
    snprintf(buf, sizeof buf, "%.40s.weight", mu_name);
    l->w = vae_model_add_tensor(m, buf, 2, (int[]){ Z, in }, bound);
    snprintf(buf, sizeof buf, "%.40s.weight", lv_name);
    vae_model_add_tensor(m, buf, 2, (int[]){ Z, in }, bound);
    snprintf(buf, sizeof buf, "%.40s.bias", mu_name);
    l->b = vae_model_add_tensor(m, buf, 1, (int[]){ Z }, bound);
    snprintf(buf, sizeof buf, "%.40s.bias", lv_name);
    vae_model_add_tensor(m, buf, 1, (int[]){ Z }, bound);
    m->n_enc++;
}

/*
 * A Conv2d (transposed = 0: weight [cout, cin, k, k]) or ConvTranspose2d
 * (transposed = 1: weight [cin, cout, k, k]) layer with kernel 4, stride 2,
 * padding 1: H and W halve or double. PyTorch's default init bound is
 * 1/sqrt(fan_in) with fan_in = weight.size(1) * k * k.
 */
void vae__stack_add_conv(vae_model *m, const char *name, int transposed, int cin, int cout, int h, int w, int act)
{
    char buf[VAE_NAME_LEN + 8];
    const int k = 4;
    vae_layer *l = &m->layers[m->n_enc + m->n_dec];
    memset(l, 0, sizeof *l);
    l->kind = transposed ? VAE_LAYER_CONVT : VAE_LAYER_CONV;
    l->act = act;
    l->cin = cin;
    l->cout = cout;
    l->hin = h;
    l->win = w;
    l->hout = transposed ? 2 * h : h / 2;
    l->wout = transposed ? 2 * w : w / 2;
    l->k = k;
    l->stride = 2;
    l->pad = 1;
    l->in = cin * h * w;
    l->out = cout * l->hout * l->wout;
    float bound = 1.0f / sqrtf((float)((transposed ? cout : cin) * k * k));
    snprintf(buf, sizeof buf, "%.40s.weight", name);
    l->w = vae_model_add_tensor(m, buf, 4, transposed ? (int[]){ cin, cout, k, k } : (int[]){ cout, cin, k, k }, bound);
    snprintf(buf, sizeof buf, "%.40s.bias", name);
    l->b = vae_model_add_tensor(m, buf, 1, (int[]){ cout }, bound);
}

void vae__stack_finish_plan(vae_model *m)
{
    vae_model_add_latent(m, "z", m->arch.latent, 1, 1);
    m->noise_dim = m->prior_dim = m->Z;
    /* Backward finishes the layers last first, each one's weight and bias together. */
    m->n_ready = 0;
    for (int i = m->n_enc + m->n_dec - 1; i >= 0; i--) m->ready_lo[m->n_ready++] = m->layers[i].w;
}

/* Floats of scratch the conv layers need for a batch of B. */
static size_t conv_scratch(const vae_model *m, int B)
{
    size_t need = 0;
    for (int i = 0; i < m->n_enc + m->n_dec; i++) {
        const vae_layer *l = &m->layers[i];
        size_t s = 0;
        if (l->kind == VAE_LAYER_CONV)
            s = vae_conv2d_scratch(B, l->cin, l->hin, l->win, l->cout, l->k, l->stride, l->pad);
        else if (l->kind == VAE_LAYER_CONVT)
            s = vae_convt2d_scratch(B, l->cin, l->hin, l->win, l->cout, l->k, l->stride, l->pad, 0);
        if (s > need) need = s;
    }
    return need;
}

int vae__stack_init(vae_model *m, int max_batch)
{
    /* Arena: inputs and outputs of every layer, noise, latent and gradients. */
    int nl = m->n_enc + m->n_dec;
    size_t B = (size_t)max_batch, maxw = (size_t)m->D, total = B * m->D;
    for (int i = 0; i < nl; i++) {
        total += B * m->layers[i].out;
        if ((size_t)m->layers[i].out > maxw) maxw = m->layers[i].out;
        if ((size_t)m->layers[i].in > maxw) maxw = m->layers[i].in;
    }
    total += B * m->Z * 3 + B * 2 * m->Z + 2 * B * maxw;
    for (int i = 0; i < nl; i++)
        if (m->layers[i].flat) total += 2 * ((size_t)m->layers[i].out * m->layers[i].in + m->layers[i].out + 16);
    m->scratch_len = conv_scratch(m, max_batch);
    total += m->scratch_len;
    m->arena = vae_model_alloc(total + 16 * (nl + 8));
    if (!m->arena)
        return vae_error(VAE_ENOMEM, "cannot allocate the model's activations (%.1f GB for batch %d)",
                         total * sizeof(float) / 1e9, max_batch);
    float *p = m->arena;
#define TAKE(ptr, n) do { (ptr) = p; p += (((n) + 15) & ~(size_t)15); } while (0)
    TAKE(m->act[0], B * m->D);
    for (int i = 0; i < nl; i++) TAKE(m->act[i + 1], B * m->layers[i].out);
    TAKE(m->eps, B * m->Z);
    TAKE(m->z, B * m->Z);
    TAKE(m->dz, B * m->Z);
    TAKE(m->dmulv, B * 2 * m->Z);
    TAKE(m->g0, B * maxw);
    TAKE(m->g1, B * maxw);
    TAKE(m->scratch, m->scratch_len);
    for (int i = 0; i < nl; i++) {
        vae_layer *l = &m->layers[i];
        if (!l->flat) continue;
        TAKE(l->wperm, (size_t)l->out * l->in + l->out);
        TAKE(l->gperm, (size_t)l->out * l->in + l->out);
    }
#undef TAKE
    m->input = m->act[0];
    return VAE_OK;
}

/* Input of layer i: x for the first encoder layer, z for the first decoder layer. */
static const float *layer_input(const vae_model *m, int i)
{
    if (i == m->n_enc) return m->z;
    return m->act[i];
}

/*
 * The weights of a flat layer (vae_layer.flat) in the channels-last order
 * of its flattened side: index c*HW + t moves to t*C + c, over the weight's
 * columns (flat 1, the input) or its rows and the bias (flat 2, the output).
 */
static void flat_permute(const vae_layer *l, const float *w, const float *b, float *wp)
{
    int C = l->flat_c, HW = l->flat_hw, in = l->in;
    float *bp = wp + (size_t)l->out * in;
    if (l->flat == 1) {
        for (int r = 0; r < l->out; r++) {
            const float *wr = w + (size_t)r * in;
            float *pr = wp + (size_t)r * in;
            for (int c = 0; c < C; c++)
                for (int t = 0; t < HW; t++) pr[(size_t)t * C + c] = wr[(size_t)c * HW + t];
        }
        memcpy(bp, b, (size_t)l->out * sizeof(float));
        return;
    }
    for (int c = 0; c < C; c++)
        for (int t = 0; t < HW; t++) {
            size_t to = (size_t)t * C + c, from = (size_t)c * HW + t;
            memcpy(wp + to * in, w + from * in, (size_t)in * sizeof(float));
            bp[to] = b[from];
        }
}

/* The inverse of flat_permute, added: gw, gb += the gradient gp taken in the permuted order. */
static void flat_unpermute_add(const vae_layer *l, const float *gp, float *gw, float *gb)
{
    int C = l->flat_c, HW = l->flat_hw, in = l->in;
    const float *gbp = gp + (size_t)l->out * in;
    if (l->flat == 1) {
        for (int r = 0; r < l->out; r++) {
            const float *pr = gp + (size_t)r * in;
            float *wr = gw + (size_t)r * in;
            for (int c = 0; c < C; c++)
                for (int t = 0; t < HW; t++) wr[(size_t)c * HW + t] += pr[(size_t)t * C + c];
            gb[r] += gbp[r];
        }
        return;
    }
    for (int c = 0; c < C; c++)
        for (int t = 0; t < HW; t++) {
            size_t to = (size_t)t * C + c, from = (size_t)c * HW + t;
            const float *pr = gp + to * in;
            float *wr = gw + from * in;
            for (int k = 0; k < in; k++) wr[k] += pr[k];
            gb[from] += gbp[to];
        }
}

void vae__stack_layer_forward(vae_model *m, int i, int B)
{
    const vae_layer *l = &m->layers[i];
    const float *x = layer_input(m, i);
    float *y = m->act[i + 1];
    if (l->kind == VAE_LAYER_LINEAR) {
        const float *w = m->params + l->w, *b = m->params + l->b;
        if (l->flat) {
            flat_permute(l, w, b, l->wperm);
            w = l->wperm;
            b = l->wperm + (size_t)l->out * l->in;
        }
        vae_linear_forward(x, w, b, y, B, l->in, l->out, l->act);
        return;
    }
    int flags = l->layout | (l->act == VAE_ACT_RELU ? VAE_CONV_RELU : 0);
    if (l->kind == VAE_LAYER_CONV)
        vae_conv2d_forward(x, m->params + l->w, m->params + l->b, y, B, l->cin, l->hin, l->win, l->cout, l->k,
                           l->stride, l->pad, flags, m->scratch);
    else
        vae_convt2d_forward(x, m->params + l->w, m->params + l->b, y, B, l->cin, l->hin, l->win, l->cout, l->k,
                            l->stride, l->pad, 0, flags, m->scratch);
}

/*
 * Whether layer i's backward applies the ReLU derivative of layer i - 1 to
 * its input gradient (the conv ops do it as they write dx, VAE_CONV_DX_RELU),
 * so that layer i - 1 skips its own pass. Layer i's input is then layer
 * i - 1's output: not so for the first decoder layer (its input is z).
 */
static int gates_input_grad(const vae_model *m, int i)
{
    return i > 0 && i < m->n_enc + m->n_dec && i != m->n_enc && m->layers[i].kind != VAE_LAYER_LINEAR &&
           m->layers[i - 1].act == VAE_ACT_RELU;
}

/* dY is the gradient at layer i's output (before its activation is undone, unless layer i + 1 did). */
void vae__stack_layer_backward(vae_model *m, int i, float *dY, float *dX, int B)
{
    const vae_layer *l = &m->layers[i];
    if (l->act == VAE_ACT_RELU && !gates_input_grad(m, i + 1))
        vae_relu_backward(m->act[i + 1], dY, (size_t)B * l->out);
    const float *x = layer_input(m, i);
    int flags = l->layout | (dX && gates_input_grad(m, i) ? VAE_CONV_DX_RELU : 0);
    if (l->kind == VAE_LAYER_LINEAR && l->flat) {
        /* wperm still holds this step's weights, permuted by the forward pass. */
        size_t nwb = (size_t)l->out * l->in + l->out;
        memset(l->gperm, 0, nwb * sizeof(float));
        vae_linear_backward(x, l->wperm, dY, dX, l->gperm, l->gperm + (size_t)l->out * l->in, B, l->in, l->out);
        flat_unpermute_add(l, l->gperm, m->grads + l->w, m->grads + l->b);
    } else if (l->kind == VAE_LAYER_LINEAR)
        vae_linear_backward(x, m->params + l->w, dY, dX, m->grads + l->w, m->grads + l->b, B, l->in, l->out);
    else if (l->kind == VAE_LAYER_CONV)
        vae_conv2d_backward(x, m->params + l->w, dY, dX, m->grads + l->w, m->grads + l->b, B, l->cin, l->hin,
                            l->win, l->cout, l->k, l->stride, l->pad, flags, m->scratch);
    else
        vae_convt2d_backward(x, m->params + l->w, dY, dX, m->grads + l->w, m->grads + l->b, B, l->cin, l->hin,
                             l->win, l->cout, l->k, l->stride, l->pad, 0, flags, m->scratch);
}

/* The encoder: mulv[B, 2Z] of the B rows in the input buffer, in the arena. */
const float *vae__stack_encode_mulv(vae_model *m, int B)
{
    for (int i = 0; i < m->n_enc; i++) vae__stack_layer_forward(m, i, B);
    return m->act[m->n_enc];
}

void vae__stack_encode(vae_model *m, int B, float *mu, float *logvar)
{
    const int Z = m->Z;
    const float *mulv = vae__stack_encode_mulv(m, B);
    for (int i = 0; i < B; i++) {
        if (mu) memcpy(mu + (size_t)i * Z, mulv + (size_t)i * 2 * Z, (size_t)Z * sizeof(float));
        if (logvar) memcpy(logvar + (size_t)i * Z, mulv + (size_t)i * 2 * Z + Z, (size_t)Z * sizeof(float));
    }
}

void vae__stack_pass(vae_model *m, const vae_pass *p)
{
    int nl = m->n_enc + m->n_dec, Z = m->Z, D = m->D, B = p->B, backward = p->backward;
    const float *eps = p->eps;
    float grad_scale = p->grad_scale, beta = p->beta;
    double *row_recon = p->row_terms, *row_kl = p->row_terms ? p->row_terms + B : NULL;
    const float *mulv = vae__stack_encode_mulv(m, B);
    vae_reparam_forward(mulv, eps, m->z, B, Z);
    for (int i = m->n_enc; i < nl; i++) vae__stack_layer_forward(m, i, B);
    const float *logits = m->act[nl];
    const float *x = m->act[0];

    float *dlogits = backward ? m->g0 : NULL;
    if (row_recon) memset(row_recon, 0, (size_t)B * sizeof(double));
    double recon = m->arch.loss == VAE_LOSS_BCE
                       ? vae_bce_logits_loss(logits, x, dlogits, B, D, grad_scale, row_recon)
                       : vae_mse_loss(logits, x, dlogits, B, D, grad_scale, row_recon);
    if (backward) memset(m->dmulv, 0, (size_t)B * 2 * Z * sizeof(float));
    float *dmulv = backward ? m->dmulv : NULL;
    double kl = p->capacity >= 0.0f  ? vae_kl_capacity_loss(mulv, dmulv, B, Z, grad_scale * beta, p->capacity, row_kl)
                : p->free_bits > 0.0f ? vae_kl_free_bits_loss(mulv, dmulv, B, Z, grad_scale * beta, p->free_bits, row_kl)
                                      : vae_kl_loss(mulv, dmulv, B, Z, grad_scale * beta, row_kl);
    if (p->terms) {
        p->terms[0] = recon;
        p->terms[1] = kl;
    }
    if (!backward) return;

    /* Decoder, last layer first; the first decoder layer's input gradient is dz. */
    float *dY = m->g0, *other = m->g1;
    for (int i = nl - 1; i >= m->n_enc; i--) {
        float *dX = i == m->n_enc ? m->dz : other;
        vae__stack_layer_backward(m, i, dY, dX, B);
        if (m->grad_ready) m->grad_ready(m->grad_ctx, m->layers[i].w, m->layers[i].b + m->layers[i].out);
        other = dY;
        dY = dX;
    }
    vae_reparam_backward(mulv, eps, m->dz, m->dmulv, B, Z);
    /* Encoder, heads first; the input layer needs no input gradient. */
    dY = m->dmulv;
    other = m->g0;
    for (int i = m->n_enc - 1; i >= 0; i--) {
        float *dX = i == 0 ? NULL : other;
        vae__stack_layer_backward(m, i, dY, dX, B);
        if (m->grad_ready) m->grad_ready(m->grad_ctx, m->layers[i].w, m->layers[i].b + m->layers[i].out);
        other = dY == m->dmulv ? m->g1 : dY;
        dY = dX;
    }
}

void vae__stack_decode(vae_model *m, const float *z, int B, float *images)
{
    int nl = m->n_enc + m->n_dec;
    if (z != m->z) memcpy(m->z, z, (size_t)B * m->Z * sizeof(float));
    for (int i = m->n_enc; i < nl; i++) vae__stack_layer_forward(m, i, B);
    size_t n = (size_t)B * m->D;
    if (m->arch.loss == VAE_LOSS_BCE) vae_sigmoid(m->act[nl], images, n);
    else memcpy(images, m->act[nl], n * sizeof(float));
}

void vae__stack_generate(vae_model *m, float *noise, float temperature, int B, float *images)
{
    for (size_t i = 0; i < (size_t)B * m->Z; i++) noise[i] *= temperature;
    vae__stack_decode(m, noise, B, images);
}

double vae__stack_flops(const vae_model *m)
{
    double f = 0.0;
    int nl = m->n_enc + m->n_dec;
    for (int i = 0; i < nl; i++) {
        const vae_layer *l = &m->layers[i];
        /* A convolution's products: every output (or, transposed, input) pixel times cin*k*k. */
        double mac = l->kind == VAE_LAYER_LINEAR ? (double)l->in * l->out
                     : l->kind == VAE_LAYER_CONV ? (double)l->cout * l->hout * l->wout * l->cin * l->k * l->k
                                                 : (double)l->cin * l->hin * l->win * l->cout * l->k * l->k;
        /* forward, weight gradient, and input gradient except for the first layer */
        f += 2.0 * mac * (i == 0 ? 2.0 : 3.0);
    }
    return f;
}

void vae__stack_describe(const vae_arch *a, const char *word, char *buf, size_t len)
{
    size_t n = (size_t)snprintf(buf, len, " %s", word);
    for (int i = 0; i < a->n_hidden && n < len; i++) n += (size_t)snprintf(buf + n, len - n, "%s%d", i ? "," : " ", a->hidden[i]);
}

/*
 * log w = log p(x|z) + log p(z) - log q(z|x), z = mu + exp(logvar/2) eps:
 * log p(z) - log q(z|x) = sum_j -(z_j^2 - eps_j^2 - logvar_j) / 2 (the
 * log 2 pi of both cancel); log p(x|z) is minus the reconstruction term under
 * bce (a normalised Bernoulli likelihood for binary x), and under mse that of
 * a Gaussian decoder with variance 1/2: -sum (x - a)^2 - (D/2) ln(pi).
 */
void vae__stack_log_weights(vae_model *m, const float *eps, int B, int one_row, double *logw)
{
    const int nl = m->n_enc + m->n_dec, Z = m->Z, D = m->D;
    const float *mulv = vae__stack_encode_mulv(m, one_row ? 1 : B);
    if (one_row) /* the encoder ran on the first row: its mu and logvar for every copy */
        for (int r = 1; r < B; r++) memcpy(m->act[m->n_enc] + (size_t)r * 2 * Z, mulv, (size_t)2 * Z * sizeof(float));
    vae_reparam_forward(mulv, eps, m->z, B, Z);
    for (int i = m->n_enc; i < nl; i++) vae__stack_layer_forward(m, i, B);
    memset(logw, 0, (size_t)B * sizeof(double));
    if (m->arch.loss == VAE_LOSS_BCE) vae_bce_logits_loss(m->act[nl], m->act[0], NULL, B, D, 1.0f, logw);
    else vae_mse_loss(m->act[nl], m->act[0], NULL, B, D, 1.0f, logw);
    const double c = m->arch.loss == VAE_LOSS_MSE ? 0.5 * D * 1.1447298858494002 : 0.0; /* (D/2) ln(pi) */
    for (int r = 0; r < B; r++) {
        const float *lv = mulv + (size_t)r * 2 * Z + Z, *z = m->z + (size_t)r * Z, *e = eps + (size_t)r * Z;
        double prior_minus_q = 0.0;
        for (int j = 0; j < Z; j++) prior_minus_q += -0.5 * ((double)z[j] * z[j] - (double)e[j] * e[j] - lv[j]);
        logw[r] = -logw[r] - c + prior_minus_q;
    }
}
