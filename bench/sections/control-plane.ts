// Section 4: control-plane throughput. GetContainer and ListContainers calls
// per second at concurrency 1, 8, 64 through osvirtd, next to a bare grpc-js
// server answering the same messages from memory (the framework's limit),
// with a handful of defined containers and with 1000.
import { ContainerSpec } from '../../src/gen/osvirt/v1/container';
import { GetContainerResponse, ListContainersResponse } from '../../src/gen/osvirt/v1/container_service';
import type { Ctx, SectionResult } from '../lib/context';
import { BaselineServer, closedLoop, type LoadResult } from '../lib/load';
import { pool } from '../lib/proc';
import { bytes, ms, num, times, type Report } from '../lib/report';
import { ratio } from '../lib/stats';
import { barChart } from '../lib/svg';

export interface ControlCell {
  method: 'GetContainer' | 'ListContainers';
  defined: number;
  pageSize: number;
  concurrency: number;
  osvirt: LoadResult;
  baseline: LoadResult;
  /** osvirt calls/s divided by the bare server's. */
  ratio: number;
}

export interface ControlData {
  secondsPerCell: number;
  phases: { defined: number; defineSeconds: number; getBytes: number; listBytes: number; listed: number }[];
  cells: ControlCell[];
  deleteSeconds: number;
}

const SMALL = 10;

export async function runControlPlane(ctx: Ctx): Promise<SectionResult<ControlData>> {
  const t0 = Date.now();
  const { cfg, progress, client, prefix } = ctx;
  const spec = ContainerSpec.fromPartial({
    driver: 'lxc',
    rootfs: { source: { $case: 'template', value: 'busybox' } },
    network: { mode: { $case: 'none', value: {} } },
    hostname: 'cp',
  });
  const names = Array.from({ length: Math.max(SMALL, cfg.listDefined) }, (_, i) => `${prefix}q${String(i).padStart(4, '0')}`);
  const baseline = new BaselineServer(ctx.work, ctx.cleanup);
  const data: ControlData = { secondsPerCell: cfg.controlSeconds, phases: [], cells: [], deleteSeconds: 0 };
  let defined = 0;
  const cellsPerPhase = 2 * cfg.controlConcurrency.length;
  const phases = [SMALL, cfg.listDefined];
  let cellNo = 0;
  try {
    for (const target of phases) {
      const d0 = Date.now();
      const todo = names.slice(defined, target);
      let done = 0;
      await pool(todo, 8, async (name) => {
        await client.api.containers.createContainer({ name, spec });
        done++;
        progress.tick(`defining containers (${target})`, done, todo.length);
      });
      defined = target;
      const defineSeconds = (Date.now() - d0) / 1000;
      const pageSize = target <= 100 ? 100 : 1000;
      const get = await client.api.containers.getContainer({ name: names[0]! });
      const list = await client.api.containers.listContainers({ pageSize, pageToken: '', driver: '', states: [] });
      data.phases.push({
        defined: target,
        defineSeconds: +defineSeconds.toFixed(2),
        getBytes: GetContainerResponse.encode(get).finish().length,
        listBytes: ListContainersResponse.encode(list).finish().length,
        listed: list.containers.length,
      });
      const bc = await baseline.start({ get: GetContainerResponse.toJSON(get), list: ListContainersResponse.toJSON(list) }, String(target));
      try {
        // Warm both servers (JIT, connection) before anything is recorded.
        const warm = Math.max(0.5, cfg.controlSeconds / 4);
        for (const c of [client, bc]) {
          await closedLoop(() => c.api.containers.getContainer({ name: names[0]! }), 8, warm, 0);
          await closedLoop(() => c.api.containers.listContainers({ pageSize, pageToken: '', driver: '', states: [] }), 8, warm, 0);
        }
        for (const method of ['GetContainer', 'ListContainers'] as const) {
          for (const c of cfg.controlConcurrency) {
            const callOsvirt =
              method === 'GetContainer'
                ? () => client.api.containers.getContainer({ name: names[0]! })
                : () => client.api.containers.listContainers({ pageSize, pageToken: '', driver: '', states: [] });
            const callBase =
              method === 'GetContainer'
                ? () => bc.api.containers.getContainer({ name: names[0]! })
                : () => bc.api.containers.listContainers({ pageSize, pageToken: '', driver: '', states: [] });
            // Alternate which goes first so neither always gets the warmer machine.
            const first = cellNo % 2 === 0;
            const a = await closedLoop(first ? callOsvirt : callBase, c, cfg.controlSeconds);
            const b = await closedLoop(first ? callBase : callOsvirt, c, cfg.controlSeconds);
            const [o, base] = first ? [a, b] : [b, a];
            data.cells.push({
              method,
              defined: target,
              pageSize,
              concurrency: c,
              osvirt: o,
              baseline: base,
              ratio: +ratio(o.callsPerSecond, base.callsPerSecond).toFixed(3),
            });
            cellNo++;
            progress.tick(
              'cells',
              cellNo,
              cellsPerPhase * phases.length,
              `${method} c=${c} ${target} defined: osvirt ${num(o.callsPerSecond)}/s, bare ${num(base.callsPerSecond)}/s`,
            );
          }
        }
      } finally {
        await baseline.stop();
      }
    }
  } finally {
    const x0 = Date.now();
    let done = 0;
    await pool(names.slice(0, defined), 8, async (name) => {
      await client.api.containers.deleteContainer({ name, force: true, allowMissing: true }).catch(() => undefined);
      done++;
      progress.tick('deleting defined containers', done, defined);
    });
    data.deleteSeconds = +((Date.now() - x0) / 1000).toFixed(2);
  }
  const errors = data.cells.reduce((a, c) => a + c.osvirt.errors + c.baseline.errors, 0);
  return {
    id: 'control-plane',
    title: 'Control plane',
    status: 'ok',
    seconds: (Date.now() - t0) / 1000,
    notes: errors ? [`${errors} calls failed during the load runs (not counted)`] : [],
    data,
  };
}

