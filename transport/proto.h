/* SPDX-License-Identifier: MIT */
/*
 * The TCP transport's wire format (docs/protocol.md), as pure functions over
 * byte buffers: no I/O and no allocation on the decode path, so a connection
 * can feed whatever it has received so far and every byte sequence can be
 * fuzzed without a socket. Everything on the wire is little-endian.
 */
#ifndef KVR_PROTO_H
#define KVR_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kvring.h"

#define KVR_PROTO_MAGIC	  0x5052564bu /* "KVRP" as it appears on the wire */
#define KVR_PROTO_VERSION 1
#define KVR_PROTO_HDR_LEN 32

/* Default limits; a server may lower them, never needs to raise them. */
#define KVR_PROTO_MAX_PAYLOAD (16ull << 30)
#define KVR_PROTO_MAX_HELLO   4096u

/* Hello body: fixed part, then up to KVR_PROTO_MAX_AUTH bytes of auth tag,
 * then (KVR_PROTO_FEAT_RDMA) the queue pair block. */
#define KVR_PROTO_HELLO_FIXED 17
#define KVR_PROTO_MAX_AUTH    64
#define KVR_PROTO_HELLO_RDMA  36
#define KVR_PROTO_HELLO_MAX   (KVR_PROTO_HELLO_FIXED + KVR_PROTO_MAX_AUTH + KVR_PROTO_HELLO_RDMA)

enum kvr_proto_op {
	KVR_PROTO_OP_HELLO = 1,
	KVR_PROTO_OP_PUT = 2,
	KVR_PROTO_OP_GET = 3,
	KVR_PROTO_OP_EXISTS = 4,
	KVR_PROTO_OP_REMOVE = 5,
	KVR_PROTO_OP_STATS = 6,
};

enum {
	KVR_PROTO_F_RESPONSE = 1u << 0,
	/* GET response with a payload: 4 more bytes follow it, the crc32c of
	 * the stored object (only to a client that asked, KVR_PROTO_FEAT_CRC) */
	KVR_PROTO_F_CRC = 1u << 1,
	KVR_PROTO_F_KNOWN = KVR_PROTO_F_RESPONSE | KVR_PROTO_F_CRC,
};
#define KVR_PROTO_CRC_LEN 4

/*
 * A decoded header. Fields hold host-order values; magic, version and the
 * reserved field are implied (an accepted frame has the only legal values).
 */
struct kvr_frame {
	uint8_t opcode;	      /* enum kvr_proto_op */
	uint16_t flags;	      /* KVR_PROTO_F_* */
	uint64_t id;	      /* request id, echoed in the response */
	int32_t status;	      /* 0, or a negative errno in a response */
	uint16_t key_len;     /* bytes of key following the header */
	uint64_t payload_len; /* bytes following the key (not the crc trailer) */
	uint32_t crc;	      /* KVR_PROTO_F_CRC: the trailer, once received */
};

/* Bytes after the payload: the crc trailer of a KVR_PROTO_F_CRC frame. */
static inline uint32_t kvr_frame_trailer(const struct kvr_frame *f)
{
	return f->flags & KVR_PROTO_F_CRC ? KVR_PROTO_CRC_LEN : 0;
}

struct kvr_proto_limits {
	uint64_t max_payload; /* PUT request / GET response object bytes */
	uint32_t max_hello;   /* HELLO body and STATS response body */
};

/* The limits used when kvr_proto_decode() is given NULL. */
extern const struct kvr_proto_limits kvr_proto_default_limits;

static inline bool kvr_frame_is_response(const struct kvr_frame *f)
{
	return f->flags & KVR_PROTO_F_RESPONSE;
}

/*
 * Validate the header at the start of buf. Returns KVR_PROTO_HDR_LEN and
 * fills *out when a complete, valid header is there; otherwise a negative
 * errno (see docs/protocol.md): -EAGAIN (len too short, and the bytes so far
 * are a valid start: magic and version are checked as far as they go), -EPROTO (magic),
 * -EPROTONOSUPPORT (version), -EBADMSG (malformed), -EMSGSIZE (a length over
 * its limit or present where none is allowed). *out is untouched on error.
 */
int kvr_proto_decode(const void *buf, size_t len, const struct kvr_proto_limits *lim,
		     struct kvr_frame *out);

/* Write f's header (KVR_PROTO_HDR_LEN bytes) into buf; returns that size.
 * f is trusted: callers build it, only decode sees hostile bytes. */
size_t kvr_proto_encode(void *buf, const struct kvr_frame *f);

/* HELLO feature bits. */
enum {
	/* Response: the server wants authentication; auth holds a nonce the
	 * client answers in a second HELLO with HMAC-SHA256(secret, nonce). */
	KVR_PROTO_FEAT_AUTH = 1u << 0,
	/* Both ways: requests and answers travel over an RDMA queue pair
	 * whose address follows the auth bytes (struct kvr_hello_rdma); this
	 * connection stays open as its control channel. */
	KVR_PROTO_FEAT_RDMA = 1u << 1,
	/* Request: the client checks GET payloads itself against a crc32c
	 * trailer (KVR_PROTO_F_CRC); response: the server sends them, and no
	 * longer checks the objects it sends (the client does, end to end). */
	KVR_PROTO_FEAT_CRC = 1u << 2,
};

