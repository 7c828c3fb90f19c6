/*
 * fuzz_data.c: fuzz target of the data-set reader (dataset.h).
 *
 * Structure-aware: the input is not an HDF5 file (raw byte mutation of HDF5
 * finds bugs inside libhdf5, which this project cannot fix) but a description
 * of one, decoded with fuzz_common.h's choices in this order:
 *   object at the path  dataset, group, soft link to a dataset, dangling soft
 *                       link, external link to a missing file, hard link to a
 *                       dataset, virtual dataset whose source file is missing,
 *                       committed datatype, nothing
 *   path                FILE (= /train/images), FILE:/train/images, FILE:/x,
 *                       FILE:/a/b/c, FILE:/ (the root group)
 *   rank                0 (scalar) .. 6; then each extent from DIMS below
 *   element type        uint8, int8, uint16, int32 big-endian, float16,
 *                       float32, float64, float32 big-endian, compound
 *                       {float32, uint8}, string[8], variable-length string,
 *                       enum of uint8, array uint8[2], bitfield, uint64
 *   layout              chunked, contiguous, compact, chunked with unlimited
 *                       rows; chunked: each chunk extent, filters (deflate,
 *                       shuffle, Fletcher32)
 *   fill                default, a fill value, fill time never, early allocation
 *   written             all, nothing, the first row, the first chunk, the last
 *                       row, the first and the last rows
 *   values              1..8 values from VALUES (NaN, Inf, 1e300, -5, ...), cycled
 *   attribute           none, a number, a string
 *   reading             streamed, in memory, auto; the rows per call (1..8);
 *                       1..4 row indices (0, N-1, N/2, any, 1)
 * The file is written with the HDF5 API, then read as the program reads it:
 * vae_data_open, vae_data_check (unit_range 0 and 1), vae_data_rows,
 * vae_data_close, on MPI_COMM_SELF. Nothing may crash, hang or allocate
 * absurdly (run with -rss_limit_mb=2048 -malloc_limit_mb=1024).
 *
 * Limits of the harness (what it declines, so that each run is short and
 * small): it never writes more than 16 MiB of storage or into more than 4096
 * chunks of at most 4 MiB (a huge chunked dataset gets only the chunks
 * written; contiguous and early-allocated layouts that would need more are
 * not written or not made), reads in memory only data of at most 16 MiB in
 * at most 2^14 chunks, calls vae_data_check only when the rows hold at most
 * 2^20 values in at most 2^14 chunks (the scan reads every row: its time
 * grows with the declared size by design), asks vae_data_rows for at most
 * 2^22 values, and reads rows one per call when together they span more than
 * 2^14 chunks. The chunk limits are there because libhdf5 1.10 spends time
 * and memory per chunk that one H5Dread or H5Dwrite touches (H5S_copy of the
 * selection for each: about 6 KiB, so 2^18 chunks in one call take 1.4 GB
 * and seconds), and because it visits every chunk between the first and the
 * last row selected.
 */
#define _XOPEN_SOURCE 700
#include "mpivae/dataset.h"
#include "mpivae/status.h"

#include <hdf5.h>
#include <math.h>
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define STORAGE_LIMIT ((uint64_t)16 << 20)
#define WRITE_ELEMS_LIMIT ((uint64_t)4 << 20)
#define CHUNK_BYTES_LIMIT ((uint64_t)4 << 20)
#define CHUNKS_LIMIT ((uint64_t)4096)
#define CHECK_VALUES_LIMIT ((uint64_t)1 << 20)
#define ROWS_VALUES_LIMIT ((uint64_t)1 << 22)
#define READ_CHUNKS_LIMIT ((uint64_t)1 << 14)

enum { OBJ_DATASET, OBJ_GROUP, OBJ_SOFT, OBJ_DANGLING, OBJ_EXTERNAL, OBJ_HARD, OBJ_VIRTUAL, OBJ_TYPE, OBJ_NONE, OBJ_N };
enum { T_U8, T_I8, T_U16, T_I32BE, T_F16, T_F32, T_F64, T_F32BE, T_COMPOUND, T_STR, T_VSTR, T_ENUM, T_ARRAY,
       T_BITFIELD, T_U64, T_N };
