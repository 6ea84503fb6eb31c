// The built-in drivers the daemon registers by default.
import type { Driver } from './core/driver';

export function builtinDrivers(): Driver[] {
  return [];
}
