// jail.conf(5) and rctl.conf(5) readers. A jail.conf text becomes, per
// jail, the parameters jail(8) would use: statements outside any block and
// in "*" (or "prefix.*") blocks apply to every matching jail, in file
// order with the jail's own block ("later definitions supersede earlier
// ones"); "=" replaces, "+=" appends; $var and ${param} are substituted per
// jail in unquoted tokens and double-quoted strings, not in single quotes.
// Every error names file:line:column.
import { JailOptions, JailRctl, JailSysMode } from '../../src/gen/osvirt/v1/jail';
import { OsvirtError } from '../../src/core/errors';
import { DEVFS_RULESETS } from './options';

export class JailConfError extends OsvirtError {
  constructor(
    readonly file: string,
    readonly line: number,
    readonly column: number,
    readonly detail: string,
  ) {
    super(
      'INVALID_ARGUMENT',
      'JAIL_CONF_SYNTAX',
      `${file}:${line}:${column}: ${detail}`,
      [{ field: 'text', description: `${file}:${line}:${column}: ${detail}` }],
      {
        file,
        line: String(line),
        column: String(column),
      },
    );
  }
}

interface Pos {
  line: number;
  col: number;
}

/** A string value: literal text and variable references, substituted per jail. */
type Part = { text: string } | { ref: string; pos: Pos };

type Token = { kind: '{' | '}' | ';' | ',' | '=' | '+='; pos: Pos } | { kind: 'str'; parts: Part[]; quoted: boolean; pos: Pos; glued: boolean };

const SPECIAL = new Set([';', ',', '=', '{', '}', '"', "'"]);

function lex(text: string, file: string): Token[] {
  const out: Token[] = [];
  let i = 0;
  let line = 1;
  let col = 1;
  const fail = (msg: string, at: Pos = { line, col }): never => {
    throw new JailConfError(file, at.line, at.col, msg);
  };
  const advance = (n = 1) => {
    for (let k = 0; k < n; k++) {
      if (text[i] === '\n') {
        line++;
        col = 1;
      } else col++;
      i++;
    }
  };
  const isSpace = (c: string | undefined) => c === ' ' || c === '\t' || c === '\n' || c === '\r' || c === '\f' || c === '\v';

  /** A backslash escape at i (i points at the backslash); returns the text (or '' for a line continuation). */
  const escape = (): string => {
    const at = { line, col };
    advance();
    const c = text[i];
    if (c === undefined) fail('backslash at the end of the file', at);
    if (c === '\n') {
      advance();
      return '';
    }
    const simple: Record<string, string> = { n: '\n', t: '\t', r: '\r', a: '\x07', b: '\b', f: '\f', v: '\v', '\\': '\\', '"': '"', "'": "'", $: '$' };
    if (c === 'x') {
      const m = /^[0-9A-Fa-f]{1,2}/.exec(text.slice(i + 1));
      if (!m) fail('\\x needs hex digits', at);
      advance(1 + m![0].length);
      return String.fromCharCode(parseInt(m![0], 16));
    }
    if (c && /[0-7]/.test(c)) {
      const m = /^[0-7]{1,3}/.exec(text.slice(i))!;
      advance(m[0].length);
      return String.fromCharCode(parseInt(m[0], 8));
    }
    advance();
    return simple[c!] ?? c!;
  };

  /** A $name or ${name} reference at i. */
  const variable = (): Part => {
    const at = { line, col };
    advance();
    if (text[i] === '{') {
      const end = text.indexOf('}', i);
      const name = end < 0 ? '' : text.slice(i + 1, end);
      if (end < 0 || !/^[A-Za-z_][A-Za-z0-9_.]*$/.test(name)) fail('expected ${name}', at);
      advance(end - i + 1);
      return { ref: name, pos: at };
    }
    const m = /^[A-Za-z_][A-Za-z0-9_]*/.exec(text.slice(i));
    if (!m) fail('expected a variable name after $', at);
    advance(m![0].length);
    return { ref: m![0], pos: at };
  };

  let sawSpace = true;
  while (i < text.length) {
    const c = text[i]!;
    if (isSpace(c)) {
      advance();
      sawSpace = true;
      continue;
    }
    if (c === '#' || (c === '/' && text[i + 1] === '/')) {
      while (i < text.length && text[i] !== '\n') advance();
      sawSpace = true;
      continue;
    }
    if (c === '/' && text[i + 1] === '*') {
      const at = { line, col };
      const end = text.indexOf('*/', i + 2);
      if (end < 0) fail('unterminated /* comment', at);
      advance(end + 2 - i);
      sawSpace = true;
      continue;
    }
    const pos = { line, col };
    if (c === '+' && text[i + 1] === '=') {
      out.push({ kind: '+=', pos });
      advance(2);
      sawSpace = true;
      continue;
    }
    if (c === ';' || c === ',' || c === '=' || c === '{' || c === '}') {
      out.push({ kind: c, pos });
      advance();
      sawSpace = true;
      continue;
    }
    // A string: a quoted string or an unquoted token; adjacent ones (no space) join.
    const parts: Part[] = [];
    const lit = (s: string) => {
      const last = parts[parts.length - 1];
      if (last && 'text' in last) last.text += s;
      else parts.push({ text: s });
    };
    let quoted = false;
    if (c === '"' || c === "'") {
      quoted = true;
      advance();
      for (;;) {
        const d = text[i];
        if (d === undefined) fail(`unterminated ${c === '"' ? 'double' : 'single'}-quoted string`, pos);
        if (d === c) {
          advance();
          break;
        }
        if (d === '\\') lit(escape());
        else if (d === '$' && c === '"') parts.push(variable());
        else {
          lit(d!);
          advance();
        }
      }
    } else {
      while (i < text.length) {
        const d = text[i]!;
        if (isSpace(d) || SPECIAL.has(d) || (d === '+' && text[i + 1] === '=')) break;
        if (d === '\\') lit(escape());
        else if (d === '$') parts.push(variable());
        else {
          lit(d);
          advance();
        }
      }
    }
    if (!parts.length) parts.push({ text: '' });
    out.push({ kind: 'str', parts, quoted, pos, glued: !sawSpace && out[out.length - 1]?.kind === 'str' });
    sawSpace = false;
  }
  return out;
}

