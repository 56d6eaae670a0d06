/* SPDX-License-Identifier: MIT */
/* engine/sgl.c: the SGL cursor's iovec gather (recv and sendmsg paths). */
#include "engine/sgl.h"

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
