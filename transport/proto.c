/* SPDX-License-Identifier: MIT */
/*
 * Wire header and HELLO body codecs plus the per-connection request-id set.
 * Decoding trusts nothing: every field is range-checked before it is used
 * and lengths are only ever compared against limits, never added, so a
 * hostile header cannot overflow anything.
 */
#include "transport/proto.h"
#include "transport/le.h"

#include <endian.h>
#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

/* Offsets of the header fields; docs/protocol.md has the same table. */
#define OFF_MAGIC    0
#define OFF_VERSION  4
#define OFF_OPCODE   5
#define OFF_FLAGS    6
#define OFF_ID	     8
#define OFF_STATUS   16
#define OFF_KEYLEN   20
#define OFF_RESERVED 22
#define OFF_PAYLOAD  24

_Static_assert(OFF_PAYLOAD + 8 == KVR_PROTO_HDR_LEN, "header layout");
_Static_assert(KVR_PROTO_HDR_LEN % 8 == 0, "header keeps 8-byte alignment");
_Static_assert(KVR_MAX_KEY <= UINT16_MAX, "key length fits its field");
_Static_assert(KVR_PROTO_HELLO_MAX <= KVR_PROTO_MAX_HELLO, "hello fits the default");

/* The largest errno a response may carry; anything beyond is not an errno. */
#define MAX_ERRNO 4095

const struct kvr_proto_limits kvr_proto_default_limits = {
    .max_payload = KVR_PROTO_MAX_PAYLOAD,
    .max_hello = KVR_PROTO_MAX_HELLO,
};

static bool op_has_key(uint8_t op)
{
	return op == KVR_PROTO_OP_PUT || op == KVR_PROTO_OP_GET || op == KVR_PROTO_OP_EXISTS ||
	       op == KVR_PROTO_OP_REMOVE;
}

/* Largest payload the opcode allows in this direction; the EXISTS response
 * is the one exact size and is checked by the caller. */
static uint64_t payload_max(const struct kvr_frame *f, const struct kvr_proto_limits *lim)
{
	bool resp = kvr_frame_is_response(f);

	switch (f->opcode) {
	case KVR_PROTO_OP_HELLO:
		return lim->max_hello;
	case KVR_PROTO_OP_PUT:
		return resp ? 0 : lim->max_payload;
	case KVR_PROTO_OP_GET:
		return resp ? (f->status == 0 ? lim->max_payload : 0) : 8;
	case KVR_PROTO_OP_EXISTS:
		return resp && f->status == 0 ? 8 : 0;
	case KVR_PROTO_OP_STATS:
		return resp && f->status == 0 ? lim->max_hello : 0;
	default:
		return 0;
	}
}

int kvr_proto_decode(const void *buf, size_t len, const struct kvr_proto_limits *lim,
		     struct kvr_frame *out)
{
	const uint8_t *p = buf;
	struct kvr_frame f;

	if (len < KVR_PROTO_HDR_LEN) {
		/* A prefix that cannot become a header fails now, so a peer
		 * speaking something else is refused before it sends 32 bytes. */
		uint8_t magic[4];

		kvr_put32(magic, KVR_PROTO_MAGIC);
		if (memcmp(p, magic, len < 4 ? len : 4))
			return -EPROTO;
		if (len > OFF_VERSION && p[OFF_VERSION] != KVR_PROTO_VERSION)
			return -EPROTONOSUPPORT;
		return -EAGAIN;
	}
	if (!lim)
		lim = &kvr_proto_default_limits;
	if (kvr_get32(p + OFF_MAGIC) != KVR_PROTO_MAGIC)
		return -EPROTO;
	if (p[OFF_VERSION] != KVR_PROTO_VERSION)
		return -EPROTONOSUPPORT;

	f.opcode = p[OFF_OPCODE];
	f.flags = kvr_get16(p + OFF_FLAGS);
	f.id = kvr_get64(p + OFF_ID);
	f.status = (int32_t)kvr_get32(p + OFF_STATUS);
	f.key_len = kvr_get16(p + OFF_KEYLEN);
	f.payload_len = kvr_get64(p + OFF_PAYLOAD);

	if (f.opcode < KVR_PROTO_OP_HELLO || f.opcode > KVR_PROTO_OP_STATS)
		return -EBADMSG;
	if (f.flags & ~KVR_PROTO_F_KNOWN)
		return -EBADMSG;
	f.crc = 0;
	if (kvr_get16(p + OFF_RESERVED) != 0)
		return -EBADMSG;
	if (kvr_frame_is_response(&f)) {
		if (f.status > 0 || f.status < -MAX_ERRNO)
			return -EBADMSG;
	} else if (f.status != 0) {
		return -EBADMSG;
	}

