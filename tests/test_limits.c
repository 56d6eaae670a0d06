/* SPDX-License-Identifier: MIT */
/*
 * Every bound of kvring.h at the bound and one past it, on every kind of
 * target: mem:, file:, tcp:// and rdma:// (the last two against a
 * kvring-server process): keys of KVR_MAX_KEY and one more byte;
 * KVR_MAX_SGE SGEs of 1 B to 1 MiB and one more SGE; batches of
 * max_objects and one more; empty objects; a get into an SGL one byte
 * short and exact (nothing written past it), the exact one in two SGEs
 * that touch and then overlap by a byte; the fixed-buffer table's regions
 * and one more, written and read back; an SGE straddling two regions.
 * Then the largest messages the transports build: full keys with full
 * SGLs, and payloads on either side of where puts change how they travel
 * (inline or described over RDMA, plain or zero-copy over TCP). On the
 * remote kinds, the shared secret's longest length and one more byte.
 * Every byte that comes back is checked.
 *
 * rdma:// runs where the environment names a verbs device, as test_rdma
 * does (KVR_RDMA_DEV / KVR_RDMA_ADDR for the client, KVR_RDMA_DEV2 /
 * KVR_RDMA_ADDR2 for the server; the Soft-RoCE VM of tests/rdma-vm sets
 * them). Without them its tests report a skip, except inside that VM
 * (KVR_RDMA_VM=1), where a missing device is a failure.
 */
#include "fixtures.h"
#include "server_proc.h"

#include <stdlib.h>
#include <string.h>

#define ARENA	 (96ull << 20)
#define MAX_OBJS 64

struct lim {
	kvr_engine *e;
	kvr_target *t;
	uint8_t *mem;
	kvr_mr *mr;
	struct kvt_server srv;
	bool remote;
	bool absent;	     /* rdma:// without a device: every test skips */
	char listen[160];    /* remote kinds: the servers' --listen ("": tcp) */
	char devq[80];	     /* ... and what the client's URI adds ("?dev=rxe0") */
	uint32_t slots_used; /* fixed-buffer slots taken before the test: the
				arena, and a memory store's own pool */
	char path[512];
	struct kvt_done *d;
};

static int run(struct lim *l, enum kvr_op op, const kvr_obj *o, size_t n)
{
	memset(l->d, 0, sizeof(*l->d));
	int rc = kvr_submit(l->t, op, o, n, 0, kvt_batch_cb, l->d);

	if (rc)
		return rc;
	assert_int_equal(kvt_wait(l->e, l->d, 60000), 1);
	assert_int_equal(l->d->n, n);
	return 0;
}

/* Where rdma:// servers listen and which device the client takes, from the
 * environment; -1 where the VM names none, absent where nothing does. */
static int rdma_devices(struct lim *l)
{
	const char *dev = getenv("KVR_RDMA_DEV"), *addr = getenv("KVR_RDMA_ADDR");
	const char *dev2 = getenv("KVR_RDMA_DEV2") ? getenv("KVR_RDMA_DEV2") : dev;
	const char *addr2 = getenv("KVR_RDMA_ADDR2") ? getenv("KVR_RDMA_ADDR2") : addr;

	if (!dev || !addr) {
		if (getenv("KVR_RDMA_VM")) {
			print_error("KVR_RDMA_VM is set but no RDMA device is named "
				    "(KVR_RDMA_DEV, KVR_RDMA_ADDR)\n");
			return -1;
		}
		l->absent = true;
		return 0;
	}
	snprintf(l->listen, sizeof(l->listen), "rdma://%s:0?dev=%s", addr2, dev2);
	snprintf(l->devq, sizeof(l->devq), "?dev=%s", dev);
	return 0;
}

/* A kvring-server of l's kind, with one more option (extra and its arg;
 * NULL for none), and the client's URI for it. */
static void server_up(struct lim *l, struct kvt_server *s, const char *extra, const char *arg,
		      char *uri, size_t len)
{
	const char *args[] = {"--memory", "128M", extra, arg, NULL}; /* sges stores 24 MiB */

	assert_int_equal(kvt_server_start_at(s, *l->listen ? l->listen : NULL, NULL, args), 0);
	snprintf(uri, len, "%s%s", s->uri, l->devq);
}

