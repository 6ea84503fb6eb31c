// jail(8) parameters (JailOptions) to Linux: one plan per jail run that says
// which capabilities, seccomp rules, namespaces, device nodes, mounts and
// limits the lxc machinery must build, and which IP policy, host addresses
// and exec.* commands the jail driver adds around it. docs/jail.md is the
// human version of this file; keep them in step.
import { promises as fs } from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { type ContainerSpec, type Mount, MountType, type Resources, type Rlimit, RlimitType } from '../../src/gen/osvirt/v1/container';
import { JailOptions, JailSysMode } from '../../src/gen/osvirt/v1/jail';
import { CAPABILITY_NAMES, type CapabilityName } from '../../src/core/capabilities';
import { invalidArgument, OsvirtError } from '../../src/core/errors';
import { checkRange, MAX_CPU_QUOTA_US, MAX_MEMORY_BYTES } from '../../src/core/validate';
import type { IpFilterPolicy, IpMode } from '../common/ipfilter';

export type SysMode = 'new' | 'inherit' | 'disable';

/** Where a jail's pid 1 (a static build of the helper) is bound inside the jail. */
export const INIT_IN_JAIL = '/dev/.osvirt-init';

/** /proc files that expose or change the host: hidden, or made read-only. */
export const MASKED_PATHS = [
  '/proc/kcore',
  '/proc/keys',
  '/proc/kallsyms',
  '/proc/timer_list',
  '/proc/sched_debug',
  '/proc/latency_stats',
  '/proc/acpi',
  '/proc/scsi',
];
export const READONLY_PATHS = ['/proc/sys', '/proc/sysrq-trigger', '/proc/irq', '/proc/bus', '/proc/fs'];

/** devfs rulesets of FreeBSD's /etc/defaults/devfs.rules that stand alone, by number and name. */
export const DEVFS_RULESETS: Record<number, { name: string; nodes: string[] }> = {
  1: { name: 'devfsrules_hide_all', nodes: [] },
  // devfsrules_unhide_basic + devfsrules_unhide_login (crypto and the legacy ptyXX/ttyXX have no Linux node).
  4: { name: 'devfsrules_jail', nodes: ['null', 'zero', 'random', 'urandom', 'ptmx', 'fd'] },
  5: { name: 'devfsrules_jail_vnet', nodes: ['null', 'zero', 'random', 'urandom', 'ptmx', 'fd'] },
};

/** Namespace flags of clone(2) (CLONE_NEWNS..CLONE_NEWNET; CLONE_NEWTIME shares the exit-signal byte). */
const CLONE_NEW_FLAGS = 0x7e020000;
const AF_PACKET = 17;
/** AF_UNIX, AF_INET, AF_INET6, AF_NETLINK (FreeBSD: local, IPv4, IPv6, route). */
const JAILED_FAMILIES = [1, 2, 10, 16];

/** What root in any jail keeps: the privileges FreeBSD's prison_priv_check grants jailed root. */
const BASE_CAPS: CapabilityName[] = [
  'chown',
  'dac_override',
  'fowner',
  'fsetid',
  'kill',
  'setgid',
  'setuid',
  'setpcap',
  'sys_chroot',
  'sys_ptrace',
  'sys_nice',
  'sys_resource',
  'lease',
  'setfcap',
  'net_broadcast',
];

export interface JailAddress {
  family: 4 | 6;
  address: string;
  prefix: number;
  /** Host interface the address is added to. */
  iface: string;
}

export interface JailPlan {
  options: JailOptions;
  vnet: boolean;
  host: 'new' | 'inherit';
  hostname: string;
  domainname: string;
  ip4: SysMode;
  ip6: SysMode;
  addresses: JailAddress[];
  persist: boolean;
  securelevel: number;
  enforceStatfs: number;
  childrenMax: number;
  devNodes: string[];
  ipc: 'new' | 'host';
  /** Namespaces owned by a root-owned user namespace (root inside administers them without capabilities). */
  rootOwned: ('uts' | 'mnt')[];
  caps: CapabilityName[];
  seccomp: string[];
  rlimits: Rlimit[];
  resources: Resources | undefined;
  mounts: Mount[];
  ipPolicy: IpFilterPolicy | undefined;
  execTimeoutMs: number;
  /**
   * A jail whose root is an image and that names no exec_start or command runs the image's
   * process (Entrypoint + Cmd, WorkingDir, User, or the spec's overrides of them) as its
   * command, in the background: the jail lives as long as it runs (without persist).
   */
  imageCommand: { args: string[]; cwd: string; user: { uid: number; gid: number; additionalGids: number[] } | undefined } | undefined;
}

