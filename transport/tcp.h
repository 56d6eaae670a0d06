/* SPDX-License-Identifier: MIT */
/*
 * The TCP client: a cluster target (tcp.c: routing, replicas, failover,
 * deadlines) over nodes and their connections (tcp_node.c: connect,
 * handshake, down/backoff), and the record of keys whose replicas diverged
 * (tcp_replica.c: who holds the newest write, repairs). One struct tcp_op is
 * one request to one node.
 */
#ifndef KVR_TCP_H
#define KVR_TCP_H

#include <errno.h>
#include <netinet/in.h>

#include "transport/conn.h"

/* The reason a deadline closes a healthy connection with: the node is not
 * marked down for it (tcp_node.c on_close). */
#define TCP_CLOSE_CANCELED (-ECANCELED)

#define TCP_MAX_RANK	 16 /* nodes a key's ranking remembers */
#define TCP_MAX_REPLICAS 8
#define TCP_MAX_NODES	 256
/* Keys whose replicas diverged that a cluster remembers (tcp_replica.c). */
#define TCP_REP_KEYS 4096

struct tcp_cluster;
struct tcp_node;
struct tcp_rdma;
struct rdma_dev;

/* OP_SENT with r == NULL is an orphan: its request gave up waiting. */
enum { OP_FREE, OP_WAIT, OP_SENT, OP_RECV, OP_DONE };

struct tcp_op {
	struct kvr_req *r; /* NULL once orphaned (its request gave up) */
	struct tcp_conn *conn;
	struct tcp_node *node;
	struct tcp_op *prev, *next; /* a wait list or a connection's sent list */
	uint64_t id;
	uint64_t hash; /* the key's, for shard and connection choice */
	uint64_t sent_ns;
	int64_t res;
	uint8_t opcode;
	uint8_t state;
	uint8_t pos;  /* the node's position in the key's ranking */
	bool tx_busy; /* the kernel may still read the frame's buffers */
	bool answered;
	uint32_t rx_crc; /* GET: the payload's crc32c, computed as it arrives */
	uint64_t cap_le; /* GET: the SGL's capacity, as the request's payload */
	struct kvr_sgx cap_sgx;
	struct kvr_tx tx;
};

struct tcp_list {
	struct tcp_op *head, *tail;
};

enum { CONN_CONNECTING, CONN_HELLO, CONN_AUTH, CONN_READY };

struct tcp_conn {
	struct kvr_conn c;
	struct tcp_node *n;
	uint32_t slot; /* index in n->conns */
	uint16_t shard;
	int state;
	struct tcp_list sent; /* ops on the wire, awaiting answers */
	struct tcp_list wait; /* ops waiting for the handshake */
	uint64_t last_rx_ns;
	struct kvr_timer hs_timer;
	/* rdma:// : requests and answers go over a queue pair (rdma_client.c);
	 * this TCP connection stays open as its control channel */
	struct tcp_rdma *rdma;
	struct kvr_tx hello_tx[2]; /* the HELLO, and the one with the tag */
	struct kvr_sgx hello_sgx[2];
	uint8_t hello_buf[2][KVR_PROTO_HELLO_MAX];
	char name[96];
};

enum { NODE_IDLE, NODE_CONNECTING, NODE_UP, NODE_DOWN };

struct tcp_node {
	struct tcp_cluster *cl;
	uint32_t idx;
	char name[72];
	struct sockaddr_storage sa;
	socklen_t salen;
	uint64_t seed; /* rendezvous hashing */
	int state;
	int last_err;
	uint64_t retry_ns;
	uint32_t backoff_ms;
	uint16_t shards;
	uint32_t nconns; /* length of conns: 1 while connecting, then
			    shards * connections per shard */
	struct tcp_conn **conns;
	uint32_t open;	      /* connections not yet finished closing */
	struct tcp_list wait; /* ops waiting for the shard count */
};

/*
 * A key some replica may hold an older version of than the newest write
 * this client saw acknowledged (tcp_replica.c). Masks are of positions in
 * the key's ranking (bit p: the node ranked p-th).
 */
struct tcp_rep_entry {
	uint64_t hash;
	uint32_t gen;	     /* writes of the key finished since it was added */
	uint32_t repair_gen; /* gen when the repair in flight was sent */
	uint16_t cur;	     /* hold the newest acknowledged write, or nothing */
	uint16_t maybe;	     /* may hold some version this client wrote */
	uint16_t repairing;  /* a repair REMOVE is in flight to them */
	uint16_t key_len;
	uint8_t key[KVR_MAX_KEY];
};

struct tcp_rep {
	struct tcp_rep_entry *ent; /* cap entries; a free one has key_len 0 */
	uint32_t *slot;		   /* hash index: entry + 1, 0 = empty */
	uint32_t mask;		   /* index slots - 1 (2 * cap slots) */
	uint32_t cap, count;
	uint32_t hand;		/* next entry eviction looks at */
	bool busy;		/* a repair batch is in flight */
	bool due;		/* repairs wait for a node or the batch in flight */
	struct kvr_timer timer; /* runs the repairs from the loop */
	uint64_t repaired, overflows;
};

