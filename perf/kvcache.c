/* SPDX-License-Identifier: MIT */
/*
 * The LMCache-shaped KV-cache workload of kvring-bench (--workload kvcache).
 *
 * A model preset gives the KV bytes of one token (layers x K/V x kv_heads x
 * head_dim x fp16). The KV cache of one request lives in one registered
 * arena laid out like vLLM's paged cache: one region per (layer, K or V),
 * and chunk c's slice of region r at offset c * slice_len. A chunk of
 * chunk_tokens tokens is one kvring object whose SGL is its 2 x layers
 * slices (or, with --contiguous, one buffer per chunk: 1 SGE).
 *
 * The trace: `requests` requests of about 8192 tokens x scale, in groups
 * that share a system prompt or document: the first half of a request's
 * chunks are its group's prefix (the same keys across the group, as LMCache
 * keys a chunk by the hash of the tokens up to it), the rest its own.
 *
 *   store (offload): per request, one kvr_put of the chunks not stored yet;
 *                    the pattern is written into the arena first (not timed)
 *   load (reload):   per request, the arena is scribbled over (not timed),
 *                    then one kvr_get of all its chunks into it, then every
 *                    byte is checked (not timed)
 *
 * Each request is timed from its submission to its callback. With --copy
 * every chunk goes through a bounce buffer of its own, gathered (put) or
 * scattered (get) with memcpy inside the timed region: the path a cache
 * without scatter-gather I/O takes.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"

#define KVC_BASE_TOKENS	     8192 /* tokens of one request at scale 1 */
#define KVC_GROUPS	     5	  /* shared prompts / documents */
#define KVC_DEF_REQUESTS     50
#define KVC_DEF_CHUNK	     256
#define KVC_KEY_MAX	     80
#define KVC_ASSUMED_CAPACITY (2ull << 30) /* targets that report none */
#define KVC_ALIGN	     4096ull
#define KVC_ARENA_ALIGN	     (2ull << 20)

const struct kvc_model kvc_models[] = {
    {"llama-3-8b", 32, 8, 128, 2},
    {"qwen2.5-7b", 28, 4, 128, 2},
    {"llama-3-70b", 80, 8, 128, 2},
    {"qwen2.5-0.5b", 24, 2, 64, 2},
    {NULL, 0, 0, 0, 0},
};

const struct kvc_model *kvc_model_find(const char *name)
{
	const struct kvc_model *m;

	for (m = kvc_models; name && m->name; m++)
		if (!strcmp(m->name, name))
			return m;
	return NULL;
}

/* One unique chunk of the trace. */
struct kvc_chunk {
	char key[KVC_KEY_MAX];
	uint32_t key_len;
	uint64_t seed; /* hash of the key: the pattern of its slices */
	bool stored;
};

/* The trace's shape at one scale. */
struct kvc_shape {
	uint32_t nchunk; /* chunks per request */
	uint32_t prefix; /* ... shared with the request's group */
	uint32_t groups;
	uint64_t unique; /* chunks of the whole trace */
	uint64_t stored_bytes;
	size_t arena_len;
};

struct kvc;

/* The one batch in flight. */
struct kvc_batch {
	struct kvc *k;
	uint32_t n;
	bool scatter; /* copy path get: scatter each chunk in the callback */
	bool done;
	uint64_t t_end;
	int64_t *res; /* nchunk: each object's result */
};

struct kvc {
	const struct kvc_cfg *cfg;
	const struct kvc_model *m;
	kvr_engine *e;
	kvr_target *t;
	FILE *msg; /* where progress lines go */
	struct kvc_shape s;
	uint32_t nsge;	  /* SGEs of a chunk (regions of the arena) */
	size_t slice_len; /* bytes of each */
	uint64_t chunk_bytes;
	size_t region_stride, bounce_off;
	uint8_t *arena;
	bool dev;	       /* the arena is device memory */
	struct bench_arena ar; /* arena and dev are its */
	uint8_t *stage;	       /* dev: host staging of one slice */
	kvr_sge *sgl;	       /* nchunk * nsge: slot j's slices */
	kvr_sge *bsgl;	       /* nchunk: slot j's bounce buffer (copy) */
	kvr_obj *objs;	       /* nchunk: the batch being built */
	uint32_t *slot;	       /* nchunk: the arena slot of each object of it */
	struct kvc_chunk *chunks;
	double *ms; /* requests: per-request time of the phase */
	struct kvc_batch b;
	bool inflight;
};

