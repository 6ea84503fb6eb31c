// SPDX-License-Identifier: Apache-2.0
#define _GNU_SOURCE
#include "utils.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>

void cleanup_fdp(int *fd)
{
	if (*fd >= 0)
		close_keep_errno(*fd);
}

void cleanup_freep(void *p)
{
	int saved = errno;
	free(*(void **)p);
	errno = saved;
}

void close_keep_errno(int fd)
{
	int saved = errno;
	close(fd);
	errno = saved;
}

int list_add(struct list *l, const char *s)
{
	const char **v = realloc(l->v, (l->n + 2) * sizeof *v);
	if (!v)
		return -1;
	v[l->n++] = s;
	v[l->n] = NULL;
	l->v = v;
	return 0;
}

char *list_join(const struct list *l)
{
	size_t len = 1;
	for (size_t i = 0; i < l->n; i++)
		len += strlen(l->v[i]);
	char *s = calloc(1, len);
	if (!s)
		return NULL;
	for (size_t i = 0; i < l->n; i++)
		strcat(s, l->v[i]);
	return s;
}

int write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;
	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

ssize_t read_full(int fd, void *buf, size_t len)
{
	size_t got = 0;
	while (got < len) {
		ssize_t n = read(fd, (char *)buf + got, len - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		if (n == 0)
			break;
		got += (size_t)n;
	}
	return (ssize_t)got;
}

int write_file(const char *path, const char *s)
{
	AUTO_FD fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t n = write(fd, s, strlen(s));
	return n == (ssize_t)strlen(s) ? 0 : -1;
}

/*
 * Atomic replace: a reader sees the old file or the complete new one. Not
 * fsynced: what the monitor writes (pids, the exit record) describes processes
 * that a power loss ends anyway, and a daemon or monitor crash keeps the page
 * cache.
 */
int write_file_atomic(int dirfd, const char *name, const char *s)
{
	char tmp[NAME_MAX + 1];
	snprintf(tmp, sizeof tmp, ".%s.tmp", name);
	int fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return -1;
	if (write_all(fd, s, strlen(s)) < 0) {
		close_keep_errno(fd);
		int saved = errno;
		unlinkat(dirfd, tmp, 0);
		errno = saved;
		return -1;
	}
	close(fd);
	return renameat(dirfd, tmp, dirfd, name);
}

void split_path(const char *path, char *parent, char *name)
{
	char buf[PATH_MAX];
	snprintf(buf, sizeof buf, "%s", path);
	size_t len = strlen(buf);
	while (len > 1 && buf[len - 1] == '/')
		buf[--len] = '\0';
	char *slash = strrchr(buf, '/');
	snprintf(name, NAME_MAX + 1, "%s", slash ? slash + 1 : buf);
	if (slash)
		*slash = '\0';
	snprintf(parent, PATH_MAX, "%s", slash && buf[0] ? buf : "/");
}

void ignore_signal(int sig)
{
	signal(sig, SIG_IGN);
}

void iso_now(char *out, size_t cap)
{
	struct timespec ts;
	struct tm tm;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	size_t n = strftime(out, cap, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out + n, cap - n, ".%03ldZ", ts.tv_nsec / 1000000);
}

int exit_code(int status)
{
	return WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status);
}

int wait_exit_code(pid_t child)
{
	int status;
	while (waitpid(child, &status, 0) < 0)
		if (errno != EINTR)
			return 1;
	return exit_code(status);
}
