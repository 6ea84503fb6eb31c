// VServer guest options: the names util-vserver uses for capabilities, flags
// and limits, their validation, and the Linux mechanism each one becomes.
// Pure functions (no I/O): the driver, the configuration-directory importer
// and the tests share them.
import * as net from 'node:net';
import { ContainerSpec, RlimitType, type Rlimit, type Resources } from '../../src/gen/osvirt/v1/container';
import {
  VServerInit_Style,
  VServerOptions,
  VServerOptions_ContextCapability as Ccap,
  VServerOptions_ContextFlag as Cflag,
  type VServerKillStep,
  type VServerRlimit,
  type VServerRlimits,
} from '../../src/gen/osvirt/v1/vserver';
import { CAPABILITY_NAMES, isCapability, normalizeCapability, type CapabilityName } from '../../src/core/capabilities';
import { invalidArgument, OsvirtError } from '../../src/core/errors';
import { checkRange, MAX_MEMORY_BYTES } from '../../src/core/validate';
import { MAX_ADDRS } from '../common/ipfilter/policy';

export { Ccap, Cflag };

export const MIN_CONTEXT = 2;
export const MAX_CONTEXT = 49151;
/** util-vserver's memory unit for as, rss and memlock (x86_64 pages). */
export const PAGE_SIZE = 4096;

/** util-vserver's secure default bounding set (lib/getinsecurebcaps.c inverted, vshelper and migrate present). */
export const DEFAULT_BCAPS: readonly CapabilityName[] = [
  'chown',
  'dac_override',
  'dac_read_search',
  'fowner',
  'fsetid',
  'kill',
  'setgid',
  'setuid',
  'net_bind_service',
  'sys_chroot',
  'sys_ptrace',
  'sys_tty_config',
  'lease',
  'audit_write',
  'sys_boot',
];

/** What would let a guest detach its own network context (drivers/common/ipfilter/README.md). */
export const FORBIDDEN_BCAPS: Readonly<Record<string, string>> = {
  sys_admin: 'CAP_SYS_ADMIN lets the guest load BPF programs and detach its network context',
  net_admin: "CAP_NET_ADMIN lets the guest change the host's network stack (addresses, routes, firewall) and detach its network context",
  bpf: 'CAP_BPF lets the guest load BPF programs and reach its network context',
};

/** ccapabilities file names (lib/ccaps-v13.c), with util-vserver's deprecated aliases. */
export const CCAP_NAMES: Readonly<Record<string, Ccap>> = {
  set_utsname: Ccap.CONTEXT_CAPABILITY_SET_UTSNAME,
  set_rlimit: Ccap.CONTEXT_CAPABILITY_SET_RLIMIT,
  fs_security: Ccap.CONTEXT_CAPABILITY_FS_SECURITY,
  tiocsti: Ccap.CONTEXT_CAPABILITY_TIOCSTI,
  raw_icmp: Ccap.CONTEXT_CAPABILITY_RAW_ICMP,
  syslog: Ccap.CONTEXT_CAPABILITY_SYSLOG,
  oom_adjust: Ccap.CONTEXT_CAPABILITY_OOM_ADJUST,
  audit_control: Ccap.CONTEXT_CAPABILITY_AUDIT_CONTROL,
  secure_mount: Ccap.CONTEXT_CAPABILITY_SECURE_MOUNT,
  secure_remount: Ccap.CONTEXT_CAPABILITY_SECURE_REMOUNT,
  binary_mount: Ccap.CONTEXT_CAPABILITY_BINARY_MOUNT,
  quota_ctl: Ccap.CONTEXT_CAPABILITY_QUOTA_CTL,
  admin_mapper: Ccap.CONTEXT_CAPABILITY_ADMIN_MAPPER,
  admin_cloop: Ccap.CONTEXT_CAPABILITY_ADMIN_CLOOP,
  kthread: Ccap.CONTEXT_CAPABILITY_KTHREAD,
  namespace: Ccap.CONTEXT_CAPABILITY_NAMESPACE,
};
const CCAP_ALIASES: Readonly<Record<string, string>> = {
  mount: 'secure_mount',
  remount: 'secure_remount',
  icmp: 'raw_icmp',
  ping: 'raw_icmp',
  utsname: 'set_utsname',
  rlimit: 'set_rlimit',
};

