// CRIU on this host: locating it, talking to it over RPC, and a real dump + restore whose effect
// is proven from the outside (a counter in the process's memory keeps counting in a file).

import * as assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as zlib from 'node:zlib';

import { compareVersions, locateCriu, MIN_CRIU_VERSION, type CriuLocation } from '../src/criu/criu-locate';
import { CriuError, CriuRpcClient, defaultHelperPath, type CriuNotification } from '../src/criu/criu-rpc';
import { pidAlive } from '../src/host/processes';
import { holds, until } from '../src/testing/until';

function run(file: string, args: string[]): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    execFile(file, args, { encoding: 'utf8' }, (error, stdout, stderr) => {
      const code = error ? (typeof error.code === 'number' ? error.code : -1) : 0;
      resolve({ code, out: stdout + stderr });
    });
  });
}

function kernelConfig(option: string): string | undefined {
  try {
    const text = zlib.gunzipSync(fs.readFileSync('/proc/config.gz')).toString('utf8');
    return new RegExp(`^${option}=(.*)$`, 'm').exec(text)?.[1];
  } catch {
    return undefined;
  }
}

/**
 * A shell in its own session (CRIU dumps a tree whose session leader is inside it) that keeps a
 * counter in a shell variable, i.e. in its memory, and appends it to a file (appending: a dump
 * between open and write cannot leave the file empty).
 */
class CounterWorkload {
  readonly child: ChildProcess;
  readonly pid: number;
  private readonly exited: Promise<void>;

  constructor(readonly counterFile: string) {
    const script = 'n=0; while :; do n=$((n+1)); printf "%s\\n" "$n" >> "$1"; sleep 0.05; done';
    // detached: setsid() in the child; stdio "ignore": only /dev/null, nothing from this process.
    this.child = spawn('/bin/sh', ['-c', script, 'counter', counterFile], { detached: true, stdio: 'ignore' });
    if (this.child.pid === undefined) throw new Error('could not start the workload');
    this.pid = this.child.pid;
    this.exited = new Promise((resolve) => this.child.once('exit', () => resolve()));
  }

  /**
   * Resolves when every process of the dumped session is gone, zombies included, so that
   * CRIU can give the tree its pids back. The shell is our child, but its `sleep` child is
   * reparented to pid 1, and pid 1 on these VMs reaps orphans only every second or so.
   */
  async waitGone(): Promise<void> {
    await this.exited;
    await until(() => sessionMembers(this.pid).length === 0, `the processes of dumped session ${this.pid} to be gone`, 20_000, 50);
  }
}

/** Pids (zombies included) whose session id is `sid`. */
function sessionMembers(sid: number): number[] {
  const members: number[] = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let stat: string;
    try {
      stat = fs.readFileSync(`/proc/${entry}/stat`, 'utf8');
    } catch {
      continue;
    }
    // Fields after "(comm) ": state ppid pgrp session ...
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (Number(fields[3]) === sid) members.push(Number(entry));
  }
  return members;
}

/** Every value written so far, in order (complete lines only). */
function counterValues(file: string): number[] {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    return [];
  }
  const complete = text.slice(0, text.lastIndexOf('\n') + 1);
  return complete
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => Number.parseInt(l, 10));
}

function readCounter(file: string): number | undefined {
  return counterValues(file).at(-1);
}

async function waitForCounter(file: string, predicate: (n: number) => boolean, what: string): Promise<number> {
  return until(() => {
    const n = readCounter(file);
    return n !== undefined && predicate(n) ? { n } : undefined;
  }, `the counter in ${file} to be ${what}`).then((r) => r.n);
}

/** The counter must stand still while the tree is dumped (nothing runs). */
async function stableCounter(file: string): Promise<number> {
  const first = readCounter(file);
  assert.ok(first !== undefined, `no counter in ${file}`);
  await holds(() => readCounter(file) === first, `the dumped counter standing still at ${first}`, 300);
  return first;
}

/** Skips the rest of the suite, with the reason in each test's title (mocha has no skip reasons). */
function skipSuite(ctx: Mocha.Context, reason: string): never {
  const mark = (suite: Mocha.Suite | undefined): void => {
    if (!suite) return;
    for (const t of suite.tests) t.title += ` (skipped: ${reason})`;
    suite.suites.forEach(mark);
  };
  mark(ctx.test?.parent);
  return ctx.skip();
}

function killGroup(pid: number): void {
  try {
    process.kill(-pid, 'SIGKILL');
  } catch {
    // already gone
  }
}

