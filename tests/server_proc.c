/* SPDX-License-Identifier: MIT */
/* kvring-server processes for integration tests (see server_proc.h). */
#include "server_proc.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif

#define START_TIMEOUT_MS 10000
#define STOP_TIMEOUT_MS	 10000
#define MAX_ARGS	 64
#define READY_PREFIX	 "kvring-server: listening "

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The server binary: $KVR_SERVER_BIN, else <test dir>/../tools/kvring-server. */
static int server_bin(char *buf, size_t len)
{
	const char *env = getenv("KVR_SERVER_BIN");
	char self[PATH_MAX];
	ssize_t n;
	char *slash;

	if (env && *env) {
		if ((size_t)snprintf(buf, len, "%s", env) >= len)
			return -ENAMETOOLONG;
		return 0;
	}
	n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n < 0)
		return -errno;
	self[n] = 0;
	slash = strrchr(self, '/');
	if (!slash)
		return -ENOENT;
	*slash = 0;
	if ((size_t)snprintf(buf, len, "%s/../tools/kvring-server", self) >= len)
		return -ENAMETOOLONG;
	return 0;
}

/* $KVR_TEST_DIR/<test>.server<k>.<pid>.log, opened for appending. */
static int open_log(struct kvt_server *s)
{
	static unsigned seq;
	const char *dir = getenv("KVR_TEST_DIR");
	char self[PATH_MAX];
	const char *name = "test";
	ssize_t n;
	int fd;

	if (!dir || !*dir)
		dir = "/tmp";
	mkdir(dir, 0755);
	n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n > 0) {
		self[n] = 0;
		name = strrchr(self, '/') ? strrchr(self, '/') + 1 : self;
	}
	if ((size_t)snprintf(s->log, sizeof(s->log), "%s/%s.server%u.%d.log", dir, name, ++seq,
			     (int)getpid()) >= sizeof(s->log))
		return -ENAMETOOLONG;
	fd = open(s->log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	return fd < 0 ? -errno : fd;
}

/* Exit status as a shell reports it: the code, or 128 + the signal. */
static int exit_code(int status)
{
	if (WIFEXITED(status))
		return WEXITSTATUS(status);
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	return -EPROTO;
}

static void forget(struct kvt_server *s, int status)
{
	s->status = status;
	s->pid = 0;
	s->paused = 0;
	if (s->out_fd >= 0)
		close(s->out_fd);
	s->out_fd = -1;
}

static int reap(struct kvt_server *s)
{
	int status;

	while (waitpid(s->pid, &status, 0) < 0)
		if (errno != EINTR)
			return -errno;
	forget(s, status);
	return exit_code(status);
}

/* The child: never returns. Only async-signal-safe calls before exec. */
static void child(int out_fd, int log_fd, int null_fd, int ns_fd, pid_t parent, const char *bin,
		  char *const argv[])
{
	sigset_t all;

	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != parent) /* the parent died before prctl took effect */
		_exit(127);
	if (ns_fd >= 0 && setns(ns_fd, CLONE_NEWNET))
		_exit(125);
	if (dup2(null_fd, 0) < 0 || dup2(out_fd, 1) < 0 || dup2(log_fd, 2) < 0)
		_exit(127);
	/* what the test process changed must not reach the server */
	signal(SIGPIPE, SIG_DFL);
	signal(SIGTERM, SIG_DFL);
	signal(SIGINT, SIG_DFL);
	sigemptyset(&all);
	sigprocmask(SIG_SETMASK, &all, NULL);
	execv(bin, argv);
	if (write(2, "kvt_server_start: exec failed\n", 30) < 0)
		_exit(126);
	_exit(127);
}

