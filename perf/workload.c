/* SPDX-License-Identifier: MIT */
/*
 * The put/get workload of kvring-bench.
 *
 * One page-aligned arena is mapped and registered once. It holds depth*batch
 * object slots; an object of `size` bytes is `sge` slices, and slice j of
 * every slot lives in region j of the arena (the way a KV cache keeps each
 * layer's blocks together), so an object's slices are far apart, each 4 KiB
 * aligned when it is at least 4 KiB long. With --copy the arena also holds
 * one bounce buffer of `size` bytes per slot.
 *
 * `depth` batches of `batch` objects are kept in flight: each callback
 * records the latency of its objects (batch submission to callback), counts
 * bytes and errors, and resubmits the batch with the next keys until the
 * measured time is over. A get run first puts every key it will read (the
 * fill) and reads one round back checking every byte (the verify), neither
 * measured.
 *
 * With --mem cuda the arena is CUDA device memory (devmem.c) registered with
 * KVR_MEM_CUDA: the fill's patterns go in and the verify's bytes come back
 * through a host staging buffer of one slice. The copy path is a host memcpy
 * and is refused there.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

#define WL_KEY_MAX     32
#define WL_ARENA_ALIGN (2ull << 20)

enum wl_phase { WL_FILL, WL_VERIFY, WL_MEASURE };

struct wl;

struct wl_batch {
	struct wl *w;
	kvr_obj *objs;	   /* cfg->batch descriptors */
	uint64_t *key;	   /* key index of each object */
	uint32_t first;	   /* its first object slot */
	uint32_t n;	   /* objects in it now */
	uint64_t t_submit; /* ns */
};

struct wl {
	const struct bench_cfg *cfg; /* = &cfg_copy */
	struct bench_cfg cfg_copy;
	kvr_engine *e;
	kvr_target *t;
	uint32_t nslot; /* depth * batch */
	uint8_t *arena;
	size_t arena_len;
	bool dev;	       /* the arena is CUDA device memory */
	uint8_t *stage;	       /* dev: host staging of one slice */
	struct bench_arena ar; /* arena, arena_len and dev are its */
	size_t slice_len[KVR_MAX_SGE];
	size_t slice_off[KVR_MAX_SGE];
	size_t slice_stride[KVR_MAX_SGE];
	size_t bounce_off, bounce_stride;
	kvr_sge *sgl;  /* nslot * sge: the objects' own SGLs */
	kvr_sge *bsgl; /* nslot: one bounce buffer each (copy path) */
	char (*keys)[WL_KEY_MAX];
	struct wl_batch *batches;

	/* the phase running now */
	enum wl_phase phase;
	enum kvr_op op;
	bool copy;
	uint64_t nkeys;	 /* key space */
	uint64_t *order; /* measure: keys in a random order, reshuffled per pass */
	uint64_t order_pos, rng;
	uint64_t next;	   /* objects submitted in this phase */
	uint64_t limit;	   /* fill/verify: objects to do */
	uint64_t deadline; /* measure: no new batch after this (ns) */
	uint64_t t_start, t_last;
	uint32_t inflight;
	int submit_err;

	uint64_t ok, bytes, errors, verified, verify_bad;
	int64_t first_error;
	struct bench_hist hist;
};

/* The bytes of slice `slice` of key `key`: written (check == false) or
 * compared (check == true; returns false on the first difference). */
static bool pattern(uint8_t *p, size_t len, uint64_t key, uint64_t slice, bool check)
{
	uint64_t s = bench_mix64(key * 0x9e3779b97f4a7c15ull + slice + 1) | 1, v;
	size_t i;

	for (i = 0; i + 8 <= len; i += 8) {
		v = bench_xorshift(&s);
		if (!check)
			memcpy(p + i, &v, 8);
		else if (memcmp(p + i, &v, 8))
			return false;
	}
	if (i < len) {
		v = bench_xorshift(&s);
		if (!check)
			memcpy(p + i, &v, len - i);
		else if (memcmp(p + i, &v, len - i))
			return false;
	}
	return true;
}

/* Shuffle the key order (Fisher-Yates): the measured keys come in random
 * order, as fio's randread/randwrite offsets do, so that the store cannot
 * merge neighbouring objects into bigger I/Os. */
static void wl_shuffle(struct wl *w)
{
	uint64_t i, j, t;

	for (i = w->nkeys - 1; i > 0; i--) {
		j = bench_xorshift(&w->rng) % (i + 1);
		t = w->order[i];
		w->order[i] = w->order[j];
		w->order[j] = t;
	}
	w->order_pos = 0;
}

