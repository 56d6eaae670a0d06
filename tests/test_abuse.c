/* SPDX-License-Identifier: MIT */
/*
 * A kvring-server (the one of this build: sanitizer-built in an ASan+UBSan
 * build) under attack from raw sockets of this process, while a
 * well-behaved kvring client (kvr_connect) keeps putting and getting real
 * objects and checks every byte it gets back. One case per attack, and one
 * with all of them at once:
 *
 *   fuzz       every length at its bound and one past it, then thousands
 *              of seeded random frames (valid, bit-flipped, fields set to
 *              boundary values, truncated, garbage): each gets an answer
 *              or a close, never a crash or a hang
 *   slowloris  connections trickling one byte every 50 ms, in the
 *              handshake and inside a PUT frame: closed within the idle
 *              timeout plus slack
 *   flood      connections past --max-conns, kept open and idle, refused
 *              ones retried: a new good client still gets in
 *   noread     clients pipelining GETs of a 4 MiB object and never reading
 *   nocrc      the same without the crc trailer (the server checks each
 *              object it sends)
 *   bigput     one PUT header announcing a payload the size of the pool,
 *              and no payload
 *
 * Each case measures the good client's operations per second alone, then
 * during the attack, and asserts: the ratio is at least 0.5, no object was
 * lost or wrong, the server's RSS stayed under the pool + RSS_SLACK, and
 * the server exits cleanly (no sanitizer report, no leak) when stopped.
 * The figures are printed ("abuse ...:") so that they can be quoted.
 * Environment: KVR_ABUSE_SEED (default 1) seeds the fuzzer. The attackers
 * are in abuse_attack.c.
 */
#include "abuse_attack.h"
#include "fixtures.h"
#include "server_proc.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>

#define MiB  (1ull << 20)
#define POOL (256 * MiB)
/* What the server may hold beyond its pool (which it pins whole): its
 * heap (a connection's staging buffer is 64 KiB; request slots, id sets),
 * its rings, and under ASan the shadow and a quarantine of freed blocks,
 * held to QUARANTINE_MB here (main). Alone it stays within about 30 MiB
 * of the pool; a server that keeps unsent answers for clients that never
 * read grows past the bound within the attack (about 2 GB was seen). */
#define RSS_SLACK     (128 * MiB)
#define QUARANTINE_MB "16"
#define MAX_CONNS     "64"
#define IDLE_MS	      500
#define IDLE_MS_STR   "500"
#define ALONE_MS      1000
#define ATTACK_MS     2500
#define BATCH_MS      5000 /* the good client's batch deadline */

/* The good client's objects: sizes from 4 KiB to 1 MiB, some odd. */
#define NOBJ  40
#define BATCH 8
static const size_t obj_sizes[] = {4096, 12289, 65536, 262141, MiB};
#define NSIZES (sizeof(obj_sizes) / sizeof(obj_sizes[0]))

struct abuse {
	struct kvt_server srv;
	struct kva atk;
	kvr_engine *e;
	kvr_target *t;
	uint8_t *mem;
	size_t mem_len;
	kvr_mr *mr;
	size_t off[NOBJ];    /* put buffer at mem + off, get buffer after it */
	uint32_t ver[NOBJ];  /* version last put */
	bool known[NOBJ];    /* stored with ver (false after a failed put) */
	uint64_t lost;	     /* gets that missed or failed */
	uint64_t wrong;	     /* gets with a wrong length or wrong bytes */
	uint64_t put_failed; /* puts that failed */
	int64_t lost_err;    /* the first error of each */
	int64_t put_err;
	uint64_t cursor;
	uint64_t peak_rss;
	uint64_t rss_alone; /* peak before the attack */
	int64_t rss_at;
	struct kvt_done *d;
};

