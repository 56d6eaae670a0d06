/* SPDX-License-Identifier: MIT */
/*
 * kvring-bench suite [--quick] --out DIR: every claim of the README in one
 * command. It measures, in one run on this machine:
 *
 *   size    objects of 4 KiB .. 16 MiB, put and get, zero-copy and --copy,
 *           on every target (mem, file, tcp to a loopback kvring server,
 *           rdma when a device exists, and device memory when a GPU does)
 *   sge     1 MiB objects in 1, 8 and 64 slices
 *   batch   4 KiB objects in batches of 1, 16 and 256
 *   qd1     one object in flight, 4 KiB and 1 MiB: latency percentiles
 *   kvcache the LMCache-shaped workload (kvcache.c), zero-copy and --copy
 *
 * and beside them the references: fio (file, same block size and depth,
 * and at queue depth 1), iperf3 -P 2 and redis-benchmark (tcp), memcpy
 * (the copy path's ceiling). It writes DIR/suite.json (every row and the
 * machine's facts), DIR/report.md (tables: kvring, reference, ratio, the
 * goals) and DIR/plots/ (gnuplot: PNG and SVG, with their data and
 * scripts). --quick runs a smaller matrix (under 2 minutes on 2 cores);
 * the full one stays under 15.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <liburing.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/utsname.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "bench.h"

enum { T_MEM, T_FILE, T_TCP, T_RDMA, NTARGET };
static const char *const tname[NTARGET] = {"mem", "file", "tcp", "rdma"};

enum slice { S_SIZE, S_SGE, S_BATCH, S_QD1, NSLICE };
static const char *const sname[NSLICE] = {"size", "sge", "batch", "qd1"};

#define MAX_SIZES  6
#define MAX_SPECS  512
#define POOL_BYTES (2ull << 30) /* mem store, file store, loopback server */
#define KVC_BYTES  (6ull << 30) /* the same for the kvcache workload */
#define INFLIGHT   (32ull << 20)

struct spec {
	enum slice slice;
	int tgt;
	enum kvr_op op;
	uint64_t size;
	uint32_t sge, batch, depth;
	bool copy, cuda;
};

struct row {
	struct spec s;
	int rc; /* workload_run's */
	struct bench_result r;
	struct bench_hist *hist; /* qd1 rows */
};

/* A reference figure for a (tool, op, size, depth) shape. */
struct ref {
	const char *tool; /* "fio", "redis", "memcpy" */
	enum kvr_op op;
	uint64_t size;
	uint32_t depth; /* fio iodepth, redis pipeline x clients; 1 for QD1 */
	bool qd1;
	bool ran;
	double gbps, ops_per_s, p50_us, p99_us, p999_us;
	char why[200];
};

static struct {
	bool quick;
	const char *out;
	const char *dir;
	const char *rdma;
	const char *targets;
	double seconds;
	bool refs;
	bool kvcache;
	bool cuda;

	char work[PATH_MAX - 64]; /* temporary directory for the file store, fio */
	char store[PATH_MAX];	  /* "file:" + path */
	char fio[PATH_MAX];
	char uri[NTARGET][PATH_MAX];
	char why[NTARGET][PATH_MAX + 512]; /* a target that could not run */
	bool up[NTARGET];
	bool tcp_process;  /* tcp: a kvring-server process (else in-process) */
	char tcp_how[512]; /* ... said in words */

	struct spec specs[MAX_SPECS];
	struct row rows[MAX_SPECS];
	size_t nspec;
	struct ref refs_v[128];
	size_t nref;
	struct ref_iperf iperf;
	char redis_why[200];
	struct kvc_result kvc[NTARGET][3]; /* zero-copy, --copy, device memory */
	int kvc_rc[NTARGET][3];
	bool kvc_ran[NTARGET][3];

	uint64_t t0;
	size_t done, nextra; /* runs done; references and kvcache runs planned */
	double est_total;    /* seconds, for the ETA */
	bool tty;
} S;

static const uint64_t sizes_full[MAX_SIZES] = {4096,	   64 << 10,   256 << 10,
					       1ull << 20, 4ull << 20, 16ull << 20};
static const uint64_t sizes_quick[] = {4096, 256 << 10, 4ull << 20};

/* ------------------------------------------------------------- the matrix */

static uint32_t batch_for(uint64_t size, uint32_t depth)
{
	uint64_t b = INFLIGHT / (size * depth);

	return b < 1 ? 1 : b > 64 ? 64 : (uint32_t)b;
}

static void add_spec(enum slice sl, int tgt, enum kvr_op op, uint64_t size, uint32_t sge,
		     uint32_t batch, uint32_t depth, bool copy, bool cuda)
{
	struct spec *s;

	if (S.nspec == MAX_SPECS)
		return;
	s = &S.specs[S.nspec++];
	*s = (struct spec){sl, tgt, op, size, sge, batch, depth, copy, cuda};
}

static void build_matrix(void)
{
	const uint64_t *sizes = S.quick ? sizes_quick : sizes_full;
	size_t nsize = S.quick ? sizeof(sizes_quick) / sizeof(sizes_quick[0]) : MAX_SIZES;
	static const uint32_t sges[] = {1, 8, 64}, batches[] = {1, 16, 256};
	static const uint64_t qd1[] = {4096, 1ull << 20};
	size_t i;
	int t, op, c;

	for (t = 0; t < NTARGET; t++) {
		if (!S.up[t])
			continue;
		for (i = 0; i < nsize; i++)
			for (op = 0; op < 2; op++)
				for (c = 0; c < 2; c++)
					add_spec(S_SIZE, t, op ? KVR_OP_GET : KVR_OP_PUT, sizes[i],
						 1, batch_for(sizes[i], 4), 4, c, false);
		for (i = 0; i < 3; i++)
			for (op = 0; op < 2; op++)
				add_spec(S_SGE, t, op ? KVR_OP_GET : KVR_OP_PUT, 1ull << 20,
					 sges[i], 16, 4, false, false);
		for (i = 0; i < 3; i++)
			for (op = 0; op < 2; op++)
				add_spec(S_BATCH, t, op ? KVR_OP_GET : KVR_OP_PUT, 4096, 1,
					 batches[i], 4, false, false);
		for (i = 0; i < 2; i++)
			for (op = 0; op < 2; op++)
				add_spec(S_QD1, t, op ? KVR_OP_GET : KVR_OP_PUT, qd1[i], 1, 1, 1,
					 false, false);
		if (S.cuda && t != T_RDMA)
			for (i = 0; i < nsize; i++)
				for (op = 0; op < 2; op++)
					add_spec(S_SIZE, t, op ? KVR_OP_GET : KVR_OP_PUT, sizes[i],
						 1, batch_for(sizes[i], 4), 4, false, true);
	}
}

/* ------------------------------------------------------------ the progress */

static double elapsed(void)
{
	return (double)(bench_now_ns() - S.t0) / 1e9;
}

static void progress(const char *what, const char *result)
{
	double t = elapsed(), left = S.est_total - t;

	if (left < 0)
		left = 0;
	fprintf(stderr, "%s[%3zu/%zu %3.0f s, ~%3.0f s left] %-34s %s%s", S.tty ? "\r\033[K" : "",
		S.done, S.nspec + S.nextra, t, left, what, result, S.tty ? "" : "\n");
}

static void spec_name(const struct spec *s, char *buf, size_t len)
{
	char size[16];

	fmt_size(size, sizeof(size), s->size);
	snprintf(buf, len, "%s %s %s x%u b%u d%u%s%s", tname[s->tgt], bench_op_name(s->op), size,
		 s->sge, s->batch, s->depth, s->copy ? " copy" : "", s->cuda ? " gpu" : "");
}

/* Keys: enough that gets do not all hit one cached object, few enough that
 * the fill before a get stays short. */
static uint64_t spec_keys(const struct spec *s)
{
	uint64_t inflight = (uint64_t)s->batch * s->depth;
	uint64_t budget = (S.quick ? 256ull : 512ull) << 20, keys = budget / s->size;

	if (keys > inflight * 8)
		keys = inflight * 8;
	if (keys < inflight * 2)
		keys = inflight * 2;
	return keys;
}

static double spec_seconds(const struct spec *s)
{
	double base = S.seconds > 0 ? S.seconds : S.quick ? 0.3 : 1.5;

	/* large objects at depth: a few rounds only in a short run, so longer */
	if (s->slice == S_QD1 || s->size >= (1u << 20))
		return base * 2;
	return base;
}

