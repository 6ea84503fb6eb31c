// The audit log: one JSON line per mutating call (who, what, which
// container, result), appended in call-completion order to
// <state-dir>/audit.log (mode 0600).
import { appendFileSync, chmodSync, existsSync } from 'node:fs';
import type { Logger } from 'pino';
import type { Identity } from './interceptor';

export interface AuditEntry {
  identity: Identity;
  method: string;
  container?: string | undefined;
  code: string;
  message: string;
  /** Something an operator should know about a call that succeeded (a privileged container). */
  warning?: string | undefined;
}

export class AuditLog {
  constructor(
    readonly file: string,
    private readonly logger: Logger,
  ) {
    if (!existsSync(file)) appendFileSync(file, '', { mode: 0o600 });
    chmodSync(file, 0o600);
  }

  record(e: AuditEntry): void {
    const line = {
      time: new Date().toISOString(),
      principal: e.identity.principal,
      role: e.identity.role,
      via: e.identity.via,
      uid: e.identity.uid,
      pid: e.identity.pid,
      method: e.method,
      container: e.container,
      result: e.code,
      message: e.message || undefined,
      warning: e.warning,
    };
    try {
      // Synchronous on purpose: the record is on disk before the caller sees the result.
      appendFileSync(this.file, JSON.stringify(line) + '\n');
    } catch (err) {
      this.logger.error({ err: String(err), entry: line }, 'cannot write the audit log');
    }
  }
}
