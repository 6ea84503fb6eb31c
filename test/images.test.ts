// OCI images end to end against a real registry (Debian's docker-registry on
// loopback): images built with umoci and pushed with skopeo are pulled,
// inspected, run as containers with their own entrypoint, env, working
// directory and user, refused removal while used, removed and pruned.
import * as assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { promisify } from 'node:util';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ContainerSpec, ContainerState, PullPolicy, type DeepPartial } from '../src/gen/osvirt/v1/container';
import type { Image, PullImageResponse, PullImageRequest } from '../src/gen/osvirt/v1/image_service';
import { isRoot, TestDaemon, until, type Client } from './support/daemon';
import { execIn } from './support/exec';
import { haveImageTools, ImageBuilder, TestRegistry } from '../src/testing/registry';
import { repoPath } from '../src/paths';

/** A pull through the stream: the progress messages and the image. */
async function pull(c: Client, req: Partial<PullImageRequest>): Promise<{ progress: PullImageResponse[]; image: { $case: 'image'; value: Image } }> {
  const call = c.images.pullImage({ image: '', platform: undefined, ...req });
  const msgs: PullImageResponse[] = [];
  await new Promise<void>((resolve, reject) => {
    call.on('data', (m: PullImageResponse) => msgs.push(m));
    call.on('end', () => resolve());
    call.on('error', reject);
  });
  const last = msgs[msgs.length - 1]?.message;
  if (last?.$case !== 'image') throw new Error(`a pull ends with the image, not ${JSON.stringify(last)}`);
  return { progress: msgs.slice(0, -1), image: last };
}

async function code(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'OK';
  } catch (e) {
    // grpc-js's message is "<code> <NAME>: <details>"; keep the code and the details.
    return `${(e as { code?: number }).code} ${(e as Error).message.replace(/^\d+ [A-Z_]+: /, '')}`;
  }
}

/** ImportImage from a file: start, then the bytes. */
async function importFile(c: Client, file: string, name = ''): Promise<Image[]> {
  return new Promise((resolve, reject) => {
    const call = c.images.importImage((err: Error | null, r?: { images: Image[] }) => (err ? reject(err) : resolve(r!.images)));
    call.write({ message: { $case: 'start', value: { name } } });
    call.write({ message: { $case: 'data', value: readFileSync(file) } });
    call.end();
  });
}

/** ExportImage into a file. */
async function exportFile(c: Client, image: string, file: string): Promise<void> {
  const chunks: Buffer[] = [];
  await new Promise<void>((resolve, reject) => {
    const s = c.images.exportImage({ image });
    s.on('data', (m: { data: Buffer }) => chunks.push(m.data));
    s.on('end', () => resolve());
    s.on('error', reject);
  });
  writeFileSync(file, Buffer.concat(chunks));
}

const execFileP = promisify(execFile);

const imageSpec = (image: string, extra: DeepPartial<ContainerSpec> = {}) =>
  ContainerSpec.fromPartial({ driver: 'lxc', rootfs: { source: { $case: 'image', value: image } }, network: { mode: { $case: 'none', value: {} } }, ...extra });

