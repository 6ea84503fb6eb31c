// Section 3: checkpoint and restore of a small container (busybox sh + sleep,
// own pid/uts/ipc/net namespaces): osvirt's API next to bare `criu dump` /
// `criu restore` on an equivalent process tree, lxc-checkpoint and
// runc checkpoint/restore, all with the same CRIU. CRIU's own freezing and
// frozen times and the image size come from each dump's stats-dump.
import { spawn } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync } from 'node:fs';
import * as path from 'node:path';
import { CheckpointOptions, ContainerSpec, ContainerState } from '../../src/gen/osvirt/v1/container';
import { IDLE_ARGV, LxcAnchor, RuncAnchor, waitForTermHandler } from '../lib/anchors';
import { withTimeout } from '../lib/cleanup';
import { errorText, type Ctx, type SectionResult } from '../lib/context';
import { imageBytes, readDumpStats, readRestoreStats } from '../lib/criu-stats';
import { childrenOf, killPid, run, waitGone } from '../lib/proc';
import { bytes, ms, num, times, type Report } from '../lib/report';
import { msSince, ratio, roundSummary, summarize, type Summary } from '../lib/stats';
import { distributionPlot, PALETTE } from '../lib/svg';

export interface CheckpointVariant {
  id: string;
  label: string;
  what: string;
  dumpMs: number[];
  restoreMs: number[];
  freezingMs: number[];
  frozenMs: number[];
  imageBytes: number[];
  /** CRIU's own restore time (stats-restore), where available. */
  criuRestoreMs: number[];
  errors: string[];
  skipped?: string;
  summary?: Record<'dump' | 'restore' | 'freezing' | 'frozen' | 'image' | 'criuRestore', Summary>;
}

export interface CheckpointData {
  runs: number;
  variants: CheckpointVariant[];
  ratios: { variant: string; anchor: string; dumpP50: number; restoreP50: number }[];
}

interface Runner {
  v: CheckpointVariant;
  setup(): Promise<void>;
  once(i: number): Promise<void>;
}

const hr = () => process.hrtime.bigint();
/** A dump/restore of this small container takes well under a second; give up on a wedged one. */
const CALL_TIMEOUT_MS = 120_000;

function mk(id: string, label: string, what: string): CheckpointVariant {
  return { id, label, what, dumpMs: [], restoreMs: [], freezingMs: [], frozenMs: [], imageBytes: [], criuRestoreMs: [], errors: [] };
}

/** Record what CRIU left in an image/work dir. */
function recordStats(v: CheckpointVariant, dir: string): void {
  const d = readDumpStats(dir);
  if (d) {
    v.freezingMs.push(d.freezingUs / 1000);
    v.frozenMs.push(d.frozenUs / 1000);
  }
  const r = readRestoreStats(dir);
  if (r) v.criuRestoreMs.push(r.restoreUs / 1000);
  v.imageBytes.push(imageBytes(dir));
}

