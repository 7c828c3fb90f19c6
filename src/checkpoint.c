/*
 * checkpoint.c: atomic, checksummed HDF5 checkpoints (see checkpoint.h).
 */
#define _POSIX_C_SOURCE 200809L
#include "mpivae/checkpoint.h"

#include "mpivae/status.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- attributes ---- */

static int put_attr(hid_t loc, const char *name, hid_t type, int n, const void *val)
{
    hsize_t dims[1] = { (hsize_t)n };
    hid_t sp = n == 1 ? H5Screate(H5S_SCALAR) : H5Screate_simple(1, dims, NULL);
    hid_t a = H5Acreate2(loc, name, type, sp, H5P_DEFAULT, H5P_DEFAULT);
    int rc = a >= 0 && H5Awrite(a, type, val) >= 0 ? VAE_OK : VAE_EIO;
    if (a >= 0) H5Aclose(a);
    H5Sclose(sp);
    return rc;
}

static int put_long(hid_t loc, const char *name, long v)
{
    long long x = v;
    return put_attr(loc, name, H5T_NATIVE_LLONG, 1, &x);
}

static int put_double(hid_t loc, const char *name, double v)
{
    return put_attr(loc, name, H5T_NATIVE_DOUBLE, 1, &v);
}

static int put_str(hid_t loc, const char *name, const char *s)
{
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, strlen(s) + 1);
    int rc = put_attr(loc, name, t, 1, s);
    H5Tclose(t);
    return rc;
}

/* Reads a numeric attribute of n elements as mem_type; fails with a message naming it. */
static int get_attr(hid_t loc, const char *path, const char *name, hid_t mem_type, int n, void *out)
{
    if (H5Aexists(loc, name) <= 0)
        return vae_error(VAE_EDATA, "'%s' lacks the attribute '%s'", path, name);
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    hid_t sp = H5Aget_space(a);
    hid_t ft = H5Aget_type(a);
    H5T_class_t cls = H5Tget_class(ft);
    H5Tclose(ft);
    hssize_t np = H5Sget_simple_extent_npoints(sp);
    int rc = VAE_OK;
    if (cls != H5T_INTEGER && cls != H5T_FLOAT)
        rc = vae_error(VAE_EDATA, "'%s': attribute '%s' is %s, expected a number", path, name,
                       cls == H5T_STRING ? "a string" : cls == H5T_COMPOUND ? "a compound" : "not numeric");
    else if (np != n) rc = vae_error(VAE_EDATA, "'%s': attribute '%s' has %lld values, expected %d", path, name, (long long)np, n);
    else if (H5Aread(a, mem_type, out) < 0) rc = vae_error(VAE_EDATA, "'%s': cannot read attribute '%s'", path, name);
    H5Sclose(sp);
    H5Aclose(a);
    return rc;
}

/* An integer attribute: a value that is not a whole number within the range is refused, never wrapped. */
static int get_whole(hid_t loc, const char *path, const char *name, double lo, double hi, long long *v)
{
    double x = 0.0;
    int rc = get_attr(loc, path, name, H5T_NATIVE_DOUBLE, 1, &x);
    if (!rc && !(x >= lo && x <= hi && x == floor(x)))
        rc = vae_error(VAE_EDATA, "'%s': attribute '%s' is %g, not a whole number in %.0f..%.0f", path, name, x, lo, hi);
    if (!rc) rc = get_attr(loc, path, name, H5T_NATIVE_LLONG, 1, v);
    return rc;
}

static int get_long(hid_t loc, const char *path, const char *name, long *v)
{
    long long x = 0;
    int rc = get_whole(loc, path, name, -9.2e18, 9.2e18, &x);
    *v = (long)x;
    return rc;
}

static int get_int(hid_t loc, const char *path, const char *name, int *v)
{
    long long x = 0;
    int rc = get_whole(loc, path, name, INT_MIN, INT_MAX, &x);
    *v = (int)x;
    return rc;
}

static int get_double(hid_t loc, const char *path, const char *name, double *v)
{
    return get_attr(loc, path, name, H5T_NATIVE_DOUBLE, 1, v);
}