/** One parameter or variable statement. */
interface Stmt {
  name: string;
  /** undefined: a bare name (a boolean true, or false with a "no" prefix). */
  op?: '=' | '+=';
  values: Part[][];
  pos: Pos;
  /** The block it is in: undefined at the top level (applies to every jail). */
  block?: string;
}

interface Parsed {
  stmts: Stmt[];
  /** Jail names in order of first appearance (no wildcards). */
  jails: { name: string; pos: Pos }[];
}

function flat(parts: Part[]): string | undefined {
  return parts.every((p) => 'text' in p) ? parts.map((p) => ('text' in p ? p.text : '')).join('') : undefined;
}

function parse(text: string, file: string): Parsed {
  const toks = lex(text, file);
  let k = 0;
  const stmts: Stmt[] = [];
  const jails: { name: string; pos: Pos }[] = [];
  const fail = (msg: string, at: Pos): never => {
    throw new JailConfError(file, at.line, at.col, msg);
  };
  const eofPos = (): Pos => {
    const lines = text.split('\n');
    return { line: lines.length, col: (lines[lines.length - 1]?.length ?? 0) + 1 };
  };
  /** A string made of adjacent pieces. */
  const value = (): Part[] => {
    const t = toks[k];
    if (!t || t.kind !== 'str') fail(`expected a value${t ? `, found "${t.kind}"` : ''}`, t?.pos ?? eofPos());
    const parts = [...(t as { parts: Part[] }).parts];
    k++;
    for (let n = toks[k]; n && n.kind === 'str' && n.glued; n = toks[++k]) parts.push(...n.parts);
    return parts;
  };
  const statement = (block: string | undefined) => {
    const t = toks[k]!;
    const nameParts = value();
    // "$var = ..." defines a variable: the name is the reference itself.
    const only = nameParts.length === 1 ? nameParts[0] : undefined;
    const name = only && 'ref' in only ? `$${only.ref}` : flat(nameParts);
    if (name === undefined || !name) fail('a parameter name cannot contain a variable', t.pos);
    const next = toks[k];
    if (!next) fail(`expected ";" after "${name}"`, eofPos());
    if (next!.kind === '{') {
      if (block !== undefined) fail(`jail "${name}" is defined inside the block of "${block}": blocks do not nest`, t.pos);
      k++;
      if (name !== '*' && !name!.endsWith('.*')) {
        if (!jails.some((j) => j.name === name)) jails.push({ name: name!, pos: t.pos });
      }
      for (;;) {
        const u = toks[k];
        if (!u) fail(`missing "}" for the block of "${name}"`, t.pos);
        if (u!.kind === '}') {
          k++;
          break;
        }
        if (u!.kind === ';') {
          k++;
          continue;
        }
        statement(name);
      }
      return;
    }
    const st: Stmt = { name: name!, values: [], pos: t.pos, ...(block !== undefined ? { block } : {}) };
    if (next!.kind === '=' || next!.kind === '+=') {
      st.op = next!.kind;
      k++;
      if (toks[k]?.kind === ';') st.values.push([{ text: '' }]);
      else {
        st.values.push(value());
        while (toks[k]?.kind === ',') {
          k++;
          st.values.push(value());
        }
      }
    }
    const end = toks[k];
    if (!end || end.kind !== ';')
      fail(
        `expected ";" after the ${st.op ? 'value' : 'name'} of "${name}"${end ? `, found ${end.kind === 'str' ? 'more text' : `"${end.kind}"`}` : ''}`,
        end?.pos ?? eofPos(),
      );
    k++;
    stmts.push(st);
  };
  while (k < toks.length) {
    const t = toks[k]!;
    if (t.kind === ';') {
      k++;
      continue;
    }
    if (t.kind !== 'str') fail(`unexpected "${t.kind}"`, t.pos);
    statement(undefined);
  }
  return { stmts, jails };
}

