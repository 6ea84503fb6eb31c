// SPDX-License-Identifier: Apache-2.0
/* Mounts inside a container root, the --mount parser, and idmapped mounts. */
#ifndef OSVIRT_MOUNT_H
#define OSVIRT_MOUNT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "error.h"
#include "utils.h"

struct mnt {
	const char *type, *src, *dst, *data;
	unsigned long flags;         /* MS_* for a new (non-bind) mount */
	uint64_t attr_set, attr_clr; /* MOUNT_ATTR_* applied to a bind after it exists */
	uint64_t propagation;        /* MS_PRIVATE, MS_SLAVE, ... or 0 */
	bool bind, rec, prop_rec;
	bool has_tree; /* tree: an idmapped copy of src the monitor made (user namespace) */
	int tree;
};

/*
 * Opens path inside rootfd the way the container will see it: symlinks in the
 * image resolve inside the rootfs and can never point a mount at a host path.
 * With create set (S_IFDIR or S_IFREG), missing components are created.
 */
int open_in_root(int rootfd, const char *path, mode_t create);
int apply_mount(int rootfd, const struct mnt *m, struct error *e);
/* "TYPE:SRC:DST:OPTS:PROPAGATION"; m's strings point into one allocation owned by m->type. */
int parse_mount(const char *spec, struct mnt *m, struct error *e);
/* Recreates a host device node at the same path in the container. */
int make_device(int rootfd, const char *path, mode_t force_mode, struct error *e);

/* A detached copy of the mount at src whose owners appear through userns's maps; -1 with errno. */
int idmapped_clone(const char *src, int userns, bool recursive);
/* The idmapped root of a user-namespaced container at target (see mount.c). */
int mount_idmapped_root(const char *overlay, const char *bind, const char *target, int userns,
			const struct list *uidmap, const struct list *gidmap, struct error *e);
/* An overlay "LOWER[:LOWER...]:UPPER:WORK" (lower layers top first) mounted at target. */
int mount_overlay(const char *spec, const char *target, struct error *e);

int cmd_mount_root(int argc, char **argv);

#endif
