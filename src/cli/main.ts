// osvirt: the command-line client (virsh / lxc-* style).
import { createReadStream, createWriteStream, statSync } from 'node:fs';
import { Command, Option } from 'commander';
import { status as Code, type ServiceError } from '@grpc/grpc-js';
import { connect, promisify, type OsvirtClient } from '../client';
import { Checkpoint, Container, ContainerState, StateReason, ContainerStats } from '../gen/osvirt/v1/container';
import { EventType, Event } from '../gen/osvirt/v1/event_service';
import { DriverHealth } from '../gen/osvirt/v1/system_service';
import { Template, type BuildTemplateResponse } from '../gen/osvirt/v1/template_service';
import {
  Image,
  PruneImagesResponse,
  type ExportImageResponse,
  type ImportImageResponse,
  type PullImageResponse,
  type PullProgress,
} from '../gen/osvirt/v1/image_service';
import { VERSION } from '../version';
import { readDefinition } from './spec-file';
import { signalNumber } from './signals';
import { action, report } from './report';
import { registerConformance } from './conformance';
import { registerJail } from './jail';
import { registerVserver } from './vserver';
import { ensureCa, issueClient, issueServer } from '../auth/certs';
import type { Role } from '../auth/roles';

type Output = 'table' | 'json';

interface Global {
  connect?: string;
  tlsCert?: string;
  tlsKey?: string;
  tlsCa?: string;
  output: Output;
}

function client(cmd: Command): { c: OsvirtClient; out: Output } {
  const g = cmd.optsWithGlobals<Global>();
  const c = connect({ address: g.connect, tlsCert: g.tlsCert, tlsKey: g.tlsKey, tlsCa: g.tlsCa });
  return { c, out: g.output };
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i]!))).join('  ')).join('\n') + '\n';
}

const stateName = (s: ContainerState) => ContainerState[s].replace('CONTAINER_STATE_', '').toLowerCase();
const reasonName = (r: StateReason) => StateReason[r].replace('STATE_REASON_', '').toLowerCase();

function printContainer(ct: Container, out: Output): void {
  if (out === 'json') {
    process.stdout.write(JSON.stringify(Container.toJSON(ct), null, 2) + '\n');
    return;
  }
  const s = ct.status;
  const lines: [string, string][] = [
    ['Name', ct.name],
    ['UID', ct.uid],
    ['Driver', ct.spec?.driver ?? ''],
    ['State', `${stateName(s?.state ?? 0)} (${reasonName(s?.reason ?? 0)})`],
  ];
  if (s?.initPid) lines.push(['Init PID', String(s.initPid)]);
  if (s && (s.state === ContainerState.CONTAINER_STATE_STOPPED || s.state === ContainerState.CONTAINER_STATE_CRASHED))
    lines.push(['Exit code', String(s.exitCode)]);
  if (s?.startTime) lines.push(['Started', s.startTime.toISOString()]);
  if (s?.message) lines.push(['Message', s.message]);
  lines.push(['Autostart', ct.spec?.autostart ? 'yes' : 'no']);
  const root = ct.spec?.rootfs?.source;
  if (root?.$case === 'image') lines.push(['Image', `${root.value} (${ct.spec!.rootfs!.imageDigest || 'not resolved'})`]);
  if (ct.spec?.ports.length)
    lines.push(['Ports', ct.spec.ports.map((p) => `${p.hostIp || '0.0.0.0'}:${p.hostPort}->${p.containerPort}/${p.protocol || 'tcp'}`).join(', ')]);
  const ids = s?.idMapping;
  const range = (m: { containerId: number; hostId: number; size: number }[]) =>
    m.map((e) => `${e.containerId}-${e.containerId + e.size - 1} -> host ${e.hostId}-${e.hostId + e.size - 1}`).join(', ');
  if (ids?.privileged) lines.push(['Security', 'PRIVILEGED: no user namespace, root inside is root on the host']);
  else if (ids?.uidMap.length) lines.push(['UID map', range(ids.uidMap)], ['GID map', range(ids.gidMap)]);
  process.stdout.write(lines.map(([k, v]) => `${(k + ':').padEnd(11)} ${v}`).join('\n') + '\n');
}

const program = new Command('osvirt')
  .description('osvirt: manage containers through the osvirt daemon')
  .version(VERSION)
  .option('-c, --connect <uri>', 'daemon address: unix:///path or tcp://host:port (env OSVIRT_CONNECT)')
  .option('--tls-cert <file>', 'client certificate for tcp://')
  .option('--tls-key <file>', 'client key for tcp://')
  .option('--tls-ca <file>', 'CA certificate for tcp://')
  .addOption(new Option('-o, --output <format>', 'output format').choices(['table', 'json']).default('table'));

