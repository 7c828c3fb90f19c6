/*
 * dataset.c: HDF5 input data, in node-shared memory or streamed per batch
 * (see dataset.h).
 */
#define _XOPEN_SOURCE 700
#include "mpivae/dataset.h"

#include "mpivae/comm.h"
#include "mpivae/rng.h"
#include "mpivae/status.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Splits spec without reporting: 0, or -1 empty file name, -2 file too long, -3 dataset too long. */
static int split_spec(const char *spec, const char *default_dset, char *file, size_t file_len, char *dset,
                      size_t dset_len)
{
    const char *colon = strstr(spec, ":/");
    size_t flen = colon ? (size_t)(colon - spec) : strlen(spec);
    if (flen == 0) return -1;
    if (flen >= file_len) return -2;
    const char *ds = colon ? colon + 1 : default_dset;
    if (strlen(ds) >= dset_len) return -3;
    memcpy(file, spec, flen);
    file[flen] = '\0';
    snprintf(dset, dset_len, "%s", ds);
    return 0;
}

int vae_data_parse_spec(const char *spec, const char *default_dset, char *file, size_t file_len,
                        char *dset, size_t dset_len)
{
    switch (split_spec(spec, default_dset, file, file_len, dset, dset_len)) {
    case -1: return vae_error(VAE_EINVAL, "empty file name in data spec '%s'", spec);
    case -2: return vae_error(VAE_EINVAL, "data file name too long: '%s'", spec);
    case -3: return vae_error(VAE_EINVAL, "dataset name too long in data spec '%s'", spec);
    default: return VAE_OK;
    }
}

int vae_data_full_spec(const char *spec, char *out, size_t len)
{
    char file[VAE_PATH_LEN], dset[256];
    if (split_spec(spec, VAE_DATA_DEFAULT_DSET, file, sizeof file, dset, sizeof dset)) return VAE_EINVAL; /* the caller says why */
    if ((size_t)snprintf(out, len, "%s:%s", file, dset) >= len) return VAE_EINVAL;
    return VAE_OK;
}

int vae_data_abs_spec(const char *spec, char *out, size_t len)
{
    char file[VAE_PATH_LEN], dset[256], real[PATH_MAX];
    if (split_spec(spec, VAE_DATA_DEFAULT_DSET, file, sizeof file, dset, sizeof dset) || !realpath(file, real))
        return VAE_EINVAL;
    if ((size_t)snprintf(out, len, "%s:%s", real, dset) >= len) return VAE_EINVAL;
    return VAE_OK;
}

static int spec_file_exists(const char *spec)
{
    char file[VAE_PATH_LEN], dset[256];
    struct stat sb;
    return !split_spec(spec, VAE_DATA_DEFAULT_DSET, file, sizeof file, dset, sizeof dset) && stat(file, &sb) == 0;
}

int vae_data_locate(const char *spec, const char *abs_spec, char *out, size_t len)
{
    if (abs_spec && abs_spec[0] && spec_file_exists(abs_spec)) {
        snprintf(out, len, "%s", abs_spec);
        return 1;
    }
    if (spec_file_exists(spec)) {
        snprintf(out, len, "%s", spec);
        return 1;
    }
    return 0;
}

