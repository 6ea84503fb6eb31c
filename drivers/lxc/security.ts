// The hardening every lxc container gets unless its spec relaxes it: a
// seccomp deny list for what containers have no business calling, and
// masked or read-only /proc and /sys paths (LXC's proc:mixed / sys:ro and
// the usual masked paths). The capability bounding set is in
// src/core/capabilities.ts.
import type { Security } from '../../src/gen/osvirt/v1/container';

/** MS_REMOUNT from <sys/mount.h>: a remount could make read-only /proc/sys writable again. */
const MS_REMOUNT = 0x20;

export const DEFAULT_SECCOMP_DENY = [
  'kexec_load',
  'kexec_file_load',
  'init_module',
  'finit_module',
  'delete_module',
  'open_by_handle_at',
  'iopl',
  'ioperm',
  'swapon',
  'swapoff',
  'acct',
  'syslog',
  'add_key',
  'request_key',
  'keyctl',
  'bpf',
  'perf_event_open',
];

/**
 * Refused only where the container shares the host's user namespace
 * (security.privileged): there a remount, fspick or mount_setattr could make
 * a read-only /proc/sys writable again. In a user namespace they stay allowed,
 * because systemd needs them to give its services their own mount namespaces
 * (ProtectSystem=, PrivateTmp=, credentials: a MS_REMOUNT|MS_BIND|MS_RDONLY
 * of each path), and the kernel's own rules already hold there: mounts the
 * container inherited are locked (their flags cannot be cleared nor what is
 * under them uncovered), and a writable /proc/sys still only lets the
 * container's root write what its namespaces own (global sysctls belong to
 * the host's root: EACCES). docs/security.md has the measurements.
 */
export const PRIVILEGED_SECCOMP_DENY = ['fspick', 'mount_setattr'];

export const DEFAULT_MASKED = [
  '/proc/kcore',
  '/proc/keys',
  '/proc/timer_list',
  '/proc/sched_debug',
  '/proc/latency_stats',
  '/proc/acpi',
  '/proc/scsi',
  '/sys/firmware',
];

export const DEFAULT_READONLY = ['/proc/sys', '/proc/sysrq-trigger', '/proc/irq', '/proc/bus', '/proc/fs'];

/** `osvirt-helper run` / `exec` options for a spec's Security (undefined = all defaults). */
export function securityArgs(sec: Security | undefined, opts: { forExec?: boolean; userNs?: boolean } = {}): string[] {
  const args: string[] = [];
  if (!sec?.seccompUnconfined) {
    for (const s of DEFAULT_SECCOMP_DENY) args.push('--seccomp-deny', s);
    if (!opts.userNs) {
      for (const s of PRIVILEGED_SECCOMP_DENY) args.push('--seccomp-deny', s);
      args.push('--seccomp-deny', `mount:EPERM:arg3&${MS_REMOUNT}`);
    }
  }
  for (const s of sec?.seccompDeny ?? []) args.push('--seccomp-deny', s);
  if (opts.forExec) return args;
  if (!sec?.unmaskPaths) {
    for (const p of DEFAULT_MASKED) args.push('--mask', p);
    for (const p of DEFAULT_READONLY) args.push('--ro-path', p);
  }
  for (const p of sec?.maskedPaths ?? []) args.push('--mask', p);
  for (const p of sec?.readonlyPaths ?? []) args.push('--ro-path', p);
  return args;
}
