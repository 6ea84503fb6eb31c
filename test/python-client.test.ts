// Python on both sides of the daemon: the Python process driver registered
// from a manifest (the daemon starts it, reads its handshake, health-checks
// it), and the Python client example (stubs generated from proto/) driving
// a container through create, start, exec, checkpoint-or-skip and delete.
// A daemon killed with -9 takes the plugin it started with it (the stdin
// lifeline), leaving no process behind.
import { strict as assert } from 'node:assert';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { DriverHealth } from '../src/gen/osvirt/v1/system_service';
import { connect } from '../src/client';
import { runDaemonSuite } from '../src/conformance/daemon-suite';
import { formatReport } from '../src/conformance/report';
import { buildPythonDriver, pythonTemplate } from '../src/conformance/repo-drivers';
import { pidAlive } from '../src/host/processes';
import { repoPath } from '../src/paths';
import { isRoot, TestDaemon, until } from './support/daemon';

const PYTHON = '/usr/bin/python3'; // Debian's, with python3-grpcio and python3-protobuf

/** The daemon's children running the Python driver (it may have other, short-lived helpers). */
function pluginChildren(pid: number): number[] {
  let kids: number[] = [];
  try {
    kids = execFileSync('pgrep', ['-P', String(pid)], { encoding: 'utf8' })
      .split('\n')
      .filter(Boolean)
      .map(Number);
  } catch {
    return [];
  }
  return kids.filter((k) => {
    try {
      return readFileSync(`/proc/${k}/cmdline`, 'utf8').includes('osvirt-process-driver');
    } catch {
      return false;
    }
  });
}

describe('Python driver and Python client through the daemon', function () {
  let d: TestDaemon;
  let pluginPid = 0;

  before(async function () {
    if (!isRoot()) this.skip();
    buildPythonDriver();
    execFileSync('bash', [repoPath('clients', 'python', 'generate.sh')]);
    d = new TestDaemon();
    const pluginDir = path.join(d.dir, 'plugins.d');
    mkdirSync(pluginDir, { recursive: true });
    writeFileSync(
      path.join(pluginDir, 'process.json'),
      JSON.stringify({ name: 'process', executable: repoPath('drivers', 'python-process', 'osvirt-process-driver'), args: ['--log-level', 'warning'] }),
    );
    await d.start(['--plugin-dir', pluginDir]);
  });

  after(async () => {
    await d?.destroy();
    if (pluginPid && pidAlive(pluginPid)) process.kill(pluginPid, 'SIGKILL');
  });

  it('starts the Python driver from its manifest and lists it READY with its capabilities', async () => {
    const drv = (await d.client.api.system.listDrivers({})).drivers.find((x) => x.name === 'process');
    assert.equal(drv?.health, DriverHealth.DRIVER_HEALTH_READY, JSON.stringify(drv));
    assert.equal(drv.external, true);
    assert.deepEqual([...drv.capabilities].sort(), ['exec', 'pause', 'stats']);
    const kids = pluginChildren(d.proc!.pid!);
    assert.equal(kids.length, 1, `the daemon started one plugin: ${kids.join(', ')}`);
    pluginPid = kids[0]!;
  });

  it('passes the daemon-level conformance part for the Python driver', async () => {
    const c = connect({ address: `unix://${d.socket}` });
    try {
      const r = await runDaemonSuite(c, 'process', pythonTemplate());
      assert.ok(
        r.results.every((x) => x.outcome === 'pass'),
        formatReport(r),
      );
    } finally {
      c.close();
    }
  });

  it('the Python client example creates, starts, execs in, skips the checkpoint (with the reason) and deletes a container', async () => {
    const res = spawnSync(
      PYTHON,
      [repoPath('clients', 'python', 'example.py'), '--connect', `unix://${d.socket}`, '--driver', 'process', '--name', 'py-client'],
      { encoding: 'utf8', timeout: 60_000 },
    );
    assert.equal(res.status, 0, res.stdout + res.stderr);
    const out = res.stdout;
    assert.match(out, /services \(server reflection\): .*osvirt\.v1\.ContainerService/);
    assert.match(out, /==> create py-client/);
    assert.match(out, /==> running, init pid \d+/);
    assert.match(out, /exec: stdout 'hello from Linux in osvirt\\n', stderr '', exit code 3/);
    assert.match(out, /skipping checkpoint: driver process does not declare the checkpoint capability/);
    assert.match(out, /==> delete py-client\n==> done/);
    const list = await d.client.api.containers.listContainers({ pageSize: 100, pageToken: '', driver: '', states: [] });
    assert.ok(!list.containers.some((x) => x.name === 'py-client'), 'the example deleted its container');
    const initPid = Number(/init pid (\d+)/.exec(out)![1]);
    assert.ok(!pidAlive(initPid), "the container's process is gone");
  });

  it('a daemon killed with -9 takes the plugin it started with it; the next daemon starts it again', async () => {
    assert.ok(pluginPid && pidAlive(pluginPid));
    await d.kill();
    await until(() => !pidAlive(pluginPid), 'the plugin to exit after the daemon died', 10_000);
    pluginPid = 0;
    await d.start(['--plugin-dir', path.join(d.dir, 'plugins.d')]);
    const drv = (await d.client.api.system.listDrivers({})).drivers.find((x) => x.name === 'process');
    assert.equal(drv?.health, DriverHealth.DRIVER_HEALTH_READY, JSON.stringify(drv));
    pluginPid = pluginChildren(d.proc!.pid!)[0] ?? 0;
    assert.ok(pluginPid && pidAlive(pluginPid), 'a new plugin process');
  });
});
