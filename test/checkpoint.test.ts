// Checkpoint and restore of lxc containers through the real daemon and CRIU, proven from the
// outside: counters in process memory that keep counting in files the host reads, a host TCP
// client whose connection survives, /proc, cgroup directories, mounts and links.
import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readlinkSync, rmSync, statSync, writeFileSync, chmodSync } from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { status as Code, type ServiceError } from '@grpc/grpc-js';
import { decodeStatusDetails } from '../src/core/grpc-status';
import { locateCriu } from '../src/criu/criu-locate';
import {
  CheckpointOptions,
  CheckpointStats,
  ContainerState,
  ContainerStats,
  type Checkpoint,
  type ContainerSpec,
  type DeepPartial,
} from '../src/gen/osvirt/v1/container';
import type { AttachConsoleResponse } from '../src/gen/osvirt/v1/container_service';
import { EventType, type WatchEventsResponse } from '../src/gen/osvirt/v1/event_service';
import { hasKernelFeature, hostIfName } from '../drivers/lxc/network';
import { pidAlive } from '../src/host/processes';
import { holds, isRoot, TestDaemon, until, type Client } from './support/daemon';
import { execIn, sh } from './support/exec';
import { busybox } from './support/specs';

// Written with a rename so a reader (or a dump) never sees a truncated file.
/** For what only a container without a user namespace can do. */
const PRIVILEGED = { privileged: true };

const COUNTER = 'n=0; while :; do n=$((n+1)); echo $n > /tmp/counter.new; mv /tmp/counter.new /tmp/counter; sleep 0.05; done';

/** Mocha has no skip reasons: put the reason into each test's title. */
function skipSuite(ctx: Mocha.Context, reason: string): never {
  const mark = (s: Mocha.Suite | undefined): void => {
    if (!s) return;
    for (const t of s.tests) t.title += ` (skipped: ${reason})`;
    s.suites.forEach(mark);
  };
  mark(ctx.test?.parent);
  return ctx.skip();
}

async function rejects(p: Promise<unknown>, code: Code, reason?: string): Promise<ServiceError> {
  try {
    await p;
  } catch (e) {
    const se = e as ServiceError;
    assert.equal(se.code, code, `expected ${Code[code]}, got ${Code[se.code]}: ${se.details}`);
    if (reason) assert.equal(decodeStatusDetails(se.metadata).errorInfo?.reason, reason, se.details);
    return se;
  }
  assert.fail(`expected ${Code[code]}, but the call succeeded`);
}

/**
 * Is /tmp/lock in the container of initPid held by a flock? A /proc/locks line
 * ("1: FLOCK ADVISORY WRITE <pid> <maj>:<min>:<inode> 0 EOF") names the file
 * by inode and the holder by pid: either identifies the tree's lock.
 */
function flockHeld(initPid: number): boolean {
  const ino = statSync(`/proc/${initPid}/root/tmp/lock`).ino;
  const holder = (pid: string | undefined) => {
    try {
      return readFileSync(`/proc/${pid}/cmdline`, 'utf8') === '/tree\0lock\0';
    } catch {
      return false;
    }
  };
  return readFileSync('/proc/locks', 'utf8')
    .split('\n')
    .map((l) => l.trim().split(/\s+/))
    .some((f) => f[1] === 'FLOCK' && (f[5]?.endsWith(`:${ino}`) || holder(f[4])));
}

function isMounted(dir: string): boolean {
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .some((l) => l.split(' ')[4] === dir);
}

