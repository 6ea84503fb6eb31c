// Finds a criu binary osvirt can use: new enough (CRIU < 4.2 fails on this project's kernels,
// see HOST-FACTS "CRIU") and passing `criu check`.

import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

export const MIN_CRIU_VERSION = '4.2';
export const PRIVATE_CRIU_PATH = '/opt/osvirt/criu/bin/criu';
const INSTALL_HINT = 'run scripts/install-criu.sh';

export interface CriuLocation {
  /** The criu chosen (or the best failing candidate); null when none was found. */
  path: string | null;
  /** "4.2.1"; null when unknown. */
  version: string | null;
  ok: boolean;
  /** Why it is not usable (what is missing, what to do), or what was chosen. */
  reason: string;
}

export interface LocateOptions {
  /** Ignore the cached answer. */
  refresh?: boolean;
  /** Environment to read OSVIRT_CRIU and PATH from (default process.env). */
  env?: NodeJS.ProcessEnv;
}

interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
  error?: Error;
}

function run(file: string, args: string[], timeoutMs: number): Promise<RunResult> {
  return new Promise((resolve) => {
    execFile(file, args, { timeout: timeoutMs, encoding: 'utf8' }, (error, stdout, stderr) => {
      const code = error ? (typeof error.code === 'number' ? error.code : null) : 0;
      const result: RunResult = { code, stdout, stderr };
      if (error) result.error = error;
      resolve(result);
    });
  });
}

/** Compares dotted numeric versions: negative, 0 or positive like a sort comparator. */
export function compareVersions(a: string, b: string): number {
  const pa = a.split(/[.+~-]/).map((p) => Number.parseInt(p, 10));
  const pb = b.split(/[.+~-]/).map((p) => Number.parseInt(p, 10));
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const x = pa[i] ?? 0;
    const y = pb[i] ?? 0;
    const nx = Number.isNaN(x) ? 0 : x;
    const ny = Number.isNaN(y) ? 0 : y;
    if (nx !== ny) return nx - ny;
  }
  return 0;
}

/** "Version: 4.2.1\nGitID: ..." -> "4.2.1" */
export function parseCriuVersionOutput(text: string): string | null {
  const m = /^Version:\s*([0-9][0-9A-Za-z.+~-]*)/m.exec(text);
  return m?.[1] ?? null;
}

function isExecutable(file: string): boolean {
  try {
    fs.accessSync(file, fs.constants.X_OK);
    return fs.statSync(file).isFile();
  } catch {
    return false;
  }
}

function findOnPath(name: string, envPath: string | undefined): string | null {
  for (const dir of (envPath ?? '').split(path.delimiter)) {
    if (dir === '') continue;
    const candidate = path.join(dir, name);
    if (isExecutable(candidate)) return candidate;
  }
  return null;
}

/** The first meaningful line of `criu check` output (it prints harmless rlimit noise here). */
function firstProblem(output: string): string {
  const lines = output
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.includes('RLIMIT_NOFILE'));
  return lines.find((l) => /error/i.test(l)) ?? lines[0] ?? 'no output';
}

/** Examines one criu binary. */
export async function probeCriu(file: string): Promise<CriuLocation> {
  const v = await run(file, ['--version'], 10_000);
  const version = parseCriuVersionOutput(v.stdout + v.stderr);
  if (version === null) {
    const output = (v.stdout + v.stderr).trim();
    const why = output !== '' ? firstProblem(output) : (v.error?.message.split('\n')[0] ?? 'no version in its output');
    return { path: file, version: null, ok: false, reason: `'${file} --version' failed (${why}); ${INSTALL_HINT}` };
  }
  if (compareVersions(version, MIN_CRIU_VERSION) < 0) {
    return {
      path: file,
      version,
      ok: false,
      reason: `criu ${version} at ${file} is older than ${MIN_CRIU_VERSION}; ${INSTALL_HINT}`,
    };
  }
  const c = await run(file, ['check'], 60_000);
  if (c.code !== 0) {
    return {
      path: file,
      version,
      ok: false,
      reason: `criu ${version} at ${file}: 'criu check' failed: ${firstProblem(c.stdout + c.stderr)}`,
    };
  }
  return { path: file, version, ok: true, reason: `criu ${version} at ${file} passes 'criu check'` };
}

let cached: { key: string; result: Promise<CriuLocation> } | undefined;

/**
 * Finds a usable criu: $OSVIRT_CRIU if set (then nothing else is tried: an explicit choice is
 * not silently replaced), else /opt/osvirt/criu/bin/criu, else `criu` on PATH.
 * The answer is cached per OSVIRT_CRIU/PATH.
 */
export function locateCriu(options: LocateOptions = {}): Promise<CriuLocation> {
  const env = options.env ?? process.env;
  const key = `${env['OSVIRT_CRIU'] ?? ''}\0${env['PATH'] ?? ''}`;
  if (!options.refresh && cached?.key === key) return cached.result;
  const result = locate(env);
  cached = { key, result };
  return result;
}

/** Forgets the cached answer (e.g. after installing criu). */
export function resetCriuLocationCache(): void {
  cached = undefined;
}

async function locate(env: NodeJS.ProcessEnv): Promise<CriuLocation> {
  const explicit = env['OSVIRT_CRIU'];
  if (explicit !== undefined && explicit !== '') {
    if (!isExecutable(explicit)) {
      return { path: explicit, version: null, ok: false, reason: `OSVIRT_CRIU=${explicit} is not an executable file` };
    }
    const probed = await probeCriu(explicit);
    return probed.ok ? probed : { ...probed, reason: `OSVIRT_CRIU: ${probed.reason}` };
  }

  const candidates: string[] = [];
  if (isExecutable(PRIVATE_CRIU_PATH)) candidates.push(PRIVATE_CRIU_PATH);
  const onPath = findOnPath('criu', env['PATH']);
  if (onPath !== null && !candidates.some((c) => fs.realpathSync(c) === fs.realpathSync(onPath))) {
    candidates.push(onPath);
  }
  if (candidates.length === 0) {
    return {
      path: null,
      version: null,
      ok: false,
      reason: `criu not found (looked at $OSVIRT_CRIU, ${PRIVATE_CRIU_PATH} and PATH); ${INSTALL_HINT}`,
    };
  }

  let firstFailure: CriuLocation | undefined;
  for (const candidate of candidates) {
    const probed = await probeCriu(candidate);
    if (probed.ok) return probed;
    firstFailure ??= probed;
  }
  // Only reached with at least one candidate probed.
  return firstFailure as CriuLocation;
}
