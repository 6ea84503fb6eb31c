// `osvirt vserver import DIR`, `osvirt vserver export NAME DIR` and
// `osvirt vserver-stat`: util-vserver's configuration directories and its
// context table, through osvirt.v1.VServerService.
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import type { Command } from 'commander';
import { credentials } from '@grpc/grpc-js';
import { connect, promisify } from '../client';
import { action } from './report';
import { ContainerSpec } from '../gen/osvirt/v1/container';
import { VServerServiceClient, VServerStat } from '../gen/osvirt/v1/vserver_service';
import { readConfigDir, writeConfigDir, type ConfigFiles } from './config-tree';
import { formatStatTable } from './vserver-stat';

interface Global {
  connect?: string;
  tlsCert?: string;
  tlsKey?: string;
  tlsCa?: string;
  output: 'table' | 'json';
}

function vserverClient(g: Global): VServerServiceClient {
  // The same connection as the other clients (address, TLS and credentials come with the channel).
  const c = connect({ address: g.connect, tlsCert: g.tlsCert, tlsKey: g.tlsKey, tlsCa: g.tlsCa });
  return new VServerServiceClient('unused', credentials.createInsecure(), { channelOverride: c.containers.getChannel() });
}

function toWire(files: ConfigFiles) {
  return [...files].map(([p, e]) => ({ path: p, content: e.content ?? Buffer.alloc(0), symlinkTarget: e.symlink ?? '' }));
}

export function registerVserver(program: Command): void {
  const vs = program.command('vserver').description('Linux-VServer guests: util-vserver configuration directories (/etc/vservers/NAME)');

  vs.command('import <dir>')
    .description('define a vserver guest from a util-vserver configuration directory')
    .option('--name <name>', 'container name (default: the "name" file, else the directory name)')
    .option('--start', 'start it right after defining it')
    .option('--dry-run', 'only parse and validate; print the definition')
    .action(
      action(async (dir: string, o: { name?: string; start?: boolean; dryRun?: boolean }, cmd: Command) => {
        const g = cmd.optsWithGlobals<Global>();
        const files = await readConfigDir(dir);
        const api = promisify(vserverClient(g));
        const r = await api.importVServerConfig({
          name: o.name ?? '',
          directoryName: path.basename(path.resolve(dir)),
          files: toWire(files),
          validateOnly: !!o.dryRun,
        });
        for (const n of r.notes) process.stderr.write(`note: ${n}\n`);
        const ct = r.container!;
        if (o.dryRun || g.output === 'json') {
          process.stdout.write(JSON.stringify({ name: ct.name, spec: ContainerSpec.toJSON(ct.spec!) }, null, 2) + '\n');
          if (o.dryRun) return;
        }
        if (o.start) {
          const c = connect({ address: g.connect, tlsCert: g.tlsCert, tlsKey: g.tlsKey, tlsCa: g.tlsCa });
          await promisify(c.containers).startContainer({ name: ct.name });
        }
        const ctx = ct.spec?.driverOptions?.$case === 'vserver' ? ct.spec.driverOptions.value.context : 0;
        if (g.output !== 'json') process.stdout.write(`${ct.name} ${o.start ? 'created and started' : 'created'} (context ${ctx})\n`);
      }),
    );

  vs.command('export <name> <dir>')
    .description("write a vserver guest's definition as a util-vserver configuration directory")
    .option('--force', 'write into a directory that is not empty')
    .action(
      action(async (name: string, dir: string, o: { force?: boolean }, cmd: Command) => {
        const g = cmd.optsWithGlobals<Global>();
        const existing = await fs.readdir(dir).catch(() => [] as string[]);
        if (existing.length && !o.force) throw new Error(`${dir} is not empty; pass --force to write into it`);
        const r = await promisify(vserverClient(g)).exportVServerConfig({ name });
        const files: ConfigFiles = new Map(r.files.map((f) => [f.path, f.symlinkTarget ? { symlink: f.symlinkTarget } : { content: Buffer.from(f.content) }]));
        await writeConfigDir(dir, files);
        process.stdout.write(`${name} exported to ${dir} (${files.size} files)\n`);
      }),
    );

  program
    .command('vserver-stat')
    .description("running vserver guests like util-vserver's vserver-stat: CTX, PROC QTY, VSZ, RSS, userTIME, sysTIME, UPTIME, NAME")
    .action(
      action(async (_o: unknown, cmd: Command) => {
        const g = cmd.optsWithGlobals<Global>();
        const api = promisify(vserverClient(g));
        const all: VServerStat[] = [];
        let pageToken = '';
        do {
          const r = await api.listVServerStats({ pageSize: 1000, pageToken });
          all.push(...r.stats);
          pageToken = r.nextPageToken;
        } while (pageToken);
        if (g.output === 'json') {
          process.stdout.write(
            JSON.stringify(
              all.map((s) => VServerStat.toJSON(s)),
              null,
              2,
            ) + '\n',
          );
          return;
        }
        const ms = (d: { seconds: bigint; nanos: number } | undefined) => (d ? Number(d.seconds) * 1000 + d.nanos / 1e6 : 0);
        process.stdout.write(
          formatStatTable(
            all.map((s) => ({
              context: s.context,
              processCount: s.processCount,
              vszBytes: Number(s.virtualMemoryBytes),
              rssBytes: Number(s.residentMemoryBytes),
              userMs: ms(s.userTime),
              systemMs: ms(s.systemTime),
              uptimeMs: ms(s.uptime),
              name: s.name,
            })),
          ),
        );
      }),
    );
}