program
  .command('create')
  .description('define a container from a YAML or JSON file ({name, spec})')
  .requiredOption('-f, --file <file>', 'definition file')
  .option('--name <name>', 'override the name in the file')
  .option('--start', 'start it right after creating it')
  .action(
    action(async (o: { file: string; name?: string; start?: boolean }, cmd: Command) => {
      const req = readDefinition(o.file);
      if (o.name) req.name = o.name;
      const { c, out } = client(cmd);
      const api = promisify(c.containers);
      let ct = (await api.createContainer(req)).container!;
      if (o.start) ct = (await api.startContainer({ name: ct.name })).container!;
      if (out === 'json') printContainer(ct, out);
      else process.stdout.write(`${ct.name} ${o.start ? 'created and started' : 'created'}\n`);
    }),
  );

program
  .command('list')
  .alias('ls')
  .description('list containers')
  .option('--driver <name>', 'only this driver')
  .option('--state <state>', 'only this state (defined, running, paused, stopped, crashed, unknown)')
  .action(
    action(async (o: { driver?: string; state?: string }, cmd: Command) => {
      const { c, out } = client(cmd);
      const api = promisify(c.containers);
      const states: ContainerState[] = [];
      if (o.state) {
        const s = ContainerState[`CONTAINER_STATE_${o.state.toUpperCase()}` as keyof typeof ContainerState];
        if (s === undefined) throw new Error(`unknown state "${o.state}"`);
        states.push(s);
      }
      const all: Container[] = [];
      let pageToken = '';
      do {
        const r = await api.listContainers({ pageSize: 1000, pageToken, driver: o.driver ?? '', states });
        all.push(...r.containers);
        pageToken = r.nextPageToken;
      } while (pageToken);
      if (out === 'json') {
        process.stdout.write(
          JSON.stringify(
            all.map((x) => Container.toJSON(x)),
            null,
            2,
          ) + '\n',
        );
        return;
      }
      const ports = (x: Container) =>
        x.spec?.ports.map((p) => `${p.hostIp ? p.hostIp + ':' : ''}${p.hostPort}->${p.containerPort}/${p.protocol || 'tcp'}`).join(',') || '-';
      const rows = [['NAME', 'DRIVER', 'STATE', 'PID', 'AUTOSTART', 'PORTS']];
      for (const x of all)
        rows.push([
          x.name,
          x.spec?.driver ?? '',
          stateName(x.status?.state ?? 0),
          x.status?.initPid ? String(x.status.initPid) : '-',
          x.spec?.autostart ? 'yes' : 'no',
          ports(x),
        ]);
      process.stdout.write(table(rows));
    }),
  );

program
  .command('info <name>')
  .description('show a container')
  .action(
    action(async (name: string, _o: unknown, cmd: Command) => {
      const { c, out } = client(cmd);
      printContainer((await promisify(c.containers).getContainer({ name })).container!, out);
    }),
  );

for (const [verb, method, desc] of [
  ['start', 'startContainer', 'start a container'],
  ['pause', 'pauseContainer', 'freeze every process of a container'],
  ['resume', 'resumeContainer', 'thaw a paused container'],
] as const) {
  program
    .command(`${verb} <name>`)
    .description(desc)
    .action(
      action(async (name: string, _o: unknown, cmd: Command) => {
        const { c, out } = client(cmd);
        const ct = (await promisify(c.containers)[method]({ name })).container!;
        if (out === 'json') printContainer(ct, out);
        else process.stdout.write(`${name} ${stateName(ct.status?.state ?? 0)}\n`);
      }),
    );
}

program
  .command('stop <name>')
  .description('stop a container: stop signal, wait, then SIGKILL')
  .option('-t, --timeout <seconds>', 'seconds to wait before SIGKILL')
  .option('-s, --signal <signal>', "stop signal (default: the spec's, SIGTERM)")
  .action(
    action(async (name: string, o: { timeout?: string; signal?: string }, cmd: Command) => {
      const { c, out } = client(cmd);
      const seconds = o.timeout === undefined ? undefined : Number(o.timeout);
      if (seconds !== undefined && !Number.isInteger(seconds)) throw new Error('--timeout must be a whole number of seconds');
      const timeout = seconds === undefined ? undefined : { seconds: BigInt(seconds), nanos: 0 };
      const ct = (await promisify(c.containers).stopContainer({ name, signal: o.signal ? signalNumber(o.signal) : 0, timeout })).container!;
      if (out === 'json') printContainer(ct, out);
      else process.stdout.write(`${name} ${stateName(ct.status?.state ?? 0)} (exit code ${ct.status?.exitCode ?? 0})\n`);
    }),
  );

