// Start a plugin program and read its handshake: for tools and tests that
// talk to a plugin directly (the conformance runner), without a daemon.
import { spawn, type ChildProcess } from 'node:child_process';
import * as readline from 'node:readline';
import { parseHandshake, PLUGIN_ENV, type Handshake } from './handshake';

export interface SpawnedPlugin {
  handshake: Handshake;
  endpoint: string;
  proc: ChildProcess;
  /** Everything it wrote on stderr so far. */
  stderr(): string;
  /** SIGTERM, then SIGKILL after graceMs; resolves when it has exited. */
  stop(graceMs?: number): Promise<void>;
}

export function spawnPlugin(
  cmd: string,
  args: string[],
  o: { env?: Record<string, string>; socket?: string; stateDir?: string; timeoutMs?: number } = {},
): Promise<SpawnedPlugin> {
  const env: NodeJS.ProcessEnv = { ...process.env, ...o.env, [PLUGIN_ENV.lifeline]: 'stdin' };
  if (o.socket) env[PLUGIN_ENV.socket] = o.socket;
  if (o.stateDir) env[PLUGIN_ENV.stateDir] = o.stateDir;
  const proc = spawn(cmd, args, { env, stdio: ['pipe', 'pipe', 'pipe'] });
  proc.stdin!.on('error', () => undefined);
  let err = '';
  proc.stderr!.on('data', (b: Buffer) => {
    err += b.toString();
    if (err.length > 65536) err = err.slice(-32768);
  });
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  const stop = async (graceMs = 3000) => {
    if (proc.exitCode !== null || proc.signalCode !== null) return;
    proc.kill('SIGTERM');
    const t = setTimeout(() => proc.kill('SIGKILL'), graceMs);
    await exited;
    clearTimeout(t);
  };
  return new Promise((resolve, reject) => {
    const rl = readline.createInterface({ input: proc.stdout! });
    const timer = setTimeout(() => {
      void stop(0);
      reject(new Error(`${cmd} printed no handshake within ${o.timeoutMs ?? 20000} ms; stderr: ${err.slice(-2000)}`));
    }, o.timeoutMs ?? 20000);
    proc.once('error', (e) => {
      clearTimeout(timer);
      reject(new Error(`cannot run ${cmd}: ${e.message}`));
    });
    proc.once('exit', (code, sig) => {
      clearTimeout(timer);
      reject(new Error(`${cmd} exited (${sig ?? `code ${code}`}) before its handshake; stderr: ${err.slice(-2000)}`));
    });
    rl.once('line', (line) => {
      clearTimeout(timer);
      try {
        const handshake = parseHandshake(line);
        resolve({ handshake, endpoint: `unix://${handshake.address}`, proc, stderr: () => err, stop });
      } catch (e) {
        void stop(0);
        reject(e);
      }
    });
  });
}