enum { L_CHUNKED, L_CONTIG, L_COMPACT, L_CHUNKED_UNLIMITED, L_N };
enum { F_DEFAULT, F_VALUE, F_NEVER, F_EARLY, F_N };
enum { W_ALL, W_NONE, W_FIRST_ROW, W_FIRST_CHUNK, W_LAST_ROW, W_FIRST_LAST, W_N };

static const double VALUES[] = { 0.0, 1.0, 0.5, 255.0, 128.0, -5.0, NAN, INFINITY, -INFINITY, 1e300, -1e300,
                                 1e-310, 3.5e38, 65504.0, 2.0, 1e-3 };
#define N_VALUES (sizeof VALUES / sizeof VALUES[0])

static const char *PATHS[] = { "/train/images", "/train/images", "/x", "/a/b/c", "/" };
#define N_PATHS 5

static const char *OBJ_NAMES[] = { "dataset", "group", "soft link", "dangling soft link", "external link",
                                   "hard link", "virtual dataset", "committed type", "nothing" };
static const char *TYPE_NAMES[] = { "uint8", "int8", "uint16", "int32be", "float16", "float32", "float64",
                                    "float32be", "compound", "string8", "vlen string", "enum", "array",
                                    "bitfield", "uint64" };

typedef struct desc {
    int obj, path, rank, type, layout, fill, written, attr;
    hsize_t dims[8], chunk[8];
    int filters;
    double fillv;
    int n_vals;
    double vals[8];
    int in_memory, max_rows, n_idx;
    unsigned idx_kind[4];
    uint64_t idx_any[4];
} desc;

/* One extent: small, zero, 2^31, 2^32+k, 2^33, 2^62, near 2^64, or any 64-bit value. */
static hsize_t pick_dim(fz_in *in)
{
    static const hsize_t small[] = { 1, 2, 3, 4, 8, 16, 28, 0, 255, 300 };
    unsigned c = fz_pick(in, 16);
    if (c < 10) return small[c];
    switch (c) {
    case 10: return (hsize_t)1 << 31;
    case 11: return ((hsize_t)1 << 32) + fz_byte(in);
    case 12: return (hsize_t)1 << 33;
    case 13: return (hsize_t)1 << 62;
    case 14: return ~(hsize_t)0 - 1 - fz_byte(in);
    default: return (hsize_t)fz_u64(in);
    }
}

static void decode(fz_in *in, desc *d)
{
    memset(d, 0, sizeof *d);
    d->obj = (int)fz_pick(in, OBJ_N);
    d->path = (int)fz_pick(in, N_PATHS);
    d->rank = (int)fz_pick(in, 7);
    for (int k = 0; k < d->rank; k++) d->dims[k] = pick_dim(in);
    d->type = (int)fz_pick(in, T_N);
    d->layout = (int)fz_pick(in, L_N);
    for (int k = 0; k < d->rank; k++) {
        hsize_t n = d->dims[k], c;
        switch (fz_pick(in, 5)) {
        case 0: c = n < 16 ? n : 16; break;
        case 1: c = 1; break;
        case 2: c = n; break;
        case 3: c = n < 256 ? n : 256; break;
        default: c = 1 + fz_byte(in); break;
        }
        d->chunk[k] = c < 1 ? 1 : c;
    }
    d->filters = (int)fz_pick(in, 8);
    d->fill = (int)fz_pick(in, F_N);
    d->fillv = VALUES[fz_pick(in, N_VALUES)];
    d->written = (int)fz_pick(in, W_N);
    d->n_vals = 1 + (int)fz_pick(in, 8);
    for (int i = 0; i < d->n_vals; i++) d->vals[i] = VALUES[fz_pick(in, N_VALUES)];
    d->attr = (int)fz_pick(in, 3);
    d->in_memory = (int)fz_pick(in, 3);
    d->max_rows = 1 + (int)fz_pick(in, 8);
    d->n_idx = 1 + (int)fz_pick(in, 4);
    for (int i = 0; i < d->n_idx; i++) {
        d->idx_kind[i] = fz_pick(in, 5);
        d->idx_any[i] = d->idx_kind[i] == 3 ? fz_u64(in) : 0;
    }
}

