/* SPDX-License-Identifier: MIT */
/*
 * The server side of the TCP transport (kvr_serve): what serve.c (listen,
 * accept, handshake, requests), serve_spill.c (writing evicted objects to a
 * file store and reading them back) and serve_group.c (handing connections
 * between the shards of a group) share.
 *
 * A request lives in a slot (struct srv_req) of its connection from the
 * frame's arrival until its response has been sent (tx done), and so does
 * its id in the connection's in-flight set. Slots come
 * from a per-connection free list that grows in chunks, so steady-state
 * requests never call malloc. A connection is freed once the transport has
 * closed it (on_close) and every slot is back.
 */
#ifndef KVR_SERVE_H
#define KVR_SERVE_H

#include <pthread.h>

#include "transport/conn.h"
#include "transport/rdma_types.h"
#include "transport/store.h"

/* Requests one connection may have in flight (ids not yet answered). A
 * client must stay at or under this; one more is a protocol error. */
#define SRV_MAX_INFLIGHT (1u << 16)
/* Bytes of PUT payloads parked in heap buffers while spill writes make room
 * in the pool (beyond this a PUT that finds no room fails with -ENOSPC). */
#define SRV_PARK_MAX (256ull << 20)
/* Objects in one spill batch. */
#define SRV_SPILL_BATCH 1024u
/*
 * Back-pressure (docs/protocol.md): the server stops reading a connection
 * that holds SRV_CONN_SLOTS requests, or SRV_CONN_TX bytes of answers not
 * yet taken by its peer, and goes on once it is down to half. Over all
 * connections, SRV_TOTAL_SLOTS requests or SRV_TOTAL_TX answer bytes stop
 * the connections holding more than their share (the total over the
 * connections), so that clients that never read cannot stop one that does.
 * A slot is about 400 bytes: memory for requests stays under SRV_TOTAL_SLOTS
 * slots plus one connection's worth.
 */
#define SRV_CONN_SLOTS	4096u
#define SRV_CONN_TX	(64ull << 20)
#define SRV_TOTAL_SLOTS (1u << 17)
#define SRV_TOTAL_TX	(1ull << 30)
/* The least share of the totals a connection is always allowed. */
#define SRV_SHARE_SLOTS 64u
#define SRV_SHARE_TX	(4ull << 20)
/* Pool bytes reserved for PUT payloads still on the wire stay under this
 * fraction of the pool (a reservation may evict objects, before a byte has
 * arrived): one more waits (its connection is not read) until another
 * payload is in. */
#define SRV_RESERVE_DIV 4u
#define SRV_SLOT_CHUNK	64u

struct srv_conn;
struct srv_spill;
struct rdma_dev;

enum srv_conn_state {
	CS_HELLO,   /* waiting for the first HELLO */
	CS_AUTH,    /* nonce sent, waiting for the HELLO with the tag */
	CS_READY,   /* serving requests */
	CS_HANDOFF, /* going to another shard: closing without the socket */
	CS_DOOMED,  /* a refusal is being sent; closes once it is out */
};

enum srv_req_state {
	RQ_FREE,
	RQ_RECV,      /* PUT payload arriving into the pool */
	RQ_DISCARD,   /* payload being discarded; status answered after it */
	RQ_PARK_RECV, /* PUT payload arriving into a parking buffer */
	RQ_WAIT,      /* on the server's wait queue for pool room */
	RQ_SPILL_GET, /* promote: kvr_get from the spill store in flight */
	RQ_SPILL_RM,  /* REMOVE waiting for (or in) a spill remove batch */
	RQ_SEND,      /* response queued on the connection */
};

struct srv_req {
	struct kvr_tx tx;
	struct srv_conn *c;
	struct srv_req *next; /* free list, wait queue, spill remove list */
	struct kvr_entry *en; /* PUT/promote: the entry being filled; GET: the
				 entry whose bytes are being sent; REMOVE with
				 spill: a key holder (no extent) */
	uint8_t *park;	      /* parked PUT payload (heap) */
	void *heap;	      /* STATS body */
	struct kvr_sgx sgx;   /* response payload, or the PUT destination */
	uint64_t id;
	uint64_t len;  /* PUT: payload bytes; GET: the client's capacity */
	uint64_t need; /* waiting: pool bytes it waits for */
	int32_t status;
	uint8_t op;
	uint8_t state;
	bool has_id;	 /* id is in the connection's in-flight set */
	bool sending;	 /* GET answer from the pool: counted in
			    the server's `sending` */
	bool found;	 /* REMOVE: found in memory or in flight to the spill */
	int close_after; /* close the connection with this once sent (<0) */
	bool remote;	 /* PUT over RDMA waiting for room: the payload
			    is still in the client's memory */
	bool rslot_held; /* RDMA: rslot holds the request message */
	uint32_t rslot;
	uint64_t out_len;	  /* RDMA: the answer's payload bytes */
	uint32_t crc;		  /* GET: the object's crc32c (for the trailer);
				     PUT with crc_in: the payload's, as it arrived */
	bool crc_in;		  /* PUT over TCP: crc was computed as the payload landed */
	uint64_t txq;		  /* answer bytes counted in the connection's tx */
	uint64_t reserved;	  /* PUT over TCP: pool bytes held for its payload */
	struct rdma_wr wr;	  /* RDMA: READs done (PUT), answer sent */
	struct rdma_pending pend; /* RDMA: waiting for send queue room */
	uint8_t body[KVR_PROTO_HELLO_MAX]; /* HELLO / EXISTS response body */
};

