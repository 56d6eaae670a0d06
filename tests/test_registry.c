/* SPDX-License-Identifier: MIT */
/* engine/registry.c: lookup, splitting, -EBUSY, the RLIMIT_MEMLOCK error,
 * memory listeners, and deferred pinning. */
#include "fixtures.h"

#include <sys/mman.h>
#include "engine/engine.h"

#include <linux/capability.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static void test_lookup(void **state)
{
	kvr_engine *e = kvt_engine();
	uint8_t *m = kvt_alloc_mem(64 * 4096);
	kvr_mr *mr[8];

	/* eight regions with gaps, registered out of order */
	int order[8] = {5, 1, 7, 0, 3, 6, 2, 4};

	for (int i = 0; i < 8; i++) {
		int k = order[i];

		assert_int_equal(kvr_mem_register(e, m + k * 8 * 4096, 4 * 4096, 0, &mr[k]), 0);
	}
	for (int k = 0; k < 8; k++) {
		uint8_t *base = m + k * 8 * 4096;

		assert_ptr_equal(kvr_mr_find(e, base, 1), mr[k]);
		assert_ptr_equal(kvr_mr_find(e, base + 4 * 4096 - 1, 1), mr[k]);
		assert_ptr_equal(kvr_mr_find(e, base, 4 * 4096), mr[k]);
		assert_null(kvr_mr_find(e, base, 4 * 4096 + 1));
		assert_null(kvr_mr_find(e, base + 4 * 4096, 1)); /* the gap */
		assert_true(mr[k]->nfixed == 1);
		assert_true(kvr_mr_slot(mr[k], base) >= 0);
	}
	assert_null(kvr_mr_find(e, m - 1, 1));
	for (int k = 0; k < 8; k++)
		assert_int_equal(kvr_mem_deregister(e, mr[k]), 0);
	assert_null(kvr_mr_find(e, m, 1));
	kvr_engine_destroy(e);
	kvt_free_mem(m, 64 * 4096);
}

static void test_large_region_split(void **state)
{
	kvr_engine *e = kvt_engine();
	size_t len = (1ull << 30) + (64u << 20); /* 1 GiB + 64 MiB: two entries */
	uint8_t *m = kvt_alloc_mem(len);
	kvr_mr *mr;

	assert_int_equal(kvr_mem_register(e, m, len, 0, &mr), 0);
	assert_int_equal(mr->nfixed, 2);
	assert_int_not_equal(kvr_mr_slot(mr, m), kvr_mr_slot(mr, m + (1ull << 30)));
	assert_int_equal(kvr_fixed_end(mr, m + 5), (uintptr_t)m + (1ull << 30));
	assert_int_equal(kvr_fixed_end(mr, m + (1ull << 30)), (uintptr_t)m + len);

	/* a file store moves an object straddling the 1 GiB boundary */
	kvr_target *t;
	char uri[600];
	const char *path = kvt_path("split");
	struct kvr_store_opts so = {
	    .size = sizeof(so), .flags = KVR_STORE_TRUNCATE, .capacity = 64 << 20};
	struct kvt_done d = {0};
	uint8_t *obj = m + (1ull << 30) - (2u << 20);

	snprintf(uri, sizeof(uri), "file:%s", path);
	assert_int_equal(kvr_store_open(e, uri, &so, &t), 0);
	kvt_fill(obj, 4u << 20, 11);
	kvr_sge sge = {obj, 4u << 20};
	kvr_obj o = {"x", 1, &sge, 1};

	assert_int_equal(kvr_put(t, &o, 1, kvt_batch_cb, &d), 0);
	/* deregistering while the batch is in flight is refused */
	assert_int_equal(kvr_mem_deregister(e, mr), -EBUSY);
	assert_int_equal(kvt_wait(e, &d, 10000), 1);
	assert_int_equal(d.results[0], 4u << 20);
	memset(obj, 0, 4u << 20);
	d.calls = 0;
	assert_int_equal(kvr_get(t, &o, 1, kvt_batch_cb, &d), 0);
	assert_int_equal(kvt_wait(e, &d, 10000), 1);
	assert_int_equal(d.results[0], 4u << 20);
	assert_true(kvt_check(obj, 4u << 20, 11));
	struct kvr_stats st = {.size = sizeof(st)};

	kvr_target_stats(t, &st);
	assert_int_equal(st.bounce_bytes, 0);
	assert_int_equal(st.fixed_ios, 4); /* split at the entry boundary */
	assert_int_equal(kvr_target_close(t), 0);
	assert_int_equal(kvr_mem_deregister(e, mr), 0);
	kvr_engine_destroy(e);
	kvt_free_mem(m, len);
	kvt_unlink(path);
}

