// npm run bench [-- --quick] : osvirt side by side with LXC, runc and CRIU,
// and the classic LXC overhead tables (issue 8). Writes
// bench/results/<date>[-quick].json, a Markdown report and SVG plots.
import { existsSync, mkdirSync, mkdtempSync, promises as fs, readFileSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Command } from 'commander';
import { ContainerSpec } from '../src/gen/osvirt/v1/container';
import { repoPath } from '../src/paths';
import { IDLE_SCRIPT } from './lib/anchors';
import { Cleanup } from './lib/cleanup';
import { config, errorText, type Ctx, type SectionResult } from './lib/context';
import { BenchDaemon, freeSubnet } from './lib/daemon';
import { unmountUnder } from '../src/host/mounts';
import { defaultUplink, findTools, hostInfo, type HostInfo } from './lib/host';
import { Progress } from './lib/progress';
import { runOk } from './lib/proc';
import { Report } from './lib/report';
import { renderLifecycle, runLifecycle } from './sections/lifecycle';
import { renderCheckpoint, runCheckpoint } from './sections/checkpoint';
import { renderControlPlane, runControlPlane } from './sections/control-plane';
import { renderScale, runScale } from './sections/scale';
import { renderNetwork, runNetwork } from './sections/network';
import { renderContextSwitch, runContextSwitch } from './sections/context-switch';
import { renderBoot, runBoot } from './sections/boot';
import { renderImages, runImages } from './sections/images';
import { renderSummary } from './sections/summary';

interface Section {
  id: string;
  what: string;
  run(ctx: Ctx): Promise<SectionResult>;
  render(r: Report, res: SectionResult): void;
}

/* eslint-disable @typescript-eslint/no-explicit-any */
const SECTIONS: Section[] = [
  { id: 'lifecycle', what: 'create+start and stop+delete latency vs lxc-start, runc run, unshare', run: runLifecycle, render: renderLifecycle as any },
  { id: 'checkpoint', what: 'checkpoint/restore vs bare criu, lxc-checkpoint, runc checkpoint', run: runCheckpoint, render: renderCheckpoint as any },
  { id: 'control-plane', what: 'Get/List calls per second vs a bare grpc-js server', run: runControlPlane, render: renderControlPlane as any },
  { id: 'scale', what: 'many running containers: time, memory, Get/List latency', run: runScale, render: renderScale as any },
  { id: 'network', what: 'iperf3 TCP throughput: loopback vs veth vs macvlan', run: runNetwork, render: renderNetwork as any },
  { id: 'context-switch', what: 'lat_ctx ring of pipes on the host vs in a container', run: runContextSwitch, render: renderContextSwitch as any },
  { id: 'boot', what: 'Debian booted by systemd: create until "running", and halt, vs lxc-start', run: runBoot, render: renderBoot as any },
  {
    id: 'images',
    what: 'OCI images: pull + unpack vs skopeo + umoci and podman pull; start vs podman run and runc run',
    run: runImages,
    render: renderImages as any,
  },
];

export interface BenchResults {
  schema: 1;
  date: string;
  mode: 'full' | 'quick';
  argv: string[];
  /** The run's private temp dir (removed at the end; recorded so a test can check). */
  workDir: string;
  seconds: number;
  host: HostInfo;
  versions: Record<string, string>;
  config: ReturnType<typeof config>;
  sections: Record<string, SectionResult>;
}

