/* SPDX-License-Identifier: MIT */
/*
 * The file store: objects in a file or block device, moved with io_uring
 * straight between the caller's SGEs and the device (O_DIRECT, registered
 * buffers, registered files). Bytes that cannot go direct — an SGE whose
 * memory or payload offset is not block-aligned, or a partial last block —
 * take the buffered descriptor instead: correct, and counted in
 * stats.bounce_bytes. Format and crash rules: filestore.h.
 */
#include "transport/filestore.h"
#include "engine/sgl.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#define DEFAULT_CAPACITY (1ull << 30)
#define MIB		 (1ull << 20)

static struct kvr_req *req_of(struct fs_req *fr)
{
	return (struct kvr_req *)((uint8_t *)fr - offsetof(struct kvr_req, priv));
}

/* Queue the SQEs moving [addr, addr+len) to/from payload offset poff. */
static void issue(struct filestore *fs, struct fs_req *fr, bool write, uint8_t *addr,
		  struct kvr_mr *mr, uint64_t foff, size_t len, bool aligned)
{
	kvr_engine *e = fs->s.t.e;
	struct kvr_stats *st = &fs->s.t.stats;

	while (len) {
		struct io_uring_sqe *sqe = kvr_sqe(e);
		size_t n = len > KVR_FIXED_MAX ? KVR_FIXED_MAX : len;
		int slot = aligned ? fs->slot_direct : fs->slot_buf;
		int fd = slot >= 0 ? slot : (aligned ? fs->fd : fs->fd_buf);
		int buf = aligned ? kvr_mr_slot(mr, addr) : -1;

		if (buf >= 0) {
			uintptr_t end = kvr_fixed_end(mr, addr);

			if (n > end - (uintptr_t)addr)
				n = end - (uintptr_t)addr;
			if (write)
				io_uring_prep_write_fixed(sqe, fd, addr, (unsigned)n, foff, buf);
			else
				io_uring_prep_read_fixed(sqe, fd, addr, (unsigned)n, foff, buf);
			st->fixed_ios++;
		} else {
			if (write)
				io_uring_prep_write(sqe, fd, addr, (unsigned)n, foff);
			else
				io_uring_prep_read(sqe, fd, addr, (unsigned)n, foff);
			st->plain_ios++;
		}
		if (slot >= 0)
			sqe->flags |= IOSQE_FIXED_FILE;
		if (write && (fs->s.flags & KVR_STORE_DSYNC))
			sqe->rw_flags = RWF_DSYNC;
		if (!aligned || !fs->direct)
			st->bounce_bytes += n;
		io_uring_sqe_set_data(sqe, &fr->io);
		fr->pending++;
		fr->want += n;
		addr += n;
		foff += n;
		len -= n;
	}
}

/*
 * Split the first len bytes of the SGL over the extent at `off`: whole
 * aligned blocks go direct; the bytes around them go buffered. A direct
 * block never shares a page with buffered bytes, so the two paths never
 * touch the same page.
 */
static void plan(struct filestore *fs, struct kvr_req *r, bool write, uint64_t len, uint64_t off)
{
	const struct kvr_objd *o = r->o;
	struct fs_req *fr = fs_req(r);
	uint64_t base = fs->sb.data_off + off, poff = 0;
	struct kvr_sgl cur;
	struct kvr_sgl_piece x;

	kvr_sgl_init(&cur, o->sgx, o->nsge, len, NULL);
	while (kvr_sgl_next(&cur, UINT64_MAX, &x)) {
		uint8_t *a = x.addr;
		struct kvr_mr *mr = x.mr;
		uint64_t l = x.len;
		uint64_t head = (FS_BLOCK - poff % FS_BLOCK) % FS_BLOCK, dl = 0;

		if (fs->direct && head < l && ((uintptr_t)(a + head) & (fs->mem_align - 1)) == 0)
			dl = (l - head) & ~(uint64_t)(FS_BLOCK - 1);
		if (!dl) {
			issue(fs, fr, write, a, mr, base + poff, l, false);
		} else {
			if (head)
				issue(fs, fr, write, a, mr, base + poff, head, false);
			issue(fs, fr, write, a + head, mr, base + poff + head, dl, true);
			if (l - head - dl)
				issue(fs, fr, write, a + head + dl, mr, base + poff + head + dl,
				      l - head - dl, false);
		}
		poff += l;
	}
}

