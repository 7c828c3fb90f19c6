/*
 * fuzz_ckpt.c: fuzz target of the checkpoint reader (checkpoint.h).
 *
 * Structure-aware: at start the harness writes three valid checkpoints with
 * the library (vae_ckpt_save of freshly initialised models: mlp 64-8-2 bce,
 * conv 4,8 on 1x8x8 with Z=2 mse, mlp 48-8-4-3 mse). An input picks one and
 * edits a copy of it, decoded with fuzz_common.h's choices:
 *   base                which of the three
 *   file name           step-<its step>.h5, step-<step+1>.h5, a step past
 *                       LONG_MAX, step--5.h5
 *   max batch           1..4 (vae_model_init)
 *   then up to 12 edits, each one of
 *     delete attribute  NAME (every root attribute the writer makes)
 *     number attribute  NAME as int64, int32, uint64, float64, float32 or
 *                       int8, scalar, [1], [n] or [0], values from NUMBERS
 *                       (2^32+20, 1e300, NaN, -1, 65536, ...)
 *     string attribute  NAME from STRINGS ("nonsense", "", 5000 chars, ...),
 *                       fixed or variable length, scalar or [2]
 *     delete tensor     one tensor of /params, /optimizer/m or /optimizer/v,
 *                       or the whole group
 *     replace tensor    another shape (transposed, one longer, an extra
 *                       dimension, [2^31, ...] without storage, scalar) and
 *                       type (float32, float64, float16, int32, uint8,
 *                       compound, string, variable-length string), contiguous,
 *                       chunked or chunked with Fletcher32, values from VALUES
 *     tensor as link    a group, a dangling soft link or an external link
 *                       in the tensor's place
 *     damage a tensor   one byte of its stored data flipped (the checksum's case)
 *     damage the file   truncated, emptied, replaced by a directory, a
 *                       dangling symbolic link
 * Then what a resume or a tool does: vae_ckpt_read_meta; vae_model_init from
 * the configuration read; vae_ckpt_read_tensors with and without the
 * optimizer; vae_ckpt_find_latest on the folder holding the file.
 *
 * Oracles (DESIGN.md: a checkpoint whose attributes do not verify is refused
 * with a clear message), each an abort when broken:
 *   - an accepted configuration is one the command line could have made:
 *     model mlp or conv, loss bce or mse, and every cfg.* and state value in
 *     the range `mpivae train` takes for it (lr 0..10, beta1 0..0.999999,
 *     epochs 1..1000000, world_size >= 1, ...);
 *   - an accepted attribute written as a scalar int64 or float64 reads back
 *     as exactly that value (2^32+20 is not latent 20);
 *   - accepted tensors are finite, and Adam's v is not negative;
 *   - vae_ckpt_find_latest takes the file exactly when the three reads above
 *     all accept it and its step is the one in its name.
 *
 * Limit of the harness: it calls vae_model_init (and what needs the model)
 * only for models of at most 32M parameters per block (128 MiB), unless
 * MPIVAE_FUZZ_NO_MODEL_LIMIT=1: a checkpoint that names a larger model makes
 * the library allocate it before any tensor is read.
 */
#define _XOPEN_SOURCE 700
#include "mpivae/checkpoint.h"
#include "mpivae/model.h"
#include "mpivae/status.h"
#include "mpivae/train.h"

#include <errno.h>
#include <fcntl.h>
#include <float.h>
#include <hdf5.h>
#include <limits.h>
#include <math.h>
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fuzz_common.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define N_BASES 3
#define BASE_STEP 7
#define MAX_EDITS 12
#define MODEL_PARAMS_LIMIT ((double)(32 << 20))

/* Every root attribute vae_ckpt_save writes. */
static const char *NAMES[] = {
    "format", "format_version", "version", "step", "epoch", "epoch_step", "adam_t", "skips", "world_size",
    "data_rows", "cfg.model", "model", "hidden", "latent", "loss", "input_shape", "cfg.data", "cfg.test_data",
    "cfg.data_abs", "cfg.test_data_abs", "cfg.out", "beta", "cfg.warmup", "cfg.capacity_max",
    "cfg.capacity_steps", "cfg.epochs", "cfg.batch", "cfg.lr", "cfg.beta1", "cfg.beta2", "cfg.adam_eps", "seed",
    "cfg.log_every", "cfg.eval_every", "cfg.sample_every", "cfg.ckpt_every", "cfg.keep", "cfg.max_skips",
    "cfg.in_memory", "cfg.max_steps"
};
#define N_NAMES ((int)(sizeof NAMES / sizeof NAMES[0]))