/* Without CAP_IPC_LOCK, pinned memory counts against RLIMIT_MEMLOCK: the
 * error must say so. Runs in a child so the capability change stays there. */
static int drop_ipc_lock(void)
{
	struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
	struct __user_cap_data_struct data[2];

	if (syscall(SYS_capget, &hdr, data))
		return -1;
	data[CAP_TO_INDEX(CAP_IPC_LOCK)].effective &= ~CAP_TO_MASK(CAP_IPC_LOCK);
	data[CAP_TO_INDEX(CAP_IPC_LOCK)].permitted &= ~CAP_TO_MASK(CAP_IPC_LOCK);
	return (int)syscall(SYS_capset, &hdr, data);
}

static void test_memlock_error(void **state)
{
	pid_t pid = fork();

	assert_true(pid >= 0);
	if (pid == 0) {
		struct rlimit rl = {1 << 20, 1 << 20};
		kvr_engine *e;
		kvr_mr *mr;
		size_t len = 64u << 20;
		uint8_t *m = kvt_alloc_mem(len);

		if (drop_ipc_lock() || setrlimit(RLIMIT_MEMLOCK, &rl))
			_exit(3);
		int erc = kvr_engine_create(NULL, &e);

		if (erc) {
			fprintf(stderr, "engine: %d\n", erc);
			_exit(4);
		}
		int rc = kvr_mem_register(e, m, len, 0, &mr);

		if (rc != -ENOMEM) {
			fprintf(stderr, "register: %d\n", rc);
			_exit(5);
		}
		if (!strstr(kvr_engine_errmsg(e), "RLIMIT_MEMLOCK"))
			_exit(6);
		/* a later registration that works leaves no stale message */
		if (kvr_mem_register(e, m, 4096, 0, &mr) || *kvr_engine_errmsg(e))
			_exit(7);
		kvr_engine_destroy(e);
		_exit(0);
	}
	int status;

	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	if (WEXITSTATUS(status) == 3)
		skip(); /* cannot drop the capability here */
	assert_int_equal(WEXITSTATUS(status), 0);
}

/* A listener that counts, tags each region, and fails on request. */
struct counting {
	struct kvr_mem_listener l;
	int added, removed, fail_after; /* fail the n-th added() (0: never) */
	int tag;
};

static int cnt_added(struct kvr_mem_listener *l, struct kvr_mr *mr)
{
	struct counting *c = (struct counting *)l;

	if (c->fail_after && c->added + 1 == c->fail_after)
		return -EIO;
	assert_null(mr->ext[l->slot]);
	mr->ext[l->slot] = &c->tag;
	c->added++;
	return 0;
}

static void cnt_removed(struct kvr_mem_listener *l, struct kvr_mr *mr)
{
	struct counting *c = (struct counting *)l;

	assert_ptr_equal(mr->ext[l->slot], &c->tag);
	mr->ext[l->slot] = NULL;
	c->removed++;
}

