// The driver table. A driver whose init fails is kept with its error so
// ListDrivers can say why, and the daemon keeps running (containerd's
// "skip plugin" rule). An out-of-process driver (src/plugin/) reports its
// health as it changes: UNAVAILABLE while its process is down or hung,
// READY again once it is back; listeners (the manager) recover its
// containers then.
import * as path from 'node:path';
import { promises as fs } from 'node:fs';
import type { Logger } from 'pino';
import { DriverHealth, type DriverInfo } from '../gen/osvirt/v1/system_service';
import { DRIVER_PROTOCOL_VERSION, type Capability, type Driver, type DriverInfo as DriverGetInfo } from './driver';
import { errorMessage, OsvirtError, unimplemented } from './errors';

/** Driver protocol versions this daemon speaks (GetVersion and plugin negotiation). */
export const SUPPORTED_DRIVER_PROTOCOLS: readonly number[] = [DRIVER_PROTOCOL_VERSION];

/** Refuse a driver speaking a protocol version this daemon does not. */
export function checkProtocolVersion(driver: string, version: number): void {
  if (!SUPPORTED_DRIVER_PROTOCOLS.includes(version)) {
    throw new OsvirtError(
      'FAILED_PRECONDITION',
      'DRIVER_PROTOCOL_MISMATCH',
      `driver "${driver}" speaks driver protocol version ${version}, but this daemon speaks ${SUPPORTED_DRIVER_PROTOCOLS.join(', ')}: install a plugin built for osvirt.driver.v${SUPPORTED_DRIVER_PROTOCOLS[SUPPORTED_DRIVER_PROTOCOLS.length - 1]} or upgrade osvirtd`,
      [],
      { driver, protocol_version: String(version) },
    );
  }
}

/**
 * The error for a capability a driver did not declare: UNIMPLEMENTED, or
 * FAILED_PRECONDITION when the driver explains the absence ("<cap>: why"),
 * i.e. it has the feature but this host lacks what it needs.
 */
export function capabilityError(driver: string, cap: Capability, messages: readonly string[]): OsvirtError {
  const why = messages.find((m) => m.startsWith(`${cap}:`));
  if (why)
    return new OsvirtError('FAILED_PRECONDITION', 'CAPABILITY_UNAVAILABLE', `driver "${driver}" cannot ${cap} on this host: ${why}`, [], {
      driver,
      capability: cap,
    });
  return unimplemented(driver, cap);
}

export type HealthReport = { health: 'ready'; info: DriverGetInfo } | { health: 'unavailable'; message: string } | { health: 'failed'; message: string };

/** A driver whose health changes after init (an out-of-process plugin). */
export interface SupervisedDriver extends Driver {
  readonly external: true;
  /** Called on every change after init() settled. */
  onHealth(listener: (r: HealthReport) => void): void;
}

function isSupervised(d: Driver): d is SupervisedDriver {
  return (d as Partial<SupervisedDriver>).external === true && typeof (d as Partial<SupervisedDriver>).onHealth === 'function';
}

export type HealthListener = (driver: string, health: DriverHealth) => void;

interface Entry {
  driver: Driver;
  health: DriverHealth;
  messages: string[];
  version: string;
  capabilities: Set<string>;
  external: boolean;
}

export class DriverRegistry {
  private readonly entries = new Map<string, Entry>();
  private readonly listeners = new Set<HealthListener>();

  constructor(
    private readonly stateDir: string,
    private readonly logger: Logger,
  ) {}

  async add(driver: Driver, opts: { external?: boolean } = {}): Promise<void> {
    const entry: Entry = {
      driver,
      health: DriverHealth.DRIVER_HEALTH_FAILED,
      messages: [],
      version: '',
      capabilities: new Set(),
      external: opts.external ?? isSupervised(driver),
    };
    if (this.entries.has(driver.name)) throw new Error(`two drivers are named "${driver.name}"; driver names must be unique`);
    this.entries.set(driver.name, entry);
    try {
      const dir = path.join(this.stateDir, 'drivers', driver.name);
      await fs.mkdir(dir, { recursive: true, mode: 0o700 });
      await driver.init({ stateDir: dir, logger: this.logger.child({ driver: driver.name }) });
      const info = await driver.info();
      checkProtocolVersion(driver.name, info.protocolVersion);
      this.setReady(entry, info);
    } catch (e) {
      entry.messages = [errorMessage(e)];
      this.logger.error({ driver: driver.name, err: errorMessage(e) }, 'driver failed to initialise; its containers show UNKNOWN');
    }
    if (isSupervised(driver)) driver.onHealth((r) => this.report(driver.name, entry, r));
  }

