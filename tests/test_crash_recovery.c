/* SPDX-License-Identifier: MIT */
/*
 * Crash recovery of the file store: a child process keeps putting objects
 * and is SIGKILLed at a random point; the parent then reopens the store and
 * checks that nothing acknowledged was lost and nothing wrong is returned.
 *
 * The child puts batches of 1-16 objects (1 B - 1 MiB, log-uniform; 1-8
 * SGEs at aligned and unaligned addresses) over a small key space, so keys
 * are overwritten with new versions all the time, and now and then removes
 * a few keys; it never has two operations on one key in flight at once.
 * Bytes are a pure function of (key, version). Through a pipe (fixed-size
 * binary records) it tells the parent:
 *   START k v len   before submitting version v of key k,
 *   ACK   k v len   from the batch callback, for each put that succeeded,
 *   RSTART k        before submitting a remove of key k,
 *   RACK  k res     from its callback (0, or -ENOENT: the parent checks
 *                   which of the two its model allows),
 *   ERR             anything unexpected (failed put, eviction, bad get).
 * It also reads back keys it wrote, to check gets racing with puts.
 *
 * The parent kills the child after a random delay (1-300 ms; 0-60 ms to
 * land in engine setup, format, replay or the compaction at open; 2-4 s in
 * every 12th trial, so that the log half fills and compacts at run time), or
 * after a random number of ACKs. It reaps the child, drains the pipe, waits
 * until the dead child's I/O has drained (the kernel finishes a killed
 * process's io_uring requests after waitpid() returns: no other opener of
 * the file may be left), and then, from the parent's state:
 *   - a key's allowed values are its last acknowledged version, plus any
 *     version whose put was in flight at a kill since (an overwrite writes a
 *     new extent, so the old version must survive intact);
 *   - "absent" is allowed only for a key never acknowledged, or whose
 *     remove was acknowledged, or in flight at a kill since;
 *   - -EIO is allowed only for a key whose remove was in flight at a kill
 *     (its extent may have been reused before the remove was durable);
 *   - every get must return exactly one allowed version, byte for byte;
 *     anything else (-ENOENT for an acknowledged key, an older version,
 *     foreign bytes) fails, and so does an acknowledged remove whose key
 *     comes back;
 *   - the store's object count and bytes in use match, with no eviction
 *     and no checksum error beyond those -EIOs.
 * Trials come in chains: a chain starts with a fresh store (new file, or
 * KVR_STORE_TRUNCATE) or with the store the parent last closed cleanly, and
 * its later trials reopen a store that crashed and was never closed; the
 * parent verifies at the end of each chain.
 *
 * Environment: KVT_SEED (default: time-based, printed), KVT_CRASH_TRIALS
 * (default 24).
 */
#include "fixtures.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define NKEYS	       96
#define MAX_LEN	       (1u << 20)
#define MAX_SGES       8
#define PAGE	       4096u
#define SGE_SLACK      (2 * PAGE)
#define STORE_CAP      (512ull << 20) /* 8 MiB log halves: runtime compactions happen */
#define TRIALS_DEFAULT 24
#define MAXV	       8 /* allowed versions per key (a chain adds one per crash) */
#define MAX_CHAIN      3

/* child */
#define CBATCH	     16
#define CSLOTS	     4
#define CSLOT_BYTES  (24u << 20)
#define CARENA	     ((size_t)CSLOTS * CSLOT_BYTES)
#define CHILD_MAX_MS 30000 /* a child nobody killed gives up */

/* parent verification */
#define VBATCH 32
#define VEXTRA (64u << 10)
#define VSLOT  (MAX_LEN + VEXTRA + MAX_SGES * SGE_SLACK)
#define VARENA ((size_t)VBATCH * VSLOT)

_Static_assert((MAX_LEN + MAX_SGES * SGE_SLACK + 2 * VEXTRA) * CBATCH <= CSLOT_BYTES, "slot");

/* ------------------------------------------------------------ pipe records */

enum { REC_READY = 1, REC_START, REC_ACK, REC_RSTART, REC_RACK, REC_ERR };

struct prec {
	uint32_t type;
	uint32_t key; /* ERR: source line */
	uint64_t ver; /* ERR: detail */
	int64_t val;  /* START/ACK: length; RACK: result; ERR: the value that was wrong */
};

/* ----------------------------------------------------------------- shared */

static uint64_t content_seed(uint32_t key, uint64_t ver)
{
	return ((uint64_t)key + 1) * 0x9e3779b97f4a7c15ull ^ ver * 0xc2b2ae3d27d4eb4full;
}

static bool sgl_ok(const kvr_sge *sgl, uint32_t nsge, uint64_t len, uint64_t seed)
{
	uint64_t off = 0;

	for (uint32_t j = 0; j < nsge && off < len; j++) {
		uint64_t l = sgl[j].len < len - off ? sgl[j].len : len - off;

		if (kvt_check_at(sgl[j].addr, l, seed, off) != l)
			return false;
		off += l;
	}
	return off == len;
}

