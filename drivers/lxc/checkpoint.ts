// Checkpoint and restore of lxc containers with CRIU (RPC mode through the native helper).
//
// A checkpoint directory (the core's <state>/checkpoints/<container>/<name>/) follows Podman's
// layout: checkpoint/ holds CRIU's images (and dump.log), osvirt.json (the core's) the spec,
// config.dump what this driver needs to restore (how stdio, mounts and the network were wired),
// rootfs-diff.tar the overlay upper dir (the container's changes to its template).
//
// What is external to the dumped tree, and how each is handed back on restore:
// - the root mount (an overlay the host mounted): `mnt[/]:ROOT` on dump, `mnt[ROOT]:<rootfs>` +
//   root=<rootfs> on restore, after the overlay is mounted again (a clone first gets its own
//   upper dir, unpacked from rootfs-diff.tar);
// - host bind mounts (spec.mounts, and /dev/console of a tty container): `mnt[<dst>]:<key>`,
//   then `mnt[<key>]:<source>`;
// - the init's stdio: a pipe to the monitor (`pipe:[ino]`) or the monitor's pty (`tty[rdev:dev]`,
//   external on dump, as libvirt's LXC driver does). On restore the new monitor
//   (`osvirt-helper restore`) makes a new pipe or pty and CRIU gives it to the restored
//   processes in place of the old one (inherit_fd), making the pty their controlling tty again;
// - the veth's host end: `veth[<host end>]`, then `veth[<inside>]:<host end>@<bridge>`;
// - cgroups: CRIU moves the tasks into osvirt/<name> (cg_root), which the driver creates first.
// The network namespace itself (addresses, routes, sockets) is in the images.
//
// What it works with (CheckpointDeps): the lxc driver's own parts, the same
// objects a start uses, each with one job: ContainerFiles (where a
// container's state lives), UserNamespaces (its id range, which a restore
// adopts from the image), ContainerRootfs (mounting the root again, the upper
// dir), ContainerNetwork (the bridge's addresses, NAT, published ports, the
// generated resolv.conf), ContainerRuns (cgroups, the exit watch, the cleanup
// after a run) and the LxcExtension hooks of a driver built on this one (jail
// and vserver re-create their host addresses and filters in beforeLaunch,
// undo them in afterStop, and may checkpoint on the host's network stack).
// So a restored container is a run like a started one: the same watch ends
// it and the same cleanup undoes it.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promises as fs, existsSync, readFileSync, readlinkSync, statSync } from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';
import type { Logger } from 'pino';
import { CgroupManageMode, type CheckpointOptions, type CheckpointStats, type ContainerSpec, MountType } from '../../src/gen/osvirt/v1/container';
import { RuntimeStatus, type CheckpointResult, type RuntimeState } from '../../src/core/driver';
import { writeFileAtomic } from '../../src/core/atomic-file';
import { errorMessage, missingFeature, OsvirtError, wrongState } from '../../src/core/errors';
import { locateCriu } from '../../src/criu/criu-locate';
import type { CriuCgMode, CriuOpts } from '../../src/criu/criu-messages';
import { CriuError, CriuRpcClient } from '../../src/criu/criu-rpc';
import { readStats } from '../../src/criu/criu-stats';
import { faultPoint } from '../../src/core/faults';
import type { ContainerCgroup } from './cgroups';
import type { ContainerFiles } from './container-files';
import type { ContainerNetwork } from './container-network';
import type { LxcExtension } from './extension';
import { readExitRecord, removeMonitorDir } from './monitor';
import { pidAlive, pidStartTime } from '../../src/host/processes';
import { ensureBridge, hasKernelFeature, ip, ipIn, linkExists, teardownNetwork, type NetworkRuntime } from './network';
import { isMountpoint, unmountUnder } from '../../src/host/mounts';
import type { ContainerRootfs } from './rootfs';
import type { ContainerRuns } from './runs';
import { removeRuntime, runtimeNow, writeRuntime, type LxcRuntime } from './runtime-file';
import type { UserNamespaces } from './user-namespaces';

const run = promisify(execFile);

/** Directories a booted distribution's daemons watch with inotify, beyond CRIU's own hints. */
const IRMAP_HINTS = ['/usr/share/dbus-1', '/etc/dbus-1', '/etc/systemd', '/usr/lib/systemd'];

/**
 * The driver's parts the checkpointer works with: the same objects a start
 * uses, so a restore builds a run exactly as a start does and leaves it to the
 * same exit watch and cleanup.
 */
