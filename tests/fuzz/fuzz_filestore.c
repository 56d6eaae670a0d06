/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer: the file store's open path — superblock choice and geometry
 * checks, log replay, extent reservation — on a store file built from the
 * input (store_image.h: superblocks plus log blocks, every crc32c made
 * right), in a memfd opened through kvr_store_open like any other file.
 *
 * What an open that succeeds must give:
 *   - a geometry inside the file: the log between the superblocks and the
 *     data area, the data area inside the file, one of two log halves;
 *   - on disk, as the superblock the next open picks, the one it wrote;
 *   - an index whose every object lies inside the data area in space of its
 *     own, whose sequence numbers leave room to count, and whose extents
 *     add up to what the allocator says is used;
 *   - exists/get on each replayed key answer its length, or -EIO for bytes
 *     that fail their crc32c (and then the key is gone); a new put is read
 *     back byte for byte;
 *   - a clean close that leaves the file its size (no write outside the
 *     store) and a reopen that finds exactly the objects the close saw.
 * Anything else aborts; ASan checks the rest, LeakSanitizer the close.
 */
#include "store_image.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define FILE_MAX (1ull << 30) /* sparse: only what is written takes memory */
#define ARENA	 (256u << 10)
#define GET_MAX	 (64u << 10) /* gets of longer objects are skipped */
#define OPS_MAX	 32	     /* replayed keys tried with exists/get */
#define NEW_LEN	 5000
#define NEW_KEY	 "\x01fuzz-new"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static kvr_engine *eng;
static uint8_t *arena;
static int memfd = -1;
static char uri[64];

struct snap {
	uint64_t off, len, seq;
	uint32_t crc;
	uint16_t key_len;
	uint8_t key[KVR_MAX_KEY];
};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	struct kvr_engine_opts eo = {
	    .size = sizeof(eo), .ring_entries = 64, .max_objects = 64, .fixed_buffers = 4};
	kvr_mr *mr;

	(void)argc;
	(void)argv;
	arena = mmap(NULL, ARENA, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	memfd = memfd_create("kvr-fuzz-store", MFD_CLOEXEC);
	if (arena == MAP_FAILED || memfd < 0 || kvr_engine_create(&eo, &eng) ||
	    kvr_mem_register(eng, arena, ARENA, 0, &mr)) {
		fprintf(stderr, "fuzz_filestore: cannot set up (memfd, engine or region)\n");
		abort();
	}
	snprintf(uri, sizeof(uri), "file:/proc/self/fd/%d", memfd);
	return 0;
}

/* An invariant broke: say which, then crash for libFuzzer to keep the input. */
static _Noreturn void fail(const char *why)
{
	fprintf(stderr, "fuzz_filestore: %s\n", why);
	abort();
}

/* ------------------------------------------------------------ the file */

/* The highest log generation the store in sb has handed out: no block of
 * it carries a higher one (filestore.h). */
static uint64_t gen_max(const struct fs_super *sb)
{
	return sb->version == FS_VERSION_1 ? sb->log_gen + 1 : sb->log_gen_max;
}

/* Counters within this of FS_SEQ_MAX are lowered by as much (room_to_count). */
#define ROOM (1ull << 20)

/* A superblock copy's counters (its generation, the log's, the highest log
 * generation handed out) that an open accepts but that leave no room for
 * the few the open and close add — a store at 2^63 superblock writes —
 * are lowered, so that a reopen is owed what the close wrote. */
static void room_to_count(uint8_t *copy)
{
	struct fs_super sb;
	uint64_t *v[] = {&sb.gen, &sb.log_gen, &sb.log_gen_max};

	memcpy(&sb, copy, sizeof(sb));
	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++)
		if (*v[i] >= FS_SEQ_MAX - ROOM && *v[i] <= FS_SEQ_MAX)
			*v[i] -= ROOM;
	memcpy(copy, &sb, sizeof(sb));
}

/* Lay the image out as a store file in memfd; returns the file's size.
 * Like the crcs, rules of the format an open cannot check are made to
 * hold: the counters leave room to count (room_to_count), and a log
 * generation is handed out (in the superblock) before a block carries it,
 * so a block of a generation above the superblock's highest is one no
 * store wrote, and an open could tell it only by reading the whole log:
 * such a block gets generation 0, which no store hands out. */
