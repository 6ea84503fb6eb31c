// What the results depend on: the machine, the kernel, the tool versions.
import { existsSync, readFileSync } from 'node:fs';
import * as os from 'node:os';
import { repoRoot } from '../../src/paths';
import { VERSION } from '../../src/version';
import type { Tools } from './context';
import { run, which } from './proc';

export interface HostInfo {
  hostname: string;
  kernel: string;
  cpuModel: string;
  cpus: number;
  memoryGiB: number;
  node: string;
  cgroupLayout: string;
  osvirt: string;
  commit: string;
}

export async function hostInfo(): Promise<HostInfo> {
  const cpuModel = /^model name\s*:\s*(.*)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? os.cpus()[0]?.model ?? '?';
  const layout = existsSync('/sys/fs/cgroup/cgroup.controllers')
    ? 'v2'
    : existsSync('/sys/fs/cgroup/unified')
      ? 'hybrid (v1 controllers + cgroup2 at /sys/fs/cgroup/unified)'
      : 'v1';
  let commit = '';
  const g = await run('git', ['-C', repoRoot(), 'rev-parse', '--short', 'HEAD']).catch(() => undefined);
  if (g?.code === 0) {
    commit = g.stdout.trim();
    const dirty = await run('git', ['-C', repoRoot(), 'status', '--porcelain', '--untracked-files=no']).catch(() => undefined);
    if (dirty?.stdout.trim()) commit += '+dirty';
  }
  return {
    hostname: os.hostname(),
    kernel: os.release(),
    cpuModel,
    cpus: os.cpus().length,
    memoryGiB: +(os.totalmem() / 2 ** 30).toFixed(1),
    node: process.version,
    cgroupLayout: layout,
    osvirt: VERSION,
    commit,
  };
}

async function firstLine(cmd: string, args: string[], env?: NodeJS.ProcessEnv): Promise<string> {
  const r = await run(cmd, args, { env, timeoutMs: 10000 }).catch(() => undefined);
  return ((r?.stdout || r?.stderr) ?? '').trim().split('\n')[0] ?? '';
}

/** CRIU as osvirt finds it: $OSVIRT_CRIU, the private install, or the system's. */
async function findCriu(): Promise<string | undefined> {
  for (const c of [process.env['OSVIRT_CRIU'], '/opt/osvirt/criu/bin/criu', await which('criu')]) {
    if (!c || !existsSync(c)) continue;
    const v = /Version:\s*(\d+)\.(\d+)/.exec(await firstLine(c, ['--version']));
    if (v && (Number(v[1]) > 4 || (Number(v[1]) === 4 && Number(v[2]) >= 2))) return c;
  }
  return undefined;
}

export async function findTools(): Promise<Tools> {
  const t: Tools = {
    lxcStart: await which('lxc-start'),
    runc: await which('runc'),
    unshare: await which('unshare'),
    criu: await findCriu(),
    iperf3: await which('iperf3'),
    gcc: await which('gcc'),
    versions: {},
  };
  if (t.lxcStart) t.versions['lxc'] = await firstLine('lxc-start', ['--version']);
  if (t.runc) t.versions['runc'] = await firstLine('runc', ['--version']);
  if (t.criu) t.versions['criu'] = (await firstLine(t.criu, ['--version'])).replace(/^Version:\s*/, '');
  if (t.iperf3) t.versions['iperf3'] = await firstLine('iperf3', ['--version']);
  if (t.unshare) t.versions['unshare'] = await firstLine('unshare', ['--version']);
  if (t.gcc) t.versions['gcc'] = await firstLine('gcc', ['--version']);
  return t;
}

/** The interface of the default route (the macvlan parent). */
export async function defaultUplink(): Promise<string | undefined> {
  const r = await run('ip', ['-4', 'route', 'show', 'default']).catch(() => undefined);
  return /\bdev (\S+)/.exec(r?.stdout ?? '')?.[1];
}
