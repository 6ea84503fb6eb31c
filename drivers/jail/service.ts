// osvirt.v1.JailService: jail.conf import (jail(8) reading /etc/jail.conf)
// and the jls(8) listing. The jail driver offers it as an extension
// (src/core/extension.ts): it acts on containers through the host it is
// given, so it serves the same in the daemon and in a plugin process.
import type { Logger } from 'pino';
import type { DriverExtension, ExtensionHost } from '../../src/core/extension';
import { invalidArgument, isOsvirtError, OsvirtError } from '../../src/core/errors';
import { unary } from '../../src/core/grpc-status';
import { validateName, validatePage, validateSpec } from '../../src/core/validate';
import { ContainerSpec, ContainerState } from '../../src/gen/osvirt/v1/container';
import {
  JailServiceService,
  type ImportedJail,
  type ImportJailConfRequest,
  type ImportJailConfResponse,
  type JailServiceServer,
  type ListJailsRequest,
  type ListJailsResponse,
} from '../../src/gen/osvirt/v1/jail';
import { readJailConf, readRctlConf } from './conf';
import type { JailDriver } from './driver';

/** Say which jail of which file an error is about. */
function about(file: string, name: string, e: unknown): unknown {
  if (!isOsvirtError(e) || e.message.startsWith(`${file}:`)) return e;
  return new OsvirtError(
    e.code,
    e.reason,
    `${file}: jail "${name}": ${e.message}`,
    e.violations.map((v) => ({ field: `${name}: ${v.field}`, description: v.description })),
    { ...e.metadata, jail: name },
  );
}

async function importJailConf(host: ExtensionHost, driver: JailDriver, req: ImportJailConfRequest): Promise<ImportJailConfResponse> {
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
      driver: driver.name,
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
      await host.create(j.name, spec).catch((e: unknown) => Promise.reject(about(file, j.name, e)));
      made.push(j.name);
      out[i]!.created = true;
    }
    if (req.start) {
      for (const [i, { j }] of plan.entries()) {
        await host.start(j.name).catch((e: unknown) => Promise.reject(about(file, j.name, e)));
        out[i]!.started = true;
      }
    }
  } catch (e) {
    for (const name of made.reverse()) await host.remove(name).catch(() => undefined);
    throw e;
  }
  return { jails: out };
}

async function listJails(host: ExtensionHost, driver: JailDriver, req: ListJailsRequest): Promise<ListJailsResponse> {
  const size = validatePage('page_size', req.pageSize);
  const after = req.pageToken ? Number.parseInt(Buffer.from(req.pageToken, 'base64url').toString(), 10) : 0;
  if (!Number.isInteger(after) || after < 0) throw invalidArgument('page_token', 'is not a token returned by ListJails');
  const running = (await host.list({ driver: driver.name, states: [ContainerState.CONTAINER_STATE_RUNNING, ContainerState.CONTAINER_STATE_PAUSED] })).map(
    (c) => ({ name: c.name, initPid: c.status?.initPid ?? 0 }),
  );
  const all = (await driver.describe(running)).filter((j) => j.jid > after);
  const jails = all.slice(0, size);
  const last = jails[jails.length - 1];
  return { jails, nextPageToken: all.length > size && last ? Buffer.from(String(last.jid)).toString('base64url') : '' };
}

export function jailExtension(driver: JailDriver): DriverExtension {
  return {
    service: 'osvirt.v1.JailService',
    definition: JailServiceService,
    roles: { ImportJailConf: 'admin', ListJails: 'reader' },
    handlers: (host: ExtensionHost, logger: Logger): JailServiceServer => ({
      importJailConf: unary(logger, (req: ImportJailConfRequest) => importJailConf(host, driver, req)),
      listJails: unary(logger, (req: ListJailsRequest) => listJails(host, driver, req)),
    }),
  };
}
