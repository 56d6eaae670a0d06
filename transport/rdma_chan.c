/* SPDX-License-Identifier: MIT */
/*
 * RDMA channels (see rdma.h): an RC queue pair, its receive and send
 * slots, staging of the round's work requests, send-queue accounting with
 * selective signaling, and the close that drains everything through the
 * error state.
 */
#include "transport/rdma.h"

#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#define RETRY_TIMEOUT 14 /* 4.096 us * 2^14 = 67 ms per transport retry */
#define RETRY_COUNT   7
#define RNR_RETRY     7 /* infinite: the peer reposts its receives soon */
#define MIN_RNR_TIMER 12
#define MAX_SGE	      32u

/* ------------------------------------------------------------- receive */

static void recv_done(struct rdma_wr *w, const struct ibv_wc *wc)
{
	struct rdma_slot_wr *rs = KVR_CONTAINER_OF(w, struct rdma_slot_wr, w);
	struct rdma_chan *ch = w->ch;
	struct kvr_rmsg m;
	int rc;

	if (wc->status != IBV_WC_SUCCESS || ch->closing || ch->failed)
		return; /* flushed, or the channel already failed */
	rc = kvr_rmsg_decode(ch->rbuf + (size_t)rs->idx * RDMA_SLOT, wc->byte_len, &ch->lim, &m);
	if (rc) {
		kvr_log(ch->ctx->e, KVR_LOG_WARN, "%s: qp %u: bad message (%u bytes): %s; closing",
			ch->d->name, ch->qp->qp_num, wc->byte_len, strerror(-rc));
		rdma_chan_fail(ch, -EPROTO);
		return;
	}
	ch->ops->on_msg(ch, &m, rs->idx);
}

void rdma_chan_recv_done(struct rdma_chan *ch, uint32_t slot)
{
	if (ch->closing)
		return; /* it is not posted again */
	ch->rq_stage[ch->nrq_stage++] = slot;
}

static int post_recvs(struct rdma_chan *ch)
{
	struct ibv_recv_wr *bad;
	uint32_t n = ch->nrq_stage;
	int rc;

	for (uint32_t i = 0; i < n; i++) {
		uint32_t s = ch->rq_stage[i];

		ch->rsge[i] =
		    (struct ibv_sge){(uint64_t)(uintptr_t)(ch->rbuf + (size_t)s * RDMA_SLOT),
				     RDMA_SLOT, ch->rmr->lkey};
		ch->rwr[i] = (struct ibv_recv_wr){.wr_id = (uint64_t)(uintptr_t)&ch->rs[s].w,
						  .next = i + 1 < n ? &ch->rwr[i + 1] : NULL,
						  .sg_list = &ch->rsge[i],
						  .num_sge = 1};
	}
	ch->nrq_stage = 0;
	rc = ibv_post_recv(ch->qp, ch->rwr, &bad);
	ch->ctx->st.recv_posts++;
	if (rc) {
		uint32_t ok = (uint32_t)(bad - ch->rwr);

		ch->rq_posted += ok;
		kvr_log(ch->ctx->e, KVR_LOG_WARN, "%s: ibv_post_recv: %s", ch->d->name,
			strerror(rc));
		return -rc;
	}
	ch->rq_posted += n;
	return 0;
}

/* ---------------------------------------------------------------- send */

bool rdma_chan_can(const struct rdma_chan *ch, uint32_t nwr, bool slot)
{
	if (ch->sq_seq - ch->sq_done + nwr > ch->sq_cap || ch->nwr + nwr > ch->sq_cap)
		return false;
	return !slot || ch->ss_seq[ch->ss_next] <= ch->sq_done;
}

uint8_t *rdma_chan_send_slot(struct rdma_chan *ch)
{
	uint32_t i = ch->ss_next;

	ch->ss_seq[i] = ch->sq_seq + 1; /* the WR staged next */
	ch->ss_next = (i + 1) % ch->nss;
	return ch->sbuf + (size_t)i * RDMA_SLOT;
}

/* A signaled request: its completion only frees room (see dispatch). */
static void slot_wr_done(struct rdma_wr *w, const struct ibv_wc *wc)
{
	(void)w;
	(void)wc;
}

struct rdma_wr *rdma_chan_slot_wr(struct rdma_chan *ch)
{
	uint32_t i = (ch->ss_next + ch->nss - 1) % ch->nss;

	return &ch->ss_wr[i];
}

uint32_t rdma_chan_send_lkey(const struct rdma_chan *ch)
{
	return ch->smr->lkey;
}

