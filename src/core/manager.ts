// The container manager: definitions, the state machine, per-container
// serialization and events. API handlers call it; it calls drivers.
import { randomUUID } from 'node:crypto';
import type { Readable } from 'node:stream';
import { finished } from 'node:stream/promises';
import type { Logger } from 'pino';
import {
  type Checkpoint,
  type CheckpointOptions,
  ContainerSpec,
  ContainerState,
  type ContainerStats,
  type ContainerStatus,
  type Container,
  StateReason,
} from '../gen/osvirt/v1/container';
import { EventType } from '../gen/osvirt/v1/event_service';
import { DriverHealth } from '../gen/osvirt/v1/system_service';
import { RuntimeStatus, type CheckpointResult, type ConsoleSession, type Driver, type ExecOptions, type ExecSession, type RuntimeState } from './driver';
import { alreadyExists, errorMessage, invalidArgument, isOsvirtError, notFound, OsvirtError, wrongState } from './errors';
import type { EventBus } from './events';
import { KeyedMutex } from './keyed-mutex';
import type { DriverRegistry } from './registry';
import { CheckpointStore } from './checkpoint-store';
import { type ContainerRecord, ContainerStore } from './store';
import { validateCheckpointOptions, validateName, validateSpec } from './validate';
import { faultPoint, pausePoint } from './faults';

const SIGKILL = 9;
const SIGTERM = 15;
const DEFAULT_STOP_TIMEOUT_MS = 10_000;

interface Live {
  rec: ContainerRecord;
  /** Bumped whenever the init is (re)started or stopped by us, so a stale exit watcher is ignored. */
  generation: number;
  /** Signal a user asked for (stop/kill): exiting by it is STOPPED, not CRASHED. */
  expectedSignal: number;
}

/** Things outside the core that follow a container's runs (management endpoints). */
/** Completes a spec at create (e.g. from its image: src/images/spec.ts); may pull. */
/**
 * Completes a spec at create (an image's pull and defaults). `release` ends
 * whatever the preparer holds for the create (the image pinned against a
 * prune); the manager calls it once the create has finished, either way.
 */
export type SpecPreparer = (spec: ContainerSpec) => Promise<{ spec: ContainerSpec; release?: (() => void) | undefined }>;

export interface LifecycleHooks {
  /** Before the driver starts it: may add to the spec the driver runs. */
  beforeStart(name: string, spec: ContainerSpec): Promise<ContainerSpec>;
  /** A running container was found after a daemon restart. */
  recovered(name: string, spec: ContainerSpec): Promise<void>;
  /** It is not running any more (stopped, exited, deleted, start failed). */
  stopped(name: string): Promise<void>;
}

export interface ListFilter {
  driver: string;
  states: ContainerState[];
  pageSize: number;
  pageToken: string;
}

function stateName(s: ContainerState): string {
  return ContainerState[s].replace('CONTAINER_STATE_', '');
}

const CHECKPOINT_KEY = 'checkpoint:';

/** The lock key of one checkpoint's directory. */
function checkpointKey(container: string, name: string): string {
  return `${CHECKPOINT_KEY}${container}/${name}`;
}

export class ContainerManager {
  private readonly live = new Map<string, Live>();
  hooks: LifecycleHooks | undefined;
  /** Runs before a create takes the name (a pull can take a while). */
  prepareSpec: SpecPreparer | undefined;
  /**
   * Per-container keys (the name) and per-checkpoint keys (checkpointKey):
   * whoever reads or removes a checkpoint's files holds its key, whoever
   * changes a container holds its name. Container keys come first in the
   * lock order, so an operation holding a container may then take checkpoint
   * keys (DeleteContainer removing its checkpoints), never the reverse.
   */
  private readonly mutex = new KeyedMutex((k) => (k.startsWith(CHECKPOINT_KEY) ? 1 : 0));
  readonly checkpoints: CheckpointStore;

  constructor(
    private readonly store: ContainerStore,
    private readonly registry: DriverRegistry,
    private readonly events: EventBus,
    private readonly logger: Logger,
    stateDir: string,
  ) {
    this.checkpoints = new CheckpointStore(stateDir);
  }

