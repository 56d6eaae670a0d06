/* SPDX-License-Identifier: MIT */
/*
 * The engine's internal interface, shared by engine/ and transport/. Nothing
 * here names a file, a socket or a verb: transports plug in through
 * struct kvr_target_ops and complete work through kvr_req_done().
 */
#ifndef KVR_ENGINE_H
#define KVR_ENGINE_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <liburing.h>

#include "kvr_config.h"
#include "kvring.h"
#include "engine/timer.h"

#define KVR_EXPORT __attribute__((visibility("default")))

#define KVR_CONTAINER_OF(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))
#define KVR_LIKELY(x)			    __builtin_expect(!!(x), 1)
#define KVR_UNLIKELY(x)			    __builtin_expect(!!(x), 0)

/* Largest io_uring fixed buffer; larger regions take several table entries. */
#define KVR_FIXED_MAX (1ull << 30)

/* ------------------------------------------------------------- completions */

/*
 * Every SQE the engine submits carries a pointer to one of these as its
 * user_data; the loop calls fn with the CQE's result and flags. A user_data of
 * 0 marks an SQE whose completion nobody needs (e.g. an async cancel).
 */
struct kvr_io;
typedef void (*kvr_io_fn)(struct kvr_io *io, int res, uint32_t cqe_flags);
struct kvr_io {
	kvr_io_fn fn;
};

/* Called once per loop round just before the ring is submitted (e.g. to
 * write a log block that collected this round's records). Late flushers run
 * after all others, so they see what the others queued (e.g. posting the
 * round's RDMA work requests). */
struct kvr_flush {
	void (*fn)(struct kvr_flush *f);
	struct kvr_flush *next;
	bool late;
};

/* --------------------------------------------------------- registered memory */

/* Per-region slots that memory listeners own (see kvr_mem_listen). */
#define KVR_MR_EXT 2

struct kvr_mr {
	kvr_engine *e;
	uintptr_t base;
	size_t len;
	unsigned flags;
	uint32_t nfixed;       /* fixed-buffer table entries (0: plain path) */
	uint64_t inflight;     /* SGEs of in-flight batches pointing here */
	void *ext[KVR_MR_EXT]; /* listener l's data in ext[l->slot] */
	/* kvr_mem_register_deferred: per 1 GiB piece, nonzero once its owner
	 * said it is faulted in (kvr_mr_pin_piece); NULL: all of it is. */
	uint8_t *piece_ready;
	uint16_t slot[]; /* table slot of each 1 GiB piece */
};

/* The region's 1 GiB pieces (the unit of deferred registration). */
static inline uint32_t kvr_mr_npieces(const struct kvr_mr *mr)
{
	return (uint32_t)((mr->len + KVR_FIXED_MAX - 1) / KVR_FIXED_MAX);
}

static inline bool kvr_mr_piece_ready(const struct kvr_mr *mr, uint32_t i)
{
	return !mr->piece_ready || mr->piece_ready[i];
}

/*
 * A party that must know of every registered region (the RDMA transport
 * registers each with its protection domains; CUDA staging pins). added()
 * runs for every region already registered when the listener joins and for
 * each one registered later; an error from it fails that kvr_mem_register
 * (or the join) with that errno, after removed() undid the others. removed()
 * runs when a region is deregistered and for every region when the listener
 * leaves. Each listener owns mr->ext[slot] of every region.
 *
 * A region registered with kvr_mem_register_deferred is added at once with
 * none of its pieces ready (kvr_mr_piece_ready); piece_ready(), optional,
 * runs as each piece becomes ready (from kvr_mr_pin_piece, on the engine
 * thread). A listener that cannot take the piece says so in its own log and
 * state: the region's other parties still take it.
 */
struct kvr_mem_listener {
	int (*added)(struct kvr_mem_listener *l, struct kvr_mr *mr);
	void (*removed)(struct kvr_mem_listener *l, struct kvr_mr *mr);
	void (*piece_ready)(struct kvr_mem_listener *l, struct kvr_mr *mr, uint32_t i);
	int slot; /* set by kvr_mem_listen */
	struct kvr_mem_listener *next;
};

/* Join: 0, -ENOSPC (KVR_MR_EXT listeners already), or added()'s error. */
int kvr_mem_listen(kvr_engine *e, struct kvr_mem_listener *l);
void kvr_mem_unlisten(kvr_engine *e, struct kvr_mem_listener *l);

/* An SGE resolved at submission. */
struct kvr_sgx {
	uint8_t *addr;
	size_t len;
	struct kvr_mr *mr;
};