struct ibv_sge *rdma_chan_sges(struct rdma_chan *ch)
{
	return ch->sge + (size_t)ch->nwr * ch->max_sge;
}

struct ibv_send_wr *rdma_chan_stage(struct rdma_chan *ch, struct rdma_wr *w)
{
	struct ibv_send_wr *wr = &ch->wr[ch->nwr++];

	memset(wr, 0, sizeof(*wr));
	wr->sg_list = ch->sge + (size_t)(ch->nwr - 1) * ch->max_sge;
	ch->sq_seq++;
	if (w) {
		w->ch = ch;
		w->seq = ch->sq_seq;
		w->recv = false;
		wr->wr_id = (uint64_t)(uintptr_t)w;
		wr->send_flags = IBV_SEND_SIGNALED;
		ch->sig_out++;
		ch->unsig = 0;
	} else {
		ch->unsig++;
	}
	return wr;
}

/* Work requests that will never reach the device (a post failed): complete
 * the signaled ones as flushed so their owners release what they hold. */
static void flush_unposted(struct rdma_chan *ch, struct ibv_send_wr *from, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++) {
		struct rdma_wr *w = (struct rdma_wr *)(uintptr_t)from[i].wr_id;
		struct ibv_wc wc = {.wr_id = from[i].wr_id, .status = IBV_WC_WR_FLUSH_ERR};

		if (!w)
			continue;
		ch->sig_out--;
		w->fn(w, &wc);
	}
}

static void post_sends(struct rdma_chan *ch)
{
	struct ibv_send_wr *bad = NULL;
	uint32_t n = ch->nwr;
	int rc;

	for (uint32_t i = 0; i + 1 < n; i++)
		ch->wr[i].next = &ch->wr[i + 1];
	ch->wr[n - 1].next = NULL;
	ch->nwr = 0;
	rc = ibv_post_send(ch->qp, ch->wr, &bad);
	ch->ctx->st.posts++;
	ch->ctx->st.wrs += n;
	if (rc) {
		uint32_t ok = bad ? (uint32_t)(bad - ch->wr) : 0;

		if (!ch->closing)
			kvr_log(ch->ctx->e, KVR_LOG_WARN, "%s: ibv_post_send of %u WRs: %s",
				ch->d->name, n, strerror(rc));
		flush_unposted(ch, ch->wr + ok, n - ok);
		rdma_chan_fail(ch, -EIO);
	}
}

void rdma_chan_flush(struct rdma_chan *ch)
{
	/* Receives first: an answer to what we send may come back at once. */
	if (ch->nrq_stage && post_recvs(ch))
		rdma_chan_fail(ch, -EIO);
	if (ch->nwr)
		post_sends(ch);
	rdma_chan_completed(ch);
}

static void append(struct rdma_pending **head, struct rdma_pending **tail, struct rdma_pending *p)
{
	if (*tail)
		(*tail)->next = p;
	else
		*head = p;
	*tail = p;
}

void rdma_chan_when_room(struct rdma_chan *ch, struct rdma_pending *p)
{
	p->next = NULL;
	if (ch->closing) {
		p->drop(p);
		return;
	}
	if (p->mr && rdma_mr_range(ch->d, p->mr, p->addr, p->len) == -EAGAIN) {
		append(&ch->mem_head, &ch->mem_tail, p);
		return;
	}
	if (!ch->pend_head && rdma_chan_can(ch, p->nwr, p->slot)) {
		p->run(p);
		return;
	}
	append(&ch->pend_head, &ch->pend_tail, p);
}

void rdma_chan_mem_ready(struct rdma_chan *ch)
{
	struct rdma_pending *p = ch->mem_head;

	/* In order; what still waits goes back to the (emptied) list. */
	ch->mem_head = ch->mem_tail = NULL;
	while (p) {
		struct rdma_pending *next = p->next;

		rdma_chan_when_room(ch, p);
		p = next;
	}
}

/* Send queue room came back: run what waits for it, in order. */
static void run_pending(struct rdma_chan *ch)
{
	struct rdma_pending *p;

	while ((p = ch->pend_head) && !ch->closing && rdma_chan_can(ch, p->nwr, p->slot)) {
		ch->pend_head = p->next;
		if (!ch->pend_head)
			ch->pend_tail = NULL;
		p->next = NULL;
		p->run(p);
	}
}

/* --------------------------------------------------------------- close */

