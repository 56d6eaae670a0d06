/* SPDX-License-Identifier: MIT */
#include "fixtures.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

const char *kvt_path(const char *name)
{
	static char buf[4096];
	const char *dir = getenv("KVR_TEST_DIR");

	if (!dir || !*dir)
		dir = "/tmp";
	mkdir(dir, 0755);
	snprintf(buf, sizeof(buf), "%s/%s.%d", dir, name, (int)getpid());
	return buf;
}

void kvt_unlink(const char *path)
{
	unlink(path);
}

uint64_t kvt_rand(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static uint64_t word_at(uint64_t seed, uint64_t idx)
{
	uint64_t s = seed * 0x100000001b3ull + idx;

	return kvt_rand(&s);
}

void kvt_fill_at(void *buf, size_t len, uint64_t seed, uint64_t off)
{
	uint8_t *p = buf;

	for (; len && (off & 7); p++, off++, len--) {
		uint64_t w = word_at(seed, off >> 3);

		*p = ((uint8_t *)&w)[off & 7];
	}
	for (; len >= 8; p += 8, off += 8, len -= 8) {
		uint64_t w = word_at(seed, off >> 3);

		memcpy(p, &w, 8);
	}
	if (len) {
		uint64_t w = word_at(seed, off >> 3);

		memcpy(p, &w, len);
	}
}

size_t kvt_check_at(const void *buf, size_t len, uint64_t seed, uint64_t off)
{
	const uint8_t *p = buf;
	size_t i = 0;

	while (i < len) {
		uint64_t w = word_at(seed, (off + i) >> 3);
		const uint8_t *wb = (const uint8_t *)&w;
		size_t end = i + 8 - ((off + i) & 7);

		if (!((off + i) & 7) && end <= len && memcmp(p + i, wb, 8) == 0) {
			i = end; /* whole word matches */
			continue;
		}
		for (end = end < len ? end : len; i < end; i++) {
			if (p[i] != wb[(off + i) & 7])
				return i;
		}
	}
	return len;
}

void kvt_fill(void *buf, size_t len, uint64_t seed)
{
	kvt_fill_at(buf, len, seed, 0);
}

int kvt_check(const void *buf, size_t len, uint64_t seed)
{
	return kvt_check_at(buf, len, seed, 0) == len;
}

uint64_t kvt_env_u64(const char *name, uint64_t dflt)
{
	const char *v = getenv(name);

	return v && *v ? strtoull(v, NULL, 0) : dflt;
}

void *kvt_alloc_mem(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	assert_true(p != MAP_FAILED);
	return p;
}

void kvt_free_mem(void *p, size_t len)
{
	munmap(p, len);
}

static void log_stderr(void *ctx, int level, const char *msg)
{
	static const char *names[] = {"error", "warn", "info", "debug"};

	(void)ctx;
	fprintf(stderr, "kvring %s: %s\n", names[level & 3], msg);
}

kvr_engine *kvt_engine(void)
{
	struct kvr_engine_opts o = {.size = sizeof(o)};
	const char *lv = getenv("KVR_TEST_LOG");
	kvr_engine *e = NULL;

	if (lv && *lv) { /* the library's log on stderr, for debugging a test */
		o.log = log_stderr;
		o.log_level = !strcmp(lv, "debug")  ? KVR_LOG_DEBUG
			      : !strcmp(lv, "info") ? KVR_LOG_INFO
						    : KVR_LOG_WARN;
	}
	assert_int_equal(kvr_engine_create(&o, &e), 0);
	assert_non_null(e);
	return e;
}

void kvt_batch_cb(void *ctx, size_t n, const int64_t *results)
{
	struct kvt_done *d = ctx;

	d->calls++;
	d->n = n;
	for (size_t i = 0; i < n && i < sizeof(d->results) / sizeof(d->results[0]); i++)
		d->results[i] = results[i];
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int kvt_wait(kvr_engine *e, struct kvt_done *d, int timeout_ms)
{
	int64_t end = now_ms() + timeout_ms;

	while (d->calls == 0) {
		int64_t left = end - now_ms();

		if (left <= 0)
			break;
		int r = kvr_engine_poll(e, (int)(left > 100 ? 100 : left));

		assert_true(r >= 0);
	}
	return d->calls;
}
