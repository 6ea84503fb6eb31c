// osvirt.v1.VServerService: util-vserver's configuration directory in and
// out, and vserver-stat. Thin handlers over the manager (which validates
// and defines containers) and the vserver driver (which reads its guests).
import type { UntypedServiceImplementation } from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { ContainerState, StateReason } from '../../src/gen/osvirt/v1/container';
import { VServerServiceService, type VServerConfigFile, type VServerServiceServer, type VServerStat } from '../../src/gen/osvirt/v1/vserver_service';
import type { ContainerManager } from '../../src/core/manager';
import type { DriverRegistry } from '../../src/core/registry';
import { invalidArgument, OsvirtError } from '../../src/core/errors';
import { validatePage, validateSpec } from '../../src/core/validate';
import { unary } from '../../src/api/container-service';
import { parseConfigDir, renderConfigDir, type ConfigFiles } from './config-dir';
import { VServerDriver } from './driver';

export { VServerServiceService };

const MAX_FILES = 4096;

function toFiles(list: VServerConfigFile[]): ConfigFiles {
  if (list.length > MAX_FILES) throw invalidArgument('files', `more than ${MAX_FILES} entries: send the configuration directory, not the guest's root`);
  const out: ConfigFiles = new Map();
  for (const [i, f] of list.entries()) {
    const p = f.path.replace(/^\.\//, '');
    if (!p || p.startsWith('/') || p.split('/').some((s) => s === '..' || s === '')) throw invalidArgument(`files[${i}].path`, 'must be a relative path inside the directory');
    out.set(p, f.symlinkTarget ? { symlink: f.symlinkTarget } : { content: Buffer.from(f.content) });
  }
  return out;
}

function fromFiles(files: ConfigFiles): VServerConfigFile[] {
  return [...files].sort(([a], [b]) => (a < b ? -1 : 1)).map(([path, e]) => ({ path, content: e.content ?? Buffer.alloc(0), symlinkTarget: e.symlink ?? '' }));
}

function driverOf(registry: DriverRegistry): VServerDriver {
  const d = registry.get('vserver');
  if (!(d instanceof VServerDriver)) throw new OsvirtError('FAILED_PRECONDITION', 'DRIVER_NOT_READY', 'the driver named "vserver" is not osvirt\'s built-in vserver driver');
  return d;
}

export function vserverService(m: ContainerManager, registry: DriverRegistry, logger: Logger): VServerServiceServer & UntypedServiceImplementation {
  return {
    importVServerConfig: unary(logger, async (req) => {
      if (req.directoryName && !/^[^/\0]{1,255}$/.test(req.directoryName)) throw invalidArgument('directory_name', 'must be a directory\'s base name');
      const parsed = parseConfigDir(toFiles(req.files), req.directoryName, req.name || undefined);
      if (req.validateOnly) {
        validateSpec(parsed.spec);
        await driverOf(registry).validate(parsed.name, parsed.spec);
        const status = { state: ContainerState.CONTAINER_STATE_UNSPECIFIED, reason: StateReason.STATE_REASON_UNSPECIFIED, exitCode: 0, signal: 0, initPid: 0, message: 'validate_only: not defined' };
        return { container: { name: parsed.name, uid: '', spec: parsed.spec, status, createTime: undefined }, notes: parsed.notes };
      }
      return { container: await m.create(parsed.name, parsed.spec), notes: parsed.notes };
    }),
    exportVServerConfig: unary(logger, (req) => {
      const c = m.get(req.name);
      if (c.spec?.driver !== 'vserver' || !c.spec) throw new OsvirtError('FAILED_PRECONDITION', 'NOT_A_VSERVER', `container "${req.name}" runs on driver "${c.spec?.driver ?? ''}"; only vserver guests have a util-vserver configuration directory`, [], { container: req.name });
      return { files: fromFiles(renderConfigDir(c.spec)) };
    }),
    listVServerStats: unary(logger, async (req) => {
      const size = validatePage('page_size', req.pageSize);
      const start = req.pageToken ? Number.parseInt(Buffer.from(req.pageToken, 'base64url').toString(), 10) : 0;
      if (!Number.isInteger(start) || start < 0) throw invalidArgument('page_token', 'is not a token returned by ListVServerStats');
      const d = driverOf(registry);
      const guests = m.list({ driver: 'vserver', states: [ContainerState.CONTAINER_STATE_RUNNING, ContainerState.CONTAINER_STATE_PAUSED], pageSize: 100000, pageToken: '' }).containers;
      const rows: VServerStat[] = [];
      for (const g of guests) {
        // A guest that stopped between the list and now is simply not shown.
        const row = await d.contextStat(g.name).catch(() => undefined);
        if (row) rows.push(row);
      }
      rows.sort((a, b) => a.context - b.context);
      const page = rows.slice(start, start + size);
      return { stats: page, nextPageToken: start + size < rows.length ? Buffer.from(String(start + size)).toString('base64url') : '' };
    }),
  };
}
