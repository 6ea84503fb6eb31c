// A container spec whose root is an image (Rootfs.image), completed from the
// image at create, the way `podman create IMAGE` does it: the pull policy
// decides whether to pull, the image's config gives the process defaults,
// and the spec's own fields override each of them:
//
// - process.args: the spec's, when given, are the whole argv (docker's
//   --entrypoint plus command); else the image's Entrypoint + Cmd;
// - process.env: the image's, then the spec's (a spec NAME= replaces it);
// - process.cwd: the spec's, else WorkingDir, else "/";
// - process.user: the spec's, else User resolved through the image's own
//   /etc/passwd and /etc/group;
// - stop_signal: the spec's, else StopSignal;
// - labels: the image's, then the spec's.
//
// rootfs.image_digest pins the container to the image it was created from.
import { existsSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { constants } from 'node:os';
import { OsvirtError } from '../core/errors';
import { ContainerSpec, PullPolicy, Process } from '../gen/osvirt/v1/container';
import { ImageStore, type ImageRecord } from './store';

/**
 * Pulls (per the spec's policy) and completes a spec whose root is an image;
 * other specs pass through. The image is pinned in the store, so that a prune
 * cannot take it before the container that uses it is recorded: `release`
 * unpins it.
 */
export async function applyImage(spec: ContainerSpec, store: ImageStore): Promise<{ spec: ContainerSpec; release?: () => void }> {
  const src = spec.rootfs?.source;
  if (src?.$case !== 'image') return { spec };
  const field = 'spec.rootfs.image';
  store.parseRef(src.value, field);
  const policy = spec.rootfs!.pullPolicy;
  let held = policy === PullPolicy.PULL_POLICY_ALWAYS ? undefined : await store.pinned(src.value);
  if (!held && policy !== PullPolicy.PULL_POLICY_NEVER) held = await store.pullPinned(src.value, field);
  if (!held)
    throw new OsvirtError(
      'FAILED_PRECONDITION',
      'IMAGE_NOT_PRESENT',
      `${field}: ${src.value} is not stored and the pull policy is never; pull it first (osvirt image pull ${src.value})`,
      [{ field, description: 'not stored' }],
    );
  try {
    return { spec: completeSpec(spec, held.rec, store.layerDirs(held.rec.digest)), release: held.release };
  } catch (e) {
    held.release();
    throw e;
  }
}

/** The spec with the image's defaults filled in under its own fields. */
export function completeSpec(spec: ContainerSpec, rec: ImageRecord, layersTopFirst: string[]): ContainerSpec {
  const c = rec.config;
  const p: Process = spec.process ? { ...spec.process } : Process.fromPartial({});
  if (!p.args.length) p.args = [...c.entrypoint, ...c.cmd];
  if (!p.args.length)
    throw new OsvirtError(
      'FAILED_PRECONDITION',
      'IMAGE_NO_COMMAND',
      `spec.process.args: image ${rec.names[0] ?? rec.digest} has no Entrypoint or Cmd; give the command`,
      [{ field: 'spec.process.args', description: 'required for this image' }],
    );
  const env = new Map<string, string>();
  for (const e of [...c.env, ...p.env]) env.set(e.split('=')[0]!, e);
  p.env = [...env.values()];
  if (!p.cwd) p.cwd = c.workingDir || '/';
  if (!p.user && c.user) p.user = resolveUser(c.user, layersTopFirst, rec);
  let stopSignal = spec.stopSignal;
  if (!stopSignal && c.stopSignal) stopSignal = signalNumber(c.stopSignal, rec);
  return {
    ...spec,
    process: p,
    stopSignal,
    labels: { ...c.labels, ...spec.labels },
    rootfs: { ...spec.rootfs!, imageDigest: rec.digest },
  };
}

function signalNumber(s: string, rec: ImageRecord): number {
  if (/^\d+$/.test(s)) return Number(s);
  const name = s.toUpperCase().startsWith('SIG') ? s.toUpperCase() : `SIG${s.toUpperCase()}`;
  const rt = /^SIGRTMIN\+(\d+)$/.exec(name);
  if (rt) return 34 + Number(rt[1]);
  const n = (constants.signals as Record<string, number>)[name];
  if (!n) throw new OsvirtError('FAILED_PRECONDITION', 'IMAGE_BAD_CONFIG', `image ${rec.names[0] ?? rec.digest}: StopSignal "${s}" is not a signal`);
  return n;
}

/** A file of the image as the overlay would show it: the topmost layer that has it. */
function imageFile(layersTopFirst: string[], rel: string): string | undefined {
  for (const l of layersTopFirst) {
    const f = path.join(l, rel);
    if (existsSync(f)) return readFileSync(f, 'utf8');
  }
  return undefined;
}

/** "user", "uid", "user:group", "uid:gid" through the image's passwd and group. */
export function resolveUser(spec: string, layersTopFirst: string[], rec: ImageRecord): { uid: number; gid: number; additionalGids: number[] } {
  const [u, g] = spec.split(':', 2) as [string, string | undefined];
  const passwd = (imageFile(layersTopFirst, 'etc/passwd') ?? '').split('\n').map((l) => l.split(':'));
  const groups = (imageFile(layersTopFirst, 'etc/group') ?? '').split('\n').map((l) => l.split(':'));
  const fail = (what: string) => new OsvirtError('FAILED_PRECONDITION', 'IMAGE_BAD_USER', `image ${rec.names[0] ?? rec.digest}: User "${spec}": ${what}`);
  let uid: number;
  let gid: number | undefined;
  const entry = /^\d+$/.test(u) ? passwd.find((f) => f[2] === u) : passwd.find((f) => f[0] === u);
  if (/^\d+$/.test(u)) uid = Number(u);
  else if (entry) uid = Number(entry[2]);
  else throw fail(`no user "${u}" in the image's /etc/passwd`);
  if (entry) gid = Number(entry[3]);
  if (g !== undefined) {
    if (/^\d+$/.test(g)) gid = Number(g);
    else {
      const ge = groups.find((f) => f[0] === g);
      if (!ge) throw fail(`no group "${g}" in the image's /etc/group`);
      gid = Number(ge[2]);
    }
  }
  const name = entry?.[0];
  const additionalGids = name
    ? groups
        .filter((f) => (f[3] ?? '').split(',').includes(name))
        .map((f) => Number(f[2]))
        .filter((x) => x !== gid)
    : [];
  return { uid, gid: gid ?? 0, additionalGids };
}