export interface CheckpointDeps {
  /** The native helper (CRIU's RPC bridge and the restored container's monitor). */
  helper: string;
  logger: Logger;
  /** Where each container's state lives (its dir, monitor dir, runtime.json, spec.json); criu-run/ is in its state dir. */
  files: ContainerFiles;
  /** The containers' id ranges: a restore adopts the range its image was dumped with. */
  userNs: UserNamespaces;
  /** Root filesystems: mounted again for a restore; their upper dir is rootfs-diff.tar. */
  rootfs: ContainerRootfs;
  /** The daemon's bridge and addresses, NAT and published ports, the generated resolv.conf. */
  network: ContainerNetwork;
  /** Cgroups, the exit watch and the cleanup of a run. */
  runs: ContainerRuns;
  /** The hooks of a driver built on this one (jail, vserver), run on restore as on a start. */
  ext: LxcExtension;
}

/** config.dump: how the dumped container was wired, for restore. */
interface CheckpointConfig {
  format: 1;
  container: string;
  createdAt: string;
  criuVersion: string;
  /** "overlay": rootfs-diff.tar holds the upper dir; "path": a host directory used in place. */
  rootfs: { kind: 'overlay' | 'path'; diff: string };
  /** The key of the init's stdio (fd 0/1/2) as CRIU names it: "pipe:[ino]" or "tty[rdev:dev]". */
  stdio: { kind: 'pipe' | 'tty' | 'none'; key: string };
  /** Host-side mounts in the container: mountpoint (inside) -> CRIU key. */
  mounts: { mountpoint: string; key: string; device?: string }[];
  /** The user namespace's first uid_map / gid_map line (container 0), when the container had one. */
  idmap?: { uid: number; gid: number; size: number };
  network: { mode: 'bridge'; inside: string; bridge: string; address: string; hostEnd: string } | { mode: 'isolated' };
  criu: { tcpEstablished: boolean; extUnixSk: boolean; fileLocks: boolean; shellJob: boolean; manageCgroupsMode: CriuCgMode };
  /** Sub-cgroups the container had made (ContainerCgroup.subtree), recreated before CRIU restores. */
  cgroupTree?: Record<string, string[]>;
}

const CONFIG_FILE = 'config.dump';
const ROOTFS_DIFF = 'rootfs-diff.tar';
/** The fd number criu gets the new console/pipe at (clear of the few the client passes). */
const INHERIT_FD = 100;
/** GNU tar keeping overlayfs whiteouts and opaque-dir xattrs, and ids as they are. */
const TAR_XATTRS = ['--xattrs', '--xattrs-include=trusted.overlay.*', '--numeric-owner'];

const MANAGE_MODE: Record<number, CriuCgMode> = {
  [CgroupManageMode.CGROUP_MANAGE_MODE_UNSPECIFIED]: 'SOFT',
  [CgroupManageMode.CGROUP_MANAGE_MODE_IGNORE]: 'IGNORE',
  [CgroupManageMode.CGROUP_MANAGE_MODE_SOFT]: 'SOFT',
  [CgroupManageMode.CGROUP_MANAGE_MODE_FULL]: 'FULL',
  [CgroupManageMode.CGROUP_MANAGE_MODE_STRICT]: 'STRICT',
};

function criuFailed(op: string, id: string, e: unknown): OsvirtError {
  if (e instanceof OsvirtError) return e;
  const msg = e instanceof CriuError ? e.message : errorMessage(e);
  return new OsvirtError('INTERNAL', 'CRIU_FAILED', `${op} of container "${id}" failed: ${msg}`, [], { container: id });
}

/** major:minor of every mount the daemon sees: a container mount with one of these came from the host. */
function hostMountDevices(): Set<string> {
  const out = new Set<string>();
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const dev = line.split(' ')[2];
    if (dev) out.add(dev);
  }
  return out;
}

/** The container's mounts that are host resources (binds), deepest last, without "/". */
function externalMounts(initPid: number): string[] {
  const host = hostMountDevices();
  const out: string[] = [];
  for (const line of readFileSync(`/proc/${initPid}/mountinfo`, 'utf8').split('\n')) {
    const f = line.split(' ');
    const dev = f[2];
    const mp = f[4];
    if (!dev || !mp || mp === '/') continue;
    // A cgroup filesystem shares its superblock with the host's mount of the
    // same hierarchy, but it is the container's own (mounted in its cgroup
    // namespace): CRIU dumps and mounts it again itself.
    const fstype = f[f.indexOf('-') + 1];
    if (fstype === 'cgroup' || fstype === 'cgroup2') continue;
    if (host.has(dev)) out.push(mp.replace(/\\040/g, ' '));
  }
  return out;
}

/**
 * A user namespace may not mknod, so there the helper binds the host's device
 * nodes: /dev/null and the rest of the standard set, spec.devices (same path
 * on the host) and /dev/null again over masked files. Which host node a bind
 * at `mountpoint` shows, found by its device number; undefined for anything
 * that is not a device node (spec.mounts binds: the spec says where they come from).
 */
