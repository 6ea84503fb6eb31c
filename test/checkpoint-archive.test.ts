// Checkpoint archives: import validates untrusted input and files the
// checkpoint; export streams it back in the same layout. (Restoring from an
// imported checkpoint on a second daemon is in checkpoint.test.ts, which
// needs CRIU; this file checks the archive handling itself.)
import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync, existsSync, readdirSync } from 'node:fs';
import * as path from 'node:path';
import { status as Code, type ServiceError } from '@grpc/grpc-js';
import type { ExportCheckpointResponse } from '../src/gen/osvirt/v1/container_service';
import { Checkpoint } from '../src/gen/osvirt/v1/container';
import { TestDaemon, useDaemon, type Client } from './support/daemon';
import { busybox } from './support/specs';

function importArchive(c: Client, data: Buffer, start: { name?: string; checkpoint?: string } = {}): Promise<Checkpoint> {
  return new Promise((resolve, reject) => {
    const s = c.containers.importCheckpoint((err, res) => (err ? reject(err) : resolve(res.checkpoint!)));
    s.write({ message: { $case: 'start', value: { name: start.name ?? '', checkpoint: start.checkpoint ?? '' } } });
    for (let i = 0; i < data.length; i += 65536) s.write({ message: { $case: 'data', value: data.subarray(i, i + 65536) } });
    s.end();
  });
}

describe('checkpoint archives (export/import)', function () {
  this.timeout(60000);
  let d: TestDaemon;
  let c: Client;
  useDaemon((daemon, client) => {
    d = daemon;
    c = client;
  });

  function archive(meta: object | string | undefined, withImages = true): Buffer {
    const dir = path.join(d.dir, `arc-${Math.random().toString(36).slice(2)}`);
    mkdirSync(dir);
    if (withImages) {
      mkdirSync(path.join(dir, 'checkpoint'));
      writeFileSync(path.join(dir, 'checkpoint', 'inventory.img'), 'not really an image');
    }
    if (meta !== undefined) writeFileSync(path.join(dir, 'osvirt.json'), typeof meta === 'string' ? meta : JSON.stringify(meta));
    return execFileSync('tar', ['-C', dir, '-cf', '-', '.'], { maxBuffer: 1 << 26 });
  }

  const meta = (container: string, name: string) => Checkpoint.toJSON(Checkpoint.fromPartial({ name, container, driver: 'lxc', spec: busybox() })) as object;

  it('imports an archive under the names it carries or the caller gives, and exports it back', async () => {
    const cp = await importArchive(c, archive(meta('origin', 'cp1')));
    assert.equal(cp.container, 'origin');
    assert.equal(cp.name, 'cp1');
    const dir = path.join(d.stateDir, 'checkpoints', 'origin', 'cp1');
    assert.ok(existsSync(path.join(dir, 'checkpoint', 'inventory.img')));
    const renamed = await importArchive(c, archive(meta('origin', 'cp1')), { name: 'elsewhere', checkpoint: 'copy' });
    assert.equal(renamed.container, 'elsewhere');
    assert.equal(JSON.parse(readFileSync(path.join(d.stateDir, 'checkpoints', 'elsewhere', 'copy', 'osvirt.json'), 'utf8')).container, 'elsewhere');
    // The same name again is refused.
    await assert.rejects(importArchive(c, archive(meta('origin', 'cp1'))), (e: ServiceError) => e.code === Code.ALREADY_EXISTS);

    await c.api.containers.createContainer({ name: 'origin', spec: busybox() });
    const listed = (await c.api.containers.listCheckpoints({ name: 'origin', pageSize: 0, pageToken: '' })).checkpoints.map((x) => x.name);
    assert.deepEqual(listed, ['cp1']);
    const chunks: Buffer[] = [];
    await new Promise<void>((resolve, reject) => {
      const s = c.containers.exportCheckpoint({ name: 'origin', checkpoint: 'cp1' });
      s.on('data', (m: ExportCheckpointResponse) => chunks.push(m.data));
      s.on('end', () => resolve());
      s.on('error', reject);
    });
    const names = execFileSync('tar', ['-tf', '-'], { input: Buffer.concat(chunks), encoding: 'utf8' })
      .split('\n')
      .filter(Boolean)
      .sort();
    assert.ok(names.includes('./osvirt.json') && names.includes('./checkpoint/inventory.img'), names.join(' '));
    await c.api.containers.deleteContainer({ name: 'origin', force: true, allowMissing: false });
    assert.ok(!existsSync(dir), 'deleting the container removes its checkpoints');
  });

  it('rejects archives that are not osvirt checkpoints or carry hostile names, leaving nothing behind', async () => {
    const before = readdirSync(path.join(d.stateDir, 'checkpoints')).sort();
    const bad: [Buffer, RegExp][] = [
      [Buffer.from('this is not a tar archive at all'.repeat(100)), /tar/],
      [archive(undefined), /osvirt\.json/],
      [archive('{not json'), /osvirt\.json/],
      [archive(meta('x', 'y'), false), /checkpoint\/ directory/],
      [archive(meta('../../etc', 'evil')), /name/],
      [archive(meta('fine', '../evil')), /checkpoint/],
    ];
    for (const [data, why] of bad) {
      await assert.rejects(importArchive(c, data), (e: ServiceError) => {
        assert.equal(e.code, Code.INVALID_ARGUMENT, e.details);
        assert.match(e.details, why);
        return true;
      });
    }
    await assert.rejects(importArchive(c, archive(meta('x', 'y')), { name: 'Bad Name' }), (e: ServiceError) => e.code === Code.INVALID_ARGUMENT);
    assert.deepEqual(readdirSync(path.join(d.stateDir, 'checkpoints')).sort(), before);
    assert.ok(!existsSync('/etc/evil'));
  });
});