static void test_listeners(void **state)
{
	kvr_engine *e = kvt_engine();
	uint8_t *m = kvt_alloc_mem(16 * 4096);
	struct counting a = {.l = {.added = cnt_added, .removed = cnt_removed}};
	struct counting b = a, c = a;
	kvr_mr *mr[4];

	(void)state;
	assert_int_equal(kvr_mem_register(e, m, 4096, 0, &mr[0]), 0);
	assert_int_equal(kvr_mem_register(e, m + 4 * 4096, 4096, 0, &mr[1]), 0);
	/* joining sees the regions already there */
	assert_int_equal(kvr_mem_listen(e, &a.l), 0);
	assert_int_equal(a.added, 2);
	/* a join whose added() fails undoes what it did */
	b.fail_after = 2;
	assert_int_equal(kvr_mem_listen(e, &b.l), -EIO);
	assert_int_equal(b.added, 1);
	assert_int_equal(b.removed, 1);
	b.fail_after = 0;
	b.added = b.removed = 0;
	assert_int_equal(kvr_mem_listen(e, &b.l), 0);
	assert_int_equal(b.added, 2);
	assert_true(a.l.slot != b.l.slot);
	/* every slot is taken */
	assert_int_equal(kvr_mem_listen(e, &c.l), -ENOSPC);
	/* a registration that a listener refuses fails, and the other undoes */
	a.fail_after = 3;
	assert_int_equal(kvr_mem_register(e, m + 8 * 4096, 4096, 0, &mr[2]), -EIO);
	assert_int_equal(b.added - b.removed, 2);
	assert_null(kvr_mr_find(e, m + 8 * 4096, 1));
	a.fail_after = 0;
	assert_int_equal(kvr_mem_register(e, m + 8 * 4096, 4096, 0, &mr[2]), 0);
	assert_int_equal(a.added, 3);
	assert_int_equal(b.added - b.removed, 3);
	assert_int_equal(kvr_mem_deregister(e, mr[0]), 0);
	assert_int_equal(a.removed, 1);
	assert_int_equal(b.added - b.removed, 2);
	/* leaving undoes every region */
	kvr_mem_unlisten(e, &a.l);
	assert_int_equal(a.added - a.removed, 0);
	assert_int_equal(kvr_mem_listen(e, &c.l), 0);
	assert_int_equal(c.added, 2);
	assert_int_equal(c.l.slot, a.l.slot);
	kvr_mem_unlisten(e, &b.l);
	kvr_mem_unlisten(e, &c.l);
	assert_int_equal(b.added, b.removed);
	assert_int_equal(c.added, c.removed);
	assert_int_equal(kvr_mem_register(e, m + 12 * 4096, 4096, 0, &mr[3]), 0);
	assert_int_equal(c.added, 2); /* gone: no longer told */
	kvr_engine_destroy(e);
	kvt_free_mem(m, 16 * 4096);
}

/* A region is busy until the batch's callback has run, on every target:
 * a memory store finishes a put inside the submitting call, yet the caller
 * is only told the memory is its own again by the callback. */
struct busy_ctx {
	kvr_engine *e;
	kvr_mr *mr;
	int calls, rc_inside;
};

static void busy_cb(void *ctx, size_t n, const int64_t *res)
{
	struct busy_ctx *b = ctx;

	b->calls++;
	b->rc_inside = kvr_mem_deregister(b->e, b->mr);
}

static void test_busy_until_callback(void **state)
{
	kvr_engine *e = kvt_engine();
	uint8_t *m = kvt_alloc_mem(1 << 20);
	struct busy_ctx b = {e, NULL, 0, 0};
	kvr_target *t;
	kvr_sge sge = {m, 4096};
	kvr_obj o = {"k", 1, &sge, 1};

	assert_int_equal(kvr_mem_register(e, m, 1 << 20, 0, &b.mr), 0);
	assert_int_equal(kvr_store_open(e, "mem:4M", NULL, &t), 0);
	assert_int_equal(kvr_put(t, &o, 1, busy_cb, &b), 0);
	assert_int_equal(kvr_mem_deregister(e, b.mr), -EBUSY);
	while (!b.calls)
		assert_true(kvr_engine_poll(e, 1000) >= 0);
	assert_int_equal(b.rc_inside, -EBUSY); /* still the batch's inside its callback */
	assert_int_equal(kvr_mem_deregister(e, b.mr), 0);
	kvr_engine_destroy(e);
	kvt_free_mem(m, 1 << 20);
}

/* KVR_MEM_NO_PIN: no fixed buffer is made, so memory remapped under the
 * registration is read as it is now, not as the pages pinned at
 * registration (what a fixed buffer would still point at). */