void fs_log_committed(struct filestore *fs, struct kvr_req *r, int res)
{
	struct fs_req *fr = fs_req(r);

	if (fr->rec_type == FS_REC_DEL) {
		kvr_req_done(r, res);
		return;
	}
	if (res) {
		kvr_store_unref(&fs->s, fr->en);
		kvr_req_done(r, res);
		return;
	}
	uint64_t len = fr->en->len;

	kvr_store_commit(&fs->s, fr->en);
	kvr_req_done(r, (int64_t)len);
}

static void put_written(struct filestore *fs, struct kvr_req *r)
{
	struct fs_req *fr = fs_req(r);

	if (fr->err) {
		kvr_store_unref(&fs->s, fr->en);
		kvr_req_done(r, fr->err);
		return;
	}
	fr->rec_type = FS_REC_PUT;
	fs_log_append(fs, r);
}

static void get_read(struct filestore *fs, struct kvr_req *r)
{
	struct fs_req *fr = fs_req(r);
	struct kvr_entry *en = fr->en;
	int64_t res = (int64_t)en->len;

	if (fr->err) {
		res = fr->err;
	} else if (kvr_crc32c_sgl(r->o->sgx, r->o->nsge, en->len) != en->crc) {
		kvr_store_drop_corrupt(&fs->s, en);
		res = -EIO;
	}
	kvr_store_unref(&fs->s, en);
	kvr_req_done(r, res);
}

static void io_done(struct kvr_io *io, int res, uint32_t flags)
{
	struct fs_req *fr = KVR_CONTAINER_OF(io, struct fs_req, io);
	struct kvr_req *r = req_of(fr);

	if (res < 0) {
		if (!fr->err)
			fr->err = res == -ECANCELED ? -ETIMEDOUT : res;
	} else {
		fr->moved += (uint64_t)res;
	}
	if (--fr->pending)
		return;
	if (!fr->err && fr->moved != fr->want)
		fr->err = -EIO; /* short transfer: past the end of the device */
	if (r->b->op == KVR_OP_PUT)
		put_written(fr->fs, r);
	else
		get_read(fr->fs, r);
}

static struct fs_req *req_init(struct filestore *fs, struct kvr_req *r)
{
	struct fs_req *fr = fs_req(r);

	_Static_assert(sizeof(struct fs_req) <= KVR_REQ_PRIV, "fs_req too large");
	memset(fr, 0, sizeof(*fr));
	fr->io.fn = io_done;
	fr->fs = fs;
	return fr;
}

static void fs_put(kvr_target *t, struct kvr_req **reqs, uint32_t n)
{
	struct filestore *fs = (struct filestore *)t;

	for (uint32_t i = 0; i < n; i++) {
		struct kvr_req *r = reqs[i];
		struct fs_req *fr = req_init(fs, r);
		const struct kvr_objd *o = r->o;
		int64_t off;

		if (fs->log.broken) {
			kvr_req_done(r, fs->log.broken);
			continue;
		}
		off = kvr_store_alloc(&fs->s, o->total);
		if (off < 0) {
			kvr_req_done(r, off);
			continue;
		}
		fr->en = kvr_store_entry(&fs->s, o, (uint64_t)off, o->total,
					 kvr_crc32c_sgl(o->sgx, o->nsge, o->total));
		if (!fr->en) {
			kvr_alloc_put(&fs->s.al, (uint64_t)off,
				      kvr_alloc_round(&fs->s.al, o->total));
			kvr_req_done(r, -ENOMEM);
			continue;
		}
		plan(fs, r, true, o->total, (uint64_t)off);
	}
}

