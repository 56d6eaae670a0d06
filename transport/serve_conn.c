/* SPDX-License-Identifier: MIT */
/*
 * The server's connections: request slots, the HELLO handshake (with
 * authentication and the hand-over to another shard), and the requests
 * themselves. Every byte goes through transport/conn.c; a PUT's payload is
 * received straight into its pool extent and a GET's answer is sent
 * straight from it.
 */
#include "transport/serve.h"

#include <endian.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Connections start with room for this many in-flight ids and double up to
 * SRV_MAX_INFLIGHT as a client pipelines deeper. */
#define IDS_START 256u
/* Payloads of at least this size are sent with zero-copy sendmsg. */
#define SRV_ZC_MIN (16u << 10)

static const char *reason(int err)
{
	switch (err) {
	case 0:
		return "eof";
	case -ECONNRESET:
		return "reset";
	case -EPROTO:
		return "protocol";
	case -ETIMEDOUT:
		return "idle-timeout";
	case -EACCES:
		return "auth-failed";
	case -ESHUTDOWN:
		return "shutdown";
	case -EINVAL:
		return "bad-shard";
	case -EPROTONOSUPPORT:
		return "version";
	case -ENOMEM:
		return "no-memory";
	default:
		return "error";
	}
}

struct kvr_objd srv_objd(const uint8_t *key, uint16_t key_len)
{
	struct kvr_objd o = {.key = key, .key_len = key_len};

	o.hash = kvr_key_hash(key, key_len);
	return o;
}

/* ------------------------------------------------------------------ slots */

static void tx_done(struct kvr_tx *tx, int err);

static void conn_free(struct srv_conn *c)
{
	kvr_conn_fini(&c->conn);
	kvr_proto_ids_free(&c->ids);
	for (uint32_t i = 0; i < c->nchunks; i++)
		free(c->chunks[i]);
	free(c->chunks);
	free(c);
}

/*
 * A slot came back, or the connection closed. A closed connection with no
 * slot in use goes on the server's dead list and is freed at the next loop
 * round (srv_reap_dead): on_close can run from inside conn.c's own receive
 * path, which still touches the connection after it returns.
 */
static void conn_check(struct srv_conn *c)
{
	struct kvr_server *s = c->s;

	if (c->busy)
		return;
	if (c->closed) {
		if (!c->dead) {
			c->dead = true;
			c->next = s->dead;
			s->dead = c;
			srv_closing_progress(s);
		}
	} else if (c->draining && !c->conn.closing) {
		kvr_conn_close(&c->conn, 0);
	}
}

void srv_reap_dead(struct kvr_server *s)
{
	while (s->dead) {
		struct srv_conn *c = s->dead;

		s->dead = c->next;
		conn_free(c);
	}
}

static struct srv_req *slot_get(struct srv_conn *c)
{
	struct srv_req *r;

	if (!c->free) {
		struct srv_req **v = realloc(c->chunks, (c->nchunks + 1) * sizeof(*v));
		struct srv_req *chunk;

		if (!v)
			return NULL;
		c->chunks = v;
		chunk = calloc(SRV_SLOT_CHUNK, sizeof(*chunk));
		if (!chunk)
			return NULL;
		c->chunks[c->nchunks++] = chunk;
		for (uint32_t i = SRV_SLOT_CHUNK; i-- > 0;) {
			chunk[i].c = c;
			chunk[i].tx.done = tx_done;
			chunk[i].next = c->free;
			c->free = &chunk[i];
		}
	}
	r = c->free;
	c->free = r->next;
	r->next = NULL;
	r->en = NULL;
	r->park = NULL;
	r->heap = NULL;
	r->status = 0;
	r->has_id = false;
	r->sending = false;
	r->found = false;
	r->remote = false;
	r->crc_in = false;
	r->close_after = 0;
	r->len = r->need = r->out_len = 0;
	r->state = RQ_SEND;
	r->rslot_held = c->rx_rslot_valid;
	r->rslot = c->rx_rslot;
	c->rx_rslot_valid = false; /* the request message is this slot's now */
	r->txq = r->reserved = 0;
	c->busy++;
	c->s->busy++;
	return r;
}

/* ----------------------------------------------------------- back-pressure */

static uint64_t share(uint64_t total, uint32_t nconns, uint64_t least)
{
	uint64_t v = nconns ? total / nconns : total;

	return v > least ? v : least;
}

/* c holds too much (div 1) or is not yet down to half of that (div 2):
 * its own limits, and its share of the totals when they are reached. */