/* Numbers for attributes: integers (written as integer types) and reals (as float types). */
static const long long INTS[] = { 0, 1, -1, 2, 3, 8, 2147483647LL, 2147483648LL, 4294967316LL /* 2^32+20 */,
                                  LLONG_MAX, LLONG_MIN, 65536, 65537, 4096, 4097, 512, 16777217, 1000001, -5 };
#define N_INTS ((int)(sizeof INTS / sizeof INTS[0]))
static const double REALS[] = { 0.0, 1.0, -1.0, 0.5, 1e300, -1e300, NAN, INFINITY, -INFINITY, 4294967316.0, 0.999999,
                                1e-8, 11.0, 1000001.0, 2.5, 9.3e18 };
#define N_REALS ((int)(sizeof REALS / sizeof REALS[0]))

static const double VALUES[] = { 0.0, 0.25, -0.5, NAN, INFINITY, -INFINITY, 1e300, -5.0, 1e-45, 3.5e38 };
#define N_VALUES ((int)(sizeof VALUES / sizeof VALUES[0]))

static char long_str[5001];
static const char *STRINGS[] = { "mpivae-checkpoint", "mlp", "conv", "nonsense", "bce", "mse", "",
                                 "data/x.h5:/train/images", "/nonexistent/x.h5", ":/", "hvae", NULL /* long_str */ };
#define N_STRINGS ((int)(sizeof STRINGS / sizeof STRINGS[0]))

static const char *GROUPS[] = { "/params", "/optimizer/m", "/optimizer/v" };

typedef struct base {
    unsigned char *bytes;
    size_t len;
    vae_model m; /* its tensors' names and shapes */
} base;
static base g_base[N_BASES];

/* The last scalar int64 or float64 value an edit gave an attribute, for the read-back oracle. */
typedef struct written {
    int set;
    int is_int;
    long long i;
    double d;
} written;

static int name_index(const char *name)
{
    for (int i = 0; i < N_NAMES; i++)
        if (!strcmp(NAMES[i], name)) return i;
    return -1;
}

static int make_base(int b, const char *dir)
{
    vae_config cfg;
    vae_config_defaults(&cfg);
    vae_arch *a = &cfg.arch;
    a->C = 1;
    a->Hh = 8;
    a->W = 8;
    a->n_hidden = 1;
    a->hidden[0] = 8;
    a->latent = 2;
    if (b == 1) {
        a->kind = VAE_MODEL_CONV;
        a->n_hidden = 2;
        a->hidden[0] = 4;
        a->hidden[1] = 8;
        a->loss = VAE_LOSS_MSE;
    } else if (b == 2) {
        a->C = 3;
        a->Hh = 4;
        a->W = 4;
        a->n_hidden = 2;
        a->hidden[1] = 4;
        a->latent = 3;
        a->loss = VAE_LOSS_MSE;
    }
    snprintf(cfg.data, sizeof cfg.data, "s.h5:/train/images");
    snprintf(cfg.test_data, sizeof cfg.test_data, "s.h5:/test/images");
    snprintf(cfg.out, sizeof cfg.out, "%s", dir);
    vae_train_state st = { .step = BASE_STEP, .epoch = 0, .epoch_step = BASE_STEP, .adam_t = BASE_STEP,
                           .skips = 0, .world_size = 1, .data_rows = 100 };
    base *B = &g_base[b];
    if (vae_model_init(&B->m, a, 1)) return -1;
    vae_model_init_params(&B->m, 1);
    for (size_t i = 0; i < B->m.n_params; i++) {
        B->m.m[i] = 1e-3f * (float)(i % 7);
        B->m.v[i] = 1e-6f * (float)(i % 5);
    }
    char path[VAE_PATH_LEN + 64];
    if (vae_ckpt_save(dir, &B->m, &cfg, &st, 1, path, sizeof path)) return -1;
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    fseek(f, 0, SEEK_END);
    B->len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    B->bytes = malloc(B->len);
    size_t got = B->bytes ? fread(B->bytes, 1, B->len, f) : 0;
    fclose(f);
    return got == B->len ? 0 : -1;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fz_mpi_init(argc, argv);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    fz_setup("ckpt");
    memset(long_str, 'x', sizeof long_str - 1);
    STRINGS[N_STRINGS - 1] = long_str;
    for (int b = 0; b < N_BASES; b++) {
        char dir[512];
        snprintf(dir, sizeof dir, "%s/base%d", fz_dir, b);
        if (make_base(b, dir)) {
            dprintf(2, "fuzz_ckpt: cannot write the base checkpoint %d in %s\n", b, dir);
            abort();
        }
    }
    return 0;
}


