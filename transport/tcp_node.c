/* SPDX-License-Identifier: MIT */
/*
 * Nodes of a TCP cluster and their connections: address resolution, connect,
 * the HELLO handshake (shard count, authentication), routing a request to
 * the connection of its key's shard, answers matched by request id, and a
 * node's fall to "down" with backoff when a connection fails or stalls.
 */
#include "transport/tcp.h"

#include <endian.h>
#include "engine/index.h"
#include "engine/sgl.h"

#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BACKOFF_MAX_MS 10000u

static const struct kvr_conn_ops client_ops;

int tcp_node_init(struct tcp_cluster *cl, struct tcp_node *n, const char *hostport)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
	char host[64], port[16];
	int rc, pnum;

	memset(n, 0, sizeof(*n));
	n->cl = cl;
	if (kvr_proto_hostport(hostport, host, sizeof(host), &pnum) || !host[0] || !pnum)
		return -EINVAL;
	snprintf(port, sizeof(port), "%d", pnum);
	rc = getaddrinfo(host, port, &hints, &ai);
	if (rc || !ai) {
		kvr_set_errmsg(cl->t.e, "cannot resolve '%s': %s", host, gai_strerror(rc));
		return -EHOSTUNREACH;
	}
	memcpy(&n->sa, ai->ai_addr, ai->ai_addrlen);
	n->salen = ai->ai_addrlen;
	freeaddrinfo(ai);
	snprintf(n->name, sizeof(n->name), "%s", hostport);
	/* Seeded by the name the user wrote, so every client ranks alike. */
	n->seed = tcp_mix64(kvr_key_hash(hostport, strlen(hostport)));
	n->backoff_ms = cl->o.retry_ms;
	n->state = NODE_IDLE;
	return 0;
}

void tcp_node_fini(struct tcp_node *n)
{
	free(n->conns);
	n->conns = NULL;
}

bool tcp_node_usable(const struct tcp_node *n)
{
	if (n->state != NODE_DOWN)
		return true;
	return !n->open && kvr_now_ns() >= n->retry_ns;
}

/* ------------------------------------------------------------ handshake */

/* Send HELLO number `which` (1: with the tag); on failure tc is closed
 * with the error, which is returned. */
static int send_hello(struct tcp_conn *tc, int which, const uint8_t *tag)
{
	struct kvr_hello h = {
	    .version_min = KVR_PROTO_VERSION, .version_max = KVR_PROTO_VERSION, .shard = tc->shard};
	struct kvr_frame f = {.opcode = KVR_PROTO_OP_HELLO, .id = (uint64_t)which};
	int len;

	if (tag) {
		h.auth_len = KVR_PROTO_TAG_LEN;
		memcpy(h.auth, tag, KVR_PROTO_TAG_LEN);
	}
	if (tc->rdma)
		tcp_rdma_hello(tc, &h);
	else
		h.features |= KVR_PROTO_FEAT_CRC; /* we check GET payloads end to end */
	len = kvr_proto_hello_encode(tc->hello_buf[which], sizeof(tc->hello_buf[which]), &h);
	if (len < 0) {
		kvr_log(tc->c.e, KVR_LOG_WARN, "%s: HELLO: %s", tc->name, strerror(-len));
		kvr_conn_close(&tc->c, len);
		return len;
	}
	tc->hello_sgx[which] = (struct kvr_sgx){tc->hello_buf[which], (size_t)len, NULL};
	tc->hello_tx[which].sgx = &tc->hello_sgx[which];
	tc->hello_tx[which].nsge = 1;
	tc->hello_tx[which].key = NULL;
	f.payload_len = (uint64_t)len;
	kvr_conn_send(&tc->c, &tc->hello_tx[which], &f);
	return 0;
}

static void hello_tx_done(struct kvr_tx *tx, int err)
{
	(void)tx;
	(void)err; /* a failed send surfaces as the connection's close */
}

