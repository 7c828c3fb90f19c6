/*
 * metrics.c: the run's metrics table, mirrored in DIR/metrics.h5 (see metrics.h).
 */
#define _POSIX_C_SOURCE 200809L
#include "mpivae/metrics.h"

#include "mpivae/status.h"

#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* The columns around the family's terms. */
static const char *const train_head[] = { "step", "epoch", "loss" };
/* skipped: 0, 1 (a non-finite value: the step was skipped), 2 (the update was skipped over --skip-threshold). */
static const char *const train_tail[] = { "beta", "lr", "grad_norm", "skipped", "samples_per_s", "time" };
static const char *const eval_head[] = { "step", "epoch", "loss" };
static const char *const eval_tail[] = { "time" };

static int is_int_field(const char *name) { return !strcmp(name, "step") || !strcmp(name, "epoch") || !strcmp(name, "skipped"); }

/* A column that files of earlier versions lack: read as zeros there. */
static int is_new_field(const char *name) { return !strcmp(name, "skipped"); }

/* File access without HDF5's file locks: a reader's lock must never make the writer fail. */
static hid_t make_fapl(int latest)
{
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5Pset_file_locking(fapl, 0, 1);
    if (latest) H5Pset_libver_bounds(fapl, H5F_LIBVER_LATEST, H5F_LIBVER_LATEST);
    return fapl;
}

/* Opens an existing metrics file for reading, also when a writer holds it in SWMR mode or died holding it. */
static hid_t open_for_reading(const char *path)
{
    hid_t fapl = make_fapl(0);
    hid_t fid = H5Fopen(path, H5F_ACC_RDONLY, fapl);
    if (fid < 0) fid = H5Fopen(path, H5F_ACC_RDONLY | H5F_ACC_SWMR_READ, fapl);
    H5Pclose(fapl);
    return fid;
}

static int reserve(vae_metrics_table *t, long n)
{
    if (n <= t->cap) return VAE_OK;
    long cap = t->cap ? t->cap : 1024;
    while (cap < n) cap *= 2;
    double *r = realloc(t->rows, (size_t)cap * (size_t)t->nf * sizeof(double));
    if (!r) return vae_error(VAE_ENOMEM, "cannot hold %ld rows of metrics", n);
    t->rows = r;
    t->cap = cap;
    return VAE_OK;
}

/* Reads the rows of one group of an existing file whose step is at most keep_upto. */
static int read_table(hid_t fid, vae_metrics_table *t, long keep_upto)
{
    char p[64];
    hsize_t len = (hsize_t)-1;
    for (int f = 0; f < t->nf; f++) {
        snprintf(p, sizeof p, "%s/%s", t->group, t->names[f]);
        if (H5Lexists(fid, t->group, H5P_DEFAULT) <= 0) return VAE_EDATA;
        if (H5Lexists(fid, p, H5P_DEFAULT) <= 0) {
            if (is_new_field(t->names[f])) continue;
            return VAE_EDATA;
        }
        hid_t ds = H5Dopen2(fid, p, H5P_DEFAULT);
        if (ds < 0) return VAE_EDATA;
        hid_t sp = H5Dget_space(ds);
        hsize_t l = 0;
        if (H5Sget_simple_extent_ndims(sp) != 1 || H5Sget_simple_extent_dims(sp, &l, NULL) < 0) l = 0;
        H5Sclose(sp);
        H5Dclose(ds);
        if (l < len) len = l; /* a write cut short leaves some columns longer: the shortest holds whole rows */
    }
    int rc = reserve(t, (long)len);
    double *col = rc ? NULL : malloc((len ? len : 1) * sizeof(double));
    if (!rc && !col) rc = vae_error(VAE_ENOMEM, "cannot hold %llu rows of metrics", (unsigned long long)len);
    for (int f = 0; f < t->nf && !rc; f++) {
        snprintf(p, sizeof p, "%s/%s", t->group, t->names[f]);
        if (H5Lexists(fid, p, H5P_DEFAULT) <= 0) { /* a new column (checked above) */
            for (hsize_t r = 0; r < len; r++) t->rows[r * (size_t)t->nf + (size_t)f] = 0.0;
            continue;
        }
        hid_t ds = H5Dopen2(fid, p, H5P_DEFAULT);
        hid_t fsp = H5Dget_space(ds);
        hid_t msp = H5Screate_simple(1, &len, NULL);
        hsize_t start = 0;
        if (len && (H5Sselect_hyperslab(fsp, H5S_SELECT_SET, &start, NULL, &len, NULL) < 0 ||
                    H5Dread(ds, H5T_NATIVE_DOUBLE, msp, fsp, H5P_DEFAULT, col) < 0))
            rc = VAE_EDATA;
        H5Sclose(msp);
        H5Sclose(fsp);
        H5Dclose(ds);
        for (hsize_t r = 0; r < len && !rc; r++) t->rows[r * (size_t)t->nf + (size_t)f] = col[r];
    }
    free(col);
    if (rc) return rc;
    long n = 0; /* rows are in step order: keep the prefix up to keep_upto */
    while (n < (long)len && t->rows[(size_t)n * (size_t)t->nf] <= (double)keep_upto) n++;
    t->n = n;
    return VAE_OK;
}

