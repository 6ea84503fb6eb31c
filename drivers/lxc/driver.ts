// The lxc driver: system and application containers built from the
// kernel's own features (namespaces, cgroups, pivot_root, capabilities,
// veth/macvlan/bridge), the way LXC builds them. The native helper does the
// clone/pivot_root/setns work; this file decides what to ask of it.
import { execFile, spawn } from 'node:child_process';
import { promisify } from 'node:util';
import { promises as fs, existsSync, lstatSync, readFileSync, readlinkSync } from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { PassThrough } from 'node:stream';
import type { Logger } from 'pino';
import {
  type ContainerSpec,
  type ContainerStats,
  type IdMap,
  type IdMapping,
  MountPropagation,
  MountType,
  RlimitType,
} from '../../src/gen/osvirt/v1/container';
import type { CheckpointOptions } from '../../src/gen/osvirt/v1/container';
import {
  DRIVER_PROTOCOL_VERSION,
  RuntimeStatus,
  type ConsoleSession,
  type CheckpointResult,
  type Driver,
  type DriverContext,
  type DriverInfo,
  type ExecOptions,
  type ExecSession,
  type RuntimeState,
} from '../../src/core/driver';
import { boundingSet, CAPABILITY_NAMES } from '../../src/core/capabilities';
import { writeFileAtomic } from '../../src/core/atomic-file';
import { errorMessage, invalidArgument, missingFeature, notFound, OsvirtError, wrongState } from '../../src/core/errors';
import { faultPoint } from '../../src/core/faults';
import { validateName } from '../../src/core/validate';
import { helperPath } from '../../src/paths';
import { VERSION } from '../../src/version';
import { ContainerCgroup, detectLayout, type Layout } from './cgroups';
import { securityArgs } from './security';
import { launch, LaunchError, monitorResize, readExitRecord, removeMonitorDir, waitExit, type ExitRecord } from './monitor';
import { LxcCheckpointer } from './checkpoint';
import { locateCriu } from '../../src/criu/criu-locate';
import {
  checkNetworkSupport,
  DEFAULT_BRIDGE,
  interfaceStats,
  Ipam,
  planVeth,
  setupNetwork,
  teardownNetwork,
  vethArgs,
  vethRuntime,
  type BridgeConfig,
  type NetworkRuntime,
} from './network';
import { Launcher } from './launcher';
import { ExecReady, ResizeRequest } from '../../src/gen/osvirt/helper/v1/helper';
import { encodeFrame, MessageReader } from '../../src/host/helper-wire';
import { BUSYBOX_DEFAULT_INIT, mountOverlay, Templates } from './rootfs';
import { isMountpoint, unmountUnder } from '../../src/host/mounts';
import { pidAlive, pidStartTime } from '../../src/host/processes';
import { IdAllocator, type IdRange } from './idmap';
import { detectInit, INIT_PATHS, type InitInfo } from './init-detect';
import { ensureNat, forwardingProblem, natUnavailable, nftPath, publishPorts, sweepPorts, unpublishPorts } from './nat';
import { containerResolv } from './dns';
import { normalizeOptions, templateKey } from './templates';
import type { ImageStore } from '../../src/images/store';
import { readRuntime, removeRuntime, runtimeNow, writeRuntime, type LxcRuntime } from './runtime-file';
import { templateExtension } from './template-service';
import type { DriverExtension } from '../../src/core/extension';
import { randomUUID } from 'node:crypto';

/** How a system container's init is halted and what its exit means (boot.json, kept until the next start). */
interface Boot {
  kind: InitInfo['kind'];
  haltSignal: number;
  rebootSignal: number;
}

const SIGHUP = 1;
const SIGINT = 2;
/** systemd's DefaultLimitNOFILE hard limit: dbus-daemon raises its soft limit to 65536. */
const SYSTEM_NOFILE_HARD = 524288;

/** A container's user namespace maps; undefined: privileged (no user namespace). */
interface UserNs {
  uidMap: IdMap[];
  gidMap: IdMap[];
}

const run = promisify(execFile);

const RLIMIT_NAMES: Record<number, string> = {
  [RlimitType.RLIMIT_TYPE_NOFILE]: 'nofile',
  [RlimitType.RLIMIT_TYPE_NPROC]: 'nproc',
  [RlimitType.RLIMIT_TYPE_AS]: 'as',
  [RlimitType.RLIMIT_TYPE_RSS]: 'rss',
  [RlimitType.RLIMIT_TYPE_MEMLOCK]: 'memlock',
  [RlimitType.RLIMIT_TYPE_LOCKS]: 'locks',
  [RlimitType.RLIMIT_TYPE_MSGQUEUE]: 'msgqueue',
  [RlimitType.RLIMIT_TYPE_CORE]: 'core',
  [RlimitType.RLIMIT_TYPE_CPU]: 'cpu',
  [RlimitType.RLIMIT_TYPE_FSIZE]: 'fsize',
  [RlimitType.RLIMIT_TYPE_STACK]: 'stack',
  [RlimitType.RLIMIT_TYPE_DATA]: 'data',
  [RlimitType.RLIMIT_TYPE_SIGPENDING]: 'sigpending',
  [RlimitType.RLIMIT_TYPE_NICE]: 'nice',
  [RlimitType.RLIMIT_TYPE_RTPRIO]: 'rtprio',
};

const PROPAGATION: Record<number, string> = {
  [MountPropagation.MOUNT_PROPAGATION_UNSPECIFIED]: '',
  [MountPropagation.MOUNT_PROPAGATION_PRIVATE]: 'private',
  [MountPropagation.MOUNT_PROPAGATION_RPRIVATE]: 'rprivate',
  [MountPropagation.MOUNT_PROPAGATION_SLAVE]: 'slave',
  [MountPropagation.MOUNT_PROPAGATION_RSLAVE]: 'rslave',
  [MountPropagation.MOUNT_PROPAGATION_SHARED]: 'shared',
  [MountPropagation.MOUNT_PROPAGATION_RSHARED]: 'rshared',
};

const SLEEP = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The maps of an allocated range: container ids 0.. are host ids uid.. and gid... */
function userNsOf(r: IdRange): UserNs {
  return { uidMap: [{ containerId: 0, hostId: r.uid, size: r.size }], gidMap: [{ containerId: 0, hostId: r.gid, size: r.size }] };
}

/** The host id that container id 0 maps to. */
function outerId(map: IdMap[]): number {
  const m = map.find((e) => e.containerId === 0);
  return m ? m.hostId : -1;
}

/**
 * How a driver built on this one (jail, vserver) adds its semantics: it
 * keeps the lxc machinery (helper, monitor, cgroups, rootfs, network,
 * checkpoint) and hooks in where its model differs.
 */
export interface LxcExtension {
  /** Check driver-specific options; throw INVALID_ARGUMENT / FAILED_PRECONDITION. */
  validate?(id: string, spec: ContainerSpec): Promise<void>;
  /** After the container's cgroups exist, before its init is cloned (e.g. attach BPF filters to cg.unifiedDir()). */
  beforeLaunch?(id: string, spec: ContainerSpec, cg: ContainerCgroup): Promise<void>;
  /** Extra `osvirt-helper run` options (placed before `--`). */
  helperArgs?(id: string, spec: ContainerSpec): string[];
  /** Called with the init's pid between "created" and "go", after network setup (e.g. host addresses). */
  configure?(id: string, spec: ContainerSpec, initPid: number): Promise<void>;
  /** After a run ended and its host resources are gone (also after a failed start); idempotent. */
  afterStop?(id: string): Promise<void>;
  /** Extra `osvirt-helper exec` options, so exec'd processes get what the init got (seccomp, rlimits). */
  execArgs?(id: string): string[];
  /** Containers on the host's network stack may be checkpointed (their sockets come back there). */
  checkpointHostNetwork?: boolean;
}

