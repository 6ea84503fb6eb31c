// The tools users would pick instead of osvirt, driven the way their users
// drive them, on the same busybox rootfs: LXC 5 (lxc-start -d, overlay rootfs
// like osvirt's, lxc.net.0.type = empty), runc 1.1 (run -d on the rootfs,
// read-only) and the namespace floor (unshare). Each registers its cleanup.
import { spawn } from 'node:child_process';
import { promises as fs, readFileSync, readlinkSync } from 'node:fs';
import * as path from 'node:path';
import type { Cleanup } from './cleanup';
import { cgroupDirExists, removeCgroupDirs, removeCgroupDirsSettled } from './cgroups';
import { childrenOf, killPid, pidAlive, run, runOk, sleep, waitGone, type RunResult } from './proc';

/** The idle init every variant runs: exits 0 on SIGTERM, like osvirt's busybox default. */
export const IDLE_SCRIPT = "#!/bin/sh\ntrap 'exit 0' TERM INT\nwhile :; do sleep 3600 & wait $!; done\n";
export const IDLE_ARGV = ['/bin/sh', '-c', "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done"];

/**
 * Is the busybox init running with its SIGTERM trap installed (SigCgt bit 15)?
 * Checking the executable matters: runc's own init (Go) catches every signal
 * until it execs the container's program.
 */
export function catchesTerm(pid: number): boolean {
  try {
    if (!readlinkSync(`/proc/${pid}/exe`).endsWith('busybox')) return false;
    const m = /^SigCgt:\s*([0-9a-f]+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? ((BigInt(`0x${m[1]}`) >> 14n) & 1n) === 1n : false;
  } catch {
    return false;
  }
}

/** Wait (untimed) until an init can act on SIGTERM, so a stop right after a start is not lost. */
export async function waitForTermHandler(pid: number, timeoutMs = 3000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!catchesTerm(pid) && pidAlive(pid)) {
    if (Date.now() > end) throw new Error(`init ${pid} did not install its SIGTERM handler within ${timeoutMs} ms`);
    await sleep(1);
  }
}

/** The error lines of a CRIU log, if it exists. */
function readLog(file: string): string {
  try {
    return readFileSync(file, 'utf8')
      .split('\n')
      .filter((l) => /Error|error/.test(l) && !/RLIMIT_NOFILE/.test(l))
      .slice(-3)
      .join('\n');
  } catch {
    return '';
  }
}

function failure(what: string, r: RunResult, log?: string): Error {
  const out = [(r.stderr || r.stdout).trim(), log?.trim()].filter(Boolean).join('\n').split('\n').slice(-4).join(' | ');
  return new Error(`${what} exited ${r.code ?? r.signal}: ${out || 'no output'}`);
}

export class LxcAnchor {
  private readonly names = new Set<string>();
  /** Every name used, destroyed or not: LXC leaves an unprivileged container's monitor cgroups behind. */
  private readonly used = new Set<string>();
  readonly criuEnv: NodeJS.ProcessEnv;

  /**
   * unprivileged: LXC's own unprivileged container (lxc.idmap) with an
   * idmapped rootfs (lxc.rootfs.options = idmap=container). LXC 5.0.2 idmaps
   * only a "dir" rootfs, so it runs on the shared rootfs itself, not on an
   * overlay as osvirt does; the config loses its rootfs line before
   * lxc-destroy, which would otherwise remove that directory.
   */
  constructor(
    readonly lxcpath: string,
    readonly rootfs: string,
    cleanup: Cleanup,
    criuDir?: string,
    readonly unprivileged?: { hostId: number },
  ) {
    this.criuEnv = { ...process.env, PATH: `${criuDir ? criuDir + ':' : ''}${process.env['PATH'] ?? '/usr/sbin:/usr/bin:/sbin:/bin'}` };
    const pivotExisted = cgroupDirExists('lxc.pivot');
    cleanup.add('lxc containers', async () => {
      for (const n of this.names) await this.forceRemove(n);
      for (const n of this.used) {
        removeCgroupDirs(`lxc.payload.${n}`);
        removeCgroupDirs(`lxc.monitor.${n}`);
      }
      // lxc-start makes an empty "lxc.pivot" cgroup for its monitor; remove it if it is ours.
      if (!pivotExisted) await removeCgroupDirsSettled('lxc.pivot');
      await fs.rm(this.lxcpath, { recursive: true, force: true });
    });
  }

