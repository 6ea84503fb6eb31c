// SPDX-License-Identifier: Apache-2.0
/*
 * One error type for the whole helper. A step that fails fills a struct error
 * and returns -1; the error travels up to the command, which reports it once,
 * the way its caller expects (see the report functions below).
 */
#ifndef OSVIRT_ERROR_H
#define OSVIRT_ERROR_H

#include <stdio.h>

#include "utils.h"

/* Exit statuses an error maps to. */
enum {
	EXIT_USAGE = 2,   /* bad command line */
	EXIT_SETUP = 125, /* a setup step failed (exec's contract, like env(1) and nsenter) */
	EXIT_NOEXEC = 126,
	EXIT_NOTFOUND = 127,
};

struct error {
	int status;     /* exit status this error means: EXIT_* or 1 */
	int errnum;     /* errno of the failed call, or 0 */
	char msg[1024]; /* what failed, without the strerror text */
};

/* Sets *e and returns -1. err_sys takes errno; err_usage means a bad command line. */
FORMAT(3, 4) int err_set(struct error *e, int status, const char *fmt, ...);
FORMAT(2, 3) int err_sys(struct error *e, const char *fmt, ...);
FORMAT(2, 3) int err_usage(struct error *e, const char *fmt, ...);
/* Like err_sys with an explicit errno. */
FORMAT(3, 4) int err_errno(struct error *e, int errnum, const char *fmt, ...);

/* "msg" or "msg: strerror(errnum)". */
void err_text(const struct error *e, char *out, size_t cap);

/*
 * A problem that does not end the command (a console client that went away,
 * a log that cannot be written): "osvirt-helper: text" on stderr, which is
 * monitor.log once a monitor serves. errno is kept.
 */
void err_warn(const struct error *e);
/* err_warn of the failed call's errno: "osvirt-helper: what: strerror(errno)". */
FORMAT(1, 2) void warn_sys(const char *fmt, ...);

/* Reports: usage errors print the usage and exit 2; others print "osvirt-helper[ CMD]: text". */
NORETURN void die(const struct error *e, const char *cmd);
FORMAT(1, 2) NORETURN void usage_error(const char *fmt, ...);
/* The usage text (args.c). */
void usage(FILE *out);

#endif
