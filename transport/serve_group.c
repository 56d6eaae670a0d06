/* SPDX-License-Identifier: MIT */
/*
 * Server groups: several engines (threads) behind one listening socket, each
 * serving one shard of the keys. Shard 0 accepts and runs the handshake;
 * a connection that wants another shard is queued for it (under the
 * group's mutex) and that shard's eventfd is written. Every shard keeps an
 * io_uring read pending on its eventfd, so it picks the connection up from
 * inside its own loop, answers the HELLO and serves it.
 */
#include "transport/serve.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

enum { SHARD_WAITING, SHARD_SERVING, SHARD_CLOSED };

struct grp_shard {
	int efd;
	int state;
	uint32_t conns; /* connections it serves (load, for ANY) */
	struct srv_handoff *head, *tail;
};

struct kvr_server_group {
	pthread_mutex_t mu;
	uint32_t shards;
	uint32_t rr; /* round-robin start among equally loaded shards */
	struct grp_shard sh[];
};

KVR_EXPORT int kvr_server_group_create(uint32_t shards, kvr_server_group **out)
{
	kvr_server_group *g;

	if (!out)
		return -EINVAL;
	*out = NULL;
	if (!shards || shards > KVR_PROTO_MAX_SHARDS)
		return -EINVAL;
	g = calloc(1, sizeof(*g) + shards * sizeof(g->sh[0]));
	if (!g)
		return -ENOMEM;
	g->shards = shards;
	for (uint32_t i = 0; i < shards; i++)
		g->sh[i].efd = -1;
	for (uint32_t i = 0; i < shards; i++) {
		/* Blocking: the ring polls it; a read never blocks a thread. */
		g->sh[i].efd = eventfd(0, EFD_CLOEXEC);
		if (g->sh[i].efd < 0) {
			int rc = -errno;

			kvr_server_group_destroy(g);
			return rc;
		}
	}
	pthread_mutex_init(&g->mu, NULL);
	*out = g;
	return 0;
}

KVR_EXPORT void kvr_server_group_destroy(kvr_server_group *g)
{
	if (!g)
		return;
	for (uint32_t i = 0; i < g->shards; i++) {
		struct grp_shard *sh = &g->sh[i];

		while (sh->head) {
			struct srv_handoff *h = sh->head;

			sh->head = h->next;
			close(h->fd);
			free(h);
		}
		if (sh->efd >= 0)
			close(sh->efd);
	}
	pthread_mutex_destroy(&g->mu);
	free(g);
}

/* ---------------------------------------------------------- this shard */

static void efd_done(struct kvr_io *io, int res, uint32_t flags)
{
	struct kvr_server *s = KVR_CONTAINER_OF(io, struct kvr_server, efd_io);
	struct grp_shard *sh = &s->g->sh[s->shard];
	struct srv_handoff *h;

	(void)res;
	(void)flags;
	s->efd_armed = false;
	if (s->closing) {
		srv_closing_progress(s);
		return;
	}
	pthread_mutex_lock(&s->g->mu);
	h = sh->head;
	sh->head = sh->tail = NULL;
	pthread_mutex_unlock(&s->g->mu);
	while (h) {
		struct srv_handoff *next = h->next;

		bool rdma = h->hello.features & KVR_PROTO_FEAT_RDMA;

		if (rdma && !s->rdma) { /* the listener serves RDMA: so do we */
			s->rdma = true;
			snprintf(s->rdma_dev, sizeof(s->rdma_dev), "%s", h->dev);
			s->rdma_gid = h->gid;
		}
		srv_adopt(s, h->fd, h->peer, h->hello_id, &h->hello);
		free(h);
		h = next;
	}
	srv_group_arm(s);
}

void srv_group_arm(struct kvr_server *s)
{
	struct io_uring_sqe *sqe = kvr_sqe(s->e);

	io_uring_prep_read(sqe, s->g->sh[s->shard].efd, &s->efd_buf, sizeof(s->efd_buf), 0);
	io_uring_sqe_set_data(sqe, &s->efd_io);
	s->efd_armed = true;
}

