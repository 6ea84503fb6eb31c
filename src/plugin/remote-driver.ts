// The daemon side of an out-of-process driver: a gRPC client of
// osvirt.driver.v1.DriverService behind the TypeScript Driver interface, so
// the core drives a plugin exactly like a built-in driver. Exec and Console
// streams become ExecSession / ConsoleSession.
import { PassThrough, Writable } from 'node:stream';
import { credentials, Metadata, type ClientDuplexStream, type ServiceError } from '@grpc/grpc-js';
import type { ContainerSpec, ContainerStats, CheckpointOptions, ExecExit } from '../gen/osvirt/v1/container';
import {
  DriverServiceClient,
  type ConsoleRequest,
  type ConsoleResponse,
  type ExecRequest,
  type ExecResponse,
  type ExtensionService,
  type GetInfoResponse,
} from '../gen/osvirt/driver/v1/driver';
import type { DriverExtension } from '../core/extension';
import { proxyExtensions } from './extension-proxy';
import type { CheckpointResult, ConsoleSession, Driver, DriverContext, ExecOptions, ExecSession, RuntimeState, StopOptions } from '../core/driver';
import { RuntimeStatus } from '../core/driver';
import { OsvirtError } from '../core/errors';
import { fromServiceError } from './wire-errors';

/** Deadlines: a hung plugin must not hang the daemon's callers forever. */
export interface RemoteTimeouts {
  /** GetInfo, State, Kill, Pause, Resume, Stats, Recover. */
  quickMs: number;
  /** Validate, Create, Start, Delete, Checkpoint, Restore (may build a template, dump memory...). */
  slowMs: number;
  /** Added to the stop timeout the caller gave. */
  stopGraceMs: number;
  /** Until an Exec/Console stream says it is running. */
  streamStartMs: number;
}

export const DEFAULT_TIMEOUTS: RemoteTimeouts = { quickMs: 15_000, slowMs: 120_000, stopGraceMs: 30_000, streamStartMs: 30_000 };

const MAX_CHUNK = 64 * 1024;

/** Parse unix:///abs/path (or a bare absolute path) into a grpc-js target. */
export function unixTarget(endpoint: string): string {
  const p = endpoint.startsWith('unix://') ? endpoint.slice('unix://'.length) : endpoint;
  if (!p.startsWith('/')) throw new Error(`endpoint "${endpoint}": expected unix:///absolute/path/to/driver.sock`);
  return `unix://${p}`;
}

const STOPPED: RuntimeState = { status: RuntimeStatus.RUNTIME_STATUS_STOPPED, initPid: 0, exitCode: 0, signal: 0, message: '' };

export class RemoteDriver implements Driver {
  readonly client: DriverServiceClient;
  private declared: ExtensionService[] = [];

  constructor(
    readonly name: string,
    readonly endpoint: string,
    private readonly timeouts: RemoteTimeouts = DEFAULT_TIMEOUTS,
  ) {
    this.client = new DriverServiceClient(unixTarget(endpoint), credentials.createInsecure(), {
      'grpc.max_receive_message_length': 64 * 1024 * 1024,
      // A unix socket that came back should be retried at once, not after a long backoff.
      'grpc.initial_reconnect_backoff_ms': 100,
      'grpc.max_reconnect_backoff_ms': 1000,
    });
  }

  /** One unary call with a deadline, errors translated to OsvirtError. */
  private call<Req, Res>(method: string, req: Req, timeoutMs: number | undefined): Promise<Res> {
    const fn = (this.client as unknown as Record<string, (r: Req, md: Metadata, o: object, cb: (e: ServiceError | null, r: Res) => void) => unknown>)[method];
    if (!fn) throw new Error(`no such DriverService method ${method}`);
    const opts = timeoutMs === undefined ? {} : { deadline: Date.now() + timeoutMs };
    return new Promise<Res>((resolve, reject) => {
      fn.call(this.client, req, new Metadata(), opts, (e, r) => (e ? reject(fromServiceError(this.name, method, e)) : resolve(r)));
    });
  }

  async init(_ctx: DriverContext): Promise<void> {
    await this.info();
  }

  async info(): Promise<GetInfoResponse> {
    const info = await this.call<object, GetInfoResponse>('getInfo', {}, this.timeouts.quickMs);
    this.declared = info.extensions;
    return info;
  }

