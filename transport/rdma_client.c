/* SPDX-License-Identifier: MIT */
/*
 * The client side of rdma:// clusters. The cluster logic (routing, replicas,
 * failover, deadlines) is the TCP client's (tcp.c, tcp_node.c); each of its
 * connections here also has a queue pair, set up through the HELLO, over
 * which the requests and answers travel instead of the TCP stream:
 *
 *  - a request is one SEND: header and key, then either the caller's SGL
 *    as (address, rkey, length) descriptors — the server RDMA-READs a put's
 *    bytes and RDMA-WRITEs a get's straight into them — or, for a put of at
 *    most KVR_RMSG_INLINE bytes, the payload itself, gathered from the
 *    caller's memory by the SEND's own scatter list;
 *  - the answer is one SEND from the server, after its WRITEs (RC ordering
 *    puts the data in place before the answer arrives);
 *  - the server posted RDMA_DEPTH receives: a connection has that many
 *    credits, one per request awaiting its answer; requests beyond wait;
 *  - the requests of a batch are staged and posted with one doorbell per
 *    queue pair and loop round, only every so many signaled.
 */
#include "transport/rdma.h"
#include "transport/tcp.h"
#include "engine/sgl.h"

#include <endian.h>
#include <stdlib.h>
#include <string.h>

#define PIECE_MAX (1u << 30) /* a descriptor's length fits u32 */

struct tcp_rdma {
	struct tcp_conn *tc;
	struct rdma_chan *ch;
	uint32_t credits; /* requests the server can take now */
	struct rdma_pending pend;
	bool pend_armed;
};

static const struct kvr_rmsg_limits answer_limits = {
    .max_desc = 0,
    .max_inline = KVR_PROTO_MAX_HELLO,
    .max_payload = KVR_PROTO_MAX_PAYLOAD,
};

int tcp_rdma_setup(struct tcp_cluster *cl)
{
	struct rdma_ctx *ctx;
	int rc = 0;

	ctx = rdma_ctx_get(cl->t.e, &rc);
	if (!ctx)
		return rc;
	cl->dev = rdma_dev_get(ctx, cl->rdma_dev[0] ? cl->rdma_dev : NULL, &rc);
	return cl->dev ? 0 : rc;
}

bool tcp_rdma_has_mr(struct tcp_cluster *cl, const struct kvr_mr *mr)
{
	return cl->dev && rdma_mr_of(cl->dev, mr) != NULL;
}

void tcp_rdma_stats(struct tcp_cluster *cl, struct kvr_stats *st)
{
	int rc = 0;
	struct rdma_ctx *ctx = rdma_ctx_get(cl->t.e, &rc);

	if (!ctx)
		return;
	st->rdma_wrs = ctx->st.wrs;
	st->rdma_posts = ctx->st.posts;
	st->rdma_wcs = ctx->st.wcs;
	st->rdma_cq_events = ctx->st.cq_events;
}

/* ------------------------------------------------------------- sending */

static void drain_wait(struct tcp_rdma *tr);

/* Descriptors a request for o needs (its SGEs split at PIECE_MAX), or
 * -errno: -EFAULT (memory not registered on this device, e.g. device
 * memory), -EMSGSIZE (more than the server takes, or than fits a message). */
static int count_descs(const struct tcp_rdma *tr, const struct kvr_objd *o)
{
	const struct rdma_chan *ch = tr->ch;
	uint32_t max = ch->peer_desc < RDMA_MAX_DESC ? ch->peer_desc : RDMA_MAX_DESC;
	uint32_t fit = (uint32_t)((ch->peer_slot - KVR_RMSG_HDR_LEN - o->key_len) / KVR_RMSG_DESC);
	uint64_t n = 0;

	for (uint32_t i = 0; i < o->nsge; i++) {
		if (!rdma_mr_of(ch->d, o->sgx[i].mr))
			return -EFAULT;
		n += (o->sgx[i].len + PIECE_MAX - 1) / PIECE_MAX;
	}
	return n > max || n > fit ? -EMSGSIZE : (int)n;
}

/* Write o's descriptors at p. */
static void put_descs(const struct tcp_rdma *tr, const struct kvr_objd *o, uint8_t *p)
{
	struct kvr_sgl cur;
	struct kvr_sgl_piece x;

	kvr_sgl_init(&cur, o->sgx, o->nsge, o->total, NULL);
	while (kvr_sgl_next(&cur, PIECE_MAX, &x)) {
		struct kvr_rdesc rd = {(uint64_t)(uintptr_t)x.addr,
				       rdma_mr_of(tr->ch->d, x.mr)->rkey, (uint32_t)x.len};

		kvr_rmsg_put_desc(p, &rd);
		p += KVR_RMSG_DESC;
	}
}

