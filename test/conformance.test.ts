// The driver conformance suite against every driver in this repository:
// lxc in process and served over gRPC (with the same results case by
// case), the Python process driver, and the `osvirt conformance` CLI's
// report and exit code, including for a driver that does not conform.
import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { runDriverSuite } from '../src/conformance/driver-suite';
import { formatReport, type Report } from '../src/conformance/report';
import { buildPythonDriver, pythonTemplate, runInProcess, serveLxc, servePython } from '../src/conformance/repo-drivers';
import { defaultTemplate } from '../src/conformance/spec-template';
import { RemoteDriver } from '../src/plugin/remote-driver';
import { spawnPlugin, type SpawnedPlugin } from '../src/plugin/spawn-plugin';
import { repoPath } from '../src/paths';
import { isRoot } from './support/daemon';
import { removeLeftovers } from '../src/testing/leftovers';

// Nothing is skipped: checkpoint/restore runs too when the driver declares it.
const SKIP = {};

function assertConformant(r: Report): void {
  assert.ok(!r.error && r.results.every((x) => x.outcome !== 'fail'), formatReport(r));
}

function osvirt(args: string[]) {
  return spawnSync(process.execPath, [repoPath('dist', 'src', 'cli', 'main.js'), ...args], { encoding: 'utf8', timeout: 120_000 });
}

