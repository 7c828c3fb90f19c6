/*
 * image.h: PNG grids of images (libpng).
 */
#ifndef MPIVAE_IMAGE_H
#define MPIVAE_IMAGE_H

/*
 * Writes n images as a grid PNG. imgs holds n images of C x Hh x W floats
 * (PyTorch layout), values in [0, 1] (clamped; NaN drawn as 0). C == 3 gives
 * an RGB image; any other C draws channel 0 in grey. cols images per row
 * (reduced to n when n < cols; rows = ceil(n / cols)), pad pixels of
 * background (mid grey, 128) between and around images, so the PNG is
 * cols*W + (cols+1)*pad wide and rows*Hh + (rows+1)*pad high. The file is
 * written to "<path>.tmp" and renamed, so a reader never sees a partial PNG.
 * Returns 0 or a negative status after reporting.
 */
int vae_image_write_grid(const char *path, const float *imgs, int n, int C, int Hh, int W,
                         int cols, int pad);

/*
 * Writes a histogram PNG (width x height pixels) of n values in nbins equal
 * bins spanning the finite values' range, bars in dark grey on white. Where
 * there is room (about 90 x 50 pixels more than the bins need), with axes in
 * black: the count of the tallest bar and 0 on the left, the range's two ends
 * and its middle below, in a 5x7 pixel font; the bars fill the plot area
 * inside, the tallest one pixel short of its top. NaN and Inf values are
 * left out. Needs width >= nbins and height >= 2. Written to "<path>.tmp"
 * and renamed. Used by the anomaly tool. Returns 0 or a negative status
 * after reporting.
 */
int vae_image_write_histogram(const char *path, const float *values, long n, int nbins,
                              int width, int height);

#endif
