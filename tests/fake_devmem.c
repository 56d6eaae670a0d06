/* SPDX-License-Identifier: MIT */
/* A copy engine on a thread, for testing device memory staging. */
#include "fake_devmem.h"
#include "fixtures.h"
#include "transport/stage.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct job {
	struct job *next;
	void *dst;
	const void *src;
	size_t len;
	struct kvr_stage *st; /* a marker */
	bool fail;
};

struct fake_priv {
	struct fake_dev d;
	pthread_t th;
	pthread_mutex_t mu;
	pthread_cond_t cv, idle;
	struct job *head, *tail;
	bool quit, busy;
	uint64_t queued;
};

static void *worker(void *arg)
{
	struct fake_priv *p = arg;

	pthread_mutex_lock(&p->mu);
	for (;;) {
		struct job *j;

		while (!p->head && !p->quit)
			pthread_cond_wait(&p->cv, &p->mu);
		if (!p->head)
			break;
		j = p->head;
		p->head = j->next;
		if (!p->head)
			p->tail = NULL;
		p->busy = true;
		pthread_mutex_unlock(&p->mu);
		if (j->st) {
			p->d.marks++;
			kvr_stage_signal(j->st);
		} else {
			if (p->d.delay_us) {
				struct timespec ts = {0, (long)p->d.delay_us * 1000};

				nanosleep(&ts, NULL);
			}
			memcpy(j->dst, j->src, j->len);
			p->d.copies++;
			p->d.bytes += j->len;
		}
		free(j);
		pthread_mutex_lock(&p->mu);
		p->busy = false;
		if (!p->head)
			pthread_cond_broadcast(&p->idle);
	}
	pthread_mutex_unlock(&p->mu);
	return NULL;
}

static int push(struct fake_priv *p, struct job *j)
{
	pthread_mutex_lock(&p->mu);
	if (p->tail)
		p->tail->next = j;
	else
		p->head = j;
	p->tail = j;
	pthread_cond_signal(&p->cv);
	pthread_mutex_unlock(&p->mu);
	return 0;
}

static int f_check(void *ctx, kvr_engine *e, void *addr, size_t len)
{
	struct fake_priv *p = ctx;
	uint8_t *a = addr;

	(void)e;
	return a >= p->d.arena && a + len <= p->d.arena + p->d.arena_len ? 0 : -EFAULT;
}

static int f_pin(void *ctx, kvr_engine *e, void *addr, size_t len)
{
	struct fake_priv *p = ctx;

	(void)e;
	(void)addr;
	(void)len;
	p->d.pins++;
	return 0;
}

static void f_unpin(void *ctx, void *addr, size_t len)
{
	struct fake_priv *p = ctx;

	(void)addr;
	(void)len;
	p->d.unpins++;
}

static void *f_alloc(void *ctx, size_t len)
{
	(void)ctx;
	return aligned_alloc(4096, len);
}

static void f_free(void *ctx, void *ptr, size_t len)
{
	(void)ctx;
	(void)len;
	free(ptr);
}

static int f_copy(void *ctx, void *dst, const void *src, size_t len, bool to_device)
{
	struct fake_priv *p = ctx;
	struct job *j;

	(void)to_device;
	if (p->d.fail_after && ++p->queued >= p->d.fail_after)
		return -EIO;
	j = calloc(1, sizeof(*j));
	if (!j)
		return -ENOMEM;
	*j = (struct job){.dst = dst, .src = src, .len = len};
	return push(p, j);
}

static int f_mark(void *ctx, struct kvr_stage *st)
{
	struct job *j = calloc(1, sizeof(*j));

	if (!j)
		return -ENOMEM;
	j->st = st;
	return push(ctx, j);
}

static void f_wait(void *ctx)
{
	struct fake_priv *p = ctx;

	pthread_mutex_lock(&p->mu);
	while (p->head || p->busy)
		pthread_cond_wait(&p->idle, &p->mu);
	pthread_mutex_unlock(&p->mu);
}

static void f_fini(void *ctx)
{
	struct fake_priv *p = ctx;

	pthread_mutex_lock(&p->mu);
	p->quit = true;
	pthread_cond_signal(&p->cv);
	pthread_mutex_unlock(&p->mu);
	pthread_join(p->th, NULL);
	kvt_free_mem(p->d.arena, p->d.arena_len);
	free(p);
}

static const struct kvr_copy_ops fake_ops = {
    .name = "fake",
    .check = f_check,
    .pin = f_pin,
    .unpin = f_unpin,
    .host_alloc = f_alloc,
    .host_free = f_free,
    .copy = f_copy,
    .mark = f_mark,
    .wait = f_wait,
    .fini = f_fini,
};

struct fake_dev *fake_dev_attach(kvr_engine *e, size_t arena_len, size_t pool_len)
{
	struct fake_priv *p = calloc(1, sizeof(*p));

	assert_non_null(p);
	p->d.arena = kvt_alloc_mem(arena_len);
	p->d.arena_len = arena_len;
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->cv, NULL);
	pthread_cond_init(&p->idle, NULL);
	assert_int_equal(pthread_create(&p->th, NULL, worker, p), 0);
	assert_int_equal(kvr_stage_init(e, &fake_ops, p, pool_len), 0);
	return &p->d;
}
