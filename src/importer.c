/*
 * importer.c: the `mpivae data` tools (importer.h): the Fashion-MNIST IDX
 * importer, the synthetic image set and the HDF5 file description.
 *
 * Every function here switches off HDF5's automatic error printing for its
 * own duration (restoring the caller's handler on return) and reports each
 * failure once through vae_error, naming the file and the dataset. Output
 * files are written to "<out>.tmp", closed, synced and renamed, so a reader
 * never sees a half-written file; on failure the .tmp file is removed.
 */
#define _POSIX_C_SOURCE 200809L

#include "mpivae/importer.h"
#include "mpivae/rng.h"
#include "mpivae/dataset.h"
#include "mpivae/status.h"

#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#define IDX_MAGIC_IMAGES 0x00000803u
#define IDX_MAGIC_LABELS 0x00000801u

/* Sanity limits on IDX headers, so a corrupt header cannot ask for terabytes. */
#define IDX_MAX_COUNT 100000000u
#define IDX_MAX_SIDE 4096u

/* Rows per chunk of an image dataset; label datasets use up to 4096. */
#define IMAGE_CHUNK_ROWS 1024
#define LABEL_CHUNK_ROWS 4096
#define DEFLATE_LEVEL 1

/* ---------------------------------------------------------------------- */
/* Shared helpers                                                          */
/* ---------------------------------------------------------------------- */

/* Saves the caller's HDF5 error handler and switches automatic printing off. */
struct h5_quiet {
    H5E_auto2_t func;
    void *data;
};

static void h5_quiet_begin(struct h5_quiet *q)
{
    q->func = NULL;
    q->data = NULL;
    H5Eget_auto2(H5E_DEFAULT, &q->func, &q->data);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
}

static void h5_quiet_end(const struct h5_quiet *q) { H5Eset_auto2(H5E_DEFAULT, q->func, q->data); }

/* Returns a malloc'd "<path><suffix>", or NULL. */
static char *str_concat(const char *path, const char *suffix)
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

/*
 * Creates the uint8 dataset `name` (e.g. "/train/images") of the given rank
 * and dims in file, chunked by chunk_rows rows (clamped to dims[0]) with
 * deflate, and without object timestamps so that the same data gives the
 * same bytes. Returns the dataset id or a negative status after reporting.
 */
