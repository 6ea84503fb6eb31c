// Thin gRPC handlers for osvirt.v1.ContainerService: decode, call the
// manager, translate errors. Validation lives in the core.
import type { ServerDuplexStream, ServerReadableStream, ServerWritableStream, sendUnaryData, UntypedServiceImplementation } from '@grpc/grpc-js';
import type { Logger } from 'pino';
import type { ContainerManager } from '../core/manager';
import { invalidArgument } from '../core/errors';
import { validatePage, validateSignal, validateStates } from '../core/validate';
import type {
  ContainerServiceServer,
  ExecContainerRequest,
  ExecContainerResponse,
  AttachConsoleRequest,
  AttachConsoleResponse,
  ExportCheckpointRequest,
  ExportCheckpointResponse,
  ImportCheckpointRequest,
  ImportCheckpointResponse,
} from '../gen/osvirt/v1/container_service';
import type { Duration } from '../gen/google/protobuf/duration';
import { toServiceError, unary } from '../core/grpc-status';
import { serveExecStream } from './exec-stream';

function durationMs(field: string, d: Duration | undefined): number | undefined {
  if (!d) return undefined;
  if (d.seconds < 0 || d.nanos < 0 || d.seconds > 3600) throw invalidArgument(field, 'must be between 0 and 3600 seconds');
  return Number(d.seconds) * 1000 + Math.floor(d.nanos / 1e6);
}

export function containerService(m: ContainerManager, logger: Logger): ContainerServiceServer & UntypedServiceImplementation {
  return {
    createContainer: unary(logger, async (req) => ({ container: await m.create(req.name, req.spec) })),
    getContainer: unary(logger, (req) => ({ container: m.get(req.name) })),
    listContainers: unary(logger, (req) => {
      const pageSize = validatePage('page_size', req.pageSize);
      validateStates('states', req.states);
      return m.list({ driver: req.driver, states: req.states, pageSize, pageToken: req.pageToken });
    }),
    deleteContainer: unary(logger, async (req) => {
      await m.delete(req.name, req.force, req.allowMissing);
      return {};
    }),
    startContainer: unary(logger, async (req) => ({ container: await m.start(req.name) })),
    stopContainer: unary(logger, async (req) => {
      validateSignal('signal', req.signal);
      return { container: await m.stop(req.name, req.signal, durationMs('timeout', req.timeout)) };
    }),
    killContainer: unary(logger, async (req) => {
      validateSignal('signal', req.signal);
      await m.kill(req.name, req.signal);
      return {};
    }),
    pauseContainer: unary(logger, async (req) => ({ container: await m.pause(req.name) })),
    resumeContainer: unary(logger, async (req) => ({ container: await m.resume(req.name) })),
    getContainerStats: unary(logger, async (req) => ({ stats: await m.stats(req.name) })),
    checkpointContainer: unary(logger, async (req) => ({ checkpoint: await m.checkpoint(req.name, req.checkpoint, req.options) })),
    restoreContainer: unary(logger, async (req) => ({
      container: await m.restore(req.name, req.checkpoint, req.newName, req.tcpEstablished, durationMs('timeout', req.timeout) ?? 0),
    })),
    listCheckpoints: unary(logger, async (req) => {
      const size = validatePage('page_size', req.pageSize);
      const all = await m.listCheckpoints(req.name);
      const start = req.pageToken ? Number.parseInt(Buffer.from(req.pageToken, 'base64url').toString(), 10) : 0;
      if (!Number.isInteger(start) || start < 0) throw invalidArgument('page_token', 'is not a token returned by ListCheckpoints');
      const page = all.slice(start, start + size);
      return { checkpoints: page, nextPageToken: start + size < all.length ? Buffer.from(String(start + size)).toString('base64url') : '' };
    }),
    deleteCheckpoint: unary(logger, async (req) => {
      await m.deleteCheckpoint(req.name, req.checkpoint, req.allowMissing);
      return {};
    }),
    exportCheckpoint: (call: ServerWritableStream<ExportCheckpointRequest, ExportCheckpointResponse>) => {
      m.exportCheckpoint(call.request.name, call.request.checkpoint).then(
        (stream) => {
          stream.on('data', (b: Buffer) => {
            if (!call.write({ data: b })) {
              stream.pause();
              call.once('drain', () => stream.resume());
            }
          });
          stream.on('end', () => call.end());
          stream.on('error', (e) => call.emit('error', toServiceError(e, logger)));
          call.on('cancelled', () => stream.destroy());
        },
        (e) => call.emit('error', toServiceError(e, logger)),
      );
    },
    importCheckpoint: (call: ServerReadableStream<ImportCheckpointRequest, ImportCheckpointResponse>, cb: sendUnaryData<ImportCheckpointResponse>) => {
      // Filled from the start message; the store reads it only after unpacking.
      const as = { container: '', name: '' };
      let started = false;
      async function* data(): AsyncIterable<Buffer> {
        for await (const msg of call as AsyncIterable<ImportCheckpointRequest>) {
          const x = msg.message;
          if (!started) {
            if (x?.$case !== 'start') throw invalidArgument('start', 'the first message of an import must be "start"');
            started = true;
            as.container = x.value.name;
            as.name = x.value.checkpoint;
          } else if (x?.$case === 'data') yield x.value;
          else throw invalidArgument('data', 'only data may follow "start"');
        }
        if (!started) throw invalidArgument('start', 'the import stream is empty');
      }
      m.importCheckpoint(data(), as).then(
        (checkpoint) => cb(null, { checkpoint }),
        (e) => cb(toServiceError(e, logger)),
      );
    },
    execContainer: (call: ServerDuplexStream<ExecContainerRequest, ExecContainerResponse>) =>
      serveExecStream(call, logger, (st, o) => m.exec({ id: st.name, ...o })),
    attachConsole: (call: ServerDuplexStream<AttachConsoleRequest, AttachConsoleResponse>) => consoleSession(m, logger, call),
  };
}

function consoleSession(m: ContainerManager, logger: Logger, call: ServerDuplexStream<AttachConsoleRequest, AttachConsoleResponse>): void {
  let started = false;
  let session: Awaited<ReturnType<ContainerManager['console']>> | undefined;
  const pending: AttachConsoleRequest[] = [];
  const handle = (msg: AttachConsoleRequest) => {
    if (!session) return void pending.push(msg);
    const c = msg.message;
    if (c?.$case === 'input') session.input.write(c.value);
    else if (c?.$case === 'resize') session.resize(c.value.rows, c.value.cols);
  };
  call.on('data', (msg: AttachConsoleRequest) => {
    if (started) return handle(msg);
    started = true;
    const s = msg.message;
    if (s?.$case !== 'start')
      return void call.emit('error', toServiceError(invalidArgument('start', 'the first message of a console session must be "start"'), logger));
    m.console(s.value.name).then(
      (sess) => {
        session = sess;
        if (s.value.terminalSize) sess.resize(s.value.terminalSize.rows, s.value.terminalSize.cols);
        sess.output.on('data', (b: Buffer) => call.write({ output: b }));
        sess.output.on('end', () => call.end());
        sess.output.on('error', () => call.end());
        sess.input.on('error', () => undefined);
        for (const p of pending.splice(0)) handle(p);
      },
      (e) => call.emit('error', toServiceError(e, logger)),
    );
  });
  const close = () => session?.close();
  call.on('end', close);
  call.on('cancelled', close);
  call.on('error', close);
}
