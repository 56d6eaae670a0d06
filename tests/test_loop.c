/* SPDX-License-Identifier: MIT */
/* engine/loop.c: creation, options, poll, run/stop, wake, next_timeout. */
#include "fixtures.h"
#include "engine/engine.h"

#include <pthread.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

static void test_create_defaults(void **state)
{
	kvr_engine *e = kvt_engine();

	assert_true(kvr_engine_fd(e) >= 0);
	assert_int_equal(kvr_engine_poll(e, 0), 0);
	assert_int_equal(kvr_engine_next_timeout(e), -1);
	assert_string_equal(kvr_engine_errmsg(e), "");
	kvr_engine_destroy(e);
	kvr_engine_destroy(NULL);
}

static void test_options(void **state)
{
	struct kvr_engine_opts o;
	kvr_engine *e = NULL;

	memset(&o, 0, sizeof(o));
	assert_int_equal(kvr_engine_create(&o, &e), -EINVAL); /* size unset */
	o.size = 4;
	assert_int_equal(kvr_engine_create(&o, &e), -EINVAL);
	o.size = sizeof(o);
	o.flags = 0x80000000u;
	assert_int_equal(kvr_engine_create(&o, &e), -EINVAL);
	o.flags = 0;
	o.ring_entries = 1u << 20;
	assert_int_equal(kvr_engine_create(&o, &e), -EINVAL);
	assert_int_equal(kvr_engine_create(NULL, NULL), -EINVAL);

	/* The fallback path: no DEFER_TASKRUN, still a working engine. */
	memset(&o, 0, sizeof(o));
	o.size = sizeof(o);
	o.flags = KVR_ENGINE_NO_DEFER_TASKRUN;
	o.ring_entries = 64;
	o.max_objects = 128;
	assert_int_equal(kvr_engine_create(&o, &e), 0);
	assert_false(e->setup_flags & IORING_SETUP_DEFER_TASKRUN);
	assert_int_equal(kvr_engine_poll(e, 0), 0);
	kvr_engine_destroy(e);

	/* The default path takes DEFER_TASKRUN where the kernel has it (6.1+). */
	e = kvt_engine();
	if (!(e->setup_flags & IORING_SETUP_DEFER_TASKRUN))
		print_message("kernel lacks DEFER_TASKRUN; fell back to 0x%x\n", e->setup_flags);
	kvr_engine_destroy(e);
}

static int64_t ms_since(struct timespec *t0)
{
	struct timespec t1;

	clock_gettime(CLOCK_MONOTONIC, &t1);
	return (t1.tv_sec - t0->tv_sec) * 1000 + (t1.tv_nsec - t0->tv_nsec) / 1000000;
}

static void test_poll_timeout(void **state)
{
	kvr_engine *e = kvt_engine();
	struct timespec t0;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	assert_int_equal(kvr_engine_poll(e, 50), 0);
	int64_t ms = ms_since(&t0);

	assert_true(ms >= 45 && ms < 1000);
	kvr_engine_destroy(e);
}

static void *waker(void *arg)
{
	struct timespec ts = {0, 30 * 1000000};

	nanosleep(&ts, NULL); /* let the main thread block first */
	kvr_engine_stop(arg);
	kvr_engine_wake(arg);
	return NULL;
}

static void test_wake_from_thread(void **state)
{
	kvr_engine *e = kvt_engine();
	pthread_t th;
	struct timespec t0;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	assert_int_equal(pthread_create(&th, NULL, waker, e), 0);
	/* run() blocks in the ring until the wake arrives */
	assert_int_equal(kvr_engine_run(e), 0);
	assert_true(ms_since(&t0) < 5000);
	pthread_join(th, NULL);

	/* a wake makes the host fd readable too */
	assert_int_equal(kvr_engine_wake(e), 0);
	uint64_t v = 0;

	assert_int_equal(read(kvr_engine_fd(e), &v, sizeof(v)), sizeof(v));
	assert_true(v >= 1);
	assert_int_equal(kvr_engine_wake(NULL), -EINVAL);
	kvr_engine_destroy(e);
}

struct stopper {
	kvr_engine *e;
	int calls;
	int nested_rc;
};

static void stop_cb(void *ctx, size_t n, const int64_t *res)
{
	struct stopper *s = ctx;

	s->calls++;
	s->nested_rc = kvr_engine_poll(s->e, 0); /* not allowed from a callback */
	kvr_engine_stop(s->e);
}