static int get_str(hid_t loc, const char *path, const char *name, char *buf, size_t len)
{
    if (H5Aexists(loc, name) <= 0)
        return vae_error(VAE_EDATA, "'%s' lacks the attribute '%s'", path, name);
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    hid_t ft = H5Aget_type(a), sp = H5Aget_space(a);
    int rc = VAE_OK;
    size_t sz = H5Tget_size(ft);
    hssize_t np = H5Sget_simple_extent_npoints(sp);
    H5Sclose(sp);
    if (np != 1) {
        rc = vae_error(VAE_EDATA, "'%s': attribute '%s' holds %lld values, expected one string", path, name, (long long)np);
    } else if (H5Tget_class(ft) != H5T_STRING || H5Tis_variable_str(ft) > 0 || sz >= len) {
        rc = vae_error(VAE_EDATA, "'%s': attribute '%s' is not a string of fewer than %zu bytes", path, name, len);
    } else {
        hid_t t = H5Tcopy(H5T_C_S1);
        H5Tset_size(t, sz + 1);
        memset(buf, 0, len);
        if (H5Aread(a, t, buf) < 0) rc = vae_error(VAE_EDATA, "'%s': cannot read attribute '%s'", path, name);
        H5Tclose(t);
    }
    H5Tclose(ft);
    H5Aclose(a);
    return rc;
}

/* ---- writing ---- */

static int write_tensor(hid_t grp, const vae_tensor *t, const float *block)
{
    hsize_t dims[4], chunk[4];
    for (int i = 0; i < t->ndim; i++) dims[i] = chunk[i] = (hsize_t)t->shape[i];
    hid_t sp = H5Screate_simple(t->ndim, dims, NULL);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, t->ndim, chunk);
    H5Pset_fletcher32(dcpl);
    hid_t ds = H5Dcreate2(grp, t->name, H5T_IEEE_F32LE, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    int rc = ds >= 0 && H5Dwrite(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT,
                                 block + t->offset) >= 0 ? VAE_OK : VAE_EIO;
    if (ds >= 0) H5Dclose(ds);
    H5Pclose(dcpl);
    H5Sclose(sp);
    return rc;
}

static int write_group(hid_t fid, const char *gname, const vae_model *m, const float *block)
{
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    H5Pset_create_intermediate_group(lcpl, 1);
    hid_t g = H5Gcreate2(fid, gname, lcpl, H5P_DEFAULT, H5P_DEFAULT);
    H5Pclose(lcpl);
    if (g < 0) return VAE_EIO;
    int rc = VAE_OK;
    for (int i = 0; i < m->n_tensors && !rc; i++) rc = write_tensor(g, &m->tensors[i], block);
    H5Gclose(g);
    return rc;
}

static int write_config(hid_t fid, const vae_config *c)
{
    const vae_arch *a = &c->arch;
    int rc = 0;
    rc |= put_str(fid, "cfg.model", a->kind == VAE_MODEL_CONV ? "conv" : "mlp");
    rc |= put_str(fid, "model", a->kind == VAE_MODEL_CONV ? "conv" : "mlp");
    rc |= put_attr(fid, "hidden", H5T_NATIVE_INT, a->n_hidden, a->hidden);
    rc |= put_long(fid, "latent", a->latent);
    rc |= put_str(fid, "loss", a->loss == VAE_LOSS_MSE ? "mse" : "bce");
    rc |= put_attr(fid, "input_shape", H5T_NATIVE_INT, 3, (int[]){ a->C, a->Hh, a->W });
    rc |= put_str(fid, "cfg.data", c->data);
    rc |= put_str(fid, "cfg.test_data", c->test_data);
    rc |= put_str(fid, "cfg.data_abs", c->data_abs);
    rc |= put_str(fid, "cfg.test_data_abs", c->test_data_abs);
    rc |= put_str(fid, "cfg.out", c->out);
    rc |= put_double(fid, "beta", c->beta);
    rc |= put_long(fid, "cfg.warmup", c->warmup);
    rc |= put_double(fid, "cfg.capacity_max", c->capacity_max);
    rc |= put_long(fid, "cfg.capacity_steps", c->capacity_steps);
    rc |= put_long(fid, "cfg.epochs", c->epochs);
    rc |= put_long(fid, "cfg.batch", c->batch);
    rc |= put_double(fid, "cfg.lr", c->lr);
    rc |= put_double(fid, "cfg.beta1", c->beta1);
    rc |= put_double(fid, "cfg.beta2", c->beta2);
    rc |= put_double(fid, "cfg.adam_eps", c->adam_eps);
    unsigned long long seed = c->seed;
    rc |= put_attr(fid, "seed", H5T_NATIVE_ULLONG, 1, &seed);
    rc |= put_long(fid, "cfg.log_every", c->log_every);
    rc |= put_long(fid, "cfg.eval_every", c->eval_every);
    rc |= put_long(fid, "cfg.sample_every", c->sample_every);
    rc |= put_long(fid, "cfg.ckpt_every", c->ckpt_every);
    rc |= put_long(fid, "cfg.keep", c->keep);
    rc |= put_long(fid, "cfg.max_skips", c->max_skips);
    rc |= put_long(fid, "cfg.in_memory", c->in_memory);
    rc |= put_long(fid, "cfg.max_steps", c->max_steps);
    return rc ? VAE_EIO : VAE_OK;
}