function hostDeviceFor(initPid: number, mountpoint: string): string | undefined {
  if (mountpoint === '/dev/console') return undefined;
  const st = statSync(`/proc/${initPid}/root${mountpoint}`, { throwIfNoEntry: false });
  if (!st || !(st.isCharacterDevice() || st.isBlockDevice())) return undefined;
  for (const candidate of [mountpoint, '/dev/null']) {
    const h = statSync(candidate, { throwIfNoEntry: false });
    if (h && h.rdev === st.rdev && (h.isCharacterDevice() || h.isBlockDevice())) return candidate;
  }
  return undefined;
}

/** The container's root range (the map line for id 0), if it runs in a user namespace. */
function dumpedIdRange(initPid: number): { uid: number; gid: number; size: number } | undefined {
  const first = (f: string) =>
    readFileSync(`/proc/${initPid}/${f}`, 'utf8')
      .trim()
      .split('\n')
      .map((l) => l.trim().split(/\s+/).map(Number))
      .find((l) => l[0] === 0);
  const u = first('uid_map');
  const g = first('gid_map');
  if (!u || !g || (u[1] === 0 && u[2] === 4294967295)) return undefined;
  return { uid: u[1]!, gid: g[1]!, size: Math.min(u[2]!, g[2]!) };
}

/** How CRIU names the file behind fd 0..2 of the init, and whether it is the monitor's. */
function stdioKey(initPid: number): CheckpointConfig['stdio'] {
  const ttyKey = (file: string) => {
    const st = statSync(file);
    // Unix98 pty slaves have majors 136..143.
    const major = Math.floor(st.rdev / 256) & 0xfff;
    return st.isCharacterDevice() && major >= 136 && major <= 143 ? `tty[${st.rdev.toString(16)}:${st.dev.toString(16)}]` : undefined;
  };
  for (const fd of [1, 0, 2]) {
    let target: string;
    try {
      target = readlinkSync(`/proc/${initPid}/fd/${fd}`);
    } catch {
      continue;
    }
    if (target.startsWith('pipe:[')) return { kind: 'pipe', key: target };
    const key = ttyKey(`/proc/${initPid}/fd/${fd}`);
    if (key) return { kind: 'tty', key };
  }
  // A booted distribution's init gives its stdio up (systemd reopens /dev/null),
  // and its getty holds the console instead: the monitor's pty, whose master is
  // outside the container, so it is external like an init's console would be.
  // It is named from /dev/console itself, not from whoever holds it: at the
  // moment of the dump the getty may be between opening it and making it its
  // stdio, while systemd or another process holds it on a higher descriptor.
  try {
    const key = ttyKey(`/proc/${initPid}/root/dev/console`);
    if (key) return { kind: 'tty', key };
  } catch {
    // no console
  }
  return { kind: 'none', key: '' };
}

/**
 * Where CRIU puts the restored tasks: osvirt/<name> in each hierarchy osvirt manages, and only
 * there. A root without a controller would apply to every hierarchy, named ones like
 * name=systemd included, where osvirt does not put containers.
 */
function cgroupRoots(cg: ContainerCgroup, id: string): { ctrl?: string; path: string }[] {
  const root = `/osvirt/${id}`;
  if (cg.layout.kind === 'v2') return [{ path: root }];
  const out: { ctrl?: string; path: string }[] = Object.keys(cg.layout.v1).map((ctrl) => ({ ctrl, path: root }));
  // CRIU names the cgroup2 hierarchy's controller "" on a hybrid host.
  if (cg.layout.unified) out.push({ ctrl: '', path: root });
  return out;
}

function randomMac(): string {
  const b = randomBytes(6);
  b[0] = ((b[0] ?? 0) & 0xfe) | 0x02; // unicast, locally administered
  return [...b].map((x) => x.toString(16).padStart(2, '0')).join(':');
}

/** CRIU's figures of the dump in imageDir (its stats-dump file). */
function dumpStats(imageDir: string): CheckpointStats {
  const s = readStats(imageDir, 'dump')?.dump;
  return {
    freezingTimeUs: BigInt(s?.freezing_time ?? 0),
    frozenTimeUs: BigInt(s?.frozen_time ?? 0),
    memdumpTimeUs: BigInt(s?.memdump_time ?? 0),
    memwriteTimeUs: BigInt(s?.memwrite_time ?? 0),
    pagesScanned: BigInt(s?.pages_scanned ?? 0),
    pagesWritten: BigInt(s?.pages_written ?? 0),
  };
}

export class LxcCheckpointer {
  private client?: CriuRpcClient;
  private version = '';

  constructor(private readonly d: CheckpointDeps) {}

