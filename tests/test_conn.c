/* SPDX-License-Identifier: MIT */
/*
 * transport/conn.c: framed connections over a loopback TCP pair, both ends
 * in this process on one engine. Small and large payloads, multi-SGE
 * destinations, discarded payloads, zero-copy and plain sends, bursts that
 * need several sendmsg calls, a peer closing mid-frame, and a bad header.
 */
#include "fixtures.h"
#include "transport/conn.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAXF 4096
#define BUF  ((8 << 20) + 4096) /* room for a guard byte after 8 MiB */

struct end {
	struct kvr_conn c;
	bool closed;
	int close_err;
	uint32_t frames, payloads;
	uint64_t last_id;
	/* destination for large payloads: nsge pieces of buf */
	uint8_t *buf;
	struct kvr_sgx dst[8];
	uint32_t ndst;
	bool discard;
	uint64_t small_sum;
	uint64_t got_len[MAXF];
	uint64_t got_id[MAXF];
	uint32_t got_crc[MAXF]; /* the trailer of frame i (0: none) */
};

struct sent {
	struct kvr_tx tx;
	struct kvr_sgx sgx[4];
	int done_err;
	bool done;
};

static int on_frame(struct kvr_conn *c, const struct kvr_frame *f, const uint8_t *key,
		    const uint8_t *small, struct kvr_rx_dest *dst)
{
	struct end *e = c->owner;

	(void)key;
	if (e->frames < MAXF) {
		e->got_len[e->frames] = f->payload_len;
		e->got_id[e->frames] = f->id;
		e->got_crc[e->frames] = small ? f->crc : 0;
	}
	e->frames++;
	e->last_id = f->id;
	if (small) {
		for (uint64_t i = 0; i < f->payload_len; i++)
			e->small_sum += small[i];
		return 0;
	}
	if (f->payload_len && !e->discard) {
		dst->sgx = e->dst;
		dst->nsge = e->ndst;
	}
	return 0;
}

static void on_payload(struct kvr_conn *c, const struct kvr_frame *f)
{
	struct end *e = c->owner;

	if (e->frames && e->frames <= MAXF)
		e->got_crc[e->frames - 1] = f->crc;
	e->payloads++;
}

static void on_close(struct kvr_conn *c, int err)
{
	struct end *e = c->owner;

	e->closed = true;
	e->close_err = err;
}

static const struct kvr_conn_ops ops = {
    .on_frame = on_frame,
    .on_payload = on_payload,
    .on_close = on_close,
};

static void sent_done(struct kvr_tx *tx, int err)
{
	struct sent *s = KVR_CONTAINER_OF(tx, struct sent, tx);

	s->done = true;
	s->done_err = err;
}

/* A connected loopback TCP pair. */
static void tcp_pair(int fd[2])
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(a);
	int l = socket(AF_INET, SOCK_STREAM, 0);

	assert_true(l >= 0);
	assert_int_equal(bind(l, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(l, 1), 0);
	assert_int_equal(getsockname(l, (struct sockaddr *)&a, &len), 0);
	fd[0] = socket(AF_INET, SOCK_STREAM, 0);
	assert_int_equal(connect(fd[0], (struct sockaddr *)&a, sizeof(a)), 0);
	fd[1] = accept(l, NULL, NULL);
	assert_true(fd[1] >= 0);
	close(l);
}

struct pair {
	kvr_engine *e;
	struct end a, b; /* a sends, b receives (and the reverse for acks) */
};

static void pair_up(struct pair *p, uint32_t zc_min)
{
	int fd[2];

	memset(p, 0, sizeof(*p));
	p->e = kvt_engine();
	tcp_pair(fd);
	assert_int_equal(kvr_conn_init(&p->a.c, p->e, &ops, &p->a, NULL, zc_min), 0);
	assert_int_equal(kvr_conn_init(&p->b.c, p->e, &ops, &p->b, NULL, zc_min), 0);
	p->a.c.lim = &kvr_proto_default_limits;
	p->b.c.lim = &kvr_proto_default_limits;
	kvr_conn_adopt(&p->a.c, fd[0]);
	kvr_conn_adopt(&p->b.c, fd[1]);
}

static void pump_until(struct pair *p, bool *cond, int ms)
{
	for (int i = 0; i < ms && !*cond; i++)
		assert_true(kvr_engine_poll(p->e, 1) >= 0);
	assert_true(*cond);
}

static void pair_down(struct pair *p)
{
	kvr_conn_close(&p->a.c, 0);
	kvr_conn_close(&p->b.c, 0);
	pump_until(p, &p->a.closed, 5000);
	pump_until(p, &p->b.closed, 5000);
	kvr_conn_fini(&p->a.c);
	kvr_conn_fini(&p->b.c);
	kvr_engine_destroy(p->e);
}

