/* SPDX-License-Identifier: MIT */
/*
 * The RDMA transport's verbs layer, shared by the client (rdma_client.c)
 * and the server (serve_rdma.c).
 *
 * rdma_dev.c — per engine (struct rdma_ctx, an engine extension): the
 * devices opened so far, each with one protection domain, one completion
 * queue and its completion channel, whose fd a multishot poll on the
 * engine's ring watches (on wake: take the events, ack them in batches,
 * re-arm, drain). The device's async-event fd is watched the same way.
 * Every registered region is registered with every open device (a memory
 * listener), the first time a device is opened for the regions already
 * there; a deferred region (the server's pool while it is faulted in) per
 * 1 GiB piece, as each piece becomes ready, and work whose local memory is
 * in a piece not registered yet waits on its channel until it is. Work requests staged during a
 * loop round are posted once per round and queue pair (one doorbell for a whole batch).
 *
 * rdma_chan.c — a channel: one RC queue pair with a ring of receive slots
 * (the messages the peer may have outstanding: its credits) and a ring of
 * send slots. A signaled work request carries a struct rdma_wr; the ones
 * before it since the previous signaled one are unsignaled (wr_id 0) and
 * are known complete when it completes. Closing moves the queue pair to the
 * error state (the peer can no longer touch our memory from that moment),
 * then waits until every work request has come back flushed.
 */
#ifndef KVR_RDMA_H
#define KVR_RDMA_H

#include <infiniband/verbs.h>

#include "engine/engine.h"
#include "transport/proto.h"
#include "transport/rdma_msg.h"
#include "transport/rdma_types.h"

#define RDMA_MAX_DEVS 8
#define RDMA_DEPTH    128u /* messages outstanding per queue pair, each way */
#define RDMA_SLOT                                                                                  \
	4672u		    /* bytes of one message slot: a request with a full                    \
			       key and RDMA_MAX_DESC descriptors, or an inline                     \
			       KVR_RMSG_INLINE payload */
#define RDMA_MAX_DESC  256u /* descriptors per request */
#define RDMA_SQ_CLIENT 256u
#define RDMA_SQ_SERVER 1024u

struct rdma_ctx;
struct rdma_dev;
struct rdma_chan;

/* Counters of the verbs work of one engine. */
struct rdma_counters {
	uint64_t wrs;	     /* send work requests posted */
	uint64_t posts;	     /* ibv_post_send calls (doorbells) */
	uint64_t recv_posts; /* ibv_post_recv calls */
	uint64_t wcs;	     /* work completions polled */
	uint64_t cq_events;  /* completion channel wake-ups */
	uint64_t polls;	     /* ibv_poll_cq calls */
};

struct rdma_dev {
	struct rdma_ctx *ctx;
	uint32_t idx;
	char name[IBV_SYSFS_NAME_MAX];
	struct ibv_context *vctx;
	struct ibv_pd *pd;
	struct ibv_comp_channel *cc;
	struct ibv_cq *cq;
	int cq_size; /* entries */
	int cq_need; /* entries the channels on it may need at once */
	uint8_t port;
	uint16_t lid;
	enum ibv_mtu mtu;
	uint32_t max_msg;
	struct ibv_device_attr attr;
	bool ethernet; /* RoCE: addresses are GIDs only */
	int def_gid;   /* default GID index (an IPv4 RoCE v2 one when there is) */
	uint32_t unacked;
	struct kvr_io cc_io, async_io;
	bool cc_armed, async_armed;
	bool dead; /* fatal device event: every channel failed */
};

struct rdma_ctx {
	struct kvr_engine_ext x;
	kvr_engine *e;
	struct kvr_mem_listener ml;
	struct rdma_dev *devs[RDMA_MAX_DEVS];
	uint32_t ndevs;
	struct rdma_chan *chans; /* open channels (staging, errors) */
	struct rdma_chan *dead;	 /* closed, draining or freed next round */
	struct kvr_flush flush;
	uint64_t drains; /* channels still draining (engine destroy waits) */
	uint64_t armed;	 /* multishot polls armed on the ring */
	bool polling;	 /* inside a CQ drain */
	bool closing;	 /* engine destroy: polls are not re-armed */
	struct rdma_counters st;
};

/*
 * Per-region data of the memory listener: its MRs on each device. A region
 * has one MR per device, except a deferred one (kvr_mem_register_deferred,
 * the server's pool while it is faulted in), which has one per 1 GiB piece,
 * registered as the piece becomes ready: registering a piece faults and
 * pins it, seconds per GiB when it is not faulted in yet.
 */
struct rdma_region {
	uint32_t npieces;
	int err[RDMA_MAX_DEVS]; /* why a piece could not be registered there */
	struct ibv_mr *mr[];	/* [device index * npieces + piece] */
};

