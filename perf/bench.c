/* SPDX-License-Identifier: MIT */
/*
 * kvring-bench: throughput and latency of kvring puts and gets.
 *
 *   kvring-bench --target URI --op put|get --size N[K|M|G] --sge N --batch N
 *                --depth N --seconds S [--copy] [--mem host|cuda] [--json FILE]
 *                [--fio] [--conns N] [--replicas R] [--secret-file F] [--keys N]
 *   kvring-bench --workload kvcache --target URI [--model NAME] [--scale F]
 *                [--requests N] [--contiguous] [--copy] [--mem host|cuda]
 *                [--json FILE]
 *
 * URI is a local store (mem:SIZE, file:PATH) or a cluster of kvring-server
 * nodes (tcp://HOST:PORT[,HOST:PORT...] or rdma://HOST:PORT[,...][?dev=NAME],
 * opened with kvr_connect).
 *
 * --workload put-get (the default) keeps batches of equal objects in flight
 * for a measured time (workload.c); --workload kvcache replays an
 * LMCache-shaped trace of a model's KV-cache chunks, offload then reload,
 * each request one batch (kvcache.c). --mem cuda puts the objects' buffers in
 * CUDA device memory (devmem.c).
 *
 * With no arguments it runs the quick-start demo (demo.c).
 */
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"
#include "tools/secret_file.h"

/* "a, b, c": the model presets, for usage and errors. */
static const char *model_names(void)
{
	static char buf[256];
	const struct kvc_model *m;
	size_t off = 0;

	buf[0] = 0;
	for (m = kvc_models; m->name && off < sizeof(buf); m++)
		off += (size_t)snprintf(buf + off, sizeof(buf) - off, "%s%s",
					m == kvc_models ? "" : ", ", m->name);
	return buf;
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: kvring-bench [options]        (no options: the quick-start demo)\n"
		"  --target URI      mem:SIZE, file:PATH, tcp://HOST:PORT[,HOST:PORT...] or\n"
		"                    rdma://HOST:PORT[,...][?dev=NAME&gid=N]\n"
		"                    (default %s)\n"
		"  --op put|get      operation to measure (default put); get fills the\n"
		"                    store first and checks the bytes of one round\n"
		"  --size N[K|M|G]   object size (default 1M)\n"
		"  --sge N           slices per object, each in its own place (default %u)\n"
		"  --batch N         objects per batch (default %u)\n"
		"  --depth N         batches in flight (default %u)\n"
		"  --seconds S       measured time (default %.0f)\n"
		"  --copy            go through a bounce buffer and memcpy (the copy path)\n"
		"  --mem host|cuda   where the objects' buffers live (default host); cuda:\n"
		"                    device memory, staged by the library (no --copy)\n"
		"  --json FILE       write the result as JSON to FILE (- for stdout)\n"
		"  --fio             file targets: run fio with the same shape beside it\n"
		"  --capacity N      file store capacity when it is created (default 1G)\n"
		"  --keys N          distinct keys (default: 8 x batch x depth, fewer when\n"
		"                    the store is small)\n"
		"  --conns N         tcp://: connections per node (default 2)\n"
		"  --replicas R      tcp://: copies of each object (default 1)\n"
		"  --secret-file F   tcp://: shared secret of servers started with one\n"
		"  --workload W      put-get (default: the options above) or kvcache: an\n"
		"                    LMCache-shaped trace of KV-cache chunks, stored once and\n"
		"                    reloaded per request, every byte checked; takes --target,\n"
		"                    --copy, --mem, --json, --capacity, the tcp:// options\n"
		"                    and:\n"
		"  --model NAME      kvcache: the model whose KV shape to use (default %s):\n"
		"                    %s\n"
		"  --scale F         kvcache: tokens per request x F (8192 at 1; default: the\n"
		"                    largest of 1, 1/2, 1/4, ... that fits the target and RAM)\n"
		"  --requests N      kvcache: requests in the trace (default 50)\n"
		"  --contiguous      kvcache: one buffer per chunk instead of one slice per\n"
		"                    layer and K/V (2 x layers SGEs)\n"
		"  --demo            run the demo (honours --seconds and --json)\n"
		"  --help            this text\n",
		BENCH_DEF_TARGET, BENCH_DEF_SGE, BENCH_DEF_BATCH, BENCH_DEF_DEPTH,
		BENCH_DEF_SECONDS, kvc_models[0].name, model_names());
}

