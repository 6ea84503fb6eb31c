// Hardening of the containers themselves: known escapes fail from inside a
// default container, each protection can be relaxed per container, and a
// user namespace makes container root an unprivileged host uid.
import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, readlinkSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { DEFAULT_MASKED } from '../drivers/lxc/security';
import * as os from 'node:os';
import * as path from 'node:path';
import type { ContainerSpec, DeepPartial } from '../src/gen/osvirt/v1/container';
import { isRoot, TestDaemon, type Client } from './support/daemon';
import { execIn } from './support/exec';
import { busybox } from './support/specs';

// The escape probe: each subcommand tries one thing a hostile root would, and
// prints OK or the errno name it got, so a test can tell which mechanism
// refused it. A write writes back the value already there, so even a probe
// that succeeds changes nothing on the host.
const PROBE_C = `
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/perf_event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>
static int report(long r) {
  printf("%s\\n", r >= 0 ? "OK" : strerrorname_np(errno));
  return 0;
}
int main(int argc, char **argv) {
  const char *c = argv[1];
  if (!strcmp(c, "finit_module")) return report(syscall(SYS_finit_module, -1, "", 0));
  if (!strcmp(c, "open_by_handle_at")) return report(syscall(SYS_open_by_handle_at, -1, NULL, O_RDONLY));
  if (!strcmp(c, "kexec_load")) return report(syscall(SYS_kexec_load, 0, 0, NULL, 0));
  if (!strcmp(c, "bpf")) return report(syscall(SYS_bpf, 0, NULL, 0));
  if (!strcmp(c, "perf_event_open")) {
    struct perf_event_attr a = {.type = PERF_TYPE_SOFTWARE, .size = sizeof a, .config = PERF_COUNT_SW_CPU_CLOCK};
    return report(syscall(SYS_perf_event_open, &a, 0, -1, -1, 0));
  }
  if (!strcmp(c, "add_key")) return report(syscall(SYS_add_key, "user", "osvirt-probe", "x", 1, -2 /* session keyring */));
  if (!strcmp(c, "mount")) { /* mount TYPE DIR [OPTIONS] */
    mkdir(argv[3], 0700);
    return report(mount(argv[2], argv[3], argv[2], 0, argc > 4 ? argv[4] : NULL));
  }
  if (!strcmp(c, "rewrite")) { /* rewrite FILE: write back what it holds */
    char buf[4096] = {0};
    int fd = open(argv[2], O_RDONLY);
    if (fd < 0) return report(-1);
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n < 0) return report(-1);
    fd = open(argv[2], O_WRONLY);
    if (fd < 0) return report(-1);
    return report(write(fd, n ? buf : "\\n", n ? (size_t)n : 1));
  }
  if (!strcmp(c, "mknod")) /* mknod PATH MAJOR MINOR (block) */
    return report(mknod(argv[2], S_IFBLK | 0600, makedev(atoi(argv[3]), atoi(argv[4]))));
  if (!strcmp(c, "read")) { /* read PATH: its first 512 bytes */
    char buf[512];
    int fd = open(argv[2], O_RDONLY);
    if (fd < 0) return report(-1);
    return report(read(fd, buf, sizeof buf));
  }
  if (!strcmp(c, "ptrace")) return report(ptrace(PTRACE_ATTACH, atoi(argv[2]), 0, 0));
  printf("unknown probe %s\\n", c);
  return 2;
}
`;

