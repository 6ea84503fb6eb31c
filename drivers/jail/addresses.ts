// jail(8)'s `interface` parameter: each ip4.addr/ip6.addr becomes an alias on
// a host interface before the jail is created, and goes again after it is
// removed. Only addresses the host did not have are added (and so removed).
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { promisify } from 'node:util';
import { OsvirtError } from '../../src/core/errors';
import type { JailAddress } from './options';

const run = promisify(execFile);

async function ip(...args: string[]): Promise<string> {
  try {
    return (await run('ip', args)).stdout;
  } catch (e) {
    const err = e as { stderr?: string; message: string };
    throw new Error(`ip ${args.join(' ')}: ${(err.stderr ?? err.message).trim()}`);
  }
}

/** Every address configured on a host interface. */
export async function hostAddresses(): Promise<Set<string>> {
  const out = new Set<string>();
  const list = JSON.parse(await ip('-j', 'addr', 'show')) as { addr_info?: { local?: string }[] }[];
  for (const l of list) for (const a of l.addr_info ?? []) if (a.local) out.add(a.local);
  return out;
}

/** Add the jail's addresses the host lacks; returns what was added (all or nothing). */
export async function addAddresses(addrs: JailAddress[]): Promise<JailAddress[]> {
  const have = await hostAddresses();
  const added: JailAddress[] = [];
  try {
    for (const a of addrs) {
      if (have.has(a.address)) continue;
      if (!existsSync(`/sys/class/net/${a.iface}`)) {
        throw new OsvirtError('FAILED_PRECONDITION', 'INTERFACE_MISSING', `interface: host interface "${a.iface}" for ${a.address} does not exist`, [], {
          interface: a.iface,
        });
      }
      await ip(...(a.family === 6 ? ['-6'] : []), 'addr', 'add', `${a.address}/${a.prefix}`, 'dev', a.iface, ...(a.family === 6 ? ['nodad'] : []));
      have.add(a.address);
      added.push(a);
    }
  } catch (e) {
    await removeAddresses(added);
    if (e instanceof OsvirtError) throw e;
    throw new OsvirtError('FAILED_PRECONDITION', 'ADDRESS_SETUP_FAILED', `cannot add the jail's address to the host: ${(e as Error).message}`);
  }
  return added;
}

/** Remove addresses addAddresses put on the host (idempotent). */
export async function removeAddresses(addrs: JailAddress[]): Promise<void> {
  for (const a of addrs) {
    await ip(...(a.family === 6 ? ['-6'] : []), 'addr', 'del', `${a.address}/${a.prefix}`, 'dev', a.iface).catch(() => undefined);
  }
}
