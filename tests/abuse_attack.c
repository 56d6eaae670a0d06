/* SPDX-License-Identifier: MIT */
/*
 * The attackers of tests/test_abuse.c (see abuse_attack.h): raw sockets of
 * the test process speaking the wire protocol (docs/protocol.md), every
 * header field settable, valid or not.
 */
#include "abuse_attack.h"

#include <arpa/inet.h>
#include <endian.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "fixtures.h"
#include "transport/proto.h"

#define MiB (1ull << 20)

int64_t kva_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void add(uint64_t *c, uint64_t n)
{
	__atomic_fetch_add(c, n, __ATOMIC_RELAXED);
}

uint64_t kva_load(const uint64_t *c)
{
	return __atomic_load_n(c, __ATOMIC_RELAXED);
}

static bool stopping(struct kva *a)
{
	return __atomic_load_n(&a->stop, __ATOMIC_ACQUIRE);
}

/* An attacker-side check failed: counted, the first one kept (asserted by
 * the main thread: cmocka's asserts belong to it). */
void kva_fail(struct kva *a, const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&a->mu);
	if (!a->failures++) {
		va_start(ap, fmt);
		vsnprintf(a->why, sizeof(a->why), fmt, ap);
		va_end(ap);
	}
	pthread_mutex_unlock(&a->mu);
}

/* ------------------------------------------------------------ raw frames */

/* A header with every field settable, valid or not. */
struct raw_hdr {
	uint32_t magic_xor;	 /* the magic and version sent are the valid ones */
	uint8_t version_xor, op; /* XOR these (0: valid) */
	uint16_t flags;
	uint64_t id;
	int32_t status;
	uint16_t key_len, reserved;
	uint64_t payload_len;
};

#define RAW(...) ((struct raw_hdr){__VA_ARGS__})

static void raw_encode(uint8_t *b, const struct raw_hdr *h)
{
	uint32_t u32 = htole32(KVR_PROTO_MAGIC ^ h->magic_xor), st = htole32((uint32_t)h->status);
	uint16_t fl = htole16(h->flags), kl = htole16(h->key_len), rs = htole16(h->reserved);
	uint64_t id = htole64(h->id), pl = htole64(h->payload_len);

	memcpy(b, &u32, 4);
	b[4] = KVR_PROTO_VERSION ^ h->version_xor;
	b[5] = h->op;
	memcpy(b + 6, &fl, 2);
	memcpy(b + 8, &id, 8);
	memcpy(b + 16, &st, 4);
	memcpy(b + 20, &kl, 2);
	memcpy(b + 22, &rs, 2);
	memcpy(b + 24, &pl, 8);
}

/* A frame of op with key and payload into b; its length. */
static size_t frame(uint8_t *b, uint8_t op, uint64_t id, const char *key, const void *payload,
		    size_t len)
{
	size_t kl = key ? strlen(key) : 0;

	raw_encode(b, &RAW(.op = op, .id = id, .key_len = (uint16_t)kl, .payload_len = len));
	if (kl)
		memcpy(b + KVR_PROTO_HDR_LEN, key, kl);
	if (len)
		memcpy(b + KVR_PROTO_HDR_LEN + kl, payload, len);
	return KVR_PROTO_HDR_LEN + kl + len;
}

static size_t get_frame(uint8_t *b, uint64_t id, const char *key, uint64_t cap)
{
	uint64_t le = htole64(cap);

	return frame(b, KVR_PROTO_OP_GET, id, key, &le, sizeof(le));
}

static size_t hello_frame(uint8_t *b, uint64_t features)
{
	struct kvr_hello h = {
	    .version_min = 1, .version_max = 1, .shard = KVR_PROTO_ANY_SHARD, .features = features};
	uint8_t body[KVR_PROTO_HELLO_MAX];
	int n = kvr_proto_hello_encode(body, sizeof(body), &h);

	return frame(b, KVR_PROTO_OP_HELLO, 0, NULL, body, (size_t)n);
}

/* A blocking connection to the server, with send/receive timeouts. */
static int raw_open(int port, int timeout_ms)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
	int one = 1, fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -errno;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (connect(fd, (struct sockaddr *)&a, sizeof(a))) {
		int err = -errno;

		close(fd);
		return err;
	}
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd;
}

/* 0, or -errno (-EPIPE / -ECONNRESET once the server closed). */
static int send_all(int fd, const void *p, size_t n)
{
	const uint8_t *b = p;

	while (n) {
		ssize_t k = send(fd, b, n, MSG_NOSIGNAL);

		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return k < 0 ? -errno : -EPIPE;
		b += k;
		n -= (size_t)k;
	}
	return 0;
}

/* 0, -ECONNRESET (EOF or reset) or -EAGAIN (timed out). */
static int recv_all(int fd, void *p, size_t n)
{
	uint8_t *b = p;

	while (n) {
		ssize_t k = recv(fd, b, n, 0);

		if (k < 0 && errno == EINTR)
			continue;
		if (k == 0 || (k < 0 && errno != EAGAIN && errno != EWOULDBLOCK))
			return -ECONNRESET;
		if (k < 0)
			return -EAGAIN;
		b += k;
		n -= (size_t)k;
	}
	return 0;
}

