/*
 * config.c: the training configuration as one table of fields (see
 * config.h): defaults, parsing, checks, formatting, what a resume takes.
 */
#define _POSIX_C_SOURCE 200809L
#include "mpivae/config.h"

#include "mpivae/family.h"
#include "mpivae/reduce.h"
#include "mpivae/status.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define OFF(member) offsetof(vae_config, member)

static const char *const loss_names[] = { "bce", "mse", NULL };
static const char *const memory_names[] = { "yes", "no", "auto", NULL };
static const int memory_values[] = { 1, 0, -1 };
static const char *const allreduce_names[] = { "shm", "blocking", "overlap", NULL };
static const char *const binarize_names[] = { "none", "dynamic", NULL };
static const char *const posterior_names[] = { "residual", "merge", NULL };
static const char *const gen_loss_names[] = { "ns", "minimax", NULL };

/* Each field: flag, attribute, type, member, integer range, real range, default, argument, section, help, resume. */
const vae_field vae_config_fields[] = {
    { "data", "cfg.data", VAE_FT_DATA, OFF(data), 0, 0, 0, 0, "data/fashion-mnist.h5:" VAE_DATA_DEFAULT_DSET,
      "FILE[:/dataset]", "data",
      "training data (default data/fashion-mnist.h5:/train/images);\nFILE alone is FILE:/train/images, in every command and flag",
      VAE_RESUME_DATA, NULL, NULL, 0, 0, NULL },
    { "test-data", "cfg.test_data", VAE_FT_TESTDATA, OFF(test_data), 0, 0, 0, 0, NULL, "FILE[:/dataset]|none", NULL,
      "held-out data for --eval-every and the tools' default (default:\nFILE:/test/images of the training file when it "
      "has one); none:\nno evaluation (--eval-every is then refused)",
      VAE_RESUME_CHANGE, NULL, NULL, 0, 0, NULL },
    { "labels", "cfg.labels", VAE_FT_LABELS, OFF(labels), 0, 0, 0, 0, NULL, "FILE[:/dataset]", NULL,
      "classifier: the class of each training row, integers 0..K-1\n(default: the dataset 'labels' beside --data's, e.g.\n"
      "FILE:/train/labels; FILE alone is FILE:/train/labels)",
      VAE_RESUME_CHANGE, NULL, NULL, 0, 1, "classifier" },
    { "test-labels", "cfg.test_labels", VAE_FT_LABELS, OFF(test_labels), 0, 0, 0, 0, NULL, "FILE[:/dataset]", NULL,
      "classifier: the classes of the held-out rows (default: 'labels'\nbeside --test-data's, e.g. FILE:/test/labels)",
      VAE_RESUME_CHANGE, NULL, NULL, 0, 1, "classifier" },
    { "data-in-memory", "cfg.in_memory", VAE_FT_CHOICE, OFF(in_memory), 0, 0, 0, 0, "auto", "MODE", NULL,
      "yes (one copy per node in shared memory), no (stream rows\nfrom the file per batch), auto (default: yes when it fits)",
      VAE_RESUME_RUN, memory_names, memory_values, 1, 0, NULL },
    { "binarize", "cfg.binarize", VAE_FT_CHOICE, OFF(binarize), 0, 0, 0, 0, "none", "none|dynamic", NULL,
      "dynamic: each pixel is drawn as Bernoulli(intensity) every time\nits row is used, keyed by seed, epoch and row (data in [0, 1]);\n"
      "the test set is binarized once, the same for every run (default none)",
      VAE_RESUME_FIXED, binarize_names, NULL, 0, 1, NULL },
    { "model", "model", VAE_FT_FAMILY, OFF(arch.kind), 0, 0, 0, 0, "mlp", "NAME", "model",
      "model family (default mlp), one of:", VAE_RESUME_FIXED, NULL, NULL, 0, 0, NULL },
    { "hidden", "hidden", VAE_FT_HIDDEN, OFF(arch.hidden), 0, 0, 0, 0, NULL, "H[,H2,...]", NULL,
      "mlp: hidden layer sizes (default 400); conv: channels of the\nstride-2 Conv2d layers (default 32,64), mirrored by\n"
      "ConvTranspose2d layers in the decoder; hvae: channels at each\nscale, finest first (default 16,32,64); classifier: channels of\nits Conv2d layers (default 32,64)",
      VAE_RESUME_FIXED, NULL, NULL, 0, 0, NULL },
    { "latent", "latent", VAE_FT_INT, OFF(arch.latent), 1, 4096, 0, 0, NULL, "Z", NULL,
      "latent dimensions (default 20 for mlp, 16 for conv); hvae: latent\nchannels per group (default 8); classifier: the features, the\nwidth of the layer before the output (default 128)", VAE_RESUME_FIXED, NULL, NULL, 0, 0, NULL },
    { "groups", "groups", VAE_FT_GROUPS, OFF(arch.groups), 0, 64, 0, 0, NULL, "G[,G2,...]", NULL,
      "hvae: latent groups at each scale of --hidden, finest first\n(default 0,2,2)", VAE_RESUME_FIXED, NULL, NULL, 0, 1, "hvae" },
    { "posterior", "posterior", VAE_FT_CHOICE, OFF(arch.posterior), 0, 0, 0, 0, "residual", "residual|merge", NULL,
      "hvae: the posterior of a group, a residual around its prior\n(NVAE; default) or the precision-weighted merge of "
      "the\nbottom-up estimate and the prior (LVAE)",
      VAE_RESUME_FIXED, posterior_names, NULL, 0, 1, "hvae" },
    { "disc-hidden", "disc_hidden", VAE_FT_GROUPS, OFF(arch.disc), 1, 65536, 0, 0, NULL, "C[,C2,...]", NULL,
      "vaegan: channels of the discriminator's Conv2d layers (kernel 4,\nstride 2, LeakyReLU 0.2), then a Linear to one logit\n"
      "(default 32,64,128)", VAE_RESUME_FIXED, NULL, NULL, 0, 1, "vaegan" },
    { "feature-layer", "feature_layer", VAE_FT_INT, OFF(arch.feature_layer), 0, VAE_MAX_HIDDEN, 0, 0, "1", "L", NULL,
      "vaegan: the discriminator layer (1..count; 0: the last) whose\noutput is the feature space of the reconstruction term "
      "(default 1)", VAE_RESUME_FIXED, NULL, NULL, 0, 1, "vaegan" },
    { "gamma", "gamma", VAE_FT_DOUBLE, OFF(arch.gamma), 0, 0, 0, 1e6, "1", "G", NULL,
      "vaegan: weight of the feature reconstruction term in the\ndecoder's loss, gamma * llike + gen (default 1)",
      VAE_RESUME_FIXED, NULL, NULL, 0, 1, "vaegan" },
    { "gen-loss", "gen_loss", VAE_FT_CHOICE, OFF(arch.gen_loss), 0, 0, 0, 0, "ns", "ns|minimax", NULL,
      "vaegan: the decoder's adversarial loss, -log D(fake)\n(non-saturating; default) or log(1 - D(fake)) (minimax)",
      VAE_RESUME_FIXED, gen_loss_names, NULL, 0, 1, "vaegan" },
    { "equilibrium", "equilibrium", VAE_FT_DOUBLE, OFF(arch.equilibrium), 0, 0, 0, 1e6, "0.68", "E", NULL,
      "vaegan: Larsen's rule: leave the discriminator out of a step\nwhen its loss on real or fake images is below E - M, the\n"
      "decoder when either is above E + M (default 0.68; 0: off)", VAE_RESUME_FIXED, NULL, NULL, 0, 1, "vaegan" },
    { "eq-margin", "eq_margin", VAE_FT_DOUBLE, OFF(arch.eq_margin), 0, 0, 0, 1e6, "0.35", "M", NULL,
      "vaegan: the margin M of --equilibrium (default 0.35)", VAE_RESUME_FIXED, NULL, NULL, 0, 1, "vaegan" },
    { "classes", "classes", VAE_FT_INT, OFF(arch.classes), 0, 65536, 0, 0, "0", "K", NULL,
      "classifier: the number of classes (default 0: the training\nlabels' largest value + 1)", VAE_RESUME_FIXED, NULL, NULL,
      0, 1, "classifier" },
    { "loss", "loss", VAE_FT_CHOICE, OFF(arch.loss), 0, 0, 0, 0, "bce", "bce|mse", NULL,
      "Bernoulli (data in [0,1]) or Gaussian/squared error (default bce)", VAE_RESUME_FIXED, loss_names, NULL, 0, 0, NULL },
    { "beta", "beta", VAE_FT_DOUBLE, OFF(beta), 0, 0, 0, 1e6, "1", "B", NULL, "KL weight (default 1; vaegan 0.5)", VAE_RESUME_FIXED,
      NULL, NULL, 0, 0, NULL },
    { "warmup", "cfg.warmup", VAE_FT_LONG, OFF(warmup), 0, LONG_MAX, 0, 0, "0", "STEPS", NULL,
      "raise the KL weight linearly from 0 to beta over STEPS (default 0)", VAE_RESUME_FIXED, NULL, NULL, 0, 0, NULL },
    { "capacity", "cfg.capacity_max", VAE_FT_CAPACITY, OFF(capacity_max), 0, LONG_MAX, 0, 1e6, "off", "C:STEPS", NULL,
      "capacity-controlled beta-VAE (Burgess et al. 2018): the KL term\nbecomes beta * |KL - C| per sample, C rising "
      "linearly from 0 to\nC nats over STEPS steps (beta plays gamma; default off; mlp and conv)",
      VAE_RESUME_FIXED, NULL, NULL, 0, 0, "mlp,conv" },
    { "free-bits", "cfg.free_bits", VAE_FT_DOUBLE, OFF(free_bits), 0, 0, 0, 1e6, "0", "F", NULL,
      "a floor of F nats under each sample's KL of each latent group\n(Kingma et al. 2016; default 0: off)",
      VAE_RESUME_FIXED, NULL, NULL, 0, 1, NULL },
    { "epochs", "cfg.epochs", VAE_FT_INT, OFF(epochs), 1, 1000000, 0, 0, "10", "E", "optimisation", "epochs (default 10)",
      VAE_RESUME_CHANGE, NULL, NULL, 0, 0, NULL },
    { "batch", "cfg.batch", VAE_FT_INT, OFF(batch), 1, 1 << 24, 0, 0, "128", "B", NULL, "GLOBAL batch (default 128)",
      VAE_RESUME_FIXED, NULL, NULL, 0, 0, NULL },
    { "lr", "cfg.lr", VAE_FT_DOUBLE, OFF(lr), 0, 0, 0, 10, "1e-3", "LR", NULL, "Adam learning rate (default 1e-3)",
      VAE_RESUME_FIXED, NULL, NULL, 0, 0, NULL },
    { "lr-decay", "cfg.lr_decay", VAE_FT_LONG, OFF(lr_decay), 0, LONG_MAX, 0, 0, "0", "STEPS", NULL,
      "cosine decay of every learning rate over the first STEPS steps,\nfrom its value to --lr-floor times it, then constant\n"
      "(default 0: constant; a resume keeps the run's unless given)", VAE_RESUME_CHANGE, NULL, NULL, 0, 1, NULL },
    { "lr-floor", "cfg.lr_floor", VAE_FT_DOUBLE, OFF(lr_floor), 0, 0, 0, 1, "0", "F", NULL,
      "the fraction of each learning rate left at the end of --lr-decay\n(default 0)", VAE_RESUME_CHANGE, NULL, NULL, 0, 1,
      NULL },
    { "dec-lr", "cfg.dec_lr", VAE_FT_DOUBLE, OFF(dec_lr), 0, 0, 0, 10, "0", "LR", NULL,
      "vaegan: the decoder's learning rate (default 0: --lr)", VAE_RESUME_FIXED, NULL, NULL, 0, 1, "vaegan" },
    { "disc-lr", "cfg.disc_lr", VAE_FT_DOUBLE, OFF(disc_lr), 0, 0, 0, 10, "0", "LR", NULL,
      "vaegan: the discriminator's learning rate (default 3e-4; 0: --lr)", VAE_RESUME_FIXED, NULL, NULL, 0, 1, "vaegan" },
    { "adam-beta1", "cfg.beta1", VAE_FT_DOUBLE, OFF(beta1), 0, 0, 0, 0.999999, "0.9", "B1", NULL, "Adam's beta1 (default 0.9)",
      VAE_RESUME_FIXED, NULL, NULL, 0, 0, NULL },
    { "adam-beta2", "cfg.beta2", VAE_FT_DOUBLE, OFF(beta2), 0, 0, 0, 0.999999999, "0.999", "B2", NULL,
      "Adam's beta2 (default 0.999)", VAE_RESUME_FIXED, NULL, NULL, 0, 0, NULL },
    { "adam-eps", "cfg.adam_eps", VAE_FT_DOUBLE, OFF(adam_eps), 0, 0, 0, 1, "1e-8", "EPS", NULL,
      "Adam's epsilon (default 1e-8)", VAE_RESUME_FIXED, NULL, NULL, 0, 0, NULL },
    { "seed", "seed", VAE_FT_SEED, OFF(seed), 0, LONG_MAX, 0, 0, "1", "S", NULL, "seed of every random draw (default 1)",
      VAE_RESUME_FIXED, NULL, NULL, 0, 0, NULL },
    { "steps", "cfg.max_steps", VAE_FT_LONG, OFF(max_steps), 0, LONG_MAX, 0, 0, "0", "N", NULL,
      "stop after global step N (default 0: all epochs; a resume keeps\nthe run's unless given)", VAE_RESUME_CHANGE, NULL,
      NULL, 0, 0, NULL },
    { "max-skips", "cfg.max_skips", VAE_FT_INT, OFF(max_skips), 0, 1000000, 0, 0, "10", "K", NULL,
      "skip at most K consecutive steps (non-finite, or over\n--skip-threshold); the next one in a row stops the run with status\n1 (default 10; 0: stop "
      "at the first)",
      VAE_RESUME_CHANGE, NULL, NULL, 0, 0, NULL },
    { "skip-threshold", "cfg.skip_threshold", VAE_FT_DOUBLE, OFF(skip_threshold), 0, 0, 0, 1e30, "0", "G", NULL,
      "skip the update (every rank) when the global gradient norm\nexceeds G; counted and logged (default 0: off)",
      VAE_RESUME_CHANGE, NULL, NULL, 0, 1, NULL },
    { "clip", "cfg.clip", VAE_FT_DOUBLE, OFF(clip), 0, 0, 0, 1e30, "0", "G", NULL,
      "scale the gradient down to global norm G when above it\n(default 0: off)", VAE_RESUME_FIXED, NULL, NULL, 0, 1, NULL },
    { "ema", "cfg.ema", VAE_FT_DOUBLE, OFF(ema), 0, 0, 0, 0.999999, "0", "D", NULL,
      "average the parameters over the updates, weights D^age (Polyak\naveraging, bias-corrected); checkpoints keep the average as /ema,\n"
      "and evaluations, sample grids and the tools use it (default\n0.999 for vaegan, 0: off for the others)",
      VAE_RESUME_FIXED, NULL, NULL, 0, 1, NULL },
    { "allreduce", NULL, VAE_FT_CHOICE, OFF(allreduce), 0, 0, 0, 0, "shm", "MODE", NULL,
      "shm (default): ranks of a node sum their gradients in shared\nmemory, node leaders with one MPI_Allreduce; "
      "blocking: one\nMPI_Allreduce after backward; overlap: buckets reduced with\nMPI_Iallreduce while backward goes on",
      VAE_RESUME_RUN, allreduce_names, NULL, 0, 0, NULL },
    { "out", "cfg.out", VAE_FT_PATH, OFF(out), 0, 0, 0, 0, "runs/default", "DIR", "output",
      "run directory (default runs/default)", VAE_RESUME_RUN, NULL, NULL, 0, 0, NULL },
    { "log-every", "cfg.log_every", VAE_FT_LONG, OFF(log_every), 0, LONG_MAX, 0, 0, "100", "N", NULL,
      "log line every N steps (default 100)", VAE_RESUME_CHANGE, NULL, NULL, 0, 0, NULL },
    { "eval-every", "cfg.eval_every", VAE_FT_LONG, OFF(eval_every), 0, LONG_MAX, 0, 0, "0", "N", NULL,
      "test-set evaluation every N steps (default: at the end)", VAE_RESUME_CHANGE, NULL, NULL, 0, 0, NULL },
    { "sample-every", "cfg.sample_every", VAE_FT_LONG, OFF(sample_every), 0, LONG_MAX, 0, 0, "0", "N", NULL,
      "sample grids every N steps (default: at the end)", VAE_RESUME_CHANGE, NULL, NULL, 0, 0, NULL },
    { "ckpt-every", "cfg.ckpt_every", VAE_FT_LONG, OFF(ckpt_every), 0, LONG_MAX, 0, 0, "0", "N", NULL,
      "checkpoint every N steps (default: at the end and on signals)", VAE_RESUME_CHANGE, NULL, NULL, 0, 0, NULL },
    { "keep", "cfg.keep", VAE_FT_INT, OFF(keep), 1, 1000000, 0, 0, "3", "K", NULL, "checkpoints kept (default 3)",
      VAE_RESUME_CHANGE, NULL, NULL, 0, 0, NULL },
};
const int vae_config_nfields = (int)(sizeof vae_config_fields / sizeof vae_config_fields[0]);

