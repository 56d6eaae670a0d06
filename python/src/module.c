/* SPDX-License-Identifier: MIT */
/*
 * kvring._kvring: module setup, kvring.Error, option parsing and the batch
 * builder shared by Engine targets and the LMCache connector.
 */
#include "kvpy.h"

#include <errno.h>
#include <stdarg.h>
#include <string.h>

PyObject *kvpy_Error;

PyObject *kvpy_raise(int err, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	PyObject *exc;

	if (err < 0)
		err = -err;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	/* A message cut mid-character by the buffer still decodes. */
	PyObject *text = PyUnicode_DecodeUTF8(msg, (Py_ssize_t)strlen(msg), "replace");

	if (!text)
		return NULL;
	exc = PyObject_CallFunction(kvpy_Error, "iO", err, text);
	Py_DECREF(text);
	if (exc) {
		PyErr_SetObject(kvpy_Error, exc);
		Py_DECREF(exc);
	}
	return NULL;
}

const char *kvpy_hint(int err)
{
	switch (err < 0 ? -err : err) {
	case EFAULT:
		return "a buffer is not inside one registered region (Engine.register() it first)";
	case EINVAL:
		return "invalid argument";
	case E2BIG:
		return "too many objects in the batch or SGEs in an object";
	case ENAMETOOLONG:
		return "a key is longer than KVR_MAX_KEY bytes";
	case EBADF:
		return "the target is closed";
	case ESHUTDOWN:
		return "the engine is shutting down";
	case ENOMEM:
		return "out of memory";
	default:
		return kvr_strerror(err < 0 ? err : -err);
	}
}

const char *kvpy_open_hint(int err)
{
	switch (err < 0 ? -err : err) {
	case EUCLEAN:
		return "the file holds no valid kvring store (or one of an unknown version)";
	case EBUSY:
		return "another process has the store open";
	case EHOSTUNREACH:
		return "a host name did not resolve";
	case EPROTONOSUPPORT:
		return "this build of kvring has no RDMA transport";
	case EINVAL:
		return "bad URI or options";
	default:
		return strerror(err < 0 ? -err : err);
	}
}

/* ------------------------------------------------------------- options */

/* A non-negative integer keyword into *out (bounded by max); -1 on error. */
static int kw_u64(PyObject *v, const char *name, uint64_t max, uint64_t *out)
{
	unsigned long long x;

	if (!PyLong_Check(v)) {
		PyErr_Format(PyExc_TypeError, "%s must be an int", name);
		return -1;
	}
	x = PyLong_AsUnsignedLongLong(v);
	if (PyErr_Occurred() || x > max) {
		PyErr_Clear();
		kvpy_raise(EINVAL, "%s must be between 0 and %llu", name, (unsigned long long)max);
		return -1;
	}
	*out = x;
	return 0;
}

int kvpy_u32(PyObject *v, const char *name, uint32_t *out)
{
	uint64_t x;

	if (kw_u64(v, name, UINT32_MAX, &x))
		return -1;
	*out = (uint32_t)x;
	return 0;
}

static int kw_flag(PyObject *v, uint32_t bit, uint32_t *flags)
{
	int t = PyObject_IsTrue(v);

	if (t < 0)
		return -1;
	if (t)
		*flags |= bit;
	return 0;
}

static bool skipped(const char *name, const char *const *skip)
{
	for (; skip && *skip; skip++)
		if (!strcmp(name, *skip))
			return true;
	return false;
}

int kvpy_engine_opts(PyObject *kw, struct kvr_engine_opts *o)
{
	PyObject *k, *v;
	Py_ssize_t pos = 0;

	memset(o, 0, sizeof(*o));
	o->size = sizeof(*o);
	while (kw && PyDict_Next(kw, &pos, &k, &v)) {
		const char *name = PyUnicode_AsUTF8(k);
		int rc;

		if (!name)
			return -1;
		if (!strcmp(name, "ring_entries"))
			rc = kvpy_u32(v, name, &o->ring_entries);
		else if (!strcmp(name, "max_objects"))
			rc = kvpy_u32(v, name, &o->max_objects);
		else if (!strcmp(name, "fixed_buffers"))
			rc = kvpy_u32(v, name, &o->fixed_buffers);
		else if (!strcmp(name, "timeout_ms"))
			rc = kvpy_u32(v, name, &o->timeout_ms);
		else if (!strcmp(name, "stage_bytes"))
			rc = kw_u64(v, name, UINT64_MAX, &o->stage_bytes);
		else if (!strcmp(name, "busy_poll"))
			rc = kw_flag(v, KVR_ENGINE_BUSY_POLL, &o->flags);
		else if (!strcmp(name, "no_defer_taskrun"))
			rc = kw_flag(v, KVR_ENGINE_NO_DEFER_TASKRUN, &o->flags);
		else {
			PyErr_Format(PyExc_TypeError, "unknown engine option '%s'", name);
			return -1;
		}
		if (rc)
			return -1;
	}
	return 0;
}

