// Sections 1 and 2: start latency (create+start until RUNNING) and stop+delete
// latency, osvirt through gRPC next to lxc-start, runc run and the unshare
// floor. Variants run interleaved, round by round, so drift on this shared
// machine hits all of them alike.
import { ContainerSpec, ContainerState } from '../../src/gen/osvirt/v1/container';
import { floorStart, floorStop, LxcAnchor, RuncAnchor, waitForTermHandler } from '../lib/anchors';
import { errorText, type Ctx, type SectionResult } from '../lib/context';
import { msSince, ratio, roundSummary, summarize, type Summary } from '../lib/stats';
import { distributionPlot } from '../lib/svg';
import { ms, num, times, type Report } from '../lib/report';
import { chmod } from 'node:fs/promises';
import * as path from 'node:path';

export interface LifecycleVariant {
  id: string;
  label: string;
  /** Is this osvirt (compared against the anchors) or an anchor? */
  osvirt: boolean;
  startMs: number[];
  stopMs: number[];
  parts: Record<string, number[]>;
  errors: string[];
  skipped?: string;
}

export interface LifecycleData {
  runs: number;
  warmup: number;
  variants: LifecycleVariant[];
  summary: Record<string, { start: Summary; stop: Summary; parts: Record<string, Summary> }>;
  ratios: { metric: 'start' | 'stop'; variant: string; anchor: string; p50: number; p95: number }[];
}

interface Runner {
  v: LifecycleVariant;
  once(i: number): Promise<{ start: number; stop: number; parts: Record<string, number> }>;
}

const hr = () => process.hrtime.bigint();