program
  .command('kill <name>')
  .description("send a signal to the container's init")
  .option('-s, --signal <signal>', 'signal name or number', 'SIGKILL')
  .action(
    action(async (name: string, o: { signal: string }, cmd: Command) => {
      const { c } = client(cmd);
      await promisify(c.containers).killContainer({ name, signal: signalNumber(o.signal) });
    }),
  );

program
  .command('delete <name>')
  .alias('rm')
  .description('delete a container and everything it made on the host')
  .option('-f, --force', 'kill it first if it runs')
  .action(
    action(async (name: string, o: { force?: boolean }, cmd: Command) => {
      const { c } = client(cmd);
      await promisify(c.containers).deleteContainer({ name, force: !!o.force, allowMissing: false });
      process.stdout.write(`${name} deleted\n`);
    }),
  );

program
  .command('exec <name> <command...>')
  .description('run a command inside a running container: osvirt exec NAME -- CMD ARGS')
  .option('-i, --interactive', 'pass stdin')
  .option('-t, --tty', 'allocate a terminal')
  .option('-e, --env <KEY=VALUE...>', 'environment variables')
  .option('-w, --cwd <dir>', 'working directory')
  .action(async (name: string, command: string[], o: { interactive?: boolean; tty?: boolean; env?: string[]; cwd?: string }, cmd: Command) => {
    const { c } = client(cmd);
    const stream = c.containers.execContainer();
    const tty = !!o.tty;
    const size = tty && process.stdout.isTTY ? { rows: process.stdout.rows, cols: process.stdout.columns } : undefined;
    stream.write({ message: { $case: 'start', value: { name, args: command, env: o.env ?? [], cwd: o.cwd ?? '', user: undefined, tty, terminalSize: size } } });
    const restore = () => {
      if (tty && process.stdin.isTTY) process.stdin.setRawMode(false);
    };
    if (o.interactive) {
      if (tty && process.stdin.isTTY) process.stdin.setRawMode(true);
      process.stdin.on('data', (b: Buffer) => stream.write({ message: { $case: 'stdin', value: b } }));
      process.stdin.on('end', () => stream.write({ message: { $case: 'closeStdin', value: true } }));
      if (tty)
        process.stdout.on('resize', () => stream.write({ message: { $case: 'resize', value: { rows: process.stdout.rows, cols: process.stdout.columns } } }));
    } else {
      stream.write({ message: { $case: 'closeStdin', value: true } });
    }
    let code = 0;
    stream.on('data', (m: { message?: { $case: string; value: unknown } }) => {
      const x = m.message;
      if (x?.$case === 'stdout') process.stdout.write(x.value as Buffer);
      else if (x?.$case === 'stderr') process.stderr.write(x.value as Buffer);
      else if (x?.$case === 'exit') code = (x.value as { exitCode: number }).exitCode;
    });
    stream.on('end', () => {
      restore();
      process.exit(code);
    });
    stream.on('error', (e) => {
      restore();
      report(e);
    });
  });

program
  .command('console <name>')
  .description("attach to a container's console (detach with Ctrl-] )")
  .action((name: string, _o: unknown, cmd: Command) => {
    const { c } = client(cmd);
    const stream = c.containers.attachConsole();
    const size = process.stdout.isTTY ? { rows: process.stdout.rows, cols: process.stdout.columns } : undefined;
    stream.write({ message: { $case: 'start', value: { name, terminalSize: size } } });
    if (process.stdin.isTTY) process.stdin.setRawMode(true);
    const detach = () => {
      if (process.stdin.isTTY) process.stdin.setRawMode(false);
      stream.cancel();
      process.exit(0);
    };
    process.stdin.on('data', (b: Buffer) => {
      if (b.includes(0x1d)) return detach();
      stream.write({ message: { $case: 'input', value: b } });
    });
    process.stdin.on('end', () => stream.end());
    stream.on('data', (m: { output: Buffer }) => process.stdout.write(m.output));
    stream.on('end', detach);
    stream.on('error', (e) => {
      if (process.stdin.isTTY) process.stdin.setRawMode(false);
      if ((e as ServiceError).code === Code.CANCELLED) process.exit(0);
      report(e);
    });
  });

