// Talking to the per-container monitor (native/osvirt-helper run): the
// start handshake, waiting for the init's exit over monitor.sock, and the
// exit record it leaves behind. The monitor outlives the daemon, so every
// piece here works the same after a daemon restart.
import { spawn } from 'node:child_process';
import { promises as fs, existsSync, readFileSync } from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import * as readline from 'node:readline';
import { pidAlive } from '../../src/host/processes';
import type { Launcher } from './launcher';

export interface ExitRecord {
  exitCode: number;
  signal: number;
  finishedAt: Date;
}

export interface Launched {
  initPid: number;
  monitorPid: number;
}

export class LaunchError extends Error {}

/** Where a starting `run` helper's events come from and where "go" goes. */
interface RunChannel {
  events: NodeJS.ReadableStream;
  send(line: string): void;
  /** Rejects when the helper goes away (exit, closed connection). */
  gone: Promise<never>;
  stderr(): string;
  /** The start is over: let go of the helper. */
  release(): void;
  /** After an abort: wait for the helper to finish. */
  finished(): Promise<void>;
}

function spawnRun(helper: string, args: string[]): RunChannel {
  const child = spawn(helper, ['run', ...args], { detached: true, stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (b: Buffer) => {
    if (stderr.length < 8192) stderr += b.toString();
  });
  const gone = new Promise<never>((_, reject) => {
    child.once('exit', (code, sig) => reject(new LaunchError(`osvirt-helper exited (${sig ?? code}) during start: ${stderr.trim() || 'no message'}`)));
    child.once('error', (e) => reject(new LaunchError(`cannot run ${helper}: ${e.message}; build it with "make -C native"`)));
  });
  return {
    events: child.stdout,
    send: (line) => child.stdin.write(line),
    gone,
    stderr: () => stderr,
    release() {
      child.stdin.destroy();
      child.stdout.destroy();
      child.stderr.destroy();
      child.unref();
    },
    finished: () => new Promise((r) => (child.exitCode !== null || child.signalCode !== null ? r() : child.once('exit', () => r()))),
  };
}

function socketRun(sock: net.Socket): RunChannel {
  sock.on('error', () => undefined); // a reset ends in 'close' like any end
  const gone = new Promise<never>((_, reject) => {
    sock.once('close', () => reject(new LaunchError('osvirt-helper closed the start connection (its message is in the daemon log)')));
  });
  return {
    events: sock,
    send: (line) => sock.write(line),
    gone,
    stderr: () => '',
    release: () => sock.destroy(),
    finished: () => new Promise((r) => (sock.closed ? r() : sock.once('close', () => r()))),
  };
}

/**
 * Start `osvirt-helper run ARGS` (through the launcher when there is one), run
 * `configure(initPid)` while the init waits (network setup), then release it.
 * Resolves once the init has exec'd.
 */
export async function launch(helper: string, args: string[], configure: (initPid: number) => Promise<void>, launcher?: Launcher): Promise<Launched> {
  const sock = await launcher?.open(args);
  const ch = sock ? socketRun(sock) : spawnRun(helper, args);
  ch.gone.catch(() => undefined);
  const lines = readline.createInterface({ input: ch.events });
  const iter = lines[Symbol.asyncIterator]();
  const next = async (): Promise<Record<string, unknown>> => {
    const r = await Promise.race([iter.next(), ch.gone]);
    if (r.done) return Promise.race([ch.gone, Promise.reject(new LaunchError(`osvirt-helper closed its output: ${ch.stderr().trim()}`))]);
    try {
      return JSON.parse(r.value) as Record<string, unknown>;
    } catch {
      throw new LaunchError(`osvirt-helper said something unexpected: ${r.value}`);
    }
  };
  try {
    const created = await next();
    if (created['event'] === 'error') throw new LaunchError(String(created['message']));
    if (created['event'] !== 'created') throw new LaunchError(`unexpected helper event ${JSON.stringify(created)}`);
    const initPid = Number(created['initPid']);
    const monitorPid = Number(created['monitorPid']);
    try {
      await configure(initPid);
    } catch (e) {
      ch.send('abort\n');
      await ch.finished().catch(() => undefined);
      throw e;
    }
    ch.send('go\n');
    const started = await next();
    if (started['event'] !== 'started') throw new LaunchError(String(started['message'] ?? JSON.stringify(started)));
    return { initPid, monitorPid };
  } finally {
    lines.close();
    ch.release();
  }
}

export function readExitRecord(monitorDir: string): ExitRecord | undefined {
  try {
    const j = JSON.parse(readFileSync(path.join(monitorDir, 'exit'), 'utf8')) as { exitCode: number; signal?: number; finishedAt?: string };
    return { exitCode: j.exitCode, signal: j.signal ?? 0, finishedAt: j.finishedAt ? new Date(j.finishedAt) : new Date() };
  } catch {
    return undefined;
  }
}

/**
 * Resolve when the container's init exits: from the monitor's socket while it
 * runs, from its exit record once it is gone. Resolves undefined when the
 * monitor vanished without leaving a record.
 */
export function waitExit(monitorDir: string, monitorPid: number): Promise<ExitRecord | undefined> {
  return new Promise((resolve) => {
    const fallback = () => {
      const rec = readExitRecord(monitorDir);
      if (rec || !pidAlive(monitorPid)) return resolve(rec);
      // The monitor is alive but the socket is not answering yet: poll.
      setTimeout(() => waitExit(monitorDir, monitorPid).then(resolve), 200);
    };
    const sock = path.join(monitorDir, 'monitor.sock');
    if (!existsSync(sock)) return fallback();
    const c = net.connect(sock);
    let buf = '';
    let done = false;
    c.on('data', (b) => {
      buf += b.toString();
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        try {
          const m = JSON.parse(line) as { event?: string; exitCode?: number; signal?: number };
          if (m.event === 'exited') {
            done = true;
            c.destroy();
            // Prefer the durable record (it has finishedAt); fall back to the message.
            const rec = readExitRecord(monitorDir);
            resolve(rec ?? { exitCode: m.exitCode ?? 0, signal: m.signal ?? 0, finishedAt: new Date() });
          }
        } catch {
          // ignore a malformed line
        }
      }
    });
    c.on('error', () => {
      if (!done) {
        done = true;
        setTimeout(fallback, 50);
      }
    });
    c.on('close', () => {
      if (!done) {
        done = true;
        setTimeout(fallback, 50);
      }
    });
  });
}

/** Send one command line to the monitor (e.g. "resize 24 80"). */
export function monitorCommand(monitorDir: string, line: string): Promise<void> {
  return new Promise((resolve) => {
    const c = net.connect(path.join(monitorDir, 'monitor.sock'));
    c.on('connect', () => c.end(`${line}\n`, () => resolve()));
    c.on('error', () => resolve());
  });
}

export async function removeMonitorDir(monitorDir: string): Promise<void> {
  await fs.rm(monitorDir, { recursive: true, force: true });
}
