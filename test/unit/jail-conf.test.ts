// jail.conf(5) and rctl.conf(5) readers (drivers/jail/conf.ts): pure text to
// JailOptions, no root and no daemon.
import { strict as assert } from 'node:assert';
import { readFileSync } from 'node:fs';
import { JailConfError, readJailConf, readRctlConf } from '../../drivers/jail/conf';
import { JailSysMode } from '../../src/gen/osvirt/v1/jail';
import { isOsvirtError } from '../../src/core/errors';
import { repoPath } from '../../src/paths';

/** The error readJailConf throws for text, checked to be a JailConfError. */
function confError(text: string, file = 'bad.conf'): JailConfError {
  try {
    readJailConf(text, file);
  } catch (e) {
    assert.ok(e instanceof JailConfError, `expected a JailConfError, got ${String(e)}`);
    return e;
  }
  assert.fail(`expected ${JSON.stringify(text)} to be refused`);
}

describe('jail.conf reader (no root)', () => {
  it('reads the example: "*" defaults, $variables, ${name}, += and the "no" prefix', () => {
    const jails = readJailConf(readFileSync(repoPath('examples', 'jail.conf'), 'utf8'), 'jail.conf');
    assert.deepEqual(
      jails.map((j) => j.name),
      ['www', 'db'],
    );
    const [www, db] = jails as [(typeof jails)[0], (typeof jails)[0]];
    assert.equal(www.template, 'busybox');
    assert.equal(www.options.hostHostname, 'www.example.org');
    assert.deepEqual(www.options.ip4Addr, ['203.0.113.81']);
    assert.equal(www.options.interface, 'lo');
    assert.equal(www.options.mountDevfs, true);
    assert.equal(www.options.execClean, true);
    assert.equal(www.options.allowRawSockets, false);
    assert.deepEqual(www.options.execStart, ['mkdir -p /var/www', 'echo www > /var/www/index.html', 'httpd -h /var/www -p 80']);
    assert.deepEqual(www.options.execStop, ['killall httpd']);
    assert.equal(www.options.persist, false);
    assert.equal(www.stopTimeout, undefined);

    assert.equal(db.options.hostHostname, 'db.example.org');
    assert.deepEqual(db.options.ip4Addr, ['203.0.113.82']);
    assert.equal(db.options.persist, true);
    assert.equal(db.options.securelevel, 2);
    assert.equal(db.options.childrenMax, 0);
    assert.equal(db.options.allowSysvipc, true);
    assert.deepEqual(db.options.execStart, []);
    assert.equal(db.stopTimeout, 5);
  });

  it('later statements supersede earlier ones; single quotes are literal; modes map to the enum', () => {
    const [a] = readJailConf(
      "a { persist; nopersist; allow.nomount; path = '/j/$name'; vnet = new; ip4 = disable; host.hostname = first; host.hostname = second; }",
      't.conf',
    );
    assert.equal(a!.options.persist, false);
    assert.equal(a!.options.allowMount, false);
    assert.equal(a!.options.path, '/j/$name');
    assert.equal(a!.options.vnet, JailSysMode.JAIL_SYS_MODE_NEW);
    assert.equal(a!.options.ip4, JailSysMode.JAIL_SYS_MODE_DISABLE);
    assert.equal(a!.options.hostHostname, 'second');
  });

  it('returns only the jails asked for, in file order, and NOT_FOUND for one not defined', () => {
    const jails = readJailConf('* { path = "/jails/$name"; } a { persist; } b { path = /other; } c {}', 'x.conf', ['c', 'a']);
    assert.deepEqual(
      jails.map((j) => [j.name, j.options.path]),
      [
        ['a', '/jails/a'],
        ['c', '/jails/c'],
      ],
    );
    assert.throws(
      () => readJailConf('a {}', 'x.conf', ['zz']),
      (e: unknown) => isOsvirtError(e) && e.code === 'NOT_FOUND' && e.reason === 'JAIL_NOT_FOUND' && e.message === 'x.conf: jail "zz" is not defined',
    );
  });

  it('refuses bad text with INVALID_ARGUMENT naming file, line and column', () => {
    const cases: [string, string][] = [
      ['www {\n  host.hostname = www\n  persist;\n}\n', 'bad.conf:3:3: expected ";" after the value of "host.hostname", found more text'],
      ['www {\n  path = "/jails/www;\n}\n', 'bad.conf:2:10: unterminated double-quoted string'],
      ['www {\n  persist;\n  frobnicate = 1;\n}\n', 'bad.conf:3:3: jail "www": unknown parameter "frobnicate"'],
      ['www {\n  path = "/jails/${nope}";\n}\n', 'bad.conf:2:18: jail "www": ${nope} is not defined'],
      ['/* unterminated\nwww { persist; }\n', 'bad.conf:1:1: unterminated /* comment'],
      ['www {\n  ip4 = sometimes;\n}\n', 'bad.conf:2:3: jail "www": ip4 = "sometimes": expected new, inherit or disable'],
      ['www { path = /a; host.hostname = a, b; }', 'bad.conf:1:18: jail "www": host.hostname takes one value, not a list'],
      ['a { children.max = -1; }', 'bad.conf:1:5: jail "a": children.max must not be negative'],
      ['a { $x = "${y}"; $y = "${x}"; path = $x; }', 'bad.conf:1:24: jail "a": ${x} refers to itself'],
      ['a { allow.vmm; }', 'bad.conf:1:5: jail "a": allow.vmm is not supported on Linux: no vmm(4) on Linux'],
      ['a { securelevel = high; }', 'bad.conf:1:5: jail "a": securelevel = "high": expected a number'],
    ];
    for (const [text, message] of cases) {
      const e = confError(text);
      assert.equal(e.message, message, JSON.stringify(text));
      assert.equal(e.code, 'INVALID_ARGUMENT');
      assert.equal(e.reason, 'JAIL_CONF_SYNTAX');
      assert.equal(e.file, 'bad.conf');
    }
  });
});