export interface LxcDriverOptions {
  bridge?: BridgeConfig;
  helper?: string;
  /** Registered name; "lxc" unless a driver is built on this one. */
  name?: string;
  /** The daemon's shared templates (default: a directory of this driver's own). */
  templates?: Templates;
  extension?: LxcExtension;
  /** The host's resolver configuration bridged containers' /etc/resolv.conf is made from (default /etc/resolv.conf). */
  resolvConf?: string;
  /** The daemon's image store (Rootfs.image); without it, images are refused. */
  images?: ImageStore;
}

export class LxcDriver implements Driver {
  readonly name: string;
  private readonly ext: LxcExtension;
  private stateDir = '';
  private logger!: Logger;
  private layout!: Layout;
  private templates!: Templates;
  private readonly images: ImageStore | undefined;
  private ipam!: Ipam;
  private ids!: IdAllocator;
  private readonly bridge: BridgeConfig;
  private readonly resolvConf: string;
  private readonly helper: string;
  /** One shared exit watch per running container. */
  private readonly waits = new Map<string, Promise<RuntimeState>>();
  private readonly messages: string[] = [];
  private criuOk = false;
  private checkpointer?: LxcCheckpointer;
  private launcher?: Launcher;
  /** Background removals of deleted containers' directories (see discard). */
  private readonly removing = new Set<Promise<void>>();

  constructor(opts: LxcDriverOptions = {}) {
    this.name = opts.name ?? 'lxc';
    this.ext = opts.extension ?? {};
    this.bridge = opts.bridge ?? DEFAULT_BRIDGE;
    this.resolvConf = opts.resolvConf ?? '/etc/resolv.conf';
    this.helper = opts.helper ?? helperPath();
    if (opts.templates) this.templates = opts.templates;
    this.images = opts.images;
  }

  /** An image root's layer directories, top first. */
  private imageLayers(spec: ContainerSpec): string[] {
    if (!this.images) throw missingFeature('an image store', `the ${this.name} driver was started without one (osvirtd gives it one)`);
    const digest = spec.rootfs?.imageDigest;
    if (!digest) throw invalidArgument('spec.rootfs.image_digest', 'is empty: the daemon sets it when it creates a container from an image');
    return this.images.layerDirs(digest);
  }

  async init(ctx: DriverContext): Promise<void> {
    this.stateDir = ctx.stateDir;
    this.logger = ctx.logger;
    if (process.getuid?.() !== 0) throw missingFeature('root privileges', 'the lxc driver creates namespaces, cgroups and mounts; run osvirtd as root');
    if (!existsSync(this.helper)) throw missingFeature('the native helper', `${this.helper} is missing; build it with "make -C native" (npm run build does)`);
    for (const ns of ['pid', 'mnt', 'uts', 'ipc', 'net', 'cgroup']) {
      if (!existsSync(`/proc/self/ns/${ns}`)) throw missingFeature(`${ns} namespaces`, `/proc/self/ns/${ns} does not exist`);
    }
    this.layout = detectLayout();
    this.templates ??= new Templates(path.join(this.stateDir, 'templates'));
    await this.templates.removeStale();
    // One address table for every driver built on this one: they share the bridge.
    this.ipam = new Ipam(path.join(path.dirname(this.stateDir), 'ipam.json'), this.bridge);
    // Likewise one table of host id ranges: no two containers' roots may be the same host user.
    this.ids = new IdAllocator(path.join(path.dirname(this.stateDir), 'idmap.json'));
    if (!existsSync('/proc/self/ns/user'))
      throw missingFeature('user namespaces', 'every container runs in its own user namespace; this kernel has none (CONFIG_USER_NS)');
    await fs.mkdir(path.join(this.stateDir, 'containers'), { recursive: true });
    this.launcher = new Launcher(this.helper, path.join(this.stateDir, 'launcher.sock'), this.logger);
    await this.launcher.start();
    // What a previous daemon was still removing when it stopped.
    await fs.rm(path.join(this.stateDir, 'trash'), { recursive: true, force: true });
    await this.restoreIdRanges();
    if (this.layout.kind === 'hybrid' && !this.layout.v1['freezer']) this.messages.push('pause: no freezer cgroup controller');
    const criu = await locateCriu();
    this.criuOk = criu.ok;
    if (!criu.ok) this.messages.push(`checkpoint: ${criu.reason}`);
    // Said once at start; GetInfo says it again for as long as it holds.
    const nat = natUnavailable();
    if (nat) this.logger.warn({ driver: this.name, bridge: this.bridge.name }, `nat: ${nat}`);
    const dns = containerResolv(this.resolvConf);
    if (dns.note) this.logger[dns.conf ? 'info' : 'warn']({ driver: this.name }, dns.note);
  }

  async info(): Promise<DriverInfo> {
    const caps = ['exec', 'console', 'stats'];
    if (this.layout.kind === 'v2' || this.layout.v1['freezer']) caps.push('pause');
    if (this.criuOk) caps.push('checkpoint');
    // Bridge networking's limits on this host: NAT (nft, forwarding) and the containers' name servers.
    const messages = [...this.messages];
    const nat = natUnavailable() ?? forwardingProblem();
    if (nat) messages.push(`nat: ${nat}`);
    const dns = containerResolv(this.resolvConf);
    if (dns.note && !dns.conf) messages.push(dns.note);
    return { name: this.name, version: VERSION, protocolVersion: DRIVER_PROTOCOL_VERSION, capabilities: caps, messages };
  }

  private dir(id: string): string {
    return path.join(this.stateDir, 'containers', id);
  }

  private monitorDir(id: string): string {
    return path.join(this.dir(id), 'monitor');
  }

  private cgroup(id: string): ContainerCgroup {
    return new ContainerCgroup(this.layout, id);
  }

  async validate(id: string, spec: ContainerSpec): Promise<void> {
    const src = spec.rootfs?.source;
    if (!src) throw invalidArgument('spec.rootfs', 'is required: a template ("busybox"), a path, or host: {} for an application container');
    const ipcPeer = spec.driverOptions?.$case === 'lxc' ? spec.driverOptions.value.shareIpcWith : '';
    if (ipcPeer) {
      validateName('spec.lxc.share_ipc_with', ipcPeer);
      if (ipcPeer === id) throw invalidArgument('spec.lxc.share_ipc_with', 'a container cannot join itself');
    }
    if (src.$case === 'template') await this.templates.ensure(src.value, spec.rootfs?.templateOptions);
    if (src.$case === 'image') this.imageLayers(spec);
    if (src.$case === 'path') {
      const st = await fs.stat(src.value).catch(() => undefined);
      if (!st?.isDirectory()) throw invalidArgument('spec.rootfs.path', `${src.value} is not a directory on the host`);
    }
    if (src.$case === 'path' && !spec.process?.args.length && !detectInit(src.value).system) {
      throw invalidArgument('spec.process.args', `is required: ${src.value} has no /sbin/init to boot`);
    }
    if (src.$case === 'host' && !spec.process?.args.length)
      throw invalidArgument('spec.process.args', 'is required for an application container (rootfs.host)');
    for (const [i, m] of spec.mounts.entries()) {
      if (m.type === MountType.MOUNT_TYPE_BIND && !existsSync(m.source))
        throw invalidArgument(`spec.mounts[${i}].source`, `${m.source} does not exist on the host`);
    }
    checkNetworkSupport(spec.network);
    if (spec.ports.length) {
      // The port rules live in the daemon's bridge's table, next to its masquerade and route_localnet.
      const mode = spec.network?.mode;
      const bridge = mode?.$case === 'bridge' ? mode.value.bridge || this.bridge.name : '';
      if (bridge !== this.bridge.name)
        throw invalidArgument(
          'spec.ports',
          `ports are published only for containers on the daemon's bridge (${this.bridge.name}), not on ${bridge || 'this network'}`,
        );
      const nat = natUnavailable();
      if (nat) throw missingFeature('nftables (nft)', `spec.ports are published as nftables DNAT rules: ${nat}`);
    }
    if (spec.devices.length && this.layout.kind === 'v2') {
      throw missingFeature('device cgroup on cgroup v2', 'passing devices needs a BPF device program, which osvirt does not load yet');
    }
    const lxc = spec.driverOptions?.$case === 'lxc' ? spec.driverOptions.value : undefined;
    if (lxc && lxc.uidMap.length > 0 !== lxc.gidMap.length > 0) throw invalidArgument('spec.lxc.gid_map', 'uid_map and gid_map go together');
    if (lxc?.uidMap.length && spec.security?.privileged)
      throw invalidArgument('spec.security.privileged', 'a privileged container has no user namespace, so it cannot have lxc.uid_map / gid_map');
    for (const [field, maps] of [
      ['uid_map', lxc?.uidMap ?? []],
      ['gid_map', lxc?.gidMap ?? []],
    ] as const) {
      if (maps.length && !maps.some((m) => m.containerId === 0 && m.size > 0))
        throw invalidArgument(`spec.lxc.${field}`, "must map container id 0 (the container's root)");
      if (maps.some((m) => m.hostId === 0 && m.size > 0))
        throw invalidArgument(`spec.lxc.${field}`, "must not map host id 0: that would make a user of the container the host's root");
    }
    await this.ext.validate?.(id, spec);
  }

