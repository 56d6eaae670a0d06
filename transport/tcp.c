/* SPDX-License-Identifier: MIT */
/*
 * The TCP cluster target: each object's key ranks the nodes by rendezvous
 * hashing; a put goes to the first R usable nodes, a get/exists asks them in
 * order and falls over on a miss or a node failure, a remove goes to R
 * nodes. Which nodes a read may ask comes from tcp_replica.c: the first R
 * of the ranking, or, for a key whose replicas diverged, the holders of the
 * newest acknowledged write. Deadlines: an expired request's work that has not reached the
 * kernel is withdrawn; a connection still reading the caller's memory (a put
 * being sent, a get being received) is closed, without marking its node
 * down (it was answering; the next request opens the connection again), and
 * a node that stayed silent for a request's whole life is marked down.
 */
#include "transport/tcp.h"

#include <endian.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_CONNS	     2
#define DEFAULT_CONNECT_MS   3000
#define DEFAULT_RETRY_MS     200
#define DEFAULT_ZC_MIN	     (16u << 10)
#define OPS_PER_OBJECT_SLACK 2 /* orphans wait for late answers */

/* Per-object state, in the request's priv area. */
struct tcp_req {
	uint16_t rank[TCP_MAX_RANK];
	uint8_t nrank;
	uint8_t next;	 /* next ranking position to try */
	uint8_t pending; /* ops not yet finished */
	uint8_t asked;	 /* reads: nodes that answered a miss */
	uint8_t ok;	 /* puts/removes: nodes that succeeded */
	uint8_t misses;
	uint8_t want;	/* puts/removes: copies; reads: answers to wait for */
	uint16_t allow; /* ranking positions this request may use */
	uint16_t tried; /* positions it was sent to */
	uint16_t acked; /* positions that stored it (a remove: that hold none) */
	int32_t err;
	struct tcp_op *ops[TCP_MAX_REPLICAS];
};
_Static_assert(sizeof(struct tcp_req) <= KVR_REQ_PRIV, "tcp_req fits the request");

static inline struct tcp_req *treq(struct kvr_req *r)
{
	return (struct tcp_req *)r->priv;
}

static inline struct tcp_cluster *cl_of(kvr_target *t)
{
	return (struct tcp_cluster *)t;
}

static const uint8_t op_code[] = {
    [KVR_OP_PUT] = KVR_PROTO_OP_PUT,
    [KVR_OP_GET] = KVR_PROTO_OP_GET,
    [KVR_OP_EXISTS] = KVR_PROTO_OP_EXISTS,
    [KVR_OP_REMOVE] = KVR_PROTO_OP_REMOVE,
};

/* Errors that say "this node failed", not "this object": fall over. */
static bool node_error(int64_t res)
{
	switch (res) {
	case -ECONNRESET:
	case -ECONNREFUSED:
	case -ECONNABORTED:
	case -ETIMEDOUT:
	case -EHOSTDOWN:
	case -EHOSTUNREACH:
	case -ENETUNREACH:
	case -EPIPE:
	case -EPROTO:
	case -EBADMSG:
	case -EACCES:
	case -ECANCELED:
	case -ESHUTDOWN:
		return true;
	default:
		return false;
	}
}

/* ------------------------------------------------------------------ ops */

static struct tcp_op *op_alloc(struct tcp_cluster *cl, struct kvr_req *r)
{
	struct tcp_op *op = cl->free_ops;

	if (!op)
		return NULL;
	cl->free_ops = op->next;
	op->next = op->prev = NULL;
	op->r = r;
	op->conn = NULL;
	op->state = OP_WAIT;
	op->tx_busy = false;
	op->answered = false;
	op->id = ((uint64_t)++cl->gen << 32) | (uint64_t)(op - cl->ops);
	op->opcode = op_code[r->b->op];
	return op;
}

static void op_free(struct tcp_cluster *cl, struct tcp_op *op)
{
	op->state = OP_FREE;
	op->id = 0;
	op->r = NULL;
	op->next = cl->free_ops;
	cl->free_ops = op;
}

static void req_advance(struct tcp_cluster *cl, struct kvr_req *r);

static void req_forget_op(struct tcp_req *tr, struct tcp_op *op)
{
	for (int i = 0; i < TCP_MAX_REPLICAS; i++)
		if (tr->ops[i] == op) {
			tr->ops[i] = NULL;
			tr->pending--;
			return;
		}
}

/* The op is over (answered, and its buffers are free): fold its result into
 * its request and decide what comes next. */