static void fs_get(kvr_target *t, struct kvr_req **reqs, uint32_t n)
{
	struct filestore *fs = (struct filestore *)t;

	for (uint32_t i = 0; i < n; i++) {
		struct kvr_req *r = reqs[i];
		struct fs_req *fr = req_init(fs, r);
		struct kvr_entry *en = kvr_store_pin(&fs->s, r->o);

		if (!en) {
			kvr_req_done(r, -ENOENT);
			continue;
		}
		if (en->len > r->o->total) {
			kvr_store_unref(&fs->s, en);
			kvr_req_done(r, -EMSGSIZE);
			continue;
		}
		fr->en = en;
		plan(fs, r, false, en->len, en->off);
	}
}

static void fs_remove(kvr_target *t, struct kvr_req **reqs, uint32_t n)
{
	struct filestore *fs = (struct filestore *)t;

	for (uint32_t i = 0; i < n; i++) {
		struct kvr_req *r = reqs[i];
		struct fs_req *fr = req_init(fs, r);
		const struct kvr_objd *o = r->o;
		struct kvr_entry *en = kvr_index_find(&fs->s.ix, o->key, o->key_len, o->hash);

		if (!en) {
			kvr_req_done(r, -ENOENT);
			continue;
		}
		kvr_index_unlink(&fs->s.ix, en);
		kvr_store_unref(&fs->s, en);
		fr->rec_type = FS_REC_DEL;
		fs_log_append(fs, r);
	}
}

static void fs_cancel(kvr_target *t, struct kvr_req *r)
{
	struct fs_req *fr = fs_req(r);
	struct io_uring_sqe *sqe;

	if (!fr->pending)
		return; /* waiting for the log: finishes with the next block */
	sqe = kvr_sqe(t->e);
	io_uring_prep_cancel(sqe, &fr->io, IORING_ASYNC_CANCEL_ALL);
	io_uring_sqe_set_data(sqe, NULL);
}

static void fs_release(struct filestore *fs)
{
	kvr_engine *e = fs->s.t.e;

	kvr_flush_del(e, &fs->log.flush);
	kvr_file_unslot(e, fs->slot_direct);
	kvr_file_unslot(e, fs->slot_buf);
	if (fs->fd >= 0)
		close(fs->fd);
	if (fs->fd_buf >= 0)
		close(fs->fd_buf);
	fs_log_fini(fs);
	free(fs->sbuf);
	free(fs->path);
	fs->fd = fs->fd_buf = fs->slot_direct = fs->slot_buf = -1;
	fs->sbuf = NULL;
	fs->path = NULL;
}

static int fs_close(kvr_target *t)
{
	struct filestore *fs = (struct filestore *)t;
	int rc = kvr_engine_drain(t->e, &t->inflight);

	/* A snapshot at close makes the next open read one compact log. */
	if (!rc && !fs->log.broken)
		rc = fs_log_compact(fs, true);
	kvr_store_fini(&fs->s);
	fs_release(fs);
	return rc;
}

static const struct kvr_target_ops fs_ops = {
    .name = "file",
    .put = fs_put,
    .get = fs_get,
    .exists = kvr_store_exists,
    .remove = fs_remove,
    .cancel = fs_cancel,
    .stats = kvr_store_stats,
    .close = fs_close,
};

/* ------------------------------------------------------------------ open */

static bool super_ok(const uint8_t *b)
{
	struct fs_super sb;
	uint8_t tmp[FS_BLOCK];

	memcpy(&sb, b, sizeof(sb));
	if (sb.magic != FS_MAGIC)
		return false;
	memcpy(tmp, b, FS_BLOCK);
	memset(tmp + offsetof(struct fs_super, crc), 0, sizeof(sb.crc));
	return kvr_crc32c(0, tmp, FS_BLOCK) == sb.crc;
}

/* 1 when a valid superblock was found, 0 when none but the superblock area
 * is all zeros (an interrupted format: safe to format again), -EUCLEAN when
 * it holds something else, -errno on read errors. */
