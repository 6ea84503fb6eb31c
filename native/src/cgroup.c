// SPDX-License-Identifier: Apache-2.0
#define _GNU_SOURCE
#include "cgroup.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <unistd.h>

/*
 * Writing a pid to cgroup.procs takes the kernel's global cgroup_threadgroup_rwsem
 * for writing, and taking it waits for an RCU grace period: 5 to 15 ms on this
 * kind of host, on every container start and every exec. Two documented paths
 * skip that lock, and these functions use them:
 *   - clone3(CLONE_INTO_CGROUP) creates the child directly in a cgroup2
 *     directory (fork only read-locks the rwsem);
 *   - a v1 hierarchy's `tasks` file given "0" moves the calling thread, and the
 *     kernel does not take the global lock for a thread moving itself. Every
 *     process that does this here is single-threaded, so the thread is the
 *     whole process.
 * The files are opened by the parent (before any pivot_root or setns) and the
 * child writes to them: the kernel checks the opener's credentials.
 */
#ifndef CLONE_INTO_CGROUP
#define CLONE_INTO_CGROUP 0x200000000ULL
#endif
#ifndef CGROUP2_SUPER_MAGIC
#define CGROUP2_SUPER_MAGIC 0x63677270
#endif

static int open_one(const char *dir_path, struct cgroup_join *j)
{
	AUTO_FD dir = open(dir_path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	struct statfs sf;
	if (dir < 0 || fstatfs(dir, &sf) < 0)
		return -1;
	bool v2 = (unsigned long)sf.f_type == CGROUP2_SUPER_MAGIC;
	if (v2 && j->v2dir < 0) {
		if ((j->v2procs = openat(dir, "cgroup.procs", O_WRONLY | O_CLOEXEC)) < 0)
			return -1;
		j->v2dir = take_fd(&dir);
		return 0;
	}
	if (j->ntasks == ARRAY_SIZE(j->tasks)) {
		errno = E2BIG;
		return -1;
	}
	int fd = openat(dir, v2 ? "cgroup.procs" : "tasks", O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	j->tasks[j->ntasks++] = fd;
	return 0;
}

int cgroup_join_open(const struct list *dirs, struct cgroup_join *j, struct error *e)
{
	*j = (struct cgroup_join){.v2dir = -1, .v2procs = -1};
	for (size_t i = 0; i < dirs->n; i++) {
		if (open_one(dirs->v[i], j) < 0) {
			err_sys(e, "cgroup %s", dirs->v[i]);
			cgroup_join_close(j);
			return -1;
		}
	}
	return 0;
}

pid_t clone_into(unsigned long flags, struct cgroup_join *j)
{
	if (j->v2dir >= 0) {
		struct {
			uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls, set_tid,
				set_tid_size, cgroup;
		} args = {.flags = flags | CLONE_INTO_CGROUP, .exit_signal = SIGCHLD, .cgroup = (uint64_t)j->v2dir};
		pid_t pid = (pid_t)syscall(SYS_clone3, &args, sizeof args);
		if (pid >= 0) {
			j->placed = true;
			return pid;
		}
		if (errno != ENOSYS && errno != E2BIG && errno != EINVAL)
			return -1;
		/* A kernel before 5.7: the child joins through cgroup.procs instead. */
	}
	return (pid_t)syscall(SYS_clone, flags | SIGCHLD, NULL, NULL, NULL, NULL);
}

void cgroup_join_close(struct cgroup_join *j)
{
	if (j->v2dir >= 0)
		close(j->v2dir);
	if (j->v2procs >= 0)
		close(j->v2procs);
	for (size_t i = 0; i < j->ntasks; i++)
		close(j->tasks[i]);
	j->v2dir = j->v2procs = -1;
	j->ntasks = 0;
}

int cgroup_join_self(struct cgroup_join *j)
{
	int rc = 0;
	if (!j->placed && j->v2procs >= 0 && write(j->v2procs, "0", 1) != 1)
		rc = -1;
	for (size_t i = 0; i < j->ntasks && !rc; i++)
		if (write(j->tasks[i], "0", 1) != 1)
			rc = -1;
	int saved = errno;
	cgroup_join_close(j);
	errno = saved;
	return rc;
}