static bool flow_over(const struct srv_conn *c, uint64_t div)
{
	const struct kvr_server *s = c->s;

	if (c->busy >= SRV_CONN_SLOTS / div || c->tx >= SRV_CONN_TX / div)
		return true;
	if (s->busy >= SRV_TOTAL_SLOTS / div &&
	    c->busy >= share(SRV_TOTAL_SLOTS, s->nconns, SRV_SHARE_SLOTS) / div)
		return true;
	return s->tx >= SRV_TOTAL_TX / div &&
	       c->tx >= share(SRV_TOTAL_TX, s->nconns, SRV_SHARE_TX) / div;
}

static void flow_defer(struct srv_conn *c)
{
	if (!c->deferred) {
		c->deferred = true;
		c->s->ndeferred++;
	}
}

/* c is no longer held back (resumed, or closed); true when it was. */
static bool flow_undefer(struct srv_conn *c)
{
	if (!c->deferred)
		return false;
	c->deferred = false;
	c->s->ndeferred--;
	return true;
}

static void flow_resume(struct srv_conn *c)
{
	if (flow_undefer(c))
		kvr_conn_resume(&c->conn);
}

/* Something came back to the server as a whole: every connection held
 * back that is down to half of its limits goes on (one held for pool
 * room looks again at its frame, and may wait again). */
static void flow_scan(struct kvr_server *s)
{
	for (struct srv_conn *c = s->conns; c && s->ndeferred; c = c->next)
		if (c->deferred && !flow_over(c, 2))
			flow_resume(c);
}

/* Whether frame f must wait before c is read further. */
static bool flow_blocked(struct srv_conn *c, const struct kvr_frame *f)
{
	struct kvr_server *s = c->s;
	uint64_t len = f->payload_len;

	if (flow_over(c, 1))
		return true;
	/* A PUT's extent is reserved when its header arrives: while others
	 * are on the wire, one more may not take the pool past the bound
	 * (one alone always may: max_object stays under it). */
	return f->opcode == KVR_PROTO_OP_PUT && len > KVR_CONN_SMALL && len <= s->max_object &&
	       s->reserved &&
	       s->reserved + kvr_alloc_round(&s->ms->al, len) >
		   s->ms->al.capacity / SRV_RESERVE_DIV;
}

/* A PUT's payload is in (or will never be): its reservation ends. */
static void unreserve(struct kvr_server *s, struct srv_req *r)
{
	if (!r->reserved)
		return;
	s->reserved -= r->reserved;
	r->reserved = 0;
	if (s->ndeferred)
		flow_scan(s);
}

static void slot_put(struct srv_req *r)
{
	struct srv_conn *c = r->c;
	struct kvr_server *s = c->s;
	bool high = s->busy >= SRV_TOTAL_SLOTS / 2 || s->tx >= SRV_TOTAL_TX / 2;

	unreserve(s, r);
	c->tx -= r->txq;
	s->tx -= r->txq;
	r->txq = 0;
	s->busy--;

	/* Only now: until its answer has left, a copy of the request could
	 * still be answered a second time under the same id. */
	if (r->has_id) {
		kvr_proto_ids_remove(&c->ids, r->id);
		r->has_id = false;
	}
	if (r->rslot_held)
		srv_rdma_unhold(r);
	free(r->heap);
	r->heap = NULL;
	r->state = RQ_FREE;
	r->next = c->free;
	c->free = r;
	c->busy--;
	if (c->deferred && !flow_over(c, 2))
		flow_resume(c);
	if (high && s->ndeferred && s->busy < SRV_TOTAL_SLOTS / 2 && s->tx < SRV_TOTAL_TX / 2)
		flow_scan(s);
	conn_check(c);
}

static void unsend(struct kvr_server *s, struct srv_req *r)
{
	if (r->sending) {
		r->sending = false;
		s->sending--;
	}
}

void srv_release_park(struct kvr_server *s, struct srv_req *r)
{
	if (r->park) {
		free(r->park);
		r->park = NULL;
		s->parked_bytes -= r->len;
	}
	if (r->en) {
		kvr_store_unref(s->ms, r->en);
		r->en = NULL;
	}
}

void srv_release(struct srv_req *r)
{
	struct kvr_server *s = r->c->s;

	unsend(s, r);
	srv_release_park(s, r);
	slot_put(r);
}

static void tx_done(struct kvr_tx *tx, int err)
{
	struct srv_req *r = KVR_CONTAINER_OF(tx, struct srv_req, tx);
	struct srv_conn *c = r->c;

	(void)err; /* a send that failed ends in the connection's close */
	unsend(c->s, r);
	if (r->en) {
		kvr_store_unref(c->s->ms, r->en);
		r->en = NULL;
	}
	if (r->close_after && !c->conn.closing)
		kvr_conn_close(&c->conn, r->close_after);
	slot_put(r);
}

