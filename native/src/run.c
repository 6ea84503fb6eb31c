// SPDX-License-Identifier: Apache-2.0
#define _GNU_SOURCE
#include "run.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include "idmap.h"
#include "monitor.h"
#include "sync.h"
#include "wire.h"

/*
 * Moves us into UTS and/or mount namespaces owned by a new user namespace that
 * belongs to root: the kernel grants the owner of a user namespace every
 * capability over what it owns, so any euid-0 process of the container may then
 * set the hostname (uts) or mount (mnt; only what a user namespace may mount)
 * without holding CAP_SYS_ADMIN over the host. The new mount namespace is a
 * copy made from inside that user namespace, so every existing mount is locked:
 * none can be unmounted to uncover what is below, nor made writable.
 */
static int enter_root_owned(int types, struct error *e)
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
		return err_sys(e, "socketpair");
	pid_t k = fork();
	if (k < 0)
		return err_sys(e, "fork");
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
		if (b == 1)
			errno = EPERM;
		return err_sys(e, "create root-owned namespaces (%s)",
			       b == 1   ? "user namespace"
			       : b == 2 ? "uts/mnt namespace"
					: "pass them back");
	}
	struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
	if (cm && cm->cmsg_type == SCM_RIGHTS)
		memcpy(fds, CMSG_DATA(cm), cm->cmsg_len - CMSG_LEN(0));
	for (size_t i = 0, n = 0; i < 2; i++) {
		if (!(types & order[i].type))
			continue;
		int fd = fds[n++];
		if (fd < 0 || setns(fd, order[i].type) < 0)
			return err_sys(e, "join the root-owned %s namespace", order[i].name);
		close(fd);
	}
	close(sp[0]);
	close(done[1]);
	waitpid(k, NULL, 0);
	if (chdir("/") < 0)
		return err_sys(e, "chdir /");
	return 0;
}

/* The init-to-be's setup between the monitor's "s" (id maps written) and its "g". */
static int setup_container(const struct run_cfg *c, int outfd, struct error *e)
{
	umask(022);
	/*
	 * The root is found while our ids are still the host's root (only our
	 * capabilities are the new user namespace's): the path to it may run
	 * through directories only root may enter, like the daemon's state dir.
	 */
	AUTO_FD rootfd = -1;
	if (c->rootfs && open_rootfs(c, &rootfd, e) < 0)
		return -1;
	/* Our ids are still the host's root, unmapped in the new user ns: become its root. */
	if ((c->ns & CLONE_NEWUSER) && (setgroups(0, NULL) < 0 || setresgid(0, 0, 0) < 0 || setresuid(0, 0, 0) < 0))
		return err_sys(e, "become root of the user namespace");
	/* Now that we are in the container's cgroups, they become our cgroup ns root. */
	if ((c->ns & CLONE_NEWCGROUP) && unshare(CLONE_NEWCGROUP) < 0)
		return err_sys(e, "unshare cgroup namespace");
	if (c->rootfs && setup_rootfs(c, rootfd, e) < 0)
		return -1;
	if (c->owned_ns && enter_root_owned(c->owned_ns, e) < 0)
		return -1;
	if (c->lo_up && loopback_up(e) < 0)
		return -1;
	if (c->veth.host && veth_configure_inside(&c->veth, e) < 0)
		return -1;
	if (c->hostname && sethostname(c->hostname, strlen(c->hostname)) < 0)
		return err_sys(e, "sethostname");
	if (c->domainname && setdomainname(c->domainname, strlen(c->domainname)) < 0)
		return err_sys(e, "setdomainname");
	/* The init leads its own session (CRIU needs the session inside the dumped tree). */
	if (setsid() < 0)
		return err_sys(e, "setsid");
	if (c->p.tty) {
		if (ioctl(c->console_fd, TIOCSCTTY, 0) < 0)
			return err_sys(e, "set controlling terminal");
		for (int i = 0; i < 3; i++)
			if (dup2(c->console_fd, i) < 0)
				return err_sys(e, "dup2 console");
		return 0;
	}
	/*
	 * Opened after pivot_root so the init holds no fd pointing outside its
	 * mounts. A container without /dev/null gets the output pipe as stdin
	 * too (write-only: reading it fails, as reading nothing should).
	 */
	int null = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (null < 0 && errno != ENOENT)
		return err_sys(e, "open /dev/null");
	if (dup2(null >= 0 ? null : outfd, 0) < 0 || dup2(outfd, 1) < 0 || dup2(outfd, 2) < 0)
		return err_sys(e, "dup2 stdio");
	return 0;
}

