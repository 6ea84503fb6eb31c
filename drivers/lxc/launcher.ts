// The helper's launcher (`osvirt-helper launcher`): a small process, started
// once per driver, that forks `run` monitors on request. Forking the daemon
// itself costs 1-2 ms per container start (page tables of a large Node
// process) and blocks the event loop meanwhile; the launcher's fork does not.
// When the launcher is not there, launch() spawns the helper directly, and the
// launcher is started again in the background.
import { spawn, type ChildProcess } from 'node:child_process';
import * as net from 'node:net';
import * as readline from 'node:readline';
import type { Logger } from 'pino';
import { LaunchRequest, LauncherReady } from '../../src/gen/osvirt/helper/v1/helper';
import { encodeFrame, MessageReader } from '../../src/host/helper-wire';

export class Launcher {
  private proc?: ChildProcess | undefined;
  private starting?: Promise<boolean> | undefined;
  private closed = false;

  constructor(
    readonly helper: string,
    readonly socket: string,
    private readonly logger: Logger,
  ) {}

  /** Start the launcher; resolves false (and logs why) when it cannot run. */
  start(): Promise<boolean> {
    if (this.closed) return Promise.resolve(false);
    this.starting ??= new Promise<boolean>((resolve) => {
      const proc = spawn(this.helper, ['launcher', '--socket', this.socket], { stdio: ['ignore', 'pipe', 'pipe'] });
      this.proc = proc;
      // Monitors it starts write here until they detach: keep their words.
      readline.createInterface({ input: proc.stderr }).on('line', (line) => this.logger.warn({ helper: line }, 'osvirt-helper'));
      let ready = false;
      // Its first frame (LauncherReady) says it listens.
      const frames = new MessageReader(proc.stdout, LauncherReady, 'LauncherReady');
      frames.next().then(
        (m) => {
          ready = m !== undefined;
          frames.close();
          resolve(ready);
        },
        (e: unknown) => {
          this.logger.warn({ err: e instanceof Error ? e.message : String(e) }, 'the helper launcher said something unexpected');
          resolve(false);
        },
      );
      proc.once('error', (e) => {
        this.logger.warn({ err: e.message }, 'cannot start the helper launcher; starting monitors directly');
        resolve(false);
      });
      proc.once('exit', (code, signal) => {
        if (this.proc === proc) this.proc = undefined;
        this.starting = undefined;
        if (!this.closed) this.logger.warn({ code, signal }, 'the helper launcher exited; starting monitors directly until it is back');
        resolve(false);
        // One that had been serving is brought back; one that never got ready is retried on the next start.
        if (ready && !this.closed) setTimeout(() => void this.start(), 100).unref();
      });
    });
    return this.starting;
  }

  /**
   * A connection carrying the request to start `run ARGS`; the monitor's start
   * protocol follows on it. Undefined when the launcher does not answer.
   */
  async open(args: string[]): Promise<net.Socket | undefined> {
    if (this.closed || !this.proc) {
      void this.start();
      return undefined;
    }
    const sock = await new Promise<net.Socket | undefined>((resolve) => {
      const s = net.createConnection(this.socket);
      s.once('connect', () => resolve(s));
      s.once('error', () => resolve(undefined));
    });
    if (!sock) return undefined;
    sock.write(encodeFrame(LaunchRequest, { args }));
    return sock;
  }

  async close(): Promise<void> {
    this.closed = true;
    const proc = this.proc;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
    await new Promise<void>((resolve) => {
      proc.once('exit', () => resolve());
      proc.kill('SIGKILL');
    });
  }
}
