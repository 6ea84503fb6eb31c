// SPDX-License-Identifier: Apache-2.0
/* The container's root, set up by the init-to-be between clone and exec. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "run.h"

static const struct {
	const char *name;
	unsigned bit;
} dev_node_names[] = {
	{"null", 1 << 0},    {"zero", 1 << 1}, {"full", 1 << 2},   {"random", 1 << 3},
	{"urandom", 1 << 4}, {"tty", 1 << 5},  {"ptmx", DEV_PTMX}, {"fd", DEV_FD},
};

int parse_dev_nodes(const char *v, unsigned *out, struct error *e)
{
	AUTO_FREE char *copy = strdup(v);
	if (!copy)
		return err_sys(e, "--dev-nodes");
	char *save = NULL;
	*out = 0;
	for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		size_t i;
		for (i = 0; i < ARRAY_SIZE(dev_node_names); i++)
			if (!strcmp(t, dev_node_names[i].name))
				break;
		if (i < ARRAY_SIZE(dev_node_names))
			*out |= dev_node_names[i].bit;
		else if (strcmp(t, "none"))
			return err_usage(e, "--dev-nodes: unknown node '%s'", t);
	}
	return 0;
}

static int default_mounts(int rootfd, const struct run_cfg *c, struct error *e)
{
	const unsigned long nsd = MS_NOSUID | MS_NODEV | MS_NOEXEC;
	const struct mnt proc = {.type = "proc", .src = "proc", .dst = "/proc", .flags = nsd};
	if (apply_mount(rootfd, &proc, e) < 0)
		return -1;
	/* A fresh sysfs shows the netns's devices, so it is only allowed with our own net ns. */
	const struct mnt sysfs = {.type = "sysfs", .src = "sysfs", .dst = "/sys", .flags = nsd | MS_RDONLY};
	const struct mnt sysbind = {.bind = true,
				    .rec = true,
				    .src = "/sys",
				    .dst = "/sys",
				    .attr_set = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV |
						MOUNT_ATTR_NOEXEC};
	if (c->sysfs && apply_mount(rootfd, (c->ns & CLONE_NEWNET) ? &sysfs : &sysbind, e) < 0)
		return -1;
	const struct mnt dev = {.type = "tmpfs",
				.src = "tmpfs",
				.dst = "/dev",
				.flags = MS_NOSUID | MS_STRICTATIME,
				.data = "mode=755,size=65536k"};
	if (apply_mount(rootfd, &dev, e) < 0)
		return -1;
	for (size_t i = 0; i < ARRAY_SIZE(dev_node_names); i++) {
		char node[64];
		snprintf(node, sizeof node, "/dev/%s", dev_node_names[i].name);
		if ((c->dev_nodes & dev_node_names[i].bit) && !(dev_node_names[i].bit & (DEV_PTMX | DEV_FD)) &&
		    make_device(rootfd, node, 0666, e) < 0)
			return -1;
	}
	AUTO_FD devfd = open_in_root(rootfd, "/dev", 0);
	if (devfd < 0)
		return err_sys(e, "open /dev");
	static const char *const links[][2] = {
		{"fd", "/proc/self/fd"},       {"stdin", "/proc/self/fd/0"}, {"stdout", "/proc/self/fd/1"},
		{"stderr", "/proc/self/fd/2"}, {"ptmx", "pts/ptmx"},
	};
	for (size_t i = 0; i < ARRAY_SIZE(links); i++) {
		if (!(c->dev_nodes & (i == 4 ? DEV_PTMX : DEV_FD)))
			continue;
		if (symlinkat(links[i][1], devfd, links[i][0]) < 0 && errno != EEXIST)
			return err_sys(e, "symlink /dev/%s", links[i][0]);
	}
	const struct mnt pts = {.type = "devpts",
				.src = "devpts",
				.dst = "/dev/pts",
				.flags = MS_NOSUID | MS_NOEXEC,
				.data = "newinstance,ptmxmode=0666,mode=0620"};
	if ((c->dev_nodes & DEV_PTMX) && apply_mount(rootfd, &pts, e) < 0)
		return -1;
	const struct mnt shm = {
		.type = "tmpfs", .src = "shm", .dst = "/dev/shm", .flags = nsd, .data = "mode=1777,size=65536k"};
	if (apply_mount(rootfd, &shm, e) < 0)
		return -1;
	const struct mnt mq = {.type = "mqueue", .src = "mqueue", .dst = "/dev/mqueue", .flags = nsd};
	if ((c->ns & CLONE_NEWIPC) && apply_mount(rootfd, &mq, e) < 0)
		return -1;
	if (c->console_fd >= 0) {
		/*
		 * Bind by path: the fd's own mount belongs to the monitor's mount ns and
		 * cannot be a bind source here. Check the path still names our pty.
		 */
		struct stat byfd, bypath;
		if (fstat(c->console_fd, &byfd) < 0 || stat(c->console_name, &bypath) < 0)
			return err_sys(e, "console %s", c->console_name);
		if (byfd.st_rdev != bypath.st_rdev)
			return err_errno(e, ENXIO, "console %s", c->console_name);
		const struct mnt console = {.bind = true, .src = c->console_name, .dst = "/dev/console"};
		if (apply_mount(rootfd, &console, e) < 0)
			return -1;
	}
	return 0;
}

