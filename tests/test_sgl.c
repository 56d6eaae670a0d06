/* SPDX-License-Identifier: MIT */
/* engine/sgl.c: the SGL cursor, at 1 SGE and at exactly KVR_MAX_SGE. */
#include "fixtures.h"
#include "engine/sgl.h"

#include <stdlib.h>
#include <string.h>

#include "kvring.h"

/* An SGL over one buffer, its SGE lengths given; the SGEs are spread over
 * buf with a gap byte between them, so a write past an SGE's end shows. */
struct sgl_case {
	struct kvr_sgx sgx[KVR_MAX_SGE];
	uint32_t nsge;
	uint64_t total;
	uint8_t *buf;
	size_t buf_len;
};

#define GAP 0xa5

static void case_init(struct sgl_case *k, const uint64_t *lens, uint32_t nsge)
{
	size_t at = 1;

	k->nsge = nsge;
	k->total = 0;
	k->buf_len = 1;
	for (uint32_t i = 0; i < nsge; i++)
		k->buf_len += lens[i] + 1;
	k->buf = malloc(k->buf_len);
	assert_non_null(k->buf);
	memset(k->buf, GAP, k->buf_len);
	for (uint32_t i = 0; i < nsge; i++) {
		k->sgx[i] = (struct kvr_sgx){k->buf + at, lens[i], NULL};
		at += lens[i] + 1;
		k->total += lens[i];
	}
}

static void case_fini(struct sgl_case *k)
{
	free(k->buf);
}

/* The gap bytes around and between the SGEs are untouched. */
static void assert_gaps(const struct sgl_case *k)
{
	assert_int_equal(k->buf[0], GAP);
	for (uint32_t i = 0; i < k->nsge; i++)
		assert_int_equal(k->sgx[i].addr[k->sgx[i].len], GAP);
}

/* The SGL's first n bytes, in order, equal src's. */
static void assert_sgl_holds(const struct sgl_case *k, const uint8_t *src, uint64_t n)
{
	uint64_t pos = 0;

	for (uint32_t i = 0; i < k->nsge && pos < n; i++) {
		uint64_t l = k->sgx[i].len < n - pos ? k->sgx[i].len : n - pos;

		assert_memory_equal(k->sgx[i].addr, src + pos, l);
		pos += l;
	}
	assert_int_equal(pos, n);
}

/* Copy in (in chunks of `step`), copy out, crc both ways, every byte. */
static void round_trip(const uint64_t *lens, uint32_t nsge, uint64_t step)
{
	struct sgl_case k;
	struct kvr_sgl c;
	uint32_t crc = 0;
	uint8_t *src, *dst;
	uint64_t done = 0;

	case_init(&k, lens, nsge);
	src = malloc(k.total + 1);
	dst = malloc(k.total + 1);
	assert_non_null(src);
	assert_non_null(dst);
	kvt_fill(src, k.total + 1, nsge * 31 + step);
	uint32_t want = kvr_crc32c(0, src, k.total);

	kvr_sgl_init(&c, k.sgx, k.nsge, k.total, &crc);
	while (done < k.total) {
		uint64_t n = step < k.total - done ? step : k.total - done;

		assert_int_equal(kvr_sgl_copy_in(&c, src + done, n), n);
		done += n;
		assert_int_equal(kvr_sgl_remaining(&c), k.total - done);
	}
	/* the walk is over: nothing more goes in */
	assert_int_equal(kvr_sgl_copy_in(&c, src, 1), 0);
	assert_int_equal(crc, want);
	assert_sgl_holds(&k, src, k.total);
	assert_gaps(&k);

	crc = 0;
	memset(dst, 0, k.total + 1);
	kvr_sgl_init(&c, k.sgx, k.nsge, k.total, &crc);
	assert_int_equal(kvr_sgl_copy_out(&c, dst, k.total + 1), k.total);
	assert_memory_equal(dst, src, k.total);
	assert_int_equal(dst[k.total], 0);
	assert_int_equal(crc, want);
	assert_int_equal(kvr_crc32c_sgl(k.sgx, k.nsge, k.total), want);

	/* a limit below the total stops every walk there */
	if (k.total > 1) {
		uint64_t lim = k.total / 2 + 1;

		crc = 0;
		memset(dst, 0, k.total + 1);
		kvr_sgl_init(&c, k.sgx, k.nsge, lim, &crc);
		assert_int_equal(kvr_sgl_copy_out(&c, dst, k.total), lim);
		assert_memory_equal(dst, src, lim);
		assert_int_equal(dst[lim], 0);
		assert_int_equal(crc, kvr_crc32c(0, src, lim));
		assert_int_equal(kvr_crc32c_sgl(k.sgx, k.nsge, lim), crc);
	}
	free(src);
	free(dst);
	case_fini(&k);
}