/* The container init, from clone() to exec. */
NORETURN static void run_child(const struct run_cfg *c, int syncfd, int joinedfd, int errfd, int outfd)
{
	struct error e;
	sync_set_errfd(errfd);
	/* If the monitor dies before releasing us, die too (cleared again right before exec). */
	prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
	/* Into the container's cgroups first (see cgroup_join_self), and tell the monitor. */
	if (cgroup_join_self(c->cg) < 0)
		child_fail("join the container's cgroups");
	if (sync_send(joinedfd, 'j') < 0)
		_exit(1);
	close(joinedfd);
	/* "s": the monitor wrote our id maps. Everything up to exec is set up now, while the daemon configures. */
	if (sync_wait(syncfd) < 0)
		_exit(1); /* the monitor aborted */
	if (setup_container(c, outfd, &e) < 0)
		child_die(&e);
	/* "g": the daemon has configured the container (network); run. */
	if (sync_wait(syncfd) < 0)
		_exit(1); /* the monitor aborted */
	close(syncfd);
	/* Nothing but stdio and the error pipe (itself CLOEXEC) survives exec. */
	if (close_range(3, ~0U, CLOSE_RANGE_CLOEXEC) < 0)
		child_fail("close_range");
	become_process(&c->p, &e);
	child_die(&e);
}

static int add_list(struct list *l, const char *opt, const char *v, struct error *e)
{
	return list_add(l, v) < 0 ? err_sys(e, "%s", opt) : 0;
}

static int add_abs(struct list *l, const char *opt, const char *v, const char *what, struct error *e)
{
	if (v[0] != '/')
		return err_usage(e, "%s %s: expected %s", opt, v, what);
	return add_list(l, opt, v, e);
}

