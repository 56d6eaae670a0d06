/* SPDX-License-Identifier: MIT */
/*
 * Framed connections over the engine's ring (see conn.h for the model).
 * Every SQE of a connection is counted in c->sqes; a close cancels them and
 * reports on_close only once the count is back to zero, so no completion can
 * arrive for a connection its owner has freed.
 */
#include "transport/conn.h"
#include "engine/compat.h"
#include "transport/le.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { RX_HDR, RX_DIRECT, RX_DISCARD };

/* Zero-copy notifications reported as copied, with none reported as truly
 * zero-copy, before a connection gives up on zero-copy sends. */
#define ZC_COPIED_GIVE_UP 4
enum { TX_IDLE, TX_QUEUED, TX_SENDING };

/* Bytes of the current frame that must be in the staging buffer before
 * on_frame: header, key, and a small payload. */
static uint64_t frame_need(const struct kvr_frame *f)
{
	uint64_t n = KVR_PROTO_HDR_LEN + f->key_len;

	return f->payload_len <= KVR_CONN_SMALL ? n + f->payload_len + kvr_frame_trailer(f) : n;
}

static void maybe_finish(struct kvr_conn *c);
static void rx_next(struct kvr_conn *c);

/* An SQE of this connection; the caller preps it, then sets io as data. */
static struct io_uring_sqe *conn_sqe(struct kvr_conn *c)
{
	c->sqes++;
	return kvr_sqe(c->e);
}

/* A completion handler is done with c: its SQE stops counting. Handlers
 * call this last, so an on_close that frees c cannot run under them. */
static void conn_put(struct kvr_conn *c)
{
	c->sqes--;
	maybe_finish(c);
}

/* ------------------------------------------------------------------ send */

static void tx_fail_list(struct kvr_tx *tx, int err)
{
	while (tx) {
		struct kvr_tx *next = tx->next;

		tx->state = TX_IDLE;
		tx->next = NULL;
		tx->done(tx, err);
		tx = next;
	}
}

/* The kernel is done with a send slot's buffers: hand its frames back. */
static void send_release(struct kvr_conn_send *s, int err)
{
	struct kvr_tx *head = s->head;

	s->head = s->tail = NULL;
	s->busy = false;
	tx_fail_list(head, err);
}

static void send_submit(struct kvr_conn *c, struct kvr_conn_send *s)
{
	struct io_uring_sqe *sqe = conn_sqe(c);

	s->msg.msg_iov = s->iov + s->iov_off;
	s->msg.msg_iovlen = s->niov - s->iov_off;
	if (s->zc) {
		io_uring_prep_sendmsg_zc(sqe, c->fd, &s->msg, MSG_WAITALL | MSG_NOSIGNAL);
		s->report = !c->e->zc_no_report;
		if (s->report)
			sqe->ioprio |= IORING_SEND_ZC_REPORT_USAGE;
		c->st.zc_sends++;
	} else {
		io_uring_prep_sendmsg(sqe, c->fd, &s->msg, MSG_WAITALL | MSG_NOSIGNAL);
		c->st.plain_sends++;
	}
	io_uring_sqe_set_data(sqe, &s->io);
	s->in_flight = true;
}

/* Skip the first n bytes of the slot's iovecs (a short send). */
static void send_advance(struct kvr_conn_send *s, size_t n)
{
	while (n && s->iov_off < s->niov) {
		struct iovec *v = &s->iov[s->iov_off];

		if (n < v->iov_len) {
			v->iov_base = (uint8_t *)v->iov_base + n;
			v->iov_len -= n;
			return;
		}
		n -= v->iov_len;
		s->iov_off++;
	}
}

/* A zero-copy notification told whether the kernel copied after all. */
static void zc_usage(struct kvr_conn *c, bool copied)
{
	if (!copied) {
		c->zc_real++;
		return;
	}
	c->st.zc_copied++;
	if (c->zc_ok && !c->zc_real && c->st.zc_copied >= ZC_COPIED_GIVE_UP) {
		c->zc_ok = false;
		kvr_log(c->e, KVR_LOG_DEBUG,
			"%s: the kernel copies zero-copy sends on this path; plain sends from now",
			c->name);
	}
}

