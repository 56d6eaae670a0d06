/* SPDX-License-Identifier: MIT */
/*
 * Integration: 10,000 random objects through a memory store and a file store.
 *
 * Every object has a random key (1-512 bytes, printable or binary), a
 * log-uniform size (1 B - 4 MiB) and is put from a random scatter-gather list
 * (1-64 SGEs of random lengths, some SGE addresses 4 KiB-aligned, some only
 * 512-aligned, some at odd offsets). Its bytes are a pure function of
 * (object, version), so nothing keeps copies: puts generate them straight
 * into the SGEs and gets check them in place. Each get reads into a
 * different, freshly zeroed SGL of random shape whose capacity is at least
 * the object's size, and checks the result length, every byte, and that the
 * capacity beyond the object was left untouched.
 *
 * Per store: put all; exists all; get all (plus -EMSGSIZE probes); remove
 * 10 % (then remove again: -ENOENT); overwrite 5 % with new sizes; exists
 * all and get the changed ones again; check the counters (no eviction, no
 * checksum error, objects and bytes in use). The file store is then closed
 * and reopened (same engine) and every object is read back again, and
 * reopened once more from a new engine to check what the index holds.
 *
 * Environment: KVT_SEED (default: time-based, printed), KVT_OBJECTS
 * (default 10000).
 */
#include "fixtures.h"
#include "server_proc.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define NOBJ_DEFAULT 10000
#define MAX_OBJ	     (4u << 20)
#define MAX_SGES     64
#define BATCH	     64
#define NSLOT	     5
#define SLOT_BYTES   (96ull << 20)
#define ARENA	     (512ull << 20) /* NSLOT slots of SLOT_BYTES */
#define PAGE	     4096u
#define MAX_EXTRA    (16u << 10) /* get capacity beyond the object, at most */
/* Arena bytes one SGE can take beyond its length (alignment + offset). */
#define SGE_SLACK (2 * PAGE)
#define STALL_MS  60000 /* no batch completing for this long is a failure */

_Static_assert(NSLOT *SLOT_BYTES <= ARENA, "arena too small for its slots");
_Static_assert(MAX_OBJ + MAX_EXTRA + MAX_SGES * SGE_SLACK <= SLOT_BYTES, "slot too small");

struct robj {
	uint8_t *key;
	uint16_t key_len;
	bool present;
	uint32_t ver;	  /* content version */
	uint64_t len;	  /* current length */
	uint64_t len_new; /* length of the planned overwrite (0: none) */
	bool remove;	  /* planned for removal */
};

/* One piece of work: an op on object idx expecting result `expect`. */
struct item {
	uint32_t idx;
	int64_t expect; /* >0: bytes (get/put/exists), 0, or -errno */
	uint32_t ver;	/* put: the version to write */
	uint64_t cap;	/* get: SGL capacity (0: choose) */
};

struct run;

struct slot {
	struct run *r;
	bool busy;
	enum kvr_op op;
	uint8_t *mem;
	uint32_t n;
	struct item it[BATCH];
	uint32_t nsge[BATCH];
	kvr_sge sgl[BATCH][MAX_SGES];
};

struct run {
	const char *name;
	kvr_engine *e;
	kvr_target *t;
	uint8_t *arena;
	kvr_mr *mr;
	struct robj *obj;
	uint32_t nobj;
	uint64_t seed;
	uint64_t rng;
	struct slot slot[NSLOT];
	uint32_t inflight;
	/* results */
	uint64_t failures;
	char first_failure[512];
	uint64_t checked_objs, checked_bytes, misses_ok, msgsize_ok;
	uint64_t puts, put_bytes;
	bool remote; /* a tcp target: its counters live on the server */
};

/* ---------------------------------------------------------------- content */

/* Byte `off` of version `ver` of object `idx` is byte off % 8 of word off / 8
 * of a splitmix64 stream keyed by (seed, idx, ver). */
static uint64_t content_seed(const struct run *r, uint32_t idx, uint32_t ver)
{
	return r->seed ^ ((uint64_t)idx * 0x9e3779b97f4a7c15ull) ^
	       ((uint64_t)(ver + 1) * 0xc2b2ae3d27d4eb4full);
}

static bool all_zero(const uint8_t *p, size_t len)
{
	return len == 0 || (p[0] == 0 && memcmp(p, p + 1, len - 1) == 0);
}

