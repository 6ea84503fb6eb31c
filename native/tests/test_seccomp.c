// SPDX-License-Identifier: Apache-2.0
/*
 * The seccomp policy: the libseccomp filter seccomp.c builds must decide every
 * call exactly as the hand-written BPF it replaced did (kept below as the
 * reference), and a forked child that loads it must see the kernel refuse
 * what the policy refuses and allow the rest.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "seccomp.h"

/* ------------------------------------------------------------------ the reference: the former hand-written filter */

#define ARG_LO(i) (offsetof(struct seccomp_data, args) + 8 * (i))

static size_t reference_program(const struct seccomp_policy *p, struct sock_filter *f)
{
	size_t n = 0;
#define EMIT(code, k, jt, jf) (f[n++] = (struct sock_filter)BPF_JUMP((code), (k), (jt), (jf)))
	EMIT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch), 0, 0);
	EMIT(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0);
	EMIT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS, 0, 0);
	EMIT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr), 0, 0);
	EMIT(BPF_JMP | BPF_JGE | BPF_K, 0x40000000, 0, 1);
	EMIT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS, 0, 0);
	for (size_t i = 0; i < p->n; i++) {
		const struct deny_rule *r = &p->rules[i];
		uint32_t ret = SECCOMP_RET_ERRNO | ((uint32_t)r->err & SECCOMP_RET_DATA);
		EMIT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr), 0, 0);
		size_t jeq = n;
		EMIT(BPF_JMP | BPF_JEQ | BPF_K, (uint32_t)r->nr, 0, 0);
		if (r->arg >= 0) {
			EMIT(BPF_LD | BPF_W | BPF_ABS, ARG_LO(r->arg), 0, 0);
			if (r->op == '&') {
				EMIT(BPF_JMP | BPF_JSET | BPF_K, r->vals[0], 0, 1);
			} else {
				for (size_t j = 0; j < r->nvals; j++)
					EMIT(BPF_JMP | BPF_JEQ | BPF_K, r->vals[j], (uint8_t)(r->nvals - j), 0);
				if (r->op == '=')
					EMIT(BPF_JMP | BPF_JA, 1, 0, 0);
			}
		}
		EMIT(BPF_RET | BPF_K, ret, 0, 0);
		f[jeq].jf = (uint8_t)(n - jeq - 1);
	}
	EMIT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW, 0, 0);
#undef EMIT
	return n;
}

/* ------------------------------------------------------------------ a classic BPF interpreter (the subset seccomp allows) */

static bool bpf_run(const struct sock_filter *f, size_t len, const struct seccomp_data *d, uint32_t *ret)
{
	uint32_t a = 0, x = 0, mem[BPF_MEMWORDS] = {0};
	for (size_t pc = 0; pc < len; pc++) {
		const struct sock_filter *i = &f[pc];
		uint32_t k = i->k, src = BPF_SRC(i->code) == BPF_X ? x : k;
		switch (BPF_CLASS(i->code)) {
		case BPF_LD:
			if (BPF_MODE(i->code) == BPF_ABS && BPF_SIZE(i->code) == BPF_W && k + 4 <= sizeof *d &&
			    !(k & 3))
				memcpy(&a, (const char *)d + k, 4);
			else if (BPF_MODE(i->code) == BPF_IMM)
				a = k;
			else if (BPF_MODE(i->code) == BPF_MEM && k < BPF_MEMWORDS)
				a = mem[k];
			else
				return false;
			break;
		case BPF_LDX:
			if (BPF_MODE(i->code) == BPF_IMM)
				x = k;
			else if (BPF_MODE(i->code) == BPF_MEM && k < BPF_MEMWORDS)
				x = mem[k];
			else
				return false;
			break;
		case BPF_ST:
		case BPF_STX:
			if (k >= BPF_MEMWORDS)
				return false;
			mem[k] = BPF_CLASS(i->code) == BPF_ST ? a : x;
			break;
		case BPF_ALU:
			switch (BPF_OP(i->code)) {
			case BPF_ADD: a += src; break;
			case BPF_SUB: a -= src; break;
			case BPF_AND: a &= src; break;
			case BPF_OR: a |= src; break;
			case BPF_XOR: a ^= src; break;
			case BPF_LSH: a <<= src & 31; break;
			case BPF_RSH: a >>= src & 31; break;
			case BPF_NEG: a = -a; break;
			default: return false;
			}
			break;
		case BPF_JMP: {
			bool t;
			switch (BPF_OP(i->code)) {
			case BPF_JA: pc += k; continue;
			case BPF_JEQ: t = a == src; break;
			case BPF_JGT: t = a > src; break;
			case BPF_JGE: t = a >= src; break;
			case BPF_JSET: t = a & src; break;
			default: return false;
			}
			pc += t ? i->jt : i->jf;
			break;
		}
		case BPF_RET: *ret = BPF_RVAL(i->code) == BPF_A ? a : k; return true;
		case BPF_MISC:
			if (BPF_MISCOP(i->code) == BPF_TAX)
				x = a;
			else
				a = x;
			break;
		default: return false;
		}
	}
	return false; /* fell off the end: not a valid program */
}

