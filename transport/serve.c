/* SPDX-License-Identifier: MIT */
/*
 * kvr_serve: the server side of the TCP transport. This file holds the
 * server itself — options, the listening socket and multishot accept on the
 * engine's ring, the idle tick, the per-round flush, stats, and the orderly
 * close. Connections and requests are in serve_conn.c, spilling in
 * serve_spill.c, shard groups in serve_group.c.
 */
#include "transport/serve.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DEFAULT_MAX_CONNS 1024u
#define DEFAULT_IDLE_MS	  30000u
#define ACCEPT_RETRY_MS	  100u

void srv_closing_progress(struct kvr_server *s)
{
	if (s->closing)
		s->close_quiet = 0; /* end kvr_server_close's wait early */
}

static void sa_str(const struct sockaddr_storage *ss, char *buf, size_t len)
{
	char a[INET6_ADDRSTRLEN] = "?";

	if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)ss;

		inet_ntop(AF_INET6, &v6->sin6_addr, a, sizeof(a));
		snprintf(buf, len, "[%s]:%u", a, ntohs(v6->sin6_port));
	} else if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *v4 = (const struct sockaddr_in *)ss;

		inet_ntop(AF_INET, &v4->sin_addr, a, sizeof(a));
		snprintf(buf, len, "%s:%u", a, ntohs(v4->sin_port));
	} else {
		snprintf(buf, len, "?");
	}
}

/* ------------------------------------------------------------- accepting */

static void arm_accept(struct kvr_server *s)
{
	struct io_uring_sqe *sqe = kvr_sqe(s->e);

	if (s->accept_multishot)
		io_uring_prep_multishot_accept(sqe, s->lfd, NULL, NULL, SOCK_CLOEXEC);
	else
		io_uring_prep_accept(sqe, s->lfd, NULL, NULL, SOCK_CLOEXEC);
	io_uring_sqe_set_data(sqe, &s->accept_io);
	s->accept_armed = true;
}

static void accept_retry(struct kvr_timer *t)
{
	struct kvr_server *s = KVR_CONTAINER_OF(t, struct kvr_server, accept_retry);

	if (!s->closing && !s->accept_armed)
		arm_accept(s);
}

static void on_accept(struct kvr_server *s, int fd)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	char peer[64];

	memset(&ss, 0, sizeof(ss));
	if (getpeername(fd, (struct sockaddr *)&ss, &sl) == 0)
		sa_str(&ss, peer, sizeof(peer));
	else
		snprintf(peer, sizeof(peer), "?");
	/* A full table makes room by closing a connection idle for the idle
	 * timeout (it goes once its close completes, just after). */
	if (s->closing ||
	    (s->nconns >= s->o.max_conns &&
	     (s->nconns >= s->o.max_conns + 16 || !srv_conn_reclaim_idle(s, kvr_now_ns())))) {
		kvr_log(s->e, KVR_LOG_WARN, "conn refused peer=%s reason=%s", peer,
			s->closing ? "shutdown" : "max-conns");
		close(fd);
		return;
	}
	kvr_log(s->e, KVR_LOG_DEBUG, "conn accept peer=%s", peer);
	if (!srv_conn_new(s, fd, peer))
		kvr_log(s->e, KVR_LOG_WARN, "conn refused peer=%s reason=no-memory", peer);
}

static void accept_done(struct kvr_io *io, int res, uint32_t flags)
{
	struct kvr_server *s = KVR_CONTAINER_OF(io, struct kvr_server, accept_io);

	if (!(flags & IORING_CQE_F_MORE))
		s->accept_armed = false;
	if (res >= 0) {
		on_accept(s, res);
	} else if (res == -EINVAL && s->accept_multishot && !s->accept_armed) {
		kvr_log(s->e, KVR_LOG_INFO, "multishot accept unsupported: accepting one by one");
		s->accept_multishot = false;
	} else if (res != -ECANCELED) {
		/* EMFILE and friends: back off instead of spinning on them. */
		kvr_log(s->e, KVR_LOG_WARN, "accept: %s", strerror(-res));
		if (!s->accept_armed && !s->closing) {
			if (!kvr_timer_add(&s->e->timers, &s->accept_retry,
					   s->e->now_ns + ACCEPT_RETRY_MS * 1000000ull))
				return;
			/* No timer to back off with: accepting again at once
			 * beats never accepting again. */
			kvr_log(s->e, KVR_LOG_WARN, "accept: no memory for the retry timer");
		}
	}
	if (s->closing) {
		srv_closing_progress(s);
		return;
	}
	if (!s->accept_armed)
		arm_accept(s);
}