static uint32_t key_name(uint32_t k, char *buf)
{
	/* 9 to 45 bytes; some share long prefixes */
	return (uint32_t)sprintf(buf, "crash/%03u/%.*s", k, (int)(k % 37),
				 "abcdefghijklmnopqrstuvwxyz0123456789.");
}

static uint64_t rnd(uint64_t *rng, uint64_t n)
{
	return kvt_rand(rng) % n;
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* Up to MAX_SGES pieces of `total` bytes at random places after *cur. */
static uint32_t make_sgl(uint64_t *rng, uint8_t **cur, uint64_t total, kvr_sge *sgl)
{
	uint64_t cuts[MAX_SGES];
	uint32_t want = 1 + (uint32_t)rnd(rng, MAX_SGES), k = 0, n = 0;

	if (want > total)
		want = (uint32_t)total;
	for (uint32_t i = 0; i + 1 < want; i++)
		cuts[k++] = 1 + rnd(rng, total - 1);
	cuts[k++] = total;
	qsort(cuts, k, sizeof(cuts[0]), cmp_u64);
	for (uint32_t i = 0; i < k; i++) {
		uint64_t len = cuts[i] - (i ? cuts[i - 1] : 0);
		uintptr_t a = ((uintptr_t)*cur + PAGE - 1) & ~(uintptr_t)(PAGE - 1);

		if (!len)
			continue;
		switch (rnd(rng, 4)) {
		case 0:
		case 1:
			break;
		case 2:
			a += 512 * (1 + rnd(rng, 7));
			break;
		default:
			a += 1 + rnd(rng, PAGE - 1);
			break;
		}
		sgl[n].addr = (void *)a;
		sgl[n].len = len;
		*cur = (uint8_t *)a + len;
		n++;
	}
	return n;
}

/* Log-uniform length in [1, MAX_LEN]. */
static uint64_t rand_len(uint64_t *rng)
{
	uint32_t b = (uint32_t)rnd(rng, 20);

	if (rnd(rng, 64) == 0)
		return MAX_LEN;
	return (1ull << b) + rnd(rng, 1ull << b);
}

/* ------------------------------------------------------------------ child */

struct child;

enum cop { C_PUT, C_GET, C_REMOVE };

struct cslot {
	struct child *c;
	bool busy;
	enum cop op;
	uint8_t *mem;
	uint32_t n;
	uint32_t key[CBATCH];
	uint64_t ver[CBATCH];
	uint64_t len[CBATCH];
	uint32_t nsge[CBATCH];
	kvr_sge sgl[CBATCH][MAX_SGES];
};

struct child {
	kvr_engine *e;
	kvr_target *t;
	int wfd;
	uint64_t rng;
	uint64_t next_ver;
	bool busy[NKEYS];
	uint64_t acked_ver[NKEYS]; /* acknowledged in this child (0: none) */
	uint64_t acked_len[NKEYS];
	struct cslot slot[CSLOTS];
};

static void child_write(struct child *c, const struct prec *r, size_t n)
{
	const uint8_t *p = (const uint8_t *)r;
	size_t len = n * sizeof(*r);

	/* <= PIPE_BUF bytes: one atomic write unless interrupted */
	while (len) {
		ssize_t w = write(c->wfd, p, len);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			_exit(6);
		p += w;
		len -= (size_t)w;
	}
}

static __attribute__((noreturn)) void child_fail(struct child *c, uint32_t line, uint64_t detail,
						 int64_t val)
{
	struct prec r = {REC_ERR, line, detail, val};

	child_write(c, &r, 1);
	_exit(3);
}

#define CHILD_CHECK(c, cond, detail, val)                                                          \
	do {                                                                                       \
		if (!(cond))                                                                       \
			child_fail((c), __LINE__, (uint64_t)(detail), (int64_t)(val));             \
	} while (0)

static void child_cb(void *ctx, size_t n, const int64_t *res)
{
	struct cslot *s = ctx;
	struct child *c = s->c;
	struct prec acks[CBATCH];
	size_t nack = 0;

	CHILD_CHECK(c, n == s->n, s->n, n);
	for (uint32_t i = 0; i < s->n; i++) {
		uint32_t k = s->key[i];

		switch (s->op) {
		case C_GET:
			CHILD_CHECK(c, res[i] == (int64_t)s->len[i], k, res[i]);
			CHILD_CHECK(
			    c, sgl_ok(s->sgl[i], s->nsge[i], s->len[i], content_seed(k, s->ver[i])),
			    k, s->ver[i]);
			break;
		case C_PUT:
			CHILD_CHECK(c, res[i] == (int64_t)s->len[i], k, res[i]);
			acks[nack++] = (struct prec){REC_ACK, k, s->ver[i], res[i]};
			c->acked_ver[k] = s->ver[i];
			c->acked_len[k] = s->len[i];
			break;
		case C_REMOVE:
			/* the parent judges whether the key should have been there */
			CHILD_CHECK(c, res[i] == 0 || res[i] == -ENOENT, k, res[i]);
			acks[nack++] = (struct prec){REC_RACK, k, 0, res[i]};
			c->acked_ver[k] = 0;
			break;
		}
		c->busy[k] = false;
	}
	if (nack)
		child_write(c, acks, nack);
	if (s->op != C_GET) {
		struct kvr_stats st = {.size = sizeof(st)};

		CHILD_CHECK(c, kvr_target_stats(c->t, &st) == 0, 0, -1);
		CHILD_CHECK(c, st.evictions == 0 && st.checksum_errors == 0, st.checksum_errors,
			    st.evictions);
	}
	s->busy = false;
}

static void child_submit(struct child *c, struct cslot *s)
{
	kvr_obj objs[CBATCH];
	struct prec starts[CBATCH];
	char keys[CBATCH][64];
	uint8_t *cur = s->mem;
	uint32_t want = 1 + (uint32_t)rnd(&c->rng, CBATCH);
	int rc;

	switch (rnd(&c->rng, 16)) {
	case 0:
	case 1:
	case 2:
	case 3:
		s->op = C_GET;
		want = 1 + (uint32_t)rnd(&c->rng, 8);
		break;
	case 4:
		s->op = C_REMOVE;
		want = 1 + (uint32_t)rnd(&c->rng, 4);
		break;
	default:
		s->op = C_PUT;
		break;
	}
	s->n = 0;
	for (uint32_t tries = 0; s->n < want && tries < 4 * NKEYS; tries++) {
		uint32_t k = (uint32_t)rnd(&c->rng, NKEYS), i = s->n;
		uint64_t cap;

		if (c->busy[k] || (s->op == C_GET && !c->acked_ver[k]))
			continue;
		c->busy[k] = true;
		s->key[i] = k;
		objs[i].key = keys[i];
		objs[i].key_len = key_name(k, keys[i]);
		objs[i].sgl = NULL;
		objs[i].nsge = 0;
		if (s->op == C_REMOVE) {
			starts[i] = (struct prec){REC_RSTART, k, 0, 0};
			s->n++;
			continue;
		}
		if (s->op == C_GET) {
			s->ver[i] = c->acked_ver[k];
			s->len[i] = c->acked_len[k];
			cap = s->len[i] + rnd(&c->rng, 3) * rnd(&c->rng, VEXTRA);
			s->nsge[i] = make_sgl(&c->rng, &cur, cap, s->sgl[i]);
		} else {
			uint64_t seed, off = 0;

			s->ver[i] = c->next_ver++;
			s->len[i] = rand_len(&c->rng);
			seed = content_seed(k, s->ver[i]);
			s->nsge[i] = make_sgl(&c->rng, &cur, s->len[i], s->sgl[i]);
			for (uint32_t j = 0; j < s->nsge[i]; j++) {
				kvt_fill_at(s->sgl[i][j].addr, s->sgl[i][j].len, seed, off);
				off += s->sgl[i][j].len;
			}
			starts[i] = (struct prec){REC_START, k, s->ver[i], (int64_t)s->len[i]};
		}
		objs[i].sgl = s->sgl[i];
		objs[i].nsge = s->nsge[i];
		s->n++;
	}
	if (!s->n)
		return;
	/* the parent must know a version may exist (or a key may be gone)
	 * before it can */
	if (s->op != C_GET)
		child_write(c, starts, s->n);
	s->busy = true;
	rc = s->op == C_GET   ? kvr_get(c->t, objs, s->n, child_cb, s)
	     : s->op == C_PUT ? kvr_put(c->t, objs, s->n, child_cb, s)
			      : kvr_remove(c->t, objs, s->n, child_cb, s);
	CHILD_CHECK(c, rc == 0, s->n, rc);
}

static __attribute__((noreturn)) void child_main(const char *uri, int wfd, uint32_t flags,
						 uint64_t seed, uint64_t ver_base, pid_t parent)
{
	static struct child cc;
	struct child *c = &cc;
	struct kvr_store_opts so = {.size = sizeof(so), .flags = flags, .capacity = STORE_CAP};
	struct prec ready = {REC_READY, 0, 0, 0};
	uint8_t *arena;
	kvr_mr *mr;
	int64_t t0 = now_ms();
	int rc;

	/* no cmocka in here: a failed assert would unwind into the test runner */
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != parent)
		_exit(7);
	c->wfd = wfd;
	c->rng = seed;
	c->next_ver = ver_base;
	rc = kvr_engine_create(NULL, &c->e);
	CHILD_CHECK(c, rc == 0, 0, rc);
	arena = mmap(NULL, CARENA, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHILD_CHECK(c, arena != MAP_FAILED, 0, -errno);
	rc = kvr_mem_register(c->e, arena, CARENA, 0, &mr);
	CHILD_CHECK(c, rc == 0, 0, rc);
	for (uint32_t i = 0; i < CSLOTS; i++) {
		c->slot[i].c = c;
		c->slot[i].mem = arena + (size_t)i * CSLOT_BYTES;
	}
	rc = kvr_store_open(c->e, uri, &so, &c->t);
	CHILD_CHECK(c, rc == 0, 0, rc);
	child_write(c, &ready, 1);
	for (;;) {
		for (uint32_t i = 0; i < CSLOTS; i++)
			if (!c->slot[i].busy)
				child_submit(c, &c->slot[i]);
		rc = kvr_engine_poll(c->e, 100);
		CHILD_CHECK(c, rc >= 0, 0, rc);
		if (now_ms() - t0 > CHILD_MAX_MS)
			_exit(4);
	}
}

/* ----------------------------------------------------------------- parent */

struct kver {
	uint64_t ver;
	uint64_t len;
	bool acked; /* acknowledged (else: in flight at a crash) */
};

struct kstate {
	uint32_t n;
	struct kver v[MAXV]; /* allowed values */
	bool absent_ok;
	bool eio_ok;  /* a remove was in flight at a crash: see verify() */
	bool pending; /* a put is in flight */
	struct kver pend;
	bool pending_rm; /* a remove is in flight */
};

struct crash {
	char path[4096];
	char uri[4200];
	uint64_t seed, rng;
	struct kstate ks[NKEYS];
	/* every version ever started, for diagnosing wrong bytes */
	struct kver *hist[NKEYS];
	uint32_t nhist[NKEYS], caphist[NKEYS];
	uint8_t *varena;
	/* totals */
	uint32_t trials, fresh, reopened_clean, reopened_crashed, verifies, kills_before_ready;
	uint32_t quiet_waits; /* times the dead child's file was still open after waitpid */
	uint64_t starts, acks, removes;
	uint64_t seen_acked, seen_inflight, seen_absent, seen_eio, checked_bytes;
	char err[4096];
	size_t errlen;
};

static void perr(struct crash *cs, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void perr(struct crash *cs, const char *fmt, ...)
{
	va_list ap;
	char line[1024];

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	fprintf(stderr, "crash_recovery: %s\n", line);
	if (cs->errlen + 2 < sizeof(cs->err))
		cs->errlen += (size_t)snprintf(cs->err + cs->errlen, sizeof(cs->err) - cs->errlen,
					       "%s; ", line);
}

static void hist_add(struct crash *cs, uint32_t k, uint64_t ver, uint64_t len)
{
	if (cs->nhist[k] == cs->caphist[k]) {
		cs->caphist[k] = cs->caphist[k] ? cs->caphist[k] * 2 : 64;
		cs->hist[k] = realloc(cs->hist[k], cs->caphist[k] * sizeof(struct kver));
		if (!cs->hist[k]) {
			perr(cs, "out of memory");
			cs->caphist[k] = cs->nhist[k] = 0;
			return;
		}
	}
	cs->hist[k][cs->nhist[k]++] = (struct kver){ver, len, false};
}

struct trial {
	bool truncate; /* the child opens with KVR_STORE_TRUNCATE */
	bool ready;
	uint32_t acks;
};

/* Apply one record from the child. */
static void apply(struct crash *cs, struct trial *tr, const struct prec *r)
{
	struct kstate *ks = r->key < NKEYS ? &cs->ks[r->key] : NULL;

	switch (r->type) {
	case REC_READY:
		tr->ready = true;
		if (tr->truncate) /* the old contents are gone now, not before */
			for (uint32_t k = 0; k < NKEYS; k++)
				cs->ks[k] = (struct kstate){.absent_ok = true};
		return;
	case REC_ERR:
		perr(cs,
		     "child failed at test_crash_recovery.c:%u (detail %" PRIu64 ", value %" PRId64
		     " %s)",
		     r->key, r->ver, r->val, r->val < 0 ? kvr_strerror((int)r->val) : "");
		return;
	case REC_START:
		if (!ks || ks->pending || ks->pending_rm || r->val <= 0 || r->val > MAX_LEN) {
			perr(cs, "protocol: START key %u ver %" PRIu64 " len %" PRId64, r->key,
			     r->ver, r->val);
			return;
		}
		ks->pending = true;
		ks->pend = (struct kver){r->ver, (uint64_t)r->val, false};
		hist_add(cs, r->key, r->ver, (uint64_t)r->val);
		cs->starts++;
		return;
	case REC_ACK:
		if (!ks || !ks->pending || ks->pend.ver != r->ver ||
		    (int64_t)ks->pend.len != r->val) {
			perr(cs, "protocol: ACK key %u ver %" PRIu64 " len %" PRId64 " not pending",
			     r->key, r->ver, r->val);
			return;
		}
		ks->pending = false;
		ks->n = 1;
		ks->v[0] = ks->pend;
		ks->v[0].acked = true;
		ks->absent_ok = false;
		ks->eio_ok = false;
		tr->acks++;
		cs->acks++;
		return;
	case REC_RSTART:
		if (!ks || ks->pending || ks->pending_rm) {
			perr(cs, "protocol: RSTART key %u", r->key);
			return;
		}
		ks->pending_rm = true;
		return;
	case REC_RACK:
		if (!ks || !ks->pending_rm) {
			perr(cs, "protocol: RACK key %u not pending", r->key);
			return;
		}
		/* the key was there (0) or not (-ENOENT): either must be allowed */
		if (r->val == 0 ? !ks->n && !ks->eio_ok : !ks->absent_ok)
			perr(cs,
			     "key %u: remove returned %" PRId64 " (%s); allowed:%s%s, %u versions",
			     r->key, r->val, kvr_strerror((int)r->val),
			     ks->absent_ok ? " absent" : "", ks->eio_ok ? " -EIO" : "", ks->n);
		*ks = (struct kstate){.absent_ok = true};
		cs->removes++;
		return;
	default:
		perr(cs, "protocol: record type %u", r->type);
	}
}

/* Parse whole records out of buf[0..*have); keep a partial one. */
static void parse(struct crash *cs, struct trial *tr, uint8_t *buf, size_t *have)
{
	size_t off = 0;

	for (; *have - off >= sizeof(struct prec); off += sizeof(struct prec)) {
		struct prec r;

		memcpy(&r, buf + off, sizeof(r));
		apply(cs, tr, &r);
	}
	memmove(buf, buf + off, *have - off);
	*have -= off;
}

/*
 * Wait until no other process has the file open for writing (the dead
 * child's ring may still be finishing its I/O after waitpid returns): a
 * write lease is granted only then.
 */
static void wait_file_quiet(struct crash *cs)
{
	int fd = open(cs->path, O_RDONLY | O_CLOEXEC);
	int64_t end = now_ms() + 10000;

	if (fd < 0)
		return;
	for (uint32_t i = 0;; i++) {
		if (fcntl(fd, F_SETLEASE, F_WRLCK) == 0) {
			if (i)
				cs->quiet_waits++;
			fcntl(fd, F_SETLEASE, F_UNLCK);
			break;
		}
		if (errno != EAGAIN && errno != EBUSY)
			break; /* no leases here: nothing to wait for */
		if (now_ms() > end) {
			perr(cs, "the killed child's file stayed open for 10 s");
			break;
		}
		poll(NULL, 0, 1);
	}
	close(fd);
}

enum kill_mode { KILL_SOON, KILL_DELAY, KILL_ACKS, KILL_LONG };

static bool verbose; /* KVT_VERBOSE=1: a line per trial */

/* One child: fork, feed, kill, reap, drain. Never asserts while it runs. */
static void run_child(struct crash *cs, uint32_t trial, uint32_t flags, struct trial *tr)
{
	enum kill_mode mode;
	uint64_t arg;
	uint8_t buf[1 << 16];
	size_t have = 0;
	int fds[2], status = 0;
	int64_t t0 = now_ms(), deadline;
	pid_t pid, me = getpid();
	bool eof = false;

	switch (trial % 12 == 6 ? 8 : rnd(&cs->rng, 8)) {
	case 0: /* while it creates the engine, formats, replays, compacts */
		mode = KILL_SOON, arg = rnd(&cs->rng, 60);
		break;
	case 8: /* long enough for the log half to fill: runtime compaction */
		mode = KILL_LONG, arg = 2000 + rnd(&cs->rng, 2000);
		break;
	case 1:
	case 2:
		mode = KILL_ACKS, arg = 1 + rnd(&cs->rng, 400);
		break;
	default:
		mode = KILL_DELAY, arg = 1 + rnd(&cs->rng, 300);
		break;
	}
	deadline = t0 + (mode == KILL_ACKS ? 20000 : (int64_t)arg);
	memset(tr, 0, sizeof(*tr));
	tr->truncate = flags & KVR_STORE_TRUNCATE;
	if (pipe2(fds, O_CLOEXEC)) {
		perr(cs, "pipe2: %s", strerror(errno));
		return;
	}
	fflush(NULL);
	pid = fork();
	if (pid < 0) {
		perr(cs, "fork: %s", strerror(errno));
		close(fds[0]);
		close(fds[1]);
		return;
	}
	if (pid == 0) {
		close(fds[0]);
		child_main(cs->uri, fds[1], flags, kvt_rand(&cs->rng), (uint64_t)(trial + 1) << 32,
			   me);
	}
	close(fds[1]);
	for (;;) {
		int64_t left = deadline - now_ms();
		struct pollfd pfd = {fds[0], POLLIN, 0};
		int rc;

		if (cs->errlen || (mode == KILL_ACKS && tr->acks >= arg))
			break;
		if (left <= 0) {
			if (mode == KILL_ACKS)
				perr(cs, "trial %u: child made only %u acks in 20 s", trial,
				     tr->acks);
			break;
		}
		rc = poll(&pfd, 1, (int)left);
		if (rc < 0 && errno == EINTR)
			continue;
		if (rc <= 0)
			continue;
		ssize_t got = read(fds[0], buf + have, sizeof(buf) - have);

		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0) {
			eof = true; /* the child died by itself */
			break;
		}
		have += (size_t)got;
		parse(cs, tr, buf, &have);
	}
	kill(pid, SIGKILL);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	/* records written before the kill: ACKs among them count */
	while (!eof) {
		ssize_t got = read(fds[0], buf + have, sizeof(buf) - have);

		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0)
			break;
		have += (size_t)got;
		parse(cs, tr, buf, &have);
	}
	close(fds[0]);
	if (have)
		perr(cs, "trial %u: %zu bytes of a torn record in the pipe", trial, have);
	if (!(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL))
		perr(cs, "trial %u: child ended with status 0x%x before the kill", trial, status);
	/* versions in flight at the kill may or may not have made it */
	for (uint32_t k = 0; k < NKEYS; k++) {
		struct kstate *ks = &cs->ks[k];

		if (ks->pending_rm) {
			/*
			 * A remove frees the key's extent at once, before its log
			 * record is durable; a later put may reuse the extent. If
			 * the record did not make it, the key comes back over
			 * overwritten bytes: the checksum turns that into -EIO.
			 */
			ks->pending_rm = false;
			ks->absent_ok = true;
			ks->eio_ok = true;
		}
		if (!ks->pending)
			continue;
		ks->pending = false;
		if (ks->n == MAXV) {
			perr(cs, "key %u: too many allowed versions", k);
			continue;
		}
		ks->v[ks->n++] = ks->pend;
	}
	if (!tr->ready)
		cs->kills_before_ready++;
	if (verbose)
		printf("trial %u:%s kill %s %" PRIu64 ": %s, %u acks, killed after %" PRId64
		       " ms\n",
		       trial, tr->truncate ? " truncate," : "",
		       mode == KILL_ACKS ? "after acks" : "after ms", arg,
		       tr->ready ? "ready" : "NOT ready", tr->acks, now_ms() - t0);
	wait_file_quiet(cs);
}

