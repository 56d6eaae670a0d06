/* SPDX-License-Identifier: MIT */
/*
 * engine/sgl.h: the one cursor over an object's SGL (struct kvr_sgx[]).
 *
 * Every walk over an SGL goes through it: copying into or out of it,
 * counting bytes that landed in it (a recv straight into the caller's
 * memory), handing out its pieces (an RDMA descriptor, a device copy) and
 * gathering its slices into an iovec array. The walk stops at a byte limit
 * set at init or at the last SGE, whichever comes first; SGEs of length 0
 * are stepped over. With a crc set, the bytes the cursor copies or passes
 * over are added to it (a crc32c as they land).
 *
 * The cursor borrows the SGE array: it must outlive the walk. Not thread-safe
 * (one walker at a time, like everything on the engine thread).
 */
#ifndef KVR_ENGINE_SGL_H
#define KVR_ENGINE_SGL_H

#include <stdint.h>
#include <string.h>
#include <sys/uio.h>

#include "engine/engine.h"

struct kvr_sgl {
	const struct kvr_sgx *sgx;
	uint32_t nsge;
	uint32_t i;    /* the SGE the position is in */
	uint64_t off;  /* the position's offset in sgx[i] */
	uint64_t left; /* bytes before the limit */
	uint32_t *crc; /* running crc32c of the bytes walked, or NULL */
};

/* One contiguous piece of the SGL, as kvr_sgl_next hands it out. */
struct kvr_sgl_piece {
	uint8_t *addr;
	uint64_t len;
	struct kvr_mr *mr;
};

/* Start a walk at the first byte of sgx[0..nsge), over at most limit bytes.
 * crc (may be NULL) is updated, not reset: the caller starts it (0). */
static inline void kvr_sgl_init(struct kvr_sgl *c, const struct kvr_sgx *sgx, uint32_t nsge,
				uint64_t limit, uint32_t *crc)
{
	*c = (struct kvr_sgl){sgx, nsge, 0, 0, limit, crc};
}

/* Bytes the walk may still cover: the limit's rest (the SGL may end first). */
static inline uint64_t kvr_sgl_remaining(const struct kvr_sgl *c)
{
	return c->left;
}

/* The next piece, at most max bytes (max > 0) and never across an SGE's
 * end, and move past it; false at the end of the walk. Does not touch the
 * crc: the caller's bytes may not be there yet (or be device memory). */
static inline bool kvr_sgl_next(struct kvr_sgl *c, uint64_t max, struct kvr_sgl_piece *p)
{
	while (c->left && c->i < c->nsge) {
		const struct kvr_sgx *x = &c->sgx[c->i];
		uint64_t k = x->len - c->off;

		if (k > c->left)
			k = c->left;
		if (k > max)
			k = max;
		*p = (struct kvr_sgl_piece){x->addr + c->off, k, x->mr};
		c->off += k;
		c->left -= k;
		if (c->off == x->len) {
			c->i++;
			c->off = 0;
		}
		if (k)
			return true;
	}
	return false;
}

enum kvr_sgl_dir { KVR_SGL_IN, KVR_SGL_OUT, KVR_SGL_PASS };

/* Walk up to n bytes from the position, copying them from buf into the SGL
 * (IN), from the SGL to buf (OUT) or neither (PASS), adding them to the crc
 * when there is one; returns how many it walked (fewer at the end of the
 * walk). A plain loop over the SGEs, inlined with a constant dir: the
 * memory store's copy of every object runs through it. */
static inline uint64_t kvr_sgl_walk(struct kvr_sgl *c, uint8_t *buf, uint64_t n,
				    enum kvr_sgl_dir dir)
{
	const struct kvr_sgx *x = c->sgx + c->i, *end = c->sgx + c->nsge;
	uint64_t off = c->off, rest;

	if (n > c->left)
		n = c->left;
	for (rest = n; rest && x < end;) {
		uint8_t *a = x->addr + off;
		uint64_t k = x->len - off;

		if (k > rest)
			k = rest;
		if (dir == KVR_SGL_IN)
			memcpy(a, buf, k);
		else if (dir == KVR_SGL_OUT)
			memcpy(buf, a, k);
		if (c->crc)
			*c->crc = kvr_crc32c(*c->crc, a, k);
		if (dir != KVR_SGL_PASS)
			buf += k;
		rest -= k;
		off += k;
		if (off == x->len) {
			x++;
			off = 0;
		}
	}
	c->i = (uint32_t)(x - c->sgx);
	c->off = off;
	c->left -= n - rest;
	return n - rest;
}

/* Copy up to n bytes from src into the SGL at the position and move past
 * them; returns how many were copied (fewer at the end of the walk). */
static inline uint64_t kvr_sgl_copy_in(struct kvr_sgl *c, const void *src, uint64_t n)
{
	return kvr_sgl_walk(c, (uint8_t *)src, n, KVR_SGL_IN);
}

/* Copy up to n bytes of the SGL at the position to dst and move past them;
 * returns how many were copied (fewer at the end of the walk). */
static inline uint64_t kvr_sgl_copy_out(struct kvr_sgl *c, void *dst, uint64_t n)
{
	return kvr_sgl_walk(c, dst, n, KVR_SGL_OUT);
}

/* Move past n bytes (ones that landed in the SGL by other means: they go
 * into the crc); returns how many it moved (fewer at the end of the walk). */
static inline uint64_t kvr_sgl_advance(struct kvr_sgl *c, uint64_t n)
{
	return kvr_sgl_walk(c, NULL, n, KVR_SGL_PASS);
}

/*
 * Describe the SGL from the position on, at most max bytes, in at most cap
 * iovecs (one per SGE slice; none of length 0); the position does not move.
 * Returns the number of iovecs written; *bytes (may be NULL) gets how many
 * bytes they cover, less than asked when cap or the walk ran out.
 */
uint32_t kvr_sgl_fill_iov(const struct kvr_sgl *c, struct iovec *iov, uint32_t cap, uint64_t max,
			  uint64_t *bytes);

#endif