/* The server's resident set in bytes (0 once it is gone). */
static uint64_t server_rss(const struct abuse *ab)
{
	char path[64], line[256];
	uint64_t kb = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)ab->srv.pid);
	f = fopen(path, "r");
	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmRSS: %llu kB", (unsigned long long *)&kb) == 1)
			break;
	fclose(f);
	return kb << 10;
}

static void sample_rss(struct abuse *ab)
{
	uint64_t rss;

	if (kva_now_ms() - ab->rss_at < 20)
		return;
	ab->rss_at = kva_now_ms();
	rss = server_rss(ab);
	if (rss > ab->peak_rss)
		ab->peak_rss = rss;
}

static void good_round(struct abuse *ab);

/* Start the attack; return once every attacker is under way, the good
 * client going on meanwhile (idle, its connection could be taken for an
 * idle one). The attackers that must get in before a flood fills the
 * connection table go first. */
static void attack_start(struct abuse *ab, unsigned kinds)
{
	int64_t t0 = kva_now_ms();

	for (int early = 1; early >= 0; early--) {
		assert_true(kva_start(&ab->atk, kinds, early) >= 0);
		while (!kva_armed(&ab->atk) && kva_now_ms() - t0 < 10000)
			good_round(ab);
	}
	assert_true(kva_armed(&ab->atk));
}

/* -------------------------------------------------------- the good client */

static uint64_t obj_seed(int i, uint32_t ver)
{
	return 0x600d000000000000ull | (uint64_t)i << 32 | ver;
}

static void obj_desc(struct abuse *ab, int i, bool get, char *key, kvr_sge *sg, kvr_obj *o)
{
	size_t len = obj_sizes[i % NSIZES];

	snprintf(key, 16, "good-%d", i);
	*sg = (kvr_sge){ab->mem + ab->off[i] + (get ? len : 0), len};
	*o = (kvr_obj){key, strlen(key), sg, 1};
}

static int run_batch(struct abuse *ab, enum kvr_op op, const kvr_obj *o, size_t n)
{
	memset(ab->d, 0, sizeof(*ab->d));
	int rc = kvr_submit(ab->t, op, o, n, BATCH_MS, kvt_batch_cb, ab->d);

	if (rc)
		return rc;
	while (!ab->d->calls) {
		assert_true(kvr_engine_poll(ab->e, 100) >= 0);
		sample_rss(ab);
	}
	return 0;
}

/* Put new versions of objects first..first+n-1. */
static void put_objs(struct abuse *ab, uint64_t first, int n)
{
	char keys[BATCH][16];
	kvr_sge sg[BATCH];
	kvr_obj o[BATCH];
	int idx[BATCH];

	for (int j = 0; j < n; j++) {
		int i = (int)((first + (uint64_t)j) % NOBJ);

		idx[j] = i;
		ab->ver[i]++;
		obj_desc(ab, i, false, keys[j], &sg[j], &o[j]);
		kvt_fill(sg[j].addr, sg[j].len, obj_seed(i, ab->ver[i]));
	}
	assert_int_equal(run_batch(ab, KVR_OP_PUT, o, (size_t)n), 0);
	for (int j = 0; j < n; j++) {
		ab->known[idx[j]] = ab->d->results[j] == (int64_t)sg[j].len;
		if (!ab->known[idx[j]] && !ab->put_failed++)
			ab->put_err = ab->d->results[j];
	}
}

/* Get objects first..first+n-1 and check every byte of those whose
 * content is known. */
static void get_objs(struct abuse *ab, uint64_t first, int n)
{
	char keys[BATCH][16];
	kvr_sge sg[BATCH];
	kvr_obj o[BATCH];
	int idx[BATCH];

	for (int j = 0; j < n; j++) {
		int i = (int)((first + (uint64_t)j) % NOBJ);

		idx[j] = i;
		obj_desc(ab, i, true, keys[j], &sg[j], &o[j]);
		memset(sg[j].addr, 0, sg[j].len);
	}
	assert_int_equal(run_batch(ab, KVR_OP_GET, o, (size_t)n), 0);
	for (int j = 0; j < n; j++) {
		int i = idx[j];
		int64_t res = ab->d->results[j];

		if (!ab->known[i])
			continue;
		if (res < 0 && !ab->lost++)
			ab->lost_err = res;
		if (res < 0)
			continue;
		if (res != (int64_t)sg[j].len ||
		    !kvt_check(sg[j].addr, sg[j].len, obj_seed(i, ab->ver[i])))
			ab->wrong++;
	}
}