describe('driver conformance suite', function () {
  let dir: string;
  const bridge = `ovcf${process.pid % 10000}`;
  const plugins: SpawnedPlugin[] = [];

  before(function () {
    if (!isRoot()) this.skip();
    dir = mkdtempSync(path.join(os.tmpdir(), 'osvirt-conf-test-'));
  });
  after(async () => {
    for (const p of plugins) await p.stop();
    if (dir) await removeLeftovers({ dir, bridges: [bridge] });
  });

  it('the lxc driver conforms in process and over gRPC, with identical results case by case', async () => {
    // In process, hosted like osvirtd hosts it (its own process, see src/conformance/in-process.ts).
    const inproc = await runInProcess('lxc', path.join(dir, 'lxc-local'), { skip: SKIP, bridge });

    const served = await serveLxc(dir);
    plugins.push(served);
    assert.match(served.handshake.address, /lxc\.sock$/);
    assert.equal(served.handshake.protocolVersion, 1);
    const remote = new RemoteDriver('lxc', served.endpoint);
    const grpc = await runDriverSuite(remote, 'lxc (gRPC)', { template: defaultTemplate('lxc'), skip: SKIP });
    await remote.close();

    assertConformant(inproc);
    assertConformant(grpc);
    // Stray exceptions in the hosting process are reported apart (a warning): not a contract outcome.
    const outcomes = (r: Report) => r.results.filter((x) => !x.id.startsWith('process.')).map((x) => `${x.id}: ${x.outcome}`);
    assert.deepEqual(outcomes(grpc), outcomes(inproc), `in process:\n${formatReport(inproc)}\nover gRPC:\n${formatReport(grpc)}`);
    assert.ok(inproc.results.filter((x) => x.outcome === 'pass').length >= 20, formatReport(inproc));
    for (const id of [
      'lifecycle.order',
      'wait.exit-code',
      'concurrency.different-ids',
      'exec.output-and-exit',
      'console.io',
      'pause.freeze-thaw',
      'dependencies.template',
    ]) {
      assert.equal(grpc.results.find((x) => x.id === id)?.outcome, 'pass', `${id} over gRPC:\n${formatReport(grpc)}`);
    }
    // Nothing left behind: no container directories in either state dir.
    assert.deepEqual(readdirSync(path.join(dir, 'lxc-local', 'containers')), []);
    assert.deepEqual(readdirSync(path.join(dir, 'lxc-plugin-state', 'containers')), []);
  });

  it('the Python process driver conforms over gRPC and cleans up its processes and cgroups', async () => {
    buildPythonDriver();
    const py = await servePython(dir);
    plugins.push(py);
    const remote = new RemoteDriver('process', py.endpoint);
    const r = await runDriverSuite(remote, 'process (Python)', { template: pythonTemplate() });
    await remote.close();
    assertConformant(r);
    assert.equal(r.driver, 'process');
    assert.ok(r.results.filter((x) => x.outcome === 'pass').length >= 20, formatReport(r));
    // Undeclared capabilities are skipped with the reason, and refused as UNIMPLEMENTED.
    assert.match(r.results.find((x) => x.id === 'console.io')!.detail, /"console" is not declared/);
    assert.equal(r.results.find((x) => x.id === 'capabilities.undeclared')?.outcome, 'pass');
    assert.deepEqual(readdirSync(path.join(dir, 'process-plugin-state', 'containers')), []);
    for (const ctl of ['pids', 'freezer']) {
      let left: string[] = [];
      try {
        left = readdirSync(`/sys/fs/cgroup/${ctl}/osvirt-py`).filter((n) => /^c[0-9a-f]{6}-\d+-/.test(n));
      } catch {
        // no such hierarchy here (pure cgroup v2)
      }
      assert.deepEqual(left, [], `conformance cgroups left in /sys/fs/cgroup/${ctl}/osvirt-py`);
      // The shared parent goes with its last container.
      const parent = `/sys/fs/cgroup/${ctl}/osvirt-py`;
      if (existsSync(parent))
        assert.ok(
          readdirSync(parent, { withFileTypes: true }).some((e) => e.isDirectory()),
          `${parent} is left empty`,
        );
    }
  });

  it('`osvirt conformance --endpoint` prints the report and exits 0 for a conformant driver', () => {
    const py = plugins.find((p) => p.endpoint.endsWith('process.sock'));
    assert.ok(py, 'the Python driver from the previous case');
    const res = osvirt([
      'conformance',
      '--endpoint',
      py.endpoint,
      '--spec',
      repoPath('drivers', 'python-process', 'conformance-spec.yaml'),
      '--only',
      '^(info|lifecycle|wait)\\.',
    ]);
    assert.equal(res.status, 0, res.stdout + res.stderr);
    assert.match(res.stdout, /PASS lifecycle\.order/);
    assert.match(res.stdout, /\d+ passed, 0 failed/);
    const json = osvirt([
      '-o',
      'json',
      'conformance',
      '--endpoint',
      py.endpoint,
      '--spec',
      repoPath('drivers', 'python-process', 'conformance-spec.yaml'),
      '--only',
      '^info\\.',
    ]);
    assert.equal(json.status, 0, json.stderr);
    const reports = JSON.parse(json.stdout) as Report[];
    assert.equal(reports[0]?.results[0]?.id, 'info.protocol');
  });

  it('warns of a driver whose Dependencies names the container itself or one container twice (a should-level case)', async () => {
    const py = plugins.find((p) => p.endpoint.endsWith('process.sock'));
    assert.ok(py, 'the Python driver from an earlier case');
    const remote = new RemoteDriver('process', py.endpoint);
    try {
      const run = (answer: (id: string) => string[]) => {
        // The real driver, with only Dependencies answering wrongly.
        const wrong = new Proxy(remote, {
          get: (t, k) => (k === 'dependencies' ? async (id: string) => answer(id) : Reflect.get(t, k, t)),
        });
        return runDriverSuite(wrong, 'process (wrong Dependencies)', { template: pythonTemplate(), only: /^dependencies\.template$/ });
      };
      const self = await run((id) => [id]);
      assert.equal(self.results[0]?.outcome, 'warn', formatReport(self));
      assert.match(formatReport(self), /names the container itself/);
      const twice = await run(() => ['other', 'other']);
      assert.equal(twice.results[0]?.outcome, 'warn', formatReport(twice));
      assert.match(formatReport(twice), /names a container twice: other, other/);
      const right = await run(() => ['other']);
      assert.equal(right.results[0]?.outcome, 'pass', formatReport(right));
    } finally {
      await remote.close();
    }
  });

  it('fails a driver that breaks the contract, naming what it did wrong, and exits non-zero', async () => {
    // The test double process-test runs `sleep 3600`, which dies of SIGTERM
    // instead of exiting 0 as a template's init must.
    const p = await spawnPlugin(
      process.execPath,
      [repoPath('dist', 'src', 'plugin', 'serve.js'), '--module', repoPath('dist', 'test', 'support', 'process-driver.js'), '--log-level', 'warn'],
      {
        socket: path.join(dir, 'process-test.sock'),
        stateDir: path.join(dir, 'process-test-state'),
      },
    );
    plugins.push(p);
    const res = osvirt(['conformance', '--endpoint', p.endpoint, '--only', '^(lifecycle\\.order|capabilities\\.undeclared)$']);
    assert.equal(res.status, 1, res.stdout + res.stderr);
    assert.match(res.stdout, /FAIL lifecycle\.order/);
    assert.match(res.stdout, /should exit 0 on SIGTERM; Stop reported exit_code \d+, signal 15/);
    assert.match(res.stdout, /PASS capabilities\.undeclared/);
    assert.match(res.stdout, /NOT CONFORMANT/);
    const usage = osvirt(['conformance']);
    assert.equal(usage.status, 2);
    assert.match(usage.stderr, /give --endpoint/);
  });
});
