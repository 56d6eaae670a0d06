/* SPDX-License-Identifier: MIT */
/*
 * Integration: the TCP cluster target against real kvring-server processes
 * on loopback. Every byte that comes back is checked.
 *  - round trip of every op, 1 B to 16 MiB objects, 1-16 SGEs;
 *  - 3 servers, 2 replicas, one killed in the middle of a put/get stream:
 *    no wrong byte, and every object is still readable (one replica lives);
 *  - a stalled server (SIGSTOP): the batch ends with -ETIMEDOUT within its
 *    deadline, and the target works again once it resumes;
 *  - a server killed during 16 MiB transfers: every object completes with an
 *    error within the deadline, nothing hangs;
 *  - authentication: the right secret works, a wrong or missing one gets
 *    -EACCES for every object;
 *  - nobody listening: -ECONNREFUSED, fast;
 *  - clients sending garbage (HTTP, random bytes, a header with a huge
 *    length) are disconnected by the server while a well-behaved client
 *    keeps working, bytes intact.
 */
#include "fixtures.h"
#include "server_proc.h"

#include <arpa/inet.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define ARENA (96ull << 20)

struct ctx {
	kvr_engine *e;
	kvr_target *t;
	uint8_t *mem;
	kvr_mr *mr;
};

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void ctx_up(struct ctx *c, const char *uri, const struct kvr_connect_opts *o)
{
	memset(c, 0, sizeof(*c));
	c->e = kvt_engine();
	c->mem = kvt_alloc_mem(ARENA);
	assert_int_equal(kvr_mem_register(c->e, c->mem, ARENA, 0, &c->mr), 0);
	assert_int_equal(kvr_connect(c->e, uri, o, &c->t), 0);
}

static void ctx_down(struct ctx *c)
{
	assert_int_equal(kvr_target_close(c->t), 0);
	kvr_engine_destroy(c->e);
	kvt_free_mem(c->mem, ARENA);
}

/* n objects "key-<base+i>", each of len bytes in nsge pieces, laid out in
 * the arena from off; runs op and waits. Puts fill, gets zero first. */
static void batch_submit(struct ctx *c, enum kvr_op op, uint32_t base, uint32_t n, size_t len,
			 uint32_t nsge, uint32_t timeout_ms, struct kvt_done *d)
{
	static char keys[1024][32];
	static kvr_obj objs[1024];
	static kvr_sge sges[1024][16];
	uint8_t *p = c->mem;

	assert_true(n <= 1024 && nsge <= 16 && (uint64_t)n * len <= ARENA);
	for (uint32_t i = 0; i < n; i++) {
		size_t left = len;

		snprintf(keys[i], sizeof(keys[i]), "key-%u", base + i);
		for (uint32_t s = 0; s < nsge; s++) {
			size_t k = s == nsge - 1 ? left : len / nsge;

			sges[i][s] = (kvr_sge){p, k};
			p += k;
			left -= k;
		}
		objs[i] = (kvr_obj){keys[i], strlen(keys[i]), sges[i], nsge};
		if (op == KVR_OP_PUT)
			kvt_fill(sges[i][0].addr, len, base + i);
		else if (op == KVR_OP_GET)
			memset(sges[i][0].addr, 0, len);
	}
	memset(d, 0, sizeof(*d));
	assert_int_equal(kvr_submit(c->t, op, objs, n, timeout_ms, kvt_batch_cb, d), 0);
}

static void batch(struct ctx *c, enum kvr_op op, uint32_t base, uint32_t n, size_t len,
		  uint32_t nsge, uint32_t timeout_ms, struct kvt_done *d)
{
	batch_submit(c, op, base, n, len, nsge, timeout_ms, d);
	assert_int_equal(kvt_wait(c->e, d, (int)(timeout_ms ? timeout_ms : 30000) + 5000), 1);
	assert_int_equal(d->n, n);
}

