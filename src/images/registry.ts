// A client of the OCI distribution spec (what docker-registry, Harbor, quay,
// ghcr and Docker Hub serve): manifests and blobs by digest, with anonymous,
// basic and bearer-token auth (the WWW-Authenticate challenge of
// docker's token spec), TLS with the system's CAs plus the per-registry CAs
// in /etc/containers/certs.d and /etc/docker/certs.d, and plain HTTP only for
// registries configured as insecure.
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream, existsSync, promises as fs, readdirSync, readFileSync } from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';
import * as path from 'node:path';
import type { Writable } from 'node:stream';
import { rootCertificates } from 'node:tls';
import type { Reference } from './reference';

export const MEDIA = {
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  ociConfig: 'application/vnd.oci.image.config.v1+json',
  dockerConfig: 'application/vnd.docker.container.image.v1+json',
} as const;

/** Why a registry call failed, in gRPC terms. */
export type RegistryErrorKind =
  'NOT_FOUND' | 'UNAUTHENTICATED' | 'PERMISSION_DENIED' | 'UNAVAILABLE' | 'DATA_LOSS' | 'FAILED_PRECONDITION' | 'INVALID_ARGUMENT';

export class RegistryError extends Error {
  constructor(
    readonly kind: RegistryErrorKind,
    message: string,
  ) {
    super(message);
  }
}

export interface Credentials {
  username: string;
  password: string;
}

export interface RegistryOptions {
  /** host[:port] of registries reached over plain HTTP. */
  insecure: string[];
  /** Credentials for a host[:port], if any. */
  credentials?: (host: string) => Credentials | undefined;
  /** Where per-registry CA directories are looked up (tests point this elsewhere). */
  certDirs?: string[];
}

const SYSTEM_CA_FILES = ['/etc/ssl/certs/ca-certificates.crt', '/etc/pki/tls/certs/ca-bundle.crt'];
const CERT_DIRS = ['/etc/containers/certs.d', '/etc/docker/certs.d'];

