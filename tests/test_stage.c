/* SPDX-License-Identifier: MIT */
/*
 * transport/stage.c: device memory staged through the bounce pool, with a
 * copy engine on a thread standing in for the GPU (fake_devmem.c), so the
 * whole path runs on any machine: puts from and gets into "device" SGLs on
 * the memory store, the file store and a kvring-server over TCP, every
 * byte checked; device and host SGEs mixed in one object and in one batch;
 * a pool smaller than the batch (objects wait for room) and an object
 * larger than the pool (-E2BIG); slow copies past a deadline; a failing
 * copy (-EIO); memory that is not device memory (-EFAULT); pinning; and
 * that copies overlap the I/O. tests/test_cuda.c runs the same on a GPU.
 */
#include "fake_devmem.h"
#include "fixtures.h"
#include "server_proc.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#define DEV  (64ull << 20) /* the fake device's memory */
#define HOST (16ull << 20)
#define MAXN 256

struct fx {
	kvr_engine *e;
	struct fake_dev *dev;
	kvr_mr *dmr, *hmr;
	uint8_t *host;
	kvr_target *t;
	char path[4096];
};

static struct {
	char keys[MAXN][32];
	kvr_obj objs[MAXN];
	kvr_sge sges[MAXN][8];
} B;

static void fx_up(struct fx *f, size_t pool)
{
	memset(f, 0, sizeof(*f));
	f->e = kvt_engine();
	f->dev = fake_dev_attach(f->e, DEV, pool);
	assert_int_equal(kvr_mem_register(f->e, f->dev->arena, DEV, KVR_MEM_CUDA, &f->dmr), 0);
	f->host = kvt_alloc_mem(HOST);
	assert_int_equal(kvr_mem_register(f->e, f->host, HOST, KVR_MEM_CUDA_PINNED, &f->hmr), 0);
	assert_int_equal(f->dev->pins, 1);
}

static void fx_down(struct fx *f)
{
	if (f->t)
		assert_int_equal(kvr_target_close(f->t), 0);
	assert_int_equal(kvr_mem_deregister(f->e, f->hmr), 0);
	assert_int_equal(f->dev->unpins, 1);
	kvr_engine_destroy(f->e);
	kvt_free_mem(f->host, HOST);
	if (f->path[0])
		kvt_unlink(f->path);
}

/*
 * n objects "dev-<base+i>" of len bytes in nsge pieces. where: 0 all in
 * device memory, 1 alternate device and host pieces, 2 every other object
 * in host memory only. Puts fill, gets clear.
 */
static void submit(struct fx *f, enum kvr_op op, uint32_t base, uint32_t n, size_t len,
		   uint32_t nsge, int where, uint32_t timeout_ms, struct kvt_done *d)
{
	uint8_t *dp = f->dev->arena, *hp = f->host;

	assert_true(n <= MAXN && nsge <= 8);
	for (uint32_t i = 0; i < n; i++) {
		size_t left = len, off = 0;
		bool all_host = where == 2 && (i & 1);

		snprintf(B.keys[i], sizeof(B.keys[i]), "dev-%u", base + i);
		for (uint32_t s = 0; s < nsge; s++) {
			size_t k = s == nsge - 1 ? left : len / nsge;
			bool host = all_host || (where == 1 && (s & 1));
			uint8_t **p = host ? &hp : &dp;

			assert_true(*p + k <= (host ? f->host + HOST : f->dev->arena + DEV));
			B.sges[i][s] = (kvr_sge){*p, k};
			if (op == KVR_OP_PUT)
				kvt_fill_at(*p, k, base + i, off);
			else if (op == KVR_OP_GET)
				memset(*p, 0, k);
			*p += k;
			off += k;
			left -= k;
		}
		B.objs[i] = (kvr_obj){B.keys[i], strlen(B.keys[i]), B.sges[i], nsge};
	}
	memset(d, 0, sizeof(*d));
	assert_int_equal(kvr_submit(f->t, op, B.objs, n, timeout_ms, kvt_batch_cb, d), 0);
}

