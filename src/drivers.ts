// The built-in drivers the daemon registers by default.
import type { Driver } from './core/driver';
import { LxcDriver, type LxcDriverOptions } from '../drivers/lxc/driver';
import { JailDriver } from '../drivers/jail/driver';
import { VServerDriver } from '../drivers/vserver/driver';
import { Templates } from '../drivers/lxc/templates';

export interface BuiltinOptions {
  lxc?: LxcDriverOptions;
  /** One template store for every built-in driver (and the TemplateService they offer); default: each driver's own. */
  templateDir?: string;
}

export function builtinDrivers(o: BuiltinOptions = {}): Driver[] {
  const lxc: LxcDriverOptions = { ...o.lxc, ...(o.templateDir ? { templates: new Templates(o.templateDir) } : {}) };
  return [new LxcDriver(lxc), new JailDriver(lxc), new VServerDriver({ bridge: lxc.bridge, helper: lxc.helper, templates: lxc.templates, images: lxc.images })];
}
