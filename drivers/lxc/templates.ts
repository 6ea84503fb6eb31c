// Templates: shared read-only root filesystems. busybox is built from the
// host's static busybox in milliseconds; debian with mmdebstrap from the
// Debian mirror the host's own apt sources name, in tens of seconds. Each
// parameter set is built once into <dir>/<key>, with its metadata in
// <key>/.osvirt-template (JSON), and every container on it gets a
// copy-on-write overlay. A build goes to a temporary directory that is
// renamed into place only when complete, so a crash never leaves a half
// template that looks built.
import { createHash } from 'node:crypto';
import { execFile, spawn } from 'node:child_process';
import { existsSync, promises as fs, readdirSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { invalidArgument, missingFeature, notFound, OsvirtError } from '../../src/core/errors';
import { unmountUnder } from '../../src/host/mounts';
import type { TemplateOptions } from '../../src/gen/osvirt/v1/container';
import { detectInit } from './init-detect';

const run = promisify(execFile);

export const TEMPLATES = ['busybox', 'debian'] as const;

/** The idle init a busybox container runs when the spec gives none: exits 0 on SIGTERM. */
export const BUSYBOX_DEFAULT_INIT = ['/bin/sh', '-c', "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done"];

/** What a debian template always has: enough for systemd to boot and for a console login. */
export const DEBIAN_PACKAGES = ['systemd', 'systemd-sysv', 'dbus', 'iproute2', 'procps'];
export const DEBIAN_RELEASES = ['bookworm', 'trixie'];
export const DEBIAN_VARIANTS = ['minbase', 'essential', 'apt', 'required', 'important', 'standard'];
const PACKAGE_RE = /^[a-z0-9][a-z0-9+.-]{1,62}$/;
const MARKER = '.osvirt-template';

const BUSYBOX_CANDIDATES = ['/bin/busybox', '/usr/bin/busybox'];

export function findBusybox(): string | undefined {
  return BUSYBOX_CANDIDATES.find((p) => existsSync(p));
}

async function isStatic(file: string): Promise<boolean> {
  const head = await fs.readFile(file).then((b) => b.subarray(0, 4096));
  // A dynamic ELF names its interpreter (PT_INTERP): "/lib64/ld-linux".
  return !head.includes(Buffer.from('/lib64/ld-linux')) && !head.includes(Buffer.from('/lib/ld-linux'));
}

/** A template's metadata (its .osvirt-template file). */
export interface TemplateMeta {
  name: string;
  key: string;
  options: { release: string; variant: string; packages: string[] };
  source: string;
  builtAt: string;
  sizeBytes: number;
  init: string[];
  haltSignal: number;
  rebootSignal: number;
}

/** The options a template is built with, defaults filled in and validated (INVALID_ARGUMENT naming `field`). */
export function normalizeOptions(name: string, o: TemplateOptions | undefined, field = 'spec.rootfs.template_options'): TemplateMeta['options'] {
  if (!(TEMPLATES as readonly string[]).includes(name))
    throw invalidArgument(field.replace(/template_options$/, 'template'), `unknown template "${name}" (known: ${TEMPLATES.join(', ')})`);
  const given = !!o && (!!o.release || !!o.variant || o.packages.length > 0);
  if (name !== 'debian') {
    if (given) throw invalidArgument(field, `the ${name} template takes no options`);
    return { release: '', variant: '', packages: [] };
  }
  const release = o?.release || 'bookworm';
  if (!DEBIAN_RELEASES.includes(release))
    throw invalidArgument(`${field}.release`, `"${release}" is not a release osvirt builds (known: ${DEBIAN_RELEASES.join(', ')})`);
  const variant = o?.variant || 'minbase';
  if (!DEBIAN_VARIANTS.includes(variant))
    throw invalidArgument(`${field}.variant`, `"${variant}" is not an mmdebstrap variant osvirt builds (known: ${DEBIAN_VARIANTS.join(', ')})`);
  for (const [i, p] of (o?.packages ?? []).entries())
    if (!PACKAGE_RE.test(p)) throw invalidArgument(`${field}.packages[${i}]`, `"${p}" is not a Debian package name`);
  const packages = [...new Set(o?.packages ?? [])].sort();
  return { release, variant, packages };
}

/** The directory name of a parameter set: readable, plus a hash of exactly what was asked. */
export function templateKey(name: string, opts: TemplateMeta['options']): string {
  if (name !== 'debian') return name;
  const hash = createHash('sha256')
    .update(JSON.stringify({ name, ...opts }))
    .digest('hex')
    .slice(0, 12);
  return `debian-${opts.release}-${opts.variant}-${hash}`;
}

/**
 * The Debian mirror the host's apt sources name (one.list lines and deb822
 * .sources), skipping security and updates suites. Never a built-in host:
 * without one, FAILED_PRECONDITION says so.
 */
/** Suites of the Debian archive proper (a third-party repository may use the same names, hence isDebianArchive). */
const DEBIAN_SUITES = ['bullseye', 'bookworm', 'trixie', 'forky', 'sid', 'oldstable', 'stable', 'testing', 'unstable'];

/** A Debian archive (…/debian), not its security archive nor a third-party repository. */
function isDebianArchive(uri: string): boolean {
  return /\/debian\/?$/.test(uri) && !/security/.test(uri);
}

export function hostDebianMirror(): string {
  const fromEnv = process.env['OSVIRT_DEBIAN_MIRROR'];
  if (fromEnv) return fromEnv;
  const files: string[] = [];
  if (existsSync('/etc/apt/sources.list')) files.push('/etc/apt/sources.list');
  try {
    for (const f of readdirSync('/etc/apt/sources.list.d'))
      if (f.endsWith('.list') || f.endsWith('.sources')) files.push(path.join('/etc/apt/sources.list.d', f));
  } catch {
    // none
  }
  for (const file of files) {
    const text = readFileSync(file, 'utf8');
    if (file.endsWith('.sources')) {
      for (const stanza of text.split(/\n\s*\n/)) {
        const field = (k: string) => new RegExp(`^${k}:\\s*(.+)$`, 'mi').exec(stanza)?.[1]?.trim() ?? '';
        if (!/\bdeb\b/.test(field('Types')) || /^\s*Enabled:\s*no/im.test(stanza)) continue;
        const suites = field('Suites').split(/\s+/);
        const uri = field('URIs').split(/\s+/)[0];
        if (uri && suites.some((s) => DEBIAN_SUITES.includes(s)) && isDebianArchive(uri)) return uri;
      }
    } else {
      for (const line of text.split('\n')) {
        const m = /^\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+([a-z]+)\s/.exec(line);
        if (m && DEBIAN_SUITES.includes(m[2]!) && isDebianArchive(m[1]!)) return m[1]!;
      }
    }
  }
  throw missingFeature(
    'a Debian mirror',
    "the debian template is built from the Debian mirror in the host's apt sources (/etc/apt/sources.list or /etc/apt/sources.list.d), and none names one; add one, or set OSVIRT_DEBIAN_MIRROR",
  );
}

/**
 * Removes a directory tree that a build may have mounted things in: every
 * mount below it is detached first, and nothing is removed while one is left
 * (a recursive rm would otherwise walk into the mounted filesystem).
 */
async function removeTree(dir: string): Promise<void> {
  const left = await unmountUnder(dir);
  if (left.length) throw new OsvirtError('FAILED_PRECONDITION', 'TEMPLATE_BUSY', `cannot remove ${dir}: still mounted at ${left.join(', ')}`);
  await fs.rm(dir, { recursive: true, force: true });
}

async function dirSize(dir: string): Promise<number> {
  const { stdout } = await run('du', ['-sb', dir]);
  return Number(stdout.split(/\s/)[0]) || 0;
}

export class Templates {
  private building = new Map<string, Promise<string>>();

  constructor(readonly dir: string) {}

  path(key: string): string {
    return path.join(this.dir, key);
  }

  /** Metadata of a built template, or undefined. An old plain-text busybox marker still counts. */
  metadata(key: string): TemplateMeta | undefined {
    const file = path.join(this.path(key), MARKER);
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch {
      return undefined;
    }
    try {
      return JSON.parse(text) as TemplateMeta;
    } catch {
      return {
        name: key,
        key,
        options: { release: '', variant: '', packages: [] },
        source: text.trim(),
        builtAt: '',
        sizeBytes: 0,
        init: BUSYBOX_DEFAULT_INIT,
        haltSignal: 15,
        rebootSignal: 2,
      };
    }
  }

  list(): TemplateMeta[] {
    let entries: string[] = [];
    try {
      entries = readdirSync(this.dir);
    } catch {
      return [];
    }
    return entries.map((k) => this.metadata(k)).filter((m): m is TemplateMeta => !!m);
  }

  /**
   * Build the template once (concurrent callers share the build); returns
   * its directory. `progress` gets the builder's lines.
   */
  ensure(name: string, options?: TemplateOptions, progress?: (line: string) => void): Promise<string> {
    const opts = normalizeOptions(name, options);
    const key = templateKey(name, opts);
    const dir = this.path(key);
    if (existsSync(path.join(dir, MARKER))) return Promise.resolve(dir);
    let p = this.building.get(key);
    if (!p) {
      p = (name === 'debian' ? this.buildDebian(key, opts, progress) : this.buildBusybox(key)).finally(() => this.building.delete(key));
      this.building.set(key, p);
    } else if (progress) progress(`waiting for the build of ${key} already running`);
    return p;
  }

  async remove(key: string): Promise<void> {
    if (!/^[a-z0-9][a-z0-9.-]*$/.test(key) || !this.metadata(key)) throw notFound('template', key);
    const trash = `${this.path(key)}.rm-${process.pid}-${Date.now()}`;
    await fs.rename(this.path(key), trash);
    await fs.rm(trash, { recursive: true, force: true });
  }

  /** Leftovers of builds a crash interrupted (a live daemon sharing the directory keeps its own). */
  async removeStale(): Promise<void> {
    for (const e of await fs.readdir(this.dir).catch(() => [] as string[])) {
      const pid = Number(/\.(?:tmp|rm)-(\d+)/.exec(e)?.[1] ?? 0);
      if (!pid || (pid !== process.pid && existsSync(`/proc/${pid}`))) continue;
      await removeTree(path.join(this.dir, e));
    }
  }

  private async finish(tmp: string, dir: string, meta: Omit<TemplateMeta, 'sizeBytes' | 'builtAt'>): Promise<string> {
    const full: TemplateMeta = { ...meta, builtAt: new Date().toISOString(), sizeBytes: await dirSize(tmp) };
    await fs.writeFile(path.join(tmp, MARKER), JSON.stringify(full, null, 2) + '\n');
    await fs.rm(dir, { recursive: true, force: true });
    await fs.rename(tmp, dir);
    return dir;
  }

  private async buildBusybox(key: string): Promise<string> {
    const bb = findBusybox();
    if (!bb) throw missingFeature('busybox', "the busybox template is built from the host's static busybox; install busybox-static (scripts/setup.sh does)");
    if (!(await isStatic(bb))) throw missingFeature('a static busybox', `${bb} is dynamically linked; install busybox-static`);
    const dir = this.path(key);
    const tmp = `${dir}.tmp-${process.pid}`;
    await fs.rm(tmp, { recursive: true, force: true });
    for (const d of ['bin', 'sbin', 'usr/bin', 'usr/sbin', 'etc', 'proc', 'sys', 'dev', 'tmp', 'root', 'var/log', 'run', 'home', 'mnt']) {
      await fs.mkdir(path.join(tmp, d), { recursive: true });
    }
    await fs.chmod(path.join(tmp, 'tmp'), 0o1777);
    await fs.copyFile(bb, path.join(tmp, 'bin/busybox'));
    await fs.chmod(path.join(tmp, 'bin/busybox'), 0o755);
    const { stdout } = await run(bb, ['--list-full']);
    for (const applet of stdout
      .split('\n')
      .map((s) => s.trim())
      .filter(Boolean)) {
      const target = path.join(tmp, applet);
      if (applet === 'bin/busybox' || existsSync(target)) continue;
      await fs.mkdir(path.dirname(target), { recursive: true });
      await fs.symlink('/bin/busybox', target);
    }
    const files: Record<string, string> = {
      'etc/passwd': 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n',
      'etc/group': 'root:x:0:\nnogroup:x:65534:\n',
      'etc/hosts': '127.0.0.1 localhost\n::1 localhost\n',
      'etc/resolv.conf': '',
      'etc/os-release': 'NAME="osvirt busybox"\nID=busybox\n',
    };
    for (const [f, content] of Object.entries(files)) await fs.writeFile(path.join(tmp, f), content);
    return this.finish(tmp, dir, {
      name: 'busybox',
      key,
      options: { release: '', variant: '', packages: [] },
      source: bb,
      init: BUSYBOX_DEFAULT_INIT,
      haltSignal: 15,
      rebootSignal: 2,
    });
  }

  private async buildDebian(key: string, opts: TemplateMeta['options'], progress?: (line: string) => void): Promise<string> {
    if (!existsSync('/usr/bin/mmdebstrap'))
      throw missingFeature('mmdebstrap', 'the debian template is built with mmdebstrap; apt-get install mmdebstrap (scripts/setup.sh does)');
    const mirror = hostDebianMirror();
    const dir = this.path(key);
    const tmp = `${dir}.tmp-${process.pid}`;
    await fs.mkdir(this.dir, { recursive: true });
    await removeTree(tmp);
    const include = [...DEBIAN_PACKAGES, ...opts.packages].join(',');
    const args = [
      `--variant=${opts.variant}`,
      `--include=${include}`,
      // No copy of the host's machine id or apt caches: every container makes its own id.
      '--customize-hook=rm -f "$1"/etc/machine-id && touch "$1"/etc/machine-id',
      // mmdebstrap copies the host's hostname and resolv.conf: the container's are its own.
      '--customize-hook=rm -f "$1"/etc/hostname && : > "$1"/etc/resolv.conf',
      '--customize-hook=rm -rf "$1"/var/cache/apt/archives/*.deb "$1"/var/lib/apt/lists/*_Packages',
      opts.release,
      tmp,
      mirror,
    ];
    progress?.(`mmdebstrap ${args.map((a) => (/\s/.test(a) ? `'${a}'` : a)).join(' ')}`);
    let tail: string[] = [];
    const code = await new Promise<number>((resolve, reject) => {
      // In a mount namespace of its own: the /proc, /sys and /dev mounts it
      // makes in the new root vanish with it, even if it is killed mid-build
      // (on the host's they would stay, and removing the half-built tree
      // would reach into the host's /dev/shm).
      const child = spawn('unshare', ['--mount', '--propagation', 'private', '--', 'mmdebstrap', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
      const onData = (b: Buffer) => {
        for (const line of b
          .toString()
          .split('\n')
          .map((l) => l.trimEnd())
          .filter(Boolean)) {
          tail = [...tail.slice(-30), line];
          progress?.(line);
        }
      };
      child.stdout.on('data', onData);
      child.stderr.on('data', onData);
      child.once('error', reject);
      child.once('close', (c) => resolve(c ?? 1));
    });
    if (code !== 0) {
      await removeTree(tmp);
      throw new OsvirtError(
        'INTERNAL',
        'TEMPLATE_BUILD_FAILED',
        `building the debian template (${opts.release}, ${opts.variant}) failed: mmdebstrap exited ${code}:\n${tail.join('\n')}`,
      );
    }
    const init = detectInit(tmp);
    return this.finish(tmp, dir, {
      name: 'debian',
      key,
      options: opts,
      source: mirror,
      init: init.init,
      haltSignal: init.haltSignal,
      rebootSignal: init.rebootSignal,
    });
  }
}