static uint64_t kvc_hash(const char *s, size_t len)
{
	uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
	size_t i;

	for (i = 0; i < len; i++)
		h = (h ^ (uint8_t)s[i]) * 0x100000001b3ull;
	return bench_mix64(h);
}

static uint64_t slice_seed(uint64_t chunk_seed, uint32_t sge)
{
	return bench_mix64(chunk_seed + (sge + 1ull) * 0x9e3779b97f4a7c15ull) | 1;
}

/* A slice's bytes: a xorshift stream from its seed (little-endian words,
 * the tail a word's first bytes), written or checked. */
static void pattern_fill(uint8_t *p, size_t len, uint64_t s)
{
	uint64_t v;
	size_t i;

	for (i = 0; i + 8 <= len; i += 8) {
		v = bench_xorshift(&s);
		memcpy(p + i, &v, 8);
	}
	if (i < len) {
		v = bench_xorshift(&s);
		memcpy(p + i, &v, len - i);
	}
}

static bool pattern_check(const uint8_t *p, size_t len, uint64_t s)
{
	uint64_t v, w, diff = 0;
	size_t i;

	for (i = 0; i + 8 <= len; i += 8) {
		memcpy(&v, p + i, 8);
		diff |= v ^ bench_xorshift(&s);
	}
	if (i < len) {
		v = w = 0;
		memcpy(&v, p + i, len - i);
		memcpy(&w, &(uint64_t){bench_xorshift(&s)}, len - i);
		diff |= v ^ w;
	}
	return !diff;
}

static uint64_t round_up(uint64_t v, uint64_t a)
{
	return (v + a - 1) / a * a;
}

static uint32_t cfg_requests(const struct kvc_cfg *cfg)
{
	return cfg->requests ? cfg->requests : KVC_DEF_REQUESTS;
}

static uint32_t cfg_chunk_tokens(const struct kvc_cfg *cfg)
{
	return cfg->chunk_tokens ? cfg->chunk_tokens : KVC_DEF_CHUNK;
}

static const struct kvc_model *cfg_model(const struct kvc_cfg *cfg)
{
	return cfg->model ? cfg->model : &kvc_models[0];
}

uint32_t kvc_chunks_per_request(const struct kvc_cfg *cfg, double scale)
{
	double n = (double)KVC_BASE_TOKENS * (scale > 0 ? scale : 1) / cfg_chunk_tokens(cfg);

	if (n > (double)(1u << 30))
		return 1u << 30;
	n += 0.5; /* to the nearest whole chunk, at least one */
	return n < 1 ? 1 : (uint32_t)n;
}

static void kvc_shape_at(const struct kvc *k, double scale, struct kvc_shape *s)
{
	uint32_t requests = cfg_requests(k->cfg);
	uint64_t kv, bounce;

	s->nchunk = kvc_chunks_per_request(k->cfg, scale);
	s->prefix = s->nchunk / 2;
	s->groups = requests < KVC_GROUPS ? requests : KVC_GROUPS;
	s->unique = (uint64_t)s->groups * s->prefix + (uint64_t)requests * (s->nchunk - s->prefix);
	s->stored_bytes = s->unique * k->chunk_bytes;
	kv = (uint64_t)k->nsge * round_up((uint64_t)s->nchunk * k->slice_len, KVC_ALIGN);
	bounce = k->cfg->copy ? (uint64_t)s->nchunk * round_up(k->chunk_bytes, KVC_ALIGN) : 0;
	s->arena_len = (size_t)round_up(kv + bounce, KVC_ARENA_ALIGN);
}

static uint64_t phys_ram(void)
{
	long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);

	return pages > 0 && psz > 0 ? (uint64_t)pages * (uint64_t)psz : 0;
}

static void fmt_gib(char *buf, size_t len, uint64_t v)
{
	if (v >= (1ull << 30))
		snprintf(buf, len, "%.2f GiB", (double)v / (1ull << 30));
	else
		snprintf(buf, len, "%.1f MiB", (double)v / (1ull << 20));
}

