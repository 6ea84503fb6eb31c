// Section 6: network overhead, the seed talk's first table. iperf3 TCP
// stream throughput host to host over loopback, host to container over a
// veth on osvirt's bridge, container to container over the bridge and over
// macvlan (and VLAN where the kernel has 802.1q). The containers are
// application containers (rootfs: host) so the host's iperf3 runs inside.
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { ContainerSpec, MacvlanMode, type Network } from '../../src/gen/osvirt/v1/container';
import { errorText, type Ctx, type SectionResult } from '../lib/context';
import { freeSubnet } from '../lib/daemon';
import { execIn } from '../lib/exec';
import { killPid, run, sleep } from '../lib/proc';
import { num, pct, type Report } from '../lib/report';
import { median, round } from '../lib/stats';
import { barChart } from '../lib/svg';

export interface NetRow {
  id: string;
  label: string;
  path: string;
  /** A few words for plot labels. */
  short: string;
  /** Throughput of each run, MB/s (10^6 bytes per second). */
  runsMBps: number[];
  mbps?: number;
  /** Against host loopback, percent. */
  degradationPct?: number;
  /** Against loopback with a 1500-byte MTU (same frame size as veth/macvlan), percent. */
  degradation1500Pct?: number;
  mtu?: number;
  skipped?: string;
}

export interface NetData {
  seconds: number;
  runs: number;
  rows: NetRow[];
  /** The 2013 LXC figures (seed talk), MB/s. */
  seed: { sharing: string; host: number; lxc: number; degradationPct: number }[];
}

export const SEED_NETWORK = [
  { sharing: 'Virtual Ethernet Device (veth)', host: 913, lxc: 903, degradationPct: -1.1 },
  { sharing: 'MAC-VLAN', host: 912, lxc: 919, degradationPct: 0.77 },
  { sharing: 'VLAN', host: 910, lxc: 910, degradationPct: 0 },
];

const PORT = 5201;

/** Is something listening on TCP `port` in the network namespace of `pid` (or the host's)? */
function listening(port: number, pid?: number): boolean {
  const hex = port.toString(16).toUpperCase().padStart(4, '0');
  for (const f of ['tcp', 'tcp6']) {
    try {
      const t = readFileSync(pid ? `/proc/${pid}/net/${f}` : `/proc/net/${f}`, 'utf8');
      if (t.split('\n').some((l) => l.trim().split(/\s+/)[1]?.endsWith(`:${hex}`) && l.trim().split(/\s+/)[3] === '0A')) return true;
    } catch {
      // no such table
    }
  }
  return false;
}

