/* SPDX-License-Identifier: MIT */
/*
 * The memory store: a pool of host memory (huge pages when the system has
 * them) registered with the engine, so transports can send from and receive
 * into it with fixed buffers. Puts and gets are copies between the caller's
 * SGL and the pool, done at once; the engine still defers every callback to
 * the poll loop.
 *
 * Faulting a pool in costs seconds per GiB on a fresh machine. By default
 * kvr_mem_register does it (pinning the pages) before the open returns; with
 * KVR_STORE_BACKGROUND_FAULT a thread faults the pool in front to back
 * (prefault.c) while the store already serves, and a timer of the loop pins
 * each 1 GiB piece as soon as it is all faulted in: pinning present pages is
 * quick (milliseconds per GiB), and io_uring registration belongs on the
 * engine's thread. The whole pool is usable from the start rather than a
 * growing faulted prefix, so that an early burst of puts never evicts or
 * fails for room the pool has; the price is that such a put may fault its
 * pages itself.
 */
#include "engine/sgl.h"
#include "transport/prefault.h"
#include "transport/store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define MEM_UNIT      4096
#define FAULT_TICK_NS 100000000ull /* how often the loop looks at progress */

struct memstore {
	struct kvr_store s;
	uint8_t *pool;
	size_t pool_len;
	kvr_mr *mr;
	/* background faulting (KVR_STORE_BACKGROUND_FAULT) */
	struct kvr_prefault *pf; /* NULL once done, or never started */
	struct kvr_timer tick;
	uint64_t ready;	      /* bytes faulted in, their pieces pinned */
	uint32_t pinned;      /* pieces [0, pinned) are done with */
	uint64_t fault_start; /* kvr_now_ns() when it began */
	uint64_t logged;      /* `ready` when progress was last logged */
};

static void mem_put(kvr_target *t, struct kvr_req **reqs, uint32_t n)
{
	struct memstore *m = (struct memstore *)t;

	for (uint32_t i = 0; i < n; i++) {
		const struct kvr_objd *o = reqs[i]->o;
		int64_t off = kvr_store_alloc(&m->s, o->total);
		struct kvr_entry *en;
		struct kvr_sgl cur;

		if (off < 0) {
			kvr_req_done(reqs[i], off);
			continue;
		}
		kvr_sgl_init(&cur, o->sgx, o->nsge, o->total, NULL);
		kvr_sgl_copy_out(&cur, m->pool + off, o->total);
		en = kvr_store_entry(&m->s, o, (uint64_t)off, o->total,
				     kvr_crc32c(0, m->pool + off, o->total));
		if (!en) {
			kvr_alloc_put(&m->s.al, (uint64_t)off, kvr_alloc_round(&m->s.al, o->total));
			kvr_req_done(reqs[i], -ENOMEM);
			continue;
		}
		kvr_store_commit(&m->s, en);
		kvr_req_done(reqs[i], (int64_t)o->total);
	}
}

static void mem_get(kvr_target *t, struct kvr_req **reqs, uint32_t n)
{
	struct memstore *m = (struct memstore *)t;

	for (uint32_t i = 0; i < n; i++) {
		const struct kvr_objd *o = reqs[i]->o;
		struct kvr_entry *en = kvr_store_pin(&m->s, o);
		int64_t res;

		if (!en) {
			kvr_req_done(reqs[i], -ENOENT);
			continue;
		}
		if (en->len > o->total) {
			res = -EMSGSIZE;
		} else if (kvr_crc32c(0, m->pool + en->off, en->len) != en->crc) {
			kvr_store_drop_corrupt(&m->s, en);
			res = -EIO;
		} else {
			struct kvr_sgl cur;

			kvr_sgl_init(&cur, o->sgx, o->nsge, en->len, NULL);
			kvr_sgl_copy_in(&cur, m->pool + en->off, en->len);
			res = (int64_t)en->len;
		}
		kvr_store_unref(&m->s, en);
		kvr_req_done(reqs[i], res);
	}
}

