// The shared-stack IP filter (drivers/common/ipfilter), proven from the
// outside: processes placed in real cgroup2 directories open real sockets,
// and the host sees the result (its own listeners' peers, `ss`, bpftool).
import { strict as assert } from 'node:assert';
import { execFileSync, spawn } from 'node:child_process';
import * as dgram from 'node:dgram';
import { existsSync, mkdirSync, promises as fs, rmdirSync, writeFileSync } from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { cgroup2Roots, IpFilter, normalizePolicy, type IpFilterPolicy } from '../drivers/common/ipfilter';
import { decodePolicy, encodePolicy, formatIpv6, ipv6Bytes } from '../drivers/common/ipfilter/policy';
import { OsvirtError } from '../src/core/errors';
import { until } from '../src/testing/until';

const isRoot = () => process.getuid?.() === 0;

/** Program ids attached to a cgroup, straight from bpftool (which prints nothing for none). */
function attachedIds(dir: string): number[] {
  const out = execFileSync('bpftool', ['-j', 'cgroup', 'show', dir], { encoding: 'utf8' }).trim();
  return out ? (JSON.parse(out) as { id: number }[]).map((p) => p.id) : [];
}

/** Mocha has no skip reasons: put the reason into each test's title. */
function skipSuite(ctx: Mocha.Context, reason: string): never {
  const mark = (s: Mocha.Suite | undefined): void => {
    if (!s) return;
    for (const t of s.tests) t.title += ` (skipped: ${reason})`;
    s.suites.forEach(mark);
  };
  mark(ctx.test?.parent);
  return ctx.skip();
}

describe('ipfilter policy encoding', () => {
  it('fills in defaults and canonical addresses', () => {
    const p = normalizePolicy({ ipv4: ['10.0.0.1'], ipv4Mode: 'new', singleIp: true, loopbackRemap: false });
    assert.equal(p.ipv6Mode, 'disable', 'a restricted IPv4 container does not get the host IPv6 by omission');
    assert.equal(normalizePolicy({ ipv4: [], ipv4Mode: 'inherit', singleIp: false, loopbackRemap: false }).ipv6Mode, 'inherit');
    assert.equal(normalizePolicy({ ipv4: [], ipv4Mode: 'disable', ipv6: ['FD00:0:0::1'], singleIp: false, loopbackRemap: false }).ipv6Mode, 'new');
    assert.deepEqual(normalizePolicy({ ipv4: [], ipv4Mode: 'disable', ipv6: ['FD00:0:0::1'], singleIp: false, loopbackRemap: false }).ipv6, ['fd00::1']);
  });

  it('round-trips through the binary layout', () => {
    const p = normalizePolicy({
      ipv4: ['10.1.2.3', '127.0.0.2'],
      ipv4Mode: 'new',
      ipv6: ['2001:db8::1:0:0:1', '64:ff9b::1.2.3.4'],
      singleIp: true,
      loopbackRemap: true,
    });
    const b = encodePolicy(p);
    assert.deepEqual([...b.subarray(16, 20)], [10, 1, 2, 3], 'addresses are in network byte order');
    assert.deepEqual(decodePolicy(b), p);
    assert.equal(decodePolicy(Buffer.alloc(b.length)), undefined, 'a zeroed storage is "not configured"');
    assert.equal(p.reservedPorts, false, 'reserved ports are off unless asked for');
    const rp = normalizePolicy({ ipv4: ['10.1.2.3'], ipv4Mode: 'new', singleIp: true, loopbackRemap: false, reservedPorts: true });
    assert.equal(encodePolicy(rp).readUInt32LE(0) & (1 << 7), 1 << 7, 'IPF_RESERVED_PORTS is bit 7 of the flags');
    assert.deepEqual(decodePolicy(encodePolicy(rp)), rp);
    assert.equal(formatIpv6(ipv6Bytes('2001:db8:0:0:1:0:0:1')), '2001:db8::1:0:0:1');
    assert.equal(formatIpv6(ipv6Bytes('::')), '::');
    assert.equal(formatIpv6(ipv6Bytes('64:ff9b::1.2.3.4')), '64:ff9b::102:304');
  });

  it('refuses bad policies with INVALID_ARGUMENT naming the field', () => {
    const bad: [IpFilterPolicy, string][] = [
      [{ ipv4: ['10.0.0.1/24'], ipv4Mode: 'new', singleIp: false, loopbackRemap: false }, 'policy.ipv4[0]'],
      [{ ipv4: ['10.0.0.1', '0.0.0.0'], ipv4Mode: 'new', singleIp: false, loopbackRemap: false }, 'policy.ipv4[1]'],
      [{ ipv4: ['10.0.0.1', '10.0.0.1'], ipv4Mode: 'new', singleIp: false, loopbackRemap: false }, 'policy.ipv4[1]'],
      [{ ipv4: ['10.0.0.1'], ipv4Mode: 'inherit', singleIp: false, loopbackRemap: false }, 'policy.ipv4'],
      [{ ipv4: Array.from({ length: 17 }, (_, i) => `10.0.0.${i + 1}`), ipv4Mode: 'new', singleIp: false, loopbackRemap: false }, 'policy.ipv4'],
      [{ ipv4: [], ipv4Mode: 'new', ipv6: ['::ffff:10.0.0.1'], singleIp: false, loopbackRemap: false }, 'policy.ipv6[0]'],
      [{ ipv4: [], ipv4Mode: 'new', ipv6: ['fe80::1%eth0'], singleIp: false, loopbackRemap: false }, 'policy.ipv6[0]'],
      [{ ipv4: [], ipv4Mode: 'jail' as 'new', singleIp: false, loopbackRemap: false }, 'policy.ipv4Mode'],
    ];
    for (const [p, field] of bad) {
      assert.throws(
        () => normalizePolicy(p),
        (e: unknown) => e instanceof OsvirtError && e.code === 'INVALID_ARGUMENT' && e.metadata['field'] === field,
        JSON.stringify(p),
      );
    }
  });
});

