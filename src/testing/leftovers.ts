// Everything a daemon run (osvirtd, a served driver, the conformance runner)
// may leave on the host when a test fails or the daemon is killed: container
// processes and their monitors, cgroups under osvirt/, host veths and the
// bridge, the bridge's nftables table `ip osvirt-<bridge>`, mounts under the
// run's directory, and the directory itself. Used by the test harness, the
// bench and the conformance runner alike.
import { execFile } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { removeNat } from '../../drivers/lxc/nat';
import { unmountUnder } from '../host/mounts';
import { killPid, pidStartTime, pidsWithCmdline } from '../host/processes';
import { until } from './until';

const run = promisify(execFile);
const CGROUP_ROOT = '/sys/fs/cgroup';
/** The parents the drivers put container cgroups under (osvirt-py: the Python process driver). */
const CGROUP_PARENTS = ['osvirt', 'osvirt-py'];

export interface LeftoverScope {
  /** The run's own directory: state dirs, sockets, rootfs mounts. Removed at the end. */
  dir: string;
  /** The run's bridge: its ports (the containers' host veths), itself and its nft table go. */
  bridges?: string[];
}

/** What a driver's runtime.json says about a container's processes and host interfaces. */
interface RuntimeRecord {
  initPid?: number;
  initStartTime?: string;
  network?: { hostInterfaces?: string[] };
}

/**
 * Container directories under dir: every `containers/<name>` (a driver's
 * per-container dir) and `containers/<name>.json` (the daemon's definitions),
 * found at most four levels down so a container's root filesystem is never walked.
 */
export function containerEntries(dir: string): { name: string; dir?: string }[] {
  const out: { name: string; dir?: string }[] = [];
  const walk = (d: string, depth: number) => {
    let entries;
    try {
      entries = readdirSync(d, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      if (!e.isDirectory() || e.isSymbolicLink()) continue;
      const sub = path.join(d, e.name);
      if (e.name === 'containers') {
        for (const c of readdirSync(sub, { withFileTypes: true })) {
          if (c.isDirectory()) out.push({ name: c.name, dir: path.join(sub, c.name) });
          else if (c.isFile() && c.name.endsWith('.json')) out.push({ name: c.name.slice(0, -5) });
        }
      } else if (depth < 4 && !['rootfs', 'approot', 'templates', 'checkpoints', 'upper', 'work'].includes(e.name)) walk(sub, depth + 1);
    }
  };
  walk(dir, 0);
  return out;
}

/** Every cgroup hierarchy mounted under /sys/fs/cgroup (the root itself on pure v2). */
function cgroupRoots(): string[] {
  const roots = [CGROUP_ROOT];
  try {
    for (const e of readdirSync(CGROUP_ROOT, { withFileTypes: true })) {
      const d = path.join(CGROUP_ROOT, e.name);
      if (e.isDirectory() && (existsSync(path.join(d, 'cgroup.procs')) || existsSync(path.join(d, 'tasks')))) roots.push(d);
    }
  } catch {
    // no cgroupfs
  }
  return roots;
}

/** A cgroup directory and all below it, deepest first. */
function cgroupTree(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    try {
      for (const e of readdirSync(d, { withFileTypes: true })) if (e.isDirectory()) walk(path.join(d, e.name));
    } catch {
      return;
    }
    out.push(d);
  };
  if (existsSync(dir)) walk(dir);
  return out;
}

function procsOf(cg: string): number[] {
  try {
    return readFileSync(path.join(cg, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

function tryWrite(file: string, value: string): void {
  try {
    writeFileSync(file, value);
  } catch {
    // not on this hierarchy, or gone
  }
}

/**
 * Kill every process in osvirt/<name> (every hierarchy, nested cgroups too),
 * thawing a frozen one so the SIGKILL lands, then remove the directories.
 */
export async function removeContainerCgroup(name: string): Promise<void> {
  const dirs = cgroupRoots().flatMap((r) => CGROUP_PARENTS.flatMap((p) => cgroupTree(path.join(r, p, name))));
  if (dirs.length === 0) return;
  for (const d of dirs) {
    if (existsSync(path.join(d, 'cgroup.kill'))) tryWrite(path.join(d, 'cgroup.kill'), '1');
    for (const pid of procsOf(d)) killPid(pid);
    tryWrite(path.join(d, 'freezer.state'), 'THAWED');
    tryWrite(path.join(d, 'cgroup.freeze'), '0');
  }
  await until(() => dirs.every((d) => procsOf(d).length === 0), `the processes of cgroup osvirt/${name} to exit`, 10_000).catch(() => undefined);
  for (const d of dirs) {
    try {
      rmdirSync(d);
    } catch {
      // busy (a process we could not kill) or gone
    }
  }
}

/** The shared parents (osvirt/, osvirt-py/) in every hierarchy, once nothing is in them (another daemon's containers keep them busy). */
export function removeEmptyCgroupParents(): void {
  for (const root of cgroupRoots()) {
    for (const parent of CGROUP_PARENTS) {
      try {
        rmdirSync(path.join(root, parent));
      } catch {
        // not there, or still in use
      }
    }
  }
}

async function deleteLink(name: string): Promise<void> {
  if (existsSync(`/sys/class/net/${name}`)) await run('ip', ['link', 'del', name]).catch(() => undefined);
}

/** A bridge's ports (the containers' host veth ends), the bridge, and its NAT table. */
export async function removeBridge(bridge: string): Promise<void> {
  let ports: string[] = [];
  try {
    ports = readdirSync(`/sys/class/net/${bridge}/brif`);
  } catch {
    // no such bridge
  }
  for (const p of ports) await deleteLink(p);
  await deleteLink(bridge);
  await removeNat(bridge);
}

/**
 * Remove whatever a daemon run left under scope.dir and on the host. Call it
 * after the daemon is stopped (or killed); it is idempotent. Throws when a
 * mount below dir could not be detached: the directory is then left in place,
 * as a recursive delete would walk into the mounted filesystem.
 */
export async function removeLeftovers(scope: LeftoverScope): Promise<void> {
  const dir = path.resolve(scope.dir);
  const entries = existsSync(dir) ? containerEntries(dir) : [];
  const names = new Set(entries.map((e) => e.name));
  const hostInterfaces: string[] = [];
  // Monitors, inits and plugins started for this run: the monitors' command
  // lines name their state dir, the plugins' their socket, both under dir.
  for (const pid of pidsWithCmdline(dir + '/')) killPid(pid);
  for (const e of entries) {
    if (!e.dir) continue;
    let rt: RuntimeRecord;
    try {
      rt = JSON.parse(readFileSync(path.join(e.dir, 'runtime.json'), 'utf8')) as RuntimeRecord;
    } catch {
      continue;
    }
    // Only the process we started: a pid may have been reused since (the cgroup sweep below catches the rest).
    if (rt.initPid && rt.initStartTime && pidStartTime(rt.initPid) === rt.initStartTime) killPid(rt.initPid);
    hostInterfaces.push(...(rt.network?.hostInterfaces ?? []));
  }
  for (const n of names) await removeContainerCgroup(n);
  for (const i of hostInterfaces) await deleteLink(i);
  for (const b of scope.bridges ?? []) await removeBridge(b);
  const left = await unmountUnder(dir);
  removeEmptyCgroupParents();
  if (left.length) throw new Error(`cannot remove ${dir}: still mounted at ${left.join(', ')}`);
  rmSync(dir, { recursive: true, force: true });
}
