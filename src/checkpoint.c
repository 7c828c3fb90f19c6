/*
 * checkpoint.c: atomic, checksummed HDF5 checkpoints (see checkpoint.h).
 */
#define _POSIX_C_SOURCE 200809L
#include "mpivae/checkpoint.h"

#include "internal.h"
#include "mpivae/family.h"
#include "mpivae/reduce.h"
#include "mpivae/rundir.h"
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

/* The model's group names, comma-separated: the /optimizer attribute 'groups'. */
static void group_names(const vae_model *m, char *buf, size_t len)
{
    buf[0] = '\0';
    for (int g = 0; g < m->n_groups; g++) {
        size_t n = strlen(buf);
        snprintf(buf + n, len - n, "%s%s", g ? "," : "", m->groups[g].name);
    }
}

/* Each parameter group's step count: attributes 'groups' and 't.<group>' of /optimizer. */
static int write_group_steps(hid_t fid, const vae_model *m)
{
    char names[VAE_MAX_GROUPS * 33], an[64];
    hid_t g = H5Gopen2(fid, "/optimizer", H5P_DEFAULT);
    if (g < 0) return VAE_EIO;
    group_names(m, names, sizeof names);
    int rc = put_str(g, "groups", names);
    for (int i = 0; i < m->n_groups; i++) {
        snprintf(an, sizeof an, "t.%s", m->groups[i].name);
        rc |= put_long(g, an, m->groups[i].t);
    }
    H5Gclose(g);
    return rc ? VAE_EIO : VAE_OK;
}

/*
 * Reads the groups' step counts (0 <= t <= adam_t). A checkpoint written
 * before parameter groups has one count for its one group: adam_t.
 */
static int read_group_steps(hid_t fid, const char *path, vae_model *m)
{
    long adam_t = 0;
    int rc = get_long(fid, path, "adam_t", &adam_t);
    if (rc) return rc;
    hid_t g = H5Lexists(fid, "/optimizer", H5P_DEFAULT) > 0 ? H5Gopen2(fid, "/optimizer", H5P_DEFAULT) : -1;
    if (g < 0) return vae_error(VAE_EDATA, "checkpoint '%s' has no group '/optimizer'", path);
    if (H5Aexists(g, "groups") <= 0) {
        if (m->n_groups != 1)
            rc = vae_error(VAE_EDATA, "checkpoint '%s' has no attribute 'groups' on /optimizer, and the model has %d "
                           "parameter groups", path, m->n_groups);
        else m->groups[0].t = adam_t;
        H5Gclose(g);
        return rc;
    }
    char want[VAE_MAX_GROUPS * 33], have[VAE_MAX_GROUPS * 33 + 64] = "", an[64], where[VAE_PATH_LEN + 16];
    group_names(m, want, sizeof want);
    snprintf(where, sizeof where, "%s:/optimizer", path);
    rc = get_str(g, where, "groups", have, sizeof have);
    if (!rc && strcmp(want, have))
        rc = vae_error(VAE_EDATA, "'%s': attribute 'groups' is '%s', but the model has the parameter groups '%s'", where,
                       have, want);
    for (int i = 0; i < m->n_groups && !rc; i++) {
        long long t = 0;
        snprintf(an, sizeof an, "t.%s", m->groups[i].name);
        rc = get_whole(g, where, an, 0, (double)adam_t, &t);
        m->groups[i].t = (long)t;
    }
    H5Gclose(g);
    return rc;
}

