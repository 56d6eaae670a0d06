// SPDX-License-Identifier: MIT
/* transport/proto.c: wire header, HELLO body and request-id set. */
#include "fixtures.h"
#include "transport/proto.h"

#include <stdlib.h>
#include <string.h>

#define HDR KVR_PROTO_HDR_LEN

static const uint8_t ops[] = {KVR_PROTO_OP_HELLO,  KVR_PROTO_OP_PUT,	KVR_PROTO_OP_GET,
			      KVR_PROTO_OP_EXISTS, KVR_PROTO_OP_REMOVE, KVR_PROTO_OP_STATS};
#define NOPS (sizeof(ops) / sizeof(ops[0]))

static bool keyed(uint8_t op)
{
	return op != KVR_PROTO_OP_HELLO && op != KVR_PROTO_OP_STATS;
}

/* A valid frame for op in either direction, with non-trivial field values. */
static struct kvr_frame valid(uint8_t op, bool resp, uint64_t id)
{
	struct kvr_frame f = {.opcode = op, .id = id};

	if (resp) {
		f.flags = KVR_PROTO_F_RESPONSE;
		if (op == KVR_PROTO_OP_GET)
			f.payload_len = 1ull << 20;
		else if (op == KVR_PROTO_OP_EXISTS)
			f.payload_len = 8;
		else if (op == KVR_PROTO_OP_HELLO || op == KVR_PROTO_OP_STATS)
			f.payload_len = 100;
	} else {
		if (keyed(op))
			f.key_len = 17;
		if (op == KVR_PROTO_OP_PUT)
			f.payload_len = 3ull << 30;
		else if (op == KVR_PROTO_OP_GET)
			f.payload_len = 8;
		else if (op == KVR_PROTO_OP_HELLO)
			f.payload_len = KVR_PROTO_HELLO_FIXED + 32;
	}
	return f;
}

static int dec(const uint8_t *b, struct kvr_frame *f)
{
	return kvr_proto_decode(b, HDR, NULL, f);
}

/* Encode f, overwrite byte off with val (off < 0: leave as is), decode. */
static int patch_dec(const struct kvr_frame *f, int off, uint8_t val)
{
	uint8_t b[HDR];
	struct kvr_frame out;

	kvr_proto_encode(b, f);
	if (off >= 0)
		b[off] = val;
	return dec(b, &out);
}

static int enc_dec(const struct kvr_frame *f)
{
	return patch_dec(f, -1, 0);
}

static void assert_same(const struct kvr_frame *a, const struct kvr_frame *b)
{
	assert_int_equal(a->opcode, b->opcode);
	assert_int_equal(a->flags, b->flags);
	assert_true(a->id == b->id);
	assert_int_equal(a->status, b->status);
	assert_int_equal(a->key_len, b->key_len);
	assert_true(a->payload_len == b->payload_len);
}

static void round_trip(void **state)
{
	(void)state;
	for (size_t i = 0; i < NOPS; i++) {
		for (int resp = 0; resp < 2; resp++) {
			struct kvr_frame f = valid(ops[i], resp, 0x0102030405060708ull + i);
			struct kvr_frame out;
			uint8_t b[HDR + 1], b2[HDR];

			assert_int_equal(kvr_proto_encode(b, &f), HDR);
			assert_int_equal(dec(b, &out), HDR);
			assert_same(&f, &out);
			assert_int_equal(kvr_proto_encode(b2, &out), HDR);
			assert_memory_equal(b, b2, HDR);
			/* Bytes after the header are the caller's business. */
			assert_int_equal(kvr_proto_decode(b, sizeof(b), NULL, &out), HDR);

			if (resp) {
				/* Error responses carry no payload. */
				f.status = -ENOENT;
				f.payload_len = 0;
				assert_int_equal(enc_dec(&f), HDR);
				f.status = -4095;
				assert_int_equal(enc_dec(&f), HDR);
			}
		}
	}
}

