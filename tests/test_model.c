/*
 * test_model.c: tests of model.h and optim.h.
 *
 * (a) Finite differences of the whole model: for each parameter tensor, a few
 *     dozen entries are perturbed by +-h in float and the loss sum
 *     recon + beta * KL (in double, from vae_loss_stats) is compared with the
 *     gradient vae_model_forward_backward adds into m.grads (grad_scale 1).
 *     Models: BCE with beta 1, MSE with beta 0.5, two hidden layers {8,6}
 *     with beta 2, and BCE with eps == NULL (z = mu); input 1x3x4. Also:
 *     the gradient is added (not overwritten) and scales with grad_scale,
 *     the loss does not depend on whether the backward pass runs, and the
 *     per-row terms sum to the totals.
 * (b) The PyTorch fixture (tests/pytorch/make_fixture_mlp.py; path given on
 *     the command line): for /bce, /mse and /deep, the model's tensors have
 *     exactly the fixture's names and shapes; with the fixture's params, x
 *     and eps, the batch-mean losses, mu and logvar, the logits and every
 *     parameter gradient (grad_scale = 1/B) match PyTorch's float64 values.
 * (c) vae_adam_update against PyTorch's Adam formula in double for 3 steps;
 *     subnormal moments (those of weights whose gradient stays zero) are
 *     flushed to zero, parameters keep their values, and the caller's
 *     floating-point mode is put back.
 *
 * The exit code is the verdict.
 */
#include "mpivae/model.h"
#include "mpivae/ops.h"
#include "mpivae/optim.h"
#include "mpivae/rng.h"
#include "mpivae/status.h"

#include <float.h>
#include <hdf5.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model_check.h"

static void test_fd(void)
{
    vae_arch a;
    memset(&a, 0, sizeof a);
    a.kind = VAE_MODEL_MLP;
    a.C = 1;
    a.Hh = 3;
    a.W = 4;
    a.n_hidden = 1;
    a.hidden[0] = 7;
    a.latent = 3;
    a.loss = VAE_LOSS_BCE;
    fd_check_model("mlp bce beta 1", &a, 5, 4, 1.0f, 1, 11);
    fd_check_model("mlp bce beta 1 eps NULL", &a, 4, 4, 1.0f, 0, 12);

    a.loss = VAE_LOSS_MSE;
    a.latent = 2;
    fd_check_model("mlp mse beta 0.5", &a, 3, 3, 0.5f, 1, 13);

    a.loss = VAE_LOSS_BCE;
    a.n_hidden = 2;
    a.hidden[0] = 8;
    a.hidden[1] = 6;
    a.latent = 4;
    fd_check_model("mlp {8,6} bce beta 2", &a, 3, 3, 2.0f, 1, 14);
}

/* ---------------------------------------------------------------------- (b) PyTorch fixture */