  /**
   * The container's user namespace: the spec's own maps (lxc.uid_map), or the
   * range allocated to it; undefined for a privileged container.
   */
  private async userNs(id: string, spec: ContainerSpec): Promise<UserNs | undefined> {
    if (spec.security?.privileged) return undefined;
    const lxc = spec.driverOptions?.$case === 'lxc' ? spec.driverOptions.value : undefined;
    if (lxc?.uidMap.length) return { uidMap: lxc.uidMap, gidMap: lxc.gidMap };
    const r = await this.ids.allocate(id);
    return userNsOf(r);
  }

  /** Every container's recorded range back into idmap.json, where a crash lost it. */
  private async restoreIdRanges(): Promise<void> {
    const ranges: Record<string, { uid: number; gid: number; size: number }> = {};
    for (const id of await fs.readdir(path.join(this.stateDir, 'containers')).catch(() => [] as string[])) {
      const u = (await this.readMarker(id))?.userNs;
      const uid = u?.uidMap.find((m) => m.containerId === 0);
      const gid = u?.gidMap.find((m) => m.containerId === 0);
      if (uid && gid) ranges[id] = { uid: uid.hostId, gid: gid.hostId, size: Math.min(uid.size, gid.size) };
    }
    await this.ids.restore(ranges);
  }

  /** What `info` shows: the maps, or privileged. */
  private async idMapping(id: string): Promise<IdMapping | undefined> {
    const m = await this.readMarker(id);
    if (m?.privileged) return { uidMap: [], gidMap: [], privileged: true };
    if (m?.userNs) return { ...m.userNs, privileged: false };
    const r = await this.ids.get(id);
    if (!r) return undefined;
    return { ...userNsOf(r), privileged: false };
  }

  private async readMarker(id: string): Promise<{ execArgs?: string[]; privileged?: boolean; userNs?: UserNs } | undefined> {
    try {
      return JSON.parse(await fs.readFile(path.join(this.dir(id), 'spec.json'), 'utf8')) as { execArgs?: string[]; privileged?: boolean; userNs?: UserNs };
    } catch {
      return undefined;
    }
  }

  async create(id: string, spec: ContainerSpec): Promise<void> {
    await this.validate(id, spec);
    await fs.mkdir(this.dir(id), { recursive: true, mode: 0o700 });
    const userNs = await this.userNs(id, spec);
    // What every process entering the container later gets too (its seccomp filter), and its id
    // range, which idmap.json is rebuilt from at init (IdAllocator.restore). Neither is fsynced:
    // blocks are handed out lowest-free, so one lost with a power loss right after a create
    // is handed to the same container again.
    const marker = { id, driver: spec.driver, execArgs: securityArgs(spec.security, { forExec: true, userNs: !!userNs }), privileged: !userNs, userNs };
    await writeFileAtomic(path.join(this.dir(id), 'spec.json'), JSON.stringify(marker) + '\n', 0o644, false);
  }

  private readRuntime(id: string): Promise<LxcRuntime | undefined> {
    return readRuntime(this.dir(id));
  }

  /**
   * The root filesystem for a run. A copy-on-write root is mounted here, or,
   * with deferOverlay, left to the helper (`--host-overlay`), which saves
   * running mount(8) on the start path.
   */
  private async prepareRootfs(
    id: string,
    spec: ContainerSpec,
    userNs: UserNs | undefined,
    opts: { deferOverlay?: boolean } = {},
  ): Promise<{ rootfs: string; mounted: string; extraMounts: string[]; overlay?: string; bind?: string }> {
    const src = spec.rootfs?.source;
    const base = this.dir(id);
    const target = path.join(base, 'rootfs');
    // A user-namespaced root is an idmapped mount the helper makes (run: the
    // monitor, --host-overlay / --host-bind; restore: mount-root).
    const mountRoot = async (what: string[]) => {
      if (isMountpoint(target)) return;
      const maps = [
        ...userNs!.uidMap.map((m) => ['--uidmap', `${m.containerId}:${m.hostId}:${m.size}`]),
        ...userNs!.gidMap.map((m) => ['--gidmap', `${m.containerId}:${m.hostId}:${m.size}`]),
      ].flat();
      try {
        await run(this.helper, ['mount-root', ...maps, ...what, target]);
      } catch (e) {
        throw missingFeature('idmapped mounts', ((e as { stderr?: string }).stderr ?? errorMessage(e)).trim());
      }
    };
    const overlay = async (lower: string) => {
      const layers = `${lower}:${path.join(base, 'upper')}:${path.join(base, 'work')}`;
      if (!opts.deferOverlay && !userNs) {
        const r = await mountOverlay(lower, base);
        return { rootfs: r, mounted: r, extraMounts: [] };
      }
      for (const d of ['rootfs', 'upper', 'work']) await fs.mkdir(path.join(base, d), { recursive: true });
      if (opts.deferOverlay) return { rootfs: target, mounted: target, extraMounts: [], overlay: layers };
      await mountRoot(['--overlay', layers]);
      return { rootfs: target, mounted: target, extraMounts: [] };
    };
    if (src?.$case === 'template') return overlay(await this.templates.ensure(src.value, spec.rootfs?.templateOptions));
    // An image's layers, top first, shared read-only under the container's own upper layer.
    if (src?.$case === 'image') return overlay(this.imageLayers(spec).join(':'));
    if (src?.$case === 'path') {
      if (spec.rootfs?.copyOnWrite) return overlay(src.value);
      if (!userNs) return { rootfs: src.value, mounted: '', extraMounts: [] };
      await fs.mkdir(target, { recursive: true });
      if (opts.deferOverlay) return { rootfs: target, mounted: target, extraMounts: [], bind: src.value };
      await mountRoot(['--bind', src.value]);
      return { rootfs: target, mounted: target, extraMounts: [] };
    }
    // Application container (lxc-execute style): each top-level host directory
    // bound read-only into an empty root, symlinks (merged /usr) copied, and
    // private tmpfs scratch space where a program expects to write.
    const root = path.join(base, 'approot');
    await fs.rm(root, { recursive: true, force: true });
    await fs.mkdir(root, { recursive: true });
    const extraMounts: string[] = [];
    const scratch = ['tmp', 'run', 'var'];
    const skip = new Set(['proc', 'sys', 'dev', 'lost+found', ...scratch]);
    // Mount points made here: a user-namespaced root may not create them in a root-owned directory.
    for (const d of ['proc', 'sys', 'dev']) await fs.mkdir(path.join(root, d));
    for (const e of await fs.readdir('/', { withFileTypes: true })) {
      if (skip.has(e.name) || e.name.includes(':')) continue;
      if (e.isSymbolicLink()) await fs.symlink(await fs.readlink(path.join('/', e.name)), path.join(root, e.name));
      else if (e.isDirectory()) {
        await fs.mkdir(path.join(root, e.name));
        extraMounts.push(`rbind:/${e.name}:/${e.name}:ro:rprivate`);
      }
    }
    for (const d of scratch) {
      await fs.mkdir(path.join(root, d));
      extraMounts.push(`tmpfs:tmpfs:/${d}:mode=${d === 'tmp' ? '1777' : '755'},nosuid,nodev:`);
    }
    return { rootfs: root, mounted: '', extraMounts };
  }

