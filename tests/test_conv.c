/*
 * test_conv.c: tests of the Conv2d and ConvTranspose2d pairs in conv.h.
 *
 * References are direct nested loops in double precision over PyTorch's
 * definitions: the conv gathers, y[n,o,i,j] = b[o] + sum w[o,c,u,v]
 * x[n,c,i*s-p+u,j*s-p+v]; the transposed conv scatters, y[n,o,i*s-p+u,
 * j*s-p+v] += w[c,o,u,v] x[n,c,i,j]. Neither shares code with the im2col /
 * col2im lowering under test. Inputs are drawn as floats from a local
 * generator (float and double see the same values).
 *
 * (a) Forward against the reference, for both ops over the sweep below.
 * (b) Gradients by central differences: L = sum(G .* y) with fixed random
 *     G, so backward given dy = G returns dL/dx, dL/dw, dL/db; each entry of
 *     x, w and b is moved by +-h in the double reference and
 *     (L(+h) - L(-h)) / 2h compared with the float analytic value. The sweep
 *     covers strides 1 and 2, paddings 0 and 1, kernels 3 and 4, channel
 *     counts 1, 2, 3, 5 on both sides, images 5x7, 7x5 and 9x9, batch 1 and
 *     3, and for the transposed conv every output_padding op < s (0, and 1
 *     at stride 2). A second sweep puts 8, 9 or 11 channels on the side that
 *     im2col reads (conv.c's patch-major lowering) and 1 to 4 on the
 *     other, batch 1 and 2, and a few with large padding, whose grid rows
 *     fall into many bands of kernel rows in the padding (up to 17, past
 *     conv.c's cap of eight). A third sweep covers the Winograd path (3x3,
 *     stride 1, padding 1, 8 to 20 channels on both sides, tiles cut by the
 *     image's edge, every layout); its geometries with fewer than 8 output
 *     channels (conv.c's tap-wise path) are in the patch-major sweep.
 *     Outputs, dx and scratch are prefilled with NaN, so an
 *     entry not overwritten or a read of stale scratch shows; scratch is
 *     allocated at exactly the size the _scratch function returns.
 * (c) Accumulation: backward adds into dw and db (from a nonzero start, and
 *     twice from zero gives double), overwrites dx, and gives the same dw
 *     and db with dx == NULL; for the patch-major lowering too, with a batch
 *     of two chunks, the second short.
 * (d) The four layers of the default Fashion-MNIST model (Conv2d(1,32,4,2,1)
 *     28->14, Conv2d(32,64,4,2,1) 14->7, ConvTranspose2d(64,32,4,2,1) 7->14,
 *     ConvTranspose2d(32,1,4,2,1) 14->28) at batch 2: forward, dx, dw, db
 *     against direct double loops for the gradients as well (finite
 *     differences over 32768 weights would be slow, and the sweep already
 *     ties the loops' math to finite differences); likewise patch-major
 *     geometries of several chunks (49 + 21 samples, and 40 of a 6x6 grid).
 *     Both again with the ReLU flags: y = max(0, reference), and dx zero
 *     where x <= 0 (x drawn from [-1, 1], so about half). The hvae's
 *     Winograd layers (16, 32, 64 channels at 28x28, 14x14, 7x7, and to 16
 *     channels, and the output layer 16 -> 1) likewise, and Winograd chunks
 *     (40 samples of 7x7, 32 + 8; 3 of 28x28, 2 + 1) and tap-wise ones (70
 *     of 6x6, 57 + 13).
 * (e) The _scratch functions: the documented size, 0 for invalid geometry.
 *
 * Tolerances: |analytic - reference| <= rtol |reference| + atol. The ops
 * are linear in each of x, w, b, so the central difference has no
 * truncation error; its rounding error is ~1e-16 |L| / h ~ 1e-11 here. What
 * the tolerances bound is the float arithmetic of the op: a sum of n
 * products of values in [-1, 1] has rounding error around sqrt(n) * 6e-8
 * times the sum's scale, ~1e-6 for the n <= 250 terms of the sweep. Sweep:
 * forward rtol 1e-5, atol 1e-5; gradients rtol 1e-4, atol 1e-5 (the test
 * prints the largest fraction of its tolerance any sweep check used: at
 * most 0.12 when written). Default
 * shapes (n up to 1024 with PyTorch-scaled weights): rtol 1e-4, atol 1e-5,
 * for dw 1e-6 of its largest entry when that is more (see test_default_layer).
 * An indexing error moves an entry by a whole term, 1e-3 or more.
 * The exit code is the verdict.
 */
#include "mpivae/conv.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TEST_SEED 0x2545F4914F6CDD1Dull
#include "check.h"

/* ---------------------------------------------------------------------- helpers */

static void fill(float *q, size_t n, float lo, float hi)
{
    for (size_t i = 0; i < n; i++) q[i] = uniform(lo, hi);
}

static void fill_nan(float *q, size_t n)
{
    for (size_t i = 0; i < n; i++) q[i] = NAN;
}

static void to_double(const float *q, double *d, size_t n)
{
    for (size_t i = 0; i < n; i++) d[i] = q[i];
}

static float *fmalloc(size_t n) { return calloc(n ? n : 1, sizeof(float)); }
static double *dmalloc(size_t n) { return calloc(n ? n : 1, sizeof(double)); }

