// osvirt.v1.VServerService: util-vserver's configuration directory in and
// out, and vserver-stat. The vserver driver offers it as an extension
// (src/core/extension.ts): it defines and lists guests through the host it
// is given, so it serves the same in the daemon and in a plugin process.
import type { Logger } from 'pino';
import type { DriverExtension, ExtensionHost } from '../../src/core/extension';
import { invalidArgument, OsvirtError } from '../../src/core/errors';
import { unary } from '../../src/core/grpc-status';
import { validatePage, validateSpec } from '../../src/core/validate';
import { ContainerState, StateReason } from '../../src/gen/osvirt/v1/container';
import { VServerServiceService, type VServerConfigFile, type VServerServiceServer, type VServerStat } from '../../src/gen/osvirt/v1/vserver_service';
import { parseConfigDir, renderConfigDir, type ConfigFiles } from './config-dir';
import type { VServerDriver } from './driver';

const MAX_FILES = 4096;

function toFiles(list: VServerConfigFile[]): ConfigFiles {
  if (list.length > MAX_FILES) throw invalidArgument('files', `more than ${MAX_FILES} entries: send the configuration directory, not the guest's root`);
  const out: ConfigFiles = new Map();
  for (const [i, f] of list.entries()) {
    const p = f.path.replace(/^\.\//, '');
    if (!p || p.startsWith('/') || p.split('/').some((s) => s === '..' || s === ''))
      throw invalidArgument(`files[${i}].path`, 'must be a relative path inside the directory');
    out.set(p, f.symlinkTarget ? { symlink: f.symlinkTarget } : { content: Buffer.from(f.content) });
  }
  return out;
}

function fromFiles(files: ConfigFiles): VServerConfigFile[] {
  return [...files].sort(([a], [b]) => (a < b ? -1 : 1)).map(([path, e]) => ({ path, content: e.content ?? Buffer.alloc(0), symlinkTarget: e.symlink ?? '' }));
}

export function vserverExtension(driver: VServerDriver): DriverExtension {
  return {
    service: 'osvirt.v1.VServerService',
    definition: VServerServiceService,
    roles: { ImportVServerConfig: 'admin', ExportVServerConfig: 'reader', ListVServerStats: 'reader' },
    handlers: (host: ExtensionHost, logger: Logger): VServerServiceServer => ({
      importVServerConfig: unary(logger, async (req) => {
        if (req.directoryName && !/^[^/\0]{1,255}$/.test(req.directoryName)) throw invalidArgument('directory_name', "must be a directory's base name");
        const parsed = parseConfigDir(toFiles(req.files), req.directoryName, req.name || undefined);
        parsed.spec.driver = driver.name;
        if (req.validateOnly) {
          validateSpec(parsed.spec);
          await driver.validate(parsed.name, parsed.spec);
          const status = {
            state: ContainerState.CONTAINER_STATE_UNSPECIFIED,
            reason: StateReason.STATE_REASON_UNSPECIFIED,
            exitCode: 0,
            signal: 0,
            initPid: 0,
            message: 'validate_only: not defined',
          };
          return { container: { name: parsed.name, uid: '', spec: parsed.spec, status, createTime: undefined }, notes: parsed.notes };
        }
        return { container: await host.create(parsed.name, parsed.spec), notes: parsed.notes };
      }),
      exportVServerConfig: unary(logger, async (req) => {
        const c = await host.get(req.name);
        if (c.spec?.driver !== driver.name || !c.spec)
          throw new OsvirtError(
            'FAILED_PRECONDITION',
            'NOT_A_VSERVER',
            `container "${req.name}" runs on driver "${c.spec?.driver ?? ''}"; only vserver guests have a util-vserver configuration directory`,
            [],
            { container: req.name },
          );
        return { files: fromFiles(renderConfigDir(c.spec)) };
      }),
      listVServerStats: unary(logger, async (req) => {
        const size = validatePage('page_size', req.pageSize);
        const start = req.pageToken ? Number.parseInt(Buffer.from(req.pageToken, 'base64url').toString(), 10) : 0;
        if (!Number.isInteger(start) || start < 0) throw invalidArgument('page_token', 'is not a token returned by ListVServerStats');
        const guests = await host.list({ driver: driver.name, states: [ContainerState.CONTAINER_STATE_RUNNING, ContainerState.CONTAINER_STATE_PAUSED] });
        const rows: VServerStat[] = [];
        for (const g of guests) {
          // A guest that stopped between the list and now is simply not shown.
          const row = await driver.contextStat(g.name).catch(() => undefined);
          if (row) rows.push(row);
        }
        rows.sort((a, b) => a.context - b.context);
        const page = rows.slice(start, start + size);
        return { stats: page, nextPageToken: start + size < rows.length ? Buffer.from(String(start + size)).toString('base64url') : '' };
      }),
    }),
  };
}
