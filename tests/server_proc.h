/* SPDX-License-Identifier: MIT */
/*
 * Test fixture: kvring-server processes for integration tests.
 *
 * The binary is $KVR_SERVER_BIN, else ../tools/kvring-server next to the
 * test binary's directory. It listens on tcp://127.0.0.1:0; its stdout is read
 * until the "kvring-server: listening tcp://127.0.0.1:PORT" line, its stderr
 * goes to $KVR_TEST_DIR/<test>.server<k>.<pid>.log. The child is killed when
 * the thread that started it exits (PR_SET_PDEATHSIG), so a failed assertion
 * never leaves a server behind: start servers from the test's main thread.
 * Every function is for one thread at a time.
 */
#ifndef KVR_TEST_SERVER_PROC_H
#define KVR_TEST_SERVER_PROC_H

#include <stddef.h>
#include <sys/types.h>

struct kvt_server {
	pid_t pid;     /* 0 once reaped */
	int port;      /* the port it listens on */
	char uri[128]; /* "tcp://127.0.0.1:PORT" as the server printed it (kept
			  after stop, for tests that need an address nobody
			  listens on) */
	int out_fd;    /* read end of its stdout (kept open so that a late write
			  of the server never meets a closed pipe) */
	int status;    /* wait status once reaped */
	int paused;    /* stopped by kvt_server_pause() */
	char log[256]; /* its stderr */
};

/*
 * Spawn a server with `--listen tcp://127.0.0.1:0` followed by extra_args
 * (NULL-terminated; NULL for none) and wait up to 10 s for its listening
 * line. Returns 0 with *s filled, or a negative errno: -ETIMEDOUT (no line in
 * time: the child is killed), -ECHILD (it exited first; see its log),
 * -ENOENT (no binary), -EPROTO (a listening line without a port), or the
 * errno of pipe/fork/open. A message naming the log goes to stderr on failure.
 */
int kvt_server_start(struct kvt_server *s, const char *const extra_args[]);

/*
 * The same with another listen URI (NULL: tcp://127.0.0.1:0; e.g.
 * "rdma://10.0.0.2:0?dev=rxe1"), the server run inside network namespace
 * /run/netns/NETNS when netns is not NULL. uri is what the server printed
 * ("rdma://10.0.0.2:PORT").
 */
int kvt_server_start_at(struct kvt_server *s, const char *listen, const char *netns,
			const char *const extra_args[]);

/*
 * SIGTERM, wait up to 10 s for the exit, then SIGKILL. Returns the exit
 * status (0..255), 128 + the signal if a signal ended it (so 137 when it had
 * to be killed), or -ECHILD when it was already reaped. The port and uri stay.
 */
int kvt_server_stop(struct kvt_server *s);

/* SIGKILL and reap. Returns as kvt_server_stop() does (137 normally). */
int kvt_server_kill(struct kvt_server *s);

/* SIGSTOP / SIGCONT, returning once the child is stopped / running again
 * (no-ops when it already is). 0, or -ECHILD when it is gone (reaped then). */
int kvt_server_pause(struct kvt_server *s);
int kvt_server_resume(struct kvt_server *s);

/*
 * "tcp://127.0.0.1:P1,127.0.0.1:P2,..." for the first n servers of s into
 * buf. Returns the length, or -EINVAL (n < 1) or -ENAMETOOLONG (len short).
 */
int kvt_cluster_uri(char *buf, size_t len, const struct kvt_server *s, int n);

#endif
