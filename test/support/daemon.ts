// Starts the real osvirtd binary on a temporary socket and state dir, with
// its own bridge and subnet, and tears down everything it made.
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmdirSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as readline from 'node:readline';
import { connectAsync } from '../../src/client';
import { repoPath } from '../../src/paths';
import { removeNat } from '../../drivers/lxc/nat';

export type Client = ReturnType<typeof connectAsync>;

let counter = 0;

export function isRoot(): boolean {
  return process.getuid?.() === 0;
}

export class TestDaemon {
  readonly dir: string;
  readonly socket: string;
  readonly stateDir: string;
  readonly bridge: string;
  readonly subnet: string;
  proc?: ChildProcess;
  client!: Client;
  /** From the readiness line, when started with --listen. */
  tcpPort?: number;
  stderr = '';

  /** A command the daemon runs under (e.g. unshare with a mount that hides a tool), its argv first. */
  readonly wrap: string[];

  constructor(opts: { bridge?: string; subnet?: string; wrap?: string[] } = {}) {
    this.wrap = opts.wrap ?? [];
    counter++;
    this.dir = mkdtempSync(path.join(os.tmpdir(), 'osvirt-test-'));
    this.socket = path.join(this.dir, 'osvirt.sock');
    this.stateDir = path.join(this.dir, 'state');
    this.bridge = opts.bridge ?? `ovt${process.pid % 10000}x${counter}`;
    this.subnet = opts.subnet ?? `10.${200 + (counter % 50)}.0.0/16`;
  }

  async start(extra: string[] = []): Promise<Client> {
    const main = repoPath('dist', 'src', 'daemon', 'main.js');
    const argv = [...this.wrap, process.execPath];
    this.proc = spawn(argv[0]!, [...argv.slice(1), main, '--socket', this.socket, '--state-dir', this.stateDir, '--bridge', this.bridge, '--subnet', this.subnet, '--log-level', 'warn', ...extra], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.proc.stderr!.on('data', (b: Buffer) => (this.stderr += b.toString()));
    const rl = readline.createInterface({ input: this.proc.stdout! });
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`daemon did not become ready: ${this.stderr}`)), 20000);
      rl.once('line', (line) => {
        clearTimeout(t);
        const ready = JSON.parse(line) as { tcpPort?: number | null };
        this.tcpPort = ready.tcpPort ?? undefined;
        resolve();
      });
      this.proc!.once('exit', (code) => {
        clearTimeout(t);
        reject(new Error(`daemon exited with ${code}: ${this.stderr}`));
      });
    });
    this.client = connectAsync({ address: `unix://${this.socket}` });
    return this.client;
  }

  /** Graceful stop (SIGTERM); containers keep running. */
  async stop(): Promise<void> {
    this.client?.close();
    const p = this.proc;
    if (!p || p.exitCode !== null || p.signalCode !== null) return;
    await new Promise<void>((resolve) => {
      p.once('exit', () => resolve());
      p.kill('SIGTERM');
    });
  }

  /** Crash the daemon (kill -9). */
  async crash(): Promise<void> {
    this.client?.close();
    const p = this.proc;
    if (!p || p.exitCode !== null || p.signalCode !== null) return;
    await new Promise<void>((resolve) => {
      p.once('exit', () => resolve());
      p.kill('SIGKILL');
    });
  }

  /** Delete every container through the API, stop the daemon, remove what is left on the host. */
  async destroy(): Promise<void> {
    try {
      if (this.proc && this.proc.exitCode === null && this.proc.signalCode === null) {
        const list = await this.client.api.containers.listContainers({ pageSize: 1000, pageToken: '', driver: '', states: [] });
        // Joiners first: a container whose namespace others use goes last.
        for (const c of list.containers.reverse()) {
          await this.client.api.containers.deleteContainer({ name: c.name, force: true, allowMissing: true }).catch(() => undefined);
        }
      }
    } finally {
      await this.stop();
      killLeftovers(this.stateDir);
      if (existsSync(`/sys/class/net/${this.bridge}`)) execFileSync('ip', ['link', 'del', this.bridge]);
      // The bridge's NAT table goes with it (drivers/lxc/nat.ts).
      await removeNat(this.bridge);
      unmountUnder(this.dir);
      rmSync(this.dir, { recursive: true, force: true });
      removeEmptyCgroupParents();
    }
  }
}

/** Kill any monitor left running with a state dir under `dir` (a failed test must not leak). */
export function killLeftovers(dir: string): void {
  let out = '';
  try {
    // Monitors of started (run) and restored (restore) containers.
    out = execFileSync('pgrep', ['-f', `osvirt-helper (run|restore) .*--state ${dir}`], { encoding: 'utf8' });
  } catch {
    return; // pgrep exits 1 when nothing matches
  }
  for (const pid of out.split('\n').filter(Boolean)) {
    try {
      process.kill(Number(pid), 'SIGKILL');
    } catch {
      // gone
    }
  }
}

export function unmountUnder(dir: string): void {
  const mounts = readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[4])
    .filter((m): m is string => !!m && m.startsWith(dir))
    .sort((a, b) => b.length - a.length);
  for (const m of mounts) {
    try {
      execFileSync('umount', ['-l', m]);
    } catch {
      // already gone
    }
  }
}

/** Poll until fn returns truthy or the deadline passes. */
/** Poll until fn gives a truthy value; a probe that throws means "not yet" (its last error is reported at the deadline). */
export async function until<T>(fn: () => T | Promise<T>, what: string, ms = 10000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    let v: T | undefined;
    let err: unknown;
    try {
      v = await fn();
    } catch (e) {
      err = e;
    }
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}${err ? ` (last probe: ${err instanceof Error ? err.message : String(err)})` : ''}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** The drivers' shared osvirt/ (and the Python driver's osvirt-py/) parent cgroups, once no container uses them (another daemon's keep them busy). */
export function removeEmptyCgroupParents(): void {
  for (const root of ['/sys/fs/cgroup', ...readdirSync('/sys/fs/cgroup').map((d) => path.join('/sys/fs/cgroup', d))]) {
    for (const parent of ['osvirt', 'osvirt-py']) {
      try {
        rmdirSync(path.join(root, parent));
      } catch {
        // not there, or still in use
      }
    }
  }
}

/**
 * A daemon for the enclosing describe(): started in before() (the suite is
 * skipped when not run as root), destroyed in after(). `ready` gets the daemon
 * and its client once it is up, for the suite's own variables and setup.
 */
export function useDaemon(ready: (d: TestDaemon, c: Client) => void | Promise<void>, startArgs: string[] = []): void {
  let daemon: TestDaemon | undefined;
  before(async function () {
    if (!isRoot()) return this.skip();
    daemon = new TestDaemon();
    await ready(daemon, await daemon.start(startArgs));
  });
  after(async () => {
    await daemon?.destroy();
  });
}
