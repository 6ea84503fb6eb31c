// util-vserver's configuration directory (/etc/vservers/NAME/) read into a
// container definition and written back out. The layout and the meaning of
// each file follow util-vserver's documentation (doc/configuration.xml, "the
// great flower page"); docs/vserver.md lists what osvirt reads.
//
// Parsing works on the directory's entries in memory (ConfigFiles), so the
// daemon can import a directory a client uploaded (VServerService) and the
// CLI reads and writes real directories (src/cli/config-tree.ts).
import { constants as osConstants } from 'node:os';
import * as path from 'node:path';
import { ContainerSpec } from '../../src/gen/osvirt/v1/container';
import {
  VServerInit_Style,
  VServerOptions,
  type VServerInterface,
  type VServerKillStep,
  type VServerRlimit,
  type VServerRlimits,
} from '../../src/gen/osvirt/v1/vserver';
import { isCapability, normalizeCapability } from '../../src/core/capabilities';
import { invalidArgument, OsvirtError } from '../../src/core/errors';
import { ccapName, cflagName, parseCcap, parseCflag, RLIMIT_RESOURCES, type RlimitResource } from './options';

/** One entry of a configuration directory: a file's bytes or a symlink's target. */
export interface ConfigEntry {
  content?: Buffer;
  symlink?: string;
}

/** Relative POSIX path ("interfaces/0/ip") -> entry. */
export type ConfigFiles = Map<string, ConfigEntry>;

export interface ImportResult {
  name: string;
  spec: ContainerSpec;
  /** What the import assumed or left out, for the user to read. */
  notes: string[];
}

const NAME_RE = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
/** Entries util-vserver keeps for itself at run time: not configuration. */
const RUNTIME_ENTRIES = new Set(['run', 'cache', 'run.rev']);
const INIT_STYLES: Record<string, VServerInit_Style> = { sysv: VServerInit_Style.STYLE_SYSV, plain: VServerInit_Style.STYLE_PLAIN };
const UNSUPPORTED_RLIMITS = new Set(['cpu', 'fsize', 'data', 'stack', 'core', 'nsock', 'anon', 'shmem', 'semary', 'nsems', 'dentry']);

function unsupported(file: string, what: string): OsvirtError {
  return new OsvirtError('FAILED_PRECONDITION', 'VSERVER_FEATURE_UNSUPPORTED', `${file}: ${what}`, [{ field: file, description: what }], { field: file });
}

/** Reads one configuration directory's entries; `take` marks each entry it understood. */
class Reader {
  private readonly used = new Set<string>();

  constructor(private readonly files: ConfigFiles) {}

  has(p: string): boolean {
    return this.files.has(p);
  }

  /** A boolean file: it exists. */
  flag(p: string): boolean {
    if (!this.files.has(p)) return false;
    this.used.add(p);
    return true;
  }

  text(p: string): string | undefined {
    const e = this.files.get(p);
    if (!e) return undefined;
    this.used.add(p);
    if (e.symlink !== undefined) throw invalidArgument(p, 'must be a file, not a symbolic link');
    return (e.content ?? Buffer.alloc(0)).toString('utf8');
  }

  /** util-vserver's getFileValue: the first line, trimmed. */
  scalar(p: string): string | undefined {
    const t = this.text(p);
    return t === undefined ? undefined : (t.split('\n')[0] ?? '').trim();
  }

  /** A list file: one item per line, blank lines and # comments skipped. */
  lines(p: string): string[] {
    const t = this.text(p);
    if (t === undefined) return [];
    return t
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l && !l.startsWith('#'));
  }

  link(p: string): string | undefined {
    const e = this.files.get(p);
    if (!e) return undefined;
    this.used.add(p);
    return e.symlink;
  }

  /** Entries directly under a directory ("interfaces" -> ["0", "dev"]). */
  children(dir: string): string[] {
    const out = new Set<string>();
    for (const p of this.files.keys()) if (p.startsWith(dir + '/')) out.add(p.slice(dir.length + 1).split('/')[0]!);
    return [...out].sort();
  }

  /** Top-level entries nothing read, for the notes. */
  leftovers(): string[] {
    const out = new Set<string>();
    for (const p of this.files.keys()) {
      if (this.used.has(p)) continue;
      const top = p.split('/')[0]!;
      if (RUNTIME_ENTRIES.has(top)) continue;
      out.add(p);
    }
    return [...out].sort();
  }
}

