// SPDX-License-Identifier: Apache-2.0
/* run: start a container and stay as its monitor. */
#ifndef OSVIRT_RUN_H
#define OSVIRT_RUN_H

#include <stdbool.h>

#include "cgroup.h"
#include "mount.h"
#include "net_device.h"
#include "proc.h"

/* The standard /dev content, selectable with --dev-nodes. */
#define DEV_NODES_ALL 0xff
#define DEV_PTMX (1u << 6)
#define DEV_FD (1u << 7)

struct run_cfg {
	struct proc_cfg p;
	const char *state, *rootfs, *hostname, *domainname;
	int ns; /* CLONE_NEW* flags to create */
	struct {
		int type;
		const char *spec;
	} joins[3];
	size_t njoins;
	struct list uidmap, gidmap; /* "IN OUT COUNT" lines */
	struct mnt *mounts;
	size_t nmounts;
	struct list devices;
	bool default_mounts, readonly, sysfs;
	bool lo_up;                  /* bring the new net ns's loopback up (saves an `ip` run) */
	const char *host_overlay;    /* LOWER:UPPER:WORK mounted on --rootfs in the host's mount ns */
	const char *host_bind;       /* SRC bound (idmapped) on --rootfs in the host's mount ns */
	int console_fd;              /* pty slave (--tty) */
	char console_name[64];       /* its /dev/pts/N path */
	unsigned dev_nodes;          /* DEV_* bits: what the standard /dev holds */
	struct list masks, ro_paths; /* container paths hidden / made read-only */
	struct list files;           /* "PATH:CONTENT" files written after the mounts */
	int owned_ns;                /* CLONE_NEWUTS|CLONE_NEWNS: owned by a root-owned user ns */
	struct cgroup_join *cg;      /* the container's cgroups, joined by the child itself */
	struct veth_cfg veth;        /* --veth: a pair on a bridge (veth.host set) */
};

/* Parses and checks run's command line (argv after "run"); a usage error fills e. */
int parse_run(struct run_cfg *c, int argc, char **argv, struct error *e);
int cmd_run(int argc, char **argv);

/* rootfs.c: --dev-nodes LIST, and the container's root, inside the child. */
int parse_dev_nodes(const char *v, unsigned *out, struct error *e);
int open_rootfs(const struct run_cfg *c, int *rootfd, struct error *e);
int setup_rootfs(const struct run_cfg *c, int rootfd, struct error *e);

#endif
