/* SPDX-License-Identifier: MIT */
/*
 * transport/serve*.c and tools/server.c: kvr_serve on its own engine thread
 * (port 0), talked to with plain blocking sockets and the proto codec, plus
 * the real client (kvr_connect) and the kvring-server program. Every byte
 * that goes in is compared on the way out.
 */
#include "fixtures.h"
#include "engine/engine.h"
#include "transport/proto.h"
#include "transport/serve.h"
#include "transport/store.h"

#include <arpa/inet.h>
#include <dlfcn.h>
#include <endian.h>
#include <fcntl.h>
#include <libgen.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/hmac.h>
#include <poll.h>
#include <time.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define KiB 1024ull
#define MiB (1024ull * 1024)

/* ------------------------------------------------------ in-process server */

struct srv {
	/* configuration */
	uint64_t mem;
	uint64_t spill; /* file store capacity, 0: none */
	const char *secret;
	uint32_t idle_ms, max_conns;
	kvr_server_group *g;
	uint32_t shard;
	/* state */
	pthread_t th;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int state; /* 0 starting, 1 serving, 2 failed */
	int rc;
	int quit;
	int close_rc;
	kvr_engine *e;
	kvr_target *mem_t; /* the memory store served */
	int port;
	char spill_path[512];
};

static void log_stderr(void *ctx, int level, const char *msg)
{
	struct srv *s = ctx;

	fprintf(stderr, "  [server %u] %d %s\n", s->shard, level, msg);
}

static void srv_ready(struct srv *s, int state, int rc)
{
	pthread_mutex_lock(&s->mu);
	s->state = state;
	s->rc = rc;
	pthread_cond_broadcast(&s->cv);
	pthread_mutex_unlock(&s->mu);
}

static void *srv_main(void *arg)
{
	struct srv *s = arg;
	struct kvr_engine_opts eo = {.size = sizeof(eo)};
	struct kvr_store_opts mo = {.size = sizeof(mo), .capacity = s->mem};
	struct kvr_serve_opts so = {.size = sizeof(so)};
	kvr_target *mem = NULL, *file = NULL;
	kvr_server *server = NULL;
	kvr_engine *e = NULL;
	char addr[128], uri[600];
	int rc;

	if (getenv("KVR_TEST_LOG")) {
		eo.log = log_stderr;
		eo.log_ctx = s;
		eo.log_level = KVR_LOG_DEBUG;
	}
	rc = kvr_engine_create(&eo, &e);
	if (rc) {
		srv_ready(s, 2, rc);
		return NULL;
	}
	s->e = e;
	rc = kvr_store_open(e, "mem:", &mo, &mem);
	if (!rc && s->spill) {
		struct kvr_store_opts fo = {
		    .size = sizeof(fo), .capacity = s->spill, .flags = KVR_STORE_TRUNCATE};

		snprintf(uri, sizeof(uri), "file:%s", s->spill_path);
		rc = kvr_store_open(e, uri, &fo, &file);
	}
	if (!rc) {
		so.secret = s->secret;
		so.secret_len = s->secret ? strlen(s->secret) : 0;
		so.idle_timeout_ms = s->idle_ms;
		so.max_conns = s->max_conns;
		so.spill = file;
		so.group = s->g;
		so.shard = s->shard;
		rc = kvr_serve(e, s->shard == 0 ? "tcp://127.0.0.1:0" : NULL, mem, &so, &server);
	}
	if (rc) {
		kvr_engine_destroy(e);
		s->e = NULL;
		srv_ready(s, 2, rc);
		return NULL;
	}
	s->mem_t = mem;
	kvr_server_addr(server, addr, sizeof(addr));
	if (s->shard == 0)
		s->port = atoi(strrchr(addr, ':') + 1);
	srv_ready(s, 1, 0);
	while (!__atomic_load_n(&s->quit, __ATOMIC_ACQUIRE))
		if (kvr_engine_poll(e, -1) < 0)
			break;
	s->close_rc = kvr_server_close(server, 5000);
	if (file)
		kvr_target_close(file);
	kvr_target_close(mem);
	pthread_mutex_lock(&s->mu); /* srv_stop may be waking the engine */
	kvr_engine_destroy(e);
	s->e = NULL;
	pthread_mutex_unlock(&s->mu);
	return NULL;
}

static void srv_start(struct srv *s)
{
	pthread_mutex_init(&s->mu, NULL);
	pthread_cond_init(&s->cv, NULL);
	static unsigned seq;

	if (s->spill) /* one file per server: a failed test cannot block the next */
		snprintf(s->spill_path, sizeof(s->spill_path), "%s.%u", kvt_path("serve_spill"),
			 seq++);
	assert_int_equal(pthread_create(&s->th, NULL, srv_main, s), 0);
	pthread_mutex_lock(&s->mu);
	while (!s->state)
		pthread_cond_wait(&s->cv, &s->mu);
	pthread_mutex_unlock(&s->mu);
	if (s->state != 1)
		fprintf(stderr, "server start: %s\n", kvr_strerror(s->rc));
	assert_int_equal(s->state, 1);
}

/* Returns kvr_server_close()'s result. */
static int srv_stop(struct srv *s)
{
	__atomic_store_n(&s->quit, 1, __ATOMIC_RELEASE);
	pthread_mutex_lock(&s->mu);
	if (s->e)
		kvr_engine_wake(s->e);
	pthread_mutex_unlock(&s->mu);
	pthread_join(s->th, NULL);
	if (s->spill)
		kvt_unlink(s->spill_path);
	pthread_mutex_destroy(&s->mu);
	pthread_cond_destroy(&s->cv);
	return s->close_rc;
}

/* ------------------------------------------------------------ raw client */

static uint64_t next_id = 100;

static int cli_open(int port)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	struct timeval tv = {10, 0};
	int one = 1;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd;
}

static void wr(int fd, const void *p, size_t n)
{
	const uint8_t *b = p;

	while (n) {
		ssize_t k = send(fd, b, n, MSG_NOSIGNAL);

		assert_true(k > 0);
		b += k;
		n -= (size_t)k;
	}
}

/* 0, or -ECONNRESET (EOF or reset), or -EAGAIN (timed out). */
static int rd(int fd, void *p, size_t n)
{
	uint8_t *b = p;

	while (n) {
		ssize_t k = recv(fd, b, n, 0);

		if (k == 0)
			return -ECONNRESET;
		if (k < 0)
			return errno == EAGAIN || errno == EWOULDBLOCK ? -EAGAIN : -ECONNRESET;
		b += k;
		n -= (size_t)k;
	}
	return 0;
}

/* The server closed the connection (EOF or reset) within the timeout. */
static bool closed_by_server(int fd)
{
	uint8_t buf[4096];

	for (;;) {
		ssize_t k = recv(fd, buf, sizeof(buf), 0);

		if (k == 0 || (k < 0 && errno == ECONNRESET))
			return true;
		if (k < 0)
			return false;
	}
}

static void send_frame(int fd, uint8_t op, uint64_t id, const char *key, const void *payload,
		       uint64_t len)
{
	struct kvr_frame f = {.opcode = op, .id = id, .payload_len = len};
	uint8_t hdr[KVR_PROTO_HDR_LEN];

	f.key_len = key ? (uint16_t)strlen(key) : 0;
	kvr_proto_encode(hdr, &f);
	wr(fd, hdr, sizeof(hdr));
	if (f.key_len)
		wr(fd, key, f.key_len);
	if (len)
		wr(fd, payload, len);
}

/* Receive a response; its payload goes to buf (cap bytes). 0 or rd's error. */
static int recv_resp(int fd, struct kvr_frame *f, void *buf, size_t cap)
{
	uint8_t hdr[KVR_PROTO_HDR_LEN];
	int rc = rd(fd, hdr, sizeof(hdr));

	if (rc)
		return rc;
	assert_int_equal(kvr_proto_decode(hdr, sizeof(hdr), NULL, f), KVR_PROTO_HDR_LEN);
	assert_true(kvr_frame_is_response(f));
	assert_int_equal(f->key_len, 0);
	if (f->payload_len) {
		assert_true(f->payload_len <= cap);
		return rd(fd, buf, f->payload_len);
	}
	return 0;
}

static void send_hello(int fd, uint64_t id, uint16_t shard, const uint8_t *tag)
{
	struct kvr_hello h = {.version_min = 1, .version_max = 1, .shard = shard};
	uint8_t body[KVR_PROTO_HELLO_MAX];
	int n;

	if (tag) {
		h.auth_len = KVR_PROTO_TAG_LEN;
		memcpy(h.auth, tag, KVR_PROTO_TAG_LEN);
	}
	n = kvr_proto_hello_encode(body, sizeof(body), &h);
	send_frame(fd, KVR_PROTO_OP_HELLO, id, NULL, body, (uint64_t)n);
}

/* The final HELLO response: its status, and *out filled when it is 0. */
static int handshake_end(int fd, uint64_t id, struct kvr_hello *out)
{
	uint8_t body[KVR_PROTO_MAX_HELLO];
	struct kvr_frame f;
	struct kvr_hello h;

	assert_int_equal(recv_resp(fd, &f, body, sizeof(body)), 0);
	assert_int_equal(f.opcode, KVR_PROTO_OP_HELLO);
	assert_int_equal(f.id, id);
	if (f.status)
		return f.status;
	assert_int_equal(kvr_proto_hello_decode(body, f.payload_len, &h), (int)f.payload_len);
	assert_false(h.features & KVR_PROTO_FEAT_AUTH);
	assert_int_equal(h.version_min, 1);
	assert_int_equal(h.version_max, 1);
	if (out)
		*out = h;
	return 0;
}

/* Send the HELLO (and, with a secret, answer the server's nonce). Returns
 * the id of the HELLO whose answer is the final one, or -status when the
 * server refused the first HELLO. */
static int handshake_begin(int fd, uint16_t shard, const char *secret)
{
	uint8_t body[KVR_PROTO_MAX_HELLO], tag[KVR_PROTO_TAG_LEN];
	struct kvr_frame f;
	struct kvr_hello h;

	send_hello(fd, 0, shard, NULL);
	if (!secret)
		return 0;
	assert_int_equal(recv_resp(fd, &f, body, sizeof(body)), 0);
	assert_int_equal(f.id, 0);
	if (f.status)
		return f.status;
	assert_int_equal(kvr_proto_hello_decode(body, f.payload_len, &h), (int)f.payload_len);
	assert_true(h.features & KVR_PROTO_FEAT_AUTH);
	assert_int_equal(h.auth_len, KVR_PROTO_NONCE_LEN);
	assert_int_equal(kvr_proto_auth_tag(secret, strlen(secret), h.auth, tag), 0);
	send_hello(fd, 1, shard, tag);
	return 1;
}

