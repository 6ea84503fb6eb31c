// Where an lxc container's state lives on the host:
// <state>/containers/<id>/ with spec.json (the driver's record of the
// container, written at create), runtime.json (the current run),
// monitor/ (the monitor's socket, log and exit record) and the root
// filesystem's directories (rootfs.ts). The drivers built on this one have
// their own state dir, laid out the same.
import { promises as fs, existsSync } from 'node:fs';
import * as path from 'node:path';
import { writeFileAtomic } from '../../src/core/atomic-file';
import { readRuntime, type LxcRuntime } from './runtime-file';
import type { UserNs } from './user-namespaces';

/** spec.json: what every process entering the container gets (its seccomp rules), and its id maps. */
export interface SpecMarker {
  id?: string;
  driver?: string;
  execArgs?: string[];
  privileged?: boolean;
  userNs?: UserNs | undefined;
}

export class ContainerFiles {
  constructor(readonly stateDir: string) {}

  /** The directory holding every container's. */
  get root(): string {
    return path.join(this.stateDir, 'containers');
  }

  dir(id: string): string {
    return path.join(this.root, id);
  }

  monitorDir(id: string): string {
    return path.join(this.dir(id), 'monitor');
  }

  /** Whether this driver created the container (and has not deleted it). */
  exists(id: string): boolean {
    return existsSync(this.dir(id));
  }

  async readMarker(id: string): Promise<SpecMarker | undefined> {
    try {
      return JSON.parse(await fs.readFile(path.join(this.dir(id), 'spec.json'), 'utf8')) as SpecMarker;
    } catch {
      return undefined;
    }
  }

  /** Not fsynced: see LxcDriver.create. */
  async writeMarker(id: string, marker: SpecMarker): Promise<void> {
    await writeFileAtomic(path.join(this.dir(id), 'spec.json'), JSON.stringify(marker) + '\n', 0o644, false);
  }

  readRuntime(id: string): Promise<LxcRuntime | undefined> {
    return readRuntime(this.dir(id));
  }
}