int kvpy_spec_parse(const char *uri, PyObject *kw, const char *const *skip, struct kvpy_spec *s)
{
	PyObject *k, *v;
	Py_ssize_t pos = 0;
	bool store_opt = false, conn_opt = false;

	memset(s, 0, sizeof(*s));
	s->store.size = sizeof(s->store);
	s->conn.size = sizeof(s->conn);
	s->remote = !strncmp(uri, "tcp://", 6) || !strncmp(uri, "rdma://", 7);
	if (!s->remote && strncmp(uri, "mem:", 4) && strncmp(uri, "file:", 5)) {
		kvpy_raise(EINVAL, "unknown target URI '%s' (mem:SIZE, file:PATH, tcp://, rdma://)",
			   uri);
		return -1;
	}
	while (kw && PyDict_Next(kw, &pos, &k, &v)) {
		const char *name = PyUnicode_AsUTF8(k);
		int rc;
		bool st = false, cn = false;

		if (!name)
			goto fail;
		if (skipped(name, skip))
			continue;
		if (!strcmp(name, "timeout_ms")) {
			rc = kvpy_u32(v, name, &s->store.timeout_ms);
			s->conn.timeout_ms = s->store.timeout_ms;
		} else if ((st = !strcmp(name, "capacity"))) {
			rc = kw_u64(v, name, UINT64_MAX, &s->store.capacity);
		} else if ((st = !strcmp(name, "no_create"))) {
			rc = kw_flag(v, KVR_STORE_NO_CREATE, &s->store.flags);
		} else if ((st = !strcmp(name, "truncate"))) {
			rc = kw_flag(v, KVR_STORE_TRUNCATE, &s->store.flags);
		} else if ((st = !strcmp(name, "no_evict"))) {
			rc = kw_flag(v, KVR_STORE_NO_EVICT, &s->store.flags);
		} else if ((st = !strcmp(name, "dsync"))) {
			rc = kw_flag(v, KVR_STORE_DSYNC, &s->store.flags);
		} else if ((cn = !strcmp(name, "conns"))) {
			rc = kvpy_u32(v, name, &s->conn.conns);
		} else if ((cn = !strcmp(name, "replicas"))) {
			rc = kvpy_u32(v, name, &s->conn.replicas);
		} else if ((cn = !strcmp(name, "connect_timeout_ms"))) {
			rc = kvpy_u32(v, name, &s->conn.connect_timeout_ms);
		} else if ((cn = !strcmp(name, "retry_ms"))) {
			rc = kvpy_u32(v, name, &s->conn.retry_ms);
		} else if ((cn = !strcmp(name, "zc_min"))) {
			rc = kvpy_u32(v, name, &s->conn.zc_min);
		} else if ((cn = !strcmp(name, "secret"))) {
			Py_buffer b;

			if (v == Py_None)
				continue;
			if (PyUnicode_Check(v)) {
				Py_ssize_t len;
				const char *p = PyUnicode_AsUTF8AndSize(v, &len);

				if (!p)
					goto fail;
				b.buf = (void *)p;
				b.len = len;
				b.obj = NULL;
			} else if (PyObject_GetBuffer(v, &b, PyBUF_SIMPLE)) {
				goto fail;
			}
			if (b.len < 1 || b.len > 4096) {
				if (b.obj)
					PyBuffer_Release(&b);
				kvpy_raise(EINVAL, "secret must be 1 to 4096 bytes");
				goto fail;
			}
			PyMem_RawFree(s->secret);
			s->secret = PyMem_RawMalloc((size_t)b.len);
			if (!s->secret) {
				if (b.obj)
					PyBuffer_Release(&b);
				PyErr_NoMemory();
				goto fail;
			}
			memcpy(s->secret, b.buf, (size_t)b.len);
			s->conn.secret = s->secret;
			s->conn.secret_len = (size_t)b.len;
			if (b.obj)
				PyBuffer_Release(&b);
			rc = 0;
		} else {
			PyErr_Format(PyExc_TypeError, "unknown target option '%s'", name);
			goto fail;
		}
		if (rc)
			goto fail;
		store_opt |= st;
		conn_opt |= cn;
	}
	if (s->remote && store_opt) {
		kvpy_raise(EINVAL,
			   "'%s': store options (capacity, no_create, truncate, no_evict, "
			   "dsync) apply to mem: and file: targets",
			   uri);
		goto fail;
	}
	if (!s->remote && conn_opt) {
		kvpy_raise(EINVAL,
			   "'%s': connection options (conns, replicas, connect_timeout_ms, "
			   "retry_ms, zc_min, secret) apply to tcp:// and rdma:// targets",
			   uri);
		goto fail;
	}
	s->uri = PyMem_RawMalloc(strlen(uri) + 1);
	if (!s->uri) {
		PyErr_NoMemory();
		goto fail;
	}
	strcpy(s->uri, uri);
	return 0;
fail:
	kvpy_spec_free(s);
	return -1;
}

