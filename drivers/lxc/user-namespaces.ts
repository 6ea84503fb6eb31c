// A container's user namespace: the spec's own maps (lxc.uid_map), or a
// host id range of its own from the daemon-wide table (idmap.ts), recorded in
// its spec.json so the table can be rebuilt after a crash. A privileged
// container has none.
import type { ContainerSpec, IdMap, IdMapping } from '../../src/gen/osvirt/v1/container';
import type { ContainerFiles } from './container-files';
import type { IdAllocator, IdRange } from './idmap';

/** A container's user namespace maps; undefined: privileged (no user namespace). */
export interface UserNs {
  uidMap: IdMap[];
  gidMap: IdMap[];
}

/** The maps of an allocated range: container ids 0.. are host ids uid.. and gid... */
export function userNsOf(r: IdRange): UserNs {
  return { uidMap: [{ containerId: 0, hostId: r.uid, size: r.size }], gidMap: [{ containerId: 0, hostId: r.gid, size: r.size }] };
}

/** The host id that container id 0 maps to. */
export function outerId(map: IdMap[]): number {
  const m = map.find((e) => e.containerId === 0);
  return m ? m.hostId : -1;
}

export class UserNamespaces {
  constructor(
    private readonly ids: IdAllocator,
    private readonly files: ContainerFiles,
  ) {}

  /** The container's maps: the spec's own, or the range allocated to it; undefined for a privileged container. */
  async of(id: string, spec: ContainerSpec): Promise<UserNs | undefined> {
    if (spec.security?.privileged) return undefined;
    const lxc = spec.driverOptions?.$case === 'lxc' ? spec.driverOptions.value : undefined;
    if (lxc?.uidMap.length) return { uidMap: lxc.uidMap, gidMap: lxc.gidMap };
    const r = await this.ids.allocate(id);
    return userNsOf(r);
  }

  /** The host uid and gid of the container's root when it runs in a user namespace. */
  async rootIds(id: string, spec: ContainerSpec): Promise<{ uid: number; gid: number } | undefined> {
    const u = await this.of(id, spec);
    return u ? { uid: outerId(u.uidMap), gid: outerId(u.gidMap) } : undefined;
  }

  /** Make the container's range the given one (a restored image's), in the table and in its record. */
  async adopt(id: string, range: IdRange): Promise<void> {
    await this.ids.assign(id, range);
    const marker = await this.files.readMarker(id);
    if (marker?.userNs) await this.files.writeMarker(id, { ...marker, userNs: userNsOf(range) });
  }

  /** What `info` shows: the maps, or privileged. */
  async mapping(id: string): Promise<IdMapping | undefined> {
    const m = await this.files.readMarker(id);
    if (m?.privileged) return { uidMap: [], gidMap: [], privileged: true };
    if (m?.userNs) return { ...m.userNs, privileged: false };
    const r = await this.ids.get(id);
    if (!r) return undefined;
    return { ...userNsOf(r), privileged: false };
  }

  /** Every container's recorded range back into the table, where a crash lost it. */
  async restore(containers: string[]): Promise<void> {
    const ranges: Record<string, IdRange> = {};
    for (const id of containers) {
      const u = (await this.files.readMarker(id))?.userNs;
      const uid = u?.uidMap.find((m) => m.containerId === 0);
      const gid = u?.gidMap.find((m) => m.containerId === 0);
      if (uid && gid) ranges[id] = { uid: uid.hostId, gid: gid.hostId, size: Math.min(uid.size, gid.size) };
    }
    await this.ids.restore(ranges);
  }

  release(id: string): Promise<void> {
    return this.ids.release(id);
  }
}
