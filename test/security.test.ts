// Hardening of the containers themselves: known escapes fail from inside a
// default container, each protection can be relaxed per container, and a
// user namespace makes container root an unprivileged host uid.
import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { DEFAULT_MASKED } from '../drivers/lxc/security';
import * as os from 'node:os';
import * as path from 'node:path';
import type { ContainerSpec, DeepPartial } from '../src/gen/osvirt/v1/container';
import { isRoot, TestDaemon, type Client } from './support/daemon';
import { execIn } from './support/exec';
import { busybox } from './support/specs';

// Calls a system call the filter refuses and prints the errno name it got.
const PROBE_C = `
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
int main(int argc, char **argv) {
  long r = -1;
  if (!strcmp(argv[1], "finit_module")) r = syscall(SYS_finit_module, -1, "", 0);
  else if (!strcmp(argv[1], "open_by_handle_at")) r = syscall(SYS_open_by_handle_at, -1, NULL, O_RDONLY);
  else if (!strcmp(argv[1], "kexec_load")) r = syscall(SYS_kexec_load, 0, 0, NULL, 0);
  printf("%s\\n", r == 0 ? "OK" : strerrorname_np(errno));
  return 0;
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

  it('refuses the known escapes in a default container', async () => {
    const pid = await run('hard');
    try {
      // /proc/sys is read-only and cannot be remounted writable.
      const remount = await sh('hard', 'mount -o remount,rw /proc/sys; echo 1 > /proc/sys/kernel/sysrq && echo WROTE');
      assert.doesNotMatch(remount.stdout, /WROTE/, remount.stderr);
      assert.ok(readFileSync(`/proc/${pid}/mountinfo`, 'utf8').split('\n').some((l) => l.split(' ')[4] === '/proc/sys' && /\bro\b/.test(l.split(' ')[5] ?? '')), 'the host sees /proc/sys read-only in the container');
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
    // rootfs owned by host root (see the README's user namespace note).
    await c.api.containers.createContainer({ name: 'userns', spec: busybox({ driverOptions: { $case: 'lxc', value: { uidMap: [{ containerId: 0, hostId: 200000, size: 65536 }], gidMap: [{ containerId: 0, hostId: 200000, size: 65536 }] } } }) });
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