  /** Load definitions, re-attach to running containers, autostart. */
  async init(): Promise<void> {
    this.registry.onHealthChange((driver, health) => {
      const work = health === DriverHealth.DRIVER_HEALTH_READY ? this.recoverDriver(driver) : this.driverLost(driver, health);
      work.catch((e) => this.logger.error({ driver, err: errorMessage(e) }, 'handling a driver health change failed'));
    });
    await this.store.init();
    await this.checkpoints.init();
    let unreadable = 0;
    const loaded = await this.store.loadAll((file, err) => {
      unreadable++;
      this.logger.error({ file, err: errorMessage(err) }, 'cannot read container definition; left in place');
    });
    const recs: ContainerRecord[] = [];
    for (const rec of loaded) {
      // A delete a crash interrupted is finished, never half-undone.
      if (rec.intent?.op === 'delete' && this.registry.isReady(rec.spec.driver) && (await this.finishDelete(rec))) continue;
      recs.push(rec);
    }
    // What osvirt had sent the init, so its exit reads as KILLED, not CRASHED.
    for (const rec of recs) this.live.set(rec.name, { rec, generation: 0, expectedSignal: rec.intent?.signal ?? 0 });
    await this.recoverCheckpoints();

    const byDriver = new Map<string, ContainerRecord[]>();
    // Every ready driver is asked, with no containers too: it removes what a create a crash cut short left behind.
    for (const n of this.registry.names()) if (this.registry.isReady(n)) byDriver.set(n, []);
    for (const rec of recs) byDriver.set(rec.spec.driver, [...(byDriver.get(rec.spec.driver) ?? []), rec]);
    for (const [driverName, list] of byDriver) {
      if (!this.registry.isReady(driverName)) {
        for (const rec of list) {
          if (rec.status.state === ContainerState.CONTAINER_STATE_RUNNING || rec.status.state === ContainerState.CONTAINER_STATE_PAUSED) {
            rec.status = {
              ...rec.status,
              state: ContainerState.CONTAINER_STATE_UNKNOWN,
              reason: StateReason.STATE_REASON_DRIVER_UNAVAILABLE,
              message: `driver "${driverName}" is not ready`,
            };
          }
        }
        continue;
      }
      const driver = this.registry.get(driverName);
      let states: Record<string, RuntimeState> = {};
      try {
        // Orphans only when every definition could be read: a driver must never drop the state of a container whose definition is merely unreadable.
        states = await driver.recover(
          list.map((r) => ({ id: r.name, spec: r.spec })),
          { removeOrphans: unreadable === 0 },
        );
      } catch (e) {
        this.logger.error({ driver: driverName, err: errorMessage(e) }, 'driver recover failed');
      }
      for (const rec of list) {
        const rs = states[rec.name];
        if (rs) await this.reconcile(rec, rs);
      }
    }
    for (const rec of recs) {
      if (rec.spec.autostart && this.registry.isReady(rec.spec.driver) && !this.isActive(rec.status.state)) {
        this.start(rec.name).catch((e) => this.logger.error({ container: rec.name, err: errorMessage(e) }, 'autostart failed'));
      }
    }
  }

  /**
   * Checkpoints a crashed daemon did not commit: a complete dump is
   * registered (and its container, which the dump ended, shows STOPPED with
   * reason CHECKPOINTED, restorable); anything else is removed, so no image
   * directory is left that ListCheckpoints does not show.
   */
  private async recoverCheckpoints(): Promise<void> {
    for (const u of await this.checkpoints.uncommitted()) {
      const live = this.live.get(u.container);
      let adopted: CheckpointResult | undefined;
      if (u.pending && live && this.registry.isReady(u.pending.driver)) {
        adopted = await this.registry
          .get(u.pending.driver)
          .adoptCheckpoint?.(u.container, u.reserved.imageDir)
          .catch((e) => {
            this.logger.error({ container: u.container, checkpoint: u.name, err: errorMessage(e) }, 'cannot adopt an interrupted checkpoint');
            return undefined;
          });
      }
      if (!adopted || !u.pending || !live) {
        await this.checkpoints.remove(u.container, u.name);
        this.logger.warn({ container: u.container, checkpoint: u.name }, 'removed an incomplete checkpoint a previous daemon left');
        continue;
      }
      await this.checkpoints.commit(u.reserved, { ...u.pending, criuVersion: adopted.criuVersion, stats: adopted.stats });
      if (!u.pending.options?.leaveRunning) {
        live.rec.status = {
          ...live.rec.status,
          state: ContainerState.CONTAINER_STATE_STOPPED,
          reason: StateReason.STATE_REASON_CHECKPOINTED,
          initPid: 0,
          finishTime: new Date(),
          message: '',
        };
        await this.store.saveStatus(live.rec);
      }
      this.logger.warn({ container: u.container, checkpoint: u.name }, 'registered a complete checkpoint that a previous daemon did not');
    }
  }

  /**
   * A deleted container's checkpoints, each under its key: a restore of one
   * under another name, or an export, may be reading it. The caller holds the
   * container's key (or runs before the daemon serves).
   */
  private async removeCheckpointsOf(name: string): Promise<void> {
    const cps = await this.checkpoints.names(name);
    await this.mutex.runAll(
      cps.map((n) => checkpointKey(name, n)),
      async () => {
        for (const n of cps) await this.checkpoints.remove(name, n);
      },
    );
    await this.checkpoints.removeContainerDir(name);
  }

  /** Completes a delete that a crash interrupted (recorded by its intent); false if the driver refused. */
  private async finishDelete(rec: ContainerRecord): Promise<boolean> {
    try {
      await this.registry
        .get(rec.spec.driver)
        .delete(rec.name)
        .catch((e) => {
          if (!(isOsvirtError(e) && e.code === 'NOT_FOUND')) throw e;
        });
      await this.hooks?.stopped(rec.name).catch(() => undefined);
      await this.removeCheckpointsOf(rec.name);
      await this.store.remove(rec.name);
      this.logger.warn({ container: rec.name }, 'finished a delete that the previous daemon did not complete');
      return true;
    } catch (e) {
      this.logger.error({ container: rec.name, err: errorMessage(e) }, 'cannot finish an interrupted delete; the container stays listed');
      return false;
    }
  }

