// SPDX-License-Identifier: Apache-2.0
/* The helper's parsers: command-line values, id maps, mount specs, CRIU's answer. */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include "harness.h"
#include "idmap.h"
#include "mount.h"
#include "net_device.h"
#include "proc.h"
#include "run.h"

TEST(numbers)
{
	struct error e;
	unsigned long v;
	CHECK_INT(parse_ulong("42", "--x", &v, &e), 0);
	CHECK_INT(v, 42);
	CHECK_INT(parse_ulong("0x10", "--x", &v, &e), -1);
	CHECK_INT(e.status, EXIT_USAGE);
	CHECK_STR(e.msg, "--x: not a number: '0x10'");
	CHECK_INT(parse_num("0x10", "--x", &v, &e), 0);
	CHECK_INT(v, 16);
	CHECK_INT(parse_ulong("-1", "--x", &v, &e), -1);
	CHECK_INT(parse_ulong("", "--x", &v, &e), -1);
	CHECK_INT(parse_ulong("99999999999999999999999", "--x", &v, &e), -1);
}

TEST(capabilities)
{
	struct error e;
	uint64_t keep;
	CHECK_INT(parse_caps("all", &keep, &e), 0);
	CHECK(keep == ~0ULL);
	CHECK_INT(parse_caps("chown,CAP_NET_RAW,sys_admin", &keep, &e), 0);
	CHECK(keep == ((1ULL << 0) | (1ULL << 13) | (1ULL << 21)));
	CHECK_INT(parse_caps("chown,flying", &keep, &e), -1);
	CHECK_STR(e.msg, "--caps: unknown capability 'flying'");
	CHECK_INT(parse_caps("", &keep, &e), 0);
	CHECK(keep == 0);
}

TEST(rlimits)
{
	struct error e;
	struct proc_cfg p = {0};
	CHECK_INT(parse_rlimit(&p, "nofile:1024:4096", &e), 0);
	CHECK_INT(parse_rlimit(&p, "core:0:unlimited", &e), 0);
	CHECK_INT(p.nrlimits, 2);
	CHECK_INT(p.rlimits[0].resource, RLIMIT_NOFILE);
	CHECK_INT(p.rlimits[0].lim.rlim_cur, 1024);
	CHECK_INT(p.rlimits[0].lim.rlim_max, 4096);
	CHECK(p.rlimits[1].lim.rlim_max == RLIM_INFINITY);
	CHECK_INT(parse_rlimit(&p, "nofile:10:5", &e), -1);
	CHECK_STR(e.msg, "--rlimit nofile:10:5: soft limit above hard limit");
	CHECK_INT(parse_rlimit(&p, "bogus:1:1", &e), -1);
	CHECK_STR(e.msg, "--rlimit: unknown limit 'bogus'");
	CHECK_INT(parse_rlimit(&p, "nofile:1", &e), -1);
	CHECK_INT(parse_rlimit(&p, "nofile:x:1", &e), -1);
	CHECK_INT(p.nrlimits, 2);
}

TEST(user)
{
	struct error e;
	struct proc_cfg p = {0};
	CHECK_INT(parse_user(&p, "1000:100:10,20", &e), 0);
	CHECK(p.set_user);
	CHECK_INT(p.uid, 1000);
	CHECK_INT(p.gid, 100);
	CHECK_INT(p.ngroups, 2);
	CHECK_INT(p.groups[1], 20);
	CHECK_INT(parse_user(&p, "5:6", &e), 0);
	CHECK_INT(p.ngroups, 0);
	CHECK_INT(parse_user(&p, "5", &e), -1);
	CHECK_STR(e.msg, "--user 5: expected UID:GID[:GID,GID...]");
	CHECK_INT(parse_user(&p, "5:x", &e), -1);
}

TEST(process_options)
{
	struct error e;
	struct proc_cfg p = {.cwd = "/"};
	char *argv[] = {"--env",   "A=1",      "--env=B=2", "--cwd",  "/tmp",  "--no-new-privs",
			"--tty",   "--cgroup", "/x",        "--caps", "chown", "--seccomp-deny",
			"unshare", "--other",  "--env",     "=bad",   NULL};
	struct args a = {16, argv, 0};
	int taken = 0;
	for (; a.i < 13; a.i++)
		taken += parse_proc_opt(&a, &p, &e);
	CHECK_INT(taken, 8);
	CHECK_INT(p.env.n, 2);
	CHECK_STR(p.env.v[1], "B=2");
	CHECK(p.env.v[2] == NULL);
	CHECK_STR(p.cwd, "/tmp");
	CHECK(p.no_new_privs && p.tty && p.drop_caps);
	CHECK_INT(p.cgroups.n, 1);
	CHECK_INT(p.seccomp.n, 1);
	a.i = 13;
	CHECK_INT(parse_proc_opt(&a, &p, &e), 0); /* not a process option */
	a.i = 14;
	CHECK_INT(parse_proc_opt(&a, &p, &e), -1);
	CHECK_STR(e.msg, "--env =bad: expected K=V");
}