  /** The tmpfs criu sees as /run, so its kernel-feature cache (criu.kdat) survives between calls. */
  private async runDir(): Promise<string> {
    const dir = path.join(this.d.files.stateDir, 'criu-run');
    if (isMountpoint(dir)) return dir;
    await fs.mkdir(dir, { recursive: true, mode: 0o700 });
    try {
      await run('mount', ['-t', 'tmpfs', '-o', 'size=4m,mode=0700,nosuid,nodev,noexec', 'osvirt-criu-run', dir]);
    } catch (e) {
      throw missingFeature('tmpfs', `mounting criu's run directory at ${dir} failed: ${((e as { stderr?: string }).stderr ?? errorMessage(e)).trim()}`);
    }
    return dir;
  }

  /**
   * After a daemon crash: whether the images in imageDir are a complete dump
   * this driver can restore. Complete: the config was committed, or CRIU wrote
   * its dump statistics (the last thing a successful dump writes) and the
   * container's init is gone (CRIU ended it). Then the config is committed and
   * the dump's figures returned.
   */
  async adopt(id: string, imageDir: string): Promise<CheckpointResult | undefined> {
    const cpDir = path.dirname(imageDir);
    const config = path.join(cpDir, CONFIG_FILE);
    if (!existsSync(config)) {
      if (!existsSync(config + '.part') || !existsSync(path.join(imageDir, 'stats-dump')) || !existsSync(path.join(imageDir, 'inventory.img')))
        return undefined;
      const rt = await this.d.files.readRuntime(id);
      if (rt && pidAlive(rt.initPid) && pidStartTime(rt.initPid) === rt.initStartTime) return undefined;
      await fs.rename(config + '.part', config);
    }
    const c = JSON.parse(await fs.readFile(config, 'utf8')) as CheckpointConfig;
    const stats = dumpStats(imageDir);
    return {
      criuVersion: c.criuVersion,
      stats,
      state: { status: RuntimeStatus.RUNTIME_STATUS_STOPPED, initPid: 0, exitCode: 0, signal: 0, message: 'checkpointed' },
    };
  }

  /** Daemon shutdown: drop criu's run directory (remade on the next checkpoint). */
  async close(): Promise<void> {
    const dir = path.join(this.d.files.stateDir, 'criu-run');
    if (isMountpoint(dir)) await run('umount', ['-l', dir]).catch(() => undefined);
    this.client = undefined;
  }

  private async criu(): Promise<CriuRpcClient> {
    if (this.client) return this.client;
    const loc = await locateCriu();
    if (!loc.ok || !loc.path) throw new OsvirtError('FAILED_PRECONDITION', 'CRIU_UNAVAILABLE', `CRIU is not usable: ${loc.reason}`);
    this.version = loc.version ?? '';
    this.client = new CriuRpcClient({ criuPath: loc.path, helperPath: this.d.helper, runDir: await this.runDir() });
    return this.client;
  }

  /** Options and container setups CRIU cannot (or osvirt does not yet) checkpoint, refused up front. */
  private async refuseUnsupported(id: string, o: CheckpointOptions, parentImageDir: string, rt: LxcRuntime): Promise<void> {
    if (o.lazyPages) {
      throw new OsvirtError(
        'FAILED_PRECONDITION',
        'LAZY_PAGES_UNSUPPORTED',
        'options.lazy_pages: lazy restore (userfaultfd with a page server) is not supported by the lxc driver: it has not been shown to work on this stack; checkpoint without it',
        [],
        { container: id },
      );
    }
    if (parentImageDir) {
      const soft = hasKernelFeature('CONFIG_MEM_SOFT_DIRTY');
      const tracked = soft === false ? false : ((await (await this.criu()).featureCheck({ mem_track: true })).mem_track ?? false);
      if (!tracked) {
        throw missingFeature(
          'soft-dirty memory tracking (CONFIG_MEM_SOFT_DIRTY)',
          'options.parent_checkpoint makes an incremental dump, which needs CRIU memory tracking (track_mem); this kernel was built without CONFIG_MEM_SOFT_DIRTY. Take a full checkpoint instead',
        );
      }
    }
    if (!rt.rootfsMounted && this.d.rootfs.isAppRoot(id)) {
      throw new OsvirtError(
        'FAILED_PRECONDITION',
        'CHECKPOINT_UNSUPPORTED',
        `container "${id}" runs on the host's root (an application container); the lxc driver checkpoints only containers with their own rootfs`,
        [],
        { container: id },
      );
    }
    const own = (ns: string) => {
      try {
        return readlinkSync(`/proc/${rt.initPid}/ns/${ns}`) !== readlinkSync(`/proc/self/ns/${ns}`);
      } catch {
        return false;
      }
    };
    if (own('user') && rt.network.bridge) {
      // Measured with CRIU 4.2.1 on Linux 6.18: RESTORE makes the veth through its usernsd, whose
      // RTM_NEWLINK (the device's old ifindex, into the container's netns by IFLA_NET_NS_FD) the
      // kernel answers with EOPNOTSUPP, so the image could never be restored. Refused before the dump.
      throw new OsvirtError(
        'FAILED_PRECONDITION',
        'CHECKPOINT_UNSUPPORTED',
        `container "${id}" runs in a user namespace with a veth on a bridge: CRIU 4.2 cannot restore a veth into a user-namespaced container (its usernsd's RTM_NEWLINK fails with EOPNOTSUPP); checkpoint it with network.none, or make it security.privileged`,
        [],
        { container: id },
      );
    }
    if (!own('net') && !this.d.ext.checkpointHostNetwork)
      throw new OsvirtError(
        'FAILED_PRECONDITION',
        'CHECKPOINT_UNSUPPORTED',
        `container "${id}" shares the host's network namespace; only containers with their own (network.none or network.bridge) can be checkpointed`,
        [],
        { container: id },
      );
  }