  /**
   * The init to run and, for a system container, how it boots. With no
   * process.args a template's default runs (busybox: an idle shell), or the
   * rootfs's own /sbin/init, as lxc-start does. args naming /sbin/init (or
   * systemd) make a system container too.
   */
  private async bootPlan(spec: ContainerSpec): Promise<{ argv: string[]; boot?: Boot }> {
    const args = spec.process?.args ?? [];
    const src = spec.rootfs?.source;
    const root =
      src?.$case === 'template' ? await this.templates.ensure(src.value, spec.rootfs?.templateOptions) : src?.$case === 'path' ? src.value : undefined;
    const busybox = src?.$case === 'template' && src.value === 'busybox';
    if (!args.length && (!root || busybox)) return { argv: BUSYBOX_DEFAULT_INIT };
    if (!root || (args.length && !INIT_PATHS.includes(args[0]!))) return { argv: args };
    const info = detectInit(root, args[0] ?? '/sbin/init');
    if (!info.system) {
      if (args.length) return { argv: args };
      throw invalidArgument('spec.process.args', `is empty and ${root} has no /sbin/init to boot`);
    }
    return { argv: args.length ? args : info.init, boot: { kind: info.kind, haltSignal: info.haltSignal, rebootSignal: info.rebootSignal } };
  }

  /**
   * What a distribution's init expects of its container (systemd's "Container
   * Interface"): cgroup filesystems it may write (cgroup:mixed), /run as a
   * tmpfs, /run/host/container-manager, a stable machine id (container_uuid)
   * and a NOFILE limit dbus can raise itself to. `container=osvirt` is in every
   * container's environment already.
   */
  private async systemArgs(id: string, spec: ContainerSpec, cg: ContainerCgroup): Promise<string[]> {
    const args: string[] = [];
    for (const m of cg.systemMounts()) args.push('--mount', m);
    const userRun = spec.mounts.some((m) => m.destination.replace(/\/+$/, '') === '/run');
    if (!userRun) {
      args.push('--mount', 'tmpfs:tmpfs:/run:nosuid,nodev,mode=755,size=20%:');
      // Written by the container's root into its own /run: no host file is bound, so a checkpoint carries it.
      args.push('--write-file', '/run/host/container-manager:osvirt');
    }
    // A machine id of its own that survives restarts: systemd adopts container_uuid when /etc/machine-id is empty.
    const idFile = path.join(this.dir(id), 'machine-uuid');
    let uuid = await fs
      .readFile(idFile, 'utf8')
      .then((t) => t.trim())
      .catch(() => '');
    if (!uuid) {
      uuid = randomUUID();
      await writeFileAtomic(idFile, uuid + '\n', 0o644, false);
    }
    args.push('--env', `container_uuid=${uuid}`);
    if (!spec.security?.seccompUnconfined) {
      // CRIU cannot dump a UTS namespace nested in the container's ("Can't dump
      // nested uts namespace"), and systemd gives one to every service with
      // ProtectHostname= (logind has it). Refused with EPERM, systemd logs "UTS
      // namespace setup is prohibited (container manager?)" and runs the
      // service in the container's own, which keeps a booted system
      // checkpointable. clone3's flags are out of a filter's reach: ENOSYS makes
      // glibc fall back to clone, whose flags it can see.
      const CLONE_NEWUTS = 0x04000000;
      args.push(
        '--seccomp-deny',
        `unshare:EPERM:arg0&${CLONE_NEWUTS}`,
        '--seccomp-deny',
        `clone:EPERM:arg0&${CLONE_NEWUTS}`,
        '--seccomp-deny',
        'clone3:ENOSYS',
      );
    }
    if (!spec.process?.rlimits.some((r) => r.type === RlimitType.RLIMIT_TYPE_NOFILE)) {
      // The hard limit can only rise with CAP_SYS_RESOURCE over the host; otherwise keep the daemon's own.
      const own = /^Max open files\s+\S+\s+(\S+)/m.exec(readFileSync('/proc/self/limits', 'utf8'))?.[1];
      const ownHard = own === 'unlimited' ? SYSTEM_NOFILE_HARD : Number(own ?? 1024);
      const capEff = BigInt(`0x${/^CapEff:\s*([0-9a-f]+)/m.exec(readFileSync('/proc/self/status', 'utf8'))?.[1] ?? '0'}`);
      const hard = (capEff >> 24n) & 1n ? Math.max(ownHard, SYSTEM_NOFILE_HARD) : ownHard;
      args.push('--rlimit', `nofile:${Math.min(1024, hard)}:${hard}`);
    }
    return args;
  }

  private async writeBoot(id: string, boot: Boot | undefined): Promise<void> {
    const file = path.join(this.dir(id), 'boot.json');
    if (boot) await writeFileAtomic(file, JSON.stringify(boot) + '\n', 0o644, false);
    else await fs.rm(file, { force: true });
  }

  private readBoot(id: string): Boot | undefined {
    try {
      return JSON.parse(readFileSync(path.join(this.dir(id), 'boot.json'), 'utf8')) as Boot;
    } catch {
      return undefined;
    }
  }

  private portsFile(id: string): string {
    return path.join(this.dir(id), 'ports.json');
  }

  /**
   * Publishes the container's ports (nat.ts checks that nobody else holds
   * them). ports.json is written first: a daemon that dies before it could
   * record the run still finds and removes the rules (unpublish, at cleanup).
   */
  private async publish(id: string, bridge: string, address: string, spec: ContainerSpec): Promise<void> {
    if (!spec.ports.length) return;
    const nat = natUnavailable();
    if (nat) throw missingFeature('nftables (nft)', `spec.ports are published as nftables DNAT rules: ${nat}`);
    if (!address)
      throw new OsvirtError('FAILED_PRECONDITION', 'NO_ADDRESS', `container "${id}" has no address on ${bridge} to publish its ports to`, [], {
        container: id,
      });
    const to = address.split('/')[0]!;
    await writeFileAtomic(this.portsFile(id), JSON.stringify({ bridge, address: to }) + '\n', 0o644, false);
    await publishPorts(id, bridge, to, spec.ports);
  }

  /**
   * Does a container of any driver on this bridge publish ports to this
   * address? Its ports.json says so: the drivers built on this one keep their
   * containers' directories side by side (<state>/drivers/<driver>/containers).
   */
  private async publishesTo(container: string, address: string): Promise<boolean> {
    const drivers = path.dirname(this.stateDir);
    for (const d of await fs.readdir(drivers).catch(() => [] as string[])) {
      try {
        const rec = JSON.parse(await fs.readFile(path.join(drivers, d, 'containers', container, 'ports.json'), 'utf8')) as { address?: string };
        if (rec.address === address) return true;
      } catch {
        // not this driver's, or no ports
      }
    }
    return false;
  }

  /** Removes the container's port rules, if it has any (runtime.json or ports.json says where). Idempotent. */
  private async unpublish(id: string, bridge?: string): Promise<void> {
    let on = bridge;
    try {
      on ??= (JSON.parse(await fs.readFile(this.portsFile(id), 'utf8')) as { bridge?: string }).bridge;
    } catch {
      // no ports published
    }
    if (on) await unpublishPorts(id, on);
    await fs.rm(this.portsFile(id), { force: true });
  }

