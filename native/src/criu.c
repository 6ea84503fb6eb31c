// SPDX-License-Identifier: Apache-2.0
#define _GNU_SOURCE
#include "criu.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include "args.h"
#include "cgroup.h"
#include "criu/rpc.pb-c.h"
#include "monitor.h"
#include "utils.h"
#include "wire.h"

/* Options shared by criu-swrk and restore: how CRIU is started. */
struct swrk_cfg {
	int keep[64]; /* caller's descriptors criu inherits at the same number */
	size_t nkeep;
	const char *run_dir; /* bind-mounted on /run in criu's private mount ns */
	struct list cgroups; /* criu (and what it creates) starts in these */
	struct {
		int from, to; /* fd made by the helper, and its number in criu */
	} give[2];
	size_t ngive;
	char **cmd;
};

static bool parse_swrk_opt(struct args *a, struct swrk_cfg *c)
{
	const char *v;
	if ((v = value(a, "--keep-fd"))) {
		if (c->nkeep == ARRAY_SIZE(c->keep))
			usage_error("too many --keep-fd");
		c->keep[c->nkeep++] = (int)arg_ulong(v, "--keep-fd");
	} else if ((v = value(a, "--run-dir"))) {
		if (v[0] != '/')
			usage_error("--run-dir %s: expected an absolute path", v);
		c->run_dir = v;
	} else if ((v = value(a, "--cgroup"))) {
		if (list_add(&c->cgroups, v) < 0)
			usage_error("--cgroup: %s", strerror(errno));
	} else {
		return false;
	}
	return true;
}

/* In the forked child: become `CMD swrk <fd>`. */
NORETURN static void swrk_exec(struct swrk_cfg *c, struct cgroup_join *cg, int fd)
{
	size_t ncmd = 0;
	while (c->cmd[ncmd])
		ncmd++;
	char fdnum[16];
	snprintf(fdnum, sizeof fdnum, "%d", fd);
	char **args = calloc(ncmd + 3, sizeof *args);
	if (!args) {
		warn_sys("calloc");
		_exit(126);
	}
	memcpy(args, c->cmd, ncmd * sizeof *args);
	args[ncmd] = "swrk";
	args[ncmd + 1] = fdnum;
	if (cgroup_join_self(cg) < 0) {
		warn_sys("join the cgroups");
		_exit(126);
	}
	if (c->run_dir && (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_SLAVE, NULL) < 0 ||
			   mount(c->run_dir, "/run", NULL, MS_BIND, NULL) < 0)) {
		warn_sys("private /run for criu from %s", c->run_dir);
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
	fcntl(fd, F_SETFD, 0);
	for (size_t i = 0; i < c->nkeep; i++)
		fcntl(c->keep[i], F_SETFD, 0);
	for (size_t i = 0; i < c->ngive; i++)
		fcntl(c->give[i].to, F_SETFD, 0);
	signal(SIGPIPE, SIG_DFL);
	sigset_t none;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	execvp(args[0], args);
	warn_sys("exec %s", args[0]);
	_exit(errno == ENOENT ? 127 : 126);
}

/*
 * Starts `CMD swrk <fd>` on one end of a SOCK_SEQPACKET socketpair; returns the
 * other end. With run_dir, criu gets a private mount namespace whose /run is
 * run_dir: CRIU keeps its kernel-feature cache (/run/criu.kdat) only on a
 * tmpfs, and the host's /run may not be one.
 */
