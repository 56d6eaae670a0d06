/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer: the HELLO body decoder (both sides of the handshake, auth tag
 * and RDMA block included). A body it accepts re-encodes to a body that
 * decodes to the same HELLO, and an accepted body's auth tag fits its
 * buffer; the auth tag of a decoded nonce computes without error.
 */
#include "transport/proto.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct kvr_hello h, g;
	uint8_t body[KVR_PROTO_MAX_HELLO], tag[KVR_PROTO_TAG_LEN];
	int rc, n;

	memset(&h, 0, sizeof(h));
	memset(&g, 0, sizeof(g));
	rc = kvr_proto_hello_decode(data, size, &h);
	if (rc < 0)
		return 0;
	if ((size_t)rc != size || h.auth_len > KVR_PROTO_MAX_AUTH || h.version_min > h.version_max)
		abort();
	n = kvr_proto_hello_encode(body, sizeof(body), &h);
	if (n < 0 || kvr_proto_hello_decode(body, (size_t)n, &g) != n ||
	    memcmp(&h, &g, sizeof(h)) != 0)
		abort();
	if (h.auth_len == KVR_PROTO_NONCE_LEN && kvr_proto_auth_tag("s", 1, h.auth, tag) != 0)
		abort();
	return 0;
}
