/* SPDX-License-Identifier: MIT */
/*
 * CUDA device memory: the copy engine of transport/stage.c on one
 * engine-owned, non-blocking stream of the current device; completion of
 * each object's copies reaches the loop through cudaLaunchHostFunc, whose
 * function only bumps a counter and writes an eventfd (no CUDA call, no
 * wait in the loop). Pointer checks with cudaPointerGetAttributes; pinned
 * host memory with cudaHostRegister; the bounce pool from cudaHostAlloc.
 *
 * The CUDA runtime is linked statically, so a machine without the NVIDIA
 * driver still runs everything else: the first KVR_MEM_CUDA registration
 * then fails with -ENODEV and a message. The driver API call for dmabuf
 * handles (cuMemGetHandleForAddressRange, for GPUDirect RDMA) is looked up
 * at run time in the driver's libcuda.so.1 for the same reason.
 */
#include "transport/stage.h"

#include <cuda.h>
#include <cuda_runtime_api.h>
#include <dlfcn.h>
#include <stdlib.h>

struct cuda_ctx {
	kvr_engine *e;
	int device;
	cudaStream_t stream;
	void *libcuda;
	CUresult (*get_handle)(void *handle, CUdeviceptr dptr, size_t size,
			       CUmemRangeHandleType type, unsigned long long flags);
};

static int cuda_err(kvr_engine *e, cudaError_t err, const char *what, int errno_)
{
	kvr_set_errmsg(e, "CUDA: %s: %s", what, cudaGetErrorString(err));
	return errno_;
}

static int cu_check(void *ctx, kvr_engine *e, void *addr, size_t len)
{
	struct cudaPointerAttributes a[2];
	void *ends[2] = {addr, (char *)addr + len - 1};

	(void)ctx;
	for (int i = 0; i < 2; i++) {
		cudaError_t err = cudaPointerGetAttributes(&a[i], ends[i]);

		if (err != cudaSuccess) {
			cudaGetLastError(); /* clear it: not sticky */
			return cuda_err(e, err, "not device memory", -EFAULT);
		}
		if (a[i].type != cudaMemoryTypeDevice) {
			kvr_set_errmsg(e, "CUDA: %p+%zu is not device memory (cudaMalloc)", addr,
				       len);
			return -EFAULT;
		}
	}
	if (a[0].device != a[1].device || a[0].devicePointer == NULL) {
		kvr_set_errmsg(e, "CUDA: %p+%zu spans devices", addr, len);
		return -EFAULT;
	}
	return 0;
}

static int cu_pin(void *ctx, kvr_engine *e, void *addr, size_t len)
{
	cudaError_t err = cudaHostRegister(addr, len, cudaHostRegisterDefault);

	(void)ctx;
	if (err == cudaSuccess || err == cudaErrorHostMemoryAlreadyRegistered) {
		cudaGetLastError();
		return 0;
	}
	cudaGetLastError();
	return cuda_err(e, err, "cudaHostRegister",
			err == cudaErrorMemoryAllocation ? -ENOMEM : -EINVAL);
}

static void cu_unpin(void *ctx, void *addr, size_t len)
{
	(void)ctx;
	(void)len;
	cudaHostUnregister(addr);
	cudaGetLastError();
}

static int cu_dmabuf(void *vctx, void *addr, size_t len, int *fd, uint64_t *offset)
{
	struct cuda_ctx *c = vctx;
	const uintptr_t page = 1ull << 16; /* GPU pages */
	uintptr_t a = (uintptr_t)addr, base = a & ~(page - 1);
	size_t span = ((a + len + page - 1) & ~(page - 1)) - base;
	int h = -1;

	if (!c->get_handle)
		return -EOPNOTSUPP;
	if (c->get_handle(&h, (CUdeviceptr)base, span, CU_MEM_RANGE_HANDLE_TYPE_DMA_BUF_FD, 0) !=
	    CUDA_SUCCESS)
		return -EOPNOTSUPP;
	*fd = h;
	*offset = a - base;
	return 0;
}

static void *cu_host_alloc(void *ctx, size_t len)
{
	void *p = NULL;

	(void)ctx;
	if (cudaHostAlloc(&p, len, cudaHostAllocPortable) != cudaSuccess) {
		cudaGetLastError();
		return NULL;
	}
	return p;
}

static void cu_host_free(void *ctx, void *p, size_t len)
{
	(void)ctx;
	(void)len;
	cudaFreeHost(p);
}

static int cu_copy(void *vctx, void *dst, const void *src, size_t len, bool to_device)
{
	struct cuda_ctx *c = vctx;

	return cudaMemcpyAsync(dst, src, len,
			       to_device ? cudaMemcpyHostToDevice : cudaMemcpyDeviceToHost,
			       c->stream) == cudaSuccess
		   ? 0
		   : -EIO;
}

/* On a CUDA thread: no CUDA calls here, only the stager's signal. */
static void CUDART_CB host_fn(void *arg)
{
	kvr_stage_signal(arg);
}

static int cu_mark(void *vctx, struct kvr_stage *st)
{
	struct cuda_ctx *c = vctx;

	return cudaLaunchHostFunc(c->stream, host_fn, st) == cudaSuccess ? 0 : -EIO;
}

static void cu_wait(void *vctx)
{
	struct cuda_ctx *c = vctx;

	cudaStreamSynchronize(c->stream);
}

static void cu_fini(void *vctx)
{
	struct cuda_ctx *c = vctx;

	if (c->stream) {
		cudaStreamSynchronize(c->stream);
		cudaStreamDestroy(c->stream);
	}
	if (c->libcuda)
		dlclose(c->libcuda);
	free(c);
}

static const struct kvr_copy_ops cuda_ops = {
    .name = "CUDA",
    .check = cu_check,
    .pin = cu_pin,
    .unpin = cu_unpin,
    .dmabuf = cu_dmabuf,
    .host_alloc = cu_host_alloc,
    .host_free = cu_host_free,
    .copy = cu_copy,
    .mark = cu_mark,
    .wait = cu_wait,
    .fini = cu_fini,
};

int kvr_devmem_attach(kvr_engine *e)
{
	struct cuda_ctx *c;
	cudaError_t err;
	int n = 0;

	err = cudaGetDeviceCount(&n);
	if (err != cudaSuccess || n == 0) {
		kvr_set_errmsg(e, "CUDA: no device (%s)",
			       err != cudaSuccess ? cudaGetErrorString(err) : "none found");
		cudaGetLastError();
		return -ENODEV;
	}
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->e = e;
	cudaGetDevice(&c->device);
	err = cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking);
	if (err != cudaSuccess) {
		c->stream = NULL;
		cu_fini(c);
		return cuda_err(e, err, "cudaStreamCreate", -ENODEV);
	}
	c->libcuda = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
	if (c->libcuda)
		*(void **)&c->get_handle = dlsym(c->libcuda, "cuMemGetHandleForAddressRange");
	return kvr_stage_init(e, &cuda_ops, c, e->stage_bytes);
}