void srv_respond(struct srv_req *r, int32_t status, const struct kvr_sgx *payload, uint64_t len)
{
	struct srv_conn *c = r->c;
	struct kvr_frame f = {
	    .opcode = r->op,
	    .flags = KVR_PROTO_F_RESPONSE,
	    .id = r->id,
	    .status = status,
	};

	if (!srv_conn_live(c)) {
		srv_release(r);
		return;
	}
	if (c->s->in_flush)
		c->s->kick = true;
	r->state = RQ_SEND;
	r->tx.key = NULL;
	r->tx.sgx = NULL;
	r->tx.nsge = 0;
	if (status == 0 && payload && len) {
		if (payload != &r->sgx)
			r->sgx = *payload;
		r->tx.sgx = &r->sgx;
		r->tx.nsge = 1;
		f.payload_len = len;
		if (r->op == KVR_PROTO_OP_GET && c->crc_out) {
			f.flags |= KVR_PROTO_F_CRC;
			f.crc = r->crc;
		}
	}
	if (c->ch && r->op != KVR_PROTO_OP_HELLO) {
		srv_rdma_respond(r, &f, r->tx.nsge ? &r->sgx : NULL);
		return;
	}
	r->txq = KVR_PROTO_HDR_LEN + f.payload_len;
	c->tx += r->txq;
	c->s->tx += r->txq;
	kvr_conn_send(&c->conn, &r->tx, &f);
}

void srv_send_entry(struct srv_req *r, struct kvr_entry *en)
{
	struct kvr_server *s = r->c->s;
	struct kvr_sgx x = {s->base + en->off, en->len, s->mr};

	r->en = en;
	r->crc = en->crc;
	r->sending = true;
	s->sending++;
	s->n.bytes_out += en->len;
	srv_respond(r, 0, &x, en->len);
}

int64_t srv_alloc(struct kvr_server *s, uint64_t len)
{
	int64_t off = kvr_store_alloc(s->ms, len);

	if (off == -ENOSPC && s->sp && (s->sending || s->async) &&
	    kvr_alloc_round(&s->ms->al, len) <= s->ms->al.capacity)
		return -EAGAIN;
	return off;
}

/* In-flight ids, growing the set as the client pipelines deeper. */
static int ids_add(struct srv_conn *c, uint64_t id)
{
	int rc = kvr_proto_ids_insert(&c->ids, id);

	if (rc == -ENOSPC && c->ids.cap < SRV_MAX_INFLIGHT) {
		struct kvr_proto_ids n;

		rc = kvr_proto_ids_init(&n, c->ids.cap * 2);
		if (rc)
			return rc;
		for (uint32_t i = 0; i <= c->ids.mask; i++)
			if (c->ids.used[i])
				kvr_proto_ids_insert(&n, c->ids.keys[i]);
		kvr_proto_ids_free(&c->ids);
		c->ids = n;
		rc = kvr_proto_ids_insert(&c->ids, id);
	}
	return rc;
}

/* -------------------------------------------------------------- handshake */

/* Queue a HELLO response; on failure c is closed with the error, which is
 * returned. */
static int send_hello(struct srv_conn *c, int32_t status, const uint8_t *nonce, int close_after,
		      const struct kvr_hello_rdma *qp, bool crc)
{
	struct kvr_server *s = c->s;
	struct srv_req *r = slot_get(c);
	struct kvr_hello h = {
	    .version_min = KVR_PROTO_VERSION,
	    .version_max = KVR_PROTO_VERSION,
	    .shard = (uint16_t)s->shard,
	    .shards = (uint16_t)s->shards,
	};
	int n;

	if (!r) {
		kvr_conn_close(&c->conn, -ENOMEM);
		return -ENOMEM;
	}
	r->op = KVR_PROTO_OP_HELLO;
	r->id = c->hello_id;
	r->close_after = close_after;
	if (nonce) {
		h.features = KVR_PROTO_FEAT_AUTH;
		h.auth_len = KVR_PROTO_NONCE_LEN;
		memcpy(h.auth, nonce, KVR_PROTO_NONCE_LEN);
	}
	if (qp) {
		h.features |= KVR_PROTO_FEAT_RDMA;
		h.rdma = *qp;
	}
	if (crc)
		h.features |= KVR_PROTO_FEAT_CRC;
	n = kvr_proto_hello_encode(r->body, sizeof(r->body), &h);
	if (n < 0) {
		kvr_log(s->e, KVR_LOG_ERROR, "conn error peer=%s reason=hello-encode: %s", c->peer,
			strerror(-n));
		srv_release(r);
		kvr_conn_close(&c->conn, n);
		return n;
	}
	r->sgx = (struct kvr_sgx){r->body, (size_t)n, NULL};
	srv_respond(r, status, &r->sgx, (uint64_t)n);
	return 0;
}