static void test_run_stop_from_callback(void **state)
{
	kvr_engine *e = kvt_engine();
	kvr_target *t;
	struct stopper s = {e, 0, 0};
	uint8_t *buf = kvt_alloc_mem(4096);
	kvr_mr *mr;
	kvr_sge sge = {buf, 4096};
	kvr_obj o = {"k", 1, &sge, 1};

	assert_int_equal(kvr_mem_register(e, buf, 4096, 0, &mr), 0);
	assert_int_equal(kvr_store_open(e, "mem:1M", NULL, &t), 0);
	assert_int_equal(kvr_put(t, &o, 1, stop_cb, &s), 0);
	assert_int_equal(s.calls, 0); /* never from inside the submit call */
	assert_int_equal(kvr_engine_next_timeout(e), 0);
	assert_int_equal(kvr_engine_run(e), 0);
	assert_int_equal(s.calls, 1);
	assert_int_equal(s.nested_rc, -EBUSY);
	kvr_engine_destroy(e);
	kvt_free_mem(buf, 4096);
}

/* Work handed over by another thread: it bumps `queued` and wakes; the
 * wake hook, on the engine thread inside kvr_engine_run(), submits one put
 * per queued item; the last completion stops the loop. */
struct handover {
	kvr_engine *e;
	kvr_target *t;
	kvr_obj o;
	unsigned queued, submitted, done, hook_calls;
	int nested_rc;
};

static void handover_done(void *ctx, size_t n, const int64_t *res)
{
	struct handover *h = ctx;

	assert_int_equal(res[0], 4096);
	if (++h->done == 100)
		kvr_engine_stop(h->e);
}

static void handover_hook(void *ctx)
{
	struct handover *h = ctx;
	unsigned q = __atomic_load_n(&h->queued, __ATOMIC_ACQUIRE);

	h->hook_calls++;
	h->nested_rc = kvr_engine_poll(h->e, 0);
	for (; h->submitted < q; h->submitted++)
		assert_int_equal(kvr_put(h->t, &h->o, 1, handover_done, h), 0);
}

static void *handover_producer(void *arg)
{
	struct handover *h = arg;

	for (int i = 0; i < 100; i++) {
		__atomic_add_fetch(&h->queued, 1, __ATOMIC_RELEASE);
		kvr_engine_wake(h->e);
	}
	return NULL;
}

static void test_wake_hook(void **state)
{
	struct handover h = {0};
	uint8_t *buf = kvt_alloc_mem(4096);
	kvr_sge sge = {buf, 4096};
	kvr_mr *mr;
	pthread_t th;

	h.e = kvt_engine();
	h.o = (kvr_obj){"k", 1, &sge, 1};
	assert_int_equal(kvr_mem_register(h.e, buf, 4096, 0, &mr), 0);
	assert_int_equal(kvr_store_open(h.e, "mem:1M", NULL, &h.t), 0);
	assert_int_equal(kvr_engine_set_wake_cb(NULL, handover_hook, &h), -EINVAL);
	assert_int_equal(kvr_engine_set_wake_cb(h.e, handover_hook, &h), 0);
	assert_int_equal(pthread_create(&th, NULL, handover_producer, &h), 0);
	assert_int_equal(kvr_engine_run(h.e), 0);
	pthread_join(th, NULL);
	assert_int_equal(h.done, 100);
	assert_true(h.hook_calls >= 1 && h.hook_calls <= 100);
	assert_int_equal(h.nested_rc, -EBUSY);
	/* removed: a wake no longer calls it */
	assert_int_equal(kvr_engine_set_wake_cb(h.e, NULL, NULL), 0);
	unsigned calls = h.hook_calls;

	assert_int_equal(kvr_engine_wake(h.e), 0);
	assert_true(kvr_engine_poll(h.e, 100) >= 0);
	assert_int_equal(h.hook_calls, calls);
	kvr_engine_destroy(h.e);
	kvt_free_mem(buf, 4096);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_create_defaults),	   cmocka_unit_test(test_options),
	    cmocka_unit_test(test_poll_timeout),	   cmocka_unit_test(test_wake_from_thread),
	    cmocka_unit_test(test_run_stop_from_callback), cmocka_unit_test(test_wake_hook),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
