/* SPDX-License-Identifier: MIT */
/* The latency histogram of kvring-bench (see bench.h). */
#include "bench.h"

static unsigned hist_index(uint64_t v)
{
	unsigned e;

	if (v < HIST_SUB)
		return (unsigned)v;
	e = 63u - (unsigned)__builtin_clzll(v);
	return (e - HIST_SUB_BITS + 1) * HIST_SUB +
	       (unsigned)((v >> (e - HIST_SUB_BITS)) & (HIST_SUB - 1));
}

/* The middle of bucket i. */
static uint64_t hist_value(unsigned i)
{
	unsigned e, sub;
	uint64_t lo, width;

	if (i < HIST_SUB)
		return i;
	e = i / HIST_SUB + HIST_SUB_BITS - 1;
	sub = i % HIST_SUB;
	lo = (uint64_t)(HIST_SUB + sub) << (e - HIST_SUB_BITS);
	width = 1ull << (e - HIST_SUB_BITS);
	return lo + width / 2;
}

void hist_add(struct bench_hist *h, uint64_t ns, uint64_t count)
{
	h->bucket[hist_index(ns)] += count;
	h->n += count;
	if (ns > h->max_ns)
		h->max_ns = ns;
}

/* The p-quantile (0 < p <= 1) in microseconds, 0 when empty. */
double hist_pct(const struct bench_hist *h, double p)
{
	double want = p * (double)h->n;
	uint64_t rank = (uint64_t)want, seen = 0, v;
	unsigned i;

	if (!h->n)
		return 0;
	if ((double)rank < want)
		rank++;
	if (!rank)
		rank = 1;
	for (i = 0; i < HIST_BUCKETS; i++) {
		seen += h->bucket[i];
		if (seen >= rank)
			break;
	}
	v = i < HIST_BUCKETS ? hist_value(i) : h->max_ns;
	if (v > h->max_ns)
		v = h->max_ns;
	return (double)v / 1000.0;
}

void hist_cdf(const struct bench_hist *h, FILE *f)
{
	uint64_t seen = 0, v;
	unsigned i;

	if (!h->n)
		return;
	for (i = 0; i < HIST_BUCKETS; i++) {
		if (!h->bucket[i])
			continue;
		seen += h->bucket[i];
		v = hist_value(i);
		if (v > h->max_ns)
			v = h->max_ns;
		fprintf(f, "%.3f %.6f\n", (double)v / 1000.0, (double)seen / (double)h->n);
	}
}
