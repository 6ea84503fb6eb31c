// Signal names <-> numbers for the CLI (Linux x86_64 numbering).
import { constants } from 'node:os';

export function signalNumber(s: string): number {
  if (/^\d+$/.test(s)) return Number(s);
  const name = (s.toUpperCase().startsWith('SIG') ? s.toUpperCase() : `SIG${s.toUpperCase()}`) as keyof typeof constants.signals;
  const n = constants.signals[name];
  if (n === undefined) throw new Error(`unknown signal "${s}"`);
  return n;
}
