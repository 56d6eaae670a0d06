/* SPDX-License-Identifier: MIT */
/*
 * kvring.Batch: one submitted batch of an Engine's target. The C callback
 * runs inside kvr_engine_poll() with the GIL released, so it only records
 * the results; the batch is finished (buffers released, results list made,
 * Python callback called) once the poll returned and the GIL is back.
 */
#include "kvpy.h"

#include <errno.h>
#include <string.h>
#include <time.h>

enum { B_PENDING, B_COMPLETED, B_FINISHED };

struct kvpy_batch {
	PyObject_HEAD kvpy_Engine *eng; /* strong */
	struct kvpy_batch *next, *prev; /* eng->pending, while pending */
	struct kvpy_batch *done_next;	/* eng->done, once completed */
	void *blk;			/* kvpy_desc_build()'s block */
	struct kvpy_desc d;
	PyObject *callback;
	PyObject *results; /* list of int, once finished */
	enum kvr_op op;
	int state;
};
typedef struct kvpy_batch kvpy_Batch;

static const char *const op_names[] = {"put", "get", "exists", "remove"};

/* Engine thread, inside kvr_engine_poll(), GIL not held: record only. */
static void batch_cb(void *ctx, size_t n, const int64_t *res)
{
	kvpy_Batch *b = ctx;

	memcpy(b->d.results, res, n * sizeof(*res));
	b->state = B_COMPLETED;
	b->done_next = b->eng->done;
	b->eng->done = b;
}

PyObject *kvpy_batch_submit(kvpy_Target *tgt, enum kvr_op op, PyObject *keys, PyObject *bufs,
			    uint32_t timeout_ms, PyObject *cb)
{
	kvpy_Engine *eng = tgt->eng;
	kvpy_Batch *b;
	void *blk;
	struct kvpy_desc d;
	kvr_target *t;
	int rc;

	blk = kvpy_desc_build(0, keys, bufs, op == KVR_OP_GET, &eng->spare, &d);
	if (!blk)
		return NULL;
	/* Building ran Python code (sequences, buffer exports), which may
	 * have closed the target or the engine: look again. */
	if (!eng->e || tgt->closed) {
		kvpy_desc_release(&d);
		kvpy_blk_put(&eng->spare, blk, d.blk_len);
		return kvpy_raise(EBADF, "the %s is closed", eng->e ? "target" : "engine");
	}
	t = tgt->t;
	b = PyObject_GC_New(kvpy_Batch, &kvpy_BatchType);
	if (!b) {
		kvpy_desc_release(&d);
		kvpy_blk_put(&eng->spare, blk, d.blk_len);
		return NULL;
	}
	Py_INCREF(eng);
	b->eng = eng;
	b->next = b->prev = b->done_next = NULL;
	b->blk = blk;
	b->d = d;
	b->callback = cb == Py_None ? NULL : Py_NewRef(cb);
	b->results = NULL;
	b->op = op;
	b->state = B_PENDING;
	PyObject_GC_Track(b);
	Py_BEGIN_ALLOW_THREADS rc = kvr_submit(t, op, d.objs, d.n, timeout_ms, batch_cb, b);
	Py_END_ALLOW_THREADS if (rc)
	{
		kvpy_desc_release(&b->d);
		b->state = B_FINISHED;
		Py_DECREF(b);
		return kvpy_raise(rc, "%s of %zu keys: %s", op_names[op], d.n,
				  rc == -EINVAL && op == KVR_OP_GET
				      ? "two buffers of the batch overlap (a get writes into each)"
				      : kvpy_hint(rc));
	}
	/* The pending list holds a reference until the batch is finished. */
	Py_INCREF(b);
	b->next = eng->pending;
	if (eng->pending)
		eng->pending->prev = b;
	eng->pending = b;
	return (PyObject *)b;
}