static void fixture_case(hid_t file, const char *gname)
{
    char label[160];
    hid_t g = H5Gopen2(file, gname, H5P_DEFAULT);
    CHECK(g >= 0);
    if (g < 0) {
        fprintf(stderr, "fixture has no group '/%s'\n", gname);
        return;
    }
    long long D = 0, Z = 0, B = 0, hid[VAE_MAX_HIDDEN];
    double beta = 0;
    char loss[16] = "";
    CHECK_EQ(read_attr_i64(g, "D", &D), 0);
    CHECK_EQ(read_attr_i64(g, "Z", &Z), 0);
    CHECK_EQ(read_attr_i64(g, "B", &B), 0);
    CHECK_EQ(read_attr_f64(g, "beta", &beta), 0);
    CHECK_EQ(read_attr_str(g, "loss", loss, sizeof loss), 0);
    int nh = read_attr_i64s(g, "hidden", hid, VAE_MAX_HIDDEN);
    CHECK_CMP_INT(nh, >=, 1);
    CHECK(strcmp(loss, "bce") == 0 || strcmp(loss, "mse") == 0);
    if (nh < 1 || D < 1 || Z < 1 || B < 1) {
        H5Gclose(g);
        return;
    }

    vae_arch a;
    memset(&a, 0, sizeof a);
    a.kind = VAE_MODEL_MLP;
    a.C = 1;
    a.Hh = 1;
    a.W = (int)D;
    a.n_hidden = nh;
    for (int i = 0; i < nh; i++) a.hidden[i] = (int)hid[i];
    a.latent = (int)Z;
    a.loss = strcmp(loss, "mse") == 0 ? VAE_LOSS_MSE : VAE_LOSS_BCE;
    vae_model m;
    int rc = vae_model_init(&m, &a, (int)B);
    CHECK_EQ(rc, 0);
    if (rc) {
        H5Gclose(g);
        return;
    }

    /* The model's tensors are exactly the fixture's params: same names, same shapes. */
    static char pnames[VAE_MAX_TENSORS][VAE_NAME_LEN], gnames[VAE_MAX_TENSORS][VAE_NAME_LEN];
    int np = list_group(g, "params", pnames, VAE_MAX_TENSORS);
    int ng = list_group(g, "grads", gnames, VAE_MAX_TENSORS);
    CHECK_EQ(np, m.n_tensors);
    CHECK_EQ(ng, m.n_tensors);
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
        for (int k = 0; k < nd && k < t->ndim; k++) CHECK_EQ(dims[k], t->shape[k]);
    }
    for (int i = 0; i < m.n_tensors; i++) {
        int found = 0;
        for (int k = 0; k < np; k++) found |= strcmp(pnames[k], m.tensors[i].name) == 0;
        if (!found) fprintf(stderr, "/%s/params lacks the model's tensor '%s'\n", gname, m.tensors[i].name);
        CHECK(found);
    }
    CHECK(vae_model_find(&m, "no.such.tensor") == NULL);

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

    /* Logits (the decoder's last layer output) against recon_logits: abs 1e-5 * max(1, |v|). */
    const float *out = m.act[m.n_enc + m.n_dec];
    snprintf(label, sizeof label, "/%s recon_logits", gname);
    for (size_t i = 0; i < nx; i++) CHECK_CLOSE(label, out[i], logits[i], 1e-5, 1e-5);

    /* mu and logvar from the encoder: absolute 1e-5. */
    float *mulv = encode_mulv(&m, (int)B);
    snprintf(label, sizeof label, "/%s mu", gname);
    for (size_t r = 0; r < (size_t)B; r++)
        for (size_t j = 0; j < (size_t)Z; j++) CHECK_CLOSE(label, mulv[r * 2 * Z + j], mu[r * Z + j], 0, 1e-5);
    snprintf(label, sizeof label, "/%s logvar", gname);
    for (size_t r = 0; r < (size_t)B; r++)
        for (size_t j = 0; j < (size_t)Z; j++)
            CHECK_CLOSE(label, mulv[r * 2 * Z + Z + j], lv[r * Z + j], 0, 1e-5);

    free(mulv);

    /* Every parameter gradient: max |ours - torch| <= 1e-4 * max |torch| over the tensor. */
    const char *worst_name;
    fixture_check_grads(g, gname, &m, &worst_name);

    free(eps);
    free(mu);
    free(lv);
    free(logits);
    vae_model_free(&m);
    H5Gclose(g);
}

static void test_fixture(const char *path)
{
    static const char *const cases[] = { "bce", "mse", "deep", NULL };
    fixture_run(path, fixture_case, cases);
}

/* ---------------------------------------------------------------------- (c) Adam */

/*
 * PyTorch's Adam (torch.optim.Adam, no weight decay, no amsgrad) in double:
 *   m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
 *   p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
 * with the float hyperparameters the library gets, widened to double.
 */
