// NAT for the daemon's bridge and published ports, in nftables, in a table
// of osvirt's own per bridge (`ip osvirt-<bridge>`), so the host's rules stay
// untouched (lxc-net and Podman's netavark do the same with theirs):
// - masquerade for the bridge's subnet leaving by any other interface, and
//   for a container reaching a published port through a host address
//   (hairpin: the server must answer through the host, not directly);
// - DNAT of published ports, for traffic arriving from outside (prerouting)
//   and from the host itself (output), loopback included: that needs
//   route_localnet on the bridge and a masquerade of 127.0.0.0/8 sources.
// Each port rule carries the comment "osvirt:<container>" and is deleted by
// its handle when the container stops. A table whose bridge is gone is
// removed by the next daemon that sets up NAT: its rules would otherwise
// keep rewriting that subnet's traffic and holding its host ports.
import { execFile, spawn } from 'node:child_process';
import { accessSync, constants, existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { networkInterfaces } from 'node:os';
import { promisify } from 'node:util';
import type { Logger } from 'pino';
import type { PortMapping } from '../../src/gen/osvirt/v1/container';
import { missingFeature, OsvirtError } from '../../src/core/errors';
import { KeyedMutex } from '../../src/core/keyed-mutex';

const run = promisify(execFile);
const NFT = ['/usr/sbin/nft', '/sbin/nft', '/usr/bin/nft'];
const TABLE_PREFIX = 'osvirt-';

export function nftPath(): string | undefined {
  return NFT.find((p) => {
    try {
      accessSync(p, constants.X_OK);
      return statSync(p).isFile();
    } catch {
      return false;
    }
  });
}

export function natTable(bridge: string): string {
  return `${TABLE_PREFIX}${bridge}`;
}

/** Why this host cannot do NAT, for GetInfo and the log; undefined when it can. */
export function natUnavailable(): string | undefined {
  if (nftPath()) return undefined;
  return 'nft (nftables) is not installed: containers on the bridge reach no network beyond the host and spec.ports is refused; apt-get install nftables (scripts/setup.sh does)';
}

/** Why forwarding cannot be turned on (it is off and /proc/sys is read-only here), or undefined. */
export function forwardingProblem(): string | undefined {
  const forward = readSysctl('net.ipv4.ip_forward');
  if (forward === '1') return undefined;
  try {
    accessSync('/proc/sys/net/ipv4/ip_forward', constants.W_OK);
    return undefined;
  } catch {
    return `net.ipv4.ip_forward is ${forward ?? 'unreadable'} and cannot be set here (read-only /proc/sys): containers on the bridge reach only the host`;
  }
}

async function nftScript(script: string): Promise<void> {
  const nft = nftPath();
  if (!nft) throw missingFeature('nftables (nft)', 'NAT and published ports are nftables rules; apt-get install nftables (scripts/setup.sh does)');
  await new Promise<void>((resolve, reject) => {
    const p = spawn(nft, ['-f', '-'], { stdio: ['pipe', 'ignore', 'pipe'] });
    let err = '';
    p.stderr.on('data', (b: Buffer) => (err += b.toString()));
    p.once('error', reject);
    p.once('close', (code) => (code === 0 ? resolve() : reject(new Error(`nft: ${err.trim()}`))));
    p.stdin.end(script);
  });
}

async function nftList(...args: string[]): Promise<string> {
  const nft = nftPath();
  if (!nft) return '';
  return run(nft, args, { maxBuffer: 64 * 1024 * 1024 }).then(
    (r) => r.stdout,
    () => '',
  );
}

function readSysctl(key: string): string | undefined {
  try {
    return readFileSync(`/proc/sys/${key.replace(/\./g, '/')}`, 'utf8').trim();
  } catch {
    return undefined;
  }
}

/** Sets a sysctl; false when /proc/sys is read-only (a nested daemon). */
function sysctl(key: string, value: string): boolean {
  try {
    writeFileSync(`/proc/sys/${key.replace(/\./g, '/')}`, value);
    return true;
  } catch {
    return false;
  }
}

function ifindex(name: string): string {
  try {
    return readFileSync(`/sys/class/net/${name}/ifindex`, 'utf8').trim();
  } catch {
    return '';
  }
}

/**
 * Bridges (by name and ifindex) whose table this process has set up: a start
 * on them costs no nft run (about 5 ms each). A bridge removed and made
 * again has a new ifindex, so its table is checked again.
 */
const readyTables = new Set<string>();

/**
 * The bridge's table: masquerade and the port chains. Idempotent and
 * repairing: the fixed chains are flushed and filled again in one nft
 * transaction (a table from an older osvirt gets the current rules), the
 * port rules in prerouting/output are left as they are.
 */
export async function ensureNat(bridge: string, subnet: string, logger?: Logger): Promise<void> {
  const key = `${bridge}#${ifindex(bridge)}`;
  if (readyTables.has(key)) return;
  if (!nftPath()) return;
  await removeStaleTables(logger);
  const table = natTable(bridge);
  await nftScript(`add table ip ${table}
add chain ip ${table} prerouting { type nat hook prerouting priority dstnat; policy accept; }
add chain ip ${table} output { type nat hook output priority -100; policy accept; }
add chain ip ${table} postrouting { type nat hook postrouting priority srcnat; policy accept; }
add chain ip ${table} forward { type filter hook forward priority filter; policy accept; }
flush chain ip ${table} postrouting
add rule ip ${table} postrouting ip saddr ${subnet} ip daddr != ${subnet} oifname != "${bridge}" masquerade comment "osvirt: ${bridge} outbound"
add rule ip ${table} postrouting ip saddr ${subnet} oifname "${bridge}" ct status dnat masquerade comment "osvirt: a container reaching a published port through a host address"
add rule ip ${table} postrouting ip saddr 127.0.0.0/8 oifname "${bridge}" masquerade comment "osvirt: published ports from the host's loopback"
flush chain ip ${table} forward
add rule ip ${table} forward iifname "${bridge}" accept
add rule ip ${table} forward oifname "${bridge}" ct state established,related accept
add rule ip ${table} forward oifname "${bridge}" ct status dnat accept
`);
  // Forwarding is a host-wide switch, as with lxc-net and netavark: say when osvirt turns it on.
  const forward = readSysctl('net.ipv4.ip_forward');
  if (forward !== '1') {
    if (sysctl('net.ipv4.ip_forward', '1'))
      logger?.info({ bridge, was: forward }, 'enabled net.ipv4.ip_forward for NAT of the bridge (a host-wide setting; it stays on)');
    else logger?.warn({ bridge }, `nat: ${forwardingProblem()}`);
  }
  // The host's loopback reaches published ports only if the kernel routes 127/8 out of the bridge.
  if (!sysctl(`net.ipv4.conf.${bridge}.route_localnet`, '1'))
    logger?.warn({ bridge }, 'cannot set route_localnet: published ports are not reachable at 127.0.0.1');
  readyTables.add(key);
}

/** osvirt's tables whose bridge no longer exists (its daemon's bridge was removed): they go too. */
async function removeStaleTables(logger?: Logger): Promise<void> {
  const stale: string[] = [];
  for (const m of (await nftList('list', 'tables', 'ip')).matchAll(/^table ip (\S+)$/gm)) {
    const t = m[1]!;
    if (t.startsWith(TABLE_PREFIX) && !existsSync(`/sys/class/net/${t.slice(TABLE_PREFIX.length)}`)) stale.push(t);
  }
  for (const t of stale) {
    // Another daemon may be removing it at the same time: that is fine.
    await nftScript(`delete table ip ${t}\n`).then(
      () => logger?.info({ table: t }, 'removed the nftables table of a bridge that is gone'),
      () => undefined,
    );
  }
}

export async function removeNat(bridge: string): Promise<void> {
  for (const k of readyTables) if (k.startsWith(`${bridge}#`)) readyTables.delete(k);
  const nft = nftPath();
  if (nft) await run(nft, ['delete', 'table', 'ip', natTable(bridge)]).catch(() => undefined);
}

/** Published ports as `host_ip:host_port->container_port/proto`, as `osvirt info` shows them. */
export function formatPort(p: PortMapping): string {
  return `${p.hostIp || '0.0.0.0'}:${p.hostPort}->${p.containerPort}/${p.protocol || 'tcp'}`;
}

/** A published port as osvirt's rules say it: who publishes which host address, port and protocol. */
export interface PortRule {
  table: string;
  chain: string;
  /** '' for every host address. */
  hostIp: string;
  hostPort: number;
  protocol: string;
  /** The DNAT target's address. */
  address: string;
  container: string;
  handle: number;
}

/** osvirt's port rules in an `nft -a list ...` listing, osvirt's tables only. */
export function parsePortRules(listing: string): PortRule[] {
  const out: PortRule[] = [];
  let table = '';
  let chain = '';
  for (const line of listing.split('\n')) {
    const t = /^table ip (\S+) \{/.exec(line);
    if (t) table = t[1]!;
    const c = /^\s*chain (\S+) \{/.exec(line);
    if (c) chain = c[1]!;
    if (!table.startsWith(TABLE_PREFIX)) continue;
    const r = /^\s*(?:ip daddr (\S+)|fib daddr type local) (tcp|udp) dport (\d+) dnat to ([\d.]+):\d+ comment "osvirt:([a-z0-9-]+)"(?: # handle (\d+))?/.exec(
      line,
    );
    if (r) out.push({ table, chain, hostIp: r[1] ?? '', protocol: r[2]!, hostPort: Number(r[3]), address: r[4]!, container: r[5]!, handle: Number(r[6] ?? 0) });
  }
  return out;
}

/** Do two host bindings overlap? An empty address is every host address. */
function overlaps(a: { hostIp: string; hostPort: number; protocol: string }, b: { hostIp: string; hostPort: number; protocol: string }): boolean {
  return a.hostPort === b.hostPort && (a.protocol || 'tcp') === (b.protocol || 'tcp') && (!a.hostIp || !b.hostIp || a.hostIp === b.hostIp);
}

/**
 * Sockets of the host's own network stack bound to a port: TCP listeners and
 * unconnected UDP sockets, from /proc/net (the daemon's network namespace is
 * the host's). Addresses are IPv4 dotted quads; '' is a wildcard (0.0.0.0 or
 * ::, which takes IPv4 too unless IPV6_V6ONLY).
 */
export function hostSockets(protocol: string, port: number): string[] {
  const out: string[] = [];
  for (const v6 of [false, true]) {
    let text = '';
    try {
      text = readFileSync(`/proc/net/${protocol}${v6 ? '6' : ''}`, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length < 4) continue;
      const [addr, p] = (f[1] ?? '').split(':');
      const [remote] = (f[2] ?? '').split(':');
      if (parseInt(p ?? '', 16) !== port) continue;
      if (protocol === 'tcp' ? f[3] !== '0A' : !/^0+$/.test(remote ?? '')) continue; // LISTEN / not connected
      if (/^0+$/.test(addr ?? '')) out.push('');
      else if (!v6) out.push(hexToIpv4(addr!));
      else if (/^0{16}FFFF0000/i.test(addr!)) out.push(hexToIpv4(addr!.slice(24)));
      // another IPv6 address: publishes nothing osvirt's IPv4 rules could take over
    }
  }
  return out;
}

/** /proc/net's little-endian hex address. */
function hexToIpv4(h: string): string {
  return [6, 4, 2, 0].map((i) => parseInt(h.slice(i, i + 2), 16)).join('.');
}

/** Publishing is one check-then-add: serialized in this process, so two starts cannot both take a port. */
const publishing = new KeyedMutex();

/**
 * DNAT rules for a container's published ports, after checking that no
 * other container (of this daemon or another, whatever its bridge) publishes
 * one of them and no process of the host listens on it: the rule would take
 * its traffic away. FAILED_PRECONDITION naming the holder otherwise.
 */
export async function publishPorts(container: string, bridge: string, address: string, ports: PortMapping[]): Promise<void> {
  if (!ports.length) return;
  const table = natTable(bridge);
  // 0.0.0.0 is every host address, as an empty host_ip.
  ports = ports.map((p) => (p.hostIp === '0.0.0.0' ? { ...p, hostIp: '' } : p));
  const local = new Set(Object.values(networkInterfaces()).flatMap((l) => (l ?? []).map((a) => a.address)));
  await publishing.run('ports', async () => {
    const taken = parsePortRules(await nftList('list', 'ruleset', 'ip')).filter((r) => r.container !== container || r.table !== table);
    for (const [i, p] of ports.entries()) {
      const proto = p.protocol || 'tcp';
      // A rule for a foreign address would take over traffic the host only routes (a container's to 8.8.8.8, say).
      if (p.hostIp && !local.has(p.hostIp)) {
        throw new OsvirtError(
          'FAILED_PRECONDITION',
          'HOST_IP_NOT_LOCAL',
          `spec.ports[${i}].host_ip: ${p.hostIp} is not an address of this host (see ip -4 addr)`,
          [],
          { container },
        );
      }
      const other = taken.find((r) => overlaps(r, { hostIp: p.hostIp, hostPort: p.hostPort, protocol: proto }));
      if (other) {
        const whose =
          other.table === table
            ? `container "${other.container}"`
            : `container "${other.container}" of the daemon on bridge ${other.table.slice(TABLE_PREFIX.length)}`;
        throw new OsvirtError(
          'FAILED_PRECONDITION',
          'PORT_IN_USE',
          `spec.ports[${i}]: ${formatPort(p)} is already published by ${whose}; stop it or choose another host_port`,
          [],
          { container, holder: other.container },
        );
      }
      const listener = hostSockets(proto, p.hostPort).find((a) => !a || !p.hostIp || a === p.hostIp);
      if (listener !== undefined) {
        throw new OsvirtError(
          'FAILED_PRECONDITION',
          'PORT_IN_USE',
          `spec.ports[${i}]: ${formatPort(p)}: a process of the host ${proto === 'tcp' ? 'listens' : 'is bound'} on ${listener || '*'}:${p.hostPort}/${proto} (see ss -lnp); choose another host_port`,
          [],
          { container },
        );
      }
    }
    const lines: string[] = [];
    for (const p of ports) {
      const proto = p.protocol || 'tcp';
      const dst = p.hostIp ? `ip daddr ${p.hostIp}` : 'fib daddr type local';
      const rule = `${dst} ${proto} dport ${p.hostPort} dnat to ${address}:${p.containerPort} comment "osvirt:${container}"`;
      lines.push(`add rule ip ${table} prerouting ${rule}`, `add rule ip ${table} output ${rule}`);
    }
    await nftScript(lines.join('\n') + '\n');
  });
}

/** Deletes the given rules by handle, in one transaction. */
async function deleteRules(rules: PortRule[]): Promise<void> {
  if (rules.length) await nftScript(rules.map((r) => `delete rule ip ${r.table} ${r.chain} handle ${r.handle}`).join('\n') + '\n');
}

/** Removes every rule of this container from the bridge's table. Idempotent. */
export async function unpublishPorts(container: string, bridge: string): Promise<void> {
  if (!nftPath()) return;
  await deleteRules(parsePortRules(await nftList('-a', 'list', 'table', 'ip', natTable(bridge))).filter((r) => r.container === container));
}

/**
 * Removes the port rules whose container is gone: `live` says whether a
 * container still publishes to that address. Returns their names, and the
 * containers whose rules are there.
 */
export async function sweepPorts(
  bridge: string,
  live: (container: string, address: string) => Promise<boolean>,
): Promise<{ removed: string[]; present: Set<string> }> {
  if (!nftPath()) return { removed: [], present: new Set() };
  const rules = parsePortRules(await nftList('-a', 'list', 'table', 'ip', natTable(bridge)));
  const stale: PortRule[] = [];
  for (const r of rules) if (!(await live(r.container, r.address))) stale.push(r);
  await deleteRules(stale);
  return { removed: [...new Set(stale.map((r) => r.container))], present: new Set(rules.filter((r) => !stale.includes(r)).map((r) => r.container)) };
}