  /** A driver went away (plugin crashed or hung): what its containers do is unknown until it is back. */
  private async driverLost(driver: string, health: DriverHealth): Promise<void> {
    const why = health === DriverHealth.DRIVER_HEALTH_UNAVAILABLE ? 'is unavailable' : 'failed';
    for (const live of [...this.live.values()].filter((l) => l.rec.spec.driver === driver)) {
      await this.mutex.run(live.rec.name, async () => {
        const rec = live.rec;
        if (this.live.get(rec.name) !== live || !this.isActive(rec.status.state)) return;
        // Exit watchers of the lost connection must not act on what they saw.
        live.generation++;
        rec.status = {
          ...rec.status,
          state: ContainerState.CONTAINER_STATE_UNKNOWN,
          reason: StateReason.STATE_REASON_DRIVER_UNAVAILABLE,
          message: `driver "${driver}" ${why}`,
        };
        await this.store.saveStatus(rec);
      });
    }
  }

  /** A driver is back: ask it about its containers and reconcile, as after a daemon restart. */
  private async recoverDriver(driver: string): Promise<void> {
    const list = [...this.live.values()].filter((l) => l.rec.spec.driver === driver);
    if (list.length === 0) return;
    const states = await this.registry.get(driver).recover(list.map((l) => ({ id: l.rec.name, spec: l.rec.spec })));
    for (const live of list) {
      const rs = states[live.rec.name];
      if (!rs) continue;
      await this.mutex.run(live.rec.name, async () => {
        if (this.live.get(live.rec.name) !== live) return;
        live.generation++;
        await this.reconcile(live.rec, rs);
      });
    }
    this.logger.info({ driver, containers: list.length }, 'driver is back; containers recovered');
  }

  private isActive(s: ContainerState): boolean {
    return s === ContainerState.CONTAINER_STATE_RUNNING || s === ContainerState.CONTAINER_STATE_PAUSED;
  }

  /** Bring a loaded record in line with what the driver reports after a restart. */
  private async reconcile(rec: ContainerRecord, rs: RuntimeState): Promise<void> {
    const live = this.live.get(rec.name);
    if (!live) return;
    const before = rec.status.state;
    if (rs.status === RuntimeStatus.RUNTIME_STATUS_RUNNING || rs.status === RuntimeStatus.RUNTIME_STATUS_PAUSED) {
      rec.status = {
        ...rec.status,
        state: rs.status === RuntimeStatus.RUNTIME_STATUS_RUNNING ? ContainerState.CONTAINER_STATE_RUNNING : ContainerState.CONTAINER_STATE_PAUSED,
        reason: this.isActive(before) ? rec.status.reason : StateReason.STATE_REASON_RECOVERED,
        initPid: rs.initPid,
        startTime: rs.startTime ?? rec.status.startTime,
        message: '',
      };
      await this.hooks?.recovered(rec.name, rec.spec).catch((e) => this.logger.error({ container: rec.name, err: errorMessage(e) }, 'recover hook failed'));
      this.watch(live);
    } else if (this.isActive(before) || before === ContainerState.CONTAINER_STATE_UNKNOWN) {
      if (rs.status === RuntimeStatus.RUNTIME_STATUS_UNKNOWN) {
        rec.status = {
          ...rec.status,
          state: ContainerState.CONTAINER_STATE_UNKNOWN,
          reason: StateReason.STATE_REASON_MONITOR_LOST,
          initPid: 0,
          message: rs.message,
        };
      } else {
        // It exited while the daemon was away.
        this.applyExit(live, rs);
        await this.released(rec.name);
        this.events.emit(
          rec.name,
          rec.status.state === ContainerState.CONTAINER_STATE_CRASHED ? EventType.EVENT_TYPE_CRASHED : EventType.EVENT_TYPE_STOPPED,
          rec.status,
        );
      }
    }
    if (rec.status.state !== before) await this.store.saveStatus(rec);
    // A stop or kill osvirt had recorded is settled once the container no longer runs.
    if (rec.intent && rec.intent.op !== 'delete' && !this.isActive(rec.status.state)) {
      await this.store.clearIntent(rec.name);
      rec.intent = undefined;
    }
  }

  private lookup(name: string): Live {
    const l = this.live.get(name);
    if (!l) throw notFound('container', name);
    return l;
  }

  private toContainer(rec: ContainerRecord): Container {
    return { name: rec.name, uid: rec.uid, createTime: rec.createTime, spec: rec.spec, status: rec.status };
  }

  async create(name: string, spec: ContainerSpec | undefined): Promise<Container> {
    validateName('name', name);
    validateSpec(spec);
    const driver = this.registry.get(spec.driver);
    let release: (() => void) | undefined;
    if (this.prepareSpec) {
      // Before a pull that could take minutes: a taken name fails at once.
      if (this.live.has(name)) throw alreadyExists('container', name);
      const prepared = await this.prepareSpec(spec);
      spec = prepared.spec;
      release = prepared.release;
    }
    try {
      // What the preparer filled in (an image's env, user, command) is held to the same rules.
      if (this.prepareSpec) validateSpec(spec);
      await pausePoint('create.after-prepare', name);
      return await this.createPrepared(name, spec, driver);
    } finally {
      release?.();
    }
  }

