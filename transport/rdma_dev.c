/* SPDX-License-Identifier: MIT */
/*
 * RDMA devices of one engine (see rdma.h): open on first use, one PD, CQ
 * and completion channel each, joined to the engine's ring; every
 * registered region registered on every open device (a deferred one piece
 * by piece); completions
 * dispatched to the work requests' handlers; the round's work posted once
 * per queue pair.
 */
#include "transport/rdma.h"

#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#define CQ_START   4096
#define ACK_BATCH  64u
#define POLL_BATCH 32

static const char ctx_key[] = "rdma";

unsigned rdma_mtu_bytes(enum ibv_mtu m)
{
	return m >= IBV_MTU_256 && m <= IBV_MTU_4096 ? 128u << m : 0;
}

static struct rdma_region *region_of(const struct rdma_dev *d, const struct kvr_mr *mr)
{
	return mr->ext[d->ctx->ml.slot];
}

struct ibv_mr *rdma_mr_of(const struct rdma_dev *d, const struct kvr_mr *mr)
{
	const struct rdma_region *rr = region_of(d, mr);

	return rr && rr->npieces == 1 ? rr->mr[d->idx] : NULL;
}

struct ibv_mr *rdma_mr_at(const struct rdma_dev *d, const struct kvr_mr *mr, uintptr_t addr)
{
	const struct rdma_region *rr = region_of(d, mr);
	uint32_t i;

	if (!rr)
		return NULL;
	i = rr->npieces == 1 ? 0 : (uint32_t)((addr - mr->base) / KVR_FIXED_MAX);
	return rr->mr[d->idx * rr->npieces + i];
}

int rdma_mr_range(const struct rdma_dev *d, const struct kvr_mr *mr, uintptr_t addr, uint64_t len)
{
	const struct rdma_region *rr = region_of(d, mr);
	uint32_t first, last;

	if (!rr)
		return -EFAULT;
	if (!mr->piece_ready)
		return rr->mr[d->idx] ? 0 : -EFAULT;
	first = (uint32_t)((addr - mr->base) / KVR_FIXED_MAX);
	last = (uint32_t)((addr + (len ? len : 1) - 1 - mr->base) / KVR_FIXED_MAX);
	for (uint32_t i = first; i <= last; i++)
		if (!rr->mr[d->idx * rr->npieces + i])
			return rr->err[d->idx] ? rr->err[d->idx] : -EAGAIN;
	return 0;
}

/* ------------------------------------------------------------ regions */

static int reg_error(struct rdma_dev *d, size_t len, int err)
{
	struct rlimit rl;

	if ((err == ENOMEM || err == EPERM) && getrlimit(RLIMIT_MEMLOCK, &rl) == 0 &&
	    rl.rlim_cur != RLIM_INFINITY) {
		kvr_set_errmsg(d->ctx->e,
			       "%s: registering %zu bytes failed: RLIMIT_MEMLOCK is %llu bytes "
			       "(raise it with ulimit -l or limits.conf)",
			       d->name, len, (unsigned long long)rl.rlim_cur);
		return -ENOMEM;
	}
	kvr_set_errmsg(d->ctx->e, "%s: ibv_reg_mr of %zu bytes: %s", d->name, len, strerror(err));
	return -err;
}

/*
 * Device memory, for GPUDirect RDMA: a dmabuf of the range from the
 * device memory provider (ibv_reg_dmabuf_mr), else plain ibv_reg_mr, which
 * works where a peer-memory kernel module is loaded. When neither does,
 * the region simply has no MR on this device: batches touching it are then
 * staged through host memory like for any other target, and the log says
 * why.
 */
static struct ibv_mr *reg_device(struct rdma_dev *d, struct kvr_mr *mr, int access)
{
	kvr_engine *e = d->ctx->e;
	struct ibv_mr *m = NULL;
	uint64_t off = 0;
	int fd = -1;

