// SPDX-License-Identifier: Apache-2.0
/* --seccomp-deny: a deny list compiled to a seccomp filter. */
#ifndef OSVIRT_SECCOMP_H
#define OSVIRT_SECCOMP_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

/*
 * One --seccomp-deny rule: the syscall fails with err, always (arg < 0) or
 * when its argument (low 32 bits, what an int parameter means to the kernel)
 * matches: '&' any bit of vals[0] set, '=' one of vals, '!' none of vals.
 */
struct deny_rule {
	int nr;
	int err;
	int arg;
	char op;
	uint32_t vals[16];
	size_t nvals;
};

struct seccomp_policy {
	struct deny_rule *rules;
	size_t n;
};

/* Parses SYSCALL[:ERRNO][:ARGn&MASK|:ARGn==V,V...|:ARGn!=V,V...] and appends it. */
int seccomp_parse_deny(struct seccomp_policy *p, const char *spec, struct error *e);
/* Installs the filter on the calling thread (nothing without rules). */
int seccomp_install(const struct seccomp_policy *p, struct error *e);
void seccomp_policy_free(struct seccomp_policy *p);

#endif
