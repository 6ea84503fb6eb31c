// NAT, published ports and DNS for containers on the daemon's bridge, seen
// from outside: a network namespace playing another host, the host's own
// loopback, and nftables' own listing.
import * as assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { ContainerSpec, type DeepPartial } from '../src/gen/osvirt/v1/container';
import { isRoot, TestDaemon, until, type Client } from './support/daemon';
import { sh } from './support/exec';
import { busybox } from './support/specs';

const NFT = ['/usr/sbin/nft', '/sbin/nft'].find((p) => existsSync(p));
const nft = (...args: string[]) => execFileSync(NFT!, args, { encoding: 'utf8' });
const OUT_NS = `ovnat-${process.pid}`;
const HOST_END = `ovnh${process.pid % 100000}`;
const HOST_IP = '192.168.250.1';
const OUT_IP = '192.168.250.2';

describe('networking a real system needs: NAT, published ports, DNS', function () {
  this.timeout(120000);
  let d: TestDaemon;
  let c: Client;
  let listener: ChildProcess | undefined;
  let tablesBefore = '';

  before(async function () {
    if (!isRoot()) return this.skip();
    if (!NFT) {
      this.test!.parent!.title += ' (skipped: nft is not installed)';
      return this.skip();
    }
    tablesBefore = nft('list', 'tables');
    // Another "host": a network namespace behind a veth, outside the bridge.
    execFileSync('ip', ['netns', 'add', OUT_NS]);
    execFileSync('ip', ['link', 'add', HOST_END, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', OUT_NS]);
    execFileSync('ip', ['addr', 'add', `${HOST_IP}/24`, 'dev', HOST_END]);
    execFileSync('ip', ['link', 'set', HOST_END, 'up']);
    execFileSync('ip', ['-n', OUT_NS, 'addr', 'add', `${OUT_IP}/24`, 'dev', 'eth0']);
    execFileSync('ip', ['-n', OUT_NS, 'link', 'set', 'eth0', 'up']);
    execFileSync('ip', ['-n', OUT_NS, 'link', 'set', 'lo', 'up']);
    d = new TestDaemon();
    c = await d.start();
  });
  after(async () => {
    listener?.kill('SIGKILL');
    await d?.destroy();
    if (NFT && d) assert.doesNotMatch(nft('list', 'tables'), new RegExp(`osvirt-${d.bridge}\\b`), 'the bridge\'s table went with the bridge');
    try {
      execFileSync('ip', ['netns', 'del', OUT_NS]);
    } catch {
      // never made
    }
  });

  const bridged = (extra: DeepPartial<ContainerSpec> = {}) => busybox({ network: { mode: { $case: 'bridge', value: {} } }, ...extra });
  const code = async (p: Promise<unknown>) => p.then(() => 'OK', (e: { code?: number; details?: string }) => `${e.code} ${e.details ?? ''}`);

  it('masquerades the bridge: a container reaches a host outside it, which sees the host\'s address', async () => {
    // The outside host answers each connection with the address it came from.
    listener = spawn('ip', ['netns', 'exec', OUT_NS, process.execPath, '-e', `require('net').createServer((s) => s.end(s.remoteAddress + '\\n')).listen(9999, '${OUT_IP}', () => console.log('ready'))`], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((resolve) => listener!.stdout!.once('data', () => resolve()));
    await c.api.containers.createContainer({ name: 'natout', spec: bridged() });
    await c.api.containers.startContainer({ name: 'natout' });
    try {
      const seen = await sh(c, 'natout', `nc -w 3 ${OUT_IP} 9999 </dev/null`);
      assert.equal(seen.replace(/^::ffff:/, ''), HOST_IP, 'the outside host saw the host, not the container');
      assert.match(nft('list', 'table', 'ip', `osvirt-${d.bridge}`), /masquerade/);
    } finally {
      await c.api.containers.deleteContainer({ name: 'natout', force: true, allowMissing: true });
    }
  });

  it('publishes a port: reached from another host and from the host\'s loopback, shown in info and list, gone at stop', async () => {
    const serve = 'mkdir -p /www && echo served-by-$(hostname) > /www/index.html && exec httpd -f -p 8080 -h /www';
    await c.api.containers.createContainer({ name: 'pub', spec: bridged({ process: { args: ['/bin/sh', '-c', serve] }, ports: [{ hostPort: 18080, containerPort: 8080, protocol: 'tcp', hostIp: '' }] }) });
    await c.api.containers.startContainer({ name: 'pub' });
    try {
      const get = (args: string[]) => execFileSync(args[0]!, args.slice(1), { encoding: 'utf8', timeout: 5000 });
      await until(() => get(['busybox', 'wget', '-qO-', 'http://127.0.0.1:18080/']).includes('served-by-pub'), 'the port from the host\'s loopback');
      await until(() => get(['ip', 'netns', 'exec', OUT_NS, 'busybox', 'wget', '-qO-', `http://${HOST_IP}:18080/`]).includes('served-by-pub'), 'the port from another network namespace');
      const info = (await c.api.containers.getContainer({ name: 'pub' })).container!;
      assert.deepEqual(info.spec!.ports.map((p) => `${p.hostPort}->${p.containerPort}`), ['18080->8080']);
      assert.equal((nft('list', 'table', 'ip', `osvirt-${d.bridge}`).match(/osvirt:pub/g) ?? []).length, 2, 'a prerouting and an output rule');
      // A second container cannot take the same host port.
      await c.api.containers.createContainer({ name: 'pub2', spec: bridged({ ports: [{ hostPort: 18080, containerPort: 80, protocol: '', hostIp: '' }] }) });
      assert.match(await code(c.api.containers.startContainer({ name: 'pub2' })), /^9 .*18080.*"pub"/);
      await c.api.containers.stopContainer({ name: 'pub', signal: 9, timeout: undefined });
      assert.doesNotMatch(nft('list', 'table', 'ip', `osvirt-${d.bridge}`), /osvirt:pub\b/, 'its rules are gone at stop');
    } finally {
      await c.api.containers.deleteContainer({ name: 'pub', force: true, allowMissing: true });
      await c.api.containers.deleteContainer({ name: 'pub2', force: true, allowMissing: true });
    }
    // The host's own tables are untouched: only osvirt's was added.
    const added = nft('list', 'tables').split('\n').filter((l) => l && !tablesBefore.includes(l));
    assert.deepEqual(added, [`table ip osvirt-${d.bridge}`]);
  });

  it('gives a bridged container the host\'s name servers', async function () {
    const host = readFileSync('/etc/resolv.conf', 'utf8');
    const servers = [...host.matchAll(/^\s*nameserver\s+(\S+)/gm)].map((m) => m[1]!).filter((s) => !/^127\.|^::1$/.test(s));
    if (!servers.length) return this.skip();
    await c.api.containers.createContainer({ name: 'dns', spec: bridged() });
    await c.api.containers.startContainer({ name: 'dns' });
    try {
      const inside = await sh(c, 'dns', 'cat /etc/resolv.conf');
      for (const s of servers) assert.match(inside, new RegExp(`^nameserver ${s.replace(/\./g, '\\.')}$`, 'm'));
    } finally {
      await c.api.containers.deleteContainer({ name: 'dns', force: true, allowMissing: true });
    }
  });

  it('refuses bad ports with INVALID_ARGUMENT naming the field, and creates nothing', async () => {
    const port = (p: Record<string, unknown>) => ({ hostPort: 8080, containerPort: 80, protocol: '', hostIp: '', ...p });
    assert.match(await code(c.api.containers.createContainer({ name: 'bad', spec: bridged({ ports: [port({ hostPort: 0 })] }) })), /^3 .*spec\.ports\[0\]\.host_port/);
    assert.match(await code(c.api.containers.createContainer({ name: 'bad', spec: bridged({ ports: [port({ containerPort: 70000 })] }) })), /^3 .*spec\.ports\[0\]\.container_port/);
    assert.match(await code(c.api.containers.createContainer({ name: 'bad', spec: bridged({ ports: [port({ protocol: 'sctp' })] }) })), /^3 .*spec\.ports\[0\]\.protocol/);
    assert.match(await code(c.api.containers.createContainer({ name: 'bad', spec: bridged({ ports: [port({ hostIp: 'localhost' })] }) })), /^3 .*spec\.ports\[0\]\.host_ip/);
    assert.match(await code(c.api.containers.createContainer({ name: 'bad', spec: bridged({ ports: [port({}), port({ containerPort: 81 })] }) })), /^3 .*spec\.ports\[1\]\.host_port/);
    assert.match(await code(c.api.containers.createContainer({ name: 'bad', spec: busybox({ ports: [port({})] }) })), /^3 .*spec\.ports\[0\].*bridge/);
    assert.deepEqual((await c.api.containers.listContainers({ pageSize: 10, pageToken: '', driver: '', states: [] })).containers, []);
  });
});
