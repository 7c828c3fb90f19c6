/*
 * test_checkpoint.c: tests of checkpoint.h.
 *
 * Everything is written under a fresh mkdtemp directory in /tmp, removed at
 * the end. (a) A checkpoint of a small model (params from a seed, Adam
 * moments filled with distinct values including -0, a subnormal and large
 * magnitudes) with a fully filled configuration and training state is read
 * back: every configuration field and the state are equal, and params, m and
 * v are bit-identical; a model of another shape is refused. (b) The file
 * itself: every dataset under /params, /optimizer/m and /optimizer/v carries
 * the Fletcher32 filter, and the root has the attributes format,
 * format_version, step, epoch, world_size and seed with the saved values.
 * (c) keep-K: steps 1..5 saved with keep 3 leave exactly step-3, step-4 and
 * step-5 and no temporary files. (d) A copy of a newer checkpoint truncated
 * to half its size is refused (read_meta or read_tensors returns non-zero)
 * and vae_ckpt_find_latest skips it for the next newest. (e) A copy with one
 * byte flipped inside the stored chunk of /params/fc1.weight is refused by
 * vae_ckpt_read_tensors (checksum) and skipped by vae_ckpt_find_latest.
 * (f) /ema, the parameters' moving average: its round trip and which
 * weights each kind of read takes; the decay of vae_ema_update.
 * Each damaged file is first checked intact (it is then the one
 * find_latest returns), so each refusal is due to the damage alone.
 * The exit code is the verdict. The library's messages about the damaged
 * files are expected output.
 */
#define _XOPEN_SOURCE 700

#include "mpivae/checkpoint.h"
#include "mpivae/model.h"
#include "mpivae/optim.h"
#include "mpivae/status.h"
#include "mpivae/train.h"

#include <dirent.h>
#include <fcntl.h>
#include <float.h>
#include <ftw.h>
#include <hdf5.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"

