/* SPDX-License-Identifier: MIT */
/*
 * kvring._kvring.Connector: the thread-safe front end LMCache's native
 * connector protocol needs. It owns one engine thread running
 * kvr_engine_run(); any thread submits: a batch is built with the GIL held
 * (keys copied, buffers exported), pushed onto a lock-free stack and the
 * engine woken; the engine thread's wake hook starts it. Completions are
 * pushed onto a second lock-free stack, and the connector's eventfd is
 * written when that stack was empty. drain_completions() resets the eventfd,
 * takes the stack and turns it into Python tuples. No other thread, no
 * polling loop, no copy of a payload.
 *
 * Memory: the first time a buffer lies outside every registered region,
 * the mapping holding it (/proc/self/maps) is registered whole on the
 * engine thread, once, with KVR_MEM_NO_PIN (the memory is not ours to pin);
 * LMCache's buffers all lie in one L1 pool, so that is one registration for
 * the connector's life.
 */
#include "kvpy.h"

#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define MAX_RANGES 64 /* mappings registered on demand */
#define MAX_WANTS  4  /* new mappings one batch may bring */

enum { C_STARTING, C_RUNNING, C_CLOSING, C_CLOSED };

struct range {
	uintptr_t lo, hi;
};

struct rec {
	struct rec *next;	   /* submission or completion stack */
	struct rec *inext, *iprev; /* in flight (engine thread) */
	struct kvpy_conn *c;
	uint64_t id;
	enum kvr_op op;
	uint32_t nwant;
	struct range want[MAX_WANTS]; /* mappings to register before starting */
	int err;		      /* whole-batch failure (negative errno), or 0 */
	char msg[200];
	struct kvpy_desc d;
};

typedef struct kvpy_conn {
	PyObject_HEAD pthread_t th;
	bool joined;
	kvr_engine *e; /* engine thread's */
	kvr_target *t;
	struct kvpy_spec spec;
	struct kvr_engine_opts eopts;
	int efd;
	_Atomic(struct rec *) subq;
	_Atomic(struct rec *) doneq;
	atomic_bool wake_due;
	atomic_int state;
	atomic_uint_fast64_t next_id;
	struct rec *inflight; /* engine thread */
	struct rec *dropped;  /* completed while closing (engine thread) */
	int open_rc;
	char open_msg[256];
	sem_t ready;
	sem_t closer_done;		 /* close() has made its last call into the engine */
	struct range ranges[MAX_RANGES]; /* registered; appended by the engine thread */
	atomic_uint nranges;
	bool inited; /* efd and the semaphores exist */
} kvpy_Connector;

static const char *const op_names[] = {"set", "get", "exists", "delete"};

/* ------------------------------------------------------ engine thread */

static void push(_Atomic(struct rec *) *stack, struct rec *r, struct rec **old_out)
{
	struct rec *old = atomic_load_explicit(stack, memory_order_relaxed);

	do
		r->next = old;
	while (!atomic_compare_exchange_weak_explicit(stack, &old, r, memory_order_release,
						      memory_order_relaxed));
	if (old_out)
		*old_out = old;
}

static struct rec *take_fifo(_Atomic(struct rec *) *stack)
{
	/* seq_cst: pairs with the submitter's push then wake_due exchange. */
	struct rec *r = atomic_exchange(stack, NULL), *fifo = NULL;

	while (r) {
		struct rec *n = r->next;

		r->next = fifo;
		fifo = r;
		r = n;
	}
	return fifo;
}

static void complete(kvpy_Connector *c, struct rec *r)
{
	struct rec *old;
	uint64_t one = 1;

	if (atomic_load(&c->state) >= C_CLOSING) {
		r->next = c->dropped;
		c->dropped = r;
		return;
	}
	push(&c->doneq, r, &old);
	/* The reader resets the eventfd before taking the stack, so a push
	 * onto a non-empty stack is always seen without another write. */
	if (!old && write(c->efd, &one, sizeof(one)) < 0) {
		/* counter saturated: readable already */
	}
}

static void rec_cb(void *ctx, size_t n, const int64_t *res)
{
	struct rec *r = ctx;
	kvpy_Connector *c = r->c;

	if (r->iprev)
		r->iprev->inext = r->inext;
	else
		c->inflight = r->inext;
	if (r->inext)
		r->inext->iprev = r->iprev;
	memcpy(r->d.results, res, n * sizeof(*res));
	complete(c, r);
}