/* How to reach one side's RC queue pair (docs/protocol.md, "RDMA"). */
struct kvr_hello_rdma {
	uint8_t gid[16];
	uint32_t qpn;
	uint32_t psn;	   /* first packet sequence number (24 bits) */
	uint16_t lid;	   /* InfiniBand local id (0 on RoCE) */
	uint8_t mtu;	   /* enum ibv_mtu of the port (1..5) */
	uint8_t rd_atomic; /* RDMA READs it accepts in flight (responder) */
	uint16_t depth;	   /* messages the other side may have outstanding */
	uint16_t max_desc; /* descriptors per request it accepts */
	uint32_t slot;	   /* largest message it receives, in bytes */
};

/* Shard a client asks for when it does not care which. */
#define KVR_PROTO_ANY_SHARD 0xffffu
/* Most shards a server has (kvr_server_group_create); a client opens a
 * connection per shard, so a HELLO announcing more is a protocol error. */
#define KVR_PROTO_MAX_SHARDS 1024u
#define KVR_PROTO_NONCE_LEN  32
#define KVR_PROTO_TAG_LEN    32

/*
 * The HELLO body both sides send: a version range, the shard (request: the
 * one wanted or KVR_PROTO_ANY_SHARD; response: the one this connection
 * serves, out of `shards`), feature bits, and an auth nonce or tag.
 */
struct kvr_hello {
	uint16_t version_min;
	uint16_t version_max;
	uint16_t shard;
	uint16_t shards;
	uint64_t features;
	uint8_t auth_len; /* 0 (no auth) .. KVR_PROTO_MAX_AUTH */
	uint8_t auth[KVR_PROTO_MAX_AUTH];
	struct kvr_hello_rdma rdma; /* with KVR_PROTO_FEAT_RDMA */
};

/* Returns bytes written, -EMSGSIZE (auth_len over the limit or cap short)
 * or -EBADMSG (empty or inverted version range). */
int kvr_proto_hello_encode(void *buf, size_t cap, const struct kvr_hello *h);
/* buf/len is exactly the HELLO payload. Returns len, -EMSGSIZE (auth tag
 * over the limit) or -EBADMSG (short, trailing bytes, empty or inverted
 * version range, an RDMA block with an MTU, depth, descriptor count or
 * slot size out of range). */
int kvr_proto_hello_decode(const void *buf, size_t len, struct kvr_hello *out);

/*
 * Authentication: the server's HELLO response carries a fresh random nonce
 * (KVR_PROTO_FEAT_AUTH); the client answers with this tag in its second
 * HELLO. The tag binds the protocol name too, so a tag made for anything
 * else never verifies. Returns 0 or -EINVAL (secret empty or over 4096).
 */
#define KVR_PROTO_MAX_SECRET 4096
int kvr_proto_auth_tag(const void *secret, size_t secret_len,
		       const uint8_t nonce[KVR_PROTO_NONCE_LEN], uint8_t tag[KVR_PROTO_TAG_LEN]);
/* Constant-time check of a received tag (len bytes) against the expected one. */
bool kvr_proto_auth_check(const void *secret, size_t secret_len,
			  const uint8_t nonce[KVR_PROTO_NONCE_LEN], const uint8_t *tag, size_t len);
/* Fill a nonce from the kernel's random source. 0 or -errno. */
int kvr_proto_nonce(uint8_t nonce[KVR_PROTO_NONCE_LEN]);

/*
 * Split "HOST:PORT" or "[V6]:PORT" (an IPv6 address needs the brackets).
 * host (under hcap bytes, NUL-terminated) may come out empty; *port is
 * 0..65535. 0, or -EINVAL (no port, a bad port, a host too long).
 */
int kvr_proto_hostport(const char *s, char *host, size_t hcap, int *port);

/*
 * The options of an rdma:// URI after its '?': "dev=NAME" (the verbs device,
 * under devcap bytes) and "gid=N" (GID index 0..255), joined by '&'. *gid
 * is left alone unless given. 0, or -EINVAL with a message in msg.
 */
int kvr_proto_rdma_opts(const char *q, char *dev, size_t devcap, int *gid, char *msg,
			size_t msgcap);

/*
 * Request ids in flight on one connection, to reject a duplicate before it
 * can confuse response matching. Open addressing with linear probing and
 * backward-shift deletion (no tombstones, so the table never degrades).
 */
struct kvr_proto_ids {
	uint64_t *keys;
	uint8_t *used;
	uint32_t mask; /* slots - 1; slots is a power of two >= 2 * cap */
	uint32_t cap;  /* most ids held at once */
	uint32_t count;
};

/* Allocates once. -EINVAL (cap 0 or over 1 << 24), -ENOMEM. */
int kvr_proto_ids_init(struct kvr_proto_ids *s, uint32_t cap);
void kvr_proto_ids_free(struct kvr_proto_ids *s);
/* 0, -EEXIST (already in flight) or -ENOSPC (cap ids held). */
int kvr_proto_ids_insert(struct kvr_proto_ids *s, uint64_t id);
/* 0 or -ENOENT. */
int kvr_proto_ids_remove(struct kvr_proto_ids *s, uint64_t id);
bool kvr_proto_ids_contains(const struct kvr_proto_ids *s, uint64_t id);

#endif
