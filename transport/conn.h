/* SPDX-License-Identifier: MIT */
/*
 * A framed kvring connection (docs/protocol.md) driven by the engine's ring,
 * shared by the client (transport/tcp.c) and the server (transport/serve.c)
 * so framing and its error handling exist once.
 *
 * Receive: one recv in flight. Small frames arrive through a staging buffer
 * and are handed over in place; a payload over KVR_CONN_SMALL goes straight
 * into the owner's memory with recvmsg(MSG_WAITALL); one of at least
 * KVR_CONN_LOWAT_MIN bytes with plain recvmsg calls under SO_RCVLOWAT = the
 * bytes still due (at most KVR_CONN_LOWAT_MAX), so the kernel wakes the
 * loop once a payload (or a large part of it) is in, not once per segment
 * (each wake costs the sending side too: on loopback it runs the
 * receiver's TCP stack and the wake-up itself). After a large frame the
 * next recv asks for exactly the header (and key), so a stream of large
 * objects never passes through the staging buffer; only a payload that
 * follows small frames in the same recv has its first bytes copied
 * (counted in rx_copied).
 *
 * Send: frames queue on the connection and go out once per loop round in
 * one sendmsg (header, key and payload iovecs gathered, up to IOV_MAX);
 * when a payload of at least zc_min bytes is in it, the sendmsg is
 * zero-copy and the frames' buffers are held until the kernel's
 * notification. Two sends may be in flight (the next is built while the
 * previous one waits for its notification). Where the kernel reports that
 * it copied the "zero-copy" bytes anyway (loopback, veth, a device without
 * scatter-gather: kernel 6.2 and later tell), the connection switches to
 * plain sends, which then cost less for the same copy.
 */
#ifndef KVR_CONN_H
#define KVR_CONN_H

#include <sys/socket.h>
#include <sys/uio.h>

#include "engine/engine.h"
#include "engine/sgl.h"
#include "transport/proto.h"

/* Payloads up to this size are delivered in place from the staging buffer. */
#define KVR_CONN_SMALL	 4096u
#define KVR_CONN_STAGING (64u << 10)
/* Payloads from this size are received under SO_RCVLOWAT (see above). The
 * cap keeps the receiver copying while the sender still sends: with the
 * whole payload due at once, a lone 1 MiB object was copied in by the
 * sender and only then out by the receiver, one after the other (queue
 * depth 1: 256 KiB against 4 MiB took a 1 MiB get from 0.7-1.35 to
 * 1.5-2.6 GB/s, put from 0.8-3.0 to 2.0-2.7; with 32 objects in flight
 * both stayed at 3.0-3.1 GB/s). */
#define KVR_CONN_LOWAT_MIN (64u << 10)
#define KVR_CONN_LOWAT_MAX (256u << 10)
/* iovecs of one sendmsg: the kernel's UIO_MAXIOV. */
#define KVR_CONN_IOV 1024u

struct kvr_conn;

/* on_frame's answer for a frame the owner cannot take yet (see there). */
#define KVR_CONN_DEFER 1

/* Where a large payload goes: an SGL covering at least payload_len bytes;
 * it must stay valid until on_payload. nsge 0 discards the payload. With
 * crc set, *crc is the crc32c of the payload at on_payload, computed recv
 * by recv as its bytes land (while the rest is still on the way, so a
 * check costs the last recv's bytes only, not a second pass at the end). */
struct kvr_rx_dest {
	const struct kvr_sgx *sgx;
	uint32_t nsge;
	uint32_t *crc;
};

struct kvr_conn_ops {
	/* The connect started by kvr_conn_connect() finished: 0 or -errno
	 * (after an error, on_close follows). Optional. */
	void (*on_open)(struct kvr_conn *c, int err);
	/*
	 * A frame arrived: header f, key (f->key_len bytes, NULL if none).
	 * payload_len <= KVR_CONN_SMALL: `small` holds the whole payload (NULL
	 * when empty), the frame is complete at return and no on_payload follows.
	 * Larger: `small` is NULL; set *dst (or leave it empty to discard) and
	 * on_payload(c, f) follows once the payload is in. Pointers are valid
	 * only during the call. Return 0; KVR_CONN_DEFER to refuse the frame
	 * for now (the owner has no room for it: it stays unread in the staging
	 * buffer, receiving pauses, and the same frame comes again after
	 * kvr_conn_resume; nothing of it may have been kept); or a negative
	 * errno to close the connection as a protocol violation (logged with
	 * the reason).
	 */
	int (*on_frame)(struct kvr_conn *c, const struct kvr_frame *f, const uint8_t *key,
			const uint8_t *small, struct kvr_rx_dest *dst);
	/* The large payload of frame f is in dst (or was discarded); with
	 * KVR_PROTO_F_CRC, f->crc holds its trailer. */
	void (*on_payload)(struct kvr_conn *c, const struct kvr_frame *f);
	/*
	 * The connection is finished: err is 0 for an orderly close by the peer
	 * or by kvr_conn_close(), else why (-ECONNRESET, -EPROTO, a timeout's
	 * -ETIMEDOUT...). No SQE of c is in flight and every queued frame's
	 * done() has run. The owner may free c (after kvr_conn_fini) here.
	 */
	void (*on_close)(struct kvr_conn *c, int err);
};

/* One frame to send. The owner fills it via kvr_conn_send(); the header,
 * key and payload memory must stay valid until done() runs. */
