/* SPDX-License-Identifier: MIT */
/*
 * kvring — an io_uring-driven engine that moves keyed objects (KV-cache chunks)
 * between memory the caller registered and the places they are kept.
 *
 * Conventions for every function below:
 *  - Returns 0 or a count on success, a negative errno on failure. Global errno
 *    is neither set nor read across the API; caller input never aborts.
 *  - Handles (kvr_engine, kvr_target, kvr_mr) are opaque and belong to one
 *    engine. An engine and everything hanging off it is used from one thread,
 *    the thread that created it; kvr_engine_wake() is the only exception.
 *  - Batch callbacks run only inside kvr_engine_poll()/kvr_engine_run() (and,
 *    for work still outstanding at shutdown, inside kvr_engine_destroy()),
 *    never inside the call that submitted the batch.
 */
#ifndef KVRING_H
#define KVRING_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KVR_VERSION_MAJOR 0
#define KVR_VERSION_MINOR 1

/** Longest key, in bytes. Keys are byte strings (not NUL-terminated). */
#define KVR_MAX_KEY 512
/** Most SGEs in one object (80 layers x K/V = 160 slices fit with room). */
#define KVR_MAX_SGE 256

typedef struct kvr_engine kvr_engine;
typedef struct kvr_target kvr_target;
typedef struct kvr_mr kvr_mr;

/** One piece of an object's memory. Must lie inside one registered region. */
typedef struct kvr_sge {
	void *addr;
	size_t len;
} kvr_sge;

/** One keyed object: a key and the scatter-gather list holding its bytes. */
typedef struct kvr_obj {
	const void *key;
	size_t key_len;
	const kvr_sge *sgl;
	uint32_t nsge; /* ignored (may be 0) for exists and remove */
} kvr_obj;

/**
 * Completion of a batch. results[i] is, for object i of the batch:
 *  put: bytes stored;  get: bytes written into the SGL;  exists: the stored
 *  length (0 or more) when present;  remove: 0;
 * or a negative errno: -ENOENT (miss), -ENOSPC, -EIO (I/O error or checksum
 * mismatch: the object is dropped, never returned), -EMSGSIZE (get: the stored
 * object is larger than the SGL; nothing useful was written), -ETIMEDOUT
 * (deadline), -ECANCELED (target closed or engine destroyed first).
 * Partial success is normal. `results` is valid only during the call.
 * The callback may submit new batches and may close targets.
 */
typedef void (*kvr_batch_cb)(void *ctx, size_t n, const int64_t *results);

/* ---------------------------------------------------------------- logging */

enum kvr_log_level { KVR_LOG_ERROR = 0, KVR_LOG_WARN, KVR_LOG_INFO, KVR_LOG_DEBUG };
/** Log sink; `msg` is one line without a trailing newline. */
typedef void (*kvr_log_fn)(void *ctx, int level, const char *msg);

/* ----------------------------------------------------------------- engine */

/** Engine flags (struct kvr_engine_opts.flags). */
enum {
	/** Do not use SINGLE_ISSUER/DEFER_TASKRUN even when the kernel has them. */
	KVR_ENGINE_NO_DEFER_TASKRUN = 1u << 0,
	/** kvr_engine_poll() with a timeout spins instead of sleeping. */
	KVR_ENGINE_BUSY_POLL = 1u << 1,
};

/**
 * Engine options. Zero-initialise, set `size = sizeof(struct kvr_engine_opts)`
 * and change what you need; a zero field means "default". Passing NULL to
 * kvr_engine_create() means all defaults.
 */
