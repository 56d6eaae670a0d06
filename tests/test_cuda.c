/* SPDX-License-Identifier: MIT */
/*
 * CUDA device memory on a real GPU: registration (device memory, pinned
 * host memory, a host pointer passed as device memory), and puts from and
 * gets into device memory through the memory store, the file store and a
 * kvring-server over TCP, with device-only and mixed device/host SGEs;
 * every byte checked on the host after a cudaMemcpy. Without a CUDA device
 * (or its driver) it reports a skip; tests/test_stage.c runs the same
 * staging path everywhere with a stand-in copy engine.
 */
#include "fixtures.h"
#include "server_proc.h"

#include <cuda_runtime_api.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#define DEV  (64ull << 20)
#define HOST (16ull << 20)
#define N    32

struct fx {
	kvr_engine *e;
	uint8_t *dev;  /* cudaMalloc */
	uint8_t *host; /* pinned host SGEs of mixed objects */
	uint8_t *check;
	kvr_mr *dmr, *hmr;
	kvr_target *t;
};

static void fx_up(struct fx *f)
{
	memset(f, 0, sizeof(*f));
	f->e = kvt_engine();
	assert_int_equal(cudaMalloc((void **)&f->dev, DEV), cudaSuccess);
	f->host = kvt_alloc_mem(HOST);
	f->check = malloc(DEV);
	assert_non_null(f->check);
	if (kvr_mem_register(f->e, f->dev, DEV, KVR_MEM_CUDA, &f->dmr))
		fail_msg("register device memory: %s", kvr_engine_errmsg(f->e));
	assert_int_equal(kvr_mem_register(f->e, f->host, HOST, KVR_MEM_CUDA_PINNED, &f->hmr), 0);
}

static void fx_down(struct fx *f)
{
	if (f->t)
		assert_int_equal(kvr_target_close(f->t), 0);
	assert_int_equal(kvr_mem_deregister(f->e, f->dmr), 0);
	assert_int_equal(kvr_mem_deregister(f->e, f->hmr), 0);
	kvr_engine_destroy(f->e);
	cudaFree(f->dev);
	kvt_free_mem(f->host, HOST);
	free(f->check);
}

/* N objects of len bytes, 4 SGEs each; mixed: every other SGE in host
 * memory. Puts fill device memory from the host first. */
static void batch(struct fx *f, enum kvr_op op, size_t len, bool mixed, struct kvt_done *d)
{
	static char keys[N][16];
	static kvr_obj objs[N];
	static kvr_sge sg[N][4];
	size_t q = len / 4;

	assert_true((size_t)N * len <= DEV && (size_t)N * len <= HOST);
	if (op == KVR_OP_PUT) {
		for (uint32_t i = 0; i < N; i++)
			kvt_fill(f->check + (size_t)i * len, len, 900 + i);
		assert_int_equal(
		    cudaMemcpy(f->dev, f->check, (size_t)N * len, cudaMemcpyHostToDevice),
		    cudaSuccess);
		memcpy(f->host, f->check, (size_t)N * len);
	} else {
		assert_int_equal(cudaMemset(f->dev, 0, (size_t)N * len), cudaSuccess);
		memset(f->host, 0, (size_t)N * len);
	}
	for (uint32_t i = 0; i < N; i++) {
		snprintf(keys[i], sizeof(keys[i]), "gpu-%u", i);
		for (uint32_t s = 0; s < 4; s++) {
			size_t off = (size_t)i * len + s * q;

			sg[i][s] = (kvr_sge){(mixed && (s & 1) ? f->host : f->dev) + off, q};
		}
		objs[i] = (kvr_obj){keys[i], strlen(keys[i]), sg[i], 4};
	}
	memset(d, 0, sizeof(*d));
	assert_int_equal(kvr_submit(f->t, op, objs, N, 0, kvt_batch_cb, d), 0);
	assert_int_equal(kvt_wait(f->e, d, 60000), 1);
}

/* Every object read back: device bytes fetched, host bytes in place. */
static void verify(struct fx *f, size_t len, bool mixed)
{
	size_t q = len / 4;

	assert_int_equal(cudaMemcpy(f->check, f->dev, (size_t)N * len, cudaMemcpyDeviceToHost),
			 cudaSuccess);
	for (uint32_t i = 0; i < N; i++)
		for (uint32_t s = 0; s < 4; s++) {
			size_t off = (size_t)i * len + s * q;
			const uint8_t *p = (mixed && (s & 1) ? f->host : f->check) + off;

			assert_int_equal(kvt_check_at(p, q, 900 + i, s * q), q);
		}
}