static void run_spec(struct bench_env *env, size_t i)
{
	struct spec *s = &S.specs[i];
	struct row *row = &S.rows[i];
	struct bench_cfg cfg;
	char name[96], res[96];

	spec_name(s, name, sizeof(name));
	memset(&cfg, 0, sizeof(cfg));
	cfg.target = env->uri;
	cfg.op = s->op;
	cfg.size = s->size;
	cfg.sge = s->sge;
	cfg.batch = s->batch;
	cfg.depth = s->depth;
	cfg.seconds = spec_seconds(s);
	cfg.copy = s->copy;
	cfg.cuda = s->cuda;
	cfg.keys = spec_keys(s);
	row->s = *s;
	if (s->slice == S_QD1) {
		row->hist = calloc(1, sizeof(*row->hist));
		cfg.hist = row->hist;
	}
	progress(name, "...");
	row->rc = workload_run(env, &cfg, &row->r);
	S.done++;
	if (row->rc)
		snprintf(res, sizeof(res), "failed: %s", kvr_strerror(row->rc));
	else if (s->size <= 4096)
		snprintf(res, sizeof(res), "%.0f kops/s, p50 %.1f us%s", row->r.ops_per_s / 1e3,
			 row->r.p50_us, row->r.errors ? " (errors)" : "");
	else
		snprintf(res, sizeof(res), "%.2f GB/s, p50 %.1f us%s", row->r.gbps, row->r.p50_us,
			 row->r.errors ? " (errors)" : "");
	progress(name, res);
}

/* ------------------------------------------------------------ the targets */

static bool rdma_devices(char *names, size_t len)
{
	DIR *d = opendir("/sys/class/infiniband");
	struct dirent *de;
	size_t n = 0;

	names[0] = '\0';
	if (!d)
		return false;
	while ((de = readdir(d)))
		if (de->d_name[0] != '.' && n + strlen(de->d_name) + 2 < len)
			n += (size_t)snprintf(names + n, len - n, "%s%s", n ? "," : "", de->d_name);
	closedir(d);
	return n > 0;
}

static void tcp_server_stop(void)
{
	if (S.tcp_process)
		ref_kvring_server_stop();
	else
		loopback_stop();
}

static int open_target(int t, uint64_t capacity, struct bench_env *env)
{
	uint64_t cap = t == T_FILE ? capacity : 0;
	char err[256];
	int rc;

	if (t == T_TCP) {
		/* a kvring-server process, as deployed (and as redis runs); else
		 * kvr_serve on a thread of this process */
		S.tcp_process = ref_kvring_server_start(capacity, S.uri[t], sizeof(S.uri[t]), err,
							sizeof(err)) == 0;
		if (!S.tcp_process) {
			snprintf(S.tcp_how, sizeof(S.tcp_how),
				 "kvr_serve on a thread of kvring-bench (%s)", err);
			rc = loopback_start("tcp://127.0.0.1:0", capacity, S.uri[t],
					    sizeof(S.uri[t]), err, sizeof(err));
			if (rc) {
				snprintf(S.why[t], sizeof(S.why[t]), "loopback server: %s", err);
				return rc;
			}
		} else if (!S.tcp_how[0]) { /* the matrix's; kvcache's has a larger pool */
			snprintf(S.tcp_how, sizeof(S.tcp_how),
				 "a kvring-server process (--memory %llu, one thread)",
				 (unsigned long long)capacity);
		}
	}
	if (t == T_MEM)
		snprintf(S.uri[t], sizeof(S.uri[t]), "mem:%llu", (unsigned long long)capacity);
	rc = bench_env_open(env, S.uri[t], cap, 256, NULL);
	if (rc) {
		char uri[PATH_MAX];

		memcpy(uri, S.uri[t], sizeof(uri));
		snprintf(S.why[t], sizeof(S.why[t]), "cannot open %s: %s", uri, kvr_strerror(rc));
		if (t == T_TCP)
			tcp_server_stop();
	}
	return rc;
}

static void close_target(int t, struct bench_env *env)
{
	bench_env_close(env);
	if (t == T_TCP)
		tcp_server_stop();
	if (t == T_FILE)
		unlink(S.store + 5);
}

static void fio_ref_for(const struct spec *s);

static void run_matrix(void)
{
	struct bench_env env;
	size_t i;
	int t;

	for (t = 0; t < NTARGET; t++) {
		bool any = false;

		for (i = 0; i < S.nspec; i++)
			any |= S.specs[i].tgt == t;
		if (!any)
			continue;
		if (open_target(t, POOL_BYTES, &env)) {
			fprintf(stderr, "%skvring-bench suite: %s: %s\n", S.tty ? "\n" : "",
				tname[t], S.why[t]);
			for (i = 0; i < S.nspec; i++)
				if (S.specs[i].tgt == t) {
					S.rows[i].s = S.specs[i];
					S.rows[i].rc = -ENODEV;
					S.done++;
				}
			continue;
		}
		for (i = 0; i < S.nspec; i++)
			if (S.specs[i].tgt == t) {
				run_spec(&env, i);
				fio_ref_for(&S.specs[i]);
			}
		close_target(t, &env);
		if (t == T_FILE)
			fio_cleanup(S.fio);
	}
	if (S.tty)
		fputc('\n', stderr);
}

/* ------------------------------------------------------------ references */

static struct ref *new_ref(const char *tool, enum kvr_op op, uint64_t size, uint32_t depth,
			   bool qd1)
{
	struct ref *r;

	if (S.nref == sizeof(S.refs_v) / sizeof(S.refs_v[0]))
		return NULL;
	r = &S.refs_v[S.nref++];
	memset(r, 0, sizeof(*r));
	r->tool = tool;
	r->op = op;
	r->size = size;
	r->depth = depth;
	r->qd1 = qd1;
	return r;
}

static const struct ref *find_ref(const char *tool, enum kvr_op op, uint64_t size, bool qd1)
{
	size_t i;

	for (i = 0; i < S.nref; i++)
		if (!strcmp(S.refs_v[i].tool, tool) && S.refs_v[i].op == op &&
		    S.refs_v[i].size == size && S.refs_v[i].qd1 == qd1)
			return &S.refs_v[i];
	return NULL;
}

static void ref_progress(const char *what, const struct ref *r)
{
	char res[256];

	S.done++;
	if (!r->ran)
		snprintf(res, sizeof(res), "%s", r->why);
	else
		snprintf(res, sizeof(res), "%.2f GB/s, p50 %.1f us", r->gbps, r->p50_us);
	progress(what, res);
}

/* fio with the shape of a file row, run right after it so that both see the
 * device in the same state (a virtual disk's speed drifts within minutes). */
static void fio_ref_for(const struct spec *s)
{
	uint64_t fsize = (S.quick ? 256ull : 512ull) << 20;
	bool qd1 = s->slice == S_QD1;
	struct bench_ref br;
	char name[64], size[16];
	struct ref *r;

	if (!S.refs || s->tgt != T_FILE || s->copy || s->cuda || (s->slice != S_SIZE && !qd1) ||
	    find_ref("fio", s->op, s->size, qd1))
		return;
	r = new_ref("fio", s->op, s->size, s->batch * s->depth, qd1);
	if (!r)
		return;
	fmt_size(size, sizeof(size), s->size);
	snprintf(name, sizeof(name), "fio %s %s iodepth %u", bench_op_name(s->op), size, r->depth);
	if (!fio_available()) {
		snprintf(r->why, sizeof(r->why), "fio is not installed");
		ref_progress(name, r);
		return;
	}
	progress(name, "...");
	fio_run(S.fio, s->op, s->size, r->depth, spec_seconds(s),
		fsize > s->size * r->depth ? fsize : s->size * r->depth, &br);
	r->ran = br.ran;
	r->gbps = br.gbps;
	r->ops_per_s = br.ops_per_s;
	r->p50_us = br.p50_us;
	r->p99_us = br.p99_us;
	r->p999_us = br.p999_us;
	snprintf(r->why, sizeof(r->why), "%s", br.why);
	ref_progress(name, r);
}

static void set_redis_ref(struct ref *r, const struct ref_redis *rr)
{
	if (!r)
		return;
	r->ran = rr->ran;
	r->gbps = rr->gbps;
	r->ops_per_s = rr->ops_per_s;
	r->p50_us = rr->p50_ms * 1000;
	r->p99_us = rr->p99_ms * 1000;
	r->p999_us = rr->p999_ms >= 0 ? rr->p999_ms * 1000 : -1;
	snprintf(r->why, sizeof(r->why), "%s", rr->why);
}

