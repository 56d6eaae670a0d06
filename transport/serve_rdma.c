/* SPDX-License-Identifier: MIT */
/*
 * The server side of RDMA connections. A client that asks for it in its
 * HELLO gets a queue pair of ours; from then on its requests arrive as
 * messages (rdma_msg.h) and go through the same request handling as TCP
 * frames (serve_conn.c), with two differences in how bytes move:
 *
 *  - a PUT's payload is not received: the server RDMA-READs it from the
 *    descriptors the request named, straight into the pool extent it
 *    allocated (only within those ranges), and answers once the READs
 *    completed; with no room yet, the payload simply waits in the client's
 *    memory until the wait queue finds room;
 *  - a GET's answer is RDMA-WRITEs from the pool into the client's
 *    descriptors, then the answer SEND (RC ordering delivers the data
 *    first). EXISTS and STATS answers carry their bytes inline.
 *
 * A request holds its receive slot (the message with its descriptors)
 * until its answer is staged; the client has one credit per slot. An error
 * completion (a forged rkey, an address outside the client's registration)
 * fails the queue pair: the connection is closed and the client's requests
 * on it fail; nothing outside the named ranges is ever touched, and no other
 * connection notices.
 */
#include "transport/rdma.h"
#include "transport/serve.h"
#include "transport/le.h"

#include <endian.h>
#include <string.h>

static const struct kvr_rmsg_limits request_limits = {
    .max_desc = RDMA_MAX_DESC,
    .max_inline = KVR_RMSG_INLINE,
    .max_payload = KVR_PROTO_MAX_PAYLOAD,
};

int srv_rdma_setup(struct kvr_server *s)
{
	struct rdma_ctx *ctx;
	int rc = 0;

	if (s->rdma_d)
		return 0;
	ctx = rdma_ctx_get(s->e, &rc);
	if (ctx)
		s->rdma_d = rdma_dev_get(ctx, s->rdma_dev[0] ? s->rdma_dev : NULL, &rc);
	return s->rdma_d ? 0 : rc;
}

/* The request message held in r's receive slot (validated on arrival and
 * untouched since), for its descriptors. */
static struct kvr_rmsg held_msg(const struct srv_req *r)
{
	const struct rdma_chan *ch = r->c->ch;
	const uint8_t *p = ch->rbuf + (size_t)r->rslot * RDMA_SLOT;
	struct kvr_rmsg m;

	memset(&m, 0, sizeof(m));
	m.key_len = kvr_get16(p + KVR_RMSG_O_KEYLEN);
	m.ndesc = kvr_get16(p + KVR_RMSG_O_NDESC);
	m.desc = p + KVR_RMSG_HDR_LEN + m.key_len;
	return m;
}

void srv_rdma_unhold(struct srv_req *r)
{
	r->rslot_held = false;
	if (r->c->ch)
		rdma_chan_recv_done(r->c->ch, r->rslot);
}

/*
 * The walk of a move between the pool range [local, local+len) and the
 * held descriptors: pieces of at most max_msg bytes, none crossing a
 * descriptor's end or a 1 GiB piece of the pool (whose MR may be one of its
 * own: rdma_mr_at). Counting and staging take the same walk.
 */
struct move_cur {
	struct kvr_rmsg m;
	const struct kvr_mr *mr; /* the pool */
	uint32_t max_msg;
	uint32_t i;	/* descriptor */
	uint64_t doff;	/* bytes of it done */
	uint8_t *local; /* next pool byte */
	uint64_t left;	/* bytes to go */
};

static void move_init(struct move_cur *c, const struct srv_req *r, uint8_t *local, uint64_t len)
{
	c->m = held_msg(r);
	c->mr = r->c->s->mr;
	c->max_msg = r->c->ch->d->max_msg;
	c->i = 0;
	c->doff = 0;
	c->local = local;
	c->left = len;
}

