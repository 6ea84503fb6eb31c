// The daemon's listeners. osvirt accepts connections itself (unix sockets,
// TLS 1.3 with client certificates) and hands them to grpc-js through a
// connection injector, so it knows exactly who is on each connection: the
// peer's SO_PEERCRED on a unix socket, the certificate's subject on TLS.
// Each connection is tagged; the auth interceptor reads the tag per call.
import { spawn } from 'node:child_process';
import { promises as fs, readFileSync } from 'node:fs';
import * as net from 'node:net';
import * as tls from 'node:tls';
import { ServerCredentials, type Server, type ServerInterceptingCallInterface } from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { helperPath } from '../paths';
import type { Identity, IdentityResult } from './interceptor';
import { isRole } from './roles';

const TAG = 'osvirt-conn:';

export interface PeerCred {
  uid: number;
  gid: number;
  pid: number;
}

/** SO_PEERCRED of a connected unix socket, read by the native helper (Node has no getsockopt). */
export function peerCred(sock: net.Socket): Promise<PeerCred | undefined> {
  return new Promise((resolve) => {
    let out = '';
    let child;
    try {
      // The socket becomes the child's fd 3.
      child = spawn(helperPath(), ['peercred', '3'], { stdio: ['ignore', 'pipe', 'ignore', sock] });
    } catch {
      return resolve(undefined);
    }
    child.stdout!.on('data', (b: Buffer) => (out += b.toString()));
    child.once('error', () => resolve(undefined));
    child.once('close', (code) => {
      const m = /uid=(\d+) gid=(\d+) pid=(\d+)/.exec(out);
      resolve(code === 0 && m ? { uid: Number(m[1]), gid: Number(m[2]), pid: Number(m[3]) } : undefined);
    });
  });
}

function groupId(name: string): number | undefined {
  try {
    for (const line of readFileSync('/etc/group', 'utf8').split('\n')) {
      const [g, , gid] = line.split(':');
      if (g === name) return Number(gid);
    }
  } catch {
    // no /etc/group
  }
  return undefined;
}