static int fsync_path(const char *path, int is_dir)
{
    int fd = open(path, is_dir ? O_RDONLY | O_DIRECTORY : O_RDONLY);
    if (fd < 0) return vae_error(VAE_EIO, "cannot open '%s' to sync it: %s", path, strerror(errno));
    int rc = fsync(fd) == 0 ? VAE_OK : vae_error(VAE_EIO, "cannot fsync '%s': %s", path, strerror(errno));
    close(fd);
    return rc;
}

static int mkdir_p(const char *path)
{
    char buf[VAE_PATH_LEN + 32];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(buf, 0777) != 0 && errno != EEXIST)
            return vae_error(VAE_EIO, "cannot create folder '%s': %s", buf, strerror(errno));
        *p = '/';
    }
    if (mkdir(buf, 0777) != 0 && errno != EEXIST)
        return vae_error(VAE_EIO, "cannot create folder '%s': %s", buf, strerror(errno));
    return VAE_OK;
}

int vae__mkdir_p(const char *path) { return mkdir_p(path); }

/* Lists step numbers of DIR/checkpoints/step-<N>.h5, newest first. Returns the count. */
static int list_steps(const char *ckdir, long *steps, int max)
{
    DIR *dp = opendir(ckdir);
    if (!dp) return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(dp)) && n < max) {
        long s;
        char tail[8];
        if (sscanf(e->d_name, "step-%ld.h%2s", &s, tail) == 2 && strcmp(tail, "5") == 0) steps[n++] = s;
    }
    closedir(dp);
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && steps[j] > steps[j - 1]; j--) {
            long t = steps[j];
            steps[j] = steps[j - 1];
            steps[j - 1] = t;
        }
    return n;
}