describe('criu', function () {
  let criu: CriuLocation;
  const cleanupPids = new Set<number>();
  const cleanupDirs: string[] = [];

  before(async function () {
    criu = await locateCriu();
    // The reason names what is missing, e.g. "criu 3.17 at ... is older than 4.2; run scripts/install-criu.sh".
    if (!criu.ok) skipSuite(this, criu.reason);
  });

  afterEach(function () {
    for (const pid of cleanupPids) killGroup(pid);
    cleanupPids.clear();
    for (const dir of cleanupDirs.splice(0)) fs.rmSync(dir, { recursive: true, force: true });
  });

  function tempDir(): string {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'osvirt-criu-test-'));
    cleanupDirs.push(dir);
    return dir;
  }

  it(`locates a criu >= ${MIN_CRIU_VERSION} that passes 'criu check'`, async function () {
    assert.ok(criu.path !== null);
    assert.ok(criu.version !== null && compareVersions(criu.version, MIN_CRIU_VERSION) >= 0, criu.reason);
    // Independent of the locator: ask the binary itself.
    const check = await run(criu.path, ['check']);
    assert.equal(check.code, 0, check.out);
    const version = await run(criu.path, ['--version']);
    assert.match(version.out, new RegExp(`Version: ${criu.version.replace(/\./g, '\\.')}`));
  });

  it('dumps and restores a process tree with the criu CLI; the counter continues', async function () {
    const dir = tempDir();
    const images = path.join(dir, 'images');
    fs.mkdirSync(images);
    const counter = path.join(dir, 'counter');
    const workload = new CounterWorkload(counter);
    cleanupPids.add(workload.pid);
    await waitForCounter(counter, (n) => n >= 10, '>= 10');

    const dump = await run(criu.path as string, ['dump', '-t', String(workload.pid), '-D', images, '-o', 'dump.log', '-v4']);
    assert.equal(dump.code, 0, `criu dump failed:\n${dump.out}\n${tail(path.join(images, 'dump.log'))}`);
    await workload.waitGone();
    const atDump = await stableCounter(counter);

    const pidfile = path.join(dir, 'restored.pid');
    const restore = await run(criu.path as string, ['restore', '-d', '-D', images, '-o', 'restore.log', '-v4', '--pidfile', pidfile]);
    assert.equal(restore.code, 0, `criu restore failed:\n${restore.out}\n${tail(path.join(images, 'restore.log'))}`);
    const restoredPid = Number.parseInt(fs.readFileSync(pidfile, 'utf8'), 10);
    cleanupPids.add(restoredPid);

    await expectContinued(workload, restoredPid, counter, atDump);
  });

  describe('over RPC (criu swrk through the native helper)', function () {
    let client: CriuRpcClient;

    before(function () {
      const helper = defaultHelperPath();
      if (!fs.existsSync(helper)) skipSuite(this, `native helper not built (${helper})`);
      client = new CriuRpcClient({ criuPath: criu.path as string, helperPath: helper });
    });

    it('VERSION answers the same version as `criu --version`', async function () {
      const v = await client.version();
      assert.equal(v.text, criu.version);
      assert.ok(compareVersions(v.text, MIN_CRIU_VERSION) >= 0);
    });

    it('CHECK succeeds', async function () {
      await client.check();
    });

    it('FEATURE_CHECK reports memory tracking exactly when the kernel has soft-dirty bits', async function () {
      const features = await client.featureCheck({ mem_track: true, lazy_pages: true });
      const softDirty = kernelConfig('CONFIG_MEM_SOFT_DIRTY');
      if (softDirty === undefined && !fs.existsSync('/proc/config.gz')) this.skip();
      assert.equal(features.mem_track, softDirty === 'y', `CONFIG_MEM_SOFT_DIRTY=${softDirty ?? 'not set'}`);
      assert.equal(typeof features.lazy_pages, 'boolean');
    });

    it("a failing DUMP carries CRIU's error, errno and the tail of its log", async function () {
      const images = tempDir();
      // A pid that cannot exist (above pid_max).
      const err = await client.dump({ pid: 2 ** 22 + 1, imagesDir: images }).then(
        () => assert.fail('dump of a missing pid succeeded'),
        (e: unknown) => e,
      );
      assert.ok(err instanceof CriuError, String(err));
      assert.equal(err.code, 'REQUEST_FAILED');
      assert.equal(err.request, 'DUMP');
      assert.ok(err.crErrmsg, 'cr_errmsg missing');
      assert.equal(err.logFile, path.join(images, 'criu.log'));
      assert.match(err.logTail ?? '', /Dumping FAILED/);
      assert.match(err.message, /criu DUMP failed: /);
    });

    it('dumps and restores a process tree; the counter continues; notifications are answered', async function () {
      const dir = tempDir();
      const images = path.join(dir, 'images');
      const work = path.join(dir, 'work');
      fs.mkdirSync(images);
      fs.mkdirSync(work);
      const counter = path.join(dir, 'counter');
      const workload = new CounterWorkload(counter);
      cleanupPids.add(workload.pid);
      await waitForCounter(counter, (n) => n >= 10, '>= 10');

      const dumpNotes: CriuNotification[] = [];
      const dumped = await client.dump({
        pid: workload.pid,
        imagesDir: images,
        opts: { leave_running: false, notify_scripts: true, log_file: 'dump.log' },
        onNotify: async (n) => {
          dumpNotes.push(n);
          if (n.script === 'post-dump') {
            // CRIU waits for our answer: the tree must be stopped now, and stays frozen meanwhile.
            const before = readCounter(counter);
            await holds(() => readCounter(counter) === before, "the dumped tree's counter standing still", 200);
          }
        },
      });
      assert.equal(dumped.logFile, path.join(images, 'dump.log'));
      assert.ok(fs.existsSync(path.join(images, 'dump.log')));
      assert.ok(
        dumpNotes.some((n) => n.script === 'post-dump'),
        `notifications: ${dumpNotes.map((n) => n.script).join(',')}`,
      );
      await workload.waitGone();
      const atDump = await stableCounter(counter);

      const restoreNotes: CriuNotification[] = [];
      const restored = await client.restore({
        imagesDir: images,
        // The log goes to a separate work directory, passed to criu as a descriptor.
        workDir: work,
        opts: { notify_scripts: true, log_file: 'restore.log' },
        onNotify: (n) => {
          restoreNotes.push(n);
        },
      });
      cleanupPids.add(restored.pid);
      assert.ok(fs.existsSync(path.join(work, 'restore.log')), 'restore log not in the work directory');
      const postRestore = restoreNotes.find((n) => n.script === 'post-restore');
      assert.ok(postRestore, `notifications: ${restoreNotes.map((n) => n.script).join(',')}`);
      assert.equal(postRestore.pid, restored.pid);

      await expectContinued(workload, restored.pid, counter, atDump);
    });

    it('a notify handler that throws aborts the dump and leaves the tree running', async function () {
      const dir = tempDir();
      const counter = path.join(dir, 'counter');
      const workload = new CounterWorkload(counter);
      cleanupPids.add(workload.pid);
      await waitForCounter(counter, (n) => n >= 3, '>= 3');

      const err = await client
        .dump({
          pid: workload.pid,
          imagesDir: dir,
          opts: { notify_scripts: true },
          onNotify: (n) => {
            if (n.script === 'pre-dump') throw new Error('refused by test');
          },
        })
        .then(
          () => assert.fail('dump succeeded although the pre-dump handler failed'),
          (e: unknown) => e,
        );
      assert.ok(err instanceof CriuError, String(err));
      assert.equal(err.notifyScript, 'pre-dump');
      assert.match(err.message, /refused by test/);
      const now = await waitForCounter(counter, (n) => n > 0, '> 0');
      await waitForCounter(counter, (n) => n > now, 'still counting after the refused dump');
    });
  });
});

