/* SPDX-License-Identifier: MIT */
/*
 * Scenario: the `kvring` CLI as an operator's script runs it, against a real
 * kvring-server process and a local file store. Checks its exit codes
 * (0 done, 1 not found, 2 usage, 3 other error), that the bytes of put/get
 * through files and through stdin/stdout are exact, and that every failure
 * says why on stderr.
 *
 * The binary is $KVR_CLI_BIN, else ../tools/kvring next to this test's
 * directory.
 */
#include "fixtures.h"
#include "server_proc.h"

#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_ARGS 16

static char cli_bin[PATH_MAX + 32];
static char in_path[PATH_MAX], out_path[PATH_MAX], err_path[PATH_MAX];

static void find_cli(void)
{
	const char *env = getenv("KVR_CLI_BIN");
	char self[PATH_MAX];
	ssize_t n;

	if (env && *env) {
		snprintf(cli_bin, sizeof(cli_bin), "%s", env);
		return;
	}
	n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	assert_true(n > 0);
	self[n] = 0;
	*strrchr(self, '/') = 0;
	snprintf(cli_bin, sizeof(cli_bin), "%s/../tools/kvring", self);
}

/*
 * Run kvring with args (NULL-terminated), stdin from `in` (NULL: /dev/null),
 * stdout to out_path and stderr to err_path. Returns the exit status, or 128
 * plus the signal that ended it.
 */
static int run(const char *in, const char *const args[])
{
	const char *argv[MAX_ARGS + 2] = {cli_bin};
	int st, n = 1;
	pid_t pid;

	for (; args[n - 1]; n++) {
		assert_true(n <= MAX_ARGS);
		argv[n] = args[n - 1];
	}
	argv[n] = NULL;
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int i = open(in ? in : "/dev/null", O_RDONLY);
		int o = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		int e = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);

		if (i < 0 || o < 0 || e < 0 || dup2(i, 0) < 0 || dup2(o, 1) < 0 || dup2(e, 2) < 0)
			_exit(126);
		execv(cli_bin, (char *const *)argv);
		_exit(127);
	}
	assert_int_equal(waitpid(pid, &st, 0), pid);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* The whole of a file, NUL-terminated; *len its size. free() it. */
static char *slurp(const char *path, size_t *len)
{
	struct stat st;
	char *p;
	int fd = open(path, O_RDONLY);

	assert_true(fd >= 0);
	assert_int_equal(fstat(fd, &st), 0);
	p = malloc((size_t)st.st_size + 1);
	assert_non_null(p);
	assert_int_equal(read(fd, p, (size_t)st.st_size), st.st_size);
	p[st.st_size] = 0;
	close(fd);
	if (len)
		*len = (size_t)st.st_size;
	return p;
}

static bool err_says(const char *needle)
{
	char *e = slurp(err_path, NULL);
	bool yes = strstr(e, needle) != NULL;

	if (!yes)
		print_message("stderr was: %s\n", e);
	free(e);
	return yes;
}

static void write_input(size_t len, uint64_t seed)
{
	uint8_t *b = malloc(len ? len : 1);
	int fd = open(in_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);

	assert_non_null(b);
	assert_true(fd >= 0);
	kvt_fill(b, len, seed);
	assert_int_equal(write(fd, b, len), (ssize_t)len);
	close(fd);
	free(b);
}

/* stdout of the last run holds exactly kvt_fill(len, seed). */
static bool out_is(size_t len, uint64_t seed)
{
	size_t n;
	char *p = slurp(out_path, &n);
	bool ok = n == len && kvt_check(p, len, seed);

	free(p);
	return ok;
}

static int setup(void **state)
{
	(void)state;
	find_cli();
	snprintf(in_path, sizeof(in_path), "%s", kvt_path("cli_in"));
	snprintf(out_path, sizeof(out_path), "%s", kvt_path("cli_out"));
	snprintf(err_path, sizeof(err_path), "%s", kvt_path("cli_err"));
	if (access(cli_bin, X_OK)) {
		print_message("kvring CLI not found at %s\n", cli_bin);
		return -1;
	}
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	kvt_unlink(in_path);
	kvt_unlink(out_path);
	kvt_unlink(err_path);
	return 0;
}

