// What a container's network is on the host beyond its interfaces
// (network.ts): the daemon's bridge and its address table, the NAT and the
// published ports (nat.ts) recorded in ports.json, and the name servers its
// /etc/resolv.conf gets (dns.ts). Shared by a start, a restore and recovery.
import { promises as fs, lstatSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import type { Logger } from 'pino';
import type { ContainerSpec } from '../../src/gen/osvirt/v1/container';
import { RuntimeStatus, type RuntimeState } from '../../src/core/driver';
import { writeFileAtomic } from '../../src/core/atomic-file';
import { errorMessage, missingFeature, OsvirtError } from '../../src/core/errors';
import type { ContainerFiles } from './container-files';
import { containerResolv, type ContainerResolv } from './dns';
import { ensureNat, natUnavailable, nftPath, publishPorts, sweepPorts, unpublishPorts } from './nat';
import type { BridgeConfig, Ipam } from './network';

export class ContainerNetwork {
  constructor(
    /** The daemon's bridge: the one with NAT, port rules and addresses from ipam. */
    readonly bridge: BridgeConfig,
    readonly ipam: Ipam,
    private readonly files: ContainerFiles,
    /** The host's resolver configuration bridged containers' /etc/resolv.conf is made from. */
    private readonly resolvConf: string,
    private readonly logger: Logger,
  ) {}

  /** The daemon's own bridge gets NAT (masquerade) and the port chains; another bridge is the user's. */
  async ensureNat(bridge: string): Promise<void> {
    if (bridge === this.bridge.name) await ensureNat(this.bridge.name, this.bridge.subnet, this.logger);
  }

  private portsFile(id: string): string {
    return path.join(this.files.dir(id), 'ports.json');
  }

  /**
   * Publishes the container's ports (nat.ts checks that nobody else holds
   * them). ports.json is written first: a daemon that dies before it could
   * record the run still finds and removes the rules (unpublish, at cleanup).
   */
  async publish(id: string, bridge: string, address: string, spec: ContainerSpec): Promise<void> {
    if (!spec.ports.length) return;
    const nat = natUnavailable();
    if (nat) throw missingFeature('nftables (nft)', `spec.ports are published as nftables DNAT rules: ${nat}`);
    if (!address)
      throw new OsvirtError('FAILED_PRECONDITION', 'NO_ADDRESS', `container "${id}" has no address on ${bridge} to publish its ports to`, [], {
        container: id,
      });
    const to = address.split('/')[0]!;
    await writeFileAtomic(this.portsFile(id), JSON.stringify({ bridge, address: to }) + '\n', 0o644, false);
    await publishPorts(id, bridge, to, spec.ports);
  }

  /**
   * Does a container of any driver on this bridge publish ports to this
   * address? Its ports.json says so: the drivers built on this one keep their
   * containers' directories side by side (<state>/drivers/<driver>/containers).
   */
  private async publishesTo(container: string, address: string): Promise<boolean> {
    const drivers = path.dirname(this.files.stateDir);
    for (const d of await fs.readdir(drivers).catch(() => [] as string[])) {
      try {
        const rec = JSON.parse(await fs.readFile(path.join(drivers, d, 'containers', container, 'ports.json'), 'utf8')) as { address?: string };
        if (rec.address === address) return true;
      } catch {
        // not this driver's, or no ports
      }
    }
    return false;
  }

  /** Removes the container's port rules, if it has any (runtime.json or ports.json says where). Idempotent. */
  async unpublish(id: string, bridge?: string): Promise<void> {
    let on = bridge;
    if (!on) {
      // Read in place: this runs at every start, stop and delete, and most containers publish nothing.
      try {
        on = (JSON.parse(readFileSync(this.portsFile(id), 'utf8')) as { bridge?: string }).bridge;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ENOENT') return; // no ports published, nothing to remove
        // unreadable or torn: removed below; the port sweep at the next daemon start removes rules nothing names
      }
    }
    if (on) await unpublishPorts(id, on);
    await fs.rm(this.portsFile(id), { force: true });
  }

  /**
   * Port rules of containers that are gone (their state was lost) would hold
   * host ports forever: a rule is live while its container's ports.json
   * names the address it points to (publishesTo). A running container whose
   * rules are missing (`nft flush ruleset`, a firewall reload) gets them
   * again, so restarting the daemon repairs them.
   */
  async reconcilePorts(driver: string, items: { id: string; spec: ContainerSpec }[], states: Record<string, RuntimeState>): Promise<void> {
    if (!nftPath()) return;
    try {
      const { removed, present } = await sweepPorts(this.bridge.name, (c, address) => this.publishesTo(c, address));
      if (removed.length) this.logger.warn({ driver, containers: removed }, 'removed the published-port rules of containers that are gone');
      for (const { id, spec } of items) {
        if (!spec.ports.length || present.has(id) || states[id]?.status !== RuntimeStatus.RUNTIME_STATUS_RUNNING) continue;
        const net = (await this.files.readRuntime(id))?.network;
        if (net?.publishedOn !== this.bridge.name || !net.address) continue;
        try {
          await ensureNat(this.bridge.name, this.bridge.subnet, this.logger);
          await this.publish(id, net.publishedOn, net.address, spec);
          this.logger.warn({ container: id, driver }, 'published the ports of a running container again: its rules were gone (nft flush ruleset?)');
        } catch (e) {
          this.logger.error({ container: id, driver, err: errorMessage(e) }, 'cannot publish the ports of a running container again');
        }
      }
    } catch (e) {
      this.logger.warn({ driver, err: errorMessage(e) }, 'cannot check the published-port rules');
    }
  }

  /**
   * The host's name servers (dns.ts) for a bridged container's /etc/resolv.conf.
   * On a copy-on-write root (a template, rootfs.copy_on_write; `lower` is its
   * read-only layer with /etc) the file is written into the container's own
   * upper layer: the container may change it and a checkpoint carries it. A
   * root osvirt does not own (a plain rootfs.path is the user's directory,
   * rootfs.host the host's /etc) gets a generated file bound read-only over
   * it instead, as Docker and Podman do, and only over an existing regular
   * file: nothing is created there. Skipped when the spec mounts its own, or
   * the image's file is a symlink (a resolver of its own, like
   * systemd-resolved), or the host has no server a container can reach
   * (GetInfo says so).
   */
  async dnsArgs(id: string, spec: ContainerSpec, lower: string | undefined): Promise<string[]> {
    if (spec.mounts.some((m) => path.posix.normalize(m.destination).replace(/\/+$/, '') === '/etc/resolv.conf')) return [];
    const isSymlink = (f: string) => {
      try {
        return lstatSync(f).isSymbolicLink();
      } catch {
        return false;
      }
    };
    if (lower) {
      if (isSymlink(path.join(lower, 'etc/resolv.conf')) || isSymlink(path.join(this.files.dir(id), 'upper/etc/resolv.conf'))) return [];
      const conf = containerResolv(this.resolvConf).conf;
      return conf ? ['--write-file', `/etc/resolv.conf:${conf.trimEnd()}`] : [];
    }
    const file = await this.resolvFile(id, spec);
    return file ? ['--mount', `bind:${file}:/etc/resolv.conf:ro:`] : [];
  }

  /** The generated resolv.conf bound over a root osvirt does not own (see dnsArgs), or undefined for none. */
  async resolvFile(id: string, spec: ContainerSpec): Promise<string | undefined> {
    const src = spec.rootfs?.source;
    const root = src?.$case === 'path' ? src.value : src?.$case === 'host' ? '/' : undefined;
    if (!root) return undefined;
    try {
      if (!lstatSync(path.join(root, 'etc/resolv.conf')).isFile()) return undefined;
    } catch {
      return undefined;
    }
    const conf = containerResolv(this.resolvConf).conf;
    if (!conf) return undefined;
    // Readable by the container's root: the helper binds an idmapped copy, made as the host's root.
    const file = path.join(this.files.dir(id), 'resolv.conf');
    await writeFileAtomic(file, conf, 0o644, false);
    return file;
  }

  /** What GetInfo and the log say about the containers' name servers (dns.ts). */
  dns(): ContainerResolv {
    return containerResolv(this.resolvConf);
  }
}