/* Marks a table slot reserved for a piece that is not pinned yet (see
 * kvr_mem_register_deferred); table slots stay below it (at most 16384). */
#define KVR_SLOT_UNPINNED 0x8000u

/* Fixed-buffer slot covering addr (inside mr), or -1 for the plain path. The
 * piece [addr, addr+n) must not cross kvr_fixed_end(). */
static inline int kvr_mr_slot(const struct kvr_mr *mr, const void *addr)
{
	uint16_t slot;

	if (!mr->nfixed)
		return -1;
	slot = mr->slot[((uintptr_t)addr - mr->base) / KVR_FIXED_MAX];
	return slot & KVR_SLOT_UNPINNED ? -1 : slot;
}

/* First address after addr where the fixed-buffer entry changes. */
static inline uintptr_t kvr_fixed_end(const struct kvr_mr *mr, const void *addr)
{
	uintptr_t rel = (uintptr_t)addr - mr->base;
	uintptr_t end = mr->base + (rel / KVR_FIXED_MAX + 1) * KVR_FIXED_MAX;

	return end < mr->base + mr->len ? end : mr->base + mr->len;
}

/*
 * Register host memory without pinning it: its fixed-buffer slots are
 * reserved now (so the table cannot run out later) and every piece takes the
 * plain path until kvr_mr_pin_piece() fills its slot. For a pool that is
 * faulted in the background and must be usable at once. Errors as
 * kvr_mem_register() (but never the pinning ones). Engine thread only.
 */
int kvr_mem_register_deferred(kvr_engine *e, void *addr, size_t len, kvr_mr **out);
/* Piece i (bytes [i * KVR_FIXED_MAX, ...) of a region registered with
 * kvr_mem_register_deferred) is faulted in: pin it into its reserved slot,
 * mark it ready and tell the listeners (piece_ready). 0 (also when the piece
 * is ready already, or the region has no slots: the table is unsupported),
 * or the io_uring registration's negative errno: the piece stays on the
 * plain path (it is ready all the same). Engine thread only
 * (io_uring_register on the engine's ring). */
int kvr_mr_pin_piece(kvr_engine *e, struct kvr_mr *mr, uint32_t i);

/* Region holding [addr, addr+len), or NULL. O(log regions). */
struct kvr_mr *kvr_mr_find(kvr_engine *e, const void *addr, size_t len);
/* Deregister everything (engine teardown). */
void kvr_registry_fini(kvr_engine *e);
int kvr_registry_init(kvr_engine *e, uint32_t slots);

/* Registered files: a slot for fd (use IOSQE_FIXED_FILE with it), or -1 when
 * the table is full or unsupported (then use the fd itself). */
#define KVR_FILE_SLOTS 64
int kvr_file_slot(kvr_engine *e, int fd);
void kvr_file_unslot(kvr_engine *e, int slot);

/* ------------------------------------------------------------ batches, reqs */

/* One object of a batch, as copied at submission. */
struct kvr_objd {
	const uint8_t *key;
	uint16_t key_len;
	uint32_t nsge;
	uint64_t hash;	/* kvr_key_hash(key) */
	uint64_t total; /* sum of SGE lengths */
	struct kvr_sgx *sgx;
};

struct kvr_batch;

/* A request slot: one object in flight. Transports keep their per-object
 * state in priv. */
#define KVR_REQ_PRIV 160
struct kvr_req {
	struct kvr_batch *b;
	struct kvr_objd *o;
	uint32_t idx; /* index in the batch */
	bool done;
	bool staged;	      /* device memory staging owns it (kvr_devmem) */
	struct kvr_req *next; /* free list, or a transport's wait queue */
	_Alignas(16) uint8_t priv[KVR_REQ_PRIV];
};

struct kvr_batch {
	kvr_target *t;
	enum kvr_op op;
	bool devmem; /* an SGE is in device memory (KVR_MEM_CUDA) */
	uint32_t n;
	uint32_t ndone;
	bool started;
	bool expired; /* the deadline passed */
	kvr_batch_cb cb;
	void *ctx;
	int64_t *results;
	struct kvr_objd *objs;
	struct kvr_req **reqs; /* n slots once started */
	uint64_t t_submit_ns;
	struct kvr_timer deadline;
	struct kvr_batch *next; /* wait queue or done list */
};

/* --------------------------------------------------------------- targets */

/*
 * What every target implements. The batch entry points receive the started
 * request slots of one batch (all of the same op) and must eventually call
 * kvr_req_done() exactly once for each — never from inside the submitting
 * call's caller's callback chain is not a concern: the engine defers every
 * user callback to the poll loop.
 */
