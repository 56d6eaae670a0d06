// SPDX-License-Identifier: MIT
/* engine/alloc.c: extent allocator. */
#include "fixtures.h"
#include "engine/alloc.h"

#include <errno.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>

#define UNIT 4096ull

#if defined(__SANITIZE_ADDRESS__)
#define KVT_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define KVT_ASAN 1
#endif
#endif

#ifdef KVT_ASAN
size_t __sanitizer_get_current_allocated_bytes(void);
#endif

/* Bytes currently allocated on the heap by the whole process. */
static size_t heap_bytes(void)
{
#ifdef KVT_ASAN
	return __sanitizer_get_current_allocated_bytes();
#else
	struct mallinfo2 mi = mallinfo2();

	return mi.uordblks + mi.hblkhd;
#endif
}

static void shuffle(uint64_t *v, size_t n, uint64_t *rng)
{
	for (size_t i = n; i > 1; i--) {
		size_t j = kvt_rand(rng) % i;
		uint64_t t = v[i - 1];

		v[i - 1] = v[j];
		v[j] = t;
	}
}

static void assert_pristine(const struct kvr_alloc *a)
{
	assert_int_equal(a->used, 0);
	assert_int_equal(a->nfree, 1);
	assert_int_equal(kvr_alloc_largest(a), a->capacity);
}

static void test_init_args(void **state)
{
	struct kvr_alloc a;

	(void)state;
	assert_int_equal(kvr_alloc_init(&a, 1 << 20, 0), -EINVAL);
	assert_int_equal(kvr_alloc_init(&a, 1 << 20, 3000), -EINVAL);
	assert_int_equal(kvr_alloc_init(&a, UNIT - 1, UNIT), -EINVAL);
	assert_int_equal(kvr_alloc_init(&a, UINT64_MAX, UNIT), -EINVAL);
	/* functions stay harmless on a failed init */
	assert_int_equal(kvr_alloc_get(&a, 1), -ENOSPC);
	kvr_alloc_put(&a, 0, UNIT);
	assert_int_equal(kvr_alloc_largest(&a), 0);
	kvr_alloc_fini(&a);

	assert_int_equal(kvr_alloc_init(&a, 10 * UNIT + 100, UNIT), 0);
	assert_int_equal(a.capacity, 10 * UNIT);
	assert_int_equal(a.unit, UNIT);
	assert_pristine(&a);
	assert_int_equal(kvr_alloc_round(&a, 1), UNIT);
	assert_int_equal(kvr_alloc_round(&a, UNIT), UNIT);
	assert_int_equal(kvr_alloc_round(&a, UNIT + 1), 2 * UNIT);
	kvr_alloc_fini(&a);

	/* unit 1 is a power of two too */
	assert_int_equal(kvr_alloc_init(&a, 7, 1), 0);
	assert_int_equal(kvr_alloc_get(&a, 7), 0);
	assert_int_equal(kvr_alloc_get(&a, 1), -ENOSPC);
	kvr_alloc_put(&a, 0, 7);
	assert_pristine(&a);
	kvr_alloc_fini(&a);
}

static void test_get_sizes(void **state)
{
	struct kvr_alloc a;

	(void)state;
	assert_int_equal(kvr_alloc_init(&a, 16 * UNIT, UNIT), 0);
	assert_int_equal(kvr_alloc_get(&a, 0), -EINVAL);
	assert_int_equal(kvr_alloc_get(&a, 16 * UNIT + 1), -ENOSPC);
	assert_int_equal(kvr_alloc_get(&a, UINT64_MAX), -ENOSPC);
	/* rounds up: the whole capacity */
	assert_int_equal(kvr_alloc_get(&a, 16 * UNIT - 1), 0);
	assert_int_equal(a.used, 16 * UNIT);
	assert_int_equal(a.nfree, 0);
	assert_int_equal(kvr_alloc_largest(&a), 0);
	assert_int_equal(kvr_alloc_get(&a, 1), -ENOSPC);
	kvr_alloc_put(&a, 0, 16 * UNIT);
	assert_pristine(&a);

	/* consecutive allocations are laid out in ascending order */
	assert_int_equal(kvr_alloc_get(&a, 1), 0);
	assert_int_equal(kvr_alloc_get(&a, UNIT + 1), UNIT);
	assert_int_equal(kvr_alloc_get(&a, 3 * UNIT), 3 * UNIT);
	assert_int_equal(a.used, 6 * UNIT);
	assert_int_equal(a.nfree, 1);
	assert_int_equal(kvr_alloc_largest(&a), 10 * UNIT);
	/* put accepts the unrounded length as well */
	kvr_alloc_put(&a, UNIT, UNIT + 1);
	kvr_alloc_put(&a, 0, UNIT);
	kvr_alloc_put(&a, 3 * UNIT, 3 * UNIT);
	assert_pristine(&a);
	kvr_alloc_fini(&a);
}