struct srv_conn {
	struct kvr_conn conn;
	struct kvr_server *s;
	struct srv_conn *prev, *next; /* the server's list */
	struct kvr_proto_ids ids;
	int state;
	bool closed;	     /* on_close ran */
	bool dead;	     /* on the server's dead list */
	bool draining;	     /* server closing: close once every slot is back */
	uint32_t handoff_to; /* CS_HANDOFF: the shard taking it */
	int handoff_fd;
	struct kvr_hello handoff_hello; /* the client's HELLO, for the next shard */
	bool crc_out;			/* the client checks GET payloads (KVR_PROTO_FEAT_CRC):
					   send crc trailers, skip our own check */
	uint64_t hello_id;
	uint8_t nonce[KVR_PROTO_NONCE_LEN];
	struct srv_req *rx_req; /* the request whose large payload is arriving */
	struct srv_req *free;
	uint32_t busy; /* slots in use */
	struct srv_req **chunks;
	uint32_t nchunks;
	struct rdma_chan *ch; /* RDMA: requests and answers travel here */
	bool rx_rslot_valid;  /* RDMA: a request message is being handled */
	uint32_t rx_rslot;    /* ... in this receive slot */
	const void *rx_rmsg;  /* ... decoded (struct kvr_rmsg) */
	uint64_t seen_bytes;  /* bytes_in at the last idle check */
	uint64_t progress_ns; /* the idle tick that last saw bytes arrive */
	uint64_t stuck_ns;    /* ... first saw the peer owing bytes of this frame
				 (0: it owes none) */
	uint64_t seen_frames; /* frames_in at the last idle check */
	uint64_t seen_out;    /* bytes_out at the last idle check */
	uint64_t out_ns;      /* the idle tick that last saw bytes leave (or
				 found nothing waiting to be sent) */
	uint64_t tx;	      /* answer bytes queued or being sent */
	bool deferred;	      /* not read, for back-pressure (see SRV_CONN_SLOTS) */
	char peer[64];
	char name[80];
};

/* A connection on its way from the listening shard to the one serving it. */
struct srv_handoff {
	struct srv_handoff *next;
	int fd;
	uint64_t hello_id;
	char peer[64];
	struct kvr_hello hello; /* the client's HELLO (RDMA, crc features) */
	char dev[64];		/* the listener's device and GID index */
	int gid;
};

struct srv_counters {
	uint64_t puts, gets, hits, misses, spilled, spill_hits, spill_errors;
	uint64_t bytes_in, bytes_out;
};

struct kvr_server {
	kvr_engine *e;
	struct kvr_store *ms; /* the memory store served */
	uint8_t *base;	      /* its pool */
	struct kvr_mr *mr;    /* its registration */
	struct kvr_serve_opts o;
	uint8_t *secret;
	struct kvr_server_group *g;
	uint32_t shard, shards;
	bool closing;
	bool rdma;		 /* serves RDMA clients too (rdma:// listener, or a
				    shard of a group whose listener is one) */
	char rdma_dev[64];	 /* "" for the first active device */
	int rdma_gid;		 /* -1: the device's default */
	struct rdma_dev *rdma_d; /* opened on first use */

	/* listening (shard 0 / alone) */
	int lfd;
	struct sockaddr_storage laddr;
	struct kvr_io accept_io;
	bool accept_armed, accept_multishot;
	struct kvr_timer accept_retry;

	/* group hand-off wake-up (shards of a group) */
	struct kvr_io efd_io;
	uint64_t efd_buf;
	bool efd_armed;

	uint64_t close_quiet; /* kvr_server_close: 1 while nothing changed */

	struct srv_conn *conns;
	struct srv_conn *dead; /* closed, freed at the next loop round */
	uint32_t nconns;
	struct kvr_timer tick;

