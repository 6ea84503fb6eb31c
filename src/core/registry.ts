// The driver table. A driver whose init fails is kept with its error so
// ListDrivers can say why, and the daemon keeps running (containerd's
// "skip plugin" rule).
import * as path from 'node:path';
import { promises as fs } from 'node:fs';
import type { Logger } from 'pino';
import { DriverHealth, type DriverInfo } from '../gen/osvirt/v1/system_service';
import type { Capability, Driver } from './driver';
import { errorMessage, OsvirtError, unimplemented } from './errors';

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

  constructor(private readonly stateDir: string, private readonly logger: Logger) {}

  async add(driver: Driver, opts: { external?: boolean } = {}): Promise<void> {
    const entry: Entry = {
      driver,
      health: DriverHealth.DRIVER_HEALTH_FAILED,
      messages: [],
      version: '',
      capabilities: new Set(),
      external: opts.external ?? false,
    };
    this.entries.set(driver.name, entry);
    try {
      const dir = path.join(this.stateDir, 'drivers', driver.name);
      await fs.mkdir(dir, { recursive: true, mode: 0o700 });
      await driver.init({ stateDir: dir, logger: this.logger.child({ driver: driver.name }) });
      const info = await driver.info();
      entry.version = info.version;
      entry.capabilities = new Set(info.capabilities);
      entry.messages = info.messages;
      entry.health = DriverHealth.DRIVER_HEALTH_READY;
    } catch (e) {
      entry.messages = [errorMessage(e)];
      this.logger.error({ driver: driver.name, err: errorMessage(e) }, 'driver failed to initialise; its containers show UNKNOWN');
    }
  }

  /** A ready driver, or FAILED_PRECONDITION saying why not. */
  get(name: string): Driver {
    const e = this.entries.get(name);
    if (!e) {
      throw new OsvirtError('FAILED_PRECONDITION', 'DRIVER_NOT_FOUND', `no driver named "${name}"; known drivers: ${[...this.entries.keys()].join(', ') || 'none'}`, [], { driver: name });
    }
    if (e.health !== DriverHealth.DRIVER_HEALTH_READY) {
      throw new OsvirtError('FAILED_PRECONDITION', 'DRIVER_NOT_READY', `driver "${name}" is not ready: ${e.messages.join('; ')}`, [], { driver: name });
    }
    return e.driver;
  }

  isReady(name: string): boolean {
    return this.entries.get(name)?.health === DriverHealth.DRIVER_HEALTH_READY;
  }

  /** The driver if it declared the capability, else UNIMPLEMENTED. */
  require(name: string, cap: Capability): Driver {
    const d = this.get(name);
    if (!this.entries.get(name)?.capabilities.has(cap)) {
      const why = this.entries.get(name)?.messages.find((m) => m.startsWith(`${cap}:`));
      if (why) throw new OsvirtError('FAILED_PRECONDITION', 'CAPABILITY_UNAVAILABLE', `driver "${name}" cannot ${cap} on this host: ${why}`, [], { driver: name, capability: cap });
      throw unimplemented(name, cap);
    }
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
