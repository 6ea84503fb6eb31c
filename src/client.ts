// A typed client for the osvirt.v1 API, used by the CLI, the tests and
// anyone embedding osvirt from Node. Addresses: unix:///path or
// tcp://host:port (mutual TLS unless `insecure`).
import { readFileSync } from 'node:fs';
import { credentials, type CallOptions, type ChannelCredentials, type ClientUnaryCall, type ServiceError, type Metadata } from '@grpc/grpc-js';
import { ContainerServiceClient } from './gen/osvirt/v1/container_service';
import { EventServiceClient } from './gen/osvirt/v1/event_service';
import { SystemServiceClient } from './gen/osvirt/v1/system_service';
import { TemplateServiceClient } from './gen/osvirt/v1/template_service';
import { ImageServiceClient } from './gen/osvirt/v1/image_service';

export const DEFAULT_SOCKET = '/run/osvirt/osvirt.sock';

export interface ConnectOptions {
  address?: string | undefined;
  tlsCert?: string | undefined;
  tlsKey?: string | undefined;
  tlsCa?: string | undefined;
  insecure?: boolean | undefined;
}

export interface OsvirtClient {
  containers: ContainerServiceClient;
  events: EventServiceClient;
  system: SystemServiceClient;
  templates: TemplateServiceClient;
  images: ImageServiceClient;
  target: string;
  close(): void;
}

export function connect(o: ConnectOptions = {}): OsvirtClient {
  const address = o.address ?? process.env['OSVIRT_CONNECT'] ?? `unix://${DEFAULT_SOCKET}`;
  let target: string;
  let creds: ChannelCredentials;
  if (address.startsWith('unix://')) {
    target = address;
    creds = credentials.createInsecure();
  } else if (address.startsWith('tcp://')) {
    target = address.slice('tcp://'.length);
    if (o.insecure) creds = credentials.createInsecure();
    else {
      if (!o.tlsCa || !o.tlsCert || !o.tlsKey) throw new Error('tcp:// needs --tls-ca, --tls-cert and --tls-key (mutual TLS)');
      creds = credentials.createSsl(readFileSync(o.tlsCa), readFileSync(o.tlsKey), readFileSync(o.tlsCert));
    }
  } else {
    throw new Error(`cannot connect to "${address}": use unix:///path/to/osvirt.sock or tcp://host:port`);
  }
  const opts = { 'grpc.max_receive_message_length': 64 * 1024 * 1024 };
  const containers = new ContainerServiceClient(target, creds, opts);
  const events = new EventServiceClient(target, creds, opts);
  const system = new SystemServiceClient(target, creds, opts);
  const templates = new TemplateServiceClient(target, creds, opts);
  const images = new ImageServiceClient(target, creds, opts);
  return {
    containers,
    events,
    system,
    templates,
    images,
    target: address,
    close: () => {
      containers.close();
      events.close();
      system.close();
      templates.close();
      images.close();
    },
  };
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type UnaryCb = (err: ServiceError | null, res: any) => void;

/** The unary methods of a generated client, as promise-returning functions. */
export type Promisified<C> = {
  [K in keyof C as C[K] extends (req: never, md: Metadata, opts: Partial<CallOptions>, cb: UnaryCb) => ClientUnaryCall ? K : never]: C[K] extends (
    req: infer Req,
    md: Metadata,
    opts: Partial<CallOptions>,
    cb: (err: ServiceError | null, res: infer Res) => void,
  ) => ClientUnaryCall
    ? (req: Req, md?: Metadata) => Promise<Res>
    : never;
};

export function promisify<C extends object>(client: C): Promisified<C> {
  return new Proxy({} as Promisified<C>, {
    get(_t, prop) {
      const fn = (client as Record<string | symbol, unknown>)[prop];
      if (typeof fn !== 'function') return undefined;
      return (req: unknown, md?: Metadata) =>
        new Promise((resolve, reject) => {
          const cb = (err: ServiceError | null, res: unknown) => (err ? reject(err) : resolve(res));
          if (md) fn.call(client, req, md, cb);
          else fn.call(client, req, cb);
        });
    },
  });
}

/** Connect and return promise-style unary APIs next to the raw clients (for streams). */
export function connectAsync(o: ConnectOptions = {}) {
  const c = connect(o);
  return { ...c, api: { containers: promisify(c.containers), system: promisify(c.system), templates: promisify(c.templates), images: promisify(c.images) } };
}
