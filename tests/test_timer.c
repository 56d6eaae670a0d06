/* SPDX-License-Identifier: MIT */
/* engine/timer.c: the deadline heap. */
#include "fixtures.h"
#include "engine/timer.h"

#include <stdlib.h>

static int fired_order[1000];
static int nfired;

struct tt {
	struct kvr_timer t;
	int id;
};

static void on_fire(struct kvr_timer *t)
{
	fired_order[nfired++] = ((struct tt *)t)->id;
}

static void test_order(void **state)
{
	struct kvr_timer_heap h;
	struct tt v[1000];
	uint64_t seed = 7;

	assert_int_equal(kvr_timer_heap_init(&h, 4), 0);
	nfired = 0;
	for (int i = 0; i < 1000; i++) {
		v[i].t.pos = 0;
		v[i].t.fn = on_fire;
		v[i].id = i;
		assert_int_equal(kvr_timer_add(&h, &v[i].t, kvt_rand(&seed) % 100000), 0);
	}
	/* remove every third one, re-arm every fifth */
	for (int i = 0; i < 1000; i += 3)
		kvr_timer_del(&h, &v[i].t);
	for (int i = 0; i < 1000; i += 5)
		assert_int_equal(kvr_timer_add(&h, &v[i].t, kvt_rand(&seed) % 100000), 0);
	int expect = 0;

	for (int i = 0; i < 1000; i++)
		expect += v[i].t.pos != 0;
	assert_int_equal(kvr_timer_run(&h, 50000) + kvr_timer_run(&h, UINT64_MAX), expect);
	assert_int_equal(nfired, expect);
	for (int i = 1; i < nfired; i++)
		assert_true(v[fired_order[i - 1]].t.when_ns <= v[fired_order[i]].t.when_ns);
	assert_null(kvr_timer_first(&h));
	kvr_timer_heap_fini(&h);
}

static void test_partial_run(void **state)
{
	struct kvr_timer_heap h;
	struct tt a = {.t = {.fn = on_fire}, .id = 1}, b = {.t = {.fn = on_fire}, .id = 2};

	assert_int_equal(kvr_timer_heap_init(&h, 0), 0);
	nfired = 0;
	kvr_timer_add(&h, &a.t, 100);
	kvr_timer_add(&h, &b.t, 200);
	assert_int_equal(kvr_timer_run(&h, 99), 0);
	assert_int_equal(kvr_timer_run(&h, 150), 1);
	assert_int_equal(fired_order[0], 1);
	assert_ptr_equal(kvr_timer_first(&h), &b.t);
	kvr_timer_del(&h, &b.t);
	kvr_timer_del(&h, &b.t); /* twice is harmless */
	assert_null(kvr_timer_first(&h));
	kvr_timer_heap_fini(&h);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_order),
	    cmocka_unit_test(test_partial_run),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
