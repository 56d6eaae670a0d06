/* SPDX-License-Identifier: MIT */
/* The compact store-file image of the fuzz harness (store_image.h). */
#include "store_image.h"

#include <string.h>

void img_seal_super(uint8_t *blk)
{
	uint32_t crc = 0;

	memcpy(blk + offsetof(struct fs_super, crc), &crc, sizeof(crc));
	crc = kvr_crc32c(0, blk, FS_BLOCK);
	memcpy(blk + offsetof(struct fs_super, crc), &crc, sizeof(crc));
}

void img_seal_log(uint8_t *blk)
{
	uint32_t crc = 0;

	memcpy(blk + offsetof(struct fs_logblk, crc), &crc, sizeof(crc));
	crc = kvr_crc32c(0, blk, FS_BLOCK);
	memcpy(blk + offsetof(struct fs_logblk, crc), &crc, sizeof(crc));
}

static bool super_valid(const uint8_t *blk, struct fs_super *sb)
{
	uint8_t tmp[FS_BLOCK];

	memcpy(sb, blk, sizeof(*sb));
	if (sb->magic != FS_MAGIC)
		return false;
	memcpy(tmp, blk, FS_BLOCK);
	img_seal_super(tmp);
	return memcmp(tmp, blk, FS_BLOCK) == 0;
}

bool img_pick_super(const uint8_t *area, struct fs_super *out)
{
	bool found = false;

	for (int i = 0; i < 2; i++) {
		struct fs_super sb;

		if (!super_valid(area + i * FS_BLOCK, &sb))
			continue;
		if (!found || sb.gen > out->gen)
			*out = sb;
		found = true;
	}
	return found;
}

bool img_log_base(const struct fs_super *sb, uint64_t *out)
{
	uint64_t half;

	return !__builtin_mul_overflow((uint64_t)sb->active, sb->log_half, &half) &&
	       !__builtin_add_overflow(sb->log_off, half, out);
}
