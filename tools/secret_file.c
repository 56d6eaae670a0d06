/* SPDX-License-Identifier: MIT */
#include "tools/secret_file.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

int secret_file_read(const char *path, uint8_t buf[SECRET_FILE_MAX], size_t *len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	size_t n = 0;
	uint8_t extra;
	ssize_t r;

	if (fd < 0)
		return -errno;
	for (;;) {
		r = n < SECRET_FILE_MAX ? read(fd, buf + n, SECRET_FILE_MAX - n)
					: read(fd, &extra, 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		if (n == SECRET_FILE_MAX) {
			close(fd);
			return -EFBIG;
		}
		n += (size_t)r;
	}
	if (r < 0) {
		r = -errno;
		close(fd);
		return (int)r;
	}
	close(fd);
	if (n && buf[n - 1] == '\n')
		n--;
	if (n && buf[n - 1] == '\r')
		n--;
	if (!n)
		return -EINVAL;
	*len = n;
	return 0;
}

const char *secret_file_strerror(int err)
{
	switch (err) {
	case -EINVAL:
		return "the file is empty";
	case -EFBIG:
		return "over 4096 bytes";
	default:
		return strerror(-err);
	}
}
