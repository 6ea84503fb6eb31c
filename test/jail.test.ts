// The jail driver, proven from inside the jails (and from the host where the
// host is what a parameter changes). Every jail goes through the real daemon,
// the gRPC API and the CLI.
import { strict as assert } from 'node:assert';
import { execFile, execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, readlinkSync, symlinkSync, copyFileSync, writeFileSync, chmodSync } from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { credentials, status as Code, type ServiceError } from '@grpc/grpc-js';
import { ContainerSpec, ContainerState, StateReason, type DeepPartial } from '../src/gen/osvirt/v1/container';
import { JailServiceClient, JailSysMode, type JailOptions } from '../src/gen/osvirt/v1/jail';
import { promisify as promisifyClient } from '../src/client';
import { decodeStatusDetails } from '../src/core/grpc-status';
import { detectLayout } from '../drivers/lxc/cgroups';
import { IpFilter } from '../drivers/common/ipfilter';
import { repoPath } from '../src/paths';
import { isRoot, TestDaemon, useDaemon, until, type Client } from './support/daemon';
import { execIn, type ExecResult } from './support/exec';

const execFileP = promisify(execFile);
const layout = isRoot() ? detectLayout() : undefined;
const NEW = JailSysMode.JAIL_SYS_MODE_NEW;
const INHERIT = JailSysMode.JAIL_SYS_MODE_INHERIT;
const DISABLE = JailSysMode.JAIL_SYS_MODE_DISABLE;
const PY = '/usr/bin/python3';
/** TEST-NET-2 addresses, added to lo by the jails that use them. */
const A = (n: number) => `198.51.100.${n}`;
const V6 = '2001:db8:51::7';

function cgDir(controller: string, name: string): string {
  if (!layout) throw new Error('no cgroups');
  if (layout.kind === 'v2') return path.join(layout.root, 'osvirt', name);
  return path.join(layout.v1[controller]!, 'osvirt', name);
}

function loAddresses(): string {
  return execFileSync('ip', ['-o', 'addr', 'show', 'dev', 'lo'], { encoding: 'utf8' });
}