describe('container hardening', function () {
  this.timeout(120000);
  let d: TestDaemon;
  let c: Client;
  let work: string;

  before(async function () {
    if (!isRoot()) return this.skip();
    work = mkdtempSync(path.join(os.tmpdir(), 'osvirt-sec-'));
    writeFileSync(path.join(work, 'probe.c'), PROBE_C);
    execFileSync('gcc', ['-static', '-O2', '-o', path.join(work, 'probe'), path.join(work, 'probe.c')]);
    chmodSync(path.join(work, 'probe'), 0o755);
    chmodSync(work, 0o755); // a user-namespaced root must reach the probe it binds
    d = new TestDaemon();
    c = await d.start();
  });
  after(async () => {
    await d?.destroy();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  /** A busybox container with the probe bound in at /probe. */
  async function run(name: string, extra: DeepPartial<ContainerSpec> = {}): Promise<number> {
    const spec = busybox({ ...extra, mounts: [{ type: 1, source: path.join(work, 'probe'), destination: '/probe', readonly: true }] });
    await c.api.containers.createContainer({ name, spec });
    return (await c.api.containers.startContainer({ name })).container!.status!.initPid;
  }
  const sh = async (name: string, script: string) => execIn(c, name, ['/bin/sh', '-c', script]);
  const remove = (name: string) => c.api.containers.deleteContainer({ name, force: true, allowMissing: true });

  /** The host's root block device (major, minor), if / is on one. */
  function rootDevice(): { major: number; minor: number } | undefined {
    const dev = statSync('/').dev;
    const major = ((dev >> 8) & 0xfff) | (Math.floor(dev / 2 ** 32) & ~0xfff);
    const minor = (dev & 0xff) | ((dev >> 12) & ~0xff);
    return existsSync(`/sys/dev/block/${major}:${minor}`) ? { major, minor } : undefined;
  }

  /** Runs every escape probe in the container; each result is OK or the errno name it got. */
  async function escapes(name: string): Promise<Record<string, string>> {
    const probe = async (...args: string[]) => {
      const r = await execIn(c, name, ['/probe', ...args]);
      return (r.stdout.trim() || r.stderr.trim()).split('\n').pop() ?? '';
    };
    const out: Record<string, string> = {};
    out['proc mount'] = await probe('mount', 'proc', '/tmp/p');
    out['global sysctl write'] = out['proc mount'] === 'OK' ? await probe('rewrite', '/tmp/p/sys/kernel/core_uses_pid') : 'not reached';
    out['sysfs mount'] = await probe('mount', 'sysfs', '/tmp/s');
    const thp = 'kernel/mm/transparent_hugepage/enabled';
    out['sysfs write'] =
      out['sysfs mount'] === 'OK' ? await probe('rewrite', `/tmp/s/${existsSync(`/sys/${thp}`) ? thp : 'kernel/uevent_helper'}`) : 'not reached';
    out['cgroup v1 mount'] = await probe('mount', 'cgroup', '/tmp/cg', 'memory');
    out['release_agent write'] = out['cgroup v1 mount'] === 'OK' ? await probe('rewrite', '/tmp/cg/release_agent') : 'not reached';
    const rd = rootDevice();
    if (rd) {
      out['mknod root disk'] = await probe('mknod', '/tmp/disk', String(rd.major), String(rd.minor));
      out['read root disk'] = out['mknod root disk'] === 'OK' ? await probe('read', '/tmp/disk') : 'not reached';
    }
    for (const call of ['finit_module', 'open_by_handle_at', 'kexec_load', 'bpf', 'perf_event_open', 'add_key']) out[call] = await probe(call);
    // A host process (the daemon) by its host pid: the container's pid namespace has no such pid.
    out['ptrace host process'] = await probe('ptrace', String(d.proc!.pid!));
    const remount = await sh(
      name,
      'mount -o remount,rw /proc/sys 2>/dev/null && echo 1 > /proc/sys/kernel/sysrq && echo WROTE; echo h > /proc/sysrq-trigger 2>/dev/null && echo SYSRQ',
    );
    out['remount /proc/sys and sysrq'] = /WROTE|SYSRQ/.test(remount.stdout) ? 'OK' : 'refused';
    return out;
  }

  /** What each escape must meet, and the mechanism that refuses it. */
  function assertRefused(got: Record<string, string>, want: Record<string, { errno: RegExp; by: string }>): void {
    // What would reach the host must fail; a step on the way (a mount, a mknod) may succeed.
    const final = Object.keys(got).filter((k) => !/ mount$|^mknod /.test(k));
    for (const k of final) assert.notEqual(got[k], 'OK', `${k} succeeded: ${JSON.stringify(got)}`);
    for (const [k, w] of Object.entries(want)) {
      if (!(k in got)) continue;
      assert.match(got[k]!, w.errno, `${k}: refused by ${w.by} expected, got ${got[k]} (${JSON.stringify(got)})`);
    }
  }

  const SECCOMP = (call: string) => ({ [call]: { errno: /^EPERM$/, by: 'the seccomp filter' } });

  it('refuses every escape in a default (user-namespaced) container, each by the mechanism named', async function () {
    const rd = rootDevice();
    if (!rd) this.test!.title += ' (root disk part skipped: / is not on a block device here)';
    const pid = await run('esc-default');
    try {
      assert.notEqual(readlinkSync(`/proc/${pid}/ns/user`), readlinkSync('/proc/self/ns/user'), 'the container has its own user namespace');
      // The range the API reports is the one the host sees the init run as.
      const ids = (await c.api.containers.getContainer({ name: 'esc-default' })).container!.status!.idMapping!;
      assert.equal(ids.privileged, false);
      const hostRoot = ids.uidMap.find((m) => m.containerId === 0)!.hostId;
      assert.ok(hostRoot >= 65536, `container root is an unprivileged host uid (${hostRoot})`);
      assert.match(readFileSync(`/proc/${pid}/status`, 'utf8'), new RegExp(`^Uid:\\s+${hostRoot}\\s`, 'm'));
      assert.equal(readFileSync(`/proc/${pid}/uid_map`, 'utf8').trim().split(/\s+/).join(' '), `0 ${hostRoot} 65536`);
      const got = await escapes('esc-default');
      assertRefused(got, {
        // A fresh procfs may even mount, but its global sysctls belong to the initial user namespace.
        'global sysctl write': { errno: /^(EACCES|not reached)$/, by: "the user namespace (global sysctls are owned by the host's root)" },
        'sysfs write': { errno: /^(EACCES|not reached)$/, by: "the user namespace (sysfs files are owned by the host's root)" },
        // A v1 mount may succeed, but shows only the container's own subtree: no release_agent.
        'release_agent write': { errno: /^(ENOENT|EACCES|not reached)$/, by: "the cgroup namespace (the hierarchy root is the container's cgroup)" },
        'mknod root disk': { errno: /^EPERM$/, by: 'the user namespace (no mknod)' },
        ...SECCOMP('finit_module'),
        ...SECCOMP('open_by_handle_at'),
        ...SECCOMP('kexec_load'),
        ...SECCOMP('bpf'),
        ...SECCOMP('perf_event_open'),
        ...SECCOMP('add_key'),
        'ptrace host process': { errno: /^ESRCH$/, by: 'the pid namespace (host processes have no pid inside)' },
      });
    } finally {
      await remove('esc-default');
    }
  });

  it('refuses every escape in a privileged container too (no sys_admin, device cgroup, seccomp, pid namespace)', async function () {
    const rd = rootDevice();
    if (!rd) this.test!.title += ' (root disk part skipped: / is not on a block device here)';
    const pid = await run('esc-priv', { security: { privileged: true } });
    try {
      assert.equal(readlinkSync(`/proc/${pid}/ns/user`), readlinkSync('/proc/self/ns/user'), "a privileged container shares the host's user namespace");
      assert.match(readFileSync(`/proc/${pid}/status`, 'utf8'), /^Uid:\s+0\s/m, "its root is the host's root");
      const capBnd = BigInt(`0x${/CapBnd:\s*([0-9a-f]+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]}`);
      assert.equal((capBnd >> 21n) & 1n, 0n, 'cap_sys_admin is not in the bounding set');
      assert.equal((await c.api.containers.getContainer({ name: 'esc-priv' })).container!.status!.idMapping!.privileged, true);
      const audit = readFileSync(path.join(d.stateDir, 'audit.log'), 'utf8')
        .split('\n')
        .filter((l) => l.includes('"CreateContainer"') && l.includes('"esc-priv"'));
      assert.match(audit.pop() ?? '', /"warning":"PRIVILEGED container/, 'the audit log warns of a privileged container');
      const got = await escapes('esc-priv');
      assertRefused(got, {
        'proc mount': { errno: /^EPERM$/, by: 'the missing CAP_SYS_ADMIN' },
        'sysfs mount': { errno: /^EPERM$/, by: 'the missing CAP_SYS_ADMIN' },
        'cgroup v1 mount': { errno: /^EPERM$/, by: 'the missing CAP_SYS_ADMIN' },
        // mknod may work (CAP_MKNOD), opening the node may not: the device cgroup allows only the standard set.
        'read root disk': { errno: /^(EPERM|not reached)$/, by: 'the device cgroup' },
        ...SECCOMP('finit_module'),
        ...SECCOMP('open_by_handle_at'),
        ...SECCOMP('kexec_load'),
        ...SECCOMP('bpf'),
        ...SECCOMP('perf_event_open'),
        ...SECCOMP('add_key'),
        'ptrace host process': { errno: /^ESRCH$/, by: 'the pid namespace' },
      });
    } finally {
      await remove('esc-priv');
    }
  });

  it('refuses the known escapes in a default container', async () => {
    const pid = await run('hard');
    try {
      // /proc/sys starts read-only.
      assert.ok(
        readFileSync(`/proc/${pid}/mountinfo`, 'utf8')
          .split('\n')
          .some((l) => l.split(' ')[4] === '/proc/sys' && /\bro\b/.test(l.split(' ')[5] ?? '')),
        'the host sees /proc/sys read-only in the container',
      );
      // In a user namespace a remount is the kernel's to judge (systemd remounts for its services), and
      // even on a writable /proc/sys a global sysctl belongs to the host's root: the write is refused.
      // (kernel/sysrq is not even shown to a user namespace on 6.18; core_uses_pid is.)
      const remount = await sh(
        'hard',
        'mount -o remount,rw /proc/sys; v=$(cat /proc/sys/kernel/core_uses_pid) && echo $v > /proc/sys/kernel/core_uses_pid && echo WROTE',
      );
      assert.doesNotMatch(remount.stdout, /WROTE/, remount.stderr);
      assert.match(remount.stderr, /Permission denied|Read-only file system/, remount.stderr);
      // sysrq-trigger cannot be written.
      const sysrq = await sh('hard', 'echo h > /proc/sysrq-trigger && echo WROTE');
      assert.doesNotMatch(sysrq.stdout, /WROTE/);
      // Module loading, kexec and open_by_handle_at are refused by the filter (EPERM), not by chance.
      for (const call of ['finit_module', 'open_by_handle_at', 'kexec_load']) {
        const r = await execIn(c, 'hard', ['/probe', call]);
        assert.equal(r.stdout.trim(), 'EPERM', `${call}: ${r.stdout}${r.stderr}`);
      }
      assert.match(readFileSync(`/proc/${pid}/status`, 'utf8'), /Seccomp:\s+2/, 'the init runs under a seccomp filter');
      // Exec'd processes get the same filter.
      assert.match((await sh('hard', 'grep Seccomp: /proc/self/status')).stdout, /Seccomp:\s+2/);
      // The default masked paths that exist on this kernel show nothing inside.
      const masked = DEFAULT_MASKED.filter((p) => existsSync(p));
      assert.ok(masked.length > 0);
      for (const p of masked) {
        const r = await sh('hard', `if [ -d ${p} ]; then ls -A ${p} | wc -l; else wc -c < ${p}; fi`);
        assert.equal(r.stdout.trim(), '0', `${p} is not masked: ${r.stdout}${r.stderr}`);
      }
      // sys_module is outside the default bounding set.
      const capBnd = BigInt(`0x${/CapBnd:\s*([0-9a-f]+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]}`);
      assert.equal((capBnd >> 16n) & 1n, 0n);
    } finally {
      await remove('hard');
    }
  });

  it('lets a container opt out of the filter and the masks, and add to them', async () => {
    await run('soft', { security: { seccompUnconfined: true, unmaskPaths: true } });
    await run('stricter', { security: { seccompDeny: ['chroot'], maskedPaths: ['/etc/hostname'] } });
    try {
      // Without the filter the kernel itself answers (a bad fd), showing the filter was what refused before.
      const unfiltered = (await execIn(c, 'soft', ['/probe', 'open_by_handle_at'])).stdout.trim();
      assert.ok(/^E/.test(unfiltered) && unfiltered !== 'EPERM', `open_by_handle_at answered ${unfiltered}`);
      assert.notEqual((await sh('soft', 'ls -A /sys/firmware | wc -l')).stdout.trim(), '0', '/sys/firmware is unmasked');
      assert.match((await sh('soft', 'grep Seccomp: /proc/self/status')).stdout, /Seccomp:\s+0/);
      assert.notEqual((await sh('soft', 'grep -c . /proc/sys/kernel/ostype')).exitCode, 1);
      const chroot = await sh('stricter', 'chroot / true && echo CHROOTED');
      assert.doesNotMatch(chroot.stdout, /CHROOTED/);
      assert.match(chroot.stderr, /Operation not permitted/);
      assert.equal((await sh('stricter', 'cat /etc/hostname | wc -c')).stdout.trim(), '0');
    } finally {
      await remove('soft');
      await remove('stricter');
    }
  });

  it('maps container root to an unprivileged host uid with a user namespace', async () => {
    // No probe bind here: a mapped root cannot create the mount target in a
    // rootfs owned by host root (see docs/security.md, on a plain rootfs.path).
    await c.api.containers.createContainer({
      name: 'userns',
      spec: busybox({
        driverOptions: {
          $case: 'lxc',
          value: { uidMap: [{ containerId: 0, hostId: 200000, size: 65536 }], gidMap: [{ containerId: 0, hostId: 200000, size: 65536 }] },
        },
      }),
    });
    const pid = (await c.api.containers.startContainer({ name: 'userns' })).container!.status!.initPid;
    try {
      assert.match(readFileSync(`/proc/${pid}/status`, 'utf8'), /^Uid:\s+200000\s/m, 'the host sees uid 200000');
      assert.equal((await sh('userns', 'id -u')).stdout.trim(), '0');
      assert.notEqual(readFileSync(`/proc/${pid}/uid_map`, 'utf8').trim(), '0 0 4294967295');
    } finally {
      await remove('userns');
    }
  });
});
