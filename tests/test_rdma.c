/* SPDX-License-Identifier: MIT */
/*
 * Integration: rdma:// clusters against real kvring-server processes over
 * real verbs devices. It runs wherever the environment names them:
 *   KVR_RDMA_DEV / KVR_RDMA_ADDR     the client's device and its IP address
 *   KVR_RDMA_DEV2 / KVR_RDMA_ADDR2   the server's (may be the same pair)
 *   KVR_RDMA_CLI_* / KVR_RDMA_SRV_*, KVR_RDMA_NETNS_CLI / _SRV
 *                                    optional: a client and a server in two
 *                                    network namespaces ("two hosts")
 * (the qemu Soft-RoCE VM of tests/rdma-vm sets all of them; on a host with
 * RDMA NICs set the first four). Without them it reports a skip.
 *
 * Every byte that comes back is checked: puts and gets of 1 B to 16 MiB in
 * 1 to 16 SGEs; batches of 1,000 objects; client and server on different
 * "hosts"; a forged rkey and an address outside the client's registration
 * (a clean error, nothing written outside the named ranges, the server
 * still serving others); a stalled and a killed server (every object ends
 * within its deadline); and one engine driving a file store and an RDMA
 * target in the same stream of batches.
 */
#include "fake_devmem.h"
#include "fixtures.h"
#include "server_proc.h"
#include "engine/engine.h"
#include "transport/rdma.h"

#include <fcntl.h>
#include <inttypes.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define ARENA (160ull << 20)
#define MAXN  1024

static const char *dev1, *addr1, *dev2, *addr2;

struct ctx {
	kvr_engine *e;
	kvr_target *t;
	uint8_t *mem;
	kvr_mr *mr;
};

static struct {
	char keys[MAXN][32];
	kvr_obj objs[MAXN];
	kvr_sge sges[MAXN][16];
} B;

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A server listening on addr2/dev2 (or the given host), port picked. */
static void server_up(struct kvt_server *s, const char *dev, const char *addr, const char *netns,
		      const char *mem)
{
	char listen[160];

	snprintf(listen, sizeof(listen), "rdma://%s:0?dev=%s", addr, dev);
	assert_int_equal(
	    kvt_server_start_at(s, listen, netns,
				(const char *[]){"--memory", mem, "--log-level", "debug", NULL}),
	    0);
}

/* "rdma://ADDR:PORT,...?dev=DEV" for the first n servers. */
static void cluster_uri(char *buf, size_t len, const struct kvt_server *s, int n, const char *dev)
{
	size_t off = (size_t)snprintf(buf, len, "rdma://");

	for (int i = 0; i < n; i++)
		off += (size_t)snprintf(buf + off, len - off, "%s%s", i ? "," : "",
					s[i].uri + strlen("rdma://"));
	snprintf(buf + off, len - off, "?dev=%s", dev);
}

static void ctx_up(struct ctx *c, const char *uri, const struct kvr_connect_opts *o)
{
	memset(c, 0, sizeof(*c));
	c->e = kvt_engine();
	c->mem = kvt_alloc_mem(ARENA);
	assert_int_equal(kvr_mem_register(c->e, c->mem, ARENA, 0, &c->mr), 0);
	if (kvr_connect(c->e, uri, o, &c->t))
		fail_msg("kvr_connect %s: %s", uri, kvr_engine_errmsg(c->e));
}

static void ctx_down(struct ctx *c)
{
	assert_int_equal(kvr_target_close(c->t), 0);
	kvr_engine_destroy(c->e);
	kvt_free_mem(c->mem, ARENA);
}

/*
 * n objects "obj-<base+i>" of len bytes in nsge pieces, laid out from
 * c->mem + off with a 64-byte gap after each (canaries); puts fill them,
 * gets clear them (and the gaps get 0xee).
 */
static void submit(struct ctx *c, kvr_target *t, enum kvr_op op, uint32_t base, uint32_t n,
		   size_t len, uint32_t nsge, size_t off, uint32_t timeout_ms, struct kvt_done *d)
{
	uint8_t *p = c->mem + off;

	assert_true(n <= MAXN && nsge <= 16 && off + (uint64_t)n * (len + 64) <= ARENA);
	for (uint32_t i = 0; i < n; i++) {
		size_t left = len;

		snprintf(B.keys[i], sizeof(B.keys[i]), "obj-%u", base + i);
		if (op == KVR_OP_PUT)
			kvt_fill(p, len, base + i);
		else if (op == KVR_OP_GET)
			memset(p, 0, len);
		for (uint32_t s = 0; s < nsge; s++) {
			size_t k = s == nsge - 1 ? left : len / nsge;

			B.sges[i][s] = (kvr_sge){p, k};
			p += k;
			left -= k;
		}
		memset(p, 0xee, 64);
		p += 64;
		B.objs[i] = (kvr_obj){B.keys[i], strlen(B.keys[i]), B.sges[i], nsge};
	}
	memset(d, 0, sizeof(*d));
	assert_int_equal(kvr_submit(t, op, B.objs, n, timeout_ms, kvt_batch_cb, d), 0);
}

