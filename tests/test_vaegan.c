/*
 * test_vaegan.c: the VAE-GAN family (family_vaegan.c).
 *
 * (a) Finite differences in double of each network's objective, through the
 *     whole C model: the gradient of every sampled entry of the groups
 *       enc  against  d(beta kl + llike)
 *       dec  against  d(gamma llike + gen)
 *       disc against  d(dis_real + dis_fake)
 *     (each objective from the terms of a forward pass), over bce and mse,
 *     both --gen-loss, a feature layer below the last, eps and eps == NULL.
 *     The pass adds into the gradient block (1 + 0.5 = 1.5 times), and the
 *     per-row terms sum to the terms.
 * (b) Larsen's equilibrium rule (select_groups) on chosen means.
 * (c) The PyTorch twin's fixture (tests/pytorch/make_fixture_vaegan.py):
 *     every term and every gradient of the three groups, within 1e-4 of each
 *     tensor's largest value. What must not reach a network: the fixture's
 *     d dis_fake / d enc and d llike / d disc are above that tolerance on
 *     most tensors, so an encoder gradient that took in the GAN loss, or a
 *     discriminator gradient that took in llike, would fail the comparison.
 *
 * Usage: test_vaegan FIXTURE.h5
 */
#define _POSIX_C_SOURCE 200809L
#include "mpivae/family.h"
#include "mpivae/model.h"
#include "mpivae/rng.h"

#define TEST_SEED 0x5EEDFACEull
/* This test uses a part of the shared helpers. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#include "model_check.h"
#pragma GCC diagnostic pop

enum { T_RECON, T_KL, T_LLIKE, T_DREAL, T_DFAKE, T_GEN, T_DX, T_DREC, T_DPRIOR, N_TERMS };
enum { OBJ_ENC, OBJ_DEC, OBJ_DISC };
enum { G_DEC_IDX = 1 }; /* the groups: enc, dec, disc */

static vae_arch small_arch(int loss, int gen_loss, int feature_layer)
{
    vae_arch a;
    memset(&a, 0, sizeof a);
    a.kind = VAE_MODEL_VAEGAN;
    a.C = 1;
    a.Hh = 8;
    a.W = 8;
    a.n_hidden = 2;
    a.hidden[0] = 3;
    a.hidden[1] = 4;
    a.latent = 3;
    a.loss = loss;
    a.n_disc = 2;
    a.disc[0] = 4;
    a.disc[1] = 9; /* >= 8 channels: the channels-last layout before dis_fc */
    a.feature_layer = feature_layer;
    a.gen_loss = gen_loss;
    a.gamma = 0.7;
    a.eq_margin = 0.35;
    return a;
}

static void terms_of(vae_model *m, const float *eps, int B, float beta, double *t, int backward, float gs)
{
    vae_pass p = { eps, B, beta, -1.0f, gs, backward, t, NULL, 0.0f };
    vae_model_pass(m, &p);
}

static double objective(const double *t, int which, float beta, double gamma)
{
    switch (which) {
    case OBJ_ENC: return beta * t[T_KL] + t[T_LLIKE];
    case OBJ_DEC: return gamma * t[T_LLIKE] + t[T_GEN];
    default: return t[T_DREAL] + t[T_DFAKE];
    }
}

/* Which group a tensor is in. */
static int group_of(const vae_model *m, const vae_tensor *t)
{
    for (int g = 0; g < m->n_groups; g++)
        if (t->offset >= m->groups[g].lo && t->offset < m->groups[g].hi) return g;
    return -1;
}

