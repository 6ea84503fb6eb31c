// Section 7: CPU overhead, the seed talk's second table. Context switch time
// by lmbench lat_ctx's method (bench/native/lat-ctx.c: N processes in a ring
// of pipes passing a token, each reading an S KB working set), on the host
// and inside an osvirt busybox container (the same static binary, bind
// mounted, run through ExecContainer so it lives in the container's
// namespaces and cgroups), every process pinned to one CPU.
import { mkdirSync } from 'node:fs';
import * as path from 'node:path';
import { ContainerSpec, MountType } from '../../src/gen/osvirt/v1/container';
import { repoPath } from '../../src/paths';
import { errorText, type Ctx, type SectionResult } from '../lib/context';
import { execIn } from '../lib/exec';
import { run, runOk } from '../lib/proc';
import { num, pct, type Report } from '../lib/report';
import { round } from '../lib/stats';
import { lineChart, PALETTE } from '../lib/svg';

interface LatCtxLine {
  sizeKB: number;
  procs: number;
  cpu: number;
  trips: number;
  hopUs: number;
  minHopUs: number;
  overheadUs: number;
  ctxUs: number;
  samplesHopUs: number[];
}

export interface CtxPoint {
  /** Context switch time, microseconds (hop time minus the no-switch overhead). */
  ctxUs: number;
  hopUs: number;
  overheadUs: number;
  samplesHopUs: number[];
}

export interface CtxData {
  sizesKB: number[];
  procs: number[];
  reps: number;
  msPerRep: number;
  cpu: number;
  /** [sizeKB][procs] */
  host: Record<string, Record<string, CtxPoint>>;
  container: Record<string, Record<string, CtxPoint>>;
  overheadPct: Record<string, Record<string, number>>;
  seed: typeof SEED_CTX;
}

/** The seed talk's table (lmbench lat_ctx, microseconds), N = 10, 50, 100, 200, 500. */
export const SEED_CTX = {
  procs: [10, 50, 100, 200, 500],
  rows: [
    { sizeKB: 0, host: [2.96, 4.31, 4.76, 5.49, 7.0], lxc: [5.26, 6.31, 8.49, 8.35, 10.06], ovr: [77.34, 46.39, 78.22, 52.21, 43.77] },
    { sizeKB: 1, host: [3.46, 5.38, 6.0, 6.63, 8.77], lxc: [5.73, 8.22, 9.45, 9.55, 11.83], ovr: [65.49, 52.71, 57.57, 44.09, 34.85] },
    { sizeKB: 8, host: [6.24, 11.27, 11.87, 15.26, 18.32], lxc: [7.99, 14.62, 15.45, 17.82, 21.09], ovr: [28.14, 29.75, 30.16, 16.71, 15.15] },
    { sizeKB: 16, host: [12.82, 18.96, 22.28, 27.9, 28.88], lxc: [13.07, 21.56, 25.16, 30.54, 32.05], ovr: [1.91, 13.74, 12.93, 9.49, 10.96] },
    { sizeKB: 32, host: [26.25, 33.28, 46.03, 46.67, 47.21], lxc: [20.88, 35.58, 49.36, 49.91, 50.54], ovr: [-20.43, 6.93, 7.24, 6.95, 7.04] },
  ],
};

function parse(out: string): LatCtxLine[] {
  return out
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as LatCtxLine);
}

function point(l: LatCtxLine): CtxPoint {
  return { ctxUs: round(l.ctxUs, 4), hopUs: round(l.hopUs, 4), overheadUs: round(l.overheadUs, 4), samplesHopUs: l.samplesHopUs.map((x) => round(x, 4)) };
}

