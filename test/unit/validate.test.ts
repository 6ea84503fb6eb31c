// Spec validation at the API edge (src/core/validate.ts) and the definition
// file reader (src/cli/spec-file.ts): pure, no root. Every refusal is
// INVALID_ARGUMENT naming the offending field.
import { strict as assert } from 'node:assert';
import { parseDefinition } from '../../src/cli/spec-file';
import { isOsvirtError } from '../../src/core/errors';
import { validateAbsPath, validateEnv, validateName, validateSignal, validateSpec } from '../../src/core/validate';
import { ContainerSpec, type DeepPartial } from '../../src/gen/osvirt/v1/container';

/** Assert fn throws INVALID_ARGUMENT for exactly this field and description. */
function refuses(fn: () => void, field: string, description: string): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(isOsvirtError(e), `not an OsvirtError: ${String(e)}`);
    assert.equal(e.code, 'INVALID_ARGUMENT');
    assert.deepEqual(e.violations, [{ field, description }]);
    assert.equal(e.message, `${field}: ${description}`);
    return true;
  });
}

const spec = (p: DeepPartial<ContainerSpec>): ContainerSpec => ContainerSpec.fromPartial({ driver: 'lxc', ...p });
const bridged = (p: DeepPartial<ContainerSpec> = {}): ContainerSpec => spec({ network: { mode: { $case: 'bridge', value: {} } }, ...p });

describe('spec validation (no root)', () => {
  it('accepts a plain spec, a bridged one with ports, and a full process', () => {
    validateSpec(spec({ rootfs: { source: { $case: 'template', value: 'busybox' } } }));
    validateSpec(
      bridged({
        ports: [
          { hostPort: 8080, containerPort: 80 },
          { hostPort: 8080, containerPort: 80, protocol: 'udp' },
          { hostIp: '127.0.0.1', hostPort: 9090, containerPort: 90 },
        ],
      }),
    );
    validateSpec(
      spec({
        process: { args: ['/bin/sh'], env: ['A=1', '_B='], cwd: '/' },
        hostname: 'web-1',
        resources: { memoryLimitBytes: 64 << 20, cpuWeight: 100, cpusetCpus: '0-1,3' },
      }),
    );
  });

  it('names the field of what it refuses', () => {
    refuses(() => validateSpec(undefined), 'spec', 'is required');
    refuses(() => validateSpec(ContainerSpec.fromPartial({})), 'spec.driver', 'is required');
    refuses(() => validateSpec(spec({ driver: 'Bad Driver' })), 'spec.driver', 'is not a valid driver name');
    refuses(
      () => validateSpec(spec({ rootfs: { source: { $case: 'template', value: 'Busy_Box' } } })),
      'spec.rootfs.template',
      'must be a template name such as "busybox"',
    );
    refuses(() => validateSpec(spec({ rootfs: { source: { $case: 'path', value: 'relative/root' } } })), 'spec.rootfs.path', 'must be an absolute path');
    refuses(
      () => validateSpec(spec({ rootfs: { copyOnWrite: true, source: { $case: 'template', value: 'busybox' } } })),
      'spec.rootfs.copy_on_write',
      'only applies to rootfs.path',
    );
    refuses(() => validateSpec(spec({ process: { env: ['1A=x'] } })), 'spec.process.env[0]', 'must be KEY=VALUE with KEY matching [A-Za-z_][A-Za-z0-9_]*');
    refuses(() => validateSpec(spec({ process: { cwd: '/a/../b' } })), 'spec.process.cwd', 'must not contain ".."');
    refuses(() => validateSpec(spec({ hostname: 'no spaces' })), 'spec.hostname', 'must be a valid hostname of at most 64 characters');
    refuses(() => validateSpec(spec({ resources: { memoryLimitBytes: 1024 } })), 'spec.resources.memory_limit_bytes', 'must be 0 (no limit) or at least 4 MiB');
    refuses(() => validateSpec(spec({ resources: { cpuWeight: 10001 } })), 'spec.resources.cpu_weight', 'must be between 1 and 10000');
    refuses(() => validateSpec(spec({ resources: { cpusetCpus: 'all' } })), 'spec.resources.cpuset_cpus', 'must be a cpu list such as "0-1,3"');
  });

  it('validates port mappings: ranges, protocol, host address, and overlaps', () => {
    refuses(
      () => validateSpec(spec({ ports: [{ hostPort: 80, containerPort: 80 }] })),
      'spec.ports[0]',
      'ports are published only for bridge networking (network.bridge)',
    );
    refuses(() => validateSpec(bridged({ ports: [{ hostPort: 0, containerPort: 80 }] })), 'spec.ports[0].host_port', 'must be 1..65535');
    refuses(() => validateSpec(bridged({ ports: [{ hostPort: 80, containerPort: 65536 }] })), 'spec.ports[0].container_port', 'must be 1..65535');
    refuses(
      () => validateSpec(bridged({ ports: [{ hostPort: 80, containerPort: 80, protocol: 'sctp' }] })),
      'spec.ports[0].protocol',
      'must be "tcp" or "udp"',
    );
    refuses(
      () => validateSpec(bridged({ ports: [{ hostIp: '::1', hostPort: 80, containerPort: 80 }] })),
      'spec.ports[0].host_ip',
      'must be an IPv4 address of the host (empty or 0.0.0.0: every host address)',
    );
    // 0.0.0.0 is every host address, so it overlaps a specific one on the same port and protocol.
    refuses(
      () =>
        validateSpec(
          bridged({
            ports: [
              { hostIp: '127.0.0.1', hostPort: 80, containerPort: 80 },
              { hostIp: '0.0.0.0', hostPort: 80, containerPort: 81 },
            ],
          }),
        ),
      'spec.ports[1].host_port',
      '*:80/tcp is already published by spec.ports[0]',
    );
  });

  it('validates the bridge network fields', () => {
    refuses(
      () => validateSpec(spec({ network: { mode: { $case: 'bridge', value: { address: '10.0.0.5' } } } })),
      'spec.network.bridge.address',
      'must be an IPv4 address with prefix length, e.g. "10.88.0.5/16"',
    );
    refuses(
      () => validateSpec(spec({ network: { mode: { $case: 'bridge', value: { bridge: 'a-very-long-bridge-name' } } } })),
      'spec.network.bridge.bridge',
      'must be an interface name of at most 15 characters',
    );
    refuses(
      () => validateSpec(spec({ network: { mode: { $case: 'bridge', value: { mtu: 67 } } } })),
      'spec.network.bridge.mtu',
      'must be between 68 and 65535',
    );
    refuses(
      () => validateSpec(spec({ network: { mode: { $case: 'bridge', value: { macAddress: '02:00:00:00:00' } } } })),
      'spec.network.bridge.mac_address',
      'must look like 02:00:00:00:00:01',
    );
  });

  it('checks names, paths, env and signals on their own', () => {
    validateName('name', 'web-1');
    refuses(() => validateName('name', ''), 'name', 'is required');
    refuses(() => validateName('name', '-web'), 'name', 'must be a lowercase DNS label: a-z, 0-9 and "-", 1 to 63 characters, not starting or ending with "-"');
    validateAbsPath('p', '/srv/data');
    refuses(() => validateAbsPath('p', '/'), 'p', 'must not be "/"');
    refuses(() => validateAbsPath('p', '/a:b'), 'p', 'must not contain NUL, newline or ":"');
    validateAbsPath('p', '/', { allowRoot: true });
    refuses(() => validateEnv('env', ['OK=1', 'NOEQUALS']), 'env[1]', 'must be KEY=VALUE with KEY matching [A-Za-z_][A-Za-z0-9_]*');
    validateSignal('signal', 0);
    refuses(() => validateSignal('signal', 0, false), 'signal', 'must be a signal number between 1 and 64');
    refuses(() => validateSignal('signal', 65), 'signal', 'must be a signal number between 1 and 64');
  });
});