	if (f.key_len > KVR_MAX_KEY)
		return -EMSGSIZE;
	/* Responses are matched by id, so echoing the key would only cost. */
	if (op_has_key(f.opcode) && !kvr_frame_is_response(&f)) {
		if (f.key_len == 0)
			return -EBADMSG;
	} else if (f.key_len != 0) {
		return -EBADMSG;
	}

	if (f.payload_len > payload_max(&f, lim))
		return -EMSGSIZE;
	if (f.opcode == KVR_PROTO_OP_EXISTS && kvr_frame_is_response(&f) && f.status == 0 &&
	    f.payload_len != 8)
		return -EMSGSIZE;
	if (f.opcode == KVR_PROTO_OP_GET && !kvr_frame_is_response(&f) && f.payload_len != 8)
		return -EMSGSIZE;
	/* A crc trailer only follows a GET response's payload. */
	if ((f.flags & KVR_PROTO_F_CRC) &&
	    (f.opcode != KVR_PROTO_OP_GET || !kvr_frame_is_response(&f) || f.status != 0 ||
	     !f.payload_len))
		return -EBADMSG;

	*out = f;
	return KVR_PROTO_HDR_LEN;
}

size_t kvr_proto_encode(void *buf, const struct kvr_frame *f)
{
	uint8_t *p = buf;

	kvr_put32(p + OFF_MAGIC, KVR_PROTO_MAGIC);
	p[OFF_VERSION] = KVR_PROTO_VERSION;
	p[OFF_OPCODE] = f->opcode;
	kvr_put16(p + OFF_FLAGS, f->flags);
	kvr_put64(p + OFF_ID, f->id);
	kvr_put32(p + OFF_STATUS, (uint32_t)f->status);
	kvr_put16(p + OFF_KEYLEN, f->key_len);
	kvr_put16(p + OFF_RESERVED, 0);
	kvr_put64(p + OFF_PAYLOAD, f->payload_len);
	return KVR_PROTO_HDR_LEN;
}

/* ------------------------------------------------------------ hello body */

#define H_VMIN	   0
#define H_VMAX	   2
#define H_SHARD	   4
#define H_SHARDS   6
#define H_FEATURES 8
#define H_AUTHLEN  16
#define H_AUTH	   KVR_PROTO_HELLO_FIXED
/* the RDMA block, after the auth bytes */
#define R_GID	   0
#define R_QPN	   16
#define R_PSN	   20
#define R_LID	   24
#define R_MTU	   26
#define R_RDATOMIC 27
#define R_DEPTH	   28
#define R_MAXDESC  30
#define R_SLOT	   32
_Static_assert(R_SLOT + 4 == KVR_PROTO_HELLO_RDMA, "RDMA hello block size");

static bool versions_ok(uint16_t vmin, uint16_t vmax)
{
	return vmin != 0 && vmin <= vmax;
}

int kvr_proto_hello_encode(void *buf, size_t cap, const struct kvr_hello *h)
{
	uint8_t *p = buf;
	size_t need;

	if (h->auth_len > KVR_PROTO_MAX_AUTH)
		return -EMSGSIZE;
	if (!versions_ok(h->version_min, h->version_max))
		return -EBADMSG;
	need = KVR_PROTO_HELLO_FIXED + (size_t)h->auth_len;
	if (h->features & KVR_PROTO_FEAT_RDMA)
		need += KVR_PROTO_HELLO_RDMA;
	if (cap < need)
		return -EMSGSIZE;
	kvr_put16(p + H_VMIN, h->version_min);
	kvr_put16(p + H_VMAX, h->version_max);
	kvr_put16(p + H_SHARD, h->shard);
	kvr_put16(p + H_SHARDS, h->shards);
	kvr_put64(p + H_FEATURES, h->features);
	p[H_AUTHLEN] = h->auth_len;
	memcpy(p + H_AUTH, h->auth, h->auth_len);
	if (h->features & KVR_PROTO_FEAT_RDMA) {
		uint8_t *q = p + H_AUTH + h->auth_len;
		const struct kvr_hello_rdma *r = &h->rdma;

		memcpy(q + R_GID, r->gid, sizeof(r->gid));
		kvr_put32(q + R_QPN, r->qpn);
		kvr_put32(q + R_PSN, r->psn);
		kvr_put16(q + R_LID, r->lid);
		q[R_MTU] = r->mtu;
		q[R_RDATOMIC] = r->rd_atomic;
		kvr_put16(q + R_DEPTH, r->depth);
		kvr_put16(q + R_MAXDESC, r->max_desc);
		kvr_put32(q + R_SLOT, r->slot);
	}
	return (int)need;
}

