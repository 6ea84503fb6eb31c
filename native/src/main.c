// SPDX-License-Identifier: Apache-2.0
/*
 * osvirt-helper: the native part of osvirt.
 *
 * Node cannot clone(2) into new namespaces, setns(2), pivot_root(2) or create a
 * SOCK_SEQPACKET socketpair, so exactly those things live here. Everything else
 * (configuration, cgroup creation, networking, the state store) is TypeScript.
 *
 *   run [options] -- ARGV       start a container and stay as its monitor (run.c)
 *   exec --pid PID [opts] -- ARGV   run a process inside a running container (exec.c)
 *   criu-swrk [--keep-fd N]... [--run-dir DIR] -- CRIU_ARGV   bridge CRIU's RPC socket to stdio (criu.c)
 *   restore --state DIR (--tty-fd N | --log-fd N) [swrk options] -- CRIU_ARGV
 *                               one CRIU RESTORE over stdio, then monitor the restored init (criu.c)
 *   mount-root ...              a user-namespaced container's idmapped root (mount.c)
 *   launcher --socket PATH      forks `run` monitors on request (launcher.c)
 *   peercred FD                 the SO_PEERCRED of a connected unix socket
 *   init                        a jail's pid 1 (init.c; the static osvirt-init runs the same code)
 *   version
 *
 * Usage errors exit 2. The full option list is in usage() (args.c).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "args.h"
#include "criu.h"
#include "exec.h"
#include "init.h"
#include "launcher.h"
#include "mount.h"
#include "run.h"

/*
 * peercred FD: print the SO_PEERCRED of the connected unix socket at FD.
 * The daemon hands each accepted connection's socket to this (Node has no
 * getsockopt) to learn who is calling.
 */
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

static int cmd_init(int argc, char **argv)
{
	(void)argv;
	const char *why = init_refusal(argc);
	if (why)
		usage_error("%s", why);
	return init_run();
}

int main(int argc, char **argv)
{
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
		return cmd_launcher(argc - 2, argv + 2, argv[0]);
	if (!strcmp(cmd, "init"))
		return cmd_init(argc - 2, argv + 2);
	usage_error("unknown subcommand '%s'", cmd);
}
