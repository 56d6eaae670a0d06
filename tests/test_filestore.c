/* SPDX-License-Identifier: MIT */
/*
 * transport/filestore.c + filelog.c: direct and fallback paths, replace,
 * remove, reopen, checksum failure, log compaction, open errors, a format
 * interrupted by signals.
 */
#include "fixtures.h"
#include "engine/engine.h"
#include "transport/filestore.h"

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/time.h>
#include <unistd.h>

#define ARENA (32u << 20)

struct fx {
	kvr_engine *e;
	kvr_target *t;
	uint8_t *buf;
	kvr_mr *mr;
	char path[512];
	char uri[600];
};

static int open_store(struct fx *f, uint32_t flags, uint64_t cap)
{
	struct kvr_store_opts so = {.size = sizeof(so), .flags = flags, .capacity = cap};

	return kvr_store_open(f->e, f->uri, &so, &f->t);
}

static void setup(struct fx *f, const char *name, uint32_t flags, uint64_t cap)
{
	f->e = kvt_engine();
	f->buf = kvt_alloc_mem(ARENA);
	assert_int_equal(kvr_mem_register(f->e, f->buf, ARENA, 0, &f->mr), 0);
	snprintf(f->path, sizeof(f->path), "%s", kvt_path(name));
	snprintf(f->uri, sizeof(f->uri), "file:%s", f->path);
	unlink(f->path);
	assert_int_equal(open_store(f, flags, cap), 0);
}

static void teardown(struct fx *f)
{
	kvr_engine_destroy(f->e);
	kvt_free_mem(f->buf, ARENA);
	unlink(f->path);
}

static void reopen(struct fx *f, uint32_t flags)
{
	assert_int_equal(kvr_target_close(f->t), 0);
	assert_int_equal(open_store(f, flags, 0), 0);
}

static int64_t opv(struct fx *f, enum kvr_op op, const char *key, kvr_sge *sgl, uint32_t n)
{
	kvr_obj o = {key, strlen(key), sgl, n};
	struct kvt_done d = {0};

	assert_int_equal(kvr_submit(f->t, op, &o, 1, 0, kvt_batch_cb, &d), 0);
	assert_int_equal(kvt_wait(f->e, &d, 10000), 1);
	return d.results[0];
}

static int64_t op1(struct fx *f, enum kvr_op op, const char *key, void *addr, size_t len)
{
	kvr_sge sge = {addr, len};

	return opv(f, op, key, &sge, 1);
}

static void test_aligned_is_direct(void **state)
{
	struct fx f;
	struct kvr_stats st = {.size = sizeof(st)};

	setup(&f, "fs_direct", 0, 64 << 20);
	kvt_fill(f.buf, 1 << 20, 1);
	assert_int_equal(op1(&f, KVR_OP_PUT, "a", f.buf, 1 << 20), 1 << 20);
	memset(f.buf + (4 << 20), 0, 1 << 20);
	assert_int_equal(op1(&f, KVR_OP_GET, "a", f.buf + (4 << 20), 1 << 20), 1 << 20);
	assert_true(kvt_check(f.buf + (4 << 20), 1 << 20, 1));
	kvr_target_stats(f.t, &st);
	assert_int_equal(st.bounce_bytes, 0);
	assert_int_equal(st.plain_ios, 0);
	assert_int_equal(st.fixed_ios, 2);
	kvr_engine_stats(f.e, &st); /* the engine sums its targets' path counters */
	assert_int_equal(st.fixed_ios, 2);
	teardown(&f);
}

static void test_unaligned_fallback(void **state)
{
	struct fx f;
	struct kvr_stats st = {.size = sizeof(st)};
	/* odd lengths and addresses: head and tail bytes take the fallback;
	 * in[1]'s middle block lines up with the file and goes direct */
	kvr_sge in[4] = {{NULL, 5000}, {NULL, 8192}, {NULL, 3}, {NULL, 10000}};
	kvr_sge out[2];

	setup(&f, "fs_unaligned", 0, 64 << 20);
	in[0].addr = f.buf + 1;
	in[1].addr = f.buf + 12288 + 904; /* lines up with payload offset 5000 */
	in[2].addr = f.buf + 30001;
	in[3].addr = f.buf + 65536 + 100;
	kvt_fill(f.buf, 1 << 20, 2);
	assert_int_equal(opv(&f, KVR_OP_PUT, "u", in, 4), 5000 + 8192 + 3 + 10000);
	uint8_t *o = f.buf + (8 << 20);

	out[0] = (kvr_sge){o + 7, 6000};
	out[1] = (kvr_sge){o + 16384, 20000};
	memset(o, 0, 65536);
	assert_int_equal(opv(&f, KVR_OP_GET, "u", out, 2), 23195);
	uint8_t expect[23195], got[23195];
	size_t p = 0;

	for (int i = 0; i < 4; i++) {
		memcpy(expect + p, in[i].addr, in[i].len);
		p += in[i].len;
	}
	memcpy(got, o + 7, 6000);
	memcpy(got + 6000, o + 16384, 23195 - 6000);
	assert_memory_equal(got, expect, sizeof(expect));
	assert_int_equal(o[16384 + 23195 - 6000], 0);
	kvr_target_stats(f.t, &st);
	assert_true(st.bounce_bytes > 0);
	assert_true(st.fixed_ios > 0); /* the aligned middle still goes direct */
	/* and it survives a reopen */
	reopen(&f, 0);
	memset(o, 0, 65536);
	assert_int_equal(opv(&f, KVR_OP_GET, "u", out, 2), 23195);
	memcpy(got, o + 7, 6000);
	memcpy(got + 6000, o + 16384, 23195 - 6000);
	assert_memory_equal(got, expect, sizeof(expect));
	teardown(&f);
}