static void op_finish(struct tcp_op *op)
{
	struct tcp_cluster *cl = op->node->cl;
	struct kvr_req *r = op->r;
	int64_t res = op->res;
	struct tcp_req *tr;

	op_free(cl, op);
	if (!r)
		return; /* orphan */
	tr = treq(r);
	req_forget_op(tr, op);
	if (res >= 0 || (res == -ENOENT && r->b->op == KVR_OP_REMOVE))
		tr->acked |= (uint16_t)(1u << op->pos);
	if (res >= 0) {
		tr->ok++;
		if (r->b->op == KVR_OP_GET || r->b->op == KVR_OP_EXISTS) {
			kvr_req_done(r, res);
			return;
		}
	} else if (res == -ENOENT) {
		tr->misses++;
		tr->asked++;
	} else {
		tr->err = (int32_t)res;
		if (!node_error(res) && (r->b->op == KVR_OP_GET || r->b->op == KVR_OP_EXISTS)) {
			kvr_req_done(r, res); /* about the object: final */
			return;
		}
	}
	req_advance(cl, r);
}

void tcp_op_answer(struct tcp_op *op, int64_t res)
{
	op->res = res;
	op->answered = true;
	op->state = OP_DONE; /* no longer on any list */
	if (!op->tx_busy)
		op_finish(op);
}

static void op_tx_done(struct kvr_tx *tx, int err)
{
	struct tcp_op *op = KVR_CONTAINER_OF(tx, struct tcp_op, tx);

	(void)err; /* a failed send ends in the connection's close */
	op->tx_busy = false;
	op->sent_ns = op->node->cl->t.e->now_ns;
	if (op->answered)
		op_finish(op);
}

void tcp_op_send(struct tcp_conn *tc, struct tcp_op *op)
{
	const struct kvr_objd *o = op->r->o;
	struct kvr_frame f = {.opcode = op->opcode, .id = op->id, .key_len = o->key_len};

	if (tc->rdma) {
		tcp_rdma_send(tc, op);
		return;
	}
	op->conn = tc;
	op->state = OP_SENT;
	op->tx.done = op_tx_done;
	op->tx.key = o->key;
	op->tx.sgx = NULL;
	op->tx.nsge = 0;
	if (op->opcode == KVR_PROTO_OP_PUT) {
		op->tx.sgx = o->sgx;
		op->tx.nsge = o->nsge;
		f.payload_len = o->total;
	} else if (op->opcode == KVR_PROTO_OP_GET) {
		op->cap_le = htole64(o->total);
		op->cap_sgx = (struct kvr_sgx){(uint8_t *)&op->cap_le, sizeof(op->cap_le), NULL};
		op->tx.sgx = &op->cap_sgx;
		op->tx.nsge = 1;
		f.payload_len = sizeof(op->cap_le);
	}
	op->tx_busy = true;
	op->sent_ns = tc->c.e->now_ns;
	tcp_list_add(&tc->sent, op);
	kvr_conn_send(&tc->c, &op->tx, &f);
}

/* --------------------------------------------------------------- requests */

/* Highest rendezvous score first. */
uint8_t tcp_rank(const struct tcp_cluster *cl, uint64_t hash, uint16_t rank[TCP_MAX_RANK])
{
	uint64_t score[TCP_MAX_RANK];
	uint32_t keep = cl->nnodes < TCP_MAX_RANK ? cl->nnodes : TCP_MAX_RANK;
	uint32_t nrank = 0;

	for (uint32_t i = 0; i < cl->nnodes; i++) {
		uint64_t s = tcp_mix64(hash ^ cl->nodes[i].seed);
		uint32_t j = nrank;

		if (j == keep && s <= score[j - 1])
			continue;
		if (j == keep)
			j--;
		while (j > 0 && score[j - 1] < s) {
			score[j] = score[j - 1];
			rank[j] = rank[j - 1];
			j--;
		}
		score[j] = s;
		rank[j] = (uint16_t)i;
		if (nrank < keep)
			nrank++;
	}
	return (uint8_t)nrank;
}

