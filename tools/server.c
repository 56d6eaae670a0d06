/* SPDX-License-Identifier: MIT */
/*
 * kvring-server: serves a memory pool (optionally spilling to a file or
 * block device) to kvring clients over TCP. One engine per thread; with
 * several threads the keys are sharded across them (a server group) behind
 * one listening address.
 *
 * Prints exactly one line to stdout once it listens:
 *   kvring-server: listening tcp://HOST:PORT   (or rdma://HOST:PORT)
 * and logs to stderr as "TIME LEVEL SHARD MESSAGE". SIGTERM or SIGINT stops
 * it cleanly: requests in flight are answered (up to 5 s), file stores
 * write their index, and the exit status is 0.
 *
 * It listens at once, whatever --memory: the pool is faulted in and pinned
 * in the background (KVR_STORE_BACKGROUND_FAULT) while it already serves,
 * logging "pool: X of Y ready, T s" and reporting pool_bytes_ready in
 * STATS. --prefault sync does it all before listening instead (seconds per
 * GiB on a fresh machine). An rdma:// server listens at once as well: it
 * registers the pool with its RDMA device per 1 GiB piece as each is
 * faulted in, and an RDMA move into or out of a piece not registered yet
 * waits for it (TCP clients are not held up).
 */
#include "kvring.h"
#include "tools/secret_file.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define CLOSE_TIMEOUT_MS 5000
#define MAX_THREADS	 256

struct cfg {
	const char *listen;
	uint64_t memory;
	const char *file;
	uint64_t file_size;
	uint8_t *secret;
	size_t secret_len;
	uint32_t threads;
	uint32_t max_conns;
	uint64_t max_object;
	uint32_t idle_timeout_ms;
	int log_level;
	bool prefault_sync;
	uint64_t prefault_rate;
};

struct shard {
	uint32_t idx;
	pthread_t th;
	kvr_engine *e;
	int rc; /* startup result */
	bool started;
	bool close_failed;
	char addr[128];
	char err[320];
};

static struct cfg cfg;
static kvr_server_group *group;
static struct shard *shards;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static uint32_t nstarted;
static int quit; /* set by the main thread, read by the shards */

static void usage(FILE *f)
{
	fprintf(f, "usage: kvring-server [options]\n"
		   "  --listen URI              tcp://HOST:PORT, or rdma://HOST:PORT[?dev=NAME\n"
		   "                            &gid=N] to serve RDMA clients too (their\n"
		   "                            requests over queue pairs, set up over this TCP\n"
		   "                            address; TCP clients are served as well)\n"
		   "                            (default tcp://127.0.0.1:7700; port 0 picks a\n"
		   "                            free one)\n"
		   "  --memory SIZE             memory pool, split across threads (default 1G)\n"
		   "  --file PATH               spill evicted objects to this file or block\n"
		   "                            device (PATH.<i> per thread when --threads > 1)\n"
		   "  --file-size SIZE          spill capacity, split across threads (default:\n"
		   "                            the file's size, or 1G for a new file)\n"
		   "  --auth-file FILE          require clients to prove this secret (the\n"
		   "                            file's bytes, trailing newline stripped)\n"
		   "  --threads N               engines (shards), default 1\n"
		   "  --max-conns N             connections per thread (default 1024)\n"
		   "  --max-object SIZE         largest object a put may store (default and\n"
		   "                            cap: a quarter of a thread's memory)\n"
		   "  --idle-timeout MS         close a connection stuck in its handshake or\n"
		   "                            mid-frame this long (plus its payload at\n"
		   "                            64 MiB/s); a full table reclaims connections\n"
		   "                            idle this long; one whose answers wait unread\n"
		   "                            this long is reset (default 30000)\n"
		   "  --prefault MODE           background (default): listen at once and fault\n"
		   "                            the pool in (and pin it, and register it with\n"
		   "                            the RDMA device per GiB) while serving, the\n"
		   "                            progress in the log and in STATS\n"
		   "                            (pool_bytes_ready); RDMA moves touching a GiB\n"
		   "                            not ready yet wait for it; sync: all of it\n"
		   "                            before listening (seconds per GiB on a fresh\n"
		   "                            machine)\n"
		   "  --prefault-rate SIZE      background faulting: at most SIZE per second,\n"
		   "                            split across threads (default: no limit)\n"
		   "  --log-level LEVEL         error, warn, info (default) or debug\n"
		   "  --help\n"
		   "SIZE takes a K, M, G or T suffix (powers of 1024).\n");
}

