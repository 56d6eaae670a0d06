/* SPDX-License-Identifier: MIT */
/*
 * Two crashes around compactions of the file store: a log generation a cut
 * short compaction used must never be used again, or the blocks it left
 * get replayed as new.
 *
 * Each crash is a forked child that _exits without closing the store: what
 * kill -9 leaves, every write it made in the file and nothing more.
 *   1. The parent puts NPAIR objects with long keys and NPAIR with short
 *      ones, alternately, and closes the store: its snapshot holds them in
 *      that order, where the records pack into whole blocks.
 *   2. Child 1 reopens it, gets every short-keyed object (moving it to the
 *      head of the LRU list) and closes. The close's snapshot, in LRU order
 *      (long keys, then short), packs worse: more blocks. The child dies
 *      once that snapshot is durable, before the superblock switches to it.
 *   3. Child 2 reopens. Replay restores the put order, so the compaction at
 *      open writes a shorter snapshot into the same half; then the child
 *      replaces one object and removes another (one log block each) and
 *      dies.
 *   4. The parent reopens and reads every object back, byte for byte:
 *      the removed one must stay removed and the replaced one must be at its
 *      new version; and again after a clean close.
 * Had child 2's compaction taken the generation child 1's did, the blocks of
 * child 1's snapshot past child 2's two blocks would be replayed after them,
 * bringing back both objects as they were.
 */
#include "fixtures.h"
#include "transport/filestore.h"

#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define NPAIR	  300
#define NOBJ	  (2 * NPAIR)
#define LONG_K	  480 /* a 512-byte record */
#define SHORT_K	  128 /* a 160-byte record: six of each fill a block but 24 bytes */
#define CAP	  (64ull << 20)
#define MAXLEN	  9000
#define ARENA	  (1u << 20)
#define REPLACED  (NOBJ - 3) /* short-keyed: in the last blocks of child 1's snapshot */
#define REMOVED	  (NOBJ - 1)
#define HOOK_EXIT 42

/* What the children tell the parent (a shared mapping). */
struct report {
	int line;	     /* first failed check in a child, 0 if none */
	uint64_t resnap_blk; /* blocks of child 2's snapshot */
};

static struct report *rep;
static char path[512], uri[600];

/* Object i: a long key for even i, a short one for odd; version v's bytes
 * and length are a function of (i, v). */
static size_t key_of(uint32_t i, char *buf)
{
	size_t len = i % 2 ? SHORT_K : LONG_K;
	int p = snprintf(buf, KVR_MAX_KEY + 1, "gen/%u/", i);

	memset(buf + p, 'a' + (int)(i % 26), len - (size_t)p);
	buf[len] = '\0';
	return len;
}

static uint64_t len_of(uint32_t i, uint32_t v)
{
	return 1 + ((uint64_t)i * 37 + v * 1013) % MAXLEN;
}

static uint64_t seed_of(uint32_t i, uint32_t v)
{
	return ((uint64_t)i + 1) * 0x9e3779b97f4a7c15ull + v;
}

static int64_t op(kvr_engine *e, kvr_target *t, enum kvr_op o, uint32_t i, void *buf, size_t len)
{
	char key[KVR_MAX_KEY + 1];
	kvr_sge sge = {buf, len};
	kvr_obj obj = {key, key_of(i, key), &sge, 1};
	struct kvt_done d = {0};
	int rc = kvr_submit(t, o, &obj, 1, 0, kvt_batch_cb, &d);

	if (rc)
		return rc;
	for (int n = 0; n < 1000 && !d.calls; n++)
		if (kvr_engine_poll(e, 10) < 0)
			return -EIO;
	return d.calls ? d.results[0] : -ETIMEDOUT;
}

static int open_store(kvr_engine *e, kvr_target **t, uint32_t flags)
{
	struct kvr_store_opts so = {.size = sizeof(so), .flags = flags, .capacity = CAP};

	return kvr_store_open(e, uri, &so, t);
}

/* An engine that knows buf (SGEs lie in registered memory); NULL if none. */
static kvr_engine *engine(uint8_t *buf)
{
	kvr_engine *e = NULL;
	kvr_mr *mr;

	if (kvr_engine_create(NULL, &e))
		return NULL;
	if (kvr_mem_register(e, buf, ARENA, 0, &mr)) {
		kvr_engine_destroy(e);
		return NULL;
	}
	return e;
}

/* ------------------------------------------------------------- children */

/* A child's check: the first that fails ends the child, its line told. */
static void check(bool ok, int line)
{
	if (ok)
		return;
	rep->line = line;
	_exit(1);
}

static void die_before_switch(struct filestore *fs)
{
	(void)fs;
	_exit(HOOK_EXIT);
}

static void child_reorder(uint8_t *buf)
{
	kvr_engine *e;
	kvr_target *t;

	check((e = engine(buf)) != NULL, __LINE__);
	check(open_store(e, &t, KVR_STORE_NO_CREATE) == 0, __LINE__);
	for (uint32_t i = 1; i < NOBJ; i += 2)
		check(op(e, t, KVR_OP_GET, i, buf, MAXLEN) == (int64_t)len_of(i, 0), __LINE__);
	((struct filestore *)t)->pre_switch = die_before_switch;
	kvr_target_close(t);
	check(false, __LINE__); /* the close's compaction never reached its switch */
}

