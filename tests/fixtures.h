/* SPDX-License-Identifier: MIT */
/* Shared test fixtures: scratch paths, deterministic data, engine helpers. */
#ifndef KVR_TEST_FIXTURES_H
#define KVR_TEST_FIXTURES_H

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <cmocka.h>

#include "kvring.h"

/* A fresh path under $KVR_TEST_DIR (created if needed) unique to this process:
 * "<dir>/<name>.<pid>". Returns a static buffer (one per call site is fine:
 * copy it if you need two). */
const char *kvt_path(const char *name);
/* Remove a file made by kvt_path (ignores errors). */
void kvt_unlink(const char *path);

/* Fill buf with bytes derived from (seed, offset): same seed → same bytes. */
void kvt_fill(void *buf, size_t len, uint64_t seed);
/* 1 if buf holds exactly what kvt_fill(buf, len, seed) wrote. */
int kvt_check(const void *buf, size_t len, uint64_t seed);
/* The same bytes seen from offset off of the object: fill [off, off+len);
 * check returns the index of the first wrong byte, or len if all match. */
void kvt_fill_at(void *buf, size_t len, uint64_t seed, uint64_t off);
size_t kvt_check_at(const void *buf, size_t len, uint64_t seed, uint64_t off);
uint64_t kvt_rand(uint64_t *state); /* splitmix64 */
/* An integer from the environment (any base strtoull takes), or dflt. */
uint64_t kvt_env_u64(const char *name, uint64_t dflt);

/* Page-aligned anonymous memory (mmap), zeroed; kvt_free_mem to release. */
void *kvt_alloc_mem(size_t len);
void kvt_free_mem(void *p, size_t len);

/* Engine with defaults (asserts success); KVR_TEST_LOG=warn|info|debug in
 * the environment sends the library's log to stderr. */
kvr_engine *kvt_engine(void);

/* Batch completion recorder: pass kvt_batch_cb and a struct kvt_done. */
struct kvt_done {
	int calls; /* how many times the callback ran */
	size_t n;
	int64_t results[16384];
};
void kvt_batch_cb(void *ctx, size_t n, const int64_t *results);
/* Poll until d->calls > 0 or timeout_ms passes; returns d->calls. */
int kvt_wait(kvr_engine *e, struct kvt_done *d, int timeout_ms);

#endif
