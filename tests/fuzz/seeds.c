/* SPDX-License-Identifier: MIT */
/*
 * Writes the harnesses' seed corpus (tests/fuzz/corpus/NAME/) with the
 * library's own encoders: valid frames of every opcode, HELLOs with and
 * without auth and RDMA blocks, RDMA requests and answers; and images
 * (store_image.h) of file stores the library wrote. Run from the top of
 * the tree after tests/fuzz/run.sh has built build-fuzz:
 *   build-fuzz/tests/fuzz/fuzz_seeds [DIR]   (DIR: tests/fuzz/corpus)
 * and its output committed (the store images change at every run: each
 * store gets a random uuid).
 */
#include "store_image.h"
#include "transport/proto.h"
#include "transport/rdma_msg.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static void put(const char *dir, const char *name, const void *buf, size_t len)
{
	char path[512];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "wb");
	if (!f || fwrite(buf, 1, len, f) != len) {
		perror(path);
		return;
	}
	fclose(f);
}

/* ---------------------------------------------------- file-store images */

#define SEED_ARENA (1u << 20)
#define SEED_LOG   64 /* log blocks kept in an image, at most */
#define SEED_OBJS  160

struct seed_store {
	kvr_engine *e;
	kvr_target *t;
	uint8_t *buf;
	char path[128];
};

static void seed_done(void *ctx, size_t n, const int64_t *results)
{
	(void)n;
	(void)results;
	*(int *)ctx = 1;
}

/* One batch: one loop round, so its records share log blocks. */
static int seed_batch(struct seed_store *st, enum kvr_op op, const kvr_obj *objs, size_t n)
{
	int done = 0;

	if (!n)
		return 0;
	if (kvr_submit(st->t, op, objs, n, 0, seed_done, &done))
		return -1;
	while (!done)
		if (kvr_engine_poll(st->e, 100) < 0)
			return -1;
	return 0;
}

/* The image of the store file as it is now: its superblocks and the valid
 * blocks at the start of its active half. */
static void put_image(const char *dir, const char *name, const char *path)
{
	uint8_t *img = calloc(FS_SUPER_SIZE + SEED_LOG * FS_BLOCK, 1);
	struct fs_super sb;
	uint64_t base;
	size_t n = 0;
	int fd = open(path, O_RDONLY);

	if (!img || fd < 0 || pread(fd, img, FS_SUPER_SIZE, 0) != FS_SUPER_SIZE ||
	    !img_pick_super(img, &sb) || !img_log_base(&sb, &base)) {
		fprintf(stderr, "%s: no store to take an image of\n", path);
		exit(1);
	}
	for (; n < SEED_LOG; n++) {
		uint8_t *b = img + FS_SUPER_SIZE + n * FS_BLOCK;
		struct fs_logblk h;

		if (pread(fd, b, FS_BLOCK, (off_t)(base + n * FS_BLOCK)) != FS_BLOCK)
			break;
		memcpy(&h, b, sizeof(h));
		if (h.magic != FS_LOG_MAGIC || h.uuid != sb.uuid || h.log_gen != sb.log_gen ||
		    h.pos != n) {
			memset(b, 0, FS_BLOCK);
			break;
		}
	}
	close(fd);
	put(dir, name, img, FS_SUPER_SIZE + n * FS_BLOCK);
	free(img);
}

/* One store: nput objects (key lengths from klen up, sizes cycling up to
 * 3 blocks and a bit) put in one batch, then every `every`-th one replaced
 * and the one after it removed; imaged while open (PUT and DEL records, as
 * a crash leaves them) and after a clean close (a snapshot). */
static void seed_store(struct seed_store *st, const char *dir, const char *name, int nput,
		       size_t klen, int every)
{
	static const size_t sizes[] = {100, 4096, 5000, 12288 + 17, 1};
	struct kvr_store_opts so = {
	    .size = sizeof(so), .flags = KVR_STORE_TRUNCATE, .capacity = 2u << 20};
	static char keys[SEED_OBJS][KVR_MAX_KEY + 1];
	kvr_obj puts[SEED_OBJS], reps[SEED_OBJS], dels[SEED_OBJS];
	kvr_sge sge[5];
	size_t nrep = 0, ndel = 0;
	char uri[160], img[64];

	snprintf(uri, sizeof(uri), "file:%s", st->path);
	if (nput > SEED_OBJS || kvr_store_open(st->e, uri, &so, &st->t)) {
		fprintf(stderr, "%s: cannot create a store\n", st->path);
		exit(1);
	}
	for (int i = 0; i < 5; i++)
		sge[i] = (kvr_sge){st->buf, sizes[i]};
	memset(st->buf, 0x5a, SEED_ARENA);
	for (int i = 0; i < nput; i++) {
		char *key = keys[i];
		int p = snprintf(key, KVR_MAX_KEY + 1, "k%d-", i);
		size_t kl = klen + (size_t)i % 7;

		kl = kl > KVR_MAX_KEY ? KVR_MAX_KEY : kl < (size_t)p ? (size_t)p : kl;
		memset(key + p, 'a' + i % 26, kl - (size_t)p);
		key[kl] = '\0';
		puts[i] = (kvr_obj){key, kl, &sge[i % 5], 1};
		if (every && i % every == every - 1)
			reps[nrep++] = (kvr_obj){key, kl, &sge[(i + 1) % 5], 1};
		if (every && i % every == 0 && i)
			dels[ndel++] = (kvr_obj){key, kl, NULL, 0};
	}
	if (seed_batch(st, KVR_OP_PUT, puts, (size_t)nput) ||
	    seed_batch(st, KVR_OP_PUT, reps, nrep) || seed_batch(st, KVR_OP_REMOVE, dels, ndel))
		exit(1);
	snprintf(img, sizeof(img), "%s-open", name);
	put_image(dir, img, st->path);
	kvr_target_close(st->t);
	snprintf(img, sizeof(img), "%s-closed", name);
	put_image(dir, img, st->path);
}

