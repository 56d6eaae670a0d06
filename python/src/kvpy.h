/* SPDX-License-Identifier: MIT */
/*
 * The kvring extension module's shared parts: the kvring.Error exception,
 * option parsing, and the one builder that turns Python keys and buffers
 * into kvring objects (one allocation per batch).
 *
 * Every function here that takes or returns Python objects needs the GIL.
 */
#ifndef KVPY_H
#define KVPY_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <kvring.h>
#include <stdbool.h>

/* kvring.Error, an OSError subclass carrying the errno. */
extern PyObject *kvpy_Error;

/* Raise kvring.Error(err, "<message>: <strerror>") where err is a positive
 * or negative errno; returns NULL. */
PyObject *kvpy_raise(int err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Message text for an errno kvring returned, naming what the caller can do
 * (e.g. -EFAULT: register the memory first). */
const char *kvpy_hint(int err);
/* The same for the errors of opening a target (kvr_store_open/kvr_connect). */
const char *kvpy_open_hint(int err);

/* ------------------------------------------------------------- options */

/* A METH_FASTCALL | METH_KEYWORDS call's arguments as the tuple and dict
 * (*kw NULL without keywords) that PyArg_ParseTupleAndKeywords() takes, for
 * the calls that are not the fast path's plain positional ones. Their items
 * are the caller's. Returns 0, or -1 with MemoryError set. */
int kvpy_fastcall_args(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames, PyObject **tuple,
		       PyObject **kw);

/* A non-negative int that fits 32 bits into *out; -1 with TypeError or
 * kvring.Error(EINVAL) set otherwise. */
int kvpy_u32(PyObject *v, const char *name, uint32_t *out);

/* Engine options from keyword arguments (ring_entries, max_objects,
 * fixed_buffers, timeout_ms, stage_bytes, busy_poll, no_defer_taskrun).
 * Returns 0, or -1 with TypeError/ValueError set for unknown or bad ones. */
int kvpy_engine_opts(PyObject *kw, struct kvr_engine_opts *o);

/* What Engine.open() and the connector open: the URI and its options,
 * parsed and copied so that another thread may open it without the GIL. */
struct kvpy_spec {
	char *uri;
	bool remote; /* tcp:// or rdma://: kvr_connect, else kvr_store_open */
	struct kvr_store_opts store;
	struct kvr_connect_opts conn;
	void *secret; /* owned copy (conn.secret points at it) */
};
/* Parse uri and keyword arguments into s (capacity, flags: no_create,
 * truncate, no_evict, dsync; timeout_ms; conns, replicas,
 * connect_timeout_ms, retry_ms, zc_min, secret). `skip` lists keyword names
 * the caller handles itself (NULL-terminated, may be NULL). Returns 0, or
 * -1 with an exception set. Free with kvpy_spec_free(). */
int kvpy_spec_parse(const char *uri, PyObject *kw, const char *const *skip, struct kvpy_spec *s);
void kvpy_spec_free(struct kvpy_spec *s);
/* Open the target s describes on engine e (engine thread, no GIL needed). */
int kvpy_spec_open(kvr_engine *e, const struct kvpy_spec *s, kvr_target **out);

/* ----------------------------------------------------------- batches */

/* A batch's arrays, all inside one allocation made by kvpy_desc_build(). */
struct kvpy_desc {
	size_t n;	  /* objects */
	size_t nviews;	  /* buffers held (one per SGE) */
	int64_t *results; /* n: filled by the completion */
	kvr_obj *objs;	  /* n */
	kvr_sge *sges;	  /* nviews */
	Py_buffer *views; /* nviews: held until kvpy_desc_release() */
	size_t blk_len;	  /* bytes of the block holding them */
};

/* One freed batch block an engine keeps for its next batch: batches of a
 * loop are the same size, call after call, and a malloc + free of ~9 KiB
 * for each costs more than the rest of the bookkeeping. */
struct kvpy_blk_cache {
	void *blk;
	size_t len;
};
/* Give back a block kvpy_desc_build() made: kept in c when it is the
 * larger one, freed otherwise (c may be NULL: freed). */
void kvpy_blk_put(struct kvpy_blk_cache *c, void *blk, size_t len);

/*
 * Build a batch from `keys` (a sequence of str or bytes) and `bufs`: None
 * for exists/remove, else a sequence with, per key, one buffer-protocol
 * object or a sequence of them (the object's SGL, in order). Buffers must be
 * contiguous and, when `writable` (gets), writable. Allocates one block of
 * `head` bytes (the caller's header, zeroed) followed by the arrays (taken
 * from `cache` when its block is large enough; cache may be NULL), and
 * returns it with *d filled (d->blk_len its size, for kvpy_blk_put()); the
 * buffers stay exported (a bytearray cannot be resized, an object cannot be
 * freed) until kvpy_desc_release(). On bad input returns NULL with
 * TypeError (wrong types) or kvring.Error (EINVAL: count mismatch, empty key
 * or buffer, read-only or non-contiguous buffer; ENAMETOOLONG; E2BIG) set,
 * holding nothing.
 */
void *kvpy_desc_build(size_t head, PyObject *keys, PyObject *bufs, bool writable,
		      struct kvpy_blk_cache *cache, struct kvpy_desc *d);
/* Release the buffers a built batch holds (idempotent). */
void kvpy_desc_release(struct kvpy_desc *d);

/* ------------------------------------------------------------- types */

extern PyTypeObject kvpy_EngineType, kvpy_TargetType, kvpy_RegionType, kvpy_BatchType,
    kvpy_ConnectorType;

/* The engine object, for batch.c. */
struct kvpy_batch;
struct kvpy_reg;
typedef struct {
	PyObject_HEAD kvr_engine *e;
	unsigned long owner;	     /* PyThread_get_thread_ident() of its creator */
	struct kvpy_batch *pending;  /* submitted, completion not yet handled */
	struct kvpy_batch *done;     /* completed inside a poll, to finish */
	struct kvpy_reg *regs;	     /* registrations, undone at close */
	struct kvpy_blk_cache spare; /* freed at dealloc */
	PyObject *targets;	     /* list of Target */
	PyObject *weakrefs;
	bool polling;
} kvpy_Engine;

/* A target of an engine (engine.c opens it, target.c serves it). */
typedef struct {
	PyObject_HEAD kvpy_Engine *eng; /* strong */
	kvr_target *t;
	PyObject *uri;
	PyObject *weakrefs;
	bool closed;
} kvpy_Target;

/* struct kvr_stats as a dict; the context managers' __enter__ (self). */
PyObject *kvpy_stats_dict(const struct kvr_stats *s);
PyObject *kvpy_enter(PyObject *self, PyObject *unused);

/* 0 if the calling thread may use the engine (and it is open), else -1 with
 * kvring.Error set (EPERM: another thread; EBADF: closed). */
int kvpy_engine_check(kvpy_Engine *eng);
/* Poll with the GIL released, then finish the batches that completed:
 * release their buffers, resolve their futures. Returns kvr_engine_poll's
 * count, or -1 with an exception set. */
int kvpy_engine_poll(kvpy_Engine *eng, int timeout_ms);

/* batch.c: submit a batch on tgt (GIL held); the target is checked again
 * once the batch is built, since building runs Python code. */
PyObject *kvpy_batch_submit(kvpy_Target *tgt, enum kvr_op op, PyObject *keys, PyObject *bufs,
			    uint32_t timeout_ms, PyObject *callback);
/* Visit every pending batch, for the engine's tp_traverse. */
int kvpy_batches_traverse(kvpy_Engine *eng, visitproc visit, void *arg);
/* Finish the batches eng->done holds (GIL held). */
void kvpy_batches_finish(kvpy_Engine *eng);

/* regions.c: the mapping of this process that holds addr (from
 * /proc/self/maps): [*start, *end) and its name ("" when anonymous).
 * Returns 0, -ENOENT (not mapped) or the errno of reading the file. */
int kvpy_find_mapping(uintptr_t addr, uintptr_t *start, uintptr_t *end, char *name,
		      size_t name_len);

#endif