struct kvr_engine_opts {
	uint32_t size;		/* sizeof(struct kvr_engine_opts) */
	uint32_t flags;		/* KVR_ENGINE_* */
	uint32_t ring_entries;	/* submission queue size (default 1024) */
	uint32_t max_objects;	/* objects in flight at once, all batches
				   together (default 16384); also the largest
				   batch accepted */
	uint32_t fixed_buffers; /* io_uring fixed-buffer table slots (default
				   1024, each up to 1 GiB of registered memory) */
	uint32_t timeout_ms;	/* default batch deadline (default 30000) */
	kvr_log_fn log;		/* log sink (default: none, silent) */
	void *log_ctx;
	int log_level;	      /* most verbose level passed to `log` */
	uint64_t stage_bytes; /* device memory: the pinned bounce pool that
				 stages it for stores and TCP (default 256 MiB,
				 allocated on the first KVR_MEM_CUDA region) */
};

/**
 * Create an engine: an io_uring (SINGLE_ISSUER|DEFER_TASKRUN when the kernel
 * has them, falling back flag by flag), its request pool and timers.
 * The calling thread becomes the engine's thread.
 * On success *out owns the engine; free it with kvr_engine_destroy().
 * Errors: -EINVAL (opts->size too small, or out-of-range values), -ENOMEM,
 * -ENOSYS/-EPERM (io_uring unavailable or forbidden), other io_uring_setup errors.
 */
int kvr_engine_create(const struct kvr_engine_opts *opts, kvr_engine **out);

/**
 * Destroy the engine. Closes every open target (finishing in-flight I/O),
 * runs the callbacks of batches not yet reported (work never started reports
 * -ECANCELED) from inside this call, then frees everything. Submissions from
 * those callbacks fail with -ESHUTDOWN. Registered regions are deregistered.
 * Every handle of this engine is invalid afterwards. NULL is a no-op.
 */
void kvr_engine_destroy(kvr_engine *e);

/**
 * A file descriptor that is readable while the engine has completions to
 * process. Watch it with epoll/poll/libuv and call kvr_engine_poll(e, 0) until
 * it returns 0 whenever it is readable. The engine owns the descriptor: do
 * not read, write or close it. Returns the fd, or -EINVAL for a NULL engine.
 */
int kvr_engine_fd(kvr_engine *e);

/**
 * Submit pending work, reap completions and run the callbacks of finished
 * batches. Waits up to timeout_ms for at least one batch to finish
 * (0 = never block, -1 = wait until something finishes or kvr_engine_wake()).
 * Also fires expired batch deadlines.
 * Returns the number of batch callbacks run (0 when none), or -EINVAL
 * (NULL engine), -EBUSY (called from inside a callback), or a negative errno
 * from io_uring_enter that the engine could not recover from.
 */
int kvr_engine_poll(kvr_engine *e, int timeout_ms);

/**
 * Milliseconds until the engine next needs kvr_engine_poll() even if its fd
 * stays quiet (the earliest batch deadline), 0 if it needs a poll now, or -1
 * if nothing is pending. For hosts that sleep in their own loop.
 */
int kvr_engine_next_timeout(kvr_engine *e);

/**
 * Run the loop on the calling (engine) thread until kvr_engine_stop() is
 * called from a callback, or from another thread followed by kvr_engine_wake().
 * Returns 0 when stopped, or a negative errno from kvr_engine_poll().
 */
int kvr_engine_run(kvr_engine *e);

/** Make kvr_engine_run() return after the current round. Engine thread only,
 *  or any thread when followed by kvr_engine_wake(). */
void kvr_engine_stop(kvr_engine *e);

/**
 * Wake the engine: its fd becomes readable and a blocked kvr_engine_poll() or
 * kvr_engine_run() returns from its wait. The one call that is safe from any
 * thread at any time while the engine exists (an eventfd write).
 * Returns 0, or -EINVAL for a NULL engine.
 */
int kvr_engine_wake(kvr_engine *e);