/* The configuration: every field of the table with an attribute (config.h), and the input shape. */
static int write_config(hid_t fid, const vae_config *c)
{
    const vae_arch *a = &c->arch;
    int rc = put_attr(fid, "input_shape", H5T_NATIVE_INT, 3, (int[]){ a->C, a->Hh, a->W });
    char text[2 * VAE_PATH_LEN];
    for (int f = 0; f < vae_config_nfields; f++) {
        const vae_field *F = &vae_config_fields[f];
        const char *at = (const char *)c + F->off;
        if (!F->attr) continue;
        switch (F->type) {
        case VAE_FT_INT: rc |= put_long(fid, F->attr, *(const int *)at); break;
        case VAE_FT_LONG: rc |= put_long(fid, F->attr, *(const long *)at); break;
        case VAE_FT_DOUBLE: rc |= put_double(fid, F->attr, *(const double *)at); break;
        case VAE_FT_SEED: {
            unsigned long long seed = c->seed;
            rc |= put_attr(fid, F->attr, H5T_NATIVE_ULLONG, 1, &seed);
            break;
        }
        case VAE_FT_CHOICE:
            if (F->numeric) {
                rc |= put_long(fid, F->attr, *(const int *)at);
                break;
            }
            vae_config_format(c, f, text, sizeof text);
            rc |= put_str(fid, F->attr, text);
            break;
        case VAE_FT_FAMILY:
            vae_config_format(c, f, text, sizeof text);
            rc |= put_str(fid, F->attr, text);
            rc |= put_str(fid, "cfg.model", text);
            break;
        case VAE_FT_HIDDEN: rc |= put_attr(fid, F->attr, H5T_NATIVE_INT, a->n_hidden, a->hidden); break;
        case VAE_FT_GROUPS:
            if (((const int *)at)[-1] > 0) rc |= put_attr(fid, F->attr, H5T_NATIVE_INT, ((const int *)at)[-1], (const int *)at);
            break;
        case VAE_FT_CAPACITY:
            rc |= put_double(fid, "cfg.capacity_max", c->capacity_max);
            rc |= put_long(fid, "cfg.capacity_steps", c->capacity_steps);
            break;
        default: rc |= put_str(fid, F->attr, at); break;
        }
    }
    rc |= put_str(fid, "cfg.data_abs", c->data_abs);
    rc |= put_str(fid, "cfg.test_data_abs", c->test_data_abs);
    return rc ? VAE_EIO : VAE_OK;
}

