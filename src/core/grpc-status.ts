// The one place where errors become gRPC statuses. An OsvirtError keeps its
// code and message and gains google.rpc.Status details (ErrorInfo, and
// BadRequest for INVALID_ARGUMENT) in grpc-status-details-bin. Anything
// else is logged and answered with a generic INTERNAL, leaking nothing.
// Here in the core (not src/api) because drivers' own services use it too.
import { Metadata, status as Code, type sendUnaryData, type ServerUnaryCall, type ServiceError } from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { Any } from '../gen/google/protobuf/any';
import { BadRequest, ErrorInfo } from '../gen/google/rpc/error_details';
import { Status } from '../gen/google/rpc/status';
import { isOsvirtError, OsvirtError, errorMessage } from './errors';

export const ERROR_DOMAIN = 'osvirt.dev';

function codeOf(e: OsvirtError): Code {
  return Code[e.code];
}

export function toServiceError(e: unknown, logger: Logger): ServiceError {
  let err: OsvirtError;
  if (isOsvirtError(e)) {
    err = e;
  } else {
    logger.error({ err: errorMessage(e), stack: e instanceof Error ? e.stack : undefined }, 'internal error');
    err = new OsvirtError('INTERNAL', 'INTERNAL', 'internal error; see the daemon log for details');
  }
  const details: Any[] = [
    {
      typeUrl: 'type.googleapis.com/google.rpc.ErrorInfo',
      value: Buffer.from(ErrorInfo.encode({ reason: err.reason, domain: ERROR_DOMAIN, metadata: err.metadata }).finish()),
    },
  ];
  if (err.violations.length > 0) {
    details.push({
      typeUrl: 'type.googleapis.com/google.rpc.BadRequest',
      value: Buffer.from(
        BadRequest.encode({
          fieldViolations: err.violations.map((v) => ({ field: v.field, description: v.description, reason: 'INVALID_FIELD', localizedMessage: undefined })),
        }).finish(),
      ),
    });
  }
  const code = codeOf(err);
  const md = new Metadata();
  md.set('grpc-status-details-bin', Buffer.from(Status.encode({ code, message: err.message, details }).finish()));
  return Object.assign(new Error(err.message), { code, details: err.message, metadata: md }) as ServiceError;
}

/** Client side: decode the details of a status, for the CLI and tests. */
export function decodeStatusDetails(md: Metadata | undefined): { errorInfo?: ErrorInfo; badRequest?: BadRequest } {
  const raw = md?.get('grpc-status-details-bin')[0];
  if (!raw || typeof raw === 'string') return {};
  const st = Status.decode(raw);
  const out: { errorInfo?: ErrorInfo; badRequest?: BadRequest } = {};
  for (const d of st.details) {
    if (d.typeUrl.endsWith('/google.rpc.ErrorInfo')) out.errorInfo = ErrorInfo.decode(d.value);
    if (d.typeUrl.endsWith('/google.rpc.BadRequest')) out.badRequest = BadRequest.decode(d.value);
  }
  return out;
}

/** A unary handler from a function: its result is the response, what it throws becomes the status. */
export function unary<Req, Res>(logger: Logger, fn: (req: Req) => Promise<Res> | Res) {
  return (call: ServerUnaryCall<Req, Res>, cb: sendUnaryData<Res>): void => {
    Promise.resolve()
      .then(() => fn(call.request))
      .then(
        (res) => cb(null, res),
        (e) => cb(toServiceError(e, logger)),
      );
  };
}
