// Tests for native/osvirt-helper: every claim is checked from the outside
// (/proc, cgroup files, sockets, files in the state dir), not from the helper's own report.
import { strict as assert } from 'node:assert';
import { spawn, spawnSync, ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { ControlEvent, ControlRequest, LaunchRequest, LauncherReady, StartCommand, StartEvent } from '../src/gen/osvirt/helper/v1/helper';
import { encodeFrame, frame, FRAME_HEADER, FrameSplitter, MAX_FRAME, MessageReader } from '../src/host/helper-wire';
import { pidAlive } from '../src/host/processes';
import { holds, until } from '../src/testing/until';

function findRepoRoot(): string {
  for (const start of [__dirname, process.cwd()]) {
    for (let dir = start; ; dir = path.dirname(dir)) {
      if (fs.existsSync(path.join(dir, 'package.json')) && fs.existsSync(path.join(dir, 'native'))) return dir;
      if (path.dirname(dir) === dir) break;
    }
  }
  throw new Error('cannot find the repository root (a directory with package.json and native/)');
}

const ROOT = findRepoRoot();
const HELPER = path.join(ROOT, 'native', 'build', 'osvirt-helper');
/** Test peer for criu-swrk (native/tests/seqpacket-echo.c, `make -C native test-tools`). */
const ECHO_PEER = path.join(ROOT, 'native', 'build', 'test-tools', 'seqpacket-echo');
const BUSYBOX_APPLETS = ['sh', 'sleep', 'cat', 'echo', 'hostname', 'ls', 'id', 'grep', 'readlink', 'stty', 'tty', 'touch', 'test'];

const DEVICE = '/dev/net/tun'; // any host device node will do; tun is built into this kernel

function nsInode(pid: number | 'self', ns: string): string {
  return fs.readlinkSync(`/proc/${pid}/ns/${ns}`);
}

function readOr(file: string, fallback = ''): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return fallback;
  }
}

/** Splits a stream into lines and hands them out in order. */
class LineReader {
  private buffered = '';
  private lines: string[] = [];
  private waiters: Array<(line: string | null) => void> = [];
  private ended = false;

  constructor(stream: NodeJS.ReadableStream) {
    stream.setEncoding('utf8');
    stream.on('data', (chunk: string) => {
      this.buffered += chunk;
      let nl: number;
      while ((nl = this.buffered.indexOf('\n')) >= 0) {
        this.push(this.buffered.slice(0, nl));
        this.buffered = this.buffered.slice(nl + 1);
      }
    });
    stream.on('end', () => {
      this.ended = true;
      for (const w of this.waiters.splice(0)) w(null);
    });
  }

  private push(line: string): void {
    const waiter = this.waiters.shift();
    if (waiter) waiter(line);
    else this.lines.push(line);
  }

  next(timeoutMs = 10000): Promise<string | null> {
    const line = this.lines.shift();
    if (line !== undefined) return Promise.resolve(line);
    if (this.ended) return Promise.resolve(null);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('timed out waiting for a line from the helper')), timeoutMs);
      this.waiters.push((l) => {
        clearTimeout(timer);
        resolve(l);
      });
    });
  }
}

/** The start protocol's commands (helper.proto StartCommand), framed. */
const GO = encodeFrame(StartCommand, { command: { $case: 'go', value: {} } });
const ABORT = encodeFrame(StartCommand, { command: { $case: 'abort', value: {} } });

/** A StartEvent flattened for assertions: { event: 'created', initPid, monitorPid }, { event: 'failed', message }... */
interface HelperEvent {
  event: string;
  initPid?: number;
  monitorPid?: number;
  message?: string;
}

function startEvents(stream: NodeJS.ReadableStream): MessageReader<StartEvent> {
  return new MessageReader(stream, StartEvent, 'StartEvent');
}

