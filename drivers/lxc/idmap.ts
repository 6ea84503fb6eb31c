// Host id ranges for user-namespaced containers. Every unprivileged container
// gets its own block of 65536 uids and gids, taken from the subordinate ranges
// that /etc/subuid and /etc/subgid give the daemon's user (root), as Incus and
// LXD take theirs. The blocks never overlap, so no two containers' roots are
// the same host user. Allocations live in one file shared by every driver
// built on the lxc driver (lxc, jail, vserver) and are kept from create to
// delete: files a container writes into its copy-on-write layer are stored
// under its host ids.
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { OsvirtError } from '../../src/core/errors';

/** Ids per container: a full 16-bit range, what distributions expect (nobody is 65534). */
export const IDS_PER_CONTAINER = 65536;

/** Used when /etc/subuid (or /etc/subgid) names no range for root: Incus's default. */
export const DEFAULT_SUBID_RANGE: SubidRange = { start: 1000000, count: 1000000000 };

export interface SubidRange {
  start: number;
  count: number;
}

/** One container's mapping: container ids 0..size-1 are host ids base..base+size-1. */
export interface IdRange {
  uid: number;
  gid: number;
  size: number;
}

/** The ranges a subuid/subgid file ("name:start:count" lines) gives `user`. */
export function parseSubid(text: string, user: string, uid: number): SubidRange[] {
  const out: SubidRange[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const [name, start, count] = line.split(':');
    if (name !== user && name !== String(uid)) continue;
    const s = Number(start);
    const c = Number(count);
    if (Number.isSafeInteger(s) && Number.isSafeInteger(c) && s > 0 && c > 0) out.push({ start: s, count: c });
  }
  return out;
}

function readRanges(file: string): { ranges: SubidRange[]; source: string } {
  let text = '';
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    // no file: the default range below
  }
  const ranges = parseSubid(text, 'root', 0);
  return ranges.length ? { ranges, source: file } : { ranges: [DEFAULT_SUBID_RANGE], source: `built-in default (${file} names no range for root)` };
}

/** The start of every whole block of `size` ids in the ranges, lowest first. */
function blocks(ranges: SubidRange[], size: number): number[] {
  const out: number[] = [];
  for (const r of [...ranges].sort((a, b) => a.start - b.start)) {
    for (let b = r.start; b + size <= r.start + r.count && out.length < 1 << 20; b += size) out.push(b);
  }
  return out;
}

/**
 * The lowest block (blocks ascending) that no used range overlaps, in one
 * pass over both sorted lists: a scan per block cost O(n^2) per allocation and
 * made the 500th container's create ~10x slower than the first.
 */
export function firstFree(blockStarts: number[], used: { start: number; end: number }[]): number | undefined {
  const sorted = [...used].sort((a, b) => a.start - b.start);
  let j = 0;
  for (const b of blockStarts) {
    const e = b + IDS_PER_CONTAINER;
    while (j < sorted.length && sorted[j]!.end <= b) j++;
    let overlap = false;
    for (let k = j; k < sorted.length && sorted[k]!.start < e; k++) {
      if (sorted[k]!.end > b) {
        overlap = true;
        break;
      }
    }
    if (!overlap) return b;
  }
  return undefined;
}

export class IdAllocator {
  private readonly uids: SubidRange[];
  private readonly gids: SubidRange[];
  /** Where the ranges came from, for `osvirt info` and the log. */
  readonly source: string;

  constructor(
    readonly file: string,
    subuid = '/etc/subuid',
    subgid = '/etc/subgid',
  ) {
    const u = readRanges(subuid);
    const g = readRanges(subgid);
    this.uids = u.ranges;
    this.gids = g.ranges;
    this.source = u.source === subuid && g.source === subgid ? `${subuid} and ${subgid}` : `${u.source}; ${g.source}`;
  }

  // Synchronous on purpose: a small file, and each thread-pool round trip of
  // the async API costs more here than the read or write itself. Being
  // synchronous, a read-modify-write can never interleave with another.
  private load(): Record<string, IdRange> {
    try {
      return JSON.parse(readFileSync(this.file, 'utf8')) as Record<string, IdRange>;
    } catch {
      return {};
    }
  }

  /**
   * Written like the address table: an atomic rename without fsync (two
   * fsyncs cost ~3 ms per create and delete here). What a power loss could
   * take back is restored from each container's own record (`restore`).
   */
  private save(table: Record<string, IdRange>): void {
    const tmp = `${this.file}.${process.pid}.tmp`;
    writeFileSync(tmp, JSON.stringify(table, null, 2) + '\n', { mode: 0o644 });
    renameSync(tmp, this.file);
  }

  /** Put back ranges that containers record as theirs but the table lost; at daemon start. */
  restore(ranges: Record<string, IdRange>): Promise<void> {
    return Promise.resolve().then(() => {
      const table = this.load();
      const missing = Object.entries(ranges).filter(([k]) => !table[k]);
      if (!missing.length) return;
      for (const [k, r] of missing) table[k] = r;
      this.save(table);
    });
  }

  /** The container's range if it has one. */
  async get(container: string): Promise<IdRange | undefined> {
    return this.load()[container];
  }

  /** The container's range, allocating the lowest free block the first time. */
  allocate(container: string): Promise<IdRange> {
    return Promise.resolve().then(() => {
      const table = this.load();
      const mine = table[container];
      if (mine) return mine;
      // Free: no recorded range (an allocation, or a map a spec chose) overlaps the block.
      const ranges = Object.values(table);
      const freeU = firstFree(
        blocks(this.uids, IDS_PER_CONTAINER),
        ranges.map((r) => ({ start: r.uid, end: r.uid + r.size })),
      );
      const freeG = firstFree(
        blocks(this.gids, IDS_PER_CONTAINER),
        ranges.map((r) => ({ start: r.gid, end: r.gid + r.size })),
      );
      if (freeU === undefined || freeG === undefined) {
        throw new OsvirtError(
          'RESOURCE_EXHAUSTED',
          'ID_RANGE_EXHAUSTED',
          `no free block of ${IDS_PER_CONTAINER} ${freeU === undefined ? 'uids' : 'gids'} left in the subordinate ranges (${this.source}); delete containers or give root a larger range in /etc/subuid and /etc/subgid`,
        );
      }
      const range = { uid: freeU, gid: freeG, size: IDS_PER_CONTAINER };
      table[container] = range;
      this.save(table);
      return range;
    });
  }

  /**
   * Give the container this range, even one another container has: a
   * checkpoint restored under a new name comes back with the maps CRIU
   * recorded, which are the original's.
   */
  assign(container: string, range: IdRange): Promise<void> {
    return Promise.resolve().then(() => {
      const table = this.load();
      table[container] = range;
      this.save(table);
    });
  }

  release(container: string): Promise<void> {
    return Promise.resolve().then(() => {
      const table = this.load();
      if (!(container in table)) return;
      delete table[container];
      this.save(table);
    });
  }
}
