// SPDX-License-Identifier: Apache-2.0
/* User-namespace id maps: parsing, lookup, and a user namespace fd holding them. */
#ifndef OSVIRT_IDMAP_H
#define OSVIRT_IDMAP_H

#include "error.h"
#include "utils.h"

/* "IN:OUT:COUNT" appended to l as the kernel's "IN OUT COUNT\n" line; opt names the option. */
int idmap_add(struct list *l, const char *opt, const char *v, struct error *e);
/* The host id that inner maps to in a map built by idmap_add, or -1. */
long idmap_outer(const struct list *map, unsigned long inner);
/* Writes the maps to /proc/PID/{uid,gid}_map. */
int idmap_write(pid_t pid, const struct list *uidmap, const struct list *gidmap, struct error *e);
/* A user namespace with exactly these maps, as an fd (for MOUNT_ATTR_IDMAP); -1 with errno. */
int idmap_userns_fd(const struct list *uidmap, const struct list *gidmap);

#endif
