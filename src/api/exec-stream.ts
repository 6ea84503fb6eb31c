// One exec session over a bidirectional gRPC stream, for both the public
// API (ContainerService.ExecContainer) and the driver protocol
// (DriverService.Exec): the first message starts the process, then stdin,
// resizes and stdin close flow in while stdout/stderr flow out, and one
// exit message ends the stream. The two protos share this framing.
import type { ServerDuplexStream } from '@grpc/grpc-js';
import type { Logger } from 'pino';
import type { ExecOptions, ExecSession } from '../core/driver';
import { invalidArgument } from '../core/errors';
import { validateEnv } from '../core/validate';
import type { ExecExit, TerminalSize, User } from '../gen/osvirt/v1/container';
import { toServiceError } from '../core/grpc-status';

const MAX_CHUNK = 64 * 1024;

interface StartFields {
  args: string[];
  env: string[];
  cwd: string;
  user?: User | undefined;
  tty: boolean;
  terminalSize?: TerminalSize | undefined;
}

type ExecIn<S> = {
  message?:
    | { $case: 'start'; value: S }
    | { $case: 'stdin'; value: Buffer }
    | { $case: 'resize'; value: TerminalSize }
    | { $case: 'closeStdin'; value: boolean }
    | undefined;
};

type ExecOut = { message?: { $case: 'stdout'; value: Buffer } | { $case: 'stderr'; value: Buffer } | { $case: 'exit'; value: ExecExit } | undefined };

/**
 * Serve one exec stream. `open` gets the validated start message and the
 * options without the id (each caller names the container its own way) and
 * starts the process; `onStarted` runs once it does.
 */
export function serveExecStream<S extends StartFields>(
  call: ServerDuplexStream<ExecIn<S>, ExecOut>,
  logger: Logger,
  open: (start: S, opts: Omit<ExecOptions, 'id'>) => Promise<ExecSession>,
  onStarted: () => void = () => undefined,
): void {
  let started = false;
  let tty = false;
  let clientEnded = false;
  let session: ExecSession | undefined;
  const pending: ExecIn<S>[] = [];
  const fail = (e: unknown) => {
    session?.kill();
    call.emit('error', toServiceError(e, logger));
  };
  const handle = (msg: ExecIn<S>) => {
    if (!session) return void pending.push(msg);
    const c = msg.message;
    if (c?.$case === 'stdin') session.stdin.write(c.value);
    else if (c?.$case === 'resize') session.resize(c.value.rows, c.value.cols);
    else if (c?.$case === 'closeStdin' && !session.stdin.writableEnded) session.stdin.end();
  };
  call.on('data', (msg: ExecIn<S>) => {
    if (started) return handle(msg);
    started = true;
    const s = msg.message;
    if (s?.$case !== 'start') return fail(invalidArgument('start', 'the first message of an exec session must be "start"'));
    const st = s.value;
    tty = st.tty;
    Promise.resolve()
      .then(() => {
        if (st.args.length === 0) throw invalidArgument('start.args', 'is required');
        validateEnv('start.env', st.env);
        if (st.cwd && !st.cwd.startsWith('/')) throw invalidArgument('start.cwd', 'must be an absolute path');
        return open(st, {
          args: st.args,
          env: st.env,
          cwd: st.cwd || '/',
          user: st.user,
          tty: st.tty,
          rows: st.terminalSize?.rows,
          cols: st.terminalSize?.cols,
        });
      })
      .then((sess) => {
        session = sess;
        onStarted();
        let openStreams = 2;
        const done = () => {
          if (--openStreams > 0) return;
          sess.exit.then((exit) => {
            call.write({ message: { $case: 'exit', value: exit } });
            call.end();
          }, fail);
        };
        const pipe = (r: NodeJS.ReadableStream, kind: 'stdout' | 'stderr') => {
          r.on('data', (b: Buffer) => {
            for (let i = 0; i < b.length; i += MAX_CHUNK) call.write({ message: { $case: kind, value: b.subarray(i, i + MAX_CHUNK) } });
          });
          r.on('end', done);
          r.on('error', done);
        };
        pipe(sess.stdout, 'stdout');
        pipe(sess.stderr, 'stderr');
        sess.stdin.on('error', () => undefined);
        for (const p of pending.splice(0)) handle(p);
        if (clientEnded && !tty && !sess.stdin.writableEnded) sess.stdin.end();
      })
      .catch(fail);
  });
  // A half-close ends stdin, except on a tty where the terminal stays open until exit.
  call.on('end', () => {
    clientEnded = true;
    if (session && !tty && !session.stdin.writableEnded) session.stdin.end();
  });
  call.on('cancelled', () => session?.kill());
  call.on('error', () => session?.kill());
}