static int parse_u32(const char *s, uint32_t lo, uint32_t hi, uint32_t *out)
{
	unsigned long long v;
	char *end;

	if (!*s || *s == '-' || *s == '+')
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (end == s || *end || errno || v < lo || v > hi)
		return -EINVAL;
	*out = (uint32_t)v;
	return 0;
}

int bench_parse_positive(const char *s, double hi, double *out)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (end == s || *end || errno || !(v > 0) || v > hi)
		return -EINVAL;
	*out = v;
	return 0;
}

const char *bench_file_path(const char *uri)
{
	return strncmp(uri, "file:", 5) ? NULL : uri + 5;
}

bool bench_is_remote(const char *uri)
{
	return !strncmp(uri, "tcp://", 6) || !strncmp(uri, "rdma://", 7);
}

void bench_errmsg(kvr_engine *e, int rc, const char *what, const char *obj)
{
	const char *msg = e ? kvr_engine_errmsg(e) : "";

	fprintf(stderr, "kvring-bench: %s%s%s: %s (%d)%s%s\n", what, obj ? " " : "", obj ? obj : "",
		kvr_strerror(rc), rc, msg && *msg ? ": " : "", msg ? msg : "");
}

/* Keys that fit comfortably: stores keep objects in 4 KiB units, and half
 * the capacity stays free so overwrites never evict a key about to be read. */
uint64_t bench_key_space(const struct bench_cfg *cfg, uint64_t capacity)
{
	uint64_t want = (uint64_t)cfg->depth * cfg->batch * 8, fit;
	uint64_t footprint = (cfg->size + 4095) / 4096 * 4096;

	if (cfg->keys)
		return cfg->keys;
	if (!capacity)
		return want;
	fit = capacity / footprint / 2;
	return want < fit ? want : fit;
}

/* A remote target: the cluster named by uri, with the run's options. */
static int connect_remote(struct bench_env *env, const char *uri, const struct bench_cfg *remote)
{
	struct kvr_connect_opts co;

	memset(&co, 0, sizeof(co));
	co.size = sizeof(co);
	if (remote) {
		co.conns = remote->conns;
		co.replicas = remote->replicas;
		co.secret = remote->secret;
		co.secret_len = remote->secret_len;
	}
	return kvr_connect(env->e, uri, &co, &env->t);
}

int bench_env_open(struct bench_env *env, const char *uri, uint64_t capacity, uint32_t objects,
		   const struct bench_cfg *remote)
{
	struct kvr_engine_opts eo;
	struct kvr_store_opts so;
	struct kvr_stats st = {.size = sizeof(st)};
	int rc;

	memset(env, 0, sizeof(*env));
	memset(&eo, 0, sizeof(eo));
	memset(&so, 0, sizeof(so));
	env->uri = uri;
	eo.size = sizeof(eo);
	if (objects > 16384)
		eo.max_objects = objects;
	rc = kvr_engine_create(&eo, &env->e);
	if (rc) {
		env->e = NULL;
		bench_errmsg(NULL, rc, "cannot create an engine", NULL);
		return rc;
	}
	so.size = sizeof(so);
	if (bench_file_path(uri)) /* for mem: it would override SIZE */
		so.capacity = capacity;
	if (bench_is_remote(uri))
		rc = connect_remote(env, uri, remote);
	else
		rc = kvr_store_open(env->e, uri, &so, &env->t);
	if (rc) {
		env->t = NULL;
		bench_errmsg(env->e, rc,
			     bench_is_remote(uri) ? "cannot connect to" : "cannot open store", uri);
		kvr_engine_destroy(env->e);
		env->e = NULL;
		return rc;
	}
	if (!kvr_target_stats(env->t, &st))
		env->capacity = st.capacity_bytes;
	return 0;
}

