/* SPDX-License-Identifier: MIT */
/*
 * kvring.Engine, kvring.Region and kvring.Target: thin objects over the C
 * handles. An Engine belongs to the thread that created it, as the C engine
 * does; every call into the engine releases the GIL.
 */
#include "kvpy.h"

#include <errno.h>
#include <string.h>

/* One registration: the exported buffer stays held until it is undone. */
struct kvpy_reg {
	kvr_mr *mr;
	Py_buffer view;
	struct kvpy_reg *next;
	PyObject *owner; /* the Region object, borrowed; NULL once it is gone */
};

typedef struct {
	PyObject_HEAD kvpy_Engine *eng; /* strong */
	struct kvpy_reg *reg;		/* NULL once closed */
} kvpy_Region;

static struct kvpy_reg **engine_regs(kvpy_Engine *eng)
{
	return &eng->regs;
}

int kvpy_engine_check(kvpy_Engine *eng)
{
	if (!eng->e) {
		kvpy_raise(EBADF, "the engine is closed");
		return -1;
	}
	if (PyThread_get_thread_ident() != eng->owner) {
		kvpy_raise(EPERM, "an Engine is used only from the thread that created it "
				  "(Engine.wake() excepted; kvring.lmcache.KvringConnector is the "
				  "thread-safe front end)");
		return -1;
	}
	return 0;
}