#define AT(c, f, type) ((type *)((char *)(c) + vae_config_fields[f].off))
#define CAT(c, f, type) ((const type *)((const char *)(c) + vae_config_fields[f].off))

int vae_config_field(const char *flag)
{
    for (int f = 0; f < vae_config_nfields; f++)
        if (!strcmp(vae_config_fields[f].flag, flag)) return f;
    return -1;
}

static int choice_value(const vae_field *F, int k) { return F->values ? F->values[k] : k; }

/* Strict integer parsing: the whole text, within ilo..ihi. */
static int set_long(const vae_field *F, const char *text, long *out, char *why, size_t len)
{
    char *end;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (errno || end == text || *end) {
        snprintf(why, len, "--%s '%s' is not an integer", F->flag, text);
        return VAE_EINVAL;
    }
    if (v < F->ilo || v > F->ihi) {
        snprintf(why, len, "--%s %ld is out of range %ld..%ld", F->flag, v, F->ilo, F->ihi);
        return VAE_EINVAL;
    }
    *out = v;
    return VAE_OK;
}

static int set_double(const char *flag, const char *text, double lo, double hi, double *out, char *why, size_t len)
{
    char *end;
    errno = 0;
    double v = strtod(text, &end);
    if (errno || end == text || *end || !isfinite(v)) {
        snprintf(why, len, "--%s '%s' is not a number", flag, text);
        return VAE_EINVAL;
    }
    if (v < lo || v > hi) {
        snprintf(why, len, "--%s %g is out of range [%g, %g]", flag, v, lo, hi);
        return VAE_EINVAL;
    }
    *out = v;
    return VAE_OK;
}