static void round_trip(struct fx *f, size_t len)
{
	struct kvt_done *d = calloc(1, sizeof(*d));

	for (int mixed = 0; mixed < 2; mixed++) {
		batch(f, KVR_OP_PUT, len, mixed, d);
		for (uint32_t i = 0; i < N; i++)
			assert_int_equal(d->results[i], (int64_t)len);
		batch(f, KVR_OP_GET, len, mixed, d);
		for (uint32_t i = 0; i < N; i++)
			assert_int_equal(d->results[i], (int64_t)len);
		verify(f, len, mixed);
	}
	free(d);
}

static void registration(void **state)
{
	kvr_engine *e = kvt_engine();
	uint8_t *dev, *host = kvt_alloc_mem(1 << 20);
	kvr_mr *mr;

	(void)state;
	assert_int_equal(cudaMalloc((void **)&dev, 1 << 20), cudaSuccess);
	assert_int_equal(kvr_mem_register(e, dev, 1 << 20, KVR_MEM_CUDA, &mr), 0);
	assert_int_equal(kvr_mem_deregister(e, mr), 0);
	/* a host pointer is not device memory; nor is a range running past
	 * the allocation */
	assert_int_equal(kvr_mem_register(e, host, 1 << 20, KVR_MEM_CUDA, &mr), -EFAULT);
	print_message("host memory as device memory: %s\n", kvr_engine_errmsg(e));
	assert_true(kvr_mem_register(e, dev, 2 << 20, KVR_MEM_CUDA, &mr) < 0);
	assert_int_equal(kvr_mem_register(e, host, 1 << 20, KVR_MEM_CUDA_PINNED, &mr), 0);
	assert_int_equal(kvr_mem_deregister(e, mr), 0);
	kvr_engine_destroy(e);
	cudaFree(dev);
	kvt_free_mem(host, 1 << 20);
}

static void mem_store(void **state)
{
	struct fx f;

	(void)state;
	fx_up(&f);
	assert_int_equal(kvr_store_open(f.e, "mem:256M", NULL, &f.t), 0);
	round_trip(&f, 256 << 10);
	round_trip(&f, 4096);
	fx_down(&f);
}

static void file_store(void **state)
{
	struct fx f;
	struct kvr_store_opts so = {.size = sizeof(so), .capacity = 256ull << 20};
	const char *path = kvt_path("cuda_fs");
	char uri[4200];
	struct kvr_stats st = {.size = sizeof(st)};

	(void)state;
	fx_up(&f);
	snprintf(uri, sizeof(uri), "file:%s", path);
	assert_int_equal(kvr_store_open(f.e, uri, &so, &f.t), 0);
	round_trip(&f, 256 << 10);
	assert_int_equal(kvr_engine_stats(f.e, &st), 0);
	print_message("file store: %" PRIu64 " objects staged; copy busy %.1f ms, I/O busy %.1f "
		      "ms, overlapped %.1f ms\n",
		      st.staged_objects, st.stage_copy_ns / 1e6, st.stage_io_ns / 1e6,
		      st.stage_overlap_ns / 1e6);
	fx_down(&f);
	kvt_unlink(path);
}

static void tcp_server(void **state)
{
	struct fx f;
	struct kvt_server s;

	(void)state;
	assert_int_equal(kvt_server_start(&s, (const char *[]){"--memory", "256M", NULL}), 0);
	fx_up(&f);
	assert_int_equal(kvr_connect(f.e, s.uri, NULL, &f.t), 0);
	round_trip(&f, 512 << 10);
	fx_down(&f);
	assert_int_equal(kvt_server_stop(&s), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(registration),
	    cmocka_unit_test(mem_store),
	    cmocka_unit_test(file_store),
	    cmocka_unit_test(tcp_server),
	};
	int n = 0;
	cudaError_t err = cudaGetDeviceCount(&n);

	if (err != cudaSuccess || n == 0) {
		printf("test_cuda: no CUDA device (%s): skipped; tests/test_stage.c covers the "
		       "staging path without one\n",
		       err != cudaSuccess ? cudaGetErrorString(err) : "none found");
		return 77;
	}
	return cmocka_run_group_tests(tests, NULL, NULL);
}
