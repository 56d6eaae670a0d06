/* SPDX-License-Identifier: MIT */
/*
 * Spilling: objects the memory store evicts are written to a file store and
 * read back (promoted into memory) on a memory miss.
 *
 * The memory store's eviction hook keeps each victim (its bytes stay in the
 * pool) in `sx`, an index of objects whose spill write has not finished,
 * holding the latest version of each key; a GET finds them there. Victims
 * of one loop round go out as one kvr_put, and only one spill batch (puts
 * or removes) is in flight at a time, so the file store sees every key's
 * writes and removes in the order they happened. A promote (kvr_get from
 * the file store into a fresh pool extent) is listed in `px` until it
 * finishes; a PUT or REMOVE of its key meanwhile takes it out, so stale
 * bytes are never promoted over newer ones.
 *
 * While victims hold pool space, kvr_store_alloc() says -EAGAIN: such PUTs
 * (payload parked in a heap buffer) and GETs wait on the server's queue, in
 * arrival order, and are retried whenever pool space was freed.
 */
#include "transport/serve.h"

#include <stdlib.h>
#include <string.h>

struct srv_spill {
	kvr_target *t;
	struct kvr_store *fs;
	struct kvr_index sx;	 /* evicted, write pending or in flight */
	struct kvr_index px;	 /* promotes in flight */
	struct kvr_entry **pend; /* victims not yet submitted */
	uint32_t npend, cap_pend;
	struct kvr_entry **fl; /* the put batch in flight */
	uint32_t nfl;
	struct srv_req *rm_head, *rm_tail; /* REMOVEs waiting for the file store */
	struct srv_req *rm_fl;		   /* the remove batch in flight, in order */
	bool busy;			   /* a batch is in flight */
	kvr_obj *objs;			   /* scratch for building a batch */
	kvr_sge *sges;
};

static void release_victim(struct kvr_server *s, struct kvr_entry *en)
{
	if (en->linked)
		kvr_index_unlink(&s->sp->sx, en);
	kvr_store_evict_done(s->ms, en);
}

/* The memory store's eviction hook: keep the victim until it is written. */
static bool on_evict(struct kvr_store *ms, struct kvr_entry *v, void *ctx)
{
	struct kvr_server *s = ctx;
	struct srv_spill *sp = s->sp;

	(void)ms;
	if (!v->len)
		return false; /* nothing to write; a file store cannot hold it */
	if (sp->npend == sp->cap_pend) {
		uint32_t cap = sp->cap_pend * 2;
		struct kvr_entry **p = realloc(sp->pend, cap * sizeof(*p));

		if (!p) {
			kvr_log(s->e, KVR_LOG_WARN, "spill: out of memory; '%.*s' dropped",
				(int)v->key_len, (const char *)v->key);
			s->n.spill_errors++;
			return false;
		}
		sp->pend = p;
		sp->cap_pend = cap;
	}
	/* An older version still queued is unlinked here and skipped later. */
	kvr_index_insert(&sp->sx, v);
	sp->pend[sp->npend++] = v;
	return true;
}

/* ---------------------------------------------------------------- batches */

static void put_done(void *ctx, size_t n, const int64_t *res)
{
	struct kvr_server *s = ctx;
	struct srv_spill *sp = s->sp;

	for (size_t i = 0; i < n; i++) {
		struct kvr_entry *en = sp->fl[i];

		if (res[i] < 0) {
			s->n.spill_errors++;
			kvr_log(s->e, KVR_LOG_WARN, "spill: write of '%.*s' failed: %s; dropped",
				(int)en->key_len, (const char *)en->key, kvr_strerror((int)res[i]));
		} else {
			s->n.spilled++;
		}
		release_victim(s, en);
	}
	sp->nfl = 0;
	sp->busy = false;
	s->async--;
	srv_closing_progress(s);
}