static void test_no_pin_follows_remaps(void **state)
{
	kvr_engine *e = kvt_engine();
	const size_t len = 1 << 20;
	uint8_t *m = kvt_alloc_mem(len), *out = kvt_alloc_mem(len);
	kvr_mr *mr, *mo;
	kvr_target *t;
	char uri[600];
	const char *path = kvt_path("nopin");
	struct kvr_store_opts so = {
	    .size = sizeof(so), .flags = KVR_STORE_TRUNCATE, .capacity = 64 << 20};
	struct kvt_done d = {0};
	kvr_sge sge = {m, len}, so_sge = {out, len};
	kvr_obj a = {"a", 1, &sge, 1}, b = {"b", 1, &sge, 1}, gb = {"b", 1, &so_sge, 1};

	assert_int_equal(kvr_mem_register(e, m, len, KVR_MEM_NO_PIN, &mr), 0);
	assert_int_equal(mr->nfixed, 0);
	assert_int_equal(kvr_mem_register(e, out, len, 0, &mo), 0);
	assert_int_equal(kvr_mem_register(e, out, len, KVR_MEM_CUDA | KVR_MEM_NO_PIN, &mo),
			 -EINVAL);
	snprintf(uri, sizeof(uri), "file:%s", path);
	assert_int_equal(kvr_store_open(e, uri, &so, &t), 0);
	kvt_fill(m, len, 1);
	assert_int_equal(kvr_put(t, &a, 1, kvt_batch_cb, &d), 0);
	assert_int_equal(kvt_wait(e, &d, 10000), 1);
	assert_int_equal(d.results[0], (int64_t)len);
	/* the owner replaces the memory: new pages at the same address */
	assert_true(mmap(m, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
			 -1, 0) == m);
	kvt_fill(m, len, 2);
	d.calls = 0;
	assert_int_equal(kvr_put(t, &b, 1, kvt_batch_cb, &d), 0);
	assert_int_equal(kvt_wait(e, &d, 10000), 1);
	d.calls = 0;
	assert_int_equal(kvr_get(t, &gb, 1, kvt_batch_cb, &d), 0);
	assert_int_equal(kvt_wait(e, &d, 10000), 1);
	assert_int_equal(d.results[0], (int64_t)len);
	assert_true(kvt_check(out, len, 2));
	assert_int_equal(kvr_target_close(t), 0);
	kvr_engine_destroy(e);
	kvt_free_mem(m, len);
	kvt_free_mem(out, len);
	kvt_unlink(path);
}

/* A file put or get of memory in the table; returns its result. */
static int64_t file_op(kvr_engine *e, kvr_target *t, enum kvr_op op, const char *key, void *m,
		       size_t len)
{
	kvr_sge sge = {m, len};
	kvr_obj o = {key, strlen(key), &sge, 1};
	struct kvt_done d = {0};

	assert_int_equal(kvr_submit(t, op, &o, 1, 0, kvt_batch_cb, &d), 0);
	assert_int_equal(kvt_wait(e, &d, 10000), 1);
	return d.results[0];
}

/* kvr_mem_register_deferred: the slot is taken at once and I/O takes the
 * plain path, exact, until kvr_mr_pin_piece fills it; then the fixed one.
 * Deregistering gives the slot back either way. */
static void test_deferred_pin(void **state)
{
	kvr_engine *e = kvt_engine();
	const size_t len = 1 << 20;
	uint8_t *m = kvt_alloc_mem(len);
	uint32_t nfree = e->nfree_slots;
	kvr_mr *mr;
	kvr_target *t;
	char uri[600];
	const char *path = kvt_path("deferred");
	struct kvr_store_opts so = {
	    .size = sizeof(so), .flags = KVR_STORE_TRUNCATE, .capacity = 64 << 20};
	struct kvr_stats st = {.size = sizeof(st)};

	assert_int_equal(kvr_mem_register_deferred(e, m, len, &mr), 0);
	assert_int_equal(mr->nfixed, 1);
	assert_int_equal(e->nfree_slots, nfree - 1);
	assert_int_equal(kvr_mr_slot(mr, m), -1);
	snprintf(uri, sizeof(uri), "file:%s", path);
	assert_int_equal(kvr_store_open(e, uri, &so, &t), 0);
	kvt_fill(m, len, 1);
	assert_int_equal(file_op(e, t, KVR_OP_PUT, "a", m, len), (int64_t)len);
	assert_int_equal(kvr_target_stats(t, &st), 0);
	assert_int_equal(st.fixed_ios, 0);
	assert_true(st.plain_ios > 0);

	assert_int_equal(kvr_mr_pin_piece(e, mr, 0), 0);
	assert_true(kvr_mr_slot(mr, m) >= 0);
	assert_int_equal(kvr_mr_pin_piece(e, mr, 0), 0); /* pinned already */
	assert_int_equal(kvr_mr_pin_piece(e, mr, 1), 0); /* no such piece */
	kvt_fill(m, len, 2);
	assert_int_equal(file_op(e, t, KVR_OP_PUT, "b", m, len), (int64_t)len);
	memset(m, 0, len);
	assert_int_equal(file_op(e, t, KVR_OP_GET, "a", m, len), (int64_t)len);
	assert_true(kvt_check(m, len, 1));
	assert_int_equal(kvr_target_stats(t, &st), 0);
	assert_true(st.fixed_ios > 0);
	assert_int_equal(kvr_target_close(t), 0);
	assert_int_equal(kvr_mem_deregister(e, mr), 0);
	assert_int_equal(e->nfree_slots, nfree);

	/* never pinned: the reserved slot comes back as well */
	assert_int_equal(kvr_mem_register_deferred(e, m, len, &mr), 0);
	assert_int_equal(kvr_mem_deregister(e, mr), 0);
	assert_int_equal(e->nfree_slots, nfree);
	kvr_engine_destroy(e);
	kvt_free_mem(m, len);
	kvt_unlink(path);
}

