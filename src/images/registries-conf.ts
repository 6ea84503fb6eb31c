// The host's registry configuration, as podman, buildah and skopeo read it:
// containers-registries.conf(5), `/etc/containers/registries.conf` plus the
// drop-ins in `registries.conf.d/*.conf` (or only $CONTAINERS_REGISTRIES_CONF).
// osvirt takes from it which registries are reached over plain HTTP
// (`insecure = true`), which are refused (`blocked = true`), where a
// registry's images are really pulled from (`prefix` rewritten to `location`,
// and the `[[registry.mirror]]` entries tried first), the short-name
// `[aliases]`, and the search list it names in the error for any other short
// name (it never searches or guesses a registry).
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
  /** [[registry]] entries with a prefix rewrite or mirrors, longest prefix first. */
  registries: RegistryEntry[];
  /** [aliases]: short name (no tag) -> fully qualified repository. */
  aliases: Record<string, string>;
  /** Files that could not be read, with why (logged, not fatal). */
  problems: string[];
}

export interface RegistryEntry {
  /** What an image name must start with (a host, or host/path), as a whole path component. */
  prefix: string;
  /** Where such images are pulled from: the prefix is replaced by it. */
  location: string;
  /** Tried in order before location. */
  mirrors: { location: string; pullFromMirror: 'all' | 'digest-only' | 'tag-only' }[];
}

/** One place to pull an image from: a mirror or the (rewritten) primary. */
export interface Endpoint {
  host: string;
  repository: string;
  mirror: boolean;
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
  const byPrefix = new Map<string, RegistryEntry>();
  const aliases: Record<string, string> = {};
  const mirrorInsecure = new Set<string>();
  let search: string[] = [];
  const problems: string[] = [];
  const clean = (loc: string) => loc.replace(/^https?:\/\//, '').replace(/\/+$/, '');
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
    const al = doc['aliases'];
    if (al && typeof al === 'object' && !Array.isArray(al))
      for (const [k, v] of Object.entries(al as Record<string, unknown>)) if (typeof v === 'string' && v) aliases[k] = clean(v);
    const regs = doc['registry'];
    if (!Array.isArray(regs)) continue;
    for (const r of regs as Record<string, unknown>[]) {
      const location = typeof r['location'] === 'string' ? clean(r['location']) : '';
      const prefix = typeof r['prefix'] === 'string' ? clean(r['prefix']) : location;
      if (!prefix) continue;
      if (prefix.startsWith('*.')) {
        problems.push(`${f}: prefix "${prefix}": wildcard prefixes are not supported; the entry is ignored`);
        continue;
      }
      // The flags belong to the location (where the bytes come from), the rewrite and mirrors to the prefix.
      byLocation.set(location || prefix, { insecure: r['insecure'] === true, blocked: r['blocked'] === true });
      const byDigest = r['mirror-by-digest-only'] === true;
      const mirrors: RegistryEntry['mirrors'] = [];
      for (const m of Array.isArray(r['mirror']) ? (r['mirror'] as Record<string, unknown>[]) : []) {
        if (typeof m['location'] !== 'string' || !m['location']) continue;
        const pfm = m['pull-from-mirror'];
        mirrors.push({
          location: clean(m['location']),
          pullFromMirror: byDigest ? 'digest-only' : pfm === 'digest-only' || pfm === 'tag-only' ? pfm : 'all',
        });
        if (m['insecure'] === true) mirrorInsecure.add(clean(m['location']).split('/')[0]!);
      }
      if (location && (location !== prefix || mirrors.length)) byPrefix.set(prefix, { prefix, location, mirrors });
      else byPrefix.delete(prefix);
    }
  }
  const entries = [...byLocation.entries()];
  return {
    insecure: [...new Set([...entries.filter(([, v]) => v.insecure).map(([k]) => k), ...mirrorInsecure])],
    blocked: entries.filter(([, v]) => v.blocked).map(([k]) => k),
    search,
    registries: [...byPrefix.values()].sort((a, b) => b.prefix.length - a.prefix.length),
    aliases,
    problems,
  };
}

/** Whether `name` (host/repository) falls under `prefix` (a host or host/path, whole components). */
function under(prefix: string, name: string): boolean {
  return name === prefix || name.startsWith(`${prefix}/`);
}

/**
 * Where to pull host/repository from, in order: the mirrors of the longest
 * [[registry]] prefix it falls under that serve this kind of reference (by
 * digest or by tag), then its location, with the prefix rewritten. Without
 * an entry, the name's own host.
 */
export function endpoints(conf: RegistriesConf, host: string, repository: string, byDigest: boolean): Endpoint[] {
  const name = `${host}/${repository}`;
  const entry = conf.registries.find((r) => under(r.prefix, name));
  if (!entry) return [{ host, repository, mirror: false }];
  const rest = name.slice(entry.prefix.length);
  const split = (loc: string, mirror: boolean): Endpoint => {
    const full = `${loc}${rest}`;
    const slash = full.indexOf('/');
    return { host: full.slice(0, slash), repository: full.slice(slash + 1), mirror };
  };
  const mirrors = entry.mirrors
    .filter((m) => m.pullFromMirror === 'all' || (m.pullFromMirror === 'digest-only') === byDigest)
    .map((m) => split(m.location, true));
  return [...mirrors, split(entry.location, false)].filter((e) => e.host && e.repository);
}

/** A short name's [aliases] entry, with its tag or digest carried over: "app:v1" -> "reg.example/team/app:v1". */
export function resolveAlias(conf: RegistriesConf, text: string): string | undefined {
  const m = /^([^@:]+)((?::[\w][\w.-]*)?(?:@sha256:[a-f0-9]+)?)$/.exec(text);
  if (!m) return undefined;
  const target = conf.aliases[m[1]!];
  return target ? `${target}${m[2]}` : undefined;
}

/** Whether host/repository falls under a blocked location (a host, or a host/path prefix). */
export function isBlocked(conf: RegistriesConf, host: string, repository: string): string | undefined {
  const full = `${host}/${repository}`;
  return conf.blocked.find((b) => b === host || full === b || full.startsWith(`${b}/`));
}