/* The count of a list field (VAE_FT_GROUPS): the int just before its array. */
static int *list_count(void *c, const vae_field *F) { return (int *)((char *)c + F->off) - 1; }

/* "G1,G2,...", each F->ilo..F->ihi, or none. */
static int set_groups(vae_config *c, const vae_field *F, const char *s, char *why, size_t len)
{
    int *n = list_count(c, F), *vals = (int *)((char *)c + F->off);
    *n = 0;
    if (!strcmp(s, "none")) return VAE_OK;
    for (const char *p = s;;) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (errno || end == p || (*end && *end != ',') || !isdigit((unsigned char)*p)) {
            snprintf(why, len, "--%s '%s' is not a list of whole numbers (G1,G2,...)", F->flag, s);
            return VAE_EINVAL;
        }
        if (v < F->ilo || v > F->ihi || *n == VAE_MAX_HIDDEN) {
            snprintf(why, len, "--%s '%s': at most %d values, each %ld..%ld", F->flag, s, VAE_MAX_HIDDEN, F->ilo, F->ihi);
            return VAE_EINVAL;
        }
        vals[(*n)++] = (int)v;
        if (!*end) return VAE_OK;
        p = end + 1;
    }
}

/* "H1,H2,...": every comma splits, so an empty size ("400,,400", "400,") is an error, not skipped. */
static int set_hidden(vae_arch *a, const char *s, char *why, size_t len)
{
    char buf[256];
    static const vae_field hf = { "hidden", NULL, VAE_FT_INT, 0, 1, 65536, 0, 0, NULL, NULL, NULL, NULL, 0, NULL, NULL, 0, 0, NULL };
    if (strlen(s) >= sizeof buf) {
        snprintf(why, len, "--hidden '%.40s...' is too long", s);
        return VAE_EINVAL;
    }
    snprintf(buf, sizeof buf, "%s", s);
    a->n_hidden = 0;
    for (char *tok = buf, *comma;; tok = comma + 1) {
        comma = strchr(tok, ',');
        if (comma) *comma = '\0';
        if (a->n_hidden == VAE_MAX_HIDDEN) {
            snprintf(why, len, "--hidden takes at most %d sizes", VAE_MAX_HIDDEN);
            return VAE_EINVAL;
        }
        if (!*tok) {
            snprintf(why, len, "--hidden '%s' has an empty size", s);
            return VAE_EINVAL;
        }
        long v;
        int rc = set_long(&hf, tok, &v, why, len);
        if (rc) return rc;
        a->hidden[a->n_hidden++] = (int)v;
        if (!comma) break;
    }
    return VAE_OK;
}

