// `osvirt conformance`: run the driver conformance suite against a
// DriverService endpoint (like csi-sanity), optionally the daemon-level part
// against a driver registered with a daemon, or against every driver in
// this repository. Exits 1 when a "must" check fails.
import type { Command } from 'commander';
import { connect } from '../client';
import { runDaemonSuite } from '../conformance/daemon-suite';
import { caseIds, runDriverSuite } from '../conformance/driver-suite';
import { failed, formatReport, type CaseResult, type Report } from '../conformance/report';
import { defaultTemplate, loadTemplate, type SpecTemplate } from '../conformance/spec-template';
import { RemoteDriver } from '../plugin/remote-driver';

interface Opts {
  endpoint?: string;
  spec?: string;
  shell?: string;
  daemonDriver?: string;
  repoDrivers?: boolean;
  only?: string;
  skip: string[];
  list?: boolean;
}

interface Global {
  connect?: string;
  tlsCert?: string;
  tlsKey?: string;
  tlsCa?: string;
  output: 'table' | 'json';
}

const MARK: Record<CaseResult['outcome'], string> = { pass: 'ok  ', fail: 'FAIL', warn: 'warn', skip: 'skip' };

async function run(o: Opts, cmd: Command): Promise<number> {
  const g = cmd.optsWithGlobals<Global>();
  const json = g.output === 'json';
  const progress = (line: string) => {
    if (!json) process.stderr.write(`${line}\n`);
  };
  const onResult = (target: string) => (r: CaseResult) => progress(`  ${MARK[r.outcome]} ${target}: ${r.id}`);
  const only = o.only ? new RegExp(o.only) : undefined;
  const skip = Object.fromEntries(o.skip.map((id) => [id, 'skipped on request (--skip)']));
  const reports: Report[] = [];

  if (o.list) {
    process.stdout.write(caseIds().join('\n') + '\n');
    return 0;
  }
  if (o.repoDrivers) {
    if (o.endpoint || o.daemonDriver) throw new Error('--repo-drivers starts its own plugins and daemon; do not combine it with --endpoint or --daemon-driver');
    // This repository's own CI run: it loads the drivers to run them in process, so it is
    // loaded only when asked for; the CLI otherwise talks to drivers over gRPC only.
    const { runRepoDrivers } = await import('../conformance/repo-drivers');
    reports.push(...(await runRepoDrivers({ only, skip, log: progress, onResult: (t, r) => onResult(t)(r) })));
  } else {
    if (!o.endpoint && !o.daemonDriver)
      throw new Error(
        'give --endpoint unix:///path/driver.sock (a DriverService), --daemon-driver NAME (a driver of the daemon at --connect), or --repo-drivers',
      );
    const load = (name: string): SpecTemplate => {
      const t = o.spec ? loadTemplate(o.spec) : defaultTemplate(name);
      return o.shell ? { ...t, shell: o.shell } : t;
    };
    if (o.endpoint) {
      const remote = new RemoteDriver('plugin', o.endpoint);
      try {
        const info = await remote.info().catch(() => undefined);
        const t = load(info?.name ?? 'plugin');
        progress(`conformance: ${o.endpoint} (template: ${t.source})`);
        reports.push(await runDriverSuite(remote, o.endpoint, { template: t, only, skip, onResult: onResult(o.endpoint) }));
      } finally {
        await remote.close();
      }
    }
    if (o.daemonDriver) {
      const c = connect({ address: g.connect, tlsCert: g.tlsCert, tlsKey: g.tlsKey, tlsCa: g.tlsCa });
      try {
        const t = o.spec ? load(o.daemonDriver) : defaultTemplate(o.daemonDriver);
        progress(`conformance: daemon-level, driver "${o.daemonDriver}" at ${c.target}`);
        reports.push(await runDaemonSuite(c, o.daemonDriver, o.shell ? { ...t, shell: o.shell } : t, { only, onResult: onResult(`daemon/${o.daemonDriver}`) }));
      } finally {
        c.close();
      }
    }
  }
  if (json) process.stdout.write(JSON.stringify(reports, null, 2) + '\n');
  else for (const r of reports) process.stdout.write(formatReport(r));
  return reports.some(failed) ? 1 : 0;
}

export function registerConformance(program: Command): void {
  program
    .command('conformance')
    .description('check a driver against the osvirt.driver.v1 contract (lifecycle, idempotency, error codes, Wait, concurrency, capabilities)')
    .option('--endpoint <uri>', 'DriverService endpoint to test: unix:///path/driver.sock')
    .option('--spec <file>', 'spec template (YAML/JSON ContainerSpec, optional "shell"); default: busybox with network none for lxc, {driver: NAME} otherwise')
    .option('--shell <path>', 'shell inside the container for scripted cases (default /bin/sh)')
    .option('--daemon-driver <name>', 'also run the daemon-level part (event order, exit codes, API errors) against this driver of the daemon at --connect')
    .option(
      '--repo-drivers',
      'test every driver in this repository (lxc in process and over gRPC, the Python process driver), and each through a temporary daemon',
    )
    .option('--only <regex>', 'only cases whose id matches')
    .option('--skip <id>', 'report this case as skipped (repeatable)', (v: string, prev: string[]) => [...prev, v], [] as string[])
    .option('--list', 'list the case ids and exit')
    .action((o: Opts, cmd: Command) =>
      run(o, cmd).then(
        (code) => process.exit(code),
        (e: unknown) => {
          process.stderr.write(`osvirt conformance: ${e instanceof Error ? e.message : String(e)}\n`);
          process.exit(2);
        },
      ),
    );
}
