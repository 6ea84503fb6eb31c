// SPDX-License-Identifier: Apache-2.0
/* The process options run and exec share, and the last steps before a container process's exec. */
#ifndef OSVIRT_PROC_H
#define OSVIRT_PROC_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/types.h>

#include "args.h"
#include "error.h"
#include "seccomp.h"
#include "utils.h"

#define DEFAULT_PATH "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

/* The namespaces exec joins; it enters the user ns (first here) last. */
struct ns_name {
	const char *name;
	int flag;
};
extern const struct ns_name namespaces[7];
#define NNS 7
/* CLONE_NEW* for a name ("net"), or 0. */
int ns_flag(const char *name);
/* "uts,mnt" to CLONE_NEW* flags, each one of `allowed`; opt names the option in the error. */
int ns_list(const char *opt, const char *v, int allowed, int *out, struct error *e);

struct rlimit_opt {
	int resource;
	struct rlimit lim;
};

struct proc_cfg {
	char **argv;
	struct list env;
	struct list cgroups;
	const char *cwd;
	bool drop_caps;
	uint64_t keep_caps;
	int cap_last; /* read from the host's /proc before any pivot */
	bool no_new_privs;
	struct rlimit_opt rlimits[32];
	size_t nrlimits;
	bool set_user;
	uid_t uid;
	gid_t gid;
	gid_t groups[64];
	size_t ngroups;
	bool tty;
	struct seccomp_policy seccomp;
};

/* "chown,net_raw" (with or without cap_) or "all" to a bit set. */
int parse_caps(const char *list, uint64_t *keep, struct error *e);
/* NAME:SOFT:HARD */
int parse_rlimit(struct proc_cfg *p, const char *v, struct error *e);
/* UID:GID[:GID,GID...] */
int parse_user(struct proc_cfg *p, const char *v, struct error *e);
/*
 * One process option at a->argv[a->i]: 1 when it was one (and is stored),
 * 0 when it is not a process option, -1 when its value is bad.
 */
int parse_proc_opt(struct args *a, struct proc_cfg *p, struct error *e);

int read_cap_last(void);
/* Limits, seccomp, capabilities, ids, cwd, environment, signals, then exec. Returns only on failure. */
int become_process(const struct proc_cfg *p, struct error *e);

#endif
