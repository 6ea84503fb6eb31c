// Driver extensions: a gRPC service of the public API that belongs to one
// driver rather than to the daemon (the jail driver's JailService with jls,
// the vserver driver's VServerService with vserver-stat, the template
// store's TemplateService). A driver offers it through Driver.extensions();
// the daemon serves it next to its own services, behind the same
// authentication, roles and audit log.
//
// The handlers reach containers only through an ExtensionHost, never the
// manager, so one implementation serves in both places a driver can run:
// in the daemon the host is the container manager; in a plugin process it
// is the daemon's API on the socket the daemon names on each call it
// forwards (src/plugin/extension-proxy.ts).
import type { ServiceDefinition, UntypedServiceImplementation } from '@grpc/grpc-js';
import type { Logger } from 'pino';
import type { Container, ContainerSpec, ContainerState } from '../gen/osvirt/v1/container';

/** The least role that may call a method (src/auth/roles.ts). */
export type ExtensionRole = 'reader' | 'operator' | 'admin';

export const EXTENSION_ROLES: readonly ExtensionRole[] = ['reader', 'operator', 'admin'];

/** What the daemon lets an extension do with containers. Errors are OsvirtErrors, as the API answers them. */
export interface ExtensionHost {
  /** Every defined container, optionally of one driver and in some states. */
  list(filter: { driver?: string; states?: ContainerState[] }): Promise<Container[]>;
  get(name: string): Promise<Container>;
  /** Validates (the core's rules, then the driver's) and defines. */
  create(name: string, spec: ContainerSpec): Promise<Container>;
  start(name: string): Promise<Container>;
  /** Force-deletes; a missing container is fine (undoing half an import). */
  remove(name: string): Promise<void>;
  /**
   * A unix socket serving osvirt.v1.ContainerService on the daemon's behalf,
   * for an extension served out of process. Only the daemon's host has one.
   */
  endpoint?(): Promise<string>;
}

export interface DriverExtension {
  /** Full protobuf service name, "osvirt.v1.JailService". */
  service: string;
  definition: ServiceDefinition;
  /** Method name ("ListJails") -> the least role allowed to call it; a method missing here is denied. */
  roles: Readonly<Record<string, ExtensionRole>>;
  /** The handlers, keyed like the definition. */
  handlers(host: ExtensionHost, logger: Logger): UntypedServiceImplementation;
}

/** The method name ("ListJails") of a definition entry, from its path. */
export function methodName(path: string): string {
  return path.slice(path.lastIndexOf('/') + 1);
}
