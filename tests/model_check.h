/*
 * model_check.h: what the whole-model tests (test_model.c, test_conv_model.c,
 * test_hvae.c, test_classifier.c) share: check macros that print the
 * expression, both values and the line; a small deterministic generator; the finite-difference check of every
 * parameter tensor of a model; and HDF5 readers for the PyTorch fixtures.
 * Included by exactly one source file per test program (static definitions).
 */
#ifndef MPIVAE_TESTS_MODEL_CHECK_H
#define MPIVAE_TESTS_MODEL_CHECK_H

#include "mpivae/model.h"
#include "mpivae/ops.h"
#include "mpivae/status.h"

#include <float.h>
#include <hdf5.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

/* ---------------------------------------------------------------------- helpers */

/*
 * The terms of a model as two: "recon" (the first term) and kl, the sum of
 * its BETA terms (the layer-stack families' one "kl", hvae's KL per group),
 * and one pass through vae_model_pass with them.
 */
typedef struct vae_loss_stats {
    double recon, kl;
    int rows;
} vae_loss_stats;

static void vae_model_forward_backward(vae_model *m, const float *eps, int B, float beta, float grad_scale,
                                       int backward, vae_loss_stats *st, double *row_recon, double *row_kl)
{
    double terms[VAE_MAX_TERMS] = { 0 };
    double *rows = row_recon || row_kl ? malloc((size_t)B * m->n_terms * sizeof(double)) : NULL;
    vae_pass p = { eps, B, beta, -1.0f, grad_scale, backward, terms, rows, 0.0f };
    vae_model_pass(m, &p);
    if (rows && row_recon) memcpy(row_recon, rows, (size_t)B * sizeof(double));
    if (rows && row_kl)
        for (int r = 0; r < B; r++) {
            row_kl[r] = 0.0;
            for (int t = 1; t < m->n_terms; t++)
                if (m->terms[t].kind == VAE_TERM_BETA) row_kl[r] += rows[(size_t)t * B + r];
        }
    free(rows);
    if (st) {
        st->recon = terms[0];
        st->kl = 0.0;
        for (int t = 1; t < m->n_terms; t++)
            if (m->terms[t].kind == VAE_TERM_BETA) st->kl += terms[t];
        st->rows = B;
    }
}

/* mu and logvar of the B rows in the input, as the encoder's [B, 2Z] output (mu | logvar). */
__attribute__((unused)) static float *encode_mulv(vae_model *m, int B)
{
    const int Z = m->Z;
    float *mu = malloc((size_t)B * Z * sizeof(float)), *lv = malloc((size_t)B * Z * sizeof(float));
    float *mulv = malloc((size_t)B * 2 * Z * sizeof(float));
    vae_model_encode(m, B, mu, lv);
    for (int r = 0; r < B; r++) {
        memcpy(mulv + (size_t)r * 2 * Z, mu + (size_t)r * Z, (size_t)Z * sizeof(float));
        memcpy(mulv + (size_t)r * 2 * Z + Z, lv + (size_t)r * Z, (size_t)Z * sizeof(float));
    }
    free(mu);
    free(lv);
    return mulv;
}

/* vae_arch_check's status, with the message it reports kept in msg (not printed). */
static inline int arch_check_quiet(const vae_arch *a, char *msg, size_t len)
{
    msg[0] = '\0';
    vae_defer_begin();
    int rc = vae_arch_check(a);
    vae_defer_take(msg, len);
    vae_defer_end(0);
    return rc;
}

static void zero_grads(vae_model *m)
{
    memset(m->grads, 0, (m->n_params + m->grad_extra) * sizeof(float));
}

static double total_loss(const vae_loss_stats *st, float beta)
{
    return st->recon + (double)beta * st->kl;
}

/* ---------------------------------------------------------------------- (a) finite differences */

/* Concatenated ReLU masks (act > 0) of every ReLU layer, for kink detection. */
static size_t relu_mask(const vae_model *m, int B, unsigned char *mask)
{
    size_t n = 0;
    for (int i = 0; i < m->n_relu; i++)
        for (size_t k = 0; k < (size_t)B * m->relu_row[i]; k++) mask[n++] = m->relu_at[i][k] > 0.0f;
    for (int i = 0; i < m->n_enc + m->n_dec; i++) {
        const vae_layer *l = &m->layers[i];
        if (l->act != VAE_ACT_RELU) continue;
        for (size_t k = 0; k < (size_t)B * l->out; k++) mask[n++] = m->act[i + 1][k] > 0.0f;
    }
    return n;
}

static double eval_loss(vae_model *m, const float *eps, int B, float beta)
{
    vae_loss_stats st;
    memset(&st, 0, sizeof st);
    vae_model_forward_backward(m, eps, B, beta, 1.0f, 0, &st, NULL, NULL);
    return total_loss(&st, beta);
}

