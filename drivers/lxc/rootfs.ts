// Root filesystems: shared read-only templates (busybox from the host's
// static busybox), host directories, and per-container overlayfs layers so
// many containers share one template without changing it.
import { execFile } from 'node:child_process';
import { promises as fs, existsSync } from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';
import type { ContainerSpec } from '../../src/gen/osvirt/v1/container';
import { errorMessage, invalidArgument, missingFeature } from '../../src/core/errors';
import { isMountpoint, unmountUnder } from '../../src/host/mounts';
import type { ImageStore } from '../../src/images/store';
import type { ContainerFiles } from './container-files';
import { normalizeOptions, templateKey, type Templates } from './templates';
import type { UserNs } from './user-namespaces';

const run = promisify(execFile);

export { BUSYBOX_DEFAULT_INIT, findBusybox, Templates, TEMPLATES } from './templates';

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

/** A run's root: where the helper pivots to, what it mounted (to unmount at cleanup), and what it still has to mount. */
export interface PreparedRootfs {
  rootfs: string;
  mounted: string;
  extraMounts: string[];
  /** lower:upper:work, for the helper's --host-overlay (deferOverlay). */
  overlay?: string;
  /** A host directory the helper binds idmapped (--host-bind, deferOverlay). */
  bind?: string;
}

/**
 * The root filesystems of one driver's containers: an overlay of a template,
 * an image's layers or a host directory under <dir>/upper, a host directory
 * used in place (idmapped for a user namespace), or an application
 * container's root of read-only binds of the host's directories.
 */
export class ContainerRootfs {
  constructor(
    private readonly driver: string,
    private readonly helper: string,
    private readonly files: ContainerFiles,
    private readonly templates: Templates,
    private readonly images: ImageStore | undefined,
  ) {}

  /** An image root's layer directories, top first. */
  imageLayers(spec: ContainerSpec): string[] {
    if (!this.images) throw missingFeature('an image store', `the ${this.driver} driver was started without one (osvirtd gives it one)`);
    const digest = spec.rootfs?.imageDigest;
    if (!digest) throw invalidArgument('spec.rootfs.image_digest', 'is empty: the daemon sets it when it creates a container from an image');
    return this.images.layerDirs(digest);
  }

  /** The container's own writable layer (copy-on-write roots). */
  upperDir(id: string): string {
    return path.join(this.files.dir(id), 'upper');
  }

  /** Whether the container's root is made of the host's directories (an application container). */
  isAppRoot(id: string): boolean {
    return existsSync(path.join(this.files.dir(id), 'approot'));
  }

  /**
   * The read-only layer whose /etc a copy-on-write root shows (a template, the
   * image layer that has one, a copy_on_write path); undefined when the root
   * is not copy-on-write.
   */
  lowerWithEtc(spec: ContainerSpec): string | undefined {
    const src = spec.rootfs?.source;
    if (src?.$case === 'template') return this.templates.path(templateKey(src.value, normalizeOptions(src.value, spec.rootfs?.templateOptions)));
    if (src?.$case === 'image') {
      const layers = this.imageLayers(spec);
      return layers.find((l) => existsSync(path.join(l, 'etc'))) ?? layers[0];
    }
    if (src?.$case === 'path' && spec.rootfs?.copyOnWrite) return src.value;
    return undefined;
  }

