// The per-container IP policy: validation, normalisation, and the binary
// layout that ipfilter.bpf.c reads (struct ipf_policy). Kept apart from the
// bpftool plumbing so it can be unit-tested without root.
import * as net from 'node:net';
import { invalidArgument } from '../../../src/core/errors';

/**
 * Per address family, as in FreeBSD's jail(8) ip4/ip6 parameters:
 * - 'new': only the listed addresses may be used (none listed: the family
 *   can create sockets but never bind, connect or send);
 * - 'inherit': the host's addresses, unrestricted;
 * - 'disable': socket(AF_INET[6]) itself fails with EAFNOSUPPORT.
 */
export type IpMode = 'new' | 'inherit' | 'disable';

export interface IpFilterPolicy {
  /** IPv4 addresses; the first is the primary (source of outgoing traffic, remap target). */
  ipv4: string[];
  ipv4Mode: IpMode;
  /** IPv6 addresses, same rules. Listing some implies ipv6Mode 'new'. */
  ipv6?: string[];
  /**
   * Default: 'new' when ipv6 lists addresses, otherwise 'inherit' if
   * ipv4Mode is 'inherit' and 'disable' if not (a container restricted on
   * IPv4 should not get the host's IPv6 addresses by omission).
   */
  ipv6Mode?: IpMode;
  /** Wildcard binds become the primary address (VServer single_ip; FreeBSD with one address). */
  singleIp: boolean;
  /** 127.0.0.0/8 and ::1 mean the primary address (VServer lback_remap; FreeBSD without a loopback address). */
  loopbackRemap: boolean;
  /**
   * Ports below 1024 on the container's own addresses without CAP_NET_BIND_SERVICE
   * over the host's network namespace, which a user-namespaced container never has
   * (jail allow.reserved_ports; a vserver guest with net_bind_service). Default false.
   */
  reservedPorts?: boolean;
}

/** A policy after validation: every field explicit, addresses in canonical form. */
export interface NormalizedPolicy {
  ipv4: string[];
  ipv4Mode: IpMode;
  ipv6: string[];
  ipv6Mode: IpMode;
  singleIp: boolean;
  loopbackRemap: boolean;
  reservedPorts: boolean;
}

/** Matches IPF_MAX_ADDRS in ipfilter.bpf.c (Linux-VServer's NB_IPV4ROOT was 16 too). */
export const MAX_ADDRS = 16;
/** sizeof(struct ipf_policy): index.ts checks it against the loaded map. */
export const POLICY_SIZE = 16 + MAX_ADDRS * 4 + MAX_ADDRS * 16;

const FLAG = {
  configured: 1 << 0,
  v4New: 1 << 1,
  v4Disable: 1 << 2,
  v6New: 1 << 3,
  v6Disable: 1 << 4,
  singleIp: 1 << 5,
  loopbackRemap: 1 << 6,
  reservedPorts: 1 << 7,
} as const;

const MODES: readonly IpMode[] = ['new', 'inherit', 'disable'];

function ipv4Bytes(a: string): number[] {
  return a.split('.').map(Number);
}

/** 16 bytes of an IPv6 address (net.isIPv6 already said it is one). */
export function ipv6Bytes(addr: string): number[] {
  let a = addr;
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(a);
  if (v4) {
    const [b0, b1, b2, b3] = ipv4Bytes(v4[1]!) as [number, number, number, number];
    a = a.slice(0, v4.index) + ((b0 << 8) | b1).toString(16) + ':' + ((b2 << 8) | b3).toString(16);
  }
  const [left, right] = a.split('::') as [string, string | undefined];
  const l = left ? left.split(':') : [];
  const r = right ? right.split(':') : [];
  const groups = right === undefined ? l : [...l, ...Array<string>(8 - l.length - r.length).fill('0'), ...r];
  return groups.flatMap((g) => {
    const n = parseInt(g, 16);
    return [n >> 8, n & 0xff];
  });
}

/** RFC 5952 text form: lower case, longest run of two or more zero groups as "::". */
export function formatIpv6(bytes: ArrayLike<number>): string {
  const g: number[] = [];
  for (let i = 0; i < 16; i += 2) g.push(((bytes[i] ?? 0) << 8) | (bytes[i + 1] ?? 0));
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8;) {
    if (g[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen) [best, bestLen] = [i, j - i];
    i = j;
  }
  const hex = (xs: number[]) => xs.map((x) => x.toString(16)).join(':');
  return best < 0 ? hex(g) : `${hex(g.slice(0, best))}::${hex(g.slice(best + bestLen))}`;
}

