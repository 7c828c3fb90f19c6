/*
 * report.h: RUN_DIR/report.html, one self-contained page per run (or one
 * page overlaying several runs), and the metrics as CSV.
 *
 * The page needs nothing but itself: charts are inline SVG written here,
 * images are PNG files of the run directory embedded as data: URIs, and the
 * one script (the grid sliders) is inline. It makes no network request.
 *
 * What the page holds, and the DOM that tests read (tests/report/):
 *
 *   <meta http-equiv="refresh">  only on a page written by a running
 *                                 training (refresh_s > 0)
 *   <table id="facts">            model, options, ranks and hosts, OpenBLAS
 *                                 kernels, Slurm job and restarts (per run)
 *   <table id="sessions">         one row per process that trained the run
 *   <figure class="chart" id="chart-NAME" data-series="K" data-log="0|1">
 *       one chart per loss term, then loss, beta, lr, grad_norm,
 *       samples_per_s; K = its <path class="series"> elements, each with
 *       data-kind="raw|smooth|eval", data-run="R" (the run's index) and
 *       data-points="N" (the vertices of its d attribute). A train series
 *       has min(F, VAE_REPORT_MAX_POINTS) points, F its rows with a finite
 *       value (positive on a log axis); an eval series one point per eval
 *       row likewise. Single-run pages draw raw and smooth train series and
 *       an eval series where eval rows exist; overlays draw one smooth
 *       series per run (and one eval series per run with eval rows).
 *       <g class="marker resume" data-step="S" data-run="R">: a process
 *       started from the checkpoint of step S (a resume).
 *       <g class="marker skip" data-step="S" data-run="R" data-why=
 *       "nonfinite|threshold">: step S was skipped (a non-finite value, or
 *       the gradient norm over --skip-threshold).
 *   <img class="grid" data-kind="prior|recon" data-step="N">
 *       sample grids over time; a slider (input.grid-slider) shows one
 *       at a time; at most VAE_REPORT_MAX_GRIDS per kind, evenly spaced,
 *       the newest always among them.
 *   <table id="checkpoints">      step, size and eval loss of each
 *   <section id="tools">          tool outputs found in RUN_DIR: <img
 *       class="tool" data-tool="traverse|interpolate|sample|reconstruct|
 *       anomaly-top|image"> and, for anomaly scores, a chart with axes
 *       (<figure class="chart" id="chart-anomaly-...">).
 */
#ifndef MPIVAE_REPORT_H
#define MPIVAE_REPORT_H

#include "mpivae/metrics.h"

#include <stdio.h>

/* Points a curve keeps at most (largest-triangle-three-buckets downsampling). */
#define VAE_REPORT_MAX_POINTS 600
/* Sample grids of each kind a page embeds at most. */
#define VAE_REPORT_MAX_GRIDS 16
/* Runs one page overlays at most. */
#define VAE_REPORT_MAX_RUNS 8

/*
 * Writes the page of the runs in dirs[0..n) to `out` atomically (a
 * temporary name, fsync, rename). One run: its whole page. Several: the
 * overlay of their curves and their facts. live, when not NULL, is the
 * training run's own metrics table in memory for dirs[0] (its file is held
 * open by the run); the other runs' metrics.h5 are read, also while a run
 * writes them. refresh_s > 0: the page reloads itself every refresh_s
 * seconds (a page the training writes while it goes on; its last page does
 * not). Returns 0 or a negative status (reported).
 */
int vae_report_write(const char *out, const char *const *dirs, int n, const vae_metrics *live, int refresh_s);

/*
 * Writes DIR/metrics.h5's group ("/train" or "/eval") as CSV to f: a header
 * row, then one line per row, integers as such and the rest with 17
 * significant digits (each float64 read back exactly).
 */
int vae_report_csv(const char *dir, const char *group, FILE *f);

/* The same group as right-aligned columns, values to 6 significant digits. */
int vae_report_table(const char *dir, const char *group, FILE *f);

#endif
