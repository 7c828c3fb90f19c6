/*
 * test_classifier.c: tests of the conv classifier (--model classifier,
 * src/family_classifier.c).
 *
 * (a) Finite differences of the whole model (model_check.h's fd_check_model,
 *     in double from the float forward pass, with a random class per row):
 *     for each tensor up to 36 sampled entries are perturbed by +-h and the
 *     summed cross-entropy is compared with the gradient the pass adds.
 *     Models (C x H x W, channels, features F, classes K, B):
 *       1x8x8   [4,6]    F 5  K 3   B 3
 *       2x8x12  [3,5]    F 4  K 2   B 2    (non-square, two input channels)
 *       1x4x4   [3]      F 3  K 5   B 4    (one conv layer)
 *       1x8x8   [8,9]    F 6  K 4   B 3    (8 or more channels: channels last between
 *                                           the conv layers and into fc)
 *     Also: the gradient accumulates and scales with grad_scale, and the
 *     loss does not depend on whether the backward pass runs.
 * (b) The PyTorch fixture (tests/pytorch/make_fixture_classifier.py; path
 *     on the command line): for /small, /wide and /one the tensors have the
 *     fixture's names and shapes; with its params, x and labels the batch
 *     mean xent (relative 1e-5) and error (exactly), the logits and the
 *     features (vae_model_features; absolute 1e-5 * max(1, |v|)) and every
 *     parameter gradient (grad_scale 1/B: max |diff| <= 1e-4 of the tensor's
 *     max |grad|) match PyTorch's float64 values; the per-row terms sum to
 *     the totals and each row's error is 0 or 1.
 * (c) vae_arch_check refuses fewer than 2 classes, --loss mse and sizes the
 *     strides do not divide, each naming the option; the model serves eval
 *     only, has features (n_features = F) and no latent.
 * (d) vae_model_flops_per_sample of the default classifier (1x28x28,
 *     channels 32,64, F 128, K 10) equals the count by hand.
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

#include "model_check.h"

/* A --model classifier architecture: C x Hh x W input, n conv layers with channels ch, F features, K classes. */
static vae_arch cls_arch(int C, int Hh, int W, int n, const int *ch, int F, int K)
{
    vae_arch a;
    memset(&a, 0, sizeof a);
    a.kind = VAE_MODEL_CLASSIFIER;
    a.C = C;
    a.Hh = Hh;
    a.W = W;
    a.n_hidden = n;
    for (int i = 0; i < n; i++) a.hidden[i] = ch[i];
    a.latent = F;
    a.classes = K;
    a.loss = VAE_LOSS_BCE;
    return a;
}

/* ---------------------------------------------------------------------- (a) finite differences */

static void test_fd(void)
{
    vae_arch a = cls_arch(1, 8, 8, 2, (int[]){ 4, 6 }, 5, 3);
    fd_check_model("classifier 1x8x8 [4,6] F 5 K 3 B 3", &a, 4, 3, 1.0f, 0, 31);
    a = cls_arch(2, 8, 12, 2, (int[]){ 3, 5 }, 4, 2);
    fd_check_model("classifier 2x8x12 [3,5] F 4 K 2 B 2", &a, 2, 2, 1.0f, 0, 32);
    a = cls_arch(1, 4, 4, 1, (int[]){ 3 }, 3, 5);
    fd_check_model("classifier 1x4x4 [3] F 3 K 5 B 4", &a, 4, 4, 1.0f, 0, 33);
    a = cls_arch(1, 8, 8, 2, (int[]){ 8, 9 }, 6, 4);
    fd_check_model("classifier 1x8x8 [8,9] F 6 K 4 B 3", &a, 3, 3, 1.0f, 0, 34);
}

/* ---------------------------------------------------------------------- (b) PyTorch fixture */