describe('images from a real registry', function () {
  this.timeout(180000);
  let reg: TestRegistry;
  let builder: ImageBuilder;
  let d: TestDaemon;
  let c: Client;

  before(async function () {
    if (!isRoot()) return this.skip();
    const missing = haveImageTools();
    if (missing) return this.skip();
    reg = new TestRegistry({ logRequests: true });
    await reg.start();
    builder = new ImageBuilder();
    await builder.init();
    await builder.build('app', {
      entrypoint: ['/bin/sh', '-c'],
      cmd: ['echo "uid=$(id -u) gid=$(id -g) groups=$(id -G) cwd=$(pwd) greeting=$GREETING who=$WHO" > /tmp/report; exec sleep 1000'],
      env: ['GREETING=hello', 'WHO=image', 'PATH=/bin'],
      workdir: '/work',
      user: 'app',
      stopSignal: 'SIGUSR1',
    });
    await builder.build('amd', { cmd: ['/bin/sleep', '1000'], arch: 'amd64', marker: 'amd64' });
    await builder.build('arm', { cmd: ['/bin/sleep', '1000'], arch: 'arm64', marker: 'arm64' });
    builder.index('multi', [
      { tag: 'amd', architecture: 'amd64' },
      { tag: 'arm', architecture: 'arm64' },
    ]);
    await reg.push(builder.layout, 'app', 'test/app:v1');
    await reg.push(builder.layout, 'multi', 'test/multi:v1', true);
    d = new TestDaemon();
    c = await d.start(['--insecure-registry', reg.host]);
  });
  after(async () => {
    await d?.destroy();
    await reg?.stop();
    builder?.remove();
  });

  it('pulls an image with progress per layer, stores each blob verified and each layer unpacked once', async () => {
    const ref = `${reg.host}/test/app:v1`;
    const { progress, image } = await pull(c, { image: ref });
    assert.equal(image.$case, 'image');
    const img = image.value;
    assert.deepEqual(img.names, [ref]);
    assert.match(img.digest, /^sha256:[a-f0-9]{64}$/);
    assert.equal(img.layers.length, 2);
    assert.deepEqual(img.config?.entrypoint, ['/bin/sh', '-c']);
    assert.equal(img.config?.workingDir, '/work');
    assert.equal(img.config?.user, 'app');
    assert.equal(img.platform?.architecture, 'amd64');
    // Progress names every layer and ends each one "done".
    for (const l of img.layers)
      assert.ok(
        progress.some((m) => m.message?.$case === 'progress' && m.message.value.digest === l.digest && m.message.value.status === 'done'),
        `layer ${l.digest} done`,
      );
    const store = path.join(d.stateDir, 'images');
    assert.equal(statSync(store).mode & 0o777, 0o700, 'the store is root-only');
    for (const l of img.layers) {
      assert.ok(existsSync(path.join(store, 'blobs', 'sha256', l.digest.slice(7))), 'the compressed layer is kept');
      assert.ok(existsSync(path.join(store, 'layers', l.diffId.slice(7))), 'the layer is unpacked under its diff_id');
    }
    // The second layer's whiteout is an overlay whiteout (a 0/0 character device).
    const top = path.join(store, 'layers', img.layers[1]!.diffId.slice(7));
    const wh = statSync(path.join(top, 'etc', 'removed'));
    assert.ok(wh.isCharacterDevice() && wh.rdev === 0, 'etc/removed is a whiteout');
    // Pulling again fetches nothing: every blob "exists".
    const again = await pull(c, { image: ref });
    assert.ok(
      again.progress.every((m) => m.message?.$case === 'progress' && m.message.value.status === 'exists'),
      again.progress.map((m) => (m.message?.$case === 'progress' ? `${m.message.value.digest} ${m.message.value.status}` : '')).join(', '),
    );
    assert.equal(again.image.value.digest, img.digest);
    const listed = (await c.api.images.listImages({})).images.map((i) => i.names[0]);
    assert.deepEqual(listed, [ref]);
  });

  it('runs a container from the image with its entrypoint, env, working directory and user, the spec overriding each', async () => {
    const ref = `${reg.host}/test/app:v1`;
    const ct = (await c.api.containers.createContainer({ name: 'fromimg', spec: imageSpec(ref, { process: { env: ['WHO=spec'] } }) })).container!;
    assert.equal(ct.spec?.rootfs?.imageDigest, (await c.api.images.getImage({ image: ref })).image!.digest, 'the container is pinned to the image digest');
    assert.equal(ct.spec?.stopSignal, 10, 'StopSignal SIGUSR1');
    const pid = (await c.api.containers.startContainer({ name: 'fromimg' })).container!.status!.initPid;
    const report = await until(() => readFileSync(`/proc/${pid}/root/tmp/report`, 'utf8'), 'the entrypoint to write its report');
    assert.equal(report.trim(), 'uid=1000 gid=1000 groups=1000 2000 cwd=/work greeting=hello who=spec');
    // The root is an overlay of the image's layers (the host sees it), with the whiteout applied.
    const mnt = readFileSync('/proc/self/mountinfo', 'utf8')
      .split('\n')
      .find((l) => l.split(' ')[4] === path.join(d.stateDir, 'drivers', 'lxc', 'containers', 'fromimg', 'rootfs'));
    assert.match(mnt ?? '', / - overlay /, 'an overlay root');
    assert.equal((await execIn(c, 'fromimg', ['/bin/cat', '/etc/removed'])).exitCode, 1, 'the deleted file stays deleted');
    assert.equal((await execIn(c, 'fromimg', ['/bin/cat', '/etc/marker'])).stdout.trim(), 'app');
    // The user's own idmapped view: files of uid 1000 in the image are uid 1000 inside.
    assert.match((await execIn(c, 'fromimg', ['/bin/sh', '-c', 'ls -ldn /work'])).stdout, /^d\S+\s+\d+\s+1000\s+1000 /);
    // The shared layers are not written: a file made inside lands in the container's own upper layer.
    await execIn(c, 'fromimg', ['/bin/sh', '-c', 'echo mine > /tmp/own']);
    assert.ok(existsSync(path.join(d.stateDir, 'drivers', 'lxc', 'containers', 'fromimg', 'upper', 'tmp', 'own')));
  });

  it("runs a jail and a vserver guest from the image: the image's process is the jail's command and the guest's plain init", async () => {
    try {
      const ref = `${reg.host}/test/app:v1`;
      const expected = 'uid=1000 gid=1000 groups=1000 2000 cwd=/work greeting=hello who=image';
      // A jail without persist lives as long as the image's process runs.
      await c.api.containers.createContainer({ name: 'jailimg', spec: imageSpec(ref, { driver: 'jail', network: undefined }) });
      const jpid = (await c.api.containers.startContainer({ name: 'jailimg' })).container!.status!.initPid;
      assert.equal((await until(() => readFileSync(`/proc/${jpid}/root/tmp/report`, 'utf8'), "the jail command's report")).trim(), expected);
      assert.equal(readFileSync(`/proc/${jpid}/root/etc/marker`, 'utf8').trim(), 'app', "the jail's root is the image");
      // A jail that names its own command does not run the image's.
      await c.api.containers.createContainer({
        name: 'jailown',
        spec: imageSpec(ref, {
          driver: 'jail',
          network: undefined,
          driverOptions: { $case: 'jail', value: { command: ['/bin/sh', '-c', 'echo own > /tmp/own'] } },
        }),
      });
      const opid = (await c.api.containers.startContainer({ name: 'jailown' })).container!.status!.initPid;
      assert.equal(opid > 0, true);
      const own = await until(
        async () => (await c.api.containers.getContainer({ name: 'jailown' })).container!.status!.state === ContainerState.CONTAINER_STATE_STOPPED || undefined,
        'the jail to end with its command',
      );
      assert.ok(own);
      assert.ok(!existsSync(path.join(d.stateDir, 'drivers', 'jail', 'containers', 'jailown', 'upper', 'tmp', 'report')), 'the image process did not run');
      assert.equal(readFileSync(path.join(d.stateDir, 'drivers', 'jail', 'containers', 'jailown', 'upper', 'tmp', 'own'), 'utf8').trim(), 'own');
      // A vserver guest runs the image's process as its init (style plain).
      await c.api.containers.createContainer({
        name: 'vsimg',
        spec: imageSpec(ref, { driver: 'vserver', network: undefined, driverOptions: { $case: 'vserver', value: { context: 391 } } }),
      });
      const vpid = (await c.api.containers.startContainer({ name: 'vsimg' })).container!.status!.initPid;
      assert.equal((await until(() => readFileSync(`/proc/${vpid}/root/tmp/report`, 'utf8'), "the guest's report")).trim(), expected);
      assert.deepEqual(readFileSync(`/proc/${vpid}/cmdline`, 'utf8').split('\0').slice(0, 2), ['sleep', '1000'], "the guest's init is the image's process");
      assert.deepEqual((await c.api.images.getImage({ image: ref })).image!.usedBy.sort(), ['fromimg', 'jailimg', 'jailown', 'vsimg']);
    } finally {
      for (const name of ['jailimg', 'jailown', 'vsimg']) await c.api.containers.deleteContainer({ name, force: true, allowMissing: true });
    }
  });

  it('refuses to remove an image a container uses, naming it; then removes and prunes what nothing references', async () => {
    const ref = `${reg.host}/test/app:v1`;
    assert.match(await code(c.api.images.removeImage({ image: ref, allowMissing: false, force: false })), /^9 .*"fromimg"/);
    assert.deepEqual((await c.api.images.getImage({ image: ref })).image!.usedBy, ['fromimg']);
    await c.api.containers.deleteContainer({ name: 'fromimg', force: true, allowMissing: false });
    const store = path.join(d.stateDir, 'images');
    const before = { blobs: readdirSync(path.join(store, 'blobs', 'sha256')).length, layers: readdirSync(path.join(store, 'layers')).length };
    await c.api.images.removeImage({ image: ref, allowMissing: false, force: false });
    assert.match(await code(c.api.images.getImage({ image: ref })), /^5 /);
    const r = await c.api.images.pruneImages({ all: false });
    assert.equal(r.layers, 2);
    assert.equal(r.blobs, 4, 'manifest, config and two layers');
    assert.ok(r.reclaimedBytes > 1_000_000n, 'busybox is a megabyte or two');
    assert.equal(readdirSync(path.join(store, 'blobs', 'sha256')).length, before.blobs - 4);
    assert.equal(readdirSync(path.join(store, 'layers')).length, before.layers - 2);
    assert.equal(await code(c.api.images.removeImage({ image: ref, allowMissing: true, force: false })), 'OK');
  });

  it('picks the host platform from an index, another on request, and lists what there is when none matches', async () => {
    const ref = `${reg.host}/test/multi:v1`;
    const host = (await pull(c, { image: ref })).image.value;
    assert.equal(host.platform?.architecture, 'amd64');
    const arm = (await pull(c, { image: ref, platform: { os: 'linux', architecture: 'arm64', variant: '' } })).image.value;
    assert.equal(arm.platform?.architecture, 'arm64');
    assert.notEqual(arm.digest, host.digest);
    assert.match(
      await code(pull(c, { image: ref, platform: { os: 'linux', architecture: 's390x', variant: '' } })),
      /^9 .*no image for linux\/s390x; it has: linux\/amd64, linux\/arm64/,
    );
    await c.api.images.pruneImages({ all: true });
    assert.deepEqual((await c.api.images.listImages({})).images, []);
  });

  it('answers bad references and missing images clearly, and creates nothing', async () => {
    // A short name no registries.conf alias names (the host's may alias busybox, as podman's shortnames.conf does).
    assert.match(await code(pull(c, { image: 'osvirt-unaliased' })), /^3 image: image reference .*names no registry host/);
    assert.match(await code(pull(c, { image: `${reg.host}/test/app:NO TAG` })), /^3 image: /);
    assert.match(await code(pull(c, { image: `${reg.host}/test/nothing:v1` })), /^5 /);
    assert.match(await code(pull(c, { image: `${reg.host}/test/app:v9` })), /^5 /);
    assert.match(await code(c.api.containers.createContainer({ name: 'badimg', spec: imageSpec('osvirt-unaliased') })), /^3 spec\.rootfs\.image: /);
    assert.match(
      await code(
        c.api.containers.createContainer({
          name: 'badimg',
          spec: imageSpec(`${reg.host}/test/app:v1`, {
            rootfs: { source: { $case: 'image', value: `${reg.host}/test/app:v1` }, pullPolicy: PullPolicy.PULL_POLICY_NEVER },
          }),
        }),
      ),
      /^9 spec\.rootfs\.image: .*pull policy is never/,
    );
    const list = await c.api.containers.listContainers({ pageSize: 100, pageToken: '', driver: '', states: [] });
    assert.deepEqual(
      list.containers.map((x) => x.name),
      [],
    );
  });

  it('imports docker-archive and oci-archive tars written by skopeo, exports one that imports again, and runs it', async () => {
    const dockerTar = path.join(builder.dir, 'app-docker.tar');
    const ociTar = path.join(builder.dir, 'app-oci.tar');
    await execFileP('skopeo', ['copy', '--quiet', `oci:${builder.layout}:app`, `docker-archive:${dockerTar}:${reg.host}/imported/app:v2`]);
    await execFileP('skopeo', ['copy', '--quiet', `oci:${builder.layout}:app`, `oci-archive:${ociTar}:${reg.host}/oci/app:v3`]);
    const [fromDocker] = await importFile(c, dockerTar);
    assert.deepEqual(fromDocker!.names, [`${reg.host}/imported/app:v2`]);
    assert.deepEqual(fromDocker!.config?.entrypoint, ['/bin/sh', '-c']);
    assert.equal(fromDocker!.layers.length, 2);
    const [fromOci] = await importFile(c, ociTar);
    assert.deepEqual(fromOci!.names, [`${reg.host}/oci/app:v3`]);
    // The same layers, stored once: both images' diff_ids are one set of directories.
    assert.deepEqual(
      fromOci!.layers.map((l) => l.diffId),
      fromDocker!.layers.map((l) => l.diffId),
    );
    // Export, forget, import again: the same image.
    const back = path.join(builder.dir, 'exported.tar');
    await exportFile(c, `${reg.host}/oci/app:v3`, back);
    await c.api.images.removeImage({ image: `${reg.host}/oci/app:v3`, allowMissing: false, force: false });
    await c.api.images.removeImage({ image: `${reg.host}/imported/app:v2`, allowMissing: false, force: false });
    await c.api.images.pruneImages({ all: true });
    const [again] = await importFile(c, back);
    assert.equal(again!.digest, fromOci!.digest);
    await c.api.containers.createContainer({
      name: 'imported',
      spec: imageSpec(`${reg.host}/oci/app:v3`, {
        rootfs: { source: { $case: 'image', value: `${reg.host}/oci/app:v3` }, pullPolicy: PullPolicy.PULL_POLICY_NEVER },
      }),
    });
    const pid = (await c.api.containers.startContainer({ name: 'imported' })).container!.status!.initPid;
    assert.match(await until(() => readFileSync(`/proc/${pid}/root/tmp/report`, 'utf8'), 'the imported image to run'), /uid=1000 .*who=image/);
    await c.api.containers.deleteContainer({ name: 'imported', force: true, allowMissing: false });
    // Garbage is refused, naming the field, and stores nothing.
    const junk = path.join(builder.dir, 'junk.tar');
    writeFileSync(junk, 'this is not a tar archive at all'.repeat(100));
    assert.match(await code(importFile(c, junk)), /^3 data: /);
    assert.deepEqual(readdirSync(path.join(d.stateDir, 'images', 'tmp')), []);
  });

  it('shares the downloads of two concurrent pulls of one image, and a prune in between takes nothing they need', async () => {
    const ref = `${reg.host}/test/app:v1`;
    await c.api.images.pruneImages({ all: true });
    const img = (await c.api.images.listImages({})).images;
    assert.deepEqual(img, []);
    const before = new Map<string, number>();
    const layers = (await pull(c, { image: ref })).image.value.layers;
    await c.api.images.removeImage({ image: ref, allowMissing: false, force: false });
    await c.api.images.pruneImages({ all: true });
    for (const l of layers) before.set(l.digest, reg.blobGets(l.digest));
    const [a, b] = await Promise.all([pull(c, { image: ref }), pull(c, { image: ref }), c.api.images.pruneImages({ all: true })]);
    assert.equal(a.image.value.digest, b.image.value.digest);
    for (const l of layers) assert.equal(reg.blobGets(l.digest) - before.get(l.digest)!, 1, `layer ${l.digest} fetched once for both pulls`);
    // Everything the image needs is still there: a container starts from it.
    await c.api.containers.createContainer({ name: 'shared', spec: imageSpec(ref) });
    await c.api.containers.startContainer({ name: 'shared' });
    await c.api.containers.deleteContainer({ name: 'shared', force: true, allowMissing: false });
  });

  it("reads the host's registries.conf: insecure without the daemon flag, blocked refused, the search list named for a short name", async () => {
    const conf = path.join(builder.dir, 'registries.conf');
    writeFileSync(
      conf,
      [
        `unqualified-search-registries = ["${reg.host}"]`,
        '[[registry]]',
        `location = "${reg.host}"`,
        'insecure = true',
        '[[registry]]',
        `location = "${reg.host}/blocked"`,
        'blocked = true',
        // Nothing listens on port 1: images under this prefix come from the mirror.
        '[[registry]]',
        'prefix = "127.0.0.1:1/mirrored"',
        'location = "127.0.0.1:1/mirrored"',
        '[[registry.mirror]]',
        `location = "${reg.host}/test"`,
        '[aliases]',
        `"app" = "${reg.host}/test/app"`,
        '',
      ].join('\n'),
    );
    process.env['CONTAINERS_REGISTRIES_CONF'] = conf;
    const d2 = new TestDaemon();
    try {
      const c2 = await d2.start();
      delete process.env['CONTAINERS_REGISTRIES_CONF'];
      assert.equal((await pull(c2, { image: `${reg.host}/test/app:v1` })).image.value.layers.length, 2);
      assert.match(await code(pull(c2, { image: `${reg.host}/blocked/app:v1` })), /^7 .*blocked in the host's registries\.conf/);
      assert.match(await code(pull(c2, { image: 'test/app:v1' })), new RegExp(`^3 image: .*e\\.g\\. "${reg.host.replace(/\./g, '\\.')}/test/app:v1"`));
      const mirrored = (await pull(c2, { image: '127.0.0.1:1/mirrored/app:v1' })).image.value;
      assert.ok(mirrored.names.includes('127.0.0.1:1/mirrored/app:v1'), 'listed under the name asked for, pulled from the mirror');
      const aliased = (await pull(c2, { image: 'app:v1' })).image.value;
      assert.ok(aliased.names.includes(`${reg.host}/test/app:v1`), 'a short name with an alias is its alias');
      assert.ok(!aliased.names.includes('app:v1'));
      assert.equal(aliased.digest, mirrored.digest);
      assert.equal((await c2.api.images.getImage({ image: 'app:v1' })).image!.digest, mirrored.digest);
    } finally {
      delete process.env['CONTAINERS_REGISTRIES_CONF'];
      await d2.destroy();
    }
  });

  it('refuses a blob whose content does not match its digest, and keeps nothing of it', async () => {
    const ref = `${reg.host}/test/app:v1`;
    const img = (await pull(c, { image: ref })).image.value;
    await c.api.images.removeImage({ image: ref, allowMissing: false, force: false });
    await c.api.images.pruneImages({ all: true });
    const layer = img.layers[0]!;
    const file = reg.blobFile(layer.digest);
    const good = readFileSync(file);
    const bad = Buffer.from(good);
    bad[bad.length >> 1] = (bad[bad.length >> 1] ?? 0) ^ 0xff;
    writeFileSync(file, bad);
    try {
      assert.match(await code(pull(c, { image: ref })), /^15 .*has the digest sha256:/);
      const store = path.join(d.stateDir, 'images');
      assert.ok(!existsSync(path.join(store, 'blobs', 'sha256', layer.digest.slice(7))), 'the bad blob is not kept');
      assert.deepEqual(readdirSync(path.join(store, 'tmp')), [], 'no partial unpack is left');
      assert.deepEqual(readdirSync(path.join(store, 'partial')), [], 'no partial download of a wrong blob is left');
      assert.ok(!existsSync(path.join(store, 'layers', layer.diffId.slice(7))));
    } finally {
      writeFileSync(file, good);
    }
    await pull(c, { image: ref });
  });
});

/**
 * A test double in front of the real registry: a loopback HTTP proxy that
 * breaks off big blob downloads (over 512 KiB) after `cutAfter` bytes, the
 * next `cuts` times, and records the Range header of every big blob request.
 */
class CuttingProxy {
  private server?: http.Server;
  port = 0;
  cuts = 0;
  cutAfter = 128 * 1024;
  /** Per blob path: the Range header of each request (undefined: the whole blob). */
  readonly ranges = new Map<string, (string | undefined)[]>();
  /** Bytes of big blobs sent. */
  served = 0;

  constructor(private readonly upstream: string) {}

  get host(): string {
    return `127.0.0.1:${this.port}`;
  }

  async start(): Promise<void> {
    const [uhost, uport] = this.upstream.split(':');
    this.server = http.createServer((req, res) => {
      const up = http.request(
        { host: uhost, port: Number(uport), path: req.url, method: req.method, headers: { ...req.headers, host: this.upstream } },
        (ur) => {
          // The blob's whole size: a 206's Content-Range total, else its length.
          const total = Number(/\/(\d+)$/.exec(String(ur.headers['content-range'] ?? ''))?.[1] ?? ur.headers['content-length'] ?? 0);
          const big = !!req.url?.includes('/blobs/') && total > 512 * 1024;
          if (big) this.ranges.set(req.url!, [...(this.ranges.get(req.url!) ?? []), req.headers.range]);
          res.writeHead(ur.statusCode ?? 502, ur.headers);
          if (!big || this.cuts <= 0) {
            if (big) ur.on('data', (c: Buffer) => (this.served += c.length));
            ur.pipe(res);
            return;
          }
          this.cuts--;
          let n = 0;
          ur.on('data', (chunk: Buffer) => {
            if (n >= this.cutAfter) return;
            const part = chunk.subarray(0, this.cutAfter - n);
            n += part.length;
            this.served += part.length;
            const last = n >= this.cutAfter;
            res.write(part);
            if (last) {
              // A FIN after what was written (not a reset, which could drop it): the client is short of Content-Length.
              ur.destroy();
              res.socket?.end();
            }
          });
        },
      );
      up.on('error', () => res.destroy());
      req.pipe(up);
    });
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    this.port = (this.server.address() as AddressInfo).port;
  }

  async stop(): Promise<void> {
    this.server?.closeAllConnections();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }
}

describe('an interrupted pull resumes where it broke off', function () {
  this.timeout(180000);
  let reg: TestRegistry;
  let proxy: CuttingProxy;
  let builder: ImageBuilder;
  let d: TestDaemon;
  let c: Client;
  let ref = '';
  let partialDir = '';
  let pauses = '';

  before(async function () {
    if (!isRoot()) return this.skip();
    if (haveImageTools()) return this.skip();
    reg = new TestRegistry();
    await reg.start();
    builder = new ImageBuilder();
    await builder.init();
    // Incompressible filler: two big layers (busybox's and 2 MiB of random bytes).
    await builder.build('big', { cmd: ['/bin/sleep', '1000'], fill: { layers: 1, mib: 2 } });
    await reg.push(builder.layout, 'big', 'test/big:v1');
    proxy = new CuttingProxy(reg.host);
    await proxy.start();
    ref = `${proxy.host}/test/big:v1`;
    d = new TestDaemon();
    pauses = mkdtempSync(path.join(os.tmpdir(), 'osvirt-pauses-'));
    process.env['OSVIRT_PAUSE_DIR'] = pauses;
    process.env['OSVIRT_PAUSE_POINTS'] = 'create.after-prepare:racer';
    try {
      c = await d.start(['--insecure-registry', proxy.host]);
    } finally {
      delete process.env['OSVIRT_PAUSE_DIR'];
      delete process.env['OSVIRT_PAUSE_POINTS'];
    }
    partialDir = path.join(d.stateDir, 'images', 'partial');
  });
  after(async () => {
    await d?.destroy();
    if (pauses) rmSync(pauses, { recursive: true, force: true });
    await proxy?.stop();
    await reg?.stop();
    builder?.remove();
  });

  it('resumes a download that broke off with a Range request, within the same pull', async () => {
    proxy.cuts = 1;
    const img = (await pull(c, { image: ref })).image.value;
    const resumed = [...proxy.ranges.values()].find((r) => r.length === 2);
    assert.ok(resumed, `one blob was asked for twice: ${JSON.stringify([...proxy.ranges])}`);
    assert.equal(resumed[0], undefined, 'first the whole blob');
    assert.equal(resumed[1], `bytes=${proxy.cutAfter}-`, 'then the rest of it');
    const big = img.layers.filter((l) => l.sizeBytes > 512n * 1024n).reduce((n, l) => n + Number(l.sizeBytes), 0);
    assert.equal(proxy.served, big, 'no byte was sent twice');
    assert.deepEqual(readdirSync(partialDir), [], 'nothing partial is left');
    await c.api.images.removeImage({ image: ref, allowMissing: false, force: false });
    await c.api.images.pruneImages({ all: true });
  });

  it('keeps what a failed pull downloaded for the next pull to resume; prune removes it', async () => {
    proxy.ranges.clear();
    proxy.cuts = 1000;
    assert.match(await code(pull(c, { image: ref })), /^14 .*broke off/);
    const kept = () => Object.fromEntries(readdirSync(partialDir).map((f) => [f, statSync(path.join(partialDir, f)).size]));
    const first = kept();
    assert.ok(Object.keys(first).length > 0, 'the broken-off downloads are kept');
    for (const [f, size] of Object.entries(first)) assert.equal(size, 4 * proxy.cutAfter, `${f}: four attempts, each resumed where the last broke off`);
    assert.deepEqual(
      readdirSync(path.join(d.stateDir, 'images', 'blobs', 'sha256')).filter((f) => f in first),
      [],
      'none of them is trusted as a blob',
    );
    const pruned = await c.api.images.pruneImages({ all: true });
    assert.ok(pruned.reclaimedBytes >= BigInt(Object.keys(first).length * 4 * proxy.cutAfter));
    assert.deepEqual(readdirSync(partialDir), [], 'prune removes what no pull is resuming');

    assert.match(await code(pull(c, { image: ref })), /^14 /);
    const second = kept();
    proxy.ranges.clear();
    proxy.cuts = 0;
    const img = (await pull(c, { image: ref })).image.value;
    for (const [f, size] of Object.entries(second)) {
      const asked = [...proxy.ranges].find(([url]) => url.endsWith(f));
      assert.deepEqual(asked?.[1], [`bytes=${size}-`], `${f} resumed at byte ${size}`);
    }
    assert.deepEqual(readdirSync(partialDir), []);
    for (const l of img.layers) assert.ok(existsSync(path.join(d.stateDir, 'images', 'layers', l.diffId.slice(7))));
  });
  it('keeps an image a create has pulled from a prune until the container is recorded', async () => {
    proxy.cuts = 0;
    await c.api.images.pruneImages({ all: true });
    assert.deepEqual((await c.api.images.listImages({})).images, []);
    // The create pulls the image, then is held before it records the container.
    let failed: unknown;
    const created = c.api.containers.createContainer({ name: 'racer', spec: imageSpec(ref) });
    created.catch((e: unknown) => (failed = e));
    await until(() => {
      if (failed) throw new Error(`the create failed: ${String(failed)}`);
      return existsSync(path.join(pauses, 'create.after-prepare.paused'));
    }, 'the create to pause after its pull');
    const pruned = await c.api.images.pruneImages({ all: true });
    assert.deepEqual(pruned.images, [], 'the image the create holds is not pruned');
    writeFileSync(path.join(pauses, 'create.after-prepare.go'), '');
    const ct = (await created).container!;
    const pid = (await c.api.containers.startContainer({ name: 'racer' })).container!.status!.initPid;
    assert.equal(readFileSync(`/proc/${pid}/root/etc/marker`, 'utf8').trim(), 'big', 'the container runs on the image');
    assert.deepEqual((await c.api.images.getImage({ image: ref })).image!.usedBy, ['racer']);
    // Once recorded, the container's spec holds the image: still not pruned, now by use.
    assert.deepEqual((await c.api.images.pruneImages({ all: true })).images, []);
    await c.api.containers.deleteContainer({ name: 'racer', force: true, allowMissing: false });
    assert.deepEqual((await c.api.images.pruneImages({ all: true })).images, [ct.spec!.rootfs!.imageDigest]);
  });
});

describe('images from a registry with TLS and basic auth', function () {
  this.timeout(120000);
  let reg: TestRegistry;
  let builder: ImageBuilder;
  let d: TestDaemon | undefined;
  let certs = '';
  let authFile = '';

  before(async function () {
    if (!isRoot()) return this.skip();
    if (haveImageTools()) return this.skip();
    reg = new TestRegistry({ tls: true, user: 'alice', password: 's3cret' });
    await reg.start();
    builder = new ImageBuilder();
    await builder.init();
    await builder.build('app', { cmd: ['/bin/sleep', '1000'] });
    await reg.push(builder.layout, 'app', 'private/app:v1');
    // The host's own registry configuration: the registry's CA where podman and docker look for it.
    certs = path.join('/etc/containers/certs.d', reg.host);
    mkdirSync(certs, { recursive: true });
    writeFileSync(path.join(certs, 'ca.crt'), readFileSync(reg.ca!));
    authFile = path.join(reg.dir, 'auth.json');
  });
  afterEach(async () => {
    await d?.destroy();
    d = undefined;
    delete process.env['REGISTRY_AUTH_FILE'];
  });
  after(async () => {
    if (certs) rmSync(certs, { recursive: true, force: true });
    await reg?.stop();
    builder?.remove();
  });

  it('is refused without credentials (UNAUTHENTICATED), and pulls with those of an auth.json', async () => {
    d = new TestDaemon();
    let c = await d.start();
    assert.match(await code(pull(c, { image: `${reg.host}/private/app:v1` })), /^16 .*user name and password/);
    await d.destroy();
    writeFileSync(authFile, JSON.stringify({ auths: { [reg.host]: { auth: Buffer.from('alice:wrong').toString('base64') } } }));
    process.env['REGISTRY_AUTH_FILE'] = authFile;
    d = new TestDaemon();
    c = await d.start();
    assert.match(await code(pull(c, { image: `${reg.host}/private/app:v1` })), /^16 .*refused the stored credentials/);
    await d.destroy();
    writeFileSync(authFile, JSON.stringify({ auths: { [reg.host]: { auth: Buffer.from('alice:s3cret').toString('base64') } } }));
    d = new TestDaemon();
    c = await d.start();
    const img = (await pull(c, { image: `${reg.host}/private/app:v1` })).image.value;
    assert.equal(img.layers.length, 2);
    await c.api.containers.createContainer({ name: 'private', spec: imageSpec(`${reg.host}/private/app:v1`) });
    const st = (await c.api.containers.startContainer({ name: 'private' })).container!.status!;
    assert.equal(ContainerState[st.state], 'CONTAINER_STATE_RUNNING');
  });

  it('osvirt login checks the password against the registry and keeps it for pulls; logout forgets it', async () => {
    d = new TestDaemon();
    const c = await d.start();
    const cli = (args: string[], input = '') => {
      try {
        return {
          code: 0,
          out: execFileSync(repoPath('bin', 'osvirt'), ['--connect', `unix://${d!.socket}`, ...args], {
            input,
            encoding: 'utf8',
            stdio: ['pipe', 'pipe', 'pipe'],
          }),
        };
      } catch (e) {
        return { code: (e as { status: number }).status, out: String((e as { stderr?: string }).stderr) };
      }
    };
    const bad = cli(['login', reg.host, '-u', 'alice', '--password-stdin'], 'wrong\n');
    assert.notEqual(bad.code, 0);
    assert.match(bad.out, /UNAUTHENTICATED/);
    assert.ok(!existsSync(path.join(d.stateDir, 'images', 'auth.json')), 'refused credentials are not stored');
    const good = cli(['login', reg.host, '-u', 'alice', '--password-stdin'], 's3cret\n');
    assert.equal(good.code, 0, good.out);
    const auth = path.join(d.stateDir, 'images', 'auth.json');
    assert.equal(statSync(auth).mode & 0o777, 0o600);
    assert.equal(
      (JSON.parse(readFileSync(auth, 'utf8')) as { auths: Record<string, { auth: string }> }).auths[reg.host]!.auth,
      Buffer.from('alice:s3cret').toString('base64'),
    );
    assert.equal((await pull(c, { image: `${reg.host}/private/app:v1` })).image.value.layers.length, 2);
    assert.equal(cli(['logout', reg.host]).code, 0);
    await c.api.images.pruneImages({ all: true });
    assert.match(await code(pull(c, { image: `${reg.host}/private/app:v1` })), /^16 /);
  });

  it('does not trust a registry whose CA is not configured', async () => {
    rmSync(certs, { recursive: true, force: true });
    try {
      d = new TestDaemon();
      const c = await d.start();
      assert.match(await code(pull(c, { image: `${reg.host}/private/app:v1` })), /^14 .*certs\.d/);
    } finally {
      mkdirSync(certs, { recursive: true });
      writeFileSync(path.join(certs, 'ca.crt'), readFileSync(reg.ca!));
    }
  });
});