static uint64_t wl_next_key(struct wl *w)
{
	if (w->phase != WL_MEASURE)
		return w->next;
	if (w->order_pos == w->nkeys)
		wl_shuffle(w);
	return w->order[w->order_pos++];
}

static size_t key_fmt(char *buf, uint64_t k)
{
	char digits[24];
	size_t n = 0, i;

	do {
		digits[n++] = (char)('0' + k % 10);
		k /= 10;
	} while (k);
	memcpy(buf, "bench-", 6);
	for (i = 0; i < n; i++)
		buf[6 + i] = digits[n - 1 - i];
	return 6 + n;
}

static size_t round_up(size_t v, size_t a)
{
	return (v + a - 1) / a * a;
}

/* Slice lengths and where each region and the bounce buffers go. */
static int wl_layout(struct wl *w)
{
	const struct bench_cfg *cfg = w->cfg;
	size_t base = cfg->size / cfg->sge, off = 0, region;
	uint32_t j;

	if (base >= 4096)
		base &= ~(size_t)4095;
	for (j = 0; j < cfg->sge; j++) {
		size_t len = j + 1 < cfg->sge ? base : cfg->size - base * (cfg->sge - 1);

		w->slice_len[j] = len;
		w->slice_stride[j] = round_up(len, len >= 4096 ? 4096 : 512);
		w->slice_off[j] = off;
		if (__builtin_mul_overflow(w->slice_stride[j], (size_t)w->nslot, &region) ||
		    __builtin_add_overflow(off, region, &off))
			return -EOVERFLOW;
	}
	w->bounce_off = off;
	if (cfg->copy) {
		w->bounce_stride = round_up(cfg->size, 4096);
		if (__builtin_mul_overflow(w->bounce_stride, (size_t)w->nslot, &region) ||
		    __builtin_add_overflow(off, region, &off))
			return -EOVERFLOW;
	}
	if (off > SIZE_MAX - WL_ARENA_ALIGN)
		return -EOVERFLOW;
	w->arena_len = round_up(off, WL_ARENA_ALIGN);
	return 0;
}

/* The objects' SGLs, keys and batches over the arena. */
static int wl_setup_sgls(struct wl *w)
{
	const struct bench_cfg *cfg = w->cfg;
	uint32_t s, j, b;
	size_t i;

	w->sgl = calloc((size_t)w->nslot * cfg->sge, sizeof(*w->sgl));
	w->bsgl = calloc(w->nslot, sizeof(*w->bsgl));
	w->keys = calloc(w->nslot, sizeof(*w->keys));
	w->batches = calloc(cfg->depth, sizeof(*w->batches));
	w->order = calloc(w->nkeys, sizeof(*w->order));
	if (!w->sgl || !w->bsgl || !w->keys || !w->batches || !w->order)
		return -ENOMEM;
	for (i = 0; i < w->nkeys; i++)
		w->order[i] = i;
	w->rng = 0x6b7672696e672d62ull;
	wl_shuffle(w);
	for (s = 0; s < w->nslot; s++) {
		for (j = 0; j < cfg->sge; j++) {
			kvr_sge *sge = &w->sgl[(size_t)s * cfg->sge + j];

			sge->addr = w->arena + w->slice_off[j] + (size_t)s * w->slice_stride[j];
			sge->len = w->slice_len[j];
		}
		if (cfg->copy) {
			w->bsgl[s].addr = w->arena + w->bounce_off + (size_t)s * w->bounce_stride;
			w->bsgl[s].len = cfg->size;
		}
	}
	for (b = 0; b < cfg->depth; b++) {
		struct wl_batch *bt = &w->batches[b];

		bt->w = w;
		bt->first = b * cfg->batch;
		bt->objs = calloc(cfg->batch, sizeof(*bt->objs));
		bt->key = calloc(cfg->batch, sizeof(*bt->key));
		if (!bt->objs || !bt->key)
			return -ENOMEM;
		for (s = 0; s < cfg->batch; s++)
			bt->objs[s].key = w->keys[bt->first + s];
	}
	return 0;
}

/* --mem cuda: a host buffer to stage slices of the device memory arena. */
static int wl_setup_dev(struct wl *w)
{
	size_t stage_len = 0;
	uint32_t j;

	for (j = 0; j < w->cfg->sge; j++)
		if (w->slice_len[j] > stage_len)
			stage_len = w->slice_len[j];
	w->stage = malloc(stage_len);
	if (!w->stage)
		return -ENOMEM;
	return wl_setup_sgls(w);
}

