/* SPDX-License-Identifier: MIT */
/*
 * kvring-icount: a fixed, repeatable workload for counting the user-space
 * instructions of one put or get, under valgrind --tool=callgrind
 * (perf/icount.sh runs it and keeps the figures in perf/baseline.json).
 *
 *   kvring-icount --target mem:SIZE|file:PATH --op get|put --size N[K|M]
 *                 --ops N [--batch B] [--keys K] [--capacity N]
 *                 [--no-settle]  (poll without waiting for the batch's I/O
 *                                 first: shows the variance settle() removes)
 *   kvring-icount --requests     prints "yes" when built with callgrind's
 *                                client requests, "no" otherwise
 *
 * It creates an engine, registers one buffer of B object slots, opens the
 * store (a file store is formatted afresh), stores every key once, runs one
 * untimed round of the measured operation, and then exactly N operations in
 * batches of B, each batch submitted and polled until its callback ran.
 * Keys ("icount-00000000"...) and bytes are the same on every run.
 *
 * What is counted: with client requests, callgrind is started with
 * --instr-atstart=no and this program switches instrumentation on just
 * before the measured loop and off after it: setup and warm-up run
 * uninstrumented (quicker) and are not counted. Inside the loop, collection is paused while
 * the program waits for the kernel to finish the batch's I/O (see settle()):
 * the count is then the same on every run instead of depending on how many
 * completions each poll round happened to find. Without client requests,
 * icount.sh counts measured_loop() with --toggle-collect instead, the
 * waiting included (a few hundred instructions per batch, nearly constant).
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "engine/engine.h" /* the engine's ring, for settle() only */
#include "kvring.h"

#if defined(__has_include)
#if __has_include(<valgrind/callgrind.h>)
#include <valgrind/callgrind.h>
#define ICOUNT_REQUESTS 1
#endif
#endif
#ifndef ICOUNT_REQUESTS
#define ICOUNT_REQUESTS 0
#define CALLGRIND_START_INSTRUMENTATION
#define CALLGRIND_STOP_INSTRUMENTATION
#define CALLGRIND_ZERO_STATS
#define CALLGRIND_TOGGLE_COLLECT
#endif

#define KEY_LEN 15 /* "icount-" + 8 digits */

struct icount {
	kvr_engine *e;
	kvr_target *t;
	kvr_mr *mr;
	enum kvr_op op;
	uint64_t size;
	uint32_t batch, keys;
	uint8_t *buf;
	size_t buf_len;
	char (*keytab)[24];
	kvr_sge *sge;  /* one per slot */
	kvr_obj *objs; /* keys + batch entries: a batch never wraps */
	uint64_t done, errors;
	bool batch_done;
	bool no_settle; /* --no-settle: let the engine's poll do the waiting */
};

static void usage(FILE *f)
{
	fprintf(f,
		"usage: kvring-icount --target mem:SIZE|file:PATH --op get|put --size N[K|M]\n"
		"                     --ops N [--batch B (16)] [--keys K] [--capacity N (256M)]\n"
		"                     [--no-settle]\n"
		"       kvring-icount --requests\n");
}

static void on_batch(void *ctx, size_t n, const int64_t *res)
{
	struct icount *ic = ctx;

	for (size_t i = 0; i < n; i++)
		if (res[i] != (int64_t)ic->size)
			ic->errors++;
	ic->done += n;
	ic->batch_done = true;
}

/*
 * Wait, outside the count, until the kernel has posted a completion for
 * each of the `want` I/Os the batch submitted, without reaping any: the
 * poll that follows then finds all of them in its first round. Left to the
 * engine's own wait, a poll round returns as soon as one completion is
 * there, and the number of rounds (each a few hundred instructions) would
 * follow the device's timing.
 */
static void settle(struct icount *ic, unsigned want)
{
	struct io_uring_cqe *cqe;

	if (want && !ic->no_settle)
		io_uring_wait_cqe_nr(&ic->e->ring, &cqe, want);
}

static uint64_t ios_issued(struct icount *ic)
{
	struct kvr_stats st = {.size = sizeof(st)};

	kvr_target_stats(ic->t, &st);
	return st.fixed_ios + st.plain_ios;
}