static void test_ops_and_reopen(void **state)
{
	struct fx f;
	char key[32];

	setup(&f, "fs_reopen", 0, 64 << 20);
	for (int i = 0; i < 50; i++) {
		snprintf(key, sizeof(key), "key-%d", i);
		kvt_fill(f.buf + i * 65536, 65536, 100 + i);
		assert_int_equal(op1(&f, KVR_OP_PUT, key, f.buf + i * 65536, 1000 + i * 1000),
				 1000 + i * 1000);
	}
	/* replace one, remove one */
	kvt_fill(f.buf + (16 << 20), 4096, 999);
	assert_int_equal(op1(&f, KVR_OP_PUT, "key-7", f.buf + (16 << 20), 4096), 4096);
	assert_int_equal(op1(&f, KVR_OP_REMOVE, "key-8", NULL, 0), 0);
	assert_int_equal(op1(&f, KVR_OP_REMOVE, "key-8", NULL, 0), -ENOENT);
	for (int round = 0; round < 2; round++) {
		uint8_t *dst = f.buf + (20 << 20);

		for (int i = 0; i < 50; i++) {
			snprintf(key, sizeof(key), "key-%d", i);
			int64_t r = op1(&f, KVR_OP_GET, key, dst, 65536);

			if (i == 8) {
				assert_int_equal(r, -ENOENT);
			} else if (i == 7) {
				assert_int_equal(r, 4096);
				assert_true(kvt_check(dst, 4096, 999));
			} else {
				assert_int_equal(r, 1000 + i * 1000);
				assert_memory_equal(dst, f.buf + i * 65536, (size_t)r);
			}
		}
		assert_int_equal(op1(&f, KVR_OP_EXISTS, "key-3", NULL, 0), 4000);
		reopen(&f, KVR_STORE_NO_CREATE);
	}
	struct kvr_stats st = {.size = sizeof(st)};

	kvr_target_stats(f.t, &st);
	assert_int_equal(st.objects, 49);
	teardown(&f);
}

static void test_checksum_failure(void **state)
{
	struct fx f;

	setup(&f, "fs_crc", 0, 64 << 20);
	kvt_fill(f.buf, 8192, 5);
	assert_int_equal(op1(&f, KVR_OP_PUT, "c", f.buf, 8192), 8192);
	struct filestore *fs = (struct filestore *)f.t;
	struct kvr_entry *en = kvr_index_find(&fs->s.ix, "c", 1, kvr_key_hash("c", 1));

	assert_non_null(en);
	/* flip a byte of the payload on disk behind the store's back */
	int fd = open(f.path, O_RDWR);
	uint8_t b;

	assert_true(fd >= 0);
	assert_int_equal(pread(fd, &b, 1, (off_t)(fs->sb.data_off + en->off + 4000)), 1);
	b ^= 1;
	assert_int_equal(pwrite(fd, &b, 1, (off_t)(fs->sb.data_off + en->off + 4000)), 1);
	fsync(fd);
	close(fd);
	assert_int_equal(op1(&f, KVR_OP_GET, "c", f.buf + 65536, 8192), -EIO);
	assert_int_equal(op1(&f, KVR_OP_GET, "c", f.buf + 65536, 8192), -ENOENT);
	struct kvr_stats st = {.size = sizeof(st)};

	kvr_target_stats(f.t, &st);
	assert_int_equal(st.checksum_errors, 1);
	teardown(&f);
}

