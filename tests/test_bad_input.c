/* SPDX-License-Identifier: MIT */
/*
 * Every kind of bad batch gets its documented errno at submission, the
 * callback never runs, and nothing reaches the target.
 */
#include "fixtures.h"

#include <string.h>

#define ARENA (1u << 20)

static int cb_calls;

static void cb(void *ctx, size_t n, const int64_t *res)
{
	cb_calls++;
}

struct fx {
	kvr_engine *e;
	kvr_target *mem, *file;
	uint8_t *buf;
	kvr_mr *mr;
	char path[512];
};

static void setup(struct fx *f)
{
	char uri[600];
	struct kvr_store_opts so = {
	    .size = sizeof(so), .flags = KVR_STORE_TRUNCATE, .capacity = 16 << 20};
	struct kvr_engine_opts eo = {.size = sizeof(eo), .max_objects = 64};

	assert_int_equal(kvr_engine_create(&eo, &f->e), 0);
	f->buf = kvt_alloc_mem(ARENA);
	assert_int_equal(kvr_mem_register(f->e, f->buf, ARENA, 0, &f->mr), 0);
	assert_int_equal(kvr_store_open(f->e, "mem:1M", NULL, &f->mem), 0);
	snprintf(f->path, sizeof(f->path), "%s", kvt_path("bad_input"));
	snprintf(uri, sizeof(uri), "file:%s", f->path);
	assert_int_equal(kvr_store_open(f->e, uri, &so, &f->file), 0);
	cb_calls = 0;
}

static void teardown(struct fx *f)
{
	kvr_engine_destroy(f->e);
	kvt_free_mem(f->buf, ARENA);
	kvt_unlink(f->path);
}

/* Submit objs to both stores with every op that reads the SGL and check
 * the errno; then prove nothing happened. */
static void expect_all(struct fx *f, const kvr_obj *objs, size_t n, int err, bool data_only)
{
	kvr_target *ts[2] = {f->mem, f->file};

	for (int i = 0; i < 2; i++) {
		assert_int_equal(kvr_put(ts[i], objs, n, cb, NULL), err);
		assert_int_equal(kvr_get(ts[i], objs, n, cb, NULL), err);
		if (!data_only) {
			assert_int_equal(kvr_exists(ts[i], objs, n, cb, NULL), err);
			assert_int_equal(kvr_remove(ts[i], objs, n, cb, NULL), err);
		}
	}
}

static void check_nothing_happened(struct fx *f)
{
	struct kvr_stats st = {.size = sizeof(st)};

	assert_int_equal(kvr_engine_poll(f->e, 0), 0);
	assert_int_equal(cb_calls, 0);
	kvr_engine_stats(f->e, &st);
	assert_int_equal(st.puts + st.gets + st.exists + st.removes + st.batches, 0);
	kvr_target_stats(f->file, &st);
	assert_int_equal(st.objects, 0);
	assert_int_equal(st.fixed_ios + st.plain_ios, 0);
}

static void test_bad_keys(void **state)
{
	struct fx f;
	char longkey[KVR_MAX_KEY + 1];

	setup(&f);
	memset(longkey, 'k', sizeof(longkey));
	kvr_sge sge = {f.buf, 4096};
	kvr_obj good = {"ok", 2, &sge, 1};
	kvr_obj objs[2] = {good, good};

	objs[1].key = NULL;
	expect_all(&f, objs, 2, -EINVAL, false);
	objs[1].key = "x";
	objs[1].key_len = 0;
	expect_all(&f, objs, 2, -EINVAL, false);
	objs[1].key = longkey;
	objs[1].key_len = KVR_MAX_KEY + 1;
	expect_all(&f, objs, 2, -ENAMETOOLONG, false);
	check_nothing_happened(&f);
	/* exactly KVR_MAX_KEY is fine */
	objs[1].key_len = KVR_MAX_KEY;
	assert_int_equal(kvr_put(f.mem, objs, 2, cb, NULL), 0);
	assert_int_equal(kvr_engine_poll(f.e, 1000), 1);
	teardown(&f);
}

static void test_bad_sgls(void **state)
{
	struct fx f;
	static kvr_sge many[KVR_MAX_SGE + 1];
	uint8_t outside[64];

	setup(&f);
	kvr_sge sge = {f.buf, 4096};
	kvr_obj o = {"k", 1, &sge, 0};

	expect_all(&f, &o, 1, -EINVAL, true); /* nsge 0 */
	o.nsge = 1;
	o.sgl = NULL;
	expect_all(&f, &o, 1, -EINVAL, true); /* NULL sgl */
	for (int i = 0; i <= KVR_MAX_SGE; i++)
		many[i] = (kvr_sge){f.buf + i * 64, 64};
	o.sgl = many;
	o.nsge = KVR_MAX_SGE + 1;
	expect_all(&f, &o, 1, -E2BIG, true);
	sge.addr = NULL;
	o.sgl = &sge;
	o.nsge = 1;
	expect_all(&f, &o, 1, -EFAULT, true); /* NULL address */
	sge.addr = outside;
	expect_all(&f, &o, 1, -EFAULT, true); /* not registered */
	sge.addr = f.buf + ARENA - 100;
	sge.len = 200;
	expect_all(&f, &o, 1, -EFAULT, true); /* runs past the region */
	sge.addr = f.buf;
	sge.len = 0;
	expect_all(&f, &o, 1, -EINVAL, true); /* empty SGE */
	/* exists/remove ignore the SGL entirely */
	o.sgl = NULL;
	o.nsge = 0;
	assert_int_equal(kvr_exists(f.mem, &o, 1, cb, NULL), 0);
	assert_int_equal(kvr_engine_poll(f.e, 1000), 1);
	teardown(&f);
}