void bench_env_close(struct bench_env *env)
{
	int rc;

	if (env->t) {
		rc = kvr_target_close(env->t);
		if (rc)
			bench_errmsg(env->e, rc, "closing store", env->uri);
	}
	kvr_engine_destroy(env->e);
	memset(env, 0, sizeof(*env));
}

enum {
	OPT_TARGET = 1,
	OPT_OP,
	OPT_SIZE,
	OPT_SGE,
	OPT_BATCH,
	OPT_DEPTH,
	OPT_SECONDS,
	OPT_COPY,
	OPT_JSON,
	OPT_FIO,
	OPT_CAPACITY,
	OPT_DEMO,
	OPT_HELP,
	OPT_KEYS,
	OPT_CONNS,
	OPT_REPLICAS,
	OPT_SECRET_FILE,
	OPT_WORKLOAD,
	OPT_MODEL,
	OPT_SCALE,
	OPT_REQUESTS,
	OPT_CONTIGUOUS,
	OPT_MEM,
	OPT_LAST = OPT_MEM,
};

/* Options that only one workload takes. */
#define PUTGET_ONLY                                                                                \
	(1ull << OPT_OP | 1ull << OPT_SIZE | 1ull << OPT_SGE | 1ull << OPT_BATCH |                 \
	 1ull << OPT_DEPTH | 1ull << OPT_SECONDS | 1ull << OPT_FIO | 1ull << OPT_KEYS)
#define KVCACHE_ONLY                                                                               \
	(1ull << OPT_MODEL | 1ull << OPT_SCALE | 1ull << OPT_REQUESTS | 1ull << OPT_CONTIGUOUS)

enum workload { WL_PUTGET, WL_KVCACHE };

/* What the command line asks for. */
struct bench_args {
	enum workload workload;
	bool demo;
	uint64_t seen; /* 1 << OPT_* of each option given */
	struct kvc_cfg kvc;
};

static const struct option long_opts[] = {
    {"target", required_argument, NULL, OPT_TARGET},
    {"op", required_argument, NULL, OPT_OP},
    {"size", required_argument, NULL, OPT_SIZE},
    {"sge", required_argument, NULL, OPT_SGE},
    {"batch", required_argument, NULL, OPT_BATCH},
    {"depth", required_argument, NULL, OPT_DEPTH},
    {"seconds", required_argument, NULL, OPT_SECONDS},
    {"copy", no_argument, NULL, OPT_COPY},
    {"json", required_argument, NULL, OPT_JSON},
    {"fio", no_argument, NULL, OPT_FIO},
    {"capacity", required_argument, NULL, OPT_CAPACITY},
    {"demo", no_argument, NULL, OPT_DEMO},
    {"help", no_argument, NULL, OPT_HELP},
    {"keys", required_argument, NULL, OPT_KEYS},
    {"conns", required_argument, NULL, OPT_CONNS},
    {"replicas", required_argument, NULL, OPT_REPLICAS},
    {"secret-file", required_argument, NULL, OPT_SECRET_FILE},
    {"workload", required_argument, NULL, OPT_WORKLOAD},
    {"model", required_argument, NULL, OPT_MODEL},
    {"scale", required_argument, NULL, OPT_SCALE},
    {"requests", required_argument, NULL, OPT_REQUESTS},
    {"contiguous", no_argument, NULL, OPT_CONTIGUOUS},
    {"mem", required_argument, NULL, OPT_MEM},
    {NULL, 0, NULL, 0},
};

static int bad_value(const char *opt, const char *val, const char *want)
{
	fprintf(stderr, "kvring-bench: bad value '%s' for --%s: %s\n", val, opt, want);
	return 2;
}

