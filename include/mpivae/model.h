/*
 * model.h: a model as named views over four flat parameter blocks; what the
 * model computes is its family's (family.h).
 *
 * All parameters live in ONE 64-byte aligned float block; gradients and the
 * two Adam moments are parallel blocks of the same size, so zero-grad is one
 * memset, the gradient allreduce is one call, Adam is one loop per parameter
 * group and a checkpoint is one dataset per named view. Activations live in
 * an arena sized once for the largest local batch: nothing is allocated per
 * step.
 *
 * Data flow of the two layer-stack families, mlp and conv (B = local batch,
 * D = C*Hh*W, Z = latent):
 *   x[B,D] -> encoder layers -> mulv[B,2Z] (mu | logvar)
 *   z[B,Z] = mu + exp(logvar/2) * eps
 *   z -> decoder layers -> logits[B,D]
 *   loss per row = recon(logits, x) + beta * KL(mu, logvar)
 */
#ifndef MPIVAE_MODEL_H
#define MPIVAE_MODEL_H

#include "mpivae/family.h"
#include "mpivae/optim.h"

#include <stddef.h>
#include <stdint.h>

#define VAE_MAX_HIDDEN 8
#define VAE_MAX_TENSORS 256
#define VAE_MAX_LAYERS 24
#define VAE_NAME_LEN 64
#define VAE_MAX_GROUPS 8
#define VAE_MAX_LATENTS 16
#define VAE_MAX_READY 64

/* The built-in families' indices in the registry (family.h): vae_arch.kind. */
enum vae_model_kind { VAE_MODEL_MLP = 0, VAE_MODEL_CONV = 1, VAE_MODEL_HVAE = 2, VAE_MODEL_VAEGAN = 3, VAE_MODEL_CLASSIFIER = 4 };
enum vae_loss_kind { VAE_LOSS_BCE = 0, VAE_LOSS_MSE = 1 };

/*
 * The unit of the reported losses: BCE's reconstruction is a negative
 * log-likelihood in nats; MSE's is the squared error summed over the pixels
 * (a Gaussian decoder's negative log-likelihood with variance 1/2, less the
 * constant (D/2) ln(pi) nats). KL is in nats for both.
 */
static inline const char *vae_loss_unit(int loss)
{
    return loss == VAE_LOSS_MSE ? "per sample (recon: squared error summed over pixels; kl: nats)" : "nats per sample";
}

/* Everything that fixes the architecture (stored in every checkpoint). */
typedef struct vae_arch {
    int kind;                     /* the family's index in the registry (family.h; enum vae_model_kind) */
    int C, Hh, W;                 /* input image shape; D = C*Hh*W */
    int n_hidden;                 /* mlp: number of hidden layers; conv: number of conv layers */
    int hidden[VAE_MAX_HIDDEN];   /* mlp: hidden sizes; conv: channels per conv layer */
    int latent;                   /* Z */
    int loss;                     /* enum vae_loss_kind */
    int n_groups;                 /* hvae: latent groups per scale (0: the family has no such list) */
    int groups[VAE_MAX_HIDDEN];
    int posterior;                /* hvae: enum vae_posterior */
    int n_disc;                   /* vaegan: the discriminator's conv layers */
    int disc[VAE_MAX_HIDDEN];     /* vaegan: their channels */
    int feature_layer;            /* vaegan: the layer (1..n_disc) whose output is the feature space (0: the last) */
    int gen_loss;                 /* vaegan: enum vae_gen_loss */
    double gamma;                 /* vaegan: weight of the feature term in the decoder's loss */
    double equilibrium, eq_margin; /* vaegan: Larsen's equilibrium rule (equilibrium 0: off) */
    int classes;                  /* classifier: the number of classes K (labels 0..K-1); 0 for the VAEs */
} vae_arch;

/* A list option's count is the int just before its array (config.h's VAE_FT_GROUPS). */
_Static_assert(offsetof(vae_arch, groups) == offsetof(vae_arch, n_groups) + sizeof(int), "n_groups before groups");
_Static_assert(offsetof(vae_arch, disc) == offsetof(vae_arch, n_disc) + sizeof(int), "n_disc before disc");

/* vaegan's adversarial loss for the decoder: -log D(fake) (non-saturating), or log(1 - D(fake)) (Larsen's minimax). */
enum vae_gen_loss { VAE_GEN_NS = 0, VAE_GEN_MINIMAX = 1 };

/* hvae's posterior: NVAE's residual around the prior, or LVAE's precision-weighted merge. */
enum vae_posterior { VAE_POSTERIOR_RESIDUAL = 0, VAE_POSTERIOR_MERGE = 1 };

