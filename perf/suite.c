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
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "suite.h"

const char *const tname[NTARGET] = {"mem", "file", "tcp", "rdma"};
const char *const sname[NSLICE] = {"size", "sge", "batch", "qd1"};
const uint64_t sizes_full[MAX_SIZES] = {4096,	    64 << 10,	256 << 10,
					1ull << 20, 4ull << 20, 16ull << 20};
const uint64_t sizes_quick[3] = {4096, 256 << 10, 4ull << 20};
struct suite S;

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

bool suite_rdma_devices(char *names, size_t len)
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

const struct ref *suite_find_ref(const char *tool, enum kvr_op op, uint64_t size, bool qd1)
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
	    suite_find_ref("fio", s->op, s->size, qd1))
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
			if (bench_parse_positive(optarg, 600, &S.seconds)) {
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
	else if (suite_rdma_devices(names, sizeof(names)))
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
	if (rc) /* report_open/close said why */
		return 1;
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
