// The real osvirtd for the bench: the shared harness (src/testing/temp-daemon.ts)
// plus what the bench needs: the template path, the containers' runtime
// records (init and monitor pids), and deleting every container in parallel.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { TempDaemon } from '../../src/testing/temp-daemon';

export type { Client } from '../../src/testing/temp-daemon';

/** A /16 no route or address on this host uses yet. */
export function freeSubnet(avoid: string[] = []): string {
  let taken = '';
  try {
    taken =
      execFileSync('ip', ['-4', '-o', 'addr', 'show'], { encoding: 'utf8' }) +
      execFileSync('ip', ['-4', 'route', 'show', 'table', 'all'], { encoding: 'utf8' });
  } catch {
    // no iproute2: the daemon will say so
  }
  for (let b = 180; b < 250; b++) {
    const prefix = `10.${b}.`;
    if (taken.includes(` ${prefix}`) || taken.includes(`\n${prefix}`) || taken.startsWith(prefix) || avoid.some((a) => a.startsWith(prefix))) continue;
    return `10.${b}.0.0/16`;
  }
  throw new Error('no free 10.x.0.0/16 subnet for the bench bridge');
}

export class BenchDaemon extends TempDaemon {
  constructor(dir: string, bridge: string, subnet: string) {
    super({ dir, bridge, subnet });
  }

  /** Where the lxc driver keeps a container's files. */
  containerDir(name: string): string {
    return path.join(this.stateDir, 'drivers', 'lxc', 'containers', name);
  }

  templateDir(name = 'busybox'): string {
    return path.join(this.stateDir, 'drivers', 'lxc', 'templates', name);
  }

  /** Monitor and init pids from the driver's runtime.json. */
  runtime(name: string): { initPid: number; monitorPid: number } | undefined {
    try {
      const j = JSON.parse(readFileSync(path.join(this.containerDir(name), 'runtime.json'), 'utf8')) as { initPid: number; monitorPid: number };
      return { initPid: j.initPid, monitorPid: j.monitorPid };
    } catch {
      return undefined;
    }
  }

  /** Delete every container (8 at a time), stop the daemon, remove whatever is left on the host. */
  override destroy(concurrency = 8): Promise<void> {
    return super.destroy(concurrency);
  }
}