/* Objects of a get batch made by batch(): is object i intact? */
static bool intact(struct ctx *c, uint32_t i, uint32_t base, size_t len)
{
	return kvt_check(c->mem + (size_t)i * len, len, base + i);
}

static void roundtrip(void **state)
{
	static const size_t sizes[] = {1, 100, 4096, 4097, 65536, 1 << 20, 16 << 20};
	static const uint32_t sges[] = {1, 3, 16};
	struct kvt_server s;
	struct kvt_done *d = calloc(1, sizeof(*d));
	struct ctx c;
	uint32_t base = 0;

	(void)state;
	assert_int_equal(kvt_server_start(&s, (const char *[]){"--memory", "256M", NULL}), 0);
	ctx_up(&c, s.uri, NULL);
	for (size_t z = 0; z < sizeof(sizes) / sizeof(sizes[0]); z++) {
		for (size_t g = 0; g < sizeof(sges) / sizeof(sges[0]); g++) {
			size_t len = sizes[z];
			uint32_t nsge = len < sges[g] ? 1 : sges[g];
			uint32_t n = len >= (1 << 20) ? 4 : 32;

			batch(&c, KVR_OP_PUT, base, n, len, nsge, 0, d);
			for (uint32_t i = 0; i < n; i++)
				assert_int_equal(d->results[i], (int64_t)len);
			batch(&c, KVR_OP_GET, base, n, len, nsge, 0, d);
			for (uint32_t i = 0; i < n; i++) {
				assert_int_equal(d->results[i], (int64_t)len);
				assert_true(intact(&c, i, base, len));
			}
			batch(&c, KVR_OP_EXISTS, base, n, len, nsge, 0, d);
			for (uint32_t i = 0; i < n; i++)
				assert_int_equal(d->results[i], (int64_t)len);
			base += n;
		}
	}
	/* a get into a smaller SGL: -EMSGSIZE, a miss: -ENOENT, removes */
	batch(&c, KVR_OP_GET, base - 4, 4, 1 << 20, 1, 0, d);
	for (uint32_t i = 0; i < 4; i++)
		assert_int_equal(d->results[i], -EMSGSIZE);
	batch(&c, KVR_OP_GET, 1u << 30, 8, 4096, 1, 0, d);
	for (uint32_t i = 0; i < 8; i++)
		assert_int_equal(d->results[i], -ENOENT);
	batch(&c, KVR_OP_REMOVE, 0, 32, 1, 1, 0, d);
	for (uint32_t i = 0; i < 32; i++)
		assert_int_equal(d->results[i], 0);
	batch(&c, KVR_OP_EXISTS, 0, 32, 1, 1, 0, d);
	for (uint32_t i = 0; i < 32; i++)
		assert_int_equal(d->results[i], -ENOENT);
	ctx_down(&c);
	assert_int_equal(kvt_server_stop(&s), 0);
	free(d);
}

/* A get into exactly KVR_MAX_SGE SGEs, payload received straight into them
 * with the crc trailer after it: the largest iovec array a recv takes. Both
 * a large first slice (the whole SGL still due in one recv) and equal
 * slices; every byte checked. */
