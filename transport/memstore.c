/* SPDX-License-Identifier: MIT */
/*
 * The memory store: a pool of host memory (huge pages when the system has
 * them) registered with the engine, so transports can send from and receive
 * into it with fixed buffers. Puts and gets are copies between the caller's
 * SGL and the pool, done at once; the engine still defers every callback to
 * the poll loop.
 */
#include "transport/store.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define MEM_UNIT 4096

struct memstore {
	struct kvr_store s;
	uint8_t *pool;
	size_t pool_len;
	kvr_mr *mr;
};

static void sgl_to_pool(uint8_t *dst, const struct kvr_sgx *sgx, uint32_t nsge)
{
	for (uint32_t i = 0; i < nsge; i++) {
		memcpy(dst, sgx[i].addr, sgx[i].len);
		dst += sgx[i].len;
	}
}

static void pool_to_sgl(const struct kvr_sgx *sgx, const uint8_t *src, uint64_t len)
{
	for (uint32_t i = 0; len; i++) {
		size_t n = sgx[i].len < len ? sgx[i].len : len;

		memcpy(sgx[i].addr, src, n);
		src += n;
		len -= n;
	}
}

static void mem_put(kvr_target *t, struct kvr_req **reqs, uint32_t n)
{
	struct memstore *m = (struct memstore *)t;

	for (uint32_t i = 0; i < n; i++) {
		const struct kvr_objd *o = reqs[i]->o;
		int64_t off = kvr_store_alloc(&m->s, o->total);
		struct kvr_entry *en;

		if (off < 0) {
			kvr_req_done(reqs[i], off);
			continue;
		}
		sgl_to_pool(m->pool + off, o->sgx, o->nsge);
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
			pool_to_sgl(o->sgx, m->pool + en->off, en->len);
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
	kvr_store_fini(&m->s);
	pool_free(m);
	return 0;
}

static const struct kvr_target_ops mem_ops = {
    .name = "mem",
    .put = mem_put,
    .get = mem_get,
    .exists = kvr_store_exists,
    .remove = mem_remove,
    .stats = kvr_store_stats,
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
	rc = kvr_mem_register(e, m->pool, size, KVR_MEM_HOST, &m->mr);
	if (rc) {
		kvr_target_forget(&m->s.t);
		kvr_store_fini(&m->s);
		pool_free(m);
		free(m);
		return rc;
	}
	kvr_log(e, KVR_LOG_INFO, "memory store: %llu bytes%s", (unsigned long long)size,
		huge ? " (huge pages)" : "");
	*out = &m->s.t;
	return 0;
}
