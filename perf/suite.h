/* SPDX-License-Identifier: MIT */
/*
 * kvring-bench suite: what its parts share (suite.c runs the matrix, the
 * references and the kvcache workload; suite_facts.c reads the machine's
 * facts; suite_report.c writes report.md and suite.json; suite_plot.c the
 * plots). One suite runs per process: its state is the one struct S.
 */
#ifndef KVR_PERF_SUITE_H
#define KVR_PERF_SUITE_H

#include <limits.h>

#include "bench.h"

enum { T_MEM, T_FILE, T_TCP, T_RDMA, NTARGET };
extern const char *const tname[NTARGET];

enum slice { S_SIZE, S_SGE, S_BATCH, S_QD1, NSLICE };
extern const char *const sname[NSLICE];

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

struct suite {
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
};
extern struct suite S;

extern const uint64_t sizes_full[MAX_SIZES], sizes_quick[3];

struct facts {
	char kernel[256], cpu[128], fs[64], blockdev[512], rdma[256], gpu[128];
	long cores;
	uint64_t mem_bytes;
	char uring_features[512], uring_ops[256];
	char tool[5][96]; /* fio, iperf3, redis-server, gnuplot, valgrind */
};

extern const char *const tool_name[5];

/* suite.c */
const struct ref *suite_find_ref(const char *tool, enum kvr_op op, uint64_t size, bool qd1);
bool suite_rdma_devices(char *names, size_t len); /* names: "a,b"; false: none */
/* suite_facts.c */
void collect_facts(struct facts *fx);
/* suite_report.c: the row of a shape that ran without errors (sge, batch 0:
 * any), a reference beside a size row, a table cell ("-" when missing) */
const struct row *suite_find_row(enum slice sl, int t, enum kvr_op op, uint64_t size, uint32_t sge,
				 uint32_t batch, bool copy, bool cuda);
const struct ref *suite_size_ref(int t, enum kvr_op op, uint64_t size, const char **tool);
void suite_cell(char *buf, size_t len, bool have, double v, int prec);
int write_report(const struct facts *fx, double total);
int write_json(const struct facts *fx, double total);
/* suite_plot.c */
void write_dat(const char *dir, const uint64_t *sizes, size_t nsize);
void write_gp(const char *dir, bool svg);
int run_gnuplot(const char *dir);

#endif /* KVR_PERF_SUITE_H */