static void test_one_sge(void **state)
{
	static const uint64_t sizes[] = {1, 2, 7, 4096, 4097, 65536, 1u << 20};

	(void)state;
	for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
		round_trip(&sizes[s], 1, sizes[s]);
		round_trip(&sizes[s], 1, 1000);
		round_trip(&sizes[s], 1, 1);
	}
}

/* KVR_MAX_SGE SGEs of mixed sizes, 1 B up to 1 MiB. */
static void max_lens(uint64_t *lens, uint64_t seed)
{
	uint64_t st = seed;

	for (uint32_t i = 0; i < KVR_MAX_SGE; i++) {
		uint64_t r = kvt_rand(&st);

		lens[i] = i % 64 == 5 ? (1u << 20) : 1 + r % (i % 3 == 0 ? 7 : 9000);
	}
	lens[0] = 1;
	lens[KVR_MAX_SGE - 1] = 1;
}

static void test_max_sge(void **state)
{
	uint64_t lens[KVR_MAX_SGE];

	(void)state;
	max_lens(lens, 1);
	round_trip(lens, KVR_MAX_SGE, UINT64_MAX / 2);
	round_trip(lens, KVR_MAX_SGE, 4096);
	round_trip(lens, KVR_MAX_SGE, 3);
	for (uint32_t i = 0; i < KVR_MAX_SGE; i++)
		lens[i] = 1;
	round_trip(lens, KVR_MAX_SGE, 1);
	round_trip(lens, KVR_MAX_SGE, 5);
}

/* SGEs of length 0 are stepped over by every walk. */
static void test_zero_length_sges(void **state)
{
	uint64_t lens[] = {0, 3, 0, 0, 5, 0};
	struct sgl_case k;
	struct kvr_sgl c;
	struct iovec iov[8];
	uint64_t bytes;

	(void)state;
	round_trip(lens, 6, 1);
	round_trip(lens, 6, 4);
	case_init(&k, lens, 6);
	kvr_sgl_init(&c, k.sgx, k.nsge, k.total, NULL);
	assert_int_equal(kvr_sgl_fill_iov(&c, iov, 8, k.total, &bytes), 2);
	assert_int_equal(bytes, 8);
	assert_ptr_equal(iov[0].iov_base, k.sgx[1].addr);
	assert_int_equal(iov[0].iov_len, 3);
	assert_ptr_equal(iov[1].iov_base, k.sgx[4].addr);
	assert_int_equal(iov[1].iov_len, 5);
	case_fini(&k);

	/* all empty: nothing to walk */
	uint64_t none[] = {0, 0};

	case_init(&k, none, 2);
	kvr_sgl_init(&c, k.sgx, k.nsge, 10, NULL);
	assert_int_equal(kvr_sgl_fill_iov(&c, iov, 8, 10, &bytes), 0);
	assert_int_equal(bytes, 0);
	assert_int_equal(kvr_sgl_advance(&c, 10), 0);
	case_fini(&k);
}

/* advance lands at the right byte across SGE boundaries, and fill_iov
 * starts there: the iovecs are the SGL's slices from the position on. */
static void check_fill(const struct sgl_case *k, uint64_t pos, uint32_t cap, uint64_t max)
{
	struct kvr_sgl c;
	struct iovec iov[KVR_MAX_SGE + 2];
	uint64_t bytes, left = k->total - pos, want_bytes = 0, at = 0;
	uint32_t crc = 0, n, want_n = 0;

	kvr_sgl_init(&c, k->sgx, k->nsge, k->total, &crc);
	assert_int_equal(kvr_sgl_advance(&c, pos), pos);
	assert_int_equal(crc, kvr_crc32c_sgl(k->sgx, k->nsge, pos));
	assert_int_equal(kvr_sgl_remaining(&c), left);
	/* expected: the slices of [pos, pos + max), at most cap of them */
	for (uint32_t i = 0; i < k->nsge; i++) {
		uint64_t s = at, e = at + k->sgx[i].len;

		at = e;
		if (e <= pos || want_n == cap || want_bytes == max || s == e)
			continue;
		uint64_t from = s > pos ? s : pos, l = e - from;

		if (l > max - want_bytes)
			l = max - want_bytes;
		want_bytes += l;
		want_n++;
	}
	memset(iov, 0, sizeof(iov));
	n = kvr_sgl_fill_iov(&c, iov, cap, max, &bytes);
	assert_int_equal(n, want_n);
	assert_true(n <= cap);
	assert_int_equal(bytes, want_bytes);
	assert_null(iov[n].iov_base); /* never past what it returned */
	/* the iovecs are the bytes at the position: copy_out agrees */
	uint8_t *flat = malloc(bytes + 1), *q = flat;

	assert_non_null(flat);
	for (uint32_t j = 0; j < n; j++) {
		assert_true(iov[j].iov_len > 0);
		memcpy(q, iov[j].iov_base, iov[j].iov_len);
		q += iov[j].iov_len;
	}
	uint8_t *out = malloc(bytes + 1);

	assert_non_null(out);
	/* fill_iov did not move the cursor */
	assert_int_equal(kvr_sgl_remaining(&c), left);
	assert_int_equal(kvr_sgl_copy_out(&c, out, bytes), bytes);
	assert_memory_equal(out, flat, bytes);
	free(out);
	free(flat);
}