static int wl_setup(struct wl *w)
{
	const struct bench_cfg *cfg = w->cfg;
	uint64_t seed = 0x6b7672696e67ull;
	size_t i;
	int rc;

	rc = wl_layout(w);
	if (rc) {
		fprintf(stderr, "kvring-bench: %u objects of %llu bytes do not fit in memory\n",
			w->nslot, (unsigned long long)cfg->size);
		return rc;
	}
	rc = bench_arena_make(w->e, w->arena_len, cfg->cuda, "buffer arena", &w->ar);
	w->arena = w->ar.p;
	w->dev = w->ar.dev;
	if (rc)
		return rc;
	if (cfg->cuda)
		return wl_setup_dev(w);
	/* non-trivial bytes everywhere (this also faults every page in) */
	for (i = 0; i + 8 <= w->arena_len; i += 8) {
		uint64_t v = bench_xorshift(&seed);

		memcpy(w->arena + i, &v, 8);
	}
	return wl_setup_sgls(w);
}

/* Frees what the engine no longer holds. Returns false when the arena had to
 * be left mapped (the engine still uses it). */
static bool wl_teardown(struct wl *w)
{
	uint32_t b;
	bool freed;

	if (w->inflight)
		return false; /* callbacks still to come: keep w and the arena */
	freed = bench_arena_release(w->e, &w->ar, "buffer arena");
	free(w->stage);
	if (w->batches) {
		for (b = 0; b < w->cfg->depth; b++) {
			free(w->batches[b].objs);
			free(w->batches[b].key);
		}
	}
	free(w->batches);
	free(w->order);
	free(w->keys);
	free(w->bsgl);
	free(w->sgl);
	free(w);
	return freed;
}

static bool wl_more(const struct wl *w, uint64_t now)
{
	if (w->submit_err)
		return false;
	if (w->phase == WL_MEASURE)
		return now < w->deadline;
	return w->next < w->limit;
}

static void wl_done(void *ctx, size_t n, const int64_t *res);

/* The pattern of slice j of key k into p (device memory: through w->stage). */
static int wl_fill_slice(struct wl *w, uint8_t *p, size_t len, uint64_t k, uint32_t j)
{
	if (!w->dev) {
		pattern(p, len, k, j, false);
		return 0;
	}
	pattern(w->stage, len, k, j, false);
	return devmem_copy_from_host(p, w->stage, len);
}

static int wl_dev_error(struct wl *w, const char *what)
{
	fprintf(stderr, "kvring-bench: --mem cuda: cannot %s device memory (cudaMemcpy)\n", what);
	w->submit_err = -EIO;
	return -EIO;
}

static int wl_submit(struct wl *w, struct wl_batch *b)
{
	const struct bench_cfg *cfg = w->cfg;
	uint32_t n = cfg->batch, i, j, s;
	int rc;

	if (w->phase != WL_MEASURE && w->limit - w->next < n)
		n = (uint32_t)(w->limit - w->next);
	for (i = 0; i < n; i++) {
		uint64_t k = wl_next_key(w);
		kvr_obj *o = &b->objs[i];

		s = b->first + i;
		w->next++;
		b->key[i] = k;
		o->key_len = key_fmt(w->keys[s], k);
		o->sgl = w->copy ? &w->bsgl[s] : &w->sgl[(size_t)s * cfg->sge];
		o->nsge = w->copy ? 1 : cfg->sge;
		if (w->phase == WL_FILL)
			for (j = 0; j < cfg->sge; j++)
				if (wl_fill_slice(w, w->sgl[(size_t)s * cfg->sge + j].addr,
						  w->slice_len[j], k, j))
					return wl_dev_error(w, "write the fill pattern into");
	}
	b->n = n;
	b->t_submit = bench_now_ns();
	if (w->copy && w->op == KVR_OP_PUT) {
		/* the copy path: gather the object into its bounce buffer */
		for (i = 0; i < n; i++) {
			const kvr_sge *sgl = &w->sgl[(size_t)(b->first + i) * cfg->sge];
			uint8_t *dst = w->bsgl[b->first + i].addr;

			for (j = 0; j < cfg->sge; j++) {
				memcpy(dst, sgl[j].addr, sgl[j].len);
				dst += sgl[j].len;
			}
		}
	}
	rc = kvr_submit(w->t, w->op, b->objs, n, 0, wl_done, b);
	if (rc < 0) {
		w->submit_err = rc;
		return rc;
	}
	w->inflight++;
	return 0;
}

