// Atomic file replacement: write a temp file, rename it over the target. A
// reader sees the old or the new file, never a torn one. With `durable`
// (the default) the data and the rename are also fsynced, so they survive
// a power loss; runtime state that is rebuilt after a reboot skips that.
import { promises as fs } from 'node:fs';
import * as path from 'node:path';

let seq = 0;

export async function writeFileAtomic(file: string, data: string | Buffer, mode = 0o644, durable = true): Promise<void> {
  const dir = path.dirname(file);
  const tmp = path.join(dir, `.${path.basename(file)}.${process.pid}.${++seq}.tmp`);
  const fh = await fs.open(tmp, 'w', mode);
  try {
    await fh.writeFile(data);
    if (durable) await fh.sync();
  } finally {
    await fh.close();
  }
  try {
    await fs.rename(tmp, file);
  } catch (e) {
    await fs.rm(tmp, { force: true });
    throw e;
  }
  if (!durable) return;
  const dh = await fs.open(dir, 'r');
  try {
    await dh.sync();
  } finally {
    await dh.close();
  }
}
