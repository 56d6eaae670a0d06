/* SPDX-License-Identifier: MIT */
/* Logging through the host's sink (silent by default), error messages and
 * the latency histogram. */
#include "engine/engine.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static void vlog(kvr_engine *e, int level, const char *fmt, va_list ap)
{
	char buf[512];

	if (!e || !e->log || level > e->log_level)
		return;
	vsnprintf(buf, sizeof(buf), fmt, ap);
	e->log(e->log_ctx, level, buf);
}

void kvr_log(kvr_engine *e, int level, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vlog(e, level, fmt, ap);
	va_end(ap);
}

void kvr_set_errmsg(kvr_engine *e, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(e->errmsg, sizeof(e->errmsg), fmt, ap);
	va_end(ap);
	kvr_log(e, KVR_LOG_ERROR, "%s", e->errmsg);
}

KVR_EXPORT const char *kvr_engine_errmsg(kvr_engine *e)
{
	return e ? e->errmsg : "no engine";
}

KVR_EXPORT const char *kvr_strerror(int err)
{
	switch (err) {
	case 0:
		return "success";
	case -ENOENT:
		return "no such object";
	case -EMSGSIZE:
		return "stored object is larger than the scatter-gather list";
	case -EFAULT:
		return "memory is not inside a registered region";
	case -ETIMEDOUT:
		return "deadline passed";
	case -ECANCELED:
		return "canceled by close or shutdown";
	case -EBADF:
		return "target is closed";
	case -ESHUTDOWN:
		return "engine is shutting down";
	case -EUCLEAN:
		return "no valid store in the file";
	default:
		return strerror(err < 0 ? -err : err);
	}
}

uint64_t kvr_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void kvr_lat_record_n(uint64_t *hist, uint64_t ns, uint64_t n)
{
	uint64_t us = ns / 1000;
	int b = us ? 63 - __builtin_clzll(us) : 0;

	hist[b < KVR_LAT_BUCKETS ? b : KVR_LAT_BUCKETS - 1] += n;
}

void kvr_lat_record(uint64_t *hist, uint64_t ns)
{
	kvr_lat_record_n(hist, ns, 1);
}
