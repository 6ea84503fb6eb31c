// The lxc driver, proven from the host: /proc, /sys/fs/cgroup, `ip`, real
// TCP connections. Every container goes through the real daemon and API.
import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, readlinkSync, writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { status as Code, type ServiceError } from '@grpc/grpc-js';
import { ContainerState, InterfaceStats, MountType, type ContainerSpec, type DeepPartial } from '../src/gen/osvirt/v1/container';
import type { AttachConsoleResponse } from '../src/gen/osvirt/v1/container_service';
import { decodeStatusDetails } from '../src/core/grpc-status';
import { detectLayout } from '../drivers/lxc/cgroups';
import { hasKernelFeature, hostIfName } from '../drivers/lxc/network';
import { holds, isRoot, TestDaemon, useDaemon, until, type Client } from './support/daemon';
import { parentPid, pidAlive } from '../src/host/processes';
import { execIn, ncSend, sh } from './support/exec';
import { busybox } from './support/specs';

const layout = isRoot() ? detectLayout() : undefined;

/** The container's cgroup directory for a controller, on either layout. */
function cgDir(controller: string, name: string): string {
  if (!layout) throw new Error('no cgroups');
  if (layout.kind === 'v2') return path.join(layout.root, 'osvirt', name);
  return path.join(layout.v1[controller]!, 'osvirt', name);
}

function cgRead(controller: string, name: string, v1file: string, v2file: string): string {
  return readFileSync(path.join(cgDir(controller, name), layout?.kind === 'v2' ? v2file : v1file), 'utf8').trim();
}

function hostLinks(): string[] {
  return execFileSync('ip', ['-o', 'link', 'show'], { encoding: 'utf8' })
    .split('\n')
    .map((l) => l.split(': ')[1]?.split('@')[0] ?? '')
    .filter(Boolean);
}

function nsInode(pid: number, ns: string): string {
  return readlinkSync(`/proc/${pid}/ns/${ns}`);
}

