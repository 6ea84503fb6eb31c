// 64-bit fields over the real wire. A request is encoded by hand here (not by
// the generated client), so the daemon sees exactly the varint a Go or C++
// client would send: UINT64_MAX ("unlimited" to many clients) and 2^53+1 (the
// first integer a double cannot hold) are answered INVALID_ARGUMENT naming the
// field and create nothing; a large valid limit comes back exactly, in the
// API, in the definition on disk and in the host's cgroup.
import { strict as assert } from 'node:assert';
import { existsSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { credentials, makeGenericClientConstructor, Metadata, status as Code, type ServiceDefinition, type ServiceError } from '@grpc/grpc-js';
import { ContainerSpec } from '../src/gen/osvirt/v1/container';
import { ContainerServiceService, GetContainerResponse } from '../src/gen/osvirt/v1/container_service';
import { decodeStatusDetails } from '../src/core/grpc-status';
import { detectLayout } from '../drivers/lxc/cgroups';
import { isRoot, TestDaemon, useDaemon, type Client } from './support/daemon';
import { busybox } from './support/specs';

const UINT64_MAX = 2n ** 64n - 1n;
const layout = isRoot() ? detectLayout() : undefined;

function varint(v: bigint): Buffer {
  const out: number[] = [];
  do {
    let b = Number(v & 0x7fn);
    v >>= 7n;
    if (v) b |= 0x80;
    out.push(b);
  } while (v);
  return Buffer.from(out);
}

function tag(field: number, wire: 0 | 2): Buffer {
  return varint(BigInt((field << 3) | wire));
}

function lengthDelimited(field: number, body: Buffer): Buffer {
  return Buffer.concat([tag(field, 2), varint(BigInt(body.length)), body]);
}

/** CreateContainerRequest{name, spec: busybox + resources{<field>: value}}, the resources written by hand. */
function createRequest(name: string, resourcesField: number, value: bigint): Buffer {
  const base = Buffer.from(ContainerSpec.encode(busybox()).finish());
  // ContainerSpec.resources = 6; an embedded message seen twice is merged, so appending sets it.
  const spec = Buffer.concat([base, lengthDelimited(6, Buffer.concat([tag(resourcesField, 0), varint(value)]))]);
  return Buffer.concat([lengthDelimited(1, Buffer.from(name)), lengthDelimited(2, spec)]);
}

// Resources field numbers (proto/osvirt/v1/container.proto).
const MEMORY_LIMIT_BYTES = 1;
const CPU_QUOTA_US = 3;

describe('64-bit fields on the wire', function () {
  this.timeout(120000);
  let d: TestDaemon;
  let c: Client;
  let raw: Record<string, (req: Buffer, md: Metadata, cb: (e: ServiceError | null, r: Buffer) => void) => unknown>;
  useDaemon((daemon, client) => {
    d = daemon;
    c = client;
    const defs: Record<string, object> = {};
    for (const [key, def] of Object.entries(ContainerServiceService))
      defs[key] = { ...def, requestSerialize: (b: Buffer) => b, responseDeserialize: (b: Buffer) => b };
    const Raw = makeGenericClientConstructor(defs as unknown as ServiceDefinition, 'Raw');
    raw = new Raw(`unix://${d.socket}`, credentials.createInsecure()) as unknown as typeof raw;
  });
  after(() => (raw as unknown as { close?: () => void } | undefined)?.close?.());

  const call = (method: string, req: Buffer) =>
    new Promise<{ err: ServiceError | null; res: Buffer }>((resolve) => raw[method]!(req, new Metadata(), (err, res) => resolve({ err, res })));
  const names = async () => (await c.api.containers.listContainers({ pageSize: 0, pageToken: '', driver: '', states: [] })).containers.map((x) => x.name);

  for (const [label, field, fieldPath, value, max] of [
    ['UINT64_MAX as a memory limit', MEMORY_LIMIT_BYTES, 'spec.resources.memory_limit_bytes', UINT64_MAX, 2n ** 62n - 1n],
    ['2^53+1 as a CPU quota', CPU_QUOTA_US, 'spec.resources.cpu_quota_us', 2n ** 53n + 1n, 2n ** 44n - 1n],
    ['UINT64_MAX as a CPU quota', CPU_QUOTA_US, 'spec.resources.cpu_quota_us', UINT64_MAX, 2n ** 44n - 1n],
  ] as const) {
    it(`answers ${label} with INVALID_ARGUMENT naming the field, and creates nothing`, async () => {
      const name = 'hostile';
      const { err } = await call('createContainer', createRequest(name, field, value));
      assert.ok(err, 'the create succeeded');
      assert.equal(err.code, Code.INVALID_ARGUMENT, `${Code[err.code]}: ${err.details}`);
      // The exact decimal: a value rounded through a double would print differently (2^53+1 as ...992).
      assert.equal(err.details, `${fieldPath}: ${value} is out of range (max ${max})`);
      const det = decodeStatusDetails(err.metadata);
      assert.equal(det.badRequest?.fieldViolations[0]?.field, fieldPath);
      assert.deepEqual(await names(), []);
      assert.ok(!existsSync(path.join(d.stateDir, 'containers', `${name}.json`)), 'a definition was written');
      if (layout) assert.ok(!existsSync(path.join(layout.kind === 'v2' ? layout.root : layout.v1['memory']!, 'osvirt', name)), 'a cgroup was made');
      assert.ok(d.proc && d.proc.exitCode === null, 'the daemon died');
    });
  }

  it('keeps a valid limit past 2^53 exact: GetContainer returns the very value sent', async () => {
    const v = 2n ** 53n + 1n;
    const { err } = await call('createContainer', createRequest('past53', MEMORY_LIMIT_BYTES, v));
    assert.equal(err, null, err?.details);
    const { err: gerr, res } = await call('getContainer', Buffer.concat([lengthDelimited(1, Buffer.from('past53'))]));
    assert.equal(gerr, null, gerr?.details);
    assert.equal(GetContainerResponse.decode(res).container?.spec?.resources?.memoryLimitBytes, v);
    // The definition on disk holds the exact decimal (proto JSON: 64-bit integers as strings).
    const def = JSON.parse(readFileSync(path.join(d.stateDir, 'containers', 'past53.json'), 'utf8')) as { spec: { resources: { memoryLimitBytes: string } } };
    assert.equal(def.spec.resources.memoryLimitBytes, v.toString());
    await c.api.containers.deleteContainer({ name: 'past53', force: true, allowMissing: false });
  });

  it('round-trips a 1 TiB memory limit: GetContainer and the host cgroup show exactly 2^40', async function () {
    if (!layout) return this.skip();
    const v = 2n ** 40n;
    const { err } = await call('createContainer', createRequest('tib', MEMORY_LIMIT_BYTES, v));
    assert.equal(err, null, err?.details);
    try {
      await c.api.containers.startContainer({ name: 'tib' });
      const got = (await c.api.containers.getContainer({ name: 'tib' })).container!;
      assert.equal(got.spec?.resources?.memoryLimitBytes, v);
      const dir = layout.kind === 'v2' ? path.join(layout.root, 'osvirt', 'tib') : path.join(layout.v1['memory']!, 'osvirt', 'tib');
      assert.equal(readFileSync(path.join(dir, layout.kind === 'v2' ? 'memory.max' : 'memory.limit_in_bytes'), 'utf8').trim(), v.toString());
      assert.equal((await c.api.containers.getContainerStats({ name: 'tib' })).stats?.memoryLimitBytes, v);
    } finally {
      await c.api.containers.deleteContainer({ name: 'tib', force: true, allowMissing: true });
    }
  });
});
