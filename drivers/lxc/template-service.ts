// osvirt.v1.TemplateService: the shared root filesystems containers are built
// from (./templates.ts), listed, built ahead with progress, removed. Offered
// as an extension (src/core/extension.ts) by the drivers that build from the
// store: lxc, and jail and vserver on top of it.
import type { ServerWritableStream } from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { invalidArgument, OsvirtError } from '../../src/core/errors';
import type { DriverExtension, ExtensionHost } from '../../src/core/extension';
import { toServiceError, unary } from '../../src/core/grpc-status';
import {
  TemplateServiceService,
  type Template,
  type TemplateServiceServer,
  type BuildTemplateRequest,
  type BuildTemplateResponse,
} from '../../src/gen/osvirt/v1/template_service';
import { normalizeOptions, templateKey, type TemplateMeta, type Templates } from './templates';

export function templateExtension(templates: () => Templates): DriverExtension {
  return {
    service: 'osvirt.v1.TemplateService',
    definition: TemplateServiceService,
    roles: { ListTemplates: 'reader', BuildTemplate: 'admin', RemoveTemplate: 'admin' },
    handlers: (host, logger) => templateService(templates(), host, logger),
  };
}

function templateService(templates: Templates, host: ExtensionHost, logger: Logger): TemplateServiceServer {
  /** Containers whose rootfs is the template with this key. */
  const usedBy = async (key: string): Promise<string[]> =>
    (await host.list({}))
      .filter(({ spec }) => {
        const src = spec?.rootfs?.source;
        if (src?.$case !== 'template') return false;
        try {
          return templateKey(src.value, normalizeOptions(src.value, spec?.rootfs?.templateOptions)) === key;
        } catch {
          return false;
        }
      })
      .map((d) => d.name)
      .sort();
  const toTemplate = async (m: TemplateMeta): Promise<Template> => ({
    name: m.name,
    key: m.key,
    options: m.options,
    sizeBytes: BigInt(m.sizeBytes),
    buildTime: m.builtAt ? new Date(m.builtAt) : undefined,
    init: m.init,
    haltSignal: m.haltSignal,
    source: m.source,
    usedBy: await usedBy(m.key),
  });
  return {
    listTemplates: unary(logger, async () => ({ templates: (await Promise.all(templates.list().map(toTemplate))).sort((a, b) => a.key.localeCompare(b.key)) })),
    buildTemplate: (call: ServerWritableStream<BuildTemplateRequest, BuildTemplateResponse>) => {
      const req = call.request;
      Promise.resolve()
        .then(async () => {
          if (!req.name) throw invalidArgument('name', 'is required ("busybox" or "debian")');
          const opts = normalizeOptions(req.name, req.options, 'options');
          const key = templateKey(req.name, opts);
          await templates.ensure(req.name, req.options, (line) => {
            if (!call.cancelled) call.write({ message: { $case: 'progress', value: line } });
          });
          const meta = templates.metadata(key);
          if (!meta) throw new OsvirtError('INTERNAL', 'TEMPLATE_BUILD_FAILED', `template ${key} was built but has no metadata`);
          call.write({ message: { $case: 'template', value: await toTemplate(meta) } });
          call.end();
        })
        .catch((e) => call.emit('error', toServiceError(e, logger)));
    },
    removeTemplate: unary(logger, async (req) => {
      if (!req.key) throw invalidArgument('key', 'is required (see ListTemplates)');
      if (!templates.metadata(req.key)) {
        if (req.allowMissing) return {};
        throw new OsvirtError('NOT_FOUND', 'TEMPLATE_NOT_FOUND', `template "${req.key}" not found`, [], { template: req.key });
      }
      const users = await usedBy(req.key);
      if (users.length)
        throw new OsvirtError(
          'FAILED_PRECONDITION',
          'TEMPLATE_IN_USE',
          `template "${req.key}" is the root filesystem of ${users.join(', ')}; delete ${users.length > 1 ? 'them' : 'it'} first`,
          [],
          { template: req.key },
        );
      await templates.remove(req.key);
      return {};
    }),
  };
}
