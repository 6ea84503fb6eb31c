// One server interceptor enforces authentication, per-method roles,
// management-container grants and the audit log for every service
// (including health and reflection), before any handler runs.
import { Metadata, ServerInterceptingCall, status as Code, type ServerInterceptingCallInterface, type ServerInterceptor } from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { Any } from '../gen/google/protobuf/any';
import { ErrorInfo } from '../gen/google/rpc/error_details';
import { Status } from '../gen/google/rpc/status';
import { ERROR_DOMAIN } from '../core/grpc-status';
import type { AuditLog } from './audit';
import { isMutating, METHOD_ROLES, roleAtLeast, shortMethod, type Role } from './roles';

/** A management container's delegated rights over its workers. */
export interface Grant {
  /** The management container itself. */
  container: string;
  /** Decides whether a worker is covered (by name or label selector). */
  covers(name: string): boolean;
  /** Short method names it may call on covered workers. */
  methods: ReadonlySet<string>;
}

export interface Identity {
  /** Who, for logs: "uid:1000", "cn:alice", "container:mgmt". */
  principal: string;
  role: Role;
  via: 'unix' | 'unix-ro' | 'tls' | 'management';
  uid?: number | undefined;
  pid?: number | undefined;
  grant?: Grant | undefined;
}

export type IdentityResult = Identity | { error: string };

/** Resolves the caller of a call, from its transport. */
export type Authenticator = (call: ServerInterceptingCallInterface) => IdentityResult;

function status(code: Code, reason: string, message: string, meta: Record<string, string>) {
  const md = new Metadata();
  const details: Any[] = [
    { typeUrl: 'type.googleapis.com/google.rpc.ErrorInfo', value: Buffer.from(ErrorInfo.encode({ reason, domain: ERROR_DOMAIN, metadata: meta }).finish()) },
  ];
  md.set('grpc-status-details-bin', Buffer.from(Status.encode({ code, message, details }).finish()));
  return { code, details: message, metadata: md };
}

/** The container a request is about, if any (for grants and the audit log). */
function requestContainer(msg: unknown): string | undefined {
  if (!msg || typeof msg !== 'object') return undefined;
  const m = msg as { name?: unknown; message?: { $case?: string; value?: { name?: unknown } } };
  if (typeof m.name === 'string') return m.name;
  if (m.message?.$case === 'start' && typeof m.message.value?.name === 'string') return m.message.value.name;
  return undefined;
}

const GRANT_READS = new Set(['GetContainer', 'ListContainers', 'GetContainerStats', 'ListCheckpoints', 'WatchEvents', 'GetVersion', 'ListDrivers', 'Check']);

/** extensionRole: the least role of a method a driver's extension brings (undefined: denied). */
export function authInterceptor(
  authenticate: Authenticator,
  audit: AuditLog,
  logger: Logger,
  extensionRole: (method: string) => Role | undefined = () => undefined,
): ServerInterceptor {
  return (methodDef, call) => {
    const method = methodDef.path;
    const need = METHOD_ROLES[method] ?? extensionRole(method);
    const short = shortMethod(method);
    let identity: Identity | undefined;
    let container: string | undefined;
    let closed = false;
    let warning: string | undefined;
    let pending: [Code, string, string] | undefined;
    const deny = (code: Code, reason: string, message: string) => {
      closed = true;
      if (identity && isMutating(need)) audit.record({ identity, method: short, container, code: Code[code], message });
      call.sendStatus(status(code, reason, message, { method: short }));
    };
    return new ServerInterceptingCall(call, {
      start: (next) => {
        next({
          onReceiveMetadata: (md, nextMd) => {
            const who = authenticate(call);
            if ('error' in who) return deny(Code.UNAUTHENTICATED, 'UNAUTHENTICATED', who.error);
            identity = who;
            // A refusal waits for the request message, so the audit log can say
            // which container was asked for; the handler never sees the message.
            if (!need) pending = [Code.PERMISSION_DENIED, 'METHOD_NOT_ALLOWED', `${short} is not open to any role`];
            else if (who.grant) {
              if (!GRANT_READS.has(short) && !who.grant.methods.has(short)) {
                pending = [Code.PERMISSION_DENIED, 'NOT_GRANTED', `management container "${who.grant.container}" is not granted ${short}`];
              }
            } else if (!roleAtLeast(who.role, need)) {
              pending = [Code.PERMISSION_DENIED, 'ROLE_INSUFFICIENT', `${short} needs the ${need} role; ${who.principal} has ${who.role}`];
            }
            nextMd(md);
          },
          onReceiveMessage: (msg, nextMsg) => {
            if (closed) return;
            const name = requestContainer(msg);
            if (name !== undefined && container === undefined) container = name;
            if (pending) return deny(...pending);
            if (short === 'CreateContainer' && (msg as { spec?: { security?: { privileged?: boolean } } }).spec?.security?.privileged) {
              warning = 'PRIVILEGED container: no user namespace, root inside is root on the host';
            }
            const g = identity?.grant;
            if (g && name !== undefined && short !== 'ListContainers' && !g.covers(name)) {
              return deny(Code.PERMISSION_DENIED, 'NOT_GRANTED', `management container "${g.container}" may not act on "${name}"`);
            }
            if (g && short === 'RestoreContainer' && (msg as { newName?: string }).newName) {
              return deny(Code.PERMISSION_DENIED, 'NOT_GRANTED', `management container "${g.container}" may not create containers (restore with new_name)`);
            }
            if (g && short === 'WatchEvents') {
              const req = msg as { containers: string[] };
              if (req.containers.length === 0 || req.containers.some((n) => !g.covers(n))) {
                return deny(Code.PERMISSION_DENIED, 'NOT_GRANTED', `management container "${g.container}" must watch only its workers, by name`);
              }
            }
            nextMsg(msg);
          },
          onReceiveHalfClose: (next) => {
            if (closed) return;
            if (pending) return deny(...pending);
            next();
          },
        });
      },
      sendMessage: (msg, next) => {
        const g = identity?.grant;
        // A management container only sees its workers in lists.
        if (g && short === 'ListContainers' && msg && typeof msg === 'object' && Array.isArray((msg as { containers?: unknown }).containers)) {
          const m = msg as { containers: { name: string }[] };
          next({ ...m, containers: m.containers.filter((x) => g.covers(x.name)) });
          return;
        }
        next(msg);
      },
      sendStatus: (st, next) => {
        if (!closed && identity && isMutating(need)) {
          audit.record({
            identity,
            method: short,
            container,
            code: Code[st.code ?? Code.OK] ?? String(st.code),
            message: st.code === Code.OK ? '' : (st.details ?? ''),
            warning,
          });
          if (warning && st.code === Code.OK) logger.warn({ container, principal: identity.principal }, warning);
        }
        if (identity && st.code !== Code.OK && st.code !== undefined)
          logger.debug({ method: short, principal: identity.principal, code: Code[st.code] }, 'call failed');
        next(st);
      },
    });
  };
}
