// SPDX-License-Identifier: Apache-2.0
/*
 * --seccomp-deny: a deny list compiled to a seccomp filter with libseccomp.
 *
 * The policy is the one the hand-written BPF had: every rule makes a system
 * call fail with its errno, always or when one argument's low 32 bits (what
 * an int parameter means to the kernel) match; the first rule that matches
 * a call decides; everything else is allowed; calls of another ABI (i386,
 * x32) fail with ENOSYS, since their numbers differ and no rule could hold
 * there. The filter is loaded without no_new_privs (see seccomp.c).
 */
#ifndef OSVIRT_SECCOMP_H
#define OSVIRT_SECCOMP_H

#include <seccomp.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"

/*
 * One --seccomp-deny rule: the syscall fails with err, always (arg < 0) or
 * when its argument's low 32 bits match: '&' any bit of vals[0] set, '=' one
 * of vals, '!' none of vals.
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
/* The libseccomp filter for p (not loaded); free it with seccomp_release. */
int seccomp_build(const struct seccomp_policy *p, scmp_filter_ctx *out, struct error *e);
/* Builds and loads the filter on the calling thread (nothing without rules). */
int seccomp_install(const struct seccomp_policy *p, struct error *e);
void seccomp_policy_free(struct seccomp_policy *p);

#endif
