// The daemon's ExtensionHost: extensions act through the container manager,
// exactly as the public ContainerService does.
import type { Container } from '../gen/osvirt/v1/container';
import type { ExtensionHost } from './extension';
import type { ContainerManager } from './manager';

export function managerHost(m: ContainerManager, endpoint?: () => Promise<string>): ExtensionHost {
  return {
    list: async (f) => {
      const out: Container[] = [];
      for (let pageToken = ''; ;) {
        const page = m.list({ driver: f.driver ?? '', states: f.states ?? [], pageSize: 1000, pageToken });
        out.push(...page.containers);
        if (!page.nextPageToken) return out;
        pageToken = page.nextPageToken;
      }
    },
    get: async (name) => m.get(name),
    create: (name, spec) => m.create(name, spec),
    start: (name) => m.start(name),
    remove: (name) => m.delete(name, true, true),
    ...(endpoint ? { endpoint } : {}),
  };
}
