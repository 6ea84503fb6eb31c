// NAT, published ports and DNS for containers on the daemon's bridge, seen
// from outside: a network namespace playing another host, the host's own
// loopback, other containers, and nftables' own listing.
import * as assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import * as dgram from 'node:dgram';
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { ContainerSpec, type DeepPartial, type PortMapping } from '../src/gen/osvirt/v1/container';
import { containerResolv } from '../drivers/lxc/dns';
import { locateCriu } from '../src/criu/criu-locate';
import { repoPath } from '../src/paths';
import { isRoot, TestDaemon, until, type Client } from './support/daemon';
import { sh } from './support/exec';
import { busybox } from './support/specs';

const NFT = ['/usr/sbin/nft', '/sbin/nft'].find((p) => existsSync(p));
const nft = (...args: string[]) => execFileSync(NFT!, args, { encoding: 'utf8' });
const OUT_NS = `ovnat-out-${process.pid}`;
const HOST_END = `ovnh${process.pid % 100000}`;
const HOST_IP = '192.168.250.1';
const OUT_IP = '192.168.250.2';

const port = (p: Partial<PortMapping>): PortMapping => ({ hostPort: 8080, containerPort: 80, protocol: '', hostIp: '', ...p });
const bridged = (extra: DeepPartial<ContainerSpec> = {}) => busybox({ network: { mode: { $case: 'bridge', value: {} } }, ...extra });
/** "OK", or the gRPC code and details of a failed call. */
const code = async (p: Promise<unknown>) =>
  p.then(
    () => 'OK',
    (e: { code?: number; details?: string }) => `${e.code} ${e.details ?? ''}`,
  );
/** A web server answering "served-by-<hostname>" on 8080. */
const SERVE = 'mkdir -p /www && echo served-by-$(hostname) > /www/index.html && exec httpd -f -p 8080 -h /www';
/** An HTTP GET through busybox wget, from the host or from another network namespace. */
const get = (url: string, netns?: string) =>
  execFileSync(netns ? 'ip' : 'busybox', [...(netns ? ['netns', 'exec', netns, 'busybox'] : []), 'wget', '-qO-', url], {
    encoding: 'utf8',
    timeout: 8000,
    stdio: ['ignore', 'pipe', 'ignore'],
  });

