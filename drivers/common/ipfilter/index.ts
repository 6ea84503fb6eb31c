// Shared-network-stack IP restriction for containers without their own
// network namespace (FreeBSD-jail-like ip4.addr without vnet, Linux-VServer
// network contexts): cgroup BPF programs on the container's cgroup2
// directory decide which local addresses its sockets may use. The semantics
// live in ipfilter.bpf.c; this module loads, attaches, configures and
// removes it with bpftool.
//
// Kernel state, all of it visible with bpftool:
// - one copy of the programs per object version, pinned under
//   /sys/fs/bpf/osvirt/ipfilter/<sha256 of the object>/{progs,maps};
// - per container, attachments of those programs (BPF_F_ALLOW_MULTI) to its
//   cgroup2 directory, and its policy in the cgroup storage that the kernel
//   creates with the first attachment and frees with the last.
// Nothing is stored elsewhere: after a crash the attachments themselves say
// which cgroups are filtered (list(), cleanupStale()).
//
// One owner per host is assumed (osvirtd); calls in this process are
// serialised, calls from other processes are not coordinated.
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, promises as fs, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { gunzipSync } from 'node:zlib';
import { errorMessage, invalidArgument, missingFeature, OsvirtError } from '../../../src/core/errors';
import { repoPath } from '../../../src/paths';
import { decodePolicy, encodePolicy, normalizePolicy, POLICY_SIZE, restricts, type IpFilterPolicy, type NormalizedPolicy } from './policy';

export { MAX_ADDRS, normalizePolicy, type IpFilterPolicy, type IpMode, type NormalizedPolicy } from './policy';

const execFileP = promisify(execFile);

export const BPFFS = '/sys/fs/bpf';
export const DEFAULT_PIN_ROOT = path.join(BPFFS, 'osvirt', 'ipfilter');
const CGROUP2_SUPER_MAGIC = 0x63677270;
const BPF_FS_MAGIC = 0xcafe4a11;

/**
 * The programs of ipfilter.bpf.c and their bpftool attach types, in attach
 * order. getpeername4 comes first: it never refuses anything but does use
 * the policy storage, so attaching it creates the storage and the policy
 * can be written before any enforcing program runs (a zeroed storage makes
 * the enforcing programs refuse everything).
 */
const PROGRAMS = [
  { name: 'osvipf_getpeer4', type: 'getpeername4' },
  { name: 'osvipf_getpeer6', type: 'getpeername6' },
  { name: 'osvipf_recvmsg4', type: 'recvmsg4' },
  { name: 'osvipf_recvmsg6', type: 'recvmsg6' },
  { name: 'osvipf_sockcrt', type: 'sock_create' },
  { name: 'osvipf_bind4', type: 'bind4' },
  { name: 'osvipf_bind6', type: 'bind6' },
  { name: 'osvipf_connect4', type: 'connect4' },
  { name: 'osvipf_connect6', type: 'connect6' },
  { name: 'osvipf_sendmsg4', type: 'sendmsg4' },
  { name: 'osvipf_sendmsg6', type: 'sendmsg6' },
  { name: 'osvipf_ingress', type: 'ingress' },
  { name: 'osvipf_egress', type: 'egress' },
] as const;

/** Every attached program whose name starts with this is ours, pinned or not. */
const PROG_PREFIX = 'osvipf_';
const POLICY_MAP = 'ipf_policy';

/** bpftool's JSON attach_type (the kernel's name) to the word its detach command takes. */
const DETACH_TYPE: Record<string, string> = {
  cgroup_inet_ingress: 'ingress',
  cgroup_inet_egress: 'egress',
  cgroup_inet_sock_create: 'sock_create',
  cgroup_inet_sock_release: 'sock_release',
  cgroup_inet4_bind: 'bind4',
  cgroup_inet6_bind: 'bind6',
  cgroup_inet4_post_bind: 'post_bind4',
  cgroup_inet6_post_bind: 'post_bind6',
  cgroup_inet4_connect: 'connect4',
  cgroup_inet6_connect: 'connect6',
  cgroup_udp4_sendmsg: 'sendmsg4',
  cgroup_udp6_sendmsg: 'sendmsg6',
  cgroup_udp4_recvmsg: 'recvmsg4',
  cgroup_udp6_recvmsg: 'recvmsg6',
  cgroup_inet4_getpeername: 'getpeername4',
  cgroup_inet6_getpeername: 'getpeername6',
  cgroup_inet4_getsockname: 'getsockname4',
  cgroup_inet6_getsockname: 'getsockname6',
};