/**
 * Have fn(ctx) called on the engine thread, from inside kvr_engine_poll()
 * or kvr_engine_run(), once after each round in which a kvr_engine_wake()
 * arrived (several wakes before that round make one call). This is how
 * work handed over by other threads reaches the engine: they queue it,
 * call kvr_engine_wake(), and fn submits it. fn may submit batches (they
 * start in the same round) and register memory, but not poll. fn NULL
 * removes the hook. Engine thread only.
 * Errors: -EINVAL (NULL engine), -EBUSY (called from inside a callback).
 */
int kvr_engine_set_wake_cb(kvr_engine *e, void (*fn)(void *ctx), void *ctx);

/** Latency histogram: bucket i counts operations that took
 *  [2^i, 2^(i+1)) microseconds (bucket 0 also takes < 1 us). */
#define KVR_LAT_BUCKETS 32

/**
 * Counters, per engine or per target. All counts since creation. The
 * caller sets `size` (to sizeof(struct kvr_stats) as it was compiled), so
 * that the struct can grow: the library fills that many bytes at most.
 */
struct kvr_stats {
	uint32_t size;			      /* in: sizeof(struct kvr_stats); out: bytes filled */
	uint32_t reserved;		      /* 0 */
	uint64_t batches;		      /* batches completed */
	uint64_t puts, gets, exists, removes; /* objects completed, per op */
	uint64_t errors;		      /* objects completed with an error */
	uint64_t misses;		      /* -ENOENT results */
	uint64_t timeouts;		      /* -ETIMEDOUT results */
	uint64_t bytes_put;		      /* payload bytes stored */
	uint64_t bytes_got;		      /* payload bytes returned */
	uint64_t checksum_errors;	      /* gets dropped for a crc32c mismatch */
	uint64_t evictions;		      /* objects evicted to make room */
	uint64_t bounce_bytes;		      /* bytes moved through the unaligned fallback */
	uint64_t fixed_ios;		      /* I/Os using registered (fixed) buffers */
	uint64_t plain_ios;		      /* I/Os using plain addresses */
	uint64_t submits;		      /* io_uring_enter calls that submitted */
	uint64_t cq_overflows;		      /* rounds that found the CQ overflowed */
	uint64_t rdma_wrs;		      /* RDMA: send work requests posted */
	uint64_t rdma_posts;		      /* RDMA: doorbells (ibv_post_send calls) */
	uint64_t rdma_wcs;		      /* RDMA: work completions reaped */
	uint64_t rdma_cq_events;	      /* RDMA: completion channel wake-ups */
	uint64_t staged_objects;	      /* device memory: objects staged */
	uint64_t staged_bytes;		      /* ... bytes copied to or from the device */
	uint64_t stage_copy_ns;		      /* ... time with a copy in flight */
	uint64_t stage_io_ns;		      /* ... time with a staged object at its target */
	uint64_t stage_overlap_ns;	      /* ... time with both (copy/I-O overlap) */
	uint64_t objects;		      /* target: objects stored now */
	uint64_t used_bytes;		      /* target: bytes of capacity in use now */
	uint64_t capacity_bytes;	      /* target: capacity */
	uint64_t lat_us[KVR_LAT_BUCKETS];     /* per-object latency histogram */
	uint64_t pool_bytes;		      /* memory store: its pool's size */
	uint64_t pool_bytes_ready;	      /* ... bytes of it faulted in (and pinned
						 as fixed buffers where the table has
						 room): less than pool_bytes only while
						 KVR_STORE_BACKGROUND_FAULT works */
};

/** Copy the engine's counters into *out (at most out->size bytes, out->size
 *  set to what was filled). Errors: -EINVAL (NULL argument, or out->size
 *  smaller than the size field and its padding, e.g. 0). */
int kvr_engine_stats(kvr_engine *e, struct kvr_stats *out);

/**
 * The detailed error message of the last failed call on e (e.g. which
 * limit failed a registration), or "" when that call left none: each call
 * that can set one clears it first, so a message never outlives the call
 * it explains. Valid until the next call on the engine.
 */
const char *kvr_engine_errmsg(kvr_engine *e);