static void put_frame(struct pair *p, struct sent *s, uint64_t id, uint8_t *data, size_t len,
		      uint32_t nsge)
{
	static const uint8_t key[] = "some-key";
	struct kvr_frame f = {
	    .opcode = KVR_PROTO_OP_PUT, .id = id, .key_len = sizeof(key) - 1, .payload_len = len};
	size_t off = 0;

	memset(s, 0, sizeof(*s));
	for (uint32_t i = 0; i < nsge; i++) {
		size_t k = i == nsge - 1 ? len - off : len / nsge;

		s->sgx[i] = (struct kvr_sgx){data + off, k, NULL};
		off += k;
	}
	s->tx.done = sent_done;
	s->tx.key = key;
	s->tx.sgx = s->sgx;
	s->tx.nsge = nsge;
	kvr_conn_send(&p->a.c, &s->tx, &f);
}

static void large_and_small(void **state, uint32_t zc_min)
{
	static const size_t sizes[] = {
	    0, 1, 100, KVR_CONN_SMALL, KVR_CONN_SMALL + 1, 65536, (1 << 20) + 7, 8 << 20};
	const size_t n = sizeof(sizes) / sizeof(sizes[0]);
	struct pair p;
	struct sent s[8];
	uint8_t *src = kvt_alloc_mem(BUF), *dst = kvt_alloc_mem(BUF);

	(void)state;
	pair_up(&p, zc_min);
	for (size_t i = 0; i < n; i++) {
		size_t len = sizes[i];
		uint32_t nsge = len >= 4 ? 4 : 1;
		bool done = false;

		kvt_fill(src, len, i + 1);
		memset(dst, 0, len + 1);
		/* destination: three uneven pieces */
		p.b.ndst = 3;
		p.b.dst[0] = (struct kvr_sgx){dst, len / 3, NULL};
		p.b.dst[1] = (struct kvr_sgx){dst + len / 3, len / 2 - len / 3, NULL};
		p.b.dst[2] = (struct kvr_sgx){dst + len / 2, len - len / 2, NULL};
		p.b.frames = p.b.payloads = 0;
		p.b.small_sum = 0;
		put_frame(&p, &s[i], 100 + i, src, len, nsge);
		for (int k = 0; k < 10000 && !done; k++) {
			assert_true(kvr_engine_poll(p.e, 1) >= 0);
			done = s[i].done && p.b.frames == 1 &&
			       (len <= KVR_CONN_SMALL || p.b.payloads == 1);
		}
		assert_true(done);
		assert_int_equal(s[i].done_err, 0);
		assert_int_equal(p.b.last_id, 100 + i);
		if (len > KVR_CONN_SMALL) {
			assert_true(kvt_check(dst, len, i + 1));
			assert_int_equal(dst[len], 0);
		} else {
			uint64_t sum = 0;

			for (size_t k = 0; k < len; k++)
				sum += src[k];
			assert_int_equal(p.b.small_sum, sum);
		}
	}
	if (zc_min != UINT32_MAX && (p.a.c.zc_ok || p.a.c.st.zc_copied))
		assert_true(p.a.c.st.zc_sends > 0);
	if (zc_min == UINT32_MAX)
		assert_int_equal(p.a.c.st.zc_sends, 0);
	pair_down(&p);
	kvt_free_mem(src, BUF);
	kvt_free_mem(dst, BUF);
}

static void frames_zero_copy(void **state)
{
	large_and_small(state, 16384);
}

static void frames_plain(void **state)
{
	large_and_small(state, UINT32_MAX);
}

/* Loopback TCP copies "zero-copy" sends on delivery; a kernel that says so
 * in its notifications (6.2 and later) makes the connection switch to plain
 * sends after a few. Every frame still arrives intact. */
