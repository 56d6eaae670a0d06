/* SPDX-License-Identifier: MIT */
/*
 * The quick-start demo (kvring-bench with no arguments): a temporary memory
 * store, a temporary file store and a loopback kvring server (kvr_serve on
 * a thread of this process, its own engine and memory pool, reached over
 * tcp://127.0.0.1), puts and gets of 4 KiB, 256 KiB and 4 MiB objects, the
 * copy path at 4 MiB, fio beside the file store, one table.
 */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "bench.h"

#define DEMO_MEM_URI	   "mem:1G"
#define DEMO_FILE_CAPACITY (4ull << 30)
#define DEMO_FIO_SIZE	   (1ull << 30) /* covers the largest key space (256 x 4M) */
#define DEMO_COPY_SIZE	   (4ull << 20)

static const struct {
	uint64_t size;
	uint32_t batch, depth;
} demo_shapes[] = {
    {4096, 64, 4},
    {256 << 10, 8, 4},
    {4 << 20, 8, 4},
};

#define DEMO_TARGETS	3
#define DEMO_ROWS	(DEMO_TARGETS * 2 * sizeof(demo_shapes) / sizeof(demo_shapes[0]))
#define DEMO_SERVER_MEM (1200ull << 20) /* the largest key space (256 x 4M) and room */

static char demo_dir[PATH_MAX - 64];
static char demo_store[PATH_MAX]; /* the URI: "file:" + path */
static char demo_fio[PATH_MAX];
static char demo_fio_json[PATH_MAX + 16];
static uint64_t demo_t0;

static void demo_cleanup(void)
{
	bench_rundir_remove(demo_dir);
}

static void demo_signal(int sig)
{
	/* async-signal-safe calls only */
	fio_kill();
	unlink(demo_store + 5);
	unlink(demo_fio);
	unlink(demo_fio_json);
	rmdir(demo_dir);
	signal(sig, SIG_DFL);
	raise(sig);
}

static int demo_setup(void)
{
	if (bench_rundir_make(NULL, "kvring-bench", demo_dir, sizeof(demo_dir)))
		return -1;
	snprintf(demo_store, sizeof(demo_store), "file:%s/store.kvr", demo_dir);
	snprintf(demo_fio, sizeof(demo_fio), "%s/store.kvr.fio", demo_dir);
	snprintf(demo_fio_json, sizeof(demo_fio_json), "%s.json", demo_fio);
	atexit(demo_cleanup);
	bench_catch_signals(demo_signal);
	return 0;
}

static void progress(const char *name, const struct bench_result *r, int rc)
{
	char size[32];

	fmt_size(size, sizeof(size), r->cfg.size);
	fprintf(stderr, "# %5.1f s  %-4s %s %-4s%s", (double)(bench_now_ns() - demo_t0) / 1e9, name,
		bench_op_name(r->cfg.op), size, r->cfg.copy ? " copy path" : "");
	if (rc)
		fprintf(stderr, ": failed (%s)\n", kvr_strerror(rc));
	else
		fprintf(stderr, ": %.2f GB/s, p50 %.1f us%s\n", r->gbps, r->p50_us,
			r->errors ? ", with errors" : "");
}

/* One row: the zero-copy run, the copy path at 4 MiB, fio for the file store.
 * Returns the number of runs that failed. */
static int demo_row(struct bench_env *env, const char *name, int shape, enum kvr_op op,
		    double seconds, bool file, bool have_fio, struct demo_row *row)
{
	struct bench_cfg cfg;
	int rc, failed = 0;

	memset(&cfg, 0, sizeof(cfg));
	cfg.target = env->uri;
	cfg.op = op;
	cfg.size = demo_shapes[shape].size;
	cfg.sge = 1;
	cfg.batch = demo_shapes[shape].batch;
	cfg.depth = demo_shapes[shape].depth;
	cfg.seconds = seconds;
	cfg.fio = file;
	row->target = name;

	rc = workload_run(env, &cfg, &row->run);
	progress(name, &row->run, rc);
	failed += rc || row->run.errors;
	if (cfg.size == DEMO_COPY_SIZE) {
		cfg.copy = true;
		cfg.fio = false;
		rc = workload_run(env, &cfg, &row->copy);
		progress(name, &row->copy, rc);
		failed += rc || row->copy.errors;
		row->has_copy = true;
	}
	if (!file)
		return failed;
	if (!have_fio) {
		snprintf(row->run.ref.why, sizeof(row->run.ref.why), "fio is not installed");
		return failed;
	}
	fio_run(demo_fio, op, cfg.size, cfg.batch * cfg.depth, seconds, DEMO_FIO_SIZE,
		&row->run.ref);
	if (row->run.ref.ran)
		fprintf(stderr, "# %5.1f s  fio  %s: %.2f GB/s, p50 %.1f us\n",
			(double)(bench_now_ns() - demo_t0) / 1e9, bench_op_name(op),
			row->run.ref.gbps, row->run.ref.p50_us);
	else
		fprintf(stderr, "# %5.1f s  fio  %s: %s\n",
			(double)(bench_now_ns() - demo_t0) / 1e9, bench_op_name(op),
			row->run.ref.why);
	return failed;
}