/* redis-benchmark at one size: -c 2 (-P 16 for 4 KiB, as kvring batches). */
static void redis_at(uint64_t size, bool qd1, double seconds)
{
	uint32_t clients = qd1 ? 1 : 2, pipeline = !qd1 && size <= 4096 ? 16 : 1;
	double per_s = size <= 4096 ? (qd1 ? 15000 : 150000) : 1.2e9 / (double)size;
	uint64_t n = (uint64_t)(per_s * seconds);
	struct ref_redis set, get;
	char name[64], sz[16];

	if (n < 100)
		n = 100;
	fmt_size(sz, sizeof(sz), size);
	snprintf(name, sizeof(name), "redis-benchmark %s -c %u -P %u", sz, clients, pipeline);
	progress(name, "...");
	ref_redis_bench(size, clients, pipeline, n, &set, &get);
	set_redis_ref(new_ref("redis", KVR_OP_PUT, size, clients * pipeline, qd1), &set);
	set_redis_ref(new_ref("redis", KVR_OP_GET, size, clients * pipeline, qd1), &get);
	ref_progress(name, &S.refs_v[S.nref - 1]);
}

static void run_refs(void)
{
	const uint64_t *sizes = S.quick ? sizes_quick : sizes_full;
	size_t nsize = S.quick ? sizeof(sizes_quick) / sizeof(sizes_quick[0]) : MAX_SIZES, i;
	double secs = S.seconds > 0 ? S.seconds : S.quick ? 0.3 : 1.5;
	struct ref *r;

	for (i = 0; i < nsize; i++) {
		r = new_ref("memcpy", KVR_OP_PUT, sizes[i], 1, false);
		if (!r)
			break;
		r->gbps = ref_memcpy_gbps(sizes[i], secs / 2);
		r->ran = r->gbps > 0;
		r->ops_per_s = r->gbps * 1e9 / (double)sizes[i];
		ref_progress("memcpy", r);
	}
	if (!S.up[T_TCP])
		return;
	progress("iperf3 -P 2", "...");
	ref_iperf3(2, S.quick ? 1 : 3, &S.iperf);
	S.done++;
	if (S.iperf.ran) {
		char res[64];

		snprintf(res, sizeof(res), "%.2f GB/s", S.iperf.gbps);
		progress("iperf3 -P 2", res);
	} else {
		progress("iperf3 -P 2", S.iperf.why);
	}
	if (ref_redis_start(S.redis_why, sizeof(S.redis_why))) {
		progress("redis", S.redis_why);
		return;
	}
	for (i = 0; i < nsize; i++)
		redis_at(sizes[i], false, secs);
	redis_at(4096, true, secs * 2);
	redis_at(1ull << 20, true, secs * 2);
	ref_redis_stop();
	if (S.tty)
		fputc('\n', stderr);
}

/* ------------------------------------------------------------- kvcache */

static void run_kvcache(void)
{
	const struct kvc_model *m = kvc_model_find("llama-3-8b");
	struct bench_env env;
	struct kvc_cfg kc;
	char name[64], res[128];
	int t, c;

	for (t = 0; t < T_RDMA; t++) {
		if (!S.up[t])
			continue;
		if (open_target(t, KVC_BYTES, &env)) {
			fprintf(stderr, "%skvring-bench suite: kvcache on %s: %s\n",
				S.tty ? "\n" : "", tname[t], S.why[t]);
			continue;
		}
		for (c = 0; c < (S.cuda ? 3 : 2); c++) {
			memset(&kc, 0, sizeof(kc));
			kc.target = env.uri;
			kc.model = m;
			kc.scale = 0.125;
			kc.requests = S.quick ? 10 : 50;
			kc.copy = c == 1;
			kc.cuda = c == 2;
			snprintf(name, sizeof(name), "kvcache %s %s%s", tname[t], m->name,
				 c == 1	  ? " copy"
				 : c == 2 ? " gpu"
					  : "");
			progress(name, "...");
			S.kvc_rc[t][c] = kvcache_run(&env, &kc, &S.kvc[t][c]);
			S.kvc_ran[t][c] = true;
			S.done++;
			if (S.kvc_rc[t][c])
				snprintf(res, sizeof(res), "failed: %s",
					 kvr_strerror(S.kvc_rc[t][c]));
			else
				snprintf(res, sizeof(res), "load %.2f GB/s, p50 %.1f ms",
					 S.kvc[t][c].load.gbps, S.kvc[t][c].load.p50_ms);
			progress(name, res);
		}
		close_target(t, &env);
	}
	if (S.tty)
		fputc('\n', stderr);
}

/* --------------------------------------------------------- machine facts */

struct facts {
	char kernel[256], cpu[128], fs[64], blockdev[512], rdma[256], gpu[128];
	long cores;
	uint64_t mem_bytes;
	char uring_features[512], uring_ops[256];
	char tool[5][96]; /* fio, iperf3, redis-server, gnuplot, valgrind */
};

static const char *const tool_name[5] = {"fio", "iperf3", "redis-server", "gnuplot", "valgrind"};

static void first_line(const char *s, char *buf, size_t len)
{
	size_t n = 0;

	buf[0] = '\0';
	if (!s)
		return;
	while (s[n] && s[n] != '\n')
		n++;
	snprintf(buf, len, "%.*s", (int)n, s);
}

static void read_line(const char *path, const char *prefix, char *buf, size_t len)
{
	char line[512];
	FILE *f = fopen(path, "r");

	buf[0] = '\0';
	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		const char *p = line;

		if (prefix) {
			if (strncmp(line, prefix, strlen(prefix)))
				continue;
			p = strchr(line, ':');
			p = p ? p + 1 : line;
			while (*p == ' ' || *p == '\t')
				p++;
		}
		first_line(p, buf, len);
		break;
	}
	fclose(f);
}

static void uring_facts(struct facts *fx)
{
	static const struct {
		unsigned bit;
		const char *name;
	} feats[] = {
	    {IORING_FEAT_SINGLE_MMAP, "single_mmap"},
	    {IORING_FEAT_NODROP, "nodrop"},
	    {IORING_FEAT_SUBMIT_STABLE, "submit_stable"},
	    {IORING_FEAT_FAST_POLL, "fast_poll"},
	    {IORING_FEAT_EXT_ARG, "ext_arg"},
	    {IORING_FEAT_NATIVE_WORKERS, "native_workers"},
	    {IORING_FEAT_RSRC_TAGS, "rsrc_tags"},
	    {IORING_FEAT_CQE_SKIP, "cqe_skip"},
	    {IORING_FEAT_LINKED_FILE, "linked_file"},
	};
	static const struct {
		int op;
		const char *name;
	} ops[] = {
	    {IORING_OP_READ_FIXED, "read_fixed"}, {IORING_OP_WRITE_FIXED, "write_fixed"},
	    {IORING_OP_SEND_ZC, "send_zc"},	  {IORING_OP_SENDMSG_ZC, "sendmsg_zc"},
	    {IORING_OP_RECVMSG, "recvmsg"},	  {IORING_OP_ACCEPT, "accept"},
	    {IORING_OP_POLL_ADD, "poll_add"},
	};
	struct io_uring_params p;
	struct io_uring_probe *probe;
	struct io_uring ring;
	size_t i, n = 0;

	memset(&p, 0, sizeof(p));
	snprintf(fx->uring_features, sizeof(fx->uring_features), "io_uring unavailable");
	if (io_uring_queue_init_params(4, &ring, &p))
		return;
	fx->uring_features[0] = '\0';
	for (i = 0; i < sizeof(feats) / sizeof(feats[0]); i++)
		if (p.features & feats[i].bit)
			n +=
			    (size_t)snprintf(fx->uring_features + n, sizeof(fx->uring_features) - n,
					     "%s%s", n ? "," : "", feats[i].name);
	probe = io_uring_get_probe_ring(&ring);
	n = 0;
	for (i = 0; probe && i < sizeof(ops) / sizeof(ops[0]); i++)
		if (io_uring_opcode_supported(probe, ops[i].op))
			n += (size_t)snprintf(fx->uring_ops + n, sizeof(fx->uring_ops) - n, "%s%s",
					      n ? "," : "", ops[i].name);
	if (probe)
		io_uring_free_probe(probe);
	io_uring_queue_exit(&ring);
}

static void block_facts(const char *dir, struct facts *fx)
{
	char path[256], link[256], model[128];
	struct stat st;
	ssize_t n;
	char *base;

	snprintf(fx->fs, sizeof(fx->fs), "%s", bench_fs_name(dir));
	if (stat(dir, &st))
		return;
	snprintf(path, sizeof(path), "/sys/dev/block/%u:%u", major(st.st_dev), minor(st.st_dev));
	n = readlink(path, link, sizeof(link) - 1);
	if (n <= 0)
		return;
	link[n] = '\0';
	base = strrchr(link, '/');
	base = base ? base + 1 : link;
	snprintf(path, sizeof(path), "/sys/dev/block/%u:%u/device/model", major(st.st_dev),
		 minor(st.st_dev));
	read_line(path, NULL, model, sizeof(model));
	if (!model[0]) { /* a partition: the disk's model */
		snprintf(path, sizeof(path), "/sys/dev/block/%u:%u/../device/model",
			 major(st.st_dev), minor(st.st_dev));
		read_line(path, NULL, model, sizeof(model));
	}
	snprintf(fx->blockdev, sizeof(fx->blockdev), "%s%s%s", base, model[0] ? " " : "", model);
}