static void test_eviction_and_no_evict(void **state)
{
	struct fx f;
	char key[16];

	setup(&f, "fs_evict", 0, 1 << 20); /* 1 MiB of data */
	for (int i = 0; i < 20; i++) {
		snprintf(key, sizeof(key), "e%d", i);
		assert_int_equal(op1(&f, KVR_OP_PUT, key, f.buf, 128 << 10), 128 << 10);
	}
	struct kvr_stats st = {.size = sizeof(st)};

	kvr_target_stats(f.t, &st);
	assert_int_equal(st.objects, 8);
	assert_int_equal(st.evictions, 12);
	assert_int_equal(op1(&f, KVR_OP_EXISTS, "e0", NULL, 0), -ENOENT);
	assert_int_equal(op1(&f, KVR_OP_EXISTS, "e19", NULL, 0), 128 << 10);
	assert_int_equal(op1(&f, KVR_OP_PUT, "big", f.buf, (1 << 20) + 1), -ENOSPC);
	assert_int_equal(kvr_target_close(f.t), 0);
	assert_int_equal(open_store(&f, KVR_STORE_NO_EVICT, 0), 0);
	assert_int_equal(op1(&f, KVR_OP_PUT, "more", f.buf, 4096), -ENOSPC);
	assert_int_equal(op1(&f, KVR_OP_EXISTS, "e19", NULL, 0), 128 << 10);
	teardown(&f);
}

static void test_log_compaction(void **state)
{
	struct fx f;
	char key[64];

	/* The smallest log half is 8 MiB = 2048 blocks: one-object rounds
	 * write a block each, so 5000 rounds wrap it twice. */
	setup(&f, "fs_compact", 0, 16 << 20);
	for (int i = 0; i < 5000; i++) {
		snprintf(key, sizeof(key), "compaction-key-%d", i % 300);
		*(int *)f.buf = i;
		assert_int_equal(op1(&f, KVR_OP_PUT, key, f.buf, 100), 100);
	}
	struct filestore *fs = (struct filestore *)f.t;

	assert_true(fs->sb.log_gen >= 3);
	reopen(&f, 0);
	for (int i = 4700; i < 5000; i++) {
		snprintf(key, sizeof(key), "compaction-key-%d", i % 300);
		assert_int_equal(op1(&f, KVR_OP_GET, key, f.buf + 4096, 4096), 100);
		assert_int_equal(*(int *)(f.buf + 4096), i);
	}
	teardown(&f);
}

/* Gets racing replacing puts of the same key see one whole version, never
 * a mix: a put writes a fresh extent and is published only once durable. */
static void test_replace_is_atomic(void **state)
{
	struct fx f;
	const size_t sz = 256 << 10;
	static struct kvt_done dp[64], dg[64]; /* large: keep off the stack */
	int mixed = 0, old = 0, newer = 0;

	setup(&f, "fs_atomic", 0, 64 << 20);
	kvt_fill(f.buf, sz, 1000);
	assert_int_equal(op1(&f, KVR_OP_PUT, "hot", f.buf, sz), (int64_t)sz);
	for (int i = 1; i < 64; i++) {
		uint8_t *src = f.buf + (size_t)(i % 8) * sz;
		uint8_t *dst = f.buf + (8 << 20) + (size_t)i * sz;
		kvr_sge ps = {src, sz}, gs = {dst, sz};
		kvr_obj po = {"hot", 3, &ps, 1}, go = {"hot", 3, &gs, 1};

		kvt_fill(src, sz, 1000 + (uint64_t)i);
		memset(&dp[i], 0, sizeof(dp[i]));
		memset(&dg[i], 0, sizeof(dg[i]));
		assert_int_equal(kvr_put(f.t, &po, 1, kvt_batch_cb, &dp[i]), 0);
		assert_int_equal(kvr_get(f.t, &go, 1, kvt_batch_cb, &dg[i]), 0);
		assert_int_equal(kvt_wait(f.e, &dp[i], 10000), 1);
		assert_int_equal(kvt_wait(f.e, &dg[i], 10000), 1);
		assert_int_equal(dg[i].results[0], (int64_t)sz);
		if (kvt_check(dst, sz, 1000 + (uint64_t)i))
			newer++;
		else if (kvt_check(dst, sz, 999 + (uint64_t)i))
			old++;
		else
			mixed++;
	}
	print_message("replace race: %d old, %d new, %d mixed\n", old, newer, mixed);
	assert_int_equal(mixed, 0);
	assert_int_equal(old + newer, 63);
	teardown(&f);
}