static int super_read(struct filestore *fs, uint64_t size)
{
	uint8_t *b;
	int found = 0;

	if (size < FS_SUPER_SIZE)
		return size ? -EUCLEAN : 0;
	if (posix_memalign((void **)&b, FS_BLOCK, FS_SUPER_SIZE))
		return -ENOMEM;
	if (pread(fs->fd, b, FS_SUPER_SIZE, 0) != FS_SUPER_SIZE) {
		free(b);
		return -EIO;
	}
	for (int i = 0; i < 2; i++) {
		struct fs_super sb;

		if (!super_ok(b + i * FS_BLOCK))
			continue;
		memcpy(&sb, b + i * FS_BLOCK, sizeof(sb));
		if (!found || sb.gen > fs->sb.gen)
			fs->sb = sb;
		found = 1;
	}
	if (!found) {
		for (size_t i = 0; i < FS_SUPER_SIZE; i++) {
			if (b[i]) {
				found = -EUCLEAN;
				break;
			}
		}
	}
	free(b);
	return found;
}

/* fallocate [0, len), asked again where it was interrupted: tmpfs on older
 * kernels (the rdma-vm's 6.1 among them; newer ones stop for fatal signals
 * only) gives up with EINTR, undoing what that call did, whenever the task
 * has a signal or task work pending, io_uring's own included (a ring just
 * closed is torn down by a kernel worker that then queues work to this
 * task). After each interruption the rest goes in pieces half as
 * large (down to 64 KiB), each kept once done, so that signals coming
 * faster than the whole file can be allocated still let it finish.
 * Returns 0 or an errno. */
static int allocate(int fd, uint64_t len)
{
	uint64_t off = 0, step = len;

	while (off < len) {
		uint64_t n = len - off < step ? len - off : step;

		if (fallocate(fd, 0, (off_t)off, (off_t)n) == 0)
			off += n;
		else if (errno != EINTR)
			return errno;
		else if (step > 64 * 1024)
			step /= 2;
	}
	return 0;
}

/* Give the file its blocks now, so that a put never meets a full file
 * system. A file that keeps its size is only filled in, never truncated:
 * its blocks may be the very ones its owner set aside. */
static int size_file(struct filestore *fs, uint64_t total, bool keep)
{
	int err = 0;

	if (!keep && ftruncate(fs->fd, 0))
		err = errno;
	else
		err = allocate(fs->fd, total);
	if (err == EOPNOTSUPP) /* then sparse: blocks are found as they are written */
		err = keep || !ftruncate(fs->fd, (off_t)total) ? 0 : errno;
	if (err)
		kvr_set_errmsg(fs->s.t.e, "%s: cannot size the file to %llu bytes: %s", fs->path,
			       (unsigned long long)total, strerror(err));
	return -err;
}

/* Lay out a new store. A block device, or a file that already has a size
 * when no capacity is asked for, keeps its size (kvring.h promises it): the
 * data area is what the superblocks and the log leave. Anything else is
 * sized to hold `want` (default 1 GiB). */
