// Small, dependency-free SVG charts for the report: distributions (box plus
// every sample), grouped horizontal bars, and line/scatter charts. Output is
// deterministic (no random jitter) so re-rendering a JSON gives the same file.
import { summarize } from './stats';

export const PALETTE = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f', '#17becf', '#bcbd22'];

const FONT = 'font-family="DejaVu Sans, Helvetica, Arial, sans-serif"';

export function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

function fmt(v: number): string {
  if (!Number.isFinite(v)) return '-';
  const a = Math.abs(v);
  if (a >= 1e6) return `${+(v / 1e6).toPrecision(3)}M`;
  if (a >= 1e4) return `${+(v / 1e3).toPrecision(3)}k`;
  if (a >= 100) return v.toFixed(0);
  if (a >= 10) return v.toFixed(1);
  if (a >= 1) return v.toFixed(2);
  return v.toPrecision(2);
}

/** Axis tick labels: plain numbers without trailing zeros. */
function fmtTick(v: number): string {
  if (Math.abs(v) >= 1e4) return fmt(v);
  return String(+v.toPrecision(6));
}

interface Scale {
  (v: number): number;
  ticks: number[];
}

function niceStep(range: number, count: number): number {
  const raw = range / Math.max(1, count);
  const mag = 10 ** Math.floor(Math.log10(raw));
  const n = raw / mag;
  return (n >= 5 ? 10 : n >= 2 ? 5 : n >= 1 ? 2 : 1) * mag;
}

function linearScale(lo: number, hi: number, a: number, b: number, tickCount = 6): Scale {
  if (!(hi > lo)) hi = lo + 1;
  const step = niceStep(hi - lo, tickCount);
  const l = Math.floor(lo / step) * step;
  const h = Math.ceil(hi / step) * step;
  const f = ((v: number) => a + ((v - l) / (h - l)) * (b - a)) as Scale;
  f.ticks = [];
  for (let t = l; t <= h + step / 2; t += step) f.ticks.push(+t.toPrecision(12));
  return f;
}

function logScale(lo: number, hi: number, a: number, b: number): Scale {
  const l = Math.floor(Math.log10(Math.max(lo, 1e-9)));
  const h = Math.ceil(Math.log10(Math.max(hi, lo * 1.0001)));
  const f = ((v: number) => a + ((Math.log10(Math.max(v, 1e-12)) - l) / Math.max(1, h - l)) * (b - a)) as Scale;
  f.ticks = [];
  for (let e = l; e <= h; e++) for (const m of h - l <= 2 ? [1, 2, 5] : [1]) if (e < h || m === 1) f.ticks.push(m * 10 ** e);
  return f;
}

function frame(width: number, height: number, title: string, body: string[]): string {
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" ${FONT} font-size="12">`,
    `<rect width="${width}" height="${height}" fill="#ffffff"/>`,
    `<text x="${width / 2}" y="20" text-anchor="middle" font-size="14" font-weight="bold">${esc(title)}</text>`,
    ...body,
    '</svg>',
    '',
  ].join('\n');
}

export interface DistSeries {
  label: string;
  samples: number[];
  color?: string;
}

