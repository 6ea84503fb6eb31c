// Everything the bench puts on the host registers an undo action here. They
// run last-in first-out at the end, on failure, and on Ctrl-C / SIGTERM, so
// an interrupted run leaves no containers, interfaces, mounts or cgroups.

type Action = { name: string; fn: () => Promise<void> | void };

export class Cleanup {
  private readonly actions = new Map<number, Action>();
  private next = 1;
  private running: Promise<void> | undefined;
  private signals = 0;

  /** Register an undo action; returns a handle to drop it once undone normally. */
  add(name: string, fn: () => Promise<void> | void): number {
    const id = this.next++;
    this.actions.set(id, { name, fn });
    return id;
  }

  drop(id: number): void {
    this.actions.delete(id);
  }

  /** Run one registered action now (and forget it). */
  async runOne(id: number): Promise<void> {
    const a = this.actions.get(id);
    if (!a) return;
    this.actions.delete(id);
    await a.fn();
  }

  /** Run every action, newest first; failures are reported and do not stop the rest. */
  runAll(log: (s: string) => void = (s) => process.stderr.write(`${s}\n`)): Promise<void> {
    if (!this.running) {
      this.running = (async () => {
        const ids = [...this.actions.keys()].sort((a, b) => b - a);
        for (const id of ids) {
          const a = this.actions.get(id);
          this.actions.delete(id);
          if (!a) continue;
          try {
            await withTimeout(Promise.resolve().then(a.fn), 120_000, a.name);
          } catch (e) {
            log(`cleanup: ${a.name}: ${e instanceof Error ? e.message : String(e)}`);
          }
        }
      })();
    }
    return this.running;
  }

  /** On SIGINT/SIGTERM: clean up, then exit 130/143. A second signal exits at once. */
  installSignalHandlers(onSignal: () => void = () => undefined): void {
    const handler = (sig: NodeJS.Signals) => {
      this.signals++;
      if (this.signals > 1) {
        process.stderr.write(`\n${sig} again: exiting without finishing cleanup\n`);
        process.exit(1);
      }
      onSignal();
      process.stderr.write(`\n${sig}: cleaning up (containers, lxc/runc containers, interfaces, mounts, temp dirs)...\n`);
      void this.runAll().finally(() => process.exit(sig === 'SIGINT' ? 130 : 143));
    };
    process.on('SIGINT', handler);
    process.on('SIGTERM', handler);
    process.on('SIGHUP', handler);
  }
}

export function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let t: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    t = setTimeout(() => reject(new Error(`${what}: timed out after ${ms} ms`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(t));
}
