// SPDX-License-Identifier: Apache-2.0
/*
 * osvirt-helper: the native part of osvirt.
 *
 * Node cannot clone(2) into new namespaces, setns(2), pivot_root(2) or create a
 * SOCK_SEQPACKET socketpair, so exactly those things live here. Everything else
 * (configuration, cgroup creation, networking, the state store) is TypeScript.
 *
 *   run [options] -- ARGV       start a container and stay as its monitor
 *   exec --pid PID [opts] -- ARGV   run a process inside a running container
 *   criu-swrk [--keep-fd N]... [--run-dir DIR] -- CRIU_ARGV   bridge CRIU's RPC socket to stdio
 *   restore --state DIR (--tty-fd N | --log-fd N) [swrk options] -- CRIU_ARGV
 *                               one CRIU RESTORE over stdio, then monitor the restored init
 *   init                        a jail's pid 1: reaps, exits when nothing else is left (static build: osvirt-init)
 *   version
 *
 * Usage errors exit 2. The full option list is in usage() below.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <linux/audit.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/openat2.h>
#include <arpa/inet.h>
#include <linux/if_link.h>
#include <linux/rtnetlink.h>
#include <linux/veth.h>
#include <net/if.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define VERSION "0.1.0"
#define NORETURN __attribute__((noreturn))
#define FORMAT(a, b) __attribute__((format(printf, a, b)))
#define DEFAULT_PATH "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#define RING_SIZE (64 * 1024)     /* console output replayed to new console clients */
#define MAX_CLIENTS 32            /* per socket; more connections are refused */
#define MAX_FRAME (1024 * 1024)   /* largest CRIU RPC message we relay */

static void usage(FILE *out)
{
	fputs("usage:\n"
	      "  osvirt-helper run --state DIR [--rootfs PATH] [--ns pid,mnt,uts,ipc,net,cgroup,user]\n"
	      "      [--join net|ipc|uts:PATH]... [--uidmap IN:OUT:COUNT]... [--gidmap IN:OUT:COUNT]...\n"
	      "      [--cgroup DIR]... [--hostname NAME] [--domainname NAME]\n"
	      "      [--mount TYPE:SRC:DST:OPTS:PROPAGATION]... [--write-file /PATH:CONTENT]... [--device PATH]... [--no-default-mounts]\n"
	      "      [--readonly-rootfs] [--dev-nodes LIST] [--no-sysfs] [--lo-up] [--host-overlay LOWER[:LOWER...]:UPPER:WORK]\n"
	      "      [--host-bind SRC (with a user namespace)]\n"
	      "      [--veth HOST_IFNAME:IFNAME [--veth-bridge BR] [--veth-mtu N] [--veth-mac MAC]\n"
	      "       [--veth-address A.B.C.D/N] [--veth-gateway A.B.C.D]]\n"
	      "      [--mask PATH]... [--ro-path PATH]...\n"
	      "      [--no-ns LIST] [--root-owned-ns uts,mnt] [PROCESS OPTIONS] -- ARG0 ARGS...\n"
	      "  osvirt-helper exec --pid PID [--cgroup DIR]... [--resize-fd N] [--ready-fd N] [PROCESS OPTIONS] -- ARG0 ARGS...\n"
	      "  osvirt-helper criu-swrk [--keep-fd N]... [--run-dir DIR] [--cgroup DIR]... -- CRIU_ARGV...\n"
	      "  osvirt-helper restore --state DIR (--tty-fd N [--tty-owner UID:GID] | --log-fd N) [--keep-fd N]... [--run-dir DIR]\n"
	      "      [--cgroup DIR]... -- CRIU_ARGV...\n"
	      "  osvirt-helper mount-root --uidmap IN:OUT:COUNT... --gidmap IN:OUT:COUNT... (--overlay LOWER:UPPER:WORK | --bind SRC) TARGET\n"
	      "                               a user-namespaced container's idmapped root, mounted at TARGET (for restore)\n"
	      "  osvirt-helper peercred FD\n"
	      "  osvirt-helper launcher --socket PATH   (forks `run` monitors on request; see cmd_launcher)\n"
	      "  osvirt-helper init                 (as pid 1 of a pid namespace; SIGUSR1/SIGUSR2 from outside clear/set persist)\n"
	      "  osvirt-helper version\n"
	      "PROCESS OPTIONS: [--caps LIST|all] [--no-new-privs] [--rlimit NAME:SOFT:HARD]...\n"
	      "      [--user UID:GID[:GID,GID...]] [--env K=V]... [--cwd DIR] [--tty]\n"
	      "      [--seccomp-deny SYSCALL[:ERRNO][:ARGn&MASK|:ARGn==V,V...|:ARGn!=V,V...]]...\n", out);
}

/* ------------------------------------------------------------------ utilities */

NORETURN FORMAT(1, 2) static void usage_error(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("osvirt-helper: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	usage(stderr);
	exit(2);
}

/* Growable NULL-terminated list, for the repeatable options. */
struct list {
	const char **v;
	size_t n;
};

static void list_add(struct list *l, const char *s)
{
	const char **v = realloc(l->v, (l->n + 2) * sizeof *v);
	if (!v) {
		perror("osvirt-helper: realloc");
		exit(1);
	}
	v[l->n++] = s;
	v[l->n] = NULL;
	l->v = v;
}

static int write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;
	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Reads until len bytes or EOF; returns the count, or -1 on error. */
static ssize_t read_full(int fd, void *buf, size_t len)
{
	size_t got = 0;
	while (got < len) {
		ssize_t n = read(fd, (char *)buf + got, len - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		if (n == 0)
			break;
		got += (size_t)n;
	}
	return (ssize_t)got;
}

/* Kernel control files (cgroup.procs, uid_map) must get their content in one write. */
static int write_file(const char *path, const char *s)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t n = write(fd, s, strlen(s));
	int saved = errno;
	close(fd);
	errno = saved;
	return n == (ssize_t)strlen(s) ? 0 : -1;
}

/*
 * Atomic replace: a reader sees the old file or the complete new one. Not
 * fsynced: what the monitor writes (pids, the exit record) describes processes
 * that a power loss ends anyway, and a daemon or monitor crash keeps the page
 * cache.
 */
static int write_file_atomic(int dirfd, const char *name, const char *s)
{
	char tmp[NAME_MAX + 1];
	snprintf(tmp, sizeof tmp, ".%s.tmp", name);
	int fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return -1;
	if (write_all(fd, s, strlen(s)) < 0) {
		int saved = errno;
		close(fd);
		unlinkat(dirfd, tmp, 0);
		errno = saved;
		return -1;
	}
	close(fd);
	return renameat(dirfd, tmp, dirfd, name);
}

/* Writes s as a JSON string literal (with quotes) into out, truncating if needed. */
static void json_quote(char *out, size_t cap, const char *s)
{
	size_t o = 0;
	out[o++] = '"';
	for (const unsigned char *p = (const unsigned char *)s; *p && o + 8 < cap; p++) {
		const char *esc = NULL;
		switch (*p) {
		case '"': esc = "\\\""; break;
		case '\\': esc = "\\\\"; break;
		case '\n': esc = "\\n"; break;
		case '\r': esc = "\\r"; break;
		case '\t': esc = "\\t"; break;
		}
		if (esc)
			o += (size_t)snprintf(out + o, cap - o, "%s", esc);
		else if (*p < 0x20)
			o += (size_t)snprintf(out + o, cap - o, "\\u%04x", *p);
		else
			out[o++] = (char)*p;
	}
	out[o++] = '"';
	out[o] = '\0';
}

/* One JSON line on stdout, written with a single write(2) (no stdio buffer to duplicate on clone). */
FORMAT(1, 2) static int emit(const char *fmt, ...)
{
	char buf[2048];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof buf - 1, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof buf - 1)
		n = (int)sizeof buf - 2;
	buf[n++] = '\n';
	return write_all(STDOUT_FILENO, buf, (size_t)n);
}

static unsigned long parse_ulong(const char *s, const char *what)
{
	char *end;
	errno = 0;
	unsigned long v = strtoul(s, &end, 10);
	if (errno || end == s || *end || *s == '-')
		usage_error("%s: not a number: '%s'", what, s);
	return v;
}

/* Split "a/b/c" into "a/b" and "c"; the parent of "c" is "/" (resolved inside a root). */
static void split_path(const char *path, char *parent, char *name)
{
	char buf[PATH_MAX];
	snprintf(buf, sizeof buf, "%s", path);
	size_t len = strlen(buf);
	while (len > 1 && buf[len - 1] == '/')
		buf[--len] = '\0';
	char *slash = strrchr(buf, '/');
	snprintf(name, NAME_MAX + 1, "%s", slash ? slash + 1 : buf);
	if (slash)
		*slash = '\0';
	snprintf(parent, PATH_MAX, "%s", slash && buf[0] ? buf : "/");
}

static void ignore_signal(int sig)
{
	signal(sig, SIG_IGN);
}

/* ------------------------------------------------------------------ failure reporting from children */

/*
 * A forked child reports a failed setup step over a CLOEXEC pipe: a successful
 * exec closes the pipe with nothing written. The first byte is the exit code exec
 * mode uses (125 setup, 126 cannot execute, 127 not found), then "step: strerror".
 */
static int g_errfd = -1;

NORETURN FORMAT(2, 3) static void child_fail_code(int code, const char *fmt, ...)
{
	int saved = errno;
	char buf[1024];
	va_list ap;
	va_start(ap, fmt);
	buf[0] = (char)code;
	vsnprintf(buf + 1, sizeof buf - 1, fmt, ap);
	va_end(ap);
	size_t len = strlen(buf + 1) + 1;
	snprintf(buf + len, sizeof buf - len, ": %s", strerror(saved));
	len = strlen(buf + 1) + 1;
	if (g_errfd < 0 || write_all(g_errfd, buf, len) < 0)
		fprintf(stderr, "osvirt-helper: %s\n", buf + 1);
	_exit(code);
}
#define child_fail(...) child_fail_code(125, __VA_ARGS__)

/* ------------------------------------------------------------------ joining cgroups */

/*
 * Writing a pid to cgroup.procs takes the kernel's global cgroup_threadgroup_rwsem
 * for writing, and taking it waits for an RCU grace period: 5 to 15 ms on this
 * kind of host, on every container start and every exec. Two documented paths
 * skip that lock, and these functions use them:
 *   - clone3(CLONE_INTO_CGROUP) creates the child directly in a cgroup2
 *     directory (fork only read-locks the rwsem);
 *   - a v1 hierarchy's `tasks` file given "0" moves the calling thread, and the
 *     kernel does not take the global lock for a thread moving itself. Every
 *     process that does this here is single-threaded, so the thread is the
 *     whole process.
 * The files are opened by the parent (before any pivot_root or setns) and the
 * child writes to them: the kernel checks the opener's credentials.
 */
#ifndef CLONE_INTO_CGROUP
#define CLONE_INTO_CGROUP 0x200000000ULL
#endif
#ifndef CGROUP2_SUPER_MAGIC
#define CGROUP2_SUPER_MAGIC 0x63677270
#endif

struct cgroup_join {
	int v2dir;                      /* the cgroup2 directory, for CLONE_INTO_CGROUP, or -1 */
	int v2procs;                    /* its cgroup.procs: the fallback when clone3 cannot place us */
	int tasks[16];                  /* each v1 hierarchy's tasks file */
	size_t ntasks;
	bool placed;                    /* clone3 put the child in v2dir */
};

/* Open what cgroup_join_self needs for DIRS; fails with errno set and *bad naming the directory. */
static int cgroup_join_open(const struct list *dirs, struct cgroup_join *j, const char **bad)
{
	*j = (struct cgroup_join){.v2dir = -1, .v2procs = -1};
	for (size_t i = 0; i < dirs->n; i++) {
		*bad = dirs->v[i];
		int dir = open(dirs->v[i], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		struct statfs sf;
		if (dir < 0 || fstatfs(dir, &sf) < 0)
			return -1;
		if ((unsigned long)sf.f_type == CGROUP2_SUPER_MAGIC && j->v2dir < 0) {
			j->v2dir = dir;
			if ((j->v2procs = openat(dir, "cgroup.procs", O_WRONLY | O_CLOEXEC)) < 0)
				return -1;
			continue;
		}
		if (j->ntasks == sizeof j->tasks / sizeof j->tasks[0]) {
			errno = E2BIG;
			return -1;
		}
		int fd = openat(dir, (unsigned long)sf.f_type == CGROUP2_SUPER_MAGIC ? "cgroup.procs" : "tasks", O_WRONLY | O_CLOEXEC);
		close(dir);
		if (fd < 0)
			return -1;
		j->tasks[j->ntasks++] = fd;
	}
	return 0;
}

/* fork(), or clone with FLAGS, into the cgroup2 directory when there is one. */
static pid_t clone_into(unsigned long flags, struct cgroup_join *j)
{
	if (j->v2dir >= 0) {
		struct {
			uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls, set_tid, set_tid_size, cgroup;
		} args = {.flags = flags | CLONE_INTO_CGROUP, .exit_signal = SIGCHLD, .cgroup = (uint64_t)j->v2dir};
		pid_t pid = (pid_t)syscall(SYS_clone3, &args, sizeof args);
		if (pid >= 0) {
			j->placed = true;
			return pid;
		}
		if (errno != ENOSYS && errno != E2BIG && errno != EINVAL)
			return -1;
		/* A kernel before 5.7: the child joins through cgroup.procs instead. */
	}
	return (pid_t)syscall(SYS_clone, flags | SIGCHLD, NULL, NULL, NULL, NULL);
}

static void cgroup_join_close(struct cgroup_join *j)
{
	if (j->v2dir >= 0)
		close(j->v2dir);
	if (j->v2procs >= 0)
		close(j->v2procs);
	for (size_t i = 0; i < j->ntasks; i++)
		close(j->tasks[i]);
	j->v2dir = j->v2procs = -1;
	j->ntasks = 0;
}

/* In the child: join every hierarchy not joined at clone time, then close the files. */
static int cgroup_join_self(struct cgroup_join *j)
{
	int rc = 0;
	if (!j->placed && j->v2procs >= 0 && write(j->v2procs, "0", 1) != 1)
		rc = -1;
	for (size_t i = 0; i < j->ntasks && !rc; i++)
		if (write(j->tasks[i], "0", 1) != 1)
			rc = -1;
	int saved = errno;
	cgroup_join_close(j);
	errno = saved;
	return rc;
}

/* ------------------------------------------------------------------ process options shared by run and exec */

/* The namespaces exec joins; it enters the user ns (first here) last. */
static const struct {
	const char *name;
	int flag;
} namespaces[] = {{"user", CLONE_NEWUSER}, {"ipc", CLONE_NEWIPC}, {"uts", CLONE_NEWUTS}, {"net", CLONE_NEWNET},
		  {"pid", CLONE_NEWPID}, {"cgroup", CLONE_NEWCGROUP}, {"mnt", CLONE_NEWNS}};
#define NNS (sizeof namespaces / sizeof namespaces[0])

static const char *const cap_names[] = {
	"chown", "dac_override", "dac_read_search", "fowner", "fsetid", "kill", "setgid", "setuid",
	"setpcap", "linux_immutable", "net_bind_service", "net_broadcast", "net_admin", "net_raw",
	"ipc_lock", "ipc_owner", "sys_module", "sys_rawio", "sys_chroot", "sys_ptrace", "sys_pacct",
	"sys_admin", "sys_boot", "sys_nice", "sys_resource", "sys_time", "sys_tty_config", "mknod",
	"lease", "audit_write", "audit_control", "setfcap", "mac_override", "mac_admin", "syslog",
	"wake_alarm", "block_suspend", "audit_read", "perfmon", "bpf", "checkpoint_restore",
};

static const struct {
	const char *name;
	int resource;
} rlimit_names[] = {
	{"as", RLIMIT_AS}, {"core", RLIMIT_CORE}, {"cpu", RLIMIT_CPU}, {"data", RLIMIT_DATA},
	{"fsize", RLIMIT_FSIZE}, {"locks", RLIMIT_LOCKS}, {"memlock", RLIMIT_MEMLOCK},
	{"msgqueue", RLIMIT_MSGQUEUE}, {"nice", RLIMIT_NICE}, {"nofile", RLIMIT_NOFILE},
	{"nproc", RLIMIT_NPROC}, {"rss", RLIMIT_RSS}, {"rtprio", RLIMIT_RTPRIO},
	{"rttime", RLIMIT_RTTIME}, {"sigpending", RLIMIT_SIGPENDING}, {"stack", RLIMIT_STACK},
};

struct rlimit_opt {
	int resource;
	struct rlimit lim;
};

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

struct proc_cfg {
	char **argv;
	struct list env;
	struct list cgroups;
	const char *cwd;
	bool drop_caps;
	uint64_t keep_caps;
	int cap_last;                   /* read from the host's /proc before any pivot */
	bool no_new_privs;
	struct rlimit_opt rlimits[32];
	size_t nrlimits;
	bool set_user;
	uid_t uid;
	gid_t gid;
	gid_t groups[64];
	size_t ngroups;
	bool tty;
	struct deny_rule *deny;
	size_t ndeny;
};

static uint64_t parse_caps(const char *list)
{
	if (!strcmp(list, "all"))
		return ~0ULL;
	uint64_t keep = 0;
	char *copy = strdup(list), *save = NULL;
	for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		if (!strncasecmp(tok, "cap_", 4))
			tok += 4;
		size_t i;
		for (i = 0; i < sizeof cap_names / sizeof cap_names[0]; i++)
			if (!strcasecmp(tok, cap_names[i]))
				break;
		if (i == sizeof cap_names / sizeof cap_names[0])
			usage_error("--caps: unknown capability '%s'", tok);
		keep |= 1ULL << i;
	}
	free(copy);
	return keep;
}

static rlim_t parse_rlim(const char *s)
{
	return strcmp(s, "unlimited") ? (rlim_t)parse_ulong(s, "--rlimit") : RLIM_INFINITY;
}