  private setReady(entry: Entry, info: DriverGetInfo): void {
    entry.version = info.version;
    entry.capabilities = new Set(info.capabilities);
    entry.messages = info.messages;
    entry.health = DriverHealth.DRIVER_HEALTH_READY;
  }

  private report(name: string, entry: Entry, r: HealthReport): void {
    const before = entry.health;
    if (r.health === 'ready') {
      try {
        checkProtocolVersion(name, r.info.protocolVersion);
        this.setReady(entry, r.info);
      } catch (e) {
        entry.health = DriverHealth.DRIVER_HEALTH_FAILED;
        entry.messages = [errorMessage(e)];
      }
    } else {
      entry.health = r.health === 'unavailable' ? DriverHealth.DRIVER_HEALTH_UNAVAILABLE : DriverHealth.DRIVER_HEALTH_FAILED;
      entry.messages = [r.message];
    }
    if (entry.health === before) return;
    this.logger.warn({ driver: name, health: DriverHealth[entry.health], messages: entry.messages }, 'driver health changed');
    for (const l of this.listeners) {
      try {
        l(name, entry.health);
      } catch (e) {
        this.logger.error({ driver: name, err: errorMessage(e) }, 'driver health listener failed');
      }
    }
  }

  /** Be told when a driver's health changes (a plugin went away or came back). */
  onHealthChange(l: HealthListener): () => void {
    this.listeners.add(l);
    return () => this.listeners.delete(l);
  }

  /** A ready driver, or FAILED_PRECONDITION saying why not. */
  get(name: string): Driver {
    const e = this.entries.get(name);
    if (!e) {
      throw new OsvirtError(
        'FAILED_PRECONDITION',
        'DRIVER_NOT_FOUND',
        `no driver named "${name}"; known drivers: ${[...this.entries.keys()].join(', ') || 'none'}`,
        [],
        { driver: name },
      );
    }
    if (e.health === DriverHealth.DRIVER_HEALTH_UNAVAILABLE) {
      throw new OsvirtError(
        'UNAVAILABLE',
        'DRIVER_UNAVAILABLE',
        `driver "${name}" is unavailable: ${e.messages.join('; ')}; retry once it is back ("osvirt drivers" shows its health)`,
        [],
        { driver: name },
      );
    }
    if (e.health !== DriverHealth.DRIVER_HEALTH_READY) {
      throw new OsvirtError('FAILED_PRECONDITION', 'DRIVER_NOT_READY', `driver "${name}" is not ready: ${e.messages.join('; ')}`, [], { driver: name });
    }
    return e.driver;
  }

  /** The driver whatever its health: to ask what it offers (extensions), never to call it. */
  peek(name: string): Driver | undefined {
    return this.entries.get(name)?.driver;
  }

  isReady(name: string): boolean {
    return this.entries.get(name)?.health === DriverHealth.DRIVER_HEALTH_READY;
  }

  /** The driver if it declared the capability, else UNIMPLEMENTED. */
  require(name: string, cap: Capability): Driver {
    const d = this.get(name);
    const e = this.entries.get(name);
    if (!e?.capabilities.has(cap)) throw capabilityError(name, cap, e?.messages ?? []);
    return d;
  }

  list(): DriverInfo[] {
    return [...this.entries.entries()].map(([name, e]) => ({
      name,
      version: e.version,
      capabilities: [...e.capabilities],
      health: e.health,
      messages: e.messages,
      external: e.external,
    }));
  }

  names(): string[] {
    return [...this.entries.keys()];
  }

  async closeAll(): Promise<void> {
    for (const e of this.entries.values()) {
      try {
        await e.driver.close?.();
      } catch (err) {
        this.logger.warn({ err: errorMessage(err) }, 'driver close failed');
      }
    }
  }
}
