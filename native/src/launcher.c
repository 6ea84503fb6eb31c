// SPDX-License-Identifier: Apache-2.0
#define _GNU_SOURCE
#include "launcher.h"

#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "args.h"
#include "error.h"
#include "utils.h"
#include "wire.h"

/* In the launcher's grandchild: read one LaunchRequest from the connection, become its `run` monitor. */
NORETURN static void serve_launch(int conn, char *argv0)
{
	struct error e;
	LaunchRequest *req = NULL;
	int r = wire_recv(conn, &osvirt__helper__v1__launch_request__descriptor, (ProtobufCMessage **)&req, &e);
	if (r <= 0) {
		if (r == 0)
			err_set(&e, EXIT_USAGE, "the connection closed without a request");
		else
			e.status = EXIT_USAGE;
		die(&e, "launcher");
	}
	char **args = calloc(req->n_args + 3, sizeof *args);
	if (!args) {
		err_sys(&e, "calloc");
		die(&e, "launcher");
	}
	args[0] = argv0;
	args[1] = "run";
	for (size_t i = 0; i < req->n_args; i++)
		args[i + 2] = req->args[i];
	/* The connection is this monitor's stdin and stdout: the start protocol runs over it. */
	if (dup2(conn, STDIN_FILENO) < 0 || dup2(conn, STDOUT_FILENO) < 0) {
		err_sys(&e, "dup2");
		die(&e, "launcher");
	}
	close(conn);
	/* Exec'd again so that ps and /proc/PID/cmdline show what this monitor is. */
	execv("/proc/self/exe", args);
	err_sys(&e, "exec /proc/self/exe");
	die(&e, "launcher");
}

/*
 * launcher --socket PATH: start `run` monitors without the daemon forking
 * itself. A fork of the daemon (a large Node process) costs 1-2 ms and blocks
 * its event loop; a fork of this small process costs a tenth of that. Each
 * connection is one request: a LaunchRequest frame (wire.h) with the `run`
 * arguments. The monitor is a grandchild (its parent
 * exits at once, so init adopts it, as with any daemonized monitor) and speaks
 * the usual start protocol over the connection instead of stdin and stdout.
 * The launcher dies with the process that started it.
 */
int cmd_launcher(int argc, char **argv, char *argv0)
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
	if (l < 0 || bind(l, (struct sockaddr *)&addr, sizeof addr) < 0 || chmod(path, 0600) < 0 ||
	    listen(l, 128) < 0) {
		struct error e;
		err_sys(&e, "%s", path);
		die(&e, "launcher");
	}
	Osvirt__Helper__V1__LauncherReady ready = OSVIRT__HELPER__V1__LAUNCHER_READY__INIT;
	ready.pid = getpid();
	struct error e;
	if (wire_send(STDOUT_FILENO, &ready.base, &e) < 0)
		die(&e, "launcher");
	for (;;) {
		int conn = accept4(l, NULL, NULL, SOCK_CLOEXEC);
		if (conn < 0) {
			if (errno == EINTR || errno == ECONNABORTED || errno == EMFILE || errno == ENFILE ||
			    errno == ENOBUFS || errno == ENOMEM)
				continue;
			fprintf(stderr, "osvirt-helper launcher: accept: %s\n", strerror(errno));
			return 1;
		}
		pid_t child = fork();
		if (child == 0) {
			close(l);
			prctl(PR_SET_PDEATHSIG, 0, 0, 0, 0);
			if (fork() == 0)
				serve_launch(conn, argv0);
			_exit(0);
		}
		close(conn);
		if (child > 0)
			waitpid(child, NULL, 0);
	}
}
