/* SPDX-License-Identifier: MIT */
/*
 * A loopback kvring server inside kvring-bench: kvr_serve over a memory
 * pool, on its own engine and thread, so that the demo and the suite can
 * measure tcp:// (and rdma://) targets with one command. kvring-server
 * serves the same way; this only saves starting a process.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "bench.h"

static struct {
	pthread_t th;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int state; /* 0 starting, 1 serving, -errno failed, 2 stopped */
	int quit;
	kvr_engine *e;
	const char *listen;
	uint64_t pool_bytes;
	char uri[160];
	char err[256];
} lb = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static void lb_state(int state)
{
	pthread_mutex_lock(&lb.mu);
	lb.state = state;
	pthread_cond_broadcast(&lb.cv);
	pthread_mutex_unlock(&lb.mu);
}

static void *lb_main(void *arg)
{
	struct kvr_store_opts so = {.size = sizeof(so), .capacity = lb.pool_bytes};
	kvr_target *pool = NULL;
	kvr_server *server = NULL;
	kvr_engine *e = NULL;
	int rc;

	(void)arg;
	rc = kvr_engine_create(NULL, &e);
	if (!rc)
		rc = kvr_store_open(e, "mem:", &so, &pool);
	if (!rc)
		rc = kvr_serve(e, lb.listen, pool, NULL, &server);
	if (rc) {
		snprintf(lb.err, sizeof(lb.err), "%s%s%s", kvr_strerror(rc),
			 e && kvr_engine_errmsg(e)[0] ? ": " : "", e ? kvr_engine_errmsg(e) : "");
		kvr_engine_destroy(e);
		lb_state(rc);
		return NULL;
	}
	kvr_server_addr(server, lb.uri, sizeof(lb.uri));
	pthread_mutex_lock(&lb.mu);
	lb.e = e;
	pthread_mutex_unlock(&lb.mu);
	lb_state(1);
	while (!__atomic_load_n(&lb.quit, __ATOMIC_ACQUIRE))
		if (kvr_engine_poll(e, -1) < 0)
			break;
	kvr_server_close(server, 2000);
	pthread_mutex_lock(&lb.mu); /* loopback_stop may be waking it */
	lb.e = NULL;
	pthread_mutex_unlock(&lb.mu);
	kvr_engine_destroy(e);
	return NULL;
}

int loopback_start(const char *listen, uint64_t pool_bytes, char *uri, size_t uri_len, char *err,
		   size_t err_len)
{
	int rc;

	if (lb.state == 1)
		return -EBUSY;
	lb.state = 0;
	lb.quit = 0;
	lb.err[0] = lb.uri[0] = '\0';
	lb.listen = listen;
	lb.pool_bytes = pool_bytes;
	rc = pthread_create(&lb.th, NULL, lb_main, NULL);
	if (rc) {
		snprintf(err, err_len, "%s", strerror(rc));
		return -rc;
	}
	pthread_mutex_lock(&lb.mu);
	while (!lb.state)
		pthread_cond_wait(&lb.cv, &lb.mu);
	rc = lb.state;
	pthread_mutex_unlock(&lb.mu);
	if (rc < 0) {
		pthread_join(lb.th, NULL);
		snprintf(err, err_len, "%s", lb.err);
		return rc;
	}
	snprintf(uri, uri_len, "%s", lb.uri);
	return 0;
}

void loopback_stop(void)
{
	if (lb.state != 1)
		return;
	__atomic_store_n(&lb.quit, 1, __ATOMIC_RELEASE);
	pthread_mutex_lock(&lb.mu);
	if (lb.e)
		kvr_engine_wake(lb.e);
	pthread_mutex_unlock(&lb.mu);
	pthread_join(lb.th, NULL);
	lb.state = 2;
}