/** ccap -> the Linux capability that grants the same, where one is narrow enough. */
const CCAP_LINUX: Partial<Record<Ccap, CapabilityName>> = {
  [Ccap.CONTEXT_CAPABILITY_SET_RLIMIT]: 'sys_resource',
  [Ccap.CONTEXT_CAPABILITY_OOM_ADJUST]: 'sys_resource',
  [Ccap.CONTEXT_CAPABILITY_SYSLOG]: 'syslog',
  [Ccap.CONTEXT_CAPABILITY_AUDIT_CONTROL]: 'audit_control',
  // With packet sockets denied by seccomp (seccompRules).
  [Ccap.CONTEXT_CAPABILITY_RAW_ICMP]: 'net_raw',
};

/** What the native helper can do (osvirt-helper --help), for the ccaps that need it. */
export interface HelperFeatures {
  /** --root-owned-ns uts,mnt: namespaces owned by a user namespace root owns. */
  rootOwnedNs: boolean;
  /** --seccomp-deny: per-process syscall filters. */
  seccompDeny: boolean;
  /** --no-sysfs: no /sys in the container (util-vserver guests have none either). */
  noSysfs: boolean;
}

const ROOT_OWNED =
  'the kernel lets the owner of a user namespace act on what that user namespace owns, so the guest gets the namespace from a user namespace root owns (osvirt-helper --root-owned-ns)';
/** ccaps that need a helper feature: which, and what it does. */
const CCAP_NEEDS: Partial<Record<Ccap, { feature: keyof HelperFeatures; how: string }>> = {
  [Ccap.CONTEXT_CAPABILITY_SET_UTSNAME]: {
    feature: 'rootOwnedNs',
    how: `sethostname(2) without CAP_SYS_ADMIN over the host: ${ROOT_OWNED.replace('the namespace', 'its UTS namespace')}`,
  },
  [Ccap.CONTEXT_CAPABILITY_SECURE_MOUNT]: {
    feature: 'rootOwnedNs',
    how: `mount(2) without CAP_SYS_ADMIN over the host: ${ROOT_OWNED.replace('the namespace', 'its mount namespace')}`,
  },
  [Ccap.CONTEXT_CAPABILITY_SECURE_REMOUNT]: {
    feature: 'rootOwnedNs',
    how: `remounting without CAP_SYS_ADMIN over the host: ${ROOT_OWNED.replace('the namespace', 'its mount namespace')}`,
  },
  [Ccap.CONTEXT_CAPABILITY_RAW_ICMP]: {
    feature: 'seccompDeny',
    how: 'raw ICMP sockets need CAP_NET_RAW, which also opens packet (AF_PACKET) sockets that bypass the network context; a seccomp filter (osvirt-helper --seccomp-deny) must refuse those',
  },
};

const SYS_ADMIN_SLICE = 'Linux grants it only with CAP_SYS_ADMIN over the host, which would let the guest remove its network context';
/** Why a ccap cannot be given on Linux at all (docs/vserver.md has the table). */
const CCAP_REFUSED: Partial<Record<Ccap, string>> = {
  [Ccap.CONTEXT_CAPABILITY_BINARY_MOUNT]: `binary and network filesystems: ${SYS_ADMIN_SLICE} (a user namespace may mount only tmpfs, bind mounts and the like)`,
  [Ccap.CONTEXT_CAPABILITY_QUOTA_CTL]: `quotactl(2): ${SYS_ADMIN_SLICE}`,
  [Ccap.CONTEXT_CAPABILITY_ADMIN_MAPPER]: `device-mapper administration: ${SYS_ADMIN_SLICE}`,
  [Ccap.CONTEXT_CAPABILITY_ADMIN_CLOOP]: `loop device administration: ${SYS_ADMIN_SLICE}`,
  [Ccap.CONTEXT_CAPABILITY_FS_SECURITY]: `security.* extended attributes: ${SYS_ADMIN_SLICE}`,
  [Ccap.CONTEXT_CAPABILITY_TIOCSTI]: `the TIOCSTI ioctl: ${SYS_ADMIN_SLICE}`,
  [Ccap.CONTEXT_CAPABILITY_NAMESPACE]: `creating namespaces: ${SYS_ADMIN_SLICE}`,
  [Ccap.CONTEXT_CAPABILITY_KTHREAD]: 'kernel threads in a context have no Linux counterpart',
};

