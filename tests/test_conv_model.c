/*
 * test_conv_model.c: tests of the convolutional VAE (--model conv) of model.h.
 *
 * (a) Finite differences of the whole model, as in test_model.c: for each
 *     parameter tensor, up to 36 sampled entries are perturbed by +-h in
 *     float and the loss sum recon + beta * KL (in double, from
 *     vae_loss_stats) is compared with the gradient vae_model_forward_backward
 *     adds into m.grads (grad_scale 1). Models (C x H x W, channels, Z, B):
 *       1x8x8   [4,6]    Z 3  B 3   BCE beta 1
 *       2x8x12  [3,5]    Z 2  B 1   MSE beta 0.5   (non-square, two input channels)
 *       1x4x4   [3]      Z 2  B 2   BCE beta 2     (one conv layer)
 *       1x8x16  [3,4,5]  Z 2  B 3   BCE beta 1     (three conv layers, non-square)
 *       1x8x8   [4,6]    Z 3  B 3   BCE beta 1, eps == NULL (z = mu)
 *     Also: the gradient is added (not overwritten) and scales with
 *     grad_scale, the loss does not depend on whether the backward pass runs,
 *     and the per-row terms sum to the totals.
 * (b) The PyTorch fixture (tests/pytorch/make_fixture_conv.py; path given on
 *     the command line): for /bce (1x8x8, [4,6]), /mse (2x8x12, [3,5]) and
 *     /one (1x4x4, [3]), the model's tensors have exactly the fixture's names
 *     and shapes (Conv2d [out,in,k,k], ConvTranspose2d [in,out,k,k]); with the
 *     fixture's params, x and eps, the batch-mean losses (relative 1e-5), mu
 *     and logvar, the logits and every parameter gradient (grad_scale = 1/B;
 *     max |diff| <= 1e-4 of the tensor's max |grad|) match PyTorch's float64
 *     values.
 * (c) vae_arch_check refuses a 12x12 input with 3 conv layers (H and W must be
 *     divisible by 8) with a non-zero status and a message naming the input
 *     size, the divisor and sizes that work; 16x8 with 3 layers and 12x12
 *     with 2 layers are accepted.
 * (d) vae_model_flops_per_sample of the default conv model (1x28x28,
 *     channels 32,64, Z 16) equals the count by hand.
 *
 * The exit code is the verdict.
 */
#include "mpivae/model.h"
#include "mpivae/ops.h"
#include "mpivae/rng.h"
#include "mpivae/status.h"

#include <float.h>
#include <hdf5.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int g_checks, g_failures, g_printed;

#define CHECK(cond)                                                                          \
    do {                                                                                     \
        g_checks++;                                                                          \
        if (!(cond)) {                                                                       \
            g_failures++;                                                                    \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);         \
        }                                                                                    \
    } while (0)