static int setup(void **state, const char *kind)
{
	struct lim *l = calloc(1, sizeof(*l));
	struct kvr_engine_opts eo = {.size = sizeof(eo), .max_objects = MAX_OBJS};
	char uri[600];
	int rc;

	*state = l;
	l->remote = !strcmp(kind, "tcp") || !strcmp(kind, "rdma");
	if (!strcmp(kind, "rdma") && (rdma_devices(l) || l->absent))
		return l->absent ? 0 : -1;
	l->d = calloc(1, sizeof(*l->d));
	assert_int_equal(kvr_engine_create(&eo, &l->e), 0);
	l->mem = kvt_alloc_mem(ARENA);
	assert_int_equal(kvr_mem_register(l->e, l->mem, ARENA, 0, &l->mr), 0);
	l->slots_used = 1;
	if (!strcmp(kind, "mem")) {
		assert_int_equal(kvr_store_open(l->e, "mem:256M", NULL, &l->t), 0);
		l->slots_used++;
	} else if (!strcmp(kind, "file")) {
		struct kvr_store_opts so = {
		    .size = sizeof(so), .flags = KVR_STORE_TRUNCATE, .capacity = 256 << 20};

		snprintf(l->path, sizeof(l->path), "%s", kvt_path("limits"));
		snprintf(uri, sizeof(uri), "file:%s", l->path);
		if ((rc = kvr_store_open(l->e, uri, &so, &l->t))) {
			print_error("kvr_store_open %s: %s (%s)\n", uri, kvr_strerror(rc),
				    kvr_engine_errmsg(l->e));
			return -1;
		}
	} else {
		server_up(l, &l->srv, NULL, NULL, uri, sizeof(uri));
		if (kvr_connect(l->e, uri, NULL, &l->t)) {
			print_error("kvr_connect %s: %s\n", uri, kvr_engine_errmsg(l->e));
			return -1;
		}
	}
	return 0;
}

static int setup_mem(void **s)
{
	return setup(s, "mem");
}

static int setup_file(void **s)
{
	return setup(s, "file");
}

static int setup_tcp(void **s)
{
	return setup(s, "tcp");
}

static int setup_rdma(void **s)
{
	return setup(s, "rdma");
}

static int teardown(void **state)
{
	struct lim *l = *state;

	if (l->absent) {
		free(l);
		return 0;
	}
	assert_int_equal(kvr_target_close(l->t), 0);
	kvr_engine_destroy(l->e);
	if (l->remote)
		assert_int_equal(kvt_server_stop(&l->srv), 0);
	if (*l->path)
		kvt_unlink(l->path);
	kvt_free_mem(l->mem, ARENA);
	free(l->d);
	free(l);
	return 0;
}

/* The test's fixture, or a skip where it has no target (rdma:// without a
 * device). */
static struct lim *lim_of(void **state)
{
	struct lim *l = *state;

	if (l->absent) {
		print_message("no RDMA device named (KVR_RDMA_DEV, KVR_RDMA_ADDR): skipped; "
			      "tests/rdma-vm runs it on Soft-RoCE\n");
		skip();
	}
	return l;
}

static void keys(void **state)
{
	struct lim *l = lim_of(state);
	static char key[KVR_MAX_KEY + 1];
	kvr_sge sg = {l->mem, 4096};
	kvr_obj o = {key, KVR_MAX_KEY, &sg, 1};

	memset(key, 'k', sizeof(key));
	kvt_fill(l->mem, 4096, 1);
	assert_int_equal(run(l, KVR_OP_PUT, &o, 1), 0);
	assert_int_equal(l->d->results[0], 4096);
	memset(l->mem, 0, 4096);
	assert_int_equal(run(l, KVR_OP_GET, &o, 1), 0);
	assert_int_equal(l->d->results[0], 4096);
	assert_true(kvt_check(l->mem, 4096, 1));
	assert_int_equal(run(l, KVR_OP_EXISTS, &o, 1), 0);
	assert_int_equal(l->d->results[0], 4096);
	o.key_len = KVR_MAX_KEY + 1;
	for (int op = KVR_OP_PUT; op <= KVR_OP_REMOVE; op++)
		assert_int_equal(run(l, (enum kvr_op)op, &o, 1), -ENAMETOOLONG);
	o.key_len = KVR_MAX_KEY;
	assert_int_equal(run(l, KVR_OP_REMOVE, &o, 1), 0);
	assert_int_equal(l->d->results[0], 0);
}