static int handshake(int fd, uint16_t shard, const char *secret, struct kvr_hello *out)
{
	int id = handshake_begin(fd, shard, secret);

	return id < 0 ? id : handshake_end(fd, (uint64_t)id, out);
}

static int cli_ready(int port)
{
	int fd = cli_open(port);

	assert_int_equal(handshake(fd, 0, NULL, NULL), 0);
	return fd;
}

static int32_t op_put(int fd, const char *key, const void *data, uint64_t len)
{
	uint64_t id = next_id++;
	struct kvr_frame f;

	send_frame(fd, KVR_PROTO_OP_PUT, id, key, data, len);
	assert_int_equal(recv_resp(fd, &f, NULL, 0), 0);
	assert_int_equal(f.id, id);
	assert_int_equal(f.opcode, KVR_PROTO_OP_PUT);
	return f.status;
}

static void send_get(int fd, uint64_t id, const char *key, uint64_t cap)
{
	uint64_t le = htole64(cap);

	send_frame(fd, KVR_PROTO_OP_GET, id, key, &le, sizeof(le));
}

/* GET into buf (cap bytes): the length, or the status. */
static int64_t op_get(int fd, const char *key, void *buf, uint64_t cap)
{
	uint64_t id = next_id++;
	struct kvr_frame f;

	send_get(fd, id, key, cap);
	assert_int_equal(recv_resp(fd, &f, buf, cap), 0);
	assert_int_equal(f.id, id);
	assert_int_equal(f.opcode, KVR_PROTO_OP_GET);
	return f.status ? f.status : (int64_t)f.payload_len;
}

static int64_t op_simple(int fd, uint8_t op, const char *key)
{
	uint64_t id = next_id++, v = 0;
	struct kvr_frame f;

	send_frame(fd, op, id, key, NULL, 0);
	assert_int_equal(recv_resp(fd, &f, &v, sizeof(v)), 0);
	assert_int_equal(f.id, id);
	if (f.status)
		return f.status;
	if (op == KVR_PROTO_OP_EXISTS) {
		assert_int_equal(f.payload_len, 8);
		return (int64_t)le64toh(v);
	}
	assert_int_equal(f.payload_len, 0);
	return 0;
}

/* One counter of the STATS JSON. */
static uint64_t stat_of(int fd, const char *name)
{
	char body[KVR_PROTO_MAX_HELLO + 1], pat[64];
	uint64_t id = next_id++;
	struct kvr_frame f;
	const char *p;

	send_frame(fd, KVR_PROTO_OP_STATS, id, NULL, NULL, 0);
	assert_int_equal(recv_resp(fd, &f, body, sizeof(body) - 1), 0);
	assert_int_equal(f.status, 0);
	body[f.payload_len] = 0;
	assert_true(body[0] == '{' && body[f.payload_len - 1] == '}');
	snprintf(pat, sizeof(pat), "\"%s\":", name);
	p = strstr(body, pat);
	assert_non_null(p);
	return strtoull(p + strlen(pat), NULL, 10);
}

/* Poll a STATS counter until it equals want (10 s at most). */
static void wait_stat(int fd, const char *name, uint64_t want)
{
	for (int i = 0; i < 10000; i++) {
		if (stat_of(fd, name) == want)
			return;
		usleep(1000);
	}
	fail_msg("stat %s never reached %llu", name, (unsigned long long)want);
}

/* ------------------------------------------------------------------ tests */

static void test_basic_ops(void **state)
{
	struct srv s = {.mem = 64 * MiB};
	uint8_t *data = malloc(3 * MiB), *back = malloc(3 * MiB);
	static const uint64_t sizes[] = {1, 100, 4095, 4096, 4097, 65536, 3 * MiB - 7};
	char key[32];
	int fd;

	(void)state;
	srv_start(&s);
	fd = cli_ready(s.port);
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		snprintf(key, sizeof(key), "obj-%zu", i);
		kvt_fill(data, sizes[i], i + 1);
		assert_int_equal(op_put(fd, key, data, sizes[i]), 0);
	}
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		snprintf(key, sizeof(key), "obj-%zu", i);
		memset(back, 0, sizes[i]);
		assert_int_equal(op_get(fd, key, back, 3 * MiB), (int64_t)sizes[i]);
		assert_true(kvt_check(back, sizes[i], i + 1));
		assert_int_equal(op_simple(fd, KVR_PROTO_OP_EXISTS, key), (int64_t)sizes[i]);
		/* a capacity one short of the object: nothing but -EMSGSIZE */
		assert_int_equal(op_get(fd, key, back, sizes[i] - 1), -EMSGSIZE);
	}
	/* replace, zero-length object, miss, remove */
	kvt_fill(data, 5000, 99);
	assert_int_equal(op_put(fd, "obj-1", data, 5000), 0);
	assert_int_equal(op_get(fd, "obj-1", back, 3 * MiB), 5000);
	assert_true(kvt_check(back, 5000, 99));
	assert_int_equal(op_put(fd, "empty", NULL, 0), 0);
	assert_int_equal(op_get(fd, "empty", back, 10), 0);
	assert_int_equal(op_simple(fd, KVR_PROTO_OP_EXISTS, "empty"), 0);
	assert_int_equal(op_get(fd, "nope", back, 10), -ENOENT);
	assert_int_equal(op_simple(fd, KVR_PROTO_OP_EXISTS, "nope"), -ENOENT);
	assert_int_equal(op_simple(fd, KVR_PROTO_OP_REMOVE, "obj-2"), 0);
	assert_int_equal(op_simple(fd, KVR_PROTO_OP_REMOVE, "obj-2"), -ENOENT);
	assert_int_equal(op_get(fd, "obj-2", back, 3 * MiB), -ENOENT);
	assert_int_equal(stat_of(fd, "objects"), 7);
	assert_int_equal(stat_of(fd, "capacity_bytes"), 64 * MiB);
	assert_int_equal(stat_of(fd, "conns"), 1);
	assert_int_equal(stat_of(fd, "shards"), 1);
	assert_int_equal(stat_of(fd, "misses"), 2);
	close(fd);
	assert_int_equal(srv_stop(&s), 0);
	free(data);
	free(back);
}

/* Many requests in one write; answers matched by id. */
static void test_pipelined(void **state)
{
	enum { N = 300 };
	struct srv s = {.mem = 64 * MiB};
	uint8_t *data = malloc(64 * KiB), *back = malloc(64 * KiB);
	bool seen[N] = {false};
	struct kvr_frame f;
	char key[32];
	int fd;

	(void)state;
	srv_start(&s);
	fd = cli_ready(s.port);
	for (int i = 0; i < N; i++) {
		uint64_t len = 1 + (uint64_t)i * 211 % (64 * KiB - 1);

		snprintf(key, sizeof(key), "p%d", i);
		kvt_fill(data, len, 1000 + (uint64_t)i);
		send_frame(fd, KVR_PROTO_OP_PUT, 5000 + (uint64_t)i, key, data, len);
	}
	for (int i = 0; i < N; i++) {
		assert_int_equal(recv_resp(fd, &f, NULL, 0), 0);
		assert_int_equal(f.status, 0);
		assert_true(f.id >= 5000 && f.id < 5000 + N && !seen[f.id - 5000]);
		seen[f.id - 5000] = true;
	}
	for (int i = 0; i < N; i++) {
		snprintf(key, sizeof(key), "p%d", i);
		send_get(fd, 9000 + (uint64_t)i, key, 64 * KiB);
	}
	for (int i = 0; i < N; i++) {
		uint64_t k;

		assert_int_equal(recv_resp(fd, &f, back, 64 * KiB), 0);
		assert_int_equal(f.status, 0);
		k = f.id - 9000;
		assert_true(k < N);
		assert_int_equal(f.payload_len, 1 + k * 211 % (64 * KiB - 1));
		assert_true(kvt_check(back, f.payload_len, 1000 + k));
	}
	close(fd);
	assert_int_equal(srv_stop(&s), 0);
	free(data);
	free(back);
}

static void test_auth(void **state)
{
	struct srv s = {.mem = 16 * MiB, .secret = "open sesame"};
	struct kvr_frame f;
	uint8_t body[256], back[64];
	struct kvr_hello h;
	int fd, other;

	(void)state;
	srv_start(&s);
	/* the right secret */
	fd = cli_open(s.port);
	assert_int_equal(handshake(fd, 0, "open sesame", &h), 0);
	assert_int_equal(h.shards, 1);
	assert_int_equal(op_put(fd, "k", "secret bytes", 12), 0);
	assert_int_equal(op_get(fd, "k", back, sizeof(back)), 12);
	assert_memory_equal(back, "secret bytes", 12);
	/* the wrong one: -EACCES, then closed; the good connection lives on */
	other = cli_open(s.port);
	assert_int_equal(handshake(other, 0, "open sesame!", NULL), -EACCES);
	assert_true(closed_by_server(other));
	close(other);
	/* no tag at all in the second HELLO */
	other = cli_open(s.port);
	send_hello(other, 0, 0, NULL);
	assert_int_equal(recv_resp(other, &f, body, sizeof(body)), 0);
	assert_int_equal(f.status, 0);
	send_hello(other, 1, 0, NULL);
	assert_int_equal(recv_resp(other, &f, body, sizeof(body)), 0);
	assert_int_equal(f.status, -EACCES);
	assert_true(closed_by_server(other));
	close(other);
	/* a request before the handshake finished */
	other = cli_open(s.port);
	send_hello(other, 0, 0, NULL);
	assert_int_equal(recv_resp(other, &f, body, sizeof(body)), 0);
	send_frame(other, KVR_PROTO_OP_STATS, 7, NULL, NULL, 0);
	assert_true(closed_by_server(other));
	close(other);
	assert_int_equal(op_get(fd, "k", back, sizeof(back)), 12);
	close(fd);
	assert_int_equal(srv_stop(&s), 0);
}