/* Our side of a queue pair, as it goes into a HELLO. */
struct rdma_chan_ops {
	/* A message arrived in receive slot `slot`, decoded into *m (whose
	 * pointers point into the slot). The slot stays the owner's until
	 * rdma_chan_recv_done(); until then the peer's credit is held. */
	void (*on_msg)(struct rdma_chan *ch, const struct kvr_rmsg *m, uint32_t slot);
	/* The queue pair failed (an error completion, a bad message, a fatal
	 * event): the owner should close the channel. err says why. */
	void (*on_error)(struct rdma_chan *ch, int err);
	/* After rdma_chan_close(): every work request came back; the owner
	 * must not touch ch again (it is freed at the next round). */
	void (*on_drained)(struct rdma_chan *ch);
};

struct rdma_slot_wr {
	struct rdma_wr w;
	uint32_t idx;
};

struct rdma_chan {
	struct rdma_ctx *ctx;
	struct rdma_dev *d;
	const struct rdma_chan_ops *ops;
	void *owner;
	struct rdma_chan *next, *prev; /* ctx->chans, or ctx->dead */
	struct ibv_qp *qp;
	int gid_index;
	union ibv_gid gid;
	uint32_t psn;
	struct kvr_rmsg_limits lim; /* what we accept */
	uint32_t peer_slot;	    /* largest message the peer receives */
	uint32_t peer_desc;	    /* descriptors per request it accepts */
	uint8_t peer_rd_atomic;

	/* receive slots */
	uint32_t depth;
	uint8_t *rbuf;
	struct ibv_mr *rmr;
	struct rdma_slot_wr *rs;
	uint32_t *rq_stage; /* slots to post this round */
	uint32_t nrq_stage;
	uint32_t rq_posted; /* receive WRs outstanding */

	/* send slots (messages we send), reusable once their WR is complete */
	uint32_t nss, ss_next;
	uint64_t *ss_seq;      /* seq of the WR that last used each slot */
	struct rdma_wr *ss_wr; /* a plain completion marker per slot */

	/* send queue */
	uint32_t sq_cap;
	uint64_t sq_seq;  /* WRs staged or posted, ever */
	uint64_t sq_done; /* WRs known complete */
	uint32_t unsig;	  /* unsignaled WRs since the last signaled one */
	uint32_t sig_out; /* signaled WRs posted, not completed */
	uint8_t *sbuf;	  /* nss send slots of RDMA_SLOT bytes */
	struct ibv_mr *smr;
	struct ibv_send_wr *wr; /* this round's WRs (sq_cap) */
	struct ibv_sge *sge;	/* their scatter lists (sq_cap * max_sge) */
	uint32_t nwr, max_sge;
	uint32_t inline_max;
	struct rdma_pending *pend_head, *pend_tail;
	struct rdma_pending *mem_head, *mem_tail; /* waiting for registration */

	struct ibv_recv_wr *rwr; /* for posting the staged receives */
	struct ibv_sge *rsge;
	bool passive; /* the peer reads and writes our memory */

	bool up;      /* RTS */
	bool closing; /* rdma_chan_close ran */
	bool drained; /* on_drained ran */
	bool failed;  /* on_error ran */
	int err;
	struct rdma_wr drain_wr;
};

/* -------------------------------------------------------- rdma_dev.c */

/* The engine's RDMA context, created on first use. NULL with -errno in *err. */
struct rdma_ctx *rdma_ctx_get(kvr_engine *e, int *err);
/* Device `name` (NULL: the first with an active port), opened on first use;
 * its regions registered. NULL with -errno: -ENODEV (none, or no such
 * device: kvr_engine_errmsg names the devices there are), -ENOMEM, or the
 * verbs call's errno (a registration over RLIMIT_MEMLOCK says so). */
struct rdma_dev *rdma_dev_get(struct rdma_ctx *ctx, const char *name, int *err);
/* Region mr's MR on device d when one MR covers all of it, else NULL (not
 * registered there: device memory without GPUDirect, or a deferred region
 * of several pieces, for which see rdma_mr_at). */
struct ibv_mr *rdma_mr_of(const struct rdma_dev *d, const struct kvr_mr *mr);
/* The MR on d covering addr (inside mr) up to kvr_fixed_end(mr, addr) at
 * least, or NULL while that piece is not registered. */
struct ibv_mr *rdma_mr_at(const struct rdma_dev *d, const struct kvr_mr *mr, uintptr_t addr);
/* Whether [addr, addr+len) inside mr is registered on d: 0, -EAGAIN (a
 * piece of a deferred region is not faulted in yet: it will be), or
 * -errno (never: the region has no MR there, or registering a piece
 * failed). */