describe('definition files (no root)', () => {
  it('reads YAML and JSON in the proto JSON mapping', () => {
    const y = parseDefinition(
      'name: web\nspec:\n  driver: lxc\n  rootfs:\n    template: busybox\n  process:\n    args: ["/bin/sh", "-c", "true"]\n  ports:\n    - host_port: 8080\n      containerPort: 80\n',
      'web.yaml',
    );
    assert.equal(y.name, 'web');
    assert.equal(y.spec?.driver, 'lxc');
    assert.deepEqual(y.spec?.rootfs?.source, { $case: 'template', value: 'busybox' });
    assert.deepEqual(y.spec?.process?.args, ['/bin/sh', '-c', 'true']);
    assert.deepEqual(
      y.spec?.ports.map((p) => [p.hostPort, p.containerPort]),
      [[8080, 80]],
    );
    const j = parseDefinition('{"name": "db", "spec": {"driver": "jail"}}', 'db.json');
    assert.equal(j.name, 'db');
    assert.equal(j.spec?.driver, 'jail');
  });

  it('refuses unknown fields and enum values by path, and bad syntax by file', () => {
    assert.throws(() => parseDefinition('name: x\nspec:\n  resources:\n    memory_limt_bytes: 1\n', 'typo.yaml'), {
      message: /^typo\.yaml: spec\.resources\.memory_limt_bytes: unknown field \(known: /,
    });
    assert.throws(() => parseDefinition('spec:\n  mounts:\n    - type: NFS\n', 'm.yaml'), {
      message: /^m\.yaml: spec\.mounts\[0\]\.type: unknown value "NFS" \(one of /,
    });
    assert.throws(() => parseDefinition('spec:\n  process: [1]\n', 'p.yaml'), { message: 'p.yaml: spec.process: expected an object' });
    assert.throws(() => parseDefinition('{"name": ', 'bad.json'), { message: /^bad\.json: not valid JSON: / });
  });
});
