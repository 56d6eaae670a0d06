/* SPDX-License-Identifier: MIT */
/*
 * Scenario: replica failover. Three kvring-server processes, replicas = 2;
 * one client writes a new version of every key of a small set each round and
 * reads the set back, while one server at a time is stalled (SIGSTOP for
 * 3 s, then SIGCONT), killed (SIGKILL) and restarted on its port, or stalled
 * again. Every value names its key and version, so a read can tell:
 *  - stale: a version older than the newest put this client saw acknowledged
 *    for that key (the guarantee of include/kvring.h: read-your-acknowledged-
 *    writes, across replica stalls, deaths and restarts);
 *  - wrong: bytes that are no version of that key at all;
 *  - a miss or -EHOSTDOWN of a key put and acknowledged while a healthy
 *    replica holds it (only one server is ever disturbed at a time).
 * All must be 0, and no node but the disturbed one may be marked down (a
 * deadline missed by one node makes only that node suspect). Timeouts of
 * requests that met the stalled node are expected and only counted.
 * Phases end on conditions (the victim back up in the client's view, then
 * two clean rounds), not on sleeps, so a loaded machine only makes it slower.
 */
#include "fixtures.h"
#include "server_proc.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NKEYS	  48
#define VLEN	  4096
#define NSERVERS  3
#define PUT_EVERY 8
#define DEADLINE  1500 /* ms: the target's batch deadline */
#define STALL_MS  3000
#define DEAD_MS	  2000
#define PHASE_CAP 20000 /* ms a phase may take before the test gives up */

struct node_seen {
	int port;
	bool up;       /* as the client's log last said */
	int downs;     /* times marked down */
	int bad_downs; /* ... while another node was the one disturbed */
};

struct failover {
	kvr_engine *e;
	kvr_target *t;
	uint8_t *mem;
	kvr_mr *mr;
	struct kvt_server s[NSERVERS];
	struct node_seen seen[NSERVERS];
	int victim; /* the node disturbed in this phase */
	char keys[NKEYS][16];
	kvr_obj objs[NKEYS];
	kvr_sge sges[NKEYS];
	uint64_t acked[NKEYS]; /* newest version acknowledged (0: none) */
	uint64_t sent[NKEYS];  /* newest version ever sent */
	uint64_t version;
	struct kvt_done d;
	/* counts */
	unsigned rounds, reads, stale, wrong, misses, hostdown, timeouts, put_fail;
	unsigned repairs; /* repair batches the client's log announced */
};

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The client's log says when it marks a node down or sees it up again. */
static void log_sink(void *ctx, int level, const char *msg)
{
	struct failover *f = ctx;
	const char *p = strstr(msg, "node 127.0.0.1:");
	int port;

	(void)level;
	if (strstr(msg, "repairing "))
		f->repairs++;
	if (!p || sscanf(p, "node 127.0.0.1:%d", &port) != 1)
		return;
	for (int i = 0; i < NSERVERS; i++) {
		struct node_seen *n = &f->seen[i];

		if (n->port != port)
			continue;
		if (strstr(msg, " down (")) {
			n->up = false;
			n->downs++;
			if (i != f->victim) {
				n->bad_downs++;
				printf("failover: healthy node %d marked down: %s\n", i, msg);
			}
		} else if (strstr(msg, " up: ")) {
			n->up = true;
		}
	}
}

/* Value of key k at version v: a header naming both, then bytes derived
 * from them. */
static uint64_t seed_of(uint32_t k, uint64_t v)
{
	return ((uint64_t)k << 40) ^ v;
}

static void value_fill(uint8_t *p, uint32_t k, uint64_t v)
{
	uint64_t hdr[2] = {k, v};

	memcpy(p, hdr, sizeof(hdr));
	kvt_fill(p + sizeof(hdr), VLEN - sizeof(hdr), seed_of(k, v));
}

/* The version p holds for key k, or 0 if p is no value of key k. */
static uint64_t value_version(const uint8_t *p, uint32_t k)
{
	uint64_t hdr[2];

	memcpy(hdr, p, sizeof(hdr));
	if (hdr[0] != k || !hdr[1])
		return 0;
	if (!kvt_check(p + sizeof(hdr), VLEN - sizeof(hdr), seed_of(k, hdr[1])))
		return 0;
	return hdr[1];
}