static void run(struct ctx *c, enum kvr_op op, uint32_t base, uint32_t n, size_t len, uint32_t nsge,
		struct kvt_done *d)
{
	submit(c, c->t, op, base, n, len, nsge, 0, 0, d);
	assert_int_equal(kvt_wait(c->e, d, 120000), 1);
	assert_int_equal(d->n, n);
}

/* Object i of the last layout holds exactly its bytes, its gap untouched. */
static bool intact(struct ctx *c, uint32_t i, uint32_t base, size_t len, size_t off)
{
	const uint8_t *p = c->mem + off + (size_t)i * (len + 64);

	for (int k = 0; k < 64; k++)
		if (p[len + k] != 0xee)
			return false;
	return kvt_check(p, len, base + i);
}

/* Retry a small exists until the node is back up (after a failure and its
 * backoff); fails the test after 20 s. */
static void await_up(struct ctx *c)
{
	struct kvt_done *d = calloc(1, sizeof(*d));
	int64_t t0 = now_ms();

	for (;;) {
		submit(c, c->t, KVR_OP_EXISTS, 0, 1, 1, 1, 0, 3000, d);
		assert_int_equal(kvt_wait(c->e, d, 10000), 1);
		if (d->results[0] >= 0 || d->results[0] == -ENOENT)
			break;
		assert_true(now_ms() - t0 < 20000);
		assert_true(kvr_engine_poll(c->e, 50) >= 0);
	}
	free(d);
}

static void print_counters(struct ctx *c, const char *what, uint64_t objects)
{
	struct kvr_stats st = {.size = sizeof(st)};

	assert_int_equal(kvr_target_stats(c->t, &st), 0);
	print_message("%s: %" PRIu64 " objects: %.2f work requests, %.3f doorbells, %.3f cq "
		      "wake-ups per object\n",
		      what, objects, (double)st.rdma_wrs / (double)objects,
		      (double)st.rdma_posts / (double)objects,
		      (double)st.rdma_cq_events / (double)objects);
}

/* ------------------------------------------------------------------ tests */

static void connect_disconnect(void **state)
{
	struct kvt_server s;
	struct kvt_done *d = calloc(1, sizeof(*d));
	char uri[512];
	struct ctx c;

	(void)state;
	server_up(&s, dev2, addr2, NULL, "64M");
	cluster_uri(uri, sizeof(uri), &s, 1, dev1);
	for (int round = 0; round < 3; round++) {
		ctx_up(&c, uri, NULL);
		run(&c, KVR_OP_PUT, (uint32_t)round * 8, 8, 1000, 1, d);
		for (int i = 0; i < 8; i++)
			assert_int_equal(d->results[i], 1000);
		run(&c, KVR_OP_GET, (uint32_t)round * 8, 8, 1000, 1, d);
		for (uint32_t i = 0; i < 8; i++) {
			assert_int_equal(d->results[i], 1000);
			assert_true(intact(&c, i, (uint32_t)round * 8, 1000, 0));
		}
		ctx_down(&c);
	}
	/* a tcp:// client of the same listener is served too */
	snprintf(uri, sizeof(uri), "tcp://%s", s.uri + strlen("rdma://"));
	ctx_up(&c, uri, NULL);
	run(&c, KVR_OP_GET, 0, 8, 1000, 1, d);
	for (uint32_t i = 0; i < 8; i++)
		assert_true(d->results[i] == 1000 && intact(&c, i, 0, 1000, 0));
	ctx_down(&c);
	assert_int_equal(kvt_server_stop(&s), 0);
	free(d);
}