	if (e->devmem && e->devmem->dmabuf &&
	    e->devmem->dmabuf(e->devmem, (void *)mr->base, mr->len, &fd, &off) == 0) {
		m = ibv_reg_dmabuf_mr(d->pd, off, mr->len, mr->base, fd, access);
		close(fd);
		if (m)
			return m;
	}
	m = ibv_reg_mr(d->pd, (void *)mr->base, mr->len, access);
	if (!m)
		kvr_log(e, KVR_LOG_WARN,
			"%s: no GPUDirect for device memory %p+%zu (dmabuf and peer memory both "
			"failed: %s): it is staged through host memory",
			d->name, (void *)mr->base, mr->len, strerror(errno ? errno : EOPNOTSUPP));
	return m;
}

#define ACCESS (IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_READ | IBV_ACCESS_REMOTE_WRITE)

/* Register piece i of a deferred region on d. 0 or -errno (errmsg set). */
static int reg_piece(struct rdma_dev *d, struct kvr_mr *mr, struct rdma_region *rr, uint32_t i)
{
	uintptr_t off = (uintptr_t)i * KVR_FIXED_MAX;
	size_t len = mr->len - off < KVR_FIXED_MAX ? mr->len - off : KVR_FIXED_MAX;
	struct ibv_mr **slot = &rr->mr[d->idx * rr->npieces + i];

	if (*slot)
		return 0;
	*slot = ibv_reg_mr(d->pd, (void *)(mr->base + off), len, ACCESS);
	return *slot ? 0 : reg_error(d, len, errno ? errno : ENOMEM);
}

static int reg_on(struct rdma_dev *d, struct kvr_mr *mr)
{
	struct rdma_region *rr = region_of(d, mr);

	if (!rr) {
		uint32_t n = mr->piece_ready ? kvr_mr_npieces(mr) : 1;

		rr = calloc(1, sizeof(*rr) + (size_t)RDMA_MAX_DEVS * n * sizeof(rr->mr[0]));
		if (!rr)
			return -ENOMEM;
		rr->npieces = n;
		mr->ext[d->ctx->ml.slot] = rr;
	}
	if (mr->flags & KVR_MEM_CUDA) {
		rr->mr[d->idx] = reg_device(d, mr, ACCESS);
		return 0; /* without one: staged */
	}
	if (mr->piece_ready) { /* the pieces ready so far; the rest as they come */
		for (uint32_t i = 0; i < rr->npieces; i++) {
			int rc = kvr_mr_piece_ready(mr, i) ? reg_piece(d, mr, rr, i) : 0;

			if (rc)
				return rc;
		}
		return 0;
	}
	rr->mr[d->idx] = ibv_reg_mr(d->pd, (void *)mr->base, mr->len, ACCESS);
	if (!rr->mr[d->idx])
		return reg_error(d, mr->len, errno ? errno : ENOMEM);
	return 0;
}

static void unreg_on(struct rdma_dev *d, struct kvr_mr *mr)
{
	struct rdma_region *rr = region_of(d, mr);

	for (uint32_t i = 0; rr && i < rr->npieces; i++) {
		struct ibv_mr **slot = &rr->mr[d->idx * rr->npieces + i];

		if (*slot)
			ibv_dereg_mr(*slot);
		*slot = NULL;
	}
}

static int ml_added(struct kvr_mem_listener *l, struct kvr_mr *mr)
{
	struct rdma_ctx *ctx = KVR_CONTAINER_OF(l, struct rdma_ctx, ml);

	for (uint32_t i = 0; i < ctx->ndevs; i++) {
		int rc = reg_on(ctx->devs[i], mr);

		if (rc) {
			while (i-- > 0)
				unreg_on(ctx->devs[i], mr);
			free(mr->ext[l->slot]);
			mr->ext[l->slot] = NULL;
			return rc;
		}
	}
	return 0;
}

/* A piece of a deferred region is faulted in: register it on every device
 * (on the engine thread, milliseconds per GiB of present pages), then let
 * the channels start the work that waited for it. */
