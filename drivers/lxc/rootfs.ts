// Root filesystems: shared read-only templates (busybox from the host's
// static busybox), host directories, and per-container overlayfs layers so
// many containers share one template without changing it.
import { execFile } from 'node:child_process';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { missingFeature } from '../../src/core/errors';
import { isMountpoint } from '../../src/host/mounts';

const run = promisify(execFile);

export { BUSYBOX_DEFAULT_INIT, findBusybox, Templates, TEMPLATES } from './templates';

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