static void collect_facts(struct facts *fx)
{
	struct utsname u;
	char *out, *argv[3], buf[96];
	int i;

	memset(fx, 0, sizeof(*fx));
	if (!uname(&u))
		snprintf(fx->kernel, sizeof(fx->kernel), "%s %s %s", u.sysname, u.release,
			 u.machine);
	read_line("/proc/cpuinfo", "model name", fx->cpu, sizeof(fx->cpu));
	fx->cores = sysconf(_SC_NPROCESSORS_ONLN);
	fx->mem_bytes = (uint64_t)sysconf(_SC_PHYS_PAGES) * (uint64_t)sysconf(_SC_PAGESIZE);
	uring_facts(fx);
	block_facts(S.work, fx);
	if (!rdma_devices(fx->rdma, sizeof(fx->rdma)))
		snprintf(fx->rdma, sizeof(fx->rdma), "none");
	snprintf(fx->gpu, sizeof(fx->gpu), "%s", S.cuda ? "CUDA device 0" : "none");
	for (i = 0; i < 5; i++) {
		snprintf(fx->tool[i], sizeof(fx->tool[i]), "not installed");
		if (!bench_have(tool_name[i]))
			continue;
		argv[0] = (char *)tool_name[i];
		argv[1] = i == 3 ? "-V" : "--version";
		argv[2] = NULL;
		if (bench_run_capture(argv, &out) == 0) {
			first_line(out, buf, sizeof(buf));
			snprintf(fx->tool[i], sizeof(fx->tool[i]), "%s", buf);
		}
		free(out);
	}
}

/* --------------------------------------------------------------- outputs */

static const struct row *find_row(enum slice sl, int t, enum kvr_op op, uint64_t size, uint32_t sge,
				  uint32_t batch, bool copy, bool cuda)
{
	size_t i;

	for (i = 0; i < S.nspec; i++) {
		const struct spec *s = &S.rows[i].s;

		if (s->slice == sl && s->tgt == t && s->op == op && s->size == size &&
		    (!sge || s->sge == sge) && (!batch || s->batch == batch) && s->copy == copy &&
		    s->cuda == cuda)
			return S.rows[i].rc || S.rows[i].r.errors ? NULL : &S.rows[i];
	}
	return NULL;
}

/* A cell: the value, or "-" when the run is missing. */
static void cell(char *buf, size_t len, bool have, double v, int prec)
{
	if (!have || v != v)
		snprintf(buf, len, "-");
	else
		snprintf(buf, len, "%.*f", prec, v);
}

static const struct ref *size_ref(int t, enum kvr_op op, uint64_t size, const char **tool)
{
	*tool = t == T_FILE ? "fio" : t == T_MEM ? "memcpy" : t == T_TCP ? "redis" : NULL;
	if (!*tool)
		return NULL;
	if (t == T_MEM)
		op = KVR_OP_PUT; /* memcpy has one figure per size */
	return find_ref(*tool, op, size, false);
}

static void md_size_tables(FILE *f, const uint64_t *sizes, size_t nsize, bool cuda)
{
	char c[8][32], sz[16];
	const char *tool;
	size_t i;
	int t, op;

	for (t = 0; t < NTARGET; t++) {
		if (!S.up[t] || (cuda && t == T_RDMA))
			continue;
		fprintf(f, "\n### %s%s\n\n", tname[t], cuda ? " (device memory)" : "");
		if (!cuda && t == T_TCP)
			fprintf(f, "Server: %s, 2 connections, loopback.\n\n", S.tcp_how);
		if (!cuda && t == T_TCP && S.iperf.ran)
			fprintf(f, "iperf3 -P 2 on loopback: %.2f GB/s (the wire's ceiling).\n\n",
				S.iperf.gbps);
		fprintf(f, "| size | op | kvring GB/s | kops/s | --copy GB/s | zero-copy / copy | "
			   "reference | ref GB/s | kvring / ref |\n");
		fprintf(f, "|---:|---|---:|---:|---:|---:|---|---:|---:|\n");
		for (i = 0; i < nsize; i++)
			for (op = 0; op < 2; op++) {
				enum kvr_op o = op ? KVR_OP_GET : KVR_OP_PUT;
				const struct row *z =
				    find_row(S_SIZE, t, o, sizes[i], 1, 0, false, cuda);
				const struct row *cp =
				    cuda ? NULL
					 : find_row(S_SIZE, t, o, sizes[i], 1, 0, true, false);
				const struct ref *r = cuda ? NULL : size_ref(t, o, sizes[i], &tool);

				fmt_size(sz, sizeof(sz), sizes[i]);
				cell(c[0], 32, z, z ? z->r.gbps : 0, 2);
				cell(c[1], 32, z, z ? z->r.ops_per_s / 1e3 : 0, 1);
				cell(c[2], 32, cp, cp ? cp->r.gbps : 0, 2);
				cell(c[3], 32, z && cp && cp->r.gbps > 0,
				     z && cp && cp->r.gbps > 0 ? z->r.gbps / cp->r.gbps : 0, 2);
				cell(c[4], 32, r && r->ran, r ? r->gbps : 0, 2);
				cell(c[5], 32, z && r && r->ran && r->gbps > 0,
				     z && r && r->gbps > 0 ? z->r.gbps / r->gbps : 0, 2);
				fprintf(f, "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", sz,
					bench_op_name(o), c[0], c[1], c[2], c[3],
					cuda || !tool ? "-" : tool, c[4], c[5]);
			}
	}
}

static void md_slices(FILE *f)
{
	static const uint32_t sges[] = {1, 8, 64}, batches[] = {1, 16, 256};
	char c[6][32];
	int t, op, i;

	fprintf(f, "\n## SGEs per object (1 MiB objects, batches of 16, 4 in flight)\n\n"
		   "GB/s with the object in 1, 8 and 64 slices, each in its own place (the "
		   "layerwise layout of a KV cache).\n\n"
		   "| target | op | 1 SGE | 8 SGEs | 64 SGEs |\n|---|---|---:|---:|---:|\n");
	for (t = 0; t < NTARGET; t++)
		for (op = 0; op < 2 && S.up[t]; op++) {
			for (i = 0; i < 3; i++) {
				const struct row *r =
				    find_row(S_SGE, t, op ? KVR_OP_GET : KVR_OP_PUT, 1ull << 20,
					     sges[i], 0, false, false);

				cell(c[i], 32, r, r ? r->r.gbps : 0, 2);
			}
			fprintf(f, "| %s | %s | %s | %s | %s |\n", tname[t], op ? "get" : "put",
				c[0], c[1], c[2]);
		}
	fprintf(f, "\n## Batch size (4 KiB objects, 4 batches in flight)\n\n"
		   "Thousands of objects per second.\n\n"
		   "| target | op | batch 1 | batch 16 | batch 256 |\n|---|---|---:|---:|---:|\n");
	for (t = 0; t < NTARGET; t++)
		for (op = 0; op < 2 && S.up[t]; op++) {
			for (i = 0; i < 3; i++) {
				const struct row *r =
				    find_row(S_BATCH, t, op ? KVR_OP_GET : KVR_OP_PUT, 4096, 1,
					     batches[i], false, false);

				cell(c[i], 32, r, r ? r->r.ops_per_s / 1e3 : 0, 1);
			}
			fprintf(f, "| %s | %s | %s | %s | %s |\n", tname[t], op ? "get" : "put",
				c[0], c[1], c[2]);
		}
}

