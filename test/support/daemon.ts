// The test suites' daemon: the shared harness (src/testing/temp-daemon.ts)
// on a fresh temp dir with a bridge and subnet of its own.
import { mkdtempSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { TempDaemon } from '../../src/testing/temp-daemon';

export { holds, until } from '../../src/testing/until';
export type { Client } from '../../src/testing/temp-daemon';
import type { Client } from '../../src/testing/temp-daemon';

let counter = 0;

export function isRoot(): boolean {
  return process.getuid?.() === 0;
}

export class TestDaemon extends TempDaemon {
  constructor(opts: { bridge?: string; subnet?: string; wrap?: string[] } = {}) {
    counter++;
    super({
      dir: mkdtempSync(path.join(os.tmpdir(), 'osvirt-test-')),
      bridge: opts.bridge ?? `ovt${process.pid % 10000}x${counter}`,
      subnet: opts.subnet ?? `10.${200 + (counter % 50)}.0.0/16`,
      wrap: opts.wrap,
      readyTimeoutMs: 20_000,
    });
  }
}

/**
 * A daemon for the enclosing describe(): started in before() (the suite is
 * skipped when not run as root), destroyed in after(). `ready` gets the daemon
 * and its client once it is up, for the suite's own variables and setup.
 */
export function useDaemon(ready: (d: TestDaemon, c: Client) => void | Promise<void>, startArgs: string[] = []): void {
  let daemon: TestDaemon | undefined;
  before(async function () {
    if (!isRoot()) return this.skip();
    daemon = new TestDaemon();
    await ready(daemon, await daemon.start(startArgs));
  });
  after(async () => {
    await daemon?.destroy();
  });
}