function applies(block: string | undefined, jail: string): boolean {
  if (block === undefined || block === '*' || block === jail) return true;
  return block.endsWith('.*') && jail.startsWith(block.slice(0, -1));
}

// ---- parameters

type Kind = 'bool' | 'int' | 'string' | 'list' | 'mode';

/** jail(8) parameters osvirt knows, with their JailOptions field. */
const PARAMS: Record<string, { kind: Kind; field?: keyof JailOptions }> = {
  jid: { kind: 'int', field: 'jid' },
  name: { kind: 'string' },
  path: { kind: 'string', field: 'path' },
  host: { kind: 'mode', field: 'host' },
  'host.hostname': { kind: 'string', field: 'hostHostname' },
  'host.domainname': { kind: 'string', field: 'hostDomainname' },
  ip4: { kind: 'mode', field: 'ip4' },
  'ip4.addr': { kind: 'list', field: 'ip4Addr' },
  ip6: { kind: 'mode', field: 'ip6' },
  'ip6.addr': { kind: 'list', field: 'ip6Addr' },
  interface: { kind: 'string', field: 'interface' },
  vnet: { kind: 'mode', field: 'vnet' },
  persist: { kind: 'bool', field: 'persist' },
  securelevel: { kind: 'int', field: 'securelevel' },
  enforce_statfs: { kind: 'int', field: 'enforceStatfs' },
  'children.max': { kind: 'int', field: 'childrenMax' },
  devfs_ruleset: { kind: 'int', field: 'devfsRuleset' },
  'mount.devfs': { kind: 'bool', field: 'mountDevfs' },
  'allow.set_hostname': { kind: 'bool', field: 'allowSetHostname' },
  'allow.raw_sockets': { kind: 'bool', field: 'allowRawSockets' },
  'allow.chflags': { kind: 'bool', field: 'allowChflags' },
  'allow.mount': { kind: 'bool', field: 'allowMount' },
  'allow.mount.nullfs': { kind: 'bool', field: 'allowMountNullfs' },
  'allow.mount.tmpfs': { kind: 'bool', field: 'allowMountTmpfs' },
  'allow.mount.procfs': { kind: 'bool', field: 'allowMountProcfs' },
  'allow.mount.devfs': { kind: 'bool', field: 'allowMountDevfs' },
  'allow.mount.fdescfs': { kind: 'bool', field: 'allowMountFdescfs' },
  'allow.mount.linprocfs': { kind: 'bool', field: 'allowMountLinprocfs' },
  'allow.mount.linsysfs': { kind: 'bool', field: 'allowMountLinsysfs' },
  'allow.mount.fusefs': { kind: 'bool', field: 'allowMountFusefs' },
  'allow.mount.zfs': { kind: 'bool', field: 'allowMountZfs' },
  'allow.sysvipc': { kind: 'bool', field: 'allowSysvipc' },
  sysvmsg: { kind: 'mode', field: 'sysvmsg' },
  sysvsem: { kind: 'mode', field: 'sysvsem' },
  sysvshm: { kind: 'mode', field: 'sysvshm' },
  'allow.socket_af': { kind: 'bool', field: 'allowSocketAf' },
  'allow.reserved_ports': { kind: 'bool', field: 'allowReservedPorts' },
  'allow.mlock': { kind: 'bool', field: 'allowMlock' },
  'exec.prestart': { kind: 'list', field: 'execPrestart' },
  'exec.created': { kind: 'list', field: 'execCreated' },
  'exec.start': { kind: 'list', field: 'execStart' },
  command: { kind: 'list', field: 'command' },
  'exec.poststart': { kind: 'list', field: 'execPoststart' },
  'exec.prestop': { kind: 'list', field: 'execPrestop' },
  'exec.stop': { kind: 'list', field: 'execStop' },
  'exec.poststop': { kind: 'list', field: 'execPoststop' },
  'exec.clean': { kind: 'bool', field: 'execClean' },
  'exec.jail_user': { kind: 'string', field: 'execJailUser' },
  'exec.timeout': { kind: 'int', field: 'execTimeout' },
  'exec.consolelog': { kind: 'string', field: 'execConsolelog' },
  'stop.timeout': { kind: 'int' },
  mount: { kind: 'list', field: 'mount' },
  'mount.fstab': { kind: 'string', field: 'mountFstab' },
  // Linux jails always have /proc: only its "on" value is accepted.
  'mount.procfs': { kind: 'bool' },
  // osvirt's own: the rootfs template of a jail without path.
  'osvirt.template': { kind: 'string' },
};

