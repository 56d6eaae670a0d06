/* SPDX-License-Identifier: MIT */
/*
 * The STATS of a kvring-server node, for `kvring stats tcp://...`: STATS is
 * not an operation of the target API, so this is a small blocking exchange
 * over a plain socket with the protocol codec (docs/protocol.md): HELLO, the
 * authentication round when the server asks for it, then STATS, on one
 * connection per shard of the node.
 */
#include "tools/node_stats.h"

#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "kvring.h"
#include "transport/proto.h"

#define NODE_MAX_SHARDS 1024

struct node_auth {
	const void *secret;
	size_t secret_len;
	uint32_t timeout_ms; /* per connection: connect, handshake, STATS */
};

void json_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;

		if (ch == '"' || ch == '\\')
			fprintf(f, "\\%c", ch);
		else if (ch < 0x20)
			fprintf(f, "\\u%04x", ch);
		else
			fputc(ch, f);
	}
	fputc('"', f);
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int wait_fd(int fd, short events, int64_t deadline)
{
	for (;;) {
		struct pollfd p = {.fd = fd, .events = events};
		int64_t left = deadline - now_ms();
		int rc;

		if (left <= 0)
			return -ETIMEDOUT;
		rc = poll(&p, 1, (int)left);
		if (rc > 0)
			return 0;
		if (rc < 0 && errno != EINTR)
			return -errno;
	}
}

static int send_all(int fd, const void *buf, size_t len, int64_t deadline)
{
	const uint8_t *p = buf;

	while (len) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
		int rc;

		if (n > 0) {
			p += n;
			len -= (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno != EAGAIN)
			return -errno;
		rc = wait_fd(fd, POLLOUT, deadline);
		if (rc)
			return rc;
	}
	return 0;
}

static int recv_all(int fd, void *buf, size_t len, int64_t deadline)
{
	uint8_t *p = buf;

	while (len) {
		ssize_t n = recv(fd, p, len, 0);
		int rc;

		if (n > 0) {
			p += n;
			len -= (size_t)n;
			continue;
		}
		if (n == 0)
			return -ECONNRESET;
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN)
			return -errno;
		rc = wait_fd(fd, POLLIN, deadline);
		if (rc)
			return rc;
	}
	return 0;
}

/* A connected non-blocking socket to "HOST:PORT" or "[V6]:PORT". */
static int node_connect(const char *node, int64_t deadline)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL, *a;
	char host[256], *port;
	int fd = -1, rc;

	snprintf(host, sizeof(host), "%s", node);
	port = strrchr(host, ':');
	if (!port || port == host)
		return -EINVAL;
	*port++ = 0;
	if (host[0] == '[' && port[-2] == ']') {
		port[-2] = 0;
		memmove(host, host + 1, strlen(host));
	}
	if (getaddrinfo(host, port, &hints, &ai) || !ai)
		return -EHOSTUNREACH;
	rc = -EHOSTUNREACH;
	for (a = ai; a; a = a->ai_next) {
		int err = 0;
		socklen_t elen = sizeof(err);

		fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
			    a->ai_protocol);
		if (fd < 0) {
			rc = -errno;
			continue;
		}
		if (connect(fd, a->ai_addr, a->ai_addrlen) && errno != EINPROGRESS)
			err = errno;
		else if ((rc = wait_fd(fd, POLLOUT, deadline)))
			err = -rc;
		else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen))
			err = errno;
		if (!err)
			break;
		rc = -err;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(ai);
	return fd >= 0 ? fd : rc;
}

/* Send one request (header + body) and read its response's body into resp
 * (cap bytes). Returns the response's status (0 or -errno), or -EPROTO for
 * anything but a well-formed response to this request. */
static int exchange(int fd, uint8_t op, uint64_t id, const void *body, size_t len, void *resp,
		    size_t cap, size_t *resp_len, int64_t deadline)
{
	uint8_t hdr[KVR_PROTO_HDR_LEN];
	struct kvr_frame f = {.opcode = op, .id = id, .payload_len = len};
	int rc;

	kvr_proto_encode(hdr, &f);
	rc = send_all(fd, hdr, sizeof(hdr), deadline);
	if (!rc && len)
		rc = send_all(fd, body, len, deadline);
	if (!rc)
		rc = recv_all(fd, hdr, sizeof(hdr), deadline);
	if (rc)
		return rc;
	if (kvr_proto_decode(hdr, sizeof(hdr), NULL, &f) < 0 || !kvr_frame_is_response(&f) ||
	    f.opcode != op || f.id != id || f.key_len)
		return -EPROTO;
	if (f.status < 0)
		return f.status;
	if (f.payload_len > cap)
		return -EPROTO;
	*resp_len = (size_t)f.payload_len;
	return f.payload_len ? recv_all(fd, resp, (size_t)f.payload_len, deadline) : 0;
}