/* Fill with random sizes until ENOSPC, free in the given order, check that
 * everything coalesces back into one extent. */
static void fill_and_drain(uint64_t units, uint64_t max_units, int order, uint64_t seed)
{
	uint64_t *off = calloc(units, sizeof(*off)), *len = calloc(units, sizeof(*len));
	uint64_t *perm = calloc(units, sizeof(*perm));
	uint64_t rng = seed, n = 0, sum = 0;
	struct kvr_alloc a;

	assert_non_null(off);
	assert_non_null(len);
	assert_non_null(perm);
	assert_int_equal(kvr_alloc_init(&a, units * UNIT, UNIT), 0);
	for (;;) {
		uint64_t want = (1 + kvt_rand(&rng) % max_units) * UNIT;
		int64_t r = kvr_alloc_get(&a, want);

		if (r == -ENOSPC) {
			/* with unit-sized requests the space runs out exactly */
			assert_true(kvr_alloc_largest(&a) < want);
			if (want == UNIT)
				break;
			if (kvr_alloc_largest(&a) == 0)
				break;
			continue;
		}
		assert_true(r >= 0);
		assert_int_equal((uint64_t)r % UNIT, 0);
		assert_true((uint64_t)r + want <= a.capacity);
		off[n] = (uint64_t)r;
		len[n] = want;
		sum += want;
		n++;
		assert_int_equal(a.used, sum);
	}
	assert_int_equal(a.used, a.capacity);
	assert_int_equal(a.nfree, 0);
	for (uint64_t i = 0; i < n; i++)
		perm[i] = i;
	if (order == 0)
		shuffle(perm, n, &rng);
	for (uint64_t k = 0; k < n; k++) {
		uint64_t i;

		if (order == 1) /* reverse */
			i = n - 1 - k;
		else if (order == 2) /* evens first, then odds: many holes */
			i = k < (n + 1) / 2 ? 2 * k : 2 * (k - (n + 1) / 2) + 1;
		else
			i = perm[k];
		kvr_alloc_put(&a, off[i], len[i]);
		sum -= len[i];
		assert_int_equal(a.used, sum);
		assert_true(a.nfree >= 1);
	}
	assert_pristine(&a);
	kvr_alloc_fini(&a);
	free(off);
	free(len);
	free(perm);
}

static void test_fill_and_drain(void **state)
{
	(void)state;
	for (int order = 0; order < 3; order++) {
		fill_and_drain(1000, 1, order, 1 + order);
		fill_and_drain(5000, 8, order, 11 + order);
		fill_and_drain(20000, 64, order, 21 + order);
	}
	for (uint64_t seed = 100; seed < 120; seed++)
		fill_and_drain(512, 5, 0, seed);
}

static void test_holes(void **state)
{
	const uint64_t n = 64;
	struct kvr_alloc a;

	(void)state;
	assert_int_equal(kvr_alloc_init(&a, n * UNIT, UNIT), 0);
	for (uint64_t i = 0; i < n; i++)
		assert_int_equal(kvr_alloc_get(&a, UNIT), (int64_t)(i * UNIT));
	for (uint64_t i = 0; i < n; i += 2) {
		kvr_alloc_put(&a, i * UNIT, UNIT);
		assert_int_equal(a.nfree, i / 2 + 1);
	}
	assert_int_equal(kvr_alloc_largest(&a), UNIT);
	assert_int_equal(kvr_alloc_get(&a, 2 * UNIT), -ENOSPC);
	/* each odd free joins two holes into one */
	for (uint64_t i = 1; i < n - 1; i += 2) {
		kvr_alloc_put(&a, i * UNIT, UNIT);
		assert_int_equal(a.nfree, n / 2 - (i + 1) / 2);
		assert_int_equal(kvr_alloc_largest(&a), (i + 2) * UNIT);
	}
	/* the last one only extends the single extent to the end */
	kvr_alloc_put(&a, (n - 1) * UNIT, UNIT);
	assert_pristine(&a);
	kvr_alloc_fini(&a);
}

