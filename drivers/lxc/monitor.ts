// Talking to the per-container monitor (native/osvirt-helper run): the
// start handshake, waiting for the init's exit over monitor.sock, and the
// exit record it leaves behind. The monitor outlives the daemon, so every
// piece here works the same after a daemon restart, also with a monitor of an
// older build (the text control protocol; see monitorProtocol()).
// docs/helper-protocol.md describes the channels.
import { spawn } from 'node:child_process';
import { promises as fs, existsSync, readFileSync } from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import * as readline from 'node:readline';
import { ControlEvent, ControlRequest, StartCommand, StartEvent } from '../../src/gen/osvirt/helper/v1/helper';
import { encodeFrame, MessageReader } from '../../src/host/helper-wire';
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

/** Where a starting `run` helper's StartEvents come from and where its StartCommand goes. */
interface RunChannel {
  events: NodeJS.ReadableStream;
  send(frame: Buffer): void;
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
    send: (frame) => child.stdin.write(frame),
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
    send: (frame) => sock.write(frame),
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
  const events = new MessageReader(ch.events, StartEvent, 'StartEvent');
  const next = async (): Promise<StartEvent['event']> => {
    let m: StartEvent | undefined;
    try {
      m = await Promise.race([events.next(), ch.gone]);
    } catch (e) {
      if (e instanceof LaunchError) throw e;
      throw new LaunchError(`osvirt-helper broke the start protocol: ${e instanceof Error ? e.message : String(e)}`);
    }
    if (!m) return Promise.race([ch.gone, Promise.reject(new LaunchError(`osvirt-helper closed its output: ${ch.stderr().trim()}`))]);
    if (m.event?.$case === 'failed') throw new LaunchError(m.event.value.message);
    return m.event;
  };
  try {
    const created = await next();
    if (created?.$case !== 'created') throw new LaunchError(`unexpected helper event ${JSON.stringify(created)}`);
    const { initPid, monitorPid } = created.value;
    try {
      await configure(initPid);
    } catch (e) {
      ch.send(encodeFrame(StartCommand, { command: { $case: 'abort', value: {} } }));
      await ch.finished().catch(() => undefined);
      throw e;
    }
    ch.send(encodeFrame(StartCommand, { command: { $case: 'go', value: {} } }));
    const started = await next();
    if (started?.$case !== 'started') throw new LaunchError(`unexpected helper event ${JSON.stringify(started)}`);
    return { initPid, monitorPid };
  } finally {
    events.close();
    ch.release();
  }
}

/**
 * Which control protocol the monitor in monitorDir speaks: 'v1' (helper.proto
 * frames) when it wrote a `protocol` file naming osvirt.helper.v1, 'text'
 * (command lines, JSON answer lines) for a monitor of an older build, which
 * writes no such file.
 */
export function monitorProtocol(monitorDir: string): 'v1' | 'text' {
  try {
    return readFileSync(path.join(monitorDir, 'protocol'), 'utf8').trim() === 'osvirt.helper.v1' ? 'v1' : 'text';
  } catch {
    return 'text';
  }
}

/** The init's exit as the monitor announces it on monitor.sock, in either protocol; undefined when the connection ends first. */
function exitAnnouncement(c: net.Socket, protocol: 'v1' | 'text'): Promise<{ exitCode: number; signal: number } | undefined> {
  if (protocol === 'v1') {
    const events = new MessageReader(c, ControlEvent, 'ControlEvent');
    const loop = async (): Promise<{ exitCode: number; signal: number } | undefined> => {
      for (;;) {
        const m = await events.next();
        if (!m) return undefined;
        if (m.event?.$case === 'exited') return m.event.value;
      }
    };
    return loop().catch(() => undefined);
  }
  // An older monitor: JSON lines, the last one {"event":"exited",...}.
  return new Promise((resolve) => {
    const lines = readline.createInterface({ input: c });
    lines.on('line', (line) => {
      try {
        const m = JSON.parse(line) as { event?: string; exitCode?: number; signal?: number };
        if (m.event === 'exited') resolve({ exitCode: m.exitCode ?? 0, signal: m.signal ?? 0 });
      } catch {
        // ignore a malformed line
      }
    });
    lines.once('close', () => resolve(undefined));
    c.once('close', () => resolve(undefined));
  });
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
    c.on('error', () => undefined); // the end is handled below, as a close
    void exitAnnouncement(c, monitorProtocol(monitorDir)).then((m) => {
      c.destroy();
      if (!m) return setTimeout(fallback, 50);
      // Prefer the durable record (it has finishedAt); fall back to the message.
      resolve(readExitRecord(monitorDir) ?? { ...m, finishedAt: new Date() });
    });
  });
}

/**
 * Set the console's window size through monitor.sock. Resolves with the
 * monitor's refusal ("no tty", ...), or undefined once it was done or the
 * monitor is not there to ask.
 */
export function monitorResize(monitorDir: string, rows: number, cols: number): Promise<string | undefined> {
  return new Promise((resolve) => {
    const c = net.connect(path.join(monitorDir, 'monitor.sock'));
    c.on('error', () => resolve(undefined));
    if (monitorProtocol(monitorDir) === 'text') {
      c.on('connect', () => c.end(`resize ${rows} ${cols}\n`, () => resolve(undefined)));
      return;
    }
    const answers = new MessageReader(c, ControlEvent, 'ControlEvent');
    c.on('connect', () => c.write(encodeFrame(ControlRequest, { request: { $case: 'resize', value: { rows, cols } } })));
    answers.next().then(
      (m) => {
        c.destroy();
        resolve(m?.event?.$case === 'error' ? m.event.value.message : undefined);
      },
      () => {
        c.destroy();
        resolve(undefined);
      },
    );
  });
}

export async function removeMonitorDir(monitorDir: string): Promise<void> {
  await fs.rm(monitorDir, { recursive: true, force: true });
}
