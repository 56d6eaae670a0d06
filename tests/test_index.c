// SPDX-License-Identifier: MIT
/* engine/index.c: key hash table, LRU list, entry recycling. */
#include "fixtures.h"
#include "engine/index.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NFREE_CLS (sizeof(((struct kvr_index *)0)->free_cls) / sizeof(struct kvr_entry *))

static struct kvr_entry *mk(struct kvr_index *ix, const void *key, size_t len)
{
	struct kvr_entry *e = kvr_entry_alloc(ix, key, len, kvr_key_hash(key, len));

	assert_non_null(e);
	return e;
}

static struct kvr_entry *find(struct kvr_index *ix, const void *key, size_t len)
{
	return kvr_index_find(ix, key, len, kvr_key_hash(key, len));
}

static size_t idkey(char *buf, uint64_t id)
{
	return (size_t)sprintf(buf, "obj/%llu", (unsigned long long)id);
}

/* Every structural invariant the index must keep. */
static void check_index(const struct kvr_index *ix)
{
	uint64_t n = 0, m = 0, nfree = 0;
	const struct kvr_entry *e, *prev = NULL;

	assert_true(ix->nbuckets >= 1);
	assert_int_equal(ix->nbuckets & (ix->nbuckets - 1), 0);
	assert_true(ix->count <= ix->nbuckets);
	for (uint64_t b = 0; b < ix->nbuckets; b++) {
		for (e = ix->buckets[b]; e; e = e->hnext) {
			assert_int_equal(e->hash & (ix->nbuckets - 1), b);
			assert_int_equal(e->linked, 1);
			n++;
		}
	}
	assert_int_equal(n, ix->count);
	for (e = ix->lru_head; e; prev = e, e = e->lru_next) {
		assert_ptr_equal(e->lru_prev, prev);
		assert_int_equal(e->linked, 1);
		m++;
	}
	assert_ptr_equal(ix->lru_tail, prev);
	assert_int_equal(m, ix->count);
	for (unsigned c = 0; c < NFREE_CLS; c++) {
		for (e = ix->free_cls[c]; e; e = e->hnext) {
			assert_int_equal(e->cls, c);
			assert_int_equal(e->linked, 0);
			nfree++;
		}
	}
	assert_int_equal(nfree, ix->free_count);
}

static void test_hash(void **state)
{
	uint8_t k[512];

	(void)state;
	kvt_fill(k, sizeof(k), 1);
	assert_int_equal(kvr_key_hash(k, sizeof(k)), kvr_key_hash(k, sizeof(k)));
	assert_int_not_equal(kvr_key_hash(k, sizeof(k)), kvr_key_hash(k, sizeof(k) - 1));
	assert_int_not_equal(kvr_key_hash("a", 1), kvr_key_hash("b", 1));
	assert_int_not_equal(kvr_key_hash("ab", 2), kvr_key_hash("ba", 2));
	/* XXH3-64 of the empty input, a published constant */
	assert_int_equal(kvr_key_hash("", 0), 0x2d06800538d394c2ull);
	uint64_t h = kvr_key_hash(k, sizeof(k));

	k[511] ^= 1;
	assert_int_not_equal(kvr_key_hash(k, sizeof(k)), h);
}

static void test_init_sizes(void **state)
{
	struct kvr_index ix;

	(void)state;
	assert_int_equal(kvr_index_init(&ix, 0), 0);
	assert_true(ix.nbuckets >= 1);
	assert_int_equal(ix.count, 0);
	assert_null(ix.lru_head);
	assert_null(kvr_index_lru(&ix));
	assert_null(find(&ix, "x", 1));
	check_index(&ix);
	kvr_index_fini(&ix);
	assert_null(ix.buckets);

	assert_int_equal(kvr_index_init(&ix, 1000), 0);
	assert_true(ix.nbuckets >= 1000);
	assert_int_equal(ix.nbuckets & (ix.nbuckets - 1), 0);
	assert_true(ix.nbuckets < 4096);
	kvr_index_fini(&ix);
	/* fini twice is harmless */
	kvr_index_fini(&ix);
}

