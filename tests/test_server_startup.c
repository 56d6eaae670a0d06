/* SPDX-License-Identifier: MIT */
/*
 * Scenario: kvring-server listens at once and faults its pool in while it
 * serves (tools/server.c, KVR_STORE_BACKGROUND_FAULT).
 *  - the first connection finds the pool not ready yet (STATS
 *    pool_bytes_ready < pool_bytes), and puts and gets work all the same,
 *    across the first 1 GiB piece into the second, before it is pinned;
 *  - the pool then becomes ready (ready == total), and every byte stored
 *    before and after is exact;
 *  - SIGTERM while the faulting is under way stops the server cleanly
 *    (exit 0; under ASan also no leak, the thread joined);
 *  - --prefault sync is ready at the first connection;
 *  - an rdma:// server listens at once too (within 1 s, where its pool
 *    takes 8 s to be faulted in): an RDMA client connected before the pool
 *    is ready puts and gets objects in its first and its second 1 GiB
 *    piece and across the boundary between them (their moves wait for the
 *    pieces' RDMA registrations), every byte exact, before and after ready.
 *    It runs where KVR_RDMA_DEV / KVR_RDMA_ADDR (and the _DEV2 / _ADDR2 of
 *    the server) name devices, as in the tests/rdma-vm VM, which runs this
 *    test alone (the others skip there).
 * Not a timing test, but for the time to listen: --prefault-rate makes "not
 * ready yet" certain (at the rates used, the pool cannot be ready within
 * 8 s of the start, far longer than the checks before it take), and the
 * wait for "ready" is on STATS.
 */
#include "fixtures.h"
#include "server_proc.h"
#include "tools/node_stats.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define OBJ   (4u << 20)
#define BATCH 16u
#define ARENA ((size_t)OBJ * BATCH)

struct pool {
	uint64_t bytes, ready;
};

/* STATS of the server's (one) shard: its pool's size and progress (over
 * TCP, which an rdma:// listener serves too). */
static struct pool pool_of(const struct kvt_server *s)
{
	char *buf = NULL, *p;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	struct pool r;

	assert_non_null(f);
	assert_int_equal(node_stats(strstr(s->uri, "://") + 3, NULL, 0, 5000, f), 0);
	fclose(f);
	p = strstr(buf, "\"pool_bytes\":");
	assert_non_null(p);
	r.bytes = strtoull(p + strlen("\"pool_bytes\":"), NULL, 10);
	p = strstr(buf, "\"pool_bytes_ready\":");
	assert_non_null(p);
	r.ready = strtoull(p + strlen("\"pool_bytes_ready\":"), NULL, 10);
	free(buf);
	return r;
}

static uint64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Poll STATS until the pool is ready (at most timeout_ms). */
static struct pool wait_ready(const struct kvt_server *s, uint64_t timeout_ms)
{
	uint64_t end = mono_ms() + timeout_ms;
	struct pool p = pool_of(s);

	while (p.ready < p.bytes && mono_ms() < end) {
		struct timespec ts = {0, 50000000};

		nanosleep(&ts, NULL); /* between two looks at the condition */
		p = pool_of(s);
	}
	return p;
}

/* The server's log (stderr), whole; free() it. */
static char *read_log(const struct kvt_server *s)
{
	FILE *f = fopen(s->log, "r");
	char *log;
	long n;

	assert_non_null(f);
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	rewind(f);
	log = calloc(1, (size_t)n + 1);
	assert_non_null(log);
	assert_int_equal(fread(log, 1, (size_t)n, f), (size_t)n);
	fclose(f);
	return log;
}

/* The host-side tests skip in the rdma-vm VM, whose memory and time go to
 * the rdma:// one. */
static void host_only(void)
{
	if (getenv("KVR_RDMA_VM"))
		skip();
}

struct client {
	kvr_engine *e;
	kvr_target *t;
	uint8_t *mem;
	kvr_mr *mr;
};