  /**
   * The host's name servers (dns.ts) for a bridged container's /etc/resolv.conf.
   * On a copy-on-write root (a template, rootfs.copy_on_write) the file is
   * written into the container's own upper layer: the container may change it
   * and a checkpoint carries it. A root osvirt does not own (a plain
   * rootfs.path is the user's directory, rootfs.host the host's /etc) gets a
   * generated file bound read-only over it instead, as Docker and Podman
   * do, and only over an existing regular file: nothing is created there.
   * Skipped when the spec mounts its own, or the image's file is a symlink (a
   * resolver of its own, like systemd-resolved), or the host has no server a
   * container can reach (GetInfo says so).
   */
  private async dnsArgs(id: string, spec: ContainerSpec): Promise<string[]> {
    if (spec.mounts.some((m) => path.posix.normalize(m.destination).replace(/\/+$/, '') === '/etc/resolv.conf')) return [];
    const src = spec.rootfs?.source;
    const lower =
      src?.$case === 'template'
        ? this.templates.path(templateKey(src.value, normalizeOptions(src.value, spec.rootfs?.templateOptions)))
        : src?.$case === 'image'
          ? (() => {
              const layers = this.imageLayers(spec);
              return layers.find((l) => existsSync(path.join(l, 'etc'))) ?? layers[0];
            })()
          : src?.$case === 'path' && spec.rootfs?.copyOnWrite
            ? src.value
            : undefined;
    const isSymlink = (f: string) => {
      try {
        return lstatSync(f).isSymbolicLink();
      } catch {
        return false;
      }
    };
    if (lower) {
      if (isSymlink(path.join(lower, 'etc/resolv.conf')) || isSymlink(path.join(this.dir(id), 'upper/etc/resolv.conf'))) return [];
      const conf = containerResolv(this.resolvConf).conf;
      return conf ? ['--write-file', `/etc/resolv.conf:${conf.trimEnd()}`] : [];
    }
    const file = await this.resolvFile(id, spec);
    return file ? ['--mount', `bind:${file}:/etc/resolv.conf:ro:`] : [];
  }

  /** The generated resolv.conf bound over a root osvirt does not own (see dnsArgs), or undefined for none. */
  private async resolvFile(id: string, spec: ContainerSpec): Promise<string | undefined> {
    const src = spec.rootfs?.source;
    const root = src?.$case === 'path' ? src.value : src?.$case === 'host' ? '/' : undefined;
    if (!root) return undefined;
    try {
      if (!lstatSync(path.join(root, 'etc/resolv.conf')).isFile()) return undefined;
    } catch {
      return undefined;
    }
    const conf = containerResolv(this.resolvConf).conf;
    if (!conf) return undefined;
    // Readable by the container's root: the helper binds an idmapped copy, made as the host's root.
    const file = path.join(this.dir(id), 'resolv.conf');
    await writeFileAtomic(file, conf, 0o644, false);
    return file;
  }

  /** The signal that halts this container's init: its init's (SIGRTMIN+3 for systemd), or 0 for "the default". */
  async stopSignal(id: string): Promise<number> {
    return this.readBoot(id)?.haltSignal ?? 0;
  }

  private processArgs(spec: ContainerSpec, caps: string[]): string[] {
    const p = spec.process;
    const a: string[] = ['--caps', caps.join(',') || 'none'];
    if (p?.noNewPrivileges) a.push('--no-new-privs');
    for (const r of p?.rlimits ?? []) {
      const lim = (v: bigint) => (r.unlimited ? 'unlimited' : String(v));
      a.push('--rlimit', `${RLIMIT_NAMES[r.type]}:${lim(r.soft)}:${lim(r.hard)}`);
    }
    if (p?.user) a.push('--user', `${p.user.uid}:${p.user.gid}${p.user.additionalGids.length ? ':' + p.user.additionalGids.join(',') : ''}`);
    for (const e of p?.env ?? []) a.push('--env', e);
    if (!(p?.env ?? []).some((e) => e.startsWith('TERM=')) && p?.tty) a.push('--env', 'TERM=xterm');
    a.push('--env', 'container=osvirt');
    if (p?.cwd) a.push('--cwd', p.cwd);
    return a;
  }

  async start(id: string, spec: ContainerSpec, peerPids: Record<string, number>): Promise<RuntimeState> {
    if (!existsSync(this.dir(id))) throw notFound('container', id);
    const old = await this.readRuntime(id);
    if (old && pidAlive(old.monitorPid) && !readExitRecord(this.monitorDir(id))) throw wrongState(id, 'RUNNING', 'stopped');
    await this.cleanup(id);

    const cg = this.cgroup(id);
    const monitorDir = this.monitorDir(id);
    let rootfsMounted = '';
    let network: NetworkRuntime = { hostInterfaces: [] };
    let dns: string[] = [];
    try {
      await removeMonitorDir(monitorDir);
      await fs.mkdir(monitorDir, { recursive: true, mode: 0o700 });
      const userNs = await this.userNs(id, spec);
      await cg.create(spec.resources, spec.devices);
      // Delegation: the container's root may organise its own cgroup subtree.
      if (userNs) await cg.delegate(outerId(userNs.uidMap), outerId(userNs.gidMap));
      await this.ext.beforeLaunch?.(id, spec, cg);
      const rf = await this.prepareRootfs(id, spec, userNs, { deferOverlay: true });
      rootfsMounted = rf.mounted;
      const { argv, boot } = await this.bootPlan(spec);
      await this.writeBoot(id, boot);

      const ns = ['pid', 'mnt', 'uts', 'cgroup'];
      const args = ['--state', monitorDir, '--rootfs', rf.rootfs];
      if (rf.overlay) args.push('--host-overlay', rf.overlay);
      if (rf.bind) args.push('--host-bind', rf.bind);
      const netMode = spec.network?.mode;
      if (netMode?.$case === 'container') {
        const pid = peerPids[netMode.value.container];
        if (!pid) throw wrongState(netMode.value.container, 'not running', 'running');
        args.push('--join', `net:/proc/${pid}/ns/net`);
      } else if (netMode?.$case !== 'host') {
        ns.push('net');
        args.push('--lo-up');
      }
      // A bridged veth is made by the helper itself (netlink), the rest by setupNetwork below.
      if (netMode?.$case === 'bridge') {
        const plan = await planVeth(id, netMode.value, this.ipam, this.bridge);
        network = vethRuntime(plan);
        args.push(...vethArgs(plan));
        // The daemon's own bridge gets NAT (masquerade) and the port chains.
        if (plan.bridge === this.bridge.name) await ensureNat(this.bridge.name, this.bridge.subnet, this.logger);
        // Published before the init exists (the address is known): its server may be reached as soon as it listens.
        if (spec.ports.length) {
          network.publishedOn = plan.bridge;
          await this.publish(id, plan.bridge, plan.address, spec);
          faultPoint('start.after-publish');
        }
        dns = await this.dnsArgs(id, spec);
      }
      const lxc = spec.driverOptions?.$case === 'lxc' ? spec.driverOptions.value : undefined;
      if (lxc?.shareIpcWith) {
        const pid = peerPids[lxc.shareIpcWith];
        if (!pid) throw wrongState(lxc.shareIpcWith, 'not running (or not defined)', 'running (share_ipc_with joins its IPC namespace)');
        args.push('--join', `ipc:/proc/${pid}/ns/ipc`);
      } else ns.push('ipc');
      if (userNs) {
        ns.push('user');
        for (const m of userNs.uidMap) args.push('--uidmap', `${m.containerId}:${m.hostId}:${m.size}`);
        for (const m of userNs.gidMap) args.push('--gidmap', `${m.containerId}:${m.hostId}:${m.size}`);
      }
      args.push('--ns', ns.join(','));
      for (const d of cg.dirs()) args.push('--cgroup', d);
      args.push('--hostname', spec.hostname || id);
      if (spec.domainname) args.push('--domainname', spec.domainname);
      for (const m of rf.extraMounts) args.push('--mount', m);
      if (boot) args.push(...(await this.systemArgs(id, spec, cg)));
      for (const m of spec.mounts) {
        const opts = [...(m.readonly ? ['ro'] : []), ...m.options].join(',');
        if (m.type === MountType.MOUNT_TYPE_BIND) args.push('--mount', `rbind:${m.source}:${m.destination}:${opts}:${PROPAGATION[m.propagation] ?? ''}`);
        else args.push('--mount', `tmpfs:tmpfs:${m.destination}:${opts}:${PROPAGATION[m.propagation] ?? ''}`);
      }
      // After the root's own mounts and the spec's: a bind over /etc/resolv.conf must land on the file the container sees.
      args.push(...dns);
      for (const d of spec.devices) args.push('--device', d.path);
      if (spec.rootfs?.readonly) args.push('--readonly-rootfs');
      // A system container always has a console: its getty runs there.
      if (spec.process?.tty || boot) args.push('--tty');
      const caps = this.capabilities(spec, !userNs);
      // reboot(2) from a user namespace only ends the container's own pid namespace (SIGHUP for a
      // reboot, SIGINT for a halt), which is how osvirt learns what its init asked for.
      if (boot && userNs && !caps.includes('sys_boot') && !spec.capabilities?.drop.includes('sys_boot')) caps.push('sys_boot');
      args.push(...this.processArgs(spec, caps));
      args.push(...securityArgs(spec.security, { userNs: !!userNs }));
      args.push(...(this.ext.helperArgs?.(id, spec) ?? []));
      args.push('--', ...argv);

      const launched = await launch(
        this.helper,
        args,
        async (initPid) => {
          // The monitor and its init exist, the init waits for "go".
          faultPoint('start.before-go');
          if (netMode?.$case !== 'bridge') network = await setupNetwork(id, initPid, spec.network, this.ipam);
          await this.ext.configure?.(id, spec, initPid);
        },
        this.launcher,
      );
      // The init runs; without runtime.json the next daemon reads STOPPED and its cleanup kills the tree.
      faultPoint('start.after-launch');
      const rt = runtimeNow(launched.initPid, launched.monitorPid, network, rootfsMounted);
      await writeRuntime(this.dir(id), rt);
      this.waits.delete(id);
      return { status: RuntimeStatus.RUNTIME_STATUS_RUNNING, initPid: rt.initPid, exitCode: 0, signal: 0, startTime: new Date(rt.startTime), message: '' };
    } catch (e) {
      await this.unpublish(id, network.publishedOn).catch((err: unknown) =>
        this.logger.warn({ container: id, err: errorMessage(err) }, 'cannot remove the port rules of a failed start'),
      );
      await teardownNetwork(network);
      await cg.destroy().catch(() => undefined);
      if (rootfsMounted) await unmountUnder(rootfsMounted);
      await this.ext.afterStop?.(id).catch(() => undefined);
      if (e instanceof LaunchError)
        throw new OsvirtError('FAILED_PRECONDITION', 'START_FAILED', `container "${id}" failed to start: ${e.message}`, [], { container: id });
      throw e;
    }
  }

