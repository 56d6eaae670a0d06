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
	uint8_t *base;	/* memory store: its pool (entry offsets are relative
			   to it); NULL for other stores */

	/*
	 * Eviction hook (optional; the server's spill). Called for each LRU
	 * victim after it left the index. Returning true keeps it: the hook
	 * takes over the index's reference, the bytes stay allocated and count
	 * in `evicting` until it hands the entry back with
	 * kvr_store_evict_done(). Returning false lets the victim go.
	 */
	bool (*on_evict)(struct kvr_store *s, struct kvr_entry *victim, void *ctx);
	void *evict_ctx;
	uint64_t evicting; /* bytes of victims the hook still holds */
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
 * KVR_STORE_NO_EVICT. Returns the offset, -ENOSPC, or (only with an
 * eviction hook) -EAGAIN: victims the hook holds will free enough bytes
 * once it hands them back; retry then. */
int64_t kvr_store_alloc(struct kvr_store *s, uint64_t len);
/* Evict LRU objects until the hook holds at least `bytes` (or nothing is
 * left to evict). For a caller that knows more room is wanted soon. */
void kvr_store_evict(struct kvr_store *s, uint64_t bytes);
/* The hook is done with a victim it kept: drop its reference. */
void kvr_store_evict_done(struct kvr_store *s, struct kvr_entry *en);
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
