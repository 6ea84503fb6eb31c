// Pure parts of the lxc driver's networking: nftables port rules
// (drivers/lxc/nat.ts), resolv.conf (drivers/lxc/dns.ts), host interface
// names (drivers/lxc/network.ts), and jail addresses and fstab lines
// (drivers/jail/options.ts). No root.
import { strict as assert } from 'node:assert';
import { formatPort, natTable, parsePortRules } from '../../drivers/lxc/nat';
import { parseResolv } from '../../drivers/lxc/dns';
import { hostIfName } from '../../drivers/lxc/network';
import { parseFstabLine, parseJailAddress } from '../../drivers/jail/options';
import { isOsvirtError } from '../../src/core/errors';
import { MountType, PortMapping } from '../../src/gen/osvirt/v1/container';

const LISTING = `table ip filter { # handle 1
\tchain input { # handle 1
\t\ttcp dport 80 dnat to 10.0.0.1:80 comment "osvirt:not-ours" # handle 2
\t}
}
table ip osvirt-ovt1 { # handle 7
\tchain ports { # handle 3
\t\tip daddr 127.0.0.1 tcp dport 8080 dnat to 10.200.0.2:80 comment "osvirt:web" # handle 11
\t\tfib daddr type local udp dport 5353 dnat to 10.200.0.3:53 comment "osvirt:dns-1" # handle 12
\t\tcounter packets 0 bytes 0 # handle 13
\t}
}
`;

describe('network parsers (no root)', () => {
  it('reads osvirt port rules from an nft listing, ignoring other tables and rules', () => {
    assert.deepEqual(parsePortRules(LISTING), [
      { table: 'osvirt-ovt1', chain: 'ports', hostIp: '127.0.0.1', protocol: 'tcp', hostPort: 8080, address: '10.200.0.2', container: 'web', handle: 11 },
      { table: 'osvirt-ovt1', chain: 'ports', hostIp: '', protocol: 'udp', hostPort: 5353, address: '10.200.0.3', container: 'dns-1', handle: 12 },
    ]);
    assert.deepEqual(parsePortRules(''), []);
    assert.equal(natTable('ovt1'), 'osvirt-ovt1');
  });

  it('formats published ports as host_ip:host_port->container_port/proto', () => {
    assert.equal(formatPort(PortMapping.fromPartial({ hostPort: 8080, containerPort: 80 })), '0.0.0.0:8080->80/tcp');
    assert.equal(formatPort(PortMapping.fromPartial({ hostIp: '127.0.0.1', hostPort: 53, containerPort: 5353, protocol: 'udp' })), '127.0.0.1:53->5353/udp');
  });

  it('splits a resolv.conf into servers, loopback servers and the other lines', () => {
    const r = parseResolv(
      '# comment\nnameserver 127.0.0.53\nnameserver 192.0.2.1\n  nameserver ::1\nsearch example.org\noptions edns0 trust-ad\nnameserver 2001:db8::1\nbogus line\n',
    );
    assert.deepEqual(r, { servers: ['192.0.2.1', '2001:db8::1'], loopback: ['127.0.0.53', '::1'], other: ['search example.org', 'options edns0 trust-ad'] });
  });

  it('names host interfaces by prefix and a hash of scope and container, within 15 characters', () => {
    const a = hostIfName('ovh', 'web', '/state/a');
    assert.match(a, /^ovh[0-9a-f]{10}$/);
    assert.equal(hostIfName('ovh', 'web', '/state/a'), a);
    assert.notEqual(hostIfName('ovh', 'web', '/state/b'), a, 'another daemon names it differently');
    assert.notEqual(hostIfName('ovh', 'db', '/state/a'), a);
  });
});

describe('jail addresses and fstab lines (no root)', () => {
  const refuses = (fn: () => unknown, description: string) =>
    assert.throws(
      fn,
      (e: unknown) => isOsvirtError(e) && e.code === 'INVALID_ARGUMENT' && e.violations[0]?.field === 'f' && e.violations[0]?.description === description,
    );

  it('reads [iface|]address[/mask] for IPv4 and IPv6', () => {
    assert.deepEqual(parseJailAddress('203.0.113.5', 4, 'lo', 'f'), { family: 4, address: '203.0.113.5', prefix: 32, iface: 'lo' });
    assert.deepEqual(parseJailAddress('em0|192.0.2.7/255.255.255.0', 4, 'lo', 'f'), { family: 4, address: '192.0.2.7', prefix: 24, iface: 'em0' });
    assert.deepEqual(parseJailAddress('192.0.2.8/28', 4, 'lo', 'f'), { family: 4, address: '192.0.2.8', prefix: 28, iface: 'lo' });
    assert.deepEqual(parseJailAddress('2001:db8::5/64', 6, 'lo', 'f'), { family: 6, address: '2001:db8::5', prefix: 64, iface: 'lo' });
    refuses(() => parseJailAddress('2001:db8::5', 4, 'lo', 'f'), '"2001:db8::5" is not an IPv4 address');
    refuses(() => parseJailAddress('192.0.2.7/255.0.255.0', 4, 'lo', 'f'), 'bad netmask in "192.0.2.7/255.0.255.0"');
    refuses(() => parseJailAddress('192.0.2.7/33', 4, 'lo', 'f'), 'bad prefix length in "192.0.2.7/33"');
    refuses(() => parseJailAddress('0.0.0.0', 4, 'lo', 'f'), '"0.0.0.0" cannot be a jail address');
  });

  it('reads fstab lines relative to the jail path: nullfs is a bind mount, tmpfs keeps size options', () => {
    assert.equal(parseFstabLine('   # only a comment', '/jails/www', 'f'), undefined);
    assert.deepEqual(parseFstabLine('/srv/data /jails/www/data nullfs ro,nosuid 0 0', '/jails/www', 'f'), {
      type: MountType.MOUNT_TYPE_BIND,
      source: '/srv/data',
      destination: '/data',
      readonly: true,
      propagation: 0,
      options: ['nosuid'],
    });
    assert.deepEqual(parseFstabLine('tmpfs /jails/www/tmp tmpfs rw,size=64m,mode=1777', '/jails/www/', 'f'), {
      type: MountType.MOUNT_TYPE_TMPFS,
      source: '',
      destination: '/tmp',
      readonly: false,
      propagation: 0,
      options: ['size=64m', 'mode=1777'],
    });
    refuses(() => parseFstabLine('/srv /elsewhere/x nullfs rw', '/jails/www', 'f'), "mount point /elsewhere/x is not under the jail's path /jails/www");
    refuses(() => parseFstabLine('/srv /jails/www nullfs rw', '/jails/www', 'f'), "cannot mount over the jail's root");
    refuses(
      () => parseFstabLine('/srv /jails/www/x nullfs rw,sync', '/jails/www', 'f'),
      'mount option "sync" in "/srv /jails/www/x nullfs rw,sync" is not supported',
    );
    refuses(() => parseFstabLine('/srv', '/jails/www', 'f'), '"/srv": expected "source mountpoint type [options]"');
    assert.throws(
      () => parseFstabLine('/dev/ada0 /jails/www/mnt ufs rw', '/jails/www', 'f'),
      (e: unknown) => isOsvirtError(e) && e.code === 'FAILED_PRECONDITION',
    );
  });
});
