// A directory on the client's disk as the path -> entry map the API carries
// (osvirt.v1.VServerConfigFile), and back: util-vserver configuration
// directories for `osvirt vserver import` and `export`.
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { invalidArgument } from '../core/errors';

/** One entry of a directory: a file's bytes or a symlink's target. */
export interface ConfigEntry {
  content?: Buffer;
  symlink?: string;
}

/** Relative POSIX path ("interfaces/0/ip") -> entry. */
export type ConfigFiles = Map<string, ConfigEntry>;

/** Read a real directory (symbolic links are recorded, never followed). */
export async function readConfigDir(dir: string): Promise<ConfigFiles> {
  const out: ConfigFiles = new Map();
  const walk = async (rel: string): Promise<void> => {
    for (const e of await fs.readdir(path.join(dir, rel), { withFileTypes: true })) {
      const p = rel ? `${rel}/${e.name}` : e.name;
      if (e.isSymbolicLink()) out.set(p, { symlink: await fs.readlink(path.join(dir, p)) });
      else if (e.isDirectory()) await walk(p);
      else if (e.isFile()) {
        const st = await fs.stat(path.join(dir, p));
        if (st.size > 1024 * 1024) throw invalidArgument(p, 'is larger than 1 MiB: not a configuration file');
        out.set(p, { content: await fs.readFile(path.join(dir, p)) });
      }
    }
  };
  await walk('');
  return out;
}

/** Write entries into dir (created; existing files with the same paths are replaced). */
export async function writeConfigDir(dir: string, files: ConfigFiles): Promise<void> {
  await fs.mkdir(dir, { recursive: true });
  for (const [p, e] of [...files].sort(([a], [b]) => (a < b ? -1 : 1))) {
    if (p.split('/').some((s) => s === '..' || s === '') || path.isAbsolute(p)) throw invalidArgument(p, 'is not a relative path inside the directory');
    const target = path.join(dir, p);
    await fs.mkdir(path.dirname(target), { recursive: true });
    await fs.rm(target, { force: true });
    if (e.symlink !== undefined) await fs.symlink(e.symlink, target);
    else await fs.writeFile(target, e.content ?? Buffer.alloc(0), { mode: 0o644 });
  }
}