static void md_latency(FILE *f)
{
	static const uint64_t sz[] = {4096, 1ull << 20};
	char c[3][32], s[16];
	int t, op, i;
	size_t k;

	fprintf(f, "\n## Latency at queue depth 1 (microseconds)\n\n"
		   "One object in flight: submission to its callback. fio: the same block size "
		   "at iodepth 1 (total latency: submission to completion, --lat_percentiles=1); "
		   "redis: redis-benchmark -c 1 -P 1 "
		   "(p999: the first bucket of its distribution at or above 99.9%%).\n\n"
		   "| target | op | size | p50 | p99 | p999 |\n|---|---|---:|---:|---:|---:|\n");
	for (t = 0; t < NTARGET; t++)
		for (i = 0; i < 2 && S.up[t]; i++)
			for (op = 0; op < 2; op++) {
				const struct row *r =
				    find_row(S_QD1, t, op ? KVR_OP_GET : KVR_OP_PUT, sz[i], 1, 1,
					     false, false);

				fmt_size(s, sizeof(s), sz[i]);
				cell(c[0], 32, r, r ? r->r.p50_us : 0, 1);
				cell(c[1], 32, r, r ? r->r.p99_us : 0, 1);
				cell(c[2], 32, r, r ? r->r.p999_us : 0, 1);
				fprintf(f, "| %s | %s | %s | %s | %s | %s |\n", tname[t],
					op ? "get" : "put", s, c[0], c[1], c[2]);
			}
	for (k = 0; k < S.nref; k++) {
		const struct ref *r = &S.refs_v[k];

		if (!r->qd1)
			continue;
		fmt_size(s, sizeof(s), r->size);
		cell(c[0], 32, r->ran, r->p50_us, 1);
		cell(c[1], 32, r->ran, r->p99_us, 1);
		cell(c[2], 32, r->ran && r->p999_us >= 0, r->p999_us, 1);
		fprintf(f, "| %s (reference) | %s | %s | %s | %s | %s |\n", r->tool,
			!strcmp(r->tool, "redis") ? (r->op == KVR_OP_GET ? "GET" : "SET")
						  : bench_op_name(r->op),
			s, c[0], c[1], c[2]);
	}
}

static void md_kvcache(FILE *f)
{
	char c[8][32];
	int t, k;
	bool any = false;

	for (t = 0; t < NTARGET; t++)
		any |= S.kvc_ran[t][0];
	if (!any)
		return;
	fprintf(f, "\n## KV-cache workload (LMCache-shaped)\n\n");
	for (t = 0; t < NTARGET; t++)
		if (S.kvc_ran[t][0] && !S.kvc_rc[t][0]) {
			const struct kvc_result *r = &S.kvc[t][0];

			fprintf(
			    f,
			    "Model %s (%llu bytes of KV per token), %u requests of %u tokens, "
			    "chunks of %u tokens = one object of %u slices (%llu bytes), "
			    "%llu distinct chunks stored (shared prefixes), scale %.3g.\n"
			    "Load = the reload of one request's chunks as one batch, "
			    "submission to callback, per request.\n\n",
			    r->cfg.model ? r->cfg.model->name : "?",
			    (unsigned long long)(r->cfg.model ? kvc_token_bytes(r->cfg.model) : 0),
			    r->requests, r->tokens_per_request, r->chunk_tokens, r->sge_per_chunk,
			    (unsigned long long)r->chunk_bytes,
			    (unsigned long long)r->unique_chunks, r->scale);
			break;
		}
	fprintf(f, "| target | path | store GB/s | load GB/s | load p50 ms | load p99 ms | "
		   "tokens/s restored | zero-copy / copy (load) |\n"
		   "|---|---|---:|---:|---:|---:|---:|---:|\n");
	for (t = 0; t < NTARGET; t++)
		for (k = 0; k < 3; k++) {
			const struct kvc_result *r = &S.kvc[t][k];
			bool ok =
			    S.kvc_ran[t][k] && !S.kvc_rc[t][k] && !r->load.errors && !r->verify_bad;
			bool ok0 = S.kvc_ran[t][0] && !S.kvc_rc[t][0];

			if (!S.kvc_ran[t][k])
				continue;
			cell(c[0], 32, ok, r->store.gbps, 2);
			cell(c[1], 32, ok, r->load.gbps, 2);
			cell(c[2], 32, ok, r->load.p50_ms, 1);
			cell(c[3], 32, ok, r->load.p99_ms, 1);
			cell(c[4], 32, ok, r->load.tokens_per_s, 0);
			cell(c[5], 32, k == 1 && ok && ok0 && r->load.gbps > 0,
			     r->load.gbps > 0 ? S.kvc[t][0].load.gbps / r->load.gbps : 0, 2);
			fprintf(f, "| %s | %s | %s | %s | %s | %s | %s | %s |\n", tname[t],
				k == 1	 ? "--copy"
				: k == 2 ? "device memory"
					 : "zero-copy",
				c[0], c[1], c[2], c[3], c[4], c[5]);
		}
}

/* The goals of the README, judged on this run. */
static void md_goals(FILE *f)
{
	static const uint64_t fsz[] = {256 << 10, 1ull << 20, 4ull << 20};
	const struct row *z, *cp;
	const struct ref *r;
	const char *tool;
	int op;
	size_t i;

	fprintf(f, "\n## Goals\n\n| goal | measured | met |\n|---|---|---|\n");
	for (i = 0; i < 3; i++)
		for (op = 0; op < 2; op++) {
			enum kvr_op o = op ? KVR_OP_GET : KVR_OP_PUT;
			char sz[16];

			z = find_row(S_SIZE, T_FILE, o, fsz[i], 1, 0, false, false);
			r = size_ref(T_FILE, o, fsz[i], &tool);
			if (!z || !r || !r->ran || r->gbps <= 0)
				continue;
			fmt_size(sz, sizeof(sz), fsz[i]);
			fprintf(f, "| file %s %s >= 0.97x fio | %.2fx (%.2f vs %.2f GB/s) | %s |\n",
				bench_op_name(o), sz, z->r.gbps / r->gbps, z->r.gbps, r->gbps,
				z->r.gbps / r->gbps >= 0.97 ? "yes" : "**no**");
		}
	for (op = 0; op < 2; op++) {
		enum kvr_op o = op ? KVR_OP_GET : KVR_OP_PUT;

		z = find_row(S_SIZE, T_TCP, o, 4ull << 20, 1, 0, false, false);
		cp = find_row(S_SIZE, T_TCP, o, 4ull << 20, 1, 0, true, false);
		if (z && cp && cp->r.gbps > 0)
			fprintf(f,
				"| tcp %s 4M zero-copy >= 1.3x --copy | %.2fx (%.2f vs %.2f GB/s) "
				"| %s |\n",
				bench_op_name(o), z->r.gbps / cp->r.gbps, z->r.gbps, cp->r.gbps,
				z->r.gbps / cp->r.gbps >= 1.3 ? "yes" : "**no**");
	}
	fprintf(f, "| < 2000 user-space instructions per 4 KiB get (mem) | "
		   "perf/baseline.json, checked by `meson test --suite perf` | see icount |\n");
}

static int write_report(const struct facts *fx, double total)
{
	const uint64_t *sizes = S.quick ? sizes_quick : sizes_full;
	size_t nsize = S.quick ? sizeof(sizes_quick) / sizeof(sizes_quick[0]) : MAX_SIZES;
	char path[PATH_MAX];
	FILE *f;
	int t;

	snprintf(path, sizeof(path), "%s/report.md", S.out);
	f = fopen(path, "w");
	if (!f)
		return -errno;
	fprintf(f, "# kvring performance report\n\n");
	fprintf(f,
		"`kvring-bench suite%s --out %s`: kvring %d.%d, %s matrix, %.0f s in all. "
		"Every figure was measured in this one run; GB/s = 1e9 payload bytes/s.\n\n",
		S.quick ? " --quick" : "", S.out, KVR_VERSION_MAJOR, KVR_VERSION_MINOR,
		S.quick ? "quick" : "full", total);
	fprintf(f, "## Machine\n\n| | |\n|---|---|\n");
	fprintf(f, "| kernel | %s |\n| CPU | %s |\n| cores | %ld |\n| memory | %.1f GiB |\n",
		fx->kernel, fx->cpu, fx->cores, (double)fx->mem_bytes / (1 << 30));
	fprintf(f, "| io_uring features | %s |\n| io_uring ops used | %s |\n", fx->uring_features,
		fx->uring_ops);
	fprintf(f, "| file store | %s on %s (%s) |\n", S.work, fx->blockdev[0] ? fx->blockdev : "?",
		fx->fs);
	fprintf(f, "| RDMA devices | %s |\n| GPU | %s |\n", fx->rdma, fx->gpu);
	for (t = 0; t < 5; t++)
		fprintf(f, "| %s | %s |\n", tool_name[t], fx->tool[t]);
	for (t = 0; t < NTARGET; t++)
		if (!S.up[t] && S.why[t][0])
			fprintf(f, "\n%s: not measured: %s\n", tname[t], S.why[t]);

	fprintf(f, "\n## Throughput vs object size\n\n"
		   "![throughput](plots/throughput.png)\n\n"
		   "Objects of one SGE in batches of up to 64 (at most 32 MiB in flight), 4 "
		   "batches in flight. --copy = the same run staged through a registered bounce "
		   "buffer with memcpy. References: fio --ioengine=io_uring --direct=1 "
		   "--fixedbufs --registerfiles, bs = object size, iodepth = objects in flight, "
		   "on a file beside the store (file); redis-benchmark -c 2 (-P 16 at 4 KiB) "
		   "against a private redis-server (tcp); one core's memcpy of the object (mem, "
		   "the copy path's ceiling).\n");
	md_size_tables(f, sizes, nsize, false);
	if (S.cuda) {
		fprintf(f, "\n## Device memory (--mem cuda)\n");
		md_size_tables(f, sizes, nsize, true);
	}
	fprintf(f, "\n![zero-copy vs copy](plots/zerocopy.png)\n");
	md_slices(f);
	md_latency(f);
	fprintf(f, "\n![latency CDF](plots/latency_cdf.png)\n");
	md_kvcache(f);
	md_goals(f);
	fclose(f);
	return 0;
}