static bool range_overlaps(kvpy_Connector *c, uintptr_t lo, uintptr_t hi)
{
	unsigned n = atomic_load_explicit(&c->nranges, memory_order_acquire);

	for (unsigned i = 0; i < n; i++)
		if (lo < c->ranges[i].hi && c->ranges[i].lo < hi)
			return true;
	return false;
}

static void start(kvpy_Connector *c, struct rec *r)
{
	int rc;

	for (uint32_t i = 0; i < r->nwant; i++) {
		struct range *w = &r->want[i];
		unsigned n = atomic_load(&c->nranges);
		kvr_mr *mr;

		if (range_overlaps(c, w->lo, w->hi))
			continue; /* another batch brought it first */
		if (n == MAX_RANGES) {
			r->err = -ENOSPC;
			snprintf(
			    r->msg, sizeof(r->msg),
			    "buffers lie in more than %d separate mappings; give the connector "
			    "one pool",
			    MAX_RANGES);
			complete(c, r);
			return;
		}
		/* KVR_MEM_NO_PIN: the memory is LMCache's, not ours; a fixed
		 * buffer would keep pointing at today's pages if a part of the
		 * mapping were ever unmapped or remapped. */
		rc = kvr_mem_register(c->e, (void *)w->lo, w->hi - w->lo, KVR_MEM_NO_PIN, &mr);
		if (rc) {
			r->err = rc;
			snprintf(r->msg, sizeof(r->msg),
				 "registering the mapping %#lx-%#lx: %s%s%s", (unsigned long)w->lo,
				 (unsigned long)w->hi, kvr_strerror(rc),
				 *kvr_engine_errmsg(c->e) ? ": " : "", kvr_engine_errmsg(c->e));
			complete(c, r);
			return;
		}
		c->ranges[n] = *w;
		atomic_store_explicit(&c->nranges, n + 1, memory_order_release);
	}
	rc = kvr_submit(c->t, r->op, r->d.objs, r->d.n, 0, rec_cb, r);
	if (rc) {
		r->err = rc;
		snprintf(r->msg, sizeof(r->msg), "%s of %zu keys refused: %s", op_names[r->op],
			 r->d.n, kvpy_hint(rc));
		complete(c, r);
		return;
	}
	r->iprev = NULL;
	r->inext = c->inflight;
	if (c->inflight)
		c->inflight->iprev = r;
	c->inflight = r;
}

static void on_wake(void *ctx)
{
	kvpy_Connector *c = ctx;

	if (atomic_load(&c->state) >= C_CLOSING) {
		kvr_engine_stop(c->e);
		return;
	}
	atomic_store(&c->wake_due, false);
	for (struct rec *r = take_fifo(&c->subq), *n; r; r = n) {
		n = r->next;
		start(c, r);
	}
}

static void *engine_main(void *arg)
{
	kvpy_Connector *c = arg;
	int rc = kvr_engine_create(&c->eopts, &c->e);

	if (rc) {
		snprintf(c->open_msg, sizeof(c->open_msg), "kvr_engine_create: %s",
			 kvr_strerror(rc));
	} else if ((rc = kvpy_spec_open(c->e, &c->spec, &c->t))) {
		snprintf(c->open_msg, sizeof(c->open_msg), "open('%s'): %s", c->spec.uri,
			 kvpy_open_hint(rc));
	} else {
		kvr_engine_set_wake_cb(c->e, on_wake, c);
	}
	c->open_rc = rc;
	if (rc) {
		kvr_engine_destroy(c->e);
		c->e = NULL;
		sem_post(&c->ready);
		return NULL;
	}
	sem_post(&c->ready);
	rc = kvr_engine_run(c->e);
	/* The engine stays until close() is done with kvr_engine_wake(). */
	sem_wait(&c->closer_done);
	/* Closing: batches still in flight finish inside destroy and land on
	 * c->dropped; close() frees them once this thread is joined. */
	kvr_target_close(c->t);
	kvr_engine_destroy(c->e);
	return NULL;
}

/* ------------------------------------------------------ Python side */