static void client_up(struct client *c, const char *uri)
{
	c->e = kvt_engine();
	c->mem = kvt_alloc_mem(ARENA);
	assert_int_equal(kvr_mem_register(c->e, c->mem, ARENA, 0, &c->mr), 0);
	assert_int_equal(kvr_connect(c->e, uri, NULL, &c->t), 0);
}

static void client_down(struct client *c)
{
	assert_int_equal(kvr_target_close(c->t), 0);
	kvr_engine_destroy(c->e);
	kvt_free_mem(c->mem, ARENA);
}

/* Batch b: BATCH objects "o<b>.<i>" of OBJ bytes, kvt_fill(seed b*BATCH+i).
 * A put fills the arena first; a get checks every byte of every object. */
static void batch(struct client *c, enum kvr_op op, uint32_t b)
{
	static char keys[BATCH][32];
	kvr_sge sge[BATCH];
	kvr_obj o[BATCH];
	struct kvt_done d = {0};

	for (uint32_t i = 0; i < BATCH; i++) {
		snprintf(keys[i], sizeof(keys[i]), "o%u.%u", b, i);
		sge[i] = (kvr_sge){c->mem + (size_t)i * OBJ, OBJ};
		o[i] = (kvr_obj){keys[i], strlen(keys[i]), &sge[i], 1};
		if (op == KVR_OP_PUT)
			kvt_fill(sge[i].addr, OBJ, (uint64_t)b * BATCH + i);
		else
			memset(sge[i].addr, 0, OBJ);
	}
	assert_int_equal(kvr_submit(c->t, op, o, BATCH, 30000, kvt_batch_cb, &d), 0);
	assert_int_equal(kvt_wait(c->e, &d, 40000), 1);
	for (uint32_t i = 0; i < BATCH; i++) {
		if (d.results[i] != OBJ)
			fail_msg("%s %s: %lld", op == KVR_OP_PUT ? "put" : "get", keys[i],
				 (long long)d.results[i]);
		if (op == KVR_OP_GET && !kvt_check(sge[i].addr, OBJ, (uint64_t)b * BATCH + i))
			fail_msg("get %s: wrong bytes", keys[i]);
	}
}

/* 1280 MiB at 128 MiB/s: ready 10 s after the start at the earliest. The
 * first 17 batches (1088 MiB, placed from the pool's start) reach into its
 * second 1 GiB piece. */
static void listens_before_ready(void **state)
{
	struct kvt_server s;
	struct client c;
	struct pool p;
	const uint32_t early = 17, late = 2;

	(void)state;
	host_only();
	assert_int_equal(kvt_server_start(&s, (const char *[]){"--memory", "1280M",
							       "--prefault-rate", "128M", NULL}),
			 0);
	p = pool_of(&s);
	assert_int_equal(p.bytes, 1280ull << 20);
	assert_true(p.ready < p.bytes);

	client_up(&c, s.uri);
	for (uint32_t b = 0; b < early; b++)
		batch(&c, KVR_OP_PUT, b);
	for (uint32_t b = 0; b < early; b++)
		batch(&c, KVR_OP_GET, b);
	p = pool_of(&s);
	print_message("pool ready after the early puts: %llu of %llu bytes\n",
		      (unsigned long long)p.ready, (unsigned long long)p.bytes);
	assert_true(p.ready < p.bytes);

	p = wait_ready(&s, 120000);
	assert_int_equal(p.ready, p.bytes);
	for (uint32_t b = 0; b < early; b++)
		batch(&c, KVR_OP_GET, b);
	for (uint32_t b = early; b < early + late; b++)
		batch(&c, KVR_OP_PUT, b);
	for (uint32_t b = 0; b < early + late; b++)
		batch(&c, KVR_OP_GET, b);
	client_down(&c);
	assert_int_equal(kvt_server_stop(&s), 0);
}