/* New versions of the next BATCH objects, and the BATCH after them read
 * back and checked. */
static void good_round(struct abuse *ab)
{
	put_objs(ab, ab->cursor, BATCH);
	get_objs(ab, ab->cursor + BATCH, BATCH);
	ab->cursor += BATCH;
	sample_rss(ab);
}

/* Rounds for ms milliseconds: the objects put and got per second. */
static double measure(struct abuse *ab, int ms)
{
	int64_t t0 = kva_now_ms(), t;
	uint64_t ops = 0;

	do {
		good_round(ab);
		ops += 2 * BATCH;
		t = kva_now_ms() - t0;
	} while (t < ms);
	return (double)ops * 1000.0 / (double)t;
}

/* Run good rounds (the first client does not stop) until batch d of
 * another target is done. */
static void rounds_until(struct abuse *ab, struct kvt_done *d)
{
	int64_t t0 = kva_now_ms();

	while (!d->calls && kva_now_ms() - t0 < 10000)
		good_round(ab);
	assert_int_equal(d->calls, 1);
}

/* One put and get of a fresh target; 0, or -1 when either failed. */
static int new_client_once(struct abuse *ab)
{
	struct kvr_connect_opts co = {.size = sizeof(co), .conns = 1, .connect_timeout_ms = 1000};
	kvr_sge sg = {ab->mem + ab->mem_len - 4096, 4096};
	kvr_obj o = {"good-new", 8, &sg, 1};
	struct kvt_done *d = calloc(1, sizeof(*d));
	kvr_target *t;
	int rc = -1;

	assert_non_null(d);
	assert_int_equal(kvr_connect(ab->e, ab->srv.uri, &co, &t), 0);
	kvt_fill(sg.addr, 4096, 77);
	assert_int_equal(kvr_submit(t, KVR_OP_PUT, &o, 1, 2000, kvt_batch_cb, d), 0);
	rounds_until(ab, d);
	if (d->results[0] == 4096) {
		memset(sg.addr, 0, 4096);
		memset(d, 0, sizeof(*d));
		assert_int_equal(kvr_submit(t, KVR_OP_GET, &o, 1, 5000, kvt_batch_cb, d), 0);
		rounds_until(ab, d);
		rc = d->results[0] == 4096 && kvt_check(sg.addr, 4096, 77) ? 0 : -1;
	}
	assert_int_equal(kvr_target_close(t), 0);
	free(d);
	return rc;
}

/* A new client during the attack: it must get in (a full table makes
 * room by closing a connection idle for the timeout) and be served,
 * trying again as a refused client would. Milliseconds it took, or -1. */
static int64_t new_client(struct abuse *ab)
{
	int64_t t0 = kva_now_ms();

	while (kva_now_ms() - t0 < 8000) {
		if (!new_client_once(ab))
			return kva_now_ms() - t0;
		good_round(ab); /* a moment before it tries again */
	}
	return -1;
}

/* ------------------------------------------------------------- the cases */