static void fixture_case(hid_t file, const char *gname)
{
    char label[160], path[VAE_NAME_LEN + 16];
    hid_t g = H5Gopen2(file, gname, H5P_DEFAULT);
    CHECK(g >= 0);
    if (g < 0) {
        fprintf(stderr, "fixture has no group '/%s'\n", gname);
        return;
    }
    long long C = 0, Hh = 0, W = 0, F = 0, K = 0, B = 0, ch[VAE_MAX_HIDDEN];
    CHECK_EQ(read_attr_i64(g, "C", &C), 0);
    CHECK_EQ(read_attr_i64(g, "H", &Hh), 0);
    CHECK_EQ(read_attr_i64(g, "W", &W), 0);
    CHECK_EQ(read_attr_i64(g, "F", &F), 0);
    CHECK_EQ(read_attr_i64(g, "K", &K), 0);
    CHECK_EQ(read_attr_i64(g, "B", &B), 0);
    int nch = read_attr_i64s(g, "channels", ch, VAE_MAX_HIDDEN);
    CHECK_CMP_INT(nch, >=, 1);
    if (nch < 1 || C < 1 || Hh < 1 || W < 1 || F < 1 || K < 2 || B < 1) {
        H5Gclose(g);
        return;
    }
    int chi[VAE_MAX_HIDDEN];
    for (int i = 0; i < nch; i++) chi[i] = (int)ch[i];
    vae_arch a = cls_arch((int)C, (int)Hh, (int)W, nch, chi, (int)F, (int)K);
    vae_model m;
    int rc = vae_model_init(&m, &a, (int)B);
    CHECK_EQ(rc, 0);
    if (rc) {
        H5Gclose(g);
        return;
    }
    /* The tensors: 2 per conv layer, fc and out; exactly the fixture's names and shapes. */
    static char pnames[VAE_MAX_TENSORS][VAE_NAME_LEN];
    int np = list_group(g, "params", pnames, VAE_MAX_TENSORS);
    CHECK_EQ(np, m.n_tensors);
    CHECK_EQ(m.n_tensors, 2 * nch + 4);
    for (int i = 0; i < np; i++) {
        const vae_tensor *t = vae_model_find(&m, pnames[i]);
        if (!t) fprintf(stderr, "/%s/params/%s: the model has no tensor of this name\n", gname, pnames[i]);
        CHECK(t != NULL);
        if (!t) continue;
        hsize_t dims[4];
        snprintf(path, sizeof path, "params/%.63s", pnames[i]);
        int nd = dset_shape(g, path, dims);
        CHECK_EQ(nd, t->ndim);
        for (int k = 0; k < nd && k < t->ndim; k++) CHECK_EQ(dims[k], t->shape[k]);
        CHECK_EQ(read_dset(g, path, H5T_NATIVE_FLOAT, m.params + t->offset, t->numel), 0);
    }
    size_t nx = (size_t)B * m.D;
    long long *lab = malloc((size_t)B * sizeof *lab);
    double *logits = malloc((size_t)B * K * sizeof(double)), *feat = malloc((size_t)B * F * sizeof(double));
    double *rows = malloc((size_t)B * 2 * sizeof(double));
    float *ours = malloc((size_t)B * F * sizeof(float));
    double e_xent = NAN, e_err = NAN;
    CHECK_EQ(read_dset(g, "x", H5T_NATIVE_FLOAT, vae_model_input(&m), nx), 0);
    CHECK_EQ(read_dset(g, "labels", H5T_NATIVE_LLONG, lab, (size_t)B), 0);
    CHECK_EQ(read_dset(g, "logits", H5T_NATIVE_DOUBLE, logits, (size_t)(B * K)), 0);
    CHECK_EQ(read_dset(g, "features", H5T_NATIVE_DOUBLE, feat, (size_t)(B * F)), 0);
    CHECK_EQ(read_dset(g, "expected_xent", H5T_NATIVE_DOUBLE, &e_xent, 1), 0);
    CHECK_EQ(read_dset(g, "expected_error", H5T_NATIVE_DOUBLE, &e_err, 1), 0);
    for (int r = 0; r < B; r++) m.labels[r] = (int)lab[r];

    /* One step: forward and backward with grad_scale 1/B (the batch mean), the per-row terms. */
    zero_grads(&m);
    double t[VAE_MAX_TERMS] = { 0 };
    vae_pass p = { NULL, (int)B, 1.0f, -1.0f, 1.0f / (float)B, 1, t, rows, 0.0f };
    vae_model_pass(&m, &p);
    snprintf(label, sizeof label, "/%s xent", gname);
    CHECK_CLOSE(label, t[0] / B, e_xent, 1e-5, 0);
    CHECK_CMP_DBL(t[1] / B, ==, e_err);
    double sx = 0, se = 0;
    for (int r = 0; r < B; r++) {
        sx += rows[r];
        se += rows[B + r];
        CHECK(rows[B + r] == 0.0 || rows[B + r] == 1.0);
    }
    CHECK_CLOSE(label, sx, t[0], 1e-12, 1e-12);
    CHECK_CMP_DBL(se, ==, t[1]);
    printf("/%s: xent %.9g (torch %.9g), error %.4g (torch %.4g)\n", gname, t[0] / B, e_xent, t[1] / B, e_err);

    /* The logits (the last layer's output) and the features (the entry fid uses). */
    const float *out = m.act[m.n_enc];
    double dlog = 0, dfeat = 0;
    snprintf(label, sizeof label, "/%s logits", gname);
    for (size_t i = 0; i < (size_t)(B * K); i++) {
        CHECK_CLOSE(label, out[i], logits[i], 1e-5, 1e-5);
        dlog = fmax(dlog, fabs(out[i] - logits[i]));
    }
    const char *worst_name;
    double worst = fixture_check_grads(g, gname, &m, &worst_name);
    CHECK_EQ(m.n_features, F);
    vae_model_features(&m, (int)B, ours);
    snprintf(label, sizeof label, "/%s features", gname);
    for (size_t i = 0; i < (size_t)(B * F); i++) {
        CHECK_CLOSE(label, ours[i], feat[i], 1e-5, 1e-5);
        dfeat = fmax(dfeat, fabs(ours[i] - feat[i]));
    }
    printf("/%s: max |diff| logits %.3g, features %.3g; largest gradient difference %.3g of the tensor's max |grad| "
           "(%s)\n", gname, dlog, dfeat, worst, worst_name);
    free(lab), free(logits), free(feat), free(rows), free(ours);
    vae_model_free(&m);
    H5Gclose(g);
}

