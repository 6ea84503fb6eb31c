// The native helper's options the jail driver builds on, used directly:
// --seccomp-deny, --mask, --ro-path, --dev-nodes, --no-sysfs, --no-ns,
// --root-owned-ns and the `init` subcommand (a jail's pid 1).
import { strict as assert } from 'node:assert';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { copyFileSync, chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, symlinkSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { StartCommand, StartEvent } from '../src/gen/osvirt/helper/v1/helper';
import { encodeFrame, MessageReader } from '../src/host/helper-wire';
import { unmountUnder } from '../src/host/mounts';
import { repoPath } from '../src/paths';
import { holds, isRoot, until } from './support/daemon';
import { pidAlive } from '../src/host/processes';

const HELPER = repoPath('native', 'build', 'osvirt-helper');
const INIT = repoPath('native', 'build', 'osvirt-init');

describe('native helper: jail building blocks', function () {
  this.timeout(30000);
  let dir: string;
  let root: string;
  const monitors: ChildProcess[] = [];
  /** Every container init started: killing a monitor does not end its init (it is reparented). */
  const inits: number[] = [];

  before(function () {
    if (!isRoot()) return this.skip();
    dir = mkdtempSync(path.join(os.tmpdir(), 'osvirt-jailhelper-'));
    root = path.join(dir, 'root');
    for (const d of ['bin', 'proc', 'sys', 'dev', 'tmp', 'etc', 'mnt']) mkdirSync(path.join(root, d), { recursive: true });
    copyFileSync(
      ['/bin/busybox', '/usr/bin/busybox'].find((p) => existsSync(p))!,
      path.join(root, 'bin', 'busybox'),
    );
    chmodSync(path.join(root, 'bin', 'busybox'), 0o755);
    for (const a of ['sh', 'cat', 'ls', 'hostname', 'mount', 'umount', 'unshare', 'sleep', 'echo', 'grep', 'ipcs'])
      symlinkSync('busybox', path.join(root, 'bin', a));
  });
  after(async () => {
    // SIGKILL to a pid namespace's init ends everything in it; then the monitors.
    for (const pid of inits) spawnSync('kill', ['-9', String(pid)]);
    for (const m of monitors) if (m.pid) spawnSync('kill', ['-9', String(m.pid)]);
    if (dir) {
      const left = await unmountUnder(dir);
      assert.deepEqual(left, [], 'nothing stays mounted under the test dir');
      rmSync(dir, { recursive: true, force: true });
    }
  });

  /** Start a container with the given extra options; returns the init pid and its state dir. */
  async function run(name: string, extra: string[], argv: string[] = [INIT_IN, 'init']): Promise<{ pid: number; state: string }> {
    const state = path.join(dir, name);
    mkdirSync(state, { recursive: true });
    const args = [
      'run',
      '--state',
      state,
      '--rootfs',
      root,
      '--ns',
      'pid,mnt,uts,ipc,net',
      '--hostname',
      name,
      '--mount',
      `bind:${INIT}:${INIT_IN}:ro:`,
      ...extra,
      '--',
      ...argv,
    ];
    const m = spawn(HELPER, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    monitors.push(m);
    const events = new MessageReader(m.stdout!, StartEvent, 'StartEvent');
    const created = (await events.next())?.event;
    if (created?.$case !== 'created') return assert.fail(`expected created, got ${JSON.stringify(created)}`);
    inits.push(created.value.initPid);
    m.stdin!.write(encodeFrame(StartCommand, { command: { $case: 'go', value: {} } }));
    const started = (await events.next())?.event;
    assert.equal(started?.$case, 'started', JSON.stringify(started));
    events.close();
    return { pid: created.value.initPid, state };
  }
  const INIT_IN = '/dev/.osvirt-init';
  /** Host pids of the processes in init's pid namespace (other than init) running exactly cmdline; undefined if none. */
  function inJail(init: number, cmdline: string): number[] | undefined {
    const ns = readlinkSync(`/proc/${init}/ns/pid`);
    const found = readdirSync('/proc')
      .filter((e) => /^\d+$/.test(e) && Number(e) !== init)
      .map(Number)
      .filter((p) => {
        try {
          return readlinkSync(`/proc/${p}/ns/pid`) === ns && readFileSync(`/proc/${p}/cmdline`, 'utf8') === cmdline;
        } catch {
          return false;
        }
      });
    return found.length ? found : undefined;
  }
  function exec(pid: number, script: string, extra: string[] = []): { out: string; code: number } {
    const r = spawnSync(HELPER, ['exec', '--pid', String(pid), ...extra, '--', '/bin/sh', '-c', script], { encoding: 'utf8' });
    return { out: (r.stdout + r.stderr).trim(), code: r.status ?? -1 };
  }

  it('--seccomp-deny: whole calls, argument bit masks and value sets, for run and exec alike', async () => {
    const deny = [
      '--seccomp-deny',
      'unshare:EPERM',
      '--seccomp-deny',
      'socket:EAFNOSUPPORT:arg0!=1,2,10',
      '--seccomp-deny',
      'clone:EPERM:arg0&0x7e020000',
      '--seccomp-deny',
      'clone3:ENOSYS',
      '--seccomp-deny',
      'semget:ENOSYS',
    ];
    const { pid } = await run('sc', deny);
    const seccomp = /Seccomp:\s*(\d)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1];
    assert.equal(seccomp, '2', 'the init runs under a filter');
    let r = exec(pid, 'unshare -U true; echo rc=$?', deny);
    assert.match(r.out, /Operation not permitted/);
    assert.match(r.out, /rc=1/);
    r = exec(pid, 'ipcs -s; echo rc=$?', deny);
    assert.match(r.out, /rc=1/, 'semget denied (ENOSYS)');
    r = exec(pid, 'echo fork works; (echo in a subshell)', deny);
    assert.equal(r.out, 'fork works\nin a subshell', 'a plain fork (clone without namespace flags) passes');
    assert.match(spawnSync(HELPER, ['exec', '--pid', '1', '--seccomp-deny', 'nosuchcall', '--', 'true'], { encoding: 'utf8' }).stderr, /unknown system call/);
  });

  it('--dev-nodes, --no-sysfs, --mask and --ro-path shape what the container sees', async () => {
    const { pid } = await run('dev', ['--dev-nodes', 'null,zero', '--no-sysfs', '--mask', '/proc/kcore', '--mask', '/proc/acpi', '--ro-path', '/proc/sys']);
    assert.equal(exec(pid, 'ls /dev').out.split(/\s+/).sort().join(' '), 'mqueue null shm zero');
    assert.equal(exec(pid, 'ls /sys').out, '', '/sys stays an empty directory');
    assert.equal(exec(pid, 'grep -c " /sys " /proc/mounts').out, '0', 'no sysfs');
    const ro = exec(pid, 'echo x > /proc/sys/kernel/hostname; echo rc=$?').out;
    assert.match(ro, /Read-only file system/);
    assert.match(ro, /rc=1/);
    if (existsSync('/proc/acpi')) assert.equal(exec(pid, 'ls /proc/acpi | wc -l').out, '0', 'a masked directory is empty');
    const { pid: p2 } = await run('nodev', ['--dev-nodes', 'none', '--mask', '/proc/keys']);
    assert.equal(exec(p2, 'ls /dev').out.split(/\s+/).sort().join(' '), 'mqueue shm');
    assert.equal(exec(p2, 'cat /proc/keys | wc -c').out, '0', 'a masked file reads as /dev/null (made hidden when /dev has none)');
  });

  it('--no-ns shares a namespace after all; --root-owned-ns lets uid 0 set the hostname and bind-mount without capabilities', async () => {
    const { pid } = await run('own', ['--no-ns', 'ipc', '--root-owned-ns', 'uts,mnt', '--caps', 'chown,setuid,setgid']);
    assert.equal(readlinkSync(`/proc/${pid}/ns/ipc`), readlinkSync('/proc/self/ns/ipc'), "the host's IPC namespace");
    const caps = ['--caps', 'chown,setuid,setgid'];
    assert.equal(exec(pid, 'hostname renamed && hostname', caps).out, 'renamed');
    assert.equal(os.hostname() === 'renamed', false);
    assert.match(exec(pid, 'hostname x', [...caps, '--user', '65534:65534']).out, /must be root|not permitted/i, 'only root');
    assert.equal(exec(pid, 'mount --bind /etc /mnt && ls -d /mnt && umount /mnt && echo ok', caps).out, '/mnt\nok');
    assert.match(exec(pid, 'umount /proc; echo rc=$?', caps).out, /rc=1/, 'the mounts it was given are locked');
    assert.match(exec(pid, 'mount -t tmpfs t /mnt; echo rc=$?', caps).out, /rc=\d*[1-9]/, 'new file systems still need CAP_SYS_ADMIN');
  });

  it('init: held until SIGUSR1 from outside, ignores signals from inside, ends with its last process', async () => {
    const { pid, state } = await run('init', []);
    exec(pid, 'kill -USR1 1; kill -TERM 1; true');
    await holds(() => !existsSync(path.join(state, 'exit')), 'the jail ignoring signals from inside', 300);
    // A process started from outside keeps the released jail alive until it ends.
    const bg = spawn(HELPER, ['exec', '--pid', String(pid), '--', '/bin/sleep', '1'], { stdio: 'ignore' });
    const sleeper = (await until(() => inJail(pid, '/bin/sleep\x001\x00'), "the exec'd sleep inside the jail", 5000))[0]!;
    process.kill(pid, 'SIGUSR1');
    await holds(() => !pidAlive(sleeper) || !existsSync(path.join(state, 'exit')), 'the jail alive while its last process runs', 400);
    await until(() => existsSync(path.join(state, 'exit')), 'the jail to end with its last process', 5000);
    assert.ok(!pidAlive(sleeper), 'the jail ended only after its last process');
    assert.equal(JSON.parse(readFileSync(path.join(state, 'exit'), 'utf8')).exitCode, 0);
    bg.kill();
    // SIGTERM from outside goes to every process; the init follows once they are gone.
    const { pid: p2, state: s2 } = await run('init2', []);
    spawn(HELPER, ['exec', '--pid', String(p2), '--', '/bin/sleep', '100'], { stdio: 'ignore' });
    await until(() => inJail(p2, '/bin/sleep\x00100\x00'), "the exec'd sleep inside the jail", 5000);
    process.kill(p2, 'SIGTERM');
    await until(() => existsSync(path.join(s2, 'exit')), 'SIGTERM to end the jail', 5000);
  });
});
