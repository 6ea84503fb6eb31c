// Fault injection for crash-consistency tests: the daemon kills itself with
// SIGKILL at a named point when OSVIRT_FAULT_POINTS (comma list) names it, so a
// test can crash it exactly between two steps of an operation instead of
// guessing with timers. Unset in production, where every call is a no-op.
//
// Pause points do the same for races: with OSVIRT_PAUSE_DIR set and the point
// named in OSVIRT_PAUSE_POINTS (as "point", or "point:container" for one
// container only), the operation writes <dir>/<point>.paused and waits until
// the test creates <dir>/<point>.go. With OSVIRT_PAUSE_DIR set, an
// operation that has to wait for a lock another one holds writes
// <dir>/waiting/<key> (URI-encoded) first, so a test knows the second
// operation is blocked rather than merely not yet started.
import { existsSync, mkdirSync, watch, writeFileSync } from 'node:fs';
import * as path from 'node:path';

const points = new Set(
  (process.env['OSVIRT_FAULT_POINTS'] ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean),
);
const pauseDir = process.env['OSVIRT_PAUSE_DIR'] ?? '';
const pauses = new Set(
  (process.env['OSVIRT_PAUSE_POINTS'] ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean),
);

/** The points osvirt defines (docs/crash-consistency.md says what each one proves). */
export const FAULT_POINTS = [
  'create.after-driver',
  'delete.after-intent',
  'delete.after-driver',
  'stop.after-intent',
  'start.after-publish',
  'start.before-go',
  'start.after-launch',
  'checkpoint.during-dump',
  'checkpoint.after-dump',
  'restore.during-criu',
  'restore.after-criu',
] as const;

/** Where an operation can be held for a race test. */
export const PAUSE_POINTS = ['restore.before-driver', 'start.before-driver', 'reboot.before-driver', 'create.after-prepare'] as const;

export function faultPoint(name: (typeof FAULT_POINTS)[number]): void {
  if (points.size && points.has(name)) {
    process.stderr.write(`osvirtd: fault point ${name}: killing myself with SIGKILL\n`);
    process.kill(process.pid, 'SIGKILL');
  }
}

export async function pausePoint(name: (typeof PAUSE_POINTS)[number], container: string): Promise<void> {
  if (!pauseDir || !(pauses.has(name) || pauses.has(`${name}:${container}`))) return;
  const go = path.join(pauseDir, `${name}.go`);
  // Watch before announcing, so a "go" written at once is not missed.
  const w = watch(pauseDir);
  try {
    const released = new Promise<void>((resolve) => {
      w.on('change', () => existsSync(go) && resolve());
      if (existsSync(go)) resolve();
    });
    writeFileSync(path.join(pauseDir, `${name}.paused`), `${process.pid}\n`);
    await released;
  } finally {
    w.close();
  }
}

/** An operation is about to wait for `key`, which another one holds. */
export function lockWaited(key: string): void {
  if (!pauseDir) return;
  const dir = path.join(pauseDir, 'waiting');
  mkdirSync(dir, { recursive: true });
  writeFileSync(path.join(dir, encodeURIComponent(key)), `${process.pid}\n`);
}