TEST(namespace_lists)
{
	struct error e;
	int flags;
	CHECK_INT(ns_list("--no-ns", "uts,net", ~0, &flags, &e), 0);
	CHECK_INT(flags, CLONE_NEWUTS | CLONE_NEWNET);
	CHECK_INT(ns_list("--root-owned-ns", "uts,net", CLONE_NEWUTS | CLONE_NEWNS, &flags, &e), -1);
	CHECK_STR(e.msg, "--root-owned-ns: unknown or unsupported namespace 'net'");
	CHECK_INT(ns_flag("mnt"), CLONE_NEWNS);
	CHECK_INT(ns_flag("time"), 0);
}

TEST(id_maps)
{
	struct error e;
	struct list map = {0};
	CHECK_INT(idmap_add(&map, "--uidmap", "0:100000:65536", &e), 0);
	CHECK_INT(idmap_add(&map, "--uidmap", "65536:1000:1", &e), 0);
	CHECK_STR(map.v[0], "0 100000 65536\n");
	CHECK_INT(idmap_outer(&map, 0), 100000);
	CHECK_INT(idmap_outer(&map, 65535), 165535);
	CHECK_INT(idmap_outer(&map, 65536), 1000);
	CHECK_INT(idmap_outer(&map, 65537), -1);
	char *joined = list_join(&map);
	CHECK_STR(joined, "0 100000 65536\n65536 1000 1\n");
	free(joined);
	CHECK_INT(idmap_add(&map, "--gidmap", "0:1", &e), -1);
	CHECK_STR(e.msg, "--gidmap 0:1: expected IN:OUT:COUNT");
	CHECK_INT(idmap_add(&map, "--gidmap", "0:1:2:3", &e), -1);
	CHECK_INT(idmap_add(&map, "--gidmap", "0:1:2x", &e), -1);
	CHECK_INT(map.n, 2);
}

TEST(mount_specs)
{
	struct error e;
	struct mnt m;
	CHECK_INT(parse_mount("tmpfs:tmpfs:/run:nosuid,nodev,mode=755,size=20%:", &m, &e), 0);
	CHECK_STR(m.type, "tmpfs");
	CHECK_STR(m.dst, "/run");
	CHECK_INT(m.flags, MS_NOSUID | MS_NODEV);
	CHECK_STR(m.data, "mode=755,size=20%");
	CHECK(!m.bind && m.propagation == 0);
	CHECK_INT(parse_mount("rbind:/src:/dst:ro,nosuid:rslave", &m, &e), 0);
	CHECK(m.bind && m.rec && m.prop_rec);
	CHECK_STR(m.src, "/src");
	CHECK(m.data == NULL);
	CHECK(m.attr_set == (MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID));
	CHECK_INT(m.propagation, MS_SLAVE);
	CHECK_INT(parse_mount("bind:/a:/b:rw:private", &m, &e), 0);
	CHECK(m.attr_clr == MOUNT_ATTR_RDONLY && !m.prop_rec && m.propagation == MS_PRIVATE);
	/* OPTS may hold ':' (e.g. an overlay's lowerdir list). */
	CHECK_INT(parse_mount("overlay:overlay:/m:lowerdir=/l1:/l2,upperdir=/u:shared", &m, &e), 0);
	CHECK_STR(m.data, "lowerdir=/l1:/l2,upperdir=/u");
	CHECK_INT(m.propagation, MS_SHARED);
	CHECK_INT(parse_mount("bind::/x::", &m, &e), -1);
	CHECK_INT(e.status, EXIT_USAGE);
	CHECK_INT(parse_mount("bind:/a:/b:mode=1:", &m, &e), -1);
	CHECK_STR(e.msg, "--mount bind:/a:/b:mode=1:: bind mounts take no data option 'mode=1'");
	CHECK_INT(parse_mount("tmpfs:x:/y::sideways", &m, &e), -1);
	CHECK_INT(parse_mount("tmpfs:x:/y", &m, &e), -1);
}

TEST(mac_and_dev_nodes)
{
	unsigned char mac[6];
	CHECK_INT(parse_mac("02:00:0a:ff:00:01", mac), 0);
	CHECK(mac[0] == 2 && mac[3] == 0xff && mac[5] == 1);
	CHECK_INT(parse_mac("02:00:0a:ff:00", mac), -1);
	CHECK_INT(parse_mac("02:00:0a:ff:00:01:02", mac), -1);
	CHECK_INT(parse_mac("02:00:0a:ff:00:100", mac), -1);
	struct error e;
	unsigned nodes;
	CHECK_INT(parse_dev_nodes("null,ptmx", &nodes, &e), 0);
	CHECK_INT(nodes, 1 | DEV_PTMX);
	CHECK_INT(parse_dev_nodes("none", &nodes, &e), 0);
	CHECK_INT(nodes, 0);
	CHECK_INT(parse_dev_nodes("null,floppy", &nodes, &e), -1);
}

static int parse_run_args(struct run_cfg *c, struct error *e, char **argv)
{
	int argc = 0;
	while (argv[argc])
		argc++;
	memset(c, 0, sizeof *c);
	return parse_run(c, argc, argv, e);
}