/* a*b, saturating at UINT64_MAX. */
static uint64_t mul_sat(uint64_t a, uint64_t b)
{
    if (a && b > UINT64_MAX / a) return UINT64_MAX;
    return a * b;
}

static uint64_t n_elems(const hsize_t *dims, int rank)
{
    uint64_t n = 1;
    for (int k = 0; k < rank; k++) n = mul_sat(n, dims[k]);
    return n;
}

static hid_t make_type(int t)
{
    hid_t h = -1;
    switch (t) {
    case T_U8: return H5Tcopy(H5T_STD_U8LE);
    case T_I8: return H5Tcopy(H5T_STD_I8LE);
    case T_U16: return H5Tcopy(H5T_STD_U16LE);
    case T_I32BE: return H5Tcopy(H5T_STD_I32BE);
    case T_F16:
        h = H5Tcopy(H5T_IEEE_F32LE);
        H5Tset_fields(h, 15, 10, 5, 0, 10);
        H5Tset_size(h, 2);
        H5Tset_ebias(h, 15);
        return h;
    case T_F32: return H5Tcopy(H5T_IEEE_F32LE);
    case T_F64: return H5Tcopy(H5T_IEEE_F64LE);
    case T_F32BE: return H5Tcopy(H5T_IEEE_F32BE);
    case T_COMPOUND:
        h = H5Tcreate(H5T_COMPOUND, 5);
        H5Tinsert(h, "x", 0, H5T_IEEE_F32LE);
        H5Tinsert(h, "y", 4, H5T_STD_U8LE);
        return h;
    case T_STR:
        h = H5Tcopy(H5T_C_S1);
        H5Tset_size(h, 8);
        return h;
    case T_VSTR:
        h = H5Tcopy(H5T_C_S1);
        H5Tset_size(h, H5T_VARIABLE);
        return h;
    case T_ENUM: {
        h = H5Tenum_create(H5T_STD_U8LE);
        unsigned char a = 0, b = 1;
        H5Tenum_insert(h, "A", &a);
        H5Tenum_insert(h, "B", &b);
        return h;
    }
    case T_ARRAY: {
        hsize_t two = 2;
        return H5Tarray_create2(H5T_STD_U8LE, 1, &two);
    }
    case T_BITFIELD: return H5Tcopy(H5T_STD_B8LE);
    default: return H5Tcopy(H5T_STD_U64LE);
    }
}

static int numeric(int t) { return t <= T_F32BE || t == T_U64; }

/* The region written: start and count per dimension; 0 when nothing is. */
static int write_region(const desc *d, hsize_t *start, hsize_t *count)
{
    int r = d->rank;
    if (r == 0) return d->written != W_NONE;
    if (n_elems(d->dims, r) == 0) return 0;
    for (int k = 0; k < r; k++) {
        start[k] = 0;
        count[k] = d->dims[k];
    }
    switch (d->written) {
    case W_NONE: return 0;
    case W_ALL: break;
    case W_FIRST_ROW: count[0] = 1; break;
    case W_LAST_ROW: start[0] = d->dims[0] - 1; count[0] = 1; break;
    case W_FIRST_LAST: count[0] = 1; break; /* and the last row, below */
    default:
        for (int k = 0; k < r; k++) count[k] = d->chunk[k] < d->dims[k] ? d->chunk[k] : d->dims[k];
    }
    return 1;
}

/* Chunks a region touches, saturating. */
static uint64_t chunks_touched(const desc *d, const hsize_t *count)
{
    uint64_t n = 1;
    for (int k = 0; k < d->rank; k++) n = mul_sat(n, (count[k] + d->chunk[k] - 1) / d->chunk[k] + 1);
    return n;
}