/** A static C program: a process tree joined by a unix socketpair and a pipe, writing to an open file. */
const TREE_C = `
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <unistd.h>
int main(int argc, char **argv) {
  int sv[2], p[2];
  if (argc > 1 && !strcmp(argv[1], "lock")) { /* hold a file lock */
    int l = open("/tmp/lock", O_CREAT | O_RDWR, 0644);
    if (l < 0 || flock(l, LOCK_EX)) return 1;
    for (;;) pause();
  }
  if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) || pipe(p)) return 1;
  int f = open("/tmp/tree.log", O_WRONLY | O_CREAT | O_APPEND, 0644);
  if (f < 0) return 1;
  if (fork() == 0) { /* relay: socket -> pipe */
    char b[64]; ssize_t n;
    close(sv[0]); close(p[0]);
    while ((n = read(sv[1], b, sizeof b)) > 0) if (write(p[1], b, n) != n) return 1;
    return 0;
  }
  if (fork() == 0) { /* writer: pipe -> open file */
    char b[64]; ssize_t n;
    close(sv[0]); close(sv[1]); close(p[1]);
    while ((n = read(p[0], b, sizeof b)) > 0) if (write(f, b, n) != n) return 1;
    return 0;
  }
  close(sv[1]); close(p[0]); close(p[1]);
  for (unsigned long n = 1;; n++) { /* the count lives in this process's memory */
    char line[32];
    int len = snprintf(line, sizeof line, "%lu\\n", n);
    if (write(sv[0], line, len) != len) return 1;
    usleep(50000);
  }
}
`;

