/* SPDX-License-Identifier: MIT */
/*
 * kvring-bench suite: the plots, as gnuplot data (.dat) and scripts (.gp,
 * PNG and SVG), drawn when gnuplot is installed: throughput vs object size,
 * zero-copy vs copy, latency CDF at queue depth 1.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "suite.h"

static FILE *open_in(const char *dir, const char *name)
{
	char path[PATH_MAX];

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	return fopen(path, "w");
}

static void dat_val(FILE *f, bool have, double v)
{
	if (have && v == v)
		fprintf(f, " %.4f", v);
	else
		fputs(" ?", f);
}

/* throughput_{put,get}.dat: size mem file tcp rdma fio redis memcpy (GB/s);
 * zerocopy.dat: size, then zero-copy/copy for each target's put and get. */
void write_dat(const char *dir, const uint64_t *sizes, size_t nsize)
{
	const char *tool;
	const struct ref *r;
	char name[32];
	FILE *f;
	size_t i;
	int op, t;

	for (op = 0; op < 2; op++) {
		enum kvr_op o = op ? KVR_OP_GET : KVR_OP_PUT;

		snprintf(name, sizeof(name), "throughput_%s.dat", bench_op_name(o));
		f = open_in(dir, name);
		if (!f)
			continue;
		fputs("# size_bytes mem file tcp rdma fio redis memcpy (GB/s)\n", f);
		for (i = 0; i < nsize; i++) {
			fprintf(f, "%llu", (unsigned long long)sizes[i]);
			for (t = 0; t < NTARGET; t++) {
				const struct row *z =
				    suite_find_row(S_SIZE, t, o, sizes[i], 1, 0, false, false);

				dat_val(f, z, z ? z->r.gbps : 0);
			}
			r = suite_size_ref(T_FILE, o, sizes[i], &tool);
			dat_val(f, r && r->ran, r ? r->gbps : 0);
			r = suite_size_ref(T_TCP, o, sizes[i], &tool);
			dat_val(f, r && r->ran, r ? r->gbps : 0);
			r = suite_size_ref(T_MEM, o, sizes[i], &tool);
			dat_val(f, r && r->ran, r ? r->gbps : 0);
			fputc('\n', f);
		}
		fclose(f);
	}
	f = open_in(dir, "zerocopy.dat");
	if (f) {
		fputs("# size_bytes then zero-copy/--copy GB/s: mem put, mem get, file put, "
		      "file get, tcp put, tcp get, rdma put, rdma get\n",
		      f);
		for (i = 0; i < nsize; i++) {
			fprintf(f, "%llu", (unsigned long long)sizes[i]);
			for (t = 0; t < NTARGET; t++)
				for (op = 0; op < 2; op++) {
					enum kvr_op o = op ? KVR_OP_GET : KVR_OP_PUT;
					const struct row *z = suite_find_row(S_SIZE, t, o, sizes[i],
									     1, 0, false, false);
					const struct row *c = suite_find_row(S_SIZE, t, o, sizes[i],
									     1, 0, true, false);

					dat_val(f, z && c && c->r.gbps > 0,
						z && c && c->r.gbps > 0 ? z->r.gbps / c->r.gbps
									: 0);
				}
			fputc('\n', f);
		}
		fclose(f);
	}
	for (t = 0; t < NTARGET; t++)
		for (op = 0; op < 2; op++)
			for (i = 0; i < 2; i++) {
				enum kvr_op o = op ? KVR_OP_GET : KVR_OP_PUT;
				uint64_t sz = i ? 1ull << 20 : 4096;
				const struct row *z =
				    suite_find_row(S_QD1, t, o, sz, 1, 1, false, false);

				if (!z || !z->hist)
					continue;
				snprintf(name, sizeof(name), "cdf_%s_%s_%s.dat", tname[t],
					 bench_op_name(o), i ? "1M" : "4K");
				f = open_in(dir, name);
				if (!f)
					continue;
				fprintf(f, "# latency_us fraction: %s %s %s at queue depth 1\n",
					tname[t], bench_op_name(o), i ? "1M" : "4K");
				hist_cdf(z->hist, f);
				fclose(f);
			}
}

/* The x axis of the plots over object size. */
#define GP_SIZE_AXIS                                                                               \
	"set logscale x 2\nset xtics ('4K' 4096, '64K' 65536, '256K' 262144, '1M' 1048576, "       \
	"'4M' 4194304, '16M' 16777216)\nset xrange [3000:22000000]\nset xlabel 'object size'\n"

static void gp_head(FILE *f, const char *name, bool svg, const char *size)
{
	if (svg)
		fprintf(f, "set terminal svg size %s dynamic font 'Helvetica,12'\n", size);
	else
		fprintf(f, "set terminal pngcairo size %s font 'Helvetica,10'\n", size);
	fprintf(f,
		"set output '%s.%s'\nset datafile missing '?'\nset key outside right top\n"
		"set grid\n",
		name, svg ? "svg" : "png");
}