/* ------------------------------------------------------------------ policies */

static bool policy(struct seccomp_policy *p, const char *const *specs)
{
	struct error e;
	*p = (struct seccomp_policy){0};
	for (; *specs; specs++) {
		if (seccomp_parse_deny(p, *specs, &e) < 0) {
			test_fail(__FILE__, __LINE__, "%s: %s", *specs, e.msg);
			return false;
		}
	}
	return true;
}

/* The libseccomp filter as BPF. */
static size_t exported(const struct seccomp_policy *p, struct sock_filter *f, size_t cap)
{
	struct error e;
	scmp_filter_ctx ctx;
	if (seccomp_build(p, &ctx, &e) < 0) {
		test_fail(__FILE__, __LINE__, "seccomp_build: %s (errno %d)", e.msg, e.errnum);
		return 0;
	}
	char path[] = "/tmp/osvirt-seccomp-test-XXXXXX";
	int fd = mkstemp(path);
	unlink(path);
	ssize_t n = -1;
	if (fd >= 0 && seccomp_export_bpf(ctx, fd) == 0 && lseek(fd, 0, SEEK_SET) == 0)
		n = read(fd, f, cap * sizeof *f);
	if (fd >= 0)
		close(fd);
	seccomp_release(ctx);
	if (n <= 0 || (size_t)n == cap * sizeof *f) {
		test_fail(__FILE__, __LINE__, "cannot export the filter");
		return 0;
	}
	return (size_t)n / sizeof *f;
}

static uint64_t rnd(void)
{
	static uint64_t s = 0x9e3779b97f4a7c15ULL;
	s ^= s << 13;
	s ^= s >> 7;
	s ^= s << 17;
	return s;
}

/* Interesting low halves of an argument for p: the values and bits its rules name, their neighbours, random ones. */
static uint32_t pick_low(const struct seccomp_policy *p)
{
	uint64_t r = rnd();
	const struct deny_rule *q = p->n ? &p->rules[r % p->n] : NULL;
	r >>= 8;
	if (!q || !q->nvals || (r & 3) == 0)
		return (r & 4) ? (uint32_t)(rnd() & 0xff) : (uint32_t)rnd();
	uint32_t v = q->vals[(r >> 3) % q->nvals];
	switch ((r >> 8) % 5) {
	case 0: return v;
	case 1: return v + 1;
	case 2: return v - 1;
	case 3: return v & (uint32_t)rnd();
	default: return v | (uint32_t)rnd();
	}
}

