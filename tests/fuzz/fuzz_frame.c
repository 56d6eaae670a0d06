/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer: the frame header decoder (kvr_proto_decode) on any bytes, with
 * the default limits and with tight ones. A header it accepts must encode
 * back to a header that decodes to the same frame: the decoder and the
 * encoder agree on every field.
 */
#include "transport/proto.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const struct kvr_proto_limits tight = {.max_payload = 4096, .max_hello = 64};
	const struct kvr_proto_limits *lims[] = {NULL, &tight};

	for (size_t i = 0; i < 2; i++) {
		struct kvr_frame f, g;
		uint8_t hdr[KVR_PROTO_HDR_LEN];

		memset(&f, 0, sizeof(f));
		memset(&g, 0, sizeof(g));
		int rc = kvr_proto_decode(data, size, lims[i], &f);

		if (rc < 0)
			continue;
		if (rc != KVR_PROTO_HDR_LEN || size < KVR_PROTO_HDR_LEN)
			abort();
		kvr_proto_encode(hdr, &f);
		if (kvr_proto_decode(hdr, sizeof(hdr), lims[i], &g) != KVR_PROTO_HDR_LEN ||
		    f.opcode != g.opcode || f.flags != g.flags || f.id != g.id ||
		    f.status != g.status || f.key_len != g.key_len ||
		    f.payload_len != g.payload_len)
			abort();
		if (f.key_len > KVR_MAX_KEY)
			abort();
	}
	return 0;
}
