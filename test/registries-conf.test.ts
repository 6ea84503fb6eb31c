// The host's registries.conf, read as podman reads it (no root needed).
import * as assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { isBlocked, readRegistriesConf, registriesConfFiles } from '../src/images/registries-conf';

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

  it('reads only $CONTAINERS_REGISTRIES_CONF when it is set, like podman', () => {
    assert.deepEqual(registriesConfFiles({ CONTAINERS_REGISTRIES_CONF: '/x/y.conf' }), ['/x/y.conf']);
    assert.equal(registriesConfFiles({})[0], '/etc/containers/registries.conf');
  });
});