/* Read one response: 0 with *f and up to cap bytes of its payload in buf
 * (the rest, and a crc trailer, skipped); -EBADMSG for bytes that are no
 * valid response; else recv_all's error. */
static int recv_resp(int fd, struct kvr_frame *f, void *buf, size_t cap)
{
	uint8_t hdr[KVR_PROTO_HDR_LEN], junk[4096];
	uint64_t left;
	int rc = recv_all(fd, hdr, sizeof(hdr));

	if (rc)
		return rc;
	if (kvr_proto_decode(hdr, sizeof(hdr), NULL, f) != KVR_PROTO_HDR_LEN ||
	    !kvr_frame_is_response(f) || f->key_len)
		return -EBADMSG;
	left = f->payload_len + kvr_frame_trailer(f);
	if (buf && cap) {
		size_t n = left < cap ? (size_t)left : cap;

		rc = recv_all(fd, buf, n);
		if (rc)
			return rc;
		left -= n;
	}
	while (left && !rc) {
		size_t n = left < sizeof(junk) ? (size_t)left : sizeof(junk);

		rc = recv_all(fd, junk, n);
		left -= n;
	}
	return rc;
}

/* Send a HELLO and read its answer. 0; the answer's status; -ECONNREFUSED
 * when the server closed at once (table full); else an I/O error. */
static int handshake(int fd, uint64_t features)
{
	uint8_t b[KVR_PROTO_HDR_LEN + KVR_PROTO_HELLO_MAX];
	struct kvr_frame f;
	int rc = send_all(fd, b, hello_frame(b, features));

	if (!rc)
		rc = recv_resp(fd, &f, NULL, 0);
	if (rc == -ECONNRESET || rc == -EPIPE)
		return -ECONNREFUSED;
	if (rc)
		return rc;
	if (f.opcode != KVR_PROTO_OP_HELLO)
		return -EBADMSG;
	return f.status;
}

/* A connection past its handshake, or a negative errno. */
static int ready_conn(int port, uint64_t features, int timeout_ms)
{
	int fd = raw_open(port, timeout_ms), rc;

	if (fd < 0)
		return fd;
	rc = handshake(fd, features);
	if (rc) {
		close(fd);
		return rc;
	}
	return fd;
}

/* Whether the server closed fd (EOF or reset); never blocks. */
static bool peer_closed(int fd)
{
	uint8_t buf[4096];

	for (;;) {
		ssize_t k = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);

		if (k > 0)
			continue;
		return k == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
	}
}

/* Read and check responses until EOF within timeout_ms: 0 (closed), -EAGAIN
 * (still open), -EBADMSG (a response that does not decode). */
static int drain_to_eof(int fd, int timeout_ms, uint64_t *answers)
{
	int64_t end = kva_now_ms() + timeout_ms;

	for (int64_t left; (left = end - kva_now_ms()) > 0;) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		struct kvr_frame f;
		int rc;

		if (poll(&p, 1, (int)left) <= 0)
			continue;
		rc = recv_resp(fd, &f, NULL, 0);
		if (rc == -ECONNRESET)
			return 0;
		if (rc == -EBADMSG)
			return rc;
		if (!rc && answers)
			(*answers)++;
	}
	return -EAGAIN;
}

/* ------------------------------------------------------------ the fuzzer */

enum { EXPECT_CLOSE = 1, EXPECT_OPEN = 2 };
#define SEND_ALL UINT64_MAX

struct bcase {
	const char *name;
	bool pre; /* instead of the handshake */
	struct raw_hdr h;
	uint64_t send;	  /* payload bytes sent (SEND_ALL: payload_len) */
	uint64_t cap;	  /* GET: the capacity in the payload */
	int hello;	  /* HELLO body: 1 valid, 2 auth 64, 3 auth 65, 4 versions 2..2 */
	bool twice;	  /* the frame twice in one write (same id) */
	int expect;	  /* EXPECT_*, or the answer's status (<= 0) */
	uint64_t ans_len; /* ... and its payload length */
};

#define KEY_MAX KVR_MAX_KEY
#define PAY_MAX KVR_PROTO_MAX_PAYLOAD
#define P	KVR_PROTO_OP_PUT
#define G	KVR_PROTO_OP_GET
#define X	KVR_PROTO_OP_EXISTS
#define R	KVR_PROTO_OP_REMOVE
#define S	KVR_PROTO_OP_STATS
#define H	KVR_PROTO_OP_HELLO

/* Every length at its bound and one past it, and every other header rule
 * broken once (docs/protocol.md). Keys are KEY_MAX bytes unless stated,
 * the same key throughout: the first case stores 16 bytes under it. */
