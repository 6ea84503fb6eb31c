// How a driver built on the lxc driver (jail, vserver) adds its semantics:
// it keeps the lxc machinery (helper, monitor, cgroups, rootfs, network,
// checkpoint) and hooks in where its model differs. A start, a restore and
// the cleanup after a run call the same hooks.
import type { ContainerSpec } from '../../src/gen/osvirt/v1/container';
import type { ContainerCgroup } from './cgroups';

export interface LxcExtension {
  /** Check driver-specific options; throw INVALID_ARGUMENT / FAILED_PRECONDITION. */
  validate?(id: string, spec: ContainerSpec): Promise<void>;
  /** After the container's cgroups exist, before its init is cloned or restored (e.g. attach BPF filters to cg.unifiedDir()). */
  beforeLaunch?(id: string, spec: ContainerSpec, cg: ContainerCgroup): Promise<void>;
  /** Extra `osvirt-helper run` options (placed before `--`). */
  helperArgs?(id: string, spec: ContainerSpec): string[];
  /** Called with the init's pid between "created" and "go", after network setup (e.g. host addresses). */
  configure?(id: string, spec: ContainerSpec, initPid: number): Promise<void>;
  /** After a run ended and its host resources are gone (also after a failed start or restore); idempotent. */
  afterStop?(id: string): Promise<void>;
  /** Extra `osvirt-helper exec` options, so exec'd processes get what the init got (seccomp, rlimits). */
  execArgs?(id: string): string[];
  /** Containers on the host's network stack may be checkpointed (their sockets come back there). */
  checkpointHostNetwork?: boolean;
}
