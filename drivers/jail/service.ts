// osvirt.v1.JailService: jail.conf import (jail(8) reading /etc/jail.conf)
// and the jls(8) listing, on top of the container manager and the jail driver.
import type { UntypedServiceImplementation } from '@grpc/grpc-js';
import type { Logger } from 'pino';
import type { ContainerManager } from '../../src/core/manager';
import type { DriverRegistry } from '../../src/core/registry';
import { invalidArgument, isOsvirtError, OsvirtError } from '../../src/core/errors';
import { validateName, validatePage, validateSpec } from '../../src/core/validate';
import { unary } from '../../src/api/container-service';
import { ContainerSpec, ContainerState } from '../../src/gen/osvirt/v1/container';
import type { ImportedJail, ImportJailConfRequest, ImportJailConfResponse, JailServiceServer } from '../../src/gen/osvirt/v1/jail';
import { readJailConf, readRctlConf } from './conf';
import { JailDriver } from './driver';

function jailDriver(registry: DriverRegistry): JailDriver {
  const d = registry.get('jail');
  if (!(d instanceof JailDriver)) throw new OsvirtError('FAILED_PRECONDITION', 'DRIVER_NOT_READY', 'the driver named "jail" is not osvirt\'s jail driver');
  return d;
}

/** Say which jail of which file an error is about. */
function about(file: string, name: string, e: unknown): unknown {
  if (!isOsvirtError(e) || e.message.startsWith(`${file}:`)) return e;
  return new OsvirtError(e.code, e.reason, `${file}: jail "${name}": ${e.message}`, e.violations.map((v) => ({ field: `${name}: ${v.field}`, description: v.description })), { ...e.metadata, jail: name });
}

export async function importJailConf(m: ContainerManager, driver: JailDriver, req: ImportJailConfRequest): Promise<ImportJailConfResponse> {
  const file = req.fileName || 'jail.conf';
  const conf = readJailConf(req.text, file, req.names);
  if (!conf.length) throw invalidArgument('text', `${file} defines no jail`);
  const limits = req.rctlConf ? readRctlConf(req.rctlConf) : new Map();
  const plan = conf.map((j) => {
    try {
      validateName('names', j.name);
    } catch {
      throw invalidArgument('text', `${file}: jail name "${j.name}" cannot be a container name (lowercase letters, digits and "-", at most 63)`);
    }
    const spec = ContainerSpec.fromPartial({
      driver: 'jail',
      ...(j.template ? { rootfs: { source: { $case: 'template', value: j.template } } } : {}),
      ...(j.stopTimeout !== undefined ? { stopTimeout: { seconds: j.stopTimeout, nanos: 0 } } : {}),
      driverOptions: { $case: 'jail', value: { ...j.options, rctl: limits.get(j.name) } },
    });
    return { j, spec };
  });
  for (const { j, spec } of plan) {
    try {
      validateSpec(spec);
      await driver.validate(j.name, spec);
    } catch (e) {
      throw about(file, j.name, e);
    }
  }
  const out: ImportedJail[] = plan.map(({ j, spec }) => ({
    name: j.name,
    options: spec.driverOptions?.$case === 'jail' ? spec.driverOptions.value : j.options,
    template: j.template,
    stopTimeout: j.stopTimeout,
    created: false,
    started: false,
  }));
  if (req.validateOnly) return { jails: out };
  // All or nothing.
  const made: string[] = [];
  try {
    for (const [i, { j, spec }] of plan.entries()) {
      await m.create(j.name, spec).catch((e: unknown) => Promise.reject(about(file, j.name, e)));
      made.push(j.name);
      out[i]!.created = true;
    }
    if (req.start) {
      for (const [i, { j }] of plan.entries()) {
        await m.start(j.name).catch((e: unknown) => Promise.reject(about(file, j.name, e)));
        out[i]!.started = true;
      }
    }
  } catch (e) {
    for (const name of made.reverse()) await m.delete(name, true, true).catch(() => undefined);
    throw e;
  }
  return { jails: out };
}

export function jailService(m: ContainerManager, registry: DriverRegistry, logger: Logger): JailServiceServer & UntypedServiceImplementation {
  return {
    importJailConf: unary(logger, (req: ImportJailConfRequest) => importJailConf(m, jailDriver(registry), req)),
    listJails: unary(logger, async (req) => {
      const size = validatePage('page_size', req.pageSize);
      const after = req.pageToken ? Number.parseInt(Buffer.from(req.pageToken, 'base64url').toString(), 10) : 0;
      if (!Number.isInteger(after) || after < 0) throw invalidArgument('page_token', 'is not a token returned by ListJails');
      const driver = jailDriver(registry);
      const running = [];
      for (let token = ''; ; ) {
        const page = m.list({ driver: 'jail', states: [ContainerState.CONTAINER_STATE_RUNNING, ContainerState.CONTAINER_STATE_PAUSED], pageSize: 1000, pageToken: token });
        running.push(...page.containers.map((c) => ({ name: c.name, initPid: c.status?.initPid ?? 0 })));
        if (!page.nextPageToken) break;
        token = page.nextPageToken;
      }
      const all = (await driver.describe(running)).filter((j) => j.jid > after);
      const jails = all.slice(0, size);
      const last = jails[jails.length - 1];
      return { jails, nextPageToken: all.length > size && last ? Buffer.from(String(last.jid)).toString('base64url') : '' };
    }),
  };
}