static void max_sge_get(void **state)
{
	static kvr_sge sgl[KVR_MAX_SGE];
	static const size_t first[] = {1 << 20, 64 << 10, 70000};
	const size_t len = 16 << 20;
	struct kvt_server s;
	struct kvt_done *d = calloc(1, sizeof(*d));
	struct ctx c;

	(void)state;
	assert_int_equal(kvt_server_start(&s, (const char *[]){"--memory", "256M", NULL}), 0);
	ctx_up(&c, s.uri, NULL);
	for (size_t f = 0; f < sizeof(first) / sizeof(first[0]); f++) {
		char key[32];
		kvr_obj o = {key, 0, sgl, KVR_MAX_SGE};
		size_t rest = (len - first[f]) / (KVR_MAX_SGE - 1), off = first[f];

		snprintf(key, sizeof(key), "max-sge-%zu", f);
		o.key_len = strlen(key);
		sgl[0] = (kvr_sge){c.mem, first[f]};
		for (uint32_t i = 1; i < KVR_MAX_SGE; i++) {
			size_t k = i == KVR_MAX_SGE - 1 ? len - off : rest;

			sgl[i] = (kvr_sge){c.mem + off, k};
			off += k;
		}
		kvt_fill(c.mem, len, 900 + f);
		memset(d, 0, sizeof(*d));
		assert_int_equal(kvr_put(c.t, &o, 1, kvt_batch_cb, d), 0);
		assert_int_equal(kvt_wait(c.e, d, 35000), 1);
		assert_int_equal(d->results[0], (int64_t)len);
		memset(c.mem, 0, len);
		memset(d, 0, sizeof(*d));
		assert_int_equal(kvr_get(c.t, &o, 1, kvt_batch_cb, d), 0);
		assert_int_equal(kvt_wait(c.e, d, 35000), 1);
		assert_int_equal(d->results[0], (int64_t)len);
		assert_true(kvt_check(c.mem, len, 900 + f));
	}
	ctx_down(&c);
	assert_int_equal(kvt_server_stop(&s), 0);
	free(d);
}

static void replicas_survive_a_kill(void **state)
{
	struct kvt_server s[3];
	struct kvt_done *d = calloc(1, sizeof(*d));
	struct kvr_connect_opts o = {.size = sizeof(o), .replicas = 2, .timeout_ms = 10000};
	char uri[256];
	struct ctx c;
	const size_t len = 64 << 10;
	const uint32_t n = 512, rounds = 8;
	uint32_t lost = 0;

	(void)state;
	for (int i = 0; i < 3; i++)
		assert_int_equal(
		    kvt_server_start(&s[i], (const char *[]){"--memory", "512M", NULL}), 0);
	kvt_cluster_uri(uri, sizeof(uri), s, 3);
	ctx_up(&c, uri, &o);
	for (uint32_t r = 0; r < rounds; r++) {
		batch_submit(&c, KVR_OP_PUT, r * n, n, len, 4, 0, d);
		if (r == rounds / 2) {
			/* kill one while this batch is on the wire */
			assert_true(kvr_engine_poll(c.e, 0) >= 0);
			kvt_server_kill(&s[1]);
		}
		assert_int_equal(kvt_wait(c.e, d, 30000), 1);
		for (uint32_t i = 0; i < n; i++)
			assert_int_equal(d->results[i], (int64_t)len);
	}
	/* Everything put is still readable: one replica of each survived. */
	for (uint32_t r = 0; r < rounds; r++) {
		batch(&c, KVR_OP_GET, r * n, n, len, 4, 0, d);
		for (uint32_t i = 0; i < n; i++) {
			if (d->results[i] < 0) {
				lost++;
				continue;
			}
			assert_int_equal(d->results[i], (int64_t)len);
			assert_true(intact(&c, i, r * n, len)); /* never a wrong byte */
		}
	}
	printf("replicas: %u objects of %u unreadable after one of 3 servers died\n", lost,
	       rounds * n);
	assert_int_equal(lost, 0);
	ctx_down(&c);
	assert_int_equal(kvt_server_stop(&s[0]), 0);
	assert_int_equal(kvt_server_stop(&s[2]), 0);
	free(d);
}

