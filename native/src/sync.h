// SPDX-License-Identifier: Apache-2.0
/*
 * The pipes between a parent and the child it forks to become a container
 * process. A one-byte message moves the child on to its next step; a
 * CLOEXEC error pipe carries why the child failed, and closes empty when its
 * exec succeeded. An error report is one byte (the exit code exec mode uses:
 * 125 setup, 126 cannot execute, 127 not found), then "step: strerror".
 */
#ifndef OSVIRT_SYNC_H
#define OSVIRT_SYNC_H

#include <sys/types.h>

#include "error.h"

/* Both ends CLOEXEC. */
int sync_pipe(int fds[2]);
/* One step byte; 0, or -1 with errno. */
int sync_send(int fd, char step);
/* Waits for one step byte; -1 when the other side closed or failed. */
int sync_wait(int fd);

/* In the child: where child_die reports (stderr while none is set). */
void sync_set_errfd(int fd);
/* In the child: report e over the error pipe and _exit with its status (125 unless 126/127). */
NORETURN void child_die(const struct error *e);
/* child_die for a failed call, errno kept: child_fail("mount %s", dst). */
FORMAT(2, 3) NORETURN void child_fail_code(int code, const char *fmt, ...);
#define child_fail(...) child_fail_code(EXIT_SETUP, __VA_ARGS__)

/*
 * In the parent: reads the child's report. Returns 1 with *code and msg set,
 * 0 when the pipe closed empty (the exec happened), -1 on a read error.
 */
int sync_read_error(int fd, int *code, char *msg, size_t cap);

#endif
