/* SPDX-License-Identifier: MIT */
/*
 * Replicas that missed a write. A put is acknowledged once one copy is
 * stored, so a replica that was stalled, dead or failing when the key was
 * written may still hold an older version, and may be the first of the
 * key's ranking when it returns. This client remembers, for such keys only,
 * which ranking positions hold the newest write it saw acknowledged ("cur",
 * or nothing: a restarted node lost the key, which reads fall over) and
 * which may hold some version it ever sent ("maybe"):
 *  - a read of a remembered key asks only its cur positions; a read of any
 *    other key asks only the first R positions (the preferred replicas),
 *    which, by the rule below, hold the newest acknowledged write or nothing;
 *  - a key is forgotten once no preferred position is stale (maybe and not
 *    cur) and every holder of the newest write is a preferred one; a copy
 *    left on a node past the first R is never read without an entry;
 *  - a stale preferred position is repaired with a REMOVE sent to that node
 *    alone once it is up (a batch of our own, run from a timer so that it
 *    never starts inside a connection's callback). Writes of the key that
 *    finish while the REMOVE is out make its answer count for nothing
 *    (gen), so a REMOVE never clears what a newer put may have left.
 * Memory is bounded (TCP_REP_KEYS entries, allocated at connect, touched only
 * when replicas diverge); the hot path costs one hash probe per object. When
 * the table is full, an entry with nothing left to repair is given up (its
 * key may then miss, never read stale); if none can be, an acknowledged put
 * that left a stale preferred replica is reported -ENOBUFS instead.
 * Fencing: a put that a stalled node had already received when the client
 * gave up on it is applied when the node resumes; the node is repaired only
 * over a new connection, after a handshake with the resumed node, so those
 * bytes, already in its socket, are applied first in practice. The protocol
 * carries no versions that would make this a guarantee (docs/protocol.md).
 */
#include "transport/tcp.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#define REPAIR_BATCH 64 /* keys per repair batch; one batch in flight */

static uint16_t pref_mask(const struct tcp_cluster *cl)
{
	return (uint16_t)((1u << cl->o.replicas) - 1);
}

/* Preferred positions that may hold an older version than the newest. */
static uint16_t stale_pref(const struct tcp_cluster *cl, const struct tcp_rep_entry *x)
{
	return x->maybe & ~x->cur & pref_mask(cl);
}

/* Without an entry the key would be read right: nothing preferred is stale
 * and no holder of the newest write lies past the preferred ones. */
static bool settled(const struct tcp_cluster *cl, const struct tcp_rep_entry *x)
{
	return !stale_pref(cl, x) && !(x->cur & ~pref_mask(cl));
}

static void repair_run(struct kvr_timer *tm);

int tcp_rep_init(struct tcp_cluster *cl)
{
	struct tcp_rep *rp = &cl->rep;

	rp->timer.fn = repair_run;
	if (cl->nnodes < 2)
		return 0; /* every copy is on the one node */
	rp->cap = TCP_REP_KEYS;
	rp->mask = 2 * TCP_REP_KEYS - 1;
	rp->ent = calloc(rp->cap, sizeof(*rp->ent));
	rp->slot = calloc((size_t)rp->mask + 1, sizeof(*rp->slot));
	if (!rp->ent || !rp->slot)
		return -ENOMEM;
	return 0;
}

void tcp_rep_fini(struct tcp_cluster *cl)
{
	struct tcp_rep *rp = &cl->rep;

	kvr_timer_del(&cl->t.e->timers, &rp->timer);
	free(rp->ent);
	free(rp->slot);
	rp->ent = NULL;
	rp->slot = NULL;
	rp->cap = rp->count = 0;
}

/* ------------------------------------------------------------------ index */

/* The index slot holding key o, or the empty slot where it would go. */
static uint32_t slot_find(const struct tcp_rep *rp, const struct kvr_objd *o)
{
	uint32_t i = (uint32_t)o->hash & rp->mask;

	for (;; i = (i + 1) & rp->mask) {
		const struct tcp_rep_entry *x;

		if (!rp->slot[i])
			return i;
		x = &rp->ent[rp->slot[i] - 1];
		if (x->hash == o->hash && x->key_len == o->key_len &&
		    !memcmp(x->key, o->key, o->key_len))
			return i;
	}
}