/* Both filters must give every sampled call the same answer. */
static void same_decisions(const char *const *specs)
{
	struct seccomp_policy p;
	if (!policy(&p, specs))
		return;
	static struct sock_filter ref[8192], lib[8192];
	size_t nref = reference_program(&p, ref), nlib = exported(&p, lib, 8192);
	if (!nlib)
		return;
	static const uint32_t arches[] = {AUDIT_ARCH_X86_64, AUDIT_ARCH_X86_64, AUDIT_ARCH_X86_64, AUDIT_ARCH_I386,
					  AUDIT_ARCH_AARCH64};
	int mismatches = 0;
	for (int s = 0; s < 20000 && mismatches < 5; s++) {
		struct seccomp_data d = {.arch = arches[rnd() % 5]};
		uint64_t r = rnd();
		if (p.n && r % 8)
			d.nr = p.rules[(r >> 3) % p.n].nr;
		else
			d.nr = (int)(rnd() % 460);
		if (r % 29 == 0)
			d.nr |= 0x40000000; /* x32 */
		for (int k = 0; k < 6; k++)
			d.args[k] = ((rnd() & 1) ? rnd() << 32 : 0) | pick_low(&p);
		uint32_t want, got;
		if (!bpf_run(ref, nref, &d, &want) || !bpf_run(lib, nlib, &d, &got)) {
			test_fail(__FILE__, __LINE__, "a filter did not run to a return");
			break;
		}
		if (want != got) {
			test_fail(__FILE__, __LINE__,
				  "%s...: arch %#x nr %d args %#llx %#llx %#llx %#llx: reference %#x, libseccomp %#x",
				  specs[0], d.arch, d.nr, (unsigned long long)d.args[0], (unsigned long long)d.args[1],
				  (unsigned long long)d.args[2], (unsigned long long)d.args[3], want, got);
			mismatches++;
		}
	}
	seccomp_policy_free(&p);
}

/* drivers/lxc/security.ts: DEFAULT_SECCOMP_DENY, plus PRIVILEGED_SECCOMP_DENY and the remount rule outside a user namespace. */
#define LXC_DEFAULT                                                                                                   \
	"kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module", "open_by_handle_at", "iopl", \
		"ioperm", "swapon", "swapoff", "acct", "syslog", "add_key", "request_key", "keyctl", "bpf",           \
		"perf_event_open"
#define LXC_PRIVILEGED "fspick", "mount_setattr", "mount:EPERM:arg3&32"
/* drivers/lxc/driver.ts: system containers. */
#define SYSTEM_CONTAINER "unshare:EPERM:arg0&67108864", "clone:EPERM:arg0&67108864", "clone3:ENOSYS"
/* drivers/vserver/options.ts: raw_icmp. */
#define VSERVER_RAW_ICMP \
	"socket:EAFNOSUPPORT:arg0==17", "socket:EAFNOSUPPORT:arg1==10,2058,524298,526346", "io_uring_setup:EPERM"

TEST(filter_matches_reference_for_the_driver_policies)
{
	same_decisions((const char *const[]){LXC_DEFAULT, NULL});
	same_decisions((const char *const[]){LXC_DEFAULT, LXC_PRIVILEGED, NULL});
	same_decisions((const char *const[]){LXC_DEFAULT, LXC_PRIVILEGED, SYSTEM_CONTAINER, "chroot", NULL});
	same_decisions((const char *const[]){LXC_DEFAULT, SYSTEM_CONTAINER, VSERVER_RAW_ICMP, NULL});
}

TEST(filter_matches_reference_for_rule_shapes)
{
	/* test/jail-helper.test.ts's rules: a multi-bit mask and a != set. */
	same_decisions((const char *const[]){"unshare:EPERM", "socket:EAFNOSUPPORT:arg0!=1,2,10",
					     "clone:EPERM:arg0&0x7e020000", "clone3:ENOSYS", "semget:ENOSYS", NULL});
	/* The first rule that matches decides, also between errnos of one call. */
	same_decisions((const char *const[]){"fchdir:EPERM:arg0&0x100", "fchdir:ENOSYS", NULL});
	same_decisions((const char *const[]){"fchmod:ENOSYS", "fchmod:EPERM:arg0&0x100", NULL});
	same_decisions((const char *const[]){"fsync:EPERM:arg0&0x100", "fsync:EACCES:arg0&0x300", "fsync:EROFS:arg1==0",
					     NULL});
	same_decisions((const char *const[]){"dup:EPERM:arg0!=0,1,2", "dup:EACCES:arg0==1,2,3,4294967295",
					     "dup:ENOSYS:arg1!=0", "dup:EINVAL", NULL});
	same_decisions((const char *const[]){"close:EPERM:arg0==0", "close:EPERM:arg0!=0", NULL});
	same_decisions((const char *const[]){"ioctl:EPERM:arg1&0", "ioctl:EACCES:arg2==4294967295,0",
					     "ioctl:12:arg5!=7", NULL});
	/* A system call by number, and one the kernel has not got. */
	same_decisions((const char *const[]){"186:EACCES", "999", NULL});
}