static int rdma_decode(const uint8_t *q, struct kvr_hello_rdma *r)
{
	memcpy(r->gid, q + R_GID, sizeof(r->gid));
	r->qpn = kvr_get32(q + R_QPN);
	r->psn = kvr_get32(q + R_PSN);
	r->lid = kvr_get16(q + R_LID);
	r->mtu = q[R_MTU];
	r->rd_atomic = q[R_RDATOMIC];
	r->depth = kvr_get16(q + R_DEPTH);
	r->max_desc = kvr_get16(q + R_MAXDESC);
	r->slot = kvr_get32(q + R_SLOT);
	if (r->qpn > 0xffffff || r->psn > 0xffffff || r->mtu < 1 || r->mtu > 5 || !r->depth ||
	    !r->max_desc || r->slot < 1024 || r->slot > (1u << 20))
		return -EBADMSG;
	return 0;
}

int kvr_proto_hello_decode(const void *buf, size_t len, struct kvr_hello *out)
{
	const uint8_t *p = buf;
	uint8_t alen;

	if (len < KVR_PROTO_HELLO_FIXED)
		return -EBADMSG;
	alen = p[H_AUTHLEN];
	if (alen > KVR_PROTO_MAX_AUTH)
		return -EMSGSIZE;
	if (len != KVR_PROTO_HELLO_FIXED + (size_t)alen +
		       (kvr_get64(p + H_FEATURES) & KVR_PROTO_FEAT_RDMA ? KVR_PROTO_HELLO_RDMA : 0))
		return -EBADMSG;
	if (!versions_ok(kvr_get16(p + H_VMIN), kvr_get16(p + H_VMAX)))
		return -EBADMSG;

	memset(out, 0, sizeof(*out));
	out->version_min = kvr_get16(p + H_VMIN);
	out->version_max = kvr_get16(p + H_VMAX);
	out->shard = kvr_get16(p + H_SHARD);
	out->shards = kvr_get16(p + H_SHARDS);
	out->features = kvr_get64(p + H_FEATURES);
	out->auth_len = alen;
	memcpy(out->auth, p + H_AUTH, alen);
	if ((out->features & KVR_PROTO_FEAT_RDMA) && rdma_decode(p + H_AUTH + alen, &out->rdma))
		return -EBADMSG;
	return (int)len;
}

/* ------------------------------------------------------------------ auth */

static const char auth_label[] = "kvring-hello-v1";

int kvr_proto_auth_tag(const void *secret, size_t secret_len,
		       const uint8_t nonce[KVR_PROTO_NONCE_LEN], uint8_t tag[KVR_PROTO_TAG_LEN])
{
	uint8_t msg[sizeof(auth_label) - 1 + KVR_PROTO_NONCE_LEN];
	unsigned int n = KVR_PROTO_TAG_LEN;

	if (!secret || !secret_len || secret_len > KVR_PROTO_MAX_SECRET)
		return -EINVAL;
	memcpy(msg, auth_label, sizeof(auth_label) - 1);
	memcpy(msg + sizeof(auth_label) - 1, nonce, KVR_PROTO_NONCE_LEN);
	if (!HMAC(EVP_sha256(), secret, (int)secret_len, msg, sizeof(msg), tag, &n) ||
	    n != KVR_PROTO_TAG_LEN)
		return -EINVAL;
	return 0;
}

bool kvr_proto_auth_check(const void *secret, size_t secret_len,
			  const uint8_t nonce[KVR_PROTO_NONCE_LEN], const uint8_t *tag, size_t len)
{
	uint8_t want[KVR_PROTO_TAG_LEN];

	if (len != KVR_PROTO_TAG_LEN || kvr_proto_auth_tag(secret, secret_len, nonce, want))
		return false;
	return CRYPTO_memcmp(want, tag, KVR_PROTO_TAG_LEN) == 0;
}

int kvr_proto_nonce(uint8_t nonce[KVR_PROTO_NONCE_LEN])
{
	ssize_t n = getrandom(nonce, KVR_PROTO_NONCE_LEN, 0);

	return n == KVR_PROTO_NONCE_LEN ? 0 : -EIO;
}

/* ----------------------------------------------------------- request ids */

#define IDS_MAX_CAP (1u << 24)

/* Clients number requests sequentially; mixing spreads runs of ids over the
 * table so linear probing does not pile them into one cluster. */
static uint32_t id_slot(const struct kvr_proto_ids *s, uint64_t id)
{
	id ^= id >> 33;
	id *= 0xff51afd7ed558ccdull;
	id ^= id >> 33;
	id *= 0xc4ceb9fe1a85ec53ull;
	id ^= id >> 33;
	return (uint32_t)id & s->mask;
}

