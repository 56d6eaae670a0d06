/* SPDX-License-Identifier: MIT */
/*
 * Staging of device memory (KVR_MEM_CUDA) for targets that cannot move it
 * themselves (the memory and file stores, TCP): each object goes through
 * one extent of an engine-owned bounce pool of pinned host memory that is
 * registered like any other region (io_uring fixed buffers, RDMA MRs).
 *
 *   put: device -> pool copies (asynchronous, on the copy engine's stream),
 *        then the object, now one pool SGE, goes to the target;
 *   get: the target fills the pool extent, then pool -> device copies.
 *
 * Objects are independent, so one object's copy overlaps the others' I/O.
 * The copy engine (transport/cuda.c for CUDA, a thread in the tests) queues
 * copies in order and a marker after each object's; when the copies before
 * a marker are done it calls kvr_stage_signal() from its own thread, which
 * writes an eventfd the engine's ring reads: the loop never waits on the
 * device. Objects wait in order for pool room; one larger than the pool
 * fails with -E2BIG.
 */
#ifndef KVR_STAGE_H
#define KVR_STAGE_H

#include "engine/engine.h"

struct kvr_stage;

/* What a copy engine provides (ctx is its own). */
struct kvr_copy_ops {
	const char *name;
	/* [addr, addr+len) is device memory of this engine: 0 or -errno. */
	int (*check)(void *ctx, kvr_engine *e, void *addr, size_t len);
	/* Pin / unpin host memory for fast copies (KVR_MEM_CUDA_PINNED). */
	int (*pin)(void *ctx, kvr_engine *e, void *addr, size_t len);
	void (*unpin)(void *ctx, void *addr, size_t len);
	/* Optional: a dmabuf for an RDMA registration of device memory. */
	int (*dmabuf)(void *ctx, void *addr, size_t len, int *fd, uint64_t *offset);
	/* Pinned host memory for the bounce pool (NULL on failure). */
	void *(*host_alloc)(void *ctx, size_t len);
	void (*host_free)(void *ctx, void *p, size_t len);
	/* Queue a copy after those queued before. 0 or -errno. */
	int (*copy)(void *ctx, void *dst, const void *src, size_t len, bool to_device);
	/* Once every copy queued so far is done, call kvr_stage_signal(st),
	 * from any thread. 0 or -errno. */
	int (*mark)(void *ctx, struct kvr_stage *st);
	/* Wait for everything queued (teardown and error paths only). */
	void (*wait)(void *ctx);
	/* The stager is going: release ctx (after wait). */
	void (*fini)(void *ctx);
};

/*
 * Give engine e device memory through copy engine ops/ctx with a bounce
 * pool of pool_bytes (0: 256 MiB): sets e->devmem. On failure ops->fini(ctx)
 * has run. 0, -EEXIST (e has device memory already), -ENOMEM, or the
 * errno of registering the pool.
 */
int kvr_stage_init(kvr_engine *e, const struct kvr_copy_ops *ops, void *ctx, size_t pool_bytes);

/* One marker's copies are done. Any thread; never blocks. */
void kvr_stage_signal(struct kvr_stage *st);

#endif
