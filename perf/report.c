/* SPDX-License-Identifier: MIT */
/*
 * What kvring-bench prints: the one-line summary of a run, its JSON document
 * and the demo's table.
 */
#include <errno.h>
#include <float.h>
#include <string.h>

#include "bench.h"

void fmt_size(char *buf, size_t len, uint64_t v)
{
	if (v && !(v % (1ull << 30)))
		snprintf(buf, len, "%lluG", (unsigned long long)(v >> 30));
	else if (v && !(v % (1ull << 20)))
		snprintf(buf, len, "%lluM", (unsigned long long)(v >> 20));
	else if (v && !(v % (1ull << 10)))
		snprintf(buf, len, "%lluK", (unsigned long long)(v >> 10));
	else
		snprintf(buf, len, "%llu", (unsigned long long)v);
}

static void fmt_error(char *buf, size_t len, int64_t err)
{
	if (err < 0)
		snprintf(buf, len, "%s (%lld)", kvr_strerror((int)err), (long long)err);
	else
		snprintf(buf, len, "%lld bytes instead of the object's size", (long long)err);
}

void report_summary(FILE *f, const struct bench_result *r)
{
	const struct bench_cfg *c = &r->cfg;
	char size[32];

	fmt_size(size, sizeof(size), c->size);
	fprintf(f,
		"%s %s size %s sge %u batch %u depth %u%s%s: %.3f GB/s, %.0f ops/s, "
		"latency us p50 %.1f p99 %.1f p99.9 %.1f, %llu objects in %.2f s, "
		"errors %llu",
		bench_op_name(c->op), c->target, size, c->sge, c->batch, c->depth,
		c->copy ? " (copy path)" : "", c->cuda ? " (cuda memory)" : "", r->gbps,
		r->ops_per_s, r->p50_us, r->p99_us, r->p999_us, (unsigned long long)r->objects,
		r->seconds, (unsigned long long)r->errors);
	if (bench_is_remote(c->target))
		fprintf(f, " | conns %u replicas %u", bench_conns(c),
			c->replicas ? c->replicas : 1);
	if (r->ref.ran)
		fprintf(f, " | fio %.3f GB/s, %.0f ops/s, p50 %.1f p99 %.1f us, ratio %.2f",
			r->ref.gbps, r->ref.ops_per_s, r->ref.p50_us, r->ref.p99_us,
			r->ref.gbps > 0 ? r->gbps / r->ref.gbps : 0);
	else if (c->fio)
		fprintf(f, " | fio: %s", r->ref.why);
	fputc('\n', f);
}

/* ------------------------------------------------------------------- JSON */

void report_json_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;

		if (ch == '"' || ch == '\\')
			fprintf(f, "\\%c", ch);
		else if (ch == '\n')
			fputs("\\n", f);
		else if (ch == '\t')
			fputs("\\t", f);
		else if (ch < 0x20)
			fprintf(f, "\\u%04x", ch);
		else
			fputc(ch, f);
	}
	fputc('"', f);
}

void report_json_num(FILE *f, double v)
{
	if (v != v || v > DBL_MAX || v < -DBL_MAX)
		fputs("null", f);
	else
		fprintf(f, "%.6g", v);
}

static void json_lat(FILE *f, double p50, double p99, double p999)
{
	fputs("{\"p50\": ", f);
	report_json_num(f, p50);
	fputs(", \"p99\": ", f);
	report_json_num(f, p99);
	fputs(", \"p999\": ", f);
	report_json_num(f, p999);
	fputc('}', f);
}

