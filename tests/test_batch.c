/* SPDX-License-Identifier: MIT */
/*
 * engine/batch.c: dispatch through the ops table, the request pool, queuing
 * of batches larger than the free pool, callbacks that submit, and batch
 * deadlines (with a test target whose I/O never finishes on its own).
 */
#include "fixtures.h"
#include "engine/engine.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- a target whose every object is a read from an empty pipe ---- */
struct stall_target {
	kvr_target t;
	int pfd[2];
	bool cancel;
	uint8_t sink[64];
};

struct stall_req {
	struct kvr_io io;
	struct kvr_req *r;
};

static void stall_done(struct kvr_io *io, int res, uint32_t flags)
{
	struct stall_req *sr = (struct stall_req *)io;

	kvr_req_done(sr->r, res);
}

static void stall_op(kvr_target *t, struct kvr_req **reqs, uint32_t n)
{
	struct stall_target *st = (struct stall_target *)t;

	for (uint32_t i = 0; i < n; i++) {
		struct stall_req *sr = (struct stall_req *)reqs[i]->priv;
		struct io_uring_sqe *sqe = kvr_sqe(t->e);

		sr->io.fn = stall_done;
		sr->r = reqs[i];
		io_uring_prep_read(sqe, st->pfd[0], st->sink, 1, 0);
		io_uring_sqe_set_data(sqe, &sr->io);
	}
}

static void stall_cancel(kvr_target *t, struct kvr_req *r)
{
	struct io_uring_sqe *sqe = kvr_sqe(t->e);

	io_uring_prep_cancel(sqe, r->priv, 0);
	io_uring_sqe_set_data(sqe, NULL);
}

static int stall_close(kvr_target *t)
{
	struct stall_target *st = (struct stall_target *)t;
	uint8_t bytes[4096];

	/* unblock every pending read, then wait for them */
	memset(bytes, 'x', sizeof(bytes));
	if (write(st->pfd[1], bytes, sizeof(bytes)) < 0)
		return -errno;
	int rc = kvr_engine_drain(t->e, &t->inflight);

	close(st->pfd[0]);
	close(st->pfd[1]);
	return rc;
}

static struct kvr_target_ops stall_ops = {
    .name = "stall",
    .put = stall_op,
    .get = stall_op,
    .exists = stall_op,
    .remove = stall_op,
    .close = stall_close,
};

static kvr_target *stall_open(kvr_engine *e, bool with_cancel)
{
	struct stall_target *st = calloc(1, sizeof(*st));

	assert_non_null(st);
	assert_int_equal(pipe(st->pfd), 0);
	stall_ops.cancel = with_cancel ? stall_cancel : NULL;
	kvr_target_init(&st->t, e, &stall_ops, 0);
	return &st->t;
}

static void test_deadline_cancels(void **state)
{
	kvr_engine *e = kvt_engine();
	kvr_target *t = stall_open(e, true);
	kvr_obj objs[3] = {{"a", 1, NULL, 0}, {"b", 1, NULL, 0}, {"c", 1, NULL, 0}};
	struct kvt_done d = {0};
	uint64_t t0 = kvr_now_ns();

	assert_int_equal(kvr_submit(t, KVR_OP_EXISTS, objs, 3, 100, kvt_batch_cb, &d), 0);
	int nt = kvr_engine_next_timeout(e);

	assert_true(nt > 0 && nt <= 100);
	assert_int_equal(kvt_wait(e, &d, 5000), 1);
	uint64_t ms = (kvr_now_ns() - t0) / 1000000;

	assert_true(ms >= 95 && ms < 2000);
	for (int i = 0; i < 3; i++)
		assert_int_equal(d.results[i], -ETIMEDOUT);
	struct kvr_stats st = {.size = sizeof(st)};

	kvr_engine_stats(e, &st);
	assert_int_equal(st.timeouts, 3);
	assert_int_equal(st.batches, 1);
	kvr_engine_destroy(e);
}

