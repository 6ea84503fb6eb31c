// Conformance for every driver in this repository, the way CI runs it:
// lxc in process, lxc served out of process over gRPC, the Python process
// driver, and each of them registered with a temporary osvirtd for the
// daemon-level part. Everything it starts it stops and removes.
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import pino from 'pino';
import { connect } from '../client';
import type { Driver } from '../core/driver';
import { repoPath } from '../paths';
import { gateCapabilities } from '../plugin/driver-server';
import { RemoteDriver } from '../plugin/remote-driver';
import { spawnPlugin, type SpawnedPlugin } from '../plugin/spawn-plugin';
import { removeLeftovers } from '../testing/leftovers';
import { TempDaemon } from '../testing/temp-daemon';
import { runDaemonSuite } from './daemon-suite';
import { runDriverSuite } from './driver-suite';
import type { CaseResult, Report } from './report';
import { defaultTemplate, loadTemplate, type SpecTemplate } from './spec-template';

export const PYTHON_DRIVER_DIR = 'drivers/python-process';
/** The subnet of the runner's bridge, shared by the in-process lxc driver and the temporary daemon. */
const SUBNET = '10.251.0.0/16';

export interface RepoRunOptions {
  only?: RegExp;
  skip?: Record<string, string>;
  /** Progress lines. */
  log?: (line: string) => void;
  onResult?: (target: string, r: CaseResult) => void;
  /** Which targets (default: all). */
  targets?: ('lxc-in-process' | 'lxc-grpc' | 'python-process' | 'daemon')[];
}

/** Build the Python driver's generated stubs (idempotent). */
export function buildPythonDriver(): void {
  execFileSync('bash', [repoPath(PYTHON_DRIVER_DIR, 'build.sh')], { stdio: ['ignore', 'ignore', 'pipe'] });
}

export function pythonTemplate(): SpecTemplate {
  return loadTemplate(repoPath(PYTHON_DRIVER_DIR, 'conformance-spec.yaml'));
}

/** An in-process built-in driver, initialised in its own state dir, behind the daemon's capability gate. */
export async function inProcess(driver: Driver, stateDir: string): Promise<Driver> {
  await driver.init({ stateDir, logger: pino({ level: 'warn' }, pino.destination(2)).child({ driver: driver.name }) });
  return gateCapabilities(driver, await driver.info());
}

export function serveLxc(dir: string): Promise<SpawnedPlugin> {
  return spawnPlugin(process.execPath, [repoPath('dist', 'src', 'plugin', 'serve.js'), 'lxc', '--log-level', 'warn'], {
    socket: path.join(dir, 'lxc.sock'),
    stateDir: path.join(dir, 'lxc-plugin-state'),
  });
}

export function servePython(dir: string): Promise<SpawnedPlugin> {
  return spawnPlugin(repoPath(PYTHON_DRIVER_DIR, 'osvirt-process-driver'), [], {
    socket: path.join(dir, 'process.sock'),
    stateDir: path.join(dir, 'process-plugin-state'),
  });
}

/**
 * The suite against a built-in driver hosted in a separate process, as
 * osvirtd hosts it (src/conformance/in-process.ts); the report comes back as JSON.
 */
export async function runInProcess(
  driver: string,
  stateDir: string,
  o: { only?: RegExp; skip?: Record<string, string>; bridge?: string } = {},
): Promise<Report> {
  const args = [repoPath('dist', 'src', 'conformance', 'in-process.js'), driver, '--state-dir', stateDir];
  if (o.bridge) args.push('--bridge', o.bridge, '--subnet', SUBNET);
  if (o.only) args.push('--only', o.only.source);
  for (const [id, why] of Object.entries(o.skip ?? {})) args.push('--skip', `${id}=${why}`);
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout!.on('data', (b: Buffer) => (out += b.toString()));
  child.stderr!.on('data', (b: Buffer) => (err = (err + b.toString()).slice(-8000)));
  const code = await new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
  try {
    return JSON.parse(out.trim().split('\n').pop() ?? '') as Report;
  } catch {
    return { target: `${driver} (in process)`, driver, results: [], error: `the in-process runner exited ${code}: ${err.slice(-2000)}` };
  }
}

