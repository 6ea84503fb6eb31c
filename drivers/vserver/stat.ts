// vserver-stat: per-guest totals (CTX, PROC QTY, VSZ, RSS, userTIME,
// sysTIME, UPTIME, NAME) read from the guest's cgroup and its processes'
// /proc/<pid>/stat. The table the CLI prints is src/cli/vserver-stat.ts.
import { promises as fs } from 'node:fs';

/** USER_HZ and the page size on Linux x86_64. */
const PAGE = 4096;

export interface ProcessTotals {
  count: number;
  vszBytes: number;
  rssBytes: number;
}

/** Sum VmSize and RSS over processes (the pids of the guest's cgroup); vanished ones are skipped. */
export async function processTotals(pids: number[]): Promise<ProcessTotals> {
  const out: ProcessTotals = { count: 0, vszBytes: 0, rssBytes: 0 };
  for (const pid of pids) {
    let stat: string;
    try {
      stat = await fs.readFile(`/proc/${pid}/stat`, 'utf8');
    } catch {
      continue;
    }
    // Fields after the command name (which may contain spaces): state is field 3, vsize 23, rss 24.
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    out.count++;
    out.vszBytes += Number(rest[20] ?? 0);
    out.rssBytes += Number(rest[21] ?? 0) * PAGE;
  }
  return out;
}
