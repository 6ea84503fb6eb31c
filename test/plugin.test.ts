// Out-of-process drivers through the real daemon: the lxc driver served by
// src/plugin/serve.ts and registered with --driver or a manifest behaves
// like the built-in one; an incompatible plugin is refused with a clear
// ListDrivers message while the daemon keeps running; a plugin that is
// killed leaves its containers UNKNOWN and its calls UNAVAILABLE, and once
// it is back the daemon recovers their states.
import { strict as assert } from 'node:assert';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Server, ServerCredentials, status as Code, type ServiceError, type UntypedServiceImplementation } from '@grpc/grpc-js';
import { ContainerState, StateReason } from '../src/gen/osvirt/v1/container';
import { DriverHealth } from '../src/gen/osvirt/v1/system_service';
import { DRIVER_PROTOCOL_VERSION, RuntimeStatus, type Driver } from '../src/core/driver';
import { connect } from '../src/client';
import { serveDriver, type ServedDriver } from '../src/plugin/driver-server';
import { RemoteDriver } from '../src/plugin/remote-driver';
import { DriverServiceService } from '../src/gen/osvirt/driver/v1/driver';
import { formatHandshake, parseHandshake } from '../src/plugin/handshake';
import { parseDriverFlag, parseManifest } from '../src/plugin/manifest';
import { runDaemonSuite } from '../src/conformance/daemon-suite';
import { formatReport } from '../src/conformance/report';
import { defaultTemplate } from '../src/conformance/spec-template';
import { serveLxc } from '../src/conformance/repo-drivers';
import type { SpawnedPlugin } from '../src/plugin/spawn-plugin';
import { pidAlive } from '../src/host/processes';
import { removeBridge } from '../src/testing/leftovers';
import { repoPath } from '../src/paths';
import { isRoot, TestDaemon, until } from './support/daemon';
import { busybox } from './support/specs';
import { sh } from './support/exec';

const serveJs = repoPath('dist', 'src', 'plugin', 'serve.js');

