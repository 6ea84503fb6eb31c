// Name servers for containers with a network namespace of their own on a
// bridge: the host's, as Docker and Podman give theirs. A loopback server in
// the host's resolv.conf (systemd-resolved's 127.0.0.53, a local dnsmasq on
// 127.0.0.1) is the host's own stub and unreachable from the container's
// namespace, so it is left out; when it is all there is, systemd-resolved's
// list of its upstream servers is used instead (what Docker does), and when
// there is none of those either the container gets no resolv.conf from
// osvirt and GetInfo says why.
import { readFileSync } from 'node:fs';

/** Where systemd-resolved lists the upstream servers its 127.0.0.53 stub forwards to. */
export const RESOLVED_UPSTREAMS = '/run/systemd/resolve/resolv.conf';

export interface ContainerResolv {
  /** The container's resolv.conf, or undefined when the host has no server a container can reach. */
  conf?: string;
  /** Why conf is undefined, or what was used in place of the host's file: for the log and GetInfo. */
  note?: string;
}

function isLoopback(server: string): boolean {
  return /^127\./.test(server) || server === '::1';
}

/** Name servers (non-loopback) and search/domain/options lines of a resolv.conf. */
export function parseResolv(text: string): { servers: string[]; loopback: string[]; other: string[] } {
  const servers: string[] = [];
  const loopback: string[] = [];
  const other: string[] = [];
  for (const line of text.split('\n')) {
    const m = /^\s*nameserver\s+(\S+)/.exec(line);
    if (m) (isLoopback(m[1]!) ? loopback : servers).push(m[1]!);
    else if (/^\s*(search|domain|options)\s/.test(line)) other.push(line.trim());
  }
  return { servers, loopback, other };
}

function render(from: string, servers: string[], other: string[]): string {
  return `# written by osvirt from the host's ${from}\n${servers.map((s) => `nameserver ${s}`).join('\n')}\n${other.map((l) => l + '\n').join('')}`;
}

function read(file: string): string | undefined {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
}

/**
 * The resolv.conf for a bridged container, from the host's (`hostFile`,
 * /etc/resolv.conf unless the daemon's --resolv-conf says otherwise).
 */
export function containerResolv(hostFile: string, resolvedFile = RESOLVED_UPSTREAMS): ContainerResolv {
  const text = read(hostFile);
  if (text === undefined) return { note: `dns: cannot read ${hostFile}: containers on the bridge get no /etc/resolv.conf from osvirt` };
  const host = parseResolv(text);
  if (host.servers.length) return { conf: render(hostFile, host.servers, host.other) };
  if (!host.loopback.length) return { note: `dns: ${hostFile} names no name server: containers on the bridge get no /etc/resolv.conf from osvirt` };
  const upstream = parseResolv(read(resolvedFile) ?? '');
  if (upstream.servers.length) {
    // resolved's search domains are in its own file too; keep the host file's options.
    return {
      conf: render(resolvedFile, upstream.servers, [
        ...upstream.other.filter((l) => !l.startsWith('options')),
        ...host.other.filter((l) => l.startsWith('options')),
      ]),
      note: `dns: ${hostFile} names only the host's loopback resolver (${host.loopback.join(', ')}); containers get systemd-resolved's upstream servers from ${resolvedFile}`,
    };
  }
  return {
    note: `dns: ${hostFile} names only the host's loopback resolver (${host.loopback.join(', ')}), which a container's network namespace cannot reach, and there is no ${resolvedFile}: containers on the bridge get no /etc/resolv.conf from osvirt; give the daemon --resolv-conf with reachable servers, or mount one (spec.mounts at /etc/resolv.conf)`,
  };
}
