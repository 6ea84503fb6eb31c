// The lxc driver: system and application containers built from the
// kernel's own features (namespaces, cgroups, pivot_root, capabilities,
// veth/macvlan/bridge), the way LXC builds them. The native helper does the
// clone/pivot_root/setns work; this file decides what to ask of it.
import { spawn } from 'node:child_process';
import { promises as fs, existsSync, readFileSync, readlinkSync } from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { PassThrough } from 'node:stream';
import type { Logger } from 'pino';
import { type ContainerSpec, type ContainerStats, MountPropagation, MountType, RlimitType } from '../../src/gen/osvirt/v1/container';
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
import { detectLayout, type ContainerCgroup, type Layout } from './cgroups';
import { ContainerFiles } from './container-files';
import { ContainerNetwork } from './container-network';
import type { LxcExtension } from './extension';
import { ContainerRuns, type Boot } from './runs';
import { outerId, UserNamespaces } from './user-namespaces';
import { securityArgs } from './security';
import { launch, LaunchError, monitorResize, readExitRecord, removeMonitorDir } from './monitor';
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
import { BUSYBOX_DEFAULT_INIT, ContainerRootfs, Templates } from './rootfs';
import { unmountUnder } from '../../src/host/mounts';
import { pidAlive, pidStartTime, signalDisposition } from '../../src/host/processes';
import { IdAllocator } from './idmap';
import { detectInit, INIT_PATHS } from './init-detect';
import { forwardingProblem, natUnavailable } from './nat';
import { containerResolv } from './dns';
import type { ImageStore } from '../../src/images/store';
import { runtimeNow, writeRuntime } from './runtime-file';
import { templateExtension } from './template-service';
import type { DriverExtension } from '../../src/core/extension';
import { randomUUID } from 'node:crypto';

/** systemd's DefaultLimitNOFILE hard limit: dbus-daemon raises its soft limit to 65536. */
const SYSTEM_NOFILE_HARD = 524288;

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