/* A named view into the parameter block, with its PyTorch shape. */
typedef struct vae_tensor {
    char name[VAE_NAME_LEN];
    int ndim;
    int shape[4];
    size_t offset; /* in floats from the start of the block */
    size_t numel;
    float init_bound; /* U(-bound, bound) at init (PyTorch's default for the layer) */
} vae_tensor;

enum vae_layer_kind { VAE_LAYER_LINEAR = 0, VAE_LAYER_CONV = 1, VAE_LAYER_CONVT = 2 };

typedef struct vae_layer {
    int kind;             /* enum vae_layer_kind */
    int act;              /* enum vae_act, applied to the output */
    int in, out;          /* flattened sizes per sample */
    size_t w, b;          /* offsets of weight and bias in the blocks */
    /* Convolutions: channels, spatial sizes, kernel, stride, padding. */
    int cin, cout, hin, win, hout, wout, k, stride, pad;
    /*
     * Convolutions: conv.h's layout flags. An activation between two conv
     * layers is kept channels last where vae_conv_channels_last says so
     * (elementwise ReLU does not mind), and so is the flattened activation
     * on both sides of the linear layers when the last encoder conv has
     * that many channels (see flat below); the model's input and the
     * decoder's output stay NCHW. ReLU after a conv layer is applied inside
     * the conv ops (VAE_CONV_RELU, VAE_CONV_DX_RELU).
     */
    int layout;
    /*
     * Linear layers next to the conv stack (the heads, fc_dec) when the
     * last encoder conv keeps channels last: the flattened [C, H*W] side
     * (flat 1: the input, 2: the output) is stored channels last, [H*W, C],
     * so neither conv transposes it; the layer computes with its weight (and
     * for an output, its bias) permuted to that order in wperm, and adds the
     * gradient in that order, gperm, back into the model's (PyTorch order).
     */
    int flat, flat_c, flat_hw;
    float *wperm, *gperm; /* [out*in + out] each: weight, then bias */
} vae_layer;

/*
 * A named range [lo, hi) of the flat block, updated by its own Adam with its
 * own settings and step count t (updates taken; a skipped step takes none).
 */
typedef struct vae_param_group {
    char name[32];
    size_t lo, hi;
    vae_adam adam;
    long t;
} vae_param_group;

/* A latent group: shape [C, H, W] (a vector: [dim, 1, 1]) and its offset in a row of all latents. */
typedef struct vae_latent_group {
    char name[32];
    int C, H, W, dim;
    int offset;
} vae_latent_group;

typedef struct vae_model {
    vae_arch arch;
    const vae_family *fam;
    int D;
    int Z;          /* every latent value of a row: the sum of the latent groups' dims */
    int noise_dim;  /* noise floats per row in a training or evaluation pass */
    int prior_dim;  /* noise floats per row of vae_model_generate */
    int n_features; /* values per row of vae_model_features (0: the family has none) */
    /* The loss terms (family.h): the family's list, or those its plan names (a hierarchy's KL per group). */
    int n_terms;
    vae_term terms[VAE_MAX_TERMS];
    int n_latents;
    vae_latent_group latents[VAE_MAX_LATENTS];
    int n_groups;
    vae_param_group groups[VAE_MAX_GROUPS];
    int n_tensors;
    vae_tensor tensors[VAE_MAX_TENSORS];
    size_t n_params;
    float *params; /* [n_params] */
    float *grads;  /* [n_params + grad_extra]: the tail carries the step's statistics (below) */
    size_t grad_extra;
    float *m, *v;  /* [n_params] Adam moments */
    float *ema;    /* [n_params] the parameters' moving average (--ema), or NULL */
    int n_enc, n_dec;
    vae_layer layers[VAE_MAX_LAYERS]; /* encoder layers, then decoder layers */
    /* Arena, sized for max_batch rows (by the family's init). */
    int max_batch;
    float *arena;
    float *input; /* [max_batch, D] */
    int *labels;  /* [max_batch] the class of each input row, filled beside the input (families with labels) */
    void *priv;   /* a family's own state, freed by vae_model_free (free()) */
    /* The layer-stack families' state (mlp, conv): */
    float *act[VAE_MAX_LAYERS + 1]; /* act[0] = x[B,D]; act[i+1] = output of layer i */
    float *eps;   /* [B,Z] */
    float *z;     /* [B,Z] */
    float *dmulv; /* [B,2Z] */
    float *dz;    /* [B,Z] */
    float *g0, *g1; /* [B,maxw] ping-pong activation gradients */
    float *scratch; /* convolution lowering buffer */
    size_t scratch_len;
    /*
     * Called during backward as soon as a range of parameter gradients is
     * final, [lo, hi) in the gradient block, so communication can start
     * while backward goes on. The family's plan lists the starts of those
     * ranges in the order backward reports them (ready_lo, descending; the
     * first range ends at n_params, each next one where the last began, the
     * last begins at 0); a family that lists none gets one call for the
     * whole block after its backward.
     */
    int n_ready;
    size_t ready_lo[VAE_MAX_READY];
    /*
     * A family without layers[] lists its ReLU outputs here, buffers of
     * relu_row[i] floats per row, so that the finite-difference tests can
     * tell when a perturbation crosses a kink.
     */
    int n_relu;
    const float *relu_at[64];
    size_t relu_row[64];
    void (*grad_ready)(void *ctx, size_t lo, size_t hi);
    void *grad_ctx;
} vae_model;