static int setup(void **state)
{
	struct abuse *ab = calloc(1, sizeof(*ab));
	struct kvr_connect_opts co = {.size = sizeof(co)};
	const char *lv = getenv("KVR_ABUSE_LOG"); /* the server's --log-level */
	const char *args[] = {
	    "--memory",	 "256M",	"--max-conns",		 MAX_CONNS, "--idle-timeout",
	    IDLE_MS_STR, "--log-level", lv && *lv ? lv : "warn", NULL};

	assert_non_null(ab);
	ab->d = calloc(1, sizeof(*ab->d));
	for (int i = 0; i < NOBJ; i++) {
		ab->off[i] = ab->mem_len;
		ab->mem_len += 2 * ((obj_sizes[i % NSIZES] + 4095) & ~(size_t)4095);
	}
	ab->mem_len += 4096;
	ab->mem = kvt_alloc_mem(ab->mem_len);
	assert_int_equal(kvt_server_start(&ab->srv, args), 0);
	kva_init(&ab->atk, ab->srv.port, kvt_env_u64("KVR_ABUSE_SEED", 1));
	ab->e = kvt_engine();
	assert_int_equal(kvr_mem_register(ab->e, ab->mem, ab->mem_len, 0, &ab->mr), 0);
	assert_int_equal(kvr_connect(ab->e, ab->srv.uri, &co, &ab->t), 0);
	/* every object stored once, before anything is measured */
	for (int i = 0; i < NOBJ; i += BATCH)
		put_objs(ab, (uint64_t)i, BATCH);
	assert_int_equal(ab->put_failed, 0);
	*state = ab;
	return 0;
}

static int teardown(void **state)
{
	struct abuse *ab = *state;

	kva_fini(&ab->atk);
	if (ab->t)
		kvr_target_close(ab->t);
	kvr_engine_destroy(ab->e);
	if (ab->srv.pid) { /* a case that failed: how did the server end? */
		int rc = kvt_server_stop(&ab->srv);

		printf("abuse: server exit status %d%s%s\n", rc, rc ? ", see " : "",
		       rc ? ab->srv.log : "");
	}
	kvt_free_mem(ab->mem, ab->mem_len);
	free(ab->d);
	free(ab);
	return 0;
}

static void run_case(void **state, const char *name, unsigned kinds)
{
	struct abuse *ab = *state;
	double alone, during, ratio;
	int64_t join_ms = -1, held;
	uint64_t lost, wrong, failed;
	int rc;

	alone = measure(ab, ALONE_MS);
	ab->rss_alone = ab->peak_rss;
	attack_start(ab, kinds);
	during = measure(ab, ATTACK_MS);
	if (kinds & KVA_FLOOD)
		join_ms = new_client(ab);
	kva_stop(&ab->atk);
	/* every object read back once more, the attack over */
	for (int i = 0; i < NOBJ; i += BATCH)
		get_objs(ab, (uint64_t)i, BATCH);
	sample_rss(ab);
	ratio = during / alone;
	lost = ab->lost;
	wrong = ab->wrong;
	failed = ab->put_failed;
	held = __atomic_load_n(&ab->atk.slow_hold, __ATOMIC_RELAXED);
	printf("abuse %s: ops/s alone %.0f, during %.0f, ratio %.2f; lost %llu, wrong %llu, ", name,
	       alone, during, ratio, (unsigned long long)lost, (unsigned long long)wrong);
	printf("failed puts %llu; peak server RSS %llu MiB (alone %llu, bound %llu); ",
	       (unsigned long long)failed, (unsigned long long)(ab->peak_rss >> 20),
	       (unsigned long long)(ab->rss_alone >> 20),
	       (unsigned long long)((POOL + RSS_SLACK) >> 20));
	printf("attack frames %llu, connections %llu (refused %llu, closed by the server %llu)",
	       (unsigned long long)kva_load(&ab->atk.frames),
	       (unsigned long long)kva_load(&ab->atk.conns),
	       (unsigned long long)kva_load(&ab->atk.refused),
	       (unsigned long long)kva_load(&ab->atk.closed));
	if (lost)
		printf("; first loss %s", kvr_strerror((int)ab->lost_err));
	if (failed)
		printf("; first failed put %s", kvr_strerror((int)ab->put_err));
	if (kinds & KVA_BOUNDS)
		printf("; bound cases %llu", (unsigned long long)kva_load(&ab->atk.bounds));
	if (kinds & KVA_FUZZ)
		printf("; answers to fuzzed frames %llu",
		       (unsigned long long)kva_load(&ab->atk.answers));
	if (kinds & KVA_SLOW)
		printf("; slowloris closed %llu, longest held %lld ms",
		       (unsigned long long)kva_load(&ab->atk.slow_kills), (long long)held);
	if (kinds & KVA_FLOOD)
		printf("; new client in after %lld ms", (long long)join_ms);
	printf("\n");
	if (ab->atk.failures)
		printf("abuse %s: %llu attacker-side failure(s), first: %s\n", name,
		       (unsigned long long)ab->atk.failures, ab->atk.why);
	fflush(stdout);

	assert_int_equal(ab->atk.failures, 0);
	assert_int_equal(lost, 0);
	assert_int_equal(wrong, 0);
	assert_int_equal(failed, 0);
	assert_true(ratio >= 0.5);
	assert_true(ab->peak_rss < POOL + RSS_SLACK);
	if (kinds & KVA_SLOW) {
		/* each trickling connection goes within the timeout, a tick
		 * (a quarter of it) and slack for a loaded machine */
		if (!(kinds & KVA_FLOOD)) /* else most are refused */
			assert_true(kva_load(&ab->atk.slow_kills) >= KVA_SLOW_CONNS);
		assert_true(held < IDLE_MS + 2000);
	}
	if (kinds & KVA_FLOOD) {
		assert_true(kva_load(&ab->atk.refused) > 0); /* the table was full */
		assert_true(join_ms >= 0);
	}
	/* the server survived all of it and exits cleanly (a crash, a
	 * sanitizer report or a leak makes the exit status non-zero) */
	assert_int_equal(kvr_target_close(ab->t), 0);
	ab->t = NULL;
	rc = kvt_server_stop(&ab->srv);
	if (rc)
		printf("abuse %s: server exit status %d, see %s\n", name, rc, ab->srv.log);
	assert_int_equal(rc, 0);
}

