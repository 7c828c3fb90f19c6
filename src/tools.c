/*
 * tools.c: prior samples, reconstruction grids, and the sample files of a
 * run directory (see tools.h).
 */
#define _POSIX_C_SOURCE 200809L
#include "mpivae/tools.h"

#include "internal.h"
#include "mpivae/image.h"
#include "mpivae/ops.h"
#include "mpivae/rng.h"
#include "mpivae/status.h"

#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

void vae_sample_prior_groups(vae_model *m, uint64_t seed, uint64_t call, const float *temps, int n, float *images)
{
    const int K = m->prior_dim, D = m->D;
    for (int lo = 0; lo < n; lo += m->max_batch) {
        int b = n - lo < m->max_batch ? n - lo : m->max_batch;
        for (int i = 0; i < b; i++) {
            float *e = m->eps + (size_t)i * K;
            vae_rng_normal(seed, VAE_RNG_PRIOR, call, (uint64_t)(lo + i), e, K);
            for (int g = 0; g < m->n_latents; g++)
                for (int j = 0; j < m->latents[g].dim; j++) e[m->latents[g].offset + j] *= temps[g];
        }
        vae_model_generate(m, m->eps, 1.0f, b, images + (size_t)lo * D);
    }
}

void vae_sample_prior_from(vae_model *m, uint64_t seed, uint64_t call, int64_t first, float temperature, int n,
                           float *images)
{
    const int K = m->prior_dim, D = m->D;
    for (int lo = 0; lo < n; lo += m->max_batch) {
        int b = n - lo < m->max_batch ? n - lo : m->max_batch;
        for (int i = 0; i < b; i++)
            vae_rng_normal(seed, VAE_RNG_PRIOR, call, (uint64_t)(first + lo + i), m->eps + (size_t)i * K, K);
        vae_model_generate(m, m->eps, temperature, b, images + (size_t)lo * D);
    }
}

void vae_sample_prior(vae_model *m, uint64_t seed, uint64_t call, float temperature, int n,
                      float *images)
{
    vae_sample_prior_from(m, seed, call, 0, temperature, n, images);
}

int vae_reconstruct_grid(vae_model *m, vae_data *d, int64_t first, int n, int cols, float *images)
{
    const int D = m->D, Z = m->Z;
    int64_t idx[1];
    float *z = malloc((size_t)Z * sizeof(float));
    if (!z) return vae_error(VAE_ENOMEM, "cannot allocate the latent values of a reconstruction (%d)", Z);
    for (int i = 0; i < n; i++) {
        /* Position in the grid: group g of `cols` images, originals row then reconstructions row. */
        int g = i / cols, c = i % cols;
        float *orig = images + ((size_t)g * 2 * cols + c) * D;
        float *rec = images + ((size_t)g * 2 * cols + cols + c) * D;
        idx[0] = (first + i) % d->N;
        int rc = vae_data_rows(d, idx, 1, vae_model_input(m));
        if (rc) {
            free(z);
            return rc;
        }
        memcpy(orig, vae_model_input(m), (size_t)D * sizeof(float));
        vae_model_encode(m, 1, z, NULL);
        vae_model_decode(m, z, 1, rec);
    }
    free(z);
    return VAE_OK;
}

int vae_h5_write_images(const char *path, const char *dset, const float *images, int n, int C,
                        int Hh, int W)
{
    struct stat sb;
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    hid_t fid = stat(path, &sb) == 0 ? H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT)
                                     : H5Fcreate(path, H5F_ACC_EXCL, H5P_DEFAULT, H5P_DEFAULT);
    if (fid < 0) return vae_error(VAE_EIO, "cannot open or create '%s'", path);
    int rc = VAE_OK;
    if (H5Lexists(fid, dset, H5P_DEFAULT) > 0) H5Ldelete(fid, dset, H5P_DEFAULT);
    hsize_t dims[4] = { (hsize_t)n, (hsize_t)C, (hsize_t)Hh, (hsize_t)W };
    hid_t sp = H5Screate_simple(4, dims, NULL);
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    H5Pset_create_intermediate_group(lcpl, 1);
    hid_t ds = H5Dcreate2(fid, dset, H5T_IEEE_F32LE, sp, lcpl, H5P_DEFAULT, H5P_DEFAULT);
    if (ds < 0 || H5Dwrite(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, images) < 0)
        rc = vae_error(VAE_EIO, "cannot write dataset '%s' of '%s'", dset, path);
    if (ds >= 0) H5Dclose(ds);
    H5Pclose(lcpl);
    H5Sclose(sp);
    if (H5Fclose(fid) < 0 && !rc) rc = vae_error(VAE_EIO, "cannot close '%s'", path);
    return rc;
}

int vae_write_run_samples(vae_model *m, vae_data *d, const char *dir, long step, uint64_t seed)
{
    const int n = 64, cols = 8, nrec = 32;
    const vae_arch *a = &m->arch;
    char h5[1200], png[1200], sdir[1100], name[64];
    if (!(m->fam->tools & (VAE_TOOL_SAMPLE | VAE_TOOL_RECONSTRUCT))) return VAE_OK; /* a classifier: no images */
    snprintf(sdir, sizeof sdir, "%s/samples", dir);
    int rc = vae__mkdir_p(sdir);
    if (rc) return rc;
    float *img = malloc((size_t)n * m->D * sizeof(float));
    if (!img) return vae_error(VAE_ENOMEM, "cannot allocate sample images");
    snprintf(h5, sizeof h5, "%s/samples.h5", dir);
    /* The same prior draws at every step, so the grids show the model changing. */
    if (m->fam->tools & VAE_TOOL_SAMPLE) {
        vae_sample_prior(m, seed, 0, 1.0f, n, img);
        snprintf(name, sizeof name, "/prior/step-%ld", step);
        rc = vae_h5_write_images(h5, name, img, n, a->C, a->Hh, a->W);
        snprintf(png, sizeof png, "%s/prior-step-%06ld.png", sdir, step);
        if (!rc) rc = vae_image_write_grid(png, img, n, a->C, a->Hh, a->W, cols, 2);
    }
    if (!rc && d && (m->fam->tools & VAE_TOOL_RECONSTRUCT)) {
        rc = vae_reconstruct_grid(m, d, 0, nrec, cols, img);
        snprintf(name, sizeof name, "/recon/step-%ld", step);
        if (!rc) rc = vae_h5_write_images(h5, name, img, 2 * nrec, a->C, a->Hh, a->W);
        snprintf(png, sizeof png, "%s/recon-step-%06ld.png", sdir, step);
        if (!rc) rc = vae_image_write_grid(png, img, 2 * nrec, a->C, a->Hh, a->W, cols, 2);
    }
    free(img);
    return rc;
}
