// Container cgroups on either layout: pure cgroup v2 (one hierarchy at
// /sys/fs/cgroup) or the hybrid v1 layout (a hierarchy per controller, plus
// cgroup2 at /sys/fs/cgroup/unified). Each container gets osvirt/<name> in
// every hierarchy osvirt uses; the host's own hierarchies are never moved
// or remounted.
// cgroupfs lives in kernel memory and its files never wait for a disk, so this
// module uses the synchronous fs calls: a few microseconds each, where a trip
// through libuv's thread pool cost more than the work (about 3 ms of every
// container start went to two dozen awaited cgroup writes).
import { chownSync, existsSync, mkdirSync, readdirSync, readFileSync, rmdirSync, statSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import type { Resources, Device } from '../../src/gen/osvirt/v1/container';
import { missingFeature, OsvirtError } from '../../src/core/errors';

export const CGROUP_ROOT = '/sys/fs/cgroup';
const V1_CONTROLLERS = ['cpu', 'cpuacct', 'cpuset', 'memory', 'devices', 'freezer', 'pids', 'blkio'] as const;

export type Layout = { kind: 'v2'; root: string } | { kind: 'hybrid'; v1: Record<string, string>; unified?: string | undefined };

function isCgroup2(dir: string): boolean {
  return existsSync(path.join(dir, 'cgroup.controllers'));
}

export function detectLayout(root = CGROUP_ROOT): Layout {
  if (isCgroup2(root)) return { kind: 'v2', root };
  const mounts = readFileSync('/proc/self/mounts', 'utf8').split('\n');
  const v1: Record<string, string> = {};
  let unified: string | undefined;
  for (const line of mounts) {
    const [, dir, type, opts] = line.split(' ');
    if (!dir || !dir.startsWith(root)) continue;
    if (type === 'cgroup2') unified = dir;
    if (type !== 'cgroup') continue;
    for (const c of (opts ?? '').split(',')) {
      if ((V1_CONTROLLERS as readonly string[]).includes(c)) v1[c] = dir;
      // systemd's own tracking hierarchy: a container gets a cgroup of its own
      // there too, or a systemd inside would share the host's.
      if (c === 'name=systemd') v1[c] = dir;
    }
  }
  if (Object.keys(v1).length === 0 && !unified) throw missingFeature('cgroups', `no cgroup hierarchy is mounted under ${root}`);
  return { kind: 'hybrid', v1, unified };
}

async function write(file: string, value: string): Promise<void> {
  try {
    writeFileSync(file, value);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    throw new Error(`cannot write "${value}" to ${file}: ${err.code ?? err.message}`);
  }
}

async function read(file: string): Promise<string> {
  return readFileSync(file, 'utf8').trim();
}

async function readNum(file: string): Promise<number> {
  try {
    const v = await read(file);
    return v === 'max' ? 0 : Number(v);
  } catch {
    return 0;
  }
}

/** A cgroup counter exactly ("max" and unreadable: 0): byte and nanosecond counts pass 2^53. */
async function readBig(file: string): Promise<bigint> {
  try {
    const v = await read(file);
    return /^\d+$/.test(v) ? BigInt(v) : 0n;
  } catch {
    return 0n;
  }
}

function kvBig(text: string): Record<string, bigint> {
  const out: Record<string, bigint> = {};
  for (const line of text.split('\n')) {
    const [k, v] = line.trim().split(/\s+/);
    if (k && v !== undefined && /^\d+$/.test(v)) out[k] = BigInt(v);
  }
  return out;
}

/** cpu.weight (v2, 1..10000) to cpu.shares (v1, 2..262144), the kernel's own mapping inverted. */
export function weightToShares(weight: number): number {
  return Math.max(2, Math.round(((weight - 1) * 262142) / 9999 + 2));
}

const SLEEP = (ms: number) => new Promise((r) => setTimeout(r, ms));

export class ContainerCgroup {
  constructor(
    readonly layout: Layout,
    readonly name: string,
  ) {}

  private rel(): string {
    return path.join('osvirt', this.name);
  }

  /** Every directory this container owns, v1 controllers first. */
  dirs(): string[] {
    if (this.layout.kind === 'v2') return [path.join(this.layout.root, this.rel())];
    const seen = new Set<string>();
    const out: string[] = [];
    for (const mount of Object.values(this.layout.v1)) {
      if (seen.has(mount)) continue;
      seen.add(mount);
      out.push(path.join(mount, this.rel()));
    }
    if (this.layout.unified) out.push(path.join(this.layout.unified, this.rel()));
    return out;
  }

  private ctl(controller: string): string | undefined {
    if (this.layout.kind === 'v2') return path.join(this.layout.root, this.rel());
    const m = this.layout.v1[controller];
    return m ? path.join(m, this.rel()) : undefined;
  }

  /**
   * The cgroup filesystems a system container sees at /sys/fs/cgroup, as
   * `osvirt-helper --mount` lines (LXC's cgroup:mixed). They are mounted from
   * inside the container's cgroup namespace, so each hierarchy's root is the
   * container's own cgroup. Pure v2: cgroup2 itself, writable (the subtree is
   * delegated). Hybrid: a tmpfs holding every v1 hierarchy read-only, except
   * name=systemd, which the container's systemd writes, and the unified
   * cgroup2, delegated like the v2 tree.
   */
  systemMounts(): string[] {
    const nsd = 'nosuid,nodev,noexec';
    if (this.layout.kind === 'v2') return [`cgroup2:cgroup2:/sys/fs/cgroup:${nsd}:`];
    const out = [`tmpfs:tmpfs:/sys/fs/cgroup:${nsd},mode=755,size=1024k:`];
    const byMount = new Map<string, string[]>();
    for (const [c, mount] of Object.entries(this.layout.v1)) byMount.set(mount, [...(byMount.get(mount) ?? []), c]);
    for (const [mount, controllers] of byMount) {
      const writable = controllers.includes('name=systemd');
      out.push(`cgroup:cgroup:/sys/fs/cgroup/${path.basename(mount)}:${writable ? '' : 'ro,'}${nsd},${controllers.join(',')}:`);
    }
    if (this.layout.unified) out.push(`cgroup2:cgroup2:/sys/fs/cgroup/${path.basename(this.layout.unified)}:${nsd}:`);
    return out;
  }

  /** The cgroup2 directory (pure v2 or hybrid's unified), for BPF programs. */
  unifiedDir(): string | undefined {
    if (this.layout.kind === 'v2') return path.join(this.layout.root, this.rel());
    return this.layout.unified ? path.join(this.layout.unified, this.rel()) : undefined;
  }

  async create(res: Resources | undefined, devices: Device[]): Promise<void> {
    if (this.layout.kind === 'v2') {
      await this.enableV2Controllers();
      mkdirSync(path.join(this.layout.root, this.rel()), { recursive: true });
    } else {
      for (const dir of this.dirs()) mkdirSync(dir, { recursive: true });
      // cpuset needs cpus and mems before a task may join; inherit them.
      const cs = this.ctl('cpuset');
      if (cs) {
        for (const dir of [path.dirname(cs), cs]) {
          for (const f of ['cpuset.cpus', 'cpuset.mems']) {
            if ((await read(path.join(dir, f)).catch(() => '')) === '') await write(path.join(dir, f), await read(path.join(path.dirname(dir), f)));
          }
        }
      }
    }
    await this.applyResources(res);
    await this.applyDevices(devices);
  }

  private async enableV2Controllers(): Promise<void> {
    if (this.layout.kind !== 'v2') return;
    const root = this.layout.root;
    const available = (await read(path.join(root, 'cgroup.controllers'))).split(' ');
    const want = ['cpu', 'cpuset', 'memory', 'pids'].filter((c) => available.includes(c));
    const parent = path.join(root, 'osvirt');
    mkdirSync(parent, { recursive: true });
    for (const dir of [root, parent]) {
      const enabled = (await read(path.join(dir, 'cgroup.subtree_control'))).split(' ');
      const missing = want.filter((c) => !enabled.includes(c));
      if (missing.length) await write(path.join(dir, 'cgroup.subtree_control'), missing.map((c) => `+${c}`).join(' '));
    }
  }

  private need(controller: string, what: string): string {
    const d = this.ctl(controller);
    const probe: Record<string, string> = { memory: 'memory.max', pids: 'pids.max', cpu: 'cpu.weight', cpuset: 'cpuset.cpus' };
    if (!d || (this.layout.kind === 'v2' && !existsSync(path.join(d, probe[controller] ?? `${controller}.max`)))) {
      throw missingFeature(`the ${controller} cgroup controller`, `${what} needs it and this host does not provide it`);
    }
    return d;
  }

  async applyResources(r: Resources | undefined): Promise<void> {
    if (!r) return;
    const v2 = this.layout.kind === 'v2';
    if (r.memoryLimitBytes) {
      const d = this.need('memory', 'resources.memory_limit_bytes');
      await write(path.join(d, v2 ? 'memory.max' : 'memory.limit_in_bytes'), String(r.memoryLimitBytes));
      if (v2 && existsSync(path.join(d, 'memory.swap.max'))) await write(path.join(d, 'memory.swap.max'), '0');
    }
    if (r.pidsLimit) await write(path.join(this.need('pids', 'resources.pids_limit'), 'pids.max'), String(r.pidsLimit));
    if (r.cpuWeight) {
      const d = this.need('cpu', 'resources.cpu_weight');
      if (v2) await write(path.join(d, 'cpu.weight'), String(r.cpuWeight));
      else await write(path.join(d, 'cpu.shares'), String(weightToShares(r.cpuWeight)));
    }
    if (r.cpuQuotaUs) {
      const d = this.need('cpu', 'resources.cpu_quota_us');
      const period = r.cpuPeriodUs || 100000;
      if (v2) await write(path.join(d, 'cpu.max'), `${r.cpuQuotaUs} ${period}`);
      else {
        await write(path.join(d, 'cpu.cfs_period_us'), String(period));
        await write(path.join(d, 'cpu.cfs_quota_us'), String(r.cpuQuotaUs));
      }
    }
    if (r.cpusetCpus) await write(path.join(this.need('cpuset', 'resources.cpuset_cpus'), 'cpuset.cpus'), r.cpusetCpus);
    if (r.cpusetMems) await write(path.join(this.need('cpuset', 'resources.cpuset_mems'), 'cpuset.mems'), r.cpusetMems);
  }

  /**
   * Device access (v1 devices controller): deny everything, then allow the
   * standard nodes a container's /dev holds plus each requested device.
   * On pure v2 the device controller is a BPF program; not done yet, so a
   * request for extra devices fails there instead of silently allowing all.
   */
  async applyDevices(devices: Device[]): Promise<void> {
    const d = this.layout.kind === 'hybrid' ? this.ctl('devices') : undefined;
    if (!d) {
      if (devices.length)
        throw missingFeature(
          'the v1 devices cgroup controller',
          'restricting device access on pure cgroup v2 needs a BPF device program, which osvirt does not load yet',
        );
      return;
    }
    await write(path.join(d, 'devices.deny'), 'a');
    const allow = ['c 1:3 rwm', 'c 1:5 rwm', 'c 1:7 rwm', 'c 1:8 rwm', 'c 1:9 rwm', 'c 5:0 rwm', 'c 5:1 rwm', 'c 5:2 rwm', 'c 136:* rwm', 'c *:* m', 'b *:* m'];
    for (const dev of devices) {
      let st;
      try {
        st = statSync(dev.path);
      } catch {
        throw missingFeature(`device ${dev.path}`, 'it does not exist on the host');
      }
      if (!st.isCharacterDevice() && !st.isBlockDevice()) throw missingFeature(`device ${dev.path}`, 'it is not a device node');
      const major = Math.floor(st.rdev / 256) & 0xfff;
      const minor = (st.rdev & 0xff) | ((st.rdev >> 12) & 0xfff00);
      allow.push(`${st.isCharacterDevice() ? 'c' : 'b'} ${major}:${minor} ${dev.permissions || 'rwm'}`);
    }
    for (const rule of allow) await write(path.join(d, 'devices.allow'), rule);
  }

  async freeze(): Promise<void> {
    if (this.layout.kind === 'v2') {
      const d = path.join(this.layout.root, this.rel());
      await write(path.join(d, 'cgroup.freeze'), '1');
      for (let i = 0; i < 500; i++) {
        if (/frozen 1/.test(await read(path.join(d, 'cgroup.events')))) return;
        await SLEEP(10);
      }
      throw new Error('the cgroup did not freeze within 5 s');
    }
    const d = this.ctl('freezer');
    if (!d) throw missingFeature('the freezer cgroup controller', 'pausing needs it');
    await write(path.join(d, 'freezer.state'), 'FROZEN');
    for (let i = 0; i < 500; i++) {
      if ((await read(path.join(d, 'freezer.state'))) === 'FROZEN') return;
      await SLEEP(10);
    }
    throw new Error('the cgroup did not freeze within 5 s');
  }

  async thaw(): Promise<void> {
    if (this.layout.kind === 'v2') await write(path.join(this.layout.root, this.rel(), 'cgroup.freeze'), '0');
    else {
      const d = this.ctl('freezer');
      if (d) await write(path.join(d, 'freezer.state'), 'THAWED');
    }
  }

  async isFrozen(): Promise<boolean> {
    try {
      if (this.layout.kind === 'v2') return /frozen 1/.test(await read(path.join(this.layout.root, this.rel(), 'cgroup.events')));
      const d = this.ctl('freezer');
      return d ? (await read(path.join(d, 'freezer.state'))) !== 'THAWED' : false;
    } catch {
      return false;
    }
  }

  async pids(): Promise<number[]> {
    const d = this.ctl('pids') ?? this.dirs()[0];
    if (!d) return [];
    try {
      return (await read(path.join(d, 'cgroup.procs'))).split('\n').filter(Boolean).map(Number);
    } catch {
      return [];
    }
  }

  async stats(): Promise<{
    cpuUsageNs: bigint;
    cpuUserNs: bigint;
    cpuSystemNs: bigint;
    memoryUsageBytes: bigint;
    memoryLimitBytes: bigint;
    pidsCurrent: number;
    pidsLimit: number;
  }> {
    if (this.layout.kind === 'v2') {
      const d = path.join(this.layout.root, this.rel());
      const cpu = kvBig(await read(path.join(d, 'cpu.stat')).catch(() => ''));
      return {
        cpuUsageNs: (cpu['usage_usec'] ?? 0n) * 1000n,
        cpuUserNs: (cpu['user_usec'] ?? 0n) * 1000n,
        cpuSystemNs: (cpu['system_usec'] ?? 0n) * 1000n,
        memoryUsageBytes: await readBig(path.join(d, 'memory.current')),
        memoryLimitBytes: await readBig(path.join(d, 'memory.max')),
        pidsCurrent: await readNum(path.join(d, 'pids.current')),
        pidsLimit: await readNum(path.join(d, 'pids.max')),
      };
    }
    const acct = this.ctl('cpuacct');
    const mem = this.ctl('memory');
    const pids = this.ctl('pids');
    const hz = 100n; // USER_HZ on Linux x86_64
    const st = acct ? kvBig(await read(path.join(acct, 'cpuacct.stat')).catch(() => '')) : {};
    const limit = mem ? await readBig(path.join(mem, 'memory.limit_in_bytes')) : 0n;
    return {
      cpuUsageNs: acct ? await readBig(path.join(acct, 'cpuacct.usage')) : 0n,
      cpuUserNs: ((st['user'] ?? 0n) * 1_000_000_000n) / hz,
      cpuSystemNs: ((st['system'] ?? 0n) * 1_000_000_000n) / hz,
      memoryUsageBytes: mem ? await readBig(path.join(mem, 'memory.usage_in_bytes')) : 0n,
      // v1 reports "no limit" as a huge page-aligned number.
      memoryLimitBytes: limit >= 2n ** 62n ? 0n : limit,
      pidsCurrent: pids ? await readNum(path.join(pids, 'pids.current')) : 0,
      pidsLimit: pids ? await readNum(path.join(pids, 'pids.max')) : 0,
    };
  }

  /** Kill every process left in the cgroup and remove its directories. */
  /**
   * Delegate the container's cgroups to its root (a user-namespaced host uid):
   * it may then make sub-cgroups and move its own processes between them, as
   * systemd does. The limits set on the container's cgroup itself stay
   * root-owned, so they cannot be raised from inside (cgroup v2's delegation
   * model, applied to each v1 hierarchy too, as LXC does).
   */
  async delegate(uid: number, gid: number): Promise<void> {
    for (const dir of this.dirs()) {
      chownSync(dir, uid, gid);
      for (const f of ['cgroup.procs', 'cgroup.threads', 'cgroup.subtree_control', 'tasks']) {
        const file = path.join(dir, f);
        if (existsSync(file)) chownSync(file, uid, gid);
      }
    }
  }

  /**
   * The sub-cgroups the container made (systemd's slices and services), per
   * hierarchy directory name, parents first: a checkpoint records them, as CRIU
   * recreates only those holding a task, and systemd's inotify watches on the
   * empty ones' cgroup.events must find them again on restore.
   */
  subtree(): Record<string, string[]> {
    const out: Record<string, string[]> = {};
    for (const top of this.dirs()) {
      const rel: string[] = [];
      const walk = (d: string, prefix: string) => {
        let entries;
        try {
          entries = readdirSync(d, { withFileTypes: true });
        } catch {
          return;
        }
        for (const e of entries) {
          if (!e.isDirectory()) continue;
          rel.push(prefix + e.name);
          walk(path.join(d, e.name), `${prefix}${e.name}/`);
        }
      };
      walk(top, '');
      if (rel.length) out[path.basename(path.dirname(path.dirname(top)))] = rel;
    }
    return out;
  }

  /** Makes the sub-cgroups subtree() recorded, owned like delegate() makes them. */
  createSubtree(tree: Record<string, string[]>, owner: { uid: number; gid: number } | undefined): void {
    for (const top of this.dirs()) {
      for (const rel of tree[path.basename(path.dirname(path.dirname(top)))] ?? []) {
        if (rel.split('/').includes('..')) continue;
        const dir = path.join(top, rel);
        mkdirSync(dir, { recursive: true });
        if (!owner) continue;
        chownSync(dir, owner.uid, owner.gid);
        for (const f of ['cgroup.procs', 'cgroup.threads', 'cgroup.subtree_control', 'tasks']) {
          const file = path.join(dir, f);
          if (existsSync(file)) chownSync(file, owner.uid, owner.gid);
        }
      }
    }
  }

  /** Every cgroup at or below the container's, deepest first (a delegated tree may have sub-cgroups). */
  private tree(): string[] {
    const out: string[] = [];
    const walk = (d: string) => {
      let entries;
      try {
        entries = readdirSync(d, { withFileTypes: true });
      } catch {
        return;
      }
      for (const e of entries) if (e.isDirectory()) walk(path.join(d, e.name));
      out.push(d);
    };
    for (const d of this.dirs()) if (existsSync(d)) walk(d);
    return out;
  }

  async destroy(): Promise<void> {
    const dirs = this.tree();
    if (dirs.length === 0) return;
    // v1 has no cgroup.kill: freeze the whole tree first, so nothing can fork
    // while its processes are being killed (a frozen task dies of SIGKILL once thawed).
    const freezer = this.layout.kind === 'hybrid' ? this.ctl('freezer') : undefined;
    if (freezer && existsSync(freezer)) {
      await write(path.join(freezer, 'freezer.state'), 'FROZEN').catch(() => undefined);
      for (const d of dirs) {
        if (!d.startsWith(freezer)) continue;
        for (const p of (await read(path.join(d, 'cgroup.procs')).catch(() => '')).split('\n').filter(Boolean).map(Number)) {
          try {
            process.kill(p, 'SIGKILL');
          } catch {
            // already gone
          }
        }
      }
    }
    await this.thaw().catch(() => undefined);
    for (let attempt = 0; attempt < 200; attempt++) {
      let left = 0;
      for (const d of dirs) {
        if (existsSync(path.join(d, 'cgroup.kill'))) await write(path.join(d, 'cgroup.kill'), '1').catch(() => undefined);
        const procs = (await read(path.join(d, 'cgroup.procs')).catch(() => '')).split('\n').filter(Boolean).map(Number);
        for (const p of procs) {
          try {
            process.kill(p, 'SIGKILL');
          } catch {
            // already gone
          }
        }
        left += procs.length;
      }
      if (left === 0) break;
      await SLEEP(10);
    }
    for (const d of dirs) {
      for (let attempt = 0; attempt < 100; attempt++) {
        try {
          rmdirSync(d);
          break;
        } catch (e) {
          const code = (e as NodeJS.ErrnoException).code;
          if (code === 'ENOENT') break;
          if (code !== 'EBUSY' || attempt === 99) {
            const left = (await read(path.join(d, 'cgroup.procs')).catch(() => '')).split('\n').filter(Boolean);
            throw new OsvirtError(
              'FAILED_PRECONDITION',
              'CLEANUP_INCOMPLETE',
              `cannot remove cgroup ${d}: ${code}${left.length ? ` (processes still in it: ${left.join(' ')})` : ''}; the container stays defined and a retry finishes the job`,
              [],
              { path: d },
            );
          }
          await SLEEP(20);
        }
      }
    }
  }

  exists(): boolean {
    return this.dirs().some((d) => existsSync(d));
  }
}