static void submit_puts(struct kvr_server *s)
{
	struct srv_spill *sp = s->sp;
	uint32_t i = 0, n = 0;
	int rc;

	while (i < sp->npend && n < SRV_SPILL_BATCH) {
		struct kvr_entry *en = sp->pend[i++];

		if (!en->linked) { /* replaced by a newer victim, or removed */
			kvr_store_evict_done(s->ms, en);
			continue;
		}
		/* Written with a fresh checksum by the file store: check the bytes
		 * first so memory corruption is not laundered into a valid copy. */
		if (kvr_crc32c(0, s->base + en->off, en->len) != en->crc) {
			s->ms->t.stats.checksum_errors++;
			kvr_log(s->e, KVR_LOG_WARN, "spill: '%.*s' failed its checksum; dropped",
				(int)en->key_len, (const char *)en->key);
			release_victim(s, en);
			continue;
		}
		sp->sges[n] = (kvr_sge){s->base + en->off, en->len};
		sp->objs[n] = (kvr_obj){en->key, en->key_len, &sp->sges[n], 1};
		sp->fl[n++] = en;
	}
	memmove(sp->pend, sp->pend + i, (sp->npend - i) * sizeof(*sp->pend));
	sp->npend -= i;
	if (!n)
		return;
	rc = kvr_put(sp->t, sp->objs, n, put_done, s);
	if (rc) {
		kvr_log(s->e, KVR_LOG_WARN, "spill: cannot write %u objects: %s; dropped", n,
			kvr_strerror(rc));
		s->n.spill_errors += n;
		for (uint32_t k = 0; k < n; k++)
			release_victim(s, sp->fl[k]);
		return;
	}
	sp->nfl = n;
	sp->busy = true;
	s->async++;
}

static void remove_done(void *ctx, size_t n, const int64_t *res)
{
	struct kvr_server *s = ctx;
	struct srv_spill *sp = s->sp;
	struct srv_req *r = sp->rm_fl;

	sp->rm_fl = NULL;
	for (size_t i = 0; i < n && r; i++) {
		struct srv_req *next = r->next;
		int64_t v = res[i];

		r->next = NULL;
		if (v == -ENOENT && r->found)
			v = 0;
		kvr_store_unref(s->ms, r->en); /* the key holder */
		r->en = NULL;
		srv_respond(r, (int32_t)v, NULL, 0);
		r = next;
	}
	sp->busy = false;
	s->async--;
	srv_closing_progress(s);
}

static void answer_removes(struct kvr_server *s, struct srv_req *r, int err)
{
	while (r) {
		struct srv_req *next = r->next;

		r->next = NULL;
		kvr_store_unref(s->ms, r->en);
		r->en = NULL;
		srv_respond(r, err, NULL, 0);
		r = next;
	}
}

static void submit_removes(struct kvr_server *s)
{
	struct srv_spill *sp = s->sp;
	struct srv_req *head = sp->rm_head, *last = NULL, *r = head;
	uint32_t n = 0;
	int rc;

	for (; r && n < SRV_SPILL_BATCH; r = r->next) {
		sp->objs[n++] = (kvr_obj){r->en->key, r->en->key_len, NULL, 0};
		last = r;
	}
	sp->rm_head = r;
	if (!r)
		sp->rm_tail = NULL;
	last->next = NULL;
	rc = kvr_remove(sp->t, sp->objs, n, remove_done, s);
	if (rc) {
		kvr_log(s->e, KVR_LOG_WARN, "spill: cannot remove %u objects: %s", n,
			kvr_strerror(rc));
		answer_removes(s, head, rc);
		return;
	}
	sp->rm_fl = head;
	sp->busy = true;
	s->async++;
}

void srv_spill_flush(struct kvr_server *s)
{
	struct srv_spill *sp = s->sp;

	if (sp->busy)
		return;
	/* Removes first: every victim still queued was evicted after the last
	 * REMOVE of its key (a REMOVE unlinks older queued ones). */
	if (sp->rm_head)
		submit_removes(s);
	else if (sp->npend)
		submit_puts(s);
}

