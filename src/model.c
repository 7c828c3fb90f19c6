/*
 * model.c: the parts of a model that every family shares (see model.h): the
 * named tensors, parameter groups and latent groups, the four flat blocks,
 * and the calls into the family's table.
 */
#define _POSIX_C_SOURCE 200809L
#include "mpivae/model.h"

#include "mpivae/rng.h"
#include "mpivae/status.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

float *vae_model_alloc(size_t n)
{
    void *p = NULL;
    size_t bytes = (n * sizeof(float) + 63) & ~(size_t)63;
    if (bytes == 0) bytes = 64;
    if (posix_memalign(&p, 64, bytes) != 0) return NULL;
    memset(p, 0, bytes);
    return p;
}

/* The checks of the sizes every family takes; the family's own follow. */
static int generic_check(const vae_arch *a, char *why, size_t len)
{
    if (!vae_family_get(a->kind)) {
        snprintf(why, len, "unknown model kind %d", a->kind);
        return VAE_EINVAL;
    }
    if (a->C < 1 || a->Hh < 1 || a->W < 1) {
        snprintf(why, len, "input shape %dx%dx%d is not positive", a->C, a->Hh, a->W);
        return VAE_EINVAL;
    }
    if (a->latent < 1 || a->latent > 4096) {
        snprintf(why, len, "--latent %d is out of range 1..4096", a->latent);
        return VAE_EINVAL;
    }
    if (a->n_hidden < 1 || a->n_hidden > VAE_MAX_HIDDEN) {
        snprintf(why, len, "--hidden needs 1..%d sizes, got %d", VAE_MAX_HIDDEN, a->n_hidden);
        return VAE_EINVAL;
    }
    for (int i = 0; i < a->n_hidden; i++)
        if (a->hidden[i] < 1 || a->hidden[i] > 65536) {
            snprintf(why, len, "--hidden size %d is out of range 1..65536", a->hidden[i]);
            return VAE_EINVAL;
        }
    if (a->loss != VAE_LOSS_BCE && a->loss != VAE_LOSS_MSE) {
        snprintf(why, len, "unknown loss kind %d", a->loss);
        return VAE_EINVAL;
    }
    return VAE_OK;
}

int vae_arch_check(const vae_arch *a)
{
    char why[512];
    int rc = generic_check(a, why, sizeof why);
    if (!rc) rc = vae_family_get(a->kind)->check(a, 1, why, sizeof why);
    return rc ? vae_error(rc, "%s", why) : VAE_OK;
}

int vae_arch_check_attrs(const vae_arch *a, char *why, size_t len)
{
    const vae_family *f = vae_family_get(a->kind);
    if (!f) {
        snprintf(why, len, "attribute 'model' names no family this build knows (%s)", vae_family_names());
        return VAE_EINVAL;
    }
    return f->check(a, 0, why, len);
}

size_t vae_model_add_tensor(vae_model *m, const char *name, int ndim, const int *shape, float bound)
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

void vae_model_add_group(vae_model *m, const char *name, size_t lo, size_t hi)
{
    vae_param_group *g = &m->groups[m->n_groups++];
    memset(g, 0, sizeof *g);
    snprintf(g->name, sizeof g->name, "%.31s", name);
    g->lo = lo;
    g->hi = hi;
}

void vae_model_add_latent(vae_model *m, const char *name, int C, int H, int W)
{
    vae_latent_group *l = &m->latents[m->n_latents++];
    memset(l, 0, sizeof *l);
    snprintf(l->name, sizeof l->name, "%.31s", name);
    l->C = C;
    l->H = H;
    l->W = W;
    l->dim = C * H * W;
    l->offset = m->Z;
    m->Z += l->dim;
}

