// Root filesystems: shared read-only templates (busybox from the host's
// static busybox), host directories, and per-container overlayfs layers so
// many containers share one template without changing it.
import { execFile } from 'node:child_process';
import { promises as fs, existsSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { missingFeature, invalidArgument } from '../../src/core/errors';

const run = promisify(execFile);

export const TEMPLATES = ['busybox'] as const;

/** The idle init a busybox container runs when the spec gives none: exits 0 on SIGTERM. */
export const BUSYBOX_DEFAULT_INIT = ['/bin/sh', '-c', "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done"];

const BUSYBOX_CANDIDATES = ['/bin/busybox', '/usr/bin/busybox'];

async function isStatic(file: string): Promise<boolean> {
  const head = await fs.readFile(file).then((b) => b.subarray(0, 4096));
  // A dynamic ELF names its interpreter (PT_INTERP): "/lib64/ld-linux".
  return !head.includes(Buffer.from('/lib64/ld-linux')) && !head.includes(Buffer.from('/lib/ld-linux'));
}

export function findBusybox(): string | undefined {
  return BUSYBOX_CANDIDATES.find((p) => existsSync(p));
}

export class Templates {
  private building = new Map<string, Promise<string>>();

  constructor(private readonly dir: string) {}

  path(name: string): string {
    return path.join(this.dir, name);
  }

  /** Build the template once (concurrent callers share the build); returns its directory. */
  ensure(name: string): Promise<string> {
    if (!(TEMPLATES as readonly string[]).includes(name)) throw invalidArgument('spec.rootfs.template', `unknown template "${name}" (known: ${TEMPLATES.join(', ')})`);
    const dir = this.path(name);
    if (existsSync(path.join(dir, '.osvirt-template'))) return Promise.resolve(dir);
    let p = this.building.get(name);
    if (!p) {
      p = this.buildBusybox(dir).finally(() => this.building.delete(name));
      this.building.set(name, p);
    }
    return p;
  }

  private async buildBusybox(dir: string): Promise<string> {
    const bb = findBusybox();
    if (!bb) throw missingFeature('busybox', 'the busybox template is built from the host\'s static busybox; install busybox-static (scripts/setup.sh does)');
    if (!(await isStatic(bb))) throw missingFeature('a static busybox', `${bb} is dynamically linked; install busybox-static`);
    const tmp = `${dir}.tmp-${process.pid}`;
    await fs.rm(tmp, { recursive: true, force: true });
    for (const d of ['bin', 'sbin', 'usr/bin', 'usr/sbin', 'etc', 'proc', 'sys', 'dev', 'tmp', 'root', 'var/log', 'run', 'home', 'mnt']) {
      await fs.mkdir(path.join(tmp, d), { recursive: true });
    }
    await fs.chmod(path.join(tmp, 'tmp'), 0o1777);
    await fs.copyFile(bb, path.join(tmp, 'bin/busybox'));
    await fs.chmod(path.join(tmp, 'bin/busybox'), 0o755);
    const { stdout } = await run(bb, ['--list-full']);
    for (const applet of stdout.split('\n').map((s) => s.trim()).filter(Boolean)) {
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
    await fs.writeFile(path.join(tmp, '.osvirt-template'), `busybox from ${bb}\n`);
    await fs.rm(dir, { recursive: true, force: true });
    await fs.rename(tmp, dir);
    return dir;
  }
}

export function isMountpoint(dir: string): boolean {
  const target = path.resolve(dir);
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .some((l) => l.split(' ')[4] === target);
}

/** Mount an overlay of `lower` at `<base>/rootfs` with its writable layer in `<base>/upper`. */
export async function mountOverlay(lower: string, base: string): Promise<string> {
  const target = path.join(base, 'rootfs');
  if (isMountpoint(target)) return target;
  for (const d of ['rootfs', 'upper', 'work']) await fs.mkdir(path.join(base, d), { recursive: true });
  try {
    await run('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${lower},upperdir=${path.join(base, 'upper')},workdir=${path.join(base, 'work')}`, target]);
  } catch (e) {
    const msg = (e as { stderr?: string }).stderr ?? String(e);
    throw missingFeature('overlayfs', `mounting the copy-on-write root failed: ${msg.trim()}`);
  }
  return target;
}

/** Unmount everything at or below dir (lazy, so a busy mount cannot wedge delete). */
export async function unmountAll(dir: string): Promise<void> {
  const target = path.resolve(dir);
  const mounts = readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[4])
    .filter((m): m is string => !!m && (m === target || m.startsWith(target + '/')))
    .sort((a, b) => b.length - a.length);
  for (const m of mounts) await run('umount', ['-l', m]).catch(() => undefined);
}