bool srv_spill_idle(const struct kvr_server *s)
{
	const struct srv_spill *sp = s->sp;

	return !s->async && (!sp || (!sp->busy && !sp->npend && !sp->rm_head));
}

/* ------------------------------------------------------------- requests */

static void promote(struct kvr_server *s, struct srv_req *r, const struct kvr_objd *o,
		    uint64_t len);

static void promote_done(void *ctx, size_t n, const int64_t *res)
{
	struct srv_req *r = ctx;
	struct kvr_server *s = r->c->s;
	struct kvr_entry *en = r->en;
	bool current = en->linked;
	int64_t v = res[0];

	(void)n;
	s->async--;
	r->en = NULL;
	if (current)
		kvr_index_unlink(&s->sp->px, en);
	if (v == -EMSGSIZE && !r->found) {
		/* The spilled object grew since we looked: look again, once. */
		struct kvr_objd o = srv_objd(en->key, en->key_len);

		r->found = true;
		srv_get(s, r, &o);
		kvr_store_unref(s->ms, en);
		srv_closing_progress(s);
		return;
	}
	if (v < 0) {
		if (v == -ENOENT)
			s->n.misses++;
		kvr_store_unref(s->ms, en);
		srv_respond(r, (int32_t)v, NULL, 0);
		srv_closing_progress(s);
		return;
	}
	en->len = (uint64_t)v; /* may have shrunk since we looked */
	en->crc = kvr_crc32c(0, s->base + en->off, en->len);
	/* Promote unless a PUT or REMOVE of the key came meanwhile (it took
	 * the entry out of px) or memory has the key again. */
	if (current && !kvr_index_find(&s->ms->ix, en->key, en->key_len, en->hash)) {
		en->refs++;
		kvr_store_commit(s->ms, en);
	}
	s->n.hits++;
	s->n.spill_hits++;
	srv_send_entry(r, en);
	srv_closing_progress(s);
}

static void promote(struct kvr_server *s, struct srv_req *r, const struct kvr_objd *o, uint64_t len)
{
	struct srv_spill *sp = s->sp;
	/* Behind requests already waiting, unless this is one of them. */
	int64_t off = s->wait_head && !s->retrying ? -EAGAIN : srv_alloc(s, len);
	struct kvr_entry *en;
	kvr_sge sge;
	kvr_obj ob;
	int rc;

	if (off == -EAGAIN) { /* wait for room, holding the key */
		r->en = kvr_store_entry(s->ms, o, 0, 0, 0);
		if (!r->en) {
			srv_respond(r, -ENOMEM, NULL, 0);
			return;
		}
		r->need = kvr_alloc_round(&s->ms->al, len);
		srv_wait_add(s, r);
		return;
	}
	if (off < 0) {
		srv_respond(r, (int32_t)off, NULL, 0);
		return;
	}
	en = kvr_store_entry(s->ms, o, (uint64_t)off, len, 0);
	if (!en) {
		kvr_alloc_put(&s->ms->al, (uint64_t)off, kvr_alloc_round(&s->ms->al, len));
		srv_respond(r, -ENOMEM, NULL, 0);
		return;
	}
	kvr_index_insert(&sp->px, en); /* an older promote of the key won't commit */
	sge = (kvr_sge){s->base + off, len};
	ob = (kvr_obj){o->key, o->key_len, &sge, 1};
	rc = kvr_get(sp->t, &ob, 1, promote_done, r);
	if (rc) {
		kvr_index_unlink(&sp->px, en);
		kvr_store_unref(s->ms, en);
		srv_respond(r, rc, NULL, 0);
		return;
	}
	r->en = en;
	r->state = RQ_SPILL_GET;
	s->async++;
}