/*
 * Gradient check of one model. Tolerance: |analytic - fd| <= 2e-2 |fd| +
 * atol. The forward pass is float, so the loss sum L carries a relative
 * rounding error of some FLT_EPSILON times the depth and widths; in the
 * difference L(p + h) - L(p - h) that becomes an absolute error of about
 * c * FLT_EPSILON * |L| with c ~ 10, divided by 2h: atol = 10 *
 * FLT_EPSILON * Labs / (2h) where Labs is the loss scale (sum over rows of
 * |recon| + beta |kl|). The truncation error of the central difference is
 * h^2 |f'''| / 6, about 2e-5 relative for h = 1e-2, inside the 2e-2
 * relative part, which is mostly there for the float rounding of the
 * perturbed parameter and the gradient itself. When a perturbation moves
 * any ReLU across its kink (the loss is not smooth there) the entry is
 * retried with h = 3e-3, then 1e-3 (atol grows as 1/h), and skipped when
 * all three cross; at most a quarter of the sampled entries, and half of
 * any tensor's, may be skipped.
 */
static void fd_check_model(const char *name, const vae_arch *arch, int max_batch, int B, float beta,
                           int use_eps, uint64_t seed)
{
    vae_model m;
    int rc = vae_model_init(&m, arch, max_batch);
    CHECK_EQ(rc, 0);
    if (rc) return;
    vae_model_init_params(&m, seed);
    int D = m.D, Z = m.Z;
    float *x = vae_model_input(&m);
    for (size_t i = 0; i < (size_t)B * D; i++)
        x[i] = arch->loss == VAE_LOSS_BCE ? uniform(0, 1) : uniform(-1.5f, 1.5f);
    /* A family that learns from labels (a classifier): a random class for each row. */
    if (m.labels)
        for (int r = 0; r < B; r++) m.labels[r] = (int)(next_u64() % (uint64_t)arch->classes);
    float *eps = malloc((size_t)B * Z * sizeof(float));
    vae_rng_normal(seed, VAE_RNG_EPS, 0, 0, eps, (int64_t)B * Z);
    const float *e = use_eps ? eps : NULL;

    /* Per-model mask buffers (every ReLU output of every layer). */
    size_t mask_len = 0;
    for (int i = 0; i < m.n_enc + m.n_dec; i++) mask_len += (size_t)B * m.layers[i].out;
    for (int i = 0; i < m.n_relu; i++) mask_len += (size_t)B * m.relu_row[i];
    unsigned char *mask0 = malloc(mask_len + 1), *mask1 = malloc(mask_len + 1);

    /* Analytic gradient, grad_scale 1. */
    zero_grads(&m);
    vae_loss_stats st;
    double *row_recon = malloc((size_t)B * sizeof(double)), *row_kl = malloc((size_t)B * sizeof(double));
    vae_model_forward_backward(&m, e, B, beta, 1.0f, 1, &st, row_recon, row_kl);
    size_t nmask = relu_mask(&m, B, mask0);
    double L0 = total_loss(&st, beta);
    CHECK_EQ(st.rows, B);
    CHECK(isfinite(L0));
    double sr = 0, sk = 0, labs = 0;
    for (int r = 0; r < B; r++) {
        sr += row_recon[r];
        sk += row_kl[r];
        labs += fabs(row_recon[r]) + fabs(beta * row_kl[r]);
    }
    CHECK_CLOSE(name, sr, st.recon, 1e-12, 1e-12);
    CHECK_CLOSE(name, sk, st.kl, 1e-12, 1e-12);
    /* The loss does not depend on whether the backward pass runs. */
    CHECK_CMP_DBL(eval_loss(&m, e, B, beta), ==, L0);

    float *g = malloc((m.n_params + m.grad_extra) * sizeof(float));
    memcpy(g, m.grads, (m.n_params + m.grad_extra) * sizeof(float));

    /* Steps tried in turn when a larger one crosses a ReLU kink. */
    static const double hs[3] = { 1e-2, 3e-3, 1e-3 };
    int checked = 0, skipped = 0, smaller = 0;
    double worst = 0; /* largest |diff| / tolerance */
    char label[128];
    for (int ti = 0; ti < m.n_tensors; ti++) {
        const vae_tensor *t = &m.tensors[ti];
        snprintf(label, sizeof label, "%s: d loss / d %s", name, t->name);
        size_t nsample = t->numel < 36 ? t->numel : 36;
        int t_checked = 0;
        for (size_t s = 0; s < nsample; s++) {
            size_t j = nsample == t->numel ? s : (size_t)(next_u64() % t->numel);
            float *p = &m.params[t->offset + j];
            float keep = *p;
            int done = 0;
            for (int hi = 0; hi < 3 && !done; hi++) {
                double h = hs[hi];
                /* The float perturbation actually applied. */
                float pp = (float)(keep + h), pm = (float)(keep - h);
                *p = pp;
                double lp = eval_loss(&m, e, B, beta);
                int kink = relu_mask(&m, B, mask1) != nmask || memcmp(mask0, mask1, nmask) != 0;
                *p = pm;
                double lm = eval_loss(&m, e, B, beta);
                kink |= relu_mask(&m, B, mask1) != nmask || memcmp(mask0, mask1, nmask) != 0;
                *p = keep;
                if (kink) continue;
                double fd = (lp - lm) / ((double)pp - (double)pm);
                double atol = 10 * FLT_EPSILON * labs / (2 * h);
                CHECK_CLOSE(label, g[t->offset + j], fd, 2e-2, atol);
                worst = fmax(worst, fabs(g[t->offset + j] - fd) / (2e-2 * fabs(fd) + atol));
                done = 1;
                smaller += hi > 0;
            }
            if (done) {
                checked++;
                t_checked++;
            } else {
                skipped++;
            }
        }
        /* Every tensor gets checked at least somewhat. */
        if (t_checked < (int)(nsample + 1) / 2)
            fprintf(stderr, "%s: only %d of %zu entries checked (kinks)\n", label, t_checked, nsample);
        CHECK_CMP_INT(t_checked, >=, (int)(nsample + 1) / 2);
        /* A tensor whose gradient is all zero would make the check vacuous. */
        double gmax = 0;
        for (size_t j = 0; j < t->numel; j++)
            if (fabs(g[t->offset + j]) > gmax) gmax = fabs(g[t->offset + j]);
        int lv_head_without_eps = !use_eps && (strncmp(t->name, "fc22.", 5) == 0 || strncmp(t->name, "fc_logvar.", 10) == 0);
        if (!lv_head_without_eps && !(gmax > 0.0)) fprintf(stderr, "%s: the gradient is all zero\n", label);
        if (!lv_head_without_eps) CHECK_CMP_DBL(gmax, >, 0.0);
    }
    CHECK_CMP_INT(skipped * 4, <=, checked + skipped);
    printf("%s: L = %.6g, %d entries checked (%d with h < 1e-2), %d skipped at ReLU kinks, "
           "atol %.3g at h = 1e-2, worst |diff|/tol %.3f\n", name, L0, checked, smaller, skipped,
           10 * FLT_EPSILON * labs / (2 * hs[0]), worst);

    /* The gradient is added into m.grads, scaled by grad_scale: 1 + 0.5 = 1.5 times g. */
    vae_model_forward_backward(&m, e, B, beta, 0.5f, 1, &st, NULL, NULL);
    double gabs = 0;
    for (size_t j = 0; j < m.n_params; j++) gabs = fmax(gabs, fabs(g[j]));
    snprintf(label, sizeof label, "%s: accumulate 1 + 0.5", name);
    for (size_t j = 0; j < m.n_params; j++)
        CHECK_CLOSE(label, m.grads[j], 1.5 * g[j], 1e-5, 1e-6 * gabs);

    free(g);
    free(row_recon);
    free(row_kl);
    free(mask0);
    free(mask1);
    free(eps);
    vae_model_free(&m);
}

