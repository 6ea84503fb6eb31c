// The vserver driver, proven from inside its guests (busybox's httpd, nc,
// ps, /proc) and from the host (ip, ss, /proc, the cgroup and bpftool),
// through the real daemon and API, and the CLI for import/export/vserver-stat.
import { strict as assert } from 'node:assert';
import { execFile, execFileSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readFileSync, readdirSync, readlinkSync, lstatSync, writeFileSync } from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { credentials, status as Code, type ServiceError } from '@grpc/grpc-js';
import { ContainerSpec, ContainerState, MountType, type DeepPartial } from '../src/gen/osvirt/v1/container';
import {
  VServerOptions_ContextCapability as Ccap,
  VServerOptions_ContextFlag as Cflag,
  VServerInit_Style as Style,
  type VServerOptions,
} from '../src/gen/osvirt/v1/vserver';
import { VServerServiceClient, type ListVServerStatsResponse } from '../src/gen/osvirt/v1/vserver_service';
import { decodeStatusDetails } from '../src/core/grpc-status';
import { repoPath } from '../src/paths';
import { detectLayout } from '../drivers/lxc/cgroups';
import { STAT_HEADER } from '../src/cli/vserver-stat';
import { isRoot, TestDaemon, until, type Client } from './support/daemon';
import { execIn, sh } from './support/exec';

const execFileP = promisify(execFile);
const layout = isRoot() ? detectLayout() : undefined;

// Addresses and ports of this run: other test runs may share the host's stack.
const NET = `10.${150 + (process.pid % 50)}.${(process.pid >> 6) % 250}`;
const ADDR = { a: `${NET}.1`, b: `${NET}.2`, c: `${NET}.3`, cp: `${NET}.4` };
const PORT = 20000 + (process.pid % 20000);

function bits(capHex: string): Set<number> {
  const v = BigInt(`0x${capHex}`);
  const out = new Set<number>();
  for (let i = 0; i < 64; i++) if ((v >> BigInt(i)) & 1n) out.add(i);
  return out;
}
const CAP = { net_bind_service: 10, net_admin: 12, net_raw: 13, sys_admin: 21, sys_resource: 24, mknod: 27, syslog: 34 } as const;

/** Optional native helper features some ccapabilities need (the helper's usage text lists its options). */
const HELPER = (() => {
  let usage = '';
  try {
    usage = execFileSync(repoPath('native', 'build', 'osvirt-helper'), ['--help'], { encoding: 'utf8' });
  } catch (e) {
    usage = String((e as { stdout?: string }).stdout ?? '');
  }
  return { rootOwnedNs: usage.includes('--root-owned-ns'), seccompDeny: usage.includes('--seccomp-deny'), noSysfs: usage.includes('--no-sysfs') };
})();

function hostCapBnd(): Set<number> {
  return bits(/^CapBnd:\s*([0-9a-f]+)/m.exec(readFileSync('/proc/self/status', 'utf8'))![1]!);
}