/** Human-readable text for a negative errno returned by kvring. */
const char *kvr_strerror(int err);

/**
 * Parse a byte count as the store URIs and the programs take it: decimal
 * digits with an optional K, M, G or T suffix (powers of 1024; "KiB"/"KB"
 * accepted). Any thread. Returns 0 with *out set, or -EINVAL for NULL
 * arguments, anything else in the string, or a value over 2^64-1.
 */
int kvr_parse_size(const char *s, uint64_t *out);

/* -------------------------------------------------------- registered memory */

enum {
	KVR_MEM_HOST = 0,	/* host memory (default) */
	KVR_MEM_CUDA = 1u << 0, /* CUDA device memory (needs a CUDA build) */
	/** Host memory that is also pinned for CUDA (cudaHostRegister), so
	 *  copies between it and the GPU run at full speed. */
	KVR_MEM_CUDA_PINNED = 1u << 1,
	/** Host memory the registrant does not own for the registration's
	 *  life (it may be unmapped, remapped or madvise'd away under it): no
	 *  io_uring fixed buffer is made, so nothing is pinned at registration
	 *  and each I/O resolves its addresses afresh (the plain zero-copy
	 *  path). RDMA targets still register MRs for it. */
	KVR_MEM_NO_PIN = 1u << 2,
};

/**
 * Register [addr, addr+len) so that objects' SGEs may point into it. Host
 * memory becomes io_uring fixed buffers (regions over 1 GiB take several
 * table entries); memory that cannot be a fixed buffer (file-backed) is
 * still accepted and uses the plain zero-copy path. Regions must not
 * overlap. The memory stays the caller's; it must stay mapped (or
 * allocated, for device memory) until kvr_mem_deregister(). *out receives
 * the region handle.
 * KVR_MEM_CUDA: addr is CUDA device memory (cudaMalloc) of the current
 * device. An RDMA target with GPUDirect (dmabuf or peer memory) moves its
 * bytes straight between the NIC and the GPU; every other target gets them
 * staged through the engine's pinned, registered bounce pool with
 * asynchronous copies on an engine-owned stream, overlapped with the I/O.
 * Errors: -EINVAL (NULL/zero arguments, unknown flags, KVR_MEM_CUDA with
 * either other flag),
 * -EEXIST (overlaps a registered region), -ENOSPC (fixed-buffer table
 * full), -ENOMEM (pinning failed: usually RLIMIT_MEMLOCK —
 * kvr_engine_errmsg() names the limit), -EOPNOTSUPP (a CUDA flag in a
 * build without CUDA), -ENODEV (no CUDA device), -EFAULT (bad address, or
 * KVR_MEM_CUDA memory that is not device memory).
 */
int kvr_mem_register(kvr_engine *e, void *addr, size_t len, unsigned flags, kvr_mr **out);

/**
 * Deregister a region. Errors: -EINVAL (NULL), -EBUSY (a batch using the
 * region has not had its callback run yet, on every kind of target — also
 * from inside that callback; nothing changed — retry after it returned).
 */
int kvr_mem_deregister(kvr_engine *e, kvr_mr *mr);

/* ------------------------------------------------------------------ stores */

enum {
	/** file store: fail when the file has no valid store instead of creating. */
	KVR_STORE_NO_CREATE = 1u << 0,
	/** file store: always format a new, empty store (erases existing data). */
	KVR_STORE_TRUNCATE = 1u << 1,
	/** When full, fail puts with -ENOSPC instead of evicting LRU objects. */
	KVR_STORE_NO_EVICT = 1u << 2,
	/** file store: write with RWF_DSYNC so a completed put survives power loss
	 *  (a completed put always survives a crash of the process). */
	KVR_STORE_DSYNC = 1u << 3,
	/** mem: open at once and fault the pool in (then pin it as fixed
	 *  buffers, 1 GiB at a time) in the background, instead of before
	 *  kvr_store_open() returns (which takes seconds per GiB on a fresh
	 *  machine). The whole pool is usable meanwhile; a page the store
	 *  writes before the faulting reached it is faulted by that write, and
	 *  I/O on a part not pinned yet takes the plain path. Progress:
	 *  pool_bytes_ready in kvr_target_stats(), and INFO log lines. A
	 *  thread of the store's own does the faulting; it is joined by
	 *  kvr_target_close(). Ignored by file stores. */
	KVR_STORE_BACKGROUND_FAULT = 1u << 4,
};

