// SPDX-License-Identifier: Apache-2.0
#define _GNU_SOURCE
#include "seccomp.h"

#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "args.h"

/* System calls --seccomp-deny knows by name (others: a number). */
static const struct {
	const char *name;
	int nr;
} syscall_names[] = {
#ifdef __NR_accept
	{"accept", __NR_accept},
#endif
#ifdef __NR_accept4
	{"accept4", __NR_accept4},
#endif
#ifdef __NR_acct
	{"acct", __NR_acct},
#endif
#ifdef __NR_add_key
	{"add_key", __NR_add_key},
#endif
#ifdef __NR_adjtimex
	{"adjtimex", __NR_adjtimex},
#endif
#ifdef __NR_bind
	{"bind", __NR_bind},
#endif
#ifdef __NR_bpf
	{"bpf", __NR_bpf},
#endif
#ifdef __NR_chroot
	{"chroot", __NR_chroot},
#endif
#ifdef __NR_clock_adjtime
	{"clock_adjtime", __NR_clock_adjtime},
#endif
#ifdef __NR_clock_settime
	{"clock_settime", __NR_clock_settime},
#endif
#ifdef __NR_clone
	{"clone", __NR_clone},
#endif
#ifdef __NR_clone3
	{"clone3", __NR_clone3},
#endif
#ifdef __NR_connect
	{"connect", __NR_connect},
#endif
#ifdef __NR_create_module
	{"create_module", __NR_create_module},
#endif
#ifdef __NR_delete_module
	{"delete_module", __NR_delete_module},
#endif
#ifdef __NR_execve
	{"execve", __NR_execve},
#endif
#ifdef __NR_execveat
	{"execveat", __NR_execveat},
#endif
#ifdef __NR_fanotify_init
	{"fanotify_init", __NR_fanotify_init},
#endif
#ifdef __NR_finit_module
	{"finit_module", __NR_finit_module},
#endif
#ifdef __NR_fsconfig
	{"fsconfig", __NR_fsconfig},
#endif
#ifdef __NR_fsmount
	{"fsmount", __NR_fsmount},
#endif
#ifdef __NR_fsopen
	{"fsopen", __NR_fsopen},
#endif
#ifdef __NR_fspick
	{"fspick", __NR_fspick},
#endif
#ifdef __NR_get_kernel_syms
	{"get_kernel_syms", __NR_get_kernel_syms},
#endif
#ifdef __NR_get_mempolicy
	{"get_mempolicy", __NR_get_mempolicy},
#endif
#ifdef __NR_init_module
	{"init_module", __NR_init_module},
#endif
#ifdef __NR_io_uring_enter
	{"io_uring_enter", __NR_io_uring_enter},
#endif
#ifdef __NR_io_uring_register
	{"io_uring_register", __NR_io_uring_register},
#endif
#ifdef __NR_io_uring_setup
	{"io_uring_setup", __NR_io_uring_setup},
#endif
#ifdef __NR_ioperm
	{"ioperm", __NR_ioperm},
#endif
#ifdef __NR_iopl
	{"iopl", __NR_iopl},
#endif
#ifdef __NR_ioctl
	{"ioctl", __NR_ioctl},
#endif
#ifdef __NR_kcmp
	{"kcmp", __NR_kcmp},
#endif
#ifdef __NR_kexec_file_load
	{"kexec_file_load", __NR_kexec_file_load},
#endif
#ifdef __NR_kexec_load
	{"kexec_load", __NR_kexec_load},
#endif
#ifdef __NR_keyctl
	{"keyctl", __NR_keyctl},
#endif
#ifdef __NR_listen
	{"listen", __NR_listen},
#endif
#ifdef __NR_lookup_dcookie
	{"lookup_dcookie", __NR_lookup_dcookie},
#endif
#ifdef __NR_mbind
	{"mbind", __NR_mbind},
#endif
#ifdef __NR_mknod
	{"mknod", __NR_mknod},
#endif
#ifdef __NR_mknodat
	{"mknodat", __NR_mknodat},
#endif
#ifdef __NR_mlock
	{"mlock", __NR_mlock},
#endif
#ifdef __NR_mlock2
	{"mlock2", __NR_mlock2},
#endif
#ifdef __NR_mlockall
	{"mlockall", __NR_mlockall},
#endif
#ifdef __NR_mmap
	{"mmap", __NR_mmap},
#endif
#ifdef __NR_mount
	{"mount", __NR_mount},
#endif
#ifdef __NR_mount_setattr
	{"mount_setattr", __NR_mount_setattr},
#endif
#ifdef __NR_move_mount
	{"move_mount", __NR_move_mount},
#endif
#ifdef __NR_move_pages
	{"move_pages", __NR_move_pages},
#endif
#ifdef __NR_msgctl
	{"msgctl", __NR_msgctl},
#endif
#ifdef __NR_msgget
	{"msgget", __NR_msgget},
#endif
#ifdef __NR_msgrcv
	{"msgrcv", __NR_msgrcv},
#endif
#ifdef __NR_msgsnd
	{"msgsnd", __NR_msgsnd},
#endif
#ifdef __NR_munlock
	{"munlock", __NR_munlock},
#endif
#ifdef __NR_munlockall
	{"munlockall", __NR_munlockall},
#endif
#ifdef __NR_name_to_handle_at
	{"name_to_handle_at", __NR_name_to_handle_at},
#endif
#ifdef __NR_nfsservctl
	{"nfsservctl", __NR_nfsservctl},
#endif
#ifdef __NR_open_by_handle_at
	{"open_by_handle_at", __NR_open_by_handle_at},
#endif
#ifdef __NR_open_tree
	{"open_tree", __NR_open_tree},
#endif
#ifdef __NR_perf_event_open
	{"perf_event_open", __NR_perf_event_open},
#endif
#ifdef __NR_personality
	{"personality", __NR_personality},
#endif
#ifdef __NR_pidfd_getfd
	{"pidfd_getfd", __NR_pidfd_getfd},
#endif
#ifdef __NR_pivot_root
	{"pivot_root", __NR_pivot_root},
#endif
#ifdef __NR_process_madvise
	{"process_madvise", __NR_process_madvise},
#endif
#ifdef __NR_process_vm_readv
	{"process_vm_readv", __NR_process_vm_readv},
#endif
#ifdef __NR_process_vm_writev
	{"process_vm_writev", __NR_process_vm_writev},
#endif
#ifdef __NR_ptrace
	{"ptrace", __NR_ptrace},
#endif
#ifdef __NR_query_module
	{"query_module", __NR_query_module},
#endif
#ifdef __NR_quotactl
	{"quotactl", __NR_quotactl},
#endif
#ifdef __NR_quotactl_fd
	{"quotactl_fd", __NR_quotactl_fd},
#endif
#ifdef __NR_reboot
	{"reboot", __NR_reboot},
#endif
#ifdef __NR_request_key
	{"request_key", __NR_request_key},
#endif
#ifdef __NR_semctl
	{"semctl", __NR_semctl},
#endif
#ifdef __NR_semget
	{"semget", __NR_semget},
#endif
#ifdef __NR_semop
	{"semop", __NR_semop},
#endif
#ifdef __NR_semtimedop
	{"semtimedop", __NR_semtimedop},
#endif
#ifdef __NR_set_mempolicy
	{"set_mempolicy", __NR_set_mempolicy},
#endif
#ifdef __NR_setdomainname
	{"setdomainname", __NR_setdomainname},
#endif
#ifdef __NR_sethostname
	{"sethostname", __NR_sethostname},
#endif
#ifdef __NR_setns
	{"setns", __NR_setns},
#endif
#ifdef __NR_settimeofday
	{"settimeofday", __NR_settimeofday},
#endif
#ifdef __NR_shmat
	{"shmat", __NR_shmat},
#endif
#ifdef __NR_shmctl
	{"shmctl", __NR_shmctl},
#endif
#ifdef __NR_shmdt
	{"shmdt", __NR_shmdt},
#endif
#ifdef __NR_shmget
	{"shmget", __NR_shmget},
#endif
#ifdef __NR_socket
	{"socket", __NR_socket},
#endif
#ifdef __NR_socketpair
	{"socketpair", __NR_socketpair},
#endif
#ifdef __NR_stime
	{"stime", __NR_stime},
#endif
#ifdef __NR_swapoff
	{"swapoff", __NR_swapoff},
#endif
#ifdef __NR_swapon
	{"swapon", __NR_swapon},
#endif
#ifdef __NR_sysfs
	{"sysfs", __NR_sysfs},
#endif
#ifdef __NR_syslog
	{"syslog", __NR_syslog},
#endif
#ifdef __NR_umount
	{"umount", __NR_umount},
#endif
#ifdef __NR_umount2
	{"umount2", __NR_umount2},
#endif
#ifdef __NR_unshare
	{"unshare", __NR_unshare},
#endif
#ifdef __NR_uselib
	{"uselib", __NR_uselib},
#endif
#ifdef __NR_userfaultfd
	{"userfaultfd", __NR_userfaultfd},
#endif
#ifdef __NR_ustat
	{"ustat", __NR_ustat},
#endif
#ifdef __NR_vhangup
	{"vhangup", __NR_vhangup},
#endif
#ifdef __NR_vm86
	{"vm86", __NR_vm86},
#endif
#ifdef __NR_vm86old
	{"vm86old", __NR_vm86old},
#endif
#ifdef __NR_chmod
	{"chmod", __NR_chmod},
#endif
#ifdef __NR_fchmod
	{"fchmod", __NR_fchmod},
#endif
#ifdef __NR_fchmodat
	{"fchmodat", __NR_fchmodat},
#endif
#ifdef __NR_chown
	{"chown", __NR_chown},
#endif
#ifdef __NR_fchown
	{"fchown", __NR_fchown},
#endif
#ifdef __NR_fchownat
	{"fchownat", __NR_fchownat},
#endif
#ifdef __NR_lchown
	{"lchown", __NR_lchown},
#endif
#ifdef __NR_setxattr
	{"setxattr", __NR_setxattr},
#endif
#ifdef __NR_lsetxattr
	{"lsetxattr", __NR_lsetxattr},
#endif
#ifdef __NR_fsetxattr
	{"fsetxattr", __NR_fsetxattr},
#endif
#ifdef __NR_removexattr
	{"removexattr", __NR_removexattr},
#endif
#ifdef __NR_lremovexattr
	{"lremovexattr", __NR_lremovexattr},
#endif
#ifdef __NR_fremovexattr
	{"fremovexattr", __NR_fremovexattr},
#endif
#ifdef __NR_open
	{"open", __NR_open},
#endif
#ifdef __NR_openat
	{"openat", __NR_openat},
#endif
#ifdef __NR_openat2
	{"openat2", __NR_openat2},
#endif
#ifdef __NR_kill
	{"kill", __NR_kill},
#endif
#ifdef __NR_tkill
	{"tkill", __NR_tkill},
#endif
#ifdef __NR_tgkill
	{"tgkill", __NR_tgkill},
#endif
#ifdef __NR_prctl
	{"prctl", __NR_prctl},
#endif
#ifdef __NR_setuid
	{"setuid", __NR_setuid},
#endif
#ifdef __NR_setgid
	{"setgid", __NR_setgid},
#endif
#ifdef __NR_setreuid
	{"setreuid", __NR_setreuid},
#endif
#ifdef __NR_setregid
	{"setregid", __NR_setregid},
#endif
#ifdef __NR_setresuid
	{"setresuid", __NR_setresuid},
#endif
#ifdef __NR_setresgid
	{"setresgid", __NR_setresgid},
#endif
#ifdef __NR_setgroups
	{"setgroups", __NR_setgroups},
#endif
#ifdef __NR_capset
	{"capset", __NR_capset},
#endif
#ifdef __NR_landlock_create_ruleset
	{"landlock_create_ruleset", __NR_landlock_create_ruleset},
#endif
#ifdef __NR_seccomp
	{"seccomp", __NR_seccomp},
#endif
};

