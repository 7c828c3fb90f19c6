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
 *       1x8x8   [8,9]    Z 3  B 3   BCE beta 1     (8 or more channels: conv.c's
 *       2x8x16  [8,8,10] Z 2  B 2   MSE beta 0.5    patch-major lowering, channels
 *                                                   last between conv layers, ReLU
 *                                                   inside the conv ops)
 *     Also: the gradient is added (not overwritten) and scales with
 *     grad_scale, the loss does not depend on whether the backward pass runs,
 *     and the per-row terms sum to the totals.
 * (b) The PyTorch fixture (tests/pytorch/make_fixture_conv.py; path given on
 *     the command line): for /bce (1x8x8, [4,6]), /mse (2x8x12, [3,5]) and
 *     /one (1x4x4, [3]) and /wide (1x8x8, [8,9]: the lowering and layouts of
 *     8 or more channels), the model's tensors have exactly the fixture's names
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

#include "model_check.h"

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

    /*
     * 8 and 9 channels: the patch-major lowering, the activations between
     * conv layers channels last, the ReLU applied inside the conv ops, as in
     * the default [32,64] model.
     */
    a = conv_arch(1, 8, 8, 2, (int[]){ 8, 9 }, 3, VAE_LOSS_BCE);
    fd_check_model("conv 1x8x8 [8,9] bce beta 1 B 3", &a, 3, 3, 1.0f, 1, 26);
    a = conv_arch(2, 8, 16, 3, (int[]){ 8, 8, 10 }, 2, VAE_LOSS_MSE);
    fd_check_model("conv 2x8x16 [8,8,10] mse beta 0.5 B 2", &a, 2, 2, 0.5f, 1, 27);
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
    float *mulv = encode_mulv(&m, (int)B);
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

    free(mulv);

    /* Every parameter gradient: max |ours - torch| <= 1e-4 * max |torch| over the tensor. */
    const char *worst_name;
    double worst = fixture_check_grads(g, gname, &m, &worst_name);
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
    static const char *const cases[] = { "bce", "mse", "one", "wide", NULL };
    fixture_run(path, fixture_case, cases);
}

/* ---------------------------------------------------------------------- (c) sizes the strides do not divide */

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
