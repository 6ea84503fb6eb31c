// The vserver driver: Linux-VServer guests (security contexts) emulated on
// a stock kernel. It wraps the lxc driver (helper, monitor, cgroups, rootfs,
// exec, console) and translates a guest's VServerOptions into what that
// machinery understands: the host's network namespace (the VServer model
// is the shared stack), pid and mount namespaces behind pivot_root,
// node/domain name, a bounding set, rlimits and cgroup limits. Its own
// parts are the network context (host addresses and the cgroup BPF filter,
// in the lxc extension hooks), context ids, init styles and killseq.
import { execFileSync } from 'node:child_process';
import type { ImageStore } from '../../src/images/store';
import { promises as fs, readFileSync } from 'node:fs';
import * as path from 'node:path';
import type { Logger } from 'pino';
import { ContainerSpec, RlimitType, type CheckpointOptions, type ContainerStats, type Security } from '../../src/gen/osvirt/v1/container';
import { VServerInit_Style, type VServerOptions } from '../../src/gen/osvirt/v1/vserver';
import type { VServerStat } from '../../src/gen/osvirt/v1/vserver_service';
import {
  RuntimeStatus,
  type CheckpointResult,
  type ConsoleSession,
  type Driver,
  type DriverContext,
  type DriverInfo,
  type ExecOptions,
  type ExecSession,
  type RuntimeState,
  type StopOptions,
} from '../../src/core/driver';
import { writeFileAtomic } from '../../src/core/atomic-file';
import { errorMessage, invalidArgument, missingFeature, OsvirtError, wrongState } from '../../src/core/errors';
import { IpFilter, type IpFilterOptions } from '../common/ipfilter';
import { ContainerCgroup, detectLayout, type Layout } from '../lxc/cgroups';
import type { Templates } from '../lxc/templates';
import { LxcDriver } from '../lxc/driver';
import { securityArgs } from '../lxc/security';
import { linkExists, type BridgeConfig } from '../lxc/network';
import { helperPath } from '../../src/paths';
import { GuestTemplate, sysvInit, sysvStopArgs } from './guest-init';
import { addHostAddress, existingAddresses, hostAddresses, policyOf, removeHostAddress, whereIs, type HostAddress } from './network-context';
import {
  boundingSet,
  Ccap,
  ccapName,
  Cflag,
  initStyle,
  killSequence,
  limitPlan,
  mergeResources,
  mergeRlimits,
  optionsOf,
  rootOwnedNamespaces,
  seccompRules,
  validateOptions,
  type HelperFeatures,
  type LimitPlan,
} from './options';
import { processTotals } from './stat';
import { vserverExtension } from './service';
import type { DriverExtension } from '../../src/core/extension';

export interface VServerDriverOptions {
  bridge?: BridgeConfig | undefined;
  helper?: string | undefined;
  filter?: IpFilterOptions | undefined;
  templates?: Templates | undefined;
  /** The daemon's image store: a guest may boot from an image (its process runs as a plain init). */
  images?: ImageStore | undefined;
}

/** What the driver keeps per guest (<state>/guests/<name>.json). */
interface GuestRecord {
  id: string;
  context: number;
  /** The spec it was created or last started with (proto JSON). */
  spec: unknown;
  /** Addresses osvirt put on host interfaces for the running guest. */
  addresses: HostAddress[];
}

/** Helper names of the per-process rlimits (osvirt-helper --rlimit). */
const RLIMIT_HELPER_NAMES: Partial<Record<RlimitType, string>> = {
  [RlimitType.RLIMIT_TYPE_NOFILE]: 'nofile',
  [RlimitType.RLIMIT_TYPE_AS]: 'as',
  [RlimitType.RLIMIT_TYPE_MEMLOCK]: 'memlock',
  [RlimitType.RLIMIT_TYPE_LOCKS]: 'locks',
  [RlimitType.RLIMIT_TYPE_MSGQUEUE]: 'msgqueue',
};
/** How long the sysv stop command (rc 6) may run, like util-vserver's vshelper sync timeout. */
const STOP_COMMAND_TIMEOUT_MS = 30_000;
/** After a kill sequence that does not end in SIGKILL: how long before osvirt sends one. */
const FINAL_WAIT_MS = 5_000;

const SLEEP = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

