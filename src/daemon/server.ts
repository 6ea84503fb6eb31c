// Assembles the daemon: store, drivers, manager, gRPC services, listeners.
// main.ts parses flags and calls startDaemon; tests call it the same way
// through the real binary.
import { promises as fs, readFileSync } from 'node:fs';
import * as path from 'node:path';
import * as net from 'node:net';
import { Server } from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { ContainerManager } from '../core/manager';
import { DriverRegistry } from '../core/registry';
import { EventBus } from '../core/events';
import { ContainerStore } from '../core/store';
import type { Driver } from '../core/driver';
import { ContainerServiceService } from '../gen/osvirt/v1/container_service';
import { EventServiceService } from '../gen/osvirt/v1/event_service';
import { SystemServiceService } from '../gen/osvirt/v1/system_service';
import { containerService } from '../api/container-service';
import { eventService } from '../api/event-service';
import { systemService } from '../api/system-service';
import { addReflectionAndHealth } from './reflection';
import { registerExtensions } from './extensions';
import { AuditLog } from '../auth/audit';
import { authInterceptor } from '../auth/interceptor';
import { ConnectionRegistry } from '../auth/listeners';
import { ManagementEndpoints } from '../auth/management';
import type { Role } from '../auth/roles';
import { ImageServiceService } from '../gen/osvirt/v1/image_service';
import { imageService } from '../api/image-service';
import type { ImageStore } from '../images/store';
import { applyImage } from '../images/spec';

export const MAX_MESSAGE_BYTES = 4 * 1024 * 1024;

export interface DaemonOptions {
  socket: string;
  /** Read-only socket (Get/List/Watch/Stats/Version only); empty: none. */
  roSocket: string;
  stateDir: string;
  tcp?: string | undefined;
  tls?: { cert: string; key: string; ca: string } | undefined;
  insecureTcp?: boolean;
  drivers: Driver[];
  logger: Logger;
  /** The OCI image store (ImageService, Rootfs.image): the daemon's, like containerd's content store, not a driver's. */
  images?: ImageStore | undefined;
}

export interface Daemon {
  manager: ContainerManager;
  registry: DriverRegistry;
  tcpPort?: number;
  close(): Promise<void>;
}

/** Refuse to start a second daemon on the same state dir. */
async function takePidLock(stateDir: string): Promise<string> {
  const file = path.join(stateDir, 'osvirtd.pid');
  try {
    const pid = Number.parseInt(await fs.readFile(file, 'utf8'), 10);
    if (pid > 0 && pid !== process.pid) {
      try {
        process.kill(pid, 0);
        const cmd = await fs.readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
        if (cmd.includes('osvirtd') || cmd.includes('daemon/main')) {
          throw new Error(`another osvirtd (pid ${pid}) uses state dir ${stateDir}`);
        }
      } catch (e) {
        if (e instanceof Error && e.message.startsWith('another osvirtd')) throw e;
      }
    }
  } catch (e) {
    if (e instanceof Error && e.message.startsWith('another osvirtd')) throw e;
  }
  await fs.writeFile(file, `${process.pid}\n`);
  return file;
}

/** Remove a socket file left by a dead daemon, but never steal a live one. */
async function clearStaleSocket(sock: string): Promise<void> {
  try {
    await fs.access(sock);
  } catch {
    return;
  }
  const live = await new Promise<boolean>((resolve) => {
    const c = net.connect(sock);
    c.once('connect', () => {
      c.destroy();
      resolve(true);
    });
    c.once('error', () => resolve(false));
  });
  if (live) throw new Error(`${sock} is in use by a running daemon`);
  await fs.rm(sock, { force: true });
}

