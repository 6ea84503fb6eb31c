// Unpacks one image layer (a tar, gzip- or zstd-compressed) into an empty
// directory, in the form overlayfs reads as a lower layer, and contains
// whatever the tar says:
//
// - paths are cleaned as if the layer's directory were "/": "../../x" and
//   "/x" both land on "<dir>/x", never outside;
// - an entry whose parent is a symlink is refused (extraction never follows
//   a link, so a symlink pointing anywhere is stored as the text it is);
// - a hard link must name a regular file already unpacked in this layer,
//   reached without symlinks;
// - device nodes are not created (a container's /dev comes from osvirt);
//   fifos are;
// - setuid and setgid bits are kept, as every runtime does: the layer store
//   is 0700 root, so no host user can reach them, and inside the container
//   the files belong to the container's own (unprivileged) ids;
// - metadata headers (pax, GNU long names) larger than 1 MiB are refused.
//
// OCI whiteouts become overlay whiteouts: ".wh.NAME" a 0/0 character device
// NAME, ".wh..wh..opq" the trusted.overlay.opaque xattr on its directory.
//
// The uncompressed stream's sha256 must be the layer's diff_id.
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, promises as fs } from 'node:fs';
import * as path from 'node:path';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { promisify } from 'node:util';
import { createGunzip } from 'node:zlib';
import { Decompress } from 'fzstd';
import { Parser, type ReadEntry } from 'tar';

const run = promisify(execFile);

export class LayerError extends Error {}

export type Compression = 'gzip' | 'zstd' | 'none';

/** The compression a layer's media type names. */
export function compressionOf(mediaType: string): Compression {
  if (/\+zstd$|\.zstd$/.test(mediaType)) return 'zstd';
  if (/gzip$|\.tar\.gzip$/.test(mediaType) || mediaType === 'application/vnd.docker.image.rootfs.diff.tar.gzip') return 'gzip';
  if (/tar$/.test(mediaType)) return 'none';
  throw new LayerError(`unsupported layer media type ${mediaType}`);
}

function zstdStream(): Transform {
  const out: Transform = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      try {
        d.push(chunk);
        cb();
      } catch (e) {
        cb(e as Error);
      }
    },
    flush(cb) {
      try {
        d.push(new Uint8Array(0), true);
        cb();
      } catch (e) {
        cb(e as Error);
      }
    },
  });
  const d = new Decompress((chunk) => out.push(Buffer.from(chunk)));
  return out;
}

/** "a/../b//c" with "/" as the root: the path inside the layer, or "" for the root itself. */
export function cleanPath(p: string): string {
  return path.posix
    .normalize('/' + p)
    .replace(/^\/+/, '')
    .replace(/\/+$/, '');
}

export interface UnpackResult {
  /** sha256 of the uncompressed tar. */
  diffId: string;
  /** Bytes written to files. */
  size: number;
  /** Entries not created, with why (device nodes). */
  skipped: string[];
}

/**
 * Unpacks `blob` (a file, or the layer's bytes as they download) into the
 * empty directory `dir`. Throws LayerError for a layer it refuses; `dir` is
 * then in an unknown state (callers unpack into a temporary directory and
 * remove it).
 */