static void json_ref(FILE *f, const struct ref *r)
{
	fprintf(f,
		"{\"tool\": \"%s\", \"op\": \"%s\", \"size\": %llu, \"depth\": %u, "
		"\"qd1\": %s, \"ran\": %s, \"gbps\": ",
		r->tool, bench_op_name(r->op), (unsigned long long)r->size, r->depth,
		r->qd1 ? "true" : "false", r->ran ? "true" : "false");
	report_json_num(f, r->ran ? r->gbps : __builtin_nan(""));
	fputs(", \"ops_per_s\": ", f);
	report_json_num(f, r->ran ? r->ops_per_s : __builtin_nan(""));
	fputs(", \"lat_us\": {\"p50\": ", f);
	report_json_num(f, r->ran ? r->p50_us : __builtin_nan(""));
	fputs(", \"p99\": ", f);
	report_json_num(f, r->ran ? r->p99_us : __builtin_nan(""));
	fputs(", \"p999\": ", f);
	report_json_num(f, r->ran && r->p999_us >= 0 ? r->p999_us : __builtin_nan(""));
	fputs("}", f);
	if (!r->ran) {
		fputs(", \"why\": ", f);
		report_json_str(f, r->why);
	}
	fputs("}", f);
}

static void json_kv(FILE *f, const char *k, const char *v, bool comma)
{
	fprintf(f, "    \"%s\": ", k);
	report_json_str(f, v);
	fputs(comma ? ",\n" : "\n", f);
}

static int write_json(const struct facts *fx, double total)
{
	char path[PATH_MAX];
	bool first = true;
	size_t i;
	FILE *f;
	int t, k;

	snprintf(path, sizeof(path), "%s/suite.json", S.out);
	f = fopen(path, "w");
	if (!f)
		return -errno;
	fprintf(f, "{\n  \"suite\": \"%s\",\n  \"kvring\": \"%d.%d\",\n  \"seconds\": %.1f,\n",
		S.quick ? "quick" : "full", KVR_VERSION_MAJOR, KVR_VERSION_MINOR, total);
	fputs("  \"machine\": {\n", f);
	json_kv(f, "kernel", fx->kernel, true);
	json_kv(f, "cpu", fx->cpu, true);
	fprintf(f, "    \"cores\": %ld,\n    \"memory_bytes\": %llu,\n", fx->cores,
		(unsigned long long)fx->mem_bytes);
	json_kv(f, "io_uring_features", fx->uring_features, true);
	json_kv(f, "io_uring_ops", fx->uring_ops, true);
	json_kv(f, "file_store_dir", S.work, true);
	json_kv(f, "file_system", fx->fs, true);
	json_kv(f, "block_device", fx->blockdev, true);
	json_kv(f, "rdma_devices", fx->rdma, true);
	json_kv(f, "gpu", fx->gpu, true);
	json_kv(f, "tcp_server", S.tcp_how, true);
	for (t = 0; t < 5; t++)
		json_kv(f, tool_name[t], fx->tool[t], t < 4);
	fputs("  },\n  \"targets\": {", f);
	for (t = 0; t < NTARGET; t++) {
		fprintf(f, "%s\"%s\": ", t ? ", " : "", tname[t]);
		if (S.up[t])
			fputs("\"measured\"", f);
		else
			report_json_str(f, S.why[t][0] ? S.why[t] : "not measured");
	}
	fputs("},\n  \"rows\": [\n", f);
	for (i = 0; i < S.nspec; i++) {
		const struct row *r = &S.rows[i];

		if (r->rc == -ENODEV && !r->r.cfg.target)
			continue;
		fprintf(f,
			"%s    {\"slice\": \"%s\", \"target_kind\": \"%s\", \"mem\": \"%s\", "
			"\"rc\": %d, \"result\":\n",
			first ? "" : ",\n", sname[r->s.slice], tname[r->s.tgt],
			r->s.cuda ? "cuda" : "host", r->rc);
		report_json_result(f, &r->r, "      ");
		fputs("}", f);
		first = false;
	}
	fputs("\n  ],\n  \"refs\": [\n", f);
	for (i = 0; i < S.nref; i++) {
		fputs("    ", f);
		json_ref(f, &S.refs_v[i]);
		fputs(i + 1 < S.nref ? ",\n" : "\n", f);
	}
	fputs("  ],\n  \"iperf3\": ", f);
	if (S.iperf.ran) {
		fputs("{\"streams\": 2, \"gbps\": ", f);
		report_json_num(f, S.iperf.gbps);
		fputs(", \"cpu_host_pct\": ", f);
		report_json_num(f, S.iperf.cpu_host_pct);
		fputs(", \"cpu_remote_pct\": ", f);
		report_json_num(f, S.iperf.cpu_remote_pct);
		fputs("}", f);
	} else {
		fputs("{\"why\": ", f);
		report_json_str(f, S.iperf.why[0] ? S.iperf.why : "not run");
		fputs("}", f);
	}
	fputs(",\n  \"kvcache\": [\n", f);
	first = true;
	for (t = 0; t < NTARGET; t++)
		for (k = 0; k < 3; k++) {
			if (!S.kvc_ran[t][k])
				continue;
			fprintf(f, "%s    {\"target_kind\": \"%s\", \"rc\": %d, \"result\": ",
				first ? "" : ",\n", tname[t], S.kvc_rc[t][k]);
			if (S.kvc_rc[t][k])
				fputs("null", f);
			else
				kvcache_json(f, &S.kvc[t][k]);
			fputs("}", f);
			first = false;
		}
	fputs("\n  ]\n}\n", f);
	if (fclose(f))
		return -errno;
	return 0;
}

/* ----------------------------------------------------------------- plots */

static FILE *open_in(const char *dir, const char *name)
{
	char path[PATH_MAX];

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	return fopen(path, "w");
}

static void dat_val(FILE *f, bool have, double v)
{
	if (have && v == v)
		fprintf(f, " %.4f", v);
	else
		fputs(" ?", f);
}

/* throughput_{put,get}.dat: size mem file tcp rdma fio redis memcpy (GB/s);
 * zerocopy.dat: size, then zero-copy/copy for each target's put and get. */
static void write_dat(const char *dir, const uint64_t *sizes, size_t nsize)
{
	const char *tool;
	const struct ref *r;
	char name[32];
	FILE *f;
	size_t i;
	int op, t;

	for (op = 0; op < 2; op++) {
		enum kvr_op o = op ? KVR_OP_GET : KVR_OP_PUT;

		snprintf(name, sizeof(name), "throughput_%s.dat", bench_op_name(o));
		f = open_in(dir, name);
		if (!f)
			continue;
		fputs("# size_bytes mem file tcp rdma fio redis memcpy (GB/s)\n", f);
		for (i = 0; i < nsize; i++) {
			fprintf(f, "%llu", (unsigned long long)sizes[i]);
			for (t = 0; t < NTARGET; t++) {
				const struct row *z =
				    find_row(S_SIZE, t, o, sizes[i], 1, 0, false, false);

				dat_val(f, z, z ? z->r.gbps : 0);
			}
			r = size_ref(T_FILE, o, sizes[i], &tool);
			dat_val(f, r && r->ran, r ? r->gbps : 0);
			r = size_ref(T_TCP, o, sizes[i], &tool);
			dat_val(f, r && r->ran, r ? r->gbps : 0);
			r = size_ref(T_MEM, o, sizes[i], &tool);
			dat_val(f, r && r->ran, r ? r->gbps : 0);
			fputc('\n', f);
		}
		fclose(f);
	}
	f = open_in(dir, "zerocopy.dat");
	if (f) {
		fputs("# size_bytes then zero-copy/--copy GB/s: mem put, mem get, file put, "
		      "file get, tcp put, tcp get, rdma put, rdma get\n",
		      f);
		for (i = 0; i < nsize; i++) {
			fprintf(f, "%llu", (unsigned long long)sizes[i]);
			for (t = 0; t < NTARGET; t++)
				for (op = 0; op < 2; op++) {
					enum kvr_op o = op ? KVR_OP_GET : KVR_OP_PUT;
					const struct row *z =
					    find_row(S_SIZE, t, o, sizes[i], 1, 0, false, false);
					const struct row *c =
					    find_row(S_SIZE, t, o, sizes[i], 1, 0, true, false);

					dat_val(f, z && c && c->r.gbps > 0,
						z && c && c->r.gbps > 0 ? z->r.gbps / c->r.gbps
									: 0);
				}
			fputc('\n', f);
		}
		fclose(f);
	}
	for (t = 0; t < NTARGET; t++)
		for (op = 0; op < 2; op++)
			for (i = 0; i < 2; i++) {
				enum kvr_op o = op ? KVR_OP_GET : KVR_OP_PUT;
				uint64_t sz = i ? 1ull << 20 : 4096;
				const struct row *z = find_row(S_QD1, t, o, sz, 1, 1, false, false);

				if (!z || !z->hist)
					continue;
				snprintf(name, sizeof(name), "cdf_%s_%s_%s.dat", tname[t],
					 bench_op_name(o), i ? "1M" : "4K");
				f = open_in(dir, name);
				if (!f)
					continue;
				fprintf(f, "# latency_us fraction: %s %s %s at queue depth 1\n",
					tname[t], bench_op_name(o), i ? "1M" : "4K");
				hist_cdf(z->hist, f);
				fclose(f);
			}
}