void write_gp(const char *dir, bool svg)
{
	static const char *const style[NTARGET] = {
	    "lc rgb '#1f77b4' lw 2 pt 7", "lc rgb '#2ca02c' lw 2 pt 5",
	    "lc rgb '#d62728' lw 2 pt 9", "lc rgb '#9467bd' lw 2 pt 11"};
	static const char *const line[NTARGET] = {"lc rgb '#1f77b4' lw 2", "lc rgb '#2ca02c' lw 2",
						  "lc rgb '#d62728' lw 2", "lc rgb '#9467bd' lw 2"};
	char name[64];
	FILE *f;
	int t, op, k;

	snprintf(name, sizeof(name), "throughput%s.gp", svg ? "_svg" : "");
	f = open_in(dir, name);
	if (f) {
		gp_head(f, "throughput", svg, "1100,450");
		fputs("set multiplot layout 1,2 title 'kvring throughput vs object size "
		      "(same-run references dashed)'\n" GP_SIZE_AXIS
		      "set ylabel 'GB/s (1e9 B/s)'\nset yrange [0:*]\n",
		      f);
		for (op = 0; op < 2; op++) {
			fprintf(f, "set title '%s'\nplot ", op ? "get" : "put");
			for (t = 0; t < NTARGET; t++)
				if (S.up[t])
					fprintf(
					    f, "'throughput_%s.dat' u 1:%d w lp %s t 'kvring %s', ",
					    op ? "get" : "put", t + 2, style[t], tname[t]);
			fprintf(f,
				"'throughput_%s.dat' u 1:6 w lp dt 2 lc rgb '#2ca02c' t 'fio', "
				"'' u 1:7 w lp dt 2 lc rgb '#d62728' t 'redis', "
				"'' u 1:8 w lp dt 3 lc rgb '#1f77b4' t 'memcpy'",
				op ? "get" : "put");
			if (S.iperf.ran)
				fprintf(f, ", %.4f w l dt 4 lc rgb '#ff7f0e' t 'iperf3 -P 2'",
					S.iperf.gbps);
			fputc('\n', f);
		}
		fputs("unset multiplot\n", f);
		fclose(f);
	}
	snprintf(name, sizeof(name), "zerocopy%s.gp", svg ? "_svg" : "");
	f = open_in(dir, name);
	if (f) {
		gp_head(f, "zerocopy", svg, "800,450");
		fputs("set title 'zero-copy SGLs vs --copy (bounce buffer + memcpy)'\n" GP_SIZE_AXIS
		      "set ylabel 'zero-copy GB/s / copy GB/s'\nset yrange [0:*]\nplot 1 w l lc "
		      "rgb 'gray' notitle",
		      f);
		for (t = 0; t < NTARGET; t++)
			for (op = 0; op < 2 && S.up[t]; op++)
				fprintf(f, ", 'zerocopy.dat' u 1:%d w lp %s %s t '%s %s'",
					2 + t * 2 + op, style[t], op ? "dt 2" : "", tname[t],
					op ? "get" : "put");
		fputc('\n', f);
		fclose(f);
	}
	snprintf(name, sizeof(name), "latency_cdf%s.gp", svg ? "_svg" : "");
	f = open_in(dir, name);
	if (f) {
		bool any = false;

		gp_head(f, "latency_cdf", svg, "900,450");
		fputs("set title 'latency at queue depth 1 (CDF)'\nset logscale x 10\n"
		      "set xlabel 'microseconds'\nset ylabel 'fraction of objects'\n"
		      "set yrange [0:1]\nset key bottom right inside\nplot ",
		      f);
		for (t = 0; t < NTARGET; t++)
			for (op = 0; op < 2; op++)
				for (k = 0; k < 2; k++) {
					char dat[64];

					snprintf(dat, sizeof(dat), "cdf_%s_%s_%s.dat", tname[t],
						 op ? "get" : "put", k ? "1M" : "4K");
					if (!suite_find_row(S_QD1, t, op ? KVR_OP_GET : KVR_OP_PUT,
							    k ? 1ull << 20 : 4096, 1, 1, false,
							    false))
						continue;
					fprintf(f, "%s'%s' u 1:2 w l %s %s t '%s %s %s'",
						any ? ", " : "", dat, line[t], op ? "dt 2" : "",
						tname[t], op ? "get" : "put", k ? "1M" : "4K");
					any = true;
				}
		if (!any)
			fputs("NaN notitle", f);
		fputc('\n', f);
		fclose(f);
	}
}

int run_gnuplot(const char *dir)
{
	static const char *const gp[] = {"throughput", "zerocopy", "latency_cdf"};
	char cwd[PATH_MAX], name[64], *out;
	char *argv[3];
	int rc = 0, i, svg;

	if (!bench_have("gnuplot"))
		return -ENOENT;
	if (!getcwd(cwd, sizeof(cwd)) || chdir(dir))
		return -errno;
	for (i = 0; i < 3; i++)
		for (svg = 0; svg < 2; svg++) {
			snprintf(name, sizeof(name), "%s%s.gp", gp[i], svg ? "_svg" : "");
			argv[0] = "gnuplot";
			argv[1] = name;
			argv[2] = NULL;
			if (bench_run_capture(argv, &out)) {
				fprintf(stderr, "kvring-bench suite: gnuplot %s/%s failed: %s\n",
					dir, name, out ? out : "");
				rc = -EIO;
			}
			free(out);
		}
	if (chdir(cwd))
		rc = -errno;
	return rc;
}
