// SPDX-License-Identifier: MIT
/*
 * Key index: chained hash table (power-of-two buckets, doubling when the load
 * passes 1) plus an intrusive LRU list. Entries carry their key inline and
 * are recycled per key-size class so steady-state puts do not hit malloc.
 */
#include "engine/index.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#define MIN_BUCKETS 16u
/* Beyond this the bucket array alone would be terabytes: stop doubling. */
#define MAX_BUCKETS (1ull << 40)
/* Recycled entries kept across all classes; more are freed. */
#define RECYCLE_MAX 4096u
/* Keys longer than the largest class get an exact-size, unrecycled entry. */
#define CLS_NONE 0xff
#define NCLS	 (sizeof(((struct kvr_index *)0)->free_cls) / sizeof(struct kvr_entry *))

/*
 * Key storage per class. Half steps above 64 bytes keep the unused tail
 * of a class at most about a third of it, where pure doubling would waste up
 * to half.
 */
static const uint16_t cls_cap[] = {16, 32, 64, 96, 128, 192, 256, 384, 512};

_Static_assert(sizeof(cls_cap) / sizeof(cls_cap[0]) == NCLS, "one capacity per free list");

uint64_t kvr_key_hash(const void *key, size_t len)
{
	return XXH3_64bits(key, len);
}

static unsigned key_class(size_t key_len)
{
	for (unsigned i = 0; i < NCLS; i++)
		if (key_len <= cls_cap[i])
			return i;
	return CLS_NONE;
}

static int key_eq(const struct kvr_entry *e, const void *key, size_t key_len, uint64_t hash)
{
	return e->hash == hash && e->key_len == key_len &&
	       (key_len == 0 || memcmp(e->key, key, key_len) == 0);
}

static struct kvr_entry **bucket(const struct kvr_index *ix, uint64_t hash)
{
	return &ix->buckets[hash & (ix->nbuckets - 1)];
}

/* ------------------------------------------------------------- LRU */

static void lru_push_head(struct kvr_index *ix, struct kvr_entry *e)
{
	e->lru_prev = NULL;
	e->lru_next = ix->lru_head;
	if (ix->lru_head)
		ix->lru_head->lru_prev = e;
	else
		ix->lru_tail = e;
	ix->lru_head = e;
}

static void lru_remove(struct kvr_index *ix, struct kvr_entry *e)
{
	if (e->lru_prev)
		e->lru_prev->lru_next = e->lru_next;
	else
		ix->lru_head = e->lru_next;
	if (e->lru_next)
		e->lru_next->lru_prev = e->lru_prev;
	else
		ix->lru_tail = e->lru_prev;
	e->lru_prev = e->lru_next = NULL;
}

/* ------------------------------------------------------------- table */

int kvr_index_init(struct kvr_index *ix, uint64_t expected)
{
	uint64_t n = MIN_BUCKETS;

	memset(ix, 0, sizeof(*ix));
	while (n < expected && n < MAX_BUCKETS)
		n <<= 1;
	ix->buckets = calloc(n, sizeof(*ix->buckets));
	if (!ix->buckets)
		return -ENOMEM;
	ix->nbuckets = n;
	return 0;
}

void kvr_index_fini(struct kvr_index *ix)
{
	struct kvr_entry *e, *next;

	/* Every linked entry is on the LRU list, so it is the cheaper walk. */
	for (e = ix->lru_head; e; e = next) {
		next = e->lru_next;
		free(e);
	}
	for (unsigned i = 0; i < NCLS; i++) {
		for (e = ix->free_cls[i]; e; e = next) {
			next = e->hnext;
			free(e);
		}
	}
	free(ix->buckets);
	memset(ix, 0, sizeof(*ix));
}

/*
 * One-shot rehash: amortised O(1) per insert. Chains are rebuilt from the
 * stored hashes, so no key is rehashed.
 */
