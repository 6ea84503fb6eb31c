// SPDX-License-Identifier: Apache-2.0
#define _GNU_SOURCE
#include "exec.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include "cgroup.h"
#include "proc.h"
#include "sync.h"
#include "wire.h"

/* exec's own failures exit 125, like a failed setup step in its child. */
NORETURN static void exec_die(struct error *e)
{
	e->status = EXIT_SETUP;
	die(e, "exec");
}

/* Relays the pty (if any), forwards signals, and returns the child's exit code. */
static int exec_wait(pid_t child, int master, int sigfd, int resize_fd)
{
	char in[4096], out[8192];
	uint8_t rbuf[WIRE_HEADER + 64];
	size_t inlen = 0, inoff = 0, rlen = 0;
	bool stdin_open = master >= 0, master_open = master >= 0;
	int status = 0;
	struct error e;
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
			err_sys(&e, "poll");
			exec_die(&e);
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
			ssize_t r = read(resize_fd, rbuf + rlen, sizeof rbuf - rlen);
			if (r <= 0) {
				resize_fd = -1;
				continue;
			}
			rlen += (size_t)r;
			ssize_t whole;
			while ((whole = wire_complete(rbuf, rlen, sizeof rbuf - WIRE_HEADER, &e)) > 0) {
				ResizeRequest *rq = osvirt__helper__v1__resize_request__unpack(
					NULL, (size_t)whole - WIRE_HEADER, rbuf + WIRE_HEADER);
				if (rq && rq->rows && rq->cols && rq->rows <= 65535 && rq->cols <= 65535) {
					struct winsize ws = {.ws_row = (unsigned short)rq->rows,
							     .ws_col = (unsigned short)rq->cols};
					ioctl(master, TIOCSWINSZ, &ws);
				}
				if (rq)
					protobuf_c_message_free_unpacked(&rq->base, NULL);
				rlen -= (size_t)whole;
				memmove(rbuf, rbuf + whole, rlen);
			}
			if (whole < 0) {
				/* Not our caller's frames: stop listening, the process runs on. */
				fprintf(stderr, "osvirt-helper exec: resize fd: %s\n", e.msg);
				resize_fd = -1;
			}
		}
	}
	if (master_open) {
		ssize_t r;
		while ((r = read(master, out, sizeof out)) > 0)
			write_all(STDOUT_FILENO, out, (size_t)r);
	}
	return exit_code(status);
}

/* All ns fds are opened first: after joining the mount ns, /proc/PID may not be the same. */
static int open_namespaces(unsigned long pid, int fds[NNS], struct error *e)
{
	for (size_t i = 0; i < NNS; i++) {
		struct stat theirs, ours;
		char path[PATH_MAX], self[64];
		snprintf(path, sizeof path, "/proc/%lu/ns/%s", pid, namespaces[i].name);
		snprintf(self, sizeof self, "/proc/self/ns/%s", namespaces[i].name);
		fds[i] = -1;
		if (stat(path, &theirs) < 0)
			return err_sys(e, "%s", path);
		if (stat(self, &ours) == 0 && ours.st_ino == theirs.st_ino && ours.st_dev == theirs.st_dev)
			continue; /* already shared (setns into our own user ns would even fail) */
		if ((fds[i] = open(path, O_RDONLY | O_CLOEXEC)) < 0)
			return err_sys(e, "open %s", path);
	}
	return 0;
}

/*
 * The cgroup ns is left to the child (its fd is returned in *cgns):
 * clone3(CLONE_INTO_CGROUP) needs the parent's cgroup inside its cgroup ns,
 * and the child joins the cgroups first. The user ns is joined last: until
 * then we hold the host's privileges, which may enter a namespace the
 * container shares with another one (joined network or IPC) and that its own
 * user ns does not own.
 */
static int join_namespaces(int fds[NNS], struct proc_cfg *p, struct cgroup_join *cg, int *cgns, struct error *e)
{
	*cgns = -1;
	for (size_t n = 0; n < NNS; n++) {
		size_t i = (n + 1) % NNS; /* namespaces[0] is user */
		if (fds[i] < 0)
			continue;
		if (namespaces[i].flag == CLONE_NEWCGROUP) {
			*cgns = fds[i];
			continue;
		}
		if (setns(fds[i], namespaces[i].flag) < 0)
			return err_sys(e, "setns %s", namespaces[i].name);
		close(fds[i]);
		fds[i] = -1;
		if (namespaces[i].flag == CLONE_NEWUSER) {
			/* Creating a child in a cgroup checks the creator's credentials, now the user ns's: the child joins instead. */
			if (cg->v2dir >= 0)
				close(cg->v2dir);
			cg->v2dir = -1;
			/* Like nsenter: in a joined user ns, become its root unless --user says otherwise. */
			if (!p->set_user) {
				p->set_user = true;
				p->uid = 0;
				p->gid = 0;
			}
		}
	}
	return 0;
}

