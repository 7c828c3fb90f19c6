/*
 * importer.h: the `mpivae data` tools: importing Fashion-MNIST from Debian's
 * dataset-fashion-mnist package, writing a synthetic image set, and
 * describing an HDF5 file. Implemented in src/import_idx.c, src/synth.c and
 * src/data_info.c.
 */
#ifndef MPIVAE_IMPORTER_H
#define MPIVAE_IMPORTER_H

#include <stdint.h>
#include <stdio.h>

/* Default folder of Debian's dataset-fashion-mnist package. */
#define VAE_FASHION_MNIST_DIR "/usr/share/datasets/fashion-mnist"

/*
 * Reads the four IDX files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz,
 * t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz; plain uncompressed
 * files without .gz are accepted too) from src_dir and writes out_path with
 * /train/images [60000, 28, 28] uint8, /train/labels [60000] uint8,
 * /test/images [10000, 28, 28] uint8, /test/labels [10000] uint8, chunked
 * (chunk = 1024 rows of images, 4096 of labels) with deflate level 1. Checks
 * IDX magic numbers, dimensions, that image and label counts agree, that no
 * file is truncated or has trailing bytes, and that labels are 0..9; names
 * the file on any error. Written to "<out_path>.tmp" then renamed; nothing is
 * left behind on failure. Returns 0 or a negative status.
 */
int vae_import_fashion_mnist(const char *src_dir, const char *out_path);

/*
 * Writes a synthetic image set: /train/images [n_train, C, Hh, W] uint8,
 * /train/labels [n_train] uint8, and the same under /test with n_test rows
 * (the 4-D shape is kept when C == 1). Image i has label i % classes
 * (classes <= 10), drawn as a simple shape: 0 filled rectangle, 1 ring,
 * 2 horizontal bar, 3 vertical bar, 4 diagonal, 5 cross, 6 X, 7 small disc,
 * 8 triangle, 9 checker; with C == 3 each class also has its own colour
 * (all of the same total intensity). Shapes scale with the image, so sizes
 * from 8x8 (the minimum is 4x4) to 28x28 and beyond work. Each image has a
 * position jitter of +-2 pixels (+-1 below 16 pixels), a brightness of 80 to
 * 100% and +-16 levels of uniform noise, all drawn from the keyed RNG with
 * (seed, VAE_RNG_SYNTH, a = split (0 train, 1 test), b = i), so the same seed
 * gives the same file, byte for byte (object timestamps are off). Pixel
 * values use the full range 0..255 so the images are learnable by a small
 * VAE in a few epochs. n_train and n_test must be >= 1. Written to
 * "<out_path>.tmp" then renamed. Returns 0 or a negative status.
 */
int vae_import_synth(const char *out_path, int n_train, int n_test, int C, int Hh, int W,
                     int classes, uint64_t seed);

/*
 * Prints every dataset in the file (H5Ovisit order): path, shape, type
 * (uint8, float32, ...), layout and chunk dims, filters (deflate(level),
 * shuffle, fletcher32, ...), and for integer and float datasets min, max and
 * mean of the finite values (read in blocks of rows, so large files are
 * fine), plus for float types the count of NaN and Inf values. A missing file
 * or a file that is not HDF5 is an error naming the file. Returns 0 or a
 * negative status.
 */
int vae_data_info(const char *path, FILE *out);

#endif