static struct tcp_rep_entry *lookup(const struct tcp_rep *rp, const struct kvr_objd *o)
{
	uint32_t i;

	if (!rp->cap || !rp->count)
		return NULL;
	i = slot_find(rp, o);
	return rp->slot[i] ? &rp->ent[rp->slot[i] - 1] : NULL;
}

/* Backward-shift deletion: the probe runs stay unbroken, no tombstones. */
static void forget(struct tcp_rep *rp, struct tcp_rep_entry *x)
{
	uint32_t i = (uint32_t)x->hash & rp->mask, j;

	while (&rp->ent[rp->slot[i] - 1] != x)
		i = (i + 1) & rp->mask;
	rp->slot[i] = 0;
	for (j = (i + 1) & rp->mask; rp->slot[j]; j = (j + 1) & rp->mask) {
		uint32_t home = (uint32_t)rp->ent[rp->slot[j] - 1].hash & rp->mask;

		/* Move j back to the hole unless its home lies in (i, j]. */
		if (((j - home) & rp->mask) >= ((j - i) & rp->mask)) {
			rp->slot[i] = rp->slot[j];
			rp->slot[j] = 0;
			i = j;
		}
	}
	x->key_len = 0;
	rp->count--;
}

/* A free entry: an unused one, else one with nothing to repair (clock). */
static struct tcp_rep_entry *take(struct tcp_cluster *cl)
{
	struct tcp_rep *rp = &cl->rep;

	for (uint32_t n = 0; n < rp->cap; n++) {
		struct tcp_rep_entry *x = &rp->ent[rp->hand];

		rp->hand = (rp->hand + 1) % rp->cap;
		if (!x->key_len)
			return x;
		if (rp->count == rp->cap && !stale_pref(cl, x) && !x->repairing) {
			forget(rp, x);
			rp->overflows++;
			return x;
		}
	}
	return NULL;
}

static struct tcp_rep_entry *add(struct tcp_cluster *cl, const struct kvr_objd *o)
{
	struct tcp_rep *rp = &cl->rep;
	struct tcp_rep_entry *x = take(cl);

	if (!x)
		return NULL;
	memset(x, 0, offsetof(struct tcp_rep_entry, key));
	x->hash = o->hash;
	x->key_len = o->key_len;
	memcpy(x->key, o->key, o->key_len);
	rp->slot[slot_find(rp, o)] = (uint32_t)(x - rp->ent) + 1;
	rp->count++;
	return x;
}

/* ------------------------------------------------------------ the rules */

uint16_t tcp_rep_readable(struct tcp_cluster *cl, const struct kvr_objd *o)
{
	const struct tcp_rep_entry *x;

	if (!cl->rep.cap)
		return UINT16_MAX;
	x = lookup(&cl->rep, o);
	return x ? x->cur : pref_mask(cl);
}

void tcp_rep_written(struct tcp_cluster *cl, const struct kvr_objd *o, uint16_t tried,
		     uint16_t acked, int64_t *res)
{
	struct tcp_rep *rp = &cl->rep;
	struct tcp_rep_entry *x, next;
	bool ok = *res >= 0;

	if (!rp->cap)
		return;
	x = lookup(rp, o);
	/* No entry: the preferred positions hold the newest write or nothing,
	 * and nothing past them is ever read. */
	next.cur = x ? x->cur : pref_mask(cl);
	next.maybe = (x ? x->maybe : pref_mask(cl)) | tried;
	if (ok)
		next.cur = acked;
	if (x) {
		x->gen++;
		x->cur = next.cur;
		x->maybe = next.maybe;
		if (settled(cl, x) && !x->repairing)
			forget(rp, x);
		else if (stale_pref(cl, x))
			tcp_rep_kick(cl);
		return;
	}
	if (settled(cl, &next))
		return;
	x = add(cl, o);
	if (!x) {
		/* Not acknowledged: the preferred replicas still hold the
		 * previous write or this one, so reads stay right. */
		rp->overflows++;
		if (ok && stale_pref(cl, &next))
			*res = -ENOBUFS;
		return;
	}
	x->cur = next.cur;
	x->maybe = next.maybe;
	if (stale_pref(cl, x))
		tcp_rep_kick(cl);
}