static void test_insert_find(void **state)
{
	struct kvr_index ix;
	struct kvr_entry *a, *b, *c;

	(void)state;
	assert_int_equal(kvr_index_init(&ix, 4), 0);
	a = mk(&ix, "alpha", 5);
	assert_int_equal(a->refs, 1);
	assert_int_equal(a->linked, 0);
	assert_int_equal(a->key_len, 5);
	assert_memory_equal(a->key, "alpha", 5);
	assert_int_equal(a->hash, kvr_key_hash("alpha", 5));
	assert_null(find(&ix, "alpha", 5)); /* allocated is not linked */

	assert_null(kvr_index_insert(&ix, a));
	assert_int_equal(a->linked, 1);
	assert_int_equal(a->refs, 1); /* the index does not touch refs */
	b = mk(&ix, "beta", 4);
	c = mk(&ix, "alph", 4);
	assert_null(kvr_index_insert(&ix, b));
	assert_null(kvr_index_insert(&ix, c));
	assert_int_equal(ix.count, 3);
	assert_ptr_equal(find(&ix, "alpha", 5), a);
	assert_ptr_equal(find(&ix, "beta", 4), b);
	assert_ptr_equal(find(&ix, "alph", 4), c);
	assert_null(find(&ix, "alphab", 6));
	assert_null(find(&ix, "gamma", 5));
	/* the caller's hash is what is looked up */
	assert_null(kvr_index_find(&ix, "alpha", 5, kvr_key_hash("alpha", 5) ^ 1));
	check_index(&ix);
	kvr_index_fini(&ix);
}

static void test_replace(void **state)
{
	struct kvr_index ix;
	struct kvr_entry *a1, *a2, *b, *c;

	(void)state;
	assert_int_equal(kvr_index_init(&ix, 16), 0);
	a1 = mk(&ix, "a", 1);
	b = mk(&ix, "b", 1);
	c = mk(&ix, "c", 1);
	a1->off = 4096;
	kvr_index_insert(&ix, a1);
	kvr_index_insert(&ix, b);
	kvr_index_insert(&ix, c);

	a2 = mk(&ix, "a", 1);
	a2->off = 8192;
	assert_ptr_equal(kvr_index_insert(&ix, a2), a1);
	assert_int_equal(a1->linked, 0);
	assert_int_equal(a1->off, 4096); /* the caller still needs its extent */
	assert_int_equal(a2->linked, 1);
	assert_int_equal(ix.count, 3);
	assert_ptr_equal(find(&ix, "a", 1), a2);
	/* the new version is the most recent; the old one is off the list */
	assert_ptr_equal(ix.lru_head, a2);
	assert_ptr_equal(kvr_index_lru(&ix), b);
	for (struct kvr_entry *e = ix.lru_head; e; e = e->lru_next)
		assert_ptr_not_equal(e, a1);
	check_index(&ix);
	kvr_entry_recycle(&ix, a1);

	/* replacing the least recent entry moves the tail */
	struct kvr_entry *b2 = mk(&ix, "b", 1);

	assert_ptr_equal(kvr_index_insert(&ix, b2), b);
	assert_ptr_equal(kvr_index_lru(&ix), c);
	assert_ptr_equal(ix.lru_head, b2);
	kvr_entry_recycle(&ix, b);
	check_index(&ix);
	kvr_index_fini(&ix);
}

static void test_unlink(void **state)
{
	struct kvr_index ix;
	struct kvr_entry *e[5];
	char k[2] = "k";

	(void)state;
	assert_int_equal(kvr_index_init(&ix, 0), 0);
	for (int i = 0; i < 5; i++) {
		k[1] = (char)('0' + i);
		e[i] = mk(&ix, k, 2);
		kvr_index_insert(&ix, e[i]);
	}
	/* LRU: 4 3 2 1 0 */
	kvr_index_unlink(&ix, e[2]); /* middle */
	assert_int_equal(e[2]->linked, 0);
	assert_null(find(&ix, "k2", 2));
	kvr_index_unlink(&ix, e[4]); /* head */
	kvr_index_unlink(&ix, e[0]); /* tail */
	assert_int_equal(ix.count, 2);
	assert_ptr_equal(ix.lru_head, e[3]);
	assert_ptr_equal(kvr_index_lru(&ix), e[1]);
	assert_ptr_equal(find(&ix, "k1", 2), e[1]);
	assert_ptr_equal(find(&ix, "k3", 2), e[3]);
	check_index(&ix);
	/* unlinking an unlinked entry changes nothing */
	kvr_index_unlink(&ix, e[2]);
	assert_int_equal(ix.count, 2);
	/* and it can be linked again */
	assert_null(kvr_index_insert(&ix, e[2]));
	assert_ptr_equal(find(&ix, "k2", 2), e[2]);
	assert_ptr_equal(ix.lru_head, e[2]);
	kvr_index_unlink(&ix, e[1]);
	kvr_index_unlink(&ix, e[2]);
	kvr_index_unlink(&ix, e[3]);
	assert_int_equal(ix.count, 0);
	assert_null(ix.lru_head);
	assert_null(kvr_index_lru(&ix));
	check_index(&ix);
	for (int i = 0; i < 5; i++)
		kvr_entry_recycle(&ix, e[i]);
	assert_int_equal(ix.free_count, 5);
	check_index(&ix);
	kvr_index_fini(&ix);
}