/* Each of these closes its own connection and nothing else. */
static void test_bad_frames(void **state)
{
	struct srv s = {.mem = 16 * MiB};
	uint8_t hdr[KVR_PROTO_HDR_LEN], back[16];
	struct kvr_frame f;
	int good, fd;

	(void)state;
	srv_start(&s);
	good = cli_ready(s.port);
	assert_int_equal(op_put(good, "alive", "yes", 3), 0);

	/* garbage instead of a HELLO */
	fd = cli_open(s.port);
	wr(fd, "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n", 37);
	assert_true(closed_by_server(fd));
	close(fd);
	/* a request instead of a HELLO */
	fd = cli_open(s.port);
	send_frame(fd, KVR_PROTO_OP_STATS, 1, NULL, NULL, 0);
	assert_true(closed_by_server(fd));
	close(fd);
	/* after the handshake: bad magic */
	fd = cli_ready(s.port);
	f = (struct kvr_frame){.opcode = KVR_PROTO_OP_STATS, .id = 1};
	kvr_proto_encode(hdr, &f);
	hdr[0] ^= 0xff;
	wr(fd, hdr, sizeof(hdr));
	assert_true(closed_by_server(fd));
	close(fd);
	/* key length over the limit */
	fd = cli_ready(s.port);
	f = (struct kvr_frame){.opcode = KVR_PROTO_OP_EXISTS, .id = 1, .key_len = 513};
	kvr_proto_encode(hdr, &f);
	wr(fd, hdr, sizeof(hdr));
	assert_true(closed_by_server(fd));
	close(fd);
	/* payload length over the limit */
	fd = cli_ready(s.port);
	f = (struct kvr_frame){
	    .opcode = KVR_PROTO_OP_PUT, .id = 1, .key_len = 1, .payload_len = 1ull << 40};
	kvr_proto_encode(hdr, &f);
	wr(fd, hdr, sizeof(hdr));
	wr(fd, "k", 1);
	assert_true(closed_by_server(fd));
	close(fd);
	/* a response frame from the client, and a second HELLO */
	fd = cli_ready(s.port);
	f = (struct kvr_frame){.opcode = KVR_PROTO_OP_STATS, .flags = KVR_PROTO_F_RESPONSE};
	kvr_proto_encode(hdr, &f);
	wr(fd, hdr, sizeof(hdr));
	assert_true(closed_by_server(fd));
	close(fd);
	fd = cli_ready(s.port);
	send_hello(fd, 3, 0, NULL);
	assert_true(closed_by_server(fd));
	close(fd);
	/* a HELLO with a body that is not one */
	fd = cli_open(s.port);
	send_frame(fd, KVR_PROTO_OP_HELLO, 0, NULL, "not a hello body!!", 18);
	assert_true(closed_by_server(fd));
	close(fd);

	assert_int_equal(op_get(good, "alive", back, sizeof(back)), 3);
	assert_int_equal(stat_of(good, "objects"), 1);
	wait_stat(good, "conns", 1);
	close(good);
	assert_int_equal(srv_stop(&s), 0);
}

/* A client gone mid-payload leaves nothing behind: no object, no space. */
static void test_disconnect_mid_payload(void **state)
{
	struct srv s = {.mem = 16 * MiB};
	uint8_t *data = malloc(MiB), back[16];
	struct kvr_frame f = {
	    .opcode = KVR_PROTO_OP_PUT, .id = 1, .key_len = 4, .payload_len = MiB};
	uint8_t hdr[KVR_PROTO_HDR_LEN];
	int good, fd;

	(void)state;
	srv_start(&s);
	good = cli_ready(s.port);
	for (int small = 0; small < 2; small++) {
		fd = cli_ready(s.port);
		f.payload_len = small ? 3000 : MiB; /* staged, and straight into the pool */
		kvr_proto_encode(hdr, &f);
		wr(fd, hdr, sizeof(hdr));
		wr(fd, "torn", 4);
		wr(fd, data, small ? 1000 : 300 * KiB);
		wait_stat(good, "conns", 2); /* (it is open) */
		close(fd);
		wait_stat(good, "conns", 1);
		assert_int_equal(stat_of(good, "used_bytes"), 0);
		assert_int_equal(stat_of(good, "objects"), 0);
		assert_int_equal(op_get(good, "torn", back, sizeof(back)), -ENOENT);
	}
	close(good);
	assert_int_equal(srv_stop(&s), 0);
	free(data);
}

/* A connection that stops mid-frame (or never says HELLO) is closed. */
static void test_idle_timeout(void **state)
{
	struct srv s = {.mem = 16 * MiB, .idle_ms = 200};
	uint8_t hdr[KVR_PROTO_HDR_LEN];
	struct kvr_frame f = {
	    .opcode = KVR_PROTO_OP_PUT, .id = 1, .key_len = 1, .payload_len = 9000};
	int fd, quiet;

	(void)state;
	srv_start(&s);
	quiet = cli_ready(s.port); /* idle between frames: stays open */
	fd = cli_ready(s.port);
	kvr_proto_encode(hdr, &f);
	wr(fd, hdr, 20);
	assert_true(closed_by_server(fd));
	close(fd);
	fd = cli_ready(s.port);
	wr(fd, hdr, sizeof(hdr));
	wr(fd, "k", 1);
	wr(fd, hdr, sizeof(hdr)); /* 32 of 9000 payload bytes */
	assert_true(closed_by_server(fd));
	close(fd);
	fd = cli_open(s.port); /* no HELLO */
	assert_true(closed_by_server(fd));
	close(fd);
	assert_int_equal(op_put(quiet, "still", "here", 4), 0);
	close(quiet);
	assert_int_equal(srv_stop(&s), 0);
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Closed by the server within ms (EOF or reset), without blocking longer. */
static bool closed_within(int fd, int ms)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};
	char x;

	if (poll(&p, 1, ms) <= 0)
		return false;
	ssize_t k = recv(fd, &x, 1, MSG_DONTWAIT);

	return k == 0 || (k < 0 && errno == ECONNRESET);
}

/*
 * Slowloris: a frame whose bytes trickle in (here one every 100 ms, so the
 * connection never goes quiet) is timed as a whole and the connection
 * closed once the idle timeout (plus the frame's payload at 64 MiB/s) has
 * passed; a client streaming frames back to back for longer than the
 * timeout is not.
 */
static void test_slowloris(void **state)
{
	struct srv s = {.mem = 16 * MiB, .idle_ms = 300};
	uint8_t hdr[KVR_PROTO_HDR_LEN], frame[KVR_PROTO_HDR_LEN + 1];
	struct kvr_frame f = {
	    .opcode = KVR_PROTO_OP_PUT, .id = 1, .key_len = 1, .payload_len = 9000};
	static uint8_t chunk[64 * KiB];
	bool closed = false;
	int64_t t0;
	int fd, busy;

	(void)state;
	srv_start(&s);
	busy = cli_ready(s.port);
	fd = cli_ready(s.port);
	kvr_proto_encode(hdr, &f);
	memcpy(frame, hdr, sizeof(hdr));
	frame[sizeof(hdr)] = 'k';
	t0 = now_ms();
	for (size_t i = 0; !closed && now_ms() - t0 < 5000; i++) {
		uint8_t b = i < sizeof(frame) ? frame[i] : 0;
		char x;

		if (send(fd, &b, 1, MSG_NOSIGNAL) != 1)
			closed = true;
		usleep(100 * 1000); /* the attacker's pace: the header alone takes 3.7 s */
		ssize_t k = recv(fd, &x, 1, MSG_DONTWAIT);

		if (k == 0 || (k < 0 && errno != EAGAIN && errno != EWOULDBLOCK))
			closed = true;
	}
	/* closed while the header was still trickling in */
	assert_true(closed);
	assert_true(now_ms() - t0 < 2000);
	close(fd);
	/* well-behaved and busy for three timeouts: stays */
	t0 = now_ms();
	for (int i = 0; now_ms() - t0 < 1000; i++) {
		char key[32];

		snprintf(key, sizeof(key), "stream-%d", i % 64);
		assert_int_equal(op_put(busy, key, chunk, sizeof(chunk)), 0);
	}
	assert_int_equal(op_put(busy, "still", "here", 4), 0);
	close(busy);
	assert_int_equal(srv_stop(&s), 0);
}

/* A full connection table makes room for a new client by closing the
 * connection idle longest, once it has been idle for the idle timeout;
 * busy or fresh ones are never taken. */
static void test_reclaim_idle(void **state)
{
	struct srv s = {.mem = 16 * MiB, .max_conns = 2, .idle_ms = 200};
	int a, b, c = -1;
	int64_t t0;

	(void)state;
	srv_start(&s);
	a = cli_ready(s.port);
	b = cli_ready(s.port);
	t0 = now_ms();
	while (now_ms() - t0 < 5000) {
		struct kvr_frame f;
		uint8_t body[KVR_PROTO_MAX_HELLO];

		c = cli_open(s.port);
		/* a refused connection is closed at once; an accepted one is not */
		if (!closed_within(c, 100)) {
			send_hello(c, 0, 0, NULL);
			if (recv_resp(c, &f, body, sizeof(body)) == 0 && f.status == 0)
				break;
		}
		close(c); /* refused: nobody idle long enough yet */
		c = -1;
	}
	assert_true(c >= 0);
	assert_true(now_ms() - t0 >= 150); /* not before the others were idle */
	assert_int_equal(op_put(c, "new", "client", 6), 0);
	/* the one reclaimed is a or b */
	assert_true(closed_within(a, 2000) || closed_within(b, 2000));
	close(a);
	close(b);
	close(c);
	assert_int_equal(srv_stop(&s), 0);
}

static void test_max_conns(void **state)
{
	struct srv s = {.mem = 16 * MiB, .max_conns = 2};
	int a, b, c;

	(void)state;
	srv_start(&s);
	a = cli_ready(s.port);
	b = cli_ready(s.port);
	c = cli_open(s.port);
	assert_true(closed_by_server(c));
	close(c);
	close(b);
	wait_stat(a, "conns", 1);
	c = cli_ready(s.port);
	assert_int_equal(op_put(c, "x", "y", 1), 0);
	/* larger than the whole pool: refused, the payload skipped */
	{
		uint8_t *big = calloc(1, 17 * MiB);

		assert_int_equal(op_put(c, "huge", big, 17 * MiB), -EFBIG);
		assert_int_equal(op_put(c, "after", "ok", 2), 0);
		/* the largest object: a quarter of the pool, and one byte more */
		assert_int_equal(stat_of(c, "max_object"), 4 * MiB);
		assert_int_equal(op_put(c, "max", big, 4 * MiB), 0);
		assert_int_equal(op_put(c, "max+1", big, 4 * MiB + 1), -EFBIG);
		assert_int_equal(op_get(c, "max", big, 17 * MiB), (int64_t)(4 * MiB));
		free(big);
	}
	close(a);
	close(c);
	assert_int_equal(srv_stop(&s), 0);
}

