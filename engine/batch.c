/* SPDX-License-Identifier: MIT */
/*
 * Batches: validate and copy the caller's descriptors in one allocation, take
 * request slots from the pool, hand them to the target's ops table, count
 * completions, fire deadlines, and queue the callback for the poll loop.
 */
#include "engine/engine.h"
#include "engine/index.h"

#include <stdlib.h>
#include <string.h>

static bool op_has_data(enum kvr_op op)
{
	return op == KVR_OP_PUT || op == KVR_OP_GET;
}

/* Pass 1: check every object; count SGEs and key bytes. Nothing is kept. */
static int validate(kvr_engine *e, enum kvr_op op, const kvr_obj *objs, size_t n, size_t *nsges,
		    size_t *keybytes)
{
	size_t sges = 0, kb = 0;

	for (size_t i = 0; i < n; i++) {
		const kvr_obj *o = &objs[i];

		if (!o->key || !o->key_len)
			return -EINVAL;
		if (o->key_len > KVR_MAX_KEY)
			return -ENAMETOOLONG;
		kb += o->key_len;
		if (!op_has_data(op))
			continue;
		if (!o->nsge || !o->sgl)
			return -EINVAL;
		if (o->nsge > KVR_MAX_SGE)
			return -E2BIG;
		for (uint32_t j = 0; j < o->nsge; j++) {
			const kvr_sge *s = &o->sgl[j];

			if (!s->addr)
				return -EFAULT;
			if (!s->len)
				return -EINVAL;
			if (!kvr_mr_find(e, s->addr, s->len))
				return -EFAULT;
		}
		sges += o->nsge;
	}
	*nsges = sges;
	*keybytes = kb;
	return 0;
}

static int cmp_sgx(const void *a, const void *b)
{
	const struct kvr_sgx *x = *(struct kvr_sgx *const *)a, *y = *(struct kvr_sgx *const *)b;

	return x->addr < y->addr ? -1 : x->addr > y->addr;
}

/* A get must not write the same byte twice: reject overlapping SGEs across
 * the batch. Already-sorted SGLs (the common layout) cost one linear pass. */
static int check_overlap(struct kvr_sgx *sgx, size_t n, struct kvr_sgx **scratch)
{
	bool sorted = true;

	for (size_t i = 1; i < n && sorted; i++)
		sorted = sgx[i - 1].addr + sgx[i - 1].len <= sgx[i].addr;
	if (sorted)
		return 0;
	for (size_t i = 0; i < n; i++)
		scratch[i] = &sgx[i];
	qsort(scratch, n, sizeof(*scratch), cmp_sgx);
	for (size_t i = 1; i < n; i++) {
		if (scratch[i - 1]->addr + scratch[i - 1]->len > scratch[i]->addr)
			return -EINVAL;
	}
	return 0;
}

static void batch_finish(kvr_engine *e, struct kvr_batch *b)
{
	kvr_timer_del(&e->timers, &b->deadline);
	b->next = NULL;
	if (e->done_tail)
		e->done_tail->next = b;
	else
		e->done_head = b;
	e->done_tail = b;
	kvr_notify(e);
}

static void account(struct kvr_stats *st, enum kvr_op op, int64_t res)
{
	switch (op) {
	case KVR_OP_PUT:
		st->puts++;
		if (res > 0)
			st->bytes_put += (uint64_t)res;
		break;
	case KVR_OP_GET:
		st->gets++;
		if (res > 0)
			st->bytes_got += (uint64_t)res;
		break;
	case KVR_OP_EXISTS:
		st->exists++;
		break;
	case KVR_OP_REMOVE:
		st->removes++;
		break;
	}
	if (res < 0) {
		st->errors++;
		if (res == -ENOENT)
			st->misses++;
		else if (res == -ETIMEDOUT)
			st->timeouts++;
	}
}