static void hs_expired(struct kvr_timer *tm)
{
	struct tcp_conn *tc = KVR_CONTAINER_OF(tm, struct tcp_conn, hs_timer);

	kvr_log(tc->n->cl->t.e, KVR_LOG_WARN, "%s: no handshake within %u ms", tc->name,
		tc->n->cl->o.connect_timeout_ms);
	kvr_conn_close(&tc->c, -ETIMEDOUT);
}

static struct tcp_conn *conn_new(struct tcp_node *n, uint32_t slot, uint16_t shard)
{
	struct tcp_cluster *cl = n->cl;
	kvr_engine *e = cl->t.e;
	struct tcp_conn *tc = calloc(1, sizeof(*tc));
	const char *what = "handshake timer";
	int rc;

	if (!tc)
		return NULL;
	if (kvr_conn_init(&tc->c, e, &client_ops, tc, &cl->lim, cl->o.zc_min)) {
		free(tc);
		return NULL;
	}
	tc->n = n;
	tc->slot = slot;
	tc->shard = shard;
	tc->state = CONN_CONNECTING;
	for (int i = 0; i < 2; i++)
		tc->hello_tx[i].done = hello_tx_done;
	snprintf(tc->name, sizeof(tc->name), "node %s shard %u", n->name, shard);
	tc->c.name = tc->name;
	/* Armed first: a connection without its deadline could wait forever
	 * for a server that never answers the HELLO. */
	tc->hs_timer.fn = hs_expired;
	rc = kvr_timer_add(&e->timers, &tc->hs_timer,
			   kvr_now_ns() + (uint64_t)cl->o.connect_timeout_ms * 1000000ull);
	if (!rc) {
		what = "socket";
		rc = kvr_conn_connect(&tc->c, (struct sockaddr *)&n->sa, n->salen);
	}
	if (rc) {
		kvr_log(e, KVR_LOG_WARN, "%s: %s: %s", tc->name, what, strerror(-rc));
		kvr_timer_del(&e->timers, &tc->hs_timer);
		kvr_conn_fini(&tc->c);
		free(tc);
		return NULL;
	}
	n->conns[slot] = tc;
	n->open++;
	cl->conns_open++;
	return tc;
}

static void on_open(struct kvr_conn *c, int err)
{
	struct tcp_conn *tc = c->owner;

	if (err) {
		kvr_log(c->e, KVR_LOG_INFO, "%s: connect: %s", tc->name, strerror(-err));
		return; /* on_close follows */
	}
	tc->state = CONN_HELLO;
	tc->last_rx_ns = c->e->now_ns;
	if (tc->n->cl->rdma) {
		int rc = tcp_rdma_open(tc);

		if (rc) {
			kvr_conn_close(c, rc);
			return;
		}
	}
	(void)send_hello(tc, 0, NULL); /* a failure closed tc */
}

/* The first connection told us the shard count: open the others. */
static int node_learn_shards(struct tcp_node *n, uint16_t shards)
{
	struct tcp_cluster *cl = n->cl;
	uint32_t per = (cl->o.conns + shards - 1) / shards;
	struct tcp_conn **v = calloc((size_t)shards * per, sizeof(*v));

	if (!v)
		return -ENOMEM;
	v[0] = n->conns[0];
	free(n->conns);
	n->conns = v;
	n->shards = shards;
	n->nconns = shards * per;
	for (uint32_t i = 1; i < n->nconns; i++)
		if (!conn_new(n, i, (uint16_t)(i / per)))
			return -ENOMEM;
	return 0;
}