/* Rank the nodes for r's key and choose which of them r may use. */
static void req_rank(struct tcp_cluster *cl, struct kvr_req *r)
{
	struct tcp_req *tr = treq(r);
	enum kvr_op kind = r->b->op;

	memset(tr, 0, sizeof(*tr));
	tr->nrank = tcp_rank(cl, r->o->hash, tr->rank);
	tr->allow = (uint16_t)((1u << tr->nrank) - 1);
	tr->want = (uint8_t)cl->o.replicas;
	if (tcp_rep_is_repair(r->b)) {
		tr->allow = tcp_rep_targets(cl, r->o, tr->rank);
		tr->want = (uint8_t)__builtin_popcount(tr->allow);
	} else if (kind == KVR_OP_GET || kind == KVR_OP_EXISTS) {
		/* Only replicas known to hold the newest write (or nothing). */
		tr->allow &= tcp_rep_readable(cl, r->o);
		tr->want = (uint8_t)__builtin_popcount(tr->allow);
	}
}

/* Start one op of r on the next usable node of its ranking; false if none. */
static bool req_launch_next(struct tcp_cluster *cl, struct kvr_req *r)
{
	struct tcp_req *tr = treq(r);

	while (tr->next < tr->nrank) {
		uint8_t pos = tr->next++;
		struct tcp_node *n = &cl->nodes[tr->rank[pos]];
		struct tcp_op *op;
		int slot = -1;

		if (!(tr->allow & (1u << pos)) || !tcp_node_usable(n))
			continue;
		for (int i = 0; i < TCP_MAX_REPLICAS; i++)
			if (!tr->ops[i]) {
				slot = i;
				break;
			}
		op = slot >= 0 ? op_alloc(cl, r) : NULL;
		if (!op) {
			tr->err = -ENOBUFS;
			return false;
		}
		tr->ops[slot] = op;
		tr->pending++;
		tr->tried |= (uint16_t)(1u << pos);
		op->pos = pos;
		op->node = n;
		tcp_node_route(n, op, r->o->hash);
		return true;
	}
	return false;
}

/* r is over: record what its writes left on which replica, then report. */
static void req_finish(struct tcp_cluster *cl, struct kvr_req *r, int64_t res)
{
	struct tcp_req *tr = treq(r);

	if (tcp_rep_is_repair(r->b))
		tcp_rep_repaired(cl, r->o, tr->acked);
	else if (r->b->op == KVR_OP_PUT || r->b->op == KVR_OP_REMOVE)
		tcp_rep_written(cl, r->o, tr->tried, tr->acked, &res);
	kvr_req_done(r, res);
}

/* Decide what r needs after an op finished, or finish it. */
static void req_advance(struct tcp_cluster *cl, struct kvr_req *r)
{
	struct tcp_req *tr = treq(r);
	enum kvr_op kind = r->b->op;
	uint32_t want = tr->want;

	if (r->done)
		return;
	if (!r->b->expired) {
		if (kind == KVR_OP_GET || kind == KVR_OP_EXISTS) {
			/* Next replica after a miss (up to R asked) or a failure. */
			if (!tr->pending && tr->asked < want && req_launch_next(cl, r))
				return;
		} else {
			/* Keep R copies placed: replace a failed node. */
			while ((uint32_t)(tr->ok + tr->misses + tr->pending) < want &&
			       req_launch_next(cl, r))
				;
		}
	}
	if (tr->pending)
		return;
	if (kind == KVR_OP_PUT && tr->ok)
		req_finish(cl, r, (int64_t)r->o->total);
	else if (kind == KVR_OP_REMOVE && tr->ok)
		req_finish(cl, r, 0);
	else if (tr->misses)
		req_finish(cl, r, -ENOENT);
	else
		req_finish(cl, r, tr->err ? tr->err : -EHOSTDOWN);
}

static void tcp_start(kvr_target *t, struct kvr_req **reqs, uint32_t n)
{
	struct tcp_cluster *cl = cl_of(t);

	for (uint32_t i = 0; i < n; i++) {
		struct kvr_req *r = reqs[i];

		req_rank(cl, r);
		req_advance(cl, r);
	}
}