static uint64_t build_file(const uint8_t *data, size_t size)
{
	uint8_t super[FS_SUPER_SIZE] = {0};
	size_t nlog = size > FS_SUPER_SIZE ? (size - FS_SUPER_SIZE) / FS_BLOCK : 0;
	size_t tail = size > FS_SUPER_SIZE ? (size - FS_SUPER_SIZE) % FS_BLOCK : 0;
	uint8_t ctl = tail ? data[size - tail] : 0;
	uint8_t *log = NULL;
	struct fs_super sb;
	uint64_t base = 0, need = FS_SUPER_SIZE, fsize, end;
	bool have;

	memcpy(super, data, size < FS_SUPER_SIZE ? size : FS_SUPER_SIZE);
	room_to_count(super);
	room_to_count(super + FS_BLOCK);
	if (!(ctl & IMG_KEEP_CRC_A))
		img_seal_super(super);
	if (!(ctl & IMG_KEEP_CRC_B))
		img_seal_super(super + FS_BLOCK);
	have = img_pick_super(super, &sb) && img_log_base(&sb, &base);
	if (nlog) {
		log = malloc(nlog * FS_BLOCK);
		if (!log)
			fail("out of memory");
		memcpy(log, data + FS_SUPER_SIZE, nlog * FS_BLOCK);
		for (size_t i = 0; i < nlog; i++) {
			uint8_t *b = log + i * FS_BLOCK;
			struct fs_logblk h;

			memcpy(&h, b, sizeof(h));
			if (have && h.log_gen > gen_max(&sb)) {
				h.log_gen = 0;
				memcpy(b, &h, sizeof(h));
			}
			if (i + 1 < nlog || !(ctl & IMG_KEEP_CRC_LAST))
				img_seal_log(b);
		}
	}
	if (have) {
		if (!__builtin_add_overflow(sb.data_off, sb.capacity, &end) && end > need)
			need = end;
		if (!__builtin_add_overflow(base, (uint64_t)nlog * FS_BLOCK, &end) && end > need)
			need = end;
	}
	switch ((ctl >> IMG_SIZE_SHIFT) & 3) {
	case 0:
		fsize = need;
		break;
	case 1:
		fsize = need > FS_SUPER_SIZE ? need - FS_BLOCK : need;
		break;
	case 2:
		fsize = need + FS_BLOCK;
		break;
	default:
		fsize = FS_SUPER_SIZE;
	}
	if (fsize > FILE_MAX)
		fsize = FILE_MAX;
	if (ftruncate(memfd, 0) || ftruncate(memfd, (off_t)fsize) ||
	    pwrite(memfd, super, FS_SUPER_SIZE, 0) != FS_SUPER_SIZE)
		fail("ftruncate/pwrite on the memfd");
	/* Log blocks go where the winner's active half starts, when that is
	 * past the superblocks and inside the file. */
	if (have && nlog && base >= FS_SUPER_SIZE && base <= fsize &&
	    (uint64_t)nlog * FS_BLOCK <= fsize - base &&
	    pwrite(memfd, log, nlog * FS_BLOCK, (off_t)base) != (ssize_t)(nlog * FS_BLOCK))
		fail("pwrite of the log");
	free(log);
	return fsize;
}

static uint64_t file_size(void)
{
	struct stat st;

	if (fstat(memfd, &st))
		fail("fstat");
	return (uint64_t)st.st_size;
}

/* ----------------------------------------------------------- the store */

struct wait {
	bool done;
	int64_t res;
};

static void on_done(void *ctx, size_t n, const int64_t *results)
{
	struct wait *w = ctx;

	if (n != 1)
		fail("a batch with more than one result");
	w->res = results[0];
	w->done = true;
}

static int64_t op(kvr_target *t, enum kvr_op o, const void *key, size_t key_len, void *buf,
		  size_t len)
{
	kvr_sge sge = {buf, len};
	kvr_obj obj = {key, key_len, &sge, 1};
	struct wait w = {0};

	if (kvr_submit(t, o, &obj, 1, 0, on_done, &w))
		fail("submit refused");
	for (int i = 0; i < 1000 && !w.done; i++)
		if (kvr_engine_poll(eng, 10) < 0)
			fail("poll failed");
	if (!w.done)
		fail(
		    "an object took ten seconds"); /* ten seconds for one object on a memfd: hung */
	return w.res;
}

static int cmp_off(const void *a, const void *b)
{
	const struct kvr_entry *x = *(struct kvr_entry *const *)a;
	const struct kvr_entry *y = *(struct kvr_entry *const *)b;

	return x->off < y->off ? -1 : x->off > y->off;
}

/* The geometry and index rules above; returns the index as a snapshot
 * (malloc'd, *n entries). */
static struct snap *check_store(kvr_target *t, uint64_t fsize, size_t *n)
{
	struct filestore *fs = (struct filestore *)t;
	const struct fs_super *sb = &fs->sb;
	struct kvr_store *s = &fs->s;
	uint64_t count = s->ix.count, i = 0, used = 0, log_end, data_end;
	struct kvr_entry **v = malloc((count ? count : 1) * sizeof(*v));
	struct snap *snap = malloc((count ? count : 1) * sizeof(*snap));
	uint8_t super[FS_SUPER_SIZE];
	struct fs_super disk, live;