const MODES: Record<string, JailSysMode> = {
  new: JailSysMode.JAIL_SYS_MODE_NEW,
  inherit: JailSysMode.JAIL_SYS_MODE_INHERIT,
  disable: JailSysMode.JAIL_SYS_MODE_DISABLE,
};

/** Known parameters that are accepted for compatibility but cannot be emulated. */
const NOT_SUPPORTED: Record<string, string> = {
  'exec.prepare': 'not in this jail(8) version',
  'exec.release': 'not in this jail(8) version',
  'exec.system_user': "host commands run as the daemon's user (root)",
  'exec.system_jail_user': "jail users come from the jail's /etc/passwd",
  'exec.fib': 'Linux has no FIBs; use a vnet jail',
  depend: 'define the jails and start them in order',
  'vnet.interface': 'a vnet jail gets a veth on the osvirt bridge',
  'mount.fdescfs': '/dev/fd is part of mount.devfs',
  ip_hostname: 'list the addresses in ip4.addr/ip6.addr',
  'ip4.saddrsel': 'source address selection is not emulated',
  'ip6.saddrsel': 'source address selection is not emulated',
  'ip4.nosaddrsel': 'source address selection is not emulated',
  'ip6.nosaddrsel': 'source address selection is not emulated',
  'allow.quotas': 'Linux quotas are not per jail',
  'allow.read_msgbuf': 'the kernel log stays closed to jails',
  'allow.unprivileged_proc_debug': 'not emulated',
  'allow.vmm': 'no vmm(4) on Linux',
  'host.hostuuid': 'no host UUID on Linux',
  'host.hostid': 'no host id on Linux',
  osrelease: "uname is the host's",
  osreldate: "uname is the host's",
  'allow.dying': 'not emulated',
};

export interface ConfJail {
  name: string;
  options: JailOptions;
  /** osvirt.template (a rootfs template when path is not given). */
  template: string;
  stopTimeout?: number | undefined;
}

/** jail.conf text to jails (all of them, or those named, in file order). */
export function readJailConf(text: string, file = 'jail.conf', names: string[] = []): ConfJail[] {
  const parsed = parse(text, file);
  for (const n of names) {
    if (!parsed.jails.some((j) => j.name === n)) throw new OsvirtError('NOT_FOUND', 'JAIL_NOT_FOUND', `${file}: jail "${n}" is not defined`, [], { jail: n });
  }
  const wanted = names.length ? parsed.jails.filter((j) => names.includes(j.name)) : parsed.jails;
  return wanted.map((j) => buildJail(parsed, j.name, file));
}

