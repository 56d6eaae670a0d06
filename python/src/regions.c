/* SPDX-License-Identifier: MIT */
/* Which mapping of this process holds an address (/proc/self/maps). */
#include "kvpy.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

int kvpy_find_mapping(uintptr_t addr, uintptr_t *start, uintptr_t *end, char *name, size_t name_len)
{
	FILE *f = fopen("/proc/self/maps", "re");
	char line[4096];
	int rc = -ENOENT;

	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f)) {
		uintptr_t lo, hi;
		int pos = 0;

		if (sscanf(line, "%" SCNxPTR "-%" SCNxPTR " %*s %*s %*s %*s%n", &lo, &hi, &pos) < 2)
			continue;
		if (addr < lo || addr >= hi)
			continue;
		const char *p = line + pos;

		while (*p == ' ')
			p++;
		snprintf(name, name_len, "%.*s", (int)strcspn(p, "\n"), p);
		*start = lo;
		*end = hi;
		rc = 0;
		break;
	}
	fclose(f);
	return rc;
}
