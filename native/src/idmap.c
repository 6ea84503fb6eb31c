// SPDX-License-Identifier: Apache-2.0
#define _GNU_SOURCE
#include "idmap.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>

int idmap_add(struct list *l, const char *opt, const char *v, struct error *e)
{
	unsigned long in, out, count;
	char extra;
	if (sscanf(v, "%lu:%lu:%lu%c", &in, &out, &count, &extra) != 3)
		return err_usage(e, "%s %s: expected IN:OUT:COUNT", opt, v);
	char *line;
	if (asprintf(&line, "%lu %lu %lu\n", in, out, count) < 0)
		return err_sys(e, "%s", opt);
	if (list_add(l, line) < 0) {
		free(line);
		return err_sys(e, "%s", opt);
	}
	return 0;
}

long idmap_outer(const struct list *map, unsigned long inner)
{
	for (size_t i = 0; i < map->n; i++) {
		unsigned long in, out, count;
		if (sscanf(map->v[i], "%lu %lu %lu", &in, &out, &count) == 3 && inner >= in && inner - in < count)
			return (long)(out + inner - in);
	}
	return -1;
}

static int write_map(pid_t pid, const char *which, const struct list *map)
{
	char path[64];
	snprintf(path, sizeof path, "/proc/%d/%s", pid, which);
	AUTO_FREE char *lines = list_join(map);
	return lines ? write_file(path, lines) : -1;
}

int idmap_write(pid_t pid, const struct list *uidmap, const struct list *gidmap, struct error *e)
{
	if (write_map(pid, "uid_map", uidmap) < 0)
		return err_sys(e, "write uid_map");
	if (write_map(pid, "gid_map", gidmap) < 0)
		return err_sys(e, "write gid_map");
	return 0;
}

/*
 * Only the maps matter to an idmapped mount, so a short-lived child makes the
 * namespace and is gone before we return (LXC does the same for its idmapped
 * rootfs).
 */
int idmap_userns_fd(const struct list *uidmap, const struct list *gidmap)
{
	int ready[2], done[2];
	if (pipe2(ready, O_CLOEXEC) < 0)
		return -1;
	if (pipe2(done, O_CLOEXEC) < 0) {
		close_keep_errno(ready[0]);
		close_keep_errno(ready[1]);
		return -1;
	}
	pid_t k = fork();
	if (k < 0) {
		for (int i = 0; i < 2; i++) {
			close_keep_errno(ready[i]);
			close_keep_errno(done[i]);
		}
		return -1;
	}
	if (k == 0) {
		close(ready[0]);
		close(done[1]);
		char b = unshare(CLONE_NEWUSER) < 0 ? 1 : 0;
		if (write(ready[1], &b, 1) != 1 || b)
			_exit(1);
		(void)!read(done[0], &b, 1); /* until the parent has the fd */
		_exit(0);
	}
	close(ready[1]);
	close(done[0]);
	char b = 1, path[64];
	int fd = -1;
	if (read(ready[0], &b, 1) == 1 && !b) {
		if (write_map(k, "uid_map", uidmap) == 0 && write_map(k, "gid_map", gidmap) == 0) {
			snprintf(path, sizeof path, "/proc/%d/ns/user", k);
			fd = open(path, O_RDONLY | O_CLOEXEC);
		}
	} else {
		errno = EPERM;
	}
	int saved = errno;
	close(ready[0]);
	close(done[1]);
	waitpid(k, NULL, 0);
	errno = saved;
	return fd;
}