static void test_open_errors(void **state)
{
	struct fx f;
	kvr_target *t;

	f.e = kvt_engine();
	snprintf(f.path, sizeof(f.path), "%s", kvt_path("fs_err"));
	snprintf(f.uri, sizeof(f.uri), "file:%s", f.path);
	unlink(f.path);
	assert_int_equal(open_store(&f, KVR_STORE_NO_CREATE, 0), -ENOENT);
	/* a file with foreign content is never formatted without TRUNCATE */
	int fd = open(f.path, O_CREAT | O_WRONLY, 0644);

	assert_int_equal(write(fd, "hello, not a store", 18), 18);
	close(fd);
	assert_int_equal(open_store(&f, 0, 0), -EUCLEAN);
	assert_non_null(strstr(kvr_engine_errmsg(f.e), "no kvring store"));
	assert_int_equal(open_store(&f, KVR_STORE_TRUNCATE, 16 << 20), 0);
	/* one process, one opener: a second open of the same store waits, then
	 * says it is busy */
	kvr_target *first = f.t;

	assert_int_equal(open_store(&f, 0, 0), -EBUSY);
	assert_int_equal(kvr_target_close(first), 0);
	/* an empty file is formatted, unless NO_CREATE */
	assert_int_equal(truncate(f.path, 0), 0);
	assert_int_equal(open_store(&f, KVR_STORE_NO_CREATE, 0), -EUCLEAN);
	assert_int_equal(open_store(&f, 0, 16 << 20), 0);
	assert_int_equal(kvr_target_close(f.t), 0);
	/* a format interrupted before its superblock (zeros) is formatted again */
	assert_int_equal(truncate(f.path, 0), 0);
	assert_int_equal(truncate(f.path, 1 << 20), 0);
	assert_int_equal(open_store(&f, 0, 16 << 20), 0);
	assert_int_equal(kvr_target_close(f.t), 0);
	/* a directory */
	assert_int_equal(kvr_store_open(f.e, "file:/", NULL, &t) < 0, 1);
	/* bad flags */
	struct kvr_store_opts so = {.size = sizeof(so), .flags = 1u << 30};

	assert_int_equal(kvr_store_open(f.e, f.uri, &so, &t), -EINVAL);
	so.size = 3;
	so.flags = 0;
	assert_int_equal(kvr_store_open(f.e, f.uri, &so, &t), -EINVAL);
	kvr_engine_destroy(f.e);
	unlink(f.path);
}

/* Memory io_uring cannot pin (a MAP_SHARED file mapping) takes the plain
 * path and still moves the bytes. */
static void test_file_backed_memory(void **state)
{
	struct fx f;
	char mpath[600];
	kvr_mr *mr;

	setup(&f, "fs_mmap", 0, 16 << 20);
	snprintf(mpath, sizeof(mpath), "%s.map", f.path);
	int fd = open(mpath, O_CREAT | O_RDWR | O_TRUNC, 0644);

	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, 1 << 20), 0);
	uint8_t *m = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);

	assert_true(m != MAP_FAILED);
	assert_int_equal(kvr_mem_register(f.e, m, 1 << 20, 0, &mr), 0);
	kvt_fill(m, 65536, 77);
	assert_int_equal(op1(&f, KVR_OP_PUT, "m", m, 65536), 65536);
	memset(m + 65536, 0, 65536);
	assert_int_equal(op1(&f, KVR_OP_GET, "m", m + 65536, 65536), 65536);
	assert_true(kvt_check(m + 65536, 65536, 77));
	assert_int_equal(kvr_mem_deregister(f.e, mr), 0);
	munmap(m, 1 << 20);
	close(fd);
	unlink(mpath);
	teardown(&f);
}

/* ------------------------------------------------- crafted files, sizing */

/* The newer valid superblock copy of a closed store. */
static void read_super(const char *path, struct fs_super *out)
{
	uint8_t b[FS_BLOCK];
	bool found = false;
	int fd = open(path, O_RDONLY);

	assert_true(fd >= 0);
	for (int i = 0; i < 2; i++) {
		struct fs_super sb;
		uint32_t crc;

		assert_int_equal(pread(fd, b, FS_BLOCK, (off_t)i * FS_BLOCK), FS_BLOCK);
		memcpy(&sb, b, sizeof(sb));
		crc = sb.crc;
		memset(b + offsetof(struct fs_super, crc), 0, sizeof(crc));
		if (sb.magic != FS_MAGIC || kvr_crc32c(0, b, FS_BLOCK) != crc)
			continue;
		if (!found || sb.gen > out->gen)
			*out = sb;
		found = true;
	}
	close(fd);
	assert_true(found);
}

struct crafted {
	const char *key;
	uint64_t off, len, seq;
};

/* Append one log block holding recs after the last valid block of the
 * active half: a block the store itself could have written (right magic,
 * uuid, generation, position and crc32c), with whatever offsets, lengths
 * and sequence numbers the records claim. */