/* Refuse the handshake: a HELLO response with err, then close. */
static int refuse(struct srv_conn *c, int err)
{
	kvr_log(c->conn.e, err == -EACCES ? KVR_LOG_WARN : KVR_LOG_INFO,
		"conn refused peer=%s reason=%s", c->peer, reason(err));
	c->state = CS_DOOMED;
	return send_hello(c, err, NULL, err, NULL, false);
}

void srv_conn_hello_ok(struct srv_conn *c, const struct kvr_hello *hello)
{
	struct kvr_server *s = c->s;
	struct kvr_hello_rdma ours;
	bool rdma = hello && (hello->features & KVR_PROTO_FEAT_RDMA);

	/* Over TCP the client may check GET payloads itself, end to end; over
	 * RDMA the server checks (the client's CPU never touches the bytes). */
	c->crc_out = hello && !rdma && (hello->features & KVR_PROTO_FEAT_CRC);
	if (rdma) {
		int rc = srv_rdma_open(c, &hello->rdma, &ours);

		if (rc) {
			kvr_log(s->e, KVR_LOG_WARN, "conn error peer=%s reason=rdma: %s", c->peer,
				strerror(-rc));
			refuse(c, rc);
			return;
		}
	}
	if (send_hello(c, 0, NULL, 0, rdma ? &ours : NULL, c->crc_out))
		return; /* closed */
	c->state = CS_READY;
	srv_group_count(s, 1);
	kvr_log(s->e, KVR_LOG_INFO, "conn open peer=%s shard=%u", c->peer, s->shard);
}

/* Give the socket to another shard: close c without closing the socket.
 * on_frame runs between recvs, so none is in flight; with the fd hidden
 * from conn.c, closing neither shuts the socket down nor closes it, and
 * on_close (once any send still in flight is in) hands it over. */
static void handoff(struct srv_conn *c, uint32_t to, const struct kvr_hello *h)
{
	c->handoff_hello = *h;
	c->state = CS_HANDOFF;
	c->handoff_to = to;
	c->handoff_fd = c->conn.fd;
	c->conn.fd = -1;
	kvr_conn_close(&c->conn, 0);
}

static int on_hello(struct srv_conn *c, const struct kvr_frame *f, const uint8_t *body)
{
	struct kvr_server *s = c->s;
	struct kvr_hello h;
	int to;

	if (f->opcode != KVR_PROTO_OP_HELLO || kvr_frame_is_response(f)) {
		kvr_log(s->e, KVR_LOG_WARN, "conn error peer=%s reason=no-hello opcode=%u", c->peer,
			f->opcode);
		return -EPROTO;
	}
	if (!body || kvr_proto_hello_decode(body, f->payload_len, &h) < 0) {
		kvr_log(s->e, KVR_LOG_WARN, "conn error peer=%s reason=bad-hello", c->peer);
		return -EPROTO;
	}
	c->hello_id = f->id;
	if (h.version_min > KVR_PROTO_VERSION)
		return refuse(c, -EPROTONOSUPPORT);
	if (s->secret && c->state == CS_HELLO) {
		if (kvr_proto_nonce(c->nonce))
			return -EIO;
		c->state = CS_AUTH;
		return send_hello(c, 0, c->nonce, 0, NULL, false);
	}
	if (s->secret &&
	    !kvr_proto_auth_check(s->secret, s->o.secret_len, c->nonce, h.auth, h.auth_len))
		return refuse(c, -EACCES);
	if ((h.features & KVR_PROTO_FEAT_RDMA) && !s->rdma) {
		kvr_log(s->e, KVR_LOG_INFO, "conn refused peer=%s reason=rdma-not-served", c->peer);
		return refuse(c, -EPROTONOSUPPORT);
	}
	to = srv_group_pick(s, h.shard);
	if (to < 0)
		return refuse(c, to);
	if ((uint32_t)to == s->shard)
		srv_conn_hello_ok(c, &h);
	else
		handoff(c, (uint32_t)to, &h);
	return 0;
}

/* --------------------------------------------------------------- requests */

/* Answer r with status once the payload of its frame (if large) is gone. */
static int answer_after_payload(struct srv_conn *c, struct srv_req *r, const struct kvr_frame *f,
				int status)
{
	if (f->payload_len > KVR_CONN_SMALL) {
		r->state = RQ_DISCARD;
		r->status = status;
		c->rx_req = r;
		return 0; /* dst stays empty: conn.c discards the payload */
	}
	srv_respond(r, status, NULL, 0);
	return 0;
}

