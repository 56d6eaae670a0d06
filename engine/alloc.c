// SPDX-License-Identifier: MIT
/*
 * Extent allocator. Every free extent is one node that sits in two AVL trees:
 * one ordered by address (to find neighbours when coalescing and the extent
 * that covers a reservation) and one ordered by (size, address) (best fit,
 * lowest address among equals). Used space is not represented at all, so
 * memory follows the number of free extents whatever the capacity.
 *
 * Free extents are kept maximal: no two are adjacent. That makes "is this
 * range entirely free" a question about a single extent.
 */
#include "engine/alloc.h"

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>

struct avl {
	struct avl *l, *r;
	int h; /* height; a leaf is 1 */
};

struct kvr_alloc_node {
	uint64_t off, len;
	struct avl by_addr, by_size;
};

/*
 * A few spare nodes so that put(), which cannot report failure, rarely has to
 * call malloc, and splits and merges in steady state reuse each other's nodes.
 */
#define SPARE_MAX 64
#define SPARE_LOW 4

struct alloc_impl {
	struct avl *by_addr, *by_size;
	struct kvr_alloc_node *spare; /* linked through by_addr.l */
	uint32_t nspare;
	uint64_t leaked; /* bytes put() could not track (no memory for a node) */
};

#define node_of(p, member)                                                                         \
	((struct kvr_alloc_node *)((char *)(p)-offsetof(struct kvr_alloc_node, member)))

static struct kvr_alloc_node *addr_node(const struct avl *p)
{
	return p ? node_of(p, by_addr) : NULL;
}

static struct kvr_alloc_node *size_node(const struct avl *p)
{
	return p ? node_of(p, by_size) : NULL;
}

/* Tree order: by offset, or by (length, offset). Offsets are unique, so no
 * two nodes compare equal in either tree. */
static inline bool node_less(const struct avl *a, const struct avl *b, bool by_size)
{
	const struct kvr_alloc_node *x, *y;

	if (!by_size)
		return addr_node(a)->off < addr_node(b)->off;
	x = size_node(a);
	y = size_node(b);
	return x->len < y->len || (x->len == y->len && x->off < y->off);
}

/* ------------------------------------------------------------------ AVL */

static int avl_height(const struct avl *n)
{
	return n ? n->h : 0;
}

static void avl_update(struct avl *n)
{
	int hl = avl_height(n->l), hr = avl_height(n->r);

	n->h = 1 + (hl > hr ? hl : hr);
}

static struct avl *avl_rot_right(struct avl *n)
{
	struct avl *l = n->l;

	n->l = l->r;
	l->r = n;
	avl_update(n);
	avl_update(l);
	return l;
}

static struct avl *avl_rot_left(struct avl *n)
{
	struct avl *r = n->r;

	n->r = r->l;
	r->l = n;
	avl_update(n);
	avl_update(r);
	return r;
}

static struct avl *avl_balance(struct avl *n)
{
	int b;

	avl_update(n);
	b = avl_height(n->l) - avl_height(n->r);
	if (b > 1) {
		if (avl_height(n->l->l) < avl_height(n->l->r))
			n->l = avl_rot_left(n->l);
		return avl_rot_right(n);
	}
	if (b < -1) {
		if (avl_height(n->r->r) < avl_height(n->r->l))
			n->r = avl_rot_right(n->r);
		return avl_rot_left(n);
	}
	return n;
}

/*
 * Recursion depth is the tree height, at most ~1.44 log2(n). A subtree whose
 * height did not change leaves every ancestor's height and balance as they
 * were, so the walk back up stops rebalancing there: that spares reading the
 * siblings along the rest of the path, which are mostly cache misses.
 */
static struct avl *avl_insert(struct avl *root, struct avl *n, bool by_size)
{
	struct avl **link;
	int h;

	if (!root) {
		n->l = n->r = NULL;
		n->h = 1;
		return n;
	}
	link = node_less(n, root, by_size) ? &root->l : &root->r;
	h = avl_height(*link);
	*link = avl_insert(*link, n, by_size);
	return (*link)->h == h ? root : avl_balance(root);
}

static struct avl *avl_pop_min(struct avl *root, struct avl **min)
{
	int h;

	if (!root->l) {
		*min = root;
		return root->r;
	}
	h = root->l->h;
	root->l = avl_pop_min(root->l, min);
	return avl_height(root->l) == h ? root : avl_balance(root);
}

/* n must be in the tree with the key it was inserted under. */
static struct avl *avl_remove(struct avl *root, struct avl *n, bool by_size)
{
	struct avl **link, *m, *r;
	int h;