static int on_hello(struct tcp_conn *tc, const struct kvr_frame *f, const uint8_t *body)
{
	struct tcp_node *n = tc->n;
	struct tcp_cluster *cl = n->cl;
	struct kvr_hello h;
	struct tcp_op *op;
	int rc;

	if (tc->state != CONN_HELLO && tc->state != CONN_AUTH)
		return -EBADMSG;
	if (f->status < 0) {
		kvr_log(cl->t.e, KVR_LOG_WARN, "%s: handshake refused: %s", tc->name,
			strerror(-f->status));
		kvr_conn_close(&tc->c, f->status);
		return 0;
	}
	rc = body ? kvr_proto_hello_decode(body, f->payload_len, &h) : -EBADMSG;
	if (rc < 0)
		return rc;
	if (h.version_min > KVR_PROTO_VERSION || h.version_max < KVR_PROTO_VERSION)
		return -EPROTONOSUPPORT;
	if (h.features & KVR_PROTO_FEAT_AUTH) {
		uint8_t tag[KVR_PROTO_TAG_LEN];

		if (tc->state != CONN_HELLO || h.auth_len != KVR_PROTO_NONCE_LEN)
			return -EBADMSG;
		if (!cl->secret) {
			kvr_log(cl->t.e, KVR_LOG_WARN, "%s: the server wants a secret", tc->name);
			kvr_conn_close(&tc->c, -EACCES);
			return 0;
		}
		rc = kvr_proto_auth_tag(cl->secret, cl->o.secret_len, h.auth, tag);
		if (rc) {
			kvr_log(cl->t.e, KVR_LOG_WARN, "%s: cannot make the auth tag: %s", tc->name,
				strerror(-rc));
			kvr_conn_close(&tc->c, rc);
			return 0;
		}
		tc->state = CONN_AUTH;
		(void)send_hello(tc, 1, tag); /* a failure closed tc */
		return 0;
	}
	if (!h.shards || h.shard != tc->shard || (n->shards && h.shards != n->shards))
		return -EBADMSG;
	/* We open a connection per shard: a count no server has would have us
	 * open thousands. */
	if (h.shards > KVR_PROTO_MAX_SHARDS) {
		kvr_log(cl->t.e, KVR_LOG_WARN, "%s: HELLO announces %u shards (at most %u)",
			tc->name, h.shards, KVR_PROTO_MAX_SHARDS);
		return -EPROTO;
	}
	if (tc->rdma) {
		rc = tcp_rdma_ready(tc, &h);
		if (rc) {
			kvr_conn_close(&tc->c, rc);
			return 0;
		}
	}
	kvr_timer_del(&cl->t.e->timers, &tc->hs_timer);
	tc->state = CONN_READY;
	if (!n->shards) {
		rc = node_learn_shards(n, h.shards);
		if (rc) {
			tcp_node_down(n, rc);
			return 0;
		}
		n->state = NODE_UP;
		n->backoff_ms = cl->o.retry_ms;
		kvr_log(cl->t.e, KVR_LOG_INFO, "node %s up: %u shard(s), %u connection(s)", n->name,
			n->shards, n->nconns);
		tcp_rep_kick(cl); /* what it missed while away can be repaired */
		while ((op = n->wait.head)) {
			tcp_list_del(&n->wait, op);
			tcp_node_route(n, op, op->hash);
		}
	}
	if (tc->rdma) { /* in order, as credits allow */
		tcp_rdma_kick(tc);
		return 0;
	}
	while ((op = tc->wait.head)) {
		tcp_list_del(&tc->wait, op);
		tcp_op_send(tc, op);
	}
	return 0;
}

/* ---------------------------------------------------------------- answers */

/* The op with request id `id` in `state` on tc, or NULL: an id from the
 * wire is bounds-checked before it indexes anything, and names only ops of
 * the connection it arrived on. */
static struct tcp_op *op_find(struct tcp_conn *tc, uint64_t id, int state)
{
	struct tcp_cluster *cl = tc->n->cl;
	uint32_t i = (uint32_t)id;
	struct tcp_op *op;

	if (i >= cl->nops)
		return NULL;
	op = &cl->ops[i];
	if (op->id != id || op->conn != tc || op->state != state)
		return NULL;
	return op;
}

struct tcp_op *tcp_op_find(struct tcp_conn *tc, uint64_t id)
{
	return op_find(tc, id, OP_SENT);
}

/* A GET payload with a crc trailer matches it (one without: trusted, the
 * server checked it). have: the payload's crc32c computed as it arrived
 * (NULL: compute it now). A mismatch is a miss (-EIO) for the caller, whose
 * SGL then holds no promise. */