  /** The API services the plugin declared in its last GetInfo, forwarded to it. */
  extensions(): DriverExtension[] {
    return proxyExtensions(this.name, this.declared, () => this.client);
  }

  async validate(id: string, spec: ContainerSpec): Promise<void> {
    await this.call('validate', { id, spec }, this.timeouts.slowMs);
  }

  async create(id: string, spec: ContainerSpec): Promise<void> {
    await this.call('create', { id, spec }, this.timeouts.slowMs);
  }

  async start(id: string, spec: ContainerSpec, peerPids: Record<string, number>): Promise<RuntimeState> {
    const r = await this.call<object, { state?: RuntimeState }>('start', { id, spec, peerPids }, this.timeouts.slowMs);
    return r.state ?? STOPPED;
  }

  async stop(id: string, signal: number, timeoutMs: number, opts: StopOptions = {}): Promise<RuntimeState> {
    const r = await this.call<object, { state?: RuntimeState }>(
      'stop',
      { id, signal, timeoutMs, timeoutGiven: !!opts.timeoutGiven },
      timeoutMs + this.timeouts.stopGraceMs,
    );
    return r.state ?? STOPPED;
  }

  async kill(id: string, signal: number): Promise<void> {
    await this.call('kill', { id, signal }, this.timeouts.quickMs);
  }

  async pause(id: string): Promise<void> {
    await this.call('pause', { id }, this.timeouts.quickMs);
  }

  async resume(id: string): Promise<void> {
    await this.call('resume', { id }, this.timeouts.quickMs);
  }

  async delete(id: string): Promise<void> {
    await this.call('delete', { id }, this.timeouts.slowMs);
  }

  async state(id: string): Promise<RuntimeState> {
    const r = await this.call<object, { state?: RuntimeState }>('state', { id }, this.timeouts.quickMs);
    return r.state ?? STOPPED;
  }

  /** No deadline: it returns when the init exits. A dead plugin fails it with UNAVAILABLE. */
  async wait(id: string): Promise<RuntimeState> {
    const r = await this.call<object, { state?: RuntimeState }>('wait', { id }, undefined);
    return r.state ?? STOPPED;
  }

  async recover(items: { id: string; spec: ContainerSpec }[]): Promise<Record<string, RuntimeState>> {
    const r = await this.call<object, { states: Record<string, RuntimeState> }>('recover', { containers: items }, this.timeouts.slowMs);
    return r.states;
  }

  /** A plugin older than this RPC answers UNIMPLEMENTED: it has no dependencies to declare. */
  async dependencies(id: string, spec: ContainerSpec): Promise<string[]> {
    try {
      return (await this.call<object, { containers: string[] }>('dependencies', { id, spec }, this.timeouts.quickMs)).containers;
    } catch (e) {
      if (e instanceof OsvirtError && e.code === 'UNIMPLEMENTED') return [];
      throw e;
    }
  }

  async stats(id: string): Promise<ContainerStats> {
    const r = await this.call<object, { stats?: ContainerStats }>('stats', { id }, this.timeouts.quickMs);
    if (!r.stats) throw new OsvirtError('INTERNAL', 'DRIVER_INTERNAL', `driver "${this.name}" answered Stats without stats`);
    return r.stats;
  }

  async checkpoint(id: string, imageDir: string, options: CheckpointOptions, parentImageDir: string): Promise<CheckpointResult> {
    const r = await this.call<object, { criuVersion: string; stats?: CheckpointResult['stats']; state?: RuntimeState }>(
      'checkpoint',
      { id, imageDir, options, parentImageDir },
      this.timeouts.slowMs,
    );
    return {
      criuVersion: r.criuVersion,
      stats: r.stats ?? { freezingTimeUs: 0n, frozenTimeUs: 0n, memdumpTimeUs: 0n, memwriteTimeUs: 0n, pagesScanned: 0n, pagesWritten: 0n },
      state: r.state ?? STOPPED,
    };
  }

  async restore(id: string, spec: ContainerSpec, imageDir: string, tcpEstablished: boolean, timeoutMs: number): Promise<RuntimeState> {
    const r = await this.call<object, { state?: RuntimeState }>('restore', { id, spec, imageDir, tcpEstablished, timeoutMs }, this.timeouts.slowMs + timeoutMs);
    return r.state ?? STOPPED;
  }