void srv_put_finish(struct kvr_server *s, struct srv_req *r)
{
	struct kvr_entry *en = r->en;
	struct kvr_objd o = srv_objd(en->key, en->key_len);

	en->crc = r->crc_in ? r->crc : kvr_crc32c(0, s->base + en->off, en->len);
	if (s->sp)
		srv_spill_put_committed(s, &o);
	r->en = NULL;
	s->n.puts++;
	s->n.bytes_in += en->len;
	kvr_store_commit(s->ms, en);
	srv_respond(r, 0, NULL, 0);
}

/* No room in the pool until spill writes finish: keep the payload in a heap
 * buffer and wait (in arrival order) for room. */
static int put_park(struct srv_conn *c, struct srv_req *r, const struct kvr_frame *f,
		    const struct kvr_objd *o, const uint8_t *small, struct kvr_rx_dest *dst)
{
	struct kvr_server *s = c->s;
	uint64_t len = f->payload_len;

	if (s->parked_bytes + len > SRV_PARK_MAX)
		return answer_after_payload(c, r, f, -ENOSPC);
	r->en = kvr_store_entry(s->ms, o, 0, len, 0);
	if (!r->en)
		return answer_after_payload(c, r, f, -ENOMEM);
	r->en->alloc_len = 0; /* no extent yet */
	r->park = malloc(len);
	if (!r->park) {
		kvr_store_unref(s->ms, r->en);
		r->en = NULL;
		return answer_after_payload(c, r, f, -ENOMEM);
	}
	s->parked_bytes += len;
	r->need = kvr_alloc_round(&s->ms->al, len);
	if (len <= KVR_CONN_SMALL) {
		memcpy(r->park, small, len);
		srv_wait_add(s, r);
		return 0;
	}
	r->sgx = (struct kvr_sgx){r->park, len, NULL};
	dst->sgx = &r->sgx;
	dst->nsge = 1;
	r->state = RQ_PARK_RECV;
	c->rx_req = r;
	return 0;
}

static int do_put(struct srv_conn *c, struct srv_req *r, const struct kvr_frame *f,
		  const struct kvr_objd *o, const uint8_t *small, struct kvr_rx_dest *dst)
{
	struct kvr_server *s = c->s;
	uint64_t len = f->payload_len;
	int64_t off = 0;

	r->len = len;
	if (len > s->max_object)
		return answer_after_payload(c, r, f, -EFBIG);
	if (len)
		/* Behind requests already waiting for room, to keep their order. */
		off = s->wait_head ? -EAGAIN : srv_alloc(s, len);
	if (off == -EAGAIN && c->ch && len > KVR_CONN_SMALL) {
		/* RDMA: the payload can wait in the client's memory; it is
		 * read once room is found. */
		r->en = kvr_store_entry(s->ms, o, 0, len, 0);
		if (!r->en)
			return answer_after_payload(c, r, f, -ENOMEM);
		r->en->alloc_len = 0; /* no extent yet */
		r->remote = true;
		r->need = kvr_alloc_round(&s->ms->al, len);
		srv_wait_add(s, r);
		return 0;
	}
	if (off == -EAGAIN)
		return put_park(c, r, f, o, small, dst);
	if (off < 0)
		return answer_after_payload(c, r, f, (int)off);
	r->en = kvr_store_entry(s->ms, o, (uint64_t)off, len, 0);
	if (!r->en) {
		if (len)
			kvr_alloc_put(&s->ms->al, (uint64_t)off, kvr_alloc_round(&s->ms->al, len));
		return answer_after_payload(c, r, f, -ENOMEM);
	}
	if (len <= KVR_CONN_SMALL) {
		if (len)
			memcpy(s->base + off, small, len);
		srv_put_finish(s, r);
		return 0;
	}
	r->sgx = (struct kvr_sgx){s->base + off, len, s->mr};
	dst->sgx = &r->sgx;
	dst->nsge = 1;
	dst->crc = &r->crc; /* over TCP: the pool's crc32c, computed as the bytes land */
	r->state = RQ_RECV;
	r->reserved = kvr_alloc_round(&s->ms->al, len);
	s->reserved += r->reserved;
	c->rx_req = r;
	return 0;
}

void srv_get(struct kvr_server *s, struct srv_req *r, const struct kvr_objd *o)
{
	struct kvr_entry *en = kvr_store_pin(s->ms, o);

	if (!en) {
		if (s->sp) {
			srv_spill_get(s, r, o);
			return;
		}
		s->n.misses++;
		srv_respond(r, -ENOENT, NULL, 0);
		return;
	}
	if (en->len > r->len) {
		kvr_store_unref(s->ms, en);
		srv_respond(r, -EMSGSIZE, NULL, 0);
		return;
	}
	/* Sent as stored: its crc32c was checked as it arrived (and is sent as
	 * the trailer to a client that checks end to end). Checking it again
	 * here, for a client that does not, would let a 48-byte request cost
	 * a pass over the whole object. */
	s->n.hits++;
	srv_send_entry(r, en);
}

