// SPDX-License-Identifier: Apache-2.0
#define _GNU_SOURCE
#include "seccomp.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"

static const struct {
	const char *name;
	int err;
} errno_names[] = {
	{"EPERM", EPERM},   {"EACCES", EACCES},         {"ENOSYS", ENOSYS}, {"EAFNOSUPPORT", EAFNOSUPPORT},
	{"EINVAL", EINVAL}, {"EOPNOTSUPP", EOPNOTSUPP}, {"EROFS", EROFS},   {"EADDRNOTAVAIL", EADDRNOTAVAIL},
	{"ENOMEM", ENOMEM}, {"EAGAIN", EAGAIN},
};

/* A system call of this architecture by name (libseccomp's table) or number; -1 when neither. */
static int syscall_nr(const char *name, struct error *e)
{
	int nr = seccomp_syscall_resolve_name(name);
	if (nr >= 0)
		return nr;
	/* Negative: unknown, or a call this architecture does not have. */
	unsigned long num;
	if (parse_num(name, "--seccomp-deny: unknown system call", &num, e) < 0)
		return -1;
	if (num > INT32_MAX)
		return err_usage(e, "--seccomp-deny: system call number out of range: '%s'", name);
	return (int)num;
}

static int parse_rule(char *copy, const char *v, struct deny_rule *r, struct error *e)
{
	char *save = NULL;
	char *name = strtok_r(copy, ":", &save), *f2 = strtok_r(NULL, ":", &save), *f3 = strtok_r(NULL, "", &save);
	char *cond = NULL, *err = NULL;
	if (f2 && !strncmp(f2, "arg", 3))
		cond = f2;
	else
		err = f2, cond = f3;
	if (!name || (f3 && !err))
		return err_usage(e, "--seccomp-deny %s: expected SYSCALL[:ERRNO][:ARGn&MASK|ARGn==V,..|ARGn!=V,..]", v);
	*r = (struct deny_rule){.err = EPERM, .arg = -1};
	if ((r->nr = syscall_nr(name, e)) < 0)
		return -1;
	unsigned long num;
	if (err) {
		size_t i;
		for (i = 0; i < ARRAY_SIZE(errno_names); i++)
			if (!strcmp(err, errno_names[i].name))
				break;
		if (i < ARRAY_SIZE(errno_names)) {
			r->err = errno_names[i].err;
		} else {
			if (parse_num(err, "--seccomp-deny: unknown errno", &num, e) < 0)
				return -1;
			r->err = num > 4095 ? 0 : (int)num;
		}
		if (r->err <= 0 || r->err > 4095)
			return err_usage(e, "--seccomp-deny %s: errno out of range", v);
	}
	if (!cond)
		return 0;
	char *rest;
	r->arg = (int)strtol(cond + 3, &rest, 10);
	if (rest == cond + 3 || r->arg < 0 || r->arg > 5)
		return err_usage(e, "--seccomp-deny %s: expected arg0..arg5", v);
	if (rest[0] == '&') {
		r->op = '&';
		rest += 1;
	} else if ((rest[0] == '=' || rest[0] == '!') && rest[1] == '=') {
		r->op = rest[0];
		rest += 2;
	} else {
		return err_usage(e, "--seccomp-deny %s: expected &, == or != after arg%d", v, r->arg);
	}
	char *vsave = NULL;
	for (char *t = strtok_r(rest, ",", &vsave); t; t = strtok_r(NULL, ",", &vsave)) {
		if (r->nvals == ARRAY_SIZE(r->vals) || (r->op == '&' && r->nvals == 1))
			return err_usage(e, "--seccomp-deny %s: too many values", v);
		if (parse_num(t, "--seccomp-deny", &num, e) < 0)
			return -1;
		r->vals[r->nvals++] = (uint32_t)num;
	}
	if (!r->nvals)
		return err_usage(e, "--seccomp-deny %s: no value", v);
	return 0;
}

int seccomp_parse_deny(struct seccomp_policy *p, const char *v, struct error *e)
{
	AUTO_FREE char *copy = strdup(v);
	if (!copy)
		return err_sys(e, "--seccomp-deny");
	struct deny_rule r;
	if (parse_rule(copy, v, &r, e) < 0)
		return -1;
	struct deny_rule *d = realloc(p->rules, (p->n + 1) * sizeof *d);
	if (!d)
		return err_sys(e, "--seccomp-deny");
	d[p->n++] = r;
	p->rules = d;
	return 0;
}