static const struct {
	const char *name;
	int err;
} errno_names[] = {
	{"EPERM", EPERM}, {"EACCES", EACCES}, {"ENOSYS", ENOSYS}, {"EAFNOSUPPORT", EAFNOSUPPORT},
	{"EINVAL", EINVAL}, {"EOPNOTSUPP", EOPNOTSUPP}, {"EROFS", EROFS}, {"EADDRNOTAVAIL", EADDRNOTAVAIL},
	{"ENOMEM", ENOMEM}, {"EAGAIN", EAGAIN},
};

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
	*r = (struct deny_rule){.nr = -1, .err = EPERM, .arg = -1};
	for (size_t i = 0; i < ARRAY_SIZE(syscall_names); i++)
		if (!strcmp(name, syscall_names[i].name))
			r->nr = syscall_names[i].nr;
	unsigned long num;
	if (r->nr < 0) {
		if (parse_num(name, "--seccomp-deny: unknown system call", &num, e) < 0)
			return -1;
		r->nr = (int)num;
	}
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
			r->err = (int)num;
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

#if defined(__x86_64__)
#define SECCOMP_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define SECCOMP_ARCH AUDIT_ARCH_AARCH64
#else
#error "--seccomp-deny: unknown architecture"
#endif
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define ARG_LO(i) (offsetof(struct seccomp_data, args) + 8 * (i))
#else
#define ARG_LO(i) (offsetof(struct seccomp_data, args) + 8 * (i) + 4)
#endif

