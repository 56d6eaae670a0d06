/* SPDX-License-Identifier: MIT */
/* transport/memstore.c: every op, replace, eviction, checksum failure, and
 * the pool faulted in the background (KVR_STORE_BACKGROUND_FAULT). */
#include "fixtures.h"
#include "engine/engine.h"
#include "transport/store.h"

#include <string.h>
#include <time.h>

#define ARENA (16u << 20)

struct fx {
	kvr_engine *e;
	kvr_target *t;
	uint8_t *buf;
	kvr_mr *mr;
};

static struct fx setup(const char *uri, uint32_t flags)
{
	struct fx f;
	struct kvr_store_opts so = {.size = sizeof(so), .flags = flags};

	f.e = kvt_engine();
	f.buf = kvt_alloc_mem(ARENA);
	assert_int_equal(kvr_mem_register(f.e, f.buf, ARENA, 0, &f.mr), 0);
	assert_int_equal(kvr_store_open(f.e, uri, &so, &f.t), 0);
	return f;
}

static void teardown(struct fx *f)
{
	kvr_engine_destroy(f->e);
	kvt_free_mem(f->buf, ARENA);
}

/* One-object batch; returns the result. */
static int64_t op1(struct fx *f, enum kvr_op op, const char *key, void *addr, size_t len)
{
	kvr_sge sge = {addr, len};
	kvr_obj o = {key, strlen(key), &sge, 1};
	struct kvt_done d = {0};

	assert_int_equal(kvr_submit(f->t, op, &o, 1, 0, kvt_batch_cb, &d), 0);
	assert_int_equal(d.calls, 0);
	assert_int_equal(kvt_wait(f->e, &d, 5000), 1);
	return d.results[0];
}

static void test_roundtrip(void **state)
{
	struct fx f = setup("mem:8M", 0);
	kvr_sge sgl[3] = {{f.buf, 100}, {f.buf + 5000, 4096}, {f.buf + 20000, 7}};
	kvr_obj o = {"obj", 3, sgl, 3};
	struct kvt_done d = {0};

	kvt_fill(f.buf, 30000, 1);
	assert_int_equal(kvr_put(f.t, &o, 1, kvt_batch_cb, &d), 0);
	assert_int_equal(kvt_wait(f.e, &d, 1000), 1);
	assert_int_equal(d.results[0], 4203);
	/* read back into one contiguous, larger buffer */
	uint8_t *dst = f.buf + (1 << 20);

	memset(dst, 0, 8192);
	assert_int_equal(op1(&f, KVR_OP_GET, "obj", dst, 8192), 4203);
	assert_memory_equal(dst, f.buf, 100);
	assert_memory_equal(dst + 100, f.buf + 5000, 4096);
	assert_memory_equal(dst + 4196, f.buf + 20000, 7);
	assert_int_equal(dst[4203], 0);
	assert_int_equal(op1(&f, KVR_OP_EXISTS, "obj", NULL, 0), 4203);
	assert_int_equal(op1(&f, KVR_OP_EXISTS, "nope", NULL, 0), -ENOENT);
	assert_int_equal(op1(&f, KVR_OP_GET, "nope", dst, 10), -ENOENT);
	/* an SGL smaller than the object */
	assert_int_equal(op1(&f, KVR_OP_GET, "obj", dst, 4202), -EMSGSIZE);
	assert_int_equal(op1(&f, KVR_OP_REMOVE, "obj", NULL, 0), 0);
	assert_int_equal(op1(&f, KVR_OP_REMOVE, "obj", NULL, 0), -ENOENT);
	assert_int_equal(op1(&f, KVR_OP_GET, "obj", dst, 8192), -ENOENT);

	struct kvr_stats st = {.size = sizeof(st)};

	assert_int_equal(kvr_target_stats(f.t, &st), 0);
	assert_int_equal(st.puts, 1);
	assert_int_equal(st.gets, 4);
	assert_int_equal(st.misses, 4);
	assert_int_equal(st.objects, 0);
	assert_int_equal(st.used_bytes, 0);
	teardown(&f);
}

