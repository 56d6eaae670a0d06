/* SPDX-License-Identifier: MIT */
/* Staging device memory through a bounce pool (see stage.h). */
#include "transport/stage.h"

#include "engine/alloc.h"
#include "engine/sgl.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define DEFAULT_POOL (256ull << 20)
#define POOL_UNIT    4096u

enum { ST_IDLE, ST_ROOM, ST_TO_HOST, ST_TARGET, ST_TO_DEV };

/* One staged object: the request's side state, one per request slot. */
struct st_req {
	struct kvr_req *r;
	kvr_target *t;
	struct kvr_objd *orig;	/* the caller's object, given back at the end */
	struct kvr_objd shadow; /* the same object as one pool SGE */
	struct kvr_sgx sgx;
	uint64_t off, alloc; /* the pool extent */
	int64_t res;	     /* the target's result (get: bytes to copy back) */
	int64_t err;	     /* a copy failed: the object's result */
	uint8_t state;
	uint8_t op;
	struct st_req *next; /* room or marker FIFO */
};

struct kvr_stage {
	struct kvr_devmem dm;
	struct kvr_engine_ext x;
	kvr_engine *e;
	const struct kvr_copy_ops *ops;
	void *ctx;
	uint8_t *pool;
	size_t pool_len;
	kvr_mr *mr;
	struct kvr_alloc al;
	struct st_req *sr; /* e->max_objects, by request slot */
	struct st_req *room_head, *room_tail;
	struct st_req *mark_head, *mark_tail;
	uint64_t marks_seen;
	_Atomic uint64_t marks_done;
	struct kvr_flush flush;
	bool kick; /* room came back: start what waits */
	int efd;
	struct kvr_io efd_io;
	uint64_t efd_buf;
	uint64_t efd_armed;
	/* copy / I/O overlap accounting */
	uint32_t copying, at_target;
	uint64_t t_last;
};

static const char ext_key[] = "stage";

static struct st_req *slot(struct kvr_stage *st, struct kvr_req *r)
{
	return &st->sr[r - st->e->pool];
}

static struct kvr_stage *of(struct kvr_devmem *d)
{
	return KVR_CONTAINER_OF(d, struct kvr_stage, dm);
}

static void fifo_push(struct st_req **head, struct st_req **tail, struct st_req *s)
{
	s->next = NULL;
	if (*tail)
		(*tail)->next = s;
	else
		*head = s;
	*tail = s;
}

static struct st_req *fifo_pop(struct st_req **head, struct st_req **tail)
{
	struct st_req *s = *head;

	if (s) {
		*head = s->next;
		if (!*head)
			*tail = NULL;
		s->next = NULL;
	}
	return s;
}

/* Before the copy or target counts change: charge the time since last. */
static void busy_charge(struct kvr_stage *st)
{
	struct kvr_stats *ss = &st->e->stats;
	uint64_t now = kvr_now_ns(), dt = st->t_last ? now - st->t_last : 0;

	if (st->copying)
		ss->stage_copy_ns += dt;
	if (st->at_target)
		ss->stage_io_ns += dt;
	if (st->copying && st->at_target)
		ss->stage_overlap_ns += dt;
	st->t_last = now;
}

static bool obj_on_device(const struct kvr_objd *o)
{
	for (uint32_t i = 0; i < o->nsge; i++)
		if (o->sgx[i].mr->flags & KVR_MEM_CUDA)
			return true;
	return false;
}

/* ---------------------------------------------------------------- steps */

static void to_target(struct kvr_stage *st, struct st_req *s)
{
	struct kvr_req *r = s->r;

	busy_charge(st);
	st->at_target++;
	s->state = ST_TARGET;
	r->o = &s->shadow;
	if (s->op == KVR_OP_PUT)
		s->t->ops->put(s->t, &r, 1);
	else
		s->t->ops->get(s->t, &r, 1);
}

/* The object is over: its extent back, the caller's object back, done. */
static void done(struct kvr_stage *st, struct st_req *s, int64_t res)
{
	struct kvr_req *r = s->r;

	if (s->alloc)
		kvr_alloc_put(&st->al, s->off, s->alloc);
	s->alloc = 0;
	s->state = ST_IDLE;
	r->o = s->orig;
	r->staged = false;
	st->kick = true;
	kvr_req_done(r, s->err ? s->err : res);
}

