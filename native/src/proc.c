// SPDX-License-Identifier: Apache-2.0
#define _GNU_SOURCE
#include "proc.h"

#include <errno.h>
#include <grp.h>
#include <linux/capability.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

const struct ns_name namespaces[NNS] = {{"user", CLONE_NEWUSER}, {"ipc", CLONE_NEWIPC}, {"uts", CLONE_NEWUTS},
					{"net", CLONE_NEWNET},   {"pid", CLONE_NEWPID}, {"cgroup", CLONE_NEWCGROUP},
					{"mnt", CLONE_NEWNS}};

/* Bit i of a capability set is cap_names[i]. */
// clang-format off
static const char *const cap_names[] = {
	"chown", "dac_override", "dac_read_search", "fowner", "fsetid", "kill", "setgid", "setuid",
	"setpcap", "linux_immutable", "net_bind_service", "net_broadcast", "net_admin", "net_raw",
	"ipc_lock", "ipc_owner", "sys_module", "sys_rawio", "sys_chroot", "sys_ptrace", "sys_pacct",
	"sys_admin", "sys_boot", "sys_nice", "sys_resource", "sys_time", "sys_tty_config", "mknod",
	"lease", "audit_write", "audit_control", "setfcap", "mac_override", "mac_admin", "syslog",
	"wake_alarm", "block_suspend", "audit_read", "perfmon", "bpf", "checkpoint_restore",
};
// clang-format on

static const struct {
	const char *name;
	int resource;
} rlimit_names[] = {
	{"as", RLIMIT_AS},           {"core", RLIMIT_CORE},         {"cpu", RLIMIT_CPU},
	{"data", RLIMIT_DATA},       {"fsize", RLIMIT_FSIZE},       {"locks", RLIMIT_LOCKS},
	{"memlock", RLIMIT_MEMLOCK}, {"msgqueue", RLIMIT_MSGQUEUE}, {"nice", RLIMIT_NICE},
	{"nofile", RLIMIT_NOFILE},   {"nproc", RLIMIT_NPROC},       {"rss", RLIMIT_RSS},
	{"rtprio", RLIMIT_RTPRIO},   {"rttime", RLIMIT_RTTIME},     {"sigpending", RLIMIT_SIGPENDING},
	{"stack", RLIMIT_STACK},
};

int ns_flag(const char *name)
{
	for (size_t i = 0; i < NNS; i++)
		if (!strcmp(name, namespaces[i].name))
			return namespaces[i].flag;
	return 0;
}

int ns_list(const char *opt, const char *v, int allowed, int *out, struct error *e)
{
	AUTO_FREE char *copy = strdup(v);
	if (!copy)
		return err_sys(e, "%s", opt);
	char *save = NULL;
	*out = 0;
	for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		int f = ns_flag(t);
		if (!f || !(f & allowed))
			return err_usage(e, "%s: unknown or unsupported namespace '%s'", opt, t);
		*out |= f;
	}
	return 0;
}

int parse_caps(const char *list, uint64_t *keep, struct error *e)
{
	if (!strcmp(list, "all")) {
		*keep = ~0ULL;
		return 0;
	}
	*keep = 0;
	AUTO_FREE char *copy = strdup(list);
	if (!copy)
		return err_sys(e, "--caps");
	char *save = NULL;
	for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		if (!strncasecmp(tok, "cap_", 4))
			tok += 4;
		size_t i;
		for (i = 0; i < ARRAY_SIZE(cap_names); i++)
			if (!strcasecmp(tok, cap_names[i]))
				break;
		if (i == ARRAY_SIZE(cap_names))
			return err_usage(e, "--caps: unknown capability '%s'", tok);
		*keep |= 1ULL << i;
	}
	return 0;
}

static int parse_rlim(const char *s, rlim_t *out, struct error *e)
{
	unsigned long v;
	if (!strcmp(s, "unlimited")) {
		*out = RLIM_INFINITY;
		return 0;
	}
	if (parse_ulong(s, "--rlimit", &v, e) < 0)
		return -1;
	*out = (rlim_t)v;
	return 0;
}

int parse_rlimit(struct proc_cfg *p, const char *v, struct error *e)
{
	char name[32], soft[32], hard[32];
	if (sscanf(v, "%31[^:]:%31[^:]:%31s", name, soft, hard) != 3)
		return err_usage(e, "--rlimit %s: expected NAME:SOFT:HARD", v);
	if (p->nrlimits == ARRAY_SIZE(p->rlimits))
		return err_usage(e, "--rlimit: too many");
	size_t i;
	for (i = 0; i < ARRAY_SIZE(rlimit_names); i++)
		if (!strcmp(name, rlimit_names[i].name))
			break;
	if (i == ARRAY_SIZE(rlimit_names))
		return err_usage(e, "--rlimit: unknown limit '%s'", name);
	struct rlimit_opt r = {.resource = rlimit_names[i].resource};
	if (parse_rlim(soft, &r.lim.rlim_cur, e) < 0 || parse_rlim(hard, &r.lim.rlim_max, e) < 0)
		return -1;
	if (r.lim.rlim_cur > r.lim.rlim_max)
		return err_usage(e, "--rlimit %s: soft limit above hard limit", v);
	p->rlimits[p->nrlimits++] = r;
	return 0;
}

