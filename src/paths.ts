// Paths inside the osvirt checkout/package, independent of where the code
// was compiled to (src/ under ts-node, dist/src/ after tsc).
import * as fs from 'node:fs';
import * as path from 'node:path';

let root: string | undefined;

export function repoRoot(): string {
  if (root) return root;
  let dir = __dirname;
  for (;;) {
    if (fs.existsSync(path.join(dir, 'package.json')) && fs.existsSync(path.join(dir, 'proto'))) return (root = dir);
    const up = path.dirname(dir);
    if (up === dir) throw new Error('cannot find the osvirt package root');
    dir = up;
  }
}

export function repoPath(...parts: string[]): string {
  return path.join(repoRoot(), ...parts);
}

export function helperPath(): string {
  return process.env['OSVIRT_HELPER'] ?? repoPath('native', 'build', 'osvirt-helper');
}