/* "C:STEPS", or off. */
static int set_capacity(vae_config *c, const vae_field *F, const char *text, char *why, size_t len)
{
    if (!strcmp(text, "off")) {
        c->capacity_max = -1.0;
        c->capacity_steps = 0;
        return VAE_OK;
    }
    char buf[64], *colon;
    snprintf(buf, sizeof buf, "%s", text);
    colon = strchr(buf, ':');
    if (!colon) {
        snprintf(why, len, "--capacity '%s' is not C_MAX:STEPS", text);
        return VAE_EINVAL;
    }
    *colon = '\0';
    int rc = set_double("capacity", buf, F->dlo, F->dhi, &c->capacity_max, why, len);
    if (!rc) rc = set_long(F, colon + 1, &c->capacity_steps, why, len);
    return rc;
}

int vae_config_set(vae_config *c, int f, const char *text, char *why, size_t len)
{
    const vae_field *F = &vae_config_fields[f];
    long v;
    int rc;
    switch (F->type) {
    case VAE_FT_INT:
        rc = set_long(F, text, &v, why, len);
        if (!rc) *AT(c, f, int) = (int)v;
        return rc;
    case VAE_FT_LONG: return set_long(F, text, AT(c, f, long), why, len);
    case VAE_FT_SEED:
        rc = set_long(F, text, &v, why, len);
        if (!rc) *AT(c, f, uint64_t) = (uint64_t)v;
        return rc;
    case VAE_FT_DOUBLE: return set_double(F->flag, text, F->dlo, F->dhi, AT(c, f, double), why, len);
    case VAE_FT_CHOICE: {
        char names[128] = "";
        for (int k = 0; F->choices[k]; k++) {
            if (!strcmp(F->choices[k], text)) {
                *AT(c, f, int) = choice_value(F, k);
                return VAE_OK;
            }
            size_t l = strlen(names);
            snprintf(names + l, sizeof names - l, "%s%s", k ? (F->choices[k + 1] ? ", " : " or ") : "", F->choices[k]);
        }
        snprintf(why, len, "--%s '%s' is not %s", F->flag, text, names);
        return VAE_EINVAL;
    }
    case VAE_FT_FAMILY: {
        int k = vae_family_find(text);
        if (k < 0) {
            snprintf(why, len, "--model '%s' is not a known model (%s)", text, vae_family_names());
            return VAE_EINVAL;
        }
        c->arch.kind = k;
        return VAE_OK;
    }
    case VAE_FT_HIDDEN: return set_hidden(&c->arch, text, why, len);
    case VAE_FT_GROUPS: return set_groups(c, F, text, why, len);
    case VAE_FT_CAPACITY: return set_capacity(c, F, text, why, len);
    case VAE_FT_DATA:
        if (vae_data_full_spec(text, AT(c, f, char), VAE_PATH_LEN)) {
            snprintf(why, len, "--%s '%s' is not FILE[:/dataset]", F->flag, text);
            return VAE_EINVAL;
        }
        return VAE_OK;
    case VAE_FT_TESTDATA:
        if (!strcmp(text, "none")) {
            AT(c, f, char)[0] = '\0';
            return VAE_OK;
        }
        if (vae_data_full_spec(text, AT(c, f, char), VAE_PATH_LEN)) {
            snprintf(why, len, "--%s '%s' is not FILE[:/dataset] or none", F->flag, text);
            return VAE_EINVAL;
        }
        return VAE_OK;
    case VAE_FT_LABELS:
        if (!text[0] || !strncmp(text, ":/", 2) ||
            (size_t)snprintf(AT(c, f, char), VAE_PATH_LEN, "%s%s", text, strstr(text, ":/") ? "" : ":" VAE_LABELS_DEFAULT_DSET) >=
                VAE_PATH_LEN) {
            AT(c, f, char)[0] = '\0';
            snprintf(why, len, "--%s '%s' is not FILE[:/dataset]", F->flag, text);
            return VAE_EINVAL;
        }
        return VAE_OK;
    case VAE_FT_PATH:
        if (strlen(text) >= VAE_PATH_LEN) {
            snprintf(why, len, "--%s is %zu characters long; at most %d are taken", F->flag, strlen(text), VAE_PATH_LEN - 1);
            return VAE_EINVAL;
        }
        if (!text[0]) {
            snprintf(why, len, "--%s is empty", F->flag);
            return VAE_EINVAL;
        }
        snprintf(AT(c, f, char), VAE_PATH_LEN, "%s", text);
        return VAE_OK;
    }
    snprintf(why, len, "--%s: unknown field type %d", F->flag, F->type);
    return VAE_EINVAL;
}