static void sizes_and_sges(void **state)
{
	static const size_t sizes[] = {1, 100, 4096, 4097, 65536, 1 << 20, 16 << 20};
	static const uint32_t sges[] = {1, 3, 16};
	struct kvt_server s;
	struct kvt_done *d = calloc(1, sizeof(*d));
	char uri[512];
	struct ctx c;
	uint32_t base = 0;
	uint64_t objects = 0;

	(void)state;
	server_up(&s, dev2, addr2, NULL, "512M");
	cluster_uri(uri, sizeof(uri), &s, 1, dev1);
	ctx_up(&c, uri, NULL);
	for (size_t z = 0; z < sizeof(sizes) / sizeof(sizes[0]); z++) {
		for (size_t g = 0; g < sizeof(sges) / sizeof(sges[0]); g++) {
			size_t len = sizes[z];
			uint32_t nsge = len < sges[g] ? 1 : sges[g];
			uint32_t n = len >= (1 << 20) ? 4 : 16;

			run(&c, KVR_OP_PUT, base, n, len, nsge, d);
			for (uint32_t i = 0; i < n; i++)
				assert_int_equal(d->results[i], (int64_t)len);
			run(&c, KVR_OP_GET, base, n, len, nsge, d);
			for (uint32_t i = 0; i < n; i++) {
				assert_int_equal(d->results[i], (int64_t)len);
				assert_true(intact(&c, i, base, len, 0));
			}
			run(&c, KVR_OP_EXISTS, base, n, len, nsge, d);
			for (uint32_t i = 0; i < n; i++)
				assert_int_equal(d->results[i], (int64_t)len);
			objects += 3 * n;
			base += n;
		}
	}
	/* a get into a smaller SGL: -EMSGSIZE and not a byte written */
	run(&c, KVR_OP_GET, base - 4, 4, 4096, 1, d);
	for (uint32_t i = 0; i < 4; i++) {
		assert_int_equal(d->results[i], -EMSGSIZE);
		for (size_t k = 0; k < 4096; k++)
			assert_int_equal(c.mem[(size_t)i * (4096 + 64) + k], 0);
	}
	/* a get into a larger SGL: the object's bytes, nothing after them */
	run(&c, KVR_OP_GET, 0, 1, 4096, 1, d);
	assert_int_equal(d->results[0], 1);
	assert_true(kvt_check(c.mem, 1, 0));
	for (size_t k = 1; k < 4096; k++)
		assert_int_equal(c.mem[k], 0);
	/* misses and removes */
	run(&c, KVR_OP_GET, 1u << 30, 8, 4096, 2, d);
	for (uint32_t i = 0; i < 8; i++)
		assert_int_equal(d->results[i], -ENOENT);
	run(&c, KVR_OP_REMOVE, 0, 16, 1, 1, d);
	for (uint32_t i = 0; i < 16; i++)
		assert_int_equal(d->results[i], 0);
	run(&c, KVR_OP_EXISTS, 0, 16, 1, 1, d);
	for (uint32_t i = 0; i < 16; i++)
		assert_int_equal(d->results[i], -ENOENT);
	print_counters(&c, "sizes", objects);
	ctx_down(&c);
	assert_int_equal(kvt_server_stop(&s), 0);
	free(d);
}

static void batches_of_1000(void **state)
{
	struct kvt_server s;
	struct kvt_done *d = calloc(1, sizeof(*d));
	char uri[512];
	struct ctx c;

	(void)state;
	server_up(&s, dev2, addr2, NULL, "256M");
	cluster_uri(uri, sizeof(uri), &s, 1, dev1);
	ctx_up(&c, uri, NULL);
	/* 4 KiB in one SGE (puts inline), then 16 KiB in 4 (puts read by the
	 * server): Soft-RoCE under emulation moves a few MB/s, so a generous
	 * deadline */
	for (uint32_t round = 0; round < 3; round++) {
		size_t len = round ? 16 << 10 : 4 << 10;
		uint32_t nsge = round ? 4 : 1;
		int64_t t0 = now_ms();

		for (int op = 0; op < 2; op++) {
			submit(&c, c.t, op ? KVR_OP_GET : KVR_OP_PUT, round * 1000, 1000, len, nsge,
			       0, 120000, d);
			assert_int_equal(kvt_wait(c.e, d, 130000), 1);
			for (uint32_t i = 0; i < 1000; i++) {
				assert_int_equal(d->results[i], (int64_t)len);
				assert_true(!op || intact(&c, i, round * 1000, len, 0));
			}
		}
		print_message("1000 x %zu KiB in %u SGE(s): put + get in %" PRId64 " ms\n",
			      len >> 10, nsge, now_ms() - t0);
	}
	print_counters(&c, "batches of 1000", 6000);
	ctx_down(&c);
	assert_int_equal(kvt_server_stop(&s), 0);
	free(d);
}

