/* SPDX-License-Identifier: MIT */
/*
 * The parsers of kvring-bench's references (perf/refs.c, perf/fio.c): the
 * suite's tables are only as true as what it reads out of redis-benchmark's
 * and fio's output, so each is fed real output and broken output.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "perf/bench.h"

static const char redis_out[] = "SET: rps=0.0 (overall: nan) avg_msec=nan (overall: nan)\r"
				"====== SET ======\n"
				"  20000 requests completed in 1.29 seconds\n"
				"  1 parallel clients\n"
				"  4096 bytes payload\n"
				"  keep alive: 1\n"
				"\n"
				"Latency by percentile distribution:\n"
				"0.000% <= 0.031 milliseconds (cumulative count 141)\n"
				"50.000% <= 0.047 milliseconds (cumulative count 14023)\n"
				"99.805% <= 0.511 milliseconds (cumulative count 19962)\n"
				"99.902% <= 0.591 milliseconds (cumulative count 19981)\n"
				"100.000% <= 3.431 milliseconds (cumulative count 20000)\n"
				"\n"
				"Summary:\n"
				"  throughput summary: 15527.95 requests per second\n"
				"  latency summary (msec):\n"
				"          avg       min       p50       p95       p99       max\n"
				"        0.057     0.024     0.047     0.079     0.391     3.431\n"
				"====== GET ======\n"
				"  20000 requests completed in 1.00 seconds\n"
				"  4096 bytes payload\n"
				"Latency by percentile distribution:\n"
				"0.000% <= 0.020 milliseconds (cumulative count 1)\n"
				"99.950% <= 0.200 milliseconds (cumulative count 19990)\n"
				"\n"
				"Summary:\n"
				"  throughput summary: 20000.00 requests per second\n"
				"  latency summary (msec):\n"
				"          avg       min       p50       p95       p99       max\n"
				"        0.040     0.020     0.039     0.060     0.100     0.300\n";

static void redis_real_output(void **state)
{
	struct ref_redis set, get;

	(void)state;
	assert_int_equal(ref_redis_parse(redis_out, &set, &get), 0);
	assert_true(set.ran && get.ran);
	assert_true(set.ops_per_s > 15527.9 && set.ops_per_s < 15528.0);
	assert_true(set.p50_ms > 0.0469 && set.p50_ms < 0.0471);
	assert_true(set.p99_ms > 0.390 && set.p99_ms < 0.392);
	assert_true(set.p999_ms > 0.590 && set.p999_ms < 0.592); /* first at or above 99.9% */
	assert_true(set.gbps > 15527.9 * 4096 / 1e9 - 1e-6 && set.gbps < 15528.0 * 4096 / 1e9);
	assert_true(get.ops_per_s > 19999.9 && get.ops_per_s < 20000.1);
	assert_true(get.p999_ms > 0.199 && get.p999_ms < 0.201);
	assert_true(get.avg_ms > 0.0399 && get.avg_ms < 0.0401);
}

static void redis_broken_output(void **state)
{
	struct ref_redis set, get;
	char cut[sizeof(redis_out)];
	const char *g = strstr(redis_out, "====== GET");

	(void)state;
	assert_int_not_equal(ref_redis_parse(NULL, &set, &get), 0);
	assert_false(set.ran || get.ran);
	assert_int_not_equal(ref_redis_parse("", &set, &get), 0);
	assert_int_not_equal(ref_redis_parse("ERR unknown command\n", &set, &get), 0);
	assert_true(strlen(set.why) > 0);
	/* the GET section cut off before its summary */
	memcpy(cut, redis_out, (size_t)(g - redis_out) + 60);
	cut[(g - redis_out) + 60] = '\0';
	assert_int_not_equal(ref_redis_parse(cut, &set, &get), 0);
	assert_true(set.ran);
	assert_false(get.ran);
	/* no latency summary: throughput still read, percentiles left at 0 */
	assert_int_equal(ref_redis_parse("====== SET ======\n  throughput summary: 10 requests "
					 "per second\n====== GET ======\n  throughput "
					 "summary: 20 requests per second\n",
					 &set, &get),
			 0);
	assert_true(set.ops_per_s == 10 && get.ops_per_s == 20);
	assert_true(set.p50_ms == 0 && set.p999_ms < 0);
}

static void fio_output(void **state)
{
	static const char good[] =
	    "note: a line before the document\n"
	    "{\"jobs\": [{\"jobname\": \"ref\", \"error\": 0,\n"
	    " \"read\": {\"bw_bytes\": 2000000000, \"iops\": 476.8,\n"
	    "  \"clat_ns\": {\"percentile\": {\"50.000000\": 1000, \"99.000000\": 5000,\n"
	    "   \"99.900000\": 9000}}},\n"
	    " \"write\": {\"bw_bytes\": 0, \"iops\": 0}}]}\n";
	struct bench_ref ref;

	(void)state;
	memset(&ref, 0, sizeof(ref));
	assert_int_equal(fio_parse(good, KVR_OP_GET, &ref), 0);
	assert_true(ref.ran);
	assert_true(ref.gbps > 1.999 && ref.gbps < 2.001);
	assert_true(ref.p50_us == 1 && ref.p99_us == 5 && ref.p999_us == 9);
	/* with --lat_percentiles=1 the total latency is read, not clat */
	memset(&ref, 0, sizeof(ref));
	assert_int_equal(
	    fio_parse("{\"jobs\": [{\"error\": 0, \"write\": {\"bw_bytes\": 1e9, "
		      "\"iops\": 1, \"clat_ns\": {\"percentile\": {\"50.000000\": "
		      "1000}}, \"lat_ns\": {\"percentile\": {\"50.000000\": 3000}}}}]}",
		      KVR_OP_PUT, &ref),
	    0);
	assert_true(ref.p50_us == 3);
	memset(&ref, 0, sizeof(ref));
	assert_int_not_equal(fio_parse("{\"jobs\": []}", KVR_OP_GET, &ref), 0);
	assert_false(ref.ran);
	assert_int_not_equal(fio_parse("{\"jobs\": [{\"error\": 5}]}", KVR_OP_PUT, &ref), 0);
	assert_int_not_equal(fio_parse("{\"jobs\": [{\"read\": {}}]}", KVR_OP_GET, &ref), 0);
	assert_int_not_equal(fio_parse("not json at all", KVR_OP_GET, &ref), 0);
	assert_int_not_equal(fio_parse("{\"jobs\": [{\"read\": {\"bw_bytes\": ", KVR_OP_GET, &ref),
			     0);
}

static void memcpy_reference(void **state)
{
	(void)state;
	assert_true(ref_memcpy_gbps(4096, 0.01) > 0);
	assert_true(ref_memcpy_gbps(1 << 20, 0.01) > 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(redis_real_output),
	    cmocka_unit_test(redis_broken_output),
	    cmocka_unit_test(fio_output),
	    cmocka_unit_test(memcpy_reference),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