void srv_spill_get(struct kvr_server *s, struct srv_req *r, const struct kvr_objd *o)
{
	struct srv_spill *sp = s->sp;
	struct kvr_entry *en = kvr_index_find(&sp->sx, o->key, o->key_len, o->hash);

	if (en) { /* evicted, still in the pool while it is written */
		if (en->len > r->len) {
			srv_respond(r, -EMSGSIZE, NULL, 0);
		} else if (!r->c->crc_out && kvr_crc32c(0, s->base + en->off, en->len) != en->crc) {
			srv_respond(r, -EIO, NULL, 0);
		} else {
			en->refs++;
			s->n.hits++;
			srv_send_entry(r, en);
		}
		return;
	}
	en = kvr_index_find(&sp->fs->ix, o->key, o->key_len, o->hash);
	if (!en) {
		s->n.misses++;
		srv_respond(r, -ENOENT, NULL, 0);
		return;
	}
	if (en->len > r->len) {
		srv_respond(r, -EMSGSIZE, NULL, 0);
		return;
	}
	promote(s, r, o, en->len);
}

int64_t srv_spill_exists(struct kvr_server *s, const struct kvr_objd *o)
{
	struct srv_spill *sp = s->sp;
	struct kvr_entry *en = kvr_index_find(&sp->sx, o->key, o->key_len, o->hash);

	if (!en)
		en = kvr_index_find(&sp->fs->ix, o->key, o->key_len, o->hash);
	return en ? (int64_t)en->len : -ENOENT;
}

bool srv_spill_remove(struct kvr_server *s, struct srv_req *r, const struct kvr_objd *o)
{
	struct srv_spill *sp = s->sp;
	struct kvr_entry *en;
	bool write = false;

	en = kvr_index_find(&sp->px, o->key, o->key_len, o->hash);
	if (en)
		kvr_index_unlink(&sp->px, en); /* its promote answers but won't commit */
	en = kvr_index_find(&sp->sx, o->key, o->key_len, o->hash);
	if (en) { /* queued: skipped; in flight: the remove below follows it */
		kvr_index_unlink(&sp->sx, en);
		r->found = true;
		write = true;
	}
	if (!write && !kvr_index_find(&sp->fs->ix, o->key, o->key_len, o->hash))
		return false;
	r->en = kvr_store_entry(s->ms, o, 0, 0, 0); /* holds the key */
	if (!r->en) {
		srv_respond(r, -ENOMEM, NULL, 0);
		return true;
	}
	r->state = RQ_SPILL_RM;
	srv_fifo_push(&sp->rm_head, &sp->rm_tail, r);
	return true;
}

void srv_spill_put_committed(struct kvr_server *s, const struct kvr_objd *o)
{
	struct srv_spill *sp = s->sp;
	struct kvr_entry *en;

	if (!sp->px.count)
		return;
	en = kvr_index_find(&sp->px, o->key, o->key_len, o->hash);
	if (en)
		kvr_index_unlink(&sp->px, en);
}

/* ----------------------------------------------------------- wait queue */

void srv_wait_add(struct kvr_server *s, struct srv_req *r)
{
	r->state = RQ_WAIT;
	srv_fifo_push(&s->wait_head, &s->wait_tail, r);
	s->wait_bytes += r->need;
	s->wait_force = true; /* retry at the next round */
}

static struct srv_req *wait_pop(struct kvr_server *s)
{
	struct srv_req *r = s->wait_head;

	s->wait_head = r->next;
	if (!s->wait_head)
		s->wait_tail = NULL;
	r->next = NULL;
	s->wait_bytes -= r->need;
	return r;
}