/* Writes count elements at start: numbers through double, other types as raw bytes. */
static void write_values(const desc *d, hid_t ds, hid_t ftype, const hsize_t *start, const hsize_t *count)
{
    uint64_t n = d->rank ? n_elems(count, d->rank) : 1;
    hid_t fsp = H5Dget_space(ds);
    hid_t msp = d->rank ? H5Screate_simple(d->rank, count, NULL) : H5Screate(H5S_SCALAR);
    if (d->rank) H5Sselect_hyperslab(fsp, H5S_SELECT_SET, start, NULL, count, NULL);
    if (numeric(d->type)) {
        double *buf = malloc((size_t)n * sizeof(double));
        if (buf) {
            for (uint64_t i = 0; i < n; i++) buf[i] = d->vals[i % (uint64_t)d->n_vals];
            H5Dwrite(ds, H5T_NATIVE_DOUBLE, msp, fsp, H5P_DEFAULT, buf);
            free(buf);
        }
    } else if (d->type == T_VSTR) {
        const char **buf = malloc((size_t)n * sizeof(char *));
        if (buf) {
            for (uint64_t i = 0; i < n; i++) buf[i] = i % 2 ? "0.5" : "nan";
            H5Dwrite(ds, ftype, msp, fsp, H5P_DEFAULT, buf);
            free(buf);
        }
    } else {
        size_t ts = H5Tget_size(ftype);
        unsigned char *buf = malloc((size_t)n * ts);
        if (buf) {
            for (size_t i = 0; i < (size_t)n * ts; i++) buf[i] = (unsigned char)(i * 37 + 11 * (size_t)d->n_vals);
            H5Dwrite(ds, ftype, msp, fsp, H5P_DEFAULT, buf);
            free(buf);
        }
    }
    H5Sclose(msp);
    H5Sclose(fsp);
}