/* "tcp://HOST:PORT" or "rdma://HOST:PORT[?dev=NAME&gid=N]" (HOST empty:
 * loopback; IPv6 in brackets). An rdma:// listener serves TCP clients too. */
static int parse_uri(struct kvr_server *s, const char *uri, char *host, size_t hcap, char *port,
		     size_t pcap)
{
	char buf[320];
	const char *h, *q;
	int pnum;

	if (!strncmp(uri, "rdma://", 7)) {
		char msg[160];

		s->rdma = true;
		s->rdma_gid = -1;
		q = strchr(uri, '?');
		if (strlen(uri) >= sizeof(buf))
			return -EINVAL;
		snprintf(buf, sizeof(buf), "%s", uri + 7);
		if (q) {
			buf[q - uri - 7] = 0;
			if (kvr_proto_rdma_opts(q + 1, s->rdma_dev, sizeof(s->rdma_dev),
						&s->rdma_gid, msg, sizeof(msg))) {
				kvr_set_errmsg(s->e, "%s", msg);
				return -EINVAL;
			}
		}
		h = buf;
	} else if (!strncmp(uri, "tcp://", 6)) {
		h = uri + 6;
	} else {
		return -EINVAL;
	}
	if (kvr_proto_hostport(h, host, hcap, &pnum))
		return -EINVAL;
	if (!host[0])
		snprintf(host, hcap, "127.0.0.1");
	snprintf(port, pcap, "%d", pnum);
	return 0;
}

static int do_listen(struct kvr_server *s, const char *uri)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM,
				 .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
	struct addrinfo *ai = NULL;
	char host[256], port[8];
	int rc = parse_uri(s, uri, host, sizeof(host), port, sizeof(port));

	if (rc) {
		if (!kvr_engine_errmsg(s->e)[0])
			kvr_set_errmsg(s->e,
				       "bad listen URI '%s' (want tcp://HOST:PORT or "
				       "rdma://HOST:PORT[?dev=NAME&gid=N])",
				       uri);
		return rc;
	}
	rc = getaddrinfo(host, port, &hints, &ai);
	if (rc || !ai) {
		kvr_set_errmsg(s->e, "cannot resolve '%s': %s", host, gai_strerror(rc));
		return -EINVAL;
	}
	rc = -EADDRNOTAVAIL;
	for (struct addrinfo *p = ai; p; p = p->ai_next) {
		int one = 1;
		int fd = socket(p->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
		socklen_t sl = sizeof(s->laddr);

		if (fd < 0) {
			rc = -errno;
			continue;
		}
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(fd, p->ai_addr, p->ai_addrlen) || listen(fd, SOMAXCONN) ||
		    getsockname(fd, (struct sockaddr *)&s->laddr, &sl)) {
			rc = -errno;
			close(fd);
			continue;
		}
		s->lfd = fd;
		rc = 0;
		break;
	}
	freeaddrinfo(ai);
	if (rc)
		kvr_set_errmsg(s->e, "cannot listen on %s: %s", uri, strerror(-rc));
	return rc;
}

/* ------------------------------------------------------------ the loop */

static int tick_arm(struct kvr_server *s)
{
	uint32_t ms = s->o.idle_timeout_ms / 4;

	ms = ms < 10 ? 10 : ms > 1000 ? 1000 : ms;
	return kvr_timer_add(&s->e->timers, &s->tick, kvr_now_ns() + ms * 1000000ull);
}

static void tick(struct kvr_timer *t)
{
	struct kvr_server *s = KVR_CONTAINER_OF(t, struct kvr_server, tick);
	uint64_t now = kvr_now_ns();

	for (struct srv_conn *c = s->conns, *next; c; c = next) {
		next = c->next;
		srv_conn_check_idle(c, now);
	}
	if (tick_arm(s)) /* srv_flush tries again every round */
		kvr_log(s->e, KVR_LOG_WARN, "idle tick: no memory for its timer");
}

