// osvirtd: the osvirt daemon.
import * as path from 'node:path';
import { Command } from 'commander';
import pino from 'pino';
import type { Driver } from '../core/driver';
import { VERSION } from '../version';
import { ImageStore } from '../images/store';
import { builtinDrivers } from '../drivers';
import { loadPluginDir, parseDriverFlag } from '../plugin/manifest';
import { MisconfiguredPlugin, PluginDriver } from '../plugin/plugin-driver';
import { startDaemon } from './server';

function collect(v: string, prev: string[]): string[] {
  return [...prev, v];
}

async function main(): Promise<void> {
  const program = new Command('osvirtd')
    .description('osvirt daemon: serves the osvirt.v1 gRPC API and runs container drivers')
    .version(VERSION)
    .option('--socket <path>', 'unix socket to listen on', '/run/osvirt/osvirt.sock')
    .option('--ro-socket <path>', 'read-only unix socket (Get/List/Watch/Stats/Version); "" for none')
    .option('--state-dir <dir>', 'where definitions, driver state and checkpoints live', '/var/lib/osvirt')
    .option('--listen <host:port>', 'also listen on TCP (needs --tls-* unless --insecure-tcp)')
    .option('--tls-cert <file>', 'server certificate (PEM)')
    .option('--tls-key <file>', 'server key (PEM)')
    .option('--tls-ca <file>', 'CA that client certificates must chain to (PEM)')
    .option('--insecure-tcp', 'plaintext TCP on loopback without authentication (tests only)', false)
    .option('--drivers <list>', 'comma list of built-in drivers to enable (default: all)')
    .option('--driver-module <path>', 'load a driver from a JS module exporting createDriver() (repeatable)', collect, [])
    .option('--plugin-dir <dir>', 'directory of plugin manifests (*.json) (default: <state-dir>/plugins.d)')
    .option('--driver <name=unix:///path>', 'use the out-of-process driver serving at this socket (repeatable)', collect, [])
    .option('--bridge <name>', 'bridge the lxc driver creates for bridge networking', 'osvirt0')
    .option('--template-dir <dir>', 'where templates (shared root filesystems) are built (default: <state-dir>/drivers/lxc/templates)')
    .option('--image-dir <dir>', 'where pulled OCI images are stored (default: <state-dir>/images)')
    .option('--insecure-registry <host[:port]>', 'a registry reached over plain HTTP, not TLS (repeatable; for a registry on loopback)', collect, [])
    .option('--subnet <cidr>', 'IPv4 subnet of that bridge (the bridge takes the first address)', '10.88.0.0/16')
    .option(
      '--resolv-conf <file>',
      "the host resolver configuration bridged containers' /etc/resolv.conf is made from (loopback servers are left out)",
      '/etc/resolv.conf',
    )
    .option('--log-level <level>', 'trace, debug, info, warn, error', process.env['OSVIRT_LOG_LEVEL'] ?? 'info')
    .parse();
  const o = program.opts<{
    socket: string;
    roSocket?: string;
    stateDir: string;
    listen?: string;
    tlsCert?: string;
    tlsKey?: string;
    tlsCa?: string;
    insecureTcp: boolean;
    drivers?: string;
    driverModule: string[];
    logLevel: string;
    bridge: string;
    subnet: string;
    pluginDir?: string;
    driver: string[];
    templateDir?: string;
    resolvConf: string;
    imageDir?: string;
    insecureRegistry: string[];
  }>();
  const logger = pino({ name: 'osvirtd', level: o.logLevel }, pino.destination(2));

  const wanted =
    o.drivers === undefined
      ? undefined
      : o.drivers
          .split(',')
          .map((s) => s.trim())
          .filter(Boolean);
  // One image store for the daemon (ImageService) and every driver whose containers run images.
  const images = new ImageStore(path.resolve(o.imageDir ?? path.join(o.stateDir, 'images')), { insecureRegistries: o.insecureRegistry, logger });
  const drivers: Driver[] = builtinDrivers({
    lxc: { bridge: { name: o.bridge, subnet: o.subnet }, resolvConf: path.resolve(o.resolvConf), images },
    templateDir: path.resolve(o.templateDir ?? path.join(o.stateDir, 'drivers', 'lxc', 'templates')),
  }).filter((d) => !wanted || wanted.includes(d.name));
  for (const mod of o.driverModule) {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const m = require(path.resolve(mod)) as { createDriver?: () => Driver };
    if (typeof m.createDriver !== 'function') throw new Error(`${mod} does not export createDriver()`);
    drivers.push(m.createDriver());
  }
  // Out-of-process plugins: manifests first, then --driver flags. A broken
  // manifest is listed as a FAILED driver with the reason; a name taken
  // twice keeps the first.
  const pluginDir = path.resolve(o.pluginDir ?? path.join(o.stateDir, 'plugins.d'));
  const found = loadPluginDir(pluginDir);
  const taken = new Set(drivers.map((d) => d.name));
  const addPlugin = (d: Driver, source: string) => {
    if (taken.has(d.name)) return logger.error({ driver: d.name, source }, `a driver named "${d.name}" is already registered; ignoring this one`);
    taken.add(d.name);
    drivers.push(d);
  };
  for (const p of found.problems) {
    logger.error({ file: p.file }, p.message);
    if (p.name) addPlugin(new MisconfiguredPlugin(p.name, p.message), p.file);
  }
  for (const cfg of [...found.plugins, ...o.driver.map(parseDriverFlag)]) addPlugin(new PluginDriver(cfg), cfg.source);
  if (!/^\d+\.\d+\.\d+\.\d+\/(\d|[12]\d|30)$/.test(o.subnet)) throw new Error(`--subnet ${o.subnet}: expected an IPv4 CIDR such as 10.88.0.0/16`);
  if (!/^[A-Za-z0-9_.-]{1,15}$/.test(o.bridge)) throw new Error(`--bridge ${o.bridge}: expected an interface name of at most 15 characters`);
  if (o.tlsCert || o.tlsKey || o.tlsCa) {
    if (!(o.tlsCert && o.tlsKey && o.tlsCa)) throw new Error('--tls-cert, --tls-key and --tls-ca go together');
  }
  const daemon = await startDaemon({
    socket: path.resolve(o.socket),
    roSocket: o.roSocket === undefined ? path.join(path.dirname(path.resolve(o.socket)), 'osvirt-ro.sock') : o.roSocket && path.resolve(o.roSocket),
    stateDir: path.resolve(o.stateDir),
    tcp: o.listen,
    tls: o.tlsCert && o.tlsKey && o.tlsCa ? { cert: o.tlsCert, key: o.tlsKey, ca: o.tlsCa } : undefined,
    insecureTcp: o.insecureTcp,
    drivers,
    logger,
    images,
  });
  // Machine-readable readiness line for supervisors and tests.
  process.stdout.write(JSON.stringify({ ready: true, socket: path.resolve(o.socket), pid: process.pid, tcpPort: daemon.tcpPort ?? null }) + '\n');

  let stopping = false;
  const shutdown = (sig: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal: sig }, 'shutting down; containers keep running');
    daemon.close().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
  process.on('uncaughtException', (e) => logger.fatal({ err: e.message, stack: e.stack }, 'uncaught exception'));
  process.on('unhandledRejection', (e) => logger.error({ err: String(e) }, 'unhandled rejection'));
}

main().catch((e: unknown) => {
  process.stderr.write(`osvirtd: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(1);
});
