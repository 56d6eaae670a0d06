/* SPDX-License-Identifier: MIT */
/*
 * transport/rdma_msg.c: every request and answer shape round-trips; each
 * malformed case is refused with its errno; truncations and random
 * mutations never read out of bounds (run under ASan) and anything accepted
 * keeps the decoder's promises.
 */
#include "fixtures.h"
#include "transport/rdma_msg.h"

#include <stdlib.h>
#include <string.h>

static const struct kvr_rmsg_limits lim = {
    .max_desc = 256, .max_inline = 4096, .max_payload = 16ull << 30};

static uint8_t buf[16384];

static int enc_dec(const struct kvr_rmsg *m, const struct kvr_rdesc *d, const void *inl,
		   struct kvr_rmsg *out)
{
	int n = kvr_rmsg_encode(buf, sizeof(buf), m, d, inl);

	assert_true(n > 0);
	return kvr_rmsg_decode(buf, (size_t)n, &lim, out);
}

static struct kvr_rmsg req(uint8_t op, uint64_t payload, uint16_t ndesc)
{
	struct kvr_rmsg m = {.opcode = op, .id = 0x1122334455667788ull};

	if (op != KVR_PROTO_OP_STATS) {
		m.key = (const uint8_t *)"layer-7/chunk-42";
		m.key_len = 16;
	}
	m.payload_len = payload;
	m.ndesc = ndesc;
	return m;
}

static void round_trips(void **state)
{
	struct kvr_rdesc d[3] = {{0x1000, 7, 100000}, {0x7f0000001000ull, 8, 5000}, {0, 9, 1}};
	uint8_t small[KVR_RMSG_INLINE];
	struct kvr_rmsg m, out;

	(void)state;
	memset(small, 0x5a, sizeof(small));
	/* a large put described by its descriptors */
	m = req(KVR_PROTO_OP_PUT, 105001, 3);
	assert_int_equal(enc_dec(&m, d, NULL, &out), 0);
	assert_int_equal(out.ndesc, 3);
	assert_true(out.payload_len == 105001 && out.id == m.id);
	assert_memory_equal(out.key, m.key, m.key_len);
	for (uint32_t i = 0; i < 3; i++) {
		struct kvr_rdesc x = kvr_rmsg_desc(&out, i);

		assert_true(x.addr == d[i].addr && x.rkey == d[i].rkey && x.len == d[i].len);
	}
	/* small puts inline, 0 to KVR_RMSG_INLINE bytes */
	for (uint64_t len = 0; len <= KVR_RMSG_INLINE; len += len < 8 ? 1 : 1021) {
		m = req(KVR_PROTO_OP_PUT, len, 0);
		m.flags = KVR_RMSG_F_INLINE;
		assert_int_equal(enc_dec(&m, NULL, small, &out), 0);
		assert_true(out.payload_len == len);
		if (len)
			assert_memory_equal(out.inl, small, len);
	}
	/* a get names its capacity; exists, remove, stats carry nothing */
	m = req(KVR_PROTO_OP_GET, 105001, 3);
	assert_int_equal(enc_dec(&m, d, NULL, &out), 0);
	for (uint8_t op = KVR_PROTO_OP_EXISTS; op <= KVR_PROTO_OP_STATS; op++) {
		m = req(op, 0, 0);
		assert_int_equal(enc_dec(&m, NULL, NULL, &out), 0);
		assert_int_equal(out.opcode, op);
	}
	/* answers */
	m = (struct kvr_rmsg){
	    .opcode = KVR_PROTO_OP_GET, .flags = KVR_RMSG_F_RESPONSE, .id = 5, .payload_len = 99};
	assert_int_equal(enc_dec(&m, NULL, NULL, &out), 0);
	assert_true(out.payload_len == 99 && out.status == 0);
	m.status = -ENOENT;
	m.payload_len = 0;
	assert_int_equal(enc_dec(&m, NULL, NULL, &out), 0);
	assert_int_equal(out.status, -ENOENT);
	m = (struct kvr_rmsg){.opcode = KVR_PROTO_OP_EXISTS,
			      .flags = KVR_RMSG_F_RESPONSE | KVR_RMSG_F_INLINE,
			      .payload_len = 8};
	assert_int_equal(enc_dec(&m, NULL, "\x01\0\0\0\0\0\0\0", &out), 0);
	m = (struct kvr_rmsg){.opcode = KVR_PROTO_OP_STATS,
			      .flags = KVR_RMSG_F_RESPONSE | KVR_RMSG_F_INLINE,
			      .payload_len = 13};
	assert_int_equal(enc_dec(&m, NULL, "{\"objects\":1}", &out), 0);
	for (uint8_t op = KVR_PROTO_OP_PUT; op <= KVR_PROTO_OP_REMOVE; op += 3) {
		m = (struct kvr_rmsg){.opcode = op, .flags = KVR_RMSG_F_RESPONSE};
		assert_int_equal(enc_dec(&m, NULL, NULL, &out), 0);
	}
	/* encode refuses a short buffer */
	m = req(KVR_PROTO_OP_PUT, 105001, 3);
	assert_int_equal(kvr_rmsg_encode(buf, kvr_rmsg_size(16, 3, 0) - 1, &m, d, NULL), -EMSGSIZE);
}

