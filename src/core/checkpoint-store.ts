// Checkpoints on disk: <state>/checkpoints/<container>/<name>/ holding
// checkpoint/ (CRIU images, the layout checkpointctl and Podman read) and
// osvirt.json (our metadata). A checkpoint is only listed once committed.
import { spawn } from 'node:child_process';
import { promises as fs } from 'node:fs';
import type { Readable } from 'node:stream';
import * as path from 'node:path';
import { Checkpoint, ContainerSpec } from '../gen/osvirt/v1/container';
import { writeFileAtomic } from './atomic-file';
import { alreadyExists, invalidArgument, isOsvirtError, notFound } from './errors';
import { validateName } from './validate';

export interface ReservedCheckpoint {
  dir: string;
  imageDir: string;
}

async function dirSize(dir: string): Promise<number> {
  let total = 0;
  for (const e of await fs.readdir(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) total += await dirSize(p);
    else if (e.isFile()) total += (await fs.stat(p)).size;
  }
  return total;
}

export class CheckpointStore {
  readonly root: string;

  constructor(stateDir: string) {
    this.root = path.join(stateDir, 'checkpoints');
  }

  async init(): Promise<void> {
    await fs.mkdir(this.root, { recursive: true, mode: 0o700 });
  }

  private dir(container: string, name: string): string {
    return path.join(this.root, container, name);
  }

  async exists(container: string, name: string): Promise<boolean> {
    return fs.access(path.join(this.dir(container, name), 'osvirt.json')).then(
      () => true,
      () => false,
    );
  }

  async reserve(container: string, name: string): Promise<ReservedCheckpoint> {
    const dir = this.dir(container, name);
    if (await this.exists(container, name)) throw alreadyExists('checkpoint', name);
    await fs.rm(dir, { recursive: true, force: true });
    const imageDir = path.join(dir, 'checkpoint');
    await fs.mkdir(imageDir, { recursive: true, mode: 0o700 });
    return { dir, imageDir };
  }

  /**
   * The checkpoint's record before the driver runs (pending.json): what a
   * daemon killed during the dump needs to register a complete dump later.
   */
  async writePending(r: ReservedCheckpoint, cp: Checkpoint): Promise<void> {
    await writeFileAtomic(path.join(r.dir, 'pending.json'), JSON.stringify(Checkpoint.toJSON(cp)) + '\n', 0o600, false);
  }

  /** Checkpoint directories with no osvirt.json: left by a daemon that died before committing them. */
  async uncommitted(): Promise<{ container: string; name: string; reserved: ReservedCheckpoint; pending?: Checkpoint }[]> {
    const out: { container: string; name: string; reserved: ReservedCheckpoint; pending?: Checkpoint }[] = [];
    for (const container of await fs.readdir(this.root).catch(() => [] as string[])) {
      if (container.startsWith('.')) continue;
      for (const name of await fs.readdir(path.join(this.root, container)).catch(() => [] as string[])) {
        if (await this.exists(container, name)) continue;
        const dir = this.dir(container, name);
        const pending = await fs.readFile(path.join(dir, 'pending.json'), 'utf8').then(
          (t) => Checkpoint.fromJSON(JSON.parse(t)),
          () => undefined,
        );
        out.push({ container, name, reserved: { dir, imageDir: path.join(dir, 'checkpoint') }, ...(pending ? { pending } : {}) });
      }
    }
    return out;
  }

  async commit(r: ReservedCheckpoint, cp: Checkpoint): Promise<Checkpoint> {
    // spec.dump, as in Podman's layout: here the osvirt spec the container ran with.
    if (cp.spec) await writeFileAtomic(path.join(r.dir, 'spec.dump'), JSON.stringify(ContainerSpec.toJSON(cp.spec), null, 2) + '\n', 0o600);
    cp.sizeBytes = BigInt(await dirSize(r.dir));
    await writeFileAtomic(path.join(r.dir, 'osvirt.json'), JSON.stringify(Checkpoint.toJSON(cp), null, 2) + '\n', 0o600);
    await fs.rm(path.join(r.dir, 'pending.json'), { force: true });
    return cp;
  }

  async get(container: string, name: string): Promise<{ checkpoint: Checkpoint; imageDir: string }> {
    const dir = this.dir(container, name);
    let raw: string;
    try {
      raw = await fs.readFile(path.join(dir, 'osvirt.json'), 'utf8');
    } catch {
      throw notFound('checkpoint', name);
    }
    return { checkpoint: Checkpoint.fromJSON(JSON.parse(raw)), imageDir: path.join(dir, 'checkpoint') };
  }