static void send_done(struct kvr_io *io, int res, uint32_t flags)
{
	struct kvr_conn_send *s = KVR_CONTAINER_OF(io, struct kvr_conn_send, io);
	struct kvr_conn *c = s->c;
	int fail = c->err ? c->err : -ECONNRESET;

	if (flags & IORING_CQE_F_NOTIF) {
		if (s->report)
			zc_usage(c, (uint32_t)res & IORING_NOTIF_USAGE_ZC_COPIED);
		if (--s->notifs == 0 && !s->in_flight)
			send_release(s, s->iov_off == s->niov ? 0 : fail);
		conn_put(c);
		return;
	}
	s->in_flight = false;
	if (res == -EINVAL && s->report && !(flags & IORING_CQE_F_MORE) && !c->closing) {
		/* A kernel before 6.2 refuses the usage report: send again
		 * without it, and never ask on this engine again. */
		c->e->zc_no_report = true;
		send_submit(c, s);
		conn_put(c);
		return;
	}
	if (flags & IORING_CQE_F_MORE) {
		s->notifs++; /* the SQE stays counted until its notification */
		c->sqes++;
	}
	if (res > 0) {
		c->st.bytes_out += (uint64_t)res;
		send_advance(s, (size_t)res);
	}
	if (!c->closing && res < 0 && res != -EINTR && res != -EAGAIN) {
		kvr_log(c->e, KVR_LOG_INFO, "%s: send: %s", c->name, strerror(-res));
		kvr_conn_close(c, -ECONNRESET);
		fail = c->err;
	}
	if (!c->closing && s->iov_off < s->niov) /* short: the rest, first */
		send_submit(c, s);
	else if (!s->notifs)
		send_release(s, s->iov_off == s->niov ? 0 : fail);
	conn_put(c);
}

/* Gather queued frames into a free slot and send them as one sendmsg. */
static void send_start(struct kvr_conn *c)
{
	struct kvr_conn_send *s = NULL;

	if (c->send[0].in_flight || c->send[1].in_flight)
		return; /* keep byte order: one sendmsg at a time */
	for (int i = 0; i < 2; i++)
		if (!c->send[i].busy) {
			s = &c->send[i];
			break;
		}
	if (!s)
		return;
	s->niov = s->iov_off = 0;
	s->zc = false;
	while (c->q_head) {
		struct kvr_tx *tx = c->q_head;
		uint32_t need = 3 + tx->nsge;
		struct kvr_sgl cur;
		uint32_t k;

		if (s->niov + need > KVR_CONN_IOV)
			break;
		c->q_head = tx->next;
		if (!c->q_head)
			c->q_tail = NULL;
		tx->next = NULL;
		tx->state = TX_SENDING;
		if (s->tail)
			s->tail->next = tx;
		else
			s->head = tx;
		s->tail = tx;
		s->iov[s->niov++] = (struct iovec){tx->hdr, KVR_PROTO_HDR_LEN};
		if (tx->key_len)
			s->iov[s->niov++] = (struct iovec){(void *)tx->key, tx->key_len};
		/* at most nsge slices: the room `need` counted */
		kvr_sgl_init(&cur, tx->sgx, tx->nsge, tx->payload_len, NULL);
		k = kvr_sgl_fill_iov(&cur, s->iov + s->niov, tx->nsge, tx->payload_len, NULL);
		for (uint32_t i = 0; i < k; i++)
			if (c->zc_ok && s->iov[s->niov + i].iov_len >= c->zc_min)
				s->zc = true;
		s->niov += k;
		if (tx->trailer_len)
			s->iov[s->niov++] = (struct iovec){tx->trailer, tx->trailer_len};
		c->st.frames_out++;
	}
	if (!s->head)
		return;
	s->busy = true;
	send_submit(c, s);
}

static void rx_parse(struct kvr_conn *c);

static void conn_flush(struct kvr_flush *f)
{
	struct kvr_conn *c = KVR_CONTAINER_OF(f, struct kvr_conn, flush);

	if (c->rx_resume && !c->closing) {
		/* Held like an SQE, so that a close from on_frame finishes
		 * (and may free c) only at the conn_put below. */
		c->rx_resume = false;
		c->sqes++;
		rx_parse(c);
		rx_next(c);
		if (c->q_head && c->open && !c->closing)
			send_start(c);
		conn_put(c);
		return;
	}
	if (c->q_head && c->open && !c->closing)
		send_start(c);
}