static void sges(void **state)
{
	struct lim *l = lim_of(state);
	static kvr_sge in[KVR_MAX_SGE + 1], out[KVR_MAX_SGE + 1];
	kvr_obj o = {"sges", 4, in, KVR_MAX_SGE}, g = {"sges", 4, out, KVR_MAX_SGE};
	size_t off = 0, total = 0;

	/* 1 B, 2 B, ... 1 MiB, and again: every size a slice can have */
	for (uint32_t i = 0; i <= KVR_MAX_SGE; i++) {
		size_t len = (size_t)1 << (i % 21);

		in[i] = (kvr_sge){l->mem + off, len};
		out[i] = (kvr_sge){l->mem + ARENA / 2 + off, len};
		off += len;
		if (i < KVR_MAX_SGE)
			total += len;
	}
	assert_true(off <= ARENA / 2);
	kvt_fill(l->mem, total, 2);
	memset(l->mem + ARENA / 2, 0, total);
	assert_int_equal(run(l, KVR_OP_PUT, &o, 1), 0);
	assert_int_equal(l->d->results[0], (int64_t)total);
	assert_int_equal(run(l, KVR_OP_GET, &g, 1), 0);
	assert_int_equal(l->d->results[0], (int64_t)total);
	assert_true(kvt_check(l->mem + ARENA / 2, total, 2));
	o.nsge = g.nsge = KVR_MAX_SGE + 1;
	assert_int_equal(run(l, KVR_OP_PUT, &o, 1), -E2BIG);
	assert_int_equal(run(l, KVR_OP_GET, &g, 1), -E2BIG);
}

static void batches(void **state)
{
	struct lim *l = lim_of(state);
	static kvr_obj o[MAX_OBJS + 1];
	static kvr_sge sg[MAX_OBJS + 1];
	static char k[MAX_OBJS + 1][16];

	for (int i = 0; i <= MAX_OBJS; i++) {
		snprintf(k[i], sizeof(k[i]), "b-%d", i);
		sg[i] = (kvr_sge){l->mem + (size_t)i * 8192, 8192};
		o[i] = (kvr_obj){k[i], strlen(k[i]), &sg[i], 1};
	}
	kvt_fill(l->mem, (MAX_OBJS + 1) * 8192, 3);
	assert_int_equal(run(l, KVR_OP_PUT, o, MAX_OBJS), 0);
	for (int i = 0; i < MAX_OBJS; i++)
		assert_int_equal(l->d->results[i], 8192);
	memset(l->mem, 0, (MAX_OBJS + 1) * 8192);
	assert_int_equal(run(l, KVR_OP_GET, o, MAX_OBJS), 0);
	for (int i = 0; i < MAX_OBJS; i++)
		assert_int_equal(l->d->results[i], 8192);
	assert_true(kvt_check(l->mem, MAX_OBJS * 8192, 3));
	assert_int_equal(run(l, KVR_OP_PUT, o, MAX_OBJS + 1), -E2BIG);
	assert_int_equal(run(l, KVR_OP_EXISTS, o, MAX_OBJS + 1), -E2BIG);
}

static void empty_and_short(void **state)
{
	struct lim *l = lim_of(state);
	kvr_sge sg[2] = {{l->mem, 10000}, {l->mem + 20000, 0}};
	kvr_sge two[2] = {{l->mem + 20000, 5000}, {l->mem + 24999, 5001}};
	kvr_obj o = {"short", 5, sg, 0};

	/* an object of no bytes: no SGE, or an SGE of none, is refused */
	assert_int_equal(run(l, KVR_OP_PUT, &o, 1), -EINVAL);
	o.sgl = &sg[1];
	o.nsge = 1;
	assert_int_equal(run(l, KVR_OP_PUT, &o, 1), -EINVAL);
	/* a get into an SGL one byte short of the object, then exact */
	o.sgl = sg;
	kvt_fill(l->mem, 10000, 4);
	assert_int_equal(run(l, KVR_OP_PUT, &o, 1), 0);
	assert_int_equal(l->d->results[0], 10000);
	sg[1] = (kvr_sge){l->mem + 20000, 9999};
	o.sgl = &sg[1];
	memset(l->mem + 20000, 0xee, 10000 + 64);
	assert_int_equal(run(l, KVR_OP_GET, &o, 1), 0);
	assert_int_equal(l->d->results[0], -EMSGSIZE);
	for (size_t k = 9999; k < 10000 + 64; k++) /* not a byte past the SGL */
		assert_int_equal(l->mem[20000 + k], 0xee);
	/* exact, in two SGEs that touch; overlapping by one byte is refused */
	o.sgl = two;
	o.nsge = 2;
	assert_int_equal(run(l, KVR_OP_GET, &o, 1), -EINVAL);
	two[1] = (kvr_sge){l->mem + 25000, 5000};
	memset(l->mem + 20000, 0, 10000);
	assert_int_equal(run(l, KVR_OP_GET, &o, 1), 0);
	assert_int_equal(l->d->results[0], 10000);
	assert_true(kvt_check(l->mem + 20000, 10000, 4));
	for (size_t k = 10000; k < 10000 + 64; k++)
		assert_int_equal(l->mem[20000 + k], 0xee);
}