/* ---- edits ---- */

/* One case: the edits decoded and applied to a copy of a base checkpoint. */
typedef struct edit_state {
    int b;                  /* base */
    written attr[N_NAMES];
    int str_set[N_NAMES];   /* last written as a string: index into STRINGS, else -1 */
    int file_damage;        /* -1 none, else 0 truncate, 1 empty, 2 directory, 3 dangling symlink */
    unsigned damage_arg;
    haddr_t flip_addr;      /* HADDR_UNDEF: no byte to flip */
    unsigned flip_byte;
} edit_state;

static void set_number_attr(hid_t fid, int ni, fz_in *in, edit_state *es)
{
    unsigned t = fz_pick(in, 6), shape = fz_pick(in, 4);
    hsize_t n = shape == 2 ? 1 + fz_pick(in, 9) : shape == 3 ? 0 : 1;
    int is_int = t < 4;
    long long iv[9] = { 0 };
    double dv[9] = { 0 };
    for (hsize_t i = 0; i < n; i++) {
        if (is_int) {
            unsigned c = fz_pick(in, N_INTS + 1);
            iv[i] = c < (unsigned)N_INTS ? INTS[c] : (long long)fz_u64(in);
        } else {
            unsigned c = fz_pick(in, N_REALS + 1);
            uint64_t bits = c < (unsigned)N_REALS ? 0 : fz_u64(in);
            if (c < (unsigned)N_REALS) dv[i] = REALS[c];
            else memcpy(&dv[i], &bits, sizeof bits);
        }
    }
    const char *name = NAMES[ni];
    hid_t ft = t == 0 ? H5T_STD_I64LE : t == 1 ? H5T_STD_I32LE : t == 2 ? H5T_STD_U64LE : t == 3 ? H5T_STD_I8LE
             : t == 4 ? H5T_IEEE_F64LE : H5T_IEEE_F32LE;
    hid_t sp = shape == 0 ? H5Screate(H5S_SCALAR) : H5Screate_simple(1, &n, NULL);
    if (H5Aexists(fid, name) > 0) H5Adelete(fid, name);
    hid_t a = H5Acreate2(fid, name, ft, sp, H5P_DEFAULT, H5P_DEFAULT);
    if (a >= 0) {
        /* HDF5 converts to the attribute's type on writing (clamping what does not fit). */
        if (is_int) H5Awrite(a, H5T_NATIVE_LLONG, iv);
        else H5Awrite(a, H5T_NATIVE_DOUBLE, dv);
        H5Aclose(a);
    }
    H5Sclose(sp);
    written *w = &es->attr[ni];
    memset(w, 0, sizeof *w);
    es->str_set[ni] = -1;
    if (a >= 0 && shape == 0 && (t == 0 || t == 4)) {
        w->set = 1;
        w->is_int = t == 0;
        w->i = iv[0];
        w->d = dv[0];
    }
}