/* One run option at a->argv[a->i]: 1 when taken, 0 when unknown, -1 on a bad value. */
static int parse_run_opt(struct args *a, struct run_cfg *c, int *no_ns, struct error *e)
{
	const char *v;
	int rc = parse_proc_opt(a, &c->p, e);
	if (rc)
		return rc;
	if ((v = value(a, "--state"))) {
		c->state = v;
	} else if ((v = value(a, "--rootfs"))) {
		c->rootfs = v;
	} else if ((v = value(a, "--ns"))) {
		AUTO_FREE char *copy = strdup(v);
		if (!copy)
			return err_sys(e, "--ns");
		char *save = NULL;
		for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
			if (!ns_flag(t))
				return err_usage(e, "--ns: unknown namespace '%s'", t);
			c->ns |= ns_flag(t);
		}
	} else if ((v = value(a, "--join"))) {
		const char *colon = strchr(v, ':');
		int type = 0;
		if (colon) {
			AUTO_FREE char *name = strndup(v, (size_t)(colon - v));
			if (!name)
				return err_sys(e, "--join");
			type = ns_flag(name);
		}
		if (!(type & (CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS)) || !colon[1])
			return err_usage(e, "--join %s: expected net|ipc|uts:PATH", v);
		if (c->njoins == ARRAY_SIZE(c->joins))
			return err_usage(e, "--join: at most one per type");
		c->joins[c->njoins].type = type;
		c->joins[c->njoins++].spec = v;
	} else if ((v = value(a, "--uidmap"))) {
		return idmap_add(&c->uidmap, "--uidmap", v, e) < 0 ? -1 : 1;
	} else if ((v = value(a, "--gidmap"))) {
		return idmap_add(&c->gidmap, "--gidmap", v, e) < 0 ? -1 : 1;
	} else if ((v = value(a, "--hostname"))) {
		c->hostname = v;
	} else if ((v = value(a, "--domainname"))) {
		c->domainname = v;
	} else if ((v = value(a, "--mount"))) {
		struct mnt *m = realloc(c->mounts, (c->nmounts + 1) * sizeof *c->mounts);
		if (!m)
			return err_sys(e, "--mount");
		c->mounts = m;
		if (parse_mount(v, &c->mounts[c->nmounts], e) < 0)
			return -1;
		c->nmounts++;
	} else if ((v = value(a, "--write-file"))) {
		if (v[0] != '/' || !strchr(v, ':'))
			return err_usage(e, "--write-file %s: expected /PATH:CONTENT", v);
		return add_list(&c->files, "--write-file", v, e) < 0 ? -1 : 1;
	} else if ((v = value(a, "--device"))) {
		return add_abs(&c->devices, "--device", v, "an absolute path", e) < 0 ? -1 : 1;
	} else if (flag(a, "--no-default-mounts")) {
		c->default_mounts = false;
	} else if (flag(a, "--readonly-rootfs")) {
		c->readonly = true;
	} else if ((v = value(a, "--dev-nodes"))) {
		return parse_dev_nodes(v, &c->dev_nodes, e) < 0 ? -1 : 1;
	} else if (flag(a, "--no-sysfs")) {
		c->sysfs = false;
	} else if (flag(a, "--lo-up")) {
		c->lo_up = true;
	} else if ((v = value(a, "--veth"))) {
		const char *colon = strchr(v, ':');
		if (!colon || colon == v || !colon[1] || strlen(v) >= IFNAMSIZ + 1 + IFNAMSIZ)
			return err_usage(e, "--veth %s: expected HOST_IFNAME:IFNAME", v);
		char *host = strndup(v, (size_t)(colon - v));
		if (!host)
			return err_sys(e, "--veth");
		c->veth.host = host;
		c->veth.peer = colon + 1;
	} else if ((v = value(a, "--veth-bridge"))) {
		c->veth.bridge = v;
	} else if ((v = value(a, "--veth-mac"))) {
		c->veth.mac = v;
	} else if ((v = value(a, "--veth-mtu"))) {
		unsigned long mtu;
		if (parse_ulong(v, "--veth-mtu", &mtu, e) < 0)
			return -1;
		c->veth.mtu = (unsigned)mtu;
	} else if ((v = value(a, "--veth-address"))) {
		c->veth.address = v;
	} else if ((v = value(a, "--veth-gateway"))) {
		c->veth.gateway = v;
	} else if ((v = value(a, "--host-overlay"))) {
		c->host_overlay = v;
	} else if ((v = value(a, "--host-bind"))) {
		c->host_bind = v;
	} else if ((v = value(a, "--mask"))) {
		return add_abs(&c->masks, "--mask", v, "an absolute path", e) < 0 ? -1 : 1;
	} else if ((v = value(a, "--ro-path"))) {
		return add_abs(&c->ro_paths, "--ro-path", v, "an absolute path", e) < 0 ? -1 : 1;
	} else if ((v = value(a, "--no-ns"))) {
		int flags;
		if (ns_list("--no-ns", v, ~0, &flags, e) < 0)
			return -1;
		*no_ns |= flags;
	} else if ((v = value(a, "--root-owned-ns"))) {
		int flags;
		if (ns_list("--root-owned-ns", v, CLONE_NEWUTS | CLONE_NEWNS, &flags, e) < 0)
			return -1;
		c->owned_ns |= flags;
	} else {
		return 0;
	}
	return 1;
}

