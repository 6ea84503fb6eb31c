// The Debian template the system-container tests boot: built once per test
// run (through the daemon, as users build it) into a template directory the
// run's daemons share, and removed when the run ends (root-hooks.ts).
import { existsSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { DeepPartial, Rootfs } from '../../src/gen/osvirt/v1/container';
import { hostDebianMirror } from '../../drivers/lxc/templates';

export type DebianTemplate = { rootfs: DeepPartial<Rootfs>; daemonArgs: string[] } | { skip: string };

/** The run's shared template directory (one per mocha process). */
export function sharedTemplateDir(): string {
  return path.join(os.tmpdir(), `osvirt-test-templates-${process.pid}`);
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
