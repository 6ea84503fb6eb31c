// Host processes as /proc shows them. One rule for "alive" everywhere in
// osvirt (drivers, conformance, tests, bench): a process is alive while
// /proc/<pid>/stat exists and its state is neither Z (zombie) nor X (dead).
// A zombie has exited; only its exit status waits for its parent to reap it,
// so a caller asking "is the init still running?" must hear no.
import { readdirSync, readFileSync } from 'node:fs';

/** The fields of /proc/<pid>/stat after the command name, or undefined when there is no such process. */
function statFields(pid: number): string[] | undefined {
  if (!Number.isInteger(pid) || pid <= 0) return undefined;
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // The command name is in parentheses and may itself contain ") ": the last one ends it.
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
}

/** The one-letter state of /proc/<pid>/stat (R, S, D, T, Z, ...), or undefined when there is no such process. */
export function pidState(pid: number): string | undefined {
  return statFields(pid)?.[0];
}

/** Is pid a running process? A zombie (exited, not yet reaped) is not alive. */
export function pidAlive(pid: number): boolean {
  const s = pidState(pid);
  return s !== undefined && s !== 'Z' && s !== 'X';
}

/** The parent pid (field 4 of /proc/<pid>/stat), or undefined when there is no such process. */
export function parentPid(pid: number): number | undefined {
  const f = statFields(pid)?.[1];
  return f === undefined ? undefined : Number(f);
}

/** Start time in clock ticks (field 22 of /proc/<pid>/stat), to tell a reused pid from ours. */
export function pidStartTime(pid: number): string | undefined {
  return statFields(pid)?.[19];
}

/** Send a signal, ignoring a process that is already gone. */
export function killPid(pid: number, sig: NodeJS.Signals = 'SIGKILL'): void {
  if (!Number.isInteger(pid) || pid <= 0) return;
  try {
    process.kill(pid, sig);
  } catch {
    // already gone
  }
}

/** Processes (other than this one) whose command line contains `needle`, e.g. a unique temp path. */
export function pidsWithCmdline(needle: string): number[] {
  const out: number[] = [];
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    const pid = Number(e);
    if (pid === process.pid) continue;
    try {
      if (readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(needle)) out.push(pid);
    } catch {
      // gone
    }
  }
  return out;
}

/**
 * How `pid` handles signal `sig` (1-64), from the SigCgt and SigIgn masks of
 * /proc/<pid>/status: 'caught' (a handler), 'ignored', 'default'; undefined
 * when there is no such process.
 */
export function signalDisposition(pid: number, sig: number): 'caught' | 'ignored' | 'default' | undefined {
  let status: string;
  try {
    status = readFileSync(`/proc/${pid}/status`, 'utf8');
  } catch {
    return undefined;
  }
  const bit = (name: string) => {
    const m = new RegExp(`^${name}:\\s*([0-9a-f]+)$`, 'm').exec(status);
    return m ? (BigInt(`0x${m[1]}`) >> BigInt(sig - 1)) & 1n : 0n;
  };
  if (bit('SigCgt')) return 'caught';
  if (bit('SigIgn')) return 'ignored';
  return 'default';
}