function uint(file: string, v: string | undefined, max = Number.MAX_SAFE_INTEGER): number | undefined {
  if (v === undefined) return undefined;
  if (!/^\d+$/.test(v) || Number(v) > max) throw invalidArgument(file, `"${v}" is not a whole number${max < Number.MAX_SAFE_INTEGER ? ` up to ${max}` : ''}`);
  return Number(v);
}

function signalNumber(file: string, word: string): number {
  if (/^\d+$/.test(word)) return Number(word);
  const name = word.toUpperCase().replace(/^SIG/, '');
  const n = (osConstants.signals as Record<string, number>)[`SIG${name}`];
  if (!n) throw invalidArgument(file, `"${word}" is not a signal`);
  return n;
}

/** apps/init/killseq: "signal [wait signal]*". */
export function parseKillseq(file: string, text: string): VServerKillStep[] {
  const words = text.split(/\s+/).filter(Boolean);
  if (words.length % 2 === 0) throw invalidArgument(file, 'must be "signal [wait signal]*", e.g. "15 5 9"');
  const steps: VServerKillStep[] = [];
  for (let i = 0; i < words.length; i += 2) {
    const wait = i + 1 < words.length ? (uint(file, words[i + 1], 3600) ?? 0) : 0;
    steps.push({ signal: signalNumber(file, words[i]!), waitSeconds: wait });
  }
  return steps;
}

export function formatKillseq(steps: readonly VServerKillStep[]): string {
  return steps.map((s, i) => (i < steps.length - 1 ? `${s.signal} ${s.waitSeconds}` : String(s.signal))).join(' ');
}

function limitValue(file: string, v: string | undefined): { n?: number; inf: boolean } | undefined {
  if (v === undefined) return undefined;
  if (v === 'inf') return { inf: true };
  return { n: uint(file, v), inf: false };
}

function readRlimits(r: Reader): VServerRlimits | undefined {
  const entries = r.children('rlimits');
  if (entries.length === 0) return undefined;
  const out: Partial<Record<RlimitResource, VServerRlimit>> = {};
  for (const e of entries) {
    const [res, kind, extra] = e.split('.');
    const file = `rlimits/${e}`;
    if (!res || extra !== undefined || (kind !== undefined && !['hard', 'soft', 'min'].includes(kind)))
      throw invalidArgument(file, 'expected rlimits/<resource> or rlimits/<resource>.{hard,soft,min}');
    if (UNSUPPORTED_RLIMITS.has(res))
      throw unsupported(file, `the ${res} limit is not supported by the vserver driver (supported: ${RLIMIT_RESOURCES.join(', ')})`);
    if (!(RLIMIT_RESOURCES as readonly string[]).includes(res))
      throw invalidArgument(file, `unknown resource "${res}" (supported: ${RLIMIT_RESOURCES.join(', ')})`);
    const l = (out[res as RlimitResource] ??= { hardInf: false, softInf: false, minInf: false });
    const v = limitValue(file, r.scalar(file));
    if (!v) continue;
    const set = (k: 'hard' | 'soft' | 'min') => {
      if (v.inf) l[`${k}Inf`] = true;
      else if (v.n !== undefined) l[k] = BigInt(v.n);
    };
    if (kind === undefined) {
      set('hard');
      set('soft');
    } else set(kind as 'hard' | 'soft' | 'min');
  }
  // A bare file and .hard/.soft for the same resource: the suffixed ones win (sorted after it, read later).
  return out as VServerRlimits;
}

function readInterfaces(r: Reader, o: VServerOptions, notes: string[]): void {
  const nw = o.network!;
  nw.dev = r.scalar('interfaces/dev') ?? '';
  nw.prefix = uint('interfaces/prefix', r.scalar('interfaces/prefix'), 128) ?? 0;
  for (const d of r.children('interfaces')) {
    const dir = `interfaces/${d}`;
    if (!r.children(dir).length) continue; // a file at this level (dev, prefix, ...)
    const ip = r.scalar(`${dir}/ip`);
    if (!ip) throw invalidArgument(`${dir}/ip`, 'is required: the address of this interface');
    let prefix = uint(`${dir}/prefix`, r.scalar(`${dir}/prefix`), 128) ?? 0;
    const mask = r.scalar(`${dir}/mask`);
    if (mask !== undefined && !prefix) {
      const bits = mask.split('.').map(Number);
      if (bits.length !== 4 || bits.some((b) => !(b >= 0 && b <= 255))) throw invalidArgument(`${dir}/mask`, `"${mask}" is not a netmask`);
      prefix = bits.reduce(
        (n, b) =>
          n +
          b
            .toString(2)
            .split('')
            .filter((c) => c === '1').length,
        0,
      );
      notes.push(`${dir}/mask was read as prefix ${prefix} (export writes ${dir}/prefix)`);
    }
    const i: VServerInterface = {
      name: d,
      ip,
      dev: r.scalar(`${dir}/dev`) ?? '',
      prefix,
      label: r.scalar(`${dir}/name`) ?? '',
      nodev: r.flag(`${dir}/nodev`),
      disabled: r.flag(`${dir}/disabled`),
    };
    nw.interfaces.push(i);
  }
}

