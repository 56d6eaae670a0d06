/* SPDX-License-Identifier: MIT */
/*
 * The loop: one io_uring, an eventfd the host can watch, a wake eventfd any
 * thread may write, the deadline heap, and the rounds that submit, reap and
 * run callbacks.
 */
#include "engine/engine.h"
#include "engine/index.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define DEFAULT_RING	   1024
#define DEFAULT_OBJECTS	   16384
#define DEFAULT_SLOTS	   1024
#define DEFAULT_TIMEOUT_MS 30000

static void arm_wake(kvr_engine *e);

static void wake_done(struct kvr_io *io, int res, uint32_t flags)
{
	kvr_engine *e = KVR_CONTAINER_OF(io, kvr_engine, wake_io);

	e->wake_armed = false;
	e->woken = true;
	e->wake_due = true;
	if (!e->destroying)
		arm_wake(e);
}

static void arm_wake(kvr_engine *e)
{
	struct io_uring_sqe *sqe = kvr_sqe(e);

	io_uring_prep_read(sqe, e->wake_fd, &e->wake_buf, sizeof(e->wake_buf), 0);
	io_uring_sqe_set_data(sqe, &e->wake_io);
	e->wake_armed = true;
}

/*
 * Set the ring up with the best flags this kernel accepts: SINGLE_ISSUER and
 * DEFER_TASKRUN (6.1+) keep completions on our thread and out of interrupts;
 * COOP_TASKRUN (5.19+) is the next best; older kernels get plain rings.
 */
static int ring_setup(kvr_engine *e, uint32_t entries, bool defer)
{
	static const unsigned tries[] = {
	    IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
	    IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG,
	    IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG,
	    0,
	};
	int rc = -EINVAL;

	for (size_t i = defer ? 0 : 2; i < sizeof(tries) / sizeof(tries[0]); i++) {
		struct io_uring_params p;

		memset(&p, 0, sizeof(p));
		/* Deep CQ: objects may post several CQEs each (multi-piece I/O). */
		p.flags = tries[i] | IORING_SETUP_CQSIZE | IORING_SETUP_SUBMIT_ALL;
		p.cq_entries = entries * 8;
		rc = io_uring_queue_init_params(entries, &e->ring, &p);
		if (rc == -EINVAL) {
			/* SUBMIT_ALL is 5.18+; retry this level without it. */
			p.flags &= ~IORING_SETUP_SUBMIT_ALL;
			memset(&e->ring, 0, sizeof(e->ring));
			rc = io_uring_queue_init_params(entries, &e->ring, &p);
		}
		if (rc == 0) {
			e->setup_flags = p.flags;
			return 0;
		}
		if (rc != -EINVAL)
			return rc;
	}
	return rc;
}

static int opts_check(const struct kvr_engine_opts *o)
{
	if (o->size && o->size < offsetof(struct kvr_engine_opts, log))
		return -EINVAL;
	if (o->ring_entries > 32768 || o->max_objects > (1u << 24) || o->fixed_buffers > 16384)
		return -EINVAL;
	if (o->flags & ~(uint32_t)(KVR_ENGINE_NO_DEFER_TASKRUN | KVR_ENGINE_BUSY_POLL))
		return -EINVAL;
	return 0;
}

KVR_EXPORT int kvr_engine_create(const struct kvr_engine_opts *opts, kvr_engine **out)
{
	struct kvr_engine_opts o;
	kvr_engine *e;
	int rc;

	if (!out)
		return -EINVAL;
	*out = NULL;
	memset(&o, 0, sizeof(o));
	if (opts) {
		if (!opts->size)
			return -EINVAL;
		memcpy(&o, opts, opts->size < sizeof(o) ? opts->size : sizeof(o));
		rc = opts_check(&o);
		if (rc)
			return rc;
	}
	e = calloc(1, sizeof(*e));
	if (!e)
		return -ENOMEM;
	e->notify_fd = e->wake_fd = -1;
	e->flags = o.flags;
	e->log = o.log;
	e->log_ctx = o.log_ctx;
	e->log_level = o.log_level;
	e->timeout_ms = o.timeout_ms ? o.timeout_ms : DEFAULT_TIMEOUT_MS;
	e->max_objects = o.max_objects ? o.max_objects : DEFAULT_OBJECTS;
	e->stage_bytes = o.stage_bytes;
	e->wake_io.fn = wake_done;

	rc = ring_setup(e, o.ring_entries ? o.ring_entries : DEFAULT_RING,
			!(o.flags & KVR_ENGINE_NO_DEFER_TASKRUN));
	if (rc) {
		kvr_set_errmsg(e, "io_uring_setup failed: %s%s", strerror(-rc),
			       rc == -ENOMEM
				   ? " (ring memory counts against RLIMIT_MEMLOCK on some "
				     "kernels)"
				   : "");
		free(e);
		return rc;
	}
	kvr_log(e, KVR_LOG_INFO, "io_uring flags 0x%x", e->setup_flags);

	e->pool = calloc(e->max_objects, sizeof(*e->pool));
	if (!e->pool)
		goto nomem;
	for (uint32_t i = e->max_objects; i-- > 0;) {
		e->pool[i].next = e->free_reqs;
		e->free_reqs = &e->pool[i];
	}
	e->free_count = e->max_objects;
	if (kvr_timer_heap_init(&e->timers, 256))
		goto nomem;

	e->notify_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	e->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (e->notify_fd < 0 || e->wake_fd < 0) {
		rc = -errno;
		goto fail;
	}
	rc = io_uring_register_eventfd(&e->ring, e->notify_fd);
	if (rc)
		goto fail;
	rc = kvr_registry_init(e, o.fixed_buffers ? o.fixed_buffers : DEFAULT_SLOTS);
	if (rc)
		goto fail;
	arm_wake(e);
	io_uring_submit(&e->ring);
	*out = e;
	return 0;
nomem:
	rc = -ENOMEM;
fail:
	kvr_engine_destroy(e);
	return rc;
}