/* The shortest %g form that reads back as v. */
static void shortest(double v, char *buf, size_t len)
{
    if (!buf || len == 0) return;
    for (int p = 6; p <= 17; p++) {
        snprintf(buf, len, "%.*g", p, v);
        if (strtod(buf, NULL) == v) return;
    }
}

void vae_config_format(const vae_config *c, int f, char *buf, size_t len)
{
    const vae_field *F = &vae_config_fields[f];
    switch (F->type) {
    case VAE_FT_INT: snprintf(buf, len, "%d", *CAT(c, f, int)); return;
    case VAE_FT_LONG: snprintf(buf, len, "%ld", *CAT(c, f, long)); return;
    case VAE_FT_SEED: snprintf(buf, len, "%llu", (unsigned long long)*CAT(c, f, uint64_t)); return;
    case VAE_FT_DOUBLE: shortest(*CAT(c, f, double), buf, len); return;
    case VAE_FT_CHOICE:
        for (int k = 0; F->choices[k]; k++)
            if (choice_value(F, k) == *CAT(c, f, int)) {
                snprintf(buf, len, "%s", F->choices[k]);
                return;
            }
        snprintf(buf, len, "%d", *CAT(c, f, int));
        return;
    case VAE_FT_FAMILY: {
        const vae_family *fam = vae_family_get(c->arch.kind);
        snprintf(buf, len, "%s", fam ? fam->name : "?");
        return;
    }
    case VAE_FT_HIDDEN:
        buf[0] = '\0';
        for (int i = 0; i < c->arch.n_hidden; i++) {
            size_t l = strlen(buf);
            snprintf(buf + l, len - l, "%s%d", i ? "," : "", c->arch.hidden[i]);
        }
        return;
    case VAE_FT_GROUPS: {
        const int *n = list_count((void *)c, F), *vals = (const int *)((const char *)c + F->off);
        snprintf(buf, len, "%s", *n ? "" : "none");
        for (int i = 0; i < *n; i++) {
            size_t l = strlen(buf);
            snprintf(buf + l, len - l, "%s%d", i ? "," : "", vals[i]);
        }
        return;
    }
    case VAE_FT_CAPACITY:
        if (c->capacity_max < 0) snprintf(buf, len, "off");
        else {
            shortest(c->capacity_max, buf, len);
            size_t l = strlen(buf);
            snprintf(buf + l, len - l, ":%ld", c->capacity_steps);
        }
        return;
    case VAE_FT_TESTDATA:
        snprintf(buf, len, "%s", CAT(c, f, char)[0] ? CAT(c, f, char) : "none");
        return;
    default: snprintf(buf, len, "%s", CAT(c, f, char)); return;
    }
}