/* Pick the scale (cfg->scale, or the largest power-of-two fraction of 1
 * that fits) and explain it in res->scale_note. */
static int kvc_pick_scale(struct kvc *k, struct bench_env *env, struct kvc_result *res)
{
	uint64_t cap = env->capacity, ram = phys_ram(), ram_max = ram / 8;
	char capb[32], ramb[32], stb[32], arb[32], why_not[64] = "";
	const char *cap_how = "the target's", *cap_note = "";
	struct kvc_shape s;
	double scale;
	bool cap_ok, ram_ok;

	if (!cap) {
		cap = KVC_ASSUMED_CAPACITY;
		cap_how = "an assumed";
		cap_note = " (the target reports no capacity)";
	}
	res->capacity = cap;
	fmt_gib(capb, sizeof(capb), cap);
	fmt_gib(ramb, sizeof(ramb), ram);
	if (k->cfg->scale > 0) {
		scale = k->cfg->scale;
		kvc_shape_at(k, scale, &s);
		fmt_gib(stb, sizeof(stb), s.stored_bytes);
		fmt_gib(arb, sizeof(arb), s.arena_len);
		if (ram_max && s.arena_len > ram_max) {
			fprintf(stderr,
				"kvring-bench: kvcache: --scale %g: the arena of one request (%s) "
				"is more than 1/8 of this machine's %s of memory\n",
				scale, arb, ramb);
			return -ENOMEM;
		}
		snprintf(res->scale_note, sizeof(res->scale_note),
			 "scale %g as given: %s of unique KV, %s of %s %s capacity%s%s", scale, stb,
			 s.stored_bytes * 2 <= cap ? "within half" : "MORE than half", cap_how,
			 capb, cap_note,
			 s.stored_bytes * 2 <= cap ? "" : "; evictions will show as load errors");
	} else {
		for (scale = 1;; scale /= 2) {
			kvc_shape_at(k, scale, &s);
			cap_ok = s.stored_bytes <= cap / 2;
			ram_ok = !ram_max || s.arena_len <= ram_max;
			if (cap_ok && ram_ok)
				break;
			if (s.nchunk == 1) {
				fmt_gib(stb, sizeof(stb), s.stored_bytes);
				fmt_gib(arb, sizeof(arb), s.arena_len);
				fprintf(
				    stderr,
				    "kvring-bench: kvcache: even one chunk per request does not "
				    "fit: %s of unique KV (%u requests) against half of %s %s "
				    "capacity%s, an arena of %s against 1/8 of %s of memory "
				    "(try fewer --requests or a larger target)\n",
				    stb, cfg_requests(k->cfg), cap_how, capb, cap_note, arb, ramb);
				return -ENOSPC;
			}
			fmt_gib(stb, sizeof(stb), s.stored_bytes);
			fmt_gib(arb, sizeof(arb), s.arena_len);
			snprintf(why_not, sizeof(why_not), "; scale %g would %s", scale,
				 !cap_ok ? "store " : "need an arena of ");
			snprintf(why_not + strlen(why_not), sizeof(why_not) - strlen(why_not), "%s",
				 !cap_ok ? stb : arb);
		}
		fmt_gib(stb, sizeof(stb), s.stored_bytes);
		fmt_gib(arb, sizeof(arb), s.arena_len);
		snprintf(res->scale_note, sizeof(res->scale_note),
			 "scale %g (fit this machine): %s of unique KV within half of %s %s "
			 "capacity%s, an arena of %s within 1/8 of %s of memory%s",
			 scale, stb, cap_how, capb, cap_note, arb, ramb, why_not);
	}
	res->scale = scale;
	k->s = s;
	fprintf(k->msg, "kvcache: %s\n", res->scale_note);
	return 0;
}

/* The unique chunk at position j of request r. */
static uint64_t chunk_id(const struct kvc *k, uint32_t r, uint32_t j)
{
	uint32_t own = k->s.nchunk - k->s.prefix;

	if (j < k->s.prefix)
		return (uint64_t)(r % k->s.groups) * k->s.prefix + j;
	return (uint64_t)k->s.groups * k->s.prefix + (uint64_t)r * own + (j - k->s.prefix);
}