static void srv_flush(struct kvr_flush *f)
{
	struct kvr_server *s = KVR_CONTAINER_OF(f, struct kvr_server, flush);

	if (s->in_flush)
		return;
	s->in_flush = true;
	srv_reap_dead(s);
	/* Without its tick (no memory to re-arm it) no stalled peer is ever
	 * closed: keep trying. */
	if (!s->tick.pos)
		(void)tick_arm(s);
	/* Waiting requests: retry when pool room was freed (or is coming). */
	if (s->wait_head && (s->wait_state != srv_room_state(s) || s->wait_force))
		srv_wait_retry(s);
	if (s->sp)
		srv_spill_flush(s);
	/* Answers queued just now: the connections' own flushes may have run
	 * already this round, so send them now rather than at the next one
	 * (which, for a host polling through the engine fd, may be far off). */
	if (s->kick) {
		s->kick = false;
		for (struct srv_conn *c = s->conns; c; c = c->next)
			if (c->conn.q_head)
				c->conn.flush.fn(&c->conn.flush);
	}
	s->in_flush = false;
}

/* ------------------------------------------------------------------- API */

static int check_opts(kvr_engine *e, const char *uri, kvr_target *store,
		      const struct kvr_serve_opts *o)
{
	if (store->e != e || store->closed || strcmp(store->ops->name, "mem") != 0 ||
	    !kvr_store_of(store)->base) {
		kvr_set_errmsg(e, "kvr_serve: the store must be an open mem: store of this engine");
		return -EINVAL;
	}
	if (o->secret && (!o->secret_len || o->secret_len > KVR_PROTO_MAX_SECRET))
		return -EINVAL;
	if (o->spill &&
	    (o->spill->e != e || o->spill->closed || strcmp(o->spill->ops->name, "file") != 0)) {
		kvr_set_errmsg(e, "kvr_serve: the spill store must be an open file: store "
				  "of this engine");
		return -EINVAL;
	}
	if (o->group) {
		if (o->shard >= srv_group_shards(o->group))
			return -EINVAL;
		if ((o->shard == 0) != (uri != NULL)) {
			kvr_set_errmsg(e, "kvr_serve: in a group, shard 0 (only) listens");
			return -EINVAL;
		}
	} else if (o->shard || !uri) {
		return -EINVAL;
	}
	return 0;
}

static void server_free(struct kvr_server *s)
{
	kvr_engine *e = s->e;

	kvr_flush_del(e, &s->flush);
	kvr_timer_del(&e->timers, &s->tick);
	kvr_timer_del(&e->timers, &s->accept_retry);
	if (s->lfd >= 0)
		close(s->lfd);
	srv_spill_fini(s);
	free(s->secret);
	free(s);
}

