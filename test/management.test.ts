// Management containers over worker containers (the seed talk's privilege
// hierarchy): the manager's own client, run inside it, manages its workers
// through its endpoint and is refused everything else.
import { strict as assert } from 'node:assert';
import { ContainerState, Mount, MountType } from '../src/gen/osvirt/v1/container';
import { readDefinition } from '../src/cli/spec-file';
import { repoPath, repoRoot } from '../src/paths';
import { TestDaemon, useDaemon, type Client } from './support/daemon';
import { execIn } from './support/exec';
import { busybox } from './support/specs';

describe('management containers', function () {
  this.timeout(120000);
  let d: TestDaemon;
  let c: Client;
  useDaemon((daemon, client) => {
    d = daemon;
    c = client;
  });

  it('lets the manager start, stop and checkpoint its workers, and nothing else', async () => {
    for (const n of ['worker-1', 'worker-2', 'outsider']) await c.api.containers.createContainer({ name: n, spec: busybox() });
    const def = readDefinition(repoPath('examples', 'lxc-management.yaml'));
    // The manager runs the client from this checkout, which may live under a
    // directory an application container makes private (/tmp in CI): bind it.
    def.spec!.mounts.push(Mount.fromPartial({ type: MountType.MOUNT_TYPE_BIND, source: repoRoot(), destination: repoRoot(), readonly: true }));
    await c.api.containers.createContainer(def);
    await c.api.containers.startContainer({ name: 'manager' });

    const r = await execIn(c, 'manager', [process.execPath, repoPath('examples', 'management', 'manage.js')]);
    assert.equal(r.exitCode, 0, r.stderr);
    const steps = Object.fromEntries(
      r.stdout
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as { step: string; ok: boolean; value?: unknown; code?: number; skipped?: string })
        .map((s) => [s.step, s]),
    );
    assert.deepEqual(steps['list']?.value, ['worker-1', 'worker-2'], 'the manager sees only its workers');
    assert.equal(steps['start worker-1']?.ok, true);
    assert.equal(steps['start worker-2']?.ok, true);
    assert.equal(steps['stop worker-1']?.value, 'stopped');
    const cp = steps['checkpoint worker-2']!;
    assert.ok(cp.ok || cp.skipped, JSON.stringify(cp));
    for (const denied of ['start outsider', 'get outsider', 'create', 'delete worker-2']) {
      assert.equal(steps[denied]?.ok, false, denied);
      assert.equal(steps[denied]?.code, 7, `${denied}: PERMISSION_DENIED`);
    }
    // The effects, seen through the admin API.
    const state = async (n: string) => (await c.api.containers.getContainer({ name: n })).container!.status!.state;
    assert.equal(await state('worker-1'), ContainerState.CONTAINER_STATE_STOPPED);
    assert.equal(await state('worker-2'), ContainerState.CONTAINER_STATE_RUNNING);
    assert.equal(await state('outsider'), ContainerState.CONTAINER_STATE_DEFINED);
    if (cp.ok) assert.equal((await c.api.containers.listCheckpoints({ name: 'worker-2', pageSize: 0, pageToken: '' })).checkpoints.length, 1);

    // The manager has its endpoint and cannot reach the host's admin socket.
    assert.equal((await execIn(c, 'manager', ['/bin/sh', '-c', 'test -S /run/osvirt/osvirt.sock'])).exitCode, 0);
    assert.notEqual((await execIn(c, 'manager', ['/bin/sh', '-c', `test -e ${d.socket}`])).exitCode, 0);
    // A worker has no endpoint at all.
    assert.notEqual((await execIn(c, 'worker-2', ['/bin/sh', '-c', 'ls /run/osvirt'])).exitCode, 0);
    // The grant cannot be widened from inside: the grant lives in the daemon, not in the container.
    const audit = (await import('node:fs')).readFileSync(`${d.stateDir}/audit.log`, 'utf8');
    assert.match(
      audit,
      /"principal":"container:manager","role":"reader","via":"management","method":"StartContainer","container":"outsider","result":"PERMISSION_DENIED"/,
    );

    // Stopping the manager removes its endpoint.
    await c.api.containers.stopContainer({ name: 'manager', signal: 0, timeout: { seconds: 5n, nanos: 0 } });
    assert.ok(!(await import('node:fs')).existsSync(`${d.stateDir}/management/manager`));
  });
});