describe('networking a real system needs: NAT, published ports, DNS', function () {
  this.timeout(120000);
  let d: TestDaemon;
  let c: Client;
  let listener: ChildProcess | undefined;
  let tablesBefore = '';
  const table = () => nft('list', 'table', 'ip', `osvirt-${d.bridge}`);
  const rulesOf = (name: string) => (table().match(new RegExp(`comment "osvirt:${name}"`, 'g')) ?? []).length;
  const cli = (...args: string[]) =>
    execFileSync(repoPath('bin', 'osvirt'), args, { encoding: 'utf8', env: { ...process.env, OSVIRT_CONNECT: `unix://${d.socket}` } });
  const remove = async (...names: string[]) => {
    for (const name of names) await c.api.containers.deleteContainer({ name, force: true, allowMissing: true });
  };
  const run = async (name: string, spec: ContainerSpec) => {
    await c.api.containers.createContainer({ name, spec });
    await c.api.containers.startContainer({ name });
  };

  before(async function () {
    if (!isRoot()) return this.skip();
    if (!NFT) {
      this.test!.parent!.title += ' (skipped: nft is not installed; apt-get install nftables)';
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
    if (NFT && d) {
      assert.doesNotMatch(nft('list', 'tables'), new RegExp(`osvirt-${d.bridge}\\b`), "the bridge's table went with the bridge");
      // The host's own tables are untouched: the same as before, osvirt's gone (other daemons' may come and go).
      const others = (s: string) =>
        s
          .split('\n')
          .filter((l) => l && !/ osvirt-/.test(l))
          .sort();
      assert.deepEqual(others(nft('list', 'tables')), others(tablesBefore));
    }
    // The host end goes with its peer's namespace.
    try {
      execFileSync('ip', ['netns', 'del', OUT_NS]);
    } catch {
      // never made
    }
  });

  it("masquerades the bridge: a container reaches a host outside it, which sees the host's address", async () => {
    // The outside host answers each connection with the address it came from.
    listener = spawn(
      'ip',
      [
        'netns',
        'exec',
        OUT_NS,
        process.execPath,
        '-e',
        `require('net').createServer((s) => s.end(s.remoteAddress + '\\n')).listen(9999, '${OUT_IP}', () => console.log('ready'))`,
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    await new Promise<void>((resolve) => listener!.stdout!.once('data', () => resolve()));
    await run('natout', bridged());
    try {
      const seen = await sh(c, 'natout', `nc -w 3 ${OUT_IP} 9999 </dev/null`);
      assert.equal(seen.replace(/^::ffff:/, ''), HOST_IP, 'the outside host saw the host, not the container');
      assert.match(table(), /masquerade/);
      assert.equal(readFileSync('/proc/sys/net/ipv4/ip_forward', 'utf8').trim(), '1');
    } finally {
      await remove('natout');
      listener.kill('SIGKILL');
    }
  });

  it("publishes a port: reached from another host, the host's loopback and other containers; shown by the CLI; kept across a daemon restart; gone at stop and delete", async () => {
    await run('pub', bridged({ process: { args: ['/bin/sh', '-c', SERVE] }, ports: [port({ hostPort: 18080, containerPort: 8080 })] }));
    await run('client', bridged());
    try {
      await until(() => get('http://127.0.0.1:18080/').includes('served-by-pub'), "the port from the host's loopback");
      await until(() => get(`http://${HOST_IP}:18080/`, OUT_NS).includes('served-by-pub'), 'the port from another network namespace');
      // A container on the same bridge, through a host address (hairpin NAT).
      assert.match(await sh(c, 'client', `wget -qO- http://${HOST_IP}:18080/`), /served-by-pub/);
      assert.equal(rulesOf('pub'), 2, 'a prerouting and an output rule');
      assert.deepEqual(
        (await c.api.containers.getContainer({ name: 'pub' })).container!.spec!.ports.map((p) => `${p.hostPort}->${p.containerPort}`),
        ['18080->8080'],
      );
      assert.match(cli('info', 'pub'), /Ports:\s+0\.0\.0\.0:18080->8080\/tcp/);
      assert.match(cli('list'), /^pub\s.*\s18080->8080\/tcp\s*$/m);

      // A second container cannot take the same host port: FAILED_PRECONDITION naming the holder, nothing left of it.
      await c.api.containers.createContainer({ name: 'pub2', spec: bridged({ ports: [port({ hostPort: 18080 })] }) });
      assert.match(await code(c.api.containers.startContainer({ name: 'pub2' })), /^9 .*18080.*"pub"/);
      assert.equal(rulesOf('pub2'), 0);
      assert.ok(!existsSync(path.join(d.stateDir, 'drivers', 'lxc', 'containers', 'pub2', 'ports.json')));

      // The rules belong to the running container, not to the daemon.
      await d.stop();
      c = await d.start();
      assert.equal(rulesOf('pub'), 2, 'a restarted daemon keeps the rules of a running container');
      await until(() => get('http://127.0.0.1:18080/').includes('served-by-pub'), 'the port after a daemon restart');

      await c.api.containers.stopContainer({ name: 'pub', signal: 9, timeout: undefined });
      assert.equal(rulesOf('pub'), 0, 'its rules are gone at stop');
      await c.api.containers.startContainer({ name: 'pub' });
      assert.equal(rulesOf('pub'), 2, 'and back at start');
      await remove('pub');
      assert.equal(rulesOf('pub'), 0, 'and gone at delete');
    } finally {
      await remove('pub', 'pub2', 'client');
    }
  });

  it('publishes on one host address only when host_ip says so, and UDP too', async () => {
    // An application container (the host's own /usr) with a UDP echo server in Node, and httpd for the TCP port.
    const udpEcho = `require('dgram').createSocket('udp4').on('message', function (m, r) { this.send('echo:' + m, r.port, r.address); }).bind(5353)`;
    await run('pubip', bridged({ process: { args: ['/bin/sh', '-c', SERVE] }, ports: [port({ hostPort: 18082, containerPort: 8080, hostIp: HOST_IP })] }));
    await run(
      'pubudp',
      bridged({
        rootfs: { source: { $case: 'host', value: {} } },
        process: { args: [process.execPath, '-e', udpEcho] },
        ports: [port({ hostPort: 18053, containerPort: 5353, protocol: 'udp' })],
      }),
    );
    try {
      await until(() => get(`http://${HOST_IP}:18082/`, OUT_NS).includes('served-by-pubip'), 'the port on its host address');
      assert.throws(() => get('http://127.0.0.1:18082/'), "not on the host's other addresses");
      assert.match(cli('info', 'pubip'), new RegExp(`Ports:\\s+${HOST_IP.replace(/\./g, '\\.')}:18082->8080/tcp`));
      const ask = () =>
        new Promise<string>((resolve) => {
          const s = dgram.createSocket('udp4');
          const t = setTimeout(() => (s.close(), resolve('')), 500);
          s.on('message', (m) => (clearTimeout(t), s.close(), resolve(m.toString())));
          s.send('ping', 18053, '127.0.0.1');
        });
      assert.equal(await until(ask, 'a UDP answer through the published port'), 'echo:ping');
    } finally {
      await remove('pubip', 'pubudp');
    }
  });

  it('refuses ports the host or another network would lose, and creates nothing', async () => {
    // A process of the host listens on the port: a DNAT rule would take its connections away.
    const server = net.createServer().listen(18081, '127.0.0.1');
    await new Promise((r) => server.once('listening', r));
    try {
      await c.api.containers.createContainer({ name: 'held', spec: bridged({ ports: [port({ hostPort: 18081 })] }) });
      assert.match(await code(c.api.containers.startContainer({ name: 'held' })), /^9 .*a process of the host listens on 127\.0\.0\.1:18081\/tcp/);
      assert.equal(rulesOf('held'), 0);
    } finally {
      server.close();
    }
    // Once it is gone, the port is free.
    await c.api.containers.startContainer({ name: 'held' });
    assert.equal(rulesOf('held'), 2);
    // An address the host does not have: the rule would take over traffic it only routes.
    await c.api.containers.createContainer({ name: 'foreign', spec: bridged({ ports: [port({ hostPort: 18086, hostIp: '192.0.2.1' })] }) });
    assert.match(
      await code(c.api.containers.startContainer({ name: 'foreign' })),
      /^9 .*spec\.ports\[0\]\.host_ip: 192\.0\.2\.1 is not an address of this host/,
    );
    assert.equal(rulesOf('foreign'), 0);
    // Another bridge than the daemon's: refused at create.
    assert.match(
      await code(
        c.api.containers.createContainer({
          name: 'otherbr',
          spec: busybox({ network: { mode: { $case: 'bridge', value: { bridge: 'ovnatother0' } } }, ports: [port({})] }),
        }),
      ),
      /^3 .*spec\.ports: .*daemon's bridge/,
    );
    assert.ok(!existsSync('/sys/class/net/ovnatother0'));
    await remove('held', 'foreign');
    assert.deepEqual(
      (await c.api.containers.listContainers({ pageSize: 10, pageToken: '', driver: '', states: [] })).containers.map((x) => x.name),
      [],
    );
  });

  it('removes, when the daemon starts, the rules of containers that are gone, keeps those of running ones, and makes them again when the table was flushed', async () => {
    // A fixed address (no lease from the daemon's address table) counts as much as an allocated one.
    const fixed = `${d.subnet.split('.').slice(0, 2).join('.')}.0.77/16`;
    await run(
      'keeper',
      busybox({
        network: { mode: { $case: 'bridge', value: { address: fixed } } },
        process: { args: ['/bin/sh', '-c', SERVE] },
        ports: [port({ hostPort: 18083, containerPort: 8080 })],
      }),
    );
    const handles = () => [...nft('-a', 'list', 'table', 'ip', `osvirt-${d.bridge}`).matchAll(/osvirt:keeper" # handle (\d+)/g)].map((m) => m[1]);
    try {
      const before = handles();
      await d.stop();
      // A rule for a container this daemon does not know (its state was lost), on an address nobody holds.
      const ghost = `${d.subnet.split('.').slice(0, 2).join('.')}.0.250`;
      for (const chain of ['prerouting', 'output'])
        nft(
          'add',
          'rule',
          'ip',
          `osvirt-${d.bridge}`,
          chain,
          'fib',
          'daddr',
          'type',
          'local',
          'tcp',
          'dport',
          '18099',
          'dnat',
          'to',
          `${ghost}:80`,
          'comment',
          '"osvirt:ghost"',
        );
      assert.equal(rulesOf('ghost'), 2);
      c = await d.start();
      assert.equal(rulesOf('ghost'), 0, 'the rules of a container that is gone');
      assert.deepEqual(handles(), before, "the running container's rules were left alone");
      await until(() => get('http://127.0.0.1:18083/').includes('served-by-keeper'), "the running container's port");
      // The whole table gone under a stopped daemon (as `nft flush ruleset` does): the next one makes it again.
      await d.stop();
      nft('delete', 'table', 'ip', `osvirt-${d.bridge}`);
      c = await d.start();
      assert.equal(rulesOf('keeper'), 2, "the running container's rules are back");
      assert.match(table(), /masquerade/);
      await until(() => get('http://127.0.0.1:18083/').includes('served-by-keeper'), "the running container's port, published again");
    } finally {
      await remove('keeper');
    }
  });

  it('frees the ports of a start the daemon died in the middle of (fault point start.after-publish)', async () => {
    const d2 = new TestDaemon();
    process.env['OSVIRT_FAULT_POINTS'] = 'start.after-publish';
    let c2: Client;
    try {
      c2 = await d2.start();
    } finally {
      delete process.env['OSVIRT_FAULT_POINTS'];
    }
    try {
      const rules = () => (nft('list', 'table', 'ip', `osvirt-${d2.bridge}`).match(/osvirt:halfway"/g) ?? []).length;
      await c2.api.containers.createContainer({
        name: 'halfway',
        spec: bridged({ process: { args: ['/bin/sh', '-c', SERVE] }, ports: [port({ hostPort: 18084, containerPort: 8080 })] }),
      });
      await assert.rejects(c2.api.containers.startContainer({ name: 'halfway' }));
      await until(() => d2.proc!.signalCode === 'SIGKILL', 'the daemon to die at its fault point');
      assert.equal(rules(), 2, 'the daemon died with the rules in place');
      c2 = await d2.start();
      assert.equal(rules(), 0, 'the next daemon removed them');
      await c2.api.containers.startContainer({ name: 'halfway' });
      await until(() => get('http://127.0.0.1:18084/').includes('served-by-halfway'), 'the port, published again by a normal start');
    } finally {
      await d2.destroy();
    }
  });

  it('publishes the ports of a restored checkpoint again, and refuses a clone the port of its running original', async function () {
    if (!(await locateCriu()).ok) return this.skip();
    // Privileged: CRIU cannot restore a veth into a user namespace (test/checkpoint.test.ts).
    await run(
      'saved',
      bridged({ security: { privileged: true }, process: { args: ['/bin/sh', '-c', SERVE] }, ports: [port({ hostPort: 18087, containerPort: 8080 })] }),
    );
    try {
      await until(() => get('http://127.0.0.1:18087/').includes('served-by-saved'), 'the port before the checkpoint');
      await c.api.containers.checkpointContainer({ name: 'saved', checkpoint: 'one', options: undefined });
      assert.equal(rulesOf('saved'), 0, 'a checkpoint stops the container: its rules go');
      await c.api.containers.restoreContainer({ name: 'saved', checkpoint: 'one', newName: '', tcpEstablished: false, timeout: undefined });
      assert.equal(rulesOf('saved'), 2);
      await until(() => get('http://127.0.0.1:18087/').includes('served-by-saved'), 'the port of the restored server');
      assert.match(
        await code(c.api.containers.restoreContainer({ name: 'saved', checkpoint: 'one', newName: 'twin', tcpEstablished: false, timeout: undefined })),
        /^9 .*18087.*"saved"/,
      );
      assert.equal(rulesOf('twin'), 0);
    } finally {
      await remove('twin', 'saved');
    }
  });

  it('without nft: bridged containers still start, GetInfo says NAT is unavailable, spec.ports is refused naming nftables', async () => {
    // The daemon in a mount namespace of its own where /dev/null hides nft.
    const hide = NFT!;
    const d4 = new TestDaemon({
      wrap: ['unshare', '--mount', '--propagation', 'slave', '--', 'sh', '-c', `mount --bind /dev/null ${hide} && exec "$@"`, 'sh'],
    });
    const c4 = await d4.start();
    try {
      const lxc = (await c4.api.system.listDrivers({})).drivers.find((x) => x.name === 'lxc')!;
      assert.ok(
        lxc.messages.some((m) => /^nat: nft \(nftables\) is not installed/.test(m)),
        lxc.messages.join('\n'),
      );
      await c4.api.containers.createContainer({ name: 'nonat', spec: bridged() });
      await c4.api.containers.startContainer({ name: 'nonat' });
      assert.match(await sh(c4, 'nonat', 'ip -4 -o addr show eth0'), /inet 10\./);
      assert.doesNotMatch(nft('list', 'tables'), new RegExp(`osvirt-${d4.bridge}\\b`), 'no table was made');
      assert.match(await code(c4.api.containers.createContainer({ name: 'noports', spec: bridged({ ports: [port({ hostPort: 18088 })] }) })), /^9 .*nftables/);
    } finally {
      await d4.destroy();
    }
  });

  describe('DNS', () => {
    const hostServers = () =>
      [...readFileSync('/etc/resolv.conf', 'utf8').matchAll(/^\s*nameserver\s+(\S+)/gm)].map((m) => m[1]!).filter((s) => !/^127\.|^::1$/.test(s));
    const names = (conf: string) => [...conf.matchAll(/^nameserver\s+(\S+)$/gm)].map((m) => m[1]);

    it("gives a bridged container on a template the host's name servers, in its own file", async function () {
      if (!hostServers().length) return this.skip();
      await run('dns', bridged());
      try {
        assert.deepEqual(names(await sh(c, 'dns', 'cat /etc/resolv.conf')), hostServers());
        // The container's own copy: it may change it.
        await sh(c, 'dns', 'echo "nameserver 192.0.2.9" > /etc/resolv.conf');
      } finally {
        await remove('dns');
      }
    });

    it('binds a generated file, read-only, over the resolv.conf of a root osvirt does not own (rootfs.path, rootfs.host)', async function () {
      if (!hostServers().length) return this.skip();
      // A plain directory as the root: the user's, not to be written.
      const base = mkdtempSync(path.join(os.tmpdir(), 'ovnat-root-'));
      chmodSync(base, 0o755);
      const root = path.join(base, 'rootfs');
      for (const dir of ['bin', 'etc', 'proc', 'sys', 'dev', 'tmp']) mkdirSync(path.join(root, dir), { recursive: true });
      copyFileSync('/bin/busybox', path.join(root, 'bin', 'busybox'));
      chmodSync(path.join(root, 'bin', 'busybox'), 0o755);
      for (const applet of ['sh', 'cat', 'sleep', 'echo']) symlinkSync('busybox', path.join(root, 'bin', applet));
      writeFileSync(path.join(root, 'etc', 'resolv.conf'), 'nameserver 192.0.2.1\n');
      try {
        await run(
          'dnspath',
          bridged({ rootfs: { source: { $case: 'path', value: root } }, process: { args: ['/bin/sh', '-c', 'while :; do sleep 60; done'] } }),
        );
        assert.deepEqual(names(await sh(c, 'dnspath', 'cat /etc/resolv.conf')), hostServers());
        assert.match(await sh(c, 'dnspath', 'echo x 2>&1 > /etc/resolv.conf || echo refused'), /refused|Read-only/);
        assert.equal(readFileSync(path.join(root, 'etc', 'resolv.conf'), 'utf8'), 'nameserver 192.0.2.1\n', "the user's directory is untouched");
        await run('dnshost', bridged({ rootfs: { source: { $case: 'host', value: {} } }, process: { args: ['/bin/sleep', '300'] } }));
        assert.match(await sh(c, 'dnshost', 'cat /etc/resolv.conf'), /^# written by osvirt/);
        assert.deepEqual(names(await sh(c, 'dnshost', 'cat /etc/resolv.conf')), hostServers());
      } finally {
        await remove('dnspath', 'dnshost');
        rmSync(base, { recursive: true, force: true });
      }
    });

    it('leaves out loopback servers, and says so when they are all the host has (--resolv-conf)', async () => {
      const d3 = new TestDaemon();
      const conf = path.join(d3.dir, 'host-resolv.conf');
      // Only the host's stub resolver: the container gets nothing from osvirt, and GetInfo says why.
      writeFileSync(conf, 'nameserver 127.0.0.53\n');
      const c3 = await d3.start(['--resolv-conf', conf]);
      try {
        const lxc = (await c3.api.system.listDrivers({})).drivers.find((x) => x.name === 'lxc')!;
        assert.ok(
          lxc.messages.some((m) => /^dns: .*only the host's loopback resolver \(127\.0\.0\.53\)/.test(m)),
          lxc.messages.join('\n'),
        );
        await c3.api.containers.createContainer({ name: 'stub', spec: bridged() });
        await c3.api.containers.startContainer({ name: 'stub' });
        assert.equal(await sh(c3, 'stub', 'cat /etc/resolv.conf'), '', "the template's own (empty) file");
        // The file is read at each start: a reachable server is taken, the loopback one left out.
        writeFileSync(conf, 'nameserver 127.0.0.53\nnameserver 192.0.2.53\nsearch corp.example\noptions edns0\n');
        await c3.api.containers.createContainer({ name: 'mixed', spec: bridged() });
        await c3.api.containers.startContainer({ name: 'mixed' });
        const inside = await sh(c3, 'mixed', 'cat /etc/resolv.conf');
        assert.deepEqual(names(inside), ['192.0.2.53']);
        assert.match(inside, /^search corp\.example$/m);
        assert.match(inside, /^options edns0$/m);
      } finally {
        await d3.destroy();
      }
    });

    it("falls back to systemd-resolved's upstream servers when the host file names only its stub", () => {
      const dir = mkdtempSync(path.join(os.tmpdir(), 'ovnat-dns-'));
      try {
        const host = path.join(dir, 'resolv.conf');
        const resolved = path.join(dir, 'upstream.conf');
        writeFileSync(host, 'nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch lan\n');
        writeFileSync(resolved, 'nameserver 192.0.2.10\nnameserver 192.0.2.11\nsearch lan\n');
        const r = containerResolv(host, resolved);
        assert.deepEqual(names(r.conf ?? ''), ['192.0.2.10', '192.0.2.11']);
        assert.match(r.conf!, /^search lan$/m);
        assert.match(r.conf!, /^options edns0 trust-ad$/m);
        assert.match(r.note!, /systemd-resolved's upstream servers/);
        rmSync(resolved);
        assert.equal(containerResolv(host, resolved).conf, undefined);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });
  });

  it('refuses bad ports with INVALID_ARGUMENT naming the field, and creates nothing', async () => {
    const bad = async (ports: PortMapping[], spec = bridged) => code(c.api.containers.createContainer({ name: 'bad', spec: spec({ ports }) }));
    assert.match(await bad([port({ hostPort: 0 })]), /^3 .*spec\.ports\[0\]\.host_port/);
    assert.match(await bad([port({ hostPort: 70000 })]), /^3 .*spec\.ports\[0\]\.host_port/);
    assert.match(await bad([port({ containerPort: 70000 })]), /^3 .*spec\.ports\[0\]\.container_port/);
    assert.match(await bad([port({ protocol: 'sctp' })]), /^3 .*spec\.ports\[0\]\.protocol/);
    assert.match(await bad([port({ hostIp: 'localhost' })]), /^3 .*spec\.ports\[0\]\.host_ip/);
    assert.match(await bad([port({ hostIp: '300.1.1.1' })]), /^3 .*spec\.ports\[0\]\.host_ip/);
    assert.match(await bad([port({}), port({ containerPort: 81 })]), /^3 .*spec\.ports\[1\]\.host_port/);
    // Every host address overlaps a single one, on the same port and protocol.
    assert.match(await bad([port({ hostIp: HOST_IP }), port({ hostIp: '0.0.0.0' })]), /^3 .*spec\.ports\[1\]\.host_port.*spec\.ports\[0\]/);
    assert.equal(
      await bad([port({}), port({ protocol: 'udp' })]).then((r) => (r === 'OK' ? remove('bad').then(() => r) : r)),
      'OK',
      'tcp and udp on one port are two ports',
    );
    assert.match(await bad([port({})], busybox), /^3 .*spec\.ports\[0\].*bridge/);
    assert.deepEqual((await c.api.containers.listContainers({ pageSize: 10, pageToken: '', driver: '', states: [] })).containers, []);
  });
});
