// What init a root filesystem boots, and how that init wants to be halted and
// rebooted (LXC's lxc.signal.halt / lxc.signal.reboot). A system container is
// one whose process is the distribution's own init: osvirt then stops it with
// the init's halt signal, gives it the environment it expects (see
// docs/system-containers.md) and reads its reboot and poweroff requests.
import { lstatSync, readlinkSync } from 'node:fs';
import * as path from 'node:path';

/** SIGRTMIN+3 on Linux (glibc's SIGRTMIN is 34): systemd halts on it. */
export const SIGRTMIN_3 = 37;
export const SIGPWR = 30;
export const SIGINT = 2;
export const SIGTERM = 15;
export const SIGUSR2 = 12;

export type InitKind = 'systemd' | 'sysvinit' | 'busybox' | 'other';

export interface InitInfo {
  /** The default argv of a system container. */
  init: string[];
  kind: InitKind;
  /** Signal that halts the init (StopContainer sends it first). */
  haltSignal: number;
  /** Signal that reboots it (for a future RebootContainer; LXC's lxc.signal.reboot). */
  rebootSignal: number;
  /** The rootfs has an init of its own. */
  system: boolean;
}

/** Paths that name "the distribution's init" when a spec gives them as args[0]. */
export const INIT_PATHS = ['/sbin/init', '/usr/sbin/init', '/lib/systemd/systemd', '/usr/lib/systemd/systemd'];

/** Resolves path inside root the way the container will (absolute symlinks stay inside). */
function resolveInRoot(root: string, p: string, depth = 0): string | undefined {
  if (depth > 16) return undefined;
  const parts = p.split('/').filter(Boolean);
  let cur = '/';
  for (let i = 0; i < parts.length; i++) {
    const next = path.posix.join(cur, parts[i]!);
    let st;
    try {
      st = lstatSync(path.join(root, next));
    } catch {
      return undefined;
    }
    if (st.isSymbolicLink()) {
      const target = readlinkSync(path.join(root, next));
      const base = target.startsWith('/') ? target : path.posix.join(cur, target);
      const resolved = resolveInRoot(root, base, depth + 1);
      if (!resolved) return undefined;
      cur = resolved;
    } else cur = next;
  }
  return cur;
}

/** What `argv0` (default /sbin/init) is inside root. */
export function detectInit(root: string, argv0 = '/sbin/init'): InitInfo {
  const target = resolveInRoot(root, argv0);
  const none: InitInfo = { init: [argv0], kind: 'other', haltSignal: SIGTERM, rebootSignal: SIGINT, system: false };
  if (!target) return none;
  const base = path.posix.basename(target);
  // systemd: SIGRTMIN+3 halts it (systemd(1)); a reboot request ends pid 1 of
  // a pid namespace with SIGHUP, a poweroff with SIGINT (reboot(2)).
  if (base === 'systemd') return { init: [argv0], kind: 'systemd', haltSignal: SIGRTMIN_3, rebootSignal: SIGINT, system: true };
  // sysvinit: SIGPWR runs its powerfail action (LXC's default halt signal).
  if (base === 'init') return { init: [argv0], kind: 'sysvinit', haltSignal: SIGPWR, rebootSignal: SIGINT, system: true };
  // busybox init powers off on SIGUSR2.
  if (base === 'busybox') return { init: [argv0], kind: 'busybox', haltSignal: SIGUSR2, rebootSignal: SIGTERM, system: true };
  return none;
}