int vae_config_same(const vae_config *a, const vae_config *b, int f)
{
    char x[2 * VAE_PATH_LEN], y[2 * VAE_PATH_LEN];
    vae_config_format(a, f, x, sizeof x);
    vae_config_format(b, f, y, sizeof y);
    return !strcmp(x, y);
}

void vae_config_defaults(vae_config *c)
{
    char why[256];
    memset(c, 0, sizeof *c);
    for (int f = 0; f < vae_config_nfields; f++)
        if (vae_config_fields[f].def && vae_config_set(c, f, vae_config_fields[f].def, why, sizeof why))
            vae_warn("the default of --%s does not parse: %s", vae_config_fields[f].flag, why); /* a bug in the table */
    vae_config_family_defaults(c, 0);
}

void vae_config_family_defaults(vae_config *c, uint64_t set)
{
    const vae_family *fam = vae_family_get(c->arch.kind);
    if (fam)
        fam->defaults(&c->arch, (set & vae_config_bit(vae_config_field("hidden"))) != 0,
                      (set & vae_config_bit(vae_config_field("latent"))) != 0);
    for (const char *const *d = fam ? fam->option_defaults : NULL; d && *d; d++) {
        char flag[64], why[256];
        size_t n = strcspn(*d, "=");
        snprintf(flag, sizeof flag, "%.*s", (int)n, *d);
        int f = vae_config_field(flag);
        if (f >= 0 && (set & vae_config_bit(f))) continue; /* given on the command line */
        if (f < 0 || !(*d)[n] || vae_config_set(c, f, *d + n + 1, why, sizeof why)) /* a bug in the family's table */
            vae_warn("model family '%s': its default '%s' is not an option with a valid value", fam->name, *d);
    }
}