int parse_run(struct run_cfg *c, int argc, char **argv, struct error *e)
{
	struct args a = {argc, argv, 0};
	c->p.cwd = "/";
	c->default_mounts = true;
	c->console_fd = -1;
	c->dev_nodes = DEV_NODES_ALL;
	c->sysfs = true;
	int no_ns = 0;
	for (; a.i < argc && strcmp(argv[a.i], "--"); a.i++) {
		int rc = parse_run_opt(&a, c, &no_ns, e);
		if (rc < 0)
			return -1;
		if (!rc)
			return err_usage(e, "run: unknown option '%s'", argv[a.i]);
	}
	c->p.argv = parse_command(&a);
	/* --no-ns: share the caller's namespace after all (and then it has no hostname of its own). */
	c->ns &= ~no_ns;
	if (no_ns & CLONE_NEWUTS)
		c->hostname = c->domainname = NULL;

	/* Refuse combinations that would change the host instead of the container. */
	if (!c->state)
		return err_usage(e, "run: --state is required");
	if (c->rootfs && !(c->ns & CLONE_NEWNS))
		return err_usage(e, "run: --rootfs needs mnt in --ns");
	if ((c->ns & CLONE_NEWNS) && !c->rootfs)
		return err_usage(e, "run: mnt in --ns needs --rootfs");
	if (!c->rootfs && (c->nmounts || c->devices.n || c->readonly))
		return err_usage(e, "run: --mount, --device and --readonly-rootfs need --rootfs");
	if ((c->hostname || c->domainname) && !(c->ns & CLONE_NEWUTS))
		return err_usage(e, "run: --hostname/--domainname need uts in --ns");
	if (c->veth.host && !(c->ns & CLONE_NEWNET))
		return err_usage(e, "run: --veth needs net in --ns");
	if (!c->veth.host && (c->veth.bridge || c->veth.mac || c->veth.mtu || c->veth.address || c->veth.gateway))
		return err_usage(e, "run: --veth-* options need --veth");
	if ((c->owned_ns & ~c->ns) || (c->owned_ns && !(c->ns & CLONE_NEWPID)))
		return err_usage(e, "run: --root-owned-ns needs those namespaces (and pid) in --ns");
	if (c->host_bind && (!(c->ns & CLONE_NEWUSER) || c->host_overlay))
		return err_usage(e,
				 "run: --host-bind is the idmapped root of a user namespace, without --host-overlay");
	for (size_t i = 0; i < c->njoins; i++)
		for (size_t j = 0; j < c->njoins; j++)
			if ((c->joins[i].type & c->ns) || (i != j && c->joins[i].type == c->joins[j].type))
				return err_usage(e, "run: --join %s conflicts with --ns or another --join",
						 c->joins[i].spec);
	bool userns = c->ns & CLONE_NEWUSER;
	if (userns != (c->uidmap.n > 0) || userns != (c->gidmap.n > 0))
		return err_usage(e, "run: user in --ns needs --uidmap and --gidmap (and they need it)");
	return 0;
}

/*
 * --host-overlay: mount the copy-on-write root here, in the host's mount
 * namespace where the daemon (and CRIU) see it, instead of the daemon
 * running mount(8) first. The monitor unmounts it when the init is gone
 * (and the daemon removes whatever a killed monitor left).
 *
 * A user-namespaced container sees its root and its bind mounts through
 * idmapped mounts: what host root owns, its root owns. The init inherits
 * the detached bind copies made here and attaches them (apply_mount); a
 * source whose filesystem cannot be idmapped is bound plainly instead.
 */
static int prepare_root(struct run_cfg *c, struct error *e)
{
	AUTO_FD userns = -1;
	if (c->ns & CLONE_NEWUSER) {
		userns = idmap_userns_fd(&c->uidmap, &c->gidmap);
		if (userns < 0)
			return err_sys(e, "user namespace for the id mapping");
		for (size_t i = 0; i < c->nmounts; i++) {
			struct mnt *m = &c->mounts[i];
			if (!m->bind)
				continue;
			m->tree = idmapped_clone(m->src, userns, m->rec);
			m->has_tree = m->tree >= 0;
		}
	}
	if (c->host_overlay || c->host_bind) {
		if (!c->rootfs)
			return err_set(e, 1, "--host-overlay and --host-bind need --rootfs");
		if (c->ns & CLONE_NEWUSER) {
			if (mount_idmapped_root(c->host_overlay, c->host_bind, c->rootfs, userns, &c->uidmap,
						&c->gidmap, e) < 0) {
				char text[1200];
				err_text(e, text, sizeof text);
				return err_set(e, 1, "rootfs %s: %s", c->rootfs, text);
			}
		} else if (mount_overlay(c->host_overlay, c->rootfs, e) < 0) {
			return -1;
		}
		/* Absolute: the monitor later works from the state dir. */
		monitor_set_host_mount(realpath(c->rootfs, NULL));
	}
	if (c->rootfs) {
		char *real = realpath(c->rootfs, NULL);
		struct stat st;
		if (!real || stat(real, &st) < 0)
			return err_sys(e, "rootfs %s", c->rootfs);
		if (!S_ISDIR(st.st_mode))
			return err_errno(e, ENOTDIR, "rootfs %s", c->rootfs);
		c->rootfs = real;
	}
	return 0;
}