  /**
   * Resolve once the stream is live: the driver sent response headers (it
   * does so once the process runs) or a first message. A refusal ends the
   * stream with a status before that, which rejects here, so exec errors
   * surface from exec() just as with a built-in driver.
   */
  private streamStarted<Req, Res>(method: string, s: ClientDuplexStream<Req, Res>): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      let settled = false;
      const done = (e?: unknown) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        if (e) reject(fromServiceError(this.name, method, e));
        else resolve();
      };
      const timer = setTimeout(() => {
        s.cancel();
        done(new OsvirtError('UNAVAILABLE', 'DRIVER_TIMEOUT', `driver "${this.name}" did not start ${method} within ${this.timeouts.streamStartMs} ms`));
      }, this.timeouts.streamStartMs);
      s.once('metadata', () => done());
      s.once('data', () => done());
      s.once('error', (e) => done(e));
      s.once('end', () => done());
    });
  }

  async exec(o: ExecOptions): Promise<ExecSession> {
    const s = this.client.exec();
    const stdout = new PassThrough();
    const stderr = new PassThrough();
    let exitInfo: ExecExit | undefined;
    const exit = new Promise<ExecExit>((resolve, reject) => {
      s.on('data', (m: ExecResponse) => {
        const x = m.message;
        if (x?.$case === 'stdout') stdout.write(x.value);
        else if (x?.$case === 'stderr') stderr.write(x.value);
        else if (x?.$case === 'exit') exitInfo = x.value;
      });
      s.on('error', (e) => {
        stdout.end();
        stderr.end();
        reject(fromServiceError(this.name, 'exec', e));
      });
      s.on('end', () => {
        stdout.end();
        stderr.end();
        if (exitInfo) resolve(exitInfo);
        else reject(new OsvirtError('UNAVAILABLE', 'DRIVER_UNAVAILABLE', `driver "${this.name}" ended an exec session without an exit status`));
      });
    });
    exit.catch(() => undefined);
    s.write({
      message: {
        $case: 'start',
        value: {
          id: o.id,
          args: o.args,
          env: o.env,
          cwd: o.cwd,
          user: o.user,
          tty: o.tty,
          terminalSize: o.rows && o.cols ? { rows: o.rows, cols: o.cols } : undefined,
        },
      },
    } as ExecRequest);
    await this.streamStarted('exec', s);
    const send = (m: ExecRequest) => {
      if (!s.writableEnded && !s.destroyed) s.write(m);
    };
    const stdin = new Writable({
      write(chunk: Buffer, _enc, cb) {
        for (let i = 0; i < chunk.length; i += MAX_CHUNK) send({ message: { $case: 'stdin', value: chunk.subarray(i, i + MAX_CHUNK) } });
        cb();
      },
      final(cb) {
        send({ message: { $case: 'closeStdin', value: true } });
        cb();
      },
    });
    // Half-close our side once the process is done, so the call completes.
    exit.then(
      () => !s.writableEnded && s.end(),
      () => undefined,
    );
    return {
      stdin,
      stdout,
      stderr,
      resize: (rows, cols) => send({ message: { $case: 'resize', value: { rows, cols } } }),
      exit,
      kill: () => s.cancel(),
    };
  }

  async console(id: string): Promise<ConsoleSession> {
    const s = this.client.console();
    const output = new PassThrough();
    s.on('data', (m: ConsoleResponse) => output.write(m.output));
    s.on('error', () => output.end());
    s.on('end', () => output.end());
    s.write({ message: { $case: 'id', value: id } } as ConsoleRequest);
    await this.streamStarted('console', s);
    const send = (m: ConsoleRequest) => {
      if (!s.writableEnded && !s.destroyed) s.write(m);
    };
    const input = new Writable({
      write(chunk: Buffer, _enc, cb) {
        for (let i = 0; i < chunk.length; i += MAX_CHUNK) send({ message: { $case: 'input', value: chunk.subarray(i, i + MAX_CHUNK) } });
        cb();
      },
    });
    return {
      output,
      input,
      resize: (rows, cols) => send({ message: { $case: 'resize', value: { rows, cols } } }),
      close: () => s.cancel(),
    };
  }

  async close(): Promise<void> {
    this.client.close();
  }
}