static void ml_piece_ready(struct kvr_mem_listener *l, struct kvr_mr *mr, uint32_t i)
{
	struct rdma_ctx *ctx = KVR_CONTAINER_OF(l, struct rdma_ctx, ml);
	struct rdma_region *rr = mr->ext[l->slot];
	struct rdma_chan *ch, *next;

	if (!rr)
		return; /* no device open yet: each registers what is ready then */
	for (uint32_t k = 0; k < ctx->ndevs; k++) {
		struct rdma_dev *d = ctx->devs[k];
		uint64_t t0 = kvr_now_ns();
		int rc = reg_piece(d, mr, rr, i);

		if (rc) {
			/* What waits for the piece fails rather than waiting on. */
			rr->err[d->idx] = rc;
			kvr_log(ctx->e, KVR_LOG_ERROR, "%s: GiB %u of region %p: %s", d->name, i,
				(void *)mr->base, kvr_engine_errmsg(ctx->e));
			continue;
		}
		kvr_log(ctx->e, KVR_LOG_DEBUG, "%s: GiB %u of region %p registered (%.1f ms)",
			d->name, i, (void *)mr->base, (double)(kvr_now_ns() - t0) / 1e6);
		if (rdma_mr_range(d, mr, mr->base, mr->len) == 0)
			kvr_log(ctx->e, KVR_LOG_INFO, "%s: all %u GiB of region %p registered",
				d->name, rr->npieces, (void *)mr->base);
	}
	for (ch = ctx->chans; ch; ch = next) {
		next = ch->next;
		rdma_chan_mem_ready(ch);
	}
}

static void ml_removed(struct kvr_mem_listener *l, struct kvr_mr *mr)
{
	struct rdma_ctx *ctx = KVR_CONTAINER_OF(l, struct rdma_ctx, ml);

	for (uint32_t i = 0; i < ctx->ndevs; i++)
		unreg_on(ctx->devs[i], mr);
	free(mr->ext[l->slot]);
	mr->ext[l->slot] = NULL;
}

/* ---------------------------------------------------------- completions */

static void dispatch(struct rdma_ctx *ctx, const struct ibv_wc *wc)
{
	struct rdma_wr *w = (struct rdma_wr *)(uintptr_t)wc->wr_id;
	struct rdma_chan *ch;

	if (!w)
		return; /* an unsignaled WR flushed at close */
	ch = w->ch;
	if (w->recv) {
		ch->rq_posted--;
	} else {
		ch->sig_out--;
		if (wc->status == IBV_WC_SUCCESS && w->seq > ch->sq_done)
			ch->sq_done = w->seq;
	}
	/* A flush before we closed means the queue pair went to the error
	 * state by itself (e.g. the peer broke the rules): a failure too. */
	if (wc->status != IBV_WC_SUCCESS && !ch->closing && !ch->failed) {
		kvr_log(ctx->e, KVR_LOG_WARN, "%s: qp %u: work completion: %s (vendor %u)",
			ch->d->name, ch->qp->qp_num, ibv_wc_status_str(wc->status), wc->vendor_err);
		rdma_chan_fail(ch, wc->status == IBV_WC_REM_ACCESS_ERR ||
					   wc->status == IBV_WC_LOC_PROT_ERR ||
					   wc->status == IBV_WC_LOC_ACCESS_ERR
				       ? -EFAULT
				       : -ECONNRESET);
	}
	w->fn(w, wc);
	rdma_chan_completed(ch); /* room came back: what waits for it runs */
}

static void poll_dev(struct rdma_dev *d)
{
	struct rdma_ctx *ctx = d->ctx;
	struct ibv_wc wc[POLL_BATCH];
	int n;

	do {
		n = ibv_poll_cq(d->cq, POLL_BATCH, wc);
		ctx->st.polls++;
		if (n < 0) {
			kvr_log(ctx->e, KVR_LOG_ERROR, "%s: ibv_poll_cq: %s", d->name,
				strerror(-n));
			return;
		}
		ctx->st.wcs += n > 0 ? (uint64_t)n : 0;
		for (int i = 0; i < n; i++)
			dispatch(ctx, &wc[i]);
	} while (n == POLL_BATCH);
}