/*
 * Back-pressure: a client that pipelines GETs of a large object and never
 * reads holds at most its connection's limits in the server (requests and
 * answer bytes), is no longer read, and is closed once it has taken
 * nothing for the idle timeout; another client is served throughout.
 */
static void test_backpressure(void **state)
{
	struct srv s = {.mem = 64 * MiB, .idle_ms = 1500};
	uint8_t *obj = malloc(1 * MiB), *back = malloc(1 * MiB);
	int g, a, sent = 0;
	int64_t t0;
	uint8_t req[KVR_PROTO_HDR_LEN + 3 + 8];
	struct kvr_frame f = {.opcode = KVR_PROTO_OP_GET, .key_len = 3, .payload_len = 8};
	uint64_t cap = htole64(1 * MiB);

	(void)state;
	srv_start(&s);
	g = cli_ready(s.port);
	kvt_fill(obj, 1 * MiB, 91);
	assert_int_equal(op_put(g, "obj", obj, 1 * MiB), 0);
	a = cli_ready(s.port);
	/* pipeline GETs until the socket takes no more for half a second */
	t0 = now_ms();
	while (sent < 200000 && now_ms() - t0 < 8000) {
		ssize_t k;

		f.id = 1000 + (uint64_t)sent;
		kvr_proto_encode(req, &f);
		memcpy(req + KVR_PROTO_HDR_LEN, "obj", 3);
		memcpy(req + KVR_PROTO_HDR_LEN + 3, &cap, 8);
		k = send(a, req, sizeof(req), MSG_NOSIGNAL | MSG_DONTWAIT);
		if (k < 0 && errno == EAGAIN) {
			struct pollfd p = {.fd = a, .events = POLLOUT};

			if (poll(&p, 1, 500) == 0)
				break;
			continue;
		}
		assert_true(k > 0);
		if (k < (ssize_t)sizeof(req))
			break; /* the socket is full: enough asked */
		sent++;
	}
	/* far more asked than the server holds for one connection */
	assert_true(sent > (int)SRV_CONN_SLOTS * 2);
	assert_true(stat_of(g, "slots") <= SRV_CONN_SLOTS + 1);
	assert_true(stat_of(g, "queued_bytes") <= SRV_CONN_TX + 1 * MiB + 64 * KiB);
	assert_int_equal(stat_of(g, "held_conns"), 1);
	/* the other client is served meanwhile, byte for byte */
	for (int i = 0; i < 16; i++) {
		memset(back, 0, 1 * MiB);
		assert_int_equal(op_get(g, "obj", back, 1 * MiB), (int64_t)(1 * MiB));
		assert_true(kvt_check(back, 1 * MiB, 91));
	}
	/* the reader that never reads is let go once it has taken nothing for
	 * the idle timeout (reading now finds the end after what the kernels
	 * still hold), and all it held comes back */
	usleep(2 * s.idle_ms * 1000);
	assert_true(closed_by_server(a));
	wait_stat(g, "conns", 1);
	wait_stat(g, "slots", 1); /* this STATS request */
	wait_stat(g, "queued_bytes", 0);
	assert_int_equal(stat_of(g, "held_conns"), 0);
	close(a);
	close(g);
	free(obj);
	free(back);
	assert_int_equal(srv_stop(&s), 0);
}

/* Send a PUT header announcing len payload bytes, and nothing more. */
static int put_header_only(int port, const char *key, uint64_t len)
{
	struct kvr_frame f = {.opcode = KVR_PROTO_OP_PUT, .id = 7, .payload_len = len};
	uint8_t hdr[KVR_PROTO_HDR_LEN];
	int fd = cli_ready(port);

	f.key_len = (uint16_t)strlen(key);
	kvr_proto_encode(hdr, &f);
	wr(fd, hdr, sizeof(hdr));
	wr(fd, key, f.key_len);
	return fd;
}

/*
 * A PUT header whose payload never comes evicts nothing when it announces
 * more than the largest object, and at most one object's room otherwise;
 * while it holds that room, another large PUT waits (its connection is not
 * read) instead of failing, and goes through once the stalled frame has
 * timed out. Objects stored before are intact.
 */
static void test_put_reservation(void **state)
{
	struct srv s = {.mem = 16 * MiB, .idle_ms = 1000};
	uint8_t *buf = malloc(4 * MiB);
	char key[32];
	int g, a1, a2, a3;

	(void)state;
	srv_start(&s);
	g = cli_ready(s.port);
	for (int i = 0; i < 8; i++) {
		snprintf(key, sizeof(key), "keep-%d", i);
		kvt_fill(buf, 1 * MiB, 200 + (uint64_t)i);
		assert_int_equal(op_put(g, key, buf, 1 * MiB), 0);
	}
	a1 = put_header_only(s.port, "whole-pool", 16 * MiB);
	a2 = put_header_only(s.port, "max-a", 4 * MiB);
	wait_stat(g, "reserved_bytes", 4 * MiB);
	a3 = put_header_only(s.port, "max-b", 4 * MiB);
	wait_stat(g, "held_conns", 1);
	assert_int_equal(stat_of(g, "evictions"), 0);
	assert_int_equal(stat_of(g, "objects"), 8);
	/* small puts go on; a large one waits for the room, then is stored */
	assert_int_equal(op_put(g, "small", "s", 1), 0);
	kvt_fill(buf, 2 * MiB, 300);
	assert_int_equal(op_put(g, "late", buf, 2 * MiB), 0);
	memset(buf, 0, 2 * MiB);
	assert_int_equal(op_get(g, "late", buf, 4 * MiB), (int64_t)(2 * MiB));
	assert_true(kvt_check(buf, 2 * MiB, 300));
	for (int i = 0; i < 8; i++) {
		snprintf(key, sizeof(key), "keep-%d", i);
		memset(buf, 0, 1 * MiB);
		assert_int_equal(op_get(g, key, buf, 4 * MiB), (int64_t)(1 * MiB));
		assert_true(kvt_check(buf, 1 * MiB, 200 + (uint64_t)i));
	}
	/* the stalled frames time out: nothing is left held */
	wait_stat(g, "conns", 1);
	assert_int_equal(stat_of(g, "reserved_bytes"), 0);
	assert_int_equal(stat_of(g, "held_conns"), 0);
	close(a1);
	close(a2);
	close(a3);
	close(g);
	free(buf);
	assert_int_equal(srv_stop(&s), 0);
}

/* --------------------------------------------------------------- spilling */

#define SP_N   48
#define SP_LEN (256 * KiB)

static uint64_t sp_len(int i)
{
	return SP_LEN - (uint64_t)i * 97;
}

static void sp_key(char *key, size_t n, int i)
{
	snprintf(key, n, "spill-%d", i);
}

/* Put more than memory holds, get everything back; remove, replace. */
static void test_spill(void **state)
{
	struct srv s = {.mem = 4 * MiB, .spill = 64 * MiB};
	uint8_t *data = malloc(SP_LEN), *back = malloc(SP_LEN);
	char key[32];
	int fd;

	(void)state;
	srv_start(&s);
	fd = cli_ready(s.port);
	for (int i = 0; i < SP_N; i++) {
		sp_key(key, sizeof(key), i);
		kvt_fill(data, sp_len(i), 7000 + (uint64_t)i);
		assert_int_equal(op_put(fd, key, data, sp_len(i)), 0);
	}
	assert_true(stat_of(fd, "evictions") >= SP_N - 16);
	for (int round = 0; round < 2; round++) {
		for (int i = 0; i < SP_N; i++) {
			sp_key(key, sizeof(key), i);
			memset(back, 0, SP_LEN);
			assert_int_equal(op_get(fd, key, back, SP_LEN), (int64_t)sp_len(i));
			assert_true(kvt_check(back, sp_len(i), 7000 + (uint64_t)i));
			assert_int_equal(op_simple(fd, KVR_PROTO_OP_EXISTS, key),
					 (int64_t)sp_len(i));
		}
	}
	assert_true(stat_of(fd, "spilled") > 0);
	assert_true(stat_of(fd, "spill_hits") > 0);
	assert_int_equal(stat_of(fd, "spill_errors"), 0);
	/* every key: remove (wherever it is), then it is gone everywhere */
	for (int i = 0; i < SP_N; i += 3) {
		sp_key(key, sizeof(key), i);
		assert_int_equal(op_simple(fd, KVR_PROTO_OP_REMOVE, key), 0);
		assert_int_equal(op_simple(fd, KVR_PROTO_OP_REMOVE, key), -ENOENT);
		assert_int_equal(op_get(fd, key, back, SP_LEN), -ENOENT);
		assert_int_equal(op_simple(fd, KVR_PROTO_OP_EXISTS, key), -ENOENT);
	}
	/* replace others with new bytes: the spilled old value never returns */
	for (int i = 1; i < SP_N; i += 3) {
		sp_key(key, sizeof(key), i);
		kvt_fill(data, 1000 + (uint64_t)i, 99000 + (uint64_t)i);
		assert_int_equal(op_put(fd, key, data, 1000 + (uint64_t)i), 0);
	}
	for (int round = 0; round < 2; round++) {
		for (int i = 0; i < SP_N; i++) {
			int64_t r;

			sp_key(key, sizeof(key), i);
			r = op_get(fd, key, back, SP_LEN);
			if (i % 3 == 0) {
				assert_int_equal(r, -ENOENT);
			} else if (i % 3 == 1) {
				assert_int_equal(r, 1000 + i);
				assert_true(kvt_check(back, (size_t)r, 99000 + (uint64_t)i));
			} else {
				assert_int_equal(r, (int64_t)sp_len(i));
				assert_true(kvt_check(back, (size_t)r, 7000 + (uint64_t)i));
			}
		}
	}
	close(fd);
	assert_int_equal(srv_stop(&s), 0);
	free(data);
	free(back);
}

/* A burst of pipelined PUTs far beyond memory: requests that find no room
 * wait for the spill writes (none fails), then everything reads back. */