  /**
   * The bounding set. A privileged container (no user namespace) also loses
   * sys_admin unless the spec adds it by name: with it, root could mount a
   * fresh proc or sysfs and write the host's global settings. On pure cgroup
   * v2 it loses mknod too (no device cgroup program there).
   */
  private capabilities(spec: ContainerSpec, privileged: boolean): string[] {
    const set = boundingSet(spec.capabilities);
    if (!privileged) return set;
    const added = new Set((spec.capabilities?.add ?? []).map((c) => c.toLowerCase().replace(/^cap_/, '')));
    // On pure cgroup v2 osvirt loads no device program, so nothing would stop a node made with mknod.
    const withheld = ['sys_admin', ...(this.layout.kind === 'v2' ? ['mknod'] : [])].filter((c) => !added.has(c));
    return set.filter((c) => !withheld.includes(c));
  }

  /** Undo everything a run put on the host. Idempotent. */
  private async cleanup(id: string): Promise<void> {
    const rt = await this.readRuntime(id);
    await this.unpublish(id, rt?.network.publishedOn);
    await teardownNetwork(rt?.network);
    await this.cgroup(id).destroy();
    await unmountUnder(path.join(this.dir(id), 'rootfs'));
    await unmountUnder(path.join(this.dir(id), 'approot'));
    if (rt) await removeRuntime(this.dir(id));
    await this.ext.afterStop?.(id);
  }

  async state(id: string): Promise<RuntimeState> {
    const st = await this.runtimeState(id);
    const idMapping = await this.idMapping(id);
    return idMapping ? { ...st, idMapping } : st;
  }

  private async runtimeState(id: string): Promise<RuntimeState> {
    if (!existsSync(this.dir(id))) throw notFound('container', id);
    const rt = await this.readRuntime(id);
    const base = { initPid: 0, exitCode: 0, signal: 0, message: '' };
    if (!rt) {
      // Stopped; the monitor's exit record (kept until the next start) says how.
      const last = readExitRecord(this.monitorDir(id));
      return last ? this.exitState(last, this.readBoot(id)) : { ...base, status: RuntimeStatus.RUNTIME_STATUS_STOPPED };
    }
    const exit = readExitRecord(this.monitorDir(id));
    if (exit) return this.exitState(exit, this.readBoot(id));
    const alive = pidAlive(rt.initPid) && pidStartTime(rt.initPid) === rt.initStartTime;
    if (!alive) {
      if (pidAlive(rt.monitorPid)) return { ...base, status: RuntimeStatus.RUNTIME_STATUS_RUNNING, initPid: rt.initPid };
      return { ...base, status: RuntimeStatus.RUNTIME_STATUS_UNKNOWN, message: 'the container monitor is gone and left no exit record' };
    }
    const frozen = await this.cgroup(id).isFrozen();
    return {
      ...base,
      status: frozen ? RuntimeStatus.RUNTIME_STATUS_PAUSED : RuntimeStatus.RUNTIME_STATUS_RUNNING,
      initPid: rt.initPid,
      startTime: new Date(rt.startTime),
    };
  }

  /**
   * How the init ended. A system container's init that called reboot(2) ends
   * with SIGHUP (a reboot request) or SIGINT (halt or poweroff): the kernel's
   * way of ending a pid namespace's init (pid_namespaces(7)). LXC reads them
   * the same way; a halt is a clean stop, exit code 0.
   */
  private exitState(exit: ExitRecord, boot: Boot | undefined): RuntimeState {
    const base = { status: RuntimeStatus.RUNTIME_STATUS_STOPPED, initPid: 0, finishTime: exit.finishedAt, rebootRequested: false };
    if (boot && exit.signal === SIGINT) return { ...base, exitCode: 0, signal: 0, message: 'the init halted the container' };
    if (boot && exit.signal === SIGHUP) return { ...base, exitCode: 0, signal: 0, message: 'the init asked for a reboot', rebootRequested: true };
    return { ...base, exitCode: exit.exitCode, signal: exit.signal, message: '' };
  }

  wait(id: string): Promise<RuntimeState> {
    let p = this.waits.get(id);
    if (!p) {
      p = (async () => {
        const rt = await this.readRuntime(id);
        if (!rt) return this.state(id);
        const exit = await waitExit(this.monitorDir(id), rt.monitorPid);
        await this.cleanup(id).catch((e) => this.logger.warn({ container: id, err: errorMessage(e) }, 'cleanup after exit failed'));
        if (!exit)
          return {
            status: RuntimeStatus.RUNTIME_STATUS_UNKNOWN,
            initPid: 0,
            exitCode: 0,
            signal: 0,
            message: 'the container monitor exited without an exit record',
          };
        return this.exitState(exit, this.readBoot(id));
      })().finally(() => this.waits.delete(id));
      this.waits.set(id, p);
    }
    return p;
  }