static void grow(struct kvr_index *ix)
{
	uint64_t n = ix->nbuckets << 1, mask = n - 1;
	struct kvr_entry **nb;

	if (n > MAX_BUCKETS)
		return;
	nb = calloc(n, sizeof(*nb));
	if (!nb)
		return; /* keep the old table; chains just get longer */
	for (uint64_t i = 0; i < ix->nbuckets; i++) {
		struct kvr_entry *e = ix->buckets[i], *next;

		for (; e; e = next) {
			next = e->hnext;
			e->hnext = nb[e->hash & mask];
			nb[e->hash & mask] = e;
		}
	}
	free(ix->buckets);
	ix->buckets = nb;
	ix->nbuckets = n;
}

/* ------------------------------------------------------------- entries */

struct kvr_entry *kvr_entry_alloc(struct kvr_index *ix, const void *key, size_t key_len,
				  uint64_t hash)
{
	unsigned cls = key_class(key_len);
	struct kvr_entry *e = NULL;

	if (key_len > UINT16_MAX)
		return NULL;
	if (cls != CLS_NONE && ix->free_cls[cls]) {
		e = ix->free_cls[cls];
		ix->free_cls[cls] = e->hnext;
		ix->free_count--;
	} else {
		size_t cap = cls != CLS_NONE ? cls_cap[cls] : key_len;

		e = malloc(offsetof(struct kvr_entry, key) + cap);
		if (!e)
			return NULL;
	}
	memset(e, 0, offsetof(struct kvr_entry, key));
	if (key_len)
		memcpy(e->key, key, key_len);
	e->key_len = (uint16_t)key_len;
	e->hash = hash;
	e->cls = (uint8_t)cls;
	e->refs = 1;
	return e;
}

void kvr_entry_recycle(struct kvr_index *ix, struct kvr_entry *e)
{
	if (!e)
		return;
	assert(!e->linked);
	/* Never let a linked entry onto a free list: the table would point
	 * into it once it is handed out again. */
	if (e->linked)
		kvr_index_unlink(ix, e);
	if (e->cls >= NCLS || ix->free_count >= RECYCLE_MAX) {
		free(e);
		return;
	}
	e->hnext = ix->free_cls[e->cls];
	ix->free_cls[e->cls] = e;
	ix->free_count++;
}

/* ------------------------------------------------------------- lookups */

struct kvr_entry *kvr_index_find(struct kvr_index *ix, const void *key, size_t key_len,
				 uint64_t hash)
{
	struct kvr_entry *e;

	for (e = *bucket(ix, hash); e; e = e->hnext)
		if (key_eq(e, key, key_len, hash))
			return e;
	return NULL;
}

struct kvr_entry *kvr_index_insert(struct kvr_index *ix, struct kvr_entry *e)
{
	struct kvr_entry **pp = bucket(ix, e->hash), *old = NULL;

	assert(!e->linked);
	if (e->linked) {
		kvr_index_touch(ix, e);
		return NULL;
	}
	for (; *pp; pp = &(*pp)->hnext) {
		if (key_eq(*pp, e->key, e->key_len, e->hash)) {
			old = *pp;
			break;
		}
	}
	if (old) {
		/* Take over the old entry's chain slot: no count change. */
		e->hnext = old->hnext;
		*pp = e;
		lru_remove(ix, old);
		old->hnext = NULL;
		old->linked = 0;
	} else {
		pp = bucket(ix, e->hash);
		e->hnext = *pp;
		*pp = e;
		ix->count++;
	}
	lru_push_head(ix, e);
	e->linked = 1;
	if (ix->count > ix->nbuckets)
		grow(ix);
	return old;
}

void kvr_index_unlink(struct kvr_index *ix, struct kvr_entry *e)
{
	struct kvr_entry **pp;

	if (!e || !e->linked)
		return;
	for (pp = bucket(ix, e->hash); *pp; pp = &(*pp)->hnext) {
		if (*pp == e) {
			*pp = e->hnext;
			break;
		}
	}
	lru_remove(ix, e);
	e->hnext = NULL;
	e->linked = 0;
	ix->count--;
}

void kvr_index_touch(struct kvr_index *ix, struct kvr_entry *e)
{
	if (!e->linked || ix->lru_head == e)
		return;
	lru_remove(ix, e);
	lru_push_head(ix, e);
}