/* One batch of n objects starting at key index k, polled to completion. */
static int run_batch(struct icount *ic, enum kvr_op op, uint32_t k, uint32_t n, bool counted)
{
	uint64_t ios = 0;
	int rc;

	ic->batch_done = false;
	if (counted) {
		CALLGRIND_TOGGLE_COLLECT;
		ios = ios_issued(ic);
		CALLGRIND_TOGGLE_COLLECT;
	}
	rc = kvr_submit(ic->t, op, &ic->objs[k], n, 0, on_batch, ic);
	if (rc)
		return rc;
	if (counted) {
		CALLGRIND_TOGGLE_COLLECT;
		settle(ic, (unsigned)(ios_issued(ic) - ios));
		CALLGRIND_TOGGLE_COLLECT;
	}
	while (!ic->batch_done) {
		rc = kvr_engine_poll(ic->e, -1);
		if (rc < 0)
			return rc;
	}
	return 0;
}

/* n operations over the keys, continuing from key index *k. */
static int run_ops(struct icount *ic, enum kvr_op op, uint64_t n, uint32_t *k, bool counted)
{
	while (n) {
		uint32_t m = n < ic->batch ? (uint32_t)n : ic->batch;
		int rc = run_batch(ic, op, *k, m, counted);

		if (rc)
			return rc;
		n -= m;
		*k = (*k + m) % ic->keys;
	}
	return 0;
}

/* The measured part; a function of its own for --toggle-collect. */
__attribute__((noinline)) int measured_loop(struct icount *ic, uint64_t n, uint32_t *k);
__attribute__((noinline)) int measured_loop(struct icount *ic, uint64_t n, uint32_t *k)
{
	return run_ops(ic, ic->op, n, k, true);
}