static int swrk_spawn(struct swrk_cfg *c, pid_t *child_out)
{
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
		perror("osvirt-helper: socketpair");
		return -1;
	}
	/* A seqpacket message must fit the send buffer whole; room for a largest frame both ways. */
	int size = 2 * WIRE_MAX_FRAME;
	for (int i = 0; i < 2; i++) {
		if (setsockopt(sv[i], SOL_SOCKET, SO_SNDBUFFORCE, &size, sizeof size) < 0)
			setsockopt(sv[i], SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
		if (setsockopt(sv[i], SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size) < 0)
			setsockopt(sv[i], SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
	}
	/* CRIU (and the tree it restores) starts in these cgroups, joined as in `run`. */
	struct cgroup_join cg;
	struct error e;
	if (cgroup_join_open(&c->cgroups, &cg, &e) < 0) {
		char text[1200];
		err_text(&e, text, sizeof text);
		fprintf(stderr, "osvirt-helper: %s\n", text);
		close(sv[0]);
		close(sv[1]);
		return -1;
	}
	pid_t child = clone_into(0, &cg);
	if (child < 0) {
		perror("osvirt-helper: fork");
		cgroup_join_close(&cg);
		close(sv[0]);
		close(sv[1]);
		return -1;
	}
	if (child == 0)
		swrk_exec(c, &cg, sv[1]);
	cgroup_join_close(&cg);
	close(sv[1]);
	*child_out = child;
	return sv[0];
}

typedef void (*frame_cb)(const uint8_t *buf, size_t len, void *arg);

/*
 * Relays CRIU's messages to stdout and the caller's frames (wire.h) from stdin
 * until CRIU closes its end. Returns 0, or -1 with e on a broken frame.
 */
static int swrk_relay(int sock, frame_cb on_frame, void *arg, struct error *e)
{
	AUTO_FREE uint8_t *outbuf = malloc(WIRE_MAX_FRAME);
	if (!outbuf)
		return err_sys(e, "malloc");
	bool stdin_open = true;
	for (;;) {
		struct pollfd pf[2] = {{.fd = sock, .events = POLLIN}, {.fd = STDIN_FILENO, .events = POLLIN}};
		if (poll(pf, stdin_open ? 2 : 1, -1) < 0) {
			if (errno == EINTR)
				continue;
			return 0;
		}
		if (pf[0].revents) {
			ssize_t n = recv(sock, outbuf, WIRE_MAX_FRAME, MSG_TRUNC);
			if (n < 0 && (errno == EINTR || errno == EAGAIN))
				continue;
			if (n <= 0)
				return 0; /* CRIU closed its end or exited */
			if (n > WIRE_MAX_FRAME)
				return err_errno(e, EMSGSIZE, "criu message of %zd bytes exceeds %d", n,
						 WIRE_MAX_FRAME);
			if (on_frame)
				on_frame(outbuf, (size_t)n, arg);
			if (wire_write(STDOUT_FILENO, outbuf, (size_t)n, e) < 0)
				return 0; /* caller gone: closing the socket makes CRIU stop */
		}
		if (stdin_open && pf[1].revents) {
			AUTO_FREE uint8_t *in = NULL;
			size_t len;
			int r = wire_read(STDIN_FILENO, WIRE_MAX_FRAME, &in, &len, e);
			if (r < 0)
				return -1;
			if (r == 0) {
				stdin_open = false;
				shutdown(sock, SHUT_WR); /* CRIU's swrk loop ends on EOF */
				continue;
			}
			if (len == 0) /* a seqpacket reader could not tell an empty message from EOF */
				fprintf(stderr, "osvirt-helper: empty frame ignored\n");
			else if (send(sock, in, len, 0) < 0)
				warn_sys("send");
		}
	}
}

int cmd_criu_swrk(int argc, char **argv)
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
	struct error e;
	int rc = swrk_relay(sock, NULL, NULL, &e);
	close(sock);
	int status = wait_exit_code(child);
	if (rc < 0) {
		char text[1200];
		err_text(&e, text, sizeof text);
		fprintf(stderr, "osvirt-helper criu-swrk: %s\n", text);
		return 1;
	}
	return status;
}

bool criu_decode_resp(const uint8_t *buf, size_t len, struct restore_answer *out)
{
	*out = (struct restore_answer){.type = -1, .success = 0, .pid = 0};
	Criu__CriuResp *r = criu__criu_resp__unpack(NULL, len, buf);
	if (!r)
		return false;
	out->type = r->type;
	out->success = r->success;
	if (r->restore)
		out->pid = r->restore->pid;
	criu__criu_resp__free_unpacked(r, NULL);
	return true;
}