static void kill_mid_batch(void **state)
{
	struct kvt_server s[2];
	struct kvt_done *d = calloc(1, sizeof(*d));
	struct kvr_connect_opts o = {.size = sizeof(o), .replicas = 2};
	char uri[256];
	struct ctx c;
	const size_t len = 16 << 20;
	int64_t t0;

	(void)state;
	for (int i = 0; i < 2; i++)
		assert_int_equal(
		    kvt_server_start(&s[i], (const char *[]){"--memory", "512M", NULL}), 0);
	kvt_cluster_uri(uri, sizeof(uri), s, 2);
	ctx_up(&c, uri, &o);
	batch(&c, KVR_OP_PUT, 0, 4, len, 2, 0, d);
	for (uint32_t i = 0; i < 4; i++)
		assert_int_equal(d->results[i], (int64_t)len);
	/* Kill both while 16 MiB gets stream back: every object ends, in time. */
	static char keys[4][16];
	static kvr_obj objs[4];
	static kvr_sge sg[4];
	for (uint32_t i = 0; i < 4; i++) {
		snprintf(keys[i], sizeof(keys[i]), "key-%u", i);
		sg[i] = (kvr_sge){c.mem + (size_t)i * len, len};
		objs[i] = (kvr_obj){keys[i], strlen(keys[i]), &sg[i], 1};
	}
	memset(d, 0, sizeof(*d));
	t0 = now_ms();
	assert_int_equal(kvr_submit(c.t, KVR_OP_GET, objs, 4, 3000, kvt_batch_cb, d), 0);
	assert_true(kvr_engine_poll(c.e, 0) >= 0); /* requests on the wire */
	kvt_server_kill(&s[0]);
	kvt_server_kill(&s[1]);
	assert_int_equal(kvt_wait(c.e, d, 8000), 1);
	assert_true(now_ms() - t0 < 4000);
	/* each object either came back whole before the kill or failed with
	 * a connection error: nothing else is a right answer */
	for (uint32_t i = 0; i < 4; i++) {
		int64_t r = d->results[i];

		if (r != (int64_t)len && r != -ECONNRESET && r != -ECONNREFUSED && r != -EHOSTDOWN)
			fail_msg("object %u: %" PRId64 " (%s)", i, r, kvr_strerror((int)r));
		if (r == (int64_t)len)
			assert_true(kvt_check(c.mem + (size_t)i * len, len, i));
	}
	/* all nodes down now: fast errors, no hang */
	batch(&c, KVR_OP_GET, 0, 4, 4096, 1, 3000, d);
	for (uint32_t i = 0; i < 4; i++)
		assert_true(d->results[i] < 0);
	ctx_down(&c);
	free(d);
}

static void stalled_server_times_out(void **state)
{
	struct kvt_server s;
	struct kvt_done *d = calloc(1, sizeof(*d));
	struct ctx c;
	int64_t t0, took;

	(void)state;
	assert_int_equal(kvt_server_start(&s, (const char *[]){"--memory", "256M", NULL}), 0);
	ctx_up(&c, s.uri, NULL);
	batch(&c, KVR_OP_PUT, 0, 16, 1 << 20, 2, 0, d);
	kvt_server_pause(&s);
	t0 = now_ms();
	batch(&c, KVR_OP_GET, 0, 16, 1 << 20, 2, 700, d);
	took = now_ms() - t0;
	printf("stalled server: batch ended after %" PRId64 " ms (deadline 700)\n", took);
	assert_true(took < 700 + 500);
	for (uint32_t i = 0; i < 16; i++)
		assert_int_equal(d->results[i], -ETIMEDOUT);
	kvt_server_resume(&s);
	/* Once it answers again (after the node's backoff), all is readable. */
	t0 = now_ms();
	for (;;) {
		batch(&c, KVR_OP_GET, 0, 16, 1 << 20, 2, 2000, d);
		if (d->results[0] >= 0 || now_ms() - t0 > 15000)
			break;
		assert_true(kvr_engine_poll(c.e, 20) >= 0); /* the node's backoff */
	}
	printf("stalled server: readable again %" PRId64 " ms after it resumed\n", now_ms() - t0);
	for (uint32_t i = 0; i < 16; i++) {
		assert_int_equal(d->results[i], 1 << 20);
		assert_true(intact(&c, i, 0, 1 << 20));
	}
	ctx_down(&c);
	assert_int_equal(kvt_server_stop(&s), 0);
	free(d);
}