/* The deadline passed: release the caller's memory as soon as possible. */
static void tcp_cancel(kvr_target *t, struct kvr_req *r)
{
	struct tcp_req *tr = treq(r);

	for (int i = 0; i < TCP_MAX_REPLICAS && !r->done; i++) {
		struct tcp_op *op = tr->ops[i];
		struct tcp_conn *tc;

		if (!op)
			continue;
		tc = op->conn;
		if (op->state == OP_WAIT) {
			tcp_list_del(tc ? &tc->wait : &op->node->wait, op);
			tcp_op_answer(op, -ETIMEDOUT);
		} else if (op->state == OP_SENT && tc->rdma &&
			   (op->opcode == KVR_PROTO_OP_PUT || op->opcode == KVR_PROTO_OP_GET)) {
			/* The server may be reading or writing the caller's memory
			 * right now: only the queue pair's error state stops it. */
			if (!tc->c.closing)
				tcp_rdma_describe(tc, "deadline passed");
			kvr_conn_close(&tc->c, -ETIMEDOUT);
		} else if (op->state == OP_SENT && kvr_conn_unsend(&tc->c, &op->tx)) {
			op->tx_busy = false;
			tcp_list_del(&tc->sent, op);
			tcp_op_answer(op, -ETIMEDOUT);
		} else if (op->state == OP_RECV || (op->state == OP_SENT && op->tx_busy)) {
			/* The kernel is reading or writing the caller's memory:
			 * only closing the connection stops it. The node itself
			 * is answering (or being sent to): it is not down. */
			kvr_conn_close(&tc->c, TCP_CLOSE_CANCELED);
		} else if (op->state == OP_SENT && tc->last_rx_ns <= op->sent_ns) {
			/* Not a byte from the node since we asked: it stalled. */
			tcp_node_down(op->node, -ETIMEDOUT);
		} else if (op->state == OP_SENT) {
			/* The node is alive but slow: stop waiting for it. */
			op->r = NULL;
			req_forget_op(tr, op);
		}
	}
	if (!r->done && !tr->pending)
		req_finish(cl_of(t), r, -ETIMEDOUT);
}

/* rdma:// with GPUDirect: the NIC reaches the region itself. */
static bool tcp_takes_device(kvr_target *t, const struct kvr_mr *mr)
{
	return cl_of(t)->rdma && tcp_rdma_has_mr(cl_of(t), mr);
}

static void tcp_stats(kvr_target *t, struct kvr_stats *st)
{
	/* the objects' counters live on the servers (STATS op) */
	if (cl_of(t)->rdma)
		tcp_rdma_stats(cl_of(t), st);
}

static void cluster_free(struct tcp_cluster *cl)
{
	for (uint32_t i = 0; cl->nodes && i < cl->nnodes; i++)
		tcp_node_fini(&cl->nodes[i]);
	free(cl->nodes);
	free(cl->ops);
	free(cl->secret);
	tcp_rep_fini(cl);
	cl->nodes = NULL;
	cl->ops = NULL;
	cl->secret = NULL;
}

static int tcp_close(kvr_target *t)
{
	struct tcp_cluster *cl = cl_of(t);
	int rc = kvr_engine_drain(t->e, &t->inflight);

	cl->closing = true;
	for (uint32_t i = 0; i < cl->nnodes; i++)
		tcp_node_close(&cl->nodes[i]);
	if (!rc)
		rc = kvr_engine_drain(t->e, &cl->conns_open);
	cluster_free(cl);
	return rc;
}

static const struct kvr_target_ops tcp_ops = {
    .name = "tcp",
    .put = tcp_start,
    .get = tcp_start,
    .exists = tcp_start,
    .remove = tcp_start,
    .cancel = tcp_cancel,
    .takes_device = tcp_takes_device,
    .stats = tcp_stats,
    .close = tcp_close,
};

/* ---------------------------------------------------------------- connect */

static int opts_load(struct tcp_cluster *cl, const struct kvr_connect_opts *opts)
{
	struct kvr_connect_opts *o = &cl->o;

	if (opts) {
		if (opts->size < offsetof(struct kvr_connect_opts, secret_len) + sizeof(size_t))
			return -EINVAL;
		memcpy(o, opts, opts->size < sizeof(*o) ? opts->size : sizeof(*o));
	}
	o->size = sizeof(*o);
	if (!o->conns)
		o->conns = DEFAULT_CONNS;
	if (!o->replicas)
		o->replicas = 1;
	if (!o->connect_timeout_ms)
		o->connect_timeout_ms = DEFAULT_CONNECT_MS;
	if (!o->retry_ms)
		o->retry_ms = DEFAULT_RETRY_MS;
	if (!o->zc_min)
		o->zc_min = DEFAULT_ZC_MIN;
	if (o->conns > 64 || o->replicas > TCP_MAX_REPLICAS)
		return -EINVAL;
	if (o->secret) {
		if (!o->secret_len || o->secret_len > KVR_PROTO_MAX_SECRET)
			return -EINVAL;
		cl->secret = malloc(o->secret_len);
		if (!cl->secret)
			return -ENOMEM;
		memcpy(cl->secret, o->secret, o->secret_len);
		o->secret = cl->secret;
	} else if (o->secret_len) {
		return -EINVAL;
	}
	return 0;
}

