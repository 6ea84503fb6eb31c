// Root filesystems: shared read-only templates (busybox from the host's
// static busybox), host directories, and per-container overlayfs layers so
// many containers share one template without changing it.
import { execFile } from 'node:child_process';
import { promises as fs, existsSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { missingFeature } from '../../src/core/errors';

const run = promisify(execFile);

export { BUSYBOX_DEFAULT_INIT, findBusybox, Templates, TEMPLATES } from './templates';

export function isMountpoint(dir: string): boolean {
  const target = path.resolve(dir);
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .some((l) => l.split(' ')[4] === target);
}

/** Mount an overlay of `lower` at `<base>/rootfs` with its writable layer in `<base>/upper`. */
export async function mountOverlay(lower: string, base: string): Promise<string> {
  const target = path.join(base, 'rootfs');
  if (isMountpoint(target)) return target;
  for (const d of ['rootfs', 'upper', 'work']) await fs.mkdir(path.join(base, d), { recursive: true });
  try {
    await run('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${lower},upperdir=${path.join(base, 'upper')},workdir=${path.join(base, 'work')}`, target]);
  } catch (e) {
    const msg = (e as { stderr?: string }).stderr ?? String(e);
    throw missingFeature('overlayfs', `mounting the copy-on-write root failed: ${msg.trim()}`);
  }
  return target;
}

/** Unmount everything at or below dir (lazy, so a busy mount cannot wedge delete). */
export async function unmountAll(dir: string): Promise<void> {
  const target = path.resolve(dir);
  const mounts = readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[4])
    .filter((m): m is string => !!m && (m === target || m.startsWith(target + '/')))
    .sort((a, b) => b.length - a.length);
  for (const m of mounts) await run('umount', ['-l', m]).catch(() => undefined);
}
