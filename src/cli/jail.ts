// FreeBSD's jail tools on osvirt: `osvirt jail import` (jail(8) reading a
// jail.conf), `osvirt jls` and `osvirt jexec`, over JailService and
// ExecContainer.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { credentials } from '@grpc/grpc-js';
import type { Command } from 'commander';
import { connect, promisify, type OsvirtClient } from '../client';
import { report } from './report';
import { ImportedJail, Jail, JailServiceClient, type ListJailsResponse } from '../gen/osvirt/v1/jail';
import type { ExecContainerResponse } from '../gen/osvirt/v1/container_service';

interface Global {
  connect?: string;
  tlsCert?: string;
  tlsKey?: string;
  tlsCa?: string;
  output: 'table' | 'json';
}

function clients(cmd: Command): { c: OsvirtClient; jails: ReturnType<typeof promisify<JailServiceClient>>; out: 'table' | 'json' } {
  const g = cmd.optsWithGlobals<Global>();
  const c = connect({ address: g.connect, tlsCert: g.tlsCert, tlsKey: g.tlsKey, tlsCa: g.tlsCa });
  // Same connection as the other clients (credentials come with the channel).
  const raw = new JailServiceClient('unused', credentials.createInsecure(), { channelOverride: c.containers.getChannel() });
  return { c, jails: promisify(raw), out: g.output };
}

async function allJails(jails: ReturnType<typeof promisify<JailServiceClient>>): Promise<Jail[]> {
  const out: Jail[] = [];
  let pageToken = '';
  do {
    const r: ListJailsResponse = await jails.listJails({ pageSize: 1000, pageToken });
    out.push(...r.jails);
    pageToken = r.nextPageToken;
  } while (pageToken);
  return out;
}

/** jls(8)'s default format. */
export function formatJls(list: Jail[], names: boolean): string {
  const row = (id: string, ip: string, host: string, p: string) => `${id.padStart(6)}  ${ip.padEnd(15)} ${host.padEnd(29)} ${p}\n`;
  let s = row('JID', 'IP Address', 'Hostname', 'Path');
  for (const j of list) s += row(names ? j.name : String(j.jid), j.ip4Addr[0] ?? j.ip6Addr[0] ?? '', j.hostname, j.path);
  return s;
}

/** A passwd line for a user, read from the jail (jexec -U / -l). */
async function jailUser(c: OsvirtClient, name: string, user: string): Promise<{ uid: number; gid: number; home: string; shell: string; name: string }> {
  const r = await run(c, name, ['cat', '/etc/passwd'], [], '', undefined, false, true);
  for (const line of r.stdout.split('\n')) {
    const f = line.split(':');
    if (f.length >= 7 && (f[0] === user || f[2] === user))
      return { name: f[0]!, uid: Number(f[2]), gid: Number(f[3]), home: f[5] || '/', shell: f[6] || '/bin/sh' };
  }
  throw new Error(`jexec: ${user}: no such user in the jail`);
}

/** One ExecContainer stream; with capture, output is returned instead of printed. */
function run(
  c: OsvirtClient,
  name: string,
  args: string[],
  env: string[],
  cwd: string,
  user: { uid: number; gid: number } | undefined,
  tty: boolean,
  capture = false,
): Promise<{ stdout: string; exitCode: number }> {
  return new Promise((resolve, reject) => {
    const stream = c.containers.execContainer();
    const size = tty && process.stdout.isTTY ? { rows: process.stdout.rows, cols: process.stdout.columns } : undefined;
    stream.write({
      message: { $case: 'start', value: { name, args, env, cwd, user: user ? { ...user, additionalGids: [] } : undefined, tty, terminalSize: size } },
    });
    if (capture) stream.write({ message: { $case: 'closeStdin', value: true } });
    else {
      if (tty && process.stdin.isTTY) process.stdin.setRawMode(true);
      process.stdin.on('data', (b: Buffer) => stream.write({ message: { $case: 'stdin', value: b } }));
      process.stdin.on('end', () => stream.write({ message: { $case: 'closeStdin', value: true } }));
    }
    let stdout = '';
    let code = 0;
    stream.on('data', (m: ExecContainerResponse) => {
      const x = m.message;
      if (x?.$case === 'stdout') {
        if (capture) stdout += x.value.toString();
        else process.stdout.write(x.value);
      } else if (x?.$case === 'stderr') process.stderr.write(x.value);
      else if (x?.$case === 'exit') code = x.value.exitCode;
    });
    const done = () => {
      if (tty && process.stdin.isTTY) process.stdin.setRawMode(false);
    };
    stream.on('end', () => {
      done();
      resolve({ stdout, exitCode: code });
    });
    stream.on('error', (e) => {
      done();
      reject(e);
    });
  });
}