struct kvr_target_ops {
	const char *name;
	void (*put)(kvr_target *t, struct kvr_req **reqs, uint32_t n);
	void (*get)(kvr_target *t, struct kvr_req **reqs, uint32_t n);
	void (*exists)(kvr_target *t, struct kvr_req **reqs, uint32_t n);
	void (*remove)(kvr_target *t, struct kvr_req **reqs, uint32_t n);
	/* The deadline of r's batch passed: make r finish soon (cancel its I/O).
	 * Optional. kvr_req_done() still follows, once the buffers are free. */
	void (*cancel)(kvr_target *t, struct kvr_req *r);
	/* Optional: the target moves the bytes of region mr itself (e.g. RDMA
	 * with GPUDirect). Without it, or when it says false, batches whose
	 * SGEs are in device memory are staged through host memory. */
	bool (*takes_device)(kvr_target *t, const struct kvr_mr *mr);
	/* Fill the target-specific fields of st (objects, used, capacity...). */
	void (*stats)(kvr_target *t, struct kvr_stats *st);
	/* Finish in-flight work (kvr_engine_drain), persist, release resources;
	 * the struct itself is freed by the engine at destroy. */
	int (*close)(kvr_target *t);
};

struct kvr_target {
	const struct kvr_target_ops *ops;
	kvr_engine *e;
	uint32_t timeout_ms;
	bool closed;
	uint64_t inflight; /* request slots started and not done */
	struct kvr_stats stats;
	struct kvr_target *next; /* engine's list */
};

/* Initialise the common part and link the target to its engine. */
void kvr_target_init(kvr_target *t, kvr_engine *e, const struct kvr_target_ops *ops,
		     uint32_t timeout_ms);

/* Unlink a target whose open failed (the caller frees it). */
void kvr_target_forget(kvr_target *t);

/* Complete object r with result res (bytes or -errno). */
void kvr_req_done(struct kvr_req *r, int64_t res);

/* ----------------------------------------------------------- device memory */

/*
 * Device memory (KVR_MEM_CUDA): a provider that knows the memory kind
 * (transport/cuda.c, or a test's), joined to the engine by
 * kvr_devmem_attach() on the first registration of such memory. The
 * engine gives it the objects of a batch whose SGEs are in device memory
 * and whose target cannot move them itself; the provider stages them
 * through host memory (transport/stage.c) and calls kvr_req_done() for
 * each. While a request is staged (r->staged), a target's kvr_req_done()
 * for it goes to finish() instead, which completes it later.
 */
struct kvr_devmem {
	/* [addr, addr+len) is memory of this kind: 0, or -errno with errmsg. */
	int (*check)(struct kvr_devmem *d, void *addr, size_t len);
	/* Host memory to pin for the device's copies (KVR_MEM_CUDA_PINNED):
	 * 0 or -errno; unpin undoes it. */
	int (*pin)(struct kvr_devmem *d, void *addr, size_t len);
	void (*unpin)(struct kvr_devmem *d, void *addr, size_t len);
	/* A dmabuf fd (and the offset of addr in it) for registering device
	 * memory with an RDMA device, or -errno (-EOPNOTSUPP). Optional. */
	int (*dmabuf)(struct kvr_devmem *d, void *addr, size_t len, int *fd, uint64_t *offset);
	void (*stage)(struct kvr_devmem *d, kvr_target *t, enum kvr_op op, struct kvr_req **reqs,
		      uint32_t n);
	void (*finish)(struct kvr_devmem *d, struct kvr_req *r, int64_t res);
	/* The deadline of r's batch passed while r was staged. */
	void (*cancel)(struct kvr_devmem *d, struct kvr_req *r);
};

/* Provide device memory for e (sets e->devmem). Defined by the CUDA
 * transport; without CUDA it fails with -EOPNOTSUPP and errmsg says why. */
int kvr_devmem_attach(kvr_engine *e);

/* ------------------------------------------------------------------ loop */

/*
 * Per-engine state of a transport (e.g. the RDMA devices it opened), found
 * by a key the transport owns. fini() runs in kvr_engine_destroy() after
 * every target closed and every callback ran, while the ring still works,
 * so it may wait for its own SQEs (kvr_engine_drain). Most recent first.
 */
struct kvr_engine_ext {
	const void *key;
	void (*fini)(struct kvr_engine_ext *x);
	struct kvr_engine_ext *next;
};
void kvr_engine_ext_add(kvr_engine *e, struct kvr_engine_ext *x);
struct kvr_engine_ext *kvr_engine_ext_find(kvr_engine *e, const void *key);