void rdma_ctx_poll(struct rdma_ctx *ctx)
{
	if (ctx->polling)
		return; /* a handler's nested call: the outer loop picks it up */
	ctx->polling = true;
	for (uint32_t i = 0; i < ctx->ndevs; i++)
		poll_dev(ctx->devs[i]);
	ctx->polling = false;
}

static void arm(struct rdma_dev *d, struct kvr_io *io, int fd, bool *armed)
{
	struct io_uring_sqe *sqe = kvr_sqe(d->ctx->e);

	io_uring_prep_poll_multishot(sqe, fd, POLLIN);
	io_uring_sqe_set_data(sqe, io);
	*armed = true;
	d->ctx->armed++;
}

/* A multishot poll's CQE: false when it ended and was not re-armed. */
static bool poll_cqe(struct rdma_dev *d, struct kvr_io *io, int fd, bool *armed, int res,
		     uint32_t flags)
{
	if (flags & IORING_CQE_F_MORE)
		return true;
	*armed = false;
	d->ctx->armed--;
	if (res == -ECANCELED || d->ctx->closing || d->dead)
		return res >= 0;
	if (res < 0 && res != -EINTR && res != -EAGAIN)
		kvr_log(d->ctx->e, KVR_LOG_WARN, "%s: poll: %s", d->name, strerror(-res));
	arm(d, io, fd, armed);
	return true;
}

/* The completion channel is readable: take its events, ack them in
 * batches, re-arm the CQ, then drain it (a completion after the drain
 * raises a new event, so none is missed). */
static void cc_ready(struct kvr_io *io, int res, uint32_t flags)
{
	struct rdma_dev *d = KVR_CONTAINER_OF(io, struct rdma_dev, cc_io);
	struct ibv_cq *cq;
	void *cq_ctx;

	if (!poll_cqe(d, io, d->cc->fd, &d->cc_armed, res, flags))
		return;
	while (ibv_get_cq_event(d->cc, &cq, &cq_ctx) == 0) {
		d->unacked++;
		d->ctx->st.cq_events++;
	}
	if (d->unacked >= ACK_BATCH) {
		ibv_ack_cq_events(d->cq, d->unacked);
		d->unacked = 0;
	}
	/* Busy polling drains the CQ every round: no more events needed. */
	if (!(d->ctx->e->flags & KVR_ENGINE_BUSY_POLL))
		ibv_req_notify_cq(d->cq, 0);
	poll_dev(d);
}

static struct rdma_chan *chan_of_qp(struct rdma_ctx *ctx, const struct ibv_qp *qp)
{
	for (struct rdma_chan *ch = ctx->chans; ch; ch = ch->next)
		if (ch->qp == qp)
			return ch;
	return NULL;
}

static void async_ready(struct kvr_io *io, int res, uint32_t flags)
{
	struct rdma_dev *d = KVR_CONTAINER_OF(io, struct rdma_dev, async_io);
	struct rdma_ctx *ctx = d->ctx;
	struct ibv_async_event ev;

	if (!poll_cqe(d, io, d->vctx->async_fd, &d->async_armed, res, flags))
		return;
	while (ibv_get_async_event(d->vctx, &ev) == 0) {
		struct rdma_chan *ch;

		switch (ev.event_type) {
		case IBV_EVENT_QP_FATAL:
		case IBV_EVENT_QP_REQ_ERR:
		case IBV_EVENT_QP_ACCESS_ERR:
			ch = chan_of_qp(ctx, ev.element.qp);
			kvr_log(ctx->e, KVR_LOG_WARN, "%s: qp %u: %s", d->name,
				ev.element.qp->qp_num, ibv_event_type_str(ev.event_type));
			if (ch)
				rdma_chan_fail(ch, ev.event_type == IBV_EVENT_QP_ACCESS_ERR
						       ? -EFAULT
						       : -ECONNRESET);
			break;
		case IBV_EVENT_CQ_ERR:
		case IBV_EVENT_DEVICE_FATAL:
			kvr_log(ctx->e, KVR_LOG_ERROR, "%s: %s: failing its connections", d->name,
				ibv_event_type_str(ev.event_type));
			d->dead = ev.event_type == IBV_EVENT_DEVICE_FATAL;
			for (ch = ctx->chans; ch; ch = ch->next)
				if (ch->d == d)
					rdma_chan_fail(ch, -EIO);
			break;
		default:
			kvr_log(ctx->e, KVR_LOG_INFO, "%s: %s", d->name,
				ibv_event_type_str(ev.event_type));
			break;
		}
		ibv_ack_async_event(&ev);
	}
}

