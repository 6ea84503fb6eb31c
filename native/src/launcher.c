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
#include "utils.h"

#define MAX_LAUNCH_REQUEST (256 * 1024)

/* In the launcher's grandchild: read one request from the connection, become its `run` monitor. */
NORETURN static void serve_launch(int conn, char *argv0)
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
	args[0] = argv0;
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
		fprintf(stderr, "osvirt-helper launcher: %s: %s\n", path, strerror(errno));
		return 1;
	}
	printf("{\"event\":\"ready\"}\n");
	fflush(stdout);
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