static const struct bcase bcases[] = {
    {"put key 512", false, RAW(.op = P, .key_len = KEY_MAX, .payload_len = 16), SEND_ALL, 0, 0,
     false, 0, 0},
    {"put key 513", false, RAW(.op = P, .key_len = KEY_MAX + 1, .payload_len = 16), SEND_ALL, 0, 0,
     false, EXPECT_CLOSE, 0},
    {"put key 0", false, RAW(.op = P, .payload_len = 16), SEND_ALL, 0, 0, false, EXPECT_CLOSE, 0},
    {"get key 512", false, RAW(.op = G, .key_len = KEY_MAX, .payload_len = 8), SEND_ALL, 16, 0,
     false, 0, 16},
    {"get key 513", false, RAW(.op = G, .key_len = KEY_MAX + 1, .payload_len = 8), SEND_ALL, 16, 0,
     false, EXPECT_CLOSE, 0},
    {"get key 0", false, RAW(.op = G, .payload_len = 8), SEND_ALL, 16, 0, false, EXPECT_CLOSE, 0},
    {"get capacity 1 short", false, RAW(.op = G, .key_len = KEY_MAX, .payload_len = 8), SEND_ALL,
     15, 0, false, -EMSGSIZE, 0},
    {"get payload 7", false, RAW(.op = G, .key_len = KEY_MAX, .payload_len = 7), SEND_ALL, 16, 0,
     false, EXPECT_CLOSE, 0},
    {"get payload 9", false, RAW(.op = G, .key_len = KEY_MAX, .payload_len = 9), SEND_ALL, 16, 0,
     false, EXPECT_CLOSE, 0},
    {"exists key 512", false, RAW(.op = X, .key_len = KEY_MAX), 0, 0, 0, false, 0, 8},
    {"exists key 513", false, RAW(.op = X, .key_len = KEY_MAX + 1), 0, 0, 0, false, EXPECT_CLOSE,
     0},
    {"exists payload 1", false, RAW(.op = X, .key_len = KEY_MAX, .payload_len = 1), SEND_ALL, 0, 0,
     false, EXPECT_CLOSE, 0},
    {"remove key 513", false, RAW(.op = R, .key_len = KEY_MAX + 1), 0, 0, 0, false, EXPECT_CLOSE,
     0},
    {"remove payload 1", false, RAW(.op = R, .key_len = KEY_MAX, .payload_len = 1), SEND_ALL, 0, 0,
     false, EXPECT_CLOSE, 0},
    {"stats", false, RAW(.op = S), 0, 0, 0, false, 0, SEND_ALL},
    {"stats key 1", false, RAW(.op = S, .key_len = 1), 0, 0, 0, false, EXPECT_CLOSE, 0},
    {"stats payload 1", false, RAW(.op = S, .payload_len = 1), SEND_ALL, 0, 0, false, EXPECT_CLOSE,
     0},
    {"put payload 4096", false, RAW(.op = P, .key_len = 8, .payload_len = 4096), SEND_ALL, 0, 0,
     false, 0, 0},
    {"put payload 4097", false, RAW(.op = P, .key_len = 9, .payload_len = 4097), SEND_ALL, 0, 0,
     false, 0, 0},
    {"put payload 16 GiB (header only)", false, RAW(.op = P, .key_len = 10, .payload_len = PAY_MAX),
     0, 0, 0, false, EXPECT_OPEN, 0},
    {"put payload 16 GiB + 1", false, RAW(.op = P, .key_len = 10, .payload_len = PAY_MAX + 1), 0, 0,
     0, false, EXPECT_CLOSE, 0},
    {"put payload 2^64 - 1", false, RAW(.op = P, .key_len = 10, .payload_len = UINT64_MAX), 0, 0, 0,
     false, EXPECT_CLOSE, 0},
    {"flag response", false, RAW(.op = G, .flags = 1, .key_len = 4, .payload_len = 8), SEND_ALL, 16,
     0, false, EXPECT_CLOSE, 0},
    {"flag bit 2", false, RAW(.op = G, .flags = 4, .key_len = 4, .payload_len = 8), SEND_ALL, 16, 0,
     false, EXPECT_CLOSE, 0},
    {"flag bit 15", false, RAW(.op = G, .flags = 0x8000, .key_len = 4, .payload_len = 8), SEND_ALL,
     16, 0, false, EXPECT_CLOSE, 0},
    {"reserved 1", false, RAW(.op = G, .reserved = 1, .key_len = 4, .payload_len = 8), SEND_ALL, 16,
     0, false, EXPECT_CLOSE, 0},
    {"request status -1", false, RAW(.op = G, .status = -1, .key_len = 4, .payload_len = 8),
     SEND_ALL, 16, 0, false, EXPECT_CLOSE, 0},
    {"version 0", false, RAW(.op = G, .version_xor = 1, .key_len = 4, .payload_len = 8), SEND_ALL,
     16, 0, false, EXPECT_CLOSE, 0},
    {"version 2", false, RAW(.op = G, .version_xor = 3, .key_len = 4, .payload_len = 8), SEND_ALL,
     16, 0, false, EXPECT_CLOSE, 0},
    {"magic", false, RAW(.op = G, .magic_xor = 1u << 24, .key_len = 4, .payload_len = 8), SEND_ALL,
     16, 0, false, EXPECT_CLOSE, 0},
    {"opcode 0", false, RAW(.op = 0, .key_len = 4, .payload_len = 8), SEND_ALL, 16, 0, false,
     EXPECT_CLOSE, 0},
    {"opcode 7", false, RAW(.op = 7, .key_len = 4, .payload_len = 8), SEND_ALL, 16, 0, false,
     EXPECT_CLOSE, 0},
    {"hello after the handshake", false, RAW(.op = H, .payload_len = 17), SEND_ALL, 0, 1, false,
     EXPECT_CLOSE, 0},
    {"duplicate id in flight", false, RAW(.op = G, .id = 7, .key_len = 4, .payload_len = 8),
     SEND_ALL, 16, 0, true, EXPECT_CLOSE, 0},
    {"remove key 512", false, RAW(.op = R, .key_len = KEY_MAX), 0, 0, 0, false, 0, 0},
    {"get before the hello", true, RAW(.op = G, .key_len = 4, .payload_len = 8), SEND_ALL, 16, 0,
     false, EXPECT_CLOSE, 0},
    {"hello body 16", true, RAW(.op = H, .payload_len = 16), SEND_ALL, 0, 1, false, EXPECT_CLOSE,
     0},
    {"hello body 17", true, RAW(.op = H, .payload_len = 17), SEND_ALL, 0, 1, false, 0, SEND_ALL},
    {"hello body 18", true, RAW(.op = H, .payload_len = 18), SEND_ALL, 0, 1, false, EXPECT_CLOSE,
     0},
    {"hello auth 64", true, RAW(.op = H, .payload_len = 17 + 64), SEND_ALL, 0, 2, false, 0,
     SEND_ALL},
    {"hello auth 65", true, RAW(.op = H, .payload_len = 17 + 65), SEND_ALL, 0, 3, false,
     EXPECT_CLOSE, 0},
    {"hello payload 4097", true, RAW(.op = H, .payload_len = KVR_PROTO_MAX_HELLO + 1), 0, 0, 1,
     false, EXPECT_CLOSE, 0},
    {"hello versions 2..2", true, RAW(.op = H, .payload_len = 17), SEND_ALL, 0, 4, false,
     -EPROTONOSUPPORT, 0},
};

