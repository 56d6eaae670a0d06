/* SPDX-License-Identifier: MIT */
/*
 * The references of kvring-bench suite, measured in the same run as
 * kvring's own figures:
 *
 *   iperf3 -P N       raw loopback TCP throughput (the wire's ceiling)
 *   redis-benchmark   SET/GET against a private redis-server (no
 *                     persistence): what a KV-cache layer would otherwise
 *                     use as a remote memory pool
 *   memcpy            bandwidth of one core copying objects (the ceiling
 *                     of the copy path kvring's SGLs remove)
 *
 * (fio, the file store's reference, is fio.c.) The servers are children of
 * this process; ref_kill() stops them from a signal handler, and
 * ref_redis_stop() at the end.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"

static volatile pid_t redis_pid, iperf_pid;
static int redis_port;

/* A port on 127.0.0.1 that nothing listens on now (0: none found). */
static int free_port(void)
{
	struct sockaddr_in sa = {.sin_family = AF_INET};
	socklen_t len = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), port = 0;

	if (fd < 0)
		return 0;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (!bind(fd, (struct sockaddr *)&sa, sizeof(sa)) &&
	    !getsockname(fd, (struct sockaddr *)&sa, &len))
		port = ntohs(sa.sin_port);
	close(fd);
	return port;
}

static bool port_open(int port)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	bool ok;

	if (fd < 0)
		return false;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ok = !connect(fd, (struct sockaddr *)&sa, sizeof(sa));
	close(fd);
	return ok;
}

static void reap(volatile pid_t *pidp)
{
	pid_t pid = *pidp;

	if (pid <= 0)
		return;
	kill(pid, SIGTERM);
	while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
		;
	*pidp = 0;
}

static volatile pid_t kvs_pid;

void ref_kill(void)
{
	pid_t p = redis_pid, q = iperf_pid, k = kvs_pid;

	if (k > 0)
		kill(k, SIGKILL);
	if (p > 0)
		kill(p, SIGKILL);
	if (q > 0)
		kill(q, SIGKILL);
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};

	nanosleep(&ts, NULL);
}

/* ------------------------------------------------------------------ iperf3 */

/* The number after "key": at or after p (NULL when there is none). */
static bool num_after(const char *p, const char *key, double *v)
{
	char *end;

	p = p ? strstr(p, key) : NULL;
	if (!p)
		return false;
	p = strchr(p + strlen(key), ':');
	if (!p)
		return false;
	*v = strtod(p + 1, &end);
	return end != p + 1;
}

int ref_iperf3(uint32_t streams, double seconds, struct ref_iperf *r)
{
	char a_port[16], a_streams[16], a_time[32], *out = NULL;
	char *srv[] = {"iperf3", "-s", "-1", "-B", "127.0.0.1", "-p", a_port, NULL};
	char *cli[] = {"iperf3",  "-c", "127.0.0.1", "-p", a_port, "-P",
		       a_streams, "-t", a_time,	     "-J", NULL};
	const char *end;
	int port = free_port(), rc = -1, tries;
	double bps;

	memset(r, 0, sizeof(*r));
	if (!bench_have("iperf3")) {
		snprintf(r->why, sizeof(r->why), "iperf3 is not installed");
		return -ENOENT;
	}
	if (!port) {
		snprintf(r->why, sizeof(r->why), "no free port");
		return -EADDRINUSE;
	}
	snprintf(a_port, sizeof(a_port), "%d", port);
	snprintf(a_streams, sizeof(a_streams), "%u", streams);
	snprintf(a_time, sizeof(a_time), "%.3g", seconds < 1 ? 1 : seconds);
	iperf_pid = bench_spawn(srv, -1, -1);
	if (iperf_pid < 0) {
		iperf_pid = 0;
		snprintf(r->why, sizeof(r->why), "cannot start iperf3 -s");
		return -errno;
	}
	/* a connect probe would use up the server's one test: retry the client */
	for (tries = 0; tries < 40; tries++) {
		sleep_ms(50);
		free(out);
		rc = bench_run_capture(cli, &out);
		if (!rc)
			break;
	}
	reap(&iperf_pid);
	if (rc) {
		snprintf(r->why, sizeof(r->why), "iperf3 -c failed (%d)", rc);
		free(out);
		return -EIO;
	}
	end = out ? strstr(out, "\"end\"") : NULL;
	if (!num_after(end ? strstr(end, "\"sum_received\"") : NULL, "\"bits_per_second\"", &bps)) {
		snprintf(r->why, sizeof(r->why), "no sum_received in iperf3's JSON");
		free(out);
		return -EPROTO;
	}
	r->gbps = bps / 8 / 1e9;
	num_after(end, "\"host_total\"", &r->cpu_host_pct);
	num_after(end, "\"remote_total\"", &r->cpu_remote_pct);
	r->ran = true;
	free(out);
	return 0;
}

/* ------------------------------------------------------------------- redis */

