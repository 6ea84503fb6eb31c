// NAT for the daemon's bridge and published ports, in nftables, in a table
// of osvirt's own per bridge (`ip osvirt-<bridge>`), so the host's rules stay
// untouched (lxc-net and Podman's netavark do the same with theirs):
// - masquerade for the bridge's subnet leaving by any other interface;
// - DNAT of published ports, for traffic arriving from outside (prerouting)
//   and from the host itself (output), loopback included: that needs
//   route_localnet on the bridge and a masquerade of 127.0.0.0/8 sources.
// Each port rule carries the comment "osvirt:<container>" and is deleted by
// its handle when the container stops.
import { execFile, spawn } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { promisify } from 'node:util';
import type { PortMapping } from '../../src/gen/osvirt/v1/container';
import { missingFeature } from '../../src/core/errors';

const run = promisify(execFile);
const NFT = ['/usr/sbin/nft', '/sbin/nft', '/usr/bin/nft'];

export function nftPath(): string | undefined {
  return NFT.find((p) => existsSync(p));
}

export function natTable(bridge: string): string {
  return `osvirt-${bridge}`;
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

function sysctl(key: string, value: string): void {
  try {
    writeFileSync(`/proc/sys/${key.replace(/\./g, '/')}`, value);
  } catch {
    // a read-only /proc/sys (a nested daemon): the rule set still loads, forwarding may not work
  }
}

/** The bridge's table: masquerade for its subnet, and the (empty) port chains. Idempotent. */
/** Bridges whose table this process has seen or made: a start on them costs no nft run (about 5 ms each). */
const readyTables = new Set<string>();

export async function ensureNat(bridge: string, subnet: string): Promise<void> {
  const table = natTable(bridge);
  if (readyTables.has(table)) return;
  const nft = nftPath();
  if (!nft) return;
  const exists = await run(nft, ['list', 'table', 'ip', table]).then(() => true, () => false);
  readyTables.add(table);
  sysctl('net.ipv4.ip_forward', '1');
  sysctl(`net.ipv4.conf.${bridge}.route_localnet`, '1');
  if (exists) return;
  await nftScript(`table ip ${table} {
  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
  }
  chain output {
    type nat hook output priority -100; policy accept;
  }
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr ${subnet} ip daddr != ${subnet} oifname != "${bridge}" masquerade comment "osvirt: ${bridge} outbound"
    ip saddr 127.0.0.0/8 oifname "${bridge}" masquerade comment "osvirt: published ports from the host's loopback"
  }
  chain forward {
    type filter hook forward priority filter; policy accept;
    iifname "${bridge}" accept
    oifname "${bridge}" ct state established,related accept
    oifname "${bridge}" ct status dnat accept
  }
}
`);
}

export async function removeNat(bridge: string): Promise<void> {
  readyTables.delete(natTable(bridge));
  const nft = nftPath();
  if (nft) await run(nft, ['delete', 'table', 'ip', natTable(bridge)]).catch(() => undefined);
}

/** Published ports as `host_ip:host_port->container_port/proto`, as `osvirt info` shows them. */
export function formatPort(p: PortMapping): string {
  return `${p.hostIp || '0.0.0.0'}:${p.hostPort}->${p.containerPort}/${p.protocol || 'tcp'}`;
}

/** DNAT rules for a container's published ports. */
export async function publishPorts(container: string, bridge: string, address: string, ports: PortMapping[]): Promise<void> {
  if (!ports.length) return;
  const table = natTable(bridge);
  const lines: string[] = [];
  for (const p of ports) {
    const proto = p.protocol || 'tcp';
    const dst = p.hostIp ? `ip daddr ${p.hostIp}` : 'fib daddr type local';
    const rule = `${dst} ${proto} dport ${p.hostPort} dnat to ${address}:${p.containerPort} comment "osvirt:${container}"`;
    lines.push(`add rule ip ${table} prerouting ${rule}`, `add rule ip ${table} output ${rule}`);
  }
  await nftScript(lines.join('\n') + '\n');
}

/** Removes every rule of this container from the bridge's table. Idempotent. */
export async function unpublishPorts(container: string, bridge: string): Promise<void> {
  const nft = nftPath();
  if (!nft) return;
  const table = natTable(bridge);
  let listing: string;
  try {
    listing = (await run(nft, ['-a', 'list', 'table', 'ip', table])).stdout;
  } catch {
    return;
  }
  const deletes: string[] = [];
  let chain = '';
  for (const line of listing.split('\n')) {
    const c = /^\s*chain (\S+) \{/.exec(line);
    if (c) chain = c[1]!;
    const h = /comment "osvirt:([a-z0-9-]+)".*# handle (\d+)/.exec(line);
    if (h && h[1] === container) deletes.push(`delete rule ip ${table} ${chain} handle ${h[2]}`);
  }
  if (deletes.length) await nftScript(deletes.join('\n') + '\n');
}

/**
 * The container's resolv.conf: the host's name servers and search domains,
 * without loopback servers (127.0.0.53 and the like are the host's own
 * stub resolver, unreachable from the container's network namespace).
 */
export function resolvConf(hostResolv: string): string | undefined {
  const servers: string[] = [];
  const other: string[] = [];
  for (const line of hostResolv.split('\n')) {
    const m = /^\s*nameserver\s+(\S+)/.exec(line);
    if (m) {
      if (!/^127\.|^::1$/.test(m[1]!)) servers.push(m[1]!);
    } else if (/^\s*(search|domain|options)\s/.test(line)) other.push(line.trim());
  }
  if (!servers.length) return undefined;
  return `# written by osvirt from the host's /etc/resolv.conf\n${servers.map((s) => `nameserver ${s}`).join('\n')}\n${other.join('\n')}${other.length ? '\n' : ''}`;
}
