/* SPDX-License-Identifier: MIT */
/* Asking kvring-server nodes for their STATS (kvring stats). */
#ifndef KVR_TOOLS_NODE_STATS_H
#define KVR_TOOLS_NODE_STATS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/*
 * Connect to node ("HOST:PORT" or "[V6]:PORT"), say HELLO (answering the
 * server's nonce with secret when it wants authentication), ask for STATS and
 * print one line to out per shard of the node:
 *   {"node":"HOST:PORT","shard":S,"shards":N,"stats":BODY}
 * where BODY is the server's JSON (a JSON string if it is not an object).
 * Each connection has timeout_ms for everything. Errors are printed on
 * stderr ("kvring: stats NODE: ..."). Returns 0 or a negative errno:
 * -ENOKEY (the server wants a secret and none was given), -EACCES (it
 * refused the secret), -EPROTO (not a kvring peer), -ETIMEDOUT,
 * -EHOSTUNREACH (the name did not resolve), -EINVAL (bad address), or the
 * socket's errno (-ECONNREFUSED ...).
 */
int node_stats(const char *node, const void *secret, size_t secret_len, uint32_t timeout_ms,
	       FILE *out);

/* s as a JSON string (quotes, backslashes, control characters escaped). */
void json_str(FILE *f, const char *s);

#endif