static const char *const engine_keys[] = {"ring_entries",      "max_objects", "fixed_buffers",
					  "stage_bytes",       "busy_poll",   "no_defer_taskrun",
					  "engine_timeout_ms", NULL};

static int Connector_init(kvpy_Connector *c, PyObject *args, PyObject *kw)
{
	const char *uri;
	PyObject *ekw = NULL;
	int rc;

	if (!PyArg_ParseTuple(args, "s:Connector", &uri))
		return -1;
	if (atomic_load(&c->state) != C_STARTING || c->inited) {
		PyErr_SetString(PyExc_RuntimeError, "Connector already initialised");
		return -1;
	}
	ekw = PyDict_New();
	if (!ekw)
		return -1;
	for (const char *const *k = engine_keys; kw && *k; k++) {
		PyObject *v = PyDict_GetItemString(kw, *k);

		if (v && PyDict_SetItemString(
			     ekw, strcmp(*k, "engine_timeout_ms") ? *k : "timeout_ms", v)) {
			Py_DECREF(ekw);
			return -1;
		}
	}
	rc = kvpy_engine_opts(ekw, &c->eopts);
	Py_DECREF(ekw);
	if (rc || kvpy_spec_parse(uri, kw, engine_keys, &c->spec))
		return -1;
	c->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (c->efd < 0) {
		kvpy_raise(errno, "eventfd");
		return -1;
	}
	sem_init(&c->ready, 0, 0);
	sem_init(&c->closer_done, 0, 0);
	c->inited = true;
	rc = pthread_create(&c->th, NULL, engine_main, c);
	if (rc) {
		kvpy_raise(rc, "starting the engine thread");
		return -1;
	}
	Py_BEGIN_ALLOW_THREADS sem_wait(&c->ready);
	Py_END_ALLOW_THREADS if (c->open_rc)
	{
		pthread_join(c->th, NULL);
		c->joined = true;
		atomic_store(&c->state, C_CLOSED);
		kvpy_raise(c->open_rc, "%s", c->open_msg);
		return -1;
	}
	atomic_store(&c->state, C_RUNNING);
	return 0;
}

/* Is [a, a+len) inside one registered range? */
static bool covered(kvpy_Connector *c, uintptr_t a, size_t len)
{
	unsigned n = atomic_load_explicit(&c->nranges, memory_order_acquire);

	for (unsigned i = 0; i < n; i++)
		if (a >= c->ranges[i].lo && a + len <= c->ranges[i].hi)
			return true;
	return false;
}

/* The mapping (or run of adjacent mappings) holding [a, a+len), to register
 * whole. Refuses the heap and stacks: they grow and shrink under us. */
static int plan(kvpy_Connector *c, struct rec *r, uintptr_t a, size_t len)
{
	uintptr_t lo, hi, lo2, hi2;
	char name[256];
	int rc;

	if (covered(c, a, len)) /* the engine thread registered it meanwhile */
		return 0;
	for (uint32_t i = 0; i < r->nwant; i++)
		if (a >= r->want[i].lo && a + len <= r->want[i].hi)
			return 0;
	rc = kvpy_find_mapping(a, &lo, &hi, name, sizeof(name));
	while (!rc && hi < a + len) { /* an SGE across adjacent mappings */
		if (kvpy_find_mapping(hi, &lo2, &hi2, name, sizeof(name)) || lo2 != hi)
			rc = -EFAULT;
		else
			hi = hi2;
	}
	if (rc) {
		kvpy_raise(EFAULT, "a buffer at %#lx (%zu bytes) is not mapped memory",
			   (unsigned long)a, len);
		return -1;
	}
	if (!strcmp(name, "[heap]") || !strncmp(name, "[stack", 6)) {
		kvpy_raise(EFAULT,
			   "a buffer at %#lx lies in the process %s; the connector registers whole "
			   "mappings, so give it memory from one mmap'd pool (LMCache's L1 buffer)",
			   (unsigned long)a, name);
		return -1;
	}
	/* Leave out what is registered already (a mapping that grew). */
	unsigned n = atomic_load_explicit(&c->nranges, memory_order_acquire);

	for (unsigned i = 0; i < n; i++) {
		const struct range *g = &c->ranges[i];

		if (g->hi <= a && g->hi > lo)
			lo = g->hi;
		if (g->lo >= a + len && g->lo < hi)
			hi = g->lo;
		if (g->lo < a + len && a < g->hi && !(g->lo <= a && a + len <= g->hi)) {
			kvpy_raise(EFAULT,
				   "a buffer at %#lx straddles the end of a registered region",
				   (unsigned long)a);
			return -1;
		}
	}
	if (r->nwant == MAX_WANTS) {
		kvpy_raise(EFAULT, "one batch's buffers lie in more than %d new mappings",
			   MAX_WANTS);
		return -1;
	}
	r->want[r->nwant++] = (struct range){lo, hi};
	return 1;
}