static int setup(struct icount *ic, const char *uri, uint64_t capacity)
{
	struct kvr_store_opts so = {.size = sizeof(so), .flags = KVR_STORE_NO_EVICT};
	uint32_t nobj = ic->keys + ic->batch;
	int rc;

	if (!strncmp(uri, "file:", 5)) {
		so.flags |= KVR_STORE_TRUNCATE;
		so.capacity = capacity;
	}
	ic->buf_len = (size_t)ic->size * ic->batch;
	ic->buf =
	    mmap(NULL, ic->buf_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ic->keytab = calloc(ic->keys, sizeof(*ic->keytab));
	ic->sge = calloc(ic->batch, sizeof(*ic->sge));
	ic->objs = calloc(nobj, sizeof(*ic->objs));
	if (ic->buf == MAP_FAILED || !ic->keytab || !ic->sge || !ic->objs)
		return -ENOMEM;
	/* Fixed bytes: any pattern will do, as long as every run has the same. */
	for (size_t i = 0; i < ic->buf_len; i++)
		ic->buf[i] = (uint8_t)(i * 131 + (i >> 12) * 7 + 1);
	for (uint32_t i = 0; i < ic->keys; i++)
		snprintf(ic->keytab[i], sizeof(ic->keytab[i]), "icount-%08u", i % 100000000u);
	for (uint32_t i = 0; i < ic->batch; i++)
		ic->sge[i] = (kvr_sge){ic->buf + (size_t)i * ic->size, ic->size};
	/* Object i: key i mod K in slot i mod B, so B consecutive objects use B
	 * distinct slots wherever a batch starts. */
	for (uint32_t i = 0; i < nobj; i++)
		ic->objs[i] =
		    (kvr_obj){ic->keytab[i % ic->keys], KEY_LEN, &ic->sge[i % ic->batch], 1};

	rc = kvr_engine_create(NULL, &ic->e);
	if (rc)
		return rc;
	rc = kvr_mem_register(ic->e, ic->buf, ic->buf_len, KVR_MEM_HOST, &ic->mr);
	if (rc)
		return rc;
	return kvr_store_open(ic->e, uri, &so, &ic->t);
}

static int parse_u64(const char *s, uint64_t lo, uint64_t hi, uint64_t *out)
{
	if (kvr_parse_size(s, out) || *out < lo || *out > hi)
		return -EINVAL;
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option lopts[] = {
	    {"target", required_argument, NULL, 't'},
	    {"op", required_argument, NULL, 'o'},
	    {"size", required_argument, NULL, 's'},
	    {"ops", required_argument, NULL, 'n'},
	    {"batch", required_argument, NULL, 'b'},
	    {"keys", required_argument, NULL, 'k'},
	    {"capacity", required_argument, NULL, 'c'},
	    {"requests", no_argument, NULL, 'r'},
	    {"no-settle", no_argument, NULL, 'S'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	struct icount ic = {.batch = 16};
	uint64_t ops = 0, keys = 0, capacity = 256ull << 20, v;
	const char *uri = NULL, *opname = NULL;
	uint32_t k = 0;
	int c, rc;

	while ((c = getopt_long(argc, argv, "", lopts, NULL)) != -1) {
		switch (c) {
		case 't':
			uri = optarg;
			break;
		case 'o':
			opname = optarg;
			break;
		case 's':
			if (parse_u64(optarg, 1, 1ull << 30, &ic.size))
				goto bad;
			break;
		case 'n':
			if (parse_u64(optarg, 1, 1ull << 32, &ops))
				goto bad;
			break;
		case 'b':
			if (parse_u64(optarg, 1, 1024, &v))
				goto bad;
			ic.batch = (uint32_t)v;
			break;
		case 'k':
			if (parse_u64(optarg, 1, 1u << 20, &keys))
				goto bad;
			break;
		case 'c':
			if (parse_u64(optarg, 1u << 20, 1ull << 40, &capacity))
				goto bad;
			break;
		case 'S':
			ic.no_settle = true;
			break;
		case 'r':
			puts(ICOUNT_REQUESTS ? "yes" : "no");
			return 0;
		case 'h':
			usage(stdout);
			return 0;
		default:
			goto bad;
		}
	}
	if (optind != argc || !uri || !opname || !ic.size || !ops)
		goto bad;
	if (!strcmp(opname, "get"))
		ic.op = KVR_OP_GET;
	else if (!strcmp(opname, "put"))
		ic.op = KVR_OP_PUT;
	else
		goto bad;
	/* Default key space: 32 MiB of objects, at least one batch, at most
	 * 1024 keys, so every store below 64 MiB of objects holds them all. */
	if (!keys) {
		keys = (32ull << 20) / ic.size;
		keys = keys > 1024 ? 1024 : keys;
	}
	ic.keys = (uint32_t)(keys < ic.batch ? ic.batch : keys);

	rc = setup(&ic, uri, capacity);
	if (rc) {
		fprintf(stderr, "kvring-icount: setup: %s%s%s\n", kvr_strerror(rc),
			ic.e && *kvr_engine_errmsg(ic.e) ? ": " : "",
			ic.e ? kvr_engine_errmsg(ic.e) : "");
		kvr_engine_destroy(ic.e);
		return 1;
	}
	/* Warm-up, not counted: every key stored once, then one round of the
	 * measured operation (first-use paths: malloc arenas, index growth). */
	rc = run_ops(&ic, KVR_OP_PUT, ic.keys, &k, false);
	if (!rc)
		rc = run_ops(&ic, ic.op, ic.keys, &k, false);
	if (!rc && ic.errors)
		rc = -EIO;
	if (!rc) {
		ic.done = 0;
		CALLGRIND_START_INSTRUMENTATION;
		CALLGRIND_ZERO_STATS;
		rc = measured_loop(&ic, ops, &k);
		CALLGRIND_STOP_INSTRUMENTATION;
	}
	if (rc) {
		fprintf(stderr, "kvring-icount: %s\n", kvr_strerror(rc));
		kvr_engine_destroy(ic.e);
		return 1;
	}
	printf("%s %s %llu B: %llu ops in batches of %u over %u keys, %llu errors\n", uri, opname,
	       (unsigned long long)ic.size, (unsigned long long)ic.done, ic.batch, ic.keys,
	       (unsigned long long)ic.errors);
	rc = kvr_target_close(ic.t);
	kvr_engine_destroy(ic.e);
	munmap(ic.buf, ic.buf_len);
	free(ic.keytab);
	free(ic.sge);
	free(ic.objs);
	return rc || ic.errors ? 1 : 0;
bad:
	usage(stderr);
	return 2;
}
