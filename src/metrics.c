/*
 * metrics.c: appending training and evaluation rows to metrics.h5 (see metrics.h).
 */
#define _POSIX_C_SOURCE 200809L
#include "mpivae/metrics.h"

#include "mpivae/status.h"

#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const char *train_names[VAE_METRICS_TRAIN_FIELDS] = {
    "step", "epoch", "loss", "recon", "kl", "beta", "lr", "grad_norm", "samples_per_s", "time"
};
static const char *eval_names[VAE_METRICS_EVAL_FIELDS] = { "step", "epoch", "loss", "recon", "kl", "time" };

static int is_int_field(const char *name) { return !strcmp(name, "step") || !strcmp(name, "epoch"); }

static int create_group(hid_t fid, const char *g, const char **names, int n)
{
    hid_t grp = H5Gcreate2(fid, g, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (grp < 0) return VAE_EIO;
    int rc = VAE_OK;
    for (int i = 0; i < n && !rc; i++) {
        hsize_t dims[1] = { 0 }, maxd[1] = { H5S_UNLIMITED }, chunk[1] = { 1024 };
        hid_t sp = H5Screate_simple(1, dims, maxd);
        hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
        H5Pset_chunk(dcpl, 1, chunk);
        hid_t t = is_int_field(names[i]) ? H5T_STD_I64LE : H5T_IEEE_F64LE;
        hid_t ds = H5Dcreate2(grp, names[i], t, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
        if (ds < 0) rc = VAE_EIO;
        else H5Dclose(ds);
        H5Pclose(dcpl);
        H5Sclose(sp);
    }
    H5Gclose(grp);
    return rc;
}

/* Drops rows whose step exceeds keep_upto from every dataset of group g. */
static int truncate_group(hid_t fid, const char *g, const char **names, int n, long keep_upto)
{
    char p[64];
    snprintf(p, sizeof p, "%s/step", g);
    hid_t ds = H5Dopen2(fid, p, H5P_DEFAULT);
    if (ds < 0) return VAE_EIO;
    hid_t sp = H5Dget_space(ds);
    hsize_t len = 0;
    H5Sget_simple_extent_dims(sp, &len, NULL);
    H5Sclose(sp);
    long long *steps = malloc((len ? len : 1) * sizeof(long long));
    int rc = steps ? VAE_OK : VAE_ENOMEM;
    if (!rc && len && H5Dread(ds, H5T_NATIVE_LLONG, H5S_ALL, H5S_ALL, H5P_DEFAULT, steps) < 0) rc = VAE_EIO;
    H5Dclose(ds);
    hsize_t keep = 0;
    while (!rc && keep < len && steps[keep] <= keep_upto) keep++;
    free(steps);
    for (int i = 0; i < n && !rc && keep < len; i++) {
        snprintf(p, sizeof p, "%s/%s", g, names[i]);
        hid_t d = H5Dopen2(fid, p, H5P_DEFAULT);
        if (d < 0 || H5Dset_extent(d, &keep) < 0) rc = VAE_EIO;
        if (d >= 0) H5Dclose(d);
    }
    return rc;
}

int vae_metrics_open(vae_metrics *mt, const char *dir, long keep_upto)
{
    memset(mt, 0, sizeof *mt);
    snprintf(mt->path, sizeof mt->path, "%s/metrics.h5", dir);
    struct stat sb;
    int rc;
    if (stat(mt->path, &sb) == 0 && H5Fis_hdf5(mt->path) > 0) {
        hid_t fid = H5Fopen(mt->path, H5F_ACC_RDWR, H5P_DEFAULT);
        if (fid < 0) return vae_error(VAE_EIO, "cannot open '%s' for appending", mt->path);
        rc = truncate_group(fid, "/train", train_names, VAE_METRICS_TRAIN_FIELDS, keep_upto);
        if (!rc) rc = truncate_group(fid, "/eval", eval_names, VAE_METRICS_EVAL_FIELDS, keep_upto);
        H5Fclose(fid);
        if (rc) return vae_error(rc, "'%s' is damaged (cannot trim it to step %ld); move it away to start a new one", mt->path, keep_upto);
        return VAE_OK;
    }
    hid_t fid = H5Fcreate(mt->path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (fid < 0) return vae_error(VAE_EIO, "cannot create '%s'", mt->path);
    rc = create_group(fid, "/train", train_names, VAE_METRICS_TRAIN_FIELDS);
    if (!rc) rc = create_group(fid, "/eval", eval_names, VAE_METRICS_EVAL_FIELDS);
    H5Fclose(fid);
    if (rc) return vae_error(rc, "cannot create the datasets of '%s'", mt->path);
    return VAE_OK;
}

static int append(hid_t fid, const char *g, const char **names, int nf, const double *rows, int nrows)
{
    char p[64];
    int rc = VAE_OK;
    double *col = malloc((size_t)nrows * sizeof(double));
    long long *icol = malloc((size_t)nrows * sizeof(long long));
    if (!col || !icol) rc = VAE_ENOMEM;
    for (int f = 0; f < nf && !rc; f++) {
        snprintf(p, sizeof p, "%s/%s", g, names[f]);
        hid_t ds = H5Dopen2(fid, p, H5P_DEFAULT);
        if (ds < 0) {
            rc = VAE_EIO;
            break;
        }
        hid_t sp = H5Dget_space(ds);
        hsize_t len = 0, add = (hsize_t)nrows;
        H5Sget_simple_extent_dims(sp, &len, NULL);
        H5Sclose(sp);
        hsize_t nl = len + add;
        int isint = is_int_field(names[f]);
        for (int r = 0; r < nrows; r++) {
            col[r] = rows[(size_t)r * nf + f];
            icol[r] = (long long)col[r];
        }
        if (H5Dset_extent(ds, &nl) < 0) rc = VAE_EIO;
        hid_t fsp = H5Dget_space(ds);
        hid_t msp = H5Screate_simple(1, &add, NULL);
        if (!rc && (H5Sselect_hyperslab(fsp, H5S_SELECT_SET, &len, NULL, &add, NULL) < 0 ||
                    H5Dwrite(ds, isint ? H5T_NATIVE_LLONG : H5T_NATIVE_DOUBLE, msp, fsp, H5P_DEFAULT,
                             isint ? (void *)icol : (void *)col) < 0))
            rc = VAE_EIO;
        H5Sclose(msp);
        H5Sclose(fsp);
        H5Dclose(ds);
    }
    free(col);
    free(icol);
    return rc;
}

int vae_metrics_flush(vae_metrics *mt)
{
    if (mt->n_train == 0 && mt->n_eval == 0) return VAE_OK;
    hid_t fid = H5Fopen(mt->path, H5F_ACC_RDWR, H5P_DEFAULT);
    if (fid < 0) return vae_error(VAE_EIO, "cannot open '%s' to append metrics", mt->path);
    int rc = append(fid, "/train", train_names, VAE_METRICS_TRAIN_FIELDS, &mt->train[0][0], mt->n_train);
    if (!rc) rc = append(fid, "/eval", eval_names, VAE_METRICS_EVAL_FIELDS, &mt->eval[0][0], mt->n_eval);
    if (H5Fclose(fid) < 0) rc = VAE_EIO;
    if (rc) return vae_error(rc, "cannot append metrics to '%s'", mt->path);
    mt->n_train = mt->n_eval = 0;
    return VAE_OK;
}

int vae_metrics_add_train(vae_metrics *mt, const double row[VAE_METRICS_TRAIN_FIELDS])
{
    memcpy(mt->train[mt->n_train++], row, sizeof(double) * VAE_METRICS_TRAIN_FIELDS);
    return mt->n_train == VAE_METRICS_BUF ? vae_metrics_flush(mt) : VAE_OK;
}

int vae_metrics_add_eval(vae_metrics *mt, const double row[VAE_METRICS_EVAL_FIELDS])
{
    memcpy(mt->eval[mt->n_eval++], row, sizeof(double) * VAE_METRICS_EVAL_FIELDS);
    return mt->n_eval == 64 ? vae_metrics_flush(mt) : VAE_OK;
}