export interface IpFilterOptions {
  /** The compiled BPF object. Default: $OSVIRT_IPFILTER_OBJECT or drivers/common/ipfilter/build/ipfilter.bpf.o. */
  object?: string;
  /** Where program sets are pinned; must be on a bpffs. Default: /sys/fs/bpf/osvirt/ipfilter. */
  pinRoot?: string;
}

export interface Availability {
  ok: boolean;
  /** Empty when ok; otherwise what is missing and what to do, FAILED_PRECONDITION style. */
  reason: string;
}

export interface IpFilterStatus {
  /** Some osvirt IP filter program is attached to the directory. */
  attached: boolean;
  /** The pinned program set (object hash) it belongs to; undefined if its pins are gone. */
  version?: string | undefined;
  /** It is the set built from the object this process would load. */
  current: boolean;
  /** Every program of that set is attached, and nothing from another set. */
  complete: boolean;
  /** The policy in effect; undefined when not attached or never configured (then everything is refused). */
  policy?: NormalizedPolicy | undefined;
}

export interface IpFilterAttachment {
  cgroup2Dir: string;
  version?: string | undefined;
  current: boolean;
  programs: number;
}

export interface CleanupReport {
  /** cgroup2 directories whose filter was removed. */
  detached: string[];
  /** Program sets (object hashes, or leftover temporary directories) that were unpinned. */
  unpinned: string[];
}

interface Attached {
  id: number;
  attach_type: string;
  name: string;
}

interface ProgramSet {
  version: string;
  dir: string;
  /** Program name to kernel program id. */
  ids: Map<string, number>;
}

/** Thrown for a bpftool command that failed; the message carries bpftool's own words. */
export class BpftoolError extends Error {
  constructor(
    readonly args: string[],
    readonly output: string,
  ) {
    super(`bpftool ${args.join(' ')}: ${output || 'failed'}`);
    this.name = 'BpftoolError';
  }
}

async function bpftool(args: string[]): Promise<string> {
  try {
    return (await execFileP('bpftool', args, { maxBuffer: 64 << 20 })).stdout;
  } catch (e) {
    const err = e as NodeJS.ErrnoException & { stdout?: string; stderr?: string };
    if (err.code === 'ENOENT') throw missingFeature('bpftool', 'it is not installed; install the Debian package "bpftool"');
    // libbpf's verifier log can be long: its last lines say why.
    const out = `${err.stderr ?? ''}\n${err.stdout ?? ''}`.trim().split('\n').filter(Boolean);
    throw new BpftoolError(args, out.slice(-6).join(' | ') || err.message);
  }
}

async function bpftoolJson<T>(args: string[]): Promise<T> {
  const out = await bpftool(['-j', ...args]);
  return (out.trim() ? JSON.parse(out) : []) as T;
}

/** Serialises this process's changes to shared kernel state. */
let queue: Promise<unknown> = Promise.resolve();
function locked<T>(fn: () => Promise<T>): Promise<T> {
  const run = queue.then(fn, fn);
  queue = run.catch(() => undefined);
  return run;
}

function unescapeMount(p: string): string {
  return p.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

function mounts(): { dir: string; type: string }[] {
  return readFileSync('/proc/self/mounts', 'utf8')
    .split('\n')
    .map((l) => l.split(' '))
    .filter((f) => f.length > 2)
    .map((f) => ({ dir: unescapeMount(f[1]!), type: f[2]! }));
}

/** Every cgroup2 mount: /sys/fs/cgroup on a pure v2 host, /sys/fs/cgroup/unified on a hybrid one. */
export function cgroup2Roots(): string[] {
  return [
    ...new Set(
      mounts()
        .filter((m) => m.type === 'cgroup2')
        .map((m) => m.dir),
    ),
  ];
}

/** CONFIG_ value from /proc/config.gz: 'y', 'm', undefined (not set), or null (unreadable). */
function kernelOption(opt: string): string | undefined | null {
  try {
    const cfg = gunzipSync(readFileSync('/proc/config.gz')).toString('utf8');
    return new RegExp(`^${opt}=(.*)$`, 'm').exec(cfg)?.[1];
  } catch {
    return null;
  }
}

function hex(b: Buffer): string[] {
  return ['hex', ...[...b].map((x) => x.toString(16).padStart(2, '0'))];
}

function cgroupKey(id: bigint): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(id);
  return b;
}

