/*
 * model.c: building a VAE over flat parameter blocks, and its forward and
 * backward passes (see model.h).
 */
#define _POSIX_C_SOURCE 200809L
#include "mpivae/model.h"

#include "mpivae/conv.h"
#include "mpivae/ops.h"
#include "mpivae/rng.h"
#include "mpivae/status.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static float *alloc_floats(size_t n)
{
    void *p = NULL;
    size_t bytes = (n * sizeof(float) + 63) & ~(size_t)63;
    if (bytes == 0) bytes = 64;
    if (posix_memalign(&p, 64, bytes) != 0) return NULL;
    memset(p, 0, bytes);
    return p;
}

int vae_arch_check(const vae_arch *a)
{
    if (a->C < 1 || a->Hh < 1 || a->W < 1)
        return vae_error(VAE_EINVAL, "input shape %dx%dx%d is not positive", a->C, a->Hh, a->W);
    if (a->latent < 1 || a->latent > 4096)
        return vae_error(VAE_EINVAL, "--latent %d is out of range 1..4096", a->latent);
    if (a->n_hidden < 1 || a->n_hidden > VAE_MAX_HIDDEN)
        return vae_error(VAE_EINVAL, "--hidden needs 1..%d sizes, got %d", VAE_MAX_HIDDEN,
                         a->n_hidden);
    for (int i = 0; i < a->n_hidden; i++)
        if (a->hidden[i] < 1 || a->hidden[i] > 65536)
            return vae_error(VAE_EINVAL, "--hidden size %d is out of range 1..65536", a->hidden[i]);
    if (a->loss != VAE_LOSS_BCE && a->loss != VAE_LOSS_MSE)
        return vae_error(VAE_EINVAL, "unknown loss kind %d", a->loss);
    if (a->kind == VAE_MODEL_CONV) {
        /* Every conv layer halves H and W (kernel 4, stride 2, padding 1). */
        int f = 1 << a->n_hidden;
        if (a->Hh % f || a->W % f) {
            int h_lo = a->Hh / f * f, w_lo = a->W / f * f; /* the nearest sizes that work, never 0 */
            if (h_lo == 0) h_lo = f;
            if (w_lo == 0) w_lo = f;
            return vae_error(VAE_EINVAL,
                             "--model conv with %d conv layers needs H and W divisible by %d, but the data is "
                             "%dx%d; sizes that work: H in {%d, %d, ...}, W in {%d, %d, ...} (or fewer layers "
                             "with --hidden)",
                             a->n_hidden, f, a->Hh, a->W, h_lo, h_lo + f, w_lo, w_lo + f);
        }
        return VAE_OK;
    }
    if (a->kind != VAE_MODEL_MLP) return vae_error(VAE_EINVAL, "unknown model kind %d", a->kind);
    return VAE_OK;
}

/* Appends a tensor view; returns its offset. */
static size_t add_tensor(vae_model *m, const char *name, int ndim, const int *shape, float bound)
{
    vae_tensor *t = &m->tensors[m->n_tensors++];
    snprintf(t->name, sizeof t->name, "%.48s", name);
    t->ndim = ndim;
    t->numel = 1;
    for (int i = 0; i < ndim; i++) {
        t->shape[i] = shape[i];
        t->numel *= (size_t)shape[i];
    }
    t->offset = m->n_params;
    t->init_bound = bound;
    m->n_params += t->numel;
    return t->offset;
}

/* A Linear layer named `name` (weight [out,in], bias [out]). */
static vae_layer *add_linear(vae_model *m, const char *name, int in, int out, int act)
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
    l->w = add_tensor(m, buf, 2, (int[]){ out, in }, bound);
    snprintf(buf, sizeof buf, "%.40s.bias", name);
    l->b = add_tensor(m, buf, 1, (int[]){ out }, bound);
    return l;
}