void kvpy_spec_free(struct kvpy_spec *s)
{
	PyMem_RawFree(s->uri);
	PyMem_RawFree(s->secret);
	s->uri = NULL;
	s->secret = NULL;
}

int kvpy_spec_open(kvr_engine *e, const struct kvpy_spec *s, kvr_target **out)
{
	return s->remote ? kvr_connect(e, s->uri, &s->conn, out)
			 : kvr_store_open(e, s->uri, &s->store, out);
}

int kvpy_fastcall_args(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames, PyObject **tuple,
		       PyObject **kw)
{
	Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;

	*kw = NULL;
	*tuple = PyTuple_New(nargs);
	if (!*tuple)
		return -1;
	for (Py_ssize_t i = 0; i < nargs; i++)
		PyTuple_SET_ITEM(*tuple, i, Py_NewRef(args[i]));
	if (!nkw)
		return 0;
	*kw = PyDict_New();
	for (Py_ssize_t i = 0; *kw && i < nkw; i++)
		if (PyDict_SetItem(*kw, PyTuple_GET_ITEM(kwnames, i), args[nargs + i]))
			Py_CLEAR(*kw);
	if (*kw)
		return 0;
	Py_CLEAR(*tuple);
	return -1;
}

/* ----------------------------------------------------------- batches */

/* Export one buffer for an SGE; a clear kvring.Error for what cannot be. */
static int get_view(PyObject *o, bool writable, size_t key, Py_buffer *v)
{
	if (!PyObject_CheckBuffer(o)) {
		PyErr_Format(PyExc_TypeError,
			     "buffer of key %zu: a buffer-protocol object (bytearray, memoryview, "
			     "numpy array, ...) is needed, not %.100s",
			     key, Py_TYPE(o)->tp_name);
		return -1;
	}
	if (PyObject_GetBuffer(o, v, PyBUF_ANY_CONTIGUOUS | (writable ? PyBUF_WRITABLE : 0)) == 0) {
		if (v->len > 0)
			return 0;
		PyBuffer_Release(v);
		kvpy_raise(EINVAL, "buffer of key %zu is empty", key);
		return -1;
	}
	PyErr_Clear();
	if (writable && PyObject_GetBuffer(o, v, PyBUF_ANY_CONTIGUOUS) == 0) {
		PyBuffer_Release(v);
		kvpy_raise(EINVAL, "buffer of key %zu is read-only (a get writes into it)", key);
	} else {
		PyErr_Clear();
		kvpy_raise(EINVAL, "buffer of key %zu is not contiguous", key);
	}
	return -1;
}

/* A key's SGL given as a list or tuple of buffers? */
static bool is_sgl(PyObject *b)
{
	return PyList_Check(b) || PyTuple_Check(b);
}

/* A key's bytes: str as UTF-8 (an ASCII str is its own UTF-8, read in
 * place), bytes as they are; NULL with TypeError or UnicodeError set. */
static const char *key_bytes(PyObject *k, Py_ssize_t i, Py_ssize_t *kl)
{
	if (PyUnicode_Check(k)) {
		if (PyUnicode_IS_COMPACT_ASCII(k)) {
			*kl = PyUnicode_GET_LENGTH(k);
			return (const char *)PyUnicode_DATA(k);
		}
		return PyUnicode_AsUTF8AndSize(k, kl);
	}
	if (PyBytes_Check(k)) {
		*kl = PyBytes_GET_SIZE(k);
		return PyBytes_AS_STRING(k);
	}
	PyErr_Format(PyExc_TypeError, "key %zd: str or bytes needed, not %.100s", i,
		     Py_TYPE(k)->tp_name);
	return NULL;
}

