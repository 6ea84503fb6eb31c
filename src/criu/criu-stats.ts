// CRIU's statistics images: `stats-dump` (written by DUMP/PRE_DUMP) and `stats-restore`
// (RESTORE), in the work directory. Schema: proto/criu/stats.proto.
//
// A CRIU image file starts with two little-endian uint32 magics; this one is a "service" image
// (IMG_SERVICE_MAGIC) of type STATS_MAGIC, holding one entry: a uint32 length, then the message.

import * as fs from 'node:fs';
import * as path from 'node:path';
import * as protobuf from 'protobufjs';

import { findRepoRoot } from './criu-messages';

export const IMG_SERVICE_MAGIC = 0x55105940;
export const STATS_MAGIC = 0x57093306;

/** Times in microseconds, as CRIU measures them. */
export interface CriuDumpStats {
  freezing_time: number;
  frozen_time: number;
  memdump_time: number;
  memwrite_time: number;
  pages_scanned: number;
  pages_skipped_parent: number;
  pages_written: number;
  irmap_resolve?: number;
  pages_lazy: number;
  page_pipes?: number;
  page_pipe_bufs?: number;
  shpages_scanned?: number;
  shpages_skipped_parent?: number;
  shpages_written?: number;
}

export interface CriuRestoreStats {
  pages_compared: number;
  pages_skipped_cow: number;
  forking_time: number;
  restore_time: number;
  pages_restored?: number;
}

export interface CriuStats {
  dump?: CriuDumpStats;
  restore?: CriuRestoreStats;
}

let statsType: protobuf.Type | undefined;

function loadType(): protobuf.Type {
  if (statsType) return statsType;
  const root = new protobuf.Root();
  root.loadSync(path.join(findRepoRoot(), 'proto', 'criu', 'stats.proto'), { keepCase: true });
  root.resolveAll();
  statsType = root.lookupType('criu.stats_entry');
  return statsType;
}

/** Decodes the bytes of a stats image; throws on a wrong magic or a truncated entry. */
export function decodeStatsImage(buf: Buffer): CriuStats {
  if (buf.length < 12) throw new Error(`CRIU stats image too short (${buf.length} bytes)`);
  const m1 = buf.readUInt32LE(0);
  const m2 = buf.readUInt32LE(4);
  if (m1 !== IMG_SERVICE_MAGIC || m2 !== STATS_MAGIC) {
    throw new Error(`not a CRIU stats image (magic 0x${m1.toString(16)} 0x${m2.toString(16)})`);
  }
  const len = buf.readUInt32LE(8);
  if (12 + len > buf.length) throw new Error(`CRIU stats image truncated (entry of ${len} bytes, ${buf.length - 12} present)`);
  const type = loadType();
  const msg = type.decode(buf.subarray(12, 12 + len));
  return type.toObject(msg, { longs: Number, defaults: false }) as CriuStats;
}

/** Reads `stats-dump` or `stats-restore` from a directory; undefined when CRIU wrote none. */
export function readStats(dir: string, which: 'dump' | 'restore'): CriuStats | undefined {
  let buf: Buffer;
  try {
    buf = fs.readFileSync(path.join(dir, `stats-${which}`));
  } catch {
    return undefined;
  }
  return decodeStatsImage(buf);
}
