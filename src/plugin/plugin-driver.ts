// A supervised out-of-process driver. For a plugin the daemon starts itself:
// spawn it, read its handshake line, check the protocol version, wait for
// the gRPC health service, then GetInfo. For a plugin at a socket: health,
// then GetInfo. Afterwards a health check runs every second; a plugin that
// exits or stops answering is reported UNAVAILABLE (the registry then
// answers UNAVAILABLE and the manager marks its containers UNKNOWN), a
// started plugin is killed if hung and restarted with exponential backoff,
// and once it is back the registry hears READY and the manager calls Recover.
import { spawn, type ChildProcess } from 'node:child_process';
import * as path from 'node:path';
import * as readline from 'node:readline';
import { credentials, makeGenericClientConstructor, type Client, type ServiceError } from '@grpc/grpc-js';
import { service as healthService } from 'grpc-health-check';
import type { Logger } from 'pino';
import type { ContainerSpec, ContainerStats, CheckpointOptions } from '../gen/osvirt/v1/container';
import type { CheckpointResult, ConsoleSession, DriverContext, DriverInfo, ExecOptions, ExecSession, RuntimeState, StopOptions } from '../core/driver';
import { errorMessage, OsvirtError } from '../core/errors';
import { checkProtocolVersion, SUPPORTED_DRIVER_PROTOCOLS, type HealthReport, type SupervisedDriver } from '../core/registry';
import { DRIVER_SERVICE } from './driver-server';
import { parseHandshake, PLUGIN_ENV } from './handshake';
import { DEFAULT_TIMEOUTS, RemoteDriver, unixTarget, type RemoteTimeouts } from './remote-driver';
import { proxyExtensions } from './extension-proxy';
import type { DriverExtension } from '../core/extension';

export interface PluginConfig {
  name: string;
  /** Where it was configured, for messages: a manifest path or "--driver". */
  source: string;
  /** Start this program (absolute path) ... */
  executable?: string;
  args?: string[];
  env?: Record<string, string>;
  cwd?: string;
  /** ... or connect to this socket (unix:///path), served by someone else. */
  socket?: string;
}

export interface SupervisorOptions {
  handshakeTimeoutMs: number;
  /** How long a freshly started plugin may take to answer health checks. */
  startTimeoutMs: number;
  healthIntervalMs: number;
  healthTimeoutMs: number;
  /** Consecutive failed health checks before the plugin counts as hung. */
  healthFailures: number;
  restartMinMs: number;
  restartMaxMs: number;
  /** SIGTERM, then SIGKILL after this long, when the daemon shuts down. */
  stopGraceMs: number;
  timeouts: RemoteTimeouts;
}

export const DEFAULT_SUPERVISOR: SupervisorOptions = {
  handshakeTimeoutMs: 15_000,
  startTimeoutMs: 10_000,
  healthIntervalMs: 1000,
  healthTimeoutMs: 2000,
  healthFailures: 3,
  restartMinMs: 250,
  restartMaxMs: 30_000,
  stopGraceMs: 3000,
  timeouts: DEFAULT_TIMEOUTS,
};

/** A failure that restarting will not fix (incompatible protocol). */
class PermanentError extends Error {}

type HealthClient = Client & { check(req: { service: string }, opts: object, cb: (e: ServiceError | null, r?: { status: string | number }) => void): void };
const HealthClientCtor = makeGenericClientConstructor(healthService, 'Health') as unknown as new (
  target: string,
  creds: ReturnType<typeof credentials.createInsecure>,
) => HealthClient;

const SLEEP = (ms: number) => new Promise((r) => setTimeout(r, ms));

export class PluginDriver implements SupervisedDriver {
  readonly external = true;
  readonly name: string;
  private readonly o: SupervisorOptions;
  private logger?: Logger;
  private stateDir = '';
  private remote?: RemoteDriver;
  private health?: HealthClient;
  private child?: ChildProcess;
  private info_?: DriverInfo;
  private listener?: (r: HealthReport) => void;
  private settled = false;
  private closed = false;
  private permanent = false;
  private ready = false;
  private connecting = false;
  private checking = false;
  private failures = 0;
  private backoff: number;
  private readySince = 0;
  private tick?: NodeJS.Timeout;
  private restartTimer?: NodeJS.Timeout;
  private restartPending = false;
  private stderrTail: string[] = [];

  constructor(
    private readonly cfg: PluginConfig,
    opts: Partial<SupervisorOptions> = {},
  ) {
    this.name = cfg.name;
    this.o = { ...DEFAULT_SUPERVISOR, ...opts };
    this.backoff = this.o.restartMinMs;
    if (!!cfg.executable === !!cfg.socket) throw new Error(`plugin "${cfg.name}" (${cfg.source}): give either an executable or a socket`);
  }