function loAddresses(): string[] {
  return execFileSync('ip', ['-o', '-4', 'addr', 'show', 'dev', 'lo'], { encoding: 'utf8' })
    .split('\n')
    .map((l) => /inet (\S+)\//.exec(l)?.[1])
    .filter((x): x is string => !!x);
}

function listening(port: number): string[] {
  return execFileSync('ss', ['-ltnH', `sport = :${port}`], { encoding: 'utf8' })
    .split('\n')
    .map((l) => l.trim().split(/\s+/)[3])
    .filter((x): x is string => !!x);
}

function httpGet(url: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { timeout: 3000 }, (res) => {
      let body = '';
      res.on('data', (b: Buffer) => (body += b.toString()));
      res.on('end', () => resolve(body));
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${url} timed out`)));
    req.on('error', reject);
  });
}

/** The guest's cgroup directories, in every hierarchy. */
function cgroupDirs(name: string): string[] {
  if (!layout) return [];
  if (layout.kind === 'v2') return [path.join(layout.root, 'osvirt', name)];
  return [...new Set(Object.values(layout.v1)), ...(layout.unified ? [layout.unified] : [])].map((m) => path.join(m, 'osvirt', name));
}

function unifiedDir(name: string): string {
  return layout!.kind === 'v2' ? path.join(layout!.root, 'osvirt', name) : path.join(layout!.unified!, 'osvirt', name);
}

async function rejects(p: Promise<unknown>, code: Code, reason?: string, field?: string): Promise<ServiceError> {
  try {
    await p;
  } catch (e) {
    const se = e as ServiceError;
    assert.equal(se.code, code, `${Code[se.code]}: ${se.details}`);
    const d = decodeStatusDetails(se.metadata);
    if (reason) assert.equal(d.errorInfo?.reason, reason, se.details);
    if (field) assert.equal(d.errorInfo?.metadata['field'], field, se.details);
    return se;
  }
  assert.fail('expected the call to fail');
}

describe('vserver driver (Linux-VServer guests)', function () {
  this.timeout(120000);
  let d: TestDaemon;
  let c: Client;
  let vs: ReturnType<typeof promisifyVs>;
  let vsClient: VServerServiceClient | undefined;
  const made = new Set<string>();

  function promisifyVs(client: VServerServiceClient) {
    const call =
      <Req, Res>(fn: (req: Req, cb: (e: ServiceError | null, r: Res) => void) => unknown) =>
      (req: Req) =>
        new Promise<Res>((resolve, reject) => fn.call(client, req, (e, r) => (e ? reject(e) : resolve(r))));
    return {
      listVServerStats: call(client.listVServerStats as never) as (r: { pageSize: number; pageToken: string }) => Promise<ListVServerStatsResponse>,
    };
  }

  before(async function () {
    if (!isRoot()) return this.skip();
    d = new TestDaemon();
    c = await d.start();
    const drivers = (await c.api.system.listDrivers({})).drivers;
    const v = drivers.find((x) => x.name === 'vserver');
    if (v?.health !== 1) {
      const why = v?.messages.join('; ') ?? 'not registered';
      for (const t of this.test?.parent?.tests ?? []) t.title += ` (skipped: vserver driver not ready: ${why})`;
      return this.skip();
    }
    vsClient = new VServerServiceClient(`unix://${d.socket}`, credentials.createInsecure());
    vs = promisifyVs(vsClient);
  });
  after(async () => {
    vsClient?.close();
    await d?.destroy();
  });

  function spec(o: DeepPartial<VServerOptions>, extra: DeepPartial<ContainerSpec> = {}): ContainerSpec {
    return ContainerSpec.fromPartial({
      driver: 'vserver',
      rootfs: { source: { $case: 'template', value: 'busybox' } },
      driverOptions: { $case: 'vserver', value: o },
      ...extra,
    });
  }

  async function create(name: string, s: ContainerSpec): Promise<void> {
    await c.api.containers.createContainer({ name, spec: s });
    made.add(name);
  }

  async function start(name: string, s: ContainerSpec): Promise<number> {
    await create(name, s);
    const ct = (await c.api.containers.startContainer({ name })).container!;
    return ct.status!.initPid;
  }

  async function stop(name: string) {
    return (await c.api.containers.stopContainer({ name, signal: 0, timeout: undefined })).container!;
  }

  async function remove(name: string): Promise<void> {
    await c.api.containers.deleteContainer({ name, force: true, allowMissing: true });
  }

  /** Bind-mounted rc directories and a log directory for init-style guests. */
  function rcDirs(tag: string, scripts: Record<string, string>): { mounts: DeepPartial<ContainerSpec>['mounts']; log: string } {
    const root = path.join(d.dir, tag);
    const dirs = { rc3: path.join(root, 'rc3.d'), rc6: path.join(root, 'rc6.d'), log: path.join(root, 'log') };
    for (const p of Object.values(dirs)) mkdirSync(p, { recursive: true });
    for (const [rel, body] of Object.entries(scripts)) {
      const f = path.join(root, rel);
      writeFileSync(f, `#!/bin/sh\n${body}\n`);
      chmodSync(f, 0o755);
    }
    return {
      mounts: [
        { type: MountType.MOUNT_TYPE_BIND, source: dirs.rc3, destination: '/etc/rc3.d', readonly: true },
        { type: MountType.MOUNT_TYPE_BIND, source: dirs.rc6, destination: '/etc/rc6.d', readonly: true },
        { type: MountType.MOUNT_TYPE_BIND, source: dirs.log, destination: '/log' },
      ],
      log: path.join(dirs.log, 'rc.log'),
    };
  }

  const readLog = (f: string) => (existsSync(f) ? readFileSync(f, 'utf8').trim().split('\n').filter(Boolean) : []);

  it('refuses what Linux cannot do, naming the field', async () => {
    await rejects(create('vs-bad', spec({ context: 1 })), Code.INVALID_ARGUMENT, 'INVALID_FIELD', 'spec.vserver.context');
    await rejects(create('vs-bad', spec({ context: 49152 })), Code.INVALID_ARGUMENT, 'INVALID_FIELD', 'spec.vserver.context');
    await rejects(
      create('vs-bad', spec({ context: 300, ccapabilities: [Ccap.CONTEXT_CAPABILITY_BINARY_MOUNT] })),
      Code.FAILED_PRECONDITION,
      'VSERVER_FEATURE_UNSUPPORTED',
      'spec.vserver.ccapabilities[0]',
    );
    if (!HELPER.rootOwnedNs)
      await rejects(
        create('vs-bad', spec({ context: 300, ccapabilities: [Ccap.CONTEXT_CAPABILITY_SET_UTSNAME] })),
        Code.FAILED_PRECONDITION,
        'VSERVER_FEATURE_UNSUPPORTED',
      );
    if (!HELPER.seccompDeny)
      await rejects(
        create('vs-bad', spec({ context: 300, ccapabilities: [Ccap.CONTEXT_CAPABILITY_RAW_ICMP] })),
        Code.FAILED_PRECONDITION,
        'VSERVER_FEATURE_UNSUPPORTED',
      );
    await rejects(
      create('vs-bad', spec({ context: 300, bcapabilities: { add: ['CAP_SYS_ADMIN'] } })),
      Code.INVALID_ARGUMENT,
      'INVALID_FIELD',
      'spec.vserver.bcapabilities.add[0]',
    );
    await rejects(
      create('vs-bad', spec({ context: 300, flags: [Cflag.CONTEXT_FLAG_VIRT_UPTIME] })),
      Code.FAILED_PRECONDITION,
      'VSERVER_FEATURE_UNSUPPORTED',
      'spec.vserver.flags[0]',
    );
    await rejects(
      create('vs-bad', spec({ context: 300, rlimits: { nproc: { hard: 10, min: 2 } } })),
      Code.FAILED_PRECONDITION,
      'VSERVER_FEATURE_UNSUPPORTED',
      'spec.vserver.rlimits.nproc.min',
    );
    await rejects(
      create('vs-bad', spec({ context: 300 }, { network: { mode: { $case: 'bridge', value: {} } } })),
      Code.INVALID_ARGUMENT,
      'INVALID_FIELD',
      'spec.network.bridge',
    );
    await rejects(
      create('vs-bad', spec({ context: 300, network: { interfaces: [{ name: '0', ip: '10.0.0.1/24', dev: 'lo' }] } })),
      Code.INVALID_ARGUMENT,
      'INVALID_FIELD',
      'spec.vserver.network.interfaces[0].ip',
    );
    // rss.min is memory.min: cgroup v2 only.
    const min = create('vs-min', spec({ context: 301, rlimits: { rss: { hard: 4096, min: 1024 } } }));
    if (layout?.kind === 'v2') await min;
    else await rejects(min, Code.FAILED_PRECONDITION, 'VSERVER_FEATURE_UNSUPPORTED', 'spec.vserver.rlimits.rss.min');
    await remove('vs-min');
  });

  it('keeps context ids unique across vserver guests', async () => {
    await create('vs-ctx-a', spec({ context: 4242 }));
    const e = await rejects(create('vs-ctx-b', spec({ context: 4242 })), Code.ALREADY_EXISTS, 'CONTEXT_IN_USE', 'spec.vserver.context');
    assert.match(e.details, /context 4242 is used by vserver guest "vs-ctx-a"/);
    // Two creates racing for one id: exactly one wins.
    const race = await Promise.allSettled([create('vs-ctx-c', spec({ context: 4243 })), create('vs-ctx-d', spec({ context: 4243 }))]);
    assert.equal(race.filter((r) => r.status === 'fulfilled').length, 1);
    await remove('vs-ctx-a');
    await create('vs-ctx-b', spec({ context: 4242 }));
    for (const n of ['vs-ctx-b', 'vs-ctx-c', 'vs-ctx-d']) await remove(n);
  });

  it("runs the guest in its own pid and mount namespace behind pivot_root, on the host's network stack", async () => {
    writeFileSync(path.join(d.dir, 'host-only-marker'), 'host');
    const pid = await start('vs-ns', spec({ context: 310 }));
    const ns = (p: number | 'self', n: string) => readlinkSync(`/proc/${p}/ns/${n}`);
    for (const n of ['pid', 'mnt', 'uts', 'ipc']) assert.notEqual(ns(pid, n), ns('self', n), `${n} namespace`);
    assert.equal(ns(pid, 'net'), ns('self', 'net'), "the VServer model: the host's network stack, no network namespace");
    const out = await sh(
      c,
      'vs-ns',
      `cat /proc/1/cmdline | tr '\\0' ' '; echo; ls /proc | grep -c '^[0-9]'; ls ${d.dir} 2>&1; readlink /proc/1/root; cd /../../..; pwd; cat /etc/inittab | head -1; ls /sys | wc -l`,
    );
    const lines = out.split('\n');
    assert.match(lines[0]!, /^\/bin\/sh -c .*init 3 $/, 'pid 1 is the sysv stub init');
    assert.ok(Number(lines[1]) <= 8, `only the guest's processes are visible (${lines[1]})`);
    assert.match(lines[2]!, /No such file or directory/, "the host's files are not reachable");
    assert.equal(lines[3], '/');
    assert.equal(lines[4], '/', ".. above / stays in the guest's root");
    assert.match(lines[5]!, /vserver init style "plain"/, "the guest's own root (the vserver busybox template)");
    if (HELPER.noSysfs) assert.equal(lines[6], '0', "no /sys, as under util-vserver (the host's would show its devices and cgroups)");
    await stop('vs-ns');
  });

  it("gives the guest a network context: its addresses only, single_ip and lback_remap, on the host's own stack", async () => {
    const www = 'mkdir -p /www && echo hello-$(uname -n) > /www/index.html';
    await start(
      'vs-a',
      spec(
        {
          context: 320,
          uts: { nodename: 'guest-a', domainname: 'vserver.test' },
          network: { interfaces: [{ name: '0', ip: ADDR.a, dev: 'lo', prefix: 32 }], singleIp: true, lbackRemap: true },
          bcapabilities: { drop: ['net_bind_service'], add: ['mknod'] },
          // Privileged: mknod (which the next tests check) is refused to any user namespace.
        },
        { security: { privileged: true } },
      ),
    );
    // Privileged: reading the kernel log (syslog) needs CAP_SYSLOG in the host's user namespace.
    await start(
      'vs-b',
      spec(
        {
          context: 321,
          network: { interfaces: [{ name: '0', ip: ADDR.b, dev: 'lo' }] },
          ccapabilities: [Ccap.CONTEXT_CAPABILITY_SYSLOG, Ccap.CONTEXT_CAPABILITY_SET_RLIMIT],
        },
        { security: { privileged: true } },
      ),
    );
    assert.ok(loAddresses().includes(ADDR.a) && loAddresses().includes(ADDR.b), "both guests' addresses are on the host's lo while they run");

    // A foreign address (B's, which the host has) is refused; A's own works and the host reaches it.
    let r = await execIn(c, 'vs-a', ['/bin/sh', '-c', `${www}; httpd -f -p ${ADDR.b}:${PORT} -h /www`]);
    assert.notEqual(r.exitCode, 0);
    assert.match(r.stderr, /bind: Cannot assign requested address/, 'EADDRNOTAVAIL');
    await sh(c, 'vs-a', `${www}; httpd -p ${ADDR.a}:${PORT} -h /www >/dev/null 2>&1`);
    assert.equal((await httpGet(`http://${ADDR.a}:${PORT}/`)).trim(), 'hello-guest-a');
    // single_ip: a wildcard bind lands on the guest's address.
    await sh(c, 'vs-a', `nc -l -p ${PORT + 1} </dev/null >/dev/null 2>&1 &`);
    await until(() => listening(PORT + 1).length > 0, 'the wildcard listener');
    assert.deepEqual(listening(PORT + 1), [`${ADDR.a}:${PORT + 1}`]);
    // lback_remap: 127.0.0.1 is the guest's address, for binds and connects.
    await sh(c, 'vs-a', `httpd -p 127.0.0.1:${PORT + 2} -h /www >/dev/null 2>&1`);
    assert.deepEqual(listening(PORT + 2), [`${ADDR.a}:${PORT + 2}`]);
    assert.equal(await sh(c, 'vs-a', `wget -q -O- http://127.0.0.1:${PORT + 2}/`), 'hello-guest-a');

    // B has neither flag: its wildcard bind stays a (filtered) wildcard, and 127.0.0.1 is not its.
    await sh(c, 'vs-b', `nc -l -p ${PORT + 3} </dev/null >/dev/null 2>&1 &`);
    await until(() => listening(PORT + 3).length > 0, "B's wildcard listener");
    assert.deepEqual(listening(PORT + 3), [`0.0.0.0:${PORT + 3}`]);
    r = await execIn(c, 'vs-b', ['/bin/sh', '-c', `mkdir -p /www; httpd -f -p 127.0.0.1:${PORT + 4} -h /www`]);
    assert.match(r.stderr, /bind: Cannot assign requested address/);
  });

  it("sets the bounding set from bcapabilities, and a dropped one's operation fails", async () => {
    const capA = bits(/CapBnd:\s*(\S+)/.exec(await sh(c, 'vs-a', 'grep CapBnd /proc/1/status'))![1]!);
    assert.ok(!capA.has(CAP.net_bind_service), 'dropped: net_bind_service');
    assert.ok(capA.has(CAP.mknod), 'added: mknod');
    for (const k of ['net_admin', 'net_raw', 'sys_admin'] as const) assert.ok(!capA.has(CAP[k]), `${k} is not in util-vserver's default set`);
    const r = await execIn(c, 'vs-a', ['/bin/sh', '-c', `httpd -f -p ${ADDR.a}:80 -h /www`]);
    assert.match(r.stderr, /bind: Permission denied/, 'port 80 needs the dropped capability');
    assert.equal(await sh(c, 'vs-a', 'mknod /tmp/null2 c 1 3 && echo ok'), 'ok');
    const rb = await execIn(c, 'vs-b', ['/bin/sh', '-c', 'mknod /tmp/null2 c 1 3']);
    assert.match(rb.stderr, /Operation not permitted/, 'mknod is not in the default set');
  });

  it('maps ccapabilities to Linux capabilities (syslog, set_rlimit)', async function () {
    const capB = bits(/CapBnd:\s*(\S+)/.exec(await sh(c, 'vs-b', 'grep CapBnd /proc/1/status'))![1]!);
    assert.ok(capB.has(CAP.syslog), 'syslog -> CAP_SYSLOG');
    // set_rlimit is CAP_SYS_RESOURCE, which no container gets if the host itself lacks it.
    if (hostCapBnd().has(CAP.sys_resource)) assert.ok(capB.has(CAP.sys_resource), 'set_rlimit -> CAP_SYS_RESOURCE');
    else this.test!.title += " (set_rlimit part skipped: this host's own bounding set lacks CAP_SYS_RESOURCE)";
    if (readFileSync('/proc/sys/kernel/dmesg_restrict', 'utf8').trim() === '1') {
      assert.equal(
        (await execIn(c, 'vs-b', ['/bin/sh', '-c', 'dmesg >/dev/null && echo read'])).stdout.trim(),
        'read',
        'with syslog the guest reads the kernel log',
      );
      assert.match((await execIn(c, 'vs-a', ['/bin/sh', '-c', 'dmesg >/dev/null'])).stderr, /Operation not permitted/, 'without it, not (dmesg_restrict=1)');
    }
  });

  it('maps set_utsname and secure_mount to namespaces owned by a root-owned user namespace, raw_icmp to CAP_NET_RAW without packet sockets', async function () {
    if (!HELPER.rootOwnedNs || !HELPER.seccompDeny) {
      this.test!.title += ' (skipped: osvirt-helper lacks --root-owned-ns or --seccomp-deny)';
      return this.skip();
    }
    await start(
      'vs-ccap',
      spec(
        {
          context: 325,
          network: { interfaces: [{ name: '0', ip: ADDR.c, dev: 'lo' }] },
          ccapabilities: [Ccap.CONTEXT_CAPABILITY_SET_UTSNAME, Ccap.CONTEXT_CAPABILITY_SECURE_MOUNT, Ccap.CONTEXT_CAPABILITY_RAW_ICMP],
          // Privileged: raw ICMP on the host's own stack needs CAP_NET_RAW in the host's user namespace.
        },
        { security: { privileged: true } },
      ),
    );
    const hostName = execFileSync('hostname', { encoding: 'utf8' }).trim();
    assert.equal(await sh(c, 'vs-ccap', 'hostname renamed && uname -n'), 'renamed', 'set_utsname: the guest sets its own nodename');
    assert.equal(execFileSync('hostname', { encoding: 'utf8' }).trim(), hostName, "the host's is untouched");
    const capC = bits(/CapBnd:\s*(\S+)/.exec(await sh(c, 'vs-ccap', 'grep CapBnd /proc/1/status'))![1]!);
    assert.ok(!capC.has(CAP.sys_admin), 'without CAP_SYS_ADMIN');
    assert.equal(
      await sh(c, 'vs-ccap', 'mkdir -p /mnt/etc && mount --bind /etc /mnt/etc && ls /mnt/etc/inittab'),
      '/mnt/etc/inittab',
      'secure_mount: bind mounts in its own mount namespace',
    );
    assert.match((await execIn(c, 'vs-ccap', ['/bin/sh', '-c', 'umount /proc'])).stderr, /Invalid argument/, 'the mounts it was given are locked');
    assert.match(await sh(c, 'vs-ccap', `ping -c1 -W2 ${ADDR.c}`), /1 packets received/, 'raw_icmp: ping works');
    assert.match(
      (await execIn(c, 'vs-ccap', ['/bin/sh', '-c', `arping -c1 -w1 -I lo ${ADDR.c}`])).stderr,
      /socket: Address family not supported/,
      'packet sockets stay refused',
    );
    // The same in a guest without them.
    assert.match(
      (await execIn(c, 'vs-a', ['/bin/sh', '-c', 'mkdir -p /mnt/etc && mount --bind /etc /mnt/etc'])).stderr,
      /permission denied|Operation not permitted/,
    );
    assert.match((await execIn(c, 'vs-a', ['/bin/sh', '-c', `ping -c1 -W1 ${ADDR.a}`])).stderr, /permission denied|Operation not permitted/i);
    await remove('vs-ccap');
  });

  it('sets nodename and domainname, which the guest cannot change without set_utsname', async () => {
    assert.equal(await sh(c, 'vs-a', 'uname -n; cat /proc/sys/kernel/domainname'), 'guest-a\nvserver.test');
    const r = await execIn(c, 'vs-a', ['/bin/sh', '-c', 'hostname other']);
    assert.notEqual(r.exitCode, 0);
    assert.equal(await sh(c, 'vs-a', 'uname -n'), 'guest-a');
    assert.notEqual(execFileSync('hostname', { encoding: 'utf8' }).trim(), 'other');
  });

  it("removes the guest's addresses from the host and its network context when it stops", async () => {
    const dirs = [unifiedDir('vs-a'), unifiedDir('vs-b')];
    for (const dir of dirs) assert.match(execFileSync('bpftool', ['cgroup', 'show', dir], { encoding: 'utf8' }), /osvipf_bind4/);
    await stop('vs-a');
    await stop('vs-b');
    assert.ok(!loAddresses().includes(ADDR.a) && !loAddresses().includes(ADDR.b), 'addresses gone from lo');
    for (const dir of dirs) assert.ok(!existsSync(dir), `${dir} removed (and its BPF attachments with it)`);
    assert.deepEqual(listening(PORT), [], "the guest's listeners went with it");
  });

  it('turns rlimits into the pids cgroup and per-process limits: forks stop at nproc', async () => {
    await start(
      'vs-lim',
      spec({ context: 330, rlimits: { nproc: { hard: 8 }, nofile: { soft: 100, hard: 200 }, as: { hard: 262144 }, rss: { hard: 16384 } } }),
    );
    const limits = await sh(c, 'vs-lim', 'cat /proc/1/limits');
    assert.match(limits, /Max open files\s+100\s+200\s/);
    assert.match(limits, new RegExp(`Max address space\\s+${262144 * 4096}\\s+${262144 * 4096}\\s`));
    assert.match(await sh(c, 'vs-lim', 'cat /proc/self/limits'), /Max open files\s+100\s+200\s/, 'processes entered with exec get them too');
    const r = await execIn(c, 'vs-lim', ['/bin/sh', '-c', 'i=0; while [ $i -lt 20 ]; do sleep 30 </dev/null >/dev/null 2>&1 & i=$((i+1)); echo $i; done']);
    const forked = Number(r.stdout.trim().split('\n').pop() ?? 0);
    assert.ok(forked > 0 && forked < 8, `forked ${forked} sleeps before the limit`);
    assert.match(r.stderr, /can't fork: Resource temporarily unavailable/);
    const mem =
      layout!.kind === 'v2' ? path.join(layout!.root, 'osvirt/vs-lim/memory.max') : path.join(layout!.v1['memory']!, 'osvirt/vs-lim/memory.limit_in_bytes');
    assert.equal(readFileSync(mem, 'utf8').trim(), String(16384 * 4096), 'rss.hard pages -> the memory limit');
    await remove('vs-lim');
  });

  it("init style plain: the guest's own /sbin/init is pid 1 and runs rc 3 at boot, rc 6 at shutdown", async () => {
    const { mounts, log } = rcDirs('plain', {
      'rc3.d/S10first': 'echo "rc3 S10first $1" >> /log/rc.log',
      'rc3.d/S20second': 'echo "rc3 S20second $1" >> /log/rc.log',
      'rc6.d/K10first': 'echo "rc6 K10first $1" >> /log/rc.log',
    });
    await start('vs-plain', spec({ context: 340, init: { style: Style.STYLE_PLAIN } }, { mounts }));
    assert.equal(await sh(c, 'vs-plain', "tr -d '\\0' < /proc/1/cmdline"), 'init', 'busybox init as pid 1');
    await until(() => readLog(log).length >= 2, 'rc 3');
    assert.deepEqual(readLog(log), ['rc3 S10first start', 'rc3 S20second start']);
    const ct = await stop('vs-plain');
    assert.equal(ct.status!.state, ContainerState.CONTAINER_STATE_STOPPED);
    assert.deepEqual(readLog(log), ['rc3 S10first start', 'rc3 S20second start', 'rc6 K10first stop'], "init ran rc 6 on the kill sequence's SIGTERM");
    await remove('vs-plain');
  });

  it('init style sysv: a stub init runs rc 3 at start; stop runs rc 6, then the kill sequence', async () => {
    const { mounts, log } = rcDirs('sysv', {
      'rc3.d/S10first': 'echo "rc3 S10first $1 RUNLEVEL=$RUNLEVEL" >> /log/rc.log',
      // A service that logs the signal it gets and exits on SIGTERM.
      'rc3.d/S20service':
        '(trap \'echo "service TERM" >> /log/rc.log; exit 0\' TERM; while :; do sleep 1; done) </dev/null >/dev/null 2>&1 &\necho "rc3 S20service $1" >> /log/rc.log',
      'rc6.d/K10first': 'echo "rc6 K10first $1 RUNLEVEL=$RUNLEVEL" >> /log/rc.log',
    });
    await start('vs-sysv', spec({ context: 350, init: { style: Style.STYLE_SYSV } }, { mounts }));
    assert.match(await sh(c, 'vs-sysv', 'cat /proc/1/cmdline | tr "\\0" " "'), /^\/bin\/sh -c eval "\$OSVIRT_VSERVER_INIT" init 3$/);
    await until(() => readLog(log).length >= 2, 'rc 3');
    assert.deepEqual(readLog(log), ['rc3 S10first start RUNLEVEL=3', 'rc3 S20service start']);
    const ct = await stop('vs-sysv');
    assert.equal(ct.status!.exitCode, 0, "the stub leaves when the guest's last other process is gone");
    assert.deepEqual(
      readLog(log),
      ['rc3 S10first start RUNLEVEL=3', 'rc3 S20service start', 'rc6 K10first stop RUNLEVEL=6', 'service TERM'],
      'rc 6 runs before the kill sequence signals anyone',
    );
    await remove('vs-sysv');
  });

  it('follows killseq: each signal to every process, the waits between them observed inside the guest', async () => {
    // The service ignores TERM and USR1 and logs them with /proc/uptime (centiseconds).
    const { mounts, log } = rcDirs('killseq', {
      'rc3.d/S10stubborn': [
        '(',
        '  trap \'read up x < /proc/uptime; echo "TERM $up" >> /log/rc.log\' TERM',
        '  trap \'read up x < /proc/uptime; echo "USR1 $up" >> /log/rc.log\' USR1',
        '  echo ready >> /log/rc.log',
        // wait (a builtin) returns at once on a trapped signal: the log shows when each arrived.
        '  while :; do sleep 1 & wait $!; done',
        ') </dev/null >/dev/null 2>&1 &',
      ].join('\n'),
    });
    await start(
      'vs-kill',
      spec({ context: 360, init: { killseq: [{ signal: 15, waitSeconds: 1 }, { signal: 10, waitSeconds: 1 }, { signal: 9 }] } }, { mounts }),
    );
    await until(() => readLog(log).includes('ready'), 'the service');
    const ct = await stop('vs-kill');
    const lines = readLog(log).filter((l) => l !== 'ready');
    assert.deepEqual(
      lines.map((l) => l.split(' ')[0]),
      ['TERM', 'USR1'],
      `SIGTERM, then SIGUSR1, then SIGKILL ended everything (log: ${JSON.stringify(readLog(log))}, stopped: ${JSON.stringify(ct.status)})`,
    );
    const [t0, t1] = lines.map((l) => Number(l.split(' ')[1]));
    assert.ok(t1! - t0! >= 0.9, `the guest saw ${(t1! - t0!).toFixed(2)} s between the signals (killseq waits 1 s)`);
    assert.equal(ct.status!.signal, 9, 'the last step, SIGKILL, ended the init');
    await remove('vs-kill');
  });

  it('replaces killseq by "signal timeout 9" when the stop names a timeout, even one equal to the container\'s stop_timeout', async () => {
    const { mounts, log } = rcDirs('killseq-timeout', {
      'rc3.d/S10stubborn': [
        '(',
        "  trap 'echo TERM >> /log/rc.log' TERM",
        "  trap 'echo USR1 >> /log/rc.log' USR1",
        '  echo ready >> /log/rc.log',
        '  while :; do sleep 1 & wait $!; done',
        ') </dev/null >/dev/null 2>&1 &',
      ].join('\n'),
    });
    await start(
      'vs-kill-t',
      spec(
        { context: 362, init: { killseq: [{ signal: 15, waitSeconds: 1 }, { signal: 10, waitSeconds: 1 }, { signal: 9 }] } },
        { mounts, stopTimeout: { seconds: 2n, nanos: 0 } },
      ),
    );
    await until(() => readLog(log).includes('ready'), 'the service');
    const ct = (await c.api.containers.stopContainer({ name: 'vs-kill-t', signal: 0, timeout: { seconds: 2n, nanos: 0 } })).container!;
    assert.deepEqual(
      readLog(log).filter((l) => l !== 'ready'),
      ['TERM'],
      'SIGTERM, then SIGKILL after the 2 s asked for: no SIGUSR1 from the killseq',
    );
    assert.equal(ct.status!.signal, 9);
    await remove('vs-kill-t');
  });

  it('stops by the default killseq 15 5 9: a process ignoring SIGTERM lives about 5 s more, then SIGKILL', async () => {
    const { mounts, log } = rcDirs('default-killseq', {
      'rc3.d/S10stubborn':
        '(trap \'read up x < /proc/uptime; echo "TERM $up" >> /log/rc.log\' TERM; echo ready >> /log/rc.log; while :; do read up x < /proc/uptime; echo "alive $up" > /log/alive; sleep 0.2; done) </dev/null >/dev/null 2>&1 &',
    });
    await start('vs-kill5', spec({ context: 361 }, { mounts }));
    await until(() => readLog(log).includes('ready'), 'the service');
    await stop('vs-kill5');
    const term = Number(
      readLog(log)
        .find((l) => l.startsWith('TERM'))!
        .split(' ')[1],
    );
    const lastAlive = Number(readFileSync(path.join(path.dirname(log), 'alive'), 'utf8').split(' ')[1]);
    const lived = lastAlive - term;
    assert.ok(lived >= 4.5 && lived < 8, `it lived ${lived.toFixed(2)} s after SIGTERM (default wait 5 s)`);
    await remove('vs-kill5');
  });

  it('refuses exec into a guest with the context flag private, and still stops it', async () => {
    await start('vs-private', spec({ context: 370, flags: [Cflag.CONTEXT_FLAG_PRIVATE] }));
    const r = execIn(c, 'vs-private', ['true']);
    await rejects(r, Code.FAILED_PRECONDITION, 'GUEST_PRIVATE');
    assert.equal((await stop('vs-private')).status!.state, ContainerState.CONTAINER_STATE_STOPPED);
    await remove('vs-private');
  });

  it('checkpoints a guest with CRIU and restores it with its address and network context re-created', async function () {
    const drv = (await c.api.system.listDrivers({})).drivers.find((x) => x.name === 'vserver')!;
    if (!drv.capabilities.includes('checkpoint')) {
      this.test!.title += ` (skipped: ${drv.messages.find((m) => m.startsWith('checkpoint:')) ?? 'no checkpoint capability'})`;
      return this.skip();
    }
    await start('vs-cp', spec({ context: 380, network: { interfaces: [{ name: '0', ip: ADDR.cp, dev: 'lo' }], lbackRemap: true } }));
    await sh(c, 'vs-cp', `mkdir -p /www && echo before > /www/index.html && httpd -p ${ADDR.cp}:${PORT + 5} -h /www </dev/null >/dev/null 2>&1`);
    assert.equal((await httpGet(`http://${ADDR.cp}:${PORT + 5}/`)).trim(), 'before');
    await c.api.containers.checkpointContainer({ name: 'vs-cp', checkpoint: 'cp1', options: undefined });
    assert.ok(!loAddresses().includes(ADDR.cp), 'the address went with the guest');
    const ct = (await c.api.containers.restoreContainer({ name: 'vs-cp', checkpoint: 'cp1', newName: '', tcpEstablished: false, timeout: undefined }))
      .container!;
    assert.equal(ct.status!.state, ContainerState.CONTAINER_STATE_RUNNING);
    assert.ok(loAddresses().includes(ADDR.cp), 'restore put the address back first');
    assert.equal((await httpGet(`http://${ADDR.cp}:${PORT + 5}/`)).trim(), 'before', 'the restored listener answers on it');
    assert.match(
      execFileSync('bpftool', ['cgroup', 'show', unifiedDir('vs-cp')], { encoding: 'utf8' }),
      /osvipf_bind4/,
      'the network context is attached again',
    );
    const r = await execIn(c, 'vs-cp', ['/bin/sh', '-c', `httpd -f -p ${ADDR.a}:${PORT + 6} -h /www`]);
    assert.match(r.stderr, /Cannot assign requested address/, 'and enforced');
    // A clone would need the same context id: refused.
    await rejects(
      c.api.containers.restoreContainer({ name: 'vs-cp', checkpoint: 'cp1', newName: 'vs-cp-clone', tcpEstablished: false, timeout: undefined }),
      Code.ALREADY_EXISTS,
      'CONTEXT_IN_USE',
    );
    await stop('vs-cp');
    assert.ok(!loAddresses().includes(ADDR.cp));
    await remove('vs-cp');
  });

  async function cli(...args: string[]): Promise<{ stdout: string; stderr: string; code: number }> {
    try {
      return { ...(await execFileP(process.execPath, [repoPath('bin', 'osvirt'), '--connect', `unix://${d.socket}`, ...args])), code: 0 };
    } catch (e) {
      const err = e as { stdout: string; stderr: string; code: number };
      return { stdout: err.stdout, stderr: err.stderr, code: err.code };
    }
  }

  it('imports examples/vservers/guest1, runs it, shows it in vserver-stat and exports the same directory', async () => {
    const src = repoPath('examples', 'vservers', 'guest1');
    let r = await cli('vserver', 'import', src, '--start');
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^guest1 created and started \(context 43\)$/m);
    made.add('guest1');
    assert.ok(loAddresses().includes('192.0.2.43'));
    assert.equal(
      await sh(c, 'guest1', 'uname -n; grep "Max open files" /proc/1/limits'),
      'guest1\nMax open files            1024                 4096                 files',
    );

    r = await cli('vserver-stat');
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.trimEnd().split('\n');
    assert.equal(lines[0], STAT_HEADER);
    const row = lines.find((l) => l.startsWith('43 '));
    assert.ok(row, r.stdout);
    assert.match(row, /^43\s+[1-9]\d*\s+[\d.]+[ KMG]\s+[\d.]+[ KMG]\s+\d+m\d\ds\d\d\s+\d+m\d\ds\d\d\s+\d+m\d\ds\d\d guest1$/);
    assert.equal(row.indexOf('guest1'), 55, "NAME in vserver-stat's column");
    const api = (await vs.listVServerStats({ pageSize: 0, pageToken: '' })).stats.find((s) => s.context === 43)!;
    const procs = Number(await sh(c, 'guest1', 'ls -d /proc/[0-9]* | wc -l'));
    assert.ok(
      api.processCount >= 1 && api.processCount <= procs,
      `PROC QTY ${api.processCount} counts the guest's processes (${procs} seen inside, with the exec)`,
    );
    assert.ok(api.virtualMemoryBytes > api.residentMemoryBytes && api.residentMemoryBytes > 0);

    const out = path.join(d.dir, 'guest1-export');
    r = await cli('vserver', 'export', 'guest1', out);
    assert.equal(r.code, 0, r.stderr);
    const tree = (dir: string) => {
      const files: Record<string, string> = {};
      const walk = (rel: string) => {
        for (const e of readdirSync(path.join(dir, rel))) {
          const p = rel ? `${rel}/${e}` : e;
          const st = lstatSync(path.join(dir, p));
          if (st.isDirectory()) walk(p);
          else files[p] = st.isSymbolicLink() ? `-> ${readlinkSync(path.join(dir, p))}` : readFileSync(path.join(dir, p), 'utf8');
        }
      };
      walk('');
      return files;
    };
    assert.deepEqual(tree(out), tree(src), 'import then export gives the directory back unchanged');
    await stop('guest1');
    assert.ok(!loAddresses().includes('192.0.2.43'));
  });

  it('leaves nothing behind: processes, cgroups, BPF attachments, host addresses', async () => {
    for (const n of made) await remove(n);
    const left = (await c.api.containers.listContainers({ pageSize: 1000, pageToken: '', driver: 'vserver', states: [] })).containers;
    assert.deepEqual(
      left.map((x) => x.name),
      [],
    );
    for (const n of made) for (const dir of cgroupDirs(n)) assert.ok(!existsSync(dir), `${dir} is gone`);
    const attached = execFileSync('bpftool', ['-j', 'cgroup', 'tree'], { encoding: 'utf8' });
    for (const n of made) assert.ok(!attached.includes(`/osvirt/${n}"`), `no BPF programs on osvirt/${n}`);
    for (const a of [...Object.values(ADDR), '192.0.2.43']) assert.ok(!loAddresses().includes(a), `${a} is not on lo`);
    const monitors = execFileSync('sh', ['-c', `pgrep -f 'osvirt-helper (run|restore) .*--state ${d.stateDir}' || true`], { encoding: 'utf8' }).trim();
    assert.equal(monitors, '', 'no container monitor is left');
  });
});
