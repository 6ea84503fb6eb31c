// The Debian root filesystem the system-container tests boot, built once per
// test run with mmdebstrap from the host's configured mirror.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, renameSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { DeepPartial, Rootfs } from '../../src/gen/osvirt/v1/container';

export type DebianTemplate = { rootfs: DeepPartial<Rootfs>; daemonArgs: string[] } | { skip: string };

let cached: Promise<DebianTemplate> | undefined;

export function debianTemplate(): Promise<DebianTemplate> {
  cached ??= (async () => {
    if (!existsSync('/usr/bin/mmdebstrap')) return { skip: 'mmdebstrap is not installed' };
    const dir = path.join(os.tmpdir(), 'osvirt-test-debian', 'rootfs');
    if (!existsSync(path.join(dir, 'sbin', 'init'))) {
      const tmp = `${dir}.tmp`;
      rmSync(tmp, { recursive: true, force: true });
      mkdirSync(path.dirname(dir), { recursive: true });
      execFileSync('mmdebstrap', ['--quiet', '--variant=minbase', '--include=systemd,systemd-sysv,dbus,iproute2,procps', 'bookworm', tmp], { stdio: 'inherit' });
      renameSync(tmp, dir);
    }
    return { rootfs: { source: { $case: 'path', value: dir }, copyOnWrite: true }, daemonArgs: [] };
  })();
  return cached;
}