async function populated(dir: string): Promise<boolean> {
  try {
    return /^populated 1$/m.test(await fs.readFile(path.join(dir, 'cgroup.events'), 'utf8'));
  } catch {
    return false;
  }
}

export class IpFilter {
  readonly object: string;
  readonly pinRoot: string;

  constructor(opts: IpFilterOptions = {}) {
    this.object = opts.object ?? process.env['OSVIRT_IPFILTER_OBJECT'] ?? repoPath('drivers', 'common', 'ipfilter', 'build', 'ipfilter.bpf.o');
    this.pinRoot = opts.pinRoot ?? DEFAULT_PIN_ROOT;
  }

  /**
   * Can this host restrict containers' addresses? Checks root, the kernel
   * (CONFIG_CGROUP_BPF, a cgroup2 mount, bpffs), bpftool and the built
   * object, then has the kernel verify the programs (so a kernel too old for
   * a helper is reported here, not at the first container start). Leaves
   * nothing pinned that was not pinned before.
   */
  static async available(opts: IpFilterOptions = {}): Promise<Availability> {
    try {
      await new IpFilter(opts).probe();
      return { ok: true, reason: '' };
    } catch (e) {
      return { ok: false, reason: errorMessage(e) };
    }
  }

  /** available(), as a FAILED_PRECONDITION error naming what is missing. */
  static async requireAvailable(opts: IpFilterOptions = {}): Promise<void> {
    await new IpFilter(opts).probe();
  }

  private async probe(): Promise<void> {
    if (process.getuid?.() !== 0)
      throw missingFeature('root privileges', 'loading and attaching cgroup BPF programs needs CAP_BPF, CAP_NET_ADMIN and CAP_SYS_ADMIN');
    if (kernelOption('CONFIG_CGROUP_BPF') === undefined)
      throw missingFeature('cgroup BPF (CONFIG_CGROUP_BPF)', 'this kernel was built without it, so addresses cannot be restricted on a shared network stack');
    if (kernelOption('CONFIG_BPF_SYSCALL') === undefined)
      throw missingFeature('the bpf() system call (CONFIG_BPF_SYSCALL)', 'this kernel was built without it');
    if (cgroup2Roots().length === 0)
      throw missingFeature(
        'a cgroup2 hierarchy',
        'cgroup BPF programs attach to cgroup2 directories; mount cgroup2 (at /sys/fs/cgroup/unified on a hybrid host)',
      );
    if (!existsSync(this.object))
      throw missingFeature(
        'the IP filter BPF object',
        `${this.object} is missing; build it with "make -C drivers/common/ipfilter" (needs clang and libbpf-dev)`,
      );
    try {
      await bpftool(['version']);
    } catch (e) {
      if (e instanceof OsvirtError) throw e;
      throw missingFeature('bpftool', errorMessage(e));
    }
    const version = await this.version();
    await locked(async () => {
      await this.ensureBpffs();
      if (await this.complete(path.join(this.pinRoot, version))) return;
      // Let the verifier judge the programs, then unpin them again.
      const tmp = path.join(this.pinRoot, `tmp-probe-${process.pid}`);
      try {
        await this.load(tmp);
      } catch (e) {
        throw e instanceof OsvirtError ? e : missingFeature('cgroup BPF programs for IP filtering', `the kernel refused them: ${errorMessage(e)}`);
      } finally {
        await fs.rm(tmp, { recursive: true, force: true });
        await this.removeEmptyRoot();
      }
    });
  }