	if (!v || !snap)
		fail("out of memory");
	/* The copy on disk that the next open picks is the one this open
	 * last wrote. */
	if (pread(memfd, super, FS_SUPER_SIZE, 0) != FS_SUPER_SIZE || !img_pick_super(super, &disk))
		fail("no superblock on disk after open");
	live = *sb;
	live.crc = disk.crc = 0;
	if (memcmp(&live, &disk, sizeof(live)))
		fail("the superblock on disk is not the one open wrote");
	if (sb->active > 1 || sb->log_off < FS_SUPER_SIZE ||
	    __builtin_mul_overflow(sb->log_half, 2, &log_end) ||
	    __builtin_add_overflow(log_end, sb->log_off, &log_end) || log_end > sb->data_off ||
	    sb->data_off % FS_BLOCK ||
	    __builtin_add_overflow(sb->data_off, sb->capacity, &data_end) || data_end > fsize ||
	    s->al.capacity > sb->capacity)
		fail("geometry outside the file");
	for (struct kvr_entry *en = s->ix.lru_head; en; en = en->lru_next) {
		if (i == count || !en->linked || en->refs != 1 || !en->len ||
		    en->len > en->alloc_len || en->alloc_len != kvr_alloc_round(&s->al, en->len) ||
		    en->off % s->al.unit || en->off > s->al.capacity ||
		    en->alloc_len > s->al.capacity - en->off || en->seq > FS_SEQ_MAX ||
		    en->seq > s->seq || !en->key_len || en->key_len > KVR_MAX_KEY)
			fail("an index entry breaks a rule");
		snap[i] = (struct snap){.off = en->off,
					.len = en->len,
					.seq = en->seq,
					.crc = en->crc,
					.key_len = en->key_len};
		memcpy(snap[i].key, en->key, en->key_len);
		used += en->alloc_len;
		v[i++] = en;
	}
	if (i != count || used != s->al.used || s->seq > FS_SEQ_MAX)
		fail("index count or used bytes disagree");
	qsort(v, count, sizeof(*v), cmp_off);
	for (i = 1; i < count; i++)
		if (v[i - 1]->off + v[i - 1]->alloc_len > v[i]->off)
			fail("two objects in one extent"); /* two objects in one extent */
	free(v);
	*n = count;
	return snap;
}

static void try_ops(kvr_target *t, const struct snap *snap, size_t n)
{
	uint8_t *buf = arena, *newb = arena + GET_MAX;
	int64_t rc;

	for (size_t i = 0; i < n && i < OPS_MAX; i++) {
		const struct snap *k = &snap[i];

		if (op(t, KVR_OP_EXISTS, k->key, k->key_len, NULL, 0) != (int64_t)k->len)
			fail("exists on a replayed key");
		if (k->len > GET_MAX)
			continue;
		rc = op(t, KVR_OP_GET, k->key, k->key_len, buf, k->len);
		if (rc == (int64_t)k->len) {
			if (kvr_crc32c(0, buf, k->len) != k->crc)
				fail("get returned bytes with a wrong crc");
		} else if (rc != -EIO ||
			   op(t, KVR_OP_EXISTS, k->key, k->key_len, NULL, 0) != -ENOENT) {
			fail("get of a replayed key");
		}
	}
	/* Space handed out after replay is space of its own. */
	for (size_t j = 0; j < NEW_LEN; j++)
		newb[j] = (uint8_t)(j * 7 + 1);
	rc = op(t, KVR_OP_PUT, NEW_KEY, sizeof(NEW_KEY) - 1, newb, NEW_LEN);
	if (rc == -ENOSPC)
		return; /* a data area smaller than the object */
	if (rc != NEW_LEN)
		fail("put of a new object");
	memset(buf, 0, NEW_LEN);
	if (op(t, KVR_OP_GET, NEW_KEY, sizeof(NEW_KEY) - 1, buf, NEW_LEN) != NEW_LEN ||
	    memcmp(buf, newb, NEW_LEN))
		fail("the new object read back differs");
}

/* Close and free the handle at once (the engine would keep a closed one
 * until it is destroyed, and this engine lives as long as the process). */
static int close_store(kvr_target *t)
{
	int rc = kvr_target_close(t);

	kvr_target_forget(t);
	free(t);
	return rc;
}

static int cmp_key(const void *a, const void *b)
{
	const struct snap *x = a, *y = b;

	if (x->key_len != y->key_len)
		return x->key_len < y->key_len ? -1 : 1;
	return memcmp(x->key, y->key, x->key_len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct kvr_store_opts so = {.size = sizeof(so), .flags = KVR_STORE_NO_CREATE};
	struct snap *before, *after;
	size_t n, m;
	kvr_target *t;
	uint64_t fsize = build_file(data, size);

	if (kvr_store_open(eng, uri, &so, &t))
		return 0;
	before = check_store(t, fsize, &n);
	try_ops(t, before, n);
	free(before);
	before = check_store(t, fsize, &n);
	if (close_store(t) || file_size() != fsize)
		fail("close failed or the file changed size");
	/* What the close wrote is what the next open finds. */
	if (kvr_store_open(eng, uri, &so, &t))
		fail("reopen after a clean close failed");
	after = check_store(t, fsize, &m);
	if (close_store(t) || file_size() != fsize)
		fail("the second close failed or the file changed size");
	if (m != n)
		fail("reopen found another number of objects");
	qsort(before, n, sizeof(*before), cmp_key);
	qsort(after, m, sizeof(*after), cmp_key);
	for (size_t i = 0; i < n; i++)
		if (cmp_key(&before[i], &after[i]) || before[i].off != after[i].off ||
		    before[i].len != after[i].len || before[i].seq != after[i].seq ||
		    before[i].crc != after[i].crc)
			fail("reopen found other objects");
	free(before);
	free(after);
	return 0;
}