static int read_attr_i64(hid_t loc, const char *name, long long *v)
{
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    if (a < 0) return -1;
    int rc = H5Aread(a, H5T_NATIVE_LLONG, v) < 0 ? -1 : 0;
    H5Aclose(a);
    return rc;
}

__attribute__((unused)) static int read_attr_f64(hid_t loc, const char *name, double *v)
{
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    if (a < 0) return -1;
    int rc = H5Aread(a, H5T_NATIVE_DOUBLE, v) < 0 ? -1 : 0;
    H5Aclose(a);
    return rc;
}

/* An int64 array attribute of at most max values; returns the count or -1. */
static int read_attr_i64s(hid_t loc, const char *name, long long *v, int max)
{
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    if (a < 0) return -1;
    hid_t sp = H5Aget_space(a);
    hssize_t n = H5Sget_simple_extent_npoints(sp);
    int rc = n < 1 || n > max || H5Aread(a, H5T_NATIVE_LLONG, v) < 0 ? -1 : (int)n;
    H5Sclose(sp);
    H5Aclose(a);
    return rc;
}

/* A fixed-length string attribute into buf (NUL-terminated). */
__attribute__((unused)) static int read_attr_str(hid_t loc, const char *name, char *buf, size_t len)
{
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    if (a < 0) return -1;
    hid_t ft = H5Aget_type(a);
    size_t sz = H5Tget_size(ft);
    int rc = -1;
    if (H5Tget_class(ft) == H5T_STRING && sz < len && !H5Tis_variable_str(ft)) {
        hid_t mt = H5Tcopy(H5T_C_S1);
        H5Tset_size(mt, sz + 1);
        H5Tset_strpad(mt, H5T_STR_NULLTERM);
        memset(buf, 0, len);
        rc = H5Aread(a, mt, buf) < 0 ? -1 : 0;
        H5Tclose(mt);
    }
    H5Tclose(ft);
    H5Aclose(a);
    return rc;
}