static PyObject *submit(kvpy_Connector *c, enum kvr_op op, PyObject *keys, PyObject *bufs)
{
	struct kvpy_desc d;
	struct rec *r;
	uint64_t id;

	if (atomic_load(&c->state) != C_RUNNING)
		return kvpy_raise(EBADF, "the connector is closed");
	r = kvpy_desc_build(sizeof(*r), keys, bufs, op == KVR_OP_GET, NULL, &d);
	if (!r)
		return NULL;
	r->d = d;
	/* Building ran Python code (sequences, buffer exports), which may have
	 * closed the connector: look again. From here to the push nothing runs
	 * Python code of the caller's. */
	if (atomic_load(&c->state) != C_RUNNING) {
		kvpy_raise(EBADF, "the connector is closed");
		goto fail;
	}
	r->c = c;
	r->op = op;
	for (size_t i = 0; i < d.nviews; i++) {
		uintptr_t a = (uintptr_t)d.sges[i].addr;
		int p;

		if (covered(c, a, d.sges[i].len))
			continue;
		p = plan(c, r, a, d.sges[i].len);
		if (p < 0)
			goto fail;
	}
	id = atomic_fetch_add(&c->next_id, 1) + 1;
	r->id = id;
	/* Pushed and woken with the GIL held, so that close() (which takes
	 * the GIL to change the state) cannot come between. */
	push(&c->subq, r, NULL);
	if (!atomic_exchange(&c->wake_due, true))
		kvr_engine_wake(c->e);
	return PyLong_FromUnsignedLongLong(id);
fail:
	kvpy_desc_release(&r->d);
	PyMem_RawFree(r);
	return NULL;
}

static PyObject *Connector_get(kvpy_Connector *c, PyObject *args)
{
	PyObject *k, *b;

	if (!PyArg_ParseTuple(args, "OO:submit_batch_get", &k, &b))
		return NULL;
	return submit(c, KVR_OP_GET, k, b);
}

static PyObject *Connector_set(kvpy_Connector *c, PyObject *args)
{
	PyObject *k, *b;

	if (!PyArg_ParseTuple(args, "OO:submit_batch_set", &k, &b))
		return NULL;
	return submit(c, KVR_OP_PUT, k, b);
}

static PyObject *Connector_exists(kvpy_Connector *c, PyObject *k)
{
	return submit(c, KVR_OP_EXISTS, k, Py_None);
}

static PyObject *Connector_delete(kvpy_Connector *c, PyObject *k)
{
	return submit(c, KVR_OP_REMOVE, k, Py_None);
}

/* (id, ok, error, per-key results): ok is False only for a batch that
 * failed as a whole; results are kvring's (bytes or a negative errno). */
static PyObject *completion_raw(struct rec *r)
{
	PyObject *res = NULL, *t;

	if (!r->err) {
		res = PyList_New((Py_ssize_t)r->d.n);
		for (size_t i = 0; res && i < r->d.n; i++) {
			PyObject *v = PyLong_FromLongLong(r->d.results[i]);

			if (!v) {
				Py_CLEAR(res);
				return NULL;
			}
			PyList_SET_ITEM(res, (Py_ssize_t)i, v);
		}
		if (!res)
			return NULL;
	}
	t = Py_BuildValue("(KOsO)", (unsigned long long)r->id, r->err ? Py_False : Py_True,
			  r->err ? r->msg : NULL, res ? res : Py_None);
	Py_XDECREF(res);
	return t;
}