static double dot(const double *a, const double *b, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

static const double FD_H = 1e-4;

/* Largest fraction of its tolerance that a sweep check used, per op and quantity. */
static double g_worst[2][4]; /* [conv, convt][y, dx, dw, db] */

static void note(int op, int q, double a, double b, double rtol, double atol)
{
    double e = fabs(a - b) / (rtol * fabs(b) + atol);
    if (e > g_worst[op][q]) g_worst[op][q] = e;
}

/* ---------------------------------------------------------------------- geometry */

typedef struct geom {
    int t; /* 0: Conv2d, 1: ConvTranspose2d */
    int B, Cin, H, W, Cout, k, s, p, op;
    int Ho, Wo;
    int layout; /* conv.h's layout flags that the op is called with (the test's tensors stay NCHW) */
} geom;

static geom make(int t, int B, int Cin, int H, int W, int Cout, int k, int s, int p, int op)
{
    geom g = { t, B, Cin, H, W, Cout, k, s, p, op, 0, 0, 0 };
    if (t) {
        g.Ho = (H - 1) * s - 2 * p + k + op;
        g.Wo = (W - 1) * s - 2 * p + k + op;
    } else {
        g.Ho = (H + 2 * p - k) / s + 1;
        g.Wo = (W + 2 * p - k) / s + 1;
    }
    return g;
}

static size_t nx_of(const geom *g) { return (size_t)g->B * g->Cin * g->H * g->W; }
static size_t ny_of(const geom *g) { return (size_t)g->B * g->Cout * g->Ho * g->Wo; }
static size_t nw_of(const geom *g) { return (size_t)g->Cin * g->Cout * g->k * g->k; }

static void describe(const geom *g, char *buf, size_t len)
{
    snprintf(buf, len, "%s B=%d Cin=%d %dx%d Cout=%d k=%d s=%d p=%d op=%d -> %dx%d%s%s%s%s",
             g->t ? "convt2d" : "conv2d", g->B, g->Cin, g->H, g->W, g->Cout, g->k, g->s, g->p,
             g->op, g->Ho, g->Wo, g->layout & VAE_CONV_X_NHWC ? " x-NHWC" : "",
             g->layout & VAE_CONV_Y_NHWC ? " y-NHWC" : "", g->layout & VAE_CONV_RELU ? " relu" : "",
             g->layout & VAE_CONV_DX_RELU ? " dx-relu" : "");
}

static size_t scratch_of(const geom *g)
{
    return g->t ? vae_convt2d_scratch(g->B, g->Cin, g->H, g->W, g->Cout, g->k, g->s, g->p, g->op)
                : vae_conv2d_scratch(g->B, g->Cin, g->H, g->W, g->Cout, g->k, g->s, g->p);
}

/*
 * Between the test's NCHW tensors and the layout the op is called with:
 * to != 0: a[B][C][HW] -> t[B][HW][C]; to == 0: back. NaN entries move
 * along, so an entry the op leaves unwritten still shows.
 */
static void relayout(const float *a, float *t, int B, int C, int HW, int to)
{
    for (int n = 0; n < B; n++)
        for (int c = 0; c < C; c++)
            for (int i = 0; i < HW; i++) {
                size_t nchw = ((size_t)n * C + c) * HW + i, nhwc = ((size_t)n * HW + i) * C + c;
                if (to) t[nhwc] = a[nchw];
                else t[nchw] = a[nhwc];
            }
}

/* The tensor the op sees for an NCHW one: a copy in its layout when channels last, else itself. */
static const float *op_view(const float *a, int last, int B, int C, int HW)
{
    if (!last || !a) return a;
    float *t = fmalloc((size_t)B * C * HW);
    relayout(a, t, B, C, HW, 1);
    return t;
}

/* Back from the op's layout into the NCHW tensor a (frees the copy). */
static void op_back(float *a, const float *t, int last, int B, int C, int HW)
{
    if (!last || !a) return;
    relayout(t, a, B, C, HW, 0);
    free((void *)t);
}

static void run_forward(const geom *g, const float *x, const float *w, const float *b, float *y,
                        float *scratch)
{
    int xl = (g->layout & VAE_CONV_X_NHWC) != 0, yl = (g->layout & VAE_CONV_Y_NHWC) != 0;
    int hx = g->H * g->W, hy = g->Ho * g->Wo;
    const float *xv = op_view(x, xl, g->B, g->Cin, hx);
    float *yv = (float *)op_view(y, yl, g->B, g->Cout, hy);
    if (g->t)
        vae_convt2d_forward(xv, w, b, yv, g->B, g->Cin, g->H, g->W, g->Cout, g->k, g->s, g->p,
                            g->op, g->layout, scratch);
    else
        vae_conv2d_forward(xv, w, b, yv, g->B, g->Cin, g->H, g->W, g->Cout, g->k, g->s, g->p,
                           g->layout, scratch);
    if (xl) free((void *)xv);
    op_back(y, yv, yl, g->B, g->Cout, hy);
}

static void run_backward(const geom *g, const float *x, const float *w, const float *dy,
                         float *dx, float *dw, float *db, float *scratch)
{
    int xl = (g->layout & VAE_CONV_X_NHWC) != 0, yl = (g->layout & VAE_CONV_Y_NHWC) != 0;
    int hx = g->H * g->W, hy = g->Ho * g->Wo;
    const float *xv = op_view(x, xl, g->B, g->Cin, hx), *dyv = op_view(dy, yl, g->B, g->Cout, hy);
    float *dxv = (float *)op_view(dx, xl, g->B, g->Cin, hx);
    if (g->t)
        vae_convt2d_backward(xv, w, dyv, dxv, dw, db, g->B, g->Cin, g->H, g->W, g->Cout, g->k,
                             g->s, g->p, g->op, g->layout, scratch);
    else
        vae_conv2d_backward(xv, w, dyv, dxv, dw, db, g->B, g->Cin, g->H, g->W, g->Cout, g->k,
                            g->s, g->p, g->layout, scratch);
    if (xl) free((void *)xv);
    if (yl) free((void *)dyv);
    op_back(dx, dxv, xl, g->B, g->Cin, hx);
}

/* ---------------------------------------------------------------------- references */

/* x and y indexing, NCHW. */
#define XI(g, n, c, i, j) ((((size_t)(n) * (g)->Cin + (c)) * (g)->H + (i)) * (g)->W + (j))
#define YI(g, n, o, i, j) ((((size_t)(n) * (g)->Cout + (o)) * (g)->Ho + (i)) * (g)->Wo + (j))
/* Conv2d weight [Cout,Cin,k,k]; ConvTranspose2d weight [Cin,Cout,k,k]. */
#define WC(g, o, c, u, v) ((((size_t)(o) * (g)->Cin + (c)) * (g)->k + (u)) * (g)->k + (v))
#define WT(g, c, o, u, v) ((((size_t)(c) * (g)->Cout + (o)) * (g)->k + (u)) * (g)->k + (v))

/*
 * Visits every (input pixel, weight, output pixel) triple of the op once:
 * the conv gathers over its output grid, the transposed conv scatters from
 * its input grid; either way the triple is x[n,c,xi,xj], weight wi,
 * y[n,o,yi,yj]. mode 0: y += w x; mode 1: dx += w dy, dw += x dy.
 */
static void ref_loops(const geom *g, const double *x, const double *w, double *y,
                      const double *dy, double *dx, double *dw, int mode)
{
    for (int n = 0; n < g->B; n++)
        for (int o = 0; o < g->Cout; o++)
            for (int c = 0; c < g->Cin; c++)
                for (int u = 0; u < g->k; u++)
                    for (int v = 0; v < g->k; v++) {
                        size_t wi = g->t ? WT(g, c, o, u, v) : WC(g, o, c, u, v);
                        /* (a, b) runs over the grid that the stride steps through. */
                        int A = g->t ? g->H : g->Ho, Bw = g->t ? g->W : g->Wo;
                        for (int a = 0; a < A; a++)
                            for (int bb = 0; bb < Bw; bb++) {
                                int ti = a * g->s - g->p + u, tj = bb * g->s - g->p + v;
                                size_t xi, yi;
                                if (g->t) {
                                    if (ti < 0 || ti >= g->Ho || tj < 0 || tj >= g->Wo) continue;
                                    xi = XI(g, n, c, a, bb);
                                    yi = YI(g, n, o, ti, tj);
                                } else {
                                    if (ti < 0 || ti >= g->H || tj < 0 || tj >= g->W) continue;
                                    xi = XI(g, n, c, ti, tj);
                                    yi = YI(g, n, o, a, bb);
                                }
                                if (mode == 0) {
                                    y[yi] += w[wi] * x[xi];
                                } else {
                                    dx[xi] += w[wi] * dy[yi];
                                    dw[wi] += x[xi] * dy[yi];
                                }
                            }
                    }
}

/* y = op(x, w) + b in double. */
static void ref_forward(const geom *g, const double *x, const double *w, const double *b,
                        double *y)
{
    size_t hw = (size_t)g->Ho * g->Wo;
    for (int n = 0; n < g->B; n++)
        for (int o = 0; o < g->Cout; o++)
            for (size_t i = 0; i < hw; i++) y[YI(g, n, o, 0, 0) + i] = b[o];
    ref_loops(g, x, w, y, NULL, NULL, NULL, 0);
}

/* dx = (dy -> x), dw = (dy -> w), db = sums of dy, in double, all overwritten. */
static void ref_backward(const geom *g, const double *x, const double *w, const double *dy,
                         double *dx, double *dw, double *db)
{
    memset(dx, 0, sizeof(double) * nx_of(g));
    memset(dw, 0, sizeof(double) * nw_of(g));
    size_t hw = (size_t)g->Ho * g->Wo;
    for (int o = 0; o < g->Cout; o++) {
        db[o] = 0;
        for (int n = 0; n < g->B; n++)
            for (size_t i = 0; i < hw; i++) db[o] += dy[YI(g, n, o, 0, 0) + i];
    }
    ref_loops(g, x, w, NULL, dy, dx, dw, 1);
}

/* ---------------------------------------------------------------------- (a) + (b) */

/* L(p) = sum(G .* ref_forward) with p one of x, w, b moved by +-h at entry i. */
static double fd_entry(const geom *g, double *xd, double *wd, double *bd, double *target,
                       size_t i, const double *Gd, double *yd)
{
    size_t ny = ny_of(g);
    double v = target[i];
    target[i] = v + FD_H;
    ref_forward(g, xd, wd, bd, yd);
    double lp = dot(Gd, yd, ny);
    target[i] = v - FD_H;
    ref_forward(g, xd, wd, bd, yd);
    double lm = dot(Gd, yd, ny);
    target[i] = v;
    return (lp - lm) / (2 * FD_H);
}

static void test_gradcheck(const geom *g)
{
    char what[160], label[224];
    describe(g, what, sizeof what);
    size_t nx = nx_of(g), ny = ny_of(g), nw = nw_of(g), nb = (size_t)g->Cout;
    size_t ns = scratch_of(g);
    CHECK(ns > 0);
    if (ns == 0) {
        fprintf(stderr, "  (in %s)\n", what);
        return;
    }
    float *x = fmalloc(nx), *w = fmalloc(nw), *b = fmalloc(nb), *G = fmalloc(ny);
    float *y = fmalloc(ny), *dx = fmalloc(nx), *dw = fmalloc(nw), *db = fmalloc(nb);
    float *scratch = fmalloc(ns);
    double *xd = dmalloc(nx), *wd = dmalloc(nw), *bd = dmalloc(nb), *Gd = dmalloc(ny);
    double *yd = dmalloc(ny);
    fill(x, nx, -1, 1);
    fill(w, nw, -1, 1);
    fill(b, nb, -1, 1);
    fill(G, ny, -1, 1);
    to_double(x, xd, nx);
    to_double(w, wd, nw);
    to_double(b, bd, nb);
    to_double(G, Gd, ny);

    /* (a) forward. */
    fill_nan(y, ny);
    fill_nan(scratch, ns);
    run_forward(g, x, w, b, y, scratch);
    ref_forward(g, xd, wd, bd, yd);
    for (size_t i = 0; i < ny; i++) {
        snprintf(label, sizeof label, "%s: y[%zu]", what, i);
        CHECK_CLOSE(label, y[i], yd[i], 1e-5, 1e-5);
        note(g->t, 0, y[i], yd[i], 1e-5, 1e-5);
    }

    /* (b) gradients of L = sum(G .* y). */
    fill_nan(dx, nx);
    fill_nan(scratch, ns);
    run_backward(g, x, w, G, dx, dw, db, scratch);
    for (size_t i = 0; i < nx; i++) {
        double fd = fd_entry(g, xd, wd, bd, xd, i, Gd, yd);
        snprintf(label, sizeof label, "%s: dx[%zu]", what, i);
        CHECK_CLOSE(label, dx[i], fd, 1e-4, 1e-5);
        note(g->t, 1, dx[i], fd, 1e-4, 1e-5);
    }
    for (size_t i = 0; i < nw; i++) {
        double fd = fd_entry(g, xd, wd, bd, wd, i, Gd, yd);
        snprintf(label, sizeof label, "%s: dw[%zu]", what, i);
        CHECK_CLOSE(label, dw[i], fd, 1e-4, 1e-5);
        note(g->t, 2, dw[i], fd, 1e-4, 1e-5);
    }
    for (size_t i = 0; i < nb; i++) {
        double fd = fd_entry(g, xd, wd, bd, bd, i, Gd, yd);
        snprintf(label, sizeof label, "%s: db[%zu]", what, i);
        CHECK_CLOSE(label, db[i], fd, 1e-4, 1e-5);
        note(g->t, 3, db[i], fd, 1e-4, 1e-5);
    }

    free(x), free(w), free(b), free(G), free(y), free(dx), free(dw), free(db), free(scratch);
    free(xd), free(wd), free(bd), free(Gd), free(yd);
}

/*
 * The sweep: every stride (1, 2) x padding (0, 1) x kernel (3, 4), twice,
 * with channel pairs, image sizes and batch rotating through the lists so
 * each value meets several geometries; the transposed conv adds op = 1 at
 * stride 2.
 */
static void test_sweep(void)
{
    static const int chans[] = { 1, 2, 3, 5 };
    static const int sizes[][2] = { { 5, 7 }, { 9, 9 }, { 7, 5 }, { 9, 9 } };
    int count[2] = { 0, 0 };
    for (int pass = 0; pass < 2; pass++)
        for (int idx = 0; idx < 8; idx++) {
            int s = 1 + idx / 4, p = (idx / 2) % 2, k = 3 + idx % 2;
            int Cin = chans[(idx + pass) % 4], Cout = chans[(idx + 1 + 2 * pass) % 4];
            const int *hw = sizes[2 * pass + (idx / 2) % 2];
            int B = (idx / 4 + idx + pass) % 2 ? 3 : 1;
            geom g = make(0, B, Cin, hw[0], hw[1], Cout, k, s, p, 0);
            g.layout = (idx + pass) % 4;
            test_gradcheck(&g);
            count[0]++;
            for (int op = 0; op < s; op++) {
                geom t = make(1, B, Cin, hw[0], hw[1], Cout, k, s, p, op);
                t.layout = (idx + pass + op + 2) % 4;
                test_gradcheck(&t);
                count[1]++;
            }
        }
    printf("sweep: %d conv2d and %d convt2d geometries\n", count[0], count[1]);
}

/*
 * The same sweep with 8 or more channels on the side that im2col reads
 * (the conv's input, the transposed conv's output): conv.c lowers those
 * patch-major, channels last, in chunks of samples.
 */
static void test_sweep_patch_major(void)
{
    static const int many[] = { 8, 9, 11 }, few[] = { 2, 3, 1, 4 };
    static const int sizes[][2] = { { 5, 7 }, { 7, 5 } };
    int count[2] = { 0, 0 };
    for (int idx = 0; idx < 8; idx++) {
        int s = 1 + idx / 4, p = (idx / 2) % 2, k = 3 + idx % 2;
        int C = many[idx % 3], other = few[idx % 4], B = idx % 3 == 1 ? 2 : 1;
        const int *hw = sizes[idx % 2];
        /* NCHW, then one of the three channels-last combinations. */
        for (int lay = 0; lay < 2; lay++) {
            geom g = make(0, B, C, hw[0], hw[1], other, k, s, p, 0);
            g.layout = lay ? 1 + idx % 3 : 0;
            test_gradcheck(&g);
            count[0]++;
            for (int op = 0; op < s; op++) {
                geom t = make(1, B, other, hw[1], hw[0], C, k, s, p, op);
                t.layout = lay ? 1 + (idx + op + 1) % 3 : 0;
                test_gradcheck(&t);
                count[1]++;
            }
        }
    }
    printf("patch-major sweep: %d conv2d and %d convt2d geometries\n", count[0], count[1]);
}

/*
 * 3x3 stride-1 convolutions with padding 1 and 8 or more input channels:
 * conv.c computes them by Winograd's F(2x2, 3x3) in tiles of 2x2 outputs,
 * its transforms in blocks of 16 channels, or with fewer than 8 output
 * channels tap by tap. The sweep takes channel counts below, at and past a
 * block (8, 9, 16, 17, 20) and 2 to 7 output channels, images whose tiles
 * are whole or cut by the image's edge (even and odd sides, 1x1, 2x3, 1x9,
 * 9x1), batch 1 (2 for the first), in every layout (the ReLU flags: the hvae's
 * layers and the chunked geometries in main).
 */
static void test_sweep_winograd(void)
{
    /* The last four have fewer than 8 output channels: conv.c's tap-wise path. */
    static const int chans[][2] = { { 8, 9 },  { 9, 8 }, { 17, 8 }, { 8, 20 }, { 16, 9 }, { 9, 17 },
                                    { 9, 16 }, { 8, 3 }, { 9, 7 },  { 16, 5 }, { 11, 2 } };
    static const int sizes[][2] = { { 5, 7 }, { 7, 5 }, { 4, 4 }, { 1, 1 }, { 2, 3 }, { 6, 3 }, { 1, 9 }, { 9, 1 } };
    int n = 0;
    for (int idx = 0; idx < 11; idx++)
        for (int lay = 0; lay < 4; lay++) {
            const int *hw = sizes[(idx + lay) % 8];
            geom g = make(0, idx == 0 ? 2 : 1, chans[idx][0], hw[0], hw[1], chans[idx][1], 3, 1, 1, 0);
            g.layout = lay;
            test_gradcheck(&g);
            n++;
        }
    printf("winograd sweep: %d conv2d geometries\n", n);
}

/*
 * Geometries whose grid rows fall into many bands (conv.c leaves a band's
 * padding kernel rows out of the products): windows wholly in the padding
 * (padding 3 with a 3x3 kernel), nine bands against conv.c's cap of eight
 * (5x5 kernel, padding 4), eight bands above full-kernel rows (9x9 kernel,
 * padding 8: past the cap the rest must take the full kernel), and the
 * same for the transposed conv, in NCHW and channels last.
 */
static void test_bands(void)
{
    geom gs[] = {
        make(0, 2, 8, 6, 5, 3, 3, 1, 3, 0),
        make(0, 1, 9, 5, 6, 2, 5, 1, 4, 0),
        make(0, 2, 8, 7, 7, 3, 4, 2, 3, 0),
        make(0, 1, 8, 9, 1, 1, 9, 1, 8, 0),
        make(1, 2, 3, 8, 6, 8, 3, 1, 2, 0),
        make(1, 1, 2, 7, 5, 9, 5, 1, 3, 0),
        make(1, 2, 3, 4, 4, 8, 4, 2, 2, 1),
    };
    int n = 0;
    for (size_t i = 0; i < sizeof gs / sizeof gs[0]; i++)
        for (int lay = 0; lay < 2; lay++) {
            gs[i].layout = lay ? VAE_CONV_X_NHWC | VAE_CONV_Y_NHWC : 0;
            test_gradcheck(&gs[i]);
            n++;
        }
    printf("band geometries: %d\n", n);
}

/* ---------------------------------------------------------------------- (c) */

static void test_accumulate(const geom *g)
{
    char what[160], label[224];
    describe(g, what, sizeof what);
    size_t nx = nx_of(g), ny = ny_of(g), nw = nw_of(g), nb = (size_t)g->Cout, ns = scratch_of(g);
    float *x = fmalloc(nx), *w = fmalloc(nw), *dy = fmalloc(ny), *scratch = fmalloc(ns);
    float *dx1 = fmalloc(nx), *dx2 = fmalloc(nx);
    float *dw1 = fmalloc(nw), *db1 = fmalloc(nb); /* one call from zero */
    float *dw2 = fmalloc(nw), *db2 = fmalloc(nb); /* two calls from zero */
    float *dw3 = fmalloc(nw), *db3 = fmalloc(nb); /* one call from R */
    float *R = fmalloc(nw + nb);
    float *dw4 = fmalloc(nw), *db4 = fmalloc(nb); /* one call with dx == NULL */
    fill(x, nx, -1, 1);
    fill(w, nw, -1, 1);
    fill(dy, ny, -1, 1);
    fill(R, nw + nb, -1, 1);
    memcpy(dw3, R, sizeof(float) * nw);
    memcpy(db3, R + nw, sizeof(float) * nb);

    fill_nan(dx1, nx);
    run_backward(g, x, w, dy, dx1, dw1, db1, scratch);
    fill_nan(dx2, nx);
    run_backward(g, x, w, dy, dx2, dw2, db2, scratch);
    run_backward(g, x, w, dy, dx2, dw2, db2, scratch);
    run_backward(g, x, w, dy, dx2, dw3, db3, scratch);
    run_backward(g, x, w, dy, NULL, dw4, db4, scratch);
    /* The conv's input gradient alone (dw and db NULL): the same dx, bit for bit. */
    float *dx5 = fmalloc(nx);
    fill_nan(dx5, nx);
    if (!g->t) {
        run_backward(g, x, w, dy, dx5, NULL, NULL, scratch);
        CHECK(memcmp(dx1, dx5, sizeof(float) * nx) == 0);
    }
    free(dx5);

    /* dx is overwritten: the second call's result equals the first's. */
    CHECK(memcmp(dx1, dx2, sizeof(float) * nx) == 0);
    /* dx == NULL changes nothing else. */
    CHECK(memcmp(dw1, dw4, sizeof(float) * nw) == 0);
    CHECK(memcmp(db1, db4, sizeof(float) * nb) == 0);
    for (size_t i = 0; i < nw; i++) {
        snprintf(label, sizeof label, "%s: twice dw[%zu]", what, i);
        CHECK_CLOSE(label, dw2[i], 2.0 * dw1[i], 1e-5, 1e-6);
        snprintf(label, sizeof label, "%s: from R dw[%zu]", what, i);
        CHECK_CLOSE(label, dw3[i], (double)R[i] + dw1[i], 1e-5, 1e-6);
    }
    for (size_t i = 0; i < nb; i++) {
        snprintf(label, sizeof label, "%s: twice db[%zu]", what, i);
        CHECK_CLOSE(label, db2[i], 2.0 * db1[i], 1e-5, 1e-6);
        snprintf(label, sizeof label, "%s: from R db[%zu]", what, i);
        CHECK_CLOSE(label, db3[i], (double)R[nw + i] + db1[i], 1e-5, 1e-6);
    }
    free(x), free(w), free(dy), free(scratch), free(dx1), free(dx2), free(dw1), free(db1);
    free(dw2), free(db2), free(dw3), free(db3), free(R), free(dw4), free(db4);
}

/* ---------------------------------------------------------------------- (d) */

static void test_default_layer(const geom *g)
{
    char what[160], label[224];
    describe(g, what, sizeof what);
    size_t nx = nx_of(g), ny = ny_of(g), nw = nw_of(g), nb = (size_t)g->Cout, ns = scratch_of(g);
    /* PyTorch's default init bound, 1/sqrt(fan_in), keeps outputs O(1). */
    int fan_in = (g->t ? g->Cout : g->Cin) * g->k * g->k;
    float bound = 1.0f / sqrtf((float)fan_in);
    float *x = fmalloc(nx), *w = fmalloc(nw), *b = fmalloc(nb), *dy = fmalloc(ny);
    float *y = fmalloc(ny), *dx = fmalloc(nx), *dw = fmalloc(nw), *db = fmalloc(nb);
    float *scratch = fmalloc(ns);
    double *xd = dmalloc(nx), *wd = dmalloc(nw), *bd = dmalloc(nb), *dyd = dmalloc(ny);
    double *yd = dmalloc(ny), *dxd = dmalloc(nx), *dwd = dmalloc(nw), *dbd = dmalloc(nb);
    fill(x, nx, -1, 1);
    fill(w, nw, -bound, bound);
    fill(b, nb, -bound, bound);
    fill(dy, ny, -1, 1);
    to_double(x, xd, nx);
    to_double(w, wd, nw);
    to_double(b, bd, nb);
    to_double(dy, dyd, ny);

    fill_nan(y, ny);
    fill_nan(scratch, ns);
    run_forward(g, x, w, b, y, scratch);
    ref_forward(g, xd, wd, bd, yd);
    if (g->layout & VAE_CONV_RELU)
        for (size_t i = 0; i < ny; i++) yd[i] = yd[i] > 0.0 ? yd[i] : 0.0;
    for (size_t i = 0; i < ny; i++) {
        snprintf(label, sizeof label, "%s: y[%zu]", what, i);
        CHECK_CLOSE(label, y[i], yd[i], 1e-4, 1e-5);
    }
    fill_nan(dx, nx);
    run_backward(g, x, w, dy, dx, dw, db, scratch);
    ref_backward(g, xd, wd, dyd, dxd, dwd, dbd);
    if (g->layout & VAE_CONV_DX_RELU) /* x as a ReLU output: its derivative, 0 where x <= 0 */
        for (size_t i = 0; i < nx; i++) dxd[i] = x[i] > 0.0f ? dxd[i] : 0.0;
    for (size_t i = 0; i < nx; i++) {
        snprintf(label, sizeof label, "%s: dx[%zu]", what, i);
        CHECK_CLOSE(label, dx[i], dxd[i], 1e-4, 1e-5);
    }
    /*
     * A dw entry sums B*Hout*Wout products (1960 at batch 40 of a 7x7
     * image), so its scale, and its rounding error, grow with the batch:
     * the absolute tolerance is 1e-6 of the largest |dw| (at least 1e-5),
     * about sqrt(n) * 2e-8 of it. At batch 40 of 32 channels, the largest
     * |dw| is about 53; both lowerings' largest errors there (measured
     * against double loops with the same data) were 1.4e-5 (im2col) and
     * 2.3e-5 (Winograd), against 5.3e-5.
     */
    double dw_max = 0.0;
    for (size_t i = 0; i < nw; i++) dw_max = fabs(dwd[i]) > dw_max ? fabs(dwd[i]) : dw_max;
    double dw_atol = 1e-6 * dw_max > 1e-5 ? 1e-6 * dw_max : 1e-5;
    for (size_t i = 0; i < nw; i++) {
        snprintf(label, sizeof label, "%s: dw[%zu]", what, i);
        CHECK_CLOSE(label, dw[i], dwd[i], 1e-4, dw_atol);
    }
    for (size_t i = 0; i < nb; i++) {
        snprintf(label, sizeof label, "%s: db[%zu]", what, i);
        CHECK_CLOSE(label, db[i], dbd[i], 1e-4, 1e-5);
    }
    free(x), free(w), free(b), free(dy), free(y), free(dx), free(dw), free(db), free(scratch);
    free(xd), free(wd), free(bd), free(dyd), free(yd), free(dxd), free(dwd), free(dbd);
}

/* ---------------------------------------------------------------------- (e) */

static void test_scratch_sizes(void)
{
    /*
     * Fewer than 8 channels on the im2col side (the conv's input, the
     * transposed conv's output): one sample's column matrix (Cin*k*k *
     * Hout*Wout for the conv, Cout*k*k * H*W for the transposed conv) plus
     * one channel's s*s stride phases of the padded image, s*s * ceil((Hi +
     * 2p) / s) * ceil((Wi + 2p) / s), where Hi x Wi is the conv's input (the
     * transposed conv's output), plus one sample of that image in NCHW.
     */
    CHECK_EQ(vae_conv2d_scratch(128, 1, 28, 28, 32, 4, 2, 1), 1 * 16 * 14 * 14 + 4 * 15 * 15 + 1 * 28 * 28);
    CHECK_EQ(vae_convt2d_scratch(128, 32, 14, 14, 1, 4, 2, 1, 0), 1 * 16 * 14 * 14 + 4 * 15 * 15 + 1 * 28 * 28);
    CHECK_EQ(vae_conv2d_scratch(3, 2, 5, 7, 3, 3, 2, 0), 2 * 9 * 2 * 3 + 4 * 3 * 4 + 2 * 5 * 7);
    /* Hout 11, Wout 15 (output padding 1). */
    CHECK_EQ(vae_convt2d_scratch(3, 2, 5, 7, 3, 4, 2, 1, 1), 3 * 16 * 5 * 7 + 4 * 7 * 9 + 3 * 11 * 15);
    /* Stride 1: a single phase, the padded image. */
    CHECK_EQ(vae_conv2d_scratch(2, 3, 6, 5, 4, 3, 1, 1), 3 * 9 * 6 * 5 + 8 * 7 + 3 * 6 * 5);
    /*
     * 8 or more: a chunk of nb = min(B, ceil(588 / grid)) samples, grid the
     * output pixels of the conv (input pixels of the transposed conv):
     * column matrix nb*grid * k*k*Ck, the image in NHWC nb*img*Ck, the grid
     * side nb*grid*Cg, and two permuted weight blocks 2 * k*k*Ck*Cg, where
     * Ck is the im2col side's channel count and Cg the other.
     */
    CHECK_EQ(vae_conv2d_scratch(128, 32, 14, 14, 64, 4, 2, 1),
             12 * 49 * 512 + 12 * 196 * 32 + 12 * 49 * 64 + 2 * 512 * 64);
    CHECK_EQ(vae_convt2d_scratch(128, 64, 7, 7, 32, 4, 2, 1, 0),
             12 * 49 * 512 + 12 * 196 * 32 + 12 * 49 * 64 + 2 * 512 * 64);
    /*
     * 3x3, stride 1, padding 1, 8 or more channels on both sides
     * (Winograd): a chunk of nb = min(B, max(1, 512 / tiles)) samples,
     * tiles = ceil(H/2) * ceil(W/2): x and y channels last nb*H*W*(Cin +
     * Cout), the 16 transform-domain matrices of the input and output
     * tiles 16 * (nb*tiles*C + 16) for each side, the weights and their
     * gradient there 2 * 16*Cout*Cin, a row of zeros max(Cin, Cout), a
     * band of tiles' columns 4 * (2 * ceil(W/2) + 2) * Cin, and a tile's
     * discard rows (or its output gradient, partly transformed) 4 * Cout.
     */
    CHECK_EQ(vae_conv2d_scratch(128, 64, 7, 7, 16, 3, 1, 1),
             32 * 49 * 80 + 16 * (512 * 64 + 16) + 16 * (512 * 16 + 16) + 2 * 16 * 1024 + 64 + 4 * 10 * 64 + 4 * 16);
    CHECK_EQ(vae_conv2d_scratch(128, 16, 28, 28, 16, 3, 1, 1),
             2 * 784 * 32 + 16 * (392 * 16 + 16) * 2 + 2 * 16 * 256 + 16 + 4 * 30 * 16 + 4 * 16);
    CHECK_EQ(vae_conv2d_scratch(3, 9, 5, 7, 8, 3, 1, 1),
             3 * 35 * 17 + 16 * (3 * 12 * 9 + 16) + 16 * (3 * 12 * 8 + 16) + 2 * 16 * 72 + 9 + 4 * 10 * 9 + 4 * 8);
    /*
     * 3x3, stride 1, padding 1, 8 or more input channels and fewer than 8
     * output channels (taps): a chunk of nb = min(B, ceil(2048 / (H*W)))
     * samples, px = nb*H*W pixels: x and y channels last px * (Cin + Cout),
     * the taps' products px * 9*Cout, the weights in tap order and their
     * gradient 2 * 9*Cout*Cin.
     */
    CHECK_EQ(vae_conv2d_scratch(128, 16, 28, 28, 1, 3, 1, 1), 2352 * 17 + 2352 * 9 + 2 * 9 * 16);
    CHECK_EQ(vae_conv2d_scratch(2, 9, 6, 6, 2, 3, 1, 1), 72 * 11 + 72 * 18 + 2 * 18 * 9);
    /* A small batch is one chunk of B samples. */
    CHECK_EQ(vae_conv2d_scratch(3, 8, 5, 7, 2, 3, 2, 1), 3 * 12 * 72 + 3 * 35 * 8 + 3 * 12 * 2 + 2 * 72 * 2);
    /* Invalid geometry gives 0. */
    CHECK_EQ(vae_conv2d_scratch(1, 1, 3, 3, 1, 4, 1, 0), 0);  /* kernel larger than the image */
    CHECK_EQ(vae_conv2d_scratch(1, 1, 3, 5, 1, 4, 1, 0), 0);  /* ... in one direction */
    CHECK_EQ(vae_conv2d_scratch(1, 1, 8, 8, 1, 3, 0, 1), 0);  /* stride 0 */
    CHECK_EQ(vae_conv2d_scratch(1, 0, 8, 8, 1, 3, 1, 1), 0);  /* no channels */
    CHECK_EQ(vae_conv2d_scratch(1, 1, 8, 8, 1, 3, 1, -1), 0); /* negative padding */
    CHECK_EQ(vae_convt2d_scratch(1, 1, 8, 8, 1, 4, 2, 1, 2), 0); /* op >= s */
    CHECK_EQ(vae_convt2d_scratch(1, 1, 8, 8, 1, 4, 1, 1, 1), 0); /* op >= s */
    CHECK_EQ(vae_convt2d_scratch(1, 1, 8, 8, 1, 4, 2, 1, -1), 0);
    CHECK_EQ(vae_convt2d_scratch(1, 1, 1, 1, 1, 1, 1, 1, 0), 0); /* Hout = -1 */
    CHECK_EQ(vae_convt2d_scratch(1, 1, 1, 1, 1, 3, 1, 1, 0), 1 * 9 * 1 * 1 + 3 * 3 + 1); /* Hout = 1 */
}

int main(void)
{
    test_scratch_sizes();
    test_sweep();
    test_sweep_patch_major();
    test_sweep_winograd();
    test_bands();

    geom acc[] = {
        make(0, 3, 3, 9, 7, 5, 4, 2, 1, 0),
        make(1, 3, 5, 5, 7, 3, 4, 2, 1, 1),
        make(1, 2, 2, 6, 6, 3, 3, 1, 0, 0),
        /* Patch-major, several chunks: a 3x4 grid is 49 samples a chunk, so 70 is 49 + 21. */
        make(0, 70, 8, 5, 7, 3, 3, 2, 1, 0),
        make(1, 70, 3, 3, 4, 9, 3, 2, 1, 1),
        make(0, 70, 8, 5, 7, 3, 3, 2, 1, 0),
        make(1, 70, 3, 3, 4, 9, 3, 2, 1, 1),
        make(0, 3, 3, 9, 7, 5, 4, 2, 1, 0),
        /* Winograd, several chunks: 16 tiles of a 7x7 image, 32 samples a chunk, so 40 is 32 + 8. */
        make(0, 40, 9, 7, 7, 8, 3, 1, 1, 0),
        make(0, 40, 9, 7, 7, 8, 3, 1, 1, 0),
        /* Taps (fewer than 8 output channels), several chunks: 57 samples of 6x6, so 70 is 57 + 13. */
        make(0, 70, 9, 6, 6, 2, 3, 1, 1, 0),
        make(0, 70, 9, 6, 6, 2, 3, 1, 1, 0),
    };
    /* A geometry listed twice runs the second time channels last (the layouts set below). */
    acc[5].layout = acc[6].layout = acc[7].layout = acc[9].layout = acc[11].layout =
        VAE_CONV_X_NHWC | VAE_CONV_Y_NHWC;
    for (size_t i = 0; i < sizeof acc / sizeof acc[0]; i++) test_accumulate(&acc[i]);

    geom layers[] = {
        make(0, 2, 1, 28, 28, 32, 4, 2, 1, 0),
        make(0, 2, 32, 14, 14, 64, 4, 2, 1, 0),
        make(1, 2, 64, 7, 7, 32, 4, 2, 1, 0),
        make(1, 2, 32, 14, 14, 1, 4, 2, 1, 0),
    };
    CHECK_EQ(layers[0].Ho, 14);
    CHECK_EQ(layers[1].Ho, 7);
    CHECK_EQ(layers[2].Ho, 14);
    CHECK_EQ(layers[3].Ho, 28);
    for (size_t i = 0; i < sizeof layers / sizeof layers[0]; i++) test_default_layer(&layers[i]);
    /* The same layers with the layouts the model gives them: channels last between conv layers. */
    layers[0].layout = VAE_CONV_Y_NHWC;
    layers[1].layout = VAE_CONV_X_NHWC;
    layers[2].layout = VAE_CONV_Y_NHWC;
    layers[3].layout = VAE_CONV_X_NHWC;
    for (size_t i = 0; i < sizeof layers / sizeof layers[0]; i++) test_default_layer(&layers[i]);
    /* And with the ReLU flags (x half negative, so the dx gate zeroes about half of dx), in
     * the model's layouts and then with y NCHW (the other output paths). */
    for (size_t i = 0; i < sizeof layers / sizeof layers[0]; i++) {
        layers[i].layout |= VAE_CONV_RELU | VAE_CONV_DX_RELU;
        test_default_layer(&layers[i]);
        layers[i].layout &= ~VAE_CONV_Y_NHWC;
        test_default_layer(&layers[i]);
    }
    /*
     * The Winograd layers of the default hvae (its residual blocks at 16,
     * 32 and 64 channels, a group's prior and posterior to 16 channels) and
     * its tap-wise output layer (16 -> 1), channels last as the model keeps
     * them, with the ReLU flags, and NCHW.
     */
    geom hv_layers[] = {
        make(0, 2, 16, 28, 28, 16, 3, 1, 1, 0),
        make(0, 2, 32, 14, 14, 32, 3, 1, 1, 0),
        make(0, 2, 64, 7, 7, 64, 3, 1, 1, 0),
        make(0, 2, 64, 7, 7, 16, 3, 1, 1, 0),
        make(0, 2, 32, 14, 14, 16, 3, 1, 1, 0),
        make(0, 2, 16, 28, 28, 1, 3, 1, 1, 0),
    };
    for (size_t i = 0; i < sizeof hv_layers / sizeof hv_layers[0]; i++) {
        hv_layers[i].layout = VAE_CONV_X_NHWC | VAE_CONV_Y_NHWC | VAE_CONV_RELU | VAE_CONV_DX_RELU;
        test_default_layer(&hv_layers[i]);
        hv_layers[i].layout = 0;
        test_default_layer(&hv_layers[i]);
    }
    /*
     * The patch-major chunks, uneven last one included (49 + 21 samples),
     * and the Winograd ones (7x7: 32 samples a chunk, 32 + 8; 28x28: two
     * samples a chunk, 2 + 1), against the loops.
     */
    geom chunked[] = {
        make(0, 70, 8, 5, 7, 3, 3, 2, 1, 0),
        make(1, 70, 3, 3, 4, 9, 3, 2, 1, 1),
        make(0, 40, 16, 6, 6, 4, 3, 1, 1, 0),
        make(0, 40, 32, 7, 7, 32, 3, 1, 1, 0),
        make(0, 3, 16, 28, 28, 16, 3, 1, 1, 0),
        make(0, 70, 9, 6, 6, 2, 3, 1, 1, 0),
        make(0, 2, 8, 48, 48, 8, 3, 1, 1, 0), /* 576 tiles a sample, past a chunk's 512 */
    };
    for (size_t i = 0; i < sizeof chunked / sizeof chunked[0]; i++) {
        test_default_layer(&chunked[i]);
        chunked[i].layout = VAE_CONV_X_NHWC | VAE_CONV_Y_NHWC;
        test_default_layer(&chunked[i]);
        chunked[i].layout = VAE_CONV_RELU | VAE_CONV_DX_RELU;
        test_default_layer(&chunked[i]);
        chunked[i].layout |= VAE_CONV_X_NHWC | VAE_CONV_Y_NHWC;
        test_default_layer(&chunked[i]);
    }

    static const char *names[] = { "y", "dx", "dw", "db" };
    for (int t = 0; t < 2; t++) {
        printf("%s sweep: largest |err| / tolerance:", t ? "convt2d" : "conv2d");
        for (int q = 0; q < 4; q++) printf(" %s %.2g", names[q], g_worst[t][q]);
        printf("\n");
    }
    printf("test_conv: %d checks, %d failed\n", g_checks, g_failures);
    return g_failures ? 1 : 0;
}