  private createPrepared(name: string, full: ContainerSpec, driver: Driver): Promise<Container> {
    // The name is reserved under its own lock so two creates cannot both win.
    return this.mutex.run(name, async () => {
      const spec = full;
      if (this.live.has(name)) throw alreadyExists('container', name);
      await driver.validate(name, spec);
      const rec: ContainerRecord = {
        name,
        uid: randomUUID(),
        createTime: new Date(),
        spec,
        status: { state: ContainerState.CONTAINER_STATE_DEFINED, reason: StateReason.STATE_REASON_CREATED, exitCode: 0, signal: 0, initPid: 0, message: '' },
      };
      await driver.create(name, spec);
      faultPoint('create.after-driver');
      try {
        rec.status.idMapping = (await driver.state(name)).idMapping;
        await this.store.save(rec);
      } catch (e) {
        await this.store.remove(name).catch(() => undefined);
        await driver.delete(name).catch(() => undefined);
        throw e;
      }
      this.live.set(name, { rec, generation: 0, expectedSignal: 0 });
      this.events.emit(name, EventType.EVENT_TYPE_CREATED, rec.status);
      return this.toContainer(rec);
    });
  }

  get(name: string): Container {
    validateName('name', name);
    return this.toContainer(this.lookup(name).rec);
  }

  list(f: ListFilter): { containers: Container[]; nextPageToken: string } {
    let after = '';
    if (f.pageToken) {
      try {
        after = Buffer.from(f.pageToken, 'base64url').toString('utf8');
      } catch {
        after = '';
      }
      if (!after.startsWith('after:')) throw invalidArgument('page_token', 'is not a token returned by ListContainers');
      after = after.slice('after:'.length);
    }
    const all = [...this.live.values()]
      .map((l) => l.rec)
      .filter((r) => (!f.driver || r.spec.driver === f.driver) && (f.states.length === 0 || f.states.includes(r.status.state)))
      .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
      .filter((r) => r.name > after);
    const page = all.slice(0, f.pageSize);
    const last = page[page.length - 1];
    const nextPageToken = all.length > f.pageSize && last ? Buffer.from(`after:${last.name}`).toString('base64url') : '';
    return { containers: page.map((r) => this.toContainer(r)), nextPageToken };
  }

  async delete(name: string, force: boolean, allowMissing: boolean): Promise<void> {
    validateName('name', name);
    await this.mutex.run(name, async () => {
      const live = this.live.get(name);
      if (!live) {
        if (allowMissing) return;
        throw notFound('container', name);
      }
      const rec = live.rec;
      const driver = this.registry.get(rec.spec.driver);
      const running = async () => {
        if (!this.isActive(rec.status.state) && rec.status.state !== ContainerState.CONTAINER_STATE_UNKNOWN) return false;
        const rs = await driver.state(name);
        return rs.status === RuntimeStatus.RUNTIME_STATUS_RUNNING || rs.status === RuntimeStatus.RUNTIME_STATUS_PAUSED;
      };
      if (!force && (await running())) throw wrongState(name, stateName(rec.status.state), 'stopped (or pass force)');
      // From here on the delete is recorded: a daemon killed now finishes it at its next start.
      await this.store.saveIntent(name, { op: 'delete', signal: SIGKILL });
      faultPoint('delete.after-intent');
      if (await running()) {
        live.generation++;
        live.expectedSignal = SIGKILL;
        await driver.stop(name, SIGKILL, 0);
      }
      await driver.delete(name);
      faultPoint('delete.after-driver');
      await this.released(name);
      await this.removeCheckpointsOf(name);
      await this.store.remove(name);
      this.live.delete(name);
      this.events.emit(name, EventType.EVENT_TYPE_DELETED, { ...rec.status, initPid: 0 });
    });
  }

  /**
   * The containers a start locks besides its own: the one whose network it
   * joins (the core's own field), and those the driver says its options join
   * (Driver.dependencies: lxc's share_ipc_with); the core does not read
   * driver options itself. Asked before the lock, from the definition as it
   * is then; a driver that cannot be reached now fails the start here.
   */
  private async peerNames(name: string): Promise<string[]> {
    const spec = this.live.get(name)?.rec.spec;
    if (!spec) return [];
    const own = spec.network?.mode?.$case === 'container' ? [spec.network.mode.value.container] : [];
    let driver: Driver;
    try {
      driver = this.registry.get(spec.driver);
    } catch {
      return own; // the start itself says why the driver cannot run it
    }
    const theirs = (await driver.dependencies?.(name, spec)) ?? [];
    return [...own, ...theirs.filter((p) => p !== name)];
  }

  /**
   * The init pids a start may join namespaces of: every other running
   * container's. The core checks the peer its own field names
   * (network.container); a driver checks those its options name.
   */
  private peerPids(name: string, spec: ContainerSpec): Record<string, number> {
    const out: Record<string, number> = {};
    for (const l of this.live.values()) {
      if (l.rec.name !== name && this.isActive(l.rec.status.state) && l.rec.status.initPid) out[l.rec.name] = l.rec.status.initPid;
    }
    if (spec.network?.mode?.$case === 'container') {
      const p = spec.network.mode.value.container;
      if (p === name) throw invalidArgument('spec.network.container.container', 'a container cannot join itself');
      const l = this.live.get(p);
      if (!l) throw notFound('container', p);
      if (!out[p]) throw wrongState(p, stateName(l.rec.status.state), 'running (its namespaces are joined)');
    }
    return out;
  }