static void test_overlapping_get(void **state)
{
	struct fx f;

	setup(&f);
	kvr_sge a[2] = {{f.buf, 4096}, {f.buf + 4000, 100}};
	kvr_sge b = {f.buf + 8192, 4096}, c = {f.buf + 10000, 10};
	kvr_obj o = {"k", 1, a, 2};
	kvr_obj two[2] = {{"x", 1, &b, 1}, {"y", 1, &c, 1}};

	assert_int_equal(kvr_get(f.mem, &o, 1, cb, NULL), -EINVAL);
	assert_int_equal(kvr_get(f.file, &o, 1, cb, NULL), -EINVAL);
	/* across objects of one batch too */
	assert_int_equal(kvr_get(f.file, two, 2, cb, NULL), -EINVAL);
	check_nothing_happened(&f);
	/* a put may read the same bytes twice */
	assert_int_equal(kvr_put(f.mem, &o, 1, cb, NULL), 0);
	assert_int_equal(kvr_engine_poll(f.e, 1000), 1);
	teardown(&f);
}

static void test_bad_batches(void **state)
{
	struct fx f;
	static kvr_obj objs[65];
	kvr_sge sge;

	setup(&f);
	sge = (kvr_sge){f.buf, 64};
	for (int i = 0; i < 65; i++)
		objs[i] = (kvr_obj){"k", 1, &sge, 1};
	assert_int_equal(kvr_put(NULL, objs, 1, cb, NULL), -EINVAL);
	assert_int_equal(kvr_put(f.mem, NULL, 1, cb, NULL), -EINVAL);
	assert_int_equal(kvr_put(f.mem, objs, 0, cb, NULL), -EINVAL);
	assert_int_equal(kvr_put(f.mem, objs, 1, NULL, NULL), -EINVAL);
	assert_int_equal(kvr_submit(f.mem, (enum kvr_op)9, objs, 1, 0, cb, NULL), -EINVAL);
	expect_all(&f, objs, 65, -E2BIG, false); /* engine capacity is 64 */
	check_nothing_happened(&f);
	/* closed targets */
	assert_int_equal(kvr_target_close(f.mem), 0);
	assert_int_equal(kvr_target_close(f.file), 0);
	expect_all(&f, objs, 1, -EBADF, false);
	assert_int_equal(kvr_target_close(f.mem), -EBADF);
	struct kvr_stats st = {.size = sizeof(st)};

	assert_int_equal(kvr_target_stats(f.mem, &st), 0);
	assert_int_equal(kvr_target_stats(NULL, &st), -EINVAL);
	assert_int_equal(cb_calls, 0);
	teardown(&f);
}

static void test_registry_errors(void **state)
{
	struct fx f;
	kvr_mr *mr;

	setup(&f);
	assert_int_equal(kvr_mem_register(f.e, NULL, 10, 0, &mr), -EINVAL);
	assert_int_equal(kvr_mem_register(f.e, f.buf, 0, 0, &mr), -EINVAL);
	assert_int_equal(kvr_mem_register(f.e, f.buf, 10, 0x100, &mr), -EINVAL);
	assert_int_equal(kvr_mem_register(f.e, f.buf + 4096, 4096, 0, &mr), -EEXIST);
	assert_int_equal(kvr_mem_register(f.e, f.buf, 10, KVR_MEM_CUDA | KVR_MEM_CUDA_PINNED, &mr),
			 -EINVAL);
	{
		/* Host memory named as device memory: refused, never used. Without
		 * CUDA (or without a GPU) device memory is refused outright. */
		static _Alignas(4096) uint8_t host[4096];
		int rc = kvr_mem_register(f.e, host, sizeof(host), KVR_MEM_CUDA, &mr);

		assert_true(rc == -EOPNOTSUPP || rc == -ENODEV || rc == -EFAULT);
		assert_true(kvr_engine_errmsg(f.e)[0] != 0);
	}
	assert_int_equal(kvr_mem_deregister(f.e, NULL), -EINVAL);
	teardown(&f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_bad_keys),	    cmocka_unit_test(test_bad_sgls),
	    cmocka_unit_test(test_overlapping_get), cmocka_unit_test(test_bad_batches),
	    cmocka_unit_test(test_registry_errors),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
