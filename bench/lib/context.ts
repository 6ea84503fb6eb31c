// What every bench section gets to work with, and what it hands back.
import type { Cleanup } from './cleanup';
import type { BenchDaemon, Client } from './daemon';
import type { Progress } from './progress';

export interface BenchConfig {
  quick: boolean;
  /** Section 1/2: measured create+start / stop+delete cycles per variant. */
  lifecycleRuns: number;
  lifecycleWarmup: number;
  /** Section 3: checkpoint/restore cycles per variant. */
  checkpointRuns: number;
  /** Section 4: seconds per (method, concurrency) cell, defined containers for the big List. */
  controlSeconds: number;
  controlConcurrency: number[];
  listDefined: number;
  /** Section 5: running containers and how many start at once. */
  scaleN: number;
  scaleConcurrency: number;
  /** Section 6: iperf3 seconds per run and runs per path. */
  netSeconds: number;
  netRuns: number;
  /** Section 7: lat-ctx repetitions and target milliseconds per repetition. */
  ctxReps: number;
  ctxMs: number;
  ctxSizes: number[];
  ctxProcs: number[];
  ctxCpu: number;
  /** Section 8: Debian boots (and halts) per variant. */
  bootRuns: number;
}

export function config(quick: boolean): BenchConfig {
  return quick
    ? {
        quick,
        lifecycleRuns: 12,
        lifecycleWarmup: 2,
        checkpointRuns: 3,
        controlSeconds: 0.5,
        controlConcurrency: [1, 8, 64],
        listDefined: 200,
        scaleN: 50,
        scaleConcurrency: 8,
        netSeconds: 1,
        netRuns: 1,
        ctxReps: 3,
        ctxMs: 15,
        ctxSizes: [0, 1, 8, 16, 32],
        ctxProcs: [10, 50, 100, 200, 500],
        ctxCpu: 0,
        bootRuns: 2,
      }
    : {
        quick,
        lifecycleRuns: 120,
        lifecycleWarmup: 5,
        checkpointRuns: 20,
        controlSeconds: 4,
        controlConcurrency: [1, 8, 64],
        listDefined: 1000,
        scaleN: 500,
        scaleConcurrency: 8,
        netSeconds: 5,
        netRuns: 3,
        ctxReps: 11,
        ctxMs: 100,
        ctxSizes: [0, 1, 8, 16, 32],
        ctxProcs: [10, 50, 100, 200, 500],
        ctxCpu: 0,
        bootRuns: 8,
      };
}

export interface Tools {
  lxcStart?: string;
  runc?: string;
  unshare?: string;
  criu?: string;
  iperf3?: string;
  gcc?: string;
  versions: Record<string, string>;
}

export interface Ctx {
  cfg: BenchConfig;
  progress: Progress;
  cleanup: Cleanup;
  /** Private temp dir for this run (removed at the end). */
  work: string;
  daemon: BenchDaemon;
  client: Client;
  /** Prefix for every container name this run creates (unique per run). */
  prefix: string;
  /** A copy of osvirt's busybox template plus /idle.sh, for the lxc and runc anchors. */
  anchorRootfs: string;
  /** The host interface macvlan containers sit on (the default route's). */
  uplink?: string;
  tools: Tools;
}

export type Status = 'ok' | 'partial' | 'skipped' | 'failed';

export interface SectionResult<T = unknown> {
  id: string;
  title: string;
  status: Status;
  /** Why skipped / failed, or what part is missing for "partial". */
  reason?: string;
  seconds: number;
  notes: string[];
  data?: T;
}

/** A row that could not be measured on this machine, with the reason. */
export interface Skipped {
  skipped: true;
  reason: string;
}

export function skipped(reason: string): Skipped {
  return { skipped: true, reason };
}

export function isSkipped(x: unknown): x is Skipped {
  return typeof x === 'object' && x !== null && (x as Skipped).skipped === true;
}

export function errorText(e: unknown): string {
  if (e instanceof Error) {
    const details = (e as { details?: string }).details;
    return details && !e.message.includes(details) ? `${e.message} (${details})` : e.message;
  }
  return String(e);
}