void kvr_conn_pause(struct kvr_conn *c)
{
	c->rx_paused = true;
	c->rx_resume = false;
}

void kvr_conn_resume(struct kvr_conn *c)
{
	if (!c->rx_paused)
		return;
	c->rx_paused = false;
	c->rx_resume = true;
}

void kvr_conn_send(struct kvr_conn *c, struct kvr_tx *tx, const struct kvr_frame *f)
{
	kvr_proto_encode(tx->hdr, f);
	tx->key_len = f->key_len;
	tx->payload_len = f->payload_len;
	tx->trailer_len = (uint8_t)kvr_frame_trailer(f);
	if (tx->trailer_len)
		kvr_put32(tx->trailer, f->crc);
	tx->next = NULL;
	if (c->closed) { /* owner misuse after on_close: fail it at once */
		tx->state = TX_IDLE;
		tx->done(tx, c->err ? c->err : -ECONNRESET);
		return;
	}
	tx->state = TX_QUEUED;
	if (c->q_tail)
		c->q_tail->next = tx;
	else
		c->q_head = tx;
	c->q_tail = tx;
}

bool kvr_conn_unsend(struct kvr_conn *c, struct kvr_tx *tx)
{
	struct kvr_tx **pp = &c->q_head, *prev = NULL;

	if (tx->state != TX_QUEUED)
		return false;
	while (*pp && *pp != tx) {
		prev = *pp;
		pp = &(*pp)->next;
	}
	if (!*pp)
		return false;
	*pp = tx->next;
	if (c->q_tail == tx)
		c->q_tail = prev;
	tx->next = NULL;
	tx->state = TX_IDLE;
	return true;
}

bool kvr_conn_tx_idle(const struct kvr_conn *c)
{
	return !c->q_head && !c->send[0].busy && !c->send[1].busy;
}

/* --------------------------------------------------------------- receive */

/* n payload bytes are in at the destination position: add them to the
 * running crc32c (when asked) and move the position past them. */
static void rx_landed(struct kvr_conn *c, uint64_t n)
{
	kvr_sgl_advance(&c->rx_cur, n);
}

/* Copy n staged bytes into the large payload's destination. */
static void rx_copy_in(struct kvr_conn *c, const uint8_t *src, uint64_t n)
{
	c->st.rx_copied += n;
	kvr_sgl_copy_in(&c->rx_cur, src, n);
}

/* Take up to n staged bytes of the crc trailer. */
static void rx_trailer_in(struct kvr_conn *c, const uint8_t *src, uint32_t n)
{
	uint32_t k = n < c->rx_tleft ? n : c->rx_tleft;

	memcpy(c->rx_trailer + KVR_PROTO_CRC_LEN - c->rx_tleft, src, k);
	c->rx_tleft -= k;
	c->head += k;
}

static void rx_payload_done(struct kvr_conn *c)
{
	if (kvr_frame_trailer(&c->rx_f))
		c->rx_f.crc = kvr_get32(c->rx_trailer);
	c->rx_state = RX_HDR;
	c->rx_large = true;
	c->ops->on_payload(c, &c->rx_f);
}

static int proto_fail(struct kvr_conn *c, int rc, const char *what)
{
	kvr_log(c->e, KVR_LOG_WARN, "%s: %s: %s; closing", c->name, what, strerror(-rc));
	kvr_conn_close(c, -EPROTO);
	return -EPROTO;
}

/* Hand every complete frame in the staging buffer to the owner. Stops when
 * more bytes are needed, a large payload must be received, or c closes. */