struct kvr_tx {
	struct kvr_tx *next;
	/* err 0: the kernel has the bytes and no longer needs the buffers;
	 * <0: not (fully) sent because the connection died or the frame was
	 * dropped at close. Called from the loop, never from kvr_conn_send. */
	void (*done)(struct kvr_tx *tx, int err);
	const uint8_t *key;
	const struct kvr_sgx *sgx; /* payload SGL, frame payload_len bytes */
	uint32_t nsge;
	uint16_t key_len;
	uint8_t state; /* private to conn.c */
	uint64_t payload_len;
	uint8_t hdr[KVR_PROTO_HDR_LEN];
	uint8_t trailer[KVR_PROTO_CRC_LEN]; /* KVR_PROTO_F_CRC: f->crc, sent last */
	uint8_t trailer_len;
};

/* A sendmsg in flight and the frames it carries. */
struct kvr_conn_send {
	struct kvr_io io;
	struct kvr_conn *c;
	struct kvr_tx *head, *tail; /* frames in this send */
	struct msghdr msg;
	uint32_t niov, iov_off; /* iovecs built; first one not fully sent */
	uint32_t notifs;	/* zero-copy notifications still due */
	bool busy, zc, in_flight;
	bool report; /* zero-copy with IORING_SEND_ZC_REPORT_USAGE */
	struct iovec iov[KVR_CONN_IOV];
};

struct kvr_conn_stats {
	uint64_t frames_in, frames_out;
	uint64_t bytes_in, bytes_out;
	uint64_t rx_copied; /* payload bytes copied out of the staging buffer */
	uint64_t zc_sends, plain_sends, recvs;
	uint64_t zc_copied; /* zero-copy sends the kernel reported it copied */
};

struct kvr_conn {
	const struct kvr_conn_ops *ops;
	kvr_engine *e;
	void *owner;
	int fd;
	int err; /* first error; the close reason */
	const struct kvr_proto_limits *lim;
	uint32_t zc_min;
	bool open, closing, closed;
	const char *name; /* for log lines ("client 127.0.0.1:5000") */

	/* receive */
	struct kvr_io rx_io;
	bool rx_in_flight;
	bool rx_large; /* last frame was large: read headers exactly */
	uint8_t *stage;
	uint32_t head, tail; /* unparsed bytes: stage[head, tail) */
	int rx_state;	     /* private to conn.c */
	struct kvr_frame rx_f;
	uint64_t rx_left;  /* payload bytes still to receive */
	uint32_t rx_tleft; /* crc trailer bytes still to receive */
	uint8_t rx_trailer[KVR_PROTO_CRC_LEN];
	struct kvr_sgl rx_cur; /* the large payload's destination and position,
				  with its running crc32c when asked */
	struct msghdr rx_msg;
	struct iovec rx_iov[KVR_MAX_SGE + 1]; /* the SGL's slices, then the crc trailer */
	int rx_lowat;	/* SO_RCVLOWAT now set on fd (1: the kernel's default) */
	bool rx_paused; /* kvr_conn_pause (or a deferred frame): no frame is
			   handed over and no recv for headers is posted */
	bool rx_resume; /* kvr_conn_resume: go on at the next flush */

	/* send */
	struct kvr_tx *q_head, *q_tail; /* queued, not yet in a send */
	struct kvr_conn_send send[2];
	struct kvr_flush flush;

	/* open / close */
	struct kvr_io conn_io;
	struct sockaddr_storage peer;
	socklen_t peer_len;
	bool zc_ok;	  /* use SENDMSG_ZC: the ring has it, and it was not
			     found to be copied on this path */
	uint32_t zc_real; /* notifications that reported a true zero-copy */
	uint32_t sqes;	  /* SQEs of this connection in flight */

	struct kvr_conn_stats st;
};

/* Set up c (not yet connected). Allocates the staging buffer; 0 or -ENOMEM. */
int kvr_conn_init(struct kvr_conn *c, kvr_engine *e, const struct kvr_conn_ops *ops, void *owner,
		  const struct kvr_proto_limits *lim, uint32_t zc_min);
/* Free what init allocated; c must be closed (on_close ran) or never opened. */
void kvr_conn_fini(struct kvr_conn *c);

/* Connect to sa through the ring; on_open reports the result. 0 or -errno
 * (socket creation failed; nothing was started). */
int kvr_conn_connect(struct kvr_conn *c, const struct sockaddr *sa, socklen_t len);
/* Serve an accepted socket: takes ownership of fd and starts receiving. */
void kvr_conn_adopt(struct kvr_conn *c, int fd);

/* Queue frame f (header encoded here) with tx's key and payload. Sent at the
 * end of this loop round. If the connection is closing, tx->done() reports
 * the close reason once it has finished closing; c must not be used after
 * on_close. */
void kvr_conn_send(struct kvr_conn *c, struct kvr_tx *tx, const struct kvr_frame *f);
/* Remove tx if it is still queued (no byte of it sent): true, and done() is
 * not called. false: it is (partly) in the kernel's hands. */
bool kvr_conn_unsend(struct kvr_conn *c, struct kvr_tx *tx);

/* Close: stop receiving, cancel what is in flight, fail queued frames with
 * err (0 for an orderly close), then on_close(err). Idempotent. */
void kvr_conn_close(struct kvr_conn *c, int err);

/*
 * Flow control by the owner. kvr_conn_pause stops handing frames to
 * on_frame (from the next one; callable from on_frame) and stops receiving
 * once the current frame's payload, if any, is in: the peer's further bytes
 * wait in the socket, and TCP pushes back on it. kvr_conn_resume goes on
 * where it stopped; held frames are handed over from the loop's next flush,
 * never from inside the call. Both are idempotent; neither is needed by an
 * owner that never pauses.
 */
void kvr_conn_pause(struct kvr_conn *c);
void kvr_conn_resume(struct kvr_conn *c);

/* Frames queued or in a send not yet finished. */
bool kvr_conn_tx_idle(const struct kvr_conn *c);

#endif