function durationOf(ms: number): { seconds: bigint; nanos: number } {
  const s = Math.floor(ms / 1000);
  return { seconds: BigInt(s), nanos: Math.round((ms - s * 1000) * 1e6) };
}

export class VServerDriver implements Driver {
  readonly name = 'vserver';
  private readonly lxc: LxcDriver;
  private readonly filter: IpFilter;
  private stateDir = '';
  private logger!: Logger;
  private layout!: Layout;
  private template!: GuestTemplate;
  /** Context ids are handed out one create at a time. */
  private contextLock: Promise<unknown> = Promise.resolve();
  private helper: HelperFeatures = { rootOwnedNs: false, seccompDeny: false, noSysfs: false };

  constructor(private readonly opts: VServerDriverOptions = {}) {
    this.filter = new IpFilter(opts.filter);
    this.lxc = new LxcDriver({
      bridge: opts.bridge,
      helper: opts.helper,
      templates: opts.templates,
      images: opts.images,
      name: 'vserver',
      extension: {
        beforeLaunch: (id, spec, cg) => this.beforeLaunch(id, spec, cg),
        afterStop: (id) => this.afterStop(id),
        helperArgs: (_id, spec) => this.initArgs(optionsOf(spec)),
        execArgs: (id) => this.execArgs(id),
        // Guests live on the host's stack: their sockets come back there, after beforeLaunch re-created the addresses.
        checkpointHostNetwork: true,
      },
    });
  }

  async init(ctx: DriverContext): Promise<void> {
    this.stateDir = ctx.stateDir;
    this.logger = ctx.logger;
    // Every guest has a network context: without the filter there is no vserver driver.
    await IpFilter.requireAvailable(this.opts.filter);
    await this.lxc.init(ctx);
    this.layout = detectLayout();
    this.helper = this.probeHelper();
    this.template = new GuestTemplate(path.join(this.stateDir, 'guest-templates'));
    await fs.mkdir(this.guestsDir(), { recursive: true, mode: 0o700 });
    await this.cleanupStaleFilters().catch((e) => this.logger.warn({ err: errorMessage(e) }, 'cleaning up stale network contexts failed'));
  }

  async info(): Promise<DriverInfo> {
    const i = await this.lxc.info();
    const missing = [
      ...(this.helper.rootOwnedNs ? [] : ['ccapabilities set_utsname, secure_mount and secure_remount: osvirt-helper lacks --root-owned-ns']),
      ...(this.helper.seccompDeny ? [] : ['ccapabilities raw_icmp: osvirt-helper lacks --seccomp-deny']),
    ];
    // Without --no-sysfs a guest has the host's /sys bound in, which a restore cannot provide again.
    const checkpoint = i.capabilities.includes('checkpoint') && this.helper.noSysfs;
    if (i.capabilities.includes('checkpoint') && !checkpoint)
      missing.push("checkpoint: guests get the host's /sys bound in, which CRIU cannot restore; it needs osvirt-helper --no-sysfs");
    return { ...i, name: this.name, capabilities: i.capabilities.filter((c) => c !== 'checkpoint' || checkpoint), messages: [...i.messages, ...missing] };
  }