program
  .command('events')
  .description('print lifecycle events as they happen')
  .option('--container <name...>', 'only these containers')
  .option('--type <type...>', 'only these types (created, started, stopped, ...)')
  .option('-f, --follow', 'keep watching (default: until interrupted)', true)
  .action((o: { container?: string[]; type?: string[] }, cmd: Command) => {
    const { c, out } = client(cmd);
    const types = (o.type ?? []).map((t) => {
      const v = EventType[`EVENT_TYPE_${t.toUpperCase()}` as keyof typeof EventType];
      if (v === undefined) report(new Error(`unknown event type "${t}"`));
      return v;
    });
    const stream = c.events.watchEvents({ containers: o.container ?? [], types });
    stream.on('data', (r: { event?: Event }) => {
      const e = r.event!;
      if (out === 'json') process.stdout.write(JSON.stringify(Event.toJSON(e)) + '\n');
      else {
        const extra = e.type === EventType.EVENT_TYPE_STOPPED || e.type === EventType.EVENT_TYPE_CRASHED ? ` exit=${e.status?.exitCode ?? 0}` : '';
        process.stdout.write(
          `${e.time?.toISOString()} ${e.container} ${EventType[e.type].replace('EVENT_TYPE_', '').toLowerCase()}${extra}${e.checkpoint ? ` checkpoint=${e.checkpoint}` : ''}\n`,
        );
      }
    });
    stream.on('error', report);
    stream.on('end', () => process.exit(0));
  });

program
  .command('stats <name>')
  .description('resource usage of a running container')
  .action(
    action(async (name: string, _o: unknown, cmd: Command) => {
      const { c, out } = client(cmd);
      const s = (await promisify(c.containers).getContainerStats({ name })).stats!;
      if (out === 'json') {
        process.stdout.write(JSON.stringify(ContainerStats.toJSON(s), null, 2) + '\n');
        return;
      }
      const mib = (n: bigint) => `${(Number(n) / 1048576).toFixed(1)} MiB`;
      const rows = [
        ['CPU', `${(Number(s.cpuUsageNs) / 1e9).toFixed(3)} s`],
        ['MEMORY', `${mib(s.memoryUsageBytes)} / ${s.memoryLimitBytes ? mib(s.memoryLimitBytes) : 'unlimited'}`],
        ['PIDS', `${s.pidsCurrent} / ${s.pidsLimit || 'unlimited'}`],
      ];
      for (const i of s.interfaces) rows.push([`NET ${i.name}`, `rx ${i.rxBytes} B  tx ${i.txBytes} B`]);
      process.stdout.write(table(rows));
    }),
  );

program
  .command('checkpoint <name>')
  .description('checkpoint a running container with CRIU')
  .option('--checkpoint <id>', 'checkpoint name (default: generated)')
  .option('--leave-running', 'keep the container running (snapshot)')
  .option('--tcp-established', 'checkpoint established TCP connections')
  .option('--file-locks', 'checkpoint file locks')
  .option('--ext-unix-sk', 'allow external unix sockets')
  .action(
    action(
      async (
        name: string,
        o: { checkpoint?: string; leaveRunning?: boolean; tcpEstablished?: boolean; fileLocks?: boolean; extUnixSk?: boolean },
        cmd: Command,
      ) => {
        const { c, out } = client(cmd);
        const cp = (
          await promisify(c.containers).checkpointContainer({
            name,
            checkpoint: o.checkpoint ?? '',
            options: {
              leaveRunning: !!o.leaveRunning,
              tcpEstablished: !!o.tcpEstablished,
              extUnixSk: !!o.extUnixSk,
              fileLocks: !!o.fileLocks,
              shellJob: false,
              manageCgroupsMode: 0,
              parentCheckpoint: '',
              lazyPages: false,
            },
          })
        ).checkpoint!;
        printCheckpoints([cp], out);
      },
    ),
  );

function printCheckpoints(list: Checkpoint[], out: Output): void {
  if (out === 'json') {
    process.stdout.write(
      JSON.stringify(
        list.map((x) => Checkpoint.toJSON({ ...x, spec: undefined })),
        null,
        2,
      ) + '\n',
    );
    return;
  }
  const rows = [['CHECKPOINT', 'CONTAINER', 'CREATED', 'SIZE', 'FROZEN']];
  for (const cp of list)
    rows.push([cp.name, cp.container, cp.createTime?.toISOString() ?? '', `${cp.sizeBytes}`, `${(Number(cp.stats?.frozenTimeUs ?? 0n) / 1000).toFixed(1)} ms`]);
  process.stdout.write(table(rows));
}