  private config(name: string, rootfsSpec: string): string {
    const u = this.unprivileged;
    return [
      `lxc.uts.name = ${name}`,
      `lxc.rootfs.path = ${u ? `dir:${this.rootfs}` : rootfsSpec}`,
      ...(u ? ['lxc.rootfs.options = idmap=container', `lxc.idmap = u 0 ${u.hostId} 65536`, `lxc.idmap = g 0 ${u.hostId} 65536`] : []),
      'lxc.net.0.type = empty',
      'lxc.init.cmd = /idle.sh',
      'lxc.signal.halt = SIGTERM',
      'lxc.mount.auto = proc:mixed sys:ro',
      'lxc.autodev = 1',
      'lxc.tty.max = 0',
      'lxc.pty.max = 16',
      // lxc-checkpoint refuses to restore a container with a console.
      'lxc.console.path = none',
      `lxc.log.file = ${path.join(this.lxcpath, name, 'lxc.log')}`,
      'lxc.log.level = ERROR',
      '',
    ].join('\n');
  }

  /** "Create": the container's config dir, with an overlay over the shared rootfs (like osvirt's). */
  async create(name: string): Promise<void> {
    this.names.add(name);
    this.used.add(name);
    const dir = path.join(this.lxcpath, name);
    await fs.mkdir(path.join(dir, 'delta0'), { recursive: true });
    await fs.writeFile(path.join(dir, 'config'), this.config(name, `overlay:${this.rootfs}:${path.join(dir, 'delta0')}`));
  }

  /** A container with its own copied dir rootfs: lxc-checkpoint cannot restore an overlay rootfs (LXC 5.0.2). */
  async createWithCopy(name: string): Promise<void> {
    this.names.add(name);
    this.used.add(name);
    const dir = path.join(this.lxcpath, name);
    await fs.mkdir(dir, { recursive: true });
    await runOk('cp', ['-a', this.rootfs, path.join(dir, 'rootfs')]);
    await fs.writeFile(path.join(dir, 'config'), this.config(name, `dir:${path.join(dir, 'rootfs')}`));
  }

  private log(name: string): string {
    try {
      return readFileSync(path.join(this.lxcpath, name, 'lxc.log'), 'utf8');
    } catch {
      return '';
    }
  }

  /** lxc-start -d returns once the container is RUNNING. */
  async start(name: string): Promise<RunResult> {
    const r = await run('lxc-start', ['-P', this.lxcpath, '-n', name, '-d'], { quiet: true, timeoutMs: 30000 });
    if (r.code !== 0) throw failure('lxc-start', r, this.log(name));
    return r;
  }

  async initPid(name: string): Promise<number> {
    const r = await runOk('lxc-info', ['-P', this.lxcpath, '-n', name, '-p', '-H']);
    return Number(r.stdout.trim());
  }

  /** lxc-stop: the halt signal (SIGTERM here), waiting for the init to exit. */
  async stop(name: string): Promise<RunResult> {
    const r = await run('lxc-stop', ['-P', this.lxcpath, '-n', name], { timeoutMs: 70000 });
    if (r.code !== 0) throw failure('lxc-stop', r);
    return r;
  }

  /** Untimed, before destroy: an unprivileged anchor's config forgets the shared rootfs. */
  async prepareDestroy(name: string): Promise<void> {
    if (!this.unprivileged) return;
    const file = path.join(this.lxcpath, name, 'config');
    const lines = (await fs.readFile(file, 'utf8')).split('\n').filter((l) => !l.startsWith('lxc.rootfs.'));
    await fs.writeFile(file, lines.join('\n'));
  }

  async destroy(name: string): Promise<RunResult> {
    const r = await run('lxc-destroy', ['-P', this.lxcpath, '-n', name], { timeoutMs: 30000 });
    if (r.code !== 0) throw failure('lxc-destroy', r);
    this.names.delete(name);
    return r;
  }