static void rx_parse(struct kvr_conn *c)
{
	while (!c->closing && !c->rx_paused && c->rx_state == RX_HDR) {
		uint32_t avail = c->tail - c->head;
		uint8_t *p = c->stage + c->head;
		struct kvr_frame f;
		struct kvr_rx_dest dst = {0};
		uint64_t need;
		int rc;

		rc = kvr_proto_decode(p, avail, c->lim, &f);
		if (rc == -EAGAIN)
			return;
		if (rc < 0) {
			proto_fail(c, rc, "bad frame header");
			return;
		}
		need = frame_need(&f);
		if (avail < need)
			return;
		c->rx_f = f;
		if (f.payload_len <= KVR_CONN_SMALL) {
			if (kvr_frame_trailer(&f))
				f.crc = kvr_get32(p + need - KVR_PROTO_CRC_LEN);
			rc = c->ops->on_frame(
			    c, &f, f.key_len ? p + KVR_PROTO_HDR_LEN : NULL,
			    f.payload_len ? p + KVR_PROTO_HDR_LEN + f.key_len : NULL, &dst);
			if (rc == KVR_CONN_DEFER) { /* stays staged, for after resume */
				kvr_conn_pause(c);
				return;
			}
			c->st.frames_in++;
			c->head += (uint32_t)need;
			c->rx_large = false;
			if (rc < 0 && !c->closing)
				proto_fail(c, rc, "frame refused");
			continue;
		}
		rc = c->ops->on_frame(c, &f, f.key_len ? p + KVR_PROTO_HDR_LEN : NULL, NULL, &dst);
		if (rc == KVR_CONN_DEFER) {
			kvr_conn_pause(c);
			return;
		}
		c->st.frames_in++;
		c->head += (uint32_t)need;
		if (rc < 0) {
			if (!c->closing)
				proto_fail(c, rc, "frame refused");
			return;
		}
		if (c->closing)
			return;
		if (dst.crc)
			*dst.crc = 0;
		kvr_sgl_init(&c->rx_cur, dst.sgx, dst.nsge, f.payload_len, dst.crc);
		c->rx_state = dst.nsge ? RX_DIRECT : RX_DISCARD;
		/* the trailer goes to rx_trailer; discarded, it is just bytes */
		c->rx_left = f.payload_len + (dst.nsge ? 0 : kvr_frame_trailer(&f));
		c->rx_tleft = dst.nsge ? kvr_frame_trailer(&f) : 0;
		avail = c->tail - c->head;
		if (avail) {
			uint64_t n = avail < c->rx_left ? avail : c->rx_left;

			if (c->rx_state == RX_DIRECT)
				rx_copy_in(c, c->stage + c->head, n);
			c->head += (uint32_t)n;
			c->rx_left -= n;
			avail -= (uint32_t)n;
		}
		if (!c->rx_left && c->rx_tleft && avail)
			rx_trailer_in(c, c->stage + c->head, avail);
		if (c->rx_left || c->rx_tleft)
			return;
		rx_payload_done(c);
	}
}

static void rx_done(struct kvr_io *io, int res, uint32_t flags)
{
	struct kvr_conn *c = KVR_CONTAINER_OF(io, struct kvr_conn, rx_io);

	(void)flags;
	c->rx_in_flight = false;
	if (c->closing) {
		conn_put(c);
		return;
	}
	if (res == -EINTR || res == -EAGAIN) {
		rx_next(c);
		conn_put(c);
		return;
	}
	if (res <= 0) {
		bool mid = c->rx_state != RX_HDR || c->head != c->tail;

		if (res < 0 || mid)
			kvr_log(c->e, KVR_LOG_INFO, "%s: %s", c->name,
				res < 0 ? strerror(-res) : "peer closed mid-frame");
		kvr_conn_close(c, res < 0 || mid ? -ECONNRESET : 0);
		conn_put(c);
		return;
	}
	c->st.bytes_in += (uint64_t)res;
	switch (c->rx_state) {
	case RX_DIRECT: {
		uint64_t n = (uint64_t)res, pl = n < c->rx_left ? n : c->rx_left;

		c->rx_left -= pl;
		c->rx_tleft -= (uint32_t)(n - pl); /* the recv asked for no more */
		rx_landed(c, pl);
		if (!c->rx_left && !c->rx_tleft)
			rx_payload_done(c);
		break;
	}
	case RX_DISCARD:
		c->rx_left -= (uint64_t)res;
		c->head = c->tail = 0;
		if (!c->rx_left)
			rx_payload_done(c);
		break;
	default:
		c->tail += (uint32_t)res;
		break;
	}
	rx_parse(c);
	rx_next(c);
	conn_put(c);
}

