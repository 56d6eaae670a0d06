/* SPDX-License-Identifier: MIT */
/*
 * The registered buffer arena of a kvring-bench workload (workload.c,
 * kvcache.c): anonymous host memory (transparent huge pages asked for) or,
 * with --mem cuda, CUDA device memory, registered once with the engine.
 */
#include <errno.h>
#include <string.h>
#include <sys/mman.h>

#include "bench.h"

int bench_arena_make(kvr_engine *e, size_t len, bool cuda, const char *what, struct bench_arena *a)
{
	char why[200];
	void *p;
	int rc;

	memset(a, 0, sizeof(*a));
	if (cuda) {
		rc = devmem_alloc(len, &p, why, sizeof(why));
		if (rc) {
			fprintf(stderr, "kvring-bench: --mem cuda: %s\n", why);
			return rc;
		}
	} else {
		p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (p == MAP_FAILED) {
			fprintf(stderr, "kvring-bench: cannot map a %zu-byte %s: %s\n", len, what,
				strerror(errno));
			return -ENOMEM;
		}
		madvise(p, len, MADV_HUGEPAGE);
	}
	a->p = p;
	a->len = len;
	a->dev = cuda;
	rc = kvr_mem_register(e, p, len, cuda ? KVR_MEM_CUDA : KVR_MEM_HOST, &a->mr);
	if (rc) {
		char msg[128];

		a->mr = NULL;
		snprintf(msg, sizeof(msg), "cannot register the %s", what);
		bench_errmsg(e, rc, msg, NULL);
	}
	return rc;
}

bool bench_arena_release(kvr_engine *e, struct bench_arena *a, const char *what)
{
	int rc;

	if (a->mr) {
		rc = kvr_mem_deregister(e, a->mr);
		if (rc) {
			char msg[128];

			snprintf(msg, sizeof(msg), "cannot deregister the %s", what);
			bench_errmsg(e, rc, msg, NULL);
			return false; /* the engine may still use it: leave it mapped */
		}
		a->mr = NULL;
	}
	if (a->p) {
		if (a->dev)
			devmem_free(a->p);
		else
			munmap(a->p, a->len);
	}
	a->p = NULL;
	return true;
}
