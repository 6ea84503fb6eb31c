// The jail driver: FreeBSD jail(8) semantics on Linux. It wraps the lxc
// driver (helper, monitor, cgroups, rootfs, veth, exec, checkpoint) and adds
// what makes a container a jail:
// - a plan from the jail parameters (options.ts): capabilities, seccomp
//   rules, namespaces, /dev nodes, masked /proc paths, limits;
// - pid 1 of the jail's pid namespace is osvirt's static init (the helper's
//   `init`), held while the jail is set up and released after
//   exec.poststart unless the jail persists: then the jail goes away when its
//   last process exits, as on FreeBSD;
// - the shared-stack address filter (drivers/common/ipfilter) for ip4/ip6,
//   and the addresses on the host interface (`interface`);
// - the exec.* commands, in jail(8)'s order with its abort rule;
// - a stable jid per jail.
import { execFile, spawn } from 'node:child_process';
import { closeSync, promises as fs, existsSync, openSync, readFileSync, readlinkSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import type { Logger } from 'pino';
import { BridgeNetwork, ContainerSpec, type CheckpointOptions, type ContainerStats, MountType } from '../../src/gen/osvirt/v1/container';
import { type Jail, JailOptions } from '../../src/gen/osvirt/v1/jail';
import {
  RuntimeStatus,
  type CheckpointResult,
  type Driver,
  type DriverContext,
  type DriverInfo,
  type ExecOptions,
  type ExecSession,
  type RuntimeState,
} from '../../src/core/driver';
import { writeFileAtomic } from '../../src/core/atomic-file';
import { alreadyExists, errorMessage, missingFeature } from '../../src/core/errors';
import { KeyedMutex } from '../../src/core/keyed-mutex';
import { helperPath, repoPath } from '../../src/paths';
import { CAPABILITY_NAMES } from '../../src/core/capabilities';
import { IpFilter } from '../common/ipfilter';
import { LxcDriver, type LxcDriverOptions, type LxcExtension } from '../lxc/driver';
import { ContainerCgroup, detectLayout, type Layout } from '../lxc/cgroups';
import { addAddresses, removeAddresses } from './addresses';
import { readRuntimeSync } from '../lxc/runtime-file';
import { jailExtension } from './service';
import type { DriverExtension } from '../../src/core/extension';
import { runHostCommand, runJailCommand, type CommandRunner, type JailSpawner } from './commands';
import { helperExecArgs, helperRunArgs, INIT_IN_JAIL, type JailAddress, type JailPlan, planJail } from './options';

const exec = promisify(execFile);

/** What a running jail needs remembered across daemon restarts (containers/<id>/jail-run.json). */
interface JailRun {
  /** The spec it was started with (proto JSON). */
  spec: unknown;
  /** Addresses this run added to host interfaces. */
  aliases: JailAddress[];
  /** `osvirt-helper exec` options for every process that enters it. */
  execArgs: string[];
}

export function initBinaryPath(): string {
  return process.env['OSVIRT_INIT'] ?? repoPath('native', 'build', 'osvirt-init');
}

export class JailDriver implements Driver {
  readonly name = 'jail';
  private readonly inner: LxcDriver;
  private stateDir = '';
  private logger!: Logger;
  private readonly ipf = new IpFilter();
  private ipfOk = false;
  private ipfReason = '';
  private readonly initBinary = initBinaryPath();
  private readonly helper: string;
  private layout!: Layout;
  /** Plans of jails being started or restored (the lxc hooks read them). */
  private readonly pending = new Map<string, JailPlan>();
  /** Running jails. */
  private readonly runs = new Map<string, JailRun>();
  /** Jails whose start or stop handles the host addresses itself. */
  private readonly busy = new Set<string>();
  private readonly jidLock = new KeyedMutex();

  constructor(opts: LxcDriverOptions = {}) {
    this.inner = new LxcDriver({ ...opts, name: 'jail', extension: this.extension() });
    this.helper = opts.helper ?? helperPath();
  }

  private extension(): LxcExtension {
    return {
      helperArgs: (id) => {
        const plan = this.pending.get(id);
        return plan ? helperRunArgs(plan) : [];
      },
      beforeLaunch: (id, _spec, cg) => this.attachFilter(id, cg),
      afterStop: (id) => this.afterStop(id),
      execArgs: (id) => this.runs.get(id)?.execArgs ?? [],
      checkpointHostNetwork: true,
    };
  }

  async init(ctx: DriverContext): Promise<void> {
    this.stateDir = ctx.stateDir;
    this.logger = ctx.logger;
    await this.inner.init(ctx);
    this.layout = detectLayout();
    if (!existsSync(this.initBinary))
      throw missingFeature('the jail init (osvirt-init)', `${this.initBinary} is missing; build it with "make -C native" (npm run build does)`);
    const a = await IpFilter.available();
    this.ipfOk = a.ok;
    this.ipfReason = a.reason;
  }

  async info(): Promise<DriverInfo> {
    const i = await this.inner.info();
    const messages = [...i.messages];
    if (!this.ipfOk) messages.push(`ip4: jails on the host's network stack need ip4 and ip6 = INHERIT here (no address filtering): ${this.ipfReason}`);
    return { ...i, name: this.name, messages };
  }

  private dir(id: string): string {
    return path.join(this.stateDir, 'containers', id);
  }

  // ---- translation to the lxc machinery

  private translate(spec: ContainerSpec, plan: JailPlan): ContainerSpec {
    const o = plan.options;
    let rootfs = spec.rootfs;
    if (o.path === '/') rootfs = { source: { $case: 'host', value: {} }, copyOnWrite: false, readonly: false, pullPolicy: 0, imageDigest: '' };
    else if (o.path) rootfs = { source: { $case: 'path', value: o.path }, copyOnWrite: false, readonly: false, pullPolicy: 0, imageDigest: '' };
    const network = plan.vnet
      ? spec.network?.mode
        ? spec.network
        : { mode: { $case: 'bridge' as const, value: BridgeNetwork.fromPartial({}) } }
      : { mode: { $case: 'host' as const, value: {} } };
    return ContainerSpec.fromPartial({
      ...spec,
      driver: this.name,
      rootfs,
      process: { args: [INIT_IN_JAIL, 'init'], env: [], cwd: '/', rlimits: plan.rlimits, noNewPrivileges: spec.process?.noNewPrivileges ?? false, tty: false },
      hostname: plan.hostname,
      domainname: plan.domainname,
      network,
      mounts: [
        ...spec.mounts,
        ...plan.mounts,
        { type: MountType.MOUNT_TYPE_BIND, source: this.initBinary, destination: INIT_IN_JAIL, readonly: true, propagation: 0, options: [] },
      ],
      capabilities: { dropAll: true, add: plan.caps, drop: [] },
      resources: plan.resources,
      driverOptions: { $case: 'jail', value: o },
    });
  }

  private async attachFilter(id: string, cg: ContainerCgroup): Promise<void> {
    const policy = this.pending.get(id)?.ipPolicy;
    if (!policy) return;
    if (!this.ipfOk) throw missingFeature('shared-stack address filtering (cgroup BPF)', this.ipfReason);
    const dir = cg.unifiedDir();
    if (!dir)
      throw missingFeature(
        'a cgroup2 hierarchy',
        'ip4.addr/ip6.addr without vnet are enforced by cgroup BPF programs on cgroup2; mount cgroup2 (at /sys/fs/cgroup/unified on a hybrid host)',
      );
    await this.ipf.attach(dir, policy);
  }

  private async afterStop(id: string): Promise<void> {
    // The cgroup is gone, and its BPF attachments with it; unpin what nothing uses.
    if (this.ipfOk) await this.ipf.release().catch((e: unknown) => this.logger.warn({ container: id, err: errorMessage(e) }, 'ip filter release failed'));
    if (this.busy.has(id)) return;
    // The jail ended by itself (its last process exited) or is cleaned up after a crash.
    const run = this.runs.get(id) ?? (await this.readRun(id));
    if (run) await removeAddresses(run.aliases);
    this.runs.delete(id);
    await fs.rm(path.join(this.dir(id), 'jail-run.json'), { force: true });
  }

  private async readRun(id: string): Promise<JailRun | undefined> {
    try {
      return JSON.parse(await fs.readFile(path.join(this.dir(id), 'jail-run.json'), 'utf8')) as JailRun;
    } catch {
      return undefined;
    }
  }

  private async writeRun(id: string, run: JailRun): Promise<void> {
    this.runs.set(id, run);
    await writeFileAtomic(path.join(this.dir(id), 'jail-run.json'), JSON.stringify(run, null, 2) + '\n');
  }

  private async dropRun(id: string, run: JailRun | undefined): Promise<void> {
    if (run) await removeAddresses(run.aliases);
    this.runs.delete(id);
    await fs.rm(path.join(this.dir(id), 'jail-run.json'), { force: true });
  }

  // ---- jids

  private jidFile(): string {
    return path.join(this.stateDir, 'jids.json');
  }

  private async jids(): Promise<Record<string, number>> {
    try {
      return JSON.parse(await fs.readFile(this.jidFile(), 'utf8')) as Record<string, number>;
    } catch {
      return {};
    }
  }

  /** The jail's jid: kept from creation to deletion; the lowest free one unless the jail asks for one. */
  private assignJid(id: string, wanted: number, dryRun: boolean): Promise<number> {
    return this.jidLock.run('jids', async () => {
      const table = await this.jids();
      const taken = new Map(
        Object.entries(table)
          .filter(([k]) => k !== id)
          .map(([k, v]) => [v, k]),
      );
      let jid = wanted || table[id] || 0;
      if (wanted && taken.has(wanted)) throw alreadyExists('jid', `${wanted} (jail "${taken.get(wanted)}")`);
      if (!jid) for (jid = 1; taken.has(jid); jid++);
      if (!dryRun && table[id] !== jid) {
        table[id] = jid;
        await writeFileAtomic(this.jidFile(), JSON.stringify(table, null, 2) + '\n');
      }
      return jid;
    });
  }

  private releaseJid(id: string): Promise<void> {
    return this.jidLock.run('jids', async () => {
      const table = await this.jids();
      if (!(id in table)) return;
      delete table[id];
      await writeFileAtomic(this.jidFile(), JSON.stringify(table, null, 2) + '\n');
    });
  }

  // ---- Driver

  async validate(id: string, spec: ContainerSpec): Promise<void> {
    const plan = await planJail(spec);
    if (plan.ipPolicy && !this.ipfOk) throw missingFeature('shared-stack address filtering (cgroup BPF)', this.ipfReason);
    await this.inner.validate(id, this.translate(spec, plan));
    await this.assignJid(id, plan.options.jid, true);
  }

  async create(id: string, spec: ContainerSpec): Promise<void> {
    const plan = await planJail(spec);
    await this.inner.create(id, this.translate(spec, plan));
    await this.assignJid(id, plan.options.jid, false);
  }

  private runner(id: string, spec: ContainerSpec, stopping: boolean): CommandRunner {
    const o = spec.driverOptions?.$case === 'jail' ? spec.driverOptions.value : JailOptions.fromPartial({});
    return { jail: id, options: o, env: spec.process?.env ?? [], logger: this.logger, stopping };
  }

  /**
   * One process in the jail for exec.start/command/exec.stop: the helper's exec, like an API exec,
   * but with the jail's own stdio (its init's) instead of pipes to the daemon.
   */
  private spawner(id: string, initPid: number): JailSpawner {
    return (o) => {
      const caps = readFileSync(`/proc/${initPid}/status`, 'utf8').match(/^CapBnd:\s*([0-9a-f]+)/m)?.[1] ?? '0';
      const mask = BigInt(`0x${caps}`);
      const names = CAPABILITY_NAMES.filter((_, i) => (mask >> BigInt(i)) & 1n);
      const args = ['exec', '--pid', String(initPid)];
      for (const d of new ContainerCgroup(this.layout, id).dirs()) args.push('--cgroup', d);
      args.push('--caps', names.join(',') || 'none');
      for (const e of o.env) args.push('--env', e);
      if (o.user) args.push('--user', `${o.user.uid}:${o.user.gid}${o.user.additionalGids?.length ? ':' + o.user.additionalGids.join(',') : ''}`);
      args.push('--cwd', o.cwd || '/', ...(this.runs.get(id)?.execArgs ?? []), '--', ...o.args);
      const inPipe = readlinkSync(`/proc/${initPid}/fd/0`).startsWith('pipe:');
      const stdin = openSync(`/proc/${initPid}/fd/0`, inPipe ? 'w' : 'r');
      const stdout = openSync(`/proc/${initPid}/fd/1`, 'w');
      try {
        return spawn(this.helper, args, { stdio: [stdin, stdout, stdout] });
      } finally {
        closeSync(stdin);
        closeSync(stdout);
      }
    };
  }

  private consoleLog(id: string): string {
    return path.join(this.dir(id), 'monitor', 'console.log');
  }

  async start(id: string, spec: ContainerSpec, peerPids: Record<string, number>): Promise<RuntimeState> {
    const plan = await planJail(spec);
    await this.assignJid(id, plan.options.jid, false);
    const o = plan.options;
    const r = this.runner(id, spec, false);
    this.busy.add(id);
    this.pending.set(id, plan);
    const run: JailRun = { spec: ContainerSpec.toJSON(spec), aliases: [], execArgs: helperExecArgs(plan) };
    try {
      // jail(8)'s order: interface addresses, (mounts), exec.prestart, create, exec.created,
      // exec.start, command, exec.poststart. Any failure removes the jail again and runs no
      // further exec.* command.
      if (!plan.vnet) run.aliases = await addAddresses(plan.addresses);
      await this.writeRun(id, run);
      for (const c of o.execPrestart) await runHostCommand(r, 'exec.prestart', c);
      const rs = await this.inner.start(id, this.translate(spec, plan), peerPids);
      try {
        for (const c of o.execCreated) await runHostCommand(r, 'exec.created', c);
        for (const c of o.execStart) await runJailCommand(r, 'exec.start', c, rs.initPid, this.spawner(id, rs.initPid), this.consoleLog(id));
        if (o.command.length) await runJailCommand(r, 'command', o.command, rs.initPid, this.spawner(id, rs.initPid), this.consoleLog(id));
        else if (plan.imageCommand)
          await runJailCommand(r, 'command', plan.imageCommand.args, rs.initPid, this.spawner(id, rs.initPid), this.consoleLog(id), plan.imageCommand);
        for (const c of o.execPoststart) await runHostCommand(r, 'exec.poststart', c);
      } catch (e) {
        await this.inner.stop(id, 9, 0).catch(() => undefined);
        throw e;
      }
      // Set up: from now on a jail without persist ends with its last process.
      if (!plan.persist) this.signalInit(rs.initPid, 'SIGUSR1');
      return rs;
    } catch (e) {
      await this.dropRun(id, run);
      throw e;
    } finally {
      this.pending.delete(id);
      this.busy.delete(id);
    }
  }

  private signalInit(pid: number, sig: NodeJS.Signals): void {
    try {
      process.kill(pid, sig);
    } catch {
      // gone already
    }
  }

  async stop(id: string, signal: number, timeoutMs: number): Promise<RuntimeState> {
    const st = await this.inner.state(id);
    const run = this.runs.get(id) ?? (await this.readRun(id));
    const active = st.status === RuntimeStatus.RUNTIME_STATUS_RUNNING || st.status === RuntimeStatus.RUNTIME_STATUS_PAUSED;
    // SIGKILL without grace is "jail -R": remove without running the exec.* commands.
    if (!active || !run || (signal === 9 && timeoutMs === 0)) return this.inner.stop(id, signal, timeoutMs);
    const spec = ContainerSpec.fromJSON(run.spec);
    const o = spec.driverOptions?.$case === 'jail' ? spec.driverOptions.value : JailOptions.fromPartial({});
    const r = this.runner(id, spec, true);
    this.busy.add(id);
    try {
      if (st.status === RuntimeStatus.RUNTIME_STATUS_PAUSED) await this.inner.resume(id);
      // jail -r: exec.prestop, exec.stop, SIGTERM to every process and stop.timeout to exit,
      // removal (SIGKILL), exec.poststop, then the addresses come off the interface.
      for (const c of o.execPrestop) await runHostCommand(r, 'exec.prestop', c);
      for (const c of o.execStop) await runJailCommand(r, 'exec.stop', c, st.initPid, this.spawner(id, st.initPid), this.consoleLog(id));
      const rs = timeoutMs > 0 ? await this.inner.stop(id, signal || 15, timeoutMs) : await this.inner.stop(id, 9, 0);
      let message = rs.message;
      try {
        for (const c of o.execPoststop) await runHostCommand(r, 'exec.poststop', c);
      } catch (e) {
        // The jail is gone either way; say what failed.
        message = errorMessage(e).replace('the jail was not removed', 'the jail was removed');
        this.logger.warn({ container: id, err: message }, 'exec.poststop failed');
      }
      await this.dropRun(id, run);
      return { ...rs, message };
    } finally {
      this.busy.delete(id);
    }
  }

  async kill(id: string, signal: number): Promise<void> {
    // The init passes every signal on to all of the jail's processes.
    await this.inner.kill(id, signal);
  }

  async delete(id: string): Promise<void> {
    await this.inner.delete(id);
    await this.dropRun(id, this.runs.get(id) ?? (await this.readRun(id)));
    await this.releaseJid(id);
  }

  state(id: string): Promise<RuntimeState> {
    return this.inner.state(id);
  }

  wait(id: string): Promise<RuntimeState> {
    return this.inner.wait(id);
  }

  async recover(items: { id: string; spec: ContainerSpec }[]): Promise<Record<string, RuntimeState>> {
    for (const { id } of items) {
      const run = await this.readRun(id);
      if (run) this.runs.set(id, run);
    }
    const out = await this.inner.recover(items);
    for (const { id, spec } of items) {
      const rs = out[id];
      // A daemon that died between exec.poststart and the release left the jail held.
      if (rs?.status === RuntimeStatus.RUNTIME_STATUS_RUNNING && spec.driverOptions?.$case === 'jail' && !spec.driverOptions.value.persist)
        this.signalInit(rs.initPid, 'SIGUSR1');
    }
    return out;
  }

  pause(id: string): Promise<void> {
    return this.inner.pause(id);
  }

  resume(id: string): Promise<void> {
    return this.inner.resume(id);
  }

  exec(o: ExecOptions): Promise<ExecSession> {
    return this.inner.exec(o);
  }

  stats(id: string): Promise<ContainerStats> {
    return this.inner.stats(id);
  }

  checkpoint(id: string, imageDir: string, options: CheckpointOptions, parentImageDir: string): Promise<CheckpointResult> {
    return this.inner.checkpoint(id, imageDir, options, parentImageDir);
  }

  async restore(id: string, spec: ContainerSpec, imageDir: string, tcpEstablished: boolean, timeoutMs: number): Promise<RuntimeState> {
    const plan = await planJail(spec);
    await this.assignJid(id, plan.options.jid, false);
    this.busy.add(id);
    this.pending.set(id, plan);
    const run: JailRun = { spec: ContainerSpec.toJSON(spec), aliases: [], execArgs: helperExecArgs(plan) };
    try {
      // The restored sockets bind the jail's addresses again; the filter is attached (beforeLaunch)
      // before any restored process runs.
      if (!plan.vnet) run.aliases = await addAddresses(plan.addresses);
      await this.writeRun(id, run);
      // The init's persist state comes back with its memory.
      return await this.inner.restore(id, this.translate(spec, plan), imageDir, tcpEstablished, timeoutMs);
    } catch (e) {
      await this.dropRun(id, run);
      throw e;
    } finally {
      this.pending.delete(id);
      this.busy.delete(id);
    }
  }

  // ---- jls

  /** jls(8) rows for running jails: name and init pid from the manager, the rest from the driver. */
  async describe(running: { name: string; initPid: number }[]): Promise<Jail[]> {
    const table = await this.jids();
    const out: Jail[] = [];
    for (const { name, initPid } of running) {
      const run = this.runs.get(name) ?? (await this.readRun(name));
      if (!run) continue;
      const spec = ContainerSpec.fromJSON(run.spec);
      let plan: JailPlan;
      try {
        plan = await planJail(spec);
      } catch {
        continue;
      }
      const o = plan.options;
      let ip4 = plan.addresses.filter((a) => a.family === 4).map((a) => a.address);
      const ip6 = plan.addresses.filter((a) => a.family === 6).map((a) => a.address);
      if (plan.vnet) {
        const address = readRuntimeSync(this.dir(name))?.network.address;
        if (address) ip4 = [address.split('/')[0]!];
      }
      let hostname = os.hostname();
      if (plan.host === 'new') {
        hostname = await exec('nsenter', [`--uts=/proc/${initPid}/ns/uts`, '--', 'hostname'])
          .then((r) => r.stdout.trim())
          .catch(() => plan.hostname);
      }
      const root = o.path || (spec.rootfs?.source?.$case === 'path' ? spec.rootfs.source.value : path.join(this.dir(name), 'rootfs'));
      out.push({ jid: table[name] ?? 0, name, ip4Addr: ip4, ip6Addr: ip6, hostname, path: root, persist: plan.persist, vnet: plan.vnet, initPid });
    }
    return out.sort((a, b) => a.jid - b.jid);
  }

  /** JailService (jail.conf import, jls), and the template store's service the lxc driver underneath offers. */
  extensions(): DriverExtension[] {
    return [jailExtension(this), ...this.inner.extensions()];
  }

  async close(): Promise<void> {
    await (this.inner as Driver).close?.();
  }
}
