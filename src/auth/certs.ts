// `osvirt certs`: a private CA, a server certificate and role-bearing client
// certificates for remote access over mutual TLS, made with the openssl CLI.
// A client certificate's OU is its role (admin, operator, reader).
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, rmSync, writeFileSync, chmodSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { isRole, type Role } from './roles';

function openssl(args: string[], cwd: string): void {
  try {
    execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
  } catch (e) {
    const err = e as { stderr?: Buffer; message: string };
    throw new Error(`openssl ${args[0]} failed: ${err.stderr?.toString().trim() || err.message}`);
  }
}

const KEY = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];

/** Create dir/ca.pem and dir/ca-key.pem unless they exist. */
export function ensureCa(dir: string): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  if (existsSync(path.join(dir, 'ca.pem'))) return;
  openssl(
    [
      'req',
      '-x509',
      '-new',
      ...KEY,
      '-keyout',
      'ca-key.pem',
      '-out',
      'ca.pem',
      '-days',
      '3650',
      '-subj',
      '/O=osvirt/CN=osvirt CA',
      '-addext',
      'basicConstraints=critical,CA:TRUE',
      '-addext',
      'keyUsage=critical,keyCertSign,cRLSign',
    ],
    dir,
  );
  chmodSync(path.join(dir, 'ca-key.pem'), 0o600);
}

function issue(dir: string, base: string, subject: string, ext: string): void {
  const extFile = path.join(dir, `${base}.ext`);
  writeFileSync(extFile, ext);
  try {
    openssl(['req', '-new', ...KEY, '-keyout', `${base}-key.pem`, '-out', `${base}.csr`, '-subj', subject], dir);
    openssl(
      [
        'x509',
        '-req',
        '-in',
        `${base}.csr`,
        '-CA',
        'ca.pem',
        '-CAkey',
        'ca-key.pem',
        '-CAcreateserial',
        '-out',
        `${base}.pem`,
        '-days',
        '825',
        '-extfile',
        extFile,
      ],
      dir,
    );
    chmodSync(path.join(dir, `${base}-key.pem`), 0o600);
  } finally {
    rmSync(extFile, { force: true });
    rmSync(path.join(dir, `${base}.csr`), { force: true });
  }
}

/** dir/server.pem + server-key.pem for the given DNS names / IP addresses. */
export function issueServer(dir: string, names: string[]): void {
  const all = [...new Set(['localhost', '127.0.0.1', '::1', os.hostname(), ...names])];
  const san = all.map((n) => (/^[\d.]+$|:/.test(n) ? `IP:${n}` : `DNS:${n}`)).join(',');
  issue(
    dir,
    'server',
    `/O=osvirt/CN=${all[0] === 'localhost' && names[0] ? names[0] : os.hostname()}`,
    `subjectAltName=${san}\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\n`,
  );
}

/** dir/<name>.pem + <name>-key.pem carrying the role in OU. */
export function issueClient(dir: string, name: string, role: Role): void {
  if (!/^[a-z0-9][a-z0-9_.-]{0,62}$/.test(name)) throw new Error(`client name "${name}" must be lowercase letters, digits, ".", "_" or "-"`);
  if (!isRole(role)) throw new Error(`role "${role}" must be admin, operator or reader`);
  issue(dir, name, `/O=osvirt/OU=${role}/CN=${name}`, 'extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature\n');
}