program
  .command('checkpoints <name>')
  .description("list a container's checkpoints")
  .action(
    action(async (name: string, _o: unknown, cmd: Command) => {
      const { c, out } = client(cmd);
      printCheckpoints((await promisify(c.containers).listCheckpoints({ name, pageSize: 1000, pageToken: '' })).checkpoints, out);
    }),
  );

program
  .command('restore <name> <checkpoint>')
  .description('restore a checkpoint into its container, or as a new one with --as')
  .option('--as <newname>', 'restore as a new container (clone)')
  .option('--tcp-established', 'restore established TCP connections')
  .action(
    action(async (name: string, checkpoint: string, o: { as?: string; tcpEstablished?: boolean }, cmd: Command) => {
      const { c, out } = client(cmd);
      const ct = (
        await promisify(c.containers).restoreContainer({ name, checkpoint, newName: o.as ?? '', tcpEstablished: !!o.tcpEstablished, timeout: undefined })
      ).container!;
      if (out === 'json') printContainer(ct, out);
      else process.stdout.write(`${ct.name} restored (pid ${ct.status?.initPid})\n`);
    }),
  );

program
  .command('checkpoint-export <name> <checkpoint>')
  .description('write a checkpoint as a tar archive (Podman/checkpointctl layout) to a file or stdout')
  .option('-f, --file <file>', 'output file (default: stdout)')
  .action((name: string, checkpoint: string, o: { file?: string }, cmd: Command) => {
    const { c } = client(cmd);
    const out = o.file ? createWriteStream(o.file) : process.stdout;
    const stream = c.containers.exportCheckpoint({ name, checkpoint });
    stream.on('data', (m: { data: Buffer }) => out.write(m.data));
    stream.on('end', () => (o.file ? (out as ReturnType<typeof createWriteStream>).end(() => process.exit(0)) : process.exit(0)));
    stream.on('error', report);
  });

program
  .command('checkpoint-import <file>')
  .description('import a checkpoint archive made by checkpoint-export (then: osvirt restore NAME CHECKPOINT)')
  .option('--name <container>', "file it under this container (default: the archive's)")
  .option('--checkpoint <id>', "checkpoint name (default: the archive's)")
  .action((file: string, o: { name?: string; checkpoint?: string }, cmd: Command) => {
    const { c, out } = client(cmd);
    const stream = c.containers.importCheckpoint((err, res) => {
      if (err) return report(err);
      printCheckpoints([res.checkpoint!], out);
      process.exit(0);
    });
    stream.write({ message: { $case: 'start', value: { name: o.name ?? '', checkpoint: o.checkpoint ?? '' } } });
    const input = createReadStream(file, { highWaterMark: 1024 * 1024 });
    input.on('data', (b) => {
      if (!stream.write({ message: { $case: 'data', value: b as Buffer } })) {
        input.pause();
        stream.once('drain', () => input.resume());
      }
    });
    input.on('end', () => stream.end());
    input.on('error', report);
  });

program
  .command('drivers')
  .description('list drivers with capabilities and health')
  .action(
    action(async (_o: unknown, cmd: Command) => {
      const { c, out } = client(cmd);
      const r = await promisify(c.system).listDrivers({});
      if (out === 'json') {
        process.stdout.write(JSON.stringify(r.drivers, null, 2) + '\n');
        return;
      }
      const rows = [['DRIVER', 'VERSION', 'HEALTH', 'CAPABILITIES', 'NOTES']];
      for (const d of r.drivers)
        rows.push([
          d.name,
          d.version || '-',
          DriverHealth[d.health].replace('DRIVER_HEALTH_', '').toLowerCase(),
          d.capabilities.join(',') || '-',
          d.messages.join('; '),
        ]);
      process.stdout.write(table(rows));
    }),
  );