struct vctx {
	int calls;
	int64_t res[VBATCH];
};

static void verify_cb(void *ctx, size_t n, const int64_t *res)
{
	struct vctx *v = ctx;

	for (size_t i = 0; i < n && i < VBATCH; i++)
		v->res[i] = res[i];
	v->calls++;
}

static const char *describe(struct crash *cs, uint32_t k, const kvr_sge *sgl, uint32_t nsge,
			    int64_t res, char *buf, size_t sz)
{
	const struct kstate *ks = &cs->ks[k];
	size_t o = 0;

	o += (size_t)snprintf(buf + o, sz - o, "allowed:%s", ks->absent_ok ? " absent" : "");
	for (uint32_t i = 0; i < ks->n && o < sz; i++)
		o += (size_t)snprintf(buf + o, sz - o, " v%" PRIx64 "/%" PRIu64 "%s", ks->v[i].ver,
				      ks->v[i].len, ks->v[i].acked ? "(acked)" : "(in flight)");
	if (res > 0) {
		for (uint32_t i = 0; i < cs->nhist[k] && o < sz; i++) {
			const struct kver *h = &cs->hist[k][i];

			if ((int64_t)h->len == res &&
			    sgl_ok(sgl, nsge, h->len, content_seed(k, h->ver))) {
				o += (size_t)snprintf(
				    buf + o, sz - o,
				    "; the bytes are those of older version v%" PRIx64, h->ver);
				return buf;
			}
		}
		if (o < sz)
			snprintf(buf + o, sz - o, "; the bytes match no version ever put");
	}
	return buf;
}

