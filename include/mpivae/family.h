/*
 * family.h: a model family is a table of functions in its own source file.
 *
 * The training loop, evaluation, checkpoints and every tool reach a model
 * only through this table (by way of model.h's vae_model_* calls), so adding
 * a family means one source file that defines a `const vae_family`, one line
 * in the registry (family.c; or vae_family_register from a program, as the
 * test family does), and its tests.
 *
 * What a family declares, and who uses it:
 *   - name: `--model NAME`, the checkpoint's `model` attribute.
 *   - terms[n_terms]: its named loss terms. Each row's loss is the sum of
 *     the terms weighted by their kind (ONE: 1, BETA: the step's KL weight,
 *     STAT: reported only). From this list come the reduction's extra slots
 *     (one float each), the log line, the metrics.h5 columns /train/<term>
 *     and /eval/<term>, eval's output and the anomaly scores.
 *   - plan: the named tensors of the flat parameter block (model.h), its
 *     parameter groups (named ranges of the block, each with its own Adam
 *     state and step count; none declared: one group "all"), the latent
 *     groups and the noise per row. It allocates nothing.
 *   - init: allocates the arena for batches of max_batch rows: the input
 *     x[max_batch, D] (model->input) and the noise eps[max_batch, noise_dim]
 *     (model->eps) at least. Nothing is allocated in a step.
 *   - pass: forward (and with backward, the gradient of the weighted loss
 *     times grad_scale added into model->grads) on the B rows of the input,
 *     with noise eps[B, noise_dim] (NULL: the deterministic pass, every
 *     latent at its mean); sums of each term over the rows, and per-row
 *     terms when asked.
 *   - encode, decode, generate: the latent tools' three entry points; a
 *     family that cannot serve one leaves it NULL and clears the tool's bit
 *     in `tools`, and the tool refuses naming both.
 *
 * How the next families use it:
 *   - Several latent groups (a hierarchical VAE): latents[] lists each group
 *     with its own shape; encode gives the posterior means and log-variances
 *     of all groups concatenated per row (z at the mean on the way down),
 *     decode takes every group's z, and each group's KL is a term of its own
 *     ("kl1", "kl2", ... of kind BETA).
 *   - Noise of any size per row: noise_dim is whatever pass consumes (one
 *     draw per latent value of every group; a GAN's prior samples too); the
 *     loop draws it keyed by (seed, step, row), so it does not depend on the
 *     rank count.
 *   - Several networks (a VAE-GAN's discriminator): more tensors in the one
 *     block; the arena is the family's own.
 *   - Loss terms that update different parameter groups: one parameter group
 *     per network ("enc", "dec", "disc"), each with its own Adam settings and
 *     step count; pass adds each term's gradient into the group it updates
 *     (the block is one array, so one reduction per step still carries all
 *     of them), and select_groups lets a family leave a group's update out of
 *     a step (an equilibrium rule) on every rank alike, from the summed terms
 *     (STAT terms can carry what the rule needs, such as a mean of D(x)).
 */
#ifndef MPIVAE_FAMILY_H
#define MPIVAE_FAMILY_H

#include <stddef.h>

typedef struct vae_model vae_model;
typedef struct vae_arch vae_arch;

/* How a term enters the loss. */
enum vae_term_kind {
    VAE_TERM_ONE = 0,  /* weight 1 (a reconstruction term) */
    VAE_TERM_BETA = 1, /* weight beta, with the warm-up and capacity of the run (a KL term) */
    VAE_TERM_STAT = 2  /* not part of the loss: reported only */
};

typedef struct vae_term {
    char name[24];    /* metrics column and log name: lowercase, [a-z0-9_] */
    int kind;         /* enum vae_term_kind */
} vae_term;

#define VAE_MAX_TERMS 16

/* The tools, as bits of vae_family.tools. */
enum vae_tool {
    VAE_TOOL_EVAL = 1u << 0,
    VAE_TOOL_SAMPLE = 1u << 1,
    VAE_TOOL_RECONSTRUCT = 1u << 2,
    VAE_TOOL_INTERPOLATE = 1u << 3,
    VAE_TOOL_TRAVERSE = 1u << 4,
    VAE_TOOL_ANOMALY = 1u << 5,
    VAE_TOOL_ENCODE = 1u << 6
};

/* One forward (and backward) pass over the B rows in model->input. */
typedef struct vae_pass {
    const float *eps; /* [B, noise_dim] noise, or NULL: every latent at its mean */
    int B;
    float beta;       /* weight of the BETA terms */
    float capacity;   /* KL capacity C (>= 0: a BETA term is beta * |KL - C| per row; < 0: off) */
    float grad_scale; /* the gradient added is grad_scale * d(loss)/d(params) */
    int backward;     /* 0: forward only */
    double *terms;    /* [n_terms] out: each term summed over the rows (unweighted; KL without capacity) */
    double *row_terms; /* [n_terms * B] out, term-major, or NULL */
    float free_bits;   /* > 0: each BETA term is beta * max(KL, free_bits) per row (each latent group's KL) */
} vae_pass;

