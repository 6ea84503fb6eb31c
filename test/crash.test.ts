// Crash consistency: the daemon is killed with SIGKILL at exact points of an
// operation (OSVIRT_FAULT_POINTS, src/core/faults.ts), and the next daemon
// must find each container either fully there or fully gone.
import * as assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { ContainerState } from '../src/gen/osvirt/v1/container';
import { isRoot, TestDaemon, until, type Client } from './support/daemon';
import { busybox } from './support/specs';

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