export async function runContextSwitch(ctx: Ctx): Promise<SectionResult<CtxData>> {
  const t0 = Date.now();
  const { cfg, progress, client, prefix } = ctx;
  if (!ctx.tools.gcc)
    return {
      id: 'context-switch',
      title: 'Context switch',
      status: 'skipped',
      reason: 'gcc is not installed (the ring program is built from bench/native/lat-ctx.c)',
      seconds: 0,
      notes: [],
    };
  const binDir = path.join(ctx.work, 'bin');
  mkdirSync(binDir, { recursive: true });
  const bin = path.join(binDir, 'lat-ctx');
  // Static, so it runs in the busybox container unchanged.
  const cc = await run('gcc', ['-O2', '-static', '-Wall', '-Wextra', '-o', bin, repoPath('bench', 'native', 'lat-ctx.c')]);
  if (cc.code !== 0)
    return {
      id: 'context-switch',
      title: 'Context switch',
      status: 'skipped',
      reason: `cannot build a static lat-ctx (libc6-dev provides libc.a): ${cc.stderr.trim().slice(-300)}`,
      seconds: (Date.now() - t0) / 1000,
      notes: [],
    };

  const name = `${prefix}ctx`;
  await client.api.containers.createContainer({
    name,
    spec: ContainerSpec.fromPartial({
      driver: 'lxc',
      rootfs: { source: { $case: 'template', value: 'busybox' } },
      network: { mode: { $case: 'none', value: {} } },
      mounts: [{ type: MountType.MOUNT_TYPE_BIND, source: binDir, destination: '/bench', readonly: true }],
    }),
  });
  await client.api.containers.startContainer({ name });

  const data: CtxData = {
    sizesKB: cfg.ctxSizes,
    procs: cfg.ctxProcs,
    reps: cfg.ctxReps,
    msPerRep: cfg.ctxMs,
    cpu: cfg.ctxCpu,
    host: {},
    container: {},
    overheadPct: {},
    seed: SEED_CTX,
  };
  const args = (s: number) => ['-c', String(cfg.ctxCpu), '-r', String(cfg.ctxReps), '-m', String(cfg.ctxMs), '-s', String(s), ...cfg.ctxProcs.map(String)];
  const steps = cfg.ctxSizes.length * 2;
  let step = 0;
  for (const [i, s] of cfg.ctxSizes.entries()) {
    // Alternate which side goes first, so slow drift does not favour one.
    const order = i % 2 === 0 ? (['host', 'container'] as const) : (['container', 'host'] as const);
    for (const where of order) {
      let lines: LatCtxLine[];
      if (where === 'host') {
        lines = parse((await runOk(bin, args(s), { timeoutMs: 600_000 })).stdout);
      } else {
        const r = await execIn(client, name, ['/bench/lat-ctx', ...args(s)]);
        if (r.exitCode !== 0) throw new Error(`lat-ctx in the container exited ${r.exitCode}: ${r.stderr.trim().slice(-300)}`);
        lines = parse(r.stdout);
      }
      const table = where === 'host' ? data.host : data.container;
      table[String(s)] = {};
      for (const l of lines) table[String(s)]![String(l.procs)] = point(l);
      step++;
      progress.tick('sizes', step, steps, `${s} KB ${where}: ${lines.map((l) => num(l.ctxUs)).join(' / ')} us`);
    }
    data.overheadPct[String(s)] = {};
    for (const n of cfg.ctxProcs) {
      const h = data.host[String(s)]?.[String(n)]?.ctxUs;
      const c = data.container[String(s)]?.[String(n)]?.ctxUs;
      if (h !== undefined && c !== undefined) data.overheadPct[String(s)]![String(n)] = round(((c - h) / h) * 100, 2);
    }
  }
  await client.api.containers.deleteContainer({ name, force: true, allowMissing: true }).catch((e) => progress.warn(errorText(e)));
  return { id: 'context-switch', title: 'Context switch', status: 'ok', seconds: (Date.now() - t0) / 1000, notes: [], data };
}

export function renderContextSwitch(r: Report, res: SectionResult<CtxData>): void {
  r.h(2, '7. CPU overhead: context switch time (lat_ctx method)');
  const d = res.data;
  if (!d) {
    r.p(`Not measured: ${res.reason ?? res.status}.`);
    return;
  }
  r.p(
    `bench/native/lat-ctx.c, lmbench lat_ctx's method: N processes in a ring of pipes pass a token; each, on receiving it, reads its own S KB working set. ` +
      `Time per hop minus the same pipe read/write and working-set sum in one process (no switch) = context switch time, in microseconds. ` +
      `Every ring process pinned to CPU ${d.cpu}; median of ${d.reps} repetitions of about ${d.msPerRep} ms each. ` +
      'Host: run directly; osvirt: the same static binary bind-mounted into a busybox container and run with ExecContainer (container namespaces and cgroups). ' +
      "Overhead % = (osvirt - host) / host. Small differences are within the noise of this shared VM (sub-microsecond switches); the 2013 rows are the seed talk's LXC figures.",
  );
  const us = (v: number | undefined) => (v === undefined || !Number.isFinite(v) ? '-' : v.toFixed(2));
  const head = ['S', 'where', ...d.procs.map((n) => `N=${n}`)];
  const rows: string[][] = [];
  for (const s of d.sizesKB) {
    const seed = d.seed.rows.find((x) => x.sizeKB === s);
    rows.push([`${s}k`, 'host', ...d.procs.map((n) => us(d.host[String(s)]?.[String(n)]?.ctxUs))]);
    rows.push(['', 'osvirt', ...d.procs.map((n) => us(d.container[String(s)]?.[String(n)]?.ctxUs))]);
    rows.push(['', 'ovr. %', ...d.procs.map((n) => pct(d.overheadPct[String(s)]?.[String(n)]))]);
    if (seed && d.procs.every((n) => d.seed.procs.includes(n))) {
      const idx = (n: number) => d.seed.procs.indexOf(n);
      rows.push(['', '2013 host', ...d.procs.map((n) => us(seed.host[idx(n)]))]);
      rows.push(['', '2013 lxc', ...d.procs.map((n) => us(seed.lxc[idx(n)]))]);
      rows.push(['', '2013 ovr. %', ...d.procs.map((n) => pct(seed.ovr[idx(n)]))]);
    }
  }
  r.table(head, rows, ['l', 'l', ...d.procs.map(() => 'r' as const)]);
  r.svg(
    'context-switch',
    lineChart({
      title: 'Context switch time: host (solid) vs osvirt container (dashed)',
      xLabel: 'processes in the ring (N)',
      yLabel: 'microseconds per switch',
      categoricalX: d.procs,
      series: d.sizesKB.flatMap((s, i) => [
        { label: `${s}k host`, color: PALETTE[i % PALETTE.length], points: d.procs.map((n) => ({ x: n, y: d.host[String(s)]?.[String(n)]?.ctxUs ?? NaN })) },
        {
          label: `${s}k osvirt`,
          color: PALETTE[i % PALETTE.length],
          dashed: true,
          points: d.procs.map((n) => ({ x: n, y: d.container[String(s)]?.[String(n)]?.ctxUs ?? NaN })),
        },
      ]),
    }),
    'context switch time',
  );
}
