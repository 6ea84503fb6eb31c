// Domain errors. Everything the core and drivers throw on purpose is an
// OsvirtError; src/api/status.ts turns it into a gRPC status in one place.
// Anything else becomes a generic INTERNAL without leaking its message.

export type ErrorCode =
  | 'INVALID_ARGUMENT'
  | 'NOT_FOUND'
  | 'ALREADY_EXISTS'
  | 'FAILED_PRECONDITION'
  | 'UNIMPLEMENTED'
  | 'UNAVAILABLE'
  | 'ABORTED'
  | 'PERMISSION_DENIED'
  | 'UNAUTHENTICATED'
  | 'RESOURCE_EXHAUSTED'
  | 'DEADLINE_EXCEEDED'
  | 'DATA_LOSS'
  | 'INTERNAL';

export interface FieldViolation {
  field: string;
  description: string;
}

export class OsvirtError extends Error {
  constructor(
    readonly code: ErrorCode,
    /** UPPER_SNAKE reason for google.rpc.ErrorInfo. */
    readonly reason: string,
    message: string,
    readonly violations: FieldViolation[] = [],
    readonly metadata: Record<string, string> = {},
  ) {
    super(message);
    this.name = 'OsvirtError';
  }
}

export function invalidArgument(field: string, description: string): OsvirtError {
  return new OsvirtError('INVALID_ARGUMENT', 'INVALID_FIELD', `${field}: ${description}`, [{ field, description }], {
    field,
  });
}

export function notFound(kind: string, name: string): OsvirtError {
  return new OsvirtError('NOT_FOUND', `${kind.toUpperCase()}_NOT_FOUND`, `${kind} "${name}" not found`, [], {
    [kind]: name,
  });
}

export function alreadyExists(kind: string, name: string): OsvirtError {
  return new OsvirtError('ALREADY_EXISTS', `${kind.toUpperCase()}_EXISTS`, `${kind} "${name}" already exists`, [], {
    [kind]: name,
  });
}

export function wrongState(name: string, state: string, wanted: string): OsvirtError {
  return new OsvirtError('FAILED_PRECONDITION', 'WRONG_STATE', `container "${name}" is ${state}; this operation needs it ${wanted}`, [], {
    container: name,
    state,
  });
}

/** A kernel feature (or host tool) the operation needs is missing. */
export function missingFeature(feature: string, detail: string): OsvirtError {
  return new OsvirtError('FAILED_PRECONDITION', 'KERNEL_FEATURE_MISSING', `${feature} is not available: ${detail}`, [], {
    feature,
  });
}

export function unimplemented(driver: string, capability: string): OsvirtError {
  return new OsvirtError('UNIMPLEMENTED', 'CAPABILITY_NOT_SUPPORTED', `driver "${driver}" does not support ${capability}`, [], { driver, capability });
}

export function isOsvirtError(e: unknown): e is OsvirtError {
  return e instanceof OsvirtError;
}

export function errorMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
