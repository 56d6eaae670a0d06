/* SPDX-License-Identifier: MIT */
/*
 * The fio reference: the same shape of I/O (block size = object size, queue
 * depth = objects in flight, random reads or writes, O_DIRECT, io_uring with
 * fixed buffers and files) on a file of its own on the same file system, run
 * as a child process, its JSON output read with a small parser.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* pipe2 */
#endif
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"

/* The file this process had fio lay out (fully written) for reads. */
static char laid_out[4096];
static uint64_t laid_out_size;
/* The child running now (fio, iperf3, redis-benchmark), for fio_kill()
 * from a signal handler. */
static volatile pid_t fio_child;

bool bench_have(const char *prog)
{
	const char *path = getenv("PATH"), *p, *end;
	char buf[4096];
	int len;

	if (!path || !*path)
		path = "/usr/local/bin:/usr/bin:/bin";
	for (p = path;; p = end + 1) {
		end = strchr(p, ':');
		if (!end)
			end = p + strlen(p);
		if (end == p)
			len = snprintf(buf, sizeof(buf), "./%s", prog);
		else
			len = snprintf(buf, sizeof(buf), "%.*s/%s", (int)(end - p), p, prog);
		if (len > 0 && (size_t)len < sizeof(buf) && access(buf, X_OK) == 0)
			return true;
		if (!*end)
			return false;
	}
}

bool fio_available(void)
{
	return bench_have("fio");
}

/* --------------------------------------------------------- a tiny JSON reader */