static void append_block(const char *path, const struct crafted *recs, int n)
{
	struct fs_super sb = {0};
	uint8_t b[FS_BLOCK];
	struct fs_logblk h;
	uint64_t base, pos = 0;
	int fd;

	read_super(path, &sb);
	base = sb.log_off + sb.active * sb.log_half;
	fd = open(path, O_RDWR);
	assert_true(fd >= 0);
	for (;; pos++) {
		assert_int_equal(pread(fd, &h, sizeof(h), (off_t)(base + pos * FS_BLOCK)),
				 sizeof(h));
		if (h.magic != FS_LOG_MAGIC || h.uuid != sb.uuid || h.log_gen != sb.log_gen ||
		    h.pos != pos)
			break;
	}
	memset(b, 0, sizeof(b));
	h = (struct fs_logblk){
	    .magic = FS_LOG_MAGIC, .uuid = sb.uuid, .log_gen = sb.log_gen, .pos = pos};
	for (int i = 0; i < n; i++) {
		size_t kl = strlen(recs[i].key);
		struct fs_rec rec = {.type = FS_REC_PUT,
				     .key_len = (uint16_t)kl,
				     .crc = 0x12345678,
				     .off = recs[i].off,
				     .len = recs[i].len,
				     .seq = recs[i].seq};

		assert_true(h.used + FS_REC_SIZE(kl) <= FS_BLK_ROOM);
		memcpy(b + sizeof(h) + h.used, &rec, sizeof(rec));
		memcpy(b + sizeof(h) + h.used + sizeof(rec), recs[i].key, kl);
		h.used += (uint16_t)FS_REC_SIZE(kl);
		h.nrec++;
	}
	memcpy(b, &h, sizeof(h));
	h.crc = kvr_crc32c(0, b, FS_BLOCK); /* computed with the crc field zero */
	memcpy(b, &h, sizeof(h));
	assert_int_equal(pwrite(fd, b, FS_BLOCK, (off_t)(base + pos * FS_BLOCK)), FS_BLOCK);
	assert_int_equal(fsync(fd), 0);
	close(fd);
}

/* Every indexed object lies inside the data area, in space of its own. */
static void assert_index_sane(struct fx *f)
{
	struct filestore *fs = (struct filestore *)f->t;

	for (struct kvr_entry *en = fs->s.ix.lru_head; en; en = en->lru_next) {
		assert_true(en->len > 0 && en->len <= en->alloc_len);
		assert_true(en->off <= fs->sb.capacity);
		assert_true(en->alloc_len <= fs->sb.capacity - en->off);
	}
	assert_true(fs->s.seq < UINT64_MAX / 2);
}

/* A log block with a valid crc but impossible records: an extent whose end
 * wraps past 2^64 (by length or by offset) and a sequence number at the top
 * of its range are corruption, dropped at replay like any other bad record;
 * the open succeeds and the rest of the store is intact. */
static void test_crafted_log_records(void **state)
{
	struct fx f;
	uint64_t cap;

	setup(&f, "fs_crafted", 0, 16 << 20);
	cap = ((struct filestore *)f.t)->sb.capacity;
	kvt_fill(f.buf, 8192, 41);
	assert_int_equal(op1(&f, KVR_OP_PUT, "ok", f.buf, 8192), 8192);
	assert_int_equal(kvr_target_close(f.t), 0);
	const struct crafted recs[] = {
	    {"wrap-len", 4096, (uint64_t)-120, 2},		   /* off + len wraps to 3976 */
	    {"wrap-off", (uint64_t)-4096, 8192, 3},		   /* off + len wraps to 4096 */
	    {"seq-max", cap - 4096, 100, UINT64_MAX},		   /* ++seq would wrap to 0 */
	    {"seq-high", cap - 12288, 100, (UINT64_MAX >> 1) + 1}, /* a counter never gets there */
	    {"sane", cap - 8192, 100, 4},			   /* replayed: the block is read */
	};

	append_block(f.path, recs, 5);
	assert_int_equal(open_store(&f, KVR_STORE_NO_CREATE, 0), 0);
	assert_index_sane(&f);
	assert_int_equal(op1(&f, KVR_OP_EXISTS, "wrap-len", NULL, 0), -ENOENT);
	assert_int_equal(op1(&f, KVR_OP_EXISTS, "wrap-off", NULL, 0), -ENOENT);
	assert_int_equal(op1(&f, KVR_OP_EXISTS, "seq-max", NULL, 0), -ENOENT);
	assert_int_equal(op1(&f, KVR_OP_EXISTS, "seq-high", NULL, 0), -ENOENT);
	assert_int_equal(op1(&f, KVR_OP_EXISTS, "sane", NULL, 0), 100);
	memset(f.buf + 65536, 0, 8192);
	assert_int_equal(op1(&f, KVR_OP_GET, "ok", f.buf + 65536, 8192), 8192);
	assert_true(kvt_check(f.buf + 65536, 8192, 41));
	/* newer still wins: a replacement survives a reopen */
	kvt_fill(f.buf, 8192, 42);
	assert_int_equal(op1(&f, KVR_OP_PUT, "ok", f.buf, 8192), 8192);
	reopen(&f, KVR_STORE_NO_CREATE);
	assert_index_sane(&f);
	assert_int_equal(op1(&f, KVR_OP_GET, "ok", f.buf + 65536, 8192), 8192);
	assert_true(kvt_check(f.buf + 65536, 8192, 42));
	teardown(&f);
}

