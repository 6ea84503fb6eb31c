// Driver extensions (src/core/extension.ts) across the process boundary.
//
// Plugin side: serveExtensions() serves a driver's extension services on the
// plugin's socket, next to DriverService, and declareExtensions() lists them
// in GetInfo. Each call arrives from the daemon with the metadata
// "osvirt-host-endpoint"; the handlers act on containers through the
// daemon's ContainerService at that socket (remoteHost).
//
// Daemon side: proxyExtensions() turns what a plugin declared into
// extensions whose handlers forward each call, as raw bytes, to the plugin.
// The daemon needs none of the service's types: its interceptor has already
// authenticated the caller and checked the declared role.
import {
  Metadata,
  type Client,
  type sendUnaryData,
  type Server,
  type ServerUnaryCall,
  type ServerWritableStream,
  type ServiceDefinition,
  type ServiceError,
  type UntypedServiceImplementation,
} from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { connect } from '../client';
import { EXTENSION_ROLES, methodName, type DriverExtension, type ExtensionHost, type ExtensionRole } from '../core/extension';
import { invalidArgument, OsvirtError } from '../core/errors';
import { toServiceError } from '../core/grpc-status';
import type { ExtensionService } from '../gen/osvirt/driver/v1/driver';
import type { Container } from '../gen/osvirt/v1/container';
import { fromServiceError } from './wire-errors';

/** Metadata key of the daemon's callback socket on a forwarded call. */
export const HOST_ENDPOINT_METADATA = 'osvirt-host-endpoint';

// ---- plugin side

/** GetInfo's extensions field, from the driver's extensions. */
export function declareExtensions(exts: DriverExtension[]): ExtensionService[] {
  return exts.map((e) => ({
    name: e.service,
    methods: Object.values(e.definition).map((d) => {
      const name = methodName(d.path);
      return { name, role: e.roles[name] ?? '', serverStreaming: d.responseStream, clientStreaming: d.requestStream };
    }),
  }));
}

/** The ExtensionHost of a plugin: the daemon's ContainerService at `endpoint`. */
export function remoteHost(endpoint: string): ExtensionHost {
  const c = connect({ address: `unix://${endpoint}` });
  const call = <Req, Res>(method: string, req: Req): Promise<Res> =>
    new Promise((resolve, reject) => {
      const fn = (c.containers as unknown as Record<string, (r: Req, cb: (e: ServiceError | null, r: Res) => void) => unknown>)[method]!;
      fn.call(c.containers, req, (e, r) => (e ? reject(fromServiceError('osvirtd', method, e)) : resolve(r)));
    });
  const container = (r: { container?: Container }): Container => {
    if (!r.container) throw new OsvirtError('INTERNAL', 'HOST_EMPTY_ANSWER', 'the daemon answered without a container');
    return r.container;
  };
  return {
    list: async (f) => {
      const out: Container[] = [];
      for (let pageToken = ''; ;) {
        const r = await call<object, { containers: Container[]; nextPageToken: string }>('listContainers', {
          pageSize: 1000,
          pageToken,
          driver: f.driver ?? '',
          states: f.states ?? [],
        });
        out.push(...r.containers);
        if (!r.nextPageToken) return out;
        pageToken = r.nextPageToken;
      }
    },
    get: async (name) => container(await call('getContainer', { name })),
    create: async (name, spec) => container(await call('createContainer', { name, spec })),
    start: async (name) => container(await call('startContainer', { name })),
    remove: async (name) => {
      await call('deleteContainer', { name, force: true, allowMissing: true });
    },
  };
}