static void wl_copy_out(struct wl *w, uint32_t slot)
{
	const kvr_sge *sgl = &w->sgl[(size_t)slot * w->cfg->sge];
	const uint8_t *src = w->bsgl[slot].addr;
	uint32_t j;

	for (j = 0; j < w->cfg->sge; j++) {
		memcpy(sgl[j].addr, src, sgl[j].len);
		src += sgl[j].len;
	}
}

static bool wl_check(struct wl *w, uint32_t slot, uint64_t key)
{
	const kvr_sge *sgl = &w->sgl[(size_t)slot * w->cfg->sge];
	uint32_t j;

	for (j = 0; j < w->cfg->sge; j++) {
		if (!w->dev) {
			if (!pattern(sgl[j].addr, sgl[j].len, key, j, true))
				return false;
			continue;
		}
		if (devmem_copy_to_host(w->stage, sgl[j].addr, sgl[j].len) ||
		    !pattern(w->stage, sgl[j].len, key, j, true))
			return false;
	}
	return true;
}

static void wl_done(void *ctx, size_t n, const int64_t *res)
{
	struct wl_batch *b = ctx;
	struct wl *w = b->w;
	int64_t want = (int64_t)w->cfg->size;
	uint64_t now, ok = 0;
	size_t i;

	if (w->copy && w->op == KVR_OP_GET) /* the copy path: scatter to the SGL */
		for (i = 0; i < n && i < b->n; i++)
			if (res[i] == want)
				wl_copy_out(w, b->first + (uint32_t)i);
	now = bench_now_ns();
	for (i = 0; i < n && i < b->n; i++) {
		if (res[i] == want) {
			ok++;
			if (w->phase == WL_VERIFY) {
				w->verified++;
				if (!wl_check(w, b->first + (uint32_t)i, b->key[i]))
					w->verify_bad++;
			}
			continue;
		}
		if (!w->errors)
			w->first_error = res[i];
		w->errors++;
	}
	if (n != b->n) { /* the library reported a different count: count the gap */
		if (!w->errors)
			w->first_error = -EPROTO;
		w->errors += n > b->n ? n - b->n : b->n - n;
	}
	if (w->phase == WL_MEASURE && ok)
		hist_add(&w->hist, now - b->t_submit, ok);
	w->ok += ok;
	w->bytes += ok * w->cfg->size;
	w->t_last = now;
	w->inflight--;
	if (wl_more(w, now))
		wl_submit(w, b);
}

/* Run one phase to the end: keep `depth` batches in flight while there is
 * more to do, then wait for the last callback. */
static int wl_phase(struct wl *w, enum wl_phase phase, enum kvr_op op, bool copy, uint64_t limit)
{
	uint32_t d;
	int rc;

	w->phase = phase;
	w->op = op;
	w->copy = copy;
	w->next = 0;
	w->limit = limit;
	w->ok = w->bytes = w->errors = 0;
	w->first_error = 0;
	w->t_start = w->t_last = bench_now_ns();
	w->deadline = w->t_start + (uint64_t)(w->cfg->seconds * 1e9);
	for (d = 0; d < w->cfg->depth && wl_more(w, w->t_start); d++)
		if (wl_submit(w, &w->batches[d]))
			break;
	while (w->inflight) {
		rc = kvr_engine_poll(w->e, -1);
		if (rc < 0) {
			w->submit_err = rc; /* resubmit nothing from later callbacks */
			bench_errmsg(w->e, rc, "kvr_engine_poll failed", NULL);
			return rc;
		}
	}
	if (w->submit_err) {
		bench_errmsg(w->e, w->submit_err,
			     op == KVR_OP_GET ? "kvr_get failed on" : "kvr_put failed on",
			     w->cfg->target);
		return w->submit_err;
	}
	return 0;
}

static void wl_bad_result(const char *what, uint64_t errors, uint64_t total, int64_t first)
{
	fprintf(stderr, "kvring-bench: %s: %llu of %llu objects failed, first: ", what,
		(unsigned long long)errors, (unsigned long long)total);
	if (first < 0)
		fprintf(stderr, "%s (%lld)\n", kvr_strerror((int)first), (long long)first);
	else
		fprintf(stderr, "%lld bytes instead of the object's size\n", (long long)first);
}

static uint64_t max_u64(uint64_t a, uint64_t b)
{
	return a > b ? a : b;
}

/* Which path the bytes took: the target counts its own I/Os, the engine its
 * submissions (take the larger where both might count). */