static void on_restore_frame(const uint8_t *buf, size_t len, void *arg)
{
	struct restore_answer one;
	if (!criu_decode_resp(buf, len, &one) || one.type != CRIU__CRIU_REQ_TYPE__RESTORE)
		return;
	struct restore_answer *r = arg;
	*r = one;
	r->seen = true;
}

/* What the restored tree inherits: a pty slave (console) or a pipe's write end (output). */
static int restore_stdio(bool tty, long tty_uid, long tty_gid, int *master, int *logpipe, int *theirs, struct error *e)
{
	if (!tty) {
		int p[2];
		if (pipe2(p, O_CLOEXEC) < 0)
			return err_sys(e, "pipe");
		*logpipe = p[0];
		*theirs = p[1];
		return 0;
	}
	char name[64];
	*master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (*master < 0 || grantpt(*master) < 0 || unlockpt(*master) < 0 || ptsname_r(*master, name, sizeof name) != 0)
		return err_sys(e, "allocate pty");
	*theirs = ioctl(*master, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC);
	/* A user-namespaced container's root owns its console (CRIU sets the owner from inside). */
	if (*theirs >= 0 && tty_uid >= 0 && fchown(*theirs, (uid_t)tty_uid, (gid_t)tty_gid) < 0)
		return err_sys(e, "chown pty");
	struct winsize ws = {.ws_row = 24, .ws_col = 80};
	ioctl(*master, TIOCSWINSZ, &ws);
	/* For an external /dev/console bind mount: criu mounts what this names. */
	if (*theirs < 0 || symlinkat(name, monitor_statefd(), "console-pty") < 0)
		return err_sys(e, "pty slave %s", name);
	return 0;
}

/*
 * restore: like criu-swrk for one RESTORE request, but as the monitor-to-be. It
 * is a subreaper and asks for the tree as its sibling-child (rst_sibling), gives
 * CRIU the console (a pty slave) or the output pipe to inherit, and once CRIU
 * answered success it monitors the restored init exactly as run monitors a
 * started one. On failure it leaves no state files and exits with criu's status.
 */
int cmd_restore(int argc, char **argv)
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
			tty_fd = (int)arg_ulong(v, "--tty-fd");
		} else if ((v = value(&a, "--log-fd"))) {
			log_fd = (int)arg_ulong(v, "--log-fd");
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

	monitor_set_frames_on_stdout();
	struct error e;
	int master = -1, logpipe = -1, theirs = -1;
	if (monitor_prologue(state, &e) < 0)
		die(&e, "restore");
	unlinkat(monitor_statefd(), "console-pty", 0);
	if (restore_stdio(tty, tty_uid, tty_gid, &master, &logpipe, &theirs, &e) < 0)
		die(&e, "restore");
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
		monitor_remove_state_files();
		return 1;
	}
	struct restore_answer answer = {0};
	int rc = swrk_relay(sock, on_restore_frame, &answer, &e) < 0;
	if (rc) {
		char text[1200];
		err_text(&e, text, sizeof text);
		fprintf(stderr, "osvirt-helper restore: %s\n", text);
	}
	close(sock);
	int status = wait_exit_code(criu);
	/* CRIU opens the caller's descriptors through /proc/<our pid>/fd: closed only now. */
	for (size_t i = 0; i < c.nkeep; i++)
		close(c.keep[i]);
	bool ok = !rc && answer.seen && answer.success && answer.pid > 0;
	if (!ok) {
		unlinkat(monitor_statefd(), "console-pty", 0);
		monitor_remove_state_files();
		if (answer.seen && answer.success && answer.pid > 0)
			kill(answer.pid, SIGKILL); /* restored, but the caller broke the protocol */
		return rc ? rc : status ? status : 1;
	}
	monitor_set_child((pid_t)answer.pid); /* killed by monitor_fail: nothing would watch it */
	if (fchdir(monitor_statefd()) < 0)
		monitor_fail_sys("chdir %s", state);
	struct monitor *m = monitor_new((pid_t)answer.pid, master, logpipe, tty, &e);
	if (!m)
		monitor_fail(&e);
	monitor_set_child(-1);
	fprintf(stderr, "osvirt-helper restore: monitoring restored init %d\n", (int)answer.pid);
	monitor_serve(m);
}
