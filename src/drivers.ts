// The built-in drivers the daemon registers by default.
import type { Driver } from './core/driver';
import { LxcDriver, type LxcDriverOptions } from '../drivers/lxc/driver';
import { JailDriver } from '../drivers/jail/driver';
import { VServerDriver } from '../drivers/vserver/driver';

export interface BuiltinOptions {
  lxc?: LxcDriverOptions;
}

export function builtinDrivers(o: BuiltinOptions = {}): Driver[] {
  return [new LxcDriver(o.lxc), new JailDriver(o.lxc), new VServerDriver({ bridge: o.lxc?.bridge, helper: o.lxc?.helper, templates: o.lxc?.templates })];
}