static void test_best_fit(void **state)
{
	struct kvr_alloc a;

	(void)state;
	assert_int_equal(kvr_alloc_init(&a, 32 * UNIT, UNIT), 0);
	assert_int_equal(kvr_alloc_get(&a, 32 * UNIT), 0);
	/* holes: [0,3) [4,5) [6,8) [9,10) [12,14), rest used */
	kvr_alloc_put(&a, 0, 3 * UNIT);
	kvr_alloc_put(&a, 4 * UNIT, UNIT);
	kvr_alloc_put(&a, 6 * UNIT, 2 * UNIT);
	kvr_alloc_put(&a, 9 * UNIT, UNIT);
	kvr_alloc_put(&a, 12 * UNIT, 2 * UNIT);
	assert_int_equal(a.nfree, 5);
	assert_int_equal(kvr_alloc_largest(&a), 3 * UNIT);
	/* smallest hole that fits, lowest address among equals */
	assert_int_equal(kvr_alloc_get(&a, 2 * UNIT), 6 * UNIT);
	assert_int_equal(kvr_alloc_get(&a, 2 * UNIT), 12 * UNIT);
	assert_int_equal(kvr_alloc_get(&a, UNIT), 4 * UNIT);
	assert_int_equal(kvr_alloc_get(&a, UNIT), 9 * UNIT);
	assert_int_equal(kvr_alloc_get(&a, 2 * UNIT), 0);
	assert_int_equal(a.nfree, 1);
	assert_int_equal(kvr_alloc_largest(&a), UNIT);
	assert_int_equal(kvr_alloc_get(&a, 2 * UNIT), -ENOSPC);
	assert_int_equal(kvr_alloc_get(&a, UNIT), 2 * UNIT);
	assert_int_equal(a.nfree, 0);
	assert_int_equal(a.used, 32 * UNIT);
	kvr_alloc_put(&a, 0, 32 * UNIT);
	assert_pristine(&a);
	kvr_alloc_fini(&a);
}

static void test_reserve(void **state)
{
	const uint64_t cap = 100 * UNIT;
	struct kvr_alloc a;

	(void)state;
	assert_int_equal(kvr_alloc_init(&a, cap, UNIT), 0);
	/* bad ranges */
	assert_int_equal(kvr_alloc_reserve(&a, 1, UNIT), -EINVAL);
	assert_int_equal(kvr_alloc_reserve(&a, UNIT, UNIT + 1), -EINVAL);
	assert_int_equal(kvr_alloc_reserve(&a, cap, UNIT), -EINVAL);
	assert_int_equal(kvr_alloc_reserve(&a, cap - UNIT, 2 * UNIT), -EINVAL);
	assert_int_equal(kvr_alloc_reserve(&a, UINT64_MAX & ~(UNIT - 1), 2 * UNIT), -EINVAL);
	assert_int_equal(kvr_alloc_reserve(&a, UNIT, UINT64_MAX & ~(UNIT - 1)), -EINVAL);
	assert_int_equal(kvr_alloc_reserve(&a, 0, 0), 0);
	assert_pristine(&a);

	/* middle: splits the extent */
	assert_int_equal(kvr_alloc_reserve(&a, 10 * UNIT, 5 * UNIT), 0);
	assert_int_equal(a.nfree, 2);
	assert_int_equal(a.used, 5 * UNIT);
	assert_int_equal(kvr_alloc_largest(&a), 85 * UNIT);
	/* overlapping a used range, wholly or in part */
	assert_int_equal(kvr_alloc_reserve(&a, 10 * UNIT, 5 * UNIT), -EEXIST);
	assert_int_equal(kvr_alloc_reserve(&a, 11 * UNIT, UNIT), -EEXIST);
	assert_int_equal(kvr_alloc_reserve(&a, 8 * UNIT, 3 * UNIT), -EEXIST);
	assert_int_equal(kvr_alloc_reserve(&a, 14 * UNIT, 2 * UNIT), -EEXIST);
	assert_int_equal(kvr_alloc_reserve(&a, 0, cap), -EEXIST);
	assert_int_equal(a.used, 5 * UNIT);
	assert_int_equal(a.nfree, 2);
	/* adjacent on both sides, then the start and end of the space */
	assert_int_equal(kvr_alloc_reserve(&a, 15 * UNIT, UNIT), 0);
	assert_int_equal(kvr_alloc_reserve(&a, 9 * UNIT, UNIT), 0);
	assert_int_equal(a.nfree, 2);
	assert_int_equal(kvr_alloc_reserve(&a, 0, UNIT), 0);
	assert_int_equal(kvr_alloc_reserve(&a, cap - UNIT, UNIT), 0);
	assert_int_equal(a.nfree, 2);
	assert_int_equal(kvr_alloc_largest(&a), 83 * UNIT);
	/* a whole free extent: [1,9) */
	assert_int_equal(kvr_alloc_reserve(&a, UNIT, 8 * UNIT), 0);
	assert_int_equal(a.nfree, 1);
	/* get never hands out reserved space */
	assert_int_equal(kvr_alloc_get(&a, 83 * UNIT), 16 * UNIT);
	assert_int_equal(a.used, cap);
	assert_int_equal(a.nfree, 0);
	assert_int_equal(kvr_alloc_reserve(&a, 50 * UNIT, UNIT), -EEXIST);

	/* reserved ranges are given back like allocated ones */
	kvr_alloc_put(&a, 10 * UNIT, 5 * UNIT);
	kvr_alloc_put(&a, cap - UNIT, UNIT);
	kvr_alloc_put(&a, 0, UNIT);
	kvr_alloc_put(&a, 16 * UNIT, 83 * UNIT);
	assert_int_equal(a.nfree, 3);
	kvr_alloc_put(&a, 9 * UNIT, UNIT);
	kvr_alloc_put(&a, UNIT, 8 * UNIT);
	kvr_alloc_put(&a, 15 * UNIT, UNIT);
	assert_pristine(&a);
	assert_int_equal(kvr_alloc_reserve(&a, 0, cap), 0);
	assert_int_equal(a.nfree, 0);
	kvr_alloc_put(&a, 0, cap);
	assert_pristine(&a);
	kvr_alloc_fini(&a);
}