void seccomp_policy_free(struct seccomp_policy *p)
{
	free(p->rules);
	p->rules = NULL;
	p->n = 0;
}

/*
 * Rules become libseccomp rules through "cubes": a cube constrains each
 * argument's low 32 bits to (arg & mask) == datum (mask 0: any value), which
 * is one libseccomp rule of SCMP_CMP_MASKED_EQ comparisons. A mask within the
 * low 32 bits leaves the high half free, as the kernel ignores it for an int.
 * Every condition, and the complement of every condition, is a union of cubes:
 *   '&' M   one cube per bit of M;        its complement: (arg & M) == 0
 *   '==' V  one full-mask cube per value; its complement: the aligned blocks
 *           that tile the 32-bit values between those of V
 *   '!=' V  the other way round
 * libseccomp has no rule order (an unconditional rule wins over conditional
 * ones, overlapping conditions are tried in its own order), so the first-match
 * order of the deny list is made explicit: a rule covers only what no earlier
 * rule with another errno for the same call covers. Rules with the same errno
 * may overlap freely.
 */
#define MAX_CUBES 4096

struct cube {
	uint32_t mask[6], datum[6];
};

struct cubes {
	struct cube *v;
	size_t n;
};

static int cubes_push(struct cubes *c, const struct cube *x, struct error *e)
{
	if (c->n == MAX_CUBES)
		return err_usage(e, "--seccomp-deny: the rules for one system call are too complex to compile");
	if (!(c->n & (c->n + 1))) { /* grow at 0, 1, 3, 7, ...: capacity stays n + 1 rounded up to a power of two */
		struct cube *v = realloc(c->v, 2 * (c->n + 1) * sizeof *v);
		if (!v)
			return err_sys(e, "seccomp rules");
		c->v = v;
	}
	c->v[c->n++] = *x;
	return 0;
}

static void cubes_free(struct cubes *c)
{
	free(c->v);
	c->v = NULL;
	c->n = 0;
}