static int kvc_keys(struct kvc *k)
{
	uint32_t requests = cfg_requests(k->cfg), r, j;
	int n;

	k->chunks = calloc(k->s.unique, sizeof(*k->chunks));
	if (!k->chunks)
		return -ENOMEM;
	for (r = 0; r < requests; r++) {
		for (j = 0; j < k->s.nchunk; j++) {
			struct kvc_chunk *c = &k->chunks[chunk_id(k, r, j)];

			if (c->key_len)
				continue;
			if (j < k->s.prefix)
				n = snprintf(c->key, sizeof(c->key), "kvc/%s/g%u/c%u", k->m->name,
					     r % k->s.groups, j);
			else
				n = snprintf(c->key, sizeof(c->key), "kvc/%s/r%u/c%u", k->m->name,
					     r, j);
			if (n < 0 || (size_t)n >= sizeof(c->key))
				return -ENAMETOOLONG;
			c->key_len = (uint32_t)n;
			c->seed = kvc_hash(c->key, c->key_len);
		}
	}
	return 0;
}

static int kvc_arena(struct kvc *k)
{
	int rc;

	rc = bench_arena_make(k->e, k->s.arena_len, k->cfg->cuda, "KV cache arena", &k->ar);
	k->arena = k->ar.p;
	k->dev = k->ar.dev;
	if (rc)
		return rc;
	if (k->dev) {
		k->stage = aligned_alloc(KVC_ALIGN, round_up(k->slice_len, KVC_ALIGN));
		if (!k->stage)
			return -ENOMEM;
	} else {
		memset(k->arena, 0x5a, k->s.arena_len); /* fault every page in */
	}
	return 0;
}

static int kvc_setup(struct kvc *k)
{
	uint32_t n = k->s.nchunk, j, i;
	int rc;

	rc = kvc_keys(k);
	if (rc)
		return rc;
	rc = kvc_arena(k);
	if (rc)
		return rc;
	k->sgl = calloc((size_t)n * k->nsge, sizeof(*k->sgl));
	k->bsgl = calloc(n, sizeof(*k->bsgl));
	k->objs = calloc(n, sizeof(*k->objs));
	k->slot = calloc(n, sizeof(*k->slot));
	k->b.res = calloc(n, sizeof(*k->b.res));
	k->ms = calloc(cfg_requests(k->cfg), sizeof(*k->ms));
	if (!k->sgl || !k->bsgl || !k->objs || !k->slot || !k->b.res || !k->ms)
		return -ENOMEM;
	k->region_stride = (size_t)round_up((uint64_t)n * k->slice_len, KVC_ALIGN);
	k->bounce_off = k->region_stride * k->nsge;
	for (j = 0; j < n; j++) {
		for (i = 0; i < k->nsge; i++) {
			kvr_sge *sge = &k->sgl[(size_t)j * k->nsge + i];

			sge->addr =
			    k->arena + (size_t)i * k->region_stride + (size_t)j * k->slice_len;
			sge->len = k->slice_len;
		}
		if (!k->cfg->copy)
			continue;
		k->bsgl[j].addr =
		    k->arena + k->bounce_off + (size_t)j * round_up(k->chunk_bytes, KVC_ALIGN);
		k->bsgl[j].len = k->chunk_bytes;
	}
	k->b.k = k;
	return 0;
}

static void kvc_teardown(struct kvc *k)
{
	if (k->inflight)
		return; /* the engine still writes into the arena: leave it all */
	bench_arena_release(k->e, &k->ar, "KV cache arena");
	free(k->stage);
	free(k->ms);
	free(k->b.res);
	free(k->slot);
	free(k->objs);
	free(k->bsgl);
	free(k->sgl);
	free(k->chunks);
	free(k);
}

/* Write (or check) slice i of the chunk in arena slot j. */
static int slice_fill(struct kvc *k, uint32_t j, uint32_t i, uint64_t seed)
{
	uint8_t *dst = k->sgl[(size_t)j * k->nsge + i].addr;

	if (!k->dev) {
		pattern_fill(dst, k->slice_len, seed);
		return 0;
	}
	pattern_fill(k->stage, k->slice_len, seed);
	return devmem_copy_from_host(dst, k->stage, k->slice_len);
}