void srv_wait_retry(struct kvr_server *s)
{
	struct srv_req *r;

	s->retrying = true;
	while ((r = s->wait_head)) {
		int64_t off = srv_alloc(s, r->op == KVR_PROTO_OP_PUT ? r->len : r->need);

		if (off == -EAGAIN)
			break;
		wait_pop(s);
		if (r->op == KVR_PROTO_OP_PUT) {
			if (off < 0) {
				srv_release_park(s, r);
				srv_respond(r, (int32_t)off, NULL, 0);
				continue;
			}
			r->en->off = (uint64_t)off;
			r->en->alloc_len = kvr_alloc_round(&s->ms->al, r->len);
			if (r->remote) { /* RDMA: read the payload now */
				r->remote = false;
				r->sgx = (struct kvr_sgx){s->base + off, r->len, s->mr};
				r->state = RQ_RECV;
				srv_rdma_fetch(r);
				continue;
			}
			memcpy(s->base + off, r->park, r->len);
			free(r->park);
			r->park = NULL;
			s->parked_bytes -= r->len;
			srv_put_finish(s, r);
		} else {
			/* Room exists now: give it back and serve the GET afresh (the
			 * key may have changed meanwhile); its allocation finds the
			 * same room. */
			struct kvr_entry *kh = r->en;
			struct kvr_objd o = srv_objd(kh->key, kh->key_len);

			if (off >= 0)
				kvr_alloc_put(&s->ms->al, (uint64_t)off, r->need);
			r->en = NULL;
			r->need = 0;
			srv_get(s, r, &o);
			kvr_store_unref(s->ms, kh);
		}
	}
	/* Make room for everyone still waiting in one go, so one spill batch
	 * serves them all. */
	s->retrying = false;
	if (s->wait_head)
		kvr_store_evict(s->ms, s->wait_bytes);
	s->wait_state = srv_room_state(s);
	s->wait_force = false;
}

void srv_wait_fail_all(struct kvr_server *s, int err)
{
	while (s->wait_head) {
		struct srv_req *r = wait_pop(s);

		srv_release_park(s, r);
		srv_respond(r, err, NULL, 0);
	}
}

void srv_wait_drop_conn(struct kvr_server *s, struct srv_conn *c)
{
	struct srv_req **pp = &s->wait_head, *prev = NULL;

	while (*pp) {
		struct srv_req *r = *pp;

		if (r->c != c) {
			prev = r;
			pp = &r->next;
			continue;
		}
		*pp = r->next;
		if (s->wait_tail == r)
			s->wait_tail = prev;
		r->next = NULL;
		s->wait_bytes -= r->need;
		srv_release(r);
	}
}

/* ------------------------------------------------------------ lifecycle */

int srv_spill_init(struct kvr_server *s, kvr_target *spill)
{
	struct srv_spill *sp;

	if (s->ms->on_evict)
		return -EBUSY; /* another server spills this store */
	sp = calloc(1, sizeof(*sp));
	if (!sp)
		return -ENOMEM;
	sp->t = spill;
	sp->fs = kvr_store_of(spill);
	sp->cap_pend = 256;
	sp->pend = malloc(sp->cap_pend * sizeof(*sp->pend));
	sp->fl = malloc(SRV_SPILL_BATCH * sizeof(*sp->fl));
	sp->objs = malloc(SRV_SPILL_BATCH * sizeof(*sp->objs));
	sp->sges = malloc(SRV_SPILL_BATCH * sizeof(*sp->sges));
	if (!sp->pend || !sp->fl || !sp->objs || !sp->sges || kvr_index_init(&sp->sx, 256)) {
		free(sp->pend);
		free(sp->fl);
		free(sp->objs);
		free(sp->sges);
		free(sp);
		return -ENOMEM;
	}
	if (kvr_index_init(&sp->px, 64)) {
		kvr_index_fini(&sp->sx);
		free(sp->pend);
		free(sp->fl);
		free(sp->objs);
		free(sp->sges);
		free(sp);
		return -ENOMEM;
	}
	s->sp = sp;
	s->ms->evict_ctx = s;
	s->ms->on_evict = on_evict;
	return 0;
}

/* Only once srv_spill_idle(): nothing is queued or in flight. */
void srv_spill_fini(struct kvr_server *s)
{
	struct srv_spill *sp = s->sp;

	if (!sp)
		return;
	s->ms->on_evict = NULL;
	s->ms->evict_ctx = NULL;
	kvr_index_fini(&sp->sx);
	kvr_index_fini(&sp->px);
	free(sp->pend);
	free(sp->fl);
	free(sp->objs);
	free(sp->sges);
	free(sp);
	s->sp = NULL;
}