export async function runLifecycle(ctx: Ctx): Promise<SectionResult<LifecycleData>> {
  const t0 = Date.now();
  const { cfg, progress, client, prefix } = ctx;
  const notes: string[] = [];
  const mk = (id: string, label: string, osvirt: boolean): LifecycleVariant => ({ id, label, osvirt, startMs: [], stopMs: [], parts: {}, errors: [] });
  const runners: Runner[] = [];

  const osvirtRunner = (id: string, label: string, network: ContainerSpec['network'], privileged = false): Runner => {
    const spec = ContainerSpec.fromPartial({ driver: 'lxc', rootfs: { source: { $case: 'template', value: 'busybox' } }, network, security: { privileged } });
    return {
      v: mk(id, label, true),
      async once(i) {
        const name = `${prefix}${id === 'osvirt-veth' ? 'v' : id === 'osvirt-priv' ? 'p' : 'n'}${i}`;
        const a = hr();
        await client.api.containers.createContainer({ name, spec });
        const create = msSince(a);
        const b = hr();
        const r = await client.api.containers.startContainer({ name });
        const start = msSince(b);
        if (r.container?.status?.state !== ContainerState.CONTAINER_STATE_RUNNING)
          throw new Error(`${name} is ${r.container?.status?.state} after StartContainer`);
        await waitForTermHandler(r.container.status.initPid);
        const c = hr();
        await client.api.containers.stopContainer({ name, signal: 0, timeout: undefined });
        const stop = msSince(c);
        const d = hr();
        await client.api.containers.deleteContainer({ name, force: false, allowMissing: false });
        const del = msSince(d);
        return { start: create + start, stop: stop + del, parts: { create, start, stop, delete: del } };
      },
    };
  };
  runners.push(osvirtRunner('osvirt-none', 'osvirt, no network', { mode: { $case: 'none', value: {} } }));
  runners.push(
    osvirtRunner('osvirt-veth', 'osvirt, veth on bridge', {
      mode: { $case: 'bridge', value: { bridge: '', address: '', interfaceName: '', macAddress: '', mtu: 0 } },
    }),
  );
  // What the default user namespace and idmapped root cost: the same container without them.
  runners.push(osvirtRunner('osvirt-priv', 'osvirt privileged (no user namespace), no network', { mode: { $case: 'none', value: {} } }, true));

  const lxcV = mk('lxc', 'lxc-start (LXC 5)', false);
  const lxcU = mk('lxc-unpriv', 'lxc-start, unprivileged (lxc.idmap, idmapped dir rootfs)', false);
  const lxcRunner = (v: LifecycleVariant, tag: string, lxc: LxcAnchor): Runner => ({
    v,
    async once(i) {
      const name = `${prefix}${tag}${i}`;
      const a = hr();
      await lxc.create(name);
      const create = msSince(a);
      const start = (await lxc.start(name)).ms;
      await waitForTermHandler(await lxc.initPid(name));
      const stop = (await lxc.stop(name)).ms;
      await lxc.prepareDestroy(name);
      const del = (await lxc.destroy(name)).ms;
      return { start: create + start, stop: stop + del, parts: { create, start, stop, delete: del } };
    },
  });
  if (ctx.tools.lxcStart) {
    runners.push(lxcRunner(lxcV, 'l', new LxcAnchor(path.join(ctx.work, 'lxc'), ctx.anchorRootfs, ctx.cleanup)));
    // LXC's unprivileged container needs search permission for its root on every directory on the
    // way ("Could not access ... Please grant it x access"): the bench's work dir is 0700.
    // osvirt opens the root while its init still has the host's uid, so it needs no such grant.
    await chmod(ctx.work, 0o711);
    // Far above the ranges osvirt allocates (1000000 up, 65536 each), so the two never share ids.
    runners.push(lxcRunner(lxcU, 'u', new LxcAnchor(path.join(ctx.work, 'lxc-unpriv'), ctx.anchorRootfs, ctx.cleanup, undefined, { hostId: 4000000000 })));
  } else lxcV.skipped = lxcU.skipped = 'lxc-start is not installed (apt-get install lxc)';

  const runcV = mk('runc', 'runc run (1.1)', false);
  if (ctx.tools.runc) {
    const runc = new RuncAnchor(path.join(ctx.work, 'runc-root'), path.join(ctx.work, 'runc-bundles'), ctx.anchorRootfs, ctx.cleanup);
    runners.push({
      v: runcV,
      async once(i) {
        const name = `${prefix}r${i}`;
        const a = hr();
        await runc.create(name);
        const create = msSince(a);
        const start = (await runc.start(name)).ms;
        await waitForTermHandler(runc.initPid(name));
        const stop = await runc.stop(name);
        const del = (await runc.delete(name)).ms;
        return { start: create + start, stop: stop + del, parts: { create, start, stop, delete: del } };
      },
    });
  } else runcV.skipped = 'runc is not installed (apt-get install runc)';

  const floorV = mk('floor', 'floor: unshare (namespaces only)', false);
  if (ctx.tools.unshare) {
    runners.push({
      v: floorV,
      async once() {
        const start = await floorStart();
        const stop = await floorStop(ctx.cleanup);
        return { start, stop, parts: {} };
      },
    });
  } else floorV.skipped = 'unshare (util-linux) is not installed';

  const total = cfg.lifecycleWarmup + cfg.lifecycleRuns;
  for (let round = 0; round < total; round++) {
    const measured = round >= cfg.lifecycleWarmup;
    // Rotate the order each round so no variant always runs right after another.
    for (let k = 0; k < runners.length; k++) {
      const r = runners[(round + k) % runners.length]!;
      if (r.v.errors.length > Math.max(5, cfg.lifecycleRuns / 5)) continue;
      try {
        const x = await r.once(round);
        if (!measured) continue;
        r.v.startMs.push(x.start);
        r.v.stopMs.push(x.stop);
        for (const [k2, v] of Object.entries(x.parts)) (r.v.parts[k2] ??= []).push(v);
      } catch (e) {
        r.v.errors.push(errorText(e));
        if (r.v.errors.length === 1) progress.warn(`${r.v.label}: ${errorText(e)}`);
      }
    }
    const show = runners
      .filter((r) => r.v.startMs.length)
      .map((r) => `${r.v.id} ${num(summarize(r.v.startMs).p50)}`)
      .join(', ');
    progress.tick('round', round + 1, total, measured && show ? `start p50 ms: ${show}` : '(warm-up)');
  }

  const variants = [runners[0]!.v, runners[1]!.v, runners[2]!.v, lxcV, lxcU, runcV, floorV];
  const summary: LifecycleData['summary'] = {};
  for (const v of variants) {
    if (v.errors.length > Math.max(5, cfg.lifecycleRuns / 5)) v.skipped = `too many failures (${v.errors.length}); first: ${v.errors[0]}`;
    if (!v.startMs.length) continue;
    const parts: Record<string, Summary> = {};
    for (const [k, xs] of Object.entries(v.parts)) parts[k] = roundSummary(summarize(xs));
    summary[v.id] = { start: roundSummary(summarize(v.startMs)), stop: roundSummary(summarize(v.stopMs)), parts };
  }
  const ratios: LifecycleData['ratios'] = [];
  for (const metric of ['start', 'stop'] as const) {
    for (const v of variants.filter((x) => x.osvirt && summary[x.id])) {
      for (const a of variants.filter((x) => !x.osvirt && summary[x.id])) {
        const sv = summary[v.id]![metric];
        const sa = summary[a.id]![metric];
        ratios.push({ metric, variant: v.id, anchor: a.id, p50: ratio(sv.p50, sa.p50), p95: ratio(sv.p95, sa.p95) });
      }
    }
  }
  for (const v of variants) {
    v.startMs = v.startMs.map((x) => +x.toFixed(3));
    v.stopMs = v.stopMs.map((x) => +x.toFixed(3));
    for (const k of Object.keys(v.parts)) v.parts[k] = v.parts[k]!.map((x) => +x.toFixed(3));
    if (v.skipped) notes.push(`${v.label}: skipped: ${v.skipped}`);
    else if (v.errors.length) notes.push(`${v.label}: ${v.errors.length} failed runs; first: ${v.errors[0]}`);
  }
  const anySkipped = variants.some((v) => v.skipped);
  return {
    id: 'lifecycle',
    title: 'Start and stop latency',
    status: summary['osvirt-none'] ? (anySkipped ? 'partial' : 'ok') : 'failed',
    reason: summary['osvirt-none'] ? undefined : `osvirt runs failed: ${runners[0]!.v.errors[0] ?? 'unknown'}`,
    seconds: (Date.now() - t0) / 1000,
    notes,
    data: { runs: cfg.lifecycleRuns, warmup: cfg.lifecycleWarmup, variants, summary, ratios },
  };
}