  async checkpoint(name: string, dir: string): Promise<RunResult> {
    const r = await run('lxc-checkpoint', ['-P', this.lxcpath, '-n', name, '-D', dir, '-s'], { env: this.criuEnv, timeoutMs: 60000 });
    if (r.code !== 0) throw failure('lxc-checkpoint -s', r, readLog(path.join(dir, 'dump.log')));
    return r;
  }

  async restore(name: string, dir: string): Promise<RunResult> {
    const r = await run('lxc-checkpoint', ['-P', this.lxcpath, '-n', name, '-D', dir, '-r'], { env: this.criuEnv, timeoutMs: 60000, quiet: true });
    if (r.code !== 0) throw failure('lxc-checkpoint -r', r, readLog(path.join(dir, 'restore.log')) || this.log(name));
    return r;
  }

  async forceRemove(name: string): Promise<void> {
    await run('lxc-stop', ['-P', this.lxcpath, '-n', name, '-k'], { timeoutMs: 20000 }).catch(() => undefined);
    await this.prepareDestroy(name).catch(() => undefined);
    await run('lxc-destroy', ['-P', this.lxcpath, '-n', name, '-f'], { timeoutMs: 20000 }).catch(() => undefined);
    this.names.delete(name);
  }
}

export class RuncAnchor {
  private readonly names = new Set<string>();
  private template: Record<string, unknown> | undefined;
  readonly cgroupParent = `osvirt-bench-${process.pid}`;
  readonly criuEnv: NodeJS.ProcessEnv;

  constructor(
    readonly root: string,
    readonly bundles: string,
    readonly rootfs: string,
    cleanup: Cleanup,
    criuDir?: string,
  ) {
    this.criuEnv = { ...process.env, PATH: `${criuDir ? criuDir + ':' : ''}${process.env['PATH'] ?? '/usr/sbin:/usr/bin:/sbin:/bin'}` };
    cleanup.add('runc containers', async () => {
      for (const n of this.names) await this.forceRemove(n);
      await removeCgroupDirsSettled(this.cgroupParent);
      await fs.rm(this.root, { recursive: true, force: true });
      await fs.rm(this.bundles, { recursive: true, force: true });
    });
  }

  /** `runc spec`, adjusted: no terminal, the idle init, the shared rootfs read-only, our cgroup parent. */
  private async spec(): Promise<Record<string, unknown>> {
    if (this.template) return this.template;
    const dir = path.join(this.bundles, '.spec');
    await fs.mkdir(dir, { recursive: true });
    await runOk('runc', ['spec'], { cwd: dir });
    this.template = JSON.parse(await fs.readFile(path.join(dir, 'config.json'), 'utf8')) as Record<string, unknown>;
    return this.template;
  }

  async create(name: string): Promise<void> {
    this.names.add(name);
    const t = await this.spec();
    const c = JSON.parse(JSON.stringify(t)) as {
      process: { terminal: boolean; args: string[] };
      root: { path: string; readonly: boolean };
      hostname: string;
      linux: { cgroupsPath?: string };
    };
    c.process.terminal = false;
    c.process.args = IDLE_ARGV;
    c.root = { path: this.rootfs, readonly: true };
    c.hostname = name;
    // cgroupfs driver on the hybrid layout: a path under our own parent in every v1 hierarchy.
    c.linux.cgroupsPath = `/${this.cgroupParent}/${name}`;
    const dir = path.join(this.bundles, name);
    await fs.mkdir(dir, { recursive: true });
    await fs.writeFile(path.join(dir, 'config.json'), JSON.stringify(c));
  }

  private bundle(name: string): string {
    return path.join(this.bundles, name);
  }

  /** runc run -d: returns once the init is started. */
  async start(name: string): Promise<RunResult> {
    const r = await run('runc', ['--root', this.root, 'run', '-d', '--pid-file', path.join(this.bundle(name), 'pid'), '-b', this.bundle(name), name], {
      quiet: true,
      timeoutMs: 30000,
    });
    if (r.code !== 0) {
      const again = await run('runc', ['--root', this.root, 'run', '-d', '-b', this.bundle(name), `${name}-diag`], { timeoutMs: 30000 });
      await run('runc', ['--root', this.root, 'delete', '-f', `${name}-diag`]);
      throw failure('runc run', again);
    }
    return r;
  }

