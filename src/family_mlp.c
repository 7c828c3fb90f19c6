/*
 * family_mlp.c: --model mlp, the VAE of PyTorch's example: Linear layers
 * with ReLU (--hidden sizes), the mu and logvar heads, and the mirrored
 * decoder, over the layer stack (stack.h).
 */
#define _POSIX_C_SOURCE 200809L
#include "stack.h"

#include "mpivae/ops.h"
#include "mpivae/status.h"

#include <stdio.h>

/* One hidden layer of 400 and 20 latent dimensions unless given (PyTorch's example). */
static void defaults(vae_arch *a, int hidden_set, int latent_set)
{
    if (!hidden_set) {
        a->n_hidden = 1;
        a->hidden[0] = 400;
    }
    if (!latent_set) a->latent = 20;
}

static int check(const vae_arch *a, int cli, char *why, size_t len)
{
    (void)a;
    (void)cli;
    (void)why;
    (void)len;
    return VAE_OK; /* any size the generic checks take */
}

static void plan(vae_model *m)
{
    const vae_arch *a = &m->arch;
    int k = a->n_hidden;
    char name[VAE_NAME_LEN];
    /* Encoder: fc1 D->H1, fc1_i H(i-1)->Hi. */
    for (int i = 0; i < k; i++) {
        if (i == 0) snprintf(name, sizeof name, "fc1");
        else snprintf(name, sizeof name, "fc1_%d", i + 1);
        vae__stack_add_linear(m, name, i == 0 ? m->D : a->hidden[i - 1], a->hidden[i], VAE_ACT_RELU);
        m->n_enc++;
    }
    vae__stack_add_heads(m, "fc21", "fc22", a->hidden[k - 1], a->latent);
    /* Decoder: fc3 Z->Hk, fc3_i mirrored back down to H1, fc4 H1->D (logits). */
    for (int i = 0; i < k; i++) {
        if (i == 0) snprintf(name, sizeof name, "fc3");
        else snprintf(name, sizeof name, "fc3_%d", i + 1);
        vae__stack_add_linear(m, name, i == 0 ? a->latent : a->hidden[k - i], a->hidden[k - 1 - i], VAE_ACT_RELU);
        m->n_dec++;
    }
    vae__stack_add_linear(m, "fc4", a->hidden[0], m->D, VAE_ACT_NONE);
    m->n_dec++;
    vae__stack_finish_plan(m);
}

static void describe(const vae_arch *a, char *buf, size_t len) { vae__stack_describe(a, "hidden", buf, len); }

const vae_family vae_family_mlp = {
    .name = "mlp",
    .help = "Linear layers with ReLU (--hidden sizes), as PyTorch's VAE example",
    VAE__STACK_FAMILY,
    .defaults = defaults,
    .check = check,
    .plan = plan,
    .describe = describe,
};