static void engine_counters(kvr_engine *e, kvr_target *t, struct bench_engine_delta *d)
{
	struct kvr_stats es = {.size = sizeof(es)}, ts = {.size = sizeof(ts)};

	memset(d, 0, sizeof(*d));
	kvr_engine_stats(e, &es);
	kvr_target_stats(t, &ts);
	d->fixed_ios = max_u64(es.fixed_ios, ts.fixed_ios);
	d->plain_ios = max_u64(es.plain_ios, ts.plain_ios);
	d->bounce_bytes = max_u64(es.bounce_bytes, ts.bounce_bytes);
	d->submits = max_u64(es.submits, ts.submits);
	d->cq_overflows = max_u64(es.cq_overflows, ts.cq_overflows);
}

int workload_run(struct bench_env *env, const struct bench_cfg *cfg, struct bench_result *res)
{
	struct bench_engine_delta before, after;
	int64_t verify_error = 0;
	struct wl *w;
	double secs;
	int rc;

	memset(res, 0, sizeof(*res));
	res->cfg = *cfg;
	if (cfg->cuda && cfg->copy) {
		fprintf(stderr, "kvring-bench: --copy is the host memcpy path and does not apply "
				"to --mem cuda\n");
		return -EINVAL;
	}
	res->keys = bench_key_space(cfg, env->capacity);
	if (!res->keys) {
		fprintf(
		    stderr, "kvring-bench: %s: objects of %llu bytes do not fit (capacity %llu)\n",
		    cfg->target, (unsigned long long)cfg->size, (unsigned long long)env->capacity);
		return -ENOSPC;
	}
	w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	w->cfg_copy = *cfg;
	w->cfg = &w->cfg_copy;
	w->e = env->e;
	w->t = env->t;
	w->nslot = cfg->depth * cfg->batch;
	w->nkeys = res->keys;
	rc = wl_setup(w);
	if (rc)
		goto out;

	if (cfg->op == KVR_OP_GET) {
		rc = wl_phase(w, WL_FILL, KVR_OP_PUT, false, w->nkeys);
		if (!rc && w->errors) {
			wl_bad_result("fill before get", w->errors, w->nkeys, w->first_error);
			rc = -EIO;
		}
		if (rc)
			goto out;
		rc = wl_phase(w, WL_VERIFY, KVR_OP_GET, false,
			      w->nkeys < w->nslot ? w->nkeys : w->nslot);
		if (!rc && (w->errors || w->verify_bad)) {
			if (w->errors)
				wl_bad_result("read-back after the fill", w->errors, w->limit,
					      w->first_error);
			if (w->verify_bad)
				fprintf(stderr,
					"kvring-bench: read-back: %llu of %llu objects came back "
					"with wrong bytes\n",
					(unsigned long long)w->verify_bad,
					(unsigned long long)w->verified);
		}
		res->verified = w->verified;
		res->verify_bad = w->verify_bad + w->errors;
		verify_error = w->errors ? w->first_error : -EILSEQ; /* used if bad */
		if (rc)
			goto out;
	}

	engine_counters(w->e, w->t, &before);
	rc = wl_phase(w, WL_MEASURE, cfg->op, cfg->copy, 0);
	engine_counters(w->e, w->t, &after);
	res->eng.fixed_ios = after.fixed_ios - before.fixed_ios;
	res->eng.plain_ios = after.plain_ios - before.plain_ios;
	res->eng.bounce_bytes = after.bounce_bytes - before.bounce_bytes;
	res->eng.submits = after.submits - before.submits;
	res->eng.cq_overflows = after.cq_overflows - before.cq_overflows;

	secs = (double)(w->t_last - w->t_start) / 1e9;
	res->objects = w->ok;
	res->bytes = w->bytes;
	res->errors = w->errors + res->verify_bad;
	res->first_error = w->errors ? w->first_error : verify_error;
	res->submit_error = w->submit_err;
	res->seconds = secs;
	if (secs > 0) {
		res->gbps = (double)w->bytes / secs / 1e9;
		res->ops_per_s = (double)w->ok / secs;
	}
	res->p50_us = hist_pct(&w->hist, 0.50);
	res->p99_us = hist_pct(&w->hist, 0.99);
	res->p999_us = hist_pct(&w->hist, 0.999);
	res->max_us = (double)w->hist.max_ns / 1000.0;
	if (cfg->hist)
		*cfg->hist = w->hist;
	if (!rc && w->errors)
		wl_bad_result(cfg->op == KVR_OP_GET ? "get" : "put", w->errors, w->errors + w->ok,
			      w->first_error);
out:
	wl_teardown(w);
	return rc;
}