/* Parse argv into *cfg and *a. Returns 0, or the exit status to leave with. */
static int parse_args(int argc, char **argv, struct bench_cfg *cfg, struct bench_args *a)
{
	const char *name;
	int c, idx;

	while ((c = getopt_long(argc, argv, "", long_opts, &idx)) != -1) {
		name = c > 0 && c <= OPT_LAST ? long_opts[c - 1].name : "";
		if (c > 0 && c <= OPT_LAST)
			a->seen |= 1ull << c;
		switch (c) {
		case OPT_TARGET:
			cfg->target = optarg;
			break;
		case OPT_OP:
			if (!strcmp(optarg, "put"))
				cfg->op = KVR_OP_PUT;
			else if (!strcmp(optarg, "get"))
				cfg->op = KVR_OP_GET;
			else
				return bad_value(name, optarg, "put or get");
			break;
		case OPT_SIZE:
			if (kvr_parse_size(optarg, &cfg->size) || !cfg->size)
				return bad_value(name, optarg,
						 "a size above 0, like 4096, 256K, 4M");
			break;
		case OPT_SGE:
			if (parse_u32(optarg, 1, KVR_MAX_SGE, &cfg->sge))
				return bad_value(name, optarg, "1 to 256");
			break;
		case OPT_BATCH:
			if (parse_u32(optarg, 1, 1u << 20, &cfg->batch))
				return bad_value(name, optarg, "1 to 1048576");
			break;
		case OPT_DEPTH:
			if (parse_u32(optarg, 1, 4096, &cfg->depth))
				return bad_value(name, optarg, "1 to 4096");
			break;
		case OPT_SECONDS:
			if (bench_parse_positive(optarg, 86400, &cfg->seconds))
				return bad_value(name, optarg, "seconds above 0, like 5 or 0.5");
			break;
		case OPT_COPY:
			cfg->copy = true;
			break;
		case OPT_JSON:
			cfg->json = optarg;
			break;
		case OPT_FIO:
			cfg->fio = true;
			break;
		case OPT_CAPACITY:
			if (kvr_parse_size(optarg, &cfg->capacity) || !cfg->capacity)
				return bad_value(name, optarg, "a size above 0, like 4G");
			break;
		case OPT_DEMO:
			a->demo = true;
			break;
		case OPT_WORKLOAD:
			if (!strcmp(optarg, "put-get"))
				a->workload = WL_PUTGET;
			else if (!strcmp(optarg, "kvcache"))
				a->workload = WL_KVCACHE;
			else
				return bad_value(name, optarg, "put-get or kvcache");
			break;
		case OPT_MODEL:
			a->kvc.model = kvc_model_find(optarg);
			if (!a->kvc.model)
				return bad_value(name, optarg, model_names());
			break;
		case OPT_SCALE:
			if (bench_parse_positive(optarg, 1024, &a->kvc.scale))
				return bad_value(name, optarg,
						 "a factor above 0 and at most 1024, like 0.25");
			break;
		case OPT_REQUESTS:
			if (parse_u32(optarg, 1, 100000, &a->kvc.requests))
				return bad_value(name, optarg, "1 to 100000");
			break;
		case OPT_CONTIGUOUS:
			a->kvc.contiguous = true;
			break;
		case OPT_MEM:
			if (!strcmp(optarg, "host"))
				cfg->cuda = false;
			else if (!strcmp(optarg, "cuda"))
				cfg->cuda = true;
			else
				return bad_value(name, optarg, "host or cuda");
			break;
		case OPT_KEYS:
			if (kvr_parse_size(optarg, &cfg->keys) || !cfg->keys ||
			    cfg->keys > (1ull << 32))
				return bad_value(name, optarg, "1 to 4294967296 (K, M suffixes)");
			break;
		case OPT_CONNS:
			if (parse_u32(optarg, 1, 64, &cfg->conns))
				return bad_value(name, optarg, "1 to 64");
			break;
		case OPT_REPLICAS:
			if (parse_u32(optarg, 1, 255, &cfg->replicas))
				return bad_value(name, optarg, "1 or more");
			break;
		case OPT_SECRET_FILE: {
			static uint8_t secret[SECRET_FILE_MAX];
			int rc = secret_file_read(optarg, secret, &cfg->secret_len);

			if (rc) {
				fprintf(stderr, "kvring-bench: --secret-file %s: %s\n", optarg,
					secret_file_strerror(rc));
				return 2;
			}
			cfg->secret = secret;
			break;
		}
		case OPT_HELP:
			usage(stdout);
			exit(0);
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "kvring-bench: unexpected argument '%s'\n", argv[optind]);
		usage(stderr);
		return 2;
	}
	if (a->demo)
		return 0;
	if (a->workload == WL_KVCACHE && (a->seen & PUTGET_ONLY)) {
		fprintf(stderr, "kvring-bench: --op, --size, --sge, --batch, --depth, --seconds, "
				"--keys and --fio belong to --workload put-get\n");
		return 2;
	}
	if (a->workload == WL_PUTGET && (a->seen & KVCACHE_ONLY)) {
		fprintf(stderr, "kvring-bench: --model, --scale, --requests and --contiguous "
				"need --workload kvcache\n");
		return 2;
	}
	if (cfg->cuda && cfg->copy) {
		fprintf(stderr, "kvring-bench: --copy is the host memcpy path and does not apply "
				"to --mem cuda (the library stages device memory itself)\n");
		return 2;
	}
	if (cfg->sge > cfg->size) {
		fprintf(stderr,
			"kvring-bench: --sge %u is more slices than the %llu bytes of an "
			"object\n",
			cfg->sge, (unsigned long long)cfg->size);
		return 2;
	}
	if ((uint64_t)cfg->batch * cfg->depth > (1u << 24)) {
		fprintf(stderr, "kvring-bench: --batch x --depth is too large\n");
		return 2;
	}
	if (strncmp(cfg->target, "mem:", 4) && !bench_file_path(cfg->target) &&
	    !bench_is_remote(cfg->target)) {
		fprintf(stderr,
			"kvring-bench: --target '%s': expected mem:SIZE, file:PATH or "
			"tcp://HOST:PORT[,HOST:PORT...] or rdma://HOST:PORT[,...][?dev=NAME]\n",
			cfg->target);
		return 2;
	}
	if ((cfg->conns || cfg->replicas || cfg->secret) && !bench_is_remote(cfg->target)) {
		fprintf(stderr, "kvring-bench: --conns, --replicas and --secret-file need a "
				"tcp:// target\n");
		return 2;
	}
	if (cfg->fio && !bench_file_path(cfg->target)) {
		fprintf(stderr, "kvring-bench: --fio needs a file:PATH target\n");
		return 2;
	}
	return 0;
}

