// Checkpoints on disk: <state>/checkpoints/<container>/<name>/ holding
// checkpoint/ (CRIU images, the layout checkpointctl and Podman read) and
// osvirt.json (our metadata). A checkpoint is only listed once committed.
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { Checkpoint } from '../gen/osvirt/v1/container';
import { writeFileAtomic } from './atomic-file';
import { alreadyExists, notFound } from './errors';

export interface ReservedCheckpoint {
  dir: string;
  imageDir: string;
}

async function dirSize(dir: string): Promise<number> {
  let total = 0;
  for (const e of await fs.readdir(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) total += await dirSize(p);
    else if (e.isFile()) total += (await fs.stat(p)).size;
  }
  return total;
}

export class CheckpointStore {
  readonly root: string;

  constructor(stateDir: string) {
    this.root = path.join(stateDir, 'checkpoints');
  }

  async init(): Promise<void> {
    await fs.mkdir(this.root, { recursive: true, mode: 0o700 });
  }

  private dir(container: string, name: string): string {
    return path.join(this.root, container, name);
  }

  async exists(container: string, name: string): Promise<boolean> {
    return fs.access(path.join(this.dir(container, name), 'osvirt.json')).then(() => true, () => false);
  }

  async reserve(container: string, name: string): Promise<ReservedCheckpoint> {
    const dir = this.dir(container, name);
    if (await this.exists(container, name)) throw alreadyExists('checkpoint', name);
    await fs.rm(dir, { recursive: true, force: true });
    const imageDir = path.join(dir, 'checkpoint');
    await fs.mkdir(imageDir, { recursive: true, mode: 0o700 });
    return { dir, imageDir };
  }

  async commit(r: ReservedCheckpoint, cp: Checkpoint): Promise<Checkpoint> {
    cp.sizeBytes = await dirSize(r.dir);
    await writeFileAtomic(path.join(r.dir, 'osvirt.json'), JSON.stringify(Checkpoint.toJSON(cp), null, 2) + '\n', 0o600);
    return cp;
  }

  async get(container: string, name: string): Promise<{ checkpoint: Checkpoint; imageDir: string }> {
    const dir = this.dir(container, name);
    let raw: string;
    try {
      raw = await fs.readFile(path.join(dir, 'osvirt.json'), 'utf8');
    } catch {
      throw notFound('checkpoint', name);
    }
    return { checkpoint: Checkpoint.fromJSON(JSON.parse(raw)), imageDir: path.join(dir, 'checkpoint') };
  }

  async list(container: string): Promise<Checkpoint[]> {
    let names: string[];
    try {
      names = await fs.readdir(path.join(this.root, container));
    } catch {
      return [];
    }
    const out: Checkpoint[] = [];
    for (const n of names) {
      if (await this.exists(container, n)) out.push((await this.get(container, n)).checkpoint);
    }
    return out.sort((a, b) => (b.createTime?.getTime() ?? 0) - (a.createTime?.getTime() ?? 0));
  }

  async remove(container: string, name: string): Promise<void> {
    await fs.rm(this.dir(container, name), { recursive: true, force: true });
  }

  async removeAll(container: string): Promise<void> {
    await fs.rm(path.join(this.root, container), { recursive: true, force: true });
  }
}