int vae_ckpt_save(const char *dir, const vae_model *m, const vae_config *cfg,
                  const vae_train_state *st, int keep, char *path_out, size_t path_len)
{
    char ckdir[VAE_PATH_LEN + 32], tmp[VAE_PATH_LEN + 64], fin[VAE_PATH_LEN + 64];
    snprintf(ckdir, sizeof ckdir, "%s/checkpoints", dir);
    int rc = mkdir_p(ckdir);
    if (rc) return rc;
    snprintf(tmp, sizeof tmp, "%s/.step-%ld.h5.tmp", ckdir, st->step);
    snprintf(fin, sizeof fin, "%s/step-%ld.h5", ckdir, st->step);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    hid_t fid = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (fid < 0) return vae_error(VAE_EIO, "cannot create checkpoint '%s'", tmp);
    rc = write_group(fid, "/params", m, m->params);
    if (!rc) rc = write_group(fid, "/optimizer/m", m, m->m);
    if (!rc) rc = write_group(fid, "/optimizer/v", m, m->v);
    if (!rc) {
        int e = 0;
        e |= put_str(fid, "format", VAE_CKPT_FORMAT);
        e |= put_long(fid, "format_version", VAE_CKPT_VERSION);
        e |= put_str(fid, "version", MPIVAE_VERSION);
        e |= put_long(fid, "step", st->step);
        e |= put_long(fid, "epoch", st->epoch);
        e |= put_long(fid, "epoch_step", st->epoch_step);
        e |= put_long(fid, "adam_t", st->adam_t);
        e |= put_long(fid, "skips", st->skips);
        e |= put_long(fid, "world_size", st->world_size);
        e |= put_long(fid, "data_rows", st->data_rows);
        e |= write_config(fid, cfg);
        rc = e ? VAE_EIO : VAE_OK;
    }
    if (H5Fflush(fid, H5F_SCOPE_GLOBAL) < 0) rc = VAE_EIO;
    if (H5Fclose(fid) < 0) rc = VAE_EIO;
    if (rc) {
        unlink(tmp);
        return vae_error(rc, "cannot write checkpoint '%s' (disk full?)", tmp);
    }
    rc = fsync_path(tmp, 0);
    if (rc) {
        unlink(tmp);
        return rc;
    }
    if (getenv("MPIVAE_TEST_CRASH_BEFORE_RENAME")) {
        fprintf(stderr, "[test] MPIVAE_TEST_CRASH_BEFORE_RENAME: aborting before publishing '%s'\n", fin);
        fflush(stderr);
        abort();
    }
    if (rename(tmp, fin) != 0) {
        rc = vae_error(VAE_EIO, "cannot rename '%s' to '%s': %s", tmp, fin, strerror(errno));
        unlink(tmp);
        return rc;
    }
    rc = fsync_path(ckdir, 1);
    if (rc) return rc;
    if (path_out) snprintf(path_out, path_len, "%s", fin);
    /* Keep the newest `keep`. */
    long steps[4096];
    int n = list_steps(ckdir, steps, 4096);
    for (int i = keep > 0 ? keep : 1; i < n; i++) {
        char old[VAE_PATH_LEN + 64];
        snprintf(old, sizeof old, "%s/step-%ld.h5", ckdir, steps[i]);
        unlink(old);
    }
    return VAE_OK;
}

/* ---- reading ---- */

static hid_t open_ckpt(const char *path)
{
    struct stat sb;
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    if (stat(path, &sb) != 0) {
        vae_error(VAE_EIO, "cannot open checkpoint '%s': %s", path, strerror(errno));
        return -1;
    }
    if (H5Fis_hdf5(path) <= 0) {
        vae_error(VAE_EDATA, "checkpoint '%s' is not a complete HDF5 file (truncated or damaged)", path);
        return -1;
    }
    hid_t fid = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (fid < 0) vae_error(VAE_EDATA, "cannot open checkpoint '%s' (truncated or damaged)", path);
    return fid;
}