static void run(struct fx *f, enum kvr_op op, uint32_t base, uint32_t n, size_t len, uint32_t nsge,
		int where, struct kvt_done *d)
{
	submit(f, op, base, n, len, nsge, where, 0, d);
	assert_int_equal(kvt_wait(f->e, d, 60000), 1);
	assert_int_equal(d->n, n);
}

/* Object i of the last batch holds its bytes (in whatever pieces). */
static bool intact(uint32_t i, uint32_t base)
{
	uint64_t off = 0;

	for (uint32_t s = 0; s < B.objs[i].nsge; s++) {
		const kvr_sge *g = &B.sges[i][s];

		if (kvt_check_at(g->addr, g->len, base + i, off) != g->len)
			return false;
		off += g->len;
	}
	return true;
}

/* Put, then get back, n objects in each layout; every byte checked. */
static void round_trips(struct fx *f, uint32_t n, size_t len, uint32_t nsge)
{
	struct kvt_done *d = calloc(1, sizeof(*d));

	for (int where = 0; where < 3; where++) {
		uint32_t base = (uint32_t)where * 1000;

		run(f, KVR_OP_PUT, base, n, len, nsge, where, d);
		for (uint32_t i = 0; i < n; i++)
			assert_int_equal(d->results[i], (int64_t)len);
		run(f, KVR_OP_GET, base, n, len, nsge, where, d);
		for (uint32_t i = 0; i < n; i++) {
			assert_int_equal(d->results[i], (int64_t)len);
			assert_true(intact(i, base));
		}
		run(f, KVR_OP_EXISTS, base, n, len, nsge, where, d);
		for (uint32_t i = 0; i < n; i++)
			assert_int_equal(d->results[i], (int64_t)len);
	}
	free(d);
}

static void mem_store(void **state)
{
	struct fx f;
	struct kvr_stats st = {.size = sizeof(st)};

	(void)state;
	fx_up(&f, 0);
	assert_int_equal(kvr_store_open(f.e, "mem:128M", NULL, &f.t), 0);
	round_trips(&f, 64, 100000, 4);
	round_trips(&f, 16, 1000, 1);
	assert_int_equal(kvr_engine_stats(f.e, &st), 0);
	assert_true(st.staged_objects > 0 && st.staged_bytes > 0);
	print_message("mem: %" PRIu64 " objects staged, %" PRIu64 " bytes copied\n",
		      st.staged_objects, st.staged_bytes);
	fx_down(&f);
}

static void file_store(void **state)
{
	struct fx f;
	struct kvr_store_opts so = {.size = sizeof(so), .capacity = 256ull << 20};
	struct kvr_stats st = {.size = sizeof(st)};
	char uri[4200];

	(void)state;
	fx_up(&f, 0);
	snprintf(f.path, sizeof(f.path), "%s", kvt_path("stage_fs"));
	snprintf(uri, sizeof(uri), "file:%s", f.path);
	assert_int_equal(kvr_store_open(f.e, uri, &so, &f.t), 0);
	f.dev->delay_us = 200; /* copies as slow as the I/O: they must overlap */
	round_trips(&f, 64, 256 << 10, 8);
	assert_int_equal(kvr_engine_stats(f.e, &st), 0);
	print_message(
	    "file: copy busy %.1f ms, I/O busy %.1f ms, both %.1f ms (%.0f%% of the "
	    "shorter)\n",
	    st.stage_copy_ns / 1e6, st.stage_io_ns / 1e6, st.stage_overlap_ns / 1e6,
	    100.0 * (double)st.stage_overlap_ns /
		(double)(st.stage_copy_ns < st.stage_io_ns ? st.stage_copy_ns : st.stage_io_ns));
	assert_true(st.stage_overlap_ns > 0);
	fx_down(&f);
}

static void tcp_server(void **state)
{
	struct fx f;
	struct kvt_server s;

	(void)state;
	assert_int_equal(kvt_server_start(&s, (const char *[]){"--memory", "256M", NULL}), 0);
	fx_up(&f, 0);
	assert_int_equal(kvr_connect(f.e, s.uri, NULL, &f.t), 0);
	round_trips(&f, 64, 200000, 3);
	fx_down(&f);
	assert_int_equal(kvt_server_stop(&s), 0);
}