  async checkpoint(id: string, imageDir: string, o: CheckpointOptions, parentImageDir: string): Promise<CheckpointResult> {
    const rt = await this.d.files.readRuntime(id);
    if (!rt || !pidAlive(rt.initPid) || pidStartTime(rt.initPid) !== rt.initStartTime || readExitRecord(this.d.files.monitorDir(id)))
      throw wrongState(id, 'STOPPED', 'running');
    await this.refuseUnsupported(id, o, parentImageDir, rt);
    const client = await this.criu();
    const cpDir = path.dirname(imageDir);
    const manageMode = MANAGE_MODE[o.manageCgroupsMode] ?? 'SOFT';

    const stdio = stdioKey(rt.initPid);
    const external = ['mnt[/]:ROOT'];
    const mounts = externalMounts(rt.initPid).map((mountpoint, i) => ({
      mountpoint,
      key: mountpoint === '/dev/console' ? 'console' : `m${i}`,
      device: hostDeviceFor(rt.initPid, mountpoint),
    }));
    for (const m of mounts) external.push(`mnt[${m.mountpoint}]:${m.key}`);
    // Read while the init lives: without leave_running, the dump ends it.
    const idmap = dumpedIdRange(rt.initPid);
    if (stdio.kind === 'tty') external.push(stdio.key);
    let network: CheckpointConfig['network'] = { mode: 'isolated' };
    const hostEnd = rt.network.hostInterfaces[0];
    if (rt.network.bridge && hostEnd) {
      external.push(`veth[${hostEnd}]`);
      network = { mode: 'bridge', inside: rt.network.interfaceName ?? 'eth0', bridge: rt.network.bridge, address: rt.network.address ?? '', hostEnd };
    }
    const upper = this.d.rootfs.upperDir(id);
    const overlay = !!rt.rootfsMounted && existsSync(upper);
    const opts: CriuOpts = {
      root: rt.rootfsMounted || undefined,
      leave_running: o.leaveRunning,
      tcp_established: o.tcpEstablished,
      ext_unix_sk: o.extUnixSk,
      file_locks: o.fileLocks,
      shell_job: o.shellJob,
      manage_cgroups: true,
      manage_cgroups_mode: manageMode,
      external,
      notify_scripts: true,
      log_file: 'dump.log',
      // An inotify watch on an overlayfs root has no file handle CRIU can open,
      // so CRIU finds its path by inode (irmap) in a few hinted directories.
      // dbus-daemon watches /usr/share/dbus-1/system.d, which is not one of them.
      irmap_scan_paths: IRMAP_HINTS,
    };
    if (!opts.root) delete opts.root;
    // Only the hierarchies osvirt puts containers in: a named one (name=systemd) where the
    // container sits at the root would make CRIU dump, and recreate, that whole hierarchy.
    const cg = this.d.runs.cgroup(id);
    if (cg.layout.kind === 'hybrid') opts.cgroup_dump_controller = [...Object.keys(cg.layout.v1), ...(cg.layout.unified ? [''] : [])];
    if (o.timeout && o.timeout.seconds > 0n) opts.timeout = Number(o.timeout.seconds);
    if (parentImageDir) {
      opts.parent_img = path.relative(imageDir, parentImageDir);
      opts.track_mem = true;
    }
    const config: CheckpointConfig = {
      format: 1,
      container: id,
      createdAt: new Date().toISOString(),
      criuVersion: this.version,
      rootfs: { kind: overlay ? 'overlay' : 'path', diff: overlay ? ROOTFS_DIFF : '' },
      stdio,
      mounts,
      idmap,
      network,
      criu: { tcpEstablished: o.tcpEstablished, extUnixSk: o.extUnixSk, fileLocks: o.fileLocks, shellJob: o.shellJob, manageCgroupsMode: manageMode },
      cgroupTree: cg.subtree(),
    };
    // Written before the dump (as .part): once CRIU has killed the tasks the
    // images are the workload's only copy, and a daemon killed before it
    // renames this must still be able to restore them (adoptCheckpoint).
    await writeFileAtomic(path.join(cpDir, CONFIG_FILE + '.part'), JSON.stringify(config, null, 2) + '\n', 0o600);
    const started = Date.now();
    try {
      await client.dump({
        pid: rt.initPid,
        imagesDir: imageDir,
        opts,
        onNotify: async (n) => {
          // The tree is frozen here (also with leave_running): the upper dir is consistent with it.
          if (n.script === 'post-dump') faultPoint('checkpoint.during-dump');
          if (n.script === 'post-dump' && overlay) await run('tar', [...TAR_XATTRS, '-C', upper, '-cf', path.join(cpDir, ROOTFS_DIFF), '.']);
        },
      });
    } catch (e) {
      throw criuFailed('checkpoint', id, e);
    }
    const dumpMs = Date.now() - started;
    faultPoint('checkpoint.after-dump');
    await fs.rename(path.join(cpDir, CONFIG_FILE + '.part'), path.join(cpDir, CONFIG_FILE));
    const stats = dumpStats(imageDir);
    this.d.logger.info({ container: id, ms: dumpMs, frozenUs: stats.frozenTimeUs, pagesWritten: stats.pagesWritten }, 'checkpointed');
    let state: RuntimeState = { status: RuntimeStatus.RUNTIME_STATUS_RUNNING, initPid: rt.initPid, exitCode: 0, signal: 0, message: '' };
    if (!o.leaveRunning) {
      // CRIU killed the tree; wait for the monitor to notice and the driver to clean up, so a
      // restore right after does not race with that cleanup.
      await this.d.runs.wait(id);
      state = { status: RuntimeStatus.RUNTIME_STATUS_STOPPED, initPid: 0, exitCode: 0, signal: 0, finishTime: new Date(), message: 'checkpointed' };
    }
    return { criuVersion: this.version, stats, state };
  }