static uint64_t file_size(const char *path)
{
	struct stat st;

	assert_int_equal(stat(path, &st), 0);
	return (uint64_t)st.st_size;
}

/* Write sb as the next superblock copy (generation gen + 1), crc and all:
 * what the store itself would write. */
static void write_super(const char *path, const struct fs_super *sb)
{
	uint8_t b[FS_BLOCK] = {0};
	struct fs_super s = *sb;
	int fd = open(path, O_RDWR);

	assert_true(fd >= 0);
	s.gen++;
	s.crc = 0;
	memcpy(b, &s, sizeof(s));
	s.crc = kvr_crc32c(0, b, FS_BLOCK);
	memcpy(b, &s, sizeof(s));
	assert_int_equal(pwrite(fd, b, FS_BLOCK, (off_t)(s.gen % 2) * FS_BLOCK), FS_BLOCK);
	close(fd);
}

/* A superblock with a right crc but a layout no format writes — a third
 * log half, a log over the superblocks or the data, a data area whose end
 * wraps past 2^64, a generation with no room to count, an active log of a
 * generation never handed out — is refused as corruption (-EUCLEAN),
 * before anything is read or written by it. */
static void test_crafted_superblock(void **state)
{
	struct fx f;
	struct fs_super good, bad;
	uint8_t area[FS_SUPER_SIZE];
	uint64_t size;
	int fd;

	setup(&f, "fs_crafted_sb", 0, 16 << 20);
	assert_int_equal(kvr_target_close(f.t), 0);
	size = file_size(f.path);
	for (int i = 0; i < 9; i++) {
		fd = open(f.path, O_RDWR);
		assert_true(fd >= 0);
		assert_int_equal(pread(fd, area, sizeof(area), 0), sizeof(area));
		read_super(f.path, &good);
		bad = good;
		switch (i) {
		case 0:
			bad.active = 2;
			break;
		case 1:
			bad.log_off = 0;
			break;
		case 2:
			bad.data_off = bad.log_off + bad.log_half;
			break;
		case 3:
			bad.capacity = (uint64_t)-4096; /* data_off + capacity wraps */
			break;
		case 4:
			bad.gen = UINT64_MAX - 1; /* written as UINT64_MAX */
			break;
		case 5:
			bad.log_gen_max = bad.log_gen - 1;
			break;
		case 6:
			bad.log_gen_max = FS_SEQ_MAX + 1;
			break;
		case 7: /* version 1 counts its highest as log_gen + 1 */
			bad.version = FS_VERSION_1;
			bad.log_gen = FS_SEQ_MAX;
			break;
		default:
			bad.log_half = 2048ull << 20; /* past the largest half */
			bad.data_off = bad.log_off + 2 * bad.log_half;
			bad.capacity = 4096;
			assert_int_equal(truncate(f.path, (off_t)(bad.data_off + 4096)), 0);
		}
		write_super(f.path, &bad);
		assert_int_equal(open_store(&f, KVR_STORE_NO_CREATE, 0), -EUCLEAN);
		assert_non_null(strstr(kvr_engine_errmsg(f.e), "geometry"));
		/* the superblocks as they were: the store opens */
		assert_int_equal(pwrite(fd, area, sizeof(area), 0), sizeof(area));
		close(fd);
		assert_int_equal(truncate(f.path, (off_t)size), 0);
		assert_int_equal(open_store(&f, KVR_STORE_NO_CREATE, 0), 0);
		assert_int_equal(kvr_target_close(f.t), 0);
	}
	teardown(&f);
}

/* A store of format version 1 (no log_gen_max: the field reads as zero)
 * opens with its objects. Its compactions took log_gen + 1, which a cut
 * short one may have left in the other half, so the compaction at open
 * (after a crash) takes a generation above that; the store is version 2
 * from the first superblock the open writes. */
static void test_version1_store(void **state)
{
	struct fx f;
	struct fs_super sb, now;

	setup(&f, "fs_v1", 0, 16 << 20);
	kvt_fill(f.buf, 10000, 51);
	assert_int_equal(op1(&f, KVR_OP_PUT, "old", f.buf, 10000), 10000);
	assert_int_equal(kvr_target_close(f.t), 0);
	read_super(f.path, &sb);
	assert_int_equal(sb.version, FS_VERSION);
	sb.version = FS_VERSION_1;
	sb.log_gen_max = 0;
	sb.clean = 0; /* as a crash leaves it: the open compacts */
	write_super(f.path, &sb);
	assert_int_equal(open_store(&f, KVR_STORE_NO_CREATE, 0), 0);
	now = ((struct filestore *)f.t)->sb;
	assert_int_equal(now.version, FS_VERSION);
	assert_true(now.log_gen > sb.log_gen + 1);
	assert_true(now.log_gen_max > now.log_gen);
	memset(f.buf + 65536, 0, 10000);
	assert_int_equal(op1(&f, KVR_OP_GET, "old", f.buf + 65536, 10000), 10000);
	assert_true(kvt_check(f.buf + 65536, 10000, 51));
	assert_int_equal(kvr_target_close(f.t), 0);
	read_super(f.path, &now);
	assert_int_equal(now.version, FS_VERSION);
	assert_true(now.log_gen_max > now.log_gen && now.clean);
	assert_int_equal(open_store(&f, KVR_STORE_NO_CREATE, 0), 0);
	assert_int_equal(op1(&f, KVR_OP_GET, "old", f.buf + 65536, 10000), 10000);
	assert_true(kvt_check(f.buf + 65536, 10000, 51));
	teardown(&f);
}

