// Crash consistency: the daemon is killed with SIGKILL at exact points of an
// operation (OSVIRT_FAULT_POINTS, src/core/faults.ts), and the next daemon
// must find each container either fully there or fully gone.
import * as assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { ContainerState } from '../src/gen/osvirt/v1/container';
import { isRoot, TestDaemon, until, type Client } from './support/daemon';
import { busybox } from './support/specs';
import { locateCriu } from '../src/criu/criu-locate';
import { execIn } from './support/exec';

describe('crash consistency (fault points)', function () {
  this.timeout(120000);
  let d: TestDaemon | undefined;

  before(function () {
    if (!isRoot()) this.skip();
  });
  afterEach(async () => {
    delete process.env['OSVIRT_FAULT_POINTS'];
    await d?.destroy();
    d = undefined;
  });

  /** A daemon that kills itself at `point`. */
  async function faulty(point: string): Promise<Client> {
    d = new TestDaemon();
    process.env['OSVIRT_FAULT_POINTS'] = point;
    try {
      return await d.start();
    } finally {
      delete process.env['OSVIRT_FAULT_POINTS'];
    }
  }

  /** Waits for the daemon to have killed itself, then starts the next one on the same state. */
  async function restart(): Promise<Client> {
    const p = d!.proc!;
    await until(() => p.exitCode !== null || p.signalCode !== null, 'the daemon to die at its fault point');
    assert.equal(p.signalCode, 'SIGKILL', d!.stderr);
    return d!.start();
  }

  function traces(name: string): string[] {
    const found: string[] = [];
    const state = d!.stateDir;
    for (const f of [path.join(state, 'containers', `${name}.json`), path.join(state, 'containers', `${name}.intent.json`), path.join(state, 'drivers', 'lxc', 'containers', name)]) if (existsSync(f)) found.push(f);
    for (const h of readdirSync('/sys/fs/cgroup')) if (existsSync(path.join('/sys/fs/cgroup', h, 'osvirt', name))) found.push(path.join('/sys/fs/cgroup', h, 'osvirt', name));
    return found;
  }

  it('registers a complete dump whose daemon died before committing it: STOPPED with its checkpoint, restorable', async function () {
    if (!(await locateCriu()).ok) return this.skip();
    const c = await faulty('checkpoint.after-dump');
    const counter = "i=0; while :; do i=$((i+1)); echo $i > /tmp/counter; sleep 0.05; done";
    await c.api.containers.createContainer({ name: 'saved', spec: busybox({ process: { args: ['/bin/sh', '-c', counter] } }) });
    await c.api.containers.startContainer({ name: 'saved' });
    const file = path.join(d!.stateDir, 'drivers', 'lxc', 'containers', 'saved', 'upper', 'tmp', 'counter');
    await until(() => existsSync(file) && Number(readFileSync(file, 'utf8')) >= 3, 'the counter');
    await assert.rejects(c.api.containers.checkpointContainer({ name: 'saved', checkpoint: 'late', options: undefined }));
    const c2 = await restart();
    const cps = (await c2.api.containers.listCheckpoints({ name: 'saved', pageSize: 100, pageToken: '' })).checkpoints.map((x) => x.name);
    assert.deepEqual(cps, ['late'], 'the complete dump is listed');
    const st = (await c2.api.containers.getContainer({ name: 'saved' })).container!.status!;
    assert.equal(ContainerState[st.state], 'CONTAINER_STATE_STOPPED');
    const atDump = Number(readFileSync(file, 'utf8'));
    await c2.api.containers.restoreContainer({ name: 'saved', checkpoint: 'late', newName: '', tcpEstablished: false, timeout: undefined });
    await until(() => Number(readFileSync(file, 'utf8')) > atDump, 'the counter to go on from its checkpointed value');
    assert.ok(Number(readFileSync(file, 'utf8')) < atDump + 40, 'it continued, it did not start over');
    // No checkpoint directory is left that the API does not show.
    assert.deepEqual(readdirSync(path.join(d!.stateDir, 'checkpoints', 'saved')), ['late']);
  });

  it('removes what a create cut short left (driver state and id range, no definition)', async () => {
    const c = await faulty('create.after-driver');
    await assert.rejects(c.api.containers.createContainer({ name: 'halfborn', spec: busybox() }));
    assert.ok(existsSync(path.join(d!.stateDir, 'drivers', 'lxc', 'containers', 'halfborn')), 'the driver had made its state');
    const c2 = await restart();
    assert.deepEqual((await c2.api.containers.listContainers({ pageSize: 100, pageToken: '', driver: '', states: [] })).containers.map((x) => x.name), []);
    assert.deepEqual(traces('halfborn'), []);
    assert.doesNotMatch(readFileSync(path.join(d!.stateDir, 'drivers', 'idmap.json'), 'utf8'), /halfborn/, 'its id range is free again');
    await c2.api.containers.createContainer({ name: 'halfborn', spec: busybox() });
    await c2.api.containers.deleteContainer({ name: 'halfborn', force: true, allowMissing: false });
  });

  for (const point of ['delete.after-intent', 'delete.after-driver']) {
    it(`finishes a force-delete of a running container interrupted at ${point}: gone, not CRASHED`, async () => {
      const c = await faulty(point);
      await c.api.containers.createContainer({ name: 'doomed', spec: busybox() });
      const pid = (await c.api.containers.startContainer({ name: 'doomed' })).container!.status!.initPid;
      await assert.rejects(c.api.containers.deleteContainer({ name: 'doomed', force: true, allowMissing: false }));
      const c2 = await restart();
      const list = await c2.api.containers.listContainers({ pageSize: 100, pageToken: '', driver: '', states: [] });
      assert.deepEqual(list.containers.map((x) => `${x.name} ${ContainerState[x.status!.state]}`), [], 'the container is fully gone');
      assert.deepEqual(traces('doomed'), []);
      assert.ok(!existsSync(`/proc/${pid}`) || /^State:\s+Z/m.test(readFileSync(`/proc/${pid}/status`, 'utf8')), 'its init is gone');
      // The name is free again.
      await c2.api.containers.createContainer({ name: 'doomed', spec: busybox() });
      await c2.api.containers.deleteContainer({ name: 'doomed', force: true, allowMissing: false });
    });
  }
});