function tail(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8').split('\n').slice(-20).join('\n');
  } catch {
    return '';
  }
}

async function expectContinued(workload: CounterWorkload, restoredPid: number, counter: string, atDump: number): Promise<void> {
  // CRIU restores the original pid; the process is the same shell, now running again.
  assert.equal(restoredPid, workload.pid);
  assert.ok(pidAlive(restoredPid), `restored pid ${restoredPid} is not running`);
  assert.match(fs.readFileSync(`/proc/${restoredPid}/cmdline`, 'utf8'), /^\/bin\/sh\0-c\0/);
  // Its session survived too: it is still its own session leader.
  const stat = fs.readFileSync(`/proc/${restoredPid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  assert.equal(Number(fields[3]), restoredPid, 'restored shell is not its own session leader');

  // From memory, not from zero: a fresh start would append 1, 2, 3... again. The whole file
  // must be one unbroken sequence 1..N running through the dump value.
  await waitForCounter(counter, (n) => n >= atDump + 3, `>= ${atDump + 3}`);
  const values = counterValues(counter);
  const breakAt = values.findIndex((v, i) => v !== i + 1);
  assert.equal(
    breakAt,
    -1,
    `counter sequence broken at line ${breakAt + 1}: ...${values.slice(Math.max(0, breakAt - 3), breakAt + 3).join(',')}... (dumped at ${atDump})`,
  );
}