/* The bytes of case c: header, key, payload (a GET's capacity, a HELLO
 * body, or a pattern). */
static size_t bcase_bytes(const struct bcase *c, uint8_t *b, size_t cap)
{
	uint64_t send = c->send == SEND_ALL ? c->h.payload_len : c->send;
	size_t n = KVR_PROTO_HDR_LEN + c->h.key_len;

	if (n + send > cap) /* the table above is wrong */
		return 0;
	raw_encode(b, &c->h);
	memset(b + KVR_PROTO_HDR_LEN, 'k', c->h.key_len);
	memcpy(b + KVR_PROTO_HDR_LEN, "fzb-", c->h.key_len < 4 ? c->h.key_len : 4);
	memset(b + n, 0xa5, send);
	if (c->h.op == G && send >= 8) {
		uint64_t le = htole64(c->cap);

		memcpy(b + n, &le, sizeof(le));
	} else if (c->hello) {
		struct kvr_hello h = {.version_min = c->hello == 4 ? 2 : 1,
				      .version_max = c->hello == 4 ? 2 : 1,
				      .shard = KVR_PROTO_ANY_SHARD,
				      .auth_len = c->hello >= 2 && c->hello <= 3 ? 64 : 0};
		uint8_t body[KVR_PROTO_HELLO_MAX];
		int len = kvr_proto_hello_encode(body, sizeof(body), &h);

		if (len <= 0)
			return 0;
		if (c->hello == 3)
			body[16] = 65; /* one past the auth bound; 65 bytes follow */
		memset(b + n, 0, send);
		memcpy(b + n, body, (size_t)len < send ? (size_t)len : send);
	}
	return n + send;
}