void rdma_chan_completed(struct rdma_chan *ch)
{
	if (!ch->closing) {
		if (ch->pend_head)
			run_pending(ch);
		return;
	}
	if (ch->drained || ch->rq_posted || ch->sig_out || ch->nwr)
		return;
	ch->drained = true;
	ch->ctx->drains--;
	ch->ops->on_drained(ch);
}

static void drain_done(struct rdma_wr *w, const struct ibv_wc *wc)
{
	(void)w;
	(void)wc; /* dispatch then sees whether the channel drained */
}

void rdma_chan_fail(struct rdma_chan *ch, int err)
{
	if (ch->failed || ch->closing)
		return;
	ch->failed = true;
	ch->err = err;
	ch->ops->on_error(ch, err);
}

void rdma_chan_close(struct rdma_chan *ch, int err)
{
	struct rdma_ctx *ctx = ch->ctx;
	struct ibv_qp_attr a = {.qp_state = IBV_QPS_ERR};
	struct rdma_pending *p;

	if (ch->closing)
		return;
	ch->closing = true;
	if (!ch->err)
		ch->err = err;
	ctx->drains++;
	/* From here on the peer cannot touch our memory. */
	if (ibv_modify_qp(ch->qp, &a, IBV_QP_STATE))
		kvr_log(ctx->e, KVR_LOG_WARN, "%s: qp %u to error state failed", ch->d->name,
			ch->qp->qp_num);
	ch->up = false;
	/* unlink from the open channels; freed from the dead list once drained */
	if (ch->prev)
		ch->prev->next = ch->next;
	else
		ctx->chans = ch->next;
	if (ch->next)
		ch->next->prev = ch->prev;
	ch->prev = NULL;
	ch->next = ctx->dead;
	ctx->dead = ch;
	ch->nrq_stage = 0;
	while ((p = ch->pend_head)) {
		ch->pend_head = p->next;
		p->next = NULL;
		p->drop(p);
	}
	ch->pend_tail = NULL;
	while ((p = ch->mem_head)) {
		ch->mem_head = p->next;
		p->next = NULL;
		p->drop(p);
	}
	ch->mem_tail = NULL;
	/* What this round staged goes to the device flushed; then a marker
	 * behind it: once the marker is back, every earlier WR is too, the
	 * unsignaled ones included. */
	if (ch->nwr)
		post_sends(ch);
	if (rdma_chan_can(ch, 1, false)) {
		struct ibv_send_wr *bad, wr = {.wr_id = (uint64_t)(uintptr_t)&ch->drain_wr,
					       .opcode = IBV_WR_SEND,
					       .send_flags = IBV_SEND_SIGNALED};

		ch->drain_wr = (struct rdma_wr){.fn = drain_done, .ch = ch, .seq = ch->sq_seq + 1};
		if (ibv_post_send(ch->qp, &wr, &bad) == 0) {
			ch->sq_seq++;
			ch->sig_out++;
		}
	}
	rdma_chan_completed(ch);
}

/* ---------------------------------------------------------------- setup */

static int qp_init(struct rdma_chan *ch)
{
	struct ibv_qp_attr a = {
	    .qp_state = IBV_QPS_INIT,
	    .pkey_index = 0,
	    .port_num = ch->d->port,
	    .qp_access_flags = ch->passive ? IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_READ |
						 IBV_ACCESS_REMOTE_WRITE
					   : IBV_ACCESS_LOCAL_WRITE,
	};

	return ibv_modify_qp(ch->qp, &a,
			     IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS);
}

