// The host's registries.conf, read as podman reads it (no root needed).
import * as assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { endpoints, isBlocked, readRegistriesConf, registriesConfFiles, resolveAlias } from '../src/images/registries-conf';

describe('registries.conf', () => {
  let dir: string;
  beforeEach(() => (dir = mkdtempSync(path.join(os.tmpdir(), 'osvirt-regconf-'))));
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('takes insecure and blocked registries and the search list; a later file wins for a location', () => {
    const main = path.join(dir, 'registries.conf');
    const dropin = path.join(dir, '50-local.conf');
    writeFileSync(
      main,
      [
        'unqualified-search-registries = ["registry.example.org", "quay.io"]',
        '',
        '[[registry]]',
        'location = "127.0.0.1:5000"',
        'insecure = false',
        '',
        '[[registry]]',
        'prefix = "evil.example.com/bad"',
        'location = "evil.example.com/bad"',
        'blocked = true',
        '',
      ].join('\n'),
    );
    writeFileSync(dropin, ['[[registry]]', 'location = "127.0.0.1:5000"', 'insecure = true', ''].join('\n'));
    const conf = readRegistriesConf([main, dropin, path.join(dir, 'missing.conf')]);
    assert.deepEqual(conf.insecure, ['127.0.0.1:5000']);
    assert.deepEqual(conf.blocked, ['evil.example.com/bad']);
    assert.deepEqual(conf.search, ['registry.example.org', 'quay.io']);
    assert.deepEqual(conf.problems, []);
    assert.equal(isBlocked(conf, 'evil.example.com', 'bad/image'), 'evil.example.com/bad');
    assert.equal(isBlocked(conf, 'evil.example.com', 'good/image'), undefined);
    assert.equal(isBlocked(conf, 'evil.example.com', 'badger/image'), undefined, 'a prefix is a whole path component');
  });

  it('reports a file that is not TOML and reads the others', () => {
    const bad = path.join(dir, 'bad.conf');
    const good = path.join(dir, 'good.conf');
    writeFileSync(bad, '[[registry]\nlocation = \n');
    writeFileSync(good, '[[registry]]\nlocation = "10.0.0.1:5000"\ninsecure = true\n');
    const conf = readRegistriesConf([bad, good]);
    assert.equal(conf.problems.length, 1);
    assert.match(conf.problems[0]!, /bad\.conf: /);
    assert.deepEqual(conf.insecure, ['10.0.0.1:5000']);
  });

  it('rewrites a prefix to its location and tries its mirrors first, by digest or tag as each mirror serves', () => {
    const f = path.join(dir, 'registries.conf');
    writeFileSync(
      f,
      [
        '[[registry]]',
        'prefix = "docker.example/library"',
        'location = "internal.example:5000/hub"',
        '[[registry.mirror]]',
        'location = "mirror-a.example/cache"',
        'insecure = true',
        '[[registry.mirror]]',
        'location = "mirror-b.example"',
        'pull-from-mirror = "digest-only"',
        '',
        '[[registry]]',
        'location = "docker.example"',
        '[[registry.mirror]]',
        'location = "mirror-c.example"',
        'pull-from-mirror = "tag-only"',
        '',
        '[[registry]]',
        'prefix = "*.wild.example"',
        'location = "x.example"',
        '',
        '[aliases]',
        '"busybox" = "docker.example/library/busybox"',
        '',
      ].join('\n'),
    );
    const conf = readRegistriesConf([f]);
    assert.deepEqual(conf.insecure, ['mirror-a.example']);
    const names = (host: string, repo: string, byDigest: boolean) =>
      endpoints(conf, host, repo, byDigest).map((e) => `${e.host}/${e.repository}${e.mirror ? ' (mirror)' : ''}`);
    // The longest prefix wins; the path under it is carried over.
    assert.deepEqual(names('docker.example', 'library/busybox', false), ['mirror-a.example/cache/busybox (mirror)', 'internal.example:5000/hub/busybox']);
    assert.deepEqual(names('docker.example', 'library/busybox', true), [
      'mirror-a.example/cache/busybox (mirror)',
      'mirror-b.example/busybox (mirror)',
      'internal.example:5000/hub/busybox',
    ]);
    assert.deepEqual(names('docker.example', 'team/app', false), ['mirror-c.example/team/app (mirror)', 'docker.example/team/app']);
    assert.deepEqual(names('docker.example', 'team/app', true), ['docker.example/team/app']);
    assert.deepEqual(names('docker.example', 'libraryx/app', true), ['docker.example/libraryx/app'], 'a prefix is a whole path component');
    assert.deepEqual(names('other.example', 'a/b', false), ['other.example/a/b'], 'no entry: the name as it is');
    assert.match(conf.problems.join('\n'), /wildcard prefixes are not supported/);
    assert.equal(resolveAlias(conf, 'busybox'), 'docker.example/library/busybox');
    assert.equal(resolveAlias(conf, 'busybox:1.36'), 'docker.example/library/busybox:1.36');
    assert.equal(resolveAlias(conf, `busybox@sha256:${'a'.repeat(64)}`), `docker.example/library/busybox@sha256:${'a'.repeat(64)}`);
    assert.equal(resolveAlias(conf, 'alpine'), undefined);
  });

  it('reads only $CONTAINERS_REGISTRIES_CONF when it is set, like podman', () => {
    assert.deepEqual(registriesConfFiles({ CONTAINERS_REGISTRIES_CONF: '/x/y.conf' }), ['/x/y.conf']);
    assert.equal(registriesConfFiles({})[0], '/etc/containers/registries.conf');
  });
});