int vae_ckpt_read_meta(const char *path, vae_config *c, vae_train_state *st)
{
    hid_t fid = open_ckpt(path);
    if (fid < 0) return VAE_EDATA;
    char fmt[64] = "", model[16] = "", loss[16] = "";
    int rc = get_str(fid, path, "format", fmt, sizeof fmt);
    if (!rc && strcmp(fmt, VAE_CKPT_FORMAT) != 0)
        rc = vae_error(VAE_EDATA, "'%s' is not an mpivae checkpoint (format '%s')", path, fmt);
    long ver = 0;
    if (!rc) rc = get_long(fid, path, "format_version", &ver);
    if (!rc && ver != VAE_CKPT_VERSION)
        rc = vae_error(VAE_EDATA, "'%s' has checkpoint format version %ld; this build reads %d", path, ver, VAE_CKPT_VERSION);
    memset(c, 0, sizeof *c);
    memset(st, 0, sizeof *st);
    vae_arch *a = &c->arch;
    if (!rc) rc = get_str(fid, path, "model", model, sizeof model);
    if (!rc) rc = get_str(fid, path, "loss", loss, sizeof loss);
    if (!rc) {
        a->kind = !strcmp(model, "conv") ? VAE_MODEL_CONV : !strcmp(model, "mlp") ? VAE_MODEL_MLP : -1;
        a->loss = !strcmp(loss, "mse") ? VAE_LOSS_MSE : !strcmp(loss, "bce") ? VAE_LOSS_BCE : -1;
        if (a->kind < 0) rc = vae_error(VAE_EDATA, "'%s': attribute 'model' is '%s', not a model this build knows (mlp, conv)", path, model);
        else if (a->loss < 0) rc = vae_error(VAE_EDATA, "'%s': attribute 'loss' is '%s', not bce or mse", path, loss);
    }
    if (!rc) {
        if (H5Aexists(fid, "hidden") > 0) {
            hid_t at = H5Aopen(fid, "hidden", H5P_DEFAULT);
            hid_t sp = H5Aget_space(at);
            a->n_hidden = (int)H5Sget_simple_extent_npoints(sp);
            H5Sclose(sp);
            H5Aclose(at);
        }
        if (a->n_hidden < 1 || a->n_hidden > VAE_MAX_HIDDEN)
            rc = vae_error(VAE_EDATA, "'%s': attribute 'hidden' is missing or has %d values", path, a->n_hidden);
    }
    int shape[3] = { 0, 0, 0 };
    unsigned long long seed = 0;
    if (!rc) rc = get_attr(fid, path, "hidden", H5T_NATIVE_INT, a->n_hidden, a->hidden);
    if (!rc) rc = get_int(fid, path, "latent", &a->latent);
    if (!rc) rc = get_attr(fid, path, "input_shape", H5T_NATIVE_INT, 3, shape);
    a->C = shape[0];
    a->Hh = shape[1];
    a->W = shape[2];
    if (!rc) rc = get_str(fid, path, "cfg.data", c->data, sizeof c->data);
    if (!rc) rc = get_str(fid, path, "cfg.test_data", c->test_data, sizeof c->test_data);
    /* Written since the absolute paths were added; before, a test-data FILE alone meant FILE:/test/images. */
    if (!rc && H5Aexists(fid, "cfg.data_abs") > 0) {
        rc = get_str(fid, path, "cfg.data_abs", c->data_abs, sizeof c->data_abs);
        if (!rc) rc = get_str(fid, path, "cfg.test_data_abs", c->test_data_abs, sizeof c->test_data_abs);
    } else if (!rc && c->test_data[0] && !strstr(c->test_data, ":/")) {
        strncat(c->test_data, ":/test/images", sizeof c->test_data - strlen(c->test_data) - 1);
    }
    if (!rc && c->data[0] && !strstr(c->data, ":/")) /* FILE alone: the same rows then as now */
        strncat(c->data, ":" VAE_DATA_DEFAULT_DSET, sizeof c->data - strlen(c->data) - 1);
    if (!rc) rc = get_str(fid, path, "cfg.out", c->out, sizeof c->out);
    if (!rc) rc = get_double(fid, path, "beta", &c->beta);
    if (!rc) rc = get_long(fid, path, "cfg.warmup", &c->warmup);
    if (!rc) rc = get_double(fid, path, "cfg.capacity_max", &c->capacity_max);
    if (!rc) rc = get_long(fid, path, "cfg.capacity_steps", &c->capacity_steps);
    if (!rc) rc = get_int(fid, path, "cfg.epochs", &c->epochs);
    if (!rc) rc = get_int(fid, path, "cfg.batch", &c->batch);
    if (!rc) rc = get_double(fid, path, "cfg.lr", &c->lr);
    if (!rc) rc = get_double(fid, path, "cfg.beta1", &c->beta1);
    if (!rc) rc = get_double(fid, path, "cfg.beta2", &c->beta2);
    if (!rc) rc = get_double(fid, path, "cfg.adam_eps", &c->adam_eps);
    if (!rc) { /* a whole number in 0..2^64-1, checked before HDF5's clamping conversion (-1 would read as 0) */
        double x = 0.0;
        rc = get_attr(fid, path, "seed", H5T_NATIVE_DOUBLE, 1, &x);
        if (!rc && !(x >= 0.0 && x <= 18446744073709551615.0 && x == floor(x)))
            rc = vae_error(VAE_EDATA, "'%s': attribute 'seed' is %g, not a whole number in 0..2^64-1", path, x);
        if (!rc) rc = get_attr(fid, path, "seed", H5T_NATIVE_ULLONG, 1, &seed);
    }
    c->seed = seed;
    if (!rc) rc = get_long(fid, path, "cfg.log_every", &c->log_every);
    if (!rc) rc = get_long(fid, path, "cfg.eval_every", &c->eval_every);
    if (!rc) rc = get_long(fid, path, "cfg.sample_every", &c->sample_every);
    if (!rc) rc = get_long(fid, path, "cfg.ckpt_every", &c->ckpt_every);
    if (!rc) rc = get_int(fid, path, "cfg.keep", &c->keep);
    if (!rc) rc = get_int(fid, path, "cfg.max_skips", &c->max_skips);
    if (!rc) rc = get_int(fid, path, "cfg.in_memory", &c->in_memory);
    if (!rc) rc = get_long(fid, path, "cfg.max_steps", &c->max_steps);
    if (!rc) rc = get_long(fid, path, "step", &st->step);
    if (!rc) rc = get_long(fid, path, "epoch", &st->epoch);
    if (!rc) rc = get_long(fid, path, "epoch_step", &st->epoch_step);
    if (!rc) rc = get_long(fid, path, "adam_t", &st->adam_t);
    if (!rc) rc = get_long(fid, path, "skips", &st->skips);
    if (!rc) rc = get_int(fid, path, "world_size", &st->world_size);
    if (!rc && H5Aexists(fid, "data_rows") > 0) rc = get_long(fid, path, "data_rows", &st->data_rows); /* since 0.1.0 */
    /* The configuration passes the command line's checks, and the state is one a run can be in. */
    char why[256];
    if (!rc && vae_config_check(c, why, sizeof why)) rc = vae_error(VAE_EDATA, "'%s': %s", path, why);
    const char *bad = !rc ? (st->step < 0 ? "step" : st->epoch < 0 ? "epoch" : st->epoch_step < 0 ? "epoch_step"
                             : st->adam_t < 0 || st->adam_t > st->step ? "adam_t" : st->skips < 0 ? "skips"
                             : st->world_size < 1 ? "world_size" : st->data_rows < 0 ? "data_rows" : NULL) : NULL;
    if (bad)
        rc = vae_error(VAE_EDATA, "'%s': attribute '%s' is out of range (step %ld, epoch %ld, epoch_step %ld, adam_t %ld, "
                       "skips %ld, world_size %d, data_rows %ld)", path, bad, st->step, st->epoch, st->epoch_step,
                       st->adam_t, st->skips, st->world_size, st->data_rows);
    H5Fclose(fid);
    return rc;
}