async function waitListening(port: number, pid?: number): Promise<void> {
  const end = Date.now() + 10000;
  while (!listening(port, pid)) {
    if (Date.now() > end) throw new Error(`iperf3 server did not listen on ${port}${pid ? ` in pid ${pid}'s netns` : ''}`);
    await sleep(20);
  }
}

/** MB/s received from an iperf3 -J report. */
function parseIperf(json: string): number {
  const j = JSON.parse(json) as { error?: string; end?: { sum_received?: { bits_per_second?: number } } };
  if (j.error) throw new Error(`iperf3: ${j.error}`);
  const bps = j.end?.sum_received?.bits_per_second;
  if (!bps) throw new Error('iperf3 reported no throughput');
  return bps / 8 / 1e6;
}

function ipBase(subnet: string, host: number): string {
  const [a, b] = subnet.split('.');
  return `${a}.${b}.0.${host}`;
}

export async function runNetwork(ctx: Ctx): Promise<SectionResult<NetData>> {
  const t0 = Date.now();
  const { cfg, progress, client, prefix, daemon } = ctx;
  const iperf = ctx.tools.iperf3;
  const data: NetData = { seconds: cfg.netSeconds, runs: cfg.netRuns, rows: [], seed: SEED_NETWORK };
  const rows = {
    host: { id: 'host-loopback', label: 'host <-> host', path: 'loopback (lo)', short: 'lo', runsMBps: [] } as NetRow,
    host1500: {
      id: 'host-loopback-1500',
      label: 'host <-> host',
      path: 'loopback at MTU 1500 (scratch netns)',
      short: 'lo at MTU 1500',
      runsMBps: [],
      mtu: 1500,
    } as NetRow,
    veth: { id: 'host-veth', label: 'host -> container', path: 'veth on the osvirt bridge', short: 'veth', runsMBps: [] } as NetRow,
    bridge: { id: 'container-bridge', label: 'container <-> container', path: 'veth, bridge, veth', short: 'veth-bridge-veth', runsMBps: [] } as NetRow,
    macvlan: {
      id: 'container-macvlan',
      label: 'container <-> container',
      path: `macvlan (bridge mode) on ${ctx.uplink ?? '?'}`,
      short: 'macvlan',
      runsMBps: [],
    } as NetRow,
    vlan: { id: 'container-vlan', label: 'container <-> container', path: '802.1q VLAN', short: 'vlan', runsMBps: [] } as NetRow,
  };
  data.rows = Object.values(rows);
  if (!iperf) {
    for (const r of data.rows) r.skipped = 'iperf3 is not installed (apt-get install iperf3)';
    return { id: 'network', title: 'Network', status: 'skipped', reason: 'iperf3 is not installed', seconds: 0, notes: [], data };
  }
  const secs = String(cfg.netSeconds);
  const app = (args: string[], network: Network) =>
    ContainerSpec.fromPartial({ driver: 'lxc', rootfs: { source: { $case: 'host', value: {} } }, process: { args }, network });
  const started = async (name: string, spec: ContainerSpec) => {
    await client.api.containers.createContainer({ name, spec });
    const r = await client.api.containers.startContainer({ name });
    return r.container?.status?.initPid ?? 0;
  };
  const bridgeNet = (address: string): Network => ({ mode: { $case: 'bridge', value: { bridge: '', address, interfaceName: '', macAddress: '', mtu: 0 } } });
  const macvlanNet = (address: string): Network => ({
    mode: { $case: 'macvlan', value: { parent: ctx.uplink ?? '', mode: MacvlanMode.MACVLAN_MODE_BRIDGE, address, interfaceName: '' } },
  });
  const clientIn = async (name: string, server: string) => {
    const r = await execIn(client, name, [iperf, '-c', server, '-p', String(PORT), '-t', secs, '-J'], (cfg.netSeconds + 60) * 1000);
    if (r.exitCode !== 0) throw new Error(`iperf3 client in ${name} exited ${r.exitCode}: ${(r.stdout + r.stderr).slice(-300)}`);
    return parseIperf(r.stdout);
  };

  const measurers: { row: NetRow; setup: () => Promise<void>; once: () => Promise<number> }[] = [];
  // host <-> host over loopback: a one-off server per run.
  const hostPort = 20000 + (process.pid % 20000);
  measurers.push({
    row: rows.host,
    setup: async () => {
      rows.host.mtu = Number(readFileSync('/sys/class/net/lo/mtu', 'utf8'));
    },
    once: async () => {
      const srv = spawn(iperf, ['-s', '-1', '-B', '127.0.0.1', '-p', String(hostPort)], { stdio: 'ignore' });
      const id = ctx.cleanup.add('iperf3 server', () => killPid(srv.pid ?? 0));
      try {
        await waitListening(hostPort);
        const r = await run(iperf, ['-c', '127.0.0.1', '-p', String(hostPort), '-t', secs, '-J'], { timeoutMs: (cfg.netSeconds + 60) * 1000 });
        return parseIperf(r.stdout);
      } finally {
        killPid(srv.pid ?? 0);
        ctx.cleanup.drop(id);
      }
    },
  });
  // The same loopback with veth's frame size: lo at MTU 1500 in a scratch network namespace (the host's lo is left alone).
  measurers.push({
    row: rows.host1500,
    setup: async () => {},
    once: async () => {
      const script = [
        'ip link set lo mtu 1500 && ip link set lo up || exit 90',
        `"$0" -s -1 -p ${PORT} -D || exit 91`,
        `i=0; until ss -ltn | grep -q ':${PORT} '; do i=$((i+1)); [ $i -gt 250 ] && exit 92; sleep 0.02; done`,
        `exec "$0" -c 127.0.0.1 -p ${PORT} -t ${secs} -J`,
      ].join('\n');
      const r = await run('unshare', ['--net', 'sh', '-c', script, iperf], { timeoutMs: (cfg.netSeconds + 60) * 1000 });
      if (r.code !== 0 && !r.stdout.includes('sum_received'))
        throw new Error(`loopback in a scratch netns exited ${r.code}: ${(r.stderr || r.stdout).slice(-300)}`);
      return parseIperf(r.stdout);
    },
  });
  // host -> container over veth, and container <-> container over the bridge.
  const vethServer = ipBase(daemon.subnet, 200);
  const vethClient = ipBase(daemon.subnet, 201);
  let vethPid = 0;
  measurers.push({
    row: rows.veth,
    setup: async () => {
      vethPid = await started(`${prefix}nsrv`, app([iperf, '-s', '-p', String(PORT)], bridgeNet(`${vethServer}/16`)));
      await waitListening(PORT, vethPid);
      rows.veth.mtu = rows.bridge.mtu = Number(readFileSync(`/proc/${vethPid}/root/sys/class/net/eth0/mtu`, 'utf8'));
    },
    once: async () => {
      const r = await run(iperf, ['-c', vethServer, '-p', String(PORT), '-t', secs, '-J'], { timeoutMs: (cfg.netSeconds + 60) * 1000 });
      return parseIperf(r.stdout);
    },
  });
  measurers.push({
    row: rows.bridge,
    setup: async () => {
      await started(`${prefix}ncli`, app(['/bin/sleep', 'infinity'], bridgeNet(`${vethClient}/16`)));
    },
    once: () => clientIn(`${prefix}ncli`, vethServer),
  });
  // container <-> container over macvlan on the uplink, in a subnet nobody uses.
  if (!ctx.uplink) rows.macvlan.skipped = 'no default-route interface to put macvlan on';
  else {
    const sub = freeSubnet([daemon.subnet]);
    const mServer = ipBase(sub, 10);
    const mClient = ipBase(sub, 11);
    measurers.push({
      row: rows.macvlan,
      setup: async () => {
        const pid = await started(`${prefix}nmsrv`, app([iperf, '-s', '-p', String(PORT)], macvlanNet(`${mServer}/24`)));
        await waitListening(PORT, pid);
        await started(`${prefix}nmcli`, app(['/bin/sleep', 'infinity'], macvlanNet(`${mClient}/24`)));
        rows.macvlan.mtu = Number(readFileSync(`/proc/${pid}/root/sys/class/net/eth0/mtu`, 'utf8'));
      },
      once: () => clientIn(`${prefix}nmcli`, mServer),
    });
  }
  // VLAN: ask osvirt; on a kernel without 802.1q it refuses and says why.
  try {
    await client.api.containers.createContainer({
      name: `${prefix}nvlan`,
      spec: app(['/bin/sleep', 'infinity'], { mode: { $case: 'vlan', value: { parent: ctx.uplink ?? 'eth0', vlanId: 42, address: '', interfaceName: '' } } }),
    });
    await client.api.containers.deleteContainer({ name: `${prefix}nvlan`, force: true, allowMissing: true });
    rows.vlan.skipped =
      'the kernel has 802.1q, but two containers on one VLAN need two hosts (one VLAN id per parent interface): not measured on a single machine';
  } catch (e) {
    rows.vlan.skipped = `osvirt refuses it on this kernel: ${errorText(e)}`;
  }

  const active: typeof measurers = [];
  for (const m of measurers) {
    try {
      await m.setup();
      active.push(m);
    } catch (e) {
      m.row.skipped = `setup failed: ${errorText(e)}`;
      progress.warn(`${m.row.label} (${m.row.path}): ${errorText(e)}`);
    }
  }
  const total = cfg.netRuns * active.length;
  let k = 0;
  for (let i = 0; i < cfg.netRuns; i++) {
    for (const m of active) {
      try {
        m.row.runsMBps.push(round(await m.once(), 1));
      } catch (e) {
        if (!m.row.runsMBps.length && i === cfg.netRuns - 1) m.row.skipped = `failed: ${errorText(e)}`;
        progress.warn(`${m.row.label} (${m.row.path}): ${errorText(e)}`);
      }
      k++;
      progress.tick('iperf3 runs', k, total, `${m.row.label} ${m.row.path}: ${num(m.row.runsMBps[m.row.runsMBps.length - 1])} MB/s`);
    }
  }
  const host = rows.host.runsMBps.length ? median(rows.host.runsMBps) : NaN;
  const host1500 = rows.host1500.runsMBps.length ? median(rows.host1500.runsMBps) : NaN;
  for (const r of data.rows) {
    if (!r.runsMBps.length) continue;
    r.mbps = round(median(r.runsMBps), 1);
    r.degradationPct = round(((r.mbps - host) / host) * 100, 2);
    r.degradation1500Pct = round(((r.mbps - host1500) / host1500) * 100, 2);
  }
  const measured = data.rows.filter((r) => r.mbps !== undefined).length;
  return {
    id: 'network',
    title: 'Network',
    status: measured === 0 ? 'failed' : data.rows.some((r) => r.skipped && r.id !== 'container-vlan') ? 'partial' : 'ok',
    reason: measured === 0 ? 'nothing could be measured' : undefined,
    seconds: (Date.now() - t0) / 1000,
    notes: data.rows.filter((r) => r.skipped).map((r) => `${r.label} over ${r.path}: not measured: ${r.skipped}`),
    data,
  };
}

export function renderNetwork(r: Report, res: SectionResult<NetData>): void {
  r.h(2, '6. Network overhead (TCP stream, iperf3)');
  const d = res.data;
  if (!d) {
    r.p(`Not measured: ${res.reason ?? res.status}.`);
    return;
  }
  r.p(
    `One TCP stream, \`iperf3 -t ${d.seconds}\`, median of ${d.runs} run(s), MB/s = 10^6 bytes per second received. The containers are osvirt application containers (rootfs: host) running the host's iperf3 in their own network namespace; ` +
      'container-side clients run through ExecContainer. Degradation is against host loopback measured in the same run. ' +
      "The host's loopback has a 64 KiB MTU, veth and macvlan carry 1500-byte frames, so the fairer host baseline is loopback at MTU 1500 (lo of a scratch network namespace, no container): both are shown. " +
      'The 2013 table compared host and container over the same NIC between two machines; on one machine loopback is the closest host-to-host path.',
  );
  r.table(
    ['path', 'between', 'MTU', 'MB/s', 'vs host loopback', 'vs loopback at MTU 1500', 'runs (MB/s)'],
    d.rows.map((x) => [
      x.path,
      x.label,
      x.mtu ?? '-',
      x.mbps === undefined ? '-' : num(x.mbps),
      x.degradationPct === undefined ? (x.skipped ? `not measured: ${x.skipped}` : '-') : pct(x.degradationPct),
      x.degradation1500Pct === undefined ? '-' : pct(x.degradation1500Pct),
      x.runsMBps.join(', ') || '-',
    ]),
    ['l', 'l', 'r', 'r', 'r', 'r', 'r'],
  );
  r.p('The 2013 LXC figures (seed talk, TCP stream, MB/s) next to the closest row of this run:');
  const closest: Record<string, string> = { 'Virtual Ethernet Device (veth)': 'host-veth', 'MAC-VLAN': 'container-macvlan', VLAN: 'container-vlan' };
  r.table(
    [
      'network sharing',
      '2013 host',
      '2013 lxc',
      '2013 degr.',
      'now: host (lo at MTU 1500)',
      'now: osvirt container',
      'now: degr.',
      'now: degr. vs host lo (64 KiB MTU)',
    ],
    d.seed.map((s) => {
      const row = d.rows.find((x) => x.id === closest[s.sharing]);
      const host = d.rows.find((x) => x.id === 'host-loopback-1500');
      return [
        s.sharing,
        s.host,
        s.lxc,
        pct(s.degradationPct),
        host?.mbps === undefined ? '-' : num(host.mbps),
        row?.mbps === undefined ? 'not measured' : num(row.mbps),
        row?.degradation1500Pct === undefined ? '-' : pct(row.degradation1500Pct),
        row?.degradationPct === undefined ? '-' : pct(row.degradationPct),
      ];
    }),
  );
  const bars = d.rows.filter((x) => x.mbps !== undefined);
  if (bars.length) {
    r.svg(
      'network',
      barChart({
        title: 'TCP stream throughput (iperf3, one stream)',
        unit: 'MB/s',
        groups: bars.map((x) => ({
          label: `${x.label.replace('container', 'ct')}: ${x.short}`,
          bars: [
            {
              label: x.path,
              value: x.mbps!,
              color: x.id.startsWith('host-loopback') ? '#7f7f7f' : '#1f77b4',
              note: x.id.startsWith('host-loopback') ? '' : `(${pct(x.degradation1500Pct)} vs lo@1500)`,
            },
          ],
        })),
      }),
      'network throughput',
    );
  }
}