function buildJail(parsed: Parsed, jail: string, file: string): ConfJail {
  // Parameters and variables in effect for this jail, in file order.
  const params = new Map<string, { values: Part[][]; pos: Pos; bare: boolean }>();
  for (const st of parsed.stmts) {
    if (!applies(st.block, jail)) continue;
    let name = st.name;
    let values = st.values;
    let bare = false;
    if (!st.op) {
      // A bare boolean, or its "no" form on the last component (allow.nomount, nopersist).
      bare = true;
      const i = name.lastIndexOf('.') + 1;
      const last = name.slice(i);
      const negated = last.startsWith('no') && !(name in PARAMS) ? name.slice(0, i) + last.slice(2) : undefined;
      if (negated !== undefined && (negated in PARAMS || negated in NOT_SUPPORTED)) {
        name = negated;
        values = [[{ text: 'false' }]];
      } else values = [[{ text: 'true' }]];
    }
    const prev = params.get(name);
    if (st.op === '+=' && prev) params.set(name, { values: [...prev.values, ...values], pos: prev.pos, bare: false });
    else params.set(name, { values, pos: st.pos, bare });
  }
  params.set('name', { values: [[{ text: jail }]], pos: { line: 0, col: 0 }, bare: false });

  const fail = (msg: string, at: Pos): never => {
    throw new JailConfError(file, at.line, at.col, `jail "${jail}": ${msg}`);
  };
  // Substitution, per jail, with the final values.
  const resolving = new Set<string>();
  const resolved = new Map<string, string[]>();
  const resolve = (name: string, at: Pos): string[] => {
    const have = resolved.get(name);
    if (have) return have;
    const p = params.get(name);
    if (!p) fail(`\${${name.replace(/^\$/, '')}} is not defined`, at);
    if (resolving.has(name)) fail(`\${${name.replace(/^\$/, '')}} refers to itself`, at);
    resolving.add(name);
    const out = p!.values.map((parts) =>
      parts
        .map((part) => {
          if ('text' in part) return part.text;
          // A reference names a parameter, or a variable ($name defined with a $).
          const target = params.has(`$${part.ref}`) ? `$${part.ref}` : part.ref;
          return resolve(target, part.pos).join(' ');
        })
        .join(''),
    );
    resolving.delete(name);
    resolved.set(name, out);
    return out;
  };

  const o = JailOptions.fromPartial({});
  let template = '';
  let stopTimeout: number | undefined;
  const num = (s: string, at: Pos, pname: string): number => {
    if (!/^-?\d+$/.test(s.trim())) fail(`${pname} = "${s}": expected a number`, at);
    return Number(s.trim());
  };
  for (const [name, p] of params) {
    if (name.startsWith('$') || name === 'name') continue;
    const at = p.pos;
    if (name in NOT_SUPPORTED) {
      const v = resolve(name, at);
      // Accept what is the Linux behaviour anyway.
      const harmless = (name.endsWith('saddrsel') && v[0] === 'true') || (name === 'exec.system_user' && v[0] === 'root');
      if (!harmless) fail(`${name} is not supported on Linux: ${NOT_SUPPORTED[name]}`, at);
      continue;
    }
    const def = PARAMS[name];
    if (!def) fail(`unknown parameter "${name}"`, at);
    const vals = resolve(name, at);
    if (def!.kind !== 'list' && vals.length > 1) fail(`${name} takes one value, not a list`, at);
    const v = vals[0] ?? '';
    const f = def!.field;
    const set = (x: unknown) => {
      if (f) (o as unknown as Record<string, unknown>)[f] = x;
    };
    switch (def!.kind) {
      case 'bool': {
        const b = v === 'true' || v === '1' ? true : v === 'false' || v === '0' ? false : undefined;
        if (b === undefined) fail(`${name} = "${v}": expected true or false (or "${name};" / "no" prefix)`, at);
        if (name === 'mount.procfs') {
          if (!b) fail("mount.procfs cannot be turned off: Linux programs need /proc, which is the jail's own", at);
        } else set(b);
        break;
      }
      case 'int': {
        if (name === 'devfs_ruleset' && !/^-?\d+$/.test(v)) {
          const n = Object.entries(DEVFS_RULESETS).find(([, r]) => r.name === v)?.[0];
          if (!n)
            fail(
              `devfs_ruleset "${v}": only the rulesets of /etc/defaults/devfs.rules are known (${Object.values(DEVFS_RULESETS)
                .map((r) => r.name)
                .join(', ')}) or a number`,
              at,
            );
          set(Number(n));
          break;
        }
        const n = num(v, at, name);
        if (name === 'stop.timeout') stopTimeout = n;
        else if (name !== 'securelevel' && n < 0) fail(`${name} must not be negative`, at);
        else set(n);
        break;
      }
      case 'string':
        if (p.bare) fail(`${name} needs a value: ${name} = ...;`, at);
        if (name === 'osvirt.template') template = v;
        else set(v);
        break;
      case 'list':
        set(vals.filter((x) => x !== ''));
        break;
      case 'mode': {
        const m = MODES[v];
        if (m === undefined) fail(`${name} = "${v}": expected new, inherit or disable`, at);
        set(m);
        break;
      }
    }
  }
  return { name: jail, options: o, template, stopTimeout };
}

