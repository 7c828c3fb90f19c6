/*
 * data_info.c: `mpivae data info` (importer.h): lists every dataset of an
 * HDF5 file with its shape, type, layout, filters and value range, scanning
 * the values in blocks of rows so that large files are fine.
 */
#define _POSIX_C_SOURCE 200809L

#include "mpivae/importer.h"
#include "mpivae/dataset.h"
#include "mpivae/status.h"
#include "h5util.h"

#include <errno.h>
#include <hdf5.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Dataset paths collected by the H5Ovisit callback. */
struct path_list {
    char **paths;
    size_t n, cap;
    int oom;
};

static herr_t collect_dataset(hid_t obj, const char *name, const H5O_info_t *info, void *op)
{
    (void)obj;
    struct path_list *pl = op;
    if (info->type != H5O_TYPE_DATASET) return 0;
    if (pl->n == pl->cap) {
        size_t cap = pl->cap ? 2 * pl->cap : 16;
        char **p = realloc(pl->paths, cap * sizeof *p);
        if (!p) {
            pl->oom = 1;
            return -1;
        }
        pl->paths = p;
        pl->cap = cap;
    }
    char *s = vae__str_concat("/", name);
    if (!s) {
        pl->oom = 1;
        return -1;
    }
    pl->paths[pl->n++] = s;
    return 0;
}

/* Writes a type name such as "uint8" or "float32" into buf. */
static void type_name(hid_t type, char *buf, size_t len)
{
    H5T_class_t cls = H5Tget_class(type);
    size_t size = H5Tget_size(type);
    switch (cls) {
    case H5T_INTEGER:
        snprintf(buf, len, "%sint%zu", H5Tget_sign(type) == H5T_SGN_NONE ? "u" : "", 8 * size);
        break;
    case H5T_FLOAT: snprintf(buf, len, "float%zu", 8 * size); break;
    case H5T_STRING: snprintf(buf, len, "string"); break;
    case H5T_COMPOUND: snprintf(buf, len, "compound (%zu bytes)", size); break;
    case H5T_ENUM: snprintf(buf, len, "enum"); break;
    case H5T_ARRAY: snprintf(buf, len, "array"); break;
    case H5T_OPAQUE: snprintf(buf, len, "opaque"); break;
    case H5T_BITFIELD: snprintf(buf, len, "bitfield"); break;
    case H5T_REFERENCE: snprintf(buf, len, "reference"); break;
    case H5T_VLEN: snprintf(buf, len, "vlen"); break;
    default: snprintf(buf, len, "unknown"); break;
    }
}

static void print_dims(FILE *out, int rank, const hsize_t *dims)
{
    fputc('[', out);
    for (int d = 0; d < rank; d++)
        fprintf(out, "%s%llu", d ? ", " : "", (unsigned long long)dims[d]);
    fputc(']', out);
}

/* Prints layout, chunk dims and filters from a dataset creation plist. */
static void print_layout(FILE *out, hid_t dcpl)
{
    H5D_layout_t layout = H5Pget_layout(dcpl);
    if (layout == H5D_CHUNKED) {
        hsize_t chunk[H5S_MAX_RANK];
        int rank = H5Pget_chunk(dcpl, H5S_MAX_RANK, chunk);
        fputs("  chunks ", out);
        if (rank > 0) print_dims(out, rank, chunk);
        else fputs("?", out);
    } else {
        fputs(layout == H5D_COMPACT ? "  compact" : "  contiguous", out);
    }
    int nf = H5Pget_nfilters(dcpl);
    fputs("  filters ", out);
    if (nf <= 0) fputs("none", out);
    for (int f = 0; f < nf; f++) {
        unsigned flags, cd[8], cfg;
        size_t ncd = 8;
        char name[64] = "";
        H5Z_filter_t id = H5Pget_filter2(dcpl, (unsigned)f, &flags, &ncd, cd, sizeof name, name,
                                         &cfg);
        if (f) fputc(',', out);
        if (id == H5Z_FILTER_DEFLATE) fprintf(out, "deflate(%u)", ncd > 0 ? cd[0] : 0u);
        else if (id == H5Z_FILTER_SHUFFLE) fputs("shuffle", out);
        else if (id == H5Z_FILTER_FLETCHER32) fputs("fletcher32", out);
        else if (id == H5Z_FILTER_SZIP) fputs("szip", out);
        else if (id == H5Z_FILTER_NBIT) fputs("nbit", out);
        else if (id == H5Z_FILTER_SCALEOFFSET) fputs("scaleoffset", out);
        else fprintf(out, "filter%d(%s)", (int)id, name[0] ? name : "?");
    }
}