  private async readConfig(id: string, imageDir: string): Promise<CheckpointConfig> {
    try {
      const c = JSON.parse(await fs.readFile(path.join(path.dirname(imageDir), CONFIG_FILE), 'utf8')) as CheckpointConfig;
      if (c.format !== 1) throw new Error(`unknown format ${String(c.format)}`);
      return c;
    } catch (e) {
      throw new OsvirtError(
        'FAILED_PRECONDITION',
        'CHECKPOINT_UNREADABLE',
        `the checkpoint cannot be restored into "${id}": ${CONFIG_FILE} is missing or unreadable (${errorMessage(e)})`,
        [],
        { container: id },
      );
    }
  }

  async restore(id: string, spec: ContainerSpec, imageDir: string, tcpEstablished: boolean, timeoutMs: number): Promise<RuntimeState> {
    const config = await this.readConfig(id, imageDir);
    const clone = config.container !== id;
    const old = await this.d.files.readRuntime(id);
    if (old && pidAlive(old.monitorPid) && !readExitRecord(this.d.files.monitorDir(id))) throw wrongState(id, 'RUNNING', 'stopped');
    if (clone && tcpEstablished) {
      throw new OsvirtError(
        'FAILED_PRECONDITION',
        'CLONE_TCP_ESTABLISHED',
        `a clone cannot take over the TCP connections of "${config.container}", which keeps them; restore the clone without tcp_established (its connections are restored closed)`,
        [],
        { container: id },
      );
    }
    if (config.criu.tcpEstablished && !tcpEstablished && !clone) {
      throw new OsvirtError(
        'FAILED_PRECONDITION',
        'TCP_ESTABLISHED_REQUIRED',
        `the checkpoint holds established TCP connections (it was taken with tcp_established); restore it with tcp_established`,
        [],
        { container: id },
      );
    }
    const client = await this.criu();
    await this.d.runs.cleanup(id);

    const dir = this.d.files.dir(id);
    const monitorDir = this.d.files.monitorDir(id);
    const cg = this.d.runs.cgroup(id);
    let rootfsMounted = '';
    let network: NetworkRuntime = { hostInterfaces: [] };
    let monitorPid = 0;
    try {
      await removeMonitorDir(monitorDir);
      await fs.mkdir(monitorDir, { recursive: true, mode: 0o700 });
      await cg.create(spec.resources, spec.devices);
      if (config.idmap) await this.d.userNs.adopt(id, config.idmap);
      const root = await this.d.userNs.rootIds(id, spec);
      if (config.cgroupTree) cg.createSubtree(config.cgroupTree, root);
      if (root) {
        await cg.delegate(root.uid, root.gid);
        // CRIU reads some images after its tasks entered the container's user
        // namespace, through the image dir's fd: they need search permission on
        // it (the directories above stay root's alone).
        await fs.chmod(imageDir, 0o711);
      }
      await this.d.ext.beforeLaunch?.(id, spec, cg);

      // A clone gets its own copy of the container's changes to the template.
      const upper = this.d.rootfs.upperDir(id);
      if (config.rootfs.kind === 'overlay' && config.rootfs.diff) {
        const have = await fs.readdir(upper).catch(() => undefined);
        if (clone || !have) {
          await fs.rm(upper, { recursive: true, force: true });
          await fs.mkdir(upper, { recursive: true, mode: 0o755 });
          await run('tar', [...TAR_XATTRS, '-C', upper, '-xpf', path.join(path.dirname(imageDir), config.rootfs.diff)]);
        }
      }
      const rf = await this.d.rootfs.prepare(id, spec, await this.d.userNs.of(id, spec));
      rootfsMounted = rf.mounted;

      const external = [`mnt[ROOT]:${rf.rootfs}`];
      for (const m of config.mounts) {
        if (m.key === 'console') continue; // the new pty's path, once the helper made it

        const src =
          m.device ?? this.mountSource(spec, m.mountpoint) ?? (m.mountpoint === '/etc/resolv.conf' ? await this.d.network.resolvFile(id, spec) : undefined);
        if (!src)
          throw new OsvirtError(
            'FAILED_PRECONDITION',
            'MOUNT_SOURCE_UNKNOWN',
            `the checkpoint has a host mount at ${m.mountpoint} that spec.mounts no longer provides`,
            [],
            { container: id },
          );
        external.push(`mnt[${m.key}]:${src}`);
      }

      let readdress: { inside: string; address: string; gateway?: string | undefined } | undefined;
      if (config.network.mode === 'bridge') {
        const bridgeSpec = spec.network?.mode?.$case === 'bridge' ? spec.network.mode.value : undefined;
        const bridge = bridgeSpec?.bridge || config.network.bridge;
        const own = bridge === this.d.network.bridge.name;
        const gw = own ? this.d.network.ipam.gateway() : undefined;
        await ensureBridge(bridge, gw);
        const hostEnd = this.d.network.ipam.ifName('ovh', id);
        if (linkExists(hostEnd)) await ip('link', 'del', hostEnd).catch(() => undefined);
        let address = config.network.address;
        if (clone) {
          if (bridgeSpec?.address) await this.d.network.ipam.reserve(id, bridgeSpec.address);
          address = bridgeSpec?.address || (own ? await this.d.network.ipam.allocate(id) : '');
          readdress = { inside: config.network.inside, address, gateway: gw?.address };
        }
        external.push(`veth[${config.network.inside}]:${hostEnd}@${bridge}`);
        network = { hostInterfaces: [hostEnd], address, interfaceName: config.network.inside, bridge };
        // The ports point at the address the restored container will have; published before it runs, as at a start.
        if (spec.ports.length) {
          network.publishedOn = bridge;
          await this.d.network.ensureNat(bridge);
          await this.d.network.publish(id, bridge, address, spec);
        }
      }

      const tty = config.stdio.kind === 'tty';
      const manageMode = config.criu.manageCgroupsMode;
      const opts: CriuOpts = {
        root: rf.rootfs,
        tcp_established: tcpEstablished && !clone,
        // A clone must not revive the original's connections next to it: they come back closed.
        tcp_close: clone && config.criu.tcpEstablished,
        ext_unix_sk: config.criu.extUnixSk,
        file_locks: config.criu.fileLocks,
        shell_job: config.criu.shellJob,
        manage_cgroups: true,
        manage_cgroups_mode: manageMode,
        cg_root: cgroupRoots(cg, id),
        external,
        notify_scripts: true,
        // The images dir is CRIU's work dir here: a work_dir_fd would name a directory of the
        // host's mount namespace, where criu (in its own, see runDir) cannot mount its cgroup yard.
        log_file: `restore-${id}.log`,
      };
      if (config.stdio.kind !== 'none') opts.inherit_fd = [{ key: config.stdio.key, fd: INHERIT_FD }];
      const hostname = clone && !spec.hostname ? id : '';
      const started = Date.now();
      let restored;
      try {
        restored = await client.restoreMonitored({
          imagesDir: imageDir,
          stateDir: monitorDir,
          console: tty ? 'tty' : 'pipe',
          fd: INHERIT_FD,
          opts,
          // With IGNORE CRIU leaves the tasks where it runs: let that be the container's cgroups.
          helperArgs: [
            ...(manageMode === 'IGNORE' ? cg.dirs().flatMap((d) => ['--cgroup', d]) : []),
            ...(tty && root ? ['--tty-owner', `${root.uid}:${root.gid}`] : []),
          ],
          ...(timeoutMs > 0 ? { signal: AbortSignal.timeout(timeoutMs) } : {}),
          patchOpts: async () => {
            if (!config.mounts.some((m) => m.key === 'console')) return {};
            // CRIU cannot bind through a symlink here: name the pty itself.
            const link = path.join(monitorDir, 'console-pty');
            for (let i = 0; i < 200 && !existsSync(link); i++) await new Promise((r) => setTimeout(r, 10));
            return { external: [...external, `mnt[console]:${await fs.readlink(link)}`] };
          },
          onNotify: async (n) => {
            if (n.script === 'post-restore') faultPoint('restore.during-criu');
            // Restored, not yet resumed: give a clone its own identity before it runs.
            if (n.script === 'post-restore' && n.pid && (readdress || hostname)) await this.reidentify(n.pid, readdress, hostname);
          },
        });
      } catch (e) {
        if (e instanceof CriuError && e.code === 'ABORTED') {
          throw new OsvirtError('DEADLINE_EXCEEDED', 'RESTORE_TIMEOUT', `restore of "${id}" did not finish within ${timeoutMs} ms`, [], { container: id });
        }
        throw criuFailed('restore', id, e);
      }
      monitorPid = restored.monitorPid;
      const initPid = restored.pid;
      faultPoint('restore.after-criu');
      if (!pidAlive(monitorPid) || !existsSync(path.join(monitorDir, 'monitor.sock'))) {
        throw new OsvirtError(
          'INTERNAL',
          'MONITOR_FAILED',
          `the monitor of restored container "${id}" did not come up; see ${path.join(monitorDir, 'monitor.log')}`,
        );
      }
      if (network.bridge && network.hostInterfaces[0]) {
        // CRIU enslaves the host end itself (@bridge); make sure, it is cheap and idempotent.
        await ip('link', 'set', network.hostInterfaces[0], 'master', network.bridge, 'up');
      }
      const rt = runtimeNow(initPid, monitorPid, network, rootfsMounted);
      await writeRuntime(dir, rt);
      this.d.runs.forget(id);
      const rs = readStats(imageDir, 'restore')?.restore;
      this.d.logger.info(
        { container: id, from: config.container, ms: Date.now() - started, restoreUs: rs?.restore_time, forkingUs: rs?.forking_time },
        'restored',
      );
      return { status: RuntimeStatus.RUNTIME_STATUS_RUNNING, initPid, exitCode: 0, signal: 0, startTime: new Date(rt.startTime), message: '' };
    } catch (e) {
      // Leave nothing half-made: the monitor (if any), every task in the cgroups, the mounts, the veth.
      if (monitorPid) {
        try {
          process.kill(monitorPid, 'SIGKILL');
        } catch {
          // gone
        }
      }
      await cg.destroy().catch((err: unknown) => this.d.logger.warn({ container: id, err: errorMessage(err) }, 'cgroup cleanup after a failed restore'));
      await this.d.network
        .unpublish(id)
        .catch((err: unknown) => this.d.logger.warn({ container: id, err: errorMessage(err) }, 'port rules cleanup after a failed restore'));
      await teardownNetwork(network);
      if (rootfsMounted) await unmountUnder(rootfsMounted);
      await removeRuntime(dir);
      await removeMonitorDir(monitorDir).catch(() => undefined);
      await this.d.ext.afterStop?.(id).catch(() => undefined);
      throw e;
    }
  }

