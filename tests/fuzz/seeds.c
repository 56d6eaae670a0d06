/* SPDX-License-Identifier: MIT */
/*
 * Writes the harnesses' seed corpus (tests/fuzz/corpus/NAME/) with the
 * library's own encoders: valid frames of every opcode, HELLOs with and
 * without auth and RDMA blocks, RDMA requests and answers. Run by
 * tests/fuzz/run.sh --seed; its output is committed.
 */
#include "transport/proto.h"
#include "transport/rdma_msg.h"

#include <stdio.h>
#include <string.h>

static void put(const char *dir, const char *name, const void *buf, size_t len)
{
	char path[512];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "wb");
	if (!f || fwrite(buf, 1, len, f) != len) {
		perror(path);
		return;
	}
	fclose(f);
}

int main(int argc, char **argv)
{
	const char *root = argc > 1 ? argv[1] : "tests/fuzz/corpus";
	char dir[400], name[64];
	uint8_t buf[8192];

	snprintf(dir, sizeof(dir), "%s/fuzz_frame", root);
	for (uint8_t op = KVR_PROTO_OP_HELLO; op <= KVR_PROTO_OP_STATS; op++) {
		for (int resp = 0; resp < 2; resp++) {
			struct kvr_frame f = {
			    .opcode = op,
			    .flags = resp ? KVR_PROTO_F_RESPONSE : 0,
			    .id = 7u + op,
			    .status = resp && op == KVR_PROTO_OP_GET ? -2 : 0,
			    .key_len = resp || op == KVR_PROTO_OP_HELLO || op == KVR_PROTO_OP_STATS
					   ? 0
					   : 5,
			    .payload_len = op == KVR_PROTO_OP_PUT && !resp ? 4096 : 0};

			kvr_proto_encode(buf, &f);
			snprintf(name, sizeof(name), "op%u%s", op, resp ? "-resp" : "");
			put(dir, name, buf, KVR_PROTO_HDR_LEN);
		}
	}
	snprintf(dir, sizeof(dir), "%s/fuzz_hello", root);
	for (int v = 0; v < 3; v++) {
		struct kvr_hello h = {.version_min = 1, .version_max = 1, .shards = 4};
		int n;

		if (v >= 1) {
			h.features = KVR_PROTO_FEAT_AUTH;
			h.auth_len = KVR_PROTO_NONCE_LEN;
			memset(h.auth, 0x5a, h.auth_len);
		}
		if (v == 2)
			h.features |= KVR_PROTO_FEAT_CRC;
		n = kvr_proto_hello_encode(buf, sizeof(buf), &h);
		snprintf(name, sizeof(name), "hello%d", v);
		if (n > 0)
			put(dir, name, buf, (size_t)n);
	}
	snprintf(dir, sizeof(dir), "%s/fuzz_rmsg", root);
	{
		struct kvr_rdesc d[3] = {{0x10000, 7, 4096}, {0x20000, 7, 4096}, {0x30000, 7, 100}};
		struct kvr_rmsg m = {.opcode = KVR_PROTO_OP_PUT,
				     .id = 3,
				     .key_len = 4,
				     .ndesc = 3,
				     .payload_len = 8292,
				     .key = (const uint8_t *)"key1"};
		int n = kvr_rmsg_encode(buf, sizeof(buf), &m, d, NULL);

		if (n > 0)
			put(dir, "put3", buf, (size_t)n);
		m.opcode = KVR_PROTO_OP_GET;
		n = kvr_rmsg_encode(buf, sizeof(buf), &m, d, NULL);
		if (n > 0)
			put(dir, "get3", buf, (size_t)n);
		m = (struct kvr_rmsg){.opcode = KVR_PROTO_OP_PUT,
				      .flags = KVR_RMSG_F_INLINE,
				      .id = 4,
				      .key_len = 4,
				      .payload_len = 16,
				      .key = (const uint8_t *)"key2"};
		n = kvr_rmsg_encode(buf, sizeof(buf), &m, NULL, "0123456789abcdef");
		if (n > 0)
			put(dir, "put-inline", buf, (size_t)n);
		m = (struct kvr_rmsg){.opcode = KVR_PROTO_OP_GET,
				      .flags = KVR_RMSG_F_RESPONSE,
				      .id = 3,
				      .payload_len = 8292};
		n = kvr_rmsg_encode(buf, sizeof(buf), &m, NULL, NULL);
		if (n > 0)
			put(dir, "get-answer", buf, (size_t)n);
	}
	return 0;
}