/* The next piece: false when the move (or the descriptors) ended. */
static bool move_next(struct move_cur *c, struct kvr_rdesc *piece)
{
	struct kvr_rdesc d = {0};
	uint64_t n, fixed;

	while (c->left && c->i < c->m.ndesc) {
		d = kvr_rmsg_desc(&c->m, c->i);
		if (c->doff < d.len)
			break;
		c->i++;
		c->doff = 0;
	}
	if (!c->left || c->i == c->m.ndesc)
		return false;
	n = d.len - c->doff;
	fixed = kvr_fixed_end(c->mr, c->local) - (uintptr_t)c->local;
	n = n < c->left ? n : c->left;
	n = n < c->max_msg ? n : c->max_msg;
	n = n < fixed ? n : fixed;
	*piece = (struct kvr_rdesc){d.addr + c->doff, d.rkey, (uint32_t)n};
	c->doff += n;
	c->left -= n;
	return true;
}

/* Work requests that moving len bytes at local against the held
 * descriptors takes. */
static uint32_t pieces(const struct srv_req *r, uint8_t *local, uint64_t len)
{
	struct move_cur c;
	struct kvr_rdesc d;
	uint32_t n = 0;

	move_init(&c, r, local, len);
	while (move_next(&c, &d))
		n++;
	return n;
}

/* Stage RDMA READs (or WRITEs) between [local, local+len) and the held
 * descriptors, in order; the last WR carries w (signaled). The range is
 * registered (rdma_mr_range). */
static void stage_moves(struct srv_req *r, enum ibv_wr_opcode op, uint8_t *local, uint64_t len,
			struct rdma_wr *last)
{
	struct rdma_chan *ch = r->c->ch;
	uint32_t n = pieces(r, local, len), k = 0;
	struct move_cur c;
	struct kvr_rdesc d;

	move_init(&c, r, local, len);
	while (move_next(&c, &d)) {
		struct ibv_mr *mr = rdma_mr_at(ch->d, c.mr, (uintptr_t)c.local);
		struct ibv_send_wr *wr = rdma_chan_stage(ch, ++k == n ? last : NULL);

		wr->sg_list[0] = (struct ibv_sge){(uint64_t)(uintptr_t)c.local, d.len, mr->lkey};
		wr->num_sge = 1;
		wr->opcode = op;
		wr->wr.rdma.remote_addr = d.addr;
		wr->wr.rdma.rkey = d.rkey;
		c.local += d.len;
	}
}

/* r's pending work waits for the pool range [local, local+len) to be
 * registered on the device (the pool is still being faulted in), unless it
 * is; len 0: it moves no pool bytes. */
static void needs_pool(struct srv_req *r, uint8_t *local, uint64_t len)
{
	r->pend.mr = len ? r->c->s->mr : NULL;
	r->pend.addr = (uintptr_t)local;
	r->pend.len = len;
}

/* Whether the pool range the pending work names can be moved: 0, or the
 * errno of a piece of it that could not be registered. */
static int pool_state(const struct srv_req *r)
{
	return r->pend.mr ? rdma_mr_range(r->c->ch->d, r->pend.mr, r->pend.addr, r->pend.len) : 0;
}

/* -------------------------------------------------------------- PUT */

static void fetch_done(struct rdma_wr *w, const struct ibv_wc *wc)
{
	struct srv_req *r = KVR_CONTAINER_OF(w, struct srv_req, wr);

	if (wc->status != IBV_WC_SUCCESS) {
		srv_release(r); /* never committed; the connection is failing */
		return;
	}
	srv_conn_payload(r->c, r);
}

static void fetch_run(struct rdma_pending *p)
{
	struct srv_req *r = KVR_CONTAINER_OF(p, struct srv_req, pend);
	int rc = pool_state(r);

	if (rc) { /* that part of the pool has no MR: refuse as before any byte */
		srv_release_park(r->c->s, r);
		srv_respond(r, rc, NULL, 0);
		return;
	}
	r->wr.fn = fetch_done;
	stage_moves(r, IBV_WR_RDMA_READ, r->sgx.addr, r->sgx.len, &r->wr);
}

static void pend_drop(struct rdma_pending *p)
{
	srv_release(KVR_CONTAINER_OF(p, struct srv_req, pend));
}