int vae_data_exists(const char *file, const char *dset)
{
    struct stat sb;
    if (stat(file, &sb) != 0 || H5Fis_hdf5(file) <= 0) return 0;
    hid_t fid = H5Fopen(file, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (fid < 0) return 0;
    int ok = H5Lexists(fid, dset, H5P_DEFAULT) > 0 && H5Oexists_by_name(fid, dset, H5P_DEFAULT) > 0;
    H5Fclose(fid);
    return ok;
}

int vae_data_unwritten_chunks(hid_t did, unsigned long long *have, double *want)
{
    hid_t dcpl = H5Dget_create_plist(did), sid = H5Dget_space(did);
    H5D_fill_value_t fv = H5D_FILL_VALUE_DEFAULT;
    hsize_t dims[H5S_MAX_RANK] = { 0 }, chunk[H5S_MAX_RANK] = { 0 }, n = 0;
    int nd = sid >= 0 ? H5Sget_simple_extent_ndims(sid) : -1, sparse = 0;
    *have = 0;
    *want = 1.0;
    if (dcpl >= 0 && nd > 0 && H5Pget_layout(dcpl) == H5D_CHUNKED && H5Pfill_value_defined(dcpl, &fv) >= 0 &&
        fv != H5D_FILL_VALUE_USER_DEFINED && H5Pget_chunk(dcpl, nd, chunk) == nd &&
        H5Sget_simple_extent_dims(sid, dims, NULL) == nd && H5Dget_num_chunks(did, sid, &n) >= 0) {
        for (int k = 0; k < nd; k++) *want *= (double)((dims[k] + chunk[k] - 1) / (chunk[k] ? chunk[k] : 1));
        *have = (unsigned long long)n;
        sparse = (double)n < *want;
    }
    if (sid >= 0) H5Sclose(sid);
    if (dcpl >= 0) H5Pclose(dcpl);
    return sparse;
}

/*
 * Refuses a dataset whose declared rows the file does not hold: chunks never
 * written read as the fill value, so a tiny file can declare billions of rows
 * of zeros (and take hours to scan); a virtual dataset whose source file is
 * missing reads as zeros too. A fill value set on purpose is accepted.
 */
static int check_storage(const vae_data *d, hid_t did)
{
    hid_t dcpl = H5Dget_create_plist(did);
    if (dcpl < 0) return vae_error(VAE_EDATA, "'%s:%s': cannot read its storage properties", d->file, d->dset);
    int rc = VAE_OK;
    H5D_fill_value_t fv = H5D_FILL_VALUE_DEFAULT;
    H5Pfill_value_defined(dcpl, &fv);
    H5D_layout_t layout = H5Pget_layout(dcpl);
    if (layout == H5D_VIRTUAL) {
        size_t n = 0;
        H5Pget_virtual_count(dcpl, &n);
        char dir[VAE_PATH_LEN];
        snprintf(dir, sizeof dir, "%s", d->file);
        char *slash = strrchr(dir, '/');
        if (slash) slash[1] = '\0';
        else dir[0] = '\0';
        for (size_t i = 0; i < n && !rc; i++) {
            char src[VAE_PATH_LEN], beside[2 * VAE_PATH_LEN];
            struct stat sb;
            if (H5Pget_virtual_filename(dcpl, i, src, sizeof src) < 0) src[0] = '\0';
            if (!strcmp(src, ".")) continue; /* the same file */
            snprintf(beside, sizeof beside, "%s%s", src[0] == '/' ? "" : dir, src);
            if (!src[0] || (stat(beside, &sb) != 0 && stat(src, &sb) != 0))
                rc = vae_error(VAE_EDATA, "'%s:%s' is a virtual dataset whose source file '%s' is missing (its rows would "
                               "read as zeros)", d->file, d->dset, src);
        }
    } else if (layout == H5D_CHUNKED) {
        unsigned long long have = 0;
        double want = 0;
        if (vae_data_unwritten_chunks(did, &have, &want)) {
            hid_t sid = H5Dget_space(did);
            hsize_t dims[8] = { 0 };
            H5Sget_simple_extent_dims(sid, dims, NULL);
            H5Sclose(sid);
            rc = vae_error(VAE_EDATA, "'%s:%s' declares %llu rows, but only %llu of its %.0f chunks were ever written "
                           "(the rest would read as zeros); write every row, or set a fill value on purpose", d->file,
                           d->dset, (unsigned long long)dims[0], have, want);
        }
    } else if (fv != H5D_FILL_VALUE_USER_DEFINED && layout == H5D_CONTIGUOUS && H5Dget_storage_size(did) == 0) {
        rc = vae_error(VAE_EDATA, "'%s:%s' was never written (no storage allocated; it would read as zeros)", d->file, d->dset);
    }
    H5Pclose(dcpl);
    return rc;
}

/* Opens file and dataset, reads the shape and type. On failure everything is closed. */
static int open_file(vae_data *d, hid_t *fid_out, hid_t *did_out)
{
    int rc = VAE_OK;
    hid_t fid = -1, did = -1, sid = -1, tid = -1, dapl = -1;
    struct stat sb;
    if (stat(d->file, &sb) != 0)
        return vae_error(VAE_EIO, "cannot open '%s': %s", d->file, strerror(errno));
    if (S_ISDIR(sb.st_mode)) return vae_error(VAE_EIO, "cannot open '%s': Is a directory", d->file);
    if (H5Fis_hdf5(d->file) <= 0) return vae_error(VAE_EDATA, "'%s' is not an HDF5 file", d->file);
    fid = H5Fopen(d->file, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (fid < 0) return vae_error(VAE_EIO, "cannot open HDF5 file '%s'", d->file);
    if (H5Lexists(fid, d->dset, H5P_DEFAULT) <= 0 || H5Oexists_by_name(fid, d->dset, H5P_DEFAULT) <= 0) {
        rc = vae_error(VAE_EDATA, "'%s' has no dataset '%s'", d->file, d->dset);
        goto done;
    }
    /* A chunk cache large enough for the rows of a batch spread over many chunks. */
    dapl = H5Pcreate(H5P_DATASET_ACCESS);
    H5Pset_chunk_cache(dapl, 12421, (size_t)64 << 20, 0.75);
    did = H5Dopen2(fid, d->dset, dapl);
    if (did < 0) {
        rc = vae_error(VAE_EDATA, "'%s': '%s' is not a dataset", d->file, d->dset);
        goto done;
    }
    sid = H5Dget_space(did);
    int nd = H5Sget_simple_extent_ndims(sid);
    hsize_t dims[8] = { 0 };
    if (nd < 2 || nd > 4) {
        rc = vae_error(VAE_EDATA,
                       "'%s:%s' has rank %d; expected [N,C,H,W], [N,H,W] or [N,D]", d->file,
                       d->dset, nd);
        goto done;
    }
    H5Sget_simple_extent_dims(sid, dims, NULL);
    /* The row shape is checked in the file's own 64-bit sizes before anything is cast to int. */
    {
        hsize_t row = 1;
        int big = 0;
        char shape[160] = "";
        for (int k = 1; k < nd; k++) {
            snprintf(shape + strlen(shape), sizeof shape - strlen(shape), "%s%llu", k > 1 ? "x" : "",
                     (unsigned long long)dims[k]);
            if (dims[k] == 0 || dims[k] > 100000000ull) big = 1;
            else row *= dims[k];
            if (row > 100000000ull) big = 1;
        }
        if (dims[0] == 0) {
            rc = vae_error(VAE_EDATA, "'%s:%s' is empty (0 rows)", d->file, d->dset);
            goto done;
        }
        if (big || dims[0] > (hsize_t)INT64_MAX / row) {
            rc = vae_error(VAE_EDATA, "'%s:%s' has rows of %s values: a row must hold 1 to 100000000 values", d->file,
                           d->dset, shape);
            goto done;
        }
    }
    d->N = (int64_t)dims[0];
    d->C = nd == 4 ? (int)dims[1] : 1;
    d->Hh = nd == 4 ? (int)dims[2] : nd == 3 ? (int)dims[1] : 1;
    d->W = nd == 4 ? (int)dims[3] : nd == 3 ? (int)dims[2] : (int)dims[1];
    d->D = d->C * d->Hh * d->W;
    tid = H5Dget_type(did);
    H5T_class_t cls = H5Tget_class(tid);
    size_t tsize = H5Tget_size(tid);
    if (cls == H5T_INTEGER && tsize == 1 && H5Tget_sign(tid) == H5T_SGN_NONE) {
        d->dtype = VAE_DT_U8;
    } else if (cls == H5T_FLOAT && (tsize == 4 || tsize == 8)) {
        d->dtype = VAE_DT_F32;
    } else {
        char what[64];
        if (cls == H5T_INTEGER)
            snprintf(what, sizeof what, "%s integers of %zu bytes", H5Tget_sign(tid) == H5T_SGN_NONE ? "unsigned" : "signed", tsize);
        else if (cls == H5T_FLOAT)
            snprintf(what, sizeof what, "floats of %zu bytes%s", tsize, tsize == 2 ? " (float16)" : "");
        else
            snprintf(what, sizeof what, "%s", cls == H5T_STRING ? "strings" : cls == H5T_COMPOUND ? "compound records"
                                              : cls == H5T_ENUM ? "enums" : "a non-numeric type");
        rc = vae_error(VAE_EDATA, "'%s:%s' holds %s; expected uint8, float32 or float64", d->file, d->dset, what);
        goto done;
    }
    rc = check_storage(d, did);
done:
    if (tid >= 0) H5Tclose(tid);
    if (sid >= 0) H5Sclose(sid);
    if (dapl >= 0) H5Pclose(dapl);
    if (rc) {
        if (did >= 0) H5Dclose(did);
        if (fid >= 0) H5Fclose(fid);
        return rc;
    }
    *fid_out = fid;
    *did_out = did;
    return VAE_OK;
}

static size_t elem_size(const vae_data *d) { return d->dtype == VAE_DT_U8 ? 1 : sizeof(float); }

static hid_t mem_type(const vae_data *d)
{
    return d->dtype == VAE_DT_U8 ? H5T_NATIVE_UCHAR : H5T_NATIVE_FLOAT;
}

/*
 * A memory space of n rows shaped like the file's rows: with the same rank
 * and extents HDF5 copies whole rows instead of mapping element by element.
 */
static hid_t rows_space(hid_t fsp, hsize_t n)
{
    hsize_t dims[8];
    int nd = H5Sget_simple_extent_ndims(fsp);
    H5Sget_simple_extent_dims(fsp, dims, NULL);
    dims[0] = n;
    return H5Screate_simple(nd, dims, NULL);
}

/* Reads rows [lo, lo+n) into buf (elements of the memory type). */
static int read_block(vae_data *d, hid_t did, int64_t lo, int64_t n, void *buf)
{
    if (n <= 0) return VAE_OK;
    int rc = VAE_OK;
    hid_t fsp = H5Dget_space(did);
    hsize_t start[4] = { (hsize_t)lo, 0, 0, 0 }, count[4];
    H5Sget_simple_extent_dims(fsp, count, NULL);
    count[0] = (hsize_t)n;
    hid_t msp = rows_space(fsp, (hsize_t)n);
    if (H5Sselect_hyperslab(fsp, H5S_SELECT_SET, start, NULL, count, NULL) < 0 ||
        H5Dread(did, mem_type(d), msp, fsp, H5P_DEFAULT, buf) < 0)
        rc = vae_error(VAE_EIO, "cannot read rows %lld..%lld of '%s:%s' (file damaged?)",
                       (long long)lo, (long long)(lo + n - 1), d->file, d->dset);
    H5Sclose(msp);
    H5Sclose(fsp);
    return rc;
}

static long long node_memory_bytes(void)
{
    long pages = sysconf(_SC_PHYS_PAGES), psize = sysconf(_SC_PAGE_SIZE);
    return pages > 0 && psize > 0 ? (long long)pages * psize : 0;
}

int vae_data_open(vae_data *d, const char *spec, MPI_Comm comm, int in_memory, int max_rows)
{
    memset(d, 0, sizeof *d);
    d->fid = d->did = -1;
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    vae_defer_begin();
    int rc = vae_data_parse_spec(spec, VAE_DATA_DEFAULT_DSET, d->file, sizeof d->file, d->dset,
                                 sizeof d->dset);
    hid_t fid = -1, did = -1;
    if (!rc) rc = open_file(d, &fid, &did);
    rc = vae_agree(rc, comm);
    if (rc) {
        if (did >= 0) H5Dclose(did);
        if (fid >= 0) H5Fclose(fid);
        return rc;
    }
    size_t bytes = (size_t)d->N * d->D * elem_size(d);
    if (in_memory < 0) in_memory = (long long)bytes < node_memory_bytes() / 4;
    d->in_memory = in_memory;
    d->max_rows = max_rows > 0 ? max_rows : 1;

    vae_defer_begin();
    rc = VAE_OK;
    int leader = 0; /* this rank holds its node's copy */
    if (in_memory) {
        /* One copy per node: node rank 0 allocates, every node rank reads a contiguous part. */
        MPI_Comm node;
        MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node);
        int nr, ns;
        MPI_Comm_rank(node, &nr);
        MPI_Comm_size(node, &ns);
        leader = nr == 0;
        MPI_Aint size = nr == 0 ? (MPI_Aint)bytes : 0;
        int mrc = MPI_Win_allocate_shared(size, 1, MPI_INFO_NULL, node, &d->mem, &d->win);
        if (mrc != MPI_SUCCESS) {
            rc = vae_error(VAE_ENOMEM, "cannot allocate %.1f MiB of shared memory for '%s:%s'",
                           bytes / 1048576.0, d->file, d->dset);
        } else {
            d->has_win = 1;
            MPI_Aint qsize;
            int disp;
            MPI_Win_shared_query(d->win, 0, &qsize, &disp, &d->mem);
            int64_t lo = d->N * nr / ns, hi = d->N * (nr + 1) / ns;
            /*
             * In blocks of about 64 MB: one H5Dread over all rows makes HDF5 hold a copy of the
             * selection per chunk (2.2 GB for a 2.7 MB file of 337,920 one-row chunks).
             */
            int64_t blk = d->D < (1 << 24) ? (1 << 26) / ((int64_t)d->D * (int64_t)elem_size(d)) : 1;
            hid_t dcpl = H5Dget_create_plist(did);
            hsize_t chunk[4] = { 0, 0, 0, 0 };
            if (dcpl >= 0 && H5Pget_layout(dcpl) == H5D_CHUNKED && H5Pget_chunk(dcpl, 4, chunk) > 0 &&
                (int64_t)chunk[0] * 1024 < blk)
                blk = (int64_t)chunk[0] * 1024; /* at most 1024 chunks of rows a read */
            if (dcpl >= 0) H5Pclose(dcpl);
            if (blk < 1) blk = 1;
            for (int64_t r = lo; !rc && r < hi; r += blk)
                rc = read_block(d, did, r, hi - r < blk ? hi - r : blk, d->mem + (size_t)r * d->D * elem_size(d));
        }
        MPI_Win_fence(0, d->has_win ? d->win : MPI_WIN_NULL);
        MPI_Barrier(node);
        MPI_Comm_free(&node);
        H5Dclose(did);
        H5Fclose(fid);
    } else {
        d->fid = fid;
        d->did = did;
        d->stage = malloc((size_t)d->max_rows * d->D * sizeof(float));
        d->order = malloc((size_t)d->max_rows * sizeof(int64_t));
        if (!d->stage || !d->order) rc = vae_error(VAE_ENOMEM, "cannot allocate staging rows");
    }
    /* Every rank, whichever way its node went (auto decides per node's memory). */
    MPI_Allreduce(&leader, &d->copies, 1, MPI_INT, MPI_SUM, comm);
    rc = vae_agree(rc, comm);
    if (rc) vae_data_close(d);
    return rc;
}

static int read_rows(vae_data *d, const int64_t *idx, int n, float *out);

int vae_data_check(vae_data *d, int unit_range, MPI_Comm comm)
{
    int rank, size;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    /* Each rank scans a contiguous part of the rows, in blocks. */
    int64_t lo = d->N * rank / size, hi = d->N * (rank + 1) / size;
    const int64_t blk = d->D < (1 << 14) ? (1 << 24) / d->D : 1; /* about 64 MB of floats a block */
    float *buf = malloc((size_t)blk * d->D * sizeof(float));
    int64_t *idx = malloc((size_t)blk * sizeof(int64_t));
    double local[3] = { 0.0, INFINITY, -INFINITY }; /* bad count, min, max */
    double first_bad = (double)d->N;
    int rc = buf && idx ? VAE_OK : VAE_ENOMEM;
    vae_defer_begin();
    if (rc) vae_error(rc, "cannot allocate a scan buffer");
    /* Test hook: MPIVAE_TEST_SCAN_DELAY_MS=D sleeps D ms a block, so a test can signal a run during its start-up. */
    const char *delay_env = getenv("MPIVAE_TEST_SCAN_DELAY_MS");
    long delay_ms = delay_env ? atol(delay_env) : 0;
    for (int64_t r = lo; !rc && r < hi; r += blk) {
        int n = (int)(hi - r < blk ? hi - r : blk);
        for (int i = 0; i < n; i++) idx[i] = r + i;
        if (delay_ms > 0) {
            struct timespec ts = { delay_ms / 1000, (delay_ms % 1000) * 1000000L };
            if (r == lo) {
                fprintf(stderr, "[rank %d] test hook: the data scan sleeps %ld ms a block\n", rank, delay_ms);
                fflush(stderr);
            }
            nanosleep(&ts, NULL);
        }
        if (vae_stop_requested()) {
            rc = VAE_ESTOP; /* a signal during start-up: stop scanning (the caller says so) */
            break;
        }
        if (!d->in_memory) {
            /* Streaming: read the block directly as floats. */
            hid_t fsp = H5Dget_space(d->did);
            hsize_t start[4] = { (hsize_t)r, 0, 0, 0 }, count[4];
            H5Sget_simple_extent_dims(fsp, count, NULL);
            count[0] = (hsize_t)n;
            hid_t msp = rows_space(fsp, (hsize_t)n);
            if (H5Sselect_hyperslab(fsp, H5S_SELECT_SET, start, NULL, count, NULL) < 0 ||
                H5Dread(d->did, H5T_NATIVE_FLOAT, msp, fsp, H5P_DEFAULT, buf) < 0)
                rc = vae_error(VAE_EIO, "cannot read rows %lld..%lld of '%s:%s'", (long long)r,
                               (long long)(r + n - 1), d->file, d->dset);
            H5Sclose(msp);
            H5Sclose(fsp);
            if (d->dtype == VAE_DT_U8)
                for (size_t j = 0; j < (size_t)n * d->D; j++) buf[j] *= 1.0f / 255.0f;
        } else {
            rc = read_rows(d, idx, n, buf);
        }
        for (int i = 0; !rc && i < n; i++) {
            const float *row = buf + (size_t)i * d->D;
            for (int j = 0; j < d->D; j++) {
                float v = row[j];
                if (!isfinite(v)) {
                    if (local[0] == 0.0 && r + i < first_bad) first_bad = (double)(r + i);
                    local[0] += 1.0;
                    continue;
                }
                if (v < local[1]) local[1] = v;
                if (v > local[2]) local[2] = v;
            }
        }
    }
    free(buf);
    free(idx);
    rc = vae_agree(rc, comm);
    if (rc) return rc;
    double sums[1] = { local[0] }, mins[2] = { local[1], first_bad }, maxs[1] = { local[2] };
    MPI_Allreduce(MPI_IN_PLACE, sums, 1, MPI_DOUBLE, MPI_SUM, comm);
    MPI_Allreduce(MPI_IN_PLACE, mins, 2, MPI_DOUBLE, MPI_MIN, comm);
    MPI_Allreduce(MPI_IN_PLACE, maxs, 1, MPI_DOUBLE, MPI_MAX, comm);
    d->min = (float)mins[0];
    d->max = (float)maxs[0];
    if (sums[0] > 0) {
        if (rank == 0)
            vae_error(VAE_EDATA, "'%s:%s' holds %.0f values that are NaN, infinite or beyond float32's range (+-3.4e38) "
                      "(first in row %.0f)",
                      d->file, d->dset, sums[0], mins[1]);
        return VAE_EDATA;
    }
    if (unit_range && (mins[0] < 0.0 || maxs[0] > 1.0)) {
        if (rank == 0 && (unit_range & VAE_RANGE_BINARIZE))
            vae_error(VAE_EDATA,
                      "'%s:%s' has values in [%g, %g] but --binarize needs data in [0, 1] (each value is the "
                      "probability of a 1; values are not clamped)",
                      d->file, d->dset, mins[0], maxs[0]);
        else if (rank == 0)
            vae_error(VAE_EDATA,
                      "'%s:%s' has values in [%g, %g] but --loss bce needs data in [0, 1] "
                      "(use --loss mse for other data)",
                      d->file, d->dset, mins[0], maxs[0]);
        return VAE_EDATA;
    }
    return VAE_OK;
}

static int cmp_order(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Rows idx[0..n) as stored (scaled to floats, never binarized) into out[n, D]. */
static int read_rows(vae_data *d, const int64_t *idx, int n, float *out)
{
    const int D = d->D;
    if (d->in_memory) {
        if (d->dtype == VAE_DT_U8) {
            const float s = 1.0f / 255.0f;
            for (int i = 0; i < n; i++) {
                const unsigned char *src = d->mem + (size_t)idx[i] * D;
                float *dst = out + (size_t)i * D;
                for (int j = 0; j < D; j++) dst[j] = (float)src[j] * s;
            }
        } else {
            for (int i = 0; i < n; i++)
                memcpy(out + (size_t)i * D, (const float *)d->mem + (size_t)idx[i] * D,
                       (size_t)D * sizeof(float));
        }
        return VAE_OK;
    }
    if (n > d->max_rows)
        return vae_error(VAE_EINVAL, "asked for %d rows, more than %d", n, d->max_rows);
    /* Streaming: one hyperslab union of the distinct rows in file order, then scatter. */
    for (int i = 0; i < n; i++) d->order[i] = idx[i];
    qsort(d->order, (size_t)n, sizeof(int64_t), cmp_order);
    int u = 0;
    for (int i = 0; i < n; i++)
        if (u == 0 || d->order[u - 1] != d->order[i]) d->order[u++] = d->order[i];
    int rc = VAE_OK;
    hid_t fsp = H5Dget_space(d->did);
    hsize_t count[4];
    H5Sget_simple_extent_dims(fsp, count, NULL);
    count[0] = 1;
    H5Sselect_none(fsp);
    for (int i = 0; i < u; i++) {
        hsize_t start[4] = { (hsize_t)d->order[i], 0, 0, 0 };
        H5Sselect_hyperslab(fsp, H5S_SELECT_OR, start, NULL, count, NULL);
    }
    hid_t msp = rows_space(fsp, (hsize_t)u);
    if (H5Dread(d->did, H5T_NATIVE_FLOAT, msp, fsp, H5P_DEFAULT, d->stage) < 0)
        rc = vae_error(VAE_EIO, "cannot read %d rows of '%s:%s'", u, d->file, d->dset);
    H5Sclose(msp);
    H5Sclose(fsp);
    if (rc) return rc;
    const float s = d->dtype == VAE_DT_U8 ? 1.0f / 255.0f : 1.0f;
    for (int i = 0; i < n; i++) {
        /* Binary search of row idx[i] among the u sorted distinct rows. */
        int a = 0, b = u - 1;
        while (a < b) {
            int mid = (a + b) / 2;
            if (d->order[mid] < idx[i]) a = mid + 1;
            else b = mid;
        }
        const float *src = d->stage + (size_t)a * D;
        float *dst = out + (size_t)i * D;
        for (int j = 0; j < D; j++) dst[j] = src[j] * s;
    }
    return VAE_OK;
}

int vae_data_rows(vae_data *d, const int64_t *idx, int n, float *out)
{
    int rc = read_rows(d, idx, n, out);
    if (!rc && d->binarize) vae_data_binarize_rows(out, idx, n, d->D, d->bin_seed, d->bin_a);
    return rc;
}

void vae_data_binarize_rows(float *x, const int64_t *idx, int n, int D, uint64_t seed, uint64_t a)
{
    uint32_t r[4];
    for (int i = 0; i < n; i++) {
        float *row = x + (size_t)i * D; /* [D] */
        for (int j = 0; j < D; j += 4) {
            /* The words and the conversion of vae_rng_uniform, without its buffer. */
            vae_rng_block(seed, VAE_RNG_BINARIZE, a, (uint64_t)idx[i], (uint32_t)(j / 4), r);
            for (int k = 0; k < 4 && j + k < D; k++)
                row[j + k] = (float)(r[k] >> 8) * (1.0f / 16777216.0f) < row[j + k] ? 1.0f : 0.0f;
        }
    }
}

void vae_data_set_binarize(vae_data *d, int on, uint64_t seed, uint64_t a)
{
    d->binarize = on != 0;
    d->bin_seed = seed;
    d->bin_a = a;
}

int vae_read_labels(const char *spec, const char *default_dset, int64_t n, int64_t *labels)
{
    char file[VAE_PATH_LEN], dset[256];
    int rc = vae_data_parse_spec(spec, default_dset, file, sizeof file, dset, sizeof dset);
    if (rc) return rc;
    struct stat sb;
    if (stat(file, &sb) != 0) return vae_error(VAE_EIO, "cannot open labels file '%s': %s", file, strerror(errno));
    if (S_ISDIR(sb.st_mode) || H5Fis_hdf5(file) <= 0) return vae_error(VAE_EDATA, "labels file '%s' is not an HDF5 file", file);
    hid_t fid = H5Fopen(file, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (fid < 0) return vae_error(VAE_EIO, "cannot open labels file '%s'", file);
    if (H5Lexists(fid, dset, H5P_DEFAULT) <= 0 || H5Oexists_by_name(fid, dset, H5P_DEFAULT) <= 0) {
        H5Fclose(fid);
        return vae_error(VAE_EDATA, "'%s' has no labels dataset '%s'", file, dset);
    }
    hid_t ds = H5Dopen2(fid, dset, H5P_DEFAULT);
    if (ds < 0) {
        H5Fclose(fid);
        return vae_error(VAE_EDATA, "labels '%s:%s' is not a dataset", file, dset);
    }
    hid_t sp = H5Dget_space(ds), t = H5Dget_type(ds);
    hsize_t dims[H5S_MAX_RANK] = { 0 };
    int nd = H5Sget_simple_extent_ndims(sp);
    if (nd > 0) H5Sget_simple_extent_dims(sp, dims, NULL);
    if (nd != 1 || (int64_t)dims[0] != n)
        rc = vae_error(VAE_EDATA, "labels '%s:%s' must be 1-D with %lld values (one per row), found rank %d with %lld "
                       "values in its first dimension", file, dset, (long long)n, nd, (long long)dims[0]);
    else if (H5Tget_class(t) != H5T_INTEGER)
        rc = vae_error(VAE_EDATA, "labels '%s:%s' are not integers", file, dset);
    else if (H5Dread(ds, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, labels) < 0)
        rc = vae_error(VAE_EIO, "cannot read labels '%s:%s' (file damaged?)", file, dset);
    H5Tclose(t);
    H5Sclose(sp);
    H5Dclose(ds);
    H5Fclose(fid);
    return rc;
}

void vae_data_labels_beside(const char *file, const char *dset, char *out, size_t len)
{
    const char *slash = strrchr(dset, '/');
    int dir = slash ? (int)(slash - dset) : 0;
    snprintf(out, len, "%s:%.*s/labels", file, dir, dset);
}

int vae_data_open_labels(vae_data *d, const char *spec, MPI_Comm comm)
{
    char file[VAE_PATH_LEN], dset[256];
    vae_defer_begin();
    int rc = vae_data_parse_spec(spec, VAE_LABELS_DEFAULT_DSET, file, sizeof file, dset, sizeof dset);
    int64_t *lab = NULL;
    if (!rc) {
        snprintf(d->label_spec, sizeof d->label_spec, "%s:%s", file, dset);
        free(d->labels);
        d->labels = malloc((size_t)d->N * sizeof(int));
        lab = malloc((size_t)d->N * sizeof(int64_t));
        if (!d->labels || !lab) rc = vae_error(VAE_ENOMEM, "cannot allocate the %lld labels of '%s'", (long long)d->N, spec);
    }
    if (!rc) rc = vae_read_labels(d->label_spec, VAE_LABELS_DEFAULT_DSET, d->N, lab);
    d->label_max = 0;
    for (int64_t i = 0; !rc && i < d->N; i++) {
        if (lab[i] < 0 || lab[i] > 65535)
            rc = vae_error(VAE_EDATA, "labels '%s' hold %lld in row %lld: a class must be 0..65535 (the rows of '%s:%s' "
                           "have one class each)", d->label_spec, (long long)lab[i], (long long)i, d->file, d->dset);
        else {
            d->labels[i] = (int)lab[i];
            if (d->labels[i] > d->label_max) d->label_max = d->labels[i];
        }
    }
    free(lab);
    rc = vae_agree(rc, comm);
    if (rc) {
        free(d->labels);
        d->labels = NULL;
    }
    return rc;
}

int vae_data_check_classes(const vae_data *d, int classes, const char *what, MPI_Comm comm)
{
    if (d->label_max < classes) return VAE_OK;
    int rank = 0;
    MPI_Comm_rank(comm, &rank);
    int64_t row = 0;
    while (d->labels[row] < classes) row++;
    if (rank == 0)
        vae_error(VAE_EDATA, "labels '%s' hold the class %d (row %lld), outside 0..%d: %s", d->label_spec, d->labels[row],
                  (long long)row, classes - 1, what);
    return VAE_EDATA;
}

void vae_data_close(vae_data *d)
{
    free(d->labels);
    if (d->has_win) MPI_Win_free(&d->win);
    if (d->did > 0) H5Dclose(d->did);
    if (d->fid > 0) H5Fclose(d->fid);
    free(d->stage);
    free(d->order);
    memset(d, 0, sizeof *d);
    d->fid = d->did = -1;
}
