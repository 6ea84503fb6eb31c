// Hostile image layers: each crafted tar (written with Python's tarfile)
// is unpacked into a directory inside a sandbox directory, and the test
// checks nothing landed outside the layer's directory and nothing unsafe
// was created inside it.
import * as assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { Readable } from 'node:stream';
import { gunzipSync } from 'node:zlib';
import * as os from 'node:os';
import * as path from 'node:path';
import { cleanPath, unpackLayer } from '../src/images/unpack';
import { isRoot } from './support/daemon';

/**
 * Writes a tar from a list of entries with Python's tarfile (which writes
 * whatever it is told, unlike a careful archiver). Entry: [type, name, extra].
 */
function makeTar(file: string, entries: unknown[], compression: '' | 'gz' = ''): void {
  const py = `
import tarfile, io, json, sys
entries = json.loads(sys.argv[2])
with tarfile.open(sys.argv[1], 'w:${compression}' if '${compression}' else 'w', format=tarfile.PAX_FORMAT) as t:
    for e in entries:
        kind, name = e[0], e[1]
        ti = tarfile.TarInfo(name)
        ti.mode = e[3] if len(e) > 3 else 0o644
        data = b''
        if kind == 'file':
            data = e[2].encode()
            ti.size = len(data)
        elif kind == 'dir':
            ti.type = tarfile.DIRTYPE
            ti.mode = e[3] if len(e) > 3 else 0o755
        elif kind == 'symlink':
            ti.type = tarfile.SYMTYPE
            ti.linkname = e[2]
        elif kind == 'hardlink':
            ti.type = tarfile.LNKTYPE
            ti.linkname = e[2]
        elif kind == 'chardev':
            ti.type = tarfile.CHRTYPE
            ti.devmajor, ti.devminor = 1, 3
        elif kind == 'fifo':
            ti.type = tarfile.FIFOTYPE
        elif kind == 'hugepax':
            ti.pax_headers = {'comment': 'x' * (2 * 1024 * 1024)}
            data = b'x'
            ti.size = 1
        if len(e) > 4:
            ti.uid, ti.gid = e[4], e[4]
        t.addfile(ti, io.BytesIO(data) if data else None)
`;
  execFileSync('python3', ['-c', py, file, JSON.stringify(entries)]);
}

describe('image layers: unpacking contains hostile tars', function () {
  this.timeout(60000);
  let sandbox: string;
  let layer: string;
  let tar: string;

  before(function () {
    if (!isRoot()) this.skip(); // ownership and whiteout device nodes need root
  });
  beforeEach(() => {
    sandbox = mkdtempSync(path.join(os.tmpdir(), 'osvirt-layer-'));
    layer = path.join(sandbox, 'layer');
    mkdirSync(layer);
    tar = path.join(sandbox, 'layer.tar');
  });
  afterEach(() => rmSync(sandbox, { recursive: true, force: true }));

  /** Everything in the sandbox outside the layer dir and the tar: must stay empty. */
  const outside = () => readdirSync(sandbox).filter((f) => f !== 'layer' && f !== 'layer.tar');

  it('cleans paths as if the layer were "/": ../ and absolute names land inside', async () => {
    makeTar(tar, [
      ['file', '../../escaped', 'x'],
      ['file', '/abs/file', 'y'],
      ['file', 'a/../../b', 'z'],
    ]);
    await unpackLayer(tar, 'none', layer);
    assert.deepEqual(outside(), []);
    assert.equal(readFileSync(path.join(layer, 'escaped'), 'utf8'), 'x');
    assert.equal(readFileSync(path.join(layer, 'abs/file'), 'utf8'), 'y');
    assert.equal(readFileSync(path.join(layer, 'b'), 'utf8'), 'z');
    assert.equal(cleanPath('../../../etc/passwd'), 'etc/passwd');
  });

  it('stores a symlink pointing outside as text, and refuses to write through it', async () => {
    makeTar(tar, [
      ['symlink', 'out', sandbox],
      ['file', 'out/planted', 'pwned'],
    ]);
    await assert.rejects(unpackLayer(tar, 'none', layer), /goes through the symlink "out"/);
    assert.ok(!existsSync(path.join(sandbox, 'planted')), 'nothing was written through the link');
    assert.equal(readlinkSync(path.join(layer, 'out')), sandbox);
  });

  it('refuses a hard link to a file outside the layer', async () => {
    makeTar(tar, [['hardlink', 'passwd', '/etc/passwd']]);
    await assert.rejects(unpackLayer(tar, 'none', layer), /target is not a regular file of this layer/);
    makeTar(tar, [['hardlink', 'up', '../layer.tar']]);
    await assert.rejects(unpackLayer(tar, 'none', layer), /target is not a regular file of this layer/);
    assert.ok(!existsSync(path.join(layer, 'passwd')) && !existsSync(path.join(layer, 'up')));
  });

  it('refuses a hard link through a symlink, and makes one to a file of the layer', async () => {
    makeTar(tar, [
      ['symlink', 'etc', '/etc'],
      ['hardlink', 'shadow', 'etc/passwd'],
    ]);
    await assert.rejects(unpackLayer(tar, 'none', layer), /goes through the symlink "etc"/);
    rmSync(layer, { recursive: true });
    mkdirSync(layer);
    makeTar(tar, [
      ['file', 'data', 'same'],
      ['hardlink', 'alias', 'data'],
    ]);
    await unpackLayer(tar, 'none', layer);
    assert.equal(statSync(path.join(layer, 'alias')).ino, statSync(path.join(layer, 'data')).ino);
  });

  it("creates no device nodes (a container's /dev is osvirt's), but fifos", async () => {
    makeTar(tar, [
      ['chardev', 'dev/mem-like'],
      ['fifo', 'pipe'],
    ]);
    const r = await unpackLayer(tar, 'none', layer);
    assert.ok(!existsSync(path.join(layer, 'dev/mem-like')));
    assert.match(r.skipped.join('\n'), /dev\/mem-like: a device node/);
    assert.ok(lstatSync(path.join(layer, 'pipe')).isFIFO());
  });

  it('keeps setuid bits and ownership as the layer says (the store is root-only)', async () => {
    makeTar(tar, [
      ['file', 'bin/su', '#!', 0o4755, 0],
      ['file', 'home/u/f', 'u', 0o640, 1000],
    ]);
    await unpackLayer(tar, 'none', layer);
    const su = statSync(path.join(layer, 'bin/su'));
    assert.equal(su.mode & 0o7777, 0o4755);
    const f = statSync(path.join(layer, 'home/u/f'));
    assert.equal(f.uid, 1000);
    assert.equal(f.mode & 0o777, 0o640);
  });

  it('refuses a metadata header over 1 MiB', async () => {
    makeTar(tar, [['hugepax', 'big']]);
    await assert.rejects(unpackLayer(tar, 'none', layer), /bad tar|meta/i);
  });

  it('turns OCI whiteouts into overlay whiteouts and opaque directories, and checks the diff_id', async () => {
    makeTar(
      tar,
      [
        ['dir', 'etc'],
        ['file', 'etc/.wh.gone', ''],
        ['dir', 'var/cache'],
        ['file', 'var/cache/.wh..wh..opq', ''],
        ['file', 'var/cache/new', 'n'],
      ],
      'gz',
    );
    const r = await unpackLayer(tar, 'gzip', layer);
    const wh = lstatSync(path.join(layer, 'etc/gone'));
    assert.ok(wh.isCharacterDevice() && wh.rdev === 0);
    assert.ok(!existsSync(path.join(layer, 'var/cache/.wh..wh..opq')));
    assert.match(
      execFileSync('getfattr', ['-n', 'trusted.overlay.opaque', '--only-values', path.join(layer, 'var/cache')], {
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'ignore'],
      }),
      /^y/,
    );
    const raw = execFileSync('sh', ['-c', `gzip -dc ${tar} | sha256sum`], { encoding: 'utf8' }).split(' ')[0];
    assert.equal(r.diffId, `sha256:${raw}`);
  });
});

