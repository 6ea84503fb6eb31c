// Cgroup directories the bench's anchors (LXC, runc) leave behind: removed
// once empty, in every hierarchy.
import { existsSync, readdirSync, rmdirSync } from 'node:fs';
import * as path from 'node:path';

/**
 * Remove `rel` (and its children) in every cgroup hierarchy, if present and
 * empty. Retries briefly: a process that just exited may still be leaving it.
 */
export async function removeCgroupDirsSettled(rel: string, tries = 20): Promise<void> {
  for (let i = 0; i < tries; i++) {
    removeCgroupDirs(rel);
    if (!cgroupDirExists(rel)) return;
    await new Promise((r) => setTimeout(r, 100));
  }
}

export function cgroupDirExists(rel: string): boolean {
  try {
    return readdirSync('/sys/fs/cgroup').some((h) => existsSync(path.join('/sys/fs/cgroup', h, rel))) || existsSync(path.join('/sys/fs/cgroup', rel));
  } catch {
    return false;
  }
}

/** Remove `rel` (and its children) in every cgroup hierarchy, if present and empty. */
export function removeCgroupDirs(rel: string): void {
  const roots: string[] = [];
  try {
    for (const e of readdirSync('/sys/fs/cgroup', { withFileTypes: true })) if (e.isDirectory()) roots.push(path.join('/sys/fs/cgroup', e.name));
  } catch {
    return;
  }
  roots.push('/sys/fs/cgroup');
  for (const root of roots) {
    const dir = path.join(root, rel);
    if (!existsSync(dir)) continue;
    rmdirTree(dir);
  }
}

function rmdirTree(dir: string): void {
  try {
    for (const e of readdirSync(dir, { withFileTypes: true })) if (e.isDirectory()) rmdirTree(path.join(dir, e.name));
    rmdirSync(dir);
  } catch {
    // busy or gone: nothing more we can do without touching other processes
  }
}