static void test_adam_case(const vae_adam *h, const char *name)
{
    enum { N = 9, T = 3 };
    float p[N], m[N], v[N];
    double pd[N], md[N], vd[N], upd_abs[N];
    /* Gradients per step: mixed signs and magnitudes, a zero, and tiny ones that meet eps. */
    static const float gs[T][N] = {
        { 0.5f, -1.25f, 3e-3f, 0.0f, 2.0f, -7.0f, 1e-7f, -1e-7f, 0.1f },
        { -0.25f, -1.0f, 4e-3f, 0.0f, -2.0f, 6.5f, 2e-7f, 1e-7f, 0.1f },
        { 0.75f, 0.5f, -1e-3f, 1.0f, 1.0f, 0.0f, -1e-7f, 3e-7f, 0.1f },
    };
    for (int i = 0; i < N; i++) {
        p[i] = uniform(-1, 1);
        pd[i] = p[i];
        m[i] = v[i] = 0.0f;
        md[i] = vd[i] = 0.0;
        upd_abs[i] = 0.0;
    }
    const double b1 = h->beta1, b2 = h->beta2, lr = h->lr, eps = h->eps;
    char label[96];
    for (int t = 1; t <= T; t++) {
        vae_adam_update(p, gs[t - 1], m, v, N, h, t);
        for (int i = 0; i < N; i++) {
            double g = gs[t - 1][i];
            md[i] = b1 * md[i] + (1 - b1) * g;
            vd[i] = b2 * vd[i] + (1 - b2) * g * g;
            double upd = lr / (1 - pow(b1, t)) * md[i] / (sqrt(vd[i]) / sqrt(1 - pow(b2, t)) + eps);
            pd[i] -= upd;
            upd_abs[i] += fabs(upd);
            /*
             * Moments: a few float roundings per step, relative 1e-6. Parameters:
             * p is rounded to float every step (half an ulp, FLT_EPSILON |p| per
             * step to be safe), plus a relative 1e-4 of the updates so far: the
             * library forms the bias correction 1 - b2^t in float, which loses
             * digits to cancellation (about FLT_EPSILON / (1 - b2^t), 6e-5 at
             * t = 2 with b2 = 0.999), halved by the square root.
             */
            snprintf(label, sizeof label, "adam %s step %d m[%d]", name, t, i);
            CHECK_CLOSE(label, m[i], md[i], 1e-6, 1e-30);
            snprintf(label, sizeof label, "adam %s step %d v[%d]", name, t, i);
            CHECK_CLOSE(label, v[i], vd[i], 1e-6, 1e-30);
            snprintf(label, sizeof label, "adam %s step %d p[%d]", name, t, i);
            CHECK_CLOSE(label, p[i], pd[i], 0,
                        t * FLT_EPSILON * (fabs(pd[i]) + 1e-3) + 1e-4 * upd_abs[i]);
        }
    }
    /* The steps are not vacuous: every entry with a gradient moved by a visible amount. */
    for (int i = 0; i < N; i++)
        if (i != 3) CHECK_CMP_DBL(upd_abs[i], >, 1e-3 * lr);
}

static void test_adam(void)
{
    vae_adam h = { 1e-3f, 0.9f, 0.999f, 1e-8f, 1.0f }; /* PyTorch's defaults */
    test_adam_case(&h, "defaults");
    vae_adam h2 = { 0.05f, 0.8f, 0.99f, 1e-6f, 1.0f }; /* large steps, eps comparable to tiny grads */
    test_adam_case(&h2, "lr 0.05");

    /*
     * --clip's gradient scale: Adam with gscale s on g equals Adam on g * s
     * (a power of two, so the product is exact), bit for bit, and differs
     * from Adam on g.
     */
    {
        enum { N = 5 };
        float p1[N], p2[N], p3[N], m1[N] = { 0 }, m2[N] = { 0 }, m3[N] = { 0 }, v1[N] = { 0 }, v2[N] = { 0 }, v3[N] = { 0 };
        static const float g[N] = { 0.5f, -1.25f, 3e-3f, 2.0f, -7.0f };
        float gh[N];
        for (int i = 0; i < N; i++) {
            p1[i] = p2[i] = p3[i] = uniform(-1, 1);
            gh[i] = g[i] * 0.25f;
        }
        vae_adam hs = { 1e-3f, 0.9f, 0.999f, 1e-8f, 0.25f }, h1 = { 1e-3f, 0.9f, 0.999f, 1e-8f, 1.0f };
        for (int t = 1; t <= 3; t++) {
            vae_adam_update(p1, g, m1, v1, N, &hs, t);
            vae_adam_update(p2, gh, m2, v2, N, &h1, t);
            vae_adam_update(p3, g, m3, v3, N, &h1, t);
        }
        CHECK(memcmp(p1, p2, sizeof p1) == 0 && memcmp(m1, m2, sizeof m1) == 0 && memcmp(v1, v2, sizeof v1) == 0);
        CHECK(memcmp(m1, m3, sizeof m1) != 0);
    }

    /* vae_sumsq in double. */
    /* 3e-20 squared underflows a float and 1e20 squared overflows one. */
    float g[5] = { 1.0f, -2.0f, 0.5f, 3e-20f, 1e20f };
    CHECK_CMP_DBL(vae_sumsq(g, 4), ==, 1.0 + 4.0 + 0.25 + (double)3e-20f * (double)3e-20f);
    CHECK_CMP_DBL(vae_sumsq(g + 4, 1), ==, (double)1e20f * (double)1e20f);
    CHECK_CMP_DBL(vae_sumsq(g, 0), ==, 0.0);
    /* Longer vectors (any blocking plus a tail): relative 1e-14 of the plain double sum. */
    float gl[29];
    for (int n = 1; n <= 29; n++) {
        double ref = 0;
        for (int i = 0; i < n; i++) {
            gl[i] = uniform(-3, 3);
            ref += (double)gl[i] * gl[i];
        }
        CHECK_CLOSE("vae_sumsq", vae_sumsq(gl, (size_t)n), ref, 1e-14, 0);
    }
}

