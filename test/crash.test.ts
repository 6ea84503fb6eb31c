// Crash consistency: the daemon is killed with SIGKILL at exact points of an
// operation (OSVIRT_FAULT_POINTS, src/core/faults.ts), and the next daemon
// must find each container either fully there or fully gone.
import * as assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { ContainerSpec, ContainerState, type DeepPartial } from '../src/gen/osvirt/v1/container';
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
    for (const f of [
      path.join(state, 'containers', `${name}.json`),
      path.join(state, 'containers', `${name}.intent.json`),
      path.join(state, 'drivers', 'lxc', 'containers', name),
    ])
      if (existsSync(f)) found.push(f);
    for (const h of readdirSync('/sys/fs/cgroup'))
      if (existsSync(path.join('/sys/fs/cgroup', h, 'osvirt', name))) found.push(path.join('/sys/fs/cgroup', h, 'osvirt', name));
    return found;
  }

  /**
   * What a container that is not running may have left on the host, seen
   * from the host: its cgroups (and processes in them), monitors, mounts under its state, veths on the daemon's
   * bridge, port rules naming it. Empty when nothing is left.
   */
  function hostTraces(name: string): string[] {
    const found: string[] = [];
    const walk = (dir: string): void => {
      let entries: string[];
      try {
        entries = readdirSync(dir);
      } catch {
        return;
      }
      const procs = existsSync(path.join(dir, 'cgroup.procs')) ? readFileSync(path.join(dir, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean) : [];
      if (procs.length) found.push(`processes ${procs.join(',')} in ${dir}`);
      for (const e of entries) if (!e.includes('.')) walk(path.join(dir, e));
    };
    for (const h of readdirSync('/sys/fs/cgroup')) {
      const dir = path.join('/sys/fs/cgroup', h, 'osvirt', name);
      if (existsSync(dir)) found.push(`cgroup ${dir}`);
      walk(dir);
    }
    const cdir = path.join(d!.stateDir, 'drivers', 'lxc', 'containers', name);
    try {
      found.push(
        ...execFileSync('pgrep', ['-af', `osvirt-helper .*${cdir}/`], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] })
          .split('\n')
          .filter(Boolean)
          .map((l) => `monitor ${l}`),
      );
    } catch {
      // none (pgrep exits 1)
    }
    for (const l of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) if (l.split(' ')[4]?.startsWith(cdir)) found.push(`mount ${l.split(' ')[4]}`);
    if (existsSync(`/sys/class/net/${d!.bridge}`)) found.push(...readdirSync(`/sys/class/net/${d!.bridge}/brif`).map((i) => `veth ${i} on ${d!.bridge}`));
    try {
      const rules = execFileSync('nft', ['list', 'table', 'ip', `osvirt-${d!.bridge}`], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
      found.push(
        ...rules
          .split('\n')
          .filter((l) => l.includes(`"osvirt:${name}"`))
          .map((l) => `nft rule ${l.trim()}`),
      );
    } catch {
      // no table: no rules
    }
    return found;
  }

  /**
   * Stops the daemon cleanly (SIGTERM) and checks the host holds nothing of
   * its state: no mount under its directory (CRIU's run tmpfs included), no
   * monitor, no veth on its bridge, no port rule.
   */
  async function stopAndAssertClean(): Promise<void> {
    await d!.stop();
    const left: string[] = [];
    for (const l of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) if (l.split(' ')[4]?.startsWith(d!.dir)) left.push(`mount ${l.split(' ')[4]}`);
    try {
      left.push(
        ...execFileSync('pgrep', ['-af', `osvirt-helper .*${d!.dir}/`], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] })
          .split('\n')
          .filter(Boolean),
      );
    } catch {
      // none
    }
    if (existsSync(`/sys/class/net/${d!.bridge}`)) left.push(...readdirSync(`/sys/class/net/${d!.bridge}/brif`).map((i) => `veth ${i}`));
    try {
      left.push(
        ...execFileSync('nft', ['list', 'table', 'ip', `osvirt-${d!.bridge}`], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] })
          .split('\n')
          .filter((l) => /"osvirt:[a-z0-9-]+"/.test(l)),
      );
    } catch {
      // no table
    }
    assert.deepEqual(left, [], 'a stopped daemon with no containers leaves nothing on the host');
  }

  const bridgedServer = (extra: DeepPartial<ContainerSpec> = {}) =>
    busybox({
      network: { mode: { $case: 'bridge', value: {} } },
      ports: [{ hostPort: 18290, containerPort: 8080, protocol: 'tcp', hostIp: '' }],
      process: { args: ['/bin/sh', '-c', 'i=0; while :; do i=$((i+1)); echo $i > /tmp/counter; sleep 0.05; done'] },
      ...extra,
    });

  // CRIU 4.2 cannot restore a veth into a user namespace (HOST-FACTS): checkpointed bridged containers are privileged.
  const CRIU_VETH: DeepPartial<ContainerSpec> = { security: { privileged: true } };

  /** After a restart: the container can be started, runs, and is deleted without a trace. */
  async function usable(c: Client, name: string): Promise<void> {
    await c.api.containers.startContainer({ name });
    assert.equal((await execIn(c, name, ['/bin/true'])).exitCode, 0);
    await c.api.containers.deleteContainer({ name, force: true, allowMissing: false });
    assert.deepEqual(hostTraces(name), []);
  }

  for (const point of ['start.before-go', 'start.after-launch']) {
    it(`leaves nothing running or published when a start dies at ${point}, and the container starts again`, async () => {
      const c = await faulty(point);
      await c.api.containers.createContainer({ name: 'starter', spec: bridgedServer() });
      await assert.rejects(c.api.containers.startContainer({ name: 'starter' }));
      const c2 = await restart();
      const st = (await c2.api.containers.getContainer({ name: 'starter' })).container!.status!;
      // A start that did not answer did not happen: the tree it began is gone with its veth and port rules.
      assert.notEqual(ContainerState[st.state], 'CONTAINER_STATE_RUNNING');
      await until(() => hostTraces('starter').length === 0 || undefined, "the interrupted start's leftovers to be gone", 5000).catch(() =>
        assert.deepEqual(hostTraces('starter'), []),
      );
      await usable(c2, 'starter');
      await stopAndAssertClean();
    });
  }

  it('abandons a checkpoint whose daemon died while CRIU dumped: the workload runs on, no checkpoint is left', async function () {
    if (!(await locateCriu()).ok) return this.skip();
    const c = await faulty('checkpoint.during-dump');
    await c.api.containers.createContainer({ name: 'midump', spec: bridgedServer(CRIU_VETH) });
    await c.api.containers.startContainer({ name: 'midump' });
    const file = path.join(d!.stateDir, 'drivers', 'lxc', 'containers', 'midump', 'upper', 'tmp', 'counter');
    await until(() => existsSync(file) && Number(readFileSync(file, 'utf8')) >= 3, 'the counter');
    await assert.rejects(c.api.containers.checkpointContainer({ name: 'midump', checkpoint: 'cut', options: undefined }));
    const c2 = await restart();
    const st = (await c2.api.containers.getContainer({ name: 'midump' })).container!.status!;
    const cps = (await c2.api.containers.listCheckpoints({ name: 'midump', pageSize: 100, pageToken: '' })).checkpoints.map((x) => x.name);
    const dirs = existsSync(path.join(d!.stateDir, 'checkpoints', 'midump')) ? readdirSync(path.join(d!.stateDir, 'checkpoints', 'midump')) : [];
    assert.deepEqual(dirs, cps, 'no checkpoint directory the API does not show');
    if (cps.length) {
      // CRIU finished before it noticed: then the dump is complete and registered.
      assert.equal(ContainerState[st.state], 'CONTAINER_STATE_STOPPED');
      await c2.api.containers.restoreContainer({ name: 'midump', checkpoint: 'cut', newName: '', tcpEstablished: false, timeout: undefined });
    } else {
      assert.equal(ContainerState[st.state], 'CONTAINER_STATE_RUNNING', 'the dump failed, so CRIU resumed the tasks');
    }
    const at = Number(readFileSync(file, 'utf8'));
    await until(() => Number(readFileSync(file, 'utf8')) > at, 'the workload to run on');
    await c2.api.containers.deleteContainer({ name: 'midump', force: true, allowMissing: false });
    assert.deepEqual(hostTraces('midump'), []);
    await stopAndAssertClean();
  });

  for (const point of ['restore.during-criu', 'restore.after-criu']) {
    it(`keeps the checkpoint restorable and nothing running when a restore dies at ${point}`, async function () {
      if (!(await locateCriu()).ok) return this.skip();
      const c = await faulty(point);
      await c.api.containers.createContainer({ name: 'phoenix', spec: bridgedServer(CRIU_VETH) });
      await c.api.containers.startContainer({ name: 'phoenix' });
      const file = path.join(d!.stateDir, 'drivers', 'lxc', 'containers', 'phoenix', 'upper', 'tmp', 'counter');
      await until(() => existsSync(file) && Number(readFileSync(file, 'utf8')) >= 3, 'the counter');
      await c.api.containers.checkpointContainer({ name: 'phoenix', checkpoint: 'ash', options: undefined });
      await assert.rejects(c.api.containers.restoreContainer({ name: 'phoenix', checkpoint: 'ash', newName: '', tcpEstablished: false, timeout: undefined }));
      const c2 = await restart();
      const st = (await c2.api.containers.getContainer({ name: 'phoenix' })).container!.status!;
      assert.notEqual(ContainerState[st.state], 'CONTAINER_STATE_RUNNING');
      assert.deepEqual(
        (await c2.api.containers.listCheckpoints({ name: 'phoenix', pageSize: 100, pageToken: '' })).checkpoints.map((x) => x.name),
        ['ash'],
      );
      await until(() => hostTraces('phoenix').length === 0 || undefined, "the interrupted restore's leftovers to be gone", 5000).catch(() =>
        assert.deepEqual(hostTraces('phoenix'), []),
      );
      const atDump = Number(readFileSync(file, 'utf8'));
      await c2.api.containers.restoreContainer({ name: 'phoenix', checkpoint: 'ash', newName: '', tcpEstablished: false, timeout: undefined });
      await until(() => Number(readFileSync(file, 'utf8')) > atDump, 'the restored counter to go on');
      await c2.api.containers.deleteContainer({ name: 'phoenix', force: true, allowMissing: false });
      assert.deepEqual(hostTraces('phoenix'), []);
      await stopAndAssertClean();
    });
  }

  const loHas = (addr: string) => execFileSync('ip', ['-o', 'addr', 'show', 'dev', 'lo'], { encoding: 'utf8' }).includes(` ${addr}/`);

  it("takes back a jail's host address when its start died after the launch", async () => {
    const addr = `198.51.100.${100 + (process.pid % 100)}`;
    const c = await faulty('start.after-launch');
    const spec = ContainerSpec.fromPartial({
      driver: 'jail',
      rootfs: { source: { $case: 'template', value: 'busybox' } },
      driverOptions: { $case: 'jail', value: { persist: true, ip4Addr: [addr] } },
    });
    await c.api.containers.createContainer({ name: 'jcut', spec });
    await assert.rejects(c.api.containers.startContainer({ name: 'jcut' }));
    assert.ok(loHas(addr), 'the jail had put its address on lo');
    const c2 = await restart();
    assert.ok(!loHas(addr), 'recover removed the address of the jail that is not running');
    assert.deepEqual(hostTraces('jcut'), []);
    await c2.api.containers.startContainer({ name: 'jcut' });
    assert.ok(loHas(addr));
    await c2.api.containers.deleteContainer({ name: 'jcut', force: true, allowMissing: false });
    assert.ok(!loHas(addr));
    await stopAndAssertClean();
  });

  it("takes back a vserver guest's address when its start died after the launch", async () => {
    const addr = `10.${150 + (process.pid % 50)}.${(process.pid >> 6) % 250}.9`;
    const c = await faulty('start.after-launch');
    const spec = ContainerSpec.fromPartial({
      driver: 'vserver',
      rootfs: { source: { $case: 'template', value: 'busybox' } },
      driverOptions: { $case: 'vserver', value: { context: 377, network: { interfaces: [{ name: '0', ip: addr, dev: 'lo', prefix: 32 }] } } },
    });
    await c.api.containers.createContainer({ name: 'vcut', spec });
    await assert.rejects(c.api.containers.startContainer({ name: 'vcut' }));
    assert.ok(loHas(addr), 'the guest had put its address on lo');
    const c2 = await restart();
    assert.ok(!loHas(addr), 'recover removed the address of the guest that is not running');
    assert.deepEqual(hostTraces('vcut'), []);
    await usable(c2, 'vcut');
    assert.ok(!loHas(addr));
    await stopAndAssertClean();
  });

  it('registers a complete dump whose daemon died before committing it: STOPPED with its checkpoint, restorable', async function () {
    if (!(await locateCriu()).ok) return this.skip();
    const c = await faulty('checkpoint.after-dump');
    const counter = 'i=0; while :; do i=$((i+1)); echo $i > /tmp/counter; sleep 0.05; done';
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
    await c2.api.containers.deleteContainer({ name: 'saved', force: true, allowMissing: false });
    await stopAndAssertClean();
  });

  it('removes what a create cut short left (driver state and id range, no definition)', async () => {
    const c = await faulty('create.after-driver');
    await assert.rejects(c.api.containers.createContainer({ name: 'halfborn', spec: busybox() }));
    assert.ok(existsSync(path.join(d!.stateDir, 'drivers', 'lxc', 'containers', 'halfborn')), 'the driver had made its state');
    const c2 = await restart();
    assert.deepEqual(
      (await c2.api.containers.listContainers({ pageSize: 100, pageToken: '', driver: '', states: [] })).containers.map((x) => x.name),
      [],
    );
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
      assert.deepEqual(
        list.containers.map((x) => `${x.name} ${ContainerState[x.status!.state]}`),
        [],
        'the container is fully gone',
      );
      assert.deepEqual(traces('doomed'), []);
      assert.ok(!existsSync(`/proc/${pid}`) || /^State:\s+Z/m.test(readFileSync(`/proc/${pid}/status`, 'utf8')), 'its init is gone');
      // The name is free again.
      await c2.api.containers.createContainer({ name: 'doomed', spec: busybox() });
      await c2.api.containers.deleteContainer({ name: 'doomed', force: true, allowMissing: false });
      await stopAndAssertClean();
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
      } else if (which === 1) note(`resume ${await outcome(c.api.containers.resumeContainer({ name: 'racer' }))}`);
      else {
        let r: string;
        try {
          const x = await execIn(c, 'racer', ['/bin/true']);
          // 137: the command got in before the kill and died with the container (SIGKILL), as docker exec reports it.
          r = x.exitCode === 0 ? 'OK' : x.exitCode === 137 && !x.stderr.trim() ? 'KILLED_WITH_CONTAINER' : `exit ${x.exitCode}: ${x.stderr.trim()}`;
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
    const bad = [...seen.keys()].filter((k) => !/ (OK|FAILED_PRECONDITION|KILLED_WITH_CONTAINER)$/.test(k));
    assert.deepEqual(bad, [], JSON.stringify(Object.fromEntries(seen)));
    await c.api.containers.deleteContainer({ name: 'racer', force: true, allowMissing: false });
  });
});
