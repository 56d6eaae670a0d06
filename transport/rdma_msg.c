/* SPDX-License-Identifier: MIT */
/* RDMA transport messages (see rdma_msg.h): encode and validate. */
#include "transport/rdma_msg.h"
#include "transport/le.h"

#include <endian.h>
#include <errno.h>
#include <string.h>

#define O_MAGIC	  0
#define O_VERSION 4
#define O_OPCODE  5
#define O_FLAGS	  6
#define O_RESV	  7
#define O_ID	  8
#define O_STATUS  16
#define O_KEYLEN  KVR_RMSG_O_KEYLEN
#define O_NDESC	  KVR_RMSG_O_NDESC
#define O_PAYLOAD 24
_Static_assert(O_PAYLOAD + 8 == KVR_RMSG_HDR_LEN, "header size");

#define MAX_ERRNO 4095

struct kvr_rdesc kvr_rmsg_desc(const struct kvr_rmsg *m, uint32_t i)
{
	const uint8_t *p = m->desc + (size_t)i * KVR_RMSG_DESC;

	return (struct kvr_rdesc){kvr_get64(p), kvr_get32(p + 8), kvr_get32(p + 12)};
}

static bool keyed(uint8_t op)
{
	return op >= KVR_PROTO_OP_PUT && op <= KVR_PROTO_OP_REMOVE;
}

/* Descriptors: each non-empty and not wrapping; their sum into *sum. */
static int check_desc(const uint8_t *d, uint16_t n, uint64_t *sum)
{
	uint64_t s = 0;

	for (uint32_t i = 0; i < n; i++, d += KVR_RMSG_DESC) {
		uint64_t addr = kvr_get64(d);
		uint32_t len = kvr_get32(d + 12);

		if (!len || addr + len < addr)
			return -EBADMSG;
		s += len; /* at most 65535 * (2^32 - 1): no overflow */
	}
	*sum = s;
	return 0;
}

static int check_request(const struct kvr_rmsg *m, const struct kvr_rmsg_limits *lim,
			 uint64_t desc_sum)
{
	bool inl = m->flags & KVR_RMSG_F_INLINE;

	if (m->status != 0)
		return -EBADMSG;
	switch (m->opcode) {
	case KVR_PROTO_OP_PUT:
		if (m->payload_len <= KVR_RMSG_INLINE) {
			if (!inl || m->ndesc)
				return -EBADMSG;
			return 0;
		}
		if (inl || !m->ndesc || desc_sum != m->payload_len)
			return -EBADMSG;
		return m->payload_len > lim->max_payload ? -EMSGSIZE : 0;
	case KVR_PROTO_OP_GET:
		if (inl || !m->ndesc || desc_sum != m->payload_len)
			return -EBADMSG;
		return 0; /* a capacity may exceed any object */
	default:	  /* EXISTS, REMOVE, STATS */
		return inl || m->ndesc || m->payload_len ? -EBADMSG : 0;
	}
}

static int check_response(const struct kvr_rmsg *m, const struct kvr_rmsg_limits *lim)
{
	bool inl = m->flags & KVR_RMSG_F_INLINE;

	if (m->status > 0 || m->status < -MAX_ERRNO || m->key_len || m->ndesc)
		return -EBADMSG;
	if (m->status < 0)
		return inl || m->payload_len ? -EBADMSG : 0;
	switch (m->opcode) {
	case KVR_PROTO_OP_GET:
		if (inl)
			return -EBADMSG;
		return m->payload_len > lim->max_payload ? -EMSGSIZE : 0;
	case KVR_PROTO_OP_EXISTS:
		return inl && m->payload_len == 8 ? 0 : -EBADMSG;
	case KVR_PROTO_OP_STATS:
		return inl ? 0 : -EBADMSG;
	default: /* PUT, REMOVE */
		return inl || m->payload_len ? -EBADMSG : 0;
	}
}

int kvr_rmsg_decode(const void *buf, size_t len, const struct kvr_rmsg_limits *lim,
		    struct kvr_rmsg *out)
{
	const uint8_t *p = buf;
	struct kvr_rmsg m;
	uint64_t sum = 0;
	size_t need;
	bool resp;
	int rc;