static void set_string_attr(hid_t fid, int ni, fz_in *in, edit_state *es)
{
    int si = (int)fz_pick(in, N_STRINGS);
    unsigned kind = fz_pick(in, 3);
    const char *name = NAMES[ni], *s = STRINGS[si];
    if (H5Aexists(fid, name) > 0) H5Adelete(fid, name);
    hid_t t = H5Tcopy(H5T_C_S1);
    hsize_t two = 2;
    hid_t sp = kind == 2 ? H5Screate_simple(1, &two, NULL) : H5Screate(H5S_SCALAR);
    hid_t a = -1;
    if (kind == 1) {
        H5Tset_size(t, H5T_VARIABLE);
        a = H5Acreate2(fid, name, t, sp, H5P_DEFAULT, H5P_DEFAULT);
        if (a >= 0) H5Awrite(a, t, &s);
    } else {
        size_t len = strlen(s) + 1;
        H5Tset_size(t, len);
        a = H5Acreate2(fid, name, t, sp, H5P_DEFAULT, H5P_DEFAULT);
        char *buf = calloc(2, len);
        if (a >= 0 && buf) {
            memcpy(buf, s, len);
            memcpy(buf + len, s, len);
            H5Awrite(a, t, buf);
        }
        free(buf);
    }
    if (a >= 0) H5Aclose(a);
    H5Sclose(sp);
    H5Tclose(t);
    memset(&es->attr[ni], 0, sizeof es->attr[ni]);
    es->str_set[ni] = a >= 0 && kind != 2 ? si : -1;
}

static hid_t tensor_type(unsigned k)
{
    hid_t t;
    switch (k) {
    case 0: return H5Tcopy(H5T_IEEE_F32LE);
    case 1: return H5Tcopy(H5T_IEEE_F64LE);
    case 2: /* float16 */
        t = H5Tcopy(H5T_IEEE_F32LE);
        H5Tset_fields(t, 15, 10, 5, 0, 10);
        H5Tset_size(t, 2);
        H5Tset_ebias(t, 15);
        return t;
    case 3: return H5Tcopy(H5T_STD_I32LE);
    case 4: return H5Tcopy(H5T_STD_U8LE);
    case 5:
        t = H5Tcreate(H5T_COMPOUND, 5);
        H5Tinsert(t, "x", 0, H5T_IEEE_F32LE);
        H5Tinsert(t, "y", 4, H5T_STD_U8LE);
        return t;
    case 6:
        t = H5Tcopy(H5T_C_S1);
        H5Tset_size(t, 8);
        return t;
    default:
        t = H5Tcopy(H5T_C_S1);
        H5Tset_size(t, H5T_VARIABLE);
        return t;
    }
}

