// The plugin SDK for TypeScript: serve any Driver over
// osvirt.driver.v1.DriverService (with the handshake and health checking
// the daemon expects), or talk to a plugin as a Driver.
export { serveDriver, gateCapabilities, driverService, DRIVER_SERVICE, type ServedDriver } from './driver-server';
export { RemoteDriver, DEFAULT_TIMEOUTS, type RemoteTimeouts } from './remote-driver';
export { formatHandshake, parseHandshake, HANDSHAKE_CORE_VERSION, PLUGIN_ENV, type Handshake } from './handshake';
export { spawnPlugin, type SpawnedPlugin } from './spawn-plugin';
export { parseManifest, loadPluginDir, parseDriverFlag } from './manifest';
export type { Driver, DriverContext, DriverInfo, ExecOptions, ExecSession, ConsoleSession, CheckpointResult, Capability, RuntimeState } from '../core/driver';
export { DRIVER_PROTOCOL_VERSION, RuntimeStatus } from '../core/driver';
export { OsvirtError } from '../core/errors';