/* Set SO_RCVLOWAT when it changes. A failure only costs wake-ups. */
static void rx_lowat(struct kvr_conn *c, int v)
{
	if (c->rx_lowat == v)
		return;
	if (setsockopt(c->fd, SOL_SOCKET, SO_RCVLOWAT, &v, sizeof(v)) == 0)
		c->rx_lowat = v;
}

/* Post the next recv: straight into the destination for a large payload,
 * else into the staging buffer (exactly what the frame needs after a large
 * frame, as much as fits otherwise). */
static void rx_next(struct kvr_conn *c)
{
	struct io_uring_sqe *sqe;
	uint32_t want;

	if (c->rx_in_flight || c->closing)
		return;
	if (c->rx_state == RX_DIRECT) {
		/* the SGL's slices from the position on: at most KVR_MAX_SGE,
		 * which leaves rx_iov's last slot for the trailer */
		uint32_t n = kvr_sgl_fill_iov(&c->rx_cur, c->rx_iov, KVR_MAX_SGE, c->rx_left, NULL);

		if (c->rx_tleft) /* the crc trailer, after the payload */
			c->rx_iov[n++] = (struct iovec){
			    c->rx_trailer + KVR_PROTO_CRC_LEN - c->rx_tleft, c->rx_tleft};
		memset(&c->rx_msg, 0, sizeof(c->rx_msg));
		c->rx_msg.msg_iov = c->rx_iov;
		c->rx_msg.msg_iovlen = n;
		sqe = conn_sqe(c);
		if (c->rx_f.payload_len >= KVR_CONN_LOWAT_MIN) {
			/* Woken when the rest (up to the cap) is in; no MSG_WAITALL,
			 * whose retries would keep a low-water mark above what
			 * remains. A short recv comes back here with a lower one. */
			uint64_t due = c->rx_left + c->rx_tleft;

			rx_lowat(c, due < KVR_CONN_LOWAT_MAX ? (int)due : (int)KVR_CONN_LOWAT_MAX);
			io_uring_prep_recvmsg(sqe, c->fd, &c->rx_msg, 0);
		} else {
			io_uring_prep_recvmsg(sqe, c->fd, &c->rx_msg, MSG_WAITALL);
		}
	} else {
		if (c->rx_paused && c->rx_state == RX_HDR)
			return; /* the peer's bytes wait in the socket */
		rx_lowat(c, 1); /* headers: wake for any byte */
		if (c->rx_state == RX_DISCARD) {
			c->head = c->tail = 0;
			want =
			    c->rx_left < KVR_CONN_STAGING ? (uint32_t)c->rx_left : KVR_CONN_STAGING;
		} else {
			uint32_t avail = c->tail - c->head;
			struct kvr_frame f;
			uint64_t need = KVR_PROTO_HDR_LEN;

			if (kvr_proto_decode(c->stage + c->head, avail, c->lim, &f) > 0)
				need = frame_need(&f);
			if (c->head && (avail == 0 || c->head + need > KVR_CONN_STAGING ||
					KVR_CONN_STAGING - c->tail < KVR_CONN_STAGING / 4)) {
				memmove(c->stage, c->stage + c->head, avail);
				c->head = 0;
				c->tail = avail;
			}
			want = c->rx_large ? (uint32_t)(need - avail) : KVR_CONN_STAGING - c->tail;
		}
		sqe = conn_sqe(c);
		io_uring_prep_recv(sqe, c->fd, c->stage + c->tail, want, 0);
	}
	io_uring_sqe_set_data(sqe, &c->rx_io);
	c->st.recvs++;
	c->rx_in_flight = true;
}

/* ------------------------------------------------------------ open/close */