static void against_server(void **state)
{
	struct kvt_server s;
	const char *u;
	char *out;

	(void)state;
	assert_int_equal(kvt_server_start(&s, (const char *[]){"--memory", "64M", NULL}), 0);
	u = s.uri;

	/* put from a file, get into a file: 3 MiB, every byte */
	write_input(3u << 20, 11);
	assert_int_equal(run(NULL, (const char *[]){"put", u, "big", in_path, NULL}), 0);
	assert_int_equal(run(NULL, (const char *[]){"get", u, "big", out_path, NULL}), 0);
	assert_true(out_is(3u << 20, 11));
	/* stdin to stdout, and "-" for them */
	write_input(1000, 12);
	assert_int_equal(run(in_path, (const char *[]){"put", u, "small", NULL}), 0);
	assert_int_equal(run(NULL, (const char *[]){"get", u, "small", NULL}), 0);
	assert_true(out_is(1000, 12));
	assert_int_equal(run(in_path, (const char *[]){"put", u, "dash", "-", NULL}), 0);
	assert_int_equal(run(NULL, (const char *[]){"get", u, "dash", "-", NULL}), 0);
	assert_true(out_is(1000, 12));
	/* an object is 1 byte or more (an SGE has a length): said, not stored */
	write_input(0, 0);
	assert_int_equal(run(in_path, (const char *[]){"put", u, "empty", NULL}), 3);
	assert_true(err_says("empty"));

	/* exists prints the stored length; a miss is exit 1 */
	assert_int_equal(run(NULL, (const char *[]){"exists", u, "big", NULL}), 0);
	out = slurp(out_path, NULL);
	assert_string_equal(out, "3145728\n");
	free(out);
	assert_int_equal(run(NULL, (const char *[]){"exists", u, "nope", NULL}), 1);
	assert_true(err_says("not found"));
	assert_int_equal(run(NULL, (const char *[]){"-q", "exists", u, "nope", NULL}), 1);
	out = slurp(err_path, NULL);
	assert_string_equal(out, "");
	free(out);

	/* an object larger than --max-size is refused, not truncated */
	assert_int_equal(run(NULL, (const char *[]){"--max-size", "1M", "get", u, "big", NULL}), 3);
	assert_true(err_says("max-size"));
	write_input(3u << 20, 13);
	assert_int_equal(
	    run(NULL, (const char *[]){"--max-size", "1M", "put", u, "big", in_path, NULL}), 3);
	assert_int_equal(run(NULL, (const char *[]){"get", u, "big", NULL}), 0);
	assert_true(out_is(3u << 20, 11)); /* the old value is still there */

	/* rm, then it is gone */
	assert_int_equal(run(NULL, (const char *[]){"rm", u, "big", NULL}), 0);
	assert_int_equal(run(NULL, (const char *[]){"rm", u, "big", NULL}), 1);
	assert_int_equal(run(NULL, (const char *[]){"get", u, "big", NULL}), 1);

	/* stats: the client's counters and the server's, one JSON line each */
	assert_int_equal(run(NULL, (const char *[]){"stats", u, NULL}), 0);
	out = slurp(out_path, NULL);
	assert_non_null(strstr(out, "\"target\":"));
	assert_non_null(strstr(out, "\"node\":"));
	assert_non_null(strstr(out, "\"objects\":2")); /* small, dash */
	free(out);

	assert_int_equal(kvt_server_stop(&s), 0);
	/* nobody listens there now */
	assert_int_equal(run(NULL, (const char *[]){"--timeout", "2000", "get", u, "small", NULL}),
			 3);
	assert_true(err_says("connection refused"));
}