static void test_spill_burst(void **state)
{
	enum { N = 64 };
	struct srv s = {.mem = 4 * MiB, .spill = 128 * MiB};
	uint8_t *data = malloc(512 * KiB), *back = malloc(512 * KiB);
	struct kvr_frame f;
	char key[32];
	int fd, rfd;

	(void)state;
	srv_start(&s);
	fd = cli_ready(s.port);
	rfd = cli_ready(s.port);
	/* the same keys twice: the later value must win */
	for (int pass = 0; pass < 2; pass++) {
		for (int i = 0; i < N; i++) {
			uint64_t len = 512 * KiB - (uint64_t)i * 1000 - (uint64_t)pass * 7;

			snprintf(key, sizeof(key), "burst-%d", i);
			kvt_fill(data, len, 500 + (uint64_t)i + (uint64_t)pass * 1000);
			send_frame(fd, KVR_PROTO_OP_PUT, 100 + (uint64_t)(pass * N + i), key, data,
				   len);
		}
	}
	for (int i = 0; i < 2 * N; i++) {
		assert_int_equal(recv_resp(fd, &f, NULL, 0), 0);
		assert_int_equal(f.status, 0);
	}
	for (int i = 0; i < N; i++) {
		uint64_t len = 512 * KiB - (uint64_t)i * 1000 - 7;

		snprintf(key, sizeof(key), "burst-%d", i);
		assert_int_equal(op_get(rfd, key, back, 512 * KiB), (int64_t)len);
		assert_true(kvt_check(back, len, 1500 + (uint64_t)i));
	}
	/* and pipelined GETs that all need promoting */
	for (int i = 0; i < N; i++) {
		snprintf(key, sizeof(key), "burst-%d", i);
		send_get(fd, 1000 + (uint64_t)i, key, 512 * KiB);
	}
	for (int i = 0; i < N; i++) {
		uint64_t k;

		assert_int_equal(recv_resp(fd, &f, back, 512 * KiB), 0);
		assert_int_equal(f.status, 0);
		k = f.id - 1000;
		assert_int_equal(f.payload_len, 512 * KiB - k * 1000 - 7);
		assert_true(kvt_check(back, f.payload_len, 1500 + k));
	}
	assert_int_equal(stat_of(rfd, "parked_bytes"), 0);
	close(fd);
	close(rfd);
	assert_int_equal(srv_stop(&s), 0);
	free(data);
	free(back);
}

/* Random PUT/GET/EXISTS/REMOVE on a few keys through a pool that holds a
 * handful of them, against a model: spilling, promoting and removing behind
 * the scenes never return stale, resurrected or torn bytes. */
static void test_spill_random(void **state)
{
	enum { KEYS = 40, OPS = 3000 };
	struct srv s = {.mem = 2 * MiB, .spill = 64 * MiB};
	uint64_t seed = kvt_env_u64("KVR_TEST_SEED", 0x5eed), rng = seed;
	uint64_t mseed[KEYS] = {0}, mlen[KEYS] = {0};
	bool live[KEYS] = {false};
	size_t max = 300 * KiB;
	uint8_t *data = malloc(max), *back = malloc(max);
	char key[32];
	int fd;

	(void)state;
	srv_start(&s);
	fd = cli_ready(s.port);
	for (int i = 0; i < OPS; i++) {
		int k = (int)(kvt_rand(&rng) % KEYS), op = (int)(kvt_rand(&rng) % 10);
		int64_t r;

		snprintf(key, sizeof(key), "rnd-%d", k);
		if (op < 4) {
			uint64_t len = 1 + kvt_rand(&rng) % max;

			kvt_fill(data, len, seed + (uint64_t)i);
			assert_int_equal(op_put(fd, key, data, len), 0);
			live[k] = true;
			mseed[k] = seed + (uint64_t)i;
			mlen[k] = len;
		} else if (op < 8) {
			r = op_get(fd, key, back, max);
			if (!live[k]) {
				assert_int_equal(r, -ENOENT);
				continue;
			}
			if (r != (int64_t)mlen[k])
				fail_msg("op %d: get %s: %lld, want %llu (seed %llu)", i, key,
					 (long long)r, (unsigned long long)mlen[k],
					 (unsigned long long)seed);
			assert_true(kvt_check(back, mlen[k], mseed[k]));
		} else if (op < 9) {
			r = op_simple(fd, KVR_PROTO_OP_EXISTS, key);
			assert_int_equal(r, live[k] ? (int64_t)mlen[k] : -ENOENT);
		} else {
			r = op_simple(fd, KVR_PROTO_OP_REMOVE, key);
			assert_int_equal(r, live[k] ? 0 : -ENOENT);
			live[k] = false;
		}
	}
	assert_true(stat_of(fd, "spilled") > 0);
	assert_int_equal(stat_of(fd, "spill_errors"), 0);
	close(fd);
	assert_int_equal(srv_stop(&s), 0);
	free(data);
	free(back);
}

/* A duplicate id while the first request is still in flight (a GET being
 * promoted from the spill store) closes that connection. */
static void test_duplicate_id(void **state)
{
	struct srv s = {.mem = 4 * MiB, .spill = 64 * MiB};
	uint8_t *data = malloc(SP_LEN), two[2 * (KVR_PROTO_HDR_LEN + 16 + 8)];
	struct kvr_frame f = {.opcode = KVR_PROTO_OP_GET, .id = 77, .payload_len = 8};
	uint64_t cap = htole64(SP_LEN);
	char key[32];
	size_t n = 0;
	int fd, bad;

	(void)state;
	srv_start(&s);
	fd = cli_ready(s.port);
	for (int i = 0; i < 24; i++) {
		sp_key(key, sizeof(key), i);
		kvt_fill(data, sp_len(i), (uint64_t)i);
		assert_int_equal(op_put(fd, key, data, sp_len(i)), 0);
	}
	/* wait until every evicted object is on file (none is still in the pool) */
	wait_stat(fd, "spilled", stat_of(fd, "evictions"));
	sp_key(key, sizeof(key), 0);
	f.key_len = (uint16_t)strlen(key);
	for (int i = 0; i < 2; i++) {
		kvr_proto_encode(two + n, &f);
		n += KVR_PROTO_HDR_LEN;
		memcpy(two + n, key, f.key_len);
		n += f.key_len;
		memcpy(two + n, &cap, 8);
		n += 8;
	}
	bad = cli_ready(s.port);
	wr(bad, two, n);
	assert_true(closed_by_server(bad));
	close(bad);
	/* the object is still there for everyone else */
	assert_int_equal(op_get(fd, key, data, SP_LEN), (int64_t)sp_len(0));
	assert_true(kvt_check(data, sp_len(0), 0));
	close(fd);
	assert_int_equal(srv_stop(&s), 0);
	free(data);
}

/* Append a request frame to buf at *n. */
static void frame_at(uint8_t *buf, size_t *n, uint8_t op, uint64_t id, const char *key,
		     const void *payload, uint64_t len)
{
	struct kvr_frame f = {.opcode = op, .id = id, .payload_len = len};

	f.key_len = (uint16_t)strlen(key);
	*n += kvr_proto_encode(buf + *n, &f);
	memcpy(buf + *n, key, f.key_len);
	*n += f.key_len;
	memcpy(buf + *n, payload, len);
	*n += len;
}

/* A duplicate of a request answered at once (from memory, a small answer, a
 * large zero-copy one, a PUT): the answer is still on its way when the copy
 * is parsed, so the id is in flight and the copy closes that connection. An
 * id used again after its answer arrived is a new request. */
static void test_duplicate_id_answered(void **state)
{
	static const uint8_t ops[] = {KVR_PROTO_OP_EXISTS, KVR_PROTO_OP_GET, KVR_PROTO_OP_PUT};
	struct srv s = {.mem = 16 * MiB};
	uint8_t *big = malloc(64 * KiB), two[2 * (KVR_PROTO_HDR_LEN + 16 + 8)];
	uint64_t cap = htole64(64 * KiB), v;
	struct kvr_frame f;
	int fd, bad;

	(void)state;
	srv_start(&s);
	fd = cli_ready(s.port);
	kvt_fill(big, 64 * KiB, 3);
	assert_int_equal(op_put(fd, "dup", big, 64 * KiB), 0);
	for (size_t i = 0; i < sizeof(ops); i++) {
		const void *pl = ops[i] == KVR_PROTO_OP_GET ? (const void *)&cap : "v";
		uint64_t len = ops[i] == KVR_PROTO_OP_GET ? 8 : ops[i] == KVR_PROTO_OP_PUT ? 1 : 0;
		size_t n = 0;

		for (int k = 0; k < 2; k++)
			frame_at(two, &n, ops[i], 88,
				 ops[i] == KVR_PROTO_OP_PUT ? "dup-put" : "dup", pl, len);
		bad = cli_ready(s.port);
		wr(bad, two, n);
		assert_true(closed_by_server(bad));
		close(bad);
	}
	for (int k = 0; k < 2; k++) {
		send_frame(fd, KVR_PROTO_OP_EXISTS, 4242, "dup", NULL, 0);
		assert_int_equal(recv_resp(fd, &f, &v, sizeof(v)), 0);
		assert_int_equal(f.id, 4242);
		assert_int_equal(f.status, 0);
		assert_int_equal(le64toh(v), 64 * KiB);
	}
	assert_int_equal(op_get(fd, "dup", big, 64 * KiB), 64 * KiB);
	assert_true(kvt_check(big, 64 * KiB, 3));
	wait_stat(fd, "conns", 1);
	close(fd);
	assert_int_equal(srv_stop(&s), 0);
	free(big);
}

/* ------------------------------------------------------------------ groups */