void kvr_req_done(struct kvr_req *r, int64_t res)
{
	struct kvr_batch *b = r->b;
	kvr_target *t = b->t;
	kvr_engine *e = t->e;
	uint64_t lat;

	if (KVR_UNLIKELY(r->done))
		return;
	if (KVR_UNLIKELY(r->staged)) { /* its device memory's copy comes next */
		e->devmem->finish(e->devmem, r, res);
		return;
	}
	r->done = true;
	if (b->expired)
		res = -ETIMEDOUT;
	b->results[r->idx] = res;
	account(&t->stats, b->op, res);
	if (e->in_submit) {
		/* Done inside the submitting call: timed once for all of them
		 * when it returns (one clock read per batch, not per object). */
		e->sync_done++;
	} else {
		lat = e->now_ns > b->t_submit_ns ? e->now_ns - b->t_submit_ns : 0;
		kvr_lat_record(t->stats.lat_us, lat);
	}
	t->inflight--;
	r->next = e->free_reqs;
	e->free_reqs = r;
	e->free_count++;
	if (++b->ndone == b->n)
		batch_finish(e, b);
}

/* Whether t moves every device-memory SGE of b itself (RDMA + GPUDirect). */
static bool target_takes_device(kvr_target *t, const struct kvr_batch *b)
{
	if (!t->ops->takes_device)
		return false;
	for (uint32_t i = 0; i < b->n; i++)
		for (uint32_t j = 0; j < b->objs[i].nsge; j++) {
			const struct kvr_mr *mr = b->objs[i].sgx[j].mr;

			if ((mr->flags & KVR_MEM_CUDA) && !t->ops->takes_device(t, mr))
				return false;
		}
	return true;
}

static void batch_start(kvr_engine *e, struct kvr_batch *b)
{
	kvr_target *t = b->t;

	b->started = true;
	for (uint32_t i = 0; i < b->n; i++) {
		struct kvr_req *r = e->free_reqs;

		e->free_reqs = r->next;
		r->b = b;
		r->o = &b->objs[i];
		r->idx = i;
		r->done = false;
		r->staged = false;
		r->next = NULL;
		b->reqs[i] = r;
	}
	e->free_count -= b->n;
	t->inflight += b->n;
	if (KVR_UNLIKELY(b->devmem) && !target_takes_device(t, b)) {
		e->devmem->stage(e->devmem, t, b->op, b->reqs, b->n);
		return;
	}
	switch (b->op) {
	case KVR_OP_PUT:
		t->ops->put(t, b->reqs, b->n);
		break;
	case KVR_OP_GET:
		t->ops->get(t, b->reqs, b->n);
		break;
	case KVR_OP_EXISTS:
		t->ops->exists(t, b->reqs, b->n);
		break;
	case KVR_OP_REMOVE:
		t->ops->remove(t, b->reqs, b->n);
		break;
	}
}

void kvr_batches_start_waiting(kvr_engine *e)
{
	while (e->wait_head && e->wait_head->n <= e->free_count) {
		struct kvr_batch *b = e->wait_head;

		e->wait_head = b->next;
		if (!e->wait_head)
			e->wait_tail = NULL;
		batch_start(e, b);
	}
}

/* Complete a batch that never started with one result for every object. */
static void fail_unstarted(kvr_engine *e, struct kvr_batch *b, int64_t res)
{
	struct kvr_batch **p;

	for (p = &e->wait_head; *p && *p != b; p = &(*p)->next)
		;
	if (*p) {
		*p = b->next;
		if (e->wait_tail == b) {
			e->wait_tail = NULL;
			for (struct kvr_batch *x = e->wait_head; x; x = x->next)
				e->wait_tail = x;
		}
	}
	for (uint32_t i = 0; i < b->n; i++) {
		b->results[i] = res;
		account(&b->t->stats, b->op, res);
	}
	kvr_lat_record_n(b->t->stats.lat_us, 0, b->n);
	b->ndone = b->n;
	batch_finish(e, b);
}

void kvr_batch_expire(struct kvr_timer *tm)
{
	struct kvr_batch *b = KVR_CONTAINER_OF(tm, struct kvr_batch, deadline);
	kvr_target *t = b->t;

	b->expired = true;
	if (!b->started) {
		fail_unstarted(t->e, b, -ETIMEDOUT);
		return;
	}
	for (uint32_t i = 0; i < b->n; i++) {
		/* A slot freed by kvr_req_done may already serve another batch. */
		struct kvr_req *r = b->reqs[i];

		if (r->b != b || r->done)
			continue;
		if (r->staged)
			t->e->devmem->cancel(t->e->devmem, r);
		else if (t->ops->cancel)
			t->ops->cancel(t, r);
	}
}

static void cancel_waiting(kvr_engine *e, kvr_target *t)
{
	struct kvr_batch *b = e->wait_head;

	while (b) {
		struct kvr_batch *next = b->next;

		if (!t || b->t == t)
			fail_unstarted(e, b, -ECANCELED);
		b = next;
	}
}

