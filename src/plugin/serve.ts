// Run a built-in driver (or a driver module) out of process as a plugin:
//   node dist/src/plugin/serve.js lxc --socket /run/osvirt/lxc.sock
// Prints the handshake line (1|<driver protocol>|unix|/path.sock|grpc) on
// stdout once it serves; logs go to stderr. SIGTERM stops serving and
// leaves containers running, as the daemon does.
import { mkdtempSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Command } from 'commander';
import pino from 'pino';
import type { Driver } from '../core/driver';
import { builtinDrivers } from '../drivers';
import { VERSION } from '../version';
import { serveDriver } from './driver-server';
import { formatHandshake, PLUGIN_ENV } from './handshake';

async function main(): Promise<void> {
  const program = new Command('osvirt-plugin')
    .description('serve an osvirt driver over osvirt.driver.v1.DriverService on a unix socket')
    .version(VERSION)
    .argument('[driver]', 'built-in driver to serve (lxc); omit with --module')
    .option('--module <file>', 'serve the driver a JS module creates with createDriver()')
    .option('--socket <path>', `unix socket to listen on (default: $${PLUGIN_ENV.socket}, else a new temporary directory)`)
    .option('--state-dir <dir>', `directory the driver keeps its state in (default: $${PLUGIN_ENV.stateDir}, else /var/lib/osvirt/drivers/<driver>)`)
    .option('--bridge <name>', 'lxc: bridge for bridge networking (give each lxc instance its own)', 'osvirt0')
    .option('--subnet <cidr>', 'lxc: IPv4 subnet of that bridge', '10.88.0.0/16')
    .option('--log-level <level>', 'trace, debug, info, warn, error', process.env['OSVIRT_LOG_LEVEL'] ?? 'info')
    .parse();
  const o = program.opts<{ module?: string; socket?: string; stateDir?: string; bridge: string; subnet: string; logLevel: string }>();
  const name = program.args[0];
  const logger = pino({ name: 'osvirt-plugin', level: o.logLevel }, pino.destination(2));

  let driver: Driver | undefined;
  if (o.module) {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const m = require(path.resolve(o.module)) as { createDriver?: () => Driver };
    if (typeof m.createDriver !== 'function') throw new Error(`${o.module} does not export createDriver()`);
    driver = m.createDriver();
  } else {
    const all = builtinDrivers({ lxc: { bridge: { name: o.bridge, subnet: o.subnet } } });
    driver = all.find((d) => d.name === name);
    if (!driver) throw new Error(`no built-in driver "${name ?? ''}" (built in: ${all.map((d) => d.name).join(', ')}); or pass --module FILE`);
  }

  let tmp: string | undefined;
  let socket = o.socket ?? process.env[PLUGIN_ENV.socket];
  if (!socket) {
    tmp = mkdtempSync(path.join(os.tmpdir(), 'osvirt-plugin-'));
    socket = path.join(tmp, `${driver.name}.sock`);
  }
  const stateDir = path.resolve(o.stateDir ?? process.env[PLUGIN_ENV.stateDir] ?? path.join('/var/lib/osvirt/drivers', driver.name));

  // An init failure ends the process before the handshake: the daemon shows the message and retries later.
  await driver.init({ stateDir, logger: logger.child({ driver: driver.name }) });
  const info = await driver.info();
  const served = await serveDriver(driver, socket, { logger });
  process.stdout.write(formatHandshake(info.protocolVersion, served.socketPath) + '\n');
  logger.info({ driver: driver.name, socket: served.socketPath, stateDir }, 'serving driver');

  let stopping = false;
  const shutdown = (why: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ why }, 'stopping; containers keep running');
    served
      .close()
      .then(() => driver!.close?.())
      .then(
        () => {
          if (tmp) rmSync(tmp, { recursive: true, force: true });
          process.exit(0);
        },
        () => process.exit(1),
      );
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
  if (process.env[PLUGIN_ENV.lifeline] === 'stdin') {
    // The daemon holds our stdin; EOF means it is gone (even after kill -9): do not linger.
    process.stdin.on('data', () => undefined);
    process.stdin.on('end', () => shutdown('the daemon closed our stdin'));
    process.stdin.on('error', () => shutdown('the daemon closed our stdin'));
  }
  process.on('uncaughtException', (e) => logger.fatal({ err: e.message, stack: e.stack }, 'uncaught exception'));
  process.on('unhandledRejection', (e) => logger.error({ err: String(e) }, 'unhandled rejection'));
}

main().catch((e: unknown) => {
  process.stderr.write(`osvirt-plugin: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(1);
});
