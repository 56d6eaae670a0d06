/* SPDX-License-Identifier: MIT */
/*
 * Extent allocator: hands out unit-aligned byte ranges of [0, capacity).
 * Pure data structure: the stores use it for the memory pool and the file's
 * data area alike. Memory use grows with the number of free extents, not with
 * the capacity.
 */
#ifndef KVR_ALLOC_H
#define KVR_ALLOC_H

#include <stdint.h>

struct kvr_alloc_node;

struct kvr_alloc {
	uint64_t capacity; /* bytes, a multiple of unit */
	uint64_t unit;	   /* power of two */
	uint64_t used;	   /* bytes allocated */
	uint64_t nfree;	   /* free extents */
	void *impl;	   /* implementation state */
};

/* capacity is rounded down to unit; everything starts free. 0/-EINVAL/-ENOMEM */
int kvr_alloc_init(struct kvr_alloc *a, uint64_t capacity, uint64_t unit);
void kvr_alloc_fini(struct kvr_alloc *a);
/* Round len up to the unit. */
static inline uint64_t kvr_alloc_round(const struct kvr_alloc *a, uint64_t len)
{
	return (len + a->unit - 1) & ~(a->unit - 1);
}
/* Allocate kvr_alloc_round(len) bytes (len > 0). Returns the offset (>= 0),
 * -ENOSPC when no free extent is large enough, -ENOMEM. */
int64_t kvr_alloc_get(struct kvr_alloc *a, uint64_t len);
/* Mark [off, off+len) used (both unit-aligned); for rebuilding after restart.
 * 0, -EEXIST if any part is already used, -EINVAL if out of range. */
int kvr_alloc_reserve(struct kvr_alloc *a, uint64_t off, uint64_t len);
/* Free an extent returned by get/reserve (same off and rounded len);
 * coalesces with free neighbours. */
void kvr_alloc_put(struct kvr_alloc *a, uint64_t off, uint64_t len);
/* Largest free extent, bytes. */
uint64_t kvr_alloc_largest(const struct kvr_alloc *a);

#endif