static void test_replace(void **state)
{
	struct fx f = setup("mem:8M", 0);
	uint8_t *dst = f.buf + (8 << 20);

	kvt_fill(f.buf, 10000, 1);
	kvt_fill(f.buf + 10000, 3000, 2);
	assert_int_equal(op1(&f, KVR_OP_PUT, "k", f.buf, 10000), 10000);
	/* a get in the same batch stream as a replacing put sees old or new */
	assert_int_equal(op1(&f, KVR_OP_PUT, "k", f.buf + 10000, 3000), 3000);
	assert_int_equal(op1(&f, KVR_OP_GET, "k", dst, 10000), 3000);
	assert_true(kvt_check(dst, 3000, 2));
	struct kvr_stats st = {.size = sizeof(st)};

	kvr_target_stats(f.t, &st);
	assert_int_equal(st.objects, 1);
	assert_int_equal(st.used_bytes, 4096);
	teardown(&f);
}

static void test_eviction_lru(void **state)
{
	struct fx f = setup("mem:64K", 0); /* 16 units of 4 KiB */
	char key[16];

	for (int i = 0; i < 16; i++) {
		snprintf(key, sizeof(key), "k%d", i);
		assert_int_equal(op1(&f, KVR_OP_PUT, key, f.buf, 4096), 4096);
	}
	/* touch k0 so that k1 is the least recently used */
	assert_int_equal(op1(&f, KVR_OP_GET, "k0", f.buf + 65536, 4096), 4096);
	assert_int_equal(op1(&f, KVR_OP_PUT, "new", f.buf, 8192), 8192);
	assert_int_equal(op1(&f, KVR_OP_EXISTS, "k0", NULL, 0), 4096);
	assert_int_equal(op1(&f, KVR_OP_EXISTS, "k1", NULL, 0), -ENOENT);
	assert_int_equal(op1(&f, KVR_OP_EXISTS, "k2", NULL, 0), -ENOENT);
	assert_int_equal(op1(&f, KVR_OP_EXISTS, "k3", NULL, 0), 4096);
	struct kvr_stats st = {.size = sizeof(st)};

	kvr_target_stats(f.t, &st);
	assert_int_equal(st.evictions, 2);
	/* larger than the whole store */
	assert_int_equal(op1(&f, KVR_OP_PUT, "huge", f.buf, 65537), -ENOSPC);
	teardown(&f);
}

static void test_no_evict(void **state)
{
	struct fx f = setup("mem:16K", KVR_STORE_NO_EVICT);

	assert_int_equal(op1(&f, KVR_OP_PUT, "a", f.buf, 8192), 8192);
	assert_int_equal(op1(&f, KVR_OP_PUT, "b", f.buf, 8192), 8192);
	assert_int_equal(op1(&f, KVR_OP_PUT, "c", f.buf, 1), -ENOSPC);
	assert_int_equal(op1(&f, KVR_OP_EXISTS, "a", NULL, 0), 8192);
	teardown(&f);
}

static void test_checksum_failure(void **state)
{
	struct fx f = setup("mem:1M", 0);
	struct kvr_store *s = kvr_store_of(f.t);
	struct kvr_mr *pool = NULL;

	kvt_fill(f.buf, 4096, 9);
	assert_int_equal(op1(&f, KVR_OP_PUT, "c", f.buf, 4096), 4096);
	/* corrupt one byte of the stored copy */
	for (uint32_t i = 0; i < f.e->nregions; i++)
		if (f.e->regions[i] != f.mr)
			pool = f.e->regions[i];
	assert_non_null(pool);
	struct kvr_entry *en = kvr_index_find(&s->ix, "c", 1, kvr_key_hash("c", 1));

	assert_non_null(en);
	((uint8_t *)pool->base)[en->off + 77] ^= 0x40;
	assert_int_equal(op1(&f, KVR_OP_GET, "c", f.buf + 8192, 4096), -EIO);
	assert_int_equal(op1(&f, KVR_OP_GET, "c", f.buf + 8192, 4096), -ENOENT);
	struct kvr_stats st = {.size = sizeof(st)};

	kvr_target_stats(f.t, &st);
	assert_int_equal(st.checksum_errors, 1);
	teardown(&f);
}

