/* SPDX-License-Identifier: MIT */
/*
 * The file store's metadata log: group commit of object headers (one block
 * write carries every record of a loop round), replay at open, and snapshot
 * compaction. Format and invariants: filestore.h.
 */
#include "transport/filestore.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Replay reads the log in chunks that start small and double up to the
 * largest: the log of a store just closed is a few blocks, and reading (and
 * faulting in the buffer for) a whole megabyte of it to find them would
 * make every open of a small store pay for a large one. */
#define REPLAY_FIRST (64u << 10)
#define REPLAY_CHUNK (1u << 20)

static uint8_t *blk_at(struct fs_log *l, uint64_t seq)
{
	return l->ring + (seq % l->nblk) * FS_BLOCK;
}

static void blk_reset(uint8_t *b)
{
	memset(b, 0, sizeof(struct fs_logblk));
}

static void blk_seal(struct filestore *fs, uint8_t *b, uint64_t log_gen, uint64_t pos)
{
	struct fs_logblk *h = (struct fs_logblk *)b;

	h->magic = FS_LOG_MAGIC;
	h->uuid = fs->sb.uuid;
	h->log_gen = log_gen;
	h->pos = pos;
	h->crc = 0;
	memset(b + sizeof(*h) + h->used, 0, FS_BLK_ROOM - h->used);
	h->crc = kvr_crc32c(0, b, FS_BLOCK);
}

static bool blk_valid(struct filestore *fs, uint8_t *b, uint64_t pos)
{
	struct fs_logblk *h = (struct fs_logblk *)b;
	uint32_t crc = h->crc;
	bool ok;

	if (h->magic != FS_LOG_MAGIC || h->uuid != fs->sb.uuid || h->log_gen != fs->sb.log_gen ||
	    h->pos != pos || h->used > FS_BLK_ROOM)
		return false;
	h->crc = 0;
	ok = kvr_crc32c(0, b, FS_BLOCK) == crc;
	h->crc = crc;
	return ok;
}

int fs_super_write(struct filestore *fs)
{
	struct fs_super *sb = (struct fs_super *)fs->sbuf;
	uint64_t gen = fs->sb.gen + 1;

	memset(fs->sbuf, 0, FS_BLOCK);
	*sb = fs->sb;
	sb->gen = gen;
	sb->crc = 0;
	sb->crc = kvr_crc32c(0, fs->sbuf, FS_BLOCK);
	if (pwrite(fs->fd, fs->sbuf, FS_BLOCK, (off_t)((gen % 2) * FS_BLOCK)) != FS_BLOCK)
		return -EIO;
	if (fdatasync(fs->fd))
		return -errno;
	fs->sb.gen = gen;
	return 0;
}

int fs_gen_reserve(struct filestore *fs)
{
	int rc;

	fs->sb.log_gen_max++;
	rc = fs_super_write(fs);
	fs->gen_spare = rc == 0;
	return rc;
}

/* Pack one record for r into the block being filled. False when the ring
 * has no free block (the caller stalls r). */
static bool try_append(struct filestore *fs, struct kvr_req *r)
{
	struct fs_log *l = &fs->log;
	struct fs_req *fr = fs_req(r);
	const struct kvr_objd *o = r->o;
	size_t sz = FS_REC_SIZE(o->key_len);
	struct fs_logblk *h = (struct fs_logblk *)blk_at(l, l->cseq);
	struct fs_rec *rec;

	if (h->used + sz > FS_BLK_ROOM) {
		if (l->cseq + 1 - l->wseq >= l->nblk)
			return false;
		l->cseq++;
		h = (struct fs_logblk *)blk_at(l, l->cseq);
		blk_reset((uint8_t *)h);
	}
	rec = (struct fs_rec *)((uint8_t *)(h + 1) + h->used);
	memset(rec, 0, sz);
	rec->type = fr->rec_type;
	rec->key_len = o->key_len;
	memcpy(rec->key, o->key, o->key_len);
	if (fr->rec_type == FS_REC_PUT) {
		rec->crc = fr->en->crc;
		rec->off = fr->en->off;
		rec->len = fr->en->len;
		rec->seq = fr->en->seq;
	}
	h->used += (uint16_t)sz;
	h->nrec++;
	fr->commit_seq = l->cseq;
	r->next = NULL;
	if (l->wait_tail)
		l->wait_tail->next = r;
	else
		l->wait_head = r;
	l->wait_tail = r;
	return true;
}

void fs_log_append(struct filestore *fs, struct kvr_req *r)
{
	struct fs_log *l = &fs->log;

	if (l->broken) {
		fs_log_committed(fs, r, l->broken);
		return;
	}
	if (!l->stall_head && try_append(fs, r))
		return;
	r->next = NULL;
	if (l->stall_tail)
		l->stall_tail->next = r;
	else
		l->stall_head = r;
	l->stall_tail = r;
}

