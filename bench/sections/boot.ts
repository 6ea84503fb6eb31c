// Section 8: a real distribution booted by its own systemd. Time from create
// until `systemctl is-system-running` says "running", then the halt (the
// init's halt signal until it exits) plus delete, osvirt next to lxc-start
// on the same Debian root filesystem, interleaved round by round.
import { existsSync, promises as fs } from 'node:fs';
import * as path from 'node:path';
import { ContainerSpec, ContainerState } from '../../src/gen/osvirt/v1/container';
import { cgroupDirExists, removeCgroupDirs, removeCgroupDirsSettled } from '../lib/cgroups';
import { errorText, type Ctx, type SectionResult } from '../lib/context';
import { execIn } from '../lib/exec';
import { run, runOk, sleep } from '../lib/proc';
import { ms, times, type Report } from '../lib/report';
import { msSince, ratio, roundSummary, summarize, type Summary } from '../lib/stats';

export interface BootVariant {
  id: string;
  label: string;
  bootMs: number[];
  haltMs: number[];
  errors: string[];
  skipped?: string;
}

export interface BootData {
  runs: number;
  rootfsBuildSeconds: number;
  rootfsMiB: number;
  variants: BootVariant[];
  summary: Record<string, { boot: Summary; halt: Summary }>;
  ratios: { metric: 'boot' | 'halt'; p50: number }[];
}

const hr = () => process.hrtime.bigint();
/** The package set of osvirt's debian template (and of the issue's LXC comparison). */
const INCLUDE = 'systemd,systemd-sysv,dbus,iproute2,procps';

/** Polls `probe` until it says "running" (it fails while systemd's bus is not up yet). */
async function untilRunning(probe: () => Promise<string>, what: string, timeoutMs = 60000): Promise<void> {
  const end = Date.now() + timeoutMs;
  let last = '';
  for (;;) {
    try {
      last = (await probe()).trim();
      if (last === 'running') return;
      if (last === 'degraded') throw new Error(`${what} booted degraded`);
    } catch (e) {
      if (/degraded/.test(errorText(e))) throw e;
      last = errorText(e);
    }
    if (Date.now() > end) throw new Error(`${what} did not reach "running" in ${timeoutMs / 1000} s (last: ${last})`);
    await sleep(5);
  }
}

