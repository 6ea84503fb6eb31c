// Section 5: many running busybox containers (sleeping init). Total time to
// start them, daemon RSS, the per-container monitor's memory (next to LXC's
// monitor for one container), host memory per container, Get/List latency
// at that size, and the time to stop and delete them all.
import * as path from 'node:path';
import { parentPid } from '../../src/host/processes';
import { ContainerSpec, ContainerState } from '../../src/gen/osvirt/v1/container';
import { LxcAnchor, waitForTermHandler } from '../lib/anchors';
import { errorText, type Ctx, type SectionResult } from '../lib/context';
import { childrenOf, memAvailableKiB, memoryOf, pool, sleep } from '../lib/proc';
import { ms, num, type Report } from '../lib/report';
import { msSince, round, roundSummary, summarize, type Summary } from '../lib/stats';
import { distributionPlot, lineChart } from '../lib/svg';

export interface ScaleData {
  n: number;
  running: number;
  concurrency: number;
  startSeconds: number;
  startsPerSecond: number;
  /** create+start latency of each container, in start order (ms). */
  startMs: number[];
  start: Summary;
  stopDeleteSeconds: number;
  memory: {
    availableBeforeMiB: number;
    availableRunningMiB: number;
    availableAfterMiB: number;
    /** Drop in MemAvailable per running container (everything: monitor, init, kernel objects, page cache). */
    hostPerContainerKiB: number;
    daemonRssBeforeKiB: number;
    daemonRssRunningKiB: number;
    daemonRssAfterKiB: number;
    monitorRssKiB: Summary;
    monitorPssKiB: Summary;
    monitorUssKiB: Summary;
    initTreeRssKiB: Summary;
    initTreePssKiB: Summary;
    cgroupUsageKiB: Summary;
    lxcMonitor?: { rssKiB: number; pssKiB: number; ussKiB: number } | { skipped: string };
  };
  getMs: Summary;
  listMs: Summary;
  listPageSize: number;
  listedPerCall: number;
  errors: string[];
}

const mib = (kib: number) => round(kib / 1024, 1);