void srv_rdma_fetch(struct srv_req *r)
{
	struct rdma_chan *ch = r->c->ch;

	if (!ch) {
		srv_release(r);
		return;
	}
	r->pend.nwr = pieces(r, r->sgx.addr, r->sgx.len);
	if (r->pend.nwr > ch->sq_cap) {
		/* More READs than the send queue holds: it could never start
		 * (objects over sq_cap * max_msg, 8 GiB on rxe). */
		srv_release_park(r->c->s, r);
		srv_respond(r, -EFBIG, NULL, 0);
		return;
	}
	needs_pool(r, r->sgx.addr, r->sgx.len);
	r->pend.slot = false;
	r->pend.run = fetch_run;
	r->pend.drop = pend_drop;
	rdma_chan_when_room(ch, &r->pend);
}

/* ----------------------------------------------------------- answers */

static void answer_sent(struct rdma_wr *w, const struct ibv_wc *wc)
{
	struct srv_req *r = KVR_CONTAINER_OF(w, struct srv_req, wr);

	r->tx.done(&r->tx, wc->status == IBV_WC_SUCCESS ? 0 : -ECONNRESET);
}

static void answer_dropped(struct rdma_pending *p)
{
	struct srv_req *r = KVR_CONTAINER_OF(p, struct srv_req, pend);

	r->tx.done(&r->tx, -ECONNRESET);
}

static void answer_run(struct rdma_pending *p)
{
	struct srv_req *r = KVR_CONTAINER_OF(p, struct srv_req, pend);
	struct rdma_chan *ch = r->c->ch;
	struct kvr_rmsg m = {
	    .opcode = r->op, .flags = KVR_RMSG_F_RESPONSE, .id = r->id, .status = r->status};
	uint8_t *slot;
	size_t len = KVR_RMSG_HDR_LEN;
	struct ibv_send_wr *wr;
	int rc;

	if (r->op == KVR_PROTO_OP_GET && r->out_len && (rc = pool_state(r))) {
		m.status = rc; /* that part of the pool has no MR */
	} else if (r->op == KVR_PROTO_OP_GET && r->out_len) {
		stage_moves(r, IBV_WR_RDMA_WRITE, r->sgx.addr, r->out_len, NULL);
		m.payload_len = r->out_len;
	} else if (r->out_len) { /* EXISTS, STATS: inline */
		m.flags |= KVR_RMSG_F_INLINE;
		m.payload_len = r->out_len;
	}
	slot = rdma_chan_send_slot(ch);
	kvr_rmsg_encode_hdr(slot, &m);
	if (m.flags & KVR_RMSG_F_INLINE) {
		memcpy(slot + len, r->sgx.addr, r->out_len);
		len += r->out_len;
	}
	r->wr.fn = answer_sent;
	wr = rdma_chan_stage(ch, &r->wr);
	wr->opcode = IBV_WR_SEND;
	wr->sg_list[0] =
	    (struct ibv_sge){(uint64_t)(uintptr_t)slot, (uint32_t)len, rdma_chan_send_lkey(ch)};
	wr->num_sge = 1;
	if (r->rslot_held)
		srv_rdma_unhold(r); /* the descriptors are in the WRs now */
}

void srv_rdma_respond(struct srv_req *r, const struct kvr_frame *f, const struct kvr_sgx *payload)
{
	struct rdma_chan *ch = r->c->ch;
	uint32_t nwr = 1;

	if (!ch) { /* the queue pair is gone: the connection is closing */
		srv_release(r);
		return;
	}
	r->status = f->status;
	r->out_len = payload ? f->payload_len : 0;
	if (r->op == KVR_PROTO_OP_GET && r->out_len && !r->rslot_held) {
		r->status = -EPROTO; /* no descriptors to write to: cannot happen */
		r->out_len = 0;
	} else if (r->op == KVR_PROTO_OP_GET && r->out_len) {
		nwr += pieces(r, r->sgx.addr, r->out_len);
		if (nwr > ch->sq_cap) { /* as for a PUT: it could never start */
			r->status = -EMSGSIZE;
			r->out_len = 0;
			nwr = 1;
		}
	} else if (r->out_len > KVR_RMSG_INLINE) {
		r->status = -EMSGSIZE; /* a STATS body over the inline limit */
		r->out_len = 0;
	}
	needs_pool(r, r->sgx.addr, r->op == KVR_PROTO_OP_GET ? r->out_len : 0);
	r->pend.nwr = nwr;
	r->pend.slot = true;
	r->pend.run = answer_run;
	r->pend.drop = answer_dropped;
	rdma_chan_when_room(ch, &r->pend);
}