TEST(run_command_lines)
{
	struct run_cfg c;
	struct error e;
	CHECK_INT(parse_run_args(&c, &e, (char *[]){"--state",    "/s",
						    "--rootfs",   "/r",
						    "--ns",       "pid,mnt,uts,net,user",
						    "--uidmap",   "0:100000:65536",
						    "--gidmap",   "0:100000:65536",
						    "--hostname", "h",
						    "--veth",     "vh0:eth0",
						    "--veth-mtu", "1400",
						    "--no-ns",    "user",
						    "--",         "/sbin/init",
						    NULL}),
		  -1); /* --no-ns user leaves id maps without a user namespace */
	CHECK_STR(e.msg, "run: user in --ns needs --uidmap and --gidmap (and they need it)");
	CHECK_INT(parse_run_args(&c, &e,
				 (char *[]){"--state", "/s", "--rootfs", "/r", "--ns", "pid,mnt,uts,net", "--hostname",
					    "h", "--veth", "vh0:eth0", "--veth-mtu=1400", "--dev-nodes", "null",
					    "--mask", "/proc/kcore", "--", "/sbin/init", "-v", NULL}),
		  0);
	CHECK_INT(c.ns, CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWNET);
	CHECK_STR(c.veth.host, "vh0");
	CHECK_STR(c.veth.peer, "eth0");
	CHECK_INT(c.veth.mtu, 1400);
	CHECK_INT(c.dev_nodes, 1);
	CHECK_STR(c.p.argv[1], "-v");
	CHECK_STR(c.p.cwd, "/");
	CHECK_INT(parse_run_args(&c, &e, (char *[]){"--state", "/s", "--rootfs", "/r", "--", "x", NULL}), -1);
	CHECK_STR(e.msg, "run: --rootfs needs mnt in --ns");
	CHECK_INT(parse_run_args(&c, &e, (char *[]){"--state", "/s", "--ns", "bogus", "--", "x", NULL}), -1);
	CHECK_STR(e.msg, "--ns: unknown namespace 'bogus'");
	CHECK_INT(parse_run_args(
			  &c, &e,
			  (char *[]){"--state", "/s", "--ns", "net", "--join", "net:/proc/1/ns/net", "--", "x", NULL}),
		  -1);
	CHECK_STR(e.msg, "run: --join net:/proc/1/ns/net conflicts with --ns or another --join");
	CHECK_INT(parse_run_args(&c, &e, (char *[]){"--state", "/s", "--veth-mtu", "9000", "--", "x", NULL}), -1);
	CHECK_STR(e.msg, "run: --veth-* options need --veth");
	CHECK_INT(parse_run_args(&c, &e, (char *[]){"--state", "/s", "--frobnicate", "--", "x", NULL}), -1);
	CHECK_STR(e.msg, "run: unknown option '--frobnicate'");
	CHECK_INT(e.status, EXIT_USAGE);
}

TEST(utilities)
{
	char parent[PATH_MAX], name[NAME_MAX + 1];
	split_path("/dev/net/tun", parent, name);
	CHECK_STR(parent, "/dev/net");
	CHECK_STR(name, "tun");
	split_path("/etc/", parent, name);
	CHECK_STR(parent, "/");
	CHECK_STR(name, "etc");
	split_path("file", parent, name);
	CHECK_STR(parent, "/");
	CHECK_STR(name, "file");
	pid_t k = fork();
	if (k == 0)
		_exit(7);
	CHECK_INT(wait_exit_code(k), 7);
	k = fork();
	if (k == 0) {
		raise(SIGKILL);
		_exit(0);
	}
	CHECK_INT(wait_exit_code(k), 128 + SIGKILL);
	CHECK_INT(exit_code(3 << 8), 3);
}

/* Errors: err_text's form, and a warning's line on stderr with errno kept for the caller. */
TEST(errors)
{
	struct error e;
	char text[1200];
	errno = ENOENT;
	CHECK_INT(err_sys(&e, "open %s", "/x"), -1);
	CHECK_INT(e.status, 1);
	err_text(&e, text, sizeof text);
	CHECK_STR(text, "open /x: No such file or directory");
	CHECK_INT(err_set(&e, EXIT_SETUP, "plain %d", 7), -1);
	err_text(&e, text, sizeof text);
	CHECK_STR(text, "plain 7");

	int p[2];
	CHECK_INT(pipe(p), 0);
	fflush(stderr);
	int saved = dup(STDERR_FILENO);
	dup2(p[1], STDERR_FILENO);
	errno = EAGAIN;
	warn_sys("poll %d", 3);
	int after = errno;
	fflush(stderr);
	dup2(saved, STDERR_FILENO);
	close(saved);
	close(p[1]);
	CHECK_INT(after, EAGAIN);
	char got[256] = {0};
	CHECK(read(p[0], got, sizeof got - 1) > 0);
	close(p[0]);
	char want[256];
	snprintf(want, sizeof want, "osvirt-helper: poll 3: %s\n", strerror(EAGAIN));
	CHECK_STR(got, want);
}