static void die_usage(const char *fmt, const char *arg)
{
	fprintf(stderr, "kvring-server: ");
	fprintf(stderr, fmt, arg);
	fprintf(stderr, "\n");
	usage(stderr);
	exit(2);
}

static void log_sink(void *ctx, int level, const char *msg)
{
	static const char *names[] = {"error", "warn", "info", "debug"};
	const struct shard *sh = ctx;
	struct timespec ts;
	struct tm tm;
	char t[32], line[768];
	int n;

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	strftime(t, sizeof(t), "%Y-%m-%dT%H:%M:%S", &tm);
	n = snprintf(line, sizeof(line), "%s.%03ldZ %s %u %s\n", t, ts.tv_nsec / 1000000,
		     names[level < 0   ? 0
			   : level > 3 ? 3
				       : level],
		     sh ? sh->idx : 0, msg);
	if (n > (int)sizeof(line) - 1)
		n = (int)sizeof(line) - 1;
	if (write(STDERR_FILENO, line, (size_t)n) < 0) {
		/* nowhere left to report it */
	}
}

static uint64_t parse_size_opt(const char *name, const char *v)
{
	uint64_t x;

	if (kvr_parse_size(v, &x) || !x)
		die_usage(name, v);
	return x;
}

static uint32_t parse_count(const char *name, const char *v, uint32_t max)
{
	char *end;
	unsigned long x;

	errno = 0;
	x = strtoul(v, &end, 10);
	if (errno || *end || !*v || x < 1 || x > max)
		die_usage(name, v);
	return (uint32_t)x;
}

static void parse_args(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"listen", required_argument, NULL, 'l'},
	    {"memory", required_argument, NULL, 'm'},
	    {"file", required_argument, NULL, 'f'},
	    {"file-size", required_argument, NULL, 's'},
	    {"auth-file", required_argument, NULL, 'a'},
	    {"threads", required_argument, NULL, 't'},
	    {"max-conns", required_argument, NULL, 'c'},
	    {"max-object", required_argument, NULL, 'o'},
	    {"idle-timeout", required_argument, NULL, 'i'},
	    {"log-level", required_argument, NULL, 'v'},
	    {"prefault", required_argument, NULL, 'p'},
	    {"prefault-rate", required_argument, NULL, 'r'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	const char *auth = NULL;
	int c, rc;

	cfg.listen = "tcp://127.0.0.1:7700";
	cfg.memory = 1ull << 30;
	cfg.threads = 1;
	cfg.log_level = KVR_LOG_INFO;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'l':
			if (strncmp(optarg, "tcp://", 6) != 0 && strncmp(optarg, "rdma://", 7) != 0)
				die_usage("--listen wants tcp://HOST:PORT or "
					  "rdma://HOST:PORT[?dev=NAME&gid=N], not '%s'",
					  optarg);
			cfg.listen = optarg;
			break;
		case 'm':
			cfg.memory = parse_size_opt("bad --memory size '%s'", optarg);
			break;
		case 'f':
			if (!*optarg)
				die_usage("--file wants a path%s", "");
			cfg.file = optarg;
			break;
		case 's':
			cfg.file_size = parse_size_opt("bad --file-size '%s'", optarg);
			break;
		case 'a':
			auth = optarg;
			break;
		case 't':
			cfg.threads =
			    parse_count("bad --threads '%s' (1..256)", optarg, MAX_THREADS);
			break;
		case 'c':
			cfg.max_conns = parse_count("bad --max-conns '%s'", optarg, 1u << 20);
			break;
		case 'o':
			cfg.max_object = parse_size_opt("bad --max-object size '%s'", optarg);
			break;
		case 'i':
			cfg.idle_timeout_ms = parse_count(
			    "bad --idle-timeout '%s' (1..86400000 ms)", optarg, 86400000u);
			break;
		case 'v':
			if (!strcmp(optarg, "error"))
				cfg.log_level = KVR_LOG_ERROR;
			else if (!strcmp(optarg, "warn"))
				cfg.log_level = KVR_LOG_WARN;
			else if (!strcmp(optarg, "info"))
				cfg.log_level = KVR_LOG_INFO;
			else if (!strcmp(optarg, "debug"))
				cfg.log_level = KVR_LOG_DEBUG;
			else
				die_usage("bad --log-level '%s' (error, warn, info, debug)",
					  optarg);
			break;
		case 'p':
			if (!strcmp(optarg, "sync"))
				cfg.prefault_sync = true;
			else if (!strcmp(optarg, "background"))
				cfg.prefault_sync = false;
			else
				die_usage("bad --prefault '%s' (background, sync)", optarg);
			break;
		case 'r':
			cfg.prefault_rate = parse_size_opt("bad --prefault-rate '%s'", optarg);
			break;
		case 'h':
			usage(stdout);
			exit(0);
		default:
			usage(stderr);
			exit(2);
		}
	}
	if (optind < argc)
		die_usage("unexpected argument '%s'", argv[optind]);
	if (cfg.file_size && !cfg.file)
		die_usage("--file-size needs --file%s", "");
	if (cfg.prefault_rate && cfg.prefault_sync)
		die_usage("--prefault-rate needs --prefault background%s", "");
	if (cfg.memory / cfg.threads < (1u << 20))
		die_usage("--memory leaves less than 1M per thread%s", "");
	if (auth) {
		static uint8_t secret[SECRET_FILE_MAX];

		rc = secret_file_read(auth, secret, &cfg.secret_len);
		if (rc) {
			fprintf(stderr, "kvring-server: --auth-file '%s': %s\n", auth,
				secret_file_strerror(rc));
			exit(2);
		}
		cfg.secret = secret;
	}
}