static bool payload_intact(const struct tcp_op *op, const struct kvr_frame *f, const uint32_t *have)
{
	const struct kvr_objd *o = op->r->o;

	if (!(f->flags & KVR_PROTO_F_CRC))
		return true;
	if ((have ? *have : kvr_crc32c_sgl(o->sgx, o->nsge, f->payload_len)) == f->crc)
		return true;
	op->node->cl->t.stats.checksum_errors++;
	kvr_log(op->node->cl->t.e, KVR_LOG_WARN,
		"node %s: get of '%.*s': crc32c mismatch (%llu bytes); dropped", op->node->name,
		(int)o->key_len, (const char *)o->key, (unsigned long long)f->payload_len);
	return false;
}

static int on_frame(struct kvr_conn *c, const struct kvr_frame *f, const uint8_t *key,
		    const uint8_t *small, struct kvr_rx_dest *dst)
{
	struct tcp_conn *tc = c->owner;
	struct tcp_op *op;

	(void)key;
	tc->last_rx_ns = c->e->now_ns;
	if (!kvr_frame_is_response(f))
		return -EBADMSG;
	if (f->opcode == KVR_PROTO_OP_HELLO)
		return on_hello(tc, f, small);
	if (tc->state != CONN_READY)
		return -EBADMSG;
	op = tcp_op_find(tc, f->id);
	if (!op)
		return 0; /* an answer to a request that gave up: drop it */
	if (f->opcode != op->opcode)
		return -EBADMSG;
	if (!op->r || f->status < 0) { /* an orphan's payload is discarded */
		tcp_list_del(&tc->sent, op);
		tcp_op_answer(op, f->status);
		return 0;
	}
	switch (f->opcode) {
	case KVR_PROTO_OP_GET:
		if (f->payload_len > op->r->o->total)
			return -EMSGSIZE; /* more than we said we could take */
		if (small) {
			struct kvr_sgl cur;

			kvr_sgl_init(&cur, op->r->o->sgx, op->r->o->nsge, f->payload_len, NULL);
			kvr_sgl_copy_in(&cur, small, f->payload_len);
			if (!payload_intact(op, f, NULL)) {
				tcp_list_del(&tc->sent, op);
				tcp_op_answer(op, -EIO);
				return 0;
			}
			break;
		}
		if (!f->payload_len)
			break;
		dst->sgx = op->r->o->sgx;
		dst->nsge = op->r->o->nsge;
		if (f->flags & KVR_PROTO_F_CRC)
			dst->crc = &op->rx_crc;
		op->state = OP_RECV;
		return 0;
	case KVR_PROTO_OP_EXISTS: {
		uint64_t v;

		memcpy(&v, small, sizeof(v));
		tcp_list_del(&tc->sent, op);
		tcp_op_answer(op, (int64_t)le64toh(v));
		return 0;
	}
	case KVR_PROTO_OP_PUT:
		tcp_list_del(&tc->sent, op);
		tcp_op_answer(op, (int64_t)op->r->o->total);
		return 0;
	default:
		break;
	}
	tcp_list_del(&tc->sent, op);
	tcp_op_answer(op, f->opcode == KVR_PROTO_OP_GET ? (int64_t)f->payload_len : 0);
	return 0;
}

static void on_payload(struct kvr_conn *c, const struct kvr_frame *f)
{
	struct tcp_conn *tc = c->owner;
	struct tcp_op *op = op_find(tc, f->id, OP_RECV);

	if (!op)
		return; /* discarded */
	tcp_list_del(&tc->sent, op);
	tcp_op_answer(op, payload_intact(op, f, &op->rx_crc) ? (int64_t)f->payload_len : -EIO);
}

static void fail_list(struct tcp_list *l, int err)
{
	struct tcp_op *op;

	while ((op = l->head)) {
		tcp_list_del(l, op);
		tcp_op_answer(op, err);
	}
}

