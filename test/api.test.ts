// The osvirt.v1 frontend, through the real daemon binary and a real gRPC
// client: errors and their details, hostile input, pagination, events,
// serialization of concurrent operations, and definitions surviving restarts.
import { strict as assert } from 'node:assert';
import { existsSync, readdirSync } from 'node:fs';
import * as path from 'node:path';
import {
  credentials,
  loadPackageDefinition,
  makeGenericClientConstructor,
  Metadata,
  status as Code,
  type ChannelCredentials,
  type Client as GrpcClient,
  type ClientDuplexStream,
  type ServiceError,
} from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { service as healthService } from 'grpc-health-check';
import { decodeStatusDetails } from '../src/core/grpc-status';
import { ContainerServiceService, type ExecContainerResponse } from '../src/gen/osvirt/v1/container_service';
import { ContainerSpec, ContainerState, MountType } from '../src/gen/osvirt/v1/container';
import { EventType, type WatchEventsResponse } from '../src/gen/osvirt/v1/event_service';
import { DriverHealth } from '../src/gen/osvirt/v1/system_service';
import { repoPath } from '../src/paths';
import { isRoot, TestDaemon, until, type Client } from './support/daemon';
import { busybox } from './support/specs';

async function rejects(p: Promise<unknown>, code: Code, reason?: string): Promise<ServiceError> {
  try {
    await p;
  } catch (e) {
    const se = e as ServiceError;
    assert.equal(se.code, code, `expected ${Code[code]}, got ${Code[se.code]}: ${se.details}`);
    const d = decodeStatusDetails(se.metadata);
    assert.ok(d.errorInfo, 'every error carries google.rpc.ErrorInfo');
    assert.equal(d.errorInfo.domain, 'osvirt.dev');
    if (reason) assert.equal(d.errorInfo.reason, reason);
    return se;
  }
  assert.fail(`expected ${Code[code]}, but the call succeeded`);
}