  initPid(name: string): number {
    try {
      return Number(readFileSync(path.join(this.bundle(name), 'pid'), 'utf8').trim());
    } catch {
      return 0;
    }
  }

  /** Graceful stop the way a runc user does it: kill TERM, wait for the init to exit. */
  async stop(name: string): Promise<number> {
    const pid = this.initPid(name);
    const t0 = process.hrtime.bigint();
    const r = await run('runc', ['--root', this.root, 'kill', name, 'TERM'], { timeoutMs: 30000 });
    if (r.code !== 0) throw failure('runc kill', r);
    if (!(await waitGone(pid, 15000))) throw new Error(`runc container ${name} did not exit on SIGTERM`);
    return Number(process.hrtime.bigint() - t0) / 1e6;
  }

  async delete(name: string): Promise<RunResult> {
    const r = await run('runc', ['--root', this.root, 'delete', name], { timeoutMs: 30000 });
    if (r.code !== 0) throw failure('runc delete', r);
    this.names.delete(name);
    return r;
  }

  async checkpoint(name: string, dir: string): Promise<RunResult> {
    const r = await run('runc', ['--root', this.root, 'checkpoint', '--image-path', dir, '--work-path', dir, name], { env: this.criuEnv, timeoutMs: 60000 });
    if (r.code !== 0) throw failure('runc checkpoint', r, readLog(path.join(dir, 'dump.log')));
    return r;
  }

  async restore(name: string, dir: string): Promise<RunResult> {
    const r = await run(
      'runc',
      [
        '--root',
        this.root,
        'restore',
        '-d',
        '--image-path',
        dir,
        '--work-path',
        dir,
        '--pid-file',
        path.join(this.bundle(name), 'pid'),
        '-b',
        this.bundle(name),
        name,
      ],
      {
        env: this.criuEnv,
        timeoutMs: 60000,
        quiet: true,
      },
    );
    if (r.code !== 0) throw failure('runc restore', r, readLog(path.join(dir, 'restore.log')));
    return r;
  }

  async forceRemove(name: string): Promise<void> {
    await run('runc', ['--root', this.root, 'delete', '-f', name], { timeoutMs: 20000 }).catch(() => undefined);
    this.names.delete(name);
  }
}

function commOf(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    return '';
  }
}

export const FLOOR_ARGS = ['--fork', '--pid', '--mount', '--uts', '--ipc', '--net'];

/** The floor for a start: every namespace a container gets, created and torn down, running `true`. */
export async function floorStart(): Promise<number> {
  const r = await run('unshare', [...FLOOR_ARGS, 'true'], { quiet: true, timeoutMs: 10000 });
  if (r.code !== 0) throw new Error(`unshare exited ${r.code}`);
  return r.ms;
}

/**
 * The floor for a stop: SIGKILL to a process that is pid 1 of its namespaces,
 * until its parent has reaped it (namespace teardown included).
 */
export async function floorStop(cleanup: Cleanup): Promise<number> {
  const p = spawn('unshare', [...FLOOR_ARGS, 'sleep', '600'], { stdio: 'ignore' });
  const id = cleanup.add('floor process', () => killPid(p.pid ?? 0));
  try {
    const exited = new Promise<void>((resolve) => p.once('exit', () => resolve()));
    let child = 0;
    const end = Date.now() + 5000;
    while (Date.now() < end) {
      child = childrenOf(p.pid ?? 0)[0] ?? 0;
      if (child && commOf(child) === 'sleep') break;
      await sleep(1);
    }
    if (!child) throw new Error('unshare did not start its child');
    const t0 = process.hrtime.bigint();
    killPid(child);
    await exited;
    return Number(process.hrtime.bigint() - t0) / 1e6;
  } finally {
    cleanup.drop(id);
  }
}