/* Replaces group/tensor by a dataset of another shape, type, layout or contents. */
static void replace_tensor(hid_t fid, const char *dname, const vae_tensor *t, fz_in *in)
{
    unsigned shape_k = fz_pick(in, 6), type_k = fz_pick(in, 8), layout = fz_pick(in, 3);
    int nv = 1 + (int)fz_pick(in, 4);
    double vals[4];
    for (int i = 0; i < nv; i++) vals[i] = VALUES[fz_pick(in, N_VALUES)];
    hsize_t dims[5];
    int nd = t->ndim;
    for (int k = 0; k < nd; k++) dims[k] = (hsize_t)t->shape[k];
    switch (shape_k) {
    case 1:
        for (int k = 0; k < nd; k++) dims[k] = (hsize_t)t->shape[nd - 1 - k];
        break;
    case 2: dims[0]++; break;
    case 3: dims[nd++] = 1; break;
    case 4: dims[0] = (hsize_t)1 << 31; break;
    case 5: nd = 0; break;
    default: break;
    }
    H5Ldelete(fid, dname, H5P_DEFAULT);
    hid_t ft = tensor_type(type_k);
    hid_t sp = nd ? H5Screate_simple(nd, dims, NULL) : H5Screate(H5S_SCALAR);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    if (layout && nd) {
        hsize_t chunk[5];
        for (int k = 0; k < nd; k++) chunk[k] = dims[k] > 64 ? 64 : dims[k] ? dims[k] : 1;
        H5Pset_chunk(dcpl, nd, chunk);
        if (layout == 2) H5Pset_fletcher32(dcpl);
    }
    hid_t ds = H5Dcreate2(fid, dname, ft, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    uint64_t n = 1;
    for (int k = 0; k < nd; k++) n *= dims[k];
    if (ds >= 0 && n <= ((uint64_t)1 << 20)) {
        if (type_k <= 4) {
            double *buf = malloc((size_t)n * sizeof(double));
            for (uint64_t i = 0; buf && i < n; i++) buf[i] = vals[i % (uint64_t)nv];
            if (buf) H5Dwrite(ds, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf);
            free(buf);
        } else if (type_k == 7) {
            const char **buf = malloc((size_t)n * sizeof(char *));
            for (uint64_t i = 0; buf && i < n; i++) buf[i] = "0.5";
            if (buf) H5Dwrite(ds, ft, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf);
            free(buf);
        } else {
            size_t ts = H5Tget_size(ft);
            unsigned char *buf = malloc((size_t)n * ts);
            for (size_t i = 0; buf && i < (size_t)n * ts; i++) buf[i] = (unsigned char)(i * 31 + 7);
            if (buf) H5Dwrite(ds, ft, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf);
            free(buf);
        }
    }
    if (ds >= 0) H5Dclose(ds);
    H5Pclose(dcpl);
    H5Sclose(sp);
    H5Tclose(ft);
}

/* Notes where a tensor's first stored chunk (or contiguous data) lies, for one byte to flip. */
static void note_damage(hid_t fid, const char *dname, fz_in *in, edit_state *es)
{
    unsigned k = fz_byte(in) | fz_byte(in) << 8;
    hid_t ds = H5Dopen2(fid, dname, H5P_DEFAULT);
    if (ds < 0) return;
    haddr_t addr = HADDR_UNDEF;
    hsize_t size = 0;
    hid_t dcpl = H5Dget_create_plist(ds);
    if (H5Pget_layout(dcpl) == H5D_CHUNKED) {
        if (H5Dget_chunk_info(ds, H5S_ALL, 0, NULL, NULL, &addr, &size) < 0) addr = HADDR_UNDEF;
    } else {
        addr = H5Dget_offset(ds);
        size = H5Dget_storage_size(ds);
    }
    H5Pclose(dcpl);
    H5Dclose(ds);
    if (addr != HADDR_UNDEF && size > 0) {
        es->flip_addr = addr + k % size;
        es->flip_byte = 1u << (k % 8);
    }
}

/* Decodes and applies the edits to the checkpoint file at path. */
static void apply_edits(const char *path, fz_in *in, edit_state *es)
{
    const vae_model *bm = &g_base[es->b].m;
    hid_t fid = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    if (fid < 0) return;
    for (int e = 0; e < MAX_EDITS && in->n > 0; e++) {
        unsigned op = fz_pick(in, 8);
        if (op <= 2) {
            int ni = (int)fz_pick(in, N_NAMES);
            if (op == 0) {
                H5Adelete(fid, NAMES[ni]);
                memset(&es->attr[ni], 0, sizeof es->attr[ni]);
                es->str_set[ni] = -1;
            } else if (op == 1) {
                set_number_attr(fid, ni, in, es);
            } else {
                set_string_attr(fid, ni, in, es);
            }
            continue;
        }
        if (op == 7) {
            es->file_damage = (int)fz_pick(in, 4);
            es->damage_arg = fz_byte(in);
            continue;
        }
        const char *g = GROUPS[fz_pick(in, 3)];
        int ti = (int)fz_pick(in, (unsigned)bm->n_tensors + 1);
        char dname[VAE_NAME_LEN + 32];
        if (ti == bm->n_tensors) snprintf(dname, sizeof dname, "%s", g);
        else snprintf(dname, sizeof dname, "%s/%s", g, bm->tensors[ti].name);
        switch (op) {
        case 3: H5Ldelete(fid, dname, H5P_DEFAULT); break;
        case 4:
            if (ti < bm->n_tensors) replace_tensor(fid, dname, &bm->tensors[ti], in);
            break;
        case 5: {
            unsigned k = fz_pick(in, 3);
            H5Ldelete(fid, dname, H5P_DEFAULT);
            if (k == 0) {
                hid_t gid = H5Gcreate2(fid, dname, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
                if (gid >= 0) H5Gclose(gid);
            } else if (k == 1) {
                H5Lcreate_soft("/nowhere", fid, dname, H5P_DEFAULT, H5P_DEFAULT);
            } else {
                H5Lcreate_external("missing.h5", "/x", fid, dname, H5P_DEFAULT, H5P_DEFAULT);
            }
            break;
        }
        default:
            if (ti < bm->n_tensors) note_damage(fid, dname, in, es);
            break;
        }
    }
    H5Fclose(fid);
    if (es->flip_addr != HADDR_UNDEF) {
        int fd = open(path, O_RDWR);
        unsigned char c;
        if (fd >= 0 && pread(fd, &c, 1, (off_t)es->flip_addr) == 1) {
            c ^= (unsigned char)es->flip_byte;
            if (pwrite(fd, &c, 1, (off_t)es->flip_addr) != 1) perror("pwrite");
        }
        if (fd >= 0) close(fd);
    }
    struct stat sb;
    switch (es->file_damage) {
    case 0:
        if (stat(path, &sb) == 0 && truncate(path, (off_t)((uint64_t)sb.st_size * es->damage_arg / 256)) != 0)
            perror("truncate");
        break;
    case 1:
        if (truncate(path, 0) != 0) perror("truncate");
        break;
    case 2:
        remove(path);
        if (mkdir(path, 0777) != 0) perror("mkdir");
        break;
    case 3:
        remove(path);
        if (symlink("nowhere.h5", path) != 0) perror("symlink");
        break;
    default: break;
    }
}

/* ---- oracles ---- */

static void check_range(const char *path, const char *what, double v, double lo, double hi)
{
    if (!(v >= lo && v <= hi))
        fz_fail("vae_ckpt_read_meta accepted '%s' with %s = %.17g, outside %g..%g (what mpivae train takes)", path,
                what, v, lo, hi);
}

/* An accepted configuration is one the command line could have made (the ranges of src/cli/train.c). */
static void check_config(const char *path, const vae_config *c, const vae_train_state *st, const edit_state *es)
{
    int mi = name_index("model"), li = name_index("loss");
    if (es->str_set[mi] >= 0 && strcmp(STRINGS[es->str_set[mi]], "mlp") && strcmp(STRINGS[es->str_set[mi]], "conv"))
        fz_fail("vae_ckpt_read_meta accepted '%s' with model '%.40s' (mlp or conv)", path, STRINGS[es->str_set[mi]]);
    if (es->str_set[li] >= 0 && strcmp(STRINGS[es->str_set[li]], "bce") && strcmp(STRINGS[es->str_set[li]], "mse"))
        fz_fail("vae_ckpt_read_meta accepted '%s' with loss '%.40s' (bce or mse)", path, STRINGS[es->str_set[li]]);
    check_range(path, "beta", c->beta, 0, 1e6);
    check_range(path, "cfg.warmup", (double)c->warmup, 0, (double)LONG_MAX);
    check_range(path, "cfg.capacity_max (negative: off)", c->capacity_max, -DBL_MAX, 1e6);
    check_range(path, "cfg.capacity_steps", (double)c->capacity_steps, 0, (double)LONG_MAX);
    check_range(path, "cfg.epochs", c->epochs, 1, 1000000);
    check_range(path, "cfg.batch", c->batch, 1, 1 << 24);
    check_range(path, "cfg.lr", c->lr, 0, 10);
    check_range(path, "cfg.beta1", c->beta1, 0, 0.999999);
    check_range(path, "cfg.beta2", c->beta2, 0, 0.999999999);
    check_range(path, "cfg.adam_eps", c->adam_eps, 0, 1);
    check_range(path, "cfg.log_every", (double)c->log_every, 0, (double)LONG_MAX);
    check_range(path, "cfg.eval_every", (double)c->eval_every, 0, (double)LONG_MAX);
    check_range(path, "cfg.sample_every", (double)c->sample_every, 0, (double)LONG_MAX);
    check_range(path, "cfg.ckpt_every", (double)c->ckpt_every, 0, (double)LONG_MAX);
    check_range(path, "cfg.keep", c->keep, 1, 1000000);
    check_range(path, "cfg.max_skips", c->max_skips, 0, 1000000);
    check_range(path, "cfg.in_memory", c->in_memory, -1, 1);
    check_range(path, "cfg.max_steps", (double)c->max_steps, 0, (double)LONG_MAX);
    check_range(path, "seed", (double)c->seed, 0, (double)LONG_MAX);
    check_range(path, "step", (double)st->step, 0, (double)LONG_MAX);
    check_range(path, "epoch", (double)st->epoch, 0, (double)LONG_MAX);
    check_range(path, "epoch_step", (double)st->epoch_step, 0, (double)LONG_MAX);
    check_range(path, "adam_t", (double)st->adam_t, 0, (double)LONG_MAX);
    check_range(path, "skips", (double)st->skips, 0, (double)LONG_MAX);
    check_range(path, "world_size", st->world_size, 1, (double)INT_MAX);
    check_range(path, "data_rows", (double)st->data_rows, 0, (double)LONG_MAX);
}

/* An accepted scalar int64 or float64 attribute reads back as the value written. */
static void check_read_back(const char *path, const vae_config *c, const vae_train_state *st, const edit_state *es)
{
    struct { const char *name; int is_long; long long l; double d; } f[] = {
        { "step", 1, st->step, 0 }, { "epoch", 1, st->epoch, 0 }, { "epoch_step", 1, st->epoch_step, 0 },
        { "adam_t", 1, st->adam_t, 0 }, { "skips", 1, st->skips, 0 }, { "world_size", 1, st->world_size, 0 },
        { "latent", 1, c->arch.latent, 0 }, { "cfg.warmup", 1, c->warmup, 0 },
        { "cfg.capacity_steps", 1, c->capacity_steps, 0 }, { "cfg.epochs", 1, c->epochs, 0 },
        { "cfg.batch", 1, c->batch, 0 }, { "cfg.log_every", 1, c->log_every, 0 },
        { "cfg.eval_every", 1, c->eval_every, 0 }, { "cfg.sample_every", 1, c->sample_every, 0 },
        { "cfg.ckpt_every", 1, c->ckpt_every, 0 }, { "cfg.keep", 1, c->keep, 0 },
        { "cfg.max_skips", 1, c->max_skips, 0 }, { "cfg.in_memory", 1, c->in_memory, 0 },
        { "cfg.max_steps", 1, c->max_steps, 0 }, { "beta", 0, 0, c->beta }, { "cfg.capacity_max", 0, 0, c->capacity_max },
        { "cfg.lr", 0, 0, c->lr }, { "cfg.beta1", 0, 0, c->beta1 }, { "cfg.beta2", 0, 0, c->beta2 },
        { "cfg.adam_eps", 0, 0, c->adam_eps }, { "seed", 0, 0, (double)c->seed },
        { "format_version", 1, VAE_CKPT_VERSION, 0 }, /* the one version read */
    };
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
        const written *w = &es->attr[name_index(f[i].name)];
        if (!w->set) continue;
        int same;
        if (f[i].is_long) same = w->is_int ? f[i].l == w->i : (double)f[i].l == w->d;
        else same = w->is_int ? f[i].d == (double)w->i : f[i].d == w->d || (isnan(f[i].d) && isnan(w->d));
        if (!same) {
            if (w->is_int)
                fz_fail("vae_ckpt_read_meta accepted '%s' and read %s = %lld as %.17g", path, f[i].name, w->i,
                        f[i].is_long ? (double)f[i].l : f[i].d);
            fz_fail("vae_ckpt_read_meta accepted '%s' and read %s = %.17g as %.17g", path, f[i].name, w->d,
                    f[i].is_long ? (double)f[i].l : f[i].d);
        }
    }
}

static void check_tensors(const char *path, const vae_model *m, int with_optimizer)
{
    for (size_t i = 0; i < m->n_params; i++) {
        int bad = !isfinite(m->params[i]) ? 1
                  : with_optimizer && !isfinite(m->m[i]) ? 2
                  : with_optimizer && !(m->v[i] >= 0.0f && isfinite(m->v[i])) ? 3 : 0;
        if (bad)
            fz_fail("vae_ckpt_read_tensors accepted '%s' with %s[%zu] = %g", path,
                    bad == 1 ? "params" : bad == 2 ? "optimizer/m" : "optimizer/v", i,
                    bad == 1 ? m->params[i] : bad == 2 ? m->m[i] : m->v[i]);
    }
}

/* Floats the model of arch would allocate (its four blocks and the arena), roughly from above. */
static double model_floats(const vae_arch *a, int B)
{
    double D = (double)a->C * a->Hh * a->W, Z = a->latent, P = 0, act = 0;
    int n = a->n_hidden < 1 ? 1 : a->n_hidden > VAE_MAX_HIDDEN ? VAE_MAX_HIDDEN : a->n_hidden;
    if (a->kind == VAE_MODEL_CONV) {
        double cin = a->C, h = a->Hh, w = a->W;
        for (int i = 0; i < n; i++) {
            P += 2 * (16 * cin * a->hidden[i] + a->hidden[i] + cin);
            act += 8 * (cin + a->hidden[i]) * h * w;
            cin = a->hidden[i];
            h /= 2;
            w /= 2;
        }
        double flat = cin * h * w;
        P += 3 * Z * flat + 2 * flat + 3 * Z;
        act += 4 * flat + 8 * Z;
    } else {
        double prev = D;
        for (int i = 0; i < n; i++) {
            P += 2 * (prev * a->hidden[i] + a->hidden[i]);
            act += 4 * a->hidden[i];
            prev = a->hidden[i];
        }
        P += 3 * Z * prev + 3 * Z + 2 * D;
        act += 8 * D + 8 * Z;
    }
    return 4 * P + B * act;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_in in = { data, size };
    edit_state es;
    memset(&es, 0, sizeof es);
    for (int i = 0; i < N_NAMES; i++) es.str_set[i] = -1;
    es.file_damage = -1;
    es.flip_addr = HADDR_UNDEF;
    es.b = (int)fz_pick(&in, N_BASES);
    unsigned name_k = fz_pick(&in, 4);
    int max_batch = 1 + (int)fz_pick(&in, 4);

    char run[512], ckdir[600], path[700];
    snprintf(run, sizeof run, "%s/run", fz_dir);
    snprintf(ckdir, sizeof ckdir, "%s/checkpoints", run);
    fz_rm_tree(run);
    if (mkdir(run, 0777) != 0 || mkdir(ckdir, 0777) != 0) fz_fail("cannot make %s: %s", ckdir, strerror(errno));
    long name_step = name_k == 0 ? BASE_STEP : name_k == 1 ? BASE_STEP + 1 : name_k == 2 ? LONG_MAX : -5;
    if (name_k == 2) snprintf(path, sizeof path, "%s/step-99999999999999999999.h5", ckdir);
    else snprintf(path, sizeof path, "%s/step-%ld.h5", ckdir, name_step);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(g_base[es.b].bytes, 1, g_base[es.b].len, f) != g_base[es.b].len) fz_fail("cannot write %s", path);
    fclose(f);
    hsize_t ids[FZ_N_ID_TYPES];
    fz_count_ids(ids);
    apply_edits(path, &in, &es);
    fz_check_ids(ids, "the harness's edits");
    fz_note("base %d, file %s, max batch %d, damage %d", es.b, path, max_batch, es.file_damage);

    vae_config cfg;
    vae_train_state st;
    vae_model m;
    memset(&m, 0, sizeof m);
    int ok = 0;
    if (vae_ckpt_read_meta(path, &cfg, &st) == 0) {
        check_config(path, &cfg, &st, &es);
        check_read_back(path, &cfg, &st, &es);
        const char *nolimit = getenv("MPIVAE_FUZZ_NO_MODEL_LIMIT");
        double cells = (double)cfg.arch.C * cfg.arch.Hh * cfg.arch.W;
        if (cells <= INT_MAX && model_floats(&cfg.arch, max_batch) > 4 * MODEL_PARAMS_LIMIT &&
            !(nolimit && nolimit[0] == '1')) {
            fz_note("model of about %.3g floats: not made (harness limit)", model_floats(&cfg.arch, max_batch));
            fz_check_ids(ids, "vae_ckpt_read_meta");
            return 0;
        }
        if (vae_model_init(&m, &cfg.arch, max_batch) == 0) {
            if (cells > INT_MAX || (double)m.D != cells)
                fz_fail("vae_model_init accepted '%s' with input shape %dx%dx%d (D = %d)", path, cfg.arch.C,
                        cfg.arch.Hh, cfg.arch.W, m.D);
            if (!vae_ckpt_read_tensors(path, &m, 0)) check_tensors(path, &m, 0);
            if (!vae_ckpt_read_tensors(path, &m, 1)) {
                check_tensors(path, &m, 1);
                /* A name past LONG_MAX is not one find_latest can build again from the step. */
                ok = name_k != 2 && st.step == name_step;
            }
        }
        vae_model_free(&m);
    }
    char found_path[VAE_PATH_LEN + 64];
    int found = vae_ckpt_find_latest(run, found_path, sizeof found_path);
    fz_check_ids(ids, "the checkpoint reader");
    if (found < 0 || (found == 1) != ok)
        fz_fail("vae_ckpt_find_latest on '%s' returned %d, but the file %s", run, found,
                ok ? "verifies" : "does not verify");
    return 0;
}
