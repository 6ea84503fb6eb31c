// Driver extensions out of process: the jail and vserver drivers served by
// src/plugin/serve.ts, registered with --driver (the daemon runs neither
// in process). Their API services (JailService, VServerService) are
// declared in GetInfo and forwarded by the daemon; the imports call back
// into the daemon to define and start containers. The tests check what the
// host sees: the jail's address on lo, its root and hostname from inside,
// its jid as the key jexec resolves; the guest's processes.
import { strict as assert } from 'node:assert';
import { execFile, execFileSync } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { credentials, status as Code, type ServiceError } from '@grpc/grpc-js';
import { ContainerState } from '../src/gen/osvirt/v1/container';
import { JailServiceClient, type ListJailsResponse } from '../src/gen/osvirt/v1/jail';
import { repoPath } from '../src/paths';
import { spawnPlugin, type SpawnedPlugin } from '../src/plugin/spawn-plugin';
import { declareExtensions, proxyExtensions } from '../src/plugin/extension-proxy';
import { templateExtension } from '../drivers/lxc/template-service';
import type { Templates } from '../drivers/lxc/templates';
import { isRoot, TestDaemon, type Client } from './support/daemon';
import { removeLeftovers } from '../src/testing/leftovers';
import { sh } from './support/exec';

const execFileP = promisify(execFile);
const serveJs = repoPath('dist', 'src', 'plugin', 'serve.js');
const ADDR = '198.51.100.77';

function loAddresses(): string {
  return execFileSync('ip', ['-4', 'addr', 'show', 'dev', 'lo'], { encoding: 'utf8' });
}

function listJails(client: JailServiceClient): Promise<ListJailsResponse> {
  return new Promise((resolve, reject) =>
    client.listJails({ pageSize: 0, pageToken: '' }, (e: ServiceError | null, r: ListJailsResponse) => (e ? reject(e) : resolve(r))),
  );
}

describe('driver extension declarations', () => {
  it('declares each method with its role and streaming, and forwards only what the daemon can check', () => {
    const declared = declareExtensions([templateExtension(() => undefined as unknown as Templates)]);
    assert.deepEqual(declared, [
      {
        name: 'osvirt.v1.TemplateService',
        methods: [
          { name: 'ListTemplates', role: 'reader', serverStreaming: false, clientStreaming: false },
          { name: 'BuildTemplate', role: 'admin', serverStreaming: true, clientStreaming: false },
          { name: 'RemoveTemplate', role: 'admin', serverStreaming: false, clientStreaming: false },
        ],
      },
    ]);
    const [proxy] = proxyExtensions(
      'x',
      [
        {
          name: 'acme.v1.Thing',
          methods: [
            { name: 'Get', role: 'reader', serverStreaming: false, clientStreaming: false },
            { name: 'Upload', role: 'admin', serverStreaming: false, clientStreaming: true },
            { name: 'Nuke', role: 'root', serverStreaming: false, clientStreaming: false },
            { name: 'Watch', role: 'operator', serverStreaming: true, clientStreaming: false },
          ],
        },
      ],
      () => {
        throw new Error('not called');
      },
    );
    assert.deepEqual(
      Object.values(proxy!.definition).map((d) => [d.path, d.responseStream]),
      [
        ['/acme.v1.Thing/Get', false],
        ['/acme.v1.Thing/Watch', true],
      ],
    );
    assert.deepEqual(proxy!.roles, { Get: 'reader', Watch: 'operator' });
  });
});