/*
 * Move len bytes between the object's SGEs and its extent, device SGEs by
 * the copy engine and host ones at once, then queue the marker. false if
 * the marker could not be queued (the copies were waited for instead).
 */
static bool move(struct kvr_stage *st, struct st_req *s, uint64_t len, bool to_device)
{
	uint8_t *pool = st->pool + s->off;
	uint64_t pos = 0;
	struct kvr_sgl cur;
	struct kvr_sgl_piece x;

	kvr_sgl_init(&cur, s->orig->sgx, s->orig->nsge, len, NULL);
	while (!s->err && kvr_sgl_next(&cur, UINT64_MAX, &x)) {
		size_t k = x.len;

		if (!(x.mr->flags & KVR_MEM_CUDA)) {
			if (to_device)
				memcpy(x.addr, pool + pos, k);
			else
				memcpy(pool + pos, x.addr, k);
		} else if (st->ops->copy(st->ctx, to_device ? x.addr : pool + pos,
					 to_device ? pool + pos : x.addr, k, to_device)) {
			kvr_log(st->e, KVR_LOG_WARN, "stage: %s copy of %zu bytes failed",
				st->ops->name, k);
			s->err = -EIO;
		}
		pos += k;
	}
	st->e->stats.staged_bytes += pos;
	busy_charge(st);
	st->copying++;
	if (st->ops->mark(st->ctx, st)) {
		kvr_log(st->e, KVR_LOG_ERROR, "stage: %s cannot signal completion; waiting",
			st->ops->name);
		st->ops->wait(st->ctx);
		busy_charge(st);
		st->copying--;
		s->err = -EIO;
		return false;
	}
	s->state = to_device ? ST_TO_DEV : ST_TO_HOST;
	fifo_push(&st->mark_head, &st->mark_tail, s);
	return true;
}

static void begin(struct kvr_stage *st, struct st_req *s, uint64_t off)
{
	s->off = off;
	s->alloc = kvr_alloc_round(&st->al, s->orig->total);
	s->shadow = *s->orig;
	s->shadow.nsge = 1;
	s->shadow.sgx = &s->sgx;
	s->sgx = (struct kvr_sgx){st->pool + off, s->orig->total, st->mr};
	if (s->op == KVR_OP_GET) {
		to_target(st, s);
		return;
	}
	if (!move(st, s, s->orig->total, false))
		done(st, s, 0);
}

/* Start what waits for pool room, in order, while it fits. */
static void room_drain(struct kvr_stage *st)
{
	st->kick = false;
	while (st->room_head) {
		struct st_req *s = st->room_head;
		int64_t off = kvr_alloc_get(&st->al, s->orig->total);

		if (off < 0)
			return;
		fifo_pop(&st->room_head, &st->room_tail);
		begin(st, s, (uint64_t)off);
	}
}

/* The markers signalled so far: their objects move on, in queue order. */
static void markers(struct kvr_stage *st)
{
	uint64_t upto = atomic_load_explicit(&st->marks_done, memory_order_acquire);

	while (st->marks_seen < upto) {
		struct st_req *s = fifo_pop(&st->mark_head, &st->mark_tail);

		st->marks_seen++;
		if (!s)
			break;
		busy_charge(st);
		st->copying--;
		if (s->state == ST_TO_DEV)
			done(st, s, s->res);
		else if (s->err || s->r->b->expired)
			done(st, s, -ETIMEDOUT);
		else
			to_target(st, s);
	}
}

/* ----------------------------------------------------- engine interface */

