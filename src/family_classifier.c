/*
 * family_classifier.c: --model classifier (`mpivae classify`): a small
 * convolutional classifier of labeled data, trained with the softmax
 * cross-entropy, over the layer stack (stack.h) with every layer an
 * "encoder" layer and no latent:
 *
 *   x[B, C*H*W] -> conv.0, conv.2, ... Conv2d(k4, s2, p1) + ReLU (--hidden channels)
 *               -> flatten -> fc Linear(flat, F) + ReLU   (F = --latent: the features)
 *               -> out Linear(F, K) -> logits[B, K]       (K = --classes)
 *   loss per row = log sum_k exp(logits_k) - logits_label   (term "xent", nats)
 *   error per row = 1 when the largest logit is not the label's (term "error", reported only)
 *
 * The features entry (family.h) gives the fc layer's output after its ReLU,
 * [B, F]: the penultimate layer, for the Frechet distance of `mpivae fid`.
 * The names are those of a PyTorch module with conv = nn.Sequential(Conv2d,
 * ReLU, ...), fc and out (tests/pytorch/classifier_model.py).
 */
#define _POSIX_C_SOURCE 200809L
#include "stack.h"

#include "mpivae/conv.h"
#include "mpivae/ops.h"
#include "mpivae/status.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const vae_term terms[2] = { { "xent", VAE_TERM_ONE }, { "error", VAE_TERM_STAT } };

/* Channels 32,64 and 128 features unless given. */
static void defaults(vae_arch *a, int hidden_set, int latent_set)
{
    if (!hidden_set) {
        a->n_hidden = 2;
        a->hidden[0] = 32;
        a->hidden[1] = 64;
    }
    if (!latent_set) a->latent = 128;
}

/* Every conv layer halves H and W; 2..65536 classes; the loss is the classifier's own. */
static int check(const vae_arch *a, int cli, char *why, size_t len)
{
    int f = 1 << a->n_hidden;
    if (a->Hh % f || a->W % f) {
        if (cli)
            snprintf(why, len, "--model classifier with %d conv layers needs H and W divisible by %d, but the data is "
                     "%dx%d (use fewer layers with --hidden)", a->n_hidden, f, a->Hh, a->W);
        else
            snprintf(why, len, "attribute 'input_shape' is %dx%dx%d, but %d conv layers need H and W divisible by %d",
                     a->C, a->Hh, a->W, a->n_hidden, f);
        return VAE_EINVAL;
    }
    if (a->classes < 2 || a->classes > 65536) {
        snprintf(why, len, cli ? "--model classifier needs 2..65536 classes, got %d (--classes, or the labels' largest "
                                 "value + 1)"
                               : "attribute 'classes' is %d, outside 2..65536",
                 a->classes);
        return VAE_EINVAL;
    }
    if (a->loss != VAE_LOSS_BCE) {
        snprintf(why, len, cli ? "--model classifier takes no --loss: its loss is the softmax cross-entropy of the labels"
                               : "attribute 'loss' is not bce, which a classifier stores");
        return VAE_EINVAL;
    }
    return VAE_OK;
}

static void plan(vae_model *m)
{
    const vae_arch *a = &m->arch;
    int n = a->n_hidden, h = a->Hh, w = a->W, cin = a->C;
    char name[VAE_NAME_LEN];
    for (int i = 0; i < n; i++) {
        snprintf(name, sizeof name, "conv.%d", 2 * i);
        vae__stack_add_conv(m, name, 0, cin, a->hidden[i], h, w, VAE_ACT_RELU);
        m->n_enc++;
        cin = a->hidden[i];
        h /= 2;
        w /= 2;
    }
    int flat = cin * h * w;
    vae_layer *fc = vae__stack_add_linear(m, "fc", flat, a->latent, VAE_ACT_RELU);
    m->n_enc++;
    vae__stack_add_linear(m, "out", a->latent, a->classes, VAE_ACT_NONE);
    m->n_enc++;
    /* Channels last between conv layers, and into fc, where it pays (as --model conv does). */
    for (int i = 0; i + 1 < n; i++)
        if (vae_conv_channels_last(m->layers[i].cout)) {
            m->layers[i].layout |= VAE_CONV_Y_NHWC;
            m->layers[i + 1].layout |= VAE_CONV_X_NHWC;
        }
    if (vae_conv_channels_last(cin)) {
        m->layers[n - 1].layout |= VAE_CONV_Y_NHWC;
        fc->flat = 1;
        fc->flat_c = cin;
        fc->flat_hw = h * w;
    }
    m->n_features = a->latent;
    /* Backward finishes the layers last first, each one's weight and bias together. */
    for (int i = m->n_enc - 1; i >= 0; i--) m->ready_lo[m->n_ready++] = m->layers[i].w;
}

/* Forward through every layer; the logits [B, K] are act[n_enc]. */
static void forward(vae_model *m, int B, int upto)
{
    for (int i = 0; i < upto; i++) vae__stack_layer_forward(m, i, B);
}

/* The stack's arena, and the error flags of a batch (priv: double[max_batch]). */
static int init(vae_model *m, int max_batch)
{
    int rc = vae__stack_init(m, max_batch);
    if (rc) return rc;
    m->priv = calloc((size_t)max_batch, sizeof(double));
    return m->priv ? VAE_OK : vae_error(VAE_ENOMEM, "cannot allocate the error flags of a batch of %d", max_batch);
}

static void pass(vae_model *m, const vae_pass *p)
{
    const int nl = m->n_enc, B = p->B, K = m->arch.classes;
    forward(m, B, nl);
    float *dlogits = p->backward ? m->g0 : NULL; /* [B, K] */
    double *row_xent = p->row_terms, *wrong = p->row_terms ? p->row_terms + B : m->priv; /* [B] each */
    if (row_xent) memset(row_xent, 0, (size_t)B * sizeof(double));
    double xent = vae_softmax_xent_loss(m->act[nl], m->labels, dlogits, B, K, p->grad_scale, row_xent, wrong);
    double errors = 0.0;
    for (int r = 0; r < B; r++) errors += wrong[r];
    if (p->terms) {
        p->terms[0] = xent;
        p->terms[1] = errors;
    }
    if (!p->backward) return;
    float *dY = m->g0, *other = m->g1;
    for (int i = nl - 1; i >= 0; i--) {
        float *dX = i == 0 ? NULL : other;
        vae__stack_layer_backward(m, i, dY, dX, B);
        if (m->grad_ready) m->grad_ready(m->grad_ctx, m->layers[i].w, m->layers[i].b + m->layers[i].out);
        other = dY;
        dY = dX;
    }
}

static void features(vae_model *m, int B, float *feat)
{
    forward(m, B, m->n_enc - 1);
    memcpy(feat, m->act[m->n_enc - 1], (size_t)B * m->n_features * sizeof(float));
}

static void describe(const vae_arch *a, char *buf, size_t len)
{
    vae__stack_describe(a, "channels", buf, len);
    size_t n = strlen(buf);
    snprintf(buf + n, len - n, " features %d classes %d", a->latent, a->classes);
}

const vae_family vae_family_classifier = {
    .name = "classifier",
    .help = "a conv classifier of labeled data (mpivae classify): --hidden\nchannels, --latent features, "
            "softmax cross-entropy",
    .n_terms = 2,
    .terms = terms,
    .tools = VAE_TOOL_EVAL,
    .labeled = 1,
    .defaults = defaults,
    .check = check,
    .plan = plan,
    .init = init,
    .pass = pass,
    .flops = vae__stack_flops,
    .describe = describe,
    .features = features,
};