static void test_fixture(const char *path)
{
    static const char *const cases[] = { "small", "wide", "one", NULL };
    fixture_run(path, fixture_case, cases);
}

/* ---------------------------------------------------------------------- (c) checks and what it serves */

static void test_arch_check(void)
{
    char msg[1024];
    vae_arch a = cls_arch(1, 8, 8, 2, (int[]){ 4, 6 }, 5, 1);
    CHECK_CMP_INT(arch_check_quiet(&a, msg, sizeof msg), !=, 0);
    printf("1 class: %s\n", msg);
    CHECK(strstr(msg, "2..65536 classes") && strstr(msg, "--classes"));
    a.classes = 3;
    a.loss = VAE_LOSS_MSE;
    CHECK_CMP_INT(arch_check_quiet(&a, msg, sizeof msg), !=, 0);
    printf("--loss mse: %s\n", msg);
    CHECK(strstr(msg, "--loss") != NULL);
    a = cls_arch(1, 12, 12, 3, (int[]){ 4, 6, 8 }, 5, 3);
    CHECK_CMP_INT(arch_check_quiet(&a, msg, sizeof msg), !=, 0);
    printf("12x12, 3 layers: %s\n", msg);
    CHECK(strstr(msg, "12x12") && strstr(msg, "divisible by 8"));
    a = cls_arch(1, 12, 12, 2, (int[]){ 4, 6 }, 5, 3);
    CHECK_EQ(arch_check_quiet(&a, msg, sizeof msg), 0);

    vae_model m;
    CHECK_EQ(vae_model_init(&m, &a, 2), 0);
    CHECK_EQ(m.fam->tools, VAE_TOOL_EVAL);
    CHECK(m.fam->labeled);
    CHECK(m.labels != NULL);
    CHECK(m.fam->features != NULL && m.fam->encode == NULL && m.fam->log_weights == NULL);
    CHECK_EQ(m.n_features, 5);
    CHECK_EQ(m.n_latents, 0);
    CHECK_EQ(m.Z, 0);
    CHECK_EQ(m.n_terms, 2);
    CHECK(!strcmp(m.terms[0].name, "xent") && m.terms[0].kind == VAE_TERM_ONE);
    CHECK(!strcmp(m.terms[1].name, "error") && m.terms[1].kind == VAE_TERM_STAT);
    CHECK(vae_family_find("classifier") == VAE_MODEL_CLASSIFIER);
    vae_model_free(&m);
}

/* ---------------------------------------------------------------------- (d) FLOPs */

/*
 * The default classifier, 1x28x28, channels 32,64, F 128, K 10; forward
 * multiply-adds per sample:
 *   conv.0  Conv2d(1,32)   28->14: 14*14 * 32 * 1 * 16  =   100352
 *   conv.2  Conv2d(32,64)  14->7 :  7*7 * 64 * 32 * 16  =  1605632
 *   fc      Linear(3136, 128)                           =   401408
 *   out     Linear(128, 10)                             =     1280
 *   total forward                                         2108672
 * A step: each layer x3 (forward, weight and input gradients) except conv.0
 * (x2): 3 * 2108672 - 100352 = 6225664 MACs = 12451328 FLOPs per sample.
 */
static void test_flops(void)
{
    vae_arch a = cls_arch(1, 28, 28, 2, (int[]){ 32, 64 }, 128, 10);
    vae_model m;
    CHECK_EQ(vae_model_init(&m, &a, 1), 0);
    const double fwd = 100352.0 + 1605632.0 + 401408.0 + 1280.0;
    CHECK_CMP_DBL(vae_model_flops_per_sample(&m), ==, 2.0 * (3.0 * fwd - 100352.0));
    CHECK_CMP_DBL(2.0 * (3.0 * fwd - 100352.0), ==, 12451328.0);
    CHECK_EQ(m.n_params, 32 * 16 + 32 + 64 * 32 * 16 + 64 + 3136 * 128 + 128 + 128 * 10 + 10);
    printf("default classifier: %zu parameters, %.0f FLOPs per sample per step\n", m.n_params,
           vae_model_flops_per_sample(&m));
    vae_model_free(&m);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s FIXTURE.h5 (tests/fixtures/classifier_fixture.h5)\n", argv[0]);
        return 2;
    }
    test_fd();
    test_fixture(argv[1]);
    test_arch_check();
    test_flops();
    printf("test_classifier: %d checks, %d failed\n", g_checks, g_failures);
    return g_failures ? 1 : 0;
}
