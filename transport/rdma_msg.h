/* SPDX-License-Identifier: MIT */
/*
 * The messages of the RDMA transport (docs/protocol.md, "RDMA"): one SEND
 * per request and one per answer on an RC queue pair, as pure functions
 * over byte buffers so that every byte sequence can be tested without a
 * device. A request names the client's memory as descriptors (address,
 * rkey, length); the server moves the bytes itself with RDMA READ (put) and
 * RDMA WRITE (get), so the client never learns a server's rkey. Small put
 * payloads travel inline instead.
 *
 *   0  u32 magic "KVRD"    4 u8 version 1   5 u8 opcode (enum kvr_proto_op)
 *   6  u8 flags            7 u8 reserved 0  8 u64 request id
 *   16 i32 status          20 u16 key length  22 u16 descriptors
 *   24 u64 payload length
 *   32 key, then descriptors (16 bytes each: u64 addr, u32 rkey, u32 len)
 *      or the inline payload
 */
#ifndef KVR_RDMA_MSG_H
#define KVR_RDMA_MSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "transport/proto.h"

#define KVR_RMSG_MAGIC	 0x4452564bu /* "KVRD" on the wire */
#define KVR_RMSG_HDR_LEN 32
#define KVR_RMSG_DESC	 16
/* Offsets of the header's key length and descriptor count. */
#define KVR_RMSG_O_KEYLEN 20
#define KVR_RMSG_O_NDESC  22
/* Largest inline payload: put payloads up to this size travel inline (and
 * must), as the TCP transport's small frames do. */
#define KVR_RMSG_INLINE 4096u

enum {
	KVR_RMSG_F_RESPONSE = 1u << 0,
	KVR_RMSG_F_INLINE = 1u << 1, /* the payload follows the key */
};

struct kvr_rdesc {
	uint64_t addr;
	uint32_t rkey;
	uint32_t len;
};

/* A decoded message. key, desc and inl point into the buffer decoded. */
struct kvr_rmsg {
	uint8_t opcode;
	uint8_t flags;
	uint64_t id;
	int32_t status;
	uint16_t key_len;
	uint16_t ndesc;
	uint64_t payload_len; /* put: object bytes; get request: capacity
				 (the descriptors' sum); get answer: bytes
				 written; inline: the inline bytes */
	const uint8_t *key;
	const uint8_t *desc; /* ndesc raw descriptors: kvr_rmsg_desc() */
	const uint8_t *inl;  /* KVR_RMSG_F_INLINE: payload_len bytes */
};

/* What a receiver accepts. */
struct kvr_rmsg_limits {
	uint16_t max_desc;    /* descriptors per request */
	uint32_t max_inline;  /* inline bytes (answers: STATS, EXISTS) */
	uint64_t max_payload; /* object bytes */
};

/*
 * Validate the message in buf[0, len) (exactly one message: a SEND's bytes).
 * Returns 0 and fills *out, or a negative errno: -EPROTO (magic),
 * -EPROTONOSUPPORT (version), -EBADMSG (short, trailing bytes, unknown
 * opcode or flag, reserved set, status where none belongs, a key where none
 * belongs or none where one must be, descriptors on an op that takes none,
 * a put whose descriptors' sum differs from its length, a put of at most
 * KVR_RMSG_INLINE bytes that is not inline or a larger one that is, a
 * zero-length descriptor, a descriptor whose range wraps), -EMSGSIZE (key,
 * descriptor count, inline bytes or payload over the limits).
 * *out is untouched on error.
 */
int kvr_rmsg_decode(const void *buf, size_t len, const struct kvr_rmsg_limits *lim,
		    struct kvr_rmsg *out);

/* Descriptor i of a decoded message (i < ndesc). */
struct kvr_rdesc kvr_rmsg_desc(const struct kvr_rmsg *m, uint32_t i);

/*
 * Encode a message's header, key and descriptors (or copy the inline
 * payload when inl is not NULL) into buf. Returns the bytes written, or
 * -EMSGSIZE when cap is short. m is trusted (callers build it); the
 * descriptors come from desc[0, m->ndesc).
 */
int kvr_rmsg_encode(void *buf, size_t cap, const struct kvr_rmsg *m, const struct kvr_rdesc *desc,
		    const void *inl);

/* Bytes of a message with this key, descriptor count and inline bytes. */
static inline size_t kvr_rmsg_size(uint16_t key_len, uint32_t ndesc, uint64_t inl)
{
	return KVR_RMSG_HDR_LEN + key_len + (size_t)ndesc * KVR_RMSG_DESC + inl;
}

/* Write descriptor d at p (KVR_RMSG_DESC bytes). */
void kvr_rmsg_put_desc(uint8_t *p, const struct kvr_rdesc *d);

/* Write just the header (for a message whose key and inline bytes are
 * gathered from elsewhere by the SEND's scatter list). */
void kvr_rmsg_encode_hdr(void *buf, const struct kvr_rmsg *m);

#endif
