/*
 * metrics.c: the run's metrics table, mirrored in DIR/metrics.h5 (see metrics.h).
 */
#define _POSIX_C_SOURCE 200809L
#include "mpivae/metrics.h"

#include "mpivae/status.h"

#include <errno.h>
#include <limits.h>
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
    /* Every row takes 8 bytes of each column in the file (no compression): more rows than that is a damaged or edited file. */
    hsize_t fsize = 0;
    if (len > 0 && (H5Fget_filesize(fid, &fsize) < 0 || len > fsize / 8 || len > VAE_METRICS_MAX_ROWS)) return VAE_EDATA;
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

/* A fixed-length string attribute. */
static int put_str(hid_t loc, const char *name, const char *v)
{
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, strlen(v) + 1);
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(loc, name, t, sp, H5P_DEFAULT, H5P_DEFAULT);
    int rc = a >= 0 && H5Awrite(a, t, v) >= 0 ? VAE_OK : VAE_EIO;
    if (a >= 0) H5Aclose(a);
    H5Sclose(sp);
    H5Tclose(t);
    return rc;
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
    /* The column order, for readers that do not know the family (the report). */
    char cols[VAE_METRICS_MAX_FIELDS * 33] = "";
    for (int f = 0; f < t->nf; f++) {
        size_t l = strlen(cols);
        snprintf(cols + l, sizeof cols - l, "%s%s", f ? "," : "", t->names[f]);
    }
    if (!rc && put_str(grp, "columns", cols)) rc = VAE_EIO;
    H5Gclose(grp);
    return rc;
}

/* Strings of a session, in the order of the /sessions string datasets. */
static char **session_str(vae_metrics_session *s, int k) { return k == 0 ? &s->hosts : &s->banner; }
static const char *const session_strs[] = { "hosts", "banner" };
static const char *const session_ints[] = { "step", "ranks", "nodes", "slurm_job", "slurm_restart" };
static long *session_int(vae_metrics_session *s, int k)
{
    long *v[] = { &s->step, &s->ranks, &s->nodes, &s->slurm_job, &s->slurm_restart };
    return v[k];
}