static void regions(void **state)
{
	struct lim *l = lim_of(state);
	const size_t sz = 4096, n = 1024 - l->slots_used + 1; /* the table has 1024 slots */
	uint8_t *m = kvt_alloc_mem((n + 2) * sz);
	static kvr_mr *mr[1026];
	kvr_sge sg = {m + (n - 2) * sz + 100, sz}; /* straddles regions n-2 and n-1 */
	kvr_obj o = {"straddle", 8, &sg, 1};

	/* n - 1 more regions fill the table; the next one is refused */
	for (size_t i = 0; i < n - 1; i++)
		assert_int_equal(kvr_mem_register(l->e, m + i * sz, sz, 0, &mr[i]), 0);
	assert_int_equal(kvr_mem_register(l->e, m + (n - 1) * sz, sz, 0, &mr[n - 1]), -ENOSPC);
	assert_int_equal(kvr_mem_register(l->e, m + (n - 1) * sz, sz, KVR_MEM_NO_PIN, &mr[n - 1]),
			 0);
	/* the last region of the table and the one past it work */
	sg = (kvr_sge){m + (n - 2) * sz, sz};
	kvt_fill(sg.addr, sz, 5);
	assert_int_equal(run(l, KVR_OP_PUT, &o, 1), 0);
	assert_int_equal(l->d->results[0], (int64_t)sz);
	sg = (kvr_sge){m + (n - 1) * sz, sz};
	assert_int_equal(run(l, KVR_OP_GET, &o, 1), 0);
	assert_int_equal(l->d->results[0], (int64_t)sz);
	assert_true(kvt_check(sg.addr, sz, 5));
	/* one SGE across two registered regions is refused */
	sg = (kvr_sge){m + (n - 2) * sz + 100, sz};
	assert_int_equal(run(l, KVR_OP_PUT, &o, 1), -EFAULT);
	assert_int_equal(run(l, KVR_OP_GET, &o, 1), -EFAULT);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(kvr_mem_deregister(l->e, mr[i]), 0);
	kvt_free_mem(m, (n + 2) * sz);
}

/*
 * The largest messages: each object has a full key, and holds 4 KiB - 1 to
 * 16 KiB + 1 bytes (where a put over RDMA stops travelling inline, and one
 * over TCP starts using zero-copy send) in 1, 31, 32 or KVR_MAX_SGE SGEs
 * (31 and 32: with the header in front, the most SGEs the RDMA client lets
 * one SEND gather, and one more). One batch puts them all, one gets them
 * back.
 */
static void messages(void **state)
{
	struct lim *l = lim_of(state);
	static const size_t sizes[] = {4095, 4096, 4097, 16383, 16384, 16385};
	static const uint32_t nsges[] = {1, 31, 32, KVR_MAX_SGE};
	enum { NS = sizeof(nsges) / sizeof(nsges[0]), N = sizeof(sizes) / sizeof(sizes[0]) * NS };
	static char key[N][KVR_MAX_KEY];
	static kvr_sge in[N][KVR_MAX_SGE], out[N][KVR_MAX_SGE];
	static kvr_obj o[N], g[N];
	size_t off = 0;

	for (size_t i = 0; i < N; i++) {
		size_t len = sizes[i / NS], piece = len / nsges[i % NS];
		char tag[16];
		int t = snprintf(tag, sizeof(tag), "msg-%zu-", i);

		memset(key[i], 'm', KVR_MAX_KEY);
		memcpy(key[i], tag, (size_t)t);
		kvt_fill(l->mem + off, len, 100 + i);
		memset(l->mem + ARENA / 2 + off, 0, len + 64);
		for (uint32_t k = 0; k < nsges[i % NS]; k++) {
			size_t at = k * piece, n = k + 1 < nsges[i % NS] ? piece : len - at;

			in[i][k] = (kvr_sge){l->mem + off + at, n};
			out[i][k] = (kvr_sge){l->mem + ARENA / 2 + off + at, n};
		}
		o[i] = (kvr_obj){key[i], KVR_MAX_KEY, in[i], nsges[i % NS]};
		g[i] = (kvr_obj){key[i], KVR_MAX_KEY, out[i], nsges[i % NS]};
		off += len + 64; /* a gap after each object stays zero */
	}
	assert_int_equal(run(l, KVR_OP_PUT, o, N), 0);
	for (size_t i = 0; i < N; i++)
		assert_int_equal(l->d->results[i], (int64_t)sizes[i / NS]);
	assert_int_equal(run(l, KVR_OP_GET, g, N), 0);
	off = 0;
	for (size_t i = 0; i < N; i++) {
		size_t len = sizes[i / NS];

		assert_int_equal(l->d->results[i], (int64_t)len);
		assert_true(kvt_check(l->mem + ARENA / 2 + off, len, 100 + i));
		for (size_t k = 0; k < 64; k++)
			assert_int_equal(l->mem[ARENA / 2 + off + len + k], 0);
		off += len + 64;
	}
	assert_int_equal(run(l, KVR_OP_EXISTS, g, N), 0);
	for (size_t i = 0; i < N; i++)
		assert_int_equal(l->d->results[i], (int64_t)sizes[i / NS]);
}

