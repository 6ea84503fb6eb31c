// A guest's network context on the host's own stack: its addresses on host
// interfaces (interfaces/<n>/{ip,dev,prefix}, added at start and removed at
// stop, as util-vserver's enableInterfaces/disableInterfaces do) and the
// cgroup BPF policy that restricts its sockets to them (drivers/common/ipfilter).
import * as net from 'node:net';
import type { IpFilterPolicy } from '../common/ipfilter';
import { formatIpv6, ipv6Bytes } from '../common/ipfilter/policy';
import { ip } from '../lxc/network';
import type { VServerOptions } from '../../src/gen/osvirt/v1/vserver';
import { activeInterfaces, boundingSet, interfaceDev, interfacePrefix } from './options';

/** An address osvirt puts on a host interface for a guest. */
export interface HostAddress {
  ip: string;
  prefix: number;
  dev: string;
  label: string;
}

function canonical(a: string): string {
  return net.isIPv6(a) ? formatIpv6(ipv6Bytes(a)) : a;
}

/** The filter policy: only the guest's addresses, the first of each family primary. */
export function policyOf(o: VServerOptions): IpFilterPolicy {
  const ifs = activeInterfaces(o);
  const v4 = ifs.filter((i) => net.isIPv4(i.ip)).map((i) => i.ip);
  const v6 = ifs.filter((i) => net.isIPv6(i.ip)).map((i) => canonical(i.ip));
  return {
    ipv4: v4,
    ipv4Mode: 'new',
    ipv6: v6,
    ipv6Mode: v6.length ? 'new' : 'disable',
    singleIp: !!o.network?.singleIp,
    loopbackRemap: !!o.network?.lbackRemap,
    reservedPorts: boundingSet(o).includes('net_bind_service'),
  };
}

/** The addresses to add to host interfaces (active, not nodev). */
export function hostAddresses(o: VServerOptions): HostAddress[] {
  return activeInterfaces(o)
    .filter((i) => !i.nodev)
    .map((i) => {
      const dev = interfaceDev(o, i);
      return { ip: canonical(i.ip), prefix: interfacePrefix(o, i), dev, label: i.label ? `${dev}:${i.label}` : '' };
    });
}

/** The addresses that must already be on the host (nodev). */
export function existingAddresses(o: VServerOptions): string[] {
  return activeInterfaces(o)
    .filter((i) => i.nodev)
    .map((i) => canonical(i.ip));
}

interface IpJson {
  ifname: string;
  addr_info?: { local?: string; prefixlen?: number }[];
}

/** Where the host has an address now: the interface name, or undefined. */
export async function whereIs(address: string): Promise<string | undefined> {
  const want = canonical(address);
  const list = JSON.parse((await ip('-j', 'addr', 'show')) || '[]') as IpJson[];
  for (const l of list) for (const a of l.addr_info ?? []) if (a.local && canonical(a.local) === want) return l.ifname;
  return undefined;
}

export async function addHostAddress(a: HostAddress): Promise<void> {
  await ip('addr', 'add', `${a.ip}/${a.prefix}`, 'dev', a.dev, ...(a.label ? ['label', a.label] : []));
}

/** Remove an address osvirt added; gone already is fine. */
export async function removeHostAddress(a: HostAddress): Promise<void> {
  if ((await whereIs(a.ip)) !== a.dev) return;
  await ip('addr', 'del', `${a.ip}/${a.prefix}`, 'dev', a.dev);
}