static void wire_layout(void **state)
{
	static const uint8_t want[HDR] = {
	    0x4b, 0x56, 0x52, 0x50, 0x01, 0x03, 0x01, 0x00, /* magic ver op flags */
	    0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01, /* id */
	    0xfe, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, /* status key rsvd */
	    0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, /* payload */
	};
	struct kvr_frame f = {.opcode = KVR_PROTO_OP_GET,
			      .flags = KVR_PROTO_F_RESPONSE,
			      .id = 0x0102030405060708ull,
			      .status = -2,
			      .payload_len = 1ull << 32};
	uint8_t b[HDR];

	(void)state;
	kvr_proto_encode(b, &f);
	assert_memory_equal(b, want, HDR);
	assert_memory_equal(b, "KVRP", 4);
}

static void truncated(void **state)
{
	struct kvr_frame f = valid(KVR_PROTO_OP_PUT, false, 9), out = {0};
	uint8_t b[HDR], *heap;

	(void)state;
	kvr_proto_encode(b, &f);
	for (size_t len = 0; len < HDR; len++) {
		/* Exactly len bytes on the heap so ASan catches any over-read. */
		heap = malloc(len ? len : 1);
		assert_non_null(heap);
		memcpy(heap, b, len);
		assert_int_equal(kvr_proto_decode(heap, len, NULL, &out), -EAGAIN);
		assert_int_equal(out.opcode, 0);
		free(heap);
	}
	/* A prefix that cannot start a header fails before 32 bytes. */
	for (size_t len = 1; len < HDR; len++) {
		uint8_t bad[HDR];

		memcpy(bad, b, HDR);
		bad[len <= 4 ? len - 1 : 0] ^= 0x20;
		assert_int_equal(kvr_proto_decode(bad, len, NULL, &out), -EPROTO);
		if (len > 4) {
			memcpy(bad, b, HDR);
			bad[4] = 2;
			assert_int_equal(kvr_proto_decode(bad, len, NULL, &out), -EPROTONOSUPPORT);
		}
	}
	assert_int_equal(kvr_proto_decode("GET / HTTP/1.1\r\n", 16, NULL, &out), -EPROTO);
	assert_int_equal(out.opcode, 0);
}

static void bad_magic_version(void **state)
{
	struct kvr_frame f = valid(KVR_PROTO_OP_GET, false, 1);

	(void)state;
	assert_int_equal(patch_dec(&f, 3, 0xd0), -EPROTO);
	assert_int_equal(patch_dec(&f, 0, 'k'), -EPROTO);
	assert_int_equal(patch_dec(&f, 4, 0), -EPROTONOSUPPORT);
	assert_int_equal(patch_dec(&f, 4, 2), -EPROTONOSUPPORT);
}

static void bad_opcode_flags_reserved(void **state)
{
	static const unsigned bad_ops[] = {0, 7, 8, 0x80, 0xff};
	struct kvr_frame f;

	(void)state;
	for (size_t i = 0; i < sizeof(bad_ops) / sizeof(bad_ops[0]); i++) {
		f = valid(KVR_PROTO_OP_REMOVE, false, 1);
		f.opcode = (uint8_t)bad_ops[i];
		assert_int_equal(enc_dec(&f), -EBADMSG);
	}
	for (int bit = 1; bit < 16; bit++) {
		for (int resp = 0; resp < 2; resp++) {
			f = valid(KVR_PROTO_OP_EXISTS, resp, 2);
			f.flags |= (uint16_t)(1u << bit);
			assert_int_equal(enc_dec(&f), -EBADMSG);
		}
	}
	f = valid(KVR_PROTO_OP_PUT, false, 3);
	assert_int_equal(patch_dec(&f, 22, 1), -EBADMSG);
	assert_int_equal(patch_dec(&f, 23, 0x80), -EBADMSG);
}

static void bad_status(void **state)
{
	static const int32_t in_req[] = {-1, 1, -4095, INT32_MIN, INT32_MAX};
	static const int32_t in_resp[] = {1, INT32_MAX, -4096, INT32_MIN};
	struct kvr_frame f;

	(void)state;
	for (size_t i = 0; i < NOPS; i++) {
		for (size_t j = 0; j < sizeof(in_req) / sizeof(in_req[0]); j++) {
			f = valid(ops[i], false, 4);
			f.status = in_req[j];
			assert_int_equal(enc_dec(&f), -EBADMSG);
		}
		for (size_t j = 0; j < sizeof(in_resp) / sizeof(in_resp[0]); j++) {
			f = valid(ops[i], true, 4);
			f.payload_len = 0;
			f.status = in_resp[j];
			assert_int_equal(enc_dec(&f), -EBADMSG);
		}
	}
}