int rdma_mr_range(const struct rdma_dev *d, const struct kvr_mr *mr, uintptr_t addr, uint64_t len);
/* Reserve / release completion queue entries for a queue pair. 0 or
 * -ENOBUFS (the device's CQ cannot grow that far). */
int rdma_dev_cq_reserve(struct rdma_dev *d, int n);
void rdma_dev_cq_release(struct rdma_dev *d, int n);
/* Drain every device's CQ now (busy polling, and before blocking waits). */
void rdma_ctx_poll(struct rdma_ctx *ctx);
/* ibv_mtu as bytes, for logs. */
unsigned rdma_mtu_bytes(enum ibv_mtu m);

/* -------------------------------------------------------- rdma_chan.c */

/* A channel on device d (gid_index < 0: the device's default), its queue
 * pair in INIT with receives staged for RDMA_DEPTH messages, and `sq_cap`
 * send queue entries. `passive`: the peer may read and write our
 * registered memory (a client's queue pair). lim: what we accept. 0 with
 * *out, or -errno (-ENOBUFS: the device's CQ is full, -EINVAL: no such
 * GID). */
int rdma_chan_new(struct rdma_dev *d, int gid_index, uint32_t sq_cap, bool passive,
		  const struct kvr_rmsg_limits *lim, const struct rdma_chan_ops *ops, void *owner,
		  struct rdma_chan **out);
/* Our queue pair's address for the HELLO. */
void rdma_chan_local(const struct rdma_chan *ch, struct kvr_hello_rdma *out);
/* Connect to the peer's queue pair (INIT -> RTR -> RTS). 0 or -errno
 * (-EPROTO: the peer's block makes no sense for this device). */
int rdma_chan_connect(struct rdma_chan *ch, const struct kvr_hello_rdma *peer);
/* The owner is done with receive slot `slot`: post it again this round. */
void rdma_chan_recv_done(struct rdma_chan *ch, uint32_t slot);
/* Whether nwr WRs (and a send slot, with slot) can be staged now. */
bool rdma_chan_can(const struct rdma_chan *ch, uint32_t nwr, bool slot);
/* Run p once the local memory it names (p->mr) is registered on the
 * channel's device and the send queue has room for it, in order behind
 * work already waiting for room (now, if it has). On a closing channel,
 * p->drop runs instead. p->run must check rdma_mr_range() itself: a piece
 * that failed to register does not wait. */
void rdma_chan_when_room(struct rdma_chan *ch, struct rdma_pending *p);
/* Memory was registered on the channel's device: what waited for it goes on
 * to wait for room (the RDMA context calls this). */
void rdma_chan_mem_ready(struct rdma_chan *ch);
/* Stage one work request (posted this round). wr->sg_list must point to
 * sges from rdma_chan_sges(); wr->wr_id is set here: w (signaled) or 0.
 * The caller checked the room. */
struct ibv_send_wr *rdma_chan_stage(struct rdma_chan *ch, struct rdma_wr *w);
/* A send slot for the message of the WR about to be staged (valid until
 * that WR completes); the caller checked rdma_chan_can(.., true). */
uint8_t *rdma_chan_send_slot(struct rdma_chan *ch);
/* A completion marker for the send slot just taken, for a WR that only
 * needs signaling (its completion frees the send queue and slots). */
struct rdma_wr *rdma_chan_slot_wr(struct rdma_chan *ch);
/* Memory key of the send slots. */
uint32_t rdma_chan_send_lkey(const struct rdma_chan *ch);
/* Scatter entries for the WR about to be staged (at most ch->max_sge). */
struct ibv_sge *rdma_chan_sges(struct rdma_chan *ch);
/* Close: the queue pair goes to the error state now (no more remote access
 * to our memory), everything in flight comes back flushed; on_drained
 * follows. Idempotent. */
void rdma_chan_close(struct rdma_chan *ch, int err);
/* Post what this round staged (called from the context's flush). */
void rdma_chan_flush(struct rdma_chan *ch);
/* A completion of ch was handled: run work waiting for the room it freed,
 * or, closing, see whether ch has drained. */
void rdma_chan_completed(struct rdma_chan *ch);
/* The channel failed: tell the owner once. */
void rdma_chan_fail(struct rdma_chan *ch, int err);
/* Free a drained channel (the context does this). */
void rdma_chan_free(struct rdma_chan *ch);

/* The default signaling rule: signal at least every quarter of the send
 * queue or of the send slots, so unsignaled WRs never hold either up. */
static inline bool rdma_chan_should_signal(const struct rdma_chan *ch)
{
	uint32_t lim = (ch->sq_cap < ch->nss ? ch->sq_cap : ch->nss) / 4;

	return ch->unsig + 1 >= lim;
}

#endif
