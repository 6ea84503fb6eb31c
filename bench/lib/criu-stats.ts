// CRIU's stats-dump / stats-restore images, decoded without a schema
// compiler: two uint32 magics, a uint32 length, then a stats_entry message
// (criu/images/stats.proto: dump = 1, restore = 2). Times are microseconds.
import { readFileSync, readdirSync, statSync } from 'node:fs';
import * as path from 'node:path';

export interface DumpStats {
  freezingUs: number;
  frozenUs: number;
  memdumpUs: number;
  memwriteUs: number;
  pagesScanned: number;
  pagesWritten: number;
}

export interface RestoreStats {
  forkingUs: number;
  restoreUs: number;
  pagesRestored: number;
}

const IMG_SERVICE_MAGIC = 0x55105940;
const STATS_MAGIC = 0x57093306;

/** Field number -> value for varint fields, and raw bytes for length-delimited ones. */
function decode(buf: Buffer): Map<number, number | Buffer> {
  const out = new Map<number, number | Buffer>();
  let i = 0;
  const varint = (): number => {
    let v = 0;
    let mul = 1;
    for (;;) {
      const b = buf[i++];
      if (b === undefined) throw new Error('truncated varint');
      v += (b & 0x7f) * mul;
      if (!(b & 0x80)) return v;
      mul *= 128;
    }
  };
  while (i < buf.length) {
    const key = varint();
    const field = Math.floor(key / 8);
    const wire = key & 7;
    if (wire === 0) out.set(field, varint());
    else if (wire === 2) {
      const len = varint();
      out.set(field, buf.subarray(i, i + len));
      i += len;
    } else if (wire === 5) i += 4;
    else if (wire === 1) i += 8;
    else throw new Error(`unexpected wire type ${wire}`);
  }
  return out;
}

function entry(file: string): Map<number, number | Buffer> | undefined {
  let b: Buffer;
  try {
    b = readFileSync(file);
  } catch {
    return undefined;
  }
  if (b.length < 12 || b.readUInt32LE(0) !== IMG_SERVICE_MAGIC || b.readUInt32LE(4) !== STATS_MAGIC) return undefined;
  const len = b.readUInt32LE(8);
  return decode(b.subarray(12, 12 + len));
}

const n = (m: Map<number, number | Buffer>, f: number): number => {
  const v = m.get(f);
  return typeof v === 'number' ? v : NaN;
};

export function readDumpStats(dir: string): DumpStats | undefined {
  const e = entry(path.join(dir, 'stats-dump'));
  const d = e?.get(1);
  if (!(d instanceof Buffer)) return undefined;
  const m = decode(d);
  return { freezingUs: n(m, 1), frozenUs: n(m, 2), memdumpUs: n(m, 3), memwriteUs: n(m, 4), pagesScanned: n(m, 5), pagesWritten: n(m, 7) };
}

export function readRestoreStats(dir: string): RestoreStats | undefined {
  const e = entry(path.join(dir, 'stats-restore'));
  const r = e?.get(2);
  if (!(r instanceof Buffer)) return undefined;
  const m = decode(r);
  return { forkingUs: n(m, 3), restoreUs: n(m, 4), pagesRestored: n(m, 5) };
}

/** Bytes of CRIU image data in a directory tree (logs and stats left out). */
export function imageBytes(dir: string): number {
  let total = 0;
  let entries;
  try {
    entries = readdirSync(dir, { withFileTypes: true });
  } catch {
    return 0;
  }
  for (const e of entries) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) total += imageBytes(p);
    else if (e.isFile() && !e.name.endsWith('.log') && !e.name.startsWith('stats-')) total += statSync(p).size;
  }
  return total;
}