export async function unpackLayer(blob: string | Readable, compression: Compression, dir: string): Promise<UnpackResult> {
  const hash = createHash('sha256');
  const hasher = new Transform({
    transform(chunk: Buffer, _e, cb) {
      hash.update(chunk);
      cb(null, chunk);
    },
  });
  const stages: (Readable | Transform)[] = [typeof blob === 'string' ? createReadStream(blob) : blob];
  if (compression === 'gzip') stages.push(createGunzip({ chunkSize: 256 * 1024 }));
  if (compression === 'zstd') stages.push(zstdStream());
  stages.push(hasher);

  const skipped: string[] = [];
  let size = 0;
  const dirs = new Map<string, { mode: number; uid: number; gid: number; mtime?: Date }>();
  const opaque: string[] = [];
  const whiteouts: string[] = [];
  // Entries are handled one at a time, in order: a later entry may depend on an earlier one.
  let chain: Promise<void> = Promise.resolve();
  let failure: Error | undefined;

  /** Makes the parents of `rel` (cleaned) as directories, refusing to go through anything that is not one. */
  const parents = async (rel: string): Promise<void> => {
    const parts = rel.split('/').slice(0, -1);
    let cur = dir;
    for (const part of parts) {
      cur = path.join(cur, part);
      let st;
      try {
        st = await fs.lstat(cur);
      } catch {
        await fs.mkdir(cur, { mode: 0o755 });
        continue;
      }
      if (st.isSymbolicLink()) throw new LayerError(`"${rel}" goes through the symlink "${path.relative(dir, cur)}"`);
      if (!st.isDirectory()) throw new LayerError(`"${rel}" goes through "${path.relative(dir, cur)}", which is not a directory`);
    }
  };
  const replace = async (target: string): Promise<void> => {
    const st = await fs.lstat(target).catch(() => undefined);
    if (st && !(st.isDirectory() && !st.isSymbolicLink())) await fs.rm(target, { force: true });
  };

  const handle = async (entry: ReadEntry): Promise<void> => {
    const rel = cleanPath(entry.path);
    const base = path.posix.basename(rel);
    const target = path.join(dir, rel);
    if (rel === '') {
      if (entry.type === 'Directory')
        dirs.set(dir, { mode: entry.mode ?? 0o755, uid: entry.uid ?? 0, gid: entry.gid ?? 0, ...(entry.mtime ? { mtime: entry.mtime } : {}) });
      return void entry.resume();
    }
    await parents(rel);
    if (base === '.wh..wh..opq') {
      opaque.push(path.dirname(target));
      return void entry.resume();
    }
    if (base.startsWith('.wh.')) {
      const hidden = path.join(path.dirname(target), base.slice(4));
      if (!base.slice(4) || base.slice(4) === '.' || base.slice(4) === '..') throw new LayerError(`whiteout "${rel}" names nothing`);
      whiteouts.push(hidden);
      return void entry.resume();
    }
    const mode = (entry.mode ?? 0o644) & 0o7777;
    const uid = entry.uid ?? 0;
    const gid = entry.gid ?? 0;
    switch (entry.type) {
      case 'Directory': {
        const st = await fs.lstat(target).catch(() => undefined);
        if (st && !st.isDirectory()) await fs.rm(target, { force: true });
        if (!st || !st.isDirectory()) await fs.mkdir(target, { mode: 0o700 });
        dirs.set(target, { mode, uid, gid, ...(entry.mtime ? { mtime: entry.mtime } : {}) });
        return void entry.resume();
      }
      case 'File':
      case 'OldFile':
      case 'ContiguousFile': {
        await replace(target);
        const fh = await fs.open(target, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW, 0o600);
        try {
          // Written in pieces of up to 1 MiB: a write per decompressed chunk (16-64 KiB) costs more
          // in round trips to the thread pool than the copying does.
          let pending: Buffer[] = [];
          let pendingBytes = 0;
          for await (const chunk of entry as AsyncIterable<Buffer>) {
            pending.push(chunk);
            pendingBytes += chunk.length;
            size += chunk.length;
            if (pendingBytes >= 1 << 20) {
              await fh.writev(pending);
              pending = [];
              pendingBytes = 0;
            }
          }
          if (pending.length) await fh.writev(pending);
          await fh.chown(uid, gid);
          await fh.chmod(mode);
          if (entry.mtime) await fh.utimes(entry.mtime, entry.mtime);
        } finally {
          await fh.close();
        }
        return;
      }
      case 'SymbolicLink': {
        await replace(target);
        await fs.symlink(entry.linkpath ?? '', target);
        await fs.lchown(target, uid, gid);
        if (entry.mtime) await fs.lutimes(target, entry.mtime, entry.mtime);
        return void entry.resume();
      }
      case 'Link': {
        const src = cleanPath(entry.linkpath ?? '');
        if (!src) throw new LayerError(`hard link "${rel}" names no target`);
        await parents(src); // the target's own path may not go through a symlink either
        const from = path.join(dir, src);
        const st = await fs.lstat(from).catch(() => undefined);
        if (!st?.isFile()) throw new LayerError(`hard link "${rel}" -> "${src}": the target is not a regular file of this layer`);
        await replace(target);
        await fs.link(from, target);
        return void entry.resume();
      }
      case 'FIFO': {
        await replace(target);
        await run('mknod', ['-m', mode.toString(8), target, 'p']);
        await fs.lchown(target, uid, gid);
        return void entry.resume();
      }
      case 'CharacterDevice':
      case 'BlockDevice':
        skipped.push(`${rel}: a device node (${entry.type}); a container's /dev comes from osvirt`);
        return void entry.resume();
      default:
        // Global and per-file metadata (pax, GNU long names) is consumed by the parser itself.
        skipped.push(`${rel}: entry type ${entry.type}`);
        return void entry.resume();
    }
  };

  const parser = new Parser({
    strict: true,
    // Refuses pax headers and GNU long names over 1 MiB (a "huge header" layer).
    maxMetaEntrySize: 1024 * 1024,
    onwarn: (code: string, message: string | Error) => {
      failure ??= new LayerError(`bad tar: ${code}: ${message instanceof Error ? message.message : message}`);
    },
  });
  // node-tar skips (and never buffers) a metadata entry over maxMetaEntrySize; osvirt refuses the layer.
  parser.on('ignoredEntry', (entry: ReadEntry) => {
    if (entry.meta) failure ??= new LayerError(`a metadata header of ${entry.size} bytes (${entry.type}) is over the 1 MiB limit`);
  });
  parser.on('entry', (entry: ReadEntry) => {
    // Pause the parser's data for this entry until the previous ones are done.
    entry.pause();
    chain = chain.then(async () => {
      if (failure) return void entry.resume();
      try {
        await handle(entry);
      } catch (e) {
        failure ??= e instanceof LayerError ? e : new LayerError(`cannot unpack "${entry.path}": ${(e as Error).message}`);
        entry.resume();
      }
    });
  });
  const done = new Promise<void>((resolve, reject) => {
    parser.on('end', () => resolve());
    parser.on('error', (e: Error) => reject(new LayerError(`bad tar: ${e.message}`)));
  });
  try {
    await Promise.all([
      (pipeline as unknown as (...s: unknown[]) => Promise<void>)(...stages, async (source: AsyncIterable<Buffer>) => {
        for await (const chunk of source) if (!parser.write(chunk)) await new Promise((r) => parser.once('drain', r));
        parser.end();
      }),
      done,
    ]);
  } catch (e) {
    throw e instanceof LayerError ? e : new LayerError(`cannot read the layer: ${(e as Error).message}`);
  }
  await chain;
  if (failure) throw failure;

  for (const w of whiteouts) {
    await fs.rm(w, { recursive: true, force: true });
    await run('mknod', ['-m', '0', w, 'c', '0', '0']);
  }
  for (const o of opaque) await run('setfattr', ['-n', 'trusted.overlay.opaque', '-v', 'y', o]);
  // Directory modes last (a 0555 directory would have refused its own entries), deepest first.
  for (const [d, m] of [...dirs.entries()].sort((a, b) => b[0].length - a[0].length)) {
    await fs.chown(d, m.uid, m.gid);
    await fs.chmod(d, m.mode);
    if (m.mtime) await fs.utimes(d, m.mtime, m.mtime);
  }
  return { diffId: `sha256:${hash.digest('hex')}`, size, skipped };
}