static void zero_copy_gives_way_when_copied(void **state)
{
	enum { N = 12, LEN = 256 << 10 };
	struct pair p;
	struct sent s;
	uint8_t *src = kvt_alloc_mem(BUF), *dst = kvt_alloc_mem(BUF);

	(void)state;
	pair_up(&p, 16384);
	if (!p.a.c.zc_ok) {
		pair_down(&p);
		kvt_free_mem(src, BUF);
		kvt_free_mem(dst, BUF);
		skip(); /* no SENDMSG_ZC on this kernel */
	}
	for (int i = 0; i < N; i++) {
		bool done = false;

		kvt_fill(src, LEN, 77 + (uint64_t)i);
		p.b.ndst = 1;
		p.b.dst[0] = (struct kvr_sgx){dst, LEN, NULL};
		p.b.frames = p.b.payloads = 0;
		put_frame(&p, &s, 500 + (uint64_t)i, src, LEN, 2);
		for (int k = 0; k < 10000 && !done; k++) {
			assert_true(kvr_engine_poll(p.e, 1) >= 0);
			done = s.done && p.b.payloads == 1;
		}
		assert_true(done);
		assert_int_equal(s.done_err, 0);
		assert_true(kvt_check(dst, LEN, 77 + (uint64_t)i));
	}
	print_message("zero-copy sends %llu, reported copied %llu, plain sends %llu%s\n",
		      (unsigned long long)p.a.c.st.zc_sends, (unsigned long long)p.a.c.st.zc_copied,
		      (unsigned long long)p.a.c.st.plain_sends,
		      p.e->zc_no_report ? " (this kernel does not report copies)" : "");
	if (p.e->zc_no_report) {
		assert_true(p.a.c.zc_ok);
	} else {
		assert_true(p.a.c.st.zc_copied >= 4);
		assert_false(p.a.c.zc_ok);
		assert_true(p.a.c.st.plain_sends > 0);
	}
	pair_down(&p);
	kvt_free_mem(src, BUF);
	kvt_free_mem(dst, BUF);
}

/* GET answers with a crc trailer, small and large, many in one round: the
 * trailers reach the owner (f->crc), never the payload's memory, and the
 * frames after them parse; a discarded payload takes its trailer along. */
static void crc_trailers(void **state)
{
	static const size_t sizes[] = {100, 4096, 4097, 65536, (1 << 20) + 7, 10, 300000};
	enum { N = sizeof(sizes) / sizeof(sizes[0]) };
	struct pair p;
	static struct sent s[N];
	uint8_t *src = kvt_alloc_mem(BUF), *dst = kvt_alloc_mem(BUF);

	(void)state;
	for (int round = 0; round < 2; round++) {
		bool done = false;

		pair_up(&p, UINT32_MAX);
		p.b.discard = round == 1;
		kvt_fill(src, 2 << 20, 5);
		memset(dst, 0, BUF);
		p.b.ndst = 1;
		p.b.dst[0] = (struct kvr_sgx){dst, BUF, NULL};
		for (int i = 0; i < N; i++) {
			struct kvr_frame f = {.opcode = KVR_PROTO_OP_GET,
					      .flags = KVR_PROTO_F_RESPONSE | KVR_PROTO_F_CRC,
					      .id = 900 + (uint64_t)i,
					      .payload_len = sizes[i],
					      .crc = 0xa5a50000u + (uint32_t)i};

			memset(&s[i], 0, sizeof(s[i]));
			s[i].sgx[0] = (struct kvr_sgx){src, sizes[i], NULL};
			s[i].tx.done = sent_done;
			s[i].tx.sgx = s[i].sgx;
			s[i].tx.nsge = 1;
			kvr_conn_send(&p.a.c, &s[i].tx, &f);
		}
		for (int k = 0; k < 20000 && !done; k++) {
			assert_true(kvr_engine_poll(p.e, 1) >= 0);
			done = p.b.frames == N && s[N - 1].done;
		}
		assert_true(done);
		assert_false(p.b.closed);
		for (int i = 0; i < N; i++) {
			assert_int_equal(p.b.got_id[i], 900 + (uint64_t)i);
			assert_int_equal(p.b.got_len[i], sizes[i]);
			if (!round || sizes[i] <= KVR_CONN_SMALL)
				assert_int_equal(p.b.got_crc[i], 0xa5a50000u + (uint32_t)i);
		}
		/* payloads landed in dst, their trailers did not: after the last
		 * one are the earlier, longer one's bytes, after that one zeros */
		if (!round) {
			assert_true(kvt_check(dst, 300000, 5));
			assert_memory_equal(dst + 300000, src + 300000, 64);
			for (size_t k = (1 << 20) + 7; k < (1 << 20) + 7 + 64; k++)
				assert_int_equal(dst[k], 0);
		}
		pair_down(&p);
	}
	kvt_free_mem(src, BUF);
	kvt_free_mem(dst, BUF);
}

/* Many frames queued in one round: gathered into few sendmsg calls (more
 * than one: each takes at most KVR_CONN_IOV iovecs), parsed back in order;
 * large ones discarded by the receiver. */