static void key_lengths(void **state)
{
	struct kvr_frame f;

	(void)state;
	for (size_t i = 0; i < NOPS; i++) {
		for (int resp = 0; resp < 2; resp++) {
			f = valid(ops[i], resp, 5);
			f.key_len = KVR_MAX_KEY + 1;
			assert_int_equal(enc_dec(&f), -EMSGSIZE);
			f.key_len = UINT16_MAX;
			assert_int_equal(enc_dec(&f), -EMSGSIZE);
			f.key_len = KVR_MAX_KEY;
			assert_int_equal(enc_dec(&f), keyed(ops[i]) && !resp ? HDR : -EBADMSG);
			f.key_len = 1;
			assert_int_equal(enc_dec(&f), keyed(ops[i]) && !resp ? HDR : -EBADMSG);
			f.key_len = 0;
			assert_int_equal(enc_dec(&f), keyed(ops[i]) && !resp ? -EBADMSG : HDR);
		}
	}
}

static void payload_limits(void **state)
{
	struct kvr_proto_limits lim = {.max_payload = 1000, .max_hello = 64};
	struct kvr_frame f, out;
	uint8_t b[HDR];

	(void)state;
	/* Default limits: exactly 16 GiB passes, one byte more does not. */
	f = valid(KVR_PROTO_OP_PUT, false, 6);
	f.payload_len = KVR_PROTO_MAX_PAYLOAD;
	assert_int_equal(enc_dec(&f), HDR);
	f.payload_len++;
	assert_int_equal(enc_dec(&f), -EMSGSIZE);
	f.payload_len = UINT64_MAX;
	assert_int_equal(enc_dec(&f), -EMSGSIZE);
	f = valid(KVR_PROTO_OP_GET, true, 6);
	f.payload_len = KVR_PROTO_MAX_PAYLOAD + 1;
	assert_int_equal(enc_dec(&f), -EMSGSIZE);

	/* Caller's limits. */
	f = valid(KVR_PROTO_OP_PUT, false, 6);
	f.payload_len = 1000;
	kvr_proto_encode(b, &f);
	assert_int_equal(kvr_proto_decode(b, HDR, &lim, &out), HDR);
	f.payload_len = 1001;
	kvr_proto_encode(b, &f);
	assert_int_equal(kvr_proto_decode(b, HDR, &lim, &out), -EMSGSIZE);
	for (int resp = 0; resp < 2; resp++) {
		f = valid(KVR_PROTO_OP_HELLO, resp, 6);
		f.payload_len = 64;
		kvr_proto_encode(b, &f);
		assert_int_equal(kvr_proto_decode(b, HDR, &lim, &out), HDR);
		f.payload_len = 65;
		kvr_proto_encode(b, &f);
		assert_int_equal(kvr_proto_decode(b, HDR, &lim, &out), -EMSGSIZE);
		f.payload_len = KVR_PROTO_MAX_HELLO + 1;
		assert_int_equal(enc_dec(&f), -EMSGSIZE);
	}
}

