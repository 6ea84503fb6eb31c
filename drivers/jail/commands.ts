// The exec.* pseudo-parameters: command lines run on the host ("system
// environment") or in the jail, the way jail(8) runs them: a line with shell
// metacharacters goes through /bin/sh -c, any other is split into words and
// executed directly; a lone trailing "&" runs it in the background. Each must
// exit 0 within exec.timeout, or the jail is not created (not removed).
import { spawn, type ChildProcess } from 'node:child_process';
import { promises as fs, readFileSync } from 'node:fs';
import * as os from 'node:os';
import type { Logger } from 'pino';
import { OsvirtError } from '../../src/core/errors';
import type { JailOptions } from '../../src/gen/osvirt/v1/jail';

/** FreeBSD's login.conf default path. */
const LOGIN_PATH = '/sbin:/bin:/usr/sbin:/usr/bin:/usr/local/sbin:/usr/local/bin';
const SHELL_META = /[!"$&'()*;<>?[\\\]`{|}~]/;
const KEEP_OUTPUT = 4096;

/** jail(8)'s rule: how one exec.* string is run. */
export function commandArgv(line: string): { argv: string[]; background: boolean } {
  const i = line.search(SHELL_META);
  if (i >= 0 && !(line[i] === '&' && i === line.length - 1)) return { argv: ['/bin/sh', '-c', line], background: false };
  const background = i >= 0;
  return { argv: (background ? line.slice(0, i) : line).split(/\s+/).filter(Boolean), background };
}

export interface PasswdEntry {
  name: string;
  uid: number;
  gid: number;
  home: string;
  shell: string;
}

/** A user from a passwd(5) file, by name or number. */
export function lookupUser(passwd: string, user: string): PasswdEntry | undefined {
  for (const line of passwd.split('\n')) {
    const f = line.split(':');
    if (f.length < 7) continue;
    if (f[0] === user || (/^\d+$/.test(user) && f[2] === user)) {
      return { name: f[0]!, uid: Number(f[2]), gid: Number(f[3]), home: f[5] || '/', shell: f[6] || '/bin/sh' };
    }
  }
  return undefined;
}

export function commandFailed(jail: string, param: string, line: string, why: string, output: string, removed: boolean): OsvirtError {
  const tail = output.trim() ? `; output: ${output.trim().slice(-1000)}` : '';
  const what = removed ? 'the jail was not removed' : 'the jail was not created';
  return new OsvirtError('FAILED_PRECONDITION', 'JAIL_COMMAND_FAILED', `jail "${jail}": ${param} "${line}" ${why}: ${what}${tail}`, [], {
    container: jail,
    parameter: param,
  });
}

export interface CommandRunner {
  jail: string;
  options: JailOptions;
  /** spec.process.env: extra variables for every command. */
  env: string[];
  logger: Logger;
  /** The commands of a stop (failures leave the jail in place) rather than a start. */
  stopping: boolean;
}

function baseEnv(clean: boolean, user: PasswdEntry | undefined): { env: string[]; cwd: string } {
  if (clean) {
    const env = [`PATH=${LOGIN_PATH}${user ? `:${user.home}/bin` : ''}`];
    if (process.env['TERM']) env.push(`TERM=${process.env['TERM']}`);
    if (user) env.push(`USER=${user.name}`, `HOME=${user.home}`, `SHELL=${user.shell}`);
    return { env, cwd: user?.home ?? '/' };
  }
  // As jail(8) passes its own environment on; a user's login values replace USER, HOME and SHELL.
  const env = Object.entries(process.env)
    .filter(([k, v]) => v !== undefined && !(user && ['USER', 'HOME', 'SHELL'].includes(k)))
    .map(([k, v]) => `${k}=${v}`);
  if (user) env.push(`USER=${user.name}`, `HOME=${user.home}`, `SHELL=${user.shell}`);
  return { env, cwd: '/' };
}

/** Run one system-environment command (exec.prestart, created, poststart, prestop, poststop) as the daemon's user. */
export async function runHostCommand(r: CommandRunner, param: string, line: string): Promise<void> {
  const { argv, background } = commandArgv(line);
  if (!argv.length) return;
  const me = os.userInfo();
  const { env, cwd } = baseEnv(
    r.options.execClean,
    r.options.execClean ? { name: me.username, uid: me.uid, gid: me.gid, home: me.homedir, shell: me.shell ?? '/bin/sh' } : undefined,
  );
  const child = spawn(argv[0]!, argv.slice(1), {
    cwd,
    env: Object.fromEntries([...env, ...r.env].map((e) => [e.slice(0, e.indexOf('=')), e.slice(e.indexOf('=') + 1)])),
    stdio: ['ignore', background ? 'ignore' : 'pipe', background ? 'ignore' : 'pipe'],
    detached: background,
  });
  r.logger.info({ container: r.jail, param, command: line }, 'running jail command on the host');
  if (background) {
    child.on('error', (e) => r.logger.warn({ container: r.jail, param, err: e.message }, 'background command failed'));
    child.unref();
    return;
  }
  let output = '';
  const keep = (b: Buffer) => (output = (output + b.toString()).slice(-KEEP_OUTPUT));
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  // Wait for the exit, not for the output to end: a daemon the command started keeps it open.
  const closed = new Promise<void>((resolve) => child.once('close', () => resolve()));
  const res = await waitWithTimeout(
    new Promise<{ code: number | null; signal: NodeJS.Signals | null; error?: Error }>((resolve) => {
      child.once('error', (error) => resolve({ code: null, signal: null, error }));
      child.once('exit', (code, signal) => resolve({ code, signal }));
    }),
    r.options.execTimeout * 1000,
    () => child.kill('SIGKILL'),
  );
  await Promise.race([closed, new Promise((resolve) => setTimeout(resolve, 200))]);
  child.stdout!.destroy();
  child.stderr!.destroy();
  if (res === 'timeout') throw commandFailed(r.jail, param, line, `timed out after ${r.options.execTimeout} s (exec.timeout)`, output, r.stopping);
  if (res.error) throw commandFailed(r.jail, param, line, `could not run: ${res.error.message}`, output, r.stopping);
  if (res.signal) throw commandFailed(r.jail, param, line, `exited on signal ${res.signal}`, output, r.stopping);
  if (res.code !== 0) throw commandFailed(r.jail, param, line, `failed (exit ${res.code})`, output, r.stopping);
}

/** Starts one process in the jail (the driver's `osvirt-helper exec`, stdio on the jail's own). */
export type JailSpawner = (o: {
  args: string[];
  env: string[];
  cwd: string;
  user?: { uid: number; gid: number; additionalGids?: number[] } | undefined;
}) => ChildProcess;

/** An image's process run as a jail's command: in its own directory, as its own user (exec.jail_user still wins), in the background. */
export interface ImageProcess {
  cwd: string;
  user: { uid: number; gid: number; additionalGids: number[] } | undefined;
}

/**
 * Run one jail-environment command (exec.start, command, exec.stop). Like jail(8) it waits for
 * the command's exit, not for its output to end (a daemon it starts keeps that open). The output
 * goes where the jail's own console goes (fd 1 of its init, so a process left running holds
 * nothing of the host and can be checkpointed); what a command wrote is read back from the
 * console log for exec.consolelog and error messages.
 */
export async function runJailCommand(
  r: CommandRunner,
  param: string,
  command: string | string[],
  initPid: number,
  spawnInJail: JailSpawner,
  consoleLog: string,
  image?: ImageProcess,
): Promise<void> {
  const { argv, background } = typeof command === 'string' ? commandArgv(command) : { argv: command, background: !!image };
  const line = typeof command === 'string' ? command : command.join(' ');
  if (!argv.length) return;
  const o = r.options;
  let user: PasswdEntry | undefined;
  if (o.execJailUser || o.execClean) {
    const name = o.execJailUser || 'root';
    let passwd = '';
    try {
      passwd = readFileSync(`/proc/${initPid}/root/etc/passwd`, 'utf8');
    } catch {
      // no passwd in the jail
    }
    user = lookupUser(passwd, name);
    if (!user && /^\d+$/.test(name) && !o.execClean) user = { name, uid: Number(name), gid: Number(name), home: '/', shell: '/bin/sh' };
    if (!user) throw commandFailed(r.jail, param, line, `cannot run: user "${name}" (exec.jail_user) is not in the jail's /etc/passwd`, '', r.stopping);
  }
  const base = baseEnv(o.execClean, user);
  const env = base.env;
  const cwd = image && !o.execJailUser ? image.cwd : base.cwd;
  r.logger.info({ container: r.jail, param, command: line }, 'running jail command in the jail');
  const from = await fs.stat(consoleLog).then(
    (st) => st.size,
    () => 0,
  );
  // The spec's variables (an image's among them) replace the inherited ones of the same name.
  const vars = new Map<string, string>();
  for (const e of [...env, ...r.env]) vars.set(e.split('=')[0]!, e);
  const child = spawnInJail({
    args: argv,
    env: [...vars.values()],
    cwd,
    user: user
      ? user.uid !== 0 || user.gid !== 0
        ? { uid: user.uid, gid: user.gid }
        : undefined
      : image?.user && (image.user.uid !== 0 || image.user.gid !== 0 || image.user.additionalGids.length)
        ? image.user
        : undefined,
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; error?: Error }>((resolve) => {
    child.once('error', (error) => resolve({ code: null, signal: null, error }));
    child.once('exit', (code, signal) => resolve({ code, signal }));
  });
  if (background) {
    // Go on once it runs in the jail: a jail without persist must already count it.
    let done = false;
    void exited.then(() => (done = true));
    for (let i = 0; i < 300 && !done && child.pid; i++) {
      const kids = await fs.readFile(`/proc/${child.pid}/task/${child.pid}/children`, 'utf8').catch(() => '');
      if (kids.trim()) break;
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    child.unref();
    return;
  }
  const res = await waitWithTimeout(exited, o.execTimeout * 1000, () => child.kill('SIGKILL'));
  // The monitor copies the console to its log as it comes: give it a moment.
  await new Promise((resolve) => setTimeout(resolve, 50));
  let output = '';
  try {
    const fh = await fs.open(consoleLog, 'r');
    try {
      const st = await fh.stat();
      const start = Math.max(from, st.size - 64 * 1024);
      const buf = Buffer.alloc(st.size - start);
      await fh.read(buf, 0, buf.length, start);
      output = buf.toString();
    } finally {
      await fh.close();
    }
  } catch {
    // no console log (yet)
  }
  if (o.execConsolelog && output) await fs.appendFile(o.execConsolelog, output, { mode: 0o644 });
  output = output.slice(-KEEP_OUTPUT);
  if (res === 'timeout') throw commandFailed(r.jail, param, line, `timed out after ${o.execTimeout} s (exec.timeout)`, output, r.stopping);
  if (res.error) throw commandFailed(r.jail, param, line, `could not run: ${res.error.message}`, output, r.stopping);
  // The helper reports exec failures with 125..127 and a signal death as 128+N.
  if (res.signal) throw commandFailed(r.jail, param, line, `exited on signal ${res.signal}`, output, r.stopping);
  if (res.code !== null && res.code > 128 && res.code <= 128 + 64)
    throw commandFailed(r.jail, param, line, `exited on signal ${res.code - 128}`, output, r.stopping);
  if (res.code !== 0) throw commandFailed(r.jail, param, line, `failed (exit ${res.code})`, output, r.stopping);
}

async function waitWithTimeout<T>(p: Promise<T>, ms: number, onTimeout: () => void): Promise<T | 'timeout'> {
  if (!ms) return p;
  let t: NodeJS.Timeout | undefined;
  const timer = new Promise<'timeout'>((resolve) => {
    t = setTimeout(() => resolve('timeout'), ms);
  });
  const r = await Promise.race([p, timer]);
  clearTimeout(t);
  if (r === 'timeout') onTimeout();
  return r;
}