/* Writes /sessions (every session held). */
static int write_sessions(hid_t fid, vae_metrics *mt)
{
    hsize_t n = (hsize_t)mt->n_sessions;
    hid_t grp = H5Gcreate2(fid, "/sessions", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (grp < 0) return VAE_EIO;
    hid_t sp = H5Screate_simple(1, &n, NULL);
    hid_t str = H5Tcopy(H5T_C_S1);
    H5Tset_size(str, H5T_VARIABLE);
    H5Tset_cset(str, H5T_CSET_UTF8);
    int rc = VAE_OK;
    double *d = malloc((n ? n : 1) * sizeof(double));
    const char **sv = malloc((n ? n : 1) * sizeof(char *));
    if (!d || !sv) rc = VAE_ENOMEM;
    for (int k = 0; k < 6 && !rc; k++) { /* five int64 columns, then start */
        for (hsize_t i = 0; i < n; i++) d[i] = k < 5 ? (double)*session_int(&mt->sessions[i], k) : mt->sessions[i].start;
        hid_t ds = H5Dcreate2(grp, k < 5 ? session_ints[k] : "start", k < 5 ? H5T_STD_I64LE : H5T_IEEE_F64LE, sp,
                              H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        if (ds < 0 || (n && H5Dwrite(ds, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, d) < 0)) rc = VAE_EIO;
        if (ds >= 0) H5Dclose(ds);
    }
    for (int k = 0; k < 2 && !rc; k++) {
        for (hsize_t i = 0; i < n; i++) {
            const char *v = *session_str(&mt->sessions[i], k);
            sv[i] = v ? v : "";
        }
        hid_t ds = H5Dcreate2(grp, session_strs[k], str, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        if (ds < 0 || (n && H5Dwrite(ds, str, H5S_ALL, H5S_ALL, H5P_DEFAULT, sv) < 0)) rc = VAE_EIO;
        if (ds >= 0) H5Dclose(ds);
    }
    free(d);
    free(sv);
    H5Tclose(str);
    H5Sclose(sp);
    H5Gclose(grp);
    return rc;
}

static void free_sessions(vae_metrics *mt)
{
    for (int i = 0; i < mt->n_sessions; i++) {
        free(mt->sessions[i].hosts);
        free(mt->sessions[i].banner);
    }
    free(mt->sessions);
    mt->sessions = NULL;
    mt->n_sessions = 0;
}

/* The length of a 1-D dataset, or -1. */
static long ds_len(hid_t grp, const char *name)
{
    if (H5Lexists(grp, name, H5P_DEFAULT) <= 0) return -1;
    hid_t ds = H5Dopen2(grp, name, H5P_DEFAULT);
    hid_t sp = ds >= 0 ? H5Dget_space(ds) : -1;
    hsize_t l = 0;
    long n = sp >= 0 && H5Sget_simple_extent_ndims(sp) == 1 && H5Sget_simple_extent_dims(sp, &l, NULL) == 1 ? (long)l : -1;
    if (sp >= 0) H5Sclose(sp);
    if (ds >= 0) H5Dclose(ds);
    return n;
}

/*
 * Reads /sessions of an existing file, those that started at a step <=
 * keep_upto. A file without them (an earlier version's) has none; a damaged
 * /sessions is dropped with the rest of what cannot be read (VAE_EDATA).
 */
static int read_sessions(hid_t fid, vae_metrics *mt, long keep_upto)
{
    if (H5Lexists(fid, "/sessions", H5P_DEFAULT) <= 0) return VAE_OK;
    hid_t grp = H5Gopen2(fid, "/sessions", H5P_DEFAULT);
    if (grp < 0) return VAE_EDATA;
    long n = ds_len(grp, "step");
    int rc = n >= 0 && n <= 1000000 ? VAE_OK : VAE_EDATA;
    for (int k = 1; k < 5 && !rc; k++) rc = ds_len(grp, session_ints[k]) == n ? VAE_OK : VAE_EDATA;
    if (!rc && (ds_len(grp, "start") != n || ds_len(grp, "hosts") != n || ds_len(grp, "banner") != n)) rc = VAE_EDATA;
    if (!rc && n > 0) {
        mt->sessions = calloc((size_t)n, sizeof *mt->sessions);
        if (!mt->sessions) rc = VAE_ENOMEM;
        else mt->n_sessions = (int)n;
    }
    double *d = n > 0 ? malloc((size_t)n * sizeof(double)) : NULL;
    char **sv = n > 0 ? calloc((size_t)n, sizeof(char *)) : NULL;
    if (n > 0 && (!d || !sv)) rc = VAE_ENOMEM;
    hid_t str = H5Tcopy(H5T_C_S1);
    H5Tset_size(str, H5T_VARIABLE);
    H5Tset_cset(str, H5T_CSET_UTF8);
    for (int k = 0; k < 6 && !rc && n > 0; k++) {
        hid_t ds = H5Dopen2(grp, k < 5 ? session_ints[k] : "start", H5P_DEFAULT);
        if (ds < 0 || H5Dread(ds, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, d) < 0) rc = VAE_EDATA;
        if (ds >= 0) H5Dclose(ds);
        for (long i = 0; i < n && !rc; i++) {
            if (k < 5) *session_int(&mt->sessions[i], k) = (long)d[i];
            else mt->sessions[i].start = d[i];
        }
    }
    for (int k = 0; k < 2 && !rc && n > 0; k++) {
        hid_t ds = H5Dopen2(grp, session_strs[k], H5P_DEFAULT);
        hid_t sp = ds >= 0 ? H5Dget_space(ds) : -1;
        if (ds < 0 || H5Dread(ds, str, H5S_ALL, H5S_ALL, H5P_DEFAULT, sv) < 0) rc = VAE_EDATA;
        for (long i = 0; i < n && !rc; i++) {
            *session_str(&mt->sessions[i], k) = strdup(sv[i] ? sv[i] : "");
            if (!*session_str(&mt->sessions[i], k)) rc = VAE_ENOMEM;
        }
        if (ds >= 0 && sp >= 0 && !(rc == VAE_EDATA)) H5Dvlen_reclaim(str, sp, H5P_DEFAULT, sv);
        if (sp >= 0) H5Sclose(sp);
        if (ds >= 0) H5Dclose(ds);
    }
    H5Tclose(str);
    free(d);
    free(sv);
    H5Gclose(grp);
    if (rc) {
        free_sessions(mt);
        return rc;
    }
    int keep = 0;
    for (int i = 0; i < mt->n_sessions; i++) {
        if (mt->sessions[i].step <= keep_upto) mt->sessions[keep++] = mt->sessions[i];
        else {
            free(mt->sessions[i].hosts);
            free(mt->sessions[i].banner);
        }
    }
    mt->n_sessions = keep;
    return VAE_OK;
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
    if (!rc) rc = write_sessions(fid, mt);
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

/* Adds a copy of s as the newest session. */
static int add_session(vae_metrics *mt, const vae_metrics_session *s)
{
    vae_metrics_session *ns = realloc(mt->sessions, (size_t)(mt->n_sessions + 1) * sizeof *ns);
    if (!ns) return vae_error(VAE_ENOMEM, "cannot hold the run's sessions");
    mt->sessions = ns;
    vae_metrics_session *c = &ns[mt->n_sessions];
    *c = *s;
    c->hosts = strdup(s->hosts ? s->hosts : "");
    c->banner = strdup(s->banner ? s->banner : "");
    mt->n_sessions++;
    if (!c->hosts || !c->banner) return vae_error(VAE_ENOMEM, "cannot hold the run's sessions");
    return VAE_OK;
}

int vae_metrics_open(vae_metrics *mt, const char *dir, long keep_upto, const vae_model *f,
                     const vae_metrics_session *now)
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
        if (!rc && read_sessions(fid, mt, keep_upto) == VAE_EDATA) /* the rows are what matters */
            vae_warn("'%s': /sessions cannot be read; the run's earlier processes are not recorded in the new file", mt->path);
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
            free_sessions(mt);
            rc = VAE_OK;
        }
    }
    if (!rc && now) rc = add_session(mt, now);
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
    free_sessions(mt);
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

int vae_metrics_col(const vae_metrics_table *t, const char *name)
{
    for (int f = 0; f < t->nf; f++)
        if (!strcmp(t->names[f], name)) return f;
    return -1;
}

/* Collects the names of a group's datasets (H5Literate's callback). */
struct name_list {
    char names[VAE_METRICS_MAX_FIELDS * 2][32];
    int n;
};

static herr_t collect_name(hid_t g, const char *name, const H5L_info_t *info, void *data)
{
    (void)g;
    (void)info;
    struct name_list *l = data;
    if (l->n < (int)(sizeof l->names / sizeof l->names[0]) && strlen(name) < sizeof l->names[0])
        snprintf(l->names[l->n++], sizeof l->names[0], "%s", name);
    return 0;
}

/*
 * The columns of a group of a file written by any version: the "columns"
 * attribute, or (earlier versions) head, the other datasets by name, tail.
 */
static int file_columns(hid_t fid, vae_metrics_table *t, const char *const *head, int nh, const char *const *tail, int nt)
{
    hid_t grp = H5Gopen2(fid, t->group, H5P_DEFAULT);
    if (grp < 0) return VAE_EDATA;
    t->nf = 0;
    int rc = VAE_OK;
    char cols[VAE_METRICS_MAX_FIELDS * 33] = "";
    if (H5Aexists(grp, "columns") > 0) {
        hid_t a = H5Aopen(grp, "columns", H5P_DEFAULT);
        hid_t ty = a >= 0 ? H5Aget_type(a) : -1, asp = a >= 0 ? H5Aget_space(a) : -1;
        /* One string: a list of names (as h5py writes a Python list) is not this layout. */
        if (ty < 0 || asp < 0 || H5Tget_class(ty) != H5T_STRING || H5Sget_simple_extent_npoints(asp) != 1) rc = VAE_EDATA;
        else if (H5Tis_variable_str(ty) > 0) { /* as h5py writes a str attribute */
            char *v = NULL;
            hid_t mt = H5Tcopy(H5T_C_S1);
            H5Tset_size(mt, H5T_VARIABLE);
            H5Tset_cset(mt, H5Tget_cset(ty));
            if (H5Aread(a, mt, &v) < 0 || !v || strlen(v) >= sizeof cols) rc = VAE_EDATA;
            else snprintf(cols, sizeof cols, "%s", v);
            if (v) H5free_memory(v);
            H5Tclose(mt);
        } else if (H5Tget_size(ty) >= sizeof cols || H5Aread(a, ty, cols) < 0) rc = VAE_EDATA;
        if (asp >= 0) H5Sclose(asp);
        if (ty >= 0) H5Tclose(ty);
        if (a >= 0) H5Aclose(a);
        cols[sizeof cols - 1] = '\0';
        for (char *tok = strtok(cols, ","); tok && !rc; tok = strtok(NULL, ",")) {
            if (t->nf == VAE_METRICS_MAX_FIELDS || strlen(tok) >= sizeof t->own[0]) rc = VAE_EDATA;
            else snprintf(t->own[t->nf++], sizeof t->own[0], "%s", tok);
        }
    } else {
        struct name_list l = { .n = 0 };
        H5Literate(grp, H5_INDEX_NAME, H5_ITER_INC, NULL, collect_name, &l);
        for (int i = 0; i < nh; i++) snprintf(t->own[t->nf++], sizeof t->own[0], "%s", head[i]);
        for (int i = 0; i < l.n && !rc; i++) {
            int known = 0;
            for (int k = 0; k < nh; k++) known |= !strcmp(l.names[i], head[k]);
            for (int k = 0; k < nt; k++) known |= !strcmp(l.names[i], tail[k]);
            if (known) continue;
            if (t->nf + nt >= VAE_METRICS_MAX_FIELDS) rc = VAE_EDATA;
            else snprintf(t->own[t->nf++], sizeof t->own[0], "%s", l.names[i]);
        }
        for (int i = 0; i < nt && !rc; i++) snprintf(t->own[t->nf++], sizeof t->own[0], "%s", tail[i]);
    }
    for (int f = 0; f < t->nf; f++) t->names[f] = t->own[f];
    if (!rc && (t->nf < 2 || strcmp(t->names[0], "step"))) rc = VAE_EDATA; /* rows are ordered and drawn by step */
    H5Gclose(grp);
    return rc;
}

int vae_metrics_read(const char *dir, vae_metrics *mt)
{
    memset(mt, 0, sizeof *mt);
    mt->fid = -1;
    mt->t[0].group = "/train";
    mt->t[1].group = "/eval";
    char path[sizeof mt->path];
    snprintf(path, sizeof path, "%s/metrics.h5", dir);
    struct stat sb;
    if (stat(path, &sb) != 0) return vae_error(VAE_EIO, "cannot read '%s': %s", path, strerror(errno));
    hid_t fid = open_for_reading(path);
    if (fid < 0) return vae_error(VAE_EDATA, "cannot open '%s' as HDF5", path);
    int rc = VAE_OK;
    for (int g = 0; g < 2 && !rc; g++) {
        if (H5Lexists(fid, mt->t[g].group, H5P_DEFAULT) <= 0) rc = VAE_EDATA;
        else if (g == 0) rc = file_columns(fid, &mt->t[g], train_head, 3, train_tail, 6);
        else rc = file_columns(fid, &mt->t[g], eval_head, 3, eval_tail, 1);
        if (!rc) rc = read_table(fid, &mt->t[g], LONG_MAX);
        if (rc && rc != VAE_ENOMEM) rc = vae_error(VAE_EDATA, "'%s': the group %s cannot be read as metrics", path, mt->t[g].group);
    }
    if (!rc && read_sessions(fid, mt, LONG_MAX) == VAE_EDATA) /* the rows are what matters */
        vae_warn("'%s': /sessions cannot be read; the processes of the run are not shown", path);
    H5Fclose(fid);
    if (rc) vae_metrics_close(mt);
    return rc;
}