static void fill_cases(const uint64_t *lens, uint32_t nsge)
{
	struct sgl_case k;

	case_init(&k, lens, nsge);
	kvt_fill(k.buf, k.buf_len, nsge);
	const uint64_t points[] = {0,		1,	     lens[0] - 1, lens[0],
				   lens[0] + 1, k.total / 2, k.total - 1, k.total};
	const uint32_t caps[] = {1,    2,	nsge / 2 ? nsge / 2 : 1, nsge - 1 ? nsge - 1 : 1,
				 nsge, nsge + 1};

	for (size_t p = 0; p < sizeof(points) / sizeof(points[0]); p++) {
		if (points[p] > k.total)
			continue;
		for (size_t q = 0; q < sizeof(caps) / sizeof(caps[0]); q++) {
			check_fill(&k, points[p], caps[q], k.total);
			check_fill(&k, points[p], caps[q], 1);
			check_fill(&k, points[p], caps[q], (k.total - points[p]) / 3 + 1);
		}
	}
	case_fini(&k);
}

static void test_advance_and_fill(void **state)
{
	uint64_t one[] = {4096};
	uint64_t lens[KVR_MAX_SGE];

	(void)state;
	fill_cases(one, 1);
	one[0] = 1;
	fill_cases(one, 1);
	max_lens(lens, 7);
	for (uint32_t i = 0; i < KVR_MAX_SGE; i++)
		if (lens[i] > 9000)
			lens[i] = 9000; /* keep the byte-by-byte checks quick */
	fill_cases(lens, KVR_MAX_SGE);
}

/* Landing bytes by advance (a recv into the iovecs) keeps a crc of them
 * equal to a one-shot crc32c over the concatenation, in any chunking. */
static void test_crc_as_it_lands(void **state)
{
	uint64_t lens[KVR_MAX_SGE];
	struct sgl_case k;
	struct kvr_sgl c;
	struct iovec iov[KVR_MAX_SGE];
	uint64_t st = 99, bytes;
	uint32_t crc = 0;

	(void)state;
	max_lens(lens, 3);
	case_init(&k, lens, KVR_MAX_SGE);
	uint8_t *src = malloc(k.total);

	assert_non_null(src);
	kvt_fill(src, k.total, 5);
	kvr_sgl_init(&c, k.sgx, k.nsge, k.total, &crc);
	while (kvr_sgl_remaining(&c)) {
		uint64_t want = 1 + kvt_rand(&st) % 300000, at = k.total - kvr_sgl_remaining(&c);
		uint32_t n =
		    kvr_sgl_fill_iov(&c, iov, 1 + (uint32_t)(kvt_rand(&st) % 4), want, &bytes);
		const uint8_t *s = src + at;

		assert_true(n >= 1);
		for (uint32_t j = 0; j < n; j++) { /* the "recv" */
			memcpy(iov[j].iov_base, s, iov[j].iov_len);
			s += iov[j].iov_len;
		}
		assert_int_equal(kvr_sgl_advance(&c, bytes), bytes);
	}
	assert_int_equal(crc, kvr_crc32c(0, src, k.total));
	assert_sgl_holds(&k, src, k.total);
	assert_gaps(&k);
	free(src);
	case_fini(&k);
}

/* next hands out pieces of at most max bytes, never across an SGE. */
static void test_next_pieces(void **state)
{
	uint64_t lens[] = {10, 1, 25};
	struct sgl_case k;
	struct kvr_sgl c;
	struct kvr_sgl_piece p;
	const uint64_t want[] = {8, 2, 1, 8, 8, 8, 1};
	size_t n = 0;

	(void)state;
	case_init(&k, lens, 3);
	kvr_sgl_init(&c, k.sgx, k.nsge, k.total, NULL);
	while (kvr_sgl_next(&c, 8, &p)) {
		assert_true(n < sizeof(want) / sizeof(want[0]));
		assert_int_equal(p.len, want[n]);
		n++;
	}
	assert_int_equal(n, sizeof(want) / sizeof(want[0]));
	assert_int_equal(kvr_sgl_remaining(&c), 0);
	case_fini(&k);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_one_sge),	     cmocka_unit_test(test_max_sge),
	    cmocka_unit_test(test_zero_length_sges), cmocka_unit_test(test_advance_and_fill),
	    cmocka_unit_test(test_crc_as_it_lands),  cmocka_unit_test(test_next_pieces),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