static void parse_rlimit(struct proc_cfg *p, const char *v)
{
	char name[32], soft[32], hard[32];
	if (sscanf(v, "%31[^:]:%31[^:]:%31s", name, soft, hard) != 3)
		usage_error("--rlimit %s: expected NAME:SOFT:HARD", v);
	if (p->nrlimits == sizeof p->rlimits / sizeof p->rlimits[0])
		usage_error("--rlimit: too many");
	size_t i;
	for (i = 0; i < sizeof rlimit_names / sizeof rlimit_names[0]; i++)
		if (!strcmp(name, rlimit_names[i].name))
			break;
	if (i == sizeof rlimit_names / sizeof rlimit_names[0])
		usage_error("--rlimit: unknown limit '%s'", name);
	struct rlimit_opt *r = &p->rlimits[p->nrlimits++];
	r->resource = rlimit_names[i].resource;
	r->lim.rlim_cur = parse_rlim(soft);
	r->lim.rlim_max = parse_rlim(hard);
	if (r->lim.rlim_cur > r->lim.rlim_max)
		usage_error("--rlimit %s: soft limit above hard limit", v);
}

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

static unsigned long parse_num(const char *s, const char *what)
{
	char *end;
	errno = 0;
	unsigned long v = strtoul(s, &end, 0);
	if (errno || end == s || *end || *s == '-')
		usage_error("%s: not a number: '%s'", what, s);
	return v;
}