/* ---------------------------------------------------------------- devices */

static int set_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);

	return fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 ? -errno : 0;
}

/* The GID index to use by default: the first RoCE v2 GID holding an IPv4
 * address (what routes over plain IP networks), else 0. */
static int default_gid(struct rdma_dev *d, const struct ibv_port_attr *pa)
{
	for (int i = 0; d->ethernet && i < pa->gid_tbl_len && i < 256; i++) {
		struct ibv_gid_entry ent;
		static const uint8_t v4[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

		if (ibv_query_gid_ex(d->vctx, d->port, (uint32_t)i, &ent, 0))
			continue;
		if (ent.gid_type == IBV_GID_TYPE_ROCE_V2 && !memcmp(ent.gid.raw, v4, sizeof(v4)))
			return i;
	}
	return 0;
}

static void dev_close(struct rdma_dev *d)
{
	if (d->cq) {
		if (d->unacked)
			ibv_ack_cq_events(d->cq, d->unacked);
		ibv_destroy_cq(d->cq);
	}
	if (d->cc)
		ibv_destroy_comp_channel(d->cc);
	if (d->pd)
		ibv_dealloc_pd(d->pd);
	if (d->vctx)
		ibv_close_device(d->vctx);
	free(d);
}

/* Open dev, its PD, CQ and channel, and find an active port. */
static int dev_open(struct rdma_ctx *ctx, struct ibv_device *dev, struct rdma_dev **out)
{
	struct rdma_dev *d = calloc(1, sizeof(*d));
	struct ibv_port_attr pa;
	int rc = -ENODEV;

	if (!d)
		return -ENOMEM;
	d->ctx = ctx;
	snprintf(d->name, sizeof(d->name), "%s", ibv_get_device_name(dev));
	d->vctx = ibv_open_device(dev);
	if (!d->vctx || ibv_query_device(d->vctx, &d->attr)) {
		rc = -(errno ? errno : ENODEV);
		goto fail;
	}
	for (uint8_t p = 1; p <= d->attr.phys_port_cnt; p++) {
		if (!ibv_query_port(d->vctx, p, &pa) && pa.state == IBV_PORT_ACTIVE) {
			d->port = p;
			break;
		}
	}
	if (!d->port) {
		kvr_set_errmsg(ctx->e, "%s: no active port", d->name);
		rc = -ENETDOWN;
		goto fail;
	}
	ibv_query_port(d->vctx, d->port, &pa);
	d->lid = pa.lid;
	d->mtu = pa.active_mtu;
	d->max_msg = pa.max_msg_sz ? pa.max_msg_sz : (1u << 30);
	d->ethernet = pa.link_layer == IBV_LINK_LAYER_ETHERNET;
	d->def_gid = default_gid(d, &pa);
	d->pd = ibv_alloc_pd(d->vctx);
	d->cc = d->pd ? ibv_create_comp_channel(d->vctx) : NULL;
	d->cq_size = CQ_START < d->attr.max_cqe ? CQ_START : d->attr.max_cqe;
	d->cq = d->cc ? ibv_create_cq(d->vctx, d->cq_size, d, d->cc, 0) : NULL;
	if (!d->cq) {
		rc = -(errno ? errno : ENOMEM);
		kvr_set_errmsg(ctx->e, "%s: cannot set up PD/CQ: %s", d->name, strerror(-rc));
		goto fail;
	}
	rc = set_nonblock(d->cc->fd);
	if (!rc)
		rc = set_nonblock(d->vctx->async_fd);
	if (!rc)
		rc = -ibv_req_notify_cq(d->cq, 0);
	if (rc)
		goto fail;
	d->cc_io.fn = cc_ready;
	d->async_io.fn = async_ready;
	*out = d;
	return 0;
fail:
	dev_close(d);
	return rc;
}

/* Register every region with a newly opened device. */
static int dev_adopt_regions(struct rdma_ctx *ctx, struct rdma_dev *d)
{
	kvr_engine *e = ctx->e;

	for (uint32_t i = 0; i < e->nregions; i++) {
		int rc = reg_on(d, e->regions[i]);

		if (rc) {
			while (i-- > 0)
				unreg_on(d, e->regions[i]);
			return rc;
		}
	}
	return 0;
}

struct rdma_dev *rdma_dev_get(struct rdma_ctx *ctx, const char *name, int *err)
{
	struct ibv_device **list;
	struct rdma_dev *d = NULL;
	char names[256] = "";
	int n = 0, rc = -ENODEV;

	for (uint32_t i = 0; i < ctx->ndevs; i++)
		if (!name || !strcmp(ctx->devs[i]->name, name))
			return ctx->devs[i];
	if (ctx->ndevs == RDMA_MAX_DEVS) {
		*err = -ENOSPC;
		return NULL;
	}
	list = ibv_get_device_list(&n);
	if (!list) {
		kvr_set_errmsg(ctx->e, "no RDMA devices (%s)",
			       errno == ENOSYS ? "this kernel has no RDMA support"
					       : strerror(errno));
		*err = -ENODEV;
		return NULL;
	}
	for (int i = 0; i < n && !d; i++) {
		const char *dn = ibv_get_device_name(list[i]);
		size_t used = strlen(names);

		snprintf(names + used, sizeof(names) - used, "%s%s", used ? ", " : "", dn);
		if (name && strcmp(dn, name))
			continue;
		rc = dev_open(ctx, list[i], &d);
		if (rc && name)
			break;
	}
	ibv_free_device_list(list);
	if (!d) {
		if (rc == -ENODEV)
			kvr_set_errmsg(ctx->e, "RDMA device %s not found (devices: %s)",
				       name ? name : "with an active port", n ? names : "none");
		*err = rc;
		return NULL;
	}
	d->idx = ctx->ndevs;
	rc = dev_adopt_regions(ctx, d);
	if (rc) {
		dev_close(d);
		*err = rc;
		return NULL;
	}
	ctx->devs[ctx->ndevs++] = d;
	arm(d, &d->cc_io, d->cc->fd, &d->cc_armed);
	arm(d, &d->async_io, d->vctx->async_fd, &d->async_armed);
	kvr_log(ctx->e, KVR_LOG_INFO, "%s: port %u, mtu %u, gid index %d, max_qp_wr %d, max_sge %d",
		d->name, d->port, rdma_mtu_bytes(d->mtu), d->def_gid, d->attr.max_qp_wr,
		d->attr.max_sge);
	return d;
}

int rdma_dev_cq_reserve(struct rdma_dev *d, int n)
{
	int want = d->cq_need + n;

	if (want > d->attr.max_cqe)
		return -ENOBUFS;
	if (want > d->cq_size) {
		int size = want * 2 < d->attr.max_cqe ? want * 2 : d->attr.max_cqe;

		if (ibv_resize_cq(d->cq, size)) {
			kvr_log(d->ctx->e, KVR_LOG_WARN, "%s: cannot grow the CQ to %d entries",
				d->name, size);
			return -ENOBUFS;
		}
		d->cq_size = size;
	}
	d->cq_need = want;
	return 0;
}

void rdma_dev_cq_release(struct rdma_dev *d, int n)
{
	d->cq_need -= n;
}

/* ---------------------------------------------------------------- context */

/* Once per round, after everything else queued its work: free drained
 * channels, busy-poll when asked, then post the round's work requests. */
static void ctx_flush(struct kvr_flush *f)
{
	struct rdma_ctx *ctx = KVR_CONTAINER_OF(f, struct rdma_ctx, flush);

	struct rdma_chan *ch, *next, **pp = &ctx->dead;

	while ((ch = *pp)) {
		if (ch->drained) {
			*pp = ch->next;
			rdma_chan_free(ch);
		} else {
			pp = &ch->next;
		}
	}
	if (ctx->e->flags & KVR_ENGINE_BUSY_POLL)
		rdma_ctx_poll(ctx);
	/* A failed post may close a channel (moving it to the dead list). */
	for (ch = ctx->chans; ch; ch = next) {
		next = ch->next;
		if (ch->nwr || ch->nrq_stage)
			rdma_chan_flush(ch);
	}
}

static void ctx_fini(struct kvr_engine_ext *x)
{
	struct rdma_ctx *ctx = KVR_CONTAINER_OF(x, struct rdma_ctx, x);
	kvr_engine *e = ctx->e;

	/* Targets and servers are closed: their channels are draining, which
	 * takes one round trip of flushed completions. Then cancel the polls. */
	rdma_ctx_poll(ctx);
	if (ctx->drains && kvr_engine_drain_timeout(e, &ctx->drains, 5000))
		kvr_log(e, KVR_LOG_WARN, "rdma: %llu channel(s) did not drain",
			(unsigned long long)ctx->drains);
	while (ctx->dead) {
		struct rdma_chan *ch = ctx->dead;

		ctx->dead = ch->next;
		if (ch->drained)
			rdma_chan_free(ch); /* else leaked rather than freed under the HCA */
	}
	ctx->closing = true;
	for (uint32_t i = 0; i < ctx->ndevs; i++) {
		struct rdma_dev *d = ctx->devs[i];
		struct kvr_io *ios[2] = {&d->cc_io, &d->async_io};
		bool armed[2] = {d->cc_armed, d->async_armed};

		for (int k = 0; k < 2; k++) {
			struct io_uring_sqe *sqe;

			if (!armed[k])
				continue;
			sqe = kvr_sqe(e);
			io_uring_prep_cancel(sqe, ios[k], 0);
			io_uring_sqe_set_data(sqe, NULL);
		}
	}
	if (ctx->armed && kvr_engine_drain_timeout(e, &ctx->armed, 5000))
		kvr_log(e, KVR_LOG_WARN, "rdma: completion channel polls not cancelled");
	kvr_mem_unlisten(e, &ctx->ml);
	kvr_flush_del(e, &ctx->flush);
	for (uint32_t i = 0; i < ctx->ndevs; i++)
		if (!ctx->armed) /* else the kernel may still write the io */
			dev_close(ctx->devs[i]);
	if (!ctx->armed)
		free(ctx);
}

struct rdma_ctx *rdma_ctx_get(kvr_engine *e, int *err)
{
	struct kvr_engine_ext *x = kvr_engine_ext_find(e, ctx_key);
	struct rdma_ctx *ctx;
	int rc;

	if (x)
		return KVR_CONTAINER_OF(x, struct rdma_ctx, x);
	ctx = calloc(1, sizeof(*ctx));
	if (!ctx) {
		*err = -ENOMEM;
		return NULL;
	}
	ctx->e = e;
	ctx->x.key = ctx_key;
	ctx->x.fini = ctx_fini;
	ctx->ml.added = ml_added;
	ctx->ml.removed = ml_removed;
	ctx->ml.piece_ready = ml_piece_ready;
	rc = kvr_mem_listen(e, &ctx->ml); /* no device yet: nothing registered */
	if (rc) {
		free(ctx);
		*err = rc;
		return NULL;
	}
	ctx->flush.fn = ctx_flush;
	ctx->flush.late = true;
	kvr_flush_add(e, &ctx->flush);
	kvr_engine_ext_add(e, &ctx->x);
	return ctx;
}
