// The real osvirtd (dist/src/daemon/main.js) on a temporary socket and state
// dir, with its own bridge and subnet, and a client connected to it: started,
// stopped (SIGTERM), killed (SIGKILL, a crash), its containers deleted, and
// everything it may have left on the host removed. The test suites, the bench
// and the conformance runner all start their daemons here.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import * as path from 'node:path';
import * as readline from 'node:readline';
import { connectAsync } from '../client';
import { repoPath } from '../paths';
import { removeLeftovers } from './leftovers';

export interface TempDaemonOptions {
  /** The run's own directory (created if missing); the socket and state dir go in it, and it is removed by cleanup(). */
  dir: string;
  bridge: string;
  /** The bridge's subnet, CIDR. */
  subnet: string;
  /** Default: <dir>/state. */
  stateDir?: string;
  /** A command the daemon runs under (e.g. unshare with a mount that hides a tool), its argv first. */
  wrap?: string[];
  logLevel?: string;
  readyTimeoutMs?: number;
}

/** The daemon's readiness line (src/daemon/main.ts). */
interface Ready {
  pid?: number;
  tcpPort?: number | null;
}

const STDERR_KEEP = 1 << 20;

export type Client = ReturnType<typeof connectAsync>;

export class TempDaemon {
  readonly dir: string;
  readonly socket: string;
  readonly stateDir: string;
  readonly bridge: string;
  readonly subnet: string;
  readonly wrap: string[];
  proc?: ChildProcess;
  /** Connected by start(), closed by stop() and kill(). */
  client!: Client;
  /** The daemon's own pid, from its readiness line (not a wrapper's). */
  pid = 0;
  /** From the readiness line, when started with --listen. */
  tcpPort?: number;
  /** The daemon's stderr (its last MiB). */
  stderr = '';
  private readonly logLevel: string;
  private readonly readyTimeoutMs: number;

  constructor(o: TempDaemonOptions) {
    this.dir = path.resolve(o.dir);
    this.socket = path.join(this.dir, 'osvirt.sock');
    this.stateDir = o.stateDir ?? path.join(this.dir, 'state');
    this.bridge = o.bridge;
    this.subnet = o.subnet;
    this.wrap = o.wrap ?? [];
    this.logLevel = o.logLevel ?? 'warn';
    this.readyTimeoutMs = o.readyTimeoutMs ?? 30_000;
  }

  /** The client address of its socket. */
  get address(): string {
    return `unix://${this.socket}`;
  }

  get running(): boolean {
    const p = this.proc;
    return !!p && p.exitCode === null && p.signalCode === null;
  }

  /** Start it (again, after a stop or kill), wait for its readiness line and connect; rejects with its stderr if it exits first. */
  async start(extra: string[] = []): Promise<Client> {
    const main = repoPath('dist', 'src', 'daemon', 'main.js');
    if (!existsSync(main)) throw new Error(`${main} is missing: build first (npm run build)`);
    mkdirSync(this.dir, { recursive: true });
    const argv = [
      ...this.wrap,
      process.execPath,
      main,
      '--socket',
      this.socket,
      '--state-dir',
      this.stateDir,
      '--bridge',
      this.bridge,
      '--subnet',
      this.subnet,
      '--log-level',
      this.logLevel,
      ...extra,
    ];
    const proc = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
    this.proc = proc;
    this.stderr = '';
    proc.stderr!.on('data', (b: Buffer) => {
      this.stderr = (this.stderr + b.toString()).slice(-STDERR_KEEP);
    });
    const rl = readline.createInterface({ input: proc.stdout! });
    let timer: NodeJS.Timeout | undefined;
    let onExit: ((code: number | null, signal: NodeJS.Signals | null) => void) | undefined;
    try {
      const line = await new Promise<string>((resolve, reject) => {
        timer = setTimeout(() => reject(new Error(`osvirtd did not become ready in ${this.readyTimeoutMs} ms: ${this.stderr.trim()}`)), this.readyTimeoutMs);
        rl.once('line', resolve);
        onExit = (code, signal) => reject(new Error(`osvirtd exited with ${code ?? signal}: ${this.stderr.trim()}`));
        proc.once('exit', onExit);
        proc.once('error', reject);
      });
      const ready = JSON.parse(line) as Ready;
      this.pid = ready.pid ?? proc.pid ?? 0;
      this.tcpPort = ready.tcpPort ?? undefined;
    } catch (e) {
      if (this.running) await this.kill();
      throw e;
    } finally {
      clearTimeout(timer);
      if (onExit) proc.off('exit', onExit);
      rl.close();
      // Nothing more is read from stdout; keep the pipe drained so the daemon never blocks on it.
      proc.stdout!.resume();
    }
    this.client = connectAsync({ address: this.address });
    return this.client;
  }

  /** Graceful stop (SIGTERM; SIGKILL after graceMs); containers keep running. */
  stop(graceMs = 10_000): Promise<void> {
    return this.signal('SIGTERM', graceMs);
  }

  /** Crash it (kill -9). */
  kill(): Promise<void> {
    return this.signal('SIGKILL', 0);
  }

  private async signal(sig: NodeJS.Signals, graceMs: number): Promise<void> {
    this.client?.close();
    const p = this.proc;
    if (!p || !this.running) return;
    const exited = new Promise<void>((resolve) => p.once('exit', () => resolve()));
    p.kill(sig);
    const t = graceMs > 0 ? setTimeout(() => p.kill('SIGKILL'), graceMs) : undefined;
    await exited;
    clearTimeout(t);
  }

  /** Every container the daemon lists. */
  async listAll(): Promise<string[]> {
    const names: string[] = [];
    let pageToken = '';
    do {
      const r = await this.client.api.containers.listContainers({ pageSize: 1000, pageToken, driver: '', states: [] });
      names.push(...r.containers.map((c) => c.name));
      pageToken = r.nextPageToken;
    } while (pageToken);
    return names;
  }

  /**
   * Force-delete every container through the API, newest first: a container
   * whose namespaces later ones joined goes after them. With concurrency > 1
   * that order is only roughly kept (the bench's many independent containers).
   */
  async deleteAll(concurrency = 1): Promise<void> {
    const names = (await this.listAll()).reverse();
    let next = 0;
    const worker = async () => {
      while (next < names.length) {
        const name = names[next++]!;
        await this.client.api.containers.deleteContainer({ name, force: true, allowMissing: true }).catch(() => undefined);
      }
    };
    await Promise.all(Array.from({ length: Math.max(1, Math.min(concurrency, names.length)) }, worker));
  }

  /**
   * Kill the daemon if it still runs, then remove everything the run left:
   * container processes, cgroups, veths, the bridge and its nft table,
   * mounts under the directory, the directory (src/testing/leftovers.ts).
   */
  async cleanup(): Promise<void> {
    await this.stop();
    await removeLeftovers({ dir: this.dir, bridges: [this.bridge] });
  }

  /** Delete every container through the API (if the daemon runs), stop it, and clean up. */
  async destroy(concurrency = 1): Promise<void> {
    try {
      if (this.running && this.client) await this.deleteAll(concurrency);
    } finally {
      await this.cleanup();
    }
  }
}