static void dm_stage(struct kvr_devmem *d, kvr_target *t, enum kvr_op op, struct kvr_req **reqs,
		     uint32_t n)
{
	struct kvr_stage *st = of(d);
	uint32_t run = 0;

	for (uint32_t i = 0; i <= n; i++) {
		struct kvr_req *r = i < n ? reqs[i] : NULL;
		struct st_req *s;

		if (r && !obj_on_device(r->o))
			continue; /* host objects of the batch go as they are */
		if (i > run) {
			if (op == KVR_OP_PUT)
				t->ops->put(t, reqs + run, i - run);
			else
				t->ops->get(t, reqs + run, i - run);
		}
		run = i + 1;
		if (!r)
			break;
		if (kvr_alloc_round(&st->al, r->o->total) > st->al.capacity) {
			kvr_set_errmsg(st->e, "object of %llu bytes exceeds the staging pool (%zu)",
				       (unsigned long long)r->o->total, st->pool_len);
			kvr_req_done(r, -E2BIG);
			continue;
		}
		s = slot(st, r);
		memset(s, 0, sizeof(*s));
		s->r = r;
		s->t = t;
		s->orig = r->o;
		s->op = (uint8_t)op;
		s->state = ST_ROOM;
		r->staged = true;
		st->e->stats.staged_objects++;
		fifo_push(&st->room_head, &st->room_tail, s);
	}
	room_drain(st);
}

static void dm_finish(struct kvr_devmem *d, struct kvr_req *r, int64_t res)
{
	struct kvr_stage *st = of(d);
	struct st_req *s = slot(st, r);

	busy_charge(st);
	st->at_target--;
	s->res = res;
	if (s->op == KVR_OP_GET && res > 0 && !r->b->expired) {
		if (!move(st, s, (uint64_t)res, true))
			done(st, s, res);
		return;
	}
	done(st, s, res);
}

static void dm_cancel(struct kvr_devmem *d, struct kvr_req *r)
{
	struct kvr_stage *st = of(d);
	struct st_req *s = slot(st, r), **pp = &st->room_head, *prev = NULL;

	switch (s->state) {
	case ST_ROOM:
		while (*pp != s) {
			prev = *pp;
			pp = &(*pp)->next;
		}
		*pp = s->next;
		if (st->room_tail == s)
			st->room_tail = prev;
		done(st, s, -ETIMEDOUT);
		break;
	case ST_TARGET:
		if (s->t->ops->cancel)
			s->t->ops->cancel(s->t, r);
		break;
	default: /* a copy is in flight: it ends with its marker */
		break;
	}
}

static int dm_check(struct kvr_devmem *d, void *addr, size_t len)
{
	struct kvr_stage *st = of(d);

	return st->ops->check(st->ctx, st->e, addr, len);
}

static int dm_pin(struct kvr_devmem *d, void *addr, size_t len)
{
	struct kvr_stage *st = of(d);

	return st->ops->pin(st->ctx, st->e, addr, len);
}

static void dm_unpin(struct kvr_devmem *d, void *addr, size_t len)
{
	struct kvr_stage *st = of(d);

	st->ops->unpin(st->ctx, addr, len);
}

static int dm_dmabuf(struct kvr_devmem *d, void *addr, size_t len, int *fd, uint64_t *off)
{
	struct kvr_stage *st = of(d);

	return st->ops->dmabuf ? st->ops->dmabuf(st->ctx, addr, len, fd, off) : -EOPNOTSUPP;
}

void kvr_stage_signal(struct kvr_stage *st)
{
	uint64_t one = 1;

	atomic_fetch_add_explicit(&st->marks_done, 1, memory_order_release);
	if (write(st->efd, &one, sizeof(one)) < 0) {
		/* a saturated counter still reads as readable */
	}
}

/* ---------------------------------------------------------------- loop */

static void arm(struct kvr_stage *st)
{
	struct io_uring_sqe *sqe = kvr_sqe(st->e);

	io_uring_prep_read(sqe, st->efd, &st->efd_buf, sizeof(st->efd_buf), 0);
	io_uring_sqe_set_data(sqe, &st->efd_io);
	st->efd_armed = 1;
}

static void efd_done(struct kvr_io *io, int res, uint32_t flags)
{
	struct kvr_stage *st = KVR_CONTAINER_OF(io, struct kvr_stage, efd_io);

	(void)flags;
	st->efd_armed = 0;
	if (res == -ECANCELED)
		return;
	markers(st);
	arm(st);
}

static void stage_flush(struct kvr_flush *f)
{
	struct kvr_stage *st = KVR_CONTAINER_OF(f, struct kvr_stage, flush);

	if (st->kick)
		room_drain(st);
}

