// The image store, under <state>/images (0700, root only):
//
//   blobs/sha256/<hex>     manifests, configs and compressed layers, each
//                          verified against its digest before it is kept
//   layers/<hex>/          a layer unpacked (named by its diff_id), read-only
//                          and shared as an overlay lower layer
//   tmp/                   downloads and unpacks in progress; renamed into
//                          place when verified, emptied at start
//   images.json            the images: manifest digest -> names, config, layers
//
// Nothing half-done is ever trusted: a blob is renamed into blobs/ only after
// its digest matched, a layer into layers/ only after its diff_id did.
import { createHash, randomBytes } from 'node:crypto';
import { copyFileSync, createReadStream, createWriteStream, existsSync, promises as fs, readFileSync } from 'node:fs';
import { PassThrough, Readable, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { create as tarCreate, extract as tarExtract } from 'tar';
import * as path from 'node:path';
import type { Logger } from 'pino';
import { writeFileAtomic } from '../core/atomic-file';
import { KeyedMutex } from '../core/keyed-mutex';
import { OsvirtError, errorMessage, invalidArgument } from '../core/errors';
import type { Image, ImageConfig, Platform, PullProgress } from '../gen/osvirt/v1/image_service';
import { formatReference, HOST_RE, nameOf, parseReference, type Reference } from './reference';
import { MEDIA, RegistryClient, RegistryError, readAuthFiles, type Credentials } from './registry';
import { compressionOf, LayerError, unpackLayer } from './unpack';
import { endpoints, isBlocked, resolveAlias, readRegistriesConf, registriesConfFiles, type RegistriesConf } from './registries-conf';

/** images.json's record of one image. */
interface ImageRecord {
  digest: string;
  names: string[];
  configDigest: string;
  platform: { os: string; architecture: string; variant: string };
  config: ImageConfig;
  layers: { digest: string; size: number; mediaType: string; diffId: string }[];
  size: number;
  created?: string;
  pullTime: string;
}

interface Descriptor {
  mediaType?: string;
  digest: string;
  size: number;
  platform?: { os?: string; architecture?: string; variant?: string };
}

/** The host's platform in the OCI spelling. */
export function hostPlatform(): Platform {
  const arch =
    ({ x64: 'amd64', arm64: 'arm64', arm: 'arm', ia32: '386', ppc64: 'ppc64le', s390x: 's390x', riscv64: 'riscv64' } as Record<string, string>)[process.arch] ??
    process.arch;
  return { os: 'linux', architecture: arch, variant: arch === 'arm' ? 'v7' : '' };
}

const hex = (digest: string) => digest.replace(/^sha256:/, '');

export interface ImageStoreOptions {
  insecureRegistries?: string[];
  /** The host's registries.conf (default: read from registriesConfFiles()). */
  registriesConf?: RegistriesConf;
  /** auth.json / config.json files to read credentials from, first match wins. */
  authFiles?: string[];
  certDirs?: string[];
  logger: Logger;
}

export class ImageStore {
  private readonly registry: RegistryClient;
  private readonly lock = new KeyedMutex();
  /** Downloads and unpacks in flight, by blob digest: two pulls share one. */
  private readonly inflight = new Map<string, Promise<void>>();
  private readonly credentials: Map<string, Credentials>;
  private readonly conf: RegistriesConf;
  private readonly insecure: string[];

  constructor(
    readonly root: string,
    private readonly opts: ImageStoreOptions,
  ) {
    this.credentials = readAuthFiles([this.authFile(), ...(opts.authFiles ?? defaultAuthFiles())]);
    this.conf = opts.registriesConf ?? readRegistriesConf(registriesConfFiles());
    for (const p of this.conf.problems) opts.logger.warn({ problem: p }, 'cannot read a registries.conf file');
    this.insecure = [...(opts.insecureRegistries ?? []), ...this.conf.insecure];
    this.registry = new RegistryClient({
      insecure: this.insecure,
      credentials: (h) => this.credentials.get(h),
      ...(opts.certDirs ? { certDirs: opts.certDirs } : {}),
    });
  }

  /** Where Login keeps credentials: read first, before the host's auth files. */
  private authFile(): string {
    return path.join(this.root, 'auth.json');
  }

  /** Checks credentials against a registry and keeps them for its pulls. */
  async login(host: string, username: string, password: string): Promise<void> {
    if (!host || !HOST_RE.test(host)) throw invalidArgument('registry', `"${host}" is not a registry host[:port]`);
    if (!username) throw invalidArgument('username', 'is required');
    if (!password) throw invalidArgument('password', 'is required');
    const probe = new RegistryClient({
      insecure: this.insecure,
      credentials: () => ({ username, password }),
      ...(this.opts.certDirs ? { certDirs: this.opts.certDirs } : {}),
    });
    try {
      await probe.ping(host);
    } catch (e) {
      throw asOsvirtError(e, host);
    } finally {
      probe.close();
    }
    await this.lock.run('auth.json', async () => {
      const doc = this.readOwnAuth();
      doc.auths[host] = { auth: Buffer.from(`${username}:${password}`).toString('base64') };
      await writeFileAtomic(this.authFile(), JSON.stringify(doc, null, 2) + '\n', 0o600);
      this.credentials.set(host, { username, password });
      this.registry.forget(host);
    });
  }

  /** Forgets what login stored for a registry (the host's own auth files still count). */
  async logout(host: string): Promise<void> {
    if (!host || !HOST_RE.test(host)) throw invalidArgument('registry', `"${host}" is not a registry host[:port]`);
    await this.lock.run('auth.json', async () => {
      const doc = this.readOwnAuth();
      delete doc.auths[host];
      await writeFileAtomic(this.authFile(), JSON.stringify(doc, null, 2) + '\n', 0o600);
      this.credentials.delete(host);
      const fallback = readAuthFiles(this.opts.authFiles ?? defaultAuthFiles()).get(host);
      if (fallback) this.credentials.set(host, fallback);
      this.registry.forget(host);
    });
  }

  private readOwnAuth(): { auths: Record<string, { auth: string }> } {
    try {
      const doc = JSON.parse(readFileSync(this.authFile(), 'utf8')) as { auths?: Record<string, { auth: string }> };
      return { auths: doc.auths ?? {} };
    } catch {
      return { auths: {} };
    }
  }

  async init(): Promise<void> {
    // partial/ keeps broken-off downloads for the next pull to resume (nothing there is trusted before its digest matches).
    for (const d of ['', 'blobs/sha256', 'layers', 'partial']) await fs.mkdir(path.join(this.root, d), { recursive: true, mode: 0o700 });
    await fs.chmod(this.root, 0o700);
    // Whatever a killed daemon was downloading or unpacking is not trusted.
    await fs.rm(path.join(this.root, 'tmp'), { recursive: true, force: true });
    await fs.mkdir(path.join(this.root, 'tmp'), { mode: 0o700 });
  }

  close(): void {
    this.registry.close();
  }

  private partialPath(digest: string): string {
    return path.join(this.root, 'partial', hex(digest));
  }

  private blobPath(digest: string): string {
    return path.join(this.root, 'blobs', 'sha256', hex(digest));
  }

  /** The unpacked layer directory of a diff_id. */
  layerPath(diffId: string): string {
    return path.join(this.root, 'layers', hex(diffId));
  }

  private readRecords(): Record<string, ImageRecord> {
    try {
      return (JSON.parse(readFileSync(path.join(this.root, 'images.json'), 'utf8')) as { images: Record<string, ImageRecord> }).images;
    } catch {
      return {};
    }
  }

  private async writeRecords(images: Record<string, ImageRecord>): Promise<void> {
    await writeFileAtomic(path.join(this.root, 'images.json'), JSON.stringify({ images }, null, 2) + '\n', 0o600);
  }

  /** A reference's parse, or INVALID_ARGUMENT naming `field`. */
  static parse(text: string, field: string): Reference {
    try {
      return parseReference(text);
    } catch (e) {
      throw invalidArgument(field, `image reference ${errorMessage(e)}`);
    }
  }

  /** parse(), naming the host's search registries when a short name is refused. */
  parseRef(text: string, field: string): Reference {
    try {
      return ImageStore.parse(resolveAlias(this.conf, text) ?? text, field);
    } catch (e) {
      if (this.conf.search.length && /names no registry host/.test(errorMessage(e))) {
        throw invalidArgument(
          field,
          `image reference "${text}" names no registry host; osvirt does not guess one: write it out, e.g. "${this.conf.search[0]}/${text}" (registries.conf searches ${this.conf.search.join(', ')})`,
        );
      }
      throw e;
    }
  }

  /** The stored image a name, digest or digest prefix (12+ hex digits) means, if any. */
  find(text: string): ImageRecord | undefined {
    const images = this.readRecords();
    const d = text.replace(/^sha256:/, '');
    if (/^[a-f0-9]{12,64}$/.test(d)) {
      const hits = Object.values(images).filter((i) => hex(i.digest).startsWith(d) || hex(i.configDigest).startsWith(d));
      if (hits.length === 1) return hits[0];
      if (hits.length > 1)
        throw new OsvirtError('INVALID_ARGUMENT', 'AMBIGUOUS_IMAGE', `"${text}" matches ${hits.length} images; give more digits`, [
          { field: 'image', description: 'ambiguous' },
        ]);
    }
    let name = text;
    try {
      const r = parseReference(resolveAlias(this.conf, text) ?? text);
      if (r.digest) return images[r.digest];
      name = nameOf(r);
    } catch {
      // not a reference: only a digest could match
    }
    return Object.values(images).find((i) => i.names.includes(name));
  }

  list(): ImageRecord[] {
    return Object.values(this.readRecords()).sort((a, b) => (a.names[0] ?? a.digest).localeCompare(b.names[0] ?? b.digest));
  }

  /** The layer directories of a stored image, top first (overlayfs's lowerdir order). */
  layerDirs(digest: string): string[] {
    const rec = this.readRecords()[digest];
    if (!rec) throw new OsvirtError('FAILED_PRECONDITION', 'IMAGE_NOT_FOUND', `image ${digest} is not in the store (removed and pruned?)`);
    const dirs = rec.layers.map((l) => this.layerPath(l.diffId)).reverse();
    for (const d of dirs)
      if (!existsSync(d))
        throw new OsvirtError(
          'FAILED_PRECONDITION',
          'IMAGE_INCOMPLETE',
          `layer ${path.basename(d)} of image ${digest} is missing from the store; pull the image again`,
        );
    return dirs;
  }

  /**
   * Pulls `text` (INVALID_ARGUMENT names `field` when it is not a reference):
   * the manifest, the platform's entry of an index, the config and the
   * layers not stored yet. `progress` is told about each blob.
   */
  /**
   * Pulls and imports add blobs and layers before they record the image that
   * owns them; prune must not take those. Writers (pull, import) run side by
   * side; prune waits for them and holds new ones back while it works.
   */
  private writers = new Set<Promise<unknown>>();
  private pruning: Promise<unknown> | undefined;

  private async asWriter<T>(fn: () => Promise<T>): Promise<T> {
    while (this.pruning) await this.pruning.catch(() => undefined);
    const p = fn();
    this.writers.add(p);
    try {
      return await p;
    } finally {
      this.writers.delete(p);
    }
  }

  pull(text: string, field: string, platform: Platform | undefined, progress: (p: PullProgress) => void = () => undefined): Promise<ImageRecord> {
    return this.asWriter(() => this.pullNow(text, field, platform, progress));
  }

  /**
   * Digests a create is using before its container is recorded (the
   * container's spec then names the image): prune keeps them. Taken under the
   * images.json lock, as prune decides under it.
   */
  private readonly pins = new Map<string, number>();

  private pin(digest: string): { release: () => void } {
    this.pins.set(digest, (this.pins.get(digest) ?? 0) + 1);
    let done = false;
    return {
      release: () => {
        if (done) return;
        done = true;
        const n = (this.pins.get(digest) ?? 1) - 1;
        if (n > 0) this.pins.set(digest, n);
        else this.pins.delete(digest);
      },
    };
  }

  /** A stored image, pinned; undefined when it is not stored. */
  pinned(text: string): Promise<{ rec: ImageRecord; release: () => void } | undefined> {
    return this.lock.run('images.json', async () => {
      const rec = this.find(text);
      return rec ? { rec, ...this.pin(rec.digest) } : undefined;
    });
  }

  /** A pull whose image is pinned as it is recorded (prune cannot come between). */
  async pullPinned(text: string, field: string): Promise<{ rec: ImageRecord; release: () => void }> {
    let held: { release: () => void } | undefined;
    const rec = await this.asWriter(() =>
      this.pullNow(
        text,
        field,
        undefined,
        () => undefined,
        (r) => (held = this.pin(r.digest)),
      ),
    );
    return { rec, release: held!.release };
  }

  private async pullNow(
    text: string,
    field: string,
    platform: Platform | undefined,
    progress: (p: PullProgress) => void,
    onRecorded?: (rec: ImageRecord) => void,
  ): Promise<ImageRecord> {
    const ref = this.parseRef(text, field);
    const blocked = isBlocked(this.conf, ref.host, ref.repository);
    if (blocked)
      throw new OsvirtError('PERMISSION_DENIED', 'REGISTRY_BLOCKED', `pull ${text}: "${blocked}" is blocked in the host's registries.conf`, [], {
        image: text,
      });
    const want =
      platform?.os || platform?.architecture
        ? { os: platform.os || 'linux', architecture: platform.architecture || hostPlatform().architecture, variant: platform.variant }
        : hostPlatform();
    try {
      // Mirrors first, then the (rewritten) location: the first that has the manifest serves the whole pull.
      const tried: string[] = [];
      let src: Reference | undefined;
      let m: Awaited<ReturnType<RegistryClient['manifest']>> | undefined;
      let firstError: unknown;
      for (const e of endpoints(this.conf, ref.host, ref.repository, !!ref.digest)) {
        const at: Reference = { ...ref, host: e.host, repository: e.repository };
        try {
          m = await this.registry.manifest(at, ref.digest ?? ref.tag!);
          src = at;
          if (tried.length) this.opts.logger.info({ image: text, from: `${e.host}/${e.repository}`, failed: tried }, 'pulling from a later endpoint');
          break;
        } catch (err) {
          firstError ??= err;
          tried.push(`${e.host}/${e.repository}: ${errorMessage(err)}`);
          if (!e.mirror) throw err;
        }
      }
      if (!src || !m) throw firstError;
      const from = src;
      let doc = JSON.parse(m.bytes.toString('utf8')) as { manifests?: Descriptor[]; config?: Descriptor; layers?: Descriptor[] };
      if (m.mediaType === MEDIA.ociIndex || m.mediaType === MEDIA.dockerList || (doc.manifests && !doc.config)) {
        const entries = (doc.manifests ?? []).filter((x) => x.platform);
        const pick = entries.find(
          (x) =>
            x.platform!.os === want.os &&
            x.platform!.architecture === want.architecture &&
            (!want.variant || !x.platform!.variant || x.platform!.variant === want.variant),
        );
        if (!pick) {
          const there = entries.map((x) => [x.platform!.os, x.platform!.architecture, x.platform!.variant].filter(Boolean).join('/')).join(', ');
          throw new OsvirtError(
            'FAILED_PRECONDITION',
            'NO_MATCHING_PLATFORM',
            `${formatReference(ref)} has no image for ${[want.os, want.architecture, want.variant].filter(Boolean).join('/')}; it has: ${there || 'none'}`,
          );
        }
        m = await this.registry.manifest(from, pick.digest);
        doc = JSON.parse(m.bytes.toString('utf8')) as typeof doc;
      }
      if (!(m.mediaType === MEDIA.ociManifest || m.mediaType === MEDIA.dockerManifest) || !doc.config || !doc.layers) {
        throw new OsvirtError('FAILED_PRECONDITION', 'UNSUPPORTED_MEDIA_TYPE', `${formatReference(ref)}: unsupported manifest media type "${m.mediaType}"`);
      }
      const manifestDigest = m.digest;
      const manifestBytes = m.bytes;
      for (const l of doc.layers) compressionOf(l.mediaType ?? '');
      await this.keepBytes(manifestDigest, manifestBytes);
      await this.fetch(from, doc.config, progress);
      const config = JSON.parse(await fs.readFile(this.blobPath(doc.config.digest), 'utf8')) as OciConfig;
      const diffIds = config.rootfs?.diff_ids ?? [];
      if (diffIds.length !== doc.layers.length)
        throw new OsvirtError(
          'DATA_LOSS',
          'IMAGE_INCONSISTENT',
          `${formatReference(ref)}: the config lists ${diffIds.length} layers, the manifest ${doc.layers.length}`,
        );
      const layers = doc.layers.map((l, i) => ({ digest: l.digest, size: l.size, mediaType: l.mediaType ?? '', diffId: diffIds[i]! }));
      // Three at a time, like podman's default.
      const queue = [...layers];
      const worker = async () => {
        for (let l = queue.shift(); l; l = queue.shift()) {
          try {
            await this.layer(from, l, progress);
          } catch (e) {
            queue.length = 0; // the others take no new layer
            throw e;
          }
        }
      };
      // Every worker finishes (or fails) before the pull answers: a failed pull leaves nothing in flight.
      const settled = await Promise.allSettled([worker(), worker(), worker()]);
      const failed = settled.find((r): r is PromiseRejectedResult => r.status === 'rejected');
      if (failed) throw failed.reason;
      const rec: ImageRecord = {
        digest: manifestDigest,
        names: [nameOf(ref)],
        configDigest: doc.config.digest,
        platform: { os: config.os ?? want.os, architecture: config.architecture ?? want.architecture, variant: config.variant ?? '' },
        config: imageConfig(config),
        layers,
        size: layers.reduce((n, l) => n + l.size, 0),
        ...(config.created ? { created: config.created } : {}),
        pullTime: new Date().toISOString(),
      };
      return await this.register(rec, onRecorded);
    } catch (e) {
      throw asOsvirtError(e, text);
    }
  }

  /** Records an image whose blobs and layers are all in place; its names move off any other image. */
  private register(rec: ImageRecord, onRecorded?: (rec: ImageRecord) => void): Promise<ImageRecord> {
    return this.lock.run('images.json', async () => {
      const images = this.readRecords();
      // A tag names one image: it moves off the one it named before.
      for (const other of Object.values(images)) if (other.digest !== rec.digest) other.names = other.names.filter((n) => !rec.names.includes(n));
      const old = images[rec.digest];
      if (old) rec.names = [...new Set([...old.names, ...rec.names])];
      images[rec.digest] = rec;
      await this.writeRecords(images);
      onRecorded?.(rec);
      return rec;
    });
  }

  /**
   * Imports an oci-archive or docker-archive read from `data`; `nameOf`
   * (asked once the archive is in) may name the image(s) instead of the
   * archive's own names.
   */
  importArchive(data: AsyncIterable<Buffer>, givenName: () => string): Promise<ImageRecord[]> {
    return this.asWriter(() => this.importNow(data, givenName));
  }

  private async importNow(data: AsyncIterable<Buffer>, givenName: () => string): Promise<ImageRecord[]> {
    const work = path.join(this.root, 'tmp', `import-${randomBytes(6).toString('hex')}`);
    const file = `${work}.tar`;
    await fs.mkdir(work, { mode: 0o700 });
    try {
      const out = createWriteStream(file, { mode: 0o600 });
      await pipeline(Readable.from(data), out);
      const name = givenName();
      if (name) ImageStore.parse(name, 'start.name');
      try {
        // Only files and directories; node-tar keeps every path inside `work`.
        await tarExtract({
          file,
          cwd: work,
          strict: true,
          filter: (_p, e) => 'type' in e && (e.type === 'File' || e.type === 'Directory' || e.type === 'OldFile'),
        });
      } catch (e) {
        throw invalidArgument('data', `not a tar archive: ${errorMessage(e)}`);
      }
      if (existsSync(path.join(work, 'index.json')) && existsSync(path.join(work, 'oci-layout'))) return await this.importOci(work, name);
      if (existsSync(path.join(work, 'manifest.json'))) return await this.importDocker(work, name);
      throw invalidArgument('data', 'neither an oci-archive (oci-layout and index.json) nor a docker-archive (manifest.json)');
    } catch (e) {
      throw asOsvirtError(e, 'the archive');
    } finally {
      await fs.rm(work, { recursive: true, force: true });
      await fs.rm(file, { force: true });
    }
  }

  /** A blob of an unpacked archive, verified and moved (copied) into blobs/. */
  private async adopt(file: string, digest: string, size?: number): Promise<void> {
    if (existsSync(this.blobPath(digest))) return;
    const st = await fs.stat(file).catch(() => undefined);
    if (!st) throw invalidArgument('data', `the archive lacks blob ${digest}`);
    if (size !== undefined && st.size !== size)
      throw new OsvirtError('DATA_LOSS', 'SIZE_MISMATCH', `blob ${digest} has ${st.size} bytes, its descriptor says ${size}`);
    const got = await sha256File(file);
    if (got !== digest) throw new OsvirtError('DATA_LOSS', 'DIGEST_MISMATCH', `blob ${digest} of the archive has the digest ${got}`);
    await fs.rename(file, this.blobPath(digest));
  }

  /** Stores an image given its manifest bytes, whose blobs `blobFile` finds in the archive. */
  private async importManifest(bytes: Buffer, names: string[], blobFile: (digest: string) => string): Promise<ImageRecord> {
    const digest = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
    const doc = JSON.parse(bytes.toString('utf8')) as { config?: Descriptor; layers?: Descriptor[] };
    if (!doc.config || !doc.layers) throw invalidArgument('data', `manifest ${digest} has no config or layers`);
    for (const l of doc.layers) compressionOf(l.mediaType ?? '');
    await this.keepBytes(digest, bytes);
    await this.adopt(blobFile(doc.config.digest), doc.config.digest, doc.config.size);
    const config = JSON.parse(await fs.readFile(this.blobPath(doc.config.digest), 'utf8')) as OciConfig;
    const diffIds = config.rootfs?.diff_ids ?? [];
    if (diffIds.length !== doc.layers.length)
      throw new OsvirtError('DATA_LOSS', 'IMAGE_INCONSISTENT', `image ${digest}: the config lists ${diffIds.length} layers, the manifest ${doc.layers.length}`);
    const layers = doc.layers.map((l, i) => ({ digest: l.digest, size: l.size, mediaType: l.mediaType ?? '', diffId: diffIds[i]! }));
    for (const l of layers)
      await this.unpacked(
        l,
        () => this.adopt(blobFile(l.digest), l.digest, l.size),
        () => undefined,
      );
    return this.register({
      digest,
      names,
      configDigest: doc.config.digest,
      platform: { os: config.os ?? 'linux', architecture: config.architecture ?? '', variant: config.variant ?? '' },
      config: imageConfig(config),
      layers,
      size: layers.reduce((n, l) => n + l.size, 0),
      ...(config.created ? { created: config.created } : {}),
      pullTime: new Date().toISOString(),
    });
  }

  private async importOci(work: string, name: string): Promise<ImageRecord[]> {
    const blobFile = (d: string) => path.join(work, 'blobs', 'sha256', hex(d));
    const index = JSON.parse(await fs.readFile(path.join(work, 'index.json'), 'utf8')) as {
      manifests?: (Descriptor & { annotations?: Record<string, string> })[];
    };
    const out: ImageRecord[] = [];
    for (const desc of index.manifests ?? []) {
      let bytes = await fs.readFile(blobFile(desc.digest)).catch(() => undefined);
      if (!bytes) throw invalidArgument('data', `the archive lacks manifest ${desc.digest}`);
      if (`sha256:${createHash('sha256').update(bytes).digest('hex')}` !== desc.digest)
        throw new OsvirtError('DATA_LOSS', 'DIGEST_MISMATCH', `manifest ${desc.digest} of the archive does not match its digest`);
      let mediaType = desc.mediaType ?? (JSON.parse(bytes.toString('utf8')) as { mediaType?: string }).mediaType ?? MEDIA.ociManifest;
      if (mediaType === MEDIA.ociIndex || mediaType === MEDIA.dockerList) {
        const inner = (JSON.parse(bytes.toString('utf8')) as { manifests?: Descriptor[] }).manifests ?? [];
        const want = hostPlatform();
        const pick =
          inner.find((x) => x.platform?.os === want.os && x.platform?.architecture === want.architecture) ?? (inner.length === 1 ? inner[0] : undefined);
        if (!pick) throw new OsvirtError('FAILED_PRECONDITION', 'NO_MATCHING_PLATFORM', `the archive's index has no image for ${want.os}/${want.architecture}`);
        bytes = await fs.readFile(blobFile(pick.digest)).catch(() => undefined);
        if (!bytes) throw invalidArgument('data', `the archive lacks manifest ${pick.digest}`);
        mediaType = pick.mediaType ?? MEDIA.ociManifest;
      }
      const ann = desc.annotations ?? {};
      const refName = ann['io.containerd.image.name'] ?? ann['org.opencontainers.image.ref.name'] ?? '';
      let n = name;
      if (!n && refName) {
        try {
          n = nameOf(parseReference(refName));
        } catch {
          // a bare tag: no registry host to name it by
        }
      }
      if (!n)
        throw invalidArgument(
          'start.name',
          `the archive does not name its image with a full reference ("${refName || 'no name'}"); give start.name (HOST/REPO:TAG)`,
        );
      out.push(await this.importManifest(bytes, [nameOf(parseReference(n))], blobFile));
    }
    if (!out.length) throw invalidArgument('data', "the archive's index.json lists no image");
    return out;
  }

  private async importDocker(work: string, name: string): Promise<ImageRecord[]> {
    const list = JSON.parse(await fs.readFile(path.join(work, 'manifest.json'), 'utf8')) as { Config: string; RepoTags?: string[] | null; Layers: string[] }[];
    const out: ImageRecord[] = [];
    for (const m of list) {
      const inside = (rel: string) => {
        const p = path.join(work, path.posix.normalize('/' + rel));
        return p;
      };
      const configFile = inside(m.Config);
      const configDigest = await sha256File(configFile);
      const layers: Descriptor[] = [];
      const files = new Map<string, string>([[configDigest, configFile]]);
      for (const rel of m.Layers) {
        const f = inside(rel);
        const digest = await sha256File(f);
        const head = Buffer.alloc(4);
        const fh = await fs.open(f, 'r');
        await fh.read(head, 0, 4, 0);
        await fh.close();
        const gz = head[0] === 0x1f && head[1] === 0x8b;
        const zst = head.readUInt32LE(0) === 0xfd2fb528;
        layers.push({
          mediaType: gz
            ? 'application/vnd.docker.image.rootfs.diff.tar.gzip'
            : zst
              ? 'application/vnd.oci.image.layer.v1.tar+zstd'
              : 'application/vnd.docker.image.rootfs.diff.tar',
          digest,
          size: (await fs.stat(f)).size,
        });
        files.set(digest, f);
      }
      const manifest = Buffer.from(
        JSON.stringify({
          schemaVersion: 2,
          mediaType: MEDIA.dockerManifest,
          config: { mediaType: MEDIA.dockerConfig, size: (await fs.stat(configFile)).size, digest: configDigest },
          layers,
        }),
      );
      const names = name
        ? [nameOf(parseReference(name))]
        : (m.RepoTags ?? []).flatMap((t) => {
            try {
              return [nameOf(parseReference(t))];
            } catch {
              return [];
            }
          });
      if (!names.length)
        throw invalidArgument(
          'start.name',
          `the archive names its image ${JSON.stringify(m.RepoTags ?? [])}, not with a full reference; give start.name (HOST/REPO:TAG)`,
        );
      // A layer file may appear twice (the same layer in two images): copy, do not move, each time it is needed.
      out.push(
        await this.importManifest(manifest, names, (d) => {
          const f = files.get(d) ?? '';
          const copy = `${f}.${randomBytes(3).toString('hex')}`;
          if (f) copyFileSync(f, copy);
          return copy;
        }),
      );
    }
    return out;
  }

  /** A stored image as an oci-archive (an OCI image layout in a tar), streamed. */
  async exportArchive(text: string): Promise<Readable> {
    const rec = this.find(text);
    if (!rec) throw new OsvirtError('NOT_FOUND', 'IMAGE_NOT_FOUND', `image "${text}" not found`, [], { image: text });
    const work = path.join(this.root, 'tmp', `export-${randomBytes(6).toString('hex')}`);
    await fs.mkdir(path.join(work, 'blobs', 'sha256'), { recursive: true, mode: 0o700 });
    const manifest = await fs.readFile(this.blobPath(rec.digest));
    const mediaType = (JSON.parse(manifest.toString('utf8')) as { mediaType?: string }).mediaType ?? MEDIA.ociManifest;
    for (const d of [rec.digest, rec.configDigest, ...rec.layers.map((l) => l.digest)]) {
      const to = path.join(work, 'blobs', 'sha256', hex(d));
      if (!existsSync(to)) await fs.link(this.blobPath(d), to);
    }
    await fs.writeFile(path.join(work, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
    const annotations = rec.names[0] ? { 'org.opencontainers.image.ref.name': rec.names[0], 'io.containerd.image.name': rec.names[0] } : undefined;
    await fs.writeFile(
      path.join(work, 'index.json'),
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MEDIA.ociIndex,
        manifests: [{ mediaType, digest: rec.digest, size: manifest.length, ...(annotations ? { annotations } : {}) }],
      }),
    );
    const stream = tarCreate({ cwd: work, portable: true }, ['oci-layout', 'index.json', 'blobs']) as unknown as Readable;
    const cleanup = () => void fs.rm(work, { recursive: true, force: true });
    stream.once('end', cleanup);
    stream.once('error', cleanup);
    stream.once('close', cleanup);
    return stream;
  }

  private async keepBytes(digest: string, bytes: Buffer): Promise<void> {
    if (existsSync(this.blobPath(digest))) return;
    const tmp = path.join(this.root, 'tmp', `${hex(digest)}.${randomBytes(4).toString('hex')}`);
    await fs.writeFile(tmp, bytes, { mode: 0o600 });
    await fs.rename(tmp, this.blobPath(digest));
  }

  /** A blob into blobs/, downloaded once even when several pulls want it; `tee` gets its bytes as they come. */
  private fetch(ref: Reference, d: Descriptor, progress: (p: PullProgress) => void, tee?: Writable): Promise<void> {
    if (existsSync(this.blobPath(d.digest))) {
      tee?.destroy(new Error('the blob is stored'));
      progress({ digest: d.digest, status: 'exists', bytesDone: BigInt(d.size), bytesTotal: BigInt(d.size) });
      return Promise.resolve();
    }
    const key = `blob ${d.digest}`;
    let p = this.inflight.get(key);
    if (p) tee?.destroy(new Error('another pull downloads the blob'));
    else {
      p = (async () => {
        // One partial file per blob (one download of it at a time: this map), resumed by the next pull if this one breaks off.
        const tmp = this.partialPath(d.digest);
        let last = 0;
        // Only a download from the first byte can feed a reader along the way.
        const along = tee && !existsSync(tmp) ? tee : undefined;
        if (tee && !along) tee.destroy(new Error('resuming a partial download'));
        await this.registry.blob(
          ref,
          d.digest,
          d.size,
          tmp,
          (done) => {
            // At most every 256 KiB, and the end.
            if (done - last >= 256 * 1024 || done === d.size) {
              last = done;
              progress({ digest: d.digest, status: 'downloading', bytesDone: BigInt(done), bytesTotal: BigInt(d.size) });
            }
          },
          along,
        );
        await fs.rename(tmp, this.blobPath(d.digest));
        progress({ digest: d.digest, status: 'verified', bytesDone: BigInt(d.size), bytesTotal: BigInt(d.size) });
      })().finally(() => this.inflight.delete(key));
      this.inflight.set(key, p);
    }
    return p;
  }

  /** A layer downloaded (if need be) and unpacked into layers/<diff_id>, unpacked as it downloads when it can be. */
  private async layer(ref: Reference, l: ImageRecord['layers'][number], progress: (p: PullProgress) => void): Promise<void> {
    await this.unpacked(l, (tee) => this.fetch(ref, { digest: l.digest, size: l.size }, progress, tee), progress);
  }

  /**
   * A layer unpacked into layers/<diff_id>, its blob brought into blobs/ by
   * `blob` first, or at the same time: a fresh download is unpacked as its
   * bytes come (`blob` feeds the stream it is given, or destroys it when it
   * cannot: the blob was stored, another pull downloads it, a partial
   * download resumes). The layer is renamed into place only once the blob's
   * digest and the layer's diff_id both matched; when the unpack along the
   * download did not finish, the verified blob is unpacked again from its file.
   */
  private async unpacked(l: ImageRecord['layers'][number], blob: (tee?: Writable) => Promise<void>, progress: (p: PullProgress) => void): Promise<void> {
    if (existsSync(this.layerPath(l.diffId)) && existsSync(this.blobPath(l.digest))) {
      progress({ digest: l.digest, status: 'exists', bytesDone: BigInt(l.size), bytesTotal: BigInt(l.size) });
      return;
    }
    const key = `layer ${l.diffId}`;
    if (existsSync(this.layerPath(l.diffId)) || this.inflight.has(key)) {
      // The blob too, also when another image's blob (say, differently compressed) gave the same layer: export needs it.
      await blob();
      await this.inflight.get(key);
      progress({ digest: l.digest, status: 'done', bytesDone: BigInt(l.size), bytesTotal: BigInt(l.size) });
      return;
    }
    const p = (async () => {
      const tmp = path.join(this.root, 'tmp', `layer-${hex(l.diffId).slice(0, 16)}.${randomBytes(4).toString('hex')}`);
      await fs.mkdir(tmp, { mode: 0o755 });
      try {
        const along = new PassThrough({ highWaterMark: 1 << 20 });
        along.on('error', () => undefined); // its failures come back through the two promises
        // A blob function that did not feed the stream (an import adopting its file) ends it here, unfinished.
        const fed = blob(along).finally(() => {
          if (!along.writableEnded) along.destroy(new Error('the layer was not streamed'));
        });
        const [got, unpacked] = await Promise.allSettled([fed, unpackLayer(along, compressionOf(l.mediaType), tmp)]);
        if (got.status === 'rejected') throw got.reason;
        let r = unpacked.status === 'fulfilled' ? unpacked.value : undefined;
        if (!r) {
          // The stream was not fed (or broke off and resumed): unpack the verified blob.
          await fs.rm(tmp, { recursive: true, force: true });
          await fs.mkdir(tmp, { mode: 0o755 });
          progress({ digest: l.digest, status: 'unpacking', bytesDone: BigInt(l.size), bytesTotal: BigInt(l.size) });
          r = await unpackLayer(this.blobPath(l.digest), compressionOf(l.mediaType), tmp);
        }
        if (r.diffId !== l.diffId)
          throw new OsvirtError('DATA_LOSS', 'DIGEST_MISMATCH', `layer ${l.digest} unpacks to ${r.diffId}, the image config says ${l.diffId}`);
        if (r.skipped.length) this.opts.logger.info({ layer: l.digest, skipped: r.skipped.slice(0, 20) }, 'entries of a layer not unpacked');
        await fs.rename(tmp, this.layerPath(l.diffId));
      } catch (e) {
        await fs.rm(tmp, { recursive: true, force: true });
        throw e;
      }
      progress({ digest: l.digest, status: 'done', bytesDone: BigInt(l.size), bytesTotal: BigInt(l.size) });
    })().finally(() => this.inflight.delete(key));
    this.inflight.set(key, p);
    await p;
  }

  /**
   * Removes a name (or, by digest, the image with all its names). `usedBy`
   * lists the containers created from an image digest.
   */
  async remove(text: string, force: boolean, usedBy: (digest: string) => string[]): Promise<boolean> {
    return this.lock.run('images.json', async () => {
      const rec = this.find(text);
      if (!rec) return false;
      const users = usedBy(rec.digest);
      if (users.length && !force)
        throw new OsvirtError(
          'FAILED_PRECONDITION',
          'IMAGE_IN_USE',
          `image ${rec.names[0] ?? rec.digest} is the root filesystem of ${users.map((u) => `"${u}"`).join(', ')}; delete them first, or remove it with force`,
          [],
          { containers: users.join(',') },
        );
      const images = this.readRecords();
      let byName = '';
      try {
        const r = parseReference(text);
        if (!r.digest) byName = nameOf(r);
      } catch {
        // a digest
      }
      const r = images[rec.digest]!;
      r.names = byName ? r.names.filter((n) => n !== byName) : [];
      // Nameless but used (force): kept, so its layers stay for its containers; prune removes it once unused.
      if (!r.names.length && !users.length) delete images[rec.digest];
      await this.writeRecords(images);
      return true;
    });
  }

  /**
   * Removes images with no name that no container uses (`inUse`: digests of
   * the images containers were created from), with `all` every image no
   * container uses, then the blobs and layers no image left references.
   */
  async prune(all: boolean, inUse: Set<string>): Promise<{ images: string[]; blobs: number; layers: number; reclaimed: number }> {
    while (this.pruning) await this.pruning.catch(() => undefined);
    const p = (async () => {
      await Promise.allSettled([...this.writers]);
      return this.pruneNow(all, inUse);
    })();
    this.pruning = p;
    try {
      return await p;
    } finally {
      if (this.pruning === p) this.pruning = undefined;
    }
  }

  private async pruneNow(all: boolean, inUse: Set<string>): Promise<{ images: string[]; blobs: number; layers: number; reclaimed: number }> {
    return this.lock.run('images.json', async () => {
      const images = this.readRecords();
      const removed: string[] = [];
      for (const [d, rec] of Object.entries(images)) {
        if (inUse.has(d) || this.pins.has(d) || (rec.names.length && !all)) continue;
        removed.push(d);
        delete images[d];
      }
      if (removed.length) await this.writeRecords(images);
      const keepLayers = new Set<string>();
      const keepBlobs = new Set<string>();
      for (const rec of Object.values(images)) {
        keepBlobs.add(hex(rec.digest));
        keepBlobs.add(hex(rec.configDigest));
        for (const l of rec.layers) {
          keepBlobs.add(hex(l.digest));
          keepLayers.add(hex(l.diffId));
        }
      }
      let blobs = 0;
      let layers = 0;
      let reclaimed = 0;
      for (const f of await fs.readdir(path.join(this.root, 'blobs', 'sha256'))) {
        if (keepBlobs.has(f)) continue;
        const p = path.join(this.root, 'blobs', 'sha256', f);
        reclaimed += (await fs.stat(p)).size;
        await fs.rm(p, { force: true });
        blobs++;
      }
      for (const f of await fs.readdir(path.join(this.root, 'layers'))) {
        if (keepLayers.has(f)) continue;
        reclaimed += await du(path.join(this.root, 'layers', f));
        await fs.rm(path.join(this.root, 'layers', f), { recursive: true, force: true });
        layers++;
      }
      // Broken-off downloads no pull is resuming now.
      for (const f of await fs.readdir(path.join(this.root, 'partial'))) {
        if (this.inflight.has(`blob sha256:${f}`)) continue;
        const p = path.join(this.root, 'partial', f);
        reclaimed += (await fs.stat(p).catch(() => ({ size: 0 }))).size;
        await fs.rm(p, { force: true });
      }
      return { images: removed, blobs, layers, reclaimed };
    });
  }

  /** The API's view of a record. */
  static toImage(rec: ImageRecord, usedBy: string[]): Image {
    return {
      names: rec.names,
      digest: rec.digest,
      configDigest: rec.configDigest,
      platform: rec.platform,
      config: rec.config,
      layers: rec.layers.map((l) => ({ digest: l.digest, sizeBytes: BigInt(l.size), mediaType: l.mediaType, diffId: l.diffId })),
      sizeBytes: BigInt(rec.size),
      ...(rec.created && !Number.isNaN(Date.parse(rec.created)) ? { created: new Date(rec.created) } : {}),
      pullTime: new Date(rec.pullTime),
      usedBy,
    };
  }
}

export type { ImageRecord };

/** The OCI image config's fields osvirt reads. */
interface OciConfig {
  created?: string;
  os?: string;
  architecture?: string;
  variant?: string;
  config?: {
    Entrypoint?: string[] | null;
    Cmd?: string[] | null;
    Env?: string[] | null;
    WorkingDir?: string;
    User?: string;
    StopSignal?: string;
    Labels?: Record<string, string> | null;
    ExposedPorts?: Record<string, unknown> | null;
  };
  rootfs?: { type?: string; diff_ids?: string[] };
}

function imageConfig(c: OciConfig): ImageConfig {
  const k = c.config ?? {};
  return {
    entrypoint: k.Entrypoint ?? [],
    cmd: k.Cmd ?? [],
    env: k.Env ?? [],
    workingDir: k.WorkingDir ?? '',
    user: k.User ?? '',
    stopSignal: k.StopSignal ?? '',
    labels: k.Labels ?? {},
    exposedPorts: Object.keys(k.ExposedPorts ?? {}),
  };
}

/** containers' auth.json (root's), then docker's config.json. */
export function defaultAuthFiles(): string[] {
  return [
    process.env['REGISTRY_AUTH_FILE'] ?? '',
    '/run/containers/0/auth.json',
    '/etc/containers/auth.json',
    path.join(process.env['HOME'] ?? '/root', '.docker', 'config.json'),
  ].filter(Boolean);
}

async function sha256File(file: string): Promise<string> {
  const h = createHash('sha256');
  try {
    for await (const chunk of createReadStream(file)) h.update(chunk as Buffer);
  } catch (e) {
    throw invalidArgument('data', `the archive lacks ${path.basename(file)} (${errorMessage(e)})`);
  }
  return `sha256:${h.digest('hex')}`;
}

async function du(p: string): Promise<number> {
  const st = await fs.lstat(p);
  if (!st.isDirectory()) return st.size;
  let n = 0;
  for (const e of await fs.readdir(p)) n += await du(path.join(p, e));
  return n;
}

function asOsvirtError(e: unknown, image: string): unknown {
  if (e instanceof RegistryError) return new OsvirtError(e.kind, `REGISTRY_${e.kind}`, `pull ${image}: ${e.message}`, [], { image });
  if (e instanceof LayerError) return new OsvirtError('FAILED_PRECONDITION', 'BAD_LAYER', `pull ${image}: a layer was refused: ${e.message}`, [], { image });
  return e;
}
