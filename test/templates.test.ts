// Templates through TemplateService: the debian template built once per run
// (shared with the system-container tests), listed with its metadata, shared
// by containers, refused removal while in use; bad parameters refused.
import * as assert from 'node:assert/strict';
import { ContainerSpec } from '../src/gen/osvirt/v1/container';
import type { BuildTemplateResponse, Template } from '../src/gen/osvirt/v1/template_service';
import { TestDaemon, type Client } from './support/daemon';
import { debianTemplate } from './support/debian';
import { sh } from './support/exec';
import { busybox } from './support/specs';

function build(c: Client, name: string, options = { release: '', variant: '', packages: [] as string[] }): Promise<{ template: Template; progress: string[] }> {
  return new Promise((resolve, reject) => {
    const progress: string[] = [];
    let template: Template | undefined;
    const s = c.templates.buildTemplate({ name, options });
    s.on('data', (m: BuildTemplateResponse) => {
      if (m.message?.$case === 'progress') progress.push(m.message.value);
      else if (m.message?.$case === 'template') template = m.message.value;
    });
    s.on('error', reject);
    s.on('end', () => (template ? resolve({ template, progress }) : reject(new Error('no template at the end of the stream'))));
  });
}

const code = async (p: Promise<unknown>) =>
  p.then(
    () => 'OK',
    (e: { code?: number; details?: string }) => `${e.code} ${e.details ?? ''}`,
  );

describe('templates (TemplateService)', function () {
  this.timeout(300000);
  let d: TestDaemon;
  let c: Client;
  let skip = '';

  before(async function () {
    const t = await debianTemplate();
    if ('skip' in t) {
      skip = t.skip;
      this.test!.parent!.title += ` (debian parts skipped: ${skip})`;
    }
    d = new TestDaemon();
    c = await d.start('skip' in t ? [] : t.daemonArgs);
  });
  after(async () => {
    await d?.destroy();
  });

  it('builds the debian template once, with progress, and lists it with its init and halt signal', async function () {
    if (skip) return this.skip();
    const first = await build(c, 'debian');
    assert.match(first.template.key, /^debian-bookworm-minbase-[0-9a-f]{12}$/);
    assert.deepEqual(first.template.init, ['/sbin/init']);
    assert.equal(first.template.haltSignal, 37, 'systemd halts on SIGRTMIN+3');
    assert.ok(first.template.sizeBytes > 50 * 1024 * 1024);
    assert.match(first.template.source, /^https?:\/\//, "built from the host's mirror");
    // Built now, or earlier in this run by another suite: either way the second build is a lookup.
    const again = await build(c, 'debian', { release: 'bookworm', variant: 'minbase', packages: [] });
    assert.equal(again.template.key, first.template.key, 'defaults and explicit defaults are one parameter set');
    assert.deepEqual(
      again.progress.filter((l) => /^I: /.test(l)),
      [],
      'nothing was built again',
    );
    const listed = (await c.api.templates.listTemplates({})).templates.find((t) => t.key === first.template.key);
    assert.equal(listed?.options?.release, 'bookworm');
  });

  it('shares one template between containers, and refuses to remove it while they use it', async function () {
    if (skip) return this.skip();
    const spec = ContainerSpec.fromPartial({
      driver: 'lxc',
      rootfs: { source: { $case: 'template', value: 'debian' } },
      process: { args: ['/bin/sleep', 'infinity'] },
      network: { mode: { $case: 'none', value: {} } },
    });
    for (const n of ['deb-a', 'deb-b']) {
      await c.api.containers.createContainer({ name: n, spec });
      await c.api.containers.startContainer({ name: n });
    }
    try {
      for (const n of ['deb-a', 'deb-b']) assert.match(await sh(c, n, 'grep VERSION_CODENAME /etc/os-release'), /bookworm/);
      // A write in one is its own: the template below stays unchanged.
      await sh(c, 'deb-a', 'echo mine > /etc/motd');
      assert.notEqual(await sh(c, 'deb-b', 'cat /etc/motd'), 'mine');
      const t = (await c.api.templates.listTemplates({})).templates.find((x) => x.name === 'debian')!;
      assert.deepEqual(t.usedBy, ['deb-a', 'deb-b']);
      const refused = await code(c.api.templates.removeTemplate({ key: t.key, allowMissing: false }));
      assert.match(refused, /^9 .*deb-a, deb-b/);
    } finally {
      for (const n of ['deb-a', 'deb-b']) await c.api.containers.deleteContainer({ name: n, force: true, allowMissing: true });
    }
  });

  it('removes a template no container uses (busybox, rebuilt on next use)', async () => {
    await c.api.containers.createContainer({ name: 'bb-user', spec: busybox() });
    assert.match(await code(c.api.templates.removeTemplate({ key: 'busybox', allowMissing: false })), /^9 .*bb-user/);
    await c.api.containers.deleteContainer({ name: 'bb-user', force: true, allowMissing: false });
    await c.api.templates.removeTemplate({ key: 'busybox', allowMissing: false });
    assert.ok(!(await c.api.templates.listTemplates({})).templates.some((t) => t.key === 'busybox'));
    assert.match(await code(c.api.templates.removeTemplate({ key: 'busybox', allowMissing: false })), /^5 /);
    await c.api.templates.removeTemplate({ key: 'busybox', allowMissing: true });
    // The next container builds it again.
    await c.api.containers.createContainer({ name: 'bb-again', spec: busybox() });
    await c.api.containers.deleteContainer({ name: 'bb-again', force: true, allowMissing: false });
  });

  it('refuses bad parameters with INVALID_ARGUMENT naming the field, and builds nothing', async () => {
    const before = (await c.api.templates.listTemplates({})).templates.map((t) => t.key);
    assert.match(await code(build(c, 'debian', { release: 'sid', variant: '', packages: [] })), /^3 .*options\.release/);
    assert.match(await code(build(c, 'debian', { release: '', variant: 'fat', packages: [] })), /^3 .*options\.variant/);
    assert.match(await code(build(c, 'fedora')), /^3 .*template/);
    assert.match(await code(build(c, 'busybox', { release: 'bookworm', variant: '', packages: [] })), /^3 .*options/);
    const bad = ContainerSpec.fromPartial({
      driver: 'lxc',
      rootfs: { source: { $case: 'template', value: 'debian' }, templateOptions: { packages: ['Not A Package'] } },
    });
    assert.match(await code(c.api.containers.createContainer({ name: 'bad-pkg', spec: bad })), /^3 .*spec\.rootfs\.template_options\.packages\[0\]/);
    const onPath = ContainerSpec.fromPartial({
      driver: 'lxc',
      rootfs: { source: { $case: 'path', value: '/srv' }, templateOptions: { release: 'bookworm' } },
      process: { args: ['/bin/true'] },
    });
    assert.match(await code(c.api.containers.createContainer({ name: 'bad-opts', spec: onPath })), /^3 .*spec\.rootfs\.template_options/);
    assert.deepEqual(
      (await c.api.templates.listTemplates({})).templates.map((t) => t.key),
      before,
    );
    assert.deepEqual((await c.api.containers.listContainers({ pageSize: 10, pageToken: '', driver: '', states: [] })).containers, []);
  });
});