  async start(name: string): Promise<Container> {
    validateName('name', name);
    // The containers whose namespaces this one joins are locked too: their init pid
    // must not change (stop, delete, restore) between reading it and joining it.
    return this.mutex.runAll([name, ...(await this.peerNames(name))], async () => {
      const live = this.lookup(name);
      const rec = live.rec;
      if (rec.status.state === ContainerState.CONTAINER_STATE_RUNNING) return this.toContainer(rec);
      if (rec.status.state === ContainerState.CONTAINER_STATE_PAUSED) throw wrongState(name, 'PAUSED', 'stopped (resume it instead)');
      const driver = this.registry.get(rec.spec.driver);
      const peers = this.peerPids(name, rec.spec);
      let rs: RuntimeState;
      try {
        await pausePoint('start.before-driver', name);
        rs = await this.runInit(live, driver, peers);
      } catch (e) {
        await this.released(name);
        const msg = isOsvirtError(e) ? e.message : 'start failed; see the daemon log';
        rec.status = { ...rec.status, state: ContainerState.CONTAINER_STATE_STOPPED, reason: StateReason.STATE_REASON_START_FAILED, initPid: 0, message: msg };
        await this.store.saveStatus(rec);
        throw e;
      }
      await this.recordRunning(live, rs, '');
      return this.toContainer(rec);
    });
  }

  /** The hooks' spec, run by the driver: a start, and a reboot the init asked for. */
  private async runInit(live: Live, driver: Driver, peers: Record<string, number>): Promise<RuntimeState> {
    const { name, spec } = live.rec;
    const runSpec = this.hooks ? await this.hooks.beforeStart(name, spec) : spec;
    return driver.start(name, runSpec, peers);
  }

  /** A new init runs: record it, tell watchers, and watch for its exit. */
  private async recordRunning(live: Live, rs: RuntimeState, message: string): Promise<void> {
    const rec = live.rec;
    live.generation++;
    live.expectedSignal = 0;
    await this.store.clearIntent(rec.name);
    rec.status = {
      state: ContainerState.CONTAINER_STATE_RUNNING,
      reason: StateReason.STATE_REASON_BOOTED,
      exitCode: 0,
      signal: 0,
      initPid: rs.initPid,
      startTime: rs.startTime ?? new Date(),
      finishTime: undefined,
      message,
      idMapping: rs.idMapping ?? rec.status.idMapping,
    };
    await this.store.saveStatus(rec);
    this.events.emit(rec.name, EventType.EVENT_TYPE_STARTED, rec.status);
    this.watch(live);
  }

  /** Wait for the init to exit and record it, unless an operation of ours already did. */
  private watch(live: Live): void {
    const gen = live.generation;
    const name = live.rec.name;
    let driver;
    try {
      driver = this.registry.get(live.rec.spec.driver);
    } catch {
      return;
    }
    driver
      .wait(name)
      .then(
        async (rs) =>
          // A reboot starts the init again and joins its peers' namespaces, so
          // it takes their locks as a start does (peerNames asks the driver).
          this.mutex.runAll([name, ...(rs.rebootRequested ? await this.peerNames(name).catch(() => []) : [])], async () => {
            const cur = this.live.get(name);
            if (cur !== live || live.generation !== gen || !this.isActive(live.rec.status.state)) return;
            if (rs.status === RuntimeStatus.RUNTIME_STATUS_RUNNING || rs.status === RuntimeStatus.RUNTIME_STATUS_PAUSED) return;
            live.generation++;
            if (rs.rebootRequested && (await this.reboot(live, driver!))) return;
            this.applyExit(live, rs);
            await this.released(name);
            await this.store.saveStatus(live.rec);
            await this.store.clearIntent(name);
            this.events.emit(
              name,
              live.rec.status.state === ContainerState.CONTAINER_STATE_CRASHED ? EventType.EVENT_TYPE_CRASHED : EventType.EVENT_TYPE_STOPPED,
              live.rec.status,
            );
          }),
        (e) => this.logger.warn({ container: name, err: errorMessage(e) }, 'wait failed'),
      )
      .catch((e) => this.logger.error({ container: name, err: errorMessage(e) }, 'recording exit failed'));
  }

  /**
   * The container's own init asked for a reboot: start it again, as
   * lxc-start does. Runs under the container's lock and its peers' (see
   * watch). False when the new start failed (the exit is then recorded as
   * usual, with the failure in the log).
   */
  private async reboot(live: Live, driver: Driver): Promise<boolean> {
    const name = live.rec.name;
    const rec = live.rec;
    await this.released(name);
    this.events.emit(name, EventType.EVENT_TYPE_STOPPED, {
      ...rec.status,
      state: ContainerState.CONTAINER_STATE_STOPPED,
      reason: StateReason.STATE_REASON_SHUTDOWN,
      initPid: 0,
      message: 'rebooting',
    });
    let rs: RuntimeState;
    try {
      await pausePoint('reboot.before-driver', name);
      rs = await this.runInit(live, driver, this.peerPids(name, rec.spec));
    } catch (e) {
      this.logger.error({ container: name, err: errorMessage(e) }, 'restart after a reboot request failed');
      await this.released(name);
      return false;
    }
    await this.recordRunning(live, rs, 'rebooted by its init');
    this.logger.info({ container: name, initPid: rs.initPid }, "rebooted at its init's request");
    return true;
  }