static void fd_case(const char *name, const vae_arch *a, int use_eps)
{
    const int B = 3;
    const float beta = 0.8f;
    vae_model m;
    int rc = vae_model_init(&m, a, 4);
    CHECK_EQ(rc, 0);
    if (rc) return;
    CHECK_EQ(m.n_groups, 3);
    CHECK_EQ(m.n_terms, N_TERMS);
    CHECK_EQ(m.noise_dim, 2 * m.Z);
    CHECK(!strcmp(m.groups[0].name, "enc") && !strcmp(m.groups[1].name, "dec") && !strcmp(m.groups[2].name, "disc"));
    vae_model_init_params(&m, 77);
    /* Larger weights than the default init, so every term has a gradient well above rounding. */
    for (size_t j = 0; j < m.n_params; j++) m.params[j] *= 2.0f;
    float *x = vae_model_input(&m);
    for (int i = 0; i < B * m.D; i++) x[i] = a->loss == VAE_LOSS_BCE ? uniform(0, 1) : uniform(-1, 1);
    float *eps = malloc((size_t)B * m.noise_dim * sizeof(float));
    vae_rng_normal(5, VAE_RNG_EPS, 0, 0, eps, (int64_t)B * m.noise_dim);
    const float *e = use_eps ? eps : NULL;

    size_t mask_len = 1;
    for (int i = 0; i < m.n_enc + m.n_dec; i++) mask_len += (size_t)B * m.layers[i].out;
    for (int i = 0; i < m.n_relu; i++) mask_len += (size_t)B * m.relu_row[i];
    unsigned char *mask0 = malloc(mask_len), *mask1 = malloc(mask_len);

    double t0[VAE_MAX_TERMS] = { 0 }, rows[N_TERMS * 3];
    zero_grads(&m);
    vae_pass p = { e, B, beta, -1.0f, 1.0f, 1, t0, rows, 0.0f };
    vae_model_pass(&m, &p);
    size_t nmask = relu_mask(&m, B, mask0);
    for (int t = 0; t < N_TERMS; t++) {
        CHECK(isfinite(t0[t]));
        double s = 0;
        for (int r = 0; r < B; r++) s += rows[t * B + r];
        CHECK_CLOSE(name, s, t0[t], 1e-12, 1e-12);
    }
    CHECK_CMP_DBL(t0[T_LLIKE], >, 0.0);
    /* The forward pass alone gives the same terms. */
    double t1[VAE_MAX_TERMS] = { 0 };
    terms_of(&m, e, B, beta, t1, 0, 1.0f);
    for (int t = 0; t < N_TERMS; t++) CHECK_CMP_DBL(t1[t], ==, t0[t]);
    float *g = malloc(m.n_params * sizeof(float));
    memcpy(g, m.grads, m.n_params * sizeof(float));

    static const double hs[4] = { 1e-2, 3e-3, 1e-3, 3e-4 };
    const int own[3] = { OBJ_ENC, OBJ_DEC, OBJ_DISC };
    /* The scale of each group's objective, for the rounding part of the tolerance. */
    const double scale[3] = { beta * fabs(t0[T_KL]) + fabs(t0[T_LLIKE]), a->gamma * fabs(t0[T_LLIKE]) + fabs(t0[T_GEN]),
                              fabs(t0[T_DREAL]) + fabs(t0[T_DFAKE]) };
    int checked = 0, skipped = 0;
    double worst = 0;
    char label[160];
    for (int ti = 0; ti < m.n_tensors; ti++) {
        const vae_tensor *T = &m.tensors[ti];
        int grp = group_of(&m, T);
        CHECK(grp >= 0);
        snprintf(label, sizeof label, "%s: %s (group %s)", name, T->name, grp >= 0 ? m.groups[grp].name : "?");
        size_t ns = T->numel < 24 ? T->numel : 24;
        int t_checked = 0;
        double gmax = 0;
        for (size_t j = 0; j < T->numel; j++) gmax = fmax(gmax, fabs(g[T->offset + j]));
        for (size_t s = 0; s < ns; s++) {
            size_t j = ns == T->numel ? s : (size_t)(next_u64() % T->numel);
            float *pp = &m.params[T->offset + j], keep = *pp;
            int done = 0;
            for (int hi = 0; hi < 4 && !done; hi++) {
                double h = hs[hi], tp[VAE_MAX_TERMS], tm[VAE_MAX_TERMS];
                float vp = (float)(keep + h), vm = (float)(keep - h);
                *pp = vp;
                terms_of(&m, e, B, beta, tp, 0, 1.0f);
                int kink = relu_mask(&m, B, mask1) != nmask || memcmp(mask0, mask1, nmask) != 0;
                *pp = vm;
                terms_of(&m, e, B, beta, tm, 0, 1.0f);
                kink |= relu_mask(&m, B, mask1) != nmask || memcmp(mask0, mask1, nmask) != 0;
                *pp = keep;
                if (kink) continue;
                double dh = (double)vp - (double)vm;
                double fd = (objective(tp, own[grp], beta, a->gamma) - objective(tm, own[grp], beta, a->gamma)) / dh;
                double atol = 10 * FLT_EPSILON * scale[grp] / (2 * h);
                CHECK_CLOSE(label, g[T->offset + j], fd, 2e-2, atol);
                worst = fmax(worst, fabs(g[T->offset + j] - fd) / (2e-2 * fabs(fd) + atol));
                done = 1;
            }
            if (done) {
                checked++;
                t_checked++;
            } else
                skipped++;
        }
        if (t_checked < (int)(ns + 1) / 2) fprintf(stderr, "%s: only %d of %zu entries checked (kinks)\n", label, t_checked, ns);
        CHECK_CMP_INT(t_checked, >=, (int)(ns + 1) / 2);
        CHECK_CMP_DBL(gmax, >, 0.0); /* fc_logvar too: the KL's gradient reaches it without noise */
    }
    CHECK_CMP_INT(skipped * 4, <=, checked + skipped);
    printf("%s: %d entries checked, %d skipped at kinks, worst |diff|/tol %.3f\n", name, checked, skipped, worst);

    /* The pass adds its gradient: 1 + 0.5 = 1.5 times. */
    terms_of(&m, e, B, beta, t1, 1, 0.5f);
    double gabs = 0;
    for (size_t j = 0; j < m.n_params; j++) gabs = fmax(gabs, fabs(g[j]));
    snprintf(label, sizeof label, "%s: accumulate 1 + 0.5", name);
    for (size_t j = 0; j < m.n_params; j++) CHECK_CLOSE(label, m.grads[j], 1.5 * g[j], 1e-5, 1e-6 * gabs);
    free(g);
    free(eps);
    free(mask0);
    free(mask1);
    vae_model_free(&m);
}