/* Read the child's stdout until the listening line; 0 with s->port set. */
static int wait_ready(struct kvt_server *s)
{
	int64_t deadline = now_ms() + START_TIMEOUT_MS;
	char buf[4096];
	size_t have = 0;

	for (;;) {
		struct pollfd p = {.fd = s->out_fd, .events = POLLIN};
		int64_t left = deadline - now_ms();
		char *nl, *line = buf;
		ssize_t n;
		int rc;

		if (left <= 0)
			return -ETIMEDOUT;
		rc = poll(&p, 1, (int)left);
		if (rc < 0 && errno != EINTR)
			return -errno;
		if (rc <= 0)
			continue;
		n = read(s->out_fd, buf + have, sizeof(buf) - 1 - have);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -ECHILD; /* stdout closed: the server is gone */
		have += (size_t)n;
		buf[have] = 0;
		while ((nl = strchr(line, '\n'))) {
			*nl = 0;
			if (!strncmp(line, READY_PREFIX, strlen(READY_PREFIX))) {
				char *colon = strrchr(line, ':'), *end;
				long port;

				errno = 0;
				port = colon ? strtol(colon + 1, &end, 10) : 0;
				if (!colon || errno || end == colon + 1 || *end || port < 1 ||
				    port > 65535)
					return -EPROTO;
				s->port = (int)port;
				snprintf(s->uri, sizeof(s->uri), "%s", line + strlen(READY_PREFIX));
				return 0;
			}
			line = nl + 1;
		}
		have = strlen(line); /* keep the unfinished line */
		memmove(buf, line, have);
		if (have == sizeof(buf) - 1)
			have = 0; /* a line this long is not the one we want */
	}
}

int kvt_server_start(struct kvt_server *s, const char *const extra_args[])
{
	return kvt_server_start_at(s, NULL, NULL, extra_args);
}

int kvt_server_start_at(struct kvt_server *s, const char *listen, const char *netns,
			const char *const extra_args[])
{
	char bin[PATH_MAX], nspath[PATH_MAX];
	const char *argv[MAX_ARGS + 4];
	int pipefd[2] = {-1, -1}, log_fd, null_fd, ns_fd = -1, rc, argc = 0;
	pid_t parent = getpid(), pid;

	memset(s, 0, sizeof(*s));
	s->out_fd = -1;
	rc = server_bin(bin, sizeof(bin));
	if (!rc && access(bin, X_OK))
		rc = -errno;
	if (rc) {
		fprintf(stderr, "kvt_server_start: no server binary '%s': %s\n", bin,
			strerror(-rc));
		return rc;
	}
	argv[argc++] = bin;
	argv[argc++] = "--listen";
	argv[argc++] = listen ? listen : "tcp://127.0.0.1:0";
	for (int i = 0; extra_args && extra_args[i]; i++) {
		if (argc == MAX_ARGS + 3)
			return -E2BIG;
		argv[argc++] = extra_args[i];
	}
	argv[argc] = NULL;

	log_fd = open_log(s);
	if (log_fd < 0)
		return log_fd;
	if (netns) {
		snprintf(nspath, sizeof(nspath), "/run/netns/%s", netns);
		ns_fd = open(nspath, O_RDONLY | O_CLOEXEC);
		if (ns_fd < 0) {
			rc = -errno;
			fprintf(stderr, "kvt_server_start: network namespace %s: %s\n", nspath,
				strerror(-rc));
			close(log_fd);
			return rc;
		}
	}
	null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (null_fd < 0 || pipe2(pipefd, O_CLOEXEC)) {
		rc = -errno;
		goto out;
	}
	pid = fork();
	if (pid < 0) {
		rc = -errno;
		goto out;
	}
	if (pid == 0)
		child(pipefd[1], log_fd, null_fd, ns_fd, parent, bin, (char *const *)argv);
	s->pid = pid;
	s->out_fd = pipefd[0];
	pipefd[0] = -1;
	close(pipefd[1]); /* so that the child's exit reads as end of file */
	pipefd[1] = -1;
	rc = wait_ready(s);
	if (rc) {
		kill(s->pid, SIGKILL);
		reap(s);
		fprintf(stderr, "kvt_server_start: %s did not come up (%s); its log: %s\n", bin,
			rc == -ECHILD ? "it exited" : strerror(-rc), s->log);
		goto out;
	}
out:
	if (ns_fd >= 0)
		close(ns_fd);
	if (pipefd[0] >= 0)
		close(pipefd[0]);
	if (pipefd[1] >= 0)
		close(pipefd[1]);
	if (null_fd >= 0)
		close(null_fd);
	close(log_fd);
	return rc;
}

