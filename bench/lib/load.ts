// Closed-loop load for unary calls: `concurrency` callers, each issuing the
// next call as soon as the previous one returns, for a fixed time.
import { spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import * as path from 'node:path';
import * as readline from 'node:readline';
import { connectAsync } from '../../src/client';
import { repoPath } from '../../src/paths';
import type { Cleanup } from './cleanup';
import { roundSummary, summarize, type Summary } from './stats';

export interface LoadResult {
  calls: number;
  errors: number;
  seconds: number;
  callsPerSecond: number;
  /** Per-call latency, milliseconds. */
  latency: Summary;
}

export async function closedLoop(call: () => Promise<unknown>, concurrency: number, seconds: number, warmupSeconds = 0.25): Promise<LoadResult> {
  const runFor = async (secs: number, record: boolean) => {
    const lat: number[] = [];
    let errors = 0;
    const end = Date.now() + secs * 1000;
    const t0 = process.hrtime.bigint();
    await Promise.all(
      Array.from({ length: concurrency }, async () => {
        while (Date.now() < end) {
          const a = process.hrtime.bigint();
          try {
            await call();
            if (record) lat.push(Number(process.hrtime.bigint() - a) / 1e6);
          } catch {
            errors++;
          }
        }
      }),
    );
    const elapsed = Number(process.hrtime.bigint() - t0) / 1e9;
    return { lat, errors, elapsed };
  };
  if (warmupSeconds > 0) await runFor(warmupSeconds, false);
  const r = await runFor(seconds, true);
  return {
    calls: r.lat.length,
    errors: r.errors,
    seconds: +r.elapsed.toFixed(3),
    callsPerSecond: +(r.lat.length / r.elapsed).toFixed(1),
    latency: roundSummary(summarize(r.lat), 4),
  };
}

/** The bare grpc-js server, in its own process, answering `responses` from memory. */
export class BaselineServer {
  proc?: ChildProcess;
  client?: ReturnType<typeof connectAsync>;

  constructor(
    readonly dir: string,
    readonly cleanup: Cleanup,
  ) {}

  async start(responses: { get: unknown; list: unknown }, tag: string): Promise<ReturnType<typeof connectAsync>> {
    const file = path.join(this.dir, `baseline-${tag}.json`);
    const socket = path.join(this.dir, `baseline-${tag}.sock`);
    writeFileSync(file, JSON.stringify(responses));
    const main = repoPath('dist', 'bench', 'grpc-baseline-server.js');
    const p = spawn(process.execPath, [main, socket, file], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.proc = p;
    const id = this.cleanup.add('baseline gRPC server', () => {
      if (p.exitCode === null) p.kill('SIGKILL');
    });
    let err = '';
    p.stderr!.on('data', (b: Buffer) => (err += b.toString()));
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`baseline server did not start: ${err}`)), 15000);
      readline.createInterface({ input: p.stdout! }).once('line', () => {
        clearTimeout(t);
        resolve();
      });
      p.once('exit', (code) => {
        clearTimeout(t);
        reject(new Error(`baseline server exited ${code}: ${err}`));
      });
    });
    p.once('exit', () => this.cleanup.drop(id));
    this.client = connectAsync({ address: `unix://${socket}` });
    return this.client;
  }

  async stop(): Promise<void> {
    this.client?.close();
    const p = this.proc;
    if (!p || p.exitCode !== null) return;
    await new Promise<void>((resolve) => {
      p.once('exit', () => resolve());
      p.kill('SIGTERM');
      setTimeout(() => p.kill('SIGKILL'), 3000).unref();
    });
  }
}