static void child_change(uint8_t *buf)
{
	struct filestore *fs;
	kvr_engine *e;
	kvr_target *t;

	check((e = engine(buf)) != NULL, __LINE__);
	check(open_store(e, &t, KVR_STORE_NO_CREATE) == 0, __LINE__);
	fs = (struct filestore *)t;
	rep->resnap_blk = fs->log.wseq - fs->log.half_base;
	kvt_fill(buf, len_of(REPLACED, 1), seed_of(REPLACED, 1));
	check(op(e, t, KVR_OP_PUT, REPLACED, buf, len_of(REPLACED, 1)) ==
		  (int64_t)len_of(REPLACED, 1),
	      __LINE__);
	check(op(e, t, KVR_OP_REMOVE, REMOVED, NULL, 0) == 0, __LINE__);
	_exit(0); /* a crash: no close, so no compaction */
}

/* Run fn in a child; returns its exit status (-1 if it did not exit). */
static int in_child(void (*fn)(uint8_t *), uint8_t *buf)
{
	int status = 0;
	pid_t pid;

	fflush(NULL);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		fn(buf);
		_exit(0);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* --------------------------------------------------------------- parent */

/* Blocks at the start of the half the superblock does not name that carry
 * one generation, their first one's: a snapshot written there. */
static uint64_t inactive_snapshot_blocks(void)
{
	uint8_t super[FS_SUPER_SIZE];
	struct fs_super sb, c;
	struct fs_logblk h;
	uint64_t base, gen = 0, n = 0;
	int fd = open(path, O_RDONLY);

	assert_true(fd >= 0);
	assert_int_equal(pread(fd, super, sizeof(super), 0), sizeof(super));
	memcpy(&sb, super, sizeof(sb));
	memcpy(&c, super + FS_BLOCK, sizeof(c));
	if (c.magic == FS_MAGIC && (sb.magic != FS_MAGIC || c.gen > sb.gen))
		sb = c; /* both copies were written by the store: no crc check needed */
	base = sb.log_off + (1 - sb.active) * sb.log_half;
	for (;; n++) {
		assert_int_equal(pread(fd, &h, sizeof(h), (off_t)(base + n * FS_BLOCK)), sizeof(h));
		if (!n)
			gen = h.log_gen;
		if (h.magic != FS_LOG_MAGIC || h.uuid != sb.uuid || h.log_gen != gen || h.pos != n)
			break;
	}
	close(fd);
	return n;
}

/* Every object at its latest version, byte for byte, and the removed one
 * absent; says what each wrong one holds. */
static void verify(kvr_engine *e, kvr_target *t, uint8_t *buf)
{
	int wrong = 0;

	for (uint32_t i = 0; i < NOBJ; i++) {
		uint32_t v = i == REPLACED;
		int64_t got = op(e, t, KVR_OP_GET, i, buf, MAXLEN);
		bool old = i == REPLACED || i == REMOVED;

		if (i == REMOVED ? got == -ENOENT
				 : got == (int64_t)len_of(i, v) &&
				       kvt_check(buf, len_of(i, v), seed_of(i, v)))
			continue;
		wrong++;
		if (old && got == (int64_t)len_of(i, 0) &&
		    kvt_check(buf, len_of(i, 0), seed_of(i, 0)))
			print_error("object %u: back at its first version (%s)\n", i,
				    i == REMOVED ? "removed" : "replaced");
		else
			print_error("object %u: get gave %lld\n", i, (long long)got);
	}
	assert_int_equal(wrong, 0);
}

static void test_generation_never_reused(void **state)
{
	uint8_t *buf = kvt_alloc_mem(ARENA);
	uint64_t first_blk;
	kvr_engine *e = engine(buf);
	kvr_target *t;

	(void)state;
	assert_non_null(e);
	rep = mmap(NULL, sizeof(*rep), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	assert_true(rep != MAP_FAILED);
	snprintf(path, sizeof(path), "%s", kvt_path("compaction_crash"));
	snprintf(uri, sizeof(uri), "file:%s", path);
	unlink(path);
	/* 1: long and short keys in turn, one put a round (the index keeps
	 * the order of the puts) */
	assert_int_equal(open_store(e, &t, 0), 0);
	for (uint32_t i = 0; i < NOBJ; i++) {
		kvt_fill(buf, len_of(i, 0), seed_of(i, 0));
		assert_int_equal(op(e, t, KVR_OP_PUT, i, buf, len_of(i, 0)), (int64_t)len_of(i, 0));
	}
	assert_int_equal(kvr_target_close(t), 0);
	kvr_engine_destroy(e);
	/* 2 */
	assert_int_equal(in_child(child_reorder, buf), HOOK_EXIT);
	assert_int_equal(rep->line, 0);
	first_blk = inactive_snapshot_blocks();
	/* 3 */
	assert_int_equal(in_child(child_change, buf), 0);
	assert_int_equal(rep->line, 0);
	/* The scenario holds: child 1's snapshot reaches past child 2's and its
	 * two blocks. */
	print_message("snapshot blocks: %llu cut short, %llu after it\n",
		      (unsigned long long)first_blk, (unsigned long long)rep->resnap_blk);
	assert_true(first_blk > rep->resnap_blk + 2);
	/* 4 */
	e = engine(buf);
	assert_non_null(e);
	assert_int_equal(open_store(e, &t, KVR_STORE_NO_CREATE), 0);
	verify(e, t, buf);
	assert_int_equal(kvr_target_close(t), 0);
	assert_int_equal(open_store(e, &t, KVR_STORE_NO_CREATE), 0);
	verify(e, t, buf);
	assert_int_equal(kvr_target_close(t), 0);
	kvr_engine_destroy(e);
	kvt_free_mem(buf, ARENA);
	munmap(rep, sizeof(*rep));
	unlink(path);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_generation_never_reused),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
