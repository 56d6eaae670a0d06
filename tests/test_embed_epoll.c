/* SPDX-License-Identifier: MIT */
/*
 * Embedding: a host epoll loop that watches kvr_engine_fd() and calls
 * kvr_engine_poll(e, 0) until it returns 0 drives file and memory store
 * batches to completion, and a wake from another thread reaches it.
 */
#include "fixtures.h"

#include <pthread.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#define ARENA  (8u << 20)
#define NBATCH 32

struct host {
	kvr_engine *e;
	int ep;
	int done;
	int wakes;
};

static void cb(void *ctx, size_t n, const int64_t *res)
{
	struct host *h = ctx;

	for (size_t i = 0; i < n; i++)
		assert_true(res[i] > 0);
	h->done++;
}

/* epoll_wait for one event, asked again when a signal cut it short (the
 * test runner's processes may get one; the answer is what counts). */
static int epoll_wait_intr(int ep, struct epoll_event *ev, int ms)
{
	int rc;

	do
		rc = epoll_wait(ep, ev, 1, ms);
	while (rc < 0 && errno == EINTR);
	return rc;
}

/* One pass of the host's loop: wait on epoll, drain the engine. */
static int host_round(struct host *h, int timeout_ms)
{
	struct epoll_event ev;
	int n = epoll_wait_intr(h->ep, &ev, timeout_ms), ran = 0, r;

	if (n <= 0)
		return n;
	while ((r = kvr_engine_poll(h->e, 0)) > 0)
		ran += r;
	assert_true(r == 0);
	return ran;
}

static void test_epoll_drives_batches(void **state)
{
	struct host h = {0};
	kvr_target *mem, *file;
	uint8_t *buf = kvt_alloc_mem(ARENA);
	kvr_mr *mr;
	char uri[600], path[512];
	struct kvr_store_opts so = {
	    .size = sizeof(so), .flags = KVR_STORE_TRUNCATE, .capacity = 64 << 20};
	struct epoll_event ev = {.events = EPOLLIN};

	h.e = kvt_engine();
	snprintf(path, sizeof(path), "%s", kvt_path("embed"));
	snprintf(uri, sizeof(uri), "file:%s", path);
	assert_int_equal(kvr_mem_register(h.e, buf, ARENA, 0, &mr), 0);
	assert_int_equal(kvr_store_open(h.e, uri, &so, &file), 0);
	assert_int_equal(kvr_store_open(h.e, "mem:16M", NULL, &mem), 0);
	h.ep = epoll_create1(0);
	assert_int_equal(epoll_ctl(h.ep, EPOLL_CTL_ADD, kvr_engine_fd(h.e), &ev), 0);

	kvr_sge sge[NBATCH];
	kvr_obj objs[NBATCH];
	char keys[NBATCH][16];

	for (int i = 0; i < NBATCH; i++) {
		snprintf(keys[i], sizeof(keys[i]), "e%d", i);
		sge[i] = (kvr_sge){buf + i * 131072, 131072};
		objs[i] = (kvr_obj){keys[i], strlen(keys[i]), &sge[i], 1};
	}
	kvt_fill(buf, ARENA, 4);
	/* one batch per object on the file store, one on the mem store */
	for (int i = 0; i < NBATCH; i++)
		assert_int_equal(kvr_put(file, &objs[i], 1, cb, &h), 0);
	assert_int_equal(kvr_put(mem, objs, NBATCH, cb, &h), 0);
	for (int i = 0; i < 200 && h.done < NBATCH + 1; i++)
		assert_true(host_round(&h, 1000) >= 0);
	assert_int_equal(h.done, NBATCH + 1);
	/* gets back, through the same loop */
	memset(buf, 0, ARENA);
	h.done = 0;
	assert_int_equal(kvr_get(file, objs, NBATCH, cb, &h), 0);
	for (int i = 0; i < 200 && h.done < 1; i++)
		assert_true(host_round(&h, 1000) >= 0);
	assert_int_equal(h.done, 1);
	assert_true(kvt_check(buf, NBATCH * 131072, 4));
	/* nothing pending: after one more drain the fd is not readable at all
	 * (epoll_wait times out), not merely readable with nothing to run */
	while (kvr_engine_poll(h.e, 0) > 0)
		;
	struct epoll_event quiet;

	assert_int_equal(epoll_wait_intr(h.ep, &quiet, 50), 0);
	kvr_engine_destroy(h.e);
	close(h.ep);
	kvt_free_mem(buf, ARENA);
	kvt_unlink(path);
}

static void *waker(void *arg)
{
	kvr_engine_wake(arg);
	return NULL;
}

static void test_wake_reaches_host(void **state)
{
	struct host h = {0};
	pthread_t th;
	struct epoll_event ev = {.events = EPOLLIN};

	h.e = kvt_engine();
	h.ep = epoll_create1(0);
	assert_int_equal(epoll_ctl(h.ep, EPOLL_CTL_ADD, kvr_engine_fd(h.e), &ev), 0);
	assert_int_equal(pthread_create(&th, NULL, waker, h.e), 0);
	assert_int_equal(epoll_wait_intr(h.ep, &ev, 5000), 1);
	pthread_join(th, NULL);
	while (kvr_engine_poll(h.e, 0) > 0)
		;
	kvr_engine_destroy(h.e);
	close(h.ep);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_epoll_drives_batches),
	    cmocka_unit_test(test_wake_reaches_host),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