	/* PUTs and GETs waiting for pool room, in arrival order */
	struct srv_req *wait_head, *wait_tail;
	uint64_t parked_bytes, wait_bytes;
	uint64_t wait_state; /* srv_room_state() at the last retry */
	bool wait_force;     /* retry at the next round regardless */
	bool retrying;

	struct srv_spill *sp; /* NULL without a spill store */
	uint64_t async;	      /* spill batches in flight (close waits) */
	uint64_t sending;     /* GET answers being sent from the pool */
	uint64_t busy;	      /* request slots in use, all connections */
	uint64_t tx;	      /* answer bytes queued or being sent, all */
	uint64_t reserved;    /* pool bytes held for PUT payloads on the wire */
	uint64_t max_object;  /* the largest PUT stored */
	uint32_t ndeferred;   /* connections not read for back-pressure */
	struct kvr_flush flush;
	bool in_flush;
	bool kick; /* answers queued during the flush: send them */

	struct srv_counters n;
};

/* serve.c (server, listening) and serve_conn.c (requests) */
/* The server made progress while closing: let kvr_server_close look. */
void srv_closing_progress(struct kvr_server *s);
/* Queue r's response (status, optional payload). Its id stays in flight
 * until the response has been sent (the slot comes back). */
void srv_respond(struct srv_req *r, int32_t status, const struct kvr_sgx *payload, uint64_t len);
/* Drop a parked PUT's heap copy and its key holder. */
void srv_release_park(struct kvr_server *s, struct srv_req *r);
/* Give a slot back without a response (connection gone or closing). */
void srv_release(struct srv_req *r);
/* kvr_store_alloc, except that with a spill store "no room" while answers
 * or promotes still hold pool bytes is -EAGAIN (wait): room comes back as
 * they finish. */
int64_t srv_alloc(struct kvr_server *s, uint64_t len);
/* Answer a GET from entry en (a reference the response now owns). */
void srv_send_entry(struct srv_req *r, struct kvr_entry *en);
/* Adopt fd as a connection of this shard and send the HELLO response to
 * the client's HELLO h. */
void srv_adopt(struct kvr_server *s, int fd, const char *peer, uint64_t hello_id,
	       const struct kvr_hello *h);
/* Append r to a singly linked FIFO of requests. */
static inline void srv_fifo_push(struct srv_req **head, struct srv_req **tail, struct srv_req *r)
{
	r->next = NULL;
	if (*tail)
		(*tail)->next = r;
	else
		*head = r;
	*tail = r;
}

/* Whether a connection can still take a response. */
static inline bool srv_conn_live(const struct srv_conn *c)
{
	return !c->conn.closing && !c->closed;
}

/*
 * A digest of everything whose change can turn a waiting request's "no room
 * yet" into room: bytes allocated, bytes held by victims being written,
 * promotes and answers in flight (their extents come back or become
 * evictable), and objects in memory (new eviction candidates). The waiting
 * queue is retried whenever it changed since the last retry.
 */
static inline uint64_t srv_room_state(const struct kvr_server *s)
{
	uint64_t h = s->ms->al.used;

	h = h * 0x9e3779b97f4a7c15ull ^ s->ms->evicting;
	h = h * 0x9e3779b97f4a7c15ull ^ s->async;
	h = h * 0x9e3779b97f4a7c15ull ^ s->sending;
	return h * 0x9e3779b97f4a7c15ull ^ s->ms->ix.count;
}

/* serve_spill.c */
int srv_spill_init(struct kvr_server *s, kvr_target *spill);
void srv_spill_fini(struct kvr_server *s);
/* Nothing of the spill machinery is pending or in flight. */
bool srv_spill_idle(const struct kvr_server *s);
/* GET missed memory: serve it from an in-flight spill write or the spill
 * store (promoting it), or answer -ENOENT / -EMSGSIZE. */
void srv_spill_get(struct kvr_server *s, struct srv_req *r, const struct kvr_objd *o);
/* Length of key o in the spill machinery (in flight or stored), or -ENOENT. */
int64_t srv_spill_exists(struct kvr_server *s, const struct kvr_objd *o);
/* REMOVE: drop o from the spill machinery; true when r now waits for the
 * spill store (it is answered later), false when it should answer now. */
bool srv_spill_remove(struct kvr_server *s, struct srv_req *r, const struct kvr_objd *o);
/* A PUT of key o was committed to memory: in-flight reads of an older spilled
 * value must not be promoted over it. */