/* The aligned blocks [b, b + 2^k) that tile [lo, hi] (32-bit values), as cubes on arg. */
static int push_range(struct cubes *out, int arg, uint64_t lo, uint64_t hi, struct error *e)
{
	while (lo <= hi) {
		int k = lo ? __builtin_ctzll(lo) : 32;
		if (k > 32)
			k = 32;
		while (k > 0 && lo + (1ULL << k) - 1 > hi)
			k--;
		struct cube c = {0};
		c.mask[arg] = (uint32_t)(0xffffffffULL & ~((1ULL << k) - 1));
		c.datum[arg] = (uint32_t)lo;
		if (c.mask[arg] == 0) {
			/* Every value: a cube without a constraint on arg. */
			c.datum[arg] = 0;
		}
		if (cubes_push(out, &c, e) < 0)
			return -1;
		lo += 1ULL << k;
	}
	return 0;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

/* Every 32-bit value of arg except vals. */
static int push_complement(struct cubes *out, int arg, const uint32_t *vals, size_t n, struct error *e)
{
	uint32_t sorted[16];
	memcpy(sorted, vals, n * sizeof *vals);
	qsort(sorted, n, sizeof *sorted, cmp_u32);
	uint64_t next = 0;
	for (size_t i = 0; i < n; i++) {
		if (sorted[i] > next && push_range(out, arg, next, (uint64_t)sorted[i] - 1, e) < 0)
			return -1;
		if ((uint64_t)sorted[i] + 1 > next)
			next = (uint64_t)sorted[i] + 1;
	}
	return next <= 0xffffffffULL ? push_range(out, arg, next, 0xffffffffULL, e) : 0;
}

static int push_values(struct cubes *out, int arg, const uint32_t *vals, size_t n, struct error *e)
{
	for (size_t i = 0; i < n; i++) {
		struct cube c = {0};
		c.mask[arg] = 0xffffffffU;
		c.datum[arg] = vals[i];
		if (cubes_push(out, &c, e) < 0)
			return -1;
	}
	return 0;
}

/* The calls r matches (or, with negate, those it does not match), as cubes. */
static int rule_cubes(const struct deny_rule *r, bool negate, struct cubes *out, struct error *e)
{
	struct cube c = {0};
	if (r->arg < 0)
		return negate ? 0 : cubes_push(out, &c, e);
	int a = r->arg;
	switch (r->op) {
	case '&':
		if (negate) {
			c.mask[a] = r->vals[0];
			return cubes_push(out, &c, e);
		}
		for (int b = 0; b < 32; b++) {
			if (!(r->vals[0] & (1U << b)))
				continue;
			c.mask[a] = c.datum[a] = 1U << b;
			if (cubes_push(out, &c, e) < 0)
				return -1;
		}
		return 0;
	case '=':
		return negate ? push_complement(out, a, r->vals, r->nvals, e)
			      : push_values(out, a, r->vals, r->nvals, e);
	default: /* '!' */
		return negate ? push_values(out, a, r->vals, r->nvals, e)
			      : push_complement(out, a, r->vals, r->nvals, e);
	}
}

/* a ∩ b, or false when they share no value. */
static bool intersect(const struct cube *a, const struct cube *b, struct cube *out)
{
	for (int k = 0; k < 6; k++) {
		uint32_t common = a->mask[k] & b->mask[k];
		if ((a->datum[k] ^ b->datum[k]) & common)
			return false;
		out->mask[k] = a->mask[k] | b->mask[k];
		out->datum[k] = a->datum[k] | b->datum[k];
	}
	return true;
}

/* *acc = *acc ∩ other, pairwise. */
static int cubes_and(struct cubes *acc, const struct cubes *other, struct error *e)
{
	struct cubes out = {0};
	for (size_t i = 0; i < acc->n; i++) {
		for (size_t j = 0; j < other->n; j++) {
			struct cube x;
			if (intersect(&acc->v[i], &other->v[j], &x) && cubes_push(&out, &x, e) < 0) {
				cubes_free(&out);
				return -1;
			}
		}
	}
	cubes_free(acc);
	*acc = out;
	return 0;
}

static int add_cube(scmp_filter_ctx ctx, const struct deny_rule *r, const struct cube *c, struct error *e)
{
	struct scmp_arg_cmp cmp[6];
	unsigned n = 0;
	for (unsigned k = 0; k < 6; k++)
		if (c->mask[k])
			cmp[n++] = (struct scmp_arg_cmp){
				.arg = k, .op = SCMP_CMP_MASKED_EQ, .datum_a = c->mask[k], .datum_b = c->datum[k]};
	int rc = seccomp_rule_add_exact_array(ctx, SCMP_ACT_ERRNO((uint32_t)r->err), r->nr, n, cmp);
	if (rc < 0)
		return err_errno(e, -rc, "seccomp rule for system call %d", r->nr);
	return 0;
}

/* What rule i of p adds: its calls, less those an earlier rule with another errno decides. */
static int add_rule(scmp_filter_ctx ctx, const struct seccomp_policy *p, size_t i, struct error *e)
{
	const struct deny_rule *r = &p->rules[i];
	struct cubes acc = {0}, other = {0};
	int rc = rule_cubes(r, false, &acc, e);
	for (size_t j = 0; j < i && !rc && acc.n; j++) {
		const struct deny_rule *q = &p->rules[j];
		if (q->nr != r->nr || q->err == r->err)
			continue;
		rc = rule_cubes(q, true, &other, e);
		if (!rc)
			rc = cubes_and(&acc, &other, e);
		cubes_free(&other);
	}
	for (size_t k = 0; k < acc.n && !rc; k++)
		rc = add_cube(ctx, r, &acc.v[k], e);
	cubes_free(&acc);
	return rc;
}

int seccomp_build(const struct seccomp_policy *p, scmp_filter_ctx *out, struct error *e)
{
	scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
	if (!ctx)
		return err_errno(e, ENOMEM, "seccomp_init");
	int rc = seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_ERRNO(ENOSYS));
	/*
	 * Loaded while the process still has CAP_SYS_ADMIN, so no_new_privs is not
	 * forced on it (setuid programs keep working inside); --no-new-privs sets it.
	 */
	if (!rc)
		rc = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 0);
	if (rc < 0) {
		seccomp_release(ctx);
		return err_errno(e, -rc, "seccomp filter attributes");
	}
	for (size_t i = 0; i < p->n; i++) {
		if (add_rule(ctx, p, i, e) < 0) {
			seccomp_release(ctx);
			return -1;
		}
	}
	*out = ctx;
	return 0;
}

int seccomp_install(const struct seccomp_policy *p, struct error *e)
{
	if (!p->n)
		return 0;
	scmp_filter_ctx ctx;
	if (seccomp_build(p, &ctx, e) < 0)
		return -1;
	int rc = seccomp_load(ctx);
	seccomp_release(ctx);
	if (rc < 0)
		return err_errno(e, -rc, "install the seccomp filter");
	return 0;
}
