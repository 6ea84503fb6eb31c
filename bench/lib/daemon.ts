// The real osvirtd (dist/src/daemon/main.js) on a temporary socket and state
// dir with its own bridge and subnet, like test/support/daemon.ts, plus what
// the bench needs: the daemon's pid (RSS), the template path, and a teardown
// that removes everything even when the daemon is wedged.
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, rmSync, rmdirSync } from 'node:fs';
import * as path from 'node:path';
import * as readline from 'node:readline';
import { connectAsync } from '../../src/client';
import { repoPath } from '../../src/paths';
import { killPid, pidsWithCmdline, pool } from './proc';
import { removeNat } from '../../drivers/lxc/nat';

export type Client = ReturnType<typeof connectAsync>;

/** A /16 no route or address on this host uses yet. */
export function freeSubnet(avoid: string[] = []): string {
  let taken = '';
  try {
    taken = execFileSync('ip', ['-4', '-o', 'addr', 'show'], { encoding: 'utf8' }) + execFileSync('ip', ['-4', 'route', 'show', 'table', 'all'], { encoding: 'utf8' });
  } catch {
    // no iproute2: the daemon will say so
  }
  for (let b = 180; b < 250; b++) {
    const prefix = `10.${b}.`;
    if (taken.includes(` ${prefix}`) || taken.includes(`\n${prefix}`) || taken.startsWith(prefix) || avoid.some((a) => a.startsWith(prefix))) continue;
    return `10.${b}.0.0/16`;
  }
  throw new Error('no free 10.x.0.0/16 subnet for the bench bridge');
}

export function unmountUnder(dir: string): void {
  const mounts = readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[4])
    .filter((m): m is string => !!m && (m === dir || m.startsWith(dir + '/')))
    .sort((a, b) => b.length - a.length);
  for (const m of mounts) {
    try {
      execFileSync('umount', ['-l', m], { stdio: 'ignore' });
    } catch {
      // already gone
    }
  }
}

export class BenchDaemon {
  readonly socket: string;
  readonly stateDir: string;
  proc?: ChildProcess;
  pid = 0;
  client!: Client;
  stderr = '';

  constructor(readonly dir: string, readonly bridge: string, readonly subnet: string) {
    this.socket = path.join(dir, 'osvirt.sock');
    this.stateDir = path.join(dir, 'state');
  }