export async function runRepoDrivers(o: RepoRunOptions = {}): Promise<Report[]> {
  const want = new Set(o.targets ?? ['lxc-in-process', 'lxc-grpc', 'python-process', 'daemon']);
  const log = o.log ?? (() => undefined);
  const dir = mkdtempSync(path.join(os.tmpdir(), 'osvirt-conformance-'));
  const reports: Report[] = [];
  const plugins: SpawnedPlugin[] = [];
  const lxcT = defaultTemplate('lxc');
  let pyT: SpecTemplate | undefined;
  let lxcPlugin: SpawnedPlugin | undefined;
  let pyPlugin: SpawnedPlugin | undefined;
  const bridge = `ovc${process.pid % 100000}`;
  const suite = async (target: string, driver: RemoteDriver, t: SpecTemplate) => {
    log(`conformance: ${target} (template: ${t.source})`);
    reports.push(await runDriverSuite(driver, target, { template: t, only: o.only, skip: o.skip, onResult: (r) => o.onResult?.(target, r) }));
  };
  const failedTarget = (target: string, e: unknown) => reports.push({ target, driver: '', results: [], error: e instanceof Error ? e.message : String(e) });
  try {
    if (want.has('lxc-in-process')) {
      log(`conformance: lxc (in process) (template: ${lxcT.source})`);
      reports.push(await runInProcess('lxc', path.join(dir, 'lxc-in-process'), { only: o.only, skip: o.skip, bridge }));
    }
    if (want.has('lxc-grpc') || want.has('daemon')) {
      try {
        lxcPlugin = await serveLxc(dir);
        plugins.push(lxcPlugin);
      } catch (e) {
        failedTarget('lxc (gRPC plugin)', e);
      }
    }
    if (want.has('lxc-grpc') && lxcPlugin) {
      const r = new RemoteDriver('lxc', lxcPlugin.endpoint);
      await suite(`lxc (gRPC plugin at ${lxcPlugin.endpoint})`, r, lxcT);
      await r.close();
    }
    if (want.has('python-process') || want.has('daemon')) {
      try {
        buildPythonDriver();
        pyT = pythonTemplate();
        pyPlugin = await servePython(dir);
        plugins.push(pyPlugin);
      } catch (e) {
        failedTarget('process (Python plugin)', e);
      }
    }
    if (want.has('python-process') && pyPlugin && pyT) {
      const r = new RemoteDriver('process', pyPlugin.endpoint);
      await suite(`process (Python plugin at ${pyPlugin.endpoint})`, r, pyT);
      await r.close();
    }
    if (want.has('daemon')) {
      const extra = ['--drivers', 'lxc'];
      if (lxcPlugin) extra.push('--driver', `lxc-grpc=${lxcPlugin.endpoint}`);
      if (pyPlugin) extra.push('--driver', `process=${pyPlugin.endpoint}`);
      const daemon = new TempDaemon({ dir, stateDir: path.join(dir, 'daemon-state'), bridge, subnet: SUBNET });
      try {
        await daemon.start(extra);
        const c = connect({ address: daemon.address });
        try {
          const targets: [string, SpecTemplate][] = [['lxc', lxcT]];
          if (lxcPlugin) targets.push(['lxc-grpc', lxcT]);
          if (pyPlugin && pyT) targets.push(['process', pyT]);
          for (const [name, t] of targets) {
            log(`conformance: daemon-level, driver "${name}"`);
            reports.push(await runDaemonSuite(c, name, t, { only: o.only, onResult: (r) => o.onResult?.(`daemon/${name}`, r) }));
          }
        } finally {
          c.close();
        }
      } catch (e) {
        failedTarget('daemon-level', e);
      } finally {
        await daemon.stop();
      }
    }
  } finally {
    for (const p of plugins) await p.stop();
    await removeLeftovers({ dir, bridges: [bridge] }).catch((e: unknown) => log(`conformance: cleanup: ${e instanceof Error ? e.message : String(e)}`));
  }
  return reports;
}