  /**
   * Restrict the sockets of every process in cgroup2Dir (and below) to the
   * policy; call it before the container's first process runs. Calling it
   * again on a filtered directory replaces the policy in place (one map
   * write, which the kernel applies as an RCU swap of the storage buffer, so
   * a program sees the old or the new policy, never a mix), and moves the
   * directory to the current program version if an older one is attached.
   * A policy that restricts nothing ('inherit' for both families) removes
   * the filter.
   */
  async attach(cgroup2Dir: string, policy: IpFilterPolicy): Promise<void> {
    const p = normalizePolicy(policy);
    if (!restricts(p)) return this.detach(cgroup2Dir);
    const dir = path.resolve(cgroup2Dir);
    await locked(async () => {
      const id = await this.cgroupId(dir);
      const set = await this.ensureLoaded();
      const before = await this.attachedHere(dir);
      const fresh = before.length === 0;
      const ids = new Set(set.ids.values());
      try {
        for (const [i, prog] of PROGRAMS.entries()) {
          const progId = set.ids.get(prog.name)!;
          if (!before.some((a) => a.id === progId)) {
            await bpftool(['cgroup', 'attach', dir, prog.type, 'pinned', path.join(set.dir, 'progs', prog.name), 'multi']);
          }
          if (i === 0)
            await bpftool(['map', 'update', 'pinned', path.join(set.dir, 'maps', POLICY_MAP), 'key', ...hex(cgroupKey(id)), 'value', ...hex(encodePolicy(p))]);
        }
        // Programs of an older version go only now: until here both ran, and both had to allow.
        const old = before.filter((a) => !ids.has(a.id));
        for (const a of old) await this.detachOne(dir, a);
        if (old.length) await this.prune();
      } catch (e) {
        if (fresh) await this.detachLocked(dir).catch(() => undefined);
        throw e;
      }
    });
  }

  /**
   * Remove the filter from cgroup2Dir (idempotent; a directory that no
   * longer exists has nothing attached), then unpin program sets that no
   * cgroup uses any more.
   */
  async detach(cgroup2Dir: string): Promise<void> {
    const dir = path.resolve(cgroup2Dir);
    await locked(async () => {
      await this.detachLocked(dir);
      await this.prune();
    });
  }

  /** What is attached to cgroup2Dir, read back from the kernel. */
  async status(cgroup2Dir: string): Promise<IpFilterStatus> {
    const dir = path.resolve(cgroup2Dir);
    if (!existsSync(dir)) return { attached: false, current: false, complete: false };
    const here = await this.attachedHere(dir);
    if (here.length === 0) return { attached: false, current: false, complete: false };
    const sets = await this.pinnedSets();
    const set = [...sets.values()].find((s) => here.some((a) => [...s.ids.values()].includes(a.id)));
    const current = !!set && set.version === (await this.version().catch(() => ''));
    if (!set) return { attached: true, current, complete: false };
    const mine = new Set(set.ids.values());
    const complete = here.every((a) => mine.has(a.id)) && [...mine].every((id) => here.some((a) => a.id === id));
    let policy: NormalizedPolicy | undefined;
    try {
      const r = await bpftoolJson<{ value: string[] }>([
        'map',
        'lookup',
        'pinned',
        path.join(set.dir, 'maps', POLICY_MAP),
        'key',
        ...hex(cgroupKey(await this.cgroupId(dir))),
      ]);
      policy = decodePolicy(Buffer.from(r.value.map((x) => parseInt(x, 16))));
    } catch {
      policy = undefined; // the storage goes with its last program; nothing to show
    }
    return { attached: true, version: set.version, current, complete, policy };
  }

  /** Every cgroup2 directory that has osvirt IP filter programs attached, on this host. */
  async list(): Promise<IpFilterAttachment[]> {
    const sets = existsSync(this.pinRoot) ? await this.pinnedSets() : new Map<string, ProgramSet>();
    const current = await this.version().catch(() => '');
    const out: IpFilterAttachment[] = [];
    for (const [dir, progs] of await this.attachments()) {
      const set = [...sets.values()].find((s) => progs.some((a) => [...s.ids.values()].includes(a.id)));
      out.push({ cgroup2Dir: dir, version: set?.version, current: set?.version === current, programs: progs.length });
    }
    return out;
  }

  /**
   * Crash recovery, idempotent: remove the filter from every cgroup for which
   * isLive says no (default: cgroups with no process left in them), and unpin
   * program sets and half-loaded leftovers that nothing uses. Cgroups that
   * were removed took their attachments with them.
   */
  async cleanupStale(opts: { isLive?: (cgroup2Dir: string) => boolean | Promise<boolean> } = {}): Promise<CleanupReport> {
    const isLive = opts.isLive ?? populated;
    return locked(async () => {
      const detached: string[] = [];
      for (const [dir] of await this.attachments()) {
        if (await isLive(dir)) continue;
        await this.detachLocked(dir);
        detached.push(dir);
      }
      return { detached, unpinned: await this.prune() };
    });
  }