#define CHECK_EQ_U64(a, b)                                                                   \
    do {                                                                                     \
        unsigned long long a_ = (unsigned long long)(a), b_ = (unsigned long long)(b);       \
        g_checks++;                                                                          \
        if (a_ != b_) {                                                                      \
            g_failures++;                                                                    \
            fprintf(stderr, "%s:%d: check failed: %s == %s (%llu vs %llu)\n", __FILE__,     \
                    __LINE__, #a, #b, a_, b_);                                               \
        }                                                                                    \
    } while (0)

/* Exact equality of doubles (they are stored as float64 and read back). */
#define CHECK_EQ_DBL(a, b)                                                                   \
    do {                                                                                     \
        double a_ = (double)(a), b_ = (double)(b);                                           \
        g_checks++;                                                                          \
        if (memcmp(&a_, &b_, sizeof a_) != 0) {                                              \
            g_failures++;                                                                    \
            fprintf(stderr, "%s:%d: check failed: %s == %s (%.17g vs %.17g)\n", __FILE__,   \
                    __LINE__, #a, #b, a_, b_);                                               \
        }                                                                                    \
    } while (0)

#define CHECK_STREQ(a, b)                                                                    \
    do {                                                                                     \
        const char *a_ = (a), *b_ = (b);                                                     \
        g_checks++;                                                                          \
        if (strcmp(a_, b_) != 0) {                                                           \
            g_failures++;                                                                    \
            fprintf(stderr, "%s:%d: check failed: %s == %s ('%s' vs '%s')\n", __FILE__,     \
                    __LINE__, #a, #b, a_, b_);                                               \
        }                                                                                    \
    } while (0)

static char g_dir[64];

/* Returns "<g_dir>/<name>" in a static rotating buffer. */
static const char *tpath(const char *name)
{
    static char buf[8][512];
    static int k;
    char *p = buf[k++ % 8];
    snprintf(p, 512, "%s/%s", g_dir, name);
    return p;
}

static int file_exists(const char *path) { return access(path, F_OK) == 0; }

static long file_size(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 ? (long)sb.st_size : -1;
}

/* Copies the first `len` bytes of src to dst (all of it when len < 0). Returns 0 on success. */
static int copy_file(const char *src, const char *dst, long len)
{
    FILE *in = fopen(src, "rb"), *out = fopen(dst, "wb");
    int rc = in && out ? 0 : -1;
    char buf[8192];
    long left = len < 0 ? -1 : len;
    while (!rc && left != 0) {
        size_t want = left < 0 || left > (long)sizeof buf ? sizeof buf : (size_t)left;
        size_t got = fread(buf, 1, want, in);
        if (got == 0) break;
        if (fwrite(buf, 1, got, out) != got) rc = -1;
        if (left > 0) left -= (long)got;
    }
    if (in) fclose(in);
    if (out && fclose(out) != 0) rc = -1;
    return rc;
}

/* ---------------------------------------------------------------------- fixtures */

static vae_arch small_arch(void)
{
    vae_arch a;
    memset(&a, 0, sizeof a);
    a.kind = VAE_MODEL_MLP;
    a.C = 1;
    a.Hh = 3;
    a.W = 5;
    a.n_hidden = 2;
    a.hidden[0] = 9;
    a.hidden[1] = 6;
    a.latent = 3;
    a.loss = VAE_LOSS_MSE;
    return a;
}

/* A model with params from a seed and distinct, awkward Adam moments. */
static int make_model(vae_model *m, uint64_t seed)
{
    vae_arch a = small_arch();
    int rc = vae_model_init(m, &a, 4);
    if (rc) return rc;
    vae_model_init_params(m, seed);
    for (size_t i = 0; i < m->n_params; i++) {
        m->m[i] = (float)((double)i * 1e-3 - 0.25) * (i % 2 ? 1.0f : -1.0f);
        m->v[i] = (float)((double)(i + 1) * 3.7e-5) + (float)seed * 1e-6f;
    }
    m->m[0] = -0.0f;
    m->m[1] = FLT_MIN / 8;   /* subnormal */
    m->m[2] = FLT_MAX / 3;
    m->v[0] = FLT_MIN;
    m->v[1] = 1e30f;
    return 0;
}

/* Every configuration field set to a value that differs from its default. */
static void make_config(vae_config *c, const vae_arch *a)
{
    vae_config_defaults(c);
    c->arch = *a;
    snprintf(c->data, sizeof c->data, "/data/train set.h5:/images");
    snprintf(c->test_data, sizeof c->test_data, "/data/test.h5:/x");
    snprintf(c->out, sizeof c->out, "%s", g_dir);
    c->beta = 0.3;
    c->warmup = 250;
    c->epochs = 7;
    c->batch = 96;
    c->lr = 3.14e-4;
    c->beta1 = 0.85;
    c->beta2 = 0.995;
    c->adam_eps = 1e-7;
    c->seed = 0xFEDCBA9876543210ull; /* all 64 bits matter */
    c->log_every = 11;
    c->eval_every = 13;
    c->sample_every = 17;
    c->ckpt_every = 19;
    c->keep = 4;
    c->max_skips = 6;
    c->in_memory = 0;
    c->max_steps = 12345;
}

static vae_train_state make_state(long step)
{
    vae_train_state s;
    memset(&s, 0, sizeof s);
    s.step = step;
    s.epoch = 2 + step;
    s.epoch_step = 5;
    s.adam_t = step > 0 ? step - 1 : 0;
    s.skips = 1;
    s.world_size = 4;
    return s;
}

/* ---------------------------------------------------------------------- (a) round trip */

static void check_config_equal(const vae_config *x, const vae_config *y)
{
    CHECK_EQ(x->arch.kind, y->arch.kind);
    CHECK_EQ(x->arch.C, y->arch.C);
    CHECK_EQ(x->arch.Hh, y->arch.Hh);
    CHECK_EQ(x->arch.W, y->arch.W);
    CHECK_EQ(x->arch.n_hidden, y->arch.n_hidden);
    for (int i = 0; i < x->arch.n_hidden && i < VAE_MAX_HIDDEN; i++)
        CHECK_EQ(x->arch.hidden[i], y->arch.hidden[i]);
    CHECK_EQ(x->arch.latent, y->arch.latent);
    CHECK_EQ(x->arch.loss, y->arch.loss);
    CHECK_STREQ(x->data, y->data);
    CHECK_STREQ(x->test_data, y->test_data);
    CHECK_STREQ(x->out, y->out);
    CHECK_EQ_DBL(x->beta, y->beta);
    CHECK_EQ(x->warmup, y->warmup);
    CHECK_EQ(x->epochs, y->epochs);
    CHECK_EQ(x->batch, y->batch);
    CHECK_EQ_DBL(x->lr, y->lr);
    CHECK_EQ_DBL(x->beta1, y->beta1);
    CHECK_EQ_DBL(x->beta2, y->beta2);
    CHECK_EQ_DBL(x->adam_eps, y->adam_eps);
    CHECK_EQ_U64(x->seed, y->seed);
    CHECK_EQ(x->log_every, y->log_every);
    CHECK_EQ(x->eval_every, y->eval_every);
    CHECK_EQ(x->sample_every, y->sample_every);
    CHECK_EQ(x->ckpt_every, y->ckpt_every);
    CHECK_EQ(x->keep, y->keep);
    CHECK_EQ(x->max_skips, y->max_skips);
    CHECK_EQ(x->in_memory, y->in_memory);
    CHECK_EQ(x->max_steps, y->max_steps);
}

static void check_state_equal(const vae_train_state *x, const vae_train_state *y)
{
    CHECK_EQ(x->step, y->step);
    CHECK_EQ(x->epoch, y->epoch);
    CHECK_EQ(x->epoch_step, y->epoch_step);
    CHECK_EQ(x->adam_t, y->adam_t);
    CHECK_EQ(x->skips, y->skips);
    CHECK_EQ(x->world_size, y->world_size);
}

static int has_tmp_files(const char *ckdir)
{
    DIR *d = opendir(ckdir);
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (strncmp(e->d_name, ".step-", 6) == 0 || (len >= 4 && strcmp(e->d_name + len - 4, ".tmp") == 0))
            n++;
    }
    closedir(d);
    return n;
}

static char g_ckpt[1024]; /* the checkpoint written by test_roundtrip, used by test_file_layout */

static void test_roundtrip(void)
{
    vae_model m, m2, m3;
    memset(&m2, 0, sizeof m2);
    memset(&m3, 0, sizeof m3);
    int rc = make_model(&m, 1234);
    CHECK_EQ(rc, 0);
    if (rc) return;
    vae_config cfg, cfg2;
    make_config(&cfg, &m.arch);
    vae_train_state st = make_state(17), st2;

    char path[1024] = "";
    rc = vae_ckpt_save(tpath("run"), &m, &cfg, &st, 3, path, sizeof path);
    CHECK_EQ(rc, 0);
    CHECK_STREQ(path, tpath("run/checkpoints/step-17.h5"));
    CHECK(file_exists(path));
    CHECK_EQ(has_tmp_files(tpath("run/checkpoints")), 0);
    snprintf(g_ckpt, sizeof g_ckpt, "%s", path);

    /* Meta: every configuration field and the state. */
    memset(&cfg2, 0x5A, sizeof cfg2);
    memset(&st2, 0x5A, sizeof st2);
    rc = vae_ckpt_read_meta(path, &cfg2, &st2);
    CHECK_EQ(rc, 0);
    if (!rc) {
        check_config_equal(&cfg2, &cfg);
        check_state_equal(&st2, &st);
    }

    /* Tensors into a second model built from the arch read back: bit-identical. */
    rc = vae_model_init(&m2, &cfg2.arch, 2);
    CHECK_EQ(rc, 0);
    if (!rc) {
        CHECK_EQ(m2.n_params, m.n_params);
        CHECK_EQ(vae_ckpt_read_tensors(path, &m2, 1), 0);
        CHECK(memcmp(m2.params, m.params, m.n_params * sizeof(float)) == 0);
        CHECK(memcmp(m2.m, m.m, m.n_params * sizeof(float)) == 0);
        CHECK(memcmp(m2.v, m.v, m.n_params * sizeof(float)) == 0);
        /* Params only: the moments are left alone. */
        memset(m2.params, 0, m2.n_params * sizeof(float));
        memset(m2.m, 0, m2.n_params * sizeof(float));
        memset(m2.v, 0, m2.n_params * sizeof(float));
        CHECK_EQ(vae_ckpt_read_tensors(path, &m2, 0), 0);
        CHECK(memcmp(m2.params, m.params, m.n_params * sizeof(float)) == 0);
        int untouched = 1;
        for (size_t i = 0; i < m2.n_params; i++) untouched &= m2.m[i] == 0.0f && m2.v[i] == 0.0f;
        CHECK(untouched);
    }

    /* A model of another shape is refused. */
    vae_arch other = m.arch;
    other.hidden[1] = 7;
    rc = vae_model_init(&m3, &other, 2);
    CHECK_EQ(rc, 0);
    if (!rc) {
        fprintf(stderr, "(expected error follows: shape mismatch)\n");
        CHECK_NE(vae_ckpt_read_tensors(path, &m3, 1), 0);
    }

    /* Reading a missing file fails cleanly. */
    fprintf(stderr, "(expected errors follow: missing checkpoint)\n");
    CHECK_NE(vae_ckpt_read_meta(tpath("run/checkpoints/step-999.h5"), &cfg2, &st2), 0);
    CHECK_NE(vae_ckpt_read_tensors(tpath("run/checkpoints/step-999.h5"), &m2, 1), 0);

    vae_model_free(&m);
    vae_model_free(&m2);
    vae_model_free(&m3);
}

/*
 * (f) The parameters' moving average (--ema): /ema round-trips bit for bit
 * into a model without one (VAE_CKPT_ALL allocates it), a tool's read
 * (VAE_CKPT_USE) takes /ema into the parameters, a plain read /params; a
 * checkpoint without /ema gives /params to both. And the decay of
 * vae_ema_update: 0 at the first update, D/(1+D) at the second, D in the limit.
 */
static void test_ema(void)
{
    vae_model m, m2;
    memset(&m2, 0, sizeof m2);
    int rc = make_model(&m, 99);
    CHECK_EQ(rc, 0);
    if (rc) return;
    vae_config cfg, cfg2;
    make_config(&cfg, &m.arch);
    cfg.ema = 0.99;
    vae_train_state st = make_state(5), st2;
    m.ema = vae_model_alloc(m.n_params);
    CHECK(m.ema != NULL);
    if (!m.ema) return;
    for (size_t i = 0; i < m.n_params; i++) m.ema[i] = m.params[i] * 0.5f + (float)i * 1e-3f;
    char path[1024] = "";
    CHECK_EQ(vae_ckpt_save(tpath("ema"), &m, &cfg, &st, 3, path, sizeof path), 0);
    CHECK_EQ(vae_ckpt_has_ema(path), 1);
    CHECK_EQ(vae_ckpt_has_ema(g_ckpt), 0);
    CHECK_EQ(vae_ckpt_read_meta(path, &cfg2, &st2), 0);
    CHECK(cfg2.ema == 0.99);
    rc = vae_model_init(&m2, &m.arch, 2);
    CHECK_EQ(rc, 0);
    if (!rc) {
        CHECK_EQ(vae_ckpt_check_tensors(path, &m2, VAE_CKPT_ALL), 0);
        CHECK(m2.ema == NULL);
        CHECK_EQ(vae_ckpt_read_tensors(path, &m2, VAE_CKPT_ALL), 0);
        CHECK(m2.ema != NULL);
        CHECK(m2.ema && memcmp(m2.ema, m.ema, m.n_params * sizeof(float)) == 0);
        CHECK(memcmp(m2.params, m.params, m.n_params * sizeof(float)) == 0);
        CHECK_EQ(vae_ckpt_read_tensors(path, &m2, VAE_CKPT_USE), 0);
        CHECK(memcmp(m2.params, m.ema, m.n_params * sizeof(float)) == 0);
        CHECK_EQ(vae_ckpt_read_tensors(path, &m2, VAE_CKPT_PARAMS), 0);
        CHECK(memcmp(m2.params, m.params, m.n_params * sizeof(float)) == 0);
        /* Without /ema: a tool's read is /params. */
        vae_model m3;
        memset(&m3, 0, sizeof m3);
        if (make_model(&m3, 1234) == 0) {
            memset(m2.params, 0, m2.n_params * sizeof(float));
            CHECK_EQ(vae_ckpt_read_tensors(g_ckpt, &m2, VAE_CKPT_USE), 0);
            CHECK(memcmp(m2.params, m3.params, m3.n_params * sizeof(float)) == 0);
            vae_model_free(&m3);
        }
    }
    CHECK(vae_ema_decay(0.9, 1) == 0.0);
    CHECK(fabs(vae_ema_decay(0.9, 2) - 0.9 / 1.9) < 1e-15);
    CHECK(fabs(vae_ema_decay(0.9, 1000) - 0.9) < 1e-15);
    /* --lr-decay's factor: 1 at step 0, the floor from step N on, half-way at N/2; 1 throughout without decay. */
    CHECK(vae_lr_factor(0, 100, 0.1) == 1.0);
    CHECK(fabs(vae_lr_factor(50, 100, 0.1) - 0.55) < 1e-15);
    CHECK(fabs(vae_lr_factor(25, 100, 0.0) - 0.5 * (1.0 + sqrt(0.5))) < 1e-15);
    CHECK(vae_lr_factor(100, 100, 0.1) == 0.1);
    CHECK(vae_lr_factor(1000, 100, 0.1) == 0.1);
    CHECK(vae_lr_factor(99, 100, 0.0) > 0.0 && vae_lr_factor(99, 100, 0.0) < 3e-4);
    CHECK(vae_lr_factor(12345, 0, 0.0) == 1.0);
    float avg[3] = { 1.0f, 2.0f, 3.0f }, p[3] = { 5.0f, 6.0f, 7.0f };
    vae_ema_update(avg, p, 3, 0.9, 1);
    CHECK(avg[0] == 5.0f && avg[1] == 6.0f && avg[2] == 7.0f);
    vae_model_free(&m);
    vae_model_free(&m2);
}

/* ---------------------------------------------------------------------- (b) file layout */

static int g_dsets, g_fletcher;

static herr_t visit_obj(hid_t obj, const char *name, const H5O_info_t *info, void *op)
{
    (void)op;
    if (info->type != H5O_TYPE_DATASET) return 0;
    g_dsets++;
    hid_t d = H5Dopen2(obj, name, H5P_DEFAULT);
    if (d < 0) return -1;
    hid_t dcpl = H5Dget_create_plist(d);
    unsigned flags = 0, cd[8];
    size_t ncd = 8;
    char fname[64];
    unsigned config = 0;
    herr_t f = H5Pget_filter_by_id2(dcpl, H5Z_FILTER_FLETCHER32, &flags, &ncd, cd, sizeof fname,
                                    fname, &config);
    if (f >= 0) g_fletcher++;
    else fprintf(stderr, "dataset '%s' has no Fletcher32 filter\n", name);
    H5Pclose(dcpl);
    H5Dclose(d);
    return 0;
}

static void test_file_layout(void)
{
    vae_model m;
    CHECK_EQ(make_model(&m, 1234), 0);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    hid_t f = H5Fopen(g_ckpt, H5F_ACC_RDONLY, H5P_DEFAULT);
    CHECK(f >= 0);
    if (f < 0) {
        vae_model_free(&m);
        return;
    }
    /* Every dataset in the file has Fletcher32; there are 3 per tensor. */
    g_dsets = g_fletcher = 0;
    CHECK(H5Ovisit(f, H5_INDEX_NAME, H5_ITER_INC, visit_obj, NULL) >= 0);
    CHECK_EQ(g_dsets, 3 * m.n_tensors);
    CHECK_EQ(g_fletcher, g_dsets);
    /* Each tensor is in each group under its own name. */
    static const char *groups[3] = { "/params", "/optimizer/m", "/optimizer/v" };
    for (int gi = 0; gi < 3; gi++)
        for (int i = 0; i < m.n_tensors; i++) {
            char p[128];
            snprintf(p, sizeof p, "%s/%s", groups[gi], m.tensors[i].name);
            int ok = H5Lexists(f, groups[gi], H5P_DEFAULT) > 0 && H5Lexists(f, p, H5P_DEFAULT) > 0;
            if (!ok) fprintf(stderr, "checkpoint lacks '%s'\n", p);
            CHECK(ok);
        }

    /* Root attributes. */
    static const char *names[] = { "format", "format_version", "step", "epoch", "world_size", "seed" };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        int ok = H5Aexists(f, names[i]) > 0;
        if (!ok) fprintf(stderr, "checkpoint lacks the root attribute '%s'\n", names[i]);
        CHECK(ok);
    }
    if (H5Aexists(f, "format") > 0) {
        hid_t a = H5Aopen(f, "format", H5P_DEFAULT);
        hid_t mt = H5Tcopy(H5T_C_S1);
        H5Tset_size(mt, 64);
        char buf[64] = "";
        CHECK(H5Aread(a, mt, buf) >= 0);
        CHECK_STREQ(buf, VAE_CKPT_FORMAT);
        H5Tclose(mt);
        H5Aclose(a);
    }
    static const struct {
        const char *name;
        long long want;
    } ints[] = { { "format_version", VAE_CKPT_VERSION }, { "step", 17 }, { "epoch", 19 },
                 { "world_size", 4 } };
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        long long v = -1;
        if (H5Aexists(f, ints[i].name) > 0) {
            hid_t a = H5Aopen(f, ints[i].name, H5P_DEFAULT);
            CHECK(H5Aread(a, H5T_NATIVE_LLONG, &v) >= 0);
            H5Aclose(a);
        }
        if (v != ints[i].want) fprintf(stderr, "root attribute '%s'\n", ints[i].name);
        CHECK_EQ(v, ints[i].want);
    }
    if (H5Aexists(f, "seed") > 0) {
        unsigned long long seed = 0;
        hid_t a = H5Aopen(f, "seed", H5P_DEFAULT);
        CHECK(H5Aread(a, H5T_NATIVE_ULLONG, &seed) >= 0);
        H5Aclose(a);
        CHECK_EQ_U64(seed, 0xFEDCBA9876543210ull);
    }
    H5Fclose(f);
    vae_model_free(&m);
}