program
  .command('certs <dir>')
  .description('create a CA, a server certificate and client certificates for mutual-TLS remote access')
  .option('--server-name <name...>', 'DNS names or IP addresses the server is reached at (localhost is always included)')
  .option('--client <name:role...>', 'client certificates to issue, role one of admin, operator, reader', [])
  .action(
    action(async (dir: string, o: { serverName?: string[]; client: string[] }) => {
      ensureCa(dir);
      issueServer(dir, o.serverName ?? []);
      for (const spec of o.client) {
        const [name, role] = spec.split(':');
        issueClient(dir, name ?? '', (role ?? '') as Role);
      }
      process.stdout.write(
        `certificates in ${dir}:\n  daemon: osvirtd --listen 0.0.0.0:7443 --tls-ca ${dir}/ca.pem --tls-cert ${dir}/server.pem --tls-key ${dir}/server-key.pem\n`,
      );
      for (const spec of o.client) {
        const name = spec.split(':')[0];
        process.stdout.write(
          `  client: osvirt --connect tcp://HOST:7443 --tls-ca ${dir}/ca.pem --tls-cert ${dir}/${name}.pem --tls-key ${dir}/${name}-key.pem list\n`,
        );
      }
    }),
  );

program
  .command('version')
  .description('client and daemon versions')
  .action(
    action(async (_o: unknown, cmd: Command) => {
      const { c, out } = client(cmd);
      const v = await promisify(c.system).getVersion({});
      if (out === 'json') process.stdout.write(JSON.stringify({ client: VERSION, daemon: v }, null, 2) + '\n');
      else process.stdout.write(`client: ${VERSION}\ndaemon: ${v.version} (${v.apiVersion}, kernel ${v.kernel})\n`);
    }),
  );

const template = program.command('template').description('templates: the shared read-only root filesystems containers start from');
const signalName = (n: number) => (n === 37 ? 'SIGRTMIN+3' : n === 30 ? 'SIGPWR' : n === 15 ? 'SIGTERM' : n === 12 ? 'SIGUSR2' : String(n));
template
  .command('list')
  .alias('ls')
  .description('list built templates')
  .action(
    action(async (_o: unknown, cmd: Command) => {
      const { c, out } = client(cmd);
      const ts = (await promisify(c.templates).listTemplates({})).templates;
      if (out === 'json')
        return void process.stdout.write(
          JSON.stringify(
            ts.map((t) => Template.toJSON(t)),
            null,
            2,
          ) + '\n',
        );
      const rows = [['KEY', 'RELEASE', 'SIZE', 'INIT', 'HALT', 'USED BY']];
      for (const t of ts)
        rows.push([
          t.key,
          t.options?.release || '-',
          `${Math.round(Number(t.sizeBytes) / 1048576)} MiB`,
          t.init.join(' ').slice(0, 30),
          signalName(t.haltSignal),
          t.usedBy.join(',') || '-',
        ]);
      process.stdout.write(table(rows));
    }),
  );
template
  .command('build <name>')
  .description("build a template ahead of use, showing progress (debian: mmdebstrap from the host's Debian mirror)")
  .option('--release <suite>', 'Debian release: bookworm (default) or trixie')
  .option('--variant <variant>', 'mmdebstrap variant (default minbase)')
  .option('--package <name>', 'an extra Debian package (repeatable)', (v: string, acc: string[]) => [...acc, v], [] as string[])
  .action(
    action(async (name: string, o: { release?: string; variant?: string; package: string[] }, cmd: Command) => {
      const { c, out } = client(cmd);
      const t = await new Promise<Template>((resolve, reject) => {
        let built: Template | undefined;
        const s = c.templates.buildTemplate({ name, options: { release: o.release ?? '', variant: o.variant ?? '', packages: o.package } });
        s.on('data', (m: BuildTemplateResponse) => {
          if (m.message?.$case === 'progress' && out !== 'json') process.stderr.write(`  ${m.message.value}\n`);
          else if (m.message?.$case === 'template') built = m.message.value;
        });
        s.on('error', reject);
        s.on('end', () => (built ? resolve(built) : reject(new Error('the build stream ended without a template'))));
      });
      if (out === 'json') process.stdout.write(JSON.stringify(Template.toJSON(t), null, 2) + '\n');
      else
        process.stdout.write(`${t.key} built (${Math.round(Number(t.sizeBytes) / 1048576)} MiB, init ${t.init.join(' ')}, halt ${signalName(t.haltSignal)})\n`);
    }),
  );
template
  .command('rm <key>')
  .description('remove a template no container uses')
  .option('--allow-missing', 'succeed if it does not exist')
  .action(
    action(async (key: string, o: { allowMissing?: boolean }, cmd: Command) => {
      const { c } = client(cmd);
      await promisify(c.templates).removeTemplate({ key, allowMissing: !!o.allowMissing });
      process.stdout.write(`${key} removed\n`);
    }),
  );

