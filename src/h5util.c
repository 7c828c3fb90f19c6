/*
 * h5util.c: the helpers of h5util.h shared by the `mpivae data` tools:
 * quieting HDF5's error printing, uint8 datasets without timestamps, and
 * publishing an output file by temp-fsync-rename.
 */
#define _POSIX_C_SOURCE 200809L

#include "h5util.h"
#include "mpivae/status.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DEFLATE_LEVEL 1

void vae__h5_quiet_begin(struct vae__h5_quiet *q)
{
    q->func = NULL;
    q->data = NULL;
    H5Eget_auto2(H5E_DEFAULT, &q->func, &q->data);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
}

void vae__h5_quiet_end(const struct vae__h5_quiet *q)
{
    H5Eset_auto2(H5E_DEFAULT, q->func, q->data);
}

char *vae__str_concat(const char *path, const char *suffix)
{
    size_t a = strlen(path), b = strlen(suffix);
    char *s = malloc(a + b + 1);
    if (!s) return NULL;
    memcpy(s, path, a);
    memcpy(s + a, suffix, b + 1);
    return s;
}

/* fsyncs the closed file tmp and renames it to path. */
static int sync_and_rename(const char *tmp, const char *path)
{
    int fd = open(tmp, O_RDONLY);
    if (fd < 0) return vae_error(VAE_EIO, "cannot open '%s': %s", tmp, strerror(errno));
    if (fsync(fd) != 0) {
        int e = errno;
        close(fd);
        return vae_error(VAE_EIO, "cannot sync '%s': %s", tmp, strerror(e));
    }
    close(fd);
    if (rename(tmp, path) != 0)
        return vae_error(VAE_EIO, "cannot rename '%s' to '%s': %s", tmp, path, strerror(errno));
    return 0;
}

/* Creates the groups /train and /test (without timestamps). */
static int create_split_groups(hid_t file, const char *fname)
{
    hid_t gcpl = H5Pcreate(H5P_GROUP_CREATE);
    int rc = 0;
    if (gcpl < 0 || H5Pset_obj_track_times(gcpl, 0) < 0) {
        rc = vae_error(VAE_EIO, "cannot set up groups in '%s'", fname);
        goto out;
    }
    const char *names[2] = { "/train", "/test" };
    for (int k = 0; k < 2; k++) {
        hid_t g = H5Gcreate2(file, names[k], H5P_DEFAULT, gcpl, H5P_DEFAULT);
        if (g < 0) {
            rc = vae_error(VAE_EIO, "cannot create group '%s' in '%s'", names[k], fname);
            goto out;
        }
        H5Gclose(g);
    }
out:
    if (gcpl >= 0) H5Pclose(gcpl);
    return rc;
}

void vae__h5_out_init(struct vae__h5_out *o, const char *path)
{
    o->path = path;
    o->tmp = NULL;
    o->file = -1;
}

int vae__h5_out_create(struct vae__h5_out *o)
{
    o->tmp = vae__str_concat(o->path, ".tmp");
    if (!o->tmp) return vae_error(VAE_ENOMEM, "cannot write '%s': out of memory", o->path);
    errno = 0;
    o->file = H5Fcreate(o->tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (o->file < 0)
        return vae_error(VAE_EIO, "cannot create HDF5 file '%s'%s%s", o->tmp, errno ? ": " : "",
                         errno ? strerror(errno) : "");
    return create_split_groups(o->file, o->tmp);
}

int vae__h5_out_finish(struct vae__h5_out *o, int rc)
{
    hid_t f = o->file;
    o->file = -1;
    if (f >= 0 && H5Fclose(f) < 0 && rc == 0)
        rc = vae_error(VAE_EIO, "cannot close HDF5 file '%s'", o->tmp);
    if (rc == 0) rc = sync_and_rename(o->tmp, o->path);
    if (rc != 0 && o->tmp) remove(o->tmp);
    free(o->tmp);
    o->tmp = NULL;
    return rc;
}

hid_t vae__create_u8_dataset(hid_t file, const char *fname, const char *name, int rank,
                             const hsize_t *dims, hsize_t chunk_rows)
{
    hsize_t chunk[8];
    hid_t space = -1, dcpl = -1, dset = -1;
    for (int d = 0; d < rank; d++) chunk[d] = dims[d];
    chunk[0] = chunk_rows < dims[0] ? chunk_rows : dims[0];
    if (chunk[0] < 1) chunk[0] = 1;

    space = H5Screate_simple(rank, dims, NULL);
    dcpl = H5Pcreate(H5P_DATASET_CREATE);
    if (space < 0 || dcpl < 0 || H5Pset_chunk(dcpl, rank, chunk) < 0 ||
        H5Pset_deflate(dcpl, DEFLATE_LEVEL) < 0 || H5Pset_obj_track_times(dcpl, 0) < 0) {
        vae_error(VAE_EIO, "cannot set up dataset '%s' in '%s'", name, fname);
        goto out;
    }
    dset = H5Dcreate2(file, name, H5T_STD_U8LE, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    if (dset < 0) vae_error(VAE_EIO, "cannot create dataset '%s' in '%s'", name, fname);

out:
    if (dcpl >= 0) H5Pclose(dcpl);
    if (space >= 0) H5Sclose(space);
    return dset < 0 ? VAE_EIO : dset;
}

int vae__write_u8_rows(hid_t dset, const char *fname, const char *name, int rank,
                       const hsize_t *dims, hsize_t row0, hsize_t nrows, const uint8_t *buf)
{
    hsize_t start[8] = { 0 }, count[8];
    hid_t fspace = -1, mspace = -1;
    int rc = 0;
    for (int d = 0; d < rank; d++) count[d] = dims[d];
    start[0] = row0;
    count[0] = nrows;
    fspace = H5Dget_space(dset);
    mspace = H5Screate_simple(rank, count, NULL);
    if (fspace < 0 || mspace < 0 ||
        H5Sselect_hyperslab(fspace, H5S_SELECT_SET, start, NULL, count, NULL) < 0 ||
        H5Dwrite(dset, H5T_NATIVE_UINT8, mspace, fspace, H5P_DEFAULT, buf) < 0)
        rc = vae_error(VAE_EIO, "cannot write rows %llu..%llu of '%s' in '%s'",
                       (unsigned long long)row0, (unsigned long long)(row0 + nrows),
                       name, fname);
    if (mspace >= 0) H5Sclose(mspace);
    if (fspace >= 0) H5Sclose(fspace);
    return rc;
}