#define CHECK_CMP_INT(a, op, b)                                                              \
    do {                                                                                     \
        long long a_ = (long long)(a), b_ = (long long)(b);                                  \
        g_checks++;                                                                          \
        if (!(a_ op b_)) {                                                                   \
            g_failures++;                                                                    \
            fprintf(stderr, "%s:%d: check failed: %s %s %s (%lld vs %lld)\n", __FILE__,     \
                    __LINE__, #a, #op, #b, a_, b_);                                          \
        }                                                                                    \
    } while (0)

#define CHECK_EQ(a, b) CHECK_CMP_INT(a, ==, b)

#define CHECK_CMP_DBL(a, op, b)                                                              \
    do {                                                                                     \
        double a_ = (double)(a), b_ = (double)(b);                                           \
        g_checks++;                                                                          \
        if (!(a_ op b_)) {                                                                   \
            g_failures++;                                                                    \
            fprintf(stderr, "%s:%d: check failed: %s %s %s (%.12g vs %.12g)\n", __FILE__,   \
                    __LINE__, #a, #op, #b, a_, b_);                                          \
        }                                                                                    \
    } while (0)

/* |a - b| <= rtol |b| + atol, with a context label; at most 40 failures printed. */
#define CHECK_CLOSE(label, a, b, rtol, atol)                                                 \
    do {                                                                                     \
        double a_ = (double)(a), b_ = (double)(b);                                           \
        double t_ = (double)(rtol) * fabs(b_) + (double)(atol);                              \
        g_checks++;                                                                          \
        if (!(fabs(a_ - b_) <= t_)) {                                                        \
            g_failures++;                                                                    \
            if (g_printed++ < 40)                                                            \
                fprintf(stderr,                                                              \
                        "%s:%d: check failed [%s]: |%s - %s| <= %s*|%s| + %s "              \
                        "(%.10g vs %.10g, diff %.3g, tol %.3g)\n",                           \
                        __FILE__, __LINE__, label, #a, #b, #rtol, #b, #atol, a_, b_,        \
                        fabs(a_ - b_), t_);                                                  \
        }                                                                                    \
    } while (0)

/* ---------------------------------------------------------------------- helpers */

static uint64_t g_rng = 0x243F6A8885A308D3ull;

/* splitmix64, local to the test. */
static uint64_t next_u64(void)
{
    uint64_t z = (g_rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static float uniform(float lo, float hi)
{
    double u = (double)(next_u64() >> 11) * (1.0 / 9007199254740992.0);
    return (float)(lo + (hi - lo) * u);
}

static void zero_grads(vae_model *m)
{
    memset(m->grads, 0, (m->n_params + VAE_GRAD_EXTRA) * sizeof(float));
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
    float *eps = malloc((size_t)B * Z * sizeof(float));
    vae_rng_normal(seed, VAE_RNG_EPS, 0, 0, eps, (int64_t)B * Z);
    const float *e = use_eps ? eps : NULL;

    /* Per-model mask buffers (every ReLU output of every layer). */
    size_t mask_len = 0;
    for (int i = 0; i < m.n_enc + m.n_dec; i++) mask_len += (size_t)B * m.layers[i].out;
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

    float *g = malloc((m.n_params + VAE_GRAD_EXTRA) * sizeof(float));
    memcpy(g, m.grads, (m.n_params + VAE_GRAD_EXTRA) * sizeof(float));

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
        int lv_head_without_eps = !use_eps && strncmp(t->name, "fc_logvar.", 10) == 0;
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

/* A --model conv architecture: C x Hh x W input, n conv layers with channels ch, latent Z. */
static vae_arch conv_arch(int C, int Hh, int W, int n, const int *ch, int Z, int loss)
{
    vae_arch a;
    memset(&a, 0, sizeof a);
    a.kind = VAE_MODEL_CONV;
    a.C = C;
    a.Hh = Hh;
    a.W = W;
    a.n_hidden = n;
    for (int i = 0; i < n; i++) a.hidden[i] = ch[i];
    a.latent = Z;
    a.loss = loss;
    return a;
}

static void test_fd(void)
{
    vae_arch a = conv_arch(1, 8, 8, 2, (int[]){ 4, 6 }, 3, VAE_LOSS_BCE);
    fd_check_model("conv 1x8x8 [4,6] bce beta 1 B 3", &a, 4, 3, 1.0f, 1, 21);
    fd_check_model("conv 1x8x8 [4,6] bce beta 1 B 3 eps NULL", &a, 3, 3, 1.0f, 0, 22);

    a = conv_arch(2, 8, 12, 2, (int[]){ 3, 5 }, 2, VAE_LOSS_MSE);
    fd_check_model("conv 2x8x12 [3,5] mse beta 0.5 B 1", &a, 2, 1, 0.5f, 1, 23);

    a = conv_arch(1, 4, 4, 1, (int[]){ 3 }, 2, VAE_LOSS_BCE);
    fd_check_model("conv 1x4x4 [3] bce beta 2 B 2", &a, 2, 2, 2.0f, 1, 24);

    a = conv_arch(1, 8, 16, 3, (int[]){ 3, 4, 5 }, 2, VAE_LOSS_BCE);
    fd_check_model("conv 1x8x16 [3,4,5] bce beta 1 B 3", &a, 3, 3, 1.0f, 1, 25);
}

/* ---------------------------------------------------------------------- (b) PyTorch fixture */

static int read_attr_i64(hid_t loc, const char *name, long long *v)
{
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    if (a < 0) return -1;
    int rc = H5Aread(a, H5T_NATIVE_LLONG, v) < 0 ? -1 : 0;
    H5Aclose(a);
    return rc;
}

static int read_attr_f64(hid_t loc, const char *name, double *v)
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
static int read_attr_str(hid_t loc, const char *name, char *buf, size_t len)
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

static void fixture_case(hid_t file, const char *gname)
{
    char label[160];
    hid_t g = H5Gopen2(file, gname, H5P_DEFAULT);
    CHECK(g >= 0);
    if (g < 0) {
        fprintf(stderr, "fixture has no group '/%s'\n", gname);
        return;
    }
    long long C = 0, Hh = 0, W = 0, Z = 0, B = 0, ch[VAE_MAX_HIDDEN];
    double beta = 0;
    char loss[16] = "";
    CHECK_EQ(read_attr_i64(g, "C", &C), 0);
    CHECK_EQ(read_attr_i64(g, "H", &Hh), 0);
    CHECK_EQ(read_attr_i64(g, "W", &W), 0);
    CHECK_EQ(read_attr_i64(g, "Z", &Z), 0);
    CHECK_EQ(read_attr_i64(g, "B", &B), 0);
    CHECK_EQ(read_attr_f64(g, "beta", &beta), 0);
    CHECK_EQ(read_attr_str(g, "loss", loss, sizeof loss), 0);
    int nch = read_attr_i64s(g, "channels", ch, VAE_MAX_HIDDEN);
    CHECK_CMP_INT(nch, >=, 1);
    CHECK(strcmp(loss, "bce") == 0 || strcmp(loss, "mse") == 0);
    if (nch < 1 || C < 1 || Hh < 1 || W < 1 || Z < 1 || B < 1) {
        H5Gclose(g);
        return;
    }

    int chi[VAE_MAX_HIDDEN];
    for (int i = 0; i < nch; i++) chi[i] = (int)ch[i];
    vae_arch a = conv_arch((int)C, (int)Hh, (int)W, nch, chi, (int)Z,
                           strcmp(loss, "mse") == 0 ? VAE_LOSS_MSE : VAE_LOSS_BCE);
    vae_model m;
    int rc = vae_model_init(&m, &a, (int)B);
    CHECK_EQ(rc, 0);
    if (rc) {
        H5Gclose(g);
        return;
    }
    long long D = m.D;
    CHECK_EQ(D, C * Hh * W);

    /* The model's tensors are exactly the fixture's params: same names, same shapes. */
    static char pnames[VAE_MAX_TENSORS][VAE_NAME_LEN], gnames[VAE_MAX_TENSORS][VAE_NAME_LEN];
    int np = list_group(g, "params", pnames, VAE_MAX_TENSORS);
    int ng = list_group(g, "grads", gnames, VAE_MAX_TENSORS);
    CHECK_EQ(np, m.n_tensors);
    CHECK_EQ(ng, m.n_tensors);
    /* 2 per conv layer and 2 per Linear (fc_mu, fc_logvar, fc_dec), mirrored: 4n + 6. */
    CHECK_EQ(m.n_tensors, 4 * nch + 6);
    for (int i = 0; i < np; i++) {
        const vae_tensor *t = vae_model_find(&m, pnames[i]);
        snprintf(label, sizeof label, "/%.16s/params/%.63s", gname, pnames[i]);
        if (!t) fprintf(stderr, "%s: the model has no tensor of this name\n", label);
        CHECK(t != NULL);
        if (!t) continue;
        hsize_t dims[4];
        char path[VAE_NAME_LEN + 16];
        snprintf(path, sizeof path, "params/%.63s", pnames[i]);
        int nd = dset_shape(g, path, dims);
        CHECK_EQ(nd, t->ndim);
        for (int k = 0; k < nd && k < t->ndim; k++) {
            if (dims[k] != (hsize_t)t->shape[k])
                fprintf(stderr, "%s: dimension %d is %llu in the fixture, %d in the model\n", label, k,
                        (unsigned long long)dims[k], t->shape[k]);
            CHECK_EQ(dims[k], t->shape[k]);
        }
    }
    for (int i = 0; i < m.n_tensors; i++) {
        int found = 0;
        for (int k = 0; k < np; k++) found |= strcmp(pnames[k], m.tensors[i].name) == 0;
        if (!found) fprintf(stderr, "/%s/params lacks the model's tensor '%s'\n", gname, m.tensors[i].name);
        CHECK(found);
    }
    for (int i = 0; i < ng; i++) {
        int found = vae_model_find(&m, gnames[i]) != NULL;
        if (!found) fprintf(stderr, "/%s/grads/%s: the model has no tensor of this name\n", gname, gnames[i]);
        CHECK(found);
    }

    /* Load the params, x and eps; forward and backward with grad_scale = 1/B. */
    char path[VAE_NAME_LEN + 16];
    for (int i = 0; i < m.n_tensors; i++) {
        const vae_tensor *t = &m.tensors[i];
        snprintf(path, sizeof path, "params/%s", t->name);
        CHECK_EQ(read_dset(g, path, H5T_NATIVE_FLOAT, m.params + t->offset, t->numel), 0);
    }
    size_t nx = (size_t)B * D, nz = (size_t)B * Z;
    float *eps = malloc(nz * sizeof(float));
    double *mu = malloc(nz * sizeof(double)), *lv = malloc(nz * sizeof(double));
    double *logits = malloc(nx * sizeof(double));
    CHECK_EQ(read_dset(g, "x", H5T_NATIVE_FLOAT, vae_model_input(&m), nx), 0);
    CHECK_EQ(read_dset(g, "eps", H5T_NATIVE_FLOAT, eps, nz), 0);
    CHECK_EQ(read_dset(g, "mu", H5T_NATIVE_DOUBLE, mu, nz), 0);
    CHECK_EQ(read_dset(g, "logvar", H5T_NATIVE_DOUBLE, lv, nz), 0);
    CHECK_EQ(read_dset(g, "recon_logits", H5T_NATIVE_DOUBLE, logits, nx), 0);
    double e_loss = NAN, e_recon = NAN, e_kl = NAN;
    CHECK_EQ(read_dset(g, "expected_loss", H5T_NATIVE_DOUBLE, &e_loss, 1), 0);
    CHECK_EQ(read_dset(g, "expected_recon", H5T_NATIVE_DOUBLE, &e_recon, 1), 0);
    CHECK_EQ(read_dset(g, "expected_kl", H5T_NATIVE_DOUBLE, &e_kl, 1), 0);

    zero_grads(&m);
    vae_loss_stats st;
    memset(&st, 0, sizeof st);
    vae_model_forward_backward(&m, eps, (int)B, (float)beta, 1.0f / (float)B, 1, &st, NULL, NULL);
    CHECK_EQ(st.rows, B);

    /* Batch means against PyTorch's float64 values: relative 1e-5 (float forward). */
    snprintf(label, sizeof label, "/%s losses", gname);
    CHECK_CLOSE(label, st.recon / B, e_recon, 1e-5, 0);
    CHECK_CLOSE(label, st.kl / B, e_kl, 1e-5, 0);
    CHECK_CLOSE(label, (st.recon + beta * st.kl) / B, e_loss, 1e-5, 0);
    printf("/%s: recon %.9g (torch %.9g), kl %.9g (torch %.9g), loss %.9g (torch %.9g)\n", gname,
           st.recon / B, e_recon, st.kl / B, e_kl, (st.recon + beta * st.kl) / B, e_loss);

    /* Logits (the last ConvTranspose2d's output) against recon_logits: abs 1e-5 * max(1, |v|). */
    const float *out = m.act[m.n_enc + m.n_dec];
    double dlog = 0;
    snprintf(label, sizeof label, "/%s recon_logits", gname);
    for (size_t i = 0; i < nx; i++) {
        CHECK_CLOSE(label, out[i], logits[i], 1e-5, 1e-5);
        dlog = fmax(dlog, fabs(out[i] - logits[i]));
    }

    /* mu and logvar from the encoder: absolute 1e-5. */
    const float *mulv = vae_model_encode(&m, (int)B);
    double dmu = 0;
    snprintf(label, sizeof label, "/%s mu", gname);
    for (size_t r = 0; r < (size_t)B; r++)
        for (size_t j = 0; j < (size_t)Z; j++) {
            CHECK_CLOSE(label, mulv[r * 2 * Z + j], mu[r * Z + j], 0, 1e-5);
            dmu = fmax(dmu, fabs(mulv[r * 2 * Z + j] - mu[r * Z + j]));
        }
    snprintf(label, sizeof label, "/%s logvar", gname);
    for (size_t r = 0; r < (size_t)B; r++)
        for (size_t j = 0; j < (size_t)Z; j++) {
            CHECK_CLOSE(label, mulv[r * 2 * Z + Z + j], lv[r * Z + j], 0, 1e-5);
            dmu = fmax(dmu, fabs(mulv[r * 2 * Z + Z + j] - lv[r * Z + j]));
        }

    /* Every parameter gradient: max |ours - torch| <= 1e-4 * max |torch| over the tensor. */
    double worst = 0;
    const char *worst_name = "";
    for (int i = 0; i < m.n_tensors; i++) {
        const vae_tensor *t = &m.tensors[i];
        double *ref = malloc(t->numel * sizeof(double));
        snprintf(path, sizeof path, "grads/%s", t->name);
        int rrc = read_dset(g, path, H5T_NATIVE_DOUBLE, ref, t->numel);
        CHECK_EQ(rrc, 0);
        if (!rrc) {
            double gmax = 0, dmax = 0;
            for (size_t j = 0; j < t->numel; j++) {
                gmax = fmax(gmax, fabs(ref[j]));
                dmax = fmax(dmax, fabs(m.grads[t->offset + j] - ref[j]));
            }
            snprintf(label, sizeof label, "/%s grads/%s (max |diff| vs 1e-4 max |grad|)", gname, t->name);
            CHECK_CMP_DBL(gmax, >, 0.0);
            CHECK_CLOSE(label, dmax, 0.0, 0, 1e-4 * gmax);
            if (gmax > 0 && dmax / gmax > worst) {
                worst = dmax / gmax;
                worst_name = t->name;
            }
        }
        free(ref);
    }
    printf("/%s: max |diff| logits %.3g, mu/logvar %.3g; largest gradient difference %.3g of the "
           "tensor's max |grad| (%s)\n", gname, dlog, dmu, worst, worst_name);

    free(eps);
    free(mu);
    free(lv);
    free(logits);
    vae_model_free(&m);
    H5Gclose(g);
}

static void test_fixture(const char *path)
{
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) fprintf(stderr, "cannot open fixture '%s'\n", path);
    CHECK(f >= 0);
    if (f < 0) return;
    fixture_case(f, "bce");
    fixture_case(f, "mse");
    fixture_case(f, "one");
    H5Fclose(f);
}

/* ---------------------------------------------------------------------- (c) sizes the strides do not divide */

/* vae_arch_check's status, with the message it reports kept in msg (not printed). */
static int arch_check_quiet(const vae_arch *a, char *msg, size_t len)
{
    msg[0] = '\0';
    vae_defer_begin();
    int rc = vae_arch_check(a);
    vae_defer_take(msg, len);
    vae_defer_end(0);
    return rc;
}

static void test_arch_check(void)
{
    char msg[2048];
    /* 3 stride-2 layers need H and W divisible by 8: 12x12 is refused. */
    vae_arch a = conv_arch(1, 12, 12, 3, (int[]){ 4, 8, 16 }, 4, VAE_LOSS_BCE);
    int rc = arch_check_quiet(&a, msg, sizeof msg);
    CHECK_CMP_INT(rc, !=, 0);
    printf("vae_arch_check(1x12x12, 3 conv layers): status %d, message: %s\n", rc, msg);
    /* The message names the data's size, the divisor, and sizes that work (8 and 16). */
    CHECK(strstr(msg, "12x12") != NULL);
    CHECK(strstr(msg, "8") != NULL);
    CHECK(strstr(msg, "16") != NULL);
    /* vae_model_init refuses it the same way and leaves a model that is safe to free. */
    vae_model m;
    vae_defer_begin();
    rc = vae_model_init(&m, &a, 2);
    vae_defer_end(0);
    CHECK_CMP_INT(rc, !=, 0);
    vae_model_free(&m);
    /* One size wrong is enough: 16x12 with 3 layers. */
    a.Hh = 16;
    CHECK_CMP_INT(arch_check_quiet(&a, msg, sizeof msg), !=, 0);
    CHECK(strstr(msg, "16x12") != NULL);
    /* Sizes the strides divide are accepted: 16x8 with 3 layers, 12x12 with 2. */
    a.W = 8;
    CHECK_EQ(arch_check_quiet(&a, msg, sizeof msg), 0);
    a = conv_arch(1, 12, 12, 2, (int[]){ 4, 8 }, 4, VAE_LOSS_BCE);
    CHECK_EQ(arch_check_quiet(&a, msg, sizeof msg), 0);
}

/* ---------------------------------------------------------------------- (d) FLOPs */

/*
 * The default conv model, 1x28x28, channels 32,64, Z 16. Forward
 * multiply-adds (MACs) per sample, by layer (kernel 4x4 = 16 taps; a Conv2d
 * costs out-pixels x Cout x Cin x 16, a ConvTranspose2d in-pixels x Cin x
 * Cout x 16):
 *   enc.0  Conv2d(1,32)          28->14: 14*14 * 32 * 1 * 16  =   100352
 *   enc.2  Conv2d(32,64)         14->7 :  7*7 * 64 * 32 * 16  =  1605632
 *   fc_mu + fc_logvar  Linear(64*7*7 = 3136, 2*16)            =   100352
 *   fc_dec Linear(16, 3136)                                   =    50176
 *   dec.0  ConvTranspose2d(64,32) 7->14:  7*7 * 64 * 32 * 16  =  1605632
 *   dec.2  ConvTranspose2d(32,1) 14->28: 14*14 * 32 * 1 * 16  =   100352
 *   total forward                                               3562496
 * A training step costs each layer's forward, its weight gradient and its
 * input gradient (the same MACs each, x3), except that the first layer
 * (enc.0) needs no input gradient (x2): 3 * 3562496 - 100352 = 10587136
 * MACs, i.e. 2 * 10587136 = 21174272 FLOPs per sample.
 */
static void test_flops(void)
{
    vae_arch a = conv_arch(1, 28, 28, 2, (int[]){ 32, 64 }, 16, VAE_LOSS_BCE);
    vae_model m;
    int rc = vae_model_init(&m, &a, 1);
    CHECK_EQ(rc, 0);
    if (rc) return;
    const double fwd = 100352.0 + 1605632.0 + 100352.0 + 50176.0 + 1605632.0 + 100352.0;
    CHECK_CMP_DBL(fwd, ==, 3562496.0);
    const double want = 2.0 * (3.0 * fwd - 100352.0);
    CHECK_CMP_DBL(want, ==, 21174272.0);
    double got = vae_model_flops_per_sample(&m);
    CHECK_CMP_DBL(got, ==, want);
    printf("flops per sample, default conv model 1x28x28 [32,64] Z 16: %.0f (by hand %.0f)\n", got, want);
    vae_model_free(&m);
}

/* ---------------------------------------------------------------------- main */

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s FIXTURE.h5 (tests/fixtures/conv_fixture.h5)\n", argv[0]);
        return 2;
    }
    test_fd();
    test_fixture(argv[1]);
    test_arch_check();
    test_flops();
    printf("test_conv_model: %d checks, %d failed\n", g_checks, g_failures);
    return g_failures ? 1 : 0;
}
