/* SPDX-License-Identifier: MIT */
/*
 * Attackers of a kvring-server, for tests/test_abuse.c: threads of the test
 * process, each driving raw sockets through the wire protocol
 * (docs/protocol.md) until kva_stop():
 *
 *   KVA_FUZZ    one connection after another: a handshake, a burst of
 *               seeded random frames (valid, bit-flipped, a field set to a
 *               boundary value, cut short, garbage), the end of the stream;
 *               every answer must decode and the server must close within
 *               5 s. With KVA_BOUNDS, first every length at its bound and
 *               one past it (and each other header rule broken once), each
 *               on its own connection, with the exact answer or close.
 *   KVA_SLOW    KVA_SLOW_CONNS connections trickling a frame one byte every
 *               KVA_SLOW_STEP ms (half in the handshake, half a PUT after
 *               it), each reopened once the server closed it
 *   KVA_FLOOD   KVA_FLOOD_CONNS connections kept open and idle after their
 *               handshake; each one refused or closed is opened again
 *               100 ms later
 *   KVA_NOREAD  KVA_NOREAD_CONNS clients pipelining GETs of a 4 MiB object
 *               (with the crc trailer) and never reading
 *   KVA_NOCRC   the same, KVA_NOCRC_CONNS of them, without the crc trailer
 *   KVA_BIGPUT  one PUT header announcing the pool's capacity (as STATS
 *               tells it), and no payload
 *
 * Fuzzed PUTs never announce between 1 MiB and KVA_POOL_MAX bytes (that is
 * KVA_BIGPUT's attack): such lengths are pushed past the protocol's limit.
 * Failed checks are counted in `failures` (the first one described in
 * `why`) for the test's main thread to assert: cmocka's asserts belong to
 * it. Counters are read with kva_load() while the attack runs.
 */
#ifndef KVR_TEST_ABUSE_ATTACK_H
#define KVR_TEST_ABUSE_ATTACK_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

enum {
	KVA_FUZZ = 1u << 0,
	KVA_SLOW = 1u << 1,
	KVA_FLOOD = 1u << 2,
	KVA_NOREAD = 1u << 3,
	KVA_NOCRC = 1u << 4,
	KVA_BIGPUT = 1u << 5,
	KVA_BOUNDS = 1u << 6, /* with KVA_FUZZ: the bound cases first (they
				 expect to get in: not beside KVA_FLOOD) */
};

#define KVA_SLOW_CONNS	 24
#define KVA_SLOW_STEP	 50 /* ms between a slowloris's bytes */
#define KVA_FLOOD_CONNS	 128
#define KVA_NOREAD_CONNS 4
#define KVA_NOCRC_CONNS	 20
#define KVA_BIG_LEN	 (4ull << 20) /* the object the non-readers ask for */
#define KVA_POOL_MAX	 (4ull << 30)
#define KVA_MAX_THREADS	 8

struct kva {
	int port; /* the server's, on 127.0.0.1 */
	uint64_t seed;
	unsigned kinds;
	pthread_t th[KVA_MAX_THREADS];
	int nth;
	int stop;
	int armed;	     /* threads whose attack is under way */
	uint64_t frames;     /* frames sent (a slowloris's once begun) */
	uint64_t conns;	     /* connections opened */
	uint64_t refused;    /* ... closed by the server before their HELLO answer */
	uint64_t closed;     /* ... closed by the server later */
	uint64_t bounds;     /* bound cases checked */
	uint64_t answers;    /* answers to fuzzed frames (all valid frames) */
	int64_t slow_hold;   /* longest a slowloris connection lived (ms) */
	uint64_t slow_kills; /* slowloris connections the server closed */
	uint64_t failures;
	char why[512];
	pthread_mutex_t mu;
};

void kva_init(struct kva *a, int port, uint64_t seed);
/* Start the threads of `kinds` that connect early (early: KVA_NOREAD,
 * KVA_NOCRC, KVA_BIGPUT, which must get in before a flood fills the
 * table; the non-readers' 4 MiB object is stored first, before KVA_BIGPUT
 * can take the pool) or the others. The number started, or -EAGAIN (no
 * thread), or why storing the object failed. */
int kva_start(struct kva *a, unsigned kinds, bool early);
/* Every thread started is under way (its connections made). */
bool kva_armed(const struct kva *a);
/* End the attack: join the threads (their sockets closed). */
void kva_stop(struct kva *a);
void kva_fini(struct kva *a);

void kva_fail(struct kva *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
uint64_t kva_load(const uint64_t *c);
int64_t kva_now_ms(void);

#endif