/** Serve the driver's extension services on the plugin's server. */
export function serveExtensions(server: Server, exts: DriverExtension[], logger: Logger): void {
  const hosts = new Map<string, ExtensionHost>();
  for (const ext of exts) {
    const byEndpoint = new Map<string, UntypedServiceImplementation>();
    const implFor = (md: Metadata): UntypedServiceImplementation => {
      const endpoint = md.get(HOST_ENDPOINT_METADATA)[0];
      if (typeof endpoint !== 'string' || !endpoint.startsWith('/'))
        throw invalidArgument(HOST_ENDPOINT_METADATA, 'the daemon names its callback socket in this metadata on every forwarded call');
      let impl = byEndpoint.get(endpoint);
      if (!impl) {
        let host = hosts.get(endpoint);
        if (!host) hosts.set(endpoint, (host = remoteHost(endpoint)));
        impl = ext.handlers(host, logger.child({ service: ext.service }));
        byEndpoint.set(endpoint, impl);
      }
      return impl;
    };
    const impl: UntypedServiceImplementation = {};
    for (const [key, def] of Object.entries(ext.definition)) {
      impl[key] = ((call: { metadata: Metadata; emit(ev: 'error', e: unknown): void }, cb?: (e: unknown) => void) => {
        let fn;
        try {
          fn = implFor(call.metadata)[key];
          if (!fn) throw new OsvirtError('UNIMPLEMENTED', 'UNIMPLEMENTED', `${def.path} has no handler in this driver`);
        } catch (e) {
          const err = toServiceError(e, logger);
          return def.responseStream ? call.emit('error', err) : cb!(err);
        }
        (fn as (c: unknown, cb?: unknown) => void)(call, cb);
      }) as unknown as UntypedServiceImplementation[string];
    }
    server.addService(ext.definition, impl);
  }
}

// ---- daemon side

const raw = (b: Buffer): Buffer => b;

/**
 * Extensions that forward to a plugin. `client` gives the current
 * connection (a restarted plugin has a new one); it throws while the plugin
 * is down. Methods with a streaming request, or a role that is not one of
 * osvirt's, are left out (the interceptor then denies them).
 */
export function proxyExtensions(driver: string, declared: ExtensionService[], client: () => Client, logger?: Logger): DriverExtension[] {
  return declared.map((svc) => {
    const definition: Record<string, ServiceDefinition[string]> = {};
    const roles: Record<string, ExtensionRole> = {};
    for (const m of svc.methods) {
      if (m.clientStreaming || !EXTENSION_ROLES.includes(m.role as ExtensionRole) || !/^[A-Za-z][A-Za-z0-9_]*$/.test(m.name)) {
        logger?.warn(
          { driver, service: svc.name, method: m.name, role: m.role },
          'plugin extension method is not forwarded (streaming request, or unknown role)',
        );
        continue;
      }
      definition[m.name] = {
        path: `/${svc.name}/${m.name}`,
        requestStream: false,
        responseStream: m.serverStreaming,
        requestSerialize: raw,
        requestDeserialize: raw,
        responseSerialize: raw,
        responseDeserialize: raw,
        originalName: m.name,
      };
      roles[m.name] = m.role as ExtensionRole;
    }
    return {
      service: svc.name,
      definition: definition as ServiceDefinition,
      roles,
      handlers: (host: ExtensionHost, log: Logger): UntypedServiceImplementation => {
        const fail = (e: unknown, method: string) => toServiceError(fromServiceError(driver, method, e), log);
        const metadata = async (): Promise<Metadata> => {
          if (!host.endpoint) throw new OsvirtError('INTERNAL', 'NO_HOST_ENDPOINT', 'this host cannot serve an out-of-process extension');
          const md = new Metadata();
          md.set(HOST_ENDPOINT_METADATA, await host.endpoint());
          return md;
        };
        const impl: UntypedServiceImplementation = {};
        for (const [name, def] of Object.entries(definition)) {
          if (!def.responseStream) {
            impl[name] = (call: ServerUnaryCall<Buffer, Buffer>, cb: sendUnaryData<Buffer>) => {
              metadata().then(
                (md) => {
                  const c = client();
                  const pending = c.makeUnaryRequest(def.path, raw, raw, call.request, md, (e, res) => (e ? cb(fail(e, name)) : cb(null, res)));
                  call.on('cancelled', () => pending.cancel());
                },
                (e) => cb(toServiceError(e, log)),
              );
            };
          } else {
            impl[name] = (call: ServerWritableStream<Buffer, Buffer>) => {
              metadata().then(
                (md) => {
                  const up = client().makeServerStreamRequest(def.path, raw, raw, call.request, md);
                  call.on('cancelled', () => up.cancel());
                  up.on('data', (b: Buffer) => call.write(b));
                  up.on('error', (e) => call.emit('error', fail(e, name)));
                  up.on('end', () => call.end());
                },
                (e) => call.emit('error', toServiceError(e, log)),
              );
            };
          }
        }
        return impl;
      },
    };
  });
}