static void on_close(struct kvr_conn *c, int err)
{
	struct tcp_conn *tc = c->owner;
	struct tcp_node *n = tc->n;
	struct tcp_cluster *cl = n->cl;
	/* Closed by a deadline to take back the caller's memory: only this
	 * connection goes; its other requests fail as on a reset. */
	bool canceled = err == TCP_CLOSE_CANCELED;
	int why = err && !canceled ? err : -ECONNRESET;

	kvr_timer_del(&cl->t.e->timers, &tc->hs_timer);
	if (n->conns && tc->slot < n->nconns && n->conns[tc->slot] == tc)
		n->conns[tc->slot] = NULL;
	n->open--;
	cl->conns_open--;
	/* Before anything completes: the server must not touch the memory of
	 * the requests that fail below. */
	tcp_rdma_close(tc, why);
	/* An orderly close by the server before the handshake ended is a
	 * refusal (a full connection table closes at once): the node is down
	 * too. Left connecting with no connection, it would hold every request
	 * of the node until its deadline and never connect again. */
	if (!err && !cl->closing && tc->state != CONN_READY)
		err = why;
	if (err && !canceled && !cl->closing)
		tcp_node_down(n, err);
	fail_list(&tc->wait, why);
	fail_list(&tc->sent, why);
	kvr_conn_fini(&tc->c);
	free(tc);
}

static const struct kvr_conn_ops client_ops = {
    .on_open = on_open,
    .on_frame = on_frame,
    .on_payload = on_payload,
    .on_close = on_close,
};

/* ---------------------------------------------------------------- routing */

void tcp_node_down(struct tcp_node *n, int err)
{
	struct tcp_cluster *cl = n->cl;
	kvr_engine *e = cl->t.e;

	if (n->state != NODE_DOWN) {
		n->state = NODE_DOWN;
		n->last_err = err;
		n->retry_ns = kvr_now_ns() + (uint64_t)n->backoff_ms * 1000000ull;
		kvr_log(e, KVR_LOG_WARN, "node %s down (%s); retry in %u ms", n->name,
			strerror(-err), n->backoff_ms);
		n->backoff_ms =
		    n->backoff_ms * 2 < BACKOFF_MAX_MS ? n->backoff_ms * 2 : BACKOFF_MAX_MS;
	}
	n->shards = 0;
	for (uint32_t i = 0; n->conns && i < n->nconns; i++)
		if (n->conns[i])
			kvr_conn_close(&n->conns[i]->c, err);
	fail_list(&n->wait, err);
}

static int node_connect(struct tcp_node *n)
{
	free(n->conns);
	n->conns = calloc(1, sizeof(*n->conns));
	n->nconns = 1;
	n->shards = 0;
	if (!n->conns || !conn_new(n, 0, 0))
		return -ENOMEM;
	n->state = NODE_CONNECTING;
	return 0;
}

void tcp_node_route(struct tcp_node *n, struct tcp_op *op, uint64_t hash)
{
	struct tcp_conn *tc;
	uint32_t per, shard;
	int rc;

	op->node = n;
	op->state = OP_WAIT;
	op->hash = hash;
	if (n->state == NODE_IDLE || n->state == NODE_DOWN) {
		rc = node_connect(n);
		if (rc) {
			tcp_node_down(n, rc);
			tcp_op_answer(op, rc);
			return;
		}
	}
	if (n->state == NODE_CONNECTING) {
		op->conn = NULL;
		tcp_list_add(&n->wait, op);
		return;
	}
	per = n->nconns / n->shards;
	shard = (uint32_t)((hash >> 40) % n->shards);
	uint32_t slot = shard * per + (uint32_t)((hash >> 20) % per);

	tc = n->conns[slot];
	if (!tc && n->state == NODE_UP) /* one a deadline closed: open it again */
		tc = conn_new(n, slot, (uint16_t)shard);
	if (!tc) { /* closing after a failure the node has not seen yet */
		tcp_op_answer(op, -ECONNRESET);
		return;
	}
	op->conn = tc;
	if (tc->state != CONN_READY) {
		tcp_list_add(&tc->wait, op);
		return;
	}
	tcp_op_send(tc, op);
}

void tcp_node_close(struct tcp_node *n)
{
	for (uint32_t i = 0; n->conns && i < n->nconns; i++)
		if (n->conns[i])
			kvr_conn_close(&n->conns[i]->c, 0);
	fail_list(&n->wait, -ECANCELED);
}