static int format(struct filestore *fs, uint64_t size, uint64_t want)
{
	kvr_engine *e = fs->s.t.e;
	bool keep = fs->blkdev || (!want && size);
	uint64_t cap = want ? want : keep ? size : DEFAULT_CAPACITY;
	uint64_t half = cap / 64 / MIB * MIB;
	int rc;

	half = half < 8 * MIB ? 8 * MIB : half > 1024 * MIB ? 1024 * MIB : half;
	memset(&fs->sb, 0, sizeof(fs->sb));
	fs->sb.magic = FS_MAGIC;
	fs->sb.version = FS_VERSION;
	fs->sb.unit = FS_BLOCK;
	fs->sb.log_off = FS_SUPER_SIZE;
	fs->sb.log_half = half;
	fs->sb.data_off = (FS_SUPER_SIZE + 2 * half + MIB - 1) / MIB * MIB;
	fs->sb.log_gen = fs->sb.log_gen_max = 1;
	if (keep) {
		if (size <= fs->sb.data_off + FS_BLOCK) {
			kvr_set_errmsg(e,
				       "%s: %llu bytes is too small for a store (it needs more "
				       "than %llu)",
				       fs->path, (unsigned long long)size,
				       (unsigned long long)(fs->sb.data_off + FS_BLOCK));
			return -ENOSPC;
		}
		if (cap > size - fs->sb.data_off)
			cap = size - fs->sb.data_off;
	} else if (cap > (uint64_t)INT64_MAX - fs->sb.data_off) {
		/* data_off + cap would not fit an off_t (or would wrap) */
		kvr_set_errmsg(e, "%s: capacity %llu is past the largest file", fs->path,
			       (unsigned long long)cap);
		return -EFBIG;
	}
	fs->sb.capacity = cap / FS_BLOCK * FS_BLOCK;
	if (getrandom(&fs->sb.uuid, sizeof(fs->sb.uuid), 0) != sizeof(fs->sb.uuid))
		fs->sb.uuid = kvr_now_ns() ^ ((uint64_t)getpid() << 32);
	if (!fs->blkdev && (rc = size_file(fs, fs->sb.data_off + fs->sb.capacity, keep)) != 0)
		return rc;
	/* Both superblock copies: a stale copy from an earlier store must not
	 * outrank the new one. */
	memset(fs->sbuf, 0, FS_BLOCK);
	if (pwrite(fs->fd, fs->sbuf, FS_BLOCK, 0) != FS_BLOCK ||
	    pwrite(fs->fd, fs->sbuf, FS_BLOCK, FS_BLOCK) != FS_BLOCK)
		return -EIO;
	return fs_super_write(fs);
}

/* An open that formatted and then failed leaves things as it found them: a
 * file it created is removed; a file or device that was there loses the new
 * superblocks (its header was zeros, or TRUNCATE was asked for, so nothing
 * else is lost) and a file gets back its size, so the next open sees what
 * this one saw. Best effort: the open's own error is what the caller gets. */
static void unformat(struct filestore *fs)
{
	if (fs->created) {
		unlink(fs->path);
		return;
	}
	memset(fs->sbuf, 0, FS_BLOCK);
	if (pwrite(fs->fd, fs->sbuf, FS_BLOCK, 0) != FS_BLOCK ||
	    pwrite(fs->fd, fs->sbuf, FS_BLOCK, FS_BLOCK) != FS_BLOCK)
		kvr_log(fs->s.t.e, KVR_LOG_WARN, "%s: cannot clear the superblocks", fs->path);
	if (!fs->blkdev && ftruncate(fs->fd, (off_t)fs->orig_size))
		kvr_log(fs->s.t.e, KVR_LOG_WARN, "%s: cannot restore its size %llu", fs->path,
			(unsigned long long)fs->orig_size);
	fdatasync(fs->fd);
}

/* One process per store. A process that just died may still own in-flight
 * io_uring I/O (and with it the lock) for a moment: wait up to 2 s. */
static int lock_store(struct filestore *fs)
{
	for (int i = 0; i < 200; i++) {
		if (flock(fs->fd, LOCK_EX | LOCK_NB) == 0)
			return 0;
		if (errno != EWOULDBLOCK && errno != EINTR)
			return -errno;
		usleep(10000);
	}
	kvr_set_errmsg(fs->s.t.e, "%s is in use by another process", fs->path);
	return -EBUSY;
}

