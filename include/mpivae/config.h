/*
 * config.h: the training configuration (stored in every checkpoint) and the
 * training state.
 */
#ifndef MPIVAE_CONFIG_H
#define MPIVAE_CONFIG_H

#include "mpivae/dataset.h"
#include "mpivae/model.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Everything `mpivae train` was asked for (stored in every checkpoint). */
typedef struct vae_config {
    vae_arch arch;           /* C, Hh, W come from the data */
    char data[VAE_PATH_LEN]; /* FILE:/dataset, as given (relative to the working directory) */
    char test_data[VAE_PATH_LEN]; /* "" when there is none */
    char data_abs[VAE_PATH_LEN], test_data_abs[VAE_PATH_LEN]; /* the same with the file's absolute path ("" unknown) */
    char labels[VAE_PATH_LEN], test_labels[VAE_PATH_LEN]; /* classifier: FILE:/dataset, or "": 'labels' beside the rows */
    char out[VAE_PATH_LEN];
    double beta;             /* KL weight */
    long warmup;             /* steps of linear KL warm-up from 0 to beta (0: none) */
    double capacity_max;     /* KL capacity target C_max (< 0: off) */
    long capacity_steps;     /* steps over which C rises linearly from 0 to C_max */
    int epochs;
    int batch;               /* global batch */
    double lr, beta1, beta2, adam_eps;
    long lr_decay;           /* steps of cosine decay of every learning rate (0: constant; optim.h vae_lr_factor) */
    double lr_floor;         /* the fraction of each learning rate left at the end of the decay */
    uint64_t seed;
    long log_every, eval_every, sample_every, ckpt_every;
    int keep;                /* checkpoints kept */
    int max_skips;           /* consecutive skipped steps (non-finite or over skip_threshold) before stopping */
    int in_memory;           /* 1, 0, -1 auto */
    long max_steps;          /* stop after this global step (0: run all epochs) */
    int allreduce;           /* enum vae_allreduce_mode (reduce.h) */
    double free_bits;        /* KL floor in nats per latent group and sample (0: off) */
    double skip_threshold;   /* skip the update when the global gradient norm exceeds it (0: off) */
    double clip;             /* scale the gradient to this global norm when above it (0: off) */
    double ema;              /* decay of the parameters' moving average (0: off; optim.h vae_ema_update) */
    int binarize;            /* enum vae_binarize */
    double disc_lr, dec_lr;  /* vaegan: the learning rates of the groups disc and dec (0: --lr) */
} vae_config;

/* --binarize: none, or every pixel drawn as Bernoulli(intensity) each time its row is used. */
enum vae_binarize { VAE_BINARIZE_NONE = 0, VAE_BINARIZE_DYNAMIC = 1 };

/*
 * What a run needs of its data's values (vae_data_check's unit_range): [0, 1]
 * for the Bernoulli loss, and for --binarize dynamic (the training rows, and
 * the held-out rows it binarizes once, dataset.h).
 */
static inline int vae_config_data_range(const vae_config *c)
{
    return (c->arch.loss == VAE_LOSS_BCE ? VAE_RANGE_BCE : 0) | (c->binarize != VAE_BINARIZE_NONE ? VAE_RANGE_BINARIZE : 0);
}

/* Where training stands (stored in every checkpoint). */
typedef struct vae_train_state {
    long step;       /* optimizer steps taken (global step count) */
    long epoch;      /* current epoch, 0-based */
    long epoch_step; /* steps done in the current epoch */
    long adam_t;     /* Adam's update count (skipped steps do not count) */
    long skips;      /* consecutive skipped steps */
    int world_size;  /* ranks when saved */
    long data_rows;  /* rows of the training data when saved (0: not recorded) */
} vae_train_state;

/*
 * The configuration as one table of fields: it drives the defaults, the
 * command line (`mpivae train`'s options and --help), the checkpoint's
 * attributes, the banner's options line and what a resume may change.
 */
enum vae_field_type {
    VAE_FT_INT,      /* int, range ilo..ihi */
    VAE_FT_LONG,     /* long, range ilo..ihi */
    VAE_FT_DOUBLE,   /* double, range dlo..dhi */
    VAE_FT_SEED,     /* uint64_t: 0..ihi on the command line, 0..2^64-1 in a checkpoint */
    VAE_FT_CHOICE,   /* int: choices[k] names values[k]; stored as the name, or the value when numeric */
    VAE_FT_FAMILY,   /* vae_arch.kind: a family's name (family.h) */
    VAE_FT_HIDDEN,   /* vae_arch.hidden[n_hidden]: "H1,H2,..." */
    VAE_FT_GROUPS,   /* an int list "G1,G2,..." whose count is the int member just before the array
                        (vae_arch's n_groups, groups), or none (count 0; not stored) */
    VAE_FT_CAPACITY, /* capacity_max and capacity_steps: "C:STEPS", or off (-1) */
    VAE_FT_DATA,     /* a data spec FILE[:/dataset] (FILE alone is FILE:/train/images) */
    VAE_FT_TESTDATA, /* the same, or none ("") */
    VAE_FT_PATH,     /* a path (not empty) */
    VAE_FT_LABELS    /* labels FILE[:/dataset] (FILE alone is FILE:/train/labels), or "" (not given) */
};

