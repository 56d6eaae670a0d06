/* SPDX-License-Identifier: MIT */
/*
 * The parts of the RDMA layer (rdma.h) that owners embed in their own
 * structs, usable without the verbs headers (and so in builds without
 * libibverbs).
 */
#ifndef KVR_RDMA_TYPES_H
#define KVR_RDMA_TYPES_H

#include <stdbool.h>
#include <stdint.h>

struct ibv_wc;
struct rdma_chan;

/* A signaled work request's completion. ch and seq are set by the channel. */
struct rdma_wr {
	void (*fn)(struct rdma_wr *w, const struct ibv_wc *wc);
	struct rdma_chan *ch;
	uint64_t seq; /* send queue: position after this WR */
	bool recv;
};

struct kvr_mr;

/* A unit of work waiting for send queue room (FIFO), and first, when it
 * names local memory its work requests use, for that memory to be
 * registered with the device (a server pool still being faulted in). */
struct rdma_pending {
	struct rdma_pending *next;
	uint32_t nwr;		 /* work requests it needs */
	bool slot;		 /* and a send slot for its message */
	const struct kvr_mr *mr; /* NULL, or the region [addr, addr+len) is in */
	uintptr_t addr;
	uint64_t len;
	void (*run)(struct rdma_pending *p);
	/* The channel closed first: release what p holds (never run). */
	void (*drop)(struct rdma_pending *p);
};

#endif
