// SPDX-License-Identifier: Apache-2.0
#define _GNU_SOURCE
#include "mount.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "args.h"
#include "idmap.h"

int open_in_root(int rootfd, const char *path, mode_t create)
{
	struct open_how how = {
		.flags = O_PATH | O_CLOEXEC,
		.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
	};
	int fd = (int)syscall(SYS_openat2, rootfd, path, &how, sizeof how);
	if (fd >= 0 || errno != ENOENT || !create)
		return fd;
	char parent[PATH_MAX], name[NAME_MAX + 1];
	split_path(path, parent, name);
	if (!strcmp(parent, path))
		return -1;
	AUTO_FD pfd = open_in_root(rootfd, parent, S_IFDIR);
	if (pfd < 0)
		return -1;
	int r = S_ISDIR(create) ? mkdirat(pfd, name, 0755)
				: openat(pfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
	if (r < 0 && errno != EEXIST)
		return -1;
	if (r >= 0 && !S_ISDIR(create))
		close(r);
	return (int)syscall(SYS_openat2, rootfd, path, &how, sizeof how);
}

int apply_mount(int rootfd, const struct mnt *m, struct error *e)
{
	bool dir = true;
	struct stat st;
	if (m->bind) {
		if ((m->has_tree ? fstat(m->tree, &st) : stat(m->src, &st)) < 0)
			return err_sys(e, "mount %s: %s", m->dst, m->src);
		dir = S_ISDIR(st.st_mode);
	}
	AUTO_FD fd = open_in_root(rootfd, m->dst, dir ? S_IFDIR : S_IFREG);
	if (fd < 0)
		return err_sys(e, "mount %s: target", m->dst);
	/* Mounting on the /proc/self/fd link mounts exactly on what open_in_root found. */
	char target[64];
	snprintf(target, sizeof target, "/proc/self/fd/%d", fd);
	int r;
	if (m->has_tree)
		r = (int)syscall(SYS_move_mount, m->tree, "", fd, "",
				 MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH);
	else if (m->bind)
		r = mount(m->src, target, NULL, MS_BIND | (m->rec ? MS_REC : 0), NULL);
	else
		r = mount(m->src && *m->src ? m->src : m->type, target, m->type, m->flags, m->data);
	if (r < 0)
		return err_sys(e, "mount %s on %s", m->bind ? m->src : m->type, m->dst);
	close(take_fd(&fd));
	bool setattr = m->bind && (m->attr_set || m->attr_clr);
	if (!setattr && !m->propagation)
		return 0;
	/* Reopen: the old fd names the directory under the new mount, not the mount. */
	fd = open_in_root(rootfd, m->dst, 0);
	if (fd < 0)
		return err_sys(e, "mount %s: reopen", m->dst);
	/*
	 * mount_setattr() rather than a MS_REMOUNT|MS_BIND: it can be recursive (a
	 * read-only rbind stays read-only below) and only changes the flags named,
	 * so locked flags inherited from the host (nosuid, nodev) are never cleared.
	 */
	struct mount_attr attr = {.attr_set = m->attr_set, .attr_clr = m->attr_clr};
	if (setattr && mount_setattr(fd, "", AT_EMPTY_PATH | (m->rec ? AT_RECURSIVE : 0), &attr, sizeof attr) < 0)
		return err_sys(e, "mount %s: set flags", m->dst);
	struct mount_attr prop = {.propagation = m->propagation};
	if (m->propagation &&
	    mount_setattr(fd, "", AT_EMPTY_PATH | (m->prop_rec ? AT_RECURSIVE : 0), &prop, sizeof prop) < 0)
		return err_sys(e, "mount %s: set propagation", m->dst);
	return 0;
}

static const struct {
	const char *name;
	unsigned long ms;
	uint64_t set, clr;
} mount_flags[] = {
	{"ro", MS_RDONLY, MOUNT_ATTR_RDONLY, 0},
	{"rw", 0, 0, MOUNT_ATTR_RDONLY},
	{"nosuid", MS_NOSUID, MOUNT_ATTR_NOSUID, 0},
	{"nodev", MS_NODEV, MOUNT_ATTR_NODEV, 0},
	{"noexec", MS_NOEXEC, MOUNT_ATTR_NOEXEC, 0},
	{"relatime", MS_RELATIME, MOUNT_ATTR_RELATIME, MOUNT_ATTR__ATIME},
	{"noatime", MS_NOATIME, MOUNT_ATTR_NOATIME, MOUNT_ATTR__ATIME},
};

/* OPTS (the only field that may hold ':') is what remains in the middle. */
static int parse_fields(char *s, const char *spec, struct mnt *m, struct error *e)
{
	char *c1 = strchr(s, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
	char *c3 = c2 ? strchr(c2 + 1, ':') : NULL, *c4 = strrchr(s, ':');
	if (!c3 || c4 == c3)
		return err_usage(e, "--mount %s: expected TYPE:SRC:DST:OPTS:PROPAGATION", spec);
	*c1 = *c2 = *c3 = *c4 = '\0';
	m->type = s;
	m->src = c1 + 1;
	m->dst = c2 + 1;
	m->bind = !strcmp(s, "bind") || !strcmp(s, "rbind");
	m->rec = !strcmp(s, "rbind");
	if (!*m->type || !*m->dst || (m->bind && !*m->src))
		return err_usage(e, "--mount %s: TYPE, DST (and SRC for binds) are required", spec);

	/* Data options are gathered in place, after the known flags are taken out. */
	char *opts = c3 + 1, *data = opts, *save = NULL;
	size_t dlen = 0;
	for (char *o = strtok_r(opts, ",", &save); o; o = strtok_r(NULL, ",", &save)) {
		size_t i;
		for (i = 0; i < ARRAY_SIZE(mount_flags); i++)
			if (!strcmp(o, mount_flags[i].name))
				break;
		if (i < ARRAY_SIZE(mount_flags)) {
			m->flags |= mount_flags[i].ms;
			m->attr_set |= mount_flags[i].set;
			m->attr_clr |= mount_flags[i].clr;
			continue;
		}
		if (m->bind)
			return err_usage(e, "--mount %s: bind mounts take no data option '%s'", spec, o);
		if (dlen)
			data[dlen++] = ',';
		size_t olen = strlen(o);
		memmove(data + dlen, o, olen);
		dlen += olen;
	}
	data[dlen] = '\0';
	m->data = dlen ? data : NULL;

	const char *prop = c4 + 1;
	bool rec = prop[0] == 'r' && strcmp(prop, "rw");
	const char *base = rec ? prop + 1 : prop;
	m->prop_rec = rec;
	if (!*prop)
		m->propagation = 0;
	else if (!strcmp(base, "private"))
		m->propagation = MS_PRIVATE;
	else if (!strcmp(base, "slave"))
		m->propagation = MS_SLAVE;
	else if (!strcmp(base, "shared"))
		m->propagation = MS_SHARED;
	else if (!strcmp(base, "unbindable"))
		m->propagation = MS_UNBINDABLE;
	else
		return err_usage(e, "--mount %s: unknown propagation '%s'", spec, prop);
	return 0;
}

int parse_mount(const char *spec, struct mnt *m, struct error *e)
{
	memset(m, 0, sizeof *m);
	char *s = strdup(spec);
	if (!s)
		return err_sys(e, "--mount");
	if (parse_fields(s, spec, m, e) < 0) {
		free(s);
		memset(m, 0, sizeof *m);
		return -1;
	}
	return 0;
}

int make_device(int rootfd, const char *path, mode_t force_mode, struct error *e)
{
	struct stat st;
	if (stat(path, &st) < 0)
		return err_sys(e, "device %s", path);
	if (!S_ISCHR(st.st_mode) && !S_ISBLK(st.st_mode))
		return err_errno(e, ENODEV, "device %s", path);
	char parent[PATH_MAX], name[NAME_MAX + 1];
	split_path(path, parent, name);
	AUTO_FD pfd = open_in_root(rootfd, parent, S_IFDIR);
	if (pfd < 0)
		return err_sys(e, "device %s: create %s", path, parent);
	mode_t perm = force_mode ? force_mode : (st.st_mode & 07777);
	if (mknodat(pfd, name, (st.st_mode & S_IFMT) | perm, st.st_rdev) == 0) {
		if (fchmodat(pfd, name, perm, 0) < 0) /* defeat the umask */
			return err_sys(e, "device %s: chmod", path);
	} else if (errno == EPERM) {
		/* A user namespace may not mknod: bind the host's node instead. */
		struct mnt b = {.bind = true, .src = path, .dst = path};
		return apply_mount(rootfd, &b, e);
	} else if (errno != EEXIST) {
		return err_sys(e, "device %s: mknod", path);
	}
	return 0;
}

/* ------------------------------------------------------------------ idmapped mounts */

int idmapped_clone(const char *src, int userns, bool recursive)
{
	int rec = recursive ? AT_RECURSIVE : 0;
	AUTO_FD fd = (int)syscall(SYS_open_tree, AT_FDCWD, src, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | rec);
	if (fd < 0)
		return -1;
	struct mount_attr attr = {.attr_set = MOUNT_ATTR_IDMAP, .userns_fd = (uint64_t)userns};
	if (mount_setattr(fd, "", AT_EMPTY_PATH | rec, &attr, sizeof attr) < 0)
		return -1;
	return take_fd(&fd);
}

/*
 * Mounts overlay "LOWER[:LOWER...]:UPPER:WORK" (lower layers top first, as
 * overlayfs lists them) on target. With userns >= 0 each lower layer is an
 * idmapped mount (overlayfs itself cannot be idmapped): what is root-owned on
 * disk (a shared template, an image's layers) appears owned by the
 * container's root; the upper holds the container's own files under its host
 * ids, and its top directory belongs to the container's root. Layers are
 * added one by one ("lowerdir+", Linux 6.8), so an image of any depth mounts:
 * the one-page limit of mount(2)'s option string never applies.
 */
int mount_overlay_layers(const char *spec, const char *target, int userns, const struct list *uidmap,
			 const struct list *gidmap, struct error *e)
{
	size_t n = 1;
	for (const char *p = spec; *p; p++)
		n += *p == ':';
	AUTO_FREE char *buf = strdup(spec);
	AUTO_FREE const char **parts = calloc(n, sizeof *parts);
	AUTO_FREE int *fds = calloc(n, sizeof *fds);
	if (!buf || !parts || !fds)
		return err_sys(e, "overlay spec");
	size_t k = 0;
	char *save = NULL;
	for (char *t = strtok_r(buf, ":", &save); t && k < n; t = strtok_r(NULL, ":", &save))
		parts[k++] = t;
	if (k < 3)
		return err_errno(e, EINVAL, "overlay spec %s (expected LOWER[:LOWER...]:UPPER:WORK)", spec);
	size_t nlower = k - 2;
	const char *upper = parts[k - 2], *work = parts[k - 1];
	for (size_t i = 0; i < n; i++)
		fds[i] = -1;
	int rc = -1;
	AUTO_FD fsfd = -1;
	AUTO_FD mnt = -1;
	if (userns >= 0) {
		for (size_t i = 0; i < nlower; i++) {
			fds[i] = idmapped_clone(parts[i], userns, false);
			if (fds[i] < 0) {
				err_sys(e, "idmapped mount of a lower layer (does its filesystem support idmapped "
					   "mounts?)");
				goto out;
			}
		}
		if (chown(upper, (uid_t)idmap_outer(uidmap, 0), (gid_t)idmap_outer(gidmap, 0)) < 0) {
			err_sys(e, "chown the upper layer to the container's root");
			goto out;
		}
	}
	fsfd = (int)syscall(SYS_fsopen, "overlay", FSOPEN_CLOEXEC);
	if (fsfd < 0) {
		err_sys(e, "fsopen overlay");
		goto out;
	}
	if (syscall(SYS_fsconfig, fsfd, FSCONFIG_SET_STRING, "source", "overlay", 0) < 0) {
		err_sys(e, "overlay source");
		goto out;
	}
	for (size_t i = 0; i < nlower; i++) {
		char fdpath[64];
		const char *layer = parts[i];
		if (fds[i] >= 0) {
			snprintf(fdpath, sizeof fdpath, "/proc/self/fd/%d", fds[i]);
			layer = fdpath;
		}
		if (syscall(SYS_fsconfig, fsfd, FSCONFIG_SET_STRING, "lowerdir+", layer, 0) < 0) {
			err_sys(e, "add lower layer %s (lowerdir+ needs Linux 6.8)", parts[i]);
			goto out;
		}
	}
	if (syscall(SYS_fsconfig, fsfd, FSCONFIG_SET_STRING, "upperdir", upper, 0) < 0) {
		err_sys(e, "overlay upperdir %s", upper);
		goto out;
	}
	if (syscall(SYS_fsconfig, fsfd, FSCONFIG_SET_STRING, "workdir", work, 0) < 0) {
		err_sys(e, "overlay workdir %s", work);
		goto out;
	}
	if (syscall(SYS_fsconfig, fsfd, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0) {
		err_sys(e, "create the overlay");
		goto out;
	}
	mnt = (int)syscall(SYS_fsmount, fsfd, FSMOUNT_CLOEXEC, 0);
	if (mnt < 0) {
		err_sys(e, "fsmount the overlay");
		goto out;
	}
	if (syscall(SYS_move_mount, mnt, "", AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH) < 0) {
		err_sys(e, "attach the overlay on %s", target);
		goto out;
	}
	rc = 0;
out:
	for (size_t i = 0; i < n; i++)
		if (fds[i] >= 0)
			close(fds[i]);
	return rc;
}

int mount_overlay(const char *spec, const char *target, struct error *e)
{
	return mount_overlay_layers(spec, target, -1, NULL, NULL, e);
}

/*
 * The root of a user-namespaced container, mounted at target in the host's
 * mount namespace: overlay (see mount_overlay_layers), or bind SRC: an
 * idmapped bind of SRC, writes land 0-based on disk.
 */
int mount_idmapped_root(const char *overlay, const char *bind, const char *target, int userns,
			const struct list *uidmap, const struct list *gidmap, struct error *e)
{
	if (!bind)
		return mount_overlay_layers(overlay, target, userns, uidmap, gidmap, e);
	AUTO_FD tree = idmapped_clone(bind, userns, false);
	if (tree < 0)
		return err_sys(e,
			       "idmapped mount of the root directory (does its filesystem support idmapped mounts?)");
	if (syscall(SYS_move_mount, tree, "", AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH) < 0)
		return err_sys(e, "attach the idmapped root");
	return 0;
}

/* mount-root: what --host-overlay / --host-bind do for run, for a root mounted before a restore. */
int cmd_mount_root(int argc, char **argv)
{
	struct args a = {argc, argv, 0};
	struct list uidmap = {0}, gidmap = {0};
	const char *v, *overlay = NULL, *bind = NULL, *target = NULL;
	struct error e;
	for (; a.i < argc; a.i++) {
		int rc = 0;
		if ((v = value(&a, "--uidmap")))
			rc = idmap_add(&uidmap, "--uidmap", v, &e);
		else if ((v = value(&a, "--gidmap")))
			rc = idmap_add(&gidmap, "--gidmap", v, &e);
		else if ((v = value(&a, "--overlay")))
			overlay = v;
		else if ((v = value(&a, "--bind")))
			bind = v;
		else if (argv[a.i][0] != '-' && !target)
			target = argv[a.i];
		else
			usage_error("mount-root: unknown option '%s'", argv[a.i]);
		if (rc < 0)
			die(&e, NULL);
	}
	if (!target || !uidmap.n || !gidmap.n || !overlay == !bind)
		usage_error("mount-root: needs --uidmap, --gidmap, one of --overlay and --bind, and TARGET");
	AUTO_FD userns = idmap_userns_fd(&uidmap, &gidmap);
	if (userns < 0)
		err_sys(&e, "user namespace for the id mapping");
	if (userns < 0 || mount_idmapped_root(overlay, bind, target, userns, &uidmap, &gidmap, &e) < 0) {
		char text[1200];
		err_text(&e, text, sizeof text);
		fprintf(stderr, "osvirt-helper mount-root %s: %s\n", target, text);
		return 1;
	}
	return 0;
}