  /** Unpin every program set no cgroup uses (detach() already does this). */
  async release(): Promise<string[]> {
    return locked(() => this.prune());
  }

  // --- internals -------------------------------------------------------

  /** Program sets are named by the object's hash, so an upgraded object never mixes with a running one. */
  private async version(): Promise<string> {
    let data: Buffer;
    try {
      data = await fs.readFile(this.object);
    } catch {
      throw missingFeature(
        'the IP filter BPF object',
        `${this.object} is missing; build it with "make -C drivers/common/ipfilter" (needs clang and libbpf-dev)`,
      );
    }
    return createHash('sha256').update(data).digest('hex').slice(0, 16);
  }

  private async ensureBpffs(): Promise<void> {
    if (!mounts().some((m) => m.type === 'bpf' && m.dir === BPFFS)) {
      try {
        await execFileP('mount', ['-t', 'bpf', 'bpf', BPFFS]);
      } catch (e) {
        const err = e as { stderr?: string; message: string };
        throw missingFeature('the BPF filesystem (bpffs)', `it is not mounted at ${BPFFS} and mounting it failed: ${(err.stderr || err.message).trim()}`);
      }
    }
    await fs.mkdir(this.pinRoot, { recursive: true });
    if ((await fs.statfs(this.pinRoot)).type !== BPF_FS_MAGIC) throw missingFeature('the BPF filesystem (bpffs)', `${this.pinRoot} is not on a bpffs`);
  }

  /** Load the object and pin its programs and maps under dir/{progs,maps}. */
  private async load(dir: string): Promise<void> {
    await fs.rm(dir, { recursive: true, force: true });
    await fs.mkdir(dir); // bpftool needs the parent of its pin paths to exist on the bpffs
    await bpftool(['prog', 'loadall', this.object, path.join(dir, 'progs'), 'pinmaps', path.join(dir, 'maps')]);
    const map = await bpftoolJson<{ bytes_value?: number }>(['map', 'show', 'pinned', path.join(dir, 'maps', POLICY_MAP)]);
    if (map.bytes_value !== POLICY_SIZE) {
      throw missingFeature(
        'a matching IP filter BPF object',
        `${this.object} was built from another version of ipfilter.bpf.c (its policy is ${map.bytes_value} bytes, this osvirt writes ${POLICY_SIZE}); rebuild it with "make -C drivers/common/ipfilter"`,
      );
    }
  }

  private async complete(dir: string): Promise<boolean> {
    return PROGRAMS.every((p) => existsSync(path.join(dir, 'progs', p.name))) && existsSync(path.join(dir, 'maps', POLICY_MAP));
  }

  /** The current object's program set, loaded and pinned if it is not yet. */
  private async ensureLoaded(): Promise<ProgramSet> {
    await this.ensureBpffs();
    const version = await this.version();
    const dir = path.join(this.pinRoot, version);
    if (!(await this.complete(dir))) {
      // Load beside it and rename, so a crash never leaves a half set under the real name.
      // (No dot in the name: bpffs refuses names with dots.)
      const tmp = path.join(this.pinRoot, `tmp-loading-${version}-${process.pid}`);
      try {
        await this.load(tmp);
        await fs.rm(dir, { recursive: true, force: true });
        await fs.rename(tmp, dir);
      } finally {
        await fs.rm(tmp, { recursive: true, force: true });
      }
    }
    const set = (await this.pinnedSets()).get(version);
    if (!set || set.ids.size !== PROGRAMS.length) throw new Error(`the IP filter programs pinned in ${dir} are incomplete; remove that directory`);
    return set;
  }

  /** Pinned program sets under pinRoot, with their kernel program ids. */
  private async pinnedSets(): Promise<Map<string, ProgramSet>> {
    const progs = await bpftoolJson<{ id: number; pinned?: string[] }[]>(['-f', 'prog', 'show']);
    const sets = new Map<string, ProgramSet>();
    const prefix = this.pinRoot + path.sep;
    for (const p of progs) {
      for (const pin of p.pinned ?? []) {
        if (!pin.startsWith(prefix)) continue;
        const [version, sub, name] = pin.slice(prefix.length).split(path.sep);
        if (!version || sub !== 'progs' || !name) continue;
        let s = sets.get(version);
        if (!s) sets.set(version, (s = { version, dir: path.join(this.pinRoot, version), ids: new Map() }));
        s.ids.set(name, p.id);
      }
    }
    return sets;
  }