/** Store options; zero-initialise and set size, as for the engine. */
struct kvr_store_opts {
	uint32_t size;	     /* sizeof(struct kvr_store_opts) */
	uint32_t flags;	     /* KVR_STORE_* */
	uint64_t capacity;   /* file store: data capacity in bytes when
				creating; the file is sized to it (default:
				what the size of a device or of a non-empty
				file leaves, see kvr_store_open(); 1 GiB for
				a missing or empty file). mem: overrides SIZE */
	uint32_t timeout_ms; /* default deadline of this target's batches
				(default: the engine's) */
	uint64_t fault_rate; /* mem: with KVR_STORE_BACKGROUND_FAULT, bytes per
				second to fault at most (default 0: as fast as
				the machine goes) */
};

/**
 * Open a local store. `uri` is one of
 *   "mem:SIZE"   a memory pool of SIZE bytes (suffix K, M, G allowed), huge
 *                pages when available, registered with the engine (faulted
 *                in and pinned before this returns, unless
 *                KVR_STORE_BACKGROUND_FAULT);
 *   "file:PATH"  a file or block device driven with O_DIRECT. An existing
 *                store is reopened (its objects are found again after a clean
 *                close or a crash). A missing or empty file (or one whose
 *                store header area is all zeros) gets a new store, unless
 *                KVR_STORE_NO_CREATE. Any other content is never
 *                overwritten without KVR_STORE_TRUNCATE. The store is
 *                locked (flock) for one process at a time.
 *                Capacity of a new store: opts->capacity if set (a file is
 *                then resized to hold it; a device holds at most what it
 *                has). Otherwise a block device, or a file that already
 *                has a size (pre-sized with ftruncate/fallocate), keeps
 *                that size S and the data area is what the store's header
 *                leaves: S - D rounded down to 4 KiB, where D = 8 KiB of
 *                superblocks + two metadata-log halves of S/64 each
 *                (rounded down to a MiB, at least 8 MiB, at most 1 GiB),
 *                rounded up to a MiB; e.g. 47 MiB of a 64 MiB file, and
 *                -ENOSPC for S <= D + 4 KiB (about 17 MiB). A missing or
 *                empty file gets 1 GiB (and grows to about 1.03 GiB).
 *                If creating the store fails (e.g. -ENOSPC, -EFBIG), a file
 *                this call created is removed, and one that existed gets
 *                back its size, with a zeroed header.
 *                A store of an earlier on-disk version (1) opens and is
 *                upgraded in place to the current one (2), which a kvring
 *                knowing only version 1 refuses (-EUCLEAN).
 * opts may be NULL. On success *out owns the target.
 * Errors: -EINVAL (bad URI, size or options), -ENOENT (file missing and
 * KVR_STORE_NO_CREATE), -EUCLEAN (the file holds no valid store — foreign
 * content, or empty with KVR_STORE_NO_CREATE — or a store of an unknown
 * version), -EBUSY (another process has the store open), -ENOMEM,
 * -ENOSPC (no room on the file system, or a device or file too small),
 * -EFBIG (a capacity past the largest file), or the errno of
 * open/fallocate/read. Log records that no store could have written (an
 * extent outside the data area, an impossible sequence number) are dropped
 * at open, like torn ones, with a warning in the log.
 */
int kvr_store_open(kvr_engine *e, const char *uri, const struct kvr_store_opts *opts,
		   kvr_target **out);