/*
 * The shared secret of kvr_connect (remote kinds): 4096 bytes prove
 * themselves to a server holding them (every byte counts: one changed is
 * refused); 4097, or none of a secret that is set, are refused at connect.
 */
static void secrets(void **state)
{
	struct lim *l = lim_of(state);
	static uint8_t secret[4097];
	struct kvr_connect_opts co = {.size = sizeof(co), .secret = secret, .secret_len = 4097};
	const char *path = kvt_path("secret");
	kvr_sge sg = {l->mem, 8192};
	kvr_obj o = {"secret", 6, &sg, 1};
	struct kvt_server s;
	kvr_target *t = NULL, *keep = l->t;
	char uri[600];
	FILE *f;

	for (size_t i = 0; i < sizeof(secret); i++)
		secret[i] = (uint8_t)('a' + i % 26);
	f = fopen(path, "w");
	assert_non_null(f);
	assert_int_equal(fwrite(secret, 1, 4096, f), 4096);
	assert_int_equal(fclose(f), 0);
	server_up(l, &s, "--auth-file", path, uri, sizeof(uri));
	assert_int_equal(kvr_connect(l->e, uri, &co, &t), -EINVAL);
	co.secret_len = 0;
	assert_int_equal(kvr_connect(l->e, uri, &co, &t), -EINVAL);
	assert_null(t);
	co.secret_len = 4096;
	assert_int_equal(kvr_connect(l->e, uri, &co, &l->t), 0);
	kvt_fill(l->mem, 8192, 6);
	assert_int_equal(run(l, KVR_OP_PUT, &o, 1), 0);
	assert_int_equal(l->d->results[0], 8192);
	memset(l->mem, 0, 8192);
	assert_int_equal(run(l, KVR_OP_GET, &o, 1), 0);
	assert_int_equal(l->d->results[0], 8192);
	assert_true(kvt_check(l->mem, 8192, 6));
	assert_int_equal(kvr_target_close(l->t), 0);
	secret[4095] ^= 1;
	assert_int_equal(kvr_connect(l->e, uri, &co, &l->t), 0);
	assert_int_equal(run(l, KVR_OP_GET, &o, 1), 0);
	assert_int_equal(l->d->results[0], -EACCES);
	assert_int_equal(kvr_target_close(l->t), 0);
	l->t = keep;
	assert_int_equal(kvt_server_stop(&s), 0);
	kvt_unlink(path);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
/* Each test once per kind, named "test (kind)". */
#define TEST(f, s) {#f " (" #s ")", f, setup_##s, teardown, NULL}
#define KIND(s)                                                                                    \
	TEST(keys, s), TEST(sges, s), TEST(batches, s), TEST(empty_and_short, s),                  \
	    TEST(regions, s), TEST(messages, s)
	    KIND(mem), KIND(file), KIND(tcp), TEST(secrets, tcp), KIND(rdma), TEST(secrets, rdma),
#undef KIND
#undef TEST
	};
	if (getenv("KVR_TEST_FILTER")) /* e.g. "*(rdma)": one kind while debugging */
		cmocka_set_test_filter(getenv("KVR_TEST_FILTER"));
	return cmocka_run_group_tests(tests, NULL, NULL);
}
