/* SPDX-License-Identifier: MIT */
/*
 * Faulting a memory pool in on a thread of its own, front to back, so that
 * the store can serve at once while its pages arrive. The thread touches
 * nothing but the pages (MADV_POPULATE_WRITE, or an atomic no-op write per
 * page on kernels without it), so the engine may store objects into any part
 * of the pool meanwhile: a page it reaches first is faulted by that write.
 */
#ifndef KVR_PREFAULT_H
#define KVR_PREFAULT_H

#include <stddef.h>
#include <stdint.h>

struct kvr_prefault;

/* Start faulting [base, base+len) in, at most `rate` bytes per second (0:
 * as fast as the machine goes). 0 with *out set, -ENOMEM, or the errno of
 * pthread_create. The thread blocks every signal. */
int kvr_prefault_start(uint8_t *base, size_t len, uint64_t rate, struct kvr_prefault **out);

/* Bytes from base faulted in so far (any thread). *err receives 0, or the
 * negative errno that stopped the faulting early (the rest of the pool is
 * then faulted by its first use). */
uint64_t kvr_prefault_done(struct kvr_prefault *pf, int *err);

/* Stop (if still running), join the thread and free pf. */
void kvr_prefault_stop(struct kvr_prefault *pf);

#endif
