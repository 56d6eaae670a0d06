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
 *   kvcache.c   the LMCache-shaped KV-cache workload (--workload kvcache)
 *   devmem.c    buffers in CUDA device memory (--mem cuda)
 *   loopback.c  an in-process kvring server on a thread (demo, suite)
 *   suite.c     kvring-bench suite: the matrix, references, kvcache, main
 *   suite_*.c   ... its machine facts, report and JSON, plots (suite.h)
 *   refs.c      the suite's references: iperf3, redis-benchmark, memcpy
 */
#ifndef KVR_PERF_BENCH_H
#define KVR_PERF_BENCH_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>
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
	const char *target;	 /* "mem:SIZE", "file:PATH" or "tcp://HOST:PORT[,...]" */
	enum kvr_op op;		 /* KVR_OP_PUT or KVR_OP_GET */
	uint64_t size;		 /* object size in bytes */
	uint32_t sge;		 /* SGEs per object */
	uint32_t batch;		 /* objects per batch */
	uint32_t depth;		 /* batches in flight */
	double seconds;		 /* measured time */
	bool copy;		 /* go through a bounce buffer (the copy path) */
	bool cuda;		 /* --mem cuda: the objects' buffers are CUDA device memory */
	struct bench_hist *hist; /* when set: receives the measured latencies */
	bool fio;		 /* run the fio reference too (file targets) */
	uint64_t capacity;	 /* file store capacity when creating (0: default) */
	const char *json;	 /* write the JSON document here (NULL: none) */
	uint64_t keys;		 /* key space (0: derived from the capacity) */
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
/* A number above 0 and at most hi (all of s): 0, or -EINVAL. */
int bench_parse_positive(const char *s, double hi, double *out);

/* workload.c: run cfg against env (fill first for get), fill *res. */
int workload_run(struct bench_env *env, const struct bench_cfg *cfg, struct bench_result *res);

/* fio.c */
bool bench_have(const char *prog); /* prog is an executable on $PATH */
/* Start argv (a path, or a name looked up on $PATH) in the background with
 * stdout on out and stderr on err (-1: /dev/null), stdin /dev/null. The
 * child's pid, or -1 (errno set). */
pid_t bench_spawn(char *const argv[], int out, int err);
/* Run argv with stdout and stderr into one pipe; *output gets what it
 * printed (malloc'd). Returns the exit status, or -1 when it did not run.
 * fio_kill() stops it from a signal handler. */
int bench_run_capture(char *const argv[], char **output);
bool fio_available(void);
int fio_run(const char *path, enum kvr_op op, uint64_t bs, uint32_t iodepth, double seconds,
	    uint64_t file_size, struct bench_ref *ref);
void fio_cleanup(const char *path);
void fio_kill(void);
int fio_parse(const char *out, enum kvr_op op, struct bench_ref *ref);

/* report.c */
void fmt_size(char *buf, size_t len, uint64_t v);
void report_summary(FILE *f, const struct bench_result *r);
void report_json_str(FILE *f, const char *s);
void report_json_num(FILE *f, double v); /* null when not finite */
void report_json_result(FILE *f, const struct bench_result *r, const char *ind);
int report_json(const char *path, const struct bench_result *r, size_t n, bool array);
/* A JSON document's file ("-": stdout): NULL after saying why; closing it:
 * 0, or -errno after saying so. */
FILE *report_open(const char *path);
int report_close(FILE *f, const char *path);

struct demo_row {
	const char *target; /* "mem" or "file" */
	struct bench_result run;
	bool has_copy;
	struct bench_result copy;
};
void report_table(FILE *f, const struct demo_row *rows, size_t n);

/* The LMCache-shaped KV-cache workload (kvcache.c). */
struct kvc_model {
	const char *name; /* "llama-3-8b", ... */
	uint32_t layers, kv_heads, head_dim, dtype_bytes;
};
/* bytes of K and V of one token: layers x 2 x kv_heads x head_dim x dtype */
static inline uint64_t kvc_token_bytes(const struct kvc_model *m)
{
	return (uint64_t)m->layers * 2 * m->kv_heads * m->head_dim * m->dtype_bytes;
}
const struct kvc_model *kvc_model_find(const char *name); /* NULL: unknown */
extern const struct kvc_model kvc_models[];		  /* ends with name == NULL */

struct kvc_cfg {
	const char *target; /* any kvring URI */
	const struct kvc_model *model;
	double scale;	       /* tokens per request x scale (0: fit this machine) */
	uint32_t requests;     /* 0: 50 */
	uint32_t chunk_tokens; /* 0: 256 */
	bool contiguous;       /* one buffer per chunk instead of 2 x layers slices */
	bool copy;	       /* stage every chunk through a bounce buffer + memcpy */
	bool cuda;	       /* the KV cache lives in CUDA device memory */
	const char *json;      /* NULL: none */
};

struct kvc_phase {
	double p50_ms, p99_ms, max_ms; /* per request, submission to its last chunk */
	double gbps;		       /* KV bytes / time, all requests */
	double tokens_per_s;
	double seconds;
	uint64_t chunks, bytes, errors;
	int64_t first_error; /* the first bad result (negative errno or a length) */
};