/* --tty: the pty whose slave becomes the init's console; returns the master. */
static int open_console(struct run_cfg *c, struct error *e)
{
	AUTO_FD master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (master < 0 || grantpt(master) < 0 || unlockpt(master) < 0)
		return err_sys(e, "allocate pty");
	c->console_fd = ioctl(master, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (c->console_fd < 0 || ptsname_r(master, c->console_name, sizeof c->console_name) != 0)
		return err_sys(e, "open pty slave");
	struct winsize ws = {.ws_row = 24, .ws_col = 80};
	ioctl(master, TIOCSWINSZ, &ws);
	/* The container's root must be able to reopen its /dev/console. */
	long uid = idmap_outer(&c->uidmap, 0), gid = idmap_outer(&c->gidmap, 0);
	if ((c->ns & CLONE_NEWUSER) && fchown(c->console_fd, (uid_t)uid, (gid_t)gid) < 0)
		return err_sys(e, "chown console");
	return take_fd(&master);
}

/* Reads the caller's StartCommand: true for Go; Abort, end of file or a bad frame abandon the start. */
static bool caller_says_go(void)
{
	struct error e;
	StartCommand *cmd = NULL;
	int r = wire_recv(STDIN_FILENO, &osvirt__helper__v1__start_command__descriptor, (ProtobufCMessage **)&cmd, &e);
	if (r < 0) {
		char text[1200];
		err_text(&e, text, sizeof text);
		fprintf(stderr, "osvirt-helper run: the start command: %s\n", text);
	}
	bool go = r > 0 && cmd->command_case == OSVIRT__HELPER__V1__START_COMMAND__COMMAND_GO;
	if (cmd)
		protobuf_c_message_free_unpacked(&cmd->base, NULL);
	return go;
}

int cmd_run(int argc, char **argv)
{
	struct run_cfg c = {0};
	struct error e;
	if (parse_run(&c, argc, argv, &e) < 0)
		die(&e, NULL);
	c.p.cap_last = read_cap_last();

	/* Protocol step 1: outlive the daemon, own our children, be findable. */
	close_range(3, ~0U, 0);
	ignore_signal(SIGTERM); /* only the init's exit ends the monitor */
	if (monitor_prologue(c.state, &e) < 0 || prepare_root(&c, &e) < 0)
		monitor_fail(&e);
	/*
	 * Joined namespaces are entered here, with the host's privileges, and the
	 * init is born in them: a user-namespaced init could not setns into a peer's
	 * namespace (owned by the peer's user namespace) itself.
	 */
	for (size_t i = 0; i < c.njoins; i++) {
		AUTO_FD fd = open(strchr(c.joins[i].spec, ':') + 1, O_RDONLY | O_CLOEXEC);
		if (fd < 0 || setns(fd, c.joins[i].type) < 0)
			monitor_fail_sys("join %s", c.joins[i].spec);
	}
	int master = -1;
	if (c.p.tty && (master = open_console(&c, &e)) < 0)
		monitor_fail(&e);
	int syncp[2], joinedp[2], errp[2], logp[2] = {-1, -1};
	if (sync_pipe(syncp) < 0 || sync_pipe(joinedp) < 0 || sync_pipe(errp) < 0 || (!c.p.tty && sync_pipe(logp) < 0))
		monitor_fail_sys("pipe");
	/* Blocked before clone so an early exit of the init is still queued for the signalfd. */
	sigset_t chld;
	sigemptyset(&chld);
	sigaddset(&chld, SIGCHLD);
	sigprocmask(SIG_BLOCK, &chld, NULL);

	struct cgroup_join cg;
	if (cgroup_join_open(&c.p.cgroups, &cg, &e) < 0)
		monitor_fail(&e);
	c.cg = &cg;
	/*
	 * clone behaves like fork() with namespace flags. The cgroup ns is left out
	 * on purpose: the child unshares it once it sits in its cgroups.
	 */
	int flags = c.ns & ~CLONE_NEWCGROUP;
	pid_t pid = clone_into((unsigned long)flags, &cg);
	if (pid < 0)
		monitor_fail_sys("clone");
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
	monitor_set_child(pid);
	close(syncp[0]);
	close(errp[1]);
	if (logp[1] >= 0)
		close(logp[1]);
	if (c.console_fd >= 0)
		close(c.console_fd);

	cgroup_join_close(&cg);
	close(joinedp[1]);
	char msg[1200];
	int code;
	if (sync_wait(joinedp[0]) < 0) {
		bool said = sync_read_error(errp[0], &code, msg, sizeof msg) > 0 && msg[0];
		monitor_failf("%s", said ? msg : "the init exited before joining its cgroups");
	}
	close(joinedp[0]);

	/* Protocol step 2: id maps while the child waits, then ask the caller. */
	if ((c.ns & CLONE_NEWUSER) && idmap_write(pid, &c.uidmap, &c.gidmap, &e) < 0)
		monitor_fail(&e);
	if (c.veth.host) {
		if (veth_create(&c.veth, pid, &e) < 0)
			monitor_fail(&e);
		monitor_set_host_veth(c.veth.host);
	}
	/* The child sets up its root, mounts and identity now, in parallel with the caller's configuration. */
	if (sync_send(syncp[1], 's') < 0)
		monitor_fail_sys("signal the child");
	if (fchdir(monitor_statefd()) < 0)
		monitor_fail_sys("chdir %s", c.state);
	struct monitor *m = monitor_new(pid, master, logp[0], c.p.tty, &e);
	if (!m)
		monitor_fail(&e);
	Osvirt__Helper__V1__Created created = OSVIRT__HELPER__V1__CREATED__INIT;
	created.init_pid = pid;
	created.monitor_pid = getpid();
	StartEvent ev = OSVIRT__HELPER__V1__START_EVENT__INIT;
	ev.event_case = OSVIRT__HELPER__V1__START_EVENT__EVENT_CREATED;
	ev.created = &created;
	if (wire_send(STDOUT_FILENO, &ev.base, &e) < 0)
		monitor_fail(&e);

	if (!caller_says_go()) {
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		monitor_unmount_host();
		monitor_remove_state_files();
		return 1;
	}

	/*
	 * Protocol step 3: release the child; its error pipe closes empty if exec
	 * worked. A child whose setup failed is gone already (EPIPE): its error
	 * pipe says why.
	 */
	bool released = sync_send(syncp[1], 'g') == 0;
	int saved = errno;
	close(syncp[1]);
	int said = sync_read_error(errp[0], &code, msg, sizeof msg);
	close(errp[0]);
	if (said > 0)
		monitor_failf("%s", msg);
	if (!released) {
		errno = saved;
		monitor_fail_sys("release the child");
	}
	Osvirt__Helper__V1__Started started = OSVIRT__HELPER__V1__STARTED__INIT;
	ev.event_case = OSVIRT__HELPER__V1__START_EVENT__EVENT_STARTED;
	ev.started = &started;
	if (wire_send(STDOUT_FILENO, &ev.base, &e) < 0)
		err_warn(&e); /* the container runs anyway */

	/* Protocol step 4: detach from the caller's pipes and serve. */
	monitor_set_child(-1);
	monitor_serve(m);
}
