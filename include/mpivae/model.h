/*
 * model.h: a VAE as a list of layers over four flat parameter blocks.
 *
 * All parameters live in ONE 64-byte aligned float block; gradients and the
 * two Adam moments are parallel blocks of the same size, so zero-grad is one
 * memset, the gradient allreduce is one call, Adam is one loop and a
 * checkpoint is one dataset per named view. Activations live in an arena
 * sized once for the largest local batch: nothing is allocated per step.
 *
 * Data flow (B = local batch, D = C*Hh*W, Z = latent):
 *   x[B,D] -> encoder layers -> mulv[B,2Z] (mu | logvar)
 *   z[B,Z] = mu + exp(logvar/2) * eps
 *   z -> decoder layers -> logits[B,D]
 *   loss per row = recon(logits, x) + beta * KL(mu, logvar)
 */
#ifndef MPIVAE_MODEL_H
#define MPIVAE_MODEL_H

#include <stddef.h>
#include <stdint.h>

#define VAE_MAX_HIDDEN 8
#define VAE_MAX_TENSORS 64
#define VAE_MAX_LAYERS 24
#define VAE_NAME_LEN 64

enum vae_model_kind { VAE_MODEL_MLP = 0, VAE_MODEL_CONV = 1 };
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
    int kind;                     /* enum vae_model_kind */
    int C, Hh, W;                 /* input image shape; D = C*Hh*W */
    int n_hidden;                 /* mlp: number of hidden layers; conv: number of conv layers */
    int hidden[VAE_MAX_HIDDEN];   /* mlp: hidden sizes; conv: channels per conv layer */
    int latent;                   /* Z */
    int loss;                     /* enum vae_loss_kind */
} vae_arch;

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

typedef struct vae_model {
    vae_arch arch;
    int D, Z;
    int n_tensors;
    vae_tensor tensors[VAE_MAX_TENSORS];
    size_t n_params;
    float *params; /* [n_params] */
    float *grads;  /* [n_params + VAE_GRAD_EXTRA]: tail slots carry step statistics */
    float *m, *v;  /* [n_params] Adam moments */
    int n_enc, n_dec;
    vae_layer layers[VAE_MAX_LAYERS]; /* encoder layers, then decoder layers */
    /* Arena, sized for max_batch rows. */
    int max_batch;
    float *arena;
    float *act[VAE_MAX_LAYERS + 1]; /* act[0] = x[B,D]; act[i+1] = output of layer i */
    float *eps;   /* [B,Z] */
    float *z;     /* [B,Z] */
    float *dmulv; /* [B,2Z] */
    float *dz;    /* [B,Z] */
    float *g0, *g1; /* [B,maxw] ping-pong activation gradients */
    float *scratch; /* convolution lowering buffer */
    size_t scratch_len;
    /*
     * Called during backward as soon as a layer's parameter gradients are
     * final, with their range [lo, hi) in the gradient block (ranges come in
     * descending order), so communication can start while backward goes on.
     */
    void (*grad_ready)(void *ctx, size_t lo, size_t hi);
    void *grad_ctx;
    /* KL capacity C (>= 0: the KL term is beta * |KL - C| per row; < 0: beta * KL). */
    float capacity;
} vae_model;

/* Extra float slots at the end of the gradient block, summed with the gradients. */
enum {
    VAE_GX_RECON = 0, /* sum of reconstruction terms over local rows */
    VAE_GX_KL,        /* sum of KL terms */
    VAE_GX_COUNT,     /* local rows */
    VAE_GX_STOP,      /* stop request (signal) on this rank */
    VAE_GX_BAD,       /* non-finite loss on this rank */
    VAE_GX_FAIL,      /* a read or write failed on this rank */
    VAE_GRAD_EXTRA = 8
};

/* Per-call loss sums over the rows given. */
typedef struct vae_loss_stats {
    double recon; /* sum over rows */
    double kl;    /* sum over rows */
    int rows;
} vae_loss_stats;

/* Checks an architecture; on error reports why (naming valid sizes) and returns VAE_EINVAL. */
int vae_arch_check(const vae_arch *a);

/* Builds the layer list and tensors, allocates the four blocks and the arena. */
int vae_model_init(vae_model *m, const vae_arch *arch, int max_batch);

/*
 * The model's layers and named tensors (shapes, offsets, n_params) without
 * allocating anything: what a checkpoint's datasets are checked against
 * before a model of that size is allocated. Free with vae_model_free.
 */
int vae_model_plan(vae_model *m, const vae_arch *arch);

/* Frees everything; safe on a zeroed or half-built model. */
void vae_model_free(vae_model *m);

/* PyTorch's default init (U(-1/sqrt(fan_in), 1/sqrt(fan_in))) from the keyed RNG. */
void vae_model_init_params(vae_model *m, uint64_t seed);

/* Finds a tensor by name (NULL when absent). */
const vae_tensor *vae_model_find(const vae_model *m, const char *name);

/* Input buffer x[max_batch, D] in the arena, for the loader to fill. */
static inline float *vae_model_input(vae_model *m) { return m->act[0]; }

/*
 * Forward pass and loss on the B rows in vae_model_input(m); eps[B,Z] is the
 * noise (NULL: z = mu). With backward != 0, adds grad_scale * d(loss)/d(params)
 * into m->grads, where loss = sum over rows of recon + beta * KL. row_recon and
 * row_kl (B each, may be NULL) receive per-row terms.
 */
void vae_model_forward_backward(vae_model *m, const float *eps, int B, float beta,
                                float grad_scale, int backward, vae_loss_stats *st,
                                double *row_recon, double *row_kl);

/* Encoder only: mulv of the B rows in the input buffer; returns a pointer to [B,2Z] in the arena. */
const float *vae_model_encode(vae_model *m, int B);

/* Decoder only: images[B,D] (sigmoid of logits for BCE, the output itself for MSE) from z[B,Z]. */
void vae_model_decode(vae_model *m, const float *z, int B, float *images);

/* Multiply-adds x2 of one training step's dense products (forward + backward) per sample. */
double vae_model_flops_per_sample(const vae_model *m);

#endif
