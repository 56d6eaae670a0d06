/* SPDX-License-Identifier: MIT */
/*
 * Buffers in CUDA device memory for kvring-bench --mem cuda: the arena of a
 * run comes from cudaMalloc, its patterns go in and its bytes come back for
 * checking through plain cudaMemcpy (never on a measured path).
 *
 * The library links the CUDA runtime statically, so a build with CUDA still
 * runs on a machine without the driver or a GPU; these functions then fail
 * with -ENODEV and say why. Without a CUDA build they fail with -EOPNOTSUPP.
 */
#include <errno.h>
#include <stdio.h>

#include "kvr_config.h"
#include "bench.h"

#if KVR_HAVE_CUDA
#include <cuda_runtime_api.h>

/* 0 when a device is there, else -ENODEV with why naming the CUDA error. */
static int devmem_probe(char *why, size_t why_len)
{
	cudaError_t err;
	int n = 0;

	err = cudaGetDeviceCount(&n);
	if (err == cudaSuccess && n > 0)
		return 0;
	if (why && why_len)
		snprintf(why, why_len, "no CUDA device: %s",
			 err != cudaSuccess ? cudaGetErrorString(err) : "none found");
	cudaGetLastError(); /* not sticky: clear it */
	return -ENODEV;
}

int devmem_alloc(size_t len, void **out, char *why, size_t why_len)
{
	cudaError_t err;
	int rc;

	*out = NULL;
	rc = devmem_probe(why, why_len);
	if (rc)
		return rc;
	err = cudaMalloc(out, len);
	if (err != cudaSuccess) {
		if (why && why_len)
			snprintf(why, why_len, "cudaMalloc of %zu bytes: %s", len,
				 cudaGetErrorString(err));
		cudaGetLastError();
		*out = NULL;
		return -ENOMEM;
	}
	return 0;
}

void devmem_free(void *p)
{
	if (p)
		cudaFree(p);
}

int devmem_copy_to_host(void *dst, const void *src, size_t len)
{
	if (cudaMemcpy(dst, src, len, cudaMemcpyDeviceToHost) != cudaSuccess) {
		cudaGetLastError();
		return -EIO;
	}
	return 0;
}

int devmem_copy_from_host(void *dst, const void *src, size_t len)
{
	if (cudaMemcpy(dst, src, len, cudaMemcpyHostToDevice) != cudaSuccess) {
		cudaGetLastError();
		return -EIO;
	}
	return 0;
}

bool devmem_available(void)
{
	return devmem_probe(NULL, 0) == 0;
}

#else /* !KVR_HAVE_CUDA */

int devmem_alloc(size_t len, void **out, char *why, size_t why_len)
{
	*out = NULL;
	if (why && why_len)
		snprintf(why, why_len, "kvring was built without CUDA");
	return -EOPNOTSUPP;
}

void devmem_free(void *p)
{
}

int devmem_copy_to_host(void *dst, const void *src, size_t len)
{
	return -EOPNOTSUPP;
}

int devmem_copy_from_host(void *dst, const void *src, size_t len)
{
	return -EOPNOTSUPP;
}

bool devmem_available(void)
{
	return false;
}

#endif /* KVR_HAVE_CUDA */