/* The container's own devpts: the pty belongs to the container, like any it opens. */
static int open_pty(int *master, int *slave, struct error *e)
{
	*master = open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (*master < 0 || unlockpt(*master) < 0)
		return err_sys(e, "open /dev/ptmx in the container");
	*slave = ioctl(*master, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (*slave < 0)
		return err_sys(e, "open pty slave");
	struct winsize ws = {.ws_row = 24, .ws_col = 80};
	if (!isatty(STDIN_FILENO) || ioctl(STDIN_FILENO, TIOCGWINSZ, &ws) < 0)
		ws = (struct winsize){.ws_row = 24, .ws_col = 80};
	ioctl(*master, TIOCSWINSZ, &ws);
	return 0;
}

NORETURN static void exec_child(struct proc_cfg *p, struct cgroup_join *cg, int cgns, int slave, int errfd)
{
	struct error e;
	sync_set_errfd(errfd);
	if (cgroup_join_self(cg) < 0)
		child_fail("join the container's cgroups");
	if (cgns >= 0 && setns(cgns, CLONE_NEWCGROUP) < 0)
		child_fail("setns cgroup");
	/* Own session: CRIU can only dump sessions that start inside the container. */
	if (setsid() < 0)
		child_fail("setsid");
	if (p->tty) {
		if (ioctl(slave, TIOCSCTTY, 0) < 0)
			child_fail("set controlling terminal");
		for (int i = 0; i < 3; i++)
			if (dup2(slave, i) < 0)
				child_fail("dup2 pty");
	}
	if (close_range(3, ~0U, CLOSE_RANGE_CLOEXEC) < 0)
		child_fail("close_range");
	become_process(p, &e);
	child_die(&e);
}

int cmd_exec(int argc, char **argv)
{
	struct proc_cfg p = {.cwd = "/"};
	struct args a = {argc, argv, 0};
	struct error e;
	const char *v;
	unsigned long pid = 0;
	int resize_fd = -1, ready_fd = -1;
	for (; a.i < argc && strcmp(argv[a.i], "--"); a.i++) {
		int rc = parse_proc_opt(&a, &p, &e);
		if (rc < 0)
			die(&e, NULL);
		if (rc) {
		} else if ((v = value(&a, "--pid"))) {
			pid = arg_ulong(v, "--pid");
		} else if ((v = value(&a, "--resize-fd"))) {
			resize_fd = (int)arg_ulong(v, "--resize-fd");
		} else if ((v = value(&a, "--ready-fd"))) {
			/* Gets an ExecReady frame once the command runs in the container: "it started" vs "it could not". */
			ready_fd = (int)arg_ulong(v, "--ready-fd");
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

	/* Opened here, in the host's mount ns; the child joins them itself (see cgroup_join_self). */
	struct cgroup_join cg;
	int fds[NNS], cgns;
	if (cgroup_join_open(&p.cgroups, &cg, &e) < 0 || open_namespaces(pid, fds, &e) < 0 ||
	    join_namespaces(fds, &p, &cg, &cgns, &e) < 0)
		exec_die(&e);
	int master = -1, slave = -1;
	if (p.tty && open_pty(&master, &slave, &e) < 0)
		exec_die(&e);
	int errp[2];
	if (sync_pipe(errp) < 0) {
		err_sys(&e, "pipe");
		exec_die(&e);
	}
	sigset_t mask;
	sigemptyset(&mask);
	int forwarded[] = {SIGCHLD, SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2};
	for (size_t i = 0; i < ARRAY_SIZE(forwarded); i++)
		sigaddset(&mask, forwarded[i]);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	int sigfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
	if (sigfd < 0) {
		err_sys(&e, "signalfd");
		exec_die(&e);
	}
	/* fork() after setns(pid): only children enter the pid namespace. */
	pid_t child = clone_into(0, &cg);
	if (child < 0) {
		err_sys(&e, "fork");
		exec_die(&e);
	}
	if (child == 0)
		exec_child(&p, &cg, cgns, slave, errp[1]);
	close(errp[1]);
	cgroup_join_close(&cg);
	if (cgns >= 0)
		close(cgns);
	if (slave >= 0)
		close(slave);
	char msg[1200];
	int code;
	if (sync_read_error(errp[0], &code, msg, sizeof msg) > 0) {
		waitpid(child, NULL, 0);
		fprintf(stderr, "osvirt-helper exec: %s\n", msg);
		return code;
	}
	close(errp[0]);
	if (ready_fd >= 0) {
		Osvirt__Helper__V1__ExecReady ready = OSVIRT__HELPER__V1__EXEC_READY__INIT;
		ready.pid = child;
		if (wire_send(ready_fd, &ready.base, &e) < 0)
			err_warn(&e);
		close(ready_fd);
	}
	return exec_wait(child, master, sigfd, resize_fd);
}