/*
 * Reopen the store in this process and check every key against what the
 * children reported. may_be_invalid: the chain began with a fresh store
 * whose creation may have been cut short.
 */
static void verify(struct crash *cs, bool may_be_invalid, bool *valid)
{
	struct kvr_store_opts so = {
	    .size = sizeof(so), .flags = KVR_STORE_NO_CREATE, .capacity = STORE_CAP};
	kvr_engine *e = kvt_engine();
	kvr_target *t = NULL;
	kvr_mr *mr;
	struct kvr_stats st = {.size = sizeof(st)};
	uint64_t objects = 0, used = 0, eio = 0;
	int rc;

	cs->verifies++;
	assert_int_equal(kvr_mem_register(e, cs->varena, VARENA, 0, &mr), 0);
	rc = kvr_store_open(e, cs->uri, &so, &t);
	if ((rc == -ENOENT || rc == -EUCLEAN) && may_be_invalid) {
		/* killed while creating it: nothing was ever acknowledged */
		for (uint32_t k = 0; k < NKEYS; k++)
			if (!cs->ks[k].absent_ok)
				perr(cs, "key %u acknowledged, but the store is gone", k);
		*valid = false;
		kvr_engine_destroy(e);
		return;
	}
	if (rc) {
		perr(cs, "reopen after crash: %d (%s) %s", rc, kvr_strerror(rc),
		     kvr_engine_errmsg(e));
		*valid = false;
		kvr_engine_destroy(e);
		return;
	}
	*valid = true;
	for (uint32_t k0 = 0; k0 < NKEYS; k0 += VBATCH) {
		uint32_t n = NKEYS - k0 < VBATCH ? NKEYS - k0 : VBATCH;
		kvr_obj objs[VBATCH];
		kvr_sge sgl[VBATCH][MAX_SGES];
		uint32_t nsge[VBATCH];
		char keys[VBATCH][64];
		struct vctx v = {0};

		for (uint32_t i = 0; i < n; i++) {
			uint8_t *cur = cs->varena + (size_t)i * VSLOT;

			objs[i].key = keys[i];
			objs[i].key_len = key_name(k0 + i, keys[i]);
			nsge[i] = make_sgl(&cs->rng, &cur, MAX_LEN + rnd(&cs->rng, VEXTRA), sgl[i]);
			for (uint32_t j = 0; j < nsge[i]; j++)
				memset(sgl[i][j].addr, 0, sgl[i][j].len);
			objs[i].sgl = sgl[i];
			objs[i].nsge = nsge[i];
		}
		assert_int_equal(kvr_get(t, objs, n, verify_cb, &v), 0);
		while (!v.calls)
			assert_true(kvr_engine_poll(e, 1000) >= 0);
		for (uint32_t i = 0; i < n; i++) {
			uint32_t k = k0 + i;
			struct kstate *ks = &cs->ks[k];
			int64_t res = v.res[i];
			char why[1024];
			bool found = false;

			if ((res == -ENOENT && ks->absent_ok) || (res == -EIO && ks->eio_ok)) {
				*ks = (struct kstate){.absent_ok = true};
				if (res == -EIO) {
					cs->seen_eio++;
					eio++;
				} else {
					cs->seen_absent++;
				}
				continue;
			}
			for (uint32_t a = 0; a < ks->n && res > 0 && !found; a++) {
				if ((int64_t)ks->v[a].len != res ||
				    !sgl_ok(sgl[i], nsge[i], ks->v[a].len,
					    content_seed(k, ks->v[a].ver)))
					continue;
				found = true;
				if (ks->v[a].acked)
					cs->seen_acked++;
				else
					cs->seen_inflight++;
				cs->checked_bytes += (uint64_t)res;
				objects++;
				used += (ks->v[a].len + PAGE - 1) / PAGE * PAGE;
				/* reopening made it durable: the key's one value now */
				ks->v[0] = ks->v[a];
				ks->v[0].acked = true;
				ks->n = 1;
				ks->absent_ok = false;
			}
			if (!found) {
				perr(cs, "key %u: get returned %" PRId64 " (%s); %s", k, res,
				     res < 0 ? kvr_strerror((int)res) : "bytes",
				     describe(cs, k, sgl[i], nsge[i], res, why, sizeof(why)));
				ks->n = 0; /* whatever it is, do not report it again */
				ks->absent_ok = true;
			}
		}
	}
	assert_int_equal(kvr_target_stats(t, &st), 0);
	if (!cs->errlen && (st.objects != objects || st.used_bytes != used))
		perr(cs,
		     "store counts %" PRIu64 " objects, %" PRIu64 " bytes used; expected %" PRIu64
		     ", %" PRIu64,
		     st.objects, st.used_bytes, objects, used);
	if (st.evictions || st.checksum_errors != eio)
		perr(cs,
		     "reopened store: %" PRIu64 " evictions, %" PRIu64 " checksum errors (%" PRIu64
		     " expected)",
		     st.evictions, st.checksum_errors, eio);
	if (verbose)
		printf("verify: %" PRIu64 " objects, %" PRIu64
		       " bytes used; %u waits for the file\n",
		       st.objects, st.used_bytes, cs->quiet_waits);
	kvr_engine_destroy(e); /* closes the store cleanly */
}

