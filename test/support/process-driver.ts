// A TEST DOUBLE, loaded only by tests with `osvirtd --driver-module`.
// It runs each container's args as a plain host process in its own session
// (no isolation) and declares no optional capabilities, so the frontend's
// UNIMPLEMENTED path and its bookkeeping can be tested against a driver
// that is not lxc. Never registered by default.
import { spawn, type ChildProcess } from 'node:child_process';
import { constants as osConstants } from 'node:os';
import type { ContainerSpec } from '../../src/gen/osvirt/v1/container';
import { DRIVER_PROTOCOL_VERSION, RuntimeStatus, type Driver, type RuntimeState } from '../../src/core/driver';
import { notFound } from '../../src/core/errors';

interface Proc {
  child?: ChildProcess;
  state: RuntimeState;
  exited?: Promise<RuntimeState>;
}

class ProcessTestDriver implements Driver {
  readonly name = 'process-test';
  private readonly procs = new Map<string, Proc>();

  async init(): Promise<void> {}
  async info() {
    return { name: this.name, version: 'test', protocolVersion: DRIVER_PROTOCOL_VERSION, capabilities: [], messages: [] };
  }
  async validate(): Promise<void> {}
  async create(id: string): Promise<void> {
    this.procs.set(id, { state: { status: RuntimeStatus.RUNTIME_STATUS_STOPPED, initPid: 0, exitCode: 0, signal: 0, message: '' } });
  }
  private get(id: string): Proc {
    const p = this.procs.get(id);
    if (!p) throw notFound('container', id);
    return p;
  }
  async start(id: string, spec: ContainerSpec): Promise<RuntimeState> {
    const p = this.get(id);
    const args = spec.process?.args.length ? spec.process.args : ['sleep', '3600'];
    const child = spawn(args[0]!, args.slice(1), { detached: true, stdio: 'ignore' });
    p.child = child;
    p.state = { status: RuntimeStatus.RUNTIME_STATUS_RUNNING, initPid: child.pid ?? 0, exitCode: 0, signal: 0, startTime: new Date(), message: '' };
    p.exited = new Promise((resolve) =>
      child.once('exit', (code, sig) => {
        const signal = sig ? osConstants.signals[sig] : 0;
        p.state = { status: RuntimeStatus.RUNTIME_STATUS_STOPPED, initPid: 0, exitCode: code ?? 0, signal, finishTime: new Date(), message: '' };
        resolve(p.state);
      }),
    );
    return p.state;
  }
  async stop(id: string, signal: number, timeoutMs: number): Promise<RuntimeState> {
    const p = this.get(id);
    if (!p.child || p.state.status !== RuntimeStatus.RUNTIME_STATUS_RUNNING) return p.state;
    p.child.kill(signal);
    const t = await Promise.race([p.exited!.then(() => true), new Promise((r) => setTimeout(() => r(false), timeoutMs))]);
    if (!t) p.child.kill('SIGKILL');
    return p.exited!;
  }
  async kill(id: string, signal: number): Promise<void> {
    this.get(id).child?.kill(signal);
  }
  async delete(id: string): Promise<void> {
    const p = this.procs.get(id);
    if (p?.state.status === RuntimeStatus.RUNTIME_STATUS_RUNNING) await this.stop(id, 9, 0);
    this.procs.delete(id);
  }
  async state(id: string): Promise<RuntimeState> {
    return this.get(id).state;
  }
  async wait(id: string): Promise<RuntimeState> {
    const p = this.get(id);
    return p.exited ?? p.state;
  }
  async recover(items: { id: string }[]): Promise<Record<string, RuntimeState>> {
    // Processes of a previous daemon are not tracked by this double.
    const out: Record<string, RuntimeState> = {};
    for (const { id } of items) {
      await this.create(id);
      out[id] = this.get(id).state;
    }
    return out;
  }
  async close(): Promise<void> {
    for (const p of this.procs.values()) p.child?.kill('SIGKILL');
  }
}

export function createDriver(): Driver {
  return new ProcessTestDriver();
}