/* Fail before measuring when the JSON file cannot be written. */
static int check_json_path(const char *path)
{
	FILE *f;

	if (!path || !strcmp(path, "-"))
		return 0;
	f = fopen(path, "a");
	if (!f) {
		fprintf(stderr, "kvring-bench: cannot write %s: %s\n", path, strerror(errno));
		return -1;
	}
	fclose(f);
	return 0;
}

/* The fio reference of a file target: a file next to the store. */
static void run_fio(const struct bench_cfg *cfg, struct bench_result *res)
{
	const char *path = bench_file_path(cfg->target);
	uint32_t iodepth = cfg->batch * cfg->depth;
	uint64_t fsize = res->keys * cfg->size;
	char fio_path[4096];

	if (!path)
		return;
	if (fsize < (uint64_t)iodepth * cfg->size)
		fsize = (uint64_t)iodepth * cfg->size;
	if ((size_t)snprintf(fio_path, sizeof(fio_path), "%s.fio", path) >= sizeof(fio_path)) {
		snprintf(res->ref.why, sizeof(res->ref.why), "store path too long");
		return;
	}
	if (!fio_available()) {
		snprintf(res->ref.why, sizeof(res->ref.why), "fio is not installed");
		return;
	}
	fio_run(fio_path, cfg->op, cfg->size, iodepth, cfg->seconds, fsize, &res->ref);
	fio_cleanup(fio_path);
}

