// Client for CRIU's RPC mode (`criu swrk <fd>`).
//
// CRIU speaks protobuf over a SOCK_SEQPACKET socket, which Node cannot create, so the native
// helper does the socket part: `osvirt-helper criu-swrk [--keep-fd N]... -- CRIU_ARGV...` makes
// the socketpair, runs `CRIU_ARGV swrk <fd>` and relays each seqpacket message as a frame
// (src/host/helper-wire.ts: uint32 LE length + the CRIU message) on its stdin/stdout, then
// exits with criu's status.
//
// One helper (hence one criu process) serves one request: CRIU keeps global state per request
// and only allows keep_open for a few read-only requests.
//
// restoreMonitored() uses `osvirt-helper restore` instead: the same relay for one RESTORE, after
// which the helper stays as the restored init's monitor (see native/src/criu.c). It hands
// CRIU a console pty slave or an output pipe of its own to inherit, and the call resolves once
// CRIU answered and the helper let go of our pipes, without waiting for the helper to exit.

import { spawn, type StdioOptions } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import {
  decodeResponse,
  encodeRequest,
  findRepoRoot,
  type CriuFeatures,
  type CriuOpts,
  type CriuReqType,
  type CriuRequest,
  type CriuResponse,
} from './criu-messages';
import { frame, FrameSplitter } from '../host/helper-wire';

export type CriuErrorCode =
  /** The native helper binary is missing or not executable. */
  | 'HELPER_MISSING'
  /** The helper could not be started. */
  | 'SPAWN_FAILED'
  /** CRIU answered success=false. */
  | 'REQUEST_FAILED'
  /** The helper or criu exited before answering. */
  | 'NO_RESPONSE'
  /** A message could not be decoded, or the answer does not fit the request. */
  | 'PROTOCOL'
  /** The caller aborted the request. */
  | 'ABORTED';

export interface CriuErrorDetails {
  request: CriuReqType;
  crErrno?: number;
  crErrmsg?: string;
  exitCode?: number | null;
  logFile?: string;
  logTail?: string;
  /** The first error line of the log that is not known noise. */
  logError?: string;
  stderrTail?: string;
  /** Script name of a notification whose handler failed. */
  notifyScript?: string;
  cause?: unknown;
}

/** A failed CRIU request, carrying what CRIU said about it. */
export class CriuError extends Error {
  readonly code: CriuErrorCode;
  readonly request: CriuReqType;
  readonly crErrno: number | undefined;
  readonly crErrmsg: string | undefined;
  readonly exitCode: number | null | undefined;
  readonly logFile: string | undefined;
  readonly logTail: string | undefined;
  readonly logError: string | undefined;
  readonly stderrTail: string | undefined;
  readonly notifyScript: string | undefined;

  constructor(code: CriuErrorCode, summary: string, details: CriuErrorDetails) {
    super(composeMessage(summary, details), details.cause === undefined ? undefined : { cause: details.cause });
    this.name = 'CriuError';
    this.code = code;
    this.request = details.request;
    this.crErrno = details.crErrno;
    this.crErrmsg = details.crErrmsg;
    this.exitCode = details.exitCode;
    this.logFile = details.logFile;
    this.logTail = details.logTail;
    this.logError = details.logError;
    this.stderrTail = details.stderrTail;
    this.notifyScript = details.notifyScript;
  }
}

function errnoName(errno: number): string | undefined {
  for (const [name, value] of Object.entries(os.constants.errno)) if (value === errno) return name;
  return undefined;
}

// CRIU logs this on every call on hosts that cap RLIMIT_NOFILE (see HOST-FACTS), so it is
// often the "first error" CRIU reports in cr_errmsg while the real cause comes later.
const HARMLESS_ERROR = /RLIMIT_NOFILE/;

