/* SPDX-License-Identifier: MIT */
/*
 * Registered memory: regions sorted by address (binary search per SGE), each
 * host region mapped onto io_uring fixed-buffer slots of at most 1 GiB in a
 * sparse table updated at run time. A deferred region takes its slots at
 * once and has them filled piece by piece later, as its owner faults the
 * memory in (the memory store's background faulting); the memory listeners
 * hear of each piece then too (the RDMA devices register it).
 */
#include "engine/engine.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/uio.h>

int kvr_registry_init(kvr_engine *e, uint32_t slots)
{
	int rc = io_uring_register_buffers_sparse(&e->ring, slots);

	if (rc) {
		/* Without a sparse table every region takes the plain path. */
		kvr_log(e, KVR_LOG_WARN, "sparse fixed-buffer table unavailable: %s",
			strerror(-rc));
		slots = 0;
	}
	e->nslots = slots;
	e->free_slots = calloc(slots ? slots : 1, sizeof(*e->free_slots));
	if (!e->free_slots)
		return -ENOMEM;
	for (uint32_t i = 0; i < slots; i++)
		e->free_slots[i] = (uint16_t)(slots - 1 - i);
	e->nfree_slots = slots;
	/* Registered files: a small sparse table the stores take slots from. */
	e->nfile_slots =
	    io_uring_register_files_sparse(&e->ring, KVR_FILE_SLOTS) ? 0 : KVR_FILE_SLOTS;
	return 0;
}

int kvr_file_slot(kvr_engine *e, int fd)
{
	for (uint32_t i = 0; i < e->nfile_slots; i++) {
		if (!(e->file_used & (1ull << i))) {
			if (io_uring_register_files_update(&e->ring, i, &fd, 1) != 1)
				return -1;
			e->file_used |= 1ull << i;
			return (int)i;
		}
	}
	return -1;
}

void kvr_file_unslot(kvr_engine *e, int slot)
{
	int none = -1;

	if (slot < 0)
		return;
	io_uring_register_files_update(&e->ring, (unsigned)slot, &none, 1);
	e->file_used &= ~(1ull << slot);
}

/* Index of the first region whose base is > addr. */
static uint32_t upper_bound(kvr_engine *e, uintptr_t addr)
{
	uint32_t lo = 0, hi = e->nregions;

	while (lo < hi) {
		uint32_t mid = (lo + hi) / 2;

		if (e->regions[mid]->base <= addr)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

struct kvr_mr *kvr_mr_find(kvr_engine *e, const void *addr, size_t len)
{
	uintptr_t a = (uintptr_t)addr;
	struct kvr_mr *mr = e->last_mr;

	if (!(mr && a >= mr->base && a - mr->base < mr->len)) {
		uint32_t i = upper_bound(e, a);

		if (i == 0)
			return NULL;
		mr = e->regions[i - 1];
		if (a - mr->base >= mr->len)
			return NULL;
		e->last_mr = mr;
	}
	if (len > mr->len - (a - mr->base))
		return NULL;
	return mr;
}

static void release_slots(kvr_engine *e, struct kvr_mr *mr, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++) {
		struct iovec iov = {NULL, 0};
		__u64 tag = 0;

		uint16_t slot = mr->slot[i] & (uint16_t)~KVR_SLOT_UNPINNED;

		if (!(mr->slot[i] & KVR_SLOT_UNPINNED))
			io_uring_register_buffers_update_tag(&e->ring, slot, &iov, &tag, 1);
		e->free_slots[e->nfree_slots++] = slot;
	}
}

static int memlock_error(kvr_engine *e, size_t len)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_MEMLOCK, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
		kvr_set_errmsg(
		    e,
		    "pinning %zu bytes failed: RLIMIT_MEMLOCK is %llu bytes (raise it with "
		    "ulimit -l or limits.conf)",
		    len, (unsigned long long)rl.rlim_cur);
	} else {
		kvr_set_errmsg(e, "pinning %zu bytes failed: out of memory (RLIMIT_MEMLOCK)", len);
	}
	return -ENOMEM;
}

/* Fill slot with piece i of mr (which faults and pins its pages). */
static int pin_piece(kvr_engine *e, struct kvr_mr *mr, uint32_t i, uint16_t slot)
{
	uintptr_t off = (uintptr_t)i * KVR_FIXED_MAX;
	struct iovec iov = {(void *)(mr->base + off),
			    mr->len - off < KVR_FIXED_MAX ? mr->len - off : KVR_FIXED_MAX};
	__u64 tag = 0;
	int rc = io_uring_register_buffers_update_tag(&e->ring, slot, &iov, &tag, 1);

	return rc < 0 ? rc : 0;
}

/* Fill the region's fixed-buffer slots; on failure, undo and say why. */
static int map_fixed(kvr_engine *e, struct kvr_mr *mr, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++) {
		uint16_t slot = e->free_slots[--e->nfree_slots];
		int rc;

		mr->slot[i] = slot;
		rc = pin_piece(e, mr, i, slot);
		if (rc < 0) {
			e->free_slots[e->nfree_slots++] = slot;
			release_slots(e, mr, i);
			return rc;
		}
	}
	mr->nfixed = n;
	return 0;
}