describe('driver extensions served out of process (jls, jexec, vserver-stat)', function () {
  this.timeout(120000);
  let d: TestDaemon;
  let c: Client;
  const plugins: SpawnedPlugin[] = [];
  const clients: JailServiceClient[] = [];
  let pluginDir: string;

  async function cli(...args: string[]): Promise<{ stdout: string; stderr: string; code: number }> {
    try {
      return { ...(await execFileP(process.execPath, [repoPath('bin', 'osvirt'), '--connect', `unix://${d.socket}`, ...args])), code: 0 };
    } catch (e) {
      const err = e as { stdout: string; stderr: string; code: number };
      return { stdout: err.stdout, stderr: err.stderr, code: err.code };
    }
  }

  before(async function () {
    if (!isRoot()) return this.skip();
    d = new TestDaemon();
    pluginDir = path.join(d.dir, 'plugins');
    for (const name of ['jail', 'vserver']) {
      plugins.push(
        await spawnPlugin(process.execPath, [serveJs, name, '--log-level', 'warn', '--bridge', `${d.bridge}e`, '--subnet', '10.247.0.0/16'], {
          socket: path.join(pluginDir, `${name}.sock`),
          stateDir: path.join(pluginDir, `${name}-state`),
        }),
      );
    }
    c = await d.start(['--drivers', 'lxc', '--driver', `jail=${plugins[0]!.endpoint}`, '--driver', `vserver=${plugins[1]!.endpoint}`]);
    const drivers = (await c.api.system.listDrivers({})).drivers;
    for (const name of ['jail', 'vserver']) {
      const x = drivers.find((y) => y.name === name);
      assert.ok(x?.external, `${name} runs out of process`);
      assert.equal(x.health, 1, `${name}: ${x.messages.join('; ')}`);
    }
  });

  after(async () => {
    for (const cl of clients) cl.close();
    // The daemon deletes the containers through the plugins, so they go last.
    await d?.destroy();
    for (const p of plugins) await p.stop();
    await removeLeftovers({ dir: pluginDir });
    if (existsSync(`/sys/class/net/${d.bridge}e`)) execFileSync('ip', ['link', 'del', `${d.bridge}e`]);
  });

  it('imports a jail.conf through the plugin and lists it with jls: jid, address, hostname and path as the host sees them; jexec finds it by jid', async () => {
    const root = path.join(d.dir, 'jx-root');
    for (const dir of ['bin', 'etc', 'proc', 'sys', 'dev', 'tmp', 'root', 'var/run']) mkdirSync(path.join(root, dir), { recursive: true });
    const bb = ['/bin/busybox', '/usr/bin/busybox'].find((p) => existsSync(p))!;
    copyFileSync(bb, path.join(root, 'bin', 'busybox'));
    chmodSync(path.join(root, 'bin', 'busybox'), 0o755);
    for (const a of ['sh', 'cat', 'hostname', 'sleep']) symlinkSync('busybox', path.join(root, 'bin', a));
    writeFileSync(path.join(root, 'marker'), 'out-of-process jail root\n');
    const conf = path.join(d.dir, 'jail.conf');
    writeFileSync(conf, `jx {\n  persist;\n  path = "${root}";\n  host.hostname = "jx-host";\n  ip4.addr = ${ADDR};\n  interface = lo;\n}\n`);

    let r = await cli('jail', 'import', conf, '--start');
    assert.equal(r.code, 0, r.stderr);
    const ct = await c.api.containers.getContainer({ name: 'jx' });
    assert.equal(ct.container?.spec?.driver, 'jail');
    assert.equal(ct.container?.status?.state, ContainerState.CONTAINER_STATE_RUNNING);
    const initPid = ct.container!.status!.initPid;
    assert.ok(initPid > 0);
    assert.match(loAddresses(), new RegExp(`inet ${ADDR.replace(/\./g, '\\.')}/`), "the jail's address is on lo");

    // The JailService RPC through the daemon, forwarded to the plugin.
    const jc = new JailServiceClient(`unix://${d.socket}`, credentials.createInsecure());
    clients.push(jc);
    const jail = (await listJails(jc)).jails.find((j) => j.name === 'jx');
    assert.ok(jail, 'listed by ListJails');
    assert.ok(jail.jid > 0);
    assert.deepEqual(jail.ip4Addr, [ADDR]);
    assert.equal(jail.hostname, 'jx-host');
    assert.equal(jail.path, root);
    assert.equal(jail.initPid, initPid, 'the pid the daemon recorded');
    // That pid is a process on the host, in a UTS namespace with that hostname and that root.
    assert.equal(execFileSync('nsenter', [`--uts=/proc/${initPid}/ns/uts`, '--', 'hostname'], { encoding: 'utf8' }).trim(), 'jx-host');
    assert.equal(await sh(c, 'jx', 'cat /marker; hostname'), 'out-of-process jail root\njx-host');

    // The CLI: jls's table, and jexec by jid (resolved through ListJails).
    r = await cli('jls');
    assert.equal(r.code, 0, r.stderr);
    const row = r.stdout.split('\n').find((l) => l.trim().endsWith(root));
    assert.ok(row, r.stdout);
    assert.deepEqual(row.trim().split(/\s+/), [String(jail.jid), ADDR, 'jx-host', root]);
    r = await cli('jexec', String(jail.jid), 'cat', '/marker');
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'out-of-process jail root\n');

    // Roles travel with the declaration: the read-only socket may list, not import.
    const ro = new JailServiceClient(`unix://${path.join(path.dirname(d.socket), 'osvirt-ro.sock')}`, credentials.createInsecure());
    clients.push(ro);
    assert.ok((await listJails(ro)).jails.some((j) => j.name === 'jx'));
    const denied = await new Promise<ServiceError>((resolve, reject) =>
      ro.importJailConf({ text: 'jy { persist; }', fileName: 'x.conf', names: [], rctlConf: '', start: false, validateOnly: true }, (e: ServiceError | null) =>
        e ? resolve(e) : reject(new Error('import allowed on the read-only socket')),
      ),
    );
    assert.equal(denied.code, Code.PERMISSION_DENIED);

    await c.api.containers.deleteContainer({ name: 'jx', force: true, allowMissing: false });
    assert.ok(!(await listJails(jc)).jails.some((j) => j.name === 'jx'), 'gone from jls');
    assert.doesNotMatch(loAddresses(), new RegExp(`inet ${ADDR.replace(/\./g, '\\.')}/`), 'address removed');
  });

  it('imports a util-vserver directory through the plugin and shows the running guest in vserver-stat', async () => {
    let r = await cli('vserver', 'import', repoPath('examples', 'vservers', 'guest1'), '--start');
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^guest1 created and started \(context 43\)$/m);
    assert.match(loAddresses(), /inet 192\.0\.2\.43\//, "the guest's address is on lo");
    r = await cli('vserver-stat');
    assert.equal(r.code, 0, r.stderr);
    const row = r.stdout.split('\n').find((l) => l.startsWith('43 '));
    assert.ok(row, r.stdout);
    assert.match(row, /guest1$/);
    const procs = Number(row.trim().split(/\s+/)[1]);
    const inside = Number(await sh(c, 'guest1', 'ls -d /proc/[0-9]* | wc -l'));
    assert.ok(procs >= 1 && procs <= inside, `PROC QTY ${procs} counts the guest's processes (${inside} seen inside, with the exec)`);
    r = await cli('vserver', 'export', 'guest1', path.join(d.dir, 'guest1-out'));
    assert.equal(r.code, 0, r.stderr);
    assert.ok(existsSync(path.join(d.dir, 'guest1-out', 'context')));
    await c.api.containers.deleteContainer({ name: 'guest1', force: true, allowMissing: false });
    assert.doesNotMatch(loAddresses(), /inet 192\.0\.2\.43\//);
  });
});