export function renderLifecycle(r: Report, res: SectionResult<LifecycleData>): void {
  const d = res.data;
  r.h(2, '1. Start latency and 2. stop+delete latency');
  if (!d) {
    r.p(`Not measured: ${res.reason ?? res.status}.`);
    return;
  }
  r.p(
    `Create+start until RUNNING (osvirt: CreateContainer + StartContainer over gRPC on the unix socket; LXC: write the config + \`lxc-start -d\`; runc: write the bundle + \`runc run -d\`; floor: \`unshare --fork --pid --mount --uts --ipc --net true\`), then stop+delete (osvirt: StopContainer with SIGTERM + DeleteContainer; LXC: \`lxc-stop\` + \`lxc-destroy\`; runc: \`runc kill TERM\`, wait for the init to exit, \`runc delete\`; floor: SIGKILL to the namespace's pid 1 until reaped). ` +
      `Busybox rootfs: osvirt's template (osvirt and LXC mount an overlay over it per container; runc uses it read-only), the same idle init everywhere (\`sh\` trapping SIGTERM). ` +
      `${d.runs} measured runs per variant after ${d.warmup} warm-up runs, interleaved round by round. Times in ms, measured by the bench process (every command-line anchor includes the same fork/exec from Node).`,
  );
  const rows = d.variants.map((v) => {
    const s = d.summary[v.id];
    if (!s) return [v.label, '-', '-', '-', '-', v.skipped ? `skipped: ${v.skipped}` : `failed: ${v.errors[0] ?? ''}`];
    return [v.label, ms(s.start.p50), ms(s.start.p95), ms(s.stop.p50), ms(s.stop.p95), `${s.start.n}${v.errors.length ? `, ${v.errors.length} failed` : ''}`];
  });
  r.table(['variant', 'start p50', 'start p95', 'stop+delete p50', 'stop+delete p95', 'runs'], rows);

  const anchors = d.variants.filter((v) => !v.osvirt && d.summary[v.id]);
  if (anchors.length) {
    r.p('Ratio osvirt / anchor, same run (below 1.00x: osvirt is faster):');
    const rrows: string[][] = [];
    for (const v of d.variants.filter((x) => x.osvirt && d.summary[x.id])) {
      for (const metric of ['start', 'stop'] as const) {
        const row = [`${v.label}, ${metric === 'start' ? 'start' : 'stop+delete'}`];
        for (const a of anchors) {
          const x = d.ratios.find((q) => q.metric === metric && q.variant === v.id && q.anchor === a.id);
          row.push(`${times(x?.p50)} / ${times(x?.p95)}`);
        }
        rrows.push(row);
      }
    }
    r.table(['osvirt (p50 / p95 ratio)', ...anchors.map((a) => `vs ${a.label}`)], rrows);
  }

  const partRows: string[][] = [];
  for (const v of d.variants) {
    const s = d.summary[v.id];
    if (!s || !Object.keys(s.parts).length) continue;
    const p = s.parts;
    partRows.push([v.label, ...['create', 'start', 'stop', 'delete'].map((k) => `${ms(p[k]?.p50)} / ${ms(p[k]?.p95)}`)]);
  }
  if (partRows.length) {
    r.p('Where the time goes (p50 / p95 ms of each step):');
    r.table(['variant', 'create (define)', 'start', 'stop', 'delete'], partRows);
  }
  const series = (key: 'startMs' | 'stopMs') => d.variants.filter((v) => v[key].length).map((v) => ({ label: v.label, samples: v[key] }));
  r.svg('start', distributionPlot({ title: 'Create+start until RUNNING', unit: 'milliseconds', series: series('startMs') }), 'start latency distributions');
  r.svg('stop', distributionPlot({ title: 'Stop+delete', unit: 'milliseconds', series: series('stopMs') }), 'stop+delete latency distributions');
}
