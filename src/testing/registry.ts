// A real OCI registry for tests and the bench: Debian's docker-registry (CNCF distribution)
// on loopback with a temporary config, open over HTTP or with htpasswd basic
// auth over TLS; and images built with umoci and pushed with skopeo.
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync, chmodSync, symlinkSync, copyFileSync } from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { createHash, randomBytes } from 'node:crypto';

const run = promisify(execFile);

export function haveImageTools(): string | undefined {
  for (const t of ['docker-registry', 'skopeo', 'umoci', 'setfattr', 'openssl']) {
    try {
      execFileSync('sh', ['-c', `command -v ${t}`], { stdio: 'ignore' });
    } catch {
      return `${t} is not installed (scripts/setup.sh installs it)`;
    }
  }
  return undefined;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

export class TestRegistry {
  readonly dir = mkdtempSync(path.join(os.tmpdir(), 'osvirt-registry-'));
  port = 0;
  proc?: ChildProcess;
  log = '';
  /** With TLS: the CA that signed its certificate. */
  ca?: string;

  constructor(readonly opts: { tls?: boolean; user?: string; password?: string; logRequests?: boolean } = {}) {}

  get host(): string {
    return `127.0.0.1:${this.port}`;
  }

  async start(): Promise<void> {
    this.port = await freePort();
    const lines = [
      'version: 0.1',
      'log:',
      `  level: ${this.opts.logRequests ? 'info' : 'warn'}`,
      'storage:',
      '  filesystem:',
      `    rootdirectory: ${path.join(this.dir, 'data')}`,
      '  delete:',
      '    enabled: true',
      'http:',
      `  addr: 127.0.0.1:${this.port}`,
    ];
    if (this.opts.tls) {
      this.makeCerts();
      lines.push('  tls:', `    certificate: ${path.join(this.dir, 'server.crt')}`, `    key: ${path.join(this.dir, 'server.key')}`);
    }
    if (this.opts.user) {
      // bcrypt, the only hash docker-registry's htpasswd accepts (libxcrypt's $2b$).
      const hash = execFileSync(
        'python3',
        ['-c', 'import crypt,sys; print(crypt.crypt(sys.argv[1], crypt.mksalt(crypt.METHOD_BLOWFISH)))', this.opts.password ?? ''],
        { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] },
      ).trim();
      writeFileSync(path.join(this.dir, 'htpasswd'), `${this.opts.user}:${hash}\n`);
      lines.push('auth:', '  htpasswd:', '    realm: osvirt-test', `    path: ${path.join(this.dir, 'htpasswd')}`);
    }
    writeFileSync(path.join(this.dir, 'config.yml'), lines.join('\n') + '\n');
    this.proc = spawn('docker-registry', ['serve', path.join(this.dir, 'config.yml')], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.proc.stdout!.on('data', (b: Buffer) => (this.log += b.toString()));
    this.proc.stderr!.on('data', (b: Buffer) => (this.log += b.toString()));
    // Ready when it accepts connections.
    const end = Date.now() + 15000;
    for (;;) {
      const ok = await new Promise<boolean>((resolve) => {
        const s = net.connect(this.port, '127.0.0.1', () => {
          s.destroy();
          resolve(true);
        });
        s.on('error', () => resolve(false));
      });
      if (ok) return;
      if (this.proc.exitCode !== null || Date.now() > end) throw new Error(`docker-registry did not start: ${this.log}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  private makeCerts(): void {
    const d = this.dir;
    const ssl = (...args: string[]) => execFileSync('openssl', args, { stdio: 'ignore', cwd: d });
    ssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '2', '-subj', '/CN=osvirt test CA');
    ssl('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=127.0.0.1');
    writeFileSync(path.join(d, 'ext.cnf'), 'subjectAltName=IP:127.0.0.1\n');
    ssl('x509', '-req', '-in', 'server.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'server.crt', '-days', '2', '-extfile', 'ext.cnf');
    this.ca = path.join(d, 'ca.crt');
  }

  /** skopeo copy of an OCI layout's image to this registry. */
  async push(layout: string, tag: string, dest: string, all = false): Promise<void> {
    const args = ['copy', '--quiet', ...(all ? ['--all'] : []), `oci:${layout}:${tag}`, `docker://${this.host}/${dest}`];
    if (this.opts.tls) args.splice(1, 0, '--dest-cert-dir', this.certDir());
    else args.splice(1, 0, '--dest-tls-verify=false');
    if (this.opts.user) args.splice(1, 0, '--dest-creds', `${this.opts.user}:${this.opts.password}`);
    await run('skopeo', args);
  }

  /** A directory with the CA as skopeo's --cert-dir wants it. */
  certDir(): string {
    const d = path.join(this.dir, 'certs');
    if (!existsSync(d)) {
      mkdirSync(d);
      copyFileSync(this.ca!, path.join(d, 'ca.crt'));
    }
    return d;
  }

  /** How many GETs of a blob the registry served (logRequests). */
  blobGets(digest: string): number {
    return this.log.split('\n').filter((l) => l.includes(`blobs/${digest}`) && /GET/.test(l) && /response completed|http.response.status=200/.test(l)).length;
  }

  /** The file of a blob in the registry's storage (to corrupt it). */
  blobFile(digest: string): string {
    const hex = digest.replace('sha256:', '');
    return path.join(this.dir, 'data', 'docker', 'registry', 'v2', 'blobs', 'sha256', hex.slice(0, 2), hex, 'data');
  }

  async stop(): Promise<void> {
    const p = this.proc;
    if (p && p.exitCode === null && p.signalCode === null) {
      await new Promise<void>((resolve) => {
        p.once('exit', () => resolve());
        p.kill('SIGKILL');
      });
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/**
 * OCI layouts built with umoci: a busybox base layer (with a user "app",
 * uid 1000, group "app" 1000) and a second layer that deletes a file of the
 * first (a whiteout) and adds one.
 */
export class ImageBuilder {
  readonly dir = mkdtempSync(path.join(os.tmpdir(), 'osvirt-images-'));
  readonly layout = path.join(this.dir, 'layout');

  async init(): Promise<void> {
    await run('umoci', ['init', '--layout', this.layout]);
  }

  private async umoci(...args: string[]): Promise<void> {
    await run('umoci', args);
  }

  /** Builds tag: base layer, then the change layer; config as given. */
  async build(
    tag: string,
    config: {
      entrypoint?: string[];
      cmd?: string[];
      env?: string[];
      workdir?: string;
      user?: string;
      stopSignal?: string;
      arch?: string;
      marker?: string;
      fill?: { layers: number; mib: number };
    },
  ): Promise<void> {
    const bundle = path.join(this.dir, `bundle-${tag}`);
    await this.umoci('new', '--image', `${this.layout}:${tag}`);
    await this.umoci('unpack', '--image', `${this.layout}:${tag}`, bundle);
    const root = path.join(bundle, 'rootfs');
    for (const d of ['bin', 'etc', 'tmp', 'work', 'proc', 'sys', 'dev', 'home/app']) mkdirSync(path.join(root, d), { recursive: true });
    chmodSync(path.join(root, 'tmp'), 0o1777);
    const bb = ['/bin/busybox', '/usr/bin/busybox'].find((p) => existsSync(p))!;
    copyFileSync(bb, path.join(root, 'bin', 'busybox'));
    chmodSync(path.join(root, 'bin', 'busybox'), 0o755);
    for (const a of ['sh', 'cat', 'echo', 'id', 'pwd', 'env', 'sleep', 'ls', 'test', 'true']) symlinkSync('busybox', path.join(root, 'bin', a));
    writeFileSync(path.join(root, 'etc', 'passwd'), 'root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n');
    writeFileSync(path.join(root, 'etc', 'group'), 'root:x:0:\napp:x:1000:\nextra:x:2000:app\n');
    writeFileSync(path.join(root, 'etc', 'removed'), 'the second layer deletes me\n');
    execFileSync('chown', ['1000:1000', path.join(root, 'work'), path.join(root, 'home/app')]);
    // --refresh-bundle: the next repack is a layer on top of this one, not a new first layer.
    await this.umoci('repack', '--refresh-bundle', '--image', `${this.layout}:${tag}`, bundle);
    // Filler layers of incompressible data (for the bench's multi-layer pulls).
    for (let i = 0; i < (config.fill?.layers ?? 0); i++) {
      mkdirSync(path.join(root, 'data'), { recursive: true });
      writeFileSync(path.join(root, 'data', `blob${i}`), randomBytes(config.fill!.mib * 1048576));
      await this.umoci('repack', '--refresh-bundle', '--image', `${this.layout}:${tag}`, bundle);
    }
    rmSync(path.join(root, 'etc', 'removed'));
    writeFileSync(path.join(root, 'etc', 'marker'), `${config.marker ?? tag}\n`);
    await this.umoci('repack', '--image', `${this.layout}:${tag}`, bundle);
    rmSync(bundle, { recursive: true, force: true });
    const cfg = ['config', '--image', `${this.layout}:${tag}`];
    if (config.entrypoint) cfg.push(`--config.entrypoint=${config.entrypoint[0]}`, ...config.entrypoint.slice(1).map((e) => `--config.entrypoint=${e}`));
    for (const c of config.cmd ?? []) cfg.push(`--config.cmd=${c}`);
    for (const e of config.env ?? []) cfg.push(`--config.env=${e}`);
    if (config.workdir) cfg.push(`--config.workingdir=${config.workdir}`);
    if (config.user) cfg.push(`--config.user=${config.user}`);
    if (config.stopSignal) cfg.push(`--config.stopsignal=${config.stopSignal}`);
    if (config.arch) cfg.push(`--architecture=${config.arch}`);
    await this.umoci(...cfg);
  }

  /** An image index `tag` over tags built for different architectures. */
  index(tag: string, entries: { tag: string; architecture: string }[]): void {
    const indexFile = path.join(this.layout, 'index.json');
    const idx = JSON.parse(readFileSync(indexFile, 'utf8')) as {
      manifests: { digest: string; size: number; mediaType: string; annotations?: Record<string, string> }[];
    };
    const manifests = entries.map((e) => {
      const m = idx.manifests.find((x) => x.annotations?.['org.opencontainers.image.ref.name'] === e.tag)!;
      return { mediaType: m.mediaType, digest: m.digest, size: m.size, platform: { os: 'linux', architecture: e.architecture } };
    });
    const body = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests }));
    const digest = `sha256:${createHash('sha256').update(body).digest('hex')}`;
    writeFileSync(path.join(this.layout, 'blobs', 'sha256', digest.slice(7)), body);
    idx.manifests.push({
      mediaType: 'application/vnd.oci.image.index.v1+json',
      digest,
      size: body.length,
      annotations: { 'org.opencontainers.image.ref.name': tag },
    });
    writeFileSync(indexFile, JSON.stringify(idx));
  }

  remove(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }
}
