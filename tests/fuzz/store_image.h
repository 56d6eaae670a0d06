/* SPDX-License-Identifier: MIT */
/*
 * The compact form of a file-store file that fuzz_filestore reads and the
 * seed writer produces. A real store file is at least 17 MiB (two log
 * halves of 8 MiB), almost all of it holes; the image keeps only what open
 * reads:
 *   [0, 8K)          both superblock copies, as on disk (zero-padded when
 *                    the image is shorter)
 *   [8K, 8K+4K*n)    n log blocks, laid at the start of the active half the
 *                    winning superblock names
 *   a partial block  its first byte, if any, is the control byte below
 * The harness makes every crc32c right (unless the control byte says to
 * keep one as it is), so mutations reach the parsers behind the checksums.
 */
#ifndef KVR_STORE_IMAGE_H
#define KVR_STORE_IMAGE_H

#include "transport/filestore.h"

enum {
	IMG_KEEP_CRC_A = 1u << 0,    /* superblock copy A's crc as given */
	IMG_KEEP_CRC_B = 1u << 1,    /* copy B's */
	IMG_KEEP_CRC_LAST = 1u << 2, /* the last log block's (a torn tail) */
	IMG_SIZE_SHIFT = 3,	     /* 2 bits: file size = what the superblock
					needs, a block less, a block more, or
					only the superblocks */
};

/* Fill in the crc32c of a superblock copy or a log block (4 KiB each). */
void img_seal_super(uint8_t *blk);
void img_seal_log(uint8_t *blk);

/* The superblock copy open picks from the 8 KiB superblock area: the valid
 * one (magic and crc) with the higher generation, A on a tie. False when
 * neither is valid. */
bool img_pick_super(const uint8_t *area, struct fs_super *out);

/* Byte offset of the active log half, false when it does not fit 64 bits. */
bool img_log_base(const struct fs_super *sb, uint64_t *out);

#endif
