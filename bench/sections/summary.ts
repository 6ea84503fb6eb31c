// The headline table at the top of the report: one line per question the
// issue asks, osvirt's figure next to each anchor and the ratio.
import type { SectionResult } from '../lib/context';
import { ms, num, pct, times, type Report } from '../lib/report';
import { median } from '../lib/stats';
import type { CheckpointData } from './checkpoint';
import type { CtxData } from './context-switch';
import type { ControlData } from './control-plane';
import type { LifecycleData } from './lifecycle';
import type { NetData } from './network';
import type { ScaleData } from './scale';
import type { BootData } from './boot';
import type { ImagesData } from './images';

export function renderSummary(r: Report, sections: Record<string, SectionResult>): void {
  r.h(2, 'Summary');
  const rows: string[][] = [];
  const status = Object.values(sections)
    .map((s) => `${s.id}: ${s.status}${s.reason ? ` (${s.reason})` : ''}`)
    .join('; ');

  const lc = sections['lifecycle']?.data as LifecycleData | undefined;
  if (lc) {
    const label = (id: string) => lc.variants.find((v) => v.id === id)?.label ?? id;
    for (const [metric, what] of [
      ['start', 'create+start until RUNNING, p50 ms'],
      ['stop', 'stop+delete, p50 ms'],
    ] as const) {
      for (const v of ['osvirt-none', 'osvirt-veth']) {
        const s = lc.summary[v];
        if (!s) continue;
        const vs = lc.ratios
          .filter((x) => x.metric === metric && x.variant === v)
          .map((x) => `${label(x.anchor)} ${ms(lc.summary[x.anchor]?.[metric].p50)} (${times(x.p50)})`)
          .join('; ');
        rows.push([`${what}: ${label(v)}`, ms(s[metric].p50), vs || '-']);
      }
    }
  }
  const cp = sections['checkpoint']?.data as CheckpointData | undefined;
  if (cp) {
    const ov = cp.variants.find((v) => v.id === 'osvirt');
    const others = cp.variants.filter((v) => v.id !== 'osvirt' && v.summary);
    const vs = (k: 'dump' | 'restore') =>
      others.map((a) => `${a.label} ${ms(a.summary![k].p50)}${ov?.summary ? ` (${times(ov.summary[k].p50 / a.summary![k].p50)})` : ''}`).join('; ');
    rows.push(['checkpoint (dump), p50 ms', ov?.summary ? ms(ov.summary.dump.p50) : `not measured${ov?.skipped ? `: ${ov.skipped}` : ''}`, vs('dump') || '-']);
    rows.push(['restore, p50 ms', ov?.summary ? ms(ov.summary.restore.p50) : 'not measured', vs('restore') || '-']);
    if (ov?.summary)
      rows.push(['frozen time during dump, p50 ms', ms(ov.summary.frozen.p50), others.map((a) => `${a.label} ${ms(a.summary!.frozen.p50)}`).join('; ')]);
  }
  const ctl = sections['control-plane']?.data as ControlData | undefined;
  if (ctl) {
    for (const c of ctl.cells.filter((x) => x.concurrency === 1 || x.concurrency === Math.max(...ctl.cells.map((y) => y.concurrency)))) {
      if (c.defined !== Math.max(...ctl.cells.map((y) => y.defined)) && c.method === 'ListContainers') continue;
      rows.push([
        `${c.method} calls/s, concurrency ${c.concurrency}, ${c.defined} defined`,
        num(c.osvirt.callsPerSecond),
        `bare grpc-js ${num(c.baseline.callsPerSecond)} (${times(c.ratio)})`,
      ]);
    }
  }
  const sc = sections['scale']?.data as ScaleData | undefined;
  if (sc) {
    const m = sc.memory;
    const lxc = m.lxcMonitor && 'ussKiB' in m.lxcMonitor ? `LXC monitor USS ${num(m.lxcMonitor.ussKiB)} KiB` : '-';
    rows.push([`${sc.n} running containers: time to start all`, `${sc.startSeconds} s`, `${sc.startsPerSecond} containers/s, ${sc.concurrency} at a time`]);
    rows.push(['per-container monitor memory, USS / PSS KiB', `${num(m.monitorUssKiB?.p50)} / ${num(m.monitorPssKiB.p50)}`, lxc]);
    rows.push(['daemon RSS with all running', `${num(m.daemonRssRunningKiB / 1024)} MiB`, `${num(m.daemonRssBeforeKiB / 1024)} MiB before`]);
    rows.push([`Get / List latency with ${sc.running} running, p50 ms`, `${ms(sc.getMs.p50)} / ${ms(sc.listMs.p50)}`, '-']);
  }
  const net = sections['network']?.data as NetData | undefined;
  if (net) {
    const lo1500 = net.rows.find((x) => x.id === 'host-loopback-1500');
    const lo = net.rows.find((x) => x.id === 'host-loopback');
    for (const id of ['host-veth', 'container-bridge', 'container-macvlan']) {
      const x = net.rows.find((y) => y.id === id);
      if (!x || x.mbps === undefined) continue;
      rows.push([
        `TCP stream ${x.label} over ${x.path.split(' (')[0]}, MB/s`,
        num(x.mbps),
        `host lo@1500 ${num(lo1500?.mbps)} (${pct(x.degradation1500Pct)}); host lo ${num(lo?.mbps)} (${pct(x.degradationPct)})`,
      ]);
    }
  }
  const cs = sections['context-switch']?.data as CtxData | undefined;
  if (cs) {
    const all = Object.values(cs.overheadPct).flatMap((x) => Object.values(x));
    const seedAll = cs.seed.rows.flatMap((x) => x.ovr);
    rows.push(['context switch overhead container vs host, median over all S x N', pct(median(all)), `2013 LXC: ${pct(median(seedAll))}`]);
  }
  const boot = sections['boot']?.data as BootData | undefined;
  if (boot?.summary['osvirt']) {
    const l = boot.summary['lxc'];
    const rb = boot.ratios.find((x) => x.metric === 'boot');
    const rh = boot.ratios.find((x) => x.metric === 'halt');
    rows.push(['Debian boot until "running", p50 ms', ms(boot.summary['osvirt'].boot.p50), l ? `lxc-start ${ms(l.boot.p50)} (${times(rb?.p50)})` : '-']);
    rows.push(['Debian halt+delete, p50 ms', ms(boot.summary['osvirt'].halt.p50), l ? `lxc-stop+destroy ${ms(l.halt.p50)} (${times(rh?.p50)})` : '-']);
  }
  const img = sections['images']?.data as ImagesData | undefined;
  for (const kind of ['pull', 'start'] as const) {
    const o = img?.summary[`${kind}:osvirt`];
    if (!img || !o) continue;
    const anchors = img.ratios.filter((x) => x.metric === kind).map((x) => `${x.anchor} ${ms(img.summary[`${kind}:${x.anchor}`]!.p50)} (${times(x.p50)})`);
    rows.push([
      kind === 'pull' ? `image pull + unpack (${img.layers} layers, ${img.imageMiB} MiB), p50 ms` : 'start from an image, p50 ms',
      ms(o.p50),
      anchors.join(', ') || '-',
    ]);
  }
  if (rows.length) r.table(['measure', 'osvirt', 'anchors measured in the same run (osvirt / anchor)'], rows, ['l', 'r', 'l']);
  r.p(`Sections: ${status}.`);
}