function checkAddresses(field: string, list: unknown, family: 4 | 6, mode: IpMode): string[] {
  if (list === undefined) return [];
  if (!Array.isArray(list)) throw invalidArgument(field, 'must be a list of addresses');
  if (list.length && mode !== 'new') throw invalidArgument(field, `addresses need mode 'new' (mode is '${mode}')`);
  if (list.length > MAX_ADDRS) throw invalidArgument(field, `at most ${MAX_ADDRS} addresses (got ${list.length})`);
  const out: string[] = [];
  for (const [i, raw] of list.entries()) {
    const f = `${field}[${i}]`;
    if (typeof raw !== 'string') throw invalidArgument(f, 'must be a string');
    let a: string;
    if (family === 4) {
      if (!net.isIPv4(raw)) throw invalidArgument(f, `"${raw}" is not an IPv4 address (no prefix length: addresses, not networks)`);
      a = ipv4Bytes(raw).join('.');
      if (a === '0.0.0.0' || ipv4Bytes(a)[0]! >= 224) throw invalidArgument(f, `${a} is not a unicast address`);
    } else {
      if (!net.isIPv6(raw) || raw.includes('%')) throw invalidArgument(f, `"${raw}" is not an IPv6 address (no zone, no prefix length)`);
      const b = ipv6Bytes(raw);
      a = formatIpv6(b);
      if (a === '::' || b[0] === 0xff) throw invalidArgument(f, `${a} is not a unicast address`);
      if (b.slice(0, 10).every((x) => x === 0) && b[10] === 0xff && b[11] === 0xff) throw invalidArgument(f, `${a} is v4-mapped: list it in ipv4 instead`);
    }
    if (out.includes(a)) throw invalidArgument(f, `${a} is listed twice`);
    out.push(a);
  }
  return out;
}

function checkMode(field: string, m: unknown): IpMode {
  if (!MODES.includes(m as IpMode)) throw invalidArgument(field, `must be one of ${MODES.join(', ')} (got ${JSON.stringify(m)})`);
  return m as IpMode;
}

/** Validates a policy (INVALID_ARGUMENT naming the field) and fills in defaults. */
export function normalizePolicy(p: IpFilterPolicy): NormalizedPolicy {
  const ipv4Mode = checkMode('policy.ipv4Mode', p.ipv4Mode);
  const ipv6Mode = checkMode('policy.ipv6Mode', p.ipv6Mode ?? (p.ipv6?.length ? 'new' : ipv4Mode === 'inherit' ? 'inherit' : 'disable'));
  for (const k of ['singleIp', 'loopbackRemap'] as const) {
    if (typeof p[k] !== 'boolean') throw invalidArgument(`policy.${k}`, 'must be true or false');
  }
  if (p.reservedPorts !== undefined && typeof p.reservedPorts !== 'boolean') throw invalidArgument('policy.reservedPorts', 'must be true or false');
  return {
    ipv4: checkAddresses('policy.ipv4', p.ipv4, 4, ipv4Mode),
    ipv4Mode,
    ipv6: checkAddresses('policy.ipv6', p.ipv6, 6, ipv6Mode),
    ipv6Mode,
    singleIp: p.singleIp,
    loopbackRemap: p.loopbackRemap,
    reservedPorts: p.reservedPorts ?? false,
  };
}

/** Does the policy restrict anything? 'inherit' on both families does not. */
export function restricts(p: NormalizedPolicy): boolean {
  return p.ipv4Mode !== 'inherit' || p.ipv6Mode !== 'inherit';
}

/** struct ipf_policy, little-endian counters, addresses in network byte order. */
export function encodePolicy(p: NormalizedPolicy): Buffer {
  const b = Buffer.alloc(POLICY_SIZE);
  let flags = FLAG.configured;
  if (p.ipv4Mode === 'new') flags |= FLAG.v4New;
  if (p.ipv4Mode === 'disable') flags |= FLAG.v4Disable;
  if (p.ipv6Mode === 'new') flags |= FLAG.v6New;
  if (p.ipv6Mode === 'disable') flags |= FLAG.v6Disable;
  if (p.singleIp) flags |= FLAG.singleIp;
  if (p.loopbackRemap) flags |= FLAG.loopbackRemap;
  if (p.reservedPorts) flags |= FLAG.reservedPorts;
  b.writeUInt32LE(flags, 0);
  b.writeUInt32LE(p.ipv4.length, 4);
  b.writeUInt32LE(p.ipv6.length, 8);
  p.ipv4.forEach((a, i) => b.set(ipv4Bytes(a), 16 + i * 4));
  p.ipv6.forEach((a, i) => b.set(ipv6Bytes(a), 16 + MAX_ADDRS * 4 + i * 16));
  return b;
}

/** The inverse of encodePolicy; undefined for a storage the daemon never configured. */
export function decodePolicy(b: Buffer): NormalizedPolicy | undefined {
  if (b.length !== POLICY_SIZE) throw new Error(`policy value is ${b.length} bytes, expected ${POLICY_SIZE}`);
  const flags = b.readUInt32LE(0);
  if (!(flags & FLAG.configured)) return undefined;
  const n4 = Math.min(b.readUInt32LE(4), MAX_ADDRS);
  const n6 = Math.min(b.readUInt32LE(8), MAX_ADDRS);
  const mode = (isNew: number, isDisabled: number): IpMode => (flags & isNew ? 'new' : flags & isDisabled ? 'disable' : 'inherit');
  return {
    ipv4: Array.from({ length: n4 }, (_, i) => [...b.subarray(16 + i * 4, 20 + i * 4)].join('.')),
    ipv4Mode: mode(FLAG.v4New, FLAG.v4Disable),
    ipv6: Array.from({ length: n6 }, (_, i) => formatIpv6(b.subarray(16 + MAX_ADDRS * 4 + i * 16))),
    ipv6Mode: mode(FLAG.v6New, FLAG.v6Disable),
    singleIp: !!(flags & FLAG.singleIp),
    loopbackRemap: !!(flags & FLAG.loopbackRemap),
    reservedPorts: !!(flags & FLAG.reservedPorts),
  };
}