/* Take the region's slots now and leave them empty (kvr_mr_pin_piece). */
static void reserve_fixed(kvr_engine *e, struct kvr_mr *mr, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++)
		mr->slot[i] = e->free_slots[--e->nfree_slots] | KVR_SLOT_UNPINNED;
	mr->nfixed = n;
}

int kvr_mr_pin_piece(kvr_engine *e, struct kvr_mr *mr, uint32_t i)
{
	int rc = 0;

	if (!mr->piece_ready || i >= kvr_mr_npieces(mr) || mr->piece_ready[i])
		return 0;
	if (i < mr->nfixed && mr->slot[i] & KVR_SLOT_UNPINNED) {
		uint16_t slot = mr->slot[i] & (uint16_t)~KVR_SLOT_UNPINNED;

		rc = pin_piece(e, mr, i, slot);
		if (!rc)
			mr->slot[i] = slot;
	}
	mr->piece_ready[i] = 1;
	for (struct kvr_mem_listener *l = e->listeners; l; l = l->next)
		if (l->piece_ready)
			l->piece_ready(l, mr, i);
	return rc;
}

/* The kernel refuses to pin file-backed pages with the same -EFAULT it gives
 * for unmapped ones; msync tells them apart (ENOMEM: a hole). */
static bool is_mapped(uintptr_t a, size_t len)
{
	uintptr_t pg = (uintptr_t)sysconf(_SC_PAGESIZE), start = a & ~(pg - 1);

	return msync((void *)start, a + len - start, MS_ASYNC) == 0;
}

/* Tell the listeners before `stop` that mr is going (newest first). */
static void notify_removed(kvr_engine *e, struct kvr_mr *mr, struct kvr_mem_listener *stop)
{
	for (struct kvr_mem_listener *l = e->listeners; l && l != stop; l = l->next)
		l->removed(l, mr);
}

static int notify_added(kvr_engine *e, struct kvr_mr *mr)
{
	for (struct kvr_mem_listener *l = e->listeners; l; l = l->next) {
		int rc = l->added(l, mr);

		if (rc) {
			notify_removed(e, mr, l);
			return rc;
		}
	}
	return 0;
}

int kvr_mem_listen(kvr_engine *e, struct kvr_mem_listener *l)
{
	bool used[KVR_MR_EXT] = {false};
	int slot = -1;

	for (struct kvr_mem_listener *o = e->listeners; o; o = o->next)
		used[o->slot] = true;
	for (int i = 0; i < KVR_MR_EXT && slot < 0; i++)
		if (!used[i])
			slot = i;
	if (slot < 0)
		return -ENOSPC;
	l->slot = slot;
	for (uint32_t i = 0; i < e->nregions; i++) {
		int rc;

		e->regions[i]->ext[slot] = NULL;
		rc = l->added(l, e->regions[i]);
		if (rc) {
			while (i-- > 0)
				l->removed(l, e->regions[i]);
			return rc;
		}
	}
	l->next = e->listeners;
	e->listeners = l;
	return 0;
}

void kvr_mem_unlisten(kvr_engine *e, struct kvr_mem_listener *l)
{
	struct kvr_mem_listener **pp = &e->listeners;

	while (*pp && *pp != l)
		pp = &(*pp)->next;
	if (!*pp)
		return;
	*pp = l->next;
	for (uint32_t i = 0; i < e->nregions; i++) {
		l->removed(l, e->regions[i]);
		e->regions[i]->ext[l->slot] = NULL;
	}
}

/* kvr_mem_register's work once the arguments are checked; with `defer`,
 * host memory gets its slots reserved instead of pinned. */
