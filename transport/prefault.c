/* SPDX-License-Identifier: MIT */
/*
 * The memory pool's faulting thread (see prefault.h). It works in chunks,
 * publishing its progress after each, and between chunks it checks for a
 * stop and, with a rate, waits until the schedule allows the next one.
 */
#include "transport/prefault.h"
#include "engine/compat.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include <sys/mman.h>

/* Small enough that a stop is seen within a fraction of a second even
 * where first touch is slow (a fresh virtual machine's memory), large
 * enough that the madvise calls cost nothing. */
#define CHUNK (32ull << 20)

struct kvr_prefault {
	uint8_t *base;
	size_t len;
	uint64_t rate;
	pthread_t th;
	pthread_mutex_t mu;
	pthread_cond_t cv; /* signalled on stop */
	bool stop;	   /* under mu */
	uint64_t done;	   /* atomic: bytes faulted */
	int err;	   /* atomic: why it stopped early, or 0 */
};

/* Write-fault every page of [p, p+len) without changing a byte: a
 * compare-and-swap of a byte with itself, so that a concurrent store of the
 * engine's into the same page is never lost. */
static void touch(uint8_t *p, size_t len)
{
	size_t pg = (size_t)sysconf(_SC_PAGESIZE);

	for (size_t off = 0; off < len; off += pg) {
		uint8_t v = __atomic_load_n(p + off, __ATOMIC_RELAXED);

		__atomic_compare_exchange_n(p + off, &v, v, false, __ATOMIC_RELAXED,
					    __ATOMIC_RELAXED);
	}
}

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Wait until `when` (CLOCK_MONOTONIC ns) or a stop. true when stopped. */
static bool wait_until(struct kvr_prefault *pf, uint64_t when)
{
	struct timespec ts = {(time_t)(when / 1000000000ull), (long)(when % 1000000000ull)};
	bool stop;

	pthread_mutex_lock(&pf->mu);
	while (!pf->stop && mono_ns() < when)
		pthread_cond_timedwait(&pf->cv, &pf->mu, &ts);
	stop = pf->stop;
	pthread_mutex_unlock(&pf->mu);
	return stop;
}

/* Fault one chunk in; 0 or a negative errno. */
static int fault_chunk(uint8_t *p, size_t n, bool *populate)
{
	while (*populate && madvise(p, n, MADV_POPULATE_WRITE)) {
		if (errno == EINVAL) {
			*populate = false; /* kernel before 5.14 */
			break;
		}
		if (errno != EINTR && errno != EAGAIN)
			return -errno;
	}
	if (!*populate)
		touch(p, n);
	return 0;
}

static void *prefault_main(void *arg)
{
	struct kvr_prefault *pf = arg;
	uint64_t start = mono_ns(), off = 0, chunk = CHUNK;
	bool populate = true;

	/* With a rate, a tenth of a second's worth at a time (at least 2 MiB,
	 * a huge page), so the progress moves smoothly. */
	if (pf->rate && pf->rate / 10 < chunk)
		chunk =
		    pf->rate / 10 < (2u << 20) ? (2u << 20) : pf->rate / 10 & ~((2ull << 20) - 1);
	while (off < pf->len) {
		size_t n = pf->len - off < chunk ? pf->len - off : chunk;
		int rc = fault_chunk(pf->base + off, n, &populate);

		if (rc) {
			__atomic_store_n(&pf->err, rc, __ATOMIC_RELEASE);
			break;
		}
		off += n;
		__atomic_store_n(&pf->done, off, __ATOMIC_RELEASE);
		if (off < pf->len &&
		    wait_until(pf, pf->rate
				       ? start + (uint64_t)((double)off * 1e9 / (double)pf->rate)
				       : 0))
			break;
	}
	return NULL;
}

int kvr_prefault_start(uint8_t *base, size_t len, uint64_t rate, struct kvr_prefault **out)
{
	struct kvr_prefault *pf = calloc(1, sizeof(*pf));
	pthread_condattr_t ca;
	sigset_t all, old;
	int rc;

	if (!pf)
		return -ENOMEM;
	pf->base = base;
	pf->len = len;
	pf->rate = rate;
	pthread_mutex_init(&pf->mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&pf->cv, &ca);
	pthread_condattr_destroy(&ca);
	/* The process's signals stay with the threads that expect them. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	rc = pthread_create(&pf->th, NULL, prefault_main, pf);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc) {
		pthread_cond_destroy(&pf->cv);
		pthread_mutex_destroy(&pf->mu);
		free(pf);
		return -rc;
	}
	*out = pf;
	return 0;
}

uint64_t kvr_prefault_done(struct kvr_prefault *pf, int *err)
{
	*err = __atomic_load_n(&pf->err, __ATOMIC_ACQUIRE);
	return __atomic_load_n(&pf->done, __ATOMIC_ACQUIRE);
}

void kvr_prefault_stop(struct kvr_prefault *pf)
{
	pthread_mutex_lock(&pf->mu);
	pf->stop = true;
	pthread_cond_signal(&pf->cv);
	pthread_mutex_unlock(&pf->mu);
	pthread_join(pf->th, NULL);
	pthread_cond_destroy(&pf->cv);
	pthread_mutex_destroy(&pf->mu);
	free(pf);
}