/** One row per series: every sample as a dot, the p25-p75 box, the median bar and the p95 tick. */
export function distributionPlot(o: { title: string; unit: string; series: DistSeries[]; log?: boolean }): string {
  const series = o.series.filter((s) => s.samples.length > 0);
  const rowH = 36;
  const left = 250;
  const right = 150;
  const width = 900;
  const top = 36;
  const height = top + rowH * Math.max(1, series.length) + 48;
  const all = series.flatMap((s) => s.samples).filter((x) => Number.isFinite(x) && x > 0);
  const lo = all.length ? Math.min(...all) : 1;
  const hi = all.length ? Math.max(...all) : 10;
  const useLog = o.log ?? hi / Math.max(lo, 1e-9) > 30;
  const x = useLog ? logScale(lo, hi, left, width - right) : linearScale(0, hi, left, width - right);
  const body: string[] = [];
  const axisY = top + rowH * series.length + 6;
  for (const t of x.ticks) {
    const px = x(t);
    if (px < left - 0.5 || px > width - right + 0.5) continue;
    body.push(`<line x1="${px.toFixed(1)}" y1="${top - 4}" x2="${px.toFixed(1)}" y2="${axisY}" stroke="#e5e5e5"/>`);
    body.push(`<text x="${px.toFixed(1)}" y="${axisY + 16}" text-anchor="middle" fill="#444">${fmtTick(t)}</text>`);
  }
  body.push(`<text x="${(left + width - right) / 2}" y="${axisY + 34}" text-anchor="middle" fill="#444">${esc(o.unit)}${useLog ? ' (log scale)' : ''}</text>`);
  body.push(`<text x="${width - right + 8}" y="${top - 8}" fill="#444">p50 / p95</text>`);
  series.forEach((s, i) => {
    const color = s.color ?? PALETTE[i % PALETTE.length]!;
    const cy = top + rowH * i + rowH / 2;
    const sm = summarize(s.samples);
    body.push(`<text x="${left - 10}" y="${cy + 4}" text-anchor="end">${esc(s.label)}</text>`);
    // Deterministic jitter: spread dots over the row by their index.
    s.samples.forEach((v, j) => {
      if (!Number.isFinite(v)) return;
      const jy = cy + (((j * 7919) % 23) / 22 - 0.5) * (rowH - 14);
      body.push(`<circle cx="${x(v).toFixed(1)}" cy="${jy.toFixed(1)}" r="2" fill="${color}" fill-opacity="0.35"/>`);
    });
    const bx1 = x(sm.p25);
    const bx2 = x(sm.p75);
    body.push(
      `<rect x="${bx1.toFixed(1)}" y="${cy - 9}" width="${Math.max(1, bx2 - bx1).toFixed(1)}" height="18" fill="none" stroke="${color}" stroke-width="1.5"/>`,
    );
    body.push(`<line x1="${x(sm.p50).toFixed(1)}" y1="${cy - 12}" x2="${x(sm.p50).toFixed(1)}" y2="${cy + 12}" stroke="${color}" stroke-width="3"/>`);
    body.push(`<line x1="${bx2.toFixed(1)}" y1="${cy}" x2="${x(sm.p95).toFixed(1)}" y2="${cy}" stroke="${color}" stroke-width="1.2"/>`);
    body.push(`<line x1="${x(sm.p95).toFixed(1)}" y1="${cy - 6}" x2="${x(sm.p95).toFixed(1)}" y2="${cy + 6}" stroke="${color}" stroke-width="1.5"/>`);
    body.push(`<text x="${width - right + 8}" y="${cy + 4}">${fmt(sm.p50)} / ${fmt(sm.p95)}</text>`);
  });
  body.push(`<line x1="${left}" y1="${axisY}" x2="${width - right}" y2="${axisY}" stroke="#444"/>`);
  return frame(width, height, o.title, body);
}

export interface BarGroup {
  label: string;
  bars: { label: string; value: number; color?: string; note?: string }[];
}

/** Horizontal grouped bars with their values written at the end. */
export function barChart(o: { title: string; unit: string; groups: BarGroup[]; legend?: { label: string; color: string }[] }): string {
  const barH = 16;
  const gap = 12;
  const left = 250;
  const right = 170;
  const width = 900;
  const top = o.legend ? 56 : 36;
  const groupH = (g: BarGroup) => g.bars.length * (barH + 2) + gap;
  const height = top + o.groups.reduce((a, g) => a + groupH(g), 0) + 44;
  const max = Math.max(1e-9, ...o.groups.flatMap((g) => g.bars.map((b) => (Number.isFinite(b.value) ? b.value : 0))));
  const x = linearScale(0, max, left, width - right);
  const body: string[] = [];
  const axisY = height - 40;
  for (const t of x.ticks) {
    const px = x(t);
    if (px > width - right + 0.5) continue;
    body.push(`<line x1="${px.toFixed(1)}" y1="${top - 4}" x2="${px.toFixed(1)}" y2="${axisY}" stroke="#e5e5e5"/>`);
    body.push(`<text x="${px.toFixed(1)}" y="${axisY + 16}" text-anchor="middle" fill="#444">${fmtTick(t)}</text>`);
  }
  body.push(`<text x="${(left + width - right) / 2}" y="${axisY + 34}" text-anchor="middle" fill="#444">${esc(o.unit)}</text>`);
  if (o.legend) {
    let lx = left;
    for (const l of o.legend) {
      body.push(`<rect x="${lx}" y="32" width="12" height="12" fill="${l.color}"/>`);
      body.push(`<text x="${lx + 16}" y="42">${esc(l.label)}</text>`);
      lx += 24 + l.label.length * 7;
    }
  }
  let y = top;
  for (const g of o.groups) {
    const h = groupH(g) - gap;
    body.push(`<text x="${left - 10}" y="${y + h / 2 + 4}" text-anchor="end">${esc(g.label)}</text>`);
    g.bars.forEach((b, i) => {
      const color = b.color ?? PALETTE[i % PALETTE.length]!;
      const w = Number.isFinite(b.value) ? Math.max(0, x(b.value) - left) : 0;
      const by = y + i * (barH + 2);
      body.push(`<rect x="${left}" y="${by}" width="${w.toFixed(1)}" height="${barH}" fill="${color}"/>`);
      body.push(`<text x="${left + w + 6}" y="${by + barH - 4}" fill="#222">${esc(`${fmt(b.value)}${b.note ? ' ' + b.note : ''}`)}</text>`);
    });
    y += groupH(g);
  }
  body.push(`<line x1="${left}" y1="${axisY}" x2="${width - right}" y2="${axisY}" stroke="#444"/>`);
  return frame(width, height, o.title, body);
}