/* ------------------------------------------------------- model check */

struct model {
	uint64_t units;
	uint8_t *used;
};

static void model_runs(const struct model *m, uint64_t *nruns, uint64_t *largest, uint64_t *used)
{
	uint64_t run = 0;

	*nruns = *largest = *used = 0;
	for (uint64_t i = 0; i < m->units; i++) {
		if (m->used[i]) {
			(*used)++;
			run = 0;
			continue;
		}
		if (run++ == 0)
			(*nruns)++;
		if (run > *largest)
			*largest = run;
	}
}

/* The best fit a correct allocator must pick: smallest run >= want, lowest
 * address among equals; UINT64_MAX if none. */
static uint64_t model_best_fit(const struct model *m, uint64_t want)
{
	uint64_t best = UINT64_MAX, best_len = UINT64_MAX;

	for (uint64_t i = 0; i < m->units;) {
		uint64_t j = i;

		if (m->used[i]) {
			i++;
			continue;
		}
		while (j < m->units && !m->used[j])
			j++;
		if (j - i >= want && j - i < best_len) {
			best = i;
			best_len = j - i;
		}
		i = j;
	}
	return best;
}

struct live {
	uint64_t off, len; /* units */
};

static void run_model(uint64_t units, uint64_t unit, uint64_t ops, uint64_t seed)
{
	struct model m = {units, calloc(units, 1)};
	struct live *lv = calloc(units, sizeof(*lv));
	uint64_t nlive = 0, rng = seed, nruns, largest, used;
	uint64_t stats[3] = {0};
	struct kvr_alloc a;

	assert_non_null(m.used);
	assert_non_null(lv);
	assert_int_equal(kvr_alloc_init(&a, units * unit, unit), 0);
	for (uint64_t op = 0; op < ops; op++) {
		uint64_t r = kvt_rand(&rng) % 100;

		if (r < 45) {
			/* get: mostly small, sometimes large */
			uint64_t want = kvt_rand(&rng) % 4 ? 1 + kvt_rand(&rng) % 8
							   : 1 + kvt_rand(&rng) % (units / 4);
			uint64_t fit = model_best_fit(&m, want);
			int64_t got = kvr_alloc_get(&a, want * unit - kvt_rand(&rng) % unit);

			if (fit == UINT64_MAX) {
				assert_int_equal(got, -ENOSPC);
				continue;
			}
			assert_int_equal(got, (int64_t)(fit * unit));
			for (uint64_t i = fit; i < fit + want; i++)
				m.used[i] = 1;
			lv[nlive++] = (struct live){fit, want};
			stats[0]++;
		} else if (r < 90) {
			uint64_t k;

			if (!nlive)
				continue;
			k = kvt_rand(&rng) % nlive;
			kvr_alloc_put(&a, lv[k].off * unit, lv[k].len * unit);
			for (uint64_t i = lv[k].off; i < lv[k].off + lv[k].len; i++) {
				assert_true(m.used[i]);
				m.used[i] = 0;
			}
			lv[k] = lv[--nlive];
			stats[1]++;
		} else {
			uint64_t off = kvt_rand(&rng) % units;
			uint64_t len = 1 + kvt_rand(&rng) % 6;
			int expect = 0;

			if (off + len > units) {
				assert_int_equal(kvr_alloc_reserve(&a, off * unit, len * unit),
						 -EINVAL);
				continue;
			}
			for (uint64_t i = off; i < off + len; i++)
				if (m.used[i])
					expect = -EEXIST;
			assert_int_equal(kvr_alloc_reserve(&a, off * unit, len * unit), expect);
			if (expect)
				continue;
			for (uint64_t i = off; i < off + len; i++)
				m.used[i] = 1;
			lv[nlive++] = (struct live){off, len};
			stats[2]++;
		}
		model_runs(&m, &nruns, &largest, &used);
		assert_int_equal(a.used, used * unit);
		assert_int_equal(a.nfree, nruns);
		assert_int_equal(kvr_alloc_largest(&a), largest * unit);
	}
	/* every kind of operation really happened */
	assert_true(stats[0] > ops / 10 && stats[1] > ops / 10 && stats[2] > ops / 100);
	while (nlive) {
		nlive--;
		kvr_alloc_put(&a, lv[nlive].off * unit, lv[nlive].len * unit);
	}
	assert_pristine(&a);
	kvr_alloc_fini(&a);
	free(m.used);
	free(lv);
}

