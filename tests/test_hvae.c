/*
 * test_hvae.c: the hierarchical VAE (--model hvae, src/family_hvae.c).
 *
 * (a) Finite differences of the whole model against its backward pass, for
 *     every tensor (model_check.h's check): both posteriors (residual and
 *     merge), bce and mse, with and without noise, odd image sizes (the up
 *     convolutions' output padding), scales without groups, and channel
 *     counts on both sides of the conv ops' lowering switch (8).
 * (b) The PyTorch twin's fixture (tests/pytorch/make_fixture_hvae.py over
 *     tests/pytorch/hvae_model.py, float64): the loss terms and every
 *     gradient of one batch, and the log importance weights of each row (the
 *     logits, internal to the model, enter through the reconstruction term).
 * (d) --free-bits with the floor between the rows' KLs: finite differences
 *     of recon + beta * sum over groups and rows of max(KL, F).
 * (c) The architecture checks and the terms.
 */
#define _POSIX_C_SOURCE 200809L
#include "mpivae/model.h"
#include "mpivae/rng.h"
#include "mpivae/status.h"

#include "model_check.h"

static vae_arch hvae_arch(int C, int Hh, int W, int n, const int *ch, const int *groups, int Zc, int loss, int post)
{
    vae_arch a;
    memset(&a, 0, sizeof a);
    a.kind = VAE_MODEL_HVAE;
    a.C = C;
    a.Hh = Hh;
    a.W = W;
    a.n_hidden = a.n_groups = n;
    for (int i = 0; i < n; i++) {
        a.hidden[i] = ch[i];
        a.groups[i] = groups[i];
    }
    a.latent = Zc;
    a.loss = loss;
    a.posterior = post;
    return a;
}

static void test_fd(void)
{
    /* Small images: a bias moves every position's ReLUs, and fewer positions cross fewer kinks. */
    vae_arch a = hvae_arch(1, 4, 4, 2, (int[]){ 3, 4 }, (int[]){ 1, 1 }, 2, VAE_LOSS_BCE, VAE_POSTERIOR_RESIDUAL);
    fd_check_model("hvae 1x4x4 [3,4] groups [1,1] residual bce B 2", &a, 3, 2, 1.0f, 1, 31);
    fd_check_model("hvae 1x4x4 [3,4] groups [1,1] residual bce B 1 eps NULL", &a, 2, 1, 1.0f, 0, 32);
    a = hvae_arch(1, 4, 4, 2, (int[]){ 3, 4 }, (int[]){ 1, 1 }, 2, VAE_LOSS_BCE, VAE_POSTERIOR_MERGE);
    fd_check_model("hvae 1x4x4 [3,4] groups [1,1] merge bce B 2", &a, 2, 2, 1.0f, 1, 33);
    a = hvae_arch(2, 5, 5, 3, (int[]){ 3, 4, 5 }, (int[]){ 1, 0, 2 }, 2, VAE_LOSS_MSE, VAE_POSTERIOR_RESIDUAL);
    fd_check_model("hvae 2x5x5 [3,4,5] groups [1,0,2] residual mse beta 0.5 B 1", &a, 2, 1, 0.5f, 1, 34);
    a = hvae_arch(1, 4, 4, 2, (int[]){ 8, 9 }, (int[]){ 1, 1 }, 3, VAE_LOSS_BCE, VAE_POSTERIOR_MERGE);
    fd_check_model("hvae 1x4x4 [8,9] groups [1,1] merge bce B 1", &a, 2, 1, 1.0f, 1, 38);
    /* 18 latent channels: the latent code's blocks of 16 channels, and a tail */
    a = hvae_arch(1, 3, 3, 2, (int[]){ 3, 4 }, (int[]){ 1, 1 }, 18, VAE_LOSS_BCE, VAE_POSTERIOR_RESIDUAL);
    fd_check_model("hvae 1x3x3 [3,4] groups [1,1] latent 18 residual bce B 2", &a, 2, 2, 1.0f, 1, 39);
    a.posterior = VAE_POSTERIOR_MERGE;
    fd_check_model("hvae 1x3x3 [3,4] groups [1,1] latent 18 merge bce B 1", &a, 2, 1, 1.0f, 1, 40);
}