static void expect_lru(struct kvr_index *ix, struct kvr_entry **v, int n)
{
	struct kvr_entry *e = ix->lru_head;

	for (int i = 0; i < n; i++, e = e->lru_next)
		assert_ptr_equal(e, v[i]);
	assert_null(e);
	/* and the same backwards from the least recent */
	e = kvr_index_lru(ix);
	for (int i = n - 1; i >= 0; i--, e = e->lru_prev)
		assert_ptr_equal(e, v[i]);
	assert_null(e);
}

static void test_lru_touch(void **state)
{
	struct kvr_index ix;
	struct kvr_entry *e[4];
	char k[4] = "lru";

	(void)state;
	assert_int_equal(kvr_index_init(&ix, 0), 0);
	for (int i = 0; i < 4; i++) {
		k[2] = (char)('a' + i);
		e[i] = mk(&ix, k, 3);
		kvr_index_insert(&ix, e[i]);
	}
	expect_lru(&ix, (struct kvr_entry *[]){e[3], e[2], e[1], e[0]}, 4);
	kvr_index_touch(&ix, e[0]); /* tail to head */
	expect_lru(&ix, (struct kvr_entry *[]){e[0], e[3], e[2], e[1]}, 4);
	kvr_index_touch(&ix, e[0]); /* head stays */
	expect_lru(&ix, (struct kvr_entry *[]){e[0], e[3], e[2], e[1]}, 4);
	kvr_index_touch(&ix, e[2]); /* middle */
	expect_lru(&ix, (struct kvr_entry *[]){e[2], e[0], e[3], e[1]}, 4);
	/* eviction order: walk from the least recent */
	kvr_index_unlink(&ix, kvr_index_lru(&ix));
	expect_lru(&ix, (struct kvr_entry *[]){e[2], e[0], e[3]}, 3);
	/* touching an unlinked entry does not link it */
	kvr_index_touch(&ix, e[1]);
	assert_int_equal(e[1]->linked, 0);
	expect_lru(&ix, (struct kvr_entry *[]){e[2], e[0], e[3]}, 3);
	kvr_entry_recycle(&ix, e[1]);
	/* a single entry is both head and tail */
	kvr_index_unlink(&ix, e[0]);
	kvr_index_unlink(&ix, e[3]);
	kvr_index_touch(&ix, e[2]);
	expect_lru(&ix, (struct kvr_entry *[]){e[2]}, 1);
	kvr_entry_recycle(&ix, e[0]);
	kvr_entry_recycle(&ix, e[3]);
	check_index(&ix);
	kvr_index_fini(&ix);
}