/* One bound case on its own connection; a mismatch is a failure. */
static void bcase_run(struct kva *a, const struct bcase *c)
{
	static uint8_t b[2 * (KVR_PROTO_HDR_LEN + KVR_MAX_KEY + 4200)];
	uint8_t body[KVR_PROTO_MAX_HELLO];
	struct kvr_frame f;
	size_t n;
	int fd = c->pre ? raw_open(a->port, 3000) : ready_conn(a->port, 0, 3000);
	int rc;

	if (fd < 0) {
		kva_fail(a, "bound case '%s': no connection (%d)", c->name, fd);
		return;
	}
	n = bcase_bytes(c, b, sizeof(b) / 2);
	if (!n) {
		kva_fail(a, "bound case '%s': cannot be built", c->name);
		close(fd);
		return;
	}
	if (c->twice) {
		memcpy(b + n, b, n);
		n *= 2;
	}
	rc = send_all(fd, b, n);
	add(&a->frames, c->twice ? 2 : 1);
	add(&a->bounds, 1);
	if (c->expect == EXPECT_CLOSE) {
		/* answers to what came before the bad frame are fine */
		rc = drain_to_eof(fd, 3000, NULL);
		if (rc)
			kva_fail(a, "bound case '%s': %s", c->name,
				 rc == -EAGAIN ? "not closed within 3 s" : "bad answer");
	} else if (c->expect == EXPECT_OPEN) {
		struct pollfd p = {.fd = fd, .events = POLLIN};

		if (rc || poll(&p, 1, 300) != 0)
			kva_fail(a, "bound case '%s': answered or closed (within bounds)", c->name);
	} else {
		if (!rc)
			rc = recv_resp(fd, &f, body, sizeof(body));
		if (rc)
			kva_fail(a, "bound case '%s': no answer (%d)", c->name, rc);
		else if (f.opcode != c->h.op || f.id != c->h.id || f.status != c->expect ||
			 (c->ans_len != SEND_ALL && f.payload_len != c->ans_len))
			kva_fail(a, "bound case '%s': answer op %u id %llu status %d len %llu",
				 c->name, f.opcode, (unsigned long long)f.id, f.status,
				 (unsigned long long)f.payload_len);
	}
	close(fd);
}

/* A random frame, valid or not, into b (at most cap); its length. */
static size_t fuzz_frame(uint64_t *rng, uint8_t *b, size_t cap, uint64_t id)
{
	static const uint8_t ops[] = {P, P, G, G, X, R, S};
	static const uint16_t klens[] = {0, 1, 4, 511, 512, 513, 0xffff};
	static const uint64_t plens[] = {
	    0, 1, 7, 8, 9, 4095, 4096, 4097, 65536, PAY_MAX, PAY_MAX + 1, 1ull << 40, UINT64_MAX};
	uint64_t r = kvt_rand(rng);
	uint8_t op = ops[r % sizeof(ops)];
	char key[24];
	uint8_t pay[6000];
	size_t plen = 0, n;
	uint64_t pl;

	snprintf(key, sizeof(key), "fz-%u", (unsigned)(r >> 8) % 64);
	if (op == P) {
		plen = (r >> 16) % 8 ? (r >> 20) % 600 : 4000 + (r >> 20) % 2000;
		kvt_fill(pay, plen, r);
	} else if (op == G) {
		uint64_t c = htole64((r >> 16) % 2 ? MiB : (r >> 20) % 700);

		memcpy(pay, &c, 8);
		plen = 8;
	}
	n = frame(b, op, id, op == S ? NULL : key, pay, plen); /* cap holds any */
	(void)cap;
	/* Half of them valid, so that later frames of a burst are reached
	 * (a connection ends at its first bad frame). */
	switch ((r >> 40) % 10) {
	default: /* valid */
		break;
	case 5: /* bit flips in the header */
		for (uint64_t i = 0, k = 1 + (r >> 44) % 3; i < k; i++) {
			uint64_t x = kvt_rand(rng);

			b[x % KVR_PROTO_HDR_LEN] ^= (uint8_t)(1u << ((x >> 8) % 8));
		}
		break;
	case 6: { /* one field at a boundary value */
		uint64_t x = kvt_rand(rng);
		struct raw_hdr h =
		    RAW(.op = op, .id = id, .key_len = op == S ? 0 : (uint16_t)strlen(key),
			.payload_len = plen);

		switch (x % 6) {
		case 0:
			h.key_len = klens[(x >> 8) % (sizeof(klens) / sizeof(klens[0]))];
			break;
		case 1:
			h.payload_len = plens[(x >> 8) % (sizeof(plens) / sizeof(plens[0]))];
			break;
		case 2:
			h.op = (uint8_t)((x >> 8) % 9);
			break;
		case 3:
			h.flags = (uint16_t)(1u << ((x >> 8) % 16));
			break;
		case 4:
			h.status = (x >> 8) % 2 ? -4096 : 1;
			break;
		default:
			h.reserved = (uint16_t)(x >> 8);
			break;
		}
		raw_encode(b, &h);
		break;
	}
	case 7: /* cut short: what follows is read as the rest of it */
		n = 1 + (r >> 44) % (n - 1);
		break;
	case 8: /* bytes of the key or payload overwritten */
		for (size_t i = KVR_PROTO_HDR_LEN; i < n; i += 1 + (r >> 44) % 16)
			b[i] = (uint8_t)kvt_rand(rng);
		break;
	case 9: /* garbage */
		n = 1 + (r >> 44) % 64;
		for (size_t i = 0; i < n; i++)
			b[i] = (uint8_t)kvt_rand(rng);
		break;
	}
	/* A PUT whose length would claim a good share of the pool is its own
	 * attack (bigput): here such lengths are pushed past the limit. */
	memcpy(&pl, b + 24, sizeof(pl));
	pl = le64toh(pl);
	if (n >= KVR_PROTO_HDR_LEN && b[5] == P && pl > MiB && pl <= KVA_POOL_MAX) {
		pl = htole64(pl | (1ull << 40));
		memcpy(b + 24, &pl, sizeof(pl));
	}
	return n;
}

