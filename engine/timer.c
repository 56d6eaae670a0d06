/* SPDX-License-Identifier: MIT */
#include "engine/timer.h"

#include <errno.h>
#include <stdlib.h>

static void place(struct kvr_timer_heap *h, uint32_t i, struct kvr_timer *t)
{
	h->v[i] = t;
	t->pos = i + 1;
}

static void sift_up(struct kvr_timer_heap *h, uint32_t i)
{
	struct kvr_timer *t = h->v[i];

	while (i > 0) {
		uint32_t p = (i - 1) / 2;

		if (h->v[p]->when_ns <= t->when_ns)
			break;
		place(h, i, h->v[p]);
		i = p;
	}
	place(h, i, t);
}

static void sift_down(struct kvr_timer_heap *h, uint32_t i)
{
	struct kvr_timer *t = h->v[i];

	for (;;) {
		uint32_t c = 2 * i + 1;

		if (c >= h->n)
			break;
		if (c + 1 < h->n && h->v[c + 1]->when_ns < h->v[c]->when_ns)
			c++;
		if (t->when_ns <= h->v[c]->when_ns)
			break;
		place(h, i, h->v[c]);
		i = c;
	}
	place(h, i, t);
}

int kvr_timer_heap_init(struct kvr_timer_heap *h, uint32_t cap)
{
	h->n = 0;
	h->cap = cap ? cap : 64;
	h->v = calloc(h->cap, sizeof(*h->v));
	return h->v ? 0 : -ENOMEM;
}

void kvr_timer_heap_fini(struct kvr_timer_heap *h)
{
	for (uint32_t i = 0; i < h->n; i++)
		h->v[i]->pos = 0;
	free(h->v);
	h->v = NULL;
	h->n = h->cap = 0;
}

void kvr_timer_del(struct kvr_timer_heap *h, struct kvr_timer *t)
{
	if (!t->pos)
		return;
	uint32_t i = t->pos - 1;

	t->pos = 0;
	if (--h->n == i)
		return;
	struct kvr_timer *m = h->v[h->n];

	place(h, i, m);
	sift_down(h, i);
	sift_up(h, m->pos - 1);
}

int kvr_timer_add(struct kvr_timer_heap *h, struct kvr_timer *t, uint64_t when_ns)
{
	kvr_timer_del(h, t);
	if (h->n == h->cap) {
		uint32_t cap = h->cap * 2;
		struct kvr_timer **v = realloc(h->v, cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		h->v = v;
		h->cap = cap;
	}
	t->when_ns = when_ns;
	place(h, h->n++, t);
	sift_up(h, h->n - 1);
	return 0;
}

int kvr_timer_run(struct kvr_timer_heap *h, uint64_t now_ns)
{
	int fired = 0;

	while (h->n && h->v[0]->when_ns <= now_ns) {
		struct kvr_timer *t = h->v[0];

		kvr_timer_del(h, t);
		fired++;
		t->fn(t);
	}
	return fired;
}