describe('rctl.conf reader (no root)', () => {
  it('reads jail deny rules with k/m/g amounts, skipping comments and blank lines', () => {
    const r = readRctlConf(
      'jail:www:memoryuse:deny=64m\njail:www:maxproc:deny=20 # comment\n\n# only a comment\njail:db:openfiles:deny=1k/process\njail:db:pcpu:deny=50\n',
    );
    assert.deepEqual([...r.keys()], ['www', 'db']);
    assert.deepEqual(r.get('www'), { memoryuse: 64n * 1024n * 1024n, maxproc: 20, pcpu: 0, openfiles: 0n, vmemoryuse: 0n });
    assert.deepEqual(r.get('db'), { memoryuse: 0n, maxproc: 0, pcpu: 50, openfiles: 1024n, vmemoryuse: 0n });
  });

  it('refuses what Linux cannot enforce, naming line and column', () => {
    const cases: [string, string][] = [
      ['jail:www:memoryuse:log=64m', 'rctl.conf:1:1: action "log": only deny is enforced (by cgroups and rlimits)'],
      ['\n  user:1000:maxproc:deny=5', 'rctl.conf:2:3: subject "user": only jail rules apply to jails'],
      ['jail:www:swapuse:deny=1g', 'rctl.conf:1:1: resource "swapuse": supported are memoryuse, maxproc, pcpu, openfiles, vmemoryuse'],
      ['jail:www:maxproc:deny=0', 'rctl.conf:1:1: amount "0": expected a positive number (k, m, g suffixes allowed)'],
      ['jail:www:maxproc:deny=5/process', 'rctl.conf:1:1: "/process": maxproc is limited per jail on Linux'],
      ['garbage', 'rctl.conf:1:1: "garbage": expected subject:subject-id:resource:action=amount'],
    ];
    for (const [text, message] of cases) {
      assert.throws(
        () => readRctlConf(text),
        (e: unknown) => e instanceof JailConfError && e.message === message,
        JSON.stringify(text),
      );
    }
  });
});