/* ---------------------------------------------------------------------- (c) keep-K */

static void test_keep(void)
{
    vae_model m;
    CHECK_EQ(make_model(&m, 99), 0);
    vae_config cfg;
    make_config(&cfg, &m.arch);
    for (long s = 1; s <= 5; s++) {
        vae_train_state st = make_state(s);
        m.params[0] = (float)s; /* each step's file differs */
        CHECK_EQ(vae_ckpt_save(tpath("keep"), &m, &cfg, &st, 3, NULL, 0), 0);
    }
    DIR *d = opendir(tpath("keep/checkpoints"));
    CHECK(d != NULL);
    int n = 0, seen[6] = { 0 }, other = 0;
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
            n++;
            long s = 0;
            char tail[8] = "";
            if (sscanf(e->d_name, "step-%ld.%7s", &s, tail) == 2 && strcmp(tail, "h5") == 0 && s >= 1 && s <= 5)
                seen[s]++;
            else {
                other++;
                fprintf(stderr, "unexpected file 'keep/checkpoints/%s'\n", e->d_name);
            }
        }
        closedir(d);
    }
    CHECK_EQ(n, 3);
    CHECK_EQ(other, 0);
    CHECK(!seen[1] && !seen[2] && seen[3] == 1 && seen[4] == 1 && seen[5] == 1);
    CHECK_EQ(has_tmp_files(tpath("keep/checkpoints")), 0);

    /* find_latest returns the newest, and the kept ones are the right steps. */
    char path[1024] = "";
    CHECK_EQ(vae_ckpt_find_latest(tpath("keep"), path, sizeof path), 1);
    CHECK_STREQ(path, tpath("keep/checkpoints/step-5.h5"));
    vae_model m2;
    CHECK_EQ(make_model(&m2, 1), 0);
    CHECK_EQ(vae_ckpt_read_tensors(tpath("keep/checkpoints/step-3.h5"), &m2, 0), 0);
    CHECK(m2.params[0] == 3.0f);

    /* An empty or missing folder has none. */
    CHECK_EQ(vae_ckpt_find_latest(tpath("nothing-here"), path, sizeof path), 0);

    vae_model_free(&m);
    vae_model_free(&m2);
}

