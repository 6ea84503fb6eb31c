// Fault injection for crash-consistency tests: the daemon kills itself with
// SIGKILL at a named point when OSVIRT_FAULT_POINTS (comma list) names it, so a
// test can crash it exactly between two steps of an operation instead of
// guessing with timers. Unset in production, where every call is a no-op.
const points = new Set((process.env['OSVIRT_FAULT_POINTS'] ?? '').split(',').map((s) => s.trim()).filter(Boolean));

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

export function faultPoint(name: (typeof FAULT_POINTS)[number]): void {
  if (points.size && points.has(name)) {
    process.stderr.write(`osvirtd: fault point ${name}: killing myself with SIGKILL\n`);
    process.kill(process.pid, 'SIGKILL');
  }
}
