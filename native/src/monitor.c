// SPDX-License-Identifier: Apache-2.0
#define _GNU_SOURCE
#include "monitor.h"

#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include "net_device.h"
#include "utils.h"
#include "wire.h"

#define RING_SIZE (64 * 1024) /* console output replayed to new console clients */
#define MAX_CLIENTS 32        /* per socket; more connections are refused */
#define MAX_CTL_FRAME 256     /* a larger ControlRequest is not from a client of ours */

static pid_t g_child = -1;      /* killed if the handshake fails */
static char *g_host_mount;      /* --host-overlay: unmounted when the init is gone */
static const char *g_host_veth; /* --veth: deleted when the init is gone */
static int g_statefd = -1;
static bool g_frames_on_stdout; /* restore: stdout carries CRIU frames, not JSON events */

void monitor_set_child(pid_t pid)
{
	g_child = pid;
}

void monitor_set_host_mount(char *abs_path)
{
	g_host_mount = abs_path;
}

void monitor_set_host_veth(const char *name)
{
	g_host_veth = name;
}

void monitor_set_frames_on_stdout(void)
{
	g_frames_on_stdout = true;
}

int monitor_statefd(void)
{
	return g_statefd;
}

int monitor_prologue(const char *state, struct error *e)
{
	setsid(); /* EPERM if the caller already made us a session leader: fine */
	ignore_signal(SIGPIPE);
	ignore_signal(SIGHUP);
	if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) < 0)
		return err_sys(e, "PR_SET_CHILD_SUBREAPER");
	g_statefd = open(state, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (g_statefd < 0)
		return err_sys(e, "open state dir %s", state);
	unlinkat(g_statefd, "exit", 0); /* a previous run's exit file must not describe this one */
	/* Tells a daemon that re-attaches later which control protocol monitor.sock speaks. */
	if (write_file_atomic(g_statefd, "protocol", MONITOR_PROTOCOL "\n") < 0)
		return err_sys(e, "write protocol");
	char num[32];
	snprintf(num, sizeof num, "%d\n", getpid());
	if (write_file_atomic(g_statefd, "monitor.pid", num) < 0)
		return err_sys(e, "write monitor.pid");
	return 0;
}

/* The monitor mounted the root, so it unmounts it, before anyone learns the init exited. */
void monitor_unmount_host(void)
{
	if (g_host_mount && umount2(g_host_mount, MNT_DETACH) < 0 && errno != EINVAL && errno != ENOENT)
		warn_sys("unmount %s", g_host_mount);
	g_host_mount = NULL;
}

void monitor_remove_state_files(void)
{
	static const char *const names[] = {"monitor.pid", "init.pid", "monitor.sock", "console.sock", "protocol"};
	for (size_t i = 0; i < ARRAY_SIZE(names); i++)
		unlinkat(g_statefd, names[i], 0);
}

void monitor_fail(const struct error *e)
{
	char msg[1200];
	err_text(e, msg, sizeof msg);
	if (g_child > 0) {
		kill(g_child, SIGKILL);
		waitpid(g_child, NULL, 0);
	}
	monitor_unmount_host();
	if (g_statefd >= 0)
		monitor_remove_state_files();
	if (g_frames_on_stdout) {
		fprintf(stderr, "osvirt-helper: %s\n", msg);
		exit(1);
	}
	Osvirt__Helper__V1__Failed failed = OSVIRT__HELPER__V1__FAILED__INIT;
	failed.message = msg;
	StartEvent ev = OSVIRT__HELPER__V1__START_EVENT__INIT;
	ev.event_case = OSVIRT__HELPER__V1__START_EVENT__EVENT_FAILED;
	ev.failed = &failed;
	struct error we;
	if (wire_send(STDOUT_FILENO, &ev.base, &we) < 0)
		err_warn(e); /* nobody reads stdout: keep the reason somewhere */
	exit(1);
}

void monitor_failf(const char *fmt, ...)
{
	struct error e = {.status = 1};
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(e.msg, sizeof e.msg, fmt, ap);
	va_end(ap);
	monitor_fail(&e);
}

void monitor_fail_sys(const char *fmt, ...)
{
	struct error e = {.status = 1, .errnum = errno};
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(e.msg, sizeof e.msg, fmt, ap);
	va_end(ap);
	monitor_fail(&e);
}

static int listen_unix(const char *name)
{
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	snprintf(addr.sun_path, sizeof addr.sun_path, "%s", name); /* relative: cwd is the state dir */
	AUTO_FD fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	unlink(name);
	if (bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0 || chmod(name, 0600) < 0 || listen(fd, 16) < 0)
		return -1;
	return take_fd(&fd);
}