/* One completion tuple: (id, ok, error, per-key bools or None). */
static PyObject *completion(struct rec *r)
{
	size_t n = r->d.n, failed = 0, missed = 0;
	int64_t first_err = 0;
	PyObject *flags = NULL, *err = Py_None;
	bool ok;

	for (size_t i = 0; i < n; i++) {
		int64_t v = r->d.results[i];
		bool miss = v == -ENOENT;

		if (v < 0 && !miss && !first_err)
			first_err = v;
		failed += v < 0 && !miss;
		missed += miss;
	}
	if (r->err) {
		ok = false;
		err = PyUnicode_DecodeUTF8(r->msg, (Py_ssize_t)strlen(r->msg), "replace");
	} else if (r->op == KVR_OP_PUT) {
		/* A set has no per-key answer: it is ok when every key is stored. */
		ok = !failed && !missed;
		if (!ok)
			err = PyUnicode_FromFormat(
			    "%zu of %zu keys not stored: %s", failed + missed, n,
			    kvr_strerror((int)(first_err ? first_err : -ENOENT)));
	} else if (failed == n) {
		/* Nothing answered at all (every key a transport error, no miss). */
		ok = false;
		err = PyUnicode_FromFormat("%s of %zu keys failed: %s", op_names[r->op], n,
					   kvr_strerror((int)first_err));
	} else {
		ok = true;
		flags = PyList_New((Py_ssize_t)n);
		if (!flags)
			return NULL;
		for (size_t i = 0; i < n; i++) {
			int64_t v = r->d.results[i];

			PyList_SET_ITEM(flags, (Py_ssize_t)i,
					Py_NewRef(r->op == KVR_OP_REMOVE
						      ? (v == 0 ? Py_True : Py_False)
						      : (v >= 0 ? Py_True : Py_False)));
		}
	}
	if (!err)
		return NULL;
	PyObject *t = Py_BuildValue("(KOOO)", (unsigned long long)r->id, ok ? Py_True : Py_False,
				    err, flags ? flags : Py_None);

	if (err != Py_None)
		Py_DECREF(err);
	Py_XDECREF(flags);
	return t;
}

static void rec_free_list(struct rec *r)
{
	while (r) {
		struct rec *n = r->next;

		kvpy_desc_release(&r->d);
		PyMem_RawFree(r);
		r = n;
	}
}

static PyObject *drain(kvpy_Connector *c, PyObject *(*make)(struct rec *))
{
	uint64_t cnt;
	PyObject *out;
	struct rec *r;

	if (atomic_load(&c->state) != C_RUNNING)
		return PyList_New(0);
	if (read(c->efd, &cnt, sizeof(cnt)) < 0) {
		/* EAGAIN: nothing was signalled */
	}
	r = take_fifo(&c->doneq);
	out = PyList_New(0);
	while (r) {
		struct rec *n = r->next;
		PyObject *t = out ? make(r) : NULL;

		if (!t || PyList_Append(out, t))
			Py_CLEAR(out);
		Py_XDECREF(t);
		kvpy_desc_release(&r->d);
		PyMem_RawFree(r);
		r = n;
	}
	return out;
}

static PyObject *Connector_drain(kvpy_Connector *c, PyObject *unused)
{
	return drain(c, completion);
}

static PyObject *Connector_drain_results(kvpy_Connector *c, PyObject *unused)
{
	return drain(c, completion_raw);
}

static void conn_close(kvpy_Connector *c)
{
	int st = C_RUNNING;

	if (!atomic_compare_exchange_strong(&c->state, &st, C_CLOSING)) {
		/* Another thread is closing it: wait until it is done. */
		if (st == C_CLOSING) {
			Py_BEGIN_ALLOW_THREADS while (atomic_load(&c->state) != C_CLOSED)
			    usleep(1000);
			Py_END_ALLOW_THREADS
		}
		return;
	}
	/* The wake hook sees the state and stops the loop on its own thread;
	 * the engine thread destroys the engine only after closer_done, so this
	 * wake never meets a freed engine. */
	kvr_engine_wake(c->e);
	sem_post(&c->closer_done);
	Py_BEGIN_ALLOW_THREADS pthread_join(c->th, NULL);
	Py_END_ALLOW_THREADS c->joined = true;
	/* No completion is emitted for what was still pending: free it all. */
	rec_free_list(take_fifo(&c->subq));
	rec_free_list(c->dropped);
	c->dropped = NULL;
	rec_free_list(take_fifo(&c->doneq));
	c->e = NULL;
	c->t = NULL;
	atomic_store(&c->state, C_CLOSED);
}