static void test_deadline_without_cancel(void **state)
{
	kvr_engine *e = kvt_engine();
	kvr_target *t = stall_open(e, false);
	struct stall_target *st = (struct stall_target *)t;
	kvr_obj o = {"a", 1, NULL, 0};
	struct kvt_done d = {0};

	assert_int_equal(kvr_submit(t, KVR_OP_EXISTS, &o, 1, 30, kvt_batch_cb, &d), 0);
	/* the deadline passes but the target cannot cancel: the callback waits
	 * until the I/O lets go of the buffers, then reports -ETIMEDOUT */
	assert_int_equal(kvt_wait(e, &d, 200), 0);
	assert_int_equal(write(st->pfd[1], "z", 1), 1);
	assert_int_equal(kvt_wait(e, &d, 5000), 1);
	assert_int_equal(d.results[0], -ETIMEDOUT);
	kvr_engine_destroy(e);
}

static void test_close_completes_inflight(void **state)
{
	kvr_engine *e = kvt_engine();
	kvr_target *t = stall_open(e, true);
	kvr_obj o = {"a", 1, NULL, 0};
	struct kvt_done d = {0};

	assert_int_equal(kvr_exists(t, &o, 1, kvt_batch_cb, &d), 0);
	assert_int_equal(kvr_target_close(t), 0);
	assert_int_equal(d.calls, 0); /* callbacks come from poll, not close */
	assert_int_equal(kvr_engine_poll(e, 0), 1);
	assert_int_equal(d.results[0], 1);
	assert_int_equal(kvr_exists(t, &o, 1, kvt_batch_cb, &d), -EBADF);
	assert_int_equal(kvr_target_close(t), -EBADF);
	kvr_engine_destroy(e);
}

static void test_destroy_reports_pending(void **state)
{
	struct kvr_engine_opts opts = {.size = sizeof(opts), .max_objects = 2};
	kvr_engine *e;
	kvr_obj objs[2] = {{"a", 1, NULL, 0}, {"b", 1, NULL, 0}};
	struct kvt_done d1 = {0}, d2 = {0};

	assert_int_equal(kvr_engine_create(&opts, &e), 0);
	kvr_target *t = stall_open(e, true);

	assert_int_equal(kvr_exists(t, objs, 2, kvt_batch_cb, &d1), 0);
	assert_int_equal(kvr_exists(t, objs, 2, kvt_batch_cb, &d2), 0); /* queued: pool full */
	kvr_engine_destroy(e);
	assert_int_equal(d1.calls, 1);
	assert_int_equal(d2.calls, 1);
	assert_int_equal(d2.results[0], -ECANCELED);
}

/* ---- real stores: queuing and chained submissions ---- */
struct chain {
	kvr_target *t;
	kvr_obj *o;
	int left;
	int calls;
	int64_t last;
};

static void chain_cb(void *ctx, size_t n, const int64_t *res)
{
	struct chain *c = ctx;

	c->calls++;
	c->last = res[0];
	if (--c->left > 0)
		assert_int_equal(kvr_put(c->t, c->o, 1, chain_cb, c), 0);
}

static void test_callback_submits(void **state)
{
	kvr_engine *e = kvt_engine();
	kvr_target *t;
	uint8_t *buf = kvt_alloc_mem(8192);
	kvr_mr *mr;
	kvr_sge sge = {buf, 8192};
	kvr_obj o = {"chain", 5, &sge, 1};
	struct chain c = {0};

	assert_int_equal(kvr_mem_register(e, buf, 8192, 0, &mr), 0);
	assert_int_equal(kvr_store_open(e, "mem:1M", NULL, &t), 0);
	c.t = t;
	c.o = &o;
	c.left = 10;
	assert_int_equal(kvr_put(t, &o, 1, chain_cb, &c), 0);
	/* each poll runs only what had finished when it started */
	for (int i = 0; i < 20 && c.calls < 10; i++)
		assert_true(kvr_engine_poll(e, 100) >= 0);
	assert_int_equal(c.calls, 10);
	assert_int_equal(c.last, 8192);
	kvr_engine_destroy(e);
	kvt_free_mem(buf, 8192);
}