// --- the real thing ---------------------------------------------------------

const A4 = '10.123.45.6'; // container A
const B4 = '10.123.45.8'; // container B
const F4 = '10.123.45.7'; // a host address no container owns
const A6 = 'fd00:123:45::6';
const F6 = 'fd00:123:45::7';

/** One socket operation run by python3 inside a cgroup (see PROBE). */
interface Op {
  op: 'sock' | 'socket' | 'raw' | 'hold';
  family?: 4 | 6;
  type?: 'tcp' | 'udp';
  bind?: string;
  bindPort?: number;
  listen?: boolean;
  connect?: string;
  send?: boolean;
  sendto?: string;
  pktinfo?: string;
  port?: number;
  src?: string;
  dst?: string;
  timeout?: number;
}

interface Result {
  ok: boolean;
  errno?: string;
  sockname?: [string, number] | null;
  peername?: [string, number] | null;
  from?: [string, number];
  data?: string;
}

const PROBE = String.raw`
import errno, json, socket, struct, sys
ops = json.loads(sys.argv[1]); out = []; keep = []
FAM = {4: socket.AF_INET, 6: socket.AF_INET6}
TYP = {'tcp': socket.SOCK_STREAM, 'udp': socket.SOCK_DGRAM}
def name(f):
    try:
        a = f(); return [a[0], a[1]]
    except OSError:
        return None
def sock(o):
    s = socket.socket(FAM[o.get('family', 4)], TYP[o.get('type', 'tcp')]); keep.append(s)
    s.settimeout(o.get('timeout', 5))
    r = {}
    if 'bind' in o: s.bind((o['bind'], o.get('bindPort', 0)))
    if o.get('listen'): s.listen(16)
    if 'connect' in o: s.connect((o['connect'], o['port']))
    if o.get('send'):
        s.send(b'ping'); data, frm = s.recvfrom(100); r['from'] = [frm[0], frm[1]]; r['data'] = data.decode()
    if 'sendto' in o:
        if 'pktinfo' in o:
            pi = struct.pack('=I4s4s', 0, socket.inet_aton(o['pktinfo']), bytes(4))
            s.sendmsg([b'ping'], [(socket.IPPROTO_IP, 8, pi)], 0, (o['sendto'], o['port']))  # IP_PKTINFO; python lacks the name
        else:
            s.sendto(b'ping', (o['sendto'], o['port']))
        data, frm = s.recvfrom(100); r['from'] = [frm[0], frm[1]]; r['data'] = data.decode()
    r['sockname'] = name(s.getsockname); r['peername'] = name(s.getpeername)
    return r
def raw(o):
    # A UDP datagram with a source address of our choosing (IP_HDRINCL).
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP); keep.append(s)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
    payload = b'raw'
    udp = struct.pack('!HHHH', 40000, o['port'], 8 + len(payload), 0) + payload
    ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, socket.inet_aton(o['src']), socket.inet_aton(o['dst']))
    s.sendto(ip + udp, (o['dst'], 0))
    return {}
for o in ops:
    if o['op'] == 'hold':
        print(json.dumps(out), flush=True); sys.stdin.readline(); continue
    try:
        if o['op'] == 'socket':
            keep.append(socket.socket(FAM[o['family']], TYP[o.get('type', 'tcp')])); r = {}
        elif o['op'] == 'raw':
            r = raw(o)
        else:
            r = sock(o)
        r['ok'] = True
    except OSError as e:
        r = {'ok': False, 'errno': errno.errorcode.get(e.errno, str(e.errno)) if e.errno else type(e).__name__}
    out.append(r)
print(json.dumps(out), flush=True)
`;

