// Runs the conformance suite against a built-in driver inside this process,
// the way osvirtd hosts it (same capability gate, and the daemon's rule that
// an uncaught exception is logged rather than fatal), and prints the report
// as JSON on stdout. A separate process, so that a driver's stray exception
// cannot take down the caller (a test runner, the CLI):
//   node dist/src/conformance/in-process.js lxc --state-dir DIR [--skip ID]... [--only RE]
import { Command } from 'commander';
import { builtinDrivers } from '../drivers';
import { runDriverSuite } from './driver-suite';
import type { Report } from './report';
import { inProcess } from './repo-drivers';
import { defaultTemplate, loadTemplate } from './spec-template';

async function main(): Promise<void> {
  const p = new Command('osvirt-conformance-in-process')
    .argument('<driver>', 'built-in driver name')
    .requiredOption('--state-dir <dir>', "the driver's state directory")
    .option('--spec <file>', 'spec template')
    .option('--bridge <name>', 'lxc: bridge name', 'osvirt0')
    .option('--subnet <cidr>', 'lxc: bridge subnet', '10.88.0.0/16')
    .option('--only <regex>', 'only cases whose id matches')
    .option('--skip <id=reason>', 'report this case as skipped (repeatable)', (v: string, prev: string[]) => [...prev, v], [] as string[])
    .parse();
  const o = p.opts<{ stateDir: string; spec?: string; bridge: string; subnet: string; only?: string; skip: string[] }>();
  const name = p.args[0]!;
  const uncaught: string[] = [];
  process.on('uncaughtException', (e) => uncaught.push(e.stack ?? e.message));
  process.on('unhandledRejection', (e) => uncaught.push(`unhandled rejection: ${String(e)}`));

  const driver = builtinDrivers({ lxc: { bridge: { name: o.bridge, subnet: o.subnet } } }).find((d) => d.name === name);
  let report: Report;
  if (!driver) {
    report = { target: `${name} (in process)`, driver: name, results: [], error: `no built-in driver "${name}"` };
  } else {
    try {
      const d = await inProcess(driver, o.stateDir);
      const skip = Object.fromEntries(o.skip.map((s) => [s.split('=')[0]!, s.includes('=') ? s.slice(s.indexOf('=') + 1) : 'skipped on request']));
      const t = o.spec ? loadTemplate(o.spec) : defaultTemplate(name);
      report = await runDriverSuite(d, `${name} (in process)`, { template: t, only: o.only ? new RegExp(o.only) : undefined, skip });
      await d.close?.();
    } catch (e) {
      report = {
        target: `${name} (in process)`,
        driver: name,
        results: [],
        error: `cannot initialise the driver: ${e instanceof Error ? e.message : String(e)}`,
      };
    }
  }
  if (uncaught.length) {
    // osvirtd logs these and carries on; a driver should not leave any.
    report.results.push({
      id: 'process.no-uncaught-exceptions',
      title: 'The driver raises no uncaught exceptions in the hosting process',
      level: 'should',
      outcome: 'warn',
      ms: 0,
      detail: uncaught.map((u) => u.split('\n').slice(0, 3).join(' | ')).join('\n'),
    });
  }
  process.stdout.write(JSON.stringify(report) + '\n');
  process.exit(0);
}

main().catch((e: unknown) => {
  process.stderr.write(`in-process conformance: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(2);
});