  onHealth(listener: (r: HealthReport) => void): void {
    this.listener = listener;
  }

  private report(r: HealthReport): void {
    if (this.settled && !this.closed) this.listener?.(r);
  }

  async init(ctx: DriverContext): Promise<void> {
    this.stateDir = ctx.stateDir;
    this.logger = ctx.logger;
    try {
      await this.connect();
    } catch (e) {
      if (!this.permanent) this.afterFailure(errorMessage(e));
      throw e;
    } finally {
      this.settled = true;
      this.tick = setInterval(() => void this.onTick(), this.o.healthIntervalMs);
      this.tick.unref();
    }
  }

  async info(): Promise<DriverInfo> {
    if (!this.info_) throw this.unavailable();
    return this.info_;
  }

  /** The API services the plugin declared, forwarded to whichever process serves it now. */
  extensions(): DriverExtension[] {
    return proxyExtensions(this.name, this.info_?.extensions ?? [], () => this.r().client, this.logger);
  }

  private unavailable(): OsvirtError {
    return new OsvirtError('UNAVAILABLE', 'DRIVER_UNAVAILABLE', `plugin "${this.name}" is not connected`, [], { driver: this.name });
  }

  private r(): RemoteDriver {
    if (!this.remote || !this.ready) throw this.unavailable();
    return this.remote;
  }

  /** Start (or reach) the plugin and check it; on success it is READY. */
  private async connect(): Promise<void> {
    this.connecting = true;
    try {
      let address: string;
      let handshakeVersion: number | undefined;
      if (this.cfg.executable) {
        const hs = await this.launch();
        address = hs.address;
        handshakeVersion = hs.protocolVersion;
      } else {
        address = this.cfg.socket!;
      }
      const target = unixTarget(address);
      const remote = new RemoteDriver(this.name, target, this.o.timeouts);
      const health = new HealthClientCtor(target, credentials.createInsecure());
      try {
        await this.waitHealthy(health, this.cfg.executable ? this.o.startTimeoutMs : this.o.healthTimeoutMs);
        const info = await remote.info();
        try {
          checkProtocolVersion(this.name, info.protocolVersion);
        } catch (e) {
          throw new PermanentError(errorMessage(e));
        }
        if (handshakeVersion !== undefined && handshakeVersion !== info.protocolVersion) {
          throw new PermanentError(
            `plugin "${this.name}" announced driver protocol ${handshakeVersion} in its handshake but GetInfo says ${info.protocolVersion}`,
          );
        }
        this.remote?.client.close();
        this.health?.close();
        this.remote = remote;
        this.health = health;
        this.info_ = info;
      } catch (e) {
        remote.client.close();
        health.close();
        throw e;
      }
      this.ready = true;
      this.failures = 0;
      this.readySince = Date.now();
      this.logger?.info({ plugin: this.name, address, version: this.info_.version }, 'plugin ready');
    } catch (e) {
      if (e instanceof PermanentError) {
        this.permanent = true;
        this.killChild('SIGKILL');
        throw new OsvirtError('FAILED_PRECONDITION', 'DRIVER_PROTOCOL_MISMATCH', e.message, [], { driver: this.name });
      }
      this.killChild('SIGKILL');
      throw e;
    } finally {
      this.connecting = false;
    }
  }

  private async waitHealthy(health: HealthClient, withinMs: number): Promise<void> {
    const end = Date.now() + withinMs;
    let last = '';
    for (;;) {
      try {
        await this.check(health);
        return;
      } catch (e) {
        last = errorMessage(e);
      }
      if (Date.now() > end) throw new Error(`plugin "${this.name}" does not answer grpc.health.v1 checks for ${DRIVER_SERVICE}: ${last}`);
      if (this.cfg.executable && !this.child) throw new Error(`plugin "${this.name}" exited during startup${this.tail()}`);
      await SLEEP(100);
    }
  }

  private check(health: HealthClient): Promise<void> {
    return new Promise((resolve, reject) =>
      health.check({ service: DRIVER_SERVICE }, { deadline: Date.now() + this.o.healthTimeoutMs }, (e, r) => {
        if (e) return reject(new Error(e.details || e.message));
        if (r?.status !== 'SERVING' && r?.status !== 1) return reject(new Error(`health status ${String(r?.status)}`));
        resolve();
      }),
    );
  }

  private tail(): string {
    return this.stderrTail.length ? `; its last words: ${this.stderrTail.slice(-3).join(' | ')}` : '';
  }

  private suggestedSocket(): string {
    const p = path.join(this.stateDir, 'plugin.sock');
    // sun_path holds 107 bytes; let the plugin choose if ours would not fit.
    return p.length < 100 ? p : '';
  }