static int open_fds(struct filestore *fs, const struct kvr_store_opts *o)
{
	kvr_engine *e = fs->s.t.e;
	int flags = O_RDWR | O_CLOEXEC;

	fs->fd = open(fs->path, flags | O_DIRECT);
	if (fs->fd < 0 && errno == ENOENT && !(o->flags & KVR_STORE_NO_CREATE)) {
		fs->fd = open(fs->path, flags | O_DIRECT | O_CREAT | O_EXCL, 0644);
		/* O_EXCL makes the file ours, also when O_DIRECT is then refused:
		 * the kernel checks O_DIRECT (EINVAL) only after the create. */
		fs->created = fs->fd >= 0 || errno == EINVAL;
	}
	if (fs->fd < 0 && errno == EINVAL) {
		/* No O_DIRECT on this file system: the page cache does it all. */
		fs->direct = false;
		fs->fd =
		    open(fs->path, flags | ((o->flags & KVR_STORE_NO_CREATE) ? 0 : O_CREAT), 0644);
		kvr_log(e, KVR_LOG_WARN, "%s: no O_DIRECT here; using buffered I/O", fs->path);
	}
	if (fs->fd < 0) {
		int err = errno;

		kvr_set_errmsg(e, "%s: %s", fs->path, strerror(err));
		return -err;
	}
	fs->fd_buf = open(fs->path, flags);
	if (fs->fd_buf < 0)
		return -errno;
	/* The fallback descriptor must never read ahead: a read-ahead page of a
	 * neighbouring object, cached while that object's blocks are written
	 * direct, makes the kernel's page-cache invalidation fail (and then
	 * report -EIO on the file). */
	posix_fadvise(fs->fd_buf, 0, 0, POSIX_FADV_RANDOM);
	return lock_store(fs);
}

static void probe_align(struct filestore *fs)
{
	struct statx stx;

	fs->mem_align = FS_BLOCK;
#ifdef STATX_DIOALIGN
	if (statx(fs->fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &stx) == 0 &&
	    (stx.stx_mask & STATX_DIOALIGN) && stx.stx_dio_mem_align && stx.stx_dio_offset_align &&
	    stx.stx_dio_offset_align <= FS_BLOCK)
		fs->mem_align = stx.stx_dio_mem_align;
#else
	(void)stx;
#endif
}

/* A superblock whose crc is right can still name a layout no format wrote
 * (a bug elsewhere, or a file made to look like a store), and everything
 * after open places its reads and writes by it: the active half must be
 * one of two, the log must lie between the superblocks and the data area,
 * the data area inside the file (each bound written so that no sum can
 * wrap), and the generations must leave room to count, or the copy written
 * next (gen + 1 wrapping to 0) would lose to the stale one. The active log
 * is one of those handed out. */
static bool super_fits(const struct fs_super *sb, uint64_t size)
{
	bool gens = sb->version == FS_VERSION
			? sb->log_gen <= sb->log_gen_max && sb->log_gen_max <= FS_SEQ_MAX
			: sb->version == FS_VERSION_1 && sb->log_gen < FS_SEQ_MAX;

	return gens && sb->unit == FS_BLOCK && sb->active <= 1 && sb->gen <= FS_SEQ_MAX &&
	       sb->log_half >= 8 * MIB && sb->log_half <= 1024 * MIB &&
	       sb->log_half % FS_BLOCK == 0 && sb->log_off >= FS_SUPER_SIZE &&
	       sb->log_off % FS_BLOCK == 0 && sb->data_off % FS_BLOCK == 0 &&
	       sb->data_off <= size && sb->log_off <= sb->data_off &&
	       2 * sb->log_half <= sb->data_off - sb->log_off && sb->capacity >= FS_BLOCK &&
	       sb->capacity <= size - sb->data_off;
}