/* A server of two engines (threads): the client learns the shards from the
 * first connection and opens queue pairs to each; the listening shard hands
 * the second shard its connections, which make their queue pairs there. */
static void threaded_server(void **state)
{
	struct kvt_server s;
	struct kvt_done *d = calloc(1, sizeof(*d));
	char listen[160], uri[512];
	struct ctx c;

	(void)state;
	snprintf(listen, sizeof(listen), "rdma://%s:0?dev=%s", addr2, dev2);
	assert_int_equal(
	    kvt_server_start_at(&s, listen, NULL,
				(const char *[]){"--memory", "128M", "--threads", "2", NULL}),
	    0);
	cluster_uri(uri, sizeof(uri), &s, 1, dev1);
	ctx_up(&c, uri, NULL);
	run(&c, KVR_OP_PUT, 0, 500, 8 << 10, 2, d);
	for (uint32_t i = 0; i < 500; i++)
		assert_int_equal(d->results[i], 8 << 10);
	run(&c, KVR_OP_GET, 0, 500, 8 << 10, 2, d);
	for (uint32_t i = 0; i < 500; i++)
		assert_true(d->results[i] == 8 << 10 && intact(&c, i, 0, 8 << 10, 0));
	ctx_down(&c);
	assert_int_equal(kvt_server_stop(&s), 0);
	free(d);
}

/* Client in one network namespace, server in another: two "hosts". */
static void two_hosts(void **state)
{
	const char *cdev = getenv("KVR_RDMA_CLI_DEV"), *sdev = getenv("KVR_RDMA_SRV_DEV");
	const char *saddr = getenv("KVR_RDMA_SRV_ADDR"), *cns = getenv("KVR_RDMA_NETNS_CLI");
	const char *sns = getenv("KVR_RDMA_NETNS_SRV");
	struct kvt_server s;
	struct kvt_done *d;
	char uri[512], path[128];
	struct ctx c;
	int home, ns;

	(void)state;
	if (!cdev || !sdev || !saddr || !cns || !sns) {
		print_message("no namespaces named (KVR_RDMA_NETNS_*): skipped\n");
		skip();
	}
	d = calloc(1, sizeof(*d));
	server_up(&s, sdev, saddr, sns, "128M");
	home = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
	snprintf(path, sizeof(path), "/run/netns/%s", cns);
	ns = open(path, O_RDONLY | O_CLOEXEC);
	assert_true(home >= 0 && ns >= 0);
	assert_int_equal(setns(ns, CLONE_NEWNET), 0); /* this process is the other host */
	cluster_uri(uri, sizeof(uri), &s, 1, cdev);
	ctx_up(&c, uri, NULL);
	run(&c, KVR_OP_PUT, 0, 64, 256 << 10, 8, d);
	for (uint32_t i = 0; i < 64; i++)
		assert_int_equal(d->results[i], 256 << 10);
	run(&c, KVR_OP_GET, 0, 64, 256 << 10, 8, d);
	for (uint32_t i = 0; i < 64; i++)
		assert_true(d->results[i] == 256 << 10 && intact(&c, i, 0, 256 << 10, 0));
	ctx_down(&c);
	assert_int_equal(setns(home, CLONE_NEWNET), 0);
	close(home);
	close(ns);
	assert_int_equal(kvt_server_stop(&s), 0);
	free(d);
}

/*
 * A client whose descriptors carry a forged rkey, then one whose rkey is
 * valid but covers less than the addresses it names: the server's RDMA ops
 * fail at the client's NIC, the objects fail cleanly (never a crash, never
 * a byte outside the named ranges), and the server goes on serving.
 */