describe('ipfilter (cgroup BPF on a shared network stack)', function () {
  this.timeout(60000);
  const pinRoot = `/sys/fs/bpf/osvirt-test-${process.pid}/ipfilter`;
  const filter = new IpFilter({ pinRoot });
  const tmp = path.join(os.tmpdir(), `osvirt-ipfilter-${process.pid}`);
  const probe = path.join(tmp, 'probe.py');
  let parent = '';
  let cgA = '';
  let cgB = '';
  const addedAddrs: string[] = [];
  const children = new Set<ReturnType<typeof spawn>>();
  const servers: (net.Server | dgram.Socket)[] = [];

  before(async function () {
    if (!isRoot()) skipSuite(this, 'needs root');
    const avail = await IpFilter.available({ pinRoot });
    if (!avail.ok) skipSuite(this, avail.reason);
    const root = cgroup2Roots()[0]!;
    parent = path.join(root, `osvirt-ipfilter-test-${process.pid}`);
    cgA = path.join(parent, 'a');
    cgB = path.join(parent, 'b');
    for (const d of [parent, cgA, cgB]) mkdirSync(d);
    mkdirSync(tmp, { recursive: true });
    writeFileSync(probe, PROBE);
    // The kernel here has no dummy module: test addresses go on lo.
    const have = execFileSync('ip', ['-o', 'addr', 'show', 'dev', 'lo'], { encoding: 'utf8' });
    for (const a of [`${A4}/32`, `${B4}/32`, `${F4}/32`, `${A6}/128`, `${F6}/128`]) {
      if (have.includes(` ${a} `)) continue;
      execFileSync('ip', ['addr', 'add', a, 'dev', 'lo', ...(a.includes(':') ? ['nodad'] : [])]);
      addedAddrs.push(a);
    }
  });

  after(async () => {
    for (const c of children) c.kill('SIGKILL');
    for (const s of servers) s.close();
    for (const d of [cgA, cgB, path.join(parent, 'c')]) if (d && existsSync(d)) await filter.detach(d).catch(() => undefined);
    for (const d of [cgA, cgB, path.join(parent, 'c'), parent]) {
      // Its processes may still be exiting: rmdir fails (EBUSY) until they are gone.
      if (d && existsSync(d)) await until(() => (rmdirSync(d), true), `cgroup ${d} to be removed`, 2500, 50).catch(() => undefined);
    }
    for (const a of addedAddrs) execFileSync('ip', ['addr', 'del', a, 'dev', 'lo']);
    await filter.release().catch(() => undefined);
    await fs.rm(path.dirname(pinRoot), { recursive: true, force: true });
    await fs.rm(tmp, { recursive: true, force: true });
  });

  /** Start python3 inside a cgroup; `first` resolves at the first "hold", `done` at exit. */
  function start(dir: string, ops: Op[]): { first: Promise<Result[]>; done: Promise<Result[]>; release: () => void } {
    const c = spawn('sh', ['-c', 'echo $$ > "$1/cgroup.procs" && exec python3 "$2" "$3"', 'sh', dir, probe, JSON.stringify(ops)], {
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    children.add(c);
    let out = '';
    let err = '';
    let gotFirst: (r: Result[]) => void = () => undefined;
    const first = new Promise<Result[]>((res) => (gotFirst = res));
    c.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      const nl = out.indexOf('\n');
      if (nl >= 0) gotFirst(JSON.parse(out.slice(0, nl)) as Result[]);
    });
    c.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const done = new Promise<Result[]>((res, rej) =>
      c.on('close', (code) => {
        children.delete(c);
        const lines = out.trim().split('\n');
        if (code !== 0) rej(new Error(`probe exited ${code}: ${err}`));
        else res(JSON.parse(lines[lines.length - 1]!) as Result[]);
      }),
    );
    return { first, done, release: () => c.stdin.end('\n') };
  }

  const run = (dir: string, ops: Op[]) => start(dir, ops).done;

  /** A host TCP listener (outside every test cgroup) that records who connects. */
  async function tcpServer(host: string): Promise<{ port: number; peers: { remote: string; local: string }[] }> {
    const peers: { remote: string; local: string }[] = [];
    const s = net.createServer((c) => {
      peers.push({ remote: c.remoteAddress ?? '', local: c.localAddress ?? '' });
      c.end();
    });
    servers.push(s);
    await new Promise<void>((r) => s.listen(0, host, r));
    return { port: (s.address() as net.AddressInfo).port, peers };
  }

  /** A host UDP echo server that records the sources it hears from. */
  async function udpServer(host: string): Promise<{ port: number; peers: string[] }> {
    const peers: string[] = [];
    const s = dgram.createSocket(host.includes(':') ? 'udp6' : 'udp4');
    s.on('message', (m, r) => {
      peers.push(r.address);
      s.send(Buffer.from('echo'), r.port, r.address);
    });
    servers.push(s);
    await new Promise<void>((r) => s.bind(0, host, r));
    return { port: s.address().port, peers };
  }

  const single: IpFilterPolicy = { ipv4: [A4], ipv4Mode: 'new', singleIp: true, loopbackRemap: true };

  it('binding: foreign address EADDRNOTAVAIL, wildcard and loopback become the container address', async () => {
    await filter.attach(cgA, single);
    const st = await filter.status(cgA);
    assert.ok(st.attached && st.complete && st.current, JSON.stringify(st));
    assert.deepEqual(st.policy, normalizePolicy(single));

    const p = start(cgA, [
      { op: 'sock', bind: F4 },
      { op: 'sock', bind: A4 },
      { op: 'sock', bind: '0.0.0.0', listen: true },
      { op: 'sock', type: 'udp', bind: '0.0.0.0' },
      { op: 'sock', bind: '127.0.0.1' },
      { op: 'hold' },
    ]);
    const [foreign, own, wild, wildUdp, lo] = await p.first;
    assert.deepEqual(foreign, { ok: false, errno: 'EADDRNOTAVAIL' });
    assert.equal(own?.sockname?.[0], A4);
    assert.equal(wild?.sockname?.[0], A4, 'single_ip narrows the wildcard');
    assert.equal(wildUdp?.sockname?.[0], A4);
    assert.equal(lo?.sockname?.[0], A4, 'loopback remap');
    // The host agrees: the listener is on the container's address only.
    const port = wild!.sockname![1];
    const ss = execFileSync('ss', ['-Hltn', 'sport', '=', `:${port}`], { encoding: 'utf8' });
    assert.deepEqual(
      ss
        .trim()
        .split('\n')
        .map((l) => l.split(/\s+/)[3]),
      [`${A4}:${port}`],
    );
    await assert.rejects(
      new Promise((res, rej) => net.connect(port, F4).on('connect', res).on('error', rej)),
      /ECONNREFUSED/,
      'nothing listens on the other host addresses',
    );
    p.release();
    await p.done;
  });

  it('connect and sendto: the source is the container address, 127.0.0.1 means the container', async () => {
    await filter.attach(cgA, single);
    const any = await tcpServer('0.0.0.0');
    const loOnly = await tcpServer('127.0.0.1');
    const udp = await udpServer('0.0.0.0');
    const r = await run(cgA, [
      { op: 'sock', connect: F4, port: any.port },
      { op: 'sock', connect: '127.0.0.1', port: any.port },
      { op: 'sock', connect: '127.0.0.1', port: loOnly.port, timeout: 2 },
      { op: 'sock', type: 'udp', sendto: '127.0.0.1', port: udp.port },
      { op: 'sock', type: 'udp', connect: '127.0.0.1', port: udp.port, send: true },
      { op: 'sock', type: 'udp', sendto: F4, port: udp.port, pktinfo: B4 },
      { op: 'socket', family: 6 },
    ]);
    const [out, toLo, toLoOnly, udpLo, udpConn, spoof, v6] = r;
    assert.equal(out?.sockname?.[0], A4, 'outgoing connections use the container address');
    assert.deepEqual(any.peers[0], { remote: A4, local: F4 });
    assert.equal(toLo?.ok, true);
    assert.deepEqual(any.peers[1], { remote: A4, local: A4 }, 'the host saw a connection to the container address, not to 127.0.0.1');
    assert.deepEqual(toLo?.peername, ['127.0.0.1', any.port], 'the container still sees the peer it asked for');
    assert.deepEqual(toLoOnly, { ok: false, errno: 'ECONNREFUSED' }, "the host's loopback-only services are out of reach");
    assert.equal(loOnly.peers.length, 0);
    assert.deepEqual(udpLo?.from, ['127.0.0.1', udp.port], 'a resolver asking 127.0.0.1 gets its answer from 127.0.0.1');
    assert.deepEqual(
      [udpConn?.from, udpConn?.peername],
      [
        ['127.0.0.1', udp.port],
        ['127.0.0.1', udp.port],
      ],
    );
    assert.deepEqual(udp.peers, [A4, A4]);
    assert.deepEqual(spoof, { ok: false, errno: 'EADDRNOTAVAIL' }, 'IP_PKTINFO cannot pick another source');
    assert.deepEqual(v6, { ok: false, errno: 'EAFNOSUPPORT' }, 'IPv6 defaults to disabled for an IPv4-restricted container');
  });

  it('a raw socket cannot send with a foreign source (egress backstop)', async () => {
    await filter.attach(cgA, single);
    const udp = await udpServer(A4);
    const [spoofed, honest] = await run(cgA, [
      { op: 'raw', src: F4, dst: A4, port: udp.port },
      { op: 'raw', src: A4, dst: A4, port: udp.port },
    ]);
    assert.deepEqual(spoofed, { ok: false, errno: 'EPERM' });
    assert.equal(honest?.ok, true);
    await until(() => udp.peers.length > 0, 'the honest datagram', 1000, 20);
    assert.deepEqual(udp.peers, [A4], 'only the honest datagram arrived');
  });

  it('without loopback remap, 127.0.0.1 is not the container (bind refused, connect keeps the source)', async () => {
    await filter.attach(cgA, { ...single, loopbackRemap: false });
    const lo = await tcpServer('127.0.0.1');
    const [bindLo, conn] = await run(cgA, [
      { op: 'sock', bind: '127.0.0.1' },
      { op: 'sock', connect: '127.0.0.1', port: lo.port },
    ]);
    assert.deepEqual(bindLo, { ok: false, errno: 'EADDRNOTAVAIL' });
    assert.equal(conn?.ok, true);
    assert.deepEqual(lo.peers, [{ remote: A4, local: '127.0.0.1' }]);
  });

  it('without single_ip the wildcard stays, but only the container addresses reach it', async () => {
    await filter.attach(cgA, { ipv4: [A4, B4], ipv4Mode: 'new', singleIp: false, loopbackRemap: false });
    const p = start(cgA, [{ op: 'sock', bind: '0.0.0.0', listen: true }, { op: 'hold' }]);
    const [wild] = await p.first;
    assert.equal(wild?.sockname?.[0], '0.0.0.0');
    const port = wild!.sockname![1];
    const reach = (host: string) =>
      new Promise<string>((res) => {
        const c = net.connect({ port, host, timeout: 1000 });
        c.on('connect', () => (c.destroy(), res('connected')));
        c.on('timeout', () => (c.destroy(), res('timeout')));
        c.on('error', (e: NodeJS.ErrnoException) => res(e.code ?? 'error'));
      });
    assert.equal(await reach(A4), 'connected');
    assert.equal(await reach(B4), 'connected');
    assert.equal(await reach(F4), 'timeout', 'a SYN to a foreign address is dropped before the listener sees it');
    p.release();
    await p.done;
  });

  it("'disable' makes IPv4 sockets fail; 'inherit' restricts nothing", async () => {
    await filter.attach(cgA, { ipv4: [], ipv4Mode: 'disable', ipv6: [A6], singleIp: true, loopbackRemap: true });
    const [v4, v6, mapped] = await run(cgA, [
      { op: 'socket', family: 4 },
      { op: 'sock', family: 6, bind: '::' },
      { op: 'sock', family: 6, bind: `::ffff:${A4}` },
    ]);
    assert.deepEqual(v4, { ok: false, errno: 'EAFNOSUPPORT' });
    assert.equal(v6?.sockname?.[0], A6, 'with IPv4 disabled, "::" becomes the one IPv6 address');
    assert.deepEqual(mapped, { ok: false, errno: 'EADDRNOTAVAIL' }, 'no IPv4 through v4-mapped addresses either');

    // Programs attached, IPv4 left alone.
    await filter.attach(cgA, { ipv4: [], ipv4Mode: 'inherit', ipv6: [A6], singleIp: true, loopbackRemap: true });
    assert.equal((await filter.status(cgA)).attached, true);
    const [foreign, wild] = await run(cgA, [
      { op: 'sock', bind: F4 },
      { op: 'sock', bind: '0.0.0.0' },
    ]);
    assert.equal(foreign?.sockname?.[0], F4);
    assert.equal(wild?.sockname?.[0], '0.0.0.0');

    // Nothing restricted at all: nothing attached.
    await filter.attach(cgA, { ipv4: [], ipv4Mode: 'inherit', ipv6Mode: 'inherit', singleIp: false, loopbackRemap: false });
    assert.equal((await filter.status(cgA)).attached, false);
  });

  it('IPv6: foreign addresses refused, ::1 and v4-mapped loopback remapped', async () => {
    await filter.attach(cgA, { ipv4: [A4], ipv4Mode: 'new', ipv6: [A6], singleIp: true, loopbackRemap: true });
    const any6 = await tcpServer('::');
    const [foreign, own, toLo6, toMappedLo] = await run(cgA, [
      { op: 'sock', family: 6, bind: F6 },
      { op: 'sock', family: 6, bind: A6 },
      { op: 'sock', family: 6, connect: '::1', port: any6.port },
      { op: 'sock', family: 6, connect: '::ffff:127.0.0.1', port: any6.port },
    ]);
    assert.deepEqual(foreign, { ok: false, errno: 'EADDRNOTAVAIL' });
    assert.equal(own?.sockname?.[0], A6);
    assert.deepEqual(toLo6?.peername?.[0], '::1');
    assert.deepEqual(toMappedLo?.peername?.[0], '::ffff:127.0.0.1');
    assert.deepEqual(any6.peers, [
      { remote: A6, local: A6 },
      { remote: `::ffff:${A4}`, local: `::ffff:${A4}` },
    ]);
  });

  it('two cgroups with different policies do not affect each other or the host', async () => {
    await filter.attach(cgA, single);
    await filter.attach(cgB, { ipv4: [B4], ipv4Mode: 'new', singleIp: true, loopbackRemap: true });
    const [a, b] = await Promise.all([
      run(cgA, [
        { op: 'sock', bind: A4 },
        { op: 'sock', bind: B4 },
        { op: 'sock', bind: '0.0.0.0' },
      ]),
      run(cgB, [
        { op: 'sock', bind: A4 },
        { op: 'sock', bind: B4 },
        { op: 'sock', bind: '0.0.0.0' },
      ]),
    ]);
    assert.deepEqual(
      a.map((r) => r.errno ?? r.sockname?.[0]),
      [A4, 'EADDRNOTAVAIL', A4],
    );
    assert.deepEqual(
      b.map((r) => r.errno ?? r.sockname?.[0]),
      ['EADDRNOTAVAIL', B4, B4],
    );
    // A cgroup the container makes for itself inherits the filter...
    const nested = path.join(cgA, 'nested');
    mkdirSync(nested);
    try {
      const [n] = await run(nested, [{ op: 'sock', bind: B4 }]);
      assert.deepEqual(n, { ok: false, errno: 'EADDRNOTAVAIL' });
    } finally {
      rmdirSync(nested);
    }
    // ...and the parent cgroup (and so the host) is not filtered.
    const [host] = await run(parent, [{ op: 'sock', bind: F4 }]);
    assert.equal(host?.sockname?.[0], F4);

    // Changing A's policy is a map write: no program is reloaded, B is untouched.
    const ids = (dir: string) => attachedIds(dir).sort();
    const before = { a: ids(cgA), b: ids(cgB) };
    assert.deepEqual(before.a, before.b, 'one program set serves both');
    await filter.attach(cgA, { ipv4: [F4], ipv4Mode: 'new', singleIp: true, loopbackRemap: true });
    assert.deepEqual({ a: ids(cgA), b: ids(cgB) }, before);
    const [a2] = await run(cgA, [{ op: 'sock', bind: '0.0.0.0' }]);
    const [b2] = await run(cgB, [{ op: 'sock', bind: '0.0.0.0' }]);
    assert.equal(a2?.sockname?.[0], F4);
    assert.equal(b2?.sockname?.[0], B4);
  });

  it('detach restores normal behaviour and unpins what no cgroup uses', async () => {
    await filter.attach(cgA, single);
    await filter.attach(cgB, single);
    await filter.detach(cgA);
    const [foreign, wild, lo] = await run(cgA, [
      { op: 'sock', bind: F4 },
      { op: 'sock', bind: '0.0.0.0' },
      { op: 'sock', bind: '127.0.0.1' },
    ]);
    assert.equal(foreign?.sockname?.[0], F4);
    assert.equal(wild?.sockname?.[0], '0.0.0.0');
    assert.equal(lo?.sockname?.[0], '127.0.0.1');
    assert.deepEqual(attachedIds(cgA), []);
    assert.ok(existsSync(pinRoot), 'B still uses the programs');
    await filter.detach(cgB);
    await filter.detach(cgB); // idempotent
    assert.equal(existsSync(pinRoot), false, 'nothing left pinned');
    assert.equal(existsSync(path.dirname(pinRoot)), false);
  });

  it('cleanupStale removes filters of dead containers and half-loaded leftovers, idempotently', async () => {
    const cgC = path.join(parent, 'c');
    mkdirSync(cgC);
    await filter.detach(cgB);
    await filter.attach(cgA, single);
    await filter.attach(cgC, single);
    // What a crash in the middle of loading leaves behind.
    const leftover = path.join(pinRoot, 'tmp-loading-deadbeef-1');
    mkdirSync(leftover);
    execFileSync('bpftool', ['prog', 'loadall', filter.object, path.join(leftover, 'progs')]);
    const ours = (d: string) => d.startsWith(parent + path.sep);
    assert.deepEqual(
      (await filter.list())
        .filter((x) => ours(x.cgroup2Dir))
        .map((x) => [x.cgroup2Dir, x.current, x.programs])
        .sort(),
      [
        [cgA, true, 13],
        [cgC, true, 13],
      ],
    );
    // Only cgroups of this test are judged; C is the dead one.
    const r = await filter.cleanupStale({ isLive: (d) => !ours(d) || d !== cgC });
    assert.deepEqual(r, { detached: [cgC], unpinned: ['tmp-loading-deadbeef-1'] });
    assert.equal((await filter.status(cgC)).attached, false);
    assert.equal((await filter.status(cgA)).complete, true);
    assert.deepEqual(await filter.cleanupStale({ isLive: (d) => !ours(d) || d !== cgC }), { detached: [], unpinned: [] });
    // The default judge: a cgroup with no process in it is stale.
    const r2 = await filter.cleanupStale({
      isLive: async (d) => !ours(d) || (await fs.readFile(path.join(d, 'cgroup.events'), 'utf8')).includes('populated 1'),
    });
    assert.deepEqual(r2.detached, [cgA]);
    assert.equal(existsSync(pinRoot), false);
  });

  it('available() names what is missing', async () => {
    const r = await IpFilter.available({ pinRoot, object: path.join(tmp, 'missing.bpf.o') });
    assert.equal(r.ok, false);
    assert.match(r.reason, /IP filter BPF object is not available: .*missing\.bpf\.o is missing; build it with "make -C drivers\/common\/ipfilter"/);
    await assert.rejects(
      IpFilter.requireAvailable({ pinRoot, object: path.join(tmp, 'missing.bpf.o') }),
      (e: unknown) => e instanceof OsvirtError && e.code === 'FAILED_PRECONDITION',
    );
  });

  it('refuses what is not a container cgroup2 directory', async () => {
    await assert.rejects(filter.attach(cgroup2Roots()[0]!, single), /root of the cgroup2 hierarchy/);
    await assert.rejects(filter.attach(tmp, single), /not a cgroup2 directory/);
    await assert.rejects(filter.attach(path.join(parent, 'nope'), single), (e: unknown) => e instanceof OsvirtError && e.code === 'INVALID_ARGUMENT');
    await filter.detach(path.join(parent, 'nope')); // nothing to do is fine
  });
});
