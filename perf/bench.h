/* SPDX-License-Identifier: MIT */
/*
 * kvring-bench: shared definitions of the benchmark's parts.
 *
 *   bench.c     main, options, opening an engine and a store
 *   demo.c      the no-argument quick-start demo (one table)
 *   workload.c  the put/get workload: arena, SGLs, batches in flight, latency
 *   report.c    the one-line summary, the JSON document, the demo table
 *   hist.c      the latency histogram
 *   fio.c       the fio reference run and its JSON output
 */
#ifndef KVR_PERF_BENCH_H
#define KVR_PERF_BENCH_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#include "kvring.h"

/* Defaults of the command line. */
#define BENCH_DEF_TARGET   "mem:1G"
#define BENCH_DEF_SIZE	   (1ull << 20)
#define BENCH_DEF_SGE	   1u
#define BENCH_DEF_BATCH	   16u
#define BENCH_DEF_DEPTH	   4u
#define BENCH_DEF_SECONDS  5.0
#define BENCH_DEMO_SECONDS 1.5 /* per run of the demo: about 45 s in all */

/* Log-linear latency histogram in nanoseconds (hist.c): values below
 * HIST_SUB are exact, above that each power of two has HIST_SUB buckets, so a
 * percentile is off by less than 1/64. Fixed size: nothing is allocated per
 * recorded object. */
#define HIST_SUB_BITS 6
#define HIST_SUB      (1u << HIST_SUB_BITS)
#define HIST_BUCKETS  ((64 - HIST_SUB_BITS + 1) * HIST_SUB)

struct bench_hist {
	uint64_t n, max_ns;
	uint64_t bucket[HIST_BUCKETS];
};

void hist_add(struct bench_hist *h, uint64_t ns, uint64_t count);
double hist_pct(const struct bench_hist *h, double p);

/* What one run does. */
struct bench_cfg {
	const char *target; /* "mem:SIZE", "file:PATH" or "tcp://HOST:PORT[,...]" */
	enum kvr_op op;	    /* KVR_OP_PUT or KVR_OP_GET */
	uint64_t size;	    /* object size in bytes */
	uint32_t sge;	    /* SGEs per object */
	uint32_t batch;	    /* objects per batch */
	uint32_t depth;	    /* batches in flight */
	double seconds;	    /* measured time */
	bool copy;	    /* go through a bounce buffer (the copy path) */
	bool fio;	    /* run the fio reference too (file targets) */
	uint64_t capacity;  /* file store capacity when creating (0: default) */
	const char *json;   /* write the JSON document here (NULL: none) */
	uint64_t keys;	    /* key space (0: derived from the capacity) */
	/* tcp:// targets */
	uint32_t conns;	       /* connections per node (0: the library's) */
	uint32_t replicas;     /* copies of each object (0: 1) */
	const uint8_t *secret; /* from --secret-file (NULL: none) */
	size_t secret_len;
};

/* The reference measurement (fio) of a run. */
struct bench_ref {
	bool ran;    /* fio ran and its output was understood */
	double gbps; /* 1e9 bytes/s */
	double ops_per_s;
	double p50_us, p99_us, p999_us; /* completion latency */
	uint32_t iodepth;
	uint64_t bs;
	char why[200]; /* when !ran: why not */
};

/* Counters of the engine that show which path the bytes took. */
struct bench_engine_delta {
	uint64_t fixed_ios, plain_ios, bounce_bytes, submits, cq_overflows;
};

/* The outcome of one run. */
struct bench_result {
	struct bench_cfg cfg;
	uint64_t keys;	     /* key space: "bench-0" .. "bench-<keys-1>" */
	uint64_t objects;    /* objects completed successfully while measuring */
	uint64_t bytes;	     /* their payload bytes */
	uint64_t errors;     /* objects that failed or came back short */
	int64_t first_error; /* the first bad result (negative errno or a length) */
	int submit_error;    /* a batch call that failed, or 0 */
	double seconds;	     /* first submission to last completion */
	double gbps;	     /* bytes / seconds / 1e9 */
	double ops_per_s;    /* objects / seconds */
	double p50_us, p99_us, p999_us, max_us;
	uint64_t verified;   /* objects whose bytes were checked after the fill */
	uint64_t verify_bad; /* ... and did not match */
	struct bench_engine_delta eng;
	struct bench_ref ref;
};

/* An engine and one open store. */
struct bench_env {
	kvr_engine *e;
	kvr_target *t;
	const char *uri;
	uint64_t capacity; /* the store's capacity in bytes (0: unknown) */
};

/* bench.c */
int bench_env_open(struct bench_env *env, const char *uri, uint64_t capacity, uint32_t objects,
		   const struct bench_cfg *remote);
void bench_env_close(struct bench_env *env);
uint64_t bench_key_space(const struct bench_cfg *cfg, uint64_t capacity);
const char *bench_file_path(const char *uri);
bool bench_is_remote(const char *uri);
void bench_errmsg(kvr_engine *e, int rc, const char *what, const char *obj);

/* workload.c: run cfg against env (fill first for get), fill *res. */
int workload_run(struct bench_env *env, const struct bench_cfg *cfg, struct bench_result *res);

/* fio.c */
bool fio_available(void);
int fio_run(const char *path, enum kvr_op op, uint64_t bs, uint32_t iodepth, double seconds,
	    uint64_t file_size, struct bench_ref *ref);
void fio_cleanup(const char *path);
void fio_kill(void);
int fio_parse(const char *out, enum kvr_op op, struct bench_ref *ref);

/* report.c */
void fmt_size(char *buf, size_t len, uint64_t v);
void report_summary(FILE *f, const struct bench_result *r);
int report_json(const char *path, const struct bench_result *r, size_t n, bool array);

struct demo_row {
	const char *target; /* "mem" or "file" */
	struct bench_result run;
	bool has_copy;
	struct bench_result copy;
};
void report_table(FILE *f, const struct demo_row *rows, size_t n);

/* demo.c */
int demo_run(double seconds, const char *json);

static inline uint64_t bench_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Connections per node of a tcp:// run (0 asks for the library's default,
 * which include/kvring.h documents as 2). */
static inline uint32_t bench_conns(const struct bench_cfg *cfg)
{
	return cfg->conns ? cfg->conns : 2;
}

static inline const char *bench_op_name(enum kvr_op op)
{
	return op == KVR_OP_GET ? "get" : "put";
}

#endif /* KVR_PERF_BENCH_H */