void kvr_batches_cancel_all(kvr_engine *e)
{
	cancel_waiting(e, NULL);
}

int kvr_batches_run_done(kvr_engine *e)
{
	struct kvr_batch *b = e->done_head;
	int ran = 0;

	/* Only the batches finished so far: ones that callbacks submit and that
	 * finish at once wait for the next round, so a poll always returns. */
	e->done_head = e->done_tail = NULL;
	while (b) {
		struct kvr_batch *next = b->next;

		b->t->stats.batches++;
		e->in_cb = true;
		b->cb(b->ctx, b->n, b->results);
		e->in_cb = false;
		/* The regions stay busy until the callback has run: only then
		 * is the caller told the memory is its own again. */
		for (uint32_t i = 0; i < b->n; i++)
			for (uint32_t j = 0; j < b->objs[i].nsge; j++)
				b->objs[i].sgx[j].mr->inflight--;
		free(b);
		ran++;
		b = next;
	}
	return ran;
}

static struct kvr_batch *batch_alloc(kvr_engine *e, enum kvr_op op, const kvr_obj *objs, size_t n,
				     size_t nsges, size_t keybytes)
{
	size_t sz = sizeof(struct kvr_batch) +
		    n * (sizeof(int64_t) + sizeof(struct kvr_objd) + sizeof(struct kvr_req *)) +
		    nsges * sizeof(struct kvr_sgx) +
		    (op == KVR_OP_GET ? nsges * sizeof(struct kvr_sgx *) : 0) + keybytes;
	struct kvr_batch *b = malloc(sz);
	uint8_t *p;
	struct kvr_sgx *sgx;

	if (!b)
		return NULL;
	memset(b, 0, sizeof(*b));
	p = (uint8_t *)(b + 1);
	b->results = (int64_t *)p;
	p += n * sizeof(int64_t);
	b->objs = (struct kvr_objd *)p;
	p += n * sizeof(struct kvr_objd);
	b->reqs = (struct kvr_req **)p;
	p += n * sizeof(struct kvr_req *);
	sgx = (struct kvr_sgx *)p;
	p += nsges * sizeof(struct kvr_sgx);
	if (op == KVR_OP_GET)
		p += nsges * sizeof(struct kvr_sgx *);
	for (size_t i = 0; i < n; i++) {
		const kvr_obj *o = &objs[i];
		struct kvr_objd *d = &b->objs[i];

		memcpy(p, o->key, o->key_len);
		d->key = p;
		d->key_len = (uint16_t)o->key_len;
		d->hash = kvr_key_hash(p, o->key_len);
		p += o->key_len;
		d->total = 0;
		d->nsge = 0;
		d->sgx = sgx;
		if (!op_has_data(op))
			continue;
		d->nsge = o->nsge;
		for (uint32_t j = 0; j < o->nsge; j++) {
			sgx[j].addr = o->sgl[j].addr;
			sgx[j].len = o->sgl[j].len;
			sgx[j].mr = kvr_mr_find(e, o->sgl[j].addr, o->sgl[j].len);
			d->total += o->sgl[j].len;
			b->devmem |= (sgx[j].mr->flags & KVR_MEM_CUDA) != 0;
		}
		sgx += o->nsge;
	}
	return b;
}

