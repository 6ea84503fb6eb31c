// The one poll loop for tests, the conformance suite and the bench: wait for
// an effect seen from outside instead of sleeping for a guessed time.

/**
 * Poll until fn gives a truthy value, and return it. A probe that throws
 * means "not yet" (a file not written yet, a socket not listening yet): it is
 * retried, and its last error is reported if the deadline passes.
 */
export async function until<T>(fn: () => T | Promise<T>, what: string, ms = 10_000, everyMs = 25): Promise<NonNullable<T>> {
  const end = Date.now() + ms;
  for (;;) {
    let v: T | undefined;
    let err: unknown;
    try {
      v = await fn();
    } catch (e) {
      err = e;
    }
    if (v) return v as NonNullable<T>;
    if (Date.now() > end)
      throw new Error(`timed out after ${ms} ms waiting for ${what}${err ? ` (last probe: ${err instanceof Error ? err.message : String(err)})` : ''}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/**
 * The opposite observation: fn must hold at every poll for the whole window
 * (a paused counter stands still, a process ignoring a signal stays alive).
 * Fails at the first poll where it does not, or where the probe throws.
 * This is a measurement window, not a wait for something to happen.
 */
export async function holds(fn: () => boolean | Promise<boolean>, what: string, ms: number, everyMs = 25): Promise<void> {
  const end = Date.now() + ms;
  for (;;) {
    if (!(await fn())) throw new Error(`${what} stopped holding after ${ms - Math.max(0, end - Date.now())} ms`);
    if (Date.now() >= end) return;
    await new Promise((r) => setTimeout(r, Math.min(everyMs, Math.max(1, end - Date.now()))));
  }
}