/* One fuzzing connection: handshake, a burst of random frames, end of
 * stream; the server must answer with valid frames and close. */
static void fuzz_conn(struct kva *a, uint64_t *rng)
{
	static uint8_t buf[64 * 8192];
	uint64_t r = kvt_rand(rng), answers = 0;
	uint32_t nframes = 1 + (uint32_t)(r % 24);
	size_t n = 0;
	int fd = raw_open(a->port, 3000), rc;

	if (fd < 0) {
		kva_fail(a, "fuzz: cannot connect (%d): server gone?", fd);
		return;
	}
	add(&a->conns, 1);
	rc = handshake(fd, (r >> 8) % 2 ? KVR_PROTO_FEAT_CRC : 0);
	if (rc) { /* the table may be full (flood alongside) */
		if (rc != -ECONNREFUSED)
			kva_fail(a, "fuzz: handshake failed (%d)", rc);
		add(&a->refused, 1);
		close(fd);
		return;
	}
	for (uint32_t i = 0; i < nframes; i++)
		n += fuzz_frame(rng, buf + n, sizeof(buf) - n, 100 + i);
	rc = send_all(fd, buf, n); /* cut short when the server closes early */
	add(&a->frames, nframes);
	shutdown(fd, SHUT_WR);
	rc = drain_to_eof(fd, 5000, &answers);
	add(&a->answers, answers);
	if (rc)
		kva_fail(
		    a, "fuzz: %s after %u frames (seed %llu, connection %llu)",
		    rc == -EAGAIN ? "no close within 5 s of the end of stream" : "a bad answer",
		    nframes, (unsigned long long)a->seed, (unsigned long long)kva_load(&a->conns));
	else
		add(&a->closed, 1);
	close(fd);
}

static void *fuzz_main(void *arg)
{
	struct kva *a = arg;
	uint64_t rng = a->seed;

	if (a->kinds & KVA_BOUNDS)
		for (size_t i = 0; i < sizeof(bcases) / sizeof(bcases[0]) && !stopping(a); i++)
			bcase_run(a, &bcases[i]);
	__atomic_fetch_add(&a->armed, 1, __ATOMIC_RELEASE);
	while (!stopping(a)) {
		fuzz_conn(a, &rng);
		/* the attacker's pace: a few hundred connections a second, so
		 * that it is the frames that are tested, not the CPU share */
		poll(NULL, 0, 2);
	}
	return NULL;
}

/* ------------------------------------------------------- the other attacks */

/* Slowloris: each connection trickles a frame one byte every KVA_SLOW_STEP ms,
 * half of them a HELLO (in the handshake), half a PUT after it. */
static void *slow_main(void *arg)
{
	struct kva *a = arg;
	uint8_t hello[KVR_PROTO_HDR_LEN + KVR_PROTO_HELLO_MAX], put[KVR_PROTO_HDR_LEN + 2];
	int fd[KVA_SLOW_CONNS];
	int64_t opened[KVA_SLOW_CONNS];
	size_t pos[KVA_SLOW_CONNS], hello_len = hello_frame(hello, 0);

	raw_encode(put, &RAW(.op = P, .id = 1, .key_len = 2, .payload_len = 9000));
	memcpy(put + KVR_PROTO_HDR_LEN, "sl", 2);
	for (int i = 0; i < KVA_SLOW_CONNS; i++)
		fd[i] = -1;
	__atomic_fetch_add(&a->armed, 1, __ATOMIC_RELEASE);
	while (!stopping(a)) {
		for (int i = 0; i < KVA_SLOW_CONNS; i++) {
			uint8_t byte;

			if (fd[i] < 0) {
				fd[i] =
				    i % 2 ? ready_conn(a->port, 0, 1000) : raw_open(a->port, 1000);
				if (fd[i] < 0) {
					fd[i] = -1; /* refused: the table is full */
					add(&a->refused, 1);
					continue;
				}
				add(&a->conns, 1);
				add(&a->frames, 1);
				opened[i] = kva_now_ms();
				pos[i] = 0;
			}
			if (i % 2)
				byte = pos[i] < sizeof(put) ? put[pos[i]] : 0;
			else
				byte = hello[pos[i] % hello_len];
			pos[i]++;
			if (send(fd[i], &byte, 1, MSG_NOSIGNAL | MSG_DONTWAIT) != 1 ||
			    peer_closed(fd[i])) {
				int64_t held = kva_now_ms() - opened[i];

				add(&a->slow_kills, 1);
				if (held > __atomic_load_n(&a->slow_hold, __ATOMIC_RELAXED))
					__atomic_store_n(&a->slow_hold, held, __ATOMIC_RELAXED);
				close(fd[i]);
				fd[i] = -1;
			}
		}
		/* the attacker's pace, not a wait for the server */
		poll(NULL, 0, KVA_SLOW_STEP);
	}
	for (int i = 0; i < KVA_SLOW_CONNS; i++) {
		if (fd[i] >= 0) {
			int64_t held = kva_now_ms() - opened[i];

			/* still open at the end: it counts as held this long */
			if (held > __atomic_load_n(&a->slow_hold, __ATOMIC_RELAXED))
				__atomic_store_n(&a->slow_hold, held, __ATOMIC_RELAXED);
			close(fd[i]);
		}
	}
	return NULL;
}