/* A new store in a pre-sized file takes the file's size (less the header
 * and log); a missing or empty one gets opts->capacity or 1 GiB. */
static void test_presized_file(void **state)
{
	struct fx f;
	struct kvr_stats st = {.size = sizeof(st)};
	int fd;

	f.e = kvt_engine();
	f.buf = kvt_alloc_mem(ARENA);
	assert_int_equal(kvr_mem_register(f.e, f.buf, ARENA, 0, &f.mr), 0);
	snprintf(f.path, sizeof(f.path), "%s", kvt_path("fs_presized"));
	snprintf(f.uri, sizeof(f.uri), "file:%s", f.path);
	unlink(f.path);
	fd = open(f.path, O_CREAT | O_RDWR | O_EXCL, 0644);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, 64 << 20), 0);
	close(fd);
	assert_int_equal(open_store(&f, 0, 0), 0);
	kvr_target_stats(f.t, &st);
	/* 8 KiB superblocks + two 8 MiB log halves, rounded up to 17 MiB */
	assert_int_equal(st.capacity_bytes, 47ull << 20);
	assert_int_equal(file_size(f.path), 64 << 20);
	kvt_fill(f.buf, 1 << 20, 9);
	assert_int_equal(op1(&f, KVR_OP_PUT, "p", f.buf, 1 << 20), 1 << 20);
	reopen(&f, KVR_STORE_NO_CREATE);
	kvr_target_stats(f.t, &st);
	assert_int_equal(st.capacity_bytes, 47ull << 20);
	memset(f.buf + (4 << 20), 0, 1 << 20);
	assert_int_equal(op1(&f, KVR_OP_GET, "p", f.buf + (4 << 20), 1 << 20), 1 << 20);
	assert_true(kvt_check(f.buf + (4 << 20), 1 << 20, 9));
	assert_int_equal(kvr_target_close(f.t), 0);
	assert_int_equal(file_size(f.path), 64 << 20);
	/* an explicit capacity still wins over the file's size */
	assert_int_equal(truncate(f.path, 0), 0);
	assert_int_equal(truncate(f.path, 64 << 20), 0);
	assert_int_equal(open_store(&f, 0, 16 << 20), 0);
	kvr_target_stats(f.t, &st);
	assert_int_equal(st.capacity_bytes, 16 << 20);
	assert_int_equal(kvr_target_close(f.t), 0);
	/* too small to hold the log: refused, the file left as it was */
	assert_int_equal(truncate(f.path, 0), 0);
	assert_int_equal(truncate(f.path, 1 << 20), 0);
	assert_int_equal(open_store(&f, 0, 0), -ENOSPC);
	assert_non_null(strstr(kvr_engine_errmsg(f.e), "too small"));
	assert_int_equal(file_size(f.path), 1 << 20);
	/* empty or missing: 1 GiB */
	assert_int_equal(truncate(f.path, 0), 0);
	assert_int_equal(open_store(&f, 0, 0), 0);
	kvr_target_stats(f.t, &st);
	assert_int_equal(st.capacity_bytes, 1ull << 30);
	assert_int_equal(kvr_target_close(f.t), 0);
	unlink(f.path);
	assert_int_equal(open_store(&f, 0, 0), 0);
	kvr_target_stats(f.t, &st);
	assert_int_equal(st.capacity_bytes, 1ull << 30);
	teardown(&f);
}

/* A format that cannot size the file leaves nothing behind: a file the open
 * created is removed, a file that was there keeps its size. */