describe('image layers: content comes out exactly as it went in', function () {
  this.timeout(60000);
  let work: string;
  before(function () {
    if (!isRoot()) return this.skip();
    work = mkdtempSync(path.join(os.tmpdir(), 'osvirt-layer-content-'));
    const src = path.join(work, 'src');
    mkdirSync(path.join(src, 'a', 'b'), { recursive: true });
    // Big and small files of random bytes: a write that kept a buffer the decompressor reuses would show.
    writeFileSync(path.join(src, 'big'), randomBytes(5 * 1048576 + 12345));
    writeFileSync(path.join(src, 'a', 'mid'), randomBytes(1048576));
    for (let i = 0; i < 20; i++) writeFileSync(path.join(src, 'a', 'b', `small${i}`), randomBytes(100 + i * 997));
    execFileSync('tar', ['-C', src, '-czf', path.join(work, 'layer.tar.gz'), '.']);
  });
  after(() => {
    if (work) rmSync(work, { recursive: true, force: true });
  });

  const digestOf = (file: string) => createHash('sha256').update(readFileSync(file)).digest('hex');
  const files = (dir: string): string[] =>
    readdirSync(dir, { recursive: true, encoding: 'utf8' })
      .filter((f) => statSync(path.join(dir, f)).isFile())
      .sort();

  for (const how of ['from the file', 'from a stream of odd-sized chunks']) {
    it(`unpacks a gzip layer ${how}: every file's bytes, and the diff_id of the tar`, async () => {
      const out = path.join(work, how.replace(/\W+/g, '-'));
      mkdirSync(out);
      const blob = path.join(work, 'layer.tar.gz');
      let source: string | Readable = blob;
      if (how !== 'from the file') {
        const bytes = readFileSync(blob);
        source = Readable.from(
          (function* () {
            for (let i = 0, n = 1; i < bytes.length; i += n, n = (n * 7 + 13) % 70000 || 1) yield bytes.subarray(i, i + n);
          })(),
        );
      }
      const r = await unpackLayer(source, 'gzip', out);
      const tarDigest = createHash('sha256')
        .update(gunzipSync(readFileSync(blob)))
        .digest('hex');
      assert.equal(r.diffId, `sha256:${tarDigest}`);
      const src = path.join(work, 'src');
      assert.deepEqual(files(out), files(src));
      for (const f of files(src)) assert.equal(digestOf(path.join(out, f)), digestOf(path.join(src, f)), f);
    });
  }
});