static bool js_isws(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static const char *js_ws(const char *p)
{
	while (p && js_isws(*p))
		p++;
	return p;
}

/* p at '"': just past the closing quote, or NULL. */
static const char *js_string_end(const char *p)
{
	for (p++; *p; p++) {
		if (*p == '\\') {
			if (!p[1])
				return NULL;
			p++;
		} else if (*p == '"') {
			return p + 1;
		}
	}
	return NULL;
}

/* Just past the value at p, or NULL. */
static const char *js_skip(const char *p)
{
	int depth = 0;

	p = js_ws(p);
	while (*p) {
		if (*p == '"') {
			p = js_string_end(p);
			if (!p || !depth)
				return p;
			continue;
		}
		if (*p == '{' || *p == '[') {
			depth++;
		} else if (*p == '}' || *p == ']') {
			if (!depth)
				return p;
			if (!--depth)
				return p + 1;
		} else if (!depth && (*p == ',' || js_isws(*p))) {
			return p;
		}
		p++;
	}
	return depth ? NULL : p;
}

/* The value of member `key` of the object at p, or NULL. */
static const char *js_member(const char *p, const char *key)
{
	size_t klen = strlen(key);
	const char *k, *e;

	p = js_ws(p);
	if (!p || *p != '{')
		return NULL;
	for (p++;;) {
		p = js_ws(p);
		if (*p != '"')
			return NULL;
		k = p + 1;
		e = js_string_end(p);
		if (!e)
			return NULL;
		p = js_ws(e);
		if (*p != ':')
			return NULL;
		p = js_ws(p + 1);
		if ((size_t)(e - 1 - k) == klen && !memcmp(k, key, klen))
			return p;
		p = js_ws(js_skip(p));
		if (!p || *p != ',')
			return NULL;
		p++;
	}
}

/* The first element of the array at p, or NULL. */
static const char *js_first(const char *p)
{
	p = js_ws(p);
	if (!p || *p != '[')
		return NULL;
	p = js_ws(p + 1);
	return *p == ']' ? NULL : p;
}

static bool js_number(const char *p, double *v)
{
	char *end;

	if (!p)
		return false;
	*v = strtod(p, &end);
	return end != p;
}

int fio_parse(const char *out, enum kvr_op op, struct bench_ref *ref)
{
	const char *root = out, *job, *sec, *pct;
	double bw, iops, v;

	while (root && *root != '{') { /* skip any lines before the document */
		root = strchr(root, '\n');
		if (root)
			root++;
	}
	job = js_first(js_member(root, "jobs"));
	if (!job) {
		snprintf(ref->why, sizeof(ref->why), "no jobs in fio's JSON output");
		return -EPROTO;
	}
	if (js_number(js_member(job, "error"), &v) && v != 0) {
		snprintf(ref->why, sizeof(ref->why), "fio job failed with error %d", (int)v);
		return -EIO;
	}
	sec = js_member(job, op == KVR_OP_GET ? "read" : "write");
	if (!js_number(js_member(sec, "bw_bytes"), &bw) ||
	    !js_number(js_member(sec, "iops"), &iops)) {
		snprintf(ref->why, sizeof(ref->why), "no bw_bytes/iops in fio's %s section",
			 op == KVR_OP_GET ? "read" : "write");
		return -EPROTO;
	}
	ref->gbps = bw / 1e9;
	ref->ops_per_s = iops;
	/* total latency (submission to completion, as kvring measures) when fio
	 * reports it (--lat_percentiles=1), else its completion latency */
	pct = js_member(js_member(sec, "lat_ns"), "percentile");
	if (!pct)
		pct = js_member(js_member(sec, "clat_ns"), "percentile");
	if (js_number(js_member(pct, "50.000000"), &v))
		ref->p50_us = v / 1000;
	if (js_number(js_member(pct, "99.000000"), &v))
		ref->p99_us = v / 1000;
	if (js_number(js_member(pct, "99.900000"), &v))
		ref->p999_us = v / 1000;
	ref->ran = true;
	return 0;
}

/* ------------------------------------------------------------- running fio */

static char *read_all(int fd, size_t *lenp)
{
	size_t cap = 8192, len = 0;
	char *buf = malloc(cap), *nb;
	ssize_t r;

	if (!buf)
		return NULL;
	for (;;) {
		if (cap - len < 4096) {
			nb = realloc(buf, cap * 2);
			if (!nb)
				break;
			buf = nb;
			cap *= 2;
		}
		r = read(fd, buf + len, cap - len - 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		len += (size_t)r;
	}
	buf[len] = '\0';
	*lenp = len;
	return buf;
}

pid_t bench_spawn(char *const argv[], int out, int err)
{
	pid_t pid = fork();
	int devnull;

	if (pid)
		return pid;
	devnull = open("/dev/null", O_RDWR);
	if (devnull >= 0)
		dup2(devnull, 0);
	dup2(out >= 0 ? out : devnull, 1);
	dup2(err >= 0 ? err : devnull, 2);
	execvp(argv[0], argv);
	_exit(127);
}

int bench_run_capture(char *const argv[], char **output)
{
	int fds[2], status;
	size_t len = 0;
	pid_t pid;

	*output = NULL;
	if (pipe2(fds, O_CLOEXEC))
		return -1;
	pid = bench_spawn(argv, fds[1], fds[1]);
	if (pid < 0) {
		close(fds[0]);
		close(fds[1]);
		return -1;
	}
	fio_child = pid;
	close(fds[1]);
	*output = read_all(fds[0], &len);
	close(fds[0]);
	while (waitpid(pid, &status, 0) < 0) {
		if (errno != EINTR) {
			fio_child = 0;
			return -1;
		}
	}
	fio_child = 0;
	if (WIFEXITED(status))
		return WEXITSTATUS(status);
	return 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

/* The last non-empty line of s, for error messages. */
static void last_line(const char *s, char *buf, size_t len)
{
	const char *end, *start;

	buf[0] = '\0';
	if (!s)
		return;
	end = s + strlen(s);
	while (end > s && (end[-1] == '\n' || end[-1] == '\r'))
		end--;
	start = end;
	while (start > s && start[-1] != '\n')
		start--;
	snprintf(buf, len, "%.*s", (int)(end - start), start);
}

static char *read_file(const char *path)
{
	size_t len;
	char *buf;
	int fd;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return NULL;
	buf = read_all(fd, &len);
	close(fd);
	return buf;
}

/* Write the first `size` bytes of the file in big chunks, so that fio reads
 * and overwrites real blocks (it reads a file it finds big enough as it is,
 * and lays one out with writes of the job's block size otherwise: slow at
 * 4 KiB). No O_TRUNC: freeing a fragmented file can take many seconds. */
static int lay_out(const char *path, uint64_t size)
{
	const size_t chunk = 4u << 20;
	uint64_t off, seed = 0x66696f6c61796f75ull;
	uint8_t *buf;
	ssize_t w;
	size_t i, n;
	int fd, rc = 0;

	fd = open(path, O_WRONLY | O_CREAT | O_DIRECT | O_CLOEXEC, 0644);
	if (fd < 0)
		fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	buf = mmap(NULL, chunk, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (buf == MAP_FAILED) {
		close(fd);
		return -ENOMEM;
	}
	for (i = 0; i + 8 <= chunk; i += 8) {
		seed ^= seed << 13;
		seed ^= seed >> 7;
		seed ^= seed << 17;
		memcpy(buf + i, &seed, 8);
	}
	for (off = 0; off < size && !rc; off += n) {
		n = size - off < chunk ? (size_t)(size - off) : chunk;
		w = pwrite(fd, buf, n, (off_t)off);
		if (w < 0 && errno == EINTR)
			n = 0; /* again */
		else if (w <= 0)
			rc = w < 0 ? -errno : -EIO;
		else
			n = (size_t)w;
	}
	if (!rc && fdatasync(fd))
		rc = -errno;
	munmap(buf, chunk);
	close(fd);
	return rc;
}

int fio_run(const char *path, enum kvr_op op, uint64_t bs, uint32_t iodepth, double seconds,
	    uint64_t file_size, struct bench_ref *ref)
{
	char a_file[4200], a_out[4200], a_bs[40], a_depth[40], a_size[48], a_time[40];
	char json_path[4096], line[160], *out = NULL, *doc;
	unsigned long long runtime_ms = (unsigned long long)(seconds * 1000 + 0.5);
	char *argv[20];
	struct stat st;
	size_t i, n;
	int rc, argc = 0;

	memset(ref, 0, sizeof(*ref));
	bs = (bs + 4095) / 4096 * 4096; /* O_DIRECT wants whole blocks */
	if (file_size < bs)
		file_size = bs;
	file_size = (file_size + bs - 1) / bs * bs;
	ref->bs = bs;
	ref->iodepth = iodepth;
	if (!runtime_ms)
		runtime_ms = 1;
	if ((size_t)snprintf(json_path, sizeof(json_path), "%s.json", path) >= sizeof(json_path)) {
		snprintf(ref->why, sizeof(ref->why), "path too long");
		return -ENAMETOOLONG;
	}
	/* a file whose every byte was written, as the store's objects are: lay
	 * one out unless this process did already (fio's writes keep it so) */
	if (strcmp(laid_out, path) || laid_out_size < file_size || stat(path, &st) ||
	    (uint64_t)st.st_size < file_size) {
		laid_out[0] = '\0';
		if (lay_out(path, file_size) == 0) {
			snprintf(laid_out, sizeof(laid_out), "%s", path);
			laid_out_size = file_size;
		} else {
			unlink(path); /* fio lays it out itself (reads), slower */
		}
	}

	/* ':' separates file names for fio; escape it */
	n = (size_t)snprintf(a_file, sizeof(a_file), "--filename=");
	for (i = 0; path[i] && n + 3 < sizeof(a_file); i++) {
		if (path[i] == ':')
			a_file[n++] = '\\';
		a_file[n++] = path[i];
	}
	a_file[n] = '\0';
	snprintf(a_out, sizeof(a_out), "--output=%s", json_path);
	snprintf(a_bs, sizeof(a_bs), "--bs=%llu", (unsigned long long)bs);
	snprintf(a_depth, sizeof(a_depth), "--iodepth=%u", iodepth);
	snprintf(a_size, sizeof(a_size), "--size=%llu", (unsigned long long)file_size);
	snprintf(a_time, sizeof(a_time), "--runtime=%llums", runtime_ms);
	argv[argc++] = "fio";
	argv[argc++] = "--name=ref";
	argv[argc++] = a_file;
	argv[argc++] = "--ioengine=io_uring";
	argv[argc++] = "--direct=1";
	argv[argc++] = a_bs;
	argv[argc++] = a_depth;
	argv[argc++] = "--fixedbufs";
	argv[argc++] = "--registerfiles";
	argv[argc++] = op == KVR_OP_GET ? "--rw=randread" : "--rw=randwrite";
	argv[argc++] = a_size;
	argv[argc++] = a_time;
	argv[argc++] = "--time_based";
	argv[argc++] = "--lat_percentiles=1";
	argv[argc++] = "--output-format=json";
	argv[argc++] = a_out;
	argv[argc] = NULL;

	unlink(json_path);
	rc = bench_run_capture(argv, &out);
	if (rc) {
		last_line(out, line, sizeof(line));
		if (rc < 0)
			snprintf(ref->why, sizeof(ref->why), "cannot run fio");
		else
			snprintf(ref->why, sizeof(ref->why), "fio exited with %d: %s", rc, line);
		free(out);
		unlink(json_path);
		return -EIO;
	}
	free(out);
	doc = read_file(json_path);
	unlink(json_path);
	if (!doc) {
		snprintf(ref->why, sizeof(ref->why), "fio wrote no JSON output");
		return -EIO;
	}
	rc = fio_parse(doc, op, ref);
	free(doc);
	ref->bs = bs;
	ref->iodepth = iodepth;
	if (!rc && op == KVR_OP_GET && !laid_out[0]) {
		snprintf(laid_out, sizeof(laid_out), "%s", path);
		laid_out_size = file_size;
	}
	return rc;
}

/* Async-signal-safe: stop the fio process running now, if any, and wait for
 * it (it writes its output file as it goes). */
void fio_kill(void)
{
	pid_t pid = fio_child;

	if (pid > 0) {
		kill(pid, SIGTERM);
		while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
			;
	}
}

void fio_cleanup(const char *path)
{
	char json_path[4096];

	if (!path)
		return;
	unlink(path);
	if ((size_t)snprintf(json_path, sizeof(json_path), "%s.json", path) < sizeof(json_path))
		unlink(json_path);
	if (!strcmp(laid_out, path))
		laid_out[0] = '\0';
}
