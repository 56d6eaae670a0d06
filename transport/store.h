/* SPDX-License-Identifier: MIT */
/*
 * What the memory store and the file store share: the key index, the extent
 * allocator, LRU eviction, entry references, and the exists op.
 */
#ifndef KVR_STORE_H
#define KVR_STORE_H

#include "engine/alloc.h"
#include "engine/engine.h"
#include "engine/index.h"

struct kvr_store {
	kvr_target t;
	struct kvr_index ix;
	struct kvr_alloc al;
	uint32_t flags; /* KVR_STORE_* */
	uint64_t seq;	/* last put's version */
};

static inline struct kvr_store *kvr_store_of(kvr_target *t)
{
	return (struct kvr_store *)t;
}

int kvr_store_init(struct kvr_store *s, kvr_engine *e, const struct kvr_target_ops *ops,
		   const struct kvr_store_opts *o, uint64_t capacity, uint64_t unit);
void kvr_store_fini(struct kvr_store *s);

/* Drop one reference; the last frees the extent and recycles the entry. */
void kvr_store_unref(struct kvr_store *s, struct kvr_entry *en);
/* Allocate room for len bytes, evicting least recently used objects unless
 * KVR_STORE_NO_EVICT. Returns the offset or -ENOSPC. */
int64_t kvr_store_alloc(struct kvr_store *s, uint64_t len);
/* A new entry for object o stored at [off, off+alloc) with crc; refs = 1. */
struct kvr_entry *kvr_store_entry(struct kvr_store *s, const struct kvr_objd *o, uint64_t off,
				  uint64_t len, uint32_t crc);
/* Publish a finished put: link en, replacing (and releasing) an older value. */
void kvr_store_commit(struct kvr_store *s, struct kvr_entry *en);
/* Find a key for reading: returns the entry with a reference taken, or NULL. */
struct kvr_entry *kvr_store_pin(struct kvr_store *s, const struct kvr_objd *o);
/* Drop a stored object whose bytes failed their checksum. */
void kvr_store_drop_corrupt(struct kvr_store *s, struct kvr_entry *en);

/* The exists op, identical for every local store. */
void kvr_store_exists(kvr_target *t, struct kvr_req **reqs, uint32_t n);
/* Target stats fields common to stores. */
void kvr_store_stats(kvr_target *t, struct kvr_stats *st);

int kvr_memstore_open(kvr_engine *e, const char *spec, const struct kvr_store_opts *o,
		      kvr_target **out);
int kvr_filestore_open(kvr_engine *e, const char *path, const struct kvr_store_opts *o,
		       kvr_target **out);

#endif