static void burst_and_discard(void **state)
{
	enum { N = 2000 };
	struct pair p;
	struct sent *s = calloc(N, sizeof(*s));
	uint8_t *src = kvt_alloc_mem(1 << 20);
	bool all = false;

	(void)state;
	assert_non_null(s);
	pair_up(&p, 16384);
	p.b.discard = true;
	kvt_fill(src, 1 << 20, 7);
	for (uint32_t i = 0; i < N; i++)
		put_frame(&p, &s[i], i, src, i % 10 == 0 ? 100000 : 64, 2);
	for (int k = 0; k < 20000 && !all; k++) {
		assert_true(kvr_engine_poll(p.e, 1) >= 0);
		all = p.b.frames == N;
	}
	assert_true(all);
	for (uint32_t i = 0; i < N; i++) {
		assert_int_equal(p.b.got_id[i], i);
		assert_int_equal(p.b.got_len[i], i % 10 == 0 ? 100000 : 64);
	}
	assert_int_equal(p.b.payloads, N / 10);
	assert_true(p.a.c.st.zc_sends + p.a.c.st.plain_sends >= 2);
	assert_true(p.a.c.st.zc_sends + p.a.c.st.plain_sends < N / 10);
	for (uint32_t i = 0; i < N; i++)
		pump_until(&p, &s[i].done, 5000);
	pair_down(&p);
	kvt_free_mem(src, 1 << 20);
	free(s);
}

/* A queued frame can be withdrawn before it is sent. */
static void unsend(void **state)
{
	struct pair p;
	struct sent s[3];
	uint8_t data[64] = {1};

	(void)state;
	pair_up(&p, 16384);
	put_frame(&p, &s[0], 1, data, 64, 1);
	put_frame(&p, &s[1], 2, data, 64, 1);
	put_frame(&p, &s[2], 3, data, 64, 1);
	assert_true(kvr_conn_unsend(&p.a.c, &s[1].tx));
	assert_false(kvr_conn_unsend(&p.a.c, &s[1].tx));
	pump_until(&p, &s[2].done, 5000);
	for (int k = 0; k < 100 && p.b.frames < 2; k++)
		assert_true(kvr_engine_poll(p.e, 1) >= 0);
	assert_int_equal(p.b.frames, 2);
	assert_int_equal(p.b.got_id[0], 1);
	assert_int_equal(p.b.got_id[1], 3);
	assert_false(s[1].done);
	assert_false(kvr_conn_unsend(&p.a.c, &s[2].tx)); /* already sent */
	pair_down(&p);
}

/* Garbage on the wire closes the receiving side with -EPROTO; a peer that
 * vanishes mid-frame closes it with -ECONNRESET. */
static void bad_header_and_cut(void **state)
{
	struct pair p;
	int fd[2];
	uint8_t junk[64];
	uint8_t hdr[KVR_PROTO_HDR_LEN];
	struct kvr_frame f = {
	    .opcode = KVR_PROTO_OP_PUT, .id = 1, .key_len = 3, .payload_len = 1000};

	(void)state;
	memset(junk, 0x5a, sizeof(junk));
	memset(&p, 0, sizeof(p));
	p.e = kvt_engine();
	tcp_pair(fd);
	assert_int_equal(kvr_conn_init(&p.b.c, p.e, &ops, &p.b, &kvr_proto_default_limits, 0), 0);
	kvr_conn_adopt(&p.b.c, fd[1]);
	assert_int_equal(write(fd[0], junk, sizeof(junk)), (ssize_t)sizeof(junk));
	pump_until(&p, &p.b.closed, 5000);
	assert_int_equal(p.b.close_err, -EPROTO);
	kvr_conn_fini(&p.b.c);
	close(fd[0]);

	memset(&p.b, 0, sizeof(p.b));
	tcp_pair(fd);
	assert_int_equal(kvr_conn_init(&p.b.c, p.e, &ops, &p.b, &kvr_proto_default_limits, 0), 0);
	kvr_conn_adopt(&p.b.c, fd[1]);
	kvr_proto_encode(hdr, &f);
	assert_int_equal(write(fd[0], hdr, sizeof(hdr)), (ssize_t)sizeof(hdr));
	assert_int_equal(write(fd[0], "key", 3), 3);
	close(fd[0]);
	pump_until(&p, &p.b.closed, 5000);
	assert_int_equal(p.b.close_err, -ECONNRESET);
	kvr_conn_fini(&p.b.c);
	kvr_engine_destroy(p.e);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(frames_zero_copy),
	    cmocka_unit_test(frames_plain),
	    cmocka_unit_test(zero_copy_gives_way_when_copied),
	    cmocka_unit_test(crc_trailers),
	    cmocka_unit_test(burst_and_discard),
	    cmocka_unit_test(unsend),
	    cmocka_unit_test(bad_header_and_cut),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