/* ---------------------------------------------------------- requests */

/* A request message: made into the frame the request handling takes. */
static void on_msg(struct rdma_chan *ch, const struct kvr_rmsg *m, uint32_t slot)
{
	struct srv_conn *c = ch->owner;
	struct kvr_frame f = {.opcode = m->opcode, .id = m->id, .key_len = m->key_len};
	struct kvr_rx_dest dst = {0};
	uint64_t cap_le = htole64(m->payload_len);
	const uint8_t *small = NULL;
	struct srv_req *r;
	int rc;

	if (m->flags & KVR_RMSG_F_RESPONSE) {
		kvr_log(c->s->e, KVR_LOG_WARN, "conn error peer=%s reason=unexpected-response",
			c->peer);
		rdma_chan_recv_done(ch, slot);
		kvr_conn_close(&c->conn, -EPROTO);
		return;
	}
	if (m->opcode == KVR_PROTO_OP_PUT) {
		f.payload_len = m->payload_len;
		small = m->inl;
	} else if (m->opcode == KVR_PROTO_OP_GET) {
		f.payload_len = sizeof(cap_le); /* as a TCP GET: its capacity */
		small = (const uint8_t *)&cap_le;
	}
	c->rx_rslot_valid = true;
	c->rx_rslot = slot;
	c->rx_req = NULL;
	rc = srv_conn_request(c, &f, m->key, small, &dst);
	if (c->rx_rslot_valid) { /* no request took the slot */
		c->rx_rslot_valid = false;
		rdma_chan_recv_done(ch, slot);
	}
	if (rc < 0) {
		kvr_conn_close(&c->conn, -EPROTO);
		return;
	}
	r = c->rx_req;
	c->rx_req = NULL;
	if (!r)
		return;
	if (dst.nsge) /* into the pool: read it */
		srv_rdma_fetch(r);
	else /* refused before any byte: answer now */
		srv_conn_payload(c, r);
}

static void on_error(struct rdma_chan *ch, int err)
{
	struct srv_conn *c = ch->owner;

	kvr_log(c->s->e, KVR_LOG_WARN, "conn error peer=%s reason=rdma-%s", c->peer,
		err == -EFAULT	 ? "remote-access"
		: err == -EPROTO ? "protocol"
				 : "failure");
	kvr_conn_close(&c->conn, err);
}

static void on_drained(struct rdma_chan *ch)
{
	struct srv_conn *c = ch->owner;

	c->ch = NULL;
	srv_conn_finished(c);
}

static const struct rdma_chan_ops srv_chan_ops = {
    .on_msg = on_msg,
    .on_error = on_error,
    .on_drained = on_drained,
};

/* ------------------------------------------------------------- setup */

int srv_rdma_open(struct srv_conn *c, const struct kvr_hello_rdma *peer,
		  struct kvr_hello_rdma *ours)
{
	struct kvr_server *s = c->s;
	int rc = srv_rdma_setup(s);

	if (rc)
		return rc;
	rc = rdma_chan_new(s->rdma_d, s->rdma_gid, RDMA_SQ_SERVER, false, &request_limits,
			   &srv_chan_ops, c, &c->ch);
	if (rc)
		return rc;
	rc = rdma_chan_connect(c->ch, peer);
	if (rc) {
		/* closed with the connection: it drains, then finishes it */
		return rc;
	}
	rdma_chan_local(c->ch, ours);
	kvr_log(s->e, KVR_LOG_DEBUG, "conn rdma peer=%s qp=%u peer_qp=%u", c->peer,
		c->ch->qp->qp_num, peer->qpn);
	return 0;
}

void srv_rdma_close(struct srv_conn *c, int err)
{
	rdma_chan_close(c->ch, err);
}