static void batch_finish(kvpy_Batch *b)
{
	kvpy_Engine *eng = b->eng;
	PyObject *cb;

	if (b->prev)
		b->prev->next = b->next;
	else
		eng->pending = b->next;
	if (b->next)
		b->next->prev = b->prev;
	b->next = b->prev = NULL;
	kvpy_desc_release(&b->d);
	b->results = PyList_New((Py_ssize_t)b->d.n);
	PyObject *prev = NULL;

	for (size_t i = 0; b->results && i < b->d.n; i++) {
		/* A batch's results are mostly one value (the object size):
		 * share its int object instead of making one per key. */
		PyObject *v = prev && b->d.results[i] == b->d.results[i - 1]
				  ? Py_NewRef(prev)
				  : PyLong_FromLongLong(b->d.results[i]);

		if (!v) {
			Py_CLEAR(b->results);
			break;
		}
		PyList_SET_ITEM(b->results, (Py_ssize_t)i, v);
		prev = v;
	}
	if (!b->results)
		PyErr_WriteUnraisable((PyObject *)b);
	b->state = B_FINISHED;
	cb = b->callback;
	b->callback = NULL;
	if (cb) {
		PyObject *r = PyObject_CallOneArg(cb, (PyObject *)b);

		if (!r)
			PyErr_WriteUnraisable(cb);
		Py_XDECREF(r);
		Py_DECREF(cb);
	}
	Py_DECREF(b); /* the pending list's reference */
}

void kvpy_batches_finish(kvpy_Engine *eng)
{
	/* Callbacks may poll again: take the list before walking it. */
	while (eng->done) {
		kvpy_Batch *list = eng->done, *fifo = NULL;

		eng->done = NULL;
		while (list) {
			kvpy_Batch *n = list->done_next;

			list->done_next = fifo;
			fifo = list;
			list = n;
		}
		while (fifo) {
			kvpy_Batch *n = fifo->done_next;

			fifo->done_next = NULL;
			batch_finish(fifo);
			fifo = n;
		}
	}
}

static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int kvpy_engine_poll(kvpy_Engine *eng, int timeout_ms)
{
	int64_t end = timeout_ms > 0 ? mono_ms() + timeout_ms : 0;
	int total = 0;

	if (eng->polling) {
		kvpy_raise(EBUSY, "poll() from inside a poll");
		return -1;
	}
	for (;;) {
		/* Long waits go in slices so that Ctrl-C gets through. */
		int slice = timeout_ms;
		int rc;

		if (timeout_ms < 0 || timeout_ms > 100)
			slice = 100;
		if (timeout_ms > 100) {
			int64_t left = end - mono_ms();

			slice = left <= 0 ? 0 : left < 100 ? (int)left : 100;
		}
		eng->polling = true;
		Py_BEGIN_ALLOW_THREADS rc = kvr_engine_poll(eng->e, slice);
		Py_END_ALLOW_THREADS eng->polling = false;
		kvpy_batches_finish(eng);
		if (rc < 0) {
			kvpy_raise(rc, "kvr_engine_poll: %s", kvr_strerror(rc));
			return -1;
		}
		total += rc;
		if (total || timeout_ms == 0 || !eng->e)
			return total;
		if (timeout_ms > 0 && mono_ms() >= end)
			return 0;
		if (PyErr_CheckSignals())
			return -1;
	}
}

/* ------------------------------------------------------------- methods */

int kvpy_batches_traverse(kvpy_Engine *eng, visitproc visit, void *arg)
{
	for (kvpy_Batch *b = eng->pending; b; b = b->next)
		Py_VISIT((PyObject *)b);
	return 0;
}

static int Batch_traverse(kvpy_Batch *b, visitproc visit, void *arg)
{
	Py_VISIT(b->eng);
	Py_VISIT(b->callback);
	Py_VISIT(b->results);
	return 0;
}

/* The engine reference stays: a pending batch is the engine's callback
 * context; the engine's own tp_clear breaks a cycle by finishing it. */
static int Batch_clear(kvpy_Batch *b)
{
	if (b->state == B_FINISHED)
		Py_CLEAR(b->callback);
	return 0;
}

static void Batch_dealloc(kvpy_Batch *b)
{
	/* Never pending here: the pending list holds a reference. */
	PyObject_GC_UnTrack(b);
	kvpy_desc_release(&b->d);
	kvpy_blk_put(&b->eng->spare, b->blk, b->d.blk_len);
	Py_XDECREF(b->callback);
	Py_XDECREF(b->results);
	Py_DECREF(b->eng);
	PyObject_GC_Del(b);
}