/* The x axis of the plots over object size. */
#define GP_SIZE_AXIS                                                                               \
	"set logscale x 2\nset xtics ('4K' 4096, '64K' 65536, '256K' 262144, '1M' 1048576, "       \
	"'4M' 4194304, '16M' 16777216)\nset xrange [3000:22000000]\nset xlabel 'object size'\n"

static void gp_head(FILE *f, const char *name, bool svg, const char *size)
{
	if (svg)
		fprintf(f, "set terminal svg size %s dynamic font 'Helvetica,12'\n", size);
	else
		fprintf(f, "set terminal pngcairo size %s font 'Helvetica,10'\n", size);
	fprintf(f,
		"set output '%s.%s'\nset datafile missing '?'\nset key outside right top\n"
		"set grid\n",
		name, svg ? "svg" : "png");
}

static void write_gp(const char *dir, bool svg)
{
	static const char *const style[NTARGET] = {
	    "lc rgb '#1f77b4' lw 2 pt 7", "lc rgb '#2ca02c' lw 2 pt 5",
	    "lc rgb '#d62728' lw 2 pt 9", "lc rgb '#9467bd' lw 2 pt 11"};
	static const char *const line[NTARGET] = {"lc rgb '#1f77b4' lw 2", "lc rgb '#2ca02c' lw 2",
						  "lc rgb '#d62728' lw 2", "lc rgb '#9467bd' lw 2"};
	char name[64];
	FILE *f;
	int t, op, k;

	snprintf(name, sizeof(name), "throughput%s.gp", svg ? "_svg" : "");
	f = open_in(dir, name);
	if (f) {
		gp_head(f, "throughput", svg, "1100,450");
		fputs("set multiplot layout 1,2 title 'kvring throughput vs object size "
		      "(same-run references dashed)'\n" GP_SIZE_AXIS
		      "set ylabel 'GB/s (1e9 B/s)'\nset yrange [0:*]\n",
		      f);
		for (op = 0; op < 2; op++) {
			fprintf(f, "set title '%s'\nplot ", op ? "get" : "put");
			for (t = 0; t < NTARGET; t++)
				if (S.up[t])
					fprintf(
					    f, "'throughput_%s.dat' u 1:%d w lp %s t 'kvring %s', ",
					    op ? "get" : "put", t + 2, style[t], tname[t]);
			fprintf(f,
				"'throughput_%s.dat' u 1:6 w lp dt 2 lc rgb '#2ca02c' t 'fio', "
				"'' u 1:7 w lp dt 2 lc rgb '#d62728' t 'redis', "
				"'' u 1:8 w lp dt 3 lc rgb '#1f77b4' t 'memcpy'",
				op ? "get" : "put");
			if (S.iperf.ran)
				fprintf(f, ", %.4f w l dt 4 lc rgb '#ff7f0e' t 'iperf3 -P 2'",
					S.iperf.gbps);
			fputc('\n', f);
		}
		fputs("unset multiplot\n", f);
		fclose(f);
	}
	snprintf(name, sizeof(name), "zerocopy%s.gp", svg ? "_svg" : "");
	f = open_in(dir, name);
	if (f) {
		gp_head(f, "zerocopy", svg, "800,450");
		fputs("set title 'zero-copy SGLs vs --copy (bounce buffer + memcpy)'\n" GP_SIZE_AXIS
		      "set ylabel 'zero-copy GB/s / copy GB/s'\nset yrange [0:*]\nplot 1 w l lc "
		      "rgb 'gray' notitle",
		      f);
		for (t = 0; t < NTARGET; t++)
			for (op = 0; op < 2 && S.up[t]; op++)
				fprintf(f, ", 'zerocopy.dat' u 1:%d w lp %s %s t '%s %s'",
					2 + t * 2 + op, style[t], op ? "dt 2" : "", tname[t],
					op ? "get" : "put");
		fputc('\n', f);
		fclose(f);
	}
	snprintf(name, sizeof(name), "latency_cdf%s.gp", svg ? "_svg" : "");
	f = open_in(dir, name);
	if (f) {
		bool any = false;

		gp_head(f, "latency_cdf", svg, "900,450");
		fputs("set title 'latency at queue depth 1 (CDF)'\nset logscale x 10\n"
		      "set xlabel 'microseconds'\nset ylabel 'fraction of objects'\n"
		      "set yrange [0:1]\nset key bottom right inside\nplot ",
		      f);
		for (t = 0; t < NTARGET; t++)
			for (op = 0; op < 2; op++)
				for (k = 0; k < 2; k++) {
					char dat[64];

					snprintf(dat, sizeof(dat), "cdf_%s_%s_%s.dat", tname[t],
						 op ? "get" : "put", k ? "1M" : "4K");
					if (!find_row(S_QD1, t, op ? KVR_OP_GET : KVR_OP_PUT,
						      k ? 1ull << 20 : 4096, 1, 1, false, false))
						continue;
					fprintf(f, "%s'%s' u 1:2 w l %s %s t '%s %s %s'",
						any ? ", " : "", dat, line[t], op ? "dt 2" : "",
						tname[t], op ? "get" : "put", k ? "1M" : "4K");
					any = true;
				}
		if (!any)
			fputs("NaN notitle", f);
		fputc('\n', f);
		fclose(f);
	}
}

static int run_gnuplot(const char *dir)
{
	static const char *const gp[] = {"throughput", "zerocopy", "latency_cdf"};
	char cwd[PATH_MAX], name[64], *out;
	char *argv[3];
	int rc = 0, i, svg;

	if (!bench_have("gnuplot"))
		return -ENOENT;
	if (!getcwd(cwd, sizeof(cwd)) || chdir(dir))
		return -errno;
	for (i = 0; i < 3; i++)
		for (svg = 0; svg < 2; svg++) {
			snprintf(name, sizeof(name), "%s%s.gp", gp[i], svg ? "_svg" : "");
			argv[0] = "gnuplot";
			argv[1] = name;
			argv[2] = NULL;
			if (bench_run_capture(argv, &out)) {
				fprintf(stderr, "kvring-bench suite: gnuplot %s/%s failed: %s\n",
					dir, name, out ? out : "");
				rc = -EIO;
			}
			free(out);
		}
	if (chdir(cwd))
		rc = -errno;
	return rc;
}

/* ------------------------------------------------------------------ main */

static void suite_signal(int sig)
{
	fio_kill();
	ref_kill();
	unlink(S.store + 5);
	unlink(S.fio);
	signal(sig, SIG_DFL);
	raise(sig);
}

static void cleanup_work(void)
{
	bench_rundir_remove(S.work);
}

static int mkdir_p(const char *path)
{
	char buf[PATH_MAX], *p;

	if (snprintf(buf, sizeof(buf), "%s", path) >= (int)sizeof(buf))
		return -ENAMETOOLONG;
	for (p = buf + 1; *p; p++)
		if (*p == '/') {
			*p = '\0';
			if (mkdir(buf, 0755) && errno != EEXIST)
				return -errno;
			*p = '/';
		}
	if (mkdir(buf, 0755) && errno != EEXIST)
		return -errno;
	return 0;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: kvring-bench suite [--quick] --out DIR [options]\n"
		   "  --quick          the small matrix (under 2 minutes on 2 cores)\n"
		   "  --out DIR        where suite.json, report.md and plots/ go (created)\n"
		   "  --dir DIR        where the file store and fio's file go (default $TMPDIR "
		   "or /var/tmp)\n"
		   "  --seconds S      measured time per run (default 1, --quick 0.25)\n"
		   "  --rdma URI       measure this rdma:// cluster too (a kvring-server "
		   "--listen rdma://...)\n"
		   "  --targets LIST   which of mem,file,tcp,rdma to measure (default: mem,file,"
		   "tcp, and rdma with --rdma)\n"
		   "  --no-refs        skip fio, iperf3, redis-benchmark and memcpy\n"
		   "  --no-kvcache     skip the KV-cache workload\n"
		   "  --help           this text\n");
}

