// runtime.json in a container's directory: what the lxc driver remembers
// about a running container (the init and monitor a start launched or a
// restore brought back, the network it wired, the rootfs it mounted). The
// driver, its checkpointer and the drivers built on it (jail's jls) read
// the one shape declared here. Meaningless after a reboot, so not fsynced.
import { promises as fs, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { writeFileAtomic } from '../../src/core/atomic-file';
import { pidStartTime } from '../../src/host/processes';
import type { NetworkRuntime } from './network';

export const RUNTIME_FILE = 'runtime.json';

export interface LxcRuntime {
  initPid: number;
  /** /proc/<pid>/stat start time, so a reused pid is not taken for the init. */
  initStartTime: string;
  monitorPid: number;
  /** ISO time the init started (or was restored). */
  startTime: string;
  network: NetworkRuntime;
  /** The rootfs mountpoint the run mounted ("" when it mounted none). */
  rootfsMounted: string;
}

/** The record of an init that runs now. */
export function runtimeNow(initPid: number, monitorPid: number, network: NetworkRuntime, rootfsMounted: string): LxcRuntime {
  return { initPid, initStartTime: pidStartTime(initPid) ?? '', monitorPid, startTime: new Date().toISOString(), network, rootfsMounted };
}

export async function readRuntime(containerDir: string): Promise<LxcRuntime | undefined> {
  try {
    return JSON.parse(await fs.readFile(path.join(containerDir, RUNTIME_FILE), 'utf8')) as LxcRuntime;
  } catch {
    return undefined;
  }
}

export function readRuntimeSync(containerDir: string): LxcRuntime | undefined {
  try {
    return JSON.parse(readFileSync(path.join(containerDir, RUNTIME_FILE), 'utf8')) as LxcRuntime;
  } catch {
    return undefined;
  }
}

export async function writeRuntime(containerDir: string, rt: LxcRuntime): Promise<void> {
  await writeFileAtomic(path.join(containerDir, RUNTIME_FILE), JSON.stringify(rt, null, 2) + '\n', 0o644, false);
}

export async function removeRuntime(containerDir: string): Promise<void> {
  await fs.rm(path.join(containerDir, RUNTIME_FILE), { force: true });
}