/* 1 GiB at 32 MiB/s: 32 s to go when SIGTERM comes. */
static void sigterm_while_faulting(void **state)
{
	struct kvt_server s;
	struct client c;
	char *log;

	(void)state;
	host_only();
	assert_int_equal(kvt_server_start(&s, (const char *[]){"--memory", "1G", "--prefault-rate",
							       "32M", NULL}),
			 0);
	client_up(&c, s.uri);
	batch(&c, KVR_OP_PUT, 0);
	batch(&c, KVR_OP_GET, 0);
	client_down(&c);
	assert_true(pool_of(&s).ready < (1ull << 30));
	assert_int_equal(kvt_server_stop(&s), 0);
	log = read_log(&s);
	assert_non_null(strstr(log, "faulting it in the background"));
	assert_non_null(strstr(log, "server closed"));
	free(log);
}

static void prefault_sync(void **state)
{
	struct kvt_server s;
	struct pool p;

	(void)state;
	host_only();
	assert_int_equal(
	    kvt_server_start(&s, (const char *[]){"--memory", "64M", "--prefault", "sync", NULL}),
	    0);
	p = pool_of(&s);
	assert_int_equal(p.bytes, 64u << 20);
	assert_int_equal(p.ready, p.bytes);
	assert_int_equal(kvt_server_stop(&s), 0);
}

/* ------------------------------------------------------------- rdma:// */

#define RDMA_ARENA (128ull << 20)

struct rclient {
	kvr_engine *e;
	kvr_target *rdma, *tcp; /* one connection each: requests in order */
	uint8_t *mem;
	kvr_mr *mr;
};

/* A run of n objects "<prefix><i>" of len bytes each at arena offset off,
 * seeds seed+i, submitted to t (a put fills them, a get clears them). */
struct run {
	const char *prefix;
	uint32_t n;
	size_t len, off;
	uint64_t seed;
	char keys[8][16];
	kvr_sge sge[8];
	kvr_obj o[8];
	struct kvt_done d;
};

static void run_submit(struct rclient *c, kvr_target *t, enum kvr_op op, struct run *r)
{
	assert_true(r->n <= 8 && r->off + r->n * r->len <= RDMA_ARENA);
	for (uint32_t i = 0; i < r->n; i++) {
		uint8_t *p = c->mem + r->off + i * r->len;

		snprintf(r->keys[i], sizeof(r->keys[i]), "%s%u", r->prefix, i);
		r->sge[i] = (kvr_sge){p, r->len};
		r->o[i] = (kvr_obj){r->keys[i], strlen(r->keys[i]), &r->sge[i], 1};
		if (op == KVR_OP_PUT)
			kvt_fill(p, r->len, r->seed + i);
		else
			memset(p, 0, r->len);
	}
	memset(&r->d, 0, sizeof(r->d));
	assert_int_equal(kvr_submit(t, op, r->o, r->n, 60000, kvt_batch_cb, &r->d), 0);
}

/* Wait for the run's answers: each object whole, a get's bytes exact. */
static void run_check(struct rclient *c, enum kvr_op op, struct run *r)
{
	assert_int_equal(kvt_wait(c->e, &r->d, 70000), 1);
	for (uint32_t i = 0; i < r->n; i++) {
		if (r->d.results[i] != (int64_t)r->len)
			fail_msg("%s %s: %lld", op == KVR_OP_PUT ? "put" : "get", r->keys[i],
				 (long long)r->d.results[i]);
		if (op == KVR_OP_GET &&
		    !kvt_check(c->mem + r->off + i * r->len, r->len, r->seed + i))
			fail_msg("get %s: wrong bytes", r->keys[i]);
	}
}

#define FILL_OFF  (96u << 20)
#define FILL_LEN  (32u << 20)
#define FILL_SEED 1000u

/* Filler objects "fill<first..first+n)", all of the one buffer at
 * FILL_OFF: puts over TCP, gets over RDMA. */
