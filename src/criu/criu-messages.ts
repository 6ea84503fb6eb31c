// Typed view of CRIU's RPC messages (proto/criu/rpc.proto) and their protobuf encoding.
// Field names are CRIU's own snake_case names so they can be matched against criu(8) and the
// CRIU RPC documentation one to one.

import * as fs from 'node:fs';
import * as path from 'node:path';
import * as protobuf from 'protobufjs';

export const CRIU_REQ_TYPES = [
  'EMPTY',
  'DUMP',
  'RESTORE',
  'CHECK',
  'PRE_DUMP',
  'PAGE_SERVER',
  'NOTIFY',
  'CPUINFO_DUMP',
  'CPUINFO_CHECK',
  'FEATURE_CHECK',
  'VERSION',
  'WAIT_PID',
  'PAGE_SERVER_CHLD',
  'SINGLE_PRE_DUMP',
] as const;
export type CriuReqType = (typeof CRIU_REQ_TYPES)[number];

export type CriuCgMode = 'IGNORE' | 'CG_NONE' | 'PROPS' | 'SOFT' | 'FULL' | 'STRICT' | 'DEFAULT';
export type CriuNetworkLockMethod = 'IPTABLES' | 'NFTABLES' | 'SKIP';
export type CriuPreDumpMode = 'SPLICE' | 'VM_READ';

export interface CriuPageServerInfo {
  address?: string;
  port?: number;
  pid?: number;
  fd?: number;
}

/** Options of one request; each is the criu(8) option of the same name. */
export interface CriuOpts {
  /** A descriptor number in the process that created the RPC socket (-1: use images_dir). */
  images_dir_fd?: number;
  images_dir?: string;
  pid?: number;
  leave_running?: boolean;
  leave_stopped?: boolean;
  ext_unix_sk?: boolean;
  unix_sk_ino?: { inode: number }[];
  tcp_established?: boolean;
  tcp_skip_in_flight?: boolean;
  tcp_close?: boolean;
  evasive_devices?: boolean;
  shell_job?: boolean;
  file_locks?: boolean;
  /** 0 (none) .. 4 (debug); CRIU's default is 2 (errors). */
  log_level?: number;
  /** A plain file name inside the work directory. */
  log_file?: string;
  log_to_stderr?: boolean;
  ps?: CriuPageServerInfo;
  notify_scripts?: boolean;
  root?: string;
  parent_img?: string;
  track_mem?: boolean;
  auto_dedup?: boolean;
  work_dir_fd?: number;
  link_remap?: boolean;
  veths?: { if_in: string; if_out: string }[];
  cpu_cap?: number;
  force_irmap?: boolean;
  exec_cmd?: string[];
  ext_mnt?: { key: string; val: string }[];
  manage_cgroups?: boolean;
  manage_cgroups_mode?: CriuCgMode;
  cg_root?: { ctrl?: string; path: string }[];
  rst_sibling?: boolean;
  inherit_fd?: { key: string; fd: number }[];
  auto_ext_mnt?: boolean;
  ext_sharing?: boolean;
  ext_masters?: boolean;
  skip_mnt?: string[];
  enable_fs?: string[];
  ghost_limit?: number;
  irmap_scan_paths?: string[];
  /** criu --external, e.g. "mnt[/]:root", "veth[eth0]:vh0@br0". */
  external?: string[];
  empty_ns?: number;
  join_ns?: { ns: string; ns_file: string; extra_opt?: string }[];
  cgroup_props?: string;
  cgroup_props_file?: string;
  cgroup_dump_controller?: string[];
  freeze_cgroup?: string;
  /** Seconds. */
  timeout?: number;
  weak_sysctls?: boolean;
  lazy_pages?: boolean;
  status_fd?: number;
  orphan_pts_master?: boolean;
  config_file?: string;
  lsm_profile?: string;
  lsm_mount_context?: string;
  cgroup_yard?: string;
  pre_dump_mode?: CriuPreDumpMode;
  pidfd_store_sk?: number;
  network_lock?: CriuNetworkLockMethod;
  mntns_compat_mode?: boolean;
  skip_file_rwx_check?: boolean;
  unprivileged?: boolean;
  display_stats?: boolean;
}

export interface CriuFeatures {
  mem_track?: boolean;
  lazy_pages?: boolean;
  pidfd_store?: boolean;
}

export interface CriuRequest {
  type: CriuReqType;
  opts?: CriuOpts;
  notify_success?: boolean;
  keep_open?: boolean;
  features?: CriuFeatures;
  pid?: number;
}

export interface CriuNotify {
  script?: string;
  pid?: number;
}

export interface CriuVersionMessage {
  major_number: number;
  minor_number: number;
  gitid?: string;
  sublevel?: number;
  extra?: number;
  name?: string;
}

export interface CriuResponse {
  type: CriuReqType;
  success: boolean;
  dump?: { restored?: boolean };
  restore?: { pid: number };
  notify?: CriuNotify;
  ps?: CriuPageServerInfo;
  cr_errno?: number;
  features?: CriuFeatures;
  cr_errmsg?: string;
  version?: CriuVersionMessage;
  status?: number;
}

/** The directory holding package.json, found by walking up from `start`. */
export function findRepoRoot(start: string = __dirname): string {
  let dir = path.resolve(start);
  for (;;) {
    if (fs.existsSync(path.join(dir, 'package.json'))) return dir;
    const parent = path.dirname(dir);
    if (parent === dir) throw new Error(`no package.json above ${start}: cannot find the osvirt repository root`);
    dir = parent;
  }
}

interface Codec {
  req: protobuf.Type;
  resp: protobuf.Type;
}

let codec: Codec | undefined;

function loadCodec(): Codec {
  if (codec) return codec;
  const file = path.join(findRepoRoot(), 'proto', 'criu', 'rpc.proto');
  const root = new protobuf.Root();
  // keepCase: field names stay CRIU's snake_case (the default would camelCase them).
  root.loadSync(file, { keepCase: true });
  root.resolveAll();
  codec = { req: root.lookupType('criu.criu_req'), resp: root.lookupType('criu.criu_resp') };
  return codec;
}

export function encodeRequest(req: CriuRequest): Uint8Array {
  const { req: type } = loadCodec();
  const message = type.fromObject(req);
  const problem = type.verify(message);
  if (problem) throw new TypeError(`invalid CRIU request: ${problem}`);
  return type.encode(message).finish();
}

export function decodeResponse(bytes: Uint8Array): CriuResponse {
  const { resp: type } = loadCodec();
  const message = type.decode(bytes);
  return type.toObject(message, { enums: String, longs: Number, defaults: false }) as CriuResponse;
}