static void test_queue_beyond_pool(void **state)
{
	struct kvr_engine_opts opts = {.size = sizeof(opts), .max_objects = 8};
	kvr_engine *e;
	kvr_target *t, *ft;
	uint8_t *buf = kvt_alloc_mem(1 << 20);
	kvr_mr *mr;
	kvr_sge sge[8];
	kvr_obj objs[8];
	char keys[8][8];
	struct kvt_done d[4] = {0};
	const char *path = kvt_path("queue");
	struct kvr_store_opts so = {
	    .size = sizeof(so), .flags = KVR_STORE_TRUNCATE, .capacity = 64 << 20};

	assert_int_equal(kvr_engine_create(&opts, &e), 0);
	assert_int_equal(kvr_mem_register(e, buf, 1 << 20, 0, &mr), 0);
	assert_int_equal(kvr_store_open(e, "mem:4M", NULL, &t), 0);
	char uri[512];

	snprintf(uri, sizeof(uri), "file:%s", path);
	assert_int_equal(kvr_store_open(e, uri, &so, &ft), 0);
	for (int i = 0; i < 8; i++) {
		snprintf(keys[i], sizeof(keys[i]), "k%d", i);
		sge[i].addr = buf + i * 65536;
		sge[i].len = 65536;
		objs[i] = (kvr_obj){keys[i], strlen(keys[i]), &sge[i], 1};
	}
	assert_int_equal(kvr_put(t, objs, 9, kvt_batch_cb, &d[0]), -E2BIG);
	/* four full-pool batches: three wait for slots, and all complete */
	assert_int_equal(kvr_put(ft, objs, 8, kvt_batch_cb, &d[0]), 0);
	assert_int_equal(kvr_put(t, objs, 8, kvt_batch_cb, &d[1]), 0);
	assert_int_equal(kvr_get(ft, objs, 8, kvt_batch_cb, &d[2]), 0);
	assert_int_equal(kvr_exists(t, objs, 8, kvt_batch_cb, &d[3]), 0);
	for (int i = 0; i < 4; i++)
		assert_int_equal(kvt_wait(e, &d[i], 5000), 1);
	for (int i = 0; i < 8; i++) {
		assert_int_equal(d[0].results[i], 65536);
		assert_int_equal(d[1].results[i], 65536);
		assert_int_equal(d[2].results[i], 65536);
		assert_int_equal(d[3].results[i], 65536);
	}
	kvr_engine_destroy(e);
	kvt_unlink(path);
	kvt_free_mem(buf, 1 << 20);
}

/* struct kvr_stats can grow: the library fills as much of it as the
 * caller's size says and never writes past it. */
static void test_stats_size(void **state)
{
	kvr_engine *e = kvt_engine();
	kvr_target *t;
	struct {
		struct kvr_stats st;
		uint8_t guard[64];
	} old;
	struct kvr_stats full = {.size = sizeof(full)}, none = {0};
	uint8_t buf[4096] = {0};
	kvr_mr *mr;
	kvr_sge sge = {buf, sizeof(buf)};
	kvr_obj o = {"k", 1, &sge, 1};
	struct kvt_done d = {0};
	const uint32_t small = offsetof(struct kvr_stats, lat_us);

	assert_int_equal(kvr_mem_register(e, buf, sizeof(buf), 0, &mr), 0);
	assert_int_equal(kvr_store_open(e, "mem:1M", NULL, &t), 0);
	assert_int_equal(kvr_put(t, &o, 1, kvt_batch_cb, &d), 0);
	assert_int_equal(kvt_wait(e, &d, 5000), 1);
	assert_int_equal(kvr_engine_stats(e, &none), -EINVAL);
	assert_int_equal(kvr_target_stats(t, &none), -EINVAL);
	assert_int_equal(kvr_engine_stats(e, &full), 0);
	assert_int_equal(full.size, sizeof(full));
	assert_int_equal(full.puts, 1);
	/* an older, smaller struct: filled up to its end, not one byte past */
	memset(&old, 0xEE, sizeof(old));
	old.st.size = small;
	assert_int_equal(kvr_target_stats(t, &old.st), 0);
	assert_int_equal(old.st.size, small);
	assert_int_equal(old.st.puts, 1);
	for (size_t i = small; i < sizeof(old); i++)
		assert_int_equal(((uint8_t *)&old)[i], 0xEE);
	/* a newer, larger one: told how much was filled */
	memset(&old, 0, sizeof(old));
	old.st.size = sizeof(old);
	assert_int_equal(kvr_engine_stats(e, &old.st), 0);
	assert_int_equal(old.st.size, sizeof(struct kvr_stats));
	kvr_engine_destroy(e);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_deadline_cancels),
	    cmocka_unit_test(test_deadline_without_cancel),
	    cmocka_unit_test(test_close_completes_inflight),
	    cmocka_unit_test(test_destroy_reports_pending),
	    cmocka_unit_test(test_callback_submits),
	    cmocka_unit_test(test_queue_beyond_pool),
	    cmocka_unit_test(test_stats_size),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