/* Whether field F is an option of family fam (its `only` list names it, or it has none). */
static int field_of_family(const vae_field *F, const vae_family *fam)
{
    if (!F->only || !fam) return 1;
    size_t n = strlen(fam->name);
    int ok = 0;
    for (const char *p = F->only; *p; p += strcspn(p, ",") + (p[strcspn(p, ",")] == ','))
        ok |= !strncmp(p, fam->name, n) && (p[n] == ',' || !p[n]);
    return ok;
}

int vae_config_check_options(const vae_config *c, uint64_t set, char *why, size_t len)
{
    const vae_family *fam = vae_family_get(c->arch.kind);
    for (int f = 0; f < vae_config_nfields && fam; f++) {
        const char *only = vae_config_fields[f].only;
        if (!only || !(set & vae_config_bit(f))) continue;
        if (!field_of_family(&vae_config_fields[f], fam)) {
            snprintf(why, len, "--%s is an option of --model %s, not of --model %s", vae_config_fields[f].flag, only, fam->name);
            return VAE_EINVAL;
        }
    }
    if (c->capacity_max >= 0 && c->free_bits > 0) {
        snprintf(why, len, "--free-bits and --capacity do not combine (both reshape the KL term)");
        return VAE_EINVAL;
    }
    if (c->lr_floor > 0 && c->lr_decay == 0) {
        snprintf(why, len, "--lr-floor %g is the end of --lr-decay: give --lr-decay STEPS too", c->lr_floor);
        return VAE_EINVAL;
    }
    return VAE_OK;
}

int vae_config_check(const vae_config *c, char *why, size_t len)
{
    const vae_arch *a = &c->arch;
    for (int f = 0; f < vae_config_nfields; f++) {
        const vae_field *F = &vae_config_fields[f];
        double v = 0, lo = (double)F->ilo, hi = F->ihi == LONG_MAX ? 9.2e18 : (double)F->ihi;
        if (!F->attr) continue;
        if (F->type == VAE_FT_INT) v = *CAT(c, f, int);
        else if (F->type == VAE_FT_LONG) v = (double)*CAT(c, f, long);
        else if (F->type == VAE_FT_DOUBLE) {
            v = *CAT(c, f, double);
            lo = F->dlo;
            hi = F->dhi;
        } else if (F->type == VAE_FT_CHOICE && F->numeric) {
            int ok = 0;
            for (int k = 0; F->choices[k]; k++) ok |= choice_value(F, k) == *CAT(c, f, int);
            if (!ok) {
                snprintf(why, len, "attribute '%s' is %d, not a value of --%s", F->attr, *CAT(c, f, int), F->flag);
                return VAE_EINVAL;
            }
            continue;
        } else if (F->type == VAE_FT_GROUPS) {
            const int *n = list_count((void *)c, F), *vals = (const int *)((const char *)c + F->off);
            for (int i = 0; i < *n; i++)
                if (vals[i] < F->ilo || vals[i] > F->ihi) {
                    snprintf(why, len, "attribute '%s' has the value %d, outside %ld..%ld", F->attr, vals[i], F->ilo, F->ihi);
                    return VAE_EINVAL;
                }
            continue;
        } else continue;
        if (!(v >= lo && v <= hi)) { /* NaN fails too */
            snprintf(why, len, "attribute '%s' is %g, outside %g..%g", F->attr, v, lo, hi);
            return VAE_EINVAL;
        }
    }
    if (a->n_hidden < 1 || a->n_hidden > VAE_MAX_HIDDEN) {
        snprintf(why, len, "attribute 'hidden (count)' is %d, outside 1..%d", a->n_hidden, VAE_MAX_HIDDEN);
        return VAE_EINVAL;
    }
    for (int i = 0; i < a->n_hidden; i++)
        if (a->hidden[i] < 1 || a->hidden[i] > 65536) {
            snprintf(why, len, "attribute 'hidden' has the size %d, outside 1..65536", a->hidden[i]);
            return VAE_EINVAL;
        }
    if (!(c->capacity_max == -1.0 || (c->capacity_max >= 0 && c->capacity_max <= 1e6))) {
        snprintf(why, len, "attribute 'cfg.capacity_max' is %g, neither -1 (off) nor in 0..1e6", c->capacity_max);
        return VAE_EINVAL;
    }
    if (!(c->capacity_steps >= 0)) {
        snprintf(why, len, "attribute 'cfg.capacity_steps' is %ld, outside 0..9.2e+18", c->capacity_steps);
        return VAE_EINVAL;
    }
    const int shape[3] = { a->C, a->Hh, a->W };
    for (int i = 0; i < 3; i++)
        if (shape[i] < 1 || shape[i] > 100000000) {
            snprintf(why, len, "attribute 'input_shape[%d]' is %d, outside 1..1e+08", i, shape[i]);
            return VAE_EINVAL;
        }
    if ((double)a->C * a->Hh * a->W > 1e8) {
        snprintf(why, len, "attribute 'input_shape' is %dx%dx%d, more than 1e8 values a row", a->C, a->Hh, a->W);
        return VAE_EINVAL;
    }
    return vae_arch_check_attrs(a, why, len);
}

