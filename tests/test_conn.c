/* SPDX-License-Identifier: MIT */
/*
 * transport/conn.c: framed connections over a loopback TCP pair, both ends
 * in this process on one engine. Small and large payloads, multi-SGE
 * destinations, discarded payloads, zero-copy and plain sends, bursts that
 * need several sendmsg calls, a peer closing mid-frame, and a bad header.
 * Then the TCP client's connections (transport/tcp_node.c) against a fake
 * server on a raw socket: HELLOs and answers no real server would send.
 */
#include "fixtures.h"
#include "transport/conn.h"
#include "transport/tcp.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
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

/* ------------------------------------ the TCP client against a fake server */

/* A listening socket of this thread playing a kvring server by hand, with
 * the client's engine pumped whenever it waits for the client. */
struct fake {
	kvr_engine *e;
	int lfd, port;
	char uri[64];
};

static void fake_listen(struct fake *f)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(a);

	f->e = kvt_engine();
	f->lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	assert_true(f->lfd >= 0);
	assert_int_equal(bind(f->lfd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(f->lfd, 4096), 0);
	assert_int_equal(getsockname(f->lfd, (struct sockaddr *)&a, &len), 0);
	f->port = ntohs(a.sin_port);
	snprintf(f->uri, sizeof(f->uri), "tcp://127.0.0.1:%d", f->port);
}

/* The client's next connection (10 s at most). */
static int fake_accept(struct fake *f)
{
	for (int i = 0; i < 10000; i++) {
		int fd = accept(f->lfd, NULL, NULL);

		if (fd >= 0)
			return fd;
		assert_int_equal(errno, EAGAIN);
		assert_true(kvr_engine_poll(f->e, 1) >= 0);
	}
	fail_msg("the client never connected");
	return -1;
}

/* n bytes from the client on fd (10 s at most); false on EOF. */
static bool fake_read(struct fake *f, int fd, void *buf, size_t n)
{
	uint8_t *p = buf;

	for (int i = 0; n && i < 10000;) {
		ssize_t k = recv(fd, p, n, MSG_DONTWAIT);

		if (k == 0)
			return false;
		if (k > 0) {
			p += k;
			n -= (size_t)k;
			continue;
		}
		assert_int_equal(errno, EAGAIN);
		assert_true(kvr_engine_poll(f->e, 1) >= 0);
		i++;
	}
	assert_int_equal(n, 0);
	return true;
}

/* The client's next request on fd: header into *fr, its payload (up to
 * cap bytes) into body; the key is skipped. */
static void fake_request(struct fake *f, int fd, struct kvr_frame *fr, void *body, size_t cap)
{
	uint8_t hdr[KVR_PROTO_HDR_LEN], key[KVR_MAX_KEY];

	assert_true(fake_read(f, fd, hdr, sizeof(hdr)));
	assert_int_equal(kvr_proto_decode(hdr, sizeof(hdr), NULL, fr), KVR_PROTO_HDR_LEN);
	assert_false(kvr_frame_is_response(fr));
	assert_true(fake_read(f, fd, key, fr->key_len));
	assert_true(fr->payload_len <= cap);
	assert_true(fake_read(f, fd, body, fr->payload_len));
}

static void fake_send(int fd, const struct kvr_frame *fr, const void *payload, size_t len)
{
	uint8_t hdr[KVR_PROTO_HDR_LEN];

	kvr_proto_encode(hdr, fr);
	assert_int_equal(write(fd, hdr, sizeof(hdr)), (ssize_t)sizeof(hdr));
	if (len)
		assert_int_equal(write(fd, payload, len), (ssize_t)len);
}

/* Answer the client's HELLO on fd: its shard, out of `shards`. Returns the
 * shard it asked for. */
static uint16_t fake_hello(struct fake *f, int fd, uint16_t shards)
{
	uint8_t body[KVR_PROTO_MAX_HELLO];
	struct kvr_frame fr;
	struct kvr_hello h;
	int n;

	fake_request(f, fd, &fr, body, sizeof(body));
	assert_int_equal(fr.opcode, KVR_PROTO_OP_HELLO);
	assert_int_equal(kvr_proto_hello_decode(body, fr.payload_len, &h), (int)fr.payload_len);
	h = (struct kvr_hello){
	    .version_min = 1, .version_max = 1, .shard = h.shard, .shards = shards};
	n = kvr_proto_hello_encode(body, sizeof(body), &h);
	assert_true(n > 0);
	fr.flags = KVR_PROTO_F_RESPONSE;
	fr.payload_len = (uint64_t)n;
	fake_send(fd, &fr, body, (size_t)n);
	return h.shard;
}