static void test_failed_format_cleans_up(void **state)
{
	struct fx f;
	struct statfs sfs;
	char shm[256];
	int fd, rc;

	f.e = kvt_engine();
	snprintf(f.path, sizeof(f.path), "%s", kvt_path("fs_nospace"));
	snprintf(f.uri, sizeof(f.uri), "file:%s", f.path);
	unlink(f.path);
	/* 1 PiB: beyond what the file system takes (-EFBIG past its largest
	 * file, -ENOSPC past its free space) */
	rc = open_store(&f, 0, 1ull << 50);
	assert_true(rc == -ENOSPC || rc == -EFBIG);
	assert_non_null(strstr(kvr_engine_errmsg(f.e), "cannot size"));
	assert_int_equal(access(f.path, F_OK), -1);
	assert_int_equal(errno, ENOENT);
	fd = open(f.path, O_CREAT | O_RDWR | O_EXCL, 0644);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, 1 << 20), 0);
	close(fd);
	rc = open_store(&f, 0, 1ull << 50);
	assert_true(rc == -ENOSPC || rc == -EFBIG);
	assert_int_equal(file_size(f.path), 1 << 20);
	/* a capacity past the free space of a tmpfs, which refuses the whole
	 * fallocate up front: exactly -ENOSPC */
	snprintf(shm, sizeof(shm), "/dev/shm/kvr-fs-nospace.%d", (int)getpid());
	if (statfs("/dev/shm", &sfs) == 0 && sfs.f_type == TMPFS_MAGIC && sfs.f_blocks) {
		snprintf(f.uri, sizeof(f.uri), "file:%s", shm);
		unlink(shm);
		rc = open_store(&f, 0, 2 * (uint64_t)sfs.f_blocks * (uint64_t)sfs.f_bsize);
		assert_int_equal(rc, -ENOSPC);
		assert_int_equal(access(shm, F_OK), -1);
	} else {
		print_message("no tmpfs at /dev/shm: the exact -ENOSPC case is skipped\n");
	}
	kvr_engine_destroy(f.e);
	unlink(f.path);
}

static void on_alarm(int sig)
{
	(void)sig;
}

/* A signal every 20 ms while a 512 MiB store is formatted on tmpfs, whose
 * fallocate on older kernels (the rdma-vm's 6.1) gives up with EINTR on any
 * pending signal or io_uring task work, as when a ring was closed just
 * before: the open still succeeds, and the store works. */
static void test_interrupted_format(void **state)
{
	struct sigaction sa = {.sa_handler = on_alarm}, old;
	struct itimerval on = {{0, 20000}, {0, 20000}}, off = {{0, 0}, {0, 0}};
	struct statfs sfs;
	struct fx f;
	int rc;

	(void)state;
	if (statfs("/dev/shm", &sfs) || sfs.f_type != TMPFS_MAGIC ||
	    (uint64_t)sfs.f_bavail * sfs.f_bsize < (1ull << 30)) {
		print_message("no tmpfs with 1 GiB free at /dev/shm: skipped\n");
		skip();
	}
	f.e = kvt_engine();
	f.buf = kvt_alloc_mem(ARENA);
	assert_int_equal(kvr_mem_register(f.e, f.buf, ARENA, 0, &f.mr), 0);
	snprintf(f.path, sizeof(f.path), "/dev/shm/kvr-fs-eintr.%d", (int)getpid());
	snprintf(f.uri, sizeof(f.uri), "file:%s", f.path);
	unlink(f.path);
	assert_int_equal(sigaction(SIGALRM, &sa, &old), 0); /* no SA_RESTART */
	assert_int_equal(setitimer(ITIMER_REAL, &on, NULL), 0);
	rc = open_store(&f, KVR_STORE_TRUNCATE, 512ull << 20);
	assert_int_equal(setitimer(ITIMER_REAL, &off, NULL), 0);
	assert_int_equal(sigaction(SIGALRM, &old, NULL), 0);
	if (rc)
		fail_msg("open: %s (%s)", kvr_strerror(rc), kvr_engine_errmsg(f.e));
	kvt_fill(f.buf, 65536, 9);
	assert_int_equal(op1(&f, KVR_OP_PUT, "eintr", f.buf, 65536), 65536);
	memset(f.buf, 0, 65536);
	assert_int_equal(op1(&f, KVR_OP_GET, "eintr", f.buf, 65536), 65536);
	assert_true(kvt_check(f.buf, 65536, 9));
	teardown(&f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_aligned_is_direct),
	    cmocka_unit_test(test_unaligned_fallback),
	    cmocka_unit_test(test_ops_and_reopen),
	    cmocka_unit_test(test_checksum_failure),
	    cmocka_unit_test(test_eviction_and_no_evict),
	    cmocka_unit_test(test_log_compaction),
	    cmocka_unit_test(test_replace_is_atomic),
	    cmocka_unit_test(test_open_errors),
	    cmocka_unit_test(test_file_backed_memory),
	    cmocka_unit_test(test_crafted_log_records),
	    cmocka_unit_test(test_crafted_superblock),
	    cmocka_unit_test(test_version1_store),
	    cmocka_unit_test(test_presized_file),
	    cmocka_unit_test(test_failed_format_cleans_up),
	    cmocka_unit_test(test_interrupted_format),
	};
	if (getenv("KVR_TEST_FILTER")) /* e.g. "*interrupted*": one test while debugging */
		cmocka_set_test_filter(getenv("KVR_TEST_FILTER"));
	return cmocka_run_group_tests(tests, NULL, NULL);
}