/* Creates the dataset described at name in loc (contents and all). */
static void make_dataset(desc *d, hid_t loc, const char *name, int is_virtual)
{
    hid_t ftype = make_type(d->type);
    size_t ts = H5Tget_size(ftype);
    uint64_t total = mul_sat(n_elems(d->dims, d->rank), ts);
    hsize_t maxdims[8];
    for (int k = 0; k < d->rank; k++) maxdims[k] = d->dims[k];
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    int layout = d->rank == 0 && (d->layout == L_CHUNKED || d->layout == L_CHUNKED_UNLIMITED) ? L_CONTIG : d->layout;
    int chunked = layout == L_CHUNKED || layout == L_CHUNKED_UNLIMITED;
    hsize_t chunk[8];
    if (is_virtual) {
        hid_t vsp = d->rank ? H5Screate_simple(d->rank, d->dims, NULL) : H5Screate(H5S_SCALAR);
        hid_t ssp = d->rank ? H5Screate_simple(d->rank, d->dims, NULL) : H5Screate(H5S_SCALAR);
        H5Pset_virtual(dcpl, vsp, "missing-source.h5", "/src", ssp);
        hid_t ds = H5Dcreate2(loc, name, ftype, vsp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
        if (ds >= 0) H5Dclose(ds);
        H5Sclose(vsp);
        H5Sclose(ssp);
        H5Pclose(dcpl);
        H5Tclose(ftype);
        return;
    }
    if (chunked) {
        /* Chunks of at most CHUNK_BYTES_LIMIT: halve the largest extent until they fit. */
        for (int k = 0; k < d->rank; k++) chunk[k] = d->chunk[k];
        for (;;) {
            uint64_t cb = mul_sat(n_elems(chunk, d->rank), ts);
            if (cb <= CHUNK_BYTES_LIMIT) break;
            int big = 0;
            for (int k = 1; k < d->rank; k++)
                if (chunk[k] > chunk[big]) big = k;
            chunk[big] = chunk[big] / 2 ? chunk[big] / 2 : 1;
        }
        for (int k = 0; k < d->rank; k++)
            if (chunk[k] > d->dims[k]) maxdims[k] = H5S_UNLIMITED;
        if (layout == L_CHUNKED_UNLIMITED) maxdims[0] = H5S_UNLIMITED;
        H5Pset_chunk(dcpl, d->rank, chunk);
        if (d->filters & 2) H5Pset_shuffle(dcpl);
        if (d->filters & 1) H5Pset_deflate(dcpl, 1);
        if (d->filters & 4) H5Pset_fletcher32(dcpl);
    } else if (layout == L_COMPACT) {
        H5Pset_layout(dcpl, H5D_COMPACT);
    }
    /* From here on d->chunk holds the chunks made (0 when not chunked), for the reading below. */
    for (int k = 0; k < d->rank; k++) d->chunk[k] = chunked ? chunk[k] : 0;
    desc dc = *d;
    if (!chunked)
        for (int k = 0; k < d->rank; k++) dc.chunk[k] = d->dims[k] ? d->dims[k] : 1;
    if (d->fill == F_VALUE && numeric(d->type)) {
        /* The fill value in the file's own type, converted from the double. */
        unsigned char fv[16] = { 0 };
        memcpy(fv, &d->fillv, sizeof d->fillv);
        if (H5Tconvert(H5T_NATIVE_DOUBLE, ftype, 1, fv, NULL, H5P_DEFAULT) >= 0) H5Pset_fill_value(dcpl, ftype, fv);
    } else if (d->fill == F_NEVER) {
        H5Pset_fill_time(dcpl, H5D_FILL_TIME_NEVER);
    } else if (d->fill == F_EARLY && total <= STORAGE_LIMIT && (!chunked || chunks_touched(d, d->dims) <= CHUNKS_LIMIT)) {
        H5Pset_alloc_time(dcpl, H5D_ALLOC_TIME_EARLY);
    }
    hid_t sp = d->rank ? H5Screate_simple(d->rank, d->dims, maxdims) : H5Screate(H5S_SCALAR);
    hid_t ds = sp >= 0 ? H5Dcreate2(loc, name, ftype, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT) : -1;
    if (ds >= 0) {
        hsize_t start[8], count[8];
        int w = write_region(&dc, start, count);
        uint64_t elems = d->rank ? n_elems(count, d->rank) : 1;
        /* Storage the write needs: the chunks it touches, or the whole dataset. */
        uint64_t need = chunked ? mul_sat(chunks_touched(&dc, count), mul_sat(n_elems(chunk, d->rank), ts)) : total;
        /*
         * libhdf5 1.10 itself crashes writing into chunked datasets of extents near 2^62 (H5D__chunk_lookup,
         * H5B_find): writes go only to datasets whose extents stay below 2^40.
         */
        int writable = n_elems(d->dims, d->rank) < (uint64_t)1 << 56;
        for (int k = 0; k < d->rank; k++)
            if (d->dims[k] >= (hsize_t)1 << 40) writable = 0;
        if (w && writable && elems <= WRITE_ELEMS_LIMIT && need <= STORAGE_LIMIT &&
            (!chunked || chunks_touched(&dc, count) <= CHUNKS_LIMIT)) {
            write_values(&dc, ds, ftype, start, count);
            if (d->written == W_FIRST_LAST && d->rank && d->dims[0] > 1) {
                start[0] = d->dims[0] - 1;
                write_values(&dc, ds, ftype, start, count);
            }
        }
        if (d->attr == 1) {
            hid_t asp = H5Screate(H5S_SCALAR);
            hid_t a = H5Acreate2(ds, "scale", H5T_NATIVE_DOUBLE, asp, H5P_DEFAULT, H5P_DEFAULT);
            if (a >= 0) {
                H5Awrite(a, H5T_NATIVE_DOUBLE, &d->vals[0]);
                H5Aclose(a);
            }
            H5Sclose(asp);
        } else if (d->attr == 2) {
            hid_t asp = H5Screate(H5S_SCALAR), st = H5Tcopy(H5T_C_S1);
            H5Tset_size(st, 6);
            hid_t a = H5Acreate2(ds, "units", st, asp, H5P_DEFAULT, H5P_DEFAULT);
            if (a >= 0) {
                H5Awrite(a, st, "pixel");
                H5Aclose(a);
            }
            H5Tclose(st);
            H5Sclose(asp);
        }
        H5Dclose(ds);
    }
    if (sp >= 0) H5Sclose(sp);
    H5Pclose(dcpl);
    H5Tclose(ftype);
}

/* Writes the described file; returns 0 when the file exists afterwards. */
static int make_file(desc *d, const char *file)
{
    hid_t fid = H5Fcreate(file, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (fid < 0) return -1;
    const char *path = PATHS[d->path];
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    H5Pset_create_intermediate_group(lcpl, 1);
    /* The parent groups of the path. */
    char parent[64];
    snprintf(parent, sizeof parent, "%s", path);
    char *slash = strrchr(parent, '/');
    if (slash && slash != parent) {
        *slash = '\0';
        hid_t g = H5Gcreate2(fid, parent, lcpl, H5P_DEFAULT, H5P_DEFAULT);
        if (g >= 0) H5Gclose(g);
    }
    int root = !strcmp(path, "/");
    switch (d->obj) {
    case OBJ_DATASET:
        if (root) make_dataset(d, fid, "/real", 0);
        else make_dataset(d, fid, path, 0);
        break;
    case OBJ_GROUP:
        if (!root) {
            hid_t g = H5Gcreate2(fid, path, lcpl, H5P_DEFAULT, H5P_DEFAULT);
            if (g >= 0) H5Gclose(g);
        }
        break;
    case OBJ_SOFT:
        make_dataset(d, fid, "/real", 0);
        if (!root) H5Lcreate_soft("/real", fid, path, lcpl, H5P_DEFAULT);
        break;
    case OBJ_DANGLING:
        if (!root) H5Lcreate_soft("/nowhere", fid, path, lcpl, H5P_DEFAULT);
        break;
    case OBJ_EXTERNAL:
        if (!root) H5Lcreate_external("missing-file.h5", "/train/images", fid, path, lcpl, H5P_DEFAULT);
        break;
    case OBJ_HARD:
        make_dataset(d, fid, "/real", 0);
        if (!root) H5Lcreate_hard(fid, "/real", fid, path, lcpl, H5P_DEFAULT);
        break;
    case OBJ_VIRTUAL:
        make_dataset(d, fid, root ? "/real" : path, 1);
        break;
    case OBJ_TYPE:
        if (!root) {
            hid_t t = make_type(d->type);
            H5Tcommit2(fid, path, t, lcpl, H5P_DEFAULT, H5P_DEFAULT);
            H5Tclose(t);
        }
        break;
    default: break;
    }
    H5Pclose(lcpl);
    H5Fclose(fid);
    return 0;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fz_mpi_init(argc, argv);
    MPI_Comm_set_errhandler(MPI_COMM_SELF, MPI_ERRORS_RETURN);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    fz_setup("data");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_in in = { data, size };
    desc d;
    decode(&in, &d);
    char file[512], spec[600];
    snprintf(file, sizeof file, "%s/d.h5", fz_dir);
    fz_note("%s at %s, rank %d [%llu, %llu, %llu, %llu, %llu, %llu], %s, layout %d, chunk [%llu, %llu, %llu, "
            "%llu], filters %d, fill %d (%g), written %d, %d values (%g, ...), read %d, max_rows %d",
            OBJ_NAMES[d.obj], PATHS[d.path], d.rank, (unsigned long long)d.dims[0],
            (unsigned long long)d.dims[1], (unsigned long long)d.dims[2], (unsigned long long)d.dims[3],
            (unsigned long long)d.dims[4], (unsigned long long)d.dims[5], TYPE_NAMES[d.type], d.layout,
            (unsigned long long)d.chunk[0], (unsigned long long)d.chunk[1], (unsigned long long)d.chunk[2],
            (unsigned long long)d.chunk[3], d.filters, d.fill, d.fillv, d.written, d.n_vals, d.vals[0],
            d.in_memory, d.max_rows);
    hsize_t ids[FZ_N_ID_TYPES];
    fz_count_ids(ids);
    if (make_file(&d, file)) return 0;
    fz_check_ids(ids, "the harness's writer");
    if (d.path == 0) snprintf(spec, sizeof spec, "%s", file);
    else snprintf(spec, sizeof spec, "%s:%s", file, PATHS[d.path]);

    /* What the rows hold, from the description (the reader must agree or refuse). */
    uint64_t N = d.rank ? d.dims[0] : 0, D = d.rank > 1 ? n_elems(d.dims + 1, d.rank - 1) : 1;
    uint64_t values = mul_sat(N, D);
    uint64_t chunks = 1; /* of the whole dataset */
    for (int k = 0; d.chunk[0] && k < d.rank; k++) chunks = mul_sat(chunks, (d.dims[k] + d.chunk[k] - 1) / d.chunk[k]);
    int in_memory = d.in_memory == 0 ? 0 : d.in_memory == 1 ? 1 : -1;
    if (mul_sat(values, 8) > STORAGE_LIMIT || chunks > READ_CHUNKS_LIMIT) in_memory = 0;
    int max_rows = d.max_rows;
    if (D > 0 && (uint64_t)max_rows * D > ROWS_VALUES_LIMIT) max_rows = 1;

    vae_data v;
    int rc = vae_data_open(&v, spec, MPI_COMM_SELF, in_memory, max_rows);
    vae_defer_end(0);
    if (rc) {
        fz_check_ids(ids, "a failed vae_data_open");
        return 0;
    }
    if ((uint64_t)v.N != N || (uint64_t)v.D != D)
        fz_fail("'%s' opened as %lld rows of %d values, but it has %llu rows of %llu", spec, (long long)v.N, v.D,
                (unsigned long long)N, (unsigned long long)D);
    if (values <= CHECK_VALUES_LIMIT && chunks <= READ_CHUNKS_LIMIT) {
        vae_data_check(&v, 0, MPI_COMM_SELF);
        vae_defer_end(0);
        vae_data_check(&v, 1, MPI_COMM_SELF);
        vae_defer_end(0);
    }
    int n = d.n_idx;
    if ((uint64_t)n * D > ROWS_VALUES_LIMIT) n = 1;
    if (n > max_rows) n = max_rows;
    if (D <= ROWS_VALUES_LIMIT) {
        int64_t idx[4];
        for (int i = 0; i < n; i++) {
            switch (d.idx_kind[i]) {
            case 0: idx[i] = 0; break;
            case 1: idx[i] = v.N - 1; break;
            case 2: idx[i] = v.N / 2; break;
            case 3: idx[i] = (int64_t)(d.idx_any[i] % (uint64_t)v.N); break;
            default: idx[i] = 1 % v.N; break;
            }
        }
        /*
         * Rows whose selection spans more than 2^14 chunks are read one per call: H5Dread visits every
         * chunk between the first and the last row of a selection (seconds for rows 0 and 2^31 - 1).
         */
        int64_t lo = idx[0], hi = idx[0];
        for (int i = 1; i < n; i++) {
            if (idx[i] < lo) lo = idx[i];
            if (idx[i] > hi) hi = idx[i];
        }
        uint64_t span = 1;
        if (d.chunk[0]) {
            span = (uint64_t)hi / d.chunk[0] - (uint64_t)lo / d.chunk[0] + 1;
            for (int k = 1; k < d.rank; k++) span = mul_sat(span, (d.dims[k] + d.chunk[k] - 1) / d.chunk[k]);
        }
        float *out = malloc((size_t)n * (size_t)D * sizeof(float));
        if (out && span <= READ_CHUNKS_LIMIT) {
            vae_data_rows(&v, idx, n, out);
        } else if (out) {
            for (int i = 0; i < n; i++) vae_data_rows(&v, idx + i, 1, out);
        }
        free(out);
    }
    vae_data_close(&v);
    fz_check_ids(ids, "vae_data_open .. vae_data_close");
    return 0;
}