  /** Which optional helper features this osvirt-helper has (its usage text lists its options). */
  private probeHelper(): HelperFeatures {
    let usage = '';
    try {
      usage = execFileSync(this.opts.helper ?? helperPath(), ['--help'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    } catch (e) {
      usage = String((e as { stdout?: string }).stdout ?? '');
    }
    return { rootOwnedNs: usage.includes('--root-owned-ns'), seccompDeny: usage.includes('--seccomp-deny'), noSysfs: usage.includes('--no-sysfs') };
  }

  /**
   * osvirt-helper run options for the guest's init: no /sys (as under
   * util-vserver, and on the host's network stack a fresh sysfs is not
   * possible: it would be the host's, which CRIU cannot restore either),
   * root-owned namespaces and seccomp rules.
   */
  private initArgs(o: VServerOptions): string[] {
    const ns = rootOwnedNamespaces(o);
    return [
      ...(this.helper.noSysfs ? ['--no-sysfs'] : []),
      ...(ns.length ? ['--root-owned-ns', ns.join(',')] : []),
      ...seccompRules(o).flatMap((r) => ['--seccomp-deny', r]),
    ];
  }

  /** osvirt-helper exec options: what the init got that is per process (rlimits, seccomp rules). */
  private execArgs(id: string): string[] {
    let rec: GuestRecord;
    try {
      rec = JSON.parse(readFileSync(this.recordFile(id), 'utf8')) as GuestRecord;
    } catch {
      return [];
    }
    const o = optionsOf(this.specOf(rec));
    const out: string[] = [];
    for (const r of this.plan(o).rlimits) {
      const name = RLIMIT_HELPER_NAMES[r.type];
      if (name) out.push('--rlimit', r.unlimited ? `${name}:unlimited:unlimited` : `${name}:${r.soft}:${r.hard}`);
    }
    for (const r of seccompRules(o)) out.push('--seccomp-deny', r);
    return out;
  }

  // --- guest records -----------------------------------------------------

  private guestsDir(): string {
    return path.join(this.stateDir, 'guests');
  }

  private recordFile(id: string): string {
    return path.join(this.guestsDir(), `${id}.json`);
  }

  private async readRecord(id: string): Promise<GuestRecord | undefined> {
    try {
      return JSON.parse(await fs.readFile(this.recordFile(id), 'utf8')) as GuestRecord;
    } catch {
      return undefined;
    }
  }

  private async writeRecord(r: GuestRecord): Promise<void> {
    await writeFileAtomic(this.recordFile(r.id), JSON.stringify(r, null, 2) + '\n', 0o600);
  }

  private async records(): Promise<GuestRecord[]> {
    const out: GuestRecord[] = [];
    for (const f of await fs.readdir(this.guestsDir()).catch(() => [] as string[])) {
      if (!f.endsWith('.json')) continue;
      const r = await this.readRecord(f.slice(0, -5));
      if (r) out.push(r);
    }
    return out;
  }

  private specOf(r: GuestRecord): ContainerSpec {
    return ContainerSpec.fromJSON(r.spec);
  }

  /** The guest's spec and options as last recorded, or WRONG_STATE style errors. */
  private async guest(id: string): Promise<{ rec: GuestRecord; spec: ContainerSpec; o: VServerOptions }> {
    const rec = await this.readRecord(id);
    if (!rec) throw new OsvirtError('NOT_FOUND', 'CONTAINER_NOT_FOUND', `vserver guest "${id}" not found`, [], { container: id });
    const spec = this.specOf(rec);
    return { rec, spec, o: optionsOf(spec) };
  }

  private withContextLock<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.contextLock.then(fn, fn);
    this.contextLock = run.catch(() => undefined);
    return run;
  }

  private async checkContextFree(id: string, context: number): Promise<void> {
    const other = (await this.records()).find((r) => r.id !== id && r.context === context);
    if (other) {
      throw new OsvirtError(
        'ALREADY_EXISTS',
        'CONTEXT_IN_USE',
        `spec.vserver.context: context ${context} is used by vserver guest "${other.id}"; context ids are unique`,
        [{ field: 'spec.vserver.context', description: `used by "${other.id}"` }],
        { field: 'spec.vserver.context', container: other.id },
      );
    }
  }

  // --- translation to the lxc machinery ----------------------------------

  private ceiling(type: RlimitType): bigint | undefined {
    if (type !== RlimitType.RLIMIT_TYPE_NOFILE) return undefined;
    try {
      const v = readFileSync('/proc/sys/fs/nr_open', 'utf8').trim();
      return /^[1-9]\d*$/.test(v) ? BigInt(v) : 1048576n;
    } catch {
      return 1048576n;
    }
  }

  private plan(o: VServerOptions): LimitPlan {
    return limitPlan(o.rlimits, (t) => this.ceiling(t));
  }

  /**
   * The lxc hardening (spec.security: a seccomp deny list, masked paths)
   * minus what a context capability grants: syslog(2) for syslog, remounts
   * for secure_remount (the mounts the guest starts with stay locked).
   */
  private security(spec: ContainerSpec, o: VServerOptions): Security | undefined {
    const c = new Set(o.ccapabilities);
    const allow = (rule: string) =>
      (c.has(Ccap.CONTEXT_CAPABILITY_SYSLOG) && rule === 'syslog') || (c.has(Ccap.CONTEXT_CAPABILITY_SECURE_REMOUNT) && rule.startsWith('mount:'));
    if (spec.security?.seccompUnconfined) return spec.security;
    const args = securityArgs(undefined, { forExec: true });
    const defaults = args.filter((_, i) => args[i - 1] === '--seccomp-deny');
    if (!defaults.some(allow)) return spec.security;
    const base: Security = spec.security ?? {
      seccompUnconfined: false,
      seccompDeny: [],
      unmaskPaths: false,
      maskedPaths: [],
      readonlyPaths: [],
      privileged: false,
    };
    return { ...base, seccompUnconfined: true, seccompDeny: [...defaults.filter((r) => !allow(r)), ...base.seccompDeny] };
  }

  /** The spec the lxc machinery runs for this guest. */
  private async translate(id: string, spec: ContainerSpec): Promise<ContainerSpec> {
    const o = optionsOf(spec);
    const plan = this.plan(o);
    let rootfs = spec.rootfs;
    if (rootfs?.source?.$case === 'template') {
      if (rootfs.source.value !== 'busybox')
        throw invalidArgument('spec.rootfs.template', `unknown template "${rootfs.source.value}" (vserver guests know "busybox")`);
      rootfs = { ...rootfs, source: { $case: 'path', value: await this.template.ensure() }, copyOnWrite: true };
    }
    const p = spec.process;
    const runlevel = o.init?.runlevelStart ?? '';
    const sysv = initStyle(spec) === VServerInit_Style.STYLE_SYSV;
    const stub = sysvInit(runlevel || '3');
    const args = sysv ? stub.args : p?.args.length ? p.args : ['/sbin/init', ...(runlevel ? [runlevel] : [])];
    const env = [...(p?.env ?? []), ...(sysv ? [...stub.env, `RUNLEVEL=${runlevel || '3'}`, 'PREVLEVEL=N'] : [])];
    return ContainerSpec.fromPartial({
      ...spec,
      rootfs,
      process: { ...(p ?? {}), args, env, rlimits: mergeRlimits(p?.rlimits ?? [], plan) },
      hostname: o.uts?.nodename || spec.hostname || id,
      domainname: o.uts?.domainname || spec.domainname,
      resources: mergeResources(spec.resources, plan),
      network: { mode: { $case: 'host', value: {} } },
      capabilities: { dropAll: true, add: boundingSet(o), drop: [] },
      security: this.security(spec, o),
    });
  }

  // --- lifecycle -----------------------------------------------------------

  async validate(id: string, spec: ContainerSpec): Promise<void> {
    validateOptions(spec, this.layout.kind, this.helper);
    await this.checkContextFree(id, optionsOf(spec).context);
    await this.lxc.validate(id, await this.translate(id, spec));
  }

  async create(id: string, spec: ContainerSpec): Promise<void> {
    await this.withContextLock(async () => {
      await this.validate(id, spec);
      const translated = await this.translate(id, spec);
      await this.lxc.create(id, translated);
      try {
        await this.writeRecord({ id, context: optionsOf(spec).context, spec: ContainerSpec.toJSON(spec), addresses: [] });
      } catch (e) {
        await this.lxc.delete(id).catch(() => undefined);
        throw e;
      }
    });
  }

  async start(id: string, spec: ContainerSpec, peerPids: Record<string, number>): Promise<RuntimeState> {
    validateOptions(spec, this.layout.kind, this.helper);
    const translated = await this.translate(id, spec);
    const rec = await this.readRecord(id);
    await this.writeRecord({ id, context: optionsOf(spec).context, spec: ContainerSpec.toJSON(spec), addresses: rec?.addresses ?? [] });
    return this.lxc.start(id, translated, peerPids);
  }

  /** lxc extension: after the guest's cgroups exist, before its init runs. */
  private async beforeLaunch(id: string, spec: ContainerSpec, cg: ContainerCgroup): Promise<void> {
    const o = optionsOf(spec);
    const dir = cg.unifiedDir();
    if (!dir)
      throw missingFeature(
        'a cgroup2 hierarchy',
        "the network context is a cgroup BPF filter on the guest's cgroup2 directory; mount cgroup2 (at /sys/fs/cgroup/unified on a hybrid host)",
      );
    await this.applyMemory(cg, this.plan(o));
    for (const a of existingAddresses(o)) {
      if (!(await whereIs(a)))
        throw new OsvirtError(
          'FAILED_PRECONDITION',
          'ADDRESS_MISSING',
          `${a} is marked nodev (the host has it already), but no host interface has it; add it or remove nodev`,
          [],
          { container: id, address: a },
        );
    }
    const rec: GuestRecord = (await this.readRecord(id)) ?? { id, context: o.context, spec: ContainerSpec.toJSON(spec), addresses: [] };
    const owners = await this.records();
    for (const a of hostAddresses(o)) {
      if (!linkExists(a.dev))
        throw new OsvirtError(
          'FAILED_PRECONDITION',
          'HOST_INTERFACE_MISSING',
          `host interface "${a.dev}" for ${a.ip} does not exist; fix interfaces dev, or use nodev for an address the host has`,
          [],
          { container: id, interface: a.dev },
        );
      const where = await whereIs(a.ip);
      if (where) {
        const owner = owners.find((r) => r.id !== id && r.addresses.some((x) => x.ip === a.ip));
        throw new OsvirtError(
          'FAILED_PRECONDITION',
          'ADDRESS_IN_USE',
          `${a.ip} is already on host interface ${where}${owner ? ` (vserver guest "${owner.id}")` : ''}; give the guest another address, or mark it nodev to share one the host has`,
          [],
          { container: id, address: a.ip },
        );
      }
      // Recorded before it exists, so a crash in between still removes it.
      rec.addresses.push(a);
      await this.writeRecord(rec);
      await addHostAddress(a);
    }
    await this.filter.attach(dir, policyOf(o));
  }

  /** rss soft and min: the memory settings ContainerCgroup does not write. */
  private async applyMemory(cg: ContainerCgroup, plan: LimitPlan): Promise<void> {
    if (plan.memorySoftBytes === undefined && plan.memoryMinBytes === undefined) return;
    const dir = cg.layout.kind === 'v2' ? cg.unifiedDir() : cg.layout.v1['memory'] ? path.join(cg.layout.v1['memory'], 'osvirt', cg.name) : undefined;
    if (!dir) throw missingFeature('the memory cgroup controller', 'spec.vserver.rlimits.rss needs it');
    const v2 = cg.layout.kind === 'v2';
    if (plan.memorySoftBytes !== undefined) await fs.writeFile(path.join(dir, v2 ? 'memory.high' : 'memory.soft_limit_in_bytes'), String(plan.memorySoftBytes));
    if (plan.memoryMinBytes !== undefined) {
      if (!v2) throw missingFeature('memory.min (cgroup v2)', 'rlimits rss.min is a memory guarantee, which the v1 memory controller does not have');
      await fs.writeFile(path.join(dir, 'memory.min'), String(plan.memoryMinBytes));
    }
  }

  /** lxc extension: after a run ended and the guest's cgroups are gone (also after a failed start). */
  private async afterStop(id: string): Promise<void> {
    const rec = await this.readRecord(id);
    if (rec?.addresses.length) {
      for (const a of rec.addresses) {
        await removeHostAddress(a).catch((e) => this.logger.warn({ container: id, address: a.ip, err: errorMessage(e) }, 'removing a guest address failed'));
      }
      rec.addresses = [];
      await this.writeRecord(rec);
    }
    // The cgroup (and with it the attachment) is gone by now; this unpins programs nothing uses.
    const dir = new ContainerCgroup(this.layout, id).unifiedDir();
    if (dir) await this.filter.detach(dir).catch((e) => this.logger.warn({ container: id, err: errorMessage(e) }, 'detaching the network context failed'));
  }

  /** After a crash: filters left on cgroups of this driver's guests that have no process. */
  private async cleanupStaleFilters(): Promise<void> {
    const mine = new Set((await this.records()).map((r) => new ContainerCgroup(this.layout, r.id).unifiedDir()).filter((d): d is string => !!d));
    await this.filter.cleanupStale({
      isLive: (dir) => {
        if (!mine.has(dir)) return true; // another driver's: not ours to judge
        try {
          return /^populated 1$/m.test(readFileSync(path.join(dir, 'cgroup.events'), 'utf8'));
        } catch {
          return false;
        }
      },
    });
  }

  private cgroup(id: string): ContainerCgroup {
    return new ContainerCgroup(this.layout, id);
  }

  /** Send a signal to every process of the guest (util-vserver's killContext). */
  private async signalAll(id: string, signal: number): Promise<void> {
    for (const pid of await this.cgroup(id).pids()) {
      try {
        process.kill(pid, signal);
      } catch {
        // gone
      }
    }
  }

  /** Run a command in the guest and wait for it, at most `ms` or until the guest ends. */
  private async runInGuest(id: string, args: string[], env: string[], ms: number, ended: Promise<unknown>): Promise<void> {
    let s: ExecSession;
    try {
      s = await this.lxc.exec({ id, args, env, cwd: '/', tty: false });
    } catch (e) {
      this.logger.warn({ container: id, err: errorMessage(e) }, 'cannot run the stop command in the guest');
      return;
    }
    s.stdin.end();
    const log = (b: Buffer) => this.logger.debug({ container: id, output: b.toString() }, 'stop command output');
    s.stdout.on('data', log);
    s.stderr.on('data', log);
    const r = await Promise.race([s.exit, SLEEP(ms).then(() => 'timeout' as const), ended.then(() => 'ended' as const)]);
    if (r === 'timeout') {
      this.logger.warn({ container: id, args }, `the guest's stop command did not finish within ${ms} ms; going on with the kill sequence`);
      s.kill();
    }
  }

  /**
   * util-vserver's `vserver NAME stop`: the init style's stop command (sysv:
   * `rc 6` in the guest), then the kill sequence (default 15 5 9: SIGTERM
   * to every process, up to 5 s, SIGKILL). A StopContainer call that names
   * a timeout, or a signal other than the container's, replaces the
   * sequence by "signal timeout 9" for that call.
   */
  async stop(id: string, signal: number, timeoutMs: number, opts: StopOptions = {}): Promise<RuntimeState> {
    const g = await this.readRecord(id);
    const st = await this.lxc.state(id);
    const running = st.status === RuntimeStatus.RUNTIME_STATUS_RUNNING || st.status === RuntimeStatus.RUNTIME_STATUS_PAUSED;
    if (!g || !running || (signal === 9 && timeoutMs === 0)) return this.lxc.stop(id, signal, timeoutMs);
    const spec = this.specOf(g);
    const o = optionsOf(spec);
    const ownSequence = signal === (spec.stopSignal || 15) && !opts.timeoutGiven;
    const steps = ownSequence
      ? killSequence(o).map((s) => ({ signal: s.signal, waitMs: s.waitSeconds * 1000 }))
      : [
          { signal, waitMs: timeoutMs },
          { signal: 9, waitMs: 0 },
        ];

    const done = this.lxc.wait(id);
    let ended = false;
    void done.then(
      () => (ended = true),
      () => (ended = true),
    );
    await this.cgroup(id)
      .thaw()
      .catch(() => undefined);
    if (steps[0]?.signal !== 9 && initStyle(spec) === VServerInit_Style.STYLE_SYSV) {
      const level = o.init?.runlevelStop || '6';
      await this.runInGuest(id, sysvStopArgs(level), [`RUNLEVEL=${level}`, `PREVLEVEL=${o.init?.runlevelStart || '3'}`], STOP_COMMAND_TIMEOUT_MS, done);
    }
    for (const [i, step] of steps.entries()) {
      if (ended) break;
      await this.signalAll(id, step.signal);
      const wait = i === steps.length - 1 ? FINAL_WAIT_MS : step.waitMs;
      await Promise.race([done, SLEEP(wait)]);
    }
    if (!ended) {
      this.logger.warn({ container: id }, 'the guest outlived its kill sequence; sending SIGKILL');
      return this.lxc.stop(id, 9, 0);
    }
    return done;
  }

  async kill(id: string, signal: number): Promise<void> {
    return this.lxc.kill(id, signal);
  }

  async delete(id: string): Promise<void> {
    await this.lxc.delete(id);
    await fs.rm(this.recordFile(id), { force: true });
  }

  state(id: string): Promise<RuntimeState> {
    return this.lxc.state(id);
  }

  wait(id: string): Promise<RuntimeState> {
    return this.lxc.wait(id);
  }

  recover(items: { id: string; spec: ContainerSpec }[]): Promise<Record<string, RuntimeState>> {
    return this.lxc.recover(items);
  }

  pause(id: string): Promise<void> {
    return this.lxc.pause(id);
  }

  resume(id: string): Promise<void> {
    return this.lxc.resume(id);
  }

  /** flags `private`: nobody may enter the guest's context. */
  async exec(opts: ExecOptions): Promise<ExecSession> {
    const g = await this.readRecord(opts.id);
    if (g && optionsOf(this.specOf(g)).flags.includes(Cflag.CONTEXT_FLAG_PRIVATE)) {
      throw new OsvirtError('FAILED_PRECONDITION', 'GUEST_PRIVATE', `vserver guest "${opts.id}" has the context flag "private": no process may enter it`, [], {
        container: opts.id,
      });
    }
    return this.lxc.exec(opts);
  }

  console(id: string): Promise<ConsoleSession> {
    return this.lxc.console(id);
  }

  /** The cgroup's figures; interfaces are the host interfaces the guest has addresses on (shared counters). */
  async stats(id: string): Promise<ContainerStats> {
    const s = await this.lxc.stats(id);
    const g = await this.readRecord(id);
    const devs = new Set(g ? hostAddresses(optionsOf(this.specOf(g))).map((a) => a.dev) : []);
    return { ...s, interfaces: s.interfaces.filter((i) => devs.has(i.name)) };
  }

  /** One vserver-stat row for a running or paused guest. */
  async contextStat(id: string): Promise<VServerStat> {
    const { o } = await this.guest(id);
    const st = await this.lxc.state(id);
    if (st.status !== RuntimeStatus.RUNTIME_STATUS_RUNNING && st.status !== RuntimeStatus.RUNTIME_STATUS_PAUSED)
      throw wrongState(id, RuntimeStatus[st.status].replace('RUNTIME_STATUS_', ''), 'running');
    const s = await this.lxc.stats(id);
    const totals = await processTotals(await this.cgroup(id).pids());
    const start = st.startTime ?? new Date();
    return {
      context: o.context,
      name: o.contextName || id,
      container: id,
      processCount: totals.count,
      virtualMemoryBytes: BigInt(totals.vszBytes),
      residentMemoryBytes: BigInt(totals.rssBytes),
      userTime: durationOf(Number(s.cpuUserNs) / 1e6),
      systemTime: durationOf(Number(s.cpuSystemNs) / 1e6),
      uptime: durationOf(Math.max(0, Date.now() - start.getTime())),
      startTime: start,
    };
  }

  /**
   * CRIU checkpoint through the lxc checkpointer, on the host's stack: the
   * guest's sockets are dumped as they are; its addresses and network context
   * are host state, re-created by beforeLaunch when it is restored.
   */
  async checkpoint(id: string, imageDir: string, options: CheckpointOptions, parentImageDir: string): Promise<CheckpointResult> {
    const { o } = await this.guest(id);
    const owned = rootOwnedNamespaces(o);
    if (owned.length) {
      throw new OsvirtError(
        'FAILED_PRECONDITION',
        'CHECKPOINT_UNSUPPORTED',
        `vserver guest "${id}" has ${owned.join(' and ')} namespaces owned by a user namespace of their own (ccapabilities ${o.ccapabilities.map(ccapName).join(', ')}), which osvirt does not checkpoint`,
        [],
        { container: id },
      );
    }
    return this.lxc.checkpoint(id, imageDir, options, parentImageDir);
  }

  async restore(id: string, spec: ContainerSpec, imageDir: string, tcpEstablished: boolean, timeoutMs: number): Promise<RuntimeState> {
    validateOptions(spec, this.layout.kind, this.helper);
    const translated = await this.translate(id, spec);
    const rec = await this.readRecord(id);
    await this.writeRecord({ id, context: optionsOf(spec).context, spec: ContainerSpec.toJSON(spec), addresses: rec?.addresses ?? [] });
    try {
      return await this.lxc.restore(id, translated, imageDir, tcpEstablished, timeoutMs);
    } catch (e) {
      // The lxc restore undoes its own host state, not the extension's (addresses, filter).
      await this.afterStop(id).catch(() => undefined);
      throw e;
    }
  }

  /** VServerService (configuration directories, vserver-stat), and the template store's service the lxc driver underneath offers. */
  extensions(): DriverExtension[] {
    return [vserverExtension(this), ...this.lxc.extensions()];
  }
}
