// Container definitions on disk: one human-readable JSON file per container
// under <state>/containers/, in the proto's JSON mapping, written durably
// (fsync) when the definition changes. The last observed status lives next to
// it in <name>.status.json, replaced atomically but not fsynced (like
// libvirt's config vs. runtime state): it is rebuilt from the drivers after a
// restart, so a power loss costs at most a stale status, never a definition.
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
  /** What the daemon was doing to it when it last stopped (see Intent). */
  intent?: Intent | undefined;
}

/**
 * What the daemon is about to do to a container, recorded in
 * <name>.intent.json before the first irreversible step and removed once the
 * outcome is recorded: after a kill -9 the next daemon finishes a delete, and
 * knows that an init it finds killed by SIGKILL was killed by osvirt (not
 * crashed). Not fsynced: a daemon crash keeps the page cache, and a power loss
 * takes the containers with it.
 */
export interface Intent {
  op: 'delete' | 'stop' | 'kill';
  /** The signal osvirt sends (or sent) the init. */
  signal: number;
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

  /** Write the definition (durably) and the status. */
  async save(rec: ContainerRecord): Promise<void> {
    const doc = { name: rec.name, uid: rec.uid, createTime: rec.createTime.toISOString(), spec: ContainerSpec.toJSON(rec.spec) };
    // Two files, independent: the status need not wait for the definition's fsyncs.
    await Promise.all([writeFileAtomic(this.file(rec.name), JSON.stringify(doc, null, 2) + '\n', 0o600), this.saveStatus(rec)]);
  }

  /** Write only the status: cheap, atomic, not fsynced. */
  async saveStatus(rec: ContainerRecord): Promise<void> {
    await writeFileAtomic(this.statusFile(rec.name), JSON.stringify(ContainerStatus.toJSON(rec.status), null, 2) + '\n', 0o600, false);
  }

  private statusFile(name: string): string {
    return path.join(this.dir, `${name}.status.json`);
  }

  private intentFile(name: string): string {
    return path.join(this.dir, `${name}.intent.json`);
  }

  async saveIntent(name: string, intent: Intent): Promise<void> {
    await writeFileAtomic(this.intentFile(name), JSON.stringify(intent) + '\n', 0o600, false);
  }

  async clearIntent(name: string): Promise<void> {
    await fs.rm(this.intentFile(name), { force: true });
  }

  /** Removes the definition, its status, and last the intent (a delete's record of itself). */
  async remove(name: string): Promise<void> {
    await fs.rm(this.statusFile(name), { force: true });
    await fs.rm(this.file(name), { force: true });
    await this.clearIntent(name);
  }

  /** Loads every definition; a corrupt file is reported, never deleted. */
  async loadAll(onError: (file: string, err: unknown) => void): Promise<ContainerRecord[]> {
    const out: ContainerRecord[] = [];
    const entries = await fs.readdir(this.dir);
    for (const entry of entries) {
      // An intent whose definition is gone: a delete that got as far as removing it.
      if (entry.endsWith('.intent.json') && !entries.includes(entry.replace(/\.intent\.json$/, '.json')))
        await fs.rm(path.join(this.dir, entry), { force: true });
    }
    for (const entry of entries) {
      if (!entry.endsWith('.json') || entry.endsWith('.status.json') || entry.endsWith('.intent.json') || entry.startsWith('.')) continue;
      const file = path.join(this.dir, entry);
      try {
        const doc = JSON.parse(await fs.readFile(file, 'utf8')) as Record<string, unknown>;
        // A missing or unreadable status is not fatal: the driver reports the truth.
        const status = await fs.readFile(this.statusFile(String(doc['name'])), 'utf8').then(
          (t) => JSON.parse(t) as unknown,
          () => doc['status'] ?? { state: 'CONTAINER_STATE_UNKNOWN' },
        );
        out.push({
          name: String(doc['name']),
          uid: String(doc['uid']),
          createTime: new Date(String(doc['createTime'])),
          spec: ContainerSpec.fromJSON(doc['spec']),
          status: ContainerStatus.fromJSON(status),
          intent: await fs.readFile(this.intentFile(String(doc['name'])), 'utf8').then(
            (t) => JSON.parse(t) as Intent,
            () => undefined,
          ),
        });
      } catch (e) {
        onError(file, e);
      }
    }
    return out;
  }
}
