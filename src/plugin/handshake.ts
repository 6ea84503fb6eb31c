// The one-line stdout handshake a plugin prints once it serves, in
// go-plugin's shape: CORE|APP|NETWORK|ADDRESS|PROTOCOL, e.g.
//   1|1|unix|/run/osvirt/plugins/process.sock|grpc
// CORE is the version of this handshake itself; APP is the driver protocol
// version the plugin speaks (osvirt.driver.v1 is 1). Everything else a
// plugin writes goes to stderr, which the daemon logs.

/** Version of the handshake line format (go-plugin's "core protocol version"). */
export const HANDSHAKE_CORE_VERSION = 1;

/** Environment the daemon sets for a plugin it starts. */
export const PLUGIN_ENV = {
  /** Where the daemon would like the socket (the plugin may pick another and say so in the handshake). */
  socket: 'OSVIRT_PLUGIN_SOCKET',
  /** A directory the plugin owns for its per-container state (survives plugin restarts). */
  stateDir: 'OSVIRT_PLUGIN_STATE_DIR',
  /** Comma list of driver protocol versions the daemon speaks. */
  protocolVersions: 'OSVIRT_PLUGIN_PROTOCOL_VERSIONS',
  /** "stdin": the daemon holds the plugin's stdin open; EOF means the daemon is gone and the plugin should exit. */
  lifeline: 'OSVIRT_PLUGIN_LIFELINE',
} as const;

export interface Handshake {
  coreVersion: number;
  protocolVersion: number;
  network: 'unix';
  address: string;
  protocol: 'grpc';
}

export function formatHandshake(protocolVersion: number, socketPath: string): string {
  return `${HANDSHAKE_CORE_VERSION}|${protocolVersion}|unix|${socketPath}|grpc`;
}

/** Parse and check a handshake line; the error says what was wrong with it. */
export function parseHandshake(line: string): Handshake {
  const text = line.trim();
  const parts = text.split('|');
  const shown = text.length > 200 ? `${text.slice(0, 200)}...` : text;
  if (parts.length < 5) {
    throw new Error(`malformed handshake "${shown}": expected CORE|PROTOCOL_VERSION|unix|/path/to.sock|grpc on the first line of stdout`);
  }
  const [core, app, network, address, protocol] = parts as [string, string, string, string, string];
  const coreVersion = Number(core);
  if (!/^\d+$/.test(core) || coreVersion !== HANDSHAKE_CORE_VERSION) {
    throw new Error(`handshake core version "${core}" is not supported (this daemon speaks ${HANDSHAKE_CORE_VERSION})`);
  }
  if (!/^\d+$/.test(app)) throw new Error(`handshake driver protocol version "${app}" is not a number`);
  if (network !== 'unix') throw new Error(`handshake network "${network}" is not supported: plugins listen on a unix socket`);
  if (!address.startsWith('/')) throw new Error(`handshake address "${address}" must be an absolute socket path`);
  if (protocol !== 'grpc') throw new Error(`handshake protocol "${protocol}" is not supported: plugins speak grpc`);
  return { coreVersion, protocolVersion: Number(app), network: 'unix', address, protocol: 'grpc' };
}
