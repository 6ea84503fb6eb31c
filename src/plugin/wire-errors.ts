// Errors coming back from a plugin over gRPC become the same OsvirtError a
// built-in driver would have thrown, so the core cannot tell the difference.
// Transport failures (socket gone, plugin dead or hung) become UNAVAILABLE
// with reason DRIVER_UNAVAILABLE: the caller retries once the plugin is back.
import { status as Code, type ServiceError } from '@grpc/grpc-js';
import { decodeStatusDetails } from '../core/grpc-status';
import { type ErrorCode, OsvirtError } from '../core/errors';

const CODES: Partial<Record<Code, ErrorCode>> = {
  [Code.INVALID_ARGUMENT]: 'INVALID_ARGUMENT',
  [Code.NOT_FOUND]: 'NOT_FOUND',
  [Code.ALREADY_EXISTS]: 'ALREADY_EXISTS',
  [Code.FAILED_PRECONDITION]: 'FAILED_PRECONDITION',
  [Code.UNIMPLEMENTED]: 'UNIMPLEMENTED',
  [Code.ABORTED]: 'ABORTED',
  [Code.PERMISSION_DENIED]: 'PERMISSION_DENIED',
  [Code.RESOURCE_EXHAUSTED]: 'RESOURCE_EXHAUSTED',
  [Code.UNAUTHENTICATED]: 'UNAUTHENTICATED',
};

export function isServiceError(e: unknown): e is ServiceError {
  return e instanceof Error && typeof (e as Partial<ServiceError>).code === 'number';
}

/** Translate a status from a plugin into the core's error type. */
export function fromServiceError(driver: string, method: string, e: unknown): OsvirtError {
  if (!isServiceError(e)) {
    return new OsvirtError('UNAVAILABLE', 'DRIVER_UNAVAILABLE', `driver "${driver}" ${method}: ${e instanceof Error ? e.message : String(e)}`, [], { driver });
  }
  if (e.code === Code.UNAVAILABLE || e.code === Code.CANCELLED) {
    return new OsvirtError('UNAVAILABLE', 'DRIVER_UNAVAILABLE', `driver "${driver}" is unreachable (${method}: ${e.details || 'connection failed'})`, [], {
      driver,
    });
  }
  if (e.code === Code.DEADLINE_EXCEEDED) {
    return new OsvirtError('UNAVAILABLE', 'DRIVER_TIMEOUT', `driver "${driver}" did not answer ${method} in time; it may be hung`, [], { driver });
  }
  const code = CODES[e.code];
  if (!code) {
    // INTERNAL, UNKNOWN, DATA_LOSS...: the plugin's own failure; keep its message, which it chose to send.
    return new OsvirtError('INTERNAL', 'DRIVER_INTERNAL', `driver "${driver}" ${method} failed: ${e.details}`, [], { driver });
  }
  const d = decodeStatusDetails(e.metadata);
  let reason = d.errorInfo?.reason || code;
  const violations = (d.badRequest?.fieldViolations ?? []).map((v) => ({ field: v.field, description: v.description }));
  // A plugin without status details (no grpcio-status in Python, say) that
  // follows the "field: what is wrong" message convention still names the field.
  const m = /^([a-z_][a-z0-9_]*(?:\[\d+\])?(?:\.[a-z_][a-z0-9_]*(?:\[\d+\])?)*): (.+)$/s.exec(e.details);
  if (code === 'INVALID_ARGUMENT' && violations.length === 0 && m) {
    violations.push({ field: m[1]!, description: m[2]! });
    if (!d.errorInfo) reason = 'INVALID_FIELD';
  }
  return new OsvirtError(code, reason, e.details, violations, d.errorInfo?.metadata ?? {});
}