export function registerJail(program: Command): void {
  const jail = program.command('jail').description('FreeBSD jail(8) tools');
  jail
    .command('import <file> [names...]')
    .description('define a jail container for each jail of a jail.conf(5) file (or the named ones)')
    .option('--start', 'start them too (jail -c)')
    .option('--rctl <file>', 'rctl.conf(5) rules (jail:NAME:RESOURCE:deny=AMOUNT) for them')
    .option('--dry-run', 'check only; define nothing')
    .action(async (file: string, names: string[], o: { start?: boolean; rctl?: string; dryRun?: boolean }, cmd: Command) => {
      try {
        const { jails, out } = clients(cmd);
        const text = readFileSync(file, 'utf8');
        const rctl = o.rctl ? readFileSync(o.rctl, 'utf8') : '';
        const r = await jails.importJailConf({ text, fileName: path.basename(file), names, rctlConf: rctl, start: !!o.start, validateOnly: !!o.dryRun });
        if (out === 'json')
          process.stdout.write(
            JSON.stringify(
              r.jails.map((j) => ImportedJail.toJSON(j)),
              null,
              2,
            ) + '\n',
          );
        else for (const j of r.jails) process.stdout.write(`${j.name}: ${j.started ? 'created and started' : j.created ? 'created' : 'ok (not created)'}\n`);
        process.exit(0);
      } catch (e) {
        report(e);
      }
    });

  program
    .command('jls')
    .description('list running jails like jls(8): JID, IP address, hostname, path')
    .option('-N, --names', 'show jail names instead of jids')
    .action(async (o: { names?: boolean }, cmd: Command) => {
      try {
        const { jails, out } = clients(cmd);
        const list = await allJails(jails);
        if (out === 'json')
          process.stdout.write(
            JSON.stringify(
              list.map((j) => Jail.toJSON(j)),
              null,
              2,
            ) + '\n',
          );
        else process.stdout.write(formatJls(list, !!o.names));
        process.exit(0);
      } catch (e) {
        report(e);
      }
    });

  program
    .command('jexec <jail> [command...]')
    .description("run a command in a running jail (by name or jid) like jexec(8); default: the user's shell")
    .option('-l', 'clean environment: only HOME, SHELL, TERM, USER and PATH, in the home directory')
    .option('-U <user>', "run as this user of the jail's passwd")
    .option('-u <user>', "run as this user of the host's passwd (its uid and gid)")
    .action(async (target: string, command: string[], o: { l?: boolean; U?: string; u?: string }, cmd: Command) => {
      try {
        const { c, jails } = clients(cmd);
        let name = target;
        if (/^\d+$/.test(target)) {
          const j = (await allJails(jails)).find((x) => x.jid === Number(target));
          if (!j) throw new Error(`jexec: jail ${target} not found`);
          name = j.name;
        }
        let user: { uid: number; gid: number; name: string; home: string; shell: string } | undefined;
        if (o.U || o.l) user = await jailUser(c, name, o.U ?? 'root');
        if (o.u) {
          const id = (flag: string) => Number(execFileSync('id', [flag, o.u!], { encoding: 'utf8' }).trim());
          user = { uid: id('-u'), gid: id('-g'), name: o.u, home: user?.home ?? '/', shell: user?.shell ?? '/bin/sh' };
        }
        const env =
          o.l && user
            ? [
                `HOME=${user.home}`,
                `SHELL=${user.shell}`,
                `USER=${user.name}`,
                'PATH=/sbin:/bin:/usr/sbin:/usr/bin:/usr/local/sbin:/usr/local/bin',
                ...(process.env['TERM'] ? [`TERM=${process.env['TERM']}`] : []),
              ]
            : [];
        const args = command.length ? command : [user?.shell ?? '/bin/sh'];
        const tty = !command.length && !!process.stdin.isTTY;
        const r = await run(c, name, args, env, o.l && user ? user.home : '', user && (user.uid || user.gid) ? user : undefined, tty);
        process.exit(r.exitCode);
      } catch (e) {
        report(e);
      }
    });
}