/* (b) One case of the PyTorch fixture: terms, every gradient, the log weights. */
static void fixture_case(hid_t file, const char *gname)
{
    char label[160], loss[16] = "", post[16] = "", path[VAE_NAME_LEN + 16];
    hid_t g = H5Gopen2(file, gname, H5P_DEFAULT);
    CHECK(g >= 0);
    if (g < 0) return;
    long long C = 0, Hh = 0, W = 0, B = 0, Zc = 0, hid[VAE_MAX_HIDDEN], grp[VAE_MAX_HIDDEN];
    double beta = 0;
    CHECK_EQ(read_attr_i64(g, "C", &C) | read_attr_i64(g, "H", &Hh) | read_attr_i64(g, "W", &W), 0);
    CHECK_EQ(read_attr_i64(g, "B", &B) | read_attr_i64(g, "latent", &Zc) | read_attr_f64(g, "beta", &beta), 0);
    CHECK_EQ(read_attr_str(g, "loss", loss, sizeof loss) | read_attr_str(g, "posterior", post, sizeof post), 0);
    int n = read_attr_i64s(g, "hidden", hid, VAE_MAX_HIDDEN);
    CHECK_EQ(read_attr_i64s(g, "groups", grp, VAE_MAX_HIDDEN), n);
    int hi[VAE_MAX_HIDDEN], gi[VAE_MAX_HIDDEN];
    for (int i = 0; i < n; i++) {
        hi[i] = (int)hid[i];
        gi[i] = (int)grp[i];
    }
    vae_arch a = hvae_arch((int)C, (int)Hh, (int)W, n, hi, gi, (int)Zc, strcmp(loss, "mse") ? VAE_LOSS_BCE : VAE_LOSS_MSE,
                           strcmp(post, "merge") ? VAE_POSTERIOR_RESIDUAL : VAE_POSTERIOR_MERGE);
    vae_model m;
    int rc = vae_model_init(&m, &a, (int)B);
    CHECK_EQ(rc, 0);
    if (rc) {
        H5Gclose(g);
        return;
    }
    /* The twin's tensors are exactly the model's: names and shapes (strict loading both ways). */
    static char pnames[VAE_MAX_TENSORS][VAE_NAME_LEN];
    CHECK_EQ(list_group(g, "params", pnames, VAE_MAX_TENSORS), m.n_tensors);
    for (int i = 0; i < m.n_tensors; i++) {
        const vae_tensor *t = &m.tensors[i];
        hsize_t dims[4];
        snprintf(path, sizeof path, "params/%s", t->name);
        int nd = dset_shape(g, path, dims);
        if (nd != t->ndim) fprintf(stderr, "/%s/%s: %d dimensions in the fixture, %d in the model\n", gname, path, nd, t->ndim);
        CHECK_EQ(nd, t->ndim);
        for (int k = 0; k < nd && nd == t->ndim; k++) CHECK_EQ(dims[k], t->shape[k]);
        CHECK_EQ(read_dset(g, path, H5T_NATIVE_FLOAT, m.params + t->offset, t->numel), 0);
    }
    const int K = m.n_latents;
    size_t nx = (size_t)B * m.D, nz = (size_t)B * m.Z;
    float *eps = malloc(nz * sizeof(float));
    double ekl[16], logw_ref[64], logw[64], erecon = 0;
    CHECK_EQ(read_dset(g, "x", H5T_NATIVE_FLOAT, vae_model_input(&m), nx), 0);
    CHECK_EQ(read_dset(g, "eps", H5T_NATIVE_FLOAT, eps, nz), 0);
    CHECK_EQ(read_dset(g, "expected_recon", H5T_NATIVE_DOUBLE, &erecon, 1), 0);
    CHECK_EQ(read_dset(g, "expected_kl", H5T_NATIVE_DOUBLE, ekl, (size_t)K), 0);
    CHECK_EQ(read_dset(g, "logw", H5T_NATIVE_DOUBLE, logw_ref, (size_t)B), 0);

    zero_grads(&m);
    double terms[VAE_MAX_TERMS] = { 0 };
    vae_pass p = { eps, (int)B, (float)beta, -1.0f, 1.0f / (float)B, 1, terms, NULL, 0.0f };
    vae_model_pass(&m, &p);
    snprintf(label, sizeof label, "/%s recon", gname);
    CHECK_CLOSE(label, terms[0] / B, erecon, 1e-5, 0);
    double klsum = 0;
    for (int k = 0; k < K; k++) {
        snprintf(label, sizeof label, "/%s kl%d", gname, k + 1);
        CHECK_CLOSE(label, terms[1 + k] / B, ekl[k], 1e-4, 1e-5);
        klsum += terms[1 + k];
    }
    CHECK_CLOSE("kl (the sum of the groups')", terms[1 + K], klsum, 1e-12, 1e-9);
    printf("/%s: recon %.9g (torch %.9g), kl1 %.9g (torch %.9g), %d groups\n", gname, terms[0] / B, erecon, terms[1] / B,
           ekl[0], K);
    /* Every gradient: max |ours - torch| <= 1e-4 max |torch| over the tensor. */
    const char *worst_name;
    double worst = fixture_check_grads(g, gname, &m, &worst_name);
    /* The log importance weights with the same noise. */
    m.fam->log_weights(&m, eps, (int)B, 0, logw);
    for (int r = 0; r < B; r++) {
        snprintf(label, sizeof label, "/%s logw[%d]", gname, r);
        CHECK_CLOSE(label, logw[r], logw_ref[r], 1e-5, 1e-4);
    }
    /* Every row a copy of the first: the bottom-up path run once (one_row) gives the weights of running it on all. */
    {
        float *xin = vae_model_input(&m), *saved = malloc(nx * sizeof(float));
        memcpy(saved, xin, nx * sizeof(float));
        const size_t D = (size_t)m.D;
        for (int r = 1; r < B; r++) memcpy(xin + (size_t)r * D, xin, D * sizeof(float));
        double all[64], once[64];
        /* one_row first: the buffers still hold the distinct rows' features of the call above. */
        m.fam->log_weights(&m, eps, (int)B, 1, once);
        m.fam->log_weights(&m, eps, (int)B, 0, all);
        for (int r = 0; r < B; r++) {
            snprintf(label, sizeof label, "/%s logw[%d] of copies of row 0, one_row", gname, r);
            CHECK_CLOSE(label, once[r], all[r], 1e-6, 1e-5);
        }
        CHECK(B < 2 || fabs(all[1] - all[0]) > 1e-3); /* the noise differs per copy, so the weights do */
        memcpy(xin, saved, nx * sizeof(float));
        free(saved);
    }
    printf("/%s: largest gradient difference %.3g of the tensor's max |grad|; logw[0] %.9g (torch %.9g)\n", gname, worst,
           logw[0], logw_ref[0]);
    /* encode then decode at the means reproduces the deterministic pass (every z at its mean). */
    vae_pass p0 = { NULL, (int)B, 1.0f, -1.0f, 1.0f, 0, terms, NULL, 0.0f };
    vae_model_pass(&m, &p0);
    float *mulv = encode_mulv(&m, (int)B), *mu = malloc(nz * sizeof(float)), *img = malloc(nx * sizeof(float));
    for (int r = 0; r < B; r++) memcpy(mu + (size_t)r * m.Z, mulv + (size_t)r * 2 * m.Z, (size_t)m.Z * sizeof(float));
    float *x = malloc(nx * sizeof(float));
    memcpy(x, vae_model_input(&m), nx * sizeof(float));
    vae_model_decode(&m, mu, (int)B, img);
    double rec = 0;
    for (size_t i = 0; i < nx; i++)
        rec += a.loss == VAE_LOSS_MSE ? (double)(img[i] - x[i]) * (img[i] - x[i])
                                      : -(x[i] * log((double)img[i]) + (1.0 - x[i]) * log(1.0 - (double)img[i]));
    snprintf(label, sizeof label, "/%s decode(encode mean) against the pass without noise", gname);
    CHECK_CLOSE(label, rec, terms[0], 1e-4, 1e-4);
    free(mulv);
    free(mu);
    free(img);
    free(x);
    free(eps);
    vae_model_free(&m);
    H5Gclose(g);
}