static void wrong_secret(void **state)
{
	const char *p = kvt_path("cli_secret");
	char secret[PATH_MAX], wrong[PATH_MAX + 8];
	struct kvt_server s;
	FILE *f;

	(void)state;
	snprintf(secret, sizeof(secret), "%s", p);
	snprintf(wrong, sizeof(wrong), "%s.wrong", secret);
	f = fopen(secret, "w");
	fputs("open sesame\n", f);
	fclose(f);
	f = fopen(wrong, "w");
	fputs("open barley\n", f);
	fclose(f);
	assert_int_equal(
	    kvt_server_start(&s, (const char *[]){"--memory", "16M", "--auth-file", secret, NULL}),
	    0);
	write_input(100, 5);
	assert_int_equal(
	    run(NULL, (const char *[]){"--secret-file", secret, "put", s.uri, "k", in_path, NULL}),
	    0);
	assert_int_equal(
	    run(NULL, (const char *[]){"--secret-file", secret, "get", s.uri, "k", NULL}), 0);
	assert_true(out_is(100, 5));
	assert_int_equal(
	    run(NULL, (const char *[]){"--secret-file", wrong, "get", s.uri, "k", NULL}), 3);
	assert_true(err_says("secret"));
	assert_int_equal(run(NULL, (const char *[]){"get", s.uri, "k", NULL}), 3);
	assert_true(err_says("secret"));
	assert_int_equal(kvt_server_stop(&s), 0);
	kvt_unlink(secret);
	kvt_unlink(wrong);
}

static void local_file_store(void **state)
{
	char store[PATH_MAX], uri[PATH_MAX + 8];

	(void)state;
	snprintf(store, sizeof(store), "%s", kvt_path("cli_store"));
	snprintf(uri, sizeof(uri), "file:%s", store);
	write_input(123457, 21);
	assert_int_equal(
	    run(NULL, (const char *[]){"--capacity", "64M", "put", uri, "a/b", in_path, NULL}), 0);
	/* a second process finds it: the store persisted */
	assert_int_equal(run(NULL, (const char *[]){"get", uri, "a/b", NULL}), 0);
	assert_true(out_is(123457, 21));
	assert_int_equal(run(NULL, (const char *[]){"stats", uri, NULL}), 0);
	assert_int_equal(run(NULL, (const char *[]){"rm", uri, "a/b", NULL}), 0);
	assert_int_equal(run(NULL, (const char *[]){"exists", uri, "a/b", NULL}), 1);
	kvt_unlink(store);
}

static void usage_errors(void **state)
{
	static char longkey[KVR_MAX_KEY + 2];

	(void)state;
	memset(longkey, 'k', KVR_MAX_KEY + 1);
	assert_int_equal(run(NULL, (const char *[]){NULL}), 2);
	assert_int_equal(run(NULL, (const char *[]){"frob", "mem:1M", "k", NULL}), 2);
	assert_true(err_says("unknown command"));
	assert_int_equal(run(NULL, (const char *[]){"get", "mem:1M", NULL}), 2);
	assert_int_equal(run(NULL, (const char *[]){"exists", "mem:1M", "k", "extra", NULL}), 2);
	assert_int_equal(
	    run(NULL, (const char *[]){"--timeout", "soon", "get", "mem:1M", "k", NULL}), 2);
	assert_true(err_says("--timeout"));
	assert_int_equal(run(NULL, (const char *[]){"get", "udp://127.0.0.1:1", "k", NULL}), 2);
	assert_int_equal(run(NULL, (const char *[]){"get", "tcp://127.0.0.1:1", longkey, NULL}), 2);
	assert_int_equal(run(NULL, (const char *[]){"get", "tcp://127.0.0.1:1", "", NULL}), 2);
	assert_int_equal(run(NULL, (const char *[]){"--secret-file", "/nonexistent/secret", "get",
						    "tcp://127.0.0.1:1", "k", NULL}),
			 2);
	assert_int_equal(run(NULL, (const char *[]){"put", "mem:1M", "k", "/nonexistent/in", NULL}),
			 3);
	assert_true(err_says("/nonexistent/in"));
	assert_int_equal(run(NULL, (const char *[]){"--help", NULL}), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(usage_errors),
	    cmocka_unit_test(local_file_store),
	    cmocka_unit_test(against_server),
	    cmocka_unit_test(wrong_secret),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