static void test_growth(void **state)
{
	const uint64_t n = 200000;
	struct kvr_index ix;
	uint64_t last_nb;
	char k[32];

	(void)state;
	assert_int_equal(kvr_index_init(&ix, 0), 0);
	last_nb = ix.nbuckets;
	for (uint64_t i = 0; i < n; i++) {
		size_t len = idkey(k, i);

		assert_null(kvr_index_insert(&ix, mk(&ix, k, len)));
		assert_int_equal(ix.count, i + 1);
		assert_true(ix.count <= ix.nbuckets);
		if (ix.nbuckets != last_nb) {
			assert_int_equal(ix.nbuckets, last_nb * 2);
			last_nb = ix.nbuckets;
		}
		if (i % 50000 == 0)
			check_index(&ix);
	}
	assert_int_equal(ix.nbuckets, 262144);
	check_index(&ix);
	for (uint64_t i = 0; i < n + 1000; i++) {
		size_t len = idkey(k, i);
		struct kvr_entry *e = find(&ix, k, len);

		if (i >= n) {
			assert_null(e);
			continue;
		}
		assert_non_null(e);
		assert_int_equal(e->key_len, len);
		assert_memory_equal(e->key, k, len);
	}
	/* oldest first from the tail */
	uint64_t i = 0;

	for (struct kvr_entry *e = kvr_index_lru(&ix); e; e = e->lru_prev, i++) {
		size_t len = idkey(k, i);

		assert_int_equal(e->key_len, len);
		assert_memory_equal(e->key, k, len);
	}
	assert_int_equal(i, n);
	/* drop the even ones */
	for (i = 0; i < n; i += 2) {
		size_t len = idkey(k, i);
		struct kvr_entry *e = find(&ix, k, len);

		kvr_index_unlink(&ix, e);
		kvr_entry_recycle(&ix, e);
	}
	assert_int_equal(ix.count, n / 2);
	for (i = 0; i < n; i++) {
		size_t len = idkey(k, i);

		assert_true((find(&ix, k, len) != NULL) == (i % 2 == 1));
	}
	check_index(&ix);
	kvr_index_fini(&ix);
}

static void test_long_keys(void **state)
{
	static uint8_t keys[256][512];
	struct kvr_entry *e[256];
	struct kvr_index ix;

	(void)state;
	assert_int_equal(kvr_index_init(&ix, 0), 0);
	/* 512-byte keys that differ only in the last byte */
	for (int i = 0; i < 256; i++) {
		kvt_fill(keys[i], 511, 77);
		keys[i][511] = (uint8_t)i;
		e[i] = mk(&ix, keys[i], 512);
		assert_int_equal(e[i]->cls, NFREE_CLS - 1);
		assert_null(kvr_index_insert(&ix, e[i]));
	}
	for (int i = 0; i < 256; i++) {
		assert_ptr_equal(find(&ix, keys[i], 512), e[i]);
		assert_memory_equal(e[i]->key, keys[i], 512);
	}
	/* and prefixes of them are different keys */
	assert_null(find(&ix, keys[0], 511));
	assert_null(find(&ix, keys[0], 1));
	/* every length 1..512, sharing one byte pattern: all distinct */
	for (size_t len = 1; len <= 512; len++) {
		struct kvr_entry *x = mk(&ix, keys[7], len);

		if (len == 512) {
			/* the same key as e[7]: replaces it */
			assert_ptr_equal(kvr_index_insert(&ix, x), e[7]);
			kvr_entry_recycle(&ix, e[7]);
			e[7] = x;
		} else {
			assert_null(kvr_index_insert(&ix, x));
		}
	}
	assert_int_equal(ix.count, 256 + 511);
	for (size_t len = 1; len <= 512; len++) {
		struct kvr_entry *x = find(&ix, keys[7], len);

		assert_non_null(x);
		assert_int_equal(x->key_len, len);
	}
	check_index(&ix);
	kvr_index_fini(&ix);
}

/* Chains are compared by hash, then length, then bytes: force one hash. */
static void test_collisions(void **state)
{
	static const char *const keys[] = {"a", "ab", "abc", "abd", "b", "", "ba"};
	const size_t nk = sizeof(keys) / sizeof(keys[0]);
	struct kvr_entry *e[sizeof(keys) / sizeof(keys[0])];
	struct kvr_index ix;

	(void)state;
	assert_int_equal(kvr_index_init(&ix, 0), 0);
	for (size_t i = 0; i < nk; i++) {
		e[i] = kvr_entry_alloc(&ix, keys[i], strlen(keys[i]), 7);
		assert_non_null(e[i]);
		assert_null(kvr_index_insert(&ix, e[i]));
	}
	/* the same key under another hash lives in another bucket */
	struct kvr_entry *other = kvr_entry_alloc(&ix, "ab", 2, 7 + 16);

	assert_null(kvr_index_insert(&ix, other));
	for (size_t i = 0; i < nk; i++)
		assert_ptr_equal(kvr_index_find(&ix, keys[i], strlen(keys[i]), 7), e[i]);
	assert_null(kvr_index_find(&ix, "abe", 3, 7));
	assert_null(kvr_index_find(&ix, "abcd", 4, 7));
	assert_null(kvr_index_find(&ix, "ab", 2, 8));
	assert_ptr_equal(kvr_index_find(&ix, "ab", 2, 7 + 16), other);
	/* replace and unlink in the middle of the chain */
	struct kvr_entry *abc = kvr_entry_alloc(&ix, "abc", 3, 7);

	assert_ptr_equal(kvr_index_insert(&ix, abc), e[2]);
	kvr_entry_recycle(&ix, e[2]);
	e[2] = abc;
	kvr_index_unlink(&ix, e[3]);
	kvr_entry_recycle(&ix, e[3]);
	assert_null(kvr_index_find(&ix, "abd", 3, 7));
	for (size_t i = 0; i < nk; i++)
		if (i != 3)
			assert_ptr_equal(kvr_index_find(&ix, keys[i], strlen(keys[i]), 7), e[i]);
	check_index(&ix);
	kvr_index_fini(&ix);
}