/* HELLO for `shard` (and the authentication round when the server asks for
 * it); *h receives the server's HELLO (shard, shard count). */
static int handshake(const struct node_auth *a, int fd, uint16_t shard, int64_t deadline,
		     struct kvr_hello *h)
{
	struct kvr_hello req = {.version_min = 1, .version_max = 1, .shard = shard};
	uint8_t body[KVR_PROTO_HELLO_MAX];
	size_t len = 0;
	int n, rc;

	memset(h, 0, sizeof(*h));
	h->shard = shard == KVR_PROTO_ANY_SHARD ? 0 : shard;
	h->shards = 1; /* a server may answer with no body */
	for (uint64_t id = 1;; id++) {
		n = kvr_proto_hello_encode(body, sizeof(body), &req);
		if (n < 0)
			return n;
		rc = exchange(fd, KVR_PROTO_OP_HELLO, id, body, (size_t)n, body, sizeof(body), &len,
			      deadline);
		if (rc)
			return rc;
		if (len && kvr_proto_hello_decode(body, len, h) < 0)
			return -EPROTO;
		if (!len || !(h->features & KVR_PROTO_FEAT_AUTH) || req.auth_len)
			return 0;
		if (!a->secret_len)
			return -ENOKEY;
		if (h->auth_len != KVR_PROTO_NONCE_LEN)
			return -EPROTO;
		req.auth_len = KVR_PROTO_TAG_LEN;
		rc = kvr_proto_auth_tag(a->secret, a->secret_len, h->auth, req.auth);
		if (rc)
			return rc;
	}
}

static void print_node_stats(FILE *out, const char *node, const struct kvr_hello *h, char *body,
			     size_t len)
{
	while (len && (body[len - 1] == '\n' || body[len - 1] == ' '))
		len--;
	body[len] = 0;
	fputs("{\"node\":", out);
	json_str(out, node);
	fprintf(out, ",\"shard\":%u,\"shards\":%u,\"stats\":", h->shard, h->shards);
	if (len >= 2 && body[0] == '{' && body[len - 1] == '}' && strlen(body) == len)
		fputs(body, out);
	else
		json_str(out, body);
	fputs("}\n", out);
}

/* STATS of one shard of a node (KVR_PROTO_ANY_SHARD: whichever the server
 * picks). *shards receives the node's shard count, *got the shard served. */
static int shard_stats(const struct node_auth *a, const char *node, uint16_t want, FILE *out,
		       uint16_t *got, uint16_t *shards)
{
	int64_t deadline = now_ms() + a->timeout_ms;
	char body[KVR_PROTO_MAX_HELLO + 1];
	struct kvr_hello h;
	size_t len = 0;
	int fd, rc;

	fd = node_connect(node, deadline);
	if (fd < 0)
		return fd;
	rc = handshake(a, fd, want, deadline, &h);
	if (!rc)
		rc = exchange(fd, KVR_PROTO_OP_STATS, 100, NULL, 0, body, sizeof(body) - 1, &len,
			      deadline);
	close(fd);
	if (rc)
		return rc;
	*got = h.shard;
	*shards = h.shards;
	print_node_stats(out, node, &h, body, len);
	return 0;
}

static const char *node_error(int rc)
{
	switch (rc) {
	case -ENOKEY:
		return "the server wants a secret (--secret-file)";
	case -EACCES:
		return "the server refused the secret";
	case -EPROTO:
		return "the peer does not speak kvring";
	case -EHOSTUNREACH:
		return "cannot resolve the address";
	default:
		return kvr_strerror(rc);
	}
}

int node_stats(const char *node, const void *secret, size_t secret_len, uint32_t timeout_ms,
	       FILE *out)
{
	const struct node_auth a = {secret, secret_len, timeout_ms};
	uint16_t first = 0, shards = 1, got, n;
	char *first_line = NULL;
	size_t first_len = 0;
	FILE *mem;
	int rc;

	/* the shard the server picks first; its line waits for its turn */
	mem = open_memstream(&first_line, &first_len);
	if (!mem)
		return -ENOMEM;
	rc = shard_stats(&a, node, KVR_PROTO_ANY_SHARD, mem, &first, &shards);
	if (fclose(mem) && !rc)
		rc = -ENOMEM;
	for (uint16_t i = 0; !rc && i < shards && i < NODE_MAX_SHARDS; i++) {
		if (i == first) {
			fputs(first_line, out);
			continue;
		}
		rc = shard_stats(&a, node, i, out, &got, &n);
		if (rc)
			fprintf(stderr, "kvring: stats %s shard %u: %s\n", node, i, node_error(rc));
	}
	if (rc && !first_len)
		fprintf(stderr, "kvring: stats %s: %s\n", node, node_error(rc));
	free(first_line);
	return rc;
}