static void test_model_random(void **state)
{
	(void)state;
	run_model(256, UNIT, 100000, 1);
	run_model(61, 512, 30000, 2);
	run_model(1024, 1, 30000, 3);
}

/* 16 TiB in 4 KiB units: 2^32 units. Memory must follow the free extents. */
static void test_big_capacity(void **state)
{
	const uint64_t cap = 16ull << 40, n = 20000;
	uint64_t *off = calloc(n, sizeof(*off)), *len = calloc(n, sizeof(*len));
	uint64_t *perm = calloc(n, sizeof(*perm));
	uint64_t rng = 42, sum = 0;
	size_t base, after_init, peak = 0;
	struct kvr_alloc a;

	(void)state;
	assert_non_null(off);
	assert_non_null(len);
	assert_non_null(perm);
	base = heap_bytes();
	assert_int_equal(kvr_alloc_init(&a, cap, UNIT), 0);
	after_init = heap_bytes();
	assert_true(after_init - base < 4096);
	assert_pristine(&a);

	for (uint64_t i = 0; i < n; i++) {
		/* up to 64 MiB, and reservations scattered over the whole space,
		 * which split the free space into many extents */
		len[i] = (1 + kvt_rand(&rng) % (1u << 14)) * UNIT;
		if (i % 2) {
			int64_t r = kvr_alloc_get(&a, len[i]);

			assert_true(r >= 0);
			off[i] = (uint64_t)r;
		} else {
			do
				off[i] = (kvt_rand(&rng) % (cap / UNIT)) * UNIT;
			while (off[i] + len[i] > cap || kvr_alloc_reserve(&a, off[i], len[i]));
		}
		sum += len[i];
		assert_int_equal(a.used, sum);
		if (heap_bytes() > peak)
			peak = heap_bytes();
		/* allowance per free extent: a node plus malloc overhead */
		assert_true(heap_bytes() - base <= 16384 + a.nfree * 160);
	}
	assert_true(a.nfree > n / 4);
	assert_true(peak - base < 8u << 20);
	for (uint64_t i = 0; i < n; i++)
		perm[i] = i;
	shuffle(perm, n, &rng);
	for (uint64_t k = 0; k < n; k++) {
		kvr_alloc_put(&a, off[perm[k]], len[perm[k]]);
		assert_true(heap_bytes() - base <= 16384 + a.nfree * 160);
	}
	assert_pristine(&a);
	assert_true(heap_bytes() - base < 16384);
	/* offsets near the top of the space survive the int64_t return */
	assert_int_equal(kvr_alloc_reserve(&a, 0, cap - UNIT), 0);
	assert_int_equal(kvr_alloc_get(&a, 1), (int64_t)(cap - UNIT));
	kvr_alloc_put(&a, 0, cap);
	assert_pristine(&a);
	kvr_alloc_fini(&a);
	assert_true(heap_bytes() <= base);
	free(off);
	free(len);
	free(perm);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_init_args),	   cmocka_unit_test(test_get_sizes),
	    cmocka_unit_test(test_fill_and_drain), cmocka_unit_test(test_holes),
	    cmocka_unit_test(test_best_fit),	   cmocka_unit_test(test_reserve),
	    cmocka_unit_test(test_model_random),   cmocka_unit_test(test_big_capacity),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