int ref_redis_start(char *why, size_t why_len)
{
	char a_port[16];
	char *argv[] = {
	    "redis-server", "--port", a_port,	     "--bind", "127.0.0.1",	   "--save", "",
	    "--appendonly", "no",     "--daemonize", "no",     "--protected-mode", "yes",    NULL};
	int i;

	if (redis_pid > 0)
		return 0;
	if (!bench_have("redis-server") || !bench_have("redis-benchmark")) {
		snprintf(why, why_len, "redis-server/redis-benchmark are not installed");
		return -ENOENT;
	}
	redis_port = free_port();
	if (!redis_port) {
		snprintf(why, why_len, "no free port");
		return -EADDRINUSE;
	}
	snprintf(a_port, sizeof(a_port), "%d", redis_port);
	redis_pid = bench_spawn(argv, -1, -1);
	if (redis_pid < 0) {
		redis_pid = 0;
		snprintf(why, why_len, "cannot start redis-server");
		return -EIO;
	}
	for (i = 0; i < 200; i++) {
		if (port_open(redis_port))
			return 0;
		if (waitpid(redis_pid, NULL, WNOHANG) == redis_pid) {
			redis_pid = 0;
			break;
		}
		sleep_ms(25);
	}
	reap(&redis_pid);
	snprintf(why, why_len, "redis-server did not start listening");
	return -EIO;
}

void ref_redis_stop(void)
{
	reap(&redis_pid);
}

/* One "====== NAME ======" section of redis-benchmark's output. */
static void redis_section(const char *p, const char *end, uint64_t size, struct ref_redis *r)
{
	const char *q;
	double pct, ms, v[6];
	char *e;
	int i;

	memset(r, 0, sizeof(*r));
	r->p999_ms = -1;
	q = strstr(p, "Latency by percentile distribution:");
	if (q && q < end) {
		for (q = strchr(q, '\n'); q && q < end; q = strchr(q, '\n')) {
			q++;
			pct = strtod(q, &e);
			if (e == q || strncmp(e, "% <= ", 5))
				break;
			ms = strtod(e + 5, NULL);
			if (pct >= 99.9 && r->p999_ms < 0)
				r->p999_ms = ms;
		}
	}
	q = strstr(p, "throughput summary:");
	if (!q || q > end || !num_after(q, "summary", &r->ops_per_s)) {
		snprintf(r->why, sizeof(r->why), "no throughput summary in redis-benchmark output");
		return;
	}
	q = strstr(p, "latency summary (msec):");
	if (q && q < end) {
		q = strchr(q, '\n');
		q = q ? strchr(q + 1, '\n') : NULL; /* skip the column names */
		for (i = 0; q && i < 6; i++) {
			v[i] = strtod(q, &e);
			if (e == q)
				break;
			q = e;
		}
		if (i == 6) {
			r->avg_ms = v[0];
			r->p50_ms = v[2];
			r->p99_ms = v[4];
		}
	}
	r->gbps = r->ops_per_s * (double)size / 1e9;
	r->ran = true;
}

int ref_redis_parse(const char *out, struct ref_redis *set, struct ref_redis *get)
{
	const char *s = out ? strstr(out, "====== SET ======") : NULL;
	const char *g = out ? strstr(out, "====== GET ======") : NULL;
	const char *d;
	double size = 0;

	d = out ? strstr(out, " bytes payload") : NULL;
	if (d) {
		while (d > out && d[-1] >= '0' && d[-1] <= '9')
			d--;
		size = strtod(d, NULL);
	}
	if (!s || !g) {
		snprintf(set->why, sizeof(set->why),
			 "no SET/GET sections in redis-benchmark output");
		snprintf(get->why, sizeof(get->why), "%s", set->why);
		set->ran = get->ran = false;
		return -EPROTO;
	}
	redis_section(s, s < g ? g : s + strlen(s), (uint64_t)size, set);
	redis_section(g, g < s ? s : g + strlen(g), (uint64_t)size, get);
	return set->ran && get->ran ? 0 : -EPROTO;
}

int ref_redis_bench(uint64_t size, uint32_t clients, uint32_t pipeline, uint64_t n,
		    struct ref_redis *set, struct ref_redis *get)
{
	char a_port[16], a_size[24], a_c[16], a_p[16], a_n[24], *out = NULL;
	char *argv[] = {"redis-benchmark",
			"-h",
			"127.0.0.1",
			"-p",
			a_port,
			"-d",
			a_size,
			"-c",
			a_c,
			"-P",
			a_p,
			"-n",
			a_n,
			"-t",
			"set,get",
			NULL};
	int rc;