/*
 * The mu and logvar heads as one Linear(in, 2Z): fc21.weight and fc22.weight
 * are adjacent in the block (one [2Z,in] matrix), then fc21.bias and
 * fc22.bias (one [2Z] vector), so one sgemm computes both heads.
 */
static void add_heads(vae_model *m, const char *mu_name, const char *lv_name, int in, int Z)
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
    l->w = add_tensor(m, buf, 2, (int[]){ Z, in }, bound);
    snprintf(buf, sizeof buf, "%.40s.weight", lv_name);
    add_tensor(m, buf, 2, (int[]){ Z, in }, bound);
    snprintf(buf, sizeof buf, "%.40s.bias", mu_name);
    l->b = add_tensor(m, buf, 1, (int[]){ Z }, bound);
    snprintf(buf, sizeof buf, "%.40s.bias", lv_name);
    add_tensor(m, buf, 1, (int[]){ Z }, bound);
    m->n_enc++;
}

/*
 * A Conv2d (transposed = 0: weight [cout, cin, k, k]) or ConvTranspose2d
 * (transposed = 1: weight [cin, cout, k, k]) layer with kernel 4, stride 2,
 * padding 1: H and W halve or double. PyTorch's default init bound is
 * 1/sqrt(fan_in) with fan_in = weight.size(1) * k * k.
 */
static void add_conv(vae_model *m, const char *name, int transposed, int cin, int cout, int h, int w, int act)
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
    l->w = add_tensor(m, buf, 4, transposed ? (int[]){ cin, cout, k, k } : (int[]){ cout, cin, k, k }, bound);
    snprintf(buf, sizeof buf, "%.40s.bias", name);
    l->b = add_tensor(m, buf, 1, (int[]){ cout }, bound);
}

/*
 * --model conv, channels c1..cn (--hidden): enc.0, enc.2, ... Conv2d(k4, s2,
 * p1) with ReLU; fc_mu and fc_logvar from the flattened [cn, H/2^n, W/2^n];
 * fc_dec back to it with ReLU; dec.0, dec.2, ... ConvTranspose2d(k4, s2, p1)
 * with ReLU between, the last one giving the logits (the names of PyTorch's
 * nn.Sequential indices).
 */