static int nodes_load(struct tcp_cluster *cl, const char *list)
{
	char item[128];
	const char *p = list;

	for (const char *q = list; *q; q++)
		cl->nnodes += *q == ',';
	cl->nnodes++;
	if (cl->nnodes > TCP_MAX_NODES)
		return -EINVAL;
	cl->nodes = calloc(cl->nnodes, sizeof(*cl->nodes));
	if (!cl->nodes)
		return -ENOMEM;
	for (uint32_t i = 0; i < cl->nnodes; i++) {
		const char *end = strchr(p, ',');
		size_t len = end ? (size_t)(end - p) : strlen(p);
		int rc;

		if (!len || len >= sizeof(item))
			return -EINVAL;
		memcpy(item, p, len);
		item[len] = 0;
		for (uint32_t j = 0; j < i; j++)
			if (!strcmp(cl->nodes[j].name, item))
				return -EINVAL; /* listed twice */
		rc = tcp_node_init(cl, &cl->nodes[i], item);
		if (rc)
			return rc;
		cl->nodes[i].idx = i;
		p = end ? end + 1 : p + len;
	}
	return 0;
}

/* The scheme and node list of uri (a copy in buf), options applied. */
static int uri_load(struct tcp_cluster *cl, const char *uri, char *buf, size_t cap)
{
	const char *list, *q;
	size_t len;

	if (!strncmp(uri, "tcp://", 6)) {
		list = uri + 6;
	} else if (!strncmp(uri, "rdma://", 7)) {
		list = uri + 7;
		cl->rdma = true;
		cl->rdma_gid = -1;
	} else {
		return -EINVAL;
	}
	q = cl->rdma ? strchr(list, '?') : NULL;
	len = q ? (size_t)(q - list) : strlen(list);
	if (!len || len >= cap)
		return -EINVAL;
	memcpy(buf, list, len);
	buf[len] = 0;
	if (q) {
		char msg[160];
		int rc = kvr_proto_rdma_opts(q + 1, cl->rdma_dev, sizeof(cl->rdma_dev),
					     &cl->rdma_gid, msg, sizeof(msg));

		if (rc)
			kvr_set_errmsg(cl->t.e, "%s", msg);
		return rc;
	}
	return 0;
}

KVR_EXPORT int kvr_connect(kvr_engine *e, const char *uri, const struct kvr_connect_opts *opts,
			   kvr_target **out)
{
	struct tcp_cluster *cl;
	char *list;
	int rc;

	if (!e || !uri || !out)
		return -EINVAL;
	*out = NULL;
	/* A message now is this call's (the generic ones below are set only
	 * when nothing more precise was). */
	e->errmsg[0] = 0;
	if (e->destroying)
		return -ESHUTDOWN;
	cl = calloc(1, sizeof(*cl));
	list = malloc(strlen(uri) + 1);
	if (!cl || !list) {
		free(cl);
		free(list);
		return -ENOMEM;
	}
	cl->t.e = e; /* for error messages while loading */
	cl->lim = kvr_proto_default_limits;
	rc = uri_load(cl, uri, list, strlen(uri) + 1);
	if (rc && !kvr_engine_errmsg(e)[0])
		kvr_set_errmsg(e,
			       "unknown remote URI '%s' (want tcp://HOST:PORT[,HOST:PORT...] or "
			       "rdma://HOST:PORT[,...][?dev=NAME&gid=N])",
			       uri);
	if (!rc)
		rc = opts_load(cl, opts);
	if (!rc)
		rc = nodes_load(cl, list);
	free(list);
	if (!rc && cl->o.replicas > cl->nnodes)
		rc = -EINVAL;
	if (!rc) {
		cl->nops = e->max_objects * cl->o.replicas * OPS_PER_OBJECT_SLACK;
		cl->ops = calloc(cl->nops, sizeof(*cl->ops));
		if (!cl->ops)
			rc = -ENOMEM;
	}
	if (!rc)
		rc = tcp_rep_init(cl);
	if (!rc && cl->rdma)
		rc = tcp_rdma_setup(cl);
	if (rc) {
		if (rc == -EINVAL && !kvr_engine_errmsg(e)[0])
			kvr_set_errmsg(e, "bad remote URI or options '%s'", uri);
		cluster_free(cl);
		free(cl);
		return rc;
	}
	for (uint32_t i = cl->nops; i-- > 0;)
		op_free(cl, &cl->ops[i]);
	kvr_target_init(&cl->t, e, &tcp_ops, cl->o.timeout_ms);
	*out = &cl->t;
	return 0;
}