describe('checkpoint and restore of lxc containers (real daemon, CRIU)', function () {
  this.timeout(120_000);
  let d: TestDaemon;
  let c: Client;
  let work: string;
  const events: WatchEventsResponse[] = [];
  let stream: ReturnType<Client['events']['watchEvents']> | undefined;

  before(async function () {
    if (!isRoot()) skipSuite(this, 'needs root');
    const criu = await locateCriu();
    if (!criu.ok) skipSuite(this, criu.reason);
    work = mkdtempSync(path.join(os.tmpdir(), 'osvirt-cr-test-'));
    writeFileSync(path.join(work, 'tree.c'), TREE_C);
    execFileSync('gcc', ['-static', '-O2', '-o', path.join(work, 'tree'), path.join(work, 'tree.c')]);
    d = new TestDaemon();
    c = await d.start();
    const lxc = (await c.api.system.listDrivers({})).drivers.find((x) => x.name === 'lxc');
    assert.ok(lxc?.capabilities.includes('checkpoint'), JSON.stringify(lxc));
    stream = c.events.watchEvents({ containers: [], types: [EventType.EVENT_TYPE_CHECKPOINTED, EventType.EVENT_TYPE_RESTORED] });
    stream.on('data', (e: WatchEventsResponse) => events.push(e));
    stream.on('error', () => undefined);
    await new Promise((r) => stream!.once('metadata', r));
  });

  after(async () => {
    stream?.cancel();
    await d?.destroy();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  const api = () => c.api.containers;
  const cdir = (name: string) => path.join(d.stateDir, 'drivers', 'lxc', 'containers', name);
  const cgroupDirs = (name: string) =>
    ['/sys/fs/cgroup/pids', '/sys/fs/cgroup/memory', '/sys/fs/cgroup/unified', '/sys/fs/cgroup/systemd', '/sys/fs/cgroup'].map((r) =>
      path.join(r, 'osvirt', name),
    );

  async function run(name: string, spec: DeepPartial<ContainerSpec>): Promise<number> {
    await api().createContainer({ name, spec: busybox(spec) });
    return (await api().startContainer({ name })).container!.status!.initPid;
  }

  async function remove(name: string): Promise<void> {
    await api().deleteContainer({ name, force: true, allowMissing: true });
    for (const dir of cgroupDirs(name)) assert.ok(!existsSync(dir), `${dir} left behind`);
  }

  /** Puts the test program at /tree in a running container's rootfs (its init waits for it). */
  function install(name: string): void {
    const bin = path.join(cdir(name), 'rootfs', 'tree');
    writeFileSync(`${bin}.tmp`, readFileSync(path.join(work, 'tree')));
    chmodSync(`${bin}.tmp`, 0o755);
    execFileSync('mv', [`${bin}.tmp`, bin]);
  }
  const WAIT_TREE = 'while [ ! -x /tree ]; do sleep 0.02; done;';

  function counter(name: string): number {
    try {
      return Number(readFileSync(path.join(cdir(name), 'upper', 'tmp', 'counter'), 'utf8').trim()) || 0;
    } catch {
      return 0;
    }
  }

  async function checkpoint(name: string, cp: string, o: DeepPartial<CheckpointOptions> = {}): Promise<Checkpoint> {
    return (await api().checkpointContainer({ name, checkpoint: cp, options: CheckpointOptions.fromPartial(o) })).checkpoint!;
  }

  async function restore(name: string, cp: string, opts: { newName?: string; tcp?: boolean; timeoutMs?: number } = {}) {
    const timeout = opts.timeoutMs ? { seconds: BigInt(Math.floor(opts.timeoutMs / 1000)), nanos: (opts.timeoutMs % 1000) * 1e6 } : undefined;
    return (await api().restoreContainer({ name, checkpoint: cp, newName: opts.newName ?? '', tcpEstablished: !!opts.tcp, timeout })).container!;
  }

  it('restores a counter from its value in memory, and the restored container is a normal one', async () => {
    const pid = await run('count', { process: { args: ['/bin/sh', '-c', COUNTER] } });
    await until(() => counter('count') >= 10, 'counter >= 10');
    const cp = await checkpoint('count', 'one');
    assert.equal(cp.criuVersion, (await locateCriu()).version);
    assert.ok(
      cp.stats!.pagesWritten > 0n && cp.stats!.frozenTimeUs > 0n && cp.stats!.pagesScanned >= cp.stats!.pagesWritten,
      JSON.stringify(CheckpointStats.toJSON(cp.stats!)),
    );
    assert.ok(cp.sizeBytes > cp.stats!.pagesWritten * 4096n);
    for (const f of ['checkpoint/inventory.img', 'checkpoint/stats-dump', 'config.dump', 'rootfs-diff.tar', 'osvirt.json']) {
      assert.ok(existsSync(path.join(d.stateDir, 'checkpoints', 'count', 'one', f)), `${f} missing`);
    }
    // Stopped by the checkpoint: the init is gone, nothing counts.
    const st = (await api().getContainer({ name: 'count' })).container!.status!;
    assert.equal(st.state, ContainerState.CONTAINER_STATE_STOPPED);
    assert.ok(!pidAlive(pid));
    const atDump = counter('count');
    await holds(() => counter('count') === atDump, 'the checkpointed counter standing still', 300);
    assert.deepEqual(
      (await api().listCheckpoints({ name: 'count', pageSize: 0, pageToken: '' })).checkpoints.map((x) => x.name),
      ['one'],
    );

    const restored = await restore('count', 'one');
    assert.equal(restored.status?.state, ContainerState.CONTAINER_STATE_RUNNING);
    const rpid = restored.status!.initPid;
    assert.ok(pidAlive(rpid) && rpid !== pid);
    // The restored init's parent is its monitor, like a started one's.
    const monitorPid = Number(readFileSync(path.join(cdir('count'), 'monitor', 'monitor.pid'), 'utf8'));
    assert.match(readFileSync(`/proc/${rpid}/stat`, 'utf8'), new RegExp(`^${rpid} \\(sh\\) \\S ${monitorPid} `));
    // From memory: the first value after restore follows the dumped one, it does not start over.
    await until(() => counter('count') > atDump, 'counter moving again');
    const first = counter('count');
    assert.ok(first > atDump && first < atDump + 10, `counter went from ${atDump} to ${first}`);

    // The existing code paths work on it: exec, stats, a second checkpoint, stop.
    assert.equal(await sh(c, 'count', 'echo exec-ok'), 'exec-ok');
    const stats = (await api().getContainerStats({ name: 'count' })).stats!;
    assert.ok(stats.pidsCurrent >= 2 && stats.memoryUsageBytes > 0n, JSON.stringify(ContainerStats.toJSON(stats)));
    const again = await checkpoint('count', 'two', { leaveRunning: true });
    assert.ok(again.stats!.pagesWritten > 0);
    assert.equal((await api().getContainer({ name: 'count' })).container!.status!.initPid, rpid);
    await api().stopContainer({ name: 'count', signal: 9, timeout: undefined });
    assert.equal((await api().getContainer({ name: 'count' })).container!.status!.state, ContainerState.CONTAINER_STATE_STOPPED);
    assert.ok(!pidAlive(rpid) && !pidAlive(monitorPid));
    for (const dir of cgroupDirs('count')) assert.ok(!existsSync(dir), `${dir} left after stop`);

    await until(() => events.filter((e) => e.event?.container === 'count').length >= 3, 'events');
    const types = events.filter((e) => e.event?.container === 'count').map((e) => EventType[e.event!.type]);
    assert.deepEqual(types.slice(0, 3), ['EVENT_TYPE_CHECKPOINTED', 'EVENT_TYPE_RESTORED', 'EVENT_TYPE_CHECKPOINTED']);

    await api().deleteCheckpoint({ name: 'count', checkpoint: 'one', allowMissing: false });
    await api().deleteCheckpoint({ name: 'count', checkpoint: 'one', allowMissing: true });
    assert.deepEqual(
      (await api().listCheckpoints({ name: 'count', pageSize: 0, pageToken: '' })).checkpoints.map((x) => x.name),
      ['two'],
    );
    assert.ok(!existsSync(path.join(d.stateDir, 'checkpoints', 'count', 'one')));
    await remove('count');
  });

  it('survives 20 checkpoint/restore cycles, each one verified', async () => {
    // Outside osvirt's own subtree, a named hierarchy (name=systemd here) must not grow:
    // CRIU must not recreate the cgroups it saw at the hierarchy's root.
    const unmanaged = '/sys/fs/cgroup/systemd';
    const countDirs = () =>
      existsSync(unmanaged)
        ? execFileSync('find', [unmanaged, '-type', 'd', '-not', '-path', `${unmanaged}/osvirt*`, '-not', '-path', `${unmanaged}/lxc.*`], {
            encoding: 'utf8',
          }).split('\n').length
        : 0;
    const dirsBefore = countDirs();
    await run('cycle', { process: { args: ['/bin/sh', '-c', COUNTER] } });
    await until(() => counter('cycle') >= 3, 'counter');
    let last = 0;
    for (let i = 0; i < 20; i++) {
      await until(() => counter('cycle') > last, `counter moving before cycle ${i}`);
      await checkpoint('cycle', `c${i}`);
      const atDump = counter('cycle');
      assert.ok(atDump > last, `cycle ${i}: counter ${atDump} after ${last}`);
      const r = await restore('cycle', `c${i}`);
      assert.ok(pidAlive(r.status!.initPid), `cycle ${i}: restored init not running`);
      await until(() => counter('cycle') > atDump, `cycle ${i}: counter moving after restore`);
      assert.ok(counter('cycle') < atDump + 20, `cycle ${i}: counter jumped from ${atDump} to ${counter('cycle')}`);
      last = counter('cycle');
      await api().deleteCheckpoint({ name: 'cycle', checkpoint: `c${i}`, allowMissing: false });
    }
    await remove('cycle');
    assert.equal(countDirs(), dirsBefore, `${unmanaged} changed`);
  });

  it('restores a process tree joined by a unix socketpair and a pipe, writing to an open file', async () => {
    // The init waits for the program to appear in its rootfs, then becomes it.
    await run('tree', { process: { args: ['/bin/sh', '-c', `${WAIT_TREE} exec /tree`] } });
    install('tree');
    const log = path.join(cdir('tree'), 'upper', 'tmp', 'tree.log');
    const values = () => (existsSync(log) ? readFileSync(log, 'utf8').split('\n').filter(Boolean).map(Number) : []);
    await until(() => values().length >= 10, 'tree writing');
    const procsFile = ['/sys/fs/cgroup/pids/osvirt/tree', '/sys/fs/cgroup/osvirt/tree'].map((x) => path.join(x, 'cgroup.procs')).find((f) => existsSync(f))!;
    const procs = () => readFileSync(procsFile, 'utf8').split('\n').filter(Boolean).length;
    assert.equal(procs(), 3);

    await checkpoint('tree', 'tree');
    const atDump = values().length;
    await restore('tree', 'tree');
    await until(() => values().length >= atDump + 10, 'tree writing after restore');
    assert.equal(procs(), 3, 'all three processes are back');
    // One unbroken sequence 1..N: the count came through socket, pipe and file without restarting.
    const v = values();
    const breakAt = v.findIndex((x, i) => x !== i + 1);
    assert.equal(breakAt, -1, `sequence broken at ${breakAt}: ${v.slice(Math.max(0, breakAt - 3), breakAt + 3).join(',')}`);
    await remove('tree');
  });

  it('keeps an established TCP connection from a host client across checkpoint and restore', async () => {
    // Privileged: CRIU cannot restore a veth into a user namespace (see the next test).
    await run('tcp', {
      network: { mode: { $case: 'bridge', value: {} } },
      security: PRIVILEGED,
      process: { args: ['/bin/sh', '-c', 'while :; do nc -l -p 5000 -e /bin/cat; done'] },
    });
    const ip = (await sh(c, 'tcp', "ip -4 -o addr show eth0 | awk '{print $4}'")).split('/')[0]!;
    const sock: net.Socket = await until(
      () =>
        new Promise<net.Socket | undefined>((resolve) => {
          const s = net.connect(5000, ip);
          s.once('connect', () => resolve(s));
          s.once('error', () => resolve(undefined));
        }) as Promise<net.Socket>,
      'connecting to the server in the container',
    );
    let got = '';
    sock.on('data', (b) => (got += b.toString()));
    sock.on('error', () => undefined);
    try {
      sock.write('before\n');
      await until(() => got.includes('before\n'), 'echo before the checkpoint');
      await checkpoint('tcp', 'tcp', { tcpEstablished: true });
      // Without tcp_established the checkpoint cannot be restored: refused, nothing made.
      await rejects(restore('tcp', 'tcp'), Code.FAILED_PRECONDITION, 'TCP_ESTABLISHED_REQUIRED');
      await restore('tcp', 'tcp', { tcp: true });
      const hostEnd = hostIfName('ovh', 'tcp', path.join(d.stateDir, 'drivers', 'ipam.json'));
      assert.match(execFileSync('ip', ['-o', 'link', 'show', hostEnd], { encoding: 'utf8' }), new RegExp(`master ${d.bridge} `));
      sock.write('after\n');
      await until(() => got.includes('after\n'), `echo after the restore (got ${JSON.stringify(got)})`);
      assert.ok(!sock.destroyed);
    } finally {
      sock.destroy();
    }
    await remove('tcp');
    assert.ok(!existsSync(`/sys/class/net/${hostIfName('ovh', 'tcp', path.join(d.stateDir, 'drivers', 'ipam.json'))}`));
  });

  it('restores a console container whose console can be attached afterwards', async () => {
    await run('tty', { process: { tty: true, args: ['/bin/sh', '-c', 'while read l; do echo "echo:$l"; done'] } });
    await checkpoint('tty', 'tty');
    const r = await restore('tty', 'tty');
    // The console is the new monitor's pty, and it is the init's controlling terminal again.
    const stat = readFileSync(`/proc/${r.status!.initPid}/stat`, 'utf8')
      .slice(readFileSync(`/proc/${r.status!.initPid}/stat`, 'utf8').lastIndexOf(')') + 2)
      .split(' ');
    assert.notEqual(Number(stat[4]), 0, 'no controlling terminal');
    assert.match(readlinkSync(`/proc/${r.status!.initPid}/fd/0`), /^\/dev\/pts\/\d+$/);
    const s = c.containers.attachConsole();
    let out = '';
    s.on('data', (m: AttachConsoleResponse) => (out += m.output.toString()));
    s.on('error', () => undefined);
    s.write({ message: { $case: 'start', value: { name: 'tty', terminalSize: { rows: 30, cols: 100 } } } });
    s.write({ message: { $case: 'input', value: Buffer.from('hello\n') } });
    await until(() => out.includes('echo:hello'), `console output (got ${JSON.stringify(out)})`);
    s.cancel();
    await remove('tty');
  });

  it('restores a clone next to the running original: both run, independently', async () => {
    // Privileged: CRIU cannot restore a veth into a user namespace (see the next test).
    const opid = await run('orig', { network: { mode: { $case: 'bridge', value: {} } }, security: PRIVILEGED, process: { args: ['/bin/sh', '-c', COUNTER] } });
    await sh(c, 'orig', 'echo original > /tmp/mark');
    await until(() => counter('orig') >= 5, 'counter');
    await checkpoint('orig', 'snap', { leaveRunning: true });
    const clone = await restore('orig', 'snap', { newName: 'clone' });
    const cpid = clone.status!.initPid;
    assert.ok(pidAlive(opid) && pidAlive(cpid) && opid !== cpid);
    for (const ns of ['net', 'pid', 'mnt', 'uts']) assert.notEqual(readlinkSync(`/proc/${opid}/ns/${ns}`), readlinkSync(`/proc/${cpid}/ns/${ns}`), ns);
    assert.match(readFileSync(`/proc/${cpid}/cgroup`, 'utf8'), /pids:\/osvirt\/clone$/m);
    assert.match(readFileSync(`/proc/${opid}/cgroup`, 'utf8'), /pids:\/osvirt\/orig$/m);
    // Own address, MAC and hostname on the same bridge.
    const addr = async (n: string) => sh(c, n, "ip -4 -o addr show eth0 | awk '{print $4}'; cat /sys/class/net/eth0/address; hostname");
    const [oa, ca] = [await addr('orig'), await addr('clone')];
    const [oip, omac, ohost] = oa.split('\n');
    const [cip, cmac, chost] = ca.split('\n');
    assert.notEqual(oip, cip);
    assert.notEqual(omac, cmac);
    assert.equal(ohost, 'orig');
    assert.equal(chost, 'clone');
    assert.equal((await execIn(c, 'clone', ['ping', '-c', '1', '-W', '2', oip!.split('/')[0]!])).exitCode, 0, 'the clone reaches the original');
    // Own rootfs: the clone has the original's files from the checkpoint, changes stay apart.
    assert.equal(await sh(c, 'clone', 'cat /tmp/mark'), 'original');
    await sh(c, 'clone', 'echo clone > /tmp/mark');
    assert.equal(await sh(c, 'orig', 'cat /tmp/mark'), 'original');
    // Both count, each in its own memory and file.
    const [o0, c0] = [counter('orig'), counter('clone')];
    await until(() => counter('orig') > o0 + 3 && counter('clone') > c0 + 3, 'both counting');
    await api().stopContainer({ name: 'clone', signal: 9, timeout: undefined });
    const o1 = counter('orig');
    await until(() => counter('orig') > o1 + 2, 'original still counting after the clone stopped');
    await remove('clone');
    await remove('orig');
  });

  it('a leave_running snapshot keeps the container running; a failed checkpoint leaves it running', async () => {
    const pid = await run('snap', { process: { args: ['/bin/sh', '-c', `${WAIT_TREE} /tree lock & ${COUNTER}`] } });
    install('snap');
    await until(() => counter('snap') >= 3 && flockHeld(pid), 'counter and the flock on /tmp/lock');
    // CRIU refuses a held file lock unless asked to dump it: the checkpoint fails, nothing stops.
    const err = await rejects(checkpoint('snap', 'bad'), Code.INTERNAL, 'CRIU_FAILED');
    assert.match(err.details, /file lock/i);
    assert.equal((await api().getContainer({ name: 'snap' })).container!.status!.state, ContainerState.CONTAINER_STATE_RUNNING);
    assert.ok(pidAlive(pid));
    const c0 = counter('snap');
    await until(() => counter('snap') > c0 + 2, 'still counting after the failed checkpoint');
    assert.deepEqual((await api().listCheckpoints({ name: 'snap', pageSize: 0, pageToken: '' })).checkpoints, []);
    assert.ok(!existsSync(path.join(d.stateDir, 'checkpoints', 'snap', 'bad')));

    const cp = await checkpoint('snap', 'good', { leaveRunning: true, fileLocks: true });
    assert.ok(cp.stats!.pagesWritten > 0);
    const st = (await api().getContainer({ name: 'snap' })).container!.status!;
    assert.equal(st.state, ContainerState.CONTAINER_STATE_RUNNING);
    assert.equal(st.initPid, pid);
    const c1 = counter('snap');
    await until(() => counter('snap') > c1 + 2, 'still counting after the snapshot');
    await remove('snap');
  });

  it('a failed restore leaves nothing behind, and the checkpoint stays usable', async () => {
    // Privileged: CRIU cannot restore a veth into a user namespace (see the next test).
    await run('fail', { network: { mode: { $case: 'bridge', value: {} } }, security: PRIVILEGED, process: { args: ['/bin/sh', '-c', COUNTER] } });
    await until(() => counter('fail') >= 3, 'counter');
    await checkpoint('fail', 'cp');
    const atDump = counter('fail');
    const hostEnd = hostIfName('ovh', 'fail', path.join(d.stateDir, 'drivers', 'ipam.json'));
    const monitors = () => {
      try {
        return execFileSync('pgrep', ['-f', `osvirt-helper restore --run-dir .* --state ${cdir('fail')}/monitor`], { encoding: 'utf8' }).trim();
      } catch {
        return '';
      }
    };
    // Aborted by its deadline while CRIU is at work (the clock starts with the CRIU request, and a restore
    // takes longer than 30 ms; 120 ms was once enough for the whole restore).
    await rejects(restore('fail', 'cp', { timeoutMs: 30 }), Code.DEADLINE_EXCEEDED, 'RESTORE_TIMEOUT');
    await until(
      async () =>
        (await api().getContainer({ name: 'fail' })).container!.status!.state === ContainerState.CONTAINER_STATE_STOPPED &&
        monitors() === '' &&
        cgroupDirs('fail').every((dir) => !existsSync(dir)),
      'the aborted restore to be undone',
    );
    assert.equal((await api().getContainer({ name: 'fail' })).container!.status!.state, ContainerState.CONTAINER_STATE_STOPPED);
    for (const dir of cgroupDirs('fail')) assert.ok(!existsSync(dir), `${dir} left behind`);
    assert.ok(!isMounted(path.join(cdir('fail'), 'rootfs')), 'rootfs still mounted');
    assert.ok(!existsSync(`/sys/class/net/${hostEnd}`), 'veth left behind');
    assert.equal(monitors(), '', 'a restore helper is still running');
    assert.ok(!existsSync(path.join(cdir('fail'), 'runtime.json')));
    assert.equal(counter('fail'), atDump, 'something ran');

    const r = await restore('fail', 'cp');
    assert.ok(pidAlive(r.status!.initPid));
    await until(() => counter('fail') > atDump, 'counting after the second restore');
    await remove('fail');
  });

  it('exports a checkpoint on one daemon, imports and restores it on a second', async () => {
    await run('mover', { process: { args: ['/bin/sh', '-c', COUNTER] } });
    await until(() => counter('mover') >= 3, 'counter');
    await checkpoint('mover', 'travel');
    const atDump = counter('mover');
    const chunks: Buffer[] = [];
    await new Promise<void>((resolve, reject) => {
      const s = c.containers.exportCheckpoint({ name: 'mover', checkpoint: 'travel' });
      s.on('data', (m: { data: Buffer }) => chunks.push(m.data));
      s.on('end', () => resolve());
      s.on('error', reject);
    });
    const tar = Buffer.concat(chunks);
    const members = execFileSync('tar', ['-tf', '-'], { input: tar, encoding: 'utf8' });
    for (const m of ['./checkpoint/inventory.img', './rootfs-diff.tar', './config.dump', './spec.dump', './osvirt.json'])
      assert.ok(members.includes(m), `archive lacks ${m}`);

    const d2 = new TestDaemon();
    try {
      const c2 = await d2.start();
      const imported = await new Promise<Checkpoint>((resolve, reject) => {
        const s = c2.containers.importCheckpoint((err, res) => (err ? reject(err) : resolve(res.checkpoint!)));
        s.write({ message: { $case: 'start', value: { name: '', checkpoint: '' } } });
        for (let i = 0; i < tar.length; i += 1 << 20) s.write({ message: { $case: 'data', value: tar.subarray(i, i + (1 << 20)) } });
        s.end();
      });
      assert.equal(imported.container, 'mover');
      const restored = (
        await c2.api.containers.restoreContainer({ name: 'mover', checkpoint: 'travel', newName: '', tcpEstablished: false, timeout: undefined })
      ).container!;
      assert.equal(restored.status?.state, ContainerState.CONTAINER_STATE_RUNNING);
      const file = path.join(d2.stateDir, 'drivers', 'lxc', 'containers', 'mover', 'upper', 'tmp', 'counter');
      const read = () => (existsSync(file) ? Number(readFileSync(file, 'utf8').trim()) || 0 : 0);
      await until(() => read() > atDump, 'counter moving on the second daemon');
      assert.ok(read() < atDump + 40, `counter restarted or jumped: ${atDump} -> ${read()}`);
    } finally {
      await d2.destroy();
    }
    await remove('mover');
  });

  it('reclaims the CRIU run tmpfs a daemon killed with -9 left mounted', async () => {
    const d2 = new TestDaemon();
    const criuRun = path.join(d2.stateDir, 'drivers', 'lxc', 'criu-run');
    const mounted = () =>
      readFileSync('/proc/self/mountinfo', 'utf8')
        .split('\n')
        .some((l) => l.split(' ')[4] === criuRun);
    try {
      const c2 = await d2.start();
      await c2.api.containers.createContainer({ name: 'orphan-run', spec: busybox({}) });
      await c2.api.containers.startContainer({ name: 'orphan-run' });
      await c2.api.containers.checkpointContainer({ name: 'orphan-run', checkpoint: 'one', options: CheckpointOptions.fromPartial({ leaveRunning: true }) });
      assert.ok(mounted(), "a checkpoint mounts CRIU's run tmpfs");
      await d2.kill();
      assert.ok(mounted(), 'kill -9 leaves it mounted');
      // The next daemon never checkpoints; its clean stop still takes the mount away.
      const c3 = await d2.start();
      await c3.api.containers.deleteContainer({ name: 'orphan-run', force: true, allowMissing: false });
      await d2.stop();
      assert.ok(!mounted(), `${criuRun} is still mounted after the next daemon stopped`);
    } finally {
      await d2.destroy();
    }
  });

  it('refuses what this kernel or osvirt cannot do with FAILED_PRECONDITION', async () => {
    await run('opts', { process: { args: ['/bin/sh', '-c', COUNTER] } });
    await rejects(checkpoint('opts', 'lazy', { lazyPages: true }), Code.FAILED_PRECONDITION, 'LAZY_PAGES_UNSUPPORTED');
    await checkpoint('opts', 'base', { leaveRunning: true });
    if (hasKernelFeature('CONFIG_MEM_SOFT_DIRTY') === false) {
      const e = await rejects(checkpoint('opts', 'incr', { leaveRunning: true, parentCheckpoint: 'base' }), Code.FAILED_PRECONDITION, 'KERNEL_FEATURE_MISSING');
      assert.match(e.details, /CONFIG_MEM_SOFT_DIRTY/);
    } else {
      const incr = await checkpoint('opts', 'incr', { leaveRunning: true, parentCheckpoint: 'base' });
      assert.ok(incr.stats!.pagesScanned > 0);
    }
    assert.equal((await api().getContainer({ name: 'opts' })).container!.status!.state, ContainerState.CONTAINER_STATE_RUNNING);
    await remove('opts');
  });

  it('refuses before dumping a user-namespaced container with a veth (CRIU cannot restore it), which runs on', async () => {
    const pid = await run('usrveth', { network: { mode: { $case: 'bridge', value: {} } }, process: { args: ['/bin/sh', '-c', COUNTER] } });
    try {
      assert.notEqual(readlinkSync(`/proc/${pid}/ns/user`), readlinkSync('/proc/self/ns/user'), 'a default container has its own user namespace');
      const e = await rejects(checkpoint('usrveth', 'x'), Code.FAILED_PRECONDITION, 'CHECKPOINT_UNSUPPORTED');
      assert.match(e.details, /user namespace.*veth|veth.*user namespace/);
      assert.equal((await api().listCheckpoints({ name: 'usrveth', pageSize: 0, pageToken: '' })).checkpoints.length, 0);
      const before = counter('usrveth');
      await until(() => counter('usrveth') > before, 'the counter goes on', 5000);
    } finally {
      await remove('usrveth');
    }
  });
});
