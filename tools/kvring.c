/* SPDX-License-Identifier: MIT */
/*
 * kvring: one object at a time on any kvring target, for operators and
 * scripts.
 *
 *   kvring [options] put URI KEY [FILE]   store FILE (stdin: omitted or -)
 *   kvring [options] get URI KEY [FILE]   write the object to FILE (stdout)
 *   kvring [options] exists URI KEY       print the stored length
 *   kvring [options] rm URI KEY           remove the object
 *   kvring [options] stats URI            the target's counters; tcp://: and
 *                                         every server's STATS, one JSON line
 *                                         per node and shard
 *
 * Exit status: 0 done, 1 not found, 2 usage error, 3 any other error.
 *
 * The object's bytes live in one anonymous mapping registered with the
 * engine; a get asks for the length first and maps exactly that. The STATS
 * of a tcp:// target's servers are fetched by a small blocking exchange over
 * a plain socket per node (node_stats.c), since STATS is not an operation
 * of the target API.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kvring.h"
#include "tools/node_stats.h"
#include "tools/secret_file.h"

#define EXIT_OK	     0
#define EXIT_MISS    1
#define EXIT_USAGE   2
#define EXIT_ERROR   3
#define DEF_TIMEOUT  10000 /* ms */
#define DEF_MAX_SIZE (64ull << 20)
#define PAGE	     4096ull
#define GET_ATTEMPTS 3 /* exists + get, again if the object grew between */

enum cmd { CMD_PUT, CMD_GET, CMD_EXISTS, CMD_RM, CMD_STATS };

static const struct {
	const char *name;
	int nargs_min, nargs_max; /* after the command: URI, KEY, FILE */
} cmds[] = {
    [CMD_PUT] = {"put", 2, 3}, [CMD_GET] = {"get", 2, 3},     [CMD_EXISTS] = {"exists", 2, 2},
    [CMD_RM] = {"rm", 2, 2},   [CMD_STATS] = {"stats", 1, 1},
};

struct cli {
	enum cmd cmd;
	const char *uri, *key, *file;
	size_t key_len;
	uint32_t timeout_ms, conns, replicas;
	uint64_t max_size, capacity;
	bool quiet, verbose;
	uint8_t secret[SECRET_FILE_MAX];
	size_t secret_len;

	kvr_engine *e;
	kvr_target *t;
	uint8_t *buf; /* the object's registered mapping */
	size_t buf_len;
	kvr_mr *mr;
	bool done;   /* the batch callback ran */
	int64_t res; /* ... with this result */
	char key_show[96];
};

/* The node list of a remote URI (tcp:// or rdma://), or NULL. */
static const char *node_list(const char *uri)
{
	if (!strncmp(uri, "tcp://", 6))
		return uri + 6;
	if (!strncmp(uri, "rdma://", 7))
		return uri + 7;
	return NULL;
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: kvring [options] put URI KEY [FILE]   store FILE (or stdin) under KEY\n"
		"       kvring [options] get URI KEY [FILE]   write KEY's object to FILE (or "
		"stdout)\n"
		"       kvring [options] exists URI KEY       print KEY's stored length\n"
		"       kvring [options] rm URI KEY           remove KEY\n"
		"       kvring [options] stats URI            counters (tcp://: and each "
		"server's)\n"
		"URI: mem:SIZE, file:PATH, tcp://HOST:PORT[,HOST:PORT...] or\n"
		"     rdma://HOST:PORT[,...][?dev=NAME&gid=N]\n"
		"  --secret-file F   shared secret for tcp:// servers started with one\n"
		"  --timeout MS      deadline of the operation (default %u)\n"
		"  --conns N         tcp://: connections per node (default: the library's)\n"
		"  --replicas R      tcp://: copies of each object (default 1)\n"
		"  --max-size N      largest object to read or write (default 64M)\n"
		"  --capacity N      file: capacity when the store is created by put\n"
		"  -q, --quiet       no output for exists, no message for a missing key\n"
		"  -v, --verbose     the library's log on stderr\n"
		"  -h, --help        this text\n"
		"exit status: 0 done, 1 not found, 2 usage error, 3 other error\n",
		DEF_TIMEOUT);
}