/* Wait up to ms for the child to exit; 0 when it has (not yet reaped). */
static int wait_exit(pid_t pid, int ms)
{
	int64_t deadline = now_ms() + ms;
	int pfd = (int)syscall(SYS_pidfd_open, pid, 0);
	siginfo_t si;

	for (;;) {
		int64_t left = deadline - now_ms();

		memset(&si, 0, sizeof(si));
		if (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 && si.si_pid)
			break;
		if (left <= 0) {
			if (pfd >= 0)
				close(pfd);
			return -ETIMEDOUT;
		}
		if (pfd >= 0) {
			struct pollfd p = {.fd = pfd, .events = POLLIN};

			poll(&p, 1, (int)left);
		} else { /* no pidfd (kernel < 5.3): look again shortly */
			struct timespec ts = {0, 10 * 1000 * 1000};

			nanosleep(&ts, NULL);
		}
	}
	if (pfd >= 0)
		close(pfd);
	return 0;
}

/* A server that will not stop: its threads' stacks into its log, when gdb
 * is there, to say where it hangs. */
static void dump_stacks(const struct kvt_server *s)
{
	char cmd[1024];

	if (access("/usr/bin/gdb", X_OK))
		return;
	snprintf(cmd, sizeof(cmd),
		 "(for t in /proc/%d/task/* $(sed 's|^|/proc/|' /proc/%d/task/*/children); do "
		 "echo \"$t $(cat $t/comm) $(grep State $t/status) $(cat $t/wchan)\"; cat "
		 "$t/stack; done; timeout 30 gdb -batch -p %d -ex 'thread apply all bt') >>'%s' "
		 "2>&1 </dev/null",
		 (int)s->pid, (int)s->pid, (int)s->pid, s->log);
	if (system(cmd) != 0)
		fprintf(stderr, "kvt_server_stop: no stacks of pid %d\n", (int)s->pid);
	else
		fprintf(stderr, "kvt_server_stop: stacks of pid %d in %s\n", (int)s->pid, s->log);
}

int kvt_server_stop(struct kvt_server *s)
{
	if (s->pid <= 0)
		return -ECHILD;
	kill(s->pid, SIGTERM);
	/* A paused server must see its SIGTERM. Only then: a SIGCONT also
	 * throws away stop signals, such as the one a leak checker's tracer
	 * sends while the exiting server stops its threads. */
	if (s->paused) {
		kill(s->pid, SIGCONT);
		s->paused = 0;
	}
	if (wait_exit(s->pid, STOP_TIMEOUT_MS)) {
		fprintf(stderr, "kvt_server_stop: pid %d ignored SIGTERM for %d ms; killing it\n",
			(int)s->pid, STOP_TIMEOUT_MS);
		dump_stacks(s);
		kill(s->pid, SIGKILL);
	}
	return reap(s);
}

int kvt_server_kill(struct kvt_server *s)
{
	if (s->pid <= 0)
		return -ECHILD;
	kill(s->pid, SIGKILL);
	return reap(s);
}

/* Send sig, then wait for the state change it causes (flag: WUNTRACED or
 * WCONTINUED); an exit instead is reaped and reported as -ECHILD. */
static int signal_and_wait(struct kvt_server *s, int sig, int flag)
{
	int status;

	if (s->pid <= 0)
		return -ECHILD;
	if (kill(s->pid, sig))
		return -errno;
	while (waitpid(s->pid, &status, flag) < 0)
		if (errno != EINTR)
			return -errno;
	if (WIFEXITED(status) || WIFSIGNALED(status)) {
		forget(s, status);
		return -ECHILD;
	}
	s->paused = sig == SIGSTOP;
	return 0;
}

/* The kernel reports a stop or a continue only as a change, so waiting for
 * one that cannot come (pause twice, resume a running child) would hang. */
int kvt_server_pause(struct kvt_server *s)
{
	if (s->pid > 0 && s->paused)
		return 0;
	return signal_and_wait(s, SIGSTOP, WUNTRACED);
}

int kvt_server_resume(struct kvt_server *s)
{
	if (s->pid > 0 && !s->paused)
		return 0;
	return signal_and_wait(s, SIGCONT, WCONTINUED);
}

int kvt_cluster_uri(char *buf, size_t len, const struct kvt_server *s, int n)
{
	size_t off;

	if (n < 1 || !buf || !len)
		return -EINVAL;
	off = (size_t)snprintf(buf, len, "tcp://");
	for (int i = 0; i < n && off < len; i++)
		off += (size_t)snprintf(buf + off, len - off, "%s127.0.0.1:%d", i ? "," : "",
					s[i].port);
	if (off >= len)
		return -ENAMETOOLONG;
	return (int)off;
}