int rdma_chan_connect(struct rdma_chan *ch, const struct kvr_hello_rdma *peer)
{
	struct rdma_dev *d = ch->d;
	uint8_t rd_in = (uint8_t)(d->attr.max_qp_rd_atom < 16 ? d->attr.max_qp_rd_atom : 16);
	uint8_t rd_out =
	    (uint8_t)(d->attr.max_qp_init_rd_atom < peer->rd_atomic ? d->attr.max_qp_init_rd_atom
								    : peer->rd_atomic);
	struct ibv_qp_attr a = {
	    .qp_state = IBV_QPS_RTR,
	    .path_mtu = (enum ibv_mtu)(peer->mtu < d->mtu ? peer->mtu : d->mtu),
	    .dest_qp_num = peer->qpn,
	    .rq_psn = peer->psn,
	    .max_dest_rd_atomic = rd_in ? rd_in : 1,
	    .min_rnr_timer = MIN_RNR_TIMER,
	    .ah_attr =
		{
		    .is_global = 1,
		    .dlid = peer->lid,
		    .port_num = d->port,
		    .grh = {.hop_limit = 64, .sgid_index = (uint8_t)ch->gid_index},
		},
	};
	int rc;

	if (peer->slot < KVR_RMSG_HDR_LEN + KVR_MAX_KEY || !peer->depth || !peer->max_desc)
		return -EPROTO;
	memcpy(a.ah_attr.grh.dgid.raw, peer->gid, sizeof(peer->gid));
	rc = ibv_modify_qp(ch->qp, &a,
			   IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN |
			       IBV_QP_RQ_PSN | IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER);
	if (rc) {
		kvr_log(ch->ctx->e, KVR_LOG_WARN, "%s: qp %u to RTR: %s", d->name, ch->qp->qp_num,
			strerror(rc));
		return -rc;
	}
	memset(&a, 0, sizeof(a));
	a.qp_state = IBV_QPS_RTS;
	a.timeout = RETRY_TIMEOUT;
	a.retry_cnt = RETRY_COUNT;
	a.rnr_retry = RNR_RETRY;
	a.sq_psn = ch->psn;
	a.max_rd_atomic = rd_out ? rd_out : 1;
	rc = ibv_modify_qp(ch->qp, &a,
			   IBV_QP_STATE | IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT | IBV_QP_RNR_RETRY |
			       IBV_QP_SQ_PSN | IBV_QP_MAX_QP_RD_ATOMIC);
	if (rc) {
		kvr_log(ch->ctx->e, KVR_LOG_WARN, "%s: qp %u to RTS: %s", d->name, ch->qp->qp_num,
			strerror(rc));
		return -rc;
	}
	ch->peer_slot = peer->slot < RDMA_SLOT ? peer->slot : RDMA_SLOT;
	ch->peer_desc = peer->max_desc;
	ch->peer_rd_atomic = peer->rd_atomic;
	ch->up = true;
	return 0;
}

void rdma_chan_local(const struct rdma_chan *ch, struct kvr_hello_rdma *out)
{
	const struct rdma_dev *d = ch->d;
	int rd = d->attr.max_qp_rd_atom < 16 ? d->attr.max_qp_rd_atom : 16;

	memset(out, 0, sizeof(*out));
	memcpy(out->gid, ch->gid.raw, sizeof(out->gid));
	out->qpn = ch->qp->qp_num;
	out->psn = ch->psn;
	out->lid = d->lid;
	out->mtu = (uint8_t)d->mtu;
	out->rd_atomic = (uint8_t)(rd > 0 ? rd : 1);
	out->depth = (uint16_t)ch->depth;
	out->max_desc = ch->lim.max_desc ? ch->lim.max_desc : 1;
	out->slot = RDMA_SLOT;
}

void rdma_chan_free(struct rdma_chan *ch)
{
	if (ch->qp)
		ibv_destroy_qp(ch->qp);
	if (ch->rmr)
		ibv_dereg_mr(ch->rmr);
	if (ch->smr)
		ibv_dereg_mr(ch->smr);
	rdma_dev_cq_release(ch->d, (int)(ch->sq_cap + 1 + ch->depth));
	free(ch->rbuf);
	free(ch->sbuf);
	free(ch->rs);
	free(ch->rq_stage);
	free(ch->ss_seq);
	free(ch->ss_wr);
	free(ch->wr);
	free(ch->sge);
	free(ch->rwr);
	free(ch->rsge);
	free(ch);
}

int rdma_chan_new(struct rdma_dev *d, int gid_index, uint32_t sq_cap, bool passive,
		  const struct kvr_rmsg_limits *lim, const struct rdma_chan_ops *ops, void *owner,
		  struct rdma_chan **out)
{
	struct rdma_ctx *ctx = d->ctx;
	struct rdma_chan *ch;
	struct ibv_qp_init_attr qa;
	uint32_t depth = RDMA_DEPTH;
	int rc;