export async function runCheckpoint(ctx: Ctx): Promise<SectionResult<CheckpointData>> {
  const t0 = Date.now();
  const { cfg, progress, client, prefix, cleanup } = ctx;
  const criu = ctx.tools.criu;
  const criuDir = criu ? path.dirname(criu) : undefined;
  const root = path.join(ctx.work, 'checkpoints');
  mkdirSync(root, { recursive: true });
  const runners: Runner[] = [];
  const variants: CheckpointVariant[] = [];

  // osvirt through its API, when the lxc driver declares the capability.
  const ov = mk('osvirt', 'osvirt API', 'CheckpointContainer + RestoreContainer (busybox, no network)');
  variants.push(ov);
  const drivers = await client.api.system.listDrivers({});
  const lxc = drivers.drivers.find((d) => d.name === 'lxc');
  if (!lxc?.capabilities.includes('checkpoint')) {
    const why = lxc?.messages.find((m) => m.startsWith('checkpoint')) ?? 'the lxc driver does not declare the "checkpoint" capability';
    ov.skipped = `ListDrivers: lxc has no "checkpoint" capability (${why})`;
  } else {
    const name = `${prefix}cp`;
    runners.push({
      v: ov,
      async setup() {
        const spec = ContainerSpec.fromPartial({
          driver: 'lxc',
          rootfs: { source: { $case: 'template', value: 'busybox' } },
          network: { mode: { $case: 'none', value: {} } },
        });
        await client.api.containers.createContainer({ name, spec });
        const r = await client.api.containers.startContainer({ name });
        await waitForTermHandler(r.container?.status?.initPid ?? 0);
      },
      async once(i) {
        const cp = `c${i}`;
        const a = hr();
        const c = await withTimeout(
          client.api.containers.checkpointContainer({ name, checkpoint: cp, options: CheckpointOptions.fromPartial({}) }),
          CALL_TIMEOUT_MS,
          'CheckpointContainer',
        );
        ov.dumpMs.push(msSince(a));
        const b = hr();
        const r = await withTimeout(
          client.api.containers.restoreContainer({ name, checkpoint: cp, newName: '', tcpEstablished: false, timeout: undefined }),
          CALL_TIMEOUT_MS,
          'RestoreContainer',
        );
        ov.restoreMs.push(msSince(b));
        if (r.container?.status?.state !== ContainerState.CONTAINER_STATE_RUNNING)
          throw new Error(`${name} is ${r.container?.status?.state} after RestoreContainer`);
        const st = c.checkpoint?.stats;
        if (st) {
          ov.freezingMs.push(Number(st.freezingTimeUs) / 1000);
          ov.frozenMs.push(Number(st.frozenTimeUs) / 1000);
        }
        let size = Number(c.checkpoint?.sizeBytes ?? 0n);
        if (!size) size = imageBytes(path.join(ctx.daemon.stateDir, 'checkpoints', name, cp));
        ov.imageBytes.push(size);
        await client.api.containers.deleteCheckpoint({ name, checkpoint: cp, allowMissing: true });
      },
    });
  }

  // Bare CRIU on the same process tree: busybox sh + sleep, chrooted into the
  // same rootfs, in its own pid/uts/ipc/net namespaces (the host's mounts).
  const bare = mk('criu', 'bare criu', '`criu dump` + `criu restore -d` of sh+sleep in pid/uts/ipc/net namespaces');
  variants.push(bare);
  if (!criu) bare.skipped = 'no CRIU >= 4.2 (scripts/install-criu.sh installs one in /opt/osvirt/criu)';
  else if (!ctx.tools.unshare) bare.skipped = 'unshare (util-linux) is not installed';
  else {
    runners.push({
      v: bare,
      async setup() {},
      async once(i) {
        const dir = path.join(root, `criu-${i}`);
        mkdirSync(dir, { recursive: true });
        const p = spawn('unshare', ['--fork', '--pid', '--uts', '--ipc', '--net', `--root=${ctx.anchorRootfs}`, 'setsid', ...IDLE_ARGV], { stdio: 'ignore' });
        const id = cleanup.add('bare criu tree', () => killPid(p.pid ?? 0));
        try {
          let init = 0;
          const end = Date.now() + 5000;
          while (!init && Date.now() < end) {
            init = childrenOf(p.pid ?? 0)[0] ?? 0;
            if (!init) await new Promise((r) => setTimeout(r, 2));
          }
          if (!init) throw new Error('unshare did not start the tree');
          await waitForTermHandler(init);
          const d = await run(criu, ['dump', '-t', String(init), '-D', dir, '-o', 'dump.log'], { timeoutMs: 60000 });
          if (d.code !== 0) throw new Error(`criu dump exited ${d.code}: ${tail(path.join(dir, 'dump.log'))}`);
          bare.dumpMs.push(d.ms);
          // Through sh so the restored tree's parent (CLONE_PARENT) is sh, which exits: the tree is re-parented and reaped by init.
          const pidfile = path.join(dir, 'restored.pid');
          const r = await run('sh', ['-c', `"$0" restore -D "$1" -d -o restore.log --pidfile "$2"; r=$?; exit $r`, criu, dir, pidfile], {
            quiet: true,
            timeoutMs: 60000,
          });
          if (r.code !== 0) throw new Error(`criu restore exited ${r.code}: ${tail(path.join(dir, 'restore.log'))}`);
          bare.restoreMs.push(r.ms);
          const restored = Number(readFileSync(pidfile, 'utf8').trim());
          const rid = cleanup.add('restored tree', () => killPid(restored));
          recordStats(bare, dir);
          killPid(restored);
          await waitGone(restored, 5000);
          cleanup.drop(rid);
        } finally {
          killPid(p.pid ?? 0);
          cleanup.drop(id);
          rmSync(dir, { recursive: true, force: true });
        }
      },
    });
  }

  const lv = mk('lxc', 'lxc-checkpoint', '`lxc-checkpoint -s` + `lxc-checkpoint -r` (dir rootfs)');
  variants.push(lv);
  if (!criu) lv.skipped = 'no CRIU >= 4.2';
  else if (!ctx.tools.lxcStart) lv.skipped = 'LXC is not installed';
  else {
    const lxcA = new LxcAnchor(path.join(ctx.work, 'lxc-cp'), ctx.anchorRootfs, cleanup, criuDir);
    const name = `${prefix}lcp`;
    runners.push({
      v: lv,
      async setup() {
        // LXC 5.0.2 cannot restore onto an overlay rootfs (it bind-mounts "lower:upper" as a path), so this one gets a copy.
        await lxcA.createWithCopy(name);
        await lxcA.start(name);
        await waitForTermHandler(await lxcA.initPid(name));
      },
      async once(i) {
        const dir = path.join(root, `lxc-${i}`);
        try {
          lv.dumpMs.push((await lxcA.checkpoint(name, dir)).ms);
          lv.restoreMs.push((await lxcA.restore(name, dir)).ms);
          recordStats(lv, dir);
        } finally {
          rmSync(dir, { recursive: true, force: true });
        }
      },
    });
  }

  const rv = mk('runc', 'runc checkpoint', '`runc checkpoint` + `runc restore -d` (read-only rootfs)');
  variants.push(rv);
  if (!criu) rv.skipped = 'no CRIU >= 4.2';
  else if (!ctx.tools.runc) rv.skipped = 'runc is not installed';
  else {
    const runcA = new RuncAnchor(path.join(ctx.work, 'runc-cp-root'), path.join(ctx.work, 'runc-cp-bundles'), ctx.anchorRootfs, cleanup, criuDir);
    const name = `${prefix}rcp`;
    runners.push({
      v: rv,
      async setup() {
        await runcA.create(name);
        await runcA.start(name);
        await waitForTermHandler(runcA.initPid(name));
      },
      async once(i) {
        const dir = path.join(root, `runc-${i}`);
        try {
          rv.dumpMs.push((await runcA.checkpoint(name, dir)).ms);
          rv.restoreMs.push((await runcA.restore(name, dir)).ms);
          recordStats(rv, dir);
        } finally {
          rmSync(dir, { recursive: true, force: true });
        }
      },
    });
  }

  for (const r of [...runners]) {
    try {
      await r.setup();
    } catch (e) {
      r.v.skipped = `setup failed: ${errorText(e)}`;
      runners.splice(runners.indexOf(r), 1);
    }
  }
  const total = cfg.checkpointRuns;
  const maxErrors = Math.max(3, Math.floor(total / 4));
  for (let i = 0; i < total; i++) {
    for (let k = 0; k < runners.length; k++) {
      const r = runners[(i + k) % runners.length]!;
      if (r.v.errors.length >= maxErrors) continue;
      try {
        await r.once(i);
      } catch (e) {
        r.v.errors.push(errorText(e));
        if (r.v.errors.length === 1) progress.warn(`${r.v.label}: ${errorText(e)}`);
        // The container is in an unknown state after a failed dump or restore: stop measuring this variant.
        if (r.v.id !== 'criu') r.v.errors.push(...Array<string>(maxErrors).fill('not retried after a failure'));
      }
    }
    const show = runners
      .filter((r) => r.v.dumpMs.length)
      .map((r) => `${r.v.id} ${num(summarize(r.v.dumpMs).p50)}/${num(summarize(r.v.restoreMs).p50)}`)
      .join(', ');
    progress.tick('round', i + 1, total, show ? `dump/restore p50 ms: ${show}` : '');
  }

  const notes: string[] = [];
  for (const v of variants) {
    v.errors = v.errors.filter((e, j) => j === 0 || e !== 'not retried after a failure');
    if (v.errors.length && !v.summary && !v.skipped) v.skipped = `failed: ${v.errors[0]}`;
    if (v.dumpMs.length) {
      v.summary = {
        dump: roundSummary(summarize(v.dumpMs)),
        restore: roundSummary(summarize(v.restoreMs)),
        freezing: roundSummary(summarize(v.freezingMs)),
        frozen: roundSummary(summarize(v.frozenMs)),
        image: roundSummary(summarize(v.imageBytes), 0),
        criuRestore: roundSummary(summarize(v.criuRestoreMs)),
      };
    }
    for (const k of ['dumpMs', 'restoreMs', 'freezingMs', 'frozenMs', 'criuRestoreMs'] as const) v[k] = v[k].map((x) => +x.toFixed(3));
    if (v.skipped) notes.push(`${v.label}: skipped: ${v.skipped}`);
    else if (v.errors.length) notes.push(`${v.label}: ${v.errors.length} failed runs; first: ${v.errors[0]}`);
  }
  const ratios: CheckpointData['ratios'] = [];
  if (ov.summary) {
    for (const a of variants.filter((x) => x.id !== 'osvirt' && x.summary)) {
      ratios.push({
        variant: 'osvirt',
        anchor: a.id,
        dumpP50: ratio(ov.summary.dump.p50, a.summary!.dump.p50),
        restoreP50: ratio(ov.summary.restore.p50, a.summary!.restore.p50),
      });
    }
  }
  const measured = variants.filter((v) => v.summary).length;
  // Nothing measured because the tools are missing is "skipped"; because runs failed, "failed".
  const anyFailed = variants.some((v) => v.errors.length > 0);
  return {
    id: 'checkpoint',
    title: 'Checkpoint and restore',
    status: measured === 0 ? (anyFailed ? 'failed' : 'skipped') : ov.summary && measured === variants.length ? 'ok' : 'partial',
    reason: ov.skipped ? `osvirt rows skipped: ${ov.skipped}` : measured === 0 ? 'nothing could be measured' : undefined,
    seconds: (Date.now() - t0) / 1000,
    notes,
    data: { runs: total, variants, ratios },
  };
}

