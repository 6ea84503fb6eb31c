// Run a command in a container through the real ExecContainer stream.
import type { Client } from './daemon';
import type { ExecContainerResponse } from '../../src/gen/osvirt/v1/container_service';
import { until } from '../../src/testing/until';

export interface ExecResult {
  stdout: string;
  stderr: string;
  exitCode: number;
  signal: number;
}

export function execIn(
  client: Client,
  name: string,
  args: string[],
  opts: { stdin?: string; tty?: boolean; env?: string[]; uid?: number } = {},
): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    const s = client.containers.execContainer();
    let stdout = '';
    let stderr = '';
    let exit: { exitCode: number; signal: number } | undefined;
    s.on('data', (m: ExecContainerResponse) => {
      const x = m.message;
      if (x?.$case === 'stdout') stdout += x.value.toString();
      else if (x?.$case === 'stderr') stderr += x.value.toString();
      else if (x?.$case === 'exit') exit = x.value;
    });
    s.on('error', reject);
    s.on('end', () => (exit ? resolve({ stdout, stderr, ...exit }) : reject(new Error('exec stream ended without an exit message'))));
    s.write({
      message: {
        $case: 'start',
        value: {
          name,
          args,
          env: opts.env ?? [],
          cwd: '',
          user: opts.uid === undefined ? undefined : { uid: opts.uid, gid: opts.uid, additionalGids: [] },
          tty: !!opts.tty,
          terminalSize: undefined,
        },
      },
    });
    if (opts.stdin !== undefined) s.write({ message: { $case: 'stdin', value: Buffer.from(opts.stdin) } });
    s.write({ message: { $case: 'closeStdin', value: true } });
    s.end();
  });
}

/** Run and insist on exit code 0; returns trimmed stdout. */
export async function sh(client: Client, name: string, script: string): Promise<string> {
  const r = await execIn(client, name, ['/bin/sh', '-c', script]);
  if (r.exitCode !== 0) throw new Error(`exec "${script}" in ${name} exited ${r.exitCode}: ${r.stderr}${r.stdout}`);
  return r.stdout.trim();
}

/**
 * Send one line over TCP from container `from` to a one-shot busybox nc listener
 * in container `to`, and return what the listener received.
 *
 * The listener's stdin is held open by a sleep: busybox nc follows nc 1.10, so a
 * listener whose stdin is at EOF half-closes the connection as soon as it accepts,
 * and a client that sees that EOF quits before it has sent its line.
 */
export async function ncSend(client: Client, to: string, from: string, address: string, port: number, text: string): Promise<string> {
  const file = `/tmp/nc-${port}`;
  await sh(client, to, `rm -f ${file}; (sleep 60 | nc -l -p ${port}) > ${file} 2>&1 &`);
  await until(
    async () => (await execIn(client, from, ['/bin/sh', '-c', `echo ${text} | nc ${address} ${port}`])).exitCode === 0,
    `a connection from ${from} to ${address}:${port} in ${to}`,
    10_000,
    50,
  );
  return until(() => sh(client, to, `cat ${file}`), `data to reach ${to}:${port}`, 10_000, 50);
}