/* (b) */
static void test_equilibrium(void)
{
    vae_arch a = small_arch(VAE_LOSS_BCE, VAE_GEN_NS, 2);
    vae_model m;
    CHECK_EQ(vae_model_plan(&m, &a), 0);
    const vae_family *f = m.fam;
    CHECK(f->select_groups != NULL);
    static const struct {
        double E, real, fake2; /* fake2: dis_fake, two parts */
        int enc, dec, dis;
    } cases[] = {
        { 0.0, 0.01, 0.02, 1, 1, 1 },  /* off */
        { 0.68, 0.7, 1.4, 1, 1, 1 },   /* balanced */
        { 0.68, 0.2, 1.4, 1, 1, 0 },   /* real cost below E - M: the discriminator sits out */
        { 0.68, 0.7, 0.4, 1, 1, 0 },   /* fake cost 0.2 below E - M */
        { 0.68, 1.2, 1.4, 1, 0, 1 },   /* real cost above E + M: the decoder sits out */
        { 0.68, 0.7, 2.4, 1, 0, 1 },   /* fake cost 1.2 above E + M */
        { 0.68, 0.2, 2.4, 1, 1, 1 },   /* both would sit out: both train */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        m.arch.equilibrium = cases[i].E;
        double t[VAE_MAX_TERMS] = { 0 };
        t[T_DREAL] = cases[i].real;
        t[T_DFAKE] = cases[i].fake2;
        unsigned char apply[VAE_MAX_GROUPS] = { 1, 1, 1 };
        f->select_groups(&m, t, apply);
        CHECK_EQ(apply[0], cases[i].enc);
        CHECK_EQ(apply[1], cases[i].dec);
        CHECK_EQ(apply[2], cases[i].dis);
    }
    vae_model_free(&m);
}