static void forged_rkey(void **state)
{
	struct kvt_server s;
	struct kvt_done *d = calloc(1, sizeof(*d));
	char uri[512];
	struct ctx c, good;
	struct rdma_ctx *rc;
	struct rdma_dev *dv;
	struct ibv_mr **slot, *real, fake, *small;
	int err = 0;

	(void)state;
	server_up(&s, dev2, addr2, NULL, "64M");
	cluster_uri(uri, sizeof(uri), &s, 1, dev1);
	ctx_up(&good, uri, NULL);
	run(&good, KVR_OP_PUT, 0, 4, 64 << 10, 2, d);
	ctx_up(&c, uri, NULL);
	run(&c, KVR_OP_EXISTS, 0, 4, 1, 1, d); /* connected */
	for (uint32_t i = 0; i < 4; i++)
		assert_int_equal(d->results[i], 64 << 10);

	/* the library's own MR for the arena, swapped for a forged one */
	rc = rdma_ctx_get(c.e, &err);
	assert_non_null(rc);
	dv = rdma_dev_get(rc, dev1, &err);
	assert_non_null(dv);
	slot = &((struct rdma_region *)c.mr->ext[rc->ml.slot])->mr[dv->idx];
	real = *slot;
	fake = *real;
	fake.rkey ^= 0x00ff00ffu;
	*slot = &fake;
	for (int op = 0; op < 2; op++) {
		*slot = real;
		await_up(&c);
		*slot = &fake;
		submit(&c, c.t, op ? KVR_OP_PUT : KVR_OP_GET, 0, 4, 64 << 10, 2, 0, 5000, d);
		assert_int_equal(kvt_wait(c.e, d, 10000), 1);
		for (uint32_t i = 0; i < 4; i++) {
			print_message("forged rkey, %s %u: %s\n", op ? "put" : "get", i,
				      kvr_strerror((int)d->results[i]));
			assert_true(d->results[i] < 0);
		}
		/* a failed get wrote nothing: every byte still zero, gaps intact */
		for (uint32_t i = 0; !op && i < 4; i++) {
			const uint8_t *p = c.mem + (size_t)i * ((64 << 10) + 64);

			for (size_t k = 0; k < (64 << 10); k++)
				assert_int_equal(p[k], 0);
			for (int k = 0; k < 64; k++)
				assert_int_equal(p[(64 << 10) + k], 0xee);
		}
	}
	/* a valid rkey of an MR that covers only the first page of the arena */
	small =
	    ibv_reg_mr(dv->pd, c.mem, 4096,
		       IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_READ | IBV_ACCESS_REMOTE_WRITE);
	assert_non_null(small);
	*slot = real;
	await_up(&c);
	fake = *real;
	fake.rkey = small->rkey;
	fake.lkey = small->lkey;
	*slot = &fake;
	submit(&c, c.t, KVR_OP_GET, 0, 4, 64 << 10, 2, 0, 5000, d);
	assert_int_equal(kvt_wait(c.e, d, 10000), 1);
	for (uint32_t i = 0; i < 4; i++) {
		print_message("rkey of a smaller MR, get %u: %s\n", i,
			      kvr_strerror((int)d->results[i]));
		assert_true(d->results[i] < 0);
	}
	*slot = real;
	ibv_dereg_mr(small);
	/* the connection comes back (after the node's backoff) and works */
	await_up(&c);
	run(&c, KVR_OP_GET, 0, 4, 64 << 10, 2, d);
	for (uint32_t i = 0; i < 4; i++)
		assert_true(d->results[i] == 64 << 10 && intact(&c, i, 0, 64 << 10, 0));
	/* and the other client never noticed */
	run(&good, KVR_OP_GET, 0, 4, 64 << 10, 2, d);
	for (uint32_t i = 0; i < 4; i++)
		assert_true(d->results[i] == 64 << 10 && intact(&good, i, 0, 64 << 10, 0));
	ctx_down(&c);
	ctx_down(&good);
	assert_int_equal(kvt_server_stop(&s), 0);
	free(d);
}

static void stalled_server(void **state)
{
	struct kvt_server s;
	struct kvt_done *d = calloc(1, sizeof(*d));
	char uri[512];
	struct ctx c;
	int64_t t0, took;

	(void)state;
	server_up(&s, dev2, addr2, NULL, "128M");
	cluster_uri(uri, sizeof(uri), &s, 1, dev1);
	ctx_up(&c, uri, NULL);
	run(&c, KVR_OP_PUT, 0, 8, 1 << 20, 2, d);
	kvt_server_pause(&s);
	t0 = now_ms();
	submit(&c, c.t, KVR_OP_GET, 0, 8, 1 << 20, 2, 0, 1500, d);
	assert_int_equal(kvt_wait(c.e, d, 10000), 1);
	took = now_ms() - t0;
	print_message("stalled server: batch ended after %" PRId64 " ms (deadline 1500)\n", took);
	assert_true(took < 1500 + 1000);
	for (uint32_t i = 0; i < 8; i++)
		assert_int_equal(d->results[i], -ETIMEDOUT);
	kvt_server_resume(&s);
	for (t0 = now_ms();;) {
		run(&c, KVR_OP_GET, 0, 8, 1 << 20, 2, d);
		if (d->results[0] >= 0 || now_ms() - t0 > 20000)
			break;
		assert_true(kvr_engine_poll(c.e, 50) >= 0);
	}
	for (uint32_t i = 0; i < 8; i++)
		assert_true(d->results[i] == 1 << 20 && intact(&c, i, 0, 1 << 20, 0));
	ctx_down(&c);
	assert_int_equal(kvt_server_stop(&s), 0);
	free(d);
}

