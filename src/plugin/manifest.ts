// Where the daemon finds plugins: one small JSON manifest per plugin in a
// drivers directory (<state-dir>/plugins.d/*.json or --plugin-dir), and
// --driver NAME=unix:///path flags. A manifest names the driver and either
// the program the daemon starts (and restarts) or a socket someone else
// serves:
//   {"name": "process", "executable": "/opt/osvirt/drivers/python-process/osvirt-process-driver", "args": [], "env": {}}
//   {"name": "remote", "socket": "unix:///run/remote-driver.sock"}
// A relative executable is resolved against the manifest's directory, which
// is also the plugin's working directory.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import * as path from 'node:path';
import type { PluginConfig } from './plugin-driver';

export const DRIVER_NAME_RE = /^[a-z][a-z0-9_-]{0,62}$/;
const FIELDS = new Set(['name', 'executable', 'args', 'env', 'socket']);

export interface ManifestProblem {
  /** The driver name to list it under, when one can be told. */
  name?: string;
  file: string;
  message: string;
}

function isStringArray(v: unknown): v is string[] {
  return Array.isArray(v) && v.every((x) => typeof x === 'string');
}

/** Parse one manifest; throws an Error naming the field at fault. */
export function parseManifest(text: string, file: string): PluginConfig {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    throw new Error(`not valid JSON: ${e instanceof Error ? e.message : String(e)}`);
  }
  if (doc === null || typeof doc !== 'object' || Array.isArray(doc)) throw new Error('expected a JSON object');
  const m = doc as Record<string, unknown>;
  for (const k of Object.keys(m)) if (!FIELDS.has(k)) throw new Error(`${k}: unknown field (known: ${[...FIELDS].join(', ')})`);
  if (typeof m['name'] !== 'string' || !DRIVER_NAME_RE.test(m['name']))
    throw new Error('name: required, a driver name such as "process" (lowercase letters, digits, - and _)');
  const dir = path.dirname(path.resolve(file));
  const cfg: PluginConfig = { name: m['name'], source: file };
  if (m['executable'] !== undefined) {
    if (typeof m['executable'] !== 'string' || !m['executable']) throw new Error('executable: expected a program path');
    if (m['socket'] !== undefined) throw new Error('give either executable or socket, not both');
    const exe = m['executable'];
    cfg.executable = exe.includes('/') ? path.resolve(dir, exe) : exe;
    cfg.cwd = dir;
    if (m['args'] !== undefined && !isStringArray(m['args'])) throw new Error('args: expected a list of strings');
    cfg.args = (m['args'] as string[] | undefined) ?? [];
    const env = m['env'];
    if (env !== undefined) {
      if (env === null || typeof env !== 'object' || Array.isArray(env) || !Object.values(env).every((v) => typeof v === 'string'))
        throw new Error('env: expected an object of strings');
      cfg.env = env as Record<string, string>;
    }
  } else if (m['socket'] !== undefined) {
    if (typeof m['socket'] !== 'string' || !/^unix:\/\/\//.test(m['socket'])) throw new Error('socket: expected unix:///absolute/path.sock');
    if (m['args'] !== undefined || m['env'] !== undefined) throw new Error('args and env only apply to an executable');
    cfg.socket = m['socket'];
  } else {
    throw new Error('give an executable the daemon starts, or the socket of a running plugin');
  }
  return cfg;
}

/** Read every *.json in a directory (a missing directory has no plugins). */
export function loadPluginDir(dir: string): { plugins: PluginConfig[]; problems: ManifestProblem[] } {
  const plugins: PluginConfig[] = [];
  const problems: ManifestProblem[] = [];
  let files: string[];
  try {
    if (!statSync(dir).isDirectory()) return { plugins, problems: [{ file: dir, message: 'is not a directory' }] };
    files = readdirSync(dir)
      .filter((f) => f.endsWith('.json'))
      .sort();
  } catch {
    return { plugins, problems };
  }
  for (const f of files) {
    const file = path.join(dir, f);
    try {
      plugins.push(parseManifest(readFileSync(file, 'utf8'), file));
    } catch (e) {
      let name: string | undefined;
      try {
        const n = (JSON.parse(readFileSync(file, 'utf8')) as { name?: unknown }).name;
        if (typeof n === 'string' && DRIVER_NAME_RE.test(n)) name = n;
      } catch {
        // unreadable: no name to list it under
      }
      const base = path.basename(f, '.json');
      if (!name && DRIVER_NAME_RE.test(base)) name = base;
      problems.push({ name, file, message: `plugin manifest ${file}: ${e instanceof Error ? e.message : String(e)}` });
    }
  }
  return { plugins, problems };
}

/** --driver NAME=unix:///path */
export function parseDriverFlag(flag: string): PluginConfig {
  const m = /^([^=]+)=(.+)$/.exec(flag);
  if (!m || !DRIVER_NAME_RE.test(m[1]!)) throw new Error(`--driver ${flag}: expected NAME=unix:///path/to/driver.sock with a lowercase driver name`);
  if (!/^unix:\/\/\//.test(m[2]!)) throw new Error(`--driver ${flag}: the address must be unix:///absolute/path.sock`);
  return { name: m[1]!, source: '--driver', socket: m[2]! };
}