/* Stage op's request; credit and room were checked. */
static void stage(struct tcp_rdma *tr, struct tcp_op *op)
{
	struct tcp_conn *tc = tr->tc;
	struct rdma_chan *ch = tr->ch;
	const struct kvr_objd *o = op->r->o;
	struct kvr_rmsg m = {.opcode = op->opcode, .id = op->id, .key_len = o->key_len};
	size_t len = KVR_RMSG_HDR_LEN + o->key_len;
	bool described = op->opcode == KVR_PROTO_OP_GET ||
			 (op->opcode == KVR_PROTO_OP_PUT && o->total > KVR_RMSG_INLINE);
	struct ibv_send_wr *wr;
	struct ibv_sge *sg;
	uint32_t nsg = 1;
	uint8_t *slot;

	if (described) {
		int n = count_descs(tr, o);

		if (n < 0) {
			tcp_op_answer(op, n);
			return;
		}
		m.ndesc = (uint16_t)n;
		m.payload_len = o->total;
	} else if (op->opcode == KVR_PROTO_OP_PUT) {
		for (uint32_t i = 0; i < o->nsge; i++) {
			if (!rdma_mr_of(ch->d, o->sgx[i].mr)) {
				tcp_op_answer(op, -EFAULT);
				return;
			}
		}
		m.flags = KVR_RMSG_F_INLINE;
		m.payload_len = o->total;
	}
	slot = rdma_chan_send_slot(ch);
	memcpy(slot + KVR_RMSG_HDR_LEN, o->key, o->key_len);
	if (described) {
		put_descs(tr, o, slot + len);
		len += (size_t)m.ndesc * KVR_RMSG_DESC;
	}
	wr = rdma_chan_stage(ch, rdma_chan_should_signal(ch) ? rdma_chan_slot_wr(ch) : NULL);
	sg = wr->sg_list;
	wr->opcode = IBV_WR_SEND;
	if ((m.flags & KVR_RMSG_F_INLINE) && o->total) {
		struct kvr_sgl cur;
		struct kvr_sgl_piece x;

		kvr_sgl_init(&cur, o->sgx, o->nsge, o->total, NULL);
		if (1 + o->nsge <= ch->max_sge) {
			/* the payload straight from the caller's memory (an inline
			 * payload is small: each SGE is one piece) */
			while (kvr_sgl_next(&cur, UINT64_MAX, &x))
				sg[nsg++] =
				    (struct ibv_sge){(uint64_t)(uintptr_t)x.addr, (uint32_t)x.len,
						     rdma_mr_of(ch->d, x.mr)->lkey};
		} else {
			kvr_sgl_copy_out(&cur, slot + len, o->total);
			len += o->total;
		}
	}
	kvr_rmsg_encode_hdr(slot, &m);
	sg[0] = (struct ibv_sge){(uint64_t)(uintptr_t)slot, (uint32_t)len, rdma_chan_send_lkey(ch)};
	wr->num_sge = (int)nsg;
	tr->credits--;
	op->conn = tc;
	op->state = OP_SENT;
	op->tx_busy = false;
	op->sent_ns = tc->c.e->now_ns;
	tcp_list_add(&tc->sent, op);
}

static bool can_send(const struct tcp_rdma *tr)
{
	return tr->credits && rdma_chan_can(tr->ch, 1, true);
}

static void room_back(struct rdma_pending *p)
{
	struct tcp_rdma *tr = KVR_CONTAINER_OF(p, struct tcp_rdma, pend);

	tr->pend_armed = false;
	drain_wait(tr);
}

static void room_dropped(struct rdma_pending *p)
{
	struct tcp_rdma *tr = KVR_CONTAINER_OF(p, struct tcp_rdma, pend);

	tr->pend_armed = false; /* the waiting ops fail with the connection */
}

/* Send what waits, in order, while credits and room last. */
static void drain_wait(struct tcp_rdma *tr)
{
	struct tcp_conn *tc = tr->tc;
	struct tcp_op *op;

	while ((op = tc->wait.head) && can_send(tr)) {
		tcp_list_del(&tc->wait, op);
		stage(tr, op);
	}
	if (tc->wait.head && tr->credits && !tr->pend_armed) {
		tr->pend_armed = true;
		rdma_chan_when_room(tr->ch, &tr->pend); /* room comes with a completion */
	}
}

void tcp_rdma_describe(struct tcp_conn *tc, const char *why)
{
	struct tcp_rdma *tr = tc->rdma;
	struct rdma_chan *ch = tr->ch;
	uint32_t waiting = 0, sent = 0;

	for (struct tcp_op *op = tc->wait.head; op; op = op->next)
		waiting++;
	for (struct tcp_op *op = tc->sent.head; op; op = op->next)
		sent++;
	kvr_log(tc->c.e, KVR_LOG_INFO,
		"%s: %s: qp %u credits %u, %u sent, %u waiting; sq %llu staged/posted, %llu "
		"done, %u signaled out; %u receives posted%s",
		tc->name, why, ch->qp->qp_num, tr->credits, sent, waiting,
		(unsigned long long)ch->sq_seq, (unsigned long long)ch->sq_done, ch->sig_out,
		ch->rq_posted, tr->pend_armed ? "; waiting for room" : "");
}

void tcp_rdma_kick(struct tcp_conn *tc)
{
	drain_wait(tc->rdma);
}