/**
 * A configuration directory as a container definition. `dirName` is the
 * directory's base name (util-vserver's default guest name); `name`, when
 * given, is the container name to use.
 */
export function parseConfigDir(files: ConfigFiles, dirName: string, name?: string): ImportResult {
  const r = new Reader(files);
  const notes: string[] = [];
  const o = VServerOptions.fromPartial({ network: {}, bcapabilities: {}, uts: {}, init: {} });

  const ctx = r.scalar('context');
  if (ctx === undefined) throw invalidArgument('context', "is required: the guest's context id (2..49151); util-vserver's dynamic contexts are not supported");
  o.context = uint('context', ctx, 0xffffffff)!;
  o.contextName = r.scalar('name') ?? '';
  const containerName = name || o.contextName || dirName;
  if (!NAME_RE.test(containerName)) {
    throw invalidArgument(
      name ? 'name' : o.contextName ? 'name (file)' : 'directory name',
      `"${containerName}" is not a valid container name (a lowercase DNS label); give another one (osvirt vserver import --name)`,
    );
  }

  o.uts!.nodename = r.scalar('uts/nodename') ?? '';
  o.uts!.domainname = r.scalar('uts/domainname') ?? '';
  for (const legacy of ['hostname', 'domainname'] as const) {
    const v = r.scalar(legacy);
    if (v === undefined) continue;
    const k = legacy === 'hostname' ? 'nodename' : 'domainname';
    if (!o.uts![k]) o.uts![k] = v;
    notes.push(`${legacy} is util-vserver's legacy name for uts/${k} (export writes uts/${k})`);
  }

  readInterfaces(r, o, notes);
  for (const f of r.lines('nflags')) {
    const w = f.toLowerCase().replace(/^nxf_/, '');
    if (w === 'single_ip') o.network!.singleIp = true;
    else if (w === 'lback_remap' || w === 'remap_lback') o.network!.lbackRemap = true;
    else throw unsupported('nflags', `network flag "${f}" is not supported (single_ip and lback_remap are)`);
  }

  for (const line of r.lines('bcapabilities')) {
    const drop = line.startsWith('!') || line.startsWith('~');
    const cap = normalizeCapability(drop ? line.slice(1) : line);
    if (!isCapability(cap)) throw invalidArgument('bcapabilities', `unknown capability "${line}"`);
    (drop ? o.bcapabilities!.drop : o.bcapabilities!.add).push(cap);
  }
  for (const line of r.lines('ccapabilities')) {
    if (line.startsWith('!') || line.startsWith('~'))
      throw invalidArgument('ccapabilities', `"${line}": a guest starts with no context capabilities, so there is nothing to clear`);
    const c = parseCcap(line);
    if (c === undefined) throw invalidArgument('ccapabilities', `unknown context capability "${line}"`);
    o.ccapabilities.push(c);
  }
  for (const line of [...r.lines('flags'), ...r.lines('cflags')]) {
    const f = parseCflag(line);
    if (f === undefined) throw invalidArgument('flags', `unknown context flag "${line}"`);
    if (!o.flags.includes(f)) o.flags.push(f);
  }

  const limits = readRlimits(r);
  if (limits) o.rlimits = limits;

  const style = r.scalar('apps/init/style');
  if (style !== undefined) {
    const s = INIT_STYLES[style];
    if (s === undefined) throw unsupported('apps/init/style', `init style "${style}" is not supported (sysv or plain)`);
    o.init!.style = s;
  }
  o.init!.runlevelStart = r.scalar('apps/init/runlevel.start') ?? r.scalar('apps/init/runlevel') ?? '';
  if (r.has('apps/init/runlevel') && r.has('apps/init/runlevel.start')) notes.push('apps/init/runlevel.start overrides apps/init/runlevel');
  o.init!.runlevelStop = r.scalar('apps/init/runlevel.stop') ?? '';
  const ks = r.text('apps/init/killseq');
  if (ks !== undefined) o.init!.killseq = parseKillseq('apps/init/killseq', ks);

  const vdir = r.link('vdir');
  if (r.has('vdir') && vdir === undefined) throw invalidArgument('vdir', "must be a symbolic link to the guest's root directory");
  if (vdir !== undefined && !path.isAbsolute(vdir)) throw invalidArgument('vdir', `must point to an absolute path (it points to "${vdir}")`);
  if (vdir === undefined) notes.push("no vdir link: the guest runs on osvirt's busybox template (util-vserver would use /vservers/NAME)");

  for (const p of r.leftovers()) notes.push(`${p} is not imported (the vserver driver does not use it)`);

  const spec = ContainerSpec.fromPartial({
    driver: 'vserver',
    rootfs: { source: vdir ? { $case: 'path', value: vdir } : { $case: 'template', value: 'busybox' } },
  });
  spec.driverOptions = { $case: 'vserver', value: o };
  return { name: containerName, spec, notes };
}

