/* SPDX-License-Identifier: MIT */
/* The shared-secret file of the programs (kvring --secret-file,
 * kvring-bench --secret-file): its bytes, less a trailing newline. */
#ifndef KVR_TOOLS_SECRET_FILE_H
#define KVR_TOOLS_SECRET_FILE_H

#include <stddef.h>
#include <stdint.h>

/* Longest secret (as struct kvr_connect_opts takes it). */
#define SECRET_FILE_MAX 4096

/*
 * Read the secret in path into buf (SECRET_FILE_MAX bytes) and set *len:
 * the file's bytes with trailing "\n" / "\r\n" removed, so that
 * `echo secret > f` works. Returns 0, -EINVAL (nothing left), -EFBIG (over
 * SECRET_FILE_MAX bytes) or the errno of open/read; prints nothing.
 */
int secret_file_read(const char *path, uint8_t buf[SECRET_FILE_MAX], size_t *len);

/* A message for an error of secret_file_read(). */
const char *secret_file_strerror(int err);

#endif