  /**
   * The root filesystem for a run. A copy-on-write root is mounted here, or,
   * with deferOverlay, left to the helper (`--host-overlay`), which saves
   * running mount(8) on the start path.
   */
  async prepare(id: string, spec: ContainerSpec, userNs: UserNs | undefined, opts: { deferOverlay?: boolean } = {}): Promise<PreparedRootfs> {
    const src = spec.rootfs?.source;
    const base = this.files.dir(id);
    const target = path.join(base, 'rootfs');
    // A user-namespaced root is an idmapped mount the helper makes (run: the
    // monitor, --host-overlay / --host-bind; restore: mount-root).
    const mountRoot = async (what: string[]) => {
      if (isMountpoint(target)) return;
      const maps = [
        ...userNs!.uidMap.map((m) => ['--uidmap', `${m.containerId}:${m.hostId}:${m.size}`]),
        ...userNs!.gidMap.map((m) => ['--gidmap', `${m.containerId}:${m.hostId}:${m.size}`]),
      ].flat();
      try {
        await run(this.helper, ['mount-root', ...maps, ...what, target]);
      } catch (e) {
        throw missingFeature('idmapped mounts', ((e as { stderr?: string }).stderr ?? errorMessage(e)).trim());
      }
    };
    const overlay = async (lower: string): Promise<PreparedRootfs> => {
      const layers = `${lower}:${path.join(base, 'upper')}:${path.join(base, 'work')}`;
      if (!opts.deferOverlay && !userNs) {
        const r = await mountOverlay(lower, base);
        return { rootfs: r, mounted: r, extraMounts: [] };
      }
      for (const d of ['rootfs', 'upper', 'work']) await fs.mkdir(path.join(base, d), { recursive: true });
      if (opts.deferOverlay) return { rootfs: target, mounted: target, extraMounts: [], overlay: layers };
      await mountRoot(['--overlay', layers]);
      return { rootfs: target, mounted: target, extraMounts: [] };
    };
    if (src?.$case === 'template') return overlay(await this.templates.ensure(src.value, spec.rootfs?.templateOptions));
    // An image's layers, top first, shared read-only under the container's own upper layer.
    if (src?.$case === 'image') return overlay(this.imageLayers(spec).join(':'));
    if (src?.$case === 'path') {
      if (spec.rootfs?.copyOnWrite) return overlay(src.value);
      if (!userNs) return { rootfs: src.value, mounted: '', extraMounts: [] };
      await fs.mkdir(target, { recursive: true });
      if (opts.deferOverlay) return { rootfs: target, mounted: target, extraMounts: [], bind: src.value };
      await mountRoot(['--bind', src.value]);
      return { rootfs: target, mounted: target, extraMounts: [] };
    }
    // Application container (lxc-execute style): each top-level host directory
    // bound read-only into an empty root, symlinks (merged /usr) copied, and
    // private tmpfs scratch space where a program expects to write.
    const root = path.join(base, 'approot');
    await fs.rm(root, { recursive: true, force: true });
    await fs.mkdir(root, { recursive: true });
    const extraMounts: string[] = [];
    const scratch = ['tmp', 'run', 'var'];
    const skip = new Set(['proc', 'sys', 'dev', 'lost+found', ...scratch]);
    // Mount points made here: a user-namespaced root may not create them in a root-owned directory.
    for (const d of ['proc', 'sys', 'dev']) await fs.mkdir(path.join(root, d));
    for (const e of await fs.readdir('/', { withFileTypes: true })) {
      if (skip.has(e.name) || e.name.includes(':')) continue;
      if (e.isSymbolicLink()) await fs.symlink(await fs.readlink(path.join('/', e.name)), path.join(root, e.name));
      else if (e.isDirectory()) {
        await fs.mkdir(path.join(root, e.name));
        extraMounts.push(`rbind:/${e.name}:/${e.name}:ro:rprivate`);
      }
    }
    for (const d of scratch) {
      await fs.mkdir(path.join(root, d));
      extraMounts.push(`tmpfs:tmpfs:/${d}:mode=${d === 'tmp' ? '1777' : '755'},nosuid,nodev:`);
    }
    return { rootfs: root, mounted: '', extraMounts };
  }

  /** Whatever a run mounted for the root (idempotent). */
  async unmount(id: string): Promise<void> {
    await unmountUnder(path.join(this.files.dir(id), 'rootfs'));
    await unmountUnder(path.join(this.files.dir(id), 'approot'));
  }
}