KVR_EXPORT int kvr_submit(kvr_target *t, enum kvr_op op, const kvr_obj *objs, size_t n,
			  uint32_t timeout_ms, kvr_batch_cb cb, void *ctx)
{
	size_t nsges = 0, keybytes = 0;
	struct kvr_batch *b;
	kvr_engine *e;
	int rc;

	if (!t || !cb || !objs || !n || (unsigned)op > KVR_OP_REMOVE)
		return -EINVAL;
	e = t->e;
	if (e->destroying)
		return -ESHUTDOWN;
	if (t->closed)
		return -EBADF;
	if (n > e->max_objects)
		return -E2BIG;
	rc = validate(e, op, objs, n, &nsges, &keybytes);
	if (rc)
		return rc;
	b = batch_alloc(e, op, objs, n, nsges, keybytes);
	if (!b)
		return -ENOMEM;
	if (op == KVR_OP_GET && nsges > 1) {
		struct kvr_sgx **scratch = (struct kvr_sgx **)(b->objs[0].sgx + nsges);

		if (check_overlap(b->objs[0].sgx, nsges, scratch)) {
			free(b);
			return -EINVAL;
		}
	}
	b->t = t;
	b->op = op;
	b->n = (uint32_t)n;
	b->cb = cb;
	b->ctx = ctx;
	b->t_submit_ns = kvr_now_ns();
	b->deadline.fn = kvr_batch_expire;
	if (kvr_timer_add(&e->timers, &b->deadline,
			  b->t_submit_ns +
			      (uint64_t)(timeout_ms ? timeout_ms : t->timeout_ms) * 1000000ull)) {
		free(b);
		return -ENOMEM;
	}
	for (uint32_t i = 0; i < b->n; i++)
		for (uint32_t j = 0; j < b->objs[i].nsge; j++)
			b->objs[i].sgx[j].mr->inflight++;
	if (!e->wait_head && e->free_count >= b->n) {
		bool nested = e->in_submit;

		e->in_submit = true;
		e->sync_done = nested ? e->sync_done : 0;
		batch_start(e, b);
		if (!nested) {
			e->in_submit = false;
			if (e->sync_done) {
				e->now_ns = kvr_now_ns();
				kvr_lat_record_n(t->stats.lat_us, e->now_ns - b->t_submit_ns,
						 e->sync_done);
			}
		}
	} else {
		b->next = NULL;
		if (e->wait_tail)
			e->wait_tail->next = b;
		else
			e->wait_head = b;
		e->wait_tail = b;
		kvr_notify(e); /* the host must poll for the batch to start */
	}
	kvr_submit_if_idle(e);
	return 0;
}

KVR_EXPORT int kvr_put(kvr_target *t, const kvr_obj *objs, size_t n, kvr_batch_cb cb, void *ctx)
{
	return kvr_submit(t, KVR_OP_PUT, objs, n, 0, cb, ctx);
}

KVR_EXPORT int kvr_get(kvr_target *t, const kvr_obj *objs, size_t n, kvr_batch_cb cb, void *ctx)
{
	return kvr_submit(t, KVR_OP_GET, objs, n, 0, cb, ctx);
}

KVR_EXPORT int kvr_exists(kvr_target *t, const kvr_obj *objs, size_t n, kvr_batch_cb cb, void *ctx)
{
	return kvr_submit(t, KVR_OP_EXISTS, objs, n, 0, cb, ctx);
}

KVR_EXPORT int kvr_remove(kvr_target *t, const kvr_obj *objs, size_t n, kvr_batch_cb cb, void *ctx)
{
	return kvr_submit(t, KVR_OP_REMOVE, objs, n, 0, cb, ctx);
}

void kvr_target_init(kvr_target *t, kvr_engine *e, const struct kvr_target_ops *ops,
		     uint32_t timeout_ms)
{
	t->ops = ops;
	t->e = e;
	t->timeout_ms = timeout_ms ? timeout_ms : e->timeout_ms;
	t->next = e->targets;
	e->targets = t;
}

KVR_EXPORT int kvr_target_close(kvr_target *t)
{
	if (!t)
		return -EINVAL;
	if (t->closed)
		return -EBADF;
	t->closed = true;
	cancel_waiting(t->e, t);
	return t->ops->close(t);
}

void kvr_stats_copy_out(struct kvr_stats *user, const struct kvr_stats *all)
{
	uint32_t n = user->size < sizeof(*all) ? user->size : (uint32_t)sizeof(*all);

	memcpy((char *)user + offsetof(struct kvr_stats, batches),
	       (const char *)all + offsetof(struct kvr_stats, batches),
	       n - offsetof(struct kvr_stats, batches));
	user->size = n;
	user->reserved = 0;
}

KVR_EXPORT int kvr_target_stats(kvr_target *t, struct kvr_stats *user)
{
	struct kvr_stats all;

	if (!t || !user || user->size < offsetof(struct kvr_stats, batches))
		return -EINVAL;
	all = t->stats;
	if (t->ops->stats && !t->closed)
		t->ops->stats(t, &all);
	kvr_stats_copy_out(user, &all);
	return 0;
}

void kvr_target_forget(kvr_target *t)
{
	for (kvr_target **p = &t->e->targets; *p; p = &(*p)->next) {
		if (*p == t) {
			*p = t->next;
			return;
		}
	}
}