/* The architecture checks. */
static void test_check(void)
{
    char msg[512];
    vae_arch a = small_arch(VAE_LOSS_BCE, VAE_GEN_NS, 3); /* 2 discriminator layers */
    CHECK_EQ(arch_check_quiet(&a, msg, sizeof msg), VAE_EINVAL);
    CHECK(strstr(msg, "--feature-layer 3 is not a discriminator layer (1..2)") != NULL);
    a.feature_layer = 2;
    CHECK_EQ(arch_check_quiet(&a, msg, sizeof msg), 0);
    a.n_disc = 4; /* 8 -> 4 -> 2 -> 1 -> below 1 */
    a.disc[2] = a.disc[3] = 4;
    CHECK_EQ(arch_check_quiet(&a, msg, sizeof msg), VAE_EINVAL);
    CHECK(strstr(msg, "halve 8x8 to below 1x1 at layer 4") != NULL);
    a.n_disc = 3;
    CHECK_EQ(arch_check_quiet(&a, msg, sizeof msg), 0);
    a.Hh = 6; /* 2 conv layers need 4 | H */
    CHECK_EQ(arch_check_quiet(&a, msg, sizeof msg), VAE_EINVAL);
    CHECK(strstr(msg, "needs H and W divisible by 4") != NULL);
}

/* ---- (c) the fixture ---- */