  /** The cgroup id the policy storage is keyed by (the directory's inode on cgroup2); validates the directory. */
  private async cgroupId(dir: string): Promise<bigint> {
    let fsType: number;
    try {
      fsType = (await fs.statfs(dir)).type;
    } catch (e) {
      throw invalidArgument('cgroup2Dir', `${dir}: ${(e as NodeJS.ErrnoException).code ?? errorMessage(e)}`);
    }
    if (fsType !== CGROUP2_SUPER_MAGIC) throw invalidArgument('cgroup2Dir', `${dir} is not a cgroup2 directory (cgroup BPF needs cgroup2, not a v1 hierarchy)`);
    if (cgroup2Roots().includes(dir))
      throw invalidArgument('cgroup2Dir', `${dir} is the root of the cgroup2 hierarchy: filtering it would restrict the whole host`);
    return (await fs.stat(dir, { bigint: true })).ino;
  }

  /** Our programs attached directly to dir. */
  private async attachedHere(dir: string): Promise<Attached[]> {
    const all = await bpftoolJson<Attached[]>(['cgroup', 'show', dir]);
    return all.filter((a) => a.name.startsWith(PROG_PREFIX));
  }

  /** Our programs attached anywhere, per cgroup2 directory. */
  private async attachments(): Promise<Map<string, Attached[]>> {
    const out = new Map<string, Attached[]>();
    for (const root of cgroup2Roots()) {
      const tree = await bpftoolJson<{ cgroup: string; programs: Attached[] }[]>(['cgroup', 'tree', root]);
      for (const c of tree) {
        const ours = c.programs.filter((a) => a.name.startsWith(PROG_PREFIX));
        if (ours.length) out.set(c.cgroup, ours);
      }
    }
    return out;
  }

  private async detachOne(dir: string, a: Attached): Promise<void> {
    const type = DETACH_TYPE[a.attach_type];
    if (!type) throw new Error(`cannot detach program ${a.id} (${a.name}) from ${dir}: unknown attach type ${a.attach_type}`);
    try {
      await bpftool(['cgroup', 'detach', dir, type, 'id', String(a.id)]);
    } catch (e) {
      // Gone already (another detach, or the cgroup went away) is what we wanted.
      if (existsSync(dir) && (await this.attachedHere(dir)).some((x) => x.id === a.id)) throw e;
    }
  }

  private async detachLocked(dir: string): Promise<void> {
    if (!existsSync(dir)) return;
    const order = (a: Attached) => PROGRAMS.findIndex((p) => p.name === a.name);
    // Enforcing programs first, the storage-creating one last (the reverse of attach).
    const here = (await this.attachedHere(dir)).sort((a, b) => order(b) - order(a));
    for (const a of here) await this.detachOne(dir, a);
  }

  /** Unpin sets with no attachment left, and temporary directories of interrupted loads. */
  private async prune(): Promise<string[]> {
    if (!existsSync(this.pinRoot)) return [];
    const inUse = new Set<number>();
    for (const progs of (await this.attachments()).values()) for (const a of progs) inUse.add(a.id);
    const sets = await this.pinnedSets();
    const removed: string[] = [];
    for (const entry of await fs.readdir(this.pinRoot)) {
      const set = sets.get(entry);
      if (set && [...set.ids.values()].some((id) => inUse.has(id))) continue;
      await fs.rm(path.join(this.pinRoot, entry), { recursive: true, force: true });
      removed.push(entry);
    }
    await this.removeEmptyRoot();
    return removed;
  }

  /** Leave no empty osvirt directories on the bpffs (the bpffs mount itself stays). */
  private async removeEmptyRoot(): Promise<void> {
    for (const dir of [this.pinRoot, path.dirname(this.pinRoot)]) {
      if (dir === BPFFS || !dir.startsWith(BPFFS + path.sep)) return;
      try {
        await fs.rmdir(dir);
      } catch {
        return; // not empty, or already gone
      }
    }
  }
}
