/*
 * family.c: the registry of model families (see family.h).
 */
#include "mpivae/family.h"

#include "mpivae/status.h"

#include <stdio.h>
#include <string.h>

extern const vae_family vae_family_mlp, vae_family_conv, vae_family_hvae, vae_family_vaegan, vae_family_classifier;

enum { MAX_FAMILIES = 16 };

/* The built-in families, in the order of enum vae_model_kind; registered ones follow. */
static const vae_family *g_families[MAX_FAMILIES] = { &vae_family_mlp, &vae_family_conv, &vae_family_hvae,
                                                       &vae_family_vaegan, &vae_family_classifier };
static int g_n = 5;
static char g_names[256];

const vae_family *vae_family_get(int kind) { return kind >= 0 && kind < g_n ? g_families[kind] : NULL; }

int vae_family_find(const char *name)
{
    for (int i = 0; i < g_n; i++)
        if (!strcmp(g_families[i]->name, name)) return i;
    return -1;
}

const char *vae_family_names(void)
{
    g_names[0] = '\0';
    for (int i = 0; i < g_n; i++) {
        size_t l = strlen(g_names);
        snprintf(g_names + l, sizeof g_names - l, "%s%s", i ? ", " : "", g_families[i]->name);
    }
    return g_names;
}

int vae_family_register(const vae_family *f)
{
    if (!f || !f->name || vae_family_find(f->name) >= 0 || g_n == MAX_FAMILIES || f->n_terms < 1 ||
        f->n_terms > VAE_MAX_TERMS)
        return VAE_EINVAL;
    g_families[g_n] = f;
    return g_n++;
}

int vae_family_term(const vae_family *f, const char *name)
{
    for (int i = 0; i < f->n_terms; i++)
        if (!strcmp(f->terms[i].name, name)) return i;
    return -1;
}

double vae_terms_loss(int n, const vae_term *kinds, const double *terms, double beta)
{
    double loss = 0.0;
    for (int i = 0; i < n; i++)
        loss += kinds[i].kind == VAE_TERM_ONE ? terms[i] : kinds[i].kind == VAE_TERM_BETA ? beta * terms[i] : 0.0;
    return loss;
}

static const char *const tool_names[] = { "eval", "sample", "reconstruct", "interpolate", "traverse", "anomaly", "encode" };

int vae_family_serves(const vae_family *f, unsigned tool, const char *cmd, const char *ckpt)
{
    if (!f || (f->tools & tool)) return VAE_OK;
    char list[160] = "";
    for (int i = 0; i < (int)(sizeof tool_names / sizeof tool_names[0]); i++)
        if (f->tools & (1u << i)) {
            size_t l = strlen(list);
            snprintf(list + l, sizeof list - l, "%s%s", l ? ", " : "", tool_names[i]);
        }
    return vae_error(VAE_EINVAL, "mpivae %s does not work on model family '%s' (checkpoint '%s'); the tools that do: %s",
                     cmd, f->name, ckpt, list[0] ? list : "none");
}