  private async released(name: string): Promise<void> {
    await this.hooks?.stopped(name).catch((e) => this.logger.error({ container: name, err: errorMessage(e) }, 'stop hook failed'));
  }

  /** Every definition, by name (for the template service's "used by"). */
  definitions(): { name: string; spec: ContainerSpec }[] {
    return [...this.live.values()].map((l) => ({ name: l.rec.name, spec: l.rec.spec }));
  }

  /** Labels of a defined container (for grant selectors). */
  labelsOf(name: string): Record<string, string> | undefined {
    return this.live.get(name)?.rec.spec.labels;
  }

  private applyExit(live: Live, rs: RuntimeState): void {
    const sig = rs.signal;
    let state = ContainerState.CONTAINER_STATE_STOPPED;
    let reason = StateReason.STATE_REASON_EXITED;
    if (sig) {
      if (sig === live.expectedSignal || (sig === SIGKILL && live.expectedSignal !== 0)) reason = StateReason.STATE_REASON_KILLED;
      else {
        state = ContainerState.CONTAINER_STATE_CRASHED;
        reason = StateReason.STATE_REASON_SIGNALED;
      }
    } else if (live.expectedSignal) {
      reason = StateReason.STATE_REASON_SHUTDOWN;
    }
    live.rec.status = {
      ...live.rec.status,
      state,
      reason,
      exitCode: sig ? 128 + sig : rs.exitCode,
      signal: sig,
      initPid: 0,
      finishTime: rs.finishTime ?? new Date(),
      message: rs.message,
    };
  }

  async stop(name: string, signal: number, timeoutMs: number | undefined): Promise<Container> {
    validateName('name', name);
    return this.mutex.run(name, async () => {
      const live = this.lookup(name);
      const rec = live.rec;
      if (!this.isActive(rec.status.state) && rec.status.state !== ContainerState.CONTAINER_STATE_UNKNOWN) return this.toContainer(rec);
      const driver = this.registry.get(rec.spec.driver);
      // A system container's init has its own halt signal (SIGRTMIN+3 for systemd), like lxc.signal.halt.
      const sig = signal || rec.spec.stopSignal || (await driver.stopSignal?.(name).catch(() => 0)) || SIGTERM;
      const timeout =
        timeoutMs ??
        (rec.spec.stopTimeout ? Number(rec.spec.stopTimeout.seconds) * 1000 + Math.floor(rec.spec.stopTimeout.nanos / 1e6) : DEFAULT_STOP_TIMEOUT_MS);
      live.generation++;
      live.expectedSignal = sig;
      await this.store.saveIntent(name, { op: 'stop', signal: sig });
      faultPoint('stop.after-intent');
      let rs: RuntimeState;
      try {
        rs = await driver.stop(name, sig, timeout, { timeoutGiven: timeoutMs !== undefined });
      } catch (e) {
        // The stop was refused (e.g. a jail's failing exec.prestop) and the
        // container still runs: watch it again so its exit is recorded.
        live.expectedSignal = 0;
        await this.store.clearIntent(name);
        this.watch(live);
        throw e;
      }
      await this.released(name);
      this.applyExit(live, rs);
      if (rec.status.state === ContainerState.CONTAINER_STATE_CRASHED) rec.status.state = ContainerState.CONTAINER_STATE_STOPPED;
      rec.status.reason = rs.signal ? StateReason.STATE_REASON_KILLED : StateReason.STATE_REASON_SHUTDOWN;
      await this.store.saveStatus(rec);
      await this.store.clearIntent(name);
      this.events.emit(name, EventType.EVENT_TYPE_STOPPED, rec.status);
      return this.toContainer(rec);
    });
  }

  async kill(name: string, signal: number): Promise<void> {
    validateName('name', name);
    await this.mutex.run(name, async () => {
      const live = this.lookup(name);
      if (!this.isActive(live.rec.status.state)) throw wrongState(name, stateName(live.rec.status.state), 'running or paused');
      const sig = signal || SIGKILL;
      live.expectedSignal = sig;
      await this.store.saveIntent(name, { op: 'kill', signal: sig });
      await this.registry.get(live.rec.spec.driver).kill(name, sig);
    });
  }

  async pause(name: string): Promise<Container> {
    validateName('name', name);
    return this.mutex.run(name, async () => {
      const live = this.lookup(name);
      const rec = live.rec;
      if (rec.status.state === ContainerState.CONTAINER_STATE_PAUSED) return this.toContainer(rec);
      if (rec.status.state !== ContainerState.CONTAINER_STATE_RUNNING) throw wrongState(name, stateName(rec.status.state), 'running');
      const driver = this.registry.require(rec.spec.driver, 'pause');
      await driver.pause!(name);
      rec.status = { ...rec.status, state: ContainerState.CONTAINER_STATE_PAUSED, reason: StateReason.STATE_REASON_PAUSED_BY_USER };
      await this.store.saveStatus(rec);
      this.events.emit(name, EventType.EVENT_TYPE_PAUSED, rec.status);
      return this.toContainer(rec);
    });
  }