static void test_recycle(void **state)
{
	struct kvr_index ix;
	struct kvr_entry *e, *f, *g;
	uint8_t k[600];

	(void)state;
	kvt_fill(k, sizeof(k), 5);
	assert_int_equal(kvr_index_init(&ix, 0), 0);
	/* classes grow with the key and never shrink below it */
	int last = 0;

	for (size_t len = 0; len <= 512; len++) {
		e = mk(&ix, k, len);
		assert_true(e->cls < NFREE_CLS);
		assert_true(e->cls >= last);
		last = e->cls;
		kvr_entry_recycle(&ix, e);
	}
	assert_int_equal(last, NFREE_CLS - 1);
	check_index(&ix);
	kvr_index_fini(&ix);

	assert_int_equal(kvr_index_init(&ix, 0), 0);
	e = mk(&ix, k, 10);
	e->off = 123;
	e->alloc_len = 4096;
	e->len = 100;
	e->seq = 9;
	e->crc = 0xdeadbeef;
	e->refs = 0;
	uint8_t cls = e->cls;

	kvr_entry_recycle(&ix, e);
	assert_int_equal(ix.free_count, 1);
	/* same class: the very same memory, with a fresh header */
	f = mk(&ix, k + 1, 9);
	assert_ptr_equal(f, e);
	assert_int_equal(ix.free_count, 0);
	assert_int_equal(f->cls, cls);
	assert_int_equal(f->refs, 1);
	assert_int_equal(f->linked, 0);
	assert_int_equal(f->off, 0);
	assert_int_equal(f->alloc_len, 0);
	assert_int_equal(f->len, 0);
	assert_int_equal(f->seq, 0);
	assert_int_equal(f->crc, 0);
	assert_null(f->hnext);
	assert_null(f->lru_prev);
	assert_null(f->lru_next);
	assert_int_equal(f->key_len, 9);
	assert_memory_equal(f->key, k + 1, 9);
	assert_int_equal(f->hash, kvr_key_hash(k + 1, 9));
	/* another class does not take it */
	kvr_entry_recycle(&ix, f);
	g = mk(&ix, k, 300);
	assert_ptr_not_equal(g, f);
	assert_int_equal(ix.free_count, 1);
	/* a recycled entry that went through the index comes back clean */
	kvr_index_insert(&ix, g);
	kvr_index_unlink(&ix, g);
	kvr_entry_recycle(&ix, g);
	g = mk(&ix, k + 2, 290);
	assert_int_equal(g->linked, 0);
	assert_null(g->lru_next);
	assert_null(kvr_index_insert(&ix, g));
	assert_ptr_equal(find(&ix, k + 2, 290), g);
	/* keys past the largest class work but are not kept for reuse */
	e = mk(&ix, k, 600);
	assert_int_equal(e->key_len, 600);
	assert_true(e->cls >= NFREE_CLS);
	assert_null(kvr_index_insert(&ix, e));
	assert_ptr_equal(find(&ix, k, 600), e);
	kvr_index_unlink(&ix, e);
	kvr_entry_recycle(&ix, e);
	assert_int_equal(ix.free_count, 1);
	check_index(&ix);
	kvr_index_fini(&ix);
}

