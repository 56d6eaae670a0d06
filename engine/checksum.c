/* SPDX-License-Identifier: MIT */
/* crc32c through ISA-L, which picks the fastest CPU path at run time. */
#include "engine/engine.h"
#include "engine/sgl.h"

#include <isa-l/crc.h>
#include <limits.h>

uint32_t kvr_crc32c(uint32_t crc, const void *buf, size_t len)
{
	const unsigned char *p = buf;
	uint32_t c = ~crc;

	while (len) {
		int n = len > (size_t)INT_MAX ? INT_MAX & ~4095 : (int)len;

		c = crc32_iscsi((unsigned char *)p, n, c);
		p += n;
		len -= (size_t)n;
	}
	return ~c;
}

uint32_t kvr_crc32c_sgl(const struct kvr_sgx *sgx, uint32_t nsge, uint64_t len)
{
	uint32_t crc = 0;
	struct kvr_sgl cur;

	kvr_sgl_init(&cur, sgx, nsge, len, &crc);
	kvr_sgl_advance(&cur, len);
	return crc;
}
