/* SPDX-License-Identifier: MIT */
/* Built without libibverbs: rdma:// clusters and listeners are refused;
 * the rest is never reached (no connection ever gets a queue pair). */
#include "transport/serve.h"
#include "transport/tcp.h"

int tcp_rdma_setup(struct tcp_cluster *cl)
{
	kvr_set_errmsg(cl->t.e, "kvring was built without RDMA support (libibverbs)");
	return -EPROTONOSUPPORT;
}

int tcp_rdma_open(struct tcp_conn *tc)
{
	(void)tc;
	return -EPROTONOSUPPORT;
}

void tcp_rdma_hello(struct tcp_conn *tc, struct kvr_hello *h)
{
	(void)tc;
	(void)h;
}

int tcp_rdma_ready(struct tcp_conn *tc, const struct kvr_hello *h)
{
	(void)tc;
	(void)h;
	return -EPROTONOSUPPORT;
}

void tcp_rdma_send(struct tcp_conn *tc, struct tcp_op *op)
{
	(void)tc;
	tcp_op_answer(op, -EPROTONOSUPPORT);
}

void tcp_rdma_close(struct tcp_conn *tc, int err)
{
	(void)tc;
	(void)err;
}

int srv_rdma_setup(struct kvr_server *s)
{
	kvr_set_errmsg(s->e, "kvring was built without RDMA support (libibverbs)");
	return -EPROTONOSUPPORT;
}

int srv_rdma_open(struct srv_conn *c, const struct kvr_hello_rdma *peer,
		  struct kvr_hello_rdma *ours)
{
	(void)c;
	(void)peer;
	(void)ours;
	return -EPROTONOSUPPORT;
}

void srv_rdma_respond(struct srv_req *r, const struct kvr_frame *f, const struct kvr_sgx *payload)
{
	(void)f;
	(void)payload;
	srv_release(r);
}

void srv_rdma_fetch(struct srv_req *r)
{
	srv_release(r);
}

void srv_rdma_close(struct srv_conn *c, int err)
{
	(void)err;
	srv_conn_finished(c);
}

void srv_rdma_unhold(struct srv_req *r)
{
	r->rslot_held = false;
}

void tcp_rdma_stats(struct tcp_cluster *cl, struct kvr_stats *st)
{
	(void)cl;
	(void)st;
}

void tcp_rdma_kick(struct tcp_conn *tc)
{
	(void)tc;
}

void tcp_rdma_describe(struct tcp_conn *tc, const char *why)
{
	(void)tc;
	(void)why;
}

bool tcp_rdma_has_mr(struct tcp_cluster *cl, const struct kvr_mr *mr)
{
	(void)cl;
	(void)mr;
	return false;
}