static int same_data(const char *spec, const char *ck_spec, const char *ck_abs)
{
    char a[VAE_PATH_LEN], b[VAE_PATH_LEN];
    if (!strcmp(spec, ck_spec)) return 1;
    if (vae_data_abs_spec(spec, a, sizeof a)) return 0;
    if (ck_abs[0] && !strcmp(a, ck_abs)) return 1;
    return !vae_data_abs_spec(ck_spec, b, sizeof b) && !strcmp(a, b);
}

int vae_config_check_resume(const vae_config *given, const vae_config *ck, uint64_t set, const char *path)
{
    char g[2 * VAE_PATH_LEN], c[2 * VAE_PATH_LEN], where[VAE_PATH_LEN];
    for (int f = 0; f < vae_config_nfields; f++) {
        const vae_field *F = &vae_config_fields[f];
        if (!(set & vae_config_bit(f))) continue;
        if (F->resume == VAE_RESUME_FIXED && !vae_config_same(given, ck, f)) {
            vae_config_format(given, f, g, sizeof g);
            vae_config_format(ck, f, c, sizeof c);
            return vae_error(VAE_EINVAL, "--%s %s differs from the checkpoint '%s' being resumed (%s); a resumed run keeps "
                             "it", F->flag, g, path, c);
        }
        /* Another spelling of the same file is the same data; other data is refused unless the checkpoint's is gone. */
        if (F->resume == VAE_RESUME_DATA && !same_data(given->data, ck->data, ck->data_abs) &&
            vae_data_locate(ck->data, ck->data_abs, where, sizeof where))
            return vae_error(VAE_EINVAL, "--data '%s' differs from the checkpoint '%s' being resumed ('%s')", given->data,
                             path, ck->data);
    }
    return VAE_OK;
}

void vae_config_merge_resume(vae_config *cfg, const vae_config *ck, uint64_t set, const char *resume)
{
    vae_config merged = *ck;
    for (int f = 0; f < vae_config_nfields; f++) {
        const vae_field *F = &vae_config_fields[f];
        int given = (set & vae_config_bit(f)) != 0;
        if (F->resume == VAE_RESUME_FIXED || (F->resume != VAE_RESUME_RUN && !given)) continue;
        if (F->type == VAE_FT_PATH || F->type == VAE_FT_DATA || F->type == VAE_FT_TESTDATA || F->type == VAE_FT_LABELS)
            memcpy(AT(&merged, f, char), CAT(cfg, f, char), VAE_PATH_LEN);
        else if (F->type == VAE_FT_INT || F->type == VAE_FT_CHOICE)
            *AT(&merged, f, int) = *CAT(cfg, f, int);
        else if (F->type == VAE_FT_LONG)
            *AT(&merged, f, long) = *CAT(cfg, f, long);
        else if (F->type == VAE_FT_DOUBLE)
            *AT(&merged, f, double) = *CAT(cfg, f, double);
        /* A given data set is found by its new spelling: the checkpoint's absolute path no longer applies. */
        if (F->type == VAE_FT_DATA) merged.data_abs[0] = '\0';
        if (F->type == VAE_FT_TESTDATA) merged.test_data_abs[0] = '\0';
    }
    /* The run directory: the checkpoint's, unless given (--resume auto always names it). */
    if (!(strcmp(resume, "auto") == 0 || cfg->out[0])) snprintf(merged.out, sizeof merged.out, "%s", ck->out);
    *cfg = merged;
}

/* Writes text after a column of width `col`, each of its lines indented to it. */
static void help_text(FILE *out, int used, int col, const char *text)
{
    if (used >= col) {
        fputc('\n', out);
        used = 0;
    }
    fprintf(out, "%*s", col - used, "");
    for (const char *p = text; *p; p++) {
        fputc(*p, out);
        if (*p == '\n') fprintf(out, "%*s", col, "");
    }
    fputc('\n', out);
}

void vae_config_help(FILE *out)
{
    char buf[128];
    for (int f = 0; f < vae_config_nfields; f++) {
        const vae_field *F = &vae_config_fields[f];
        if (F->section) fprintf(out, "%s\n", F->section);
        int n = snprintf(buf, sizeof buf, "  --%s %s", F->flag, F->arg);
        fputs(buf, out);
        help_text(out, n, 27, F->help);
        if (F->type == VAE_FT_FAMILY)
            for (int k = 0; vae_family_get(k); k++) {
                n = snprintf(buf, sizeof buf, "      %s", vae_family_get(k)->name);
                fputs(buf, out);
                help_text(out, n, 27, vae_family_get(k)->help);
            }
    }
}

void vae_config_describe(const vae_config *c, char *buf, size_t len)
{
    char v[2 * VAE_PATH_LEN];
    buf[0] = '\0';
    for (int f = 0; f < vae_config_nfields; f++) {
        const vae_field *F = &vae_config_fields[f];
        if (F->type == VAE_FT_DATA || F->type == VAE_FT_TESTDATA || F->type == VAE_FT_PATH || F->type == VAE_FT_LABELS)
            continue; /* their own lines */
        if (!field_of_family(F, vae_family_get(c->arch.kind))) continue; /* another family's option */
        vae_config_format(c, f, v, sizeof v);
        size_t l = strlen(buf);
        snprintf(buf + l, len - l, "%s--%s %s", l ? " " : "", F->flag, v);
    }
}