export async function runScale(ctx: Ctx): Promise<SectionResult<ScaleData>> {
  const t0 = Date.now();
  const { cfg, progress, client, prefix, daemon } = ctx;
  const n = cfg.scaleN;
  const names = Array.from({ length: n }, (_, i) => `${prefix}s${String(i).padStart(4, '0')}`);
  const spec = ContainerSpec.fromPartial({
    driver: 'lxc',
    rootfs: { source: { $case: 'template', value: 'busybox' } },
    network: { mode: { $case: 'none', value: {} } },
  });
  const errors: string[] = [];
  await sleep(1000);
  const availBefore = memAvailableKiB();
  const rssBefore = memoryOf(daemon.pid)?.rssKiB ?? NaN;

  const startMs = new Array<number>(n).fill(NaN);
  let done = 0;
  const s0 = process.hrtime.bigint();
  await pool(names, cfg.scaleConcurrency, async (name, i) => {
    try {
      const a = process.hrtime.bigint();
      await client.api.containers.createContainer({ name, spec });
      const r = await client.api.containers.startContainer({ name });
      if (r.container?.status?.state !== ContainerState.CONTAINER_STATE_RUNNING) throw new Error(`${name} is ${r.container?.status?.state}`);
      startMs[i] = msSince(a);
    } catch (e) {
      errors.push(`${name}: ${errorText(e)}`);
      if (errors.length === 1) progress.warn(errorText(e));
    }
    done++;
    progress.tick('starting', done, n, `${num(done / (msSince(s0) / 1000))} containers/s`);
  });
  const startSeconds = msSince(s0) / 1000;
  if (errors.length > n / 10) throw new Error(`${errors.length} of ${n} containers failed to start; first: ${errors[0]}`);

  progress.step('measuring memory');
  await sleep(2000);
  const availRunning = memAvailableKiB();
  const rssRunning = memoryOf(daemon.pid)?.rssKiB ?? NaN;
  const monRss: number[] = [];
  const monPss: number[] = [];
  const monUss: number[] = [];
  const initRss: number[] = [];
  const initPss: number[] = [];
  let running = 0;
  for (const name of names) {
    const rt = daemon.runtime(name);
    if (!rt) continue;
    running++;
    const m = memoryOf(rt.monitorPid);
    if (m) {
      monRss.push(m.rssKiB);
      monPss.push(m.pssKiB);
      monUss.push(m.ussKiB);
    }
    // The init and its sleeping child.
    let rss = 0;
    let pss = 0;
    for (const pid of [rt.initPid, ...childrenOf(rt.initPid)]) {
      const x = memoryOf(pid);
      rss += x?.rssKiB ?? 0;
      pss += x?.pssKiB ?? 0;
    }
    initRss.push(rss);
    initPss.push(pss);
  }
  const cgUsage: number[] = [];
  for (const name of names.filter((_, i) => i % Math.max(1, Math.floor(n / 20)) === 0)) {
    try {
      const st = await client.api.containers.getContainerStats({ name });
      if (st.stats) cgUsage.push(Number(st.stats.memoryUsageBytes) / 1024);
    } catch (e) {
      errors.push(`stats ${name}: ${errorText(e)}`);
    }
  }

  progress.step(`Get/List latency with ${running} running`);
  const getMs: number[] = [];
  for (let i = 0; i < (cfg.quick ? 100 : 500); i++) {
    const name = names[(i * 7919) % n]!;
    const a = process.hrtime.bigint();
    await client.api.containers.getContainer({ name });
    getMs.push(msSince(a));
  }
  const pageSize = Math.min(1000, Math.max(100, n));
  const listMs: number[] = [];
  let listed = 0;
  for (let i = 0; i < (cfg.quick ? 10 : 50); i++) {
    const a = process.hrtime.bigint();
    const r = await client.api.containers.listContainers({ pageSize, pageToken: '', driver: '', states: [] });
    listMs.push(msSince(a));
    listed = r.containers.length;
  }

  // LXC's monitor for one container, as a reference for the per-container cost.
  let lxcMonitor: ScaleData['memory']['lxcMonitor'];
  if (ctx.tools.lxcStart) {
    const lxc = new LxcAnchor(path.join(ctx.work, 'lxc-scale'), ctx.anchorRootfs, ctx.cleanup);
    const name = `${prefix}lmon`;
    try {
      await lxc.create(name);
      await lxc.start(name);
      const init = await lxc.initPid(name);
      await waitForTermHandler(init);
      const ppid = parentPid(init) ?? 0;
      const m = memoryOf(ppid);
      lxcMonitor = m ?? { skipped: 'could not read the LXC monitor memory' };
      await lxc.forceRemove(name);
    } catch (e) {
      lxcMonitor = { skipped: errorText(e) };
    }
  } else lxcMonitor = { skipped: 'LXC is not installed' };

  progress.step('stopping and deleting');
  done = 0;
  const d0 = process.hrtime.bigint();
  await pool(names, cfg.scaleConcurrency, async (name) => {
    try {
      await client.api.containers.stopContainer({ name, signal: 0, timeout: undefined });
      await client.api.containers.deleteContainer({ name, force: true, allowMissing: true });
    } catch (e) {
      errors.push(`${name}: ${errorText(e)}`);
    }
    done++;
    progress.tick('stopping+deleting', done, n);
  });
  const stopDeleteSeconds = msSince(d0) / 1000;
  await sleep(1000);
  const availAfter = memAvailableKiB();
  const rssAfter = memoryOf(daemon.pid)?.rssKiB ?? NaN;

  const started = startMs.filter(Number.isFinite);
  const data: ScaleData = {
    n,
    running,
    concurrency: cfg.scaleConcurrency,
    startSeconds: round(startSeconds, 2),
    startsPerSecond: round(started.length / startSeconds, 1),
    startMs: startMs.map((x) => round(x, 2)),
    start: roundSummary(summarize(started)),
    stopDeleteSeconds: round(stopDeleteSeconds, 2),
    memory: {
      availableBeforeMiB: mib(availBefore),
      availableRunningMiB: mib(availRunning),
      availableAfterMiB: mib(availAfter),
      hostPerContainerKiB: round((availBefore - availRunning) / Math.max(1, running), 0),
      daemonRssBeforeKiB: rssBefore,
      daemonRssRunningKiB: rssRunning,
      daemonRssAfterKiB: rssAfter,
      monitorRssKiB: roundSummary(summarize(monRss), 0),
      monitorPssKiB: roundSummary(summarize(monPss), 0),
      monitorUssKiB: roundSummary(summarize(monUss), 0),
      initTreeRssKiB: roundSummary(summarize(initRss), 0),
      initTreePssKiB: roundSummary(summarize(initPss), 0),
      cgroupUsageKiB: roundSummary(summarize(cgUsage), 0),
      lxcMonitor,
    },
    getMs: roundSummary(summarize(getMs), 4),
    listMs: roundSummary(summarize(listMs), 4),
    listPageSize: pageSize,
    listedPerCall: listed,
    errors: errors.slice(0, 20),
  };
  return {
    id: 'scale',
    title: 'Scale',
    status: errors.length ? 'partial' : 'ok',
    reason: errors.length ? `${errors.length} errors; first: ${errors[0]}` : undefined,
    seconds: (Date.now() - t0) / 1000,
    notes: [],
    data,
  };
}