describe('plugin handshake and manifests', () => {
  it('formats and parses the go-plugin-style handshake line, refusing malformed ones', () => {
    const line = formatHandshake(1, '/run/x.sock');
    assert.equal(line, '1|1|unix|/run/x.sock|grpc');
    assert.deepEqual(parseHandshake(line + '\n'), { coreVersion: 1, protocolVersion: 1, network: 'unix', address: '/run/x.sock', protocol: 'grpc' });
    assert.throws(() => parseHandshake('hello world'), /malformed handshake/);
    assert.throws(() => parseHandshake('2|1|unix|/x|grpc'), /core version/);
    assert.throws(() => parseHandshake('1|1|tcp|127.0.0.1:1|grpc'), /unix socket/);
    assert.throws(() => parseHandshake('1|1|unix|relative.sock|grpc'), /absolute/);
    assert.throws(() => parseHandshake('1|1|unix|/x|netrpc'), /speak grpc/);
  });

  it('parses manifests and --driver flags, naming the field at fault', () => {
    const m = parseManifest('{"name":"proc","executable":"bin/driver","args":["-v"],"env":{"A":"b"}}', '/etc/osvirt/plugins.d/proc.json');
    assert.equal(m.executable, '/etc/osvirt/plugins.d/bin/driver');
    assert.equal(m.cwd, '/etc/osvirt/plugins.d');
    assert.deepEqual(m.args, ['-v']);
    assert.equal(parseManifest('{"name":"r","socket":"unix:///run/r.sock"}', '/x/r.json').socket, 'unix:///run/r.sock');
    assert.throws(() => parseManifest('{"name":"r","sockt":"unix:///run/r.sock"}', 'f.json'), /sockt: unknown field/);
    assert.throws(() => parseManifest('{"name":"Bad Name","socket":"unix:///x"}', 'f.json'), /name:/);
    assert.throws(() => parseManifest('{"name":"r","socket":"/x","executable":"/y"}', 'f.json'), /either/);
    assert.deepEqual(parseDriverFlag('lxc2=unix:///tmp/l.sock'), { name: 'lxc2', source: '--driver', socket: 'unix:///tmp/l.sock' });
    assert.throws(() => parseDriverFlag('lxc2=/tmp/l.sock'), /unix:\/\/\//);
  });
});

describe('Dependencies over the driver protocol', () => {
  let dir: string;
  const served: { close(): Promise<void> }[] = [];
  before(() => (dir = mkdtempSync(path.join(os.tmpdir(), 'osvirt-deps-'))));
  after(async () => {
    for (const s of served) await s.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const spec = busybox({ driverOptions: { $case: 'lxc', value: { shareIpcWith: 'peer' } } });

  it("carries a driver's dependencies; a driver without the method, or a plugin without the RPC (UNIMPLEMENTED), has none", async () => {
    const stub = (deps?: Driver['dependencies']): Driver => {
      const no = () => Promise.reject(new Error('not called'));
      return {
        name: 'stub',
        init: no,
        info: no,
        validate: no,
        create: no,
        start: no,
        stop: no,
        kill: no,
        delete: no,
        state: no,
        wait: no,
        recover: no,
        dependencies: deps,
      };
    };
    const withDeps = await serveDriver(
      stub(async (_id, s) => (s.driverOptions?.$case === 'lxc' ? [s.driverOptions.value.shareIpcWith] : [])),
      path.join(dir, 'with.sock'),
    );
    served.push(withDeps);
    const without = await serveDriver(stub(), path.join(dir, 'without.sock'));
    served.push(without);
    // A plugin built before Dependencies existed: the service with no handler for it.
    const old = new Server();
    old.addService(DriverServiceService, {} as UntypedServiceImplementation);
    const oldSock = path.join(dir, 'old.sock');
    await new Promise<void>((resolve, reject) => old.bindAsync(`unix://${oldSock}`, ServerCredentials.createInsecure(), (e) => (e ? reject(e) : resolve())));
    served.push({ close: async () => void old.forceShutdown() });
    for (const [sock, want] of [
      [withDeps.socketPath, ['peer']],
      [without.socketPath, []],
      [oldSock, []],
    ] as const) {
      const r = new RemoteDriver('stub', `unix://${sock}`);
      try {
        assert.deepEqual(await r.dependencies('c1', spec), want, sock);
      } finally {
        await r.close();
      }
    }
  });
});

describe('out-of-process drivers through the daemon', function () {
  let d: TestDaemon;
  let lxcPlugin: SpawnedPlugin | undefined;
  let bad: ServedDriver | undefined;
  let dir: string;
  let fakePidFile: string;
  let holdFile: string;
  let wrapperPidFile: string;

  before(async function () {
    if (!isRoot()) this.skip();
    d = new TestDaemon();
    dir = path.join(d.dir, 'plugins');
    const pluginDir = path.join(dir, 'plugins.d');
    mkdirSync(pluginDir, { recursive: true });

    // lxc served out of process by someone else: registered with --driver.
    lxcPlugin = await serveLxc(dir);

    // A plugin whose GetInfo claims a protocol this daemon does not speak.
    const future: Driver = {
      name: 'future',
      init: async () => undefined,
      info: async () => ({ name: 'future', version: '9.0', protocolVersion: 2, capabilities: [], messages: [] }),
      validate: async () => undefined,
      create: async () => undefined,
      start: async () => ({ status: RuntimeStatus.RUNTIME_STATUS_RUNNING, initPid: 1, exitCode: 0, signal: 0, message: '' }),
      stop: async () => ({ status: RuntimeStatus.RUNTIME_STATUS_STOPPED, initPid: 0, exitCode: 0, signal: 0, message: '' }),
      kill: async () => undefined,
      delete: async () => undefined,
      state: async () => ({ status: RuntimeStatus.RUNTIME_STATUS_STOPPED, initPid: 0, exitCode: 0, signal: 0, message: '' }),
      wait: async () => ({ status: RuntimeStatus.RUNTIME_STATUS_STOPPED, initPid: 0, exitCode: 0, signal: 0, message: '' }),
      recover: async () => ({}),
    };
    bad = await serveDriver(future, path.join(dir, 'future.sock'));

    // A plugin the daemon starts that announces protocol 99 in its handshake.
    fakePidFile = path.join(dir, 'fake.pid');
    const fake = path.join(dir, 'fake-plugin.js');
    writeFileSync(
      fake,
      `require('fs').writeFileSync(${JSON.stringify(fakePidFile)}, String(process.pid));\nprocess.stdout.write('1|99|unix|/nonexistent.sock|grpc\\n');\nsetInterval(() => {}, 1000);\n`,
    );
    writeFileSync(path.join(pluginDir, 'ancient.json'), JSON.stringify({ name: 'ancient', executable: process.execPath, args: [fake] }));
    // A manifest with a mistake: listed FAILED with the reason.
    writeFileSync(path.join(pluginDir, 'typo.json'), JSON.stringify({ name: 'typo', executible: '/bin/true' }));

    // lxc started (and restarted) by the daemon itself from a manifest. The
    // wrapper records its pid (exec keeps it) and waits while the hold file
    // exists, so the test controls when a restart can succeed.
    holdFile = path.join(dir, 'hold');
    wrapperPidFile = path.join(dir, 'lxc3.pid');
    const wrapper = path.join(dir, 'lxc3-plugin.sh');
    writeFileSync(
      wrapper,
      `#!/bin/sh\nwhile [ -e ${holdFile} ]; do sleep 0.05; done\necho $$ > ${wrapperPidFile}\nexec ${process.execPath} ${serveJs} lxc --log-level warn --bridge ${d.bridge}p --subnet 10.249.0.0/16\n`,
    );
    chmodSync(wrapper, 0o755);
    writeFileSync(path.join(pluginDir, 'lxc3.json'), JSON.stringify({ name: 'lxc3', executable: '../lxc3-plugin.sh' }));

    await d.start(['--plugin-dir', pluginDir, '--driver', `lxc2=${lxcPlugin.endpoint}`, '--driver', `future=unix://${bad.socketPath}`]);
  });

  after(async () => {
    rmSync(holdFile ?? '/nonexistent', { force: true });
    await d?.destroy();
    // The lxc3 plugin's own bridge, and its NAT table, if a container made them.
    if (d) await removeBridge(`${d.bridge}p`);
    await lxcPlugin?.stop();
    await bad?.close();
    if (fakePidFile && existsSync(fakePidFile)) {
      const pid = Number(readFileSync(fakePidFile, 'utf8'));
      if (pidAlive(pid)) process.kill(pid, 'SIGKILL');
    }
  });

  it('lists plugins as external and READY, and refuses incompatible or broken ones with a clear message while the daemon keeps running', async () => {
    const drivers = (await d.client.api.system.listDrivers({})).drivers;
    const by = Object.fromEntries(drivers.map((x) => [x.name, x]));
    for (const n of ['lxc2', 'lxc3']) {
      assert.equal(by[n]?.health, DriverHealth.DRIVER_HEALTH_READY, `${n}: ${JSON.stringify(by[n])}`);
      assert.equal(by[n]?.external, true);
      assert.deepEqual([...by[n]!.capabilities].sort(), [...by['lxc']!.capabilities].sort(), 'the plugin declares what the built-in lxc declares');
    }
    assert.equal(by['lxc']?.external, false);
    assert.equal(by['ancient']?.health, DriverHealth.DRIVER_HEALTH_FAILED);
    assert.match(by['ancient']!.messages.join(' '), /speaks driver protocol version 99, but this daemon speaks 1/);
    assert.equal(by['future']?.health, DriverHealth.DRIVER_HEALTH_FAILED);
    assert.match(by['future']!.messages.join(' '), /driver protocol version 2, but this daemon speaks 1/);
    assert.equal(by['typo']?.health, DriverHealth.DRIVER_HEALTH_FAILED);
    assert.match(by['typo']!.messages.join(' '), /executible: unknown field/);
    // The refused plugin process was stopped, not left running.
    const fakePid = Number(readFileSync(fakePidFile, 'utf8'));
    await until(() => !pidAlive(fakePid), 'the refused plugin to be killed', 5000);
    // Containers on a refused driver are refused with the reason; the daemon still serves.
    await assert.rejects(
      d.client.api.containers.createContainer({ name: 'old', spec: busybox({ driver: 'ancient' }) }),
      (e: ServiceError) => e.code === Code.FAILED_PRECONDITION && /protocol version 99/.test(e.details),
    );
    const v = await d.client.api.system.getVersion({});
    assert.deepEqual(v.driverProtocolVersions, [DRIVER_PROTOCOL_VERSION]);
    // The daemon's log carries the reason too.
    assert.match(d.stderr, /ancient/);
  });

  it('runs an lxc container through the gRPC plugin like the built-in driver: namespaces, exec, stop, delete', async () => {
    const c = d.client.api.containers;
    await c.createContainer({ name: 'viagrpc', spec: busybox({ driver: 'lxc2', hostname: 'viagrpc' }) });
    const started = (await c.startContainer({ name: 'viagrpc' })).container!;
    assert.equal(started.status?.state, ContainerState.CONTAINER_STATE_RUNNING);
    const pid = started.status!.initPid;
    // From the host: a process in its own pid and uts namespaces.
    assert.notEqual(readlinkSync(`/proc/${pid}/ns/pid`), readlinkSync('/proc/self/ns/pid'));
    assert.notEqual(readlinkSync(`/proc/${pid}/ns/uts`), readlinkSync('/proc/self/ns/uts'));
    assert.equal(await sh(d.client, 'viagrpc', 'hostname'), 'viagrpc');
    assert.equal(await sh(d.client, 'viagrpc', 'cat /proc/1/cmdline | tr "\\0" " " | cut -c1-7'), '/bin/sh');
    const stopped = (await c.stopContainer({ name: 'viagrpc', signal: 0, timeout: { seconds: 10n, nanos: 0 } })).container!;
    assert.equal(stopped.status?.state, ContainerState.CONTAINER_STATE_STOPPED);
    assert.ok(!pidAlive(pid), 'the init is gone after stop');
    await c.deleteContainer({ name: 'viagrpc', force: false, allowMissing: false });
    assert.ok(!existsSync(path.join(d.dir, 'plugins', 'lxc-plugin-state', 'containers', 'viagrpc')), "the plugin removed the container's files");
  });

  it('passes the daemon-level conformance part (event order, exit codes, exec) for the lxc plugin', async () => {
    const c = connect({ address: `unix://${d.socket}` });
    try {
      const r = await runDaemonSuite(c, 'lxc2', defaultTemplate('lxc'));
      assert.ok(r.results.length >= 4 && r.results.every((x) => x.outcome === 'pass' || x.outcome === 'skip'), formatReport(r));
      assert.ok(r.results.find((x) => x.id === 'daemon.event-order')?.outcome === 'pass', formatReport(r));
    } finally {
      c.close();
    }
  });

  it('keeps the daemon up when a plugin is killed: containers UNKNOWN, calls UNAVAILABLE; on restart their states are recovered', async () => {
    const c = d.client.api.containers;
    await c.createContainer({ name: 'survivor', spec: busybox({ driver: 'lxc3' }) });
    await c.createContainer({ name: 'leaver', spec: busybox({ driver: 'lxc3' }) });
    const survivorPid = (await c.startContainer({ name: 'survivor' })).container!.status!.initPid;
    const leaverPid = (await c.startContainer({ name: 'leaver' })).container!.status!.initPid;
    const pluginPid = Number(readFileSync(wrapperPidFile, 'utf8'));
    assert.ok(pidAlive(pluginPid));

    writeFileSync(holdFile, '');
    process.kill(pluginPid, 'SIGKILL');
    await until(
      async () => (await c.getContainer({ name: 'survivor' })).container?.status?.state === ContainerState.CONTAINER_STATE_UNKNOWN,
      'survivor UNKNOWN',
      10_000,
    );
    const lost = (await c.getContainer({ name: 'survivor' })).container!.status!;
    assert.equal(lost.reason, StateReason.STATE_REASON_DRIVER_UNAVAILABLE);
    // The daemon marks its containers one by one: the second may still be on its way.
    await until(
      async () => (await c.getContainer({ name: 'leaver' })).container?.status?.state === ContainerState.CONTAINER_STATE_UNKNOWN,
      'leaver UNKNOWN',
      10_000,
    );
    const drv = (await d.client.api.system.listDrivers({})).drivers.find((x) => x.name === 'lxc3')!;
    assert.equal(drv.health, DriverHealth.DRIVER_HEALTH_UNAVAILABLE);
    assert.match(drv.messages.join(' '), /exited \(SIGKILL\); restarting it in \d+ ms/);
    await assert.rejects(
      c.stopContainer({ name: 'survivor', signal: 0, timeout: undefined }),
      (e: ServiceError) => e.code === Code.UNAVAILABLE && /lxc3/.test(e.details),
    );
    await assert.rejects(c.createContainer({ name: 'newcomer', spec: busybox({ driver: 'lxc3' }) }), (e: ServiceError) => e.code === Code.UNAVAILABLE);
    // Everything else keeps working, and the containers themselves live on without their driver.
    await c.getContainer({ name: 'survivor' });
    assert.ok(pidAlive(survivorPid), 'the container outlives its plugin');
    // While nobody watches, one of them exits (its init exits 0 on SIGTERM).
    process.kill(leaverPid, 'SIGTERM');
    // Gone from /proc, not only a zombie: its monitor has reaped it and recorded the exit.
    await until(() => !existsSync(`/proc/${leaverPid}`), 'leaver to exit and be reaped', 5000);

    rmSync(holdFile);
    await until(
      async () => (await d.client.api.system.listDrivers({})).drivers.find((x) => x.name === 'lxc3')?.health === DriverHealth.DRIVER_HEALTH_READY,
      'lxc3 READY again',
      30_000,
    );
    await until(
      async () => (await c.getContainer({ name: 'survivor' })).container?.status?.state === ContainerState.CONTAINER_STATE_RUNNING,
      'survivor recovered',
      10_000,
    );
    const back = (await c.getContainer({ name: 'survivor' })).container!.status!;
    assert.equal(back.reason, StateReason.STATE_REASON_RECOVERED);
    assert.equal(back.initPid, survivorPid, 'the same init, re-attached');
    await until(
      async () => (await c.getContainer({ name: 'leaver' })).container?.status?.state === ContainerState.CONTAINER_STATE_STOPPED,
      'leaver recorded STOPPED',
      10_000,
    );
    const left = (await c.getContainer({ name: 'leaver' })).container!.status!;
    assert.equal(left.exitCode, 0);
    assert.equal(left.reason, StateReason.STATE_REASON_EXITED);
    assert.notEqual(Number(readFileSync(wrapperPidFile, 'utf8')), pluginPid, 'a new plugin process');
    // The recovered container is fully manageable again, including its exit watch.
    assert.equal(await sh(d.client, 'survivor', 'echo back'), 'back');
    await c.stopContainer({ name: 'survivor', signal: 0, timeout: { seconds: 10n, nanos: 0 } });
    assert.ok(!pidAlive(survivorPid));
  });

  it('treats a hung plugin (SIGSTOP) as unavailable, kills it, restarts it and recovers', async () => {
    const c = d.client.api.containers;
    const initPid = (await c.startContainer({ name: 'survivor' })).container!.status!.initPid;
    const hung = Number(readFileSync(wrapperPidFile, 'utf8'));
    process.kill(hung, 'SIGSTOP');
    try {
      await until(
        async () => (await d.client.api.system.listDrivers({})).drivers.find((x) => x.name === 'lxc3')?.health === DriverHealth.DRIVER_HEALTH_UNAVAILABLE,
        'lxc3 UNAVAILABLE',
        20_000,
      );
    } finally {
      if (pidAlive(hung)) process.kill(hung, 'SIGCONT');
    }
    assert.match(d.stderr, /does not answer health checks/);
    await until(
      async () => (await d.client.api.system.listDrivers({})).drivers.find((x) => x.name === 'lxc3')?.health === DriverHealth.DRIVER_HEALTH_READY,
      'lxc3 back',
      30_000,
    );
    await until(() => !pidAlive(hung), 'the hung plugin to be killed', 5000);
    await until(
      async () => (await c.getContainer({ name: 'survivor' })).container?.status?.state === ContainerState.CONTAINER_STATE_RUNNING,
      'survivor running',
      10_000,
    );
    assert.equal((await c.getContainer({ name: 'survivor' })).container!.status!.initPid, initPid);
  });
});