void kvpy_blk_put(struct kvpy_blk_cache *c, void *blk, size_t len)
{
	if (c && len >= c->len) {
		PyMem_RawFree(c->blk);
		c->blk = blk;
		c->len = len;
	} else {
		PyMem_RawFree(blk);
	}
}

void *kvpy_desc_build(size_t head, PyObject *keys, PyObject *bufs, bool writable,
		      struct kvpy_blk_cache *cache, struct kvpy_desc *d)
{
	PyObject *kf = NULL, *bf = NULL, *sgls = NULL;
	size_t nviews = 0, keybytes = 0, held = 0, sz = 0;
	char *blk = NULL, *kp;
	Py_ssize_t n;

	memset(d, 0, sizeof(*d));
	if (PyUnicode_Check(keys) || PyBytes_Check(keys) || PyByteArray_Check(keys)) {
		PyErr_SetString(
		    PyExc_TypeError,
		    "keys must be a sequence of keys (a list of str or bytes), not one key");
		return NULL;
	}
	/* Snapshots: the caller's lists may change while Python code runs
	 * below (a generator, a buffer export), ours do not. */
	kf = PySequence_Tuple(keys);
	if (!kf)
		return NULL;
	n = PyTuple_GET_SIZE(kf);
	if (n == 0) {
		kvpy_raise(EINVAL, "a batch needs at least one key");
		goto fail;
	}
	if (bufs != Py_None) {
		bf = PySequence_Tuple(bufs);
		if (!bf)
			goto fail;
		if (PyTuple_GET_SIZE(bf) != n) {
			kvpy_raise(EINVAL, "%zd keys but %zd buffers", n, PyTuple_GET_SIZE(bf));
			goto fail;
		}
	}
	/* pass 1: sizes */
	for (Py_ssize_t i = 0; i < n; i++) {
		PyObject *k = PyTuple_GET_ITEM(kf, i);
		Py_ssize_t kl;

		if (!key_bytes(k, i, &kl))
			goto fail;
		if (kl == 0) {
			kvpy_raise(EINVAL, "key %zd is empty", i);
			goto fail;
		}
		if (kl > KVR_MAX_KEY) {
			kvpy_raise(ENAMETOOLONG, "key %zd is %zd bytes, more than KVR_MAX_KEY (%d)",
				   i, kl, KVR_MAX_KEY);
			goto fail;
		}
		keybytes += (size_t)kl;
		if (!bf)
			continue;
		PyObject *b = PyTuple_GET_ITEM(bf, i);

		if (!is_sgl(b)) {
			nviews++;
			continue;
		}
		PyObject *sg = PySequence_Tuple(b);

		if (!sg)
			goto fail;
		if (!sgls && !(sgls = PyTuple_New(n))) {
			Py_DECREF(sg);
			goto fail;
		}
		PyTuple_SET_ITEM(sgls, i, sg);
		if (PyTuple_GET_SIZE(sg) == 0) {
			kvpy_raise(EINVAL, "key %zd has an empty SGL", i);
			goto fail;
		}
		if (PyTuple_GET_SIZE(sg) > KVR_MAX_SGE) {
			kvpy_raise(E2BIG, "key %zd has %zd SGEs, more than KVR_MAX_SGE (%d)", i,
				   PyTuple_GET_SIZE(sg), KVR_MAX_SGE);
			goto fail;
		}
		nviews += (size_t)PyTuple_GET_SIZE(sg);
	}
	size_t hsz = (head + 15) & ~(size_t)15;
	sz = hsz + (size_t)n * (sizeof(int64_t) + sizeof(kvr_obj)) +
	     nviews * (sizeof(kvr_sge) + sizeof(Py_buffer)) + keybytes;

