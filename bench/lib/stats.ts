// Summaries of timing samples: the machine is shared and noisy, so the report
// quotes medians and p95 and compares against anchors measured in the same run.

export interface Summary {
  n: number;
  min: number;
  p25: number;
  p50: number;
  p75: number;
  p95: number;
  max: number;
  mean: number;
}

/** Percentile with linear interpolation between closest ranks (p in 0..100). */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const rank = (p / 100) * (sorted.length - 1);
  const lo = Math.floor(rank);
  const hi = Math.ceil(rank);
  const a = sorted[lo] ?? NaN;
  const b = sorted[hi] ?? NaN;
  return a + (b - a) * (rank - lo);
}

export function summarize(samples: readonly number[]): Summary {
  const s = [...samples].filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  const mean = s.length ? s.reduce((a, b) => a + b, 0) / s.length : NaN;
  return {
    n: s.length,
    min: s[0] ?? NaN,
    p25: percentile(s, 25),
    p50: percentile(s, 50),
    p75: percentile(s, 75),
    p95: percentile(s, 95),
    max: s[s.length - 1] ?? NaN,
    mean,
  };
}

export function median(samples: readonly number[]): number {
  return summarize(samples).p50;
}

/** a / b, NaN when either side is missing. */
export function ratio(a: number | undefined, b: number | undefined): number {
  if (a === undefined || b === undefined || !Number.isFinite(a) || !Number.isFinite(b) || b === 0) return NaN;
  return a / b;
}

/** Round for JSON: keeps files readable without losing meaningful digits. */
export function round(x: number, digits = 3): number {
  if (!Number.isFinite(x)) return x;
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

export function roundSummary(s: Summary, digits = 3): Summary {
  return {
    n: s.n,
    min: round(s.min, digits),
    p25: round(s.p25, digits),
    p50: round(s.p50, digits),
    p75: round(s.p75, digits),
    p95: round(s.p95, digits),
    max: round(s.max, digits),
    mean: round(s.mean, digits),
  };
}

/** Milliseconds since t0 (from process.hrtime.bigint()). */
export function msSince(t0: bigint): number {
  return Number(process.hrtime.bigint() - t0) / 1e6;
}