int parse_user(struct proc_cfg *p, const char *v, struct error *e)
{
	AUTO_FREE char *copy = strdup(v);
	if (!copy)
		return err_sys(e, "--user");
	char *save = NULL;
	char *uid = strtok_r(copy, ":", &save), *gid = strtok_r(NULL, ":", &save);
	char *groups = strtok_r(NULL, "", &save);
	if (!uid || !gid)
		return err_usage(e, "--user %s: expected UID:GID[:GID,GID...]", v);
	unsigned long n;
	if (parse_ulong(uid, "--user", &n, e) < 0)
		return -1;
	p->uid = (uid_t)n;
	if (parse_ulong(gid, "--user", &n, e) < 0)
		return -1;
	p->gid = (gid_t)n;
	p->set_user = true;
	p->ngroups = 0;
	for (char *g = groups ? strtok_r(groups, ",", &save) : NULL; g; g = strtok_r(NULL, ",", &save)) {
		if (p->ngroups == ARRAY_SIZE(p->groups))
			return err_usage(e, "--user: too many groups");
		if (parse_ulong(g, "--user", &n, e) < 0)
			return -1;
		p->groups[p->ngroups++] = (gid_t)n;
	}
	return 0;
}

int parse_proc_opt(struct args *a, struct proc_cfg *p, struct error *e)
{
	const char *v;
	int rc = 0;
	if ((v = value(a, "--env"))) {
		if (!strchr(v, '=') || v[0] == '=')
			return err_usage(e, "--env %s: expected K=V", v);
		if (list_add(&p->env, v) < 0)
			return err_sys(e, "--env");
	} else if ((v = value(a, "--cwd"))) {
		p->cwd = v;
	} else if ((v = value(a, "--caps"))) {
		rc = parse_caps(v, &p->keep_caps, e);
		p->drop_caps = p->keep_caps != ~0ULL;
	} else if (flag(a, "--no-new-privs")) {
		p->no_new_privs = true;
	} else if ((v = value(a, "--rlimit"))) {
		rc = parse_rlimit(p, v, e);
	} else if ((v = value(a, "--user"))) {
		rc = parse_user(p, v, e);
	} else if (flag(a, "--tty")) {
		p->tty = true;
	} else if ((v = value(a, "--cgroup"))) {
		if (list_add(&p->cgroups, v) < 0)
			return err_sys(e, "--cgroup");
	} else if ((v = value(a, "--seccomp-deny"))) {
		rc = seccomp_parse_deny(&p->seccomp, v, e);
	} else {
		return 0;
	}
	return rc < 0 ? -1 : 1;
}

int read_cap_last(void)
{
	FILE *f = fopen("/proc/sys/kernel/cap_last_cap", "re");
	int last = CAP_LAST_CAP;
	if (f) {
		if (fscanf(f, "%d", &last) != 1)
			last = CAP_LAST_CAP;
		fclose(f);
	}
	return last > 63 ? 63 : last;
}

static int drop_caps(const struct proc_cfg *p, struct error *e)
{
	for (int c = 0; c <= p->cap_last; c++)
		if (!(p->keep_caps & (1ULL << c)) && prctl(PR_CAPBSET_DROP, c, 0, 0, 0) < 0)
			return err_sys(e, "drop capability %d from the bounding set", c);
	/* The inheritable set would otherwise let a dropped capability come back through file caps. */
	struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
	struct __user_cap_data_struct data[2];
	if (syscall(SYS_capget, &hdr, data) < 0)
		return err_sys(e, "capget");
	data[0].inheritable &= (uint32_t)p->keep_caps;
	data[1].inheritable &= (uint32_t)(p->keep_caps >> 32);
	if (syscall(SYS_capset, &hdr, data) < 0)
		return err_sys(e, "capset");
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
		return err_sys(e, "clear ambient capabilities");
	return 0;
}

/*
 * Last steps shared by run and exec. Privileged steps (limits, capability
 * drops) come before setresuid() gives up root; exec inherits nothing else.
 */
int become_process(const struct proc_cfg *p, struct error *e)
{
	for (size_t i = 0; i < p->nrlimits; i++)
		if (setrlimit(p->rlimits[i].resource, &p->rlimits[i].lim) < 0)
			return err_sys(e, "setrlimit %d", p->rlimits[i].resource);
	if (seccomp_install(&p->seccomp, e) < 0)
		return -1;
	if (p->drop_caps && drop_caps(p, e) < 0)
		return -1;
	if (p->set_user) {
		if (setgroups(p->ngroups, p->groups) < 0)
			return err_sys(e, "setgroups");
		if (setresgid(p->gid, p->gid, p->gid) < 0)
			return err_sys(e, "setresgid %u", (unsigned)p->gid);
		if (setresuid(p->uid, p->uid, p->uid) < 0)
			return err_sys(e, "setresuid %u", (unsigned)p->uid);
	}
	if (p->no_new_privs && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		return err_sys(e, "PR_SET_NO_NEW_PRIVS");
	if (chdir(p->cwd) < 0)
		return err_sys(e, "chdir %s", p->cwd);
	clearenv();
	for (size_t i = 0; i < p->env.n; i++)
		putenv((char *)p->env.v[i]);
	if (!getenv("PATH"))
		putenv(DEFAULT_PATH);
	/* Ignored signals and the blocked mask survive exec: give the process a clean slate. */
	for (int sig = 1; sig < NSIG; sig++)
		signal(sig, SIG_DFL);
	sigset_t none;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	prctl(PR_SET_PDEATHSIG, 0, 0, 0, 0);
	umask(022);
	execvpe(p->argv[0], p->argv, environ);
	err_sys(e, "exec %s", p->argv[0]);
	e->status = errno == ENOENT ? EXIT_NOTFOUND : EXIT_NOEXEC;
	return -1;
}