	if (len < KVR_RMSG_HDR_LEN)
		return -EBADMSG;
	if (kvr_get32(p + O_MAGIC) != KVR_RMSG_MAGIC)
		return -EPROTO;
	if (p[O_VERSION] != KVR_PROTO_VERSION)
		return -EPROTONOSUPPORT;
	memset(&m, 0, sizeof(m));
	m.opcode = p[O_OPCODE];
	m.flags = p[O_FLAGS];
	m.id = kvr_get64(p + O_ID);
	m.status = (int32_t)kvr_get32(p + O_STATUS);
	m.key_len = kvr_get16(p + O_KEYLEN);
	m.ndesc = kvr_get16(p + O_NDESC);
	m.payload_len = kvr_get64(p + O_PAYLOAD);
	resp = m.flags & KVR_RMSG_F_RESPONSE;

	if (m.opcode < KVR_PROTO_OP_PUT || m.opcode > KVR_PROTO_OP_STATS)
		return -EBADMSG;
	if ((m.flags & ~(KVR_RMSG_F_RESPONSE | KVR_RMSG_F_INLINE)) || p[O_RESV])
		return -EBADMSG;
	if (m.key_len > KVR_MAX_KEY || m.ndesc > lim->max_desc)
		return -EMSGSIZE;
	if (!resp && keyed(m.opcode) != (m.key_len != 0))
		return -EBADMSG;
	if ((m.flags & KVR_RMSG_F_INLINE) && m.payload_len > lim->max_inline)
		return -EMSGSIZE;
	/* Lengths are bounded now, so the sum cannot overflow. */
	need = kvr_rmsg_size(m.key_len, m.ndesc, m.flags & KVR_RMSG_F_INLINE ? m.payload_len : 0);
	if (len != need)
		return -EBADMSG;
	m.key = m.key_len ? p + KVR_RMSG_HDR_LEN : NULL;
	m.desc = m.ndesc ? p + KVR_RMSG_HDR_LEN + m.key_len : NULL;
	m.inl = m.flags & KVR_RMSG_F_INLINE ? p + KVR_RMSG_HDR_LEN + m.key_len : NULL;
	if (m.ndesc) {
		rc = check_desc(m.desc, m.ndesc, &sum);
		if (rc)
			return rc;
	}
	rc = resp ? check_response(&m, lim) : check_request(&m, lim, sum);
	if (rc)
		return rc;
	*out = m;
	return 0;
}

void kvr_rmsg_encode_hdr(void *buf, const struct kvr_rmsg *m)
{
	uint8_t *p = buf;

	kvr_put32(p + O_MAGIC, KVR_RMSG_MAGIC);
	p[O_VERSION] = KVR_PROTO_VERSION;
	p[O_OPCODE] = m->opcode;
	p[O_FLAGS] = m->flags;
	p[O_RESV] = 0;
	kvr_put64(p + O_ID, m->id);
	kvr_put32(p + O_STATUS, (uint32_t)m->status);
	kvr_put16(p + O_KEYLEN, m->key_len);
	kvr_put16(p + O_NDESC, m->ndesc);
	kvr_put64(p + O_PAYLOAD, m->payload_len);
}

void kvr_rmsg_put_desc(uint8_t *p, const struct kvr_rdesc *d)
{
	kvr_put64(p, d->addr);
	kvr_put32(p + 8, d->rkey);
	kvr_put32(p + 12, d->len);
}

int kvr_rmsg_encode(void *buf, size_t cap, const struct kvr_rmsg *m, const struct kvr_rdesc *desc,
		    const void *inl)
{
	uint8_t *p = buf;
	size_t need = kvr_rmsg_size(m->key_len, m->ndesc, inl ? m->payload_len : 0);

	if (cap < need)
		return -EMSGSIZE;
	kvr_rmsg_encode_hdr(p, m);
	p += KVR_RMSG_HDR_LEN;
	if (m->key_len)
		memcpy(p, m->key, m->key_len);
	p += m->key_len;
	for (uint32_t i = 0; i < m->ndesc; i++, p += KVR_RMSG_DESC)
		kvr_rmsg_put_desc(p, &desc[i]);
	if (inl && m->payload_len)
		memcpy(p, inl, m->payload_len);
	return (int)need;
}
