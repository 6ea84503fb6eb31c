// Reads a container definition file (YAML or JSON, in the proto's JSON
// mapping of CreateContainerRequest: {name, spec}) and rejects unknown
// fields by path, so a typo never silently does less than asked.
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import * as protobuf from 'protobufjs';
import YAML from 'yaml';
import { CreateContainerRequest } from '../gen/osvirt/v1/container_service';
import { repoPath } from '../paths';

let root: protobuf.Root | undefined;

function loadRoot(): protobuf.Root {
  if (root) return root;
  const r = new protobuf.Root();
  const protoDir = repoPath('proto');
  r.resolvePath = (_origin, target) => (target.startsWith('google/protobuf/') ? target : path.join(protoDir, target));
  r.loadSync('osvirt/v1/container_service.proto', { keepCase: true });
  return (root = r);
}

const WELL_KNOWN = new Set(['google.protobuf.Duration', 'google.protobuf.Timestamp']);

function check(type: protobuf.Type, value: unknown, at: string): void {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw new Error(`${at || 'document'}: expected an object`);
  const byJson = new Map<string, protobuf.Field>();
  for (const f of type.fieldsArray) {
    byJson.set(f.name, f);
    byJson.set(protobuf.util.camelCase(f.name), f);
  }
  for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
    const f = byJson.get(k);
    const here = at ? `${at}.${k}` : k;
    if (!f) throw new Error(`${here}: unknown field (known: ${type.fieldsArray.map((x) => x.name).join(', ')})`);
    f.resolve();
    if (f.map) {
      if (v === null || typeof v !== 'object') throw new Error(`${here}: expected a map`);
      continue;
    }
    const rt = f.resolvedType;
    if (rt instanceof protobuf.Type && !WELL_KNOWN.has(rt.fullName.slice(1))) {
      if (f.repeated) {
        if (!Array.isArray(v)) throw new Error(`${here}: expected a list`);
        v.forEach((item, i) => check(rt, item, `${here}[${i}]`));
      } else {
        check(rt, v, here);
      }
    } else if (rt instanceof protobuf.Enum) {
      const values = f.repeated ? (Array.isArray(v) ? v : [v]) : [v];
      for (const e of values) {
        if (typeof e === 'string' && !(e in rt.values)) throw new Error(`${here}: unknown value "${e}" (one of ${Object.keys(rt.values).join(', ')})`);
      }
    }
  }
}

export function parseDefinition(text: string, file: string): CreateContainerRequest {
  let doc: unknown;
  try {
    doc = file.endsWith('.json') ? JSON.parse(text) : YAML.parse(text);
  } catch (e) {
    throw new Error(`${file}: not valid ${file.endsWith('.json') ? 'JSON' : 'YAML'}: ${e instanceof Error ? e.message : String(e)}`);
  }
  const type = loadRoot().lookupType('osvirt.v1.CreateContainerRequest');
  try {
    check(type, doc, '');
  } catch (e) {
    throw new Error(`${file}: ${e instanceof Error ? e.message : String(e)}`);
  }
  return CreateContainerRequest.fromJSON(doc);
}

export function readDefinition(file: string): CreateContainerRequest {
  return parseDefinition(readFileSync(file, 'utf8'), file);
}
