/* SPDX-License-Identifier: MIT */
/* engine/sgl.c: the SGL cursor's walks that are off the memory store's
 * per-object path (recv accounting, iovec gathers). */
#include "engine/sgl.h"

uint64_t kvr_sgl_advance(struct kvr_sgl *c, uint64_t n)
{
	struct kvr_sgl_piece p;
	uint64_t done = 0;

	while (done < n && kvr_sgl_next(c, n - done, &p)) {
		if (c->crc)
			*c->crc = kvr_crc32c(*c->crc, p.addr, p.len);
		done += p.len;
	}
	return done;
}

uint32_t kvr_sgl_fill_iov(const struct kvr_sgl *c, struct iovec *iov, uint32_t cap, uint64_t max,
			  uint64_t *bytes)
{
	struct kvr_sgl w = *c;
	struct kvr_sgl_piece p;
	uint64_t done = 0;
	uint32_t n = 0;

	while (n < cap && done < max && kvr_sgl_next(&w, max - done, &p)) {
		iov[n++] = (struct iovec){p.addr, p.len};
		done += p.len;
	}
	if (bytes)
		*bytes = done;
	return n;
}
