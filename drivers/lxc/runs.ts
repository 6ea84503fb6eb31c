// A container's run as the host sees it: its cgroups, its runtime.json, the
// monitor's exit record and boot.json (how a booted init halts), the one
// shared exit watch per container, and the cleanup that undoes everything a
// run put on the host. A start, a restore, a checkpoint (which ends the run
// it dumps) and recovery all go through it.
import { promises as fs, readFileSync } from 'node:fs';
import * as path from 'node:path';
import type { Logger } from 'pino';
import { RuntimeStatus, type RuntimeState } from '../../src/core/driver';
import { writeFileAtomic } from '../../src/core/atomic-file';
import { errorMessage, notFound } from '../../src/core/errors';
import { pidAlive, pidStartTime } from '../../src/host/processes';
import { ContainerCgroup, type Layout } from './cgroups';
import type { ContainerFiles } from './container-files';
import type { ContainerNetwork } from './container-network';
import type { LxcExtension } from './extension';
import type { InitInfo } from './init-detect';
import { readExitRecord, waitExit, type ExitRecord } from './monitor';
import { teardownNetwork } from './network';
import type { ContainerRootfs } from './rootfs';
import { removeRuntime, type LxcRuntime } from './runtime-file';
import type { UserNamespaces } from './user-namespaces';

/** How a system container's init is halted and what its exit means (boot.json, kept until the next start). */
export interface Boot {
  kind: InitInfo['kind'];
  haltSignal: number;
  rebootSignal: number;
}

const SIGHUP = 1;
const SIGINT = 2;

export class ContainerRuns {
  /** One shared exit watch per running container. */
  private readonly waits = new Map<string, Promise<RuntimeState>>();

  constructor(
    private readonly layout: Layout,
    private readonly files: ContainerFiles,
    private readonly rootfs: ContainerRootfs,
    private readonly network: ContainerNetwork,
    private readonly userNs: UserNamespaces,
    private readonly ext: LxcExtension,
    private readonly logger: Logger,
  ) {}

  cgroup(id: string): ContainerCgroup {
    return new ContainerCgroup(this.layout, id);
  }

  async writeBoot(id: string, boot: Boot | undefined): Promise<void> {
    const file = path.join(this.files.dir(id), 'boot.json');
    if (boot) await writeFileAtomic(file, JSON.stringify(boot) + '\n', 0o644, false);
    else await fs.rm(file, { force: true });
  }

  readBoot(id: string): Boot | undefined {
    try {
      return JSON.parse(readFileSync(path.join(this.files.dir(id), 'boot.json'), 'utf8')) as Boot;
    } catch {
      return undefined;
    }
  }

  /**
   * Whether the init of this run still lives. Between a KillContainer and the
   * manager recording the exit, the exit watch may already be tearing the
   * run down: what the driver answers must go by the init, not by the record.
   */
  initRunning(id: string, rt: LxcRuntime | undefined): boolean {
    return !!rt && pidAlive(rt.initPid) && pidStartTime(rt.initPid) === rt.initStartTime && !readExitRecord(this.files.monitorDir(id));
  }

  /** Undo everything a run put on the host (ports, network, cgroups, mounts, runtime.json, the extension's). Idempotent. */
  async cleanup(id: string): Promise<void> {
    const rt = await this.files.readRuntime(id);
    await this.network.unpublish(id, rt?.network.publishedOn);
    await teardownNetwork(rt?.network);
    await this.cgroup(id).destroy();
    await this.rootfs.unmount(id);
    if (rt) await removeRuntime(this.files.dir(id));
    await this.ext.afterStop?.(id);
  }

  async state(id: string): Promise<RuntimeState> {
    const st = await this.runtimeState(id);
    const idMapping = await this.userNs.mapping(id);
    return idMapping ? { ...st, idMapping } : st;
  }

  private async runtimeState(id: string): Promise<RuntimeState> {
    if (!this.files.exists(id)) throw notFound('container', id);
    const rt = await this.files.readRuntime(id);
    const base = { initPid: 0, exitCode: 0, signal: 0, message: '' };
    if (!rt) {
      // Stopped; the monitor's exit record (kept until the next start) says how.
      const last = readExitRecord(this.files.monitorDir(id));
      return last ? this.exitState(last, this.readBoot(id)) : { ...base, status: RuntimeStatus.RUNTIME_STATUS_STOPPED };
    }
    const exit = readExitRecord(this.files.monitorDir(id));
    if (exit) return this.exitState(exit, this.readBoot(id));
    const alive = pidAlive(rt.initPid) && pidStartTime(rt.initPid) === rt.initStartTime;
    if (!alive) {
      if (pidAlive(rt.monitorPid)) return { ...base, status: RuntimeStatus.RUNTIME_STATUS_RUNNING, initPid: rt.initPid };
      return { ...base, status: RuntimeStatus.RUNTIME_STATUS_UNKNOWN, message: 'the container monitor is gone and left no exit record' };
    }
    const frozen = await this.cgroup(id).isFrozen();
    return {
      ...base,
      status: frozen ? RuntimeStatus.RUNTIME_STATUS_PAUSED : RuntimeStatus.RUNTIME_STATUS_RUNNING,
      initPid: rt.initPid,
      startTime: new Date(rt.startTime),
    };
  }

  /**
   * How the init ended. A system container's init that called reboot(2) ends
   * with SIGHUP (a reboot request) or SIGINT (halt or poweroff): the kernel's
   * way of ending a pid namespace's init (pid_namespaces(7)). LXC reads them
   * the same way; a halt is a clean stop, exit code 0.
   */
  private exitState(exit: ExitRecord, boot: Boot | undefined): RuntimeState {
    const base = { status: RuntimeStatus.RUNTIME_STATUS_STOPPED, initPid: 0, finishTime: exit.finishedAt, rebootRequested: false };
    if (boot && exit.signal === SIGINT) return { ...base, exitCode: 0, signal: 0, message: 'the init halted the container' };
    if (boot && exit.signal === SIGHUP) return { ...base, exitCode: 0, signal: 0, message: 'the init asked for a reboot', rebootRequested: true };
    return { ...base, exitCode: exit.exitCode, signal: exit.signal, message: '' };
  }

  /** The exit watch: resolves after the init exited and cleanup ran (at once when not running). */
  wait(id: string): Promise<RuntimeState> {
    let p = this.waits.get(id);
    if (!p) {
      p = (async () => {
        const rt = await this.files.readRuntime(id);
        if (!rt) return this.state(id);
        const exit = await waitExit(this.files.monitorDir(id), rt.monitorPid);
        await this.cleanup(id).catch((e) => this.logger.warn({ container: id, err: errorMessage(e) }, 'cleanup after exit failed'));
        if (!exit)
          return {
            status: RuntimeStatus.RUNTIME_STATUS_UNKNOWN,
            initPid: 0,
            exitCode: 0,
            signal: 0,
            message: 'the container monitor exited without an exit record',
          };
        return this.exitState(exit, this.readBoot(id));
      })().finally(() => this.waits.delete(id));
      this.waits.set(id, p);
    }
    return p;
  }

  /** A new init runs (a start or a restore): a finished watch of the last run is forgotten. */
  forget(id: string): void {
    this.waits.delete(id);
  }
}
