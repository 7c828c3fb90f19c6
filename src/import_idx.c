/*
 * import_idx.c: `mpivae data fashion-mnist` (importer.h): reads the four IDX
 * files of Fashion-MNIST (gzip or plain), checks them, and writes them as
 * /train and /test images and labels of one HDF5 file (helpers in h5util.h).
 */
#define _POSIX_C_SOURCE 200809L

#include "mpivae/importer.h"
#include "mpivae/status.h"
#include "h5util.h"

#include <errno.h>
#include <hdf5.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#define IDX_MAGIC_IMAGES 0x00000803u
#define IDX_MAGIC_LABELS 0x00000801u

/* Sanity limits on IDX headers, so a corrupt header cannot ask for terabytes. */
#define IDX_MAX_COUNT 100000000u
#define IDX_MAX_SIDE 4096u

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

    hid_t d = vae__create_u8_dataset(file, fname, iname, 3, idims, VAE__IMAGE_CHUNK_ROWS);
    if (d < 0) return (int)d;
    rc = vae__write_u8_rows(d, fname, iname, 3, idims, 0, img->n, img->data);
    if (H5Dclose(d) < 0 && rc == 0)
        rc = vae_error(VAE_EIO, "cannot close dataset '%s' in '%s'", iname, fname);
    if (rc != 0) return rc;

    d = vae__create_u8_dataset(file, fname, lname, 1, ldims, VAE__LABEL_CHUNK_ROWS);
    if (d < 0) return (int)d;
    rc = vae__write_u8_rows(d, fname, lname, 1, ldims, 0, lab->n, lab->data);
    if (H5Dclose(d) < 0 && rc == 0)
        rc = vae_error(VAE_EIO, "cannot close dataset '%s' in '%s'", lname, fname);
    return rc;
}

int vae_import_fashion_mnist(const char *src_dir, const char *out_path)
{
    if (!src_dir || !out_path)
        return vae_error(VAE_EINVAL, "fashion-mnist import needs a source folder and an output");

    struct vae__h5_quiet q;
    struct vae__h5_out o;
    struct idx_data tr_img, tr_lab, te_img, te_lab;
    int rc = 0;
    memset(&tr_img, 0, sizeof tr_img);
    memset(&tr_lab, 0, sizeof tr_lab);
    memset(&te_img, 0, sizeof te_img);
    memset(&te_lab, 0, sizeof te_lab);
    vae__h5_out_init(&o, out_path);
    vae__h5_quiet_begin(&q);

    if ((rc = read_split(src_dir, "train", &tr_img, &tr_lab)) != 0) goto out;
    if ((rc = read_split(src_dir, "t10k", &te_img, &te_lab)) != 0) goto out;
    if (tr_img.rows != te_img.rows || tr_img.cols != te_img.cols) {
        rc = vae_error(VAE_EDATA,
                       "train images in '%s' are %u x %u but test images are %u x %u",
                       src_dir, tr_img.rows, tr_img.cols, te_img.rows, te_img.cols);
        goto out;
    }
    if ((rc = vae__h5_out_create(&o)) != 0) goto out;
    if ((rc = write_idx_split(o.file, o.tmp, "train", &tr_img, &tr_lab)) != 0) goto out;
    rc = write_idx_split(o.file, o.tmp, "test", &te_img, &te_lab);

out:
    rc = vae__h5_out_finish(&o, rc);
    free(tr_img.data);
    free(tr_lab.data);
    free(te_img.data);
    free(te_lab.data);
    vae__h5_quiet_end(&q);
    return rc;
}