/** A minimal root directory: static busybox, its applets, passwd and whatever files are given. */
function makeRoot(dir: string, files: Record<string, string> = {}): string {
  for (const d of ['bin', 'etc', 'proc', 'sys', 'dev', 'tmp', 'root', 'mnt', 'var/run']) mkdirSync(path.join(dir, d), { recursive: true });
  chmodSync(path.join(dir, 'tmp'), 0o1777);
  const bb = ['/bin/busybox', '/usr/bin/busybox'].find((p) => existsSync(p))!;
  copyFileSync(bb, path.join(dir, 'bin', 'busybox'));
  chmodSync(path.join(dir, 'bin', 'busybox'), 0o755);
  for (const a of [
    'sh',
    'cat',
    'echo',
    'hostname',
    'ls',
    'sleep',
    'id',
    'readlink',
    'grep',
    'mount',
    'umount',
    'touch',
    'mkdir',
    'env',
    'pwd',
    'killall',
    'httpd',
    'wc',
    'ps',
    'true',
    'false',
  ]) {
    symlinkSync('busybox', path.join(dir, 'bin', a));
  }
  writeFileSync(path.join(dir, 'etc', 'passwd'), 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n');
  writeFileSync(path.join(dir, 'etc', 'group'), 'root:x:0:\nnogroup:x:65534:\n');
  for (const [f, content] of Object.entries(files)) {
    mkdirSync(path.dirname(path.join(dir, f)), { recursive: true });
    writeFileSync(path.join(dir, f), content);
    if (content.startsWith('#!')) chmodSync(path.join(dir, f), 0o755);
  }
  return dir;
}

describe('jail driver (FreeBSD jail semantics)', function () {
  this.timeout(120000);
  let d: TestDaemon;
  let c: Client;
  let jails: ReturnType<typeof promisifyClient<JailServiceClient>>;
  const made = new Set<string>();

  useDaemon((daemon, client) => {
    d = daemon;
    c = client;
    const raw = new JailServiceClient('unused', credentials.createInsecure(), { channelOverride: c.containers.getChannel() });
    jails = promisifyClient(raw);
  });

  function spec(opts: DeepPartial<JailOptions>, extra: DeepPartial<ContainerSpec> = {}): ContainerSpec {
    return ContainerSpec.fromPartial({
      driver: 'jail',
      ...(opts.path ? {} : { rootfs: { source: { $case: 'template', value: 'busybox' } } }),
      driverOptions: { $case: 'jail', value: opts },
      ...extra,
    });
  }
  async function create(name: string, opts: DeepPartial<JailOptions>, extra: DeepPartial<ContainerSpec> = {}): Promise<void> {
    await c.api.containers.createContainer({ name, spec: spec(opts, extra) });
    made.add(name);
  }
  /** Define and start a jail; returns its init pid. */
  async function jail(name: string, opts: DeepPartial<JailOptions>, extra: DeepPartial<ContainerSpec> = {}): Promise<number> {
    await create(name, opts, extra);
    const ct = (await c.api.containers.startContainer({ name })).container!;
    assert.equal(ct.status?.state, ContainerState.CONTAINER_STATE_RUNNING);
    return ct.status!.initPid;
  }
  const stop = (name: string, timeout?: number) =>
    c.api.containers.stopContainer({ name, signal: 0, timeout: timeout === undefined ? undefined : { seconds: BigInt(timeout), nanos: 0 } });
  const remove = (name: string) => c.api.containers.deleteContainer({ name, force: true, allowMissing: true });
  const info = async (name: string) => (await c.api.containers.getContainer({ name })).container!;
  /** Run a shell line in the jail; returns stdout+stderr and the exit code. */
  async function sh(name: string, script: string): Promise<ExecResult> {
    return execIn(c, name, ['/bin/sh', '-c', script]);
  }
  async function ok(name: string, script: string): Promise<string> {
    const r = await sh(name, script);
    assert.equal(r.exitCode, 0, `"${script}" in ${name} exited ${r.exitCode}: ${r.stderr}${r.stdout}`);
    return r.stdout.trim();
  }
  /** Python in a jail whose path is "/": prints what the code prints. */
  async function py(name: string, code: string): Promise<string> {
    const r = await execIn(c, name, [PY, '-c', `import socket, errno, ctypes, os\n${code}`]);
    assert.equal(r.exitCode, 0, `python in ${name}: ${r.stderr}`);
    return r.stdout.trim();
  }

  async function cli(...args: string[]): Promise<{ stdout: string; stderr: string; code: number }> {
    try {
      const r = await execFileP(process.execPath, [repoPath('bin', 'osvirt'), '--connect', `unix://${d.socket}`, ...args]);
      return { ...r, code: 0 };
    } catch (e) {
      const err = e as { stdout: string; stderr: string; code: number };
      return { stdout: err.stdout, stderr: err.stderr, code: err.code };
    }
  }
  async function expectError(p: Promise<unknown>, code: Code, re: RegExp): Promise<ServiceError> {
    try {
      await p;
    } catch (e) {
      const se = e as ServiceError;
      assert.equal(se.code, code, `${Code[se.code]}: ${se.details}`);
      assert.match(se.details, re);
      return se;
    }
    assert.fail(`expected ${Code[code]} matching ${re}`);
  }

  it('path, host.hostname and host = new | inherit', async () => {
    const root = makeRoot(path.join(d.dir, 'roots', 'jpath'), { 'etc/marker': 'the jail root\n' });
    const pid = await jail('jpath', { path: root, persist: true, hostHostname: 'jp.example', mountDevfs: true });
    assert.equal(await ok('jpath', 'cat /etc/marker'), 'the jail root');
    assert.equal(await ok('jpath', 'hostname'), 'jp.example');
    assert.deepEqual(
      (await sh('jpath', 'cat /proc/1/cmdline')).stdout.split('\0').filter(Boolean),
      ['/dev/.osvirt-init', 'init'],
      "pid 1 is osvirt's jail init",
    );
    assert.equal(readFileSync(`/proc/${pid}/root/etc/marker`, 'utf8'), 'the jail root\n', 'its root is path (pivot_root)');
    assert.notEqual(await ok('jpath', 'readlink /proc/self/ns/uts'), readlinkSync('/proc/self/ns/uts'), 'host=new: own UTS namespace');
    // host = inherit (the default without host.hostname): the host's hostname and UTS namespace.
    await jail('jinherit', { persist: true });
    assert.equal(await ok('jinherit', 'hostname'), os.hostname());
    assert.equal(await ok('jinherit', 'readlink /proc/self/ns/uts'), readlinkSync('/proc/self/ns/uts'));
    // An explicit host = inherit with a hostname is a contradiction.
    await expectError(
      c.api.containers.createContainer({ name: 'jbadhost', spec: spec({ persist: true, host: INHERIT, hostHostname: 'x' }) }),
      Code.INVALID_ARGUMENT,
      /host/,
    );
    await remove('jinherit');
  });

  it('ip4.addr / ip6.addr without vnet: the jail may use only its addresses on the shared stack', async () => {
    // Another address of the host, not the jail's.
    execFileSync('ip', ['addr', 'add', `${A(12)}/32`, 'dev', 'lo']);
    const server = net.createServer((s) => s.end(`${s.remoteAddress}\n`));
    try {
      await jail('jip', { path: '/', persist: true, ip4Addr: [A(11)], ip6Addr: [V6] });
      // jail(8)'s interface (default lo here): the addresses are on the host while the jail runs.
      assert.match(loAddresses(), new RegExp(`inet ${A(11).replace(/\./g, '\\.')}/32`));
      assert.match(loAddresses(), /inet6 2001:db8:51::7\/128/);
      const bind = `
def b(fam, addr):
    s = socket.socket(fam, socket.SOCK_STREAM)
    if fam == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)  # FreeBSD's default
    try:
        s.bind((addr, 0))
        return s.getsockname()[0]
    except OSError as e:
        return errno.errorcode[e.errno]
`;
      const out = (
        await py(
          'jip',
          `${bind}
print(b(socket.AF_INET, '${A(250)}'))
print(b(socket.AF_INET, '${A(12)}'))
print(b(socket.AF_INET, '0.0.0.0'))
print(b(socket.AF_INET, '127.0.0.1'))
print(b(socket.AF_INET6, '2001:db8:51::99'))
print(b(socket.AF_INET6, '::1'))`,
        )
      ).split('\n');
      assert.deepEqual(
        out,
        ['EADDRNOTAVAIL', 'EADDRNOTAVAIL', A(11), A(11), 'EADDRNOTAVAIL', V6],
        "foreign and other host addresses refused; wildcard and loopback land on the jail's",
      );
      // Connecting to 127.0.0.1 reaches the jail's own address, from that address.
      await new Promise<void>((r) => server.listen(0, A(11), r));
      const port = (server.address() as net.AddressInfo).port;
      const seen = await py('jip', `s = socket.create_connection(('127.0.0.1', ${port})); print(s.recv(100).decode().strip())`);
      assert.equal(seen, A(11));
      // No ip4.addr and no ip4 mode: no IPv4 at all (FreeBSD's default, the same as ip4 = disable);
      // with one IPv6 address the IPv6 wildcard lands on it.
      await jail('jip4off', { path: '/', persist: true, ip6Addr: ['2001:db8:51::8'] });
      assert.deepEqual(
        (
          await py(
            'jip4off',
            `${bind}
try:
    socket.socket(socket.AF_INET, socket.SOCK_DGRAM); print('ok')
except OSError as e:
    print(errno.errorcode[e.errno])
print(b(socket.AF_INET6, '::'))`,
          )
        ).split('\n'),
        ['EAFNOSUPPORT', '2001:db8:51::8'],
      );
      // ip4 = disable, ip6 = disable, explicitly.
      await jail('jipoff', { path: '/', persist: true, ip4: DISABLE, ip6: DISABLE });
      assert.equal(
        await py(
          'jipoff',
          `
for fam in (socket.AF_INET, socket.AF_INET6):
    try:
        socket.socket(fam, socket.SOCK_STREAM); print('ok')
    except OSError as e:
        print(errno.errorcode[e.errno])`,
        ),
        'EAFNOSUPPORT\nEAFNOSUPPORT',
      );
      // ip4 = inherit: every host address.
      await jail('jipall', { path: '/', persist: true, ip4: INHERIT });
      assert.equal(await py('jipall', `s = socket.socket(socket.AF_INET6)\nprint('ok')`).catch(() => 'failed'), 'failed', 'ip6 not given: no IPv6');
      assert.equal(await py('jipall', `${bind}\nprint(b(socket.AF_INET, '${A(12)}'))`), A(12));
      // The filter is a cgroup BPF program on the jail's cgroup2 directory.
      const attached = (await new IpFilter().list()).map((x) => x.cgroup2Dir);
      assert.ok(
        attached.some((x) => x.endsWith('/osvirt/jip')),
        `no IP filter on jip: ${attached.join(', ')}`,
      );
      await stop('jip');
      assert.doesNotMatch(loAddresses(), new RegExp(`${A(11).replace(/\./g, '\\.')}/`), 'the address left the interface with the jail');
      assert.doesNotMatch(loAddresses(), /2001:db8:51::7/);
      assert.ok(!(await new IpFilter().list()).some((x) => x.cgroup2Dir.endsWith('/osvirt/jip')), 'the filter went with the jail');
      // vnet jails cannot have address restrictions (as on FreeBSD).
      await expectError(
        c.api.containers.createContainer({ name: 'jbadvnet', spec: spec({ vnet: NEW, ip4Addr: [A(13)], persist: true }) }),
        Code.INVALID_ARGUMENT,
        /vnet/,
      );
    } finally {
      server.close();
      execFileSync('ip', ['addr', 'del', `${A(12)}/32`, 'dev', 'lo']);
      for (const n of ['jip', 'jip4off', 'jipoff', 'jipall']) await remove(n);
    }
  });

  it('vnet = new: its own network stack with a veth on the bridge', async () => {
    const pid = await jail('jvnet', { vnet: NEW, persist: true, mountDevfs: true });
    assert.notEqual(await ok('jvnet', 'readlink /proc/self/ns/net'), readlinkSync('/proc/self/ns/net'));
    const addr = await ok('jvnet', "ip -4 -o addr show eth0 | awk '{print $4}'");
    assert.match(addr, new RegExp(`^${d.subnet.split('.').slice(0, 2).join('\\.')}\\.`), 'an address from the bridge subnet');
    // Root of a vnet jail configures its own stack.
    await ok('jvnet', 'ip addr add 10.99.0.1/32 dev lo && ip -4 -o addr show lo | grep -c 10.99.0.1');
    const hostEnd = readdirSync('/sys/class/net').find(
      (n) => n.startsWith('ovh') && readFileSync(`/sys/class/net/${n}/master/uevent`, 'utf8').includes(d.bridge),
    );
    assert.ok(hostEnd, 'the host end of the veth is on the bridge');
    assert.ok(pid > 0);
    await stop('jvnet');
    assert.ok(!existsSync(`/sys/class/net/${hostEnd}`), 'the veth is gone');
    await remove('jvnet');
  });

  it('persist: a persistent jail exists with no process; without persist it is gone with its last process', async () => {
    const pid = await jail('jpersist', { persist: true });
    const procs = () =>
      readFileSync(path.join(cgDir('pids', 'jpersist'), 'cgroup.procs'), 'utf8')
        .split('\n')
        .filter(Boolean);
    assert.deepEqual(procs(), [String(pid)], "only the jail's pid 1 (osvirt init)");
    assert.equal((await info('jpersist')).status?.state, ContainerState.CONTAINER_STATE_RUNNING);
    assert.equal(await ok('jpersist', 'set -- /proc/[0-9]*; echo $#'), '2', 'inside: init and this shell');
    await remove('jpersist');

    // exec.start leaves one background process; the jail lives exactly as long.
    const started = Date.now();
    await jail('jtransient', { ip4Addr: [A(51)], execStart: ['sleep 2 &'] });
    assert.ok(
      (await jails.listJails({ pageSize: 0, pageToken: '' })).jails.some((j) => j.name === 'jtransient'),
      'listed while its process runs',
    );
    await until(async () => (await info('jtransient')).status?.state === ContainerState.CONTAINER_STATE_STOPPED, 'the jail to go away', 10000);
    assert.ok(Date.now() - started >= 1800, 'not before its last process exited');
    const st = (await info('jtransient')).status!;
    assert.equal(st.reason, StateReason.STATE_REASON_EXITED);
    assert.ok(!(await jails.listJails({ pageSize: 0, pageToken: '' })).jails.some((j) => j.name === 'jtransient'), 'not in jls any more');
    assert.ok(!existsSync(cgDir('pids', 'jtransient')), 'its cgroup is gone');
    assert.doesNotMatch(loAddresses(), new RegExp(`${A(51).replace(/\./g, '\\.')}/`), 'and its address');
    // FreeBSD's rule: a jail needs persist or something to run.
    await expectError(c.api.containers.createContainer({ name: 'jnothing', spec: spec({}) }), Code.INVALID_ARGUMENT, /persist/);
    await remove('jtransient');
  });

  it('securelevel: enforced by capabilities; a jail may raise its own, never lower it; allow.chflags', async () => {
    // Privileged: the immutable flag needs CAP_LINUX_IMMUTABLE over the host's filesystem, which no user namespace has.
    await jail('jsl0', { path: '/', persist: true, allowChflags: true, securelevel: 0 }, { security: { privileged: true } });
    await ok('jsl0', 'touch /tmp/f && chattr +i /tmp/f && lsattr /tmp/f | grep -q i && chattr -i /tmp/f');
    // Raising for oneself: drop what the higher level forbids.
    let r = await sh('jsl0', 'setpriv --bounding-set=-linux_immutable -- chattr +i /tmp/f');
    assert.notEqual(r.exitCode, 0, 'a raised level holds for the process that raised it');
    await jail('jsl1', { path: '/', persist: true, allowChflags: true, securelevel: 1 }, { security: { privileged: true } });
    r = await sh('jsl1', 'touch /tmp/f && chattr +i /tmp/f');
    assert.notEqual(r.exitCode, 0, 'securelevel 1: system file flags are fixed');
    assert.match(r.stderr, /Operation not permitted/);
    // Lowering: getting the capability back is impossible from inside.
    r = await sh('jsl1', 'setpriv --inh-caps=+linux_immutable --ambient-caps=+linux_immutable -- chattr +i /tmp/f');
    assert.notEqual(r.exitCode, 0, 'securelevel cannot be lowered from inside');
    const capBnd = BigInt(`0x${/CapBnd:\s*([0-9a-f]+)/.exec(await ok('jsl1', 'cat /proc/self/status'))![1]}`);
    assert.equal((capBnd >> 9n) & 1n, 0n, 'CAP_LINUX_IMMUTABLE is out of the bounding set');
    // Without allow.chflags root is unprivileged for chflags(2).
    await jail('jnochflags', { path: '/', persist: true }, { security: { privileged: true } });
    r = await sh('jnochflags', 'touch /tmp/f && chattr +i /tmp/f');
    assert.notEqual(r.exitCode, 0);
    for (const n of ['jsl0', 'jsl1', 'jnochflags']) await remove(n);
  });

  it('enforce_statfs, allow.mount and allow.mount.nullfs', async () => {
    await jail('jmount', { persist: true, allowMount: true, allowMountNullfs: true, enforceStatfs: 1, mountDevfs: true });
    await ok('jmount', 'mkdir -p /mnt/x && mount --bind /etc /mnt/x && test -f /mnt/x/passwd && umount /mnt/x');
    let r = await sh('jmount', 'umount /proc');
    assert.notEqual(r.exitCode, 0, "the jail's own mounts are locked");
    r = await sh('jmount', 'mount -t tmpfs t /mnt');
    assert.notEqual(r.exitCode, 0, 'new tmpfs mounts are not jail-friendly on Linux');
    // Only the jail's mounts are visible, named inside its root.
    const mounts = await ok('jmount', 'cat /proc/mounts');
    for (const line of mounts.split('\n')) assert.ok(!line.split(' ')[1]!.startsWith(d.dir), `a host path is a mount point inside: ${line}`);
    assert.match(mounts, /^\S+ \/ /m);
    await jail('jnomount', { persist: true });
    r = await sh('jnomount', 'mkdir -p /mnt/x && mount --bind /etc /mnt/x');
    assert.notEqual(r.exitCode, 0, 'without allow.mount root cannot mount');
    await expectError(
      c.api.containers.createContainer({ name: 'jbadmount', spec: spec({ persist: true, allowMount: true, allowMountNullfs: true }) }),
      Code.INVALID_ARGUMENT,
      /enforce_statfs/,
    );
    await expectError(
      c.api.containers.createContainer({ name: 'jbadmount', spec: spec({ persist: true, allowMount: true, allowMountTmpfs: true, enforceStatfs: 1 }) }),
      Code.FAILED_PRECONDITION,
      /allow\.mount\.tmpfs/,
    );
    for (const n of ['jmount', 'jnomount']) await remove(n);
  });

  it('children.max: 0 forbids namespaces (nested jails)', async () => {
    await jail('jchild0', { persist: true });
    let r = await sh('jchild0', 'unshare -U true');
    assert.notEqual(r.exitCode, 0);
    assert.match(r.stderr, /not permitted/i);
    r = await sh('jchild0', 'unshare -n true');
    assert.notEqual(r.exitCode, 0);
    await jail('jchild1', { persist: true, childrenMax: 1 });
    await ok('jchild1', 'unshare -U true');
    for (const n of ['jchild0', 'jchild1']) await remove(n);
  });

  it('mount.devfs and devfs_ruleset decide which device nodes exist', async () => {
    await jail('jdev4', { persist: true, mountDevfs: true });
    assert.deepEqual((await ok('jdev4', 'ls /dev')).split(/\s+/).sort(), [
      'fd',
      'mqueue',
      'null',
      'ptmx',
      'pts',
      'random',
      'shm',
      'stderr',
      'stdin',
      'stdout',
      'urandom',
      'zero',
    ]);
    await jail('jdev1', { persist: true, mountDevfs: true, devfsRuleset: 1 });
    assert.deepEqual((await ok('jdev1', 'ls /dev')).split(/\s+/).sort(), ['mqueue', 'shm']);
    await jail('jnodev', { persist: true });
    assert.deepEqual((await ok('jnodev', 'ls /dev')).split(/\s+/).sort(), ['mqueue', 'shm']);
    await expectError(
      c.api.containers.createContainer({ name: 'jdev0', spec: spec({ persist: true, mountDevfs: true, devfsRuleset: 0 }) }),
      Code.FAILED_PRECONDITION,
      /devfs_ruleset 0/,
    );
    for (const n of ['jdev4', 'jdev1', 'jnodev']) await remove(n);
  });

  it('allow.set_hostname (default on): root may set the hostname, nobody else; off: nobody', async () => {
    await jail('jhn', { persist: true, hostHostname: 'before' });
    assert.equal(await ok('jhn', 'hostname after && hostname'), 'after');
    const r = await execIn(c, 'jhn', ['hostname', 'x'], { uid: 65534 });
    assert.notEqual(r.exitCode, 0, 'an unprivileged user cannot');
    assert.equal(os.hostname() === 'after', false, 'the host kept its name');
    await jail('jnohn', { persist: true, hostHostname: 'fixed', allowSetHostname: false });
    const r2 = await sh('jnohn', 'hostname other');
    assert.notEqual(r2.exitCode, 0);
    const r3 = await sh('jnohn', 'echo other > /proc/sys/kernel/hostname');
    assert.notEqual(r3.exitCode, 0, '/proc/sys is read-only');
    assert.equal(await ok('jnohn', 'hostname'), 'fixed');
    for (const n of ['jhn', 'jnohn']) await remove(n);
  });

  it('allow.raw_sockets, allow.socket_af, allow.reserved_ports and allow.mlock', async () => {
    const raw = `
try:
    socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP); print('ok')
except OSError as e:
    print(errno.errorcode[e.errno])
try:
    socket.socket(40, socket.SOCK_STREAM); print('ok')
except OSError as e:
    print(errno.errorcode[e.errno])
def port(p):
    s = socket.socket()
    try:
        s.bind(('0.0.0.0', p)); return 'ok'
    except OSError as e:
        return errno.errorcode[e.errno]
print(port(81)); print(port(40123))
libc = ctypes.CDLL(None, use_errno=True)
buf = ctypes.create_string_buffer(4096)
print('ok' if libc.mlock(buf, 4096) == 0 else errno.errorcode[ctypes.get_errno()])`;
    // Privileged: on the host's own network stack, reserved ports and raw sockets need capabilities
    // in the host's user namespace (docs/security.md, "What needs privileged").
    await jail('jdefaults', { path: '/', persist: true, ip4: INHERIT }, { security: { privileged: true } });
    assert.deepEqual(
      (await py('jdefaults', raw)).split('\n'),
      ['EPERM', 'EAFNOSUPPORT', 'ok', 'ok', 'EPERM'],
      'defaults: raw off, socket_af off, reserved_ports on, mlock off',
    );
    await jail(
      'jallow',
      { path: '/', persist: true, ip4: INHERIT, allowRawSockets: true, allowSocketAf: true, allowReservedPorts: false, allowMlock: true },
      { security: { privileged: true } },
    );
    assert.deepEqual((await py('jallow', raw)).split('\n'), ['ok', 'ok', 'EACCES', 'ok', 'ok'], 'each turned the other way');
    for (const n of ['jdefaults', 'jallow']) await remove(n);
  });

  it('allow.sysvipc and sysvmsg / sysvsem / sysvshm = new | inherit | disable', async () => {
    const shm = (key: number) => `
libc = ctypes.CDLL(None, use_errno=True)
r = libc.shmget(${key}, 4096, 0o1600)
print(r if r < 0 and False else ('ok' if r >= 0 else errno.errorcode[ctypes.get_errno()]))`;
    const hostHas = (key: number) => execFileSync('ipcs', ['-m'], { encoding: 'utf8' }).includes(`0x${key.toString(16).padStart(8, '0')}`);
    await jail('jipcoff', { path: '/', persist: true });
    assert.equal(await py('jipcoff', shm(0x5101)), 'ENOSYS', 'disabled by default');
    await jail('jipcnew', { path: '/', persist: true, sysvshm: NEW });
    assert.equal(await py('jipcnew', shm(0x5102)), 'ok');
    assert.ok(!hostHas(0x5102), "new: the jail's own key space");
    await jail('jipchost', { path: '/', persist: true, allowSysvipc: true });
    assert.equal(await py('jipchost', shm(0x5103)), 'ok');
    assert.ok(hostHas(0x5103), "inherit: the host's objects");
    execFileSync('ipcrm', ['-M', '0x5103']);
    await expectError(
      c.api.containers.createContainer({ name: 'jipcmix', spec: spec({ persist: true, sysvshm: NEW, sysvmsg: INHERIT }) }),
      Code.FAILED_PRECONDITION,
      /IPC namespace/,
    );
    for (const n of ['jipcoff', 'jipcnew', 'jipchost']) await remove(n);
  });

  it("exec.* run in FreeBSD's order; exec.clean, exec.jail_user, exec.consolelog", async () => {
    const log = path.join(d.dir, 'hooks.log');
    const host = (w: string) => `echo ${w} >> ${log}`;
    await jail('jhooks', {
      persist: true,
      execPrestart: [host('prestart')],
      execCreated: [host('created')],
      execStart: ['echo start', 'env'],
      execPoststart: [host('poststart')],
      execPrestop: [host('prestop')],
      execStop: ['echo stop'],
      execPoststop: [host('poststop')],
      execClean: true,
      execConsolelog: log,
    });
    await stop('jhooks');
    const lines = readFileSync(log, 'utf8').trim().split('\n');
    const order = lines.filter((l) => /^(prestart|created|start|poststart|prestop|stop|poststop)$/.test(l));
    assert.deepEqual(order, ['prestart', 'created', 'start', 'poststart', 'prestop', 'stop', 'poststop']);
    const env = lines
      .filter((l) => /^[A-Z_]+=/.test(l))
      .map((l) => l.split('=')[0])
      .sort();
    assert.deepEqual(
      env.filter((k) => k !== 'TERM'),
      ['HOME', 'PATH', 'SHELL', 'USER'],
      'exec.clean: only the login variables',
    );
    await remove('jhooks');

    const log2 = path.join(d.dir, 'user.log');
    await jail('juser', { persist: true, execJailUser: 'nobody', execStart: ['id -u'], execConsolelog: log2 });
    assert.equal(readFileSync(log2, 'utf8').trim(), '65534');
    await remove('juser');
  });

  it('a failing exec.* command aborts: the jail is not created (or not removed)', async () => {
    const log = path.join(d.dir, 'abort.log');
    await create('jfail1', { persist: true, execPrestart: ['false'], execCreated: [`echo created >> ${log}`] });
    await expectError(c.api.containers.startContainer({ name: 'jfail1' }), Code.FAILED_PRECONDITION, /exec\.prestart "false" failed/);
    let st = (await info('jfail1')).status!;
    assert.equal(st.state, ContainerState.CONTAINER_STATE_STOPPED);
    assert.equal(st.reason, StateReason.STATE_REASON_START_FAILED);
    assert.ok(!existsSync(log), 'nothing after the failed prestart ran');
    assert.ok(!existsSync(cgDir('pids', 'jfail1')), 'no jail was made');

    await create('jfail2', { persist: true, ip4Addr: [A(21)], execStart: ['true', 'false'], execPoststart: [`echo poststart >> ${log}`] });
    await expectError(c.api.containers.startContainer({ name: 'jfail2' }), Code.FAILED_PRECONDITION, /exec\.start "false" failed/);
    assert.ok(!existsSync(log), 'exec.poststart did not run');
    assert.ok(!existsSync(cgDir('pids', 'jfail2')), 'the jail was removed again');
    assert.doesNotMatch(loAddresses(), new RegExp(`${A(21).replace(/\./g, '\\.')}/`), 'and its address');

    const t0 = Date.now();
    await create('jfail3', { persist: true, execTimeout: 1, execStart: ['sleep 30'] });
    await expectError(c.api.containers.startContainer({ name: 'jfail3' }), Code.FAILED_PRECONDITION, /timed out after 1 s/);
    assert.ok(Date.now() - t0 < 10000, 'exec.timeout cut it short');

    await jail('jfail4', { persist: true, execPrestop: ['false'] });
    await expectError(stop('jfail4'), Code.FAILED_PRECONDITION, /exec\.prestop "false" failed \(exit 1\): the jail was not removed/);
    st = (await info('jfail4')).status!;
    assert.equal(st.state, ContainerState.CONTAINER_STATE_RUNNING);
    assert.ok(existsSync(cgDir('pids', 'jfail4')), 'still there');
    for (const n of ['jfail1', 'jfail2', 'jfail3', 'jfail4']) await remove(n);
  });

  it('stop.timeout (spec.stop_timeout): SIGTERM, then removal after the timeout; 0 removes at once', async () => {
    const stubborn = ["trap '' TERM; sleep 60 &"];
    await jail('jslow', { persist: true, mountDevfs: true, execStart: stubborn }, { stopTimeout: { seconds: 1, nanos: 0 } });
    let t0 = Date.now();
    await stop('jslow');
    const slow = Date.now() - t0;
    assert.ok(slow >= 900 && slow < 6000, `waited ${slow} ms for a process that ignores SIGTERM`);
    await jail('jfast', { persist: true, mountDevfs: true, execStart: stubborn }, { stopTimeout: { seconds: 0, nanos: 0 } });
    t0 = Date.now();
    await stop('jfast');
    assert.ok(Date.now() - t0 < 900, 'stop.timeout 0: no SIGTERM, removed at once');
    for (const n of ['jslow', 'jfast']) await remove(n);
  });

  it('mount and mount.fstab: nullfs and tmpfs mounts in the jail', async () => {
    const root = makeRoot(path.join(d.dir, 'roots', 'jmnt'));
    const data = path.join(d.dir, 'data');
    mkdirSync(data, { recursive: true });
    writeFileSync(path.join(data, 'file'), 'from the host\n');
    const fstab = path.join(d.dir, 'fstab.jmnt');
    writeFileSync(fstab, `# jail fstab\ntmpfs ${root}/tmp tmpfs rw,size=1m,mode=1777 0 0\n`);
    await jail('jmnt', { path: root, persist: true, mount: [`${data} ${root}/mnt nullfs ro 0 0`], mountFstab: fstab });
    assert.equal(await ok('jmnt', 'cat /mnt/file'), 'from the host');
    assert.notEqual((await sh('jmnt', 'touch /mnt/new')).exitCode, 0, 'read-only');
    assert.match(await ok('jmnt', 'grep " /tmp " /proc/mounts'), /^tmpfs \/tmp tmpfs/);
    await remove('jmnt');
  });

  it('rctl limits: memoryuse, maxproc, pcpu (cgroups), openfiles, vmemoryuse (rlimits)', async () => {
    await jail('jrctl', { persist: true, rctl: { memoryuse: 64 * 1024 * 1024, maxproc: 40, pcpu: 50, openfiles: 128, vmemoryuse: 512 * 1024 * 1024 } });
    const v2 = layout?.kind === 'v2';
    assert.equal(readFileSync(path.join(cgDir('memory', 'jrctl'), v2 ? 'memory.max' : 'memory.limit_in_bytes'), 'utf8').trim(), String(64 * 1024 * 1024));
    assert.equal(readFileSync(path.join(cgDir('pids', 'jrctl'), 'pids.max'), 'utf8').trim(), '40');
    const quota = v2
      ? readFileSync(path.join(cgDir('cpu', 'jrctl'), 'cpu.max'), 'utf8').split(' ')[0]
      : readFileSync(path.join(cgDir('cpu', 'jrctl'), 'cpu.cfs_quota_us'), 'utf8').trim();
    assert.equal(quota, '50000');
    assert.equal(await ok('jrctl', 'ulimit -n'), '128');
    assert.equal(await ok('jrctl', 'ulimit -v'), String(512 * 1024));
    assert.notEqual((await sh('jrctl', 'ulimit -n 4096')).exitCode, 0, 'root cannot raise it');
    await remove('jrctl');
  });

  it('imports a handbook-style jail.conf, starts it, and lists and enters it with jls and jexec', async () => {
    const jailsDir = path.join(d.dir, 'usr-local-jails');
    // Port 80 in a user-namespaced jail: its address filter lets it bind reserved ports (allow.reserved_ports).
    const rc = '#!/bin/sh\necho rc ran > /var/run/rc.ran\nhttpd -h /etc -p 80\n';
    const shutdown = '#!/bin/sh\nkillall httpd\necho rc.shutdown ran\n';
    makeRoot(path.join(jailsDir, 'containers', 'classic'), { 'etc/rc': rc, 'etc/rc.shutdown': shutdown });
    const consolelog = path.join(d.dir, 'jail_console_classic.log');
    const conf = path.join(d.dir, 'jail.conf');
    writeFileSync(
      conf,
      `# /etc/jail.conf, in the style of the FreeBSD Handbook
$jails = "${jailsDir}";

# startup/logging
exec.start = "/bin/sh /etc/rc";
exec.stop = "/bin/sh /etc/rc.shutdown";
exec.consolelog = "${path.dirname(consolelog)}/jail_console_\${name}.log";

# permissions
allow.raw_sockets;
exec.clean;
mount.devfs;

# hostname/path
host.hostname = "\${name}";
path = "$jails/containers/\${name}";

// network
ip4.addr = ${A(31)};
interface = lo;

classic {
    /* this jail keeps the defaults above */
    ip4.addr += ${A(32)};
    allow.nomount;
}
`,
    );
    let r = await cli('jail', 'import', conf, '--dry-run', '-o', 'json');
    assert.equal(r.code, 0, r.stderr);
    const dry = JSON.parse(r.stdout) as { name: string; options: { ip4Addr: string[]; path: string; hostHostname: string; allowRawSockets: boolean } }[];
    assert.deepEqual(
      dry.map((j) => j.name),
      ['classic'],
    );
    assert.deepEqual(dry[0]!.options.ip4Addr, [A(31), A(32)], '+= appends');
    assert.equal(dry[0]!.options.path, path.join(jailsDir, 'containers', 'classic'), '$var and ${name} substituted');
    assert.equal(dry[0]!.options.hostHostname, 'classic');
    assert.equal(dry[0]!.options.allowRawSockets, true);
    r = await cli('jail', 'import', conf, '--start');
    assert.equal(r.code, 0, r.stderr);
    made.add('classic');
    assert.match(r.stdout, /classic: created and started/);
    assert.equal(await ok('classic', 'cat /var/run/rc.ran'), 'rc ran');
    // jls: jid, first address, hostname, path.
    r = await cli('jls');
    assert.equal(r.code, 0, r.stderr);
    const [header, ...rows] = r.stdout.trimEnd().split('\n');
    assert.match(header!, /^\s+JID\s+IP Address\s+Hostname\s+Path$/);
    const row = rows.find((l) => l.includes('classic'))!;
    assert.ok(row, r.stdout);
    const [jid, ip, hostname, jpath] = row.trim().split(/\s+/);
    assert.match(jid!, /^\d+$/);
    assert.equal(ip, A(31));
    assert.equal(hostname, 'classic');
    assert.equal(jpath, path.join(jailsDir, 'containers', 'classic'));
    // jexec by jid and by name, as the jail's root or another user.
    r = await cli('jexec', jid!, 'hostname');
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim(), 'classic');
    r = await cli('jexec', '-U', 'nobody', 'classic', '--', 'id', '-u');
    assert.equal(r.stdout.trim(), '65534');
    r = await cli('jexec', '-l', 'classic', '--', 'sh', '-c', 'echo $HOME $USER; pwd');
    assert.equal(r.stdout.trim(), '/root root\n/root');
    r = await cli('jexec', 'classic', '--', 'sh', '-c', 'exit 7');
    assert.equal(r.code, 7, "jexec exits with the command's code");
    // The jid is stable: the same after a restart of the jail.
    await stop('classic');
    assert.match(readFileSync(consolelog, 'utf8'), /rc\.shutdown ran/);
    await c.api.containers.startContainer({ name: 'classic' });
    r = await cli('jls', '-o', 'json');
    assert.equal((JSON.parse(r.stdout) as { name: string; jid: number }[]).find((j) => j.name === 'classic')?.jid, Number(jid));
    await remove('classic');
  });

  it('reports jail.conf errors with file, line and column', async () => {
    const cases: [string, RegExp][] = [
      ['www {\n  host.hostname = www\n  persist;\n}\n', /^bad\.conf:3:3: expected ";" after the value of "host\.hostname"/],
      ['www {\n  path = "/jails/www;\n}\n', /^bad\.conf:2:10: unterminated double-quoted string/],
      ['www {\n  persist;\n  frobnicate = 1;\n}\n', /^bad\.conf:3:3: jail "www": unknown parameter "frobnicate"/],
      ['www {\n  path = "/jails/${nope}";\n}\n', /^bad\.conf:2:18: jail "www": \$\{nope\} is not defined/],
      ['/* unterminated\nwww { persist; }\n', /^bad\.conf:1:1: unterminated \/\* comment/],
      ['www {\n  ip4 = sometimes;\n}\n', /^bad\.conf:2:3: jail "www": ip4 = "sometimes": expected new, inherit or disable/],
    ];
    for (const [text, re] of cases) {
      const se = await expectError(
        jails.importJailConf({ text, fileName: 'bad.conf', names: [], rctlConf: '', start: false, validateOnly: false }),
        Code.INVALID_ARGUMENT,
        re,
      );
      const det = decodeStatusDetails(se.metadata);
      assert.equal(det.errorInfo?.reason, 'JAIL_CONF_SYNTAX');
      assert.match(det.badRequest?.fieldViolations[0]?.description ?? '', re);
    }
    // The CLI says the same and fails.
    const bad = path.join(d.dir, 'bad.conf');
    writeFileSync(bad, cases[0]![0]);
    const r = await cli('jail', 'import', bad);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /INVALID_ARGUMENT \[JAIL_CONF_SYNTAX\]: bad\.conf:3:3:/);
    // rctl.conf rules for the jail, and a bad one.
    const ok2 = await jails.importJailConf({
      text: 'www { persist; osvirt.template = busybox; }',
      fileName: 'x.conf',
      names: [],
      rctlConf: 'jail:www:memoryuse:deny=64m\njail:www:maxproc:deny=20\n',
      start: false,
      validateOnly: true,
    });
    assert.equal(ok2.jails[0]?.options?.rctl?.memoryuse, 64n * 1024n * 1024n);
    await expectError(
      jails.importJailConf({
        text: 'www { persist; osvirt.template = busybox; }',
        fileName: 'x.conf',
        names: [],
        rctlConf: 'jail:www:memoryuse:log=64m\n',
        start: false,
        validateOnly: true,
      }),
      Code.INVALID_ARGUMENT,
      /^rctl\.conf:1:1: action "log"/,
    );
  });

  it("checkpoints and restores jails (vnet and on the host's stack), which go on where they were", async function () {
    const drivers = await c.api.system.listDrivers({});
    if (!drivers.drivers.find((x) => x.name === 'jail')?.capabilities.includes('checkpoint')) return this.skip();
    const counter = 'i=0; while :; do i=$((i+1)); echo $i > /tmp/count; sleep 0.1; done &';
    // Privileged: CRIU cannot restore a vnet jail's veth into a user namespace.
    await jail('jcr', { vnet: NEW, persist: true, hostHostname: 'cr.example', mountDevfs: true, execStart: [counter] }, { security: { privileged: true } });
    const before = (await jails.listJails({ pageSize: 0, pageToken: '' })).jails.find((j) => j.name === 'jcr')!;
    await until(async () => Number(await ok('jcr', 'cat /tmp/count')) > 3, 'the counter to run');
    const cp = (await c.api.containers.checkpointContainer({ name: 'jcr', checkpoint: 'cp1', options: undefined })).checkpoint!;
    assert.equal(cp.name, 'cp1');
    assert.equal((await info('jcr')).status?.state, ContainerState.CONTAINER_STATE_STOPPED);
    const at = Number(readFileSync(path.join(d.stateDir, 'drivers', 'jail', 'containers', 'jcr', 'upper', 'tmp', 'count'), 'utf8'));
    await c.api.containers.restoreContainer({ name: 'jcr', checkpoint: 'cp1', newName: '', tcpEstablished: false, timeout: undefined });
    assert.equal((await info('jcr')).status?.state, ContainerState.CONTAINER_STATE_RUNNING);
    await until(async () => Number(await ok('jcr', 'cat /tmp/count')) > at + 3, 'the counter to go on from where it was');
    assert.equal(await ok('jcr', 'hostname'), 'cr.example');
    assert.deepEqual((await sh('jcr', 'cat /proc/1/cmdline')).stdout.split('\0').filter(Boolean), ['/dev/.osvirt-init', 'init']);
    // Still a jail: the filter and the jid came back.
    assert.notEqual((await sh('jcr', 'unshare -U true')).exitCode, 0);
    const after = (await jails.listJails({ pageSize: 0, pageToken: '' })).jails.find((j) => j.name === 'jcr')!;
    assert.equal(after.jid, before.jid);
    await stop('jcr');
    await remove('jcr');

    // On the host's stack: its address leaves with it and comes back, and the listening
    // socket and the address filter with them.
    const get = () => execFileP('curl', ['-sf', '--max-time', '5', `http://${A(41)}/os-release`]).then((r) => r.stdout);
    await jail('jcr2', { persist: true, mountDevfs: true, ip4Addr: [A(41)], execStart: ['httpd -h /etc -p 80', counter] });
    assert.match(await get(), /osvirt busybox/);
    await c.api.containers.checkpointContainer({ name: 'jcr2', checkpoint: 'cp2', options: undefined });
    assert.doesNotMatch(loAddresses(), new RegExp(`${A(41).replace(/\./g, '\\.')}/`));
    await c.api.containers.restoreContainer({ name: 'jcr2', checkpoint: 'cp2', newName: '', tcpEstablished: false, timeout: undefined });
    assert.match(loAddresses(), new RegExp(`${A(41).replace(/\./g, '\\.')}/`));
    assert.match(await get(), /osvirt busybox/, "the restored httpd serves on the jail's address");
    assert.ok(
      (await new IpFilter().list()).some((x) => x.cgroup2Dir.endsWith('/osvirt/jcr2')),
      'the filter is back',
    );
    const r = await sh('jcr2', `httpd -f -p ${A(250)}:8080`);
    assert.match(r.stderr, /bind.*Cannot assign requested address/, 'still restricted to its address');
    await stop('jcr2');
    await remove('jcr2');
  });

  it('survives a daemon restart: the jail keeps running, with its jid, filter and exec.stop', async () => {
    const log = path.join(d.dir, 'restart.log');
    await jail('jrestart', { persist: true, ip4Addr: [A(61)], execStop: ['echo stopped'], execConsolelog: log });
    const jid = (await jails.listJails({ pageSize: 0, pageToken: '' })).jails.find((j) => j.name === 'jrestart')!.jid;
    await d.stop();
    c = await d.start();
    jails = promisifyClient(new JailServiceClient('unused', credentials.createInsecure(), { channelOverride: c.containers.getChannel() }));
    assert.equal((await info('jrestart')).status?.state, ContainerState.CONTAINER_STATE_RUNNING);
    assert.equal((await jails.listJails({ pageSize: 0, pageToken: '' })).jails.find((j) => j.name === 'jrestart')?.jid, jid);
    assert.notEqual((await sh('jrestart', 'unshare -U true')).exitCode, 0, "exec still gets the jail's seccomp filter");
    await stop('jrestart');
    assert.equal(readFileSync(log, 'utf8').trim(), 'stopped');
    assert.doesNotMatch(loAddresses(), new RegExp(`${A(61).replace(/\./g, '\\.')}/`));
    await remove('jrestart');
  });

  it('leaves nothing behind: processes, cgroups, BPF attachments, host addresses, veths', async () => {
    for (const n of made) await remove(n);
    const list = (await c.api.containers.listContainers({ pageSize: 1000, pageToken: '', driver: 'jail', states: [] })).containers;
    assert.deepEqual(
      list.map((x) => x.name),
      [],
    );
    for (const n of made) assert.ok(!existsSync(cgDir('pids', n)), `cgroup of ${n}`);
    const attached = (await new IpFilter().list()).map((x) => x.cgroup2Dir);
    for (const n of made) assert.ok(!attached.some((x) => x.endsWith(`/osvirt/${n}`)), `BPF filter on ${n}`);
    assert.doesNotMatch(loAddresses(), /198\.51\.100\.|2001:db8:51::/);
    let monitors = '';
    try {
      monitors = execFileSync('pgrep', ['-f', `osvirt-helper (run|restore) .*--state ${d.stateDir}`], { encoding: 'utf8' });
    } catch {
      // none
    }
    assert.equal(monitors.trim(), '', 'no monitor left running');
  });
});
