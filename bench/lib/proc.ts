// Running host commands, timed from this process: spawn to exit, with the
// same Node spawn overhead for every anchor so ratios stay fair.
import { spawn, type SpawnOptions } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { killPid, pidAlive } from '../../src/host/processes';

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** Wall time from spawn to exit, in milliseconds. */
  ms: number;
}

export interface RunOptions {
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  timeoutMs?: number;
  input?: string;
  /** Do not capture output (stdio to /dev/null): for anchors that would otherwise hold our pipes. */
  quiet?: boolean;
}

export function run(cmd: string, args: string[], o: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const opts: SpawnOptions = { env: o.env ?? process.env, cwd: o.cwd, stdio: o.quiet ? 'ignore' : ['pipe', 'pipe', 'pipe'] };
    const t0 = process.hrtime.bigint();
    const child = spawn(cmd, args, opts);
    let stdout = '';
    let stderr = '';
    child.stdout?.on('data', (b: Buffer) => {
      if (stdout.length < 4 << 20) stdout += b.toString();
    });
    child.stderr?.on('data', (b: Buffer) => {
      if (stderr.length < 1 << 20) stderr += b.toString();
    });
    let timer: NodeJS.Timeout | undefined;
    if (o.timeoutMs) {
      timer = setTimeout(() => {
        child.kill('SIGKILL');
      }, o.timeoutMs);
    }
    child.once('error', (e) => {
      if (timer) clearTimeout(timer);
      reject(new Error(`cannot run ${cmd}: ${e.message}`));
    });
    child.once('close', (code, signal) => {
      const ms = Number(process.hrtime.bigint() - t0) / 1e6;
      if (timer) clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, ms });
    });
    if (child.stdin) {
      if (o.input !== undefined) child.stdin.end(o.input);
      else child.stdin.end();
    }
  });
}

/** Run and insist on exit code 0. */
export async function runOk(cmd: string, args: string[], o: RunOptions = {}): Promise<RunResult> {
  const r = await run(cmd, args, o);
  if (r.code !== 0) {
    const out = (r.stderr || r.stdout).trim().split('\n').slice(-6).join(' | ');
    throw new Error(`${cmd} ${args.join(' ')} exited ${r.code ?? r.signal}: ${out || 'no output'}`);
  }
  return r;
}

export async function which(cmd: string): Promise<string | undefined> {
  const r = await run('sh', ['-c', `command -v ${cmd}`]).catch(() => undefined);
  const p = r?.stdout.trim();
  return r?.code === 0 && p ? p : undefined;
}

/** Alive (a zombie is not) and a quiet kill: osvirt's own helpers (src/host/processes.ts). */
export { killPid, pidAlive };

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Wait until a pid is gone (or a zombie), polling every `everyMs`. */
export async function waitGone(pid: number, timeoutMs = 10_000, everyMs = 1): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  while (pidAlive(pid)) {
    if (Date.now() > end) return false;
    await sleep(everyMs);
  }
  return true;
}

/** Direct children of a process (from /proc/PID/task/* /children). */
export function childrenOf(pid: number): number[] {
  const out: number[] = [];
  try {
    for (const t of readdirSync(`/proc/${pid}/task`)) {
      const c = readFileSync(`/proc/${pid}/task/${t}/children`, 'utf8').trim();
      if (c) out.push(...c.split(/\s+/).map(Number));
    }
  } catch {
    // gone
  }
  return out;
}

/**
 * Memory of a process in KiB: RSS (shared pages in full), PSS (shared pages
 * split among their users) and USS (pages only this process has: what one
 * more instance costs).
 */
export function memoryOf(pid: number): { rssKiB: number; pssKiB: number; ussKiB: number } | undefined {
  try {
    const s = readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
    const f = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+)`, 'm').exec(s)?.[1] ?? NaN);
    return { rssKiB: f('Rss'), pssKiB: f('Pss'), ussKiB: f('Private_Clean') + f('Private_Dirty') };
  } catch {
    return undefined;
  }
}

export function memAvailableKiB(): number {
  const m = /^MemAvailable:\s+(\d+)/m.exec(readFileSync('/proc/meminfo', 'utf8'));
  return Number(m?.[1] ?? NaN);
}

/** Run `fn` over items with at most `limit` in flight. */
export async function pool<T, R>(items: readonly T[], limit: number, fn: (item: T, index: number) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const workers = Array.from({ length: Math.min(limit, items.length) }, async () => {
    for (;;) {
      const i = next++;
      if (i >= items.length) return;
      out[i] = await fn(items[i] as T, i);
    }
  });
  await Promise.all(workers);
  return out;
}