/* Binds path (inside the root) over itself, read-only all the way down. A missing path is skipped. */
static int make_readonly(int rootfd, const char *path, struct error *e)
{
	AUTO_FD fd = open_in_root(rootfd, path, 0);
	if (fd < 0)
		return errno == ENOENT ? 0 : err_sys(e, "read-only %s", path);
	char src[64];
	snprintf(src, sizeof src, "/proc/self/fd/%d", fd);
	if (mount(src, src, NULL, MS_BIND | MS_REC, NULL) < 0)
		return err_sys(e, "read-only %s: bind", path);
	close(take_fd(&fd));
	fd = open_in_root(rootfd, path, 0);
	struct mount_attr ro = {.attr_set = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV};
	if (fd < 0 || mount_setattr(fd, "", AT_EMPTY_PATH | AT_RECURSIVE, &ro, sizeof ro) < 0)
		return err_sys(e, "read-only %s: set flags", path);
	return 0;
}

/*
 * Hides path (inside the root): a directory under an empty read-only tmpfs,
 * anything else under the container's own null device (made, hidden, in its
 * /dev when the container has no /dev/null), so no mount of the host's is
 * needed and CRIU sees only container mounts. A missing path is skipped.
 */
static int mask_path(int rootfd, const char *path, struct error *e)
{
	AUTO_FD fd = open_in_root(rootfd, path, 0);
	if (fd < 0)
		return errno == ENOENT ? 0 : err_sys(e, "mask %s", path);
	struct stat st;
	if (fstat(fd, &st) < 0)
		return err_sys(e, "mask %s: stat", path);
	char target[64];
	snprintf(target, sizeof target, "/proc/self/fd/%d", fd);
	if (S_ISDIR(st.st_mode)) {
		if (mount("tmpfs", target, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=4k,mode=0555") <
		    0)
			return err_sys(e, "mask %s: tmpfs", path);
		return 0;
	}
	AUTO_FD null = open_in_root(rootfd, "/dev/null", 0);
	if (null < 0) {
		AUTO_FD devfd = open_in_root(rootfd, "/dev", 0);
		if (devfd < 0)
			return err_sys(e, "mask %s: open /dev", path);
		if (mknodat(devfd, ".osvirt-null", S_IFCHR, makedev(1, 3)) == 0 || errno == EEXIST)
			null = open_in_root(rootfd, "/dev/.osvirt-null", 0);
		else if (errno == EPERM)
			null = open(
				"/dev/null",
				O_PATH |
					O_CLOEXEC); /* a user namespace may not mknod: the host's, as make_device does */
		else
			return err_sys(e, "mask %s: make a null device", path);
	}
	char src[64];
	snprintf(src, sizeof src, "/proc/self/fd/%d", null);
	if (null < 0 || mount(src, target, NULL, MS_BIND, NULL) < 0)
		return err_sys(e, "mask %s: bind a null device", path);
	return 0;
}

/* Makes the root a mount point of its own (pivot_root needs one) and opens it. */
int open_rootfs(const struct run_cfg *c, int *rootfd, struct error *e)
{
	/* Nothing we mount may propagate back to the host. */
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
		return err_sys(e, "make / private");
	if (mount(c->rootfs, c->rootfs, NULL, MS_BIND | MS_REC, NULL) < 0)
		return err_sys(e, "bind rootfs %s", c->rootfs);
	*rootfd = open(c->rootfs, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (*rootfd < 0)
		return err_sys(e, "open rootfs %s", c->rootfs);
	return 0;
}

/*
 * "PATH:CONTENT": a small file the container's init finds ready (e.g.
 * /run/host/container-manager on the /run tmpfs), written by the container's
 * root, so it is the container's own and a checkpoint carries it.
 */
static int write_file_in_root(int rootfd, const char *spec, struct error *e)
{
	const char *colon = strchr(spec, ':');
	char path[PATH_MAX], parent[PATH_MAX], name[NAME_MAX + 1];
	if ((size_t)(colon - spec) >= sizeof path)
		return err_sys(e, "--write-file: path too long");
	memcpy(path, spec, (size_t)(colon - spec));
	path[colon - spec] = '\0';
	split_path(path, parent, name);
	AUTO_FD dir = open_in_root(rootfd, parent, S_IFDIR);
	if (dir < 0)
		return err_sys(e, "write %s: parent directory", path);
	/* An O_PATH fd cannot be a base for creating a file: reopen the directory itself. */
	char dirpath[64];
	snprintf(dirpath, sizeof dirpath, "/proc/self/fd/%d", dir);
	AUTO_FD d = open(dirpath, O_DIRECTORY | O_RDONLY | O_CLOEXEC);
	AUTO_FD fd = d < 0 ? -1 : openat(d, name, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644);
	if (fd < 0)
		return err_sys(e, "write %s", path);
	size_t len = strlen(colon + 1);
	if (write(fd, colon + 1, len) != (ssize_t)len || write(fd, "\n", 1) != 1)
		return err_sys(e, "write %s", path);
	return 0;
}

int setup_rootfs(const struct run_cfg *c, int rootfd, struct error *e)
{
	/*
	 * Standard mounts first, then the caller's: a --mount under /dev or /proc
	 * would otherwise be hidden by the standard mount on top of it.
	 */
	if (c->default_mounts && default_mounts(rootfd, c, e) < 0)
		return -1;
	for (size_t i = 0; i < c->nmounts; i++)
		if (apply_mount(rootfd, &c->mounts[i], e) < 0)
			return -1;
	for (size_t i = 0; i < c->files.n; i++)
		if (write_file_in_root(rootfd, c->files.v[i], e) < 0)
			return -1;
	for (size_t i = 0; i < c->devices.n; i++)
		if (make_device(rootfd, c->devices.v[i], 0, e) < 0)
			return -1;
	for (size_t i = 0; i < c->ro_paths.n; i++)
		if (make_readonly(rootfd, c->ro_paths.v[i], e) < 0)
			return -1;
	for (size_t i = 0; i < c->masks.n; i++)
		if (mask_path(rootfd, c->masks.v[i], e) < 0)
			return -1;
	if (fchdir(rootfd) < 0)
		return err_sys(e, "chdir rootfs");
	if (syscall(SYS_pivot_root, ".", ".") < 0)
		return err_sys(e, "pivot_root");
	/* The old root is now stacked on "."; detach it so no host path stays reachable. */
	if (umount2(".", MNT_DETACH) < 0)
		return err_sys(e, "detach old root");
	if (chdir("/") < 0)
		return err_sys(e, "chdir /");
	struct mount_attr ro = {.attr_set = MOUNT_ATTR_RDONLY};
	if (c->readonly && mount_setattr(AT_FDCWD, "/", 0, &ro, sizeof ro) < 0)
		return err_sys(e, "remount / read-only");
	return 0;
}
