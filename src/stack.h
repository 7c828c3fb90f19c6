/*
 * stack.h (internal): the layer stack that the mlp and conv families share:
 * an encoder stack ending in the mu and logvar heads, one Gaussian latent,
 * and a decoder stack giving the logits; the loss per row is recon + beta *
 * KL (terms "recon" and "kl"). A family builds its layers with the
 * vae__stack_add_* calls in its plan and points its table at the
 * vae__stack_* functions below.
 */
#ifndef MPIVAE_STACK_H
#define MPIVAE_STACK_H

#include "mpivae/model.h"

/* The two terms of a stack family: recon (weight 1) and kl (weight beta). */
extern const vae_term vae__stack_terms[2];

/* A Linear layer named `name` (weight [out,in], bias [out]) after the layers so far. */
vae_layer *vae__stack_add_linear(vae_model *m, const char *name, int in, int out, int act);

/* The mu and logvar heads as one Linear(in, 2Z) (adjacent weights, then biases); ends the encoder. */
void vae__stack_add_heads(vae_model *m, const char *mu_name, const char *lv_name, int in, int Z);

/*
 * A Conv2d (transposed = 0: weight [cout, cin, 4, 4]) or ConvTranspose2d
 * (transposed = 1: weight [cin, cout, 4, 4]) with stride 2 and padding 1.
 */
void vae__stack_add_conv(vae_model *m, const char *name, int transposed, int cin, int cout, int h, int w, int act);

/* Declares the one latent group "z" of Z values and the noise (Z per row) after the layers are built. */
void vae__stack_finish_plan(vae_model *m);

int vae__stack_init(vae_model *m, int max_batch);

/*
 * Layer i on B rows: act[i + 1] from its input (act[i], or z for the first
 * decoder layer). A family whose layers are all "encoder" layers (n_dec 0,
 * no latent) runs a plain feed-forward stack with these two.
 */
void vae__stack_layer_forward(vae_model *m, int i, int B);

/*
 * Backward through layer i: dY[B, out] is the gradient at its output (its
 * ReLU is undone here unless layer i + 1's conv op did it); parameter
 * gradients are added into m->grads; dX[B, in] is overwritten (NULL: not
 * wanted).
 */
void vae__stack_layer_backward(vae_model *m, int i, float *dY, float *dX, int B);

/* The encoder's layers on B rows of the input buffer: mulv[B, 2Z] (mu | logvar), in the arena. */
const float *vae__stack_encode_mulv(vae_model *m, int B);

/* The conv family's layers (family_conv.c): strided convolutions with --hidden channels, the heads, the mirror. */
void vae__conv_plan_layers(vae_model *m);
void vae__stack_pass(vae_model *m, const vae_pass *p);
void vae__stack_encode(vae_model *m, int B, float *mu, float *logvar);
void vae__stack_decode(vae_model *m, const float *z, int B, float *images);
void vae__stack_generate(vae_model *m, float *noise, float temperature, int B, float *images);
double vae__stack_flops(const vae_model *m);
void vae__stack_log_weights(vae_model *m, const float *eps, int B, int one_row, double *logw);

/* " WORD H1,H2,..." (the banner's model line after the family's name). */
void vae__stack_describe(const vae_arch *a, const char *word, char *buf, size_t len);

/* The entries of a stack family's table that every stack family shares (its terms, tools and passes). */
#define VAE__STACK_FAMILY                                                                                              \
    .n_terms = 2, .terms = vae__stack_terms,                                                                           \
    .tools = VAE_TOOL_EVAL | VAE_TOOL_SAMPLE | VAE_TOOL_RECONSTRUCT | VAE_TOOL_INTERPOLATE | VAE_TOOL_TRAVERSE |       \
             VAE_TOOL_ANOMALY | VAE_TOOL_ENCODE,                                                                       \
    .init = vae__stack_init, .pass = vae__stack_pass, .encode = vae__stack_encode, .decode = vae__stack_decode,       \
    .generate = vae__stack_generate, .flops = vae__stack_flops, .log_weights = vae__stack_log_weights

#endif