static void test_fixture(const char *path)
{
    static const char *const cases[] = { "residual", "merge", "wide", NULL };
    fixture_run(path, fixture_case, cases);
}

/* (d) --free-bits F with F between the rows' KLs: the gradient of recon + beta * sum_k sum_r max(KL_kr, F). */
static double free_bits_objective(vae_model *m, const float *eps, int B, float F, double *rows)
{
    double terms[VAE_MAX_TERMS];
    vae_pass p = { eps, B, 1.0f, -1.0f, 1.0f, 0, terms, rows, F };
    vae_model_pass(m, &p);
    double L = terms[0];
    for (int k = 0; k < m->n_latents; k++)
        for (int r = 0; r < B; r++) L += fmax(rows[(size_t)(1 + k) * B + r], F);
    return L;
}

static void test_free_bits(void)
{
    enum { B = 4 };
    vae_arch a = hvae_arch(1, 4, 4, 2, (int[]){ 3, 4 }, (int[]){ 1, 1 }, 2, VAE_LOSS_BCE, VAE_POSTERIOR_RESIDUAL);
    vae_model m;
    CHECK_EQ(vae_model_init(&m, &a, B), 0);
    vae_model_init_params(&m, 41);
    float *x = vae_model_input(&m), *eps = malloc((size_t)B * m.Z * sizeof(float));
    for (int i = 0; i < B * m.D; i++) x[i] = uniform(0, 1);
    vae_rng_normal(41, VAE_RNG_EPS, 0, 0, eps, (int64_t)B * m.Z);
    double rows[VAE_MAX_TERMS * B], kl[2 * B];
    free_bits_objective(&m, eps, B, 0.0f, rows);
    for (int i = 0; i < 2 * B; i++) kl[i] = rows[B + i]; /* kl1 then kl2, B rows each */
    /* F: the median of the 8 KLs, so that about half the (group, row) pairs are under the floor */
    for (int i = 0; i < 2 * B; i++)
        for (int j = i + 1; j < 2 * B; j++)
            if (kl[j] < kl[i]) {
                double t = kl[i];
                kl[i] = kl[j];
                kl[j] = t;
            }
    const float F = (float)(0.5 * (kl[B - 1] + kl[B]));
    zero_grads(&m);
    double terms[VAE_MAX_TERMS];
    vae_pass p = { eps, B, 1.0f, -1.0f, 1.0f, 1, terms, NULL, F };
    vae_model_pass(&m, &p);
    float *g = malloc(m.n_params * sizeof(float));
    memcpy(g, m.grads, m.n_params * sizeof(float));
    size_t mask_len = 0;
    for (int i = 0; i < m.n_relu; i++) mask_len += (size_t)B * m.relu_row[i];
    unsigned char *mask0 = malloc(mask_len + 2 * B), *mask1 = malloc(mask_len + 2 * B);
    const double L0 = free_bits_objective(&m, eps, B, F, rows);
    size_t n0 = relu_mask(&m, B, mask0);
    for (int i = 0; i < 2 * B; i++) mask0[n0 + i] = rows[B + i] > F;
    int checked = 0, under = 0;
    for (int i = 0; i < 2 * B; i++) under += !mask0[n0 + i];
    CHECK(under >= 3 && under <= 2 * B - 3);
    const double h = 1e-3, atol = 10 * FLT_EPSILON * fabs(L0) / (2 * h);
    for (int s = 0; s < 60; s++) {
        size_t j = (size_t)(next_u64() % m.n_params);
        float keep = m.params[j], pp = (float)(keep + h), pm = (float)(keep - h);
        m.params[j] = pp;
        double lp = free_bits_objective(&m, eps, B, F, rows);
        size_t n1 = relu_mask(&m, B, mask1);
        for (int i = 0; i < 2 * B; i++) mask1[n1 + i] = rows[B + i] > F;
        int kink = n1 != n0 || memcmp(mask0, mask1, n0 + 2 * B);
        m.params[j] = pm;
        double lm = free_bits_objective(&m, eps, B, F, rows);
        n1 = relu_mask(&m, B, mask1);
        for (int i = 0; i < 2 * B; i++) mask1[n1 + i] = rows[B + i] > F;
        kink |= n1 != n0 || memcmp(mask0, mask1, n0 + 2 * B);
        m.params[j] = keep;
        if (kink) continue;
        CHECK_CLOSE("free bits: d objective / d param", g[j], (lp - lm) / ((double)pp - (double)pm), 2e-2, atol);
        checked++;
    }
    CHECK_CMP_INT(checked, >=, 40);
    printf("free bits %.4g (%d of %d group KLs under it): %d entries checked against finite differences\n", F, under,
           2 * B, checked);
    free(g);
    free(eps);
    free(mask0);
    free(mask1);
    vae_model_free(&m);
}