void srv_spill_put_committed(struct kvr_server *s, const struct kvr_objd *o);
/* Once per loop round: submit the next spill batch. */
void srv_spill_flush(struct kvr_server *s);
/* Retry requests waiting for pool room. */
void srv_wait_retry(struct kvr_server *s);
/* Park r (a PUT or GET that found no room) at the end of the wait queue. */
void srv_wait_add(struct kvr_server *s, struct srv_req *r);
/* Answer every waiting request with err (server close timed out). */
void srv_wait_fail_all(struct kvr_server *s, int err);
/* Drop c's requests from the wait queue (connection closed). */
void srv_wait_drop_conn(struct kvr_server *s, struct srv_conn *c);
/* Finish a PUT whose payload is in the pool at en: checksum, commit, answer. */
void srv_put_finish(struct kvr_server *s, struct srv_req *r);
/* Serve a GET of key o for r (r->len = the client's capacity). */
void srv_get(struct kvr_server *s, struct srv_req *r, const struct kvr_objd *o);
/* The descriptor of entry en's key, for lookups. */
struct kvr_objd srv_objd(const uint8_t *key, uint16_t key_len);

/* serve_conn.c */
extern const struct kvr_conn_ops srv_conn_ops;
/* A new connection on fd (accepted here or handed over); NULL on ENOMEM
 * (fd closed). */
struct srv_conn *srv_conn_new(struct kvr_server *s, int fd, const char *peer);
/* Close c if it is idle past the timeout, or if the frame (or handshake)
 * it is inside has taken longer than its budget (the server's tick). */
void srv_conn_check_idle(struct srv_conn *c, uint64_t now_ns);
/* With the connection table full: close the connection idle longest
 * between frames, if it has been idle for the idle timeout at least, to
 * make room for a new one. Returns whether one was closed. */
bool srv_conn_reclaim_idle(struct kvr_server *s, uint64_t now_ns);
/* Free the connections on the dead list. */
void srv_reap_dead(struct kvr_server *s);
/* Server closing: close c now or once its requests are answered. */
void srv_conn_drain(struct srv_conn *c);
/* Answer the client's HELLO h, accepted (when it asks for RDMA, our queue
 * pair is made and connected first). */
void srv_conn_hello_ok(struct srv_conn *c, const struct kvr_hello *h);
/* A request (TCP frame, or RDMA message made into one): see on_frame. */
int srv_conn_request(struct srv_conn *c, const struct kvr_frame *f, const uint8_t *key,
		     const uint8_t *small, struct kvr_rx_dest *dst);
/* The large payload of PUT r is in place (or was discarded). */
void srv_conn_payload(struct srv_conn *c, struct srv_req *r);
/* The transport is done with c (TCP closed, and the queue pair drained). */
void srv_conn_finished(struct srv_conn *c);

/* serve_rdma.c (without libibverbs: refuses, and the rest is never called) */
/* Open the server's device (kvr_serve of an rdma:// listener). 0 or -errno. */
int srv_rdma_setup(struct kvr_server *s);
/* Make c's queue pair and connect it to the client's; *ours for the HELLO
 * response. 0 or -errno. */
int srv_rdma_open(struct srv_conn *c, const struct kvr_hello_rdma *peer,
		  struct kvr_hello_rdma *ours);
/* Send r's answer over c's queue pair (srv_respond for RDMA connections). */
void srv_rdma_respond(struct srv_req *r, const struct kvr_frame *f, const struct kvr_sgx *payload);
/* Fetch PUT r's payload from the client into r->sgx (RDMA READ); then
 * srv_conn_payload(). */
void srv_rdma_fetch(struct srv_req *r);
/* c's TCP connection closed: close its queue pair; srv_conn_finished()
 * follows once it drained. */
void srv_rdma_close(struct srv_conn *c, int err);
/* r no longer needs its request message: give the receive slot back. */
void srv_rdma_unhold(struct srv_req *r);

/* serve_group.c */
int srv_group_join(struct kvr_server *s);
void srv_group_leave(struct kvr_server *s);
/* The shard a HELLO asking for `want` goes to, or a negative errno for the
 * HELLO response (-EINVAL: no such shard, -ESHUTDOWN: it stopped). */
int srv_group_pick(struct kvr_server *s, uint16_t want);
/* Hand fd to shard `to` (not this one). 0 or -errno (fd still ours). */
int srv_group_handoff(struct kvr_server *s, uint32_t to, int fd, const char *peer,
		      uint64_t hello_id, const struct kvr_hello *h);
/* Connections this shard serves changed by delta (load for ANY). */
void srv_group_count(struct kvr_server *s, int delta);
void srv_group_arm(struct kvr_server *s);
/* Shards of g (1 without a group). */
uint32_t srv_group_shards(const struct kvr_server_group *g);

#endif