function composeMessage(summary: string, d: CriuErrorDetails): string {
  let text = summary;
  const crErrmsg = d.crErrmsg?.trim();
  if (crErrmsg && !(HARMLESS_ERROR.test(crErrmsg) && d.logError)) text += `: ${crErrmsg}`;
  else if (d.logError) text += `: ${d.logError}`;
  if (d.crErrno) text += ` (errno ${d.crErrno}${errnoName(d.crErrno) ? ` ${errnoName(d.crErrno)}` : ''})`;
  if (d.notifyScript && d.cause !== undefined) {
    const why = d.cause instanceof Error ? d.cause.message : String(d.cause);
    text += `; the '${d.notifyScript}' notification handler failed: ${why}`;
  }
  if (d.logTail) text += `\n--- end of ${d.logFile ?? 'criu log'} ---\n${d.logTail}`;
  else if (d.stderrTail) text += `\n--- criu stderr ---\n${d.stderrTail}`;
  return text;
}

export interface CriuNotification {
  /** Action-script name: "pre-dump", "query-ext-files", "post-dump", "network-lock", "setup-namespaces", "post-restore", ... */
  script: string;
  /** Set for "setup-namespaces" and "post-restore": host pid of the restored root. */
  pid?: number;
}

/** What a notification handler may answer besides success. */
export interface CriuNotifyReply {
  /** For "query-ext-files": more `--external` resources to add to the dump. */
  external?: string[];
}

export interface CriuCallOptions {
  /** Images directory, given to CRIU as `images_dir`. */
  imagesDir?: string;
  /** Work directory (logs, stats), opened here and passed as `work_dir_fd`; default: imagesDir. */
  workDir?: string;
  /** Descriptors of this process to hand to criu as `--inherit-fd fd[N]:key`. */
  inheritFds?: { key: string; fd: number }[];
  /**
   * Called for each notification when opts.notify_scripts is set; CRIU waits for it. A throw or
   * rejection answers notify_success=false, which makes CRIU abort the operation.
   */
  onNotify?: (notification: CriuNotification) => void | CriuNotifyReply | Promise<void | CriuNotifyReply>;
  /**
   * Aborting sends SIGTERM to the helper, which closes CRIU's socket; the promise rejects once
   * criu itself has exited (it shares our stderr pipe), so nothing is left running behind it.
   */
  signal?: AbortSignal;
  /** Extra helper options before "--", e.g. ["--cgroup", dir]: criu starts in that cgroup. */
  helperArgs?: string[];
}

export interface CriuRpcConfig {
  /** The criu executable (see locateCriu()). */
  criuPath: string;
  /** Default: $OSVIRT_HELPER, else <repo>/native/build/osvirt-helper. */
  helperPath?: string;
  /** Lines of CRIU's log file attached to errors (default 20). */
  logTailLines?: number;
  /**
   * A directory on a tmpfs that criu sees as /run (in a private mount namespace the helper makes
   * for it). CRIU keeps its kernel-feature cache (/run/criu.kdat) only on a tmpfs; without one it
   * probes the kernel again on every call (~50 ms here).
   */
  runDir?: string;
}

export interface CriuVersion {
  major: number;
  minor: number;
  sublevel: number;
  extra?: number;
  gitid?: string;
  name?: string;
  /** "4.2.1" */
  text: string;
}

export interface CriuDumpParams extends CriuCallOptions {
  /** Root of the process tree to dump (a host pid). */
  pid: number;
  imagesDir: string;
  /** Further options; log_level defaults to 4 so failures come with a useful log. */
  opts?: CriuOpts;
}

export interface CriuRestoreParams extends CriuCallOptions {
  imagesDir: string;
  opts?: CriuOpts;
}

export interface CriuDumpResult {
  logFile: string | undefined;
  durationMs: number;
}

export interface CriuRestoreResult {
  /** Host pid of the restored tree's root (restored detached: not our child). */
  pid: number;
  logFile: string | undefined;
  durationMs: number;
}

export interface CriuMonitoredRestoreParams extends CriuRestoreParams {
  /** The monitor's state directory (monitor.pid, init.pid, monitor.sock, exit, ...). */
  stateDir: string;
  /**
   * "tty": the helper allocates a pty, keeps the master as the console and gives criu the slave
   * at `fd` (a symlink stateDir/console-pty names it, for an external /dev/console mount);
   * "pipe": it gives criu the write end of a pipe at `fd` and logs what arrives on it.
   * Name `fd` in opts.inherit_fd under the key of the dumped tty ("tty[rdev:dev]") or pipe.
   */
  console: 'tty' | 'pipe';
  fd: number;
  /**
   * Called once the helper runs, before the request is sent: options that depend on what the
   * helper made (e.g. the path of its pty, from stateDir/console-pty). Merged into opts.
   */
  patchOpts?: () => Promise<CriuOpts>;
}