static void retry_stalled(struct filestore *fs)
{
	struct fs_log *l = &fs->log;

	while (l->stall_head) {
		struct kvr_req *r = l->stall_head, *next = r->next;

		if (l->broken) {
			l->stall_head = next;
			fs_log_committed(fs, r, l->broken);
			continue;
		}
		if (!try_append(fs, r))
			break;
		l->stall_head = next;
	}
	if (!l->stall_head)
		l->stall_tail = NULL;
}

static void fail_all(struct filestore *fs, int err)
{
	struct fs_log *l = &fs->log;
	struct kvr_req *r = l->wait_head;

	l->broken = err;
	l->wait_head = l->wait_tail = NULL;
	while (r) {
		struct kvr_req *next = r->next;

		fs_log_committed(fs, r, err);
		r = next;
	}
	retry_stalled(fs);
}

static void log_write_done(struct kvr_io *io, int res, uint32_t flags)
{
	struct fs_log *l = KVR_CONTAINER_OF(io, struct fs_log, io);
	struct filestore *fs = KVR_CONTAINER_OF(l, struct filestore, log);
	uint64_t want = (l->inflight_end - l->wseq) * FS_BLOCK;

	l->inflight = false;
	if (res < 0 || (uint64_t)res != want) {
		kvr_log(fs->s.t.e, KVR_LOG_ERROR, "%s: metadata log write failed (%d)", fs->path,
			res);
		fail_all(fs, res < 0 ? res : -EIO);
		return;
	}
	l->wseq = l->inflight_end;
	while (l->wait_head && fs_req(l->wait_head)->commit_seq < l->wseq) {
		struct kvr_req *r = l->wait_head;

		l->wait_head = r->next;
		if (!l->wait_head)
			l->wait_tail = NULL;
		fs_log_committed(fs, r, 0);
	}
	retry_stalled(fs);
}

/* The loop's per-round hook: write every block filled since the last write. */
static void log_flush(struct kvr_flush *f)
{
	struct fs_log *l = KVR_CONTAINER_OF(f, struct fs_log, flush);
	struct filestore *fs = KVR_CONTAINER_OF(l, struct filestore, log);
	struct fs_logblk *cur = (struct fs_logblk *)blk_at(l, l->cseq);
	uint64_t end = l->cseq + (cur->nrec ? 1 : 0);
	struct io_uring_sqe *sqe;

	if (l->inflight || l->broken || end == l->wseq)
		return;
	if (end - l->half_base > l->half_blocks) {
		int rc = fs_log_compact(fs, false);

		if (rc) {
			fail_all(fs, rc);
			return;
		}
	}
	/* One contiguous write: stop at the ring's wrap point. */
	if (l->wseq % l->nblk + (end - l->wseq) > l->nblk)
		end = l->wseq + (l->nblk - l->wseq % l->nblk);
	for (uint64_t s = l->wseq; s < end; s++)
		blk_seal(fs, blk_at(l, s), fs->sb.log_gen, s - l->half_base);
	sqe = kvr_sqe(fs->s.t.e);
	io_uring_prep_write(sqe, fs->fd, blk_at(l, l->wseq), (unsigned)((end - l->wseq) * FS_BLOCK),
			    fs->sb.log_off + fs->sb.active * fs->sb.log_half +
				(l->wseq - l->half_base) * FS_BLOCK);
	if (fs->s.flags & KVR_STORE_DSYNC)
		sqe->rw_flags = RWF_DSYNC;
	io_uring_sqe_set_data(sqe, &l->io);
	l->inflight = true;
	l->inflight_end = end;
	if (end > l->cseq) {
		l->cseq = end;
		blk_reset(blk_at(l, l->cseq));
	}
}

int fs_log_init(struct filestore *fs, uint32_t max_objects)
{
	struct fs_log *l = &fs->log;
	uint64_t want = (uint64_t)max_objects * FS_REC_SIZE(KVR_MAX_KEY) / FS_BLK_ROOM + 8;

	l->half_blocks = fs->sb.log_half / FS_BLOCK;
	l->nblk = (uint32_t)(want < l->half_blocks / 4 ? want : l->half_blocks / 4);
	if (l->nblk < 4)
		return -EINVAL;
	if (posix_memalign((void **)&l->ring, FS_BLOCK, (size_t)l->nblk * FS_BLOCK))
		return -ENOMEM;
	memset(l->ring, 0, (size_t)l->nblk * FS_BLOCK);
	l->io.fn = log_write_done;
	l->flush.fn = log_flush;
	return 0;
}