static void mem_remove(kvr_target *t, struct kvr_req **reqs, uint32_t n)
{
	struct memstore *m = (struct memstore *)t;

	for (uint32_t i = 0; i < n; i++) {
		const struct kvr_objd *o = reqs[i]->o;
		struct kvr_entry *en = kvr_index_find(&m->s.ix, o->key, o->key_len, o->hash);

		if (!en) {
			kvr_req_done(reqs[i], -ENOENT);
			continue;
		}
		kvr_index_unlink(&m->s.ix, en);
		kvr_store_unref(&m->s, en);
		kvr_req_done(reqs[i], 0);
	}
}

/* "1.5 GiB" or "256 MiB" */
static const char *size_str(char *buf, size_t len, uint64_t n)
{
	if (n >= (1ull << 30))
		snprintf(buf, len, "%.1f GiB", (double)n / (double)(1ull << 30));
	else
		snprintf(buf, len, "%.0f MiB", (double)n / (double)(1ull << 20));
	return buf;
}

static void log_progress(struct memstore *m, uint64_t now, const char *how)
{
	char a[32], b[32];

	kvr_log(m->s.t.e, KVR_LOG_INFO, "pool: %s of %s ready, %.1f s%s",
		size_str(a, sizeof(a), m->ready), size_str(b, sizeof(b), m->pool_len),
		(double)(now - m->fault_start) / 1e9, how);
	m->logged = m->ready;
}

/* A line per GiB, or per sixteenth of a larger pool: a few dozen at most. */
static bool progress_due(const struct memstore *m)
{
	uint64_t step = m->pool_len / 16 > KVR_FIXED_MAX ? m->pool_len / 16 : KVR_FIXED_MAX;

	return m->ready - m->logged >= step;
}

/* Pin every piece the faulting has wholly covered; then `ready` moves. */
static void pin_covered(struct memstore *m, uint64_t done)
{
	kvr_engine *e = m->s.t.e;

	for (;; m->pinned++) {
		uint64_t end = (uint64_t)(m->pinned + 1) * KVR_FIXED_MAX;
		int rc;

		if (end > m->pool_len)
			end = m->pool_len;
		if (m->pinned * KVR_FIXED_MAX >= m->pool_len || end > done)
			break;
		rc = kvr_mr_pin_piece(e, m->mr, m->pinned);
		if (rc)
			kvr_log(e, KVR_LOG_WARN, "pool: GiB %u stays on the plain path: %s",
				m->pinned, strerror(-rc));
	}
	m->ready = done;
}

static void fault_tick(struct kvr_timer *t)
{
	struct memstore *m = KVR_CONTAINER_OF(t, struct memstore, tick);
	uint64_t now = kvr_now_ns();
	int err;
	uint64_t done = kvr_prefault_done(m->pf, &err);

	pin_covered(m, done);
	if (done == m->pool_len || err) {
		kvr_prefault_stop(m->pf); /* its thread has returned */
		m->pf = NULL;
		if (err) {
			kvr_log(m->s.t.e, KVR_LOG_WARN,
				"pool: faulting stopped early (%s); the rest faults on first use",
				strerror(-err));
			/* Hand the rest over as it is, so that nothing waits for
			 * it (an RDMA registration faults it now, or fails). */
			for (uint32_t i = m->pinned; i < kvr_mr_npieces(m->mr); i++)
				kvr_mr_pin_piece(m->s.t.e, m->mr, i);
		}
		log_progress(m, now, err ? " (stopped)" : " (all)");
		return;
	}
	if (progress_due(m))
		log_progress(m, now, "");
	if (kvr_timer_add(&m->s.t.e->timers, &m->tick, now + FAULT_TICK_NS))
		kvr_log(m->s.t.e, KVR_LOG_WARN, "pool: no memory for the progress timer");
}

/* Start the background faulting; the store is usable already. */
static int fault_start(struct memstore *m, uint64_t rate)
{
	kvr_engine *e = m->s.t.e;
	int rc;

	m->fault_start = kvr_now_ns();
	m->tick.fn = fault_tick;
	rc = kvr_prefault_start(m->pool, m->pool_len, rate, &m->pf);
	if (rc)
		return rc;
	rc = kvr_timer_add(&e->timers, &m->tick, m->fault_start + FAULT_TICK_NS);
	if (rc) {
		kvr_prefault_stop(m->pf);
		m->pf = NULL;
		return rc;
	}
	return 0;
}