static void do_exists(struct kvr_server *s, struct srv_req *r, const struct kvr_objd *o)
{
	struct kvr_entry *en = kvr_index_find(&s->ms->ix, o->key, o->key_len, o->hash);
	int64_t len = en ? (int64_t)en->len : s->sp ? srv_spill_exists(s, o) : -ENOENT;
	uint64_t le;

	if (len < 0) {
		srv_respond(r, (int32_t)len, NULL, 0);
		return;
	}
	le = htole64((uint64_t)len);
	memcpy(r->body, &le, sizeof(le));
	r->sgx = (struct kvr_sgx){r->body, sizeof(le), NULL};
	srv_respond(r, 0, &r->sgx, sizeof(le));
}

static void do_remove(struct kvr_server *s, struct srv_req *r, const struct kvr_objd *o)
{
	struct kvr_entry *en = kvr_index_find(&s->ms->ix, o->key, o->key_len, o->hash);

	if (en) {
		kvr_index_unlink(&s->ms->ix, en);
		kvr_store_unref(s->ms, en);
		r->found = true;
	}
	if (s->sp && srv_spill_remove(s, r, o))
		return; /* answered when the spill store has dropped it too */
	srv_respond(r, r->found ? 0 : -ENOENT, NULL, 0);
}

static void do_stats(struct kvr_server *s, struct srv_req *r)
{
	int n;

	r->heap = malloc(KVR_PROTO_MAX_HELLO);
	if (!r->heap) {
		srv_respond(r, -ENOMEM, NULL, 0);
		return;
	}
	n = kvr_server_stats_json(s, r->heap, KVR_PROTO_MAX_HELLO);
	r->sgx = (struct kvr_sgx){r->heap, (size_t)n, NULL};
	srv_respond(r, 0, &r->sgx, (uint64_t)n);
}

int srv_conn_request(struct srv_conn *c, const struct kvr_frame *f, const uint8_t *key,
		     const uint8_t *small, struct kvr_rx_dest *dst)
{
	struct kvr_server *s = c->s;
	struct srv_req *r;
	struct kvr_objd o = {0};
	int rc;

	if (kvr_frame_is_response(f) || f->opcode == KVR_PROTO_OP_HELLO) {
		kvr_log(s->e, KVR_LOG_WARN, "conn error peer=%s reason=unexpected-%s", c->peer,
			kvr_frame_is_response(f) ? "response" : "hello");
		return -EPROTO;
	}
	rc = ids_add(c, f->id);
	if (rc) {
		kvr_log(s->e, KVR_LOG_WARN, "conn error peer=%s reason=%s id=%llu", c->peer,
			rc == -EEXIST ? "duplicate-id" : "too-many-in-flight",
			(unsigned long long)f->id);
		return -EPROTO;
	}
	r = slot_get(c);
	if (!r) {
		kvr_proto_ids_remove(&c->ids, f->id);
		return -ENOMEM;
	}
	r->has_id = true;
	r->id = f->id;
	r->op = f->opcode;
	if (c->draining)
		return answer_after_payload(c, r, f, -ESHUTDOWN);
	if (key)
		o = srv_objd(key, f->key_len);
	switch (f->opcode) {
	case KVR_PROTO_OP_PUT:
		return do_put(c, r, f, &o, small, dst);
	case KVR_PROTO_OP_GET: {
		uint64_t cap;

		memcpy(&cap, small, sizeof(cap)); /* the decoder checked: 8 bytes */
		r->len = le64toh(cap);
		s->n.gets++;
		srv_get(s, r, &o);
		return 0;
	}
	case KVR_PROTO_OP_EXISTS:
		do_exists(s, r, &o);
		return 0;
	case KVR_PROTO_OP_REMOVE:
		do_remove(s, r, &o);
		return 0;
	default: /* STATS: the decoder admits nothing else */
		do_stats(s, r);
		return 0;
	}
}

/* ------------------------------------------------------- connection hooks */

static int on_frame(struct kvr_conn *kc, const struct kvr_frame *f, const uint8_t *key,
		    const uint8_t *small, struct kvr_rx_dest *dst)
{
	struct srv_conn *c = kc->owner;

	switch (c->state) {
	case CS_HELLO:
	case CS_AUTH:
		return on_hello(c, f, small);
	case CS_READY:
		if (c->ch) { /* requests come over the queue pair now */
			kvr_log(c->s->e, KVR_LOG_WARN,
				"conn error peer=%s reason=tcp-frame-on-rdma", c->peer);
			return -EPROTO;
		}
		if (!kvr_frame_is_response(f) && flow_blocked(c, f)) {
			flow_defer(c);
			return KVR_CONN_DEFER; /* the frame waits, unread */
		}
		return srv_conn_request(c, f, key, small, dst);
	default: /* a refusal or hand-over is under way: the peer must wait */
		return 0;
	}
}