typedef struct vae_family {
    const char *name;
    const char *help;  /* one line for --help */
    int n_terms;          /* the terms, unless plan names others in the model's */
    const vae_term *terms;
    unsigned tools;    /* enum vae_tool bits it serves */
    /*
     * 1: the family learns from labels (a classifier): whoever fills
     * model->input fills model->labels[B] with each row's class in
     * 0..arch.classes-1, and the training data and the evaluated data come
     * with a labels dataset (dataset.h).
     */
    int labeled;
    /*
     * The family's own defaults of training options, as "flag=value"
     * strings ("ema=0.999"), NULL-terminated, or NULL: each applies when its
     * option is not given (config.c, vae_config_family_defaults).
     */
    const char *const *option_defaults;
    /* --hidden and --latent when not given (the arch's other fields are set). */
    void (*defaults)(vae_arch *a, int hidden_set, int latent_set);
    /*
     * 0 when the architecture can be built (the input shape is set); else
     * VAE_EINVAL with why[] saying what is wrong in the command line's terms
     * (cli, e.g. "--model conv with 2 conv layers needs ...") or a
     * checkpoint's (!cli, naming the attribute). Prints nothing.
     */
    int (*check)(const vae_arch *a, int cli, char *why, size_t len);
    /* Tensors, parameter groups, latent groups, noise_dim, on a zeroed model with arch, D set. */
    void (*plan)(vae_model *m);
    /* The arena for max_batch rows (model->arena, freed by vae_model_free); 0 or VAE_ENOMEM. */
    int (*init)(vae_model *m, int max_batch);
    void (*pass)(vae_model *m, const vae_pass *p);
    /* Posterior means and log-variances of every latent value, mu[B, Zt], logvar[B, Zt] (NULL: not wanted). */
    void (*encode)(vae_model *m, int B, float *mu, float *logvar);
    /* images[B, D] (the decoder's mean: sigmoid of the logits under bce) from z[B, Zt]. */
    void (*decode)(vae_model *m, const float *z, int B, float *images);
    /*
     * Optional (several latent groups): like decode, but only the first
     * ngiven groups of z are used; each later group is at its prior mean
     * given those before it. NULL: the family has one group.
     */
    void (*decode_given)(vae_model *m, const float *z, int ngiven, int B, float *images);
    /* images[B, D] from the prior with noise[B, prior_dim] of N(0, 1), scaled by temperature. */
    void (*generate)(vae_model *m, float *noise, float temperature, int B, float *images);
    /*
     * Optional: the log importance weight of each row, log p(x, z) - log q(z | x)
     * in nats (double), for z drawn from q with noise eps[B, noise_dim]: the
     * terms of the importance-weighted bound (iw.h). one_row nonzero: the B
     * rows of the input are copies of its first (the bound's K draws for one
     * row), so what depends on x alone may be computed once, on that row.
     * NULL: the family has none.
     */
    void (*log_weights)(vae_model *m, const float *eps, int B, int one_row, double *logw);
    /* Multiply-adds x2 of one training step per row. */
    double (*flops)(const vae_model *m);
    /*
     * Optional: which parameter groups this step updates, from the step's
     * terms per sample summed over every rank (so every rank decides alike);
     * apply[n_groups] comes set to 1. NULL: every group, every step.
     */
    void (*select_groups)(const vae_model *m, const double *terms, unsigned char *apply);
    /* The model line of the banner after "model: NAME" (e.g. " hidden 400 latent 20"). */
    void (*describe)(const vae_arch *a, char *buf, size_t len);
    /*
     * Optional (a classifier, for the Frechet distance): the values of the
     * layer before the output, feat[B, model->n_features], of the B rows in
     * the input buffer. NULL: the family has none.
     */
    void (*features)(vae_model *m, int B, float *feat);
    /* Optional: a line eval prints after its own (what its loss means for this family), or NULL. */
    const char *eval_note;
} vae_family;

/* The family registered under index kind (vae_arch.kind), or NULL. */
const vae_family *vae_family_get(int kind);

/* The index of the family named name, or -1. */
int vae_family_find(const char *name);

/* "mlp, conv" and every family registered since: for messages. */
const char *vae_family_names(void);

/*
 * Registers a family defined outside the library (a test's); returns its
 * index (vae_arch.kind), or VAE_EINVAL when the name is taken or the
 * registry is full. Call before MPI work starts, on every rank alike.
 */
int vae_family_register(const vae_family *f);

/*
 * 0 when family f serves tool (enum vae_tool bit); else VAE_EINVAL, reported:
 * "mpivae CMD does not work on model family 'F' (checkpoint 'CKPT'); the
 * tools that do: ...".
 */
int vae_family_serves(const vae_family *f, unsigned tool, const char *cmd, const char *ckpt);

/* Index of the term named name in the family's list, or -1. */
int vae_family_term(const vae_family *f, const char *name);

/* sum over the n terms of weight * value (beta for BETA terms, 0 for STAT). */
double vae_terms_loss(int n, const vae_term *kinds, const double *terms, double beta);

#endif