/* ----------------------------------------------------------------- random */

static uint64_t rnd(struct run *r, uint64_t n)
{
	return kvt_rand(&r->rng) % n;
}

/* Log-uniform size in [1, MAX_OBJ]: a random octave, then uniform in it. */
static uint64_t rand_size(struct run *r)
{
	uint32_t b = (uint32_t)rnd(r, 22); /* octaves [2^0, 2^1) ... [2^21, 2^22) */

	if (rnd(r, 256) == 0)
		return MAX_OBJ; /* the largest size itself, now and then */
	return (1ull << b) + rnd(r, 1ull << b);
}

static uint64_t round_page(uint64_t v)
{
	return (v + PAGE - 1) / PAGE * PAGE;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/*
 * Lay `total` bytes out as up to MAX_SGES pieces at random places of the
 * slot memory starting at *cur (bump allocation: pieces never overlap).
 * Piece lengths: random cut points, sometimes rounded to 4 KiB. Addresses:
 * 4 KiB-aligned, 512-aligned, or at a random byte offset.
 */
static uint32_t make_sgl(struct run *r, uint8_t **cur, uint64_t total, kvr_sge *sgl)
{
	uint64_t cuts[MAX_SGES + 1];
	uint32_t want = 1 + (uint32_t)rnd(r, MAX_SGES), n = 0, k = 0;
	bool page_cuts = rnd(r, 3) == 0;

	if (rnd(r, 4) == 0)
		want = 1 + (uint32_t)rnd(r, 4); /* plenty of short SGLs too */
	if (want > total)
		want = (uint32_t)total;
	for (uint32_t i = 0; i + 1 < want; i++) {
		uint64_t c = 1 + rnd(r, total - 1);

		if (page_cuts)
			c = c / PAGE * PAGE;
		if (c > 0 && c < total)
			cuts[k++] = c;
	}
	cuts[k++] = total;
	qsort(cuts, k, sizeof(cuts[0]), cmp_u64);
	for (uint32_t i = 0; i < k; i++) {
		uint64_t len = cuts[i] - (i ? cuts[i - 1] : 0);
		uintptr_t a = ((uintptr_t)*cur + PAGE - 1) & ~(uintptr_t)(PAGE - 1);

		if (!len)
			continue; /* duplicate cut */
		switch (rnd(r, 8)) {
		case 0:
		case 1:
		case 2:
		case 3:
			break; /* page-aligned */
		case 4:
			a += 512 * (1 + rnd(r, 7)); /* 512-aligned, not 4 KiB-aligned */
			break;
		case 5:
			a += 1 + rnd(r, 7); /* just past a page boundary */
			break;
		default:
			a += 1 + rnd(r, PAGE - 1);
			break;
		}
		sgl[n].addr = (void *)a;
		sgl[n].len = len;
		*cur = (uint8_t *)a + len;
		n++;
	}
	return n;
}

/* ------------------------------------------------------------ the driver */

static void record_failure(struct run *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void record_failure(struct run *r, const char *fmt, ...)
{
	va_list ap;

	if (r->failures++ == 0) {
		va_start(ap, fmt);
		vsnprintf(r->first_failure, sizeof(r->first_failure), fmt, ap);
		va_end(ap);
	}
	if (r->failures <= 10) {
		char buf[512];

		va_start(ap, fmt);
		vsnprintf(buf, sizeof(buf), fmt, ap);
		va_end(ap);
		fprintf(stderr, "[%s] FAIL: %s\n", r->name, buf);
	}
}

static const char *op_name(enum kvr_op op)
{
	static const char *n[] = {"put", "get", "exists", "remove"};

	return n[op];
}

static void verify_get(struct run *r, struct slot *s, uint32_t i, int64_t res)
{
	const struct item *it = &s->it[i];
	const struct robj *o = &r->obj[it->idx];
	uint64_t seed = content_seed(r, it->idx, o->ver), poff = 0;

	for (uint32_t j = 0; j < s->nsge[i]; j++) {
		const uint8_t *p = s->sgl[i][j].addr;
		uint64_t l = s->sgl[i][j].len;
		uint64_t data = poff < (uint64_t)res ? (uint64_t)res - poff : 0;

		if (data > l)
			data = l;
		if (data) {
			size_t bad = kvt_check_at(p, data, seed, poff);

			if (bad != data) {
				record_failure(r,
					       "get obj %u (len %" PRIu64
					       ", %u SGEs): wrong byte at offset %" PRIu64
					       " (SGE %u at %p+%zu): got 0x%02x",
					       it->idx, o->len, s->nsge[i], poff + bad, j,
					       (void *)p, bad, p[bad]);
				return;
			}
		}
		if (!all_zero(p + data, l - data)) {
			record_failure(
			    r, "get obj %u (len %" PRIu64 "): wrote past the object's end (SGE %u)",
			    it->idx, o->len, j);
			return;
		}
		poff += l;
	}
	r->checked_objs++;
	r->checked_bytes += (uint64_t)res;
}

static void batch_cb(void *ctx, size_t n, const int64_t *res)
{
	struct slot *s = ctx;
	struct run *r = s->r;

	if (n != s->n)
		record_failure(r, "%s batch: callback for %zu objects, submitted %u",
			       op_name(s->op), n, s->n);
	for (uint32_t i = 0; i < s->n && i < n; i++) {
		struct item *it = &s->it[i];
		struct robj *o = &r->obj[it->idx];

		if (res[i] != it->expect) {
			record_failure(r,
				       "%s obj %u (len %" PRIu64 ", key_len %u): result %" PRId64
				       ", expected %" PRId64,
				       op_name(s->op), it->idx, o->len, o->key_len, res[i],
				       it->expect);
			continue;
		}
		switch (s->op) {
		case KVR_OP_PUT:
			o->present = true;
			o->ver = it->ver;
			o->len = (uint64_t)res[i];
			r->puts++;
			r->put_bytes += (uint64_t)res[i];
			break;
		case KVR_OP_GET:
			if (res[i] > 0)
				verify_get(r, s, i, res[i]);
			else if (res[i] == -EMSGSIZE)
				r->msgsize_ok++;
			else
				r->misses_ok++;
			break;
		case KVR_OP_EXISTS:
			if (res[i] < 0)
				r->misses_ok++;
			break;
		case KVR_OP_REMOVE:
			if (res[i] == 0)
				o->present = false;
			else
				r->misses_ok++;
			break;
		}
	}
	s->busy = false;
	r->inflight--;
}

/* Room a put/get of this item may need in slot memory. */
static uint64_t item_room(const struct run *r, enum kvr_op op, const struct item *it)
{
	uint64_t bytes;

	if (op == KVR_OP_PUT)
		bytes = (uint64_t)it->expect;
	else if (op == KVR_OP_GET)
		bytes = it->cap ? it->cap : r->obj[it->idx].len + MAX_EXTRA;
	else
		return 0;
	return bytes + MAX_SGES * SGE_SLACK;
}

/* Fill slot s with items[*next...] and submit it. */
static void submit_batch(struct run *r, struct slot *s, enum kvr_op op, const struct item *items,
			 size_t nitems, size_t *next)
{
	kvr_obj objs[BATCH];
	uint8_t *cur = s->mem, *end = s->mem + SLOT_BYTES;
	int rc;

	s->op = op;
	s->n = 0;
	while (*next < nitems && s->n < BATCH) {
		const struct item *it = &items[*next];
		struct robj *o = &r->obj[it->idx];
		uint32_t i = s->n;

		if ((uint64_t)(end - cur) < item_room(r, op, it))
			break;
		s->it[i] = *it;
		objs[i].key = o->key;
		objs[i].key_len = o->key_len;
		objs[i].sgl = NULL;
		objs[i].nsge = 0;
		s->nsge[i] = 0;
		if (op == KVR_OP_PUT) {
			uint64_t seed = content_seed(r, it->idx, it->ver), off = 0;

			s->nsge[i] = make_sgl(r, &cur, (uint64_t)it->expect, s->sgl[i]);
			for (uint32_t j = 0; j < s->nsge[i]; j++) {
				kvt_fill_at(s->sgl[i][j].addr, s->sgl[i][j].len, seed, off);
				off += s->sgl[i][j].len;
			}
		} else if (op == KVR_OP_GET) {
			uint64_t cap = it->cap;

			if (!cap) {
				cap = o->len;
				if (rnd(r, 4))
					cap += 1 + rnd(r, MAX_EXTRA);
				s->it[i].cap = cap;
			}
			s->nsge[i] = make_sgl(r, &cur, cap, s->sgl[i]);
			for (uint32_t j = 0; j < s->nsge[i]; j++)
				memset(s->sgl[i][j].addr, 0, s->sgl[i][j].len);
		}
		if (s->nsge[i]) {
			objs[i].sgl = s->sgl[i];
			objs[i].nsge = s->nsge[i];
		}
		s->n++;
		(*next)++;
	}
	assert_true(s->n > 0);
	s->busy = true;
	r->inflight++;
	rc = kvr_submit(r->t, op, objs, s->n, 0, batch_cb, s);
	if (rc) {
		record_failure(r, "kvr_submit(%s, %u objects): %d (%s)", op_name(op), s->n, rc,
			       kvr_strerror(rc));
		s->busy = false;
		r->inflight--;
	}
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Run every item through op, NSLOT batches in flight, until all completed. */
static void drive(struct run *r, enum kvr_op op, const struct item *items, size_t n)
{
	size_t next = 0;
	int64_t last_progress = now_ms();

	while ((next < n || r->inflight) && r->failures < 100) {
		for (uint32_t i = 0; i < NSLOT && next < n; i++)
			if (!r->slot[i].busy)
				submit_batch(r, &r->slot[i], op, items, n, &next);
		int rc = kvr_engine_poll(r->e, 1000);

		if (rc < 0) {
			record_failure(r, "kvr_engine_poll: %d (%s)", rc, kvr_strerror(rc));
			break;
		}
		if (rc > 0) {
			last_progress = now_ms();
		} else if (now_ms() - last_progress > STALL_MS) {
			record_failure(r, "%s: no batch completed in %d ms (%u in flight)",
				       op_name(op), STALL_MS, r->inflight);
			break;
		}
	}
	if (r->failures) {
		fprintf(stderr, "[%s] seed %" PRIu64 ": %" PRIu64 " failures\n", r->name, r->seed,
			r->failures);
		fail_msg("[%s] %s (seed %" PRIu64 ")", r->name, r->first_failure, r->seed);
	}
}

/* ---------------------------------------------------------------- objects */

static uint64_t key_hash(const uint8_t *k, size_t len)
{
	uint64_t h = 0xcbf29ce484222325ull;

	for (size_t i = 0; i < len; i++)
		h = (h ^ k[i]) * 0x100000001b3ull;
	return h;
}

/* Random unique keys and sizes; the plan of removals and overwrites. */
static void make_objects(struct run *r, uint32_t nobj)
{
	uint32_t tsize = 1;
	uint32_t *table;

	while (tsize < nobj * 2)
		tsize <<= 1;
	table = calloc(tsize, sizeof(*table));
	r->obj = calloc(nobj, sizeof(*r->obj));
	assert_non_null(table);
	assert_non_null(r->obj);
	r->nobj = nobj;
	for (uint32_t i = 0; i < nobj; i++) {
		struct robj *o = &r->obj[i];
		uint8_t key[KVR_MAX_KEY];
		uint32_t len;
		uint64_t h;

	again:
		switch (rnd(r, 20)) {
		case 0:
			len = 201 + (uint32_t)rnd(r, KVR_MAX_KEY - 200); /* long, up to the max */
			break;
		case 1:
		case 2:
		case 3:
		case 4:
			len = 33 + (uint32_t)rnd(r, 168);
			break;
		default:
			len = 1 + (uint32_t)rnd(r, 32);
			break;
		}
		if (rnd(r, 3) == 0) {
			for (uint32_t j = 0; j < len; j++)
				key[j] = (uint8_t)rnd(r, 256); /* binary, NULs included */
		} else {
			for (uint32_t j = 0; j < len; j++)
				key[j] = (uint8_t)(' ' + rnd(r, 95));
		}
		h = key_hash(key, len);
		for (uint32_t s = (uint32_t)h & (tsize - 1);; s = (s + 1) & (tsize - 1)) {
			if (!table[s]) {
				table[s] = i + 1;
				break;
			}
			struct robj *p = &r->obj[table[s] - 1];

			if (p->key_len == len && !memcmp(p->key, key, len))
				goto again; /* duplicate: draw another */
		}
		o->key = malloc(len);
		assert_non_null(o->key);
		memcpy(o->key, key, len);
		o->key_len = (uint16_t)len;
		o->len = rand_size(r);
		o->remove = rnd(r, 10) == 0;
		if (!o->remove && rnd(r, 20) == 0)
			o->len_new = rand_size(r);
	}
	free(table);
}

static void free_objects(struct run *r)
{
	for (uint32_t i = 0; i < r->nobj; i++)
		free(r->obj[i].key);
	free(r->obj);
	r->obj = NULL;
}

/* Capacity that holds every extent this run ever allocates, so neither
 * eviction nor fragmentation can fail a put (a multiple of 2 MiB, so the
 * memory store may use huge pages). */
static uint64_t capacity_needed(const struct run *r)
{
	uint64_t sum = 64ull << 20;

	for (uint32_t i = 0; i < r->nobj; i++)
		sum += round_page(r->obj[i].len) + round_page(r->obj[i].len_new);
	return (sum + (2u << 20) - 1) / (2u << 20) * (2u << 20);
}

static void run_init(struct run *r, const char *name, uint64_t seed, uint32_t nobj)
{
	memset(r, 0, sizeof(*r));
	r->name = name;
	r->seed = seed;
	r->rng = seed;
	make_objects(r, nobj);
	r->arena = kvt_alloc_mem(ARENA);
	for (uint32_t i = 0; i < NSLOT; i++) {
		r->slot[i].r = r;
		r->slot[i].mem = r->arena + i * SLOT_BYTES;
	}
}

static void engine_up(struct run *r)
{
	r->e = kvt_engine();
	assert_int_equal(kvr_mem_register(r->e, r->arena, ARENA, 0, &r->mr), 0);
}

static void run_fini(struct run *r)
{
	kvr_engine_destroy(r->e);
	r->e = NULL;
	kvt_free_mem(r->arena, ARENA);
	free_objects(r);
}

/* ------------------------------------------------------------------ phases */

static struct item *items_alloc(const struct run *r)
{
	/* every object, plus one -EMSGSIZE probe each at most */
	struct item *v = calloc((size_t)r->nobj * 2, sizeof(*v));

	assert_non_null(v);
	return v;
}

static void put_all(struct run *r, struct item *v)
{
	size_t n = 0;

	for (uint32_t i = 0; i < r->nobj; i++)
		v[n++] = (struct item){.idx = i, .expect = (int64_t)r->obj[i].len, .ver = 0};
	drive(r, KVR_OP_PUT, v, n);
}

/* exists for every object: its length, or -ENOENT once removed. */
static void exists_all(struct run *r, struct item *v)
{
	size_t n = 0;

	for (uint32_t i = 0; i < r->nobj; i++)
		v[n++] = (struct item){
		    .idx = i, .expect = r->obj[i].present ? (int64_t)r->obj[i].len : -ENOENT};
	drive(r, KVR_OP_EXISTS, v, n);
}

/* get (and verify) objects: all, or only those in `only` (a flag per object). */
static void get_some(struct run *r, struct item *v, const bool *only, bool probes)
{
	size_t n = 0;

	for (uint32_t i = 0; i < r->nobj; i++) {
		const struct robj *o = &r->obj[i];

		if (only && !only[i])
			continue;
		if (!o->present) {
			v[n++] =
			    (struct item){.idx = i, .expect = -ENOENT, .cap = 1 + rnd(r, 8192)};
			continue;
		}
		v[n++] = (struct item){.idx = i, .expect = (int64_t)o->len};
		if (probes && o->len >= 2 && rnd(r, 50) == 0) /* one byte short, or more */
			v[n++] = (struct item){
			    .idx = i, .expect = -EMSGSIZE, .cap = o->len - 1 - rnd(r, o->len - 1)};
	}
	/* shuffle, so that batches mix sizes, hits and misses */
	for (size_t i = n; i > 1; i--) {
		size_t j = rnd(r, i);
		struct item t = v[i - 1];

		v[i - 1] = v[j];
		v[j] = t;
	}
	drive(r, KVR_OP_GET, v, n);
}

static void stats_check(struct run *r, const char *when)
{
	struct kvr_stats st = {.size = sizeof(st)};
	uint64_t objects = 0, used = 0;

	if (r->remote)
		return; /* checked by bytes alone */
	for (uint32_t i = 0; i < r->nobj; i++) {
		if (r->obj[i].present) {
			objects++;
			used += round_page(r->obj[i].len);
		}
	}
	assert_int_equal(kvr_target_stats(r->t, &st), 0);
	if (st.evictions || st.checksum_errors || st.objects != objects || st.used_bytes != used)
		fail_msg("[%s] %s: evictions %" PRIu64 " checksum_errors %" PRIu64
			 " objects %" PRIu64 " (want %" PRIu64 ") used %" PRIu64 " (want %" PRIu64
			 "), seed %" PRIu64,
			 r->name, when, st.evictions, st.checksum_errors, st.objects, objects,
			 st.used_bytes, used, r->seed);
}

/* Everything short of reopening; counts what it removed and overwrote. */
static void exercise(struct run *r, uint32_t *nremoved, uint32_t *noverwritten)
{
	struct item *v = items_alloc(r);
	bool *changed = calloc(r->nobj, sizeof(bool));
	size_t n = 0;
	uint32_t removed = 0, overwritten = 0;

	assert_non_null(changed);
	put_all(r, v);
	stats_check(r, "after puts");
	exists_all(r, v);
	get_some(r, v, NULL, true);

	/* remove 10 %, then remove them again: -ENOENT */
	for (uint32_t i = 0; i < r->nobj; i++)
		if (r->obj[i].remove) {
			v[n++] = (struct item){.idx = i, .expect = 0};
			changed[i] = true;
			removed++;
		}
	drive(r, KVR_OP_REMOVE, v, n);
	for (size_t i = 0; i < n; i++)
		v[i].expect = -ENOENT;
	drive(r, KVR_OP_REMOVE, v, n);

	/* overwrite 5 % of the rest with a new version of another size */
	n = 0;
	for (uint32_t i = 0; i < r->nobj; i++)
		if (r->obj[i].len_new) {
			v[n++] =
			    (struct item){.idx = i, .expect = (int64_t)r->obj[i].len_new, .ver = 1};
			changed[i] = true;
			overwritten++;
		}
	drive(r, KVR_OP_PUT, v, n);

	exists_all(r, v);
	get_some(r, v, changed, true);
	stats_check(r, "after removes and overwrites");
	assert_int_equal(r->failures, 0);
	free(changed);
	free(v);
	*nremoved = removed;
	*noverwritten = overwritten;
}

static uint64_t present_bytes(const struct run *r, uint32_t *count)
{
	uint64_t b = 0;

	*count = 0;
	for (uint32_t i = 0; i < r->nobj; i++)
		if (r->obj[i].present) {
			b += r->obj[i].len;
			(*count)++;
		}
	return b;
}

static void print_summary(struct run *r, uint32_t removed, uint32_t overwritten, double secs,
			  const char *extra)
{
	uint32_t live;
	uint64_t live_bytes = present_bytes(r, &live);

	printf(
	    "random_objects[%s]: %u objects put (%.2f GiB in %" PRIu64 " puts), %" PRIu64
	    " gets verified byte-for-byte (%.2f GiB), %" PRIu64 " misses and %" PRIu64
	    " EMSGSIZE as expected, %u removed, %u overwritten, %u live (%.2f GiB)%s; seed %" PRIu64
	    ", %.1f s\n",
	    r->name, r->nobj, (double)r->put_bytes / (1 << 30), r->puts, r->checked_objs,
	    (double)r->checked_bytes / (1 << 30), r->misses_ok, r->msgsize_ok, removed, overwritten,
	    live, (double)live_bytes / (1 << 30), extra, r->seed, secs);
}

static uint64_t test_seed(void)
{
	static uint64_t seed;

	if (!seed) {
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		seed = kvt_env_u64("KVT_SEED", ((uint64_t)ts.tv_sec << 20) ^ (uint64_t)ts.tv_nsec ^
						   ((uint64_t)getpid() << 40));
		if (!seed)
			seed = 1;
	}
	return seed;
}

static uint32_t test_nobj(void)
{
	uint64_t n = kvt_env_u64("KVT_OBJECTS", NOBJ_DEFAULT);

	return n ? (uint32_t)n : NOBJ_DEFAULT;
}

static void test_mem_store(void **state)
{
	struct run *r = calloc(1, sizeof(*r));
	int64_t t0 = now_ms();
	char uri[64];
	uint32_t removed, overwritten;

	assert_non_null(r);
	run_init(r, "mem", test_seed(), test_nobj());
	engine_up(r);
	snprintf(uri, sizeof(uri), "mem:%" PRIu64, capacity_needed(r));
	assert_int_equal(kvr_store_open(r->e, uri, NULL, &r->t), 0);
	exercise(r, &removed, &overwritten);
	print_summary(r, removed, overwritten, (double)(now_ms() - t0) / 1e3, "");
	run_fini(r);
	free(r);
}

/* The same through a kvring-server process over loopback TCP, two
 * connections, the server's pool sized like the memory store's. */
static void test_tcp_server(void **state)
{
	struct run *r = calloc(1, sizeof(*r));
	int64_t t0 = now_ms();
	struct kvt_server srv;
	struct kvr_connect_opts o = {.size = sizeof(o), .conns = 2};
	char mem[32];
	uint32_t removed, overwritten;

	(void)state;
	assert_non_null(r);
	run_init(r, "tcp", test_seed(), test_nobj());
	r->remote = true;
	snprintf(mem, sizeof(mem), "%" PRIu64, capacity_needed(r));
	assert_int_equal(kvt_server_start(&srv, (const char *[]){"--memory", mem, NULL}), 0);
	engine_up(r);
	assert_int_equal(kvr_connect(r->e, srv.uri, &o, &r->t), 0);
	exercise(r, &removed, &overwritten);
	print_summary(r, removed, overwritten, (double)(now_ms() - t0) / 1e3, "");
	assert_int_equal(kvr_target_close(r->t), 0);
	run_fini(r);
	assert_int_equal(kvt_server_stop(&srv), 0);
	free(r);
}

/* The file store's path, removed by the teardown even when the test fails. */
static char store_path[4096];

static int remove_store(void **state)
{
	if (store_path[0])
		kvt_unlink(store_path);
	return 0;
}

static void test_file_store(void **state)
{
	struct run *r = calloc(1, sizeof(*r));
	int64_t t0 = now_ms();
	char *path = store_path, uri[4200], extra[160];
	struct kvr_store_opts so = {.size = sizeof(so), .flags = KVR_STORE_TRUNCATE};
	struct kvr_stats st = {.size = sizeof(st)};
	uint32_t removed, overwritten, live;
	struct item *v;

	assert_non_null(r);
	/* a different object set than the memory store's */
	run_init(r, "file", test_seed() ^ 0x5bd1e995u, test_nobj());
	engine_up(r);
	snprintf(store_path, sizeof(store_path), "%s", kvt_path("random_objects.store"));
	snprintf(uri, sizeof(uri), "file:%s", path);
	so.capacity = capacity_needed(r);
	assert_int_equal(kvr_store_open(r->e, uri, &so, &r->t), 0);
	exercise(r, &removed, &overwritten);
	/* the random SGL shapes took both the direct (fixed-buffer) path and the
	 * unaligned fallback */
	assert_int_equal(kvr_target_stats(r->t, &st), 0);
	assert_true(st.fixed_ios > 0);
	assert_true(st.bounce_bytes > 0);
	snprintf(extra, sizeof(extra),
		 ", %" PRIu64 " fixed-buffer I/Os and %.2f GiB through the unaligned path"
		 "; all verified again after a reopen",
		 st.fixed_ios, (double)st.bounce_bytes / (1 << 30));

	/* clean close, reopen from the same engine: every object again */
	assert_int_equal(kvr_target_close(r->t), 0);
	so.flags = KVR_STORE_NO_CREATE;
	so.capacity = 0;
	r->t = NULL;
	assert_int_equal(kvr_store_open(r->e, uri, &so, &r->t), 0);
	stats_check(r, "after reopen");
	v = items_alloc(r);
	get_some(r, v, NULL, false);
	exists_all(r, v);

	/* once more from a new engine (destroy closes the store) */
	kvr_engine_destroy(r->e);
	engine_up(r);
	r->t = NULL;
	assert_int_equal(kvr_store_open(r->e, uri, &so, &r->t), 0);
	stats_check(r, "after reopen in a new engine");
	assert_int_equal(kvr_target_stats(r->t, &st), 0);
	present_bytes(r, &live);
	assert_int_equal(st.objects, live);
	exists_all(r, v);
	assert_int_equal(r->failures, 0);
	free(v);

	print_summary(r, removed, overwritten, (double)(now_ms() - t0) / 1e3, extra);
	run_fini(r);
	free(r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_mem_store),
	    cmocka_unit_test(test_tcp_server),
	    cmocka_unit_test_teardown(test_file_store, remove_store),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
