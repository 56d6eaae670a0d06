/* SPDX-License-Identifier: MIT */
/*
 * Key index: a hash table from key to the entry describing where an object's
 * bytes live, plus an LRU list for eviction. Pure data structure: no I/O.
 */
#ifndef KVR_INDEX_H
#define KVR_INDEX_H

#include <stddef.h>
#include <stdint.h>

/*
 * One stored object. The index holds one reference while the entry is linked;
 * a reader (get in flight) holds another. The owner (a store) frees the
 * entry's extent and the entry when the last reference goes.
 */
struct kvr_entry {
	struct kvr_entry *hnext;	       /* hash chain */
	struct kvr_entry *lru_prev, *lru_next; /* LRU list; prev = more recent */
	uint64_t hash;			       /* kvr_key_hash(key) */
	uint64_t off;			       /* extent offset, bytes */
	uint64_t alloc_len;		       /* extent length, bytes */
	uint64_t len;			       /* payload length, bytes */
	uint64_t seq;			       /* store-wide version of the put */
	uint32_t crc;			       /* crc32c of the payload */
	uint32_t refs;
	uint16_t key_len;
	uint8_t linked; /* in the index (hash + LRU) */
	uint8_t cls;	/* size class, for recycling */
	uint8_t key[];
};

struct kvr_index {
	struct kvr_entry **buckets;
	uint64_t nbuckets;		       /* power of two */
	uint64_t count;			       /* linked entries */
	struct kvr_entry *lru_head, *lru_tail; /* head = most recent */
	struct kvr_entry *free_cls[9];	       /* recycled entries per key class */
	uint64_t free_count;
};

uint64_t kvr_key_hash(const void *key, size_t len);

/* expected: entries expected (sizes the table; it grows as needed). 0/-ENOMEM */
int kvr_index_init(struct kvr_index *ix, uint64_t expected);
/* Frees every linked and recycled entry, and the table. */
void kvr_index_fini(struct kvr_index *ix);

/* A new entry (refs = 1, not linked) holding a copy of the key; reuses
 * recycled entries so steady-state puts do not call malloc. NULL on ENOMEM. */
struct kvr_entry *kvr_entry_alloc(struct kvr_index *ix, const void *key, size_t key_len,
				  uint64_t hash);
/* Give an entry back for reuse (must not be linked). */
void kvr_entry_recycle(struct kvr_index *ix, struct kvr_entry *e);

struct kvr_entry *kvr_index_find(struct kvr_index *ix, const void *key, size_t key_len,
				 uint64_t hash);
/* Link e (as most recent). If an entry with the same key was linked, it is
 * unlinked and returned (its index reference now belongs to the caller);
 * else NULL. Never fails: if growing the table cannot allocate, the old
 * table is kept (chains get longer). */
struct kvr_entry *kvr_index_insert(struct kvr_index *ix, struct kvr_entry *e);
/* Unlink e from hash and LRU (its index reference now belongs to the caller). */
void kvr_index_unlink(struct kvr_index *ix, struct kvr_entry *e);
/* Mark e most recently used. */
void kvr_index_touch(struct kvr_index *ix, struct kvr_entry *e);
/* Least recently used linked entry, or NULL; walk to more recent ones with
 * e->lru_prev. */
static inline struct kvr_entry *kvr_index_lru(struct kvr_index *ix)
{
	return ix->lru_tail;
}

#endif