void report_json_result(FILE *f, const struct bench_result *r, const char *ind)
{
	const struct bench_cfg *c = &r->cfg;
	char err[160];

	fprintf(f, "%s{\n", ind);
	fprintf(f, "%s  \"op\": \"%s\",\n%s  \"target\": ", ind, bench_op_name(c->op), ind);
	report_json_str(f, c->target);
	fprintf(f, ",\n%s  \"size\": %llu,\n", ind, (unsigned long long)c->size);
	fprintf(f, "%s  \"sge\": %u,\n%s  \"batch\": %u,\n%s  \"depth\": %u,\n", ind, c->sge, ind,
		c->batch, ind, c->depth);
	fprintf(f, "%s  \"copy\": %s,\n", ind, c->copy ? "true" : "false");
	fprintf(f, "%s  \"mem\": \"%s\",\n", ind, c->cuda ? "cuda" : "host");
	fprintf(f, "%s  \"keys\": %llu,\n", ind, (unsigned long long)r->keys);
	if (bench_is_remote(c->target))
		fprintf(f, "%s  \"conns\": %u,\n%s  \"replicas\": %u,\n", ind, bench_conns(c), ind,
			c->replicas ? c->replicas : 1);
	fprintf(f, "%s  \"objects\": %llu,\n", ind, (unsigned long long)r->objects);
	fprintf(f, "%s  \"bytes\": %llu,\n", ind, (unsigned long long)r->bytes);
	fprintf(f, "%s  \"seconds\": ", ind);
	report_json_num(f, r->seconds);
	fprintf(f, ",\n%s  \"gbps\": ", ind);
	report_json_num(f, r->gbps);
	fprintf(f, ",\n%s  \"ops_per_s\": ", ind);
	report_json_num(f, r->ops_per_s);
	fprintf(f, ",\n%s  \"errors\": %llu,\n", ind, (unsigned long long)r->errors);
	if (r->errors) {
		fmt_error(err, sizeof(err), r->first_error);
		fprintf(f, "%s  \"first_error\": ", ind);
		report_json_str(f, err);
		fputs(",\n", f);
	}
	fprintf(f, "%s  \"lat_us\": ", ind);
	json_lat(f, r->p50_us, r->p99_us, r->p999_us);
	fprintf(f, ",\n%s  \"lat_max_us\": ", ind);
	report_json_num(f, r->max_us);
	fprintf(f, ",\n%s  \"verified\": %llu,\n", ind, (unsigned long long)r->verified);
	fprintf(f,
		"%s  \"engine\": {\"fixed_ios\": %llu, \"plain_ios\": %llu, "
		"\"bounce_bytes\": %llu, \"submits\": %llu, \"cq_overflows\": %llu}",
		ind, (unsigned long long)r->eng.fixed_ios, (unsigned long long)r->eng.plain_ios,
		(unsigned long long)r->eng.bounce_bytes, (unsigned long long)r->eng.submits,
		(unsigned long long)r->eng.cq_overflows);
	if (r->ref.ran) {
		fprintf(f, ",\n%s  \"ref\": {\"tool\": \"fio\", \"gbps\": ", ind);
		report_json_num(f, r->ref.gbps);
		fputs(", \"ops_per_s\": ", f);
		report_json_num(f, r->ref.ops_per_s);
		fprintf(f, ", \"bs\": %llu, \"iodepth\": %u, \"lat_us\": ",
			(unsigned long long)r->ref.bs, r->ref.iodepth);
		json_lat(f, r->ref.p50_us, r->ref.p99_us, r->ref.p999_us);
		fprintf(f, "},\n%s  \"ratio\": ", ind);
		report_json_num(f, r->ref.gbps > 0 ? r->gbps / r->ref.gbps : __builtin_nan(""));
	} else if (c->fio) {
		fprintf(f, ",\n%s  \"ref\": null,\n%s  \"ref_error\": ", ind, ind);
		report_json_str(f, r->ref.why);
		fprintf(f, ",\n%s  \"ratio\": null", ind);
	}
	fprintf(f, "\n%s}", ind);
}

FILE *report_open(const char *path)
{
	FILE *f = strcmp(path, "-") ? fopen(path, "w") : stdout;

	if (!f)
		fprintf(stderr, "kvring-bench: cannot write %s: %s\n", path, strerror(errno));
	return f;
}

