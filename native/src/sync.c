// SPDX-License-Identifier: Apache-2.0
#define _GNU_SOURCE
#include "sync.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <string.h>
#include <unistd.h>

static int g_errfd = -1;

int sync_pipe(int fds[2])
{
	return pipe2(fds, O_CLOEXEC);
}

int sync_send(int fd, char step)
{
	return write(fd, &step, 1) == 1 ? 0 : -1;
}

int sync_wait(int fd)
{
	char step;
	return read(fd, &step, 1) == 1 ? 0 : -1;
}

void sync_set_errfd(int fd)
{
	g_errfd = fd;
}

void child_die(const struct error *e)
{
	int code = e->status == EXIT_NOEXEC || e->status == EXIT_NOTFOUND ? e->status : EXIT_SETUP;
	char buf[1200];
	buf[0] = (char)code;
	err_text(e, buf + 1, sizeof buf - 1);
	size_t len = strlen(buf + 1) + 1;
	if (g_errfd < 0 || write_all(g_errfd, buf, len) < 0)
		fprintf(stderr, "osvirt-helper: %s\n", buf + 1);
	_exit(code);
}

void child_fail_code(int code, const char *fmt, ...)
{
	struct error e = {.status = code, .errnum = errno};
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(e.msg, sizeof e.msg, fmt, ap);
	va_end(ap);
	child_die(&e);
}

int sync_read_error(int fd, int *code, char *msg, size_t cap)
{
	char buf[1200];
	ssize_t n = read_full(fd, buf, sizeof buf - 1);
	if (n < 0)
		return -1;
	if (n == 0)
		return 0;
	buf[n] = '\0';
	*code = (unsigned char)buf[0];
	snprintf(msg, cap, "%s", buf + 1);
	return 1;
}
