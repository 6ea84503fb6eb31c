// A real distribution as a system container: Debian booted by its own
// systemd, seen from the host (docs/system-containers.md). Few boots, shared
// between the checks, because each is a real boot.
import * as assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import * as path from 'node:path';
import { ContainerSpec, ContainerState, type DeepPartial } from '../src/gen/osvirt/v1/container';
import type { AttachConsoleResponse } from '../src/gen/osvirt/v1/container_service';
import { TestDaemon, until, type Client } from './support/daemon';
import { execIn, sh } from './support/exec';
import { debianTemplate } from './support/debian';

describe('system containers (Debian booted by systemd)', function () {
  this.timeout(300000);
  let d: TestDaemon;
  let c: Client;
  let template: Awaited<ReturnType<typeof debianTemplate>>;

  before(async function () {
    template = await debianTemplate();
    if ('skip' in template) {
      this.test!.parent!.title += ` (skipped: ${template.skip})`;
      return this.skip();
    }
    d = new TestDaemon();
    c = await d.start(template.daemonArgs);
  });
  after(async () => {
    await d?.destroy();
  });

  function spec(extra: DeepPartial<ContainerSpec> = {}): ContainerSpec {
    if ('skip' in template) throw new Error('no template');
    return ContainerSpec.fromPartial({ driver: 'lxc', rootfs: template.rootfs, ...extra });
  }

  /** Waits for systemd to finish booting; returns what is-system-running says then. */
  async function booted(name: string): Promise<string> {
    return until(
      async () => {
        const r = await execIn(c, name, ['systemctl', 'is-system-running']);
        const s = r.stdout.trim();
        return s === 'initializing' || s === 'starting' || s === '' ? undefined : s;
      },
      `${name} to finish booting`,
      60000,
    ) as Promise<string>;
  }

  const status = async (name: string) => (await c.api.containers.getContainer({ name })).container!.status!;

  /** Attaches the console; resolves the output seen so far on demand. */
  function attach(name: string) {
    const stream = c.containers.attachConsole();
    let out = '';
    stream.on('data', (m: AttachConsoleResponse) => (out += m.output.toString()));
    stream.on('error', () => undefined);
    stream.write({ message: { $case: 'start', value: { name, terminalSize: { rows: 40, cols: 120 } } } });
    return {
      output: () => out,
      type: (text: string) => stream.write({ message: { $case: 'input', value: Buffer.from(text) } }),
      close: () => stream.cancel(),
    };
  }

  /** Host-side traces of a container: cgroups, mounts and host veths. */
  function traces(name: string): string[] {
    const found: string[] = [];
    for (const h of readdirSync('/sys/fs/cgroup')) {
      const dir = path.join('/sys/fs/cgroup', h, 'osvirt', name);
      if (existsSync(dir)) found.push(dir);
    }
    for (const l of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) if (l.includes(`/containers/${name}/`)) found.push(l.split(' ')[4]!);
    return found;
  }

  it('boots to "running" with 0 failed units, journald, dbus and logind active, in the environment systemd expects', async () => {
    await c.api.containers.createContainer({ name: 'deb', spec: spec({ network: { mode: { $case: 'bridge', value: {} } } }) });
    const started = (await c.api.containers.startContainer({ name: 'deb' })).container!.status!;
    try {
      assert.equal(await booted('deb'), 'running', (await execIn(c, 'deb', ['systemctl', '--failed', '--no-pager'])).stdout);
      assert.equal(await sh(c, 'deb', 'systemctl list-units --failed --no-legend | wc -l'), '0');
      for (const unit of ['systemd-journald', 'dbus', 'systemd-logind']) assert.equal(await sh(c, 'deb', `systemctl is-active ${unit}`), 'active', unit);
      const pid = started.initPid;
      // The init is the distribution's own systemd, as pid 1 of its pid namespace.
      assert.match(readFileSync(`/proc/${pid}/cmdline`, 'utf8'), /^\/sbin\/init\0?$/);
      assert.equal(await sh(c, 'deb', 'readlink /proc/1/exe'), '/usr/lib/systemd/systemd');
      // Container interface: the manager's name, /run as tmpfs, a machine id of its own.
      assert.equal(await sh(c, 'deb', 'cat /run/host/container-manager'), 'osvirt');
      // The hostname is the container's: the template carries no /etc/hostname of the build host's.
      assert.equal(await sh(c, 'deb', 'hostname'), 'deb');
      assert.equal(await sh(c, 'deb', 'systemd-detect-virt --container'), 'container-other');
      assert.match(await sh(c, 'deb', 'findmnt -n -o FSTYPE /run'), /^tmpfs$/);
      assert.match(await sh(c, 'deb', 'cat /etc/machine-id'), /^[0-9a-f]{32}$/);
      // cgroup:mixed: systemd made its tree under the container's own cgroup in
      // name=systemd (and cgroup2), seen from the host.
      const cg = readFileSync(`/proc/${pid}/cgroup`, 'utf8');
      const layout = existsSync('/sys/fs/cgroup/cgroup.controllers') ? 'v2' : 'hybrid';
      if (layout === 'hybrid' && existsSync('/sys/fs/cgroup/systemd')) {
        assert.match(cg, /name=systemd:\/osvirt\/deb\/init\.scope$/m, cg);
        assert.ok(existsSync('/sys/fs/cgroup/systemd/osvirt/deb/system.slice/systemd-journald.service'));
        // The v1 controllers are read-only inside: systemd made nothing there.
        assert.equal(readdirSync('/sys/fs/cgroup/memory/osvirt/deb', { withFileTypes: true }).filter((e) => e.isDirectory()).length, 0);
      } else assert.match(cg, /^0::\/osvirt\/deb\/init\.scope$/m, cg);
      // Namespaced services work: logind runs in a mount namespace of its own.
      const logind = Number(await sh(c, 'deb', 'systemctl show -p MainPID --value systemd-logind'));
      assert.ok(logind > 0);
    } catch (e) {
      await c.api.containers.deleteContainer({ name: 'deb', force: true, allowMissing: true });
      throw e;
    }
  });

  it('shows a login prompt on the console, and a login works', async () => {
    // No password comes with the template: the owner sets one.
    await execIn(c, 'deb', ['chpasswd'], { stdin: 'root:osvirt-test\n' });
    const con = attach('deb');
    try {
      con.type('\r');
      await until(() => /login: $/m.test(con.output()), `a login prompt (got ${JSON.stringify(con.output().slice(-300))})`, 30000);
      con.type('root\r');
      await until(() => /Password: ?$/m.test(con.output()), `a password prompt (got ${JSON.stringify(con.output().slice(-300))})`);
      con.type('osvirt-test\r');
      await until(() => /# $/m.test(con.output()), `a root shell (got ${JSON.stringify(con.output().slice(-300))})`);
      con.type('echo logged-$((40+2)) $(tty)\r');
      await until(() => /logged-42 \/dev\/console/.test(con.output()), `the shell's answer (got ${JSON.stringify(con.output().slice(-300))})`);
      con.type('exit\r');
    } finally {
      con.close();
    }
  });

  it('reboots when its init asks: RUNNING again with a new init', async () => {
    const before = (await status('deb')).initPid;
    await execIn(c, 'deb', ['systemctl', 'reboot']);
    const after = await until(
      async () => {
        const s = await status('deb');
        return s.state === ContainerState.CONTAINER_STATE_RUNNING && s.initPid && s.initPid !== before ? s : undefined;
      },
      'the container to come back with a new init',
      60000,
    );
    assert.notEqual(after!.initPid, before);
    assert.equal(await booted('deb'), 'running');
  });

  it("stops through the init's halt signal (SIGRTMIN+3) with exit code 0, and delete leaves nothing behind", async () => {
    // With a 10 s timeout: a systemd that ignored the signal would be killed (exit 137).
    const stopped = (await c.api.containers.stopContainer({ name: 'deb', signal: 0, timeout: { seconds: 10n, nanos: 0 } })).container!.status!;
    assert.equal(stopped.state, ContainerState.CONTAINER_STATE_STOPPED);
    assert.equal(stopped.exitCode, 0, stopped.message);
    assert.equal(stopped.signal, 0);
    assert.deepEqual(traces('deb'), []);
    await c.api.containers.deleteContainer({ name: 'deb', force: false, allowMissing: false });
    assert.deepEqual(traces('deb'), []);
    // No veth left on the bridge, and no nftables rule of its own.
    assert.deepEqual(readdirSync(`/sys/class/net/${d.bridge}/brif`), []);
    const nft = ['/usr/sbin/nft', '/sbin/nft'].find((p) => existsSync(p));
    if (nft) assert.doesNotMatch(execFileSync(nft, ['list', 'ruleset'], { encoding: 'utf8' }), /osvirt:deb"/);
    assert.ok(!existsSync(path.join(d.stateDir, 'drivers', 'lxc', 'containers', 'deb')));
  });

  it('checkpoints and restores a booted system: systemd still running, journald logging, console attached', async function () {
    const info = (await c.api.system.listDrivers({})).drivers.find((x) => x.name === 'lxc');
    if (!info?.capabilities.includes('checkpoint')) return this.skip();
    await c.api.containers.createContainer({ name: 'debcr', spec: spec({ network: { mode: { $case: 'none', value: {} } } }) });
    await c.api.containers.startContainer({ name: 'debcr' });
    try {
      assert.equal(await booted('debcr'), 'running');
      await sh(c, 'debcr', 'logger before-checkpoint');
      const cp = (await c.api.containers.checkpointContainer({ name: 'debcr', checkpoint: 'booted' })).checkpoint!;
      assert.equal((await status('debcr')).state, ContainerState.CONTAINER_STATE_STOPPED);
      await c.api.containers.restoreContainer({ name: 'debcr', checkpoint: cp.name, newName: '', tcpEstablished: false });
      assert.equal(await booted('debcr'), 'running');
      assert.equal(await sh(c, 'debcr', 'systemctl list-units --failed --no-legend | wc -l'), '0');
      await sh(c, 'debcr', 'logger after-restore');
      await until(
        async () => /before-checkpoint[\s\S]*after-restore/.test(await sh(c, 'debcr', 'journalctl --no-pager -o cat')),
        'journald to log after the restore',
      );
      // The getty kept its console: a prompt comes back on the new pty.
      const con = attach('debcr');
      try {
        con.type('\r');
        await until(() => /login: $/m.test(con.output()), `a login prompt after restore (got ${JSON.stringify(con.output().slice(-300))})`, 30000);
      } finally {
        con.close();
      }
      // poweroff from inside ends as a clean stop.
      await execIn(c, 'debcr', ['systemctl', 'poweroff']);
      const s = await until(
        async () => {
          const st = await status('debcr');
          return st.state === ContainerState.CONTAINER_STATE_STOPPED ? st : undefined;
        },
        'poweroff to stop the container',
        30000,
      );
      assert.equal(s!.exitCode, 0, s!.message);
    } finally {
      await c.api.containers.deleteContainer({ name: 'debcr', force: true, allowMissing: true });
    }
    assert.deepEqual(traces('debcr'), []);
  });
});
