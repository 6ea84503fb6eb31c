// Conformance results and how they are printed. A "must" check that fails
// fails the run; a "should" check that fails is a warning (the contract
// recommends it, the daemon copes without it); a check whose capability is
// not declared is skipped, with the reason.

export type Level = 'must' | 'should';
export type Outcome = 'pass' | 'fail' | 'warn' | 'skip';

export interface CaseResult {
  id: string;
  title: string;
  level: Level;
  outcome: Outcome;
  ms: number;
  /** Why it failed or was skipped; notes for a pass. */
  detail: string;
}

export interface Report {
  target: string;
  driver: string;
  results: CaseResult[];
  /** Set when the target could not be reached or initialised at all. */
  error?: string;
}

export function summary(r: Report): Record<Outcome, number> {
  const s: Record<Outcome, number> = { pass: 0, fail: 0, warn: 0, skip: 0 };
  for (const x of r.results) s[x.outcome]++;
  return s;
}

export function failed(r: Report): boolean {
  return !!r.error || r.results.some((x) => x.outcome === 'fail');
}

const MARK: Record<Outcome, string> = { pass: 'PASS', fail: 'FAIL', warn: 'WARN', skip: 'SKIP' };

export function formatReport(r: Report): string {
  const lines = [`conformance: ${r.target}${r.driver ? ` (driver "${r.driver}")` : ''}`];
  if (r.error) lines.push(`  ERROR ${r.error}`);
  for (const x of r.results) {
    const head = `  ${MARK[x.outcome]} ${x.id} - ${x.title}${x.level === 'should' ? ' [should]' : ''} (${(x.ms / 1000).toFixed(2)} s)`;
    lines.push(head);
    if (x.detail && x.outcome !== 'pass') for (const d of x.detail.split('\n')) lines.push(`       ${d}`);
  }
  const s = summary(r);
  lines.push(`  ${s.pass} passed, ${s.fail} failed, ${s.warn} warnings, ${s.skip} skipped${failed(r) ? ': NOT CONFORMANT' : ''}`);
  return lines.join('\n') + '\n';
}