static void filler(struct rclient *c, enum kvr_op op, uint32_t first, uint32_t n)
{
	static char keys[8][16];
	kvr_sge sge = {c->mem + FILL_OFF, FILL_LEN};
	kvr_obj o[8];
	struct kvt_done d = {0};

	assert_true(n <= 8);
	for (uint32_t i = 0; i < n; i++) {
		snprintf(keys[i], sizeof(keys[i]), "fill%u", first + i);
		o[i] = (kvr_obj){keys[i], strlen(keys[i]), &sge, 1};
	}
	assert_int_equal(
	    kvr_submit(op == KVR_OP_PUT ? c->tcp : c->rdma, op, o, n, 60000, kvt_batch_cb, &d), 0);
	assert_int_equal(kvt_wait(c->e, &d, 70000), 1);
	for (uint32_t i = 0; i < n; i++)
		if (d.results[i] != FILL_LEN)
			fail_msg("%s %s: %lld", op == KVR_OP_PUT ? "put" : "get", keys[i],
				 (long long)d.results[i]);
}

static void rclient_up(struct rclient *c, const struct kvt_server *s, const char *dev)
{
	struct kvr_connect_opts o = {.size = sizeof(o), .conns = 1};
	char uri[256];

	c->e = kvt_engine();
	c->mem = kvt_alloc_mem(RDMA_ARENA);
	assert_int_equal(kvr_mem_register(c->e, c->mem, RDMA_ARENA, 0, &c->mr), 0);
	snprintf(uri, sizeof(uri), "%s?dev=%s", s->uri, dev);
	if (kvr_connect(c->e, uri, &o, &c->rdma))
		fail_msg("kvr_connect %s: %s", uri, kvr_engine_errmsg(c->e));
	snprintf(uri, sizeof(uri), "tcp://%s", s->uri + strlen("rdma://"));
	assert_int_equal(kvr_connect(c->e, uri, &o, &c->tcp), 0);
}

static void rclient_down(struct rclient *c)
{
	assert_int_equal(kvr_target_close(c->rdma), 0);
	assert_int_equal(kvr_target_close(c->tcp), 0);
	kvr_engine_destroy(c->e);
	kvt_free_mem(c->mem, RDMA_ARENA);
}

/*
 * 1280 MiB at 32 MiB/s: the first 1 GiB piece is faulted in (and so
 * registered) 32 s after the start, the second at 40 s (filling the pool
 * over TCP takes 8 to 16 s in the VM). The pool is filled
 * in order from its start: 992 MiB over TCP (served at once), then over
 * RDMA, each batch behind the last on one queue pair, a (4 x 4 MiB, the
 * end of the first piece), f (8 MiB), b (16 MiB from 1016 MiB: across the
 * boundary), c (4 x 4 MiB, in the second piece), all sent before the pool
 * is ready. After it is, d (4 x 4 MiB) and every get again.
 */