static void auth(void **state)
{
	const char *secret_path = kvt_path("secret");
	FILE *f = fopen(secret_path, "w");
	struct kvt_server s;
	struct kvt_done *d = calloc(1, sizeof(*d));
	struct kvr_connect_opts o = {.size = sizeof(o)};
	struct ctx c;
	char path[4096];

	(void)state;
	snprintf(path, sizeof(path), "%s", secret_path);
	assert_non_null(f);
	fputs("correct horse battery staple\n", f);
	fclose(f);
	assert_int_equal(
	    kvt_server_start(&s, (const char *[]){"--memory", "64M", "--auth-file", path, NULL}),
	    0);

	o.secret = "correct horse battery staple";
	o.secret_len = strlen(o.secret);
	ctx_up(&c, s.uri, &o);
	batch(&c, KVR_OP_PUT, 0, 8, 1000, 1, 0, d);
	for (uint32_t i = 0; i < 8; i++)
		assert_int_equal(d->results[i], 1000);
	ctx_down(&c);

	o.secret = "wrong";
	o.secret_len = 5;
	ctx_up(&c, s.uri, &o);
	batch(&c, KVR_OP_GET, 0, 8, 1000, 1, 0, d);
	for (uint32_t i = 0; i < 8; i++)
		assert_int_equal(d->results[i], -EACCES);
	ctx_down(&c);

	ctx_up(&c, s.uri, NULL);
	batch(&c, KVR_OP_GET, 0, 8, 1000, 1, 0, d);
	for (uint32_t i = 0; i < 8; i++)
		assert_int_equal(d->results[i], -EACCES);
	ctx_down(&c);
	assert_int_equal(kvt_server_stop(&s), 0);
	kvt_unlink(path);
	free(d);
}

static void nobody_listening(void **state)
{
	struct kvt_server s;
	struct kvt_done *d = calloc(1, sizeof(*d));
	struct ctx c;
	int64_t t0;

	(void)state;
	/* a port that was just in use and is now closed */
	assert_int_equal(kvt_server_start(&s, (const char *[]){"--memory", "16M", NULL}), 0);
	assert_int_equal(kvt_server_stop(&s), 0);
	ctx_up(&c, s.uri, NULL);
	t0 = now_ms();
	batch(&c, KVR_OP_PUT, 0, 8, 100, 1, 0, d);
	assert_true(now_ms() - t0 < 2000);
	for (uint32_t i = 0; i < 8; i++)
		assert_int_equal(d->results[i], -ECONNREFUSED);
	/* the node is now down and backing off */
	batch(&c, KVR_OP_PUT, 0, 8, 100, 1, 0, d);
	for (uint32_t i = 0; i < 8; i++)
		assert_true(d->results[i] == -EHOSTDOWN || d->results[i] == -ECONNREFUSED);
	ctx_down(&c);
	free(d);
}

/* A raw socket to the server, with a receive timeout. */
static int raw_connect(int port)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	struct timeval tv = {.tv_sec = 10};
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	assert_true(fd >= 0);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)), 0);
	return fd;
}

/* Whether the server closes fd (EOF or reset) within the receive timeout,
 * reading and dropping whatever it answers first. */
static bool closed_by_peer(int fd)
{
	uint8_t buf[256];

	for (;;) {
		ssize_t n = recv(fd, buf, sizeof(buf), 0);

		if (n == 0 || (n < 0 && errno == ECONNRESET))
			return true;
		if (n < 0)
			return false; /* timeout */
	}
}

