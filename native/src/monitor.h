// SPDX-License-Identifier: Apache-2.0
/*
 * The per-container monitor: the init's parent (run) or the restored init's
 * subreaper (restore). It writes the state files, serves monitor.sock and
 * console.sock, and records the init's exit.
 */
#ifndef OSVIRT_MONITOR_H
#define OSVIRT_MONITOR_H

#include <stdbool.h>
#include <sys/types.h>

#include "error.h"

struct monitor;

/*
 * Written to the state dir's `protocol` file: monitor.sock speaks helper.proto's
 * ControlRequest/ControlEvent frames. A monitor of an older build writes no
 * such file and speaks text lines (docs/helper-protocol.md, compatibility).
 */
#define MONITOR_PROTOCOL "osvirt.helper.v1"

/*
 * What run and restore do first: outlive the caller (own session, SIGPIPE and
 * SIGHUP ignored), reap the container's orphans (subreaper), open the state
 * dir, drop a previous exit record and write monitor.pid.
 */
int monitor_prologue(const char *state, struct error *e);
/* The state dir opened by monitor_prologue. */
int monitor_statefd(void);

/* What a failed start undoes: the child to kill, the host mount to unmount, the host veth to delete. */
void monitor_set_child(pid_t pid);
void monitor_set_host_mount(char *abs_path);
void monitor_set_host_veth(const char *name);
/* restore: stdout carries CRIU frames, so a failure is reported on stderr, not as a StartEvent. */
void monitor_set_frames_on_stdout(void);

void monitor_unmount_host(void);
void monitor_remove_state_files(void);
/* Start failure: kill the child, undo, report (a Failed StartEvent, or stderr), exit 1. */
NORETURN void monitor_fail(const struct error *e);
FORMAT(1, 2) NORETURN void monitor_failf(const char *fmt, ...);
/* monitor_fail of the failed call's errno: "what: strerror(errno)". */
FORMAT(1, 2) NORETURN void monitor_fail_sys(const char *fmt, ...);

/*
 * Sockets exist, the SIGCHLD signalfd is open and init.pid is written once this
 * returns, so a caller may connect at once and serving cannot fail. NULL with
 * *e set when one of them failed.
 */
struct monitor *monitor_new(pid_t init, int master, int logpipe, bool tty, struct error *e);
/*
 * Detaches from the caller's pipes and serves until the init exits. SIGCHLD must
 * be blocked since before the init existed, so an early exit is still pending.
 */
NORETURN void monitor_serve(struct monitor *m);

#endif