KVR_EXPORT int kvr_serve(kvr_engine *e, const char *uri, kvr_target *store,
			 const struct kvr_serve_opts *opts, kvr_server **out)
{
	struct kvr_server *s;
	struct kvr_serve_opts o;
	int rc;

	if (!e || !store || !out)
		return -EINVAL;
	*out = NULL;
	e->errmsg[0] = 0; /* a message now is this call's */
	if (e->destroying)
		return -ESHUTDOWN;
	memset(&o, 0, sizeof(o));
	if (opts) {
		if (opts->size < offsetof(struct kvr_serve_opts, secret))
			return -EINVAL;
		memcpy(&o, opts, opts->size < sizeof(o) ? opts->size : sizeof(o));
	}
	rc = check_opts(e, uri, store, &o);
	if (rc)
		return rc;
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->e = e;
	s->ms = kvr_store_of(store);
	s->base = s->ms->base;
	s->mr = kvr_mr_find(e, s->base, 1);
	s->o = o;
	s->o.max_conns = o.max_conns ? o.max_conns : DEFAULT_MAX_CONNS;
	s->o.idle_timeout_ms = o.idle_timeout_ms ? o.idle_timeout_ms : DEFAULT_IDLE_MS;
	/* One PUT may reserve at most this much of the pool before its bytes
	 * arrive (and evict for it). */
	s->max_object = s->ms->al.capacity / SRV_RESERVE_DIV;
	if (o.max_object && o.max_object < s->max_object)
		s->max_object = o.max_object;
	s->g = o.group;
	s->shard = o.shard;
	s->shards = srv_group_shards(o.group);
	s->lfd = -1;
	s->accept_multishot = true;
	s->accept_io.fn = accept_done;
	s->accept_retry.fn = accept_retry;
	s->tick.fn = tick;
	s->flush.fn = srv_flush;
	if (o.secret) {
		s->secret = malloc(o.secret_len);
		if (!s->secret) {
			free(s);
			return -ENOMEM;
		}
		memcpy(s->secret, o.secret, o.secret_len);
		s->o.secret = s->secret;
	}
	kvr_flush_add(e, &s->flush);
	if (uri)
		rc = do_listen(s, uri);
	if (!rc && s->rdma)
		rc = srv_rdma_setup(s);
	if (!rc && o.spill)
		rc = srv_spill_init(s, o.spill);
	if (!rc)
		rc = tick_arm(s);
	if (!rc)
		rc = srv_group_join(s);
	if (rc) {
		server_free(s);
		return rc;
	}
	if (s->lfd >= 0)
		arm_accept(s);
	kvr_submit_if_idle(e);
	if (s->lfd >= 0) {
		char a[80];

		sa_str(&s->laddr, a, sizeof(a));
		kvr_log(e, KVR_LOG_INFO, "serving %s://%s shard=%u shards=%u%s%s",
			s->rdma ? "rdma" : "tcp", a, s->shard, s->shards, s->secret ? " auth" : "",
			s->sp ? " spill" : "");
	} else {
		kvr_log(e, KVR_LOG_INFO, "serving shard=%u shards=%u%s", s->shard, s->shards,
			s->sp ? " spill" : "");
	}
	*out = s;
	return 0;
}

KVR_EXPORT int kvr_server_addr(kvr_server *s, char *buf, size_t len)
{
	char a[80];

	if (!s || !buf || !len)
		return -EINVAL;
	if (s->lfd < 0) {
		buf[0] = 0;
		return 0;
	}
	sa_str(&s->laddr, a, sizeof(a));
	return snprintf(buf, len, "%s://%s", s->rdma ? "rdma" : "tcp", a);
}

KVR_EXPORT int kvr_server_stats_json(kvr_server *s, char *buf, size_t len)
{
	const struct kvr_store *ms;
	struct kvr_stats st = {.size = sizeof(st)};
	int n;

	if (!s || !buf || !len)
		return -EINVAL;
	ms = s->ms;
	kvr_target_stats(&s->ms->t, &st); /* the pool's progress */
	n = snprintf(buf, len,
		     "{\"objects\":%llu,\"used_bytes\":%llu,\"capacity_bytes\":%llu,"
		     "\"conns\":%u,\"puts\":%llu,\"gets\":%llu,\"hits\":%llu,\"misses\":%llu,"
		     "\"evictions\":%llu,\"spilled\":%llu,\"spill_hits\":%llu,"
		     "\"spill_errors\":%llu,\"parked_bytes\":%llu,"
		     "\"bytes_in\":%llu,\"bytes_out\":%llu,\"shard\":%u,\"shards\":%u,"
		     "\"slots\":%llu,\"queued_bytes\":%llu,\"reserved_bytes\":%llu,"
		     "\"held_conns\":%u,\"max_object\":%llu,"
		     "\"pool_bytes\":%llu,\"pool_bytes_ready\":%llu}",
		     (unsigned long long)ms->ix.count, (unsigned long long)ms->al.used,
		     (unsigned long long)ms->al.capacity, s->nconns, (unsigned long long)s->n.puts,
		     (unsigned long long)s->n.gets, (unsigned long long)s->n.hits,
		     (unsigned long long)s->n.misses, (unsigned long long)ms->t.stats.evictions,
		     (unsigned long long)s->n.spilled, (unsigned long long)s->n.spill_hits,
		     (unsigned long long)s->n.spill_errors, (unsigned long long)s->parked_bytes,
		     (unsigned long long)s->n.bytes_in, (unsigned long long)s->n.bytes_out,
		     s->shard, s->shards, (unsigned long long)s->busy, (unsigned long long)s->tx,
		     (unsigned long long)s->reserved, s->ndeferred,
		     (unsigned long long)s->max_object, (unsigned long long)st.pool_bytes,
		     (unsigned long long)st.pool_bytes_ready);
	if (n < 0)
		return -EINVAL;
	return (size_t)n < len ? n : (int)len - 1;
}