/** --root-owned-ns for the guest: uts for set_utsname, mnt for secure_mount/secure_remount. */
export function rootOwnedNamespaces(o: VServerOptions): string[] {
  const c = new Set(o.ccapabilities);
  return [
    ...(c.has(Ccap.CONTEXT_CAPABILITY_SET_UTSNAME) ? ['uts'] : []),
    ...(c.has(Ccap.CONTEXT_CAPABILITY_SECURE_MOUNT) || c.has(Ccap.CONTEXT_CAPABILITY_SECURE_REMOUNT) ? ['mnt'] : []),
  ];
}

/** AF_INET with SOCK_PACKET (10), with and without SOCK_NONBLOCK/SOCK_CLOEXEC: the kernel makes it a packet socket. */
const SOCK_PACKET_TYPES = [10, 10 | 0x800, 10 | 0x80000, 10 | 0x800 | 0x80000];

/** --seccomp-deny rules for the guest's processes (init and exec'd ones alike). */
export function seccompRules(o: VServerOptions): string[] {
  if (!o.ccapabilities.includes(Ccap.CONTEXT_CAPABILITY_RAW_ICMP)) return [];
  // raw_icmp keeps CAP_NET_RAW; packet sockets (and io_uring, which creates sockets past seccomp) stay shut.
  return ['socket:EAFNOSUPPORT:arg0==17', `socket:EAFNOSUPPORT:arg1==${SOCK_PACKET_TYPES.join(',')}`, 'io_uring_setup:EPERM'];
}

/** flags file names (lib/cflags-v13.c), with util-vserver's pseudo flags. */
export const CFLAG_NAMES: Readonly<Record<string, Cflag>> = {
  lock: Cflag.CONTEXT_FLAG_LOCK,
  nproc: Cflag.CONTEXT_FLAG_NPROC,
  private: Cflag.CONTEXT_FLAG_PRIVATE,
  fakeinit: Cflag.CONTEXT_FLAG_FAKEINIT,
  hideinfo: Cflag.CONTEXT_FLAG_HIDEINFO,
  ulimit: Cflag.CONTEXT_FLAG_ULIMIT,
  namespace: Cflag.CONTEXT_FLAG_NAMESPACE,
  sched_hard: Cflag.CONTEXT_FLAG_SCHED_HARD,
  sched_prio: Cflag.CONTEXT_FLAG_SCHED_PRIO,
  sched_pause: Cflag.CONTEXT_FLAG_SCHED_PAUSE,
  virt_mem: Cflag.CONTEXT_FLAG_VIRT_MEM,
  virt_uptime: Cflag.CONTEXT_FLAG_VIRT_UPTIME,
  virt_cpu: Cflag.CONTEXT_FLAG_VIRT_CPU,
  virt_load: Cflag.CONTEXT_FLAG_VIRT_LOAD,
  hide_mount: Cflag.CONTEXT_FLAG_HIDE_MOUNT,
  hide_netif: Cflag.CONTEXT_FLAG_HIDE_NETIF,
  state_setup: Cflag.CONTEXT_FLAG_STATE_SETUP,
  state_init: Cflag.CONTEXT_FLAG_STATE_INIT,
  sc_helper: Cflag.CONTEXT_FLAG_SC_HELPER,
  persistent: Cflag.CONTEXT_FLAG_PERSISTENT,
  reboot_kill: Cflag.CONTEXT_FLAG_REBOOT_KILL,
  fork_rss: Cflag.CONTEXT_FLAG_FORK_RSS,
  prolific: Cflag.CONTEXT_FLAG_PROLIFIC,
  igneg_nice: Cflag.CONTEXT_FLAG_IGNEG_NICE,
};
const CFLAG_ALIASES: Readonly<Record<string, string>> = { secure: 'hide_netif', default: 'virt_uptime' };