TEST(parse_errors)
{
	struct seccomp_policy p = {0};
	struct error e;
	CHECK_INT(seccomp_parse_deny(&p, "nosuchcall", &e), -1);
	CHECK_STR(e.msg, "--seccomp-deny: unknown system call: not a number: 'nosuchcall'");
	CHECK_INT(e.status, EXIT_USAGE);
	/* A call this architecture does not have is unknown too. */
	CHECK_INT(seccomp_parse_deny(&p, "vm86", &e), -1);
	CHECK_INT(seccomp_parse_deny(&p, "unshare:EBOGUS", &e), -1);
	CHECK_INT(seccomp_parse_deny(&p, "unshare:5000", &e), -1);
	CHECK_STR(e.msg, "--seccomp-deny unshare:5000: errno out of range");
	CHECK_INT(seccomp_parse_deny(&p, "unshare:arg6&1", &e), -1);
	CHECK_INT(seccomp_parse_deny(&p, "unshare:arg0<1", &e), -1);
	CHECK_INT(seccomp_parse_deny(&p, "unshare:arg0&1,2", &e), -1);
	CHECK_INT(seccomp_parse_deny(&p, "unshare:arg0==", &e), -1);
	CHECK_INT(seccomp_parse_deny(&p, "unshare:EPERM:arg0==1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17", &e), -1);
	CHECK_INT(p.n, 0);
	CHECK_INT(seccomp_parse_deny(&p, "unshare:EINVAL:arg0!=1,0x20", &e), 0);
	CHECK_INT(p.n, 1);
	CHECK_INT(p.rules[0].nr, SYS_unshare);
	CHECK_INT(p.rules[0].err, EINVAL);
	CHECK_INT(p.rules[0].op, '!');
	CHECK_INT(p.rules[0].vals[1], 0x20);
	seccomp_policy_free(&p);
}

/* ------------------------------------------------------------------ the kernel's view, in forked children */

/* Runs fn in a child that has loaded specs' filter; fn returns 0 when every call behaved. */
static void in_filtered_child(const char *const *specs, int (*fn)(void))
{
	struct seccomp_policy p;
	if (!policy(&p, specs))
		return;
	pid_t k = fork();
	if (k == 0) {
		struct error e;
		if (getuid() != 0)
			prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); /* loading without it needs CAP_SYS_ADMIN */
		if (seccomp_install(&p, &e) < 0) {
			fprintf(stderr, "seccomp_install: %s: %s\n", e.msg, strerror(e.errnum));
			_exit(100);
		}
		_exit(fn());
	}
	int status;
	CHECK(waitpid(k, &status, 0) == k);
	CHECK(WIFEXITED(status));
	CHECK_INT(WEXITSTATUS(status), 0);
	seccomp_policy_free(&p);
}