static void test_group(void **state)
{
	struct srv sh[3] = {{.mem = 16 * MiB, .secret = "k"},
			    {.mem = 16 * MiB, .secret = "k"},
			    {.mem = 16 * MiB, .secret = "k"}};
	kvr_server_group *g;
	struct kvr_hello h;
	uint8_t back[64];
	int a, b, c;

	(void)state;
	assert_int_equal(kvr_server_group_create(0, &g), -EINVAL);
	assert_int_equal(kvr_server_group_create(3, &g), 0);
	/* shard 2 starts later: connections handed to it wait for it */
	for (uint32_t i = 0; i < 2; i++) {
		sh[i].g = g;
		sh[i].shard = i;
		srv_start(&sh[i]);
	}
	a = cli_open(sh[0].port);
	assert_int_equal(handshake(a, 1, "k", &h), 0);
	assert_int_equal(h.shard, 1);
	assert_int_equal(h.shards, 3);
	assert_int_equal(op_put(a, "only-on-1", "one", 3), 0);
	b = cli_open(sh[0].port);
	assert_int_equal(handshake(b, 0, "k", &h), 0);
	assert_int_equal(h.shard, 0);
	assert_int_equal(op_get(b, "only-on-1", back, sizeof(back)), -ENOENT);
	assert_int_equal(op_get(a, "only-on-1", back, sizeof(back)), 3);
	assert_int_equal(stat_of(a, "shard"), 1);
	assert_int_equal(stat_of(b, "shard"), 0);
	/* no such shard */
	c = cli_open(sh[0].port);
	assert_int_equal(handshake(c, 3, "k", NULL), -EINVAL);
	assert_true(closed_by_server(c));
	close(c);
	/* shard 2 is not serving yet: its connection waits for it */
	c = cli_open(sh[0].port);
	assert_int_equal(handshake_begin(c, 2, "k"), 1);
	sh[2].g = g;
	sh[2].shard = 2;
	srv_start(&sh[2]);
	assert_int_equal(handshake_end(c, 1, &h), 0);
	assert_int_equal(h.shard, 2);
	assert_int_equal(op_put(c, "on-2", "two", 3), 0);
	close(c);
	/* any shard: one that serves */
	c = cli_open(sh[0].port);
	assert_int_equal(handshake(c, KVR_PROTO_ANY_SHARD, "k", &h), 0);
	assert_true(h.shard < 3);
	assert_int_equal(stat_of(c, "shard"), h.shard);
	close(c);
	/* a closed shard refuses */
	assert_int_equal(srv_stop(&sh[2]), 0);
	c = cli_open(sh[0].port);
	assert_int_equal(handshake(c, 2, "k", NULL), -ESHUTDOWN);
	close(c);
	assert_int_equal(op_get(a, "only-on-1", back, sizeof(back)), 3);
	close(a);
	close(b);
	assert_int_equal(srv_stop(&sh[1]), 0);
	assert_int_equal(srv_stop(&sh[0]), 0);
	kvr_server_group_destroy(g);
}

/* ------------------------------------------------- the real client (tcp.c) */

static void client_roundtrip(const char *uri, int n)
{
	kvr_engine *e = kvt_engine();
	struct kvr_connect_opts co = {.size = sizeof(co), .secret = "k", .secret_len = 1};
	size_t arena = 64 * MiB;
	uint8_t *mem = kvt_alloc_mem(arena);
	struct kvt_done *d = calloc(1, sizeof(*d));
	kvr_obj *objs = calloc((size_t)n, sizeof(*objs));
	kvr_sge *sges = calloc((size_t)n, sizeof(*sges));
	char(*keys)[32] = calloc((size_t)n, sizeof(*keys));
	size_t half = arena / 2, each = half / (size_t)n;
	kvr_target *t;
	kvr_mr *mr;

	assert_int_equal(kvr_mem_register(e, mem, arena, 0, &mr), 0);
	assert_int_equal(kvr_connect(e, uri, &co, &t), 0);
	for (int i = 0; i < n; i++) {
		snprintf(keys[i], sizeof(keys[i]), "client-%d", i);
		sges[i] = (kvr_sge){mem + (size_t)i * each, each - (size_t)i};
		kvt_fill(sges[i].addr, sges[i].len, 300 + (uint64_t)i);
		objs[i] = (kvr_obj){keys[i], strlen(keys[i]), &sges[i], 1};
	}
	assert_int_equal(kvr_put(t, objs, (size_t)n, kvt_batch_cb, d), 0);
	assert_int_equal(kvt_wait(e, d, 10000), 1);
	for (int i = 0; i < n; i++)
		assert_int_equal(d->results[i], (int64_t)sges[i].len);
	for (int i = 0; i < n; i++) {
		sges[i].addr = mem + half + (size_t)i * each;
		sges[i].len = each;
		memset(sges[i].addr, 0, each);
	}
	memset(d, 0, sizeof(*d));
	assert_int_equal(kvr_get(t, objs, (size_t)n, kvt_batch_cb, d), 0);
	assert_int_equal(kvt_wait(e, d, 10000), 1);
	for (int i = 0; i < n; i++) {
		assert_int_equal(d->results[i], (int64_t)(each - (size_t)i));
		assert_true(kvt_check(sges[i].addr, each - (size_t)i, 300 + (uint64_t)i));
	}
	kvr_engine_destroy(e);
	kvt_free_mem(mem, arena);
	free(d);
	free(objs);
	free(sges);
	free(keys);
}

static void test_client(void **state)
{
	struct srv s = {.mem = 64 * MiB, .secret = "k"};
	struct srv sh[2] = {{.mem = 32 * MiB, .secret = "k"}, {.mem = 32 * MiB, .secret = "k"}};
	kvr_server_group *g;
	char uri[64];

	(void)state;
	srv_start(&s);
	snprintf(uri, sizeof(uri), "tcp://127.0.0.1:%d", s.port);
	client_roundtrip(uri, 200);
	assert_int_equal(srv_stop(&s), 0);

	assert_int_equal(kvr_server_group_create(2, &g), 0);
	for (uint32_t i = 0; i < 2; i++) {
		sh[i].g = g;
		sh[i].shard = i;
		srv_start(&sh[i]);
	}
	snprintf(uri, sizeof(uri), "tcp://127.0.0.1:%d", sh[0].port);
	client_roundtrip(uri, 100);
	assert_int_equal(srv_stop(&sh[1]), 0);
	assert_int_equal(srv_stop(&sh[0]), 0);
	kvr_server_group_destroy(g);
}

/* Flip one byte of key's object in the served pool (the server is idle). */
static void corrupt(struct srv *s, const char *key)
{
	struct kvr_store *ms = kvr_store_of(s->mem_t);
	struct kvr_entry *en =
	    kvr_index_find(&ms->ix, key, (uint16_t)strlen(key), kvr_key_hash(key, strlen(key)));

	assert_non_null(en);
	ms->base[en->off + en->len / 2] ^= 0x40;
}

/*
 * Integrity end to end: a client that checks GET payloads itself
 * (kvr_connect over TCP) gets each object's crc32c as a trailer and finds a
 * corrupted object as -EIO, small or large; a client that does not ask (a
 * raw one here) gets the object as it is in memory.
 */
static void test_end_to_end_crc(void **state)
{
	struct srv s = {.mem = 16 * MiB};
	kvr_engine *e = kvt_engine();
	uint8_t *mem = kvt_alloc_mem(4 * MiB), back[1024];
	struct kvt_done *d = calloc(1, sizeof(*d));
	static const char *keys[] = {"e2e-small", "e2e-large"};
	static const size_t lens[] = {1000, 1 * MiB};
	kvr_sge sg[2];
	kvr_obj ob[2];
	kvr_target *t;
	kvr_mr *mr;
	char uri[64];
	int fd;

	(void)state;
	srv_start(&s);
	snprintf(uri, sizeof(uri), "tcp://127.0.0.1:%d", s.port);
	assert_int_equal(kvr_mem_register(e, mem, 4 * MiB, 0, &mr), 0);
	assert_int_equal(kvr_connect(e, uri, NULL, &t), 0);
	for (int i = 0; i < 2; i++) {
		sg[i] = (kvr_sge){mem + (size_t)i * 2 * MiB, lens[i]};
		kvt_fill(sg[i].addr, lens[i], 70 + (uint64_t)i);
		ob[i] = (kvr_obj){keys[i], strlen(keys[i]), &sg[i], 1};
	}
	assert_int_equal(kvr_put(t, ob, 2, kvt_batch_cb, d), 0);
	assert_int_equal(kvt_wait(e, d, 10000), 1);
	/* intact: read back through the trailer check */
	memset(mem, 0, 4 * MiB);
	memset(d, 0, sizeof(*d));
	assert_int_equal(kvr_get(t, ob, 2, kvt_batch_cb, d), 0);
	assert_int_equal(kvt_wait(e, d, 10000), 1);
	for (int i = 0; i < 2; i++) {
		assert_int_equal(d->results[i], (int64_t)lens[i]);
		assert_true(kvt_check(sg[i].addr, lens[i], 70 + (uint64_t)i));
	}
	/* corrupted in the pool: the client finds out */
	corrupt(&s, keys[0]);
	corrupt(&s, keys[1]);
	memset(d, 0, sizeof(*d));
	assert_int_equal(kvr_get(t, ob, 2, kvt_batch_cb, d), 0);
	assert_int_equal(kvt_wait(e, d, 10000), 1);
	assert_int_equal(d->results[0], -EIO);
	assert_int_equal(d->results[1], -EIO);
	/* a client without the check gets the bytes as stored: the server does
	 * not pass over an object again per GET (its crc was checked as it
	 * arrived), so a 48-byte request cannot cost a pass over 1 MiB */
	fd = cli_ready(s.port);
	assert_int_equal(op_get(fd, keys[0], back, sizeof(back)), (int64_t)lens[0]);
	assert_int_equal(stat_of(fd, "objects"), 2);
	close(fd);
	assert_int_equal(kvr_target_close(t), 0);
	kvr_engine_destroy(e);
	kvt_free_mem(mem, 4 * MiB);
	free(d);
	assert_int_equal(srv_stop(&s), 0);
}

/* ------------------------------------------------------------ API checks */

static void test_api_errors(void **state)
{
	kvr_engine *e = kvt_engine();
	struct kvr_store_opts fo = {
	    .size = sizeof(fo), .capacity = 16 * MiB, .flags = KVR_STORE_TRUNCATE};
	struct kvr_serve_opts so = {.size = sizeof(so)};
	kvr_target *mem, *file;
	kvr_server *s = NULL;
	char path[600], buf[256];

	(void)state;
	snprintf(path, sizeof(path), "file:%s", kvt_path("serve_api"));
	assert_int_equal(kvr_store_open(e, "mem:8M", NULL, &mem), 0);
	assert_int_equal(kvr_store_open(e, path, &fo, &file), 0);
	assert_int_equal(kvr_serve(e, "tcp://127.0.0.1:0", file, NULL, &s), -EINVAL);
	assert_int_equal(kvr_serve(e, "udp://127.0.0.1:0", mem, NULL, &s), -EINVAL);
	assert_int_equal(kvr_serve(e, "tcp://127.0.0.1", mem, NULL, &s), -EINVAL);
	assert_int_equal(kvr_serve(e, "tcp://::1:0", mem, NULL, &s), -EINVAL);
	assert_int_equal(kvr_serve(e, "tcp://127.0.0.1:99999", mem, NULL, &s), -EINVAL);
	assert_int_equal(kvr_serve(e, NULL, mem, NULL, &s), -EINVAL);
	so.spill = mem;
	assert_int_equal(kvr_serve(e, "tcp://127.0.0.1:0", mem, &so, &s), -EINVAL);
	so.spill = NULL;
	so.secret = "x";
	assert_int_equal(kvr_serve(e, "tcp://127.0.0.1:0", mem, &so, &s), -EINVAL);
	so.secret = NULL;
	so.shard = 1;
	assert_int_equal(kvr_serve(e, "tcp://127.0.0.1:0", mem, &so, &s), -EINVAL);
	so.shard = 0;
	so.spill = file;
	assert_int_equal(kvr_serve(e, "tcp://[::1]:0", mem, &so, &s) == 0 ||
			     kvr_serve(e, "tcp://127.0.0.1:0", mem, &so, &s) == 0,
			 1);
	assert_true(kvr_server_addr(s, buf, sizeof(buf)) > 6);
	assert_true(strncmp(buf, "tcp://", 6) == 0);
	/* the pool is spilled by one server at a time */
	{
		kvr_server *s2;

		assert_int_equal(kvr_serve(e, "tcp://127.0.0.1:0", mem, &so, &s2), -EBUSY);
	}
	assert_true(kvr_server_stats_json(s, buf, sizeof(buf)) > 0);
	assert_int_equal(kvr_server_stats_json(s, buf, 8), 7);
	assert_int_equal(kvr_server_close(s, 1000), 0);
	assert_int_equal(kvr_server_close(NULL, 0), -EINVAL);
	kvr_engine_destroy(e);
	kvt_unlink(path + 5);
}

