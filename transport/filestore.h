/* SPDX-License-Identifier: MIT */
/*
 * The file store's on-disk format and internal interface.
 *
 * Layout of the file (or block device), all integers little-endian:
 *   [0, 4K)         superblock copy A \ written alternately; the valid one
 *   [4K, 8K)        superblock copy B / with the higher generation wins
 *   [8K, 8K+2H)     metadata log: two halves of H bytes; one is active
 *   [data_off, +C)  data area: object payloads in 4 KiB-aligned extents
 *
 * Payloads carry no inline header: an object's header (key, length,
 * crc32c of the payload, version) is a record in the metadata log, written
 * only after the payload write completed; a put completes when its record's
 * log block is on disk. Log blocks are written strictly in order, one write
 * in flight, so a restart replays the active half up to the first invalid
 * block and finds exactly the puts that had completed. A get verifies the
 * payload's crc32c, so bytes that were overwritten or torn since are a miss
 * (-EIO), never returned.
 *
 * When the active half fills, and at every clean close, the index is written
 * as a snapshot at the start of the other half (new log generation), and the
 * superblock switches to it.
 *
 * A log generation is never used twice, so that blocks a crash leaves in a
 * half (a snapshot written but never switched to, blocks past the replayed
 * end) can never pass for the log of a later generation in that half, and
 * replay takes only blocks of the superblock's log_gen. The superblock's
 * log_gen_max is the highest generation handed out: no block anywhere
 * carries a higher one, because a generation is recorded there, and synced,
 * before any block carries it. A compaction takes log_gen_max + 1 after
 * writing that superblock, or log_gen_max itself when this process reserved
 * it and has not used it: the superblock that switches to a new log hands
 * out the one after it, and so does the one a clean open writes. A
 * compaction at run time thus costs no superblock write of its own; one
 * after a crash (at open) costs one.
 *
 * Version 1 stores (before log_gen_max) open: their compactions took
 * log_gen + 1, so that is their highest, and the first superblock written
 * makes them version 2. A version 2 store is refused by code that only
 * knows version 1 (it would hand out generations again).
 *
 * That compaction runs synchronously inside the loop round that filled the
 * half: one pwrite of the live index, then two fdatasyncs (snapshot, then
 * superblock), and the engine's loop waits for them. Its size is bounded:
 * the snapshot keeps at most the records that fit in half of a log half
 * (older objects are evicted first), and a half is capacity/64 clamped to
 * 8 MiB..1 GiB, so the write is at most capacity/128 and never over
 * 512 MiB (8 MiB for a 1 GiB store). A half fills only after about
 * half/record-size puts since the last compaction.
 */
#ifndef KVR_FILESTORE_H
#define KVR_FILESTORE_H

#include "transport/store.h"

#define FS_BLOCK      4096u
#define FS_MAGIC      0x3153465256524b31ull /* "1KRVRFS1" */
#define FS_LOG_MAGIC  0x474f4c5256524b31ull
#define FS_VERSION    2
#define FS_VERSION_1  1 /* no log_gen_max: read as log_gen + 1 */
#define FS_SUPER_SIZE (2 * FS_BLOCK)

struct fs_super {
	uint64_t magic;
	uint32_t version;
	uint32_t crc;	   /* crc32c of the block with this field zero */
	uint64_t uuid;	   /* random per store: stale blocks never match */
	uint64_t gen;	   /* superblock generation */
	uint64_t capacity; /* data area bytes */
	uint64_t unit;	   /* allocation unit */
	uint64_t log_off;
	uint64_t log_half; /* bytes per half */
	uint64_t data_off;
	uint64_t log_gen;     /* generation stamped on the active half's blocks */
	uint32_t active;      /* active half, 0 or 1 */
	uint32_t clean;	      /* closed cleanly (informational) */
	uint64_t log_gen_max; /* highest log generation handed out (version 2) */
};

struct fs_logblk {
	uint64_t magic;
	uint64_t uuid;
	uint64_t log_gen;
	uint64_t pos; /* block index inside its half */
	uint32_t crc; /* crc32c of the block with this field zero */
	uint16_t nrec;
	uint16_t used; /* record bytes after the header */
};