	if (!root)
		return NULL;
	if (root != n) {
		link = node_less(n, root, by_size) ? &root->l : &root->r;
		h = avl_height(*link);
		*link = avl_remove(*link, n, by_size);
		return avl_height(*link) == h ? root : avl_balance(root);
	}
	if (!n->l)
		return n->r;
	if (!n->r)
		return n->l;
	r = avl_pop_min(n->r, &m);
	m->l = n->l;
	m->r = r;
	return avl_balance(m);
}

/* ------------------------------------------------------------- queries */

/* Free extent with the greatest offset <= off. */
static struct kvr_alloc_node *find_floor(const struct alloc_impl *im, uint64_t off)
{
	struct avl *p = im->by_addr, *best = NULL;

	while (p) {
		if (addr_node(p)->off <= off) {
			best = p;
			p = p->r;
		} else {
			p = p->l;
		}
	}
	return addr_node(best);
}

/* The free extents on either side of off (greatest start <= off, smallest
 * start > off): both lie on the one search path. */
static void find_around(const struct alloc_impl *im, uint64_t off, struct kvr_alloc_node **prev,
			struct kvr_alloc_node **next)
{
	struct avl *p = im->by_addr, *lo = NULL, *hi = NULL;

	while (p) {
		if (addr_node(p)->off <= off) {
			lo = p;
			p = p->r;
		} else {
			hi = p;
			p = p->l;
		}
	}
	*prev = addr_node(lo);
	*next = addr_node(hi);
}

/* Smallest free extent of at least len bytes, lowest address among equals. */
static struct kvr_alloc_node *find_fit(const struct alloc_impl *im, uint64_t len)
{
	struct avl *p = im->by_size, *best = NULL;

	while (p) {
		if (size_node(p)->len >= len) {
			best = p;
			p = p->l;
		} else {
			p = p->r;
		}
	}
	return size_node(best);
}

/* ------------------------------------------------------------- nodes */

static struct kvr_alloc_node *node_get(struct alloc_impl *im)
{
	struct kvr_alloc_node *n = im->spare;

	if (n) {
		im->spare = addr_node(n->by_addr.l);
		im->nspare--;
		return n;
	}
	return malloc(sizeof(*n));
}

static void node_put(struct alloc_impl *im, struct kvr_alloc_node *n)
{
	if (im->nspare >= SPARE_MAX) {
		free(n);
		return;
	}
	n->by_addr.l = im->spare ? &im->spare->by_addr : NULL;
	im->spare = n;
	im->nspare++;
}

/* Best effort: a failure here only matters if memory stays short until a
 * later put() needs a node. */
static void spare_refill(struct alloc_impl *im)
{
	while (im->nspare < SPARE_LOW) {
		struct kvr_alloc_node *n = malloc(sizeof(*n));

		if (!n)
			return;
		node_put(im, n);
	}
}

static void ext_link(struct alloc_impl *im, struct kvr_alloc_node *n)
{
	im->by_addr = avl_insert(im->by_addr, &n->by_addr, false);
	im->by_size = avl_insert(im->by_size, &n->by_size, true);
}

static void ext_unlink(struct alloc_impl *im, struct kvr_alloc_node *n)
{
	im->by_addr = avl_remove(im->by_addr, &n->by_addr, false);
	im->by_size = avl_remove(im->by_size, &n->by_size, true);
}

/*
 * Change an extent's bounds. The caller guarantees the new start keeps the
 * address order (it never crosses a neighbour), so only the size tree, whose
 * key includes the length, needs the node taken out and put back.
 */
static void ext_resize(struct alloc_impl *im, struct kvr_alloc_node *n, uint64_t off, uint64_t len)
{
	im->by_size = avl_remove(im->by_size, &n->by_size, true);
	n->off = off;
	n->len = len;
	im->by_size = avl_insert(im->by_size, &n->by_size, true);
}

static void free_tree(struct avl *p)
{
	while (p) {
		struct avl *r = p->r;

		free_tree(p->l);
		free(addr_node(p));
		p = r;
	}
}

/* ------------------------------------------------------------- API */

int kvr_alloc_init(struct kvr_alloc *a, uint64_t capacity, uint64_t unit)
{
	struct alloc_impl *im;
	struct kvr_alloc_node *n;

	a->capacity = a->unit = a->used = a->nfree = 0;
	a->impl = NULL;
	if (!unit || (unit & (unit - 1)))
		return -EINVAL;
	capacity &= ~(unit - 1);
	/* Offsets come back as int64_t. */
	if (!capacity || capacity > (uint64_t)INT64_MAX)
		return -EINVAL;
	im = calloc(1, sizeof(*im));
	n = malloc(sizeof(*n));
	if (!im || !n) {
		free(im);
		free(n);
		return -ENOMEM;
	}
	n->off = 0;
	n->len = capacity;
	ext_link(im, n);
	spare_refill(im);
	a->capacity = capacity;
	a->unit = unit;
	a->used = 0;
	a->nfree = 1;
	a->impl = im;
	return 0;
}

