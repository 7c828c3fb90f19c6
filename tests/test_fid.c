/*
 * test_fid.c: the Frechet distance and its statistics (fid.h), in process
 * (MPI_COMM_SELF).
 *
 * (a) Identical statistics give 0: |FID| <= 1e-10 (tr S1 + tr S2), and
 *     not below 0 after the clamp, for a full-rank and a rank-5 S (d = 16).
 * (b) Commuting covariances have the closed form
 *     |mu1 - mu2|^2 + sum_i (sqrt(a_i) - sqrt(b_i))^2 for S1 = Q diag(a) Q^T,
 *     S2 = Q diag(b) Q^T: diagonal (Q = I, some a_i = 0) and rotated by a
 *     random orthogonal Q; within 1e-10 relative.
 * (c) Non-commuting covariances against the values of SciPy's sqrtm
 *     (tests/make_fixture_fid.py wrote tests/fixtures/fid_fixture.h5):
 *     within 1e-9 relative, 1e-7 for the rank-3 S1, where sqrtm of the
 *     singular product is itself accurate to ~4e-9 only: that case's exact
 *     value (the 3 x 3 reduction in the script) within 1e-10.
 * (d) Statistics of n = 50000 Gaussian samples per set (mean mu, covariance
 *     L L^T of the fixture's /gauss), accumulated in chunks of 256 through
 *     the merge tree: mean and covariance agree with a two-pass computation
 *     in double (1e-12 absolute on the mean, 1e-10 relative on the
 *     covariance), and the FID is within 5 standard deviations of the
 *     estimate at that n (simulated by the fixture's script, 0.026 for
 *     FID 3.65) of the exact FID.
 * (e) A non-finite feature is refused, naming its row in the chunk.
 */
#define _GNU_SOURCE
#include "mpivae/fid.h"
#include "mpivae/status.h"

#include <hdf5.h>
#include <math.h>
#include <mpi.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

static double unif(void) { return ((double)(next_u64() >> 11) + 0.5) * (1.0 / 9007199254740992.0); }

static double gauss(void) { return sqrt(-2.0 * log(unif())) * cos(2.0 * M_PI * unif()); }

/* S[F, F] = A A^T / k + eps I with A [F, k] standard normal. */
static void random_psd(int F, int k, double eps, double *S)
{
    double *A = malloc((size_t)F * k * sizeof(double));
    for (int i = 0; i < F * k; i++) A[i] = gauss();
    for (int i = 0; i < F; i++)
        for (int j = 0; j < F; j++) {
            double s = 0;
            for (int t = 0; t < k; t++) s += A[i * k + t] * A[j * k + t];
            S[i * F + j] = s / k + (i == j ? eps : 0.0);
        }
    free(A);
}

/* A random orthogonal Q [F, F] (Gram-Schmidt of a Gaussian matrix, rows). */
static void random_orthogonal(int F, double *Q)
{
    for (int i = 0; i < F * F; i++) Q[i] = gauss();
    for (int i = 0; i < F; i++) {
        for (int p = 0; p < i; p++) {
            double d = 0;
            for (int j = 0; j < F; j++) d += Q[i * F + j] * Q[p * F + j];
            for (int j = 0; j < F; j++) Q[i * F + j] -= d * Q[p * F + j];
        }
        double nrm = 0;
        for (int j = 0; j < F; j++) nrm += Q[i * F + j] * Q[i * F + j];
        for (int j = 0; j < F; j++) Q[i * F + j] /= sqrt(nrm);
    }
}

/* S = Q^T diag(a) Q. */
static void rotate(int F, const double *Q, const double *a, double *S)
{
    for (int i = 0; i < F; i++)
        for (int j = 0; j < F; j++) {
            double s = 0;
            for (int t = 0; t < F; t++) s += Q[t * F + i] * a[t] * Q[t * F + j];
            S[i * F + j] = s;
        }
}

static void test_identical(void)
{
    for (int k = 0; k < 2; k++) {
        const int F = 16;
        double S[F * F], mu[F];
        random_psd(F, k ? 5 : 32, k ? 0.0 : 0.1, S); /* k = 1: rank 5 */
        for (int i = 0; i < F; i++) mu[i] = gauss();
        vae_fid_result r;
        CHECK_EQ(vae_fid_distance(F, mu, S, mu, S, &r), 0);
        CHECK_CMP_DBL(fabs(r.fid_raw), <=, 1e-10 * (r.tr1 + r.tr2));
        CHECK_CMP_DBL(r.fid, >=, 0.0);
        CHECK_CMP_DBL(r.fid, <=, 1e-10 * (r.tr1 + r.tr2));
        CHECK_CLOSE("tr sqrt(S S) = tr S", r.trsqrt, r.tr1, 1e-10, 0);
    }
}

