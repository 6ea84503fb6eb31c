// Container specs for tests, built from partial objects.
import { ContainerSpec, type DeepPartial } from '../../src/gen/osvirt/v1/container';

export function busybox(extra: DeepPartial<ContainerSpec> = {}): ContainerSpec {
  return ContainerSpec.fromPartial({
    driver: 'lxc',
    rootfs: { source: { $case: 'template', value: 'busybox' } },
    network: { mode: { $case: 'none', value: {} } },
    ...extra,
  });
}