static void store_seeds(const char *root)
{
	struct seed_store st = {0};
	char dir[400];
	kvr_mr *mr;

	snprintf(dir, sizeof(dir), "%s/fuzz_filestore", root);
	snprintf(st.path, sizeof(st.path), "/tmp/kvr-seed-store.%d", (int)getpid());
	st.buf = mmap(NULL, SEED_ARENA, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (st.buf == MAP_FAILED || kvr_engine_create(NULL, &st.e) ||
	    kvr_mem_register(st.e, st.buf, SEED_ARENA, 0, &mr)) {
		fprintf(stderr, "fuzz_seeds: no engine for the store images\n");
		exit(1);
	}
	seed_store(&st, dir, "empty", 0, 1, 0);
	seed_store(&st, dir, "small", 8, 1, 3);
	seed_store(&st, dir, "many", 150, 100, 5);
	seed_store(&st, dir, "longkeys", 12, KVR_MAX_KEY - 6, 4);
	kvr_engine_destroy(st.e);
	unlink(st.path);
	munmap(st.buf, SEED_ARENA);
}

int main(int argc, char **argv)
{
	const char *root = argc > 1 ? argv[1] : "tests/fuzz/corpus";
	char dir[400], name[64];
	uint8_t buf[8192];

	snprintf(dir, sizeof(dir), "%s/fuzz_frame", root);
	for (uint8_t op = KVR_PROTO_OP_HELLO; op <= KVR_PROTO_OP_STATS; op++) {
		for (int resp = 0; resp < 2; resp++) {
			struct kvr_frame f = {
			    .opcode = op,
			    .flags = resp ? KVR_PROTO_F_RESPONSE : 0,
			    .id = 7u + op,
			    .status = resp && op == KVR_PROTO_OP_GET ? -2 : 0,
			    .key_len = resp || op == KVR_PROTO_OP_HELLO || op == KVR_PROTO_OP_STATS
					   ? 0
					   : 5,
			    .payload_len = op == KVR_PROTO_OP_PUT && !resp ? 4096 : 0};

			kvr_proto_encode(buf, &f);
			snprintf(name, sizeof(name), "op%u%s", op, resp ? "-resp" : "");
			put(dir, name, buf, KVR_PROTO_HDR_LEN);
		}
	}
	snprintf(dir, sizeof(dir), "%s/fuzz_hello", root);
	for (int v = 0; v < 3; v++) {
		struct kvr_hello h = {.version_min = 1, .version_max = 1, .shards = 4};
		int n;

		if (v >= 1) {
			h.features = KVR_PROTO_FEAT_AUTH;
			h.auth_len = KVR_PROTO_NONCE_LEN;
			memset(h.auth, 0x5a, h.auth_len);
		}
		if (v == 2)
			h.features |= KVR_PROTO_FEAT_CRC;
		n = kvr_proto_hello_encode(buf, sizeof(buf), &h);
		snprintf(name, sizeof(name), "hello%d", v);
		if (n > 0)
			put(dir, name, buf, (size_t)n);
	}
	snprintf(dir, sizeof(dir), "%s/fuzz_rmsg", root);
	{
		struct kvr_rdesc d[3] = {{0x10000, 7, 4096}, {0x20000, 7, 4096}, {0x30000, 7, 100}};
		struct kvr_rmsg m = {.opcode = KVR_PROTO_OP_PUT,
				     .id = 3,
				     .key_len = 4,
				     .ndesc = 3,
				     .payload_len = 8292,
				     .key = (const uint8_t *)"key1"};
		int n = kvr_rmsg_encode(buf, sizeof(buf), &m, d, NULL);

		if (n > 0)
			put(dir, "put3", buf, (size_t)n);
		m.opcode = KVR_PROTO_OP_GET;
		n = kvr_rmsg_encode(buf, sizeof(buf), &m, d, NULL);
		if (n > 0)
			put(dir, "get3", buf, (size_t)n);
		m = (struct kvr_rmsg){.opcode = KVR_PROTO_OP_PUT,
				      .flags = KVR_RMSG_F_INLINE,
				      .id = 4,
				      .key_len = 4,
				      .payload_len = 16,
				      .key = (const uint8_t *)"key2"};
		n = kvr_rmsg_encode(buf, sizeof(buf), &m, NULL, "0123456789abcdef");
		if (n > 0)
			put(dir, "put-inline", buf, (size_t)n);
		m = (struct kvr_rmsg){.opcode = KVR_PROTO_OP_GET,
				      .flags = KVR_RMSG_F_RESPONSE,
				      .id = 3,
				      .payload_len = 8292};
		n = kvr_rmsg_encode(buf, sizeof(buf), &m, NULL, NULL);
		if (n > 0)
			put(dir, "get-answer", buf, (size_t)n);
	}
	store_seeds(root);
	return 0;
}