void srv_conn_payload(struct srv_conn *c, struct srv_req *r)
{
	switch (r->state) {
	case RQ_RECV:
		srv_put_finish(c->s, r);
		break;
	case RQ_PARK_RECV:
		srv_wait_add(c->s, r);
		break;
	default: /* RQ_DISCARD */
		srv_respond(r, r->status, NULL, 0);
		break;
	}
	(void)c;
}

static void on_payload(struct kvr_conn *kc, const struct kvr_frame *f)
{
	struct srv_conn *c = kc->owner;
	struct srv_req *r = c->rx_req;

	(void)f;
	c->rx_req = NULL;
	if (!r)
		return;
	unreserve(c->s, r);
	/* straight into the pool: conn.c computed its crc32c on the way */
	r->crc_in = r->state == RQ_RECV;
	srv_conn_payload(c, r);
}

static void on_close(struct kvr_conn *kc, int err)
{
	struct srv_conn *c = kc->owner;
	struct kvr_server *s = c->s;

	if (c->prev)
		c->prev->next = c->next;
	else
		s->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	c->prev = c->next = NULL;
	s->nconns--;
	flow_undefer(c);
	if (c->state == CS_READY)
		srv_group_count(s, -1);
	if (c->rx_req) { /* died mid-payload: the partial bytes are never committed */
		struct srv_req *r = c->rx_req;

		c->rx_req = NULL;
		srv_release(r);
	}
	srv_wait_drop_conn(s, c);
	if (c->state == CS_HANDOFF) {
		int rc = srv_group_handoff(s, c->handoff_to, c->handoff_fd, c->peer, c->hello_id,
					   &c->handoff_hello);

		if (rc) {
			kvr_log(s->e, KVR_LOG_WARN,
				"conn close peer=%s reason=handoff-failed to=%u", c->peer,
				c->handoff_to);
			close(c->handoff_fd);
		} else {
			kvr_log(s->e, KVR_LOG_DEBUG, "conn handoff peer=%s to=%u", c->peer,
				c->handoff_to);
		}
		c->handoff_fd = -1;
	} else {
		kvr_log(s->e, err && err != -ESHUTDOWN ? KVR_LOG_INFO : KVR_LOG_DEBUG,
			"conn close peer=%s reason=%s in=%llu out=%llu", c->peer, reason(err),
			(unsigned long long)kc->st.bytes_in, (unsigned long long)kc->st.bytes_out);
	}
	if (c->ch) {
		srv_rdma_close(c, err); /* srv_conn_finished() once it drained */
		return;
	}
	srv_conn_finished(c);
}

void srv_conn_finished(struct srv_conn *c)
{
	c->closed = true; /* only now: the releases before must not free c */
	conn_check(c);
}

const struct kvr_conn_ops srv_conn_ops = {
    .on_frame = on_frame,
    .on_payload = on_payload,
    .on_close = on_close,
};

struct srv_conn *srv_conn_new(struct kvr_server *s, int fd, const char *peer)
{
	struct srv_conn *c = calloc(1, sizeof(*c));

	if (!c || kvr_proto_ids_init(&c->ids, IDS_START)) {
		free(c);
		close(fd);
		return NULL;
	}
	if (kvr_conn_init(&c->conn, s->e, &srv_conn_ops, c, &kvr_proto_default_limits,
			  SRV_ZC_MIN)) {
		kvr_proto_ids_free(&c->ids);
		free(c);
		close(fd);
		return NULL;
	}
	c->s = s;
	c->state = CS_HELLO;
	c->handoff_fd = -1;
	snprintf(c->peer, sizeof(c->peer), "%s", peer);
	snprintf(c->name, sizeof(c->name), "conn %s", peer);
	c->conn.name = c->name;
	c->progress_ns = s->e->now_ns ? s->e->now_ns : kvr_now_ns();
	c->out_ns = c->progress_ns;
	c->next = s->conns;
	if (s->conns)
		s->conns->prev = c;
	s->conns = c;
	s->nconns++;
	kvr_conn_adopt(&c->conn, fd);
	return c;
}