void tcp_rdma_send(struct tcp_conn *tc, struct tcp_op *op)
{
	struct tcp_rdma *tr = tc->rdma;

	op->conn = tc;
	if (!tc->wait.head && can_send(tr)) {
		stage(tr, op);
		return;
	}
	op->state = OP_WAIT;
	tcp_list_add(&tc->wait, op);
	drain_wait(tr);
}

/* ------------------------------------------------------------- answers */

static int answer(struct tcp_rdma *tr, const struct kvr_rmsg *m)
{
	struct tcp_conn *tc = tr->tc;
	struct tcp_op *op;
	int64_t res;

	if (!(m->flags & KVR_RMSG_F_RESPONSE))
		return -EPROTO;
	tr->credits++;
	op = tcp_op_find(tc, m->id);
	if (!op || m->opcode != op->opcode)
		return -EPROTO; /* we never asked this */
	res = m->status;
	if (res == 0 && op->r) {
		switch (m->opcode) {
		case KVR_PROTO_OP_GET:
			if (m->payload_len > op->r->o->total)
				return -EPROTO; /* more than the server was allowed to write */
			res = (int64_t)m->payload_len;
			break;
		case KVR_PROTO_OP_EXISTS: {
			uint64_t v;

			memcpy(&v, m->inl, sizeof(v));
			res = (int64_t)le64toh(v);
			break;
		}
		case KVR_PROTO_OP_PUT:
			res = (int64_t)op->r->o->total;
			break;
		default:
			break;
		}
	}
	tcp_list_del(&tc->sent, op);
	tcp_op_answer(op, res);
	return 0;
}

static void on_msg(struct rdma_chan *ch, const struct kvr_rmsg *m, uint32_t slot)
{
	struct tcp_rdma *tr = ch->owner;
	struct tcp_conn *tc = tr->tc;
	int rc;

	tc->last_rx_ns = tc->c.e->now_ns;
	rc = answer(tr, m);
	rdma_chan_recv_done(ch, slot);
	if (rc) {
		kvr_log(tc->c.e, KVR_LOG_WARN, "%s: unexpected message (op %u id %llu); closing",
			tc->name, m->opcode, (unsigned long long)m->id);
		kvr_conn_close(&tc->c, rc);
		return;
	}
	drain_wait(tr);
}

static void on_error(struct rdma_chan *ch, int err)
{
	struct tcp_rdma *tr = ch->owner;

	kvr_conn_close(&tr->tc->c, err);
}

static void on_drained(struct rdma_chan *ch)
{
	free(ch->owner); /* the connection is long gone; ch is freed next round */
}

static const struct rdma_chan_ops client_chan_ops = {
    .on_msg = on_msg,
    .on_error = on_error,
    .on_drained = on_drained,
};

/* ----------------------------------------------------------- lifecycle */

int tcp_rdma_open(struct tcp_conn *tc)
{
	struct tcp_cluster *cl = tc->n->cl;
	struct tcp_rdma *tr = calloc(1, sizeof(*tr));
	int rc;

	if (!tr)
		return -ENOMEM;
	tr->tc = tc;
	tr->pend.nwr = 1;
	tr->pend.slot = true;
	tr->pend.run = room_back;
	tr->pend.drop = room_dropped;
	rc = rdma_chan_new(cl->dev, cl->rdma_gid, RDMA_SQ_CLIENT, true, &answer_limits,
			   &client_chan_ops, tr, &tr->ch);
	if (rc) {
		kvr_log(cl->t.e, KVR_LOG_WARN, "%s: queue pair: %s", tc->name, strerror(-rc));
		free(tr);
		return rc;
	}
	tc->rdma = tr;
	return 0;
}

void tcp_rdma_hello(struct tcp_conn *tc, struct kvr_hello *h)
{
	h->features |= KVR_PROTO_FEAT_RDMA;
	rdma_chan_local(tc->rdma->ch, &h->rdma);
}

int tcp_rdma_ready(struct tcp_conn *tc, const struct kvr_hello *h)
{
	struct tcp_rdma *tr = tc->rdma;
	int rc;

	if (!(h->features & KVR_PROTO_FEAT_RDMA)) {
		kvr_log(tc->c.e, KVR_LOG_WARN, "%s: the server does not serve RDMA on this address",
			tc->name);
		return -EPROTONOSUPPORT;
	}
	rc = rdma_chan_connect(tr->ch, &h->rdma);
	if (rc)
		return rc;
	tr->credits = h->rdma.depth;
	kvr_log(tc->c.e, KVR_LOG_DEBUG, "%s: qp %u connected to qp %u, %u credits", tc->name,
		tr->ch->qp->qp_num, h->rdma.qpn, tr->credits);
	return 0;
}

void tcp_rdma_close(struct tcp_conn *tc, int err)
{
	struct tcp_rdma *tr = tc->rdma;

	if (!tr)
		return;
	tc->rdma = NULL;
	tr->tc = NULL;
	rdma_chan_close(tr->ch, err); /* on_drained frees tr */
}