static PyObject *Batch_wait(kvpy_Batch *b, PyObject *const *args, Py_ssize_t nargs,
			    PyObject *kwnames)
{
	static char *kwlist[] = {"timeout_ms", NULL};
	int timeout_ms = -1;
	int64_t end;

	if (nargs || kwnames) {
		PyObject *t, *kw;
		int ok;

		if (kvpy_fastcall_args(args, nargs, kwnames, &t, &kw))
			return NULL;
		ok = PyArg_ParseTupleAndKeywords(t, kw, "|i:wait", kwlist, &timeout_ms);
		Py_DECREF(t);
		Py_XDECREF(kw);
		if (!ok)
			return NULL;
	}
	end = mono_ms() + (timeout_ms > 0 ? timeout_ms : 0);
	while (b->state != B_FINISHED) {
		int left = -1;

		if (timeout_ms >= 0) {
			int64_t l = end - mono_ms();

			if (l <= 0 && timeout_ms > 0)
				break;
			left = (int)(l < 0 ? 0 : l);
		}
		if (kvpy_engine_check(b->eng) || kvpy_engine_poll(b->eng, left) < 0)
			return NULL;
		if (timeout_ms == 0)
			break;
	}
	if (b->state != B_FINISHED)
		return kvpy_raise(ETIMEDOUT, "the batch has not finished after %d ms", timeout_ms);
	if (!b->results)
		return PyErr_NoMemory();
	return Py_NewRef(b->results);
}

static PyObject *Batch_get_done(kvpy_Batch *b, void *c)
{
	return PyBool_FromLong(b->state == B_FINISHED);
}

static PyObject *Batch_get_results(kvpy_Batch *b, void *c)
{
	return Py_NewRef(b->state == B_FINISHED && b->results ? b->results : Py_None);
}

static PyObject *Batch_get_op(kvpy_Batch *b, void *c)
{
	return PyUnicode_FromString(op_names[b->op]);
}

static Py_ssize_t Batch_len(kvpy_Batch *b)
{
	return (Py_ssize_t)b->d.n;
}

static PyObject *Batch_repr(kvpy_Batch *b)
{
	return PyUnicode_FromFormat("<kvring.Batch %s of %zu keys, %s>", op_names[b->op], b->d.n,
				    b->state == B_FINISHED ? "done" : "pending");
}

static PyMethodDef Batch_methods[] = {
    {"wait", (PyCFunction)(void (*)(void))Batch_wait, METH_FASTCALL | METH_KEYWORDS,
     "wait(timeout_ms=-1) -> list[int]\n\nPoll the engine until this batch finished and "
     "return its results (other batches finish on the way). Engine thread only. Raises "
     "kvring.Error ETIMEDOUT when it has not finished within timeout_ms (the batch goes "
     "on; its own deadline ends it), or what Engine.poll() raises."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Batch_getset[] = {
    {"done", (getter)Batch_get_done, NULL, "True once finished (results set).", NULL},
    {"results", (getter)Batch_get_results, NULL,
     "Per key, in order: bytes (>= 0) or a negative errno (-errno.ENOENT a miss); None "
     "until finished.",
     NULL},
    {"op", (getter)Batch_get_op, NULL, "'put', 'get', 'exists' or 'remove'.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PySequenceMethods Batch_seq = {.sq_length = (lenfunc)Batch_len};

PyTypeObject kvpy_BatchType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "kvring.Batch",
    .tp_basicsize = sizeof(kvpy_Batch),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_traverse = (traverseproc)Batch_traverse,
    .tp_clear = (inquiry)Batch_clear,
    .tp_doc = "A submitted batch (Target.put/get/exists/remove). len() is its key count.",
    .tp_dealloc = (destructor)Batch_dealloc,
    .tp_repr = (reprfunc)Batch_repr,
    .tp_as_sequence = &Batch_seq,
    .tp_methods = Batch_methods,
    .tp_getset = Batch_getset,
};