  async list(container: string): Promise<Checkpoint[]> {
    let names: string[];
    try {
      names = await fs.readdir(path.join(this.root, container));
    } catch {
      return [];
    }
    const out: Checkpoint[] = [];
    for (const n of names) {
      // Unlocked: one deleted meanwhile is left out rather than failing the list.
      const cp = await this.get(container, n).catch((e: unknown) => {
        if (isOsvirtError(e) && e.code === 'NOT_FOUND') return undefined;
        throw e;
      });
      if (cp) out.push(cp.checkpoint);
    }
    return out.sort((a, b) => (b.createTime?.getTime() ?? 0) - (a.createTime?.getTime() ?? 0));
  }

  /** The checkpoint directory as a tar stream (checkpoint/, *.dump, rootfs-diff.tar, osvirt.json). */
  async export(container: string, name: string): Promise<Readable> {
    await this.get(container, name);
    const tar = spawn('tar', ['-C', this.dir(container, name), '--numeric-owner', '-cf', '-', '.'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let err = '';
    tar.stderr.on('data', (b: Buffer) => (err += b.toString()));
    tar.on('close', (code) => {
      if (code !== 0) tar.stdout.destroy(new Error(`tar failed: ${err.trim()}`));
    });
    return tar.stdout;
  }

  /**
   * Unpack an exported archive into a staging dir, check it is one of ours,
   * then move it into place. Untrusted input: GNU tar refuses ".." members
   * and absolute names; the staging dir is removed on any failure.
   */
  async import(
    data: AsyncIterable<Buffer>,
    as: { container: string; name: string },
    maxBytes: number,
    locked: (container: string, name: string, fn: () => Promise<void>) => Promise<void> = (_c, _n, fn) => fn(),
  ): Promise<Checkpoint> {
    const staging = path.join(this.root, `.import-${process.pid}-${Date.now()}`);
    await fs.mkdir(staging, { recursive: true, mode: 0o700 });
    try {
      const tar = spawn('tar', ['-C', staging, '--no-same-owner', '--no-overwrite-dir', '-xf', '-'], { stdio: ['pipe', 'ignore', 'pipe'] });
      let err = '';
      tar.stderr.on('data', (b: Buffer) => (err += b.toString()));
      const done = new Promise<number>((resolve) => tar.on('close', (code) => resolve(code ?? 1)));
      tar.stdin.on('error', () => undefined);
      let total = 0;
      for await (const chunk of data) {
        total += chunk.length;
        if (total > maxBytes) {
          tar.kill();
          throw invalidArgument('data', `archive is larger than ${maxBytes} bytes`);
        }
        if (!tar.stdin.write(chunk)) await new Promise((r) => tar.stdin.once('drain', r));
      }
      tar.stdin.end();
      if ((await done) !== 0) throw invalidArgument('data', `not a readable tar archive: ${err.trim().split('\n')[0]}`);
      let cp: Checkpoint;
      try {
        cp = Checkpoint.fromJSON(JSON.parse(await fs.readFile(path.join(staging, 'osvirt.json'), 'utf8')));
      } catch {
        throw invalidArgument('data', 'not an osvirt checkpoint archive (no valid osvirt.json)');
      }
      if (
        !(await fs.stat(path.join(staging, 'checkpoint')).then(
          (st) => st.isDirectory(),
          () => false,
        ))
      ) {
        throw invalidArgument('data', 'not an osvirt checkpoint archive (no checkpoint/ directory)');
      }
      // The names come from the caller's start message (read by now) or the archive.
      if (as.container) validateName('start.name', as.container);
      if (as.name) validateName('start.checkpoint', as.name);
      cp.container = as.container || cp.container;
      cp.name = as.name || cp.name;
      // Names end up in paths: an archive's own names are checked like a caller's.
      validateName('checkpoint', cp.name);
      validateName('name', cp.container);
      await locked(cp.container, cp.name, async () => {
        if (await this.exists(cp.container, cp.name)) throw alreadyExists('checkpoint', cp.name);
        await writeFileAtomic(path.join(staging, 'osvirt.json'), JSON.stringify(Checkpoint.toJSON(cp), null, 2) + '\n', 0o600);
        const dest = this.dir(cp.container, cp.name);
        await fs.mkdir(path.dirname(dest), { recursive: true, mode: 0o700 });
        await fs.rm(dest, { recursive: true, force: true });
        await fs.rename(staging, dest);
      });
      return cp;
    } finally {
      await fs.rm(staging, { recursive: true, force: true });
    }
  }

  async remove(container: string, name: string): Promise<void> {
    await fs.rm(this.dir(container, name), { recursive: true, force: true });
  }

  /** Every checkpoint directory of a container, committed or not. */
  async names(container: string): Promise<string[]> {
    return fs.readdir(path.join(this.root, container)).catch(() => []);
  }

  /** The container's checkpoint directory, once empty (a checkpoint imported meanwhile stays). */
  async removeContainerDir(container: string): Promise<void> {
    await fs.rmdir(path.join(this.root, container)).catch((e: NodeJS.ErrnoException) => {
      if (e.code !== 'ENOENT' && e.code !== 'ENOTEMPTY') throw e;
    });
  }
}
