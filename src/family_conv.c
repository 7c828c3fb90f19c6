/*
 * family_conv.c: --model conv: strided convolutions (kernel 4, stride 2,
 * padding 1; --hidden gives the channels), the mu and logvar heads on the
 * flattened features, and transposed convolutions back, over the layer stack
 * (stack.h).
 */
#define _POSIX_C_SOURCE 200809L
#include "stack.h"

#include "mpivae/conv.h"
#include "mpivae/ops.h"
#include "mpivae/status.h"

#include <stdio.h>

/* Channels 32,64 and 16 latent dimensions unless given. */
static void defaults(vae_arch *a, int hidden_set, int latent_set)
{
    if (!hidden_set) {
        a->n_hidden = 2;
        a->hidden[0] = 32;
        a->hidden[1] = 64;
    }
    if (!latent_set) a->latent = 16;
}

/* Every conv layer halves H and W. */
static int check(const vae_arch *a, int cli, char *why, size_t len)
{
    int f = 1 << a->n_hidden;
    if (a->Hh % f == 0 && a->W % f == 0) return VAE_OK;
    if (!cli) {
        snprintf(why, len, "attribute 'input_shape' is %dx%dx%d, but %d conv layers need H and W divisible by %d", a->C,
                 a->Hh, a->W, a->n_hidden, f);
        return VAE_EINVAL;
    }
    int h_lo = a->Hh / f * f, w_lo = a->W / f * f; /* the nearest sizes that work, never 0 */
    if (h_lo == 0) h_lo = f;
    if (w_lo == 0) w_lo = f;
    snprintf(why, len,
             "--model conv with %d conv layers needs H and W divisible by %d, but the data is "
             "%dx%d; sizes that work: H in {%d, %d, ...}, W in {%d, %d, ...} (or fewer layers "
             "with --hidden)",
             a->n_hidden, f, a->Hh, a->W, h_lo, h_lo + f, w_lo, w_lo + f);
    return VAE_EINVAL;
}

/*
 * --model conv, channels c1..cn (--hidden): enc.0, enc.2, ... Conv2d(k4, s2,
 * p1) with ReLU; fc_mu and fc_logvar from the flattened [cn, H/2^n, W/2^n];
 * fc_dec back to it with ReLU; dec.0, dec.2, ... ConvTranspose2d(k4, s2, p1)
 * with ReLU between, the last one giving the logits (the names of PyTorch's
 * nn.Sequential indices).
 */
void vae__conv_plan_layers(vae_model *m)
{
    const vae_arch *a = &m->arch;
    int n = a->n_hidden, h = a->Hh, w = a->W, cin = a->C;
    char name[VAE_NAME_LEN];
    for (int i = 0; i < n; i++) {
        snprintf(name, sizeof name, "enc.%d", 2 * i);
        vae__stack_add_conv(m, name, 0, cin, a->hidden[i], h, w, VAE_ACT_RELU);
        m->n_enc++;
        cin = a->hidden[i];
        h /= 2;
        w /= 2;
    }
    int flat = cin * h * w, cin_flat = cin;
    vae__stack_add_heads(m, "fc_mu", "fc_logvar", flat, a->latent);
    vae__stack_add_linear(m, "fc_dec", a->latent, flat, VAE_ACT_RELU);
    m->n_dec++;
    for (int i = 0; i < n; i++) {
        int cout = i == n - 1 ? a->C : a->hidden[n - 2 - i];
        snprintf(name, sizeof name, "dec.%d", 2 * i);
        vae__stack_add_conv(m, name, 1, cin, cout, h, w, i == n - 1 ? VAE_ACT_NONE : VAE_ACT_RELU);
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

static void plan(vae_model *m)
{
    vae__conv_plan_layers(m);
    vae__stack_finish_plan(m);
}

static void describe(const vae_arch *a, char *buf, size_t len) { vae__stack_describe(a, "channels", buf, len); }

const vae_family vae_family_conv = {
    .name = "conv",
    .help = "strided convolutions (--hidden gives the channels per layer)",
    VAE__STACK_FAMILY,
    .defaults = defaults,
    .check = check,
    .plan = plan,
    .describe = describe,
};