/* A flood past max_conns: KVA_FLOOD_CONNS connections kept open and idle after
 * their handshake; each one the server refuses or closes is opened again
 * 100 ms later. */
static void *flood_main(void *arg)
{
	struct kva *a = arg;
	int fd[KVA_FLOOD_CONNS];
	int64_t retry[KVA_FLOOD_CONNS] = {0};

	int64_t t0 = kva_now_ms();
	bool armed = false;

	for (int i = 0; i < KVA_FLOOD_CONNS; i++)
		fd[i] = -1;
	while (!stopping(a)) {
		for (int i = 0; i < KVA_FLOOD_CONNS && !stopping(a); i++) {
			int64_t now = kva_now_ms();

			/* under way once the table is full, or after a second
			 * (a server slow to answer handshakes) */
			if (!armed && now - t0 >= 1000) {
				armed = true;
				__atomic_fetch_add(&a->armed, 1, __ATOMIC_RELEASE);
			}

			if (fd[i] >= 0 && peer_closed(fd[i])) {
				add(&a->closed, 1);
				close(fd[i]);
				fd[i] = -1;
				retry[i] = now + 100;
			}
			if (fd[i] >= 0 || now < retry[i])
				continue;
			fd[i] = ready_conn(a->port, 0, 1000);
			add(&a->conns, 1);
			add(&a->frames, 1);
			if (fd[i] < 0) {
				add(&a->refused, 1);
				fd[i] = -1;
				retry[i] = now + 100;
			}
		}
		if (!armed) {
			armed = true;
			__atomic_fetch_add(&a->armed, 1, __ATOMIC_RELEASE);
		}
		poll(NULL, 0, 20); /* the attacker's pace */
	}
	for (int i = 0; i < KVA_FLOOD_CONNS; i++)
		if (fd[i] >= 0)
			close(fd[i]);
	return NULL;
}

/* Store the object the non-readers ask for. 0 or -errno. */
static int put_big(struct kva *a)
{
	uint8_t *b = malloc(KVR_PROTO_HDR_LEN + 16 + KVA_BIG_LEN);
	struct kvr_frame f;
	int fd = ready_conn(a->port, 0, 5000), rc = fd < 0 ? fd : 0;

	if (!rc && !b)
		rc = -ENOMEM;
	if (!rc) {
		memset(b + KVR_PROTO_HDR_LEN + 7, 0x3c, KVA_BIG_LEN);
		rc = send_all(fd, b,
			      frame(b, P, 1, "atk-big", b + KVR_PROTO_HDR_LEN + 7, KVA_BIG_LEN));
	}
	if (!rc)
		rc = recv_resp(fd, &f, NULL, 0);
	if (!rc)
		rc = f.status;
	if (fd >= 0)
		close(fd);
	free(b);
	return rc;
}

/* Clients that pipeline GETs of the 4 MiB object and never read: with
 * the crc trailer (noread) or without it (nocrc: the server checks the
 * object before every answer). */
static int nonread_open(struct kva *a, uint64_t features)
{
	int fd = ready_conn(a->port, features, 3000);

	add(&a->conns, 1);
	if (fd < 0) {
		add(&a->refused, 1);
		return -1;
	}
	fcntl(fd, F_SETFL, O_NONBLOCK);
	return fd;
}

/* The non-readers: GET frames as fast as the server takes them in; a
 * connection the server closes (too many requests in flight, say) is
 * opened again at once, as an attacker would. */
