// Mounts as /proc/self/mountinfo shows them, and the one way osvirt detaches
// everything below a directory before removing it.
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** mountinfo escapes space, tab, newline and backslash as \ooo (octal). */
function unescapeMountPath(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(Number.parseInt(o, 8)));
}

/** Is dir itself a mount point? */
export function isMountpoint(dir: string, mountinfo = readFileSync('/proc/self/mountinfo', 'utf8')): boolean {
  const target = path.resolve(dir);
  return mountinfo.split('\n').some((l) => unescapeMountPath(l.split(' ')[4] ?? '') === target);
}

/** Mount points at or below dir, deepest first (the order to unmount them in). */
export function mountsUnder(dir: string, mountinfo = readFileSync('/proc/self/mountinfo', 'utf8')): string[] {
  const target = path.resolve(dir);
  const prefix = target === '/' ? '/' : target + '/';
  return mountinfo
    .split('\n')
    .map((l) => l.split(' ')[4])
    .filter((m): m is string => !!m)
    .map(unescapeMountPath)
    .filter((m) => m === target || m.startsWith(prefix))
    .sort((a, b) => b.length - a.length);
}

/**
 * Detach (umount -l: a busy mount cannot wedge a delete) every mount at or
 * below dir. Returns the mount points still there afterwards, deepest first;
 * an empty list means nothing is mounted below dir any more.
 */
export async function unmountUnder(dir: string): Promise<string[]> {
  const mounts = mountsUnder(dir);
  if (!mounts.length) return mounts;
  for (const m of mounts) await run('umount', ['-l', m]).catch(() => undefined);
  return mountsUnder(dir);
}