/* A listener that records the pieces it hears of. */
struct piece_log {
	struct kvr_mem_listener l;
	int added, calls;
	uint32_t last;
};

static int pl_added(struct kvr_mem_listener *l, struct kvr_mr *mr)
{
	struct piece_log *pl = (struct piece_log *)l;

	(void)mr;
	pl->added++;
	return 0;
}

static void pl_removed(struct kvr_mem_listener *l, struct kvr_mr *mr)
{
	(void)l;
	(void)mr;
}

static void pl_piece(struct kvr_mem_listener *l, struct kvr_mr *mr, uint32_t i)
{
	struct piece_log *pl = (struct piece_log *)l;

	assert_true(kvr_mr_piece_ready(mr, i)); /* marked before the listeners run */
	pl->calls++;
	pl->last = i;
}

/* A deferred region is added with no piece ready; each piece is heard of
 * once, when kvr_mr_pin_piece marks it; a plain region is ready all over
 * and has no piece to hear of. */
static void test_piece_ready_listener(void **state)
{
	kvr_engine *e = kvt_engine();
	const size_t len = 1 << 20;
	uint8_t *m = kvt_alloc_mem(len);
	struct piece_log pl = {
	    .l = {.added = pl_added, .removed = pl_removed, .piece_ready = pl_piece}};
	kvr_mr *mr;

	(void)state;
	assert_int_equal(kvr_mem_listen(e, &pl.l), 0);
	assert_int_equal(kvr_mem_register_deferred(e, m, len, &mr), 0);
	assert_int_equal(pl.added, 1);
	assert_int_equal(kvr_mr_npieces(mr), 1);
	assert_false(kvr_mr_piece_ready(mr, 0));
	assert_int_equal(kvr_mr_pin_piece(e, mr, 0), 0);
	assert_true(kvr_mr_piece_ready(mr, 0));
	assert_int_equal(pl.calls, 1);
	assert_int_equal(pl.last, 0);
	assert_int_equal(kvr_mr_pin_piece(e, mr, 0), 0); /* ready already */
	assert_int_equal(kvr_mr_pin_piece(e, mr, 1), 0); /* no such piece */
	assert_int_equal(pl.calls, 1);
	assert_int_equal(kvr_mem_deregister(e, mr), 0);

	assert_int_equal(kvr_mem_register(e, m, len, 0, &mr), 0);
	assert_true(kvr_mr_piece_ready(mr, 0));
	assert_int_equal(kvr_mr_pin_piece(e, mr, 0), 0);
	assert_int_equal(pl.calls, 1);
	assert_int_equal(kvr_mem_deregister(e, mr), 0);
	kvr_mem_unlisten(e, &pl.l);
	kvr_engine_destroy(e);
	kvt_free_mem(m, len);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_lookup),
	    cmocka_unit_test(test_large_region_split),
	    cmocka_unit_test(test_memlock_error),
	    cmocka_unit_test(test_listeners),
	    cmocka_unit_test(test_busy_until_callback),
	    cmocka_unit_test(test_no_pin_follows_remaps),
	    cmocka_unit_test(test_deferred_pin),
	    cmocka_unit_test(test_piece_ready_listener),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