describe('lxc driver (real containers)', function () {
  this.timeout(120000);
  let d: TestDaemon;
  let c: Client;
  useDaemon((daemon, client) => {
    d = daemon;
    c = client;
  });

  /** The host end of a container's veth (other osvirt daemons may have their own on this host). */
  const vethOf = (name: string) => hostIfName('ovh', name, path.join(d.stateDir, 'drivers', 'ipam.json'));

  async function run(name: string, spec: DeepPartial<ContainerSpec> = {}): Promise<number> {
    await c.api.containers.createContainer({ name, spec: busybox(spec) });
    const ct = (await c.api.containers.startContainer({ name })).container!;
    assert.equal(ct.status?.state, ContainerState.CONTAINER_STATE_RUNNING);
    return ct.status!.initPid;
  }
  const remove = (name: string) => c.api.containers.deleteContainer({ name, force: true, allowMissing: true });
  const bridgeAddr = async (name: string) => (await sh(c, name, "ip -4 -o addr show eth0 | awk '{print $4}'")).split('/')[0]!;

  it('isolates namespaces, pivots the root, sets the hostname, caps, and cgroup limits', async () => {
    const marker = path.join(os.tmpdir(), `osvirt-marker-${process.pid}`);
    writeFileSync(marker, 'host secret');
    try {
      const pid = await run('iso', {
        hostname: 'isolated',
        resources: { memoryLimitBytes: 64 * 1024 * 1024, pidsLimit: 40, cpuWeight: 200 },
        capabilities: { drop: ['net_raw', 'mknod'], add: ['sys_time'] },
      });
      for (const ns of ['pid', 'mnt', 'uts', 'ipc', 'net', 'cgroup'])
        assert.notEqual(nsInode(pid, ns), nsInode(process.pid, ns), `${ns} namespace is the host's`);
      assert.equal(await sh(c, 'iso', 'hostname'), 'isolated');
      assert.equal(execFileSync('nsenter', ['-t', String(pid), '-u', 'hostname'], { encoding: 'utf8' }).trim(), 'isolated');
      assert.match(await sh(c, 'iso', 'cat /proc/1/cmdline | tr "\\0" " "'), /^\/bin\/sh -c trap/);
      const r = await execIn(c, 'iso', ['cat', marker]);
      assert.notEqual(r.exitCode, 0, 'a host file is visible inside');
      // The root the init sees is the busybox overlay, not the host's /.
      assert.match(readFileSync(`/proc/${pid}/root/etc/os-release`, 'utf8'), /osvirt busybox/);
      assert.ok(
        readFileSync(`/proc/${pid}/mountinfo`, 'utf8')
          .split('\n')
          .some((l) => l.split(' ')[4] === '/' && l.includes('overlay')),
        'the container root is an overlay mount',
      );

      const capBnd = BigInt(`0x${/CapBnd:\s*([0-9a-f]+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]}`);
      const bit = (n: number) => (capBnd >> BigInt(n)) & 1n;
      assert.equal(bit(13), 0n, 'net_raw dropped');
      assert.equal(bit(27), 0n, 'mknod dropped');
      assert.equal(bit(25), 1n, 'sys_time added');
      assert.equal(bit(16), 0n, 'sys_module dropped by default');
      assert.equal(bit(21), 1n, 'sys_admin kept by default');

      assert.equal(cgRead('memory', 'iso', 'memory.limit_in_bytes', 'memory.max'), String(64 * 1024 * 1024));
      assert.equal(cgRead('pids', 'iso', 'pids.max', 'pids.max'), '40');
      if (layout?.kind === 'hybrid') assert.equal(cgRead('cpu', 'iso', 'cpu.shares', 'cpu.weight'), '5219');
      const procs = readFileSync(path.join(cgDir('pids', 'iso'), 'cgroup.procs'), 'utf8');
      assert.ok(procs.split('\n').includes(String(pid)), 'the init is in its cgroup');
      // The monitor stays outside the container's cgroup.
      const monitorPid = parentPid(pid)!;
      assert.ok(!procs.split('\n').includes(String(monitorPid)));
      // exec joins the same namespaces.
      assert.equal(await sh(c, 'iso', 'readlink /proc/self/ns/net'), nsInode(pid, 'net'));
      assert.equal(await sh(c, 'iso', 'readlink /proc/self/ns/mnt'), nsInode(pid, 'mnt'));
    } finally {
      rmSync(marker, { force: true });
      await remove('iso');
    }
  });

  it('enforces the pids limit (a fork bomb stops) and the memory limit', async () => {
    await run('limits', { resources: { memoryLimitBytes: 32 * 1024 * 1024, pidsLimit: 20 } });
    try {
      const r = await execIn(c, 'limits', ['/bin/sh', '-c', 'i=0; while [ $i -lt 60 ]; do sleep 30 >/dev/null 2>&1 & i=$((i+1)); done; echo done']);
      assert.match(r.stderr + r.stdout, /fork|Resource temporarily unavailable|can't fork/i, 'forks beyond the limit fail');
      const cur = Number(cgRead('pids', 'limits', 'pids.current', 'pids.current'));
      assert.ok(cur <= 20, `pids.current ${cur} exceeds the limit`);
      await execIn(c, 'limits', ['/bin/sh', '-c', 'pkill sleep; killall sleep; true']);
      const m = await execIn(c, 'limits', ['/bin/sh', '-c', 'dd if=/dev/zero of=/dev/null bs=96M count=1']);
      assert.notEqual(m.exitCode, 0, 'a 96 MiB allocation succeeded under a 32 MiB limit');
      const failcnt =
        layout?.kind === 'v2' ? /oom_kill (\d+)/.exec(cgRead('memory', 'limits', '', 'memory.events'))?.[1] : cgRead('memory', 'limits', 'memory.failcnt', '');
      assert.ok(Number(failcnt) > 0, 'the memory cgroup recorded hitting its limit');
    } finally {
      await remove('limits');
    }
  });

  it('connects host to container over veth and container to container over the bridge', async () => {
    const pidA = await run('neta', { network: { mode: { $case: 'bridge', value: {} } } });
    await run('netb', { network: { mode: { $case: 'bridge', value: {} } } });
    try {
      const hostEnd = hostLinks().find((l) => l.startsWith('ovh') && readFileSync(`/sys/class/net/${l}/master/uevent`, 'utf8').includes(d.bridge));
      assert.ok(hostEnd, 'a host veth end is attached to the bridge');
      const ipA = await bridgeAddr('neta');
      const ipB = await bridgeAddr('netb');
      assert.notEqual(ipA, ipB);
      assert.ok(execFileSync('nsenter', ['-t', String(pidA), '-n', 'ip', '-o', 'addr'], { encoding: 'utf8' }).includes(ipA));
      await sh(c, 'neta', 'echo hello-from-a > /tmp/msg; nc -l -p 7000 < /tmp/msg > /tmp/got 2>&1 &');
      const reply = await until(
        () =>
          new Promise<string | false>((resolve) => {
            const s = net.connect(7000, ipA);
            let buf = '';
            s.on('data', (b) => (buf += b.toString()));
            s.on('end', () => resolve(buf || false));
            s.on('error', () => resolve(false));
            s.on('connect', () => s.end('hello-from-host\n'));
          }),
        'the container TCP server',
      );
      assert.equal(String(reply).trim(), 'hello-from-a');
      assert.equal(await until(async () => (await sh(c, 'neta', 'cat /tmp/got')) || false, 'data at the server'), 'hello-from-host');
      assert.equal(await ncSend(c, 'neta', 'netb', ipA, 7001, 'hello-from-b'), 'hello-from-b');
    } finally {
      await remove('neta');
      await remove('netb');
    }
    assert.deepEqual(
      hostLinks().filter((l) => ['neta', 'netb'].map(vethOf).includes(l)),
      [],
      'no veth left on the host',
    );
  });

  it('connects two containers over macvlan on a host parent interface', async () => {
    const parent = `ovmp${process.pid % 10000}`;
    execFileSync('ip', ['link', 'add', parent, 'type', 'veth', 'peer', 'name', `${parent}b`]);
    try {
      execFileSync('ip', ['link', 'set', parent, 'up']);
      execFileSync('ip', ['link', 'set', `${parent}b`, 'up']);
      const mv = (addr: string): DeepPartial<ContainerSpec> => ({ network: { mode: { $case: 'macvlan', value: { parent, address: addr } } } });
      await run('mva', mv('192.168.231.2/24'));
      await run('mvb', mv('192.168.231.3/24'));
      const pidA = (await c.api.containers.getContainer({ name: 'mva' })).container!.status!.initPid;
      assert.match(execFileSync('nsenter', ['-t', String(pidA), '-n', 'ip', '-d', 'link', 'show', 'eth0'], { encoding: 'utf8' }), /macvlan/);
      assert.equal(await ncSend(c, 'mva', 'mvb', '192.168.231.2', 7002, 'over-macvlan'), 'over-macvlan');
    } finally {
      await remove('mva');
      await remove('mvb');
      execFileSync('ip', ['link', 'del', parent]);
    }
  });

  it('answers FAILED_PRECONDITION naming 802.1q when the kernel has no VLAN support', async function () {
    if (hasKernelFeature('CONFIG_VLAN_8021Q', '/proc/net/vlan') !== false) return this.skip(); // this kernel has VLANs: nothing to refuse
    const e = await c.api.containers
      .createContainer({ name: 'vlan', spec: busybox({ network: { mode: { $case: 'vlan', value: { parent: 'lo', vlanId: 10 } } } }) })
      .then(
        () => assert.fail('created a VLAN container without 802.1q'),
        (err: ServiceError) => err,
      );
    assert.equal(e.code, Code.FAILED_PRECONDITION);
    assert.match(e.details, /802\.1q|VLAN_8021Q/);
    assert.equal(decodeStatusDetails(e.metadata).errorInfo?.reason, 'KERNEL_FEATURE_MISSING');
    await assert.rejects(c.api.containers.getContainer({ name: 'vlan' }), (err: ServiceError) => err.code === Code.NOT_FOUND);
  });

  it('pause really freezes (a counter stops) and resume thaws it', async () => {
    const pid = await run('frz', {
      process: { args: ['/bin/sh', '-c', 'i=0; while :; do i=$((i+1)); echo $i > /tmp/n.new; mv /tmp/n.new /tmp/n; sleep 0.05; done'] },
    });
    try {
      const counter = () => Number(readFileSync(`/proc/${pid}/root/tmp/n`, 'utf8'));
      await until(() => counter() > 2, 'counter running');
      await c.api.containers.pauseContainer({ name: 'frz' });
      const frozenState = layout?.kind === 'v2' ? cgRead('freezer', 'frz', '', 'cgroup.events') : cgRead('freezer', 'frz', 'freezer.state', '');
      assert.match(frozenState, /FROZEN|frozen 1/);
      const a = counter();
      await holds(() => counter() === a, 'the paused counter standing still', 400);
      await c.api.containers.resumeContainer({ name: 'frz' });
      await until(() => counter() > a + 2, 'counter moving again');
    } finally {
      await remove('frz');
    }
  });

  it("joins another container's network and IPC namespaces (partial isolation)", async () => {
    const pidA = await run('drv', {});
    try {
      const pidB = await run('cli', {
        network: { mode: { $case: 'container', value: { container: 'drv' } } },
        driverOptions: { $case: 'lxc', value: { shareIpcWith: 'drv' } },
      });
      assert.equal(nsInode(pidB, 'net'), nsInode(pidA, 'net'));
      assert.equal(nsInode(pidB, 'ipc'), nsInode(pidA, 'ipc'));
      assert.notEqual(nsInode(pidB, 'pid'), nsInode(pidA, 'pid'));
      assert.notEqual(nsInode(pidB, 'mnt'), nsInode(pidA, 'mnt'));
      // A listener in one is reachable on 127.0.0.1 from the other: same stack.
      assert.equal(await ncSend(c, 'drv', 'cli', '127.0.0.1', 7003, 'shared-net'), 'shared-net');
      // Joining a container that is not running is refused.
      await c.api.containers.createContainer({ name: 'cli2', spec: busybox({ network: { mode: { $case: 'container', value: { container: 'nosuch' } } } }) });
      await assert.rejects(c.api.containers.startContainer({ name: 'cli2' }), (e: ServiceError) => e.code === Code.NOT_FOUND);
    } finally {
      await remove('cli');
      await remove('cli2');
      await remove('drv');
    }
  });

  it('passes exactly the requested device node through the device cgroup', async function () {
    if (layout?.kind !== 'hybrid' || !existsSync('/dev/net/tun')) return this.skip();
    await run('tun', { devices: [{ path: '/dev/net/tun', permissions: 'rwm' }] });
    await run('notun', {});
    try {
      assert.match(cgRead('devices', 'tun', 'devices.list', ''), /c 10:200 rwm/);
      assert.match(await sh(c, 'tun', 'ls -l /dev/net/tun'), /^c/);
      // Opening it works (the kernel then complains about the missing ioctl, not about permission).
      const ok = await execIn(c, 'tun', ['/bin/sh', '-c', 'cat /dev/net/tun']);
      assert.doesNotMatch(ok.stderr, /Operation not permitted/);
      const denied = await execIn(c, 'notun', ['/bin/sh', '-c', 'mkdir -p /dev/net; mknod /dev/net/tun c 10 200; cat /dev/net/tun']);
      assert.match(denied.stderr, /Operation not permitted/);
    } finally {
      await remove('tun');
      await remove('notun');
    }
  });

  it('honours file capabilities that the bounding set allows, and only those', async function () {
    if (!existsSync('/usr/sbin/setcap') && !existsSync('/sbin/setcap')) return this.skip();
    const pid = await run('fcap', { capabilities: { drop: ['sys_time'] } });
    try {
      const root = `/proc/${pid}/root`;
      // busybox picks its applet from argv[0], so each copy is named after one.
      for (const dir of ['cap', 'time']) execFileSync('mkdir', ['-p', `${root}/opt/${dir}`]);
      execFileSync('cp', [`${root}/bin/busybox`, `${root}/opt/cap/grep`]);
      execFileSync('cp', [`${root}/bin/busybox`, `${root}/opt/time/true`]);
      execFileSync('setcap', ['cap_net_bind_service+ep', `${root}/opt/cap/grep`]);
      execFileSync('setcap', ['cap_sys_time+ep', `${root}/opt/time/true`]);
      const r = await execIn(c, 'fcap', [
        '/bin/su',
        'nobody',
        '-s',
        '/bin/sh',
        '-c',
        '/opt/cap/grep CapEff /proc/self/status; /bin/grep CapEff /proc/self/status',
      ]);
      const [withCap, without] = r.stdout
        .trim()
        .split('\n')
        .map((l) => BigInt(`0x${l.split(/\s+/)[1]}`));
      assert.equal(withCap, 1n << 10n, `file capability gained: ${r.stdout} ${r.stderr}`);
      assert.equal(without, 0n);
      // sys_time is outside the bounding set: the kernel refuses to run a binary that needs it.
      const t = await execIn(c, 'fcap', ['/bin/su', 'nobody', '-s', '/bin/sh', '-c', '/opt/time/true']);
      assert.notEqual(t.exitCode, 0);
    } finally {
      await remove('fcap');
    }
  });

  it("runs an application container on the host's read-only filesystem with private /tmp", async () => {
    await c.api.containers.createContainer({
      name: 'app',
      spec: busybox({ rootfs: { source: { $case: 'host', value: {} } }, process: { args: ['/bin/sleep', '300'] } }),
    });
    const pid = (await c.api.containers.startContainer({ name: 'app' })).container!.status!.initPid;
    try {
      assert.equal(await sh(c, 'app', 'cat /etc/os-release | head -1'), readFileSync('/etc/os-release', 'utf8').split('\n')[0]);
      const w = await execIn(c, 'app', ['/bin/sh', '-c', 'touch /usr/osvirt-should-fail']);
      assert.notEqual(w.exitCode, 0, 'the host filesystem is writable');
      assert.ok(!existsSync('/usr/osvirt-should-fail'));
      await sh(c, 'app', 'echo private > /tmp/app-file');
      assert.ok(!existsSync('/tmp/app-file'), "the container /tmp is the host's");
      assert.equal(await sh(c, 'app', 'cat /tmp/app-file'), 'private');
      assert.notEqual(nsInode(pid, 'mnt'), nsInode(process.pid, 'mnt'));
    } finally {
      await remove('app');
    }
  });

  it('applies bind mounts (read-only and read-write) and tmpfs mounts', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'osvirt-bind-'));
    writeFileSync(path.join(dir, 'in.txt'), 'from host');
    try {
      await run('mnt', {
        mounts: [
          { type: MountType.MOUNT_TYPE_BIND, source: dir, destination: '/data', readonly: true },
          { type: MountType.MOUNT_TYPE_BIND, source: dir, destination: '/rw' },
          { type: MountType.MOUNT_TYPE_TMPFS, destination: '/scratch', options: ['size=1m'] },
        ],
      });
      assert.equal(await sh(c, 'mnt', 'cat /data/in.txt'), 'from host');
      assert.notEqual((await execIn(c, 'mnt', ['/bin/sh', '-c', 'echo x > /data/new'])).exitCode, 0);
      await sh(c, 'mnt', 'echo written > /rw/out.txt');
      assert.equal(readFileSync(path.join(dir, 'out.txt'), 'utf8').trim(), 'written');
      assert.match(await sh(c, 'mnt', 'grep " /scratch " /proc/mounts'), /tmpfs/);
    } finally {
      await remove('mnt');
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('gives a tty container a console that can be attached', async () => {
    await run('tty', { process: { args: ['/bin/sh'], tty: true } });
    try {
      const stream = c.containers.attachConsole();
      let out = '';
      stream.on('data', (m: AttachConsoleResponse) => (out += m.output.toString()));
      stream.on('error', () => undefined);
      stream.write({ message: { $case: 'start', value: { name: 'tty', terminalSize: { rows: 30, cols: 100 } } } });
      stream.write({ message: { $case: 'input', value: Buffer.from('echo con$((40+2))sole; stty size\n') } });
      await until(() => out.includes('con42sole') && out.includes('30 100'), `console output (got ${JSON.stringify(out)})`);
      stream.cancel();
    } finally {
      await remove('tty');
    }
  });

  it('reports stats from the cgroup and the network namespace', async () => {
    await run('stat', { resources: { memoryLimitBytes: 128 * 1024 * 1024, pidsLimit: 50 }, network: { mode: { $case: 'bridge', value: {} } } });
    try {
      await sh(c, 'stat', 'i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; ping -c 1 -W 1 ' + (await sh(c, 'stat', "ip route | awk '/default/{print $3}'")));
      const s = (await c.api.containers.getContainerStats({ name: 'stat' })).stats!;
      assert.ok(s.cpuUsageNs > 0);
      assert.ok(s.memoryUsageBytes > 0);
      assert.equal(s.memoryLimitBytes, 128n * 1024n * 1024n);
      assert.equal(s.pidsLimit, 50);
      assert.ok(s.pidsCurrent >= 1);
      const eth = s.interfaces.find((i) => i.name === 'eth0');
      assert.ok(eth && eth.txBytes > 0n && eth.rxBytes > 0n, JSON.stringify(s.interfaces.map((i) => InterfaceStats.toJSON(i))));
    } finally {
      await remove('stat');
    }
  });

  it('leaves nothing behind after delete: no process, cgroup, veth, mount or state', async () => {
    const pid = await run('gone', { network: { mode: { $case: 'bridge', value: {} } }, resources: { pidsLimit: 10 } });
    const monitorPid = parentPid(pid)!;
    const ctDir = path.join(d.stateDir, 'drivers', 'lxc', 'containers', 'gone');
    assert.ok(existsSync(ctDir));
    await c.api.containers.deleteContainer({ name: 'gone', force: true, allowMissing: false });
    assert.ok(!existsSync(`/proc/${pid}`), 'init still running');
    await until(() => !pidAlive(monitorPid), 'monitor exit');
    for (const ctl of ['memory', 'pids', 'cpu', 'freezer']) assert.ok(!existsSync(cgDir(ctl, 'gone')), `${ctl} cgroup left`);
    if (layout?.kind === 'hybrid' && layout.unified) assert.ok(!existsSync(path.join(layout.unified, 'osvirt', 'gone')));
    assert.ok(!hostLinks().includes(vethOf('gone')), 'the veth is left');
    assert.ok(!readFileSync('/proc/self/mountinfo', 'utf8').includes(ctDir), 'a mount is left');
    assert.ok(!existsSync(ctDir), 'driver state left');
    assert.ok(!existsSync(path.join(d.stateDir, 'containers', 'gone.json')));
    // The directory's content is removed in the background, from trash/.
    const trash = path.join(d.stateDir, 'drivers', 'lxc', 'trash');
    await until(() => !existsSync(trash) || readdirSync(trash).length === 0, 'the trash to empty');
  });

  it('starts 20 containers concurrently', async () => {
    const names = Array.from({ length: 20 }, (_, i) => `many${i}`);
    for (const n of names) await c.api.containers.createContainer({ name: n, spec: busybox({ network: { mode: { $case: 'bridge', value: {} } } }) });
    try {
      const started = await Promise.all(names.map((name) => c.api.containers.startContainer({ name })));
      const pids = started.map((s) => s.container!.status!.initPid);
      assert.equal(new Set(pids).size, 20);
      for (const p of pids) assert.ok(existsSync(`/proc/${p}`));
      const addrs = await Promise.all(names.map((n) => bridgeAddr(n)));
      assert.equal(new Set(addrs).size, 20, 'every container got its own address');
    } finally {
      await Promise.all(names.map((n) => remove(n)));
    }
    assert.deepEqual(
      hostLinks().filter((l) => names.map(vethOf).includes(l)),
      [],
    );
  });

  it('keeps containers running across a daemon kill -9, then stops, execs and deletes them', async () => {
    const pid = await run('survivor', { network: { mode: { $case: 'bridge', value: {} } } });
    await c.api.containers.createContainer({ name: 'auto', spec: busybox({ autostart: true }) });
    await d.kill();
    assert.ok(existsSync(`/proc/${pid}`), 'the container died with the daemon');
    c = await d.start();
    const ct = (await c.api.containers.getContainer({ name: 'survivor' })).container!;
    assert.equal(ct.status?.state, ContainerState.CONTAINER_STATE_RUNNING);
    assert.equal(ct.status?.initPid, pid);
    assert.equal(await sh(c, 'survivor', 'hostname'), 'survivor');
    const auto = await until(
      async () => (await c.api.containers.getContainer({ name: 'auto' })).container!.status!.state === ContainerState.CONTAINER_STATE_RUNNING,
      'autostart',
    );
    assert.ok(auto);
    const stopped = (await c.api.containers.stopContainer({ name: 'survivor', signal: 0, timeout: { seconds: 5n, nanos: 0 } })).container!;
    assert.equal(stopped.status?.state, ContainerState.CONTAINER_STATE_STOPPED);
    assert.ok(!existsSync(`/proc/${pid}`));
    await remove('survivor');
    await remove('auto');
  });

  it('starts containers through the helper launcher, and directly while a killed launcher comes back', async () => {
    const sock = path.join(d.stateDir, 'drivers', 'lxc', 'launcher.sock');
    const launcherPid = () => {
      for (const p of readdirSync('/proc').filter((x) => /^\d+$/.test(x))) {
        try {
          if (readFileSync(`/proc/${p}/cmdline`, 'utf8').split('\0').includes(sock)) return Number(p);
        } catch {
          // gone
        }
      }
      return 0;
    };
    const parentOf = (pid: number) => parentPid(pid) ?? NaN;
    const first = launcherPid();
    assert.ok(first > 0, 'the driver runs a launcher');
    try {
      // Through the launcher: the monitor is a daemonized grandchild (init's), not the daemon's child.
      const pid = await run('via-launcher');
      assert.equal(parentOf(parentOf(pid)), 1);
      process.kill(first, 'SIGKILL');
      await until(() => launcherPid() !== first, 'the launcher to go');
      // Without it the daemon spawns the monitor itself, and starts a new launcher.
      await run('direct');
      assert.equal(await sh(c, 'direct', 'hostname'), 'direct');
      const second = await until(() => launcherPid(), 'a new launcher');
      assert.notEqual(second, first);
    } finally {
      await remove('via-launcher');
      await remove('direct');
    }
  });

  it('restarts a stopped container and stops one that ignores SIGTERM with SIGKILL after the timeout', async () => {
    await run('stubborn', { process: { args: ['/bin/sh', '-c', "trap '' TERM; while :; do sleep 1; done"] } });
    try {
      const t0 = Date.now();
      const st = (await c.api.containers.stopContainer({ name: 'stubborn', signal: 0, timeout: { seconds: 1n, nanos: 0 } })).container!.status!;
      assert.ok(Date.now() - t0 >= 900);
      assert.equal(st.state, ContainerState.CONTAINER_STATE_STOPPED);
      assert.equal(st.signal, 9);
      const again = (await c.api.containers.startContainer({ name: 'stubborn' })).container!.status!;
      assert.equal(again.state, ContainerState.CONTAINER_STATE_RUNNING);
    } finally {
      await remove('stubborn');
    }
  });

  it('delivers a stop signal sent before the init set up its handler, once it has one (no SIGKILL after the timeout)', async () => {
    // The init only installs its TERM handler after half a second: the stop comes first, and a
    // namespace's init drops a signal it has no handler for.
    await run('late', { process: { args: ['/bin/sh', '-c', "sleep 0.5; trap 'exit 0' TERM; while :; do sleep 1 & wait $!; done"] } });
    try {
      const st = (await c.api.containers.stopContainer({ name: 'late', signal: 0, timeout: { seconds: 10n, nanos: 0 } })).container!.status!;
      assert.equal(st.state, ContainerState.CONTAINER_STATE_STOPPED);
      assert.deepEqual({ exitCode: st.exitCode, signal: st.signal }, { exitCode: 0, signal: 0 }, 'the init exited through its handler');
    } finally {
      await remove('late');
    }
  });
});