  async resume(name: string): Promise<Container> {
    validateName('name', name);
    return this.mutex.run(name, async () => {
      const live = this.lookup(name);
      const rec = live.rec;
      if (rec.status.state === ContainerState.CONTAINER_STATE_RUNNING) return this.toContainer(rec);
      if (rec.status.state !== ContainerState.CONTAINER_STATE_PAUSED) throw wrongState(name, stateName(rec.status.state), 'paused');
      const driver = this.registry.require(rec.spec.driver, 'pause');
      await driver.resume!(name);
      rec.status = { ...rec.status, state: ContainerState.CONTAINER_STATE_RUNNING, reason: StateReason.STATE_REASON_BOOTED };
      await this.store.saveStatus(rec);
      this.events.emit(name, EventType.EVENT_TYPE_RESUMED, rec.status);
      return this.toContainer(rec);
    });
  }

  /** Exec does not hold the container's lock for the process's lifetime: only while it is set up. */
  async exec(opts: ExecOptions): Promise<ExecSession> {
    validateName('start.name', opts.id);
    return this.mutex.run(opts.id, async () => {
      const live = this.lookup(opts.id);
      if (live.rec.status.state !== ContainerState.CONTAINER_STATE_RUNNING) throw wrongState(opts.id, stateName(live.rec.status.state), 'running');
      const driver = this.registry.require(live.rec.spec.driver, 'exec');
      return driver.exec!(opts);
    });
  }

  async console(name: string): Promise<ConsoleSession> {
    validateName('start.name', name);
    return this.mutex.run(name, async () => {
      const live = this.lookup(name);
      if (!this.isActive(live.rec.status.state)) throw wrongState(name, stateName(live.rec.status.state), 'running');
      // Whether there is one is the driver's to say: a system container always has a console.
      const driver = this.registry.require(live.rec.spec.driver, 'console');
      return driver.console!(name);
    });
  }

  async stats(name: string): Promise<ContainerStats> {
    validateName('name', name);
    const live = this.lookup(name);
    if (!this.isActive(live.rec.status.state)) throw wrongState(name, stateName(live.rec.status.state), 'running or paused');
    const driver = this.registry.require(live.rec.spec.driver, 'stats');
    return driver.stats!(name);
  }

  async checkpoint(name: string, cpName: string, options: CheckpointOptions | undefined): Promise<Checkpoint> {
    validateName('name', name);
    const checkpointName =
      cpName ||
      `cp-${new Date()
        .toISOString()
        .replace(/[^0-9]/g, '')
        .slice(0, 14)}-${randomUUID().slice(0, 4)}`;
    validateName('checkpoint', checkpointName);
    validateCheckpointOptions('options', options);
    const opts: CheckpointOptions = options ?? {
      leaveRunning: false,
      tcpEstablished: false,
      extUnixSk: false,
      fileLocks: false,
      shellJob: false,
      manageCgroupsMode: 0,
      parentCheckpoint: '',
      lazyPages: false,
    };
    // Its key too: an import of the same name must not replace the directory being dumped into.
    return this.mutex.runAll([name, checkpointKey(name, checkpointName)], async () => {
      const live = this.lookup(name);
      const rec = live.rec;
      if (rec.status.state !== ContainerState.CONTAINER_STATE_RUNNING) throw wrongState(name, stateName(rec.status.state), 'running');
      const driver = this.registry.require(rec.spec.driver, 'checkpoint');
      let parentDir = '';
      if (opts.parentCheckpoint) parentDir = (await this.checkpoints.get(name, opts.parentCheckpoint)).imageDir;
      const dir = await this.checkpoints.reserve(name, checkpointName);
      const record: Checkpoint = {
        name: checkpointName,
        container: name,
        driver: rec.spec.driver,
        createTime: new Date(),
        criuVersion: '',
        sizeBytes: 0n,
        stats: undefined,
        options: opts,
        spec: rec.spec,
      };
      await this.checkpoints.writePending(dir, record);
      let result;
      try {
        if (!opts.leaveRunning) {
          live.generation++;
          live.expectedSignal = SIGKILL;
        }
        result = await driver.checkpoint!(name, dir.imageDir, opts, parentDir);
      } catch (e) {
        await this.checkpoints.remove(name, checkpointName);
        if (!opts.leaveRunning) {
          // The driver promises the container keeps running on failure; watch it again.
          live.expectedSignal = 0;
          this.watch(live);
        }
        throw e;
      }
      const cp = await this.checkpoints.commit(dir, { ...record, criuVersion: result.criuVersion, stats: result.stats });
      if (!opts.leaveRunning) {
        await this.released(name);
        rec.status = {
          ...rec.status,
          state: ContainerState.CONTAINER_STATE_STOPPED,
          reason: StateReason.STATE_REASON_CHECKPOINTED,
          initPid: 0,
          finishTime: new Date(),
        };
        await this.store.saveStatus(rec);
      }
      this.events.emit(name, EventType.EVENT_TYPE_CHECKPOINTED, rec.status, { checkpoint: checkpointName });
      return cp;
    });
  }