/* ---------------------------------------------------------------------- (d), (e) damage */

/* Writes a good step-<step> checkpoint into "<g_dir>/src" and returns its path. */
static const char *make_source(long step)
{
    static char path[1024];
    vae_model m;
    CHECK_EQ(make_model(&m, 500 + (uint64_t)step), 0);
    vae_config cfg;
    make_config(&cfg, &m.arch);
    vae_train_state st = make_state(step);
    path[0] = '\0';
    CHECK_EQ(vae_ckpt_save(tpath("src"), &m, &cfg, &st, 100, path, sizeof path), 0);
    vae_model_free(&m);
    return path;
}

/* File offset and size of the (single) stored chunk of dataset dname; 0 on success. */
static int chunk_location(const char *file, const char *dname, haddr_t *addr, hsize_t *size)
{
    hid_t f = H5Fopen(file, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) return -1;
    hid_t d = H5Dopen2(f, dname, H5P_DEFAULT);
    int rc = -1;
    if (d >= 0) {
        hsize_t nchunks = 0, offset[4];
        unsigned mask = 0;
        hid_t sp = H5Dget_space(d);
        if (H5Dget_num_chunks(d, sp, &nchunks) >= 0 && nchunks == 1 &&
            H5Dget_chunk_info(d, sp, 0, offset, &mask, addr, size) >= 0 && *addr != HADDR_UNDEF)
            rc = 0;
        else
            fprintf(stderr, "'%s' in '%s': %llu chunks\n", dname, file, (unsigned long long)nchunks);
        H5Sclose(sp);
        H5Dclose(d);
    }
    H5Fclose(f);
    return rc;
}