/* The store's path, removed by the teardown even when the test fails. */
static char store_path[4096];

static int remove_store(void **state)
{
	if (store_path[0])
		kvt_unlink(store_path);
	return 0;
}

static void crash_free(struct crash *cs)
{
	kvt_free_mem(cs->varena, VARENA);
	for (uint32_t k = 0; k < NKEYS; k++)
		free(cs->hist[k]);
	free(cs);
}

static void test_crash_recovery(void **state)
{
	struct crash *cs = calloc(1, sizeof(*cs));
	struct timespec ts;
	uint32_t ntrials = (uint32_t)kvt_env_u64("KVT_CRASH_TRIALS", TRIALS_DEFAULT);
	uint32_t chain = 0, chain_len = 1;
	bool valid = false, chain_fresh = false, chain_ready = false;
	int64_t t0 = now_ms();
	uint64_t acks;

	assert_non_null(cs);
	clock_gettime(CLOCK_REALTIME, &ts);
	cs->seed = kvt_env_u64("KVT_SEED", ((uint64_t)ts.tv_sec << 20) ^ (uint64_t)ts.tv_nsec ^
					       ((uint64_t)getpid() << 40));
	cs->rng = cs->seed;
	verbose = kvt_env_u64("KVT_VERBOSE", 0) != 0;
	snprintf(cs->path, sizeof(cs->path), "%s", kvt_path("crash_recovery.store"));
	snprintf(store_path, sizeof(store_path), "%s", cs->path);
	snprintf(cs->uri, sizeof(cs->uri), "file:%s", cs->path);
	kvt_unlink(cs->path);
	cs->varena = kvt_alloc_mem(VARENA);
	for (uint32_t k = 0; k < NKEYS; k++)
		cs->ks[k].absent_ok = true;

	for (uint32_t trial = 0; trial < ntrials && !cs->errlen; trial++) {
		uint32_t flags = 0;
		struct trial tr;

		if (chain == 0) {
			chain_len = 1 + (uint32_t)rnd(&cs->rng, MAX_CHAIN);
			chain_fresh = !valid || rnd(&cs->rng, 4) == 0;
			chain_ready = false;
			if (chain_fresh) {
				/* a new file, or KVR_STORE_TRUNCATE over the old one
				 * (which survives if the child dies before formatting) */
				bool unlinked = !valid || rnd(&cs->rng, 2);

				if (unlinked)
					kvt_unlink(cs->path);
				else
					flags = KVR_STORE_TRUNCATE;
				for (uint32_t k = 0; k < NKEYS; k++) {
					if (unlinked)
						cs->ks[k] = (struct kstate){.absent_ok = true};
					cs->ks[k].absent_ok = true;
				}
				cs->fresh++;
			} else {
				cs->reopened_clean++;
			}
		} else {
			cs->reopened_crashed++;
		}
		run_child(cs, trial, flags, &tr);
		cs->trials++;
		chain_ready |= tr.ready;
		chain++;
		/* a fresh store whose creation was cut short cannot be reopened:
		 * verify (and start over) at once */
		if (chain >= chain_len || trial + 1 == ntrials || (chain_fresh && !chain_ready)) {
			if (!cs->errlen)
				verify(cs, chain_fresh && !chain_ready, &valid);
			chain = 0;
		}
	}
	if (cs->errlen) {
		/* free everything first: a failure should not also report leaks */
		char msg[sizeof(cs->err)];
		uint64_t seed = cs->seed;

		memcpy(msg, cs->err, sizeof(msg));
		crash_free(cs);
		fail_msg("crash_recovery (seed %" PRIu64 "): %s", seed, msg);
	}
	printf("crash_recovery: %u trials (%u on a fresh store, %u reopening a cleanly closed one, "
	       "%u reopening a crashed one; %u killed before the store was open), %" PRIu64
	       " puts started, %" PRIu64 " acknowledged, %" PRIu64
	       " removes acknowledged; %u verifications: %" PRIu64
	       " keys held their acknowledged version, %" PRIu64 " an in-flight version, %" PRIu64
	       " were absent as allowed, %" PRIu64
	       " -EIO after an interrupted remove (%.1f MiB compared); seed %" PRIu64 ", %.1f s\n",
	       cs->trials, cs->fresh, cs->reopened_clean, cs->reopened_crashed,
	       cs->kills_before_ready, cs->starts, cs->acks, cs->removes, cs->verifies,
	       cs->seen_acked, cs->seen_inflight, cs->seen_absent, cs->seen_eio,
	       (double)cs->checked_bytes / (1 << 20), cs->seed, (double)(now_ms() - t0) / 1e3);
	acks = cs->acks;
	crash_free(cs);
	assert_true(acks > 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_teardown(test_crash_recovery, remove_store),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
