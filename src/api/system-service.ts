// osvirt.v1.SystemService: version and driver table.
import * as os from 'node:os';
import type { UntypedServiceImplementation } from '@grpc/grpc-js';
import type { Logger } from 'pino';
import type { DriverRegistry } from '../core/registry';
import { DRIVER_PROTOCOL_VERSION } from '../core/driver';
import type { SystemServiceServer } from '../gen/osvirt/v1/system_service';
import { VERSION } from '../version';
import { unary } from '../core/grpc-status';

export function systemService(registry: DriverRegistry, logger: Logger): SystemServiceServer & UntypedServiceImplementation {
  return {
    getVersion: unary(logger, () => ({ version: VERSION, apiVersion: 'osvirt.v1', driverProtocolVersions: [DRIVER_PROTOCOL_VERSION], kernel: os.release() })),
    listDrivers: unary(logger, () => ({ drivers: registry.list() })),
  };
}
