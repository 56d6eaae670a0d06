/* SPDX-License-Identifier: MIT */
#include "transport/store.h"

#include <stdlib.h>
#include <string.h>

int kvr_store_init(struct kvr_store *s, kvr_engine *e, const struct kvr_target_ops *ops,
		   const struct kvr_store_opts *o, uint64_t capacity, uint64_t unit)
{
	int rc = kvr_alloc_init(&s->al, capacity, unit);

	if (rc)
		return rc;
	rc = kvr_index_init(&s->ix, capacity / unit < 65536 ? capacity / unit : 65536);
	if (rc) {
		kvr_alloc_fini(&s->al);
		return rc;
	}
	s->flags = o ? o->flags : 0;
	kvr_target_init(&s->t, e, ops, o ? o->timeout_ms : 0);
	return 0;
}

void kvr_store_fini(struct kvr_store *s)
{
	kvr_index_fini(&s->ix);
	kvr_alloc_fini(&s->al);
}

void kvr_store_unref(struct kvr_store *s, struct kvr_entry *en)
{
	if (--en->refs)
		return;
	if (en->alloc_len)
		kvr_alloc_put(&s->al, en->off, en->alloc_len);
	kvr_entry_recycle(&s->ix, en);
}

/* Evict the LRU object. false when there is none. */
static bool evict_one(struct kvr_store *s)
{
	struct kvr_entry *victim = kvr_index_lru(&s->ix);

	if (!victim)
		return false;
	kvr_index_unlink(&s->ix, victim);
	s->t.stats.evictions++;
	if (s->on_evict && s->on_evict(s, victim, s->evict_ctx))
		s->evicting += victim->alloc_len; /* the hook owns the reference */
	else
		kvr_store_unref(s, victim);
	return true;
}

int64_t kvr_store_alloc(struct kvr_store *s, uint64_t len)
{
	uint64_t need;

	if (!len || (need = kvr_alloc_round(&s->al, len)) > s->al.capacity)
		return -ENOSPC;
	for (;;) {
		int64_t off = kvr_alloc_get(&s->al, len);

		if (off != -ENOSPC || (s->flags & KVR_STORE_NO_EVICT))
			return off;
		/* Enough is on its way back: evicting more would only push
		 * more objects out than this allocation needs. */
		if (s->on_evict && s->evicting >= need)
			return -EAGAIN;
		if (!evict_one(s)) /* the rest is held by puts and gets in flight */
			return s->evicting ? -EAGAIN : -ENOSPC;
	}
}

void kvr_store_evict(struct kvr_store *s, uint64_t bytes)
{
	if (!s->on_evict || (s->flags & KVR_STORE_NO_EVICT))
		return;
	while (s->evicting < bytes && evict_one(s))
		;
}

void kvr_store_evict_done(struct kvr_store *s, struct kvr_entry *en)
{
	s->evicting -= en->alloc_len;
	kvr_store_unref(s, en);
}

struct kvr_entry *kvr_store_entry(struct kvr_store *s, const struct kvr_objd *o, uint64_t off,
				  uint64_t len, uint32_t crc)
{
	struct kvr_entry *en = kvr_entry_alloc(&s->ix, o->key, o->key_len, o->hash);

	if (!en)
		return NULL;
	en->off = off;
	en->alloc_len = kvr_alloc_round(&s->al, len);
	en->len = len;
	en->crc = crc;
	en->seq = ++s->seq;
	return en;
}

void kvr_store_commit(struct kvr_store *s, struct kvr_entry *en)
{
	struct kvr_entry *old = kvr_index_insert(&s->ix, en);

	if (old)
		kvr_store_unref(s, old);
}

struct kvr_entry *kvr_store_pin(struct kvr_store *s, const struct kvr_objd *o)
{
	struct kvr_entry *en = kvr_index_find(&s->ix, o->key, o->key_len, o->hash);

	if (en) {
		en->refs++;
		kvr_index_touch(&s->ix, en);
	}
	return en;
}

void kvr_store_drop_corrupt(struct kvr_store *s, struct kvr_entry *en)
{
	s->t.stats.checksum_errors++;
	kvr_log(s->t.e, KVR_LOG_WARN, "checksum mismatch on '%.*s': dropped", (int)en->key_len,
		(const char *)en->key);
	if (en->linked) {
		kvr_index_unlink(&s->ix, en);
		kvr_store_unref(s, en);
	}
}

void kvr_store_exists(kvr_target *t, struct kvr_req **reqs, uint32_t n)
{
	struct kvr_store *s = kvr_store_of(t);

	for (uint32_t i = 0; i < n; i++) {
		const struct kvr_objd *o = reqs[i]->o;
		struct kvr_entry *en = kvr_index_find(&s->ix, o->key, o->key_len, o->hash);

		kvr_req_done(reqs[i], en ? (int64_t)en->len : -ENOENT);
	}
}

void kvr_store_stats(kvr_target *t, struct kvr_stats *st)
{
	struct kvr_store *s = kvr_store_of(t);

	st->objects = s->ix.count;
	st->used_bytes = s->al.used;
	st->capacity_bytes = s->al.capacity;
}

KVR_EXPORT int kvr_parse_size(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;
	int shift = 0;

	if (!s || !out || *s < '0' || *s > '9')
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno)
		return -EINVAL;
	switch (*end) {
	case 'k':
	case 'K':
		shift = 10;
		end++;
		break;
	case 'm':
	case 'M':
		shift = 20;
		end++;
		break;
	case 'g':
	case 'G':
		shift = 30;
		end++;
		break;
	case 't':
	case 'T':
		shift = 40;
		end++;
		break;
	default:
		break;
	}
	if (*end == 'i' || *end == 'B')
		end += (*end == 'i' && end[1] == 'B') ? 2 : 1;
	if (*end || (shift && v > (UINT64_MAX >> shift)))
		return -EINVAL;
	*out = (uint64_t)v << shift;
	return 0;
}

KVR_EXPORT int kvr_store_open(kvr_engine *e, const char *uri, const struct kvr_store_opts *opts,
			      kvr_target **out)
{
	struct kvr_store_opts o;

	if (!e || !uri || !out)
		return -EINVAL;
	*out = NULL;
	e->errmsg[0] = 0; /* a message explains this call's failure only */
	if (e->destroying)
		return -ESHUTDOWN;
	memset(&o, 0, sizeof(o));
	if (opts) {
		if (opts->size < offsetof(struct kvr_store_opts, timeout_ms))
			return -EINVAL;
		memcpy(&o, opts, opts->size < sizeof(o) ? opts->size : sizeof(o));
	}
	if (o.flags & ~(uint32_t)(KVR_STORE_NO_CREATE | KVR_STORE_TRUNCATE | KVR_STORE_NO_EVICT |
				  KVR_STORE_DSYNC | KVR_STORE_BACKGROUND_FAULT))
		return -EINVAL;
	if (!strncmp(uri, "mem:", 4))
		return kvr_memstore_open(e, uri + 4, &o, out);
	if (!strncmp(uri, "file:", 5) && uri[5])
		return kvr_filestore_open(e, uri + 5, &o, out);
	kvr_set_errmsg(e, "unknown store URI '%s' (want mem:SIZE or file:PATH)", uri);
	return -EINVAL;
}