/** Credentials from docker's config.json and containers' auth.json ({"auths": {"host": {"auth": base64(user:pass)}}}). */
export function readAuthFiles(files: string[]): Map<string, Credentials> {
  const out = new Map<string, Credentials>();
  for (const f of files) {
    let doc: { auths?: Record<string, { auth?: string; username?: string; password?: string }> };
    try {
      doc = JSON.parse(readFileSync(f, 'utf8')) as typeof doc;
    } catch {
      continue;
    }
    for (const [key, v] of Object.entries(doc.auths ?? {})) {
      const host = key.replace(/^https?:\/\//, '').replace(/\/.*$/, '');
      if (out.has(host)) continue;
      if (v.auth) {
        const text = Buffer.from(v.auth, 'base64').toString('utf8');
        const i = text.indexOf(':');
        if (i > 0) out.set(host, { username: text.slice(0, i), password: text.slice(i + 1) });
      } else if (v.username && v.password) out.set(host, { username: v.username, password: v.password });
    }
  }
  return out;
}

interface Response {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: http.IncomingMessage;
}

/** One registry's connection settings and the tokens it handed out. */
export class RegistryClient {
  private readonly tokens = new Map<string, string>();
  private readonly agents = new Map<string, https.Agent>();

  constructor(private readonly opts: RegistryOptions) {}

  private insecure(host: string): boolean {
    return this.opts.insecure.includes(host);
  }

  private agentFor(host: string): https.Agent {
    let a = this.agents.get(host);
    if (a) return a;
    const ca: string[] = [...rootCertificates];
    for (const f of SYSTEM_CA_FILES) if (existsSync(f)) ca.push(readFileSync(f, 'utf8'));
    for (const base of this.opts.certDirs ?? CERT_DIRS) {
      const dir = path.join(base, host);
      if (!existsSync(dir)) continue;
      for (const f of readdirSync(dir)) if (f.endsWith('.crt')) ca.push(readFileSync(path.join(dir, f), 'utf8'));
    }
    a = new https.Agent({ ca, keepAlive: true });
    this.agents.set(host, a);
    return a;
  }

  /** Drops the tokens of a host (its credentials changed). */
  forget(host: string): void {
    for (const k of [...this.tokens.keys()]) if (k.startsWith(`${host} `)) this.tokens.delete(k);
  }

  /**
   * Checks credentials against a registry's /v2/ endpoint (the version
   * check every registry answers), through the challenge it answers with.
   */
  async ping(host: string): Promise<void> {
    const ref: Reference = { host, repository: '' };
    const url = new URL(`${this.insecure(host) ? 'http' : 'https'}://${host}/v2/`);
    let res = await this.raw(url, { 'user-agent': 'osvirt' });
    res.body.resume();
    if (res.status === 401) {
      const challenge = String(res.headers['www-authenticate'] ?? '');
      const auth = await this.authorize(ref, '', challenge);
      res = await this.raw(url, { 'user-agent': 'osvirt', authorization: auth });
      res.body.resume();
    }
    if (res.status === 401 || res.status === 403) throw new RegistryError('UNAUTHENTICATED', `${host} refused the user name and password`);
    if (res.status !== 200) throw new RegistryError('UNAVAILABLE', `${host} answered ${res.status} on /v2/: is it a registry?`);
  }

  close(): void {
    for (const a of this.agents.values()) a.destroy();
    this.agents.clear();
  }

  private url(ref: Reference, what: string): URL {
    return new URL(`${this.insecure(ref.host) ? 'http' : 'https'}://${ref.host}/v2/${ref.repository}/${what}`);
  }

  private raw(url: URL, headers: Record<string, string>, redirects = 0): Promise<Response> {
    return new Promise((resolve, reject) => {
      const secure = url.protocol === 'https:';
      const req = (secure ? https : http).request(
        url,
        { method: 'GET', headers, ...(secure ? { agent: this.agentFor(url.host) } : {}), timeout: 30000 },
        (res) => {
          const status = res.statusCode ?? 0;
          if ([301, 302, 303, 307, 308].includes(status) && res.headers.location) {
            res.resume();
            if (redirects > 5) return reject(new RegistryError('UNAVAILABLE', `${url.host}: too many redirects`));
            const next = new URL(res.headers.location, url);
            // Blob storage elsewhere (a CDN) gets no registry credentials.
            const h = next.host === url.host ? headers : Object.fromEntries(Object.entries(headers).filter(([k]) => k.toLowerCase() !== 'authorization'));
            return resolve(this.raw(next, h, redirects + 1));
          }
          resolve({ status, headers: res.headers, body: res });
        },
      );
      req.on('timeout', () => req.destroy(new Error('timed out')));
      req.on('error', (e) =>
        reject(
          new RegistryError(
            'UNAVAILABLE',
            `cannot reach ${url.host}: ${e.message}${secure && /certificate|self.signed|CERT/i.test(e.message) ? ` (put its CA in /etc/containers/certs.d/${url.host}/ca.crt)` : ''}`,
          ),
        ),
      );
      req.end();
    });
  }

  /** GET with auth: anonymous first, then what the registry's challenge asks for. */
  private async get(ref: Reference, what: string, accept?: string, extra: Record<string, string> = {}): Promise<Response> {
    const url = this.url(ref, what);
    const scope = `repository:${ref.repository}:pull`;
    const headers: Record<string, string> = { 'user-agent': 'osvirt', ...extra };
    if (accept) headers['accept'] = accept;
    const cached = this.tokens.get(`${ref.host} ${scope}`);
    if (cached) headers['authorization'] = cached;
    let res = await this.raw(url, headers);
    if (res.status === 401) {
      res.body.resume();
      const auth = await this.authorize(ref, scope, String(res.headers['www-authenticate'] ?? ''));
      this.tokens.set(`${ref.host} ${scope}`, auth);
      res = await this.raw(url, { ...headers, authorization: auth });
      if (res.status === 401) {
        res.body.resume();
        throw new RegistryError(
          'UNAUTHENTICATED',
          `${ref.host} refused ${this.opts.credentials?.(ref.host) ? 'the stored credentials' : 'an anonymous pull'} of ${ref.repository}${this.opts.credentials?.(ref.host) ? '' : ' (osvirt login it, or put credentials in auth.json)'}`,
        );
      }
    }
    if (res.status === 403) {
      res.body.resume();
      throw new RegistryError('PERMISSION_DENIED', `${ref.host} denies pulling ${ref.repository}`);
    }
    if (res.status === 404) {
      const text = await readAll(res.body, 4096).catch(() => '');
      throw new RegistryError(
        'NOT_FOUND',
        `${ref.host} has no ${what.startsWith('blobs/') ? 'blob' : 'manifest'} ${what.split('/')[1]} in ${ref.repository}${/NAME_UNKNOWN/.test(text) ? ' (no such repository)' : ''}`,
      );
    }
    if (res.status < 200 || res.status > 299) {
      const text = await readAll(res.body, 4096).catch(() => '');
      throw new RegistryError('UNAVAILABLE', `${ref.host} answered ${res.status} for ${what}: ${text.slice(0, 300)}`);
    }
    return res;
  }

  /** The Authorization header value for a challenge (RFC 7235; docker's token auth). */
  private async authorize(ref: Reference, scope: string, challenge: string): Promise<string> {
    const creds = this.opts.credentials?.(ref.host);
    const basic = creds ? `Basic ${Buffer.from(`${creds.username}:${creds.password}`).toString('base64')}` : undefined;
    const m = /^\s*(\w+)\s*(.*)$/.exec(challenge);
    const scheme = m?.[1]?.toLowerCase();
    if (scheme === 'basic') {
      if (!basic)
        throw new RegistryError('UNAUTHENTICATED', `${ref.host} asks for a user name and password (osvirt login ${ref.host}, or put credentials in auth.json)`);
      return basic;
    }
    if (scheme !== 'bearer') throw new RegistryError('UNAUTHENTICATED', `${ref.host} asks for an authentication scheme osvirt does not speak: "${challenge}"`);
    const params = new Map<string, string>();
    for (const p of (m?.[2] ?? '').matchAll(/(\w+)="([^"]*)"/g)) params.set(p[1]!, p[2]!);
    const realm = params.get('realm');
    if (!realm) throw new RegistryError('UNAUTHENTICATED', `${ref.host}'s bearer challenge names no realm`);
    const url = new URL(realm);
    if (params.get('service')) url.searchParams.set('service', params.get('service')!);
    const sc = params.get('scope') ?? scope;
    if (sc) url.searchParams.set('scope', sc);
    const res = await this.raw(url, { 'user-agent': 'osvirt', ...(basic ? { authorization: basic } : {}) });
    const text = await readAll(res.body, 1 << 20);
    if (res.status === 401 || res.status === 403)
      throw new RegistryError(
        'UNAUTHENTICATED',
        `the token service of ${ref.host} (${url.host}) refused the ${creds ? 'stored credentials' : 'anonymous request'}`,
      );
    if (res.status !== 200) throw new RegistryError('UNAVAILABLE', `the token service of ${ref.host} answered ${res.status}`);
    const doc = JSON.parse(text) as { token?: string; access_token?: string };
    const token = doc.token ?? doc.access_token;
    if (!token) throw new RegistryError('UNAVAILABLE', `the token service of ${ref.host} gave no token`);
    return `Bearer ${token}`;
  }

  /** A manifest or index by tag or digest: its bytes, media type and digest (verified when asked by digest). */
  async manifest(ref: Reference, reference: string): Promise<{ bytes: Buffer; mediaType: string; digest: string }> {
    const res = await this.get(ref, `manifests/${reference}`, [MEDIA.ociIndex, MEDIA.ociManifest, MEDIA.dockerList, MEDIA.dockerManifest].join(', '));
    const bytes = Buffer.from(await readAll(res.body, 4 << 20, true), 'latin1');
    const digest = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
    if (reference.startsWith('sha256:') && digest !== reference)
      throw new RegistryError('DATA_LOSS', `${ref.host} sent a manifest for ${reference} whose digest is ${digest}`);
    let mediaType = String(res.headers['content-type'] ?? '')
      .split(';')[0]!
      .trim();
    try {
      const doc = JSON.parse(bytes.toString('utf8')) as { mediaType?: string; schemaVersion?: number };
      if (doc.mediaType) mediaType = doc.mediaType;
      if (doc.schemaVersion === 1) throw new RegistryError('FAILED_PRECONDITION', `${ref.host}/${ref.repository}: Docker schema 1 manifests are not supported`);
    } catch (e) {
      if (e instanceof RegistryError) throw e;
      throw new RegistryError('DATA_LOSS', `${ref.host} sent a manifest that is not JSON`);
    }
    return { bytes, mediaType, digest };
  }

  /**
   * Downloads a blob to `file`, checking its size and sha256 on the way;
   * `progress` gets the bytes so far.
   *
   * What `file` already holds is the beginning of an earlier download of the
   * same blob (one that broke off, or a daemon that died): it is hashed again
   * and the rest is asked for with a Range request. A registry that answers
   * 200 instead of 206 sends the whole blob, and the download starts over. A
   * connection that breaks after bringing bytes is resumed the same way, up to
   * three times; what came stays in `file` for the next pull. Nothing is
   * trusted before the whole blob's digest matches: a mismatch removes the
   * file and throws DATA_LOSS.
   */
  async blob(ref: Reference, digest: string, size: number, file: string, progress?: (done: number) => void, tee?: Writable): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      const before = await fileSize(file);
      try {
        await this.blobOnce(ref, digest, size, file, progress, tee);
        tee?.end();
        return;
      } catch (e) {
        const gained = (await fileSize(file)) > before;
        if (e instanceof RegistryError && e.kind === 'UNAVAILABLE' && gained && attempt < 4) continue;
        tee?.destroy(e as Error);
        throw e;
      }
    }
  }

  /**
   * One request for the blob (or its rest). `tee`, when given, gets every
   * byte in order, from the first: it must start with an empty `file`, and
   * is destroyed if the download has to start over.
   */
  private async blobOnce(ref: Reference, digest: string, size: number, file: string, progress?: (done: number) => void, tee?: Writable): Promise<void> {
    let have = await fileSize(file);
    if (have > size) {
      await fs.rm(file, { force: true });
      have = 0;
      tee?.destroy(new RegistryError('UNAVAILABLE', `the download of ${digest} started over`));
      tee = undefined;
    }
    let hash = createHash('sha256');
    if (have) for await (const chunk of createReadStream(file, { end: have - 1 })) hash.update(chunk as Buffer);
    const verify = async (done: number) => {
      const got = `sha256:${hash.digest('hex')}`;
      if (done !== size || got !== digest) {
        await fs.rm(file, { force: true });
        if (done !== size) throw new RegistryError('DATA_LOSS', `blob ${digest} from ${ref.host} has ${done} bytes, its manifest says ${size}`);
        throw new RegistryError('DATA_LOSS', `blob ${digest} from ${ref.host} has the digest ${got}`);
      }
    };
    if (have === size) return verify(have);
    const res = await this.get(ref, `blobs/${digest}`, undefined, have ? { range: `bytes=${have}-` } : {});
    let done = 0;
    if (have && res.status === 206 && rangeStart(res.headers['content-range']) === have) done = have;
    else if (res.status === 206) {
      res.body.resume();
      throw new RegistryError('DATA_LOSS', `${ref.host} answered a request for bytes ${have}- of ${digest} with "${res.headers['content-range']}"`);
    } else if (have) {
      hash = createHash('sha256'); // the whole blob again
      tee?.destroy(new RegistryError('UNAVAILABLE', `${ref.host} sent ${digest} from its start again`));
      tee = undefined;
    }
    const out = createWriteStream(file, { mode: 0o600, flags: done ? 'a' : 'w' });
    let teeWait = false;
    try {
      await new Promise<void>((resolve, reject) => {
        res.body.on('data', (chunk: Buffer) => {
          done += chunk.length;
          if (done > size) {
            res.body.destroy();
            return reject(new RegistryError('DATA_LOSS', `blob ${digest} from ${ref.host} is larger than the ${size} bytes its manifest says`));
          }
          hash.update(chunk);
          // Paused only far behind: a connection that breaks while paused loses what it had
          // buffered, and each byte taken in is one the resume need not fetch again.
          if (!out.write(chunk) && out.writableLength > 16 << 20) {
            res.body.pause();
            out.once('drain', () => res.body.resume());
          }
          // The unpacker reading along sets the pace when it falls behind (and drops out when it fails).
          if (tee && !tee.destroyed && !tee.write(chunk) && !teeWait) {
            const t = tee;
            teeWait = true;
            res.body.pause();
            const go = () => {
              teeWait = false;
              t.off('drain', go);
              t.off('close', go);
              res.body.resume();
            };
            t.on('drain', go);
            t.on('close', go);
          }
          progress?.(done);
        });
        res.body.on('end', () => resolve());
        res.body.on('error', (e) => reject(new RegistryError('UNAVAILABLE', `download of ${digest} from ${ref.host} broke off: ${e.message}`)));
        res.body.on('aborted', () => reject(new RegistryError('UNAVAILABLE', `download of ${digest} from ${ref.host} broke off`)));
      });
    } catch (e) {
      // Keep what was written (the next attempt hashes the file again); a wrong blob goes.
      await new Promise<void>((resolve) => out.end(() => resolve()));
      if (e instanceof RegistryError && e.kind === 'DATA_LOSS') await fs.rm(file, { force: true });
      throw e;
    }
    await new Promise<void>((resolve, reject) => out.end((e?: Error | null) => (e ? reject(e) : resolve())));
    await verify(done);
  }
}

async function fileSize(file: string): Promise<number> {
  try {
    return (await fs.stat(file)).size;
  } catch {
    return 0;
  }
}

/** The first byte of a Content-Range header ("bytes 100-199/200"). */
function rangeStart(h: string | string[] | undefined): number | undefined {
  const m = /^bytes (\d+)-\d+\/(\d+|\*)$/.exec(String(h ?? '').trim());
  return m ? Number(m[1]) : undefined;
}

function readAll(body: http.IncomingMessage, limit: number, binary = false): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let n = 0;
    body.on('data', (c: Buffer) => {
      n += c.length;
      if (n > limit) {
        body.destroy();
        reject(new RegistryError('DATA_LOSS', `a registry answer is larger than ${limit} bytes`));
      } else chunks.push(c);
    });
    body.on('end', () => resolve(Buffer.concat(chunks).toString(binary ? 'latin1' : 'utf8')));
    body.on('error', reject);
  });
}
