// Run a command inside a container through the real ExecContainer stream.
import type { ExecContainerResponse } from '../../src/gen/osvirt/v1/container_service';
import type { Client } from './daemon';

export interface ExecResult {
  stdout: string;
  stderr: string;
  exitCode: number;
  signal: number;
  ms: number;
}

export function execIn(client: Client, name: string, args: string[], timeoutMs = 600_000): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint();
    const s = client.containers.execContainer();
    let stdout = '';
    let stderr = '';
    let exit: { exitCode: number; signal: number } | undefined;
    const timer = setTimeout(() => {
      s.cancel();
      reject(new Error(`exec ${args.join(' ')} in ${name}: no exit after ${timeoutMs} ms`));
    }, timeoutMs);
    s.on('data', (m: ExecContainerResponse) => {
      const x = m.message;
      if (x?.$case === 'stdout') stdout += x.value.toString();
      else if (x?.$case === 'stderr') stderr += x.value.toString();
      else if (x?.$case === 'exit') exit = x.value;
    });
    s.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    s.on('end', () => {
      clearTimeout(timer);
      if (exit) resolve({ stdout, stderr, ...exit, ms: Number(process.hrtime.bigint() - t0) / 1e6 });
      else reject(new Error(`exec ${args.join(' ')} in ${name}: the stream ended without an exit message`));
    });
    s.write({ message: { $case: 'start', value: { name, args, env: [], cwd: '', user: undefined, tty: false, terminalSize: undefined } } });
    s.write({ message: { $case: 'closeStdin', value: true } });
    s.end();
  });
}