const HOSTNAME_RE = /^(?=.{1,64}$)[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$/;
const IFNAME_RE = /^[A-Za-z0-9_.-]{1,15}$/;
const F = 'spec.jail';

function mode(m: JailSysMode, dflt: SysMode): SysMode {
  switch (m) {
    case JailSysMode.JAIL_SYS_MODE_NEW:
      return 'new';
    case JailSysMode.JAIL_SYS_MODE_INHERIT:
      return 'inherit';
    case JailSysMode.JAIL_SYS_MODE_DISABLE:
      return 'disable';
    default:
      return dflt;
  }
}

function unsupported(param: string, why: string): OsvirtError {
  return new OsvirtError('FAILED_PRECONDITION', 'JAIL_PARAMETER_UNSUPPORTED', `${param} is not supported on Linux: ${why}`, [], { parameter: param });
}

/** "[iface|]address[/mask]" (jail(8) ip4.addr/ip6.addr syntax). */
export function parseJailAddress(s: string, family: 4 | 6, dfltIface: string, field: string): JailAddress {
  let rest = s.trim();
  let iface = dfltIface;
  const bar = rest.indexOf('|');
  if (bar >= 0) {
    iface = rest.slice(0, bar);
    rest = rest.slice(bar + 1);
  }
  rest = rest.split(/\s+/)[0] ?? '';
  const [addr = '', mask] = rest.split('/');
  if (net.isIP(addr) !== family) throw invalidArgument(field, `"${s}" is not an IPv${family} address`);
  if (!IFNAME_RE.test(iface)) throw invalidArgument(field, `"${iface}" is not an interface name`);
  let prefix = family === 4 ? 32 : 128;
  if (mask !== undefined) {
    if (family === 4 && mask.includes('.')) {
      if (net.isIPv4(mask) === false) throw invalidArgument(field, `bad netmask in "${s}"`);
      const bits = mask
        .split('.')
        .reduce((a, o) => a * 256 + Number(o), 0)
        .toString(2);
      if (!/^1*0*$/.test(bits.padStart(32, '0'))) throw invalidArgument(field, `bad netmask in "${s}"`);
      prefix = bits.replace(/0/g, '').length;
    } else {
      prefix = Number(mask);
      if (!/^\d+$/.test(mask) || prefix > (family === 4 ? 32 : 128)) throw invalidArgument(field, `bad prefix length in "${s}"`);
    }
  }
  if ((family === 4 && (addr === '0.0.0.0' || addr === '255.255.255.255')) || (family === 6 && addr === '::')) {
    throw invalidArgument(field, `"${addr}" cannot be a jail address`);
  }
  return { family, address: addr, prefix, iface };
}

const RLIMIT_NOFILE = RlimitType.RLIMIT_TYPE_NOFILE;
const RLIMIT_AS = RlimitType.RLIMIT_TYPE_AS;
/** The helper's --rlimit names. */
const names: Record<number, string> = {
  [RlimitType.RLIMIT_TYPE_NOFILE]: 'nofile',
  [RlimitType.RLIMIT_TYPE_NPROC]: 'nproc',
  [RlimitType.RLIMIT_TYPE_AS]: 'as',
  [RlimitType.RLIMIT_TYPE_RSS]: 'rss',
  [RlimitType.RLIMIT_TYPE_MEMLOCK]: 'memlock',
  [RlimitType.RLIMIT_TYPE_LOCKS]: 'locks',
  [RlimitType.RLIMIT_TYPE_MSGQUEUE]: 'msgqueue',
  [RlimitType.RLIMIT_TYPE_CORE]: 'core',
  [RlimitType.RLIMIT_TYPE_CPU]: 'cpu',
  [RlimitType.RLIMIT_TYPE_FSIZE]: 'fsize',
  [RlimitType.RLIMIT_TYPE_STACK]: 'stack',
  [RlimitType.RLIMIT_TYPE_DATA]: 'data',
  [RlimitType.RLIMIT_TYPE_SIGPENDING]: 'sigpending',
  [RlimitType.RLIMIT_TYPE_NICE]: 'nice',
  [RlimitType.RLIMIT_TYPE_RTPRIO]: 'rtprio',
};

/** One fstab(5) line of `mount` / `mount.fstab` as a mount inside the jail, or undefined for a blank line. */
export function parseFstabLine(line: string, jailPath: string, field: string): Mount | undefined {
  const text = line.replace(/#.*/, '').trim();
  if (!text) return undefined;
  const [src, dst, type, opts = 'rw'] = text.split(/\s+/);
  if (!src || !dst || !type) throw invalidArgument(field, `"${line}": expected "source mountpoint type [options]"`);
  if (!dst.startsWith('/')) throw invalidArgument(field, `"${dst}" is not an absolute path`);
  let inside = dst;
  if (jailPath && jailPath !== '/') {
    const root = jailPath.replace(/\/+$/, '');
    if (dst !== root && !dst.startsWith(root + '/')) throw invalidArgument(field, `mount point ${dst} is not under the jail's path ${root}`);
    inside = dst.slice(root.length) || '/';
  }
  inside = path.posix.normalize(inside);
  if (inside === '/') throw invalidArgument(field, "cannot mount over the jail's root");
  const options: string[] = [];
  let readonly = false;
  for (const o of opts.split(',')) {
    if (o === 'ro') readonly = true;
    else if (o === 'rw' || o === 'late' || o === 'auto') continue;
    else if (['nosuid', 'nodev', 'noexec', 'noatime'].includes(o)) options.push(o);
    else if (type === 'tmpfs' && /^(size|mode|nr_inodes)=[A-Za-z0-9]+$/.test(o)) options.push(o);
    else throw invalidArgument(field, `mount option "${o}" in "${line}" is not supported`);
  }
  if (type === 'nullfs') {
    if (!src.startsWith('/')) throw invalidArgument(field, `nullfs source "${src}" is not an absolute path`);
    if (options.length && options.some((o) => o.includes('='))) throw invalidArgument(field, `nullfs takes no data options: "${line}"`);
    return { type: MountType.MOUNT_TYPE_BIND, source: src, destination: inside, readonly, propagation: 0, options };
  }
  if (type === 'tmpfs') return { type: MountType.MOUNT_TYPE_TMPFS, source: '', destination: inside, readonly, propagation: 0, options };
  throw unsupported(`${field} file system type "${type}"`, 'only nullfs (bind mounts) and tmpfs are mounted into jails');
}

/** Normalize and check a jail spec; read mount.fstab. Throws INVALID_ARGUMENT / FAILED_PRECONDITION naming the field. */
export async function planJail(spec: ContainerSpec): Promise<JailPlan> {
  if (spec.driverOptions && spec.driverOptions.$case !== 'jail')
    throw invalidArgument(`spec.${spec.driverOptions.$case}`, 'the jail driver takes spec.jail options');
  const o = JailOptions.fromPartial(spec.driverOptions?.$case === 'jail' ? spec.driverOptions.value : {});

  // Fields the jail options own.
  const p = spec.process;
  // The daemon completed an image's spec (src/images/spec.ts) with the image's process: it is the
  // jail's command unless the jail names its own.
  const fromImage = spec.rootfs?.source?.$case === 'image' && !!spec.rootfs.imageDigest;
  let imageCommand: JailPlan['imageCommand'];
  if (fromImage && p) {
    if (p.tty) throw invalidArgument('spec.process.tty', "a jail has no console of its own; its commands write to the jail's output");
    if (!o.execStart.length && !o.command.length && p.args.length) imageCommand = { args: [...p.args], cwd: p.cwd || '/', user: p.user };
  } else if (p && (p.args.length || p.tty || p.user || p.cwd)) {
    throw invalidArgument(
      'spec.process',
      'a jail has no init of its own: use spec.jail.exec_start or spec.jail.command (process.env, rlimits and no_new_privileges are allowed)',
    );
  }
  if (spec.hostname) throw invalidArgument('spec.hostname', 'use spec.jail.host_hostname (host.hostname)');
  if (spec.domainname) throw invalidArgument('spec.domainname', 'use spec.jail.host_domainname (host.domainname)');
  if (spec.capabilities) throw invalidArgument('spec.capabilities', "a jail's privileges come from its allow.* parameters and securelevel");
  if (o.path) {
    if (spec.rootfs?.source) throw invalidArgument(`${F}.path`, 'give either spec.jail.path or spec.rootfs, not both');
    if (!o.path.startsWith('/')) throw invalidArgument(`${F}.path`, 'must be an absolute path');
    if (o.path !== '/') {
      const st = await fs.stat(o.path).catch(() => undefined);
      if (!st?.isDirectory()) throw invalidArgument(`${F}.path`, `${o.path} is not a directory on the host`);
    }
  } else if (!spec.rootfs?.source) {
    throw invalidArgument(`${F}.path`, 'is required (or spec.rootfs, e.g. the busybox template)');
  }

  const vnet = mode(o.vnet, 'inherit') === 'new';
  if (o.vnet === JailSysMode.JAIL_SYS_MODE_DISABLE) throw invalidArgument(`${F}.vnet`, 'is NEW or INHERIT');
  const netMode = spec.network?.mode?.$case;
  if (vnet && netMode && netMode !== 'bridge' && netMode !== 'none')
    throw invalidArgument('spec.network', 'a vnet jail takes network.bridge (its veth) or network.none');
  if (!vnet && netMode && netMode !== 'host')
    throw invalidArgument('spec.network', "a jail without vnet shares the host's network stack; set spec.jail.vnet = NEW for its own");

  const hasHostInfo = !!(o.hostHostname || o.hostDomainname);
  const host = mode(o.host, hasHostInfo ? 'new' : 'inherit');
  if (host === 'disable') throw invalidArgument(`${F}.host`, 'is NEW or INHERIT');
  if (host === 'inherit' && hasHostInfo) throw invalidArgument(`${F}.host`, "INHERIT shares the host's hostname; host.hostname/host.domainname need NEW");
  if (o.hostHostname && !HOSTNAME_RE.test(o.hostHostname)) throw invalidArgument(`${F}.host_hostname`, 'must be a valid hostname of at most 64 characters');
  if (o.hostDomainname && !HOSTNAME_RE.test(o.hostDomainname))
    throw invalidArgument(`${F}.host_domainname`, 'must be a valid domain name of at most 64 characters');

  const iface = o.interface || 'lo';
  if (!IFNAME_RE.test(iface)) throw invalidArgument(`${F}.interface`, 'must be an interface name of at most 15 characters');
  const addresses: JailAddress[] = [
    ...o.ip4Addr.map((a, i) => parseJailAddress(a, 4, iface, `${F}.ip4_addr[${i}]`)),
    ...o.ip6Addr.map((a, i) => parseJailAddress(a, 6, iface, `${F}.ip6_addr[${i}]`)),
  ];
  const explicit = (m: JailSysMode) => m !== JailSysMode.JAIL_SYS_MODE_UNSPECIFIED && m !== JailSysMode.JAIL_SYS_MODE_INHERIT;
  if (vnet && (o.ip4Addr.length || o.ip6Addr.length || explicit(o.ip4) || explicit(o.ip6))) {
    throw invalidArgument(`${F}.ip4_addr`, 'vnet jails cannot have IP address restrictions (as on FreeBSD); their address is on their own stack');
  }
  // FreeBSD gives a jail that names no address of a family and no ip4/ip6 mode none of that
  // family (socket() fails with EAFNOSUPPORT); ip4 = inherit shares the host's.
  const ip4 = vnet ? 'inherit' : mode(o.ip4, o.ip4Addr.length ? 'new' : 'disable');
  const ip6 = vnet ? 'inherit' : mode(o.ip6, o.ip6Addr.length ? 'new' : 'disable');
  if (o.ip4Addr.length && ip4 !== 'new') throw invalidArgument(`${F}.ip4`, 'ip4.addr needs ip4 = NEW');
  if (o.ip6Addr.length && ip6 !== 'new') throw invalidArgument(`${F}.ip6`, 'ip6.addr needs ip6 = NEW');
  if (o.ip4Addr.length > 16 || o.ip6Addr.length > 16) throw invalidArgument(`${F}.ip4_addr`, 'at most 16 addresses per family');

  const securelevel = o.securelevel ?? -1;
  if (securelevel < -1 || securelevel > 3) throw invalidArgument(`${F}.securelevel`, 'must be between -1 and 3');
  const enforceStatfs = o.enforceStatfs ?? 2;
  if (enforceStatfs > 2) throw invalidArgument(`${F}.enforce_statfs`, 'must be 0, 1 or 2');
  const ruleset = o.devfsRuleset ?? 4;
  if (o.devfsRuleset !== undefined && !o.mountDevfs) throw invalidArgument(`${F}.devfs_ruleset`, 'applies to mount.devfs; set mount_devfs');
  if (o.mountDevfs && !DEVFS_RULESETS[ruleset]) {
    throw unsupported(
      `devfs_ruleset ${ruleset}`,
      ruleset === 0 || ruleset === 2 || ruleset === 3
        ? 'on its own this ruleset hides nothing, so every host device node would be visible; use 4 (devfsrules_jail), 5 or 1, and spec.devices for more nodes'
        : 'only the rulesets of /etc/defaults/devfs.rules (1, 4, 5) are known; use spec.devices for more nodes',
    );
  }
  const devNodes = o.mountDevfs ? DEVFS_RULESETS[ruleset]!.nodes : [];

  // allow.mount.<fs>
  const mountFs: [keyof JailOptions, string, string][] = [
    ['allowMountTmpfs', 'allow.mount.tmpfs', 'tmpfs'],
    ['allowMountProcfs', 'allow.mount.procfs', 'proc'],
    ['allowMountDevfs', 'allow.mount.devfs', 'devtmpfs'],
    ['allowMountFdescfs', 'allow.mount.fdescfs', 'fdescfs'],
    ['allowMountLinprocfs', 'allow.mount.linprocfs', 'proc'],
    ['allowMountLinsysfs', 'allow.mount.linsysfs', 'sysfs'],
    ['allowMountFusefs', 'allow.mount.fusefs', 'fuse'],
    ['allowMountZfs', 'allow.mount.zfs', 'zfs'],
  ];
  for (const [k, name, fsName] of mountFs) {
    if (o[k]) {
      throw unsupported(
        name,
        `Linux lets a process create a new ${fsName} mount only with CAP_SYS_ADMIN in its own user namespace, and a jail must not hold that (it would undo every other restriction); mount it with spec.jail.mount at start, or use allow.mount.nullfs (bind mounts)`,
      );
    }
  }
  const mountAllowed = o.allowMount && o.allowMountNullfs;
  if (mountAllowed && enforceStatfs >= 2)
    throw invalidArgument(`${F}.allow_mount`, 'is effective only with enforce_statfs < 2 (as on FreeBSD); set enforce_statfs to 1');

  // System V IPC.
  const sysv = {
    msg: o.allowSysvipc && !o.sysvmsg ? 'inherit' : mode(o.sysvmsg, 'disable'),
    sem: o.allowSysvipc && !o.sysvsem ? 'inherit' : mode(o.sysvsem, 'disable'),
    shm: o.allowSysvipc && !o.sysvshm ? 'inherit' : mode(o.sysvshm, 'disable'),
  } as const;
  const used = new Set(Object.values(sysv).filter((m) => m !== 'disable'));
  if (used.has('new') && used.has('inherit')) {
    throw unsupported(
      'mixing sysv* = NEW and INHERIT',
      "Linux keeps message queues, semaphores and shared memory in one IPC namespace: either the jail's own (NEW) or the host's (INHERIT) for all of them",
    );
  }
  const ipc = used.has('inherit') ? 'host' : 'new';

  const persist = o.persist;
  if (!persist && !o.execStart.length && !o.command.length && !imageCommand) {
    throw invalidArgument(`${F}.persist`, 'a jail needs persist, exec_start or command (as jail(8) requires): without a process it would be removed at once');
  }

  // Capabilities: FreeBSD's jailed-root privileges, then the allow.* grants, then securelevel.
  const caps = new Set<CapabilityName>(BASE_CAPS);
  if (o.allowReservedPorts ?? true) caps.add('net_bind_service');
  if (o.allowRawSockets) caps.add('net_raw');
  if (o.allowChflags) caps.add('linux_immutable');
  if (o.allowMlock) caps.add('ipc_lock');
  if (used.size) caps.add('ipc_owner');
  if (vnet) caps.add('net_admin');
  // securelevel >= 1: system file flags cannot be changed (Linux cannot tell setting from clearing: both go).
  if (securelevel >= 1) caps.delete('linux_immutable');
  // securelevel >= 3: packet filter rules cannot be changed.
  if (securelevel >= 3) caps.delete('net_admin');

  const rctl = o.rctl;
  const rlimits: Rlimit[] = [...(p?.rlimits ?? [])];
  const setRlimit = (type: RlimitType, v: bigint, field: string) => {
    if (rlimits.some((r) => r.type === type)) throw invalidArgument(field, 'conflicts with spec.process.rlimits');
    rlimits.push({ type, soft: v, hard: v, unlimited: false });
  };
  if (rctl?.openfiles) setRlimit(RLIMIT_NOFILE, rctl.openfiles, `${F}.rctl.openfiles`);
  if (rctl?.vmemoryuse) setRlimit(RLIMIT_AS, rctl.vmemoryuse, `${F}.rctl.vmemoryuse`);
  // rctl limits cannot be raised from inside; rlimits can with CAP_SYS_RESOURCE.
  if (rctl?.openfiles || rctl?.vmemoryuse) caps.delete('sys_resource');
  let resources = spec.resources ? { ...spec.resources } : undefined;
  const setRes = <K extends keyof Resources>(k: K, v: Resources[K], field: string) => {
    resources ??= { memoryLimitBytes: 0n, cpuWeight: 0, cpuQuotaUs: 0n, cpuPeriodUs: 0n, pidsLimit: 0, cpusetCpus: '', cpusetMems: '' };
    if (resources[k]) throw invalidArgument(field, `conflicts with spec.resources.${k}`);
    resources[k] = v;
  };
  if (rctl?.memoryuse) {
    checkRange(`${F}.rctl.memoryuse`, rctl.memoryuse, MAX_MEMORY_BYTES);
    if (rctl.memoryuse < 4n * 1024n * 1024n) throw invalidArgument(`${F}.rctl.memoryuse`, 'must be at least 4 MiB');
    setRes('memoryLimitBytes', rctl.memoryuse, `${F}.rctl.memoryuse`);
  }
  if (rctl?.maxproc) setRes('pidsLimit', rctl.maxproc, `${F}.rctl.maxproc`);
  if (rctl?.pcpu) {
    const period = resources?.cpuPeriodUs || 100000n;
    // Rounded to the nearest microsecond, at least the kernel's 1 ms.
    const quota = (BigInt(rctl.pcpu) * period + 50n) / 100n;
    if (quota > MAX_CPU_QUOTA_US)
      throw invalidArgument(`${F}.rctl.pcpu`, `${rctl.pcpu} is out of range (max ${(MAX_CPU_QUOTA_US * 100n) / period} with a period of ${period} us)`);
    setRes('cpuQuotaUs', quota < 1000n ? 1000n : quota, `${F}.rctl.pcpu`);
  }

  // seccomp: what capabilities cannot express.
  const seccomp: string[] = [
    // Opens any file of a mounted file system by handle, outside the jail's root.
    'open_by_handle_at:EPERM',
    // Keyrings are per uid, not per jail: root's would be the host's.
    'keyctl:ENOSYS',
    'add_key:ENOSYS',
    'request_key:ENOSYS',
    // The kernel message buffer (allow.read_msgbuf is off on FreeBSD by default).
    'syslog:EPERM',
  ];
  if (o.childrenMax === 0) seccomp.push('unshare:EPERM', 'setns:EPERM', `clone:EPERM:arg0&0x${CLONE_NEW_FLAGS.toString(16)}`, 'clone3:ENOSYS');
  const sharedRestricted = !vnet && (ip4 !== 'inherit' || ip6 !== 'inherit');
  if (!o.allowSocketAf) seccomp.push(`socket:EAFNOSUPPORT:arg0!=${JAILED_FAMILIES.join(',')}`);
  else if (sharedRestricted) seccomp.push(`socket:EAFNOSUPPORT:arg0==${AF_PACKET}`); // packet sockets would bypass the address filter
  if (sysv.msg === 'disable') seccomp.push('msgget:ENOSYS', 'msgsnd:ENOSYS', 'msgrcv:ENOSYS', 'msgctl:ENOSYS');
  if (sysv.sem === 'disable') seccomp.push('semget:ENOSYS', 'semop:ENOSYS', 'semtimedop:ENOSYS', 'semctl:ENOSYS');
  if (sysv.shm === 'disable') seccomp.push('shmget:ENOSYS', 'shmat:ENOSYS', 'shmdt:ENOSYS', 'shmctl:ENOSYS');
  if (!o.allowMlock) {
    // Linux lets anyone lock up to RLIMIT_MEMLOCK; FreeBSD jails lock nothing.
    seccomp.push('mlock:EPERM', 'mlock2:EPERM', 'mlockall:EPERM', 'mmap:EPERM:arg3&0x2000', 'shmctl:EPERM:arg1==11,12');
  }

  // Mounts from `mount` and `mount.fstab`.
  const mounts: Mount[] = [];
  o.mount.forEach((line, i) => {
    const m = parseFstabLine(line, o.path, `${F}.mount[${i}]`);
    if (m) mounts.push(m);
  });
  if (o.mountFstab) {
    let text: string;
    try {
      text = await fs.readFile(o.mountFstab, 'utf8');
    } catch (e) {
      throw invalidArgument(`${F}.mount_fstab`, `cannot read ${o.mountFstab}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
    }
    text.split('\n').forEach((line, i) => {
      const m = parseFstabLine(line, o.path, `${F}.mount_fstab (${o.mountFstab}:${i + 1})`);
      if (m) mounts.push(m);
    });
  }
  for (const [i, m] of mounts.entries()) {
    if (m.type === MountType.MOUNT_TYPE_BIND) {
      const st = await fs.stat(m.source).catch(() => undefined);
      if (!st) throw invalidArgument(`${F}.mount[${i}]`, `${m.source} does not exist on the host`);
    }
  }
  if (o.execConsolelog && !o.execConsolelog.startsWith('/')) throw invalidArgument(`${F}.exec_consolelog`, 'must be an absolute host path');

  const rootOwned: ('uts' | 'mnt')[] = [];
  if (host === 'new' && (o.allowSetHostname ?? true)) rootOwned.push('uts');
  if (mountAllowed) rootOwned.push('mnt');

  let ipPolicy: IpFilterPolicy | undefined;
  if (sharedRestricted) {
    const v4 = addresses.filter((a) => a.family === 4).map((a) => a.address);
    const v6 = addresses.filter((a) => a.family === 6).map((a) => a.address);
    const hasLoopback = v4.some((a) => a.startsWith('127.')) || v6.includes('::1');
    ipPolicy = {
      ipv4: v4,
      ipv4Mode: ip4 as IpMode,
      ipv6: v6,
      ipv6Mode: ip6 as IpMode,
      // FreeBSD rewrites a wildcard bind only when the jail has exactly one address of the family.
      singleIp: (ip4 !== 'new' || v4.length <= 1) && (ip6 !== 'new' || v6.length <= 1),
      loopbackRemap: !hasLoopback,
      reservedPorts: o.allowReservedPorts ?? true,
    };
  }

  return {
    options: o,
    vnet,
    host,
    hostname: host === 'new' ? o.hostHostname || os.hostname() : '',
    domainname: host === 'new' ? o.hostDomainname : '',
    ip4,
    ip6,
    addresses,
    persist,
    securelevel,
    enforceStatfs,
    childrenMax: o.childrenMax,
    devNodes,
    ipc,
    rootOwned,
    caps: CAPABILITY_NAMES.filter((c) => caps.has(c)),
    seccomp,
    rlimits,
    resources,
    mounts,
    ipPolicy,
    execTimeoutMs: o.execTimeout * 1000,
    imageCommand,
  };
}

/** `osvirt-helper run` options of a jail beyond what the lxc driver passes. */
export function helperRunArgs(plan: JailPlan): string[] {
  // No /sys: FreeBSD jails have none, and a jail on the host's stack would see the host's.
  const a: string[] = ['--dev-nodes', plan.devNodes.join(',') || 'none', '--no-sysfs'];
  for (const m of MASKED_PATHS) a.push('--mask', m);
  for (const r of READONLY_PATHS) a.push('--ro-path', r);
  const noNs = [...(plan.ipc === 'host' ? ['ipc'] : []), ...(plan.host === 'inherit' ? ['uts'] : [])];
  if (noNs.length) a.push('--no-ns', noNs.join(','));
  if (plan.rootOwned.length) a.push('--root-owned-ns', plan.rootOwned.join(','));
  return [...a, ...helperExecArgs(plan)];
}

/** Options both `run` and `exec` take: every process of the jail gets the same filter and limits. */
export function helperExecArgs(plan: JailPlan): string[] {
  const a: string[] = [];
  for (const r of plan.seccomp) a.push('--seccomp-deny', r);
  for (const r of plan.rlimits) {
    const n = names[r.type];
    if (n) a.push('--rlimit', `${n}:${r.unlimited ? 'unlimited' : r.soft}:${r.unlimited ? 'unlimited' : r.hard}`);
  }
  return a;
}