static int read_group(hid_t fid, const char *path, const char *gname, vae_model *m, float *block)
{
    char dname[VAE_NAME_LEN + 64];
    for (int i = 0; i < m->n_tensors; i++) {
        const vae_tensor *t = &m->tensors[i];
        snprintf(dname, sizeof dname, "%s/%s", gname, t->name);
        if (H5Lexists(fid, gname, H5P_DEFAULT) <= 0 || H5Lexists(fid, dname, H5P_DEFAULT) <= 0)
            return vae_error(VAE_EDATA, "checkpoint '%s' has no dataset '%s'", path, dname);
        hid_t ds = H5Dopen2(fid, dname, H5P_DEFAULT);
        if (ds < 0) return vae_error(VAE_EDATA, "checkpoint '%s': cannot open '%s'", path, dname);
        hid_t sp = H5Dget_space(ds);
        hsize_t dims[8];
        int nd = H5Sget_simple_extent_ndims(sp);
        int rc = VAE_OK;
        if (nd != t->ndim) rc = VAE_EDATA;
        if (!rc) {
            H5Sget_simple_extent_dims(sp, dims, NULL);
            for (int k = 0; k < nd; k++)
                if (dims[k] != (hsize_t)t->shape[k]) rc = VAE_EDATA;
        }
        hid_t ft = H5Dget_type(ds);
        H5T_class_t cls = H5Tget_class(ft);
        H5Tclose(ft);
        if (rc) {
            vae_error(rc, "checkpoint '%s': dataset '%s' does not have the shape the configuration gives", path, dname);
        } else if (cls != H5T_FLOAT) {
            rc = vae_error(VAE_EDATA, "checkpoint '%s': dataset '%s' holds %s, not floating-point numbers", path, dname,
                           cls == H5T_STRING ? "strings" : cls == H5T_COMPOUND ? "compound records"
                           : cls == H5T_INTEGER ? "integers" : "another type");
        } else if (!block) {
            /* shapes and types only */
        } else if (H5Dread(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, block + t->offset) < 0) {
            rc = vae_error(VAE_EDATA, "checkpoint '%s': dataset '%s' fails its checksum or cannot be read (damaged file)", path, dname);
        } else {
            /* Non-finite parameters or moments (or a negative second moment) would train or evaluate to nonsense. */
            const float *x = block + t->offset;
            int second = strstr(gname, "/v") != NULL;
            for (size_t k = 0; k < t->numel; k++)
                if (!isfinite(x[k]) || (second && x[k] < 0.0f)) {
                    rc = vae_error(VAE_EDATA, "checkpoint '%s': dataset '%s' holds %g at index %zu (%s); the file is "
                                   "not usable", path, dname, x[k], k, second ? "Adam's second moment must be finite and "
                                   "non-negative" : "values must be finite");
                    break;
                }
        }
        H5Sclose(sp);
        H5Dclose(ds);
        if (rc) return rc;
    }
    return VAE_OK;
}