void kvr_alloc_fini(struct kvr_alloc *a)
{
	struct alloc_impl *im = a->impl;

	if (!im)
		return;
	/* Each node is in both trees: free through one of them only. */
	free_tree(im->by_addr);
	while (im->spare) {
		struct kvr_alloc_node *n = im->spare;

		im->spare = addr_node(n->by_addr.l);
		free(n);
	}
	free(im);
	a->impl = NULL;
	a->used = 0;
	a->nfree = 0;
}

int64_t kvr_alloc_get(struct kvr_alloc *a, uint64_t len)
{
	struct alloc_impl *im = a->impl;
	struct kvr_alloc_node *n;
	uint64_t off;

	if (!len)
		return -EINVAL;
	if (len > a->capacity)
		return -ENOSPC;
	len = kvr_alloc_round(a, len);
	n = find_fit(im, len);
	if (!n)
		return -ENOSPC;
	off = n->off;
	if (n->len == len) {
		ext_unlink(im, n);
		node_put(im, n);
		a->nfree--;
	} else {
		/* Carve from the front so consecutive allocations out of one
		 * extent are laid out in ascending order. */
		ext_resize(im, n, n->off + len, n->len - len);
	}
	a->used += len;
	spare_refill(im);
	return (int64_t)off;
}

int kvr_alloc_reserve(struct kvr_alloc *a, uint64_t off, uint64_t len)
{
	struct alloc_impl *im = a->impl;
	struct kvr_alloc_node *n, *tail_node;
	uint64_t end, n_end;

	if (((off | len) & (a->unit - 1)) || off > a->capacity || len > a->capacity - off)
		return -EINVAL;
	if (!len)
		return 0;
	end = off + len;
	n = find_floor(im, off);
	if (!n || n->off + n->len < end)
		return -EEXIST;
	n_end = n->off + n->len;
	if (n->off == off && n_end == end) {
		ext_unlink(im, n);
		node_put(im, n);
		a->nfree--;
	} else if (n->off == off) {
		ext_resize(im, n, end, n_end - end);
	} else if (n_end == end) {
		ext_resize(im, n, n->off, off - n->off);
	} else {
		tail_node = node_get(im);
		if (!tail_node)
			return -ENOMEM;
		ext_resize(im, n, n->off, off - n->off);
		tail_node->off = end;
		tail_node->len = n_end - end;
		ext_link(im, tail_node);
		a->nfree++;
	}
	a->used += len;
	return 0;
}

void kvr_alloc_put(struct kvr_alloc *a, uint64_t off, uint64_t len)
{
	struct alloc_impl *im = a->impl;
	struct kvr_alloc_node *prev, *next, *n;
	uint64_t end;
	int join_prev, join_next;

	if (!im || !len || (off & (a->unit - 1)) || off >= a->capacity || len > a->capacity - off)
		return;
	len = kvr_alloc_round(a, len);
	if (len > a->capacity - off || len > a->used)
		return;
	end = off + len;
	find_around(im, off, &prev, &next);
	/*
	 * Any overlap with a free extent means a double free (or a bogus range):
	 * ignoring it keeps the trees and the counters consistent.
	 */
	if (prev && prev->off + prev->len > off)
		return;
	if (next && next->off < end)
		return;
	join_prev = prev && prev->off + prev->len == off;
	join_next = next && next->off == end;
	if (join_prev && join_next) {
		ext_unlink(im, next);
		ext_resize(im, prev, prev->off, prev->len + len + next->len);
		node_put(im, next);
		a->nfree--;
	} else if (join_prev) {
		ext_resize(im, prev, prev->off, prev->len + len);
	} else if (join_next) {
		ext_resize(im, next, off, next->len + len);
	} else {
		n = node_get(im);
		if (!n) {
			/* Nowhere to record it: the range stays counted as used,
			 * which is wasteful but never unsafe. */
			im->leaked += len;
			return;
		}
		n->off = off;
		n->len = len;
		ext_link(im, n);
		a->nfree++;
	}
	a->used -= len;
}

uint64_t kvr_alloc_largest(const struct kvr_alloc *a)
{
	const struct alloc_impl *im = a->impl;
	const struct avl *p = im ? im->by_size : NULL;

	if (!p)
		return 0;
	while (p->r)
		p = p->r;
	return size_node(p)->len;
}