static void rdma_listens_before_ready(void **state)
{
	const char *dev = getenv("KVR_RDMA_DEV"), *addr2 = getenv("KVR_RDMA_ADDR2");
	const char *dev2 = getenv("KVR_RDMA_DEV2");
	struct run *rs, *a, *f, *b, *c, *d;
	struct kvt_server s;
	struct rclient cl;
	char listen[160];
	uint64_t t0, t_listen;
	struct pool p;
	char *log;

	(void)state;
	if (!getenv("KVR_RDMA_DEV") || !getenv("KVR_RDMA_ADDR"))
		skip();
	rs = calloc(5, sizeof(*rs));
	assert_non_null(rs);
	a = &rs[0];
	f = &rs[1];
	b = &rs[2];
	c = &rs[3];
	d = &rs[4];
	snprintf(listen, sizeof(listen), "rdma://%s:0?dev=%s",
		 addr2 ? addr2 : getenv("KVR_RDMA_ADDR"), dev2 ? dev2 : dev);
	t0 = mono_ms();
	assert_int_equal(
	    kvt_server_start_at(&s, listen, NULL,
				(const char *[]){"--memory", "1280M", "--prefault-rate", "32M",
						 "--log-level", "debug", NULL}),
	    0);
	t_listen = mono_ms() - t0;
	p = pool_of(&s);
	print_message("rdma:// listening after %llu ms; pool %llu of %llu bytes ready\n",
		      (unsigned long long)t_listen, (unsigned long long)p.ready,
		      (unsigned long long)p.bytes);
	assert_int_equal(p.bytes, 1280ull << 20);
	assert_true(t_listen < 1000);

	rclient_up(&cl, &s, dev);
	/* 31 x 32 MiB over TCP, all of the same bytes: [0, 992 MiB) */
	kvt_fill(cl.mem + FILL_OFF, FILL_LEN, FILL_SEED);
	for (uint32_t k = 0; k < 31; k += 8)
		filler(&cl, KVR_OP_PUT, k, k + 8 < 31 ? 8 : 31 - k);
	*a = (struct run){.prefix = "a", .n = 4, .len = 4u << 20, .off = 0, .seed = 1};
	*f = (struct run){.prefix = "f", .n = 1, .len = 8u << 20, .off = 16u << 20, .seed = 10};
	*b = (struct run){.prefix = "b", .n = 1, .len = 16u << 20, .off = 24u << 20, .seed = 20};
	*c = (struct run){.prefix = "c", .n = 4, .len = 4u << 20, .off = 40u << 20, .seed = 30};
	*d = (struct run){.prefix = "d", .n = 4, .len = 4u << 20, .off = 56u << 20, .seed = 40};
	p = pool_of(&s);
	print_message("before the rdma puts (%.1f s): %llu of %llu bytes ready\n",
		      (double)(mono_ms() - t0) / 1e3, (unsigned long long)p.ready,
		      (unsigned long long)p.bytes);
	assert_true(p.ready < p.bytes);
	for (int i = 0; i < 4; i++)
		run_submit(&cl, cl.rdma, KVR_OP_PUT, &rs[i]);
	for (int i = 0; i < 4; i++)
		run_check(&cl, KVR_OP_PUT, &rs[i]);
	print_message("rdma puts done (%.1f s)\n", (double)(mono_ms() - t0) / 1e3);
	for (int i = 0; i < 4; i++)
		run_submit(&cl, cl.rdma, KVR_OP_GET, &rs[i]);
	for (int i = 0; i < 4; i++)
		run_check(&cl, KVR_OP_GET, &rs[i]);

	p = wait_ready(&s, 120000);
	assert_int_equal(p.ready, p.bytes);
	run_submit(&cl, cl.rdma, KVR_OP_PUT, d);
	run_check(&cl, KVR_OP_PUT, d);
	for (int i = 0; i < 5; i++)
		run_submit(&cl, cl.rdma, KVR_OP_GET, &rs[i]);
	for (int i = 0; i < 5; i++)
		run_check(&cl, KVR_OP_GET, &rs[i]);
	/* and the last TCP filler, from the first piece, over RDMA */
	memset(cl.mem + FILL_OFF, 0, FILL_LEN);
	filler(&cl, KVR_OP_GET, 30, 1);
	assert_true(kvt_check(cl.mem + FILL_OFF, FILL_LEN, FILL_SEED));
	rclient_down(&cl);
	assert_int_equal(kvt_server_stop(&s), 0);
	log = read_log(&s);
	/* registered with the device piece by piece, not whole up front */
	assert_non_null(strstr(log, "GiB 1 of region"));
	assert_non_null(strstr(log, "all 2 GiB of region"));
	free(log);
	free(rs);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(prefault_sync),
	    cmocka_unit_test(sigterm_while_faulting),
	    cmocka_unit_test(listens_before_ready),
	    cmocka_unit_test(rdma_listens_before_ready),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
