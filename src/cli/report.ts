// How every osvirt subcommand ends: an error becomes a message that says what
// to do next (code, ErrorInfo reason, the fields at fault) and an exit code.
import { status as Code, type ServiceError } from '@grpc/grpc-js';
import { decodeStatusDetails } from '../core/grpc-status';

export function report(e: unknown): never {
  const se = e as Partial<ServiceError>;
  if (typeof se.code === 'number') {
    const d = decodeStatusDetails(se.metadata);
    let msg = se.details || se.message || 'request failed';
    if (se.code === Code.UNAVAILABLE) msg = `cannot reach osvirtd (${se.details}); is the daemon running? Start it with "osvirtd" or pass --connect`;
    const reason = d.errorInfo?.reason ? ` [${d.errorInfo.reason}]` : '';
    process.stderr.write(`osvirt: ${Code[se.code]}${reason}: ${msg}\n`);
    for (const v of d.badRequest?.fieldViolations ?? []) process.stderr.write(`  field ${v.field}: ${v.description}\n`);
    process.exit(se.code === Code.NOT_FOUND ? 3 : 1);
  }
  process.stderr.write(`osvirt: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(1);
}

/** A commander action that exits 0 when done and reports any error. */
export function action<A extends unknown[]>(fn: (...args: A) => Promise<void>) {
  return (...args: A) => fn(...args).then(() => process.exit(0), report);
}