static struct kvr_stats tstats(struct fx *f)
{
	struct kvr_stats st = {.size = sizeof(st)};

	assert_int_equal(kvr_target_stats(f->t, &st), 0);
	return st;
}

/* A memory store with KVR_STORE_BACKGROUND_FAULT at `rate` bytes per second. */
static struct fx setup_bg(const char *uri, uint64_t rate)
{
	struct fx f;
	struct kvr_store_opts so = {
	    .size = sizeof(so), .flags = KVR_STORE_BACKGROUND_FAULT, .fault_rate = rate};

	f.e = kvt_engine();
	f.buf = kvt_alloc_mem(ARENA);
	assert_int_equal(kvr_mem_register(f.e, f.buf, ARENA, 0, &f.mr), 0);
	assert_int_equal(kvr_store_open(f.e, uri, &so, &f.t), 0);
	return f;
}

#define BG_OBJ (1u << 20)

/* Put object i (BG_OBJ bytes of kvt_fill(seed)) and read it back. */
static void bg_put(struct fx *f, int i, uint64_t seed)
{
	char key[16];

	snprintf(key, sizeof(key), "o%d", i);
	kvt_fill(f->buf, BG_OBJ, seed);
	assert_int_equal(op1(f, KVR_OP_PUT, key, f->buf, BG_OBJ), BG_OBJ);
}

static void bg_check(struct fx *f, int i, uint64_t seed)
{
	char key[16];
	uint8_t *dst = f->buf + (8u << 20);

	snprintf(key, sizeof(key), "o%d", i);
	memset(dst, 0, BG_OBJ);
	assert_int_equal(op1(f, KVR_OP_GET, key, dst, BG_OBJ), BG_OBJ);
	assert_true(kvt_check(dst, BG_OBJ, seed));
}

static uint64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/*
 * The store serves at once, before its pool is faulted in or pinned: objects
 * stored all over the pool meanwhile, and after, keep every byte; the pool
 * becomes a fixed buffer once it is all faulted in, and stats say how far
 * it got. Deterministic: `ready` only moves in the loop's progress timer, so
 * before the first poll it is 0, and the rate (32 MiB/s for 64 MiB) keeps
 * the faulting going for 2 s at least.
 */
static void test_background_fault(void **state)
{
	struct fx f = setup("mem:4M", 0);
	struct kvr_stats st = tstats(&f);
	uint64_t end;

	/* without the flag: faulted and pinned before the open returned */
	assert_int_equal(st.pool_bytes, 4u << 20);
	assert_int_equal(st.pool_bytes_ready, 4u << 20);
	teardown(&f);

	f = setup_bg("mem:64M", 32u << 20);
	struct kvr_store *s = kvr_store_of(f.t);
	struct kvr_mr *pool = kvr_mr_find(f.e, s->base, 1);

	assert_non_null(pool);
	st = tstats(&f);
	assert_int_equal(st.pool_bytes, 64u << 20);
	assert_int_equal(st.pool_bytes_ready, 0);
	assert_int_equal(st.capacity_bytes, 64u << 20); /* all of it usable now */
	assert_int_equal(kvr_mr_slot(pool, s->base), -1);
	/* 48 MiB: most of the pool, far ahead of the faulting */
	for (int i = 0; i < 48; i++)
		bg_put(&f, i, 100 + (uint64_t)i);
	for (int i = 0; i < 48; i++)
		bg_check(&f, i, 100 + (uint64_t)i);
	st = tstats(&f);
	assert_true(st.pool_bytes_ready < st.pool_bytes);
	assert_int_equal(kvr_mr_slot(pool, s->base), -1);

	end = mono_ms() + 60000;
	while (tstats(&f).pool_bytes_ready < (64u << 20) && mono_ms() < end)
		assert_true(kvr_engine_poll(f.e, 50) >= 0);
	assert_int_equal(tstats(&f).pool_bytes_ready, 64u << 20);
	assert_true(kvr_mr_slot(pool, s->base) >= 0);
	for (int i = 0; i < 48; i++)
		bg_check(&f, i, 100 + (uint64_t)i);
	/* replace some, add more (evicting the oldest): still exact */
	for (int i = 0; i < 16; i++)
		bg_put(&f, i, 200 + (uint64_t)i);
	for (int i = 48; i < 64; i++)
		bg_put(&f, i, 100 + (uint64_t)i);
	for (int i = 0; i < 16; i++)
		bg_check(&f, i, 200 + (uint64_t)i);
	for (int i = 48; i < 64; i++)
		bg_check(&f, i, 100 + (uint64_t)i);
	teardown(&f);
}