static void fixture_case(hid_t file, const char *gname)
{
    hid_t g = H5Gopen2(file, gname, H5P_DEFAULT);
    CHECK(g >= 0);
    if (g < 0) return;
    long long C = 0, H = 0, W = 0, B = 0, latent = 0, fl = 0, hid[8], dis[8];
    char loss[16] = "", gen[16] = "";
    double beta = 0, gamma = 0;
    int nh = read_attr_i64s(g, "hidden", hid, 8), nd = read_attr_i64s(g, "disc", dis, 8);
    CHECK(!read_attr_i64(g, "C", &C) && !read_attr_i64(g, "H", &H) && !read_attr_i64(g, "W", &W) &&
          !read_attr_i64(g, "B", &B) && !read_attr_i64(g, "latent", &latent) && !read_attr_i64(g, "feature_layer", &fl) &&
          !read_attr_str(g, "loss", loss, sizeof loss) && !read_attr_str(g, "gen_loss", gen, sizeof gen) &&
          !read_attr_f64(g, "beta", &beta) && !read_attr_f64(g, "gamma", &gamma));
    vae_arch a;
    memset(&a, 0, sizeof a);
    a.kind = VAE_MODEL_VAEGAN;
    a.C = (int)C;
    a.Hh = (int)H;
    a.W = (int)W;
    a.n_hidden = nh;
    for (int i = 0; i < nh; i++) a.hidden[i] = (int)hid[i];
    a.n_disc = nd;
    for (int i = 0; i < nd; i++) a.disc[i] = (int)dis[i];
    a.latent = (int)latent;
    a.feature_layer = (int)fl;
    a.loss = !strcmp(loss, "mse") ? VAE_LOSS_MSE : VAE_LOSS_BCE;
    a.gen_loss = !strcmp(gen, "minimax") ? VAE_GEN_MINIMAX : VAE_GEN_NS;
    a.gamma = gamma;
    vae_model m;
    int rc = vae_model_init(&m, &a, (int)B);
    CHECK_EQ(rc, 0);
    if (rc) {
        H5Gclose(g);
        return;
    }
    char path[VAE_NAME_LEN + 16];
    for (int i = 0; i < m.n_tensors; i++) {
        snprintf(path, sizeof path, "params/%s", m.tensors[i].name);
        CHECK_EQ(read_dset(g, path, H5T_NATIVE_FLOAT, m.params + m.tensors[i].offset, m.tensors[i].numel), 0);
    }
    CHECK_EQ(read_dset(g, "x", H5T_NATIVE_FLOAT, vae_model_input(&m), (size_t)B * m.D), 0);
    float *eps = malloc((size_t)B * m.noise_dim * sizeof(float));
    CHECK_EQ(read_dset(g, "eps", H5T_NATIVE_FLOAT, eps, (size_t)B * m.noise_dim), 0);
    double ref[N_TERMS], t[VAE_MAX_TERMS] = { 0 };
    CHECK_EQ(read_dset(g, "terms", H5T_NATIVE_DOUBLE, ref, N_TERMS), 0);
    zero_grads(&m);
    terms_of(&m, eps, (int)B, (float)beta, t, 1, 1.0f / (float)B);
    char label[96];
    for (int i = 0; i < N_TERMS; i++) {
        snprintf(label, sizeof label, "/%s terms[%s]", gname, m.terms[i].name);
        CHECK_CLOSE(label, t[i] / B, ref[i], 1e-4, 1e-5);
    }
    const char *worst_name;
    double worst = fixture_check_grads(g, gname, &m, &worst_name);
    /*
     * What must not reach a network, and would have been seen: leak/<name>
     * holds d dis_fake / d (each encoder tensor) and d llike / d (each
     * discriminator tensor). Added to a gradient, it would move it by more
     * than fixture_check_grads allows (1e-4 of the tensor's largest) on most
     * of those tensors (those it can reach: llike does not depend on the
     * discriminator's layers above the feature layer).
     */
    int n_leak = 0, seen = 0;
    for (int i = 0; i < m.n_tensors; i++) {
        const vae_tensor *T = &m.tensors[i];
        if (T->offset >= m.groups[G_DEC_IDX].lo && T->offset < m.groups[G_DEC_IDX].hi) continue;
        double *leak = malloc(T->numel * sizeof(double)), *gref = malloc(T->numel * sizeof(double));
        snprintf(path, sizeof path, "leak/%s", T->name);
        CHECK_EQ(read_dset(g, path, H5T_NATIVE_DOUBLE, leak, T->numel), 0);
        snprintf(path, sizeof path, "grads/%s", T->name);
        CHECK_EQ(read_dset(g, path, H5T_NATIVE_DOUBLE, gref, T->numel), 0);
        double lmax = 0, rmax = 0;
        for (size_t j = 0; j < T->numel; j++) {
            lmax = fmax(lmax, fabs(leak[j]));
            rmax = fmax(rmax, fabs(gref[j]));
        }
        n_leak += lmax > 0; /* none through the layers above the feature layer */
        seen += lmax > 10 * 1e-4 * rmax;
        free(leak);
        free(gref);
    }
    CHECK_CMP_INT(2 * seen, >, n_leak);
    printf("fixture /%s: terms agree; gradients within %.2g of each tensor's largest (worst %s); a leak of dis_fake "
           "into enc or llike into disc would show in %d of %d tensors\n", gname, worst, worst_name, seen, n_leak);
    free(eps);
    vae_model_free(&m);
    H5Gclose(g);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s FIXTURE.h5 (tests/fixtures/vaegan_fixture.h5)\n", argv[0]);
        return 2;
    }
    vae_arch a = small_arch(VAE_LOSS_BCE, VAE_GEN_NS, 2);
    fd_case("bce ns features 2", &a, 1);
    a = small_arch(VAE_LOSS_BCE, VAE_GEN_MINIMAX, 1);
    fd_case("bce minimax features 1", &a, 1);
    a = small_arch(VAE_LOSS_MSE, VAE_GEN_NS, 1);
    fd_case("mse ns features 1", &a, 1);
    a = small_arch(VAE_LOSS_BCE, VAE_GEN_NS, 2);
    fd_case("bce ns without noise", &a, 0);
    test_equilibrium();
    test_check();
    static const char *const cases[] = { "bce_ns", "mse_minimax", NULL };
    fixture_run(argv[1], fixture_case, cases);
    printf("test_vaegan: %d checks, %d failed\n", g_checks, g_failures);
    return g_failures ? 1 : 0;
}