export type { LxcExtension } from './extension';

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
  private readonly bridge: BridgeConfig;
  private readonly resolvConf: string;
  private readonly helper: string;
  // The parts a start, a restore and a checkpoint share (made at init, once the state dir is known).
  private files!: ContainerFiles;
  private userNs!: UserNamespaces;
  private rootfs!: ContainerRootfs;
  private network!: ContainerNetwork;
  private runs!: ContainerRuns;
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

  async init(ctx: DriverContext): Promise<void> {
    this.stateDir = ctx.stateDir;
    this.logger = ctx.logger;
    this.files = new ContainerFiles(this.stateDir);
    if (process.getuid?.() !== 0) throw missingFeature('root privileges', 'the lxc driver creates namespaces, cgroups and mounts; run osvirtd as root');
    if (!existsSync(this.helper)) throw missingFeature('the native helper', `${this.helper} is missing; build it with "make -C native" (npm run build does)`);
    for (const ns of ['pid', 'mnt', 'uts', 'ipc', 'net', 'cgroup']) {
      if (!existsSync(`/proc/self/ns/${ns}`)) throw missingFeature(`${ns} namespaces`, `/proc/self/ns/${ns} does not exist`);
    }
    this.layout = detectLayout();
    this.templates ??= new Templates(path.join(this.stateDir, 'templates'));
    await this.templates.removeStale();
    // One address table for every driver built on this one: they share the bridge.
    const ipam = new Ipam(path.join(path.dirname(this.stateDir), 'ipam.json'), this.bridge);
    // Likewise one table of host id ranges: no two containers' roots may be the same host user.
    this.userNs = new UserNamespaces(new IdAllocator(path.join(path.dirname(this.stateDir), 'idmap.json')), this.files);
    this.rootfs = new ContainerRootfs(this.name, this.helper, this.files, this.templates, this.images);
    this.network = new ContainerNetwork(this.bridge, ipam, this.files, this.resolvConf, this.logger);
    this.runs = new ContainerRuns(this.layout, this.files, this.rootfs, this.network, this.userNs, this.ext, this.logger);
    if (!existsSync('/proc/self/ns/user'))
      throw missingFeature('user namespaces', 'every container runs in its own user namespace; this kernel has none (CONFIG_USER_NS)');
    await fs.mkdir(this.files.root, { recursive: true });
    this.launcher = new Launcher(this.helper, path.join(this.stateDir, 'launcher.sock'), this.logger);
    await this.launcher.start();
    // What a previous daemon was still removing when it stopped.
    await fs.rm(path.join(this.stateDir, 'trash'), { recursive: true, force: true });
    // Every container's recorded range back into idmap.json, where a crash lost it.
    await this.userNs.restore(await fs.readdir(this.files.root).catch(() => [] as string[]));
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

  /** The container whose IPC namespace a start joins (share_ipc_with): the core locks it with the start. */
  async dependencies(_id: string, spec: ContainerSpec): Promise<string[]> {
    const peer = spec.driverOptions?.$case === 'lxc' ? spec.driverOptions.value.shareIpcWith : '';
    return peer ? [peer] : [];
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
    if (src.$case === 'image') this.rootfs.imageLayers(spec);
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

  async create(id: string, spec: ContainerSpec): Promise<void> {
    await this.validate(id, spec);
    await fs.mkdir(this.files.dir(id), { recursive: true, mode: 0o700 });
    const userNs = await this.userNs.of(id, spec);
    // What every process entering the container later gets too (its seccomp filter), and its id
    // range, which idmap.json is rebuilt from at init (IdAllocator.restore). Neither is fsynced:
    // blocks are handed out lowest-free, so one lost with a power loss right after a create
    // is handed to the same container again.
    const marker = { id, driver: spec.driver, execArgs: securityArgs(spec.security, { forExec: true, userNs: !!userNs }), privileged: !userNs, userNs };
    await this.files.writeMarker(id, marker);
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
    const idFile = path.join(this.files.dir(id), 'machine-uuid');
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

  /** The signal that halts this container's init: its init's (SIGRTMIN+3 for systemd), or 0 for "the default". */
  async stopSignal(id: string): Promise<number> {
    return this.runs.readBoot(id)?.haltSignal ?? 0;
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
    if (!existsSync(this.files.dir(id))) throw notFound('container', id);
    const old = await this.files.readRuntime(id);
    if (old && pidAlive(old.monitorPid) && !readExitRecord(this.files.monitorDir(id))) throw wrongState(id, 'RUNNING', 'stopped');
    await this.runs.cleanup(id);

    const cg = this.runs.cgroup(id);
    const monitorDir = this.files.monitorDir(id);
    let rootfsMounted = '';
    let network: NetworkRuntime = { hostInterfaces: [] };
    let dns: string[] = [];
    try {
      await removeMonitorDir(monitorDir);
      await fs.mkdir(monitorDir, { recursive: true, mode: 0o700 });
      const userNs = await this.userNs.of(id, spec);
      await cg.create(spec.resources, spec.devices);
      // Delegation: the container's root may organise its own cgroup subtree.
      if (userNs) await cg.delegate(outerId(userNs.uidMap), outerId(userNs.gidMap));
      await this.ext.beforeLaunch?.(id, spec, cg);
      const rf = await this.rootfs.prepare(id, spec, userNs, { deferOverlay: true });
      rootfsMounted = rf.mounted;
      const { argv, boot } = await this.bootPlan(spec);
      await this.runs.writeBoot(id, boot);

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
        const plan = await planVeth(id, netMode.value, this.network.ipam, this.bridge);
        network = vethRuntime(plan);
        args.push(...vethArgs(plan));
        // The daemon's own bridge gets NAT (masquerade) and the port chains.
        await this.network.ensureNat(plan.bridge);
        // Published before the init exists (the address is known): its server may be reached as soon as it listens.
        if (spec.ports.length) {
          network.publishedOn = plan.bridge;
          await this.network.publish(id, plan.bridge, plan.address, spec);
          faultPoint('start.after-publish');
        }
        dns = await this.network.dnsArgs(id, spec, this.rootfs.lowerWithEtc(spec));
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
          if (netMode?.$case !== 'bridge') network = await setupNetwork(id, initPid, spec.network, this.network.ipam);
          await this.ext.configure?.(id, spec, initPid);
        },
        this.launcher,
      );
      // The init runs; without runtime.json the next daemon reads STOPPED and its cleanup kills the tree.
      faultPoint('start.after-launch');
      const rt = runtimeNow(launched.initPid, launched.monitorPid, network, rootfsMounted);
      await writeRuntime(this.files.dir(id), rt);
      this.runs.forget(id);
      return { status: RuntimeStatus.RUNTIME_STATUS_RUNNING, initPid: rt.initPid, exitCode: 0, signal: 0, startTime: new Date(rt.startTime), message: '' };
    } catch (e) {
      await this.network
        .unpublish(id, network.publishedOn)
        .catch((err: unknown) => this.logger.warn({ container: id, err: errorMessage(err) }, 'cannot remove the port rules of a failed start'));
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

  state(id: string): Promise<RuntimeState> {
    return this.runs.state(id);
  }

  wait(id: string): Promise<RuntimeState> {
    return this.runs.wait(id);
  }

  async stop(id: string, signal: number, timeoutMs: number): Promise<RuntimeState> {
    const rt = await this.files.readRuntime(id);
    if (!rt) return this.state(id);
    const done = this.wait(id);
    const cg = this.runs.cgroup(id);
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
      let settled = false;
      void done.then(
        () => (settled = true),
        () => (settled = true),
      );
      // A pid namespace's init does not get a signal it has no handler for: one sent before its
      // program set up its handler (a stop right after a start) is dropped. Send it again once
      // the handler is there; an init that ignores the signal keeps ignoring it.
      if (signalDisposition(rt.initPid, signal) === 'default') {
        const deadline = Date.now() + timeoutMs;
        void (async () => {
          while (!settled && Date.now() < deadline) {
            await SLEEP(20);
            const d = signalDisposition(rt.initPid, signal);
            if (d === 'caught') return send(signal);
            if (d !== 'default') return;
          }
        })();
      }
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
    if (!existsSync(this.files.dir(id))) throw notFound('container', id);
  }

  async kill(id: string, signal: number): Promise<void> {
    this.known(id);
    const rt = await this.files.readRuntime(id);
    if (!rt || !pidAlive(rt.initPid)) throw wrongState(id, 'STOPPED', 'running');
    process.kill(rt.initPid, signal);
  }

  /** Runs a cgroup operation on a live container; the init dying under it is FAILED_PRECONDITION, not INTERNAL. */
  private async whileRunning(id: string, op: () => Promise<void>): Promise<void> {
    this.known(id);
    const rt = await this.files.readRuntime(id);
    if (!this.runs.initRunning(id, rt)) throw wrongState(id, 'STOPPED', 'running');
    try {
      await op();
    } catch (e) {
      if (!this.runs.initRunning(id, rt)) throw wrongState(id, 'STOPPED', 'running');
      throw e;
    }
  }

  async pause(id: string): Promise<void> {
    await this.whileRunning(id, () => this.runs.cgroup(id).freeze());
  }

  async resume(id: string): Promise<void> {
    await this.whileRunning(id, () => this.runs.cgroup(id).thaw());
  }

  async delete(id: string): Promise<void> {
    const rt = await this.files.readRuntime(id);
    if (rt && pidAlive(rt.initPid) && pidStartTime(rt.initPid) === rt.initStartTime) await this.stop(id, 9, 0);
    await this.runs.cleanup(id);
    await this.network.ipam.release(id);
    await this.userNs.release(id);
    await unmountUnder(this.files.dir(id));
    await this.discard(this.files.dir(id));
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
    for (const id of opts.removeOrphans ? await fs.readdir(this.files.root).catch(() => [] as string[]) : []) {
      if (known.has(id)) continue;
      this.logger.warn({ container: id, driver: this.name }, 'removing the state of a container with no definition (a create or delete a crash interrupted)');
      await this.delete(id).catch((e) => this.logger.error({ container: id, err: errorMessage(e) }, 'cannot remove an orphaned container state'));
    }
    for (const { id } of items) {
      try {
        out[id] = existsSync(this.files.dir(id))
          ? await this.state(id)
          : { status: RuntimeStatus.RUNTIME_STATUS_STOPPED, initPid: 0, exitCode: 0, signal: 0, message: '' };
        // Exited while we were away: release host resources now.
        if (out[id]?.status === RuntimeStatus.RUNTIME_STATUS_STOPPED) await this.runs.cleanup(id);
      } catch (e) {
        out[id] = { status: RuntimeStatus.RUNTIME_STATUS_UNKNOWN, initPid: 0, exitCode: 0, signal: 0, message: errorMessage(e) };
      }
    }
    await this.network.reconcilePorts(this.name, items, out);
    return out;
  }

  /** The seccomp rules the container's init runs under, recorded at create. */
  private async execSecurity(id: string): Promise<string[]> {
    return (await this.files.readMarker(id))?.execArgs ?? securityArgs(undefined, { forExec: true });
  }

  async exec(o: ExecOptions): Promise<ExecSession> {
    this.known(o.id);
    const rt = await this.files.readRuntime(o.id);
    if (!rt || !this.runs.initRunning(o.id, rt)) throw wrongState(o.id, 'STOPPED', 'running');
    let caps: string | undefined;
    try {
      caps = readFileSync(`/proc/${rt.initPid}/status`, 'utf8').match(/^CapBnd:\s*([0-9a-f]+)/m)?.[1];
    } catch {
      throw wrongState(o.id, 'STOPPED', 'running');
    }
    const args = ['exec', '--pid', String(rt.initPid), '--ready-fd', '4'];
    for (const d of this.runs.cgroup(o.id).dirs()) args.push('--cgroup', d);
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
    if (!started && (nsGone() || !this.runs.initRunning(o.id, await this.files.readRuntime(o.id)))) {
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
    const sock = path.join(this.files.monitorDir(id), 'console.sock');
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
      resize: (rows, cols) => void monitorResize(this.files.monitorDir(id), rows, cols),
      close: () => c.destroy(),
    };
  }

  async stats(id: string): Promise<ContainerStats> {
    this.known(id);
    const rt = await this.files.readRuntime(id);
    if (!rt) throw wrongState(id, 'STOPPED', 'running');
    const s = await this.runs.cgroup(id).stats();
    return { name: id, time: new Date(), ...s, interfaces: await interfaceStats(rt.initPid) };
  }

  private cr(): LxcCheckpointer {
    this.checkpointer ??= new LxcCheckpointer({
      helper: this.helper,
      logger: this.logger,
      files: this.files,
      userNs: this.userNs,
      rootfs: this.rootfs,
      network: this.network,
      runs: this.runs,
      ext: this.ext,
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
    const idMapping = await this.userNs.mapping(id);
    return idMapping ? { ...st, idMapping } : st;
  }
}