/* What a resumed run does with a field given on its command line. */
enum vae_field_resume {
    VAE_RESUME_FIXED,  /* refused when it differs from the checkpoint's (it would change the run) */
    VAE_RESUME_CHANGE, /* taken: a resume may change it */
    VAE_RESUME_RUN,    /* of this command only: never stored, always the command line's */
    VAE_RESUME_DATA    /* --data: the same data by another path, or new data when the checkpoint's is gone */
};

typedef struct vae_field {
    const char *flag;     /* option name without "--" */
    const char *attr;     /* checkpoint attribute, or NULL (not stored) */
    int type;             /* enum vae_field_type */
    size_t off;           /* offset of the member in vae_config */
    long ilo, ihi;        /* INT, LONG, SEED ranges */
    double dlo, dhi;      /* DOUBLE range */
    const char *def;      /* the default, as on the command line; NULL: the family's (hidden, latent) or derived */
    const char *arg;      /* the option's argument in --help */
    const char *section;  /* --help's heading of the group it starts, or NULL */
    const char *help;     /* --help's text (may hold newlines) */
    int resume;           /* enum vae_field_resume */
    const char *const *choices; /* CHOICE: names, NULL-terminated */
    const int *values;    /* CHOICE: their values (NULL: 0, 1, ...) */
    int numeric;          /* CHOICE: stored as the value, not the name */
    int optional;         /* absent from checkpoints of earlier versions: absent means the default */
    const char *only;     /* the families that take it ("hvae"; comma-separated), or NULL: every family */
} vae_field;

/* The table, and its length (at most 64: a set of fields is a uint64_t bit mask). */
extern const vae_field vae_config_fields[];
extern const int vae_config_nfields;

/* The field whose flag is name (without "--"), or -1. */
int vae_config_field(const char *flag);

/*
 * Sets field f of c from its command-line text. Returns 0, or VAE_EINVAL
 * with why[] saying what is wrong in the command line's terms ("--batch 0
 * is out of range 1..16777216").
 */
int vae_config_set(vae_config *c, int f, const char *text, char *why, size_t len);

/* Room for any field's text (two paths at most). */
#define VAE_FIELD_TEXT_MAX (2 * VAE_PATH_LEN)

/* Field f of c as the command line would give it ("1e-3" prints "0.001"; capacity "5:100" or "off"). */
void vae_config_format(const vae_config *c, int f, char *buf, size_t len);

/* Whether field f is the same in a and b. */
int vae_config_same(const vae_config *a, const vae_config *b, int f);

/* Bit of field f in a set of fields. */
static inline uint64_t vae_config_bit(int f) { return (uint64_t)1 << f; }

/*
 * Fills the defaults: every field's `def` (those of the PyTorch VAE
 * example), then the mlp family's hidden sizes and latent.
 */
void vae_config_defaults(vae_config *c);

/* The family's --hidden and --latent for those not in `set` (call after --model is known). */
void vae_config_family_defaults(vae_config *c, uint64_t set);

/*
 * The checks every configuration passes, from the command line or from a
 * checkpoint: each number within the range the command line takes, the input
 * shape usable by the model. Returns 0, or VAE_EINVAL with why[] naming the
 * checkpoint attribute, its value and the range (no message printed).
 */
int vae_config_check(const vae_config *c, char *why, size_t len);

/*
 * A resume: each field in `set` (given on the command line) that may not
 * change must equal the checkpoint's configuration ck; returns 0 or
 * VAE_EINVAL (reported, naming the flag, both values and the checkpoint at
 * path).
 */
int vae_config_check_resume(const vae_config *given, const vae_config *ck, uint64_t set, const char *path);

/*
 * cfg becomes the checkpoint's configuration ck, with the fields of `set`
 * that a resume may change, and those of this command only, from cfg.
 * resume is the --resume argument ("auto" or a file).
 */
void vae_config_merge_resume(vae_config *cfg, const vae_config *ck, uint64_t set, const char *resume);

/*
 * VAE_EINVAL with why[] when a field of `set` is an option of other families
 * than c's ("--groups is an option of --model hvae, not of --model mlp"), or
 * when two given options do not combine (--free-bits and --capacity).
 */
int vae_config_check_options(const vae_config *c, uint64_t set, char *why, size_t len);

/* The --help text of `mpivae train`'s options, from the table, into out. */
void vae_config_help(FILE *out);

/* The options line of the banner: every stored field as --flag value. */
void vae_config_describe(const vae_config *c, char *buf, size_t len);

#endif
