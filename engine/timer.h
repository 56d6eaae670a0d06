/* SPDX-License-Identifier: MIT */
/*
 * Deadlines: a binary min-heap of timers keyed by absolute monotonic time.
 * The loop sleeps no longer than the earliest one and fires the expired ones
 * each round, so a batch costs no timeout SQE of its own.
 */
#ifndef KVR_TIMER_H
#define KVR_TIMER_H

#include <stdint.h>

struct kvr_timer {
	uint64_t when_ns; /* CLOCK_MONOTONIC */
	uint32_t pos;	  /* heap index + 1; 0 = not armed */
	void (*fn)(struct kvr_timer *t);
};

struct kvr_timer_heap {
	struct kvr_timer **v;
	uint32_t n, cap;
};

int kvr_timer_heap_init(struct kvr_timer_heap *h, uint32_t cap);
void kvr_timer_heap_fini(struct kvr_timer_heap *h);
/* Arm (or re-arm) t at when_ns. 0 or -ENOMEM. */
int kvr_timer_add(struct kvr_timer_heap *h, struct kvr_timer *t, uint64_t when_ns);
/* Disarm t if armed. */
void kvr_timer_del(struct kvr_timer_heap *h, struct kvr_timer *t);
/* Earliest armed timer, or NULL. */
static inline struct kvr_timer *kvr_timer_first(const struct kvr_timer_heap *h)
{
	return h->n ? h->v[0] : (struct kvr_timer *)0;
}
/* Disarm and call every timer due at now_ns; returns how many fired. */
int kvr_timer_run(struct kvr_timer_heap *h, uint64_t now_ns);

#endif