export function renderReport(res: BenchResults, base: string): Report {
  const r = new Report(base);
  r.h(1, `osvirt benchmarks, ${res.date} (${res.mode})`);
  r.p(
    `Host: ${res.host.cpus} CPUs (${res.host.cpuModel}), ${res.host.memoryGiB} GiB, kernel ${res.host.kernel}, cgroups ${res.host.cgroupLayout}, Node ${res.host.node}. ` +
      `osvirt ${res.host.osvirt} (${res.host.commit || 'no git'}); ${Object.entries(res.versions)
        .map(([k, v]) => `${k}: ${v}`)
        .join('; ')}. Run took ${Math.round(res.seconds)} s.`,
  );
  r.p(
    'The machine is shared and noisy: absolute times drift between runs, the ratios against anchors measured in the same run are what to compare. ' +
      `Reproduce with \`npm run bench\` (full) or \`npm run bench -- --quick\` (smoke run); \`node dist/bench/main.js --help\` lists the options.`,
  );
  renderSummary(r, res.sections);
  for (const s of SECTIONS) {
    const x = res.sections[s.id];
    if (!x) continue;
    s.render(r, x);
    if (x.notes.length) r.p(...x.notes.map((n) => `- ${n}`));
  }
  return r;
}

function writeOutputs(outDir: string, base: string, res: BenchResults): string[] {
  mkdirSync(outDir, { recursive: true });
  const jsonFile = path.join(outDir, `${base}.json`);
  writeFileSync(jsonFile, JSON.stringify(res, null, 1) + '\n');
  const report = renderReport(res, base);
  const mdFile = path.join(outDir, `${base}.md`);
  writeFileSync(mdFile, report.text());
  for (const [f, svg] of report.svgs) writeFileSync(path.join(outDir, f), svg);
  return [jsonFile, mdFile, ...[...report.svgs.keys()].map((f) => path.join(outDir, f))];
}

