// The TypeScript side of osvirt.driver.v1.DriverService. Built-in drivers
// implement it directly; src/plugin/ adapts it to and from gRPC, so a driver
// behaves the same in-process and out of process. Optional methods map to
// capabilities: a driver that lacks one leaves the method undefined and the
// core answers UNIMPLEMENTED.
import type { Readable, Writable } from 'node:stream';
import type { Logger } from 'pino';
import type { ContainerSpec, ContainerStats, CheckpointOptions, CheckpointStats, ExecExit, User } from '../gen/osvirt/v1/container';
import type { ExtensionService, GetInfoResponse, RuntimeState as WireRuntimeState } from '../gen/osvirt/driver/v1/driver';
import type { DriverExtension } from './extension';

export { RuntimeStatus } from '../gen/osvirt/driver/v1/driver';
/**
 * osvirt.driver.v1.GetInfoResponse. A driver in TypeScript leaves extensions
 * out: the plugin server declares them from extensions() (src/plugin).
 */
export type DriverInfo = Omit<GetInfoResponse, 'extensions'> & { extensions?: ExtensionService[] };

/** osvirt.driver.v1.RuntimeState, with the flags most states leave unset optional. */
export type RuntimeState = Omit<WireRuntimeState, 'rebootRequested'> & { rebootRequested?: boolean };

export const DRIVER_PROTOCOL_VERSION = 1;

export type Capability = 'pause' | 'exec' | 'console' | 'stats' | 'checkpoint';

export interface DriverContext {
  /** A directory this driver owns for its per-container state. */
  stateDir: string;
  logger: Logger;
}

export interface ExecOptions {
  id: string;
  args: string[];
  env: string[];
  cwd: string;
  user?: User | undefined;
  tty: boolean;
  rows?: number | undefined;
  cols?: number | undefined;
}

/** A running exec'd process: write stdin, read stdout/stderr, await exit. */
export interface ExecSession {
  stdin: Writable;
  stdout: Readable;
  /** Empty (ends at once) in tty mode, where stderr is merged into stdout. */
  stderr: Readable;
  resize(rows: number, cols: number): void;
  exit: Promise<ExecExit>;
  /** Kill the process (client went away). */
  kill(): void;
}

export interface ConsoleSession {
  output: Readable;
  input: Writable;
  resize(rows: number, cols: number): void;
  close(): void;
}

export interface StopOptions {
  /** The caller named the timeout; otherwise it is the spec's stop_timeout or the daemon's default. */
  timeoutGiven?: boolean;
}

export interface CheckpointResult {
  criuVersion: string;
  stats: CheckpointStats;
  state: RuntimeState;
}

export interface Driver {
  readonly name: string;
  /** Probe the host; throw to mark the driver FAILED (the daemon keeps running). */
  init(ctx: DriverContext): Promise<void>;
  info(): Promise<DriverInfo>;
  /** Reject a spec this driver cannot run here (INVALID_ARGUMENT / FAILED_PRECONDITION). */
  validate(id: string, spec: ContainerSpec): Promise<void>;
  create(id: string, spec: ContainerSpec): Promise<void>;
  /** peerPids: container name -> host init pid of every other running container, for namespaces the spec joins. */
  start(id: string, spec: ContainerSpec, peerPids: Record<string, number>): Promise<RuntimeState>;
  stop(id: string, signal: number, timeoutMs: number, opts?: StopOptions): Promise<RuntimeState>;
  kill(id: string, signal: number): Promise<void>;
  delete(id: string): Promise<void>;
  state(id: string): Promise<RuntimeState>;
  /** Resolves when the init exits (at once when not running). */
  wait(id: string): Promise<RuntimeState>;
  /**
   * After a daemon restart: the state of each defined container. With
   * removeOrphans the items are every container the daemon has a definition
   * of, and the driver removes the state of any other it finds (a create or
   * delete a crash cut short).
   */
  recover(items: { id: string; spec: ContainerSpec }[], opts?: { removeOrphans?: boolean }): Promise<Record<string, RuntimeState>>;
  /** The signal that halts this container's init when neither the request nor the spec names one (0: SIGTERM). */
  stopSignal?(id: string): Promise<number>;
  /**
   * The other containers a start of this spec joins through the driver's own
   * options (lxc's share_ipc_with), which the core locks with it so that they
   * keep their init while it is joined. Containers the spec's own fields name
   * (network.container) the core knows itself. Undefined: none.
   */
  dependencies?(id: string, spec: ContainerSpec): Promise<string[]>;

  pause?(id: string): Promise<void>;
  resume?(id: string): Promise<void>;
  exec?(opts: ExecOptions): Promise<ExecSession>;
  console?(id: string): Promise<ConsoleSession>;
  stats?(id: string): Promise<ContainerStats>;
  checkpoint?(id: string, imageDir: string, options: CheckpointOptions, parentImageDir: string): Promise<CheckpointResult>;
  restore?(id: string, spec: ContainerSpec, imageDir: string, tcpEstablished: boolean, timeoutMs: number): Promise<RuntimeState>;
  /** After a daemon crash during a checkpoint: the figures of a complete dump in imageDir, or undefined (incomplete: the core removes it). */
  adoptCheckpoint?(id: string, imageDir: string): Promise<CheckpointResult | undefined>;
  /**
   * API services this driver brings (src/core/extension.ts), asked for once
   * the driver is initialised. Two drivers offering the same service: the
   * first registered serves it.
   */
  extensions?(): DriverExtension[];
  /** Daemon shutdown: release resources, leave containers running. */
  close?(): Promise<void>;
}
