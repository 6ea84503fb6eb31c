// The Debian template the system-container tests boot: built once per test
// run (through the daemon, as users build it) into a template directory the
// run's daemons share, and removed when the run ends (root-hooks.ts).
import { existsSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { DeepPartial, Rootfs } from '../../src/gen/osvirt/v1/container';
import { hostDebianMirror } from '../../drivers/lxc/templates';

export type DebianTemplate = { rootfs: DeepPartial<Rootfs>; daemonArgs: string[] } | { skip: string };

let cleanupArmed = false;

/**
 * The run's shared template directory (one per mocha process). It is removed
 * when the process exits (root-hooks.ts removes it at the end of `npm test`;
 * this covers single-file runs without the config too).
 */
export function sharedTemplateDir(): string {
  const dir = path.join(os.tmpdir(), `osvirt-test-templates-${process.pid}`);
  if (!cleanupArmed) {
    cleanupArmed = true;
    process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
  }
  return dir;
}

export async function debianTemplate(): Promise<DebianTemplate> {
  if (!existsSync('/usr/bin/mmdebstrap')) return { skip: 'mmdebstrap is not installed' };
  try {
    hostDebianMirror();
  } catch (e) {
    return { skip: (e as Error).message };
  }
  return { rootfs: { source: { $case: 'template', value: 'debian' } }, daemonArgs: ['--template-dir', sharedTemplateDir()] };
}
