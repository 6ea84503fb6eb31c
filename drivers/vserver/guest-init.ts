// How a guest starts and stops by init style, and the busybox template a
// guest gets when it names no root directory: the lxc driver's busybox
// template plus a minimal SysV layout (/etc/init.d/rc, /etc/rcN.d/,
// /etc/inittab), so both init styles work on it as is.
import { promises as fs, existsSync } from 'node:fs';
import * as path from 'node:path';
import { Templates } from '../lxc/rootfs';

/**
 * The sysv style's pid 1 (util-vserver's "fake init"), run by the guest's
 * own /bin/sh: it runs the start runlevel's rc once, then idles, reaping
 * orphans. A SIGTERM or SIGINT (the kill sequence) does not end it at once:
 * it leaves when it is the guest's last process, so the other processes get
 * the whole grace period of the sequence. Plain shell: it can be
 * checkpointed like any process. It comes in the environment, so that ps
 * in the guest shows a short command line ("init 3").
 * $1: start runlevel.
 */
export const SYSV_STUB = [
  'unset OSVIRT_VSERVER_INIT',
  'stopping=0',
  "trap 'stopping=1' TERM INT",
  'for rc in /etc/init.d/rc /etc/rc.d/rc; do',
  '  if [ -x "$rc" ]; then "$rc" "$1"; break; fi',
  'done',
  'while :; do',
  '  if [ "$stopping" = 1 ]; then',
  '    set -- /proc/[0-9]*',
  '    [ "$*" = /proc/1 ] && exit 0',
  '  fi',
  '  sleep 1 & wait $!',
  'done',
].join('\n');

/** argv and environment of the sysv stub for a start runlevel. */
export function sysvInit(runlevel: string): { args: string[]; env: string[] } {
  return { args: ['/bin/sh', '-c', 'eval "$OSVIRT_VSERVER_INIT"', 'init', runlevel], env: [`OSVIRT_VSERVER_INIT=${SYSV_STUB}`] };
}

/** The sysv stop command run in the guest: its rc with the stop runlevel (util-vserver looks in both places). */
export function sysvStopArgs(runlevel: string): string[] {
  return ['/bin/sh', '-c', 'for rc in /etc/init.d/rc /etc/rc.d/rc; do if [ -x "$rc" ]; then exec "$rc" "$1"; fi; done', 'vserver-stop', runlevel];
}

const RC = `#!/bin/sh
# Run a runlevel, SysV style: its stop scripts (K*), then its start scripts
# (S*), in name order. Part of osvirt's vserver busybox template.
[ $# -eq 1 ] || { echo "usage: $0 RUNLEVEL" >&2; exit 2; }
dir=/etc/rc$1.d
[ -d "$dir" ] || exit 0
for s in "$dir"/K*; do [ -x "$s" ] && "$s" stop; done
for s in "$dir"/S*; do [ -x "$s" ] && "$s" start; done
exit 0
`;

const INITTAB = `# busybox init for the vserver init style "plain": runlevel 3's scripts at
# boot, runlevel 6's at shutdown (SIGTERM). Part of osvirt's vserver busybox template.
::sysinit:/etc/init.d/rc 3
::shutdown:/etc/init.d/rc 6
`;

const MARKER = '.osvirt-vserver-template';

/** Builds (once) and returns the vserver busybox template under `dir`. */
export class GuestTemplate {
  private building?: Promise<string>;

  constructor(private readonly dir: string) {}

  path(): string {
    return path.join(this.dir, 'busybox');
  }

  ensure(): Promise<string> {
    const final = this.path();
    if (existsSync(path.join(final, MARKER))) return Promise.resolve(final);
    this.building ??= this.build(final).finally(() => (this.building = undefined));
    return this.building;
  }

  private async build(final: string): Promise<string> {
    const work = path.join(this.dir, `.build-${process.pid}`);
    await fs.rm(work, { recursive: true, force: true });
    const base = await new Templates(work).ensure('busybox');
    for (const d of ['etc/init.d', 'etc/rc3.d', 'etc/rc6.d', 'var/log', 'var/run']) await fs.mkdir(path.join(base, d), { recursive: true });
    await fs.writeFile(path.join(base, 'etc/init.d/rc'), RC, { mode: 0o755 });
    await fs.writeFile(path.join(base, 'etc/inittab'), INITTAB, { mode: 0o644 });
    await fs.writeFile(path.join(base, MARKER), 'busybox template with a SysV layout for vserver guests\n');
    await fs.rm(final, { recursive: true, force: true });
    await fs.rename(base, final);
    await fs.rm(work, { recursive: true, force: true });
    return final;
  }
}