int kvr_proto_ids_init(struct kvr_proto_ids *s, uint32_t cap)
{
	uint32_t slots = 2;
	void *mem;

	memset(s, 0, sizeof(*s));
	if (cap == 0 || cap > IDS_MAX_CAP)
		return -EINVAL;
	/* At most half full, so probe runs stay short even when at cap. */
	while (slots < 2 * cap)
		slots <<= 1;
	mem = calloc(slots, sizeof(uint64_t) + 1);
	if (!mem)
		return -ENOMEM;
	s->keys = mem;
	s->used = (uint8_t *)(s->keys + slots);
	s->mask = slots - 1;
	s->cap = cap;
	return 0;
}

void kvr_proto_ids_free(struct kvr_proto_ids *s)
{
	free(s->keys);
	memset(s, 0, sizeof(*s));
}

/* The slot holding id, or the empty slot ending its probe run. */
static uint32_t id_find(const struct kvr_proto_ids *s, uint64_t id)
{
	uint32_t i = id_slot(s, id);

	while (s->used[i] && s->keys[i] != id)
		i = (i + 1) & s->mask;
	return i;
}

bool kvr_proto_ids_contains(const struct kvr_proto_ids *s, uint64_t id)
{
	return s->used[id_find(s, id)];
}

int kvr_proto_ids_insert(struct kvr_proto_ids *s, uint64_t id)
{
	uint32_t i = id_find(s, id);

	if (s->used[i])
		return -EEXIST;
	if (s->count >= s->cap)
		return -ENOSPC;
	s->keys[i] = id;
	s->used[i] = 1;
	s->count++;
	return 0;
}

int kvr_proto_ids_remove(struct kvr_proto_ids *s, uint64_t id)
{
	uint32_t hole = id_find(s, id), j = hole;

	if (!s->used[hole])
		return -ENOENT;
	/*
	 * Pull later members of the run back into the hole unless their home
	 * slot lies cyclically in (hole, j]: moving those would put them
	 * before their home, where lookups never look.
	 */
	for (;;) {
		uint32_t home;

		j = (j + 1) & s->mask;
		if (!s->used[j])
			break;
		home = id_slot(s, s->keys[j]);
		if (hole <= j ? (hole < home && home <= j) : (hole < home || home <= j))
			continue;
		s->keys[hole] = s->keys[j];
		hole = j;
	}
	s->used[hole] = 0;
	s->count--;
	return 0;
}

/* ------------------------------------------------------------------ URIs */

int kvr_proto_hostport(const char *s, char *host, size_t hcap, int *port)
{
	const char *colon;
	size_t hl;
	int v = 0;

	if (*s == '[') {
		const char *end = strchr(s, ']');

		if (!end || end[1] != ':')
			return -EINVAL;
		s++;
		hl = (size_t)(end - s);
		colon = end + 1;
	} else {
		colon = strrchr(s, ':');
		if (!colon)
			return -EINVAL;
		hl = (size_t)(colon - s);
		if (memchr(s, ':', hl))
			return -EINVAL; /* IPv6 needs brackets */
	}
	if (hl >= hcap || !colon[1] || strlen(colon + 1) > 5)
		return -EINVAL;
	for (const char *p = colon + 1; *p; p++) {
		if (*p < '0' || *p > '9')
			return -EINVAL;
		v = v * 10 + (*p - '0');
	}
	if (v > 65535)
		return -EINVAL;
	memcpy(host, s, hl);
	host[hl] = 0;
	*port = v;
	return 0;
}

int kvr_proto_rdma_opts(const char *q, char *dev, size_t devcap, int *gid, char *msg, size_t msgcap)
{
	while (*q) {
		const char *end = strchr(q, '&');
		size_t len = end ? (size_t)(end - q) : strlen(q);

		if (len > 4 && !strncmp(q, "dev=", 4) && len - 4 < devcap) {
			memcpy(dev, q + 4, len - 4);
			dev[len - 4] = 0;
		} else if (len > 4 && len <= 7 && !strncmp(q, "gid=", 4)) {
			unsigned v = 0;

			for (size_t i = 4; i < len; i++) {
				if (q[i] < '0' || q[i] > '9')
					goto bad;
				v = v * 10 + (unsigned)(q[i] - '0');
			}
			if (v > 255)
				goto bad;
			*gid = (int)v;
		} else {
			goto bad;
		}
		q += len + (end ? 1 : 0);
		continue;
	bad:
		snprintf(msg, msgcap, "bad rdma:// option '%.*s' (want dev=NAME, gid=0..255)",
			 (int)len, q);
		return -EINVAL;
	}
	return 0;
}