static void server_killed_mid_batch(void **state)
{
	struct kvt_server s;
	struct kvt_done *d = calloc(1, sizeof(*d));
	char uri[512];
	struct ctx c;
	const size_t len = 4 << 20;
	int64_t t0;

	(void)state;
	server_up(&s, dev2, addr2, NULL, "256M");
	cluster_uri(uri, sizeof(uri), &s, 1, dev1);
	ctx_up(&c, uri, NULL);
	run(&c, KVR_OP_PUT, 0, 32, len, 4, d);
	for (uint32_t i = 0; i < 32; i++)
		assert_int_equal(d->results[i], (int64_t)len);
	t0 = now_ms();
	submit(&c, c.t, KVR_OP_GET, 0, 32, len, 4, 0, 5000, d);
	assert_true(kvr_engine_poll(c.e, 0) >= 0); /* requests on the wire */
	kvt_server_kill(&s);
	assert_int_equal(kvt_wait(c.e, d, 15000), 1);
	print_message("server killed: batch of 32 x 4 MiB ended after %" PRId64 " ms\n",
		      now_ms() - t0);
	assert_true(now_ms() - t0 < 5000 + 1000);
	/* whole before the kill, or a connection error: nothing else */
	for (uint32_t i = 0; i < 32; i++) {
		int64_t r = d->results[i];

		if (r != (int64_t)len && r != -ECONNRESET && r != -ECONNREFUSED && r != -EHOSTDOWN)
			fail_msg("object %u: %" PRId64 " (%s)", i, r, kvr_strerror((int)r));
		if (r == (int64_t)len)
			assert_true(intact(&c, i, 0, len, 0));
	}
	/* nobody there now: fast errors, no hang */
	submit(&c, c.t, KVR_OP_GET, 0, 4, 4096, 1, 0, 3000, d);
	assert_int_equal(kvt_wait(c.e, d, 8000), 1);
	for (uint32_t i = 0; i < 4; i++)
		assert_true(d->results[i] < 0);
	ctx_down(&c);
	free(d);
}

/* One engine, a file store and an RDMA cluster, batches to both in flight
 * together: the one loop multiplexes io_uring file I/O and verbs. */
static void file_and_rdma_together(void **state)
{
	struct kvt_server s;
	struct kvt_done *d = calloc(2, sizeof(*d));
	char uri[512], fsuri[4200];
	const char *path = kvt_path("rdma_fs");
	struct kvr_store_opts so = {.size = sizeof(so), .capacity = 256ull << 20};
	kvr_target *fs;
	struct ctx c;
	const size_t len = 256 << 10;
	const size_t half = ARENA / 2;

	(void)state;
	server_up(&s, dev2, addr2, NULL, "256M");
	cluster_uri(uri, sizeof(uri), &s, 1, dev1);
	ctx_up(&c, uri, NULL);
	snprintf(fsuri, sizeof(fsuri), "file:%s", path);
	assert_int_equal(kvr_store_open(c.e, fsuri, &so, &fs), 0);
	for (uint32_t round = 0; round < 4; round++) {
		static kvr_obj fo[MAXN];
		static kvr_sge fsg[MAXN][16];
		static char fk[MAXN][32];

		/* RDMA batch in the first half of the arena ... */
		submit(&c, c.t, KVR_OP_PUT, round * 100, 100, len, 4, 0, 0, &d[0]);
		/* ... and a file batch from the second half, in flight together */
		memcpy(fo, B.objs, sizeof(fo[0]) * 100);
		memcpy(fsg, B.sges, sizeof(fsg[0]) * 100);
		memcpy(fk, B.keys, sizeof(fk[0]) * 100);
		for (uint32_t i = 0; i < 100; i++) {
			uint8_t *p = c.mem + half + (size_t)i * len;

			kvt_fill(p, len, 7000 + round * 100 + i);
			fsg[i][0] = (kvr_sge){p, len};
			fo[i] = (kvr_obj){fk[i], strlen(fk[i]), fsg[i], 1};
		}
		memset(&d[1], 0, sizeof(d[1]));
		assert_int_equal(kvr_put(fs, fo, 100, kvt_batch_cb, &d[1]), 0);
		assert_int_equal(kvt_wait(c.e, &d[0], 60000), 1);
		assert_int_equal(kvt_wait(c.e, &d[1], 60000), 1);
		for (uint32_t i = 0; i < 100; i++) {
			assert_int_equal(d[0].results[i], (int64_t)len);
			assert_int_equal(d[1].results[i], (int64_t)len);
		}
		/* read both back at once, into cleared memory */
		submit(&c, c.t, KVR_OP_GET, round * 100, 100, len, 4, 0, 0, &d[0]);
		memset(c.mem + half, 0, 100 * len);
		memset(&d[1], 0, sizeof(d[1]));
		assert_int_equal(kvr_get(fs, fo, 100, kvt_batch_cb, &d[1]), 0);
		assert_int_equal(kvt_wait(c.e, &d[0], 60000), 1);
		assert_int_equal(kvt_wait(c.e, &d[1], 60000), 1);
		for (uint32_t i = 0; i < 100; i++) {
			assert_true(d[0].results[i] == (int64_t)len &&
				    intact(&c, i, round * 100, len, 0));
			assert_int_equal(d[1].results[i], (int64_t)len);
			assert_true(
			    kvt_check(c.mem + half + (size_t)i * len, len, 7000 + round * 100 + i));
		}
	}
	assert_int_equal(kvr_target_close(fs), 0);
	ctx_down(&c);
	kvt_unlink(path);
	assert_int_equal(kvt_server_stop(&s), 0);
	free(d);
}