/* Adam that clears its gradients, and the gradient norm in blocks split anywhere. */
static void test_adam_clear_and_blocks(void)
{
    enum { N = 3 * VAE_NORM_BLOCK + 77 };
    float *g = malloc(N * sizeof(float)), *g2 = malloc(N * sizeof(float));
    float *p1 = malloc(N * sizeof(float)), *p2 = malloc(N * sizeof(float));
    float *m1 = calloc(N, sizeof(float)), *m2 = calloc(N, sizeof(float));
    float *v1 = calloc(N, sizeof(float)), *v2 = calloc(N, sizeof(float));
    for (int i = 0; i < N; i++) {
        g[i] = g2[i] = uniform(-1, 1);
        p1[i] = p2[i] = uniform(-1, 1);
    }
    vae_adam h = { 1e-3f, 0.9f, 0.999f, 1e-8f, 1.0f };
    vae_adam_update(p1, g, m1, v1, N, &h, 1);
    vae_adam_update_clear(p2, g2, m2, v2, N / 2, &h, 1);
    vae_adam_update_clear(p2 + N / 2, g2 + N / 2, m2 + N / 2, v2 + N / 2, N - N / 2, &h, 1);
    CHECK(memcmp(p1, p2, N * sizeof(float)) == 0);
    CHECK(memcmp(m1, m2, N * sizeof(float)) == 0);
    CHECK(memcmp(v1, v2, N * sizeof(float)) == 0);
    size_t nz = 0;
    for (int i = 0; i < N; i++) nz += g2[i] != 0.0f;
    CHECK_CMP_INT(nz, ==, 0);
    /* Blocks: 4 of them; parts filled in two calls equal parts filled in one. */
    size_t nb = vae_norm_nblocks(N);
    CHECK_CMP_INT(nb, ==, 4);
    double a[4], b[4];
    vae_sumsq_blocks(g, N, 0, nb, a);
    vae_sumsq_blocks(g, N, 0, 1, b);
    vae_sumsq_blocks(g, N, 1, nb, b);
    CHECK(memcmp(a, b, sizeof a) == 0);
    CHECK_CMP_DBL(a[3], ==, vae_sumsq(g + 3 * VAE_NORM_BLOCK, 77));
    double plain = 0;
    for (int i = 0; i < N; i++) plain += (double)g[i] * g[i];
    CHECK_CLOSE("blocked sum of squares", vae_sum_parts(a, nb), plain, 1e-13, 0);
    free(g);
    free(g2);
    free(p1);
    free(p2);
    free(m1);
    free(m2);
    free(v1);
    free(v2);
}