function put(out: ConfigFiles, p: string, text: string): void {
  out.set(p, { content: Buffer.from(text.endsWith('\n') || text === '' ? text : text + '\n') });
}

function limitText(n: bigint | undefined, inf: boolean): string | undefined {
  return inf ? 'inf' : n === undefined ? undefined : String(n);
}

/** A vserver container's definition as a configuration directory (the inverse of parseConfigDir). */
export function renderConfigDir(spec: ContainerSpec): ConfigFiles {
  if (spec.driverOptions?.$case !== 'vserver')
    throw new OsvirtError('FAILED_PRECONDITION', 'NOT_A_VSERVER', 'only a container of the vserver driver has a util-vserver configuration directory');
  const o = spec.driverOptions.value;
  const out: ConfigFiles = new Map();
  put(out, 'context', String(o.context));
  if (o.contextName) put(out, 'name', o.contextName);
  const nodename = o.uts?.nodename || spec.hostname;
  const domainname = o.uts?.domainname || spec.domainname;
  if (nodename) put(out, 'uts/nodename', nodename);
  if (domainname) put(out, 'uts/domainname', domainname);

  const nw = o.network;
  if (nw?.dev) put(out, 'interfaces/dev', nw.dev);
  if (nw?.prefix) put(out, 'interfaces/prefix', String(nw.prefix));
  for (const i of nw?.interfaces ?? []) {
    const d = `interfaces/${i.name}`;
    put(out, `${d}/ip`, i.ip);
    if (i.dev) put(out, `${d}/dev`, i.dev);
    if (i.prefix) put(out, `${d}/prefix`, String(i.prefix));
    if (i.label) put(out, `${d}/name`, i.label);
    if (i.nodev) put(out, `${d}/nodev`, '');
    if (i.disabled) put(out, `${d}/disabled`, '');
  }
  const nflags = [...(nw?.singleIp ? ['single_ip'] : []), ...(nw?.lbackRemap ? ['lback_remap'] : [])];
  if (nflags.length) put(out, 'nflags', nflags.join('\n'));
  if (o.flags.length) put(out, 'flags', o.flags.map(cflagName).join('\n'));
  const bcaps = [
    ...(o.bcapabilities?.add ?? []).map((c) => `CAP_${normalizeCapability(c).toUpperCase()}`),
    ...(o.bcapabilities?.drop ?? []).map((c) => `!CAP_${normalizeCapability(c).toUpperCase()}`),
  ];
  if (bcaps.length) put(out, 'bcapabilities', bcaps.join('\n'));
  if (o.ccapabilities.length) put(out, 'ccapabilities', o.ccapabilities.map(ccapName).join('\n'));

  for (const res of RLIMIT_RESOURCES) {
    const l = o.rlimits?.[res];
    if (!l) continue;
    const hard = limitText(l.hard, l.hardInf);
    const soft = limitText(l.soft, l.softInf);
    const min = limitText(l.min, l.minInf);
    if (hard !== undefined && hard === soft) put(out, `rlimits/${res}`, hard);
    else {
      if (hard !== undefined) put(out, `rlimits/${res}.hard`, hard);
      if (soft !== undefined) put(out, `rlimits/${res}.soft`, soft);
    }
    if (min !== undefined) put(out, `rlimits/${res}.min`, min);
  }

  const init = o.init;
  const style = Object.entries(INIT_STYLES).find(([, v]) => v === init?.style)?.[0];
  if (style) put(out, 'apps/init/style', style);
  if (init?.runlevelStart) put(out, 'apps/init/runlevel.start', init.runlevelStart);
  if (init?.runlevelStop) put(out, 'apps/init/runlevel.stop', init.runlevelStop);
  if (init?.killseq.length) put(out, 'apps/init/killseq', formatKillseq(init.killseq));

  if (spec.rootfs?.source?.$case === 'path') out.set('vdir', { symlink: spec.rootfs.source.value });
  return out;
}
