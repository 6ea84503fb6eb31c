// Container definitions on disk: one human-readable JSON file per container
// under <state>/containers/, in the proto's JSON mapping, written
// crash-safely. This is the daemon's only durable memory of a container.
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { ContainerSpec, ContainerStatus } from '../gen/osvirt/v1/container';
import { writeFileAtomic } from './atomic-file';

export interface ContainerRecord {
  name: string;
  uid: string;
  createTime: Date;
  spec: ContainerSpec;
  status: ContainerStatus;
}

export class ContainerStore {
  readonly dir: string;

  constructor(stateDir: string) {
    this.dir = path.join(stateDir, 'containers');
  }

  async init(): Promise<void> {
    await fs.mkdir(this.dir, { recursive: true, mode: 0o700 });
  }

  private file(name: string): string {
    return path.join(this.dir, `${name}.json`);
  }

  async save(rec: ContainerRecord): Promise<void> {
    const doc = {
      name: rec.name,
      uid: rec.uid,
      createTime: rec.createTime.toISOString(),
      spec: ContainerSpec.toJSON(rec.spec),
      status: ContainerStatus.toJSON(rec.status),
    };
    await writeFileAtomic(this.file(rec.name), JSON.stringify(doc, null, 2) + '\n', 0o600);
  }

  async remove(name: string): Promise<void> {
    await fs.rm(this.file(name), { force: true });
  }

  /** Loads every definition; a corrupt file is reported, never deleted. */
  async loadAll(onError: (file: string, err: unknown) => void): Promise<ContainerRecord[]> {
    const out: ContainerRecord[] = [];
    for (const entry of await fs.readdir(this.dir)) {
      if (!entry.endsWith('.json') || entry.startsWith('.')) continue;
      const file = path.join(this.dir, entry);
      try {
        const doc = JSON.parse(await fs.readFile(file, 'utf8')) as Record<string, unknown>;
        out.push({
          name: String(doc['name']),
          uid: String(doc['uid']),
          createTime: new Date(String(doc['createTime'])),
          spec: ContainerSpec.fromJSON(doc['spec']),
          status: ContainerStatus.fromJSON(doc['status'] ?? {}),
        });
      } catch (e) {
        onError(file, e);
      }
    }
    return out;
  }
}