const RCTL_RESOURCES: Record<string, keyof JailRctl> = {
  memoryuse: 'memoryuse',
  maxproc: 'maxproc',
  pcpu: 'pcpu',
  openfiles: 'openfiles',
  vmemoryuse: 'vmemoryuse',
};

/** rctl(8) amounts: a number with an optional k/m/g/t suffix (powers of 1024). */
function amount(s: string): bigint | undefined {
  const m = /^(\d+)([kKmMgGtT]?)$/.exec(s);
  if (!m) return undefined;
  const mult: Record<string, bigint> = { '': 1n, k: 1024n, m: 1024n ** 2n, g: 1024n ** 3n, t: 1024n ** 4n };
  return BigInt(m[1]!) * mult[(m[2] ?? '').toLowerCase()]!;
}

/** rctl.conf(5) text: the limits of each jail ("jail:NAME:RESOURCE:deny=AMOUNT"). */
export function readRctlConf(text: string, file = 'rctl.conf'): Map<string, JailRctl> {
  const out = new Map<string, JailRctl>();
  text.split('\n').forEach((raw, i) => {
    const line = raw.replace(/#.*/, '').trim();
    if (!line) return;
    const col = raw.indexOf(line) + 1;
    const fail = (msg: string): never => {
      throw new JailConfError(file, i + 1, col, msg);
    };
    const m = /^([a-z]+):([^:]*):([a-z]+):([a-z]+)(?:=([^/\s]+))?(?:\/([a-z]+))?$/.exec(line);
    if (!m) return fail(`"${line}": expected subject:subject-id:resource:action=amount`);
    const [, subject, id, resource, action, amt, per] = m;
    if (subject !== 'jail') return fail(`subject "${subject}": only jail rules apply to jails`);
    const field = RCTL_RESOURCES[resource!];
    if (!field) return fail(`resource "${resource}": supported are ${Object.keys(RCTL_RESOURCES).join(', ')}`);
    if (action !== 'deny') return fail(`action "${action}": only deny is enforced (by cgroups and rlimits)`);
    if (per && per !== 'jail' && !(per === 'process' && (resource === 'openfiles' || resource === 'vmemoryuse'))) {
      return fail(`"/${per}": ${resource} is limited ${resource === 'openfiles' || resource === 'vmemoryuse' ? 'per process' : 'per jail'} on Linux`);
    }
    const n = amount(amt ?? '');
    if (n === undefined || n === 0n) return fail(`amount "${amt ?? ''}": expected a positive number (k, m, g suffixes allowed)`);
    const r = out.get(id!) ?? JailRctl.fromPartial({});
    if (field === 'maxproc' || field === 'pcpu') {
      if (n > 0xffffffffn) return fail(`amount "${amt ?? ''}": at most 4294967295 for ${resource}`);
      r[field] = Number(n);
    } else {
      if (n > 0xffffffffffffffffn) return fail(`amount "${amt ?? ''}": at most 18446744073709551615 for ${resource}`);
      r[field] = n;
    }
    out.set(id!, r);
  });
  return out;
}