static int parse(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"quick", no_argument, NULL, 'q'},	    {"out", required_argument, NULL, 'o'},
	    {"dir", required_argument, NULL, 'd'},  {"seconds", required_argument, NULL, 's'},
	    {"rdma", required_argument, NULL, 'r'}, {"no-refs", no_argument, NULL, 'R'},
	    {"no-kvcache", no_argument, NULL, 'K'}, {"targets", required_argument, NULL, 'T'},
	    {"help", no_argument, NULL, 'h'},	    {NULL, 0, NULL, 0},
	};
	char *end;
	int c;

	S.refs = S.kvcache = true;
	optind = 1;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'q':
			S.quick = true;
			break;
		case 'o':
			S.out = optarg;
			break;
		case 'd':
			S.dir = optarg;
			break;
		case 's':
			S.seconds = strtod(optarg, &end);
			if (end == optarg || *end || !(S.seconds > 0) || S.seconds > 600) {
				fprintf(stderr, "kvring-bench suite: bad --seconds '%s'\n", optarg);
				return 2;
			}
			break;
		case 'r':
			if (strncmp(optarg, "rdma://", 7)) {
				fprintf(stderr,
					"kvring-bench suite: --rdma wants rdma://HOST:PORT\n");
				return 2;
			}
			S.rdma = optarg;
			break;
		case 'R':
			S.refs = false;
			break;
		case 'K':
			S.kvcache = false;
			break;
		case 'T':
			S.targets = optarg;
			break;
		case 'h':
			usage(stdout);
			exit(0);
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "kvring-bench suite: unexpected argument '%s'\n", argv[optind]);
		return 2;
	}
	if (!S.out) {
		fprintf(stderr, "kvring-bench suite: --out DIR is required\n");
		usage(stderr);
		return 2;
	}
	return 0;
}

static int setup_dirs(void)
{
	char plots[PATH_MAX];
	int rc;

	rc = mkdir_p(S.out);
	if (!rc && (size_t)snprintf(plots, sizeof(plots), "%s/plots", S.out) < sizeof(plots))
		rc = mkdir_p(plots);
	if (rc) {
		fprintf(stderr, "kvring-bench suite: cannot create %s: %s\n", S.out, strerror(-rc));
		return rc;
	}
	if (bench_rundir_make(S.dir, "kvring-suite", S.work, sizeof(S.work)))
		return -1;
	snprintf(S.store, sizeof(S.store), "file:%s/store.kvr", S.work);
	snprintf(S.fio, sizeof(S.fio), "%s/fio.dat", S.work);
	snprintf(S.uri[T_FILE], sizeof(S.uri[T_FILE]), "%s", S.store);
	atexit(cleanup_work);
	bench_catch_signals(suite_signal);
	return 0;
}

/* --targets mem,file,tcp,rdma: the targets to measure. */
static int parse_targets(const char *list)
{
	const char *p = list;
	bool want[NTARGET] = {false};
	int t;

	while (*p) {
		size_t n = strcspn(p, ",");

		for (t = 0; t < NTARGET; t++)
			if (strlen(tname[t]) == n && !strncmp(p, tname[t], n))
				break;
		if (t == NTARGET) {
			fprintf(stderr,
				"kvring-bench suite: --targets: unknown target '%.*s' (mem, file, "
				"tcp, rdma)\n",
				(int)n, p);
			return -EINVAL;
		}
		want[t] = true;
		p += n;
		if (*p == ',')
			p++;
	}
	for (t = 0; t < NTARGET; t++)
		S.up[t] = want[t];
	return 0;
}

int suite_main(int argc, char **argv)
{
	char plots[PATH_MAX], names[256];
	struct facts fx;
	double total, per_run;
	size_t i, failed = 0;
	int rc;

	rc = parse(argc, argv);
	if (rc)
		return rc;
	if (setup_dirs())
		return 1;
	S.t0 = bench_now_ns();
	S.tty = isatty(2);
	S.cuda = devmem_available();
	for (i = 0; i < NTARGET; i++)
		S.up[i] = i == T_RDMA ? S.rdma != NULL : true;
	if (S.targets && parse_targets(S.targets))
		return 2;
	if (S.up[T_RDMA] && !S.rdma) {
		fprintf(stderr, "kvring-bench suite: --targets rdma needs --rdma URI\n");
		return 2;
	}
	if (S.rdma)
		snprintf(S.uri[T_RDMA], sizeof(S.uri[T_RDMA]), "%s", S.rdma);
	else if (rdma_devices(names, sizeof(names)))
		snprintf(S.why[T_RDMA], sizeof(S.why[T_RDMA]),
			 "RDMA devices %s found: start kvring-server --listen rdma://ADDR:PORT on "
			 "one and pass --rdma rdma://ADDR:PORT[?dev=NAME&gid=N]",
			 names);
	else
		snprintf(S.why[T_RDMA], sizeof(S.why[T_RDMA]), "no RDMA device on this machine");
	for (i = 0; i < NTARGET; i++)
		if (!S.up[i] && !S.why[i][0])
			snprintf(S.why[i], sizeof(S.why[i]), "not in --targets");
	collect_facts(&fx);
	build_matrix();
	if (S.refs) /* fio (size slice and QD1), memcpy, iperf3, redis */
		S.nextra = (S.quick ? 3 : MAX_SIZES) * 4 + 7;
	if (S.kvcache)
		S.nextra += S.cuda ? 9 : 6;
	per_run = (S.seconds > 0 ? S.seconds : S.quick ? 0.3 : 1.5) * 1.3 + (S.quick ? 0.3 : 0.6);
	S.est_total = (double)S.nspec * per_run + (S.quick ? 25 : 90);
	names[0] = '\0';
	for (i = 0; i < NTARGET; i++)
		if (S.up[i])
			snprintf(names + strlen(names), sizeof(names) - strlen(names), "%s%s",
				 names[0] ? "," : "", tname[i]);
	fprintf(stderr,
		"kvring-bench suite%s: %zu runs on %s%s, references %s, kvcache %s; about %.0f s; "
		"results in %s\n",
		S.quick ? " --quick" : "", S.nspec, names, S.cuda ? " (+gpu)" : "",
		S.refs ? "on" : "off", S.kvcache ? "on" : "off", S.est_total, S.out);

	run_matrix();
	for (i = 0; i < S.nspec; i++)
		if (S.rows[i].rc != -ENODEV && (S.rows[i].rc || S.rows[i].r.errors))
			failed++;
	for (i = 0; i < NTARGET; i++)
		if (S.why[i][0])
			S.up[i] = false;
	if (S.refs)
		run_refs();
	if (S.kvcache)
		run_kvcache();
	total = elapsed();

	rc = write_json(&fx, total);
	if (!rc)
		rc = write_report(&fx, total);
	if (rc) {
		fprintf(stderr, "kvring-bench suite: cannot write to %s: %s\n", S.out,
			strerror(-rc));
		return 1;
	}
	snprintf(plots, sizeof(plots), "%s/plots", S.out);
	write_dat(plots, S.quick ? sizes_quick : sizes_full,
		  S.quick ? sizeof(sizes_quick) / sizeof(sizes_quick[0]) : MAX_SIZES);
	write_gp(plots, false);
	write_gp(plots, true);
	rc = run_gnuplot(plots);
	if (rc == -ENOENT)
		fprintf(stderr,
			"kvring-bench suite: gnuplot is not installed: the plots' data "
			"and scripts are in %s (install gnuplot-nox, then run gnuplot on "
			"each .gp there)\n",
			plots);
	for (i = 0; i < NTARGET; i++)
		for (int k = 0; k < 3; k++)
			if (S.kvc_ran[i][k] &&
			    (S.kvc_rc[i][k] || S.kvc[i][k].verify_bad || S.kvc[i][k].load.errors ||
			     S.kvc[i][k].store.errors))
				failed++;
	for (i = 0; i < S.nspec; i++)
		free(S.rows[i].hist);
	printf("kvring-bench suite: %.0f s; %s/report.md, %s/suite.json, %s/*.png%s\n", total,
	       S.out, S.out, plots, failed ? "" : "");
	if (failed)
		fprintf(stderr,
			"kvring-bench suite: %zu runs failed or had errors (see the report)\n",
			failed);
	return failed ? 1 : 0;
}