/* The monitor's event loop state (after "started"). */
struct monitor {
	pid_t init;
	int sigfd, ctl_listen, con_listen, master, logpipe, logfd;
	int ctl[MAX_CLIENTS];
	uint8_t ctl_buf[MAX_CLIENTS][WIRE_HEADER + MAX_CTL_FRAME];
	size_t ctl_len[MAX_CLIENTS];
	int con[MAX_CLIENTS];
	char ring[RING_SIZE];
	size_t ring_head, ring_len; /* next write position, bytes held */
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
		warn_sys("write console.log");
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

/* Answers one ControlRequest (its frame's payload) with one ControlEvent. */
static void ctl_reply(struct monitor *m, int i, const uint8_t *payload, size_t len)
{
	ControlEvent ev = OSVIRT__HELPER__V1__CONTROL_EVENT__INIT;
	Osvirt__Helper__V1__Status status = OSVIRT__HELPER__V1__STATUS__INIT;
	Osvirt__Helper__V1__Resized resized = OSVIRT__HELPER__V1__RESIZED__INIT;
	Osvirt__Helper__V1__ControlError error = OSVIRT__HELPER__V1__CONTROL_ERROR__INIT;
	char text[256];
	ControlRequest *req = osvirt__helper__v1__control_request__unpack(NULL, len, payload);
	ev.event_case = OSVIRT__HELPER__V1__CONTROL_EVENT__EVENT_ERROR;
	ev.error = &error;
	error.message = "unknown request";
	if (req && req->request_case == OSVIRT__HELPER__V1__CONTROL_REQUEST__REQUEST_STATUS) {
		status.init_pid = m->init;
		ev.event_case = OSVIRT__HELPER__V1__CONTROL_EVENT__EVENT_STATUS;
		ev.status = &status;
	} else if (req && req->request_case == OSVIRT__HELPER__V1__CONTROL_REQUEST__REQUEST_RESIZE) {
		uint32_t rows = req->resize->rows, cols = req->resize->cols;
		struct winsize ws = {.ws_row = (unsigned short)rows, .ws_col = (unsigned short)cols};
		if (m->master < 0) {
			error.message = "no tty";
		} else if (!rows || !cols || rows > 65535 || cols > 65535) {
			error.message = "invalid rows or cols: each must be 1 to 65535";
		} else if (ioctl(m->master, TIOCSWINSZ, &ws) < 0) {
			snprintf(text, sizeof text, "resize: %s", strerror(errno));
			error.message = text;
		} else {
			ev.event_case = OSVIRT__HELPER__V1__CONTROL_EVENT__EVENT_RESIZED;
			ev.resized = &resized;
		}
	}
	if (req)
		protobuf_c_message_free_unpacked(&req->base, NULL);
	/* The answer is small: a non-blocking socket takes it whole or the client is not reading. */
	struct error e;
	if (wire_send(m->ctl[i], &ev.base, &e) < 0) {
		err_warn(&e);
		close_slot(&m->ctl[i]);
	}
}

static void on_ctl_input(struct monitor *m, int i)
{
	size_t *len = &m->ctl_len[i];
	ssize_t n = read(m->ctl[i], m->ctl_buf[i] + *len, sizeof m->ctl_buf[i] - *len);
	if (n <= 0) {
		if (n == 0 || errno != EAGAIN)
			close_slot(&m->ctl[i]);
		return;
	}
	*len += (size_t)n;
	for (;;) {
		struct error e;
		ssize_t whole = wire_complete(m->ctl_buf[i], *len, MAX_CTL_FRAME, &e);
		if (whole < 0) {
			err_warn(&e);
			close_slot(&m->ctl[i]); /* an oversized frame: not a client of ours */
			return;
		}
		if (whole == 0)
			return;
		ctl_reply(m, i, m->ctl_buf[i] + WIRE_HEADER, (size_t)whole - WIRE_HEADER);
		if (m->ctl[i] < 0)
			return;
		*len -= (size_t)whole;
		memmove(m->ctl_buf[i], m->ctl_buf[i] + whole, *len);
	}
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

/*
 * The pair dies with the container's network namespace, but the kernel
 * cleans namespaces up asynchronously; deleting the host end now means it
 * is gone when the daemon learns of the exit. RTM_DELLINK returns only after
 * the kernel has released the device (an RCU barrier: 20-30 ms here), while
 * the name leaves the host at the start of that: a child waits for the
 * release, the monitor only for the name to go.
 */
static void delete_host_veth(void)
{
	pid_t deleter = fork();
	if (deleter == 0) {
		close_range(3, ~0U, 0); /* hold none of the monitor's sockets open */
		if (link_delete(g_host_veth) < 0 && errno != ENODEV)
			warn_sys("delete %s", g_host_veth);
		_exit(0);
	}
	for (int i = 0; deleter > 0 && i < 50000 && if_nametoindex(g_host_veth); i++)
		usleep(100);
}

NORETURN static void monitor_finish(struct monitor *m, int status)
{
	if (m->master >= 0)
		drain_output(m, m->master);
	if (m->logpipe >= 0)
		drain_output(m, m->logpipe);
	monitor_unmount_host();
	if (g_host_veth)
		delete_host_veth();
	int sig = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
	int code = exit_code(status);
	char when[64], buf[256];
	iso_now(when, sizeof when);
	snprintf(buf, sizeof buf, "{\"exitCode\":%d,\"signal\":%d,\"finishedAt\":\"%s\"}\n", code, sig, when);
	if (write_file_atomic(g_statefd, "exit", buf) < 0)
		warn_sys("write the exit file");
	Osvirt__Helper__V1__Exited exited = OSVIRT__HELPER__V1__EXITED__INIT;
	exited.exit_code = code;
	exited.signal = sig;
	ControlEvent ev = OSVIRT__HELPER__V1__CONTROL_EVENT__INIT;
	ev.event_case = OSVIRT__HELPER__V1__CONTROL_EVENT__EVENT_EXITED;
	ev.exited = &exited;
	for (int i = 0; i < MAX_CLIENTS; i++) {
		if (m->ctl[i] >= 0) {
			/* Blocking for this last message: a client must not miss the exit. */
			struct error e;
			fcntl(m->ctl[i], F_SETFL, 0);
			if (wire_send(m->ctl[i], &ev.base, &e) < 0)
				err_warn(&e);
		}
		close_slot(&m->ctl[i]);
		close_slot(&m->con[i]);
	}
	unlink("monitor.sock");
	unlink("console.sock");
	fprintf(stderr, "init %d: exited, code %d, signal %d\n", m->init, code, sig);
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
			warn_sys("poll");
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
			case K_CTL_LISTEN: on_accept(m, false); break;
			case K_CON_LISTEN: on_accept(m, true); break;
			case K_OUT:
				/* EOF/EIO: no writer left; stop polling (the exit arrives by SIGCHLD). */
				if (!drain_output(m, outfd))
					outfd = -1;
				break;
			case K_CTL: on_ctl_input(m, i); break;
			case K_CON: {
				char buf[4096];
				ssize_t r = read(m->con[i], buf, sizeof buf);
				if (r == 0 || (r < 0 && errno != EAGAIN))
					close_slot(&m->con[i]);
				else if (r > 0 && write(m->master, buf, (size_t)r) < 0 && errno != EAGAIN)
					warn_sys("console input");
				break;
			}
			}
		}
	}
}

