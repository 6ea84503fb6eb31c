// Who may do what: the read-only socket, mutual TLS with role-bearing
// certificates, per-method roles and the audit log, through the real daemon.
import { strict as assert } from 'node:assert';
import { execFile } from 'node:child_process';
import { chmodSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import { promisify } from 'node:util';
import { credentials, status as Code, type ServiceError } from '@grpc/grpc-js';
import { SystemServiceClient } from '../src/gen/osvirt/v1/system_service';
import { connectAsync } from '../src/client';
import { decodeStatusDetails } from '../src/core/grpc-status';
import { ensureCa, issueClient, issueServer } from '../src/auth/certs';
import { repoPath } from '../src/paths';
import { isRoot, TestDaemon } from './support/daemon';
import { busybox } from './support/specs';

const execFileP = promisify(execFile);

async function denied(p: Promise<unknown>, code: Code, reason?: string): Promise<void> {
  await assert.rejects(p, (e: ServiceError) => {
    assert.equal(e.code, code, `${Code[e.code]}: ${e.details}`);
    if (reason) assert.equal(decodeStatusDetails(e.metadata).errorInfo?.reason, reason);
    return true;
  });
}

describe('authentication, authorization and audit', function () {
  this.timeout(60000);
  let d: TestDaemon;
  let pki: string;
  let other: string;

  before(async function () {
    if (!isRoot()) return this.skip();
    d = new TestDaemon();
    pki = path.join(d.dir, 'pki');
    other = path.join(d.dir, 'other-ca');
    ensureCa(pki);
    issueServer(pki, []);
    issueClient(pki, 'alice', 'admin');
    issueClient(pki, 'oscar', 'operator');
    issueClient(pki, 'rita', 'reader');
    ensureCa(other);
    issueClient(other, 'mallory', 'admin');
    await d.start(['--listen', '127.0.0.1:0', '--tls-ca', `${pki}/ca.pem`, '--tls-cert', `${pki}/server.pem`, '--tls-key', `${pki}/server-key.pem`]);
  });
  after(async () => {
    await d?.destroy();
  });

  const tls = (dir: string, name: string) =>
    connectAsync({ address: `tcp://localhost:${d.tcpPort}`, tlsCa: `${pki}/ca.pem`, tlsCert: `${dir}/${name}.pem`, tlsKey: `${dir}/${name}-key.pem` });

  it('serves reads and refuses every mutation on the read-only socket', async () => {
    const ro = connectAsync({ address: `unix://${path.join(d.dir, 'osvirt-ro.sock')}` });
    try {
      assert.ok((await ro.api.system.getVersion({})).version);
      await ro.api.containers.listContainers({ pageSize: 0, pageToken: '', driver: '', states: [] });
      await denied(ro.api.containers.createContainer({ name: 'ro', spec: busybox() }), Code.PERMISSION_DENIED, 'ROLE_INSUFFICIENT');
      await denied(ro.api.containers.startContainer({ name: 'ro' }), Code.PERMISSION_DENIED, 'ROLE_INSUFFICIENT');
      await assert.rejects(ro.api.containers.getContainer({ name: 'ro' }), (e: ServiceError) => e.code === Code.NOT_FOUND);
    } finally {
      ro.close();
    }
    const mode = (await import('node:fs')).statSync(path.join(d.dir, 'osvirt-ro.sock')).mode & 0o777;
    assert.equal(mode, 0o666);
    assert.equal((await import('node:fs')).statSync(d.socket).mode & 0o777, 0o660);
  });

  it('maps certificate roles to methods over TLS 1.3', async () => {
    const alice = tls(pki, 'alice');
    const oscar = tls(pki, 'oscar');
    const rita = tls(pki, 'rita');
    try {
      await alice.api.containers.createContainer({ name: 'remote', spec: busybox() });
      await denied(oscar.api.containers.createContainer({ name: 'remote2', spec: busybox() }), Code.PERMISSION_DENIED, 'ROLE_INSUFFICIENT');
      await oscar.api.containers.startContainer({ name: 'remote' });
      await denied(rita.api.containers.stopContainer({ name: 'remote', signal: 0, timeout: undefined }), Code.PERMISSION_DENIED, 'ROLE_INSUFFICIENT');
      const list = await rita.api.containers.listContainers({ pageSize: 0, pageToken: '', driver: '', states: [] });
      assert.ok(list.containers.some((x) => x.name === 'remote'));
      await denied(oscar.api.containers.deleteContainer({ name: 'remote', force: true, allowMissing: false }), Code.PERMISSION_DENIED);
      await alice.api.containers.deleteContainer({ name: 'remote', force: true, allowMissing: false });
    } finally {
      for (const c of [alice, oscar, rita]) c.close();
    }
  });

  it('refuses a client without a certificate or with one from another CA before any method runs', async () => {
    const mallory = tls(other, 'mallory');
    await assert.rejects(mallory.api.system.getVersion({}), (e: ServiceError) => e.code === Code.UNAVAILABLE);
    mallory.close();
    // TLS that trusts our server but presents no client certificate.
    const anon = new SystemServiceClient(`localhost:${d.tcpPort}`, credentials.createSsl(readFileSync(`${pki}/ca.pem`)));
    await assert.rejects(
      new Promise((resolve, reject) => anon.getVersion({}, (e, r) => (e ? reject(e) : resolve(r)))),
      (e: ServiceError) => e.code === Code.UNAVAILABLE,
    );
    anon.close();
    // TLS 1.2 is refused even with a valid certificate.
    const tls12 = await new Promise<string>((resolve) => {
      const sock = tlsConnect({
        host: '127.0.0.1',
        port: d.tcpPort!,
        maxVersion: 'TLSv1.2',
        ca: readFileSync(`${pki}/ca.pem`),
        cert: readFileSync(`${pki}/alice.pem`),
        key: readFileSync(`${pki}/alice-key.pem`),
        servername: 'localhost',
      });
      sock.once('secureConnect', () => {
        sock.destroy();
        resolve('connected');
      });
      sock.once('error', (e) => resolve(e.message));
    });
    assert.match(tls12, /version|protocol/i);
    // A plain-TCP client cannot talk to the TLS port at all.
    const plain = connectAsync({ address: `tcp://127.0.0.1:${d.tcpPort}`, insecure: true });
    await assert.rejects(plain.api.system.getVersion({}), (e: ServiceError) => e.code === Code.UNAVAILABLE);
    plain.close();
  });

  it('does not let an unprivileged local user onto the admin socket', async () => {
    chmodSync(d.dir, 0o755); // let others reach the socket file, so its own mode is what is tested
    const script = `require(${JSON.stringify(repoPath('dist', 'src', 'client.js'))}).connectAsync({address: 'unix://${d.socket}'}).api.system.getVersion({}).then(() => console.log('allowed'), (e) => console.log('refused', e.code))`;
    const { stdout } = await execFileP('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, '-e', script]);
    assert.match(stdout, /refused/);
    // Even with the file mode opened up, SO_PEERCRED keeps a stranger out and lets the osvirt group in.
    chmodSync(d.socket, 0o666);
    try {
      const stranger = await execFileP('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, '-e', script]);
      assert.match(stranger.stdout, /refused 16/, 'UNAUTHENTICATED');
      const gid = /^osvirt:[^:]*:(\d+):/m.exec(readFileSync('/etc/group', 'utf8'))?.[1];
      if (gid) {
        const member = await execFileP('setpriv', ['--reuid=65534', '--regid=65534', `--groups=${gid}`, process.execPath, '-e', script]);
        assert.match(member.stdout, /allowed/);
      }
    } finally {
      chmodSync(d.socket, 0o660);
      chmodSync(d.dir, 0o700);
    }
  });

  it('writes every mutating call to the audit log, with who, what, which container and the result', async () => {
    const alice = tls(pki, 'alice');
    const rita = tls(pki, 'rita');
    try {
      await alice.api.containers.createContainer({ name: 'audited', spec: busybox() });
      await denied(rita.api.containers.startContainer({ name: 'audited' }), Code.PERMISSION_DENIED);
      await d.client.api.containers.deleteContainer({ name: 'audited', force: true, allowMissing: false });
      await alice.api.containers.getContainer({ name: 'nothing' }).catch(() => undefined);
    } finally {
      alice.close();
      rita.close();
    }
    const lines = readFileSync(path.join(d.stateDir, 'audit.log'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    const mine = lines.filter((l) => l['container'] === 'audited');
    assert.deepEqual(
      mine.map((l) => [l['principal'], l['method'], l['result']]),
      [
        ['cn:alice', 'CreateContainer', 'OK'],
        ['cn:rita', 'StartContainer', 'PERMISSION_DENIED'],
        [mine[2]?.['principal'], 'DeleteContainer', 'OK'],
      ],
    );
    assert.equal(mine[2]?.['principal'], 'uid:0', 'the admin socket caller is identified by SO_PEERCRED');
    assert.ok(!lines.some((l) => l['method'] === 'GetContainer'), 'reads are not audited');
  });
});
