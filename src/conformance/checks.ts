// Small assertion helpers for conformance cases: each failure says what the
// contract asks and what the driver did.
import { isOsvirtError, type ErrorCode } from '../core/errors';
import { RuntimeStatus, type RuntimeState } from '../core/driver';
import { until as poll } from '../testing/until';

export class CheckFailed extends Error {}

export class Skip extends Error {}

export function check(cond: unknown, message: string): asserts cond {
  if (!cond) throw new CheckFailed(message);
}

/** The gRPC-style code of an error (a plain Error counts as INTERNAL, as it would on the wire). */
export function codeOf(e: unknown): ErrorCode {
  return isOsvirtError(e) ? e.code : 'INTERNAL';
}

export function describe(e: unknown): string {
  if (isOsvirtError(e)) return `${e.code} [${e.reason}]: ${e.message}`;
  return e instanceof Error ? e.message : String(e);
}

/** Expect the call to fail with one of the codes. */
export async function expectCode(p: Promise<unknown> | (() => Promise<unknown>), codes: ErrorCode | ErrorCode[], what: string): Promise<ErrorCode> {
  const want = Array.isArray(codes) ? codes : [codes];
  try {
    await (typeof p === 'function' ? p() : p);
  } catch (e) {
    const got = codeOf(e);
    check(want.includes(got), `${what}: expected ${want.join(' or ')}, got ${describe(e)}`);
    return got;
  }
  throw new CheckFailed(`${what}: expected ${want.join(' or ')}, but the call succeeded`);
}

/** Run a call the contract says succeeds; a failure names the call. */
export async function ok<T>(p: Promise<T>, what: string): Promise<T> {
  try {
    return await p;
  } catch (e) {
    throw new CheckFailed(`${what} failed: ${describe(e)}`);
  }
}

export function statusName(s: RuntimeStatus | undefined): string {
  return s === undefined ? 'nothing' : (RuntimeStatus[s] ?? String(s)).replace('RUNTIME_STATUS_', '');
}

export function expectStatus(rs: RuntimeState | undefined, want: RuntimeStatus, what: string): RuntimeState {
  check(rs, `${what}: no state returned`);
  check(rs.status === want, `${what}: expected ${statusName(want)}, got ${statusName(rs.status)}${rs.message ? ` (${rs.message})` : ''}`);
  return rs;
}

/** Poll until fn holds (a probe that throws means "not yet"); false if it never does within ms. */
export function until(fn: () => boolean | Promise<boolean>, ms: number): Promise<boolean> {
  return poll(fn, 'a condition', ms).then(
    () => true,
    () => false,
  );
}

export function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let t: NodeJS.Timeout | undefined;
  return Promise.race([
    p.finally(() => clearTimeout(t)),
    new Promise<never>((_, reject) => {
      t = setTimeout(() => reject(new CheckFailed(`${what} did not finish within ${(ms / 1000).toFixed(1)} s`)), ms);
    }),
  ]);
}