export interface CriuMonitoredRestoreResult extends CriuRestoreResult {
  /** The helper, now the restored init's monitor (and, with rst_sibling, its parent). */
  monitorPid: number;
}

export function defaultHelperPath(): string {
  return process.env['OSVIRT_HELPER'] ?? path.join(findRepoRoot(), 'native', 'build', 'osvirt-helper');
}

const STDERR_KEEP = 16 * 1024;
const LOG_TAIL_BYTES = 64 * 1024;
const LOG_SCAN_BYTES = 8 * 1024 * 1024;

function tailLines(text: string, lines: number): string {
  const all = text.replace(/\n+$/, '').split('\n');
  return all.slice(-lines).join('\n');
}

function readLogTail(file: string, lines: number): string | undefined {
  let fd: number | undefined;
  try {
    fd = fs.openSync(file, 'r');
    const size = fs.fstatSync(fd).size;
    const length = Math.min(size, LOG_TAIL_BYTES);
    const buf = Buffer.alloc(length);
    fs.readSync(fd, buf, 0, length, size - length);
    const text = tailLines(buf.toString('utf8'), lines);
    return text === '' ? undefined : text;
  } catch {
    return undefined;
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}

/** "(00.058102) Error (compel/src/lib/infect.c:417): Unable to ..." -> "Unable to ..." */
function readLogError(file: string): string | undefined {
  let text: string;
  let fd: number | undefined;
  try {
    fd = fs.openSync(file, 'r');
    const buf = Buffer.alloc(Math.min(fs.fstatSync(fd).size, LOG_SCAN_BYTES));
    fs.readSync(fd, buf, 0, buf.length, 0);
    text = buf.toString('utf8');
  } catch {
    return undefined;
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
  for (const line of text.split('\n')) {
    const m = /^\([\d.\s]+\)\s*(?:\d+:\s*)?Error \([^)]*\):\s*(.*)$/.exec(line);
    if (m?.[1] !== undefined && !HARMLESS_ERROR.test(m[1])) return m[1].trim();
  }
  return undefined;
}

export class CriuRpcClient {
  readonly criuPath: string;
  readonly helperPath: string;
  readonly runDir: string | undefined;
  private readonly logTailLines: number;

  constructor(config: CriuRpcConfig) {
    this.criuPath = config.criuPath;
    this.helperPath = config.helperPath ?? defaultHelperPath();
    this.runDir = config.runDir;
    this.logTailLines = config.logTailLines ?? 20;
  }

  /** VERSION: the version of the criu binary, asked over RPC. */
  async version(): Promise<CriuVersion> {
    const resp = await this.request({ type: 'VERSION' });
    const v = resp.version;
    if (!v) throw new CriuError('PROTOCOL', 'criu answered VERSION without a version', { request: 'VERSION' });
    const sublevel = v.sublevel ?? 0;
    const result: CriuVersion = {
      major: v.major_number,
      minor: v.minor_number,
      sublevel,
      text: `${v.major_number}.${v.minor_number}${v.sublevel !== undefined ? `.${sublevel}` : ''}`,
    };
    if (v.extra !== undefined) result.extra = v.extra;
    if (v.gitid !== undefined) result.gitid = v.gitid;
    if (v.name !== undefined) result.name = v.name;
    return result;
  }

  /** CHECK: `criu check`; throws CriuError when the kernel lacks what CRIU needs. */
  async check(opts?: CriuOpts, options: CriuCallOptions = {}): Promise<void> {
    const req: CriuRequest = { type: 'CHECK' };
    if (opts) req.opts = opts;
    await this.request(req, options);
  }

  /** FEATURE_CHECK: set the features to probe to true; the answer says which work here. */
  async featureCheck(features: CriuFeatures): Promise<CriuFeatures> {
    const resp = await this.request({ type: 'FEATURE_CHECK', features });
    return resp.features ?? {};
  }

  /** DUMP the tree rooted at params.pid into params.imagesDir. */
  async dump(params: CriuDumpParams): Promise<CriuDumpResult> {
    const started = Date.now();
    const opts: CriuOpts = { log_level: 4, ...params.opts, pid: params.pid };
    await this.request({ type: 'DUMP', opts }, params);
    return { logFile: this.logFileOf(opts, params), durationMs: Date.now() - started };
  }

  /**
   * RESTORE through `osvirt-helper restore`, which stays behind as the monitor of the restored
   * init. Asks for rst_sibling so the init becomes the helper's child.
   */
  async restoreMonitored(params: CriuMonitoredRestoreParams): Promise<CriuMonitoredRestoreResult> {
    const started = Date.now();
    const opts: CriuOpts = { log_level: 4, rst_sibling: true, ...params.opts };
    const stdio = [params.console === 'tty' ? '--tty-fd' : '--log-fd', String(params.fd)];
    const helperArgs = ['--state', params.stateDir, ...stdio, ...(params.helperArgs ?? [])];
    let monitorPid = 0;
    const how: { mode: 'restore'; onSpawn: (pid: number) => void; patchOpts?: () => Promise<CriuOpts> } = {
      mode: 'restore',
      onSpawn: (pid) => (monitorPid = pid),
    };
    if (params.patchOpts) how.patchOpts = params.patchOpts;
    const resp = await this.request({ type: 'RESTORE', opts }, { ...params, helperArgs }, how);
    if (!resp.restore) {
      throw new CriuError('PROTOCOL', 'criu answered RESTORE without the restored pid', { request: 'RESTORE' });
    }
    return { pid: resp.restore.pid, monitorPid, logFile: this.logFileOf(opts, params), durationMs: Date.now() - started };
  }

  /** RESTORE from params.imagesDir; CRIU restores detached, the tree is not our child. */
  async restore(params: CriuRestoreParams): Promise<CriuRestoreResult> {
    const started = Date.now();
    const opts: CriuOpts = { log_level: 4, ...params.opts };
    const resp = await this.request({ type: 'RESTORE', opts }, params);
    if (!resp.restore) {
      throw new CriuError('PROTOCOL', 'criu answered RESTORE without the restored pid', { request: 'RESTORE' });
    }
    return { pid: resp.restore.pid, logFile: this.logFileOf(opts, params), durationMs: Date.now() - started };
  }

  /**
   * Sends one request and returns CRIU's final answer, answering notifications on the way.
   * Throws CriuError when CRIU reports failure or goes away without answering.
   */
  request(
    req: CriuRequest,
    options: CriuCallOptions = {},
    how: { mode?: 'criu-swrk' | 'restore'; onSpawn?: (pid: number) => void; patchOpts?: () => Promise<CriuOpts> } = {},
  ): Promise<CriuResponse> {
    const type = req.type;
    const mode = how.mode ?? 'criu-swrk';
    try {
      fs.accessSync(this.helperPath, fs.constants.X_OK);
    } catch {
      return Promise.reject(
        new CriuError('HELPER_MISSING', `native helper not built: ${this.helperPath} is missing (run: npm run build:native)`, {
          request: type,
        }),
      );
    }

    const stdio: StdioOptions = ['pipe', 'pipe', 'pipe'];
    const args: string[] = [mode];
    if (this.runDir !== undefined) args.push('--run-dir', this.runDir);
    args.push(...(options.helperArgs ?? []));
    // A descriptor handed to criu appears in the helper (and criu) at its index in stdio.
    const pass = (fd: number): number => {
      const childFd = stdio.length;
      stdio.push(fd);
      args.push('--keep-fd', String(childFd));
      return childFd;
    };

    const opened: number[] = [];
    let message: CriuRequest = req;
    try {
      if (options.imagesDir !== undefined || options.workDir !== undefined || options.inheritFds?.length) {
        const opts: CriuOpts = { ...req.opts };
        if (options.imagesDir !== undefined) opts.images_dir = path.resolve(options.imagesDir);
        if (options.workDir !== undefined) {
          const fd = fs.openSync(options.workDir, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
          opened.push(fd);
          opts.work_dir_fd = pass(fd);
        }
        if (options.inheritFds?.length) {
          opts.inherit_fd = [...(opts.inherit_fd ?? []), ...options.inheritFds.map((i) => ({ key: i.key, fd: pass(i.fd) }))];
        }
        message = { ...req, opts };
      }
      if (message.opts && message.opts.images_dir_fd === undefined) {
        message = { ...message, opts: { ...message.opts, images_dir_fd: -1 } };
      }
    } catch (err: unknown) {
      for (const fd of opened) fs.closeSync(fd);
      return Promise.reject(err);
    }
    args.push('--', this.criuPath);

    const logFile = message.opts ? this.logFileOf(message.opts, options, type) : undefined;
    let payload: Uint8Array;
    try {
      payload = encodeRequest(message);
    } catch (err: unknown) {
      for (const fd of opened) fs.closeSync(fd);
      return Promise.reject(err);
    }

    return new Promise<CriuResponse>((resolve, reject) => {
      // The restore helper outlives us as a monitor: its own process group, not waited for.
      const child = spawn(this.helperPath, args, { stdio, detached: mode === 'restore' });
      if (child.pid !== undefined) how.onSpawn?.(child.pid);
      // The helper holds its own copies now (spawn returns after exec).
      for (const fd of opened) fs.closeSync(fd);

      const reader = new FrameSplitter();
      let stderr = '';
      let final: CriuResponse | undefined;
      let failure: CriuError | undefined;
      let notifyError: { script: string; error: unknown } | undefined;
      let queue: Promise<void> = Promise.resolve();
      let settled = false;

      const details = (extra: Partial<CriuErrorDetails> = {}): CriuErrorDetails => {
        const d: CriuErrorDetails = { request: type, ...extra };
        if (logFile !== undefined) {
          d.logFile = logFile;
          const tail = readLogTail(logFile, this.logTailLines);
          if (tail !== undefined) d.logTail = tail;
          const logError = readLogError(logFile);
          if (logError !== undefined) d.logError = logError;
        }
        const err = tailLines(stderr, this.logTailLines);
        if (err !== '') d.stderrTail = err;
        return d;
      };
      const send = (r: CriuRequest): void => {
        if (child.stdin && !child.stdin.destroyed) child.stdin.write(frame(encodeRequest(r)));
      };
      const onAbort = (): void => {
        failure ??= new CriuError('ABORTED', `criu ${type} request aborted`, details());
        child.kill('SIGTERM');
      };

      const handle = async (bytes: Buffer): Promise<void> => {
        let resp: CriuResponse;
        try {
          resp = decodeResponse(bytes);
        } catch (err: unknown) {
          failure ??= new CriuError('PROTOCOL', `cannot decode criu's answer to ${type}`, { request: type, cause: err });
          child.kill('SIGTERM');
          return;
        }
        if (resp.type === 'NOTIFY') {
          const script = resp.notify?.script ?? '';
          const answer: CriuRequest = { type: 'NOTIFY', notify_success: true };
          if (options.onNotify) {
            const notification: CriuNotification = { script };
            if (resp.notify?.pid !== undefined) notification.pid = resp.notify.pid;
            try {
              const reply = await options.onNotify(notification);
              if (reply?.external?.length) answer.opts = { images_dir_fd: -1, external: reply.external };
            } catch (err: unknown) {
              answer.notify_success = false;
              notifyError ??= { script, error: err };
            }
          }
          send(answer);
          return;
        }
        if (final === undefined) {
          final = resp;
          // One request per criu: closing our side lets the helper and criu finish.
          child.stdin?.end();
        }
      };

      child.stdin?.on('error', () => {
        // EPIPE when criu is gone; the exit status tells the story.
      });
      child.stdout?.on('data', (chunk: Buffer) => {
        if (failure) return;
        try {
          for (const bytes of reader.push(chunk)) queue = queue.then(() => handle(bytes));
        } catch (err: unknown) {
          failure ??= new CriuError('PROTOCOL', `the helper broke the framing answering ${type}`, { request: type, cause: err });
          child.kill('SIGTERM');
        }
      });
      child.stderr?.on('data', (chunk: Buffer) => {
        stderr = (stderr + chunk.toString('utf8')).slice(-STDERR_KEEP);
      });
      options.signal?.addEventListener('abort', onAbort, { once: true });
      if (options.signal?.aborted) onAbort();

      child.on('error', (err: Error) => {
        if (settled) return;
        settled = true;
        options.signal?.removeEventListener('abort', onAbort);
        reject(new CriuError('SPAWN_FAILED', `cannot run ${this.helperPath}`, { request: type, cause: err }));
      });
      const finish = (code: number | null, signal: NodeJS.Signals | null): void => {
        void queue.then(() => {
          if (settled) return;
          settled = true;
          options.signal?.removeEventListener('abort', onAbort);
          const exitCode = code ?? (signal ? 128 + (os.constants.signals[signal] ?? 0) : null);
          if (failure) return reject(failure);
          const notify = notifyError ? { notifyScript: notifyError.script, cause: notifyError.error } : {};
          if (final === undefined) {
            return reject(
              new CriuError(
                'NO_RESPONSE',
                `criu exited (status ${exitCode ?? 'unknown'}) without answering the ${type} request` +
                  (reader.leftover ? ` (${reader.leftover} bytes of a truncated frame)` : ''),
                details({ exitCode, ...notify }),
              ),
            );
          }
          if (!final.success) {
            const d = details({ exitCode, ...notify });
            if (final.cr_errno !== undefined) d.crErrno = final.cr_errno;
            if (final.cr_errmsg !== undefined) d.crErrmsg = final.cr_errmsg;
            return reject(new CriuError('REQUEST_FAILED', `criu ${type} failed`, d));
          }
          if (final.type !== type && final.type !== 'EMPTY') {
            return reject(new CriuError('PROTOCOL', `criu answered ${final.type} to a ${type} request`, { request: type }));
          }
          resolve(final);
        });
      };
      if (mode === 'restore') {
        // Success leaves the helper running as a monitor with its stdio moved to its log: settle
        // once it let go of our pipes (and then it is no business of ours any more).
        let open = 2;
        const ended = (): void => {
          if (--open > 0) return;
          child.unref();
          void queue.then(() => {
            const exited = child.exitCode !== null || child.signalCode !== null;
            // A failed restore ends the helper: wait for its status, it says what went wrong.
            if (!exited && !final?.success) child.once('exit', finish);
            else finish(exited ? child.exitCode : null, exited ? child.signalCode : null);
          });
        };
        child.stdout?.once('close', ended);
        child.stderr?.once('close', ended);
      } else {
        child.on('close', finish);
      }

      if (!how.patchOpts) {
        child.stdin?.write(frame(payload));
      } else {
        // Options that only exist once the helper runs (e.g. the pty it allocated).
        how.patchOpts().then(
          (extra) => child.stdin?.write(frame(encodeRequest({ ...message, opts: { images_dir_fd: -1, ...message.opts, ...extra } }))),
          (err: unknown) => {
            failure ??= new CriuError('ABORTED', `criu ${type} request not sent: ${err instanceof Error ? err.message : String(err)}`, {
              request: type,
              cause: err,
            });
            child.kill('SIGTERM');
          },
        );
      }
    });
  }

  /** Where CRIU writes its log for these options, if it writes one. */
  private logFileOf(opts: CriuOpts, options: CriuCallOptions, type: CriuReqType = 'DUMP'): string | undefined {
    if (opts.log_to_stderr) return undefined;
    // CHECK only logs to a file when asked to; the other requests default to criu.log.
    if (opts.log_file === undefined && (type === 'CHECK' || type === 'VERSION' || type === 'FEATURE_CHECK')) {
      return undefined;
    }
    const dir = options.workDir ?? options.imagesDir ?? opts.images_dir;
    if (dir === undefined) return undefined;
    return path.join(dir, opts.log_file ?? 'criu.log');
  }
}