/* Fail before opening anything when --mem cuda cannot work here. */
static int check_cuda(void)
{
	char why[200];
	void *p;

	if (devmem_alloc(4096, &p, why, sizeof(why))) {
		fprintf(stderr, "kvring-bench: --mem cuda: %s\n", why);
		return 2;
	}
	devmem_free(p);
	return 0;
}

/* --workload kvcache: open, run, report. Returns the exit status. */
static int run_kvcache(const struct bench_cfg *cfg, struct kvc_cfg *kc)
{
	bool to_stdout = cfg->json && !strcmp(cfg->json, "-");
	struct kvc_result res;
	struct bench_env env;
	FILE *f;
	int rc;

	kc->target = cfg->target;
	kc->copy = cfg->copy;
	kc->cuda = cfg->cuda;
	kc->json = cfg->json;
	if (bench_env_open(&env, cfg->target, cfg->capacity, kvc_chunks_per_request(kc, kc->scale),
			   cfg))
		return 1;
	rc = kvcache_run(&env, kc, &res);
	bench_env_close(&env);
	if (rc)
		return 1;
	kvcache_summary(to_stdout ? stderr : stdout, &res);
	if (cfg->json) {
		f = report_open(cfg->json);
		if (!f)
			return 1;
		kvcache_json(f, &res);
		if (report_close(f, cfg->json))
			return 1;
	}
	if (res.store.errors || res.load.errors || res.verify_bad) {
		fprintf(
		    stderr,
		    "kvring-bench: kvcache: %llu store and %llu load errors, %llu of %llu chunks "
		    "with wrong bytes\n",
		    (unsigned long long)res.store.errors, (unsigned long long)res.load.errors,
		    (unsigned long long)res.verify_bad, (unsigned long long)res.verified);
		return 1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct bench_cfg cfg = {
	    .target = BENCH_DEF_TARGET,
	    .op = KVR_OP_PUT,
	    .size = BENCH_DEF_SIZE,
	    .sge = BENCH_DEF_SGE,
	    .batch = BENCH_DEF_BATCH,
	    .depth = BENCH_DEF_DEPTH,
	    .seconds = BENCH_DEF_SECONDS,
	};
	struct bench_args args = {.workload = WL_PUTGET};
	struct bench_result res;
	struct bench_env env;
	int rc;

	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc > 1 && !strcmp(argv[1], "suite"))
		return suite_main(argc - 1, argv + 1);
	if (argc <= 1)
		return demo_run(BENCH_DEMO_SECONDS, NULL) ? 1 : 0;
	cfg.seconds = 0;
	rc = parse_args(argc, argv, &cfg, &args);
	if (rc)
		return rc;
	if (check_json_path(cfg.json))
		return 1;
	if (args.demo)
		return demo_run(cfg.seconds > 0 ? cfg.seconds : BENCH_DEMO_SECONDS, cfg.json) ? 1
											      : 0;
	if (cfg.cuda && check_cuda())
		return 2;
	if (args.workload == WL_KVCACHE)
		return run_kvcache(&cfg, &args.kvc);
	if (cfg.seconds <= 0)
		cfg.seconds = BENCH_DEF_SECONDS;

	if (bench_env_open(&env, cfg.target, cfg.capacity, cfg.batch * cfg.depth, &cfg))
		return 1;
	rc = workload_run(&env, &cfg, &res);
	bench_env_close(&env);
	if (rc)
		return 1;
	if (cfg.fio)
		run_fio(&cfg, &res);

	report_summary(cfg.json && !strcmp(cfg.json, "-") ? stderr : stdout, &res);
	if (cfg.json && report_json(cfg.json, &res, 1, false))
		return 1;
	if (res.errors) {
		fprintf(stderr, "kvring-bench: %llu objects failed\n",
			(unsigned long long)res.errors);
		return 1;
	}
	return 0;
}