static void test_arch(void)
{
    char msg[512];
    vae_arch a = hvae_arch(1, 28, 28, 3, (int[]){ 16, 32, 64 }, (int[]){ 0, 2, 2 }, 8, VAE_LOSS_BCE, 0);
    CHECK_EQ(arch_check_quiet(&a, msg, sizeof msg), 0);
    vae_model m;
    CHECK_EQ(vae_model_plan(&m, &a), 0);
    /* recon, a KL per group (top first), and their sum as a reported-only term */
    CHECK_EQ(m.n_terms, 6);
    CHECK(!strcmp(m.terms[1].name, "kl1") && m.terms[1].kind == VAE_TERM_BETA);
    CHECK(!strcmp(m.terms[4].name, "kl4") && m.terms[4].kind == VAE_TERM_BETA);
    CHECK(!strcmp(m.terms[5].name, "kl") && m.terms[5].kind == VAE_TERM_STAT);
    /* the groups: two at 7x7, then two at 14x14, 8 channels each */
    CHECK_EQ(m.n_latents, 4);
    CHECK_EQ(m.latents[0].H, 7);
    CHECK_EQ(m.latents[3].H, 14);
    CHECK_EQ(m.Z, 2 * 8 * 49 + 2 * 8 * 196);
    vae_model_free(&m);
    a.Hh = 27; /* 27x28: 14x14, then 7x7 up to 14x13 and 14x14 at once: no one output padding */
    CHECK_EQ(arch_check_quiet(&a, msg, sizeof msg), VAE_EINVAL);
    CHECK(strstr(msg, "27x28") != NULL);
    a.Hh = 28;
    a.n_groups = 2; /* a count per scale */
    CHECK_EQ(arch_check_quiet(&a, msg, sizeof msg), VAE_EINVAL);
    CHECK(strstr(msg, "--groups has 2 counts") != NULL);
    a = hvae_arch(1, 28, 28, 2, (int[]){ 16, 32 }, (int[]){ 0, 0 }, 8, VAE_LOSS_BCE, 0);
    CHECK_EQ(arch_check_quiet(&a, msg, sizeof msg), VAE_EINVAL);
    CHECK(strstr(msg, "0 latent groups") != NULL);
    a = hvae_arch(1, 28, 28, 2, (int[]){ 16, 32 }, (int[]){ 8, 7 }, 8, VAE_LOSS_BCE, 0);
    CHECK_EQ(arch_check_quiet(&a, msg, sizeof msg), VAE_EINVAL);
    CHECK(strstr(msg, "15 latent groups") != NULL);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s FIXTURE.h5 (tests/fixtures/hvae_fixture.h5)\n", argv[0]);
        return 2;
    }
    test_fd();
    test_fixture(argv[1]);
    test_free_bits();
    test_arch();
    printf("test_hvae: %d checks, %d failed\n", g_checks, g_failures);
    return g_failures ? 1 : 0;
}