export async function runBoot(ctx: Ctx): Promise<SectionResult<BootData>> {
  const t0 = Date.now();
  const { cfg, progress, client, prefix, cleanup } = ctx;
  const notes: string[] = [];
  const done = (status: SectionResult['status'], reason: string): SectionResult<BootData> => ({
    id: 'boot',
    title: 'Booting Debian',
    status,
    reason,
    seconds: (Date.now() - t0) / 1000,
    notes,
  });
  if (!existsSync('/usr/bin/mmdebstrap')) return done('skipped', 'mmdebstrap is not installed (apt-get install mmdebstrap)');

  // One rootfs for both, built like the template: mmdebstrap from the host's own apt sources.
  const rootfs = path.join(ctx.work, 'debian');
  const b = Date.now();
  progress.step(`building the Debian rootfs with mmdebstrap (${INCLUDE})`);
  await runOk('mmdebstrap', ['--quiet', '--variant=minbase', `--include=${INCLUDE}`, 'bookworm', rootfs], { timeoutMs: 600000 });
  const rootfsBuildSeconds = (Date.now() - b) / 1000;
  const du = await runOk('du', ['-sm', rootfs]);
  const rootfsMiB = Number(du.stdout.split(/\s/)[0]);
  // lxc-start's container needs x on the directories on the way to its rootfs.
  await fs.chmod(ctx.work, 0o711);

  const osv: BootVariant = { id: 'osvirt', label: 'osvirt (user namespace, overlay, no network)', bootMs: [], haltMs: [], errors: [] };
  const lxc: BootVariant = { id: 'lxc', label: 'lxc-start (LXC 5, common.conf, overlay, no network)', bootMs: [], haltMs: [], errors: [] };
  const spec = ContainerSpec.fromPartial({
    driver: 'lxc',
    rootfs: { source: { $case: 'path', value: rootfs }, copyOnWrite: true },
    network: { mode: { $case: 'none', value: {} } },
  });

  const osvirtOnce = async (i: number) => {
    const name = `${prefix}boot${i}`;
    const a = hr();
    await client.api.containers.createContainer({ name, spec });
    const st = await client.api.containers.startContainer({ name });
    if (st.container?.status?.state !== ContainerState.CONTAINER_STATE_RUNNING) throw new Error(`${name} did not start`);
    await untilRunning(async () => {
      const r = await execIn(client, name, ['systemctl', 'is-system-running', '--wait']);
      if (r.exitCode !== 0 && !r.stdout.trim()) throw new Error(r.stderr.trim() || `exit ${r.exitCode}`);
      return r.stdout;
    }, name);
    const boot = msSince(a);
    const h = hr();
    const stopped = await client.api.containers.stopContainer({ name, signal: 0, timeout: { seconds: 30n, nanos: 0 } });
    if (stopped.container?.status?.exitCode !== 0) throw new Error(`${name} did not halt cleanly: exit ${stopped.container?.status?.exitCode}`);
    await client.api.containers.deleteContainer({ name, force: false, allowMissing: false });
    return { boot, halt: msSince(h) };
  };

  const lxcpath = path.join(ctx.work, 'lxc-boot');
  const lxcNames = new Set<string>();
  const pivotExisted = cgroupDirExists('lxc.pivot');
  cleanup.add('lxc boot containers', async () => {
    for (const n of lxcNames) {
      await run('lxc-stop', ['-P', lxcpath, '-n', n, '-k'], { timeoutMs: 20000 }).catch(() => undefined);
      await run('lxc-destroy', ['-P', lxcpath, '-n', n, '-f'], { timeoutMs: 20000 }).catch(() => undefined);
      removeCgroupDirs(`lxc.payload.${n}`);
      removeCgroupDirs(`lxc.monitor.${n}`);
    }
    if (!pivotExisted) await removeCgroupDirsSettled('lxc.pivot');
    await fs.rm(lxcpath, { recursive: true, force: true });
  });
  const lxcOnce = async (i: number) => {
    const name = `${prefix}lboot${i}`;
    lxcNames.add(name);
    const dir = path.join(lxcpath, name);
    const a = hr();
    await fs.mkdir(path.join(dir, 'delta0'), { recursive: true });
    // What the issue compared against: LXC's common config, nothing else but the rootfs and no network.
    await fs.writeFile(
      path.join(dir, 'config'),
      [
        'lxc.include = /usr/share/lxc/config/common.conf',
        `lxc.uts.name = ${name}`,
        `lxc.rootfs.path = overlay:${rootfs}:${path.join(dir, 'delta0')}`,
        'lxc.net.0.type = empty',
        `lxc.log.file = ${path.join(dir, 'lxc.log')}`,
        'lxc.log.level = ERROR',
        '',
      ].join('\n'),
    );
    const s = await run('lxc-start', ['-P', lxcpath, '-n', name, '-d'], { quiet: true, timeoutMs: 30000 });
    if (s.code !== 0) throw new Error(`lxc-start exited ${s.code}`);
    await untilRunning(async () => {
      const r = await run('lxc-attach', ['-P', lxcpath, '-n', name, '--', 'systemctl', 'is-system-running', '--wait'], { timeoutMs: 60000 });
      if (r.code !== 0 && !r.stdout.trim()) throw new Error(r.stderr.trim() || `exit ${r.code}`);
      return r.stdout;
    }, name);
    const boot = msSince(a);
    const h = hr();
    const stop = await run('lxc-stop', ['-P', lxcpath, '-n', name, '-t', '30'], { timeoutMs: 40000 });
    if (stop.code !== 0) throw new Error(`lxc-stop exited ${stop.code}: ${stop.stderr.trim()}`);
    const d = await run('lxc-destroy', ['-P', lxcpath, '-n', name], { timeoutMs: 30000 });
    if (d.code !== 0) throw new Error(`lxc-destroy exited ${d.code}: ${d.stderr.trim()}`);
    lxcNames.delete(name);
    return { boot, halt: msSince(h) };
  };

  const runners: { v: BootVariant; once: (i: number) => Promise<{ boot: number; halt: number }> }[] = [{ v: osv, once: osvirtOnce }];
  if (ctx.tools.lxcStart) runners.push({ v: lxc, once: lxcOnce });
  else lxc.skipped = 'lxc-start is not installed (apt-get install lxc)';

  for (let round = 0; round < cfg.bootRuns; round++) {
    for (let k = 0; k < runners.length; k++) {
      const r = runners[(round + k) % runners.length]!;
      if (r.v.errors.length > 2) continue;
      try {
        const x = await r.once(round);
        r.v.bootMs.push(+x.boot.toFixed(3));
        r.v.haltMs.push(+x.halt.toFixed(3));
      } catch (e) {
        r.v.errors.push(errorText(e));
        progress.warn(`${r.v.label}: ${errorText(e)}`);
      }
    }
    progress.tick(
      'round',
      round + 1,
      cfg.bootRuns,
      runners.map((r) => `${r.v.id} ${r.v.bootMs.length ? ms(r.v.bootMs[r.v.bootMs.length - 1]) : '-'} ms`).join(', '),
    );
  }
  const summary: BootData['summary'] = {};
  for (const v of [osv, lxc]) {
    if (v.bootMs.length) summary[v.id] = { boot: roundSummary(summarize(v.bootMs)), halt: roundSummary(summarize(v.haltMs)) };
    if (v.skipped) notes.push(`${v.label}: skipped: ${v.skipped}`);
    else if (v.errors.length) notes.push(`${v.label}: ${v.errors.length} failed runs; first: ${v.errors[0]}`);
  }
  const ratios: BootData['ratios'] = [];
  if (summary['osvirt'] && summary['lxc']) {
    ratios.push({ metric: 'boot', p50: ratio(summary['osvirt'].boot.p50, summary['lxc'].boot.p50) });
    ratios.push({ metric: 'halt', p50: ratio(summary['osvirt'].halt.p50, summary['lxc'].halt.p50) });
  }
  const ok = !!summary['osvirt'];
  return {
    id: 'boot',
    title: 'Booting Debian',
    status: ok ? (summary['lxc'] ? 'ok' : 'partial') : 'failed',
    reason: ok ? undefined : `osvirt boots failed: ${osv.errors[0] ?? 'unknown'}`,
    seconds: (Date.now() - t0) / 1000,
    notes,
    data: { runs: cfg.bootRuns, rootfsBuildSeconds, rootfsMiB, variants: [osv, lxc], summary, ratios },
  };
}

