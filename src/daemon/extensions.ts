// Serves the API services drivers bring (src/core/extension.ts) next to the
// daemon's own: each method gets the role its extension declares (the auth
// interceptor looks it up), answers the driver's own health error while the
// driver is not ready, and acts through the manager. An out-of-process
// driver's extension calls back into the daemon through a socket of its own
// here (principal "driver:NAME"), opened the first time it asks.
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import type { Server, ServiceDefinition, UntypedHandleCall, UntypedServiceImplementation } from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { EXTENSION_ROLES, methodName, type DriverExtension } from '../core/extension';
import { managerHost } from '../core/extension-host';
import { errorMessage } from '../core/errors';
import { toServiceError } from '../core/grpc-status';
import type { ContainerManager } from '../core/manager';
import type { DriverRegistry } from '../core/registry';
import { DriverHealth } from '../gen/osvirt/v1/system_service';
import type { ConnectionRegistry } from '../auth/listeners';
import { METHOD_ROLES, type Role } from '../auth/roles';

export interface ExtensionOptions {
  server: Server;
  registry: DriverRegistry;
  manager: ContainerManager;
  conns: ConnectionRegistry;
  /** Filled with full method path -> least role. */
  roles: Map<string, Role>;
  /** Where the drivers' callback sockets go. */
  dir: string;
  logger: Logger;
}

/** Answer with the driver's health error while it is not ready, else run the handler. */
function whileReady(registry: DriverRegistry, driver: string, def: ServiceDefinition[string], fn: UntypedHandleCall, logger: Logger): UntypedHandleCall {
  return ((call: { emit(ev: 'error', e: unknown): void }, cb?: (e: unknown) => void) => {
    try {
      registry.get(driver);
    } catch (e) {
      const err = toServiceError(e, logger);
      if (def.responseStream) call.emit('error', err);
      else cb!(err);
      return;
    }
    (fn as (c: unknown, cb?: unknown) => void)(call, cb);
  }) as unknown as UntypedHandleCall;
}

export async function registerExtensions(o: ExtensionOptions): Promise<{ served: Map<string, string>; close(): Promise<void> }> {
  const log = o.logger;
  const endpoints = new Map<string, Promise<{ path: string; close(): Promise<void> }>>();
  const endpoint = (driver: string): Promise<string> => {
    let e = endpoints.get(driver);
    if (!e) {
      e = (async () => {
        await fs.mkdir(o.dir, { recursive: true, mode: 0o700 });
        const sock = path.join(o.dir, `${driver}.sock`);
        const l = await o.conns.listenFixed(sock, { principal: `driver:${driver}`, role: 'admin', via: 'unix' });
        return { path: sock, close: l.close };
      })();
      endpoints.set(driver, e);
      e.catch(() => endpoints.delete(driver));
    }
    return e.then((x) => x.path);
  };

  /** service -> the driver serving it. */
  const served = new Map<string, string>();
  const offer = (name: string): void => {
    let offered: DriverExtension[];
    try {
      offered = o.registry.peek(name)?.extensions?.() ?? [];
    } catch (e) {
      log.error({ driver: name, err: errorMessage(e) }, 'driver failed to list its extensions; serving none of them');
      return;
    }
    for (const ext of offered) {
      const other = served.get(ext.service);
      if (other) {
        if (other !== name) log.debug({ driver: name, service: ext.service, servedBy: other }, 'extension service already served by another driver');
        continue;
      }
      const paths = Object.values(ext.definition).map((d) => d.path);
      const clash = paths.find((p) => METHOD_ROLES[p] !== undefined);
      if (paths.length === 0 || clash) {
        log.error(
          { driver: name, service: ext.service, method: clash },
          clash ? "extension service would replace one of the daemon's own methods; not served" : 'extension service has no method that can be served',
        );
        continue;
      }
      const impl = ext.handlers(
        managerHost(o.manager, () => endpoint(name)),
        log.child({ driver: name, service: ext.service }),
      );
      const gated: UntypedServiceImplementation = {};
      for (const [key, def] of Object.entries(ext.definition)) {
        const role = ext.roles[methodName(def.path)];
        const fn = impl[key];
        if (!fn) {
          log.error({ driver: name, method: def.path }, 'extension has no handler for a method of its service; it answers UNIMPLEMENTED');
          continue;
        }
        // A method without a (known) role stays denied by the interceptor.
        if (role && EXTENSION_ROLES.includes(role)) o.roles.set(def.path, role);
        else log.warn({ driver: name, method: def.path, role }, 'extension method has no valid role; it is denied to everyone');
        gated[key] = whileReady(o.registry, name, def, fn, log);
      }
      try {
        o.server.addService(ext.definition, gated);
      } catch (e) {
        log.error({ driver: name, service: ext.service, err: errorMessage(e) }, 'cannot serve extension service');
        continue;
      }
      served.set(ext.service, name);
      log.info({ driver: name, service: ext.service }, 'serving driver extension');
    }
  };
  // Ready drivers first: a service two drivers offer goes to one that can answer. A driver
  // that failed to initialise still offers its services, which answer why (whileReady).
  const names = o.registry.names();
  for (const name of [...names.filter((n) => o.registry.isReady(n)), ...names.filter((n) => !o.registry.isReady(n))]) offer(name);
  // A plugin declares its services once it is connected: serve them then (a service once
  // served stays; while its driver is down it answers UNAVAILABLE).
  const unsubscribe = o.registry.onHealthChange((name, health) => {
    if (health === DriverHealth.DRIVER_HEALTH_READY) offer(name);
  });
  return {
    served,
    close: async () => {
      unsubscribe();
      for (const e of endpoints.values()) await (await e.catch(() => undefined))?.close();
      endpoints.clear();
    },
  };
}
