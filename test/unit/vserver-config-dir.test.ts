// util-vserver's per-guest config directory (drivers/vserver/config-dir.ts)
// and vserver-stat's formatting (src/cli/vserver-stat.ts): pure, no root.
import { strict as assert } from 'node:assert';
import { parseConfigDir, parseKillseq, renderConfigDir, type ConfigFiles } from '../../drivers/vserver/config-dir';
import { readConfigDir } from '../../src/cli/config-tree';
import { formatStatRow, shortenMem, shortenTime } from '../../src/cli/vserver-stat';
import { VServerOptions_ContextCapability as Ccap, VServerOptions_ContextFlag as Cflag, VServerInit_Style as Style } from '../../src/gen/osvirt/v1/vserver';
import { repoPath } from '../../src/paths';

const files = (entries: Record<string, string>): ConfigFiles => new Map(Object.entries(entries).map(([k, v]) => [k, { content: Buffer.from(v) }]));

describe('vserver config dir (no root)', () => {
  it('reads examples/vservers/guest1 into a spec: context, uts, interface, capabilities, rlimits, init', async () => {
    const p = parseConfigDir(await readConfigDir(repoPath('examples', 'vservers', 'guest1')), 'guest1');
    assert.equal(p.name, 'guest1');
    assert.equal(p.spec.driver, 'vserver');
    assert.deepEqual(p.spec.rootfs?.source, { $case: 'template', value: 'busybox' });
    assert.equal(p.spec.driverOptions?.$case, 'vserver');
    const o = p.spec.driverOptions.value;
    assert.equal(o.context, 43);
    assert.equal(o.contextName, 'guest1');
    assert.equal(o.uts?.nodename, 'guest1');
    assert.equal(o.uts?.domainname, 'example.org');
    assert.equal(o.network?.interfaces.length, 1);
    assert.deepEqual(
      { name: o.network?.interfaces[0]?.name, ip: o.network?.interfaces[0]?.ip, dev: o.network?.interfaces[0]?.dev, prefix: o.network?.interfaces[0]?.prefix },
      { name: '0', ip: '192.0.2.43', dev: 'lo', prefix: 32 },
    );
    assert.equal(o.network?.singleIp, true);
    assert.equal(o.network?.lbackRemap, true);
    assert.deepEqual(o.bcapabilities?.drop, ['net_bind_service']);
    assert.deepEqual(o.ccapabilities, [Ccap.CONTEXT_CAPABILITY_SET_RLIMIT]);
    assert.deepEqual({ hard: o.rlimits?.nofile?.hard, soft: o.rlimits?.nofile?.soft }, { hard: 4096n, soft: 1024n });
    assert.deepEqual({ hard: o.rlimits?.nproc?.hard, soft: o.rlimits?.nproc?.soft }, { hard: 64n, soft: 64n });
    assert.equal(o.init?.style, Style.STYLE_SYSV);
    assert.deepEqual(o.init?.killseq, [
      { signal: 15, waitSeconds: 5 },
      { signal: 9, waitSeconds: 0 },
    ]);
    assert.deepEqual(p.notes, ["no vdir link: the guest runs on osvirt's busybox template (util-vserver would use /vservers/NAME)"]);
  });

  it('renders every file it reads back unchanged, and notes what it does not import', async () => {
    const dir = await readConfigDir(repoPath('examples', 'vservers', 'guest1'));
    dir.set('rlimits/as.hard', { content: Buffer.from('inf\n') });
    dir.set('rlimits/rss.soft', { content: Buffer.from('2048\n') });
    dir.set('interfaces/1/ip', { content: Buffer.from('fd00::43\n') });
    dir.set('interfaces/1/nodev', { content: Buffer.alloc(0) });
    dir.set('interfaces/1/disabled', { content: Buffer.alloc(0) });
    dir.set('apps/init/runlevel.stop', { content: Buffer.from('0\n') });
    dir.set('flags', { content: Buffer.from('lock\nprivate\n') });
    dir.set('vdir', { symlink: '/vservers/guest1' });
    dir.set('fstab', { content: Buffer.from('none /tmp tmpfs defaults 0 0\n') });
    const p = parseConfigDir(dir, 'guest1');
    assert.ok(
      p.notes.some((n) => n.startsWith('fstab is not imported')),
      p.notes.join('; '),
    );
    assert.equal(p.spec.driverOptions?.$case, 'vserver');
    assert.deepEqual(p.spec.driverOptions.value.flags, [Cflag.CONTEXT_FLAG_LOCK, Cflag.CONTEXT_FLAG_PRIVATE]);
    const back = renderConfigDir(p.spec);
    dir.delete('fstab');
    assert.deepEqual([...back.keys()].sort(), [...dir.keys()].sort());
    for (const [k, v] of dir) assert.deepEqual(back.get(k), v, k);
  });

  it('ignores comments, blank lines and case in flag files', () => {
    const a = parseConfigDir(files({ context: '5\n', flags: '# comment\n\nLOCK\n' }), 'g').spec.driverOptions;
    const b = parseConfigDir(files({ context: '5', flags: 'lock' }), 'g').spec.driverOptions;
    assert.equal(a?.$case, 'vserver');
    assert.deepEqual(a.value.flags, [Cflag.CONTEXT_FLAG_LOCK]);
    assert.deepEqual(a, b);
  });

  it('refuses bad files, naming the file', () => {
    assert.throws(() => parseConfigDir(files({ context: 'x' }), 'g'), /context: "x" is not a whole number/);
    assert.throws(() => parseConfigDir(files({ context: '5', 'apps/init/style': 'minit' }), 'g'), /init style "minit" is not supported/);
  });

  it('reads killseq as signal [wait signal]* and refuses anything else', () => {
    assert.deepEqual(parseKillseq('apps/init/killseq', '15 5 10 2 9'), [
      { signal: 15, waitSeconds: 5 },
      { signal: 10, waitSeconds: 2 },
      { signal: 9, waitSeconds: 0 },
    ]);
    assert.deepEqual(parseKillseq('apps/init/killseq', '15'), [{ signal: 15, waitSeconds: 0 }]);
    for (const bad of ['15 x', ''])
      assert.throws(() => parseKillseq('apps/init/killseq', bad), { message: 'apps/init/killseq: must be "signal [wait signal]*", e.g. "15 5 9"' });
  });
});

describe('vserver-stat formatting (no root)', () => {
  it('shortens sizes and times like util-vserver', () => {
    assert.equal(shortenMem(1.5 * 2 ** 20), '1.5M');
    assert.equal(shortenTime(2 * 3600e3 + 7 * 60e3 + 8e3), '2h07m08');
    assert.equal(
      formatStatRow({
        context: 0,
        processCount: 90,
        vszBytes: 1.4 * 2 ** 30,
        rssBytes: 142.4 * 2 ** 20,
        userMs: 132030,
        systemMs: 93570,
        uptimeMs: 7628000,
        name: 'root server',
      }),
      '0       90   1.3G 142.3M   2m12s03   1m33s57   2h07m08 root server',
    );
  });
});