static int flip_byte(const char *path, long off)
{
    int fd = open(path, O_RDWR);
    if (fd < 0) return -1;
    unsigned char c;
    int rc = pread(fd, &c, 1, off) == 1 ? 0 : -1;
    c ^= 0x10;
    if (!rc && pwrite(fd, &c, 1, off) != 1) rc = -1;
    close(fd);
    return rc;
}

static int latest_is(const char *dir, const char *want)
{
    char path[1024] = "";
    int rc = vae_ckpt_find_latest(dir, path, sizeof path);
    if (rc != 1 || strcmp(path, want) != 0)
        fprintf(stderr, "find_latest('%s') returned %d '%s', expected '%s'\n", dir, rc, path, want);
    return rc == 1 && strcmp(path, want) == 0;
}

static void test_damage(void)
{
    vae_model m;
    CHECK_EQ(make_model(&m, 1), 0);
    vae_config cfg;
    vae_train_state st;
    const char *keepdir = tpath("keep");
    char newest[1024], dst[1024];
    snprintf(newest, sizeof newest, "%s", tpath("keep/checkpoints/step-5.h5"));
    snprintf(dst, sizeof dst, "%s", tpath("keep/checkpoints/step-6.h5"));

    /* A good step 6, copied intact: it is accepted and becomes the latest. */
    char src[1024];
    snprintf(src, sizeof src, "%s", make_source(6));
    CHECK_EQ(copy_file(src, dst, -1), 0);
    CHECK_EQ(vae_ckpt_read_meta(dst, &cfg, &st), 0);
    CHECK_EQ(vae_ckpt_read_tensors(dst, &m, 1), 0);
    CHECK(latest_is(keepdir, dst));

    /* (d) Truncated to half its size: refused, and find_latest falls back to step 5. */
    long size = file_size(src);
    CHECK_CMP_INT(size, >, 0);
    CHECK_EQ(copy_file(src, dst, size / 2), 0);
    CHECK_EQ(file_size(dst), size / 2);
    fprintf(stderr, "(expected errors follow: truncated checkpoint)\n");
    int rm = vae_ckpt_read_meta(dst, &cfg, &st);
    int rt = vae_ckpt_read_tensors(dst, &m, 1);
    CHECK(rm != 0 || rt != 0);
    CHECK(rm <= 0 && rt <= 0); /* errors are negative statuses */
    CHECK(latest_is(keepdir, newest));

    /* (e) One byte flipped in the middle of the stored chunk of /params/fc1.weight. */
    haddr_t addr = HADDR_UNDEF;
    hsize_t csize = 0;
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    int lrc = chunk_location(src, "/params/fc1.weight", &addr, &csize);
    CHECK_EQ(lrc, 0);
    const vae_tensor *t = vae_model_find(&m, "fc1.weight");
    CHECK(t != NULL);
    /* The stored chunk is the raw data plus the 4-byte checksum. */
    if (t) CHECK_EQ(csize, t->numel * sizeof(float) + 4);
    if (!lrc) {
        long off = (long)addr + (long)(csize / 2);
        CHECK_EQ(copy_file(src, dst, -1), 0);
        CHECK_EQ(flip_byte(dst, off), 0);
        fprintf(stderr, "(expected errors follow: checksum failure)\n");
        /* The attributes are intact, the data is not. */
        CHECK_EQ(vae_ckpt_read_meta(dst, &cfg, &st), 0);
        int r = vae_ckpt_read_tensors(dst, &m, 1);
        CHECK_CMP_INT(r, <, 0);
        CHECK(latest_is(keepdir, newest));

        /* Both kinds at once (6 flipped, 7 truncated): both skipped. */
        char src7[1024], dst7[1024];
        snprintf(src7, sizeof src7, "%s", make_source(7));
        snprintf(dst7, sizeof dst7, "%s", tpath("keep/checkpoints/step-7.h5"));
        CHECK_EQ(copy_file(src7, dst7, file_size(src7) / 2), 0);
        CHECK(latest_is(keepdir, newest));
        unlink(dst7);

        /* The same byte flipped back: accepted again (the damage alone was the reason). */
        CHECK_EQ(flip_byte(dst, off), 0);
        CHECK_EQ(vae_ckpt_read_tensors(dst, &m, 1), 0);
        CHECK(latest_is(keepdir, dst));
    }
    vae_model_free(&m);
}

/* ---------------------------------------------------------------------- */

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

int main(void)
{
    snprintf(g_dir, sizeof g_dir, "/tmp/test_checkpoint.XXXXXX");
    if (!mkdtemp(g_dir)) {
        perror("mkdtemp");
        return 1;
    }
    test_roundtrip();
    test_ema();
    test_file_layout();
    test_keep();
    test_damage();
    if (nftw(g_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS) != 0) {
        fprintf(stderr, "cannot remove '%s'\n", g_dir);
        g_failures++;
    }
    printf("test_checkpoint: %d checks, %d failed\n", g_checks, g_failures);
    return g_failures ? 1 : 0;
}