int vae_model_plan(vae_model *m, const vae_arch *arch)
{
    memset(m, 0, sizeof *m);
    int rc = vae_arch_check(arch);
    if (rc) return rc;
    m->arch = *arch;
    m->fam = vae_family_get(arch->kind);
    m->D = arch->C * arch->Hh * arch->W;
    m->n_terms = m->fam->n_terms;
    for (int i = 0; i < m->n_terms; i++) m->terms[i] = m->fam->terms[i];
    m->fam->plan(m); /* may name its own terms (a count fixed by the architecture) */
    if (m->n_groups == 0) vae_model_add_group(m, "all", 0, m->n_params);
    /* The groups partition the block, in order: every gradient is updated or cleared by exactly one. */
    for (int g = 0; g < m->n_groups; g++)
        if (m->groups[g].lo != (g ? m->groups[g - 1].hi : 0) || m->groups[g].hi < m->groups[g].lo ||
            (g == m->n_groups - 1 && m->groups[g].hi != m->n_params))
            return vae_error(VAE_EINVAL, "model family '%s': parameter group '%s' [%zu, %zu) does not continue a "
                             "partition of the %zu parameters", m->fam->name, m->groups[g].name, m->groups[g].lo,
                             m->groups[g].hi, m->n_params);
    /* Gradient tail: the flags, one slot per term, padded to 8 floats. */
    m->grad_extra = ((size_t)VAE_GX_TERMS + (size_t)m->n_terms + 7) / 8 * 8;
    return VAE_OK;
}

int vae_model_init(vae_model *m, const vae_arch *arch, int max_batch)
{
    int rc = vae_model_plan(m, arch);
    if (rc) return rc;
    if (max_batch < 1) return vae_error(VAE_EINVAL, "batch size %d is not positive", max_batch);
    m->params = vae_model_alloc(m->n_params);
    m->grads = vae_model_alloc(m->n_params + m->grad_extra);
    m->m = vae_model_alloc(m->n_params);
    m->v = vae_model_alloc(m->n_params);
    if (!m->params || !m->grads || !m->m || !m->v) {
        size_t np = m->n_params;
        vae_model_free(m);
        return vae_error(VAE_ENOMEM, "cannot allocate the model (%zu parameters, %.1f GB)", np,
                         4.0 * np * sizeof(float) / 1e9);
    }
    if (m->fam->labeled && !(m->labels = calloc((size_t)max_batch, sizeof(int)))) {
        vae_model_free(m);
        return vae_error(VAE_ENOMEM, "cannot allocate the labels of a batch of %d", max_batch);
    }
    rc = m->fam->init(m, max_batch);
    if (rc) {
        vae_model_free(m);
        return rc;
    }
    m->max_batch = max_batch;
    return VAE_OK;
}

void vae_model_free(vae_model *m)
{
    free(m->params);
    free(m->grads);
    free(m->m);
    free(m->v);
    free(m->ema);
    free(m->arena);
    free(m->labels);
    free(m->priv);
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
    for (int g = 0; g < m->n_groups; g++) m->groups[g].t = 0;
}

void vae_model_set_adam(vae_model *m, const vae_adam *h)
{
    for (int g = 0; g < m->n_groups; g++) m->groups[g].adam = *h;
}

const vae_tensor *vae_model_find(const vae_model *m, const char *name)
{
    for (int i = 0; i < m->n_tensors; i++)
        if (strcmp(m->tensors[i].name, name) == 0) return &m->tensors[i];
    return NULL;
}

void vae_model_pass(vae_model *m, const vae_pass *p)
{
    m->fam->pass(m, p);
    if (p->backward && m->grad_ready && m->n_ready == 0) m->grad_ready(m->grad_ctx, 0, m->n_params);
}

void vae_model_encode(vae_model *m, int B, float *mu, float *logvar) { m->fam->encode(m, B, mu, logvar); }

void vae_model_decode(vae_model *m, const float *z, int B, float *images) { m->fam->decode(m, z, B, images); }

void vae_model_decode_given(vae_model *m, const float *z, int ngiven, int B, float *images)
{
    if (ngiven >= m->n_latents || !m->fam->decode_given) m->fam->decode(m, z, B, images);
    else m->fam->decode_given(m, z, ngiven, B, images);
}

void vae_model_generate(vae_model *m, float *noise, float temperature, int B, float *images)
{
    m->fam->generate(m, noise, temperature, B, images);
}

void vae_model_features(vae_model *m, int B, float *feat) { m->fam->features(m, B, feat); }

double vae_model_flops_per_sample(const vae_model *m) { return m->fam->flops(m); }