/* ---------------------------------------------------------------- shards */

static void started(struct shard *sh, int rc)
{
	pthread_mutex_lock(&mu);
	sh->rc = rc;
	sh->started = true;
	nstarted++;
	pthread_cond_broadcast(&cv);
	pthread_mutex_unlock(&mu);
}

static int open_stores(struct shard *sh, kvr_target **mem, kvr_target **file)
{
	struct kvr_store_opts so = {.size = sizeof(so)};
	char uri[4200];
	int rc;

	so.capacity = cfg.memory / cfg.threads;
	if (!cfg.prefault_sync) {
		so.flags = KVR_STORE_BACKGROUND_FAULT;
		so.fault_rate =
		    cfg.prefault_rate ? (cfg.prefault_rate + cfg.threads - 1) / cfg.threads : 0;
	}
	rc = kvr_store_open(sh->e, "mem:", &so, mem);
	if (rc) {
		snprintf(sh->err, sizeof(sh->err), "memory store: %s (%.200s)", kvr_strerror(rc),
			 kvr_engine_errmsg(sh->e));
		return rc;
	}
	if (!cfg.file)
		return 0;
	if (cfg.threads == 1)
		snprintf(uri, sizeof(uri), "file:%s", cfg.file);
	else
		snprintf(uri, sizeof(uri), "file:%s.%u", cfg.file, sh->idx);
	so.capacity = cfg.file_size / cfg.threads;
	so.flags = 0;
	so.fault_rate = 0;
	rc = kvr_store_open(sh->e, uri, &so, file);
	if (rc)
		snprintf(sh->err, sizeof(sh->err), "%.200s: %s (%.80s)", uri + 5, kvr_strerror(rc),
			 kvr_engine_errmsg(sh->e));
	return rc;
}