static void reap(kvr_engine *e)
{
	if (KVR_UNLIKELY(io_uring_cq_has_overflow(&e->ring)))
		e->stats.cq_overflows++;
	e->now_ns = kvr_now_ns();
	/* One CQE at a time, consumed before its handler runs: a handler may
	 * need an SQE while the SQ is full, which reaps again (nested). */
	while (io_uring_cq_ready(&e->ring)) {
		struct io_uring_cqe *cqe;
		unsigned head;
		struct kvr_io *io = NULL;
		int res = 0;
		uint32_t flags = 0;

		io_uring_for_each_cqe(&e->ring, head, cqe)
		{
			io = io_uring_cqe_get_data(cqe);
			res = cqe->res;
			flags = cqe->flags;
			break;
		}
		io_uring_cq_advance(&e->ring, 1);
		if (io)
			io->fn(io, res, flags);
	}
}

static void run_flushers(kvr_engine *e)
{
	for (struct kvr_flush *f = e->flushers; f; f = f->next)
		if (!f->late)
			f->fn(f);
	for (struct kvr_flush *f = e->flushers; f; f = f->next)
		if (f->late)
			f->fn(f);
}

/* Submit what is queued and collect what the kernel has finished. With a
 * wait, block until at least one CQE arrives or wait_ns passes. */
static int submit_and_reap(kvr_engine *e, int64_t wait_ns)
{
	int rc;

	run_flushers(e);
	if (wait_ns != 0 && !(e->flags & KVR_ENGINE_BUSY_POLL)) {
		struct __kernel_timespec ts, *tsp = NULL;
		struct io_uring_cqe *cqe;

		if (wait_ns > 0) {
			ts.tv_sec = wait_ns / 1000000000;
			ts.tv_nsec = wait_ns % 1000000000;
			tsp = &ts;
		}
		rc = io_uring_submit_and_wait_timeout(&e->ring, &cqe, 1, tsp, NULL);
		if (rc == -ETIME || rc == -EINTR)
			rc = 0;
	} else {
		rc = io_uring_submit_and_get_events(&e->ring);
	}
	if (rc == -EBUSY || rc == -EAGAIN) /* CQ overflow backlog: reap first */
		rc = 0;
	else if (rc > 0)
		e->stats.submits++;
	reap(e);
	return rc < 0 ? rc : 0;
}

struct io_uring_sqe *kvr_sqe(kvr_engine *e)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&e->ring);

	while (KVR_UNLIKELY(!sqe)) {
		/* SQ full: hand it to the kernel; completions stay in the CQ. */
		int rc = io_uring_submit(&e->ring);

		if (rc > 0)
			e->stats.submits++;
		else if (rc < 0 && rc != -EBUSY && rc != -EAGAIN && rc != -EINTR)
			kvr_log(e, KVR_LOG_WARN, "io_uring_submit: %s", strerror(-rc));
		if (rc <= 0)
			reap(e); /* make CQ room; completions only queue work */
		sqe = io_uring_get_sqe(&e->ring);
	}
	return sqe;
}

void kvr_submit_if_idle(kvr_engine *e)
{
	if (e->in_poll)
		return;
	run_flushers(e);
	if (io_uring_sq_ready(&e->ring) && io_uring_submit(&e->ring) > 0)
		e->stats.submits++;
}

void kvr_notify(kvr_engine *e)
{
	uint64_t one = 1;

	if (e->notified || e->in_poll)
		return;
	e->notified = true;
	if (write(e->notify_fd, &one, sizeof(one)) < 0) {
		/* a full counter still reads as readable: nothing to do */
	}
}

