// Markdown report assembly: tables, number formatting, and the SVG files the
// report links to (written next to it as <base>-<name>.svg).
import type { Summary } from './stats';

export class Report {
  readonly lines: string[] = [];
  readonly svgs = new Map<string, string>();

  constructor(readonly base: string) {}

  p(...text: string[]): void {
    this.lines.push(...text, '');
  }

  h(level: number, text: string): void {
    this.lines.push(`${'#'.repeat(level)} ${text}`, '');
  }

  table(head: string[], rows: (string | number)[][], align?: ('l' | 'r')[]): void {
    const al = align ?? head.map((_, i) => (i === 0 ? 'l' : 'r'));
    this.lines.push(`| ${head.join(' | ')} |`);
    this.lines.push(`|${al.map((a) => (a === 'r' ? '---:' : ':---')).join('|')}|`);
    for (const r of rows) this.lines.push(`| ${r.map((c) => String(c).replace(/\|/g, '\\|')).join(' | ')} |`);
    this.lines.push('');
  }

  /** Add a plot; returns the markdown image line. */
  svg(name: string, content: string, alt: string): void {
    const file = `${this.base}-${name}.svg`;
    this.svgs.set(file, content);
    this.lines.push(`![${alt}](${file})`, '');
  }

  text(): string {
    return this.lines.join('\n').replace(/\n{3,}/g, '\n\n');
  }
}

/** A number for a table: 3 significant digits, thousands kept whole. */
export function num(v: number | undefined, digits = 3): string {
  if (v === undefined || !Number.isFinite(v)) return '-';
  const a = Math.abs(v);
  if (a >= 1000) return Math.round(v).toLocaleString('en-US');
  if (a >= 100) return v.toFixed(0);
  return (+v.toPrecision(digits)).toString();
}

export function ms(v: number | undefined): string {
  return v === undefined || !Number.isFinite(v) ? '-' : `${num(v)}`;
}

/** "1.23x" (a / b); "-" when missing. */
export function times(v: number | undefined): string {
  return v === undefined || !Number.isFinite(v) ? '-' : `${v >= 10 ? v.toFixed(1) : v.toFixed(2)}x`;
}

export function pct(v: number | undefined): string {
  if (v === undefined || !Number.isFinite(v)) return '-';
  return `${v > 0 ? '+' : ''}${v.toFixed(2)} %`;
}

export function p50p95(s: Summary | undefined): [string, string] {
  return [ms(s?.p50), ms(s?.p95)];
}

export function bytes(v: number | undefined): string {
  if (v === undefined || !Number.isFinite(v)) return '-';
  if (v >= 1 << 20) return `${(v / (1 << 20)).toFixed(2)} MiB`;
  if (v >= 1 << 10) return `${(v / (1 << 10)).toFixed(1)} KiB`;
  return `${v} B`;
}