static int mem_register(kvr_engine *e, void *addr, size_t len, unsigned flags, bool defer,
			kvr_mr **out)
{
	uintptr_t a = (uintptr_t)addr;
	struct kvr_mr *mr;
	uint32_t n, i;
	int rc;

	if (flags & (KVR_MEM_CUDA | KVR_MEM_CUDA_PINNED) && !e->devmem) {
		rc = kvr_devmem_attach(e);
		if (rc)
			return rc;
	}
	i = upper_bound(e, a);
	if ((i > 0 && e->regions[i - 1]->base + e->regions[i - 1]->len > a) ||
	    (i < e->nregions && e->regions[i]->base < a + len)) {
		kvr_set_errmsg(e, "region %p+%zu overlaps a registered region", addr, len);
		return -EEXIST;
	}
	n = (uint32_t)((len + KVR_FIXED_MAX - 1) / KVR_FIXED_MAX);
	/* A deferred region's readiness per piece follows its slots. */
	mr = calloc(1, sizeof(*mr) + n * sizeof(mr->slot[0]) + (defer ? n : 0));
	if (!mr)
		return -ENOMEM;
	if (defer)
		mr->piece_ready = (uint8_t *)&mr->slot[n];
	mr->e = e;
	mr->base = a;
	mr->len = len;
	mr->flags = flags;
	if (e->nregions == e->cap_regions) {
		uint32_t cap = e->cap_regions ? e->cap_regions * 2 : 16;
		struct kvr_mr **v = realloc(e->regions, cap * sizeof(*v));

		if (!v) {
			free(mr);
			return -ENOMEM;
		}
		e->regions = v;
		e->cap_regions = cap;
	}
	if (flags & KVR_MEM_CUDA) {
		/* Device memory: never a fixed buffer; the provider vouches. */
		rc = e->devmem->check(e->devmem, addr, len);
		if (rc) {
			free(mr);
			return rc;
		}
	} else if (flags & KVR_MEM_NO_PIN) {
		/* Not a fixed buffer: nothing is pinned now, and every I/O
		 * resolves the addresses afresh (the plain, still zero-copy,
		 * path), so the owner may remap the memory under us. */
	} else if (n > e->nfree_slots) {
		if (e->nslots) {
			kvr_set_errmsg(e, "fixed-buffer table full (%u slots of 1 GiB)", e->nslots);
			free(mr);
			return -ENOSPC;
		}
	} else if (defer) {
		reserve_fixed(e, mr, n);
	} else {
		rc = map_fixed(e, mr, n);
		if (rc == -ENOMEM || rc == -EAGAIN) {
			free(mr);
			return memlock_error(e, len);
		}
		if (rc == -EFAULT && !is_mapped(a, len)) {
			kvr_set_errmsg(e, "region %p+%zu is not mapped memory", addr, len);
			free(mr);
			return -EFAULT;
		}
		if (rc < 0) {
			/* Memory io_uring cannot pin (e.g. file-backed mappings) still
			 * works through the plain read/write path. */
			kvr_log(e, KVR_LOG_INFO, "region %p+%zu: plain path (%s)", addr, len,
				strerror(-rc));
		}
	}
	if (flags & KVR_MEM_CUDA_PINNED) {
		rc = e->devmem->pin(e->devmem, addr, len);
		if (rc) {
			release_slots(e, mr, mr->nfixed);
			free(mr);
			return rc;
		}
	}
	rc = notify_added(e, mr);
	if (rc) {
		if (flags & KVR_MEM_CUDA_PINNED)
			e->devmem->unpin(e->devmem, addr, len);
		release_slots(e, mr, mr->nfixed);
		free(mr);
		return rc;
	}
	memmove(&e->regions[i + 1], &e->regions[i], (e->nregions - i) * sizeof(*e->regions));
	e->regions[i] = mr;
	e->nregions++;
	*out = mr;
	return 0;
}

KVR_EXPORT int kvr_mem_register(kvr_engine *e, void *addr, size_t len, unsigned flags, kvr_mr **out)
{
	uintptr_t a = (uintptr_t)addr;

	if (!e || !addr || !len || !out || a + len < a)
		return -EINVAL;
	e->errmsg[0] = 0; /* a message explains this call's failure only */
	if (flags & ~(unsigned)(KVR_MEM_CUDA | KVR_MEM_CUDA_PINNED | KVR_MEM_NO_PIN) ||
	    (flags & KVR_MEM_CUDA && flags & (KVR_MEM_CUDA_PINNED | KVR_MEM_NO_PIN)))
		return -EINVAL;
	return mem_register(e, addr, len, flags, false, out);
}

int kvr_mem_register_deferred(kvr_engine *e, void *addr, size_t len, kvr_mr **out)
{
	uintptr_t a = (uintptr_t)addr;

	if (!e || !addr || !len || !out || a + len < a)
		return -EINVAL;
	e->errmsg[0] = 0;
	return mem_register(e, addr, len, KVR_MEM_HOST, true, out);
}

KVR_EXPORT int kvr_mem_deregister(kvr_engine *e, kvr_mr *mr)
{
	uint32_t i;

	if (!e || !mr || mr->e != e)
		return -EINVAL;
	if (mr->inflight)
		return -EBUSY;
	for (i = 0; i < e->nregions && e->regions[i] != mr; i++)
		;
	if (i == e->nregions)
		return -EINVAL;
	notify_removed(e, mr, NULL);
	if (mr->flags & KVR_MEM_CUDA_PINNED)
		e->devmem->unpin(e->devmem, (void *)mr->base, mr->len);
	release_slots(e, mr, mr->nfixed);
	memmove(&e->regions[i], &e->regions[i + 1], (e->nregions - i - 1) * sizeof(*e->regions));
	e->nregions--;
	if (e->last_mr == mr)
		e->last_mr = NULL;
	free(mr);
	return 0;
}

void kvr_registry_fini(kvr_engine *e)
{
	for (uint32_t i = 0; i < e->nregions; i++)
		free(e->regions[i]);
	free(e->regions);
	free(e->free_slots);
	e->regions = NULL;
	e->nregions = 0;
}