static void payload_not_allowed(void **state)
{
	struct kvr_frame f;

	(void)state;
	/* Requests: only PUT and HELLO carry a payload, GET its capacity. */
	for (size_t i = 0; i < NOPS; i++) {
		if (ops[i] == KVR_PROTO_OP_PUT || ops[i] == KVR_PROTO_OP_HELLO ||
		    ops[i] == KVR_PROTO_OP_GET)
			continue;
		f = valid(ops[i], false, 7);
		f.payload_len = 1;
		assert_int_equal(enc_dec(&f), -EMSGSIZE);
	}
	f = valid(KVR_PROTO_OP_GET, false, 7);
	for (uint64_t n = 0; n < 20; n++) {
		f.payload_len = n;
		assert_int_equal(enc_dec(&f), n == 8 ? HDR : -EMSGSIZE);
	}
	/* Responses: PUT and REMOVE never; any op once status is an error. */
	f = valid(KVR_PROTO_OP_PUT, true, 7);
	f.payload_len = 1;
	assert_int_equal(enc_dec(&f), -EMSGSIZE);
	f = valid(KVR_PROTO_OP_REMOVE, true, 7);
	f.payload_len = 8;
	assert_int_equal(enc_dec(&f), -EMSGSIZE);
	f = valid(KVR_PROTO_OP_GET, true, 7);
	f.status = -ENOENT;
	assert_int_equal(enc_dec(&f), -EMSGSIZE);
	f = valid(KVR_PROTO_OP_STATS, true, 7);
	f.status = -EIO;
	assert_int_equal(enc_dec(&f), -EMSGSIZE);
	/* EXISTS answers with exactly one u64 length. */
	f = valid(KVR_PROTO_OP_EXISTS, true, 7);
	f.status = -ENOENT;
	assert_int_equal(enc_dec(&f), -EMSGSIZE);
	f.status = 0;
	for (uint64_t n = 0; n < 20; n++) {
		f.payload_len = n;
		assert_int_equal(enc_dec(&f), n == 8 ? HDR : -EMSGSIZE);
	}
}

static struct kvr_hello hello(uint8_t auth_len)
{
	struct kvr_hello h = {
	    .version_min = 1, .version_max = 3, .features = 0xabcdef0121ull}; /* no RDMA bit */

	h.auth_len = auth_len;
	for (int i = 0; i < KVR_PROTO_MAX_AUTH; i++)
		h.auth[i] = (uint8_t)(i * 7 + 1);
	return h;
}

static void hello_rdma(void **state)
{
	uint8_t b[KVR_PROTO_HELLO_MAX], c[KVR_PROTO_HELLO_MAX];
	struct kvr_hello h = hello(KVR_PROTO_NONCE_LEN), out;
	const struct kvr_hello_rdma good = {
	    .gid = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 1},
	    .qpn = 0x123456,
	    .psn = 0xabcdef,
	    .lid = 7,
	    .mtu = 3,
	    .rd_atomic = 16,
	    .depth = 128,
	    .max_desc = 256,
	    .slot = 8192,
	};
	int n;

	(void)state;
	h.features = KVR_PROTO_FEAT_RDMA;
	h.rdma = good;
	n = kvr_proto_hello_encode(b, sizeof(b), &h);
	assert_int_equal(n, KVR_PROTO_HELLO_FIXED + KVR_PROTO_NONCE_LEN + KVR_PROTO_HELLO_RDMA);
	assert_int_equal(kvr_proto_hello_encode(b, (size_t)n - 1, &h), -EMSGSIZE);
	assert_int_equal(kvr_proto_hello_decode(b, (size_t)n, &out), n);
	assert_memory_equal(&out.rdma, &good, sizeof(good));
	assert_int_equal(out.auth_len, KVR_PROTO_NONCE_LEN);
	/* the block is required with the bit, and forbidden without it */
	assert_int_equal(kvr_proto_hello_decode(b, (size_t)n - KVR_PROTO_HELLO_RDMA, &out),
			 -EBADMSG);
	memcpy(c, b, (size_t)n);
	c[8] &= (uint8_t)~KVR_PROTO_FEAT_RDMA;
	assert_int_equal(kvr_proto_hello_decode(c, (size_t)n, &out), -EBADMSG);
	/* out-of-range fields: qpn and psn over 24 bits, MTU, depth, counts */
	for (int k = 0; k < 8; k++) {
		h.rdma = good;
		switch (k) {
		case 0:
			h.rdma.qpn = 1u << 24;
			break;
		case 1:
			h.rdma.psn = 1u << 24;
			break;
		case 2:
			h.rdma.mtu = 0;
			break;
		case 3:
			h.rdma.mtu = 6;
			break;
		case 4:
			h.rdma.depth = 0;
			break;
		case 5:
			h.rdma.max_desc = 0;
			break;
		case 6:
			h.rdma.slot = 1023;
			break;
		default:
			h.rdma.slot = (1u << 20) + 1;
			break;
		}
		assert_int_equal(kvr_proto_hello_encode(c, sizeof(c), &h), n);
		assert_int_equal(kvr_proto_hello_decode(c, (size_t)n, &out), -EBADMSG);
	}
}