/* Reads dataset `name` under loc as mem_type, requiring exactly n elements. */
static int read_dset(hid_t loc, const char *name, hid_t mem_type, void *out, size_t n)
{
    hid_t d = H5Dopen2(loc, name, H5P_DEFAULT);
    if (d < 0) return -1;
    hid_t sp = H5Dget_space(d);
    hssize_t np = H5Sget_simple_extent_npoints(sp);
    int rc = np != (hssize_t)n || H5Dread(d, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, out) < 0 ? -1 : 0;
    if (np != (hssize_t)n)
        fprintf(stderr, "fixture dataset '%s' has %lld values, expected %zu\n", name, (long long)np, n);
    H5Sclose(sp);
    H5Dclose(d);
    return rc;
}

/* Dataset shape; returns ndim or -1. */
static int dset_shape(hid_t loc, const char *name, hsize_t *dims)
{
    hid_t d = H5Dopen2(loc, name, H5P_DEFAULT);
    if (d < 0) return -1;
    hid_t sp = H5Dget_space(d);
    int nd = H5Sget_simple_extent_ndims(sp);
    if (nd > 0 && nd <= 4) H5Sget_simple_extent_dims(sp, dims, NULL);
    else nd = -1;
    H5Sclose(sp);
    H5Dclose(d);
    return nd;
}

/* Names of the links in group `gname` (sorted by name); returns the count, -1 on error. */
static int list_group(hid_t loc, const char *gname, char names[][VAE_NAME_LEN], int max)
{
    hid_t g = H5Gopen2(loc, gname, H5P_DEFAULT);
    if (g < 0) return -1;
    H5G_info_t info;
    int n = -1;
    if (H5Gget_info(g, &info) >= 0 && info.nlinks <= (hsize_t)max) {
        n = (int)info.nlinks;
        for (int i = 0; i < n; i++)
            if (H5Lget_name_by_idx(g, ".", H5_INDEX_NAME, H5_ITER_INC, (hsize_t)i, names[i],
                                   VAE_NAME_LEN, H5P_DEFAULT) < 0)
                n = -1;
    }
    H5Gclose(g);
    return n;
}


/*
 * Every parameter gradient of m against the fixture group g's grads/<name>
 * (float64): max |ours - torch| <= 1e-4 * max |torch| over each tensor, and
 * no reference all zero. Returns the largest such ratio, its tensor in *worst_name.
 */
static double fixture_check_grads(hid_t g, const char *gname, const vae_model *m, const char **worst_name)
{
    char label[160], path[VAE_NAME_LEN + 16];
    double worst = 0;
    *worst_name = "";
    for (int i = 0; i < m->n_tensors; i++) {
        const vae_tensor *t = &m->tensors[i];
        double *ref = malloc(t->numel * sizeof(double));
        snprintf(path, sizeof path, "grads/%s", t->name);
        int rrc = read_dset(g, path, H5T_NATIVE_DOUBLE, ref, t->numel);
        CHECK_EQ(rrc, 0);
        if (!rrc) {
            double gmax = 0, dmax = 0;
            for (size_t j = 0; j < t->numel; j++) {
                gmax = fmax(gmax, fabs(ref[j]));
                dmax = fmax(dmax, fabs(m->grads[t->offset + j] - ref[j]));
            }
            snprintf(label, sizeof label, "/%.16s grads/%.63s (max |diff| vs 1e-4 max |grad|)", gname, t->name);
            CHECK_CMP_DBL(gmax, >, 0.0);
            CHECK_CLOSE(label, dmax, 0.0, 0, 1e-4 * gmax);
            if (gmax > 0 && dmax / gmax > worst) {
                worst = dmax / gmax;
                *worst_name = t->name;
            }
        }
        free(ref);
    }
    return worst;
}

/* Opens the fixture at path and runs one(file, case) for each name of cases (NULL-terminated). */
static void fixture_run(const char *path, void (*one)(hid_t, const char *), const char *const *cases)
{
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) fprintf(stderr, "cannot open fixture '%s'\n", path);
    CHECK(f >= 0);
    if (f < 0) return;
    for (int i = 0; cases[i]; i++) one(f, cases[i]);
    H5Fclose(f);
}

#endif