struct monitor *monitor_new(pid_t init, int master, int logpipe, bool tty, struct error *e)
{
	struct monitor *m = calloc(1, sizeof *m);
	if (!m) {
		err_sys(e, "calloc");
		return NULL;
	}
	m->init = init;
	m->master = master;
	m->logpipe = logpipe;
	m->con_listen = -1;
	m->logfd = -1;
	for (int i = 0; i < MAX_CLIENTS; i++)
		m->ctl[i] = m->con[i] = -1;
	sigset_t chld;
	sigemptyset(&chld);
	sigaddset(&chld, SIGCHLD);
	char num[32];
	snprintf(num, sizeof num, "%d\n", init);
	if ((m->sigfd = signalfd(-1, &chld, SFD_NONBLOCK | SFD_CLOEXEC)) < 0)
		err_sys(e, "signalfd");
	else if ((m->ctl_listen = listen_unix("monitor.sock")) < 0)
		err_sys(e, "listen monitor.sock");
	else if (tty && (m->con_listen = listen_unix("console.sock")) < 0)
		err_sys(e, "listen console.sock");
	else if (write_file_atomic(g_statefd, "init.pid", num) < 0)
		err_sys(e, "write init.pid");
	else
		return m;
	return NULL; /* monitor_fail follows: the process exits, so nothing is closed here */
}

void monitor_serve(struct monitor *m)
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
	if (m->logfd < 0)
		warn_sys("open console.log"); /* the console still serves clients, unlogged */
	if (m->master >= 0)
		fcntl(m->master, F_SETFL, O_NONBLOCK);
	if (m->logpipe >= 0)
		fcntl(m->logpipe, F_SETFL, O_NONBLOCK);
	monitor_loop(m);
}