/* ---------------------------------------------------------------- repair */

static void repair_done(void *ctx, size_t n, const int64_t *results)
{
	struct tcp_cluster *cl = ctx;

	(void)n;
	(void)results; /* each key's outcome was recorded as it finished */
	if (cl->t.closed)
		return;
	cl->rep.busy = false;
	if (cl->rep.due)
		tcp_rep_kick(cl);
}

bool tcp_rep_is_repair(const struct kvr_batch *b)
{
	return b->cb == repair_done;
}

/* Stale preferred positions of x whose node is up now. */
static uint16_t repairable(struct tcp_cluster *cl, const struct tcp_rep_entry *x,
			   const uint16_t *rank)
{
	uint16_t m = stale_pref(cl, x), out = 0;

	for (uint32_t p = 0; p < cl->o.replicas; p++)
		if ((m & (1u << p)) && cl->nodes[rank[p]].state == NODE_UP)
			out |= (uint16_t)(1u << p);
	return out;
}

uint16_t tcp_rep_targets(struct tcp_cluster *cl, const struct kvr_objd *o, const uint16_t *rank)
{
	struct tcp_rep_entry *x = lookup(&cl->rep, o);

	if (!x)
		return 0;
	x->repairing = repairable(cl, x, rank);
	x->repair_gen = x->gen;
	return x->repairing;
}

void tcp_rep_repaired(struct tcp_cluster *cl, const struct kvr_objd *o, uint16_t acked)
{
	struct tcp_rep_entry *x = lookup(&cl->rep, o);

	if (!x)
		return;
	if (x->gen == x->repair_gen) {
		x->maybe &= (uint16_t) ~(acked & ~x->cur);
		cl->rep.repaired += (uint64_t)__builtin_popcount(acked & ~x->cur);
	}
	x->repairing = 0;
	if (settled(cl, x))
		forget(&cl->rep, x);
	else if (stale_pref(cl, x))
		cl->rep.due = true; /* the node went down again, or a write raced */
}

void tcp_rep_kick(struct tcp_cluster *cl)
{
	struct tcp_rep *rp = &cl->rep;

	if (!rp->cap || cl->closing)
		return;
	rp->due = true;
	if (!rp->busy && !rp->timer.pos)
		(void)kvr_timer_add(&cl->t.e->timers, &rp->timer, 0); /* next round */
}

/* Send one batch of REMOVEs to the stale replicas that are up. */
static void repair_run(struct kvr_timer *tm)
{
	struct tcp_cluster *cl = KVR_CONTAINER_OF(tm, struct tcp_cluster, rep.timer);
	struct tcp_rep *rp = &cl->rep;
	kvr_obj objs[REPAIR_BATCH];
	uint16_t rank[TCP_MAX_RANK];
	uint32_t n = 0;

	if (cl->closing || cl->t.closed || rp->busy)
		return;
	rp->due = false;
	for (uint32_t i = 0; i < rp->cap && rp->count; i++) {
		struct tcp_rep_entry *x = &rp->ent[i];

		if (!x->key_len || x->repairing || !stale_pref(cl, x))
			continue;
		tcp_rank(cl, x->hash, rank);
		if (!repairable(cl, x, rank))
			continue; /* its node is down: its coming up kicks us */
		if (n == REPAIR_BATCH) {
			rp->due = true; /* more after this batch */
			break;
		}
		objs[n++] = (kvr_obj){x->key, x->key_len, NULL, 0};
	}
	if (!n)
		return;
	if (kvr_submit(&cl->t, KVR_OP_REMOVE, objs, n, 0, repair_done, cl) == 0) {
		rp->busy = true;
		kvr_log(cl->t.e, KVR_LOG_INFO,
			"repairing %u key(s) on replicas that missed a write", n);
	} else {
		rp->due = true; /* retried at the next kick */
	}
}