void fs_log_fini(struct filestore *fs)
{
	free(fs->log.ring);
	fs->log.ring = NULL;
}

/* ----------------------------------------------------------- compaction */

static int write_all(int fd, const uint8_t *buf, size_t len, uint64_t off)
{
	while (len) {
		ssize_t n = pwrite(fd, buf, len, (off_t)off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		buf += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

int fs_log_compact(struct filestore *fs, bool clean)
{
	struct fs_log *l = &fs->log;
	struct kvr_store *s = &fs->s;
	/* Every block holds at least this many record bytes, whatever the keys. */
	const uint64_t per_blk = FS_BLK_ROOM - FS_REC_SIZE(KVR_MAX_KEY);
	uint64_t budget = l->half_blocks / 2 * per_blk, need = 0, k = 0, pos = 0, new_gen;
	uint32_t half = 1 - fs->sb.active;
	struct kvr_entry *en, *last = NULL;
	struct fs_logblk *h = NULL;
	uint8_t *buf;
	int rc;

	/* A generation no block carries, on disk as handed out before the
	 * snapshot carries it (filestore.h). */
	if (!fs->gen_spare && (rc = fs_gen_reserve(fs)) != 0)
		return rc;
	new_gen = fs->sb.log_gen_max;
	fs->gen_spare = false;
	/* Keep the most recent objects that fit in half a half; older ones are
	 * evicted (a store of many tiny objects with long keys). */
	for (en = s->ix.lru_head; en; en = en->lru_next) {
		need += FS_REC_SIZE(en->key_len);
		if (need > budget)
			break;
		last = en;
	}
	while (en) {
		struct kvr_entry *older = en->lru_next;

		kvr_index_unlink(&s->ix, en);
		s->t.stats.evictions++;
		kvr_store_unref(s, en);
		en = older;
	}
	k = need / per_blk + 2;
	if (posix_memalign((void **)&buf, FS_BLOCK, k * FS_BLOCK))
		return -ENOMEM;
	memset(buf, 0, k * FS_BLOCK);
	h = (struct fs_logblk *)buf;
	for (en = last; en; en = en->lru_prev) {
		size_t sz = FS_REC_SIZE(en->key_len);
		struct fs_rec *rec;

		if (h->used + sz > FS_BLK_ROOM) {
			blk_seal(fs, (uint8_t *)h, new_gen, pos);
			h = (struct fs_logblk *)(buf + ++pos * FS_BLOCK);
		}
		rec = (struct fs_rec *)((uint8_t *)(h + 1) + h->used);
		rec->type = FS_REC_PUT;
		rec->key_len = en->key_len;
		rec->crc = en->crc;
		rec->off = en->off;
		rec->len = en->len;
		rec->seq = en->seq;
		memcpy(rec->key, en->key, en->key_len);
		h->used += (uint16_t)sz;
		h->nrec++;
	}
	k = h->nrec ? pos + 1 : pos;
	if (h->nrec)
		blk_seal(fs, (uint8_t *)h, new_gen, pos);
	rc = write_all(fs->fd, buf, k * FS_BLOCK, fs->sb.log_off + half * fs->sb.log_half);
	free(buf);
	if (rc == 0 && (rc = fdatasync(fs->fd) ? -errno : 0) == 0) {
		struct fs_super old = fs->sb;

		if (fs->pre_switch)
			fs->pre_switch(fs);
		fs->sb.active = half;
		fs->sb.log_gen = new_gen;
		fs->sb.log_gen_max = new_gen + 1; /* for the next compaction */
		fs->sb.clean = clean;
		rc = fs_super_write(fs);
		if (rc) {
			fs->sb = old;
			return rc;
		}
		fs->gen_spare = true;
	}
	if (rc)
		return rc;
	/* Blocks not yet written follow the snapshot in the new half. */
	l->half_base = l->wseq - k;
	return 0;
}

/* ---------------------------------------------------------------- replay */

/* False for a record no store could have written (the caller counts it and
 * goes on: like a record cut short, it is dropped, not fatal). */
static bool replay_rec(struct filestore *fs, const struct fs_rec *rec)
{
	struct kvr_store *s = &fs->s;
	uint64_t hash = kvr_key_hash(rec->key, rec->key_len);
	struct kvr_entry *en, *old;

	if (rec->type == FS_REC_DEL) {
		en = kvr_index_find(&s->ix, rec->key, rec->key_len, hash);
		if (en) {
			kvr_index_unlink(&s->ix, en);
			kvr_entry_recycle(&s->ix, en);
		}
		return true;
	}
	/* Written as `len > cap - off`: `off + len` can wrap past 2^64 and
	 * pass, leaving an entry whose rounded length is 0, i.e. no space. A
	 * sequence number past FS_SEQ_MAX would let ++seq wrap, and the next
	 * put would then lose "newer wins" to every older object. */
	if (rec->type != FS_REC_PUT || !rec->len || rec->off % s->al.unit ||
	    rec->off > s->al.capacity || rec->len > s->al.capacity - rec->off ||
	    rec->seq > FS_SEQ_MAX)
		return false;
	en = kvr_entry_alloc(&s->ix, rec->key, rec->key_len, hash);
	if (!en)
		return true; /* out of memory, not corruption: the object is lost */
	en->off = rec->off;
	en->len = rec->len;
	en->alloc_len = kvr_alloc_round(&s->al, rec->len);
	en->crc = rec->crc;
	en->seq = rec->seq;
	if (rec->seq > s->seq)
		s->seq = rec->seq;
	old = kvr_index_insert(&s->ix, en);
	if (old)
		kvr_entry_recycle(&s->ix, old);
	return true;
}

static int cmp_seq_desc(const void *a, const void *b)
{
	const struct kvr_entry *x = *(struct kvr_entry *const *)a;
	const struct kvr_entry *y = *(struct kvr_entry *const *)b;

	return x->seq < y->seq ? 1 : x->seq > y->seq ? -1 : 0;
}

/* Give every surviving object its extent. Two live objects can claim the
 * same space only when the older one's space was reused after it was
 * evicted or replaced: the newer claim wins. */
static int reserve_extents(struct filestore *fs)
{
	struct kvr_store *s = &fs->s;
	uint64_t n = s->ix.count, i = 0, dropped = 0;
	struct kvr_entry **v = malloc((n ? n : 1) * sizeof(*v));

	if (!v)
		return -ENOMEM;
	for (struct kvr_entry *en = s->ix.lru_head; en; en = en->lru_next)
		v[i++] = en;
	qsort(v, n, sizeof(*v), cmp_seq_desc);
	for (i = 0; i < n; i++) {
		if (kvr_alloc_reserve(&s->al, v[i]->off, v[i]->alloc_len)) {
			kvr_index_unlink(&s->ix, v[i]);
			kvr_entry_recycle(&s->ix, v[i]);
			dropped++;
		}
	}
	free(v);
	if (dropped)
		kvr_log(s->t.e, KVR_LOG_INFO, "%s: %llu superseded objects dropped at open",
			fs->path, (unsigned long long)dropped);
	return 0;
}

int fs_log_replay(struct filestore *fs)
{
	struct fs_log *l = &fs->log;
	uint64_t base = fs->sb.log_off + fs->sb.active * fs->sb.log_half, pos = 0, bad = 0;
	uint64_t chunk = REPLAY_FIRST;
	uint8_t *buf;
	bool end = false;
	int rc = 0;

	if (posix_memalign((void **)&buf, FS_BLOCK, REPLAY_CHUNK))
		return -ENOMEM;
	while (!end && pos < l->half_blocks) {
		uint64_t nb = chunk / FS_BLOCK;
		ssize_t got;

		if (chunk < REPLAY_CHUNK)
			chunk *= 2;

		if (nb > l->half_blocks - pos)
			nb = l->half_blocks - pos;
		got = pread(fs->fd, buf, nb * FS_BLOCK, (off_t)(base + pos * FS_BLOCK));
		if (got < 0) {
			rc = -errno;
			break;
		}
		nb = (uint64_t)got / FS_BLOCK;
		if (!nb)
			break;
		for (uint64_t i = 0; i < nb; i++, pos++) {
			uint8_t *b = buf + i * FS_BLOCK;
			struct fs_logblk *h = (struct fs_logblk *)b;
			uint32_t off = 0;

			if (!blk_valid(fs, b, pos)) {
				end = true;
				break;
			}
			for (uint16_t r = 0; r < h->nrec; r++) {
				const struct fs_rec *rec =
				    (const struct fs_rec *)(b + sizeof(*h) + off);

				if (off + sizeof(*rec) > h->used ||
				    off + FS_REC_SIZE(rec->key_len) > h->used || !rec->key_len ||
				    rec->key_len > KVR_MAX_KEY) {
					bad++; /* the rest of the block is unreadable */
					break;
				}
				if (!replay_rec(fs, rec))
					bad++;
				off += (uint32_t)FS_REC_SIZE(rec->key_len);
			}
		}
	}
	free(buf);
	if (rc)
		return rc;
	if (bad)
		kvr_log(fs->s.t.e, KVR_LOG_WARN, "%s: %llu corrupt log records dropped at open",
			fs->path, (unsigned long long)bad);
	l->wseq = l->cseq = pos;
	l->half_base = 0;
	blk_reset(blk_at(l, l->cseq));
	return reserve_extents(fs);
}