static void *shard_main(void *arg)
{
	struct shard *sh = arg;
	struct kvr_engine_opts eo = {
	    .size = sizeof(eo), .log = log_sink, .log_ctx = sh, .log_level = cfg.log_level};
	struct kvr_serve_opts so = {.size = sizeof(so)};
	kvr_target *mem = NULL, *file = NULL;
	kvr_server *srv = NULL;
	int rc;

	kvr_engine *e = NULL;

	rc = kvr_engine_create(&eo, &e);
	pthread_mutex_lock(&mu);
	sh->e = e;
	pthread_mutex_unlock(&mu);
	if (rc) {
		snprintf(sh->err, sizeof(sh->err), "engine: %s", kvr_strerror(rc));
		started(sh, rc);
		return NULL;
	}
	rc = open_stores(sh, &mem, &file);
	if (!rc) {
		so.max_conns = cfg.max_conns;
		so.max_object = cfg.max_object;
		so.idle_timeout_ms = cfg.idle_timeout_ms;
		so.secret = cfg.secret;
		so.secret_len = cfg.secret_len;
		so.spill = file;
		so.group = group;
		so.shard = sh->idx;
		rc = kvr_serve(sh->e, sh->idx == 0 ? cfg.listen : NULL, mem, &so, &srv);
		if (rc)
			snprintf(sh->err, sizeof(sh->err), "serve %.100s: %s (%.150s)", cfg.listen,
				 kvr_strerror(rc), kvr_engine_errmsg(sh->e));
		else if (sh->idx == 0)
			kvr_server_addr(srv, sh->addr, sizeof(sh->addr));
	}
	started(sh, rc);
	while (!rc && !__atomic_load_n(&quit, __ATOMIC_ACQUIRE)) {
		int prc = kvr_engine_poll(sh->e, -1);

		if (prc < 0) {
			log_sink(sh, KVR_LOG_ERROR, "engine poll failed; stopping");
			break;
		}
	}
	if (srv)
		kvr_server_close(srv, CLOSE_TIMEOUT_MS);
	if (file && kvr_target_close(file)) {
		log_sink(sh, KVR_LOG_ERROR, "spill store: final write failed");
		sh->close_failed = true;
	}
	if (mem)
		kvr_target_close(mem);
	pthread_mutex_lock(&mu); /* stop_all may be waking this engine */
	kvr_engine_destroy(sh->e);
	sh->e = NULL;
	pthread_mutex_unlock(&mu);
	return NULL;
}

static void stop_all(uint32_t n)
{
	__atomic_store_n(&quit, 1, __ATOMIC_RELEASE);
	pthread_mutex_lock(&mu);
	for (uint32_t i = 0; i < n; i++) {
		if (shards[i].e) {
			kvr_engine_stop(shards[i].e);
			kvr_engine_wake(shards[i].e);
		}
	}
	pthread_mutex_unlock(&mu);
}

int main(int argc, char **argv)
{
	sigset_t sigs;
	uint32_t n = 0;
	int sig, status = 0, rc;

	parse_args(argc, argv);
	/* Every thread inherits the mask; only sigwait below takes them. */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);

	if (cfg.threads > 1) {
		rc = kvr_server_group_create(cfg.threads, &group);
		if (rc) {
			fprintf(stderr, "kvring-server: server group: %s\n", kvr_strerror(rc));
			return 1;
		}
	}
	shards = calloc(cfg.threads, sizeof(*shards));
	if (!shards)
		return 1;
	for (; n < cfg.threads; n++) {
		shards[n].idx = n;
		if (pthread_create(&shards[n].th, NULL, shard_main, &shards[n])) {
			fprintf(stderr, "kvring-server: cannot start thread %u\n", n);
			status = 1;
			break;
		}
	}
	pthread_mutex_lock(&mu);
	while (nstarted < n)
		pthread_cond_wait(&cv, &mu);
	pthread_mutex_unlock(&mu);
	for (uint32_t i = 0; i < n; i++) {
		if (shards[i].rc) {
			fprintf(stderr, "kvring-server: shard %u: %s\n", i, shards[i].err);
			status = 1;
		}
	}
	if (!status) {
		printf("kvring-server: listening %s\n", shards[0].addr);
		fflush(stdout);
		sigwait(&sigs, &sig);
		log_sink(&shards[0], KVR_LOG_INFO,
			 sig == SIGTERM ? "SIGTERM: shutting down" : "SIGINT: shutting down");
	}
	stop_all(n);
	for (uint32_t i = 0; i < n; i++) {
		pthread_join(shards[i].th, NULL);
		if (shards[i].rc || shards[i].close_failed)
			status = 1;
	}
	kvr_server_group_destroy(group);
	free(shards);
	return status;
}