/* ------------------------------------------------------------------ remote */

/** Options of kvr_connect(); zero-initialise and set size, as for the engine. */
struct kvr_connect_opts {
	uint32_t size;		     /* sizeof(struct kvr_connect_opts) */
	uint32_t conns;		     /* connections per node (default 2) */
	uint32_t replicas;	     /* copies of each object (default 1, at most
					the number of nodes) */
	uint32_t timeout_ms;	     /* default deadline of this target's batches
					(default: the engine's) */
	uint32_t connect_timeout_ms; /* connect + handshake (default 3000) */
	uint32_t retry_ms;	     /* first retry delay of a node marked down
					(default 200, doubling up to 10 s) */
	uint32_t zc_min;	     /* payload bytes from which puts use
					zero-copy send (default 16 KiB;
					UINT32_MAX: never) */
	const void *secret;	     /* shared secret for the HELLO
					authentication (default: none) */
	size_t secret_len;	     /* 1..4096 bytes when secret is set */
};

/**
 * Open a remote target: a cluster of kvring-server nodes.
 * `uri` is "tcp://HOST:PORT[,HOST:PORT...]" (HOST a name, an IPv4 address
 * or a bracketed IPv6 address; names are resolved once, here, so this call
 * may block on DNS), or "rdma://HOST:PORT[,...][?dev=NAME&gid=N]" for the
 * same cluster over RDMA verbs (docs/rdma.md, its limits too). Keys map to nodes by rendezvous
 * hashing; with `replicas` R a put writes R copies on the first R usable nodes of the key's
 * ranking, replacing a failed node by the next one (its result is success when at least one copy
 * was stored), and a remove goes to R nodes. A node whose connection fails or stays silent past a
 * deadline is marked down and retried with backoff; a deadline missed by one node makes only that
 * node suspect. Connections are opened in the background; batches submitted before they are up wait
 * for them (within their deadline). Reads (get, exists) ask one replica at a time, falling over to
 * the next on a miss or a node failure, and guarantee, per target handle:
 * read-your-acknowledged-writes. A get never returns a version of a key
 * older than the newest put (or remove) of it that this handle reported
 * successful, across replica stalls, deaths and restarts: the handle
 * remembers, for a key some replica missed the newest write of (a put
 * stored on fewer than the first R nodes, or on a replacement), which
 * replicas hold that write, reads only those, and removes the key from a
 * replica that missed it once that node is up again. Every other key is
 * read from its first R nodes only (a node past them may keep an old
 * copy). Puts of one key still in flight together are not ordered. So a
 * read of an acknowledged key is a hit, or -ENOENT only when every replica
 * holding its newest write lost it (a restarted memory store), or
 * -EHOSTDOWN/-ETIMEDOUT when none of them answers. The handle remembers up
 * to 4096 such keys (about 2 MiB, allocated at connect, touched only when
 * replicas diverge); when full it forgets one with nothing left to repair
 * (a read of it may then miss, never read stale), or else reports an
 * acknowledged put that left a stale replica as -ENOBUFS.
 * Across handles (other clients, or another kvr_connect of this process)
 * nothing more is promised: servers do not talk to each other and the
 * protocol carries no versions, so another client may read a replica that
 * missed a write it did not see until the writing handle repaired it, and
 * replicas written by concurrent writers of one key may keep different
 * versions (each node keeps the one it received last).
 * Per-object errors, besides those of local stores: -ECONNREFUSED (no server
 * listening), -ECONNRESET (connection lost during the request), -EHOSTDOWN
 * (every replica a read may ask, or every node for a put, is down and
 * backing off), -EACCES (the server refused the secret), -EPROTO (the peer
 * does not speak kvring), -ENOBUFS (a put: see above; or no request slots),
 * -EFBIG (put: larger than the server's max_object, a quarter of its pool
 * by default).
 * On success *out owns the target (close it with kvr_target_close()).
 * Errors: -EINVAL (bad URI or options), -EHOSTUNREACH (a name did not
 * resolve), -ENOMEM, -ESHUTDOWN (engine being destroyed).
 */