static int64_t deadline_wait_ns(kvr_engine *e, int64_t wait_ns)
{
	struct kvr_timer *t = kvr_timer_first(&e->timers);

	if (!t)
		return wait_ns;
	int64_t d = t->when_ns > e->now_ns ? (int64_t)(t->when_ns - e->now_ns) : 0;

	return wait_ns < 0 || d < wait_ns ? d : wait_ns;
}

KVR_EXPORT int kvr_engine_poll(kvr_engine *e, int timeout_ms)
{
	uint64_t end_ns, cnt;
	int ran = 0, rc = 0;

	if (!e)
		return -EINVAL;
	if (e->in_cb || e->in_poll)
		return -EBUSY;
	e->in_poll = true;
	/* Clear the host-visible readiness; the kernel sets it again for every
	 * CQE posted after this point. EAGAIN just means nothing was pending. */
	if (read(e->notify_fd, &cnt, sizeof(cnt)) < 0)
		cnt = 0;
	e->notified = false;
	e->woken = false;
	e->now_ns = kvr_now_ns();
	end_ns = timeout_ms > 0 ? e->now_ns + (uint64_t)timeout_ms * 1000000ull : 0;
	for (;;) {
		int64_t wait_ns = 0;

		if (!e->done_head && !e->stop) {
			if (timeout_ms < 0)
				wait_ns = -1;
			else if (timeout_ms > 0)
				wait_ns = end_ns > e->now_ns ? (int64_t)(end_ns - e->now_ns) : 0;
			wait_ns = deadline_wait_ns(e, wait_ns);
		}
		rc = submit_and_reap(e, wait_ns);
		if (rc < 0)
			break;
		kvr_timer_run(&e->timers, e->now_ns);
		if (e->wake_due && e->wake_fn) {
			/* Before the waiting batches start, so that what it
			 * submits joins this round. */
			e->wake_due = false;
			e->in_cb = true;
			e->wake_fn(e->wake_ctx);
			e->in_cb = false;
		}
		kvr_batches_start_waiting(e);
		ran += kvr_batches_run_done(e);
		if (ran || timeout_ms == 0 || e->stop)
			break;
		if (timeout_ms > 0 && e->now_ns >= end_ns)
			break;
		if (e->woken) /* kvr_engine_wake() ended the wait */
			break;
	}
	/* Callbacks may have queued SQEs: hand them to the kernel now, so the
	 * host's fd reflects them and nothing waits for the next poll. */
	run_flushers(e);
	if (io_uring_sq_ready(&e->ring) && io_uring_submit(&e->ring) > 0)
		e->stats.submits++;
	e->in_poll = false;
	if (e->done_head)
		kvr_notify(e);
	return rc < 0 ? rc : ran;
}

KVR_EXPORT int kvr_engine_next_timeout(kvr_engine *e)
{
	struct kvr_timer *t;
	uint64_t now;

	if (!e)
		return -1;
	if (e->done_head || io_uring_sq_ready(&e->ring))
		return 0;
	t = kvr_timer_first(&e->timers);
	if (!t)
		return -1;
	now = kvr_now_ns();
	if (t->when_ns <= now)
		return 0;
	uint64_t ms = (t->when_ns - now + 999999) / 1000000;

	return ms > INT_MAX ? INT_MAX : (int)ms;
}

KVR_EXPORT int kvr_engine_run(kvr_engine *e)
{
	if (!e)
		return -EINVAL;
	e->stop = false;
	while (!e->stop) {
		int rc = kvr_engine_poll(e, -1);

		if (rc < 0)
			return rc;
	}
	e->stop = false;
	return 0;
}

KVR_EXPORT void kvr_engine_stop(kvr_engine *e)
{
	if (e)
		__atomic_store_n(&e->stop, true, __ATOMIC_RELEASE);
}

KVR_EXPORT int kvr_engine_wake(kvr_engine *e)
{
	uint64_t one = 1;

	if (!e)
		return -EINVAL;
	/* The wake fd ends a blocked io_uring wait; the notify fd is what an
	 * embedding host watches. Both are plain eventfd writes. */
	if (write(e->wake_fd, &one, sizeof(one)) < 0 || write(e->notify_fd, &one, sizeof(one)) < 0)
		return 0; /* counter saturated: already readable */
	return 0;
}

KVR_EXPORT int kvr_engine_set_wake_cb(kvr_engine *e, void (*fn)(void *ctx), void *ctx)
{
	if (!e)
		return -EINVAL;
	if (e->in_cb)
		return -EBUSY;
	e->wake_fn = fn;
	e->wake_ctx = ctx;
	return 0;
}

