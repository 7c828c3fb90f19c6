/*
 * metrics.h: DIR/metrics.h5, extendible 1-D datasets appended while training.
 *
 * /train/{step, epoch} int64 and /train/{loss, recon, kl, beta, lr, grad_norm,
 * samples_per_s, time} float64, one row per optimizer step; /eval/{step,
 * epoch} int64 and /eval/{loss, recon, kl, time} float64, one row per
 * evaluation. Rows are buffered in memory and appended by vae_metrics_flush,
 * which opens the file, extends, writes and closes it, so readers can open
 * the file between flushes.
 */
#ifndef MPIVAE_METRICS_H
#define MPIVAE_METRICS_H

#define VAE_METRICS_TRAIN_FIELDS 10
#define VAE_METRICS_EVAL_FIELDS 6
#define VAE_METRICS_BUF 4096

typedef struct vae_metrics {
    char path[1100];
    int n_train, n_eval;
    double train[VAE_METRICS_BUF][VAE_METRICS_TRAIN_FIELDS];
    double eval[64][VAE_METRICS_EVAL_FIELDS];
} vae_metrics;

/*
 * Creates DIR/metrics.h5 or, when it exists, keeps the rows with step <=
 * keep_upto and drops later ones (rows written after the checkpoint that a
 * resumed run continues from).
 */
int vae_metrics_open(vae_metrics *mt, const char *dir, long keep_upto);

/* Buffers a row: step, epoch, loss, recon, kl, beta, lr, grad_norm, samples_per_s, time. Flushes when full. */
int vae_metrics_add_train(vae_metrics *mt, const double row[VAE_METRICS_TRAIN_FIELDS]);

/* Buffers a row: step, epoch, loss, recon, kl, time. */
int vae_metrics_add_eval(vae_metrics *mt, const double row[VAE_METRICS_EVAL_FIELDS]);

/* Appends the buffered rows to the file. */
int vae_metrics_flush(vae_metrics *mt);

#endif