PyObject *kvpy_stats_dict(const struct kvr_stats *s)
{
	PyObject *d = PyDict_New(), *lat;

	if (!d)
		return NULL;
#define F(name)                                                                                    \
	do {                                                                                       \
		PyObject *v = PyLong_FromUnsignedLongLong(s->name);                                \
		if (!v || PyDict_SetItemString(d, #name, v)) {                                     \
			Py_XDECREF(v);                                                             \
			goto fail;                                                                 \
		}                                                                                  \
		Py_DECREF(v);                                                                      \
	} while (0)
	F(batches);
	F(puts);
	F(gets);
	F(exists);
	F(removes);
	F(errors);
	F(misses);
	F(timeouts);
	F(bytes_put);
	F(bytes_got);
	F(checksum_errors);
	F(evictions);
	F(bounce_bytes);
	F(fixed_ios);
	F(plain_ios);
	F(submits);
	F(cq_overflows);
	F(rdma_wrs);
	F(rdma_posts);
	F(rdma_wcs);
	F(rdma_cq_events);
	F(stage_copy_ns);
	F(stage_io_ns);
	F(stage_overlap_ns);
	F(staged_objects);
	F(staged_bytes);
	F(objects);
	F(used_bytes);
	F(capacity_bytes);
	F(pool_bytes);
	F(pool_bytes_ready);
#undef F
	lat = PyList_New(KVR_LAT_BUCKETS);
	if (!lat)
		goto fail;
	for (int i = 0; i < KVR_LAT_BUCKETS; i++) {
		PyObject *v = PyLong_FromUnsignedLongLong(s->lat_us[i]);

		if (!v) {
			Py_DECREF(lat);
			goto fail;
		}
		PyList_SET_ITEM(lat, i, v);
	}
	if (PyDict_SetItemString(d, "lat_us", lat)) {
		Py_DECREF(lat);
		goto fail;
	}
	Py_DECREF(lat);
	return d;
fail:
	Py_DECREF(d);
	return NULL;
}

/* ------------------------------------------------------------- Engine */

static int Engine_init(kvpy_Engine *self, PyObject *args, PyObject *kw)
{
	struct kvr_engine_opts o;
	kvr_engine *e;
	int rc;

	if (PyTuple_GET_SIZE(args)) {
		PyErr_SetString(PyExc_TypeError, "Engine() takes keyword arguments only");
		return -1;
	}
	if (self->e) {
		PyErr_SetString(PyExc_RuntimeError, "Engine already initialised");
		return -1;
	}
	if (kvpy_engine_opts(kw, &o))
		return -1;
	Py_BEGIN_ALLOW_THREADS rc = kvr_engine_create(&o, &e);
	Py_END_ALLOW_THREADS if (rc)
	{
		kvpy_raise(rc, "kvr_engine_create: %s", kvr_strerror(rc));
		return -1;
	}
	self->e = e;
	self->owner = PyThread_get_thread_ident();
	return 0;
}

static void targets_forget(kvpy_Engine *self);

/* Destroy the C engine: pending batches complete (their callbacks run in
 * here, as kvr_engine_destroy() promises) and are finished; every
 * registration is undone and its buffer released. */
static void engine_close(kvpy_Engine *self)
{
	kvr_engine *e = self->e;
	struct kvpy_reg *r, *next;

	if (!e)
		return;
	/* Cleared first: wake() and stop() from another thread, which may run
	 * while the GIL is released below, see a closed engine. */
	self->e = NULL;
	Py_BEGIN_ALLOW_THREADS kvr_engine_destroy(e);
	Py_END_ALLOW_THREADS kvpy_batches_finish(self);
	for (r = *engine_regs(self); r; r = next) {
		next = r->next;
		if (r->owner)
			((kvpy_Region *)r->owner)->reg = NULL;
		PyBuffer_Release(&r->view);
		PyMem_RawFree(r);
	}
	*engine_regs(self) = NULL;
	targets_forget(self);
}

static PyObject *Engine_close(kvpy_Engine *self, PyObject *unused)
{
	if (self->e && PyThread_get_thread_ident() != self->owner)
		return kvpy_raise(EPERM, "an Engine is closed by the thread that created it");
	if (self->polling)
		return kvpy_raise(EBUSY, "Engine.close() from inside a poll");
	engine_close(self);
	Py_RETURN_NONE;
}

/* The GC sees the pending list's references to its batches, each of which
 * refers back to the engine: a cycle when nobody polls or closes it. */
static int Engine_traverse(kvpy_Engine *self, visitproc visit, void *arg)
{
	Py_VISIT(self->targets);
	return kvpy_batches_traverse(self, visit, arg);
}

/* Breaking such a cycle means finishing those batches: close the engine,
 * which runs them to completion (on its own thread only: the ring takes
 * submissions from one thread). */
static int Engine_clear(kvpy_Engine *self)
{
	if (self->e && !self->polling && PyThread_get_thread_ident() == self->owner)
		engine_close(self);
	return 0;
}

static void Engine_dealloc(kvpy_Engine *self)
{
	PyObject_GC_UnTrack(self);
	if (self->weakrefs)
		PyObject_ClearWeakRefs((PyObject *)self);
	/* Only reachable with no batch pending (each holds the engine). */
	engine_close(self);
	PyMem_RawFree(self->spare.blk);
	Py_CLEAR(self->targets);
	Py_XDECREF(self->targets);
	Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Engine_poll(kvpy_Engine *self, PyObject *args, PyObject *kw)
{
	static char *kwlist[] = {"timeout_ms", NULL};
	int timeout_ms = 0, rc;

	if (!PyArg_ParseTupleAndKeywords(args, kw, "|i:poll", kwlist, &timeout_ms))
		return NULL;
	if (kvpy_engine_check(self))
		return NULL;
	rc = kvpy_engine_poll(self, timeout_ms);
	return rc < 0 ? NULL : PyLong_FromLong(rc);
}

static PyObject *Engine_next_timeout(kvpy_Engine *self, PyObject *unused)
{
	if (kvpy_engine_check(self))
		return NULL;
	return PyLong_FromLong(kvr_engine_next_timeout(self->e));
}

static PyObject *Engine_wake(kvpy_Engine *self, PyObject *unused)
{
	if (!self->e)
		return kvpy_raise(EBADF, "the engine is closed");
	kvr_engine_wake(self->e);
	Py_RETURN_NONE;
}

static PyObject *Engine_stop(kvpy_Engine *self, PyObject *unused)
{
	if (!self->e)
		return kvpy_raise(EBADF, "the engine is closed");
	kvr_engine_stop(self->e);
	kvr_engine_wake(self->e);
	Py_RETURN_NONE;
}

static PyObject *Engine_stats(kvpy_Engine *self, PyObject *unused)
{
	struct kvr_stats s = {.size = sizeof(s)};

	if (kvpy_engine_check(self))
		return NULL;
	kvr_engine_stats(self->e, &s);
	return kvpy_stats_dict(&s);
}

static PyObject *Engine_get_fd(kvpy_Engine *self, void *closure)
{
	if (!self->e)
		return kvpy_raise(EBADF, "the engine is closed");
	return PyLong_FromLong(kvr_engine_fd(self->e));
}

static PyObject *Engine_get_closed(kvpy_Engine *self, void *closure)
{
	return PyBool_FromLong(!self->e);
}

static PyObject *Engine_register(kvpy_Engine *self, PyObject *args, PyObject *kw)
{
	static char *kwlist[] = {"buffer", "cuda_pinned", NULL};
	PyObject *obj;
	int pinned = 0, rc;
	struct kvpy_reg *r;
	kvpy_Region *reg;

	if (!PyArg_ParseTupleAndKeywords(args, kw, "O|$p:register", kwlist, &obj, &pinned))
		return NULL;
	if (kvpy_engine_check(self))
		return NULL;
	if (!PyObject_CheckBuffer(obj)) {
		PyErr_Format(PyExc_TypeError,
			     "register() needs a writable buffer-protocol object, not %.100s",
			     Py_TYPE(obj)->tp_name);
		return NULL;
	}
	r = PyMem_RawCalloc(1, sizeof(*r));
	if (!r)
		return PyErr_NoMemory();
	if (PyObject_GetBuffer(obj, &r->view, PyBUF_ANY_CONTIGUOUS | PyBUF_WRITABLE)) {
		PyErr_Clear();
		if (PyObject_GetBuffer(obj, &r->view, PyBUF_ANY_CONTIGUOUS) == 0) {
			PyBuffer_Release(&r->view);
			kvpy_raise(EINVAL, "register(): the buffer is read-only (gets write into "
					   "registered memory)");
		} else {
			PyErr_Clear();
			kvpy_raise(EINVAL, "register(): the buffer is not contiguous");
		}
		PyMem_RawFree(r);
		return NULL;
	}
	if (r->view.len == 0) {
		PyBuffer_Release(&r->view);
		PyMem_RawFree(r);
		return kvpy_raise(EINVAL, "register(): the buffer is empty");
	}
	Py_BEGIN_ALLOW_THREADS rc =
	    kvr_mem_register(self->e, r->view.buf, (size_t)r->view.len,
			     pinned ? KVR_MEM_CUDA_PINNED : KVR_MEM_HOST, &r->mr);
	Py_END_ALLOW_THREADS if (rc)
	{
		const char *detail = kvr_engine_errmsg(self->e);

		PyBuffer_Release(&r->view);
		PyMem_RawFree(r);
		return kvpy_raise(rc, "register(): %s%s%s",
				  rc == -EEXIST ? "overlaps a region already registered"
						: kvr_strerror(rc),
				  *detail ? ": " : "", detail);
	}
	reg = PyObject_New(kvpy_Region, &kvpy_RegionType);
	if (!reg) {
		kvr_mem_deregister(self->e, r->mr);
		PyBuffer_Release(&r->view);
		PyMem_RawFree(r);
		return NULL;
	}
	Py_INCREF(self);
	reg->eng = self;
	reg->reg = r;
	r->owner = (PyObject *)reg;
	r->next = *engine_regs(self);
	*engine_regs(self) = r;
	return (PyObject *)reg;
}

/* The list of live Target objects (weak references), so that closing the
 * engine marks them closed. */
static int targets_add(kvpy_Engine *self, PyObject *t)
{
	PyObject *ref;
	int rc;

	if (!self->targets && !(self->targets = PyList_New(0)))
		return -1;
	/* Drop references to targets already gone, so the list stays short. */
	for (Py_ssize_t i = PyList_GET_SIZE(self->targets) - 1; i >= 0; i--)
		if (PyWeakref_GetObject(PyList_GET_ITEM(self->targets, i)) == Py_None &&
		    PySequence_DelItem(self->targets, i))
			return -1;
	ref = PyWeakref_NewRef(t, NULL);
	if (!ref)
		return -1;
	rc = PyList_Append(self->targets, ref);
	Py_DECREF(ref);
	return rc;
}

static void targets_forget(kvpy_Engine *self)
{
	if (!self->targets)
		return;
	for (Py_ssize_t i = 0; i < PyList_GET_SIZE(self->targets); i++) {
		PyObject *t = PyWeakref_GetObject(PyList_GET_ITEM(self->targets, i));

		if (t != Py_None) {
			((kvpy_Target *)t)->closed = true;
			((kvpy_Target *)t)->t = NULL;
		}
	}
	Py_CLEAR(self->targets);
}

static PyObject *Engine_open(kvpy_Engine *self, PyObject *args, PyObject *kw)
{
	const char *uri;
	struct kvpy_spec spec;
	kvr_target *t;
	kvpy_Target *obj;
	int rc;

	if (!PyArg_ParseTuple(args, "s:open", &uri))
		return NULL;
	if (kvpy_engine_check(self))
		return NULL;
	if (kvpy_spec_parse(uri, kw, NULL, &spec))
		return NULL;
	Py_BEGIN_ALLOW_THREADS rc = kvpy_spec_open(self->e, &spec, &t);
	Py_END_ALLOW_THREADS kvpy_spec_free(&spec);
	if (rc)
		return kvpy_raise(rc, "open('%s'): %s", uri, kvpy_open_hint(rc));
	obj = PyObject_New(kvpy_Target, &kvpy_TargetType);
	if (!obj) {
		kvr_target_close(t);
		return NULL;
	}
	Py_INCREF(self);
	obj->eng = self;
	obj->t = t;
	obj->closed = false;
	obj->weakrefs = NULL;
	obj->uri = PyUnicode_FromString(uri);
	if (!obj->uri || targets_add(self, (PyObject *)obj)) {
		Py_DECREF(obj);
		return NULL;
	}
	return (PyObject *)obj;
}

PyObject *kvpy_enter(PyObject *self, PyObject *unused)
{
	return Py_NewRef(self);
}

static PyObject *Engine_exit(kvpy_Engine *self, PyObject *args)
{
	return Engine_close(self, NULL);
}

static PyMethodDef Engine_methods[] = {
    {"poll", (PyCFunction)(void (*)(void))Engine_poll, METH_VARARGS | METH_KEYWORDS,
     "poll(timeout_ms=0) -> int\n\n"
     "Submit pending work, reap completions and finish the batches that completed: their "
     "buffers are released, .results set and callbacks called, from here. Waits up to "
     "timeout_ms for one to finish (0: never, -1: until one does or wake()); Ctrl-C "
     "interrupts a wait. Returns the number finished. The GIL is released while waiting. "
     "Raises kvring.Error: EPERM (another thread), EBADF (closed), or an io_uring errno."},
    {"next_timeout", (PyCFunction)Engine_next_timeout, METH_NOARGS,
     "next_timeout() -> int\n\nMilliseconds until the engine needs poll() even if its fd "
     "stays quiet (the earliest deadline), 0 for now, -1 if nothing is pending."},
    {"wake", (PyCFunction)Engine_wake, METH_NOARGS,
     "wake() -> None\n\nMake fd readable and end a blocked poll(). Any thread."},
    {"stop", (PyCFunction)Engine_stop, METH_NOARGS,
     "stop() -> None\n\nEnd a blocked poll() now (as wake() does). Any thread."},
    {"stats", (PyCFunction)Engine_stats, METH_NOARGS,
     "stats() -> dict\n\nThe engine's counters (struct kvr_stats) as a dict."},
    {"register", (PyCFunction)(void (*)(void))Engine_register, METH_VARARGS | METH_KEYWORDS,
     "register(buffer, *, cuda_pinned=False) -> Region\n\n"
     "Register a writable, contiguous buffer-protocol object (bytearray, mmap, numpy "
     "array, memoryview of a CPU torch tensor) so that batches may use memory inside it. "
     "The buffer stays exported (a bytearray cannot be resized, an mmap cannot be closed) "
     "and registered until Region.close() or Engine.close(), whether or not the Region is "
     "kept. Register a large pool once rather than each buffer. Raises TypeError (not a buffer) or "
     "kvring.Error: "
     "EINVAL (read-only, non-contiguous or empty), EEXIST (overlaps a registered region), "
     "ENOSPC (fixed-buffer table full), ENOMEM (pinning failed; the message names "
     "RLIMIT_MEMLOCK), EPERM, EBADF."},
    {"open", (PyCFunction)(void (*)(void))Engine_open, METH_VARARGS | METH_KEYWORDS,
     "open(uri, **opts) -> Target\n\n"
     "Open 'mem:SIZE', 'file:PATH' (options capacity, no_create, truncate, no_evict, "
     "dsync, timeout_ms) or a cluster 'tcp://H:P[,H:P...]' / 'rdma://H:P?dev=D' (options "
     "conns, replicas, timeout_ms, connect_timeout_ms, retry_ms, zc_min, secret). "
     "Raises TypeError (unknown option) or kvring.Error with the errno of "
     "kvr_store_open()/kvr_connect(): EINVAL, ENOENT, EUCLEAN, EBUSY, EHOSTUNREACH, ..."},
    {"close", (PyCFunction)Engine_close, METH_NOARGS,
     "close() -> None\n\nDestroy the engine: targets close, batches still pending finish "
     "(work never started with -ECANCELED) and their callbacks run from here, "
     "registrations are undone. Idempotent."},
    {"__enter__", kvpy_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)Engine_exit, METH_VARARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Engine_getset[] = {
    {"fd", (getter)Engine_get_fd, NULL,
     "A descriptor readable while the engine has work to finish: watch it (selectors, "
     "asyncio add_reader) and call poll(0) until it returns 0. The engine owns it.",
     NULL},
    {"closed", (getter)Engine_get_closed, NULL, "True once close() ran.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyTypeObject kvpy_EngineType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "kvring.Engine",
    .tp_basicsize = sizeof(kvpy_Engine),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_traverse = (traverseproc)Engine_traverse,
    .tp_clear = (inquiry)Engine_clear,
    .tp_free = PyObject_GC_Del,
    .tp_doc = "Engine(**opts)\n\n"
	      "One kvring engine: an io_uring, its request pool and timers. Options: "
	      "ring_entries, max_objects, fixed_buffers, timeout_ms, stage_bytes, busy_poll, "
	      "no_defer_taskrun. It belongs to the thread that created it. Use it as a context "
	      "manager, or close() it.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Engine_init,
    .tp_dealloc = (destructor)Engine_dealloc,
    .tp_methods = Engine_methods,
    .tp_getset = Engine_getset,
    .tp_weaklistoffset = offsetof(kvpy_Engine, weakrefs),
};

/* ------------------------------------------------------------- Region */

static int region_undo(kvpy_Region *self)
{
	struct kvpy_reg *r = self->reg, **pp;
	int rc;

	if (!r)
		return 0;
	rc = kvr_mem_deregister(self->eng->e, r->mr);
	if (rc)
		return rc;
	for (pp = engine_regs(self->eng); *pp != r; pp = &(*pp)->next)
		;
	*pp = r->next;
	PyBuffer_Release(&r->view);
	PyMem_RawFree(r);
	self->reg = NULL;
	return 0;
}

static PyObject *Region_close(kvpy_Region *self, PyObject *unused)
{
	int rc;

	if (!self->reg)
		Py_RETURN_NONE;
	if (kvpy_engine_check(self->eng))
		return NULL;
	rc = region_undo(self);
	if (rc)
		return kvpy_raise(rc, "Region.close(): %s",
				  rc == -EBUSY ? "a batch using the region is still in flight"
					       : kvr_strerror(rc));
	Py_RETURN_NONE;
}

static void Region_dealloc(kvpy_Region *self)
{
	/* The registration outlives this object: it is undone by close() or
	 * when the engine closes, never behind the caller's back. */
	if (self->reg)
		self->reg->owner = NULL;
	Py_DECREF(self->eng);
	PyObject_Free(self);
}

static PyObject *Region_get_addr(kvpy_Region *self, void *c)
{
	return self->reg ? PyLong_FromVoidPtr(self->reg->view.buf) : Py_NewRef(Py_None);
}

static PyObject *Region_get_nbytes(kvpy_Region *self, void *c)
{
	return PyLong_FromSsize_t(self->reg ? self->reg->view.len : 0);
}

static PyObject *Region_get_closed(kvpy_Region *self, void *c)
{
	return PyBool_FromLong(!self->reg);
}

static PyObject *Region_exit(kvpy_Region *self, PyObject *args)
{
	return Region_close(self, NULL);
}

static PyMethodDef Region_methods[] = {
    {"close", (PyCFunction)Region_close, METH_NOARGS,
     "close() -> None\n\nDeregister the region and release its buffer. Raises "
     "kvring.Error EBUSY while a batch using it is in flight (nothing changes). "
     "Idempotent."},
    {"__enter__", kvpy_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)Region_exit, METH_VARARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Region_getset[] = {
    {"addr", (getter)Region_get_addr, NULL, "Start address (None once closed).", NULL},
    {"nbytes", (getter)Region_get_nbytes, NULL, "Length in bytes (0 once closed).", NULL},
    {"closed", (getter)Region_get_closed, NULL, "True once deregistered.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyTypeObject kvpy_RegionType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "kvring.Region",
    .tp_basicsize = sizeof(kvpy_Region),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Registered memory, from Engine.register().",
    .tp_dealloc = (destructor)Region_dealloc,
    .tp_methods = Region_methods,
    .tp_getset = Region_getset,
};