/* A message about the object: "kvring: get 'KEY': ...". */
static void say(const struct cli *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(const struct cli *c, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "kvring: %s", cmds[c->cmd].name);
	if (c->cmd != CMD_STATS)
		fprintf(stderr, " '%s'", c->key_show);
	fputs(": ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/* The key for messages: printable ASCII as is, other bytes as \xNN. */
static void key_show(struct cli *c)
{
	size_t o = 0, i, max = sizeof(c->key_show) - 8;

	for (i = 0; i < c->key_len && o < max; i++) {
		unsigned char ch = (unsigned char)c->key[i];

		if (ch >= 0x20 && ch < 0x7f && ch != '\\')
			c->key_show[o++] = (char)ch;
		else
			o += (size_t)snprintf(c->key_show + o, 5, "\\x%02x", ch);
	}
	if (i < c->key_len)
		o += (size_t)snprintf(c->key_show + o, 4, "...");
	c->key_show[o] = 0;
}

static void log_sink(void *ctx, int level, const char *msg)
{
	static const char *names[] = {"error", "warn", "info", "debug"};

	fprintf(stderr, "kvring: [%s] %s\n", level >= 0 && level < 4 ? names[level] : "?", msg);
}

/* ------------------------------------------------------------- options */

static int parse_u32(const char *s, uint32_t lo, uint32_t hi, uint32_t *out)
{
	unsigned long long v;
	char *end;

	if (*s < '0' || *s > '9')
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (*end || errno || v < lo || v > hi)
		return -EINVAL;
	*out = (uint32_t)v;
	return 0;
}

static int read_secret(struct cli *c, const char *path)
{
	int rc = secret_file_read(path, c->secret, &c->secret_len);

	if (rc)
		fprintf(stderr, "kvring: --secret-file %s: %s\n", path, secret_file_strerror(rc));
	return rc;
}

static int bad_opt(const char *opt, const char *val, const char *want)
{
	fprintf(stderr, "kvring: bad value '%s' for %s: %s\n", val, opt, want);
	return EXIT_USAGE;
}

static int parse_args(struct cli *c, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"secret-file", required_argument, NULL, 's'},
	    {"timeout", required_argument, NULL, 't'},
	    {"conns", required_argument, NULL, 'c'},
	    {"replicas", required_argument, NULL, 'r'},
	    {"max-size", required_argument, NULL, 'm'},
	    {"capacity", required_argument, NULL, 'C'},
	    {"quiet", no_argument, NULL, 'q'},
	    {"verbose", no_argument, NULL, 'v'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	const char *secret_file = NULL;
	int ch, nargs;
	size_t i;

	while ((ch = getopt_long(argc, argv, "qvh", opts, NULL)) != -1) {
		switch (ch) {
		case 's':
			secret_file = optarg;
			break;
		case 't':
			if (parse_u32(optarg, 1, 86400000, &c->timeout_ms))
				return bad_opt("--timeout", optarg, "milliseconds, 1 or more");
			break;
		case 'c':
			if (parse_u32(optarg, 1, 64, &c->conns))
				return bad_opt("--conns", optarg, "1 to 64");
			break;
		case 'r':
			if (parse_u32(optarg, 1, 255, &c->replicas))
				return bad_opt("--replicas", optarg, "1 or more");
			break;
		case 'm':
			if (kvr_parse_size(optarg, &c->max_size) || !c->max_size ||
			    c->max_size > (SIZE_MAX >> 1))
				return bad_opt("--max-size", optarg, "a size like 64M or 2G");
			break;
		case 'C':
			if (kvr_parse_size(optarg, &c->capacity) || !c->capacity)
				return bad_opt("--capacity", optarg, "a size like 4G");
			break;
		case 'q':
			c->quiet = true;
			break;
		case 'v':
			c->verbose = true;
			break;
		case 'h':
			usage(stdout);
			exit(EXIT_OK);
		default:
			usage(stderr);
			return EXIT_USAGE;
		}
	}
	if (optind >= argc) {
		usage(stderr);
		return EXIT_USAGE;
	}
	for (i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
		if (!strcmp(argv[optind], cmds[i].name))
			break;
	if (i == sizeof(cmds) / sizeof(cmds[0])) {
		fprintf(stderr, "kvring: unknown command '%s'\n", argv[optind]);
		usage(stderr);
		return EXIT_USAGE;
	}
	c->cmd = (enum cmd)i;
	nargs = argc - optind - 1;
	if (nargs < cmds[i].nargs_min || nargs > cmds[i].nargs_max) {
		fprintf(stderr, "kvring: %s takes %s\n", cmds[i].name,
			c->cmd == CMD_STATS	? "URI"
			: cmds[i].nargs_max > 2 ? "URI KEY [FILE]"
						: "URI KEY");
		return EXIT_USAGE;
	}
	c->uri = argv[optind + 1];
	c->key = nargs > 1 ? argv[optind + 2] : "";
	c->file = nargs > 2 && strcmp(argv[optind + 3], "-") ? argv[optind + 3] : NULL;
	c->key_len = strlen(c->key);
	key_show(c);
	if (strncmp(c->uri, "mem:", 4) && strncmp(c->uri, "file:", 5) && !node_list(c->uri)) {
		fprintf(
		    stderr,
		    "kvring: bad URI '%s': want mem:SIZE, file:PATH, "
		    "tcp://HOST:PORT[,HOST:PORT...] or rdma://HOST:PORT[,...][?dev=NAME&gid=N]\n",
		    c->uri);
		return EXIT_USAGE;
	}
	if (c->cmd != CMD_STATS && (!c->key_len || c->key_len > KVR_MAX_KEY)) {
		fprintf(stderr, "kvring: a key is 1 to %d bytes\n", KVR_MAX_KEY);
		return EXIT_USAGE;
	}
	if (secret_file && read_secret(c, secret_file))
		return EXIT_USAGE;
	return EXIT_OK;
}

/* -------------------------------------------------------------- engine */

static int open_target(struct cli *c)
{
	struct kvr_engine_opts eo = {.size = sizeof(eo), .max_objects = 64};
	bool tcp = node_list(c->uri) != NULL;
	int rc;

	eo.timeout_ms = c->timeout_ms;
	if (c->verbose) {
		eo.log = log_sink;
		eo.log_level = KVR_LOG_INFO;
	}
	rc = kvr_engine_create(&eo, &c->e);
	if (rc) {
		c->e = NULL;
		fprintf(stderr, "kvring: cannot create an engine: %s\n", kvr_strerror(rc));
		return EXIT_ERROR;
	}
	if (tcp) {
		struct kvr_connect_opts o = {.size = sizeof(o)};

		o.conns = c->conns;
		o.replicas = c->replicas;
		o.timeout_ms = c->timeout_ms;
		o.connect_timeout_ms = c->timeout_ms < 3000 ? c->timeout_ms : 0;
		if (c->secret_len) {
			o.secret = c->secret;
			o.secret_len = c->secret_len;
		}
		rc = kvr_connect(c->e, c->uri, &o, &c->t);
	} else {
		struct kvr_store_opts o = {.size = sizeof(o), .timeout_ms = c->timeout_ms};

		/* only put may create a file store; reads of a missing one fail */
		if (c->cmd != CMD_PUT)
			o.flags |= KVR_STORE_NO_CREATE;
		if (!strncmp(c->uri, "file:", 5))
			o.capacity = c->capacity;
		rc = kvr_store_open(c->e, c->uri, &o, &c->t);
	}
	if (rc) {
		const char *msg = kvr_engine_errmsg(c->e);

		c->t = NULL;
		fprintf(stderr, "kvring: cannot open '%s': %s\n", c->uri,
			*msg		? msg
			: rc == -ENOENT ? strerror(ENOENT)
					: kvr_strerror(rc));
		return rc == -EINVAL ? EXIT_USAGE : EXIT_ERROR;
	}
	return EXIT_OK;
}

static void close_target(struct cli *c)
{
	if (c->t)
		kvr_target_close(c->t);
	if (c->mr)
		kvr_mem_deregister(c->e, c->mr);
	kvr_engine_destroy(c->e);
	if (c->buf)
		munmap(c->buf, c->buf_len);
	c->t = NULL;
	c->mr = NULL;
	c->e = NULL;
	c->buf = NULL;
}

static void batch_done(void *ctx, size_t n, const int64_t *res)
{
	struct cli *c = ctx;

	c->res = n == 1 ? res[0] : -EPROTO;
	c->done = true;
}

/* One object, one batch: submit, poll until the callback ran. Returns the
 * object's result (or the submission's error). */
static int64_t one(struct cli *c, enum kvr_op op, size_t len)
{
	kvr_sge sge = {c->buf, len};
	kvr_obj o = {c->key, c->key_len, &sge, 1};
	int rc;

	if (op == KVR_OP_EXISTS || op == KVR_OP_REMOVE) {
		o.sgl = NULL;
		o.nsge = 0;
	}
	c->done = false;
	rc = kvr_submit(c->t, op, &o, 1, c->timeout_ms, batch_done, c);
	if (rc)
		return rc;
	while (!c->done) {
		rc = kvr_engine_poll(c->e, -1);
		if (rc < 0)
			return rc;
	}
	return c->res;
}

/* Map (or grow to) len bytes for the object, unregistered. */
static int buf_reserve(struct cli *c, size_t len)
{
	size_t want = (len + PAGE - 1) / PAGE * PAGE;
	void *p;

	if (!want)
		want = PAGE;
	if (c->buf && want <= c->buf_len)
		return 0;
	if (c->buf)
		p = mremap(c->buf, c->buf_len, want, MREMAP_MAYMOVE);
	else
		p = mmap(NULL, want, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return -ENOMEM;
	c->buf = p;
	c->buf_len = want;
	return 0;
}

static int buf_register(struct cli *c)
{
	int rc = kvr_mem_register(c->e, c->buf, c->buf_len, KVR_MEM_HOST, &c->mr);

	if (rc) {
		c->mr = NULL;
		say(c, "cannot register %zu bytes: %s (%s)", c->buf_len, kvr_strerror(rc),
		    kvr_engine_errmsg(c->e));
	}
	return rc;
}

static void buf_release(struct cli *c)
{
	if (c->mr)
		kvr_mem_deregister(c->e, c->mr);
	if (c->buf)
		munmap(c->buf, c->buf_len);
	c->mr = NULL;
	c->buf = NULL;
	c->buf_len = 0;
}

/* The exit status of a failed object result, with its message. */
static int failed(struct cli *c, int64_t res)
{
	if (res == -ENOENT) {
		if (!c->quiet)
			say(c, "not found");
		return EXIT_MISS;
	}
	switch (res) {
	case -EACCES:
		say(c, "the server refused the connection: wrong or missing secret "
		       "(--secret-file)");
		break;
	case -ECONNREFUSED:
		say(c, "connection refused: no server listening");
		break;
	case -EHOSTDOWN:
		say(c, "every node holding the key is down");
		break;
	case -EPROTO:
		say(c, "the peer does not speak kvring");
		break;
	default:
		say(c, "%s", kvr_strerror((int)res));
	}
	return EXIT_ERROR;
}

/* ------------------------------------------------------------ commands */

/* Read all of fd into the buffer (at most max_size bytes); *len = bytes. */
static int read_input(struct cli *c, int fd, const char *name, size_t *len)
{
	struct stat st;
	size_t have = 0;
	char probe;

	if (!fstat(fd, &st) && S_ISREG(st.st_mode) && (uint64_t)st.st_size > c->max_size) {
		say(c, "%s is %lld bytes, over --max-size %llu", name, (long long)st.st_size,
		    (unsigned long long)c->max_size);
		return -EFBIG;
	}
	if (buf_reserve(c, S_ISREG(st.st_mode) && st.st_size ? (size_t)st.st_size : 1u << 20))
		goto nomem;
	for (;;) {
		ssize_t n;

		if (have == c->buf_len) {
			if (have >= c->max_size) {
				n = read(fd, &probe, 1);
				if (n == 0)
					break;
				if (n > 0) {
					say(c, "%s is over --max-size %llu bytes", name,
					    (unsigned long long)c->max_size);
					return -EFBIG;
				}
			} else if (buf_reserve(c,
					       have * 2 < c->max_size ? have * 2 : c->max_size)) {
				goto nomem;
			}
			continue;
		}
		n = read(fd, c->buf + have, c->buf_len - have);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			say(c, "reading %s: %s", name, strerror(errno));
			return -EIO;
		}
		if (n == 0)
			break;
		have += (size_t)n;
	}
	*len = have;
	return 0;
nomem:
	say(c, "cannot map memory for the object: %s", strerror(ENOMEM));
	return -ENOMEM;
}

static int cmd_put(struct cli *c)
{
	const char *name = c->file ? c->file : "stdin";
	int fd = c->file ? open(c->file, O_RDONLY | O_CLOEXEC) : 0;
	size_t len = 0;
	int64_t res;
	int rc;

	if (fd < 0) {
		say(c, "cannot open %s: %s", c->file, strerror(errno));
		return EXIT_ERROR;
	}
	rc = read_input(c, fd, name, &len);
	if (c->file)
		close(fd);
	if (rc)
		return EXIT_ERROR;
	if (!len) {
		say(c, "%s is empty: an object is 1 byte or more", name);
		return EXIT_ERROR;
	}
	if (buf_register(c))
		return EXIT_ERROR;
	res = one(c, KVR_OP_PUT, len);
	if (res < 0)
		return failed(c, res);
	if (res != (int64_t)len) {
		say(c, "stored %lld of %zu bytes", (long long)res, len);
		return EXIT_ERROR;
	}
	return EXIT_OK;
}

static int write_all(int fd, const uint8_t *p, size_t len)
{
	while (len) {
		ssize_t n = write(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Write the object out; the file is created only now, after a hit. */
static int write_output(struct cli *c, size_t len)
{
	const char *name = c->file ? c->file : "stdout";
	int fd = 1, rc;

	if (c->file) {
		fd = open(c->file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
		if (fd < 0) {
			say(c, "cannot create %s: %s", c->file, strerror(errno));
			return EXIT_ERROR;
		}
	}
	rc = write_all(fd, c->buf, len);
	if (c->file && close(fd) && !rc)
		rc = -errno;
	if (rc) {
		say(c, "writing %s: %s", name, strerror(-rc));
		return EXIT_ERROR;
	}
	return EXIT_OK;
}

static int cmd_get(struct cli *c)
{
	for (int attempt = 0; attempt < GET_ATTEMPTS; attempt++) {
		int64_t len = one(c, KVR_OP_EXISTS, 0), res;

		if (len < 0)
			return failed(c, len);
		if (len == 0) /* a remote peer may hold an empty object */
			return write_output(c, 0);
		if ((uint64_t)len > c->max_size) {
			say(c, "the object is %lld bytes, over --max-size %llu", (long long)len,
			    (unsigned long long)c->max_size);
			return EXIT_ERROR;
		}
		buf_release(c);
		if (buf_reserve(c, (size_t)len)) {
			say(c, "cannot map %lld bytes: %s", (long long)len, strerror(ENOMEM));
			return EXIT_ERROR;
		}
		if (buf_register(c))
			return EXIT_ERROR;
		res = one(c, KVR_OP_GET, (size_t)len);
		if (res >= 0)
			return write_output(c, (size_t)res);
		if (res != -EMSGSIZE) /* else it grew since exists: ask again */
			return failed(c, res);
	}
	say(c, "the object keeps changing size; giving up after %d attempts", GET_ATTEMPTS);
	return EXIT_ERROR;
}

static int cmd_exists(struct cli *c)
{
	int64_t res = one(c, KVR_OP_EXISTS, 0);

	if (res < 0)
		return failed(c, res);
	if (!c->quiet)
		printf("%lld\n", (long long)res);
	return EXIT_OK;
}

static int cmd_rm(struct cli *c)
{
	int64_t res = one(c, KVR_OP_REMOVE, 0);

	return res < 0 ? failed(c, res) : EXIT_OK;
}

/* ---------------------------------------------------------------- stats */

static void print_target_stats(const struct cli *c, const struct kvr_stats *st)
{
	const struct {
		const char *name;
		uint64_t v;
	} f[] = {
	    {"objects", st->objects},
	    {"used_bytes", st->used_bytes},
	    {"capacity_bytes", st->capacity_bytes},
	    {"batches", st->batches},
	    {"puts", st->puts},
	    {"gets", st->gets},
	    {"exists", st->exists},
	    {"removes", st->removes},
	    {"errors", st->errors},
	    {"misses", st->misses},
	    {"timeouts", st->timeouts},
	    {"bytes_put", st->bytes_put},
	    {"bytes_got", st->bytes_got},
	    {"checksum_errors", st->checksum_errors},
	    {"evictions", st->evictions},
	    {"bounce_bytes", st->bounce_bytes},
	    {"fixed_ios", st->fixed_ios},
	    {"plain_ios", st->plain_ios},
	    {"submits", st->submits},
	    {"cq_overflows", st->cq_overflows},
	    {"pool_bytes", st->pool_bytes},
	    {"pool_bytes_ready", st->pool_bytes_ready},
	};

	fputs("{\"target\":", stdout);
	json_str(stdout, c->uri);
	for (size_t i = 0; i < sizeof(f) / sizeof(f[0]); i++)
		printf(",\"%s\":%llu", f[i].name, (unsigned long long)f[i].v);
	fputs("}\n", stdout);
}

static int cmd_stats(struct cli *c)
{
	struct kvr_stats st = {.size = sizeof(st)};
	int rc = EXIT_OK;
	const char *p;

	if (kvr_target_stats(c->t, &st)) {
		say(c, "cannot read the target's counters");
		return EXIT_ERROR;
	}
	print_target_stats(c, &st);
	if (!node_list(c->uri))
		return EXIT_OK;
	/* rdma:// servers answer STATS over their TCP address too */
	for (p = node_list(c->uri); *p && *p != '?';) {
		const char *end = strpbrk(p, ",?");
		size_t len = end ? (size_t)(end - p) : strlen(p);
		char node[256];

		if (len && len < sizeof(node)) {
			memcpy(node, p, len);
			node[len] = 0;
			if (node_stats(node, c->secret_len ? c->secret : NULL, c->secret_len,
				       c->timeout_ms, stdout))
				rc = EXIT_ERROR;
		}
		p = end && *end == ',' ? end + 1 : p + len;
	}
	return rc;
}

int main(int argc, char **argv)
{
	static struct cli c; /* lives until the engine is gone */
	int rc;

	c.timeout_ms = DEF_TIMEOUT;
	c.max_size = DEF_MAX_SIZE;
	rc = parse_args(&c, argc, argv);
	if (rc)
		return rc;
	rc = open_target(&c);
	if (rc) {
		kvr_engine_destroy(c.e);
		return rc;
	}
	switch (c.cmd) {
	case CMD_PUT:
		rc = cmd_put(&c);
		break;
	case CMD_GET:
		rc = cmd_get(&c);
		break;
	case CMD_EXISTS:
		rc = cmd_exists(&c);
		break;
	case CMD_RM:
		rc = cmd_rm(&c);
		break;
	case CMD_STATS:
		rc = cmd_stats(&c);
		break;
	}
	close_target(&c);
	if (fflush(stdout) && rc == EXIT_OK) {
		fprintf(stderr, "kvring: writing stdout: %s\n", strerror(errno));
		rc = EXIT_ERROR;
	}
	return rc;
}