static void parse_deny(struct proc_cfg *p, const char *v)
{
	char *copy = strdup(v), *save = NULL;
	char *name = strtok_r(copy, ":", &save), *f2 = strtok_r(NULL, ":", &save), *f3 = strtok_r(NULL, "", &save);
	char *cond = NULL, *err = NULL;
	if (f2 && !strncmp(f2, "arg", 3))
		cond = f2;
	else
		err = f2, cond = f3;
	if (!name || (f3 && !err))
		usage_error("--seccomp-deny %s: expected SYSCALL[:ERRNO][:ARGn&MASK|ARGn==V,..|ARGn!=V,..]", v);
	struct deny_rule r = {.nr = -1, .err = EPERM, .arg = -1};
	for (size_t i = 0; i < sizeof syscall_names / sizeof syscall_names[0]; i++)
		if (!strcmp(name, syscall_names[i].name))
			r.nr = syscall_names[i].nr;
	if (r.nr < 0)
		r.nr = (int)parse_num(name, "--seccomp-deny: unknown system call");
	if (err) {
		size_t i;
		for (i = 0; i < sizeof errno_names / sizeof errno_names[0]; i++)
			if (!strcmp(err, errno_names[i].name))
				break;
		r.err = i < sizeof errno_names / sizeof errno_names[0] ? errno_names[i].err
								  : (int)parse_num(err, "--seccomp-deny: unknown errno");
		if (r.err <= 0 || r.err > 4095)
			usage_error("--seccomp-deny %s: errno out of range", v);
	}
	if (cond) {
		char *rest;
		r.arg = (int)strtol(cond + 3, &rest, 10);
		if (rest == cond + 3 || r.arg < 0 || r.arg > 5)
			usage_error("--seccomp-deny %s: expected arg0..arg5", v);
		if (rest[0] == '&') {
			r.op = '&';
			rest += 1;
		} else if ((rest[0] == '=' || rest[0] == '!') && rest[1] == '=') {
			r.op = rest[0];
			rest += 2;
		} else {
			usage_error("--seccomp-deny %s: expected &, == or != after arg%d", v, r.arg);
		}
		char *vsave = NULL;
		for (char *t = strtok_r(rest, ",", &vsave); t; t = strtok_r(NULL, ",", &vsave)) {
			if (r.nvals == sizeof r.vals / sizeof r.vals[0] || (r.op == '&' && r.nvals == 1))
				usage_error("--seccomp-deny %s: too many values", v);
			r.vals[r.nvals++] = (uint32_t)parse_num(t, "--seccomp-deny");
		}
		if (!r.nvals)
			usage_error("--seccomp-deny %s: no value", v);
	}
	struct deny_rule *d = realloc(p->deny, (p->ndeny + 1) * sizeof *d);
	if (!d)
		exit(1);
	d[p->ndeny++] = r;
	p->deny = d;
	free(copy);
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
static void install_seccomp(const struct proc_cfg *p)
{
	if (!p->ndeny)
		return;
	struct sock_filter *f = calloc(8 + p->ndeny * 24, sizeof *f);
	if (!f)
		child_fail("calloc");
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
	for (size_t i = 0; i < p->ndeny; i++) {
		const struct deny_rule *r = &p->deny[i];
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
		child_fail("install the seccomp filter");
	free(f);
}

static void parse_user(struct proc_cfg *p, const char *v)
{
	char *copy = strdup(v), *save = NULL;
	char *uid = strtok_r(copy, ":", &save), *gid = strtok_r(NULL, ":", &save);
	char *groups = strtok_r(NULL, "", &save);
	if (!uid || !gid)
		usage_error("--user %s: expected UID:GID[:GID,GID...]", v);
	p->set_user = true;
	p->uid = (uid_t)parse_ulong(uid, "--user");
	p->gid = (gid_t)parse_ulong(gid, "--user");
	p->ngroups = 0;
	for (char *g = groups ? strtok_r(groups, ",", &save) : NULL; g; g = strtok_r(NULL, ",", &save)) {
		if (p->ngroups == sizeof p->groups / sizeof p->groups[0])
			usage_error("--user: too many groups");
		p->groups[p->ngroups++] = (gid_t)parse_ulong(g, "--user");
	}
	free(copy);
}

/* Command-line scanning. Options take "--name VALUE" or "--name=VALUE". */
struct args {
	int argc;
	char **argv;
	int i;
};

static bool flag(struct args *a, const char *name)
{
	return !strcmp(a->argv[a->i], name);
}

static const char *value(struct args *a, const char *name)
{
	const char *arg = a->argv[a->i];
	size_t n = strlen(name);
	if (strncmp(arg, name, n))
		return NULL;
	if (arg[n] == '=')
		return arg + n + 1;
	if (arg[n])
		return NULL;
	if (a->i + 1 >= a->argc)
		usage_error("%s needs a value", name);
	return a->argv[++a->i];
}

static bool parse_proc_opt(struct args *a, struct proc_cfg *p)
{
	const char *v;
	if ((v = value(a, "--env"))) {
		if (!strchr(v, '=') || v[0] == '=')
			usage_error("--env %s: expected K=V", v);
		list_add(&p->env, v);
	} else if ((v = value(a, "--cwd"))) {
		p->cwd = v;
	} else if ((v = value(a, "--caps"))) {
		p->keep_caps = parse_caps(v);
		p->drop_caps = p->keep_caps != ~0ULL;
	} else if (flag(a, "--no-new-privs")) {
		p->no_new_privs = true;
	} else if ((v = value(a, "--rlimit"))) {
		parse_rlimit(p, v);
	} else if ((v = value(a, "--user"))) {
		parse_user(p, v);
	} else if (flag(a, "--tty")) {
		p->tty = true;
	} else if ((v = value(a, "--cgroup"))) {
		list_add(&p->cgroups, v);
	} else if ((v = value(a, "--seccomp-deny"))) {
		parse_deny(p, v);
	} else {
		return false;
	}
	return true;
}

/* After the options: "--" and a non-empty command. */
static char **parse_command(struct args *a)
{
	if (a->i >= a->argc || strcmp(a->argv[a->i], "--"))
		usage_error("expected '--' before the command, got '%s'",
			    a->i < a->argc ? a->argv[a->i] : "end of arguments");
	if (a->i + 1 >= a->argc)
		usage_error("missing command after '--'");
	return a->argv + a->i + 1;
}

static int read_cap_last(void)
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

static void drop_caps(const struct proc_cfg *p)
{
	for (int c = 0; c <= p->cap_last; c++)
		if (!(p->keep_caps & (1ULL << c)) && prctl(PR_CAPBSET_DROP, c, 0, 0, 0) < 0)
			child_fail("drop capability %d from the bounding set", c);
	/* The inheritable set would otherwise let a dropped capability come back through file caps. */
	struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
	struct __user_cap_data_struct data[2];
	if (syscall(SYS_capget, &hdr, data) < 0)
		child_fail("capget");
	data[0].inheritable &= (uint32_t)p->keep_caps;
	data[1].inheritable &= (uint32_t)(p->keep_caps >> 32);
	if (syscall(SYS_capset, &hdr, data) < 0)
		child_fail("capset");
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
		child_fail("clear ambient capabilities");
}

/*
 * Last steps shared by run and exec. Privileged steps (limits, capability
 * drops) come before setresuid() gives up root; exec inherits nothing else.
 */
NORETURN static void become_process(const struct proc_cfg *p)
{
	for (size_t i = 0; i < p->nrlimits; i++)
		if (setrlimit(p->rlimits[i].resource, &p->rlimits[i].lim) < 0)
			child_fail("setrlimit %d", p->rlimits[i].resource);
	install_seccomp(p);
	if (p->drop_caps)
		drop_caps(p);
	if (p->set_user) {
		if (setgroups(p->ngroups, p->groups) < 0)
			child_fail("setgroups");
		if (setresgid(p->gid, p->gid, p->gid) < 0)
			child_fail("setresgid %u", (unsigned)p->gid);
		if (setresuid(p->uid, p->uid, p->uid) < 0)
			child_fail("setresuid %u", (unsigned)p->uid);
	}
	if (p->no_new_privs && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		child_fail("PR_SET_NO_NEW_PRIVS");
	if (chdir(p->cwd) < 0)
		child_fail("chdir %s", p->cwd);
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
	child_fail_code(errno == ENOENT ? 127 : 126, "exec %s", p->argv[0]);
}

/* ------------------------------------------------------------------ mounts (run, inside the child) */

struct mnt {
	const char *type, *src, *dst, *data;
	unsigned long flags;            /* MS_* for a new (non-bind) mount */
	uint64_t attr_set, attr_clr;    /* MOUNT_ATTR_* applied to a bind after it exists */
	uint64_t propagation;           /* MS_PRIVATE, MS_SLAVE, ... or 0 */
	bool bind, rec, prop_rec;
	bool has_tree;                  /* tree: an idmapped copy of src the monitor made (user namespace) */
	int tree;
};

/*
 * Opens path inside rootfd the way the container will see it: symlinks in the
 * image resolve inside the rootfs and can never point a mount at a host path.
 * With create set (S_IFDIR or S_IFREG), missing components are created.
 */
static int open_in_root(int rootfd, const char *path, mode_t create)
{
	struct open_how how = {
		.flags = O_PATH | O_CLOEXEC,
		.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
	};
	int fd = (int)syscall(SYS_openat2, rootfd, path, &how, sizeof how);
	if (fd >= 0 || errno != ENOENT || !create)
		return fd;
	char parent[PATH_MAX], name[NAME_MAX + 1];
	split_path(path, parent, name);
	if (!strcmp(parent, path))
		return -1;
	int pfd = open_in_root(rootfd, parent, S_IFDIR);
	if (pfd < 0)
		return -1;
	int r = S_ISDIR(create) ? mkdirat(pfd, name, 0755)
				: openat(pfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
	int saved = errno;
	close(pfd);
	if (r < 0 && saved != EEXIST) {
		errno = saved;
		return -1;
	}
	if (r >= 0 && !S_ISDIR(create))
		close(r);
	return (int)syscall(SYS_openat2, rootfd, path, &how, sizeof how);
}

static void apply_mount(int rootfd, const struct mnt *m)
{
	bool dir = true;
	struct stat st;
	if (m->bind) {
		if ((m->has_tree ? fstat(m->tree, &st) : stat(m->src, &st)) < 0)
			child_fail("mount %s: %s", m->dst, m->src);
		dir = S_ISDIR(st.st_mode);
	}
	int fd = open_in_root(rootfd, m->dst, dir ? S_IFDIR : S_IFREG);
	if (fd < 0)
		child_fail("mount %s: target", m->dst);
	/* Mounting on the /proc/self/fd link mounts exactly on what open_in_root found. */
	char target[64];
	snprintf(target, sizeof target, "/proc/self/fd/%d", fd);
	int r;
	if (m->has_tree)
		r = (int)syscall(SYS_move_mount, m->tree, "", fd, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH);
	else if (m->bind)
		r = mount(m->src, target, NULL, MS_BIND | (m->rec ? MS_REC : 0), NULL);
	else
		r = mount(m->src && *m->src ? m->src : m->type, target, m->type, m->flags, m->data);
	if (r < 0)
		child_fail("mount %s on %s", m->bind ? m->src : m->type, m->dst);
	close(fd);
	bool setattr = m->bind && (m->attr_set || m->attr_clr);
	if (!setattr && !m->propagation)
		return;
	/* Reopen: the old fd names the directory under the new mount, not the mount. */
	fd = open_in_root(rootfd, m->dst, 0);
	if (fd < 0)
		child_fail("mount %s: reopen", m->dst);
	/*
	 * mount_setattr() rather than a MS_REMOUNT|MS_BIND: it can be recursive (a
	 * read-only rbind stays read-only below) and only changes the flags named,
	 * so locked flags inherited from the host (nosuid, nodev) are never cleared.
	 */
	struct mount_attr attr = {.attr_set = m->attr_set, .attr_clr = m->attr_clr};
	if (setattr && mount_setattr(fd, "", AT_EMPTY_PATH | (m->rec ? AT_RECURSIVE : 0), &attr, sizeof attr) < 0)
		child_fail("mount %s: set flags", m->dst);
	struct mount_attr prop = {.propagation = m->propagation};
	if (m->propagation &&
	    mount_setattr(fd, "", AT_EMPTY_PATH | (m->prop_rec ? AT_RECURSIVE : 0), &prop, sizeof prop) < 0)
		child_fail("mount %s: set propagation", m->dst);
	close(fd);
}

/* "TYPE:SRC:DST:OPTS:PROPAGATION"; OPTS (the only field that may hold ':') is what remains in the middle. */
static void parse_mount(const char *spec, struct mnt *m)
{
	char *s = strdup(spec);
	char *c1 = strchr(s, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
	char *c3 = c2 ? strchr(c2 + 1, ':') : NULL, *c4 = strrchr(s, ':');
	if (!c3 || c4 == c3)
		usage_error("--mount %s: expected TYPE:SRC:DST:OPTS:PROPAGATION", spec);
	*c1 = *c2 = *c3 = *c4 = '\0';
	memset(m, 0, sizeof *m);
	m->type = s;
	m->src = c1 + 1;
	m->dst = c2 + 1;
	m->bind = !strcmp(s, "bind") || !strcmp(s, "rbind");
	m->rec = !strcmp(s, "rbind");
	if (!*m->type || !*m->dst || (m->bind && !*m->src))
		usage_error("--mount %s: TYPE, DST (and SRC for binds) are required", spec);

	static const struct {
		const char *name;
		unsigned long ms;
		uint64_t set, clr;
	} known[] = {
		{"ro", MS_RDONLY, MOUNT_ATTR_RDONLY, 0},
		{"rw", 0, 0, MOUNT_ATTR_RDONLY},
		{"nosuid", MS_NOSUID, MOUNT_ATTR_NOSUID, 0},
		{"nodev", MS_NODEV, MOUNT_ATTR_NODEV, 0},
		{"noexec", MS_NOEXEC, MOUNT_ATTR_NOEXEC, 0},
		{"relatime", MS_RELATIME, MOUNT_ATTR_RELATIME, MOUNT_ATTR__ATIME},
		{"noatime", MS_NOATIME, MOUNT_ATTR_NOATIME, MOUNT_ATTR__ATIME},
	};
	char *data = calloc(1, strlen(c3 + 1) + 1), *save = NULL;
	for (char *o = strtok_r(c3 + 1, ",", &save); o; o = strtok_r(NULL, ",", &save)) {
		size_t i;
		for (i = 0; i < sizeof known / sizeof known[0]; i++)
			if (!strcmp(o, known[i].name))
				break;
		if (i < sizeof known / sizeof known[0]) {
			m->flags |= known[i].ms;
			m->attr_set |= known[i].set;
			m->attr_clr |= known[i].clr;
		} else {
			if (m->bind)
				usage_error("--mount %s: bind mounts take no data option '%s'", spec, o);
			if (*data)
				strcat(data, ",");
			strcat(data, o);
		}
	}
	m->data = *data ? data : NULL;

	const char *prop = c4 + 1;
	bool rec = prop[0] == 'r' && strcmp(prop, "rw");
	const char *base = rec ? prop + 1 : prop;
	m->prop_rec = rec;
	if (!*prop)
		m->propagation = 0;
	else if (!strcmp(base, "private"))
		m->propagation = MS_PRIVATE;
	else if (!strcmp(base, "slave"))
		m->propagation = MS_SLAVE;
	else if (!strcmp(base, "shared"))
		m->propagation = MS_SHARED;
	else if (!strcmp(base, "unbindable"))
		m->propagation = MS_UNBINDABLE;
	else
		usage_error("--mount %s: unknown propagation '%s'", spec, prop);
}

/* Recreates a host device node at the same path in the container. */
static void make_device(int rootfd, const char *path, mode_t force_mode)
{
	struct stat st;
	if (stat(path, &st) < 0)
		child_fail("device %s", path);
	if (!S_ISCHR(st.st_mode) && !S_ISBLK(st.st_mode)) {
		errno = ENODEV;
		child_fail("device %s", path);
	}
	char parent[PATH_MAX], name[NAME_MAX + 1];
	split_path(path, parent, name);
	int pfd = open_in_root(rootfd, parent, S_IFDIR);
	if (pfd < 0)
		child_fail("device %s: create %s", path, parent);
	mode_t perm = force_mode ? force_mode : (st.st_mode & 07777);
	if (mknodat(pfd, name, (st.st_mode & S_IFMT) | perm, st.st_rdev) == 0) {
		if (fchmodat(pfd, name, perm, 0) < 0) /* defeat the umask */
			child_fail("device %s: chmod", path);
	} else if (errno == EPERM) {
		/* A user namespace may not mknod: bind the host's node instead. */
		struct mnt b = {.bind = true, .src = path, .dst = path};
		apply_mount(rootfd, &b);
	} else if (errno != EEXIST) {
		child_fail("device %s: mknod", path);
	}
	close(pfd);
}

/* ------------------------------------------------------------------ run */

/* --veth: see veth_create. */
struct veth_cfg {
	const char *host, *peer;        /* host end; the name inside (eth0) */
	const char *bridge, *mac;
	unsigned mtu;
	const char *address;            /* A.B.C.D/PREFIX inside, optional */
	const char *gateway;            /* default route inside, optional */
};

struct run_cfg {
	struct proc_cfg p;
	const char *state, *rootfs, *hostname, *domainname;
	int ns;                         /* CLONE_NEW* flags to create */
	struct {
		int type;
		const char *spec;
		int fd;
	} joins[3];
	size_t njoins;
	struct list uidmap, gidmap;     /* "IN OUT COUNT" lines */
	struct mnt *mounts;
	size_t nmounts;
	struct list devices;
	bool default_mounts, readonly, sysfs;
	bool lo_up;                     /* bring the new net ns's loopback up (saves an `ip` run) */
	const char *host_overlay;       /* LOWER:UPPER:WORK mounted on --rootfs in the host's mount ns */
	const char *host_bind;          /* SRC bound (idmapped) on --rootfs in the host's mount ns */
	int console_fd;                 /* pty slave (--tty) */
	char console_name[64];          /* its /dev/pts/N path */
	unsigned dev_nodes;             /* DEV_* bits: what the standard /dev holds */
	struct list masks, ro_paths;    /* container paths hidden / made read-only */
	struct list files;              /* "PATH:CONTENT" files written after the mounts */
	int owned_ns;                   /* CLONE_NEWUTS|CLONE_NEWNS: owned by a root-owned user ns */
	struct cgroup_join *cg;         /* the container's cgroups, joined by the child itself */
	struct veth_cfg veth;           /* --veth: a pair on a bridge (veth.host set) */
};

/* --lo-up: "ip link set lo up" in the child's own network namespace, without running ip. */
static void loopback_up(void)
{
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		child_fail("loopback: socket");
	struct ifreq ifr = {0};
	strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
	if (ioctl(fd, SIOCGIFFLAGS, &ifr) < 0)
		child_fail("loopback: SIOCGIFFLAGS");
	ifr.ifr_flags |= IFF_UP;
	if (ioctl(fd, SIOCSIFFLAGS, &ifr) < 0)
		child_fail("loopback: SIOCSIFFLAGS");
	close(fd);
}

/* ------------------------------------------------------------------ veth over rtnetlink */

/*
 * --veth: the monitor creates the pair with one RTM_NEWLINK (host end up and on
 * its bridge, the peer born in the child's network namespace under its final
 * name), and the child gives the peer its address, brings it up and adds the
 * default route from inside. Two runs of ip(8) used to do this; each cost more
 * than all of the netlink messages together.
 */
struct nlreq {
	struct nlmsghdr h;
	char buf[1024];
};

static struct rtattr *nl_put(struct nlreq *r, unsigned short type, const void *data, size_t len)
{
	size_t off = NLMSG_ALIGN(r->h.nlmsg_len);
	if (off + RTA_SPACE(len) > sizeof *r) {
		errno = EMSGSIZE;
		return NULL;
	}
	struct rtattr *a = (struct rtattr *)((char *)r + off);
	a->rta_type = type;
	a->rta_len = (unsigned short)RTA_LENGTH(len);
	if (len)
		memcpy(RTA_DATA(a), data, len);
	r->h.nlmsg_len = (unsigned)(off + RTA_SPACE(len));
	return a;
}

static void nl_end(struct nlreq *r, struct rtattr *nest)
{
	nest->rta_len = (unsigned short)((char *)r + r->h.nlmsg_len - (char *)nest);
}

static void nl_init(struct nlreq *r, unsigned short type, unsigned short flags, const void *hdr, size_t len)
{
	memset(r, 0, sizeof *r);
	r->h.nlmsg_type = type;
	r->h.nlmsg_flags = (unsigned short)(NLM_F_REQUEST | NLM_F_ACK | flags);
	r->h.nlmsg_len = (unsigned)NLMSG_LENGTH(len);
	memcpy(NLMSG_DATA(&r->h), hdr, len);
}

/* Send one request in the caller's network namespace; 0, or -1 with the kernel's errno. */
static int nl_talk(struct nlreq *r)
{
	int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
	if (fd < 0)
		return -1;
	struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
	char ack[1024];
	ssize_t n = -1;
	if (sendto(fd, r, r->h.nlmsg_len, 0, (struct sockaddr *)&kernel, sizeof kernel) >= 0)
		n = recv(fd, ack, sizeof ack, 0);
	int saved = errno;
	close(fd);
	if (n < 0) {
		errno = saved;
		return -1;
	}
	struct nlmsghdr *h = (struct nlmsghdr *)ack;
	if (!NLMSG_OK(h, (size_t)n) || h->nlmsg_type != NLMSG_ERROR) {
		errno = EPROTO;
		return -1;
	}
	int err = ((struct nlmsgerr *)NLMSG_DATA(h))->error;
	if (err) {
		errno = -err;
		return -1;
	}
	return 0;
}

static int parse_mac(const char *s, unsigned char mac[6])
{
	unsigned v[6];
	char end;
	if (sscanf(s, "%x:%x:%x:%x:%x:%x%c", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &end) != 6)
		return -1;
	for (int i = 0; i < 6; i++) {
		if (v[i] > 0xff)
			return -1;
		mac[i] = (unsigned char)v[i];
	}
	return 0;
}

/* In the monitor: the pair, host end up on its bridge, the peer in PID's network namespace. */
static int veth_create(const struct veth_cfg *v, pid_t pid, const char **what)
{
	struct nlreq r;
	struct ifinfomsg host = {.ifi_family = AF_UNSPEC, .ifi_flags = IFF_UP, .ifi_change = IFF_UP};
	nl_init(&r, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, &host, sizeof host);
	uint32_t mtu = v->mtu, ns = (uint32_t)pid;
	*what = v->bridge;
	uint32_t master = v->bridge ? if_nametoindex(v->bridge) : 0;
	if (v->bridge && !master)
		return -1;
	*what = "netlink request";
	struct rtattr *info, *data, *peer;
	if (!nl_put(&r, IFLA_IFNAME, v->host, strlen(v->host) + 1) || (mtu && !nl_put(&r, IFLA_MTU, &mtu, 4)) ||
	    (master && !nl_put(&r, IFLA_MASTER, &master, 4)) || !(info = nl_put(&r, IFLA_LINKINFO, NULL, 0)) ||
	    !nl_put(&r, IFLA_INFO_KIND, "veth", 5) || !(data = nl_put(&r, IFLA_INFO_DATA, NULL, 0)) ||
	    !(peer = nl_put(&r, VETH_INFO_PEER, &(struct ifinfomsg){.ifi_family = AF_UNSPEC}, sizeof(struct ifinfomsg))) ||
	    !nl_put(&r, IFLA_IFNAME, v->peer, strlen(v->peer) + 1) || (mtu && !nl_put(&r, IFLA_MTU, &mtu, 4)) ||
	    !nl_put(&r, IFLA_NET_NS_PID, &ns, 4))
		return -1;
	if (v->mac) {
		unsigned char mac[6];
		if (parse_mac(v->mac, mac) < 0) {
			*what = v->mac;
			errno = EINVAL;
			return -1;
		}
		if (!nl_put(&r, IFLA_ADDRESS, mac, 6))
			return -1;
	}
	nl_end(&r, peer);
	nl_end(&r, data);
	nl_end(&r, info);
	*what = v->host;
	return nl_talk(&r);
}

/* In the child, inside its network namespace: address, up, default route. */
static void veth_configure_inside(const struct veth_cfg *v)
{
	unsigned idx = if_nametoindex(v->peer);
	if (!idx)
		child_fail("network: %s", v->peer);
	struct nlreq r;
	if (v->address) {
		char addr[64];
		snprintf(addr, sizeof addr, "%s", v->address);
		char *slash = strchr(addr, '/');
		unsigned prefix = slash ? (unsigned)atoi(slash + 1) : 32;
		if (slash)
			*slash = '\0';
		struct in_addr a;
		if (inet_pton(AF_INET, addr, &a) != 1 || prefix > 32) {
			errno = EINVAL;
			child_fail("network: address %s", v->address);
		}
		struct ifaddrmsg am = {.ifa_family = AF_INET, .ifa_prefixlen = (unsigned char)prefix, .ifa_index = idx};
		nl_init(&r, RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, &am, sizeof am);
		struct in_addr bcast = {.s_addr = prefix < 31 ? a.s_addr | htonl(prefix ? ~0U >> prefix : ~0U) : 0};
		if (!nl_put(&r, IFA_LOCAL, &a, 4) || !nl_put(&r, IFA_ADDRESS, &a, 4) || (bcast.s_addr && !nl_put(&r, IFA_BROADCAST, &bcast, 4)) ||
		    nl_talk(&r) < 0)
			child_fail("network: add %s to %s", v->address, v->peer);
	}
	struct ifinfomsg up = {.ifi_family = AF_UNSPEC, .ifi_index = (int)idx, .ifi_flags = IFF_UP, .ifi_change = IFF_UP};
	nl_init(&r, RTM_NEWLINK, 0, &up, sizeof up);
	if (nl_talk(&r) < 0)
		child_fail("network: bring %s up", v->peer);
	if (v->gateway) {
		struct in_addr gw;
		if (inet_pton(AF_INET, v->gateway, &gw) != 1) {
			errno = EINVAL;
			child_fail("network: gateway %s", v->gateway);
		}
		struct rtmsg rm = {.rtm_family = AF_INET, .rtm_table = RT_TABLE_MAIN, .rtm_protocol = RTPROT_BOOT,
				   .rtm_scope = RT_SCOPE_UNIVERSE, .rtm_type = RTN_UNICAST};
		nl_init(&r, RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, &rm, sizeof rm);
		if (!nl_put(&r, RTA_GATEWAY, &gw, 4) || !nl_put(&r, RTA_OIF, &idx, 4) || nl_talk(&r) < 0)
			child_fail("network: default route via %s", v->gateway);
	}
}

/* The standard /dev content, selectable with --dev-nodes. */
static const struct {
	const char *name;
	unsigned bit;
} dev_node_names[] = {
	{"null", 1 << 0}, {"zero", 1 << 1}, {"full", 1 << 2}, {"random", 1 << 3}, {"urandom", 1 << 4},
	{"tty", 1 << 5}, {"ptmx", 1 << 6}, {"fd", 1 << 7},
};
#define DEV_NODES_ALL 0xff
#define DEV_PTMX (1u << 6)
#define DEV_FD (1u << 7)

static void default_mounts(int rootfd, const struct run_cfg *c)
{
	const unsigned long nsd = MS_NOSUID | MS_NODEV | MS_NOEXEC;
	const struct mnt proc = {.type = "proc", .src = "proc", .dst = "/proc", .flags = nsd};
	apply_mount(rootfd, &proc);
	/* A fresh sysfs shows the netns's devices, so it is only allowed with our own net ns. */
	const struct mnt sysfs = {.type = "sysfs", .src = "sysfs", .dst = "/sys", .flags = nsd | MS_RDONLY};
	const struct mnt sysbind = {.bind = true, .rec = true, .src = "/sys", .dst = "/sys",
				    .attr_set = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC};
	if (c->sysfs)
		apply_mount(rootfd, (c->ns & CLONE_NEWNET) ? &sysfs : &sysbind);
	const struct mnt dev = {.type = "tmpfs", .src = "tmpfs", .dst = "/dev",
				.flags = MS_NOSUID | MS_STRICTATIME, .data = "mode=755,size=65536k"};
	apply_mount(rootfd, &dev);
	for (size_t i = 0; i < sizeof dev_node_names / sizeof dev_node_names[0]; i++) {
		char node[64];
		snprintf(node, sizeof node, "/dev/%s", dev_node_names[i].name);
		if ((c->dev_nodes & dev_node_names[i].bit) && !(dev_node_names[i].bit & (DEV_PTMX | DEV_FD)))
			make_device(rootfd, node, 0666);
	}
	int devfd = open_in_root(rootfd, "/dev", 0);
	if (devfd < 0)
		child_fail("open /dev");
	static const char *const links[][2] = {
		{"fd", "/proc/self/fd"}, {"stdin", "/proc/self/fd/0"}, {"stdout", "/proc/self/fd/1"},
		{"stderr", "/proc/self/fd/2"}, {"ptmx", "pts/ptmx"},
	};
	for (size_t i = 0; i < sizeof links / sizeof links[0]; i++) {
		if (!(c->dev_nodes & (i == 4 ? DEV_PTMX : DEV_FD)))
			continue;
		if (symlinkat(links[i][1], devfd, links[i][0]) < 0 && errno != EEXIST)
			child_fail("symlink /dev/%s", links[i][0]);
	}
	close(devfd);
	const struct mnt pts = {.type = "devpts", .src = "devpts", .dst = "/dev/pts", .flags = MS_NOSUID | MS_NOEXEC,
				.data = "newinstance,ptmxmode=0666,mode=0620"};
	if (c->dev_nodes & DEV_PTMX)
		apply_mount(rootfd, &pts);
	const struct mnt shm = {.type = "tmpfs", .src = "shm", .dst = "/dev/shm", .flags = nsd, .data = "mode=1777,size=65536k"};
	apply_mount(rootfd, &shm);
	const struct mnt mq = {.type = "mqueue", .src = "mqueue", .dst = "/dev/mqueue", .flags = nsd};
	if (c->ns & CLONE_NEWIPC)
		apply_mount(rootfd, &mq);
	if (c->console_fd >= 0) {
		/*
		 * Bind by path: the fd's own mount belongs to the monitor's mount ns and
		 * cannot be a bind source here. Check the path still names our pty.
		 */
		struct stat byfd, bypath;
		if (fstat(c->console_fd, &byfd) < 0 || stat(c->console_name, &bypath) < 0)
			child_fail("console %s", c->console_name);
		if (byfd.st_rdev != bypath.st_rdev) {
			errno = ENXIO;
			child_fail("console %s", c->console_name);
		}
		const struct mnt console = {.bind = true, .src = c->console_name, .dst = "/dev/console"};
		apply_mount(rootfd, &console);
	}
}

/* Binds path (inside the root) over itself, read-only all the way down. A missing path is skipped. */
static void make_readonly(int rootfd, const char *path)
{
	int fd = open_in_root(rootfd, path, 0);
	if (fd < 0) {
		if (errno == ENOENT)
			return;
		child_fail("read-only %s", path);
	}
	char src[64];
	snprintf(src, sizeof src, "/proc/self/fd/%d", fd);
	if (mount(src, src, NULL, MS_BIND | MS_REC, NULL) < 0)
		child_fail("read-only %s: bind", path);
	close(fd);
	fd = open_in_root(rootfd, path, 0);
	struct mount_attr ro = {.attr_set = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV};
	if (fd < 0 || mount_setattr(fd, "", AT_EMPTY_PATH | AT_RECURSIVE, &ro, sizeof ro) < 0)
		child_fail("read-only %s: set flags", path);
	close(fd);
}

/*
 * Hides path (inside the root): a directory under an empty read-only tmpfs,
 * anything else under the container's own null device (made, hidden, in its
 * /dev when the container has no /dev/null), so no mount of the host's is
 * needed and CRIU sees only container mounts. A missing path is skipped.
 */
static void mask_path(int rootfd, const char *path)
{
	int fd = open_in_root(rootfd, path, 0);
	if (fd < 0) {
		if (errno == ENOENT)
			return;
		child_fail("mask %s", path);
	}
	struct stat st;
	if (fstat(fd, &st) < 0)
		child_fail("mask %s: stat", path);
	char target[64];
	snprintf(target, sizeof target, "/proc/self/fd/%d", fd);
	if (S_ISDIR(st.st_mode)) {
		if (mount("tmpfs", target, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=4k,mode=0555") < 0)
			child_fail("mask %s: tmpfs", path);
		close(fd);
		return;
	}
	int null = open_in_root(rootfd, "/dev/null", 0);
	if (null < 0) {
		int devfd = open_in_root(rootfd, "/dev", 0);
		if (devfd < 0)
			child_fail("mask %s: open /dev", path);
		if (mknodat(devfd, ".osvirt-null", S_IFCHR, makedev(1, 3)) == 0 || errno == EEXIST)
			null = open_in_root(rootfd, "/dev/.osvirt-null", 0);
		else if (errno == EPERM)
			null = open("/dev/null", O_PATH | O_CLOEXEC); /* a user namespace may not mknod: the host's, as make_device does */
		else
			child_fail("mask %s: make a null device", path);
		close(devfd);
	}
	char src[64];
	snprintf(src, sizeof src, "/proc/self/fd/%d", null);
	if (null < 0 || mount(src, target, NULL, MS_BIND, NULL) < 0)
		child_fail("mask %s: bind a null device", path);
	close(null);
	close(fd);
}

/*
 * Moves us into UTS and/or mount namespaces owned by a new user namespace that
 * belongs to root: the kernel grants the owner of a user namespace every
 * capability over what it owns, so any euid-0 process of the container may then
 * set the hostname (uts) or mount (mnt; only what a user namespace may mount)
 * without holding CAP_SYS_ADMIN over the host. The new mount namespace is a
 * copy made from inside that user namespace, so every existing mount is locked:
 * none can be unmounted to uncover what is below, nor made writable.
 */
static void enter_root_owned(int types)
{
	static const struct {
		int type;
		const char *name;
	} order[] = {{CLONE_NEWUTS, "uts"}, {CLONE_NEWNS, "mnt"}};
	/*
	 * The child sends its namespaces back as fds: opening /proc/PID/ns of a
	 * process in a user namespace nested in the container's own can be refused
	 * (EACCES), while a process may always open its own.
	 */
	int sp[2], done[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) < 0 || pipe2(done, O_CLOEXEC) < 0)
		child_fail("socketpair");
	pid_t k = fork();
	if (k < 0)
		child_fail("fork");
	if (k == 0) {
		close(sp[0]);
		close(done[1]);
		char b = 0;
		int fds[2], n = 0;
		if (unshare(CLONE_NEWUSER) < 0)
			b = 1;
		else if (unshare(types) < 0)
			b = 2;
		for (size_t i = 0; !b && i < 2; i++) {
			if (!(types & order[i].type))
				continue;
			char path[64];
			snprintf(path, sizeof path, "/proc/self/ns/%s", order[i].name);
			if ((fds[n++] = open(path, O_RDONLY | O_CLOEXEC)) < 0)
				b = 3;
		}
		struct iovec iov = {.iov_base = &b, .iov_len = 1};
		char ctl[CMSG_SPACE(sizeof fds)] = {0};
		struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
		if (!b && n) {
			msg.msg_control = ctl;
			msg.msg_controllen = CMSG_SPACE(n * sizeof(int));
			struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
			cm->cmsg_level = SOL_SOCKET;
			cm->cmsg_type = SCM_RIGHTS;
			cm->cmsg_len = CMSG_LEN(n * sizeof(int));
			memcpy(CMSG_DATA(cm), fds, n * sizeof(int));
		}
		if (sendmsg(sp[1], &msg, 0) != 1 || b)
			_exit(1);
		(void)!read(done[0], &b, 1); /* until the container has joined */
		_exit(0);
	}
	close(sp[1]);
	close(done[0]);
	char b = 9;
	int fds[2] = {-1, -1};
	struct iovec iov = {.iov_base = &b, .iov_len = 1};
	char ctl[CMSG_SPACE(sizeof fds)];
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl, .msg_controllen = sizeof ctl};
	if (recvmsg(sp[0], &msg, MSG_CMSG_CLOEXEC) != 1 || b) {
		errno = b == 1 ? EPERM : errno;
		child_fail("create root-owned namespaces (%s)", b == 1 ? "user namespace" : b == 2 ? "uts/mnt namespace" : "pass them back");
	}
	struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
	if (cm && cm->cmsg_type == SCM_RIGHTS)
		memcpy(fds, CMSG_DATA(cm), cm->cmsg_len - CMSG_LEN(0));
	for (size_t i = 0, n = 0; i < 2; i++) {
		if (!(types & order[i].type))
			continue;
		int fd = fds[n++];
		if (fd < 0 || setns(fd, order[i].type) < 0)
			child_fail("join the root-owned %s namespace", order[i].name);
		close(fd);
	}
	close(sp[0]);
	close(done[1]);
	waitpid(k, NULL, 0);
	if (chdir("/") < 0)
		child_fail("chdir /");
}

/* Makes the root a mount point of its own (pivot_root needs one) and opens it. */
static int open_rootfs(const struct run_cfg *c)
{
	/* Nothing we mount may propagate back to the host. */
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
		child_fail("make / private");
	if (mount(c->rootfs, c->rootfs, NULL, MS_BIND | MS_REC, NULL) < 0)
		child_fail("bind rootfs %s", c->rootfs);
	int rootfd = open(c->rootfs, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (rootfd < 0)
		child_fail("open rootfs %s", c->rootfs);
	return rootfd;
}

/*
 * "PATH:CONTENT": a small file the container's init finds ready (e.g.
 * /run/host/container-manager on the /run tmpfs), written by the container's
 * root, so it is the container's own and a checkpoint carries it.
 */
static void write_file_in_root(int rootfd, const char *spec)
{
	const char *colon = strchr(spec, ':');
	char path[PATH_MAX], parent[PATH_MAX], name[NAME_MAX + 1];
	if ((size_t)(colon - spec) >= sizeof path)
		child_fail("--write-file: path too long");
	memcpy(path, spec, (size_t)(colon - spec));
	path[colon - spec] = '\0';
	split_path(path, parent, name);
	int dir = open_in_root(rootfd, parent, S_IFDIR);
	if (dir < 0)
		child_fail("write %s: parent directory", path);
	/* An O_PATH fd cannot be a base for creating a file: reopen the directory itself. */
	char dirpath[64];
	snprintf(dirpath, sizeof dirpath, "/proc/self/fd/%d", dir);
	int d = open(dirpath, O_DIRECTORY | O_RDONLY | O_CLOEXEC);
	int fd = d < 0 ? -1 : openat(d, name, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644);
	if (fd < 0)
		child_fail("write %s", path);
	size_t len = strlen(colon + 1);
	if (write(fd, colon + 1, len) != (ssize_t)len || write(fd, "\n", 1) != 1)
		child_fail("write %s", path);
	close(fd);
	close(d);
	close(dir);
}

static void setup_rootfs(const struct run_cfg *c, int rootfd)
{
	/*
	 * Standard mounts first, then the caller's: a --mount under /dev or /proc
	 * would otherwise be hidden by the standard mount on top of it.
	 */
	if (c->default_mounts)
		default_mounts(rootfd, c);
	for (size_t i = 0; i < c->nmounts; i++)
		apply_mount(rootfd, &c->mounts[i]);
	for (size_t i = 0; i < c->files.n; i++)
		write_file_in_root(rootfd, c->files.v[i]);
	for (size_t i = 0; i < c->devices.n; i++)
		make_device(rootfd, c->devices.v[i], 0);
	for (size_t i = 0; i < c->ro_paths.n; i++)
		make_readonly(rootfd, c->ro_paths.v[i]);
	for (size_t i = 0; i < c->masks.n; i++)
		mask_path(rootfd, c->masks.v[i]);
	if (fchdir(rootfd) < 0)
		child_fail("chdir rootfs");
	if (syscall(SYS_pivot_root, ".", ".") < 0)
		child_fail("pivot_root");
	/* The old root is now stacked on "."; detach it so no host path stays reachable. */
	if (umount2(".", MNT_DETACH) < 0)
		child_fail("detach old root");
	if (chdir("/") < 0)
		child_fail("chdir /");
	close(rootfd);
	struct mount_attr ro = {.attr_set = MOUNT_ATTR_RDONLY};
	if (c->readonly && mount_setattr(AT_FDCWD, "/", 0, &ro, sizeof ro) < 0)
		child_fail("remount / read-only");
}

/* The container init, from clone() to exec. */
NORETURN static void run_child(const struct run_cfg *c, int syncfd, int joinedfd, int errfd, int outfd)
{
	g_errfd = errfd;
	/* If the monitor dies before releasing us, die too (cleared again right before exec). */
	prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
	/* Into the container's cgroups first (see cgroup_join_self), and tell the monitor. */
	if (cgroup_join_self(c->cg) < 0)
		child_fail("join the container's cgroups");
	if (write(joinedfd, "j", 1) != 1)
		_exit(1);
	close(joinedfd);
	/* "s": the monitor wrote our id maps. Everything up to exec is set up now, while the daemon configures. */
	char step;
	if (read(syncfd, &step, 1) != 1)
		_exit(1); /* the monitor aborted */
	umask(022);
	/*
	 * The root is found while our ids are still the host's root (only our
	 * capabilities are the new user namespace's): the path to it may run
	 * through directories only root may enter, like the daemon's state dir.
	 */
	int rootfd = c->rootfs ? open_rootfs(c) : -1;
	/* Our ids are still the host's root, unmapped in the new user ns: become its root. */
	if ((c->ns & CLONE_NEWUSER) &&
	    (setgroups(0, NULL) < 0 || setresgid(0, 0, 0) < 0 || setresuid(0, 0, 0) < 0))
		child_fail("become root of the user namespace");
	/* Now that we are in the container's cgroups, they become our cgroup ns root. */
	if ((c->ns & CLONE_NEWCGROUP) && unshare(CLONE_NEWCGROUP) < 0)
		child_fail("unshare cgroup namespace");
	if (c->rootfs)
		setup_rootfs(c, rootfd);
	if (c->owned_ns)
		enter_root_owned(c->owned_ns);
	if (c->lo_up)
		loopback_up();
	if (c->veth.host)
		veth_configure_inside(&c->veth);
	if (c->hostname && sethostname(c->hostname, strlen(c->hostname)) < 0)
		child_fail("sethostname");
	if (c->domainname && setdomainname(c->domainname, strlen(c->domainname)) < 0)
		child_fail("setdomainname");
	/* The init leads its own session (CRIU needs the session inside the dumped tree). */
	if (setsid() < 0)
		child_fail("setsid");
	if (c->p.tty) {
		if (ioctl(c->console_fd, TIOCSCTTY, 0) < 0)
			child_fail("set controlling terminal");
		for (int i = 0; i < 3; i++)
			if (dup2(c->console_fd, i) < 0)
				child_fail("dup2 console");
	} else {
		/*
		 * Opened after pivot_root so the init holds no fd pointing outside its
		 * mounts. A container without /dev/null gets the output pipe as stdin
		 * too (write-only: reading it fails, as reading nothing should).
		 */
		int null = open("/dev/null", O_RDWR | O_CLOEXEC);
		if (null < 0 && errno != ENOENT)
			child_fail("open /dev/null");
		if (dup2(null >= 0 ? null : outfd, 0) < 0 || dup2(outfd, 1) < 0 || dup2(outfd, 2) < 0)
			child_fail("dup2 stdio");
	}
	/* "g": the daemon has configured the container (network); run. */
	if (read(syncfd, &step, 1) != 1)
		_exit(1); /* the monitor aborted */
	close(syncfd);
	/* Nothing but stdio and the error pipe (itself CLOEXEC) survives exec. */
	if (close_range(3, ~0U, CLOSE_RANGE_CLOEXEC) < 0)
		child_fail("close_range");
	become_process(&c->p);
}

static pid_t g_child = -1;  /* killed if the handshake fails */
static char *g_host_mount;  /* --host-overlay: unmounted when the init is gone */
static const char *g_host_veth; /* --veth: deleted when the init is gone */

/* The monitor mounted the root, so it unmounts it, before anyone learns the init exited. */
static void unmount_host_mount(void)
{
	if (g_host_mount && umount2(g_host_mount, MNT_DETACH) < 0 && errno != EINVAL && errno != ENOENT)
		fprintf(stderr, "unmount %s: %s\n", g_host_mount, strerror(errno));
	g_host_mount = NULL;
}
static int g_statefd = -1;
static bool g_frames_on_stdout; /* restore: stdout carries CRIU frames, not JSON events */

static void remove_state_files(void)
{
	static const char *const names[] = {"monitor.pid", "init.pid", "monitor.sock", "console.sock"};
	for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
		unlinkat(g_statefd, names[i], 0);
}

/* Handshake failure: no container is left behind, the caller gets an error event. */
NORETURN FORMAT(1, 2) static void monitor_fail(const char *fmt, ...)
{
	char msg[1024], quoted[2100];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	if (g_child > 0) {
		kill(g_child, SIGKILL);
		waitpid(g_child, NULL, 0);
	}
	unmount_host_mount();
	if (g_statefd >= 0)
		remove_state_files();
	if (g_frames_on_stdout) {
		fprintf(stderr, "osvirt-helper: %s\n", msg);
		exit(1);
	}
	json_quote(quoted, sizeof quoted, msg);
	emit("{\"event\":\"error\",\"message\":%s}", quoted);
	exit(1);
}

static int listen_unix(const char *name)
{
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	snprintf(addr.sun_path, sizeof addr.sun_path, "%s", name); /* relative: cwd is the state dir */
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	unlink(name);
	if (bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0 || chmod(name, 0600) < 0 || listen(fd, 16) < 0) {
		int saved = errno;
		close(fd);
		errno = saved;
		return -1;
	}
	return fd;
}

/* The monitor's event loop state (after "started"). */
struct monitor {
	pid_t init;
	int sigfd, ctl_listen, con_listen, master, logpipe, logfd;
	int ctl[MAX_CLIENTS];
	char ctl_buf[MAX_CLIENTS][256];
	size_t ctl_len[MAX_CLIENTS];
	int con[MAX_CLIENTS];
	char ring[RING_SIZE];
	size_t ring_head, ring_len;     /* next write position, bytes held */
};

static void close_slot(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

static void on_output(struct monitor *m, const char *buf, size_t n)
{
	if (m->logfd >= 0 && write_all(m->logfd, buf, n) < 0)
		fprintf(stderr, "console.log: %s\n", strerror(errno));
	for (size_t i = 0; i < n; i++) {
		m->ring[m->ring_head] = buf[i];
		m->ring_head = (m->ring_head + 1) % RING_SIZE;
	}
	m->ring_len = m->ring_len + n > RING_SIZE ? RING_SIZE : m->ring_len + n;
	for (int i = 0; i < MAX_CLIENTS; i++) {
		/* A console client that cannot keep up is disconnected rather than stalling the container. */
		if (m->con[i] >= 0 && write(m->con[i], buf, n) != (ssize_t)n)
			close_slot(&m->con[i]);
	}
}

/* Reads what the container wrote; false at EOF/EIO (no writer or no slave left). */
static bool drain_output(struct monitor *m, int fd)
{
	char buf[8192];
	for (;;) {
		ssize_t n = read(fd, buf, sizeof buf);
		if (n > 0) {
			on_output(m, buf, (size_t)n);
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		return n < 0 && errno == EAGAIN;
	}
}

static void ctl_reply(struct monitor *m, int i, const char *line)
{
	char out[256];
	unsigned rows, cols;
	if (!strcmp(line, "status")) {
		snprintf(out, sizeof out, "{\"state\":\"running\",\"initPid\":%d}\n", m->init);
	} else if (sscanf(line, "resize %u %u", &rows, &cols) == 2) {
		struct winsize ws = {.ws_row = (unsigned short)rows, .ws_col = (unsigned short)cols};
		if (m->master < 0)
			snprintf(out, sizeof out, "{\"error\":\"no tty\"}\n");
		else if (ioctl(m->master, TIOCSWINSZ, &ws) < 0)
			snprintf(out, sizeof out, "{\"error\":\"resize: %s\"}\n", strerror(errno));
		else
			snprintf(out, sizeof out, "{\"ok\":true}\n");
	} else {
		snprintf(out, sizeof out, "{\"error\":\"unknown command\"}\n");
	}
	if (write(m->ctl[i], out, strlen(out)) != (ssize_t)strlen(out))
		close_slot(&m->ctl[i]);
}

static void on_ctl_input(struct monitor *m, int i)
{
	size_t *len = &m->ctl_len[i];
	ssize_t n = read(m->ctl[i], m->ctl_buf[i] + *len, sizeof m->ctl_buf[i] - 1 - *len);
	if (n <= 0) {
		if (n == 0 || errno != EAGAIN)
			close_slot(&m->ctl[i]);
		return;
	}
	*len += (size_t)n;
	m->ctl_buf[i][*len] = '\0';
	char *nl;
	while (m->ctl[i] >= 0 && (nl = strchr(m->ctl_buf[i], '\n'))) {
		*nl = '\0';
		if (nl > m->ctl_buf[i] && nl[-1] == '\r')
			nl[-1] = '\0';
		ctl_reply(m, i, m->ctl_buf[i]);
		*len -= (size_t)(nl + 1 - m->ctl_buf[i]);
		memmove(m->ctl_buf[i], nl + 1, *len + 1);
	}
	if (*len == sizeof m->ctl_buf[i] - 1)
		close_slot(&m->ctl[i]); /* an over-long line: not a client of ours */
}

static void on_accept(struct monitor *m, bool console)
{
	int *slots = console ? m->con : m->ctl;
	int fd = accept4(console ? m->con_listen : m->ctl_listen, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (fd < 0)
		return;
	for (int i = 0; i < MAX_CLIENTS; i++) {
		if (slots[i] >= 0)
			continue;
		slots[i] = fd;
		if (!console) {
			m->ctl_len[i] = 0;
			return;
		}
		/* Replay recent output so a new console client sees the current screen. */
		size_t start = (m->ring_head + RING_SIZE - m->ring_len) % RING_SIZE;
		size_t first = m->ring_len < RING_SIZE - start ? m->ring_len : RING_SIZE - start;
		if (write_all(fd, m->ring + start, first) < 0 || write_all(fd, m->ring, m->ring_len - first) < 0)
			close_slot(&slots[i]);
		return;
	}
	close(fd);
}

static void iso_now(char *out, size_t cap)
{
	struct timespec ts;
	struct tm tm;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	size_t n = strftime(out, cap, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out + n, cap - n, ".%03ldZ", ts.tv_nsec / 1000000);
}

NORETURN static void monitor_finish(struct monitor *m, int status)
{
	if (m->master >= 0)
		drain_output(m, m->master);
	if (m->logpipe >= 0)
		drain_output(m, m->logpipe);
	unmount_host_mount();
	/*
	 * The pair dies with the container's network namespace, but the kernel
	 * cleans namespaces up asynchronously; deleting the host end now means it
	 * is gone when the daemon learns of the exit. RTM_DELLINK returns only after
	 * the kernel has released the device (an RCU barrier: 20-30 ms here), while
	 * the name leaves the host at the start of that: a child waits for the
	 * release, the monitor only for the name to go.
	 */
	if (g_host_veth) {
		pid_t deleter = fork();
		if (deleter == 0) {
			close_range(3, ~0U, 0); /* hold none of the monitor's sockets open */
			struct nlreq r;
			struct ifinfomsg del = {.ifi_family = AF_UNSPEC};
			nl_init(&r, RTM_DELLINK, 0, &del, sizeof del);
			if (nl_put(&r, IFLA_IFNAME, g_host_veth, strlen(g_host_veth) + 1) && nl_talk(&r) < 0 && errno != ENODEV)
				fprintf(stderr, "delete %s: %s\n", g_host_veth, strerror(errno));
			_exit(0);
		}
		for (int i = 0; deleter > 0 && i < 50000 && if_nametoindex(g_host_veth); i++)
			usleep(100);
	}
	int sig = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
	int code = sig ? 128 + sig : WEXITSTATUS(status);
	char when[64], buf[256];
	iso_now(when, sizeof when);
	snprintf(buf, sizeof buf, "{\"exitCode\":%d,\"signal\":%d,\"finishedAt\":\"%s\"}\n", code, sig, when);
	if (write_file_atomic(g_statefd, "exit", buf) < 0)
		fprintf(stderr, "write exit file: %s\n", strerror(errno));
	if (sig)
		snprintf(buf, sizeof buf, "{\"event\":\"exited\",\"signal\":%d,\"exitCode\":%d}\n", sig, code);
	else
		snprintf(buf, sizeof buf, "{\"event\":\"exited\",\"exitCode\":%d}\n", code);
	for (int i = 0; i < MAX_CLIENTS; i++) {
		if (m->ctl[i] >= 0) {
			/* Blocking for this last message: a client must not miss the exit. */
			fcntl(m->ctl[i], F_SETFL, 0);
			write_all(m->ctl[i], buf, strlen(buf));
		}
		close_slot(&m->ctl[i]);
		close_slot(&m->con[i]);
	}
	unlink("monitor.sock");
	unlink("console.sock");
	fprintf(stderr, "init %d: %s", m->init, buf);
	exit(0);
}

NORETURN static void monitor_loop(struct monitor *m)
{
	enum { K_SIG, K_CTL_LISTEN, K_CON_LISTEN, K_OUT, K_CTL, K_CON };
	struct pollfd pfd[4 + 2 * MAX_CLIENTS];
	int kind[4 + 2 * MAX_CLIENTS], slot[4 + 2 * MAX_CLIENTS];
	int outfd = m->master >= 0 ? m->master : m->logpipe;
	/*
	 * A pty master reads EIO while no slave is open, and that is not for good:
	 * a booted init closes its console and its getty hangs it up (vhangup) and
	 * opens it again. So the master is polled again a little later, while a
	 * pipe's EOF is final.
	 */
	bool master_idle = false;
	for (;;) {
		if (master_idle) {
			outfd = m->master;
			master_idle = false;
		}
		int n = 0;
#define ADD(fd_, k_, s_) (pfd[n] = (struct pollfd){.fd = (fd_), .events = POLLIN}, kind[n] = (k_), slot[n++] = (s_))
		ADD(m->sigfd, K_SIG, 0);
		ADD(m->ctl_listen, K_CTL_LISTEN, 0);
		if (m->con_listen >= 0)
			ADD(m->con_listen, K_CON_LISTEN, 0);
		if (outfd >= 0)
			ADD(outfd, K_OUT, 0);
		for (int i = 0; i < MAX_CLIENTS; i++) {
			if (m->ctl[i] >= 0)
				ADD(m->ctl[i], K_CTL, i);
			if (m->con[i] >= 0)
				ADD(m->con[i], K_CON, i);
		}
#undef ADD
		int waited = poll(pfd, (nfds_t)n, outfd < 0 && m->master >= 0 ? 200 : -1);
		if (waited == 0) {
			master_idle = true;
			continue;
		}
		if (waited < 0) {
			if (errno == EINTR)
				continue;
			fprintf(stderr, "poll: %s\n", strerror(errno));
			sleep(1);
			continue;
		}
		for (int j = 0; j < n; j++) {
			if (!pfd[j].revents)
				continue;
			int i = slot[j];
			switch (kind[j]) {
			case K_SIG: {
				struct signalfd_siginfo si;
				while (read(m->sigfd, &si, sizeof si) == sizeof si)
					;
				/* We are a subreaper: reap everything, finish when it is the init. */
				int status;
				pid_t pid;
				while ((pid = waitpid(-1, &status, WNOHANG)) > 0)
					if (pid == m->init)
						monitor_finish(m, status);
				break;
			}
			case K_CTL_LISTEN:
				on_accept(m, false);
				break;
			case K_CON_LISTEN:
				on_accept(m, true);
				break;
			case K_OUT:
				/* EOF/EIO: no writer left; stop polling (the exit arrives by SIGCHLD). */
				if (!drain_output(m, outfd))
					outfd = -1;
				break;
			case K_CTL:
				on_ctl_input(m, i);
				break;
			case K_CON: {
				char buf[4096];
				ssize_t r = read(m->con[i], buf, sizeof buf);
				if (r == 0 || (r < 0 && errno != EAGAIN))
					close_slot(&m->con[i]);
				else if (r > 0 && write(m->master, buf, (size_t)r) < 0 && errno != EAGAIN)
					fprintf(stderr, "console input: %s\n", strerror(errno));
				break;
			}
			}
		}
	}
}

/*
 * The monitor of an init (started by run, or restored by restore): sockets exist
 * and init.pid is written once this returns, so a caller may connect at once.
 */
static struct monitor *monitor_new(pid_t init, int master, int logpipe, bool tty)
{
	struct monitor *m = calloc(1, sizeof *m);
	if (!m)
		monitor_fail("calloc: %s", strerror(errno));
	m->init = init;
	m->master = master;
	m->logpipe = logpipe;
	m->con_listen = -1;
	m->logfd = -1;
	for (int i = 0; i < MAX_CLIENTS; i++)
		m->ctl[i] = m->con[i] = -1;
	if ((m->ctl_listen = listen_unix("monitor.sock")) < 0)
		monitor_fail("listen monitor.sock: %s", strerror(errno));
	if (tty && (m->con_listen = listen_unix("console.sock")) < 0)
		monitor_fail("listen console.sock: %s", strerror(errno));
	char num[32];
	snprintf(num, sizeof num, "%d\n", init);
	if (write_file_atomic(g_statefd, "init.pid", num) < 0)
		monitor_fail("write init.pid: %s", strerror(errno));
	return m;
}

/*
 * Detaches from the caller's pipes and serves until the init exits. SIGCHLD must
 * be blocked since before the init existed, so an early exit is still pending.
 */
NORETURN static void monitor_serve(struct monitor *m)
{
	ignore_signal(SIGTERM); /* only the init's exit ends the monitor */
	int null = open("/dev/null", O_RDWR | O_CLOEXEC);
	int log = openat(g_statefd, "monitor.log", O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	if (null >= 0)
		dup2(null, 0);
	if (log >= 0) {
		dup2(log, 1);
		dup2(log, 2);
	}
	m->logfd = openat(g_statefd, "console.log", O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
	sigset_t chld;
	sigemptyset(&chld);
	sigaddset(&chld, SIGCHLD);
	m->sigfd = signalfd(-1, &chld, SFD_NONBLOCK | SFD_CLOEXEC);
	if (m->sigfd < 0) {
		fprintf(stderr, "signalfd: %s\n", strerror(errno));
		exit(1);
	}
	if (m->master >= 0)
		fcntl(m->master, F_SETFL, O_NONBLOCK);
	if (m->logpipe >= 0)
		fcntl(m->logpipe, F_SETFL, O_NONBLOCK);
	monitor_loop(m);
}

static int ns_flag(const char *name)
{
	for (size_t i = 0; i < NNS; i++)
		if (!strcmp(name, namespaces[i].name))
			return namespaces[i].flag;
	return 0;
}

/* "uts,mnt" to CLONE_NEW* flags, each one of `allowed`. */
static int ns_list(const char *opt, const char *v, int allowed)
{
	int out = 0;
	char *copy = strdup(v), *save = NULL;
	for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		int f = ns_flag(t);
		if (!f || !(f & allowed))
			usage_error("%s: unknown or unsupported namespace '%s'", opt, t);
		out |= f;
	}
	free(copy);
	return out;
}

static void add_idmap(struct list *l, const char *opt, const char *v)
{
	unsigned long in, out, count;
	char extra;
	if (sscanf(v, "%lu:%lu:%lu%c", &in, &out, &count, &extra) != 3)
		usage_error("%s %s: expected IN:OUT:COUNT", opt, v);
	char *line;
	if (asprintf(&line, "%lu %lu %lu\n", in, out, count) < 0)
		exit(1);
	list_add(l, line);
}

static void parse_run(struct run_cfg *c, int argc, char **argv)
{
	struct args a = {argc, argv, 0};
	const char *v;
	c->p.cwd = "/";
	c->default_mounts = true;
	c->console_fd = -1;
	c->dev_nodes = DEV_NODES_ALL;
	c->sysfs = true;
	int no_ns = 0;
	for (; a.i < argc && strcmp(argv[a.i], "--"); a.i++) {
		if (parse_proc_opt(&a, &c->p)) {
		} else if ((v = value(&a, "--state"))) {
			c->state = v;
		} else if ((v = value(&a, "--rootfs"))) {
			c->rootfs = v;
		} else if ((v = value(&a, "--ns"))) {
			char *copy = strdup(v), *save = NULL;
			for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
				if (!ns_flag(t))
					usage_error("--ns: unknown namespace '%s'", t);
				c->ns |= ns_flag(t);
			}
		} else if ((v = value(&a, "--join"))) {
			const char *colon = strchr(v, ':');
			int type = colon ? ns_flag(strndupa(v, (size_t)(colon - v))) : 0;
			if (!(type & (CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS)) || !colon[1])
				usage_error("--join %s: expected net|ipc|uts:PATH", v);
			if (c->njoins == 3)
				usage_error("--join: at most one per type");
			c->joins[c->njoins].type = type;
			c->joins[c->njoins++].spec = v;
		} else if ((v = value(&a, "--uidmap"))) {
			add_idmap(&c->uidmap, "--uidmap", v);
		} else if ((v = value(&a, "--gidmap"))) {
			add_idmap(&c->gidmap, "--gidmap", v);
		} else if ((v = value(&a, "--hostname"))) {
			c->hostname = v;
		} else if ((v = value(&a, "--domainname"))) {
			c->domainname = v;
		} else if ((v = value(&a, "--mount"))) {
			c->mounts = realloc(c->mounts, (c->nmounts + 1) * sizeof *c->mounts);
			parse_mount(v, &c->mounts[c->nmounts++]);
		} else if ((v = value(&a, "--write-file"))) {
			if (v[0] != '/' || !strchr(v, ':'))
				usage_error("--write-file %s: expected /PATH:CONTENT", v);
			list_add(&c->files, v);
		} else if ((v = value(&a, "--device"))) {
			if (v[0] != '/')
				usage_error("--device %s: expected an absolute path", v);
			list_add(&c->devices, v);
		} else if (flag(&a, "--no-default-mounts")) {
			c->default_mounts = false;
		} else if (flag(&a, "--readonly-rootfs")) {
			c->readonly = true;
		} else if ((v = value(&a, "--dev-nodes"))) {
			c->dev_nodes = 0;
			char *copy = strdup(v), *save = NULL;
			for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
				size_t i;
				for (i = 0; i < sizeof dev_node_names / sizeof dev_node_names[0]; i++)
					if (!strcmp(t, dev_node_names[i].name))
						break;
				if (i < sizeof dev_node_names / sizeof dev_node_names[0])
					c->dev_nodes |= dev_node_names[i].bit;
				else if (strcmp(t, "none"))
					usage_error("--dev-nodes: unknown node '%s'", t);
			}
		} else if (flag(&a, "--no-sysfs")) {
			c->sysfs = false;
		} else if (flag(&a, "--lo-up")) {
			c->lo_up = true;
		} else if ((v = value(&a, "--veth"))) {
			char *spec = strdup(v), *colon = strchr(spec, ':');
			if (!colon || colon == spec || !colon[1] || strlen(spec) >= IFNAMSIZ + 1 + IFNAMSIZ)
				usage_error("--veth %s: expected HOST_IFNAME:IFNAME", v);
			*colon = '\0';
			c->veth.host = spec;
			c->veth.peer = colon + 1;
		} else if ((v = value(&a, "--veth-bridge"))) {
			c->veth.bridge = v;
		} else if ((v = value(&a, "--veth-mac"))) {
			c->veth.mac = v;
		} else if ((v = value(&a, "--veth-mtu"))) {
			c->veth.mtu = (unsigned)parse_ulong(v, "--veth-mtu");
		} else if ((v = value(&a, "--veth-address"))) {
			c->veth.address = v;
		} else if ((v = value(&a, "--veth-gateway"))) {
			c->veth.gateway = v;
		} else if ((v = value(&a, "--host-overlay"))) {
			c->host_overlay = v;
		} else if ((v = value(&a, "--host-bind"))) {
			c->host_bind = v;
		} else if ((v = value(&a, "--mask"))) {
			if (v[0] != '/')
				usage_error("--mask %s: expected an absolute path", v);
			list_add(&c->masks, v);
		} else if ((v = value(&a, "--ro-path"))) {
			if (v[0] != '/')
				usage_error("--ro-path %s: expected an absolute path", v);
			list_add(&c->ro_paths, v);
		} else if ((v = value(&a, "--no-ns"))) {
			no_ns |= ns_list("--no-ns", v, ~0);
		} else if ((v = value(&a, "--root-owned-ns"))) {
			c->owned_ns |= ns_list("--root-owned-ns", v, CLONE_NEWUTS | CLONE_NEWNS);
		} else {
			usage_error("run: unknown option '%s'", argv[a.i]);
		}
	}
	c->p.argv = parse_command(&a);
	/* --no-ns: share the caller's namespace after all (and then it has no hostname of its own). */
	c->ns &= ~no_ns;
	if (no_ns & CLONE_NEWUTS)
		c->hostname = c->domainname = NULL;

	/* Refuse combinations that would change the host instead of the container. */
	if (!c->state)
		usage_error("run: --state is required");
	if (c->rootfs && !(c->ns & CLONE_NEWNS))
		usage_error("run: --rootfs needs mnt in --ns");
	if ((c->ns & CLONE_NEWNS) && !c->rootfs)
		usage_error("run: mnt in --ns needs --rootfs");
	if (!c->rootfs && (c->nmounts || c->devices.n || c->readonly))
		usage_error("run: --mount, --device and --readonly-rootfs need --rootfs");
	if ((c->hostname || c->domainname) && !(c->ns & CLONE_NEWUTS))
		usage_error("run: --hostname/--domainname need uts in --ns");
	if (c->veth.host && !(c->ns & CLONE_NEWNET))
		usage_error("run: --veth needs net in --ns");
	if (!c->veth.host && (c->veth.bridge || c->veth.mac || c->veth.mtu || c->veth.address || c->veth.gateway))
		usage_error("run: --veth-* options need --veth");
	if ((c->owned_ns & ~c->ns) || (c->owned_ns && !(c->ns & CLONE_NEWPID)))
		usage_error("run: --root-owned-ns needs those namespaces (and pid) in --ns");
	if (c->host_bind && (!(c->ns & CLONE_NEWUSER) || c->host_overlay))
		usage_error("run: --host-bind is the idmapped root of a user namespace, without --host-overlay");
	for (size_t i = 0; i < c->njoins; i++)
		for (size_t j = 0; j < c->njoins; j++)
			if ((c->joins[i].type & c->ns) || (i != j && c->joins[i].type == c->joins[j].type))
				usage_error("run: --join %s conflicts with --ns or another --join", c->joins[i].spec);
	bool userns = c->ns & CLONE_NEWUSER;
	if (userns != (c->uidmap.n > 0) || userns != (c->gidmap.n > 0))
		usage_error("run: user in --ns needs --uidmap and --gidmap (and they need it)");
	c->p.cap_last = read_cap_last();
}

/* The host id that `inner` maps to in an "IN OUT COUNT" map, or -1. */
static long outer_id(const struct list *map, unsigned long inner)
{
	for (size_t i = 0; i < map->n; i++) {
		unsigned long in, out, count;
		if (sscanf(map->v[i], "%lu %lu %lu", &in, &out, &count) == 3 && inner >= in && inner - in < count)
			return (long)(out + inner - in);
	}
	return -1;
}

static char *join_lines(const struct list *l)
{
	size_t len = 1;
	for (size_t i = 0; i < l->n; i++)
		len += strlen(l->v[i]);
	char *s = calloc(1, len);
	for (size_t i = 0; i < l->n; i++)
		strcat(s, l->v[i]);
	return s;
}

/* ------------------------------------------------------------------ idmapped mounts */

/*
 * A user namespace with exactly these maps, as an fd: what
 * mount_setattr(MOUNT_ATTR_IDMAP) takes. Only the maps matter to an idmapped
 * mount, so a short-lived child makes the namespace and is gone before we
 * return (LXC does the same for its idmapped rootfs).
 */
static int userns_fd_for(const struct list *uidmap, const struct list *gidmap)
{
	int ready[2], done[2];
	if (pipe2(ready, O_CLOEXEC) < 0)
		return -1;
	if (pipe2(done, O_CLOEXEC) < 0) {
		close(ready[0]);
		close(ready[1]);
		return -1;
	}
	pid_t k = fork();
	if (k < 0)
		return -1;
	if (k == 0) {
		close(ready[0]);
		close(done[1]);
		char b = unshare(CLONE_NEWUSER) < 0 ? 1 : 0;
		if (write(ready[1], &b, 1) != 1 || b)
			_exit(1);
		(void)!read(done[0], &b, 1); /* until the parent has the fd */
		_exit(0);
	}
	close(ready[1]);
	close(done[0]);
	char b = 1, path[64];
	int fd = -1, saved = 0;
	if (read(ready[0], &b, 1) == 1 && !b) {
		snprintf(path, sizeof path, "/proc/%d/uid_map", k);
		if (write_file(path, join_lines(uidmap)) == 0) {
			snprintf(path, sizeof path, "/proc/%d/gid_map", k);
			if (write_file(path, join_lines(gidmap)) == 0) {
				snprintf(path, sizeof path, "/proc/%d/ns/user", k);
				fd = open(path, O_RDONLY | O_CLOEXEC);
			}
		}
	} else {
		errno = EPERM;
	}
	saved = errno;
	close(ready[0]);
	close(done[1]);
	waitpid(k, NULL, 0);
	errno = saved;
	return fd;
}

/* A detached copy of the mount at src whose owners appear through userns's maps. */
static int idmapped_clone(const char *src, int userns, bool recursive)
{
	int rec = recursive ? AT_RECURSIVE : 0;
	int fd = (int)syscall(SYS_open_tree, AT_FDCWD, src, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | rec);
	if (fd < 0)
		return -1;
	struct mount_attr attr = {.attr_set = MOUNT_ATTR_IDMAP, .userns_fd = (uint64_t)userns};
	if (mount_setattr(fd, "", AT_EMPTY_PATH | rec, &attr, sizeof attr) < 0) {
		int saved = errno;
		close(fd);
		errno = saved;
		return -1;
	}
	return fd;
}

/*
 * Mounts overlay "LOWER[:LOWER...]:UPPER:WORK" (lower layers top first, as
 * overlayfs lists them) on target. With userns >= 0 each lower layer is an
 * idmapped mount (overlayfs itself cannot be idmapped): what is root-owned
 * on disk (a shared template, an image's layers) appears owned by the
 * container's root; the upper holds the container's own files under its host
 * ids, and its top directory belongs to the container's root. Layers are
 * added one by one ("lowerdir+", Linux 6.8), so an image of any depth mounts:
 * the one-page limit of mount(2)'s option string never applies. On failure
 * *what names the step.
 */
static int mount_overlay_layers(const char *overlay, const char *target, int userns, const struct list *uidmap,
				const struct list *gidmap, const char **what)
{
	int r = -1, fsfd = -1, mnt = -1;
	size_t n = 1;
	for (const char *p = overlay; *p; p++)
		n += *p == ':';
	char *spec = strdup(overlay);
	char **parts = calloc(n, sizeof *parts);
	int *fds = calloc(n, sizeof *fds);
	*what = "out of memory";
	if (!spec || !parts || !fds)
		goto out;
	for (size_t i = 0; i < n; i++)
		fds[i] = -1;
	char *save = NULL;
	size_t k = 0;
	for (char *t = strtok_r(spec, ":", &save); t && k < n; t = strtok_r(NULL, ":", &save))
		parts[k++] = t;
	*what = "overlay spec (expected LOWER[:LOWER...]:UPPER:WORK)";
	if (k < 3) {
		errno = EINVAL;
		goto out;
	}
	size_t nlower = k - 2;
	const char *upper = parts[k - 2], *work = parts[k - 1];
	if (userns >= 0) {
		*what = "idmapped mount of a lower layer (does its filesystem support idmapped mounts?)";
		for (size_t i = 0; i < nlower; i++) {
			fds[i] = idmapped_clone(parts[i], userns, false);
			if (fds[i] < 0)
				goto out;
		}
		*what = "chown the upper layer to the container's root";
		if (chown(upper, (uid_t)outer_id(uidmap, 0), (gid_t)outer_id(gidmap, 0)) < 0)
			goto out;
	}
	*what = "fsopen overlay";
	fsfd = (int)syscall(SYS_fsopen, "overlay", FSOPEN_CLOEXEC);
	if (fsfd < 0)
		goto out;
	for (size_t i = 0; i < nlower; i++) {
		char fdpath[64];
		const char *layer = parts[i];
		if (fds[i] >= 0) {
			snprintf(fdpath, sizeof fdpath, "/proc/self/fd/%d", fds[i]);
			layer = fdpath;
		}
		*what = "add a lower layer (lowerdir+ needs Linux 6.8)";
		if (syscall(SYS_fsconfig, fsfd, FSCONFIG_SET_STRING, "lowerdir+", layer, 0) < 0)
			goto out;
	}
	*what = "overlay source";
	if (syscall(SYS_fsconfig, fsfd, FSCONFIG_SET_STRING, "source", "overlay", 0) < 0)
		goto out;
	*what = "overlay upperdir";
	if (syscall(SYS_fsconfig, fsfd, FSCONFIG_SET_STRING, "upperdir", upper, 0) < 0)
		goto out;
	*what = "overlay workdir";
	if (syscall(SYS_fsconfig, fsfd, FSCONFIG_SET_STRING, "workdir", work, 0) < 0)
		goto out;
	*what = "create the overlay";
	if (syscall(SYS_fsconfig, fsfd, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0)
		goto out;
	*what = "fsmount the overlay";
	mnt = (int)syscall(SYS_fsmount, fsfd, FSMOUNT_CLOEXEC, 0);
	if (mnt < 0)
		goto out;
	*what = "attach the overlay";
	r = (int)syscall(SYS_move_mount, mnt, "", AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH);
out:;
	int saved = errno;
	if (mnt >= 0)
		close(mnt);
	if (fsfd >= 0)
		close(fsfd);
	for (size_t i = 0; fds && i < n; i++)
		if (fds[i] >= 0)
			close(fds[i]);
	free(fds);
	free(parts);
	free(spec);
	errno = saved;
	return r;
}

/*
 * The root of a user-namespaced container, mounted at target in the host's
 * mount namespace: overlay (see mount_overlay_layers), or bind SRC: an
 * idmapped bind of SRC, writes land 0-based on disk. On failure *what names
 * the step.
 */
static int mount_idmapped_root(const char *overlay, const char *bind, const char *target, int userns,
			       const struct list *uidmap, const struct list *gidmap, const char **what)
{
	if (!bind)
		return mount_overlay_layers(overlay, target, userns, uidmap, gidmap, what);
	*what = "idmapped mount of the root directory (does its filesystem support idmapped mounts?)";
	int tree = idmapped_clone(bind, userns, false);
	if (tree < 0)
		return -1;
	*what = "attach the idmapped root";
	int r = (int)syscall(SYS_move_mount, tree, "", AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH);
	int saved = errno;
	close(tree);
	errno = saved;
	return r;
}

/* mount-root: what --host-overlay / --host-bind do for run, for a root mounted before a restore. */
static int cmd_mount_root(int argc, char **argv)
{
	struct args a = {argc, argv, 0};
	struct list uidmap = {0}, gidmap = {0};
	const char *v, *overlay = NULL, *bind = NULL, *target = NULL;
	for (; a.i < argc; a.i++) {
		if ((v = value(&a, "--uidmap")))
			add_idmap(&uidmap, "--uidmap", v);
		else if ((v = value(&a, "--gidmap")))
			add_idmap(&gidmap, "--gidmap", v);
		else if ((v = value(&a, "--overlay")))
			overlay = v;
		else if ((v = value(&a, "--bind")))
			bind = v;
		else if (argv[a.i][0] != '-' && !target)
			target = argv[a.i];
		else
			usage_error("mount-root: unknown option '%s'", argv[a.i]);
	}
	if (!target || !uidmap.n || !gidmap.n || !overlay == !bind)
		usage_error("mount-root: needs --uidmap, --gidmap, one of --overlay and --bind, and TARGET");
	const char *what = "user namespace for the id mapping";
	int userns = userns_fd_for(&uidmap, &gidmap);
	if (userns < 0 || mount_idmapped_root(overlay, bind, target, userns, &uidmap, &gidmap, &what) < 0) {
		fprintf(stderr, "osvirt-helper mount-root %s: %s: %s\n", target, what, strerror(errno));
		return 1;
	}
	return 0;
}

static int cmd_run(int argc, char **argv)
{
	struct run_cfg c = {0};
	parse_run(&c, argc, argv);

	/* Protocol step 1: outlive the daemon, own our children, be findable. */
	close_range(3, ~0U, 0);
	setsid(); /* EPERM if the caller already made us a session leader: fine */
	ignore_signal(SIGPIPE);
	ignore_signal(SIGHUP);
	ignore_signal(SIGTERM); /* only the init's exit ends the monitor */
	if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) < 0)
		monitor_fail("PR_SET_CHILD_SUBREAPER: %s", strerror(errno));
	g_statefd = open(c.state, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (g_statefd < 0)
		monitor_fail("open state dir %s: %s", c.state, strerror(errno));
	unlinkat(g_statefd, "exit", 0); /* a previous run's exit file must not describe this one */
	char num[32];
	snprintf(num, sizeof num, "%d\n", getpid());
	if (write_file_atomic(g_statefd, "monitor.pid", num) < 0)
		monitor_fail("write monitor.pid: %s", strerror(errno));

	/*
	 * --host-overlay: mount the copy-on-write root here, in the host's mount
	 * namespace where the daemon (and CRIU) see it, instead of the daemon
	 * running mount(8) first. The monitor unmounts it when the init is gone
	 * (and the daemon removes whatever a killed monitor left).
	 */
	/*
	 * A user-namespaced container sees its root and its bind mounts through
	 * idmapped mounts: what host root owns, its root owns. The init inherits
	 * the detached bind copies made here and attaches them (apply_mount); a
	 * source whose filesystem cannot be idmapped is bound plainly instead.
	 */
	int userns = -1;
	if (c.ns & CLONE_NEWUSER) {
		userns = userns_fd_for(&c.uidmap, &c.gidmap);
		if (userns < 0)
			monitor_fail("user namespace for the id mapping: %s", strerror(errno));
		for (size_t i = 0; i < c.nmounts; i++) {
			struct mnt *m = &c.mounts[i];
			if (!m->bind)
				continue;
			m->tree = idmapped_clone(m->src, userns, m->rec);
			m->has_tree = m->tree >= 0;
		}
	}
	if (c.host_overlay || c.host_bind) {
		if (!c.rootfs)
			monitor_fail("--host-overlay and --host-bind need --rootfs");
		if (c.ns & CLONE_NEWUSER) {
			const char *what = NULL;
			if (mount_idmapped_root(c.host_overlay, c.host_bind, c.rootfs, userns, &c.uidmap, &c.gidmap, &what) < 0)
				monitor_fail("rootfs %s: %s: %s", c.rootfs, what, strerror(errno));
		} else {
			const char *what = NULL;
			if (mount_overlay_layers(c.host_overlay, c.rootfs, -1, NULL, NULL, &what) < 0)
				monitor_fail("--host-overlay %s on %s: %s: %s", c.host_overlay, c.rootfs, what, strerror(errno));
		}
		/* Absolute: the monitor later works from the state dir. */
		g_host_mount = realpath(c.rootfs, NULL);
	}
	if (userns >= 0)
		close(userns);
	if (c.rootfs) {
		char *real = realpath(c.rootfs, NULL);
		struct stat st;
		if (!real || stat(real, &st) < 0)
			monitor_fail("rootfs %s: %s", c.rootfs, strerror(errno));
		if (!S_ISDIR(st.st_mode))
			monitor_fail("rootfs %s: %s", c.rootfs, strerror(ENOTDIR));
		c.rootfs = real;
	}
	/*
	 * Joined namespaces are entered here, with the host's privileges, and the
	 * init is born in them: a user-namespaced init could not setns into a peer's
	 * namespace (owned by the peer's user namespace) itself.
	 */
	for (size_t i = 0; i < c.njoins; i++) {
		int fd = open(strchr(c.joins[i].spec, ':') + 1, O_RDONLY | O_CLOEXEC);
		if (fd < 0 || setns(fd, c.joins[i].type) < 0)
			monitor_fail("join %s: %s", c.joins[i].spec, strerror(errno));
		close(fd);
	}
	int master = -1;
	if (c.p.tty) {
		master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
		if (master < 0 || grantpt(master) < 0 || unlockpt(master) < 0)
			monitor_fail("allocate pty: %s", strerror(errno));
		c.console_fd = ioctl(master, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC);
		if (c.console_fd < 0 || ptsname_r(master, c.console_name, sizeof c.console_name) != 0)
			monitor_fail("open pty slave: %s", strerror(errno));
		struct winsize ws = {.ws_row = 24, .ws_col = 80};
		ioctl(master, TIOCSWINSZ, &ws);
		/* The container's root must be able to reopen its /dev/console. */
		long uid = outer_id(&c.uidmap, 0), gid = outer_id(&c.gidmap, 0);
		if ((c.ns & CLONE_NEWUSER) && fchown(c.console_fd, (uid_t)uid, (gid_t)gid) < 0)
			monitor_fail("chown console: %s", strerror(errno));
	}
	int syncp[2], joinedp[2], errp[2], logp[2] = {-1, -1};
	if (pipe2(syncp, O_CLOEXEC) < 0 || pipe2(joinedp, O_CLOEXEC) < 0 || pipe2(errp, O_CLOEXEC) < 0 ||
	    (!c.p.tty && pipe2(logp, O_CLOEXEC) < 0))
		monitor_fail("pipe: %s", strerror(errno));
	/* Blocked before clone so an early exit of the init is still queued for the signalfd. */
	sigset_t chld;
	sigemptyset(&chld);
	sigaddset(&chld, SIGCHLD);
	sigprocmask(SIG_BLOCK, &chld, NULL);

	struct cgroup_join cg;
	const char *bad = NULL;
	if (cgroup_join_open(&c.p.cgroups, &cg, &bad) < 0)
		monitor_fail("cgroup %s: %s", bad, strerror(errno));
	c.cg = &cg;
	/*
	 * clone behaves like fork() with namespace flags. The cgroup ns is left out
	 * on purpose: the child unshares it once it sits in its cgroups.
	 */
	int flags = c.ns & ~CLONE_NEWCGROUP;
	pid_t pid = clone_into((unsigned long)flags, &cg);
	if (pid < 0)
		monitor_fail("clone: %s", strerror(errno));
	if (pid == 0) {
		close(syncp[1]);
		close(joinedp[0]);
		close(errp[0]);
		if (logp[0] >= 0)
			close(logp[0]);
		if (master >= 0)
			close(master);
		run_child(&c, syncp[0], joinedp[1], errp[1], logp[1]);
	}
	g_child = pid;
	close(syncp[0]);
	close(errp[1]);
	if (logp[1] >= 0)
		close(logp[1]);
	if (c.console_fd >= 0)
		close(c.console_fd);

	cgroup_join_close(&cg);
	close(joinedp[1]);
	char joined;
	if (read(joinedp[0], &joined, 1) != 1) {
		char err[1024];
		ssize_t n = read_full(errp[0], err, sizeof err - 1);
		err[n > 0 ? n : 0] = '\0';
		monitor_fail("%s", n > 1 ? err + 1 : "the init exited before joining its cgroups");
	}
	close(joinedp[0]);

	/* Protocol step 2: id maps while the child waits, then ask the caller. */
	char path[PATH_MAX];
	if (c.ns & CLONE_NEWUSER) {
		snprintf(path, sizeof path, "/proc/%d/uid_map", pid);
		if (write_file(path, join_lines(&c.uidmap)) < 0)
			monitor_fail("write uid_map: %s", strerror(errno));
		snprintf(path, sizeof path, "/proc/%d/gid_map", pid);
		if (write_file(path, join_lines(&c.gidmap)) < 0)
			monitor_fail("write gid_map: %s", strerror(errno));
	}
	if (c.veth.host) {
		const char *what = NULL;
		if (veth_create(&c.veth, pid, &what) < 0)
			monitor_fail("veth %s: %s", what, strerror(errno));
		g_host_veth = c.veth.host;
	}
	/* The child sets up its root, mounts and identity now, in parallel with the caller's configuration. */
	if (write(syncp[1], "s", 1) != 1)
		monitor_fail("signal the child: %s", strerror(errno));
	if (fchdir(g_statefd) < 0)
		monitor_fail("chdir %s: %s", c.state, strerror(errno));
	struct monitor *m = monitor_new(pid, master, logp[0], c.p.tty);
	if (emit("{\"event\":\"created\",\"initPid\":%d,\"monitorPid\":%d}", pid, getpid()) < 0)
		monitor_fail("stdout: %s", strerror(errno));

	char line[64];
	size_t len = 0;
	while (len < sizeof line - 1 && read(STDIN_FILENO, line + len, 1) == 1 && line[len] != '\n')
		len++;
	line[len] = '\0';
	if (strcmp(line, "go")) {
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		unmount_host_mount();
		remove_state_files();
		return 1;
	}

	/*
	 * Protocol step 3: release the child; its error pipe closes empty if exec
	 * worked. A child whose setup failed is gone already (EPIPE): its error
	 * pipe says why.
	 */
	bool released = write(syncp[1], "g", 1) == 1;
	int saved = errno;
	close(syncp[1]);
	char err[1024];
	ssize_t n = read_full(errp[0], err, sizeof err - 1);
	close(errp[0]);
	if (n > 0) {
		err[n] = '\0';
		monitor_fail("%s", err + 1);
	}
	if (!released)
		monitor_fail("release child: %s", strerror(saved));
	if (emit("{\"event\":\"started\"}") < 0)
		fprintf(stderr, "stdout: %s\n", strerror(errno)); /* the container runs anyway */

	/* Protocol step 4: detach from the caller's pipes and serve. */
	g_child = -1;
	monitor_serve(m);
}

/* ------------------------------------------------------------------ exec */

NORETURN FORMAT(1, 2) static void exec_fail(const char *fmt, ...)
{
	int saved = errno;
	va_list ap;
	va_start(ap, fmt);
	fputs("osvirt-helper exec: ", stderr);
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, ": %s\n", strerror(saved));
	va_end(ap);
	exit(125);
}

/* Relays the pty (if any), forwards signals, and returns the child's exit code. */
static int exec_wait(pid_t child, int master, int sigfd, int resize_fd)
{
	char in[4096], rbuf[128], out[8192];
	size_t inlen = 0, inoff = 0, rlen = 0;
	bool stdin_open = master >= 0, master_open = master >= 0;
	int status = 0;
	if (master >= 0)
		fcntl(master, F_SETFL, O_NONBLOCK);
	for (;;) {
		struct pollfd pf[4] = {{.fd = sigfd, .events = POLLIN}};
		int n = 1, im = -1, ii = -1, ir = -1;
		if (master_open) {
			im = n;
			pf[n++] = (struct pollfd){.fd = master, .events = POLLIN | (inlen ? POLLOUT : 0)};
		}
		if (stdin_open && !inlen) {
			ii = n;
			pf[n++] = (struct pollfd){.fd = STDIN_FILENO, .events = POLLIN};
		}
		if (resize_fd >= 0) {
			ir = n;
			pf[n++] = (struct pollfd){.fd = resize_fd, .events = POLLIN};
		}
		if (poll(pf, (nfds_t)n, -1) < 0) {
			if (errno == EINTR)
				continue;
			exec_fail("poll");
		}
		if (pf[0].revents) {
			struct signalfd_siginfo si;
			while (read(sigfd, &si, sizeof si) == sizeof si)
				if (si.ssi_signo != SIGCHLD)
					kill(child, (int)si.ssi_signo);
			if (waitpid(child, &status, WNOHANG) == child)
				break;
		}
		if (im >= 0 && (pf[im].revents & (POLLIN | POLLHUP | POLLERR))) {
			ssize_t r = read(master, out, sizeof out);
			if (r > 0)
				write_all(STDOUT_FILENO, out, (size_t)r);
			else if (r == 0 || errno != EAGAIN)
				master_open = false; /* EIO: no slave left */
		}
		if (im >= 0 && master_open && (pf[im].revents & POLLOUT) && inlen) {
			ssize_t w = write(master, in + inoff, inlen);
			if (w > 0) {
				inoff += (size_t)w;
				inlen -= (size_t)w;
			} else if (w < 0 && errno != EAGAIN) {
				inlen = 0;
			}
		}
		if (ii >= 0 && pf[ii].revents) {
			ssize_t r = read(STDIN_FILENO, in, sizeof in);
			if (r <= 0)
				stdin_open = false; /* keep relaying output until the child exits */
			else {
				inlen = (size_t)r;
				inoff = 0;
			}
		}
		if (ir >= 0 && pf[ir].revents) {
			ssize_t r = read(resize_fd, rbuf + rlen, sizeof rbuf - 1 - rlen);
			if (r <= 0) {
				resize_fd = -1;
				continue;
			}
			rlen += (size_t)r;
			rbuf[rlen] = '\0';
			char *nl;
			while ((nl = strchr(rbuf, '\n'))) {
				unsigned rows, cols;
				*nl = '\0';
				if (sscanf(rbuf, "%u %u", &rows, &cols) == 2) {
					struct winsize ws = {.ws_row = (unsigned short)rows, .ws_col = (unsigned short)cols};
					ioctl(master, TIOCSWINSZ, &ws);
				}
				rlen -= (size_t)(nl + 1 - rbuf);
				memmove(rbuf, nl + 1, rlen + 1);
			}
			if (rlen == sizeof rbuf - 1)
				rlen = 0;
		}
	}
	if (master_open) {
		ssize_t r;
		while ((r = read(master, out, sizeof out)) > 0)
			write_all(STDOUT_FILENO, out, (size_t)r);
	}
	return WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status);
}

static int cmd_exec(int argc, char **argv)
{
	struct proc_cfg p = {.cwd = "/"};
	struct args a = {argc, argv, 0};
	const char *v;
	unsigned long pid = 0;
	int resize_fd = -1, ready_fd = -1;
	for (; a.i < argc && strcmp(argv[a.i], "--"); a.i++) {
		if (parse_proc_opt(&a, &p)) {
		} else if ((v = value(&a, "--pid"))) {
			pid = parse_ulong(v, "--pid");
		} else if ((v = value(&a, "--resize-fd"))) {
			resize_fd = (int)parse_ulong(v, "--resize-fd");
		} else if ((v = value(&a, "--ready-fd"))) {
			/* Gets one byte once the command runs in the container: a caller can tell "it started" from "it could not". */
			ready_fd = (int)parse_ulong(v, "--ready-fd");
		} else {
			usage_error("exec: unknown option '%s'", argv[a.i]);
		}
	}
	p.argv = parse_command(&a);
	if (!pid)
		usage_error("exec: --pid is required");
	if (resize_fd >= 0 && !p.tty)
		usage_error("exec: --resize-fd needs --tty");
	p.cap_last = read_cap_last();
	ignore_signal(SIGPIPE);

	char path[PATH_MAX];
	/* Opened here, in the host's mount ns; the child joins them itself (see cgroup_join_self). */
	struct cgroup_join cg;
	const char *bad = NULL;
	if (cgroup_join_open(&p.cgroups, &cg, &bad) < 0)
		exec_fail("cgroup %s", bad);
	/* All ns fds are opened first: after joining the mount ns, /proc/PID may not be the same. */
	int fds[NNS];
	for (size_t i = 0; i < NNS; i++) {
		struct stat theirs, ours;
		char self[64];
		snprintf(path, sizeof path, "/proc/%lu/ns/%s", pid, namespaces[i].name);
		snprintf(self, sizeof self, "/proc/self/ns/%s", namespaces[i].name);
		fds[i] = -1;
		if (stat(path, &theirs) < 0)
			exec_fail("%s", path);
		if (stat(self, &ours) == 0 && ours.st_ino == theirs.st_ino && ours.st_dev == theirs.st_dev)
			continue; /* already shared (setns into our own user ns would even fail) */
		if ((fds[i] = open(path, O_RDONLY | O_CLOEXEC)) < 0)
			exec_fail("open %s", path);
	}
	/*
	 * The cgroup ns is left to the child: clone3(CLONE_INTO_CGROUP) needs the
	 * parent's cgroup inside its cgroup ns, and the child joins the cgroups first.
	 */
	/*
	 * The user ns is joined last: until then we hold the host's privileges,
	 * which may enter a namespace the container shares with another one
	 * (joined network or IPC) and that its own user ns does not own.
	 */
	int cgns = -1;
	for (size_t n = 0; n < NNS; n++) {
		size_t i = (n + 1) % NNS; /* namespaces[0] is user */
		if (fds[i] < 0)
			continue;
		if (namespaces[i].flag == CLONE_NEWCGROUP) {
			cgns = fds[i];
			continue;
		}
		if (setns(fds[i], namespaces[i].flag) < 0)
			exec_fail("setns %s", namespaces[i].name);
		close(fds[i]);
		if (namespaces[i].flag == CLONE_NEWUSER) {
			/* Creating a child in a cgroup checks the creator's credentials, now the user ns's: the child joins instead. */
			if (cg.v2dir >= 0)
				close(cg.v2dir);
			cg.v2dir = -1;
			/* Like nsenter: in a joined user ns, become its root unless --user says otherwise. */
			if (!p.set_user) {
				p.set_user = true;
				p.uid = 0;
				p.gid = 0;
			}
		}
	}
	int master = -1, slave = -1;
	if (p.tty) {
		/* The container's own devpts: the pty belongs to the container, like any it opens. */
		master = open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC);
		if (master < 0 || unlockpt(master) < 0)
			exec_fail("open /dev/ptmx in the container");
		slave = ioctl(master, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC);
		if (slave < 0)
			exec_fail("open pty slave");
		struct winsize ws = {.ws_row = 24, .ws_col = 80};
		if (!isatty(STDIN_FILENO) || ioctl(STDIN_FILENO, TIOCGWINSZ, &ws) < 0)
			ws = (struct winsize){.ws_row = 24, .ws_col = 80};
		ioctl(master, TIOCSWINSZ, &ws);
	}
	int errp[2];
	if (pipe2(errp, O_CLOEXEC) < 0)
		exec_fail("pipe");
	sigset_t mask;
	sigemptyset(&mask);
	int forwarded[] = {SIGCHLD, SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2};
	for (size_t i = 0; i < sizeof forwarded / sizeof forwarded[0]; i++)
		sigaddset(&mask, forwarded[i]);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	int sigfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
	if (sigfd < 0)
		exec_fail("signalfd");
	/* fork() after setns(pid): only children enter the pid namespace. */
	pid_t child = clone_into(0, &cg);
	if (child < 0)
		exec_fail("fork");
	if (child == 0) {
		g_errfd = errp[1];
		if (cgroup_join_self(&cg) < 0)
			child_fail("join the container's cgroups");
		if (cgns >= 0 && setns(cgns, CLONE_NEWCGROUP) < 0)
			child_fail("setns cgroup");
		/* Own session: CRIU can only dump sessions that start inside the container. */
		if (setsid() < 0)
			child_fail("setsid");
		if (p.tty) {
			if (ioctl(slave, TIOCSCTTY, 0) < 0)
				child_fail("set controlling terminal");
			for (int i = 0; i < 3; i++)
				if (dup2(slave, i) < 0)
					child_fail("dup2 pty");
		}
		if (close_range(3, ~0U, CLOSE_RANGE_CLOEXEC) < 0)
			child_fail("close_range");
		become_process(&p);
	}
	close(errp[1]);
	cgroup_join_close(&cg);
	if (cgns >= 0)
		close(cgns);
	if (slave >= 0)
		close(slave);
	char err[1024];
	ssize_t n = read_full(errp[0], err, sizeof err - 1);
	if (n > 0) {
		err[n] = '\0';
		waitpid(child, NULL, 0);
		fprintf(stderr, "osvirt-helper exec: %s\n", err + 1);
		return (unsigned char)err[0];
	}
	close(errp[0]);
	if (ready_fd >= 0) {
		if (write(ready_fd, "1", 1) != 1)
			fprintf(stderr, "osvirt-helper exec: ready fd: %s\n", strerror(errno));
		close(ready_fd);
	}
	return exec_wait(child, master, sigfd, resize_fd);
}

/* ------------------------------------------------------------------ criu-swrk and restore */

/* Options shared by criu-swrk and restore: how CRIU is started. */
struct swrk_cfg {
	int keep[64];                   /* caller's descriptors criu inherits at the same number */
	size_t nkeep;
	const char *run_dir;            /* bind-mounted on /run in criu's private mount ns */
	struct list cgroups;            /* criu (and what it creates) starts in these */
	struct {
		int from, to;           /* fd made by the helper, and its number in criu */
	} give[2];
	size_t ngive;
	char **cmd;
};

static bool parse_swrk_opt(struct args *a, struct swrk_cfg *c)
{
	const char *v;
	if ((v = value(a, "--keep-fd"))) {
		if (c->nkeep == sizeof c->keep / sizeof c->keep[0])
			usage_error("too many --keep-fd");
		c->keep[c->nkeep++] = (int)parse_ulong(v, "--keep-fd");
	} else if ((v = value(a, "--run-dir"))) {
		if (v[0] != '/')
			usage_error("--run-dir %s: expected an absolute path", v);
		c->run_dir = v;
	} else if ((v = value(a, "--cgroup"))) {
		list_add(&c->cgroups, v);
	} else {
		return false;
	}
	return true;
}

/*
 * Starts `CMD swrk <fd>` on one end of a SOCK_SEQPACKET socketpair; returns the
 * other end. With run_dir, criu gets a private mount namespace whose /run is
 * run_dir: CRIU keeps its kernel-feature cache (/run/criu.kdat) only on a
 * tmpfs, and the host's /run may not be one.
 */
static int swrk_spawn(struct swrk_cfg *c, pid_t *child_out)
{
	size_t ncmd = 0;
	while (c->cmd[ncmd])
		ncmd++;
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
		perror("osvirt-helper: socketpair");
		return -1;
	}
	/* A seqpacket message must fit the send buffer whole; room for MAX_FRAME both ways. */
	int size = 2 * MAX_FRAME;
	for (int i = 0; i < 2; i++) {
		if (setsockopt(sv[i], SOL_SOCKET, SO_SNDBUFFORCE, &size, sizeof size) < 0)
			setsockopt(sv[i], SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
		if (setsockopt(sv[i], SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size) < 0)
			setsockopt(sv[i], SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
	}
	/* CRIU (and the tree it restores) starts in these cgroups, joined as in `run`. */
	struct cgroup_join cg;
	const char *bad = NULL;
	if (cgroup_join_open(&c->cgroups, &cg, &bad) < 0) {
		fprintf(stderr, "osvirt-helper: cgroup %s: %s\n", bad, strerror(errno));
		return -1;
	}
	pid_t child = clone_into(0, &cg);
	if (child < 0) {
		perror("osvirt-helper: fork");
		cgroup_join_close(&cg);
		return -1;
	}
	if (child == 0) {
		char fdnum[16];
		snprintf(fdnum, sizeof fdnum, "%d", sv[1]);
		char **args = calloc(ncmd + 3, sizeof *args);
		memcpy(args, c->cmd, ncmd * sizeof *args);
		args[ncmd] = "swrk";
		args[ncmd + 1] = fdnum;
		if (cgroup_join_self(&cg) < 0) {
			fprintf(stderr, "osvirt-helper: join the cgroups: %s\n", strerror(errno));
			_exit(126);
		}
		if (c->run_dir && (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_SLAVE, NULL) < 0 ||
				   mount(c->run_dir, "/run", NULL, MS_BIND, NULL) < 0)) {
			fprintf(stderr, "osvirt-helper: private /run for criu from %s: %s\n", c->run_dir, strerror(errno));
			_exit(126);
		}
		/* stdin/stdout carry the frames: CRIU must neither read nor write them. */
		int null = open("/dev/null", O_RDONLY);
		if (null < 0 || dup2(null, 0) < 0 || dup2(2, 1) < 0)
			_exit(127);
		close(null);
		for (size_t i = 0; i < c->ngive; i++) {
			if (c->give[i].from == c->give[i].to)
				fcntl(c->give[i].to, F_SETFD, 0);
			else if (dup2(c->give[i].from, c->give[i].to) < 0)
				_exit(127);
		}
		close_range(3, ~0U, CLOSE_RANGE_CLOEXEC);
		fcntl(sv[1], F_SETFD, 0);
		for (size_t i = 0; i < c->nkeep; i++)
			fcntl(c->keep[i], F_SETFD, 0);
		for (size_t i = 0; i < c->ngive; i++)
			fcntl(c->give[i].to, F_SETFD, 0);
		signal(SIGPIPE, SIG_DFL);
		sigset_t none;
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		execvp(args[0], args);
		fprintf(stderr, "osvirt-helper: exec %s: %s\n", args[0], strerror(errno));
		_exit(errno == ENOENT ? 127 : 126);
	}
	cgroup_join_close(&cg);
	close(sv[1]);
	*child_out = child;
	return sv[0];
}

typedef void (*frame_cb)(const uint8_t *buf, size_t len, void *arg);

/*
 * Relays CRIU's messages to stdout and the caller's frames (uint32 LE length +
 * payload) from stdin until CRIU closes its end. Returns 0, or 1 on a broken frame.
 */
static int swrk_relay(int sock, frame_cb on_frame, void *arg)
{
	uint8_t *inbuf = malloc(MAX_FRAME), *outbuf = malloc(MAX_FRAME + 4);
	bool stdin_open = true;
	int rc = 0;
	for (;;) {
		struct pollfd pf[2] = {{.fd = sock, .events = POLLIN}, {.fd = STDIN_FILENO, .events = POLLIN}};
		if (poll(pf, stdin_open ? 2 : 1, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (pf[0].revents) {
			ssize_t n = recv(sock, outbuf + 4, MAX_FRAME, MSG_TRUNC);
			if (n < 0 && (errno == EINTR || errno == EAGAIN))
				continue;
			if (n <= 0)
				break; /* CRIU closed its end or exited */
			if (n > MAX_FRAME) {
				fprintf(stderr, "osvirt-helper: criu message of %zd bytes exceeds %d\n", n, MAX_FRAME);
				rc = 1;
				break;
			}
			uint32_t len = (uint32_t)n;
			if (on_frame)
				on_frame(outbuf + 4, len, arg);
			for (int i = 0; i < 4; i++)
				outbuf[i] = (uint8_t)(len >> (8 * i));
			if (write_all(STDOUT_FILENO, outbuf, len + 4) < 0)
				break; /* caller gone: closing the socket makes CRIU stop */
		}
		if (stdin_open && pf[1].revents) {
			uint8_t hdr[4];
			ssize_t r = read_full(STDIN_FILENO, hdr, 4);
			if (r == 0) {
				stdin_open = false;
				shutdown(sock, SHUT_WR); /* CRIU's swrk loop ends on EOF */
				continue;
			}
			uint32_t len = (uint32_t)hdr[0] | (uint32_t)hdr[1] << 8 | (uint32_t)hdr[2] << 16 | (uint32_t)hdr[3] << 24;
			if (r != 4 || len > MAX_FRAME || read_full(STDIN_FILENO, inbuf, len) != (ssize_t)len) {
				fprintf(stderr, "osvirt-helper: truncated or oversized frame on stdin\n");
				rc = 1;
				break;
			}
			if (len == 0) /* a seqpacket reader could not tell an empty message from EOF */
				fprintf(stderr, "osvirt-helper: empty frame ignored\n");
			else if (send(sock, inbuf, len, 0) < 0)
				fprintf(stderr, "osvirt-helper: send: %s\n", strerror(errno));
		}
	}
	free(inbuf);
	free(outbuf);
	return rc;
}

static int wait_status(pid_t child)
{
	int status;
	while (waitpid(child, &status, 0) < 0)
		if (errno != EINTR)
			return 1;
	return WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status);
}

static int cmd_criu_swrk(int argc, char **argv)
{
	struct args a = {argc, argv, 0};
	struct swrk_cfg c = {0};
	for (; a.i < argc && strcmp(argv[a.i], "--"); a.i++)
		if (!parse_swrk_opt(&a, &c))
			usage_error("criu-swrk: unknown option '%s'", argv[a.i]);
	c.cmd = parse_command(&a);
	ignore_signal(SIGPIPE);
	pid_t child;
	int sock = swrk_spawn(&c, &child);
	if (sock < 0)
		return 1;
	int rc = swrk_relay(sock, NULL, NULL);
	close(sock);
	int status = wait_status(child);
	return rc ? rc : status;
}

/*
 * Just enough protobuf to read criu_resp {1: type, 2: success, 4: restore {1: pid}}
 * from CRIU's answer: the restore helper must know the restored init by itself.
 */
static bool pb_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
	*v = 0;
	for (int shift = 0; *p < end && shift < 64; shift += 7) {
		uint8_t b = *(*p)++;
		*v |= (uint64_t)(b & 0x7f) << shift;
		if (!(b & 0x80))
			return true;
	}
	return false;
}

/* Calls fn(field, wire type, varint value or length, payload) for each field; false when malformed. */
static bool pb_fields(const uint8_t *p, const uint8_t *end, void (*fn)(uint64_t, int, uint64_t, const uint8_t *, void *), void *arg)
{
	while (p < end) {
		uint64_t key, v;
		if (!pb_varint(&p, end, &key))
			return false;
		int wt = (int)(key & 7);
		const uint8_t *payload = NULL;
		if (wt == 0) {
			if (!pb_varint(&p, end, &v))
				return false;
		} else if (wt == 2) {
			if (!pb_varint(&p, end, &v) || v > (uint64_t)(end - p))
				return false;
			payload = p;
			p += v;
		} else if (wt == 1 || wt == 5) {
			v = wt == 1 ? 8 : 4;
			if (v > (uint64_t)(end - p))
				return false;
			p += v;
		} else {
			return false;
		}
		fn(key >> 3, wt, v, payload, arg);
	}
	return true;
}

#define CRIU_REQ_RESTORE 2

struct restore_answer {
	int64_t type, success, pid;
	bool seen;                      /* a RESTORE answer arrived */
};

static void restore_pid_field(uint64_t field, int wt, uint64_t v, const uint8_t *payload, void *arg)
{
	(void)payload;
	if (field == 1 && wt == 0)
		((struct restore_answer *)arg)->pid = (int32_t)v;
}

static void restore_resp_field(uint64_t field, int wt, uint64_t v, const uint8_t *payload, void *arg)
{
	struct restore_answer *r = arg;
	if (field == 1 && wt == 0)
		r->type = (int64_t)v;
	else if (field == 2 && wt == 0)
		r->success = (int64_t)v;
	else if (field == 4 && wt == 2)
		pb_fields(payload, payload + v, restore_pid_field, r);
}

static void on_restore_frame(const uint8_t *buf, size_t len, void *arg)
{
	struct restore_answer one = {.type = -1, .success = 0, .pid = 0};
	if (!pb_fields(buf, buf + len, restore_resp_field, &one) || one.type != CRIU_REQ_RESTORE)
		return;
	struct restore_answer *r = arg;
	*r = one;
	r->seen = true;
}

/*
 * restore: like criu-swrk for one RESTORE request, but as the monitor-to-be. It
 * is a subreaper and asks for the tree as its sibling-child (rst_sibling), gives
 * CRIU the console (a pty slave) or the output pipe to inherit, and once CRIU
 * answered success it monitors the restored init exactly as run monitors a
 * started one. On failure it leaves no state files and exits with criu's status.
 */
static int cmd_restore(int argc, char **argv)
{
	struct args a = {argc, argv, 0};
	struct swrk_cfg c = {0};
	const char *v, *state = NULL;
	int tty_fd = -1, log_fd = -1;
	long tty_uid = -1, tty_gid = -1;
	for (; a.i < argc && strcmp(argv[a.i], "--"); a.i++) {
		if (parse_swrk_opt(&a, &c)) {
		} else if ((v = value(&a, "--tty-owner"))) {
			if (sscanf(v, "%ld:%ld", &tty_uid, &tty_gid) != 2 || tty_uid < 0 || tty_gid < 0)
				usage_error("--tty-owner %s: expected UID:GID", v);
		} else if ((v = value(&a, "--state"))) {
			state = v;
		} else if ((v = value(&a, "--tty-fd"))) {
			tty_fd = (int)parse_ulong(v, "--tty-fd");
		} else if ((v = value(&a, "--log-fd"))) {
			log_fd = (int)parse_ulong(v, "--log-fd");
		} else {
			usage_error("restore: unknown option '%s'", argv[a.i]);
		}
	}
	c.cmd = parse_command(&a);
	if (!state)
		usage_error("restore: --state is required");
	if ((tty_fd >= 0) == (log_fd >= 0))
		usage_error("restore: exactly one of --tty-fd and --log-fd");
	bool tty = tty_fd >= 0;
	int give = tty ? tty_fd : log_fd;
	if (give < 3)
		usage_error("restore: the fd given to criu must be 3 or above");
	for (size_t i = 0; i < c.nkeep; i++)
		if (c.keep[i] == give)
			usage_error("restore: fd %d is both --keep-fd and given to criu", give);

	g_frames_on_stdout = true;
	setsid();
	ignore_signal(SIGPIPE);
	ignore_signal(SIGHUP);
	if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) < 0) {
		perror("osvirt-helper restore: PR_SET_CHILD_SUBREAPER");
		return 1;
	}
	g_statefd = open(state, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (g_statefd < 0) {
		fprintf(stderr, "osvirt-helper restore: open state dir %s: %s\n", state, strerror(errno));
		return 1;
	}
	unlinkat(g_statefd, "exit", 0);
	unlinkat(g_statefd, "console-pty", 0);
	char num[32];
	snprintf(num, sizeof num, "%d\n", getpid());
	if (write_file_atomic(g_statefd, "monitor.pid", num) < 0) {
		fprintf(stderr, "osvirt-helper restore: write monitor.pid: %s\n", strerror(errno));
		return 1;
	}

	/* What the restored tree inherits: a pty slave (console) or a pipe's write end (output). */
	int master = -1, logpipe = -1, theirs = -1;
	if (tty) {
		char name[64];
		master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
		if (master < 0 || grantpt(master) < 0 || unlockpt(master) < 0 || ptsname_r(master, name, sizeof name) != 0) {
			fprintf(stderr, "osvirt-helper restore: allocate pty: %s\n", strerror(errno));
			return 1;
		}
		theirs = ioctl(master, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC);
		/* A user-namespaced container's root owns its console (CRIU sets the owner from inside). */
		if (theirs >= 0 && tty_uid >= 0 && fchown(theirs, (uid_t)tty_uid, (gid_t)tty_gid) < 0) {
			fprintf(stderr, "osvirt-helper restore: chown pty: %s\n", strerror(errno));
			return 1;
		}
		struct winsize ws = {.ws_row = 24, .ws_col = 80};
		ioctl(master, TIOCSWINSZ, &ws);
		/* For an external /dev/console bind mount: criu mounts what this names. */
		if (theirs < 0 || symlinkat(name, g_statefd, "console-pty") < 0) {
			fprintf(stderr, "osvirt-helper restore: pty slave %s: %s\n", name, strerror(errno));
			return 1;
		}
	} else {
		int p[2];
		if (pipe2(p, O_CLOEXEC) < 0) {
			perror("osvirt-helper restore: pipe");
			return 1;
		}
		logpipe = p[0];
		theirs = p[1];
	}
	c.give[0].from = theirs;
	c.give[0].to = give;
	c.ngive = 1;

	/* Blocked from now on: the restored init's exit stays pending for the monitor's signalfd. */
	sigset_t chld;
	sigemptyset(&chld);
	sigaddset(&chld, SIGCHLD);
	sigprocmask(SIG_BLOCK, &chld, NULL);
	pid_t criu;
	int sock = swrk_spawn(&c, &criu);
	/* Only criu holds it now: our copy would keep the pipe from ending. */
	close(theirs);
	if (sock < 0) {
		remove_state_files();
		return 1;
	}
	struct restore_answer answer = {0};
	int rc = swrk_relay(sock, on_restore_frame, &answer);
	close(sock);
	int status = wait_status(criu);
	/* CRIU opens the caller's descriptors through /proc/<our pid>/fd: closed only now. */
	for (size_t i = 0; i < c.nkeep; i++)
		close(c.keep[i]);
	bool ok = !rc && answer.seen && answer.success && answer.pid > 0;
	if (!ok) {
		unlinkat(g_statefd, "console-pty", 0);
		remove_state_files();
		if (answer.seen && answer.success && answer.pid > 0)
			kill(answer.pid, SIGKILL); /* restored, but the caller broke the protocol */
		return rc ? rc : status ? status : 1;
	}
	g_child = (pid_t)answer.pid; /* killed by monitor_fail: nothing would watch it */
	if (fchdir(g_statefd) < 0)
		monitor_fail("chdir %s: %s", state, strerror(errno));
	struct monitor *m = monitor_new((pid_t)answer.pid, master, logpipe, tty);
	g_child = -1;
	fprintf(stderr, "osvirt-helper restore: monitoring restored init %d\n", (int)answer.pid);
	monitor_serve(m);
}

/* Test peer for criu-swrk: echoes every message on the seqpacket fd given last. */
static int cmd_seqpacket_echo(int argc, char **argv)
{
	if (argc < 1)
		usage_error("seqpacket-echo: missing fd");
	int fd = (int)parse_ulong(argv[argc - 1], "seqpacket-echo");
	char *buf = malloc(MAX_FRAME);
	for (;;) {
		ssize_t n = recv(fd, buf, MAX_FRAME, MSG_TRUNC);
		if (n <= 0 || n > MAX_FRAME)
			return n < 0 || n > MAX_FRAME;
		if (send(fd, buf, (size_t)n, 0) < 0)
			return 1;
	}
}

/*
 * peercred FD: print the SO_PEERCRED of the connected unix socket at FD.
 * The daemon hands each accepted connection's socket to this (Node has no
 * getsockopt) to learn who is calling.
 */
/* ------------------------------------------------------------------ init */

/*
 * A jail's pid 1 (FreeBSD jails have no init; this stands in for the kernel's
 * bookkeeping of a jail's processes). It reaps orphans and exits, ending the
 * pid namespace, once no other process is left, unless the jail persists.
 * It starts out persisting, so the jail exists while it is being set up;
 * signals sent from outside the pid namespace control it (signals from inside
 * are ignored, as a jailed process cannot change its jail's parameters):
 *   SIGUSR1  clear persist: exit as soon as nothing else runs
 *   SIGUSR2  set persist again
 *   SIGTERM, SIGINT  sent on to every process of the jail; exit once they are gone
 *   others   sent on to every process of the jail
 * kill(-1, 0) from pid 1 reaches exactly the other processes of its pid
 * namespace, those that entered it from outside included, so no /proc scan is
 * needed. Build it static (osvirt-init) to run in a root without a libc.
 */
static int cmd_init(int argc, char **argv)
{
	(void)argv;
	if (argc != 0)
		usage_error("init takes no arguments");
	if (getpid() != 1)
		usage_error("init must be pid 1 of a pid namespace");
	sigset_t set;
	sigfillset(&set);
	sigdelset(&set, SIGSEGV);
	sigdelset(&set, SIGBUS);
	sigdelset(&set, SIGILL);
	sigdelset(&set, SIGFPE);
	sigprocmask(SIG_BLOCK, &set, NULL);
	int sfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
	if (sfd < 0) {
		perror("osvirt init: signalfd");
		return 1;
	}
	bool persist = true, stopping = false;
	for (;;) {
		struct pollfd pf = {.fd = sfd, .events = POLLIN};
		/* Processes that entered from outside send no SIGCHLD here when they end: look again now and then. */
		if (poll(&pf, 1, persist && !stopping ? -1 : 100) < 0 && errno != EINTR)
			return 1;
		struct signalfd_siginfo si;
		while (read(sfd, &si, sizeof si) == sizeof si) {
			int sig = (int)si.ssi_signo;
			bool outside = si.ssi_pid == 0 && (si.ssi_code == SI_USER || si.ssi_code == SI_QUEUE);
			if (sig == SIGCHLD || !outside)
				continue;
			if (sig == SIGUSR1)
				persist = false;
			else if (sig == SIGUSR2)
				persist = true;
			else {
				kill(-1, sig);
				if (sig == SIGTERM || sig == SIGINT)
					stopping = true;
			}
		}
		while (waitpid(-1, NULL, WNOHANG) > 0)
			;
		if ((!persist || stopping) && kill(-1, 0) < 0 && errno == ESRCH)
			return 0;
	}
}

/* ------------------------------------------------------------------ launcher */

#define MAX_LAUNCH_REQUEST (256 * 1024)
static char *g_argv0 = "osvirt-helper";

/* In the launcher's grandchild: read one request from the connection, become its `run` monitor. */
NORETURN static void serve_launch(int conn)
{
	uint32_t len = 0;
	char *buf = NULL;
	if (read_full(conn, &len, sizeof len) != (ssize_t)sizeof len || len == 0 || len > MAX_LAUNCH_REQUEST ||
	    !(buf = malloc(len + 1)) || read_full(conn, buf, len) != (ssize_t)len || buf[len - 1] != '\0')
		_exit(2);
	size_t n = 0;
	for (uint32_t i = 0; i < len; i++)
		n += buf[i] == '\0';
	char **args = calloc(n + 3, sizeof *args);
	if (!args)
		_exit(1);
	args[0] = g_argv0;
	args[1] = "run";
	for (size_t i = 0, off = 0; i < n; i++) {
		args[i + 2] = buf + off;
		off += strlen(buf + off) + 1;
	}
	/* The connection is this monitor's stdin and stdout: the start protocol runs over it. */
	if (dup2(conn, STDIN_FILENO) < 0 || dup2(conn, STDOUT_FILENO) < 0)
		_exit(1);
	close(conn);
	/* Exec'd again so that ps and /proc/PID/cmdline show what this monitor is. */
	execv("/proc/self/exe", args);
	fprintf(stderr, "osvirt-helper launcher: exec /proc/self/exe: %s\n", strerror(errno));
	_exit(1);
}

/*
 * launcher --socket PATH: start `run` monitors without the daemon forking
 * itself. A fork of the daemon (a large Node process) costs 1-2 ms and blocks
 * its event loop; a fork of this small process costs a tenth of that. Each
 * connection is one request: a 4-byte length in host byte order, then the
 * `run` arguments, each NUL-terminated. The monitor is a grandchild (its parent
 * exits at once, so init adopts it, as with any daemonized monitor) and speaks
 * the usual start protocol over the connection instead of stdin and stdout.
 * The launcher dies with the process that started it.
 */
static int cmd_launcher(int argc, char **argv)
{
	const char *path = NULL;
	struct args a = {argc, argv, 0};
	const char *v;
	for (; a.i < argc; a.i++) {
		if ((v = value(&a, "--socket")))
			path = v;
		else
			usage_error("launcher: unknown option '%s'", argv[a.i]);
	}
	if (!path)
		usage_error("launcher: --socket is required");
	if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0 || getppid() == 1)
		return 1;
	ignore_signal(SIGPIPE);
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	if (strlen(path) >= sizeof addr.sun_path)
		usage_error("launcher: socket path too long");
	strcpy(addr.sun_path, path);
	int l = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	unlink(path);
	if (l < 0 || bind(l, (struct sockaddr *)&addr, sizeof addr) < 0 || chmod(path, 0600) < 0 || listen(l, 128) < 0) {
		fprintf(stderr, "osvirt-helper launcher: %s: %s\n", path, strerror(errno));
		return 1;
	}
	printf("{\"event\":\"ready\"}\n");
	fflush(stdout);
	for (;;) {
		int conn = accept4(l, NULL, NULL, SOCK_CLOEXEC);
		if (conn < 0) {
			if (errno == EINTR || errno == ECONNABORTED || errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
				continue;
			fprintf(stderr, "osvirt-helper launcher: accept: %s\n", strerror(errno));
			return 1;
		}
		pid_t child = fork();
		if (child == 0) {
			close(l);
			prctl(PR_SET_PDEATHSIG, 0, 0, 0, 0);
			if (fork() == 0)
				serve_launch(conn);
			_exit(0);
		}
		close(conn);
		if (child > 0)
			waitpid(child, NULL, 0);
	}
}

static int cmd_peercred(int argc, char **argv)
{
	if (argc != 1)
		usage_error("peercred takes one file descriptor number");
	char *end;
	long fd = strtol(argv[0], &end, 10);
	if (*end || fd < 0 || fd > INT_MAX)
		usage_error("peercred: bad file descriptor '%s'", argv[0]);
	struct ucred cred;
	socklen_t len = sizeof cred;
	if (getsockopt((int)fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
		fprintf(stderr, "osvirt-helper peercred: getsockopt(SO_PEERCRED): %s\n", strerror(errno));
		return 1;
	}
	printf("uid=%u gid=%u pid=%d\n", cred.uid, cred.gid, cred.pid);
	return 0;
}

int main(int argc, char **argv)
{
	g_argv0 = argv[0];
	if (argc < 2)
		usage_error("missing subcommand");
	const char *cmd = argv[1];
	if (!strcmp(cmd, "version")) {
		puts("osvirt-helper " VERSION);
		return 0;
	}
	if (!strcmp(cmd, "--help") || !strcmp(cmd, "help")) {
		usage(stdout);
		return 0;
	}
	if (!strcmp(cmd, "run"))
		return cmd_run(argc - 2, argv + 2);
	if (!strcmp(cmd, "exec"))
		return cmd_exec(argc - 2, argv + 2);
	if (!strcmp(cmd, "criu-swrk"))
		return cmd_criu_swrk(argc - 2, argv + 2);
	if (!strcmp(cmd, "restore"))
		return cmd_restore(argc - 2, argv + 2);
	if (!strcmp(cmd, "mount-root"))
		return cmd_mount_root(argc - 2, argv + 2);
	if (!strcmp(cmd, "peercred"))
		return cmd_peercred(argc - 2, argv + 2);
	if (!strcmp(cmd, "launcher"))
		return cmd_launcher(argc - 2, argv + 2);
	if (!strcmp(cmd, "init"))
		return cmd_init(argc - 2, argv + 2);
	if (!strcmp(cmd, "seqpacket-echo"))
		return cmd_seqpacket_echo(argc - 2, argv + 2);
	usage_error("unknown subcommand '%s'", cmd);
}