int vae_ckpt_read_tensors(const char *path, vae_model *m, int with_optimizer)
{
    hid_t fid = open_ckpt(path);
    if (fid < 0) return VAE_EDATA;
    int rc = read_group(fid, path, "/params", m, m->params);
    if (!rc && with_optimizer) rc = read_group(fid, path, "/optimizer/m", m, m->m);
    if (!rc && with_optimizer) rc = read_group(fid, path, "/optimizer/v", m, m->v);
    H5Fclose(fid);
    return rc;
}

int vae_ckpt_check_tensors(const char *path, const vae_model *plan, int with_optimizer)
{
    hid_t fid = open_ckpt(path);
    if (fid < 0) return VAE_EDATA;
    vae_model *m = (vae_model *)plan; /* read_group reads nothing into a NULL block */
    int rc = read_group(fid, path, "/params", m, NULL);
    if (!rc && with_optimizer) rc = read_group(fid, path, "/optimizer/m", m, NULL);
    if (!rc && with_optimizer) rc = read_group(fid, path, "/optimizer/v", m, NULL);
    H5Fclose(fid);
    return rc;
}

int vae_ckpt_find_latest(const char *dir, char *path, size_t path_len)
{
    char ckdir[VAE_PATH_LEN + 32];
    snprintf(ckdir, sizeof ckdir, "%s/checkpoints", dir);
    long steps[4096];
    int n = list_steps(ckdir, steps, 4096);
    for (int i = 0; i < n; i++) {
        char p[VAE_PATH_LEN + 64];
        snprintf(p, sizeof p, "%s/step-%ld.h5", ckdir, steps[i]);
        vae_config c;
        vae_train_state st;
        vae_model m;
        memset(&m, 0, sizeof m);
        /* Verify completely; the reason for a refusal goes into the warning. */
        char why[2048] = "unknown reason";
        vae_defer_begin();
        int rc = vae_ckpt_read_meta(p, &c, &st);
        if (!rc && st.step != steps[i])
            rc = vae_error(VAE_EDATA, "'%s' says it is step %ld", p, st.step);
        if (!rc) rc = vae_model_plan(&m, &c.arch);
        if (!rc) rc = vae_ckpt_check_tensors(p, &m, 1);
        if (!rc) rc = vae_model_init(&m, &c.arch, 1);
        if (!rc) rc = vae_ckpt_read_tensors(p, &m, 1);
        vae_model_free(&m);
        vae_defer_take(why, sizeof why);
        vae_defer_end(0);
        if (!rc) {
            snprintf(path, path_len, "%s", p);
            return 1;
        }
        vae_warn("skipping checkpoint '%s': %s; trying an older one", p, why);
    }
    return 0;
}

int vae_ckpt_list(const char *dir, long *steps, int max)
{
    char ckdir[VAE_PATH_LEN + 32];
    snprintf(ckdir, sizeof ckdir, "%s/checkpoints", dir);
    return list_steps(ckdir, steps, max);
}

int vae_ckpt_resolve(const char *given, char *path, size_t path_len)
{
    struct stat sb;
    if (stat(given, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        snprintf(path, path_len, "%s", given);
        return VAE_OK;
    }
    int found = vae_ckpt_find_latest(given, path, path_len);
    if (found < 0) return found;
    if (found == 0)
        return vae_error(VAE_EINVAL, "'%s' is a directory with no good checkpoint in '%s/checkpoints'", given, given);
    printf("checkpoint: %s (the newest good one in %s)\n", path, given);
    fflush(stdout);
    return VAE_OK;
}