export function renderScale(r: Report, res: SectionResult<ScaleData>): void {
  r.h(2, '5. Scale: many running containers');
  const d = res.data;
  if (!d) {
    r.p(`Not measured: ${res.reason ?? res.status}.`);
    return;
  }
  const m = d.memory;
  r.p(
    `${d.n} busybox containers (sleeping init, own pid/mnt/uts/ipc/net/cgroup namespaces, no network devices), created and started through the API ${d.concurrency} at a time, then stopped (SIGTERM) and deleted ${d.concurrency} at a time. ` +
      'Memory: RSS counts shared pages in full, PSS splits them among the processes sharing them, USS counts only pages private to the process (what one more container costs; compare USS with LXC\'s monitor, whose PSS is not shared with anything here). "Host per container" is the drop in MemAvailable divided by the number of running containers: everything a container costs, kernel objects included.',
  );
  const lxcMon =
    m.lxcMonitor && 'rssKiB' in m.lxcMonitor
      ? `${num(m.lxcMonitor.rssKiB)} / ${num(m.lxcMonitor.pssKiB)} / ${num(m.lxcMonitor.ussKiB)}`
      : `- (${m.lxcMonitor && 'skipped' in m.lxcMonitor ? m.lxcMonitor.skipped : 'not measured'})`;
  r.table(
    ['measure', 'value'],
    [
      ['containers running', `${d.running} of ${d.n}`],
      ['time to create+start all', `${d.startSeconds} s (${d.startsPerSecond} containers/s)`],
      ['create+start latency p50 / p95 under that load', `${ms(d.start.p50)} / ${ms(d.start.p95)} ms`],
      ['time to stop+delete all', `${d.stopDeleteSeconds} s`],
      [
        'daemon RSS: before / with all running / after',
        `${num(m.daemonRssBeforeKiB / 1024)} / ${num(m.daemonRssRunningKiB / 1024)} / ${num(m.daemonRssAfterKiB / 1024)} MiB`,
      ],
      ['daemon RSS growth per running container', `${num((m.daemonRssRunningKiB - m.daemonRssBeforeKiB) / Math.max(1, d.running))} KiB`],
      [
        'monitor process (osvirt-helper run) RSS / PSS / USS, p50',
        `${num(m.monitorRssKiB.p50)} / ${num(m.monitorPssKiB.p50)} / ${num(m.monitorUssKiB?.p50)} KiB`,
      ],
      ['LXC monitor (lxc-start) of one container, RSS / PSS / USS', `${lxcMon} KiB`],
      ['container processes (sh + sleep) RSS / PSS, p50', `${num(m.initTreeRssKiB.p50)} / ${num(m.initTreePssKiB.p50)} KiB`],
      ['container memory cgroup usage, p50', `${num(m.cgroupUsageKiB.p50)} KiB`],
      ['host MemAvailable per container', `${num(m.hostPerContainerKiB)} KiB`],
      ['MemAvailable before / running / after', `${num(m.availableBeforeMiB)} / ${num(m.availableRunningMiB)} / ${num(m.availableAfterMiB)} MiB`],
      [`GetContainer latency p50 / p95 (${d.running} running)`, `${ms(d.getMs.p50)} / ${ms(d.getMs.p95)} ms`],
      [`ListContainers latency p50 / p95 (page_size ${d.listPageSize}, ${d.listedPerCall} returned)`, `${ms(d.listMs.p50)} / ${ms(d.listMs.p95)} ms`],
    ],
    ['l', 'r'],
  );
  r.svg(
    'scale',
    lineChart({
      title: `Create+start latency while starting ${d.n} containers (${d.concurrency} at a time)`,
      xLabel: 'container (start order)',
      yLabel: 'milliseconds',
      series: [{ label: 'create+start', points: d.startMs.map((y, x) => ({ x, y })), pointsOnly: true }],
    }),
    'start latency by start order',
  );
  if (d.startMs.length)
    r.svg(
      'scale-dist',
      distributionPlot({
        title: 'Create+start latency under load',
        unit: 'milliseconds',
        series: [{ label: `${d.n} containers`, samples: d.startMs.filter(Number.isFinite) }],
      }),
      'start latency distribution under load',
    );
}