static void fake_close(struct fake *f)
{
	kvr_engine_destroy(f->e);
	close(f->lfd);
}

/* No connection is waiting to be accepted. */
static bool fake_no_connect(struct fake *f)
{
	int fd = accept(f->lfd, NULL, NULL);

	if (fd >= 0)
		close(fd);
	return fd < 0;
}

/*
 * A HELLO announcing more shards than a server can have
 * (KVR_PROTO_MAX_SHARDS) is refused as -EPROTO and opens nothing; one at
 * the limit is taken (the client opens a connection per shard).
 */
static void client_shards_bounded(void **state)
{
	struct kvr_connect_opts co = {
	    .size = sizeof(co), .timeout_ms = 10000, .connect_timeout_ms = 5000};
	struct kvt_done *d = calloc(1, sizeof(*d));
	kvr_obj ob = {"shardy", 6, NULL, 0};
	struct rlimit rl;
	struct fake f;
	kvr_target *t;
	int fd, other;

	(void)state;
	fake_listen(&f);
	assert_int_equal(kvr_connect(f.e, f.uri, &co, &t), 0);
	assert_int_equal(kvr_exists(t, &ob, 1, kvt_batch_cb, d), 0);
	fd = fake_accept(&f);
	assert_int_equal(fake_hello(&f, fd, KVR_PROTO_MAX_SHARDS + 1), 0);
	assert_int_equal(kvt_wait(f.e, d, 10000), 1);
	assert_int_equal(d->results[0], -EPROTO);
	assert_true(fake_no_connect(&f));
	assert_int_equal(kvr_target_close(t), 0);
	close(fd);

	/* at the limit: a connection per shard needs the file descriptors */
	assert_int_equal(getrlimit(RLIMIT_NOFILE, &rl), 0);
	if (rl.rlim_cur < 4096 && rl.rlim_max >= 4096) {
		rl.rlim_cur = 4096;
		assert_int_equal(setrlimit(RLIMIT_NOFILE, &rl), 0);
	}
	if (rl.rlim_cur >= 4096) {
		memset(d, 0, sizeof(*d));
		assert_int_equal(kvr_connect(f.e, f.uri, &co, &t), 0);
		assert_int_equal(kvr_exists(t, &ob, 1, kvt_batch_cb, d), 0);
		fd = fake_accept(&f);
		assert_int_equal(fake_hello(&f, fd, KVR_PROTO_MAX_SHARDS), 0);
		other = fake_accept(&f);
		assert_true(fake_hello(&f, other, KVR_PROTO_MAX_SHARDS) > 0);
		assert_int_equal(kvr_target_close(t), 0);
		close(other);
		close(fd);
	} else {
		print_message("RLIMIT_NOFILE under 4096: %d shards not tried\n",
			      KVR_PROTO_MAX_SHARDS);
	}
	fake_close(&f);
	free(d);
}

/*
 * A server that closes the connection in an orderly way before it answers
 * the HELLO (kvring-server does so when its connection table is full) has
 * refused the client: the request waiting for the handshake fails at once,
 * not at its deadline, and the node connects again after its backoff
 * rather than waiting, connectionless, for a handshake that never comes.
 */
static void client_refused_in_handshake(void **state)
{
	struct kvr_connect_opts co = {.size = sizeof(co),
				      .conns = 1,
				      .timeout_ms = 10000,
				      .connect_timeout_ms = 5000,
				      .retry_ms = 10};
	struct kvt_done *d = calloc(1, sizeof(*d));
	kvr_obj ob = {"refused", 7, NULL, 0};
	uint8_t body[KVR_PROTO_MAX_HELLO];
	struct tcp_cluster *cl;
	struct kvr_frame fr;
	struct fake f;
	kvr_target *t;
	uint64_t t0;
	int fd, fd2;

	(void)state;
	fake_listen(&f);
	assert_int_equal(kvr_connect(f.e, f.uri, &co, &t), 0);
	cl = (struct tcp_cluster *)t;
	assert_int_equal(kvr_exists(t, &ob, 1, kvt_batch_cb, d), 0);
	fd = fake_accept(&f);
	/* the HELLO read first, so that the close is a FIN, not a reset */
	fake_request(&f, fd, &fr, body, sizeof(body));
	assert_int_equal(fr.opcode, KVR_PROTO_OP_HELLO);
	t0 = kvr_now_ns();
	assert_int_equal(shutdown(fd, SHUT_WR), 0);
	assert_int_equal(kvt_wait(f.e, d, 10000), 1);
	assert_true(kvr_now_ns() - t0 < 2000000000ull);
	assert_int_equal(d->results[0], -ECONNRESET);
	assert_int_equal(cl->nodes[0].state, NODE_DOWN);
	/* once the backoff is over, the next request connects again */
	while (kvr_now_ns() < cl->nodes[0].retry_ns)
		assert_true(kvr_engine_poll(f.e, 1) >= 0);
	memset(d, 0, sizeof(*d));
	assert_int_equal(kvr_exists(t, &ob, 1, kvt_batch_cb, d), 0);
	fd2 = fake_accept(&f);
	fake_hello(&f, fd2, 1);
	fake_request(&f, fd2, &fr, body, sizeof(body));
	assert_int_equal(fr.opcode, KVR_PROTO_OP_EXISTS);
	fr = (struct kvr_frame){.opcode = KVR_PROTO_OP_EXISTS,
				.flags = KVR_PROTO_F_RESPONSE,
				.id = fr.id,
				.status = -ENOENT};
	fake_send(fd2, &fr, NULL, 0);
	assert_int_equal(kvt_wait(f.e, d, 5000), 1);
	assert_int_equal(d->results[0], -ENOENT);
	assert_int_equal(kvr_target_close(t), 0);
	close(fd);
	close(fd2);
	fake_close(&f);
	free(d);
}

