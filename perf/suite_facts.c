/* SPDX-License-Identifier: MIT */
/*
 * kvring-bench suite: the machine's facts for suite.json and the report:
 * kernel, CPU, cores, memory, the io_uring features and opcodes this kernel
 * has, the file store's file system and block device, RDMA devices, GPU,
 * the reference tools' versions.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <liburing.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "suite.h"

const char *const tool_name[5] = {"fio", "iperf3", "redis-server", "gnuplot", "valgrind"};

static void first_line(const char *s, char *buf, size_t len)
{
	size_t n = 0;

	buf[0] = '\0';
	if (!s)
		return;
	while (s[n] && s[n] != '\n')
		n++;
	snprintf(buf, len, "%.*s", (int)n, s);
}

static void read_line(const char *path, const char *prefix, char *buf, size_t len)
{
	char line[512];
	FILE *f = fopen(path, "r");

	buf[0] = '\0';
	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		const char *p = line;

		if (prefix) {
			if (strncmp(line, prefix, strlen(prefix)))
				continue;
			p = strchr(line, ':');
			p = p ? p + 1 : line;
			while (*p == ' ' || *p == '\t')
				p++;
		}
		first_line(p, buf, len);
		break;
	}
	fclose(f);
}

static void uring_facts(struct facts *fx)
{
	static const struct {
		unsigned bit;
		const char *name;
	} feats[] = {
	    {IORING_FEAT_SINGLE_MMAP, "single_mmap"},
	    {IORING_FEAT_NODROP, "nodrop"},
	    {IORING_FEAT_SUBMIT_STABLE, "submit_stable"},
	    {IORING_FEAT_FAST_POLL, "fast_poll"},
	    {IORING_FEAT_EXT_ARG, "ext_arg"},
	    {IORING_FEAT_NATIVE_WORKERS, "native_workers"},
	    {IORING_FEAT_RSRC_TAGS, "rsrc_tags"},
	    {IORING_FEAT_CQE_SKIP, "cqe_skip"},
	    {IORING_FEAT_LINKED_FILE, "linked_file"},
	};
	static const struct {
		int op;
		const char *name;
	} ops[] = {
	    {IORING_OP_READ_FIXED, "read_fixed"}, {IORING_OP_WRITE_FIXED, "write_fixed"},
	    {IORING_OP_SEND_ZC, "send_zc"},	  {IORING_OP_SENDMSG_ZC, "sendmsg_zc"},
	    {IORING_OP_RECVMSG, "recvmsg"},	  {IORING_OP_ACCEPT, "accept"},
	    {IORING_OP_POLL_ADD, "poll_add"},
	};
	struct io_uring_params p;
	struct io_uring_probe *probe;
	struct io_uring ring;
	size_t i, n = 0;

	memset(&p, 0, sizeof(p));
	snprintf(fx->uring_features, sizeof(fx->uring_features), "io_uring unavailable");
	if (io_uring_queue_init_params(4, &ring, &p))
		return;
	fx->uring_features[0] = '\0';
	for (i = 0; i < sizeof(feats) / sizeof(feats[0]); i++)
		if (p.features & feats[i].bit)
			n +=
			    (size_t)snprintf(fx->uring_features + n, sizeof(fx->uring_features) - n,
					     "%s%s", n ? "," : "", feats[i].name);
	probe = io_uring_get_probe_ring(&ring);
	n = 0;
	for (i = 0; probe && i < sizeof(ops) / sizeof(ops[0]); i++)
		if (io_uring_opcode_supported(probe, ops[i].op))
			n += (size_t)snprintf(fx->uring_ops + n, sizeof(fx->uring_ops) - n, "%s%s",
					      n ? "," : "", ops[i].name);
	if (probe)
		io_uring_free_probe(probe);
	io_uring_queue_exit(&ring);
}

static void block_facts(const char *dir, struct facts *fx)
{
	char path[256], link[256], model[128];
	struct stat st;
	ssize_t n;
	char *base;

	snprintf(fx->fs, sizeof(fx->fs), "%s", bench_fs_name(dir));
	if (stat(dir, &st))
		return;
	snprintf(path, sizeof(path), "/sys/dev/block/%u:%u", major(st.st_dev), minor(st.st_dev));
	n = readlink(path, link, sizeof(link) - 1);
	if (n <= 0)
		return;
	link[n] = '\0';
	base = strrchr(link, '/');
	base = base ? base + 1 : link;
	snprintf(path, sizeof(path), "/sys/dev/block/%u:%u/device/model", major(st.st_dev),
		 minor(st.st_dev));
	read_line(path, NULL, model, sizeof(model));
	if (!model[0]) { /* a partition: the disk's model */
		snprintf(path, sizeof(path), "/sys/dev/block/%u:%u/../device/model",
			 major(st.st_dev), minor(st.st_dev));
		read_line(path, NULL, model, sizeof(model));
	}
	snprintf(fx->blockdev, sizeof(fx->blockdev), "%s%s%s", base, model[0] ? " " : "", model);
}

void collect_facts(struct facts *fx)
{
	struct utsname u;
	char *out, *argv[3], buf[96];
	int i;

	memset(fx, 0, sizeof(*fx));
	if (!uname(&u))
		snprintf(fx->kernel, sizeof(fx->kernel), "%s %s %s", u.sysname, u.release,
			 u.machine);
	read_line("/proc/cpuinfo", "model name", fx->cpu, sizeof(fx->cpu));
	fx->cores = sysconf(_SC_NPROCESSORS_ONLN);
	fx->mem_bytes = (uint64_t)sysconf(_SC_PHYS_PAGES) * (uint64_t)sysconf(_SC_PAGESIZE);
	uring_facts(fx);
	block_facts(S.work, fx);
	if (!suite_rdma_devices(fx->rdma, sizeof(fx->rdma)))
		snprintf(fx->rdma, sizeof(fx->rdma), "none");
	snprintf(fx->gpu, sizeof(fx->gpu), "%s", S.cuda ? "CUDA device 0" : "none");
	for (i = 0; i < 5; i++) {
		snprintf(fx->tool[i], sizeof(fx->tool[i]), "not installed");
		if (!bench_have(tool_name[i]))
			continue;
		argv[0] = (char *)tool_name[i];
		argv[1] = i == 3 ? "-V" : "--version";
		argv[2] = NULL;
		if (bench_run_capture(argv, &out) == 0) {
			first_line(out, buf, sizeof(buf));
			snprintf(fx->tool[i], sizeof(fx->tool[i]), "%s", buf);
		}
		free(out);
	}
}