  /** Spawn the plugin and read its handshake line. */
  private launch(): Promise<{ address: string; protocolVersion: number }> {
    this.stderrTail = [];
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      ...this.cfg.env,
      [PLUGIN_ENV.stateDir]: this.stateDir,
      [PLUGIN_ENV.protocolVersions]: SUPPORTED_DRIVER_PROTOCOLS.join(','),
      [PLUGIN_ENV.lifeline]: 'stdin',
    };
    const sock = this.suggestedSocket();
    if (sock) env[PLUGIN_ENV.socket] = sock;
    else delete env[PLUGIN_ENV.socket];
    const child = spawn(this.cfg.executable!, this.cfg.args ?? [], { cwd: this.cfg.cwd, env, stdio: ['pipe', 'pipe', 'pipe'] });
    this.child = child;
    // Never written: it is the plugin's lifeline (EOF when this daemon dies).
    child.stdin!.on('error', () => undefined);
    readline.createInterface({ input: child.stderr! }).on('line', (line) => {
      this.stderrTail.push(line.length > 300 ? `${line.slice(0, 300)}...` : line);
      if (this.stderrTail.length > 20) this.stderrTail.shift();
      this.logger?.info({ plugin: this.name, pid: child.pid, stderr: line }, 'plugin log');
    });
    const out = readline.createInterface({ input: child.stdout! });
    return new Promise((resolve, reject) => {
      let got = false;
      const fail = (msg: string) => {
        if (got) return;
        got = true;
        clearTimeout(timer);
        reject(new Error(msg));
      };
      const timer = setTimeout(
        () => fail(`plugin "${this.name}" printed no handshake line within ${this.o.handshakeTimeoutMs} ms${this.tail()}`),
        this.o.handshakeTimeoutMs,
      );
      out.on('line', (line) => {
        if (got) return void this.logger?.info({ plugin: this.name, stdout: line }, 'plugin output');
        got = true;
        clearTimeout(timer);
        try {
          const hs = parseHandshake(line);
          try {
            checkProtocolVersion(this.name, hs.protocolVersion);
          } catch (e) {
            return reject(new PermanentError(errorMessage(e)));
          }
          resolve({ address: hs.address, protocolVersion: hs.protocolVersion });
        } catch (e) {
          reject(new PermanentError(`plugin "${this.name}" (${this.cfg.source}): ${errorMessage(e)}`));
        }
      });
      child.once('error', (e) => fail(`cannot start plugin "${this.name}" (${this.cfg.executable}): ${e.message}`));
      child.once('exit', (code, signal) => {
        // Let the stderr reader drain first so the message carries the plugin's last words.
        setImmediate(() => fail(`plugin "${this.name}" exited (${signal ?? `code ${code}`}) before its handshake${this.tail()}`));
        this.onChildExit(child, code, signal);
      });
    });
  }

  private onChildExit(child: ChildProcess, code: number | null, signal: NodeJS.Signals | null): void {
    if (this.child !== child) return;
    this.child = undefined;
    if (this.closed || this.permanent || this.connecting) return;
    const what = `plugin process ${child.pid} exited (${signal ?? `code ${code}`})`;
    this.logger?.error({ plugin: this.name }, `${what}; its containers show UNKNOWN until it is back`);
    this.afterFailure(what);
  }

  /** Mark unavailable and, for a plugin we start, schedule a restart with backoff. */
  private afterFailure(why: string): void {
    if (this.closed || this.permanent) return;
    this.ready = false;
    if (this.readySince && Date.now() - this.readySince > 10_000) this.backoff = this.o.restartMinMs;
    this.readySince = 0;
    if (!this.cfg.executable) {
      this.report({ health: 'unavailable', message: `${why}; reconnecting` });
      return;
    }
    if (this.restartPending) return;
    this.restartPending = true;
    const delay = this.backoff;
    this.backoff = Math.min(this.backoff * 2, this.o.restartMaxMs);
    this.report({ health: 'unavailable', message: `${why}; restarting it in ${delay} ms` });
    this.restartTimer = setTimeout(() => void this.restart(), delay);
    this.restartTimer.unref();
  }

  private async restart(): Promise<void> {
    this.restartPending = false;
    if (this.closed || this.permanent || this.connecting || this.ready) return;
    try {
      await this.connect();
      this.report({ health: 'ready', info: this.info_! });
    } catch (e) {
      if (this.permanent) this.report({ health: 'failed', message: errorMessage(e) });
      else this.afterFailure(errorMessage(e));
    }
  }

  private async onTick(): Promise<void> {
    if (this.closed || this.permanent || this.connecting || this.checking) return;
    if (!this.ready) {
      // A plugin at a socket comes back on its own: keep trying.
      if (!this.cfg.executable) {
        try {
          await this.connect();
          this.report({ health: 'ready', info: this.info_! });
        } catch {
          // still away
        }
      }
      return;
    }
    this.checking = true;
    try {
      await this.check(this.health!);
      this.failures = 0;
    } catch (e) {
      this.failures++;
      if (this.failures >= this.o.healthFailures && this.ready) {
        const why = `plugin does not answer health checks (${errorMessage(e)})`;
        this.logger?.error({ plugin: this.name }, `${why}; treating it as hung`);
        if (this.child) {
          // Its exit handler reports and restarts it.
          this.ready = false;
          this.report({ health: 'unavailable', message: `${why}; killing it` });
          this.killChild('SIGKILL');
        } else {
          this.afterFailure(why);
        }
      }
    } finally {
      this.checking = false;
    }
  }

  private killChild(sig: NodeJS.Signals): void {
    const c = this.child;
    if (c && c.exitCode === null && c.signalCode === null) c.kill(sig);
  }

  /** The daemon shuts down: stop the plugin we started; containers keep running. */
  async close(): Promise<void> {
    this.closed = true;
    this.ready = false;
    clearInterval(this.tick);
    clearTimeout(this.restartTimer);
    this.remote?.client.close();
    this.health?.close();
    const c = this.child;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => c.once('exit', () => resolve()));
    c.kill('SIGTERM');
    const t = await Promise.race([exited.then(() => true), SLEEP(this.o.stopGraceMs).then(() => false)]);
    if (!t) {
      c.kill('SIGKILL');
      await exited;
    }
  }

  // The Driver methods: forwarded to the plugin while it is connected.
  validate(id: string, spec: ContainerSpec): Promise<void> {
    return this.r().validate(id, spec);
  }
  create(id: string, spec: ContainerSpec): Promise<void> {
    return this.r().create(id, spec);
  }
  start(id: string, spec: ContainerSpec, peerPids: Record<string, number>): Promise<RuntimeState> {
    return this.r().start(id, spec, peerPids);
  }
  stop(id: string, signal: number, timeoutMs: number, opts?: StopOptions): Promise<RuntimeState> {
    return this.r().stop(id, signal, timeoutMs, opts);
  }
  kill(id: string, signal: number): Promise<void> {
    return this.r().kill(id, signal);
  }
  delete(id: string): Promise<void> {
    return this.r().delete(id);
  }
  state(id: string): Promise<RuntimeState> {
    return this.r().state(id);
  }
  wait(id: string): Promise<RuntimeState> {
    return this.r().wait(id);
  }
  recover(items: { id: string; spec: ContainerSpec }[]): Promise<Record<string, RuntimeState>> {
    return this.r().recover(items);
  }
  dependencies(id: string, spec: ContainerSpec): Promise<string[]> {
    return this.r().dependencies(id, spec);
  }
  pause(id: string): Promise<void> {
    return this.r().pause(id);
  }
  resume(id: string): Promise<void> {
    return this.r().resume(id);
  }
  exec(o: ExecOptions): Promise<ExecSession> {
    return this.r().exec(o);
  }
  console(id: string): Promise<ConsoleSession> {
    return this.r().console(id);
  }
  stats(id: string): Promise<ContainerStats> {
    return this.r().stats(id);
  }
  checkpoint(id: string, imageDir: string, options: CheckpointOptions, parentImageDir: string): Promise<CheckpointResult> {
    return this.r().checkpoint(id, imageDir, options, parentImageDir);
  }
  restore(id: string, spec: ContainerSpec, imageDir: string, tcpEstablished: boolean, timeoutMs: number): Promise<RuntimeState> {
    return this.r().restore(id, spec, imageDir, tcpEstablished, timeoutMs);
  }
}

/** A plugin whose configuration is broken: listed as FAILED with the reason. */
export class MisconfiguredPlugin {
  readonly external = true;
  constructor(
    readonly name: string,
    private readonly message: string,
  ) {}
  onHealth(): void {}
  async init(): Promise<void> {
    throw new Error(this.message);
  }
  info(): Promise<DriverInfo> {
    return Promise.reject(new Error(this.message));
  }
  private fail(): Promise<never> {
    return Promise.reject(new OsvirtError('FAILED_PRECONDITION', 'DRIVER_NOT_READY', this.message));
  }
  validate = () => this.fail();
  create = () => this.fail();
  start = () => this.fail();
  stop = () => this.fail();
  kill = () => this.fail();
  delete = () => this.fail();
  state = () => this.fail();
  wait = () => this.fail();
  recover = () => this.fail();
}
