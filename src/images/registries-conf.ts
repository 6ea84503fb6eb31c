// The host's registry configuration, as podman, buildah and skopeo read it:
// containers-registries.conf(5), `/etc/containers/registries.conf` plus the
// drop-ins in `registries.conf.d/*.conf` (or only $CONTAINERS_REGISTRIES_CONF).
// osvirt takes from it which registries are reached over plain HTTP
// (`insecure = true`), which are refused (`blocked = true`), and the search
// list it names in the error for a short name (it never guesses a registry).
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { parse } from 'smol-toml';

export interface RegistriesConf {
  /** host[:port] reached over plain HTTP. */
  insecure: string[];
  /** host[:port] (or host[:port]/path prefixes) osvirt refuses to pull from. */
  blocked: string[];
  /** unqualified-search-registries, for the short-name error. */
  search: string[];
  /** Files that could not be read, with why (logged, not fatal). */
  problems: string[];
}

export function registriesConfFiles(env = process.env): string[] {
  if (env['CONTAINERS_REGISTRIES_CONF']) return [env['CONTAINERS_REGISTRIES_CONF']];
  const out = ['/etc/containers/registries.conf'];
  const dir = '/etc/containers/registries.conf.d';
  if (existsSync(dir))
    for (const f of readdirSync(dir)
      .filter((f) => f.endsWith('.conf'))
      .sort())
      out.push(path.join(dir, f));
  return out;
}

/** Reads the files in order; a later file's [[registry]] for the same location wins, as in podman. */
export function readRegistriesConf(files: string[]): RegistriesConf {
  const byLocation = new Map<string, { insecure: boolean; blocked: boolean }>();
  let search: string[] = [];
  const problems: string[] = [];
  for (const f of files) {
    if (!existsSync(f)) continue;
    let doc: Record<string, unknown>;
    try {
      doc = parse(readFileSync(f, 'utf8')) as Record<string, unknown>;
    } catch (e) {
      problems.push(`${f}: ${(e as Error).message.split('\n')[0]}`);
      continue;
    }
    const s = doc['unqualified-search-registries'];
    if (Array.isArray(s)) search = s.filter((x): x is string => typeof x === 'string');
    const regs = doc['registry'];
    if (!Array.isArray(regs)) continue;
    for (const r of regs as Record<string, unknown>[]) {
      const loc = typeof r['location'] === 'string' ? r['location'] : typeof r['prefix'] === 'string' ? r['prefix'] : '';
      if (!loc) continue;
      const key = loc.replace(/^https?:\/\//, '').replace(/\/+$/, '');
      byLocation.set(key, { insecure: r['insecure'] === true, blocked: r['blocked'] === true });
    }
  }
  const entries = [...byLocation.entries()];
  return { insecure: entries.filter(([, v]) => v.insecure).map(([k]) => k), blocked: entries.filter(([, v]) => v.blocked).map(([k]) => k), search, problems };
}

/** Whether host/repository falls under a blocked location (a host, or a host/path prefix). */
export function isBlocked(conf: RegistriesConf, host: string, repository: string): string | undefined {
  const full = `${host}/${repository}`;
  return conf.blocked.find((b) => b === host || full === b || full.startsWith(`${b}/`));
}