static void demo_notes(const struct demo_row *rows, size_t n, bool have_fio)
{
	char err[160], size[32];
	size_t i;

	printf("\nGB/s = 1e9 payload bytes/s. p50/p99 = per-object latency, batch submission to "
	       "its callback.\n"
	       "copy-path = the same run staged through a registered bounce buffer with memcpy, "
	       "the copy that\nzero-copy SGLs remove (4M rows).\n"
	       "tcp = kvr_serve on its own engine and thread of this process, a memory pool, "
	       "reached over\nloopback TCP with 2 connections (kvring-server serves the same).\n");
	if (have_fio)
		printf("fio = fio --ioengine=io_uring --direct=1 --fixedbufs --registerfiles "
		       "--rw=randwrite|randread,\nbs = object size, iodepth = batch x depth, on a "
		       "file beside the store; ratio = kvring GB/s / fio GB/s.\n");
	else
		printf("fio is not installed: no reference for the file store (install fio for "
		       "the fio and ratio columns).\n");
	for (i = 0; i < n; i++) {
		const struct bench_result *r[2] = {&rows[i].run, &rows[i].copy};
		int k;

		for (k = 0; k < (rows[i].has_copy ? 2 : 1); k++) {
			if (!r[k]->errors)
				continue;
			if (r[k]->first_error < 0)
				snprintf(err, sizeof(err), "%s",
					 kvr_strerror((int)r[k]->first_error));
			else
				snprintf(err, sizeof(err), "short result of %lld bytes",
					 (long long)r[k]->first_error);
			fmt_size(size, sizeof(size), r[k]->cfg.size);
			printf("! %s %s %s%s: %llu errors, first: %s\n", rows[i].target,
			       bench_op_name(r[k]->cfg.op), size, k ? " copy path" : "",
			       (unsigned long long)r[k]->errors, err);
		}
	}
}

int demo_run(double seconds, const char *json)
{
	static struct demo_row rows[DEMO_ROWS];
	static struct bench_result all[2 * DEMO_ROWS];
	bool have_fio = fio_available();
	struct bench_env env;
	size_t n = 0, nall = 0, i;
	int failed = 0, tgt, shape, op;

	char srv_uri[160], srv_err[256];
	bool served;

	demo_t0 = bench_now_ns();
	if (demo_setup())
		return 1;
	served = loopback_start("tcp://127.0.0.1:0", DEMO_SERVER_MEM, srv_uri, sizeof(srv_uri),
				srv_err, sizeof(srv_err)) == 0;
	printf("kvring-bench quick start: kvring %d.%d, memory store %s, file store %s "
	       "(4 GiB, %s),\nand a loopback kvring server (%s)\n",
	       KVR_VERSION_MAJOR, KVR_VERSION_MINOR, DEMO_MEM_URI, demo_store + 5,
	       bench_fs_name(demo_dir), served ? srv_uri : srv_err);
	printf("4K objects in batches of 64, 256K and 4M in batches of 8, 4 batches in flight, "
	       "%.3g s per run; fio %s\n\n",
	       seconds, have_fio ? "found" : "not installed");

	for (tgt = 0; tgt < DEMO_TARGETS; tgt++) {
		bool file = tgt == 1, tcp = tgt == 2;
		const char *uri = tcp ? srv_uri : file ? demo_store : DEMO_MEM_URI;
		const char *name = tcp ? "tcp" : file ? "file" : "mem";

		if (tcp && !served) {
			failed++;
			continue;
		}
		if (bench_env_open(&env, uri, file ? DEMO_FILE_CAPACITY : 0, 256, NULL)) {
			failed++;
			continue;
		}
		for (shape = 0; shape < (int)(sizeof(demo_shapes) / sizeof(demo_shapes[0]));
		     shape++)
			for (op = 0; op < 2; op++)
				failed += demo_row(&env, name, shape, op ? KVR_OP_GET : KVR_OP_PUT,
						   seconds, file, have_fio, &rows[n++]);
		bench_env_close(&env);
	}
	fio_cleanup(demo_fio);
	if (served)
		loopback_stop();

	printf("\n");
	report_table(stdout, rows, n);
	demo_notes(rows, n, have_fio);
	printf("(%.0f s in all)\n", (double)(bench_now_ns() - demo_t0) / 1e9);

	if (json) {
		for (i = 0; i < n; i++) {
			all[nall++] = rows[i].run;
			if (rows[i].has_copy)
				all[nall++] = rows[i].copy;
		}
		if (report_json(json, all, nall, true))
			failed++;
	}
	demo_cleanup();
	return failed;
}
