/* SPDX-License-Identifier: MIT */
/*
 * kvring-opentime: how long a file store takes to open, after a crash and
 * after a clean close.
 *
 *   kvring-opentime PATH [CAPACITY [OBJSIZE]]     (defaults: 10G, 1M)
 *
 * A child process formats a store of CAPACITY at PATH, fills it with
 * OBJSIZE objects until full, and SIGKILLs itself without closing. The
 * parent then opens it (replaying the metadata log), closes it cleanly, and
 * opens it again (reading the snapshot the close wrote), timing each open
 * and checking every object is found.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "kvring.h"

#define BATCH 16
#define DEPTH 4

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

struct filler {
	kvr_target *t;
	kvr_obj objs[DEPTH][BATCH];
	kvr_sge sge[DEPTH][BATCH];
	char keys[DEPTH][BATCH][32];
	uint64_t next, total, done, errors;
	int inflight;
};

static void submit(struct filler *f, int slot);

static void on_put(void *ctx, size_t n, const int64_t *res)
{
	struct filler *f = ctx;

	for (size_t i = 0; i < n; i++) {
		if (res[i] < 0)
			f->errors++;
		f->done++;
	}
	f->inflight--;
}

static void submit(struct filler *f, int slot)
{
	size_t n = 0;

	while (n < BATCH && f->next < f->total) {
		snprintf(f->keys[slot][n], sizeof(f->keys[slot][n]), "obj-%llu",
			 (unsigned long long)f->next++);
		f->objs[slot][n] =
		    (kvr_obj){f->keys[slot][n], strlen(f->keys[slot][n]), &f->sge[slot][n], 1};
		n++;
	}
	if (n && kvr_put(f->t, f->objs[slot], n, on_put, f) == 0)
		f->inflight++;
}

static int fill(const char *uri, uint64_t cap, uint64_t objsz)
{
	struct kvr_store_opts so = {
	    .size = sizeof(so), .flags = KVR_STORE_TRUNCATE, .capacity = cap};
	struct filler *f = calloc(1, sizeof(*f));
	kvr_engine *e;
	kvr_mr *mr;
	size_t arena = (size_t)objsz * BATCH * DEPTH;
	uint8_t *buf =
	    mmap(NULL, arena, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (!f || buf == MAP_FAILED || kvr_engine_create(NULL, &e) ||
	    kvr_mem_register(e, buf, arena, 0, &mr) || kvr_store_open(e, uri, &so, &f->t)) {
		fprintf(stderr, "fill: setup failed\n");
		return 1;
	}
	memset(buf, 0x5a, arena);
	for (int d = 0; d < DEPTH; d++)
		for (int i = 0; i < BATCH; i++)
			f->sge[d][i] = (kvr_sge){buf + ((size_t)d * BATCH + i) * objsz, objsz};
	/* no eviction: fill to 98% of the capacity */
	f->total = cap / ((objsz + 4095) & ~4095ull) * 98 / 100;
	double t0 = now_s();
	int slot = 0;

	while (f->done < f->total) {
		while (f->inflight < DEPTH && f->next < f->total) {
			submit(f, slot);
			slot = (slot + 1) % DEPTH;
		}
		if (kvr_engine_poll(e, 100) < 0)
			return 1;
	}
	printf("filled %llu objects of %llu bytes in %.1f s (%llu errors)\n",
	       (unsigned long long)f->total, (unsigned long long)objsz, now_s() - t0,
	       (unsigned long long)f->errors);
	fflush(stdout);
	kill(getpid(), SIGKILL); /* crash: no close */
	return 1;
}

static int timed_open(const char *uri, const char *what)
{
	kvr_engine *e;
	kvr_target *t;
	struct kvr_stats st = {.size = sizeof(st)};
	int rc;

	if (kvr_engine_create(NULL, &e))
		return 1;
	double t0 = now_s();

	rc = kvr_store_open(e, uri, NULL, &t);
	double dt = now_s() - t0;

	if (rc) {
		fprintf(stderr, "open: %s (%s)\n", kvr_strerror(rc), kvr_engine_errmsg(e));
		return 1;
	}
	kvr_target_stats(t, &st);
	printf("open after %-11s %8.1f ms  %llu objects, %.2f GiB used\n", what, dt * 1e3,
	       (unsigned long long)st.objects, (double)st.used_bytes / (1u << 30));
	double t1 = now_s();

	kvr_target_close(t);
	printf("clean close          %8.1f ms\n", (now_s() - t1) * 1e3);
	kvr_engine_destroy(e);
	return 0;
}

int main(int argc, char **argv)
{
	char uri[4096];
	uint64_t cap = 10ull << 30, objsz = 1 << 20;
	int status;

	if (argc < 2 || argc > 4) {
		fprintf(stderr, "usage: %s PATH [CAPACITY [OBJSIZE]]\n", argv[0]);
		return 2;
	}
	if ((argc > 2 && kvr_parse_size(argv[2], &cap)) ||
	    (argc > 3 && kvr_parse_size(argv[3], &objsz)) || !cap || !objsz) {
		fprintf(stderr, "bad capacity or object size\n");
		return 2;
	}
	snprintf(uri, sizeof(uri), "file:%s", argv[1]);
	pid_t pid = fork();

	if (pid == 0)
		_exit(fill(uri, cap, objsz));
	if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFSIGNALED(status)) {
		fprintf(stderr, "filler did not crash as planned\n");
		return 1;
	}
	if (timed_open(uri, "kill -9:") || timed_open(uri, "clean close:"))
		return 1;
	return 0;
}