export async function startDaemon(o: DaemonOptions): Promise<Daemon> {
  const log = o.logger;
  await fs.mkdir(o.stateDir, { recursive: true, mode: 0o700 });
  const pidFile = await takePidLock(o.stateDir);

  const registry = new DriverRegistry(o.stateDir, log);
  for (const d of o.drivers) await registry.add(d);
  const bus = new EventBus();
  const manager = new ContainerManager(new ContainerStore(o.stateDir), registry, bus, log, o.stateDir);

  const audit = new AuditLog(path.join(o.stateDir, 'audit.log'), log);
  let conns: ConnectionRegistry | undefined;
  // Roles of the methods drivers' extensions bring, filled in before the first call.
  const extensionRoles = new Map<string, Role>();
  const server = new Server({
    'grpc.max_receive_message_length': MAX_MESSAGE_BYTES,
    'grpc.max_send_message_length': 16 * MAX_MESSAGE_BYTES,
    interceptors: [
      authInterceptor(
        (call) => conns!.authenticate(call),
        audit,
        log,
        (method) => extensionRoles.get(method),
      ),
    ],
  });
  conns = new ConnectionRegistry(server, log);
  const mgmt = new ManagementEndpoints(conns, path.join(o.stateDir, 'management'), (n) => manager.labelsOf(n));
  manager.hooks = {
    beforeStart: (name, spec) => mgmt.prepare(name, spec),
    recovered: async (name, spec) => {
      if (spec.management) await mgmt.listen(name, spec.management);
    },
    stopped: (name) => mgmt.close(name),
  };
  if (o.images) {
    const images = o.images;
    await images.init();
    manager.prepareSpec = (spec) => applyImage(spec, images);
  }
  await manager.init();
  server.addService(ContainerServiceService, containerService(manager, log));
  server.addService(EventServiceService, eventService(bus, log));
  server.addService(SystemServiceService, systemService(registry, log));
  if (o.images) server.addService(ImageServiceService, imageService(o.images, manager, log));
  const extensions = await registerExtensions({
    server,
    registry,
    manager,
    conns,
    roles: extensionRoles,
    dir: path.join(o.stateDir, 'extensions'),
    logger: log,
  });
  addReflectionAndHealth(server);

  for (const sock of [o.socket, o.roSocket].filter(Boolean)) {
    await fs.mkdir(path.dirname(sock), { recursive: true, mode: 0o755 });
    await clearStaleSocket(sock);
  }
  await conns.listenAdmin(o.socket);
  log.info({ socket: o.socket, stateDir: o.stateDir }, 'listening on unix socket');
  if (o.roSocket) {
    await conns.listenReadOnly(o.roSocket);
    log.info({ socket: o.roSocket }, 'listening on read-only unix socket');
  }

  let tcpPort: number | undefined;
  if (o.tcp) {
    const m = /^(.*):(\d+)$/.exec(o.tcp);
    if (!m) throw new Error(`--listen ${o.tcp}: expected HOST:PORT`);
    const host = m[1]!.replace(/^\[|\]$/g, '');
    const port = Number(m[2]);
    if (o.tls) {
      tcpPort = await conns.listenTls(host, port, readFileSync(o.tls.cert), readFileSync(o.tls.key), readFileSync(o.tls.ca));
      log.info({ address: o.tcp, port: tcpPort }, 'listening on TCP with TLS 1.3 and client certificates');
    } else if (o.insecureTcp) {
      if (!['127.0.0.1', 'localhost', '::1'].includes(host)) throw new Error('--insecure-tcp only binds a loopback address (127.0.0.1 or [::1])');
      tcpPort = await conns.listenInsecureTcp(host, port);
      log.warn({ address: o.tcp, port: tcpPort }, 'INSECURE: plaintext TCP without authentication on loopback, for tests only');
    } else {
      throw new Error('a TCP listener needs --tls-cert, --tls-key and --tls-ca (mutual TLS); --insecure-tcp is for loopback tests only');
    }
  }

  return {
    manager,
    registry,
    tcpPort,
    close: async () => {
      await mgmt.closeAll();
      await extensions.close();
      await conns!.close();
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
      await registry.closeAll();
      o.images?.close();
      await fs.rm(o.socket, { force: true });
      if (o.roSocket) await fs.rm(o.roSocket, { force: true });
      await fs.rm(pidFile, { force: true });
    },
  };
}