static bool slice_check(struct kvc *k, uint32_t j, uint32_t i, uint64_t seed)
{
	const uint8_t *src = k->sgl[(size_t)j * k->nsge + i].addr;

	if (!k->dev)
		return pattern_check(src, k->slice_len, seed);
	if (devmem_copy_to_host(k->stage, src, k->slice_len))
		return false;
	return pattern_check(k->stage, k->slice_len, seed);
}

/* Overwrite every slot before a load, so that nothing of the store phase or
 * the previous request can pass the check. */
static int kvc_scribble(struct kvc *k, uint32_t r)
{
	size_t n = (size_t)k->s.nchunk * k->nsge, i;
	int rc;

	if (!k->dev) {
		memset(k->arena, 0xa5 ^ (int)(r & 0x7f), k->s.arena_len);
		return 0;
	}
	memset(k->stage, 0xa5 ^ (int)(r & 0x7f), k->slice_len);
	for (i = 0; i < n; i++) {
		rc = devmem_copy_from_host(k->sgl[i].addr, k->stage, k->slice_len);
		if (rc)
			return rc;
	}
	return 0;
}

static void gather(struct kvc *k, uint32_t j)
{
	const kvr_sge *sgl = &k->sgl[(size_t)j * k->nsge];
	uint8_t *dst = k->bsgl[j].addr;
	uint32_t i;

	for (i = 0; i < k->nsge; i++) {
		memcpy(dst, sgl[i].addr, sgl[i].len);
		dst += sgl[i].len;
	}
}

static void scatter(struct kvc *k, uint32_t j)
{
	const kvr_sge *sgl = &k->sgl[(size_t)j * k->nsge];
	const uint8_t *src = k->bsgl[j].addr;
	uint32_t i;

	for (i = 0; i < k->nsge; i++) {
		memcpy(sgl[i].addr, src, sgl[i].len);
		src += sgl[i].len;
	}
}

static void kvc_done(void *ctx, size_t n, const int64_t *res)
{
	struct kvc_batch *b = ctx;
	struct kvc *k = b->k;
	size_t i;

	for (i = 0; i < b->n; i++) {
		b->res[i] = i < n ? res[i] : -EPROTO;
		if (b->scatter && b->res[i] == (int64_t)k->chunk_bytes)
			scatter(k, k->slot[i]);
	}
	b->t_end = bench_now_ns();
	b->done = true;
	k->inflight = false;
}

/* Object i of the batch: the chunk id in arena slot j. */
static void batch_add(struct kvc *k, uint32_t i, uint32_t j, uint64_t id)
{
	kvr_obj *o = &k->objs[i];

	o->key = k->chunks[id].key;
	o->key_len = k->chunks[id].key_len;
	o->sgl = k->cfg->copy ? &k->bsgl[j] : &k->sgl[(size_t)j * k->nsge];
	o->nsge = k->cfg->copy ? 1 : k->nsge;
	k->slot[i] = j;
}

/* Submit the n objects built, wait for them; *ns: submission (including the
 * gather of the copy path) to callback (including its scatter). */
static int kvc_batch_run(struct kvc *k, enum kvr_op op, uint32_t n, uint64_t *ns)
{
	uint64_t t0;
	uint32_t i;
	int rc;

	k->b.n = n;
	k->b.done = false;
	k->b.scatter = k->cfg->copy && op == KVR_OP_GET;
	t0 = bench_now_ns();
	if (k->cfg->copy && op == KVR_OP_PUT)
		for (i = 0; i < n; i++)
			gather(k, k->slot[i]);
	rc = op == KVR_OP_PUT ? kvr_put(k->t, k->objs, n, kvc_done, &k->b)
			      : kvr_get(k->t, k->objs, n, kvc_done, &k->b);
	if (rc) {
		bench_errmsg(k->e, rc,
			     op == KVR_OP_PUT ? "kvcache: kvr_put failed on"
					      : "kvcache: kvr_get failed on",
			     k->cfg->target);
		return rc;
	}
	k->inflight = true;
	while (!k->b.done) {
		rc = kvr_engine_poll(k->e, -1);
		if (rc < 0) {
			bench_errmsg(k->e, rc, "kvcache: kvr_engine_poll failed", NULL);
			return rc;
		}
	}
	*ns = k->b.t_end - t0;
	return 0;
}

/* Count the results of the batch into ph; marks each good object's slot in
 * ok (when not NULL). */