/** Flags that hold by construction (or, PRIVATE, that the driver enforces). */
const CFLAG_HOLDS = new Set<Cflag>([
  Cflag.CONTEXT_FLAG_LOCK,
  Cflag.CONTEXT_FLAG_NPROC,
  Cflag.CONTEXT_FLAG_PRIVATE,
  Cflag.CONTEXT_FLAG_FAKEINIT,
  Cflag.CONTEXT_FLAG_NAMESPACE,
  Cflag.CONTEXT_FLAG_HIDE_MOUNT,
]);
const NO_COUNTERPART = 'has no Linux counterpart';
const CFLAG_REFUSED: Partial<Record<Cflag, string>> = {
  [Cflag.CONTEXT_FLAG_ULIMIT]: 'context-wide ulimits: Linux rlimits are per process; only nproc is context-wide here (the pids cgroup)',
  [Cflag.CONTEXT_FLAG_SCHED_HARD]: 'the token-bucket scheduler: use spec.resources (cpu_quota_us, cpu_weight) instead',
  [Cflag.CONTEXT_FLAG_SCHED_PRIO]: 'the token-bucket scheduler: use spec.resources (cpu_weight) instead',
  [Cflag.CONTEXT_FLAG_SCHED_PAUSE]: 'the token-bucket scheduler: use PauseContainer instead',
  [Cflag.CONTEXT_FLAG_VIRT_MEM]: 'a virtualized /proc/meminfo needs a /proc overlay (lxcfs-like), which osvirt does not provide',
  [Cflag.CONTEXT_FLAG_VIRT_UPTIME]: "a per-guest uptime needs a time namespace, which osvirt's helper does not create yet",
  [Cflag.CONTEXT_FLAG_VIRT_CPU]: 'a virtualized /proc/stat needs a /proc overlay (lxcfs-like), which osvirt does not provide',
  [Cflag.CONTEXT_FLAG_VIRT_LOAD]: 'a virtualized load average needs a /proc overlay (lxcfs-like), which osvirt does not provide',
  [Cflag.CONTEXT_FLAG_HIDE_NETIF]: "the guest shares the host's network stack, and Linux shows it every interface",
};

export const RLIMIT_RESOURCES = ['nproc', 'as', 'rss', 'nofile', 'openfd', 'memlock', 'locks', 'msgqueue'] as const;
export type RlimitResource = (typeof RLIMIT_RESOURCES)[number];

/** Per-process rlimits: resource -> (setrlimit type, unit in bytes or 1). */
const PROCESS_RLIMITS: Partial<Record<RlimitResource, { type: RlimitType; unit: number }>> = {
  as: { type: RlimitType.RLIMIT_TYPE_AS, unit: PAGE_SIZE },
  nofile: { type: RlimitType.RLIMIT_TYPE_NOFILE, unit: 1 },
  openfd: { type: RlimitType.RLIMIT_TYPE_NOFILE, unit: 1 },
  memlock: { type: RlimitType.RLIMIT_TYPE_MEMLOCK, unit: PAGE_SIZE },
  locks: { type: RlimitType.RLIMIT_TYPE_LOCKS, unit: 1 },
  msgqueue: { type: RlimitType.RLIMIT_TYPE_MSGQUEUE, unit: 1 },
};

export const DEFAULT_KILLSEQ: readonly VServerKillStep[] = [
  { signal: 15, waitSeconds: 5 },
  { signal: 9, waitSeconds: 0 },
];