describe('races between KillContainer and the next call', function () {
  this.timeout(120000);
  let d: TestDaemon;
  let c: Client;
  before(async function () {
    if (!isRoot()) return this.skip();
    d = new TestDaemon();
    c = await d.start();
  });
  after(async () => {
    await d?.destroy();
  });

  /** The gRPC status code name of a failed call, or OK. */
  async function outcome(p: Promise<unknown>): Promise<string> {
    try {
      await p;
      return 'OK';
    } catch (e) {
      const code = (e as { code?: number }).code;
      return code === 9 ? 'FAILED_PRECONDITION' : code === 13 ? `INTERNAL: ${(e as Error).message}` : `code ${code}: ${(e as Error).message}`;
    }
  }

  it('answers Pause, Resume and Exec right after a Kill with OK or FAILED_PRECONDITION, never INTERNAL or exit 125', async () => {
    await c.api.containers.createContainer({ name: 'racer', spec: busybox() });
    const seen = new Map<string, number>();
    const note = (what: string) => seen.set(what, (seen.get(what) ?? 0) + 1);
    for (let i = 0; i < 40; i++) {
      await c.api.containers.startContainer({ name: 'racer' });
      await c.api.containers.killContainer({ name: 'racer', signal: 9 });
      const which = i % 3;
      if (which === 0) {
        note(`pause ${await outcome(c.api.containers.pauseContainer({ name: 'racer' }))}`);
        // A pause that beat the kill's effect froze the dying init: thaw it so the kill can finish.
        await c.api.containers.resumeContainer({ name: 'racer' }).catch(() => undefined);
      }
      else if (which === 1) note(`resume ${await outcome(c.api.containers.resumeContainer({ name: 'racer' }))}`);
      else {
        let r: string;
        try {
          const x = await execIn(c, 'racer', ['/bin/true']);
          r = x.exitCode === 0 ? 'OK' : `exit ${x.exitCode}: ${x.stderr.trim()}`;
        } catch (e) {
          r = (e as { code?: number }).code === 9 ? 'FAILED_PRECONDITION' : `error ${(e as Error).message}`;
        }
        note(`exec ${r}`);
      }
      await until(async () => {
        const s = (await c.api.containers.getContainer({ name: 'racer' })).container!.status!.state;
        return s !== ContainerState.CONTAINER_STATE_RUNNING && s !== ContainerState.CONTAINER_STATE_PAUSED;
      }, 'the kill to be recorded');
    }
    const bad = [...seen.keys()].filter((k) => !/ (OK|FAILED_PRECONDITION)$/.test(k));
    assert.deepEqual(bad, [], JSON.stringify(Object.fromEntries(seen)));
    await c.api.containers.deleteContainer({ name: 'racer', force: true, allowMissing: false });
  });
});