static void batch_count(struct kvc *k, struct kvc_phase *ph, bool *ok)
{
	uint32_t i;

	for (i = 0; i < k->b.n; i++) {
		bool good = k->b.res[i] == (int64_t)k->chunk_bytes;

		if (ok)
			ok[k->slot[i]] = good;
		if (good) {
			ph->chunks++;
			ph->bytes += k->chunk_bytes;
			continue;
		}
		if (!ph->errors)
			ph->first_error = k->b.res[i];
		ph->errors++;
	}
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* Per-request percentiles (nearest rank) and rates of a phase. */
static void phase_finish(struct kvc *k, struct kvc_phase *ph, uint32_t nreq, uint64_t total_ns)
{
	size_t i50, i99; /* nearest rank: ceil(p x n) - 1 */

	ph->seconds = (double)total_ns / 1e9;
	if (ph->seconds > 0) {
		ph->gbps = (double)ph->bytes / ph->seconds / 1e9;
		ph->tokens_per_s = (double)ph->chunks * cfg_chunk_tokens(k->cfg) / ph->seconds;
	}
	if (!nreq)
		return;
	qsort(k->ms, nreq, sizeof(*k->ms), cmp_double);
	i50 = ((size_t)nreq + 1) / 2 - 1;
	i99 = ((size_t)nreq * 99 + 99) / 100 - 1;
	ph->p50_ms = k->ms[i50];
	ph->p99_ms = k->ms[i99];
	ph->max_ms = k->ms[nreq - 1];
}

static int kvc_store(struct kvc *k, struct kvc_phase *ph)
{
	uint32_t requests = cfg_requests(k->cfg), r, j, i, n, nreq = 0;
	uint64_t total = 0, ns, id;
	int rc;

	for (r = 0; r < requests; r++) {
		n = 0;
		for (j = 0; j < k->s.nchunk; j++) {
			id = chunk_id(k, r, j);
			if (k->chunks[id].stored)
				continue;
			for (i = 0; i < k->nsge; i++) {
				rc = slice_fill(k, j, i, slice_seed(k->chunks[id].seed, i));
				if (rc) {
					fprintf(stderr, "kvring-bench: kvcache: cannot write the "
							"pattern into device memory\n");
					return rc;
				}
			}
			batch_add(k, n++, j, id);
			k->chunks[id].stored = true;
		}
		if (!n)
			continue;
		rc = kvc_batch_run(k, KVR_OP_PUT, n, &ns);
		if (rc)
			return rc;
		batch_count(k, ph, NULL);
		k->ms[nreq++] = (double)ns / 1e6;
		total += ns;
	}
	phase_finish(k, ph, nreq, total);
	return 0;
}

static int kvc_load(struct kvc *k, struct kvc_phase *ph, struct kvc_result *res)
{
	uint32_t requests = cfg_requests(k->cfg), r, j, i;
	uint64_t total = 0, ns, id;
	bool *ok;
	int rc = 0;

	ok = calloc(k->s.nchunk, sizeof(*ok));
	if (!ok)
		return -ENOMEM;
	for (r = 0; r < requests && !rc; r++) {
		rc = kvc_scribble(k, r);
		if (rc) {
			fprintf(stderr, "kvring-bench: kvcache: cannot scribble device memory\n");
			break;
		}
		for (j = 0; j < k->s.nchunk; j++)
			batch_add(k, j, j, chunk_id(k, r, j));
		rc = kvc_batch_run(k, KVR_OP_GET, k->s.nchunk, &ns);
		if (rc)
			break;
		batch_count(k, ph, ok);
		k->ms[r] = (double)ns / 1e6;
		total += ns;
		for (j = 0; j < k->s.nchunk; j++) {
			if (!ok[j])
				continue; /* counted as an error already */
			id = chunk_id(k, r, j);
			res->verified++;
			for (i = 0; i < k->nsge; i++) {
				if (!slice_check(k, j, i, slice_seed(k->chunks[id].seed, i))) {
					res->verify_bad++;
					break;
				}
			}
		}
	}
	free(ok);
	if (!rc)
		phase_finish(k, ph, requests, total);
	return rc;
}

int kvcache_run(struct bench_env *env, const struct kvc_cfg *cfg, struct kvc_result *res)
{
	struct kvc *k;
	int rc;

	memset(res, 0, sizeof(*res));
	res->cfg = *cfg;
	res->cfg.model = cfg_model(cfg);
	if (cfg->copy && cfg->cuda) {
		fprintf(stderr, "kvring-bench: kvcache: --copy is the host memcpy path; it does "
				"not apply to --mem cuda\n");
		return -EINVAL;
	}
	k = calloc(1, sizeof(*k));
	if (!k)
		return -ENOMEM;
	k->cfg = &res->cfg;
	k->m = res->cfg.model;
	k->e = env->e;
	k->t = env->t;
	k->msg = cfg->json && !strcmp(cfg->json, "-") ? stderr : stdout;
	k->chunk_bytes = kvc_token_bytes(k->m) * cfg_chunk_tokens(cfg);
	k->nsge = cfg->contiguous ? 1 : 2 * k->m->layers;
	k->slice_len = (size_t)(k->chunk_bytes / k->nsge);
	if (k->nsge > KVR_MAX_SGE) {
		fprintf(stderr, "kvring-bench: kvcache: %s has %u slices per chunk, more than %u\n",
			k->m->name, k->nsge, KVR_MAX_SGE);
		rc = -E2BIG;
		goto out;
	}
	rc = kvc_pick_scale(k, env, res);
	if (rc)
		goto out;
	res->requests = cfg_requests(cfg);
	res->chunk_tokens = cfg_chunk_tokens(cfg);
	res->tokens_per_request = k->s.nchunk * res->chunk_tokens;
	res->chunk_bytes = k->chunk_bytes;
	res->request_bytes = k->chunk_bytes * k->s.nchunk;
	res->unique_chunks = k->s.unique;
	res->stored_bytes = k->s.stored_bytes;
	res->sge_per_chunk = k->nsge;
	res->groups = k->s.groups;
	res->prefix_chunks = k->s.prefix;
	rc = kvc_setup(k);
	if (rc) {
		if (rc == -ENOMEM || rc == -ENAMETOOLONG)
			fprintf(stderr, "kvring-bench: kvcache: setup failed: %s\n",
				kvr_strerror(rc));
		goto out;
	}
	rc = kvc_store(k, &res->store);
	if (!rc)
		rc = kvc_load(k, &res->load, res);
out:
	kvc_teardown(k);
	return rc;
}

/* ------------------------------------------------------------- reports */

static void fmt_err(char *buf, size_t len, int64_t err)
{
	if (err < 0)
		snprintf(buf, len, "%s (%lld)", kvr_strerror((int)err), (long long)err);
	else
		snprintf(buf, len, "%lld bytes instead of the chunk's size", (long long)err);
}

static void summary_line(FILE *f, const char *name, const struct kvc_phase *p)
{
	fprintf(f, "%-6s %8llu %9.3f %8.3f %11.0f %8.2f %8.2f %8.2f %7llu\n", name,
		(unsigned long long)p->chunks, (double)p->bytes / (1ull << 30), p->gbps,
		p->tokens_per_s, p->p50_ms, p->p99_ms, p->max_ms, (unsigned long long)p->errors);
}

void kvcache_summary(FILE *f, const struct kvc_result *r)
{
	const struct kvc_cfg *c = &r->cfg;
	char tok[32], chunk[32], slice[32];
	char err[160];

	fmt_size(tok, sizeof(tok), kvc_token_bytes(c->model));
	fmt_size(chunk, sizeof(chunk), r->chunk_bytes);
	fmt_size(slice, sizeof(slice), r->sge_per_chunk ? r->chunk_bytes / r->sge_per_chunk : 0);
	fprintf(f, "kvcache %s (%s/token) on %s, %s memory, %s, %s: chunk %u tokens = %s",
		c->model->name, tok, c->target, c->cuda ? "cuda" : "host",
		c->copy ? "copy path (bounce + memcpy)" : "zero-copy",
		c->contiguous ? "contiguous" : "layerwise", r->chunk_tokens, chunk);
	if (r->sge_per_chunk > 1)
		fprintf(f, " in %u SGEs of %s", r->sge_per_chunk, slice);
	fprintf(f,
		"\n%u requests x %u tokens (scale %g), %u shared prefix chunks in %u groups: "
		"%llu unique chunks, %.3f GiB stored\n",
		r->requests, r->tokens_per_request, r->scale, r->prefix_chunks, r->groups,
		(unsigned long long)r->unique_chunks, (double)r->stored_bytes / (1ull << 30));
	fprintf(f, "%-6s %8s %9s %8s %11s %8s %8s %8s %7s\n", "phase", "chunks", "GiB", "GB/s",
		"tokens/s", "p50 ms", "p99 ms", "max ms", "errors");
	summary_line(f, "store", &r->store);
	summary_line(f, "load", &r->load);
	fprintf(f, "verified %llu chunks after the load, %llu bad\n",
		(unsigned long long)r->verified, (unsigned long long)r->verify_bad);
	if (r->store.errors) {
		fmt_err(err, sizeof(err), r->store.first_error);
		fprintf(f, "store: first error: %s\n", err);
	}
	if (r->load.errors) {
		fmt_err(err, sizeof(err), r->load.first_error);
		fprintf(f, "load: first error: %s\n", err);
	}
}

static void json_phase(FILE *f, const char *name, const struct kvc_phase *p)
{
	char err[160];

	fprintf(f, "  \"%s\": {\"chunks\": %llu, \"bytes\": %llu, \"seconds\": ", name,
		(unsigned long long)p->chunks, (unsigned long long)p->bytes);
	report_json_num(f, p->seconds);
	fputs(", \"gbps\": ", f);
	report_json_num(f, p->gbps);
	fputs(", \"tokens_per_s\": ", f);
	report_json_num(f, p->tokens_per_s);
	fputs(", \"request_ms\": {\"p50\": ", f);
	report_json_num(f, p->p50_ms);
	fputs(", \"p99\": ", f);
	report_json_num(f, p->p99_ms);
	fputs(", \"max\": ", f);
	report_json_num(f, p->max_ms);
	fprintf(f, "}, \"errors\": %llu", (unsigned long long)p->errors);
	if (p->errors) {
		fmt_err(err, sizeof(err), p->first_error);
		fputs(", \"first_error\": ", f);
		report_json_str(f, err);
	}
	fputs("},\n", f);
}

void kvcache_json(FILE *f, const struct kvc_result *r)
{
	const struct kvc_cfg *c = &r->cfg;

	fputs("{\n  \"workload\": \"kvcache\",\n  \"target\": ", f);
	report_json_str(f, c->target);
	fputs(",\n  \"model\": ", f);
	report_json_str(f, c->model->name);
	fprintf(f, ",\n  \"token_bytes\": %llu,\n", (unsigned long long)kvc_token_bytes(c->model));
	fprintf(f, "  \"chunk_tokens\": %u,\n  \"chunk_bytes\": %llu,\n", r->chunk_tokens,
		(unsigned long long)r->chunk_bytes);
	fprintf(f, "  \"sge_per_chunk\": %u,\n  \"layout\": \"%s\",\n", r->sge_per_chunk,
		c->contiguous ? "contiguous" : "layerwise");
	fprintf(f, "  \"requests\": %u,\n  \"tokens_per_request\": %u,\n", r->requests,
		r->tokens_per_request);
	fprintf(f, "  \"request_bytes\": %llu,\n", (unsigned long long)r->request_bytes);
	fprintf(f, "  \"groups\": %u,\n  \"prefix_chunks\": %u,\n", r->groups, r->prefix_chunks);
	fputs("  \"scale\": ", f);
	report_json_num(f, r->scale);
	fputs(",\n  \"scale_note\": ", f);
	report_json_str(f, r->scale_note);
	fprintf(f, ",\n  \"capacity\": %llu,\n", (unsigned long long)r->capacity);
	fprintf(f, "  \"copy\": %s,\n  \"mem\": \"%s\",\n", c->copy ? "true" : "false",
		c->cuda ? "cuda" : "host");
	fprintf(f, "  \"unique_chunks\": %llu,\n  \"stored_bytes\": %llu,\n",
		(unsigned long long)r->unique_chunks, (unsigned long long)r->stored_bytes);
	json_phase(f, "store", &r->store);
	json_phase(f, "load", &r->load);
	fprintf(f, "  \"verified\": %llu,\n  \"verify_bad\": %llu\n}\n",
		(unsigned long long)r->verified, (unsigned long long)r->verify_bad);
}