export interface LineSeries {
  label: string;
  points: { x: number; y: number }[];
  color?: string;
  dashed?: boolean;
  /** Dots only (a scatter). */
  pointsOnly?: boolean;
}

/** Lines (or scatter) over a numeric or categorical x axis. */
export function lineChart(o: { title: string; xLabel: string; yLabel: string; series: LineSeries[]; categoricalX?: number[]; yFromZero?: boolean }): string {
  const left = 70;
  const right = 200;
  const width = 900;
  const top = 36;
  const height = 440;
  const bottom = height - 50;
  const xs = o.series.flatMap((s) => s.points.map((p) => p.x));
  const ys = o.series.flatMap((s) => s.points.map((p) => p.y)).filter(Number.isFinite);
  const cats = o.categoricalX;
  const xpos = cats
    ? (v: number) => left + ((cats.indexOf(v) + 0.5) / cats.length) * (width - right - left)
    : linearScale(Math.min(...xs, 0), Math.max(...xs, 1), left, width - right);
  const ylo = o.yFromZero === false && ys.length ? Math.min(...ys) : Math.min(0, ...ys);
  const y = linearScale(ylo, ys.length ? Math.max(...ys) : 1, bottom, top);
  const body: string[] = [];
  for (const t of y.ticks) {
    const py = y(t);
    if (py < top - 0.5 || py > bottom + 0.5) continue;
    body.push(`<line x1="${left}" y1="${py.toFixed(1)}" x2="${width - right}" y2="${py.toFixed(1)}" stroke="#e5e5e5"/>`);
    body.push(`<text x="${left - 8}" y="${(py + 4).toFixed(1)}" text-anchor="end" fill="#444">${fmtTick(t)}</text>`);
  }
  const xticks = cats ?? (xpos as Scale).ticks;
  for (const t of xticks) {
    const px = xpos(t);
    if (px > width - right + 0.5) continue;
    body.push(`<text x="${px.toFixed(1)}" y="${bottom + 18}" text-anchor="middle" fill="#444">${fmtTick(t)}</text>`);
  }
  body.push(`<line x1="${left}" y1="${bottom}" x2="${width - right}" y2="${bottom}" stroke="#444"/>`);
  body.push(`<line x1="${left}" y1="${top}" x2="${left}" y2="${bottom}" stroke="#444"/>`);
  body.push(`<text x="${(left + width - right) / 2}" y="${bottom + 38}" text-anchor="middle" fill="#444">${esc(o.xLabel)}</text>`);
  body.push(`<text x="16" y="${(top + bottom) / 2}" text-anchor="middle" fill="#444" transform="rotate(-90 16 ${(top + bottom) / 2})">${esc(o.yLabel)}</text>`);
  o.series.forEach((s, i) => {
    const color = s.color ?? PALETTE[i % PALETTE.length]!;
    const pts = s.points.filter((p) => Number.isFinite(p.y));
    if (!s.pointsOnly && pts.length > 1) {
      const d = pts.map((p, j) => `${j ? 'L' : 'M'}${xpos(p.x).toFixed(1)},${y(p.y).toFixed(1)}`).join(' ');
      body.push(`<path d="${d}" fill="none" stroke="${color}" stroke-width="2"${s.dashed ? ' stroke-dasharray="6 4"' : ''}/>`);
    }
    for (const p of pts)
      body.push(
        `<circle cx="${xpos(p.x).toFixed(1)}" cy="${y(p.y).toFixed(1)}" r="${s.pointsOnly ? 2 : 3}" fill="${color}"${s.pointsOnly ? ' fill-opacity="0.5"' : ''}/>`,
      );
    const ly = top + 10 + i * 18;
    body.push(
      `<line x1="${width - right + 14}" y1="${ly}" x2="${width - right + 40}" y2="${ly}" stroke="${color}" stroke-width="2"${s.dashed ? ' stroke-dasharray="6 4"' : ''}/>`,
    );
    body.push(`<text x="${width - right + 46}" y="${ly + 4}">${esc(s.label)}</text>`);
  });
  return frame(width, height, o.title, body);
}