struct tcp_cluster {
	kvr_target t;
	bool rdma;	   /* rdma:// */
	char rdma_dev[64]; /* ?dev= ("" for the first active one) */
	int rdma_gid;	   /* ?gid= (-1: the device's default) */
	struct rdma_dev *dev;
	struct kvr_connect_opts o;
	uint8_t *secret;
	struct kvr_proto_limits lim;
	uint32_t nnodes;
	struct tcp_node *nodes;
	struct tcp_op *ops;
	uint32_t nops;
	struct tcp_op *free_ops;
	uint32_t gen;
	struct tcp_rep rep; /* cap 0: one node, nothing to diverge */
	bool closing;
	uint64_t conns_open; /* connections not yet finished closing */
};

/* tcp_node.c */
int tcp_node_init(struct tcp_cluster *cl, struct tcp_node *n, const char *hostport);
void tcp_node_fini(struct tcp_node *n);
/* Send op to node n (connecting first when needed). */
void tcp_node_route(struct tcp_node *n, struct tcp_op *op, uint64_t hash);
/* Mark n down (closing its connections) after err. */
void tcp_node_down(struct tcp_node *n, int err);
/* Usable now: up, or down with its retry due. */
bool tcp_node_usable(const struct tcp_node *n);
/* Close every connection orderly (target close). */
void tcp_node_close(struct tcp_node *n);

/* The op on tc with request id `id` that awaits its answer, or NULL. */
struct tcp_op *tcp_op_find(struct tcp_conn *tc, uint64_t id);

/* rdma_client.c: rdma:// clusters (without libibverbs, tcp_rdma_setup
 * refuses them with -EPROTONOSUPPORT and the rest is never called). */
/* Open the cluster's device (kvr_connect). 0 or -errno (errmsg says why). */
int tcp_rdma_setup(struct tcp_cluster *cl);
/* The TCP connection is up: make its queue pair. 0 or -errno. */
int tcp_rdma_open(struct tcp_conn *tc);
/* Region mr has an MR on the cluster's device (GPUDirect for device memory). */
bool tcp_rdma_has_mr(struct tcp_cluster *cl, const struct kvr_mr *mr);
/* The engine's verbs counters (work requests, doorbells, completions). */
void tcp_rdma_stats(struct tcp_cluster *cl, struct kvr_stats *st);
/* Add our queue pair's address to a HELLO. */
void tcp_rdma_hello(struct tcp_conn *tc, struct kvr_hello *h);
/* The server's final HELLO: connect the queue pair. 0 or -errno. */
int tcp_rdma_ready(struct tcp_conn *tc, const struct kvr_hello *h);
/* Send op over the queue pair (or queue it for credits / room). */
void tcp_rdma_send(struct tcp_conn *tc, struct tcp_op *op);
/* Log the connection's queue pair state (a deadline passed on it). */
void tcp_rdma_describe(struct tcp_conn *tc, const char *why);
/* Send the connection's waiting ops, in order, while credits last. */
void tcp_rdma_kick(struct tcp_conn *tc);
/* The connection closed: the queue pair goes to the error state (the
 * server can no longer touch our memory) and drains on its own. */
void tcp_rdma_close(struct tcp_conn *tc, int err);

/* tcp_replica.c. */
int tcp_rep_init(struct tcp_cluster *cl);
void tcp_rep_fini(struct tcp_cluster *cl);
/* Positions a read of key (hash) may ask: the newest write's holders, or
 * the first `replicas` of the ranking when no replica diverged. */
uint16_t tcp_rep_readable(struct tcp_cluster *cl, const struct kvr_objd *o);
/* A write of o (PUT or REMOVE) ended: `tried` positions were sent it,
 * `acked` stored it; *res is its result, which becomes -ENOBUFS when an
 * acknowledged write left stale replicas and no entry could record them. */
void tcp_rep_written(struct tcp_cluster *cl, const struct kvr_objd *o, uint16_t tried,
		     uint16_t acked, int64_t *res);
/* A repair request: the positions to send it to (stale, node up). */
bool tcp_rep_is_repair(const struct kvr_batch *b);
uint16_t tcp_rep_targets(struct tcp_cluster *cl, const struct kvr_objd *o, const uint16_t *rank);
/* A repair request ended: `acked` positions hold the key no longer. */
void tcp_rep_repaired(struct tcp_cluster *cl, const struct kvr_objd *o, uint16_t acked);
/* A node came up: repairs waiting for it may go. */
void tcp_rep_kick(struct tcp_cluster *cl);

/* tcp.c: rank the nodes for a key hash, best first; returns how many. */
uint8_t tcp_rank(const struct tcp_cluster *cl, uint64_t hash, uint16_t rank[TCP_MAX_RANK]);

/* tcp.c: a request on conn ended (answer or failure). */
void tcp_op_answer(struct tcp_op *op, int64_t res);
/* Put a sent op on conn's wire; used once the connection is ready. */
void tcp_op_send(struct tcp_conn *tc, struct tcp_op *op);

/* A 64-bit finaliser: spreads hash ^ seed for rendezvous scores. */
static inline uint64_t tcp_mix64(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdull;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ull;
	x ^= x >> 33;
	return x;
}

static inline void tcp_list_add(struct tcp_list *l, struct tcp_op *op)
{
	op->next = NULL;
	op->prev = l->tail;
	if (l->tail)
		l->tail->next = op;
	else
		l->head = op;
	l->tail = op;
}

static inline void tcp_list_del(struct tcp_list *l, struct tcp_op *op)
{
	if (op->prev)
		op->prev->next = op->next;
	else
		l->head = op->next;
	if (op->next)
		op->next->prev = op->prev;
	else
		l->tail = op->prev;
	op->prev = op->next = NULL;
}

#endif