/* -------------------------------------------------- close and errors */

static void count_wake(void *ctx)
{
	++*(int *)ctx;
}

/*
 * kvr_server_close waits for the server's own work (connections, spill
 * writes and promotes) but runs none of the host's callbacks: a batch of
 * the host's on the same engine that finishes meanwhile (a local one done
 * before the close, a remote one to this very server in flight) stays
 * queued for the host's next kvr_engine_poll, as does its wake hook.
 */
static void test_close_runs_no_callbacks(void **state)
{
	enum { N = 24 };
	kvr_engine *e = kvt_engine();
	struct kvr_store_opts fo = {
	    .size = sizeof(fo), .capacity = 64 * MiB, .flags = KVR_STORE_TRUNCATE};
	struct kvr_serve_opts so = {.size = sizeof(so)};
	struct kvt_done *put = calloc(1, sizeof(*put)), *local = calloc(1, sizeof(*local));
	struct kvt_done *get = calloc(1, sizeof(*get));
	uint8_t *mem = kvt_alloc_mem(N * SP_LEN);
	kvr_target *pool, *file, *user, *t;
	char path[600], uri[80], keys[N][32];
	kvr_sge sg[N];
	kvr_obj ob[N];
	kvr_server *s;
	kvr_mr *mr;
	int wakes = 0;

	(void)state;
	snprintf(path, sizeof(path), "file:%s", kvt_path("serve_close_cb"));
	assert_int_equal(kvr_store_open(e, "mem:4M", NULL, &pool), 0);
	assert_int_equal(kvr_store_open(e, path, &fo, &file), 0);
	assert_int_equal(kvr_store_open(e, "mem:1M", NULL, &user), 0);
	so.spill = file;
	assert_int_equal(kvr_serve(e, "tcp://127.0.0.1:0", pool, &so, &s), 0);
	assert_true(kvr_server_addr(s, uri, sizeof(uri)) > 0);
	assert_int_equal(kvr_mem_register(e, mem, N * SP_LEN, 0, &mr), 0);
	assert_int_equal(kvr_connect(e, uri, NULL, &t), 0);
	for (int i = 0; i < N; i++) {
		sp_key(keys[i], sizeof(keys[i]), i);
		sg[i] = (kvr_sge){mem + (size_t)i * SP_LEN, SP_LEN};
		kvt_fill(sg[i].addr, SP_LEN, 900 + (uint64_t)i);
		ob[i] = (kvr_obj){keys[i], strlen(keys[i]), &sg[i], 1};
	}
	/* more than the pool holds: the server spills while it closes */
	assert_int_equal(kvr_put(t, ob, N, kvt_batch_cb, put), 0);
	assert_int_equal(kvt_wait(e, put, 10000), 1);
	for (int i = 0; i < N; i++)
		assert_int_equal(put->results[i], SP_LEN);
	assert_int_equal(kvr_put(user, ob, 1, kvt_batch_cb, local), 0);
	assert_int_equal(kvr_get(t, ob, N, kvt_batch_cb, get), 0);
	assert_int_equal(kvr_engine_set_wake_cb(e, count_wake, &wakes), 0);
	assert_int_equal(kvr_server_close(s, 5000), 0);
	assert_int_equal(local->calls, 0);
	assert_int_equal(get->calls, 0);
	assert_int_equal(wakes, 0);
	assert_int_equal(kvt_wait(e, local, 5000), 1);
	assert_int_equal(local->results[0], SP_LEN);
	assert_int_equal(kvt_wait(e, get, 10000), 1);
	assert_int_equal(kvr_engine_set_wake_cb(e, NULL, NULL), 0);
	assert_int_equal(kvr_target_close(t), 0);
	assert_int_equal(kvr_target_close(user), 0);
	assert_int_equal(kvr_target_close(file), 0);
	assert_int_equal(kvr_target_close(pool), 0);
	kvr_engine_destroy(e);
	kvt_unlink(path + 5);
	kvt_free_mem(mem, N * SP_LEN);
	free(put);
	free(local);
	free(get);
}

/* kvr_engine_errmsg belongs to the last failed call: a later failure never
 * shows an earlier call's message, whether it has one of its own or not. */
static void test_errmsg_fresh(void **state)
{
	kvr_engine *e = kvt_engine();
	uint8_t *m = kvt_alloc_mem(2 * MiB);
	struct kvr_serve_opts so = {.size = sizeof(so), .secret = "x"}; /* no secret_len */
	struct kvr_connect_opts co = {.size = sizeof(co), .conns = 100};
	kvr_target *mem, *t;
	kvr_server *s;
	kvr_mr *a, *b;

	(void)state;
	assert_int_equal(kvr_mem_register(e, m, 2 * MiB, 0, &a), 0);
	assert_int_equal(kvr_mem_register(e, m + MiB, MiB, 0, &b), -EEXIST);
	assert_non_null(strstr(kvr_engine_errmsg(e), "overlaps"));
	assert_int_equal(kvr_store_open(e, "mem:8M", NULL, &mem), 0);
	assert_int_equal(kvr_serve(e, "tcp://127.0.0.1:0", mem, &so, &s), -EINVAL);
	assert_string_equal(kvr_engine_errmsg(e), "");

	assert_int_equal(kvr_mem_register(e, m + MiB, MiB, 0, &b), -EEXIST);
	assert_int_equal(kvr_connect(e, "tcp://127.0.0.1:1", &co, &t), -EINVAL);
	assert_non_null(strstr(kvr_engine_errmsg(e), "bad remote URI or options"));
	assert_int_equal(kvr_mem_register(e, m + MiB, MiB, 0, &b), -EEXIST);
	assert_int_equal(kvr_serve(e, "bogus://127.0.0.1:1", mem, NULL, &s), -EINVAL);
	assert_non_null(strstr(kvr_engine_errmsg(e), "bad listen URI"));
	assert_int_equal(kvr_connect(e, "bogus://127.0.0.1:1", NULL, &t), -EINVAL);
	assert_non_null(strstr(kvr_engine_errmsg(e), "unknown remote URI"));
	/* a call that succeeds leaves none */
	assert_int_equal(kvr_connect(e, "tcp://127.0.0.1:1", NULL, &t), 0);
	assert_string_equal(kvr_engine_errmsg(e), "");
	assert_int_equal(kvr_target_close(t), 0);
	assert_int_equal(kvr_target_close(mem), 0);
	kvr_engine_destroy(e);
	kvt_free_mem(m, 2 * MiB);
}

/*
 * Fault injection, on this thread only (the in-process servers run on
 * their own): realloc of one block fails (the engine's timer heap, so that
 * kvr_timer_add fails), or HMAC fails (so kvr_proto_auth_tag does). Calls
 * from the library linked into this program reach these first.
 */
static __thread const void *fail_realloc_of;
static __thread bool fail_hmac;

void *realloc(void *p, size_t n)
{
	static void *(*real)(void *, size_t);

	if (p && p == fail_realloc_of) {
		errno = ENOMEM;
		return NULL;
	}
	if (!real)
		*(void **)&real = dlsym(RTLD_NEXT, "realloc");
	return real(p, n);
}

unsigned char *HMAC(const EVP_MD *md, const void *key, int key_len, const unsigned char *d,
		    size_t n, unsigned char *out, unsigned int *out_len)
{
	static unsigned char *(*real)(const EVP_MD *, const void *, int, const unsigned char *,
				      size_t, unsigned char *, unsigned int *);

	if (fail_hmac)
		return NULL;
	if (!real)
		*(void **)&real = dlsym(RTLD_NEXT, "HMAC");
	return real(md, key, key_len, d, n, out, out_len);
}

/* Arm dummy timers until e's heap is full (the next add must grow it). */
static uint32_t fill_timers(kvr_engine *e, struct kvr_timer *pad, uint32_t max)
{
	uint32_t n = 0;

	while (e->timers.n < e->timers.cap) {
		assert_true(n < max);
		assert_int_equal(kvr_timer_add(&e->timers, &pad[n++], UINT64_MAX / 2), 0);
	}
	return n;
}

/* A timer that cannot be armed fails what needed it with -ENOMEM: the
 * server's idle tick fails kvr_serve, a connection's handshake deadline
 * fails the request that would have opened it. */