export function renderControlPlane(r: Report, res: SectionResult<ControlData>): void {
  r.h(2, '4. Control plane: GetContainer and ListContainers');
  const d = res.data;
  if (!d) {
    r.p(`Not measured: ${res.reason ?? res.status}.`);
    return;
  }
  r.p(
    `Closed-loop clients (each issues its next call when the previous returns) over one gRPC channel on the unix socket, ${d.secondsPerCell} s per cell after a short warm-up. ` +
      '"bare grpc-js" is a separate Node process serving the same ContainerService definition with the very messages osvirt returned, from memory: the framework\'s own limit on this machine. ' +
      `ListContainers asks for one page with every container (page_size 100 with ${d.phases[0]?.defined ?? '?'} defined, 1000 with ${d.phases[1]?.defined ?? '?'} defined). Latency p50/p95 in ms.`,
  );
  r.table(
    ['defined', 'time to define them', 'GetContainer response', 'ListContainers response'],
    d.phases.map((p) => [p.defined, `${p.defineSeconds} s`, bytes(p.getBytes), `${bytes(p.listBytes)} (${p.listed} containers)`]),
  );
  r.table(
    ['call', 'defined', 'concurrency', 'osvirt calls/s', 'bare grpc-js calls/s', 'osvirt / bare', 'osvirt latency p50 / p95', 'bare latency p50 / p95'],
    d.cells.map((c) => [
      c.method,
      c.defined,
      c.concurrency,
      num(c.osvirt.callsPerSecond),
      num(c.baseline.callsPerSecond),
      times(c.ratio),
      `${ms(c.osvirt.latency.p50)} / ${ms(c.osvirt.latency.p95)}`,
      `${ms(c.baseline.latency.p50)} / ${ms(c.baseline.latency.p95)}`,
    ]),
  );
  r.p(`Deleting the defined containers took ${d.deleteSeconds} s.`);
  r.svg(
    'control-plane',
    barChart({
      title: 'Calls per second (higher is better)',
      unit: 'calls per second',
      legend: [
        { label: 'osvirt', color: '#1f77b4' },
        { label: 'bare grpc-js', color: '#7f7f7f' },
      ],
      groups: d.cells.map((c) => ({
        label: `${c.method === 'GetContainer' ? 'Get' : 'List'}, ${c.defined} defined, c=${c.concurrency}`,
        bars: [
          { label: 'osvirt', value: c.osvirt.callsPerSecond, color: '#1f77b4', note: `(${times(c.ratio)})` },
          { label: 'bare', value: c.baseline.callsPerSecond, color: '#7f7f7f' },
        ],
      })),
    }),
    'control plane calls per second',
  );
}