static void malformed(void **state)
{
	struct kvr_rdesc d[2] = {{0x1000, 7, 8192}, {0x9000, 7, 8192}};
	struct kvr_rmsg m, out;
	int n;

	(void)state;
	/* bad magic, version, opcode, flag, reserved byte */
	m = req(KVR_PROTO_OP_GET, 16384, 2);
	n = kvr_rmsg_encode(buf, sizeof(buf), &m, d, NULL);
	for (int k = 0; k < 5; k++) {
		static const int at[] = {0, 4, 5, 6, 7};
		static const uint8_t val[] = {'X', 2, 1, 0x80, 1};
		static const int err[] = {-EPROTO, -EPROTONOSUPPORT, -EBADMSG, -EBADMSG, -EBADMSG};
		uint8_t saved = buf[at[k]];

		buf[at[k]] = val[k];
		assert_int_equal(kvr_rmsg_decode(buf, (size_t)n, &lim, &out), err[k]);
		buf[at[k]] = saved;
	}
	buf[5] = 7; /* past STATS */
	assert_int_equal(kvr_rmsg_decode(buf, (size_t)n, &lim, &out), -EBADMSG);
	buf[5] = KVR_PROTO_OP_GET;
	/* short and trailing bytes */
	for (int len = 0; len < n; len++)
		assert_true(kvr_rmsg_decode(buf, (size_t)len, &lim, &out) < 0);
	assert_int_equal(kvr_rmsg_decode(buf, (size_t)n + 1, &lim, &out), -EBADMSG);

	/* a request with a status; a keyed op without a key; STATS with one */
	m = req(KVR_PROTO_OP_REMOVE, 0, 0);
	m.status = -1;
	assert_int_equal(enc_dec(&m, NULL, NULL, &out), -EBADMSG);
	m = req(KVR_PROTO_OP_EXISTS, 0, 0);
	m.key_len = 0;
	assert_int_equal(enc_dec(&m, NULL, NULL, &out), -EBADMSG);
	m = req(KVR_PROTO_OP_STATS, 0, 0);
	m.key = (const uint8_t *)"k";
	m.key_len = 1;
	assert_int_equal(enc_dec(&m, NULL, NULL, &out), -EBADMSG);
	/* key and descriptor count over the limits */
	m = req(KVR_PROTO_OP_EXISTS, 0, 0);
	m.key_len = KVR_MAX_KEY + 1;
	m.key = (const uint8_t *)calloc(1, KVR_MAX_KEY + 1);
	assert_int_equal(enc_dec(&m, NULL, NULL, &out), -EMSGSIZE);
	free((void *)m.key);
	{
		struct kvr_rdesc *many = calloc(257, sizeof(*many));

		for (int i = 0; i < 257; i++)
			many[i] = (struct kvr_rdesc){4096ull * (uint64_t)i, 1, 4096};
		m = req(KVR_PROTO_OP_GET, 257 * 4096, 257);
		assert_int_equal(enc_dec(&m, many, NULL, &out), -EMSGSIZE);
		free(many);
	}
	/* descriptors: empty one, wrapping range, sum != length */
	m = req(KVR_PROTO_OP_GET, 16384, 2);
	d[1].len = 0;
	assert_int_equal(enc_dec(&m, d, NULL, &out), -EBADMSG);
	d[1] = (struct kvr_rdesc){UINT64_MAX - 100, 7, 8192};
	assert_int_equal(enc_dec(&m, d, NULL, &out), -EBADMSG);
	d[1] = (struct kvr_rdesc){0x9000, 7, 8191};
	assert_int_equal(enc_dec(&m, d, NULL, &out), -EBADMSG);
	m = req(KVR_PROTO_OP_PUT, 16384, 2);
	assert_int_equal(enc_dec(&m, d, NULL, &out), -EBADMSG);
	d[1].len = 8192;
	/* puts: small ones must be inline, large ones must not */
	m = req(KVR_PROTO_OP_PUT, 16384, 2);
	assert_int_equal(enc_dec(&m, d, NULL, &out), 0);
	m.flags = KVR_RMSG_F_INLINE;
	m.ndesc = 0;
	m.payload_len = KVR_RMSG_INLINE + 1;
	{
		static uint8_t big[KVR_RMSG_INLINE + 1];
		struct kvr_rmsg_limits wide = lim;

		n = kvr_rmsg_encode(buf, sizeof(buf), &m, NULL, big);
		assert_int_equal(kvr_rmsg_decode(buf, (size_t)n, &lim, &out), -EMSGSIZE);
		wide.max_inline = 8192;
		assert_int_equal(kvr_rmsg_decode(buf, (size_t)n, &wide, &out), -EBADMSG);
	}
	d[0].len = 100;
	m = req(KVR_PROTO_OP_PUT, 100, 1);
	assert_int_equal(enc_dec(&m, d, NULL, &out), -EBADMSG);
	/* descriptors on an op that takes none; inline on a get */
	m = req(KVR_PROTO_OP_REMOVE, 0, 1);
	assert_int_equal(enc_dec(&m, d, NULL, &out), -EBADMSG);
	m = req(KVR_PROTO_OP_GET, 100, 1);
	m.flags = KVR_RMSG_F_INLINE;
	m.ndesc = 0;
	assert_int_equal(enc_dec(&m, NULL, buf + 8000, &out), -EBADMSG);
	/* a put over the object limit */
	{
		struct kvr_rmsg_limits tight = lim;

		d[0].len = 8192;
		m = req(KVR_PROTO_OP_PUT, 16384, 2);
		n = kvr_rmsg_encode(buf, sizeof(buf), &m, d, NULL);
		tight.max_payload = 16383;
		assert_int_equal(kvr_rmsg_decode(buf, (size_t)n, &tight, &out), -EMSGSIZE);
	}

	/* answers: a positive or huge status, a key, a payload with an error,
	 * EXISTS without exactly 8 inline bytes, STATS not inline */
	m = (struct kvr_rmsg){
	    .opcode = KVR_PROTO_OP_PUT, .flags = KVR_RMSG_F_RESPONSE, .status = 1};
	assert_int_equal(enc_dec(&m, NULL, NULL, &out), -EBADMSG);
	m.status = -4096;
	assert_int_equal(enc_dec(&m, NULL, NULL, &out), -EBADMSG);
	m.status = 0;
	m.key = (const uint8_t *)"k";
	m.key_len = 1;
	assert_int_equal(enc_dec(&m, NULL, NULL, &out), -EBADMSG);
	m = (struct kvr_rmsg){.opcode = KVR_PROTO_OP_GET,
			      .flags = KVR_RMSG_F_RESPONSE,
			      .status = -5,
			      .payload_len = 1};
	assert_int_equal(enc_dec(&m, NULL, NULL, &out), -EBADMSG);
	m = (struct kvr_rmsg){.opcode = KVR_PROTO_OP_EXISTS,
			      .flags = KVR_RMSG_F_RESPONSE | KVR_RMSG_F_INLINE,
			      .payload_len = 7};
	assert_int_equal(enc_dec(&m, NULL, "1234567", &out), -EBADMSG);
	m = (struct kvr_rmsg){
	    .opcode = KVR_PROTO_OP_STATS, .flags = KVR_RMSG_F_RESPONSE, .payload_len = 3};
	assert_int_equal(enc_dec(&m, NULL, NULL, &out), -EBADMSG);
	m = (struct kvr_rmsg){
	    .opcode = KVR_PROTO_OP_REMOVE, .flags = KVR_RMSG_F_RESPONSE, .payload_len = 3};
	assert_int_equal(enc_dec(&m, NULL, NULL, &out), -EBADMSG);
}

