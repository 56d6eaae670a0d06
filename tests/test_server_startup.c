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
 *  - --prefault sync is ready at the first connection.
 * Not a timing test: --prefault-rate makes "not ready yet" certain (at the
 * rates used, the pool cannot be ready within 10 s of the start, far longer
 * than the checks before it take), and the wait for "ready" is on STATS.
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

/* STATS of the server's (one) shard: its pool's size and progress. */
static struct pool pool_of(const struct kvt_server *s)
{
	char *buf = NULL, *p;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	struct pool r;

	assert_non_null(f);
	assert_int_equal(node_stats(s->uri + strlen("tcp://"), NULL, 0, 5000, f), 0);
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
	FILE *f;
	long n;

	(void)state;
	assert_int_equal(kvt_server_start(&s, (const char *[]){"--memory", "1G", "--prefault-rate",
							       "32M", NULL}),
			 0);
	client_up(&c, s.uri);
	batch(&c, KVR_OP_PUT, 0);
	batch(&c, KVR_OP_GET, 0);
	client_down(&c);
	assert_true(pool_of(&s).ready < (1ull << 30));
	assert_int_equal(kvt_server_stop(&s), 0);
	f = fopen(s.log, "r");
	assert_non_null(f);
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	rewind(f);
	log = calloc(1, (size_t)n + 1);
	assert_non_null(log);
	assert_int_equal(fread(log, 1, (size_t)n, f), (size_t)n);
	fclose(f);
	assert_non_null(strstr(log, "faulting it in the background"));
	assert_non_null(strstr(log, "server closed"));
	free(log);
}

static void prefault_sync(void **state)
{
	struct kvt_server s;
	struct pool p;

	(void)state;
	assert_int_equal(
	    kvt_server_start(&s, (const char *[]){"--memory", "64M", "--prefault", "sync", NULL}),
	    0);
	p = pool_of(&s);
	assert_int_equal(p.bytes, 64u << 20);
	assert_int_equal(p.ready, p.bytes);
	assert_int_equal(kvt_server_stop(&s), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(prefault_sync),
	    cmocka_unit_test(sigterm_while_faulting),
	    cmocka_unit_test(listens_before_ready),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