/* A 1 MiB pool for batches of 64 x 256 KiB: objects wait for room, in
 * order; one larger than the pool fails alone. */
static void small_pool(void **state)
{
	struct fx f;
	struct kvt_done *d = calloc(1, sizeof(*d));

	(void)state;
	fx_up(&f, 1 << 20);
	assert_int_equal(kvr_store_open(f.e, "mem:64M", NULL, &f.t), 0);
	f.dev->delay_us = 100;
	round_trips(&f, 64, 256 << 10, 2);
	run(&f, KVR_OP_PUT, 5000, 2, 2 << 20, 1, 0, d);
	assert_int_equal(d->results[0], -E2BIG);
	assert_int_equal(d->results[1], -E2BIG);
	free(d);
	fx_down(&f);
}

/* Copies slower than the deadline: the batch ends with -ETIMEDOUT, but only
 * once every copy into or out of the caller's memory is over. */
static void deadline(void **state)
{
	struct fx f;
	struct kvt_done *d = calloc(1, sizeof(*d));
	uint64_t copies;

	(void)state;
	fx_up(&f, 4 << 20);
	assert_int_equal(kvr_store_open(f.e, "mem:64M", NULL, &f.t), 0);
	run(&f, KVR_OP_PUT, 0, 32, 64 << 10, 1, 0, d);
	f.dev->delay_us = 20000; /* 20 ms a copy, 32 of them */
	submit(&f, KVR_OP_GET, 0, 32, 64 << 10, 1, 0, 100, d);
	assert_int_equal(kvt_wait(f.e, d, 30000), 1);
	copies = f.dev->copies;
	for (uint32_t i = 0; i < 32; i++)
		assert_true(d->results[i] == 64 << 10 || d->results[i] == -ETIMEDOUT);
	assert_int_equal(d->results[31], -ETIMEDOUT);
	/* nothing touches the caller's memory after the callback */
	f.dev->delay_us = 0;
	assert_true(kvr_engine_poll(f.e, 100) >= 0);
	assert_int_equal(f.dev->copies, copies);
	run(&f, KVR_OP_GET, 0, 32, 64 << 10, 1, 0, d);
	for (uint32_t i = 0; i < 32; i++)
		assert_true(d->results[i] == 64 << 10 && intact(i, 0));
	free(d);
	fx_down(&f);
}

static void copy_failure(void **state)
{
	struct fx f;
	struct kvt_done *d = calloc(1, sizeof(*d));

	(void)state;
	fx_up(&f, 0);
	assert_int_equal(kvr_store_open(f.e, "mem:64M", NULL, &f.t), 0);
	f.dev->fail_after = 3;
	run(&f, KVR_OP_PUT, 0, 8, 4096, 1, 0, d);
	for (uint32_t i = 0; i < 8; i++)
		assert_true(i < 2 ? d->results[i] == 4096 : d->results[i] == -EIO);
	/* the failed ones were never stored */
	f.dev->fail_after = 0;
	run(&f, KVR_OP_EXISTS, 0, 8, 4096, 1, 0, d);
	for (uint32_t i = 0; i < 8; i++)
		assert_true(i < 2 ? d->results[i] == 4096 : d->results[i] == -ENOENT);
	free(d);
	fx_down(&f);
}

static void not_device_memory(void **state)
{
	struct fx f;
	kvr_mr *mr;
	uint8_t *other = kvt_alloc_mem(1 << 20);

	(void)state;
	fx_up(&f, 0);
	assert_int_equal(kvr_mem_register(f.e, other, 1 << 20, KVR_MEM_CUDA, &mr), -EFAULT);
	/* and the failed registration left nothing behind */
	assert_int_equal(kvr_mem_register(f.e, other, 1 << 20, KVR_MEM_HOST, &mr), 0);
	assert_int_equal(kvr_mem_deregister(f.e, mr), 0);
	fx_down(&f);
	kvt_free_mem(other, 1 << 20);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(mem_store),	 cmocka_unit_test(file_store),
	    cmocka_unit_test(tcp_server),	 cmocka_unit_test(small_pool),
	    cmocka_unit_test(deadline),		 cmocka_unit_test(copy_failure),
	    cmocka_unit_test(not_device_memory),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