static void test_commuting(void)
{
    enum { F = 12 };
    double Q[F * F], S1[F * F], S2[F * F], a[F], b[F], mu1[F], mu2[F], I[F * F];
    memset(I, 0, sizeof I);
    for (int i = 0; i < F; i++) I[i * F + i] = 1;
    for (int rot = 0; rot < 2; rot++) {
        double want = 0;
        for (int i = 0; i < F; i++) {
            a[i] = i % 4 == 0 ? 0.0 : uniform(0.01f, 3.0f); /* some zero variances: a singular S1 */
            b[i] = uniform(0.01f, 3.0f);
            mu1[i] = gauss();
            mu2[i] = gauss();
            want += (mu1[i] - mu2[i]) * (mu1[i] - mu2[i]) + (sqrt(a[i]) - sqrt(b[i])) * (sqrt(a[i]) - sqrt(b[i]));
        }
        if (rot) random_orthogonal(F, Q);
        rotate(F, rot ? Q : I, a, S1);
        rotate(F, rot ? Q : I, b, S2);
        vae_fid_result r;
        CHECK_EQ(vae_fid_distance(F, mu1, S1, mu2, S2, &r), 0);
        CHECK_CLOSE(rot ? "FID, rotated commuting covariances" : "FID, diagonal covariances", r.fid, want, 1e-10, 1e-12);
    }
}

static int read_d(hid_t g, const char *name, double *out, size_t n)
{
    hid_t d = H5Dopen2(g, name, H5P_DEFAULT);
    if (d < 0) return -1;
    hid_t sp = H5Dget_space(d);
    int rc = H5Sget_simple_extent_npoints(sp) == (hssize_t)n &&
                     H5Dread(d, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, out) >= 0
                 ? 0
                 : -1;
    H5Sclose(sp);
    H5Dclose(d);
    return rc;
}

static double read_a(hid_t g, const char *name)
{
    double v = NAN;
    hid_t a = H5Aopen(g, name, H5P_DEFAULT);
    if (a >= 0) {
        if (H5Aread(a, H5T_NATIVE_DOUBLE, &v) < 0) v = NAN;
        H5Aclose(a);
    }
    return v;
}

/* The group's mu1, S1, mu2, S2 of F features (caller frees). */
static int read_case(hid_t f, const char *name, int F, double **mu1, double **S1, double **mu2, double **S2)
{
    hid_t g = H5Gopen2(f, name, H5P_DEFAULT);
    *mu1 = malloc(F * sizeof(double));
    *mu2 = malloc(F * sizeof(double));
    *S1 = malloc((size_t)F * F * sizeof(double));
    *S2 = malloc((size_t)F * F * sizeof(double));
    int rc = g < 0 || read_d(g, "mu1", *mu1, F) || read_d(g, "mu2", *mu2, F) || read_d(g, "S1", *S1, (size_t)F * F) ||
             read_d(g, "S2", *S2, (size_t)F * F);
    if (g >= 0) H5Gclose(g);
    if (rc) fprintf(stderr, "cannot read group /%s (F = %d) of the fixture\n", name, F);
    return rc;
}

static void test_scipy(hid_t f)
{
    static const struct { const char *name; int F; double rtol; } cases[] = {
        { "noncommuting5", 5, 1e-9 }, { "noncommuting32", 32, 1e-9 }, { "singular8", 8, 1e-7 }
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        double *mu1, *S1, *mu2, *S2;
        int bad = read_case(f, cases[c].name, cases[c].F, &mu1, &S1, &mu2, &S2);
        CHECK(!bad);
        hid_t g = H5Gopen2(f, cases[c].name, H5P_DEFAULT);
        double want = read_a(g, "fid");
        H5Gclose(g);
        vae_fid_result r;
        if (!bad) {
            CHECK_EQ(vae_fid_distance(cases[c].F, mu1, S1, mu2, S2, &r), 0);
            CHECK_CLOSE(cases[c].name, r.fid, want, cases[c].rtol, 0);
            g = H5Gopen2(f, cases[c].name, H5P_DEFAULT);
            if (H5Aexists(g, "exact") > 0) /* the rank-3 case reduced to 3 x 3 */
                CHECK_CLOSE("singular8, exact", r.fid, read_a(g, "exact"), 1e-10, 0);
            H5Gclose(g);
            printf("%s: FID %.12g, SciPy %.12g (relative difference %.2g)\n", cases[c].name, r.fid, want,
                   fabs(r.fid - want) / want);
        }
        free(mu1);
        free(S1);
        free(mu2);
        free(S2);
    }
}