static void hello_body(void **state)
{
	uint8_t b[KVR_PROTO_HELLO_MAX + 8];
	struct kvr_hello h, out;

	(void)state;
	for (unsigned alen = 0; alen <= KVR_PROTO_MAX_AUTH; alen++) {
		int n;

		h = hello((uint8_t)alen);
		n = kvr_proto_hello_encode(b, sizeof(b), &h);
		assert_int_equal(n, KVR_PROTO_HELLO_FIXED + alen);
		assert_int_equal(kvr_proto_hello_encode(b, (size_t)n - 1, &h), -EMSGSIZE);
		assert_int_equal(kvr_proto_hello_decode(b, (size_t)n, &out), n);
		assert_int_equal(out.version_min, 1);
		assert_int_equal(out.version_max, 3);
		assert_true(out.features == h.features);
		assert_int_equal(out.auth_len, alen);
		assert_memory_equal(out.auth, h.auth, alen);
		/* Short or trailing bytes. */
		assert_int_equal(kvr_proto_hello_decode(b, (size_t)n - 1, &out), -EBADMSG);
		assert_int_equal(kvr_proto_hello_decode(b, (size_t)n + 1, &out), -EBADMSG);
	}
	for (size_t len = 0; len < KVR_PROTO_HELLO_FIXED; len++)
		assert_int_equal(kvr_proto_hello_decode(b, len, &out), -EBADMSG);

	h = hello(KVR_PROTO_MAX_AUTH + 1);
	assert_int_equal(kvr_proto_hello_encode(b, sizeof(b), &h), -EMSGSIZE);
	h = hello(255);
	assert_int_equal(kvr_proto_hello_encode(b, sizeof(b), &h), -EMSGSIZE);

	h = hello(0);
	kvr_proto_hello_encode(b, sizeof(b), &h);
	b[16] = KVR_PROTO_MAX_AUTH + 1;
	assert_int_equal(kvr_proto_hello_decode(b, sizeof(b), &out), -EMSGSIZE);
	b[16] = 255;
	assert_int_equal(kvr_proto_hello_decode(b, sizeof(b), &out), -EMSGSIZE);

	h.shard = 0x0102;
	h.shards = 0x0304;
	kvr_proto_hello_encode(b, sizeof(b), &h);
	assert_int_equal(b[4] | b[5] << 8, 0x0102);
	assert_int_equal(b[6] | b[7] << 8, 0x0304);
	assert_int_equal(kvr_proto_hello_decode(b, KVR_PROTO_HELLO_FIXED, &out),
			 KVR_PROTO_HELLO_FIXED);
	assert_int_equal(out.shard, 0x0102);
	assert_int_equal(out.shards, 0x0304);

	h.version_min = 0;
	assert_int_equal(kvr_proto_hello_encode(b, sizeof(b), &h), -EBADMSG);
	h.version_min = 4;
	assert_int_equal(kvr_proto_hello_encode(b, sizeof(b), &h), -EBADMSG);
	h = hello(0);
	kvr_proto_hello_encode(b, sizeof(b), &h);
	b[0] = 9; /* version_min 9 > version_max 3 */
	assert_int_equal(kvr_proto_hello_decode(b, KVR_PROTO_HELLO_FIXED, &out), -EBADMSG);
	b[0] = 0;
	b[1] = 0;
	assert_int_equal(kvr_proto_hello_decode(b, KVR_PROTO_HELLO_FIXED, &out), -EBADMSG);
}