  async restore(name: string, cpName: string, newName: string, tcpEstablished: boolean, timeoutMs: number): Promise<Container> {
    validateName('name', name);
    validateName('checkpoint', cpName);
    if (newName) validateName('new_name', newName);
    const target = newName || name;
    // The checkpoint's key: one restore per checkpoint at a time (CRIU writes its
    // restore log and stats into the image directory), and no DeleteCheckpoint,
    // DeleteContainer of its container or export while the images are read.
    return this.mutex.runAll([target, checkpointKey(name, cpName)], async () => {
      const cp = await this.checkpoints.get(name, cpName);
      let live = this.live.get(target);
      const spec = ContainerSpec.fromPartial(live?.rec.spec ?? cp.checkpoint.spec ?? {});
      const driver = this.registry.require(spec.driver, 'checkpoint');
      let created = false;
      if (newName) {
        if (live) throw alreadyExists('container', newName);
        await driver.create(newName, spec);
        created = true;
      } else if (!live) {
        // Restore is create-from-checkpoint when the container is not defined
        // here (an imported checkpoint from another daemon).
        if (!cp.checkpoint.spec) throw notFound('container', name);
        validateSpec(spec, 'checkpoint.spec');
        await driver.create(name, spec);
        created = true;
      } else if (this.isActive(live.rec.status.state)) {
        throw wrongState(name, stateName(live.rec.status.state), 'stopped');
      }
      let rs: RuntimeState;
      try {
        await pausePoint('restore.before-driver', target);
        rs = await driver.restore!(target, spec, cp.imageDir, tcpEstablished, timeoutMs);
      } catch (e) {
        if (created) await driver.delete(target).catch(() => undefined);
        throw e;
      }
      const status: ContainerStatus = {
        state: ContainerState.CONTAINER_STATE_RUNNING,
        reason: StateReason.STATE_REASON_RESTORED,
        exitCode: 0,
        signal: 0,
        initPid: rs.initPid,
        startTime: rs.startTime ?? new Date(),
        message: '',
        idMapping: rs.idMapping ?? live?.rec.status.idMapping,
      };
      if (!live) {
        live = { rec: { name: target, uid: randomUUID(), createTime: new Date(), spec, status }, generation: 0, expectedSignal: 0 };
        this.live.set(target, live);
        await this.store.save(live.rec);
        this.events.emit(target, EventType.EVENT_TYPE_CREATED, status);
      } else {
        live.rec.status = status;
        await this.store.saveStatus(live.rec);
      }
      live.generation++;
      live.expectedSignal = 0;
      await this.hooks?.recovered(target, spec).catch((e) => this.logger.error({ container: target, err: errorMessage(e) }, 'restore hook failed'));
      this.events.emit(target, EventType.EVENT_TYPE_RESTORED, status, { checkpoint: cpName });
      this.watch(live);
      return this.toContainer(live.rec);
    });
  }

  async listCheckpoints(name: string): Promise<Checkpoint[]> {
    validateName('name', name);
    this.lookup(name);
    return this.checkpoints.list(name);
  }

  async deleteCheckpoint(name: string, cpName: string, allowMissing: boolean): Promise<void> {
    validateName('name', name);
    validateName('checkpoint', cpName);
    await this.mutex.runAll([name, checkpointKey(name, cpName)], async () => {
      if (!(await this.checkpoints.exists(name, cpName))) {
        if (allowMissing) return;
        throw notFound('checkpoint', cpName);
      }
      const child = (await this.checkpoints.list(name)).find((c) => c.options?.parentCheckpoint === cpName);
      if (child) {
        throw new OsvirtError(
          'FAILED_PRECONDITION',
          'CHECKPOINT_IN_USE',
          `checkpoint "${cpName}" is the parent of "${child.name}"; delete that one first`,
          [],
          { checkpoint: cpName },
        );
      }
      await this.checkpoints.remove(name, cpName);
    });
  }

  /** The archive stream; the checkpoint stays locked until the stream has ended, failed or been destroyed. */
  async exportCheckpoint(name: string, cpName: string): Promise<Readable> {
    validateName('name', name);
    validateName('checkpoint', cpName);
    return new Promise<Readable>((resolve, reject) => {
      this.mutex
        .run(checkpointKey(name, cpName), async () => {
          const s = await this.checkpoints.export(name, cpName);
          resolve(s);
          await finished(s).catch(() => undefined);
        })
        .catch(reject);
    });
  }

  async importCheckpoint(data: AsyncIterable<Buffer>, as: { container: string; name: string }): Promise<Checkpoint> {
    // Moved into place under the checkpoint's key, like a dump.
    const cp = await this.checkpoints.import(data, as, 16 * 1024 * 1024 * 1024, (container, n, fn) => this.mutex.run(checkpointKey(container, n), fn));
    validateName('checkpoint', cp.name);
    validateName('name', cp.container);
    return cp;
  }
}