/*
 * Checks an architecture (its family, sizes and input shape); on error
 * reports why (naming valid sizes) and returns VAE_EINVAL.
 */
int vae_arch_check(const vae_arch *a);

/*
 * The same checks for an architecture read from a checkpoint: returns 0, or
 * VAE_EINVAL with why[] naming the attribute (prints nothing).
 */
int vae_arch_check_attrs(const vae_arch *a, char *why, size_t len);

/*
 * The tail of the gradient block, summed with the gradients in the step's
 * one reduction: four flags, then one slot per loss term, padded to a
 * multiple of 8 floats (grad_extra).
 */
enum {
    VAE_GX_COUNT = 0, /* local rows */
    VAE_GX_STOP,      /* stop request (signal) on this rank */
    VAE_GX_BAD,       /* non-finite loss on this rank */
    VAE_GX_FAIL,      /* a read or write failed on this rank */
    VAE_GX_TERMS      /* the family's terms, summed over local rows, from here */
};

/* Builds the tensors and groups, allocates the four blocks and the family's arena. */
int vae_model_init(vae_model *m, const vae_arch *arch, int max_batch);

/* The loss of the model's terms: vae_terms_loss over m->terms. */
static inline double vae_model_loss(const vae_model *m, const double *terms, double beta)
{
    return vae_terms_loss(m->n_terms, m->terms, terms, beta);
}

/*
 * The model's tensors (shapes, offsets, n_params) and groups without
 * allocating anything: what a checkpoint's datasets are checked against
 * before a model of that size is allocated. Free with vae_model_free.
 */
int vae_model_plan(vae_model *m, const vae_arch *arch);

/* Frees everything; safe on a zeroed or half-built model. */
void vae_model_free(vae_model *m);

/* PyTorch's default init (U(-bound, bound) per tensor) from the keyed RNG; zero moments and step counts. */
void vae_model_init_params(vae_model *m, uint64_t seed);

/* Every group's Adam settings. */
void vae_model_set_adam(vae_model *m, const vae_adam *h);

/* Finds a tensor by name (NULL when absent). */
const vae_tensor *vae_model_find(const vae_model *m, const char *name);

/* Input buffer x[max_batch, D] in the arena, for the loader to fill. */
static inline float *vae_model_input(vae_model *m) { return m->input; }

/* The family's named terms. */
static inline int vae_model_n_terms(const vae_model *m) { return m->n_terms; }

/* Forward pass (and backward) on the B rows in vae_model_input(m): family.h's vae_pass. */
void vae_model_pass(vae_model *m, const vae_pass *p);

/* mu[B, Z] and logvar[B, Z] (either may be NULL) of the B rows in the input buffer. */
void vae_model_encode(vae_model *m, int B, float *mu, float *logvar);

/* Decoder only: images[B,D] (sigmoid of logits for BCE, the output itself for MSE) from z[B,Z]. */
void vae_model_decode(vae_model *m, const float *z, int B, float *images);

/*
 * decode with only the first ngiven latent groups of z[B, Z] (1..n_latents):
 * the later groups at their prior means given the earlier ones (family.h).
 */
void vae_model_decode_given(vae_model *m, const float *z, int ngiven, int B, float *images);

/* images[B,D] from the prior, with noise[B, prior_dim] of N(0, 1) (overwritten) and a temperature. */
void vae_model_generate(vae_model *m, float *noise, float temperature, int B, float *images);

/* feat[B, n_features] of the B rows in the input buffer (the family's features; n_features > 0). */
void vae_model_features(vae_model *m, int B, float *feat);

/* Multiply-adds x2 of one training step's dense products (forward + backward) per sample. */
double vae_model_flops_per_sample(const vae_model *m);

/*
 * For families (model.c): appends a tensor view to a model being planned and
 * returns its offset; adds a parameter group over [lo, hi); adds a latent
 * group of shape [C, H, W].
 */
size_t vae_model_add_tensor(vae_model *m, const char *name, int ndim, const int *shape, float bound);
void vae_model_add_group(vae_model *m, const char *name, size_t lo, size_t hi);
void vae_model_add_latent(vae_model *m, const char *name, int C, int H, int W);

/* 64-byte aligned, zeroed floats (free()), or NULL. */
float *vae_model_alloc(size_t n);

#endif