static bool close_done(const struct kvr_server *s)
{
	return !s->conns && !s->dead && !s->accept_armed && !s->efd_armed && !s->wait_head &&
	       srv_spill_idle(s);
}

static void batch_append(struct kvr_batch **head, struct kvr_batch **last, struct kvr_batch *b)
{
	b->next = NULL;
	if (*last)
		(*last)->next = b;
	else
		*head = b;
	*last = b;
}

/*
 * kvr_server_close's part of a poll round: start the batches waiting for
 * request slots (a spill batch may be among them), then run the callbacks
 * of the server's own finished batches (spill writes, removes and
 * promotes: every batch on the spill store is the server's), and only
 * those: the host's stay queued, in order, for its next kvr_engine_poll,
 * where the API promises its callbacks run.
 */
static void close_round(struct kvr_server *s)
{
	kvr_engine *e = s->e;
	struct kvr_batch *host = NULL, *host_last = NULL, *own = NULL, *own_last = NULL;
	bool was = e->in_poll;

	/* As inside a poll: what is submitted goes out with the next round. */
	e->in_poll = true;
	kvr_batches_start_waiting(e);
	for (struct kvr_batch *b = e->done_head, *next; b; b = next) {
		next = b->next;
		if (s->o.spill && b->t == s->o.spill)
			batch_append(&own, &own_last, b);
		else
			batch_append(&host, &host_last, b);
	}
	e->done_head = own;
	e->done_tail = own_last;
	if (own)
		kvr_batches_run_done(e);
	e->in_poll = was;
	if (host) { /* ahead of any that finished inside those callbacks */
		host_last->next = e->done_head;
		if (!e->done_head)
			e->done_tail = host_last;
		e->done_head = host;
	}
}

KVR_EXPORT int kvr_server_close(kvr_server *s, uint32_t timeout_ms)
{
	kvr_engine *e;
	uint64_t deadline;
	bool forced = false;
	int rc = 0;

	if (!s)
		return -EINVAL;
	e = s->e;
	if (e->in_cb || e->in_poll)
		return -EBUSY;
	s->closing = true;
	kvr_timer_del(&e->timers, &s->accept_retry);
	if (s->accept_armed) {
		struct io_uring_sqe *sqe = kvr_sqe(e);

		io_uring_prep_cancel(sqe, &s->accept_io, 0);
		io_uring_sqe_set_data(sqe, NULL);
	}
	srv_group_leave(s);
	for (struct srv_conn *c = s->conns, *next; c; c = next) {
		next = c->next;
		srv_conn_drain(c);
	}
	deadline = kvr_now_ns() + (uint64_t)timeout_ms * 1000000ull;
	for (;;) {
		int prc;

		srv_reap_dead(s);
		close_round(s);
		if (close_done(s))
			break;
		if (!forced && kvr_now_ns() >= deadline) {
			forced = true;
			rc = -ETIMEDOUT;
			kvr_log(e, KVR_LOG_WARN,
				"server close: timed out; dropping %u connection(s)", s->nconns);
			srv_wait_fail_all(s, -ESHUTDOWN);
			for (struct srv_conn *c = s->conns, *next; c; c = next) {
				next = c->next;
				kvr_conn_close(&c->conn, -ETIMEDOUT);
			}
			continue;
		}
		/* Spill batches and connection closes still finish after a
		 * timeout: the kernel and the file store hold our buffers.
		 * One round or more (1 ms), ended early by srv_closing_progress;
		 * I/O completions only, no callback of the host's. */
		s->close_quiet = 1;
		prc = kvr_engine_drain_timeout(e, &s->close_quiet, 1);
		if (prc < 0 && prc != -ETIMEDOUT) {
			kvr_log(e, KVR_LOG_ERROR, "server close: %s; server leaked",
				strerror(-prc));
			return prc;
		}
	}
	kvr_log(e, KVR_LOG_INFO, "server closed shard=%u", s->shard);
	server_free(s);
	if (e->done_head) /* the host's batches that finished meanwhile */
		kvr_notify(e);
	return rc;
}