  async stop(id: string, signal: number, timeoutMs: number): Promise<RuntimeState> {
    const rt = await this.readRuntime(id);
    if (!rt) return this.state(id);
    const done = this.wait(id);
    const cg = this.cgroup(id);
    // Frozen tasks cannot act on a signal; thaw first.
    await cg.thaw().catch(() => undefined);
    const send = (sig: number) => {
      try {
        process.kill(rt.initPid, sig);
      } catch {
        // already gone
      }
    };
    if (signal !== 9 && timeoutMs > 0) {
      send(signal);
      const t = await Promise.race([done.then(() => true), SLEEP(timeoutMs).then(() => false)]);
      if (t) return done;
    }
    send(9);
    // SIGKILL to a pid namespace's init kills the namespace; the cgroup catches strays.
    const t = await Promise.race([done.then(() => true), SLEEP(5000).then(() => false)]);
    if (!t) {
      for (const p of await cg.pids()) {
        try {
          process.kill(p, 9);
        } catch {
          // gone
        }
      }
    }
    return done;
  }

  /** NOT_FOUND for an id this driver never created (the contract's rule). */
  private known(id: string): void {
    if (!existsSync(this.dir(id))) throw notFound('container', id);
  }

  async kill(id: string, signal: number): Promise<void> {
    this.known(id);
    const rt = await this.readRuntime(id);
    if (!rt || !pidAlive(rt.initPid)) throw wrongState(id, 'STOPPED', 'running');
    process.kill(rt.initPid, signal);
  }

  /**
   * Whether the init of this run still lives. Between a KillContainer and the
   * manager recording the exit, the exit watch may already be tearing the
   * run down: what the driver answers must go by the init, not by the record.
   */
  private initRunning(id: string, rt: LxcRuntime | undefined): boolean {
    return !!rt && pidAlive(rt.initPid) && pidStartTime(rt.initPid) === rt.initStartTime && !readExitRecord(this.monitorDir(id));
  }

  /** Runs a cgroup operation on a live container; the init dying under it is FAILED_PRECONDITION, not INTERNAL. */
  private async whileRunning(id: string, op: () => Promise<void>): Promise<void> {
    this.known(id);
    const rt = await this.readRuntime(id);
    if (!this.initRunning(id, rt)) throw wrongState(id, 'STOPPED', 'running');
    try {
      await op();
    } catch (e) {
      if (!this.initRunning(id, rt)) throw wrongState(id, 'STOPPED', 'running');
      throw e;
    }
  }

  async pause(id: string): Promise<void> {
    await this.whileRunning(id, () => this.cgroup(id).freeze());
  }

  async resume(id: string): Promise<void> {
    await this.whileRunning(id, () => this.cgroup(id).thaw());
  }

  async delete(id: string): Promise<void> {
    const rt = await this.readRuntime(id);
    if (rt && pidAlive(rt.initPid) && pidStartTime(rt.initPid) === rt.initStartTime) await this.stop(id, 9, 0);
    await this.cleanup(id);
    await this.ipam.release(id);
    await this.ids.release(id);
    await unmountUnder(this.dir(id));
    await this.discard(this.dir(id));
  }

  /**
   * Take a deleted container's directory away at once (a rename into trash/)
   * and remove its content in the background: a root filesystem's upper layer
   * can hold any number of files, and DeleteContainer need not wait for them.
   * Whatever a stopped daemon left in trash/ is removed at the next start.
   */
  private async discard(dir: string): Promise<void> {
    const trash = path.join(this.stateDir, 'trash');
    await fs.mkdir(trash, { recursive: true });
    const target = path.join(trash, `${path.basename(dir)}.${process.pid}.${Date.now()}`);
    try {
      await fs.rename(dir, target);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw e;
    }
    this.removeInBackground(target);
  }

  private removeInBackground(dir: string): void {
    const p: Promise<void> = fs
      .rm(dir, { recursive: true, force: true })
      .catch((e) => this.logger.warn({ dir, err: errorMessage(e) }, 'cannot remove a deleted container directory'))
      .finally(() => this.removing.delete(p));
    this.removing.add(p);
  }

  /** TemplateService: the template store this driver builds root filesystems from. */
  extensions(): DriverExtension[] {
    return [templateExtension(() => this.templates)];
  }

  async close(): Promise<void> {
    await this.launcher?.close();
    await Promise.all(this.removing);
    // Also when this daemon never checkpointed: a predecessor killed with -9 may have left CRIU's run tmpfs mounted.
    await this.cr().close();
  }

  async recover(items: { id: string; spec: ContainerSpec }[], opts: { removeOrphans?: boolean } = {}): Promise<Record<string, RuntimeState>> {
    const out: Record<string, RuntimeState> = {};
    // A create that a crash cut short: this driver's state (and id range) exists, the definition does not.
    const known = new Set(items.map((i) => i.id));
    for (const id of opts.removeOrphans ? await fs.readdir(path.join(this.stateDir, 'containers')).catch(() => [] as string[]) : []) {
      if (known.has(id)) continue;
      this.logger.warn({ container: id, driver: this.name }, 'removing the state of a container with no definition (a create or delete a crash interrupted)');
      await this.delete(id).catch((e) => this.logger.error({ container: id, err: errorMessage(e) }, 'cannot remove an orphaned container state'));
    }
    for (const { id } of items) {
      try {
        out[id] = existsSync(this.dir(id))
          ? await this.state(id)
          : { status: RuntimeStatus.RUNTIME_STATUS_STOPPED, initPid: 0, exitCode: 0, signal: 0, message: '' };
        // Exited while we were away: release host resources now.
        if (out[id]?.status === RuntimeStatus.RUNTIME_STATUS_STOPPED) await this.cleanup(id);
      } catch (e) {
        out[id] = { status: RuntimeStatus.RUNTIME_STATUS_UNKNOWN, initPid: 0, exitCode: 0, signal: 0, message: errorMessage(e) };
      }
    }
    await this.reconcilePortRules(items, out);
    return out;
  }

  /**
   * Port rules of containers that are gone (their state was lost) would hold
   * host ports forever: a rule is live while its container's ports.json
   * names the address it points to (publishesTo). A running container whose
   * rules are missing (`nft flush ruleset`, a firewall reload) gets them
   * again, so restarting the daemon repairs them.
   */
  private async reconcilePortRules(items: { id: string; spec: ContainerSpec }[], states: Record<string, RuntimeState>): Promise<void> {
    if (!nftPath()) return;
    try {
      const { removed, present } = await sweepPorts(this.bridge.name, (c, address) => this.publishesTo(c, address));
      if (removed.length) this.logger.warn({ driver: this.name, containers: removed }, 'removed the published-port rules of containers that are gone');
      for (const { id, spec } of items) {
        if (!spec.ports.length || present.has(id) || states[id]?.status !== RuntimeStatus.RUNTIME_STATUS_RUNNING) continue;
        const net = (await this.readRuntime(id))?.network;
        if (net?.publishedOn !== this.bridge.name || !net.address) continue;
        try {
          await ensureNat(this.bridge.name, this.bridge.subnet, this.logger);
          await this.publish(id, net.publishedOn, net.address, spec);
          this.logger.warn({ container: id, driver: this.name }, 'published the ports of a running container again: its rules were gone (nft flush ruleset?)');
        } catch (e) {
          this.logger.error({ container: id, driver: this.name, err: errorMessage(e) }, 'cannot publish the ports of a running container again');
        }
      }
    } catch (e) {
      this.logger.warn({ driver: this.name, err: errorMessage(e) }, 'cannot check the published-port rules');
    }
  }

  /** The seccomp rules the container's init runs under, recorded at create. */
  private async execSecurity(id: string): Promise<string[]> {
    return (await this.readMarker(id))?.execArgs ?? securityArgs(undefined, { forExec: true });
  }