static void run_batch(struct failover *f, enum kvr_op op, const kvr_obj *objs, uint32_t n)
{
	memset(&f->d, 0, sizeof(f->d));
	assert_int_equal(kvr_submit(f->t, op, objs, n, 0, kvt_batch_cb, &f->d), 0);
	/* Every batch ends by its deadline; the margin is for a loaded host. */
	assert_int_equal(kvt_wait(f->e, &f->d, DEADLINE + 10000), 1);
	assert_int_equal(f->d.n, n);
}

/* One round: put version v of an eighth of the keys (each key is rewritten
 * every PUT_EVERY rounds, so reads meet values written while a replica was
 * away), then read every key back. */
static void round_once(struct failover *f)
{
	uint64_t v = ++f->version;
	kvr_obj objs[NKEYS];
	uint32_t idx[NKEYS], n = 0;

	for (uint32_t k = 0; k < NKEYS; k++) {
		if ((k + v) % PUT_EVERY)
			continue;
		value_fill(f->sges[k].addr, k, v);
		f->sent[k] = v;
		idx[n] = k;
		objs[n++] = f->objs[k];
	}
	run_batch(f, KVR_OP_PUT, objs, n);
	for (uint32_t i = 0; i < n; i++) {
		uint32_t k = idx[i];
		int64_t r = f->d.results[i];

		if (r == VLEN)
			f->acked[k] = v;
		else if (r == -ETIMEDOUT)
			f->timeouts++;
		else if (r == -EHOSTDOWN) /* two of three nodes are healthy */
			f->hostdown++;
		else
			f->put_fail++;
		if (r != VLEN && r != -ETIMEDOUT)
			printf("failover: put of key %u version %llu: %lld\n", k,
			       (unsigned long long)v, (long long)r);
	}
	for (uint32_t k = 0; k < NKEYS; k++)
		memset(f->sges[k].addr, 0, VLEN);
	run_batch(f, KVR_OP_GET, f->objs, NKEYS);
	for (uint32_t k = 0; k < NKEYS; k++) {
		int64_t r = f->d.results[k];
		uint64_t got;

		f->reads++;
		if (r == -ETIMEDOUT) {
			f->timeouts++;
			continue;
		}
		if (r == -ENOENT || r == -EHOSTDOWN) {
			if (!f->acked[k])
				continue; /* never acknowledged: nothing promised */
			if (r == -ENOENT)
				f->misses++;
			else
				f->hostdown++;
			printf("failover: get of key %u: %lld (acked version %llu)\n", k,
			       (long long)r, (unsigned long long)f->acked[k]);
			continue;
		}
		got = r == VLEN ? value_version(f->sges[k].addr, k) : 0;
		if (!got || got > f->sent[k]) {
			f->wrong++;
			printf("failover: get of key %u: %lld, not a value of it\n", k,
			       (long long)r);
		} else if (got < f->acked[k]) {
			f->stale++;
		}
	}
	f->rounds++;
}

/* Run rounds for at least ms. */
static void rounds_for(struct failover *f, int64_t ms)
{
	int64_t end = now_ms() + ms;

	while (now_ms() < end)
		round_once(f);
}

/* Run rounds until the client has seen node i up again, then PUT_EVERY
 * more (every key rewritten with both of its replicas healthy). */
static void rounds_until_up(struct failover *f, int i)
{
	int64_t end = now_ms() + PHASE_CAP;

	while (!f->seen[i].up) {
		assert_true(now_ms() < end);
		round_once(f);
	}
	for (int r = 0; r < PUT_EVERY; r++)
		round_once(f);
}

static void stall(struct failover *f, int i)
{
	f->victim = i;
	assert_int_equal(kvt_server_pause(&f->s[i]), 0);
	rounds_for(f, STALL_MS);
	assert_int_equal(kvt_server_resume(&f->s[i]), 0);
	rounds_until_up(f, i);
}

static void kill_restart(struct failover *f, int i)
{
	const char *const args[] = {"--memory", "64M", NULL};
	char listen[64];

	f->victim = i;
	kvt_server_kill(&f->s[i]);
	rounds_for(f, DEAD_MS);
	snprintf(listen, sizeof(listen), "tcp://127.0.0.1:%d", f->s[i].port);
	assert_int_equal(kvt_server_start_at(&f->s[i], listen, NULL, args), 0);
	rounds_until_up(f, i);
}