struct kvr_engine {
	struct io_uring ring;
	unsigned setup_flags;
	uint32_t flags;
	int notify_fd; /* kvr_engine_fd: registered eventfd */
	int wake_fd;   /* written by kvr_engine_wake */
	uint64_t wake_buf;
	struct kvr_io wake_io;
	bool wake_armed;
	bool notified; /* notify_fd written since the last poll */
	bool woken;    /* the wake read completed this poll */
	bool wake_due; /* ... and wake_fn has not run for it yet */
	void (*wake_fn)(void *ctx);
	void *wake_ctx;
	bool in_poll;
	bool in_cb;
	bool stop;
	bool destroying;
	uint32_t timeout_ms;
	uint64_t now_ns;    /* cached clock, refreshed each round */
	bool in_submit;	    /* inside kvr_submit's start of a batch */
	uint32_t sync_done; /* objects completed there, timed when it returns */
	bool zc_no_report;  /* the kernel refused IORING_SEND_ZC_REPORT_USAGE */

	/* request pool */
	struct kvr_req *pool;
	struct kvr_req *free_reqs;
	uint32_t max_objects;
	uint32_t free_count;

	struct kvr_batch *wait_head, *wait_tail; /* accepted, not started */
	struct kvr_batch *done_head, *done_tail; /* finished, callback due */

	struct kvr_timer_heap timers;
	struct kvr_flush *flushers;
	kvr_target *targets;
	struct kvr_engine_ext *exts;
	struct kvr_mem_listener *listeners;
	struct kvr_devmem *devmem; /* NULL until device memory is registered */
	uint64_t stage_bytes;	   /* bounce pool size for the provider */

	/* registry */
	struct kvr_mr **regions; /* sorted by base */
	uint32_t nregions, cap_regions;
	struct kvr_mr *last_mr;
	uint16_t *free_slots;
	uint32_t nfree_slots, nslots;
	uint32_t nfile_slots;
	uint64_t file_used; /* registered file slots in use */

	struct kvr_stats stats;
	uint64_t sqes_inflight;

	kvr_log_fn log;
	void *log_ctx;
	int log_level;
	char errmsg[256];
};

/* An SQE to fill; submits the ring first when it is full. Never NULL. */
struct io_uring_sqe *kvr_sqe(kvr_engine *e);
/* Make the engine fd readable (work finished outside the kernel). */
void kvr_notify(kvr_engine *e);
/* Submit and wait for completions, dispatching I/O completions but running no
 * user callbacks, until *cond becomes 0. For close paths. Returns 0 or -errno. */
int kvr_engine_drain(kvr_engine *e, const uint64_t *cond);
/* The same, giving up with -ETIMEDOUT after timeout_ms (0: never). */
int kvr_engine_drain_timeout(kvr_engine *e, const uint64_t *cond, uint32_t timeout_ms);
void kvr_flush_add(kvr_engine *e, struct kvr_flush *f);
void kvr_flush_del(kvr_engine *e, struct kvr_flush *f);
uint64_t kvr_now_ns(void);
/* Submit prepared SQEs now unless a poll round will (outside the loop). */
void kvr_submit_if_idle(kvr_engine *e);

/* Batch machinery (batch.c) used by the loop. */
void kvr_batches_start_waiting(kvr_engine *e);
int kvr_batches_run_done(kvr_engine *e);
void kvr_batch_expire(struct kvr_timer *tm);
void kvr_batches_cancel_all(kvr_engine *e);

/* ------------------------------------------------------------------ log */

void kvr_log(kvr_engine *e, int level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Copy the counters in *all to the caller's struct, as much of it as its
 * size field says (the ABI rule of struct kvr_stats). */
void kvr_stats_copy_out(struct kvr_stats *user, const struct kvr_stats *all);

/* Record a detailed message for kvr_engine_errmsg() (and log it as an error). */
void kvr_set_errmsg(kvr_engine *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ------------------------------------------------------------- checksum */

/* crc32c (Castagnoli) of a buffer, chainable: pass the previous result. */
uint32_t kvr_crc32c(uint32_t crc, const void *buf, size_t len);
/* crc32c of the first len bytes spread over an SGL. */
uint32_t kvr_crc32c_sgl(const struct kvr_sgx *sgx, uint32_t nsge, uint64_t len);

/* Record one object's latency in a histogram (n objects of the same). */
void kvr_lat_record(uint64_t *hist, uint64_t ns);
void kvr_lat_record_n(uint64_t *hist, uint64_t ns, uint64_t n);

#endif