int report_close(FILE *f, const char *path)
{
	int rc = ferror(f) ? -EIO : 0;

	if (f == stdout)
		fflush(f);
	else if (fclose(f) && !rc)
		rc = -errno;
	if (rc)
		fprintf(stderr, "kvring-bench: cannot write %s: %s\n", path, strerror(-rc));
	return rc;
}

int report_json(const char *path, const struct bench_result *r, size_t n, bool array)
{
	FILE *f = report_open(path);
	size_t i;

	if (!f)
		return -EIO;
	if (array)
		fputs("[\n", f);
	for (i = 0; i < n; i++) {
		report_json_result(f, &r[i], array ? "  " : "");
		fputs(array && i + 1 < n ? ",\n" : "\n", f);
	}
	if (array)
		fputs("]\n", f);
	return report_close(f, path);
}

/* ------------------------------------------------------------------ table */

#define NCOL 10

static const char *const col_name[NCOL] = {
    "target", "op",	"size",		  "GB/s",     "kops/s",
    "p50 us", "p99 us", "copy-path GB/s", "fio GB/s", "ratio",
};

static void fmt_num(char *buf, size_t len, double v)
{
	if (v >= 1000)
		snprintf(buf, len, "%.0f", v);
	else if (v >= 100)
		snprintf(buf, len, "%.1f", v);
	else
		snprintf(buf, len, "%.2f", v);
}

static void row_cells(const struct demo_row *row, char cell[NCOL][32])
{
	const struct bench_result *r = &row->run;
	bool ok = !r->errors && r->seconds > 0;
	int i;

	for (i = 0; i < NCOL; i++)
		snprintf(cell[i], 32, "-");
	snprintf(cell[0], 32, "%s", row->target);
	snprintf(cell[1], 32, "%s", bench_op_name(r->cfg.op));
	fmt_size(cell[2], 32, r->cfg.size);
	if (r->seconds > 0) {
		fmt_num(cell[3], 32, r->gbps);
		fmt_num(cell[4], 32, r->ops_per_s / 1000);
		fmt_num(cell[5], 32, r->p50_us);
		fmt_num(cell[6], 32, r->p99_us);
	}
	if (!ok && r->seconds > 0)
		snprintf(cell[3] + strlen(cell[3]), 32 - strlen(cell[3]), " !");
	if (row->has_copy && row->copy.seconds > 0) {
		fmt_num(cell[7], 32, row->copy.gbps);
		if (row->copy.errors)
			snprintf(cell[7] + strlen(cell[7]), 32 - strlen(cell[7]), " !");
	}
	if (r->ref.ran) {
		fmt_num(cell[8], 32, r->ref.gbps);
		if (r->ref.gbps > 0 && r->seconds > 0)
			snprintf(cell[9], 32, "%.2f", r->gbps / r->ref.gbps);
	}
}

static void table_line(FILE *f, char cell[NCOL][32], const int *width)
{
	int i;

	for (i = 0; i < NCOL; i++)
		fprintf(f, i < 3 ? "| %-*s " : "| %*s ", width[i], cell[i]);
	fputs("|\n", f);
}

void report_table(FILE *f, const struct demo_row *rows, size_t n)
{
	char cell[NCOL][32];
	int width[NCOL], i, j;
	size_t r;

	for (i = 0; i < NCOL; i++)
		width[i] = (int)strlen(col_name[i]);
	for (r = 0; r < n; r++) {
		row_cells(&rows[r], cell);
		for (i = 0; i < NCOL; i++)
			if ((int)strlen(cell[i]) > width[i])
				width[i] = (int)strlen(cell[i]);
	}
	for (i = 0; i < NCOL; i++)
		snprintf(cell[i], 32, "%s", col_name[i]);
	table_line(f, cell, width);
	for (i = 0; i < NCOL; i++) {
		fputs(i < 3 ? "|:" : "|-", f);
		for (j = 0; j < width[i]; j++)
			fputc('-', f);
		fputs(i < 3 ? "-" : ":", f);
	}
	fputs("|\n", f);
	for (r = 0; r < n; r++) {
		row_cells(&rows[r], cell);
		table_line(f, cell, width);
	}
}