int vae_ckpt_save(const char *dir, const vae_model *m, const vae_config *cfg,
                  const vae_train_state *st, int keep, char *path_out, size_t path_len)
{
    char ckdir[VAE_PATH_LEN + 32], tmp[VAE_PATH_LEN + 64], fin[VAE_PATH_LEN + 64];
    snprintf(ckdir, sizeof ckdir, "%s/checkpoints", dir);
    int rc = vae__mkdir_p(ckdir);
    if (rc) return rc;
    vae_rundir_ckpt_tmp(dir, st->step, tmp, sizeof tmp);
    vae_rundir_ckpt_path(dir, st->step, fin, sizeof fin);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    hid_t fid = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (fid < 0) return vae_error(VAE_EIO, "cannot create checkpoint '%s'", tmp);
    rc = write_group(fid, "/params", m, m->params);
    if (!rc) rc = write_group(fid, "/optimizer/m", m, m->m);
    if (!rc) rc = write_group(fid, "/optimizer/v", m, m->v);
    if (!rc && m->ema) rc = write_group(fid, "/ema", m, m->ema);
    if (!rc) rc = write_group_steps(fid, m);
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
    rc = vae__fsync_path(tmp, 0);
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
    rc = vae__fsync_path(ckdir, 1);
    if (rc) return rc;
    if (path_out) snprintf(path_out, path_len, "%s", fin);
    /* Keep the newest `keep`. */
    long steps[4096];
    int n = vae_rundir_list_checkpoints(dir, steps, 4096);
    for (int i = keep > 0 ? keep : 1; i < n; i++) {
        char old[VAE_PATH_LEN + 64];
        vae_rundir_ckpt_path(dir, steps[i], old, sizeof old);
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

/* A string attribute naming a choice of field f (or a family); sets the field. */
static int get_choice(hid_t fid, const char *path, vae_config *c, int f)
{
    const vae_field *F = &vae_config_fields[f];
    char text[64] = "", why[256];
    int rc = get_str(fid, path, F->attr, text, sizeof text);
    if (rc) return rc;
    if (vae_config_set(c, f, text, why, sizeof why) == VAE_OK) return VAE_OK;
    if (F->type == VAE_FT_FAMILY)
        return vae_error(VAE_EDATA, "'%s': attribute '%s' is '%s', not a model this build knows (%s)", path, F->attr, text,
                         vae_family_names());
    char names[128] = "";
    for (int k = 0; F->choices[k]; k++) {
        size_t l = strlen(names);
        snprintf(names + l, sizeof names - l, "%s%s", k ? (F->choices[k + 1] ? ", " : " or ") : "", F->choices[k]);
    }
    return vae_error(VAE_EDATA, "'%s': attribute '%s' is '%s', not %s", path, F->attr, text, names);
}

/* The hidden sizes: an int array attribute of 1..VAE_MAX_HIDDEN values. */
static int get_hidden(hid_t fid, const char *path, vae_arch *a)
{
    a->n_hidden = 0;
    if (H5Aexists(fid, "hidden") > 0) {
        hid_t at = H5Aopen(fid, "hidden", H5P_DEFAULT);
        hid_t sp = H5Aget_space(at);
        a->n_hidden = (int)H5Sget_simple_extent_npoints(sp);
        H5Sclose(sp);
        H5Aclose(at);
    }
    if (a->n_hidden < 1 || a->n_hidden > VAE_MAX_HIDDEN)
        return vae_error(VAE_EDATA, "'%s': attribute 'hidden' is missing or has %d values", path, a->n_hidden);
    return get_attr(fid, path, "hidden", H5T_NATIVE_INT, a->n_hidden, a->hidden);
}

/* A list field (VAE_FT_GROUPS): an int array attribute of 1..VAE_MAX_HIDDEN values into vals, its count into vals[-1]; or none (absent). */
static int get_groups(hid_t fid, const char *path, const char *name, int *vals)
{
    int *n = vals - 1;
    *n = 0;
    if (H5Aexists(fid, name) <= 0) return VAE_OK;
    hid_t at = H5Aopen(fid, name, H5P_DEFAULT);
    hid_t sp = H5Aget_space(at);
    hssize_t k = H5Sget_simple_extent_npoints(sp);
    H5Sclose(sp);
    H5Aclose(at);
    if (k < 1 || k > VAE_MAX_HIDDEN)
        return vae_error(VAE_EDATA, "'%s': attribute '%s' has %lld values, not 1..%d", path, name, (long long)k, VAE_MAX_HIDDEN);
    *n = (int)k;
    return get_attr(fid, path, name, H5T_NATIVE_INT, *n, vals);
}

/* The seed: a whole number in 0..2^64-1, checked before HDF5's clamping conversion (-1 would read as 0). */
static int get_seed(hid_t fid, const char *path, uint64_t *seed)
{
    double x = 0.0;
    unsigned long long v = 0;
    int rc = get_attr(fid, path, "seed", H5T_NATIVE_DOUBLE, 1, &x);
    if (!rc && !(x >= 0.0 && x <= 18446744073709551615.0 && x == floor(x)))
        rc = vae_error(VAE_EDATA, "'%s': attribute 'seed' is %g, not a whole number in 0..2^64-1", path, x);
    if (!rc) rc = get_attr(fid, path, "seed", H5T_NATIVE_ULLONG, 1, &v);
    *seed = v;
    return rc;
}

/*
 * The configuration from the table's attributes. Shims for checkpoints of
 * earlier versions: without cfg.data_abs (before absolute paths) a test-data
 * FILE alone meant FILE:/test/images; a data FILE alone is FILE:/train/images.
 */
static int read_config(hid_t fid, const char *path, vae_config *c)
{
    int rc = VAE_OK, shape[3] = { 0, 0, 0 };
    for (int f = 0; f < vae_config_nfields && !rc; f++) {
        const vae_field *F = &vae_config_fields[f];
        char *at = (char *)c + F->off;
        if (!F->attr) continue;
        if (F->optional && F->type != VAE_FT_GROUPS && H5Aexists(fid, F->attr) <= 0) {
            char why[256]; /* written before this field was: the default */
            if (F->def && vae_config_set(c, f, F->def, why, sizeof why)) rc = vae_error(VAE_EINVAL, "%s", why);
            continue;
        }
        switch (F->type) {
        case VAE_FT_INT: rc = get_int(fid, path, F->attr, (int *)at); break;
        case VAE_FT_LONG: rc = get_long(fid, path, F->attr, (long *)at); break;
        case VAE_FT_DOUBLE: rc = get_double(fid, path, F->attr, (double *)at); break;
        case VAE_FT_SEED: rc = get_seed(fid, path, &c->seed); break;
        case VAE_FT_CHOICE:
            if (F->numeric) rc = get_int(fid, path, F->attr, (int *)at);
            else rc = get_choice(fid, path, c, f);
            break;
        case VAE_FT_FAMILY: rc = get_choice(fid, path, c, f); break;
        case VAE_FT_HIDDEN: rc = get_hidden(fid, path, &c->arch); break;
        case VAE_FT_GROUPS: rc = get_groups(fid, path, F->attr, (int *)at); break;
        case VAE_FT_CAPACITY:
            rc = get_double(fid, path, "cfg.capacity_max", &c->capacity_max);
            if (!rc) rc = get_long(fid, path, "cfg.capacity_steps", &c->capacity_steps);
            break;
        default: rc = get_str(fid, path, F->attr, at, VAE_PATH_LEN); break;
        }
    }
    if (!rc) rc = get_attr(fid, path, "input_shape", H5T_NATIVE_INT, 3, shape);
    c->arch.C = shape[0];
    c->arch.Hh = shape[1];
    c->arch.W = shape[2];
    if (!rc && H5Aexists(fid, "cfg.data_abs") > 0) {
        rc = get_str(fid, path, "cfg.data_abs", c->data_abs, sizeof c->data_abs);
        if (!rc) rc = get_str(fid, path, "cfg.test_data_abs", c->test_data_abs, sizeof c->test_data_abs);
    } else if (!rc && c->test_data[0] && !strstr(c->test_data, ":/")) {
        strncat(c->test_data, ":/test/images", sizeof c->test_data - strlen(c->test_data) - 1);
    }
    if (!rc && c->data[0] && !strstr(c->data, ":/")) /* FILE alone: the same rows then as now */
        strncat(c->data, ":" VAE_DATA_DEFAULT_DSET, sizeof c->data - strlen(c->data) - 1);
    c->allreduce = VAE_AR_SHM; /* of each command, not stored */
    return rc;
}

int vae_ckpt_read_meta(const char *path, vae_config *c, vae_train_state *st)
{
    hid_t fid = open_ckpt(path);
    if (fid < 0) return VAE_EDATA;
    char fmt[64] = "";
    int rc = get_str(fid, path, "format", fmt, sizeof fmt);
    if (!rc && strcmp(fmt, VAE_CKPT_FORMAT) != 0)
        rc = vae_error(VAE_EDATA, "'%s' is not an mpivae checkpoint (format '%s')", path, fmt);
    long ver = 0;
    if (!rc) rc = get_long(fid, path, "format_version", &ver);
    if (!rc && ver != VAE_CKPT_VERSION)
        rc = vae_error(VAE_EDATA, "'%s' has checkpoint format version %ld; this build reads %d", path, ver, VAE_CKPT_VERSION);
    memset(c, 0, sizeof *c);
    memset(st, 0, sizeof *st);
    if (!rc) rc = read_config(fid, path, c);
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

int vae_ckpt_read_tensors(const char *path, vae_model *m, int what)
{
    hid_t fid = open_ckpt(path);
    if (fid < 0) return VAE_EDATA;
    int has_ema = H5Lexists(fid, "/ema", H5P_DEFAULT) > 0;
    int rc = read_group(fid, path, what == VAE_CKPT_USE && has_ema ? "/ema" : "/params", m, m->params);
    if (!rc && what == VAE_CKPT_ALL) rc = read_group(fid, path, "/optimizer/m", m, m->m);
    if (!rc && what == VAE_CKPT_ALL) rc = read_group(fid, path, "/optimizer/v", m, m->v);
    if (!rc && what == VAE_CKPT_ALL) rc = read_group_steps(fid, path, m);
    if (!rc && what == VAE_CKPT_ALL && has_ema) {
        if (!m->ema && !(m->ema = vae_model_alloc(m->n_params)))
            rc = vae_error(VAE_ENOMEM, "cannot allocate the moving average of %zu parameters", m->n_params);
        if (!rc) rc = read_group(fid, path, "/ema", m, m->ema);
    }
    H5Fclose(fid);
    return rc;
}

int vae_ckpt_check_tensors(const char *path, const vae_model *plan, int what)
{
    hid_t fid = open_ckpt(path);
    if (fid < 0) return VAE_EDATA;
    vae_model *m = (vae_model *)plan; /* read_group reads nothing into a NULL block */
    int rc = read_group(fid, path, "/params", m, NULL);
    if (!rc && what == VAE_CKPT_ALL) rc = read_group(fid, path, "/optimizer/m", m, NULL);
    if (!rc && what == VAE_CKPT_ALL) rc = read_group(fid, path, "/optimizer/v", m, NULL);
    if (!rc && H5Lexists(fid, "/ema", H5P_DEFAULT) > 0) rc = read_group(fid, path, "/ema", m, NULL);
    H5Fclose(fid);
    return rc;
}

int vae_ckpt_has_ema(const char *path)
{
    hid_t fid = open_ckpt(path);
    if (fid < 0) return 0;
    int has = H5Lexists(fid, "/ema", H5P_DEFAULT) > 0;
    H5Fclose(fid);
    return has;
}

int vae_ckpt_find_latest(const char *dir, char *path, size_t path_len)
{
    long steps[4096];
    int n = vae_rundir_list_checkpoints(dir, steps, 4096);
    for (int i = 0; i < n; i++) {
        char p[VAE_PATH_LEN + 64];
        vae_rundir_ckpt_path(dir, steps[i], p, sizeof p);
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
        if (!rc) vae_model_free(&m); /* the plan's own state (a family's), before init plans again */
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