static void build_conv(vae_model *m)
{
    const vae_arch *a = &m->arch;
    int n = a->n_hidden, h = a->Hh, w = a->W, cin = a->C;
    char name[VAE_NAME_LEN];
    for (int i = 0; i < n; i++) {
        snprintf(name, sizeof name, "enc.%d", 2 * i);
        add_conv(m, name, 0, cin, a->hidden[i], h, w, VAE_ACT_RELU);
        m->n_enc++;
        cin = a->hidden[i];
        h /= 2;
        w /= 2;
    }
    int flat = cin * h * w, cin_flat = cin;
    add_heads(m, "fc_mu", "fc_logvar", flat, m->Z);
    add_linear(m, "fc_dec", m->Z, flat, VAE_ACT_RELU);
    m->n_dec++;
    for (int i = 0; i < n; i++) {
        int cout = i == n - 1 ? a->C : a->hidden[n - 2 - i];
        snprintf(name, sizeof name, "dec.%d", 2 * i);
        add_conv(m, name, 1, cin, cout, h, w, i == n - 1 ? VAE_ACT_NONE : VAE_ACT_RELU);
        m->n_dec++;
        cin = cout;
        h *= 2;
        w *= 2;
    }
    /* Channels last between two conv layers of the same stack, where it pays. */
    int nl = m->n_enc + m->n_dec;
    for (int i = 0; i + 1 < nl; i++) {
        vae_layer *from = &m->layers[i], *to = &m->layers[i + 1];
        if (from->kind == VAE_LAYER_LINEAR || to->kind == VAE_LAYER_LINEAR) continue;
        if (i + 1 == m->n_enc) continue; /* the encoder's output feeds the heads, not `to` */
        if (!vae_conv_channels_last(from->cout)) continue;
        from->layout |= VAE_CONV_Y_NHWC;
        to->layout |= VAE_CONV_X_NHWC;
    }
    /* And the flattened activation on both sides of the linear layers, likewise. */
    if (vae_conv_channels_last(cin_flat)) {
        vae_layer *last = &m->layers[m->n_enc - 2], *heads = &m->layers[m->n_enc - 1];
        vae_layer *dec = &m->layers[m->n_enc], *first = &m->layers[m->n_enc + 1];
        last->layout |= VAE_CONV_Y_NHWC;
        first->layout |= VAE_CONV_X_NHWC;
        heads->flat = 1;
        dec->flat = 2;
        heads->flat_c = dec->flat_c = cin_flat;
        heads->flat_hw = dec->flat_hw = flat / cin_flat;
    }
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

static void build_mlp(vae_model *m)
{
    const vae_arch *a = &m->arch;
    int k = a->n_hidden;
    char name[VAE_NAME_LEN];
    /* Encoder: fc1 D->H1, fc1_i H(i-1)->Hi. */
    for (int i = 0; i < k; i++) {
        if (i == 0) snprintf(name, sizeof name, "fc1");
        else snprintf(name, sizeof name, "fc1_%d", i + 1);
        add_linear(m, name, i == 0 ? m->D : a->hidden[i - 1], a->hidden[i], VAE_ACT_RELU);
        m->n_enc++;
    }
    add_heads(m, "fc21", "fc22", a->hidden[k - 1], m->Z);
    /* Decoder: fc3 Z->Hk, fc3_i mirrored back down to H1, fc4 H1->D (logits). */
    for (int i = 0; i < k; i++) {
        if (i == 0) snprintf(name, sizeof name, "fc3");
        else snprintf(name, sizeof name, "fc3_%d", i + 1);
        add_linear(m, name, i == 0 ? m->Z : a->hidden[k - i], a->hidden[k - 1 - i], VAE_ACT_RELU);
        m->n_dec++;
    }
    add_linear(m, "fc4", a->hidden[0], m->D, VAE_ACT_NONE);
    m->n_dec++;
}

int vae_model_plan(vae_model *m, const vae_arch *arch)
{
    memset(m, 0, sizeof *m);
    int rc = vae_arch_check(arch);
    if (rc) return rc;
    m->arch = *arch;
    m->D = arch->C * arch->Hh * arch->W;
    m->Z = arch->latent;
    if (arch->kind == VAE_MODEL_CONV) build_conv(m);
    else build_mlp(m);
    return VAE_OK;
}

int vae_model_init(vae_model *m, const vae_arch *arch, int max_batch)
{
    int rc = vae_model_plan(m, arch);
    if (rc) return rc;
    if (max_batch < 1) return vae_error(VAE_EINVAL, "batch size %d is not positive", max_batch);

    m->params = alloc_floats(m->n_params);
    m->grads = alloc_floats(m->n_params + VAE_GRAD_EXTRA);
    m->m = alloc_floats(m->n_params);
    m->v = alloc_floats(m->n_params);

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
    m->arena = alloc_floats(total + 16 * (nl + 8));
    if (!m->params || !m->grads || !m->m || !m->v || !m->arena) {
        size_t np = m->n_params;
        vae_model_free(m);
        return vae_error(VAE_ENOMEM, "cannot allocate the model (%zu parameters, %.1f GB, and batch %d)", np,
                         (4.0 * np + total) * sizeof(float) / 1e9, max_batch);
    }
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
    m->max_batch = max_batch;
    m->capacity = -1.0f;
    return VAE_OK;
}

void vae_model_free(vae_model *m)
{
    free(m->params);
    free(m->grads);
    free(m->m);
    free(m->v);
    free(m->arena);
    memset(m, 0, sizeof *m);
}

void vae_model_init_params(vae_model *m, uint64_t seed)
{
    for (int i = 0; i < m->n_tensors; i++) {
        const vae_tensor *t = &m->tensors[i];
        float *p = m->params + t->offset;
        vae_rng_uniform(seed, VAE_RNG_INIT, (uint64_t)i, 0, p, (int64_t)t->numel);
        for (size_t j = 0; j < t->numel; j++) p[j] = (2.0f * p[j] - 1.0f) * t->init_bound;
    }
    memset(m->m, 0, m->n_params * sizeof(float));
    memset(m->v, 0, m->n_params * sizeof(float));
}

const vae_tensor *vae_model_find(const vae_model *m, const char *name)
{
    for (int i = 0; i < m->n_tensors; i++)
        if (strcmp(m->tensors[i].name, name) == 0) return &m->tensors[i];
    return NULL;
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

static void layer_forward(vae_model *m, int i, int B)
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
static void layer_backward(vae_model *m, int i, float *dY, float *dX, int B)
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

const float *vae_model_encode(vae_model *m, int B)
{
    for (int i = 0; i < m->n_enc; i++) layer_forward(m, i, B);
    return m->act[m->n_enc];
}

void vae_model_forward_backward(vae_model *m, const float *eps, int B, float beta,
                                float grad_scale, int backward, vae_loss_stats *st,
                                double *row_recon, double *row_kl)
{
    int nl = m->n_enc + m->n_dec, Z = m->Z, D = m->D;
    const float *mulv = vae_model_encode(m, B);
    vae_reparam_forward(mulv, eps, m->z, B, Z);
    for (int i = m->n_enc; i < nl; i++) layer_forward(m, i, B);
    const float *logits = m->act[nl];
    const float *x = m->act[0];

    float *dlogits = backward ? m->g0 : NULL;
    if (row_recon) memset(row_recon, 0, (size_t)B * sizeof(double));
    double recon = m->arch.loss == VAE_LOSS_BCE
                       ? vae_bce_logits_loss(logits, x, dlogits, B, D, grad_scale, row_recon)
                       : vae_mse_loss(logits, x, dlogits, B, D, grad_scale, row_recon);
    if (backward) memset(m->dmulv, 0, (size_t)B * 2 * Z * sizeof(float));
    double kl = m->capacity >= 0.0f
                    ? vae_kl_capacity_loss(mulv, backward ? m->dmulv : NULL, B, Z, grad_scale * beta, m->capacity, row_kl)
                    : vae_kl_loss(mulv, backward ? m->dmulv : NULL, B, Z, grad_scale * beta, row_kl);
    if (st) {
        st->recon = recon;
        st->kl = kl;
        st->rows = B;
    }
    if (!backward) return;

    /* Decoder, last layer first; the first decoder layer's input gradient is dz. */
    float *dY = m->g0, *other = m->g1;
    for (int i = nl - 1; i >= m->n_enc; i--) {
        float *dX = i == m->n_enc ? m->dz : other;
        layer_backward(m, i, dY, dX, B);
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
        layer_backward(m, i, dY, dX, B);
        if (m->grad_ready) m->grad_ready(m->grad_ctx, m->layers[i].w, m->layers[i].b + m->layers[i].out);
        other = dY == m->dmulv ? m->g1 : dY;
        dY = dX;
    }
}

void vae_model_decode(vae_model *m, const float *z, int B, float *images)
{
    int nl = m->n_enc + m->n_dec;
    memcpy(m->z, z, (size_t)B * m->Z * sizeof(float));
    for (int i = m->n_enc; i < nl; i++) layer_forward(m, i, B);
    size_t n = (size_t)B * m->D;
    if (m->arch.loss == VAE_LOSS_BCE) vae_sigmoid(m->act[nl], images, n);
    else memcpy(images, m->act[nl], n * sizeof(float));
}

double vae_model_flops_per_sample(const vae_model *m)
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