  async exec(o: ExecOptions): Promise<ExecSession> {
    this.known(o.id);
    const rt = await this.readRuntime(o.id);
    if (!rt || !this.initRunning(o.id, rt)) throw wrongState(o.id, 'STOPPED', 'running');
    let caps: string | undefined;
    try {
      caps = readFileSync(`/proc/${rt.initPid}/status`, 'utf8').match(/^CapBnd:\s*([0-9a-f]+)/m)?.[1];
    } catch {
      throw wrongState(o.id, 'STOPPED', 'running');
    }
    const args = ['exec', '--pid', String(rt.initPid), '--ready-fd', '4'];
    for (const d of this.cgroup(o.id).dirs()) args.push('--cgroup', d);
    if (caps) {
      const mask = BigInt(`0x${caps}`);
      const names = CAPABILITY_NAMES.filter((_, i) => (mask >> BigInt(i)) & 1n);
      args.push('--caps', names.join(',') || 'none');
    }
    for (const e of o.env) args.push('--env', e);
    if (o.user) args.push('--user', `${o.user.uid}:${o.user.gid}`);
    args.push('--cwd', o.cwd || '/');
    if (o.tty) args.push('--tty', '--resize-fd', '3');
    args.push(...(await this.execSecurity(o.id)));
    args.push(...(this.ext.execArgs?.(o.id) ?? []));
    args.push('--', ...o.args);
    const child = spawn(this.helper, args, { stdio: ['pipe', 'pipe', 'pipe', 'pipe', 'pipe'] });
    const resizePipe = child.stdio[3] as NodeJS.WritableStream | null;
    // Output is taken at once: a short command may be done before the ready byte is read below,
    // and Node drains (and drops) an exited child's unread stdio.
    const stdout = child.stdout.pipe(new PassThrough());
    const stderr = child.stderr.pipe(new PassThrough());
    // Listened for at once, for the same reason.
    const exit = new Promise<{ exitCode: number; signal: number }>((resolve, reject) => {
      child.once('error', (e) => reject(new Error(`cannot run the helper: ${e.message}`)));
      child.once('close', (code, sig) => {
        if (sig) resolve({ exitCode: 128, signal: 0 });
        else if (code !== null && code >= 129 && code <= 128 + 64) resolve({ exitCode: code, signal: code - 128 });
        else resolve({ exitCode: code ?? 0, signal: 0 });
      });
    });
    exit.catch(() => undefined);
    // The helper writes an ExecReady frame on fd 4 once the command runs
    // inside; EOF first means it could not get in. If the container died
    // meanwhile (a KillContainer just before), that is FAILED_PRECONDITION, not an exit code.
    const started = await new Promise<boolean>((resolve) => {
      const ready = child.stdio[4] as NodeJS.ReadableStream | null;
      if (!ready) return resolve(true);
      const frames = new MessageReader(ready, ExecReady, 'ExecReady');
      frames.next().then(
        (m) => {
          frames.close();
          resolve(m !== undefined);
        },
        () => resolve(false),
      );
      child.once('error', () => resolve(false));
    });
    // An init on its way out may not be a zombie yet, but its namespaces are gone already.
    const nsGone = () => {
      try {
        readlinkSync(`/proc/${rt.initPid}/ns/net`);
        return false;
      } catch {
        return true;
      }
    };
    if (!started && (nsGone() || !this.initRunning(o.id, await this.readRuntime(o.id)))) {
      if (child.exitCode === null) child.kill('SIGKILL');
      throw wrongState(o.id, 'STOPPED', 'running');
    }
    // The helper may close its end first; that is not an error worth a crash.
    resizePipe?.on('error', () => undefined);
    const resize = (rows: number, cols: number) => {
      if (o.tty && resizePipe && rows > 0 && cols > 0) resizePipe.write(encodeFrame(ResizeRequest, { rows, cols }));
    };
    if (o.rows && o.cols) resize(o.rows, o.cols);
    return {
      stdin: child.stdin,
      stdout,
      stderr,
      resize,
      exit,
      kill: () => {
        if (child.exitCode === null) child.kill('SIGKILL');
      },
    };
  }

  async console(id: string): Promise<ConsoleSession> {
    this.known(id);
    const sock = path.join(this.monitorDir(id), 'console.sock');
    if (!existsSync(sock))
      throw new OsvirtError(
        'FAILED_PRECONDITION',
        'NO_CONSOLE',
        `container "${id}" has no console: create it with process.tty = true (a system container, booting its own init, always has one)`,
        [],
        { container: id },
      );
    const c = net.connect(sock);
    await new Promise<void>((resolve, reject) => {
      c.once('connect', resolve);
      c.once('error', reject);
    });
    const output = new PassThrough();
    c.pipe(output);
    return {
      output,
      input: c,
      resize: (rows, cols) => void monitorResize(this.monitorDir(id), rows, cols),
      close: () => c.destroy(),
    };
  }

  async stats(id: string): Promise<ContainerStats> {
    this.known(id);
    const rt = await this.readRuntime(id);
    if (!rt) throw wrongState(id, 'STOPPED', 'running');
    const s = await this.cgroup(id).stats();
    return { name: id, time: new Date(), ...s, interfaces: await interfaceStats(rt.initPid) };
  }

  private cr(): LxcCheckpointer {
    this.checkpointer ??= new LxcCheckpointer({
      stateDir: this.stateDir,
      helper: this.helper,
      logger: this.logger,
      bridge: this.bridge,
      ipam: this.ipam,
      dir: (id) => this.dir(id),
      monitorDir: (id) => this.monitorDir(id),
      cgroup: (id) => this.cgroup(id),
      cleanup: (id) => this.cleanup(id),
      prepareRootfs: async (id, spec) => this.prepareRootfs(id, spec, await this.userNs(id, spec)),
      adoptIdRange: async (id, range) => {
        await this.ids.assign(id, range);
        const marker = await this.readMarker(id);
        if (marker?.userNs) {
          const userNs = userNsOf(range);
          await writeFileAtomic(path.join(this.dir(id), 'spec.json'), JSON.stringify({ ...marker, userNs }) + '\n', 0o644, false);
        }
      },
      rootIds: async (id, spec) => {
        const u = await this.userNs(id, spec);
        return u ? { uid: outerId(u.uidMap), gid: outerId(u.gidMap) } : undefined;
      },
      wait: (id) => this.wait(id),
      forgetWait: (id) => void this.waits.delete(id),
      hostNetwork: !!this.ext.checkpointHostNetwork,
      beforeLaunch: this.ext.beforeLaunch?.bind(this.ext),
      afterStop: this.ext.afterStop?.bind(this.ext),
      publish: async (id, bridge, address, spec) => {
        if (bridge === this.bridge.name) await ensureNat(this.bridge.name, this.bridge.subnet, this.logger);
        await this.publish(id, bridge, address, spec);
      },
      unpublish: (id) => this.unpublish(id),
      hostFile: async (id, spec, mountpoint) => (mountpoint === '/etc/resolv.conf' ? this.resolvFile(id, spec) : undefined),
    });
    return this.checkpointer;
  }

  async checkpoint(id: string, imageDir: string, options: CheckpointOptions, parentImageDir: string): Promise<CheckpointResult> {
    return this.cr().checkpoint(id, imageDir, options, parentImageDir);
  }

  async adoptCheckpoint(id: string, imageDir: string): Promise<CheckpointResult | undefined> {
    return this.cr().adopt(id, imageDir);
  }

  async restore(id: string, spec: ContainerSpec, imageDir: string, tcpEstablished: boolean, timeoutMs: number): Promise<RuntimeState> {
    const st = await this.cr().restore(id, spec, imageDir, tcpEstablished, timeoutMs);
    const idMapping = await this.idMapping(id);
    return idMapping ? { ...st, idMapping } : st;
  }
}