/* Random mutations of valid messages: never an out-of-bounds read, and
 * whatever is accepted is internally consistent. */
static void mutations(void **state)
{
	struct kvr_rdesc d[4] = {
	    {0x1000, 1, 5000}, {0x3000, 2, 6000}, {0x9000, 3, 7000}, {0, 4, 1}};
	uint64_t seed = kvt_env_u64("KVR_TEST_SEED", 12345);

	(void)state;
	for (int iter = 0; iter < 200000; iter++) {
		struct kvr_rmsg m = req((uint8_t)(KVR_PROTO_OP_PUT + iter % 5), 0, 0), out;
		uint8_t *heap;
		int n;

		if (m.opcode == KVR_PROTO_OP_PUT || m.opcode == KVR_PROTO_OP_GET) {
			m.ndesc = 4;
			m.payload_len = 18001;
		}
		n = kvr_rmsg_encode(buf, sizeof(buf), &m, d, NULL);
		for (int k = (int)(kvt_rand(&seed) % 4); k >= 0; k--)
			buf[kvt_rand(&seed) % (uint64_t)n] ^=
			    (uint8_t)(1u << (kvt_rand(&seed) % 8));
		if (kvt_rand(&seed) % 4 == 0)
			n = (int)(kvt_rand(&seed) % (uint64_t)(n + 1));
		heap = malloc(n ? (size_t)n : 1);
		memcpy(heap, buf, (size_t)n);
		if (kvr_rmsg_decode(heap, (size_t)n, &lim, &out) == 0) {
			uint64_t sum = 0;

			assert_true(kvr_rmsg_size(out.key_len, out.ndesc,
						  out.inl ? out.payload_len : 0) == (size_t)n);
			for (uint32_t i = 0; i < out.ndesc; i++) {
				struct kvr_rdesc x = kvr_rmsg_desc(&out, i);

				assert_true(x.len > 0 && x.addr + x.len > x.addr);
				sum += x.len;
			}
			if (!(out.flags & KVR_RMSG_F_RESPONSE) &&
			    (out.opcode == KVR_PROTO_OP_GET ||
			     (out.opcode == KVR_PROTO_OP_PUT && !out.inl)))
				assert_true(sum == out.payload_len);
		}
		free(heap);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(round_trips),
	    cmocka_unit_test(malformed),
	    cmocka_unit_test(mutations),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
