// Management containers (the seed talk's privilege hierarchy): a container
// with a ManagementGrant gets its own API endpoint, a unix socket in a host
// directory bind-mounted at /run/osvirt inside it. Every call on that socket
// carries the grant, so the container can manage its workers and nothing
// else: it cannot see or touch other containers, create any, or reach the
// host's admin socket (which is not in its mount namespace).
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { ContainerSpec, MountType, type ManagementGrant } from '../gen/osvirt/v1/container';
import type { Grant } from './interceptor';
import type { ConnectionRegistry } from './listeners';

export const MANAGEMENT_MOUNT = '/run/osvirt';

export class ManagementEndpoints {
  private readonly open = new Map<string, { close(): Promise<void> }>();

  constructor(
    private readonly conns: ConnectionRegistry,
    private readonly root: string,
    /** Labels of a container, to evaluate worker selectors at call time. */
    private readonly labelsOf: (name: string) => Record<string, string> | undefined,
  ) {}

  dir(name: string): string {
    return path.join(this.root, name);
  }

  grant(name: string, g: ManagementGrant): Grant {
    const selector = Object.entries(g.workerSelector);
    return {
      container: name,
      methods: new Set(g.methods),
      covers: (n) => {
        if (n === name) return false;
        if (g.workers.includes(n)) return true;
        if (selector.length === 0) return false;
        const labels = this.labelsOf(n);
        return !!labels && selector.every(([k, v]) => labels[k] === v);
      },
    };
  }

  /** Serve the container's endpoint; returns the spec to run it with (plus the bind mount). */
  async prepare(name: string, spec: ContainerSpec): Promise<ContainerSpec> {
    if (!spec.management) return spec;
    await this.listen(name, spec.management);
    return ContainerSpec.fromPartial({
      ...spec,
      mounts: [
        ...spec.mounts,
        { type: MountType.MOUNT_TYPE_BIND, source: this.dir(name), destination: MANAGEMENT_MOUNT, readonly: true, propagation: 0, options: [] },
      ],
    });
  }

  /** (Re)open the endpoint, e.g. after a daemon restart while the container runs. */
  async listen(name: string, g: ManagementGrant): Promise<void> {
    // Keep the directory: a running container's bind mount points at its inode.
    await this.stopListening(name);
    const dir = this.dir(name);
    await fs.mkdir(dir, { recursive: true, mode: 0o755 });
    this.open.set(
      name,
      await this.conns.listenFixed(path.join(dir, 'osvirt.sock'), {
        principal: `container:${name}`,
        role: 'reader',
        via: 'management',
        grant: this.grant(name, g),
      }),
    );
  }

  private async stopListening(name: string): Promise<void> {
    const l = this.open.get(name);
    this.open.delete(name);
    await l?.close();
  }

  /** The container stopped: no endpoint, no directory. */
  async close(name: string): Promise<void> {
    await this.stopListening(name);
    await fs.rm(this.dir(name), { recursive: true, force: true });
  }

  async closeAll(): Promise<void> {
    // Leave the directories: running management containers keep their mount,
    // and the next daemon re-opens the sockets in them.
    for (const l of this.open.values()) await l.close();
    this.open.clear();
  }
}
