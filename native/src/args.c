// SPDX-License-Identifier: Apache-2.0
#define _GNU_SOURCE
#include "args.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void usage(FILE *out)
{
	fputs("usage:\n"
	      "  osvirt-helper run --state DIR [--rootfs PATH] [--ns pid,mnt,uts,ipc,net,cgroup,user]\n"
	      "      [--join net|ipc|uts:PATH]... [--uidmap IN:OUT:COUNT]... [--gidmap IN:OUT:COUNT]...\n"
	      "      [--cgroup DIR]... [--hostname NAME] [--domainname NAME]\n"
	      "      [--mount TYPE:SRC:DST:OPTS:PROPAGATION]... [--write-file /PATH:CONTENT]... [--device PATH]... "
	      "[--no-default-mounts]\n"
	      "      [--readonly-rootfs] [--dev-nodes LIST] [--no-sysfs] [--lo-up] [--host-overlay "
	      "LOWER[:LOWER...]:UPPER:WORK]\n"
	      "      [--host-bind SRC (with a user namespace)]\n"
	      "      [--veth HOST_IFNAME:IFNAME [--veth-bridge BR] [--veth-mtu N] [--veth-mac MAC]\n"
	      "       [--veth-address A.B.C.D/N] [--veth-gateway A.B.C.D]]\n"
	      "      [--mask PATH]... [--ro-path PATH]...\n"
	      "      [--no-ns LIST] [--root-owned-ns uts,mnt] [PROCESS OPTIONS] -- ARG0 ARGS...\n"
	      "  osvirt-helper exec --pid PID [--cgroup DIR]... [--resize-fd N] [--ready-fd N] [PROCESS OPTIONS] -- "
	      "ARG0 ARGS...\n"
	      "  osvirt-helper criu-swrk [--keep-fd N]... [--run-dir DIR] [--cgroup DIR]... -- CRIU_ARGV...\n"
	      "  osvirt-helper restore --state DIR (--tty-fd N [--tty-owner UID:GID] | --log-fd N) [--keep-fd N]... "
	      "[--run-dir DIR]\n"
	      "      [--cgroup DIR]... -- CRIU_ARGV...\n"
	      "  osvirt-helper mount-root --uidmap IN:OUT:COUNT... --gidmap IN:OUT:COUNT... (--overlay "
	      "LOWER[:LOWER...]:UPPER:WORK | --bind SRC) TARGET\n"
	      "                               a user-namespaced container's idmapped root, mounted at TARGET (for "
	      "restore)\n"
	      "  osvirt-helper peercred FD\n"
	      "  osvirt-helper launcher --socket PATH   (forks `run` monitors on request; see cmd_launcher)\n"
	      "  osvirt-helper init                 (as pid 1 of a pid namespace; SIGUSR1/SIGUSR2 from outside "
	      "clear/set persist)\n"
	      "  osvirt-helper version\n"
	      "PROCESS OPTIONS: [--caps LIST|all] [--no-new-privs] [--rlimit NAME:SOFT:HARD]...\n"
	      "      [--user UID:GID[:GID,GID...]] [--env K=V]... [--cwd DIR] [--tty]\n"
	      "      [--seccomp-deny SYSCALL[:ERRNO][:ARGn&MASK|:ARGn==V,V...|:ARGn!=V,V...]]...\n",
	      out);
}

bool flag(struct args *a, const char *name)
{
	return !strcmp(a->argv[a->i], name);
}

const char *value(struct args *a, const char *name)
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

char **parse_command(struct args *a)
{
	if (a->i >= a->argc || strcmp(a->argv[a->i], "--"))
		usage_error("expected '--' before the command, got '%s'",
			    a->i < a->argc ? a->argv[a->i] : "end of arguments");
	if (a->i + 1 >= a->argc)
		usage_error("missing command after '--'");
	return a->argv + a->i + 1;
}

static int parse_base(const char *s, int base, const char *what, unsigned long *out, struct error *e)
{
	char *end;
	errno = 0;
	unsigned long v = strtoul(s, &end, base);
	if (errno || end == s || *end || *s == '-')
		return err_usage(e, "%s: not a number: '%s'", what, s);
	*out = v;
	return 0;
}

int parse_ulong(const char *s, const char *what, unsigned long *out, struct error *e)
{
	return parse_base(s, 10, what, out, e);
}

int parse_num(const char *s, const char *what, unsigned long *out, struct error *e)
{
	return parse_base(s, 0, what, out, e);
}

unsigned long arg_ulong(const char *s, const char *what)
{
	struct error e;
	unsigned long v;
	if (parse_ulong(s, what, &v, &e) < 0)
		die(&e, NULL);
	return v;
}