/* Closing a store, or destroying its engine, while the faulting is under
 * way stops and joins the thread and frees everything (ASan checks). */
static void test_close_while_faulting(void **state)
{
	struct fx f = setup_bg("mem:256M", 16u << 20); /* 16 s to finish */
	struct kvr_store_opts so = {
	    .size = sizeof(so), .flags = KVR_STORE_BACKGROUND_FAULT, .fault_rate = 16u << 20};
	kvr_target *t2 = NULL;

	assert_int_equal(kvr_store_open(f.e, "mem:256M", &so, &t2), 0);
	bg_put(&f, 1, 7);
	assert_true(kvr_engine_poll(f.e, 150) >= 0); /* let the timer run once */
	bg_check(&f, 1, 7);
	assert_true(tstats(&f).pool_bytes_ready < (256u << 20));
	assert_int_equal(kvr_target_close(f.t), 0);
	/* t2 is closed by the engine's destruction */
	teardown(&f);
}

static void test_bad_uris(void **state)
{
	kvr_engine *e = kvt_engine();
	kvr_target *t = NULL;

	assert_int_equal(kvr_store_open(e, "mem:", NULL, &t), -EINVAL);
	assert_int_equal(kvr_store_open(e, "mem:12Q", NULL, &t), -EINVAL);
	assert_int_equal(kvr_store_open(e, "mem:0", NULL, &t), -EINVAL);
	assert_int_equal(kvr_store_open(e, "bogus:1", NULL, &t), -EINVAL);
	assert_non_null(strstr(kvr_engine_errmsg(e), "unknown store URI"));
	assert_int_equal(kvr_store_open(e, "file:", NULL, &t), -EINVAL);
	assert_int_equal(kvr_store_open(NULL, "mem:1M", NULL, &t), -EINVAL);
	assert_null(t);
	uint64_t v;

	assert_int_equal(kvr_parse_size("4K", &v), 0);
	assert_int_equal(v, 4096);
	assert_int_equal(kvr_parse_size("2GiB", &v), 0);
	assert_int_equal(v, 2ull << 30);
	assert_int_equal(kvr_parse_size("99999999999T", &v), -EINVAL);
	assert_int_equal(kvr_parse_size("4KB", &v), 0);
	assert_int_equal(v, 4096);
	assert_int_equal(kvr_parse_size("-4", &v), -EINVAL);
	assert_int_equal(kvr_parse_size(NULL, &v), -EINVAL);
	assert_int_equal(kvr_parse_size("4", NULL), -EINVAL);
	kvr_engine_destroy(e);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_roundtrip),	     cmocka_unit_test(test_replace),
	    cmocka_unit_test(test_eviction_lru),     cmocka_unit_test(test_no_evict),
	    cmocka_unit_test(test_checksum_failure), cmocka_unit_test(test_bad_uris),
	    cmocka_unit_test(test_background_fault), cmocka_unit_test(test_close_while_faulting),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