static void replicas_survive_a_kill(void **state)
{
	struct kvt_server s[3];
	struct kvt_done *d = calloc(1, sizeof(*d));
	struct kvr_connect_opts o = {.size = sizeof(o), .replicas = 2, .timeout_ms = 20000};
	char uri[512];
	struct ctx c;
	const size_t len = 64 << 10;
	uint32_t lost = 0;

	(void)state;
	for (int i = 0; i < 3; i++)
		server_up(&s[i], dev2, addr2, NULL, "128M");
	cluster_uri(uri, sizeof(uri), s, 3, dev1);
	ctx_up(&c, uri, &o);
	for (uint32_t r = 0; r < 4; r++) {
		submit(&c, c.t, KVR_OP_PUT, r * 256, 256, len, 2, 0, 0, d);
		if (r == 2) {
			assert_true(kvr_engine_poll(c.e, 0) >= 0);
			kvt_server_kill(&s[1]);
		}
		assert_int_equal(kvt_wait(c.e, d, 60000), 1);
		for (uint32_t i = 0; i < 256; i++)
			assert_int_equal(d->results[i], (int64_t)len);
	}
	for (uint32_t r = 0; r < 4; r++) {
		run(&c, KVR_OP_GET, r * 256, 256, len, 2, d);
		for (uint32_t i = 0; i < 256; i++) {
			if (d->results[i] < 0) {
				lost++;
				continue;
			}
			assert_true(intact(&c, i, r * 256, len, 0));
		}
	}
	print_message("replicas: %u of 1024 objects unreadable after one of 3 servers died\n",
		      lost);
	assert_int_equal(lost, 0);
	ctx_down(&c);
	assert_int_equal(kvt_server_stop(&s[0]), 0);
	assert_int_equal(kvt_server_stop(&s[2]), 0);
	free(d);
}

/* KVR_ENGINE_BUSY_POLL: completions are polled every round instead of
 * waiting for the completion channel; the same bytes come back. */
static void busy_polling(void **state)
{
	struct kvr_engine_opts eo = {.size = sizeof(eo), .flags = KVR_ENGINE_BUSY_POLL};
	struct kvt_server s;
	struct kvt_done *d = calloc(1, sizeof(*d));
	char uri[512];
	struct ctx c;

	(void)state;
	server_up(&s, dev2, addr2, NULL, "64M");
	cluster_uri(uri, sizeof(uri), &s, 1, dev1);
	memset(&c, 0, sizeof(c));
	assert_int_equal(kvr_engine_create(&eo, &c.e), 0);
	c.mem = kvt_alloc_mem(ARENA);
	assert_int_equal(kvr_mem_register(c.e, c.mem, ARENA, 0, &c.mr), 0);
	assert_int_equal(kvr_connect(c.e, uri, NULL, &c.t), 0);
	run(&c, KVR_OP_PUT, 0, 200, 32 << 10, 2, d);
	for (uint32_t i = 0; i < 200; i++)
		assert_int_equal(d->results[i], 32 << 10);
	run(&c, KVR_OP_GET, 0, 200, 32 << 10, 2, d);
	for (uint32_t i = 0; i < 200; i++)
		assert_true(d->results[i] == 32 << 10 && intact(&c, i, 0, 32 << 10, 0));
	print_counters(&c, "busy polling", 400);
	ctx_down(&c);
	assert_int_equal(kvt_server_stop(&s), 0);
	free(d);
}

