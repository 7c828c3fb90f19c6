/*
 * tools.h: what runs on a trained model between steps or from a checkpoint:
 * sample grids, reconstructions, and the run directory's sample files.
 */
#ifndef MPIVAE_TOOLS_H
#define MPIVAE_TOOLS_H

#include "mpivae/dataset.h"
#include "mpivae/model.h"

#include <stdint.h>

/*
 * Decodes n prior samples into images[n, D] (keyed by seed, call), with the
 * temperature T: z ~ N(0, T^2 I), or for a hierarchy z_k = mu_p + T sigma_p eps
 * in each group. temps, when not NULL, gives one temperature per latent group
 * instead (the noise of group k scaled by temps[k]; temperature is then 1).
 */
void vae_sample_prior_groups(vae_model *m, uint64_t seed, uint64_t call, const float *temps, int n, float *images);

/* Decodes n prior samples z ~ N(0, T^2 I) (keyed by seed, call) into images[n, D]. */
void vae_sample_prior(vae_model *m, uint64_t seed, uint64_t call, float temperature, int n,
                      float *images);

/*
 * Samples first..first+n of the same sequence into images[n, D]: sample j's
 * noise is keyed by (seed, call, j), so a range split over ranks gives the
 * images vae_sample_prior gives in one piece.
 */
void vae_sample_prior_from(vae_model *m, uint64_t seed, uint64_t call, int64_t first, float temperature, int n,
                           float *images);

/*
 * Reconstructs rows first..first+n of d with z = mu: images[2n, D] holds, per
 * group of `cols`, a row of originals then a row of reconstructions (the grid
 * layout of the PNG). Returns 0 or a negative status.
 */
int vae_reconstruct_grid(vae_model *m, vae_data *d, int64_t first, int n, int cols, float *images);

/*
 * Writes DIR/samples.h5 datasets /prior/step-<N> and /recon/step-<N>
 * [n, C, H, W] and the PNGs DIR/samples/prior-step-<N>.png and
 * DIR/samples/recon-step-<N>.png (rank 0 only). d may be NULL (no
 * reconstructions); a family that does not serve sample (reconstruct) gets
 * no prior (reconstruction) grids.
 */
int vae_write_run_samples(vae_model *m, vae_data *d, const char *dir, long step, uint64_t seed);

/* Writes images[n, C, H, W] as a float32 dataset `dset` of HDF5 file `path` (created or appended to). */
int vae_h5_write_images(const char *path, const char *dset, const float *images, int n, int C,
                        int Hh, int W);


#endif