describe('osvirt.v1 API (real daemon)', function () {
  let d: TestDaemon;
  let c: Client;
  const processDriver = repoPath('dist', 'test', 'support', 'process-driver.js');

  before(async function () {
    if (!isRoot()) this.skip();
    d = new TestDaemon();
    c = await d.start(['--driver-module', processDriver]);
  });
  after(async () => {
    await d?.destroy();
  });

  const names = async () => (await c.api.containers.listContainers({ pageSize: 1000, pageToken: '', driver: '', states: [] })).containers.map((x) => x.name);

  it('serves health checking and lists its drivers and version', async () => {
    const Health = makeGenericClientConstructor(healthService, 'Health');
    const h = new Health(`unix://${d.socket}`, credentials.createInsecure());
    const res = await new Promise<{ status: string }>((resolve, reject) =>
      (h as unknown as { check: (r: object, cb: (e: Error | null, r: { status: string }) => void) => void }).check(
        { service: 'osvirt.v1.ContainerService' },
        (e, r) => (e ? reject(e) : resolve(r)),
      ),
    );
    h.close();
    assert.equal(res.status, 'SERVING');
    const drivers = (await c.api.system.listDrivers({})).drivers;
    const lxc = drivers.find((x) => x.name === 'lxc');
    assert.equal(lxc?.health, DriverHealth.DRIVER_HEALTH_READY, JSON.stringify(lxc));
    assert.ok(lxc.capabilities.includes('exec'));
    assert.ok(drivers.find((x) => x.name === 'process-test'));
    const v = await c.api.system.getVersion({});
    assert.equal(v.apiVersion, 'osvirt.v1');
    assert.deepEqual(v.driverProtocolVersions, [1]);
  });

  it('serves gRPC server reflection listing the osvirt services', async () => {
    const def = protoLoader.loadSync(require.resolve('@grpc/reflection/build/proto/grpc/reflection/v1/reflection.proto'), { keepCase: true });
    const pkg = loadPackageDefinition(def) as unknown as {
      grpc: {
        reflection: {
          v1: {
            ServerReflection: new (
              t: string,
              c: ChannelCredentials,
            ) => GrpcClient & { ServerReflectionInfo(): ClientDuplexStream<object, { list_services_response?: { service: { name: string }[] } }> };
          };
        };
      };
    };
    const client = new pkg.grpc.reflection.v1.ServerReflection(`unix://${d.socket}`, credentials.createInsecure());
    const names = await new Promise<string[]>((resolve, reject) => {
      const call = client.ServerReflectionInfo();
      call.on('data', (r) => {
        resolve((r.list_services_response?.service ?? []).map((x: { name: string }) => x.name));
        call.end();
      });
      call.on('error', reject);
      call.write({ list_services: '' });
    });
    client.close();
    for (const svc of ['osvirt.v1.ContainerService', 'osvirt.v1.EventService', 'osvirt.v1.SystemService'])
      assert.ok(names.includes(svc), `${svc} not in ${names.join(', ')}`);
  });

  it('implements every ContainerService method (none answers UNIMPLEMENTED for an empty request)', async () => {
    for (const [key, def] of Object.entries(ContainerServiceService)) {
      if (def.requestStream || def.responseStream) continue;
      const fn = (c.api.containers as unknown as Record<string, (r: unknown) => Promise<unknown>>)[key]!;
      const req = def.requestDeserialize(Buffer.alloc(0));
      try {
        await fn(req);
      } catch (e) {
        assert.notEqual((e as ServiceError).code, Code.UNIMPLEMENTED, `${def.path} is not implemented`);
        assert.equal((e as ServiceError).code, Code.INVALID_ARGUMENT, `${def.path}: ${(e as ServiceError).details}`);
      }
    }
  });

  it('returns NOT_FOUND, ALREADY_EXISTS, FAILED_PRECONDITION and UNIMPLEMENTED with ErrorInfo reasons', async () => {
    await rejects(c.api.containers.getContainer({ name: 'nope' }), Code.NOT_FOUND, 'CONTAINER_NOT_FOUND');
    await c.api.containers.createContainer({ name: 'errs', spec: busybox() });
    await rejects(c.api.containers.createContainer({ name: 'errs', spec: busybox() }), Code.ALREADY_EXISTS, 'CONTAINER_EXISTS');
    await rejects(c.api.containers.pauseContainer({ name: 'errs' }), Code.FAILED_PRECONDITION, 'WRONG_STATE');
    await rejects(
      c.api.containers.createContainer({ name: 'nodriver', spec: ContainerSpec.fromPartial({ driver: 'nosuch' }) }),
      Code.FAILED_PRECONDITION,
      'DRIVER_NOT_FOUND',
    );
    await c.api.containers.createContainer({ name: 'plain', spec: ContainerSpec.fromPartial({ driver: 'process-test', process: { args: ['sleep', '60'] } }) });
    await c.api.containers.startContainer({ name: 'plain' });
    await rejects(c.api.containers.pauseContainer({ name: 'plain' }), Code.UNIMPLEMENTED, 'CAPABILITY_NOT_SUPPORTED');
    await rejects(c.api.containers.getContainerStats({ name: 'plain' }), Code.UNIMPLEMENTED, 'CAPABILITY_NOT_SUPPORTED');
    await c.api.containers.deleteContainer({ name: 'plain', force: true, allowMissing: false });
    await c.api.containers.deleteContainer({ name: 'errs', force: false, allowMissing: false });
    await c.api.containers.deleteContainer({ name: 'errs', force: false, allowMissing: true });
    await rejects(c.api.containers.deleteContainer({ name: 'errs', force: false, allowMissing: false }), Code.NOT_FOUND);
  });

  it('rejects malformed and hostile input naming the field, and changes nothing', async () => {
    const before = await names();
    const filesBefore = readdirSync(path.join(d.stateDir, 'containers')).sort();
    const bad: [string, unknown, string][] = [
      ['', busybox(), 'name'],
      ['UPPER', busybox(), 'name'],
      ['../etc', busybox(), 'name'],
      ['a'.repeat(64), busybox(), 'name'],
      ['x', undefined, 'spec'],
      ['x', ContainerSpec.fromPartial({}), 'spec.driver'],
      ['x', busybox({ rootfs: { source: { $case: 'path', value: '/srv/../etc' } } }), 'spec.rootfs.path'],
      ['x', busybox({ rootfs: { source: { $case: 'path', value: 'relative/dir' } } }), 'spec.rootfs.path'],
      ['x', busybox({ mounts: [{ type: MountType.MOUNT_TYPE_BIND, source: '/tmp', destination: '../../etc' }] }), 'spec.mounts[0].destination'],
      ['x', busybox({ mounts: [{ type: 99 as MountType, source: '/tmp', destination: '/mnt' }] }), 'spec.mounts[0].type'],
      ['x', busybox({ hostname: 'bad host!' }), 'spec.hostname'],
      ['x', busybox({ resources: { memoryLimitBytes: 1 } }), 'spec.resources.memory_limit_bytes'],
      ['x', busybox({ resources: { cpuWeight: 20000 } }), 'spec.resources.cpu_weight'],
      ['x', busybox({ capabilities: { add: ['cap_fly'] } }), 'spec.capabilities.add[0]'],
      ['x', busybox({ process: { env: ['NOEQUALS'] } }), 'spec.process.env[0]'],
      ['x', busybox({ network: { mode: { $case: 'bridge', value: { address: '10.0.0.300/8' } } } }), 'spec.network.bridge.address'],
      ['x', busybox({ devices: [{ path: '/etc/passwd' }] }), 'spec.devices[0].path'],
      ['x', busybox({ stopSignal: 99 }), 'spec.stop_signal'],
    ];
    for (const [name, spec, field] of bad) {
      const e = await rejects(c.api.containers.createContainer({ name, spec: spec as ContainerSpec }), Code.INVALID_ARGUMENT, 'INVALID_FIELD');
      const br = decodeStatusDetails(e.metadata).badRequest;
      assert.equal(br?.fieldViolations[0]?.field, field, `for ${field}: ${e.details}`);
    }
    await rejects(c.api.containers.listContainers({ pageSize: 0, pageToken: '', driver: '', states: [42 as ContainerState] }), Code.INVALID_ARGUMENT);
    // A message beyond the 4 MiB cap is refused by the transport.
    const huge = busybox({ process: { args: ['sh'], env: [`BIG=${'x'.repeat(5 * 1024 * 1024)}`] } });
    await assert.rejects(c.api.containers.createContainer({ name: 'huge', spec: huge }), (e: ServiceError) => e.code === Code.RESOURCE_EXHAUSTED);
    assert.deepEqual(await names(), before);
    assert.deepEqual(readdirSync(path.join(d.stateDir, 'containers')).sort(), filesBefore);
  });

  it('paginates ListContainers and rejects a forged page token', async () => {
    for (const n of ['pa', 'pb', 'pc', 'pd', 'pe']) await c.api.containers.createContainer({ name: n, spec: busybox() });
    const seen: string[] = [];
    let token = '';
    let pages = 0;
    do {
      const r = await c.api.containers.listContainers({ pageSize: 2, pageToken: token, driver: 'lxc', states: [ContainerState.CONTAINER_STATE_DEFINED] });
      assert.ok(r.containers.length <= 2);
      seen.push(...r.containers.map((x) => x.name));
      token = r.nextPageToken;
      pages++;
    } while (token);
    assert.deepEqual(
      seen.filter((n) => n.startsWith('p')),
      ['pa', 'pb', 'pc', 'pd', 'pe'],
    );
    assert.ok(pages >= 3);
    await rejects(c.api.containers.listContainers({ pageSize: 2, pageToken: 'garbage', driver: '', states: [] }), Code.INVALID_ARGUMENT);
    for (const n of ['pa', 'pb', 'pc', 'pd', 'pe']) await c.api.containers.deleteContainer({ name: n, force: false, allowMissing: false });
  });

  it('streams lifecycle events in order for a container', async () => {
    const got: WatchEventsResponse[] = [];
    const stream = c.events.watchEvents({ containers: ['evt'], types: [] });
    stream.on('data', (e: WatchEventsResponse) => got.push(e));
    stream.on('error', () => undefined);
    await new Promise((r) => stream.once('metadata', r));
    await c.api.containers.createContainer({ name: 'evt', spec: busybox() });
    await c.api.containers.startContainer({ name: 'evt' });
    await c.api.containers.pauseContainer({ name: 'evt' });
    await c.api.containers.resumeContainer({ name: 'evt' });
    await c.api.containers.stopContainer({ name: 'evt', signal: 0, timeout: { seconds: 5n, nanos: 0 } });
    await c.api.containers.deleteContainer({ name: 'evt', force: false, allowMissing: false });
    await until(() => got.length >= 6, 'six events');
    stream.cancel();
    assert.deepEqual(
      got.map((e) => EventType[e.event!.type]),
      ['EVENT_TYPE_CREATED', 'EVENT_TYPE_STARTED', 'EVENT_TYPE_PAUSED', 'EVENT_TYPE_RESUMED', 'EVENT_TYPE_STOPPED', 'EVENT_TYPE_DELETED'],
    );
    const seqs = got.map((e) => e.event!.sequence);
    assert.deepEqual(
      [...seqs].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)),
      seqs,
    );
    assert.equal(got[4]!.event!.status?.exitCode, 0);
  });

  it('reports an init that exits by itself as STOPPED with its code, and one killed by a signal as CRASHED', async () => {
    const got: WatchEventsResponse[] = [];
    const stream = c.events.watchEvents({ containers: ['exits', 'crash'], types: [EventType.EVENT_TYPE_STOPPED, EventType.EVENT_TYPE_CRASHED] });
    stream.on('data', (e: WatchEventsResponse) => got.push(e));
    stream.on('error', () => undefined);
    await new Promise((r) => stream.once('metadata', r));
    await c.api.containers.createContainer({ name: 'exits', spec: busybox({ process: { args: ['/bin/sh', '-c', 'exit 3'] } }) });
    await c.api.containers.startContainer({ name: 'exits' });
    // An init only receives signals it handles, except SIGKILL: a SIGKILL nobody
    // asked osvirt for (the OOM killer's, here the test's) is a crash.
    await c.api.containers.createContainer({ name: 'crash', spec: busybox({ process: { args: ['/bin/sleep', '60'] } }) });
    const crashPid = (await c.api.containers.startContainer({ name: 'crash' })).container!.status!.initPid;
    process.kill(crashPid, 'SIGKILL');
    await until(() => got.length >= 2, 'exit events');
    stream.cancel();
    const st = (await c.api.containers.getContainer({ name: 'exits' })).container!.status!;
    assert.equal(st.state, ContainerState.CONTAINER_STATE_STOPPED);
    assert.equal(st.exitCode, 3);
    const cr = (await c.api.containers.getContainer({ name: 'crash' })).container!.status!;
    assert.equal(cr.state, ContainerState.CONTAINER_STATE_CRASHED);
    assert.equal(cr.signal, 9);
    assert.equal(cr.exitCode, 137);
    for (const n of ['exits', 'crash']) await c.api.containers.deleteContainer({ name: n, force: false, allowMissing: false });
  });

  it('serializes concurrent operations on one container', async () => {
    const results = await Promise.allSettled(Array.from({ length: 8 }, () => c.api.containers.createContainer({ name: 'race', spec: busybox() })));
    assert.equal(results.filter((r) => r.status === 'fulfilled').length, 1);
    assert.ok(results.filter((r) => r.status === 'rejected').every((r) => (r.reason as ServiceError).code === Code.ALREADY_EXISTS));

    const events: WatchEventsResponse[] = [];
    const stream = c.events.watchEvents({ containers: ['race'], types: [EventType.EVENT_TYPE_STARTED, EventType.EVENT_TYPE_STOPPED] });
    stream.on('data', (e: WatchEventsResponse) => events.push(e));
    stream.on('error', () => undefined);
    await new Promise((r) => stream.once('metadata', r));
    const starts = await Promise.all(Array.from({ length: 8 }, () => c.api.containers.startContainer({ name: 'race' })));
    const pids = new Set(starts.map((s) => s.container!.status!.initPid));
    assert.equal(pids.size, 1, 'every concurrent Start saw the same init');
    // Events arrive in order: once the stop's event is here, every start's is too.
    await c.api.containers.stopContainer({ name: 'race', signal: 9 });
    await until(() => events.some((e) => e.event?.type === EventType.EVENT_TYPE_STOPPED), 'the STOPPED event');
    stream.cancel();
    assert.deepEqual(
      events.map((e) => e.event?.type),
      [EventType.EVENT_TYPE_STARTED, EventType.EVENT_TYPE_STOPPED],
      'the container was started exactly once',
    );
    await c.api.containers.deleteContainer({ name: 'race', force: true, allowMissing: false });
  });

  it('exec streams need a start message first', async () => {
    const s = c.containers.execContainer();
    const err = await new Promise<ServiceError>((resolve) => {
      s.on('error', resolve);
      s.on('data', (_m: ExecContainerResponse) => undefined);
      s.write({ message: { $case: 'stdin', value: Buffer.from('hi') } });
    });
    assert.equal(err.code, Code.INVALID_ARGUMENT);
  });

  it('keeps every definition, and running containers, across a graceful restart and a kill -9', async () => {
    await c.api.containers.createContainer({ name: 'keep-a', spec: busybox() });
    await c.api.containers.createContainer({ name: 'keep-b', spec: busybox({ labels: { tier: 'db' } }) });
    const pid = (await c.api.containers.startContainer({ name: 'keep-b' })).container!.status!.initPid;
    for (const how of ['stop', 'kill'] as const) {
      await d[how]();
      c = await d.start(['--driver-module', processDriver]);
      const a = (await c.api.containers.getContainer({ name: 'keep-a' })).container!;
      const b = (await c.api.containers.getContainer({ name: 'keep-b' })).container!;
      assert.equal(a.status?.state, ContainerState.CONTAINER_STATE_DEFINED);
      assert.equal(b.status?.state, ContainerState.CONTAINER_STATE_RUNNING, `after ${how}`);
      assert.equal(b.status?.initPid, pid, 'the same init is still running');
      assert.equal(b.spec?.labels['tier'], 'db');
      assert.ok(existsSync(`/proc/${pid}`));
    }
    await c.api.containers.stopContainer({ name: 'keep-b', signal: 0, timeout: { seconds: 5n, nanos: 0 } });
    assert.ok(!existsSync(`/proc/${pid}`));
    for (const n of ['keep-a', 'keep-b']) await c.api.containers.deleteContainer({ name: n, force: false, allowMissing: false });
  });

  it('reports the caller-visible failure of a start, leaving the container defined', async () => {
    await c.api.containers.createContainer({ name: 'nobin', spec: busybox({ process: { args: ['/does/not/exist'] } }) });
    const e = await rejects(c.api.containers.startContainer({ name: 'nobin' }), Code.FAILED_PRECONDITION, 'START_FAILED');
    assert.match(e.details, /exist|No such file/i);
    const st = (await c.api.containers.getContainer({ name: 'nobin' })).container!.status!;
    assert.equal(st.state, ContainerState.CONTAINER_STATE_STOPPED);
    assert.ok(!existsSync('/sys/fs/cgroup/pids/osvirt/nobin') && !existsSync('/sys/fs/cgroup/osvirt/nobin'), 'no cgroup left behind');
    await c.api.containers.deleteContainer({ name: 'nobin', force: false, allowMissing: false });
  });

  it('accepts metadata-free calls from a plain generic client (other languages see the same wire)', async () => {
    const md = new Metadata();
    const r = await c.api.system.getVersion({}, md);
    assert.ok(r.version);
  });
});