function tail(file: string): string {
  try {
    return readFileSync(file, 'utf8')
      .trim()
      .split('\n')
      .filter((l) => /Error|error/.test(l))
      .slice(-3)
      .join(' | ');
  } catch {
    return 'no log';
  }
}

export function renderCheckpoint(r: Report, res: SectionResult<CheckpointData>): void {
  r.h(2, '3. Checkpoint and restore');
  const d = res.data;
  if (!d) {
    r.p(`Not measured: ${res.reason ?? res.status}.`);
    return;
  }
  r.p(
    `A small container (busybox \`sh\` + \`sleep\`, pid/uts/ipc/net namespaces, no network devices besides lo) checkpointed (the container stops) and restored, ${d.runs} times per variant, interleaved. ` +
      "All variants use the same CRIU. Dump and restore are wall times of the API call or command; freezing/frozen come from CRIU's stats-dump (frozen = how long the processes were stopped); CRIU restore is CRIU's own restore time (stats-restore); image = bytes of CRIU images, logs left out (osvirt: the checkpoint's size_bytes from the API, which includes its rootfs diff and config). A variant stops after its first failed dump or restore (its container is then in an unknown state).",
  );
  const rows = d.variants.map((v) => {
    const s = v.summary;
    if (!s) return [v.label, v.what, '-', '-', '-', '-', '-', '-', v.skipped ? `skipped: ${v.skipped}` : `failed: ${v.errors[0] ?? ''}`];
    return [
      v.label,
      v.what,
      `${ms(s.dump.p50)} / ${ms(s.dump.p95)}`,
      `${ms(s.restore.p50)} / ${ms(s.restore.p95)}`,
      ms(s.freezing.p50),
      ms(s.frozen.p50),
      ms(s.criuRestore.p50),
      bytes(s.image.p50),
      `${s.dump.n}${v.errors.length ? `, ${v.errors.length} failed` : ''}`,
    ];
  });
  r.table(['variant', 'what', 'dump p50 / p95', 'restore p50 / p95', 'freezing p50', 'frozen p50', 'CRIU restore p50', 'image', 'runs'], rows, [
    'l',
    'l',
    'r',
    'r',
    'r',
    'r',
    'r',
    'r',
    'r',
  ]);
  if (d.ratios.length) {
    r.p('Ratio osvirt / anchor (p50):');
    r.table(
      ['anchor', 'dump', 'restore'],
      d.ratios.map((x) => [d.variants.find((v) => v.id === x.anchor)?.label ?? x.anchor, times(x.dumpP50), times(x.restoreP50)]),
    );
  }
  const withData = d.variants.filter((v) => v.dumpMs.length);
  if (withData.length) {
    r.svg(
      'checkpoint',
      distributionPlot({
        title: 'Checkpoint (dump) and restore',
        unit: 'milliseconds',
        series: withData.flatMap((v, i) => [
          { label: `${v.label}: dump`, samples: v.dumpMs, color: PALETTE[i % PALETTE.length] },
          { label: `${v.label}: restore`, samples: v.restoreMs, color: PALETTE[i % PALETTE.length] },
        ]),
      }),
      'checkpoint and restore distributions',
    );
  }
}