/* The fused add, clear and square equals the add followed by vae_sumsq, bit for bit. */
static void test_add_clear_sumsq(void)
{
    enum { N = 1000 };
    float a[N], b[N], ref[N];
    const size_t cases[][2] = { { 1000, 1000 }, { 1000, 995 }, { 77, 31 }, { 64, 64 }, { 40, 0 }, { 0, 0 } };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        size_t n = cases[c][0], m = cases[c][1];
        for (size_t i = 0; i < N; i++) {
            a[i] = uniform(-2, 2);
            b[i] = uniform(-2, 2);
            ref[i] = i < n ? a[i] + b[i] : a[i];
        }
        double got = vae_add_clear_sumsq(a, b, n, m);
        CHECK(memcmp(a, ref, sizeof a) == 0);
        size_t nz = 0;
        for (size_t i = 0; i < n; i++) nz += b[i] != 0.0f;
        CHECK_CMP_INT(nz, ==, 0);
        double want = vae_sumsq(ref, m);
        CHECK(memcmp(&got, &want, sizeof got) == 0);
    }
}

/* Subnormal moments become 0 (optim.c: the slow path they cost every step), nothing else changes. */
static void test_adam_subnormal(void)
{
    enum { N = 6 };
    const float sub = 4 * FLT_TRUE_MIN; /* 0.9 * sub rounds back to sub */
    float p[N] = { 0.5f, -0.25f, 0.75f, 1.0f, 0.125f, 2.0f };
    float g[N] = { 0.0f, 0.0f, 0.0f, 1e-21f, 0.0f, 0.5f }; /* g[3]^2 is subnormal */
    float m[N] = { sub, -1e-39f, 1e-30f, 0.0f, 0.0f, 0.0f };
    float v[N] = { sub, 1e-39f, 1e-30f, 0.0f, 1e-39f, 0.0f };
    float p0[N], m0[N], v0[N];
    memcpy(p0, p, sizeof p);
    memcpy(m0, m, sizeof m);
    memcpy(v0, v, sizeof v);
    vae_adam h = { 1e-3f, 0.9f, 0.999f, 1e-8f, 1.0f };
    vae_adam_update(p, g, m, v, N, &h, 7);
    /* Subnormal moments and a subnormal (1 - b2) g^2 are flushed (where the build flushes, optim.h). */
    if (VAE_ADAM_FTZ) {
        CHECK_CMP_DBL(m[0], ==, 0.0);
        CHECK_CMP_DBL(v[0], ==, 0.0);
        CHECK_CMP_DBL(m[1], ==, 0.0);
        CHECK_CMP_DBL(v[1], ==, 0.0);
        CHECK_CMP_DBL(v[3], ==, 0.0);
        CHECK_CMP_DBL(v[4], ==, 0.0);
    }
    /* Normal ones decay as before; parameters whose step is below their last place keep their values. */
    CHECK_CMP_DBL(m[2], ==, (double)(0.9f * m0[2]));
    CHECK_CMP_DBL(v[2], ==, (double)(0.999f * v0[2]));
    for (int i = 0; i < 5; i++) CHECK_CMP_DBL(p[i], ==, (double)p0[i]);
    CHECK_CMP_DBL(m[3], ==, (double)((1.0f - 0.9f) * g[3]));
    /* An ordinary entry moves by about lr (the first steps of Adam move each parameter by ~lr). */
    CHECK(p[5] < p0[5] && p[5] > p0[5] - 0.01f);
    /* The caller's mode is back: a subnormal product is not flushed here. */
    volatile float x = FLT_MIN;
    volatile float y = x * 0.5f;
    CHECK(y != 0.0f);
}

/* ---------------------------------------------------------------------- main */

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s FIXTURE.h5 (tests/fixtures/mlp_fixture.h5)\n", argv[0]);
        return 2;
    }
    test_fd();
    test_fixture(argv[1]);
    test_adam();
    test_adam_clear_and_blocks();
    test_adam_subnormal();
    test_add_clear_sumsq();
    printf("test_model: %d checks, %d failed\n", g_checks, g_failures);
    return g_failures ? 1 : 0;
}