  async start(): Promise<Client> {
    const main = repoPath('dist', 'src', 'daemon', 'main.js');
    if (!existsSync(main)) throw new Error(`${main} is missing: build first (npm run build)`);
    this.proc = spawn(process.execPath, [main, '--socket', this.socket, '--state-dir', this.stateDir, '--bridge', this.bridge, '--subnet', this.subnet, '--log-level', 'warn'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.proc.stderr!.on('data', (b: Buffer) => {
      if (this.stderr.length < 1 << 20) this.stderr += b.toString();
    });
    const rl = readline.createInterface({ input: this.proc.stdout! });
    const line = await new Promise<string>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`osvirtd did not become ready in 30 s: ${this.stderr}`)), 30000);
      rl.once('line', (l) => {
        clearTimeout(t);
        resolve(l);
      });
      this.proc!.once('exit', (code) => {
        clearTimeout(t);
        reject(new Error(`osvirtd exited with ${code}: ${this.stderr.trim()}`));
      });
    });
    rl.close();
    try {
      this.pid = (JSON.parse(line) as { pid?: number }).pid ?? this.proc.pid ?? 0;
    } catch {
      this.pid = this.proc.pid ?? 0;
    }
    this.client = connectAsync({ address: `unix://${this.socket}` });
    return this.client;
  }

  /** Where the lxc driver keeps a container's files. */
  containerDir(name: string): string {
    return path.join(this.stateDir, 'drivers', 'lxc', 'containers', name);
  }

  templateDir(name = 'busybox'): string {
    return path.join(this.stateDir, 'drivers', 'lxc', 'templates', name);
  }

  /** Monitor and init pids from the driver's runtime.json. */
  runtime(name: string): { initPid: number; monitorPid: number } | undefined {
    try {
      const j = JSON.parse(readFileSync(path.join(this.containerDir(name), 'runtime.json'), 'utf8')) as { initPid: number; monitorPid: number };
      return { initPid: j.initPid, monitorPid: j.monitorPid };
    } catch {
      return undefined;
    }
  }

  /** Every container name this daemon has a definition for. */
  definedNames(): string[] {
    try {
      return readdirSync(path.join(this.stateDir, 'containers'))
        .filter((f) => f.endsWith('.json'))
        .map((f) => f.slice(0, -5));
    } catch {
      return [];
    }
  }

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

  async deleteAll(concurrency = 8): Promise<void> {
    const names = await this.listAll();
    await pool(names.reverse(), concurrency, (name) => this.client.api.containers.deleteContainer({ name, force: true, allowMissing: true }).catch(() => undefined));
  }

  async stop(): Promise<void> {
    this.client?.close();
    const p = this.proc;
    if (!p || p.exitCode !== null || p.signalCode !== null) return;
    await new Promise<void>((resolve) => {
      const t = setTimeout(() => {
        p.kill('SIGKILL');
      }, 10000);
      p.once('exit', () => {
        clearTimeout(t);
        resolve();
      });
      p.kill('SIGTERM');
    });
  }

  /** Delete every container through the API, stop the daemon, remove whatever is left on the host. */
  async destroy(): Promise<void> {
    const names = new Set(this.definedNames());
    try {
      if (this.proc && this.proc.exitCode === null) {
        for (const n of await this.listAll().catch(() => [])) names.add(n);
        await this.deleteAll().catch(() => undefined);
      }
    } finally {
      await this.stop();
      // A wedged or crashed daemon may have left monitors, inits, cgroups.
      for (const n of names) {
        const rt = this.runtime(n);
        if (rt) {
          killPid(rt.initPid);
          killPid(rt.monitorPid);
        }
      }
      for (const pid of pidsWithCmdline(this.dir)) killPid(pid);
      for (const n of names) removeCgroupDirs(path.join('osvirt', n));
      for (const l of hostLinksMatching((name) => name === this.bridge)) deleteLink(l);
      // The bridge's NAT table (drivers/lxc/nat.ts) goes with the bridge.
      await removeNat(this.bridge);
      unmountUnder(this.dir);
      rmSync(this.dir, { recursive: true, force: true });
    }
  }
}

/**
 * Remove `rel` (and its children) in every cgroup hierarchy, if present and
 * empty. Retries briefly: a process that just exited may still be leaving it.
 */
export async function removeCgroupDirsSettled(rel: string, tries = 20): Promise<void> {
  for (let i = 0; i < tries; i++) {
    removeCgroupDirs(rel);
    if (!cgroupDirExists(rel)) return;
    await new Promise((r) => setTimeout(r, 100));
  }
}

export function cgroupDirExists(rel: string): boolean {
  try {
    return readdirSync('/sys/fs/cgroup').some((h) => existsSync(path.join('/sys/fs/cgroup', h, rel))) || existsSync(path.join('/sys/fs/cgroup', rel));
  } catch {
    return false;
  }
}

/** Remove `rel` (and its children) in every cgroup hierarchy, if present and empty. */
export function removeCgroupDirs(rel: string): void {
  const roots: string[] = [];
  try {
    for (const e of readdirSync('/sys/fs/cgroup', { withFileTypes: true })) if (e.isDirectory()) roots.push(path.join('/sys/fs/cgroup', e.name));
  } catch {
    return;
  }
  roots.push('/sys/fs/cgroup');
  for (const root of roots) {
    const dir = path.join(root, rel);
    if (!existsSync(dir)) continue;
    rmdirTree(dir);
  }
}

function rmdirTree(dir: string): void {
  try {
    for (const e of readdirSync(dir, { withFileTypes: true })) if (e.isDirectory()) rmdirTree(path.join(dir, e.name));
    rmdirSync(dir);
  } catch {
    // busy or gone: nothing more we can do without touching other processes
  }
}

export function hostLinksMatching(pred: (name: string) => boolean): string[] {
  try {
    return readdirSync('/sys/class/net').filter(pred);
  } catch {
    return [];
  }
}

export function deleteLink(name: string): void {
  try {
    execFileSync('ip', ['link', 'del', name], { stdio: 'ignore' });
  } catch {
    // gone
  }
}