const image = program.command('image').description('OCI images pulled from registries (rootfs: {image: "HOST/REPO:TAG"})');
const mib = (n: number | bigint) => `${(Number(n) / 1048576).toFixed(1)} MiB`;
image
  .command('pull <reference>')
  .description('pull an image (HOST[:PORT]/REPO[:TAG] or @sha256:...), showing progress per layer')
  .option('--platform <os/arch[/variant]>', "the platform to pick from an index (default: the host's)")
  .action(
    action(async (reference: string, o: { platform?: string }, cmd: Command) => {
      const { c, out } = client(cmd);
      const [os, architecture, variant] = (o.platform ?? '').split('/');
      const platform = o.platform ? { os: os ?? 'linux', architecture: architecture ?? '', variant: variant ?? '' } : undefined;
      const tty = process.stderr.isTTY && out !== 'json';
      const layers = new Map<string, PullProgress>();
      const draw = () => {
        const done = [...layers.values()].reduce((n, p) => n + Number(p.bytesDone), 0);
        const total = [...layers.values()].reduce((n, p) => n + Number(p.bytesTotal), 0);
        const width = 30;
        const fill = total ? Math.round((done / total) * width) : 0;
        process.stderr.write(
          `\r[${'#'.repeat(fill)}${'.'.repeat(width - fill)}] ${mib(done)} / ${mib(total)}, ${[...layers.values()].filter((p) => p.status === 'done' || p.status === 'exists').length}/${layers.size} blobs `,
        );
      };
      const img = await new Promise<Image>((resolve, reject) => {
        let got: Image | undefined;
        const s = c.images.pullImage({ image: reference, platform });
        s.on('data', (m: PullImageResponse) => {
          if (m.message?.$case === 'progress') {
            const p = m.message.value;
            layers.set(p.digest, p);
            if (tty) draw();
            else if (out !== 'json' && (p.status === 'done' || p.status === 'exists' || p.status === 'verified'))
              process.stderr.write(`  ${p.digest.slice(7, 19)} ${p.status} ${mib(p.bytesTotal)}\n`);
          } else if (m.message?.$case === 'image') got = m.message.value;
        });
        s.on('error', reject);
        s.on('end', () => (got ? resolve(got) : reject(new Error('the pull stream ended without the image'))));
      });
      if (tty) process.stderr.write('\n');
      if (out === 'json') process.stdout.write(JSON.stringify(Image.toJSON(img), null, 2) + '\n');
      else process.stdout.write(`${img.names[0] ?? reference} ${img.digest} (${img.layers.length} layers, ${mib(img.sizeBytes)})\n`);
    }),
  );
image
  .command('list')
  .alias('ls')
  .description('list stored images')
  .action(
    action(async (_o: unknown, cmd: Command) => {
      const { c, out } = client(cmd);
      const imgs = (await promisify(c.images).listImages({})).images;
      if (out === 'json')
        return void process.stdout.write(
          JSON.stringify(
            imgs.map((i) => Image.toJSON(i)),
            null,
            2,
          ) + '\n',
        );
      const rows = [['NAME', 'DIGEST', 'PLATFORM', 'SIZE', 'USED BY']];
      for (const i of imgs)
        rows.push([
          i.names.join(',') || '<none>',
          i.digest.slice(7, 19),
          [i.platform?.os, i.platform?.architecture, i.platform?.variant].filter(Boolean).join('/'),
          mib(i.sizeBytes),
          i.usedBy.join(',') || '-',
        ]);
      process.stdout.write(table(rows));
    }),
  );
image
  .command('inspect <image>')
  .description('an image with its config (JSON)')
  .action(
    action(async (ref: string, _o: unknown, cmd: Command) => {
      const { c } = client(cmd);
      const i = (await promisify(c.images).getImage({ image: ref })).image!;
      process.stdout.write(JSON.stringify(Image.toJSON(i), null, 2) + '\n');
    }),
  );
image
  .command('rm <image>')
  .description('remove an image name (or, by digest, the image); refused while a container uses it')
  .option('--allow-missing', 'succeed if it does not exist')
  .option('--force', 'remove it although containers use it (they keep its layers)')
  .action(
    action(async (ref: string, o: { allowMissing?: boolean; force?: boolean }, cmd: Command) => {
      const { c } = client(cmd);
      await promisify(c.images).removeImage({ image: ref, allowMissing: !!o.allowMissing, force: !!o.force });
      process.stdout.write(`${ref} removed\n`);
    }),
  );
