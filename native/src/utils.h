// SPDX-License-Identifier: Apache-2.0
/* Small helpers every part of the helper uses: I/O, lists, numbers, cleanup. */
#ifndef OSVIRT_UTILS_H
#define OSVIRT_UTILS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/types.h>
#include <unistd.h>

#define VERSION "0.1.0"
#define NORETURN __attribute__((noreturn))
#define FORMAT(a, b) __attribute__((format(printf, a, b)))
#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* Scope-bound resources: the fd is closed, the memory freed, when the variable goes out of scope. */
void cleanup_fdp(int *fd);
void cleanup_freep(void *p);
#define AUTO_FD __attribute__((cleanup(cleanup_fdp))) int
#define AUTO_FREE __attribute__((cleanup(cleanup_freep)))

/* Hands the fd (or pointer) out of an AUTO_ variable, which then releases nothing. */
static inline int take_fd(int *fd)
{
	int v = *fd;
	*fd = -1;
	return v;
}

/* close() that keeps errno: for error paths that report it afterwards. */
void close_keep_errno(int fd);

/* Growable NULL-terminated list, for the repeatable options. */
struct list {
	const char **v;
	size_t n;
};

/* Appends s; -1 (ENOMEM) when the list cannot grow. */
int list_add(struct list *l, const char *s);
/* All items concatenated: a fresh string, or NULL (ENOMEM). */
char *list_join(const struct list *l);

int write_all(int fd, const void *buf, size_t len);
/* Reads until len bytes or EOF; returns the count, or -1 on error. */
ssize_t read_full(int fd, void *buf, size_t len);
/* Kernel control files (cgroup.procs, uid_map) must get their content in one write. */
int write_file(const char *path, const char *s);
/* Atomic replace within dirfd (see utils.c). */
int write_file_atomic(int dirfd, const char *name, const char *s);

/* Split "a/b/c" into "a/b" and "c"; the parent of "c" is "/" (resolved inside a root). */
void split_path(const char *path, char *parent, char *name);
void ignore_signal(int sig);
/* Current UTC time as 2006-01-02T15:04:05.000Z. */
void iso_now(char *out, size_t cap);

/* A wait status as a shell reports it: the exit code, or 128 + the signal. */
int exit_code(int status);
/* Waits for child (retrying on EINTR) and returns exit_code(), or 1 if it cannot be waited for. */
int wait_exit_code(pid_t child);

#endif
