// Locks across containers and checkpoints. A restore of container A's
// checkpoint under a new name B reads A's checkpoint directory, so deleting
// that checkpoint (or A itself, which deletes A's checkpoints) must wait, and
// so must a delete during an export. A start of a container that joins A's
// namespaces (network.container, or lxc's share_ipc_with, which only the
// driver reads) has read A's init pid, so A must not go away before the join.
// The window is held open deterministically: the daemon pauses the first
// operation just before its driver acts (OSVIRT_PAUSE_POINTS,
// src/core/faults.ts), the test starts the competing call, waits until that
// call has either finished or reported that it waits for a lock, and only
// then lets the first one go on.
import * as assert from 'node:assert/strict';
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readlinkSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { status as Code, type ServiceError } from '@grpc/grpc-js';
import { CheckpointOptions, ContainerState } from '../src/gen/osvirt/v1/container';
import type { ExportCheckpointResponse } from '../src/gen/osvirt/v1/container_service';
import { locateCriu } from '../src/criu/criu-locate';
import { isRoot, TestDaemon, until, type Client } from './support/daemon';
import { sh } from './support/exec';
import { busybox } from './support/specs';

describe('lock races (pause points)', function () {
  this.timeout(120000);
  let d: TestDaemon | undefined;
  let c: Client;
  let pauses: string;

  before(async function () {
    if (!isRoot()) return this.skip();
    pauses = mkdtempSync(path.join(os.tmpdir(), 'osvirt-pauses-'));
    d = new TestDaemon();
    process.env['OSVIRT_PAUSE_DIR'] = pauses;
    process.env['OSVIRT_PAUSE_POINTS'] = 'restore.before-driver,start.before-driver:joiner,reboot.before-driver:rebooter';
    try {
      c = await d.start();
    } finally {
      delete process.env['OSVIRT_PAUSE_DIR'];
      delete process.env['OSVIRT_PAUSE_POINTS'];
    }
  });
  after(async () => {
    await d?.destroy();
    if (pauses) rmSync(pauses, { recursive: true, force: true });
  });
  afterEach(async () => {
    for (const point of ['restore.before-driver', 'start.before-driver', 'reboot.before-driver'])
      for (const f of [`${point}.paused`, `${point}.go`]) rmSync(path.join(pauses, f), { force: true });
    rmSync(path.join(pauses, 'waiting'), { recursive: true, force: true });
    for (const n of ['src', 'copy', 'joiner', 'rebooter', 'host']) await c.api.containers.deleteContainer({ name: n, force: true, allowMissing: true });
  });
  const needCriu = async function (this: Mocha.Context) {
    if (!(await locateCriu()).ok) this.skip();
  };

  const CKEY = 'checkpoint:src/cp';
  const waitingFor = (key: string) => existsSync(path.join(pauses, 'waiting', encodeURIComponent(key)));

  /** A running container "src" whose init counts, checkpointed (left running) as "cp". */
  async function prepare(bulk = false): Promise<void> {
    const counter = 'i=0; while :; do i=$((i+1)); echo $i > /tmp/counter; sleep 0.05; done';
    await c.api.containers.createContainer({ name: 'src', spec: busybox({ process: { args: ['/bin/sh', '-c', counter] } }) });
    await c.api.containers.startContainer({ name: 'src' });
    await until(async () => Number(await sh(c, 'src', 'cat /tmp/counter')) >= 3, 'the counter');
    // 16 MiB in the root's upper layer (rootfs-diff.tar): far more than gRPC's flow-control window.
    if (bulk) await sh(c, 'src', 'head -c 16777216 /dev/urandom > /bulk');
    await c.api.containers.checkpointContainer({ name: 'src', checkpoint: 'cp', options: CheckpointOptions.fromPartial({ leaveRunning: true }) });
  }

  /**
   * Run `first` until it pauses at `point`, then `compete`; `first` is let go
   * once `compete` has finished or waits for the lock `key`. Returns both
   * outcomes.
   */
  async function race<T>(
    point: string,
    first: () => Promise<unknown>,
    key: string,
    compete: () => Promise<T>,
  ): Promise<{ first: PromiseSettledResult<unknown>; other: PromiseSettledResult<T>; otherWaited: boolean }> {
    const firstSettled = Promise.allSettled([first()]);
    await until(() => {
      if (!existsSync(path.join(pauses, `${point}.paused`))) throw new Error('not paused yet');
      return true;
    }, `the first call to pause at ${point}`);
    let otherDone = false;
    const other = compete().finally(() => (otherDone = true));
    const otherSettled = Promise.allSettled([other]);
    await until(() => {
      if (!otherDone && !waitingFor(key)) throw new Error('the competing call neither finished nor waits');
      return true;
    }, `the competing call to finish or to wait for ${key}`);
    const otherWaited = !otherDone;
    writeFileSync(path.join(pauses, `${point}.go`), '');
    const [f] = await firstSettled;
    const [o] = await otherSettled;
    return { first: f!, other: o!, otherWaited };
  }

  /** Restore src/cp as "copy", racing `compete` while the images are about to be read. */
  const raceRestore = <T>(compete: () => Promise<T>) =>
    race(
      'restore.before-driver',
      () => c.api.containers.restoreContainer({ name: 'src', checkpoint: 'cp', newName: 'copy', tcpEstablished: false, timeout: undefined }),
      CKEY,
      compete,
    );

  function assertFulfilled(res: PromiseSettledResult<unknown>, what: string): void {
    assert.equal(res.status, 'fulfilled', res.status === 'rejected' ? `${what} failed: ${(res.reason as ServiceError).details ?? res.reason}` : '');
  }

  it('DeleteCheckpoint waits for a restore of that checkpoint under a new name', async function () {
    await needCriu.call(this);
    await prepare();
    const r = await raceRestore(() => c.api.containers.deleteCheckpoint({ name: 'src', checkpoint: 'cp', allowMissing: false }));
    assertFulfilled(r.first, 'the restore');
    assert.ok(r.otherWaited, 'DeleteCheckpoint did not wait for the restore');
    assert.equal(r.other.status, 'fulfilled');
    const copy = (await c.api.containers.getContainer({ name: 'copy' })).container!;
    assert.equal(copy.status?.state, ContainerState.CONTAINER_STATE_RUNNING);
    const before = Number(await sh(c, 'copy', 'cat /tmp/counter'));
    await until(async () => Number(await sh(c, 'copy', 'cat /tmp/counter')) > before, 'the restored counter to go on');
    assert.deepEqual((await c.api.containers.listCheckpoints({ name: 'src', pageSize: 0, pageToken: '' })).checkpoints, []);
  });

  it('DeleteContainer of the source waits for a restore of its checkpoint under a new name', async function () {
    await needCriu.call(this);
    await prepare();
    const r = await raceRestore(() => c.api.containers.deleteContainer({ name: 'src', force: true, allowMissing: false }));
    assertFulfilled(r.first, 'the restore');
    assert.ok(r.otherWaited, 'DeleteContainer did not wait for the restore');
    assert.equal(r.other.status, 'fulfilled');
    assert.equal((await c.api.containers.getContainer({ name: 'copy' })).container!.status?.state, ContainerState.CONTAINER_STATE_RUNNING);
    await assert.rejects(c.api.containers.getContainer({ name: 'src' }), (e: ServiceError) => e.code === Code.NOT_FOUND);
    assert.ok(!existsSync(path.join(d!.stateDir, 'checkpoints', 'src', 'cp')), "the source's checkpoint outlived it");
  });

  it('DeleteCheckpoint waits for an export of that checkpoint to finish', async function () {
    await needCriu.call(this);
    await prepare(true);
    const s = c.containers.exportCheckpoint({ name: 'src', checkpoint: 'cp' });
    const chunks: Buffer[] = [];
    const ended = new Promise<void>((resolve, reject) => {
      s.on('end', resolve);
      s.on('error', reject);
    });
    // Hold the stream after its first chunk, with the rest unread.
    await new Promise<void>((resolve) => s.once('data', (m: ExportCheckpointResponse) => (chunks.push(m.data), s.pause(), resolve())));
    let deleted = false;
    const del = c.api.containers.deleteCheckpoint({ name: 'src', checkpoint: 'cp', allowMissing: false }).finally(() => (deleted = true));
    await until(() => {
      if (!deleted && !waitingFor(CKEY)) throw new Error('neither deleted nor waiting');
      return true;
    }, 'DeleteCheckpoint to finish or to wait for the export');
    assert.ok(!deleted, 'DeleteCheckpoint did not wait for the export');
    s.on('data', (m: ExportCheckpointResponse) => chunks.push(m.data));
    s.resume();
    await ended;
    await del;
    // The whole archive came through: it imports as a checkpoint again.
    const importDone = deferred<string>();
    const imp = c.containers.importCheckpoint((e, r) => (e ? importDone.reject(e) : importDone.resolve(r.checkpoint?.name ?? '')));
    imp.write({ message: { $case: 'start', value: { name: 'src', checkpoint: 'back' } } });
    for (const b of chunks) imp.write({ message: { $case: 'data', value: b } });
    imp.end();
    assert.equal(await importDone.promise, 'back');
  });

  it('DeleteContainer of a container whose namespaces another is joining waits for that start', async () => {
    await c.api.containers.createContainer({ name: 'host', spec: busybox() });
    const hostPid = (await c.api.containers.startContainer({ name: 'host' })).container!.status!.initPid;
    const hostNet = readlinkSync(`/proc/${hostPid}/ns/net`);
    await c.api.containers.createContainer({ name: 'joiner', spec: busybox({ network: { mode: { $case: 'container', value: { container: 'host' } } } }) });
    const r = await race(
      'start.before-driver',
      () => c.api.containers.startContainer({ name: 'joiner' }),
      'host',
      () => c.api.containers.deleteContainer({ name: 'host', force: true, allowMissing: false }),
    );
    assertFulfilled(r.first, 'the start of the joiner');
    assert.ok(r.otherWaited, 'DeleteContainer did not wait for the start that joins its namespaces');
    assert.equal(r.other.status, 'fulfilled');
    // The joiner holds the network namespace the host's init had: joined, not merely started.
    const joiner = (await c.api.containers.getContainer({ name: 'joiner' })).container!;
    assert.equal(joiner.status?.state, ContainerState.CONTAINER_STATE_RUNNING);
    assert.equal(readlinkSync(`/proc/${joiner.status!.initPid}/ns/net`), hostNet);
    assert.ok(!existsSync(`/proc/${hostPid}`), "the host's init outlived its delete");
    assert.equal(await sh(c, 'joiner', 'echo joined'), 'joined');
  });

  // share_ipc_with is an lxc option the core does not read: the driver names the peer (Driver.dependencies).
  it('DeleteContainer of a container whose IPC namespace another joins (lxc share_ipc_with) waits for that start', async () => {
    await c.api.containers.createContainer({ name: 'host', spec: busybox() });
    const hostPid = (await c.api.containers.startContainer({ name: 'host' })).container!.status!.initPid;
    const hostIpc = readlinkSync(`/proc/${hostPid}/ns/ipc`);
    await c.api.containers.createContainer({ name: 'joiner', spec: busybox({ driverOptions: { $case: 'lxc', value: { shareIpcWith: 'host' } } }) });
    const r = await race(
      'start.before-driver',
      () => c.api.containers.startContainer({ name: 'joiner' }),
      'host',
      () => c.api.containers.deleteContainer({ name: 'host', force: true, allowMissing: false }),
    );
    assertFulfilled(r.first, 'the start of the joiner');
    assert.ok(r.otherWaited, 'DeleteContainer did not wait for the start that joins its IPC namespace');
    assert.equal(r.other.status, 'fulfilled');
    const joiner = (await c.api.containers.getContainer({ name: 'joiner' })).container!;
    assert.equal(joiner.status?.state, ContainerState.CONTAINER_STATE_RUNNING);
    assert.equal(readlinkSync(`/proc/${joiner.status!.initPid}/ns/ipc`), hostIpc);
    assert.ok(!existsSync(`/proc/${hostPid}`), "the host's init outlived its delete");
    assert.equal(await sh(c, 'joiner', 'echo joined'), 'joined');
  });

  // A reboot the init asks for is a start again: it reads the peer's init pid and joins it.
  it('DeleteContainer of a container whose namespaces a rebooting container joins waits for that reboot', async () => {
    // busybox init as a system init (it reboots), with an inittab that starts nothing.
    const base = mkdtempSync(path.join(os.tmpdir(), 'osvirt-reboot-root-'));
    chmodSync(base, 0o755);
    const root = path.join(base, 'rootfs');
    for (const dir of ['bin', 'sbin', 'etc', 'proc', 'sys', 'dev', 'tmp']) mkdirSync(path.join(root, dir), { recursive: true });
    copyFileSync('/bin/busybox', path.join(root, 'bin', 'busybox'));
    chmodSync(path.join(root, 'bin', 'busybox'), 0o755);
    for (const applet of ['sh', 'echo', 'reboot']) symlinkSync('busybox', path.join(root, 'bin', applet));
    symlinkSync('../bin/busybox', path.join(root, 'sbin', 'init'));
    writeFileSync(path.join(root, 'etc', 'inittab'), '::sysinit:/bin/echo booted\n');
    try {
      await c.api.containers.createContainer({ name: 'host', spec: busybox() });
      const hostPid = (await c.api.containers.startContainer({ name: 'host' })).container!.status!.initPid;
      const hostNet = readlinkSync(`/proc/${hostPid}/ns/net`);
      await c.api.containers.createContainer({
        name: 'rebooter',
        spec: busybox({
          rootfs: { source: { $case: 'path', value: root } },
          process: { args: ['/sbin/init'] },
          network: { mode: { $case: 'container', value: { container: 'host' } } },
        }),
      });
      const before = (await c.api.containers.startContainer({ name: 'rebooter' })).container!.status!.initPid;
      const r = await race(
        'reboot.before-driver',
        // reboot(2) in a pid namespace ends its init with SIGHUP; the exec itself ends with it.
        () => sh(c, 'rebooter', 'reboot -f').catch(() => ''),
        'host',
        () => c.api.containers.deleteContainer({ name: 'host', force: true, allowMissing: false }),
      );
      assert.ok(r.otherWaited, 'DeleteContainer did not wait for the reboot that joins its namespaces');
      assert.equal(r.other.status, 'fulfilled');
      const after = await until(async () => {
        const s = (await c.api.containers.getContainer({ name: 'rebooter' })).container!.status!;
        if (s.state !== ContainerState.CONTAINER_STATE_RUNNING || !s.initPid || s.initPid === before)
          throw new Error(`state ${s.state}, init ${s.initPid}: ${s.message}`);
        return s;
      }, 'the rebooted container to run with a new init');
      assert.equal(readlinkSync(`/proc/${after.initPid}/ns/net`), hostNet);
      assert.ok(!existsSync(`/proc/${hostPid}`), "the host's init outlived its delete");
    } finally {
      await c.api.containers.deleteContainer({ name: 'rebooter', force: true, allowMissing: true });
      rmSync(base, { recursive: true, force: true });
    }
  });
});

function deferred<T>(): { promise: Promise<T>; resolve: (v: T) => void; reject: (e: unknown) => void } {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((a, b) => ((resolve = a), (reject = b)));
  return { promise, resolve, reject };
}