static void report(const struct failover *f, const char *when)
{
	printf("failover %s: %u rounds, %u reads: %u stale, %u wrong, %u misses, "
	       "%u -EHOSTDOWN, %u timeouts, %u failed puts, %u repair batches; "
	       "downs %d/%d/%d (healthy %d/%d/%d)\n",
	       when, f->rounds, f->reads, f->stale, f->wrong, f->misses, f->hostdown, f->timeouts,
	       f->put_fail, f->repairs, f->seen[0].downs, f->seen[1].downs, f->seen[2].downs,
	       f->seen[0].bad_downs, f->seen[1].bad_downs, f->seen[2].bad_downs);
	fflush(stdout);
}

static void replica_failover(void **state)
{
	const char *const args[] = {"--memory", "64M", NULL};
	struct failover *f = calloc(1, sizeof(*f));
	struct kvr_engine_opts eo = {.size = sizeof(eo), .log_level = KVR_LOG_INFO};
	struct kvr_connect_opts o = {
	    .size = sizeof(o), .replicas = 2, .timeout_ms = DEADLINE, .connect_timeout_ms = 1000};
	char uri[256];
	int64_t t0 = now_ms();

	(void)state;
	assert_non_null(f);
	f->victim = -1;
	for (int i = 0; i < NSERVERS; i++) {
		assert_int_equal(kvt_server_start(&f->s[i], args), 0);
		f->seen[i].port = f->s[i].port;
	}
	eo.log = log_sink;
	eo.log_ctx = f;
	assert_int_equal(kvr_engine_create(&eo, &f->e), 0);
	f->mem = kvt_alloc_mem((size_t)NKEYS * VLEN);
	assert_int_equal(kvr_mem_register(f->e, f->mem, (size_t)NKEYS * VLEN, 0, &f->mr), 0);
	assert_true(kvt_cluster_uri(uri, sizeof(uri), f->s, NSERVERS) > 0);
	assert_int_equal(kvr_connect(f->e, uri, &o, &f->t), 0);
	for (uint32_t k = 0; k < NKEYS; k++) {
		snprintf(f->keys[k], sizeof(f->keys[k]), "fo-%u", k);
		f->sges[k] = (kvr_sge){f->mem + (size_t)k * VLEN, VLEN};
		f->objs[k] = (kvr_obj){f->keys[k], strlen(f->keys[k]), &f->sges[k], 1};
	}

	rounds_for(f, 300);
	for (uint32_t k = 0; k < NKEYS; k++)
		assert_int_equal(f->acked[k], f->sent[k]); /* all healthy: all acked */
	stall(f, 0);
	report(f, "after a stall of node 0");
	kill_restart(f, 1);
	report(f, "after node 1 killed and restarted");
	stall(f, 2);
	report(f, "after a stall of node 2");
	f->victim = -1;
	for (int r = 0; r < PUT_EVERY; r++)
		round_once(f);
	report(f, "at the end");
	printf("failover: %.1f s\n", (double)(now_ms() - t0) / 1000.0);

	assert_int_equal(f->stale, 0);
	assert_int_equal(f->wrong, 0);
	assert_int_equal(f->misses, 0);
	assert_int_equal(f->hostdown, 0);
	for (int i = 0; i < NSERVERS; i++)
		assert_int_equal(f->seen[i].bad_downs, 0);
	/* Each disturbed node missed writes and was repaired when it came back
	 * (the client logs each repair batch). */
	assert_true(f->repairs > 0);
	/* The last rounds ran with every node healthy: everything acked. */
	for (uint32_t k = 0; k < NKEYS; k++)
		assert_int_equal(f->acked[k], f->sent[k]);

	assert_int_equal(kvr_target_close(f->t), 0);
	kvr_engine_destroy(f->e);
	kvt_free_mem(f->mem, (size_t)NKEYS * VLEN);
	for (int i = 0; i < NSERVERS; i++)
		assert_int_equal(kvt_server_stop(&f->s[i]), 0);
	free(f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(replica_failover),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