/*
 * Prints min, max and mean of a numeric dataset, reading blocks of rows
 * converted to double, and the count of NaN/Inf values for float types.
 */
static int print_stats(FILE *out, const char *fname, const char *name, hid_t dset, int rank,
                       const hsize_t *dims, int is_float)
{
    hsize_t total = 1, row = 1;
    for (int d = 0; d < rank; d++) total *= dims[d];
    for (int d = 1; d < rank; d++) row *= dims[d];
    if (total == 0) {
        fputs("  empty\n", out);
        return 0;
    }
    hsize_t nrows = rank > 0 ? dims[0] : 1;
    /* Values a reader could not use are described, not scanned: huge rows, and chunks never written. */
    if (row > 100000000ull) {
        fprintf(out, "  rows of %llu values: not scanned (mpivae takes at most 100000000 a row)\n", (unsigned long long)row);
        return 0;
    }
    unsigned long long have = 0;
    double want = 0;
    if (vae_data_unwritten_chunks(dset, &have, &want)) {
        fprintf(out, "  only %llu of %.0f chunks were ever written: values not scanned (mpivae refuses it)\n", have, want);
        return 0;
    }
    hsize_t block = row >= (1u << 20) ? 1 : (1u << 20) / row; /* about 8 MB of doubles */
    if (block > nrows) block = nrows;
    double *buf = malloc((size_t)(block * row) * sizeof *buf);
    hid_t fspace = H5Dget_space(dset), mspace = -1;
    double lo = INFINITY, hi = -INFINITY, sum = 0.0;
    unsigned long long n_nan = 0, n_inf = 0, n_fin = 0;
    int rc = 0;

    if (!buf) {
        rc = vae_error(VAE_ENOMEM, "cannot read '%s' in '%s': out of memory", name, fname);
        goto out;
    }
    if (fspace < 0) {
        rc = vae_error(VAE_EIO, "cannot get the dataspace of '%s' in '%s'", name, fname);
        goto out;
    }
    for (hsize_t r0 = 0; r0 < nrows; r0 += block) {
        hsize_t nb = nrows - r0 < block ? nrows - r0 : block;
        herr_t st;
        if (rank > 0) {
            hsize_t start[H5S_MAX_RANK] = { 0 }, count[H5S_MAX_RANK];
            for (int d = 0; d < rank; d++) count[d] = dims[d];
            start[0] = r0;
            count[0] = nb;
            mspace = H5Screate_simple(rank, count, NULL);
            st = mspace < 0 ? -1
                            : H5Sselect_hyperslab(fspace, H5S_SELECT_SET, start, NULL, count,
                                                  NULL);
            if (st >= 0) st = H5Dread(dset, H5T_NATIVE_DOUBLE, mspace, fspace, H5P_DEFAULT, buf);
            if (mspace >= 0) H5Sclose(mspace);
            mspace = -1;
        } else {
            st = H5Dread(dset, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf);
        }
        if (st < 0) {
            rc = vae_error(VAE_EIO, "cannot read rows %llu..%llu of '%s' in '%s'",
                           (unsigned long long)r0, (unsigned long long)(r0 + nb), name, fname);
            goto out;
        }
        size_t m = (size_t)(nb * row);
        for (size_t j = 0; j < m; j++) {
            double v = buf[j];
            if (isnan(v)) n_nan++;
            else if (isinf(v)) n_inf++;
            else {
                if (v < lo) lo = v;
                if (v > hi) hi = v;
                sum += v;
                n_fin++;
            }
        }
    }
    if (n_fin > 0)
        fprintf(out, "  min %.6g  max %.6g  mean %.6g", lo, hi, sum / (double)n_fin);
    else
        fputs("  no finite values", out);
    if (is_float) fprintf(out, "  non-finite %llu (NaN %llu, Inf %llu)", n_nan + n_inf, n_nan,
                          n_inf);
    fputc('\n', out);

out:
    if (fspace >= 0) H5Sclose(fspace);
    free(buf);
    return rc;
}

