// SPDX-License-Identifier: Apache-2.0
/* Joining a container's cgroups without the kernel's global cgroup lock (see cgroup.c). */
#ifndef OSVIRT_CGROUP_H
#define OSVIRT_CGROUP_H

#include <stdbool.h>
#include <sys/types.h>

#include "error.h"
#include "utils.h"

struct cgroup_join {
	int v2dir;     /* the cgroup2 directory, for CLONE_INTO_CGROUP, or -1 */
	int v2procs;   /* its cgroup.procs: the fallback when clone3 cannot place us */
	int tasks[16]; /* each v1 hierarchy's tasks file */
	size_t ntasks;
	bool placed; /* clone3 put the child in v2dir */
};

/* Opens what cgroup_join_self needs for dirs; on failure everything opened is closed again. */
int cgroup_join_open(const struct list *dirs, struct cgroup_join *j, struct error *e);
/* fork(), or clone with flags, into the cgroup2 directory when there is one. */
pid_t clone_into(unsigned long flags, struct cgroup_join *j);
void cgroup_join_close(struct cgroup_join *j);
/* In the child: join every hierarchy not joined at clone time, then close the files. */
int cgroup_join_self(struct cgroup_join *j);

#endif