static void fault_stop(struct memstore *m)
{
	if (!m->pf)
		return;
	kvr_timer_del(&m->s.t.e->timers, &m->tick);
	kvr_prefault_stop(m->pf);
	m->pf = NULL;
	kvr_log(m->s.t.e, KVR_LOG_DEBUG, "pool: faulting cancelled (store closed)");
}

static void pool_free(struct memstore *m)
{
	if (m->mr)
		kvr_mem_deregister(m->s.t.e, m->mr);
	if (m->pool)
		munmap(m->pool, m->pool_len);
	m->mr = NULL;
	m->pool = NULL;
}

static int mem_close(kvr_target *t)
{
	struct memstore *m = (struct memstore *)t;

	/* Every op finishes inside its submit call: nothing is in flight. */
	fault_stop(m);
	kvr_store_fini(&m->s);
	pool_free(m);
	return 0;
}

static void mem_stats(kvr_target *t, struct kvr_stats *st)
{
	struct memstore *m = (struct memstore *)t;

	kvr_store_stats(t, st);
	st->pool_bytes = m->pool_len;
	st->pool_bytes_ready = m->ready;
}

static const struct kvr_target_ops mem_ops = {
    .name = "mem",
    .put = mem_put,
    .get = mem_get,
    .exists = kvr_store_exists,
    .remove = mem_remove,
    .stats = mem_stats,
    .close = mem_close,
};

/* Huge pages first (fewer TLB misses, fewer pages to pin), then THP. */
static uint8_t *pool_map(size_t len, bool *huge)
{
	void *p = MAP_FAILED;

	*huge = false;
	if (len % (2u << 20) == 0) {
		/* Reserved up front: without enough huge pages this fails here
		 * rather than faulting later. */
		p = mmap(NULL, len, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB, -1, 0);
		*huge = p != MAP_FAILED;
	}
	if (p == MAP_FAILED) {
		p = mmap(NULL, len, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (p == MAP_FAILED)
			return NULL;
		madvise(p, len, MADV_HUGEPAGE);
	}
	return p;
}

int kvr_memstore_open(kvr_engine *e, const char *spec, const struct kvr_store_opts *o,
		      kvr_target **out)
{
	uint64_t size = 0;
	struct memstore *m;
	bool huge;
	int rc;

	if (o->capacity)
		size = o->capacity;
	else if (kvr_parse_size(spec, &size))
		size = 0;
	size &= ~(uint64_t)(MEM_UNIT - 1);
	if (!size || size > (1ull << 46)) {
		kvr_set_errmsg(e, "bad memory store size '%s'", spec);
		return -EINVAL;
	}
	m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	m->pool_len = size;
	m->pool = pool_map(size, &huge);
	if (!m->pool) {
		kvr_set_errmsg(e, "cannot map a %llu-byte memory pool", (unsigned long long)size);
		free(m);
		return -ENOMEM;
	}
	rc = kvr_store_init(&m->s, e, &mem_ops, o, size, MEM_UNIT);
	if (rc) {
		pool_free(m);
		free(m);
		return rc;
	}
	m->s.base = m->pool;
	if (o->flags & KVR_STORE_BACKGROUND_FAULT) {
		rc = kvr_mem_register_deferred(e, m->pool, size, &m->mr);
		if (!rc) {
			rc = fault_start(m, o->fault_rate);
			if (rc) {
				kvr_set_errmsg(e, "cannot start the pool's faulting thread: %s",
					       strerror(-rc));
				kvr_mem_deregister(e, m->mr);
				m->mr = NULL;
			}
		}
	} else {
		rc = kvr_mem_register(e, m->pool, size, KVR_MEM_HOST, &m->mr);
		m->ready = size;
	}
	if (rc) {
		kvr_target_forget(&m->s.t);
		kvr_store_fini(&m->s);
		pool_free(m);
		free(m);
		return rc;
	}
	kvr_log(e, KVR_LOG_INFO, "memory store: %llu bytes%s%s", (unsigned long long)size,
		huge ? " (huge pages)" : "", m->pf ? ", faulting it in the background" : "");
	*out = &m->s.t;
	return 0;
}