const RUNLEVEL_RE = /^[A-Za-z0-9_.-]{1,32}$/;
const IFNAME_RE = /^[A-Za-z0-9_.-]{1,15}$/;
const HOSTNAME_RE = /^(?=.{1,64}$)[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$/;
const IFACE_DIR_RE = /^[A-Za-z0-9_.-]{1,64}$/;

const F = 'spec.vserver';

export function ccapName(c: Ccap): string {
  return (Ccap[c] ?? '').replace('CONTEXT_CAPABILITY_', '').toLowerCase();
}

export function cflagName(f: Cflag): string {
  return (Cflag[f] ?? '').replace('CONTEXT_FLAG_', '').toLowerCase();
}

/** A ccapabilities line ("SET_UTSNAME", "vxc_syslog", "mount") as its enum value, or undefined. */
export function parseCcap(word: string): Ccap | undefined {
  let w = word.trim().toLowerCase().replace(/^vxc_/, '');
  w = CCAP_ALIASES[w] ?? w;
  return CCAP_NAMES[w];
}

/** A flags line as its enum value, or undefined. */
export function parseCflag(word: string): Cflag | undefined {
  let w = word.trim().toLowerCase();
  w = CFLAG_ALIASES[w] ?? w;
  return CFLAG_NAMES[w];
}

function refused(field: string, what: string, why: string): OsvirtError {
  return new OsvirtError(
    'FAILED_PRECONDITION',
    'VSERVER_FEATURE_UNSUPPORTED',
    `${field}: ${what} cannot be provided on Linux: ${why}`,
    [{ field, description: why }],
    { field },
  );
}

export function optionsOf(spec: ContainerSpec): VServerOptions {
  return spec.driverOptions?.$case === 'vserver' ? spec.driverOptions.value : VServerOptions.fromPartial({});
}

/** The guest's addresses in use (not disabled), in interface-name order. */
export function activeInterfaces(o: VServerOptions) {
  return [...(o.network?.interfaces ?? [])].filter((i) => !i.disabled).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

export function interfaceDev(o: VServerOptions, i: { dev: string }): string {
  return i.dev || o.network?.dev || '';
}

export function interfacePrefix(o: VServerOptions, i: { ip: string; prefix: number }): number {
  return i.prefix || o.network?.prefix || (net.isIPv6(i.ip) ? 128 : 32);
}

/** The init style in effect (util-vserver's default is sysv; a given process.args means plain). */
export function initStyle(spec: ContainerSpec): VServerInit_Style {
  const s = optionsOf(spec).init?.style ?? VServerInit_Style.STYLE_UNSPECIFIED;
  if (s !== VServerInit_Style.STYLE_UNSPECIFIED) return s;
  return spec.process?.args.length ? VServerInit_Style.STYLE_PLAIN : VServerInit_Style.STYLE_SYSV;
}

export function killSequence(o: VServerOptions): readonly VServerKillStep[] {
  return o.init?.killseq.length ? o.init.killseq : DEFAULT_KILLSEQ;
}

/** The bounding set: util-vserver's default, plus bcapabilities add and the ccaps' capabilities, minus bcapabilities drop. */
export function boundingSet(o: VServerOptions): CapabilityName[] {
  const set = new Set<string>(DEFAULT_BCAPS);
  for (const a of o.bcapabilities?.add ?? []) set.add(normalizeCapability(a));
  for (const c of o.ccapabilities) {
    const cap = CCAP_LINUX[c];
    if (cap) set.add(cap);
  }
  for (const d of o.bcapabilities?.drop ?? []) set.delete(normalizeCapability(d));
  return CAPABILITY_NAMES.filter((c) => set.has(c));
}

/** Limits are counted in pages or units; the page arithmetic is done in doubles, so at most 2^53-1. */
function checkLimitValue(field: string, v: bigint | undefined): void {
  if (v !== undefined) checkRange(field, v, BigInt(Number.MAX_SAFE_INTEGER));
}

/**
 * Checks the options for what they say (INVALID_ARGUMENT naming the field)
 * and for what Linux can do (FAILED_PRECONDITION naming what is missing).
 * `layout` is the host's cgroup layout, for rss.min; `helper` what the
 * native helper supports, for the ccaps that need it.
 */
export function validateOptions(spec: ContainerSpec, layout: 'v2' | 'hybrid', helper: HelperFeatures): void {
  if (spec.driverOptions?.$case !== 'vserver') throw invalidArgument(F, 'is required: a vserver guest needs at least its context id (spec.vserver.context)');
  const o = spec.driverOptions.value;
  if (!Number.isInteger(o.context) || o.context < MIN_CONTEXT || o.context > MAX_CONTEXT) {
    throw invalidArgument(`${F}.context`, `must be a context id between ${MIN_CONTEXT} and ${MAX_CONTEXT} (util-vserver's static range)`);
  }
  if (o.contextName && (o.contextName.length > 64 || /[\0\n/]/.test(o.contextName)))
    throw invalidArgument(`${F}.context_name`, 'must be at most 64 characters without "/" or newlines');
  for (const k of ['nodename', 'domainname'] as const) {
    const v = o.uts?.[k];
    if (v && !HOSTNAME_RE.test(v)) throw invalidArgument(`${F}.uts.${k}`, 'must be a valid host/domain name of at most 64 characters');
  }
  if (o.uts?.nodename && spec.hostname && o.uts.nodename !== spec.hostname)
    throw invalidArgument('spec.hostname', `differs from spec.vserver.uts.nodename ("${o.uts.nodename}"); give one of them`);
  if (o.uts?.domainname && spec.domainname && o.uts.domainname !== spec.domainname)
    throw invalidArgument('spec.domainname', `differs from spec.vserver.uts.domainname ("${o.uts.domainname}"); give one of them`);

  // The VServer model is the host's own stack with a network context, never a network namespace.
  if (spec.network?.mode && spec.network.mode.$case !== 'host') {
    throw invalidArgument(
      `spec.network.${spec.network.mode.$case}`,
      "a vserver guest shares the host's network stack (its network context is spec.vserver.network); leave spec.network unset",
    );
  }
  if (spec.capabilities)
    throw invalidArgument('spec.capabilities', "a vserver guest's capabilities are spec.vserver.bcapabilities and spec.vserver.ccapabilities");

  const nw = o.network;
  if (nw?.dev && !IFNAME_RE.test(nw.dev)) throw invalidArgument(`${F}.network.dev`, 'must be an interface name of at most 15 characters');
  if (nw && nw.prefix > 128) throw invalidArgument(`${F}.network.prefix`, 'must be a prefix length');
  const names = new Set<string>();
  const ips = new Set<string>();
  let v4 = 0;
  let v6 = 0;
  for (const [n, i] of (nw?.interfaces ?? []).entries()) {
    const f = `${F}.network.interfaces[${n}]`;
    if (!IFACE_DIR_RE.test(i.name)) throw invalidArgument(`${f}.name`, 'is required: the interfaces/<name> directory name, e.g. "0"');
    if (names.has(i.name)) throw invalidArgument(`${f}.name`, `"${i.name}" is given twice`);
    names.add(i.name);
    const family = net.isIP(i.ip);
    if (!family || i.ip.includes('%')) throw invalidArgument(`${f}.ip`, `"${i.ip}" is not an IPv4 or IPv6 address (no prefix length here: that is "prefix")`);
    if (ips.has(i.ip)) throw invalidArgument(`${f}.ip`, `${i.ip} is given twice`);
    ips.add(i.ip);
    const max = family === 4 ? 32 : 128;
    if (i.prefix > max) throw invalidArgument(`${f}.prefix`, `must be at most ${max}`);
    const dev = interfaceDev(o, i);
    if (dev && !IFNAME_RE.test(dev)) throw invalidArgument(`${f}.dev`, 'must be an interface name of at most 15 characters');
    if (!dev && !i.nodev && !i.disabled)
      throw invalidArgument(
        `${f}.dev`,
        'is required (the host interface the address is added to, e.g. "eth0" or "lo"), unless nodev says the host has the address already',
      );
    if (i.label && (!/^[A-Za-z0-9_.-]+$/.test(i.label) || dev.length + 1 + i.label.length > 15))
      throw invalidArgument(`${f}.label`, 'must be a short name: DEV:LABEL is at most 15 characters');
    if (!i.disabled) {
      if (family === 4) v4++;
      else v6++;
    }
  }
  if (v4 > MAX_ADDRS || v6 > MAX_ADDRS)
    throw invalidArgument(`${F}.network.interfaces`, `at most ${MAX_ADDRS} addresses per family (Linux-VServer's limit too)`);

  for (const [n, name] of (o.bcapabilities?.add ?? []).entries()) {
    const f = `${F}.bcapabilities.add[${n}]`;
    if (!isCapability(name)) throw invalidArgument(f, `unknown capability "${name}"`);
    const why = FORBIDDEN_BCAPS[normalizeCapability(name)];
    if (why) throw invalidArgument(f, `${normalizeCapability(name)} cannot be given to a vserver guest: ${why}`);
  }
  for (const [n, name] of (o.bcapabilities?.drop ?? []).entries()) {
    if (!isCapability(name)) throw invalidArgument(`${F}.bcapabilities.drop[${n}]`, `unknown capability "${name}"`);
  }
  for (const [n, c] of o.ccapabilities.entries()) {
    const f = `${F}.ccapabilities[${n}]`;
    if (!Ccap[c] || c === Ccap.CONTEXT_CAPABILITY_UNSPECIFIED) throw invalidArgument(f, `unknown context capability ${c}`);
    const why = CCAP_REFUSED[c];
    if (why) throw refused(f, `context capability ${ccapName(c)}`, why);
    const need = CCAP_NEEDS[c];
    if (need && !helper[need.feature]) throw refused(f, `context capability ${ccapName(c)}`, `${need.how}, and this osvirt-helper does not support it`);
  }
  for (const [n, c] of o.flags.entries()) {
    const f = `${F}.flags[${n}]`;
    if (!Cflag[c] || c === Cflag.CONTEXT_FLAG_UNSPECIFIED) throw invalidArgument(f, `unknown context flag ${c}`);
    if (!CFLAG_HOLDS.has(c)) throw refused(f, `context flag ${cflagName(c)}`, CFLAG_REFUSED[c] ?? NO_COUNTERPART);
  }

  for (const res of RLIMIT_RESOURCES) {
    const r = o.rlimits?.[res];
    if (!r) continue;
    const f = `${F}.rlimits.${res}`;
    for (const k of ['hard', 'soft', 'min'] as const) {
      checkLimitValue(`${f}.${k}`, r[k]);
      // rss is in pages and becomes the memory cgroup's limits.
      if (res === 'rss' && r[k] !== undefined) checkRange(`${f}.${k}`, r[k]!, MAX_MEMORY_BYTES / BigInt(PAGE_SIZE));
      if (r[k] !== undefined && r[`${k}Inf`]) throw invalidArgument(`${f}.${k}`, `give a number or ${k}_inf, not both`);
    }
    const hard = r.hardInf ? Infinity : r.hard === undefined ? undefined : Number(r.hard);
    const soft = r.softInf ? Infinity : r.soft === undefined ? undefined : Number(r.soft);
    if (hard !== undefined && soft !== undefined && soft > hard) throw invalidArgument(`${f}.soft`, 'must not exceed hard');
    if (r.min !== undefined || r.minInf) {
      if (res !== 'rss') throw refused(`${f}.min`, `a guaranteed minimum of ${res}`, 'Linux has no reservation for it (only memory has one: rss.min)');
      if (layout !== 'v2')
        throw refused(
          `${f}.min`,
          'a guaranteed minimum of resident memory',
          'it is memory.min of the cgroup v2 memory controller, and this host runs the memory controller on cgroup v1, which has no guarantee',
        );
      if (r.minInf) throw invalidArgument(`${f}.min`, 'an infinite guarantee is not possible');
    }
    if (res === 'nproc' && soft !== undefined && soft !== hard) {
      throw invalidArgument(`${f}.soft`, 'the pids cgroup has only a hard limit: leave soft out or make it equal to hard');
    }
    if (res === 'rss' && r.hard !== undefined && Number(r.hard) * PAGE_SIZE < 4 * 1024 * 1024)
      throw invalidArgument(`${f}.hard`, `must be at least 1024 pages (4 MiB): it becomes the memory cgroup limit`);
  }

  const init = o.init;
  if (init) {
    if (!VServerInit_Style[init.style]) throw invalidArgument(`${F}.init.style`, `unknown init style ${init.style}`);
    if (init.runlevelStart && !RUNLEVEL_RE.test(init.runlevelStart)) throw invalidArgument(`${F}.init.runlevel_start`, 'must be a runlevel such as "3"');
    if (init.runlevelStop && !RUNLEVEL_RE.test(init.runlevelStop)) throw invalidArgument(`${F}.init.runlevel_stop`, 'must be a runlevel such as "6"');
    for (const [n, s] of init.killseq.entries()) {
      if (!Number.isInteger(s.signal) || s.signal < 1 || s.signal > 64)
        throw invalidArgument(`${F}.init.killseq[${n}].signal`, 'must be a signal number between 1 and 64');
      if (s.waitSeconds > 3600) throw invalidArgument(`${F}.init.killseq[${n}].wait_seconds`, 'must be at most 3600');
    }
  }
  if (initStyle(spec) === VServerInit_Style.STYLE_SYSV && spec.process?.args.length) {
    throw invalidArgument(
      'spec.process.args',
      "init style sysv runs the guest's /etc/init.d/rc under a stub init; give process.args only with init style plain",
    );
  }
}

/** What the rlimits become: cgroup settings and per-process rlimits. */
export interface LimitPlan {
  pidsLimit?: number;
  memoryLimitBytes?: bigint;
  /** memory.high (v2) / memory.soft_limit_in_bytes (v1). */
  memorySoftBytes?: bigint;
  /** memory.min (v2). */
  memoryMinBytes?: bigint;
  rlimits: Rlimit[];
}

/**
 * The Linux side of the rlimits. `ceiling(type)` is the largest hard limit
 * the host allows for a per-process rlimit (undefined for "unlimited"; for
 * RLIMIT_NOFILE it is fs.nr_open). A limit given as hard only gets the same
 * soft limit; soft only keeps the ceiling as hard.
 */
export function limitPlan(r: VServerRlimits | undefined, ceiling: (t: RlimitType) => bigint | undefined): LimitPlan {
  const plan: LimitPlan = { rlimits: [] };
  if (!r) return plan;
  const page = BigInt(PAGE_SIZE);
  if (r.nproc?.hard !== undefined) plan.pidsLimit = Number(r.nproc.hard);
  if (r.rss) {
    if (r.rss.hard !== undefined) plan.memoryLimitBytes = r.rss.hard * page;
    if (r.rss.soft !== undefined) plan.memorySoftBytes = r.rss.soft * page;
    if (r.rss.min !== undefined) plan.memoryMinBytes = r.rss.min * page;
  }
  // undefined: no limit.
  const min = (a: bigint | undefined, b: bigint | undefined) => (a === undefined ? b : b === undefined || a < b ? a : b);
  const byType = new Map<RlimitType, { soft: bigint | undefined; hard: bigint | undefined }>();
  for (const res of RLIMIT_RESOURCES) {
    const m = PROCESS_RLIMITS[res];
    const l: VServerRlimit | undefined = r[res];
    if (!m || !l || (l.hard === undefined && l.soft === undefined && !l.hardInf && !l.softInf)) continue;
    const top = ceiling(m.type);
    const hard = l.hard !== undefined ? min(l.hard * BigInt(m.unit), top) : top;
    const soft = l.soft !== undefined ? min(l.soft * BigInt(m.unit), hard) : hard;
    // nofile and openfd both become RLIMIT_NOFILE: the smaller applies.
    const prev = byType.get(m.type);
    byType.set(m.type, prev ? { soft: min(prev.soft, soft), hard: min(prev.hard, hard) } : { soft, hard });
  }
  for (const [type, v] of byType) {
    if (v.hard === undefined && v.soft === undefined) plan.rlimits.push({ type, soft: 0n, hard: 0n, unlimited: true });
    else plan.rlimits.push({ type, soft: v.soft ?? RLIM_INFINITY, hard: v.hard ?? RLIM_INFINITY, unlimited: false });
  }
  return plan;
}

/** RLIM_INFINITY of the 64-bit kernel ABI. */
const RLIM_INFINITY = 0xffffffffffffffffn;

/** Merge a derived value into one the spec gives itself; both given and different is a conflict. */
export function mergeResource<T extends number | bigint>(field: string, mine: T | undefined, theirs: T, from: string): T {
  if (mine === undefined) return theirs;
  if (theirs && theirs !== mine) throw invalidArgument(field, `is ${theirs} but ${from} makes it ${mine}; give one of them`);
  return mine;
}

export function mergeResources(res: Resources | undefined, plan: LimitPlan): Resources {
  const base: Resources = { memoryLimitBytes: 0n, cpuWeight: 0, cpuQuotaUs: 0n, cpuPeriodUs: 0n, pidsLimit: 0, cpusetCpus: '', cpusetMems: '', ...(res ?? {}) };
  return {
    ...base,
    pidsLimit: mergeResource('spec.resources.pids_limit', plan.pidsLimit, base.pidsLimit, 'spec.vserver.rlimits.nproc.hard'),
    memoryLimitBytes: mergeResource('spec.resources.memory_limit_bytes', plan.memoryLimitBytes, base.memoryLimitBytes, 'spec.vserver.rlimits.rss.hard'),
  };
}

export function mergeRlimits(own: Rlimit[], plan: LimitPlan): Rlimit[] {
  for (const r of plan.rlimits) {
    const i = own.findIndex((x) => x.type === r.type);
    if (i >= 0) throw invalidArgument(`spec.process.rlimits[${i}]`, `${RlimitType[r.type]} is also set by spec.vserver.rlimits; give one of them`);
  }
  return [...own, ...plan.rlimits];
}
