// The plugin side: serve osvirt.driver.v1.DriverService over a unix socket
// for any TypeScript Driver, plus grpc.health.v1.Health. Built-in drivers
// run out of process through this (src/plugin/serve.ts); a capability the
// driver does not declare answers exactly as the daemon would in-process.
// The driver's extension services (src/core/extension.ts) are served on the
// same socket and declared in GetInfo.
import { promises as fs } from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { Metadata, Server, ServerCredentials, type ServerDuplexStream, type UntypedServiceImplementation } from '@grpc/grpc-js';
import { HealthImplementation } from 'grpc-health-check';
import type { Logger } from 'pino';
import pino from 'pino';
import { unary } from '../core/grpc-status';
import { toServiceError } from '../core/grpc-status';
import { serveExecStream } from '../api/exec-stream';
import type { Capability, ConsoleSession, Driver, DriverInfo, RuntimeState } from '../core/driver';
import { invalidArgument } from '../core/errors';
import { capabilityError } from '../core/registry';
import { declareExtensions, serveExtensions } from './extension-proxy';
import {
  DriverServiceService,
  type ConsoleRequest,
  type ConsoleResponse,
  type DriverServiceServer,
  type ExecRequest,
  type ExecResponse,
} from '../gen/osvirt/driver/v1/driver';
import type { ContainerSpec } from '../gen/osvirt/v1/container';

export const DRIVER_SERVICE = 'osvirt.driver.v1.DriverService';

export interface ServedDriver {
  socketPath: string;
  server: Server;
  /** Stop serving; the driver's containers keep running. */
  close(): Promise<void>;
}

/**
 * Wraps a driver so that each optional method answers for its declared
 * capability only, as the daemon's registry does for in-process drivers.
 */
export function gateCapabilities(driver: Driver, info: DriverInfo): Driver {
  const declared = new Set(info.capabilities);
  const gate = <K extends keyof Driver>(cap: Capability, key: K): Driver[K] => {
    const fn = driver[key];
    if (declared.has(cap) && typeof fn === 'function') return (fn as (...a: unknown[]) => unknown).bind(driver) as Driver[K];
    return (async () => {
      throw capabilityError(driver.name, cap, info.messages);
    }) as unknown as Driver[K];
  };
  return {
    name: driver.name,
    init: (ctx) => driver.init(ctx),
    info: () => driver.info(),
    validate: (id, spec) => driver.validate(id, spec),
    create: (id, spec) => driver.create(id, spec),
    start: (id, spec, peers) => driver.start(id, spec, peers),
    stop: (id, sig, t, o) => driver.stop(id, sig, t, o),
    kill: (id, sig) => driver.kill(id, sig),
    delete: (id) => driver.delete(id),
    state: (id) => driver.state(id),
    wait: (id) => driver.wait(id),
    recover: (items) => driver.recover(items),
    dependencies: driver.dependencies ? (id, spec) => driver.dependencies!(id, spec) : undefined,
    pause: gate('pause', 'pause'),
    resume: gate('pause', 'resume'),
    exec: gate('exec', 'exec'),
    console: gate('console', 'console'),
    stats: gate('stats', 'stats'),
    checkpoint: gate('checkpoint', 'checkpoint'),
    restore: gate('checkpoint', 'restore'),
    extensions: driver.extensions ? () => driver.extensions!() : undefined,
    close: driver.close ? () => driver.close!() : undefined,
  };
}

/** A state as it goes on the wire: every flag set, false where the driver left it out. */
function wire(s: RuntimeState): RuntimeState & { rebootRequested: boolean } {
  return { ...s, rebootRequested: !!s.rebootRequested };
}

function requireId(id: string): string {
  if (!id) throw invalidArgument('id', 'is required');
  return id;
}

function requireSpec(spec: ContainerSpec | undefined): ContainerSpec {
  if (!spec) throw invalidArgument('spec', 'is required');
  return spec;
}

