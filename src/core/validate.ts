// Request validation at the edge. Every check names the offending field
// (as a proto field path) and nothing is changed when one fails.
import * as path from 'node:path';
import * as net from 'node:net';
import { CgroupManageMode, ContainerSpec, MacvlanMode, MountPropagation, MountType, RlimitType, type CheckpointOptions } from '../gen/osvirt/v1/container';
import { ContainerState } from '../gen/osvirt/v1/container';
import { EventType } from '../gen/osvirt/v1/event_service';
import { isCapability } from './capabilities';
import { invalidArgument } from './errors';

const NAME_RE = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
const IFNAME_RE = /^[A-Za-z0-9_.-]{1,15}$/;
const HOSTNAME_RE = /^(?=.{1,64}$)[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$/;
const ENV_RE = /^[A-Za-z_][A-Za-z0-9_]*=/;
const MOUNT_OPT_RE = /^[a-z0-9_]+(=[A-Za-z0-9_.%-]+)?$/;
const CPUSET_RE = /^\d+(-\d+)?(,\d+(-\d+)?)*$/;
const MAX_STRING = 4096;

/** Methods a management container may be granted over its workers. */
export const GRANTABLE_METHODS = [
  'StartContainer',
  'StopContainer',
  'KillContainer',
  'PauseContainer',
  'ResumeContainer',
  'ExecContainer',
  'CheckpointContainer',
  'RestoreContainer',
];
const MAX_LIST = 1024;

/**
 * The largest memory limit osvirt sets: a cgroup limit is a count of pages
 * in a signed long, and both hierarchies read anything near that as "no
 * limit" (v1 shows it as a huge number, which stats reports as 0 from 2^62
 * on), so a larger request would silently mean no limit at all.
 */
export const MAX_MEMORY_BYTES = 2n ** 62n - 1n;
/** The kernel's largest CFS quota (MAX_BW in kernel/sched/core.c: 2^44-1 microseconds); more is EINVAL at start. */
export const MAX_CPU_QUOTA_US = 2n ** 44n - 1n;

/**
 * A 64-bit field against the values it can mean. 64-bit fields decode as
 * bigint, exactly, so a client's "unlimited" UINT64_MAX reaches this check
 * and is answered with the field and the bound instead of a wrapped or
 * rounded number.
 */
export function checkRange(field: string, v: bigint, max: bigint, min = 0n): void {
  if (v > max) throw invalidArgument(field, `${v} is out of range (max ${max})`);
  if (v < min) throw invalidArgument(field, `${v} is out of range (min ${min})`);
}

export function validateName(field: string, name: string): void {
  if (!name) throw invalidArgument(field, 'is required');
  if (!NAME_RE.test(name)) {
    throw invalidArgument(field, 'must be a lowercase DNS label: a-z, 0-9 and "-", 1 to 63 characters, not starting or ending with "-"');
  }
}

/** An absolute, normalized path with no ".." escape and no characters the helper's argv format reserves. */
export function validateAbsPath(field: string, p: string, opts: { allowRoot?: boolean } = {}): void {
  if (!p) throw invalidArgument(field, 'is required');
  if (p.length > MAX_STRING) throw invalidArgument(field, `is longer than ${MAX_STRING} characters`);
  if (!p.startsWith('/')) throw invalidArgument(field, 'must be an absolute path');
  if (p.split('/').includes('..')) throw invalidArgument(field, 'must not contain ".."');
  if (/[\0\n:]/.test(p)) throw invalidArgument(field, 'must not contain NUL, newline or ":"');
  if (!opts.allowRoot && path.posix.normalize(p) === '/') throw invalidArgument(field, 'must not be "/"');
}

function validateStrings(field: string, list: string[], each?: (f: string, s: string) => void): void {
  if (list.length > MAX_LIST) throw invalidArgument(field, `has more than ${MAX_LIST} entries`);
  list.forEach((s, i) => {
    if (s.length > MAX_STRING) throw invalidArgument(`${field}[${i}]`, `is longer than ${MAX_STRING} characters`);
    if (s.includes('\0')) throw invalidArgument(`${field}[${i}]`, 'must not contain NUL');
    each?.(`${field}[${i}]`, s);
  });
}

function validateCidr(field: string, cidr: string): void {
  const m = /^([0-9.]+)\/(\d{1,2})$/.exec(cidr);
  if (!m || !net.isIPv4(m[1] ?? '') || Number(m[2]) > 32 || Number(m[2]) < 1) {
    throw invalidArgument(field, 'must be an IPv4 address with prefix length, e.g. "10.88.0.5/16"');
  }
}

function validateEnum(field: string, value: number, e: object): void {
  if (!Object.values(e).includes(value)) throw invalidArgument(field, `unknown enum value ${value}`);
}

export function validateEnv(field: string, env: string[]): void {
  validateStrings(field, env, (f, s) => {
    if (!ENV_RE.test(s)) throw invalidArgument(f, 'must be KEY=VALUE with KEY matching [A-Za-z_][A-Za-z0-9_]*');
  });
}

export function validateSignal(field: string, sig: number, allowZero = true): void {
  if (!Number.isInteger(sig) || sig < 0 || sig > 64 || (!allowZero && sig === 0)) {
    throw invalidArgument(field, 'must be a signal number between 1 and 64');
  }
}

export function validateSpec(spec: ContainerSpec | undefined, f = 'spec'): asserts spec is ContainerSpec {
  if (!spec) throw invalidArgument(f, 'is required');
  if (!spec.driver) throw invalidArgument(`${f}.driver`, 'is required');
  if (!/^[a-z][a-z0-9_-]{0,62}$/.test(spec.driver)) throw invalidArgument(`${f}.driver`, 'is not a valid driver name');

  const src = spec.rootfs?.source;
  if (src?.$case === 'template' && !NAME_RE.test(src.value)) throw invalidArgument(`${f}.rootfs.template`, 'must be a template name such as "busybox"');
  if (src?.$case === 'path') validateAbsPath(`${f}.rootfs.path`, src.value);
  if (spec.rootfs?.copyOnWrite && src?.$case !== 'path') throw invalidArgument(`${f}.rootfs.copy_on_write`, 'only applies to rootfs.path');
  const seenPorts: { hostIp: string; hostPort: number; protocol: string }[] = [];
  for (const [i, pm] of spec.ports.entries()) {
    const pf = `${f}.ports[${i}]`;
    if (spec.network?.mode?.$case !== 'bridge') throw invalidArgument(`${pf}`, 'ports are published only for bridge networking (network.bridge)');
    if (pm.hostPort < 1 || pm.hostPort > 65535) throw invalidArgument(`${pf}.host_port`, 'must be 1..65535');
    if (pm.containerPort < 1 || pm.containerPort > 65535) throw invalidArgument(`${pf}.container_port`, 'must be 1..65535');
    if (pm.protocol && pm.protocol !== 'tcp' && pm.protocol !== 'udp') throw invalidArgument(`${pf}.protocol`, 'must be "tcp" or "udp"');
    if (pm.hostIp && !net.isIPv4(pm.hostIp))
      throw invalidArgument(`${pf}.host_ip`, 'must be an IPv4 address of the host (empty or 0.0.0.0: every host address)');
    // An empty host_ip (or 0.0.0.0) is every host address, so it overlaps any other on the same port.
    const mine = { hostIp: pm.hostIp === '0.0.0.0' ? '' : pm.hostIp, hostPort: pm.hostPort, protocol: pm.protocol || 'tcp' };
    const dup = seenPorts.findIndex(
      (o) => o.hostPort === mine.hostPort && o.protocol === mine.protocol && (!o.hostIp || !mine.hostIp || o.hostIp === mine.hostIp),
    );
    if (dup >= 0)
      throw invalidArgument(`${pf}.host_port`, `${mine.hostIp || '*'}:${mine.hostPort}/${mine.protocol} is already published by ${f}.ports[${dup}]`);
    seenPorts.push(mine);
  }
  const to = spec.rootfs?.templateOptions;
  if (to && (to.release || to.variant || to.packages.length) && src?.$case !== 'template')
    throw invalidArgument(`${f}.rootfs.template_options`, 'only applies to rootfs.template');

  const p = spec.process;
  if (p) {
    validateStrings(`${f}.process.args`, p.args);
    validateEnv(`${f}.process.env`, p.env);
    if (p.cwd) validateAbsPath(`${f}.process.cwd`, p.cwd, { allowRoot: true });
    p.rlimits.forEach((r, i) => {
      validateEnum(`${f}.process.rlimits[${i}].type`, r.type, RlimitType);
      if (r.type === RlimitType.RLIMIT_TYPE_UNSPECIFIED) throw invalidArgument(`${f}.process.rlimits[${i}].type`, 'is required');
      if (!r.unlimited && r.soft > r.hard) throw invalidArgument(`${f}.process.rlimits[${i}].soft`, 'must not exceed hard');
    });
  }
  if (spec.hostname && !HOSTNAME_RE.test(spec.hostname)) throw invalidArgument(`${f}.hostname`, 'must be a valid hostname of at most 64 characters');
  if (spec.domainname && !HOSTNAME_RE.test(spec.domainname)) throw invalidArgument(`${f}.domainname`, 'must be a valid domain name of at most 64 characters');

  const r = spec.resources;
  if (r) {
    checkRange(`${f}.resources.memory_limit_bytes`, r.memoryLimitBytes, MAX_MEMORY_BYTES);
    if (r.memoryLimitBytes !== 0n && r.memoryLimitBytes < 4n * 1024n * 1024n)
      throw invalidArgument(`${f}.resources.memory_limit_bytes`, 'must be 0 (no limit) or at least 4 MiB');
    if (r.cpuWeight !== 0 && (r.cpuWeight < 1 || r.cpuWeight > 10000)) throw invalidArgument(`${f}.resources.cpu_weight`, 'must be between 1 and 10000');
    checkRange(`${f}.resources.cpu_quota_us`, r.cpuQuotaUs, MAX_CPU_QUOTA_US);
    if (r.cpuQuotaUs !== 0n && r.cpuQuotaUs < 1000n) throw invalidArgument(`${f}.resources.cpu_quota_us`, 'must be at least 1000');
    checkRange(`${f}.resources.cpu_period_us`, r.cpuPeriodUs, 1_000_000n);
    if (r.cpuPeriodUs !== 0n && r.cpuPeriodUs < 1000n) throw invalidArgument(`${f}.resources.cpu_period_us`, 'must be between 1000 and 1000000');
    if (r.cpusetCpus && !CPUSET_RE.test(r.cpusetCpus)) throw invalidArgument(`${f}.resources.cpuset_cpus`, 'must be a cpu list such as "0-1,3"');
    if (r.cpusetMems && !CPUSET_RE.test(r.cpusetMems)) throw invalidArgument(`${f}.resources.cpuset_mems`, 'must be a node list such as "0"');
  }

  const n = spec.network?.mode;
  if (n?.$case === 'bridge') {
    if (n.value.bridge && !IFNAME_RE.test(n.value.bridge))
      throw invalidArgument(`${f}.network.bridge.bridge`, 'must be an interface name of at most 15 characters');
    if (n.value.address) validateCidr(`${f}.network.bridge.address`, n.value.address);
    if (n.value.interfaceName && !IFNAME_RE.test(n.value.interfaceName))
      throw invalidArgument(`${f}.network.bridge.interface_name`, 'must be an interface name of at most 15 characters');
    if (n.value.macAddress && !/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/i.test(n.value.macAddress))
      throw invalidArgument(`${f}.network.bridge.mac_address`, 'must look like 02:00:00:00:00:01');
    if (n.value.mtu !== 0 && (n.value.mtu < 68 || n.value.mtu > 65535)) throw invalidArgument(`${f}.network.bridge.mtu`, 'must be between 68 and 65535');
  } else if (n?.$case === 'macvlan') {
    if (!IFNAME_RE.test(n.value.parent)) throw invalidArgument(`${f}.network.macvlan.parent`, 'is required: a host interface name');
    validateEnum(`${f}.network.macvlan.mode`, n.value.mode, MacvlanMode);
    if (n.value.address) validateCidr(`${f}.network.macvlan.address`, n.value.address);
    if (n.value.interfaceName && !IFNAME_RE.test(n.value.interfaceName))
      throw invalidArgument(`${f}.network.macvlan.interface_name`, 'must be an interface name of at most 15 characters');
  } else if (n?.$case === 'vlan') {
    if (!IFNAME_RE.test(n.value.parent)) throw invalidArgument(`${f}.network.vlan.parent`, 'is required: a host interface name');
    if (n.value.vlanId < 1 || n.value.vlanId > 4094) throw invalidArgument(`${f}.network.vlan.vlan_id`, 'must be between 1 and 4094');
    if (n.value.address) validateCidr(`${f}.network.vlan.address`, n.value.address);
  } else if (n?.$case === 'container') {
    validateName(`${f}.network.container.container`, n.value.container);
  }

  if (spec.mounts.length > 256) throw invalidArgument(`${f}.mounts`, 'has more than 256 entries');
  spec.mounts.forEach((m, i) => {
    const mf = `${f}.mounts[${i}]`;
    validateEnum(`${mf}.type`, m.type, MountType);
    if (m.type === MountType.MOUNT_TYPE_UNSPECIFIED) throw invalidArgument(`${mf}.type`, 'is required (BIND or TMPFS)');
    validateEnum(`${mf}.propagation`, m.propagation, MountPropagation);
    validateAbsPath(`${mf}.destination`, m.destination);
    if (m.type === MountType.MOUNT_TYPE_BIND) validateAbsPath(`${mf}.source`, m.source, { allowRoot: true });
    m.options.forEach((o, j) => {
      if (!MOUNT_OPT_RE.test(o)) throw invalidArgument(`${mf}.options[${j}]`, 'must look like "nosuid" or "size=64m"');
    });
  });

  const c = spec.capabilities;
  if (c) {
    for (const [field, list] of [
      ['add', c.add],
      ['drop', c.drop],
    ] as const) {
      list.forEach((name, i) => {
        if (!isCapability(name)) throw invalidArgument(`${f}.capabilities.${field}[${i}]`, `unknown capability "${name}"`);
      });
    }
  }
  spec.devices.forEach((d, i) => {
    validateAbsPath(`${f}.devices[${i}].path`, d.path);
    if (!d.path.startsWith('/dev/')) throw invalidArgument(`${f}.devices[${i}].path`, 'must be under /dev/');
    if (d.permissions && !/^(?!.*(.).*\1)[rwm]{1,3}$/.test(d.permissions))
      throw invalidArgument(`${f}.devices[${i}].permissions`, 'must be a combination of r, w and m');
  });
  validateSignal(`${f}.stop_signal`, spec.stopSignal);
  if (spec.stopTimeout && (spec.stopTimeout.seconds < 0 || spec.stopTimeout.seconds > 3600))
    throw invalidArgument(`${f}.stop_timeout`, 'must be between 0 and 3600 seconds');
  for (const [k, v] of Object.entries(spec.labels)) {
    if (!/^[A-Za-z0-9]([A-Za-z0-9._/-]{0,61}[A-Za-z0-9])?$/.test(k)) throw invalidArgument(`${f}.labels`, `invalid label key "${k.slice(0, 64)}"`);
    if (v.length > 253) throw invalidArgument(`${f}.labels[${k}]`, 'is longer than 253 characters');
  }
  const sec = spec.security;
  if (sec) {
    sec.seccompDeny.forEach((n, i) => {
      if (!/^[a-z0-9_]{1,40}$/.test(n)) throw invalidArgument(`${f}.security.seccomp_deny[${i}]`, 'must be a system call name such as "ptrace"');
    });
    sec.maskedPaths.forEach((p, i) => validateAbsPath(`${f}.security.masked_paths[${i}]`, p));
    sec.readonlyPaths.forEach((p, i) => validateAbsPath(`${f}.security.readonly_paths[${i}]`, p));
  }
  const mg = spec.management;
  if (mg) {
    mg.workers.forEach((w, i) => validateName(`${f}.management.workers[${i}]`, w));
    if (mg.workers.length === 0 && Object.keys(mg.workerSelector).length === 0)
      throw invalidArgument(`${f}.management.workers`, 'name at least one worker or give a worker_selector');
    mg.methods.forEach((m, i) => {
      if (!GRANTABLE_METHODS.includes(m))
        throw invalidArgument(`${f}.management.methods[${i}]`, `"${m}" cannot be granted; one of ${GRANTABLE_METHODS.join(', ')}`);
    });
  }
  const opt = spec.driverOptions;
  if (opt && opt.$case !== 'plugin' && opt.$case !== spec.driver) {
    throw invalidArgument(`${f}.${opt.$case}`, `options for driver "${opt.$case}" given for driver "${spec.driver}"`);
  }
}

export function validatePage(field: string, pageSize: number): number {
  if (pageSize < 0) throw invalidArgument(`${field}`, 'must not be negative');
  if (pageSize > 1000) throw invalidArgument(`${field}`, 'must be at most 1000');
  return pageSize === 0 ? 100 : pageSize;
}

export function validateStates(field: string, states: number[]): void {
  states.forEach((s, i) => validateEnum(`${field}[${i}]`, s, ContainerState));
}

export function validateEventTypes(field: string, types: number[]): void {
  types.forEach((t, i) => validateEnum(`${field}[${i}]`, t, EventType));
}

export function validateCheckpointOptions(f: string, o: CheckpointOptions | undefined): void {
  if (!o) return;
  validateEnum(`${f}.manage_cgroups_mode`, o.manageCgroupsMode, CgroupManageMode);
  if (o.parentCheckpoint) validateName(`${f}.parent_checkpoint`, o.parentCheckpoint);
  if (o.timeout && (o.timeout.seconds < 0 || o.timeout.seconds > 3600)) throw invalidArgument(`${f}.timeout`, 'must be between 0 and 3600 seconds');
}