	if (cache && cache->blk && cache->len >= sz) {
		blk = cache->blk;
		sz = cache->len;
		cache->blk = NULL;
		cache->len = 0;
	} else if (!(blk = PyMem_RawMalloc(sz))) {
		PyErr_NoMemory();
		goto fail;
	}
	memset(blk, 0, hsz + (size_t)n * sizeof(int64_t)); /* header and results */
	d->n = (size_t)n;
	d->blk_len = sz;
	d->results = (int64_t *)(blk + hsz);
	d->objs = (kvr_obj *)(d->results + n);
	d->views = (Py_buffer *)(d->objs + n);
	d->sges = (kvr_sge *)(d->views + nviews);
	kp = (char *)(d->sges + nviews);
	/* pass 2: export the buffers, lay out keys and SGLs */
	for (Py_ssize_t i = 0; i < n; i++) {
		PyObject *k = PyTuple_GET_ITEM(kf, i);
		Py_ssize_t kl;
		const char *kb = key_bytes(k, i, &kl); /* cannot fail: pass 1 read it */
		kvr_obj *o = &d->objs[i];

		memcpy(kp, kb, (size_t)kl);
		*o = (kvr_obj){kp, (size_t)kl, NULL, 0};
		kp += kl;
		if (!bf)
			continue;
		PyObject *sg = sgls ? PyTuple_GET_ITEM(sgls, i) : NULL;
		Py_ssize_t m = sg ? PyTuple_GET_SIZE(sg) : 1;

		o->sgl = &d->sges[held];
		for (Py_ssize_t j = 0; j < m; j++) {
			PyObject *x = sg ? PyTuple_GET_ITEM(sg, j) : PyTuple_GET_ITEM(bf, i);

			if (get_view(x, writable, (size_t)i, &d->views[held]))
				goto fail;
			d->sges[held] = (kvr_sge){d->views[held].buf, (size_t)d->views[held].len};
			held++;
		}
		o->nsge = (uint32_t)m;
	}
	d->nviews = held;
	Py_DECREF(kf);
	Py_XDECREF(bf);
	Py_XDECREF(sgls);
	return blk;
fail:
	for (size_t i = 0; i < held; i++)
		PyBuffer_Release(&d->views[i]);
	if (blk)
		kvpy_blk_put(cache, blk, sz);
	memset(d, 0, sizeof(*d));
	Py_XDECREF(kf);
	Py_XDECREF(bf);
	Py_XDECREF(sgls);
	return NULL;
}

void kvpy_desc_release(struct kvpy_desc *d)
{
	for (size_t i = 0; i < d->nviews; i++)
		PyBuffer_Release(&d->views[i]);
	d->nviews = 0;
}

/* -------------------------------------------------------------- module */

static PyObject *py_strerror(PyObject *self, PyObject *arg)
{
	long err = PyLong_AsLong(arg);

	if (err == -1 && PyErr_Occurred())
		return NULL;
	if (err > 4095 || err < -4095)
		return kvpy_raise(EINVAL, "strerror(): %ld is not an errno", err);
	if (err > 0)
		err = -err;
	return PyUnicode_FromString(kvr_strerror((int)err));
}

static PyObject *py_parse_size(PyObject *self, PyObject *arg)
{
	Py_ssize_t len;
	const char *s = PyUnicode_AsUTF8AndSize(arg, &len);
	uint64_t v;

	if (!s)
		return NULL;
	if ((size_t)len != strlen(s) || kvr_parse_size(s, &v))
		return kvpy_raise(EINVAL, "'%s' is not a size (digits with K, M, G or T)", s);
	return PyLong_FromUnsignedLongLong(v);
}

static PyMethodDef module_methods[] = {
    {"strerror", py_strerror, METH_O,
     "strerror(err: int) -> str\n\nText for an errno kvring returned (negative or positive)."},
    {"parse_size", py_parse_size, METH_O,
     "parse_size(s: str) -> int\n\nA byte count as kvring's URIs take it ('64M', '8G')."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "kvring._kvring",
    .m_doc = "The C half of the kvring package: engines, targets, batches and the LMCache "
	     "connector.",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC PyInit__kvring(void);
PyMODINIT_FUNC PyInit__kvring(void)
{
	PyObject *m = PyModule_Create(&module_def);
	PyTypeObject *types[] = {&kvpy_EngineType, &kvpy_TargetType, &kvpy_RegionType,
				 &kvpy_BatchType, &kvpy_ConnectorType};

	if (!m)
		return NULL;
	kvpy_Error = PyErr_NewExceptionWithDoc(
	    "kvring.Error",
	    "A kvring call failed at submission. An OSError: .errno holds the errno "
	    "(errno.ENOENT, ...) and .strerror the message.",
	    PyExc_OSError, NULL);
	if (!kvpy_Error || PyModule_AddObjectRef(m, "Error", kvpy_Error))
		goto fail;
	for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++)
		if (PyType_Ready(types[i]) ||
		    PyModule_AddObjectRef(m, strrchr(types[i]->tp_name, '.') + 1,
					  (PyObject *)types[i]))
			goto fail;
	if (PyModule_AddIntConstant(m, "MAX_KEY", KVR_MAX_KEY) ||
	    PyModule_AddIntConstant(m, "MAX_SGE", KVR_MAX_SGE) ||
	    PyModule_AddStringConstant(m, "__version__", "0.1.0"))
		goto fail;
	return m;
fail:
	Py_DECREF(m);
	return NULL;
}
