/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer: the RDMA message decoder (the requests and answers that
 * travel as SENDs). An accepted message stays inside its bytes: its key,
 * inline payload and every descriptor lie within them, every descriptor
 * is non-empty and does not wrap, and the limits hold.
 */
#include "transport/rdma_msg.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const struct kvr_rmsg_limits lim = {
	    .max_desc = 64, .max_inline = 4096, .max_payload = 1ull << 30};
	const uint8_t *end = data + size;
	struct kvr_rmsg m;

	memset(&m, 0, sizeof(m));
	if (kvr_rmsg_decode(data, size, &lim, &m) < 0)
		return 0;
	if (m.ndesc > lim.max_desc || m.key_len > KVR_MAX_KEY)
		abort();
	if (m.key_len && (m.key < data || m.key + m.key_len > end))
		abort();
	if (m.inl &&
	    (m.payload_len > lim.max_inline || m.inl < data || m.inl + m.payload_len > end))
		abort();
	for (uint32_t i = 0; i < m.ndesc; i++) {
		struct kvr_rdesc d = kvr_rmsg_desc(&m, i);

		if (!d.len || d.addr + d.len < d.addr)
			abort();
	}
	return 0;
}