enum { FS_REC_PUT = 1, FS_REC_DEL = 2 };

struct fs_rec {
	uint8_t type;
	uint8_t pad;
	uint16_t key_len;
	uint32_t crc;
	uint64_t off;
	uint64_t len;
	uint64_t seq;
	uint8_t key[];
};

_Static_assert(sizeof(struct fs_super) == 96 && sizeof(struct fs_logblk) == 40 &&
		   sizeof(struct fs_rec) == 32,
	       "on-disk structs have no hidden padding");

/* Highest sequence number a log record, or generation (of the superblock or
 * of a log) a superblock, may carry: one per put (or per superblock write)
 * never gets near it, and the headroom keeps ++seq and gen + 1 from
 * wrapping. */
#define FS_SEQ_MAX (UINT64_MAX >> 1)

#define FS_REC_SIZE(klen) ((sizeof(struct fs_rec) + (klen) + 7) & ~(size_t)7)
#define FS_BLK_ROOM	  (FS_BLOCK - sizeof(struct fs_logblk))

/* The metadata log writer. Block `seq` (global, monotonic) lives in ring slot
 * seq % nblk and at position seq - half_base of the active half. */
struct fs_log {
	uint8_t *ring; /* nblk aligned blocks */
	uint32_t nblk;
	uint64_t wseq; /* first block not yet written */
	uint64_t cseq; /* block being filled (>= wseq) */
	uint64_t half_base;
	uint64_t half_blocks;
	bool inflight;
	uint64_t inflight_end;
	int broken; /* first write error: later commits fail with it */
	struct kvr_io io;
	struct kvr_flush flush;
	struct kvr_req *wait_head, *wait_tail;	 /* appended, awaiting commit */
	struct kvr_req *stall_head, *stall_tail; /* could not append yet */
};

struct filestore {
	struct kvr_store s;
	char *path;
	int fd;		 /* O_DIRECT (or buffered when the fs has no O_DIRECT) */
	int fd_buf;	 /* buffered: the unaligned fallback */
	int slot_direct; /* registered file slots, -1 if none */
	int slot_buf;
	bool direct;
	bool formatted; /* this open created the store */
	bool created;	/* ...and the file (unlinked if the open fails) */
	bool blkdev;
	uint64_t orig_size; /* the file's size before this open */
	uint32_t mem_align; /* O_DIRECT memory alignment */
	struct fs_super sb;
	bool gen_spare; /* sb.log_gen_max is on disk and no block carries it */
	uint8_t *sbuf;	/* aligned scratch block for superblock writes */
	struct fs_log log;
	/* Tests only: called by a compaction once its snapshot is durable and
	 * before the superblock names it, where a crash-point test stops the
	 * process; NULL otherwise. */
	void (*pre_switch)(struct filestore *fs);
};

/* Per-object state kept in kvr_req.priv. */
struct fs_req {
	struct kvr_io io;
	struct filestore *fs;
	struct kvr_entry *en;
	uint32_t pending; /* SQEs outstanding */
	int err;
	uint64_t want; /* bytes the SQEs should move */
	uint64_t moved;
	uint64_t commit_seq;
	uint8_t rec_type; /* FS_REC_PUT / FS_REC_DEL waiting for the log */
};

static inline struct fs_req *fs_req(struct kvr_req *r)
{
	return (struct fs_req *)r->priv;
}

/* filelog.c */
int fs_log_init(struct filestore *fs, uint32_t max_objects);
void fs_log_fini(struct filestore *fs);
/* Queue r's record (PUT of fr->en, or DEL of r's key); r completes through
 * fs_log_committed() once the record is durable. */
void fs_log_append(struct filestore *fs, struct kvr_req *r);
/* Called for each request whose record is on disk (res 0) or failed. */
void fs_log_committed(struct filestore *fs, struct kvr_req *r, int res);
int fs_log_replay(struct filestore *fs);
/* Write the index as a snapshot in the other half and switch to it. */
int fs_log_compact(struct filestore *fs, bool clean);
int fs_super_write(struct filestore *fs);
/* Hand out one more log generation (sb.log_gen_max + 1) in a superblock
 * write, kept for the next compaction. */
int fs_gen_reserve(struct filestore *fs);

#endif