static void stage_fini(struct kvr_engine_ext *x)
{
	struct kvr_stage *st = KVR_CONTAINER_OF(x, struct kvr_stage, x);
	kvr_engine *e = st->e;

	/* The targets are closed, so nothing is staged any more. */
	st->ops->wait(st->ctx);
	if (st->efd_armed) {
		struct io_uring_sqe *sqe = kvr_sqe(e);

		io_uring_prep_cancel(sqe, &st->efd_io, 0);
		io_uring_sqe_set_data(sqe, NULL);
		kvr_engine_drain_timeout(e, &st->efd_armed, 5000);
	}
	for (uint32_t i = 0; i < e->nregions; i++) /* pinned regions left registered */
		if (e->regions[i]->flags & KVR_MEM_CUDA_PINNED) {
			st->ops->unpin(st->ctx, (void *)e->regions[i]->base, e->regions[i]->len);
			e->regions[i]->flags &= ~(unsigned)KVR_MEM_CUDA_PINNED;
		}
	kvr_flush_del(e, &st->flush);
	if (st->mr)
		kvr_mem_deregister(e, st->mr);
	if (st->pool)
		st->ops->host_free(st->ctx, st->pool, st->pool_len);
	kvr_alloc_fini(&st->al);
	st->ops->fini(st->ctx);
	if (!st->efd_armed && st->efd >= 0)
		close(st->efd);
	e->devmem = NULL;
	free(st->sr);
	if (!st->efd_armed)
		free(st); /* else the kernel may still write efd_buf: leaked */
}

int kvr_stage_init(kvr_engine *e, const struct kvr_copy_ops *ops, void *ctx, size_t pool_bytes)
{
	struct kvr_stage *st;
	int rc = -ENOMEM;

	if (e->devmem || kvr_engine_ext_find(e, ext_key)) {
		ops->fini(ctx);
		return -EEXIST;
	}
	st = calloc(1, sizeof(*st));
	if (!st) {
		ops->fini(ctx);
		return -ENOMEM;
	}
	st->e = e;
	st->ops = ops;
	st->ctx = ctx;
	st->efd = -1;
	st->pool_len = (pool_bytes ? pool_bytes : DEFAULT_POOL) & ~(size_t)(POOL_UNIT - 1);
	st->sr = calloc(e->max_objects, sizeof(*st->sr));
	st->pool = st->sr && st->pool_len ? ops->host_alloc(ctx, st->pool_len) : NULL;
	st->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (!st->sr || !st->pool || st->efd < 0 ||
	    kvr_alloc_init(&st->al, st->pool_len, POOL_UNIT)) {
		kvr_set_errmsg(e, "stage: cannot allocate a %zu-byte pinned bounce pool",
			       st->pool_len);
		goto fail;
	}
	rc = kvr_mem_register(e, st->pool, st->pool_len, KVR_MEM_HOST, &st->mr);
	if (rc) {
		st->mr = NULL;
		goto fail;
	}
	st->dm = (struct kvr_devmem){
	    .check = dm_check,
	    .pin = dm_pin,
	    .unpin = dm_unpin,
	    .dmabuf = dm_dmabuf,
	    .stage = dm_stage,
	    .finish = dm_finish,
	    .cancel = dm_cancel,
	};
	st->x.key = ext_key;
	st->x.fini = stage_fini;
	st->efd_io.fn = efd_done;
	st->flush.fn = stage_flush;
	kvr_flush_add(e, &st->flush);
	kvr_engine_ext_add(e, &st->x);
	e->devmem = &st->dm;
	arm(st);
	kvr_log(e, KVR_LOG_INFO, "device memory by %s, staged through a %zu MiB bounce pool",
		ops->name, st->pool_len >> 20);
	return 0;
fail:
	if (st->efd >= 0)
		close(st->efd);
	if (st->pool)
		ops->host_free(ctx, st->pool, st->pool_len);
	if (st->al.impl)
		kvr_alloc_fini(&st->al);
	free(st->sr);
	free(st);
	ops->fini(ctx);
	return rc;
}