int kvr_connect(kvr_engine *e, const char *uri, const struct kvr_connect_opts *opts,
		kvr_target **out);

/* ---------------------------------------------------------------- serving */

typedef struct kvr_server kvr_server;
typedef struct kvr_server_group kvr_server_group;

/**
 * A group lets several engines (one per thread) serve one listening address:
 * each engine serves one shard of the keys; clients learn the shard count in
 * the handshake and route each key to its shard's connections. Create it
 * once, pass it to kvr_serve() of every shard, destroy it after all of them
 * closed. Thread-safe. Errors: -EINVAL (shards 0 or over 1024), -ENOMEM.
 */
int kvr_server_group_create(uint32_t shards, kvr_server_group **out);
void kvr_server_group_destroy(kvr_server_group *g);

/** Options of kvr_serve(); zero-initialise and set size. */
struct kvr_serve_opts {
	uint32_t size;		  /* sizeof(struct kvr_serve_opts) */
	uint32_t max_conns;	  /* connections at once (default 1024); when
				     full, a new client takes the place of the
				     connection idle longest between frames,
				     if that one has been idle for
				     idle_timeout_ms */
	const void *secret;	  /* require HELLO authentication with this
				     shared secret (default: none) */
	size_t secret_len;	  /* 1..4096 bytes when secret is set */
	kvr_target *spill;	  /* optional file store of the same engine:
				     evicted objects are written there and
				     read back on a memory miss */
	kvr_server_group *group;  /* NULL: this engine serves alone */
	uint32_t shard;		  /* this engine's shard in the group */
	uint32_t idle_timeout_ms; /* close a connection stuck mid-frame (or
				     in its handshake) with no byte arriving
				     for this long, or whose frame has taken
				     longer than this plus its payload at
				     64 MiB/s however its bytes trickle in,
				     or one whose answers wait unsent with no
				     byte taken by the peer for this long
				     (default 30000) */
	uint64_t max_object;	  /* largest object a PUT may store (default
				     and cap: a quarter of the pool); a PUT of
				     more is answered -EFBIG and its payload
				     discarded */
};

/**
 * Serve `store` (a "mem:" store of engine e) to kvring clients. `uri` is
 * "tcp://HOST:PORT" (PORT 0 picks a free port; see kvr_server_addr()); in a
 * group, shard 0 listens and hands connections to the other shards, whose
 * uri must be NULL. Payloads are received straight into the store's pool and
 * sent straight from it. Serving runs inside the engine's loop
 * (kvr_engine_run() or poll). Engine thread only.
 * Errors: -EINVAL (bad URI, options, or store not a memory store of e),
 * -EADDRINUSE, -EACCES, other socket errors, -ENOMEM.
 */
int kvr_serve(kvr_engine *e, const char *uri, kvr_target *store, const struct kvr_serve_opts *opts,
	      kvr_server **out);

/** The address actually listened on ("tcp://127.0.0.1:40123"), or "" for a
 *  shard that does not listen. Returns the string's length, or -EINVAL. */
int kvr_server_addr(kvr_server *s, char *buf, size_t len);

/**
 * Stop serving: stop accepting, let requests already received finish and
 * their responses be sent (waiting at most timeout_ms), close every
 * connection, and free s. The store (and spill store) stay open for the
 * caller to close. It runs none of the caller's callbacks: batches of the
 * caller's that finish meanwhile are left for the next kvr_engine_poll.
 * Engine thread only, not from a callback. Returns 0, -ETIMEDOUT when
 * requests were still unfinished at the timeout (they were dropped), or
 * -EBUSY inside a callback or poll.
 */
int kvr_server_close(kvr_server *s, uint32_t timeout_ms);

