/* SPDX-License-Identifier: MIT */
/*
 * kvring.Target: a store or cluster of an Engine, and its batch calls.
 */
#include "kvpy.h"

#include <errno.h>
#include <string.h>

/* ------------------------------------------------------------- Target */

static int target_check(kvpy_Target *self)
{
	if (kvpy_engine_check(self->eng))
		return -1;
	if (self->closed) {
		kvpy_raise(EBADF, "the target is closed");
		return -1;
	}
	return 0;
}

static PyObject *target_op(kvpy_Target *self, enum kvr_op op, PyObject *const *args,
			   Py_ssize_t nargs, PyObject *kwnames)
{
	static char *kwlist[] = {"keys", "buffers", "timeout_ms", "callback", NULL};
	PyObject *keys, *bufs = Py_None, *cb = Py_None, *tmo = NULL;
	uint32_t timeout_ms = 0;
	bool data = op == KVR_OP_PUT || op == KVR_OP_GET;

	if (!kwnames && nargs == (data ? 2 : 1)) {
		/* The call of a batch loop, positional only: no tuple, no dict. */
		keys = args[0];
		if (data)
			bufs = args[1];
	} else {
		PyObject *t, *kw;
		int ok;

		if (kvpy_fastcall_args(args, nargs, kwnames, &t, &kw))
			return NULL;
		ok = PyArg_ParseTupleAndKeywords(t, kw, data ? "OO|$OO" : "O|O$OO", kwlist, &keys,
						 &bufs, &tmo, &cb);
		Py_DECREF(t);
		Py_XDECREF(kw);
		if (!ok)
			return NULL;
	}
	if (tmo && kvpy_u32(tmo, "timeout_ms", &timeout_ms))
		return NULL;
	if (target_check(self))
		return NULL;
	if (data && bufs == Py_None) {
		PyErr_SetString(PyExc_TypeError, "put() and get() need a buffer per key");
		return NULL;
	}
	if (cb != Py_None && !PyCallable_Check(cb)) {
		PyErr_SetString(PyExc_TypeError, "callback must be callable");
		return NULL;
	}
	if (!data && bufs != Py_None) {
		PyErr_SetString(PyExc_TypeError, "exists() and remove() take no buffers");
		return NULL;
	}
	return kvpy_batch_submit(self, op, keys, data ? bufs : Py_None, timeout_ms, cb);
}

static PyObject *Target_put(kvpy_Target *s, PyObject *const *a, Py_ssize_t n, PyObject *k)
{
	return target_op(s, KVR_OP_PUT, a, n, k);
}

static PyObject *Target_get(kvpy_Target *s, PyObject *const *a, Py_ssize_t n, PyObject *k)
{
	return target_op(s, KVR_OP_GET, a, n, k);
}

static PyObject *Target_exists(kvpy_Target *s, PyObject *const *a, Py_ssize_t n, PyObject *k)
{
	return target_op(s, KVR_OP_EXISTS, a, n, k);
}

static PyObject *Target_remove(kvpy_Target *s, PyObject *const *a, Py_ssize_t n, PyObject *k)
{
	return target_op(s, KVR_OP_REMOVE, a, n, k);
}

/* Target.aput() etc.: the coroutines of kvring.aio, bound to this target. */
static PyObject *target_async(kvpy_Target *self, const char *name, PyObject *args, PyObject *kw)
{
	PyObject *mod = PyImport_ImportModule("kvring.aio"), *f, *full, *r;

	if (!mod)
		return NULL;
	f = PyObject_GetAttrString(mod, name);
	Py_DECREF(mod);
	if (!f)
		return NULL;
	full = PyTuple_New(PyTuple_GET_SIZE(args) + 1);
	if (!full) {
		Py_DECREF(f);
		return NULL;
	}
	PyTuple_SET_ITEM(full, 0, Py_NewRef((PyObject *)self));
	for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(args); i++)
		PyTuple_SET_ITEM(full, i + 1, Py_NewRef(PyTuple_GET_ITEM(args, i)));
	r = PyObject_Call(f, full, kw);
	Py_DECREF(full);
	Py_DECREF(f);
	return r;
}

static PyObject *Target_aput(kvpy_Target *s, PyObject *a, PyObject *k)
{
	return target_async(s, "put", a, k);
}

static PyObject *Target_aget(kvpy_Target *s, PyObject *a, PyObject *k)
{
	return target_async(s, "get", a, k);
}

static PyObject *Target_aexists(kvpy_Target *s, PyObject *a, PyObject *k)
{
	return target_async(s, "exists", a, k);
}

static PyObject *Target_aremove(kvpy_Target *s, PyObject *a, PyObject *k)
{
	return target_async(s, "remove", a, k);
}

static PyObject *Target_close(kvpy_Target *self, PyObject *unused)
{
	int rc;

	if (self->closed)
		Py_RETURN_NONE;
	if (kvpy_engine_check(self->eng))
		return NULL;
	self->closed = true;
	Py_BEGIN_ALLOW_THREADS rc = kvr_target_close(self->t);
	Py_END_ALLOW_THREADS if (rc && rc != -EBADF) return kvpy_raise(
	    rc, "Target.close(): the final metadata write failed: %s", kvr_strerror(rc));
	Py_RETURN_NONE;
}

static PyObject *Target_stats(kvpy_Target *self, PyObject *unused)
{
	struct kvr_stats s = {.size = sizeof(s)};

	if (target_check(self))
		return NULL;
	kvr_target_stats(self->t, &s);
	return kvpy_stats_dict(&s);
}