static void ids_basic(void **state)
{
	struct kvr_proto_ids s;

	(void)state;
	assert_int_equal(kvr_proto_ids_init(&s, 0), -EINVAL);
	assert_int_equal(kvr_proto_ids_init(&s, (1u << 24) + 1), -EINVAL);
	assert_int_equal(kvr_proto_ids_init(&s, 4), 0);
	assert_int_equal(kvr_proto_ids_insert(&s, 0), 0);
	assert_int_equal(kvr_proto_ids_insert(&s, UINT64_MAX), 0);
	assert_int_equal(kvr_proto_ids_insert(&s, 0), -EEXIST);
	assert_int_equal(kvr_proto_ids_insert(&s, UINT64_MAX), -EEXIST);
	assert_int_equal(kvr_proto_ids_insert(&s, 42), 0);
	assert_int_equal(kvr_proto_ids_insert(&s, 43), 0);
	assert_int_equal(kvr_proto_ids_insert(&s, 44), -ENOSPC);
	/* A duplicate is reported as such even when full. */
	assert_int_equal(kvr_proto_ids_insert(&s, 42), -EEXIST);
	assert_int_equal(kvr_proto_ids_remove(&s, 44), -ENOENT);
	assert_int_equal(kvr_proto_ids_remove(&s, 42), 0);
	assert_int_equal(kvr_proto_ids_remove(&s, 42), -ENOENT);
	assert_false(kvr_proto_ids_contains(&s, 42));
	assert_int_equal(kvr_proto_ids_insert(&s, 44), 0);
	assert_true(kvr_proto_ids_contains(&s, 0));
	assert_true(kvr_proto_ids_contains(&s, 44));
	assert_int_equal(s.count, 4);
	kvr_proto_ids_free(&s);
	kvr_proto_ids_free(&s); /* idempotent */
}

/* Random insert/remove against a plain array; small id range forces
 * collisions, long probe runs and wrap-around in the table. */
static void ids_model(void **state)
{
	enum { CAP = 64, RANGE = 200, STEPS = 200000 };
	bool ref[RANGE] = {false};
	uint32_t n = 0;
	uint64_t rng = 12345;
	struct kvr_proto_ids s;

	(void)state;
	assert_int_equal(kvr_proto_ids_init(&s, CAP), 0);
	for (int step = 0; step < STEPS; step++) {
		uint64_t r = kvt_rand(&rng);
		uint32_t id = (uint32_t)(r % RANGE);
		uint64_t wire = (uint64_t)id * 0x100000000ull; /* same low bits */

		if ((r >> 32) & 1) {
			int want = ref[id] ? -EEXIST : n >= CAP ? -ENOSPC : 0;

			assert_int_equal(kvr_proto_ids_insert(&s, wire), want);
			if (want == 0) {
				ref[id] = true;
				n++;
			}
		} else {
			assert_int_equal(kvr_proto_ids_remove(&s, wire), ref[id] ? 0 : -ENOENT);
			if (ref[id]) {
				ref[id] = false;
				n--;
			}
		}
		assert_int_equal(s.count, n);
		if (step % 997 == 0) {
			for (uint32_t k = 0; k < RANGE; k++)
				assert_int_equal(kvr_proto_ids_contains(&s, (uint64_t)k << 32),
						 ref[k]);
		}
	}
	kvr_proto_ids_free(&s);
}

static bool documented(int rc)
{
	return rc == HDR || rc == -EPROTO || rc == -EPROTONOSUPPORT || rc == -EBADMSG ||
	       rc == -EMSGSIZE;
}

/* Mutate valid headers; whatever decode accepts must obey every rule and
 * re-encode to the very same bytes. */
static void fuzz_headers(void **state)
{
	uint64_t rng = kvt_env_u64("KVR_PROTO_SEED", 0x5eed);
	uint64_t iters = kvt_env_u64("KVR_PROTO_ITERS", 200000);
	unsigned long accepted = 0;

	(void)state;
	for (uint64_t it = 0; it < iters; it++) {
		uint64_t r = kvt_rand(&rng);
		struct kvr_frame f = valid(ops[r % NOPS], (r >> 8) & 1, kvt_rand(&rng));
		struct kvr_frame out;
		uint8_t b[HDR], b2[HDR];
		unsigned nmut = 1 + (unsigned)((r >> 16) % 4);
		int rc;

		kvr_proto_encode(b, &f);
		for (unsigned m = 0; m < nmut; m++) {
			uint64_t x = kvt_rand(&rng);
			unsigned pos = (unsigned)(x % HDR);

			switch ((x >> 8) % 4) {
			case 0: /* flip one bit */
				b[pos] ^= (uint8_t)(1u << ((x >> 16) % 8));
				break;
			case 1: /* random byte */
				b[pos] = (uint8_t)(x >> 16);
				break;
			case 2: /* boundary byte */
				b[pos] = (x >> 16) & 1 ? 0xff : 0x00;
				break;
			default: /* small nudge, to hit limits exactly */
				b[pos] = (uint8_t)(b[pos] + ((x >> 16) & 1 ? 1 : -1));
				break;
			}
		}
		rc = dec(b, &out);
		assert_true(documented(rc));
		if (rc != HDR)
			continue;
		accepted++;
		assert_int_equal(kvr_proto_encode(b2, &out), HDR);
		assert_memory_equal(b, b2, HDR);
		assert_true(out.key_len <= KVR_MAX_KEY);
		assert_true(out.payload_len <= KVR_PROTO_MAX_PAYLOAD);
		assert_true(out.status <= 0 && out.status >= -4095);
		if (!kvr_frame_is_response(&out))
			assert_int_equal(out.status, 0);
	}
	/* The loop is only meaningful if it exercises both outcomes. */
	print_message("accepted %lu of %llu\n", accepted, (unsigned long long)iters);
	assert_true(accepted > iters / 20 && accepted < iters);
}