/** The DriverService handlers for a driver (already initialised). */
export function driverService(driver: Driver, logger: Logger): DriverServiceServer {
  // Capabilities are read per call: a driver may gain or lose one (criu installed, ...).
  const gated = async () => gateCapabilities(driver, await driver.info());
  return {
    getInfo: unary(logger, async () => {
      const info = await driver.info();
      return { ...info, extensions: info.extensions ?? declareExtensions(driver.extensions?.() ?? []) };
    }),
    validate: unary(logger, async (r) => {
      await driver.validate(requireId(r.id), requireSpec(r.spec));
      return {};
    }),
    create: unary(logger, async (r) => {
      await driver.create(requireId(r.id), requireSpec(r.spec));
      return {};
    }),
    start: unary(logger, async (r) => ({ state: wire(await driver.start(requireId(r.id), requireSpec(r.spec), r.peerPids)) })),
    stop: unary(logger, async (r) => ({ state: wire(await driver.stop(requireId(r.id), r.signal || 15, r.timeoutMs, { timeoutGiven: r.timeoutGiven })) })),
    kill: unary(logger, async (r) => {
      await driver.kill(requireId(r.id), r.signal || 9);
      return {};
    }),
    pause: unary(logger, async (r) => {
      await (
        await gated()
      ).pause!(requireId(r.id));
      return {};
    }),
    resume: unary(logger, async (r) => {
      await (
        await gated()
      ).resume!(requireId(r.id));
      return {};
    }),
    delete: unary(logger, async (r) => {
      await driver.delete(requireId(r.id));
      return {};
    }),
    state: unary(logger, async (r) => ({ state: wire(await driver.state(requireId(r.id))) })),
    wait: unary(logger, async (r) => ({ state: wire(await driver.wait(requireId(r.id))) })),
    stats: unary(logger, async (r) => ({ stats: await (await gated()).stats!(requireId(r.id)) })),
    checkpoint: unary(logger, async (r) => {
      const opts = r.options ?? {
        leaveRunning: false,
        tcpEstablished: false,
        extUnixSk: false,
        fileLocks: false,
        shellJob: false,
        manageCgroupsMode: 0,
        parentCheckpoint: '',
        lazyPages: false,
      };
      if (!r.imageDir.startsWith('/')) throw invalidArgument('image_dir', 'must be an absolute host path');
      const res = await (await gated()).checkpoint!(requireId(r.id), r.imageDir, opts, r.parentImageDir);
      return { criuVersion: res.criuVersion, stats: res.stats, state: wire(res.state) };
    }),
    restore: unary(logger, async (r) => {
      if (!r.imageDir.startsWith('/')) throw invalidArgument('image_dir', 'must be an absolute host path');
      return { state: wire(await (await gated()).restore!(requireId(r.id), requireSpec(r.spec), r.imageDir, r.tcpEstablished, r.timeoutMs)) };
    }),
    recover: unary(logger, async (r) => ({
      states: Object.fromEntries(
        Object.entries(await driver.recover(r.containers.map((c) => ({ id: c.id, spec: requireSpec(c.spec) })))).map(([k, v]) => [k, wire(v)]),
      ),
    })),
    dependencies: unary(logger, async (r) => ({ containers: (await driver.dependencies?.(requireId(r.id), requireSpec(r.spec))) ?? [] })),
    // Headers tell the client the process runs (RemoteDriver.exec resolves on them).
    exec: (call: ServerDuplexStream<ExecRequest, ExecResponse>) =>
      serveExecStream(
        call,
        logger,
        async (st, o) => (await gated()).exec!({ id: requireId(st.id), ...o }),
        () => call.sendMetadata(new Metadata()),
      ),
    console: (call: ServerDuplexStream<ConsoleRequest, ConsoleResponse>) => serveConsole(gated, logger, call),
  };
}

function serveConsole(gated: () => Promise<Driver>, logger: Logger, call: ServerDuplexStream<ConsoleRequest, ConsoleResponse>): void {
  let started = false;
  let session: ConsoleSession | undefined;
  const pending: ConsoleRequest[] = [];
  const handle = (msg: ConsoleRequest) => {
    if (!session) return void pending.push(msg);
    const c = msg.message;
    if (c?.$case === 'input') session.input.write(c.value);
    else if (c?.$case === 'resize') session.resize(c.value.rows, c.value.cols);
  };
  call.on('data', (msg: ConsoleRequest) => {
    if (started) return handle(msg);
    started = true;
    const s = msg.message;
    if (s?.$case !== 'id')
      return void call.emit('error', toServiceError(invalidArgument('id', 'the first message of a console session must be the container id'), logger));
    Promise.resolve()
      .then(async () => (await gated()).console!(requireId(s.value)))
      .then(
        (sess) => {
          session = sess;
          call.sendMetadata(new Metadata());
          sess.output.on('data', (b: Buffer) => call.write({ output: b }));
          sess.output.on('end', () => call.end());
          sess.output.on('error', () => call.end());
          sess.input.on('error', () => undefined);
          for (const p of pending.splice(0)) handle(p);
        },
        (e) => call.emit('error', toServiceError(e, logger)),
      );
  });
  const close = () => session?.close();
  call.on('end', close);
  call.on('cancelled', close);
  call.on('error', close);
}

/** Remove a socket file nobody listens on; refuse to steal a live one. */
async function clearStaleSocket(sock: string): Promise<void> {
  if (
    !(await fs.access(sock).then(
      () => true,
      () => false,
    ))
  )
    return;
  const live = await new Promise<boolean>((resolve) => {
    const c = net.connect(sock);
    c.once('connect', () => {
      c.destroy();
      resolve(true);
    });
    c.once('error', () => resolve(false));
  });
  if (live) throw new Error(`${sock} is in use by another process`);
  await fs.rm(sock, { force: true });
}

/**
 * Serve a driver on a unix socket. The driver must be initialised (init()
 * called) by the caller. Health reports SERVING for "" and the service.
 */
export async function serveDriver(driver: Driver, socketPath: string, opts: { logger?: Logger } = {}): Promise<ServedDriver> {
  const logger = opts.logger ?? pino({ level: 'warn' }, pino.destination(2));
  const sock = path.resolve(socketPath);
  await fs.mkdir(path.dirname(sock), { recursive: true, mode: 0o755 });
  await clearStaleSocket(sock);
  const server = new Server({ 'grpc.max_receive_message_length': 16 * 1024 * 1024 });
  server.addService(DriverServiceService, driverService(driver, logger) as DriverServiceServer & UntypedServiceImplementation);
  serveExtensions(server, driver.extensions?.() ?? [], logger);
  const health = new HealthImplementation({ '': 'SERVING', [DRIVER_SERVICE]: 'SERVING' });
  health.addToServer(server);
  await new Promise<void>((resolve, reject) => server.bindAsync(`unix://${sock}`, ServerCredentials.createInsecure(), (e) => (e ? reject(e) : resolve())));
  await fs.chmod(sock, 0o660);
  return {
    socketPath: sock,
    server,
    close: async () => {
      health.setStatus('', 'NOT_SERVING');
      health.setStatus(DRIVER_SERVICE, 'NOT_SERVING');
      await new Promise<void>((resolve) => {
        const t = setTimeout(() => {
          server.forceShutdown();
          resolve();
        }, 2000);
        server.tryShutdown(() => {
          clearTimeout(t);
          resolve();
        });
      });
      await fs.rm(sock, { force: true });
    },
  };
}