struct kvc_result {
	struct kvc_cfg cfg;
	double scale; /* the scale used */
	uint32_t requests, tokens_per_request, chunk_tokens;
	uint64_t chunk_bytes, request_bytes, unique_chunks, stored_bytes;
	uint32_t sge_per_chunk;
	struct kvc_phase store, load;	/* offload (put) and reload (get) */
	uint64_t verified, verify_bad;	/* chunks checked after the load */
	uint32_t groups, prefix_chunks; /* shared prompts, chunks each shares */
	uint64_t capacity;		/* the capacity the scale was fitted to */
	char scale_note[400];		/* which scale and why (also printed) */
};

/* Chunks of one request at scale (0: the scale-1 upper bound of auto),
 * for sizing the engine before kvcache_run. */
uint32_t kvc_chunks_per_request(const struct kvc_cfg *cfg, double scale);
/* Run the trace against env (open), fill *res. 0 or a negative errno. */
int kvcache_run(struct bench_env *env, const struct kvc_cfg *cfg, struct kvc_result *res);
/* Write res as one JSON object (kvcache.c). */
void kvcache_json(FILE *f, const struct kvc_result *res);
void kvcache_summary(FILE *f, const struct kvc_result *res);

/* CUDA device memory for buffers (devmem.c). Without a CUDA build or a
 * device these return -EOPNOTSUPP / -ENODEV and why says so. */
int devmem_alloc(size_t len, void **out, char *why, size_t why_len);
void devmem_free(void *p);
int devmem_copy_to_host(void *dst, const void *src, size_t len);
int devmem_copy_from_host(void *dst, const void *src, size_t len);
bool devmem_available(void);

/* arena.c: the registered buffers of a workload, host (THP asked for, not
 * yet faulted in) or CUDA device memory; what names it in messages.
 * bench_arena_make: 0 or a negative errno (a->mr NULL when registering
 * failed, the memory still to release). bench_arena_release: false when the
 * memory had to stay (the engine refused to let go of it). */
struct bench_arena {
	uint8_t *p;
	size_t len;
	bool dev;
	kvr_mr *mr;
};
int bench_arena_make(kvr_engine *e, size_t len, bool cuda, const char *what, struct bench_arena *a);
bool bench_arena_release(kvr_engine *e, struct bench_arena *a, const char *what);

/* loopback.c: kvr_serve over a memory pool of pool_bytes on its own engine
 * and thread, on "tcp://127.0.0.1:0" or "rdma://..." (listen). */
int loopback_start(const char *listen, uint64_t pool_bytes, char *uri, size_t uri_len, char *err,
		   size_t err_len);
void loopback_stop(void);

/* refs.c: the suite's references, each run as a child process. */
struct ref_iperf {
	bool ran;
	double gbps; /* 1e9 bytes/s received, all streams */
	double cpu_host_pct, cpu_remote_pct;
	char why[200];
};
struct ref_redis {
	bool ran;
	double ops_per_s, gbps;
	double avg_ms, p50_ms, p99_ms, p999_ms; /* p999: the first bucket at or above */
	char why[200];
};
int ref_iperf3(uint32_t streams, double seconds, struct ref_iperf *r);
int ref_redis_start(char *why, size_t why_len); /* a private redis-server */
void ref_redis_stop(void);
/* redis-benchmark -d size -c clients -P pipeline -n n -t set,get */
int ref_redis_bench(uint64_t size, uint32_t clients, uint32_t pipeline, uint64_t n,
		    struct ref_redis *set, struct ref_redis *get);
int ref_redis_parse(const char *out, struct ref_redis *set, struct ref_redis *get);
/* memcpy between two buffers of `size`, cycling over 64 MiB (GB/s). */
double ref_memcpy_gbps(uint64_t size, double seconds);
void ref_kill(void); /* async-signal-safe: stop the servers started */
/* A kvring-server process (found beside this program) on a free loopback
 * port with a memory pool of mem_bytes; uri gets its tcp:// address. */
int ref_kvring_server_start(uint64_t mem_bytes, char *uri, size_t uri_len, char *why,
			    size_t why_len);
void ref_kvring_server_stop(void);

/* hist.c: the CDF as "latency_us fraction" lines, one per non-empty bucket. */
void hist_cdf(const struct bench_hist *h, FILE *f);

/* rundir.c: a private directory under parent (NULL: $TMPDIR or /var/tmp)
 * named prefix.XXXXXX; its removal (files, then the directory; dir[0] is
 * cleared); handler on SIGINT, SIGTERM and SIGHUP (SIGPIPE ignored); the
 * name of dir's file system. */
int bench_rundir_make(const char *parent, const char *prefix, char *dir, size_t len);
void bench_rundir_remove(char *dir);
void bench_catch_signals(void (*handler)(int));
const char *bench_fs_name(const char *dir);

/* suite.c */
int suite_main(int argc, char **argv);

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

/* The workloads' deterministic byte patterns: splitmix64's finaliser to
 * seed, xorshift64 to stream. */
static inline uint64_t bench_mix64(uint64_t x)
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ull;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

static inline uint64_t bench_xorshift(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static inline const char *bench_op_name(enum kvr_op op)
{
	return op == KVR_OP_GET ? "get" : "put";
}

#endif /* KVR_PERF_BENCH_H */
