// Linux capability names (capabilities(7)), indexed by number, and the
// default bounding set osvirt gives a system container.
export const CAPABILITY_NAMES = [
  'chown',
  'dac_override',
  'dac_read_search',
  'fowner',
  'fsetid',
  'kill',
  'setgid',
  'setuid',
  'setpcap',
  'linux_immutable',
  'net_bind_service',
  'net_broadcast',
  'net_admin',
  'net_raw',
  'ipc_lock',
  'ipc_owner',
  'sys_module',
  'sys_rawio',
  'sys_chroot',
  'sys_ptrace',
  'sys_pacct',
  'sys_admin',
  'sys_boot',
  'sys_nice',
  'sys_resource',
  'sys_time',
  'sys_tty_config',
  'mknod',
  'lease',
  'audit_write',
  'audit_control',
  'setfcap',
  'mac_override',
  'mac_admin',
  'syslog',
  'wake_alarm',
  'block_suspend',
  'audit_read',
  'perfmon',
  'bpf',
  'checkpoint_restore',
] as const;

export type CapabilityName = (typeof CAPABILITY_NAMES)[number];

/** What LXC drops from system containers by default. */
export const DEFAULT_DROPPED: readonly CapabilityName[] = [
  'sys_module',
  'sys_rawio',
  'sys_time',
  'sys_boot',
  'mac_admin',
  'mac_override',
  'audit_control',
  'wake_alarm',
];

export function normalizeCapability(name: string): string {
  return name.toLowerCase().replace(/^cap_/, '');
}

export function isCapability(name: string): boolean {
  return (CAPABILITY_NAMES as readonly string[]).includes(normalizeCapability(name));
}

/** The bounding set a spec's Capabilities message asks for. */
export function boundingSet(caps: { add: string[]; drop: string[]; dropAll: boolean } | undefined): CapabilityName[] {
  let set = new Set<string>(caps?.dropAll ? [] : CAPABILITY_NAMES.filter((c) => !DEFAULT_DROPPED.includes(c)));
  for (const a of caps?.add ?? []) set.add(normalizeCapability(a));
  for (const d of caps?.drop ?? []) set.delete(normalizeCapability(d));
  set = new Set([...set].filter(isCapability));
  return CAPABILITY_NAMES.filter((c) => set.has(c));
}