/* A connection of t's only node other than tc. */
static struct tcp_conn *other_conn(kvr_target *t, const struct tcp_conn *tc)
{
	struct tcp_node *n = &((struct tcp_cluster *)t)->nodes[0];

	for (uint32_t i = 0; i < n->nconns; i++)
		if (n->conns[i] && n->conns[i] != tc)
			return n->conns[i];
	return NULL;
}

/*
 * A large answer carrying the id of a GET that another connection of the
 * same node is receiving right now is discarded on the connection it came
 * on: the GET is answered only by its own connection, with its own bytes.
 */
static void client_payload_owner(void **state)
{
	enum { LEN = 64 << 10, FIRST = 1000, EVIL = 8192 };
	struct kvt_done *d = calloc(1, sizeof(*d));
	uint8_t *mem = kvt_alloc_mem(2 * LEN), *src = malloc(LEN), cap[8];
	kvr_sge sg = {mem, LEN};
	kvr_obj ob = {"owned", 5, &sg, 1};
	struct tcp_conn *mine, *evil;
	struct tcp_op *op;
	struct kvr_frame fr;
	struct fake f;
	kvr_target *t;
	kvr_mr *mr;
	int fd[2], a;
	uint64_t want;

	(void)state;
	fake_listen(&f);
	assert_int_equal(kvr_mem_register(f.e, mem, 2 * LEN, 0, &mr), 0);
	assert_int_equal(kvr_connect(f.e, f.uri, NULL, &t), 0); /* 2 connections */
	assert_int_equal(kvr_get(t, &ob, 1, kvt_batch_cb, d), 0);
	fd[0] = fake_accept(&f);
	fake_hello(&f, fd[0], 1);
	fd[1] = fake_accept(&f);
	fake_hello(&f, fd[1], 1);
	/* the GET goes out on one of them */
	for (a = -1; a < 0;) {
		for (int i = 0; i < 2 && a < 0; i++)
			if (recv(fd[i], cap, 1, MSG_PEEK | MSG_DONTWAIT) == 1)
				a = i;
		assert_true(kvr_engine_poll(f.e, 1) >= 0);
	}
	fake_request(&f, fd[a], &fr, cap, sizeof(cap));
	assert_int_equal(fr.opcode, KVR_PROTO_OP_GET);
	op = &((struct tcp_cluster *)t)->ops[(uint32_t)fr.id];
	assert_int_equal(op->id, fr.id);
	mine = op->conn;
	evil = other_conn(t, mine);
	assert_non_null(evil);
	/* its answer starts arriving on its connection... */
	kvt_fill(src, LEN, 61);
	fr = (struct kvr_frame){.opcode = KVR_PROTO_OP_GET,
				.flags = KVR_PROTO_F_RESPONSE,
				.id = fr.id,
				.payload_len = LEN};
	fake_send(fd[a], &fr, src, FIRST);
	for (int i = 0; i < 10000 && op->state != OP_RECV; i++)
		assert_true(kvr_engine_poll(f.e, 1) >= 0);
	assert_int_equal(op->state, OP_RECV);
	/* ...when the other connection brings a large answer with its id */
	fr.payload_len = EVIL;
	memset(src + FIRST, 0xee, EVIL);
	want = evil->c.st.bytes_in + KVR_PROTO_HDR_LEN + EVIL;
	fake_send(fd[1 - a], &fr, src + FIRST, EVIL);
	for (int i = 0; i < 10000 && evil->c.st.bytes_in < want; i++)
		assert_true(kvr_engine_poll(f.e, 1) >= 0);
	assert_int_equal(evil->c.st.bytes_in, want);
	assert_int_equal(kvr_engine_poll(f.e, 0), 0);
	assert_int_equal(d->calls, 0);
	assert_int_equal(op->state, OP_RECV);
	/* the rest of the real answer */
	kvt_fill(src, LEN, 61);
	assert_int_equal(write(fd[a], src + FIRST, LEN - FIRST), LEN - FIRST);
	assert_int_equal(kvt_wait(f.e, d, 10000), 1);
	assert_int_equal(d->results[0], LEN);
	assert_true(kvt_check(mem, LEN, 61));
	assert_int_equal(kvr_target_close(t), 0);
	close(fd[0]);
	close(fd[1]);
	fake_close(&f);
	kvt_free_mem(mem, 2 * LEN);
	free(src);
	free(d);
}