/* Device memory whose RDMA registration works (here the fake device's
 * memory, plain host memory, takes the ibv_reg_mr path that peer memory
 * takes on a GPU): the server reads and writes it straight, nothing is
 * staged. */
static void device_memory_direct(void **state)
{
	struct kvt_server s;
	struct kvt_done *d = calloc(1, sizeof(*d));
	struct kvr_stats st = {.size = sizeof(st)};
	struct fake_dev *dev;
	char uri[512];
	struct ctx c;

	(void)state;
	server_up(&s, dev2, addr2, NULL, "64M");
	cluster_uri(uri, sizeof(uri), &s, 1, dev1);
	memset(&c, 0, sizeof(c));
	c.e = kvt_engine();
	dev = fake_dev_attach(c.e, ARENA, 4 << 20);
	c.mem = dev->arena;
	assert_int_equal(kvr_mem_register(c.e, c.mem, ARENA, KVR_MEM_CUDA, &c.mr), 0);
	assert_int_equal(kvr_connect(c.e, uri, NULL, &c.t), 0);
	run(&c, KVR_OP_PUT, 0, 100, 48 << 10, 3, d);
	for (uint32_t i = 0; i < 100; i++)
		assert_int_equal(d->results[i], 48 << 10);
	run(&c, KVR_OP_GET, 0, 100, 48 << 10, 3, d);
	for (uint32_t i = 0; i < 100; i++)
		assert_true(d->results[i] == 48 << 10 && intact(&c, i, 0, 48 << 10, 0));
	assert_int_equal(kvr_engine_stats(c.e, &st), 0);
	assert_int_equal(st.staged_objects, 0);
	assert_int_equal(dev->copies, 0);
	assert_int_equal(kvr_target_close(c.t), 0);
	kvr_engine_destroy(c.e); /* frees the fake device's memory too */
	assert_int_equal(kvt_server_stop(&s), 0);
	free(d);
}

static void bad_uris(void **state)
{
	kvr_engine *e = kvt_engine();
	kvr_target *t = NULL;

	(void)state;
	assert_int_equal(kvr_connect(e, "rdma://127.0.0.1:1?dev=no-such-device", NULL, &t),
			 -ENODEV);
	assert_non_null(strstr(kvr_engine_errmsg(e), "no-such-device"));
	assert_int_equal(kvr_connect(e, "rdma://127.0.0.1:1?colour=blue", NULL, &t), -EINVAL);
	assert_int_equal(kvr_connect(e, "rdma://127.0.0.1:1?gid=256", NULL, &t), -EINVAL);
	assert_int_equal(kvr_connect(e, "rdma://?dev=x", NULL, &t), -EINVAL);
	assert_null(t);
	kvr_engine_destroy(e);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(bad_uris),
	    cmocka_unit_test(connect_disconnect),
	    cmocka_unit_test(sizes_and_sges),
	    cmocka_unit_test(batches_of_1000),
	    cmocka_unit_test(busy_polling),
	    cmocka_unit_test(device_memory_direct),
	    cmocka_unit_test(threaded_server),
	    cmocka_unit_test(two_hosts),
	    cmocka_unit_test(forged_rkey),
	    cmocka_unit_test(stalled_server),
	    cmocka_unit_test(server_killed_mid_batch),
	    cmocka_unit_test(file_and_rdma_together),
	    cmocka_unit_test(replicas_survive_a_kill),
	};

	dev1 = getenv("KVR_RDMA_DEV");
	addr1 = getenv("KVR_RDMA_ADDR");
	dev2 = getenv("KVR_RDMA_DEV2") ? getenv("KVR_RDMA_DEV2") : dev1;
	addr2 = getenv("KVR_RDMA_ADDR2") ? getenv("KVR_RDMA_ADDR2") : addr1;
	if (!dev1 || !addr1) {
		printf("test_rdma: no RDMA device named (KVR_RDMA_DEV, KVR_RDMA_ADDR): skipped; "
		       "tests/rdma-vm runs it on Soft-RoCE\n");
		return 77;
	}
	if (getenv("KVR_TEST_FILTER")) /* e.g. "forged*": one test while debugging */
		cmocka_set_test_filter(getenv("KVR_TEST_FILTER"));
	return cmocka_run_group_tests(tests, NULL, NULL);
}