static void set_sockopts(int fd)
{
	int one = 1;

	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static void connect_done(struct kvr_io *io, int res, uint32_t flags)
{
	struct kvr_conn *c = KVR_CONTAINER_OF(io, struct kvr_conn, conn_io);

	(void)flags;
	if (c->closing) {
		conn_put(c);
		return;
	}
	if (res < 0) {
		if (c->ops->on_open)
			c->ops->on_open(c, res);
		kvr_conn_close(c, res);
		conn_put(c);
		return;
	}
	c->open = true;
	if (c->ops->on_open)
		c->ops->on_open(c, 0);
	rx_next(c);
	conn_put(c);
}

int kvr_conn_connect(struct kvr_conn *c, const struct sockaddr *sa, socklen_t len)
{
	struct io_uring_sqe *sqe;
	int fd;

	if (len > sizeof(c->peer))
		return -EINVAL;
	fd = socket(sa->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	set_sockopts(fd);
	c->fd = fd;
	memcpy(&c->peer, sa, len);
	c->peer_len = len;
	sqe = conn_sqe(c);
	io_uring_prep_connect(sqe, fd, (struct sockaddr *)&c->peer, len);
	io_uring_sqe_set_data(sqe, &c->conn_io);
	return 0;
}

void kvr_conn_adopt(struct kvr_conn *c, int fd)
{
	set_sockopts(fd);
	c->fd = fd;
	c->open = true;
	rx_next(c);
}

static void cancel_io(struct kvr_conn *c, struct kvr_io *io)
{
	struct io_uring_sqe *sqe = kvr_sqe(c->e);

	io_uring_prep_cancel(sqe, io, 0);
	io_uring_sqe_set_data(sqe, NULL);
}

void kvr_conn_close(struct kvr_conn *c, int err)
{
	struct kvr_tx *q;

	if (c->closing)
		return;
	c->closing = true;
	c->err = err;
	if (c->fd >= 0) {
		/* Ends a recv or send blocked on a silent peer; cancels cover a
		 * connect still in progress. */
		shutdown(c->fd, SHUT_RDWR);
		if (c->rx_in_flight)
			cancel_io(c, &c->rx_io);
		for (int i = 0; i < 2; i++)
			if (c->send[i].in_flight)
				cancel_io(c, &c->send[i].io);
		if (!c->open)
			cancel_io(c, &c->conn_io);
	}
	q = c->q_head;
	c->q_head = c->q_tail = NULL;
	tx_fail_list(q, err ? err : -ECONNRESET);
	maybe_finish(c);
}

static void maybe_finish(struct kvr_conn *c)
{
	if (!c->closing || c->closed || c->sqes)
		return;
	c->closed = true;
	c->open = false;
	for (int i = 0; i < 2; i++)
		if (c->send[i].busy) /* every CQE is in: the buffers are free */
			send_release(&c->send[i], c->send[i].iov_off == c->send[i].niov ? 0
						  : c->err				? c->err
							   : -ECONNRESET);
	if (c->q_head) {
		struct kvr_tx *q = c->q_head;

		c->q_head = c->q_tail = NULL;
		tx_fail_list(q, c->err ? c->err : -ECONNRESET);
	}
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	c->ops->on_close(c, c->err);
}

int kvr_conn_init(struct kvr_conn *c, kvr_engine *e, const struct kvr_conn_ops *ops, void *owner,
		  const struct kvr_proto_limits *lim, uint32_t zc_min)
{
	struct io_uring_probe *probe;

	memset(c, 0, sizeof(*c));
	c->stage = malloc(KVR_CONN_STAGING);
	if (!c->stage)
		return -ENOMEM;
	c->e = e;
	c->ops = ops;
	c->owner = owner;
	c->fd = -1;
	c->rx_lowat = 1;
	c->lim = lim;
	c->zc_min = zc_min;
	c->name = "conn";
	c->rx_io.fn = rx_done;
	c->conn_io.fn = connect_done;
	for (int i = 0; i < 2; i++) {
		c->send[i].io.fn = send_done;
		c->send[i].c = c;
	}
	probe = io_uring_get_probe_ring(&e->ring);
	c->zc_ok =
	    probe && io_uring_opcode_supported(probe, IORING_OP_SENDMSG_ZC) && zc_min != UINT32_MAX;
	if (probe)
		io_uring_free_probe(probe);
	c->flush.fn = conn_flush;
	kvr_flush_add(e, &c->flush);
	return 0;
}

void kvr_conn_fini(struct kvr_conn *c)
{
	if (!c->stage)
		return;
	kvr_flush_del(c->e, &c->flush);
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	free(c->stage);
	c->stage = NULL;
}