static void nonread(struct kva *a, int nconns, uint64_t features)
{
	enum { GET_LEN = KVR_PROTO_HDR_LEN + 7 + 8 }; /* key "atk-big", capacity */
	struct pollfd p[KVA_NOCRC_CONNS];
	uint8_t out[KVA_NOCRC_CONNS][64 * GET_LEN];
	size_t len[KVA_NOCRC_CONNS] = {0}, off[KVA_NOCRC_CONNS] = {0};
	uint64_t id[KVA_NOCRC_CONNS] = {0};

	for (int i = 0; i < nconns; i++) {
		p[i].fd = nonread_open(a, features);
		p[i].events = POLLOUT;
	}
	__atomic_fetch_add(&a->armed, 1, __ATOMIC_RELEASE);
	while (!stopping(a)) {
		poll(p, (nfds_t)nconns, 20);
		for (int i = 0; i < nconns && !stopping(a); i++) {
			ssize_t k;

			if (p[i].fd < 0) {
				p[i].fd = nonread_open(a, features);
				len[i] = off[i] = 0;
				continue;
			}
			if (!(p[i].revents & (POLLOUT | POLLERR | POLLHUP)))
				continue;
			if (off[i] == len[i]) { /* 64 more GETs, fresh ids */
				len[i] = off[i] = 0;
				for (int j = 0; j < 64; j++)
					len[i] += get_frame(out[i] + len[i], ++id[i], "atk-big",
							    KVA_BIG_LEN);
			}
			k = send(p[i].fd, out[i] + off[i], len[i] - off[i], MSG_NOSIGNAL);
			if (k < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
				add(&a->closed, 1);
				close(p[i].fd);
				p[i].fd = -1;
				continue;
			}
			if (k > 0) {
				uint64_t before = off[i] / GET_LEN;

				off[i] += (size_t)k;
				add(&a->frames, off[i] / GET_LEN - before);
			}
		}
	}
	for (int i = 0; i < nconns; i++)
		if (p[i].fd >= 0)
			close(p[i].fd);
}

static void *noread_main(void *arg)
{
	nonread(arg, KVA_NOREAD_CONNS, KVR_PROTO_FEAT_CRC);
	return NULL;
}

static void *nocrc_main(void *arg)
{
	nonread(arg, KVA_NOCRC_CONNS, 0);
	return NULL;
}

/* One PUT header announcing the pool's capacity (from STATS), and no
 * payload; the connection is then left alone. */
static void *bigput_main(void *arg)
{
	struct kva *a = arg;
	uint8_t b[KVR_PROTO_HDR_LEN + 16];
	char body[KVR_PROTO_MAX_HELLO + 1] = {0};
	unsigned long long cap = 0;
	struct kvr_frame f;
	const char *c;
	int fd = ready_conn(a->port, 0, 3000), rc;

	if (fd < 0) {
		kva_fail(a, "bigput: no connection (%d)", fd);
		goto armed;
	}
	add(&a->conns, 1);
	rc = send_all(fd, b, frame(b, S, 1, NULL, NULL, 0));
	if (!rc)
		rc = recv_resp(fd, &f, body, sizeof(body) - 1);
	c = strstr(body, "\"capacity_bytes\":");
	if (rc || !c || sscanf(c + 17, "%llu", &cap) != 1 || !cap) {
		kva_fail(a, "bigput: no capacity from STATS (%d)", rc);
		goto armed;
	}
	raw_encode(b, &RAW(.op = P, .id = 2, .key_len = 8, .payload_len = cap));
	memcpy(b + KVR_PROTO_HDR_LEN, "atk-huge", 8);
	if (send_all(fd, b, KVR_PROTO_HDR_LEN + 8))
		kva_fail(a, "bigput: header not sent");
	add(&a->frames, 2);
armed:
	__atomic_fetch_add(&a->armed, 1, __ATOMIC_RELEASE);
	while (!stopping(a))
		poll(NULL, 0, 20);
	if (fd >= 0)
		close(fd);
	return NULL;
}

void kva_init(struct kva *a, int port, uint64_t seed)
{
	memset(a, 0, sizeof(*a));
	a->port = port;
	a->seed = seed;
	pthread_mutex_init(&a->mu, NULL);
}

int kva_start(struct kva *a, unsigned kinds, bool early)
{
	static void *(*const mains[])(void *) = {fuzz_main,   slow_main,  flood_main,
						 noread_main, nocrc_main, bigput_main};
	int n = 0;

	a->kinds |= kinds;
	/* before anything can fill the pool (KVA_BIGPUT) */
	if (early && (kinds & (KVA_NOREAD | KVA_NOCRC))) {
		int rc = put_big(a);

		if (rc)
			return rc;
	}
	for (unsigned k = 0; k < sizeof(mains) / sizeof(mains[0]); k++) {
		bool is_early = (1u << k) & (KVA_NOREAD | KVA_NOCRC | KVA_BIGPUT);

		if (!(kinds & (1u << k)) || is_early != early)
			continue;
		if (a->nth == KVA_MAX_THREADS || pthread_create(&a->th[a->nth], NULL, mains[k], a))
			return -EAGAIN;
		a->nth++;
		n++;
	}
	return n;
}

bool kva_armed(const struct kva *a)
{
	return __atomic_load_n(&a->armed, __ATOMIC_ACQUIRE) >= a->nth;
}

void kva_stop(struct kva *a)
{
	__atomic_store_n(&a->stop, 1, __ATOMIC_RELEASE);
	for (int i = 0; i < a->nth; i++)
		pthread_join(a->th[i], NULL);
	a->nth = 0;
	__atomic_store_n(&a->armed, 0, __ATOMIC_RELEASE);
	__atomic_store_n(&a->stop, 0, __ATOMIC_RELEASE);
}

void kva_fini(struct kva *a)
{
	kva_stop(a);
	pthread_mutex_destroy(&a->mu);
}