KVR_EXPORT int kvr_engine_fd(kvr_engine *e)
{
	return e ? e->notify_fd : -EINVAL;
}

int kvr_engine_drain_timeout(kvr_engine *e, const uint64_t *cond, uint32_t timeout_ms)
{
	bool was = e->in_poll;
	uint64_t end = timeout_ms ? kvr_now_ns() + (uint64_t)timeout_ms * 1000000ull : 0;
	int rc = 0;

	e->in_poll = true;
	while (*cond) {
		if (end && kvr_now_ns() >= end) {
			rc = -ETIMEDOUT;
			break;
		}
		rc = submit_and_reap(e, end ? 10000000 : 100000000); /* 10 / 100 ms slices */
		if (rc < 0)
			break;
		kvr_timer_run(&e->timers, e->now_ns);
	}
	e->in_poll = was;
	return rc;
}

int kvr_engine_drain(kvr_engine *e, const uint64_t *cond)
{
	return kvr_engine_drain_timeout(e, cond, 0);
}

void kvr_flush_add(kvr_engine *e, struct kvr_flush *f)
{
	f->next = e->flushers;
	e->flushers = f;
}

void kvr_flush_del(kvr_engine *e, struct kvr_flush *f)
{
	for (struct kvr_flush **p = &e->flushers; *p; p = &(*p)->next) {
		if (*p == f) {
			*p = f->next;
			return;
		}
	}
}

KVR_EXPORT int kvr_engine_stats(kvr_engine *e, struct kvr_stats *user)
{
	struct kvr_stats all, *out = &all;

	if (!e || !user || user->size < offsetof(struct kvr_stats, batches))
		return -EINVAL;
	*out = e->stats;
	/* Per-object and path counters live on the targets (closed ones
	 * included): counted once, where the work happens. */
	for (kvr_target *t = e->targets; t; t = t->next) {
		out->batches += t->stats.batches;
		out->puts += t->stats.puts;
		out->gets += t->stats.gets;
		out->exists += t->stats.exists;
		out->removes += t->stats.removes;
		out->errors += t->stats.errors;
		out->misses += t->stats.misses;
		out->timeouts += t->stats.timeouts;
		out->bytes_put += t->stats.bytes_put;
		out->bytes_got += t->stats.bytes_got;
		for (int i = 0; i < KVR_LAT_BUCKETS; i++)
			out->lat_us[i] += t->stats.lat_us[i];
		out->checksum_errors += t->stats.checksum_errors;
		out->evictions += t->stats.evictions;
		out->bounce_bytes += t->stats.bounce_bytes;
		out->fixed_ios += t->stats.fixed_ios;
		out->plain_ios += t->stats.plain_ios;
	}
	kvr_stats_copy_out(user, &all);
	return 0;
}

void kvr_engine_ext_add(kvr_engine *e, struct kvr_engine_ext *x)
{
	x->next = e->exts;
	e->exts = x;
}

struct kvr_engine_ext *kvr_engine_ext_find(kvr_engine *e, const void *key)
{
	for (struct kvr_engine_ext *x = e->exts; x; x = x->next)
		if (x->key == key)
			return x;
	return NULL;
}

KVR_EXPORT void kvr_engine_destroy(kvr_engine *e)
{
	if (!e)
		return;
	e->destroying = true;
	if (e->ring.ring_fd > 0 && e->pool) {
		for (kvr_target *t = e->targets; t; t = t->next) {
			if (!t->closed)
				kvr_target_close(t);
		}
		kvr_batches_cancel_all(e);
		e->in_poll = false;
		while (e->done_head)
			kvr_batches_run_done(e);
		while (e->exts) {
			struct kvr_engine_ext *x = e->exts;

			e->exts = x->next;
			x->fini(x);
		}
		/* The wake read is still armed: cancel it so the kernel is done
		 * with wake_buf before the engine's memory goes. */
		if (e->wake_armed) {
			struct io_uring_sqe *sqe = kvr_sqe(e);

			io_uring_prep_cancel(sqe, &e->wake_io, 0);
			io_uring_sqe_set_data(sqe, NULL);
			for (int i = 0; i < 100 && e->wake_armed; i++)
				submit_and_reap(e, 10000000);
		}
	}
	for (kvr_target *t = e->targets, *n; t; t = n) {
		n = t->next;
		free(t);
	}
	if (e->ring.ring_fd > 0) {
		kvr_registry_fini(e);
		io_uring_queue_exit(&e->ring);
	}
	kvr_timer_heap_fini(&e->timers);
	if (e->notify_fd >= 0)
		close(e->notify_fd);
	if (e->wake_fd >= 0)
		close(e->wake_fd);
	free(e->pool);
	free(e);
}