static int open_store(struct filestore *fs, const struct kvr_store_opts *o)
{
	kvr_engine *e = fs->s.t.e;
	struct stat st;
	bool fresh;
	uint64_t size;
	int rc = open_fds(fs, o);

	if (rc)
		return rc;
	if (fstat(fs->fd, &st))
		return -errno;
	fs->blkdev = S_ISBLK(st.st_mode);
	if (!fs->blkdev && !S_ISREG(st.st_mode)) {
		kvr_set_errmsg(e, "%s: not a regular file or block device", fs->path);
		return -EINVAL;
	}
	size = fs->orig_size = (uint64_t)st.st_size;
	if (fs->blkdev && ioctl(fs->fd, BLKGETSIZE64, &size))
		return -errno;
	probe_align(fs);
	if (posix_memalign((void **)&fs->sbuf, FS_BLOCK, FS_BLOCK))
		return -ENOMEM;
	rc = (o->flags & KVR_STORE_TRUNCATE) ? 0 : super_read(fs, size);
	if (rc < 0 && rc != -EUCLEAN)
		return rc;
	fresh = rc == 0;
	/* With NO_CREATE the file was never created here: an empty one is not
	 * formatted either. */
	if (rc == -EUCLEAN ||
	    (fresh && (o->flags & KVR_STORE_NO_CREATE) && !(o->flags & KVR_STORE_TRUNCATE))) {
		kvr_set_errmsg(e,
			       "%s holds no kvring store (open with KVR_STORE_TRUNCATE to format)",
			       fs->path);
		return -EUCLEAN;
	}
	if (!fresh && !super_fits(&fs->sb, size)) {
		kvr_set_errmsg(e, "%s: store version %u or geometry not supported", fs->path,
			       fs->sb.version);
		return -EUCLEAN;
	}
	if (!fresh && fs->sb.version == FS_VERSION_1) {
		/* Its compactions took log_gen + 1: no block carries more. The
		 * next superblock written makes it a version 2 store. */
		fs->sb.log_gen_max = fs->sb.log_gen + 1;
		fs->sb.version = FS_VERSION;
	}
	fs->formatted = fresh;
	if (fresh && (rc = format(fs, size, o->capacity)) != 0)
		return rc;
	return 0;
}

int kvr_filestore_open(kvr_engine *e, const char *path, const struct kvr_store_opts *o,
		       kvr_target **out)
{
	struct filestore *fs = calloc(1, sizeof(*fs));
	uint64_t t0 = kvr_now_ns();
	int rc;

	if (!fs)
		return -ENOMEM;
	fs->fd = fs->fd_buf = fs->slot_direct = fs->slot_buf = -1;
	fs->direct = true;
	fs->s.t.e = e;
	fs->path = strdup(path);
	if (!fs->path) {
		free(fs);
		return -ENOMEM;
	}
	rc = open_store(fs, o);
	if (!rc)
		rc = kvr_store_init(&fs->s, e, &fs_ops, o, fs->sb.capacity, fs->sb.unit);
	if (rc) {
		if (fs->formatted)
			unformat(fs);
		fs_release(fs);
		free(fs);
		return rc;
	}
	rc = fs_log_init(fs, e->max_objects);
	if (!rc && !fs->formatted)
		rc = fs_log_replay(fs);
	/* After a crash, move to a fresh log generation at once so blocks the
	 * crash left beyond the replayed end can never be read as valid. After
	 * a clean close, mark the store open, handing out the generation the
	 * next compaction takes in the same write. */
	if (!rc && !fs->sb.clean)
		rc = fs_log_compact(fs, false);
	else if (!rc) {
		fs->sb.clean = 0;
		rc = fs_gen_reserve(fs);
	}
	if (rc) {
		kvr_target_forget(&fs->s.t);
		kvr_store_fini(&fs->s);
		if (fs->formatted)
			unformat(fs);
		fs_release(fs);
		free(fs);
		return rc;
	}
	fs->slot_direct = kvr_file_slot(e, fs->fd);
	fs->slot_buf = kvr_file_slot(e, fs->fd_buf);
	kvr_flush_add(e, &fs->log.flush);
	kvr_log(e, KVR_LOG_INFO, "%s: %llu objects, %llu of %llu bytes used, opened in %.1f ms",
		fs->path, (unsigned long long)fs->s.ix.count, (unsigned long long)fs->s.al.used,
		(unsigned long long)fs->sb.capacity, (double)(kvr_now_ns() - t0) / 1e6);
	*out = &fs->s.t;
	return 0;
}