/* Prints one dataset's description. */
static int describe_dataset(FILE *out, hid_t file, const char *fname, const char *name)
{
    hid_t dset = -1, space = -1, type = -1, dcpl = -1;
    hsize_t dims[H5S_MAX_RANK];
    char tname[64];
    int rc = 0;

    dset = H5Dopen2(file, name, H5P_DEFAULT);
    if (dset < 0) {
        rc = vae_error(VAE_EIO, "cannot open dataset '%s' in '%s'", name, fname);
        goto out;
    }
    space = H5Dget_space(dset);
    type = H5Dget_type(dset);
    dcpl = H5Dget_create_plist(dset);
    int rank = space >= 0 ? H5Sget_simple_extent_dims(space, dims, NULL) : -1;
    if (space < 0 || type < 0 || dcpl < 0 || rank < 0) {
        rc = vae_error(VAE_EIO, "cannot query dataset '%s' in '%s'", name, fname);
        goto out;
    }
    type_name(type, tname, sizeof tname);
    fprintf(out, "%s  shape ", name);
    print_dims(out, rank, dims);
    fprintf(out, "  %s", tname);
    print_layout(out, dcpl);
    fputc('\n', out);
    H5T_class_t cls = H5Tget_class(type);
    if (cls == H5T_INTEGER || cls == H5T_FLOAT)
        rc = print_stats(out, fname, name, dset, rank, dims, cls == H5T_FLOAT);

out:
    if (dcpl >= 0) H5Pclose(dcpl);
    if (type >= 0) H5Tclose(type);
    if (space >= 0) H5Sclose(space);
    if (dset >= 0) H5Dclose(dset);
    return rc;
}

int vae_data_info(const char *path, FILE *out)
{
    if (!path || !out) return vae_error(VAE_EINVAL, "data info needs a file name and a stream");

    struct vae__h5_quiet q;
    struct path_list pl = { NULL, 0, 0, 0 };
    struct stat st;
    hid_t file = -1;
    int rc = 0;
    vae__h5_quiet_begin(&q);

    if (stat(path, &st) != 0) {
        rc = vae_error(VAE_EIO, "cannot open '%s': %s", path, strerror(errno));
        goto out;
    }
    htri_t is = H5Fis_hdf5(path);
    if (is <= 0) {
        rc = is == 0 ? vae_error(VAE_EDATA, "'%s' is not an HDF5 file", path)
                     : vae_error(VAE_EIO, "cannot open '%s' as an HDF5 file", path);
        goto out;
    }
    errno = 0;
    file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (file < 0) {
        rc = vae_error(VAE_EIO, "cannot open HDF5 file '%s'%s%s", path, errno ? ": " : "",
                       errno ? strerror(errno) : "");
        goto out;
    }
    if (H5Ovisit(file, H5_INDEX_NAME, H5_ITER_INC, collect_dataset, &pl) < 0) {
        rc = pl.oom ? vae_error(VAE_ENOMEM, "cannot list '%s': out of memory", path)
                    : vae_error(VAE_EIO, "cannot list the objects in '%s'", path);
        goto out;
    }
    fprintf(out, "%s: %zu dataset%s\n", path, pl.n, pl.n == 1 ? "" : "s");
    for (size_t k = 0; k < pl.n; k++)
        if ((rc = describe_dataset(out, file, path, pl.paths[k])) != 0) goto out;

out:
    if (file >= 0) H5Fclose(file);
    for (size_t k = 0; k < pl.n; k++) free(pl.paths[k]);
    free(pl.paths);
    vae__h5_quiet_end(&q);
    return rc;
}