static void garbage_clients(void **state)
{
	struct kvt_server s;
	struct kvt_done *d = calloc(1, sizeof(*d));
	struct ctx c;
	uint8_t junk[4096];
	uint64_t seed = 42;
	const size_t len = 256 << 10;

	(void)state;
	assert_int_equal(kvt_server_start(&s, (const char *[]){"--memory", "256M", NULL}), 0);
	ctx_up(&c, s.uri, NULL);
	batch(&c, KVR_OP_PUT, 0, 32, len, 4, 0, d);
	for (uint32_t i = 0; i < 32; i++)
		assert_int_equal(d->results[i], (int64_t)len);
	for (int round = 0; round < 3; round++) {
		int fd[3];
		/* magic, version 1, PUT, no flags, id 7, status 0, then a key
		 * length of 65535 and a payload length of 2^64-1 */
		uint8_t hdr[32] = {'K', 'V', 'R', 'P', 1, 2, 0, 0, 7};

		/* an HTTP request, random bytes, and a header-shaped frame whose
		 * lengths are absurd: each connection is closed */
		fd[0] = raw_connect(s.port);
		assert_int_equal(write(fd[0], "GET / HTTP/1.1\r\nHost: x\r\n\r\n", 27), 27);
		fd[1] = raw_connect(s.port);
		for (size_t i = 0; i < sizeof(junk); i++)
			junk[i] = (uint8_t)kvt_rand(&seed);
		assert_int_equal(write(fd[1], junk, sizeof(junk)), (ssize_t)sizeof(junk));
		fd[2] = raw_connect(s.port);
		memset(hdr + 20, 0xff, 2);
		memset(hdr + 24, 0xff, 8);
		assert_int_equal(write(fd[2], hdr, sizeof(hdr)), (ssize_t)sizeof(hdr));
		/* meanwhile the real client's gets go on, every byte checked */
		batch(&c, KVR_OP_GET, 0, 32, len, 4, 0, d);
		for (uint32_t i = 0; i < 32; i++) {
			assert_int_equal(d->results[i], (int64_t)len);
			assert_true(intact(&c, i, 0, len));
		}
		for (int k = 0; k < 3; k++) {
			assert_true(closed_by_peer(fd[k]));
			close(fd[k]);
		}
	}
	batch(&c, KVR_OP_EXISTS, 0, 32, len, 4, 0, d);
	for (uint32_t i = 0; i < 32; i++)
		assert_int_equal(d->results[i], (int64_t)len);
	ctx_down(&c);
	assert_int_equal(kvt_server_stop(&s), 0); /* it exits cleanly, too */
	free(d);
}

static void bad_uris(void **state)
{
	kvr_engine *e = kvt_engine();
	kvr_target *t = NULL;
	struct kvr_connect_opts o = {.size = sizeof(o), .replicas = 3};
	static const char *bad[] = {
	    "tcp://",
	    "tcp://host",
	    "tcp://127.0.0.1:",
	    "tcp://127.0.0.1:0",
	    "tcp://1.2.3.4:99999",
	    "tcp://127.0.0.1:7x",
	    "tcp://127.0.0.1:1,,127.0.0.1:2",
	    "tcp://127.0.0.1:1,127.0.0.1:1",
	    "udp://127.0.0.1:1",
	    "tcp://[::1:5",
	};

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(kvr_connect(e, bad[i], NULL, &t), -EINVAL);
	assert_int_equal(kvr_connect(e, "tcp://no-such-host.invalid:1", NULL, &t), -EHOSTUNREACH);
	/* more replicas than nodes */
	assert_int_equal(kvr_connect(e, "tcp://127.0.0.1:1,127.0.0.1:2", &o, &t), -EINVAL);
	o.replicas = 1;
	o.secret_len = 3; /* a length without a secret */
	assert_int_equal(kvr_connect(e, "tcp://127.0.0.1:1", &o, &t), -EINVAL);
	assert_null(t);
	kvr_engine_destroy(e);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(bad_uris),		cmocka_unit_test(roundtrip),
	    cmocka_unit_test(max_sge_get),	cmocka_unit_test(auth),
	    cmocka_unit_test(nobody_listening), cmocka_unit_test(stalled_server_times_out),
	    cmocka_unit_test(kill_mid_batch),	cmocka_unit_test(replicas_survive_a_kill),
	    cmocka_unit_test(garbage_clients),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