/* The call returned -1 with err (0: did not fail with a policy errno). */
#define EXPECT(call, err)                                                                 \
	do {                                                                              \
		errno = 0;                                                                \
		long r_ = (long)(call);                                                   \
		int got_ = r_ < 0 ? errno : 0;                                            \
		if (got_ != (err)) {                                                      \
			fprintf(stderr, "  %s: errno %d, want %d\n", #call, got_, (err)); \
			bad++;                                                            \
		}                                                                         \
	} while (0)

static int plain_and_masked(void)
{
	int bad = 0;
	EXPECT(syscall(SYS_getppid), EACCES);
	EXPECT(syscall(SYS_getpid), 0);
	/* Closing fds nobody opened: EBADF when allowed, the policy's errno when denied. */
	EXPECT(syscall(SYS_close, 0x200), EPERM);
	EXPECT(syscall(SYS_close, 0x1400), EPERM);
	EXPECT(syscall(SYS_close, 0x800), EBADF);
	EXPECT(syscall(SYS_close, 0x1008), EROFS);
	/* Only the low 32 bits count, as for the kernel's unsigned int fd. */
	EXPECT(syscall(SYS_close, (1UL << 32) | 0x1008), EROFS);
	EXPECT(syscall(SYS_close, 0x100a), EBADF);
	EXPECT(syscall(SYS_dup, 7000), EBADF);
	EXPECT(syscall(SYS_dup, (1UL << 40) | 7001), EBADF);
	EXPECT(syscall(SYS_dup, 7002), EACCES);
	EXPECT(syscall(SYS_dup, 0), EACCES);
	/* First match: EPERM for bit 0x100, ENOSYS for the rest. */
	EXPECT(syscall(SYS_fchdir, 0x100), EPERM);
	EXPECT(syscall(SYS_fchdir, 0x3000), ENOSYS);
	/* Another ABI's calls fail with ENOSYS. */
	EXPECT(syscall(SYS_getpid | 0x40000000), ENOSYS);
	/* The filter does not set no_new_privs when loaded with CAP_SYS_ADMIN. */
	if (getuid() == 0 && prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 0) {
		fputs("  no_new_privs is set\n", stderr);
		bad++;
	}
	return bad;
}

TEST(kernel_denies_what_the_policy_denies)
{
	in_filtered_child((const char *const[]){"getppid:EACCES", "close:EPERM:arg0&0x600",
						"close:EROFS:arg0==0x1008,0x1009", "dup:EACCES:arg0!=7000,7001",
						"fchdir:EPERM:arg0&0x100", "fchdir:ENOSYS", NULL},
			  plain_and_masked);
}

static int driver_policies(void)
{
	int bad = 0;
	/* Calls whose success would change the machine are made with arguments the kernel refuses anyway. */
	EXPECT(syscall(SYS_kexec_load, 0, 1, NULL, 0xdead0000UL), EPERM);
	EXPECT(syscall(SYS_init_module, NULL, 0, NULL), EPERM);
	EXPECT(syscall(SYS_swapoff, "/nonexistent"), EPERM);
	EXPECT(syscall(SYS_bpf, -1, NULL, 0), EPERM);
	EXPECT(syscall(SYS_keyctl, -1, 0, 0, 0, 0), EPERM);
	EXPECT(syscall(SYS_fspick, -1, "", 0), EPERM);
	EXPECT(mount(NULL, "/nonexistent", NULL, MS_REMOUNT | MS_BIND, NULL), EPERM);
	EXPECT(mount("none", "/nonexistent-osvirt", "tmpfs", 0, NULL), ENOENT);
	/* System containers: no new UTS namespace, clone3 falls back to clone. */
	EXPECT(unshare(CLONE_NEWUTS), EPERM);
	EXPECT(unshare(0), 0);
	EXPECT(syscall(SYS_clone3, NULL, 0), ENOSYS);
	/* vserver raw_icmp: no packet sockets. */
	EXPECT(socket(17 /* AF_PACKET */, SOCK_RAW, 0), EAFNOSUPPORT);
	EXPECT(socket(AF_INET, 10 /* SOCK_PACKET */, 0), EAFNOSUPPORT);
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);
	EXPECT(fd, 0);
	close(fd);
	EXPECT(syscall(SYS_chroot, "/nonexistent"), EPERM);
	EXPECT(syscall(SYS_getcwd, NULL, 0), ERANGE);
	return bad;
}

TEST(kernel_applies_the_driver_policies)
{
	in_filtered_child(
		(const char *const[]){LXC_DEFAULT, LXC_PRIVILEGED, SYSTEM_CONTAINER, VSERVER_RAW_ICMP, "chroot", NULL},
		driver_policies);
}