image
  .command('prune')
  .description('remove the blobs and layers nothing references (with --all, also images no container uses)')
  .option('--all', 'also images no container uses')
  .action(
    action(async (o: { all?: boolean }, cmd: Command) => {
      const { c, out } = client(cmd);
      const r = await promisify(c.images).pruneImages({ all: !!o.all });
      if (out === 'json') return void process.stdout.write(JSON.stringify(PruneImagesResponse.toJSON(r), null, 2) + '\n');
      process.stdout.write(`removed ${r.images.length} images, ${r.blobs} blobs, ${r.layers} layers: ${mib(r.reclaimedBytes)} freed\n`);
    }),
  );

image
  .command('import <file>')
  .description('import an oci-archive or docker-archive tar (skopeo copy ... oci-archive:FILE, podman save), showing progress')
  .option('--name <HOST/REPO:TAG>', "the name to give the image (default: the archive's)")
  .action(
    action(async (file: string, o: { name?: string }, cmd: Command) => {
      const { c, out } = client(cmd);
      const total = statSync(file).size;
      const tty = process.stderr.isTTY && out !== 'json';
      const res = await new Promise<ImportImageResponse>((resolve, reject) => {
        const call = c.images.importImage((err: ServiceError | null, r?: ImportImageResponse) => (err ? reject(err) : resolve(r!)));
        call.write({ message: { $case: 'start', value: { name: o.name ?? '' } } });
        let sent = 0;
        const src = createReadStream(file, { highWaterMark: 1 << 20 });
        src.on('data', (b) => {
          sent += b.length;
          if (tty) process.stderr.write(`\rsent ${mib(sent)} / ${mib(total)} `);
          if (!call.write({ message: { $case: 'data', value: b as Buffer } })) {
            src.pause();
            call.once('drain', () => src.resume());
          }
        });
        src.on('end', () => {
          if (tty) process.stderr.write('\n');
          call.end();
        });
        src.on('error', reject);
      });
      if (out === 'json')
        process.stdout.write(
          JSON.stringify(
            res.images.map((i) => Image.toJSON(i)),
            null,
            2,
          ) + '\n',
        );
      else for (const i of res.images) process.stdout.write(`${i.names.join(',')} ${i.digest} imported\n`);
    }),
  );
image
  .command('export <image> <file>')
  .description('export an image as an oci-archive tar')
  .action(
    action(async (ref: string, file: string, _o: unknown, cmd: Command) => {
      const { c } = client(cmd);
      const outFile = createWriteStream(file);
      await new Promise<void>((resolve, reject) => {
        const s = c.images.exportImage({ image: ref });
        s.on('data', (m: ExportImageResponse) => {
          if (!outFile.write(m.data)) {
            s.pause();
            outFile.once('drain', () => s.resume());
          }
        });
        s.on('end', () => outFile.end(() => resolve()));
        s.on('error', reject);
      });
      process.stdout.write(`${ref} exported to ${file}\n`);
    }),
  );

program
  .command('login <registry>')
  .description("check a user name and password against a registry and keep them for the daemon's pulls")
  .requiredOption('-u, --username <name>', 'user name')
  .option('-p, --password <password>', 'password (visible in ps; prefer --password-stdin)')
  .option('--password-stdin', 'read the password from standard input')
  .action(
    action(async (registry: string, o: { username: string; password?: string; passwordStdin?: boolean }, cmd: Command) => {
      let password = o.password ?? '';
      if (o.passwordStdin) {
        const chunks: Buffer[] = [];
        for await (const c of process.stdin) chunks.push(c as Buffer);
        password = Buffer.concat(chunks)
          .toString('utf8')
          .replace(/\r?\n$/, '');
      }
      if (!password) throw new Error('give the password with --password-stdin (or -p)');
      const { c } = client(cmd);
      await promisify(c.images).login({ registry, username: o.username, password });
      process.stdout.write(`logged in to ${registry}\n`);
    }),
  );
program
  .command('logout <registry>')
  .description('forget the credentials login stored for a registry')
  .action(
    action(async (registry: string, _o: unknown, cmd: Command) => {
      const { c } = client(cmd);
      await promisify(c.images).logout({ registry });
      process.stdout.write(`logged out of ${registry}\n`);
    }),
  );

registerConformance(program);
registerJail(program);
registerVserver(program);
program.parseAsync().catch(report);