static void Target_dealloc(kvpy_Target *self)
{
	if (self->weakrefs)
		PyObject_ClearWeakRefs((PyObject *)self);
	if (!self->closed && self->eng->e && PyThread_get_thread_ident() == self->eng->owner) {
		kvr_target *t = self->t;

		/* It waits for the target's I/O: not with the GIL held. */
		Py_BEGIN_ALLOW_THREADS kvr_target_close(t);
		Py_END_ALLOW_THREADS
	}
	Py_XDECREF(self->uri);
	Py_DECREF(self->eng);
	PyObject_Free(self);
}

static PyObject *Target_get_closed(kvpy_Target *self, void *c)
{
	return PyBool_FromLong(self->closed);
}

static PyObject *Target_get_uri(kvpy_Target *self, void *c)
{
	return Py_NewRef(self->uri);
}

static PyObject *Target_get_engine(kvpy_Target *self, void *c)
{
	return Py_NewRef((PyObject *)self->eng);
}

static PyObject *Target_exit(kvpy_Target *self, PyObject *args)
{
	return Target_close(self, NULL);
}

#define BATCH_DOC                                                                                  \
	" -> Batch\n\nSubmit one batch and return at once; it finishes inside a later "            \
	"Engine.poll() (never inside this call), which sets Batch.results and calls "              \
	"callback(batch). Buffers stay held by the batch until then. Per-key results are bytes "   \
	"(>= 0) or a negative errno and never raise. Raises TypeError (wrong types) or "           \
	"kvring.Error: EINVAL (key/buffer count mismatch, empty key or buffer, read-only or "      \
	"non-contiguous buffer), ENAMETOOLONG (key over MAX_KEY bytes), E2BIG (over MAX_SGE "      \
	"buffers for a key, or more keys than the engine's max_objects), EFAULT (memory outside "  \
	"every registered region), EBADF (target closed), EPERM (another thread)."

static PyMethodDef Target_methods[] = {
    {"put", (PyCFunction)(void (*)(void))Target_put, METH_FASTCALL | METH_KEYWORDS,
     "put(keys, buffers, *, timeout_ms=0, callback=None)" BATCH_DOC
     " A key's buffer may be a sequence of buffers (its SGL); results are bytes stored."},
    {"get", (PyCFunction)(void (*)(void))Target_get, METH_FASTCALL | METH_KEYWORDS,
     "get(keys, buffers, *, timeout_ms=0, callback=None)" BATCH_DOC
     " Buffers must be writable; results are bytes written (-ENOENT a miss, -EMSGSIZE when "
     "the object is larger than the buffer)."},
    {"exists", (PyCFunction)(void (*)(void))Target_exists, METH_FASTCALL | METH_KEYWORDS,
     "exists(keys, *, timeout_ms=0, callback=None)" BATCH_DOC
     " Results are the stored length, or -ENOENT."},
    {"remove", (PyCFunction)(void (*)(void))Target_remove, METH_FASTCALL | METH_KEYWORDS,
     "remove(keys, *, timeout_ms=0, callback=None)" BATCH_DOC " Results are 0, or -ENOENT."},
    {"aput", (PyCFunction)(void (*)(void))Target_aput, METH_VARARGS | METH_KEYWORDS,
     "aput(keys, buffers, *, timeout_ms=0) -> Awaitable[list[int]]\n\nput() awaited on the "
     "running asyncio loop (kvring.aio.put)."},
    {"aget", (PyCFunction)(void (*)(void))Target_aget, METH_VARARGS | METH_KEYWORDS,
     "aget(keys, buffers, *, timeout_ms=0) -> Awaitable[list[int]]\n\nget() awaited on the "
     "running asyncio loop (kvring.aio.get)."},
    {"aexists", (PyCFunction)(void (*)(void))Target_aexists, METH_VARARGS | METH_KEYWORDS,
     "aexists(keys, *, timeout_ms=0) -> Awaitable[list[int]]\n\nexists() awaited."},
    {"aremove", (PyCFunction)(void (*)(void))Target_aremove, METH_VARARGS | METH_KEYWORDS,
     "aremove(keys, *, timeout_ms=0) -> Awaitable[list[int]]\n\nremove() awaited."},
    {"stats", (PyCFunction)Target_stats, METH_NOARGS,
     "stats() -> dict\n\nThe target's counters (struct kvr_stats)."},
    {"close", (PyCFunction)Target_close, METH_NOARGS,
     "close() -> None\n\nStop accepting batches; in-flight ones finish in later polls. "
     "Idempotent. Raises kvring.Error with the errno of the final metadata write (the "
     "target is closed regardless)."},
    {"__enter__", kvpy_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)Target_exit, METH_VARARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Target_getset[] = {
    {"closed", (getter)Target_get_closed, NULL, "True once closed.", NULL},
    {"uri", (getter)Target_get_uri, NULL, "The URI it was opened with.", NULL},
    {"engine", (getter)Target_get_engine, NULL, "Its Engine.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyTypeObject kvpy_TargetType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "kvring.Target",
    .tp_basicsize = sizeof(kvpy_Target),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A store or cluster opened by Engine.open().",
    .tp_dealloc = (destructor)Target_dealloc,
    .tp_weaklistoffset = offsetof(kvpy_Target, weakrefs),
    .tp_methods = Target_methods,
    .tp_getset = Target_getset,
};