/** With a timeout: a helper that says nothing fails the test instead of hanging it. */
function within<T>(p: Promise<T>, what: string, timeoutMs = 10000): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out waiting for ${what} from the helper`)), timeoutMs);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

async function nextEvent(reader: MessageReader<StartEvent>): Promise<HelperEvent | null> {
  const m = await within(reader.next(), 'a start event');
  if (!m?.event) return null;
  return { event: m.event.$case, ...m.event.value };
}

/** A monitor.sock client speaking ControlRequest/ControlEvent frames. */
async function control(
  file: string,
): Promise<{ sock: net.Socket; ask: (req: ControlRequest) => Promise<ControlEvent | undefined>; next: () => Promise<ControlEvent | undefined> }> {
  const sock = net.createConnection(file);
  sock.on('error', () => undefined);
  const events = new MessageReader(sock, ControlEvent, 'ControlEvent');
  await new Promise<void>((resolve, reject) => {
    sock.once('connect', resolve);
    sock.once('error', reject);
  });
  const next = () => within(events.next(), 'a control event');
  return {
    sock,
    next,
    ask: (req) => {
      sock.write(encodeFrame(ControlRequest, req));
      return next();
    },
  };
}

interface Result {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

function runHelper(args: string[], input?: string): Promise<Result> {
  return new Promise((resolve, reject) => {
    const proc = spawn(HELPER, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    proc.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    proc.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    proc.on('error', reject);
    proc.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
    if (input !== undefined) proc.stdin.end(input);
    else proc.stdin.end();
  });
}

function exitOf(proc: ChildProcess, timeoutMs = 10000): Promise<number | null> {
  if (proc.exitCode !== null || proc.signalCode !== null) return Promise.resolve(proc.exitCode);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('timed out waiting for the helper to exit')), timeoutMs);
    proc.once('exit', (code) => {
      clearTimeout(timer);
      resolve(code);
    });
  });
}

/** Connects to a unix socket and collects what it sends. */
async function connectUnix(file: string): Promise<{ sock: net.Socket; received: () => string; closed: () => boolean }> {
  const sock = net.createConnection(file);
  let data = '';
  let isClosed = false;
  sock.on('data', (d: Buffer) => (data += d.toString('utf8')));
  sock.on('close', () => (isClosed = true));
  sock.on('error', () => undefined);
  await new Promise<void>((resolve, reject) => {
    sock.once('connect', resolve);
    sock.once('error', reject);
  });
  return { sock, received: () => data, closed: () => isClosed };
}

describe('native helper (osvirt-helper)', function () {
  this.timeout(60000);

  let base = '';
  let rootfs = '';
  let marker = '';
  const monitors: ChildProcess[] = [];
  const pids: number[] = [];
  const cgroups: string[] = [];
  const sockets: net.Socket[] = [];

  before(async function () {
    if (process.getuid?.() !== 0) this.skip(); // namespaces, cgroups and pivot_root need root
    if (!fs.existsSync(HELPER)) {
      const make = spawnSync('make', ['-C', path.join(ROOT, 'native')], { encoding: 'utf8' });
      assert.equal(make.status, 0, `make -C native failed:\n${make.stdout}${make.stderr}`);
    }
    // busybox-static may still be coming from apt in the background on a fresh machine.
    await until(() => fs.existsSync('/bin/busybox'), 'busybox', 45000, 500).catch(() => undefined);
    if (!fs.existsSync('/bin/busybox')) this.skip(); // install busybox-static to run these tests

    base = fs.mkdtempSync(path.join(os.tmpdir(), 'osvirt-nh-'));
    fs.chmodSync(base, 0o755); // a user-namespaced root (an unprivileged host uid) must reach the rootfs
    marker = path.join(base, 'host-marker');
    fs.writeFileSync(marker, 'only on the host\n');
    rootfs = path.join(base, 'rootfs');
    for (const dir of ['bin', 'etc', 'data', 'tmp']) fs.mkdirSync(path.join(rootfs, dir), { recursive: true });
    fs.copyFileSync('/bin/busybox', path.join(rootfs, 'bin', 'busybox'));
    fs.chmodSync(path.join(rootfs, 'bin', 'busybox'), 0o755);
    for (const applet of BUSYBOX_APPLETS) fs.symlinkSync('busybox', path.join(rootfs, 'bin', applet));
    fs.writeFileSync(path.join(rootfs, 'etc', 'passwd'), 'root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534::/:/bin/sh\n');
    fs.writeFileSync(path.join(rootfs, 'etc', 'group'), 'root:x:0:\nnogroup:x:65534:\n');
  });

  afterEach(async function () {
    for (const s of sockets.splice(0)) s.destroy();
    for (const pid of pids.splice(0)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
    }
    // With the init gone each monitor exits by itself; kill any that did not.
    for (const m of monitors.splice(0)) {
      try {
        await exitOf(m, 5000);
      } catch {
        m.kill('SIGKILL');
        await exitOf(m);
      }
    }
    for (const cg of cgroups.splice(0)) {
      await until(() => readOr(path.join(cg, 'cgroup.procs')).trim() === '', `cgroup ${cg} to empty`, 5000);
      fs.rmdirSync(cg);
    }
  });

  after(function () {
    if (!base) return;
    // Every mount was made inside a container's mount namespace: none may be visible here.
    assert.ok(!readOr('/proc/self/mountinfo').includes(base), 'a mount leaked into the host namespace');
    fs.rmSync(base, { recursive: true, force: true });
  });

  function newStateDir(): string {
    return fs.mkdtempSync(path.join(base, 'state-'));
  }

  /** Starts `run`, waits for "created"; returns the live monitor and its event reader. */
  async function create(stateDir: string, args: string[]) {
    const env = { ...process.env, OSVIRT_NH_LEAK: '1' };
    const proc = spawn(HELPER, ['run', '--state', stateDir, ...args], { stdio: ['pipe', 'pipe', 'pipe'], env });
    monitors.push(proc);
    let stderr = '';
    proc.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const events = startEvents(proc.stdout);
    const created = await nextEvent(events);
    assert.equal(created?.event, 'created', `expected created, got ${JSON.stringify(created)} (stderr: ${stderr})`);
    const initPid = created.initPid ?? 0;
    pids.push(initPid);
    return { proc, events, initPid, monitorPid: created.monitorPid ?? 0 };
  }

  async function start(stateDir: string, args: string[]) {
    const c = await create(stateDir, args);
    c.proc.stdin.write(GO);
    const started = await nextEvent(c.events);
    assert.deepEqual(started, { event: 'started' });
    return c;
  }

  function makeCgroups(): string[] {
    const name = `osvirt-nh-${process.pid}-${cgroups.length}`;
    // Hybrid hosts (like this one) have v1 controllers plus cgroup2 at unified/; pure v2 has cgroup2 at the top.
    const parents = fs.existsSync('/sys/fs/cgroup/cgroup.controllers')
      ? ['/sys/fs/cgroup']
      : ['/sys/fs/cgroup/pids', '/sys/fs/cgroup/unified'].filter((d) => fs.existsSync(path.join(d, 'cgroup.procs')));
    assert.ok(parents.length > 0, 'no usable cgroup hierarchy found');
    return parents.map((p) => {
      const dir = path.join(p, name);
      fs.mkdirSync(dir);
      cgroups.push(dir);
      return dir;
    });
  }

  it('prints its version and rejects bad usage with exit code 2', async function () {
    const version = await runHelper(['version']);
    assert.equal(version.code, 0);
    assert.equal(version.stdout, 'osvirt-helper 0.1.0\n');
    for (const args of [
      [],
      ['frobnicate'],
      ['run', '--', 'true'],
      ['run', '--state', base, '--ns', 'bogus', '--', 'true'],
      ['run', '--state', base, '--rootfs', rootfs, '--', 'true'],
      ['exec', '--', 'true'],
      ['run', '--state', base, '--mount', 'bind::/x::', '--', 'true'],
    ]) {
      const r = await runHelper(args);
      assert.equal(r.code, 2, `${args.join(' ')} should be a usage error, got ${r.code}: ${r.stderr}`);
      assert.match(r.stderr, /osvirt-helper: /);
    }
  });

  it('starts an init in new namespaces, its cgroups and a pivoted root; exec joins it', async function () {
    const state = newStateDir();
    const cgs = makeCgroups();
    const shared = path.join(base, 'shared');
    fs.mkdirSync(shared, { recursive: true });
    fs.writeFileSync(path.join(shared, 'file'), 'from the host\n');
    const keep = ['chown', 'kill', 'net_bind_service', 'sys_chroot'];
    const keepMask = [0, 5, 10, 18].reduce((m, bit) => m | (1n << BigInt(bit)), 0n);
    const c = await create(state, [
      '--rootfs',
      rootfs,
      '--ns',
      'pid,mnt,uts,ipc,net,cgroup',
      '--hostname',
      'nh-box',
      '--domainname',
      'nh.test',
      ...cgs.flatMap((cg) => ['--cgroup', cg]),
      '--caps',
      keep.join(','),
      '--rlimit',
      'nofile:512:1024',
      '--env',
      'FOO=bar',
      '--mount',
      `bind:${shared}:/data:ro:`,
      '--mount',
      'tmpfs:tmpfs:/scratch:size=1m,mode=1777:private',
      '--readonly-rootfs',
      ...(fs.existsSync(DEVICE) ? ['--device', DEVICE] : []),
      '--',
      'sh',
      '-c',
      'echo pid=$$; hostname; exec sleep 1000',
    ]);

    // Before "go": the namespaces exist (the daemon configures networking now) and the cgroups hold the init...
    for (const ns of ['pid', 'mnt', 'uts', 'ipc', 'net']) {
      assert.notEqual(nsInode(c.initPid, ns), nsInode('self', ns), `${ns} namespace should be new`);
    }
    assert.equal(nsInode(c.initPid, 'user'), nsInode('self', 'user'), 'no user namespace was asked for');
    for (const cg of cgs) assert.ok(readOr(path.join(cg, 'cgroup.procs')).split('\n').includes(String(c.initPid)));
    // ...while the monitor itself stays outside them.
    const monitorCgroups = readOr(`/proc/${c.monitorPid}/cgroup`);
    for (const cg of cgs) assert.ok(!monitorCgroups.includes(path.basename(cg)), 'monitor must not be in the container cgroup');
    assert.equal(readOr(path.join(state, 'init.pid')).trim(), String(c.initPid));
    assert.equal(readOr(path.join(state, 'monitor.pid')).trim(), String(c.monitorPid));
    assert.equal(c.monitorPid, c.proc.pid, 'the spawned process is the monitor');

    c.proc.stdin.write(GO);
    assert.deepEqual(await nextEvent(c.events), { event: 'started' });

    // The cgroup namespace was unshared after the move: its root is the container's cgroup.
    assert.notEqual(nsInode(c.initPid, 'cgroup'), nsInode('self', 'cgroup'));
    const console = path.join(state, 'console.log');
    await until(() => readOr(console).includes('nh-box'), 'init output in console.log');
    assert.match(readOr(console), /^pid=1\nnh-box\n/);

    const status = readOr(`/proc/${c.initPid}/status`);
    assert.equal(BigInt('0x' + (/CapBnd:\s*([0-9a-f]+)/.exec(status)?.[1] ?? '')), keepMask);
    assert.equal(BigInt('0x' + (/CapInh:\s*([0-9a-f]+)/.exec(status)?.[1] ?? '')) & ~keepMask, 0n);
    assert.match(readOr(`/proc/${c.initPid}/limits`), /Max open files\s+512\s+1024/);
    const environ = readOr(`/proc/${c.initPid}/environ`).split('\0');
    assert.ok(environ.includes('FOO=bar'));
    assert.ok(environ.includes('PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'));
    assert.ok(!environ.some((e) => e.startsWith('OSVIRT_NH_LEAK=')), `the caller's environment leaked: ${environ.join(' ')}`);
    await until(() => readOr(`/proc/${c.initPid}/cmdline`) === 'sleep\u00001000\u0000', 'the init to exec sleep');
    assert.equal(fs.readlinkSync(`/proc/${c.initPid}/root`), '/', 'root is pivoted (the old root is detached)');

    // exec: same namespaces, pid 1 is the init, the host's files are not there, mounts as asked.
    const script = [
      'hostname',
      'echo pid=$$',
      'cat /proc/1/cmdline; echo',
      'readlink /proc/self/ns/net',
      'cat /proc/self/cgroup',
      `test -e ${marker} && echo marker=visible || echo marker=hidden`,
      'cat /data/file',
      'touch /data/x 2>/dev/null && echo data=rw || echo data=ro',
      'touch /new 2>/dev/null && echo root=rw || echo root=ro',
      'touch /scratch/x && echo scratch=rw',
      'ls /dev',
      `ls -l ${DEVICE} 2>&1`,
      'exit 7',
    ].join('; ');
    const exec = await runHelper(['exec', '--pid', String(c.initPid), ...cgs.flatMap((cg) => ['--cgroup', cg]), '--', 'sh', '-c', script]);
    assert.equal(exec.code, 7, `exec exit code (stderr: ${exec.stderr})`);
    const out = exec.stdout.split('\n');
    assert.equal(out[0], 'nh-box');
    assert.match(out[1] ?? '', /^pid=\d+$/);
    assert.notEqual(out[1], 'pid=1');
    assert.ok(Number(out[1]?.slice(4)) < 100, 'exec pid is from the container pid namespace');
    assert.equal(out[2]?.replace(/\0/g, ' ').trim(), 'sleep 1000');
    assert.equal(out[3], nsInode(c.initPid, 'net'));
    for (const line of exec.stdout.split('\n').filter((l) => /^\d+:[^:]*:/.test(l))) {
      assert.match(line, /:\/$/, `exec should sit at the container's cgroup ns root: ${line}`);
    }
    for (const expected of ['marker=hidden', 'from the host', 'data=ro', 'root=ro', 'scratch=rw']) {
      assert.ok(out.includes(expected), `exec output lacks ${expected}:\n${exec.stdout}`);
    }
    // Seen from the host: the exec'd process joins every cgroup; the exec helper relaying for it does not.
    const bg = spawn(HELPER, ['exec', '--pid', String(c.initPid), ...cgs.flatMap((cg) => ['--cgroup', cg]), '--', 'sleep', '30'], { stdio: 'ignore' });
    monitors.push(bg);
    const procs = (cg: string) => readOr(path.join(cg, 'cgroup.procs')).split('\n').filter(Boolean);
    await until(() => cgs.every((cg) => procs(cg).length === 2), "the exec'd process in every cgroup");
    for (const cg of cgs) assert.ok(!procs(cg).includes(String(bg.pid)), `the exec helper itself joined ${cg}`);
    bg.kill('SIGTERM'); // forwarded to the sleep
    await exitOf(bg);
    if (fs.existsSync(DEVICE)) {
      const rdev = fs.statSync(DEVICE).rdev;
      const [major, minor] = [(rdev >> 8) & 0xfff, (rdev & 0xff) | ((rdev >> 12) & 0xfff00)];
      assert.match(exec.stdout, new RegExp(`^c.* ${major}, +${minor} .*${DEVICE}$`, 'm'), '--device node recreated');
    }
    for (const dev of ['null', 'zero', 'full', 'random', 'urandom', 'tty', 'ptmx', 'pts', 'shm', 'mqueue', 'fd']) {
      assert.ok(out.includes(dev), `/dev/${dev} missing:\n${exec.stdout}`);
    }

    // The monitor answers status, ignores SIGTERM/SIGHUP and survives losing the caller's pipes.
    assert.equal(readOr(path.join(state, 'protocol')), 'osvirt.helper.v1\n', 'the monitor names its control protocol');
    const ctl = await control(path.join(state, 'monitor.sock'));
    sockets.push(ctl.sock);
    assert.deepEqual(await ctl.ask({ request: { $case: 'status', value: {} } }), { event: { $case: 'status', value: { initPid: c.initPid } } });
    // Two requests in one write get two answers, in order; one it does not know gets an error.
    ctl.sock.write(Buffer.concat([encodeFrame(ControlRequest, { request: { $case: 'status', value: {} } }), frame(Buffer.alloc(0))]));
    assert.equal((await ctl.next())?.event?.$case, 'status');
    assert.deepEqual(await ctl.next(), { event: { $case: 'error', value: { message: 'unknown request' } } });
    // An oversized frame is not from a client of ours: the monitor hangs up on it, and serves the others.
    const rude = await control(path.join(state, 'monitor.sock'));
    sockets.push(rude.sock);
    rude.sock.write(Buffer.from([0xff, 0xff, 0, 0]));
    assert.equal(await rude.next(), undefined);
    c.proc.stdin.destroy();
    c.proc.stdout.destroy();
    c.proc.stderr.destroy();
    process.kill(c.monitorPid, 'SIGTERM');
    process.kill(c.monitorPid, 'SIGHUP');
    await holds(() => pidAlive(c.monitorPid), 'the monitor surviving SIGTERM, SIGHUP and closed stdio', 300);
    assert.ok(pidAlive(c.initPid), 'SIGTERM to the monitor must not kill the container');

    // The init's death ends the monitor: clients hear it, the exit file records it, sockets go away.
    process.kill(c.initPid, 'SIGKILL');
    assert.equal(await exitOf(c.proc), 0);
    assert.deepEqual(await ctl.next(), { event: { $case: 'exited', value: { exitCode: 137, signal: 9 } } });
    assert.equal(await ctl.next(), undefined, 'the monitor closes the connection after the exit');
    const exit = JSON.parse(readOr(path.join(state, 'exit'))) as { exitCode: number; signal: number; finishedAt: string };
    assert.equal(exit.exitCode, 137);
    assert.equal(exit.signal, 9);
    assert.ok(Math.abs(Date.parse(exit.finishedAt) - Date.now()) < 10000, `finishedAt ${exit.finishedAt}`);
    assert.ok(!fs.existsSync(path.join(state, 'monitor.sock')));
    assert.ok(!pidAlive(c.initPid));
  });

  it('records the exit code of a short-lived init and keeps its stdout and stderr', async function () {
    const state = newStateDir();
    const c = await start(state, ['--rootfs', rootfs, '--ns', 'pid,mnt', '--', 'sh', '-c', 'echo out; echo err >&2; exit 3']);
    assert.equal(await exitOf(c.proc), 0);
    const exit = JSON.parse(readOr(path.join(state, 'exit'))) as { exitCode: number; signal: number };
    assert.equal(exit.exitCode, 3);
    assert.equal(exit.signal, 0);
    assert.equal(readOr(path.join(state, 'console.log')), 'out\nerr\n');
    assert.ok(!fs.readdirSync(state).some((f) => f.endsWith('.tmp')), 'no temporary file left');
  });

  it('makes a veth pair on a bridge over netlink, and removes it and its --host-overlay root before reporting the exit', async function () {
    const tag = String(process.pid % 100000);
    const bridge = `ovnb${tag}`;
    const hostEnd = `ovnh${tag}`;
    const ipJson = (args: string[]) => JSON.parse(spawnSync('ip', ['-j', '-d', ...args], { encoding: 'utf8' }).stdout || '[]') as Record<string, unknown>[];
    spawnSync('ip', ['link', 'del', bridge]);
    assert.equal(spawnSync('ip', ['link', 'add', bridge, 'type', 'bridge']).status, 0);
    try {
      spawnSync('ip', ['addr', 'add', '192.168.239.1/24', 'dev', bridge]);
      spawnSync('ip', ['link', 'set', bridge, 'up']);
      const upper = path.join(base, 'veth-upper');
      const work = path.join(base, 'veth-work');
      const root = path.join(base, 'veth-root');
      for (const d of [upper, work, root]) fs.mkdirSync(d, { recursive: true });
      const veth = [
        '--veth',
        `${hostEnd}:eth0`,
        '--veth-bridge',
        bridge,
        '--veth-mtu',
        '1400',
        '--veth-mac',
        '02:00:00:00:00:42',
        '--veth-address',
        '192.168.239.2/24',
        '--veth-gateway',
        '192.168.239.1',
      ];
      const state = newStateDir();
      const c = await start(state, ['--rootfs', root, '--host-overlay', `${rootfs}:${upper}:${work}`, '--ns', 'pid,mnt,net', ...veth, '--', 'sleep', '1000']);

      // The host end: on the bridge, up, with the MTU.
      const host = ipJson(['link', 'show', hostEnd])[0] ?? {};
      assert.equal(host['master'], bridge);
      assert.equal(host['mtu'], 1400);
      assert.match(String(host['flags']), /\bUP\b/);
      // The container end, seen from the host in the init's network namespace.
      const inside = (args: string[]) =>
        JSON.parse(spawnSync('nsenter', ['-t', String(c.initPid), '-n', 'ip', '-j', ...args], { encoding: 'utf8' }).stdout || '[]') as Record<
          string,
          unknown
        >[];
      const eth0 = inside(['addr', 'show', 'eth0'])[0] ?? {};
      assert.equal(eth0['address'], '02:00:00:00:00:42');
      assert.equal(eth0['mtu'], 1400);
      assert.deepEqual(
        (eth0['addr_info'] as { family: string; local: string; prefixlen: number }[])
          .filter((a) => a.family === 'inet')
          .map((a) => `${a.local}/${a.prefixlen}`),
        ['192.168.239.2/24'],
      );
      assert.deepEqual(
        inside(['route', 'show', 'default']).map((r) => r['gateway']),
        ['192.168.239.1'],
      );
      assert.equal(
        spawnSync('nsenter', ['-t', String(c.initPid), '-n', path.join(rootfs, 'bin', 'busybox'), 'ping', '-c', '1', '-W', '2', '192.168.239.1']).status,
        0,
        'the bridge answers from inside',
      );
      assert.ok(readOr('/proc/self/mountinfo').includes(` ${root} `), 'the overlay root is mounted in the host namespace');

      // The init exits: the monitor unmounts the root and deletes the pair before the exit record appears.
      process.kill(c.initPid, 'SIGKILL');
      assert.equal(await exitOf(c.proc), 0);
      assert.ok(fs.existsSync(path.join(state, 'exit')));
      assert.deepEqual(ipJson(['link', 'show', hostEnd]), []);
      assert.ok(!readOr('/proc/self/mountinfo').includes(` ${root} `), 'the overlay root is unmounted');

      // A missing bridge is named in the error, and nothing is left.
      const bad = newStateDir();
      const p = spawn(HELPER, ['run', '--state', bad, '--ns', 'pid,net', '--veth', `${hostEnd}:eth0`, '--veth-bridge', 'ovnb-nosuch', '--', 'true'], {
        stdio: 'pipe',
      });
      monitors.push(p);
      const err = await nextEvent(startEvents(p.stdout));
      assert.equal(err?.event, 'failed');
      assert.match(err?.message ?? '', /^veth ovnb-nosuch: No such device$/);
      assert.notEqual(await exitOf(p), 0);
      assert.deepEqual(ipJson(['link', 'show', hostEnd]), []);

      // --veth needs a network namespace, and its options need --veth.
      for (const args of [
        ['--ns', 'pid', '--veth', 'a:b'],
        ['--ns', 'pid,net', '--veth-bridge', bridge],
      ]) {
        const r = spawnSync(HELPER, ['run', '--state', newStateDir(), ...args, '--', 'true'], { encoding: 'utf8' });
        assert.equal(r.status, 2, r.stderr);
      }
    } finally {
      spawnSync('ip', ['link', 'del', hostEnd]);
      spawnSync('ip', ['link', 'del', bridge]);
    }
  });

  it('launcher: starts run monitors over its socket (adopted by init, exec\'d as "run"), ignores malformed requests, dies with its parent', async function () {
    const sock = path.join(base, 'launcher.sock');
    const launcher = spawn(HELPER, ['launcher', '--socket', sock], { stdio: ['ignore', 'pipe', 'pipe'] });
    monitors.push(launcher);
    assert.deepEqual(await within(new MessageReader(launcher.stdout, LauncherReady, 'LauncherReady').next(), 'ready'), { pid: launcher.pid });
    assert.equal(fs.statSync(sock).mode & 0o777, 0o600);
    const request = (args: string[]) => encodeFrame(LaunchRequest, { args });
    const state = newStateDir();
    const conn = net.createConnection(sock);
    sockets.push(conn);
    const events = startEvents(conn);
    conn.write(request(['--state', state, '--rootfs', rootfs, '--ns', 'pid,mnt', '--', 'sleep', '1000']));
    const ev = await nextEvent(events);
    assert.equal(ev?.event, 'created');
    const created = { initPid: ev?.initPid ?? 0, monitorPid: ev?.monitorPid ?? 0 };
    pids.push(created.initPid);
    conn.write(GO);
    assert.deepEqual(await nextEvent(events), { event: 'started' });
    // A daemonized monitor: init's child, showing its own arguments.
    const stat = readOr(`/proc/${created.monitorPid}/stat`);
    assert.equal(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1], '1');
    assert.deepEqual(readOr(`/proc/${created.monitorPid}/cmdline`).split('\0').slice(1, 4), ['run', '--state', state]);
    assert.equal(readOr(path.join(state, 'monitor.pid')).trim(), String(created.monitorPid));

    // Garbage is dropped without harm; the launcher keeps serving.
    for (const junk of [Buffer.from([0xff, 0xff, 0xff, 0x7f]), Buffer.from('\x05\0\0\0abc'), frame(Buffer.from([0]))]) {
      const j = await connectUnix(sock);
      sockets.push(j.sock);
      j.sock.end(junk);
      await new Promise((r) => j.sock.once('close', r));
      assert.equal(j.received(), '');
    }
    const again = net.createConnection(sock);
    sockets.push(again);
    const againEvents = startEvents(again);
    again.write(request(['--state', newStateDir(), '--rootfs', path.join(base, 'nope'), '--ns', 'pid,mnt', '--', 'sh']));
    const failed = await nextEvent(againEvents);
    assert.equal(failed?.event, 'failed');
    assert.match(failed?.message ?? '', /^rootfs .*nope: No such file or directory$/);
    assert.equal(await nextEvent(againEvents), null, 'nothing follows a failure');
    assert.equal(launcher.exitCode, null, 'the launcher is still running');

    // It dies with the process that started it; its monitors do not.
    const parent = spawn('sh', ['-c', `"${HELPER}" launcher --socket "${path.join(base, 'launcher2.sock')}" >/dev/null & echo $!; sleep 0.3`], {
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    const child = Number(await new LineReader(parent.stdout).next());
    await exitOf(parent);
    await until(() => !pidAlive(child), 'the orphaned launcher to exit');
    assert.ok(pidAlive(created.monitorPid), 'the monitor outlives launchers');
    launcher.kill('SIGKILL');
  });

  it('with --tty, relays console.sock to the pty, replays output, resizes and reports the exit', async function () {
    const state = newStateDir();
    const c = await start(state, ['--rootfs', rootfs, '--ns', 'pid,mnt,uts,ipc,net', '--tty', '--', 'sh']);
    const ctl = await control(path.join(state, 'monitor.sock'));
    const con = await connectUnix(path.join(state, 'console.sock'));
    sockets.push(ctl.sock, con.sock);
    assert.deepEqual(await ctl.ask({ request: { $case: 'resize', value: { rows: 33, cols: 77 } } }), { event: { $case: 'resized', value: {} } });
    assert.deepEqual(await ctl.ask({ request: { $case: 'resize', value: { rows: 0, cols: 70000 } } }), {
      event: { $case: 'error', value: { message: 'invalid rows or cols: each must be 1 to 65535' } },
    });
    con.sock.write("echo hel''lo; tty; stty size\n");
    await until(() => /33 77/.test(con.received()), 'console output');
    assert.match(con.received(), /\r\nhello\r\n\/dev\/console\r\n33 77\r\n/);
    assert.match(readOr(path.join(state, 'console.log')), /hello/);

    const late = await connectUnix(path.join(state, 'console.sock'));
    sockets.push(late.sock);
    await until(() => late.received().includes('hello'), 'replay for a new client');

    con.sock.write('exit 5\n');
    assert.equal(await exitOf(c.proc), 0);
    assert.deepEqual(await ctl.next(), { event: { $case: 'exited', value: { exitCode: 5, signal: 0 } } });
    assert.equal((JSON.parse(readOr(path.join(state, 'exit'))) as { exitCode: number }).exitCode, 5);
    assert.ok(!fs.existsSync(path.join(state, 'console.sock')));
  });

  it('exec --tty gets a pty from the container, applies --user/--env/--cwd, and maps exec failures to 125-127', async function () {
    const state = newStateDir();
    const c = await start(state, ['--rootfs', rootfs, '--ns', 'pid,mnt,uts,ipc,net', '--', 'sleep', '1000']);
    const pid = String(c.initPid);
    const tty = await runHelper(['exec', '--pid', pid, '--tty', '--', 'sh'], 'tty; echo $((6*7)); exit 4\n');
    assert.equal(tty.code, 4, tty.stderr);
    assert.match(tty.stdout, /\/dev\/pts\/0\r\n42\r\n/, 'pty number 0 comes from the container devpts');

    const user = await runHelper([
      'exec',
      '--pid',
      pid,
      '--user',
      '1000:1001:5,6',
      '--env',
      'X=1',
      '--cwd',
      '/tmp',
      '--caps',
      'chown',
      '--no-new-privs',
      '--',
      'sh',
      '-c',
      'id; pwd; echo X=$X; grep -E "^(CapEff|CapBnd|NoNewPrivs)" /proc/self/status',
    ]);
    assert.equal(user.code, 0, user.stderr);
    assert.match(user.stdout, /^uid=1000 gid=1001 groups=5,6\n\/tmp\nX=1\n/);
    assert.match(user.stdout, /NoNewPrivs:\s+1/);
    assert.match(user.stdout, /CapEff:\s+0+\n/);
    assert.match(user.stdout, /CapBnd:\s+0+1\n/);

    const notFound = await runHelper(['exec', '--pid', pid, '--', 'no-such-command']);
    assert.equal(notFound.code, 127);
    assert.match(notFound.stderr, /^osvirt-helper exec: exec no-such-command: No such file or directory\n$/);
    const notExecutable = await runHelper(['exec', '--pid', pid, '--', '/etc/passwd']);
    assert.equal(notExecutable.code, 126);
    const badCwd = await runHelper(['exec', '--pid', pid, '--cwd', '/nope', '--', 'true']);
    assert.equal(badCwd.code, 125);
    assert.match(badCwd.stderr, /^osvirt-helper exec: chdir \/nope: No such file or directory\n$/);
    const badPid = await runHelper(['exec', '--pid', '999999999', '--', 'true']);
    assert.equal(badPid.code, 125);
    const killed = await runHelper(['exec', '--pid', pid, '--', 'sh', '-c', 'kill -TERM $$']);
    assert.equal(killed.code, 128 + 15);

    // A second container can share the first one's net and uts namespaces (--join) while owning the rest.
    const second = await start(newStateDir(), [
      '--rootfs',
      rootfs,
      '--ns',
      'pid,mnt,ipc',
      '--join',
      `net:/proc/${pid}/ns/net`,
      '--join',
      `uts:/proc/${pid}/ns/uts`,
      '--',
      'sleep',
      '1000',
    ]);
    for (const ns of ['net', 'uts']) assert.equal(nsInode(second.initPid, ns), nsInode(c.initPid, ns), `${ns} joined`);
    for (const ns of ['ipc', 'pid', 'mnt']) assert.notEqual(nsInode(second.initPid, ns), nsInode(c.initPid, ns), `${ns} own`);
  });

  it('runs in a user namespace with id maps', async function () {
    const state = newStateDir();
    const cgs = makeCgroups();
    const c = await start(state, [
      '--rootfs',
      rootfs,
      '--ns',
      'user,pid,mnt,uts,ipc,cgroup',
      '--uidmap',
      '0:200000:65536',
      '--gidmap',
      '0:200000:65536',
      '--hostname',
      'nh-user',
      ...cgs.flatMap((cg) => ['--cgroup', cg]),
      '--',
      'sleep',
      '1000',
    ]);
    for (const cg of cgs) assert.ok(readOr(path.join(cg, 'cgroup.procs')).split('\n').includes(String(c.initPid)), `the init joined ${cg}`);
    assert.notEqual(nsInode(c.initPid, 'user'), nsInode('self', 'user'));
    assert.match(readOr(`/proc/${c.initPid}/uid_map`), /^\s*0\s+200000\s+65536\n$/);
    assert.match(readOr(`/proc/${c.initPid}/status`), /Uid:\s+200000\s+200000\s+200000\s+200000/);
    const exec = await runHelper([
      'exec',
      '--pid',
      String(c.initPid),
      ...cgs.flatMap((cg) => ['--cgroup', cg]),
      '--',
      'sh',
      '-c',
      'id; hostname; cat /dev/null && echo null-ok; cat /proc/self/cgroup',
    ]);
    assert.equal(exec.code, 0, exec.stderr);
    const [id, host, nullOk, ...cgLines] = exec.stdout.trim().split('\n');
    assert.deepEqual([id, host, nullOk], ['uid=0(root) gid=0(root)', 'nh-user', 'null-ok']);
    // In the user ns the child joins the cgroup2 directory itself: at the root of its cgroup ns, like the init.
    for (const line of cgLines.filter((l) => /^\d+:[^:]*:/.test(l))) assert.match(line, /:\/$/, `exec outside the container's cgroups: ${line}`);
  });

  it('reports setup failures as an error event and leaves no process or state behind', async function () {
    // A rootfs that does not exist is found before anything is started.
    let state = newStateDir();
    const missing = spawn(HELPER, ['run', '--state', state, '--rootfs', path.join(base, 'nope'), '--ns', 'pid,mnt', '--', 'sh'], { stdio: 'pipe' });
    monitors.push(missing);
    const ev = await nextEvent(startEvents(missing.stdout));
    assert.equal(ev?.event, 'failed');
    assert.match(ev?.message ?? '', /rootfs .*nope: No such file or directory/);
    assert.notEqual(await exitOf(missing), 0);
    assert.deepEqual(fs.readdirSync(state), []);

    // The child joins its cgroups itself, before "created": a v1 cpuset with no
    // CPUs refuses it (ENOSPC), and the monitor reports that instead of "created".
    const cpuset = '/sys/fs/cgroup/cpuset';
    if (fs.existsSync(path.join(cpuset, 'tasks'))) {
      const dir = path.join(cpuset, `osvirt-nh-${process.pid}-nocpus`);
      fs.mkdirSync(dir);
      cgroups.push(dir);
      state = newStateDir();
      const p = spawn(HELPER, ['run', '--state', state, '--rootfs', rootfs, '--ns', 'pid,mnt', '--cgroup', dir, '--', 'sleep', '1000'], { stdio: 'pipe' });
      monitors.push(p);
      const err = await nextEvent(startEvents(p.stdout));
      assert.equal(err?.event, 'failed');
      assert.match(err?.message ?? '', /^join the container's cgroups: No space left on device$/);
      assert.notEqual(await exitOf(p), 0);
      assert.equal(fs.readFileSync(path.join(dir, 'tasks'), 'utf8'), '', 'nothing is left in the cgroup');
      assert.deepEqual(fs.readdirSync(state), []);
    }

    // A rootfs without the command fails in the child, after "go".
    const empty = path.join(base, 'empty-rootfs');
    fs.mkdirSync(empty, { recursive: true });
    for (const [args, message] of [
      [['--rootfs', empty, '--ns', 'pid,mnt'], /^exec sh: No such file or directory$/],
      [['--rootfs', rootfs, '--ns', 'pid,mnt', '--mount', 'bind:/nonexistent:/x::'], /^mount \/x: \/nonexistent: No such file or directory$/],
    ] as const) {
      state = newStateDir();
      const c = await create(state, [...args, '--', 'sh']);
      c.proc.stdin.write(GO);
      const error = await nextEvent(c.events);
      assert.equal(error?.event, 'failed');
      assert.match(error?.message ?? '', message);
      assert.notEqual(await exitOf(c.proc), 0);
      assert.ok(!pidAlive(c.initPid), 'the child must not be left running');
      assert.deepEqual(fs.readdirSync(state), []);
    }

    // Abort, end of file or a broken frame instead of Go kills the waiting child.
    for (const answer of [ABORT, Buffer.alloc(0), Buffer.from('go\n')]) {
      state = newStateDir();
      const c = await create(state, ['--rootfs', rootfs, '--ns', 'pid,mnt,net', '--', 'sleep', '1000']);
      c.proc.stdin.end(answer);
      assert.notEqual(await exitOf(c.proc), 0);
      assert.ok(!pidAlive(c.initPid));
      assert.deepEqual(fs.readdirSync(state), []);
    }
  });

  it('criu-swrk relays frames to one seqpacket message each and returns the peer exit code', async function () {
    // The echo peer is a test-only tool, built apart from the helper, which does not have it.
    const make = spawnSync('make', ['-s', '-C', path.join(ROOT, 'native'), 'test-tools'], { encoding: 'utf8' });
    assert.equal(make.status, 0, `make -C native test-tools failed:\n${make.stdout}${make.stderr}`);
    const gone = await runHelper(['seqpacket-echo', '3']);
    assert.equal(gone.code, 2, 'the production helper has no seqpacket-echo command');
    assert.match(gone.stderr, /unknown subcommand 'seqpacket-echo'/);
    const big = Buffer.alloc(512 * 1024, 7);
    const messages = [Buffer.from('hello'), Buffer.from('x'), big, Buffer.from('bye')];
    const r = await new Promise<{ code: number | null; out: Buffer; err: string }>((resolve, reject) => {
      const proc = spawn(HELPER, ['criu-swrk', '--', ECHO_PEER], { stdio: ['pipe', 'pipe', 'pipe'] });
      const chunks: Buffer[] = [];
      let err = '';
      proc.stdout.on('data', (d: Buffer) => chunks.push(d));
      proc.stderr.on('data', (d: Buffer) => (err += d.toString()));
      proc.on('error', reject);
      proc.on('close', (code) => resolve({ code, out: Buffer.concat(chunks), err }));
      // All frames in one write: the helper, not the pipe, must keep the boundaries.
      proc.stdin.end(Buffer.concat(messages.map(frame)));
    });
    assert.equal(r.code, 0, r.err);
    const split = new FrameSplitter();
    const echoed = split.push(r.out);
    split.end();
    assert.equal(echoed.length, messages.length);
    messages.forEach((m, i) => assert.ok(m.equals(echoed[i] ?? Buffer.alloc(0)), `message ${i} differs`));

    // A truncated or oversized frame ends the relay with status 1, naming the problem.
    const oversized = Buffer.alloc(FRAME_HEADER);
    oversized.writeUInt32LE(MAX_FRAME + 1);
    for (const [bad, why] of [
      [frame(Buffer.from('hello')).subarray(0, 7), /truncated frame: 3 of 5 bytes/],
      [oversized, /frame of 1048577 bytes exceeds the limit of 1048576/],
    ] as const) {
      const broken = await new Promise<Result>((resolve, reject) => {
        const proc = spawn(HELPER, ['criu-swrk', '--', ECHO_PEER], { stdio: ['pipe', 'pipe', 'pipe'] });
        let stderr = '';
        proc.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
        proc.on('error', reject);
        proc.on('close', (code, signal) => resolve({ code, signal, stdout: '', stderr }));
        proc.stdin.end(bad);
      });
      assert.equal(broken.code, 1, broken.stderr);
      assert.match(broken.stderr, why);
    }

    // The peer gets "swrk <fd>" appended; its exit status becomes ours.
    const exit = await runHelper(['criu-swrk', '--', 'sh', '-c', 'test "$0 $1" = "swrk $(ls /proc/$$/fd | grep -x "$1")" && exit 3']);
    assert.equal(exit.code, 3, exit.stderr);
  });
});