static void test_timer_failures(void **state)
{
	static struct kvr_timer pad[4096];
	struct srv real = {.mem = 16 * MiB};
	kvr_engine *e = kvt_engine();
	struct kvt_done *d = calloc(1, sizeof(*d));
	kvr_obj ob = {"no-timer", 8, NULL, 0};
	kvr_target *mem, *t;
	kvr_server *s = NULL;
	uint32_t npad;
	char uri[64];

	(void)state;
	assert_int_equal(kvr_store_open(e, "mem:8M", NULL, &mem), 0);
	npad = fill_timers(e, pad, 4096);
	fail_realloc_of = e->timers.v;
	assert_int_equal(kvr_serve(e, "tcp://127.0.0.1:0", mem, NULL, &s), -ENOMEM);
	fail_realloc_of = NULL;
	assert_null(s);

	srv_start(&real);
	snprintf(uri, sizeof(uri), "tcp://127.0.0.1:%d", real.port);
	assert_int_equal(kvr_connect(e, uri, NULL, &t), 0);
	kvr_timer_del(&e->timers, &pad[--npad]); /* room for the batch's deadline only */
	fail_realloc_of = e->timers.v;
	assert_int_equal(kvr_exists(t, &ob, 1, kvt_batch_cb, d), 0);
	fail_realloc_of = NULL;
	assert_int_equal(kvt_wait(e, d, 10000), 1);
	assert_int_equal(d->results[0], -ENOMEM);
	while (npad)
		kvr_timer_del(&e->timers, &pad[--npad]);
	/* with room again the node is retried and answers */
	for (int i = 0; i < 100 && (!d->calls || d->results[0] != -ENOENT); i++) {
		memset(d, 0, sizeof(*d));
		assert_int_equal(kvr_exists(t, &ob, 1, kvt_batch_cb, d), 0);
		assert_int_equal(kvt_wait(e, d, 10000), 1);
		if (d->results[0] != -ENOENT) /* down until its backoff ends */
			assert_true(kvr_engine_poll(e, 50) >= 0);
	}
	assert_int_equal(d->results[0], -ENOENT);
	assert_int_equal(kvr_target_close(t), 0);
	assert_int_equal(kvr_target_close(mem), 0);
	kvr_engine_destroy(e);
	assert_int_equal(srv_stop(&real), 0);
	free(d);
}

/* The client cannot compute its tag: it closes that connection with the
 * error (no tag it never made goes out) and the request fails with it. */
static void test_auth_tag_failure(void **state)
{
	struct srv s = {.mem = 16 * MiB, .secret = "k"};
	struct kvr_connect_opts co = {.size = sizeof(co), .secret = "k", .secret_len = 1};
	kvr_engine *e = kvt_engine();
	struct kvt_done *d = calloc(1, sizeof(*d));
	kvr_obj ob = {"tagless", 7, NULL, 0};
	kvr_target *t;
	char uri[64];

	(void)state;
	srv_start(&s);
	snprintf(uri, sizeof(uri), "tcp://127.0.0.1:%d", s.port);
	assert_int_equal(kvr_connect(e, uri, &co, &t), 0);
	fail_hmac = true;
	assert_int_equal(kvr_exists(t, &ob, 1, kvt_batch_cb, d), 0);
	assert_int_equal(kvt_wait(e, d, 10000), 1);
	fail_hmac = false;
	assert_int_equal(d->results[0], -EINVAL);
	assert_int_equal(kvr_target_close(t), 0);
	kvr_engine_destroy(e);
	assert_int_equal(srv_stop(&s), 0);
	free(d);
}

/* ------------------------------------------------------- kvring-server */

static const char *server_bin(void)
{
	static char buf[4096];
	const char *env = getenv("KVR_SERVER_BIN");
	ssize_t n;

	if (env && *env)
		return env;
	n = readlink("/proc/self/exe", buf, sizeof(buf) - 64);
	if (n <= 0)
		return NULL;
	buf[n] = 0;
	strcat(dirname(buf), "/../tools/kvring-server");
	return buf;
}

struct proc {
	pid_t pid;
	int port;
};

/* Start kvring-server with args; 0, or the exit status when it ended
 * without printing its listening line. */
static int proc_start(struct proc *p, const char *const *args)
{
	const char *bin = server_bin();
	const char *argv[32] = {"kvring-server"};
	char line[256];
	size_t n = 0, argc = 1;
	int out[2], st;

	for (; args[argc - 1]; argc++)
		argv[argc] = args[argc - 1];
	argv[argc] = NULL;
	assert_int_equal(pipe(out), 0);
	p->pid = fork();
	assert_true(p->pid >= 0);
	if (p->pid == 0) {
		int null = open("/dev/null", O_WRONLY);

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		dup2(out[1], 1);
		if (!getenv("KVR_TEST_LOG"))
			dup2(null, 2);
		execv(bin, (char *const *)argv);
		_exit(127);
	}
	close(out[1]);
	for (;;) {
		struct pollfd pf = {.fd = out[0], .events = POLLIN};
		ssize_t k;

		assert_true(poll(&pf, 1, 10000) == 1);
		k = read(out[0], line + n, 1);
		if (k <= 0)
			break;
		if (line[n] == '\n' || n == sizeof(line) - 2)
			break;
		n++;
	}
	line[n] = 0;
	close(out[0]);
	if (strncmp(line, "kvring-server: listening tcp://", 31) != 0) {
		assert_int_equal(waitpid(p->pid, &st, 0), p->pid);
		return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
	}
	p->port = atoi(strrchr(line, ':') + 1);
	assert_true(p->port > 0);
	return 0;
}

static int proc_stop(struct proc *p)
{
	int st;

	kill(p->pid, SIGTERM);
	assert_int_equal(waitpid(p->pid, &st, 0), p->pid);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static void test_program(void **state)
{
	const char *bin = server_bin();
	char auth[600], spill[600], empty[600];
	uint8_t *data = malloc(SP_LEN), *back = malloc(SP_LEN);
	struct kvr_hello h;
	struct proc p;
	FILE *f;
	char key[32];
	int fd, hits = 0;

	(void)state;
	if (!bin || access(bin, X_OK)) {
		print_message("kvring-server not built: skipped\n");
		skip();
	}
	snprintf(auth, sizeof(auth), "%s", kvt_path("serve_auth"));
	snprintf(spill, sizeof(spill), "%s", kvt_path("serve_prog_spill"));
	snprintf(empty, sizeof(empty), "%s", kvt_path("serve_empty"));
	f = fopen(auth, "w");
	fputs("s3cret\n", f);
	fclose(f);
	f = fopen(empty, "w");
	fclose(f);
	kvt_unlink(spill);

	/* usage errors */
	assert_int_equal(proc_start(&p, (const char *[]){"--memory", "lots", NULL}), 2);
	assert_int_equal(proc_start(&p, (const char *[]){"--threads", "0", NULL}), 2);
	assert_int_equal(proc_start(&p, (const char *[]){"--auth-file", empty, NULL}), 2);
	assert_int_equal(proc_start(&p, (const char *[]){"--auth-file", "/nonexistent/x", NULL}),
			 2);
	assert_int_equal(proc_start(&p, (const char *[]){"--file-size", "1G", NULL}), 2);
	assert_int_equal(proc_start(&p, (const char *[]){"--listen", "udp://x:1", NULL}), 2);
	assert_int_equal(proc_start(&p, (const char *[]){"--bogus", NULL}), 2);

	/* two threads, authentication */
	assert_int_equal(
	    proc_start(&p, (const char *[]){"--listen", "tcp://127.0.0.1:0", "--memory", "64M",
					    "--threads", "2", "--auth-file", auth, NULL}),
	    0);
	fd = cli_open(p.port);
	assert_int_equal(handshake(fd, 1, "s3cret", &h), 0);
	assert_int_equal(h.shard, 1);
	assert_int_equal(h.shards, 2);
	assert_int_equal(op_put(fd, "x", "program", 7), 0);
	assert_int_equal(op_get(fd, "x", back, 16), 7);
	close(fd);
	fd = cli_open(p.port);
	assert_int_equal(handshake(fd, 0, "wrong", NULL), -EACCES);
	close(fd);
	assert_int_equal(proc_stop(&p), 0);

	/* spilling to a file that outlives the process */
	assert_int_equal(
	    proc_start(&p, (const char *[]){"--listen", "tcp://127.0.0.1:0", "--memory", "4M",
					    "--file", spill, "--file-size", "64M", NULL}),
	    0);
	fd = cli_ready(p.port);
	for (int i = 0; i < SP_N; i++) {
		sp_key(key, sizeof(key), i);
		kvt_fill(data, sp_len(i), 4000 + (uint64_t)i);
		assert_int_equal(op_put(fd, key, data, sp_len(i)), 0);
	}
	for (int i = 0; i < SP_N; i++) {
		sp_key(key, sizeof(key), i);
		assert_int_equal(op_get(fd, key, back, SP_LEN), (int64_t)sp_len(i));
		assert_true(kvt_check(back, sp_len(i), 4000 + (uint64_t)i));
	}
	close(fd);
	assert_int_equal(proc_stop(&p), 0);
	/* restarted: the memory is empty, what was spilled is found on file */
	assert_int_equal(proc_start(&p, (const char *[]){"--listen", "tcp://127.0.0.1:0",
							 "--memory", "4M", "--file", spill, NULL}),
			 0);
	fd = cli_ready(p.port);
	for (int i = 0; i < SP_N; i++) {
		int64_t r;

		sp_key(key, sizeof(key), i);
		r = op_get(fd, key, back, SP_LEN);
		if (r == -ENOENT)
			continue;
		assert_int_equal(r, (int64_t)sp_len(i));
		assert_true(kvt_check(back, sp_len(i), 4000 + (uint64_t)i));
		hits++;
	}
	assert_true(hits >= SP_N / 2);
	close(fd);
	assert_int_equal(proc_stop(&p), 0);
	kvt_unlink(spill);
	kvt_unlink(auth);
	kvt_unlink(empty);
	free(data);
	free(back);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_basic_ops),
	    cmocka_unit_test(test_pipelined),
	    cmocka_unit_test(test_auth),
	    cmocka_unit_test(test_bad_frames),
	    cmocka_unit_test(test_disconnect_mid_payload),
	    cmocka_unit_test(test_idle_timeout),
	    cmocka_unit_test(test_max_conns),
	    cmocka_unit_test(test_backpressure),
	    cmocka_unit_test(test_put_reservation),
	    cmocka_unit_test(test_slowloris),
	    cmocka_unit_test(test_reclaim_idle),
	    cmocka_unit_test(test_spill),
	    cmocka_unit_test(test_spill_burst),
	    cmocka_unit_test(test_spill_random),
	    cmocka_unit_test(test_duplicate_id),
	    cmocka_unit_test(test_duplicate_id_answered),
	    cmocka_unit_test(test_group),
	    cmocka_unit_test(test_client),
	    cmocka_unit_test(test_end_to_end_crc),
	    cmocka_unit_test(test_api_errors),
	    cmocka_unit_test(test_close_runs_no_callbacks),
	    cmocka_unit_test(test_errmsg_fresh),
	    cmocka_unit_test(test_timer_failures),
	    cmocka_unit_test(test_auth_tag_failure),
	    cmocka_unit_test(test_program),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