export function renderBoot(r: Report, res: SectionResult<BootData>): void {
  r.h(2, '8. Booting a distribution: Debian 12 with systemd as pid 1');
  const d = res.data;
  if (!d) {
    r.p(`Not measured: ${res.reason ?? res.status}.`);
    return;
  }
  r.p(
    `One Debian 12 rootfs (mmdebstrap --variant=minbase --include=${INCLUDE}, ${d.rootfsMiB} MiB, built in ${d.rootfsBuildSeconds.toFixed(1)} s from the host's apt mirror), an overlay over it per container, no network. ` +
      `Boot: create until \`systemctl is-system-running --wait\` inside says "running" (osvirt: Create+Start over gRPC, then ExecContainer; LXC: write the config, \`lxc-start -d\`, then \`lxc-attach\`; both polled while systemd's bus is not up yet). ` +
      `Halt: the stop request until the init has exited (osvirt: StopContainer, which sends systemd's SIGRTMIN+3; LXC: \`lxc-stop\`), plus delete. ${d.runs} runs each, interleaved. Times in ms.`,
  );
  const rows = d.variants.map((v) => {
    const s = d.summary[v.id];
    if (!s) return [v.label, '-', '-', '-', '-', v.skipped ? `skipped: ${v.skipped}` : `failed: ${v.errors[0] ?? ''}`];
    return [v.label, ms(s.boot.p50), ms(s.boot.max), ms(s.halt.p50), ms(s.halt.max), `${s.boot.n}${v.errors.length ? `, ${v.errors.length} failed` : ''}`];
  });
  r.table(['variant', 'boot p50', 'boot max', 'halt+delete p50', 'halt+delete max', 'runs'], rows);
  const b = d.ratios.find((x) => x.metric === 'boot');
  const h = d.ratios.find((x) => x.metric === 'halt');
  if (b && h) r.p(`osvirt / lxc-start, p50: boot ${times(b.p50)}, halt+delete ${times(h.p50)}.`);
}
