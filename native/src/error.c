// SPDX-License-Identifier: Apache-2.0
#define _GNU_SOURCE
#include "error.h"

#include <errno.h>
#include <stdarg.h>
#include <string.h>

static int err_vset(struct error *e, int status, int errnum, const char *fmt, va_list ap)
{
	e->status = status;
	e->errnum = errnum;
	vsnprintf(e->msg, sizeof e->msg, fmt, ap);
	return -1;
}

int err_set(struct error *e, int status, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	err_vset(e, status, 0, fmt, ap);
	va_end(ap);
	return -1;
}

int err_sys(struct error *e, const char *fmt, ...)
{
	int saved = errno;
	va_list ap;
	va_start(ap, fmt);
	err_vset(e, 1, saved, fmt, ap);
	va_end(ap);
	errno = saved;
	return -1;
}

int err_errno(struct error *e, int errnum, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	err_vset(e, 1, errnum, fmt, ap);
	va_end(ap);
	errno = errnum;
	return -1;
}

int err_usage(struct error *e, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	err_vset(e, EXIT_USAGE, 0, fmt, ap);
	va_end(ap);
	return -1;
}

void err_text(const struct error *e, char *out, size_t cap)
{
	if (e->errnum)
		snprintf(out, cap, "%s: %s", e->msg, strerror(e->errnum));
	else
		snprintf(out, cap, "%s", e->msg);
}

void err_warn(const struct error *e)
{
	int saved = errno;
	char text[1200];
	err_text(e, text, sizeof text);
	fprintf(stderr, "osvirt-helper: %s\n", text);
	errno = saved;
}

void warn_sys(const char *fmt, ...)
{
	struct error e;
	int saved = errno;
	va_list ap;
	va_start(ap, fmt);
	err_vset(&e, 1, saved, fmt, ap);
	va_end(ap);
	err_warn(&e);
	errno = saved;
}

void die(const struct error *e, const char *cmd)
{
	char text[1200];
	err_text(e, text, sizeof text);
	fprintf(stderr, "osvirt-helper%s%s: %s\n", cmd ? " " : "", cmd ? cmd : "", text);
	if (e->status == EXIT_USAGE)
		usage(stderr);
	exit(e->status);
}

void usage_error(const char *fmt, ...)
{
	struct error e;
	va_list ap;
	va_start(ap, fmt);
	err_vset(&e, EXIT_USAGE, 0, fmt, ap);
	va_end(ap);
	die(&e, NULL);
}
