// Section 9: OCI images. A multi-layer image in a local registry (Debian's
// docker-registry over TLS on loopback) is pulled and unpacked (osvirt's
// PullImage next to `skopeo copy` + `umoci unpack` and `podman pull`), then
// a container is started from it (osvirt Create+Start next to `podman run -d`
// and `runc run -d` on the unpacked bundle), interleaved round by round.
import { existsSync, promises as fs, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { ContainerSpec } from '../../src/gen/osvirt/v1/container';
import type { PullImageResponse } from '../../src/gen/osvirt/v1/image_service';
import { haveImageTools, ImageBuilder, TestRegistry } from '../../src/testing/registry';
import { RuncAnchor } from '../lib/anchors';
import { errorText, type Ctx, type SectionResult } from '../lib/context';
import { run } from '../lib/proc';
import { ms, times, type Report } from '../lib/report';
import { msSince, ratio, roundSummary, summarize, type Summary } from '../lib/stats';

interface Variant {
  id: string;
  label: string;
  samples: number[];
  errors: string[];
  skipped?: string;
}

export interface ImagesData {
  layers: number;
  imageMiB: number;
  pullRuns: number;
  startRuns: number;
  pull: Variant[];
  start: Variant[];
  summary: Record<string, Summary>;
  ratios: { metric: string; anchor: string; p50: number }[];
}

const hr = () => process.hrtime.bigint();

/**
 * podman's default rlimits are above this host's hard limits (no
 * CAP_SYS_RESOURCE here): nofile at the host's hard limit, and nproc at 4096
 * (runc refused every nproc at the host's own hard limit, 96369, in a test).
 */
const IMAGE = 'bench/app:v1';

function hostUlimits(): string[] {
  const hard = /^Max open files\s+\S+\s+(\d+)/m.exec(readFileSync('/proc/self/limits', 'utf8'))?.[1];
  return [...(hard ? ['--ulimit', `nofile=${hard}:${hard}`] : []), '--ulimit', 'nproc=4096:4096'];
}

export async function runImages(ctx: Ctx): Promise<SectionResult<ImagesData>> {
  const t0 = Date.now();
  const { cfg, progress, client, prefix, cleanup } = ctx;
  const notes: string[] = [];
  const done = (status: SectionResult['status'], reason: string): SectionResult<ImagesData> => ({
    id: 'images',
    title: 'OCI images',
    status,
    reason,
    seconds: (Date.now() - t0) / 1000,
    notes,
  });
  const missing = haveImageTools();
  if (missing) return done('skipped', missing);
  const pullRuns = cfg.quick ? 2 : 6;
  const startRuns = cfg.quick ? 3 : 15;
  const fill = { layers: 4, mib: cfg.quick ? 2 : 8 };

  // The registry over TLS, its CA where osvirt, skopeo and podman all look: the host's own configuration.
  const reg = new TestRegistry({ tls: true });
  await reg.start();
  const certs = path.join('/etc/containers/certs.d', reg.host);
  cleanup.add('bench registry', async () => {
    await fs.rm(certs, { recursive: true, force: true });
    await reg.stop();
  });
  await fs.mkdir(certs, { recursive: true });
  await fs.copyFile(reg.ca!, path.join(certs, 'ca.crt'));
  const builder = new ImageBuilder();
  cleanup.add('bench image layout', async () => builder.remove());
  progress.step(`building a ${fill.layers + 2}-layer image (busybox, ${fill.layers} x ${fill.mib} MiB of random data) with umoci`);
  await builder.init();
  await builder.build('app', { cmd: ['/bin/sleep', '100000'], fill });
  await reg.push(builder.layout, 'app', IMAGE);
  const ref = `${reg.host}/${IMAGE}`;
  const layers = fill.layers + 2;
  const imageMiB = fill.layers * fill.mib + 2;

  const mk = (id: string, label: string): Variant => ({ id, label, samples: [], errors: [] });
  const osvPull = mk('osvirt', 'osvirt PullImage (download, verify, unpack)');
  const skopeoPull = mk('skopeo-umoci', 'skopeo copy + umoci unpack');
  const podmanPull = mk('podman', 'podman pull');
  const osvStart = mk('osvirt', 'osvirt Create+Start from the image');
  const podmanStart = mk('podman', 'podman run -d');
  const runcStart = mk('runc', 'runc run -d on the unpacked bundle');
  const podman = existsSync('/usr/bin/podman');
  if (!podman) podmanPull.skipped = podmanStart.skipped = 'podman is not installed (apt-get install podman)';
  if (!ctx.tools.runc) runcStart.skipped = 'runc is not installed';

  const pullOsvirt = async () => {
    await client.api.images.pruneImages({ all: true });
    const a = hr();
    await new Promise<void>((resolve, reject) => {
      const s = client.images.pullImage({ image: ref, platform: undefined });
      s.on('data', (_m: PullImageResponse) => undefined);
      s.on('end', () => resolve());
      s.on('error', reject);
    });
    return msSince(a);
  };
  const ociDir = path.join(ctx.work, 'skopeo-oci');
  const bundle = path.join(ctx.work, 'umoci-bundle');
  const pullSkopeo = async () => {
    await fs.rm(ociDir, { recursive: true, force: true });
    await fs.rm(bundle, { recursive: true, force: true });
    const a = hr();
    const c = await run('skopeo', ['copy', '--quiet', '--src-cert-dir', certs, `docker://${ref}`, `oci:${ociDir}:v1`], { timeoutMs: 120000 });
    if (c.code !== 0) throw new Error(`skopeo copy: ${c.stderr.trim()}`);
    const u = await run('umoci', ['unpack', '--image', `${ociDir}:v1`, bundle], { timeoutMs: 120000 });
    if (u.code !== 0) throw new Error(`umoci unpack: ${u.stderr.trim()}`);
    return msSince(a);
  };
  const pullPodman = async () => {
    await run('podman', ['rmi', '-f', ref], { timeoutMs: 60000 });
    const a = hr();
    const p = await run('podman', ['pull', '--quiet', ref], { timeoutMs: 120000 });
    if (p.code !== 0) throw new Error(`podman pull: ${p.stderr.trim()}`);
    return msSince(a);
  };
  if (podman) cleanup.add('podman image', async () => void (await run('podman', ['rmi', '-f', ref], { timeoutMs: 60000 })));

  const pulls: { v: Variant; once: () => Promise<number> }[] = [
    { v: osvPull, once: pullOsvirt },
    { v: skopeoPull, once: pullSkopeo },
    ...(podman ? [{ v: podmanPull, once: pullPodman }] : []),
  ];
  for (let round = 0; round < pullRuns; round++) {
    for (let k = 0; k < pulls.length; k++) {
      const r = pulls[(round + k) % pulls.length]!;
      if (r.v.errors.length > 2) continue;
      try {
        r.v.samples.push(+(await r.once()).toFixed(3));
      } catch (e) {
        r.v.errors.push(errorText(e));
        progress.warn(`${r.v.label}: ${errorText(e)}`);
      }
    }
    progress.tick(
      'pull round',
      round + 1,
      pullRuns,
      pulls.map((r) => `${r.v.id} ${r.v.samples.length ? ms(r.v.samples[r.v.samples.length - 1]!) : '-'} ms`).join(', '),
    );
  }

  // Starts: the image is stored for each (osvirt pulled last round; podman too; the umoci bundle for runc).
  if (!osvPull.samples.length) await pullOsvirt().catch(() => undefined);
  const spec = ContainerSpec.fromPartial({
    driver: 'lxc',
    rootfs: { source: { $case: 'image', value: ref } },
    network: { mode: { $case: 'none', value: {} } },
  });
  const startOsvirt = async (i: number) => {
    const name = `${prefix}img${i}`;
    const a = hr();
    await client.api.containers.createContainer({ name, spec });
    await client.api.containers.startContainer({ name });
    const t = msSince(a);
    await client.api.containers.deleteContainer({ name, force: true, allowMissing: false });
    return t;
  };
  const startPodman = async (i: number) => {
    const name = `${prefix}pod${i}`;
    const a = hr();
    const r = await run('podman', ['run', '-d', '--name', name, '--network', 'none', ...hostUlimits(), ref], { timeoutMs: 60000 });
    const t = msSince(a);
    await run('podman', ['rm', '-f', '-t', '0', name], { timeoutMs: 60000 });
    if (r.code !== 0) throw new Error(`podman run: ${r.stderr.trim()}`);
    return t;
  };
  let runc: RuncAnchor | undefined;
  if (ctx.tools.runc && existsSync(path.join(bundle, 'rootfs')))
    runc = new RuncAnchor(path.join(ctx.work, 'img-runc-root'), path.join(ctx.work, 'img-runc-bundles'), path.join(bundle, 'rootfs'), cleanup);
  else if (!runcStart.skipped) runcStart.skipped = 'no unpacked bundle (skopeo + umoci failed)';
  const startRunc = async (i: number) => {
    const name = `${prefix}rc${i}`;
    await runc!.create(name);
    const t = (await runc!.start(name)).ms;
    await runc!.forceRemove(name);
    return t;
  };
  const starts: { v: Variant; once: (i: number) => Promise<number> }[] = [
    { v: osvStart, once: startOsvirt },
    ...(podman && podmanPull.samples.length ? [{ v: podmanStart, once: startPodman }] : []),
    ...(runc ? [{ v: runcStart, once: startRunc }] : []),
  ];
  for (let round = 0; round < startRuns; round++) {
    for (let k = 0; k < starts.length; k++) {
      const r = starts[(round + k) % starts.length]!;
      if (r.v.errors.length > 2) continue;
      try {
        r.v.samples.push(+(await r.once(round)).toFixed(3));
      } catch (e) {
        r.v.errors.push(errorText(e));
        progress.warn(`${r.v.label}: ${errorText(e)}`);
      }
    }
    progress.tick(
      'start round',
      round + 1,
      startRuns,
      starts.map((r) => `${r.v.id} ${r.v.samples.length ? ms(r.v.samples[r.v.samples.length - 1]!) : '-'} ms`).join(', '),
    );
  }
  await client.api.images.pruneImages({ all: true }).catch(() => undefined);

  const summary: Record<string, Summary> = {};
  const ratios: ImagesData['ratios'] = [];
  for (const [kind, vs] of [
    ['pull', [osvPull, skopeoPull, podmanPull]],
    ['start', [osvStart, podmanStart, runcStart]],
  ] as const) {
    for (const v of vs) {
      if (v.samples.length) summary[`${kind}:${v.id}`] = roundSummary(summarize(v.samples));
      if (v.skipped) notes.push(`${v.label}: skipped: ${v.skipped}`);
      else if (v.errors.length) notes.push(`${v.label}: ${v.errors.length} failed runs; first: ${v.errors[0]}`);
    }
    const o = summary[`${kind}:osvirt`];
    for (const v of vs.slice(1)) {
      const a = summary[`${kind}:${v.id}`];
      if (o && a) ratios.push({ metric: kind, anchor: v.id, p50: ratio(o.p50, a.p50) });
    }
  }
  const ok = !!summary['pull:osvirt'] && !!summary['start:osvirt'];
  return {
    id: 'images',
    title: 'OCI images',
    status: ok ? (ratios.length >= 3 ? 'ok' : 'partial') : 'failed',
    reason: ok ? undefined : `osvirt failed: ${osvPull.errors[0] ?? osvStart.errors[0] ?? 'unknown'}`,
    seconds: (Date.now() - t0) / 1000,
    notes,
    data: { layers, imageMiB, pullRuns, startRuns, pull: [osvPull, skopeoPull, podmanPull], start: [osvStart, podmanStart, runcStart], summary, ratios },
  };
}

export function renderImages(r: Report, res: SectionResult<ImagesData>): void {
  r.h(2, '9. OCI images: pull + unpack, and start from an image');
  const d = res.data;
  if (!d) {
    r.p(`Not measured: ${res.reason ?? res.status}.`);
    return;
  }
  r.p(
    `A ${d.layers}-layer image (${d.imageMiB} MiB, gzip layers of mostly incompressible data, built with umoci) in Debian's docker-registry over TLS on loopback. ` +
      `Pull: from nothing stored until the image is unpacked and ready (osvirt: PullImage after PruneImages, which downloads, verifies every digest and unpacks each layer into the shared store; skopeo copy into an OCI layout + umoci unpack into a bundle; podman pull after podman rmi). ${d.pullRuns} rounds, interleaved. This host's NOFILE hard limit is below podman's default, so podman runs with --ulimit nofile at the host's hard limit and nproc=4096. ` +
      `Start: until the container runs (osvirt: CreateContainer + StartContainer with rootfs.image, an overlay of the layers in a user namespace; podman run -d; runc run -d on umoci's bundle). ${d.startRuns} rounds. Times in ms.`,
  );
  const rows = (vs: Variant[], kind: string) =>
    vs.map((v) => {
      const s = d.summary[`${kind}:${v.id}`];
      if (!s) return [v.label, '-', '-', v.skipped ? `skipped: ${v.skipped}` : `failed: ${v.errors[0] ?? ''}`];
      return [v.label, ms(s.p50), ms(s.max), `${s.n}${v.errors.length ? `, ${v.errors.length} failed` : ''}`];
    });
  r.table(['pull', 'p50', 'max', 'runs'], rows(d.pull, 'pull'));
  r.table(['start', 'p50', 'max', 'runs'], rows(d.start, 'start'));
  if (d.ratios.length) r.p(`osvirt / anchor, p50: ${d.ratios.map((x) => `${x.metric} vs ${x.anchor} ${times(x.p50)}`).join(', ')}.`);
}