async function main(): Promise<number> {
  const program = new Command('bench')
    .description('osvirt benchmarks: osvirt next to LXC, runc and CRIU on this machine, and the classic LXC overhead tables')
    .option('--quick', 'smoke run: fewer runs and containers, finishes in under 2 minutes', false)
    .option('--only <ids>', `comma list of sections to run (${SECTIONS.map((s) => s.id).join(', ')})`)
    .option('--skip <ids>', 'comma list of sections to leave out')
    .option('--out <dir>', 'where to write the results', repoPath('bench', 'results'))
    .option('--name <base>', 'base name of the result files (default: <date> or <date>-quick)')
    .option('--runs <n>', 'override the start/stop runs per variant', (v) => Number.parseInt(v, 10))
    .option('--scale <n>', 'override the number of containers in the scale section', (v) => Number.parseInt(v, 10))
    .option('--render <json>', 'only re-render the Markdown and SVGs from an existing results JSON')
    .parse();
  const o = program.opts<{ quick: boolean; only?: string; skip?: string; out: string; name?: string; runs?: number; scale?: number; render?: string }>();

  if (o.render) {
    const res = JSON.parse(readFileSync(o.render, 'utf8')) as BenchResults;
    const base = path.basename(o.render, '.json');
    for (const f of writeOutputs(path.dirname(path.resolve(o.render)), base, res)) process.stdout.write(`${f}\n`);
    return 0;
  }
  if (process.getuid?.() !== 0) {
    process.stderr.write('bench: run as root: osvirt, LXC and runc create namespaces, cgroups, mounts and interfaces\n');
    return 2;
  }
  const only = o.only
    ?.split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  const skip = new Set(o.skip?.split(',').map((s) => s.trim()) ?? []);
  for (const id of [...(only ?? []), ...skip])
    if (!SECTIONS.some((s) => s.id === id)) throw new Error(`unknown section "${id}" (known: ${SECTIONS.map((s) => s.id).join(', ')})`);
  const selected = SECTIONS.filter((s) => (!only || only.includes(s.id)) && !skip.has(s.id));

  const cfg = config(o.quick);
  if (o.runs) cfg.lifecycleRuns = o.runs;
  if (o.scale) cfg.scaleN = o.scale;
  const date = new Date().toISOString().slice(0, 10);
  const base = o.name ?? `${date}${o.quick ? '-quick' : ''}`;
  const started = Date.now();
  const progress = new Progress();
  const cleanup = new Cleanup();
  cleanup.installSignalHandlers(() => progress.flush());

  const work = mkdtempSync(path.join(os.tmpdir(), 'osvirt-bench-'));
  cleanup.add('temp dir', async () => {
    const left = await unmountUnder(work);
    if (left.length) throw new Error(`${work} is left in place: still mounted at ${left.join(', ')}`);
    await fs.rm(work, { recursive: true, force: true });
  });
  const prefix = `b${(process.pid % 46656).toString(36)}-`;
  const sections: Record<string, SectionResult> = {};
  let res: BenchResults | undefined;
  let exitCode = 0;
  try {
    progress.begin('setup', `${o.quick ? 'quick' : 'full'} run of ${selected.map((s) => s.id).join(', ')}; work dir ${work}`);
    const [host, tools, uplink] = await Promise.all([hostInfo(), findTools(), defaultUplink()]);
    const daemon = new BenchDaemon(path.join(work, 'osvirt'), `obn${process.pid % 100000}`, freeSubnet());
    mkdirSync(daemon.dir, { recursive: true });
    cleanup.add('osvirt daemon and its containers', () => daemon.destroy());
    const client = await daemon.start();
    progress.step(`osvirtd pid ${daemon.pid} on ${daemon.socket}, bridge ${daemon.bridge} ${daemon.subnet}`);

    // Build the busybox template once (define a container), and copy it for the anchors.
    const warm = `${prefix}template`;
    await client.api.containers.createContainer({
      name: warm,
      spec: ContainerSpec.fromPartial({
        driver: 'lxc',
        rootfs: { source: { $case: 'template', value: 'busybox' } },
        network: { mode: { $case: 'none', value: {} } },
      }),
    });
    await client.api.containers.deleteContainer({ name: warm, force: true, allowMissing: true });
    const anchorRootfs = path.join(work, 'rootfs');
    if (!existsSync(daemon.templateDir())) throw new Error(`osvirt's busybox template is not at ${daemon.templateDir()}`);
    await runOk('cp', ['-a', daemon.templateDir(), anchorRootfs]);
    writeFileSync(path.join(anchorRootfs, 'idle.sh'), IDLE_SCRIPT, { mode: 0o755 });

    const ctx: Ctx = { cfg, progress, cleanup, work, daemon, client, prefix, anchorRootfs, uplink, tools };
    res = {
      schema: 1,
      date,
      mode: o.quick ? 'quick' : 'full',
      argv: process.argv.slice(2),
      workDir: work,
      seconds: 0,
      host,
      versions: tools.versions,
      config: cfg,
      sections,
    };
    for (const s of selected) {
      progress.begin(s.id, s.what);
      const t0 = Date.now();
      try {
        sections[s.id] = await s.run(ctx);
      } catch (e) {
        sections[s.id] = { id: s.id, title: s.what, status: 'failed', reason: errorText(e), seconds: (Date.now() - t0) / 1000, notes: [] };
      }
      const x = sections[s.id]!;
      progress.note(`${x.status}${x.reason ? ': ' + x.reason : ''} (${x.seconds.toFixed(1)} s)`);
      if (x.status === 'failed') exitCode = 1;
      // Leave nothing of one section behind for the next.
      await daemon.deleteAll(8).catch(() => undefined);
    }
  } catch (e) {
    progress.flush();
    process.stderr.write(`bench: ${errorText(e)}\n`);
    exitCode = 1;
  } finally {
    progress.begin('cleanup', 'removing containers, interfaces, mounts, cgroups and temp files');
    await cleanup.runAll((s) => progress.warn(s));
  }
  if (res) {
    res.seconds = (Date.now() - started) / 1000;
    const files = writeOutputs(path.resolve(o.out), base, res);
    progress.flush();
    process.stderr.write(`bench: done in ${Math.round(res.seconds)} s\n`);
    for (const f of files) process.stdout.write(`${f}\n`);
  }
  return exitCode;
}

main().then(
  (code) => process.exit(code),
  (e: unknown) => {
    process.stderr.write(`bench: ${errorText(e)}\n`);
    process.exit(1);
  },
);