static PyObject *Connector_close(kvpy_Connector *c, PyObject *unused)
{
	conn_close(c);
	Py_RETURN_NONE;
}

static PyObject *Connector_event_fd(kvpy_Connector *c, PyObject *unused)
{
	if (!c->inited)
		return kvpy_raise(EBADF, "the connector was not initialised");
	return PyLong_FromLong(c->efd);
}

static void Connector_dealloc(kvpy_Connector *c)
{
	conn_close(c);
	kvpy_spec_free(&c->spec);
	if (c->inited) {
		close(c->efd);
		sem_destroy(&c->ready);
		sem_destroy(&c->closer_done);
	}
	Py_TYPE(c)->tp_free((PyObject *)c);
}

static PyObject *Connector_get_closed(kvpy_Connector *c, void *x)
{
	return PyBool_FromLong(atomic_load(&c->state) != C_RUNNING);
}

static PyObject *Connector_get_regions(kvpy_Connector *c, void *x)
{
	unsigned n = atomic_load(&c->nranges);
	PyObject *l = PyList_New(n);

	for (unsigned i = 0; l && i < n; i++) {
		PyObject *t = Py_BuildValue("(kk)", (unsigned long)c->ranges[i].lo,
					    (unsigned long)c->ranges[i].hi);

		if (!t) {
			Py_CLEAR(l);
			break;
		}
		PyList_SET_ITEM(l, i, t);
	}
	return l;
}

static PyMethodDef Connector_methods[] = {
    {"event_fd", (PyCFunction)Connector_event_fd, METH_NOARGS,
     "event_fd() -> int\n\nAn eventfd readable once completions are waiting; "
     "drain_completions() resets it. Stays open until the connector is collected."},
    {"submit_batch_get", (PyCFunction)Connector_get, METH_VARARGS,
     "submit_batch_get(keys, buffers) -> int\n\nRead each key into its buffer (writable). "
     "Returns the batch id at once. Any thread."},
    {"submit_batch_set", (PyCFunction)Connector_set, METH_VARARGS,
     "submit_batch_set(keys, buffers) -> int\n\nStore each buffer under its key. Any thread."},
    {"submit_batch_exists", (PyCFunction)Connector_exists, METH_O,
     "submit_batch_exists(keys) -> int\n\nAsk for each key. Any thread."},
    {"submit_batch_delete", (PyCFunction)Connector_delete, METH_O,
     "submit_batch_delete(keys) -> int\n\nRemove each key. Any thread."},
    {"drain_completions", (PyCFunction)Connector_drain, METH_NOARGS,
     "drain_completions() -> list[tuple[int, bool, str | None, list[bool] | None]]\n\n"
     "Reset the eventfd and return every completion since the last call, oldest first."},
    {"drain_results", (PyCFunction)Connector_drain_results, METH_NOARGS,
     "drain_results() -> list[tuple[int, bool, str | None, list[int] | None]]\n\n"
     "As drain_completions(), with kvring's own per-key results (bytes, or a negative "
     "errno) for every op; ok is False only for a batch that failed as a whole (results "
     "None). Use one of the two drains per connector."},
    {"close", (PyCFunction)Connector_close, METH_NOARGS,
     "close() -> None\n\nStop the engine thread and join it; pending batches emit no "
     "completion and their buffers are released. Idempotent."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Connector_getset[] = {
    {"closed", (getter)Connector_get_closed, NULL, "True once closed.", NULL},
    {"regions", (getter)Connector_get_regions, NULL,
     "The (start, end) address ranges registered on demand so far.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyTypeObject kvpy_ConnectorType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "kvring.Connector",
    .tp_basicsize = sizeof(kvpy_Connector),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "Connector(uri, **opts)\n\nThe thread-safe batch front end with its own engine "
	      "thread; see kvring.lmcache.KvringConnector.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Connector_init,
    .tp_dealloc = (destructor)Connector_dealloc,
    .tp_methods = Connector_methods,
    .tp_getset = Connector_getset,
};
