// The table util-vserver's vserver-stat prints, from VServerStat rows
// (osvirt.v1.VServerService.ListVServerStats): fixed columns, shortened
// memory and times, as the original does.

export interface StatRow {
  context: number;
  processCount: number;
  vszBytes: number;
  rssBytes: number;
  userMs: number;
  systemMs: number;
  uptimeMs: number;
  name: string;
}

/** vserver-stat's memory figure: at most 7 characters, 1024-based, one decimal (e.g. "11.9M"). */
export function shortenMem(bytes: number): string {
  const suffixes = [' ', 'K', 'M', 'G', 'T', '+'];
  let val = Math.max(0, Math.floor(bytes));
  let mod = 0;
  let suffix = '+';
  for (let i = 0; i < suffixes.length; i++) {
    if (val < 1000) {
      suffix = suffixes[i]!;
      break;
    }
    mod = Math.floor((10 * (val % 1024)) / 1024);
    val = Math.floor(val / 1024);
  }
  if (val > 9999) val = 9999;
  if (val >= 1000) mod = 0;
  return `${val}${mod ? `.${mod}` : ''}${suffix}`;
}

const z2 = (n: number) => String(n).padStart(2, '0');

/** vserver-stat's durations: "0m05s27" (minutes, seconds, hundredths), "2h07m08", "3d04h05", "1y020d03". */
export function shortenTime(ms: number): string {
  let t = Math.max(0, Math.floor(ms));
  const hundredths = Math.floor((t % 1000) / 10);
  t = Math.floor(t / 1000);
  const ss = t % 60;
  t = Math.floor(t / 60);
  const mm = t % 60;
  t = Math.floor(t / 60);
  const hh = t % 24;
  const days = Math.floor(t / 24);
  if (days > 999 * 999) return 'INVALID';
  if (days > 999) return `${Math.floor(days / 365)}y${z2(days % 365)}d${z2(hh)}`;
  if (days > 0) return `${days}d${z2(hh)}h${z2(mm)}`;
  if (hh > 0) return `${hh}h${z2(mm)}m${z2(ss)}`;
  return `${mm}m${z2(ss)}s${z2(hundredths)}`;
}

export const STAT_HEADER = 'CTX   PROC    VSZ    RSS  userTIME   sysTIME    UPTIME NAME';

/** One line in vserver-stat's fixed columns. */
export function formatStatRow(r: StatRow): string {
  const buf: string[] = Array<string>(56).fill(' ');
  const place = (s: string, end: number) => {
    for (let i = 0; i < s.length; i++) buf[end - s.length + i] = s[i]!;
  };
  const ctx = String(r.context);
  for (let i = 0; i < ctx.length; i++) buf[i] = ctx[i]!;
  place(String(r.processCount), 10);
  place(shortenMem(r.vszBytes), 17);
  place(shortenMem(r.rssBytes), 24);
  place(shortenTime(r.userMs), 34);
  place(shortenTime(r.systemMs), 44);
  place(shortenTime(r.uptimeMs), 54);
  return buf.join('').slice(0, 55) + r.name.slice(0, 20);
}

export function formatStatTable(rows: StatRow[]): string {
  return [STAT_HEADER, ...rows.map(formatStatRow)].join('\n') + '\n';
}