static void test_fuzz(void **state)
{
	run_case(state, "fuzz", KVA_FUZZ | KVA_BOUNDS);
}

static void test_slowloris(void **state)
{
	run_case(state, "slowloris", KVA_SLOW);
}

static void test_flood(void **state)
{
	run_case(state, "flood", KVA_FLOOD);
}

static void test_noread(void **state)
{
	run_case(state, "noread", KVA_NOREAD);
}

static void test_nocrc(void **state)
{
	run_case(state, "nocrc", KVA_NOCRC);
}

static void test_bigput(void **state)
{
	run_case(state, "bigput", KVA_BIGPUT);
}

static void test_all(void **state)
{
	run_case(state, "all",
		 KVA_FUZZ | KVA_SLOW | KVA_FLOOD | KVA_NOREAD | KVA_NOCRC | KVA_BIGPUT);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_fuzz, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_slowloris, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_flood, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_noread, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_nocrc, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_bigput, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_all, setup, teardown),
	};

	const char *ao = getenv("ASAN_OPTIONS");
	char opts[1024];

	signal(SIGPIPE, SIG_IGN);
	/* ASan's quarantine (256 MiB by default) would make the server's RSS
	 * a measure of how much it freed: a smaller one for the servers
	 * started from here (this process read its options already). */
	if (!ao || !strstr(ao, "quarantine_size_mb")) {
		snprintf(opts, sizeof(opts), "%s%squarantine_size_mb=" QUARANTINE_MB, ao ? ao : "",
			 ao && *ao ? ":" : "");
		setenv("ASAN_OPTIONS", opts, 1);
	}
	if (getenv("KVR_ABUSE_ONLY")) /* one case, e.g. "test_flood" */
		cmocka_set_test_filter(getenv("KVR_ABUSE_ONLY"));
	return cmocka_run_group_tests(tests, NULL, NULL);
}