static hid_t create_u8_dataset(hid_t file, const char *fname, const char *name, int rank,
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

/* Writes rows [row0, row0 + nrows) of a dataset of the given rank and dims. */
static int write_u8_rows(hid_t dset, const char *fname, const char *name, int rank,
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

/* ---------------------------------------------------------------------- */
/* Fashion-MNIST                                                           */
/* ---------------------------------------------------------------------- */

/* One IDX file in memory. */
struct idx_data {
    uint32_t n, rows, cols; /* rows = cols = 1 for a label file */
    uint8_t *data;          /* (n, rows, cols) */
};

/*
 * Finds "<dir>/<name>.gz", or "<dir>/<name>" when only the uncompressed file
 * exists. Returns a malloc'd path (the .gz one when neither exists, so that
 * the error names it) or NULL when out of memory.
 */
static char *idx_find(const char *dir, const char *name)
{
    size_t len = strlen(dir) + strlen(name) + 5;
    char *p = malloc(len);
    if (!p) return NULL;
    snprintf(p, len, "%s/%s.gz", dir, name);
    if (access(p, F_OK) == 0) return p;
    snprintf(p, len, "%s/%s", dir, name);
    if (access(p, F_OK) == 0) return p;
    snprintf(p, len, "%s/%s.gz", dir, name);
    return p;
}

/* Reads exactly len bytes; returns the number read or -1 on a zlib error. */
static long long gz_read_all(gzFile gz, uint8_t *buf, size_t len)
{
    size_t got = 0;
    while (got < len) {
        size_t want = len - got;
        if (want > (1u << 30)) want = 1u << 30;
        int r = gzread(gz, buf + got, (unsigned)want);
        if (r < 0) return -1;
        if (r == 0) break;
        got += (size_t)r;
    }
    return (long long)got;
}

/*
 * zlib's message for the last error on gz, without the "<path>: " that zlib
 * puts in front of it (our messages name the file already).
 */
static const char *gz_message(gzFile gz, const char *path, int *zerr)
{
    const char *msg = gzerror(gz, zerr);
    size_t len = strlen(path);
    if (*zerr == Z_ERRNO) return strerror(errno);
    if (strncmp(msg, path, len) == 0 && msg[len] == ':' && msg[len + 1] == ' ') msg += len + 2;
    return msg;
}

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/*
 * Reads an IDX file (gzip or plain) with the given magic: 0x803 (images,
 * dims n, rows, cols) or 0x801 (labels, dim n). Rejects a bad magic, absurd
 * dims, a truncated file and trailing bytes, naming the file.
 */
static int idx_read(const char *path, uint32_t magic, struct idx_data *out)
{
    memset(out, 0, sizeof *out);
    int ndims = magic == IDX_MAGIC_IMAGES ? 3 : 1;
    uint8_t hdr[16];
    size_t hlen = 4 + 4 * (size_t)ndims;
    int rc = 0;
    const char *zmsg;
    int zerr;

    errno = 0;
    gzFile gz = gzopen(path, "rb");
    if (!gz)
        return vae_error(VAE_EIO, "cannot open '%s': %s", path,
                         errno ? strerror(errno) : "out of memory");

    long long got = gz_read_all(gz, hdr, hlen);
    if (got < 0) goto zfail;
    if (got < 4) {
        rc = vae_error(VAE_EDATA, "'%s' is truncated: %lld bytes, too short for an IDX header",
                       path, got);
        goto out;
    }
    if (be32(hdr) != magic) {
        rc = vae_error(VAE_EDATA, "'%s' has IDX magic 0x%08x, expected 0x%08x (%s)", path,
                       be32(hdr), magic, magic == IDX_MAGIC_IMAGES ? "uint8 images, 3 dims"
                                                                   : "uint8 labels, 1 dim");
        goto out;
    }
    if ((size_t)got < hlen) {
        rc = vae_error(VAE_EDATA, "'%s' is truncated: %lld bytes, the IDX header needs %zu",
                       path, got, hlen);
        goto out;
    }
    out->n = be32(hdr + 4);
    out->rows = ndims == 3 ? be32(hdr + 8) : 1;
    out->cols = ndims == 3 ? be32(hdr + 12) : 1;
    if (out->n < 1 || out->n > IDX_MAX_COUNT || out->rows < 1 || out->rows > IDX_MAX_SIDE ||
        out->cols < 1 || out->cols > IDX_MAX_SIDE) {
        rc = vae_error(VAE_EDATA, "'%s' has implausible IDX dimensions %u x %u x %u", path,
                       out->n, out->rows, out->cols);
        goto out;
    }

    size_t len = (size_t)out->n * out->rows * out->cols;
    out->data = malloc(len);
    if (!out->data) {
        rc = vae_error(VAE_ENOMEM, "cannot read '%s': out of memory for %zu bytes", path, len);
        goto out;
    }
    got = gz_read_all(gz, out->data, len);
    if (got < 0) goto zfail;
    if ((size_t)got < len) {
        zmsg = gz_message(gz, path, &zerr);
        rc = vae_error(VAE_EDATA,
                       "'%s' is truncated: header says %u items (%zu bytes of data), "
                       "found %lld bytes%s%s",
                       path, out->n, len, got, zerr ? ": " : "", zerr ? zmsg : "");
        goto out;
    }
    uint8_t extra;
    got = gz_read_all(gz, &extra, 1);
    if (got < 0) goto zfail;
    if (got > 0) {
        rc = vae_error(VAE_EDATA, "'%s' has trailing data after the %u items its header declares",
                       path, out->n);
        goto out;
    }
    goto out;

zfail:
    zmsg = gz_message(gz, path, &zerr);
    rc = vae_error(zerr == Z_DATA_ERROR ? VAE_EDATA : VAE_EIO, "cannot read '%s': %s", path,
                   zmsg);
out:
    gzclose(gz);
    if (rc != 0) {
        free(out->data);
        out->data = NULL;
    }
    return rc;
}

/* Reads one split's images and labels and checks that they agree. */
static int read_split(const char *src_dir, const char *prefix, struct idx_data *img,
                      struct idx_data *lab)
{
    char name[64];
    char *ipath = NULL, *lpath = NULL;
    int rc = 0;
    memset(img, 0, sizeof *img);
    memset(lab, 0, sizeof *lab);

    snprintf(name, sizeof name, "%s-images-idx3-ubyte", prefix);
    ipath = idx_find(src_dir, name);
    snprintf(name, sizeof name, "%s-labels-idx1-ubyte", prefix);
    lpath = idx_find(src_dir, name);
    if (!ipath || !lpath) {
        rc = vae_error(VAE_ENOMEM, "cannot import from '%s': out of memory", src_dir);
        goto out;
    }
    if ((rc = idx_read(ipath, IDX_MAGIC_IMAGES, img)) != 0) goto out;
    if ((rc = idx_read(lpath, IDX_MAGIC_LABELS, lab)) != 0) goto out;
    if (img->n != lab->n) {
        rc = vae_error(VAE_EDATA, "'%s' has %u images but '%s' has %u labels", ipath, img->n,
                       lpath, lab->n);
        goto out;
    }
    for (uint32_t i = 0; i < lab->n; i++)
        if (lab->data[i] > 9) {
            rc = vae_error(VAE_EDATA, "'%s': label %u at index %u is out of range 0..9", lpath,
                           lab->data[i], i);
            goto out;
        }

out:
    if (rc != 0) {
        free(img->data);
        free(lab->data);
        img->data = lab->data = NULL;
    }
    free(ipath);
    free(lpath);
    return rc;
}

/* Writes /<split>/images [n, rows, cols] and /<split>/labels [n]. */
static int write_idx_split(hid_t file, const char *fname, const char *split,
                           const struct idx_data *img, const struct idx_data *lab)
{
    char iname[32], lname[32];
    snprintf(iname, sizeof iname, "/%s/images", split);
    snprintf(lname, sizeof lname, "/%s/labels", split);
    hsize_t idims[3] = { img->n, img->rows, img->cols }, ldims[1] = { lab->n };
    int rc;

    hid_t d = create_u8_dataset(file, fname, iname, 3, idims, IMAGE_CHUNK_ROWS);
    if (d < 0) return (int)d;
    rc = write_u8_rows(d, fname, iname, 3, idims, 0, img->n, img->data);
    if (H5Dclose(d) < 0 && rc == 0)
        rc = vae_error(VAE_EIO, "cannot close dataset '%s' in '%s'", iname, fname);
    if (rc != 0) return rc;

    d = create_u8_dataset(file, fname, lname, 1, ldims, LABEL_CHUNK_ROWS);
    if (d < 0) return (int)d;
    rc = write_u8_rows(d, fname, lname, 1, ldims, 0, lab->n, lab->data);
    if (H5Dclose(d) < 0 && rc == 0)
        rc = vae_error(VAE_EIO, "cannot close dataset '%s' in '%s'", lname, fname);
    return rc;
}

int vae_import_fashion_mnist(const char *src_dir, const char *out_path)
{
    if (!src_dir || !out_path)
        return vae_error(VAE_EINVAL, "fashion-mnist import needs a source folder and an output");

    struct h5_quiet q;
    struct idx_data tr_img, tr_lab, te_img, te_lab;
    char *tmp = NULL;
    hid_t file = -1;
    int rc = 0;
    memset(&tr_img, 0, sizeof tr_img);
    memset(&tr_lab, 0, sizeof tr_lab);
    memset(&te_img, 0, sizeof te_img);
    memset(&te_lab, 0, sizeof te_lab);
    h5_quiet_begin(&q);

    if ((rc = read_split(src_dir, "train", &tr_img, &tr_lab)) != 0) goto out;
    if ((rc = read_split(src_dir, "t10k", &te_img, &te_lab)) != 0) goto out;
    if (tr_img.rows != te_img.rows || tr_img.cols != te_img.cols) {
        rc = vae_error(VAE_EDATA,
                       "train images in '%s' are %u x %u but test images are %u x %u",
                       src_dir, tr_img.rows, tr_img.cols, te_img.rows, te_img.cols);
        goto out;
    }

    tmp = str_concat(out_path, ".tmp");
    if (!tmp) {
        rc = vae_error(VAE_ENOMEM, "cannot write '%s': out of memory", out_path);
        goto out;
    }
    errno = 0;
    file = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (file < 0) {
        rc = vae_error(VAE_EIO, "cannot create HDF5 file '%s'%s%s", tmp, errno ? ": " : "",
                       errno ? strerror(errno) : "");
        goto out;
    }
    if ((rc = create_split_groups(file, tmp)) != 0) goto out;
    if ((rc = write_idx_split(file, tmp, "train", &tr_img, &tr_lab)) != 0) goto out;
    if ((rc = write_idx_split(file, tmp, "test", &te_img, &te_lab)) != 0) goto out;
    {
        hid_t f = file;
        file = -1;
        if (H5Fclose(f) < 0) {
            rc = vae_error(VAE_EIO, "cannot close HDF5 file '%s'", tmp);
            goto out;
        }
    }
    rc = sync_and_rename(tmp, out_path);

out:
    if (file >= 0) H5Fclose(file);
    if (rc != 0 && tmp) remove(tmp);
    free(tmp);
    free(tr_img.data);
    free(tr_lab.data);
    free(te_img.data);
    free(te_lab.data);
    h5_quiet_end(&q);
    return rc;
}

/* ---------------------------------------------------------------------- */
/* Synthetic images                                                        */
/* ---------------------------------------------------------------------- */

/*
 * Per-class colour for C == 3. The components of every colour add up to 1.6,
 * so the colour alone does not change an image's mean brightness.
 */
static const float synth_colour[10][3] = {
    { 1.0f, 0.3f, 0.3f }, { 0.3f, 1.0f, 0.3f }, { 0.3f, 0.3f, 1.0f }, { 1.0f, 0.6f, 0.0f },
    { 1.0f, 0.0f, 0.6f }, { 0.0f, 1.0f, 0.6f }, { 0.6f, 1.0f, 0.0f }, { 0.6f, 0.0f, 1.0f },
    { 0.0f, 0.6f, 1.0f }, { 0.8f, 0.8f, 0.0f },
};

/*
 * Whether pixel offset (dx, dy) from the shape's centre is inside shape k.
 * R is the shape's half-size and t the half-thickness of strokes, both in
 * pixels and scaled with the image so 8x8 and 28x28 both work.
 */
static int synth_inside(int k, float dx, float dy, float R, float t)
{
    float ax = fabsf(dx), ay = fabsf(dy);
    float r = sqrtf(dx * dx + dy * dy);
    switch (k) {
    case 0: return ax <= R && ay <= 0.6f * R;                           /* filled rectangle */
    case 1: return fabsf(r - R) <= t;                                   /* ring */
    case 2: return ay <= t && ax <= R;                                  /* horizontal bar */
    case 3: return ax <= t && ay <= R;                                  /* vertical bar */
    case 4: return fabsf(dx - dy) <= 2.0f * t && ax <= R && ay <= R;    /* diagonal */
    case 5: return (ax <= t && ay <= R) || (ay <= t && ax <= R);        /* cross */
    case 6: return (fabsf(dx - dy) <= 1.5f * t || fabsf(dx + dy) <= 1.5f * t) && ax <= R &&
                   ay <= R;                                             /* X */
    case 7: return r <= 0.6f * R;                                       /* small disc */
    case 8: return dy >= -R && dy <= R && ax <= 0.5f * (dy + R) + 0.5f; /* triangle */
    default: return ax <= R && ay <= R && ((dx < 0) != (dy < 0));       /* checker */
    }
}

/*
 * Draws image i of split (0 train, 1 test) with label k into img (C, Hh, W).
 * rnd holds 4 + C*Hh*W uniforms keyed by (seed, VAE_RNG_SYNTH, split, i):
 * rnd[0..1] the jitter, rnd[2] the brightness, the rest the pixel noise.
 */
static void synth_draw(uint8_t *img, int k, int C, int Hh, int W, const float *rnd)
{
    int s = Hh < W ? Hh : W;
    int jmax = s / 8 < 2 ? s / 8 : 2; /* +-2 pixels, less on images under 16 pixels */
    if (jmax < 1) jmax = 1;
    int jx = (int)(rnd[0] * (2 * jmax + 1)) - jmax;
    int jy = (int)(rnd[1] * (2 * jmax + 1)) - jmax;
    float bright = 0.8f + 0.2f * rnd[2];
    float R = 0.35f * (float)s, t = 0.08f * (float)s;
    if (t < 0.6f) t = 0.6f;
    float cx = 0.5f * (float)(W - 1) + (float)jx, cy = 0.5f * (float)(Hh - 1) + (float)jy;
    const float *noise = rnd + 4;
    size_t plane = (size_t)Hh * (size_t)W;

    for (int y = 0; y < Hh; y++)
        for (int x = 0; x < W; x++) {
            int in = synth_inside(k, (float)x - cx, (float)y - cy, R, t);
            for (int c = 0; c < C; c++) {
                float col = C == 3 ? synth_colour[k][c] : 1.0f;
                size_t j = (size_t)c * plane + (size_t)y * (size_t)W + (size_t)x;
                /* Foreground 204..255 times the class colour, uniform noise of +-16
                 * levels; clamping makes both ends of 0..255 occur. */
                float v = (in ? 255.0f * bright * col : 0.0f) + 32.0f * (noise[j] - 0.5f);
                img[j] = (uint8_t)(v <= 0.0f ? 0 : v >= 255.0f ? 255 : lrintf(v));
            }
        }
}

/* Writes /<split>/images [n, C, Hh, W] and /<split>/labels [n], in blocks of rows. */
static int synth_split(hid_t file, const char *fname, int split, int n, int C, int Hh, int W,
                       int classes, uint64_t seed)
{
    const char *sname = split == 0 ? "train" : "test";
    char iname[32], lname[32];
    snprintf(iname, sizeof iname, "/%s/images", sname);
    snprintf(lname, sizeof lname, "/%s/labels", sname);
    hsize_t idims[4] = { (hsize_t)n, (hsize_t)C, (hsize_t)Hh, (hsize_t)W };
    hsize_t ldims[1] = { (hsize_t)n };
    size_t D = (size_t)C * (size_t)Hh * (size_t)W;
    const int block = IMAGE_CHUNK_ROWS;
    uint8_t *imgs = malloc((size_t)block * D); /* (block, C, Hh, W) */
    uint8_t *labels = malloc((size_t)n);       /* (n) */
    float *rnd = malloc((4 + D) * sizeof *rnd);
    hid_t di = -1, dl = -1;
    int rc = 0;

    if (!imgs || !labels || !rnd) {
        rc = vae_error(VAE_ENOMEM, "cannot write '%s': out of memory", fname);
        goto out;
    }
    di = create_u8_dataset(file, fname, iname, 4, idims, IMAGE_CHUNK_ROWS);
    if (di < 0) {
        rc = (int)di;
        goto out;
    }
    /* Labels cycle through the classes, so every class is equally common. */
    for (int i = 0; i < n; i++) labels[i] = (uint8_t)(i % classes);
    for (int i0 = 0; i0 < n; i0 += block) {
        int nb = n - i0 < block ? n - i0 : block;
        for (int b = 0; b < nb; b++) {
            vae_rng_uniform(seed, VAE_RNG_SYNTH, (uint64_t)split, (uint64_t)(i0 + b), rnd,
                            (int64_t)(4 + D));
            synth_draw(imgs + (size_t)b * D, labels[i0 + b], C, Hh, W, rnd);
        }
        rc = write_u8_rows(di, fname, iname, 4, idims, (hsize_t)i0, (hsize_t)nb, imgs);
        if (rc != 0) goto out;
    }
    dl = create_u8_dataset(file, fname, lname, 1, ldims, LABEL_CHUNK_ROWS);
    if (dl < 0) {
        rc = (int)dl;
        goto out;
    }
    rc = write_u8_rows(dl, fname, lname, 1, ldims, 0, (hsize_t)n, labels);

out:
    if (di >= 0 && H5Dclose(di) < 0 && rc == 0)
        rc = vae_error(VAE_EIO, "cannot close dataset '%s' in '%s'", iname, fname);
    if (dl >= 0 && H5Dclose(dl) < 0 && rc == 0)
        rc = vae_error(VAE_EIO, "cannot close dataset '%s' in '%s'", lname, fname);
    free(imgs);
    free(labels);
    free(rnd);
    return rc;
}

int vae_import_synth(const char *out_path, int n_train, int n_test, int C, int Hh, int W,
                     int classes, uint64_t seed)
{
    if (!out_path || n_train < 1 || n_test < 1 || C < 1 || C > 64 || Hh < 4 || W < 4 ||
        Hh > 4096 || W > 4096 || classes < 1 || classes > 10)
        return vae_error(VAE_EINVAL,
                         "cannot write synthetic set '%s': bad arguments (n_train %d, n_test "
                         "%d, C %d, Hh %d, W %d, classes %d; need n >= 1, 4 <= Hh, W <= "
                         "4096, C <= 64, 1 <= classes <= 10)",
                         out_path ? out_path : "(null)", n_train, n_test, C, Hh, W, classes);

    struct h5_quiet q;
    char *tmp = str_concat(out_path, ".tmp");
    hid_t file = -1;
    int rc = 0;
    h5_quiet_begin(&q);
    if (!tmp) {
        rc = vae_error(VAE_ENOMEM, "cannot write '%s': out of memory", out_path);
        goto out;
    }
    errno = 0;
    file = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (file < 0) {
        rc = vae_error(VAE_EIO, "cannot create HDF5 file '%s'%s%s", tmp, errno ? ": " : "",
                       errno ? strerror(errno) : "");
        goto out;
    }
    if ((rc = create_split_groups(file, tmp)) != 0) goto out;
    if ((rc = synth_split(file, tmp, 0, n_train, C, Hh, W, classes, seed)) != 0) goto out;
    if ((rc = synth_split(file, tmp, 1, n_test, C, Hh, W, classes, seed)) != 0) goto out;
    {
        hid_t f = file;
        file = -1;
        if (H5Fclose(f) < 0) {
            rc = vae_error(VAE_EIO, "cannot close HDF5 file '%s'", tmp);
            goto out;
        }
    }
    rc = sync_and_rename(tmp, out_path);

out:
    if (file >= 0) H5Fclose(file);
    if (rc != 0 && tmp) remove(tmp);
    free(tmp);
    h5_quiet_end(&q);
    return rc;
}

/* ---------------------------------------------------------------------- */
/* File description                                                        */
/* ---------------------------------------------------------------------- */

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
    char *s = str_concat("/", name);
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

    struct h5_quiet q;
    struct path_list pl = { NULL, 0, 0, 0 };
    struct stat st;
    hid_t file = -1;
    int rc = 0;
    h5_quiet_begin(&q);

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
    h5_quiet_end(&q);
    return rc;
}
