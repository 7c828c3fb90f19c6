/*
 * internal.h: helpers the library's files share, not part of its interface.
 */
#ifndef MPIVAE_INTERNAL_H
#define MPIVAE_INTERNAL_H

/* Creates a folder and its parents. Returns 0 or VAE_EIO (reported). */
int vae__mkdir_p(const char *path);

/* fsync of a file (is_dir 0) or a folder (1). Returns 0 or VAE_EIO (reported). */
int vae__fsync_path(const char *path, int is_dir);

#endif
