/* SPDX-License-Identifier: MIT */
/*
 * What the demo and the suite share about the place they run in: a private
 * temporary directory for their stores and fio's file, removed at the end,
 * the signals that must remove it too, and the name of its file system.
 */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "bench.h"

int bench_rundir_make(const char *parent, const char *prefix, char *dir, size_t len)
{
	int n;

	if (!parent || !*parent)
		parent = getenv("TMPDIR");
	if (!parent || !*parent)
		parent = "/var/tmp";
	n = snprintf(dir, len, "%s/%s.XXXXXX", parent, prefix);
	if (n < 0 || (size_t)n >= len || !mkdtemp(dir)) {
		fprintf(stderr, "kvring-bench: cannot make a temporary directory in %s: %s\n",
			parent, n < 0 || (size_t)n >= len ? "path too long" : strerror(errno));
		dir[0] = '\0';
		return -1;
	}
	return 0;
}

void bench_rundir_remove(char *dir)
{
	struct dirent *de;
	DIR *d;

	if (!dir[0])
		return;
	d = opendir(dir);
	if (d) {
		while ((de = readdir(d)))
			if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
				unlinkat(dirfd(d), de->d_name, 0);
		closedir(d);
	}
	rmdir(dir);
	dir[0] = '\0';
}

void bench_catch_signals(void (*handler)(int))
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = handler;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	signal(SIGPIPE, SIG_IGN); /* a closed pipe is an error return, not a death */
}

const char *bench_fs_name(const char *dir)
{
	static char other[32];
	struct statfs sf;

	if (statfs(dir, &sf))
		return "unknown file system";
	switch ((unsigned long)sf.f_type) {
	case 0xef53:
		return "ext4";
	case 0x58465342:
		return "xfs";
	case 0x9123683e:
		return "btrfs";
	case 0x01021994:
		return "tmpfs: the file rows measure memory";
	case 0x794c7630:
		return "overlayfs";
	case 0x6969:
		return "nfs";
	default:
		snprintf(other, sizeof(other), "file system 0x%lx", (unsigned long)sf.f_type);
		return other;
	}
}