/* Statistics of n samples mu + L z through the accumulator, and a two-pass check of them. */
static void gauss_stats(int F, int n, const double *mu, const double *L, vae_fid_stats *st)
{
    double *x = malloc((size_t)n * F * sizeof(double)); /* [n, F] */
    float *feat = malloc((size_t)VAE_FID_CHUNK * F * sizeof(float));
    for (int r = 0; r < n; r++) {
        double z[8];
        for (int j = 0; j < F; j++) z[j] = gauss();
        for (int i = 0; i < F; i++) {
            double v = mu[i];
            for (int j = 0; j <= i; j++) v += L[i * F + j] * z[j];
            x[(size_t)r * F + i] = (float)v; /* the features a classifier gives are floats */
        }
    }
    vae_fid_acc acc;
    const int64_t nchunks = (n + VAE_FID_CHUNK - 1) / VAE_FID_CHUNK;
    CHECK_EQ(vae_fid_acc_init(&acc, F, nchunks), 0);
    for (int64_t c = 0; c < nchunks; c++) {
        int b = (int)(n - c * VAE_FID_CHUNK < VAE_FID_CHUNK ? n - c * VAE_FID_CHUNK : VAE_FID_CHUNK), bad = -1;
        for (int i = 0; i < b * F; i++) feat[i] = (float)x[(size_t)c * VAE_FID_CHUNK * F + i];
        CHECK_EQ(vae_fid_acc_add(&acc, c, feat, b, &bad), 0);
    }
    CHECK_EQ(vae_fid_acc_finish(&acc, MPI_COMM_SELF, st), 0);
    vae_fid_acc_free(&acc);
    CHECK_EQ(st->n, n);
    /* Two passes in double. */
    double m[8] = { 0 }, worst_mu = 0, worst_cov = 0, scale = 0;
    for (int r = 0; r < n; r++)
        for (int j = 0; j < F; j++) m[j] += x[(size_t)r * F + j];
    for (int j = 0; j < F; j++) {
        m[j] /= n;
        worst_mu = fmax(worst_mu, fabs(m[j] - st->mean[j]));
    }
    double *cov = malloc((size_t)F * F * sizeof(double));
    vae_fid_stats_cov(st, cov);
    for (int i = 0; i < F; i++)
        for (int j = 0; j < F; j++) {
            double s = 0;
            for (int r = 0; r < n; r++) s += (x[(size_t)r * F + i] - m[i]) * (x[(size_t)r * F + j] - m[j]);
            s /= n - 1;
            scale = fmax(scale, fabs(s));
            worst_cov = fmax(worst_cov, fabs(s - cov[i * F + j]));
        }
    CHECK_CMP_DBL(worst_mu, <=, 1e-12);
    CHECK_CMP_DBL(worst_cov, <=, 1e-10 * scale);
    free(cov);
    free(x);
    free(feat);
}

static void test_gauss(hid_t f)
{
    enum { F = 4 };
    double *mu1, *S1, *mu2, *S2, L1[F * F], L2[F * F];
    int bad = read_case(f, "gauss", F, &mu1, &S1, &mu2, &S2);
    hid_t g = H5Gopen2(f, "gauss", H5P_DEFAULT);
    bad |= read_d(g, "L1", L1, F * F) || read_d(g, "L2", L2, F * F);
    const double want = read_a(g, "fid"), sd = read_a(g, "sd"), n = read_a(g, "n");
    H5Gclose(g);
    CHECK(!bad && isfinite(want) && sd > 0 && n > 0);
    if (!bad) {
        vae_fid_result r;
        CHECK_EQ(vae_fid_distance(F, mu1, S1, mu2, S2, &r), 0);
        CHECK_CLOSE("exact FID of /gauss against SciPy", r.fid, want, 1e-9, 0);
        vae_fid_stats a, b;
        CHECK_EQ(vae_fid_stats_init(&a, F), 0);
        CHECK_EQ(vae_fid_stats_init(&b, F), 0);
        gauss_stats(F, (int)n, mu1, L1, &a);
        gauss_stats(F, (int)n, mu2, L2, &b);
        double Sa[F * F], Sb[F * F];
        vae_fid_stats_cov(&a, Sa);
        vae_fid_stats_cov(&b, Sb);
        CHECK_EQ(vae_fid_distance(F, a.mean, Sa, b.mean, Sb, &r), 0);
        printf("gauss: FID of %d samples per set %.6f, exact %.6f (difference %.4f, 5 sd = %.4f)\n", (int)n, r.fid, want,
               r.fid - want, 5 * sd);
        CHECK_CMP_DBL(fabs(r.fid - want), <=, 5 * sd);
        vae_fid_stats_free(&a);
        vae_fid_stats_free(&b);
    }
    free(mu1);
    free(S1);
    free(mu2);
    free(S2);
}

static void test_nonfinite(void)
{
    enum { F = 3 };
    float feat[4 * F];
    for (int i = 0; i < 4 * F; i++) feat[i] = (float)i;
    feat[2 * F + 1] = NAN;
    vae_fid_acc acc;
    CHECK_EQ(vae_fid_acc_init(&acc, F, 1), 0);
    int bad = -1;
    CHECK_EQ(vae_fid_acc_add(&acc, 0, feat, 4, &bad), VAE_EDATA);
    CHECK_EQ(bad, 2);
    vae_fid_acc_free(&acc);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: test_fid FIXTURE.h5\n");
        return 2;
    }
    MPI_Init(&argc, &argv);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    test_identical();
    test_commuting();
    test_nonfinite();
    hid_t f = H5Fopen(argv[1], H5F_ACC_RDONLY, H5P_DEFAULT);
    CHECK(f >= 0);
    if (f >= 0) {
        test_scipy(f);
        test_gauss(f);
        H5Fclose(f);
    }
    printf("test_fid: %d checks, %d failures\n", g_checks, g_failures);
    MPI_Finalize();
    return g_failures != 0;
}