/*
 * A deadline that closes a connection in the middle of receiving an answer
 * (the only way to take the caller's memory back from the kernel) leaves
 * the node up: the node was answering. Its next request goes out at once,
 * on a new connection, and is answered.
 */
static void client_deadline_keeps_node(void **state)
{
	enum { LEN = 64 << 10 };
	struct kvt_done *d = calloc(1, sizeof(*d));
	uint8_t *mem = kvt_alloc_mem(LEN), *src = malloc(LEN), cap[8];
	kvr_sge sg = {mem, LEN};
	kvr_obj ob = {"slowget", 7, &sg, 1};
	struct kvr_connect_opts co = {
	    .size = sizeof(co), .conns = 1, .timeout_ms = 10000, .connect_timeout_ms = 5000};
	struct tcp_cluster *cl;
	struct tcp_op *op;
	struct kvr_frame fr;
	struct fake f;
	kvr_target *t;
	kvr_mr *mr;
	int fd, fd2;

	(void)state;
	fake_listen(&f);
	assert_int_equal(kvr_mem_register(f.e, mem, LEN, 0, &mr), 0);
	assert_int_equal(kvr_connect(f.e, f.uri, &co, &t), 0);
	cl = (struct tcp_cluster *)t;
	assert_int_equal(kvr_submit(t, KVR_OP_GET, &ob, 1, 500, kvt_batch_cb, d), 0);
	fd = fake_accept(&f);
	fake_hello(&f, fd, 1);
	fake_request(&f, fd, &fr, cap, sizeof(cap));
	assert_int_equal(fr.opcode, KVR_PROTO_OP_GET);
	op = &cl->ops[(uint32_t)fr.id];
	kvt_fill(src, LEN, 5);
	fr = (struct kvr_frame){.opcode = KVR_PROTO_OP_GET,
				.flags = KVR_PROTO_F_RESPONSE,
				.id = fr.id,
				.payload_len = LEN};
	fake_send(fd, &fr, src, 1000); /* part of the answer, then nothing */
	for (int i = 0; i < 10000 && op->state != OP_RECV && !d->calls; i++)
		assert_true(kvr_engine_poll(f.e, 1) >= 0);
	assert_int_equal(kvt_wait(f.e, d, 5000), 1);
	assert_int_equal(d->results[0], -ETIMEDOUT);
	assert_int_not_equal(cl->nodes[0].state, NODE_DOWN);
	/* the next request is sent at once, on a new connection */
	memset(d, 0, sizeof(*d));
	assert_int_equal(kvr_submit(t, KVR_OP_GET, &ob, 1, 5000, kvt_batch_cb, d), 0);
	fd2 = fake_accept(&f);
	fake_hello(&f, fd2, 1);
	fake_request(&f, fd2, &fr, cap, sizeof(cap));
	assert_int_equal(fr.opcode, KVR_PROTO_OP_GET);
	fr = (struct kvr_frame){.opcode = KVR_PROTO_OP_GET,
				.flags = KVR_PROTO_F_RESPONSE,
				.id = fr.id,
				.payload_len = LEN};
	fake_send(fd2, &fr, src, LEN);
	assert_int_equal(kvt_wait(f.e, d, 5000), 1);
	assert_int_equal(d->results[0], LEN);
	assert_true(kvt_check(mem, LEN, 5));
	assert_int_equal(kvr_target_close(t), 0);
	close(fd);
	close(fd2);
	fake_close(&f);
	kvt_free_mem(mem, LEN);
	free(src);
	free(d);
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
	    cmocka_unit_test(client_shards_bounded),
	    cmocka_unit_test(client_refused_in_handshake),
	    cmocka_unit_test(client_payload_owner),
	    cmocka_unit_test(client_deadline_keeps_node),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