/** Supplementary groups of a live process, from /proc (SO_PEERCRED only has the primary gid). */
function processGroups(pid: number): number[] {
  try {
    const m = /^Groups:\s*(.*)$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return (m?.[1] ?? '').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

export const ADMIN_GROUP = 'osvirt';

export class ConnectionRegistry {
  private seq = 0;
  private readonly conns = new Map<string, IdentityResult>();
  /** Every accepted socket, so a shutdown can end the ones a long stream keeps open. */
  private readonly sockets = new Set<net.Socket>();
  private readonly servers: (net.Server | tls.Server)[] = [];
  private readonly injectors = new Map<string, ReturnType<Server['createConnectionInjector']>>();

  constructor(
    private readonly grpc: Server,
    private readonly logger: Logger,
  ) {}

  private injector(): ReturnType<Server['createConnectionInjector']> {
    let i = this.injectors.get('insecure');
    if (!i) {
      i = this.grpc.createConnectionInjector(ServerCredentials.createInsecure());
      this.injectors.set('insecure', i);
    }
    return i;
  }

  /** Tag the socket with its identity and hand it to grpc-js. */
  private inject(sock: net.Socket, who: IdentityResult): void {
    const id = `${TAG}${++this.seq}`;
    this.conns.set(id, who);
    this.sockets.add(sock);
    sock.once('close', () => {
      this.conns.delete(id);
      this.sockets.delete(sock);
    });
    // grpc-js reports socket.remoteAddress as the call's peer; make it our tag.
    Object.defineProperty(sock, 'remoteAddress', { value: id, configurable: true });
    Object.defineProperty(sock, 'remotePort', { value: undefined, configurable: true });
    this.injector().injectConnection(sock);
  }

  /** Resolve a call's identity from its connection tag. */
  authenticate(call: ServerInterceptingCallInterface): IdentityResult {
    const who = this.conns.get(call.getPeer());
    return who ?? { error: 'unknown connection' };
  }

  private async listenUnix(path: string, mode: number, group: number | undefined, onConn: (s: net.Socket) => void): Promise<net.Server> {
    await fs.rm(path, { force: true });
    const server = net.createServer({ pauseOnConnect: true }, onConn);
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(path, () => resolve());
    });
    await fs.chmod(path, mode);
    if (group !== undefined) await fs.chown(path, 0, group).catch(() => undefined);
    this.servers.push(server);
    return server;
  }

  /** The admin socket: root and members of the osvirt group (mode 0660 root:osvirt, checked again by SO_PEERCRED). */
  async listenAdmin(path: string): Promise<void> {
    const gid = groupId(ADMIN_GROUP);
    await this.listenUnix(path, 0o660, gid, (sock) => {
      peerCred(sock).then((cred) => {
        let who: IdentityResult;
        if (!cred) who = { principal: 'unix:unknown', role: 'admin', via: 'unix' };
        else if (cred.uid === 0 || (gid !== undefined && (cred.gid === gid || processGroups(cred.pid).includes(gid)))) {
          who = { principal: `uid:${cred.uid}`, role: 'admin', via: 'unix', uid: cred.uid, pid: cred.pid };
        } else {
          who = { error: `uid ${cred.uid} is neither root nor in the "${ADMIN_GROUP}" group; use the read-only socket` };
        }
        if (!cred) this.logger.warn('cannot read SO_PEERCRED (native helper missing?); trusting the socket mode');
        this.inject(sock, who);
        sock.resume();
      });
    });
  }

  /** The read-only socket (mode 0666): anyone local may read, nobody may change anything. */
  async listenReadOnly(path: string): Promise<void> {
    await this.listenUnix(path, 0o666, undefined, (sock) => {
      peerCred(sock).then((cred) => {
        this.inject(sock, { principal: cred ? `uid:${cred.uid}` : 'unix-ro', role: 'reader', via: 'unix-ro', uid: cred?.uid, pid: cred?.pid });
        sock.resume();
      });
    });
  }

  /** A unix socket whose every caller gets one fixed identity (management containers). */
  async listenFixed(path: string, identity: Identity): Promise<{ close(): Promise<void> }> {
    const sockets = new Set<net.Socket>();
    const server = await this.listenUnix(path, 0o666, undefined, (sock) => {
      sockets.add(sock);
      sock.once('close', () => sockets.delete(sock));
      this.inject(sock, identity);
      sock.resume();
    });
    return {
      close: async () => {
        this.servers.splice(this.servers.indexOf(server), 1);
        for (const s of sockets) s.destroy();
        await new Promise<void>((r) => server.close(() => r()));
        await fs.rm(path, { force: true });
      },
    };
  }

  /**
   * TCP with TLS 1.3 and a client certificate from our CA, required at the
   * handshake: a client without one never reaches a method. The role is the
   * certificate's OU (admin, operator, reader).
   */
  async listenTls(host: string, port: number, cert: Buffer, key: Buffer, ca: Buffer): Promise<number> {
    const server = tls.createServer({ cert, key, ca, requestCert: true, rejectUnauthorized: true, minVersion: 'TLSv1.3', ALPNProtocols: ['h2'] }, (sock) => {
      const peer = sock.getPeerCertificate();
      const ou = Array.isArray(peer.subject?.OU) ? peer.subject.OU[0] : peer.subject?.OU;
      const cn = Array.isArray(peer.subject?.CN) ? peer.subject.CN[0] : peer.subject?.CN;
      const who: IdentityResult =
        ou && isRole(ou)
          ? { principal: `cn:${cn ?? '?'}`, role: ou, via: 'tls' }
          : { error: `client certificate "${cn ?? '?'}" carries no osvirt role (OU=admin|operator|reader)` };
      this.inject(sock, who);
    });
    server.on('tlsClientError', (e) => this.logger.info({ err: e.message }, 'TLS client refused'));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => resolve());
    });
    this.servers.push(server);
    return (server.address() as net.AddressInfo).port;
  }

  /** Plaintext TCP on loopback for tests: every caller is an admin. */
  async listenInsecureTcp(host: string, port: number): Promise<number> {
    const server = net.createServer((sock) => this.inject(sock, { principal: 'insecure-tcp', role: 'admin', via: 'tls' }));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => resolve());
    });
    this.servers.push(server);
    return (server.address() as net.AddressInfo).port;
  }

  /**
   * Stops accepting, then waits up to graceMs for clients to finish. A
   * connection still open then (an exec stream into a paused container, a
   * console, a WatchEvents) is cut: net.Server.close would otherwise wait for
   * it forever and the daemon would never exit.
   */
  async close(graceMs = 2000): Promise<void> {
    const closed = Promise.all(this.servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<void>((r) => (timer = setTimeout(r, graceMs)));
    await Promise.race([closed, late]);
    clearTimeout(timer);
    for (const sock of this.sockets) sock.destroy();
    await closed;
  }
}