  /** The host path a dumped mountpoint comes from now: spec.mounts, the deepest destination above it. */
  private mountSource(spec: ContainerSpec, mountpoint: string): string | undefined {
    let best: { dst: string; src: string } | undefined;
    for (const m of spec.mounts) {
      if (m.type !== MountType.MOUNT_TYPE_BIND) continue;
      const dst = path.posix.normalize(m.destination);
      if ((mountpoint === dst || mountpoint.startsWith(dst + '/')) && (!best || dst.length > best.dst.length)) best = { dst, src: m.source };
    }
    return best ? best.src + mountpoint.slice(best.dst.length) : undefined;
  }

  /**
   * A clone runs next to its original on the same bridge: it gets its own MAC, address and
   * hostname before its processes resume. Sockets bound to the old address keep it.
   */
  private async reidentify(
    pid: number,
    readdress: { inside: string; address: string; gateway?: string | undefined } | undefined,
    hostname: string,
  ): Promise<void> {
    if (readdress) {
      const dev = readdress.inside;
      await ipIn(pid, 'link', 'set', dev, 'down');
      await ipIn(pid, 'link', 'set', dev, 'address', randomMac());
      await ipIn(pid, 'addr', 'flush', 'dev', dev);
      await ipIn(pid, 'link', 'set', dev, 'up');
      if (readdress.address) await ipIn(pid, 'addr', 'add', readdress.address, 'dev', dev);
      if (readdress.gateway && readdress.address) await ipIn(pid, 'route', 'replace', 'default', 'via', readdress.gateway);
    }
    if (hostname) await run('nsenter', [`--uts=/proc/${pid}/ns/uts`, '--', 'hostname', hostname]);
  }
}