int srv_group_join(struct kvr_server *s)
{
	struct grp_shard *sh;
	int rc = 0;

	if (!s->g)
		return 0;
	sh = &s->g->sh[s->shard];
	pthread_mutex_lock(&s->g->mu);
	if (sh->state != SHARD_WAITING)
		rc = -EBUSY; /* the shard is (or was) served already */
	else
		sh->state = SHARD_SERVING;
	pthread_mutex_unlock(&s->g->mu);
	if (rc)
		return rc;
	s->efd_io.fn = efd_done;
	srv_group_arm(s);
	return 0;
}

void srv_group_leave(struct kvr_server *s)
{
	struct grp_shard *sh;
	struct srv_handoff *h;

	if (!s->g)
		return;
	sh = &s->g->sh[s->shard];
	pthread_mutex_lock(&s->g->mu);
	sh->state = SHARD_CLOSED;
	h = sh->head;
	sh->head = sh->tail = NULL;
	pthread_mutex_unlock(&s->g->mu);
	while (h) {
		struct srv_handoff *next = h->next;

		kvr_log(s->e, KVR_LOG_INFO, "conn close peer=%s reason=shutdown", h->peer);
		close(h->fd);
		free(h);
		h = next;
	}
	if (s->efd_armed) {
		struct io_uring_sqe *sqe = kvr_sqe(s->e);

		io_uring_prep_cancel(sqe, &s->efd_io, 0);
		io_uring_sqe_set_data(sqe, NULL);
	}
}

int srv_group_pick(struct kvr_server *s, uint16_t want)
{
	kvr_server_group *g = s->g;
	int to = -ESHUTDOWN;

	if (!g)
		return want == 0 || want == KVR_PROTO_ANY_SHARD ? 0 : -EINVAL;
	if (want != KVR_PROTO_ANY_SHARD && want >= g->shards)
		return -EINVAL;
	pthread_mutex_lock(&g->mu);
	if (want != KVR_PROTO_ANY_SHARD) {
		/* A shard not serving yet gets its connections when it starts. */
		if (g->sh[want].state != SHARD_CLOSED)
			to = want;
	} else {
		uint32_t best = UINT32_MAX;

		for (uint32_t k = 0; k < g->shards; k++) {
			uint32_t i = (g->rr + k) % g->shards;

			if (g->sh[i].state == SHARD_SERVING && g->sh[i].conns < best) {
				best = g->sh[i].conns;
				to = (int)i;
			}
		}
		g->rr++;
	}
	pthread_mutex_unlock(&g->mu);
	return to;
}

int srv_group_handoff(struct kvr_server *s, uint32_t to, int fd, const char *peer,
		      uint64_t hello_id, const struct kvr_hello *hello)
{
	kvr_server_group *g = s->g;
	struct grp_shard *sh = &g->sh[to];
	struct srv_handoff *h = calloc(1, sizeof(*h));
	uint64_t one = 1;
	int rc = 0;

	if (!h)
		return -ENOMEM;
	h->fd = fd;
	h->hello_id = hello_id;
	h->hello = *hello;
	snprintf(h->dev, sizeof(h->dev), "%s", s->rdma_dev);
	h->gid = s->rdma_gid;
	snprintf(h->peer, sizeof(h->peer), "%s", peer);
	pthread_mutex_lock(&g->mu);
	if (sh->state == SHARD_CLOSED) {
		rc = -ESHUTDOWN;
	} else {
		if (sh->tail)
			sh->tail->next = h;
		else
			sh->head = h;
		sh->tail = h;
	}
	pthread_mutex_unlock(&g->mu);
	if (rc) {
		free(h);
		return rc;
	}
	if (write(sh->efd, &one, sizeof(one)) < 0) {
		/* the counter is saturated: a wake-up is pending anyway */
	}
	return 0;
}

void srv_group_count(struct kvr_server *s, int delta)
{
	if (!s->g)
		return;
	pthread_mutex_lock(&s->g->mu);
	s->g->sh[s->shard].conns += (uint32_t)delta;
	pthread_mutex_unlock(&s->g->mu);
}

uint32_t srv_group_shards(const kvr_server_group *g)
{
	return g ? g->shards : 1;
}
