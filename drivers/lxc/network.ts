// Container networking with iproute2: a bridge osvirt owns with addresses
// from a subnet, veth pairs onto it, macvlan on a host parent, 802.1q VLANs
// where the kernel has them. Everything put on the host is named from the
// container so it can be found and removed again.
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { promises as fs, existsSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { gunzipSync } from 'node:zlib';
import { promisify } from 'node:util';
import { MacvlanMode, type BridgeNetwork, type Network } from '../../src/gen/osvirt/v1/container';
import { writeFileAtomic } from '../../src/core/atomic-file';
import { missingFeature, OsvirtError } from '../../src/core/errors';
import { KeyedMutex } from '../../src/core/keyed-mutex';

const execFileP = promisify(execFile);

export async function ip(...args: string[]): Promise<string> {
  try {
    return (await execFileP('ip', args)).stdout;
  } catch (e) {
    const err = e as { stderr?: string; message: string };
    throw new Error(`ip ${args.join(' ')}: ${(err.stderr ?? err.message).trim()}`);
  }
}

/** Run `ip` inside the network namespace of a process. */
export async function ipIn(pid: number, ...args: string[]): Promise<string> {
  try {
    return (await execFileP('nsenter', [`--net=/proc/${pid}/ns/net`, '--', 'ip', ...args])).stdout;
  } catch (e) {
    const err = e as { stderr?: string; message: string };
    throw new Error(`ip ${args.join(' ')} (in pid ${pid}'s netns): ${(err.stderr ?? err.message).trim()}`);
  }
}

export function linkExists(name: string): boolean {
  return existsSync(`/sys/class/net/${name}`);
}

let kernelConfig: string | null | undefined;

/** y/m/undefined for a CONFIG_ option, from /proc/config.gz when readable. */
export function kernelOption(opt: string): string | undefined | null {
  if (kernelConfig === undefined) {
    try {
      kernelConfig = gunzipSync(readFileSync('/proc/config.gz')).toString('utf8');
    } catch {
      kernelConfig = null;
    }
  }
  if (kernelConfig === null) return null;
  const m = new RegExp(`^${opt}=(.*)$`, 'm').exec(kernelConfig);
  return m ? m[1] : undefined;
}

/** Is a kernel feature there? null when the config cannot be read (then try it). */
export function hasKernelFeature(opt: string, sysPath?: string): boolean | null {
  const v = kernelOption(opt);
  if (v === 'y') return true;
  if (v === 'm') return sysPath ? existsSync(sysPath) : null;
  if (v === null) return null;
  return false;
}

function ipv4ToInt(a: string): number {
  return a.split('.').reduce((acc, o) => acc * 256 + Number(o), 0);
}

function intToIpv4(n: number): string {
  return [24, 16, 8, 0].map((s) => Math.floor(n / 2 ** s) % 256).join('.');
}

export interface BridgeConfig {
  name: string;
  /** CIDR of the bridge's subnet, the bridge holding the first address. */
  subnet: string;
}

export const DEFAULT_BRIDGE: BridgeConfig = { name: 'osvirt0', subnet: '10.88.0.0/16' };

/**
 * Short, stable host interface names (IFNAMSIZ is 16 with the NUL). The
 * scope (the daemon's address table file) keeps two daemons on one host,
 * e.g. tests next to a real one, from naming their interfaces alike.
 */
export function hostIfName(prefix: string, container: string, scope: string): string {
  return `${prefix}${createHash('sha1').update(`${scope}\0${container}`).digest('hex').slice(0, 10)}`;
}

/**
 * Addresses handed out on osvirt bridges, kept in a file so they survive daemon
 * restarts. Written atomically but not fsynced, like dnsmasq's lease file: after
 * a power loss a container may get another address on its next start unless its
 * spec fixes one (network.bridge.address).
 */
/** Shared by every Ipam in the process: drivers built on lxc share one table file. */
const ipamMutex = new KeyedMutex();

export class Ipam {
  private readonly mutex = ipamMutex;

  constructor(
    readonly file: string,
    private readonly bridge: BridgeConfig,
  ) {}

  /** Host interface name for a container's device, unique to this daemon. */
  ifName(prefix: string, container: string): string {
    return hostIfName(prefix, container, this.file);
  }

  private async load(): Promise<Record<string, string>> {
    try {
      return JSON.parse(await fs.readFile(this.file, 'utf8')) as Record<string, string>;
    } catch {
      return {};
    }
  }

  gateway(): { address: string; prefix: number } {
    const [base, prefix] = this.bridge.subnet.split('/');
    return { address: intToIpv4(ipv4ToInt(base ?? '') + 1), prefix: Number(prefix) };
  }

  /** The container's address, allocating the lowest free one the first time. */
  allocate(container: string): Promise<string> {
    return this.mutex.run(this.file, async () => {
      const table = await this.load();
      const mine = table[container];
      if (mine) return mine;
      const [base, prefixS] = this.bridge.subnet.split('/');
      const prefix = Number(prefixS);
      const first = ipv4ToInt(base ?? '') + 2;
      const last = ipv4ToInt(base ?? '') + 2 ** (32 - prefix) - 2;
      const used = new Set(Object.values(table).map((a) => ipv4ToInt(a.split('/')[0] ?? '')));
      for (let n = first; n <= last; n++) {
        if (used.has(n)) continue;
        const addr = `${intToIpv4(n)}/${prefix}`;
        table[container] = addr;
        await writeFileAtomic(this.file, JSON.stringify(table, null, 2) + '\n', 0o644, false);
        return addr;
      }
      throw new OsvirtError('RESOURCE_EXHAUSTED', 'SUBNET_EXHAUSTED', `no free address left in ${this.bridge.subnet}`);
    });
  }

  /** Record an address the spec chose, so it is not handed to another container. */
  reserve(container: string, addr: string): Promise<void> {
    return this.mutex.run(this.file, async () => {
      const table = await this.load();
      const taken = Object.entries(table).find(([k, v]) => k !== container && v.split('/')[0] === addr.split('/')[0]);
      if (taken) throw new OsvirtError('ALREADY_EXISTS', 'ADDRESS_IN_USE', `address ${addr} is already used by container "${taken[0]}"`);
      table[container] = addr;
      await writeFileAtomic(this.file, JSON.stringify(table, null, 2) + '\n', 0o644, false);
    });
  }

  release(container: string): Promise<void> {
    return this.mutex.run(this.file, async () => {
      const table = await this.load();
      if (!(container in table)) return;
      delete table[container];
      await writeFileAtomic(this.file, JSON.stringify(table, null, 2) + '\n', 0o644, false);
    });
  }
}

/** Bridges this process has set up and seen since: checked again only if they vanish. */
const readyBridges = new Set<string>();

/** Create the bridge with its gateway address if it is not there yet. */
export async function ensureBridge(name: string, gateway: { address: string; prefix: number } | undefined): Promise<void> {
  const key = `${name}/${gateway?.address ?? ''}`;
  if (readyBridges.has(key) && linkExists(name)) return;
  if (!linkExists(name)) {
    try {
      await ip('link', 'add', name, 'type', 'bridge');
    } catch (e) {
      if (!linkExists(name)) throw e; // lost a race with a concurrent start: fine
    }
  }
  if (gateway) {
    const have = await ip('-4', '-o', 'addr', 'show', 'dev', name);
    if (!have.includes(` ${gateway.address}/`))
      await ip('addr', 'add', `${gateway.address}/${gateway.prefix}`, 'dev', name).catch((e: Error) => {
        if (!/File exists/.test(e.message)) throw e;
      });
  }
  await ip('link', 'set', name, 'up');
  readyBridges.add(key);
}

/** What was put on the host for a running container, to undo on stop. */
export interface NetworkRuntime {
  hostInterfaces: string[];
  address?: string | undefined;
  interfaceName?: string | undefined;
  bridge?: string | undefined;
  /** The bridge whose nftables table holds this run's published ports. */
  publishedOn?: string | undefined;
}

/** Check a network spec against this kernel before anything is created. */
export function checkNetworkSupport(n: Network | undefined, hostLinkExists: (name: string) => boolean = linkExists): void {
  const mode = n?.mode;
  if (mode?.$case === 'vlan') {
    const has = hasKernelFeature('CONFIG_VLAN_8021Q', '/proc/net/vlan');
    if (has === false)
      throw missingFeature(
        '802.1q VLAN (CONFIG_VLAN_8021Q)',
        'this kernel was built without it, so network.vlan cannot work here; use network.macvlan or network.bridge',
      );
    if (!hostLinkExists(mode.value.parent))
      throw new OsvirtError(
        'FAILED_PRECONDITION',
        'PARENT_INTERFACE_MISSING',
        `network.vlan.parent: host interface "${mode.value.parent}" does not exist`,
        [],
        { interface: mode.value.parent },
      );
  }
  if (mode?.$case === 'macvlan') {
    if (hasKernelFeature('CONFIG_MACVLAN') === false) throw missingFeature('macvlan (CONFIG_MACVLAN)', 'this kernel was built without it');
    if (!hostLinkExists(mode.value.parent))
      throw new OsvirtError(
        'FAILED_PRECONDITION',
        'PARENT_INTERFACE_MISSING',
        `network.macvlan.parent: host interface "${mode.value.parent}" does not exist`,
        [],
        { interface: mode.value.parent },
      );
  }
}

const MACVLAN_MODES: Record<number, string> = {
  [MacvlanMode.MACVLAN_MODE_UNSPECIFIED]: 'bridge',
  [MacvlanMode.MACVLAN_MODE_BRIDGE]: 'bridge',
  [MacvlanMode.MACVLAN_MODE_PRIVATE]: 'private',
  [MacvlanMode.MACVLAN_MODE_VEPA]: 'vepa',
  [MacvlanMode.MACVLAN_MODE_PASSTHRU]: 'passthru',
};

/** Run several `ip` commands in one process (`ip -batch`), optionally inside pid's netns: one fork instead of many. */
export async function ipBatch(lines: string[], pid?: number): Promise<void> {
  if (lines.length === 0) return;
  const argv = pid ? ['nsenter', `--net=/proc/${pid}/ns/net`, '--', 'ip', '-batch', '-'] : ['ip', '-batch', '-'];
  await new Promise<void>((resolve, reject) => {
    const child = execFile(argv[0]!, argv.slice(1), (err, _out, stderr) => {
      if (err) reject(new Error(`ip -batch${pid ? ` (in pid ${pid}'s netns)` : ''}: ${(stderr || err.message).trim()} [${lines.join('; ')}]`));
      else resolve();
    });
    child.stdin!.end(lines.join('\n') + '\n');
  });
}

/** A veth pair on a bridge, decided before the container exists. */
export interface VethPlan {
  hostEnd: string;
  ifname: string;
  bridge: string;
  address: string;
  gateway?: string | undefined;
  mtu: number;
  mac: string;
}

/**
 * Everything a bridged veth needs from the host before the container exists:
 * the bridge, the address lease and free host interface name. The pair itself
 * is made by the helper (`--veth`, netlink) or, on restore, by CRIU (an
 * external veth, drivers/lxc/checkpoint.ts).
 */
export async function planVeth(container: string, b: BridgeNetwork, ipam: Ipam, bridgeDefault: BridgeConfig): Promise<VethPlan> {
  const bridge = b.bridge || bridgeDefault.name;
  const own = bridge === bridgeDefault.name;
  const gw = own ? ipam.gateway() : undefined;
  await ensureBridge(bridge, gw);
  const address = b.address || (own ? await ipam.allocate(container) : '');
  const hostEnd = ipam.ifName('ovh', container);
  if (linkExists(hostEnd)) await ip('link', 'del', hostEnd).catch(() => undefined);
  return { hostEnd, ifname: b.interfaceName || 'eth0', bridge, address, gateway: gw && address ? gw.address : undefined, mtu: b.mtu, mac: b.macAddress };
}

/** The helper's --veth options for a plan. */
export function vethArgs(p: VethPlan): string[] {
  const a = ['--veth', `${p.hostEnd}:${p.ifname}`, '--veth-bridge', p.bridge];
  if (p.mtu) a.push('--veth-mtu', String(p.mtu));
  if (p.mac) a.push('--veth-mac', p.mac);
  if (p.address) a.push('--veth-address', p.address);
  if (p.gateway) a.push('--veth-gateway', p.gateway);
  return a;
}

/** What a planned veth leaves on the host, for teardownNetwork. */
export function vethRuntime(p: VethPlan): NetworkRuntime {
  return { hostInterfaces: [p.hostEnd], address: p.address, interfaceName: p.ifname, bridge: p.bridge };
}

/**
 * Wire the network namespace of `pid` (the not-yet-running init) for the
 * modes the helper does not do itself: macvlan and vlan (a bridged veth is
 * the helper's, see planVeth; loopback too, --lo-up). Called between the
 * helper's "created" and "go". Commands are batched: one `ip` on the host
 * side and one inside.
 */
export async function setupNetwork(container: string, pid: number, n: Network | undefined, ipam: Ipam): Promise<NetworkRuntime> {
  const mode = n?.mode;
  const rt: NetworkRuntime = { hostInterfaces: [] };
  // Loopback is brought up by the helper itself (--lo-up): "none" needs no ip at all.
  if (!mode || mode.$case === 'host' || mode.$case === 'container' || mode.$case === 'none' || mode.$case === 'bridge') return rt;
  const inside: string[] = [];
  try {
    if (mode.$case === 'macvlan' || mode.$case === 'vlan') {
      const m = mode.value;
      const tmp = ipam.ifName(mode.$case === 'macvlan' ? 'ovm' : 'ovv', container);
      const ifname = m.interfaceName || 'eth0';
      if (linkExists(tmp)) await ip('link', 'del', tmp).catch(() => undefined);
      const add =
        mode.$case === 'macvlan'
          ? `link add link ${m.parent} name ${tmp} type macvlan mode ${MACVLAN_MODES[mode.value.mode] ?? 'bridge'}`
          : `link add link ${m.parent} name ${tmp} type vlan id ${mode.value.vlanId}`;
      rt.hostInterfaces.push(tmp);
      try {
        await ipBatch([add, `link set ${tmp} netns ${pid}`]);
      } catch (e) {
        if (mode.$case === 'vlan') throw missingFeature('802.1q VLAN (CONFIG_VLAN_8021Q)', (e as Error).message);
        throw e;
      }
      rt.hostInterfaces = [];
      inside.push(`link set ${tmp} name ${ifname}`);
      if (m.address) inside.push(`addr add ${m.address} dev ${ifname}`);
      inside.push(`link set ${ifname} up`);
      Object.assign(rt, { address: m.address, interfaceName: ifname });
    }
    await ipBatch(inside, pid);
  } catch (e) {
    await teardownNetwork(rt);
    throw e;
  }
  return rt;
}

/** Remove what setupNetwork put on the host (the netns side dies with the container). */
export async function teardownNetwork(rt: NetworkRuntime | undefined): Promise<void> {
  for (const name of rt?.hostInterfaces ?? []) {
    // When the container's netns is being torn down the kernel removes the
    // pair asynchronously and a delete can race it: retry until it is gone.
    for (let i = 0; i < 100 && linkExists(name); i++) {
      await ip('link', 'del', name).catch(() => undefined);
      if (linkExists(name)) await new Promise((r) => setTimeout(r, 5));
    }
  }
}

/** Interface counters inside a container's netns, from /proc/<pid>/net/dev. */
export async function interfaceStats(pid: number): Promise<{ name: string; rxBytes: bigint; txBytes: bigint; rxPackets: bigint; txPackets: bigint }[]> {
  const text = await fs.readFile(path.join('/proc', String(pid), 'net/dev'), 'utf8').catch(() => '');
  const out = [];
  for (const line of text.split('\n').slice(2)) {
    const m = /^\s*([^:]+):\s*(.*)$/.exec(line);
    if (!m || !m[1] || m[1] === 'lo') continue;
    const f = (m[2] ?? '')
      .trim()
      .split(/\s+/)
      .map((x) => (/^\d+$/.test(x) ? BigInt(x) : 0n));
    out.push({ name: m[1], rxBytes: f[0] ?? 0n, rxPackets: f[1] ?? 0n, txBytes: f[8] ?? 0n, txPackets: f[9] ?? 0n });
  }
  return out;
}
