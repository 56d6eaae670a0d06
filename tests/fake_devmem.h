/* SPDX-License-Identifier: MIT */
/*
 * Test fixture: a copy engine for transport/stage.c without a GPU. Its
 * "device memory" is an arena of host memory that only this engine calls
 * device memory; copies and markers run in order on a worker thread, each
 * copy after an optional delay, so staging, its overlap with I/O, its
 * deadlines and its failures can be tested on any machine.
 */
#ifndef KVR_TEST_FAKE_DEVMEM_H
#define KVR_TEST_FAKE_DEVMEM_H

#include <stddef.h>
#include <stdint.h>

#include "kvring.h"

struct fake_dev {
	uint8_t *arena; /* the "device memory" (KVR_MEM_CUDA regions go here) */
	size_t arena_len;
	/* knobs, read by the worker */
	volatile uint32_t delay_us;   /* before each copy */
	volatile uint64_t fail_after; /* fail the n-th copy queued (0: never) */
	/* counters */
	volatile uint64_t copies, bytes, marks, pins, unpins;
	void *priv;
};

/* Give e device memory through a fake copy engine with an arena of
 * arena_len bytes and a bounce pool of pool_len (0: the default). The
 * fixture lives until kvr_engine_destroy(e). Asserts success. */
struct fake_dev *fake_dev_attach(kvr_engine *e, size_t arena_len, size_t pool_len);

#endif