/* Creates the group's datasets in a new file and writes the rows held. */
static int write_table(hid_t fid, const vae_metrics_table *t)
{
    hid_t grp = H5Gcreate2(fid, t->group, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (grp < 0) return VAE_EIO;
    int rc = VAE_OK;
    hsize_t n = (hsize_t)t->n;
    double *col = malloc((n ? n : 1) * sizeof(double));
    if (!col) rc = VAE_ENOMEM;
    for (int f = 0; f < t->nf && !rc; f++) {
        hsize_t maxd = H5S_UNLIMITED, chunk = 256; /* 2 KB: a short run's file stays small */
        hid_t sp = H5Screate_simple(1, &n, &maxd);
        hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
        H5Pset_chunk(dcpl, 1, &chunk);
        hid_t ds = H5Dcreate2(grp, t->names[f], is_int_field(t->names[f]) ? H5T_STD_I64LE : H5T_IEEE_F64LE, sp,
                              H5P_DEFAULT, dcpl, H5P_DEFAULT);
        for (hsize_t r = 0; r < n; r++) col[r] = t->rows[r * (size_t)t->nf + (size_t)f];
        if (ds < 0 || (n && H5Dwrite(ds, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, col) < 0)) rc = VAE_EIO;
        if (ds >= 0) H5Dclose(ds);
        H5Pclose(dcpl);
        H5Sclose(sp);
    }
    free(col);
    H5Gclose(grp);
    return rc;
}

static void fsync_path(const char *path, int dir)
{
    int fd = open(path, dir ? O_RDONLY | O_DIRECTORY : O_RDONLY);
    if (fd < 0) return;
    if (fsync(fd) != 0) { /* best effort: the rename below still publishes a whole file */ }
    close(fd);
}

/*
 * Writes every row held to DIR/.metrics.h5.tmp, publishes it as metrics.h5 by
 * rename (a reader holding the old file keeps reading that one), and opens it
 * for appending in SWMR mode.
 */
static int rewrite(vae_metrics *mt)
{
    char tmp[sizeof mt->path + 16], dir[sizeof mt->path];
    snprintf(dir, sizeof dir, "%s", mt->path);
    char *slash = strrchr(dir, '/');
    if (slash) *slash = '\0';
    else snprintf(dir, sizeof dir, ".");
    snprintf(tmp, sizeof tmp, "%s/.metrics.h5.tmp", dir);
    hid_t fapl = make_fapl(1);
    hid_t fid = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    int rc = fid >= 0 ? VAE_OK : VAE_EIO;
    for (int g = 0; g < 2 && !rc; g++) rc = write_table(fid, &mt->t[g]);
    if (fid >= 0 && H5Fclose(fid) < 0) rc = VAE_EIO;
    if (!rc) fsync_path(tmp, 0);
    if (!rc && rename(tmp, mt->path) != 0) rc = VAE_EIO;
    if (rc) unlink(tmp);
    if (!rc) fsync_path(dir, 1);
    if (!rc) {
        mt->fid = H5Fopen(mt->path, H5F_ACC_RDWR | H5F_ACC_SWMR_WRITE, fapl);
        if (mt->fid < 0) rc = VAE_EIO;
    }
    H5Pclose(fapl);
    if (!rc)
        for (int g = 0; g < 2; g++) mt->t[g].on_disk = mt->t[g].n;
    return rc;
}

/* A table's columns: head, the terms' names, tail. */
static void set_columns(vae_metrics_table *t, const char *group, const char *const *head, int nh,
                        const vae_model *f, const char *const *tail, int nt)
{
    t->group = group;
    t->nf = 0;
    for (int i = 0; i < nh; i++) t->names[t->nf++] = head[i];
    for (int i = 0; i < f->n_terms; i++) t->names[t->nf++] = f->terms[i].name;
    for (int i = 0; i < nt; i++) t->names[t->nf++] = tail[i];
}

int vae_metrics_open(vae_metrics *mt, const char *dir, long keep_upto, const vae_model *f)
{
    memset(mt, 0, sizeof *mt);
    mt->fid = -1;
    set_columns(&mt->t[0], "/train", train_head, 3, f, train_tail, 6);
    set_columns(&mt->t[1], "/eval", eval_head, 3, f, eval_tail, 1);
    snprintf(mt->path, sizeof mt->path, "%s/metrics.h5", dir);
    struct stat sb;
    int rc = VAE_OK;
    if (stat(mt->path, &sb) == 0) {
        hid_t fid = open_for_reading(mt->path);
        if (fid < 0) rc = VAE_EDATA;
        for (int g = 0; g < 2 && !rc; g++) rc = read_table(fid, &mt->t[g], keep_upto);
        if (fid >= 0) H5Fclose(fid);
        if (rc && rc != VAE_ENOMEM) {
            /*
             * A write cut short (a full disk) can leave it unreadable. That must not stop the run or
             * its resume: the file is kept aside for the user, and the table starts again here.
             */
            char aside[sizeof mt->path + 32];
            snprintf(aside, sizeof aside, "%s.damaged-%ld", mt->path, (long)time(NULL));
            if (rename(mt->path, aside) != 0)
                return vae_error(VAE_EIO, "'%s' is damaged and cannot be moved aside: %s", mt->path, strerror(errno));
            vae_warn("'%s' is damaged (a write cut short?): kept as '%s'; its rows up to step %ld are not in the new "
                     "metrics.h5", mt->path, aside, keep_upto);
            for (int g = 0; g < 2; g++) mt->t[g].n = 0;
            rc = VAE_OK;
        }
    }
    if (!rc && rewrite(mt)) rc = vae_error(VAE_EIO, "cannot write '%s'", mt->path);
    if (rc) mt->path[0] = '\0'; /* closing writes nothing over the file */
    return rc;
}

/* Appends rows [on_disk, n) of a table to the open file. */
static int append(hid_t fid, vae_metrics_table *t)
{
    if (t->n == t->on_disk) return VAE_OK;
    char p[64];
    hsize_t start = (hsize_t)t->on_disk, add = (hsize_t)(t->n - t->on_disk), len = (hsize_t)t->n;
    double *col = malloc(add * sizeof(double));
    int rc = col ? VAE_OK : VAE_EIO;
    for (int f = 0; f < t->nf && !rc; f++) {
        snprintf(p, sizeof p, "%s/%s", t->group, t->names[f]);
        hid_t ds = H5Dopen2(fid, p, H5P_DEFAULT);
        if (ds < 0) {
            rc = VAE_EIO;
            break;
        }
        for (hsize_t r = 0; r < add; r++) col[r] = t->rows[(start + r) * (size_t)t->nf + (size_t)f];
        hid_t fsp = -1, msp = H5Screate_simple(1, &add, NULL);
        if (H5Dset_extent(ds, &len) < 0 || (fsp = H5Dget_space(ds)) < 0 ||
            H5Sselect_hyperslab(fsp, H5S_SELECT_SET, &start, NULL, &add, NULL) < 0 ||
            H5Dwrite(ds, H5T_NATIVE_DOUBLE, msp, fsp, H5P_DEFAULT, col) < 0)
            rc = VAE_EIO;
        if (fsp >= 0) H5Sclose(fsp);
        H5Sclose(msp);
        H5Dclose(ds);
    }
    free(col);
    return rc;
}

int vae_metrics_flush(vae_metrics *mt)
{
    if (mt->t[0].n == mt->t[0].on_disk && mt->t[1].n == mt->t[1].on_disk && mt->fid > 0) return VAE_OK;
    int rc;
    errno = 0;
    if (mt->fid <= 0) {
        rc = rewrite(mt); /* after a failure: the whole table again, under a new name */
    } else {
        rc = append((hid_t)mt->fid, &mt->t[0]);
        if (!rc) rc = append((hid_t)mt->fid, &mt->t[1]);
        if (!rc && H5Fflush((hid_t)mt->fid, H5F_SCOPE_LOCAL) < 0) rc = VAE_EIO;
        if (!rc)
            for (int g = 0; g < 2; g++) mt->t[g].on_disk = mt->t[g].n;
    }
    if (!rc) {
        if (mt->failures) printf("metrics: '%s' written again after %ld failed attempts; no row lost\n", mt->path, mt->failures);
        mt->failures = 0;
        return VAE_OK;
    }
    mt->failures++;
    vae_warn("cannot write metrics to '%s' (%s); training goes on, the %ld rows are kept in memory and written at "
             "the next log line", mt->path, errno ? strerror(errno) : "HDF5 error", mt->t[0].n);
    if (mt->fid > 0) H5Fclose((hid_t)mt->fid);
    mt->fid = -1;
    return VAE_OK;
}

static int add_row(vae_metrics_table *t, const double *row)
{
    int rc = reserve(t, t->n + 1);
    if (rc) return rc;
    memcpy(t->rows + (size_t)t->n * (size_t)t->nf, row, sizeof(double) * (size_t)t->nf);
    t->n++;
    return VAE_OK;
}

int vae_metrics_add_train(vae_metrics *mt, const double *row) { return add_row(&mt->t[0], row); }

int vae_metrics_add_eval(vae_metrics *mt, const double *row) { return add_row(&mt->t[1], row); }

void vae_metrics_close(vae_metrics *mt)
{
    if (mt->path[0]) vae_metrics_flush(mt);
    if (mt->fid > 0) H5Fclose((hid_t)mt->fid);
    mt->fid = -1;
    for (int g = 0; g < 2; g++) {
        free(mt->t[g].rows);
        mt->t[g].rows = NULL;
        mt->t[g].n = mt->t[g].cap = 0;
    }
}

long vae_metrics_count(const char *dir, const char *group)
{
    char path[1100], p[64];
    snprintf(path, sizeof path, "%s/metrics.h5", dir);
    struct stat sb;
    if (stat(path, &sb) != 0) return 0;
    hid_t fid = open_for_reading(path);
    if (fid < 0) return -1;
    snprintf(p, sizeof p, "%s/step", group);
    long n = -1;
    if (H5Lexists(fid, group, H5P_DEFAULT) > 0 && H5Lexists(fid, p, H5P_DEFAULT) > 0) {
        hid_t ds = H5Dopen2(fid, p, H5P_DEFAULT);
        hid_t sp = ds >= 0 ? H5Dget_space(ds) : -1;
        hsize_t l = 0;
        if (sp >= 0 && H5Sget_simple_extent_dims(sp, &l, NULL) == 1) n = (long)l;
        if (sp >= 0) H5Sclose(sp);
        if (ds >= 0) H5Dclose(ds);
    }
    H5Fclose(fid);
    return n;
}