static void test_recycle_cap(void **state)
{
	const int n = 6000;
	struct kvr_entry **v = calloc(n, sizeof(*v));
	struct kvr_index ix;
	uint8_t k[512];

	(void)state;
	assert_non_null(v);
	kvt_fill(k, sizeof(k), 9);
	assert_int_equal(kvr_index_init(&ix, 0), 0);
	for (int i = 0; i < n; i++)
		v[i] = mk(&ix, k, 1 + (size_t)i % 512);
	for (int i = 0; i < n; i++)
		kvr_entry_recycle(&ix, v[i]);
	/* bounded: the rest went back to malloc (ASan checks nothing leaks) */
	assert_true(ix.free_count > 0);
	assert_true(ix.free_count <= 4096);
	check_index(&ix);
	/* steady state: allocations are served from the lists */
	uint64_t before = ix.free_count;

	for (int i = 0; i < 100; i++)
		v[i] = mk(&ix, k, 1 + (size_t)i % 512);
	assert_int_equal(ix.free_count, before - 100);
	for (int i = 0; i < 100; i++)
		kvr_entry_recycle(&ix, v[i]);
	assert_int_equal(ix.free_count, before);
	kvr_index_fini(&ix);
	assert_int_equal(ix.free_count, 0);
	free(v);
}

/* Random operations against a plain model: pointer per key, recency list. */
static void run_model(uint64_t hash_mask, uint64_t ops, uint64_t seed)
{
	enum { NK = 300 };
	struct kvr_entry *have[NK] = {0};
	int order[NK], norder = 0; /* most recent first */
	uint64_t rng = seed;
	struct kvr_index ix;
	char k[64];

	assert_int_equal(kvr_index_init(&ix, 0), 0);
	for (uint64_t op = 0; op < ops; op++) {
		int id = (int)(kvt_rand(&rng) % NK), pos = -1;
		/* long, similar keys: a shared prefix and the id at the end */
		size_t len = (size_t)sprintf(k, "%040d/%d", 0, id);
		uint64_t h = kvr_key_hash(k, len) & hash_mask;
		uint64_t r = kvt_rand(&rng) % 10;

		for (int i = 0; i < norder; i++)
			if (order[i] == id)
				pos = i;
		assert_ptr_equal(kvr_index_find(&ix, k, len, h), have[id]);
		if (r < 5) {
			struct kvr_entry *e = kvr_entry_alloc(&ix, k, len, h), *old;

			assert_non_null(e);
			old = kvr_index_insert(&ix, e);
			assert_ptr_equal(old, have[id]);
			if (old)
				kvr_entry_recycle(&ix, old);
			have[id] = e;
			if (pos < 0)
				pos = norder++;
			memmove(order + 1, order, (size_t)pos * sizeof(order[0]));
			order[0] = id;
		} else if (r < 8) {
			if (!have[id])
				continue;
			kvr_index_unlink(&ix, have[id]);
			kvr_entry_recycle(&ix, have[id]);
			have[id] = NULL;
			memmove(order + pos, order + pos + 1,
				(size_t)(norder - pos - 1) * sizeof(order[0]));
			norder--;
		} else {
			if (!have[id])
				continue;
			kvr_index_touch(&ix, have[id]);
			memmove(order + 1, order, (size_t)pos * sizeof(order[0]));
			order[0] = id;
		}
		assert_int_equal(ix.count, norder);
		struct kvr_entry *e = ix.lru_head;

		for (int i = 0; i < norder; i++, e = e->lru_next)
			assert_ptr_equal(e, have[order[i]]);
		assert_null(e);
		if (op % 4096 == 0)
			check_index(&ix);
	}
	check_index(&ix);
	kvr_index_fini(&ix);
}

static void test_model_random(void **state)
{
	(void)state;
	run_model(UINT64_MAX, 100000, 1);
	/* few distinct hashes: long chains, every compare past the hash */
	run_model(7, 50000, 2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_hash),	cmocka_unit_test(test_init_sizes),
	    cmocka_unit_test(test_insert_find), cmocka_unit_test(test_replace),
	    cmocka_unit_test(test_unlink),	cmocka_unit_test(test_lru_touch),
	    cmocka_unit_test(test_growth),	cmocka_unit_test(test_long_keys),
	    cmocka_unit_test(test_collisions),	cmocka_unit_test(test_recycle),
	    cmocka_unit_test(test_recycle_cap), cmocka_unit_test(test_model_random),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