void srv_adopt(struct kvr_server *s, int fd, const char *peer, uint64_t hello_id,
	       const struct kvr_hello *h)
{
	struct srv_conn *c = srv_conn_new(s, fd, peer);

	if (!c) {
		kvr_log(s->e, KVR_LOG_WARN, "conn close peer=%s reason=no-memory", peer);
		return;
	}
	c->hello_id = hello_id;
	srv_conn_hello_ok(c, h);
}

/* Slowest a frame's payload may arrive once the idle timeout has passed:
 * a frame gets the timeout plus its payload at this rate, however often
 * its bytes trickle in. */
#define SRV_MIN_RATE (64ull << 20) /* bytes per second */

void srv_conn_check_idle(struct srv_conn *c, uint64_t now_ns)
{
	uint64_t idle = (uint64_t)c->s->o.idle_timeout_ms * 1000000ull, budget = idle;
	bool stuck, moved = c->conn.st.bytes_in != c->seen_bytes;

	if (c->conn.closing)
		return;
	/* Answers waiting for a peer that takes none of them. */
	if (kvr_conn_tx_idle(&c->conn) || c->conn.st.bytes_out != c->seen_out) {
		c->seen_out = c->conn.st.bytes_out;
		c->out_ns = now_ns;
	} else if (now_ns - c->out_ns >= idle) {
		kvr_log(c->s->e, KVR_LOG_INFO, "conn not reading peer=%s: answers unsent for %u ms",
			c->peer, c->s->o.idle_timeout_ms);
		/* Reset, not FIN: what the kernel still holds for this peer is
		 * dropped at once (and zero-copy buffers come back). */
		setsockopt(c->conn.fd, SOL_SOCKET, SO_LINGER, &(struct linger){1, 0},
			   sizeof(struct linger));
		kvr_conn_close(&c->conn, -ETIMEDOUT);
		return;
	}
	if (moved) {
		c->seen_bytes = c->conn.st.bytes_in;
		c->progress_ns = now_ns;
	}
	/* Waiting between frames is fine; in the handshake or inside a frame
	 * the peer owes us bytes (unless the server holds the frame back). */
	stuck = !c->deferred && (c->state == CS_HELLO || c->state == CS_AUTH || c->rx_req ||
				 c->conn.head != c->conn.tail);
	if (!stuck) {
		c->stuck_ns = 0;
		return;
	}
	if (c->conn.st.frames_in != c->seen_frames) { /* another frame since */
		c->seen_frames = c->conn.st.frames_in;
		c->stuck_ns = 0;
	}
	if (!c->stuck_ns) /* this frame began since the last tick (or at accept) */
		c->stuck_ns = c->state == CS_HELLO ? c->progress_ns : now_ns;
	if (c->rx_req)
		budget += c->rx_req->len * 1000000000ull / SRV_MIN_RATE;
	if (!moved && now_ns - c->progress_ns >= idle) {
		kvr_log(c->s->e, KVR_LOG_INFO, "conn stalled peer=%s after %u ms", c->peer,
			c->s->o.idle_timeout_ms);
		kvr_conn_close(&c->conn, -ETIMEDOUT);
	} else if (now_ns - c->stuck_ns >= budget) {
		/* Bytes keep coming, too slowly for the frame ever to end in
		 * time (a slowloris): the frame as a whole has run out. */
		kvr_log(c->s->e, KVR_LOG_INFO,
			"conn too slow peer=%s: frame unfinished after %llu ms", c->peer,
			(unsigned long long)((now_ns - c->stuck_ns) / 1000000));
		kvr_conn_close(&c->conn, -ETIMEDOUT);
	}
}

bool srv_conn_reclaim_idle(struct kvr_server *s, uint64_t now_ns)
{
	uint64_t idle = (uint64_t)s->o.idle_timeout_ms * 1000000ull;
	struct srv_conn *victim = NULL;

	for (struct srv_conn *c = s->conns; c; c = c->next) {
		if (c->conn.closing || c->state != CS_READY || c->busy || c->rx_req ||
		    c->conn.head != c->conn.tail || c->conn.st.bytes_in != c->seen_bytes ||
		    now_ns - c->progress_ns < idle)
			continue;
		if (!victim || c->progress_ns < victim->progress_ns)
			victim = c;
	}
	if (!victim)
		return false;
	kvr_log(s->e, KVR_LOG_INFO, "conn close peer=%s reason=reclaimed-idle (table full)",
		victim->peer);
	kvr_conn_close(&victim->conn, -ETIMEDOUT);
	return true;
}

void srv_conn_drain(struct srv_conn *c)
{
	c->draining = true;
	if (c->conn.closing)
		return;
	if (c->state != CS_READY)
		kvr_conn_close(&c->conn, -ESHUTDOWN);
	else if (!c->busy)
		kvr_conn_close(&c->conn, 0);
}