/* The crc trailer flag: only on a GET response that carries a payload. */
static void crc_flag(void **state)
{
	struct kvr_frame f;

	(void)state;
	f = valid(KVR_PROTO_OP_GET, true, 7);
	f.flags |= KVR_PROTO_F_CRC;
	assert_int_equal(enc_dec(&f), HDR);
	assert_int_equal(kvr_frame_trailer(&f), KVR_PROTO_CRC_LEN);
	f.payload_len = 0;
	assert_int_equal(enc_dec(&f), -EBADMSG);
	f = valid(KVR_PROTO_OP_GET, true, 7);
	f.flags |= KVR_PROTO_F_CRC;
	f.status = -ENOENT;
	f.payload_len = 0;
	assert_int_equal(enc_dec(&f), -EBADMSG);
	f = valid(KVR_PROTO_OP_GET, false, 7);
	f.flags |= KVR_PROTO_F_CRC;
	assert_int_equal(enc_dec(&f), -EBADMSG);
	f = valid(KVR_PROTO_OP_PUT, false, 7);
	f.flags |= KVR_PROTO_F_CRC;
	assert_int_equal(enc_dec(&f), -EBADMSG);
	f = valid(KVR_PROTO_OP_STATS, true, 7);
	f.flags |= KVR_PROTO_F_CRC;
	assert_int_equal(enc_dec(&f), -EBADMSG);
	f = valid(KVR_PROTO_OP_GET, true, 7);
	assert_int_equal(kvr_frame_trailer(&f), 0);
}

static void host_port(void **state)
{
	char host[16];
	int port = -1;

	(void)state;
	assert_int_equal(kvr_proto_hostport("10.0.0.1:7700", host, sizeof(host), &port), 0);
	assert_string_equal(host, "10.0.0.1");
	assert_int_equal(port, 7700);
	assert_int_equal(kvr_proto_hostport("[::1]:0", host, sizeof(host), &port), 0);
	assert_string_equal(host, "::1");
	assert_int_equal(port, 0);
	assert_int_equal(kvr_proto_hostport(":65535", host, sizeof(host), &port), 0);
	assert_string_equal(host, "");
	assert_int_equal(port, 65535);
	static const char *bad[] = {"host",	"host:",  "h:65536",
				    "h:123456", "h:7x",	  "::1:5",
				    "[::1:5",	"[::1]5", "a-very-long-host-name:1"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(kvr_proto_hostport(bad[i], host, sizeof(host), &port), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(round_trip),
	    cmocka_unit_test(wire_layout),
	    cmocka_unit_test(truncated),
	    cmocka_unit_test(bad_magic_version),
	    cmocka_unit_test(bad_opcode_flags_reserved),
	    cmocka_unit_test(bad_status),
	    cmocka_unit_test(key_lengths),
	    cmocka_unit_test(payload_limits),
	    cmocka_unit_test(payload_not_allowed),
	    cmocka_unit_test(hello_body),
	    cmocka_unit_test(hello_rdma),
	    cmocka_unit_test(host_port),
	    cmocka_unit_test(crc_flag),
	    cmocka_unit_test(ids_basic),
	    cmocka_unit_test(ids_model),
	    cmocka_unit_test(fuzz_headers),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