/** Server counters as the STATS op reports them (one line of JSON), into buf.
 *  Returns the length written (truncated to len - 1), or -EINVAL. */
int kvr_server_stats_json(kvr_server *s, char *buf, size_t len);

/* ------------------------------------------------------------------ batches */

/**
 * Batch calls. Each submits n objects to target t; cb(ctx, n, results) runs
 * exactly once, later, from kvr_engine_poll(). The kvr_obj array, the keys
 * and the SGL arrays are copied before the call returns; the memory the SGEs
 * point at belongs to kvring until the callback (gets write into it; puts
 * read from it).
 *
 *   kvr_put     store each object (replacing any earlier value atomically: a
 *               concurrent get sees the old or the new bytes, never a mix)
 *   kvr_get     read each object into its SGL (objects may be shorter than
 *               the SGL; the result says how many bytes)
 *   kvr_exists  ask for each key (sgl/nsge ignored)
 *   kvr_remove  delete each key (sgl/nsge ignored; a missing key is -ENOENT)
 *
 * Returns 0 once the batch is accepted. On any error below, nothing is
 * submitted and the callback is not called:
 *   -EINVAL       t, cb or objs is NULL; n == 0; a key is NULL or empty;
 *                 put/get: nsge == 0, sgl NULL, or an SGE of length 0;
 *                 get: two SGEs of the batch overlap
 *   -ENAMETOOLONG a key is longer than KVR_MAX_KEY
 *   -E2BIG        nsge > KVR_MAX_SGE, or n > the engine's max_objects
 *   -EFAULT       an SGE address is NULL or an SGE is not inside one
 *                 registered region
 *   -EBADF        the target was closed
 *   -ESHUTDOWN    the engine is being destroyed
 *   -ENOMEM       the descriptor copy could not be allocated
 * A batch larger than the objects currently free in the pool is accepted and
 * started as earlier batches complete.
 */
int kvr_put(kvr_target *t, const kvr_obj *objs, size_t n, kvr_batch_cb cb, void *ctx);
int kvr_get(kvr_target *t, const kvr_obj *objs, size_t n, kvr_batch_cb cb, void *ctx);
int kvr_exists(kvr_target *t, const kvr_obj *objs, size_t n, kvr_batch_cb cb, void *ctx);
int kvr_remove(kvr_target *t, const kvr_obj *objs, size_t n, kvr_batch_cb cb, void *ctx);

/** Operations, for kvr_submit(). */
enum kvr_op { KVR_OP_PUT = 0, KVR_OP_GET, KVR_OP_EXISTS, KVR_OP_REMOVE };

/**
 * Like kvr_put/get/exists/remove with an explicit deadline: timeout_ms > 0
 * sets this batch's deadline, 0 uses the target's default, and objects not
 * finished when it passes complete with -ETIMEDOUT (the callback still waits
 * until the kernel has released every buffer of the batch).
 * Errors: those of kvr_put, and -EINVAL for an unknown op.
 */
int kvr_submit(kvr_target *t, enum kvr_op op, const kvr_obj *objs, size_t n, uint32_t timeout_ms,
	       kvr_batch_cb cb, void *ctx);

/**
 * Close a target: stops accepting batches, waits for its in-flight I/O to
 * finish (their callbacks run from the next poll, as usual), writes what a
 * clean reopen needs, and releases its resources. The handle itself stays
 * valid — further calls return -EBADF — until kvr_engine_destroy().
 * Returns 0, -EBADF (already closed), -EINVAL (NULL), or the errno of the
 * final metadata write (the target is closed regardless).
 */
int kvr_target_close(kvr_target *t);

/** Copy the target's counters, as kvr_engine_stats() does. Errors: -EINVAL
 *  (NULL argument, or out->size too small). */
int kvr_target_stats(kvr_target *t, struct kvr_stats *out);

#ifdef __cplusplus
}
#endif
#endif /* KVRING_H */