	if (d->dead)
		return -EIO;
	if (sq_cap + 1 > (uint32_t)d->attr.max_qp_wr)
		sq_cap = (uint32_t)d->attr.max_qp_wr - 1;
	if (depth > (uint32_t)d->attr.max_qp_wr)
		depth = (uint32_t)d->attr.max_qp_wr;
	rc = rdma_dev_cq_reserve(d, (int)(sq_cap + 1 + depth));
	if (rc)
		return rc;
	ch = calloc(1, sizeof(*ch));
	if (!ch) {
		rdma_dev_cq_release(d, (int)(sq_cap + 1 + depth));
		return -ENOMEM;
	}
	ch->ctx = ctx;
	ch->d = d;
	ch->ops = ops;
	ch->owner = owner;
	ch->passive = passive;
	ch->lim = *lim;
	ch->depth = depth;
	ch->sq_cap = sq_cap;
	ch->nss = depth;
	ch->gid_index = gid_index < 0 ? d->def_gid : gid_index;
	ch->max_sge = (uint32_t)d->attr.max_sge < MAX_SGE ? (uint32_t)d->attr.max_sge : MAX_SGE;
	ch->drain_wr.ch = ch;
	if (ibv_query_gid(d->vctx, d->port, ch->gid_index, &ch->gid)) {
		kvr_set_errmsg(ctx->e, "%s: no GID at index %d", d->name, ch->gid_index);
		rc = -EINVAL;
		goto fail;
	}
	if (getrandom(&ch->psn, sizeof(ch->psn), 0) != sizeof(ch->psn))
		ch->psn = (uint32_t)kvr_now_ns();
	ch->psn &= 0xffffff;
	rc = -ENOMEM;
	ch->rbuf = aligned_alloc(4096, (size_t)depth * RDMA_SLOT);
	ch->sbuf = aligned_alloc(4096, (size_t)ch->nss * RDMA_SLOT);
	ch->rs = calloc(depth, sizeof(*ch->rs));
	ch->rq_stage = calloc(depth, sizeof(*ch->rq_stage));
	ch->ss_seq = calloc(ch->nss, sizeof(*ch->ss_seq));
	ch->ss_wr = calloc(ch->nss, sizeof(*ch->ss_wr));
	ch->wr = calloc(sq_cap, sizeof(*ch->wr));
	ch->sge = calloc((size_t)sq_cap * ch->max_sge, sizeof(*ch->sge));
	ch->rwr = calloc(depth, sizeof(*ch->rwr));
	ch->rsge = calloc(depth, sizeof(*ch->rsge));
	if (!ch->rbuf || !ch->sbuf || !ch->rs || !ch->rq_stage || !ch->ss_seq || !ch->ss_wr ||
	    !ch->wr || !ch->sge || !ch->rwr || !ch->rsge)
		goto fail;
	for (uint32_t i = 0; i < ch->nss; i++)
		ch->ss_wr[i].fn = slot_wr_done;
	ch->rmr = ibv_reg_mr(d->pd, ch->rbuf, (size_t)depth * RDMA_SLOT, IBV_ACCESS_LOCAL_WRITE);
	ch->smr = ch->rmr ? ibv_reg_mr(d->pd, ch->sbuf, (size_t)ch->nss * RDMA_SLOT, 0) : NULL;
	if (!ch->smr) {
		rc = -(errno ? errno : ENOMEM);
		kvr_set_errmsg(ctx->e, "%s: registering message buffers: %s", d->name,
			       strerror(-rc));
		goto fail;
	}
	memset(&qa, 0, sizeof(qa));
	qa.qp_context = ch;
	qa.send_cq = d->cq;
	qa.recv_cq = d->cq;
	qa.qp_type = IBV_QPT_RC;
	qa.cap.max_send_wr = sq_cap + 1; /* + the drain marker */
	qa.cap.max_recv_wr = depth;
	qa.cap.max_send_sge = ch->max_sge;
	qa.cap.max_recv_sge = 1;
	ch->qp = ibv_create_qp(d->pd, &qa);
	if (!ch->qp) {
		rc = -(errno ? errno : ENOMEM);
		kvr_set_errmsg(ctx->e, "%s: ibv_create_qp: %s", d->name, strerror(-rc));
		goto fail;
	}
	if (qa.cap.max_send_sge < ch->max_sge)
		ch->max_sge = qa.cap.max_send_sge;
	rc = qp_init(ch);
	if (rc) {
		rc = -rc;
		kvr_set_errmsg(ctx->e, "%s: qp to INIT: %s", d->name, strerror(-rc));
		goto fail;
	}
	for (uint32_t i = 0; i < depth; i++) {
		ch->rs[i] =
		    (struct rdma_slot_wr){.w = {.fn = recv_done, .ch = ch, .recv = true}, .idx = i};
		ch->rq_stage[ch->nrq_stage++] = i;
	}
	rc = post_recvs(ch); /* now: the peer may send as soon as it is connected */
	if (rc)
		goto fail;
	ch->next = ctx->chans;
	if (ctx->chans)
		ctx->chans->prev = ch;
	ctx->chans = ch;
	*out = ch;
	return 0;
fail:
	if (ch->qp) {
		ibv_destroy_qp(ch->qp);
		ch->qp = NULL;
	}
	rdma_chan_free(ch);
	return rc;
}