	memset(set, 0, sizeof(*set));
	memset(get, 0, sizeof(*get));
	if (redis_pid <= 0) {
		snprintf(set->why, sizeof(set->why), "no redis-server running");
		snprintf(get->why, sizeof(get->why), "no redis-server running");
		return -ENOENT;
	}
	snprintf(a_port, sizeof(a_port), "%d", redis_port);
	snprintf(a_size, sizeof(a_size), "%llu", (unsigned long long)size);
	snprintf(a_c, sizeof(a_c), "%u", clients);
	snprintf(a_p, sizeof(a_p), "%u", pipeline);
	snprintf(a_n, sizeof(a_n), "%llu", (unsigned long long)n);
	rc = bench_run_capture(argv, &out);
	if (rc) {
		snprintf(set->why, sizeof(set->why), "redis-benchmark exited with %d", rc);
		snprintf(get->why, sizeof(get->why), "%s", set->why);
		free(out);
		return -EIO;
	}
	rc = ref_redis_parse(out, set, get);
	free(out);
	return rc;
}

/* ------------------------------------------------------------------ memcpy */

#define MEMCPY_SPAN (64ull << 20)

double ref_memcpy_gbps(uint64_t size, double seconds)
{
	uint64_t span = size > MEMCPY_SPAN ? size : MEMCPY_SPAN, off = 0, bytes = 0;
	uint64_t t0, t, stop;
	uint8_t *src, *dst;

	src = mmap(NULL, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	dst = mmap(NULL, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (src == MAP_FAILED || dst == MAP_FAILED) {
		if (src != MAP_FAILED)
			munmap(src, span);
		if (dst != MAP_FAILED)
			munmap(dst, span);
		return 0;
	}
	memset(src, 0x5a, span); /* fault both in before timing */
	memset(dst, 0xa5, span);
	t0 = bench_now_ns();
	stop = t0 + (uint64_t)(seconds * 1e9);
	do { /* read the clock once per 64 KiB or per object, whichever is more */
		uint64_t i, n = size >= 65536 ? 1 : 65536 / size;

		for (i = 0; i < n; i++) {
			memcpy(dst + off, src + off, size);
			bytes += size;
			off += size;
			if (off + size > span)
				off = 0;
		}
		t = bench_now_ns();
	} while (t < stop);
	__asm__ volatile("" : : "r"(dst) : "memory");
	munmap(src, span);
	munmap(dst, span);
	return t > t0 ? (double)bytes / (double)(t - t0) : 0;
}

/* ------------------------------------------------------ kvring-server */

/* kvring-server beside this program: perf/../tools/ in a build tree, the
 * same directory when installed, else on PATH. */
static bool kvs_find(char *path, size_t len)
{
	static const char *const rel[] = {"/../tools/kvring-server", "/kvring-server"};
	char self[PATH_MAX], *slash;
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	size_t i;

	if (n > 0) {
		self[n] = '\0';
		slash = strrchr(self, '/');
		if (slash) {
			*slash = '\0';
			for (i = 0; i < sizeof(rel) / sizeof(rel[0]); i++)
				if ((size_t)snprintf(path, len, "%s%s", self, rel[i]) < len &&
				    access(path, X_OK) == 0)
					return true;
		}
	}
	snprintf(path, len, "kvring-server");
	return bench_have("kvring-server");
}

int ref_kvring_server_start(uint64_t mem_bytes, char *uri, size_t uri_len, char *why,
			    size_t why_len)
{
	char bin[PATH_MAX], a_mem[32], line[512];
	/* --prefault sync: rows measure a ready pool, not one still being
	 * faulted in by a thread of the server while it serves */
	char *argv[] = {bin,	"--listen", "tcp://127.0.0.1:0", "--memory", a_mem, "--prefault",
			"sync", NULL};
	const char *tag = "listening ";
	size_t have = 0;
	uint64_t t0 = bench_now_ns();
	int fds[2];

	if (!kvs_find(bin, sizeof(bin))) {
		snprintf(why, why_len, "kvring-server not found beside kvring-bench or on PATH");
		return -ENOENT;
	}
	snprintf(a_mem, sizeof(a_mem), "%llu", (unsigned long long)mem_bytes);
	if (pipe2(fds, O_CLOEXEC))
		return -errno;
	kvs_pid = bench_spawn(argv, fds[1], -1);
	close(fds[1]);
	if (kvs_pid < 0) {
		kvs_pid = 0;
		close(fds[0]);
		snprintf(why, why_len, "cannot fork: %s", strerror(errno));
		return -EIO;
	}
	/* its first line says where it listens, once the pool is ready */
	while (have + 1 < sizeof(line) && bench_now_ns() - t0 < 60ull * 1000000000ull) {
		ssize_t r = read(fds[0], line + have, sizeof(line) - 1 - have);
		char *p, *nl;

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		have += (size_t)r;
		line[have] = '\0';
		p = strstr(line, tag);
		nl = p ? strchr(p, '\n') : NULL;
		if (nl) {
			*nl = '\0';
			snprintf(uri, uri_len, "%s", p + strlen(tag));
			close(fds[0]); /* it writes nothing more to stdout */
			return 0;
		}
	}
	close(fds[0]);
	reap(&kvs_pid);
	snprintf(why, why_len, "%s did not report where it listens", bin);
	return -EIO;
}

void ref_kvring_server_stop(void)
{
	reap(&kvs_pid);
}