/*
 * The deny rules as a classic BPF program. System calls of another ABI (i386,
 * x32) fail with ENOSYS: their numbers differ, so a rule could not hold there.
 * Installed while the process still has CAP_SYS_ADMIN, so no_new_privs is
 * not forced on it (setuid programs keep working inside).
 */
int seccomp_install(const struct seccomp_policy *p, struct error *e)
{
	if (!p->n)
		return 0;
	AUTO_FREE struct sock_filter *f = calloc(8 + p->n * 24, sizeof *f);
	if (!f)
		return err_sys(e, "calloc");
	size_t n = 0;
#define EMIT(code, k, jt, jf) (f[n++] = (struct sock_filter)BPF_JUMP((code), (k), (jt), (jf)))
	EMIT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch), 0, 0);
	EMIT(BPF_JMP | BPF_JEQ | BPF_K, SECCOMP_ARCH, 1, 0);
	EMIT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS, 0, 0);
#if defined(__x86_64__)
	EMIT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr), 0, 0);
	EMIT(BPF_JMP | BPF_JGE | BPF_K, 0x40000000, 0, 1);
	EMIT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS, 0, 0);
#endif
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
	struct sock_fprog prog = {.len = (unsigned short)n, .filter = f};
	if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) < 0)
		return err_sys(e, "install the seccomp filter");
	return 0;
}
