/* SPDX-License-Identifier: MIT */
/*
 * kvring-bench suite: report.md (tables of kvring, reference and ratio, the
 * goals judged on the run) and suite.json (every row and the machine).
 */
#include <errno.h>
#include <string.h>

#include "suite.h"

const struct row *suite_find_row(enum slice sl, int t, enum kvr_op op, uint64_t size, uint32_t sge,
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
void suite_cell(char *buf, size_t len, bool have, double v, int prec)
{
	if (!have || v != v)
		snprintf(buf, len, "-");
	else
		snprintf(buf, len, "%.*f", prec, v);
}

const struct ref *suite_size_ref(int t, enum kvr_op op, uint64_t size, const char **tool)
{
	*tool = t == T_FILE ? "fio" : t == T_MEM ? "memcpy" : t == T_TCP ? "redis" : NULL;
	if (!*tool)
		return NULL;
	if (t == T_MEM)
		op = KVR_OP_PUT; /* memcpy has one figure per size */
	return suite_find_ref(*tool, op, size, false);
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
				    suite_find_row(S_SIZE, t, o, sizes[i], 1, 0, false, cuda);
				const struct row *cp = cuda ? NULL
							    : suite_find_row(S_SIZE, t, o, sizes[i],
									     1, 0, true, false);
				const struct ref *r =
				    cuda ? NULL : suite_size_ref(t, o, sizes[i], &tool);

				fmt_size(sz, sizeof(sz), sizes[i]);
				suite_cell(c[0], 32, z, z ? z->r.gbps : 0, 2);
				suite_cell(c[1], 32, z, z ? z->r.ops_per_s / 1e3 : 0, 1);
				suite_cell(c[2], 32, cp, cp ? cp->r.gbps : 0, 2);
				suite_cell(c[3], 32, z && cp && cp->r.gbps > 0,
					   z && cp && cp->r.gbps > 0 ? z->r.gbps / cp->r.gbps : 0,
					   2);
				suite_cell(c[4], 32, r && r->ran, r ? r->gbps : 0, 2);
				suite_cell(c[5], 32, z && r && r->ran && r->gbps > 0,
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
				    suite_find_row(S_SGE, t, op ? KVR_OP_GET : KVR_OP_PUT,
						   1ull << 20, sges[i], 0, false, false);

				suite_cell(c[i], 32, r, r ? r->r.gbps : 0, 2);
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
				    suite_find_row(S_BATCH, t, op ? KVR_OP_GET : KVR_OP_PUT, 4096,
						   1, batches[i], false, false);

				suite_cell(c[i], 32, r, r ? r->r.ops_per_s / 1e3 : 0, 1);
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
				    suite_find_row(S_QD1, t, op ? KVR_OP_GET : KVR_OP_PUT, sz[i], 1,
						   1, false, false);

				fmt_size(s, sizeof(s), sz[i]);
				suite_cell(c[0], 32, r, r ? r->r.p50_us : 0, 1);
				suite_cell(c[1], 32, r, r ? r->r.p99_us : 0, 1);
				suite_cell(c[2], 32, r, r ? r->r.p999_us : 0, 1);
				fprintf(f, "| %s | %s | %s | %s | %s | %s |\n", tname[t],
					op ? "get" : "put", s, c[0], c[1], c[2]);
			}
	for (k = 0; k < S.nref; k++) {
		const struct ref *r = &S.refs_v[k];

		if (!r->qd1)
			continue;
		fmt_size(s, sizeof(s), r->size);
		suite_cell(c[0], 32, r->ran, r->p50_us, 1);
		suite_cell(c[1], 32, r->ran, r->p99_us, 1);
		suite_cell(c[2], 32, r->ran && r->p999_us >= 0, r->p999_us, 1);
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
			suite_cell(c[0], 32, ok, r->store.gbps, 2);
			suite_cell(c[1], 32, ok, r->load.gbps, 2);
			suite_cell(c[2], 32, ok, r->load.p50_ms, 1);
			suite_cell(c[3], 32, ok, r->load.p99_ms, 1);
			suite_cell(c[4], 32, ok, r->load.tokens_per_s, 0);
			suite_cell(c[5], 32, k == 1 && ok && ok0 && r->load.gbps > 0,
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

			z = suite_find_row(S_SIZE, T_FILE, o, fsz[i], 1, 0, false, false);
			r = suite_size_ref(T_FILE, o, fsz[i], &tool);
			if (!z || !r || !r->ran || r->gbps <= 0)
				continue;
			fmt_size(sz, sizeof(sz), fsz[i]);
			fprintf(f, "| file %s %s >= 0.97x fio | %.2fx (%.2f vs %.2f GB/s) | %s |\n",
				bench_op_name(o), sz, z->r.gbps / r->gbps, z->r.gbps, r->gbps,
				z->r.gbps / r->gbps >= 0.97 ? "yes" : "**no**");
		}
	for (op = 0; op < 2; op++) {
		enum kvr_op o = op ? KVR_OP_GET : KVR_OP_PUT;

		z = suite_find_row(S_SIZE, T_TCP, o, 4ull << 20, 1, 0, false, false);
		cp = suite_find_row(S_SIZE, T_TCP, o, 4ull << 20, 1, 0, true, false);
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

int write_report(const struct facts *fx, double total)
{
	const uint64_t *sizes = S.quick ? sizes_quick : sizes_full;
	size_t nsize = S.quick ? sizeof(sizes_quick) / sizeof(sizes_quick[0]) : MAX_SIZES;
	char path[PATH_MAX];
	FILE *f;
	int t;

	snprintf(path, sizeof(path), "%s/report.md", S.out);
	f = report_open(path);
	if (!f)
		return -EIO;
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
	return report_close(f, path);
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

int write_json(const struct facts *fx, double total)
{
	char path[PATH_MAX];
	bool first = true;
	size_t i;
	FILE *f;
	int t, k;

	snprintf(path, sizeof(path), "%s/suite.json", S.out);
	f = report_open(path);
	if (!f)
		return -EIO;
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
	return report_close(f, path);
}
